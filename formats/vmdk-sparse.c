/* vmdk hosted sparse extents ("KDMV"), streamOptimized included.
 *
 * A sparse extent maps guest grains through a two-level table: the grain
 * directory (GD) points at grain tables (GT) of numGTEsPerGT entries, each
 * the sector of one grain. Entry 0 means "not here" (the parent answers) and,
 * with the zeroed-grain flag, entry 1 means "reads as zeroes".
 *
 * streamOptimized extents store every grain deflated behind a small marker
 * and, in version 3, keep the real GD at the end of the file, found through a
 * footer (a copy of the header) just before the end-of-stream marker. They
 * are written strictly front to back: grains are appended as they come and
 * the tables, footer and end-of-stream marker are written at flush/close.
 */
#include "vmdk.h"

#include "blkdebug.h"

#include <stdlib.h>
#include <zlib.h>

/* Sparse extent header, little endian, in the extent's first sector. */
#define HDR_MAGIC 0
#define HDR_VERSION 4
#define HDR_FLAGS 8
#define HDR_CAPACITY 12   /* sectors */
#define HDR_GRAIN_SIZE 20 /* sectors */
#define HDR_DESC_OFFSET 28
#define HDR_DESC_SIZE 36
#define HDR_NUM_GTES 44
#define HDR_RGD_OFFSET 48
#define HDR_GD_OFFSET 56
#define HDR_OVERHEAD 64 /* sectors before the first grain */
#define HDR_UNCLEAN 72
#define HDR_NL_CHARS 73 /* '\n' ' ' '\r' '\n': catches text-mode transfers */
#define HDR_COMPRESS_ALGO 77

#define FLAG_NL_DETECT (1u << 0)
#define FLAG_RGD (1u << 1)
#define FLAG_ZERO_GRAIN (1u << 2)
#define FLAG_COMPRESSED (1u << 16)
#define FLAG_MARKERS (1u << 17)

#define GD_AT_END G_MAXUINT64
#define GTE_ZERO 1u
#define COMPRESS_DEFLATE 1

/* streamOptimized markers: a grain marker is (lba, size) followed at once by
 * the deflated grain; a metadata marker has size 0, a type and fills one
 * sector, and the metadata follows in the next sector. */
#define MARKER_VAL 0
#define MARKER_SIZE 8
#define MARKER_TYPE 12
#define MARKER_GRAIN_DATA 12
enum { MARKER_EOS = 0, MARKER_GT = 1, MARKER_GD = 2, MARKER_FOOTER = 3 };

/* Limits on untrusted headers. qemu accepts grains up to 1 GiB; every real
 * writer uses 4 KiB..64 KiB, and a grain is one buffer here, so 1 MiB. */
#define MAX_GRAIN_SECTORS 2048u
#define MAX_GTES 512u
#define MAX_VERSION 3
/* The default layout qemu-img and VMware write. */
#define DEFAULT_GTES 512u
#define DESC_SECTORS 20u

typedef struct {
    guint64 tail;   /* byte offset where the next grain goes */
    gint64 pending; /* grain held in buf, -1 none */
    guint8 *buf;    /* one grain */
    guint64 next;   /* grains below this are stored for good */
    gboolean dirty; /* tables and footer must be (re)written */
    guint8 *zbuf;   /* deflate output */
    gsize zbuf_len;
} VmdkStream;

struct VmdkSparse {
    guint8 header[VMDK_SECTOR]; /* as read (the footer's, for version 3) */
    guint32 version;
    guint32 flags;
    guint64 capacity; /* sectors */
    guint32 grain_sectors;
    guint32 grain_bytes;
    guint32 gtes;
    guint64 grains;
    guint32 gd_entries;
    guint64 gd_sector;
    guint64 rgd_sector; /* 0: no redundant directory */
    guint64 overhead;   /* sectors */
    guint32 *gd;
    guint32 *rgd;
    guint32 **gts; /* per directory entry, loaded on first use */
    gboolean *gt_dirty;
    gboolean compressed;
    gboolean markers;
    gboolean zero_grain;
    guint64 file_size;   /* bytes; new grains are appended here */
    gint64 cached_grain; /* the decompressed grain in cache, -1 none */
    guint8 *cache;
    VmdkStream *stream;
};

/* ----- small helpers ----- */

static guint64 div_round_up(guint64 a, guint64 b) { return a / b + (a % b != 0); }
static guint64 round_up(guint64 a, guint64 b) { return div_round_up(a, b) * b; }

static const char *ext_name(VmdkExtent *ext) { return vd_file_name(ext->file); }

static gsize gt_bytes(const VmdkSparse *sp) { return (gsize)sp->gtes * 4; }
static guint64 gt_sectors(const VmdkSparse *sp) { return div_round_up(gt_bytes(sp), VMDK_SECTOR); }
static guint64 gd_sectors(const VmdkSparse *sp)
{
    return div_round_up((guint64)sp->gd_entries * 4, VMDK_SECTOR);
}

guint64 vmdk_sparse_capacity(const VmdkSparse *sp) { return sp->capacity * VMDK_SECTOR; }
guint32 vmdk_sparse_grain_bytes(const VmdkSparse *sp) { return sp->grain_bytes; }
gboolean vmdk_sparse_is_compressed(const VmdkSparse *sp) { return sp->compressed; }
gboolean vmdk_sparse_is_stream_writer(const VmdkSparse *sp) { return sp->stream != NULL; }

static void stream_free(VmdkStream *st)
{
    if (st == NULL)
        return;
    g_free(st->buf);
    g_free(st->zbuf);
    g_free(st);
}

void vmdk_sparse_free(VmdkSparse *sp)
{
    if (sp == NULL)
        return;
    if (sp->gts != NULL)
        for (guint32 i = 0; i < sp->gd_entries; i++)
            g_free(sp->gts[i]);
    g_free(sp->gts);
    g_free(sp->gt_dirty);
    g_free(sp->gd);
    g_free(sp->rgd);
    g_free(sp->cache);
    stream_free(sp->stream);
    g_free(sp);
}

/* Read a table of n little-endian 32-bit entries. */
static guint32 *read_table(VdFile *file, guint64 offset, guint32 n, GError **error)
{
    if (n == 0)
        return g_new0(guint32, 1); /* an empty disk still has a (void) table */
    g_autofree guint8 *raw = g_malloc((gsize)n * 4);
    if (!vd_file_pread(file, offset, raw, (gsize)n * 4, error))
        return NULL;
    guint32 *table = g_new(guint32, n);
    for (guint32 i = 0; i < n; i++)
        table[i] = vd_le32(raw + (gsize)i * 4);
    return table;
}

static gboolean write_table(VdFile *file, guint64 offset, const guint32 *table, guint32 n,
                            GError **error)
{
    g_autofree guint8 *raw = g_malloc((gsize)n * 4);
    for (guint32 i = 0; i < n; i++)
        vd_put_le32(raw + (gsize)i * 4, table[i]);
    return vd_file_pwrite(file, offset, raw, (gsize)n * 4, error);
}

/* ----- opening ----- */

