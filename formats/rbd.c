/* Ceph RBD images as files: qemu-img's names for them
 * (rbd:POOL/[NAMESPACE/]IMAGE[@SNAP][:conf=PATH][:id=USER][:KEY=VALUE]...,
 * and the options of --image-opts driver=rbd), and the connection behind
 * a VdFile (file.c) that reads and writes one through librbd. As on an
 * NBD export, any format can sit on one; raw is the guest view of it.
 * librados and librbd speak to the cluster: vdisk only says which
 * configuration, user, pool and image. */
#include "vdisk-driver.h"

#include <errno.h>

#if HAVE_LIBRBD
#include <rados/librados.h>
#include <rbd/librbd.h>
#endif

#define RBD_PREFIX "rbd:"
/* Connecting gives up after this long, so a configuration naming no
 * monitor that answers fails instead of waiting librados's five minutes.
 * A client_mount_timeout (or rados_mon_op_timeout) of the configuration
 * file or of the name wins. */
#define RBD_CONNECT_TIMEOUT "30"
/* Reads and writes larger than an object go out as one request per
 * object, at most this many at once. */
#define RBD_MAX_IN_FLIGHT 16
/* Block status asks librbd about this much of the image at once. */
#define RBD_STATUS_WINDOW (1ull << 30)
/* Zeroes are written at most this much at once (librbd's length is a
 * size_t and its result an ssize_t). */
#define RBD_MAX_ZERO (1ull << 30)

/* ----- names ----- */

typedef struct {
    char *pool;
    char *ns;
    char *image;
    char *snap;
    char *conf;
    char *user;
    /* Other KEY=VALUE options, for rados_conf_set, in the order given. */
    GPtrArray *keys;
    GPtrArray *values;
} RbdName;

static void rbd_name_clear(RbdName *n)
{
    g_free(n->pool);
    g_free(n->ns);
    g_free(n->image);
    g_free(n->snap);
    g_free(n->conf);
    g_free(n->user);
    g_clear_pointer(&n->keys, g_ptr_array_unref);
    g_clear_pointer(&n->values, g_ptr_array_unref);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(RbdName, rbd_name_clear)

gboolean vd_rbd_is_name(const char *name)
{
    return name != NULL && g_str_has_prefix(name, RBD_PREFIX);
}

static gboolean bad_name(GError **error, const char *name, const char *why)
{
    vd_set_file_error(error, name, VD_ERROR_INVALID_ARGUMENT,
                      "not a valid RBD image name: %s (expected "
                      "rbd:POOL/IMAGE[@SNAPSHOT][:conf=PATH][:id=USER][:KEY=VALUE...])",
                      why);
    return FALSE;
}

/* The text up to the first unescaped character of stops (or the end),
 * with qemu's escapes undone: a backslash takes the next character as
 * it is. *p moves past the text, not past the stop. */
static char *next_token(const char **p, const char *stops)
{
    GString *out = g_string_new(NULL);
    const char *s = *p;
    for (; *s != '\0' && strchr(stops, *s) == NULL; s++) {
        if (*s == '\\' && s[1] != '\0')
            s++;
        g_string_append_c(out, *s);
    }
    *p = s;
    return g_string_free(out, FALSE);
}

static gboolean parse_name(const char *name, RbdName *n, GError **error)
{
    if (!vd_rbd_is_name(name))
        return bad_name(error, name, "it does not begin with rbd:");
    const char *p = name + strlen(RBD_PREFIX);
    n->pool = next_token(&p, "/@:");
    if (*n->pool == '\0')
        return bad_name(error, name, "no pool");
    if (*p != '/')
        return bad_name(error, name, "no image after the pool");
    p++;
    n->image = next_token(&p, "/@:");
    if (*p == '/') { /* POOL/NAMESPACE/IMAGE */
        p++;
        n->ns = g_steal_pointer(&n->image);
        n->image = next_token(&p, "/@:");
        if (*p == '/')
            return bad_name(error, name, "more than POOL/NAMESPACE/IMAGE");
    }
    if (*n->image == '\0')
        return bad_name(error, name, "no image");
    if (*p == '@') {
        p++;
        n->snap = next_token(&p, ":");
        if (*n->snap == '\0')
            return bad_name(error, name, "no snapshot after @");
    }
    n->keys = g_ptr_array_new_with_free_func(g_free);
    n->values = g_ptr_array_new_with_free_func(g_free);
    while (*p == ':') {
        p++;
        g_autofree char *key = next_token(&p, "=:");
        if (*p != '=' || *key == '\0') {
            g_autofree char *why = g_strdup_printf("option '%s' has no =VALUE", key);
            return bad_name(error, name, why);
        }
        p++;
        g_autofree char *value = next_token(&p, ":");
        if (g_str_equal(key, "conf")) {
            g_free(n->conf);
            n->conf = g_steal_pointer(&value);
        } else if (g_str_equal(key, "id")) {
            g_free(n->user);
            n->user = g_steal_pointer(&value);
        } else {
            g_ptr_array_add(n->keys, g_steal_pointer(&key));
            g_ptr_array_add(n->values, g_steal_pointer(&value));
        }
    }
    return TRUE;
}

/* A part of a name, with the characters of special that end it there
 * escaped: '/', '@' and ':' in the pool, image and snapshot, ':' in an
 * option's value. */
static void append_escaped(GString *out, const char *text, const char *special)
{
    for (const char *s = text; *s != '\0'; s++) {
        if (*s == '\\' || strchr(special, *s) != NULL)
            g_string_append_c(out, '\\');
        g_string_append_c(out, *s);
    }
}

char *vd_rbd_name_from_options(VdOptions *opts, GError **error)
{
    static const char *const known[] = { "pool", "namespace", "image", "snapshot",
                                         "conf", "user",      NULL };
    const char *pool = vd_options_get(opts, "pool");
    const char *image = vd_options_get(opts, "image");
    if (pool == NULL || *pool == '\0' || image == NULL || *image == '\0') {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "driver=rbd needs pool=POOL and image=IMAGE (and conf=PATH, user=ID, "
                    "namespace=NS, snapshot=SNAP where they apply)");
        return NULL;
    }
    g_autoptr(GPtrArray) keys = vd_options_keys(opts);
    for (guint i = 0; i < keys->len; i++) {
        const char *key = keys->pdata[i];
        if (!g_strv_contains(known, key)) {
            g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                        "driver=rbd: option '%s' is not supported (pool, image, namespace, "
                        "snapshot, conf, user)",
                        key);
            return NULL;
        }
    }
    GString *out = g_string_new(RBD_PREFIX);
    append_escaped(out, pool, "/@:");
    g_string_append_c(out, '/');
    const char *ns = vd_options_get(opts, "namespace");
    if (ns != NULL && *ns != '\0') {
        append_escaped(out, ns, "/@:");
        g_string_append_c(out, '/');
    }
    append_escaped(out, image, "/@:");
    const char *snap = vd_options_get(opts, "snapshot");
    if (snap != NULL && *snap != '\0') {
        g_string_append_c(out, '@');
        append_escaped(out, snap, "/@:");
    }
    const char *conf = vd_options_get(opts, "conf");
    if (conf != NULL) {
        g_string_append(out, ":conf=");
        append_escaped(out, conf, ":");
    }
    const char *user = vd_options_get(opts, "user");
    if (user != NULL) {
        g_string_append(out, ":id=");
        append_escaped(out, user, ":");
    }
    return g_string_free(out, FALSE);
}

