#include "volume.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <gio/gunixfdlist.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "call.h"
#include "errors.h"
#include "job.h"
#include "locks.h"
#include "names.h"
#include "vdisk-driver.h"
#include "options.h"
#include "pool-backend.h"
#if VDD_HAVE_RBD
#include "pool-backend-rbd.h"
#endif
#include "vdd-dbus.h"
#include "worker-client.h"
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

/* The Corrupt error of a volume that cannot be read: "POOL/NAME cannot be
 * read: WHY", its name said once (the Error property begins with it). */
static GError *unreadable(VddVolume *self)
{
    g_autofree char *w = what(self);
    g_autofree char *prefix = g_strconcat(w, ": ", NULL);
    const char *why = vdd_dbus_volume_get_error(self->iface);
    if (why == NULL || *why == '\0')
        return g_error_new(VDD_ERROR, VDD_ERROR_CORRUPT, "%s cannot be read", w);
    if (g_str_has_prefix(why, prefix))
        why += strlen(prefix);
    return g_error_new(VDD_ERROR, VDD_ERROR_CORRUPT, "%s cannot be read: %s", w, why);
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

/* A regular file beneath a dir pool's folder, never through a link; an
 * LV's block device in a logical pool (pool-backend.h). */
static int open_file(VddVolume *self, int access, GError **error)
{
    return vdd_pool_backend_open(vdd_pool_get_backend(self->pool), self->name, access, error);
}

/* The volume's format, as recorded (volume-formats.h) when vdiskd made
 * the file or first described it: its content can never change how it is
 * read. NULL with an error when this file (this inode) was never
 * described. */
static char *recorded_format(VddVolume *self, int fd, GError **error)
{
    struct stat st;
    if (vdd_pool_is_logical(self->pool)) /* an LV holds a raw disk */
        return g_strdup("raw");
    if (fstat(fd, &st) < 0) {
        vdd_error_set_errno(error, errno, "%s/%s", vdd_pool_get_name(self->pool), self->name);
        return NULL;
    }
    char *format =
        vdd_format_records_lookup(vdd_pool_get_format_records(self->pool), self->name, &st);
    if (format == NULL)
        g_propagate_error(error, unreadable(self));
    return format;
}

/* The volume's file, opened for a job, and its recorded format. A file
 * replaced behind vdiskd is described (and its format recorded) first.
 * The file is locked as QEMU locks an image it reads or writes, here
 * rather than only in the worker: /proc shows vdiskd, not the worker, who
 * holds a conflicting lock (a running VM), and the lock lasts until the
 * job closes the file. */
static int open_for_job(VddVolume *self, int access, char **format, GError **error)
{
    int fd = open_file(self, access, error);
    if (fd < 0)
        return -1;
    g_autofree char *path = vdd_pool_file_path(self->pool, self->name);
    guint perm, unshared;
    if (!vd_lock_fd(fd, path, access == O_RDWR ? VD_LOCK_WRITE : VD_LOCK_READ, &perm, &unshared,
                    error)) {
        vdd_error_normalize(error);
        close(fd);
        return -1;
    }
    *format = recorded_format(self, fd, NULL);
    if (*format == NULL) {
        vdd_volume_update(self);
        *format = recorded_format(self, fd, error);
    }
    if (*format == NULL) {
        close(fd);
        return -1;
    }
    return fd;
}

int vdd_volume_open_for_job(VddVolume *self, int access, char **format, GError **error)
{
    return open_for_job(self, access, format, error);
}

/* A describe may run on the main loop: its worker gets little time. */
#define DESCRIBE_SECONDS 10

/* What a worker says of the volume's file fd: the result message, with
 * "info" unless the file could not be read (error then says why). format
 * is the recorded one, or NULL for a file vdiskd has not seen. */
static GVariant *describe(VddVolume *self, int fd, const char *format, GError **error)
{
    g_autofree char *label = vdd_pool_file_path(self->pool, self->name);
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "operation", "s", "describe");
    g_variant_dict_insert(&d, "cpu-seconds", "t", (guint64)DESCRIBE_SECONDS);
    /* Describing a volume must work while a VM runs on it: read it as
     * qemu-img info -U does, not refusing its writer. */
    vdd_worker_request_volume(&d, "source", 0, 0, format, self->name, label,
                              VD_OPEN_NO_BACKING | VD_OPEN_FORCE_SHARE, NULL, NULL);
    const VddWorkerFolder folder = { vdd_pool_get_dirfd(self->pool),
                                     vdd_pool_get_directory(self->pool), NULL,
                                     vdd_pool_get_name(self->pool) };
    const VddWorkerCall call = { .fds = &fd,
                                 .n_fds = 1,
                                 .folders = &folder,
                                 .n_folders = 1,
                                 .timeout_seconds = DESCRIBE_SECONDS };
    return vdd_worker_run(g_variant_dict_end(&d), &call, error);
}

/* The format a described file is recorded as: what its first bytes look
 * like, the first time vdiskd sees it. NULL with error for an appliance. */
static const char *first_format(VddVolume *self, const char *probed, GError **error)
{
    if (g_strcmp0(probed, "ova") == 0) {
        g_autofree char *path = vdd_pool_file_path(self->pool, self->name);
        g_set_error(error, VDD_ERROR, VDD_ERROR_UNSUPPORTED_FORMAT,
                    "%s is an OVA appliance; import its disks into the pool instead", path);
        return NULL;
    }
    return probed;
}

/* The error of a raw volume whose content now looks like another format:
 * read as raw all the same, but the owner should know (a guest wrote an
 * image header into its disk, or someone filled it behind vdiskd). */
