#include "volume.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "errors.h"
#include "job.h"
#include "names.h"
#include "options.h"
#include "vdd-dbus.h"
#include "worker-protocol.h"
#include "volume-formats.h"

struct _VddVolume {
    GObject parent;
    /* Owned: a job that holds the volume keeps its pool and the pool's
     * directory descriptor alive after libvirt stopped the pool. */
    VddPool *pool;
    char *name;
    char *path;
    VddDbusObjectSkeleton *object;
    VddDbusVolume *iface;
    guint readers;
    guint writers;
    VddVolume *locked_backing; /* read-locked while this one is read or written */
};

G_DEFINE_TYPE(VddVolume, vdd_volume, G_TYPE_OBJECT)

static void vdd_volume_finalize(GObject *obj)
{
    VddVolume *self = VDD_VOLUME(obj);
    g_clear_object(&self->locked_backing);
    g_clear_object(&self->pool);
    g_clear_object(&self->iface);
    g_clear_object(&self->object);
    g_free(self->name);
    g_free(self->path);
    G_OBJECT_CLASS(vdd_volume_parent_class)->finalize(obj);
}

static void vdd_volume_class_init(VddVolumeClass *klass)
{
    G_OBJECT_CLASS(klass)->finalize = vdd_volume_finalize;
}

static void vdd_volume_init(VddVolume *self) {}

const char *vdd_volume_get_name(VddVolume *self) { return self->name; }
VddPool *vdd_volume_get_pool(VddVolume *self) { return self->pool; }
const char *vdd_volume_get_object_path(VddVolume *self) { return self->path; }
GDBusObjectSkeleton *vdd_volume_get_object(VddVolume *self)
{
    return G_DBUS_OBJECT_SKELETON(self->object);
}

static char *what(VddVolume *self)
{
    return g_strdup_printf("%s/%s", vdd_pool_get_name(self->pool), self->name);
}

/* ----- locks ----- */

static void publish_busy(VddVolume *self)
{
    vdd_dbus_volume_set_busy(self->iface, self->writers > 0);
}

gboolean vdd_volume_is_locked(VddVolume *self) { return self->readers > 0 || self->writers > 0; }

/* The volume this one's backing file names in the same pool, or NULL. */
static VddVolume *backing_volume(VddVolume *self)
{
    const char *backing = vdd_dbus_volume_get_backing_file(self->iface);
    VddVolume *b = backing && *backing ? vdd_pool_lookup_volume(self->pool, backing) : NULL;
    return b != self ? b : NULL;
}

/* Read-lock the backing volume of self, which is about to be locked: a
 * job reading or writing a volume reads its whole chain, so nobody may
 * write (or resize) a volume below it meanwhile. */
static gboolean lock_backing(VddVolume *self, GError **error)
{
    VddVolume *b = backing_volume(self);
    if (b == NULL)
        return TRUE;
    if (!vdd_volume_lock_read(b, error)) {
        g_autofree char *w = what(self);
        g_prefix_error(error, "%s: backing file: ", w);
        return FALSE;
    }
    self->locked_backing = g_object_ref(b);
    return TRUE;
}

static void unlock_backing(VddVolume *self)
{
    if (self->locked_backing != NULL) {
        vdd_volume_unlock_read(self->locked_backing);
        g_clear_object(&self->locked_backing);
    }
}

gboolean vdd_volume_lock_read(VddVolume *self, GError **error)
{
    if (self->writers > 0) {
        g_autofree char *w = what(self);
        g_set_error(error, VDD_ERROR, VDD_ERROR_BUSY, "%s is being written by another job", w);
        return FALSE;
    }
    /* The first reader locks the chain below for all of them. */
    if (self->readers == 0 && !lock_backing(self, error))
        return FALSE;
    self->readers++;
    return TRUE;
}

/* An unlock without its lock is a bug in a job's bookkeeping: a critical,
 * which the tests make fatal. */
static gboolean check_unlock(VddVolume *self, guint held, const char *kind)
{
    if (held > 0)
        return TRUE;
    g_autofree char *w = what(self);
    g_critical("%s: %s unlock without a lock", w, kind);
    return FALSE;
}

void vdd_volume_unlock_read(VddVolume *self)
{
    if (!check_unlock(self, self->readers, "read"))
        return;
    if (--self->readers == 0)
        unlock_backing(self);
}

gboolean vdd_volume_lock_write(VddVolume *self, GError **error)
{
    if (self->writers > 0 || self->readers > 0) {
        g_autofree char *w = what(self);
        g_set_error(error, VDD_ERROR, VDD_ERROR_BUSY, "%s is in use by another job", w);
        return FALSE;
    }
    if (!lock_backing(self, error))
        return FALSE;
    self->writers++;
    publish_busy(self);
    return TRUE;
}

