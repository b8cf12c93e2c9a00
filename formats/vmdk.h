/* vmdk: VMware virtual disks. What the three vmdk files share: the
 * descriptor (vmdk-descriptor.c), the extents and their sparse
 * implementations (vmdk-sparse.c) and the driver that ties them together
 * (vmdk.c).
 *
 * A vmdk image is a descriptor (a small text) plus one or more extents. The
 * descriptor lives in its own file, or embedded in the single sparse extent
 * of a monolithicSparse/streamOptimized image.
 */
#pragma once

#include "vdisk-driver.h"

#define VMDK_SECTOR 512u
/* Descriptors are a few hundred bytes; anything this large is not one. */
#define VMDK_MAX_DESCRIPTOR (64u * 1024)
#define VMDK_MAX_LINE 4096u
#define VMDK_MAX_EXTENTS 4096u
/* A parentCID without a parent. */
#define VMDK_NO_PARENT_CID 0xffffffffu

typedef enum {
    VMDK_EXTENT_FLAT,       /* FLAT, VMFS: the guest bytes at an offset of a file */
    VMDK_EXTENT_SPARSE,     /* hosted sparse (KDMV), streamOptimized included */
    VMDK_EXTENT_ZERO,       /* reads as zeroes, stores nothing */
    VMDK_EXTENT_SESPARSE,   /* ESXi 6.5+ snapshot deltas, read only */
    VMDK_EXTENT_VMFSSPARSE, /* old ESX "COWD" deltas: recognised, refused */
} VmdkExtentType;

typedef enum {
    VMDK_ACCESS_RW,
    VMDK_ACCESS_RDONLY,
    VMDK_ACCESS_NOACCESS,
} VmdkAccess;

/* One extent line as the descriptor states it. */
typedef struct {
    VmdkAccess access;
    guint64 sectors;
    VmdkExtentType type;
    char *filename;
    guint64 offset; /* FLAT: sectors into the file */
} VmdkExtentLine;

typedef struct {
    guint32 cid;
    guint32 parent_cid;
    char *create_type;  /* NULL when the descriptor has none */
    char *parent_hint;  /* parentFileNameHint, or NULL */
    GPtrArray *extents; /* of VmdkExtentLine */
} VmdkDescriptor;

/* An empty descriptor: CID 0, no parent, no extents. */
VmdkDescriptor *vmdk_descriptor_new(void);
void vmdk_descriptor_free(VmdkDescriptor *desc);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmdkDescriptor, vmdk_descriptor_free)

/* Parse descriptor text (len bytes, need not be NUL-terminated; parsing
 * stops at the first NUL). filename names the file in messages. An embedded
 * descriptor may have no extent lines. Returns a new descriptor. */
VmdkDescriptor *vmdk_descriptor_parse(const char *text, gsize len, const char *filename,
                                      gboolean embedded, GError **error);

/* Check that an extent file name stays inside the descriptor's folder:
 * relative, no ".." component, no Windows device or drive path. */
gboolean vmdk_extent_name_is_safe(const char *name, const char *filename, GError **error);

/* What the descriptor's disk database says about the virtual hardware. */
typedef struct {
    const char *hwversion;    /* ddb.virtualHWVersion */
    const char *adapter_type; /* ide, buslogic, lsilogic, legacyESX */
    const char *toolsversion;
    guint64 sectors; /* capacity, for the geometry */
} VmdkDdb;

/* The descriptor text vdisk writes (the layout qemu-img and VMware use).
 * Returns a new string. */
char *vmdk_descriptor_format(const VmdkDescriptor *desc, const VmdkDdb *ddb);

/* text with its CID line set to cid (added when missing). New string. */
char *vmdk_descriptor_replace_cid(const char *text, gsize len, guint32 cid);

/* ----- extents ----- */

typedef struct VmdkSparse VmdkSparse;
typedef struct VmdkSeSparse VmdkSeSparse;

typedef struct {
    VmdkExtentType type;
    VdFile *file;        /* NULL for ZERO extents */
    gboolean own_file;   /* FALSE when it is img->file */
    char *filename;      /* as qemu names it: beside the descriptor's name */
    guint64 start;       /* guest byte where the extent begins */
    guint64 length;      /* guest bytes */
    guint64 flat_offset; /* FLAT: byte offset of the data in the file */
    gboolean read_only;
    VmdkSparse *sparse;
    VmdkSeSparse *sesparse;
} VmdkExtent;

typedef struct {
    VmdkDescriptor *desc;
    GPtrArray *extents; /* of VmdkExtent */
    /* Where the descriptor lives, for rewriting the CID on first write. */
    gboolean desc_in_own_file;
    guint64 desc_offset;   /* embedded: byte offset in img->file */
    guint64 desc_capacity; /* embedded: bytes reserved for it */
    char *desc_text;
    gsize desc_len;
    gboolean cid_updated;
} VmdkState;