static gboolean check_header(VmdkExtent *ext, VmdkSparse *sp, const guint8 *h, GError **error)
{
    const char *name = ext_name(ext);
    sp->version = vd_le32(h + HDR_VERSION);
    sp->flags = vd_le32(h + HDR_FLAGS);
    sp->capacity = vd_le64(h + HDR_CAPACITY);
    guint64 grain = vd_le64(h + HDR_GRAIN_SIZE);
    sp->gtes = vd_le32(h + HDR_NUM_GTES);
    sp->overhead = vd_le64(h + HDR_OVERHEAD);
    if (sp->version == 0 || sp->version > MAX_VERSION) {
        vd_set_file_error(error, name, VD_ERROR_UNSUPPORTED_FORMAT,
                          "unsupported sparse extent version %u", sp->version);
        return FALSE;
    }
    if (grain == 0 || grain > MAX_GRAIN_SECTORS || (grain & (grain - 1)) != 0) {
        vd_set_file_error(error, name, VD_ERROR_CORRUPT,
                          "grain size of %" G_GUINT64_FORMAT
                          " sectors is not a power of two up to %u",
                          grain, MAX_GRAIN_SECTORS);
        return FALSE;
    }
    if (sp->gtes == 0 || sp->gtes > MAX_GTES) {
        vd_set_file_error(error, name, VD_ERROR_CORRUPT,
                          "%u entries per grain table (at most %u are allowed): L2 table size "
                          "invalid",
                          sp->gtes, MAX_GTES);
        return FALSE;
    }
    sp->grain_sectors = (guint32)grain;
    sp->grain_bytes = sp->grain_sectors * VMDK_SECTOR;
    if (sp->capacity > G_MAXINT64 / VMDK_SECTOR) {
        vd_set_file_error(error, name, VD_ERROR_CORRUPT,
                          "L1 size too big: capacity of %" G_GUINT64_FORMAT " sectors",
                          sp->capacity);
        return FALSE;
    }
    sp->grains = div_round_up(sp->capacity, sp->grain_sectors);
    guint64 gd_entries = div_round_up(sp->grains, sp->gtes);
    if (gd_entries > VMDK_MAX_GD_ENTRIES) {
        vd_set_file_error(error, name, VD_ERROR_CORRUPT,
                          "L1 size too big: %" G_GUINT64_FORMAT " grain tables for a capacity "
                          "of %" G_GUINT64_FORMAT " sectors",
                          gd_entries, sp->capacity);
        return FALSE;
    }
    sp->gd_entries = (guint32)gd_entries;
    guint16 algo = vd_le16(h + HDR_COMPRESS_ALGO);
    /* qemu decides by the algorithm field; the flag alone is not enough. */
    sp->compressed = algo == COMPRESS_DEFLATE;
    if (algo > COMPRESS_DEFLATE) {
        vd_set_file_error(error, name, VD_ERROR_UNSUPPORTED_FORMAT,
                          "unknown grain compression algorithm %u", algo);
        return FALSE;
    }
    sp->markers = (sp->flags & FLAG_MARKERS) != 0;
    sp->zero_grain = (sp->flags & FLAG_ZERO_GRAIN) != 0;
    sp->gd_sector = vd_le64(h + HDR_GD_OFFSET);
    sp->rgd_sector = (sp->flags & FLAG_RGD) ? vd_le64(h + HDR_RGD_OFFSET) : 0;
    return TRUE;
}

/* Version 3 streamOptimized extents keep the directory's offset in a footer
 * (a second header) before the end-of-stream marker at the end of the file. */
static gboolean read_footer(VmdkExtent *ext, VmdkSparse *sp, guint8 *h, GError **error)
{
    const char *name = ext_name(ext);
    guint8 tail[3 * VMDK_SECTOR];
    if (sp->file_size < sp->overhead * VMDK_SECTOR + sizeof tail ||
        !vd_file_pread(ext->file, sp->file_size - sizeof tail, tail, sizeof tail, error)) {
        g_clear_error(error);
        vd_set_file_error(error, name, VD_ERROR_CORRUPT,
                          "the grain directory is at the end of the stream, but the file ends "
                          "without a footer");
        return FALSE;
    }
    const guint8 *marker = tail, *footer = tail + VMDK_SECTOR, *eos = tail + 2 * VMDK_SECTOR;
    if (vd_le32(marker + MARKER_SIZE) != 0 || vd_le32(marker + MARKER_TYPE) != MARKER_FOOTER ||
        vd_le32(footer + HDR_MAGIC) != VMDK_SPARSE_MAGIC || vd_le32(eos + MARKER_SIZE) != 0 ||
        vd_le32(eos + MARKER_TYPE) != MARKER_EOS) {
        vd_set_file_error(error, name, VD_ERROR_CORRUPT,
                          "invalid footer: the stream is truncated or damaged");
        return FALSE;
    }
    memcpy(h, footer, VMDK_SECTOR);
    if (!check_header(ext, sp, h, error))
        return FALSE;
    if (sp->gd_sector == GD_AT_END) {
        vd_set_file_error(error, name, VD_ERROR_CORRUPT,
                          "the footer does not locate the grain "
                          "directory");
        return FALSE;
    }
    return TRUE;
}

static gboolean table_in_file(VmdkSparse *sp, guint64 sector, guint64 bytes)
{
    return sector != 0 && sector <= G_MAXUINT64 / VMDK_SECTOR &&
           sector * VMDK_SECTOR <= sp->file_size && bytes <= sp->file_size - sector * VMDK_SECTOR;
}

static gboolean load_directories(VdImage *img, VmdkExtent *ext, VmdkSparse *sp, GError **error)
{
    guint64 bytes = (guint64)sp->gd_entries * 4;
    if (!table_in_file(sp, sp->gd_sector, bytes)) {
        vd_set_file_error(error, ext_name(ext), VD_ERROR_CORRUPT,
                          "grain directory at sector %" G_GUINT64_FORMAT " lies outside the file",
                          sp->gd_sector);
        return FALSE;
    }
    /* The directory and its copy, as read and as kept, and a slot and a
     * flag per grain table. */
    guint64 held = bytes * 4 + (guint64)sp->gd_entries * (sizeof(guint32 *) + sizeof(gboolean));
    if (!vd_image_charge_metadata(img, held, "grain directory", error))
        return FALSE;
    sp->gd = read_table(ext->file, sp->gd_sector * VMDK_SECTOR, sp->gd_entries, error);
    if (sp->gd == NULL)
        return FALSE;
    /* The redundant copy only matters for keeping it in step when writing;
     * one that does not fit in the file is dropped, as reads never use it. */
    if (sp->rgd_sector != 0 && table_in_file(sp, sp->rgd_sector, bytes))
        sp->rgd = read_table(ext->file, sp->rgd_sector * VMDK_SECTOR, sp->gd_entries, NULL);
    if (sp->rgd == NULL)
        sp->rgd_sector = 0;
    sp->gts = g_new0(guint32 *, sp->gd_entries);
    sp->gt_dirty = g_new0(gboolean, sp->gd_entries);
    return TRUE;
}