#if HAVE_LIBRBD

/* ----- the connection ----- */

struct VdRbd {
    rados_t cluster;
    rados_ioctx_t io;
    rbd_image_t image;
    char *name;
    char *label; /* "image 'I' in pool 'P'", for messages */
    gboolean read_only;
    guint64 obj_size;
    /* The size, and the block status cache below, under lock: readers on
     * several threads, a resize may change it. */
    GMutex lock;
    guint64 size;
    /* Allocated ranges of [cache_start, cache_end), start and end in
     * pairs, in order. Dropped by every write. */
    guint64 cache_start, cache_end;
    GArray *cache; /* guint64 pairs */
    /* Counts the drops: a reply is cached only if no write began or
     * ended while it was asked for. */
    guint64 cache_gen;
};

static void rbd_set_error(GError **error, const char *name, int rc, const char *what)
{
    int err = -rc;
    VdError code = err == ENOSPC || err == EDQUOT ? VD_ERROR_NO_SPACE : VD_ERROR_IO;
    if (err == ENOENT)
        code = VD_ERROR_NOT_FOUND;
    vd_set_file_error(error, name, code, "%s: %s", what, g_strerror(err));
}

/* Is there a configuration where librados looks without conf= (the
 * places ceph(8) names)? Where there is none, it is not asked to read
 * one: it would only print its own complaint before vdisk's. */
static gboolean default_conf_exists(void)
{
    const char *env = g_getenv("CEPH_CONF");
    if (env != NULL && *env != '\0')
        return TRUE; /* librados reads it, and says what is wrong with it */
    g_autofree char *home = g_build_filename(g_get_home_dir(), ".ceph", "ceph.conf", NULL);
    g_autofree char *config = g_build_filename(g_get_home_dir(), ".ceph", "config", NULL);
    return g_file_test("/etc/ceph/ceph.conf", G_FILE_TEST_EXISTS) ||
           g_file_test(home, G_FILE_TEST_EXISTS) || g_file_test(config, G_FILE_TEST_EXISTS) ||
           g_file_test("ceph.conf", G_FILE_TEST_EXISTS);
}

