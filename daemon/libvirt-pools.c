#include "libvirt-pools.h"

#include "config.h"
#include "manager.h"
#include "pool-backend-rbd.h"
#include "pool.h"

#ifdef HAVE_LIBVIRT

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#define RETRY_SECONDS 10
#define REFRESH_DELAY_MS 100

struct _VddLibvirt {
    VddManager *manager; /* not owned; NULL once freed (threads may still run) */
    char *uri;
    GMutex lock; /* conn and its callback id: worker and event threads share them */
    virConnectPtr conn;
    int lifecycle_id;
    /* Main thread only: */
    GHashTable *mirrored;        /* vdisk pools that stand for a libvirt pool */
    GHashTable *pending_refresh; /* pool names to refresh in libvirt */
    guint refresh_source;
    guint retry_source;
};

/* Threads hold references to self (an rc box); vdd_libvirt_free only
 * detaches it from the manager. */
static VddLibvirt *lv_ref(VddLibvirt *self) { return g_atomic_rc_box_acquire(self); }

static void lv_clear(VddLibvirt *self)
{
    if (self->conn != NULL) {
        if (self->lifecycle_id >= 0)
            virConnectStoragePoolEventDeregisterAny(self->conn, self->lifecycle_id);
        virConnectClose(self->conn);
    }
    g_mutex_clear(&self->lock);
    g_hash_table_unref(self->mirrored);
    g_hash_table_unref(self->pending_refresh);
    g_free(self->uri);
}

static void lv_unref(VddLibvirt *self)
{
    g_atomic_rc_box_release_full(self, (GDestroyNotify)lv_clear);
}

/* libvirt prints every error on stderr by default; ours are logged where
 * they matter. */
static void quiet_errors(void *data, virErrorPtr error) {}

/* Close and lifecycle callbacks need libvirt's event loop. libvirt's
 * default implementation is made of GLib sources on the default main
 * context, so vdiskd's own main loop runs it. It must not get a thread of
 * its own: that thread would iterate the same context and run vdiskd's
 * D-Bus handlers, signal handlers and timeouts beside the main thread, and
 * after the main loop ends, on a daemon being torn down. */
static void start_event_loop(void)
{
    static gsize once = 0;
    if (g_once_init_enter(&once)) {
        virSetErrorFunc(NULL, quiet_errors);
        if (virEventRegisterDefaultImpl() < 0)
            g_warning("libvirt's event loop is not available: closed connections go unnoticed");
        g_once_init_leave(&once, 1);
    }
}

static void schedule_sync(VddLibvirt *self);

/* Main thread: whatever happened in libvirt, look again. */
static gboolean sync_idle(gpointer data)
{
    VddLibvirt *self = data;
    if (self->manager != NULL)
        vdd_libvirt_sync(self, 0, NULL, NULL);
    return G_SOURCE_REMOVE;
}

static void on_pool_lifecycle(virConnectPtr conn, virStoragePoolPtr pool, int event, int detail,
                              void *opaque)
{
    g_idle_add_full(G_PRIORITY_DEFAULT, sync_idle, lv_ref(opaque), (GDestroyNotify)lv_unref);
}

static gboolean closed_idle(gpointer data)
{
    VddLibvirt *self = data;
    if (self->manager != NULL) {
        g_message("libvirt: connection to %s closed; retrying every %d s", self->uri,
                  RETRY_SECONDS);
        schedule_sync(self);
    }
    return G_SOURCE_REMOVE;
}

/* Event thread: libvirtd went away. Forget the connection; it is closed
 * here only by reference (virConnectClose drops ours). */
static void on_close(virConnectPtr conn, int reason, void *opaque)
{
    VddLibvirt *self = opaque;
    g_mutex_lock(&self->lock);
    if (self->conn == conn) {
        self->conn = NULL;
        self->lifecycle_id = -1;
        virConnectClose(conn);
    }
    g_mutex_unlock(&self->lock);
    g_idle_add_full(G_PRIORITY_DEFAULT, closed_idle, lv_ref(self), (GDestroyNotify)lv_unref);
}

/* Worker thread: a reference to the connection, opening it if need be;
 * NULL when libvirtd is not there. Release with virConnectClose. */
