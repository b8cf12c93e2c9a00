#include "manager.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gunixfdlist.h>
#include <sys/stat.h>
#include <unistd.h>

#include "call.h"
#include "config.h"
#include "pools-config.h"
#include "errors.h"
#include "job.h"
#include "libvirt-pools.h"
#include "names.h"
#include "options.h"
#include "pool-backend.h"
#include "pool-backend-rbd.h"
#include "pool.h"
#include "vdd-dbus.h"
#include "volume.h"
#include "worker-client.h"
#include "vdisk-names.h"
#include "vdisk.h"

struct _VddManager {
    GObject parent;
    GDBusObjectManagerServer *om;
    VddDbusObjectSkeleton *object;
    VddDbusManager *iface;
    VddBouncer *bouncer;
    GHashTable *pools; /* name -> VddPool */
    GHashTable *jobs;  /* VddJob -> itself, while exported */
    guint running_jobs;
    gint64 last_activity;
    VddLibvirt *libvirt; /* borrowed; NULL without libvirt */
};

G_DEFINE_TYPE(VddManager, vdd_manager, G_TYPE_OBJECT)

static void vdd_manager_finalize(GObject *obj)
{
    VddManager *self = VDD_MANAGER(obj);
    g_hash_table_unref(self->jobs);
    g_hash_table_unref(self->pools);
    g_clear_object(&self->bouncer);
    g_clear_object(&self->iface);
    g_clear_object(&self->object);
    g_clear_object(&self->om);
    G_OBJECT_CLASS(vdd_manager_parent_class)->finalize(obj);
}

static void vdd_manager_class_init(VddManagerClass *klass)
{
    G_OBJECT_CLASS(klass)->finalize = vdd_manager_finalize;
}

static void vdd_manager_init(VddManager *self)
{
    self->pools = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_object_unref);
    self->jobs = g_hash_table_new_full(NULL, NULL, g_object_unref, NULL);
    self->bouncer = vdd_bouncer_new();
    self->last_activity = g_get_monotonic_time();
}

VddBouncer *vdd_manager_get_bouncer(VddManager *self) { return self->bouncer; }
GDBusObjectManagerServer *vdd_manager_get_object_manager(VddManager *self) { return self->om; }

void vdd_manager_touch(VddManager *self) { self->last_activity = g_get_monotonic_time(); }

gboolean vdd_manager_is_idle(VddManager *self, guint timeout_seconds)
{
    return self->running_jobs == 0 &&
           g_get_monotonic_time() - self->last_activity >= (gint64)timeout_seconds * G_USEC_PER_SEC;
}

guint vdd_manager_cancel_jobs(VddManager *self)
{
    GHashTableIter it;
    gpointer job;
    g_hash_table_iter_init(&it, self->jobs);
    while (g_hash_table_iter_next(&it, &job, NULL))
        g_cancellable_cancel(vdd_job_get_cancellable(job));
    return self->running_jobs;
}

guint vdd_manager_running_jobs(VddManager *self) { return self->running_jobs; }

void vdd_manager_export_job(VddManager *self, VddJob *job, GDBusObjectSkeleton *object)
{
    g_hash_table_add(self->jobs, g_object_ref(job));
    self->running_jobs++;
    vdd_manager_touch(self);
    g_dbus_object_manager_server_export(self->om, object);
}

void vdd_manager_job_finished(VddManager *self, VddJob *job)
{
    if (self->running_jobs > 0)
        self->running_jobs--;
    vdd_manager_touch(self);
}

void vdd_manager_unexport_job(VddManager *self, VddJob *job)
{
    g_dbus_object_manager_server_unexport(self->om, vdd_job_get_object_path(job));
    g_hash_table_remove(self->jobs, job);
}

/* ----- pools ----- */

VddPool *vdd_manager_lookup_pool(VddManager *self, const char *name)
{
    return g_hash_table_lookup(self->pools, name);
}

