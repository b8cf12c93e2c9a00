/* Commit: write what an overlay holds into a file of its backing chain
 * (qemu-img commit).
 *
 * Everything the layers above the base answer is copied into the base:
 * data as data, zeroes as zeroes; what the base (or below) answers is left
 * alone. The base grows to the overlay's size first. Emptying the overlay
 * afterwards is the caller's business: it needs the overlay open for
 * writing, and only once the base is safely written.
 */
#include "vdisk-driver.h"

#include <string.h>

#define COMMIT_CHUNK (1u << 20)

static gboolean commit_range(VdImage *top, VdImage *base, const VdBlockStatus *st, guint64 offset,
                             guint64 len, guint8 *buf, GError **error)
{
    if (st->flags & VD_BLOCK_ZERO)
        return vd_image_write_zeroes(base, offset, len, TRUE, error);
    return vd_image_read(top, offset, buf, len, error) &&
           vd_image_write(base, offset, buf, len, error);
}

gboolean vd_image_commit(VdImage *top, VdImage *base, guint base_depth, VdProgressFunc progress,
                         gpointer progress_data, GCancellable *cancellable, GError **error)
{
    guint64 size = vd_image_size(top);
    if (vd_image_size(base) < size && !vd_image_resize(base, size, FALSE, error)) {
        g_prefix_error(error, "could not grow the base to the overlay's size: ");
        return FALSE;
    }
    g_autofree guint8 *buf = g_malloc(COMMIT_CHUNK);
    for (guint64 offset = 0; offset < size;) {
        if (g_cancellable_set_error_if_cancelled(cancellable, error))
            return FALSE;
        VdBlockStatus st;
        guint64 len = MIN((guint64)COMMIT_CHUNK, size - offset);
        if (!vd_image_block_status(top, offset, len, TRUE, &st, error))
            return FALSE;
        len = MIN(len, st.length);
        /* Answered by a layer above the base: that is what to commit. */
        if ((st.flags & VD_BLOCK_ALLOCATED) && st.depth < base_depth &&
            !commit_range(top, base, &st, offset, len, buf, error))
            return FALSE;
        offset += len;
        if (progress != NULL)
            progress(offset, size, progress_data);
    }
    return vd_image_flush(base, error);
}
