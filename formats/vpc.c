/* vpc: Microsoft's Virtual Hard Disk (VHD), as qemu names the format.
 *
 * Every VHD ends with a 512-byte big-endian footer ("conectix"). A fixed
 * disk is the guest data followed by the footer. A dynamic disk starts
 * with a copy of the footer, then a dynamic header ("cxsparse") naming a
 * block allocation table of 32-bit sector numbers (0xFFFFFFFF: not
 * stored, reads zero); each stored block is a sector bitmap followed by
 * the block's data, and a sector whose bit is clear reads zero.
 *
 * Fixed and dynamic disks are read, created and written as qemu-img
 * makes them (subformat=dynamic|fixed, force_size); differencing disks
 * are refused with a clear error.
 */
#include "vdisk-driver.h"

#include <sys/random.h>
#include <time.h>

/* ----- footer: every field's offset, once ----- */
#define FT_COOKIE 0
#define FT_FEATURES 8
#define FT_VERSION 12
#define FT_DATA_OFFSET 16
#define FT_TIMESTAMP 24
#define FT_CREATOR_APP 28
#define FT_CREATOR_VER 32
#define FT_CREATOR_OS 36
#define FT_ORIG_SIZE 40
#define FT_CURRENT_SIZE 48
#define FT_CYLINDERS 56
#define FT_HEADS 58
#define FT_SECTORS 59
#define FT_DISK_TYPE 60
#define FT_CHECKSUM 64
#define FT_UUID 68
#define FT_BYTES 512

/* ----- dynamic header ----- */
#define DH_COOKIE 0
#define DH_DATA_OFFSET 8
#define DH_TABLE_OFFSET 16
#define DH_VERSION 24
#define DH_MAX_ENTRIES 28
#define DH_BLOCK_SIZE 32
#define DH_CHECKSUM 36
#define DH_BYTES 1024

/* What a new image holds, as qemu-img writes it. */
#define FEATURES_RESERVED 0x00000002u /* the specification's "always set" bit */
#define FORMAT_VERSION 0x00010000u
#define CREATOR_VERSION 0x00050003u
#define NEW_BLOCK_SIZE (2u << 20)
#define NEW_TABLE_OFFSET (3 * 512u) /* after the footer copy and the dynamic header */
/* VHD timestamps count seconds from 2000-01-01 00:00:00 UTC. */
#define VHD_EPOCH 946684800

enum { DISK_FIXED = 2, DISK_DYNAMIC = 3, DISK_DIFFERENCING = 4 };

#define SECTOR 512u
#define BAT_UNUSED 0xffffffffu
#define MIN_BLOCK_SIZE SECTOR
#define MAX_BLOCK_SIZE (256u << 20)
#define MAX_SIZE ((guint64)2040 << 30) /* the format's limit: 2040 GiB */
/* The largest geometry a footer can hold: 65535 cylinders, 16 heads, 255
 * sectors per track. A disk with it is sized by its current size. */
#define MAX_CHS_SECTORS (65535ull * 16 * 255)

typedef struct {
    guint32 type;
    guint32 block_size;
    guint32 entries;
    guint32 bitmap_bytes; /* the sector bitmap before each block, whole sectors */
    guint32 *bat;         /* host order */
    guint64 file_size;
    guint8 *bitmap; /* one block's bitmap, scratch */
    guint64 table_offset;
    /* Where the next block goes: past the last stored block and the
     * table, where the footer at the end lies in a whole file. */
    guint64 free_offset;
    guint8 footer[FT_BYTES]; /* as read: rewritten after each new block */
    gboolean footer_at_end;  /* else it was cut off, and the copy at 0 was read */
} Vpc;

static const VdCreateOption vpc_create_options[] = {
    { "size", VD_OPTION_SIZE, NULL, "Virtual disk size" },
    { "subformat", VD_OPTION_STRING, NULL,
      "Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} " },
    { "force_size", VD_OPTION_BOOL, NULL,
      "Force disk size calculation to use the actual size specified, rather than using the "
      "nearest CHS-based calculation" },
    { NULL },
};

/* Ones' complement of the byte sum, the checksum field counted as zero. */
static guint32 checksum(const guint8 *b, gsize len, gsize field)
{
    guint32 sum = 0;
    for (gsize i = 0; i < len; i++)
        if (i < field || i >= field + 4)
            sum += b[i];
    return ~sum;
}

