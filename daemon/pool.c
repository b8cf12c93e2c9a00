#include "pool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "call.h"
#include "errors.h"
#include "job.h"
#include "locks.h"
#include "names.h"
#include "options.h"
#include "pool-backend.h"
#if VDD_HAVE_RBD
#include "pool-backend-rbd.h"
#endif
#include "vdd-dbus.h"
#include "vdisk-names.h"
#include "volume-formats.h"
#include "volume.h"
#include "worker-client.h"

struct _VddPool {
    GObject parent;
    VddManager *manager; /* not owned: the manager outlives its pools */
    char *name;
    char *directory;
    char *path;
    int dirfd;
    VddDbusObjectSkeleton *object;
    VddDbusPool *iface;
    GHashTable *volumes; /* name -> VddVolume */
    VddFormatRecords *formats;
    VddPoolBackend *backend; /* where its volumes live */
    /* rbd: scanning the Ceph pool (off the main loop), another scan asked
     * for meanwhile, the Refresh calls that wait for it, and the images
     * found while they are applied. */
    gboolean scanning, rescan;
    GPtrArray *waiting_refresh;
    struct RbdScan *scan;
};

G_DEFINE_TYPE(VddPool, vdd_pool, G_TYPE_OBJECT)

static void vdd_pool_finalize(GObject *obj)
{
    VddPool *self = VDD_POOL(obj);
    g_hash_table_unref(self->volumes);
    g_clear_pointer(&self->waiting_refresh, g_ptr_array_unref);
    vdd_format_records_free(self->formats);
    vdd_pool_backend_free(self->backend);
    if (self->dirfd >= 0)
        close(self->dirfd);
    g_clear_object(&self->iface);
    g_clear_object(&self->object);
    g_free(self->name);
    g_free(self->directory);
    g_free(self->path);
    G_OBJECT_CLASS(vdd_pool_parent_class)->finalize(obj);
}

static void vdd_pool_class_init(VddPoolClass *klass)
{
    G_OBJECT_CLASS(klass)->finalize = vdd_pool_finalize;
}

static void vdd_pool_init(VddPool *self)
{
    self->dirfd = -1;
    self->volumes = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_object_unref);
}

const char *vdd_pool_get_name(VddPool *self) { return self->name; }
const char *vdd_pool_get_directory(VddPool *self) { return self->directory; }
const char *vdd_pool_get_object_path(VddPool *self) { return self->path; }
VddManager *vdd_pool_get_manager(VddPool *self) { return self->manager; }
int vdd_pool_get_dirfd(VddPool *self) { return self->dirfd; }
VddFormatRecords *vdd_pool_get_format_records(VddPool *self) { return self->formats; }
VddPoolBackend *vdd_pool_get_backend(VddPool *self) { return self->backend; }
gboolean vdd_pool_is_logical(VddPool *self)
{
    return vdd_pool_backend_type(self->backend) == VDD_POOL_LOGICAL;
}
gboolean vdd_pool_is_rbd(VddPool *self)
{
    return vdd_pool_backend_type(self->backend) == VDD_POOL_RBD;
}

/* An rbd pool whose cluster vdiskd has not reached (yet). */
static gboolean unavailable(VddPool *self)
{
#if VDD_HAVE_RBD
    return vdd_pool_is_rbd(self) && !vdd_rbd_pool_is_connected(vdd_pool_backend_rbd(self->backend));
#else
    return FALSE;
#endif
}

char *vdd_pool_file_path(VddPool *self, const char *name)
{
    return g_build_filename(self->directory, name, NULL);
}

VddVolume *vdd_pool_lookup_volume(VddPool *self, const char *name)
{
    return g_hash_table_lookup(self->volumes, name);
}

static void publish_volumes(VddPool *self)
{
    g_autoptr(GList) names = g_hash_table_get_keys(self->volumes);
    names = g_list_sort(names, (GCompareFunc)g_strcmp0);
    g_autoptr(GPtrArray) paths = g_ptr_array_new();
    for (GList *l = names; l; l = l->next)
        g_ptr_array_add(paths, (gpointer)vdd_volume_get_object_path(
                                   g_hash_table_lookup(self->volumes, l->data)));
    g_ptr_array_add(paths, NULL);
    vdd_dbus_pool_set_volumes(self->iface, (const char *const *)paths->pdata);
}

void vdd_pool_unexport(VddPool *self)
{
    GDBusObjectManagerServer *om = vdd_manager_get_object_manager(self->manager);
    GHashTableIter it;
    gpointer vol;
    g_hash_table_iter_init(&it, self->volumes);
    while (g_hash_table_iter_next(&it, NULL, &vol))
        g_dbus_object_manager_server_unexport(om, vdd_volume_get_object_path(vol));
    g_dbus_object_manager_server_unexport(om, self->path);
    /* Volumes hold their pool: dropping them here ends that cycle. A job
     * still running on one keeps it, and so the pool and its directory
     * descriptor, until the job is done. */
    g_hash_table_remove_all(self->volumes);
}

/* Every change to a pool's volumes ends here, so this is also where the
 * ones who mirror the pool (libvirt) hear of it. */
#if VDD_HAVE_RBD
typedef struct {
    guint64 capacity, available;
} Space;

static void space_thread(GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
    Space *space = g_new0(Space, 1);
    GError *error = NULL;
    if (vdd_rbd_pool_space(data, &space->capacity, &space->available, &error))
        g_task_return_pointer(task, space, g_free);
    else {
        g_free(space);
        g_task_return_error(task, error);
    }
}

static void space_read(GObject *source, GAsyncResult *res, gpointer data)
{
    VddPool *self = VDD_POOL(source);
    g_autoptr(GError) error = NULL;
    g_autofree Space *space = g_task_propagate_pointer(G_TASK(res), &error);
    if (space == NULL) {
        g_warning("%s", error->message);
        return;
    }
    vdd_dbus_pool_set_capacity(self->iface, space->capacity);
    vdd_dbus_pool_set_available(self->iface, space->available);
}
#endif

void vdd_pool_update_space(VddPool *self)
{
    vdd_manager_pool_changed(self->manager, self);
    guint64 capacity, available;
    g_autoptr(GError) error = NULL;
    if (unavailable(self))
        return;
#if VDD_HAVE_RBD
    /* The cluster is asked off the main loop. */
    if (vdd_pool_is_rbd(self)) {
        g_autoptr(GTask) task = g_task_new(self, NULL, space_read, NULL);
        g_task_set_task_data(task, vdd_pool_backend_rbd(self->backend), NULL);
        g_task_run_in_thread(task, space_thread);
        return;
    }
#endif
    if (vdd_pool_backend_space(self->backend, &capacity, &available, &error)) {
        vdd_dbus_pool_set_capacity(self->iface, capacity);
        vdd_dbus_pool_set_available(self->iface, available);
    } else if (vdd_pool_is_logical(self) || vdd_pool_is_rbd(self)) {
        g_warning("pool %s: %s", self->name, error->message);
    }
}

VddVolume *vdd_pool_add_volume(VddPool *self, const char *name)
{
    VddVolume *vol = vdd_pool_lookup_volume(self, name);
    if (vol != NULL)
        return vol;
    vol = vdd_volume_new(self, name);
    g_hash_table_insert(self->volumes, g_strdup(name), vol);
    g_dbus_object_manager_server_export(vdd_manager_get_object_manager(self->manager),
                                        vdd_volume_get_object(vol));
    publish_volumes(self);
    return vol;
}

void vdd_pool_remove_volume(VddPool *self, VddVolume *volume)
{
    g_dbus_object_manager_server_unexport(vdd_manager_get_object_manager(self->manager),
                                          vdd_volume_get_object_path(volume));
    g_hash_table_remove(self->volumes, vdd_volume_get_name(volume));
    publish_volumes(self);
}