gboolean vmdk_sparse_open(VdImage *img, VmdkExtent *ext, const guint8 *header, guint64 *desc_offset,
                          guint64 *desc_size, GError **error)
{
    VmdkSparse *sp = g_new0(VmdkSparse, 1);
    sp->cached_grain = -1;
    ext->sparse = sp;
    const char *name = ext_name(ext);
    memcpy(sp->header, header, VMDK_SECTOR);
    if (!vd_file_size(ext->file, &sp->file_size, error) ||
        !check_header(ext, sp, sp->header, error))
        return FALSE;
    if (desc_offset != NULL) {
        guint64 off = vd_le64(header + HDR_DESC_OFFSET), size = vd_le64(header + HDR_DESC_SIZE);
        *desc_offset = off <= G_MAXUINT64 / VMDK_SECTOR ? off * VMDK_SECTOR : G_MAXUINT64;
        *desc_size = size <= G_MAXUINT64 / VMDK_SECTOR ? size * VMDK_SECTOR : G_MAXUINT64;
    }
    guint64 overhead_bytes =
        sp->overhead > G_MAXUINT64 / VMDK_SECTOR ? G_MAXUINT64 : sp->overhead * VMDK_SECTOR;
    if (sp->file_size < overhead_bytes) {
        vd_set_file_error(error, name, VD_ERROR_CORRUPT,
                          "file truncated: it is %" G_GUINT64_FORMAT
                          " bytes, the header expects at least %" G_GUINT64_FORMAT " bytes",
                          sp->file_size, overhead_bytes);
        return FALSE;
    }
    if (sp->gd_sector == GD_AT_END && !read_footer(ext, sp, sp->header, error))
        return FALSE;
    if (!load_directories(img, ext, sp, error))
        return FALSE;
    sp->file_size = round_up(sp->file_size, VMDK_SECTOR);
    ext->length = vmdk_sparse_capacity(sp);
    return TRUE;
}

/* ----- grain tables ----- */

/* Append zeroed grain tables for directory entry i (and its redundant copy). */
static gboolean allocate_gt(VdImage *img, VmdkExtent *ext, VmdkSparse *sp, guint32 i,
                            GError **error)
{
    guint64 size = gt_sectors(sp) * VMDK_SECTOR;
    guint64 at = sp->file_size;
    guint64 copies = sp->rgd != NULL ? 2 : 1;
    if (at / VMDK_SECTOR + copies * gt_sectors(sp) > G_MAXUINT32) {
        vd_set_file_error(error, ext_name(ext), VD_ERROR_NO_SPACE,
                          "the extent is full: sector numbers would pass 2^32");
        return FALSE;
    }
    if (!vd_file_write_zeroes(ext->file, at, copies * size, FALSE, error))
        return FALSE;
    sp->file_size += copies * size;
    sp->gd[i] = (guint32)(at / VMDK_SECTOR);
    guint8 entry[4];
    vd_put_le32(entry, sp->gd[i]);
    if (!vd_file_pwrite(ext->file, sp->gd_sector * VMDK_SECTOR + (guint64)i * 4, entry, 4, error))
        return FALSE;
    if (sp->rgd != NULL) {
        sp->rgd[i] = (guint32)((at + size) / VMDK_SECTOR);
        vd_put_le32(entry, sp->rgd[i]);
        if (!vd_file_pwrite(ext->file, sp->rgd_sector * VMDK_SECTOR + (guint64)i * 4, entry, 4,
                            error))
            return FALSE;
    }
    sp->gts[i] = g_new0(guint32, sp->gtes);
    return TRUE;
}

/* The grain table of directory entry i: NULL in *out when there is none
 * (and allocate is FALSE). */
static gboolean get_gt(VdImage *img, VmdkExtent *ext, guint32 i, gboolean allocate, guint32 **out,
                       GError **error)
{
    VmdkSparse *sp = ext->sparse;
    *out = sp->gts[i];
    if (*out != NULL)
        return TRUE;
    if (sp->gd[i] == 0 || sp->stream != NULL) {
        if (!allocate)
            return TRUE;
        if (sp->stream != NULL) { /* stream tables live in memory until the end */
            *out = sp->gts[i] = g_new0(guint32, sp->gtes);
            return TRUE;
        }
        if (!allocate_gt(img, ext, sp, i, error))
            return FALSE;
        *out = sp->gts[i];
        return TRUE;
    }
    if (!table_in_file(sp, sp->gd[i], gt_bytes(sp))) {
        vd_set_file_error(error, ext_name(ext), VD_ERROR_CORRUPT,
                          "grain table %u at sector %u lies outside the file", i, sp->gd[i]);
        return FALSE;
    }
    sp->gts[i] = read_table(ext->file, (guint64)sp->gd[i] * VMDK_SECTOR, sp->gtes, error);
    *out = sp->gts[i];
    return *out != NULL;
}

static gboolean lookup(VdImage *img, VmdkExtent *ext, guint64 grain, VmdkGrainKind *kind,
                       guint64 *sector, GError **error)
{
    VmdkSparse *sp = ext->sparse;
    *sector = 0;
    if (sp->stream != NULL && (gint64)grain == sp->stream->pending) {
        *kind = VMDK_GRAIN_PENDING;
        return TRUE;
    }
    guint32 *gt;
    if (!get_gt(img, ext, (guint32)(grain / sp->gtes), FALSE, &gt, error))
        return FALSE;
    guint32 entry = gt != NULL ? gt[grain % sp->gtes] : 0;
    if (entry == 0)
        *kind = VMDK_GRAIN_UNALLOCATED;
    else if (entry == GTE_ZERO && sp->zero_grain)
        *kind = VMDK_GRAIN_ZERO;
    else
        *kind = sp->compressed ? VMDK_GRAIN_COMPRESSED : VMDK_GRAIN_DATA;
    *sector = entry;
    if ((*kind == VMDK_GRAIN_DATA || *kind == VMDK_GRAIN_COMPRESSED) &&
        (guint64)entry * VMDK_SECTOR >= sp->file_size) {
        vd_set_file_error(error, ext_name(ext), VD_ERROR_CORRUPT,
                          "grain %" G_GUINT64_FORMAT " points to sector %u, past the end of "
                          "the file",
                          grain, entry);
        return FALSE;
    }
    return TRUE;
}

static gboolean set_entry(VdImage *img, VmdkExtent *ext, guint64 grain, guint32 value,
                          GError **error)
{
    VmdkSparse *sp = ext->sparse;
    guint32 i = (guint32)(grain / sp->gtes);
    guint32 *gt;
    if (!get_gt(img, ext, i, TRUE, &gt, error))
        return FALSE;
    gt[grain % sp->gtes] = value;
    sp->gt_dirty[i] = TRUE;
    return TRUE;
}

/* Write the grain tables changed since the last call, in both copies. */
static gboolean write_dirty_gts(VmdkExtent *ext, GError **error)
{
    VmdkSparse *sp = ext->sparse;
    if (sp->stream != NULL)
        return TRUE; /* written with the footer */
    for (guint32 i = 0; i < sp->gd_entries; i++) {
        if (!sp->gt_dirty[i])
            continue;
        if (!write_table(ext->file, (guint64)sp->gd[i] * VMDK_SECTOR, sp->gts[i], sp->gtes, error))
            return FALSE;
        if (sp->rgd != NULL && sp->rgd[i] != 0 &&
            !write_table(ext->file, (guint64)sp->rgd[i] * VMDK_SECTOR, sp->gts[i], sp->gtes, error))
            return FALSE;
        sp->gt_dirty[i] = FALSE;
    }
    return TRUE;
}