void vdd_volume_unlock_write(VddVolume *self)
{
    if (!check_unlock(self, self->writers, "write"))
        return;
    self->writers--;
    unlock_backing(self);
    publish_busy(self);
}

/* ----- reading the header ----- */

static int open_file(VddVolume *self, int access, GError **error)
{
    int fd = openat(vdd_pool_get_dirfd(self->pool), self->name,
                    access | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        g_autofree char *w = what(self);
        vdd_error_set_errno(error, errno, "%s", w);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        g_autofree char *w = what(self);
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT, "%s is not a regular file", w);
        close(fd);
        return -1;
    }
    /* O_NONBLOCK only kept a FIFO from hanging the open. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

/* The volume's format: as recorded (volume-formats.h). A file vdiskd has
 * not seen before is probed once, reading nothing but its first bytes, and
 * what that finds is recorded: from then on its content cannot change how
 * it is read. */
static char *trusted_format(VddVolume *self, int fd, const struct stat *st, GError **error)
{
    VddFormatRecords *records = vdd_pool_get_format_records(self->pool);
    char *recorded = vdd_format_records_lookup(records, self->name, st);
    if (recorded != NULL)
        return recorded;
    g_autofree char *path = vdd_pool_file_path(self->pool, self->name);
    const char *format = vd_probe_fd(fd, path, NULL, error);
    if (format == NULL)
        return NULL;
    if (g_str_equal(format, "ova")) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_UNSUPPORTED_FORMAT,
                    "%s is an OVA appliance; import its disks into the pool instead", path);
        return NULL;
    }
    g_message("pool %s: %s is new to vdiskd; recorded as %s", vdd_pool_get_name(self->pool),
              self->name, format);
    vdd_format_records_set(records, self->name, st, format);
    return g_strdup(format);
}

/* The image in the volume's open file fd, as its trusted format; *st gets
 * the file's status. */
static VdImage *open_image(VddVolume *self, int fd, struct stat *st, VdOpenFlags flags,
                           const VddImageKey *key, GError **error)
{
    g_autofree char *format = fstat(fd, st) == 0 ? trusted_format(self, fd, st, error) : NULL;
    if (format == NULL && error != NULL && *error == NULL)
        vdd_error_set_errno(error, errno, "%s/%s", vdd_pool_get_name(self->pool), self->name);
    VdConfinement confine;
    vdd_pool_get_confinement(self->pool, &confine);
    VdImage *img =
        format == NULL
            ? NULL
            : vd_image_open_fd_confined(fd, self->name, format, flags, key ? key->open : NULL,
                                        key ? key->secrets : NULL, &confine, error);
    if (img == NULL)
        vdd_error_normalize(error);
    return img;
}

VdImage *vdd_volume_open(VddVolume *self, VdOpenFlags flags, const VddImageKey *key, GError **error)
{
    int fd = open_file(self, (flags & VD_OPEN_READ_WRITE) ? O_RDWR : O_RDONLY, error);
    if (fd < 0)
        return NULL;
    struct stat st;
    VdImage *img = open_image(self, fd, &st, flags, key, error);
    close(fd);
    return img;
}

/* The error of a raw volume (open in fd) whose content now looks like
 * another format: read as raw all the same, but the owner should know (a
 * guest wrote an image header into its disk, or someone filled it behind
 * vdiskd). */
static char *raw_content_warning(VddVolume *self, int fd)
{
    g_autofree char *path = vdd_pool_file_path(self->pool, self->name);
    const char *probed = vd_probe_fd(fd, path, NULL, NULL);
    if (probed == NULL || g_str_equal(probed, "raw"))
        return NULL;
    return g_strdup_printf("%s was recorded as raw, but its content now looks like %s; vdiskd "
                           "keeps reading it as raw and never follows names stored in it",
                           path, probed);
}