static char *raw_content_warning(VddVolume *self, const char *probed)
{
    if (probed == NULL || g_str_equal(probed, "raw"))
        return NULL;
    g_autofree char *path = vdd_pool_file_path(self->pool, self->name);
    return g_strdup_printf("%s was recorded as raw, but its content now looks like %s; vdiskd "
                           "keeps reading it as raw and never follows names stored in it",
                           path, probed);
}

static void publish_unreadable(VddVolume *self, const GError *error)
{
    vdd_dbus_volume_set_format(self->iface, "");
    vdd_dbus_volume_set_error(self->iface, error ? error->message : "cannot read");
    vdd_dbus_volume_set_virtual_size(self->iface, 0);
    vdd_dbus_volume_set_snapshots(self->iface, vdd_snapshots_to_variant(NULL));
}

static void publish_info(VddVolume *self, GVariant *info, const char *warning)
{
    const char *format = "", *backing = "", *backing_format = "";
    guint64 size = 0;
    gboolean encrypted = FALSE;
    g_variant_lookup(info, "format", "&s", &format);
    g_variant_lookup(info, "virtual-size", "t", &size);
    g_variant_lookup(info, "backing-file", "&s", &backing);
    g_variant_lookup(info, "backing-format", "&s", &backing_format);
    g_variant_lookup(info, "encrypted", "b", &encrypted);
    g_autoptr(GVariant) snaps =
        g_variant_lookup_value(info, "snapshots", G_VARIANT_TYPE("a(ssttt)"));
    if (snaps == NULL)
        snaps = g_variant_ref_sink(vdd_snapshots_to_variant(NULL));
    vdd_dbus_volume_set_format(self->iface, format);
    vdd_dbus_volume_set_error(self->iface, warning ? warning : "");
    vdd_dbus_volume_set_virtual_size(self->iface, size);
    vdd_dbus_volume_set_backing_file(self->iface, backing);
    vdd_dbus_volume_set_backing_format(self->iface, backing_format);
    vdd_dbus_volume_set_encrypted(self->iface, encrypted);
    GVariant *old = vdd_dbus_volume_get_snapshots(self->iface);
    if (old == NULL || !g_variant_equal(old, snaps))
        vdd_dbus_volume_set_snapshots(self->iface, snaps);
}

#if VDD_HAVE_RBD
/* An RBD image is raw, its size and snapshots the cluster's: vdiskd asks
 * librbd (metadata only; no byte of the image is read). */
static void update_rbd(VddVolume *self)
{
    g_autoptr(GError) error = NULL;
    guint64 size = 0, allocated = 0;
    g_auto(GStrv) read = NULL;
    const char *const *snapshots = NULL;
    VddRbdPool *rbd = vdd_pool_backend_rbd(vdd_pool_get_backend(self->pool));
    g_object_freeze_notify(G_OBJECT(self->iface));
    /* What the pool's scan found, else one quick request of the cluster
     * (after a job on this volume). */
    gboolean ok = vdd_pool_rbd_scanned(self->pool, self->name, &size, &allocated, &snapshots);
    if (!ok && vdd_rbd_pool_stat(rbd, self->name, &size, &allocated, &read, &error)) {
        snapshots = (const char *const *)read;
        ok = TRUE;
    }
    vdd_dbus_volume_set_allocated_size(self->iface, allocated);
    if (!ok) {
        publish_unreadable(self, error);
    } else {
        GVariantBuilder snaps;
        g_variant_builder_init(&snaps, G_VARIANT_TYPE("a(ssttt)"));
        /* As qemu-img info lists an RBD image's: the name as id and tag. */
        for (guint i = 0; snapshots[i] != NULL; i++)
            g_variant_builder_add(&snaps, "(ssttt)", snapshots[i], snapshots[i], (guint64)0,
                                  (guint64)0, size);
        GVariantDict info;
        g_variant_dict_init(&info, NULL);
        g_variant_dict_insert(&info, "format", "s", "raw");
        g_variant_dict_insert(&info, "virtual-size", "t", size);
        g_variant_dict_insert_value(&info, "snapshots", g_variant_builder_end(&snaps));
        g_autoptr(GVariant) v = g_variant_ref_sink(g_variant_dict_end(&info));
        publish_info(self, v, NULL);
    }
    g_object_thaw_notify(G_OBJECT(self->iface));
}
#endif

void vdd_volume_update(VddVolume *self)
{
    g_autoptr(GError) error = NULL;
#if VDD_HAVE_RBD
    if (vdd_pool_is_rbd(self->pool)) {
        update_rbd(self);
        return;
    }
#endif
    int fd = open_file(self, O_RDONLY, &error);
    struct stat st = { 0 };
    if (fd >= 0 && fstat(fd, &st) < 0)
        vdd_error_set_errno(&error, errno, "%s/%s", vdd_pool_get_name(self->pool), self->name);
    VddFormatRecords *records = vdd_pool_get_format_records(self->pool);
    g_autofree char *recorded =
        error == NULL ? vdd_format_records_lookup(records, self->name, &st) : NULL;
    /* The header is read by a worker; vdiskd reads no image itself. */
    g_autoptr(GVariant) result = error == NULL ? describe(self, fd, recorded, &error) : NULL;
    if (fd >= 0)
        close(fd);
    const char *probed = NULL;
    g_autoptr(GVariant) info = NULL;
    if (result != NULL) {
        g_variant_lookup(result, "probed", "&s", &probed);
        info = g_variant_lookup_value(result, "info", G_VARIANT_TYPE_VARDICT);
    }
    const char *format = NULL;
    if (info != NULL)
        g_variant_lookup(info, "format", "&s", &format);
    if (result != NULL && recorded == NULL && first_format(self, probed, &error) != NULL &&
        format != NULL) {
        g_message("pool %s: %s is new to vdiskd; recorded as %s", vdd_pool_get_name(self->pool),
                  self->name, format);
        vdd_format_records_set(records, self->name, &st, format);
    }
    g_object_freeze_notify(G_OBJECT(self->iface));
    vdd_dbus_volume_set_allocated_size(self->iface, (guint64)st.st_blocks * 512);
    if (info == NULL || error != NULL) {
        if (error == NULL)
            error = g_error_new(VDD_ERROR, VDD_ERROR_FAILED, "the image could not be described");
        publish_unreadable(self, error);
    } else {
        g_autofree char *warning =
            g_strcmp0(format, "raw") == 0 ? raw_content_warning(self, probed) : NULL;
        publish_info(self, info, warning);
    }
    g_object_thaw_notify(G_OBJECT(self->iface));
}