VddVolume *vdd_manager_lookup_volume(VddManager *self, const char *object_path)
{
    GHashTableIter it;
    gpointer pool;
    g_hash_table_iter_init(&it, self->pools);
    while (g_hash_table_iter_next(&it, NULL, &pool)) {
        const char *prefix = vdd_pool_get_object_path(pool);
        gsize n = strlen(prefix);
        if (strncmp(object_path, prefix, n) != 0 || object_path[n] != '/')
            continue;
        g_autofree char *name = (char *)g_dbus_unescape_object_path(object_path + n + 1);
        return name != NULL ? vdd_pool_lookup_volume(pool, name) : NULL;
    }
    return NULL;
}

gboolean vdd_manager_remove_pool(VddManager *self, const char *name)
{
    VddPool *pool = g_hash_table_lookup(self->pools, name);
    if (pool == NULL)
        return FALSE;
    vdd_pool_unexport(pool);
    g_hash_table_remove(self->pools, name);
    return TRUE;
}

void vdd_manager_set_libvirt(VddManager *self, VddLibvirt *libvirt) { self->libvirt = libvirt; }

void vdd_manager_pool_changed(VddManager *self, VddPool *pool)
{
    vdd_libvirt_pool_changed(self->libvirt, vdd_pool_get_name(pool));
}

/* Whether a new pool may take this name. */
static gboolean pool_name_is_free(VddManager *self, const char *name, GError **error)
{
    if (!vdd_name_is_valid(name, "pool", error))
        return FALSE;
    if (g_hash_table_contains(self->pools, name)) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_EXISTS, "a pool named '%s' exists already", name);
        return FALSE;
    }
    return TRUE;
}

static VddPool *keep_pool(VddManager *self, const char *name, VddPool *pool)
{
    if (pool != NULL)
        g_hash_table_insert(self->pools, g_strdup(name), pool);
    return pool;
}

VddPool *vdd_manager_add_pool(VddManager *self, const char *name, const char *directory,
                              GError **error)
{
    if (!pool_name_is_free(self, name, error))
        return NULL;
    return keep_pool(self, name, vdd_pool_new(self, name, directory, error));
}

VddPool *vdd_manager_add_logical_pool(VddManager *self, const char *name, const char *vg,
                                      GError **error)
{
    if (!pool_name_is_free(self, name, error))
        return NULL;
    return keep_pool(self, name, vdd_pool_new_logical(self, name, vg, error));
}

VddPool *vdd_manager_add_rbd_pool(VddManager *self, const char *name,
                                  const VddRbdPoolConfig *config, GError **error)
{
    if (!pool_name_is_free(self, name, error))
        return NULL;
    return keep_pool(self, name, vdd_pool_new_rbd(self, name, config, error));
}

void vdd_manager_load_config(VddManager *self, const char *dir)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) pools = vdd_config_load_pools(dir, &error);
    if (pools == NULL) {
        g_warning("%s", error->message);
        return;
    }
    for (guint i = 0; i < pools->len; i++) {
        VddPoolConfig *pc = pools->pdata[i];
        g_autoptr(GError) local = NULL;
        gboolean logical = g_strcmp0(pc->type, "logical") == 0;
        const VddRbdPoolConfig rbd = { pc->pool_source, pc->conf, pc->user, pc->keyring };
        VddPool *pool =
            g_strcmp0(pc->type, "rbd") == 0 ? vdd_manager_add_rbd_pool(self, pc->name, &rbd, &local)
            : logical ? vdd_manager_add_logical_pool(self, pc->name, pc->pool_source, &local)
                      : vdd_manager_add_pool(self, pc->name, pc->directory, &local);
        if (pool == NULL)
            g_warning("%s: pool %s: %s", pc->source, pc->name, local->message);
        else
            g_message("pool %s: %s (from %s)", pc->name, vdd_pool_get_directory(pool), pc->source);
    }
}

