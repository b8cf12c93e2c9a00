/* cow: the copy-on-write overlay of User-Mode Linux, as QEMU read and wrote
 * it until QEMU dropped the format in 2014. No current tool documents it, so
 * here is the layout this driver implements. All numbers are big-endian.
 *
 *   offset  size  field
 *   0       4     magic 0x4f4f4f4d ("OOOM")
 *   4       4     version, 2
 *   8       1024  backing file name, NUL-terminated (so at most 1023
 *                 bytes); all zero when there is none
 *   1032    4     mtime of the backing file in seconds (informational:
 *                 QEMU never checked it)
 *   1036    4     padding
 *   1040    8     virtual size in bytes, a multiple of 512
 *   1048    4     sector size, 512
 *   1052    4     padding
 *   1056          bitmap: one bit per 512-byte sector; sector n is bit
 *                 (n % 8) of byte n / 8 (least significant bit first). A set
 *                 bit means the sector is stored in this file; a clear one
 *                 that the backing file (or zero) answers.
 *   data_offset   the sectors: sector n at data_offset + n * 512, where
 *                 data_offset = round_up(1056 + ceil(sectors / 8), 512).
 *                 Sectors never written may lie past the end of the file.
 *
 * The padding is there because QEMU declared the header as an unpacked C
 * struct: on the 64-bit hosts it ran on, the 8-byte size was aligned to 8.
 * User-Mode Linux itself, and QEMU on 32-bit x86, wrote the same fields
 * without padding: size at 1036, sector size at 1044, bitmap at 1048. Both
 * are read (told apart by where the sector size 512 is); new images get the
 * 64-bit QEMU layout.
 *
 * cow has no compression and cannot record the backing file's format; the
 * backing_fmt create option is accepted and ignored (the format is probed
 * on open), as for qcow.
 */
#include "vdisk-driver.h"

#include <sys/stat.h>

#define COW_MAGIC 0x4f4f4f4du
#define COW_VERSION 2
#define COW_SECTOR 512u
#define BACKING_FIELD_LEN 1024

/* Field offsets shared by both layouts. */
enum {
    HDR_MAGIC = 0,
    HDR_VERSION = 4,
    HDR_BACKING = 8,
    HDR_MTIME = 1032,
};

/* The fields whose offsets differ. */
typedef struct {
    guint size_at;
    guint sector_size_at;
    guint header_len; /* where the bitmap starts */
} CowLayout;

static const CowLayout layout_qemu64 = { .size_at = 1040,
                                         .sector_size_at = 1048,
                                         .header_len = 1056 };
static const CowLayout layout_packed = { .size_at = 1036,
                                         .sector_size_at = 1044,
                                         .header_len = 1048 };

/* Bitmap bytes read at a time: 64 KiB map 256 MiB of guest. */
#define BITMAP_WINDOW (64u << 10)
/* Keeps data_offset + size inside what a file offset can hold. */
#define MAX_COW_SIZE (1ull << 62)

typedef struct {
    guint64 bitmap_offset;
    guint64 data_offset;
    guint64 sectors;
    /* One window of the bitmap, read on demand: a large image's bitmap is
     * never held whole. */
    guint64 win_start; /* bitmap byte offset of win[0] */
    gsize win_len;     /* 0 = nothing cached */
    guint8 *win;
} CowState;

static const VdCreateOption cow_create_options[] = {
    { "size", VD_OPTION_SIZE, NULL, "Virtual disk size" },
    { "backing_file", VD_OPTION_STRING, NULL, "File name of a base image" },
    { "backing_fmt", VD_OPTION_STRING, NULL, "Image format of the base image" },
    { NULL },
};

static inline guint64 round_up(guint64 v, guint64 align) { return (v + align - 1) / align * align; }

static int cow_probe(const guint8 *buf, gsize len, const char *filename)
{
    if (len < HDR_VERSION + 4)
        return 0;
    gboolean match =
        vd_be32(buf + HDR_MAGIC) == COW_MAGIC && vd_be32(buf + HDR_VERSION) == COW_VERSION;
    return match ? 100 : 0;
}

static guint64 data_offset_for(guint header_len, guint64 sectors)
{
    return round_up(header_len + (sectors + 7) / 8, COW_SECTOR);
}

/* ----- the bitmap ----- */