/* ----- jobs on a volume -----
 * Every job's image work runs in vdisk-worker (worker-client.h): vdiskd
 * opens the volumes' files, the worker parses them and asks vdiskd for any
 * file they name beneath the pool. */

typedef struct {
    VddLockSet *locks; /* every volume below that the work locked */
    VddVolume *volume; /* locked (read or write) */
    gboolean write;
    int volume_fd; /* its file, opened for the job */
    char *volume_format;
    VddImageKey key;   /* opens this volume; its secrets also serve create */
    VddVolume *target; /* new volume (write-locked), or NULL */
    VddNewFile *file;  /* the target's file, until it is published */
    int fd;            /* the caller's target descriptor (Export) */
    char *format;
    VdOptions *create;
    VddVolume *source; /* CopyFrom: read-locked, or NULL */
    int source_fd;
    char *source_format;
    VddImageKey source_key;
    guint64 size;
    gboolean shrink;
    char *snapshot;
    const char *snapshot_op; /* "create", "revert" or "delete" */
    guint32 uid;             /* the caller's, for a snapshot's reply */
    char *nbdkit, *plugin;   /* ExportNbd: the server and vdisk's plugin */
} VolumeWork;

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void volume_work_free(VolumeWork *w)
{
    g_clear_pointer(&w->locks, vdd_lock_set_free);
    close_fd(&w->volume_fd);
    close_fd(&w->source_fd);
    close_fd(&w->fd);
    g_clear_pointer(&w->file, vdd_new_file_free);
    g_clear_object(&w->volume);
    g_clear_object(&w->target);
    g_clear_object(&w->source);
    vdd_image_key_clear(&w->key);
    vdd_image_key_clear(&w->source_key);
    g_free(w->volume_format);
    g_free(w->source_format);
    g_free(w->format);
    g_free(w->snapshot);
    g_free(w->nbdkit);
    g_free(w->plugin);
    g_clear_pointer(&w->create, vd_options_free);
    g_free(w);
}

static VolumeWork *volume_work_new(VddVolume *self)
{
    VolumeWork *w = g_new0(VolumeWork, 1);
    w->locks = vdd_lock_set_new();
    w->volume = g_object_ref(self);
    w->fd = w->volume_fd = w->source_fd = -1;
    return w;
}

/* Open this volume's file for the work (read-write for a job that writes
 * it). */
static gboolean open_volume_for(VolumeWork *w, GError **error)
{
    if (vdd_pool_is_rbd(w->volume->pool)) { /* the worker opens it through librbd */
        w->volume_format = g_strdup("raw");
        return TRUE;
    }
    w->volume_fd = open_for_job(w->volume, w->write ? O_RDWR : O_RDONLY, &w->volume_format, error);
    return w->volume_fd >= 0;
}

/* A volume as an image of a worker request (worker-client.h). */
static void request_volume(GVariantDict *d, const char *role, gint32 fd_index, gint32 folder,
                           VddVolume *v, const char *format, VdOpenFlags flags,
                           const VddImageKey *key)
{
    g_autofree char *label = vdd_pool_file_path(v->pool, v->name);
    vdd_worker_request_volume(d, role, fd_index, folder, format, v->name, label, flags,
                              key ? key->open : NULL, key ? key->secrets : NULL);
    if (vdd_pool_is_rbd(v->pool))
        vdd_worker_request_rbd(d, role, v->pool, v->name);
}

/* Add a volume's descriptor to a worker's fds: its index, or -1 for an
 * RBD image, which has none. */
static gint32 add_fd(int *fds, guint *n_fds, int fd)
{
    if (fd < 0)
        return -1;
    fds[*n_fds] = fd;
    return (gint32)(*n_fds)++;
}

/* Start the work's request in a worker, with fds, the volume's pool as
 * folder 0 (and other's as folder 1, may be NULL). */
static gboolean run_worker(GVariantDict *d, const int *fds, guint n_fds, VolumeWork *w,
                           VddPool *other, VddJob *job, GCancellable *cancellable, GError **error)
{
    VddPool *pools[] = { w->volume->pool, other, NULL };
    g_autoptr(GVariant) result =
        vdd_worker_run_job(g_variant_dict_end(d), fds, n_fds, pools, job, cancellable, error);
    return result != NULL;
}

/* Main thread, after the work: unlock, update or clean up. */
static void work_done(VddJob *job, gpointer data, const GError *error)
{
    VolumeWork *w = data;
    close_fd(&w->volume_fd); /* written back before the update */
    close_fd(&w->source_fd);
    vdd_lock_set_release(w->locks);
    if (w->target != NULL) {
        if (error != NULL) {
            /* Its file was never named: freeing the work removes it. */
            vdd_pool_remove_volume(w->volume->pool, w->target);
        } else {
            vdd_volume_update(w->target);
        }
    }
    /* An RBD clone took a snapshot of its source. */
    if (w->write || (w->target != NULL && vdd_pool_is_rbd(w->volume->pool)))
        vdd_volume_update(w->volume);
    vdd_pool_update_space(w->volume->pool);
}

