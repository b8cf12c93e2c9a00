/* libvdisk internals: the file wrapper, the image object and the format
 * driver vtable. Drivers include this; front ends use vdisk.h only.
 */
#pragma once

#include "vdisk.h"

G_BEGIN_DECLS

/* ----- VdFile: one host file, with full-length pread/pwrite ----- */
typedef struct VdFile VdFile;

/* Open path; writable with read_write. Errors name path. Never blocks on a
 * FIFO: anything but a regular file or a block device is refused. */
VdFile *vd_file_open(const char *path, gboolean read_write, GError **error);
/* The same for a file whose name came from inside an image: a regular
 * file only (a block device an image names is refused too). */
VdFile *vd_file_open_regular(const char *path, gboolean read_write, GError **error);
/* Open rel beneath the confinement's folder: no component may be a
 * symbolic link or climb out with "..", and it must be a regular file.
 * name is for messages. */
VdFile *vd_file_open_beneath(const VdConfinement *c, const char *rel, const char *name,
                             gboolean read_write, GError **error);
/* openat beneath the confinement's folder, as vd_openat_beneath on its
 * dirfd, or by asking its open_beneath function. */
int vd_confinement_openat(const VdConfinement *c, const char *rel, int flags);
/* openat(dirfd, rel, flags) resolved beneath dirfd without following
 * symbolic links: openat2 where use_openat2 and the kernel has it, else a
 * walk of the components. -1 with errno (EXDEV: outside, ELOOP: a link). */
int vd_openat_beneath(int dirfd, const char *rel, int flags, gboolean use_openat2);
/* Create or truncate path (mode 0644). */
VdFile *vd_file_create(const char *path, GError **error);
/* A file beside an image being created (vmdk extents), by path: a
 * symlink in its place is refused, never followed; it must be a regular
 * file; it is locked as vd_file_create locks but not emptied yet (the
 * caller truncates it once every file of the image is open). *created says
 * whether this call made it: only then may a failed create remove it. */
VdFile *vd_file_create_beside(const char *path, gboolean *created, GError **error);
/* Wrap a dup of fd. name is for messages. */
VdFile *vd_file_open_fd(int fd, const char *name, GError **error);
/* A read-only view of [offset, offset+length) of parent as a file of its
 * own (a member of an archive). */
VdFile *vd_file_open_slice(VdFile *parent, guint64 offset, guint64 length, const char *name,
                           GError **error);
void vd_file_close(VdFile *file);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VdFile, vd_file_close)

const char *vd_file_name(VdFile *file);
int vd_file_fd(VdFile *file);
gboolean vd_file_is_writable(VdFile *file);
/* A block device: its size is fixed (truncate never grows or shrinks it). */
gboolean vd_file_is_block(VdFile *file);
/* Current length of the file in bytes. */
gboolean vd_file_size(VdFile *file, guint64 *size, GError **error);
/* Bytes the file occupies on disk (st_blocks * 512). */
gint64 vd_file_allocated(VdFile *file);
/* Read exactly len bytes; reading past EOF is an error naming the file. */
gboolean vd_file_pread(VdFile *file, guint64 offset, void *buf, gsize len, GError **error);
/* Read up to len bytes; bytes past EOF read as zero. */
gboolean vd_file_pread_zero_past_eof(VdFile *file, guint64 offset, void *buf, gsize len,
                                     GError **error);
gboolean vd_file_pwrite(VdFile *file, guint64 offset, const void *buf, gsize len, GError **error);
/* Write len zero bytes (punch, or explicit zeroes where punching fails). */
gboolean vd_file_write_zeroes(VdFile *file, guint64 offset, guint64 len, gboolean may_punch,
                              GError **error);
/* Free the range's storage; it reads as zeroes. FALSE with NOT_SUPPORTED
 * when the file system cannot. */