static int vpc_probe(const guint8 *buf, gsize len, const char *filename)
{
    if (len >= 8 && memcmp(buf + FT_COOKIE, "conectix", 8) == 0)
        return 100;
    return 0;
}

static gboolean footer_read(VdImage *img, Vpc *s, guint8 *ft, GError **error)
{
    if (!vd_file_size(img->file, &s->file_size, error))
        return FALSE;
    if (s->file_size < FT_BYTES) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "file is too short to hold a VHD footer");
        return FALSE;
    }
    /* The footer at the end; a dynamic disk also keeps a copy at 0, which
     * answers when the end was cut off (a crash while appending). */
    if (!vd_file_pread(img->file, s->file_size - FT_BYTES, ft, FT_BYTES, error))
        return FALSE;
    s->footer_at_end = memcmp(ft, "conectix", 8) == 0;
    if (!s->footer_at_end && !vd_file_pread(img->file, 0, ft, FT_BYTES, error))
        return FALSE;
    if (memcmp(ft, "conectix", 8) != 0) {
        vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT,
                     "not a VHD image (no \"conectix\" footer)");
        return FALSE;
    }
    if (vd_be32(ft + FT_CHECKSUM) != checksum(ft, FT_BYTES, FT_CHECKSUM)) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "the VHD footer's checksum is wrong");
        return FALSE;
    }
    return TRUE;
}

static gboolean dynamic_open(VdImage *img, Vpc *s, const guint8 *ft, GError **error)
{
    guint64 dh_offset = vd_be64(ft + FT_DATA_OFFSET);
    guint8 dh[DH_BYTES];
    if (dh_offset > s->file_size || s->file_size - dh_offset < DH_BYTES) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "the dynamic header offset %" G_GUINT64_FORMAT
                     " lies past the end of the file",
                     dh_offset);
        return FALSE;
    }
    if (!vd_file_pread(img->file, dh_offset, dh, DH_BYTES, error))
        return FALSE;
    if (memcmp(dh + DH_COOKIE, "cxsparse", 8) != 0) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "no \"cxsparse\" dynamic header at offset %" G_GUINT64_FORMAT, dh_offset);
        return FALSE;
    }
    if (vd_be32(dh + DH_CHECKSUM) != checksum(dh, DH_BYTES, DH_CHECKSUM)) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "the VHD dynamic header's checksum is wrong");
        return FALSE;
    }
    s->block_size = vd_be32(dh + DH_BLOCK_SIZE);
    s->entries = vd_be32(dh + DH_MAX_ENTRIES);
    guint64 table = vd_be64(dh + DH_TABLE_OFFSET);
    if (s->block_size < MIN_BLOCK_SIZE || s->block_size > MAX_BLOCK_SIZE ||
        (s->block_size & (s->block_size - 1)) != 0) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "block size %u is not a power of two between %u and %u", s->block_size,
                     MIN_BLOCK_SIZE, MAX_BLOCK_SIZE);
        return FALSE;
    }
    if ((guint64)s->entries * s->block_size < img->size) {
        vd_set_error(
            error, img, VD_ERROR_CORRUPT,
            "the block table's %u entries of %u bytes do not cover the disk's %" G_GUINT64_FORMAT
            " bytes",
            s->entries, s->block_size, img->size);
        return FALSE;
    }
    /* Only the entries the disk uses are read. */
    s->entries = (guint32)((img->size + s->block_size - 1) / s->block_size);
    guint64 bytes = (guint64)s->entries * 4;
    if (table > s->file_size || s->file_size - table < bytes) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "the block table (%u entries at offset %" G_GUINT64_FORMAT
                     ") extends past the end of the file",
                     s->entries, table);
        return FALSE;
    }
    if (!vd_image_charge_metadata(img, bytes, "block table", error))
        return FALSE;
    s->bat = g_malloc(MAX(bytes, 4));
    if (!vd_file_pread(img->file, table, s->bat, bytes, error))
        return FALSE;
    s->bitmap_bytes = (s->block_size / SECTOR / 8 + SECTOR - 1) / SECTOR * SECTOR;
    s->bitmap = g_malloc(s->bitmap_bytes);
    s->table_offset = table;
    s->free_offset = (table + bytes + SECTOR - 1) / SECTOR * SECTOR;
    for (guint32 i = 0; i < s->entries; i++) {
        s->bat[i] = GUINT32_FROM_BE(s->bat[i]);
        if (s->bat[i] == BAT_UNUSED)
            continue;
        guint64 start = (guint64)s->bat[i] * SECTOR;
        if (start >= s->file_size || s->file_size - start < s->bitmap_bytes) {
            vd_set_error(error, img, VD_ERROR_CORRUPT,
                         "block table entry %u (sector %u) points past the end of the file", i,
                         s->bat[i]);
            return FALSE;
        }
        s->free_offset = MAX(s->free_offset, start + s->bitmap_bytes + s->block_size);
    }
    /* Nothing already in the file may show through a new block's data,
     * which must read zero: new blocks go at the footer or past the end. */
    guint64 end = s->footer_at_end ? s->file_size - FT_BYTES : s->file_size;
    s->free_offset = MAX(s->free_offset, (end + SECTOR - 1) / SECTOR * SECTOR);
    return TRUE;
}