static gboolean clone_run(VddJob *job, gpointer data, GCancellable *cancellable, GError **error)
{
    VolumeWork *w = data;
#if VDD_HAVE_RBD
    /* In an rbd pool a clone is an RBD clone (layering): a protected
     * snapshot of the source is its parent, and only what is written to
     * it later takes room. */
    if (vdd_pool_is_rbd(w->volume->pool))
        return vdd_rbd_pool_clone(vdd_pool_backend_rbd(vdd_pool_get_backend(w->volume->pool)),
                                  w->volume->name, w->target->name, error) &&
               vdd_new_file_publish(w->file, "raw", error);
#endif
    g_autofree char *path = vdd_pool_file_path(w->volume->pool, w->target->name);
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "operation", "s", "convert");
    /* In a logical pool the clone is a new LV as large as its source. */
    guint64 size = 0;
    if (vdd_new_file_is_lv(w->file) && ioctl(w->volume_fd, BLKGETSIZE64, &size) < 0) {
        vdd_error_set_errno(error, errno, "%s/%s", vdd_pool_get_name(w->volume->pool),
                            w->volume->name);
        return FALSE;
    }
    if (vdd_new_file_is_lv(w->file) && !vdd_new_file_make_lv(w->file, size, size, error))
        return FALSE;
    int fds[2];
    guint n_fds = 0;
    request_volume(&d, "source", add_fd(fds, &n_fds, w->volume_fd), 0, w->volume, w->volume_format,
                   0, &w->key);
    vdd_worker_request_target(&d, add_fd(fds, &n_fds, vdd_new_file_fd(w->file)), path,
                              w->target->name, 0, w->format, w->create, w->key.secrets);
    return run_worker(&d, fds, n_fds, w, NULL, job, cancellable, error) &&
           vdd_new_file_publish(w->file, w->format, error);
}

static gboolean export_run(VddJob *job, gpointer data, GCancellable *cancellable, GError **error)
{
    VolumeWork *w = data;
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "operation", "s", "convert");
    int fds[2];
    guint n_fds = 0;
    request_volume(&d, "source", add_fd(fds, &n_fds, w->volume_fd), 0, w->volume, w->volume_format,
                   0, &w->key);
    vdd_worker_request_target(&d, add_fd(fds, &n_fds, w->fd), "target", NULL,
                              VD_OPEN_NO_RELATED_FILES, w->format, w->create, w->key.secrets);
    gboolean ok = run_worker(&d, fds, n_fds, w, NULL, job, cancellable, error);
    /* As vd_convert_fd leaves it, also when the worker could not say so:
     * a target that failed never looks like a whole image. */
    if (!ok && ftruncate(w->fd, 0) < 0)
        g_warning("%s: export target: %s", w->volume->name, g_strerror(errno));
    return ok;
}

static gboolean copy_from_run(VddJob *job, gpointer data, GCancellable *cancellable, GError **error)
{
    VolumeWork *w = data;
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "operation", "s", "copy");
    int fds[2];
    guint n_fds = 0;
    request_volume(&d, "source", add_fd(fds, &n_fds, w->source_fd), 1, w->source, w->source_format,
                   0, &w->source_key);
    request_volume(&d, "target", add_fd(fds, &n_fds, w->volume_fd), 0, w->volume, w->volume_format,
                   0, &w->key);
    return run_worker(&d, fds, n_fds, w, w->source->pool, job, cancellable, error);
}

/* An LV is resized by LVM (lvresize, as libvirt's vol-resize): its raw
 * disk is the device, whatever its size. */
static gboolean resize_lv(VolumeWork *w, GError **error)
{
    guint64 now = 0;
    if (ioctl(w->volume_fd, BLKGETSIZE64, &now) < 0) {
        vdd_error_set_errno(error, errno, "%s/%s", vdd_pool_get_name(w->volume->pool),
                            w->volume->name);
        return FALSE;
    }
    if (w->size < now && !w->shrink) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "%s/%s: %" G_GUINT64_FORMAT " bytes is smaller than its %" G_GUINT64_FORMAT
                    "; shrinking loses the data past the new end and needs the shrink option",
                    vdd_pool_get_name(w->volume->pool), w->volume->name, w->size, now);
        return FALSE;
    }
    return vdd_pool_backend_resize(vdd_pool_get_backend(w->volume->pool), w->volume->name, w->size,
                                   w->size < now, error);
}

static gboolean resize_run(VddJob *job, gpointer data, GCancellable *cancellable, GError **error)
{
    VolumeWork *w = data;
    if (vdd_pool_is_logical(w->volume->pool))
        return resize_lv(w, error);
    /* An RBD image is the disk: librbd resizes it (refusing a shrink
     * without the shrink option). */
    if (vdd_pool_is_rbd(w->volume->pool))
        return vdd_pool_backend_resize(vdd_pool_get_backend(w->volume->pool), w->volume->name,
                                       w->size, w->shrink, error);
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "operation", "s", "resize");
    g_variant_dict_insert(&d, "size", "t", w->size);
    g_variant_dict_insert(&d, "shrink", "b", w->shrink);
    request_volume(&d, "target", 0, 0, w->volume, w->volume_format, 0, &w->key);
    return run_worker(&d, &w->volume_fd, 1, w, NULL, job, cancellable, error);
}

/* ExportNbd: the worker becomes nbdkit, serving the volume (with its
 * key, and its backing chain opened beneath the pool as for any job) on
 * the caller's listener (w->fd) until the job is cancelled. */