gboolean vd_file_punch_hole(VdFile *file, guint64 offset, guint64 len, GError **error);
gboolean vd_file_truncate(VdFile *file, guint64 size, GError **error);
/* posix_fallocate: reserve blocks for the range. */
gboolean vd_file_allocate(VdFile *file, guint64 offset, guint64 len, GError **error);
/* fdatasync; a no-op for a file set no-flush. */
gboolean vd_file_sync(VdFile *file, GError **error);
/* cache=unsafe: vd_file_sync returns at once from now on. */
void vd_file_set_no_flush(VdFile *file, gboolean no_flush);
/* The file is being written front to back by a copy: start writeback
 * every few tens of MiB written, and drop what is written back from the
 * page cache, so the disk works during the copy and a copy larger than
 * memory does not push everything else out of it. */
void vd_file_set_streaming(VdFile *file, gboolean streaming);
/* The file is about to be read through by a copy: if it is found outside
 * the page cache, what is read from it is dropped from the cache after (a
 * source larger than memory does not push everything else out); a file
 * found cached, or small, is left as it is. */
void vd_file_set_read_streaming(VdFile *file, gboolean streaming);
/* Copy [src_offset, +len) of src to dst_offset of dst inside the kernel:
 * shared extents (FICLONERANGE, a reflink) where offsets and length are
 * whole blocks of dst's file system. Else, when buf (may be NULL) holds
 * the same bytes already, they are written from it (cheaper than having
 * the kernel copy them again); else copy_file_range, and where the kernel
 * or file system says no (EXDEV, EOPNOTSUPP, EINVAL, ENOSYS), read and
 * written through a buffer. Bytes past src's end read as zeroes. Syncing
 * stays the caller's (vd_file_sync). */
gboolean vd_file_copy_range(VdFile *src, guint64 src_offset, VdFile *dst, guint64 dst_offset,
                            guint64 len, const void *buf, GError **error);
/* FALSE once the kernel said dst's file system cannot share extents
 * (vd_file_copy_range asks once): copies into it go through memory. */
gboolean vd_file_may_clone(VdFile *dst);
/* Make dst (empty, just created) share every extent of src (FICLONE, a
 * reflink of the whole file). *cloned is FALSE, and dst left untouched,
 * where the kernel or file system cannot (another file system, no shared
 * extents, a slice or a device). */
gboolean vd_file_clone(VdFile *src, VdFile *dst, gboolean *cloned, GError **error);
/* SEEK_DATA/SEEK_HOLE: is offset in data, and how far does that run go
 * (capped at max)? Where the file system cannot tell, everything is data. */
gboolean vd_file_extent(VdFile *file, guint64 offset, guint64 max, gboolean *is_data, guint64 *run,
                        GError **error);

/* ----- NBD exports as files (nbd.c, through libnbd) ----- */
typedef struct VdNbd VdNbd;
/* FALSE in a build without libnbd. */
gboolean vd_nbd_supported(void);
/* Connect to the export name names; opts (may be NULL) may hold qemu's
 * "x-dirty-bitmap=CONTEXT": block status from that metadata context.
 * Messages name the export as qemu-img does (nbd+unix:///EXP?socket=P).
 * A read-only export is refused with read_write. */
VdFile *vd_file_open_nbd(const char *name, VdOptions *opts, gboolean read_write, GError **error);
/* The same over a connected socket (dup'ed), the handshake still to do. */
VdFile *vd_file_open_nbd_socket(int fd, const char *export_name, gboolean read_write,
                                GError **error);
/* file.c's side: a VdFile that is the connection nbd (taken). */
VdFile *vd_file_wrap_nbd(VdNbd *nbd, const char *name, gboolean writable);
/* The connection behind file, or NULL for a host file. */
VdNbd *vd_file_nbd(VdFile *file);
void vd_nbd_close(VdNbd *nbd);
guint64 vd_nbd_size(VdNbd *nbd);
gboolean vd_nbd_pread(VdNbd *nbd, guint64 offset, void *buf, gsize len, GError **error);
gboolean vd_nbd_pwrite(VdNbd *nbd, guint64 offset, const void *buf, gsize len, GError **error);
gboolean vd_nbd_zero(VdNbd *nbd, guint64 offset, guint64 len, gboolean may_unmap, GError **error);
gboolean vd_nbd_flush(VdNbd *nbd, GError **error);

