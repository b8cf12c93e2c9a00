/* Rebase: give an image another backing file (qemu-img rebase).
 *
 * The safe way keeps the guest's disk as it was: wherever the image holds
 * nothing itself, the old backing chain answered; if the new backing file
 * answers differently there, the old answer is copied into the image first.
 * Only then does the header name the new file, so an interrupted rebase
 * leaves the image on its old backing file, whole. The unsafe way (-u)
 * only changes the name, for a backing file that was moved or renamed.
 */
#include "vdisk-driver.h"

#include <string.h>

/* Compared and copied in pieces of this size (whole clusters). */
#define REBASE_CHUNK (1u << 20)

typedef struct {
    VdImage *img;
    VdImage *new_backing; /* NULL: reads as zeroes */
    guint64 new_size;     /* of new_backing; zeroes past it */
    guint64 old_size;     /* of the old backing file (0: none) */
    guint64 unit;         /* compare and copy granularity: one cluster */
    guint8 *old_data;
    guint8 *new_data;
} Rebase;

/* What the new backing file shows at [offset, offset+len). */
static gboolean read_new(Rebase *r, guint64 offset, guint64 len, GError **error)
{
    memset(r->new_data, 0, len);
    if (r->new_backing == NULL || offset >= r->new_size)
        return TRUE;
    return vd_image_read(r->new_backing, offset, r->new_data, MIN(len, r->new_size - offset),
                         error);
}

/* Zeroes the old chain showed for want of a backing file there: written as
 * zeroes, as qemu-img does (a zero flag where the format has one). Where the
 * format recorded nothing of its own (a qcow2 v2 image without a backing
 * file only leaves the cluster unallocated) they are written as data, for
 * the new backing file must not show through. */
static gboolean keep_old_zeroes(Rebase *r, guint64 offset, guint64 len, GError **error)
{
    if (!vd_image_write_zeroes(r->img, offset, len, FALSE, error))
        return FALSE;
    for (guint64 pos = 0; pos < len;) {
        VdBlockStatus st;
        if (!vd_image_block_status(r->img, offset + pos, len - pos, FALSE, &st, error))
            return FALSE;
        guint64 n = MIN(st.length, len - pos);
        if (!(st.flags & VD_BLOCK_ALLOCATED)) {
            g_autofree guint8 *zero = g_malloc0(n);
            if (!vd_image_write(r->img, offset + pos, zero, n, error))
                return FALSE;
        }
        pos += n;
    }
    return TRUE;
}

/* A range the image does not hold itself: keep what the old chain shows
 * there wherever the new backing file would show something else. */
static gboolean keep_old_content(Rebase *r, guint64 offset, guint64 len, GError **error)
{
    /* Past the end of the old backing file (or without one) the old chain
     * shows zeroes; qemu-img writes those as zeroes, the rest as data. */
    if (offset < r->old_size && offset + len > r->old_size) {
        guint64 head = r->old_size - offset;
        return keep_old_content(r, offset, head, error) &&
               keep_old_content(r, offset + head, len - head, error);
    }
    gboolean old_zero = offset >= r->old_size;
    if (!vd_image_read(r->img, offset, r->old_data, len, error) || !read_new(r, offset, len, error))
        return FALSE;
    for (guint64 pos = 0; pos < len; pos += r->unit) {
        guint64 n = MIN(r->unit, len - pos);
        if (memcmp(r->old_data + pos, r->new_data + pos, n) == 0)
            continue;
        if (old_zero ? !keep_old_zeroes(r, offset + pos, n, error)
                     : !vd_image_write(r->img, offset + pos, r->old_data + pos, n, error))
            return FALSE;
    }
    return TRUE;
}

static gboolean copy_differences(Rebase *r, VdProgressFunc progress, gpointer progress_data,
                                 GCancellable *cancellable, GError **error)
{
    guint64 size = vd_image_size(r->img);
    for (guint64 offset = 0; offset < size;) {
        if (g_cancellable_set_error_if_cancelled(cancellable, error))
            return FALSE;
        VdBlockStatus st;
        guint64 len = MIN((guint64)REBASE_CHUNK, size - offset);
        if (!vd_image_block_status(r->img, offset, len, FALSE, &st, error))
            return FALSE;
        len = MIN(len, st.length);
        if (!(st.flags & VD_BLOCK_ALLOCATED) && !keep_old_content(r, offset, len, error))
            return FALSE;
        offset += len;
        if (progress != NULL)
            progress(offset, size, progress_data);
    }
    return vd_image_flush(r->img, error);
}

gboolean vd_image_rebase(VdImage *img, const char *backing, const char *backing_format,
                         VdImage *new_backing, gboolean unsafe, VdProgressFunc progress,
                         gpointer progress_data, GCancellable *cancellable, GError **error)
{
    if (img->drv->set_backing == NULL) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "the %s format cannot change its backing file", img->drv->name);
        return FALSE;
    }
    if (!vd_image_require_writable(img, error))
        return FALSE;
    if (!unsafe && vd_image_needs_key(img)) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "is encrypted: a safe rebase reads and writes its data, so it needs the key");
        return FALSE;
    }
    if (!unsafe) {
        guint64 unit = MAX(vd_image_cluster_size(img), 512u);
        Rebase r = {
            .img = img,
            .new_backing = new_backing,
            .new_size = new_backing != NULL ? vd_image_size(new_backing) : 0,
            .old_size = vd_image_backing(img) != NULL ? vd_image_size(vd_image_backing(img)) : 0,
            .unit = unit,
        };
        gsize chunk = (gsize)MAX((guint64)REBASE_CHUNK, unit);
        r.old_data = g_malloc(chunk);
        r.new_data = g_malloc(chunk);
        gboolean ok = copy_differences(&r, progress, progress_data, cancellable, error);
        g_free(r.old_data);
        g_free(r.new_data);
        if (!ok)
            return FALSE;
    }
    g_mutex_lock(&img->lock);
    gboolean ok = img->drv->set_backing(img, backing, backing_format, error);
    g_mutex_unlock(&img->lock);
    return ok;
}