void vdd_volume_update(VddVolume *self)
{
    g_autoptr(GError) error = NULL;
    int fd = open_file(self, O_RDONLY, &error);
    struct stat st = { 0 };
    /* Describing a volume must work while a VM runs on it: read it as
     * qemu-img info -U does, not refusing its writer. */
    g_autoptr(VdImage) img =
        fd >= 0 ? open_image(self, fd, &st, VD_OPEN_NO_BACKING | VD_OPEN_FORCE_SHARE, NULL, &error)
                : NULL;
    g_autoptr(VdImageInfo) info = img ? vd_image_get_info(img, &error) : NULL;
    g_autofree char *warning =
        info != NULL && g_str_equal(info->format, "raw") ? raw_content_warning(self, fd) : NULL;
    if (fd >= 0)
        close(fd);
    g_object_freeze_notify(G_OBJECT(self->iface));
    vdd_dbus_volume_set_allocated_size(self->iface, (guint64)st.st_blocks * 512);
    if (info == NULL) {
        vdd_dbus_volume_set_format(self->iface, "");
        vdd_dbus_volume_set_error(self->iface, error ? error->message : "cannot read");
        vdd_dbus_volume_set_virtual_size(self->iface, 0);
        vdd_dbus_volume_set_snapshots(self->iface, vdd_snapshots_to_variant(NULL));
        g_object_thaw_notify(G_OBJECT(self->iface));
        return;
    }
    vdd_dbus_volume_set_format(self->iface, info->format);
    vdd_dbus_volume_set_error(self->iface, warning ? warning : "");
    vdd_dbus_volume_set_virtual_size(self->iface, info->virtual_size);
    vdd_dbus_volume_set_backing_file(self->iface,
                                     info->backing_filename ? info->backing_filename : "");
    vdd_dbus_volume_set_backing_format(self->iface,
                                       info->backing_format ? info->backing_format : "");
    vdd_dbus_volume_set_encrypted(self->iface, info->encrypted);
    g_autoptr(GVariant) snaps = g_variant_ref_sink(vdd_snapshots_to_variant(info->snapshots));
    GVariant *old = vdd_dbus_volume_get_snapshots(self->iface);
    if (old == NULL || !g_variant_equal(old, snaps))
        vdd_dbus_volume_set_snapshots(self->iface, snaps);
    g_object_thaw_notify(G_OBJECT(self->iface));
}

/* ----- jobs on a volume ----- */

typedef struct {
    VddVolume *volume; /* locked (read or write) */
    gboolean write;
    VddVolume *target; /* new volume (write-locked), or NULL */
    VddNewFile *file;  /* the target's file, until it is published */
    int fd;            /* the caller's target descriptor (Export) */
    char *format;
    VdOptions *create;
    VddImageKey key;   /* opens this volume; its secrets also serve create */
    VdImage *image;    /* source, or the volume opened read-write */
    VddVolume *source; /* CopyFrom: read-locked, or NULL */
    VdImage *source_image;
    guint64 size;
    gboolean shrink;
    char *snapshot;
    int snapshot_op;
} VolumeWork;

static void volume_work_free(VolumeWork *w)
{
    g_clear_pointer(&w->image, vd_image_unref);
    g_clear_pointer(&w->source_image, vd_image_unref);
    if (w->fd >= 0)
        close(w->fd);
    g_clear_pointer(&w->file, vdd_new_file_free);
    g_clear_object(&w->volume);
    g_clear_object(&w->target);
    g_clear_object(&w->source);
    vdd_image_key_clear(&w->key);
    g_free(w->format);
    g_free(w->snapshot);
    g_clear_pointer(&w->create, vd_options_free);
    g_free(w);
}

static VolumeWork *volume_work_new(VddVolume *self)
{
    VolumeWork *w = g_new0(VolumeWork, 1);
    w->volume = g_object_ref(self);
    w->fd = -1;
    return w;
}

/* Main thread, after the work: unlock, update or clean up. */
static void work_done(VddJob *job, gpointer data, const GError *error)
{
    VolumeWork *w = data;
    g_clear_pointer(&w->image, vd_image_unref); /* written back before the update */
    g_clear_pointer(&w->source_image, vd_image_unref);
    if (w->write)
        vdd_volume_unlock_write(w->volume);
    else
        vdd_volume_unlock_read(w->volume);
    if (w->source != NULL)
        vdd_volume_unlock_read(w->source);
    if (w->target != NULL) {
        vdd_volume_unlock_write(w->target);
        if (error != NULL) {
            /* Its file was never named: freeing the work removes it. */
            vdd_pool_remove_volume(w->volume->pool, w->target);
        } else {
            vdd_volume_update(w->target);
        }
    }
    if (w->write)
        vdd_volume_update(w->volume);
    vdd_pool_update_space(w->volume->pool);
}

static gboolean clone_run(VddJob *job, gpointer data, GCancellable *cancellable, GError **error)
{
    VolumeWork *w = data;
    g_autofree char *path = vdd_pool_file_path(w->volume->pool, w->target->name);
    return vdd_copy_into_fd(w->image, vdd_new_file_fd(w->file), path, w->format, w->create,
                            w->key.secrets, 0, job, cancellable, error) &&
           vdd_new_file_publish(w->file, w->format, error);
}

static gboolean export_run(VddJob *job, gpointer data, GCancellable *cancellable, GError **error)
{
    VolumeWork *w = data;
    return vdd_copy_into_fd(w->image, w->fd, "caller's target file", w->format, w->create,
                            w->key.secrets, VD_OPEN_NO_RELATED_FILES, job, cancellable, error);
}