/* ----- Ceph RBD images as files (rbd.c, through librbd) ----- */
typedef struct VdRbd VdRbd;
/* FALSE in a build without librbd. */
gboolean vd_rbd_supported(void);
/* Open the RBD image name names (rbd:POOL/IMAGE[@SNAP][:conf=..]...):
 * connect to its cluster (giving up after 30 s without a monitor), open
 * the pool and the image; a snapshot only without read_write. Messages
 * name the image by name. */
VdFile *vd_file_open_rbd(const char *name, gboolean read_write, GError **error);
/* Make a new RBD image of size bytes (the cluster's default features);
 * VD_ERROR_EXISTS when one of that name is there. */
gboolean vd_rbd_create(const char *name, guint64 size, GError **error);
/* Remove the RBD image name names (a create whose copy failed). */
gboolean vd_rbd_remove(const char *name, GError **error);
/* file.c's side: a VdFile that is the image rbd (taken). */
VdFile *vd_file_wrap_rbd(VdRbd *rbd, const char *name, gboolean writable);
/* The image behind file, or NULL for another file. */
VdRbd *vd_file_rbd(VdFile *file);
void vd_rbd_close(VdRbd *rbd);
guint64 vd_rbd_size(VdRbd *rbd);
/* The image's object size (its cluster size to qemu-img info). */
guint32 vd_rbd_object_size(VdRbd *rbd);
gboolean vd_rbd_pread(VdRbd *rbd, guint64 offset, void *buf, gsize len, GError **error);
gboolean vd_rbd_pwrite(VdRbd *rbd, guint64 offset, const void *buf, gsize len, GError **error);
/* Zeroes: with may_unmap only where the image holds objects (the rest
 * reads zero already), else allocated. */
gboolean vd_rbd_zero(VdRbd *rbd, guint64 offset, guint64 len, gboolean may_unmap, GError **error);
gboolean vd_rbd_flush(VdRbd *rbd, GError **error);
gboolean vd_rbd_resize(VdRbd *rbd, guint64 size, GError **error);
/* The image's snapshots, as qemu-img lists them (VdSnapshotInfo). */
GPtrArray *vd_rbd_list_snapshots(VdRbd *rbd, GError **error);
typedef enum {
    VD_RBD_SNAPSHOT_CREATE,
    VD_RBD_SNAPSHOT_APPLY, /* roll the image back to it */
    VD_RBD_SNAPSHOT_DELETE,
} VdRbdSnapshotOp;
gboolean vd_rbd_snapshot(VdRbd *rbd, VdRbdSnapshotOp op, const char *name, GError **error);
/* Does the image hold objects at offset, and how far does that go
 * (capped at max)? Whole objects: what holds none reads zero. */
gboolean vd_rbd_extent(VdRbd *rbd, guint64 offset, guint64 max, gboolean *allocated, guint64 *run,
                       GError **error);

/* vd_image_create_with_secrets and vd_image_create_fd_with_secrets with
 * the cache bits of flags: with VD_OPEN_NO_FLUSH the new image is not
 * waited for (the public calls always wait for the disk). */
gboolean vd_image_create_flags(const char *path, const char *format, guint64 size, VdOptions *opts,
                               VdSecrets *secrets, VdOpenFlags flags, GError **error);
gboolean vd_image_create_fd_flags(int fd, const char *name, const char *format, guint64 size,
                                  VdOptions *opts, VdSecrets *secrets, VdOpenFlags flags,
                                  GError **error);

/* Copy offload (the copy engine): can img take guest bytes copied file
 * to file, and write len of them from src_offset of src at guest offset
 * (as vd_image_write does, with the same cache mode). */
gboolean vd_image_can_write_from_file(VdImage *img);
gboolean vd_image_write_from_file(VdImage *img, guint64 offset, VdFile *src, guint64 src_offset,
                                  guint64 len, const void *buf, GError **error);
/* Where [offset, +len) of layer (one layer, not its chain) lies as it is
 * in a file: the file (borrowed), the host offset and how far the run
 * goes; NULL where it is not stored plainly. */
VdFile *vd_image_plain_location(VdImage *layer, guint64 offset, guint64 len, guint64 *host_offset,
                                guint64 *run);