static gboolean export_nbd_run(VddJob *job, gpointer data, GCancellable *cancellable,
                               GError **error)
{
    VolumeWork *w = data;
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "operation", "s", "serve-nbd");
    request_volume(&d, "source", 0, 0, w->volume, w->volume_format,
                   w->write ? VD_OPEN_READ_WRITE : 0, &w->key);
    g_variant_dict_insert(&d, "listener", "i", 1);
    g_variant_dict_insert(&d, "readonly", "b", !w->write);
    g_variant_dict_insert(&d, "nbdkit", "s", w->nbdkit);
    g_variant_dict_insert(&d, "plugin", "s", w->plugin);
    GVariant *request = g_variant_dict_end(&d);
    /* The request holds the key now, wiped once the worker has it. */
    vdd_image_key_clear(&w->key);
    const int fds[] = { w->volume_fd, w->fd };
    return vdd_worker_serve(request, fds, 2, w->volume->pool, cancellable, error);
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
        vdd_dbus_volume_complete_export(self->iface, invocation, NULL,
                                        vdd_job_get_object_path(job));
    else if (g_str_equal(operation, "copy"))
        vdd_dbus_volume_complete_copy_from(self->iface, invocation, vdd_job_get_object_path(job));
    else if (g_str_equal(operation, "export-nbd"))
        vdd_dbus_volume_complete_export_nbd(self->iface, invocation, NULL,
                                            vdd_job_get_object_path(job));
    else
        vdd_dbus_volume_complete_resize(self->iface, invocation, vdd_job_get_object_path(job));
    if (g_str_equal(operation, "export-nbd"))
        vdd_job_start_server(job, func, work_done, w, (GDestroyNotify)volume_work_free);
    else
        vdd_job_start(job, func, work_done, w, (GDestroyNotify)volume_work_free);
    g_object_unref(job);
}

static void fail(VddVolume *self, GDBusMethodInvocation *invocation, guint32 uid, VolumeWork *w,
                 GError *error)
{
    g_autofree char *wh = what(self);
    if (w != NULL) {
        /* Its locks and its file go with w. */
        if (w->target != NULL)
            vdd_pool_remove_volume(self->pool, w->target);
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

/* The parameters of each method but its options (VddCall's), and what
 * rules see of them (rules.c). */

/* Clone */
typedef struct {
    const char *name;
    const char *format;
} CloneParams;

static void parse_clone(VddVolume *self, GVariant *args, CloneParams *p, VddCallSubject *s)
{
    g_variant_get(args, "(&s&s@a{sv})", &p->name, &p->format, NULL);
    s->pool = vdd_pool_get_name(self->pool);
    s->volume = p->name;
    s->format = p->format;
    s->source = self;
}

static void clone_volume(VddVolume *self, VddCall *call, const CloneParams *p)
{
    GDBusMethodInvocation *invocation = call->invocation;
    guint32 uid = call->uid;
    GVariant *options = call->options;
    const char *name = p->name, *format = p->format;
    GError *error = NULL;
    VolumeWork *w = copy_work_new(self, format, options, &error);
    if (w != NULL && (vdd_pool_is_logical(self->pool) || vdd_pool_is_rbd(self->pool)) &&
        !g_str_equal(format, "raw"))
        error = g_error_new(VDD_ERROR, VDD_ERROR_UNSUPPORTED_FORMAT,
                            "%s/%s: the volumes of %s pool are raw, not %s",
                            vdd_pool_get_name(self->pool), name,
                            vdd_pool_is_rbd(self->pool) ? "an rbd" : "a logical", format);
    if (w == NULL || error != NULL || !vdd_pool_check_new_name(self->pool, name, &error) ||
        !vdd_lock_set_read(w->locks, self, &error) || !open_volume_for(w, &error) ||
        (w->file = vdd_pool_new_file(self->pool, name, &error)) == NULL) {
        fail(self, invocation, uid, w, error);
        return;
    }
    w->target = g_object_ref(vdd_pool_add_volume(self->pool, name));
    /* Cannot fail: the volume is new. */
    vdd_lock_set_write(w->locks, w->target, NULL);
    start_job(self, invocation, uid, "clone", w, clone_run);
}

/* Export */
typedef struct {
    gint32 target;
    const char *format;
} ExportParams;

static void parse_export(VddVolume *self, GVariant *args, ExportParams *p, VddCallSubject *s)
{
    g_variant_get(args, "(h&s@a{sv})", &p->target, &p->format, NULL);
    s->pool = vdd_pool_get_name(self->pool);
    s->volume = self->name;
    s->format = p->format;
}

static void export(VddVolume *self, VddCall *call, const ExportParams *p)
{
    GDBusMethodInvocation *invocation = call->invocation;
    guint32 uid = call->uid;
    GVariant *options = call->options;
    gint32 handle = p->target;
    const char *format = p->format;
    GError *error = NULL;
    VolumeWork *w = copy_work_new(self, format, options, &error);
    if (w == NULL || (w->fd = vdd_caller_fd(invocation, handle, O_RDWR, "target", &error)) < 0 ||
        !vdd_lock_set_read(w->locks, self, &error) || !open_volume_for(w, &error)) {
        fail(self, invocation, uid, w, error);
        return;
    }
    start_job(self, invocation, uid, "export", w, export_run);
}

/* ExportNbd */
typedef struct {
    gint32 listener;
} ExportNbdParams;

static void parse_export_nbd(VddVolume *self, GVariant *args, ExportNbdParams *p, VddCallSubject *s)
{
    g_variant_get(args, "(h@a{sv})", &p->listener, NULL);
    s->pool = vdd_pool_get_name(self->pool);
    s->volume = self->name;
    s->source = self; /* read-volume too */
}

/* The caller's listening socket: a Unix stream socket in listening state,
 * dup'ed; -1 with InvalidArgument. vdiskd binds nothing itself. */
static int caller_listener(GDBusMethodInvocation *invocation, gint32 handle, GError **error)
{
    GUnixFDList *list =
        g_dbus_message_get_unix_fd_list(g_dbus_method_invocation_get_message(invocation));
    int fd = list != NULL && handle >= 0 && handle < g_unix_fd_list_get_length(list)
                 ? g_unix_fd_list_get(list, handle, NULL)
                 : -1;
    int type = 0, domain = 0, listening = 0;
    socklen_t len = sizeof type, dlen = sizeof domain, llen = sizeof listening;
    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &llen) < 0 || type != SOCK_STREAM ||
        domain != AF_UNIX || !listening) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "listener: handle %d is not a listening Unix stream socket", handle);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static void export_nbd(VddVolume *self, VddCall *call, const ExportNbdParams *p)
{
    GDBusMethodInvocation *invocation = call->invocation;
    guint32 uid = call->uid;
    GError *error = NULL;
    gboolean readonly = FALSE;
    VolumeWork *w = volume_work_new(self);
    if (!vdd_options_lookup_bool(call->options, "readonly", FALSE, &readonly, &error) ||
        !vdd_options_to_image_key(call->options, "volume-key-secret", &w->key, &error) ||
        !vdd_worker_nbdkit(&w->nbdkit, &w->plugin, &error)) {
        fail(self, invocation, uid, w, error);
        return;
    }
    w->write = !readonly;
    if (vdd_pool_is_rbd(self->pool)) {
        fail(self, invocation, uid, w,
             g_error_new(VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                         "an RBD image is served by its cluster: connect to it with rbd: "
                         "names (qemu's rbd driver), not through vdiskd"));
        return;
    }
    if ((w->fd = caller_listener(invocation, p->listener, &error)) < 0 ||
        !(w->write ? vdd_lock_set_write(w->locks, self, &error)
                   : vdd_lock_set_read(w->locks, self, &error)) ||
        !open_volume_for(w, &error)) {
        fail(self, invocation, uid, w, error);
        return;
    }
    start_job(self, invocation, uid, "export-nbd", w, export_nbd_run);
}