/* A cluster handle set up from the name's configuration, connected. */
static gboolean connect_cluster(const char *name, const RbdName *n, rados_t *cluster,
                                GError **error)
{
    int rc = rados_create(cluster, n->user);
    if (rc < 0) {
        rbd_set_error(error, name, rc, "cannot make a Ceph cluster handle");
        *cluster = NULL;
        return FALSE;
    }
    (void)rados_conf_set(*cluster, "client_mount_timeout", RBD_CONNECT_TIMEOUT);
    (void)rados_conf_set(*cluster, "rados_mon_op_timeout", RBD_CONNECT_TIMEOUT);
    /* librados's own complaints on stderr would come before vdisk's
     * message saying the same: vdisk's alone, unless the configuration
     * asks for them. */
    (void)rados_conf_set(*cluster, "log_to_stderr", "false");
    (void)rados_conf_set(*cluster, "err_to_stderr", "false");
    /* Without conf=, the usual places (CEPH_CONF, /etc/ceph/ceph.conf, ...)
     * as librados looks; none there is no error yet: the name's options
     * may say where the monitors are. */
    gboolean no_conf = n->conf == NULL && !default_conf_exists();
    rc = no_conf ? -ENOENT : rados_conf_read_file(*cluster, n->conf);
    no_conf = no_conf || rc < 0;
    if (rc < 0 && n->conf != NULL) {
        g_autofree char *what =
            g_strdup_printf("cannot read the Ceph configuration file %s", n->conf);
        rbd_set_error(error, name, rc, what);
        return FALSE;
    }
    for (guint i = 0; i < n->keys->len; i++) {
        const char *key = n->keys->pdata[i], *value = n->values->pdata[i];
        rc = rados_conf_set(*cluster, key, value);
        if (rc == -ENOENT) {
            vd_set_file_error(error, name, VD_ERROR_INVALID_ARGUMENT,
                              "'%s' is no Ceph configuration option", key);
            return FALSE;
        }
        if (rc < 0) {
            vd_set_file_error(error, name, VD_ERROR_INVALID_ARGUMENT,
                              "Ceph option %s cannot be '%s': %s", key, value, g_strerror(-rc));
            return FALSE;
        }
    }
    rc = rados_connect(*cluster);
    if (rc < 0) {
        char timeout[32] = "", keyring[1024] = "", mon_host[1024] = "";
        (void)rados_conf_get(*cluster, "client_mount_timeout", timeout, sizeof timeout);
        (void)rados_conf_get(*cluster, "keyring", keyring, sizeof keyring);
        (void)rados_conf_get(*cluster, "mon_host", mon_host, sizeof mon_host);
        g_autofree char *monitors = g_strdup_printf("mon_host %s", mon_host);
        const char *conf = n->conf != NULL     ? n->conf
                           : *mon_host != '\0' ? monitors
                                               : "the default configuration";
        const char *user = n->user != NULL ? n->user : "admin";
        if (no_conf && n->conf == NULL && *mon_host == '\0')
            vd_set_file_error(error, name, VD_ERROR_NOT_FOUND,
                              "no Ceph configuration found (not in CEPH_CONF, "
                              "/etc/ceph/ceph.conf, ~/.ceph/config or ./ceph.conf): name it "
                              "with :conf=PATH");
        else if (rc == -ETIMEDOUT)
            vd_set_file_error(error, name, VD_ERROR_IO,
                              "cannot connect to the Ceph cluster of %s: no monitor answered "
                              "within %s s",
                              conf, timeout);
        else if (rc == -ENOENT && *mon_host == '\0')
            vd_set_file_error(error, name, VD_ERROR_NOT_FOUND,
                              "cannot connect to the Ceph cluster of %s: it names no monitor "
                              "(mon_host)",
                              conf);
        else if (rc == -ENOENT)
            vd_set_file_error(error, name, VD_ERROR_NOT_FOUND,
                              "cannot connect to the Ceph cluster of %s as client.%s: no key for "
                              "it in the keyring (%s)",
                              conf, user, keyring);
        else if (rc == -EACCES || rc == -EPERM)
            vd_set_file_error(error, name, VD_ERROR_INVALID_ARGUMENT,
                              "the Ceph cluster of %s refused client.%s: %s (check id= and the "
                              "keyring)",
                              conf, user, g_strerror(-rc));
        else {
            g_autofree char *what = g_strdup_printf(
                "cannot connect to the Ceph cluster of %s as client.%s", conf, user);
            rbd_set_error(error, name, rc, what);
        }
        return FALSE;
    }
    return TRUE;
}

/* The pool's I/O context on a connected cluster, in the name's namespace. */
static gboolean open_pool(const char *name, const RbdName *n, rados_t cluster, rados_ioctx_t *io,
                          GError **error)
{
    int rc = rados_ioctx_create(cluster, n->pool, io);
    if (rc < 0) {
        *io = NULL;
        if (rc == -ENOENT)
            vd_set_file_error(error, name, VD_ERROR_NOT_FOUND, "the Ceph cluster has no pool '%s'",
                              n->pool);
        else {
            g_autofree char *what = g_strdup_printf("cannot open pool '%s'", n->pool);
            rbd_set_error(error, name, rc, what);
        }
        return FALSE;
    }
    rados_ioctx_set_namespace(*io, n->ns != NULL ? n->ns : "");
    return TRUE;
}