/* ----- block status ----- */

VdExtentKind vmdk_grain_extent_kind(VmdkGrainKind kind)
{
    switch (kind) {
    case VMDK_GRAIN_UNALLOCATED:
        return VD_EXTENT_UNALLOCATED;
    case VMDK_GRAIN_ZERO:
        return VD_EXTENT_ZERO;
    default:
        return VD_EXTENT_DATA;
    }
}

gboolean vmdk_sparse_status(VdImage *img, VmdkExtent *ext, guint64 offset, guint64 len,
                            VdExtent *out, GError **error)
{
    VmdkSparse *sp = ext->sparse;
    guint64 gb = sp->grain_bytes;
    guint64 grain = offset / gb;
    VmdkGrainKind kind;
    guint64 sector;
    if (!lookup(img, ext, grain, &kind, &sector, error))
        return FALSE;
    guint64 run = MIN(len, gb - offset % gb);
    guint64 next_sector = sector + sp->grain_sectors;
    /* Neighbouring grains of the same kind (and, for plain data, stored one
     * after the other) make one answer, so copies see long runs. */
    while (run < len) {
        VmdkGrainKind k;
        guint64 s;
        if (!lookup(img, ext, grain + 1, &k, &s, error))
            return FALSE;
        if (k != kind || (kind == VMDK_GRAIN_DATA && s != next_sector))
            break;
        grain++;
        next_sector = s + sp->grain_sectors;
        run = MIN(len, run + gb);
    }
    memset(out, 0, sizeof *out);
    out->kind = vmdk_grain_extent_kind(kind);
    out->length = run;
    out->compressed = kind == VMDK_GRAIN_COMPRESSED;
    if (kind == VMDK_GRAIN_DATA) {
        out->offset_valid = TRUE;
        out->host_offset = sector * VMDK_SECTOR + offset % gb;
        out->plain_file = ext->file;
    }
    return TRUE;
}

/* ----- reading ----- */

/* Inflate a zlib stream into one grain; a short stream leaves zeroes. */
static gboolean inflate_grain(VmdkExtent *ext, guint64 grain, const guint8 *in, gsize in_len,
                              guint8 *out, gsize out_len, GError **error)
{
    gsize produced;
    gboolean complete;
    gboolean ok = vd_inflate(VD_DEFLATE_ZLIB, in, in_len, out, out_len, &produced, &complete);
    if (!ok || !complete) {
        vd_set_file_error(error, ext_name(ext), VD_ERROR_CORRUPT,
                          "compressed grain %" G_GUINT64_FORMAT " does not inflate (%s)", grain,
                          ok && produced == out_len ? "larger than a grain" : "damaged data");
        return FALSE;
    }
    memset(out + produced, 0, out_len - produced);
    return TRUE;
}

/* Largest deflated grain we accept: deflate never grows data by more than
 * a small fraction. */
static gsize max_packed(const VmdkSparse *sp)
{
    return sp->grain_bytes + sp->grain_bytes / 8 + 1024;
}

/* Where a compressed grain at sector lies: its marker (with markers) and
 * its deflated data, at most this many bytes. */
static gsize packed_room(const VmdkSparse *sp, guint64 sector)
{
    guint64 pos = sector * VMDK_SECTOR;
    return (gsize)MIN(sp->file_size - pos, (guint64)max_packed(sp) + MARKER_GRAIN_DATA);
}

/* Inflate the grain read from its sector (avail bytes at raw). Uses only
 * what never changes while the image is open, so vd_image_read may call
 * it from several threads without the lock. */
static gboolean unpack_grain(VmdkExtent *ext, guint64 grain, guint64 sector, const guint8 *raw,
                             gsize avail, guint8 *out, GError **error)
{
    VmdkSparse *sp = ext->sparse;
    const guint8 *data = raw;
    gsize data_len = avail;
    if (sp->markers) {
        guint32 size = avail >= MARKER_GRAIN_DATA ? vd_le32(raw + MARKER_SIZE) : 0;
        if (size == 0 || size > avail - MARKER_GRAIN_DATA) {
            vd_set_file_error(error, ext_name(ext), VD_ERROR_CORRUPT,
                              "compressed grain %" G_GUINT64_FORMAT " at sector %" G_GUINT64_FORMAT
                              " has a bad size (%u bytes) or runs past the end of the file",
                              grain, sector, size);
            return FALSE;
        }
        data = raw + MARKER_GRAIN_DATA;
        data_len = size;
    }
    return inflate_grain(ext, grain, data, data_len, out, sp->grain_bytes, error);
}

static gboolean load_compressed(VdImage *img, VmdkExtent *ext, guint64 grain, guint64 sector,
                                GError **error)
{
    VmdkSparse *sp = ext->sparse;
    if (sp->cached_grain == (gint64)grain)
        return TRUE;
    gsize avail = packed_room(sp, sector);
    g_autofree guint8 *raw = g_malloc(avail);
    if (!vd_file_pread_zero_past_eof(ext->file, sector * VMDK_SECTOR, raw, avail, error))
        return FALSE;
    if (sp->cache == NULL)
        sp->cache = g_malloc(sp->grain_bytes);
    sp->cached_grain = -1;
    if (!unpack_grain(ext, grain, sector, raw, avail, sp->cache, error))
        return FALSE;
    sp->cached_grain = (gint64)grain;
    return TRUE;
}

gboolean vmdk_sparse_packed_unit(VdImage *img, VmdkExtent *ext, guint64 offset, VdPackedUnit *unit,
                                 GError **error)
{
    VmdkSparse *sp = ext->sparse;
    guint64 grain = offset / sp->grain_bytes;
    VmdkGrainKind kind;
    guint64 sector;
    memset(unit, 0, sizeof *unit);
    if (!lookup(img, ext, grain, &kind, &sector, error))
        return FALSE;
    if (kind != VMDK_GRAIN_COMPRESSED)
        return TRUE;
    unit->guest_offset = grain * sp->grain_bytes; /* within the extent */
    unit->guest_len = sp->grain_bytes;
    unit->file = ext->file;
    unit->host_offset = sector * VMDK_SECTOR;
    unit->host_len = packed_room(sp, sector);
    unit->part = ext;
    unit->index = grain;
    return TRUE;
}

gboolean vmdk_sparse_inflate_unit(const VdPackedUnit *unit, const guint8 *in, guint8 *out,
                                  GError **error)
{
    return unpack_grain(unit->part, unit->index, unit->host_offset / VMDK_SECTOR, in,
                        unit->host_len, out, error);
}

