/* Guest-content comparison of two images, as qemu-img compare does it:
 * ranges that read zero in both are skipped without reading. */
#include "vdisk-driver.h"

#define COMPARE_CHUNK (1u << 20)
#define SECTOR 512

static gboolean reads_zero(VdImage *img, guint64 offset, guint64 len, guint64 *run, GError **error)
{
    VdBlockStatus st;
    if (!vd_image_block_status(img, offset, len, TRUE, &st, error))
        return FALSE;
    *run = st.length;
    return (st.flags & VD_BLOCK_ZERO) && !(st.flags & VD_BLOCK_DATA);
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
static gboolean compare_common(VdImage *a, VdImage *b, guint64 len, GCancellable *cancellable,
                               VdCompareResult *res, GError **error)
{
    g_autofree guint8 *buf_a = g_malloc(COMPARE_CHUNK);
    g_autofree guint8 *buf_b = g_malloc(COMPARE_CHUNK);
    for (guint64 offset = 0; offset < len;) {
        if (!check_cancel(cancellable, error))
            return FALSE;
        guint64 n = MIN((guint64)COMPARE_CHUNK, len - offset);
        guint64 run_a = n, run_b = n;
        gboolean zero_a, zero_b = FALSE;
        GError *local = NULL;
        zero_a = reads_zero(a, offset, n, &run_a, &local);
        if (local == NULL)
            zero_b = reads_zero(b, offset, n, &run_b, &local);
        if (local != NULL) {
            g_propagate_error(error, local);
            return FALSE;
        }
        n = MIN(run_a, run_b);
        if (!(zero_a && zero_b)) {
            if (!vd_image_read(a, offset, buf_a, n, error) ||
                !vd_image_read(b, offset, buf_b, n, error))
                return FALSE;
            gint64 at = first_mismatch(buf_a, buf_b, n);
            if (at >= 0) {
                res->identical = FALSE;
                res->first_difference = offset + (guint64)at;
                return TRUE;
            }
        }
        offset += n;
    }
    return TRUE;
}

/* The part of the longer image past the shorter one must read zero. */
static gboolean compare_tail(VdImage *longer, guint64 from, GCancellable *cancellable,
                             VdCompareResult *res, GError **error)
{
    g_autofree guint8 *buf = g_malloc(COMPARE_CHUNK);
    guint64 size = vd_image_size(longer);
    for (guint64 offset = from; offset < size;) {
        if (!check_cancel(cancellable, error))
            return FALSE;
        guint64 n = MIN((guint64)COMPARE_CHUNK, size - offset);
        guint64 run = n;
        g_autoptr(GError) local = NULL;
        gboolean zero = reads_zero(longer, offset, n, &run, &local);
        if (local != NULL) {
            g_propagate_error(error, g_steal_pointer(&local));
            return FALSE;
        }
        if (!zero) {
            if (!vd_image_read(longer, offset, buf, run, error))
                return FALSE;
            for (guint64 pos = 0; pos < run; pos += SECTOR) {
                if (!vd_buffer_is_zero(buf + pos, MIN((guint64)SECTOR, run - pos))) {
                    res->identical = FALSE;
                    res->first_difference = offset + pos;
                    return TRUE;
                }
            }
        }
        offset += run;
    }
    return TRUE;
}

gboolean vd_compare(VdImage *a, VdImage *b, gboolean strict, GCancellable *cancellable,
                    VdCompareResult *res, GError **error)
{
    guint64 size_a = vd_image_size(a), size_b = vd_image_size(b);
    res->identical = TRUE;
    res->first_difference = 0;
    if (strict && size_a != size_b) {
        res->identical = FALSE;
        res->first_difference = MIN(size_a, size_b);
        return TRUE;
    }
    if (!compare_common(a, b, MIN(size_a, size_b), cancellable, res, error))
        return FALSE;
    if (!res->identical || size_a == size_b)
        return TRUE;
    VdImage *longer = size_a > size_b ? a : b;
    return compare_tail(longer, MIN(size_a, size_b), cancellable, res, error);
}