/* ----- image locks (file-lock.c), as QEMU's file-posix driver takes them ----- */
typedef enum {
    VD_LOCK_READ,        /* read; refuse writers (read-only opens, backing files) */
    VD_LOCK_WRITE,       /* read, write, resize; refuse other writers and readers */
    VD_LOCK_SHARED_READ, /* read, refusing nobody (force-share) */
    VD_LOCK_CREATE,      /* write and resize, refusing other resizers (create) */
} VdLockMode;

/* The mode an open with flags takes; FALSE when it takes none (NO_LOCKING). */
gboolean vd_lock_mode_for_open(VdOpenFlags flags, gboolean read_write, VdLockMode *mode);
/* Lock file for mode (once per file; vd_file_close releases it): take the
 * bytes, then check that no other open of the file holds a conflicting
 * one. On a conflict nothing stays locked and the error is VD_ERROR_BUSY,
 * naming the file, QEMU's words for the lock and, where /proc tells, the
 * process holding it. Where the kernel or file system has no OFD locks it
 * warns on stderr (once) and returns TRUE. */
gboolean vd_file_lock(VdFile *file, VdLockMode mode, GError **error);
/* The same on a descriptor; *perm and *unshared get the bytes now held,
 * for vd_unlock_fd. */
gboolean vd_lock_fd(int fd, const char *name, VdLockMode mode, guint *perm, guint *unshared,
                    GError **error);
void vd_unlock_fd(int fd, guint perm, guint unshared);

/* ----- create options as a driver sees them ----- */
typedef struct {
    guint64 size;
    VdOptions *options;         /* every -o key (never NULL) */
    const char *backing_file;   /* as it is to be stored */
    const char *backing_format; /* may be NULL */
    const char *path;           /* the file being created */
    VdSecrets *secrets;         /* what encrypt.key-secret names; may be NULL */
    gboolean no_flush;          /* cache=unsafe: other files the driver makes need no sync */
    /* The image goes into a caller's descriptor: path only names it, and
     * no other file may be made next to it. */
    gboolean in_descriptor;
    /* Where the backing file is found (vd_create_open_backing): beneath
     * confine, the new image being name_beneath there; NULL: by path. */
    const VdConfinement *confine;
    const char *name_beneath;
} VdCreateParams;

/* Open the backing file a new image is to name, with flags, where opening
 * the new image will find it: next to params->path, or beneath
 * params->confine. Returns a new reference. */
VdImage *vd_create_open_backing(const VdCreateParams *params, const char *format, VdOpenFlags flags,
                                GError **error);

/* The passphrase a new encrypted image gets: the secret that option key
 * names, else the secrets' default. Fails with a clear error when there is
 * none. The bytes are borrowed from params->secrets. */
gboolean vd_create_passphrase(const VdCreateParams *params, const char *key, const guint8 **pass,
                              gsize *len, GError **error);

/* Turn a QS_ERROR (qemu-syntax/) in *error into the VD_ERROR of the same
 * message; any other error is left as it is. */
void vd_error_from_qs(GError **error);

/* Typed option lookups with a clear error naming the option. */
gboolean vd_option_bool(VdOptions *opts, const char *key, gboolean dflt, gboolean *out,
                        GError **error);
gboolean vd_option_size(VdOptions *opts, const char *key, guint64 dflt, guint64 *out,
                        GError **error);
/* One of choices (NULL-terminated); *out is its index, or dflt if unset. */
gboolean vd_option_choice(VdOptions *opts, const char *key, const char *const *choices, int dflt,
                          int *out, GError **error);

/* ----- the driver vtable ----- */

/* What one layer says about a range, on its own (no backing). */
typedef enum {
    VD_EXTENT_UNALLOCATED, /* not here: the backing file answers, or zero */
    VD_EXTENT_ZERO,        /* stored here as reading zero */
    VD_EXTENT_DATA,        /* stored here */
} VdExtentKind;