static gboolean copy_from_run(VddJob *job, gpointer data, GCancellable *cancellable, GError **error)
{
    VolumeWork *w = data;
    return vdd_copy_over(w->source_image, w->image, job, cancellable, error);
}

static gboolean resize_run(VddJob *job, gpointer data, GCancellable *cancellable, GError **error)
{
    VolumeWork *w = data;
    vdd_job_progress(0, w->size, job);
    if (!vd_image_resize(w->image, w->size, w->shrink, error) || !vd_image_flush(w->image, error))
        return FALSE;
    vdd_job_progress(w->size, w->size, job);
    return TRUE;
}

static void start_job(VddVolume *self, GDBusMethodInvocation *invocation, guint32 uid,
                      const char *operation, VolumeWork *w, VddJobFunc func)
{
    const char *objects[3] = { self->path,
                               w->target   ? w->target->path
                               : w->source ? w->source->path
                                           : NULL,
                               NULL };
    VddJob *job =
        vdd_job_new(vdd_pool_get_manager(self->pool), invocation, operation, uid, objects);
    g_autofree char *wh = what(self);
    vdd_log_operation(invocation, uid, wh, NULL);
    if (g_str_equal(operation, "clone"))
        vdd_dbus_volume_complete_clone(self->iface, invocation, w->target->path,
                                       vdd_job_get_object_path(job));
    else if (g_str_equal(operation, "export"))
        vdd_dbus_volume_complete_export(self->iface, invocation, vdd_job_get_object_path(job));
    else if (g_str_equal(operation, "copy"))
        vdd_dbus_volume_complete_copy_from(self->iface, invocation, vdd_job_get_object_path(job));
    else
        vdd_dbus_volume_complete_resize(self->iface, invocation, vdd_job_get_object_path(job));
    vdd_job_start(job, func, work_done, w, (GDestroyNotify)volume_work_free);
    g_object_unref(job);
}

static void fail(VddVolume *self, GDBusMethodInvocation *invocation, guint32 uid, VolumeWork *w,
                 GError *error)
{
    g_autofree char *wh = what(self);
    if (w != NULL) {
        g_clear_pointer(&w->image, vd_image_unref);
        if (w->target != NULL) {
            vdd_volume_unlock_write(w->target);
            vdd_pool_remove_volume(self->pool, w->target); /* its file goes with w */
        }
        volume_work_free(w);
    }
    if (error != NULL && !g_strrstr(error->message, self->name))
        g_prefix_error(&error, "%s: ", wh);
    vdd_return_error(invocation, uid, wh, error);
}

/* The work of a copy into a new file (Clone, Export): a format vdisk knows
 * and create options a descriptor target can take. NULL with error. */
static VolumeWork *copy_work_new(VddVolume *self, const char *format, GVariant *options,
                                 GError **error)
{
    if (!vdd_check_format(format, error))
        return NULL;
    VolumeWork *w = volume_work_new(self);
    w->format = g_strdup(format);
    static const char *const daemon_keys[] = { "secrets", "volume-key-secret", NULL };
    if ((w->create = vdd_options_to_create(options, format, daemon_keys, error)) == NULL ||
        !vdd_check_fd_target_options(format, w->create, error) ||
        !vdd_options_to_image_key(options, "volume-key-secret", &w->key, error)) {
        volume_work_free(w);
        return NULL;
    }
    return w;
}

/* Clone */
static void clone_authorized(gpointer target, GDBusMethodInvocation *invocation, guint32 uid)
{
    VddVolume *self = target;
    const char *name, *format;
    g_autoptr(GVariant) options = NULL;
    g_variant_get(g_dbus_method_invocation_get_parameters(invocation), "(&s&s@a{sv})", &name,
                  &format, &options);
    GError *error = NULL;
    VolumeWork *w = copy_work_new(self, format, options, &error);
    if (w == NULL || !vdd_pool_check_new_name(self->pool, name, &error) ||
        !vdd_volume_lock_read(self, &error)) {
        fail(self, invocation, uid, w, error);
        return;
    }
    if ((w->image = vdd_volume_open(self, 0, &w->key, &error)) == NULL ||
        (w->file = vdd_pool_new_file(self->pool, name, &error)) == NULL) {
        vdd_volume_unlock_read(self);
        fail(self, invocation, uid, w, error);
        return;
    }
    w->target = g_object_ref(vdd_pool_add_volume(self->pool, name));
    vdd_volume_lock_write(w->target, NULL);
    start_job(self, invocation, uid, "clone", w, clone_run);
}

/* Clone and CreateOverlay make a volume from this one: after the check to
 * create it, the check to read this one. */
