/* vdisk-qemu-img: the libvirt shim (DESIGN.md, "The libvirt shim").
 *
 * libvirtd runs the program "qemu-img" found on its PATH for volume work in
 * dir/fs/netfs pools and for snapshots of inactive domains. Installed as
 * that "qemu-img" (a symlink or a copy), this program does the work through
 * vdiskd instead, so it shows up as a Job to every client, and exits 0 only
 * once the image is complete. What vdiskd cannot serve goes to the real
 * qemu-img by absolute path, unless the fallback is switched off.
 *
 * For a logical pool libvirt runs qemu-img to fill an LV it has just made
 * from a non-raw volume (convert_into_lv), to read one into a non-raw
 * volume of another pool (an LV is a raw source like any other), and to
 * format a new encrypted LV as LUKS (create -f luks over the LV, which
 * exists: the real qemu-img's, as vdiskd's logical pools hold raw disks
 * only); its rbd pools run no qemu-img at all (librbd does their work), so an
 * rbd: name reaching the shim is someone else's and goes to the real
 * qemu-img (shim-args.c, check_protocol). */
#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "qemu-syntax.h"
#include "shim-args.h"
#include "shim-errors.h"
#include "shim-status.h"
#include "vdd-dbus.h"
#include "vdisk-names.h"
#include "vdisk.h"

/* The qemu-img whose command lines the shim follows: the one of Debian 12,
 * which libvirt 9.0 was built against. */
#define QEMU_IMG_COMPAT_VERSION "7.2.0"

static void G_GNUC_NORETURN die(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    fprintf(stderr, "qemu-img: %s\n", msg);
    exit(1);
}

/* ----- the fallback to the real qemu-img ----- */

static void G_GNUC_NORETURN fall_back(char **argv, const char *reason)
{
    g_autoptr(ShimConfig) cfg = shim_config_load();
    if (!cfg->fallback)
        die("%s: vdiskd cannot serve this, and the fallback to %s is off (%s)", reason,
            cfg->qemu_img, cfg->fallback_source);
    /* Never run ourselves again: /usr/bin/qemu-img may be a link to us. */
    g_autofree char *real = realpath(cfg->qemu_img, NULL);
    g_autofree char *self = realpath("/proc/self/exe", NULL);
    if (real != NULL && self != NULL && g_str_equal(real, self))
        die("%s: vdiskd cannot serve this, and %s is this shim, not qemu-img", reason,
            cfg->qemu_img);
    g_debug("passing to %s: %s", cfg->qemu_img, reason);
    argv[0] = (char *)"qemu-img";
    execv(cfg->qemu_img, argv);
    die("%s: vdiskd cannot serve this, and %s cannot be run: %s", reason, cfg->qemu_img,
        g_strerror(errno));
}

/* ----- talking to vdiskd -----
 *
 * libvirtd runs the shim as root, so the shim never opens or resolves a
 * name libvirt gives it by itself: vdiskd resolves it, and only inside
 * the pools it has (vdiskd's own and libvirt's). A file in any other
 * folder goes to the real qemu-img, as it would without vdisk. Jobs are
 * never detached: when libvirt kills the shim, vdiskd cancels its job. */

typedef struct {
    GDBusConnection *bus;
    GHashTable *done; /* job path -> "1message" / "0message" */
    gboolean vanished;
    char **argv;
} Shim;

static Shim shim;

/* An image in use (vdiskd's Busy, carrying QEMU's name of the lock it
 * could not get) is reported in qemu-img's words, which libvirt passes on
 * to the user; vdisk's line naming the holder follows. */
static void die_if_in_use(const GError *error, const char *what)
{
    g_autofree char *name = g_dbus_error_get_remote_error(error);
    const char *lock = strstr(error->message, "(Failed to get ");
    const char *end = lock != NULL ? strstr(lock, " lock)") : NULL;
    if (g_strcmp0(name, VDISK_ERROR_BUSY) != 0 || end == NULL)
        return;
    g_autofree char *failed = g_strndup(lock + 1, (gsize)(end + strlen(" lock") - (lock + 1)));
    fprintf(stderr, "qemu-img: Could not open '%s': %s\nIs another process using the image [%s]?\n",
            what, failed, what);
    GError *copy = g_error_copy(error);
    g_dbus_error_strip_remote_error(copy);
    fprintf(stderr, "vdisk-qemu-img: %s\n", copy->message);
    g_error_free(copy);
    exit(1);
}

/* A call's failure, in the end: the real qemu-img when vdiskd is not
 * there or cannot do this, otherwise the error. */