/* Make the window hold the bitmap byte at index byte. */
static gboolean load_window(VdImage *img, guint64 byte, GError **error)
{
    CowState *s = img->priv;
    if (s->win_len > 0 && byte >= s->win_start && byte < s->win_start + s->win_len)
        return TRUE;
    guint64 total = (s->sectors + 7) / 8;
    s->win_start = byte / BITMAP_WINDOW * BITMAP_WINDOW;
    gsize len = (gsize)MIN((guint64)BITMAP_WINDOW, total - s->win_start);
    s->win_len = 0;
    /* qemu truncated new images to just past the bitmap; a shorter file
     * reads as clear bits. */
    if (!vd_file_pread_zero_past_eof(img->file, s->bitmap_offset + s->win_start, s->win, len,
                                     error))
        return FALSE;
    s->win_len = len;
    return TRUE;
}

static gboolean sector_bit(CowState *s, guint64 sector)
{
    return (s->win[sector / 8 - s->win_start] >> (sector % 8)) & 1;
}

/* Is sector set, and for how many sectors (at most max) does that last? */
static gboolean bit_run(VdImage *img, guint64 sector, guint64 max, gboolean *set, guint64 *run,
                        GError **error)
{
    CowState *s = img->priv;
    if (!load_window(img, sector / 8, error))
        return FALSE;
    *set = sector_bit(s, sector);
    guint8 same = *set ? 0xff : 0x00;
    /* Bitmap bytes past the end of the file read as clear, so a clear run
     * that gets there lasts to max at once: a header may claim an exabyte
     * disk over a short file, and that must not be scanned byte by byte. */
    guint64 file_size;
    if (!vd_file_size(img->file, &file_size, error))
        return FALSE;
    guint64 n = 0;
    while (n < max) {
        guint64 cur = sector + n;
        if (!*set && s->bitmap_offset + cur / 8 >= file_size) {
            n = max;
            break;
        }
        if (!load_window(img, cur / 8, error))
            return FALSE;
        /* Whole bytes at a time where the run goes on. */
        if (cur % 8 == 0 && max - n >= 8 && s->win[cur / 8 - s->win_start] == same) {
            n += 8;
            continue;
        }
        if (sector_bit(s, cur) != *set)
            break;
        n++;
    }
    *run = n;
    return TRUE;
}

/* Set the bits of sectors [first, first+count), in the file and the window. */
static gboolean set_bits(VdImage *img, guint64 first, guint64 count, GError **error)
{
    CowState *s = img->priv;
    guint64 lo = first / 8, hi = (first + count - 1) / 8;
    gsize len = (gsize)(hi - lo + 1);
    g_autofree guint8 *bytes = g_malloc(len);
    if (!vd_file_pread_zero_past_eof(img->file, s->bitmap_offset + lo, bytes, len, error))
        return FALSE;
    for (guint64 sector = first; sector < first + count;) {
        if (sector % 8 == 0 && first + count - sector >= 8) {
            bytes[sector / 8 - lo] = 0xff;
            sector += 8;
        } else {
            bytes[sector / 8 - lo] |= (guint8)(1u << (sector % 8));
            sector++;
        }
    }
    s->win_len = 0; /* simpler than patching the cached window */
    return vd_file_pwrite(img->file, s->bitmap_offset + lo, bytes, len, error);
}

/* Mark sectors as stored here, after their data is on disk: a crash in
 * between leaves the old content visible, never garbage. */
static gboolean mark_allocated(VdImage *img, guint64 first, guint64 count, GError **error)
{
    gboolean set;
    guint64 run;
    if (!bit_run(img, first, count, &set, &run, error))
        return FALSE;
    if (set && run == count)
        return TRUE; /* rewrites of stored sectors need no bitmap change */
    return vd_file_sync(img->file, error) && set_bits(img, first, count, error);
}

/* ----- open and close ----- */

/* Which layout the header uses: the sector size is always 512. */
static gboolean pick_layout(VdImage *img, const guint8 *hdr, const CowLayout **layout,
                            GError **error)
{
    if (vd_be32(hdr + layout_qemu64.sector_size_at) == COW_SECTOR) {
        *layout = &layout_qemu64;
        return TRUE;
    }
    if (vd_be32(hdr + layout_packed.sector_size_at) == COW_SECTOR) {
        *layout = &layout_packed;
        return TRUE;
    }
    vd_set_error(error, img, VD_ERROR_CORRUPT,
                 "the header has no sector size of 512 (at offset 1048, or 1044 in the packed "
                 "layout)");
    return FALSE;
}

static gboolean parse_backing(VdImage *img, const guint8 *hdr, GError **error)
{
    const char *field = (const char *)hdr + HDR_BACKING;
    gsize len = strnlen(field, BACKING_FIELD_LEN);
    if (len == BACKING_FIELD_LEN) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "backing file name is not NUL-terminated");
        return FALSE;
    }
    if (len > 0) {
        g_free(img->backing_name); /* an explicit parent, which wins after open */
        img->backing_name = g_strndup(field, len);
    }
    return TRUE;
}