static void clone_may_create(gpointer target, GDBusMethodInvocation *invocation, guint32 uid)
{
    VddVolume *self = target;
    vdd_manager_authorize_read(vdd_pool_get_manager(self->pool), invocation, self, self,
                               clone_authorized);
}

static gboolean handle_clone(VddDbusVolume *iface, GDBusMethodInvocation *invocation,
                             const char *name, const char *format, GVariant *options,
                             VddVolume *self)
{
    const char *pool = vdd_pool_get_name(self->pool);
    vdd_manager_authorize(vdd_pool_get_manager(self->pool), invocation, self, clone_may_create,
                          "pool", pool, "volume", name, "format", format, "source-pool", pool,
                          "source-volume", self->name, "operation", "clone", NULL);
    return TRUE;
}

/* Export */
static void export_authorized(gpointer target, GDBusMethodInvocation *invocation, guint32 uid)
{
    VddVolume *self = target;
    gint32 handle;
    const char *format;
    g_autoptr(GVariant) options = NULL;
    g_variant_get(g_dbus_method_invocation_get_parameters(invocation), "(h&s@a{sv})", &handle,
                  &format, &options);
    GError *error = NULL;
    VolumeWork *w = copy_work_new(self, format, options, &error);
    if (w == NULL || (w->fd = vdd_caller_fd(invocation, handle, O_RDWR, "target", &error)) < 0 ||
        !vdd_volume_lock_read(self, &error)) {
        fail(self, invocation, uid, w, error);
        return;
    }
    if ((w->image = vdd_volume_open(self, 0, &w->key, &error)) == NULL) {
        vdd_volume_unlock_read(self);
        fail(self, invocation, uid, w, error);
        return;
    }
    start_job(self, invocation, uid, "export", w, export_run);
}

static gboolean handle_export(VddDbusVolume *iface, GDBusMethodInvocation *invocation, GVariant *fd,
                              const char *format, GVariant *options, VddVolume *self)
{
    vdd_manager_authorize(vdd_pool_get_manager(self->pool), invocation, self, export_authorized,
                          "pool", vdd_pool_get_name(self->pool), "volume", self->name, "format",
                          format, "operation", "export", NULL);
    return TRUE;
}

/* Resize */
static void resize_authorized(gpointer target, GDBusMethodInvocation *invocation, guint32 uid)
{
    VddVolume *self = target;
    g_autoptr(GVariant) options = NULL;
    VolumeWork *w = volume_work_new(self);
    g_variant_get(g_dbus_method_invocation_get_parameters(invocation), "(t@a{sv})", &w->size,
                  &options);
    GError *error = NULL;
    w->write = TRUE;
    if (!vdd_options_lookup_bool(options, "shrink", FALSE, &w->shrink, &error) ||
        !vdd_options_to_image_key(options, "volume-key-secret", &w->key, &error) ||
        !vdd_volume_lock_write(self, &error)) {
        w->write = FALSE;
        fail(self, invocation, uid, w, error);
        return;
    }
    if ((w->image = vdd_volume_open(self, VD_OPEN_READ_WRITE, &w->key, &error)) == NULL) {
        vdd_volume_unlock_write(self);
        fail(self, invocation, uid, w, error);
        return;
    }
    start_job(self, invocation, uid, "resize", w, resize_run);
}

static gboolean handle_resize(VddDbusVolume *iface, GDBusMethodInvocation *invocation, guint64 size,
                              GVariant *options, VddVolume *self)
{
    vdd_manager_authorize(vdd_pool_get_manager(self->pool), invocation, self, resize_authorized,
                          "pool", vdd_pool_get_name(self->pool), "volume", self->name, "operation",
                          "resize", NULL);
    return TRUE;
}

/* CopyFrom: this volume's guest content replaced by another's, as qemu-img
 * convert -n writes into an existing image (libvirt's clone of an encrypted
 * volume creates the target first, then fills it this way). */
/* Lock both volumes and open them; w->source is set once it is locked. */
static gboolean prepare_copy_from(VddVolume *self, VddVolume *source, VolumeWork *w,
                                  GVariant *options, GError **error)
{
    g_auto(VddImageKey) source_key = { 0 };
    if (source == self) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "a volume cannot be copied onto itself");
        return FALSE;
    }
    if (!vdd_options_to_image_key(options, "volume-key-secret", &w->key, error) ||
        !vdd_options_to_image_key(options, "source-key-secret", &source_key, error) ||
        !vdd_volume_lock_write(self, error))
        return FALSE;
    w->write = TRUE;
    if (!vdd_volume_lock_read(source, error))
        return FALSE;
    w->source = g_object_ref(source);
    if ((w->image = vdd_volume_open(self, VD_OPEN_READ_WRITE, &w->key, error)) == NULL ||
        (w->source_image = vdd_volume_open(w->source, 0, &source_key, error)) == NULL)
        return FALSE;
    if (vd_image_size(w->image) < vd_image_size(w->source_image)) {
        g_autofree char *src = what(w->source);
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "%" G_GUINT64_FORMAT " bytes is smaller than %s (%" G_GUINT64_FORMAT
                    " bytes); resize it first",
                    vd_image_size(w->image), src, vd_image_size(w->source_image));
        return FALSE;
    }
    return TRUE;
}