/* Resize */
typedef struct {
    guint64 size;
} ResizeParams;

static void parse_resize(VddVolume *self, GVariant *args, ResizeParams *p, VddCallSubject *s)
{
    g_variant_get(args, "(t@a{sv})", &p->size, NULL);
    s->pool = vdd_pool_get_name(self->pool);
    s->volume = self->name;
}

static void resize(VddVolume *self, VddCall *call, const ResizeParams *p)
{
    GDBusMethodInvocation *invocation = call->invocation;
    guint32 uid = call->uid;
    GVariant *options = call->options;
    VolumeWork *w = volume_work_new(self);
    w->size = p->size;
    GError *error = NULL;
    w->write = TRUE;
    if (!vdd_options_lookup_bool(options, "shrink", FALSE, &w->shrink, &error) ||
        !vdd_options_to_image_key(options, "volume-key-secret", &w->key, &error) ||
        !vdd_lock_set_write(w->locks, self, &error) || !open_volume_for(w, &error)) {
        fail(self, invocation, uid, w, error);
        return;
    }
    start_job(self, invocation, uid, "resize", w, resize_run);
}

/* CopyFrom: this volume's guest content replaced by another's, as qemu-img
 * convert -n writes into an existing image (libvirt's clone of an encrypted
 * volume creates the target first, then fills it this way). */
/* Lock both volumes and open them. */
static gboolean prepare_copy_from(VddVolume *self, VddVolume *source, VolumeWork *w,
                                  GVariant *options, GError **error)
{
    if (source == self) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "a volume cannot be copied onto itself");
        return FALSE;
    }
    if (!vdd_options_to_image_key(options, "volume-key-secret", &w->key, error) ||
        !vdd_options_to_image_key(options, "source-key-secret", &w->source_key, error) ||
        !vdd_lock_set_write(w->locks, self, error) || !vdd_lock_set_read(w->locks, source, error))
        return FALSE;
    w->write = TRUE;
    w->source = g_object_ref(source);
    if (!open_volume_for(w, error))
        return FALSE;
    if (vdd_pool_is_rbd(source->pool)) /* the worker opens it through librbd */
        w->source_format = g_strdup("raw");
    else if ((w->source_fd = open_for_job(source, O_RDONLY, &w->source_format, error)) < 0)
        return FALSE;
    /* As last described; the worker checks again on what it reads. */
    guint64 size = vdd_dbus_volume_get_virtual_size(self->iface);
    guint64 needed = vdd_dbus_volume_get_virtual_size(source->iface);
    if (size < needed) {
        g_autofree char *src = what(w->source);
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "%" G_GUINT64_FORMAT " bytes is smaller than %s (%" G_GUINT64_FORMAT
                    " bytes); resize it first",
                    size, src, needed);
        return FALSE;
    }
    return TRUE;
}

typedef struct {
    const char *source_path;
} CopyFromParams;

static void parse_copy_from(VddVolume *self, GVariant *args, CopyFromParams *p, VddCallSubject *s)
{
    g_variant_get(args, "(&o@a{sv})", &p->source_path, NULL);
    s->pool = vdd_pool_get_name(self->pool);
    s->volume = self->name;
    s->source = vdd_manager_lookup_volume(vdd_pool_get_manager(self->pool), p->source_path);
}

static void copy_from(VddVolume *self, VddCall *call, const CopyFromParams *p)
{
    GDBusMethodInvocation *invocation = call->invocation;
    guint32 uid = call->uid;
    VolumeWork *w = volume_work_new(self);
    VddVolume *source = vdd_manager_lookup_volume(call->manager, p->source_path);
    GError *error = NULL;
    if (source == NULL) {
        error = g_error_new(VDD_ERROR, VDD_ERROR_NOT_FOUND, "no volume %s", p->source_path);
    } else if (prepare_copy_from(self, source, w, call->options, &error)) {
        start_job(self, invocation, uid, "copy", w, copy_from_run);
        return;
    }
    fail(self, invocation, uid, w, error);
}

