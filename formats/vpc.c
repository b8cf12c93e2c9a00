/* vpc: Microsoft's Virtual Hard Disk (VHD), as qemu names the format.
 *
 * Every VHD ends with a 512-byte big-endian footer ("conectix"). A fixed
 * disk is the guest data followed by the footer. A dynamic disk starts
 * with a copy of the footer, then a dynamic header ("cxsparse") naming a
 * block allocation table of 32-bit sector numbers (0xFFFFFFFF: not
 * stored, reads zero); each stored block is a sector bitmap followed by
 * the block's data, and a sector whose bit is clear reads zero.
 *
 * This first step reads fixed and dynamic disks; differencing disks and
 * writing are refused with a clear error.
 */
#include "vdisk-driver.h"

/* ----- footer: every field's offset, once ----- */
#define FT_COOKIE 0
#define FT_DATA_OFFSET 16
#define FT_CURRENT_SIZE 48
#define FT_DISK_TYPE 60
#define FT_CHECKSUM 64
#define FT_BYTES 512

/* ----- dynamic header ----- */
#define DH_COOKIE 0
#define DH_TABLE_OFFSET 16
#define DH_MAX_ENTRIES 28
#define DH_BLOCK_SIZE 32
#define DH_CHECKSUM 36
#define DH_BYTES 1024

enum { DISK_FIXED = 2, DISK_DYNAMIC = 3, DISK_DIFFERENCING = 4 };

#define SECTOR 512u
#define BAT_UNUSED 0xffffffffu
#define MIN_BLOCK_SIZE SECTOR
#define MAX_BLOCK_SIZE (256u << 20)
#define MAX_SIZE ((guint64)2040 << 30) /* the format's limit: 2040 GiB */

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
    if (memcmp(ft, "conectix", 8) != 0 && !vd_file_pread(img->file, 0, ft, FT_BYTES, error))
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
    }
    return TRUE;
}

static gboolean vpc_open(VdImage *img, GError **error)
{
    Vpc *s = g_new0(Vpc, 1);
    img->priv = s;
    guint8 ft[FT_BYTES];
    if (!footer_read(img, s, ft, error))
        return FALSE;
    s->type = vd_be32(ft + FT_DISK_TYPE);
    img->size = vd_be64(ft + FT_CURRENT_SIZE);
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

static gboolean vpc_write(VdImage *img, guint64 offset, const void *buf, gsize len, GError **error)
{
    vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED, "writing VHD images is not supported yet");
    return FALSE;
}

static gboolean vpc_create(VdFile *file, const VdCreateParams *params, GError **error)
{
    vd_set_file_error(error, params->path, VD_ERROR_NOT_SUPPORTED,
                      "creating VHD images is not supported yet");
    return FALSE;
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
    .get_info = vpc_get_info,
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