static char *image_label(const RbdName *n)
{
    g_autofree char *where =
        n->ns != NULL ? g_strdup_printf("%s/%s", n->pool, n->ns) : g_strdup(n->pool);
    return g_strdup_printf("RBD image '%s' in pool '%s'", n->image, where);
}

void vd_rbd_close(VdRbd *rbd)
{
    if (rbd == NULL)
        return;
    if (rbd->image != NULL)
        rbd_close(rbd->image);
    if (rbd->io != NULL)
        rados_ioctx_destroy(rbd->io);
    if (rbd->cluster != NULL)
        rados_shutdown(rbd->cluster);
    g_mutex_clear(&rbd->lock);
    if (rbd->cache != NULL)
        g_array_unref(rbd->cache);
    g_free(rbd->label);
    g_free(rbd->name);
    g_free(rbd);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VdRbd, vd_rbd_close)

static VdRbd *rbd_new(const char *name, const RbdName *n, GError **error)
{
    g_autoptr(VdRbd) rbd = g_new0(VdRbd, 1);
    g_mutex_init(&rbd->lock);
    rbd->name = g_strdup(name);
    rbd->label = image_label(n);
    if (!connect_cluster(name, n, &rbd->cluster, error) ||
        !open_pool(name, n, rbd->cluster, &rbd->io, error))
        return NULL;
    return g_steal_pointer(&rbd);
}

static VdRbd *rbd_open_name(const char *name, gboolean read_write, GError **error)
{
    g_auto(RbdName) n = { 0 };
    if (!parse_name(name, &n, error))
        return NULL;
    if (read_write && n.snap != NULL) {
        vd_set_file_error(error, name, VD_ERROR_INVALID_ARGUMENT,
                          "snapshot '%s' is read-only: it cannot be opened for writing", n.snap);
        return NULL;
    }
    g_autoptr(VdRbd) rbd = rbd_new(name, &n, error);
    if (rbd == NULL)
        return NULL;
    rbd->read_only = !read_write;
    int rc = read_write ? rbd_open(rbd->io, n.image, &rbd->image, NULL)
                        : rbd_open_read_only(rbd->io, n.image, &rbd->image, n.snap);
    if (rc < 0) {
        rbd->image = NULL;
        if (rc == -ENOENT && n.snap != NULL)
            vd_set_file_error(error, name, VD_ERROR_NOT_FOUND, "no %s, or it has no snapshot '%s'",
                              rbd->label, n.snap);
        else if (rc == -ENOENT)
            vd_set_file_error(error, name, VD_ERROR_NOT_FOUND, "there is no %s", rbd->label);
        else {
            g_autofree char *what = g_strdup_printf("cannot open the %s", rbd->label);
            rbd_set_error(error, name, rc, what);
        }
        return NULL;
    }
    rbd_image_info_t info;
    rc = rbd_stat(rbd->image, &info, sizeof info);
    if (rc < 0) {
        g_autofree char *what = g_strdup_printf("cannot read the size of the %s", rbd->label);
        rbd_set_error(error, name, rc, what);
        return NULL;
    }
    rbd->size = info.size;
    rbd->obj_size = info.obj_size;
    return g_steal_pointer(&rbd);
}

VdFile *vd_file_open_rbd(const char *name, gboolean read_write, GError **error)
{
    VdRbd *rbd = rbd_open_name(name, read_write, error);
    return rbd != NULL ? vd_file_wrap_rbd(rbd, name, read_write) : NULL;
}

gboolean vd_rbd_create(const char *name, guint64 size, GError **error)
{
    g_auto(RbdName) n = { 0 };
    if (!parse_name(name, &n, error))
        return FALSE;
    if (n.snap != NULL) {
        vd_set_file_error(error, name, VD_ERROR_INVALID_ARGUMENT,
                          "an image is made without @SNAPSHOT: a snapshot is taken of an image");
        return FALSE;
    }
    g_autoptr(VdRbd) rbd = rbd_new(name, &n, error);
    if (rbd == NULL)
        return FALSE;
    /* The features are the cluster's defaults (rbd_default_features:
     * layering, and the object map that makes block status cheap), as
     * for rbd create and qemu-img. */
    rbd_image_options_t opts;
    rbd_image_options_create(&opts);
    int rc = rbd_create4(rbd->io, n.image, size, opts);
    rbd_image_options_destroy(opts);
    if (rc == -EEXIST) {
        vd_set_file_error(error, name, VD_ERROR_EXISTS,
                          "the %s exists already (convert -n writes into it)", rbd->label);
        return FALSE;
    }
    if (rc < 0) {
        g_autofree char *what = g_strdup_printf("cannot create the %s", rbd->label);
        rbd_set_error(error, name, rc, what);
        return FALSE;
    }
    return TRUE;
}