/* Snapshots: short, but in a worker on a thread all the same (a revert
 * can write). */
static void snapshot_thread(GTask *task, gpointer source, gpointer data, GCancellable *c)
{
    VolumeWork *w = data;
    GError *error = NULL;
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "operation", "s", "snapshot");
    g_variant_dict_insert(&d, "snapshot-op", "s", w->snapshot_op);
    g_variant_dict_insert(&d, "snapshot", "s", w->snapshot);
    int fds[1];
    guint n_fds = 0;
    request_volume(&d, "target", add_fd(fds, &n_fds, w->volume_fd), 0, w->volume, w->volume_format,
                   0, NULL);
    gboolean ok = run_worker(&d, fds, n_fds, w, NULL, NULL, NULL, &error);
    close_fd(&w->volume_fd);
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
    guint32 uid = w->uid;
    vdd_lock_set_release(w->locks);
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

typedef struct {
    const char *name;
} SnapshotParams;

static void parse_snapshot(VddVolume *self, GVariant *args, SnapshotParams *p, VddCallSubject *s)
{
    g_variant_get(args, "(&s@a{sv})", &p->name, NULL);
    s->pool = vdd_pool_get_name(self->pool);
    s->volume = self->name;
    s->snapshot = p->name;
}

/* CreateSnapshot, RevertSnapshot and DeleteSnapshot. */
static void snapshot(VddVolume *self, VddCall *call, const SnapshotParams *p)
{
    GDBusMethodInvocation *invocation = call->invocation;
    guint32 uid = call->uid;
    const char *method = call->rule->method;
    VolumeWork *w = volume_work_new(self);
    w->snapshot = g_strdup(p->name);
    w->snapshot_op = g_str_equal(method, "CreateSnapshot")   ? "create"
                     : g_str_equal(method, "RevertSnapshot") ? "revert"
                                                             : "delete";
    GError *error = NULL;
    if (*w->snapshot == '\0') {
        fail(self, invocation, uid, w,
             g_error_new(VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT, "snapshot name is empty"));
        return;
    }
    w->write = TRUE;
    if (!vdd_lock_set_write(w->locks, self, &error) || !open_volume_for(w, &error)) {
        fail(self, invocation, uid, w, error);
        return;
    }
    w->uid = uid;
    g_autoptr(GTask) task = g_task_new(self, NULL, snapshot_done, g_object_ref(invocation));
    g_task_set_task_data(task, w, (GDestroyNotify)volume_work_free);
    g_task_run_in_thread(task, snapshot_thread);
}

/* CreateOverlay: a small qcow2 over this volume, made by a worker (which
 * reads this volume's header for the size) on the job pool; the call is
 * answered once it exists. */
typedef struct {
    VddVolume *self;
    VddLockSet *locks; /* self, read-locked */
    GDBusMethodInvocation *invocation;
    guint32 uid;
    char *name;
    VdOptions *create;
    VddNewFile *file;
    GError *error;
} Overlay;

static void overlay_run(gpointer data)
{
    Overlay *o = data;
    g_autofree char *path = vdd_pool_file_path(o->self->pool, o->name);
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "operation", "s", "create");
    g_variant_dict_insert(&d, "size", "t", (guint64)0);
    vdd_worker_request_target(&d, 0, path, o->name, 0, "qcow2", o->create, NULL);
    const int fd = vdd_new_file_fd(o->file);
    VddPool *pools[] = { o->self->pool, NULL };
    g_autoptr(GVariant) result =
        vdd_worker_run_job(g_variant_dict_end(&d), &fd, 1, pools, NULL, NULL, &o->error);
    if (result != NULL)
        vdd_new_file_publish(o->file, "qcow2", &o->error);
}

static void overlay_done(gpointer data)
{
    Overlay *o = data;
    VddVolume *self = o->self;
    vdd_lock_set_release(o->locks);
    if (o->error != NULL) {
        fail(self, o->invocation, o->uid, NULL, g_steal_pointer(&o->error));
    } else {
        VddVolume *vol = vdd_pool_add_volume(self->pool, o->name);
        vdd_volume_update(vol);
        vdd_pool_update_space(self->pool);
        g_autofree char *wh =
            g_strdup_printf("%s/%s over %s", vdd_pool_get_name(self->pool), o->name, self->name);
        vdd_log_operation(o->invocation, o->uid, wh, NULL);
        vdd_dbus_volume_complete_create_overlay(self->iface, o->invocation, vol->path);
    }
    g_clear_pointer(&o->file, vdd_new_file_free);
    g_clear_pointer(&o->create, vd_options_free);
    vdd_lock_set_free(o->locks);
    g_object_unref(o->invocation);
    g_object_unref(o->self);
    g_free(o->name);
    g_free(o);
}

typedef struct {
    const char *name;
} CreateOverlayParams;

static void parse_create_overlay(VddVolume *self, GVariant *args, CreateOverlayParams *p,
                                 VddCallSubject *s)
{
    g_variant_get(args, "(&s@a{sv})", &p->name, NULL);
    s->pool = vdd_pool_get_name(self->pool);
    s->volume = p->name;
    s->format = "qcow2";
    s->source = self;
}