static void G_GNUC_NORETURN call_failed(GError *error, const char *what)
{
    if (shim_error_vdiskd_absent(error)) {
        g_dbus_error_strip_remote_error(error);
        g_autofree char *why = g_strdup_printf("vdiskd is not running (%s)", error->message);
        fall_back(shim.argv, why);
    }
    if (shim_error_unsupported(error)) {
        g_dbus_error_strip_remote_error(error);
        fall_back(shim.argv, error->message);
    }
    die_if_in_use(error, what);
    g_dbus_error_strip_remote_error(error);
    die("%s: %s", what, error->message);
}

/* vdiskd's objects through the proxies generated from its D-Bus XML
 * (vdd-dbus.h). Calls wait as long as vdiskd takes: a job's call returns
 * at once, and libvirt has its own timeouts. */
#define CALL_FLAGS G_DBUS_CALL_FLAGS_NONE
#define CALL_TIMEOUT G_MAXINT
/* For calls only: properties are asked for where they are needed. */
#define CALL_ONLY \
    (G_DBUS_PROXY_FLAGS_DO_NOT_LOAD_PROPERTIES | G_DBUS_PROXY_FLAGS_DO_NOT_CONNECT_SIGNALS)

static GVariant *no_options(void)
{
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    return g_variant_builder_end(&b);
}

static VddDbusManager *manager_proxy(void)
{
    g_autoptr(GError) error = NULL;
    VddDbusManager *proxy = vdd_dbus_manager_proxy_new_sync(shim.bus, CALL_ONLY, VDISK_BUS_NAME,
                                                            VDISK_MANAGER_PATH, NULL, &error);
    if (proxy == NULL)
        call_failed(error, "vdiskd");
    return proxy;
}

static VddDbusPool *pool_proxy(const char *path, GDBusProxyFlags flags)
{
    g_autoptr(GError) error = NULL;
    VddDbusPool *proxy =
        vdd_dbus_pool_proxy_new_sync(shim.bus, flags, VDISK_BUS_NAME, path, NULL, &error);
    if (proxy == NULL)
        call_failed(error, path);
    return proxy;
}

static VddDbusVolume *volume_proxy(const char *path, GDBusProxyFlags flags)
{
    g_autoptr(GError) error = NULL;
    VddDbusVolume *proxy =
        vdd_dbus_volume_proxy_new_sync(shim.bus, flags, VDISK_BUS_NAME, path, NULL, &error);
    if (proxy == NULL)
        call_failed(error, path);
    return proxy;
}

static void on_completed(GDBusConnection *bus, const char *sender, const char *path,
                         const char *iface, const char *signal, GVariant *params, gpointer data)
{
    gboolean ok;
    const char *message;
    g_variant_get(params, "(b&s)", &ok, &message);
    g_hash_table_replace(shim.done, g_strdup(path), g_strdup_printf("%d%s", ok, message));
}

static void on_vanished(GDBusConnection *bus, const char *name, gpointer data)
{
    shim.vanished = TRUE;
}

/* Wait for the job to end; die with its message when it failed. */
static void wait_job(const char *job, const char *what)
{
    const char *result;
    while ((result = g_hash_table_lookup(shim.done, job)) == NULL && !shim.vanished)
        g_main_context_iteration(NULL, TRUE);
    if (result == NULL)
        die("%s: vdiskd exited before the job was done", what);
    if (result[0] != '1')
        die("%s: %s", what, result + 1);
}

typedef struct {
    char *pool;
    char *name;
    char *volume; /* NULL when the file does not exist */
} Where;

static void where_clear(Where *w)
{
    g_free(w->pool);
    g_free(w->name);
    g_free(w->volume);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Where, where_clear)

/* The pool and volume of a file, as vdiskd resolves its name. A file in a
 * folder no pool holds goes to the real qemu-img: the shim never makes
 * a folder a pool (every user the pool's rules allow could then read and
 * write its files, a domain's private folder too). */
