/* The Manager: owns the object manager at /org/vdisk/VDisk1, the pools, the
 * running jobs and the bouncer; serves org.vdisk.VDisk1.Manager. */
#pragma once

#include <gio/gio.h>

#include "bouncer.h"
#include "vdisk.h"

typedef struct _VddPool VddPool;
typedef struct _VddJob VddJob;
typedef struct _VddVolume VddVolume;

#define VDD_TYPE_MANAGER (vdd_manager_get_type())
G_DECLARE_FINAL_TYPE(VddManager, vdd_manager, VDD, MANAGER, GObject)

VddManager *vdd_manager_new(void);
/* Export everything on connection (call once the name is owned or before). */
void vdd_manager_export(VddManager *self, GDBusConnection *connection);

/* Load every *.conf in dir ([Pool] Name=, Directory=). A bad file is
 * logged and skipped; a missing dir is fine. */
void vdd_manager_load_config(VddManager *self, const char *dir);
/* Add a pool; errors: InvalidArgument (name, directory), Exists. Returns
 * the pool (borrowed). */
VddPool *vdd_manager_add_pool(VddManager *self, const char *name, const char *directory,
                              GError **error);
/* The same for a logical pool on the LVM volume group vg. */
VddPool *vdd_manager_add_logical_pool(VddManager *self, const char *name, const char *vg,
                                      GError **error);
/* An rbd pool (pool.h vdd_pool_new_rbd) from the configuration. */
typedef struct VddRbdPoolConfig VddRbdPoolConfig;
VddPool *vdd_manager_add_rbd_pool(VddManager *self, const char *name,
                                  const VddRbdPoolConfig *config, GError **error);
VddPool *vdd_manager_lookup_pool(VddManager *self, const char *name);
/* Stop serving a pool (its files stay); FALSE when there is none. */
gboolean vdd_manager_remove_pool(VddManager *self, const char *name);

/* libvirt's pools mirrored as vdisk pools (libvirt-pools.h); borrowed, may
 * be NULL (tests, no libvirt). */
typedef struct _VddLibvirt VddLibvirt;
void vdd_manager_set_libvirt(VddManager *self, VddLibvirt *libvirt);
/* A pool's volumes changed (created, written, resized, deleted): tell
 * whoever mirrors it. */
void vdd_manager_pool_changed(VddManager *self, VddPool *pool);

VddBouncer *vdd_manager_get_bouncer(VddManager *self);
GDBusObjectManagerServer *vdd_manager_get_object_manager(VddManager *self);

/* Idle accounting: every method call touches; the daemon may exit when no
 * job runs and nothing touched it for timeout seconds. */
void vdd_manager_touch(VddManager *self);
gboolean vdd_manager_is_idle(VddManager *self, guint timeout_seconds);
/* Cancel every running job (at SIGTERM): each ends as cancelled and removes
 * what it half wrote. Returns how many are still running. */
guint vdd_manager_cancel_jobs(VddManager *self);
guint vdd_manager_running_jobs(VddManager *self);

/* For job.c. */
void vdd_manager_export_job(VddManager *self, VddJob *job, GDBusObjectSkeleton *object);
void vdd_manager_job_finished(VddManager *self, VddJob *job);
void vdd_manager_unexport_job(VddManager *self, VddJob *job);

/* The metadata tables (L1 and refcount tables, block maps, grain
 * directories) one open may read into memory, for a volume and for a
 * caller's file alike: enough for any real image (a 2 TiB VDI's block map
 * is 8 MiB; qemu caps a qcow2's L1 table at 32 MiB), far below what a
 * crafted header claims, so it cannot make vdiskd read and hold gigabytes
 * (and a volume described on the main loop cannot hold it for long). */
#define VDD_MAX_METADATA (64u << 20)

/* The volume exported at object_path, or NULL. */
VddVolume *vdd_manager_lookup_volume(VddManager *self, const char *object_path);
/* Refuse create options that would make the engine open or create files by
 * name beside a new volume (a data file, the extents of a flat or split
 * vmdk): every creator checks this. */
gboolean vdd_check_target_files(const char *format, VdOptions *create, GError **error);
/* The same for a target passed as a descriptor, where a backing file is
 * refused too. */
gboolean vdd_check_fd_target_options(const char *format, VdOptions *create, GError **error);