/* The pid in a new file's hidden name: vdiskd's ".NAME.partial-PID-N", or
 * the shim's ".NAME.partial-PID" (a copy into another pool on a file
 * system without O_TMPFILE); 0 for any other name. */
static pid_t partial_file_pid(const char *name)
{
    const char *mark = g_strrstr(name, ".partial-");
    if (name[0] != '.' || mark == NULL)
        return 0;
    g_auto(GStrv) parts = g_strsplit(mark + strlen(".partial-"), "-", 3);
    guint n = g_strv_length(parts);
    guint64 pid, serial;
    if (n < 1 || n > 2 || !g_ascii_string_to_unsigned(parts[0], 10, 1, G_MAXINT, &pid, NULL) ||
        (n == 2 && !g_ascii_string_to_unsigned(parts[1], 10, 0, G_MAXINT, &serial, NULL)))
        return 0;
    return (pid_t)pid;
}

/* Is pid a vdiskd or a shim that may still be writing (this vdiskd, or
 * another program of ours running meanwhile)? */
static gboolean writer_is_running(pid_t pid)
{
    if (pid == getpid())
        return TRUE;
    g_autofree char *comm_path = g_strdup_printf("/proc/%d/comm", (int)pid);
    g_autofree char *comm = NULL;
    if (!g_file_get_contents(comm_path, &comm, NULL, NULL))
        return FALSE;
    g_strstrip(comm);
    /* comm is cut at 15 bytes: "vdisk-qemu-img" fits. */
    return g_str_equal(comm, "vdiskd") || g_str_equal(comm, "vdisk-qemu-img");
}

/* A vdiskd that crashed or was killed mid-import (or a shim killed
 * mid-copy) left its hidden partial files behind: they were never
 * volumes, and nobody will finish them. */
static void remove_stale_partial_files(VddPool *self)
{
    int fd = openat(self->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (dir == NULL) {
        if (fd >= 0)
            close(fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        pid_t pid = partial_file_pid(de->d_name);
        struct stat st;
        if (pid == 0 || writer_is_running(pid) ||
            fstatat(self->dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (unlinkat(self->dirfd, de->d_name, 0) == 0)
            g_message("pool %s: removed %s, left by an import that never finished", self->name,
                      de->d_name);
    }
    closedir(dir);
}

/* ----- an rbd pool's cluster ----- */

/* What a scan of an rbd pool found: every image's name, and the size and
 * snapshots of those it could read. */
typedef struct RbdScan {
    GHashTable *names;  /* set of names */
    GHashTable *images; /* name -> RbdImage */
    guint64 capacity, available;
    gboolean have_space;
} RbdScan;

typedef struct {
    guint64 size, allocated;
    char **snapshots;
} RbdImage;

#if VDD_HAVE_RBD
static void rbd_image_free(RbdImage *i)
{
    g_strfreev(i->snapshots);
    g_free(i);
}

static void rbd_scan_free(RbdScan *scan)
{
    g_clear_pointer(&scan->names, g_hash_table_unref);
    g_clear_pointer(&scan->images, g_hash_table_unref);
    g_free(scan);
}
#endif

gboolean vdd_pool_rbd_scanned(VddPool *self, const char *name, guint64 *size, guint64 *allocated,
                              const char *const **snapshots)
{
    RbdImage *i = self->scan != NULL ? g_hash_table_lookup(self->scan->images, name) : NULL;
    if (i == NULL)
        return FALSE;
    *size = i->size;
    *allocated = i->allocated;
    *snapshots = (const char *const *)i->snapshots;
    return TRUE;
}

/* Make the volumes those of the listing: gone ones go (unless a job is
 * making them right now), new ones come, the others are read again. */
static void apply_listing(VddPool *self, GHashTable *files)
{
    g_autoptr(GList) current = g_hash_table_get_values(self->volumes);
    for (GList *l = current; l; l = l->next) {
        VddVolume *vol = l->data;
        if (!g_hash_table_contains(files, vdd_volume_get_name(vol)) && !vdd_volume_is_locked(vol))
            vdd_pool_remove_volume(self, vol);
    }
    GHashTableIter it;
    gpointer name;
    g_hash_table_iter_init(&it, files);
    while (g_hash_table_iter_next(&it, &name, NULL)) {
        VddVolume *vol = vdd_pool_lookup_volume(self, name);
        if (vol == NULL)
            vol = vdd_pool_add_volume(self, name); /* reads the header */
        else if (!vdd_volume_is_locked(vol))
            vdd_volume_update(vol);
    }
}

#if VDD_HAVE_RBD
/* Connect (once) and read the pool: every request blocks on the network,
 * up to the Ceph timeouts, so none runs on the main loop. */
static void scan_thread(GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
    VddRbdPool *rbd = data;
    GError *error = NULL;
    GHashTable *names = NULL;
    if (!vdd_rbd_pool_connect(rbd, &error) || (names = vdd_rbd_pool_list(rbd, &error)) == NULL) {
        g_task_return_error(task, error);
        return;
    }
    RbdScan *scan = g_new0(RbdScan, 1);
    scan->names = names;
    scan->images =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)rbd_image_free);
    GHashTableIter it;
    gpointer name;
    g_hash_table_iter_init(&it, names);
    while (g_hash_table_iter_next(&it, &name, NULL)) {
        RbdImage *i = g_new0(RbdImage, 1);
        /* One that cannot be read now is read again, saying why, when it
         * is published. */
        if (vdd_rbd_pool_stat(rbd, name, &i->size, &i->allocated, &i->snapshots, NULL))
            g_hash_table_insert(scan->images, g_strdup(name), i);
        else
            rbd_image_free(i);
    }
    scan->have_space = vdd_rbd_pool_space(rbd, &scan->capacity, &scan->available, NULL);
    g_task_return_pointer(task, scan, (GDestroyNotify)rbd_scan_free);
}

static void scan_rbd(VddPool *self, GDBusMethodInvocation *invocation);

static void scanned(GObject *source, GAsyncResult *res, gpointer data)
{
    VddPool *self = VDD_POOL(source);
    g_autoptr(GError) error = NULL;
    RbdScan *scan = g_task_propagate_pointer(G_TASK(res), &error);
    gboolean was_available = g_str_equal(vdd_dbus_pool_get_error(self->iface), "");
    self->scanning = FALSE;
    if (scan == NULL) {
        if (was_available || !g_str_equal(vdd_dbus_pool_get_error(self->iface), error->message))
            g_warning("%s", error->message);
        vdd_dbus_pool_set_error(self->iface, error->message);
    } else {
        if (!was_available)
            g_message("pool %s: connected to the Ceph cluster", self->name);
        vdd_dbus_pool_set_error(self->iface, "");
        self->scan = scan;
        apply_listing(self, scan->names);
        self->scan = NULL;
        if (scan->have_space) {
            vdd_dbus_pool_set_capacity(self->iface, scan->capacity);
            vdd_dbus_pool_set_available(self->iface, scan->available);
        }
        vdd_manager_pool_changed(self->manager, self);
        rbd_scan_free(scan);
    }
    /* A Refresh that came during the scan is answered after the next. */
    if (self->rescan) {
        self->rescan = FALSE;
        scan_rbd(self, NULL);
        return;
    }
    g_autoptr(GPtrArray) waiting = g_steal_pointer(&self->waiting_refresh);
    for (guint i = 0; waiting != NULL && i < waiting->len; i++)
        vdd_dbus_pool_complete_refresh(self->iface, waiting->pdata[i]);
}

/* Scan an rbd pool off the main loop, connecting first if need be, then
 * publish what it found; invocation (may be NULL) is a Refresh call
 * answered once that is done. */
static void scan_rbd(VddPool *self, GDBusMethodInvocation *invocation)
{
    if (invocation != NULL) {
        if (self->waiting_refresh == NULL)
            self->waiting_refresh = g_ptr_array_new();
        g_ptr_array_add(self->waiting_refresh, invocation);
    }
    if (self->scanning) {
        self->rescan = self->rescan || invocation != NULL;
        return;
    }
    self->scanning = TRUE;
    g_autoptr(GTask) task = g_task_new(self, NULL, scanned, NULL);
    g_task_set_task_data(task, vdd_pool_backend_rbd(self->backend), NULL);
    g_task_run_in_thread(task, scan_thread);
}
#endif

void vdd_pool_refresh(VddPool *self)
{
#if VDD_HAVE_RBD
    if (vdd_pool_is_rbd(self)) {
        scan_rbd(self, NULL);
        return;
    }
#endif
    g_autoptr(GHashTable) files = vdd_pool_backend_list(self->backend);
    apply_listing(self, files);
    vdd_pool_update_space(self);
}

gboolean vdd_pool_check_new_name(VddPool *self, const char *name, GError **error)
{
    if (!vdd_name_is_valid(name, "volume", error))
        return FALSE;
    if (vdd_pool_lookup_volume(self, name) != NULL ||
        vdd_pool_backend_exists(self->backend, name)) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_EXISTS, "%s/%s exists already", self->name, name);
        return FALSE;
    }
    return TRUE;
}