gboolean vd_rbd_create_format(const char *name, const VdDriver *drv, VdCreateParams *params,
                              gboolean no_flush, GError **error)
{
    /* The image is the disk, as in libvirt's rbd pools: a format that
     * finds room for its data at the end of its file would grow it one
     * write past the end at a time. */
    if (drv != &vd_driver_raw) {
        vd_set_file_error(error, name, VD_ERROR_NOT_SUPPORTED,
                          "vdisk makes raw images on Ceph RBD, not %s: the RBD image is the "
                          "disk",
                          drv->name);
        return FALSE;
    }
    if (!vd_rbd_create(name, params->size, error))
        return FALSE;
    g_autoptr(VdFile) file = vd_file_open_rbd(name, TRUE, error);
    params->no_flush = no_flush;
    params->in_descriptor = TRUE; /* no file can be made beside it */
    if (file != NULL) {
        vd_file_set_no_flush(file, no_flush);
        if (drv->create(file, params, error) && vd_file_sync(file, error))
            return TRUE;
    }
    /* Made here: a failed create leaves nothing behind. */
    g_clear_pointer(&file, vd_file_close);
    (void)vd_rbd_remove(name, NULL);
    return FALSE;
}

gboolean vd_rbd_remove(const char *name, GError **error)
{
    g_auto(RbdName) n = { 0 };
    if (!parse_name(name, &n, error))
        return FALSE;
    g_autoptr(VdRbd) rbd = rbd_new(name, &n, error);
    if (rbd == NULL)
        return FALSE;
    int rc = rbd_remove(rbd->io, n.image);
    if (rc < 0) {
        g_autofree char *what = g_strdup_printf("cannot remove the %s", rbd->label);
        rbd_set_error(error, name, rc, what);
        return FALSE;
    }
    return TRUE;
}

/* ----- I/O ----- */

guint64 vd_rbd_size(VdRbd *rbd)
{
    g_mutex_lock(&rbd->lock);
    guint64 size = rbd->size;
    g_mutex_unlock(&rbd->lock);
    return size;
}

guint32 vd_rbd_object_size(VdRbd *rbd) { return (guint32)MIN(rbd->obj_size, G_MAXUINT32); }

static void drop_cache(VdRbd *rbd)
{
    g_mutex_lock(&rbd->lock);
    g_clear_pointer(&rbd->cache, g_array_unref);
    rbd->cache_gen++;
    g_mutex_unlock(&rbd->lock);
}

static gboolean io_error(VdRbd *rbd, gboolean write, guint64 offset, gsize len, int rc,
                         GError **error)
{
    g_autofree char *what =
        g_strdup_printf("%s of %" G_GSIZE_FORMAT " bytes at offset %" G_GUINT64_FORMAT " failed",
                        write ? "write" : "read", len, offset);
    rbd_set_error(error, rbd->name, rc, what);
    return FALSE;
}

/* Read or write [offset, +len) as one request per object, up to
 * RBD_MAX_IN_FLIGHT at once: a copy's large requests keep several OSD
 * operations going, as librbd's own clients do. */
static gboolean rbd_io(VdRbd *rbd, gboolean write, guint64 offset, guint8 *buf, gsize len,
                       GError **error)
{
    guint64 obj = MAX(rbd->obj_size, 4096);
    if (len <= obj) {
        ssize_t n = write ? rbd_write(rbd->image, offset, len, (const char *)buf)
                          : rbd_read(rbd->image, offset, len, (char *)buf);
        if (n < 0)
            return io_error(rbd, write, offset, len, (int)n, error);
        if ((gsize)n < len && !write)
            memset(buf + n, 0, len - (gsize)n);
        return TRUE;
    }
    rbd_completion_t done[RBD_MAX_IN_FLIGHT];
    guint64 starts[RBD_MAX_IN_FLIGHT];
    gsize lens[RBD_MAX_IN_FLIGHT];
    int first_rc = 0;
    guint64 failed_at = 0;
    gsize failed_len = 0;
    for (gsize pos = 0; pos < len;) {
        guint n_req = 0;
        for (; n_req < RBD_MAX_IN_FLIGHT && pos < len; n_req++) {
            guint64 at = offset + pos;
            gsize n = (gsize)MIN(len - pos, obj - at % obj);
            int rc = rbd_aio_create_completion(NULL, NULL, &done[n_req]);
            if (rc == 0) {
                rc = write ? rbd_aio_write(rbd->image, at, n, (const char *)buf + pos, done[n_req])
                           : rbd_aio_read(rbd->image, at, n, (char *)buf + pos, done[n_req]);
                if (rc < 0)
                    rbd_aio_release(done[n_req]);
            }
            if (rc < 0) {
                if (first_rc == 0) {
                    first_rc = rc;
                    failed_at = at;
                    failed_len = n;
                }
                break;
            }
            starts[n_req] = at;
            lens[n_req] = n;
            pos += n;
        }
        for (guint i = 0; i < n_req; i++) {
            rbd_aio_wait_for_complete(done[i]);
            ssize_t rc = rbd_aio_get_return_value(done[i]);
            rbd_aio_release(done[i]);
            if (rc < 0 && first_rc == 0) {
                first_rc = (int)rc;
                failed_at = starts[i];
                failed_len = lens[i];
            } else if (!write && rc >= 0 && (gsize)rc < lens[i]) {
                memset(buf + (starts[i] - offset) + rc, 0, lens[i] - (gsize)rc);
            }
        }
        if (first_rc != 0)
            return io_error(rbd, write, failed_at, failed_len, first_rc, error);
    }
    return TRUE;
}

