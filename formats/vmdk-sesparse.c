/* vmdk seSparse extents: the snapshot deltas of ESXi 6.5 and later, read
 * only (as qemu reads them).
 *
 * A constant header in sector 0 locates a volatile header, the grain
 * directory, the preallocated grain tables and the grain area. All entries
 * are 64-bit; the top nibble of an entry is its type.
 */
#include "vmdk.h"

static guint64 div_round_up(guint64 a, guint64 b) { return a / b + (a % b != 0); }
static const char *ext_name(VmdkExtent *ext) { return vd_file_name(ext->file); }

#define SE_MAGIC 0
#define SE_VERSION 8
#define SE_CAPACITY 16
#define SE_GRAIN_SIZE 24
#define SE_GT_SIZE 32
#define SE_FLAGS 40
#define SE_VOLATILE_OFFSET 80
#define SE_GD_OFFSET 128
#define SE_GD_SIZE 136
#define SE_GTS_OFFSET 144
#define SE_GTS_SIZE 152
#define SE_GRAINS_OFFSET 192
#define SE_GRAINS_SIZE 200

#define SE_VOL_MAGIC 0
#define SE_VOL_REPLAY_JOURNAL 24

#define SE_VERSION_2_1 0x0000000200000001ull
#define SE_VOLATILE_MAGIC 0x00000000cafecafeull
#define SE_GRAIN_SECTORS 8u /* the only sizes ESXi writes, and all qemu reads */
#define SE_GT_SECTORS 64u
#define SE_GT_ENTRIES (SE_GT_SECTORS * VMDK_SECTOR / 8)

#define SE_TYPE(e) ((e) >> 60)
enum { SE_UNALLOCATED = 0, SE_UNMAPPED = 1, SE_ZERO = 2, SE_ALLOCATED = 3 };

struct VmdkSeSparse {
    guint64 capacity; /* sectors */
    guint64 gd_entries;
    guint64 *gd;
    guint64 gts_offset, gts_count; /* sectors, tables */
    guint64 grains_offset, grains_count;
    guint64 file_size;
    gint64 cached_gt; /* directory entry of the table in gt, -1 none */
    guint64 *gt;
};

void vmdk_sesparse_free(VmdkSeSparse *se)
{
    if (se == NULL)
        return;
    g_free(se->gd);
    g_free(se->gt);
    g_free(se);
}

static guint64 *read_table64(VdFile *file, guint64 offset, guint64 n, GError **error)
{
    g_autofree guint8 *raw = g_malloc(n * 8);
    if (!vd_file_pread(file, offset, raw, n * 8, error))
        return NULL;
    guint64 *table = g_new(guint64, n);
    for (guint64 i = 0; i < n; i++)
        table[i] = vd_le64(raw + i * 8);
    return table;
}

static gboolean se_check_header(VdImage *img, VmdkExtent *ext, VmdkSeSparse *se, const guint8 *h,
                                GError **error)
{
    const char *name = ext_name(ext);
    if (vd_le64(h + SE_MAGIC) != VMDK_SESPARSE_MAGIC || vd_le64(h + SE_VERSION) != SE_VERSION_2_1 ||
        vd_le64(h + SE_GRAIN_SIZE) != SE_GRAIN_SECTORS ||
        vd_le64(h + SE_GT_SIZE) != SE_GT_SECTORS || vd_le64(h + SE_FLAGS) != 0) {
        vd_set_file_error(error, name, VD_ERROR_UNSUPPORTED_FORMAT,
                          "not a seSparse extent of the supported kind (version 2.1, 4 KiB "
                          "grains, 32 KiB grain tables)");
        return FALSE;
    }
    se->capacity = vd_le64(h + SE_CAPACITY);
    guint64 gd_off = vd_le64(h + SE_GD_OFFSET), gd_size = vd_le64(h + SE_GD_SIZE);
    se->gts_offset = vd_le64(h + SE_GTS_OFFSET);
    se->gts_count = vd_le64(h + SE_GTS_SIZE) / SE_GT_SECTORS;
    se->grains_offset = vd_le64(h + SE_GRAINS_OFFSET);
    se->grains_count = vd_le64(h + SE_GRAINS_SIZE) / SE_GRAIN_SECTORS;
    guint64 limit = se->file_size / VMDK_SECTOR;
    guint64 needed = div_round_up(div_round_up(se->capacity, SE_GRAIN_SECTORS), SE_GT_ENTRIES);
    if (se->capacity > G_MAXINT64 / VMDK_SECTOR || gd_off > limit || gd_size > limit - gd_off ||
        gd_size * VMDK_SECTOR / 8 < needed || needed > VMDK_MAX_GD_ENTRIES ||
        se->gts_offset > limit || se->grains_offset > limit) {
        vd_set_file_error(error, name, VD_ERROR_CORRUPT,
                          "seSparse header describes tables outside the file");
        return FALSE;
    }
    se->gd_entries = needed;
    if (!vd_image_charge_metadata(img, MAX(needed, 1) * 8 * 2, "grain directory", error))
        return FALSE;
    se->gd = read_table64(ext->file, gd_off * VMDK_SECTOR, MAX(needed, 1), error);
    return se->gd != NULL;
}