struct VddNewFile {
    VddPool *pool;
    char *name;
    char *hidden;
    int fd;
    gboolean published;
    /* In a logical pool the volume is an LV, made by the job once its size
     * is known (vdd_new_file_make_lv) and removed again unless published. */
    gboolean lv;
    gboolean lv_made;
};

VddNewFile *vdd_pool_new_file(VddPool *self, const char *name, GError **error)
{
    static gint serial;
    if (!vdd_pool_check_new_name(self, name, error))
        return NULL;
    if (vdd_pool_is_logical(self) || vdd_pool_is_rbd(self)) {
        VddNewFile *file = g_new0(VddNewFile, 1);
        file->pool = g_object_ref(self);
        file->name = g_strdup(name);
        file->fd = -1;
        file->lv = TRUE;
        return file;
    }
    /* The pid and a serial keep two jobs (or two vdiskd) apart; the name is
     * cut so that the hidden one stays within NAME_MAX. */
    g_autofree char *hidden =
        g_strdup_printf(".%.200s.partial-%d-%d", name, (int)getpid(), g_atomic_int_add(&serial, 1));
    /* 0600 whatever the umask, as libvirt makes volumes: a VM's disk is
     * its owner's, not every local user's. */
    int fd = openat(self->dirfd, hidden, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        vdd_error_set_errno(error, errno, "%s/%s", self->name, name);
        return NULL;
    }
    VddNewFile *file = g_new0(VddNewFile, 1);
    file->pool = g_object_ref(self);
    file->name = g_strdup(name);
    file->hidden = g_steal_pointer(&hidden);
    file->fd = fd;
    return file;
}

int vdd_new_file_fd(VddNewFile *file) { return file->fd; }
gboolean vdd_new_file_is_lv(VddNewFile *file) { return file->lv; }

gboolean vdd_new_file_make_lv(VddNewFile *file, guint64 size, guint64 zero_from, GError **error)
{
    VddPoolBackend *b = file->pool->backend;
    if (!vdd_pool_backend_create(b, file->name, size, error))
        return FALSE;
    file->lv_made = TRUE;
    /* A new RBD image reads as zeroes, and the worker writes it through
     * librbd: there is no descriptor. */
    if (vdd_pool_is_rbd(file->pool))
        return TRUE;
    file->fd = vdd_pool_backend_open(b, file->name, O_RDWR, error);
    if (file->fd < 0)
        return FALSE;
    /* A new LV holds what its extents held before (another volume's
     * data): what the copy does not write is zeroed by the device. */
    guint64 end = 0;
    if (ioctl(file->fd, BLKGETSIZE64, &end) < 0) {
        vdd_error_set_errno(error, errno, "%s/%s", file->pool->name, file->name);
        return FALSE;
    }
    zero_from = zero_from / 512 * 512;
    if (zero_from < end) {
        guint64 range[2] = { zero_from, end - zero_from };
        if (ioctl(file->fd, BLKZEROOUT, range) < 0) {
            vdd_error_set_errno(error, errno, "%s/%s: cannot zero the new logical volume",
                                file->pool->name, file->name);
            return FALSE;
        }
    }
    return TRUE;
}

gboolean vdd_new_file_publish(VddNewFile *file, const char *format, GError **error)
{
    if (file->lv) { /* an LV has its name from the start; it is raw */
        file->published = TRUE;
        return TRUE;
    }
    int dirfd = file->pool->dirfd;
    struct stat st;
    if (fstat(file->fd, &st) < 0) {
        vdd_error_set_errno(error, errno, "%s/%s", file->pool->name, file->name);
        return FALSE;
    }
    if (vd_rename_noreplace(dirfd, file->hidden, dirfd, file->name) < 0) {
        vdd_error_set_errno(error, errno, "%s/%s", file->pool->name, file->name);
        return FALSE;
    }
    if (!vdd_pool_sync_directory(file->pool, error)) {
        unlinkat(dirfd, file->name, 0);
        return FALSE;
    }
    file->published = TRUE;
    vdd_format_records_set(file->pool->formats, file->name, &st, format);
    return TRUE;
}

void vdd_new_file_free(VddNewFile *file)
{
    if (file == NULL)
        return;
    if (file->fd >= 0)
        close(file->fd);
    g_autoptr(GError) error = NULL;
    if (file->lv && file->lv_made && !file->published) {
        gboolean removed;
#if VDD_HAVE_RBD
        /* Its worker, killed on a cancel, may still hold its lock. */
        if (vdd_pool_is_rbd(file->pool))
            removed = vdd_rbd_pool_remove_abandoned(vdd_pool_backend_rbd(file->pool->backend),
                                                    file->name, &error);
        else
#endif
            removed = vdd_pool_backend_remove(file->pool->backend, file->name, &error);
        if (!removed)
            g_warning("%s", error->message);
    }
    if (!file->published && !file->lv)
        unlinkat(file->pool->dirfd, file->hidden, 0);
    g_object_unref(file->pool);
    g_free(file->name);
    g_free(file->hidden);
    g_free(file);
}

gboolean vdd_pool_sync_directory(VddPool *self, GError **error)
{
    /* Some file systems cannot sync a directory (EINVAL); their entries are
     * as durable as they get. LVM keeps its own metadata durable. */
    if (vdd_pool_is_logical(self) || vdd_pool_is_rbd(self))
        return TRUE;
    if (fsync(self->dirfd) < 0 && errno != EINVAL) {
        vdd_error_set_errno(error, errno, "pool %s: cannot sync its directory", self->name);
        return FALSE;
    }
    return TRUE;
}

/* ----- work shared by CreateVolume and ImportVolume ----- */

typedef struct {
    VddPool *pool;
    VddLockSet *locks; /* the volume (write), its backing volume (read) */
    VddVolume *volume;
    VddNewFile *file;
    char *name;
    char *format;
    guint64 size;
    VdOptions *create;
    VdSecrets *secrets; /* that encrypt.key-secret names, or NULL */
    int source_fd;      /* import: the caller's file, opened by the job */
    guint32 uid;        /* the caller's */
    char *source_format;
    /* import: the caller's files the source reads through (its parents,
     * nearest first), by their names beneath the folder of the caller's
     * files (chain_names, NULL-terminated) and descriptors (chain_fds). */
    GPtrArray *chain_names;
    GArray *chain_fds;
    /* import: the other files the source and its parents name (a split
     * vmdk's extents), by their names there, and descriptors. */
    GPtrArray *related_names;
    GArray *related_fds;
    gint32 appliance_disk; /* import: the disk of an OVA source, or -1 */
    char *misbehave;       /* test hooks only: what the worker is to try */
    /* import: the volume of the pool the new qcow2 is an overlay of
     * (backing-volume), opened and locked, and its name; or -1. */
    int backing_fd;
    char *backing_name;
    /* import: the source is a connected socket to an NBD server, and this
     * the name of the export on it (nbd-export); or NULL. */
    char *nbd_export;
} NewVolumeWork;