static virConnectPtr get_conn(VddLibvirt *self)
{
    g_mutex_lock(&self->lock);
    if (self->conn != NULL) {
        virConnectRef(self->conn);
        virConnectPtr c = self->conn;
        g_mutex_unlock(&self->lock);
        return c;
    }
    g_mutex_unlock(&self->lock);
    virConnectPtr c = virConnectOpen(self->uri);
    if (c == NULL)
        return NULL;
    g_mutex_lock(&self->lock);
    if (self->conn == NULL) {
        self->conn = c;
        virConnectRegisterCloseCallback(c, on_close, lv_ref(self), (virFreeCallback)lv_unref);
        self->lifecycle_id = virConnectStoragePoolEventRegisterAny(
            c, NULL, VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE,
            VIR_STORAGE_POOL_EVENT_CALLBACK(on_pool_lifecycle), lv_ref(self),
            (virFreeCallback)lv_unref);
        g_message("libvirt: connected to %s", self->uri);
    } else {
        virConnectClose(c); /* another thread was quicker */
        c = self->conn;
    }
    virConnectRef(c);
    g_mutex_unlock(&self->lock);
    return c;
}

/* ----- the pool list ----- */

typedef struct {
    char *name;
    char *directory;
    char *vg; /* a logical pool's volume group; NULL for a dir pool */
    /* An rbd pool: its Ceph pool (directory is rbd:POOL), monitors
     * ("HOST:PORT,...") and client id; NULL for the others. */
    char *ceph_pool, *mon_host, *user;
} LvPool;

static void lv_pool_free(LvPool *p)
{
    g_free(p->name);
    g_free(p->directory);
    g_free(p->vg);
    g_free(p->ceph_pool);
    g_free(p->mon_host);
    g_free(p->user);
    g_free(p);
}

/* /pool/target/path of a pool's XML, and for a logical pool (<pool
 * type='logical'>) its volume group, /pool/source/name; for an rbd pool
 * the Ceph pool (/pool/source/name), its monitors (/pool/source/host's
 * name and port) and client (/pool/source/auth's username). */
typedef struct {
    int depth;
    gboolean in_target, in_path;
    gboolean logical, rbd, in_source, in_source_name;
    GString *path;
    GString *vg;
    GString *hosts;
    char *user;
} XmlState;

static void xml_start(GMarkupParseContext *ctx, const char *element, const char **names,
                      const char **values, gpointer data, GError **error)
{
    XmlState *s = data;
    s->depth++;
    if (s->depth == 1 && g_str_equal(element, "pool")) {
        for (guint i = 0; names[i] != NULL; i++)
            if (g_str_equal(names[i], "type")) {
                s->logical = g_str_equal(values[i], "logical");
                s->rbd = g_str_equal(values[i], "rbd");
            }
    } else if (s->depth == 2 && g_str_equal(element, "target"))
        s->in_target = TRUE;
    else if (s->depth == 3 && s->in_target && g_str_equal(element, "path"))
        s->in_path = TRUE;
    else if (s->depth == 2 && g_str_equal(element, "source"))
        s->in_source = TRUE;
    else if (s->depth == 3 && s->in_source && g_str_equal(element, "name"))
        s->in_source_name = TRUE;
    else if (s->depth == 3 && s->in_source && s->rbd && g_str_equal(element, "host")) {
        const char *host = NULL, *port = NULL;
        for (guint i = 0; names[i] != NULL; i++) {
            if (g_str_equal(names[i], "name"))
                host = values[i];
            else if (g_str_equal(names[i], "port"))
                port = values[i];
        }
        if (host != NULL) {
            if (s->hosts->len > 0)
                g_string_append_c(s->hosts, ',');
            /* An IPv6 address takes brackets before its port. */
            gboolean v6 = strchr(host, ':') != NULL && host[0] != '[';
            g_string_append_printf(s->hosts, v6 && port ? "[%s]" : "%s", host);
            if (port != NULL)
                g_string_append_printf(s->hosts, ":%s", port);
        }
    } else if (s->depth == 3 && s->in_source && s->rbd && g_str_equal(element, "auth")) {
        for (guint i = 0; names[i] != NULL; i++)
            if (g_str_equal(names[i], "username")) {
                g_free(s->user);
                s->user = g_strdup(values[i]);
            }
    }
}

static void xml_end(GMarkupParseContext *ctx, const char *element, gpointer data, GError **error)
{
    XmlState *s = data;
    if (s->depth == 3)
        s->in_path = s->in_source_name = FALSE;
    if (s->depth == 2)
        s->in_target = s->in_source = FALSE;
    s->depth--;
}

static void xml_text(GMarkupParseContext *ctx, const char *text, gsize len, gpointer data,
                     GError **error)
{
    XmlState *s = data;
    if (s->in_path)
        g_string_append_len(s->path, text, len);
    if (s->in_source_name)
        g_string_append_len(s->vg, text, len);
}

/* An rbd pool of libvirt's XML into p (its Ceph pool, monitors and
 * client); FALSE when it names no Ceph pool or no monitor. */