typedef struct {
    VdExtentKind kind;
    guint64 length; /* > 0, at most the asked length */
    gboolean compressed;
    gboolean offset_valid;
    guint64 host_offset;
    /* The file host_offset lies in, when block status may ask that file
     * whether the data is a hole there (preallocated metadata). */
    VdFile *host_file;
    /* Set (with offset_valid) where the guest bytes lie as they are at
     * host_offset of this file, neither compressed nor encrypted: the copy
     * engine may then copy them file to file (vd_file_copy_range). */
    VdFile *plain_file;
    /* With offset_valid: the name of the file host_offset lies in, as
     * qemu-img map prints it, where that is not the layer's own file (a
     * vmdk extent). Borrowed; NULL: the layer's name. */
    const char *host_name;
    /* Where set, block status reports status_flags (VdBlockFlags) over
     * what kind says: a protocol's own answer (an NBD export's), which
     * may be data reading zero, or neither. kind still decides reads. */
    gboolean status_flags_set;
    guint32 status_flags;
} VdExtent;

/* An NBD export's status of [offset, +max) as one layer's (raw's). */
gboolean vd_nbd_extent(VdNbd *nbd, guint64 offset, guint64 max, VdExtent *out, GError **error);

/* A compressed unit of guest data (a qcow2 cluster, a vmdk grain) as it
 * lies in its file, for reading it without the image lock. */
typedef struct {
    guint64 guest_offset; /* the unit's first guest byte; guest_len 0: not compressed */
    gsize guest_len;      /* bytes it inflates to */
    VdFile *file;         /* where it lies (borrowed) */
    guint64 host_offset;
    gsize host_len; /* bytes to read (zeroes past the end of the file) */
    gpointer part;  /* the driver's: which part of the image (a vmdk extent) */
    guint64 index;  /* the driver's: which unit, for messages */
} VdPackedUnit;