gboolean vd_rbd_pread(VdRbd *rbd, guint64 offset, void *buf, gsize len, GError **error)
{
    return len == 0 || rbd_io(rbd, FALSE, offset, buf, len, error);
}

/* A write past the image's end is refused by librbd with EINVAL: say
 * what it is. */
static gboolean check_end(VdRbd *rbd, guint64 offset, guint64 len, GError **error)
{
    guint64 size = vd_rbd_size(rbd);
    if (offset <= size && len <= size - offset)
        return TRUE;
    vd_set_file_error(error, rbd->name, VD_ERROR_NO_SPACE,
                      "a write of %" G_GUINT64_FORMAT " bytes at offset %" G_GUINT64_FORMAT
                      " goes past the end of the %s (%" G_GUINT64_FORMAT " bytes)",
                      len, offset, rbd->label, size);
    return FALSE;
}

/* Writes drop the cached block status as they begin and as they end. */
gboolean vd_rbd_pwrite(VdRbd *rbd, guint64 offset, const void *buf, gsize len, GError **error)
{
    if (len == 0)
        return TRUE;
    if (!check_end(rbd, offset, len, error))
        return FALSE;
    drop_cache(rbd);
    gboolean ok = rbd_io(rbd, TRUE, offset, (guint8 *)buf, len, error);
    drop_cache(rbd);
    return ok;
}

gboolean vd_rbd_flush(VdRbd *rbd, GError **error)
{
    if (rbd->read_only)
        return TRUE;
    int rc = rbd_flush(rbd->image);
    if (rc < 0) {
        rbd_set_error(error, rbd->name, rc, "flush failed");
        return FALSE;
    }
    return TRUE;
}

gboolean vd_rbd_resize(VdRbd *rbd, guint64 size, GError **error)
{
    drop_cache(rbd);
    int rc = rbd_resize(rbd->image, size);
    if (rc < 0) {
        g_autofree char *what = g_strdup_printf(
            "cannot resize the %s to %" G_GUINT64_FORMAT " bytes", rbd->label, size);
        rbd_set_error(error, rbd->name, rc, what);
        return FALSE;
    }
    g_mutex_lock(&rbd->lock);
    rbd->size = size;
    g_mutex_unlock(&rbd->lock);
    drop_cache(rbd);
    return TRUE;
}

/* ----- snapshots ----- */

GPtrArray *vd_rbd_list_snapshots(VdRbd *rbd, GError **error)
{
    GPtrArray *list = g_ptr_array_new_with_free_func((GDestroyNotify)vd_snapshot_info_free);
    g_autofree rbd_snap_info_t *snaps = NULL;
    int max = 16, n;
    /* ERANGE: more than max; max is then the number there are. */
    do {
        g_free(snaps);
        snaps = g_new0(rbd_snap_info_t, max);
        n = rbd_snap_list(rbd->image, snaps, &max);
    } while (n == -ERANGE);
    if (n < 0) {
        rbd_set_error(error, rbd->name, n, "cannot list the snapshots");
        g_ptr_array_unref(list);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        /* As qemu-img shows an RBD snapshot: its name is its ID too, no
         * date or clock, and the image's size then as its VM state. */
        VdSnapshotInfo *info = g_new0(VdSnapshotInfo, 1);
        info->id = g_strdup(snaps[i].name);
        info->name = g_strdup(snaps[i].name);
        info->vm_state_size = snaps[i].size;
        g_ptr_array_add(list, info);
    }
    rbd_snap_list_end(snaps);
    return list;
}