/* Does qemu size a disk from this footer by its geometry rather than its
 * current size? Virtual PC (and qemu before force_size) made disks whose
 * current size may be larger than what the geometry addresses, and the
 * guest saw only the geometry's sectors; other creators (Hyper-V "win ",
 * disk2vhd, XenServer, qemu's force_size "qem2") mean the current size. A
 * disk with the largest geometry is always sized by its current size. */
static gboolean sized_by_geometry(const guint8 *ft)
{
    gboolean largest =
        vd_be16(ft + FT_CYLINDERS) == 65535 && ft[FT_HEADS] == 16 && ft[FT_SECTORS] == 255;
    return !largest && (memcmp(ft + FT_CREATOR_APP, "vpc ", 4) == 0 ||
                        memcmp(ft + FT_CREATOR_APP, "qemu", 4) == 0);
}

static gboolean vpc_open(VdImage *img, GError **error)
{
    Vpc *s = g_new0(Vpc, 1);
    img->priv = s;
    guint8 ft[FT_BYTES];
    if (!footer_read(img, s, ft, error))
        return FALSE;
    memcpy(s->footer, ft, FT_BYTES);
    s->type = vd_be32(ft + FT_DISK_TYPE);
    img->size = vd_be64(ft + FT_CURRENT_SIZE);
    if (sized_by_geometry(ft))
        img->size = MIN(img->size, (guint64)vd_be16(ft + FT_CYLINDERS) * ft[FT_HEADS] *
                                       ft[FT_SECTORS] * SECTOR);
    if (img->size > MAX_SIZE || img->size % SECTOR != 0) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "disk size %" G_GUINT64_FORMAT
                     " is not a whole number of sectors up to %" G_GUINT64_FORMAT " bytes",
                     img->size, MAX_SIZE);
        return FALSE;
    }
    if (s->type == DISK_DIFFERENCING) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "differencing VHD images are not supported");
        return FALSE;
    }
    if (s->type == DISK_FIXED) {
        if (s->file_size - FT_BYTES < img->size) {
            vd_set_error(error, img, VD_ERROR_CORRUPT,
                         "a fixed VHD of %" G_GUINT64_FORMAT " bytes needs a longer file",
                         img->size);
            return FALSE;
        }
        return TRUE;
    }
    if (s->type != DISK_DYNAMIC) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "unknown VHD disk type %u", s->type);
        return FALSE;
    }
    return dynamic_open(img, s, ft, error);
}

static void vpc_close(VdImage *img)
{
    Vpc *s = img->priv;
    if (s == NULL)
        return;
    g_free(s->bat);
    g_free(s->bitmap);
    g_free(s);
    img->priv = NULL;
}

/* Is sector bit i of a block's bitmap set? */
static gboolean bit_set(const guint8 *bm, guint32 i) { return bm[i / 8] & (0x80u >> (i % 8)); }