static void copy_from_authorized(gpointer target, GDBusMethodInvocation *invocation, guint32 uid)
{
    VddVolume *self = target;
    const char *source_path;
    g_autoptr(GVariant) options = NULL;
    g_variant_get(g_dbus_method_invocation_get_parameters(invocation), "(&o@a{sv})", &source_path,
                  &options);
    VolumeWork *w = volume_work_new(self);
    VddVolume *source = vdd_manager_lookup_volume(vdd_pool_get_manager(self->pool), source_path);
    GError *error = NULL;
    if (source == NULL) {
        error = g_error_new(VDD_ERROR, VDD_ERROR_NOT_FOUND, "no volume %s", source_path);
    } else if (prepare_copy_from(self, source, w, options, &error)) {
        start_job(self, invocation, uid, "copy", w, copy_from_run);
        return;
    }
    /* Undo what prepare_copy_from took: the locks, then the work. */
    g_clear_pointer(&w->image, vd_image_unref);
    g_clear_pointer(&w->source_image, vd_image_unref);
    if (w->source != NULL)
        vdd_volume_unlock_read(w->source);
    g_clear_object(&w->source);
    if (w->write)
        vdd_volume_unlock_write(self);
    fail(self, invocation, uid, w, error);
}

/* After the check to write this volume, the check to read the source. */
static void copy_from_may_write(gpointer target, GDBusMethodInvocation *invocation, guint32 uid)
{
    VddVolume *self = target;
    const char *source_path;
    g_variant_get(g_dbus_method_invocation_get_parameters(invocation), "(&o@a{sv})", &source_path,
                  NULL);
    VddManager *manager = vdd_pool_get_manager(self->pool);
    VddVolume *source = vdd_manager_lookup_volume(manager, source_path);
    if (source == NULL) {
        fail(self, invocation, uid, NULL,
             g_error_new(VDD_ERROR, VDD_ERROR_NOT_FOUND, "no volume %s", source_path));
        return;
    }
    vdd_manager_authorize_read(manager, invocation, self, source, copy_from_authorized);
}

static gboolean handle_copy_from(VddDbusVolume *iface, GDBusMethodInvocation *invocation,
                                 const char *source_path, GVariant *options, VddVolume *self)
{
    VddManager *manager = vdd_pool_get_manager(self->pool);
    VddVolume *source = vdd_manager_lookup_volume(manager, source_path);
    vdd_manager_authorize(manager, invocation, self, copy_from_may_write, "pool",
                          vdd_pool_get_name(self->pool), "volume", self->name, "source-pool",
                          source ? vdd_pool_get_name(source->pool) : NULL, "source-volume",
                          source ? source->name : NULL, "operation", "copy", NULL);
    return TRUE;
}

/* Snapshots: short, but on a thread all the same (a revert can write). */
enum { SNAP_CREATE, SNAP_REVERT, SNAP_DELETE };

static void snapshot_thread(GTask *task, gpointer source, gpointer data, GCancellable *c)
{
    VolumeWork *w = data;
    GError *error = NULL;
    gboolean ok =
        w->snapshot_op == SNAP_CREATE   ? vd_image_create_snapshot(w->image, w->snapshot, &error)
        : w->snapshot_op == SNAP_REVERT ? vd_image_apply_snapshot(w->image, w->snapshot, &error)
                                        : vd_image_delete_snapshot(w->image, w->snapshot, &error);
    if (ok)
        ok = vd_image_flush(w->image, &error);
    g_clear_pointer(&w->image, vd_image_unref);
    if (ok)
        g_task_return_boolean(task, TRUE);
    else
        g_task_return_error(task, error);
}