gboolean vd_rbd_snapshot(VdRbd *rbd, VdRbdSnapshotOp op, const char *name, GError **error)
{
    int rc;
    drop_cache(rbd);
    switch (op) {
    case VD_RBD_SNAPSHOT_CREATE:
        rc = rbd_snap_create(rbd->image, name);
        break;
    case VD_RBD_SNAPSHOT_APPLY:
        rc = rbd_snap_rollback(rbd->image, name);
        break;
    default:
        rc = rbd_snap_remove(rbd->image, name);
        break;
    }
    drop_cache(rbd);
    if (rc == -EEXIST) {
        vd_set_file_error(error, rbd->name, VD_ERROR_EXISTS, "snapshot '%s' exists already", name);
        return FALSE;
    }
    if (rc == -ENOENT) {
        vd_set_file_error(error, rbd->name, VD_ERROR_NOT_FOUND, "the %s has no snapshot '%s'",
                          rbd->label, name);
        return FALSE;
    }
    if (rc == -EBUSY && op == VD_RBD_SNAPSHOT_DELETE) {
        vd_set_file_error(error, rbd->name, VD_ERROR_BUSY,
                          "snapshot '%s' is protected (clones depend on it): unprotect it first "
                          "(rbd snap unprotect)",
                          name);
        return FALSE;
    }
    if (rc < 0) {
        static const char *const verbs[] = { "create", "revert to", "delete" };
        g_autofree char *what = g_strdup_printf("cannot %s snapshot '%s'", verbs[op], name);
        rbd_set_error(error, rbd->name, rc, what);
        return FALSE;
    }
    /* A snapshot taken at another size brings that size back. */
    guint64 size;
    rc = rbd_get_size(rbd->image, &size);
    if (rc < 0) {
        rbd_set_error(error, rbd->name, rc, "cannot read the size");
        return FALSE;
    }
    g_mutex_lock(&rbd->lock);
    rbd->size = size;
    g_mutex_unlock(&rbd->lock);
    return TRUE;
}

/* ----- block status ----- */

typedef struct {
    guint64 start, end;
    GArray *runs;
} DiffReply;

static int diff_extent(uint64_t offset, size_t len, int exists, void *arg)
{
    DiffReply *reply = arg;
    guint64 from = MAX(offset, reply->start), to = MIN(offset + len, reply->end);
    if (!exists || from >= to)
        return 0;
    guint n = reply->runs->len;
    /* Adjacent objects make one run. */
    if (n >= 2 && g_array_index(reply->runs, guint64, n - 1) == from) {
        g_array_index(reply->runs, guint64, n - 1) = to;
        return 0;
    }
    g_array_append_val(reply->runs, from);
    g_array_append_val(reply->runs, to);
    return 0;
}

/* Is offset allocated, and how far does that go (capped at max), from
 * the cached reply? */
static gboolean cached_status(VdRbd *rbd, guint64 offset, guint64 max, gboolean *allocated,
                              guint64 *run)
{
    gboolean found = FALSE;
    g_mutex_lock(&rbd->lock);
    if (rbd->cache != NULL && offset >= rbd->cache_start && offset < rbd->cache_end) {
        guint64 next = rbd->cache_end;
        *allocated = FALSE;
        for (guint i = 0; i + 1 < rbd->cache->len; i += 2) {
            guint64 from = g_array_index(rbd->cache, guint64, i);
            guint64 to = g_array_index(rbd->cache, guint64, i + 1);
            if (offset >= to)
                continue;
            if (offset >= from) {
                *allocated = TRUE;
                next = to;
            } else {
                next = from;
            }
            break;
        }
        *run = MIN(next - offset, max);
        found = TRUE;
    }
    g_mutex_unlock(&rbd->lock);
    return found;
}

/* Where the image holds objects, whole objects at a time: what is no
 * object reads as zeroes (or, in a clone, as its parent, which
 * include_parent counts in). */
static gboolean rbd_status(VdRbd *rbd, guint64 offset, guint64 max, gboolean *allocated,
                           guint64 *run, GError **error)
{
    if (cached_status(rbd, offset, max, allocated, run))
        return TRUE;
    g_mutex_lock(&rbd->lock);
    guint64 gen = rbd->cache_gen;
    guint64 size = rbd->size;
    g_mutex_unlock(&rbd->lock);
    g_autoptr(GArray) runs = g_array_new(FALSE, FALSE, sizeof(guint64));
    DiffReply reply = { .start = offset,
                        .end = offset + MIN(size - offset, RBD_STATUS_WINDOW),
                        .runs = runs };
    int rc = rbd_diff_iterate2(rbd->image, NULL, reply.start, reply.end - reply.start, 1, 1,
                               diff_extent, &reply);
    if (rc < 0) {
        rbd_set_error(error, rbd->name, rc, "block status failed");
        return FALSE;
    }
    g_mutex_lock(&rbd->lock);
    if (rbd->cache_gen == gen) {
        g_clear_pointer(&rbd->cache, g_array_unref);
        rbd->cache = g_array_ref(runs);
        rbd->cache_start = reply.start;
        rbd->cache_end = reply.end;
    }
    g_mutex_unlock(&rbd->lock);
    *allocated = runs->len >= 2 && g_array_index(runs, guint64, 0) == offset;
    guint64 next = reply.end;
    if (runs->len >= 2)
        next = *allocated ? g_array_index(runs, guint64, 1) : g_array_index(runs, guint64, 0);
    *run = MIN(next - offset, max);
    return TRUE;
}

