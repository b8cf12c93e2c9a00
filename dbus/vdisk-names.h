/* Every D-Bus and polkit name of vdisk, in one place: the daemon, vdiskctl
 * and the tests use these, never string literals of their own. The names
 * are the contract of DESIGN.md; add, never rename. */
#pragma once

#define VDISK_BUS_NAME "org.vdisk.VDisk1"
#define VDISK_ROOT_PATH "/org/vdisk/VDisk1"
#define VDISK_MANAGER_PATH VDISK_ROOT_PATH "/Manager"
#define VDISK_POOLS_PATH VDISK_ROOT_PATH "/pools"
#define VDISK_JOBS_PATH VDISK_ROOT_PATH "/jobs"

#define VDISK_MANAGER_INTERFACE "org.vdisk.VDisk1.Manager"
#define VDISK_POOL_INTERFACE "org.vdisk.VDisk1.Pool"
#define VDISK_VOLUME_INTERFACE "org.vdisk.VDisk1.Volume"
#define VDISK_JOB_INTERFACE "org.vdisk.VDisk1.Job"

/* Error names: VDISK_ERROR_PREFIX + one of the names below. */
#define VDISK_ERROR_PREFIX "org.vdisk.VDisk1.Error."
#define VDISK_ERROR_NOT_AUTHORIZED VDISK_ERROR_PREFIX "NotAuthorized"
#define VDISK_ERROR_NOT_FOUND VDISK_ERROR_PREFIX "NotFound"
#define VDISK_ERROR_EXISTS VDISK_ERROR_PREFIX "Exists"
#define VDISK_ERROR_INVALID_ARGUMENT VDISK_ERROR_PREFIX "InvalidArgument"
#define VDISK_ERROR_UNSUPPORTED_FORMAT VDISK_ERROR_PREFIX "UnsupportedFormat"
#define VDISK_ERROR_CORRUPT VDISK_ERROR_PREFIX "Corrupt"
#define VDISK_ERROR_BUSY VDISK_ERROR_PREFIX "Busy"
#define VDISK_ERROR_CANCELLED VDISK_ERROR_PREFIX "Cancelled"
#define VDISK_ERROR_FAILED VDISK_ERROR_PREFIX "Failed"

/* polkit actions (polkit/org.vdisk.VDisk1.policy). */
#define VDISK_ACTION_INSPECT "org.vdisk.VDisk1.inspect"
#define VDISK_ACTION_READ_VOLUME "org.vdisk.VDisk1.read-volume"
#define VDISK_ACTION_CREATE_VOLUME "org.vdisk.VDisk1.create-volume"
#define VDISK_ACTION_IMPORT_VOLUME "org.vdisk.VDisk1.import-volume"
#define VDISK_ACTION_MODIFY_VOLUME "org.vdisk.VDisk1.modify-volume"
#define VDISK_ACTION_DELETE_VOLUME "org.vdisk.VDisk1.delete-volume"
#define VDISK_ACTION_MANAGE_POOLS "org.vdisk.VDisk1.manage-pools"
#define VDISK_ACTION_CANCEL_JOB_OTHER_USER "org.vdisk.VDisk1.cancel-job-other-user"