/* ----- org.vdisk.VDisk1.Manager ----- */

/* The parameters of each method but its options (VddCall's). */
typedef struct {
    char none;
} NoParams;

static void parse_nothing(VddManager *self, GVariant *args, NoParams *p, VddCallSubject *s) {}

static void get_pools(VddManager *self, VddCall *call, const NoParams *p)
{
    g_autoptr(GPtrArray) paths = g_ptr_array_new();
    g_autoptr(GList) names = g_hash_table_get_keys(self->pools);
    names = g_list_sort(names, (GCompareFunc)g_strcmp0);
    for (GList *l = names; l; l = l->next)
        g_ptr_array_add(
            paths, (gpointer)vdd_pool_get_object_path(g_hash_table_lookup(self->pools, l->data)));
    g_ptr_array_add(paths, NULL);
    vdd_dbus_manager_complete_get_pools(self->iface, call->invocation,
                                        (const char *const *)paths->pdata);
}

typedef struct {
    const char *name;
    const char *directory;
} AddPoolParams;

static void parse_add_pool(VddManager *self, GVariant *args, AddPoolParams *p, VddCallSubject *s)
{
    g_variant_get(args, "(&s&s@a{sv})", &p->name, &p->directory, NULL);
    s->pool = p->name;
}

static void add_pool(VddManager *self, VddCall *call, const AddPoolParams *p)
{
    GError *error = NULL;
    VddPool *pool = vdd_manager_add_pool(self, p->name, p->directory, &error);
    if (pool == NULL) {
        vdd_return_error(call->invocation, call->uid, p->name, error);
        return;
    }
    vdd_log_operation(call->invocation, call->uid, p->name, NULL);
    vdd_dbus_manager_complete_add_pool(self->iface, call->invocation,
                                       vdd_pool_get_object_path(pool));
}

/* ResolvePath: which pool holds a file, for the libvirt shim. */
typedef struct {
    VddManager *self;
    GDBusMethodInvocation *invocation;
    guint32 uid;
    char *path;
    char *dir;  /* the directory, symbolic links resolved */
    char *name; /* the file's name in it */
} Resolve;

static void resolve_free(Resolve *r)
{
    g_object_unref(r->self);
    g_object_unref(r->invocation);
    g_free(r->path);
    g_free(r->dir);
    g_free(r->name);
    g_free(r);
}

static VddPool *pool_for_directory(VddManager *self, const char *dir)
{
    GHashTableIter it;
    gpointer pool;
    g_hash_table_iter_init(&it, self->pools);
    while (g_hash_table_iter_next(&it, NULL, &pool)) {
        g_autofree char *real = realpath(vdd_pool_get_directory(pool), NULL);
        if (g_strcmp0(real, dir) == 0)
            return pool;
    }
    return NULL;
}