gboolean vmdk_sesparse_open(VdImage *img, VmdkExtent *ext, GError **error)
{
    VmdkSeSparse *se = g_new0(VmdkSeSparse, 1);
    se->cached_gt = -1;
    ext->sesparse = se;
    guint8 h[VMDK_SECTOR], vol[VMDK_SECTOR];
    if (!vd_file_size(ext->file, &se->file_size, error) ||
        !vd_file_pread_zero_past_eof(ext->file, 0, h, sizeof h, error) ||
        !se_check_header(img, ext, se, h, error))
        return FALSE;
    guint64 vol_off = vd_le64(h + SE_VOLATILE_OFFSET);
    if (vol_off > se->file_size / VMDK_SECTOR ||
        !vd_file_pread_zero_past_eof(ext->file, vol_off * VMDK_SECTOR, vol, sizeof vol, error))
        return FALSE;
    if (vd_le64(vol + SE_VOL_MAGIC) != SE_VOLATILE_MAGIC || vol[SE_VOL_REPLAY_JOURNAL] != 0) {
        vd_set_file_error(error, ext_name(ext), VD_ERROR_NOT_SUPPORTED,
                          "seSparse extent has a journal to replay (or a bad volatile header); "
                          "open it in ESXi first");
        return FALSE;
    }
    if (ext->length > se->capacity * VMDK_SECTOR) {
        vd_set_file_error(error, ext_name(ext), VD_ERROR_CORRUPT,
                          "the extent is smaller than the descriptor says");
        return FALSE;
    }
    return TRUE;
}

/* Kind and (for data) byte offset of one grain. */
static gboolean se_lookup(VmdkExtent *ext, guint64 grain, VmdkGrainKind *kind, guint64 *host,
                          GError **error)
{
    VmdkSeSparse *se = ext->sesparse;
    guint64 i = grain / SE_GT_ENTRIES;
    guint64 d = se->gd[i];
    *kind = VMDK_GRAIN_UNALLOCATED;
    *host = 0;
    if (d == 0)
        return TRUE;
    guint64 index = d & 0xffffffffull;
    if ((d >> 32) != 0x10000000ull || index >= se->gts_count) {
        vd_set_file_error(error, ext_name(ext), VD_ERROR_CORRUPT,
                          "grain directory entry %" G_GUINT64_FORMAT " is invalid", i);
        return FALSE;
    }
    if (se->cached_gt != (gint64)i) {
        guint64 off = (se->gts_offset + index * SE_GT_SECTORS) * VMDK_SECTOR;
        g_free(se->gt);
        se->cached_gt = -1;
        se->gt = read_table64(ext->file, off, SE_GT_ENTRIES, error);
        if (se->gt == NULL)
            return FALSE;
        se->cached_gt = (gint64)i;
    }
    guint64 e = se->gt[grain % SE_GT_ENTRIES];
    switch (SE_TYPE(e)) {
    case SE_UNALLOCATED:
        return TRUE;
    case SE_UNMAPPED:
    case SE_ZERO:
        *kind = VMDK_GRAIN_ZERO;
        return TRUE;
    case SE_ALLOCATED: {
        /* The grain number is stored with its low 12 bits on top. */
        guint64 n = ((e & 0x0fff000000000000ull) >> 48) | ((e & 0x0000ffffffffffffull) << 12);
        guint64 sector = se->grains_offset + n * SE_GRAIN_SECTORS;
        if (n >= se->grains_count || sector >= se->file_size / VMDK_SECTOR) {
            vd_set_file_error(error, ext_name(ext), VD_ERROR_CORRUPT,
                              "grain %" G_GUINT64_FORMAT " points past the end of the file", grain);
            return FALSE;
        }
        *kind = VMDK_GRAIN_DATA;
        *host = sector * VMDK_SECTOR;
        return TRUE;
    }
    default:
        vd_set_file_error(error, ext_name(ext), VD_ERROR_CORRUPT,
                          "grain %" G_GUINT64_FORMAT " has an unknown entry type", grain);
        return FALSE;
    }
}

gboolean vmdk_sesparse_status(VdImage *img, VmdkExtent *ext, guint64 offset, guint64 len,
                              VdExtent *out, GError **error)
{
    const guint64 gb = SE_GRAIN_SECTORS * VMDK_SECTOR;
    guint64 grain = offset / gb, host, h;
    VmdkGrainKind kind, k;
    if (!se_lookup(ext, grain, &kind, &host, error))
        return FALSE;
    guint64 run = MIN(len, gb - offset % gb);
    while (run < len) {
        if (!se_lookup(ext, ++grain, &k, &h, error))
            return FALSE;
        if (k != kind || (kind == VMDK_GRAIN_DATA && h != host + (run + offset % gb)))
            break;
        run = MIN(len, run + gb);
    }
    memset(out, 0, sizeof *out);
    out->kind = vmdk_grain_extent_kind(kind);
    out->length = run;
    if (kind == VMDK_GRAIN_DATA) {
        out->offset_valid = TRUE;
        out->host_offset = host + offset % gb;
    }
    return TRUE;
}

gboolean vmdk_sesparse_read(VdImage *img, VmdkExtent *ext, guint64 offset, guint8 *buf, gsize len,
                            GError **error)
{
    const guint64 gb = SE_GRAIN_SECTORS * VMDK_SECTOR;
    while (len > 0) {
        guint64 in = offset % gb, host;
        gsize n = (gsize)MIN((guint64)len, gb - in);
        VmdkGrainKind kind;
        if (!se_lookup(ext, offset / gb, &kind, &host, error))
            return FALSE;
        if (kind == VMDK_GRAIN_DATA) {
            if (!vd_file_pread_zero_past_eof(ext->file, host + in, buf, n, error))
                return FALSE;
        } else {
            memset(buf, 0, n);
        }
        offset += n;
        buf += n;
        len -= n;
    }
    return TRUE;
}