static gboolean vpc_block_status(VdImage *img, guint64 offset, guint64 len, VdExtent *out,
                                 GError **error)
{
    Vpc *s = img->priv;
    if (s->type == DISK_FIXED) {
        out->kind = VD_EXTENT_DATA;
        out->length = len;
        out->offset_valid = TRUE;
        out->host_offset = offset;
        out->plain_file = img->file;
        /* A hole in the file reads zero, as qemu's map says and a copy
         * need not read. */
        out->host_file = img->file;
        return TRUE;
    }
    guint32 block = (guint32)(offset / s->block_size);
    guint64 in_block = offset % s->block_size;
    guint64 n = MIN(len, s->block_size - in_block);
    out->length = n;
    if (s->bat[block] == BAT_UNUSED) {
        out->kind = VD_EXTENT_ZERO;
        return TRUE;
    }
    guint64 start = (guint64)s->bat[block] * SECTOR;
    if (!vd_file_pread_zero_past_eof(img->file, start, s->bitmap, s->bitmap_bytes, error))
        return FALSE;
    /* A run of sectors alike in the bitmap. */
    guint32 sec = (guint32)(in_block / SECTOR);
    gboolean set = bit_set(s->bitmap, sec);
    guint64 run = SECTOR - in_block % SECTOR;
    while (run < n && bit_set(s->bitmap, (guint32)((in_block + run) / SECTOR)) == set)
        run += SECTOR;
    out->length = MIN(run, n);
    out->kind = set ? VD_EXTENT_DATA : VD_EXTENT_ZERO;
    if (set) {
        out->offset_valid = TRUE;
        out->host_offset = start + s->bitmap_bytes + in_block;
        out->plain_file = img->file;
    }
    return TRUE;
}

static gboolean vpc_read(VdImage *img, guint64 offset, void *buf, gsize len, GError **error)
{
    Vpc *s = img->priv;
    guint8 *out = buf;
    while (len > 0) {
        VdExtent e = { 0 };
        if (!vpc_block_status(img, offset, len, &e, error))
            return FALSE;
        gsize n = (gsize)e.length;
        if (s->type != DISK_FIXED && e.kind != VD_EXTENT_DATA)
            memset(out, 0, n);
        else if (!vd_file_pread_zero_past_eof(img->file, e.host_offset, out, n, error))
            return FALSE;
        offset += n;
        out += n;
        len -= n;
    }
    return TRUE;
}

/* ----- writing ----- */

/* Put a new block at the free offset: the footer moves past it first,
 * then its bitmap (every sector stored: the block's data is a hole that
 * reads zero, which is what the guest saw there) takes the footer's old
 * place, and only then does the table name it. A crash between the steps
 * leaves a disk that reads as before, with at most a block unused. */
static gboolean allocate_block(VdImage *img, Vpc *s, guint32 block, GError **error)
{
    guint64 start = s->free_offset;
    guint64 end = start + s->bitmap_bytes + s->block_size;
    if (start / SECTOR > G_MAXUINT32 - 1) {
        vd_set_error(error, img, VD_ERROR_NO_SPACE,
                     "the VHD file cannot grow past 2 TiB: its block table counts in 32-bit "
                     "sector numbers");
        return FALSE;
    }
    guint8 entry[4];
    vd_put_be32(entry, (guint32)(start / SECTOR));
    memset(s->bitmap, 0xff, s->bitmap_bytes);
    if (!vd_file_pwrite(img->file, end, s->footer, FT_BYTES, error) ||
        !vd_file_pwrite(img->file, start, s->bitmap, s->bitmap_bytes, error) ||
        !vd_file_pwrite(img->file, s->table_offset + (guint64)block * 4, entry, 4, error))
        return FALSE;
    s->bat[block] = (guint32)(start / SECTOR);
    s->free_offset = end;
    s->file_size = MAX(s->file_size, end + FT_BYTES);
    return TRUE;
}

/* The sectors [in_block, +n) of a stored block become stored in its
 * bitmap (a VHD another program wrote may have clear bits: those sectors
 * read zero whatever the file holds, so a part of such a sector that the
 * write does not cover is zeroed first). */
static gboolean mark_stored(VdImage *img, Vpc *s, guint64 start, guint64 in_block, guint64 n,
                            GError **error)
{
    if (!vd_file_pread_zero_past_eof(img->file, start, s->bitmap, s->bitmap_bytes, error))
        return FALSE;
    gboolean changed = FALSE;
    for (guint64 sec = in_block / SECTOR; sec * SECTOR < in_block + n; sec++) {
        if (bit_set(s->bitmap, (guint32)sec))
            continue;
        guint64 from = sec * SECTOR;
        if ((from < in_block || from + SECTOR > in_block + n) &&
            !vd_file_write_zeroes(img->file, start + s->bitmap_bytes + from, SECTOR, FALSE, error))
            return FALSE;
        s->bitmap[sec / 8] |= 0x80u >> (sec % 8);
        changed = TRUE;
    }
    return !changed || vd_file_pwrite(img->file, start, s->bitmap, s->bitmap_bytes, error);
}