static void new_volume_work_free(NewVolumeWork *w)
{
    g_clear_pointer(&w->locks, vdd_lock_set_free);
    g_clear_pointer(&w->file, vdd_new_file_free);
    g_clear_object(&w->volume);
    g_clear_object(&w->pool);
    g_free(w->name);
    g_free(w->format);
    g_clear_pointer(&w->create, vd_options_free);
    if (w->source_fd >= 0)
        close(w->source_fd);
    g_free(w->source_format);
    for (guint i = 0; w->chain_fds != NULL && i < w->chain_fds->len; i++)
        close(g_array_index(w->chain_fds, int, i));
    g_clear_pointer(&w->chain_fds, g_array_unref);
    g_clear_pointer(&w->chain_names, g_ptr_array_unref);
    for (guint i = 0; w->related_fds != NULL && i < w->related_fds->len; i++)
        close(g_array_index(w->related_fds, int, i));
    g_clear_pointer(&w->related_fds, g_array_unref);
    g_clear_pointer(&w->related_names, g_ptr_array_unref);
    g_free(w->misbehave);
    if (w->backing_fd >= 0)
        close(w->backing_fd);
    g_free(w->backing_name);
    g_free(w->nbd_export);
    g_clear_pointer(&w->secrets, vd_secrets_free);
    g_free(w);
}

/* What the folder of an import's chain is called in messages; the source
 * is CHAIN_SOURCE in it, parent N is "parent-N/NAME". Nothing by these
 * names exists anywhere: the worker gets the caller's descriptors. */
#define CHAIN_FOLDER "caller's files"
#define CHAIN_SOURCE "source"
#define MAX_CHAIN 64
/* A split vmdk has an extent per 2 GiB: 256 cover 512 GiB. Queued jobs
 * hold their descriptors, and a user's ten jobs of this many stay well
 * within vdiskd's 4096 (LimitNOFILE) for everyone else's. */
#define MAX_RELATED 256
/* ova.c reads no more members than this. */
#define MAX_APPLIANCE_DISKS 10000

/* A new volume is made by a worker (worker-client.h) that holds the new
 * file and, for an import, the caller's file; a backing volume the options
 * name is opened for it beneath the pool, and the parents of an imported
 * file only among the caller's files of its chain. */
/* The virtual size of an import's source, as a worker reads it (vdiskd
 * parses no image): what a new LV must hold. */
static gboolean source_size(NewVolumeWork *w, VddJob *job, GCancellable *cancellable, guint64 *size,
                            GError **error)
{
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    vdd_worker_request_caller_file(&d, "describe", w->uid, w->source_format, "source",
                                   VD_OPEN_NO_RELATED_FILES | VD_OPEN_NO_BACKING);
    g_autoptr(GVariant) result = vdd_worker_run_job(g_variant_dict_end(&d), &w->source_fd, 1, NULL,
                                                    NULL, cancellable, error);
    if (result == NULL)
        return FALSE;
    g_autoptr(GVariant) info = g_variant_lookup_value(result, "info", G_VARIANT_TYPE_VARDICT);
    if (info == NULL || !g_variant_lookup(info, "virtual-size", "t", size) || *size == 0) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_FAILED, "source: its virtual size is unknown");
        return FALSE;
    }
    return TRUE;
}

static gboolean create_run(VddJob *job, gpointer data, GCancellable *cancellable, GError **error)
{
    NewVolumeWork *w = data;
    g_autofree char *path = vdd_pool_file_path(w->pool, w->name);
    gboolean import = w->source_fd >= 0;
    /* An LV is made as large as the source (or the size asked) before the
     * worker writes it, as lvcreate then qemu-img convert -n would. */
    if (vdd_new_file_is_lv(w->file)) {
        guint64 size = w->size;
        if ((import && !source_size(w, job, cancellable, &size, error)) ||
            !vdd_new_file_make_lv(w->file, size, import ? size : 0, error))
            return FALSE;
    }
    /* A new RBD image is whole once made; an import fills it. */
    gboolean rbd = vdd_pool_is_rbd(w->pool);
    if (rbd && !import)
        return vdd_new_file_publish(w->file, w->format, error);
    gboolean caller_folder = w->chain_names != NULL || w->related_names != NULL;
    g_autoptr(GHashTable) files = g_hash_table_new(g_str_hash, g_str_equal);
    /* Its files are named in errors as the caller named them. */
    VddWorkerFolder chain = { -1, CHAIN_FOLDER, files, "" };
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    if (import && caller_folder) {
        for (guint i = 0; w->chain_fds != NULL && i < w->chain_fds->len; i++)
            g_hash_table_insert(files, w->chain_names->pdata[i],
                                GINT_TO_POINTER(g_array_index(w->chain_fds, int, i)));
        for (guint i = 0; w->related_fds != NULL && i < w->related_fds->len; i++)
            g_hash_table_insert(files, w->related_names->pdata[i],
                                GINT_TO_POINTER(g_array_index(w->related_fds, int, i)));
        /* Folder 0 is the pool's (the target's), 1 the caller's files. */
        vdd_worker_request_caller_chain(
            &d, "convert", w->uid, w->source_format, 1, CHAIN_SOURCE,
            w->chain_names != NULL ? (const char *const *)w->chain_names->pdata : NULL);
        /* Every extent of a split disk is open at once. */
        g_variant_dict_insert(&d, "open-files", "t", (guint64)g_hash_table_size(files));
    } else if (import) {
        vdd_worker_request_caller_file(&d, "convert", w->uid, w->source_format, "source",
                                       VD_OPEN_NO_RELATED_FILES);
        if (w->appliance_disk >= 0)
            vdd_worker_request_appliance_disk(&d, w->appliance_disk);
        if (w->nbd_export != NULL)
            vdd_worker_request_nbd_source(&d, w->nbd_export);
    } else
        g_variant_dict_insert(&d, "operation", "s", "create");
    g_variant_dict_insert(&d, "size", "t", w->size);
    /* The engine syncs the new file; publishing names it and syncs that. */
    int fds[3];
    guint n_fds = 0;
    if (import)
        fds[n_fds++] = w->source_fd;
    fds[n_fds] = vdd_new_file_fd(w->file);
    vdd_worker_request_target(&d, rbd ? -1 : (gint32)n_fds, path, w->name, 0, w->format, w->create,
                              w->secrets);
    if (rbd)
        vdd_worker_request_rbd(&d, "target", w->pool, w->name);
    else
        n_fds++;
    /* An overlay of a volume: the worker gets the file opened and locked
     * here, and copies only what the top of the source holds. */
    if (w->backing_fd >= 0) {
        g_autofree char *label = vdd_pool_file_path(w->pool, w->backing_name);
        fds[n_fds] = w->backing_fd;
        vdd_worker_request_volume(&d, "backing", (gint32)n_fds++, 0, "qcow2", w->backing_name,
                                  label, 0, NULL, NULL);
    }
    if (w->misbehave != NULL)
        g_variant_dict_insert(&d, "misbehave", "s", w->misbehave);
    g_autoptr(GVariant) result = vdd_worker_run_job_with_files(
        g_variant_dict_end(&d), fds, n_fds, (VddPool *[]){ w->pool, NULL },
        caller_folder ? &chain : NULL, job, cancellable, error);
    if (result == NULL && import && !caller_folder && w->appliance_disk < 0 &&
        w->nbd_export == NULL && error != NULL &&
        g_error_matches(*error, VD_ERROR, VD_ERROR_NOT_FOUND))
        g_prefix_error(error, "a parent was not found; pass the image's parents in the \"chain\" "
                              "option (vdiskctl import finds them): ");
    return result != NULL && vdd_new_file_publish(w->file, w->format, error);
}