static void resolve_finish(gpointer data)
{
    Resolve *r = data;
    VddManager *self = r->self;
    GError *error = NULL;
    VddPool *pool = pool_for_directory(self, r->dir);
    if (pool == NULL) {
        error = g_error_new(VDD_ERROR, VDD_ERROR_NOT_FOUND, "%s is in no storage pool", r->path);
        vdd_return_error(r->invocation, r->uid, r->path, error);
        resolve_free(r);
        return;
    }
    /* A file made behind the daemon's back (libvirt writes raw volumes
     * itself) becomes a volume now; a known one is read again. In a
     * logical pool that is an LV libvirt made a moment ago with lvcreate
     * (before its qemu-img convert into it), as lvs lists it. */
    struct stat st;
    VddVolume *vol = vdd_pool_lookup_volume(pool, r->name);
    gboolean exists =
        vdd_pool_is_logical(pool)
            ? vdd_pool_backend_exists(vdd_pool_get_backend(pool), r->name)
            : fstatat(vdd_pool_get_dirfd(pool), r->name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                  S_ISREG(st.st_mode);
    if (exists) {
        if (vol == NULL)
            vol = vdd_pool_add_volume(pool, r->name);
        else if (!vdd_volume_is_locked(vol))
            vdd_volume_update(vol);
    }
    vdd_log_operation(r->invocation, r->uid, r->path, NULL);
    vdd_dbus_manager_complete_resolve_path(self->iface, r->invocation,
                                           vdd_pool_get_object_path(pool), r->name,
                                           vol ? vdd_volume_get_object_path(vol) : "/");
    resolve_free(r);
}

typedef struct {
    const char *path;
} ResolvePathParams;

static void parse_resolve_path(VddManager *self, GVariant *args, ResolvePathParams *p,
                               VddCallSubject *s)
{
    g_variant_get(args, "(&s@a{sv})", &p->path, NULL);
    s->path = p->path;
}

static void resolve_path(VddManager *self, VddCall *call, const ResolvePathParams *p)
{
    GDBusMethodInvocation *invocation = call->invocation;
    guint32 uid = call->uid;
    GVariant *options = call->options;
    const char *path = p->path;
    GError *error = NULL;
    gboolean add_directory = FALSE;
    if (!vdd_options_lookup_bool(options, "add-directory", FALSE, &add_directory, &error)) {
        vdd_return_error(invocation, uid, path, error);
        return;
    }
    /* A folder never becomes a pool by a file in it being named here: a
     * pool serves everyone its rules allow, and the private folder a
     * domain's disk is kept in is not theirs to read. */
    if (add_directory) {
        vdd_return_error(invocation, uid, path,
                         g_error_new(VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                                     "add-directory is not supported: pools are added by "
                                     "AddPool or by libvirt"));
        return;
    }
    if (!g_path_is_absolute(path)) {
        vdd_return_error(invocation, uid, path,
                         g_error_new(VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                                     "'%s' is not an absolute path", path));
        return;
    }
    g_autofree char *name = g_path_get_basename(path);
    g_autofree char *parent = g_path_get_dirname(path);
    g_autofree char *dir = realpath(parent, NULL);
    if (dir == NULL) {
        vdd_error_set_errno(&error, errno, "%s", parent);
        vdd_return_error(invocation, uid, path, error);
        return;
    }
    if (!vdd_name_is_valid(name, "volume", &error)) {
        vdd_return_error(invocation, uid, path, error);
        return;
    }
    Resolve *r = g_new0(Resolve, 1);
    r->self = g_object_ref(self);
    r->invocation = g_object_ref(invocation);
    r->uid = uid;
    r->path = g_strdup(path);
    r->dir = g_steal_pointer(&dir);
    r->name = g_steal_pointer(&name);
    /* A pool libvirt started a moment ago may be unknown yet: ask libvirt,
     * but not for long (libvirtd may hold that pool locked while it waits
     * for the caller). */
    if (pool_for_directory(self, r->dir) == NULL && self->libvirt != NULL)
        vdd_libvirt_sync(self->libvirt, 3000, resolve_finish, r);
    else
        resolve_finish(r);
}

/* InspectFile: the header of the caller's own file, read by a worker
 * (worker-client.h). Never follows names stored in it. */
/* The parse runs in a worker process, started from the job pool: a hostile
 * header may take long or ask for much memory, and the main loop keeps
 * answering everyone meanwhile. */
typedef struct {
    VddManager *self;
    GDBusMethodInvocation *invocation;
    guint32 uid;
    int fd;
    char *format;
    char *misbehave; /* test hooks only: what the worker is to try */
    GVariant *info;
    GError *error;
} Inspect;

static void inspect_run(gpointer data)
{
    Inspect *in = data;
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    vdd_worker_request_caller_file(&d, "info", in->uid, in->format, "image",
                                   VD_OPEN_NO_BACKING | VD_OPEN_NO_RELATED_FILES);
    if (in->misbehave != NULL)
        g_variant_dict_insert(&d, "misbehave", "s", in->misbehave);
    const VddWorkerCall call = { .fds = &in->fd, .n_fds = 1 };
    g_autoptr(GVariant) result = vdd_worker_run(g_variant_dict_end(&d), &call, &in->error);
    if (result != NULL) {
        in->info = g_variant_lookup_value(result, "info", G_VARIANT_TYPE_VARDICT);
        if (in->info == NULL)
            in->error =
                g_error_new(VDD_ERROR, VDD_ERROR_FAILED, "the image could not be processed safely");
    }
}

static void inspect_done(gpointer data)
{
    Inspect *in = data;
    if (in->info == NULL) {
        vdd_return_error(in->invocation, in->uid, "caller's file", g_steal_pointer(&in->error));
    } else {
        vdd_log_operation(in->invocation, in->uid, "caller's file", NULL);
        vdd_dbus_manager_complete_inspect_file(in->self->iface, in->invocation, NULL, in->info);
    }
    close(in->fd);
    g_clear_pointer(&in->info, g_variant_unref);
    g_clear_error(&in->error);
    g_free(in->format);
    g_free(in->misbehave);
    g_object_unref(in->invocation);
    g_object_unref(in->self);
    g_free(in);
}

typedef struct {
    gint32 handle;
} InspectFileParams;

static void parse_inspect_file(VddManager *self, GVariant *args, InspectFileParams *p,
                               VddCallSubject *s)
{
    g_variant_get(args, "(h@a{sv})", &p->handle, NULL);
}

static void inspect_file(VddManager *self, VddCall *call, const InspectFileParams *p)
{
    GDBusMethodInvocation *invocation = call->invocation;
    guint32 uid = call->uid;
    GVariant *options = call->options;
    gint32 handle = p->handle;
    GError *error = NULL;
    const char *format = NULL;
    if (!vdd_options_lookup_string(options, "format", &format, &error)) {
        vdd_return_error(invocation, uid, "caller's file", error);
        return;
    }
    int fd = vdd_caller_fd(invocation, handle, O_RDONLY, "image", &error);
    if (fd < 0) {
        vdd_return_error(invocation, uid, "caller's file", error);
        return;
    }
    Inspect *in = g_new0(Inspect, 1);
    in->self = g_object_ref(self);
    in->invocation = g_object_ref(invocation);
    in->uid = uid;
    in->fd = fd;
    in->format = g_strdup(format);
    in->misbehave = vdd_worker_test_misbehave(options);
    vdd_job_run_work(invocation, uid, inspect_run, inspect_done, in);
}

/* ConvertFile: from one of the caller's descriptors into another. */
typedef struct {
    guint32 uid;
    int source_fd;
    char *source_format;
    int target_fd;
    char *format;
    VdOptions *create;
    char *misbehave; /* test hooks only */
} ConvertFileWork;

static void convert_file_work_free(ConvertFileWork *w)
{
    if (w->source_fd >= 0)
        close(w->source_fd);
    g_free(w->source_format);
    if (w->target_fd >= 0)
        close(w->target_fd);
    g_free(w->format);
    g_clear_pointer(&w->create, vd_options_free);
    g_free(w->misbehave);
    g_free(w);
}

static gboolean convert_file_run(VddJob *job, gpointer data, GCancellable *cancellable,
                                 GError **error)
{
    ConvertFileWork *w = data;
    /* The caller's header is parsed, and the copy made, by a worker. */
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    vdd_worker_request_caller_file(&d, "convert", w->uid, w->source_format, "source",
                                   VD_OPEN_NO_RELATED_FILES);
    vdd_worker_request_target(&d, 1, "target", NULL, VD_OPEN_NO_RELATED_FILES, w->format, w->create,
                              NULL);
    if (w->misbehave != NULL)
        g_variant_dict_insert(&d, "misbehave", "s", w->misbehave);
    const int fds[] = { w->source_fd, w->target_fd };
    g_autoptr(GVariant) result = vdd_worker_run_job(g_variant_dict_end(&d), fds, G_N_ELEMENTS(fds),
                                                    NULL, job, cancellable, error);
    /* As vd_convert_fd leaves it, also when the worker could not say so:
     * a target that failed never looks like a whole image. */
    if (result == NULL && ftruncate(w->target_fd, 0) < 0)
        g_warning("convert target: %s", g_strerror(errno));
    return result != NULL;
}

gboolean vdd_check_target_files(const char *format, VdOptions *create, GError **error)
{
    static const char *const refused[] = { "data_file", "data_file_raw", NULL };
    for (guint i = 0; refused[i]; i++) {
        if (vd_options_get(create, refused[i]) != NULL) {
            g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                        "option %s is not available through vdiskd: it names a file of its own",
                        refused[i]);
            return FALSE;
        }
    }
    const char *sub = vd_options_get(create, "subformat");
    if (g_strcmp0(format, "vmdk") == 0 && sub != NULL && g_strcmp0(sub, "monolithicSparse") != 0 &&
        g_strcmp0(sub, "streamOptimized") != 0) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "vmdk subformat %s needs files of its own; vdiskd makes monolithicSparse or "
                    "streamOptimized vmdk volumes",
                    sub);
        return FALSE;
    }
    return TRUE;
}