static gboolean pool_rbd_source(const char *xml, LvPool *p)
{
    static const GMarkupParser parser = { xml_start, xml_end, xml_text, NULL, NULL };
    XmlState s = { .path = g_string_new(NULL),
                   .vg = g_string_new(NULL),
                   .hosts = g_string_new(NULL) };
    g_autoptr(GMarkupParseContext) ctx = g_markup_parse_context_new(&parser, 0, &s, NULL);
    gboolean ok = g_markup_parse_context_parse(ctx, xml, -1, NULL) &&
                  g_markup_parse_context_end_parse(ctx, NULL) && s.rbd;
    g_strstrip(s.vg->str);
    ok = ok && *s.vg->str != '\0' && s.hosts->len > 0;
    if (ok) {
        p->ceph_pool = g_strdup(s.vg->str);
        p->mon_host = g_strdup(s.hosts->str);
        p->user = g_strdup(s.user != NULL ? s.user : "admin");
        p->directory = g_strdup_printf("rbd:%s", p->ceph_pool);
    }
    g_string_free(s.path, TRUE);
    g_string_free(s.vg, TRUE);
    g_string_free(s.hosts, TRUE);
    g_free(s.user);
    return ok;
}

/* The target path; *vg the volume group of a logical pool (else NULL). */
static char *pool_target_path(const char *xml, char **vg)
{
    static const GMarkupParser parser = { xml_start, xml_end, xml_text, NULL, NULL };
    XmlState s = { .path = g_string_new(NULL),
                   .vg = g_string_new(NULL),
                   .hosts = g_string_new(NULL) };
    g_autoptr(GMarkupParseContext) ctx = g_markup_parse_context_new(&parser, 0, &s, NULL);
    *vg = NULL;
    gboolean parsed = g_markup_parse_context_parse(ctx, xml, -1, NULL);
    g_string_free(s.hosts, TRUE);
    g_free(s.user);
    if (!parsed || !g_markup_parse_context_end_parse(ctx, NULL) || s.path->len == 0 ||
        (s.logical && s.vg->len == 0)) {
        g_string_free(s.path, TRUE);
        g_string_free(s.vg, TRUE);
        return NULL;
    }
    g_strstrip(s.path->str);
    g_strstrip(s.vg->str);
    if (s.logical)
        *vg = g_string_free(s.vg, FALSE);
    else
        g_string_free(s.vg, TRUE);
    return g_string_free(s.path, FALSE);
}

/* Worker thread: the active dir, logical and rbd pools, or NULL when
 * libvirtd is absent. */
static GPtrArray *list_pools(VddLibvirt *self)
{
    virConnectPtr conn = get_conn(self);
    if (conn == NULL)
        return NULL;
    virStoragePoolPtr *pools = NULL;
    int n = virConnectListAllStoragePools(
        conn, &pools,
        VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE | VIR_CONNECT_LIST_STORAGE_POOLS_DIR |
            VIR_CONNECT_LIST_STORAGE_POOLS_LOGICAL | VIR_CONNECT_LIST_STORAGE_POOLS_RBD);
    GPtrArray *result = NULL;
    if (n >= 0) {
        result = g_ptr_array_new_with_free_func((GDestroyNotify)lv_pool_free);
        for (int i = 0; i < n; i++) {
            char *xml = virStoragePoolGetXMLDesc(pools[i], 0);
            const char *name = virStoragePoolGetName(pools[i]);
            char *vg = NULL;
            LvPool rbd = { 0 };
            if (xml != NULL && name != NULL && pool_rbd_source(xml, &rbd)) {
                LvPool *p = g_memdup2(&rbd, sizeof rbd);
                p->name = g_strdup(name);
                g_ptr_array_add(result, p);
                free(xml);
                virStoragePoolFree(pools[i]);
                continue;
            }
            char *dir = xml ? pool_target_path(xml, &vg) : NULL;
            if (dir != NULL && name != NULL) {
                LvPool *p = g_new0(LvPool, 1);
                p->name = g_strdup(name);
                p->directory = dir;
                p->vg = vg;
                g_ptr_array_add(result, p);
            } else {
                g_free(dir);
                g_free(vg);
            }
            free(xml);
            virStoragePoolFree(pools[i]);
        }
        free(pools);
    }
    virConnectClose(conn);
    return result;
}