static void create_done(VddJob *job, gpointer data, const GError *error)
{
    NewVolumeWork *w = data;
    vdd_lock_set_release(w->locks);
    if (error != NULL) {
        /* Its file was never named: freeing the work removes it. */
        vdd_pool_remove_volume(w->pool, w->volume);
    } else {
        vdd_volume_update(w->volume);
    }
    vdd_pool_update_space(w->pool);
}

/* Lock the backing volume and create the file for a checked request.
 * checked is the backing volume the call was checked to read (the
 * volume the options named when it came, new_backing_of), or NULL. */
static gboolean prepare_new_volume(VddPool *self, NewVolumeWork *w, VddVolume *checked,
                                   GError **error)
{
    const char *backing = vd_options_get(w->create, "backing_file");
    if (!vdd_check_target_files(w->format, w->create, error))
        return FALSE;
    if (backing != NULL) {
        if (!vdd_name_is_valid(backing, "backing volume", error))
            return FALSE;
        VddVolume *b = vdd_pool_lookup_volume(self, backing);
        if (b == NULL) {
            g_set_error(error, VDD_ERROR, VDD_ERROR_NOT_FOUND,
                        "backing volume %s/%s does not exist", self->name, backing);
            return FALSE;
        }
        if (b != checked) {
            g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                        "backing volume %s/%s is not the one the call was checked for: give "
                        "the backing file once",
                        self->name, backing);
            return FALSE;
        }
        if (!vdd_lock_set_read(w->locks, b, error))
            return FALSE;
    }
    w->file = vdd_pool_new_file(self, w->name, error);
    return w->file != NULL;
}

/* Start a create/import job for a checked request; replies to invocation. */
static void start_new_volume(VddPool *self, GDBusMethodInvocation *invocation, guint32 uid,
                             NewVolumeWork *w, VddVolume *checked_backing, const char *operation)
{
    GError *error = NULL;
    g_autofree char *what = g_strdup_printf("%s/%s (%s)", self->name, w->name, w->format);
    if (!prepare_new_volume(self, w, checked_backing, &error)) {
        new_volume_work_free(w);
        vdd_return_error(invocation, uid, what, error);
        return;
    }
    w->volume = g_object_ref(vdd_pool_add_volume(self, w->name));
    /* Cannot fail: the volume is new. */
    vdd_lock_set_write(w->locks, w->volume, NULL);
    const char *objects[] = { vdd_volume_get_object_path(w->volume), NULL };
    VddJob *job = vdd_job_new(self->manager, invocation, operation, uid, objects);
    vdd_log_operation(invocation, uid, what, NULL);
    if (g_str_equal(operation, "import"))
        vdd_dbus_pool_complete_import_volume(self->iface, invocation, NULL,
                                             vdd_volume_get_object_path(w->volume),
                                             vdd_job_get_object_path(job));
    else
        vdd_dbus_pool_complete_create_volume(self->iface, invocation,
                                             vdd_volume_get_object_path(w->volume),
                                             vdd_job_get_object_path(job));
    vdd_job_start(job, create_run, create_done, w, (GDestroyNotify)new_volume_work_free);
    g_object_unref(job);
}

static NewVolumeWork *new_work(VddPool *self, const char *name, const char *format)
{
    NewVolumeWork *w = g_new0(NewVolumeWork, 1);
    w->pool = g_object_ref(self);
    w->locks = vdd_lock_set_new();
    w->name = g_strdup(name);
    w->format = g_strdup(format);
    w->source_fd = -1;
    w->appliance_disk = -1;
    w->backing_fd = -1;
    return w;
}

/* The parameters of each method but its options (VddCall's). */
typedef struct {
    const char *name;
    const char *format;
    guint64 size;
    VddVolume *backing; /* what the backing option named, checked; or NULL */
} CreateVolumeParams;

/* The options of a call that are vdiskd's, not the engine's create
 * options. "misbehave": the tests of the worker (vdd_worker_test_misbehave). */
static const char *const create_daemon_keys[] = { "secrets", NULL };
static const char *const import_daemon_keys[] = { "source-format",  "secrets",        "chain",
                                                  "related-files",  "appliance-disk", "misbehave",
                                                  "backing-volume", "nbd-export",     NULL };

/* The volume of this pool that a new volume's create options name as its
 * backing file (backing, backing-file), read as the handler reads them,
 * or NULL. The new volume reads through it: the call is checked with
 * read-volume on it, as CreateOverlay is on the volume it covers. */
static VddVolume *new_backing_of(VddPool *self, GVariant *options, const char *format,
                                 const char *const *daemon_keys)
{
    g_autoptr(VdOptions) create = vdd_options_to_create(options, format, daemon_keys, NULL);
    const char *name = create != NULL ? vd_options_get(create, "backing_file") : NULL;
    return name != NULL ? vdd_pool_lookup_volume(self, name) : NULL;
}

static void parse_create_volume(VddPool *self, GVariant *args, CreateVolumeParams *p,
                                VddCallSubject *s)
{
    g_autoptr(GVariant) options = NULL;
    g_variant_get(args, "(&s&st@a{sv})", &p->name, &p->format, &p->size, &options);
    s->pool = self->name;
    s->volume = p->name;
    s->format = p->format;
    p->backing = s->source = new_backing_of(self, options, p->format, create_daemon_keys);
}

/* A logical pool's volumes are LVs that hold a raw disk, each made whole
 * by one copy: no backing volume, and a source that is one plain file or
 * a chain of them. */
static gboolean check_logical(VddPool *self, const char *name, const char *format,
                              GVariant *options, GError **error)
{
    static const char *const unsupported[] = { "backing",
                                               "backing-file",
                                               "backing-volume",
                                               "related-files",
                                               "nbd-export",
                                               "appliance-disk",
                                               NULL };
    if (!vdd_pool_is_logical(self) && !vdd_pool_is_rbd(self))
        return TRUE;
    const char *type = vdd_pool_type_to_string(vdd_pool_backend_type(self->backend));
    if (!g_str_equal(format, "raw")) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_UNSUPPORTED_FORMAT,
                    "%s/%s: the volumes of %s %s pool are raw, not %s", self->name, name,
                    vdd_pool_is_rbd(self) ? "an" : "a", type, format);
        return FALSE;
    }
#if VDD_HAVE_RBD
    if (vdd_pool_is_rbd(self) &&
        !vdd_rbd_pool_check_name(vdd_pool_backend_rbd(self->backend), name, error))
        return FALSE;
#endif
    for (guint i = 0; unsupported[i] != NULL; i++) {
        g_autoptr(GVariant) v = g_variant_lookup_value(options, unsupported[i], NULL);
        if (v != NULL) {
            g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                        "%s/%s: %s is not supported in %s %s pool", self->name, name,
                        unsupported[i], vdd_pool_is_rbd(self) ? "an" : "a", type);
            return FALSE;
        }
    }
    return TRUE;
}

