/* qcow2: empty an image after a commit (vd_image_make_empty), as QEMU's
 * qcow2 driver does it.
 *
 * A version 3 image without snapshots, bitmaps, LUKS header or external
 * data file is made new in place: under the dirty bit, the L1 table and
 * the clusters after the header are zeroed, the header points at a
 * one-cluster refcount table in cluster 1, a refcount block in cluster 2
 * and the L1 table from cluster 3 on, the file is cut after it and the
 * bit is cleared. A step that fails leaves an image whose next read-write
 * open (in QEMU as in vdisk) rebuilds what the dirty bit covers; the
 * handle writes nothing more then. Other images have every cluster
 * discarded. The steps fire QEMU's blkdebug events in QEMU's order, so a
 * rule on one of them fails the same step as in qemu-img. */
#include "qcow2.h"

#include <string.h>

/* Write the reftable's first entry or the header's table fields, then
 * sync, as one step. */
static gboolean pwrite_sync(Qcow2State *s, guint64 offset, const guint8 *buf, gsize len,
                            GError **error)
{
    return vd_file_pwrite(s->img->file, offset, buf, len, error) &&
           vd_file_sync(s->img->file, error);
}

static gboolean make_completely_empty(Qcow2State *s, GError **error)
{
    VdFile *file = s->img->file;
    guint64 cs = s->cluster_size;
    guint64 l1_clusters = ((guint64)s->l1_size * 8 + cs - 1) / cs;

    if (!qcow2_flush_metadata(s, error))
        return FALSE;
    qcow2_cache_drop_all(s->l2_cache);
    qcow2_cache_drop_all(s->rb_cache);
    /* From here the refcounts will not describe the image until the end. */
    if (!qcow2_mark_dirty_during(s, error))
        return FALSE;

    vd_file_debug_event(file, VD_EVENT_L1_UPDATE);
    if (!vd_file_write_zeroes(file, s->l1_offset, l1_clusters * cs, FALSE, error))
        return FALSE;
    memset(s->l1, 0, (gsize)s->l1_size * 8);

    vd_file_debug_event(file, VD_EVENT_EMPTY_IMAGE_PREPARE);
    if (!vd_file_write_zeroes(file, cs, (2 + l1_clusters) * cs, FALSE, error))
        return FALSE;

    vd_file_debug_event(file, VD_EVENT_L1_UPDATE);
    vd_file_debug_event(file, VD_EVENT_REFTABLE_UPDATE);
    guint8 fields[20];
    vd_put_be64(fields, 3 * cs); /* l1_table_offset */
    vd_put_be64(fields + 8, cs); /* refcount_table_offset */
    vd_put_be32(fields + 16, 1); /* refcount_table_clusters */
    G_STATIC_ASSERT(QH_RT_CLUSTERS == QH_L1_OFFSET + 16 && QH_RT_OFFSET == QH_L1_OFFSET + 8);
    if (!pwrite_sync(s, QH_L1_OFFSET, fields, sizeof fields, error))
        return FALSE;
    s->l1_offset = 3 * cs;
    s->l1_dirty_lo = G_MAXUINT32;
    s->l1_dirty_hi = 0;
    g_free(s->rt);
    s->rt_entries = cs / 8;
    s->rt = g_new0(guint64, s->rt_entries);
    s->rt_offset = cs;
    s->rt_clusters = 1;

    vd_file_debug_event(file, VD_EVENT_REFBLOCK_ALLOC);
    guint8 entry[8];
    vd_put_be64(entry, 2 * cs);
    if (!pwrite_sync(s, cs, entry, sizeof entry, error))
        return FALSE;
    s->rt[0] = 2 * cs;

    /* Header, reftable, refblock and L1 table: the clusters in use. */
    g_array_set_size(s->deferred_frees, 0);
    s->free_cluster_index = 0;
    s->free_byte_offset = 0;
    s->reserved_lo = s->reserved_hi = 0;
    s->zbuf_entry = 0;
    if (!qcow2_update_refcount(s, 0, (3 + l1_clusters) * cs, 1, error) ||
        !qcow2_cache_flush(s, s->rb_cache, error) ||
        !vd_file_truncate(file, (3 + l1_clusters) * cs, error) ||
        !qcow2_refresh_file_size(s, error))
        return FALSE;
    s->free_cluster_index = 3 + l1_clusters;
    return qcow2_end_dirty_during(s, error) && vd_file_sync(file, error);
}

gboolean qcow2_make_empty(VdImage *img, GError **error)
{
    Qcow2State *s = qcow2_state(img);
    guint64 l1_clusters = ((guint64)s->l1_size * 8 + s->cluster_size - 1) / s->cluster_size;

    if (s->version < 3 || s->snapshots->len > 0 || s->nb_bitmaps > 0 ||
        s->crypt_method == QCOW2_CRYPT_LUKS || s->data_file != NULL ||
        3 + l1_clusters > (1ull << s->rb_bits))
        return qcow2_discard(img, 0, img->size, error);
    if (make_completely_empty(s, error))
        return TRUE;
    /* The tables in memory and on disk no longer agree: write nothing
     * more through this handle (QEMU drops the node). The dirty bit has
     * the next open rebuild the refcounts. */
    img->read_write = FALSE;
    return FALSE;
}