/* ----- hosted sparse extents (vmdk-sparse.c) ----- */

/* qemu's "L1 size too big" limit on grain directory entries. */
#define VMDK_MAX_GD_ENTRIES (32u * 1024 * 1024)

/* What a grain table entry says, in every sparse flavour. */
typedef enum {
    VMDK_GRAIN_UNALLOCATED,
    VMDK_GRAIN_ZERO,
    VMDK_GRAIN_DATA,
    VMDK_GRAIN_COMPRESSED,
    VMDK_GRAIN_PENDING, /* streamOptimized: held in memory, not yet written */
} VmdkGrainKind;

VdExtentKind vmdk_grain_extent_kind(VmdkGrainKind kind);

#define VMDK_SPARSE_MAGIC 0x564d444bu /* "KDMV" little endian */
#define VMDK_SESPARSE_MAGIC 0x00000000cafebabeull
#define VMDK_COWD_MAGIC 0x44574f43u /* "COWD" */

/* Open the sparse extent in ext->file whose first sector is header. For a
 * monolithic image, desc_offset and desc_size receive where the embedded
 * descriptor lies (bytes; 0 when none). */
gboolean vmdk_sparse_open(VdImage *img, VmdkExtent *ext, const guint8 *header, guint64 *desc_offset,
                          guint64 *desc_size, GError **error);
void vmdk_sparse_free(VmdkSparse *sp);
guint64 vmdk_sparse_capacity(const VmdkSparse *sp); /* bytes */
guint32 vmdk_sparse_grain_bytes(const VmdkSparse *sp);
gboolean vmdk_sparse_is_compressed(const VmdkSparse *sp);
/* Prepare a compressed extent for writing: only an empty one can be, and
 * it is then written front to back. */
gboolean vmdk_sparse_start_stream(VdImage *img, VmdkExtent *ext, GError **error);
gboolean vmdk_sparse_is_stream_writer(const VmdkSparse *sp);

/* Offsets are relative to the extent's start. */
gboolean vmdk_sparse_status(VdImage *img, VmdkExtent *ext, guint64 offset, guint64 len,
                            VdExtent *out, GError **error);
gboolean vmdk_sparse_read(VdImage *img, VmdkExtent *ext, guint64 offset, guint8 *buf, gsize len,
                          GError **error);
/* The compressed grain holding offset (within the extent), for reading it
 * without the image lock (vd_image_read), and inflating it. */
gboolean vmdk_sparse_packed_unit(VdImage *img, VmdkExtent *ext, guint64 offset, VdPackedUnit *unit,
                                 GError **error);
gboolean vmdk_sparse_inflate_unit(const VdPackedUnit *unit, const guint8 *in, guint8 *out,
                                  GError **error);
gboolean vmdk_sparse_write(VdImage *img, VmdkExtent *ext, guint64 offset, const guint8 *buf,
                           gsize len, GError **error);
gboolean vmdk_sparse_write_zeroes(VdImage *img, VmdkExtent *ext, guint64 offset, guint64 len,
                                  GError **error);
/* streamOptimized: store one grain compressed by vmdk_compress_grain. */
gboolean vmdk_sparse_write_compressed(VdImage *img, VmdkExtent *ext, guint64 offset,
                                      const guint8 *data, gsize len, GError **error);
/* Write what is held in memory (pending grain, grain tables, footer). */
gboolean vmdk_sparse_flush(VdImage *img, VmdkExtent *ext, GError **error);
gboolean vmdk_sparse_check(VdImage *img, VmdkExtent *ext, VdCheckResult *res, GError **error);

/* Deflate one grain (len bytes, zero-padded to grain_bytes) as a zlib
 * stream into out. Returns the length, 0 when out is too small. */
gsize vmdk_compress_grain(const void *in, gsize len, guint32 grain_bytes, void *out, gsize out_len);

typedef struct {
    guint64 capacity; /* sectors */
    guint32 grain_sectors;
    gboolean zeroed_grain;
    gboolean stream;        /* streamOptimized: compressed grains with markers */
    const char *descriptor; /* embedded descriptor text, or NULL */
} VmdkSparseCreate;

/* Write an empty sparse extent into file (zero length). */
gboolean vmdk_sparse_create(VdFile *file, const VmdkSparseCreate *params, GError **error);

/* ----- seSparse (vmdk-sesparse.c) ----- */
gboolean vmdk_sesparse_open(VdImage *img, VmdkExtent *ext, GError **error);
void vmdk_sesparse_free(VmdkSeSparse *se);
gboolean vmdk_sesparse_status(VdImage *img, VmdkExtent *ext, guint64 offset, guint64 len,
                              VdExtent *out, GError **error);
gboolean vmdk_sesparse_read(VdImage *img, VmdkExtent *ext, guint64 offset, guint8 *buf, gsize len,
                            GError **error);