static void create_volume(VddPool *self, VddCall *call, const CreateVolumeParams *p)
{
    GDBusMethodInvocation *invocation = call->invocation;
    guint32 uid = call->uid;
    GVariant *options = call->options;
    const char *name = p->name, *format = p->format;
    GError *error = NULL;
    NewVolumeWork *w = new_work(self, name, format);
    w->size = p->size;
    if (!vdd_pool_check_new_name(self, name, &error) || !vdd_check_format(format, &error) ||
        !check_logical(self, name, format, options, &error) ||
        (w->create = vdd_options_to_create(options, format, create_daemon_keys, &error)) == NULL ||
        !vdd_options_lookup_secrets(options, &w->secrets, &error)) {
        g_autofree char *what = g_strdup_printf("%s/%s", self->name, name);
        new_volume_work_free(w);
        vdd_return_error(invocation, uid, what, error);
        return;
    }
    start_new_volume(self, invocation, uid, w, p->backing, "create");
}

typedef struct {
    gint32 source;
    const char *name;
    const char *format;
    /* The volume "backing-volume" named when the call came, which the
     * caller was checked to read (rules.c), or NULL. */
    VddVolume *backing;
} ImportVolumeParams;

/* The "chain" option, a(sh): each parent of the source, nearest first,
 * by the name the caller found it under (relative to the source's folder)
 * and a descriptor the caller opened. Each must be a regular file open
 * for reading; it becomes "parent-N/NAME" (NAME the name's last part)
 * among the caller's files, the only files the worker may have opened. */
static gboolean take_chain(NewVolumeWork *w, GDBusMethodInvocation *invocation, GVariant *options,
                           GError **error)
{
    g_autoptr(GVariant) chain = g_variant_lookup_value(options, "chain", NULL);
    if (chain == NULL)
        return TRUE;
    if (!g_variant_is_of_type(chain, G_VARIANT_TYPE("a(sh)"))) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "option chain must be of type a(sh), not %s", g_variant_get_type_string(chain));
        return FALSE;
    }
    gsize n = g_variant_n_children(chain);
    if (n == 0 || n > MAX_CHAIN) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "option chain must name from 1 to %d parents, not %zu", MAX_CHAIN, n);
        return FALSE;
    }
    w->chain_names = g_ptr_array_new_with_free_func(g_free);
    w->chain_fds = g_array_new(FALSE, FALSE, sizeof(int));
    for (gsize i = 0; i < n; i++) {
        const char *name;
        gint32 handle;
        g_variant_get_child(chain, i, "(&sh)", &name, &handle);
        g_autofree char *base = g_path_get_basename(name);
        g_autofree char *what = g_strdup_printf("chain parent %zu (%s)", i + 1, name);
        if (*name == '\0' || g_str_has_suffix(name, "/") || g_str_equal(base, ".") ||
            g_str_equal(base, "..") || !g_utf8_validate(base, -1, NULL)) {
            g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT, "%s: not the name of a file",
                        what);
            return FALSE;
        }
        int fd = vdd_caller_fd(invocation, handle, O_RDONLY, what, error);
        if (fd < 0)
            return FALSE;
        g_array_append_val(w->chain_fds, fd);
        g_ptr_array_add(w->chain_names, g_strdup_printf("parent-%zu/%s", i + 1, base));
    }
    g_ptr_array_add(w->chain_names, NULL);
    return TRUE;
}

/* A related file's name as its image gives it, relative to the image's
 * folder: the name the engine then asks for, with "." and empty parts
 * taken out; NULL when it is absolute or climbs out of the folder. */
static char *related_name(const char *name)
{
    if (*name == '\0' || g_path_is_absolute(name) || !g_utf8_validate(name, -1, NULL) ||
        strlen(name) > PATH_MAX)
        return NULL;
    g_auto(GStrv) parts = g_strsplit(name, "/", -1);
    g_autoptr(GStrvBuilder) kept = g_strv_builder_new();
    guint n = 0;
    for (guint i = 0; parts[i] != NULL; i++) {
        if (g_str_equal(parts[i], ".."))
            return NULL;
        if (*parts[i] != '\0' && !g_str_equal(parts[i], ".")) {
            g_strv_builder_add(kept, parts[i]);
            n++;
        }
    }
    g_auto(GStrv) v = g_strv_builder_end(kept);
    return n > 0 ? g_strjoinv("/", v) : NULL;
}

/* One file of "related-files": image (0 the source, N its Nth parent in
 * chain) names it name; fd is the caller's descriptor (taken). Added as
 * NAME or "parent-N/NAME" among the caller's files, unless seen. */
static gboolean take_related_file(NewVolumeWork *w, GHashTable *seen, guint32 image,
                                  const char *name, int fd, GError **error)
{
    guint parents = w->chain_names != NULL ? w->chain_names->len - 1 : 0;
    g_autofree char *what =
        g_strdup_printf("related file %u (%s)", w->related_names->len + 1, name);
    g_autofree char *rel = image <= parents ? related_name(name) : NULL;
    if (image > parents)
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "%s: image %u is neither the source (0) nor one of its %u parents in "
                    "\"chain\"",
                    what, image, parents);
    else if (rel == NULL)
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "%s: not a name inside its image's folder", what);
    if (rel == NULL) {
        close(fd);
        return FALSE;
    }
    char *key = image == 0 ? g_steal_pointer(&rel) : g_strdup_printf("parent-%u/%s", image, rel);
    g_ptr_array_add(w->related_names, key);
    if (!g_hash_table_add(seen, key)) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT, "%s: that name is given twice",
                    what);
        close(fd);
        return FALSE;
    }
    if ((fd = vdd_caller_fd_check(fd, O_RDONLY, what, error)) < 0)
        return FALSE;
    g_array_append_val(w->related_fds, fd);
    return TRUE;
}

/* The caller's socket of "related-files": a Unix SOCK_SEQPACKET socket
 * (dup'ed), or -1 with an error. */
static int related_socket(GDBusMethodInvocation *invocation, gint32 handle, GError **error)
{
    GUnixFDList *list =
        g_dbus_message_get_unix_fd_list(g_dbus_method_invocation_get_message(invocation));
    int fd = list != NULL && handle >= 0 && handle < g_unix_fd_list_get_length(list)
                 ? g_unix_fd_list_get(list, handle, NULL)
                 : -1;
    int type = 0, domain = 0;
    socklen_t len = sizeof type, dlen = sizeof domain;
    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) < 0 || type != SOCK_SEQPACKET ||
        domain != AF_UNIX) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "option related-files: handle %d is not a Unix SOCK_SEQPACKET socket", handle);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Packets of "related-files": an a(us) and as many descriptors, at most
 * SCM_MAX_FD (253) of them, in a few KiB. */
#define RELATED_PACKET_BYTES (64 * 1024)
#define RELATED_PACKET_FDS 253