/* How many bytes from offset are stored uncompressed in one host run? */
static gboolean data_run(VdImage *img, VmdkExtent *ext, guint64 offset, gsize len,
                         guint64 first_sector, gsize *run, GError **error)
{
    VmdkSparse *sp = ext->sparse;
    guint64 gb = sp->grain_bytes;
    guint64 grain = offset / gb;
    gsize n = (gsize)MIN((guint64)len, gb - offset % gb);
    guint64 next = first_sector + sp->grain_sectors;
    while (n < len) {
        VmdkGrainKind k;
        guint64 s;
        if (!lookup(img, ext, ++grain, &k, &s, error))
            return FALSE;
        if (k != VMDK_GRAIN_DATA || s != next)
            break;
        next += sp->grain_sectors;
        n = (gsize)MIN((guint64)len, n + gb);
    }
    *run = n;
    return TRUE;
}

gboolean vmdk_sparse_read(VdImage *img, VmdkExtent *ext, guint64 offset, guint8 *buf, gsize len,
                          GError **error)
{
    VmdkSparse *sp = ext->sparse;
    guint64 gb = sp->grain_bytes;
    while (len > 0) {
        guint64 grain = offset / gb, in = offset % gb;
        gsize n = (gsize)MIN((guint64)len, gb - in);
        VmdkGrainKind kind;
        guint64 sector;
        if (!lookup(img, ext, grain, &kind, &sector, error))
            return FALSE;
        switch (kind) {
        case VMDK_GRAIN_DATA:
            /* Grains stored one after the other are read with one call. */
            vd_file_debug_event(ext->file, VD_EVENT_READ_AIO);
            if (!data_run(img, ext, offset, len, sector, &n, error) ||
                !vd_file_pread_zero_past_eof(ext->file, sector * VMDK_SECTOR + in, buf, n, error))
                return FALSE;
            break;
        case VMDK_GRAIN_COMPRESSED:
            if (!load_compressed(img, ext, grain, sector, error))
                return FALSE;
            memcpy(buf, sp->cache + in, n);
            break;
        case VMDK_GRAIN_PENDING:
            memcpy(buf, sp->stream->buf + in, n);
            break;
        default:
            memset(buf, 0, n); /* callers ask for data only; be safe anyway */
            break;
        }
        offset += n;
        buf += n;
        len -= n;
    }
    return TRUE;
}

/* ----- writing plain sparse extents ----- */

/* The bytes a grain held before a partial write: the parent's, or zeroes. */
static gboolean grain_base(VdImage *img, VmdkExtent *ext, guint64 grain, VmdkGrainKind kind,
                           guint8 *out, GError **error)
{
    guint64 gb = ext->sparse->grain_bytes;
    memset(out, 0, gb);
    if (kind != VMDK_GRAIN_UNALLOCATED || img->backing_name == NULL)
        return TRUE;
    guint64 guest = ext->start + grain * gb;
    if (guest >= img->size)
        return TRUE;
    return vd_image_read_backing(img, guest, out, (gsize)MIN(gb, img->size - guest), error);
}

/* Grain table entries are 32-bit sectors: nothing may be stored past 2 TiB. */
static gboolean check_room(VmdkExtent *ext, guint64 end, GError **error)
{
    if (end / VMDK_SECTOR > G_MAXUINT32) {
        vd_set_file_error(error, ext_name(ext), VD_ERROR_NO_SPACE,
                          "the extent is full: grain sectors would pass 2^32");
        return FALSE;
    }
    return TRUE;
}

/* Give grains [grain, grain+count) new storage at the end of the file,
 * filled from data (whole grains) or, for one partial grain, from its old
 * content with the write applied. */
static gboolean allocate_grains(VdImage *img, VmdkExtent *ext, guint64 grain, guint64 count,
                                guint64 in, const guint8 *data, gsize n, VmdkGrainKind kind,
                                GError **error)
{
    VmdkSparse *sp = ext->sparse;
    guint64 gb = sp->grain_bytes;
    guint64 at = sp->file_size;
    if (!check_room(ext, at + count * gb, error))
        return FALSE;
    vd_file_debug_event(ext->file, VD_EVENT_WRITE_AIO);
    if (n == count * gb) {
        if (!vd_file_pwrite(ext->file, at, data, n, error))
            return FALSE;
    } else {
        g_autofree guint8 *tmp = g_malloc(gb);
        if (!grain_base(img, ext, grain, kind, tmp, error))
            return FALSE;
        memcpy(tmp + in, data, n);
        if (!vd_file_pwrite(ext->file, at, tmp, gb, error))
            return FALSE;
    }
    sp->file_size += count * gb;
    for (guint64 i = 0; i < count; i++)
        if (!set_entry(img, ext, grain + i, (guint32)(at / VMDK_SECTOR + i * sp->grain_sectors),
                       error))
            return FALSE;
    return TRUE;
}

/* Count the whole, not yet stored grains from grain on that data covers. */
static gboolean new_grain_run(VdImage *img, VmdkExtent *ext, guint64 grain, gsize len,
                              guint64 *count, GError **error)
{
    guint64 gb = ext->sparse->grain_bytes;
    *count = 1;
    while ((*count + 1) * gb <= len) {
        VmdkGrainKind k;
        guint64 s;
        if (!lookup(img, ext, grain + *count, &k, &s, error))
            return FALSE;
        if (k != VMDK_GRAIN_UNALLOCATED && k != VMDK_GRAIN_ZERO)
            break;
        (*count)++;
    }
    return TRUE;
}

static gboolean plain_write(VdImage *img, VmdkExtent *ext, guint64 offset, const guint8 *buf,
                            gsize len, GError **error)
{
    VmdkSparse *sp = ext->sparse;
    guint64 gb = sp->grain_bytes;
    while (len > 0) {
        guint64 grain = offset / gb, in = offset % gb;
        gsize n = (gsize)MIN((guint64)len, gb - in);
        VmdkGrainKind kind;
        guint64 sector;
        if (!lookup(img, ext, grain, &kind, &sector, error))
            return FALSE;
        if (kind == VMDK_GRAIN_DATA) {
            vd_file_debug_event(ext->file, VD_EVENT_WRITE_AIO);
            if (!data_run(img, ext, offset, len, sector, &n, error) ||
                !vd_file_pwrite(ext->file, sector * VMDK_SECTOR + in, buf, n, error))
                return FALSE;
        } else if (kind == VMDK_GRAIN_COMPRESSED) {
            vd_set_file_error(error, ext_name(ext), VD_ERROR_NOT_SUPPORTED,
                              "compressed grains cannot be overwritten");
            return FALSE;
        } else {
            guint64 count = 1;
            if (in == 0 && n == gb && !new_grain_run(img, ext, grain, len, &count, error))
                return FALSE;
            if (count > 1)
                n = (gsize)(count * gb);
            if (!allocate_grains(img, ext, grain, count, in, buf, n, kind, error))
                return FALSE;
        }
        offset += n;
        buf += n;
        len -= n;
    }
    return write_dirty_gts(ext, error);
}

