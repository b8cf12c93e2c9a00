/* A Volume: one image file in a pool, exported at
 * /org/vdisk/VDisk1/pools/<pool>/<escaped name>. */
#pragma once

#include <gio/gio.h>

#include "options.h"
#include "pool.h"
#include "vdisk.h"

#define VDD_TYPE_VOLUME (vdd_volume_get_type())
G_DECLARE_FINAL_TYPE(VddVolume, vdd_volume, VDD, VOLUME, GObject)

VddVolume *vdd_volume_new(VddPool *pool, const char *name);
const char *vdd_volume_get_name(VddVolume *self);
VddPool *vdd_volume_get_pool(VddVolume *self);
const char *vdd_volume_get_object_path(VddVolume *self);
GDBusObjectSkeleton *vdd_volume_get_object(VddVolume *self);

/* Read the header again and publish what changed (format, sizes, backing
 * file, snapshots, error). A broken image sets Error, never fails. */
void vdd_volume_update(VddVolume *self);

/* Jobs that write a volume hold its write lock, jobs that read it a read
 * lock; either also read-locks the volume's backing chain in the pool, so
 * that no volume below it is written or resized meanwhile. Busy error
 * naming the volume otherwise. A job takes and releases them through its
 * VddLockSet (locks.h); an unlock without its lock is a critical. */
gboolean vdd_volume_lock_write(VddVolume *self, GError **error);
void vdd_volume_unlock_write(VddVolume *self);
gboolean vdd_volume_lock_read(VddVolume *self, GError **error);
void vdd_volume_unlock_read(VddVolume *self);
gboolean vdd_volume_is_locked(VddVolume *self);

/* The volume's file opened for a job, as every job opens a volume:
 * beneath its pool without following a symbolic link, a regular file,
 * locked as QEMU locks an image (shared for O_RDONLY, exclusive for
 * O_RDWR), its recorded format in *format (a new string). Returns the
 * descriptor (the caller closes it), or -1 with an error. */
int vdd_volume_open_for_job(VddVolume *self, int access, char **format, GError **error);