/* Read sock's packets, all sent before the call, without waiting. */
static gboolean receive_related_files(NewVolumeWork *w, int sock, GHashTable *seen, GError **error)
{
    g_autofree guint8 *data = g_malloc(RELATED_PACKET_BYTES);
    for (;;) {
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(sizeof(int) * RELATED_PACKET_FDS)];
        } control;
        struct iovec iov = { data, RELATED_PACKET_BYTES };
        struct msghdr m = { .msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = control.buf,
                            .msg_controllen = sizeof control.buf };
        ssize_t n = recvmsg(sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        int err = errno;
        int fds[RELATED_PACKET_FDS];
        guint n_fds = 0;
        for (struct cmsghdr *c = n >= 0 ? CMSG_FIRSTHDR(&m) : NULL; c != NULL;
             c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                continue;
            guint k = (guint)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (guint i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                if (n_fds < RELATED_PACKET_FDS)
                    fds[n_fds++] = fd;
                else
                    close(fd);
            }
        }
        if (n == 0 && n_fds == 0)
            break; /* the caller's end is closed: all was sent */
        g_autoptr(GVariant) entries = NULL;
        /* Every packet carries a file: no more packets than files, so a
         * caller writing on cannot keep the main loop reading. */
        if (n > 0 && n_fds > 0 && !(m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
            g_autoptr(GBytes) bytes = g_bytes_new(data, (gsize)n);
            entries =
                g_variant_ref_sink(g_variant_new_from_bytes(G_VARIANT_TYPE("a(us)"), bytes, FALSE));
            if (!g_variant_is_normal_form(entries) || g_variant_n_children(entries) != n_fds)
                g_clear_pointer(&entries, g_variant_unref);
        }
        if (entries == NULL || w->related_names->len + n_fds > MAX_RELATED) {
            if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK))
                g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                            "option related-files: the socket's files must all be sent, and its "
                            "other end closed, before the call");
            else if (n < 0)
                vdd_error_set_errno(error, err, "option related-files");
            else if (entries != NULL)
                g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                            "option related-files must pass from 1 to %d files", MAX_RELATED);
            else
                g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                            "option related-files: each packet is an a(us) of its 1 to %d "
                            "descriptors, one entry for each",
                            RELATED_PACKET_FDS);
            for (guint i = 0; i < n_fds; i++)
                close(fds[i]);
            return FALSE;
        }
        for (guint i = 0; i < n_fds; i++) {
            guint32 image;
            const char *name;
            g_variant_get_child(entries, i, "(u&s)", &image, &name);
            if (!take_related_file(w, seen, image, name, fds[i], error)) {
                for (guint j = i + 1; j < n_fds; j++)
                    close(fds[j]);
                return FALSE;
            }
        }
    }
    if (w->related_names->len == 0) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "option related-files must pass from 1 to %d files", MAX_RELATED);
        return FALSE;
    }
    return TRUE;
}

/* The "related-files" option, h: the other files the source (image 0) and
 * its parents in "chain" (image N, the chain's Nth) name besides their
 * parents (a split vmdk's extents), more than a D-Bus message may carry
 * (16 descriptors on the system bus). The handle is a Unix SOCK_SEQPACKET
 * socket (one end of a socketpair) on which the caller sent, before the
 * call, packets of an a(us) (image, the name that image gives the file)
 * with as many descriptors (SCM_RIGHTS), and then closed its end: vdiskd
 * reads them all without waiting. Each descriptor is a regular file open
 * for reading; among the caller's files it lies beside its image: NAME
 * for the source, "parent-N/NAME" for parent N. Names must be relative,
 * stay in their image's folder and be given once. */
static gboolean take_related_files(NewVolumeWork *w, GDBusMethodInvocation *invocation,
                                   GVariant *options, GError **error)
{
    g_autoptr(GVariant) related = g_variant_lookup_value(options, "related-files", NULL);
    if (related == NULL)
        return TRUE;
    if (!g_variant_is_of_type(related, G_VARIANT_TYPE_HANDLE)) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "option related-files must be of type h, not %s",
                    g_variant_get_type_string(related));
        return FALSE;
    }
    int sock = related_socket(invocation, g_variant_get_handle(related), error);
    if (sock < 0)
        return FALSE;
    w->related_names = g_ptr_array_new_with_free_func(g_free);
    w->related_fds = g_array_new(FALSE, FALSE, sizeof(int));
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
    for (guint i = 0; w->chain_names != NULL && i + 1 < w->chain_names->len; i++)
        g_hash_table_add(seen, w->chain_names->pdata[i]);
    g_hash_table_add(seen, (gpointer)CHAIN_SOURCE);
    gboolean ok = receive_related_files(w, sock, seen, error);
    close(sock);
    return ok;
}

/* The "appliance-disk" option, i: the source is an OVA appliance and the
 * disk to read is its Nth disk member (from 0, in archive order). It
 * names no other file, so it goes with no chain or related files. */
static gboolean take_appliance_disk(NewVolumeWork *w, GVariant *options, const char *source_format,
                                    GError **error)
{
    g_autoptr(GVariant) disk = g_variant_lookup_value(options, "appliance-disk", NULL);
    if (disk == NULL)
        return TRUE;
    if (!g_variant_is_of_type(disk, G_VARIANT_TYPE_INT32)) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "option appliance-disk must be of type i, not %s",
                    g_variant_get_type_string(disk));
        return FALSE;
    }
    gint32 index = g_variant_get_int32(disk);
    if (index < 0 || index >= MAX_APPLIANCE_DISKS) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "option appliance-disk must be from 0 to %d, not %d", MAX_APPLIANCE_DISKS - 1,
                    index);
        return FALSE;
    }
    if (source_format != NULL && !g_str_equal(source_format, "ova")) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "option appliance-disk reads an OVA appliance, not a source of format %s",
                    source_format);
        return FALSE;
    }
    if (w->chain_names != NULL || w->related_names != NULL) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "option appliance-disk goes with no chain or related-files: a disk inside an "
                    "appliance names no other file");
        return FALSE;
    }
    w->appliance_disk = index;
    return TRUE;
}

/* The "backing-volume" option, s: a qcow2 volume of this pool that the
 * new qcow2 is an overlay of, so that only what the top of the source
 * holds is copied (a VM's snapshot kept as a layer of its own).
 * authorised is the volume of that name when the call came, which the
 * caller was checked to read: the name must still be it. It is opened
 * here as a job opens a volume (beneath the pool, no link followed, a
 * regular file, locked shared), read-locked with its chain, and passed
 * to the worker; the new file names it by its name, both lying in the
 * pool's folder. */
static gboolean take_backing_volume(VddPool *self, NewVolumeWork *w, GVariant *options,
                                    VddVolume *authorised, GError **error)
{
    const char *name;
    if (!vdd_options_lookup_string(options, "backing-volume", &name, error))
        return FALSE;
    if (name == NULL)
        return TRUE;
    if (!vdd_name_is_valid(name, "backing volume", error))
        return FALSE;
    if (!g_str_equal(w->format, "qcow2") || vd_options_get(w->create, "backing_file") != NULL) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "option backing-volume makes a qcow2 overlay: the format must be qcow2, "
                    "and no backing file be given besides");
        return FALSE;
    }
    VddVolume *b = vdd_pool_lookup_volume(self, name);
    if (b == NULL || b != authorised) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_NOT_FOUND, "backing volume %s/%s does not exist",
                    self->name, name);
        return FALSE;
    }
    g_autofree char *format = NULL;
    if (!vdd_lock_set_read(w->locks, b, error) ||
        (w->backing_fd = vdd_volume_open_for_job(b, O_RDONLY, &format, error)) < 0)
        return FALSE;
    if (!g_str_equal(format, "qcow2")) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "backing volume %s/%s is %s; an overlay is made on a qcow2 volume", self->name,
                    name, format);
        return FALSE;
    }
    w->backing_name = g_strdup(name);
    return TRUE;
}

/* The "nbd-export" option, s: the source is not a file but a stream
 * socket the caller connected to an NBD server (with its own rights and
 * network: vdiskd, without a network of its own, never dials an address
 * a caller names), and this is the export's name ("" the default one).
 * The worker speaks NBD on the socket and reads the export as the raw
 * disk it serves; a source-format other than raw, and every option that
 * names more files, are refused. The socket is checked here (connected,
 * Unix or IP, stream) and taken as the source. */