static gboolean plain_write_zeroes(VdImage *img, VmdkExtent *ext, guint64 offset, guint64 len,
                                   GError **error)
{
    VmdkSparse *sp = ext->sparse;
    guint64 gb = sp->grain_bytes;
    g_autofree guint8 *zeroes = NULL;
    while (len > 0) {
        guint64 grain = offset / gb, in = offset % gb;
        guint64 n = MIN(len, gb - in);
        VmdkGrainKind kind;
        guint64 sector;
        if (!lookup(img, ext, grain, &kind, &sector, error))
            return FALSE;
        gboolean reads_zero = kind == VMDK_GRAIN_ZERO ||
                              (kind == VMDK_GRAIN_UNALLOCATED && img->backing_name == NULL);
        if (reads_zero) {
            /* nothing to do */
        } else if (n == gb && sp->zero_grain) {
            if (!set_entry(img, ext, grain, GTE_ZERO, error))
                return FALSE;
        } else {
            if (zeroes == NULL)
                zeroes = g_malloc0(gb);
            if (!plain_write(img, ext, offset, zeroes, (gsize)n, error))
                return FALSE;
        }
        offset += n;
        len -= n;
    }
    return write_dirty_gts(ext, error);
}

/* ----- streamOptimized writing ----- */

gsize vmdk_compress_grain(const void *in, gsize len, guint32 grain_bytes, void *out, gsize out_len)
{
    g_autofree guint8 *padded = NULL;
    if (len < grain_bytes) {
        /* Readers (qemu among them) expect every grain to inflate whole. */
        padded = g_malloc0(grain_bytes);
        memcpy(padded, in, len);
        in = padded;
    }
    return vd_deflate(VD_DEFLATE_ZLIB, in, grain_bytes, out, out_len);
}

static VmdkStream *stream_new(VmdkSparse *sp)
{
    VmdkStream *st = g_new0(VmdkStream, 1);
    st->pending = -1;
    st->buf = g_malloc0(sp->grain_bytes);
    st->zbuf_len = compressBound(sp->grain_bytes);
    st->zbuf = g_malloc(st->zbuf_len);
    st->tail = sp->overhead * VMDK_SECTOR;
    return st;
}

static gboolean extent_is_empty(VdImage *img, VmdkExtent *ext, gboolean *empty, GError **error)
{
    VmdkSparse *sp = ext->sparse;
    *empty = TRUE;
    for (guint32 i = 0; i < sp->gd_entries && *empty; i++) {
        guint32 *gt;
        if (!get_gt(img, ext, i, FALSE, &gt, error))
            return FALSE;
        for (guint32 j = 0; gt != NULL && j < sp->gtes; j++)
            if (gt[j] != 0)
                *empty = FALSE;
    }
    return TRUE;
}

/* The header a stream we write starts with: the directory is at the end. */
static void stream_header(VmdkSparse *sp, guint8 *h, guint64 gd_sector)
{
    vd_put_le32(h + HDR_VERSION, 3);
    vd_put_le32(h + HDR_FLAGS,
                (sp->flags & ~FLAG_RGD) | FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS);
    vd_put_le64(h + HDR_RGD_OFFSET, 0);
    vd_put_le64(h + HDR_GD_OFFSET, gd_sector);
    vd_put_le16(h + HDR_COMPRESS_ALGO, COMPRESS_DEFLATE);
}

gboolean vmdk_sparse_start_stream(VdImage *img, VmdkExtent *ext, GError **error)
{
    VmdkSparse *sp = ext->sparse;
    gboolean empty;
    if (!extent_is_empty(img, ext, &empty, error))
        return FALSE;
    if (!empty) {
        vd_set_file_error(error, ext_name(ext), VD_ERROR_NOT_SUPPORTED,
                          "a streamOptimized image that holds data cannot be written; convert "
                          "it to another subformat first");
        return FALSE;
    }
    /* Whatever tables an empty stream had are replaced by ours at the end. */
    for (guint32 i = 0; i < sp->gd_entries; i++) {
        g_clear_pointer(&sp->gts[i], g_free);
        sp->gd[i] = 0;
    }
    g_clear_pointer(&sp->rgd, g_free);
    sp->rgd_sector = 0;
    sp->markers = TRUE;
    sp->stream = stream_new(sp);
    sp->stream->dirty = TRUE; /* the file is rewritten as a stream on close */
    return TRUE;
}

/* Append one deflated grain behind its marker. */
static gboolean stream_emit(VdImage *img, VmdkExtent *ext, guint64 grain, const guint8 *data,
                            gsize len, GError **error)
{
    VmdkSparse *sp = ext->sparse;
    VmdkStream *st = sp->stream;
    gsize total = (gsize)round_up(MARKER_GRAIN_DATA + len, VMDK_SECTOR);
    if (!check_room(ext, st->tail + total, error))
        return FALSE;
    g_autofree guint8 *rec = g_malloc0(total);
    vd_put_le64(rec + MARKER_VAL, grain * sp->grain_sectors);
    vd_put_le32(rec + MARKER_SIZE, (guint32)len);
    memcpy(rec + MARKER_GRAIN_DATA, data, len);
    if (!vd_file_pwrite(ext->file, st->tail, rec, total, error))
        return FALSE;
    if (!set_entry(img, ext, grain, (guint32)(st->tail / VMDK_SECTOR), error))
        return FALSE;
    st->tail += total;
    sp->file_size = MAX(sp->file_size, st->tail);
    if (sp->cached_grain == (gint64)grain)
        sp->cached_grain = -1;
    st->dirty = TRUE;
    return TRUE;
}

static gboolean emit_pending(VdImage *img, VmdkExtent *ext, GError **error)
{
    VmdkSparse *sp = ext->sparse;
    VmdkStream *st = sp->stream;
    gsize packed =
        vmdk_compress_grain(st->buf, sp->grain_bytes, sp->grain_bytes, st->zbuf, st->zbuf_len);
    if (packed == 0) {
        vd_set_file_error(error, ext_name(ext), VD_ERROR_FAILED, "cannot deflate a grain");
        return FALSE;
    }
    guint64 grain = (guint64)st->pending;
    st->pending = -1; /* lookups now find the stored grain */
    return stream_emit(img, ext, grain, st->zbuf, packed, error);
}

static gboolean refuse_backwards(VmdkExtent *ext, guint64 grain, GError **error)
{
    vd_set_file_error(error, ext_name(ext), VD_ERROR_NOT_SUPPORTED,
                      "streamOptimized images are written front to back: grain %" G_GUINT64_FORMAT
                      " is already stored",
                      grain);
    return FALSE;
}

/* Make grain the one held in memory, storing the one held before. */
static gboolean stream_select(VdImage *img, VmdkExtent *ext, guint64 grain, GError **error)
{
    VmdkStream *st = ext->sparse->stream;
    if (st->pending == (gint64)grain)
        return TRUE;
    if (grain < st->next)
        return refuse_backwards(ext, grain, error);
    if (st->pending >= 0) {
        if (!emit_pending(img, ext, error))
            return FALSE;
    }
    st->next = grain;
    st->pending = (gint64)grain;
    memset(st->buf, 0, ext->sparse->grain_bytes);
    return TRUE;
}

static gboolean stream_write(VdImage *img, VmdkExtent *ext, guint64 offset, const guint8 *buf,
                             gsize len, GError **error)
{
    guint64 gb = ext->sparse->grain_bytes;
    while (len > 0) {
        guint64 grain = offset / gb, in = offset % gb;
        gsize n = (gsize)MIN((guint64)len, gb - in);
        if (!stream_select(img, ext, grain, error))
            return FALSE;
        memcpy(ext->sparse->stream->buf + in, buf, n);
        offset += n;
        buf += n;
        len -= n;
    }
    return TRUE;
}