static void resolve(const char *file, Where *w)
{
    g_autofree char *abs = g_canonicalize_filename(file, NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(VddDbusManager) manager = manager_proxy();
    g_autofree char *vol = NULL;
    if (!vdd_dbus_manager_call_resolve_path_sync(manager, abs, no_options(), CALL_FLAGS,
                                                 CALL_TIMEOUT, &w->pool, &w->name, &vol, NULL,
                                                 &error)) {
        if (shim_error_outside_pools(error)) {
            g_autofree char *why = g_strdup_printf(
                "%s is in no storage pool (no libvirt pool or vdiskd pool holds its folder)", abs);
            fall_back(shim.argv, why);
        }
        call_failed(error, file);
    }
    w->volume = g_str_equal(vol, "/") ? NULL : g_steal_pointer(&vol);
}

/* The --object secrets as vdiskd's "secrets" option: libvirt's secret
 * files are readable by root only, so the shim reads them and passes the
 * bytes. */
static GVariant *secrets_variant(ShimRequest *req)
{
    g_autoptr(GError) error = NULL;
    GVariant *v = qs_secrets_variant(req->objects, &error);
    if (v == NULL)
        die("%s", error->message);
    return v;
}

/* The options every call takes: the secrets of --object, and the ids that
 * open this volume and a convert -n source. */
static void add_key_options(GVariantBuilder *b, ShimRequest *req, const char *volume_key,
                            const char *source_key)
{
    if (req->objects->len > 0)
        g_variant_builder_add(b, "{sv}", "secrets", secrets_variant(req));
    if (volume_key != NULL)
        g_variant_builder_add(b, "{sv}", "volume-key-secret", g_variant_new_string(volume_key));
    if (source_key != NULL)
        g_variant_builder_add(b, "{sv}", "source-key-secret", g_variant_new_string(source_key));
}

/* The -o options as vdiskd create options (engine names pass as they are),
 * with the key to the volume that is read (an encrypted clone's source). */
static GVariant *create_options(ShimRequest *req, const char *backing)
{
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
    for (guint i = 0; i < req->options->len; i++) {
        QsOption *o = req->options->pdata[i];
        g_variant_builder_add(&b, "{sv}", o->key, g_variant_new_string(o->value));
    }
    add_key_options(&b, req, req->command == SHIM_CMD_CONVERT ? req->source_key : NULL, NULL);
    if (backing != NULL) {
        g_variant_builder_add(&b, "{sv}", "backing", g_variant_new_string(backing));
        if (req->backing_format != NULL)
            g_variant_builder_add(&b, "{sv}", "backing-format",
                                  g_variant_new_string(req->backing_format));
    }
    return g_variant_builder_end(&b);
}

/* ----- the commands ----- */

/* -f/driver= must name the format vdiskd probes: vdiskd never reads an
 * image as another format than its own. */
static void check_format(const char *volume, const char *format, const char *what)
{
    if (format == NULL)
        return;
    g_autoptr(VddDbusVolume) proxy =
        volume_proxy(volume, G_DBUS_PROXY_FLAGS_DO_NOT_CONNECT_SIGNALS);
    g_autofree char *probed = vdd_dbus_volume_dup_format(proxy);
    if (probed == NULL)
        die("%s: vdiskd did not say the image's format", what);
    if (!g_str_equal(probed, format)) {
        g_autofree char *why =
            g_strdup_printf("%s format %s other than the probed %s", what, format, probed);
        fall_back(shim.argv, why);
    }
}

static void do_create(ShimRequest *req)
{
    g_auto(Where) target = { 0 };
    resolve(req->filename, &target);
    if (target.volume != NULL)
        fall_back(shim.argv, "the file exists already (qemu-img would overwrite it)");
    g_auto(Where) backing = { 0 };
    if (req->backing != NULL) {
        g_autofree char *dir = g_path_get_dirname(req->filename);
        g_autofree char *abs = g_path_is_absolute(req->backing)
                                   ? g_strdup(req->backing)
                                   : g_build_filename(dir, req->backing, NULL);
        resolve(abs, &backing);
        if (backing.volume == NULL)
            die("%s: Could not open backing file: No such file or directory", req->filename);
        if (!g_str_equal(backing.pool, target.pool))
            fall_back(shim.argv, "the backing file lies in another directory");
    }
    if (!req->quiet)
        printf("Formatting '%s', fmt=%s size=%" G_GUINT64_FORMAT "\n", req->filename, req->format,
               req->size);
    fflush(stdout);
    if (req->size_text == NULL) {
        /* An overlay as big as its backing file: libvirt's external
         * snapshot of an inactive domain. */
        if (!g_str_equal(req->format, "qcow2"))
            fall_back(shim.argv, "an overlay that is not qcow2");
        check_format(backing.volume, req->backing_format, "a backing");
        g_autoptr(VddDbusVolume) proxy = volume_proxy(backing.volume, CALL_ONLY);
        g_autoptr(GError) error = NULL;
        g_autofree char *overlay = NULL;
        if (!vdd_dbus_volume_call_create_overlay_sync(proxy, target.name, create_options(req, NULL),
                                                      CALL_FLAGS, CALL_TIMEOUT, &overlay, NULL,
                                                      &error))
            call_failed(error, req->filename);
        return;
    }
    g_autoptr(VddDbusPool) proxy = pool_proxy(target.pool, CALL_ONLY);
    g_autoptr(GError) error = NULL;
    g_autofree char *volume = NULL, *job = NULL;
    if (!vdd_dbus_pool_call_create_volume_sync(proxy, target.name, req->format, req->size,
                                               create_options(req, backing.name), CALL_FLAGS,
                                               CALL_TIMEOUT, &volume, &job, NULL, &error))
        call_failed(error, req->filename);
    wait_job(job, req->filename);
}

/* The source's content over the existing volume dst, as a vdiskd job. */
static void copy_into(ShimRequest *req, Where *src, Where *dst)
{
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    add_key_options(&b, req, req->target_key, req->source_key);
    g_autoptr(VddDbusVolume) proxy = volume_proxy(dst->volume, CALL_ONLY);
    g_autoptr(GError) error = NULL;
    g_autofree char *job = NULL;
    if (!vdd_dbus_volume_call_copy_from_sync(proxy, src->volume, g_variant_builder_end(&b),
                                             CALL_FLAGS, CALL_TIMEOUT, &job, NULL, &error))
        call_failed(error, req->target);
    wait_job(job, req->target);
}

/* convert -n: into an image that exists (libvirt creates an encrypted
 * clone first, then fills it this way). */
static void do_convert_into(ShimRequest *req, Where *src)
{
    g_auto(Where) dst = { 0 };
    resolve(req->target, &dst);
    if (dst.volume == NULL)
        die("Could not open '%s': No such file or directory", req->target);
    check_format(dst.volume, req->out_format, "a target");
    copy_into(req, src, &dst);
}

static gboolean pool_is_logical(const char *pool)
{
    g_autoptr(VddDbusPool) proxy = pool_proxy(pool, G_DBUS_PROXY_FLAGS_DO_NOT_CONNECT_SIGNALS);
    g_autofree char *type = vdd_dbus_pool_dup_type_(proxy);
    return g_strcmp0(type, "logical") == 0;
}

static guint64 volume_size(const char *volume)
{
    g_autoptr(VddDbusVolume) proxy =
        volume_proxy(volume, G_DBUS_PROXY_FLAGS_DO_NOT_CONNECT_SIGNALS);
    return vdd_dbus_volume_get_virtual_size(proxy);
}

/* convert into an LV of a logical pool, without -n: libvirt's
 * vol-create-from a non-raw volume into a logical pool makes the LV
 * (lvcreate) and then runs "qemu-img convert -f FMT -O raw SRC /dev/VG/LV".
 * qemu-img writes into a block device as it is, never growing it, and
 * refuses one smaller than the source; vdiskd's CopyFrom into the LV does
 * the same as a job. */
static void convert_into_lv(ShimRequest *req, Where *src, Where *dst)
{
    if (dst->volume == NULL) {
        g_autofree char *why = g_strdup_printf(
            "%s is no logical volume of its pool (qemu-img would make a file there)", req->target);
        fall_back(shim.argv, why);
    }
    if (!g_str_equal(req->out_format, "raw")) {
        g_autofree char *why = g_strdup_printf(
            "a logical volume holds a raw disk, and -O %s would write a %s image onto it",
            req->out_format, req->out_format);
        fall_back(shim.argv, why);
    }
    if (req->options->len > 0)
        fall_back(shim.argv, "convert into a logical volume with -o (the LV exists already)");
    guint64 have = volume_size(dst->volume), need = volume_size(src->volume);
    if (have < need) {
        fprintf(stderr,
                "qemu-img: %s: error while converting raw: Cannot grow device files\n"
                "vdisk-qemu-img: %s is %" G_GUINT64_FORMAT
                " bytes, smaller than %s (%" G_GUINT64_FORMAT " bytes)\n",
                req->target, req->target, have, req->filename, need);
        exit(1);
    }
    copy_into(req, src, dst);
}

/* convert into another pool: vdiskd exports into a file the shim makes
 * in that pool's folder, as vdiskd names the folder (never through the
 * name libvirt gave), unnamed (O_TMPFILE) or under a hidden name, and the
 * shim names it only once it is complete: a shim killed on the way leaves
 * no half-written volume under the target's name. */
static void export_to_pool(ShimRequest *req, Where *src, Where *dst)
{
    g_autoptr(VddDbusPool) pool = pool_proxy(dst->pool, G_DBUS_PROXY_FLAGS_DO_NOT_CONNECT_SIGNALS);
    g_autofree char *dir = vdd_dbus_pool_dup_directory(pool);
    if (dir == NULL)
        die("%s: vdiskd did not say the folder of its pool", req->target);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        die("%s: %s", dir, g_strerror(errno));
    g_autofree char *hidden = NULL;
    int fd = openat(dirfd, ".", O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR)) {
        hidden = g_strdup_printf(".%.200s.partial-%d", dst->name, (int)getpid());
        fd = openat(dirfd, hidden, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    }
    if (fd < 0)
        die("%s: %s", req->target, g_strerror(errno));
    int kept = dup(fd); /* the list below owns fd */
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new_from_array(&fd, 1);
    g_autoptr(GError) error = NULL;
    g_autoptr(VddDbusVolume) proxy = volume_proxy(src->volume, CALL_ONLY);
    g_autofree char *job = NULL;
    gboolean r = vdd_dbus_volume_call_export_sync(proxy, g_variant_new_handle(0), req->out_format,
                                                  create_options(req, NULL), CALL_FLAGS,
                                                  CALL_TIMEOUT, fds, &job, NULL, NULL, &error);
    const char *result = NULL;
    if (r) {
        while ((result = g_hash_table_lookup(shim.done, job)) == NULL && !shim.vanished)
            g_main_context_iteration(NULL, TRUE);
    }
    if (!r || result == NULL || result[0] != '1') {
        if (hidden != NULL)
            unlinkat(dirfd, hidden, 0);
        if (!r)
            call_failed(error, req->target);
        die("%s: %s", req->target, result ? result + 1 : "vdiskd exited before the job was done");
    }
    /* vdiskd synced what it wrote; the name is ours to give and make
     * durable, and never over a file that took it meanwhile. */
    int rc;
    if (hidden == NULL) {
        g_autofree char *proc = g_strdup_printf("/proc/self/fd/%d", kept);
        rc = linkat(AT_FDCWD, proc, dirfd, dst->name, AT_SYMLINK_FOLLOW);
    } else {
        rc = vd_rename_noreplace(dirfd, hidden, dirfd, dst->name);
    }
    if (rc < 0) {
        int err = errno;
        if (hidden != NULL)
            unlinkat(dirfd, hidden, 0);
        die("%s: %s", req->target, g_strerror(err));
    }
    if (fsync(dirfd) < 0 && errno != EINVAL)
        die("%s: sync failed: %s", dir, g_strerror(errno));
    close(kept);
    close(dirfd);
    g_auto(Where) again = { 0 };
    resolve(req->target, &again); /* vdiskd reads the new file */
}

static void do_convert(ShimRequest *req)
{
    g_auto(Where) src = { 0 };
    g_auto(Where) dst = { 0 };
    resolve(req->filename, &src);
    if (src.volume == NULL)
        die("Could not open '%s': No such file or directory", req->filename);
    check_format(src.volume, req->format, "a source");
    if (req->no_create) {
        do_convert_into(req, &src);
        return;
    }
    resolve(req->target, &dst);
    if (pool_is_logical(dst.pool)) {
        convert_into_lv(req, &src, &dst);
        return;
    }
    if (dst.volume != NULL)
        fall_back(shim.argv, "the target exists already (qemu-img would overwrite it)");
    if (g_str_equal(src.pool, dst.pool)) {
        g_autoptr(VddDbusVolume) proxy = volume_proxy(src.volume, CALL_ONLY);
        g_autoptr(GError) error = NULL;
        g_autofree char *volume = NULL, *job = NULL;
        if (!vdd_dbus_volume_call_clone_sync(proxy, dst.name, req->out_format,
                                             create_options(req, NULL), CALL_FLAGS, CALL_TIMEOUT,
                                             &volume, &job, NULL, &error))
            call_failed(error, req->target);
        wait_job(job, req->target);
        return;
    }
    export_to_pool(req, &src, &dst);
}

static void do_resize(ShimRequest *req)
{
    g_auto(Where) w = { 0 };
    resolve(req->filename, &w);
    if (w.volume == NULL)
        die("Could not open '%s': No such file or directory", req->filename);
    check_format(w.volume, req->format, "an image");
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    if (req->shrink)
        g_variant_builder_add(&b, "{sv}", "shrink", g_variant_new_boolean(TRUE));
    add_key_options(&b, req, req->source_key, NULL);
    g_autoptr(VddDbusVolume) proxy = volume_proxy(w.volume, CALL_ONLY);
    g_autoptr(GError) error = NULL;
    g_autofree char *job = NULL;
    if (!vdd_dbus_volume_call_resize_sync(proxy, req->size, g_variant_builder_end(&b), CALL_FLAGS,
                                          CALL_TIMEOUT, &job, NULL, &error))
        call_failed(error, req->filename);
    wait_job(job, req->filename);
    if (!req->quiet)
        printf("Image resized.\n");
}

static void do_snapshot(ShimRequest *req)
{
    g_auto(Where) w = { 0 };
    resolve(req->filename, &w);
    if (w.volume == NULL)
        die("Could not open '%s': No such file or directory", req->filename);
    gboolean (*method)(VddDbusVolume *, const char *, GVariant *, GDBusCallFlags, gint,
                       GCancellable *, GError **) =
        req->snapshot_op == 'c'   ? vdd_dbus_volume_call_create_snapshot_sync
        : req->snapshot_op == 'a' ? vdd_dbus_volume_call_revert_snapshot_sync
                                  : vdd_dbus_volume_call_delete_snapshot_sync;
    g_autoptr(VddDbusVolume) proxy = volume_proxy(w.volume, CALL_ONLY);
    g_autoptr(GError) error = NULL;
    if (!method(proxy, req->snapshot, no_options(), CALL_FLAGS, CALL_TIMEOUT, NULL, &error))
        call_failed(error, req->filename);
}

static void usage(void)
{
    printf("qemu-img version " QEMU_IMG_COMPAT_VERSION " (vdisk-qemu-img " VDISK_VERSION ")\n"
           "usage: qemu-img [standard options] command [command options]\n"
           "vdisk's qemu-img front end for libvirt: these commands run through vdiskd,\n"
           "everything else goes to the real qemu-img (unless that fallback is off):\n\n"
           "  create [-q] [--object secret,...] [-f fmt] [-b backing_file [-F backing_fmt]]\n"
           "         [-o options] filename [size]\n"
           "  convert [-q] [-n] [--object ...] [--image-opts] [--target-image-opts]\n"
           "          [-f fmt] [-O output_fmt] [-o options] filename output_filename\n"
           "  resize [-q] [--object ...] [--image-opts] [-f fmt] [--shrink] filename size\n"
           "  snapshot [-q] [-c | -a | -d] snapshot filename\n\n"
           "  --status   tell whether libvirtd runs this front end as its qemu-img\n");
}

int main(int argc, char **argv)
{
    shim.argv = argv;
    g_autoptr(GError) error = NULL;
    g_autoptr(ShimRequest) req = shim_parse_args(argc, argv, &error);
    if (req == NULL)
        die("%s", error->message);
    switch (req->command) {
    case SHIM_CMD_VERSION:
        printf("qemu-img version " QEMU_IMG_COMPAT_VERSION " (vdisk-qemu-img " VDISK_VERSION ")\n");
        return 0;
    case SHIM_CMD_HELP:
        usage();
        return 0;
    case SHIM_CMD_STATUS:
        return shim_print_status(stdout);
    default:
        break;
    }
    if (req->unsupported != NULL)
        fall_back(argv, req->unsupported);
    shim.bus = g_bus_get_sync(G_BUS_TYPE_SYSTEM, NULL, &error);
    if (shim.bus == NULL)
        fall_back(argv, "no system bus");
    shim.done = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    /* Subscribe before any call, so a job that ends at once is not missed. */
    g_dbus_connection_signal_subscribe(shim.bus, VDISK_BUS_NAME, VDISK_JOB_INTERFACE, "Completed",
                                       NULL, NULL, G_DBUS_SIGNAL_FLAGS_NONE, on_completed, NULL,
                                       NULL);
    g_bus_watch_name_on_connection(shim.bus, VDISK_BUS_NAME, G_BUS_NAME_WATCHER_FLAGS_AUTO_START,
                                   NULL, on_vanished, NULL, NULL);
    switch (req->command) {
    case SHIM_CMD_CREATE:
        do_create(req);
        break;
    case SHIM_CMD_CONVERT:
        do_convert(req);
        break;
    case SHIM_CMD_RESIZE:
        do_resize(req);
        break;
    case SHIM_CMD_SNAPSHOT:
        do_snapshot(req);
        break;
    default:
        fall_back(argv, "an unknown command");
    }
    return 0;
}