static void create_overlay(VddVolume *self, VddCall *call, const CreateOverlayParams *p)
{
    GDBusMethodInvocation *invocation = call->invocation;
    guint32 uid = call->uid;
    const char *name = p->name;
    GError *error = NULL;
    g_autoptr(VdOptions) create = vdd_options_to_create(call->options, "qcow2", NULL, &error);
    const char *format = vdd_dbus_volume_get_format(self->iface);
    if (create == NULL) {
        fail(self, invocation, uid, NULL, error);
        return;
    }
    if (format == NULL || *format == '\0') {
        fail(self, invocation, uid, NULL, unreadable(self));
        return;
    }
    if (vdd_pool_is_logical(self->pool) || vdd_pool_is_rbd(self->pool)) {
        fail(self, invocation, uid, NULL,
             g_error_new(VDD_ERROR, VDD_ERROR_UNSUPPORTED_FORMAT,
                         "%s/%s: %s pool's volumes are raw: a qcow2 overlay cannot be one",
                         vdd_pool_get_name(self->pool), name,
                         vdd_pool_is_rbd(self->pool) ? "an rbd" : "a logical"));
        return;
    }
    vd_options_set(create, "backing_file", self->name);
    vd_options_set(create, "backing_fmt", format);
    g_autoptr(VddLockSet) locks = vdd_lock_set_new();
    g_autoptr(VddNewFile) file = NULL;
    if (!vdd_lock_set_read(locks, self, &error) ||
        (file = vdd_pool_new_file(self->pool, name, &error)) == NULL) {
        fail(self, invocation, uid, NULL, error);
        return;
    }
    Overlay *o = g_new0(Overlay, 1);
    o->self = g_object_ref(self);
    o->invocation = g_object_ref(invocation);
    o->uid = uid;
    o->name = g_strdup(name);
    o->create = g_steal_pointer(&create);
    o->file = g_steal_pointer(&file);
    o->locks = g_steal_pointer(&locks);
    vdd_job_run_work(invocation, uid, overlay_run, overlay_done, o);
}

/* Delete */
typedef struct {
    char none;
} DeleteParams;

static void parse_delete(VddVolume *self, GVariant *args, DeleteParams *p, VddCallSubject *s)
{
    s->pool = vdd_pool_get_name(self->pool);
    s->volume = self->name;
}

/* An RBD image is removed off the main loop: librbd removes each of its
 * objects, which takes long for a large image without an object map. */
static void remove_thread(GTask *task, gpointer source, gpointer data, GCancellable *c)
{
    VddVolume *self = source;
    GError *error = NULL;
    if (vdd_pool_backend_remove(vdd_pool_get_backend(self->pool), self->name, &error))
        g_task_return_boolean(task, TRUE);
    else
        g_task_return_error(task, error);
}

static void removed(GObject *source, GAsyncResult *res, gpointer data)
{
    VddVolume *self = VDD_VOLUME(source);
    g_autoptr(GDBusMethodInvocation) invocation = data;
    guint32 uid = GPOINTER_TO_UINT(g_task_get_task_data(G_TASK(res)));
    GError *error = NULL;
    vdd_volume_unlock_write(self);
    if (!g_task_propagate_boolean(G_TASK(res), &error)) {
        fail(self, invocation, uid, NULL, error);
        return;
    }
    g_autofree char *wh = what(self);
    vdd_log_operation(invocation, uid, wh, NULL);
    vdd_dbus_volume_complete_delete(self->iface, invocation);
    VddPool *pool = self->pool;
    vdd_pool_remove_volume(pool, self);
    /* A clone's parent lost the snapshot the clone was made of: the
     * pool is read again (off the main loop). */
    vdd_pool_refresh(pool);
}

static void delete (VddVolume *self, VddCall *call, const DeleteParams *p)
{
    GDBusMethodInvocation *invocation = call->invocation;
    guint32 uid = call->uid;
    GError *error = NULL;
    if (vdd_volume_is_locked(self)) {
        fail(self, invocation, uid, NULL,
             g_error_new(VDD_ERROR, VDD_ERROR_BUSY, "a job is using it"));
        return;
    }
    if (vdd_pool_is_rbd(self->pool)) {
        /* Held until removed: no job starts on it meanwhile. */
        if (!vdd_volume_lock_write(self, &error)) {
            fail(self, invocation, uid, NULL, error);
            return;
        }
        g_autoptr(GTask) task = g_task_new(self, NULL, removed, g_object_ref(invocation));
        g_task_set_task_data(task, GUINT_TO_POINTER(uid), NULL);
        g_task_run_in_thread(task, remove_thread);
        return;
    }
    if (!vdd_pool_backend_remove(vdd_pool_get_backend(self->pool), self->name, &error)) {
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

static const VddMethod volume_methods[] = {
    VDD_METHOD("Clone", CloneParams, parse_clone, clone_volume),
    VDD_METHOD("Export", ExportParams, parse_export, export),
    VDD_METHOD("ExportNbd", ExportNbdParams, parse_export_nbd, export_nbd),
    VDD_METHOD("Resize", ResizeParams, parse_resize, resize),
    VDD_METHOD("CopyFrom", CopyFromParams, parse_copy_from, copy_from),
    VDD_METHOD("CreateSnapshot", SnapshotParams, parse_snapshot, snapshot),
    VDD_METHOD("RevertSnapshot", SnapshotParams, parse_snapshot, snapshot),
    VDD_METHOD("DeleteSnapshot", SnapshotParams, parse_snapshot, snapshot),
    VDD_METHOD("CreateOverlay", CreateOverlayParams, parse_create_overlay, create_overlay),
    VDD_METHOD("Delete", DeleteParams, parse_delete, delete),
};

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
    vdd_call_serve(self->iface, vdd_pool_get_manager(pool), self, volume_methods,
                   G_N_ELEMENTS(volume_methods));
    vdd_dbus_object_skeleton_set_volume(self->object, self->iface);
    vdd_volume_update(self);
    return self;
}