gboolean vd_rbd_extent(VdRbd *rbd, guint64 offset, guint64 max, gboolean *allocated, guint64 *run,
                       GError **error)
{
    guint64 size = vd_rbd_size(rbd);
    if (offset >= size) { /* past the end: nothing there */
        *allocated = FALSE;
        *run = max;
        return TRUE;
    }
    return rbd_status(rbd, offset, MIN(max, size - offset), allocated, run, error);
}

/* Zeroes over [offset, +len) as librbd writes them: whole objects are
 * removed, parts of objects written with zeroes; with thick, allocated. */
static gboolean zero_range(VdRbd *rbd, guint64 offset, guint64 len, gboolean thick, GError **error)
{
    for (guint64 done = 0; done < len;) {
        guint64 n = MIN(len - done, RBD_MAX_ZERO);
        ssize_t rc = rbd_write_zeroes(rbd->image, offset + done, (size_t)n,
                                      thick ? RBD_WRITE_ZEROES_FLAG_THICK_PROVISION : 0, 0);
        if (rc < 0) {
            rbd_set_error(error, rbd->name, (int)rc, "writing zeroes failed");
            return FALSE;
        }
        done += n;
    }
    return TRUE;
}

/* Zeroes where the image has objects only: what it holds no object for
 * reads zero already, and writing zeroes there would only cost time (or,
 * in a clone, hide the parent: include_parent counts its objects in). */
static gboolean zero_allocated(VdRbd *rbd, guint64 offset, guint64 len, GError **error)
{
    for (guint64 pos = offset; pos < offset + len;) {
        gboolean allocated;
        guint64 run;
        if (!vd_rbd_extent(rbd, pos, offset + len - pos, &allocated, &run, error))
            return FALSE;
        if (allocated && !zero_range(rbd, pos, run, FALSE, error))
            return FALSE;
        pos += run;
    }
    return TRUE;
}

gboolean vd_rbd_zero(VdRbd *rbd, guint64 offset, guint64 len, gboolean may_unmap, GError **error)
{
    if (len == 0)
        return TRUE;
    if (!check_end(rbd, offset, len, error))
        return FALSE;
    /* The ranges are found before the cache is dropped: zero_allocated
     * asks block status, which the writes below then make stale. */
    gboolean ok = may_unmap ? zero_allocated(rbd, offset, len, error)
                            : zero_range(rbd, offset, len, TRUE, error);
    drop_cache(rbd);
    return ok;
}

#else /* !HAVE_LIBRBD */

static gboolean no_rbd(const char *name, GError **error)
{
    vd_set_file_error(error, name, VD_ERROR_NOT_SUPPORTED,
                      "vdisk was built without Ceph RBD support (librbd was not found when it was "
                      "built)");
    return FALSE;
}

VdFile *vd_file_open_rbd(const char *name, gboolean read_write, GError **error)
{
    /* A name that is no RBD name is still told so first. */
    g_auto(RbdName) n = { 0 };
    if (parse_name(name, &n, error))
        no_rbd(name, error);
    return NULL;
}

gboolean vd_rbd_create(const char *name, guint64 size, GError **error)
{
    g_auto(RbdName) n = { 0 };
    return parse_name(name, &n, error) && no_rbd(name, error);
}

gboolean vd_rbd_create_format(const char *name, const VdDriver *drv, VdCreateParams *params,
                              gboolean no_flush, GError **error)
{
    return vd_rbd_create(name, params->size, error);
}

gboolean vd_rbd_remove(const char *name, GError **error) { return no_rbd(name, error); }
void vd_rbd_close(VdRbd *rbd) {}
guint64 vd_rbd_size(VdRbd *rbd) { return 0; }
guint32 vd_rbd_object_size(VdRbd *rbd) { return 0; }
gboolean vd_rbd_pread(VdRbd *rbd, guint64 offset, void *buf, gsize len, GError **error)
{
    return no_rbd(NULL, error);
}
gboolean vd_rbd_pwrite(VdRbd *rbd, guint64 offset, const void *buf, gsize len, GError **error)
{
    return no_rbd(NULL, error);
}
gboolean vd_rbd_zero(VdRbd *rbd, guint64 offset, guint64 len, gboolean may_unmap, GError **error)
{
    return no_rbd(NULL, error);
}
gboolean vd_rbd_flush(VdRbd *rbd, GError **error) { return no_rbd(NULL, error); }
GPtrArray *vd_rbd_list_snapshots(VdRbd *rbd, GError **error)
{
    no_rbd(NULL, error);
    return NULL;
}
gboolean vd_rbd_snapshot(VdRbd *rbd, VdRbdSnapshotOp op, const char *name, GError **error)
{
    return no_rbd(NULL, error);
}
gboolean vd_rbd_resize(VdRbd *rbd, guint64 size, GError **error) { return no_rbd(NULL, error); }
gboolean vd_rbd_extent(VdRbd *rbd, guint64 offset, guint64 max, gboolean *allocated, guint64 *run,
                       GError **error)
{
    return no_rbd(NULL, error);
}

#endif

gboolean vd_rbd_supported(void) { return HAVE_LIBRBD; }