gboolean vdd_check_fd_target_options(const char *format, VdOptions *create, GError **error)
{
    static const char *const refused[] = { "backing_file", "backing_fmt", NULL };
    for (guint i = 0; refused[i]; i++) {
        if (vd_options_get(create, refused[i]) != NULL) {
            g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                        "option %s cannot be used for a target passed as a descriptor", refused[i]);
            return FALSE;
        }
    }
    return vdd_check_target_files(format, create, error);
}

typedef struct {
    gint32 source;
    gint32 target;
    const char *format;
} ConvertFileParams;

static void parse_convert_file(VddManager *self, GVariant *args, ConvertFileParams *p,
                               VddCallSubject *s)
{
    g_variant_get(args, "(hh&s@a{sv})", &p->source, &p->target, &p->format, NULL);
    s->format = p->format;
}

static void convert_file(VddManager *self, VddCall *call, const ConvertFileParams *p)
{
    GDBusMethodInvocation *invocation = call->invocation;
    guint32 uid = call->uid;
    GVariant *options = call->options;
    gint32 hsrc = p->source, hdst = p->target;
    const char *format = p->format;
    GError *error = NULL;
    /* "misbehave": the tests of the worker (vdd_worker_test_misbehave). */
    static const char *const daemon_keys[] = { "source-format", "misbehave", NULL };
    const char *source_format = NULL;
    if (!vdd_check_format(format, &error)) {
        vdd_return_error(invocation, uid, "caller's file", error);
        return;
    }
    ConvertFileWork *w = g_new0(ConvertFileWork, 1);
    w->uid = uid;
    w->source_fd = w->target_fd = -1;
    w->format = g_strdup(format);
    if (!vdd_options_lookup_string(options, "source-format", &source_format, &error) ||
        (source_format != NULL && !vdd_check_format(source_format, &error)) ||
        (w->create = vdd_options_to_create(options, format, daemon_keys, &error)) == NULL ||
        !vdd_check_fd_target_options(format, w->create, &error) ||
        (w->source_fd = vdd_caller_fd(invocation, hsrc, O_RDONLY, "source", &error)) < 0 ||
        (w->target_fd = vdd_caller_fd(invocation, hdst, O_RDWR, "target", &error)) < 0) {
        convert_file_work_free(w);
        vdd_return_error(invocation, uid, "caller's file", error);
        return;
    }
    w->source_format = g_strdup(source_format);
    w->misbehave = vdd_worker_test_misbehave(options);
    VddJob *job = vdd_job_new(self, invocation, "convert", uid, NULL);
    vdd_log_operation(invocation, uid, vdd_job_get_object_path(job), NULL);
    vdd_dbus_manager_complete_convert_file(self->iface, invocation, NULL,
                                           vdd_job_get_object_path(job));
    vdd_job_start(job, convert_file_run, NULL, w, (GDestroyNotify)convert_file_work_free);
    g_object_unref(job);
}