static gboolean cow_open(VdImage *img, GError **error)
{
    CowState *s = g_new0(CowState, 1);
    img->priv = s;
    guint64 file_size;
    if (!vd_file_size(img->file, &file_size, error))
        return FALSE;
    if (file_size < layout_packed.header_len) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "file is too short for a cow header");
        return FALSE;
    }
    guint8 hdr[1056];
    if (!vd_file_pread_zero_past_eof(img->file, 0, hdr, sizeof hdr, error))
        return FALSE;
    if (vd_be32(hdr + HDR_MAGIC) != COW_MAGIC) {
        vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT, "not a cow image (bad magic)");
        return FALSE;
    }
    guint32 version = vd_be32(hdr + HDR_VERSION);
    if (version != COW_VERSION) {
        vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT,
                     "cow version %u is not supported (only version 2, QEMU's)", version);
        return FALSE;
    }
    const CowLayout *layout;
    if (!pick_layout(img, hdr, &layout, error) || !parse_backing(img, hdr, error))
        return FALSE;
    guint64 size = vd_be64(hdr + layout->size_at);
    if (size > MAX_COW_SIZE) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "virtual size %" G_GUINT64_FORMAT " is too large", size);
        return FALSE;
    }
    /* A partial last sector is dropped, as QEMU did. */
    s->sectors = size / COW_SECTOR;
    s->bitmap_offset = layout->header_len;
    s->data_offset = data_offset_for(layout->header_len, s->sectors);
    s->win = g_malloc(BITMAP_WINDOW);
    img->size = s->sectors * COW_SECTOR;
    return TRUE;
}

static void cow_close(VdImage *img)
{
    CowState *s = img->priv;
    if (s == NULL)
        return;
    g_free(s->win);
    g_free(s);
    img->priv = NULL;
}

/* ----- create ----- */

/* The backing file's mtime, as QEMU recorded it; 0 when it cannot be read. */
static guint32 backing_mtime(const VdCreateParams *params)
{
    g_autoptr(VdImage) backing =
        vd_create_open_backing(params, NULL, VD_OPEN_NO_BACKING | VD_OPEN_FORCE_SHARE, NULL);
    struct stat st;
    return backing != NULL && fstat(vd_file_fd(backing->file), &st) == 0 ? (guint32)st.st_mtime : 0;
}

static gboolean cow_create(VdFile *file, const VdCreateParams *params, GError **error)
{
    const CowLayout *layout = &layout_qemu64;
    /* Rounded up, not down as QEMU did, so a copy of an image whose size is
     * not a sector multiple still fits. */
    if (params->size > MAX_COW_SIZE) {
        vd_set_file_error(error, params->path, VD_ERROR_INVALID_ARGUMENT,
                          "virtual size %" G_GUINT64_FORMAT " is too large for a cow image",
                          params->size);
        return FALSE;
    }
    guint64 size = round_up(params->size, COW_SECTOR);
    guint8 hdr[1056] = { 0 };
    vd_put_be32(hdr + HDR_MAGIC, COW_MAGIC);
    vd_put_be32(hdr + HDR_VERSION, COW_VERSION);
    if (params->backing_file != NULL) {
        gsize len = strlen(params->backing_file);
        if (len >= BACKING_FIELD_LEN) {
            vd_set_file_error(error, params->path, VD_ERROR_INVALID_ARGUMENT,
                              "backing file name is longer than %d bytes", BACKING_FIELD_LEN - 1);
            return FALSE;
        }
        memcpy(hdr + HDR_BACKING, params->backing_file, len);
        vd_put_be32(hdr + HDR_MTIME, backing_mtime(params));
    }
    vd_put_be64(hdr + layout->size_at, size);
    vd_put_be32(hdr + layout->sector_size_at, COW_SECTOR);
    if (!vd_file_pwrite(file, 0, hdr, layout->header_len, error))
        return FALSE;
    /* An all-clear bitmap; the data area grows as sectors are written. */
    guint64 sectors = size / COW_SECTOR;
    return vd_file_truncate(file, layout->header_len + (sectors + 7) / 8, error);
}

/* ----- block status, reading, writing ----- */

static gboolean cow_block_status(VdImage *img, guint64 offset, guint64 len, VdExtent *out,
                                 GError **error)
{
    CowState *s = img->priv;
    guint64 first = offset / COW_SECTOR;
    guint64 last = (offset + len - 1) / COW_SECTOR;
    gboolean set;
    guint64 run;
    if (!bit_run(img, first, last - first + 1, &set, &run, error))
        return FALSE;
    out->kind = set ? VD_EXTENT_DATA : VD_EXTENT_UNALLOCATED;
    out->length = MIN((first + run) * COW_SECTOR, offset + len) - offset;
    out->offset_valid = set;
    out->host_offset = set ? s->data_offset + offset : 0;
    out->plain_file = set ? img->file : NULL;
    return TRUE;
}

