/* blkdebug: QEMU's error-injection driver, for testing how programs and
 * images behave when I/O fails (blkdebug.c).
 *
 * A blkdebug layer holds rules: inject an errno into the next request of
 * some kinds (read, write, ...) once an event has happened, optionally
 * only at one sector, only once, only in some state; or change the state
 * when an event happens. Events are what the format drivers do (qemu's
 * BlkdebugEvent: "the L1 table is being updated", "a cluster is being
 * freed"); they call vd_file_debug_event on the file they are about to
 * change, which costs a pointer test when no blkdebug is attached.
 *
 * A layer sits either below a format, on the VdFile the driver reads
 * (blkdebug:CONF:IMAGE, or a json: name whose "file" is a blkdebug node),
 * where the driver's events reach it, or above a format, on the VdImage
 * (a blkdebug node whose "image" is a format node), where it sees guest
 * reads, writes and block status. */
#pragma once

#include "vdisk-driver.h"

/* qemu's BlkdebugEvent, in its order (qapi/block-core.json). */
typedef enum {
    VD_EVENT_L1_UPDATE,
    VD_EVENT_L1_GROW_ALLOC_TABLE,
    VD_EVENT_L1_GROW_WRITE_TABLE,
    VD_EVENT_L1_GROW_ACTIVATE_TABLE,
    VD_EVENT_L2_LOAD,
    VD_EVENT_L2_UPDATE,
    VD_EVENT_L2_UPDATE_COMPRESSED,
    VD_EVENT_L2_ALLOC_COW_READ,
    VD_EVENT_L2_ALLOC_WRITE,
    VD_EVENT_READ_AIO,
    VD_EVENT_READ_BACKING_AIO,
    VD_EVENT_READ_COMPRESSED,
    VD_EVENT_WRITE_AIO,
    VD_EVENT_WRITE_COMPRESSED,
    VD_EVENT_VMSTATE_LOAD,
    VD_EVENT_VMSTATE_SAVE,
    VD_EVENT_COW_READ,
    VD_EVENT_COW_WRITE,
    VD_EVENT_REFTABLE_LOAD,
    VD_EVENT_REFTABLE_GROW,
    VD_EVENT_REFTABLE_UPDATE,
    VD_EVENT_REFBLOCK_LOAD,
    VD_EVENT_REFBLOCK_UPDATE,
    VD_EVENT_REFBLOCK_UPDATE_PART,
    VD_EVENT_REFBLOCK_ALLOC,
    VD_EVENT_REFBLOCK_ALLOC_HOOKUP,
    VD_EVENT_REFBLOCK_ALLOC_WRITE,
    VD_EVENT_REFBLOCK_ALLOC_WRITE_BLOCKS,
    VD_EVENT_REFBLOCK_ALLOC_WRITE_TABLE,
    VD_EVENT_REFBLOCK_ALLOC_SWITCH_TABLE,
    VD_EVENT_CLUSTER_ALLOC,
    VD_EVENT_CLUSTER_ALLOC_BYTES,
    VD_EVENT_CLUSTER_FREE,
    VD_EVENT_FLUSH_TO_OS,
    VD_EVENT_FLUSH_TO_DISK,
    VD_EVENT_PWRITEV_RMW_HEAD,
    VD_EVENT_PWRITEV_RMW_AFTER_HEAD,
    VD_EVENT_PWRITEV_RMW_TAIL,
    VD_EVENT_PWRITEV_RMW_AFTER_TAIL,
    VD_EVENT_PWRITEV,
    VD_EVENT_PWRITEV_ZERO,
    VD_EVENT_PWRITEV_DONE,
    VD_EVENT_EMPTY_IMAGE_PREPARE,
    VD_EVENT_L1_SHRINK_WRITE_TABLE,
    VD_EVENT_L1_SHRINK_FREE_L2_CLUSTERS,
    VD_EVENT_COR_WRITE,
    VD_EVENT_CLUSTER_ALLOC_SPACE,
    VD_EVENT_NONE, /* once, when the blkdebug layer is made */
    VD_EVENT_COUNT,
} VdDebugEvent;

/* qemu's BlkdebugIOType: the kinds of request a rule may fail. */
typedef enum {
    VD_DEBUG_IO_READ,
    VD_DEBUG_IO_WRITE,
    VD_DEBUG_IO_WRITE_ZEROES,
    VD_DEBUG_IO_DISCARD,
    VD_DEBUG_IO_FLUSH,
    VD_DEBUG_IO_BLOCK_STATUS,
} VdDebugIo;

typedef struct VdBlkdebug VdBlkdebug;

/* The rules of the blkdebug node at prefix of opts (qemu's open options in
 * flat form: "PREFIXconfig", "PREFIXinject-error.N.event", ...; prefix ""
 * or "file." and so on), and those of config_file when not NULL (the
 * CONF of blkdebug:CONF:IMAGE). name is for messages. Errors name the
 * option or the line at fault. */
VdBlkdebug *vd_blkdebug_new(const char *name, VdOptions *opts, const char *prefix,
                            const char *config_file, GError **error);
void vd_blkdebug_free(VdBlkdebug *debug);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VdBlkdebug, vd_blkdebug_free)

/* An event happened: its rules become the active ones, its set-state
 * rules change the state. */
void vd_blkdebug_event(VdBlkdebug *debug, VdDebugEvent event);
/* Is a request of kind io on [offset, +len) of the layer to fail? Then
 * FALSE, with the rule's errno as the error, naming name. */
gboolean vd_blkdebug_check(VdBlkdebug *debug, VdDebugIo io, guint64 offset, guint64 len,
                           const char *name, GError **error);

/* "blkdebug:CONF:IMAGE" (CONF may be empty): the file IMAGE with the
 * rules of CONF below whatever format reads it (vd_file_open takes such
 * names). */
VdFile *vd_blkdebug_open_file(const char *name, gboolean read_write, GError **error);
/* IMAGE of "blkdebug:CONF:IMAGE", where the files the image names are
 * found; name itself when it is no such name. */
const char *vd_blkdebug_image_name(const char *name);

/* The file node at prefix of opts: "driver=file,filename=PATH" (driver
 * may be left out), or a blkdebug node whose image is such a file (or a
 * file name). */
VdFile *vd_blkdebug_open_file_node(VdOptions *opts, const char *prefix, gboolean read_write,
                                   GError **error);

/* VdFile's side (file.c): attach debug (taken) to file; fire an event on
 * file, a no-op without blkdebug; is one attached. */
void vd_file_set_debug(VdFile *file, VdBlkdebug *debug);
void vd_file_debug_event(VdFile *file, VdDebugEvent event);
gboolean vd_file_has_debug(VdFile *file);

/* Open the image qemu's open options in flat form describe (the options
 * of a json: name): a format over a file or over blkdebug over a file, or
 * blkdebug over either. name (may be NULL: the file's) is what messages
 * call it; format is the caller's where the options name none. */
VdImage *vd_image_open_described(VdOptions *opts, const char *name, const char *format,
                                 VdOpenFlags flags, VdSecrets *secrets, GError **error);
/* The same for a "json:{...}" name. */
VdImage *vd_image_open_json(const char *name, const char *format, VdOpenFlags flags,
                            VdSecrets *secrets, GError **error);
/* image.c: open the format on file (taken), locked as flags and the lock
 * options of open_opts (may be NULL) say; format NULL: probed. */
VdImage *vd_image_open_on_file(VdFile *file, const char *name, const char *format,
                               VdOpenFlags flags, VdOptions *open_opts, VdSecrets *secrets,
                               GError **error);
