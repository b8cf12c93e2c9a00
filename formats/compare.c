/* Guest-content comparison of two images, as qemu-img compare does it:
 * ranges that read zero in both are skipped without reading. */
#include "vdisk-driver.h"

#include <string.h>

/* qemu-img compare reads at most 2 MiB at a time: where a read fails
 * (blkdebug) is told the same way. */
#define COMPARE_CHUNK (2u << 20)
#define SECTOR 512

typedef struct {
    VdImage *img;
    guint64 size;
    VdBlockStatus st; /* the run that holds [at, end) */
    guint64 at;
    guint64 end; /* 0: nothing asked yet */
} StatusCursor;

/* The block status at offset, asked again only once offset leaves the
 * run the last answer covered (a run is asked to the image's end, for the
 * strict comparison's end-of-file flag, but a long run is asked once). */
static gboolean status_at(StatusCursor *c, guint64 offset, GError **error)
{
    if (c->end != 0 && offset >= c->at && offset < c->end)
        return TRUE;
    if (!vd_image_block_status(c->img, offset, c->size - offset, TRUE, &c->st, error))
        return FALSE;
    c->at = offset;
    c->end = offset + MAX(c->st.length, 1);
    return TRUE;
}

/* A read or block status request that failed: note which (qemu-img
 * compare tells them apart by its exit code). */
static gboolean failed(VdCompareResult *res, gboolean read, VdImage *img, VdImage *a,
                       guint64 offset)
{
    res->read_failed = read;
    res->status_failed = !read;
    res->failed_image = img == a ? 0 : 1;
    res->failed_offset = offset;
    return FALSE;
}

static gboolean cursor_reads_zero(const StatusCursor *c)
{
    return (c->st.flags & VD_BLOCK_ZERO) && !(c->st.flags & VD_BLOCK_DATA);
}

/* What qemu-img compare -s holds against each other: how the range is
 * stored, and whether its run reaches the end of the image (qemu's block
 * status carries that as a flag, so an image whose last run starts here
 * differs from one that changes further on). */
static guint status_key(const StatusCursor *c)
{
    guint key =
        c->st.flags & (VD_BLOCK_DATA | VD_BLOCK_ZERO | VD_BLOCK_ALLOCATED | VD_BLOCK_OFFSET_VALID);
    return c->end >= c->size ? key | 1u << 16 : key;
}

static void report(VdProgressFunc progress, gpointer data, guint64 done, guint64 total)
{
    if (progress != NULL)
        progress(done, total, data);
}

/* Offset of the first differing sector in two buffers, or -1. */
static gint64 first_mismatch(const guint8 *a, const guint8 *b, gsize len)
{
    for (gsize pos = 0; pos < len; pos += SECTOR) {
        gsize n = MIN((gsize)SECTOR, len - pos);
        if (memcmp(a + pos, b + pos, n) != 0)
            return (gint64)pos;
    }
    return -1;
}

static gboolean check_cancel(GCancellable *cancellable, GError **error)
{
    if (cancellable != NULL && g_cancellable_is_cancelled(cancellable)) {
        g_set_error(error, VD_ERROR, VD_ERROR_CANCELLED, "the comparison was cancelled");
        return FALSE;
    }
    return TRUE;
}