/* Main thread: make the vdisk pools match libvirt's list. */
static void apply_pools(VddLibvirt *self, GPtrArray *pools)
{
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
    for (guint i = 0; i < pools->len; i++) {
        LvPool *p = pools->pdata[i];
        g_hash_table_add(seen, p->name);
        VddPool *pool = vdd_manager_lookup_pool(self->manager, p->name);
        if (pool != NULL) {
            /* A logical pool's /dev/VG is there only while an LV is
             * active, an rbd pool's rbd:POOL never: their names are
             * compared as they are. */
            gboolean named = p->vg != NULL || p->ceph_pool != NULL;
            g_autofree char *a = p->ceph_pool ? NULL : realpath(vdd_pool_get_directory(pool), NULL);
            g_autofree char *b = p->ceph_pool ? NULL : realpath(p->directory, NULL);
            if (a == NULL && named)
                a = g_strdup(vdd_pool_get_directory(pool));
            if (b == NULL && named)
                b = g_strdup(p->directory);
            if (g_strcmp0(a, b) == 0 && a != NULL)
                g_hash_table_add(self->mirrored, g_strdup(p->name));
            else if (!g_hash_table_contains(self->mirrored, p->name))
                g_message("libvirt: pool %s is %s in libvirt but %s here; left alone", p->name,
                          p->directory, vdd_pool_get_directory(pool));
            continue;
        }
        g_autoptr(GError) error = NULL;
        /* An rbd pool of libvirt's names its monitors and client; its key
         * is in a libvirt secret, which vdiskd does not read: the pool is
         * usable where a keyring holds the client's key. */
        const VddRbdPoolConfig rbd = { .ceph_pool = p->ceph_pool,
                                       .user = p->user,
                                       .mon_host = p->mon_host,
                                       .from_libvirt = TRUE };
        VddPool *added =
            p->ceph_pool != NULL ? vdd_manager_add_rbd_pool(self->manager, p->name, &rbd, &error)
            : p->vg != NULL ? vdd_manager_add_logical_pool(self->manager, p->name, p->vg, &error)
                            : vdd_manager_add_pool(self->manager, p->name, p->directory, &error);
        if (added == NULL) {
            g_message("libvirt: pool %s (%s): %s", p->name, p->directory, error->message);
            continue;
        }
        g_message("libvirt: pool %s: %s", p->name, p->directory);
        g_hash_table_add(self->mirrored, g_strdup(p->name));
    }
    GHashTableIter it;
    gpointer name;
    g_hash_table_iter_init(&it, self->mirrored);
    while (g_hash_table_iter_next(&it, &name, NULL)) {
        if (!g_hash_table_contains(seen, name)) {
            g_message("libvirt: pool %s is no longer active", (char *)name);
            vdd_manager_remove_pool(self->manager, name);
            g_hash_table_iter_remove(&it);
        }
    }
}

static gboolean retry_timeout(gpointer data)
{
    VddLibvirt *self = data;
    self->retry_source = 0;
    vdd_libvirt_sync(self, 0, NULL, NULL);
    return G_SOURCE_REMOVE;
}

static void schedule_sync(VddLibvirt *self)
{
    if (self->retry_source == 0)
        self->retry_source = g_timeout_add_seconds(RETRY_SECONDS, retry_timeout, self);
}

typedef struct {
    VddLibvirt *self; /* a reference */
    VddLibvirtSyncFunc callback;
    gpointer data;
    guint timeout_source;
    gboolean answered;
} SyncCall;

static void sync_answer(SyncCall *c)
{
    if (!c->answered && c->callback != NULL)
        c->callback(c->data);
    c->answered = TRUE;
}

static gboolean sync_timeout(gpointer data)
{
    SyncCall *c = data;
    c->timeout_source = 0;
    sync_answer(c);
    return G_SOURCE_REMOVE;
}

static void sync_thread(GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
    SyncCall *c = data;
    GPtrArray *pools = list_pools(c->self);
    g_task_return_pointer(task, pools, pools ? (GDestroyNotify)g_ptr_array_unref : NULL);
}

static void sync_done(GObject *source, GAsyncResult *res, gpointer data)
{
    SyncCall *c = g_task_get_task_data(G_TASK(res));
    g_autoptr(GPtrArray) pools = g_task_propagate_pointer(G_TASK(res), NULL);
    VddLibvirt *self = c->self;
    if (self->manager != NULL) {
        if (pools != NULL)
            apply_pools(self, pools);
        else
            schedule_sync(self);
    }
    if (c->timeout_source != 0)
        g_source_remove(c->timeout_source);
    sync_answer(c);
}

static void sync_call_free(SyncCall *c)
{
    lv_unref(c->self);
    g_free(c);
}

