/* A Pool: a directory of images, exported at /org/vdisk/VDisk1/pools/<name>.
 * Every path under it is resolved relative to the directory's descriptor,
 * never following symbolic links. */
#pragma once

#include <gio/gio.h>

#include "manager.h"

typedef struct _VddVolume VddVolume;

#define VDD_TYPE_POOL (vdd_pool_get_type())
G_DECLARE_FINAL_TYPE(VddPool, vdd_pool, VDD, POOL, GObject)

/* directory must be absolute and an existing directory; the pool scans it. */
VddPool *vdd_pool_new(VddManager *manager, const char *name, const char *directory, GError **error);
const char *vdd_pool_get_name(VddPool *self);
const char *vdd_pool_get_directory(VddPool *self);
const char *vdd_pool_get_object_path(VddPool *self);
VddManager *vdd_pool_get_manager(VddPool *self);
int vdd_pool_get_dirfd(VddPool *self);
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

/* A name for a new volume: valid and not taken. Then create it empty,
 * exclusively (O_EXCL|O_NOFOLLOW); returns the descriptor, -1 on error. */
gboolean vdd_pool_check_new_name(VddPool *self, const char *name, GError **error);
int vdd_pool_create_file(VddPool *self, const char *name, GError **error);
/* fsync the pool's directory: a volume file created in it survives a power
 * cut under its name once this returned TRUE. */
gboolean vdd_pool_sync_directory(VddPool *self, GError **error);