/* A fresh stream reads zero everywhere: zeroes only matter inside the grain
 * being assembled. */
static gboolean stream_write_zeroes(VdImage *img, VmdkExtent *ext, guint64 offset, guint64 len,
                                    GError **error)
{
    VmdkStream *st = ext->sparse->stream;
    guint64 gb = ext->sparse->grain_bytes;
    for (guint64 end = offset + len; offset < end;) {
        guint64 grain = offset / gb, in = offset % gb;
        guint64 n = MIN(end - offset, gb - in);
        if ((gint64)grain == st->pending)
            memset(st->buf + in, 0, n);
        else if (grain < st->next)
            return refuse_backwards(ext, grain, error);
        offset += n;
    }
    return TRUE;
}

gboolean vmdk_sparse_write_compressed(VdImage *img, VmdkExtent *ext, guint64 offset,
                                      const guint8 *data, gsize len, GError **error)
{
    VmdkSparse *sp = ext->sparse;
    VmdkStream *st = sp->stream;
    guint64 grain = offset / sp->grain_bytes;
    if (st == NULL) {
        vd_set_file_error(error, ext_name(ext), VD_ERROR_NOT_SUPPORTED,
                          "only streamOptimized extents store compressed grains");
        return FALSE;
    }
    if (offset % sp->grain_bytes != 0 || len > max_packed(sp)) {
        vd_set_file_error(error, ext_name(ext), VD_ERROR_INVALID_ARGUMENT,
                          "a compressed write must be one whole grain");
        return FALSE;
    }
    if (grain < st->next || st->pending == (gint64)grain)
        return refuse_backwards(ext, grain, error);
    if (st->pending >= 0 && !emit_pending(img, ext, error))
        return FALSE;
    st->next = grain + 1;
    return stream_emit(img, ext, grain, data, len, error);
}

static void put_marker(guint8 *p, guint64 val, guint32 type)
{
    memset(p, 0, VMDK_SECTOR);
    vd_put_le64(p + MARKER_VAL, val);
    vd_put_le32(p + MARKER_TYPE, type);
}

/* The end of a stream, laid out from byte pos on: each grain table that has
 * entries (behind a GT marker), the directory (GD marker), the footer and
 * the end-of-stream marker. */
static GByteArray *stream_trailer(VmdkSparse *sp, guint64 pos, guint64 *gd_sector)
{
    GByteArray *out = g_byte_array_new();
    guint64 gts = gt_sectors(sp), gds = gd_sectors(sp);
    guint8 sector[VMDK_SECTOR];
    g_autofree guint32 *gd = g_new0(guint32, sp->gd_entries);
    for (guint32 i = 0; i < sp->gd_entries; i++) {
        if (sp->gts[i] == NULL)
            continue;
        put_marker(sector, gts, MARKER_GT);
        g_byte_array_append(out, sector, VMDK_SECTOR);
        gd[i] = (guint32)((pos + out->len) / VMDK_SECTOR);
        gsize at = out->len;
        g_byte_array_set_size(out, (guint)(at + gts * VMDK_SECTOR));
        memset(out->data + at, 0, gts * VMDK_SECTOR);
        for (guint32 j = 0; j < sp->gtes; j++)
            vd_put_le32(out->data + at + (gsize)j * 4, sp->gts[i][j]);
    }
    put_marker(sector, gds, MARKER_GD);
    g_byte_array_append(out, sector, VMDK_SECTOR);
    *gd_sector = (pos + out->len) / VMDK_SECTOR;
    gsize at = out->len;
    g_byte_array_set_size(out, (guint)(at + gds * VMDK_SECTOR));
    memset(out->data + at, 0, gds * VMDK_SECTOR);
    for (guint32 i = 0; i < sp->gd_entries; i++)
        vd_put_le32(out->data + at + (gsize)i * 4, gd[i]);
    put_marker(sector, 1, MARKER_FOOTER);
    g_byte_array_append(out, sector, VMDK_SECTOR);
    memcpy(sector, sp->header, VMDK_SECTOR);
    stream_header(sp, sector, *gd_sector);
    g_byte_array_append(out, sector, VMDK_SECTOR);
    put_marker(sector, 0, MARKER_EOS);
    g_byte_array_append(out, sector, VMDK_SECTOR);
    return out;
}

static gboolean stream_flush(VdImage *img, VmdkExtent *ext, GError **error)
{
    VmdkSparse *sp = ext->sparse;
    VmdkStream *st = sp->stream;
    if (!st->dirty && st->pending < 0)
        return TRUE;
    /* A grain still being assembled is stored now but stays open: should
     * more of it come, it is stored again at the same place. */
    guint64 keep_tail = st->tail, keep_next = st->next;
    gint64 keep_pending = st->pending;
    if (st->pending >= 0 && !emit_pending(img, ext, error))
        return FALSE;
    guint64 gd_sector;
    g_autoptr(GByteArray) trailer = stream_trailer(sp, st->tail, &gd_sector);
    guint8 header[VMDK_SECTOR];
    memcpy(header, sp->header, VMDK_SECTOR);
    stream_header(sp, header, GD_AT_END);
    gboolean ok = vd_file_pwrite(ext->file, st->tail, trailer->data, trailer->len, error) &&
                  vd_file_truncate(ext->file, st->tail + trailer->len, error) &&
                  vd_file_pwrite(ext->file, 0, header, VMDK_SECTOR, error);
    sp->file_size = st->tail + trailer->len;
    if (keep_pending >= 0) {
        st->tail = keep_tail;
        st->next = keep_next;
        st->pending = keep_pending;
    }
    st->dirty = keep_pending >= 0;
    return ok;
}

/* ----- dispatch for the driver ----- */

gboolean vmdk_sparse_write(VdImage *img, VmdkExtent *ext, guint64 offset, const guint8 *buf,
                           gsize len, GError **error)
{
    ext->sparse->cached_grain = -1;
    if (ext->sparse->stream != NULL)
        return stream_write(img, ext, offset, buf, len, error);
    return plain_write(img, ext, offset, buf, len, error);
}

gboolean vmdk_sparse_write_zeroes(VdImage *img, VmdkExtent *ext, guint64 offset, guint64 len,
                                  GError **error)
{
    if (ext->sparse->stream != NULL)
        return stream_write_zeroes(img, ext, offset, len, error);
    return plain_write_zeroes(img, ext, offset, len, error);
}

gboolean vmdk_sparse_flush(VdImage *img, VmdkExtent *ext, GError **error)
{
    if (ext->sparse->stream != NULL)
        return stream_flush(img, ext, error);
    return write_dirty_gts(ext, error);
}

/* ----- creating ----- */