static void snapshot_done(GObject *source, GAsyncResult *res, gpointer data)
{
    GDBusMethodInvocation *invocation = data;
    VddVolume *self = VDD_VOLUME(source);
    VolumeWork *w = g_task_get_task_data(G_TASK(res));
    GError *error = NULL;
    guint32 uid = GPOINTER_TO_UINT(g_object_get_data(G_OBJECT(invocation), "vdd-uid"));
    vdd_volume_unlock_write(self);
    vdd_volume_update(self);
    vdd_pool_update_space(self->pool);
    if (!g_task_propagate_boolean(G_TASK(res), &error)) {
        fail(self, invocation, uid, NULL, error);
    } else {
        g_autofree char *wh = g_strdup_printf("%s/%s snapshot %s", vdd_pool_get_name(self->pool),
                                              self->name, w->snapshot);
        vdd_log_operation(invocation, uid, wh, NULL);
        g_dbus_method_invocation_return_value(invocation, NULL);
    }
    g_object_unref(invocation);
}

static void snapshot_authorized(gpointer target, GDBusMethodInvocation *invocation, guint32 uid)
{
    VddVolume *self = target;
    const char *method = g_dbus_method_invocation_get_method_name(invocation);
    VolumeWork *w = volume_work_new(self);
    g_autoptr(GVariant) options = NULL;
    g_variant_get(g_dbus_method_invocation_get_parameters(invocation), "(s@a{sv})", &w->snapshot,
                  &options);
    w->snapshot_op = g_str_equal(method, "CreateSnapshot")   ? SNAP_CREATE
                     : g_str_equal(method, "RevertSnapshot") ? SNAP_REVERT
                                                             : SNAP_DELETE;
    GError *error = NULL;
    if (*w->snapshot == '\0') {
        fail(self, invocation, uid, w,
             g_error_new(VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT, "snapshot name is empty"));
        return;
    }
    if (!vdd_volume_lock_write(self, &error)) {
        fail(self, invocation, uid, w, error);
        return;
    }
    if ((w->image = vdd_volume_open(self, VD_OPEN_READ_WRITE, NULL, &error)) == NULL) {
        vdd_volume_unlock_write(self);
        fail(self, invocation, uid, w, error);
        return;
    }
    g_object_set_data(G_OBJECT(invocation), "vdd-uid", GUINT_TO_POINTER(uid));
    g_autoptr(GTask) task = g_task_new(self, NULL, snapshot_done, g_object_ref(invocation));
    g_task_set_task_data(task, w, (GDestroyNotify)volume_work_free);
    g_task_run_in_thread(task, snapshot_thread);
}

static gboolean handle_snapshot(VddDbusVolume *iface, GDBusMethodInvocation *invocation,
                                const char *name, GVariant *options, VddVolume *self)
{
    vdd_manager_authorize(vdd_pool_get_manager(self->pool), invocation, self, snapshot_authorized,
                          "pool", vdd_pool_get_name(self->pool), "volume", self->name, "snapshot",
                          name, "operation", g_dbus_method_invocation_get_method_name(invocation),
                          NULL);
    return TRUE;
}

/* CreateOverlay: a small qcow2 over this volume; made at once. */
static void overlay_authorized(gpointer target, GDBusMethodInvocation *invocation, guint32 uid)
{
    VddVolume *self = target;
    const char *name;
    g_autoptr(GVariant) options = NULL;
    g_variant_get(g_dbus_method_invocation_get_parameters(invocation), "(&s@a{sv})", &name,
                  &options);
    GError *error = NULL;
    g_autoptr(VdOptions) create = vdd_options_to_create(options, "qcow2", NULL, &error);
    const char *format = vdd_dbus_volume_get_format(self->iface);
    if (create == NULL) {
        fail(self, invocation, uid, NULL, error);
        return;
    }
    if (format == NULL || *format == '\0') {
        fail(self, invocation, uid, NULL,
             g_error_new(VDD_ERROR, VDD_ERROR_CORRUPT, "the image cannot be read: %s",
                         vdd_dbus_volume_get_error(self->iface)));
        return;
    }
    vd_options_set(create, "backing_file", self->name);
    vd_options_set(create, "backing_fmt", format);
    if (!vdd_volume_lock_read(self, &error)) {
        fail(self, invocation, uid, NULL, error);
        return;
    }
    g_autoptr(VddNewFile) file = vdd_pool_new_file(self->pool, name, &error);
    gboolean ok = file != NULL;
    if (ok) {
        VdConfinement confine;
        vdd_pool_get_confinement(self->pool, &confine);
        ok = vd_image_create_fd_confined(vdd_new_file_fd(file), name, "qcow2", 0, create, NULL,
                                         &confine, &error) &&
             vdd_new_file_publish(file, "qcow2", &error);
    }
    vdd_volume_unlock_read(self);
    if (!ok) {
        fail(self, invocation, uid, NULL, error);
        return;
    }
    VddVolume *vol = vdd_pool_add_volume(self->pool, name);
    vdd_volume_update(vol);
    vdd_pool_update_space(self->pool);
    g_autofree char *wh =
        g_strdup_printf("%s/%s over %s", vdd_pool_get_name(self->pool), name, self->name);
    vdd_log_operation(invocation, uid, wh, NULL);
    vdd_dbus_volume_complete_create_overlay(self->iface, invocation, vol->path);
}