static gboolean take_nbd_source(NewVolumeWork *w, GDBusMethodInvocation *invocation,
                                GVariant *options, gint32 handle, const char *source_format,
                                GError **error)
{
    const char *name;
    if (!vdd_options_lookup_string(options, "nbd-export", &name, error))
        return FALSE;
    if (name == NULL)
        return TRUE;
    static const char *const files_options[] = { "chain", "related-files", "appliance-disk",
                                                 "backing-volume", NULL };
    for (guint i = 0; files_options[i] != NULL; i++) {
        g_autoptr(GVariant) v = g_variant_lookup_value(options, files_options[i], NULL);
        if (v != NULL) {
            g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                        "option nbd-export goes without %s: an NBD export is one disk",
                        files_options[i]);
            return FALSE;
        }
    }
    if (source_format != NULL && !g_str_equal(source_format, "raw")) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "option nbd-export reads the disk the server exports, raw, not a source of "
                    "format %s",
                    source_format);
        return FALSE;
    }
    /* NBD limits export names to 4096 bytes of UTF-8. */
    if (strlen(name) > 4096 || !g_utf8_validate(name, -1, NULL)) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "option nbd-export: not an NBD export name (UTF-8, at most 4096 bytes)");
        return FALSE;
    }
    if ((w->source_fd = vdd_caller_socket(invocation, handle, "source", error)) < 0)
        return FALSE;
    w->nbd_export = g_strdup(name);
    return TRUE;
}

static void parse_import_volume(VddPool *self, GVariant *args, ImportVolumeParams *p,
                                VddCallSubject *s)
{
    g_autoptr(GVariant) options = NULL;
    g_variant_get(args, "(h&s&s@a{sv})", &p->source, &p->name, &p->format, &options);
    s->pool = self->name;
    s->volume = p->name;
    s->format = p->format;
    /* The volume an overlay is made on is read by the job: checked with
     * read-volume, as CreateOverlay checks the volume it covers. */
    const char *backing;
    if (g_variant_lookup(options, "backing-volume", "&s", &backing))
        p->backing = s->source = vdd_pool_lookup_volume(self, backing);
    else
        p->backing = s->source = new_backing_of(self, options, p->format, import_daemon_keys);
}

static void import_volume(VddPool *self, VddCall *call, const ImportVolumeParams *p)
{
    GDBusMethodInvocation *invocation = call->invocation;
    guint32 uid = call->uid;
    GVariant *options = call->options;
    gint32 handle = p->source;
    const char *name = p->name, *format = p->format;
    GError *error = NULL;
    const char *source_format = NULL;
    NewVolumeWork *w = new_work(self, name, format);
    if (!vdd_pool_check_new_name(self, name, &error) || !vdd_check_format(format, &error) ||
        !check_logical(self, name, format, options, &error) ||
        !vdd_options_lookup_string(options, "source-format", &source_format, &error) ||
        (w->create = vdd_options_to_create(options, format, import_daemon_keys, &error)) == NULL ||
        !vdd_options_lookup_secrets(options, &w->secrets, &error) ||
        !take_nbd_source(w, invocation, options, handle, source_format, &error) ||
        (w->nbd_export == NULL &&
         (w->source_fd = vdd_caller_fd(invocation, handle, O_RDONLY, "source", &error)) < 0) ||
        !take_chain(w, invocation, options, &error) ||
        !take_related_files(w, invocation, options, &error) ||
        !take_appliance_disk(w, options, source_format, &error) ||
        !take_backing_volume(self, w, options, p->backing, &error)) {
        g_autofree char *what = g_strdup_printf("%s/%s", self->name, name);
        new_volume_work_free(w);
        vdd_return_error(invocation, uid, what, error);
        return;
    }
    w->source_format = g_strdup(source_format);
    w->uid = uid;
    w->misbehave = vdd_worker_test_misbehave(options);
    start_new_volume(self, invocation, uid, w, p->backing, "import");
}

typedef struct {
    char none;
} RefreshParams;

static void parse_refresh(VddPool *self, GVariant *args, RefreshParams *p, VddCallSubject *s)
{
    s->pool = self->name;
}

static void refresh(VddPool *self, VddCall *call, const RefreshParams *p)
{
    vdd_log_operation(call->invocation, call->uid, self->name, NULL);
#if VDD_HAVE_RBD
    if (vdd_pool_is_rbd(self)) {
        scan_rbd(self, call->invocation);
        return;
    }
#endif
    vdd_pool_refresh(self);
    vdd_dbus_pool_complete_refresh(self->iface, call->invocation);
}

static const VddMethod pool_methods[] = {
    VDD_METHOD("CreateVolume", CreateVolumeParams, parse_create_volume, create_volume),
    VDD_METHOD("ImportVolume", ImportVolumeParams, parse_import_volume, import_volume),
    VDD_METHOD("Refresh", RefreshParams, parse_refresh, refresh),
};

/* Put a pool on the bus and list its volumes; the backend is the pool's. */
static VddPool *export_pool(VddManager *manager, const char *name, const char *directory, int dirfd,
                            VddPoolBackend *backend)
{
    VddPool *self = g_object_new(VDD_TYPE_POOL, NULL);
    self->manager = manager;
    self->name = g_strdup(name);
    /* An rbd pool's "rbd:CEPHPOOL" is no path. */
    self->directory = vdd_pool_backend_type(backend) == VDD_POOL_RBD
                          ? g_strdup(directory)
                          : g_canonicalize_filename(directory, NULL);
    self->dirfd = dirfd;
    self->backend = backend;
    self->formats = vdd_format_records_load(self->directory);
    g_autofree char *escaped = vdd_name_escape(name);
    self->path = g_strdup_printf(VDISK_POOLS_PATH "/%s", escaped);
    self->object = vdd_dbus_object_skeleton_new(self->path);
    self->iface = vdd_dbus_pool_skeleton_new();
    vdd_dbus_pool_set_name(self->iface, name);
    vdd_dbus_pool_set_directory(self->iface, self->directory);
    vdd_dbus_pool_set_type_(self->iface, vdd_pool_type_to_string(vdd_pool_backend_type(backend)));
    if (vdd_pool_backend_type(backend) == VDD_POOL_RBD)
        vdd_dbus_pool_set_error(self->iface, "connecting to the Ceph cluster");
    vdd_call_serve(self->iface, manager, self, pool_methods, G_N_ELEMENTS(pool_methods));
    vdd_dbus_object_skeleton_set_pool(self->object, self->iface);
    g_dbus_object_manager_server_export(vdd_manager_get_object_manager(manager),
                                        G_DBUS_OBJECT_SKELETON(self->object));
    if (dirfd >= 0)
        remove_stale_partial_files(self);
    vdd_pool_refresh(self);
    return self;
}

VddPool *vdd_pool_new(VddManager *manager, const char *name, const char *directory, GError **error)
{
    if (!g_path_is_absolute(directory)) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "pool %s: directory '%s' is not an absolute path", name, directory);
        return NULL;
    }
    int fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        if (err == ENOTDIR || err == ENOENT)
            g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT, "pool %s: %s: %s", name,
                        directory, g_strerror(err));
        else
            vdd_error_set_errno(error, err, "pool %s: %s", name, directory);
        return NULL;
    }
    g_autofree char *canonical = g_canonicalize_filename(directory, NULL);
    return export_pool(manager, name, directory, fd, vdd_pool_backend_new_dir(name, canonical, fd));
}

VddPool *vdd_pool_new_rbd(VddManager *manager, const char *name, const VddRbdPoolConfig *config,
                          GError **error)
{
    VddPoolBackend *backend = vdd_pool_backend_new_rbd(name, config, error);
    if (backend == NULL) {
        g_prefix_error(error, "pool %s: ", name);
        return NULL;
    }
    return export_pool(manager, name, vdd_pool_backend_directory(backend), -1, backend);
}

VddPool *vdd_pool_new_logical(VddManager *manager, const char *name, const char *vg, GError **error)
{
    VddPoolBackend *backend = vdd_pool_backend_new_logical(name, vg, error);
    if (backend == NULL) {
        g_prefix_error(error, "pool %s: ", name);
        return NULL;
    }
    return export_pool(manager, name, vdd_pool_backend_directory(backend), -1, backend);
}