static void fill_header(guint8 *h, const VmdkSparseCreate *p, guint32 flags, guint64 rgd,
                        guint64 gd, guint64 overhead, guint64 desc_sectors)
{
    memset(h, 0, VMDK_SECTOR);
    vd_put_le32(h + HDR_MAGIC, VMDK_SPARSE_MAGIC);
    vd_put_le32(h + HDR_VERSION, p->stream ? 3 : p->zeroed_grain ? 2 : 1);
    vd_put_le32(h + HDR_FLAGS, flags);
    vd_put_le64(h + HDR_CAPACITY, p->capacity);
    vd_put_le64(h + HDR_GRAIN_SIZE, p->grain_sectors);
    vd_put_le64(h + HDR_DESC_OFFSET, 1);
    vd_put_le64(h + HDR_DESC_SIZE, desc_sectors);
    vd_put_le32(h + HDR_NUM_GTES, DEFAULT_GTES);
    vd_put_le64(h + HDR_RGD_OFFSET, rgd);
    vd_put_le64(h + HDR_GD_OFFSET, gd);
    vd_put_le64(h + HDR_OVERHEAD, overhead);
    memcpy(h + HDR_NL_CHARS, "\n \r\n", 4);
    vd_put_le16(h + HDR_COMPRESS_ALGO, p->stream ? COMPRESS_DEFLATE : 0);
}

/* A directory of n entries pointing at tables laid out from first on. */
static gboolean write_directory(VdFile *file, guint64 sector, guint32 n, guint64 first,
                                guint64 gt_secs, GError **error)
{
    g_autofree guint32 *gd = g_new(guint32, n);
    for (guint32 i = 0; i < n; i++)
        gd[i] = (guint32)(first + i * gt_secs);
    return write_table(file, sector * VMDK_SECTOR, gd, n, error);
}

gboolean vmdk_sparse_create(VdFile *file, const VmdkSparseCreate *p, GError **error)
{
    guint64 gt_span = (guint64)p->grain_sectors * DEFAULT_GTES;
    guint64 gts = div_round_up(p->capacity, gt_span);
    guint64 gd_secs = div_round_up(gts * 4, VMDK_SECTOR);
    guint64 gt_secs = DEFAULT_GTES * 4 / VMDK_SECTOR;
    gsize desc_len = p->descriptor != NULL ? strlen(p->descriptor) : 0;
    guint64 desc_secs = MAX(DESC_SECTORS, div_round_up(desc_len, VMDK_SECTOR));
    guint64 meta = 1 + desc_secs;
    guint32 flags = FLAG_NL_DETECT | (p->zeroed_grain ? FLAG_ZERO_GRAIN : 0);
    guint8 h[VMDK_SECTOR];
    guint64 overhead, end;
    if (p->stream) {
        overhead = round_up(meta, p->grain_sectors);
        fill_header(h, p, flags | FLAG_COMPRESSED | FLAG_MARKERS, 0, GD_AT_END, overhead,
                    desc_secs);
    } else {
        /* qemu-img's layout: redundant directory and tables, then the
         * primary ones, the first grain on a grain boundary. */
        guint64 rgd = meta, gd = rgd + gd_secs + gts * gt_secs;
        end = gd + gd_secs + gts * gt_secs;
        overhead = round_up(end, p->grain_sectors);
        if (overhead > G_MAXUINT32) {
            vd_set_file_error(error, vd_file_name(file), VD_ERROR_INVALID_ARGUMENT,
                              "the disk is too large for one sparse extent");
            return FALSE;
        }
        fill_header(h, p, flags | FLAG_RGD, rgd, gd, overhead, desc_secs);
        if (!write_directory(file, rgd, (guint32)gts, rgd + gd_secs, gt_secs, error) ||
            !write_directory(file, gd, (guint32)gts, gd + gd_secs, gt_secs, error))
            return FALSE;
    }
    if (!vd_file_pwrite(file, 0, h, VMDK_SECTOR, error) ||
        (desc_len > 0 && !vd_file_pwrite(file, VMDK_SECTOR, p->descriptor, desc_len, error)) ||
        !vd_file_truncate(file, overhead * VMDK_SECTOR, error))
        return FALSE;
    if (!p->stream)
        return TRUE;
    /* An empty stream: no grain tables, a zeroed directory, the footer. */
    VmdkSparse sp = { .grain_sectors = p->grain_sectors,
                      .gtes = DEFAULT_GTES,
                      .gd_entries = (guint32)gts,
                      .flags = flags };
    memcpy(sp.header, h, VMDK_SECTOR);
    sp.gts = g_new0(guint32 *, sp.gd_entries);
    guint64 gd_sector;
    g_autoptr(GByteArray) trailer = stream_trailer(&sp, overhead * VMDK_SECTOR, &gd_sector);
    g_free(sp.gts);
    return vd_file_pwrite(file, overhead * VMDK_SECTOR, trailer->data, trailer->len, error);
}

/* ----- check ----- */

typedef struct {
    guint64 sector;
    guint64 grain;
} GrainRef;

static int compare_refs(const void *a, const void *b)
{
    const GrainRef *x = a, *y = b;
    return x->sector < y->sector ? -1 : x->sector > y->sector;
}

static void report(VdCheckResult *res, VmdkExtent *ext, const char *what)
{
    res->corruptions++;
    g_ptr_array_add(res->messages, g_strdup_printf("%s: %s", ext_name(ext), what));
}

gboolean vmdk_sparse_check(VdImage *img, VmdkExtent *ext, VdCheckResult *res, GError **error)
{
    VmdkSparse *sp = ext->sparse;
    g_autoptr(GArray) refs = g_array_new(FALSE, FALSE, sizeof(GrainRef));
    for (guint32 i = 0; i < sp->gd_entries; i++) {
        guint32 *gt;
        g_autoptr(GError) local = NULL;
        if (!get_gt(img, ext, i, FALSE, &gt, &local)) {
            report(res, ext, local->message);
            continue;
        }
        for (guint32 j = 0; gt != NULL && j < sp->gtes; j++) {
            guint64 grain = (guint64)i * sp->gtes + j;
            guint32 e = gt[j];
            if (e == 0 || (e == GTE_ZERO && sp->zero_grain) || grain >= sp->grains)
                continue;
            if ((guint64)e * VMDK_SECTOR >= sp->file_size || e < sp->overhead) {
                g_autofree char *msg = g_strdup_printf(
                    "grain %" G_GUINT64_FORMAT " points to sector %u, outside the data area", grain,
                    e);
                report(res, ext, msg);
                continue;
            }
            GrainRef ref = { e, grain };
            g_array_append_val(refs, ref);
        }
    }
    g_array_sort(refs, compare_refs);
    for (guint k = 1; k < refs->len; k++) {
        GrainRef *a = &g_array_index(refs, GrainRef, k - 1), *b = a + 1;
        gboolean overlap =
            sp->compressed ? a->sector == b->sector : a->sector + sp->grain_sectors > b->sector;
        if (overlap) {
            g_autofree char *msg =
                g_strdup_printf("grains %" G_GUINT64_FORMAT " and %" G_GUINT64_FORMAT
                                " overlap at sector %" G_GUINT64_FORMAT,
                                a->grain, b->grain, b->sector);
            report(res, ext, msg);
        }
    }
    /* No grain counts, no end offset: qemu-img's check of a vmdk has
     * none, and scripts compare the keys and lines it prints. */
    return TRUE;
}