/* Where the guest bytes [offset, +*n) go in the file, *n cut at the end of
 * offset's block, allocating the block and marking its sectors stored. */
static gboolean map_for_write(VdImage *img, guint64 offset, guint64 *n, guint64 *host,
                              GError **error)
{
    Vpc *s = img->priv;
    if (s->type == DISK_FIXED) {
        *host = offset;
        return TRUE;
    }
    guint32 block = (guint32)(offset / s->block_size);
    guint64 in_block = offset % s->block_size;
    *n = MIN(*n, s->block_size - in_block);
    if (s->bat[block] == BAT_UNUSED && !allocate_block(img, s, block, error))
        return FALSE;
    guint64 start = (guint64)s->bat[block] * SECTOR;
    if (!mark_stored(img, s, start, in_block, *n, error))
        return FALSE;
    *host = start + s->bitmap_bytes + in_block;
    return TRUE;
}

static gboolean vpc_write(VdImage *img, guint64 offset, const void *buf, gsize len, GError **error)
{
    const guint8 *in = buf;
    while (len > 0) {
        guint64 n = len, host;
        if (!map_for_write(img, offset, &n, &host, error) ||
            !vd_file_pwrite(img->file, host, in, (gsize)n, error))
            return FALSE;
        offset += n;
        in += n;
        len -= (gsize)n;
    }
    return TRUE;
}

static gboolean vpc_write_from_file(VdImage *img, guint64 offset, VdFile *src, guint64 src_offset,
                                    guint64 len, const void *buf, GError **error)
{
    const guint8 *in = buf;
    while (len > 0) {
        guint64 n = len, host;
        if (!map_for_write(img, offset, &n, &host, error) ||
            !vd_file_copy_range(src, src_offset, img->file, host, n, in, error))
            return FALSE;
        offset += n;
        src_offset += n;
        if (in != NULL)
            in += n;
        len -= n;
    }
    return TRUE;
}

/* A block that was never stored reads zero already; stored ranges are
 * zeroed in the file (their bitmap bits stay set, as qemu keeps them). */
static gboolean vpc_write_zeroes(VdImage *img, guint64 offset, guint64 len, gboolean may_unmap,
                                 GError **error)
{
    Vpc *s = img->priv;
    if (s->type == DISK_FIXED)
        return vd_file_write_zeroes(img->file, offset, len, may_unmap, error);
    while (len > 0) {
        guint32 block = (guint32)(offset / s->block_size);
        guint64 in_block = offset % s->block_size;
        guint64 n = MIN(len, s->block_size - in_block);
        if (s->bat[block] != BAT_UNUSED) {
            guint64 data = (guint64)s->bat[block] * SECTOR + s->bitmap_bytes;
            if (!vd_file_write_zeroes(img->file, data + in_block, n, may_unmap, error))
                return FALSE;
        }
        offset += n;
        len -= n;
    }
    return TRUE;
}

static gboolean vpc_flush(VdImage *img, GError **error) { return vd_file_sync(img->file, error); }

static gboolean vpc_has_zero_init(VdImage *img) { return TRUE; }

static guint32 vpc_cluster_size(VdImage *img)
{
    Vpc *s = img->priv;
    return s->type == DISK_DYNAMIC ? s->block_size : 0;
}

/* ----- create ----- */

/* The geometry the VHD specification's CHS calculation (its appendix)
 * gives a number of sectors. */
