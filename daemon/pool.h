/* A Pool: a directory of images, exported at /org/vdisk/VDisk1/pools/<name>.
 * Every path under it is resolved relative to the directory's descriptor,
 * never following symbolic links. */
#pragma once

#include <gio/gio.h>

#include "manager.h"
#include "vdisk.h"

typedef struct _VddVolume VddVolume;

#define VDD_TYPE_POOL (vdd_pool_get_type())
G_DECLARE_FINAL_TYPE(VddPool, vdd_pool, VDD, POOL, GObject)

/* directory must be absolute and an existing directory; the pool scans it. */
VddPool *vdd_pool_new(VddManager *manager, const char *name, const char *directory, GError **error);
/* A logical pool on the LVM volume group vg (pool-backend.h): its
 * volumes are the group's LVs, raw; NULL when vgs does not know vg. */
VddPool *vdd_pool_new_logical(VddManager *manager, const char *name, const char *vg,
                              GError **error);
/* An rbd pool on the Ceph pool config->ceph_pool (pool-backend-rbd.h): its
 * volumes are the pool's RBD images, raw. It connects to the cluster off
 * the main loop; until it has (or while it cannot: its Error property
 * says why) it lists no volumes. */
typedef struct VddRbdPoolConfig VddRbdPoolConfig;
VddPool *vdd_pool_new_rbd(VddManager *manager, const char *name, const VddRbdPoolConfig *config,
                          GError **error);
const char *vdd_pool_get_name(VddPool *self);
const char *vdd_pool_get_directory(VddPool *self);
const char *vdd_pool_get_object_path(VddPool *self);
VddManager *vdd_pool_get_manager(VddPool *self);
/* -1 for a logical pool, whose volumes are opened through its backend. */
int vdd_pool_get_dirfd(VddPool *self);
typedef struct VddPoolBackend VddPoolBackend;
VddPoolBackend *vdd_pool_get_backend(VddPool *self);
gboolean vdd_pool_is_logical(VddPool *self);
gboolean vdd_pool_is_rbd(VddPool *self);
/* While an rbd pool publishes a scan (its volumes made or read again):
 * the size, allocated bytes and snapshots it found for the image name (borrowed). FALSE
 * otherwise: the volume asks the cluster itself. */
gboolean vdd_pool_rbd_scanned(VddPool *self, const char *name, guint64 *size, guint64 *allocated,
                              const char *const **snapshots);
/* The recorded formats of its volumes (volume-formats.h). */
typedef struct VddFormatRecords VddFormatRecords;
VddFormatRecords *vdd_pool_get_format_records(VddPool *self);
/* directory/name; a new string. */
char *vdd_pool_file_path(VddPool *self, const char *name);

/* Rescan: new files become volumes, gone files are dropped, the rest are
 * re-read (unless a job is writing them). */
void vdd_pool_refresh(VddPool *self);
/* Take the pool and its volumes off the bus (before dropping it). */
void vdd_pool_unexport(VddPool *self);
void vdd_pool_update_space(VddPool *self);
VddVolume *vdd_pool_lookup_volume(VddPool *self, const char *name);
/* Export a volume for the file name (borrowed result). */
VddVolume *vdd_pool_add_volume(VddPool *self, const char *name);
void vdd_pool_remove_volume(VddPool *self, VddVolume *volume);

/* A name for a new volume: valid and not taken. */
gboolean vdd_pool_check_new_name(VddPool *self, const char *name, GError **error);

/* The file of a new volume, written under a hidden name (".NAME.partial-…",
 * never listed as a volume, refused as a volume's name) and given its own
 * name only when complete and on stable storage: a crash of vdiskd in the
 * middle of an import or a clone leaves a hidden partial file, never a
 * volume that looks whole. The pool's registry reserves the name meanwhile. */
typedef struct VddNewFile VddNewFile;
/* Check name (vdd_pool_check_new_name) and create its hidden file
 * exclusively (O_EXCL|O_NOFOLLOW). NULL on error. */
VddNewFile *vdd_pool_new_file(VddPool *self, const char *name, GError **error);
/* The descriptor to write the volume into (owned by the new file); -1 for
 * an LV until it is made. */
int vdd_new_file_fd(VddNewFile *file);
/* In a logical pool: make the LV, at least size bytes, open it, and zero
 * it from zero_from to its end (off the main loop: it runs lvcreate, and
 * zeroing may write). Removed again unless published. */
gboolean vdd_new_file_is_lv(VddNewFile *file);
gboolean vdd_new_file_make_lv(VddNewFile *file, guint64 size, guint64 zero_from, GError **error);
/* Give the hidden file the volume's name, never replacing a file that took
 * that name meanwhile, sync the directory, and record the volume's format
 * (never probed again). On failure nothing is left under the volume's
 * name. */
gboolean vdd_new_file_publish(VddNewFile *file, const char *format, GError **error);
/* Close; a file never published is removed. */
void vdd_new_file_free(VddNewFile *file);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VddNewFile, vdd_new_file_free)

/* fsync the pool's directory: a volume file created in it survives a power
 * cut under its name once this returned TRUE. */
gboolean vdd_pool_sync_directory(VddPool *self, GError **error);