typedef struct VdDriver {
    const char *name;
    /* The image is no host file (null-co): it is opened from its open
     * options alone (vd_image_open_fileless), img->file is NULL, and it
     * is never probed or created. */
    gboolean no_file;
    /* The options this format takes when creating an image, "size"
     * first among them where qemu-img lists it (vd_format_create_option_table). */
    const VdCreateOption *create_options;

    /* Score 0..100 for the first bytes of a file (buf holds len bytes,
     * len may be small). NULL: never probed (raw is the fallback). */
    int (*probe)(const guint8 *buf, gsize len, const char *filename);

    /* Read the headers of img->file, check them and fill img->size,
     * img->backing_name/backing_format, img->priv. */
    gboolean (*open)(VdImage *img, GError **error);
    void (*close)(VdImage *img);
    /* Write a new empty image into file (just created, zero length). */
    gboolean (*create)(VdFile *file, const VdCreateParams *params, GError **error);

    /* This layer's status of [offset, offset+len). Required. */
    gboolean (*block_status)(VdImage *img, guint64 offset, guint64 len, VdExtent *out,
                             GError **error);
    /* Read a range that block_status called DATA (it may span several
     * DATA extents, never other kinds). */
    gboolean (*read)(VdImage *img, guint64 offset, void *buf, gsize len, GError **error);
    gboolean (*write)(VdImage *img, guint64 offset, const void *buf, gsize len, GError **error);
    /* Optional: write len guest bytes that lie as they are at src_offset
     * of src, as write does but copied file to file (vd_file_copy_range;
     * buf, when not NULL, holds the same bytes). Only called where
     * img->encrypted is FALSE. */
    gboolean (*write_from_file)(VdImage *img, guint64 offset, VdFile *src, guint64 src_offset,
                                guint64 len, const void *buf, GError **error);
    /* Optional; without it zeroes are written as data. */
    gboolean (*write_zeroes)(VdImage *img, guint64 offset, guint64 len, gboolean may_unmap,
                             GError **error);
    /* Optional; without it discard does nothing (as qemu allows). */
    gboolean (*discard)(VdImage *img, guint64 offset, guint64 len, GError **error);
    /* Optional pair for compressed writes. compress is called without the
     * image lock, from several threads; out_len is at least
     * vd_compress_bound(len), and it returns 0 when the cluster is better
     * stored plain (the driver decides: a format that stores every grain
     * compressed never returns 0 for a fitting buffer). */
    gsize (*compress)(VdImage *img, const void *in, gsize len, void *out, gsize out_len);
    gboolean (*write_compressed)(VdImage *img, guint64 offset, const void *data, gsize len,
                                 GError **error);
    /* Optional pair for formats that store data compressed, so that
     * vd_image_read inflates on every thread that reads, not under the
     * image lock. packed_unit (lock held) describes the compressed unit
     * holding offset, which block status called compressed data.
     * inflate_unit (no lock, several threads at once) inflates the
     * unit's host_len bytes into its guest_len bytes at out; it may use
     * only the unit and what never changes while the image is open. */
    gboolean (*packed_unit)(VdImage *img, guint64 offset, VdPackedUnit *unit, GError **error);
    gboolean (*inflate_unit)(VdImage *img, const VdPackedUnit *unit, const guint8 *in, guint8 *out,
                             GError **error);
    gboolean (*flush)(VdImage *img, GError **error);
    gboolean (*resize)(VdImage *img, guint64 new_size, gboolean allow_shrink, GError **error);
    /* Optional: grow to new_size with the new range preallocated (mode is
     * never VD_PREALLOC_OFF); a mode it cannot do is refused before
     * anything changes. Without it, only VD_PREALLOC_OFF resizes. */
    gboolean (*grow_preallocated)(VdImage *img, guint64 new_size, VdPreallocation mode,
                                  GError **error);
    /* Fill the format's part of info: cluster_size, dirty, encrypted,
     * format_specific, snapshots. */
    void (*get_info)(VdImage *img, VdImageInfo *info);
    gboolean (*check)(VdImage *img, VdCheckRepair repair, VdCheckResult *res, GError **error);
    GPtrArray *(*list_snapshots)(VdImage *img, GError **error);
    gboolean (*create_snapshot)(VdImage *img, const char *name, GError **error);
    gboolean (*apply_snapshot)(VdImage *img, const char *name_or_id, GError **error);
    gboolean (*delete_snapshot)(VdImage *img, const char *name_or_id, GError **error);
    gboolean (*load_snapshot)(VdImage *img, const char *name_or_id, GError **error);
    /* Optional answers to questions the copy engine asks. */
    gboolean (*has_zero_init)(VdImage *img);
    guint32 (*cluster_size)(VdImage *img);
    gboolean sequential_writes;
    /* Optional: is img's file, as it is, the image that creating this
     * format with create_options (never NULL) and copying img's content
     * into it would give: no backing file, snapshot, bitmap, encryption,
     * damage or option of its own? A convert into the same format may
     * then share the whole file (vd_file_clone) instead of copying. */
    gboolean (*same_as_new)(VdImage *img, VdOptions *create_options);
    /* Optional: change an open image's options (qemu-img amend), e.g. add
     * or remove LUKS key slots; secrets holds what the options name. */
    gboolean (*amend)(VdImage *img, VdOptions *opts, VdSecrets *secrets, GError **error);
    /* Optional: name another backing file (NULL: none) in the header, and
     * update img->backing_name/backing_format (qemu-img rebase). */
    gboolean (*set_backing)(VdImage *img, const char *name, const char *format, GError **error);
    /* Optional: is img->backing, just opened, the image img was made on
     * (a VDI parent's UUID, a vmdk parent's CID)? Called for each layer of
     * a chain; a mismatch is an error naming both files. */
    gboolean (*check_backing)(VdImage *img, GError **error);
    /* Optional: one qemu-img bitmap operation (see vd_image_bitmap). */
    gboolean (*bitmap)(VdImage *img, VdBitmapOp op, const char *name, guint32 granularity,
                       gboolean disabled, VdImage *source, const char *source_name, GError **error);
    /* Optional: drop everything the image holds, so it reads through to
     * its backing file (after a commit). Without it every cluster is
     * discarded. */
    gboolean (*make_empty)(VdImage *img, GError **error);
} VdDriver;