/* Compare [0, len) of a and b. */
static gboolean compare_common(VdImage *a, VdImage *b, guint64 len, VdCompareFlags flags,
                               VdProgressFunc progress, gpointer progress_data, guint64 total,
                               GCancellable *cancellable, VdCompareResult *res, GError **error)
{
    g_autofree guint8 *buf_a = g_malloc(COMPARE_CHUNK);
    g_autofree guint8 *buf_b = g_malloc(COMPARE_CHUNK);
    StatusCursor ca = { .img = a, .size = len }, cb = { .img = b, .size = len };
    for (guint64 offset = 0; offset < len;) {
        if (!check_cancel(cancellable, error))
            return FALSE;
        if (!status_at(&ca, offset, error))
            return failed(res, FALSE, a, a, offset);
        if (!status_at(&cb, offset, error))
            return failed(res, FALSE, b, a, offset);
        if ((flags & VD_COMPARE_STRICT_STATUS) && status_key(&ca) != status_key(&cb)) {
            res->identical = FALSE;
            res->status_mismatch = TRUE;
            res->first_difference = offset;
            return TRUE;
        }
        guint64 n = MIN(MIN(ca.end, cb.end) - offset, (guint64)COMPARE_CHUNK);
        if (!(cursor_reads_zero(&ca) && cursor_reads_zero(&cb))) {
            if (!vd_image_read(a, offset, buf_a, n, error))
                return failed(res, TRUE, a, a, offset);
            if (!vd_image_read(b, offset, buf_b, n, error))
                return failed(res, TRUE, b, a, offset);
            gint64 at = first_mismatch(buf_a, buf_b, n);
            if (at >= 0) {
                res->identical = FALSE;
                res->first_difference = offset + (guint64)at;
                return TRUE;
            }
        }
        offset += n;
        report(progress, progress_data, offset, total);
    }
    return TRUE;
}

/* The part of the longer image past the shorter one must read zero. */
static gboolean compare_tail(VdImage *a, VdImage *longer, guint64 from, VdProgressFunc progress,
                             gpointer progress_data, GCancellable *cancellable,
                             VdCompareResult *res, GError **error)
{
    res->tail_checked = TRUE;
    g_autofree guint8 *buf = g_malloc(COMPARE_CHUNK);
    guint64 size = vd_image_size(longer);
    for (guint64 offset = from; offset < size;) {
        if (!check_cancel(cancellable, error))
            return FALSE;
        guint64 n = MIN((guint64)COMPARE_CHUNK, size - offset);
        VdBlockStatus st;
        if (!vd_image_block_status(longer, offset, n, TRUE, &st, error))
            return failed(res, FALSE, longer, a, offset);
        guint64 run = st.length;
        if (!((st.flags & VD_BLOCK_ZERO) && !(st.flags & VD_BLOCK_DATA))) {
            if (!vd_image_read(longer, offset, buf, run, error))
                return failed(res, TRUE, longer, a, offset);
            for (guint64 pos = 0; pos < run; pos += SECTOR) {
                if (!vd_buffer_is_zero(buf + pos, MIN((guint64)SECTOR, run - pos))) {
                    res->identical = FALSE;
                    res->first_difference = offset + pos;
                    return TRUE;
                }
            }
        }
        offset += run;
        report(progress, progress_data, offset, size);
    }
    return TRUE;
}

gboolean vd_compare(VdImage *a, VdImage *b, gboolean strict, GCancellable *cancellable,
                    VdCompareResult *res, GError **error)
{
    return vd_compare_full(a, b, strict ? VD_COMPARE_STRICT_SIZE : 0, NULL, NULL, cancellable, res,
                           error);
}

gboolean vd_compare_full(VdImage *a, VdImage *b, VdCompareFlags flags, VdProgressFunc progress,
                         gpointer progress_data, GCancellable *cancellable, VdCompareResult *res,
                         GError **error)
{
    guint64 size_a = vd_image_size(a), size_b = vd_image_size(b);
    guint64 total = MAX(size_a, size_b);
    memset(res, 0, sizeof *res);
    res->identical = TRUE;
    if ((flags & (VD_COMPARE_STRICT_SIZE | VD_COMPARE_STRICT_STATUS)) && size_a != size_b) {
        res->identical = FALSE;
        res->first_difference = MIN(size_a, size_b);
        return TRUE;
    }
    report(progress, progress_data, 0, total);
    if (!compare_common(a, b, MIN(size_a, size_b), flags, progress, progress_data, total,
                        cancellable, res, error))
        return FALSE;
    if (!res->identical || size_a == size_b)
        return TRUE;
    VdImage *longer = size_a > size_b ? a : b;
    return compare_tail(a, longer, MIN(size_a, size_b), progress, progress_data, cancellable, res,
                        error);
}