void vdd_libvirt_sync(VddLibvirt *self, guint timeout_ms, VddLibvirtSyncFunc callback,
                      gpointer data)
{
    SyncCall *c = g_new0(SyncCall, 1);
    c->self = lv_ref(self);
    c->callback = callback;
    c->data = data;
    if (timeout_ms > 0)
        c->timeout_source = g_timeout_add(timeout_ms, sync_timeout, c);
    g_autoptr(GTask) task = g_task_new(NULL, NULL, sync_done, NULL);
    g_task_set_task_data(task, c, (GDestroyNotify)sync_call_free);
    g_task_run_in_thread(task, sync_thread);
}

/* ----- refreshing libvirt's view ----- */

static void refresh_thread(GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
    VddLibvirt *self = g_object_get_data(G_OBJECT(task), "vdd-libvirt");
    const char *name = data;
    virConnectPtr conn = get_conn(self);
    if (conn == NULL) {
        g_task_return_boolean(task, FALSE);
        return;
    }
    virStoragePoolPtr pool = virStoragePoolLookupByName(conn, name);
    /* Fails while libvirt itself builds a volume there ("asynchronous jobs
     * running"); it refreshes that volume itself when done. */
    if (pool != NULL && virStoragePoolRefresh(pool, 0) < 0)
        g_debug("libvirt: refreshing pool %s: %s", name, virGetLastErrorMessage());
    if (pool != NULL)
        virStoragePoolFree(pool);
    virConnectClose(conn);
    g_task_return_boolean(task, TRUE);
}

static gboolean flush_refresh(gpointer data)
{
    VddLibvirt *self = data;
    self->refresh_source = 0;
    GHashTableIter it;
    gpointer name;
    g_hash_table_iter_init(&it, self->pending_refresh);
    while (g_hash_table_iter_next(&it, &name, NULL)) {
        g_autoptr(GTask) task = g_task_new(NULL, NULL, NULL, NULL);
        g_object_set_data_full(G_OBJECT(task), "vdd-libvirt", lv_ref(self),
                               (GDestroyNotify)lv_unref);
        g_task_set_task_data(task, g_strdup(name), g_free);
        g_task_run_in_thread(task, refresh_thread);
        g_hash_table_iter_remove(&it);
    }
    return G_SOURCE_REMOVE;
}

void vdd_libvirt_pool_changed(VddLibvirt *self, const char *pool_name)
{
    if (self == NULL || !g_hash_table_contains(self->mirrored, pool_name))
        return;
    g_hash_table_add(self->pending_refresh, g_strdup(pool_name));
    if (self->refresh_source == 0)
        self->refresh_source = g_timeout_add(REFRESH_DELAY_MS, flush_refresh, self);
}

gboolean vdd_libvirt_has_pool(VddLibvirt *self, const char *pool_name)
{
    return self != NULL && g_hash_table_contains(self->mirrored, pool_name);
}

VddLibvirt *vdd_libvirt_new(VddManager *manager, const char *uri)
{
    VddLibvirt *self = g_atomic_rc_box_new0(VddLibvirt);
    self->manager = manager;
    self->uri = g_strdup(uri ? uri : "qemu:///system");
    self->lifecycle_id = -1;
    g_mutex_init(&self->lock);
    self->mirrored = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    self->pending_refresh = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    start_event_loop();
    vdd_libvirt_sync(self, 0, NULL, NULL);
    return self;
}

void vdd_libvirt_free(VddLibvirt *self)
{
    if (self == NULL)
        return;
    self->manager = NULL;
    g_mutex_lock(&self->lock);
    virConnectPtr conn = g_steal_pointer(&self->conn);
    int id = self->lifecycle_id;
    self->lifecycle_id = -1;
    g_mutex_unlock(&self->lock);
    if (conn != NULL) {
        if (id >= 0)
            virConnectStoragePoolEventDeregisterAny(conn, id);
        virConnectUnregisterCloseCallback(conn, on_close);
        virConnectClose(conn);
    }
    if (self->refresh_source != 0)
        g_source_remove(self->refresh_source);
    if (self->retry_source != 0)
        g_source_remove(self->retry_source);
    self->refresh_source = self->retry_source = 0;
    lv_unref(self);
}

#else /* !HAVE_LIBVIRT: built without libvirt, there are no libvirt pools. */

VddLibvirt *vdd_libvirt_new(VddManager *manager, const char *uri) { return NULL; }
void vdd_libvirt_free(VddLibvirt *self) {}
void vdd_libvirt_sync(VddLibvirt *self, guint timeout_ms, VddLibvirtSyncFunc callback,
                      gpointer data)
{
    if (callback != NULL)
        callback(data);
}
void vdd_libvirt_pool_changed(VddLibvirt *self, const char *pool_name) {}
gboolean vdd_libvirt_has_pool(VddLibvirt *self, const char *pool_name) { return FALSE; }

#endif