static void overlay_may_create(gpointer target, GDBusMethodInvocation *invocation, guint32 uid)
{
    VddVolume *self = target;
    vdd_manager_authorize_read(vdd_pool_get_manager(self->pool), invocation, self, self,
                               overlay_authorized);
}

static gboolean handle_create_overlay(VddDbusVolume *iface, GDBusMethodInvocation *invocation,
                                      const char *name, GVariant *options, VddVolume *self)
{
    const char *pool = vdd_pool_get_name(self->pool);
    vdd_manager_authorize(vdd_pool_get_manager(self->pool), invocation, self, overlay_may_create,
                          "pool", pool, "volume", name, "format", "qcow2", "source-pool", pool,
                          "source-volume", self->name, "operation", "overlay", NULL);
    return TRUE;
}

/* Delete */
static void delete_authorized(gpointer target, GDBusMethodInvocation *invocation, guint32 uid)
{
    VddVolume *self = target;
    GError *error = NULL;
    if (vdd_volume_is_locked(self)) {
        fail(self, invocation, uid, NULL,
             g_error_new(VDD_ERROR, VDD_ERROR_BUSY, "a job is using it"));
        return;
    }
    if (unlinkat(vdd_pool_get_dirfd(self->pool), self->name, 0) < 0 && errno != ENOENT) {
        vdd_error_set_errno(&error, errno, "cannot delete");
        fail(self, invocation, uid, NULL, error);
        return;
    }
    vdd_format_records_forget(vdd_pool_get_format_records(self->pool), self->name);
    /* Without this a power cut can bring the volume back; the file is gone
     * either way, so a failed sync is logged, not answered as a failure. */
    g_autoptr(GError) sync_error = NULL;
    if (!vdd_pool_sync_directory(self->pool, &sync_error))
        g_warning("%s", sync_error->message);
    g_autofree char *wh = what(self);
    vdd_log_operation(invocation, uid, wh, NULL);
    vdd_dbus_volume_complete_delete(self->iface, invocation);
    VddPool *pool = self->pool;
    vdd_pool_remove_volume(pool, self); /* may drop the last reference but ours */
    vdd_pool_update_space(pool);
}

static gboolean handle_delete(VddDbusVolume *iface, GDBusMethodInvocation *invocation,
                              GVariant *options, VddVolume *self)
{
    vdd_manager_authorize(vdd_pool_get_manager(self->pool), invocation, self, delete_authorized,
                          "pool", vdd_pool_get_name(self->pool), "volume", self->name, "operation",
                          "delete", NULL);
    return TRUE;
}

VddVolume *vdd_volume_new(VddPool *pool, const char *name)
{
    VddVolume *self = g_object_new(VDD_TYPE_VOLUME, NULL);
    self->pool = g_object_ref(pool);
    self->name = g_strdup(name);
    g_autofree char *escaped = vdd_name_escape(name);
    self->path = g_strdup_printf("%s/%s", vdd_pool_get_object_path(pool), escaped);
    self->object = vdd_dbus_object_skeleton_new(self->path);
    self->iface = vdd_dbus_volume_skeleton_new();
    g_autofree char *file = vdd_pool_file_path(pool, name);
    g_object_set(self->iface, "name", name, "pool", vdd_pool_get_object_path(pool), "path", file,
                 "format", "", "backing-file", "", "backing-format", "", "error", "", NULL);
    vdd_dbus_volume_set_snapshots(self->iface, vdd_snapshots_to_variant(NULL));
    g_signal_connect(self->iface, "handle-clone", G_CALLBACK(handle_clone), self);
    g_signal_connect(self->iface, "handle-export", G_CALLBACK(handle_export), self);
    g_signal_connect(self->iface, "handle-resize", G_CALLBACK(handle_resize), self);
    g_signal_connect(self->iface, "handle-copy-from", G_CALLBACK(handle_copy_from), self);
    g_signal_connect(self->iface, "handle-create-snapshot", G_CALLBACK(handle_snapshot), self);
    g_signal_connect(self->iface, "handle-revert-snapshot", G_CALLBACK(handle_snapshot), self);
    g_signal_connect(self->iface, "handle-delete-snapshot", G_CALLBACK(handle_snapshot), self);
    g_signal_connect(self->iface, "handle-create-overlay", G_CALLBACK(handle_create_overlay), self);
    g_signal_connect(self->iface, "handle-delete", G_CALLBACK(handle_delete), self);
    vdd_dbus_object_skeleton_set_volume(self->object, self->iface);
    vdd_volume_update(self);
    return self;
}