static const VddMethod manager_methods[] = {
    VDD_METHOD("GetPools", NoParams, parse_nothing, get_pools),
    VDD_METHOD("AddPool", AddPoolParams, parse_add_pool, add_pool),
    VDD_METHOD("ResolvePath", ResolvePathParams, parse_resolve_path, resolve_path),
    VDD_METHOD("InspectFile", InspectFileParams, parse_inspect_file, inspect_file),
    VDD_METHOD("ConvertFile", ConvertFileParams, parse_convert_file, convert_file),
};

VddManager *vdd_manager_new(void)
{
    VddManager *self = g_object_new(VDD_TYPE_MANAGER, NULL);
    self->om = g_dbus_object_manager_server_new(VDISK_ROOT_PATH);
    self->object = vdd_dbus_object_skeleton_new(VDISK_MANAGER_PATH);
    self->iface = vdd_dbus_manager_skeleton_new();
    g_autoptr(GPtrArray) writable = g_ptr_array_new();
    for (const char *const *f = vd_formats(); *f; f++) {
        if (vd_format_create_options(*f) != NULL || g_str_equal(*f, "raw"))
            g_ptr_array_add(writable, (gpointer)*f);
    }
    g_ptr_array_add(writable, NULL);
    vdd_dbus_manager_set_version(self->iface, VDISK_VERSION);
    vdd_dbus_manager_set_formats(self->iface, vd_formats());
    vdd_dbus_manager_set_writable_formats(self->iface, (const char *const *)writable->pdata);
    vdd_dbus_manager_set_worker_confinement(self->iface,
                                            g_variant_new_array(G_VARIANT_TYPE("{sv}"), NULL, 0));
    vdd_call_serve(self->iface, self, self, manager_methods, G_N_ELEMENTS(manager_methods));
    vdd_dbus_object_skeleton_set_manager(self->object, self->iface);
    g_dbus_object_manager_server_export(self->om, G_DBUS_OBJECT_SKELETON(self->object));
    return self;
}