struct VdImage {
    gint refcount;
    const VdDriver *drv;
    VdFile *file;
    char *filename; /* as the caller named it */
    VdOpenFlags flags;
    gboolean read_write;
    guint64 size; /* virtual size, set by the driver */
    /* Set by the driver's open when the image names a backing file. */
    char *backing_name;
    char *backing_format;
    VdImage *backing; /* opened by the generic layer */
    void *priv;       /* the driver's state */
    /* Error injection on the guest view (a blkdebug node above the
     * format, blkdebug.c), or NULL. */
    struct VdBlkdebug *debug;
    /* Serialises driver calls: drivers need no locking of their own. */
    GMutex lock;
    /* Valid during the driver's open only (borrowed, may be NULL): the
     * --image-opts options and the secrets they name. */
    VdOptions *open_options;
    VdSecrets *secrets;
    /* Set by the driver: the data is encrypted, and whether the key is
     * missing (opened for inspection only). */
    gboolean encrypted;
    gboolean needs_key;
    /* Where the files this image names are looked for (image.c): its
     * name beneath the confinement's folder, if any, and whether it has
     * a folder at all (not when opened from a descriptor named without
     * one). open_ctx is valid during the driver's open only. */
    char *name_beneath;
    gboolean no_folder;
    struct VdOpenContext *open_ctx;
    /* The names of the other files the driver opened (extents, a data
     * file) as the image names them: vd_image_related_files. */
    GPtrArray *related_names;
    /* Valid during the driver's amend only (may be NULL): where a long
     * amend (a downgrade) reports its steps. */
    VdProgressFunc amend_progress;
    gpointer amend_progress_data;
    gboolean amend_force; /* qemu-img amend --force, for the LUKS key slots */
};

/* The passphrase for an encrypted image being opened: the secret the open
 * option key names (qcow2 "encrypt.key-secret", luks "key-secret"), else
 * the secrets' default. *pass is NULL (and TRUE returned) when no key was
 * given at all; naming a secret that does not exist is an error. */
gboolean vd_image_passphrase(VdImage *img, const char *key, const guint8 **pass, gsize *len,
                             GError **error);

/* Error helpers: the message is prefixed with the image's file name. */
void vd_set_error(GError **error, VdImage *img, VdError code, const char *fmt, ...)
    G_GNUC_PRINTF(4, 5);
void vd_set_file_error(GError **error, const char *filename, VdError code, const char *fmt, ...)
    G_GNUC_PRINTF(4, 5);

/* Read [offset, offset+len) of img's backing chain into buf (zeroes where
 * there is no backing file or it is shorter). For drivers doing
 * copy-on-write. Called with img->lock held; takes the backing's lock. */
gboolean vd_image_read_backing(VdImage *img, guint64 offset, void *buf, gsize len, GError **error);

/* Open a file named inside an image (external data file, extent), locked
 * as the image's open flags say. name is resolved relative to the image's
 * folder, beneath the open's confinement when it has one. */
VdFile *vd_image_open_related_file(VdImage *img, const char *name, gboolean read_write,
                                   GError **error);
/* The names of the files in img's folder (beneath the confinement when it
 * has one), for formats that search for a parent; NULL when the image has
 * no folder to search (opened from a descriptor named without one, or
 * with VD_OPEN_NO_RELATED_FILES) or it cannot be read. */
GPtrArray *vd_image_list_folder(VdImage *img, guint max_entries);
/* Open a file img names read-only to look at it, without a lock: NULL
 * (with error set) when it is missing, outside the confinement or no
 * regular file. */
VdFile *vd_image_peek_file(VdImage *img, const char *name, GError **error);
/* Count bytes of metadata tables an open reads into memory against the
 * open's bound (VdConfinement.max_metadata); beyond it fail with
 * VD_ERROR_NOT_SUPPORTED naming what. Call before allocating. */
gboolean vd_image_charge_metadata(VdImage *img, guint64 bytes, const char *what, GError **error);
/* FALSE with "image is open read-only" (naming img) unless img was opened
 * for writing: the one check before every operation that writes. */
gboolean vd_image_require_writable(VdImage *img, GError **error);