static void geometry_for(guint64 sectors, guint32 *cyls, guint32 *heads, guint32 *secs)
{
    guint64 cyls_times_heads;
    sectors = MIN(sectors, MAX_CHS_SECTORS);
    if (sectors >= 65535ull * 16 * 63) {
        *secs = 255;
        *heads = 16;
        cyls_times_heads = sectors / *secs;
    } else {
        *secs = 17;
        cyls_times_heads = sectors / *secs;
        *heads = (guint32)MAX((cyls_times_heads + 1023) / 1024, 4);
        if (cyls_times_heads >= *heads * 1024ull || *heads > 16) {
            *secs = 31;
            *heads = 16;
            cyls_times_heads = sectors / *secs;
        }
        if (cyls_times_heads >= *heads * 1024ull) {
            *secs = 63;
            *heads = 16;
            cyls_times_heads = sectors / *secs;
        }
    }
    *cyls = (guint32)(cyls_times_heads / *heads);
}

/* The size a new disk gets, as qemu-img gives it: without force_size the
 * smallest geometry that holds size (so a convert never cuts the source
 * short; the guest sees the geometry's sectors), except past the largest
 * geometry, where the size stays as asked; with force_size the size as
 * asked, under the largest geometry. */
static gboolean new_disk_size(const VdCreateParams *params, gboolean force_size, guint64 *size,
                              guint32 *cyls, guint32 *heads, guint32 *secs, GError **error)
{
    guint64 sectors = params->size / SECTOR;
    *cyls = *heads = *secs = 0;
    if (!force_size) {
        guint64 want = MIN(sectors, MAX_CHS_SECTORS);
        for (guint64 i = 0; want > (guint64)*cyls * *heads * *secs; i++)
            geometry_for(want + i, cyls, heads, secs);
        if ((guint64)*cyls * *heads * *secs != MAX_CHS_SECTORS)
            sectors = (guint64)*cyls * *heads * *secs;
    } else {
        /* The largest geometry: every reader then takes the current size. */
        *cyls = 65535;
        *heads = 16;
        *secs = 255;
    }
    *size = sectors * SECTOR;
    if (*size > MAX_SIZE) {
        vd_set_file_error(error, params->path, VD_ERROR_INVALID_ARGUMENT,
                          "The image size is too large for file format 'vpc' (at most 2040 "
                          "GiB)");
        return FALSE;
    }
    return TRUE;
}

static void random_uuid(guint8 *u)
{
    if (getrandom(u, 16, 0) != 16)
        for (int i = 0; i < 16; i += 4)
            vd_put_be32(u + i, g_random_int());
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
}

/* The footer qemu-img writes, but for the creator: "qemu" says the
 * geometry sizes the disk, "qem2" (force_size) that the current size
 * does; readers (qemu, vdisk) decide by it. */
static void footer_new(guint8 *ft, guint32 type, guint64 size, guint32 cyls, guint32 heads,
                       guint32 secs, gboolean force_size)
{
    memset(ft, 0, FT_BYTES);
    memcpy(ft + FT_COOKIE, "conectix", 8);
    vd_put_be32(ft + FT_FEATURES, FEATURES_RESERVED);
    vd_put_be32(ft + FT_VERSION, FORMAT_VERSION);
    vd_put_be64(ft + FT_DATA_OFFSET, type == DISK_DYNAMIC ? FT_BYTES : G_MAXUINT64);
    vd_put_be32(ft + FT_TIMESTAMP, (guint32)(time(NULL) - VHD_EPOCH));
    memcpy(ft + FT_CREATOR_APP, force_size ? "qem2" : "qemu", 4);
    vd_put_be32(ft + FT_CREATOR_VER, CREATOR_VERSION);
    memcpy(ft + FT_CREATOR_OS, "Wi2k", 4);
    vd_put_be64(ft + FT_ORIG_SIZE, size);
    vd_put_be64(ft + FT_CURRENT_SIZE, size);
    vd_put_be16(ft + FT_CYLINDERS, (guint16)cyls);
    ft[FT_HEADS] = (guint8)heads;
    ft[FT_SECTORS] = (guint8)secs;
    vd_put_be32(ft + FT_DISK_TYPE, type);
    random_uuid(ft + FT_UUID);
    vd_put_be32(ft + FT_CHECKSUM, checksum(ft, FT_BYTES, FT_CHECKSUM));
}

/* A dynamic disk: the footer's copy, the dynamic header, a table with no
 * block stored (padded to whole sectors), the footer. */