/* WorkerConfinement: asked of a worker on a thread once the manager is on
 * the bus, published on the main loop. */
typedef struct {
    VddManager *self;
    GVariant *confinement;
} WorkerStatus;

static gboolean publish_worker_status(gpointer data)
{
    WorkerStatus *ws = data;
    vdd_dbus_manager_set_worker_confinement(ws->self->iface, ws->confinement);
    g_variant_unref(ws->confinement);
    g_object_unref(ws->self);
    g_free(ws);
    return G_SOURCE_REMOVE;
}

static gpointer ask_worker_status(gpointer data)
{
    WorkerStatus *ws = data;
    g_autoptr(GError) error = NULL;
    ws->confinement = vdd_worker_status(&error);
    if (ws->confinement == NULL) {
        g_warning("cannot start vdisk-worker: %s", error->message);
        GVariantDict d;
        g_variant_dict_init(&d, NULL);
        g_variant_dict_insert(&d, "error", "s", error->message);
        ws->confinement = g_variant_ref_sink(g_variant_dict_end(&d));
    }
    g_main_context_invoke(NULL, publish_worker_status, ws);
    return NULL;
}

void vdd_manager_export(VddManager *self, GDBusConnection *connection)
{
    g_dbus_object_manager_server_set_connection(self->om, connection);
    WorkerStatus *ws = g_new0(WorkerStatus, 1);
    ws->self = g_object_ref(self);
    g_thread_unref(g_thread_new("worker-status", ask_worker_status, ws));
}