/* Little helpers for on-disk numbers. */
static inline guint16 vd_be16(const guint8 *p) { return (guint16)(p[0] << 8 | p[1]); }
static inline guint32 vd_be32(const guint8 *p)
{
    return (guint32)p[0] << 24 | (guint32)p[1] << 16 | (guint32)p[2] << 8 | p[3];
}
static inline guint64 vd_be64(const guint8 *p)
{
    return (guint64)vd_be32(p) << 32 | vd_be32(p + 4);
}
static inline void vd_put_be16(guint8 *p, guint16 v)
{
    p[0] = v >> 8;
    p[1] = (guint8)v;
}
static inline void vd_put_be32(guint8 *p, guint32 v)
{
    p[0] = v >> 24;
    p[1] = (guint8)(v >> 16);
    p[2] = (guint8)(v >> 8);
    p[3] = (guint8)v;
}
static inline void vd_put_be64(guint8 *p, guint64 v)
{
    vd_put_be32(p, (guint32)(v >> 32));
    vd_put_be32(p + 4, (guint32)v);
}
static inline guint16 vd_le16(const guint8 *p) { return (guint16)(p[0] | p[1] << 8); }
static inline guint32 vd_le32(const guint8 *p)
{
    return (guint32)p[0] | (guint32)p[1] << 8 | (guint32)p[2] << 16 | (guint32)p[3] << 24;
}
static inline guint64 vd_le64(const guint8 *p)
{
    return vd_le32(p) | (guint64)vd_le32(p + 4) << 32;
}
static inline void vd_put_le16(guint8 *p, guint16 v)
{
    p[0] = (guint8)v;
    p[1] = v >> 8;
}
static inline void vd_put_le32(guint8 *p, guint32 v)
{
    p[0] = (guint8)v;
    p[1] = (guint8)(v >> 8);
    p[2] = (guint8)(v >> 16);
    p[3] = v >> 24;
}
static inline void vd_put_le64(guint8 *p, guint64 v)
{
    vd_put_le32(p, (guint32)v);
    vd_put_le32(p + 4, (guint32)(v >> 32));
}

/* OVA archives (ova.c): does file look like one, and a slice of file
 * showing disk index (-1: the only disk). */
gboolean vd_ova_probe(VdFile *file);
VdFile *vd_ova_open_disk(VdFile *file, int index, char **member_name, GError **error);

/* ----- compression (compress.c); thread safe, a reused stream per thread ----- */
typedef enum {
    VD_DEFLATE_RAW,  /* raw deflate without header: qcow and qcow2 clusters */
    VD_DEFLATE_ZLIB, /* zlib stream with header: vmdk grains */
} VdDeflateFormat;

/* Compressed length, or 0 when it does not fit in out_len. */
gsize vd_deflate(VdDeflateFormat format, const void *in, gsize len, void *out, gsize out_len);
/* Inflate into out; *produced bytes came out, *complete when the stream
 * ended. FALSE for damaged data. */
gboolean vd_inflate(VdDeflateFormat format, const void *in, gsize len, void *out, gsize out_len,
                    gsize *produced, gboolean *complete);
/* Tests only: FALSE turns libdeflate off (zlib deflates and inflates),
 * TRUE on again. Returns FALSE in a build without libdeflate. */
gboolean vd_compress_use_libdeflate(gboolean use);
gsize vd_zstd_compress(const void *in, gsize len, void *out, gsize out_len);
/* Exactly out_len bytes, or FALSE. */
gboolean vd_zstd_decompress(const void *in, gsize len, void *out, gsize out_len);

/* Room that compressing len bytes may need (deflate and zstd worst case). */
static inline gsize vd_compress_bound(gsize len) { return len + len / 128 + 1024; }

/* Is buf all zero bytes? */
gboolean vd_buffer_is_zero(const void *buf, gsize len);

/* The drivers this build has. */
extern const VdDriver vd_driver_raw;
extern const VdDriver vd_driver_qcow2;
extern const VdDriver vd_driver_qcow;
extern const VdDriver vd_driver_cow;
extern const VdDriver vd_driver_vdi;
extern const VdDriver vd_driver_vmdk;
extern const VdDriver vd_driver_luks;
extern const VdDriver vd_driver_vpc;
extern const VdDriver vd_driver_null;
extern const VdDriver vd_driver_compress_filter;
/* Is file, named .vhd, one ending with a VHD footer (a fixed VHD, which
 * probing its first bytes cannot tell from raw)? */
gboolean vd_vpc_probe_footer(VdFile *file);
/* vd_image_create's part for an rbd: name (rbd.c): the RBD image of
 * params->size, and drv's image in it (raw only); removed again when
 * that fails. */
gboolean vd_rbd_create_format(const char *name, const VdDriver *drv, VdCreateParams *params,
                              gboolean no_flush, GError **error);

G_END_DECLS