static gboolean create_dynamic(VdFile *file, const guint8 *ft, guint64 size, GError **error)
{
    guint32 entries = (guint32)((size + NEW_BLOCK_SIZE - 1) / NEW_BLOCK_SIZE);
    gsize table_bytes = ((gsize)entries * 4 + SECTOR - 1) / SECTOR * SECTOR;
    g_autofree guint8 *head = g_malloc(NEW_TABLE_OFFSET + table_bytes);
    guint8 *dh = head + FT_BYTES;
    memcpy(head, ft, FT_BYTES);
    memset(dh, 0, DH_BYTES);
    memcpy(dh + DH_COOKIE, "cxsparse", 8);
    vd_put_be64(dh + DH_DATA_OFFSET, G_MAXUINT64);
    vd_put_be64(dh + DH_TABLE_OFFSET, NEW_TABLE_OFFSET);
    vd_put_be32(dh + DH_VERSION, FORMAT_VERSION);
    vd_put_be32(dh + DH_MAX_ENTRIES, entries);
    vd_put_be32(dh + DH_BLOCK_SIZE, NEW_BLOCK_SIZE);
    vd_put_be32(dh + DH_CHECKSUM, checksum(dh, DH_BYTES, DH_CHECKSUM));
    memset(head + NEW_TABLE_OFFSET, 0xff, table_bytes);
    return vd_file_pwrite(file, 0, head, NEW_TABLE_OFFSET + table_bytes, error) &&
           vd_file_pwrite(file, NEW_TABLE_OFFSET + table_bytes, ft, FT_BYTES, error);
}

static gboolean vpc_create(VdFile *file, const VdCreateParams *params, GError **error)
{
    static const char *const subformats[] = { "dynamic", "fixed", NULL };
    int subformat;
    gboolean force_size;
    guint64 size;
    guint32 cyls, heads, secs;
    guint8 ft[FT_BYTES];

    if (params->backing_file != NULL) {
        vd_set_file_error(error, params->path, VD_ERROR_NOT_SUPPORTED,
                          "differencing VHD images are not supported");
        return FALSE;
    }
    if (!vd_option_choice(params->options, "subformat", subformats, 0, &subformat, error) ||
        !vd_option_bool(params->options, "force_size", FALSE, &force_size, error) ||
        !new_disk_size(params, force_size, &size, &cyls, &heads, &secs, error))
        return FALSE;
    if (subformat == 1) {
        footer_new(ft, DISK_FIXED, size, cyls, heads, secs, force_size);
        /* The data is a hole that reads zero; only the footer is written. */
        return vd_file_truncate(file, size + FT_BYTES, error) &&
               vd_file_pwrite(file, size, ft, FT_BYTES, error);
    }
    footer_new(ft, DISK_DYNAMIC, size, cyls, heads, secs, force_size);
    return create_dynamic(file, ft, size, error);
}

static void vpc_get_info(VdImage *img, VdImageInfo *info)
{
    Vpc *s = img->priv;
    if (s->type == DISK_DYNAMIC)
        info->cluster_size = s->block_size;
}

const VdDriver vd_driver_vpc = {
    .name = "vpc",
    .create_options = vpc_create_options,
    .probe = vpc_probe,
    .open = vpc_open,
    .close = vpc_close,
    .create = vpc_create,
    .block_status = vpc_block_status,
    .read = vpc_read,
    .write = vpc_write,
    .write_from_file = vpc_write_from_file,
    .write_zeroes = vpc_write_zeroes,
    .flush = vpc_flush,
    .get_info = vpc_get_info,
    .has_zero_init = vpc_has_zero_init,
    .cluster_size = vpc_cluster_size,
};

gboolean vd_vpc_probe_footer(VdFile *file)
{
    guint64 size;
    guint8 ft[FT_BYTES];
    /* Only for a file named .vhd: a guest writing a footer at the end of
     * its raw disk must not change how its host opens it. */
    g_autofree char *lower = g_ascii_strdown(vd_file_name(file), -1);
    if (!g_str_has_suffix(lower, ".vhd"))
        return FALSE;
    if (!vd_file_size(file, &size, NULL) || size < FT_BYTES ||
        !vd_file_pread(file, size - FT_BYTES, ft, FT_BYTES, NULL))
        return FALSE;
    return memcmp(ft + FT_COOKIE, "conectix", 8) == 0 &&
           vd_be32(ft + FT_CHECKSUM) == checksum(ft, FT_BYTES, FT_CHECKSUM);
}