/* Stored sectors lie in guest order, so any DATA range is one read. */
static gboolean cow_read(VdImage *img, guint64 offset, void *buf, gsize len, GError **error)
{
    CowState *s = img->priv;
    return vd_file_pread_zero_past_eof(img->file, s->data_offset + offset, buf, len, error);
}

/* Write len bytes (less than a sector) inside one sector: the rest of the
 * sector comes from this file when stored, else from the backing file. */
static gboolean write_partial_sector(VdImage *img, guint64 offset, const guint8 *data, gsize len,
                                     GError **error)
{
    CowState *s = img->priv;
    guint64 sector = offset / COW_SECTOR;
    guint64 start = sector * COW_SECTOR;
    guint8 buf[COW_SECTOR];
    gboolean set;
    guint64 run;
    if (!bit_run(img, sector, 1, &set, &run, error))
        return FALSE;
    gboolean ok =
        set ? vd_file_pread_zero_past_eof(img->file, s->data_offset + start, buf, sizeof buf, error)
            : vd_image_read_backing(img, start, buf, sizeof buf, error);
    if (!ok)
        return FALSE;
    memcpy(buf + (offset - start), data, len);
    return vd_file_pwrite(img->file, s->data_offset + start, buf, sizeof buf, error) &&
           mark_allocated(img, sector, 1, error);
}

static gboolean cow_write(VdImage *img, guint64 offset, const void *buf, gsize len, GError **error)
{
    CowState *s = img->priv;
    const guint8 *in = buf;
    guint64 head = offset % COW_SECTOR;
    if (head != 0) {
        gsize n = (gsize)MIN(COW_SECTOR - head, len);
        if (!write_partial_sector(img, offset, in, n, error))
            return FALSE;
        offset += n;
        in += n;
        len -= n;
    }
    gsize whole = len / COW_SECTOR * COW_SECTOR;
    if (whole > 0) {
        if (!vd_file_pwrite(img->file, s->data_offset + offset, in, whole, error) ||
            !mark_allocated(img, offset / COW_SECTOR, whole / COW_SECTOR, error))
            return FALSE;
        offset += whole;
        in += whole;
        len -= whole;
    }
    return len == 0 || write_partial_sector(img, offset, in, len, error);
}

static gboolean write_zero_buffer(VdImage *img, guint64 offset, guint64 len, GError **error)
{
    static const gsize chunk = 1 << 20;
    g_autofree guint8 *zeroes = g_malloc0((gsize)MIN(len, chunk));
    for (guint64 done = 0; done < len;) {
        gsize n = (gsize)MIN(len - done, chunk);
        if (!cow_write(img, offset + done, zeroes, n, error))
            return FALSE;
        done += n;
    }
    return TRUE;
}

/* Bits are never cleared (a clear bit would show the backing file). Without
 * a backing file, sectors not stored already read as zero; stored ones get
 * their data zeroed, punched out when allowed. */
static gboolean cow_write_zeroes(VdImage *img, guint64 offset, guint64 len, gboolean may_unmap,
                                 GError **error)
{
    CowState *s = img->priv;
    if (img->backing_name != NULL || offset % COW_SECTOR != 0 || len % COW_SECTOR != 0)
        return write_zero_buffer(img, offset, len, error);
    for (guint64 done = 0; done < len;) {
        gboolean set;
        guint64 run;
        if (!bit_run(img, (offset + done) / COW_SECTOR, (len - done) / COW_SECTOR, &set, &run,
                     error))
            return FALSE;
        guint64 n = run * COW_SECTOR;
        if (set &&
            !vd_file_write_zeroes(img->file, s->data_offset + offset + done, n, may_unmap, error))
            return FALSE;
        done += n;
    }
    return TRUE;
}

/* Unset bits read as zero; the generic layer says FALSE when there is a
 * backing file. */
static gboolean cow_has_zero_init(VdImage *img) { return TRUE; }

const VdDriver vd_driver_cow = {
    .name = "cow",
    .create_options = cow_create_options,
    .probe = cow_probe,
    .open = cow_open,
    .close = cow_close,
    .create = cow_create,
    .block_status = cow_block_status,
    .read = cow_read,
    .write = cow_write,
    .write_zeroes = cow_write_zeroes,
    .has_zero_init = cow_has_zero_init,
};
