/* qcow2 refcounts: the refcount table, refcount blocks of every width
 * (1 to 64 bits), cluster allocation and freeing.
 *
 * Ordering rules (see qcow2.h): a new refcount block is written before the
 * table entry that points at it; a new table before the header names it;
 * refcount increments reach the file before the tables that use the
 * clusters (the L2 cache depends on this cache); decrements are queued
 * until the references are gone from the file.
 */
#include "qcow2.h"

#include <string.h>

guint64 qcow2_rb_get(const guint8 *block, guint64 index, guint order)
{
    switch (order) {
    case 0:
    case 1:
    case 2: {
        /* Sub-byte widths: bit 0 is the least significant bit of a byte. */
        guint bits = 1u << order;
        guint64 bit = index << order;
        return (block[bit >> 3] >> (bit & 7)) & ((1u << bits) - 1);
    }
    case 3:
        return block[index];
    case 4:
        return vd_be16(block + index * 2);
    case 5:
        return vd_be32(block + index * 4);
    default:
        return vd_be64(block + index * 8);
    }
}

void qcow2_rb_set(guint8 *block, guint64 index, guint order, guint64 value)
{
    switch (order) {
    case 0:
    case 1:
    case 2: {
        guint bits = 1u << order;
        guint64 bit = index << order;
        guint8 mask = (guint8)(((1u << bits) - 1) << (bit & 7));
        block[bit >> 3] = (guint8)((block[bit >> 3] & ~mask) | ((value << (bit & 7)) & mask));
        break;
    }
    case 3:
        block[index] = (guint8)value;
        break;
    case 4:
        vd_put_be16(block + index * 2, (guint16)value);
        break;
    case 5:
        vd_put_be32(block + index * 4, (guint32)value);
        break;
    default:
        vd_put_be64(block + index * 8, value);
        break;
    }
}

/* Read the refcount table named by the header (checked by open). */
gboolean qcow2_refcount_load(Qcow2State *s, GError **error)
{
    guint64 bytes = (guint64)s->rt_clusters * s->cluster_size;
    if (!vd_image_charge_metadata(s->img, bytes * 2, "refcount table", error))
        return FALSE;
    /* A truncated file (opened read-only) reads as zeroes past its end. */
    guint64 have = bytes;
    if (!qcow2_in_file(s, s->rt_offset, bytes))
        have = s->rt_offset < s->file_size ? s->file_size - s->rt_offset : 0;
    g_autofree guint8 *raw = g_malloc0(bytes);
    if (have > 0 && !vd_file_pread(s->img->file, s->rt_offset, raw, have, error)) {
        g_prefix_error(error, "refcount table: ");
        return FALSE;
    }
    s->rt_entries = bytes / 8;
    g_free(s->rt);
    s->rt = g_new(guint64, s->rt_entries);
    for (guint64 i = 0; i < s->rt_entries; i++)
        s->rt[i] = vd_be64(raw + i * 8);
    return TRUE;
}

static gboolean load_block(Qcow2State *s, guint64 bi, guint8 **block, GError **error)
{
    guint64 off = s->rt[bi];
    if ((off & (s->cluster_size - 1)) != 0) {
        vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                     "refcount block for refcount table entry %" G_GUINT64_FORMAT
                     " is not cluster aligned (0x%" G_GINT64_MODIFIER "x)",
                     bi, off);
        return FALSE;
    }
    /* A block in the file's last, partial cluster reads as zeroes past the
     * end, as qemu reads it. */
    if (!qcow2_cache_lookup(s->rb_cache, off) && !qcow2_in_file(s, off, 1)) {
        vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                     "refcount block for refcount table entry %" G_GUINT64_FORMAT
                     " points past the end of the file",
                     bi);
        return FALSE;
    }
    return qcow2_cache_get(s, s->rb_cache, off, TRUE, block, error);
}

gboolean qcow2_get_refcount(Qcow2State *s, guint64 cluster, guint64 *refcount, GError **error)
{
    guint64 bi = cluster >> s->rb_bits;
    *refcount = 0;
    if (bi >= s->rt_entries || s->rt[bi] == 0)
        return TRUE;
    guint8 *block;
    if (!load_block(s, bi, &block, error))
        return FALSE;
    *refcount = qcow2_rb_get(block, cluster & ((1ull << s->rb_bits) - 1), s->refcount_order);
    qcow2_cache_put(s->rb_cache, block);
    return TRUE;
}

static gboolean write_rt_entry(Qcow2State *s, guint64 bi, GError **error)
{
    guint8 be[8];
    vd_put_be64(be, s->rt[bi]);
    return vd_file_pwrite(s->img->file, s->rt_offset + bi * 8, be, 8, error);
}

static void note_file_end(Qcow2State *s, guint64 end)
{
    if (end > s->file_size)
        s->file_size = end;
}

/* Move the refcount table to a bigger one placed, with the refcount blocks
 * that describe it, after everything the current table covers. */
static gboolean grow_refcount_table(Qcow2State *s, guint64 min_bi, GError **error)
{
    guint64 cs = s->cluster_size;
    guint rb = s->rb_bits;
    if (!qcow2_refresh_file_size(s, error))
        return FALSE;
    /* Past the clusters being allocated too, which the file may not hold
     * yet. */
    guint64 area = MAX(s->rt_entries << rb, qcow2_align_up(s->file_size, cs) >> s->cluster_bits);
    area = MAX(area, MAX(s->free_cluster_index, s->reserved_hi));
    guint64 nb = 1, tc = 1;
    gboolean stable = FALSE;
    for (int iter = 0; iter < 64 && !stable; iter++) {
        guint64 last = area + nb + tc - 1;
        guint64 need = MAX(min_bi, last >> rb) + 1;
        need += need / 2 + 1; /* headroom, so the table does not move at every block */
        guint64 ntc = qcow2_align_up(need * 8, cs) / cs;
        guint64 nnb = ((area + nb + ntc - 1) >> rb) - (area >> rb) + 1;
        stable = ntc == tc && nnb == nb;
        tc = ntc;
        nb = nnb;
    }
    if (!stable || tc * cs > QCOW2_MAX_RT_BYTES) {
        vd_set_error(error, s->img, VD_ERROR_NO_SPACE,
                     "the refcount table would grow past the %u MiB limit",
                     QCOW2_MAX_RT_BYTES >> 20);
        return FALSE;
    }
    guint64 first_bi = area >> rb, end = area + nb + tc;
    g_autofree guint8 *buf = g_malloc(cs);
    for (guint64 k = 0; k < nb; k++) {
        memset(buf, 0, cs);
        guint64 lo = MAX(area, (first_bi + k) << rb), hi = MIN(end, (first_bi + k + 1) << rb);
        for (guint64 c = lo; c < hi; c++)
            qcow2_rb_set(buf, c & ((1ull << rb) - 1), s->refcount_order, 1);
        if (!vd_file_pwrite(s->img->file, (area + k) * cs, buf, cs, error))
            return FALSE;
    }
    guint64 new_entries = tc * cs / 8;
    g_autofree guint64 *rt = g_new0(guint64, new_entries);
    memcpy(rt, s->rt, s->rt_entries * 8);
    for (guint64 k = 0; k < nb; k++)
        rt[first_bi + k] = (area + k) * cs;
    g_autofree guint8 *raw = g_malloc0(tc * cs);
    for (guint64 i = 0; i < new_entries; i++)
        vd_put_be64(raw + i * 8, rt[i]);
    guint64 table_off = (area + nb) * cs;
    if (!vd_file_pwrite(s->img->file, table_off, raw, tc * cs, error))
        return FALSE;
    note_file_end(s, end * cs);
    /* Offset and size change in one write, so the header is never half
     * updated. */
    guint8 hdr[12];
    vd_put_be64(hdr, table_off);
    vd_put_be32(hdr + 8, (guint32)tc);
    if (!vd_file_pwrite(s->img->file, QH_RT_OFFSET, hdr, sizeof hdr, error))
        return FALSE;
    guint64 old_off = s->rt_offset, old_clusters = s->rt_clusters;
    g_free(s->rt);
    s->rt = g_steal_pointer(&rt);
    s->rt_entries = new_entries;
    s->rt_offset = table_off;
    s->rt_clusters = (guint32)tc;
    return qcow2_update_refcount(s, old_off, old_clusters * cs, -1, error);
}

static gboolean find_free(Qcow2State *s, guint64 n, guint64 *start, guint64 *first_free,
                          GError **error);

/* Make sure refcount block bi exists. The new block takes the first free
 * cluster from the allocation hint on, where qemu puts it too: inside the
 * range it covers it counts itself; elsewhere it is counted as any other
 * cluster (which may need a block of its own first) before the table
 * names it, so a crash leaves at worst a leak. */
static gboolean ensure_refblock(Qcow2State *s, guint64 bi, GError **error)
{
    if (bi >= s->rt_entries && !grow_refcount_table(s, bi, error))
        return FALSE;
    if (s->rt[bi] != 0)
        return TRUE;
    if (bi == 0) {
        vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                     "the first refcount block is missing, so the header is not counted");
        return FALSE;
    }
    guint64 cluster, first_free;
    if (!find_free(s, 1, &cluster, &first_free, error))
        return FALSE;
    s->free_cluster_index = cluster + 1;
    guint64 off = cluster << s->cluster_bits;
    gboolean counts_itself = (cluster >> s->rb_bits) == bi;
    if (!counts_itself && (!qcow2_update_refcount(s, off, s->cluster_size, 1, error) ||
                           !qcow2_cache_flush(s, s->rb_cache, error)))
        return FALSE;
    guint8 *block;
    if (!qcow2_cache_get(s, s->rb_cache, off, FALSE, &block, error))
        return FALSE;
    if (counts_itself)
        qcow2_rb_set(block, cluster & ((1ull << s->rb_bits) - 1), s->refcount_order, 1);
    gboolean ok = vd_file_pwrite(s->img->file, off, block, s->cluster_size, error);
    qcow2_cache_put(s->rb_cache, block);
    if (!ok)
        return FALSE;
    note_file_end(s, off + s->cluster_size);
    s->rt[bi] = off;
    return write_rt_entry(s, bi, error);
}

/* A cluster's refcount dropped to zero: nothing may keep using it. */
static void cluster_freed(Qcow2State *s, guint64 cluster)
{
    guint64 off = cluster << s->cluster_bits;
    qcow2_cache_drop(s->l2_cache, off);
    qcow2_cache_drop(s->rb_cache, off);
    if (cluster < s->free_cluster_index)
        s->free_cluster_index = cluster;
    if (s->free_byte_offset != 0 && (s->free_byte_offset >> s->cluster_bits) == cluster)
        s->free_byte_offset = 0;
    if (s->zbuf_entry != 0)
        s->zbuf_entry = 0;
}

gboolean qcow2_update_refcount(Qcow2State *s, guint64 offset, guint64 length, gint64 delta,
                               GError **error)
{
    if (length == 0 || delta == 0)
        return TRUE;
    if (!qcow2_mark_dirty(s, error))
        return FALSE;
    guint64 first = offset >> s->cluster_bits;
    guint64 last = (offset + length - 1) >> s->cluster_bits;
    guint64 mask = (1ull << s->rb_bits) - 1;
    for (guint64 c = first; c <= last;) {
        guint64 bi = c >> s->rb_bits;
        if (bi >= s->rt_entries || s->rt[bi] == 0) {
            if (delta < 0) {
                vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                             "cannot free cluster %" G_GUINT64_FORMAT ": its refcount is 0", c);
                return FALSE;
            }
            if (!ensure_refblock(s, bi, error))
                return FALSE;
        }
        guint8 *block;
        if (!load_block(s, bi, &block, error))
            return FALSE;
        guint64 stop = MIN(last, (bi << s->rb_bits) | mask);
        for (; c <= stop; c++) {
            guint64 old = qcow2_rb_get(block, c & mask, s->refcount_order);
            if ((delta < 0 && old < (guint64)-delta) ||
                (delta > 0 && s->refcount_max - old < (guint64)delta)) {
                qcow2_cache_put(s->rb_cache, block);
                vd_set_error(error, s->img, delta < 0 ? VD_ERROR_CORRUPT : VD_ERROR_NO_SPACE,
                             "refcount of cluster %" G_GUINT64_FORMAT
                             " would %s (refcount %" G_GUINT64_FORMAT ", %u-bit refcounts)",
                             c, delta < 0 ? "drop below zero" : "overflow", old,
                             1u << s->refcount_order);
                return FALSE;
            }
            guint64 val = old + (guint64)delta;
            qcow2_rb_set(block, c & mask, s->refcount_order, val);
            if (val == 0)
                cluster_freed(s, c);
        }
        qcow2_cache_mark_dirty(s->rb_cache, block);
        qcow2_cache_put(s->rb_cache, block);
    }
    return TRUE;
}

/* Find n consecutive clusters with refcount 0 at or after the hint. */
static gboolean find_free(Qcow2State *s, guint64 n, guint64 *start, guint64 *first_free,
                          GError **error)
{
    guint64 i = MAX(s->free_cluster_index, 1), run = 0, run_start = 0;
    guint64 mask = (1ull << s->rb_bits) - 1;
    *first_free = G_MAXUINT64;
    while (run < n) {
        guint64 bi = i >> s->rb_bits;
        if (i < s->reserved_hi && i >= s->reserved_lo) {
            i = s->reserved_hi;
            run = 0;
            continue;
        }
        if (bi >= s->rt_entries || s->rt[bi] == 0) {
            /* No block: everything it covers is free (but what is
             * reserved). */
            if (run == 0)
                run_start = i;
            if (*first_free == G_MAXUINT64)
                *first_free = i;
            guint64 block_end = (bi + 1) << s->rb_bits;
            if (s->reserved_lo > i && s->reserved_lo < block_end)
                block_end = s->reserved_lo;
            run += block_end - i;
            i = block_end;
            continue;
        }
        guint8 *block;
        if (!load_block(s, bi, &block, error))
            return FALSE;
        for (; run < n && (i >> s->rb_bits) == bi; i++) {
            if (qcow2_rb_get(block, i & mask, s->refcount_order) != 0 ||
                (i >= s->reserved_lo && i < s->reserved_hi)) {
                run = 0;
                continue;
            }
            if (*first_free == G_MAXUINT64)
                *first_free = i;
            if (run++ == 0)
                run_start = i;
        }
        qcow2_cache_put(s->rb_cache, block);
    }
    *start = run_start;
    return TRUE;
}

gboolean qcow2_alloc_clusters(Qcow2State *s, guint64 n, guint64 *offset, GError **error)
{
    guint64 start, first_free;
    if (!find_free(s, n, &start, &first_free, error))
        return FALSE;
    /* Host offsets must fit the 56-bit fields of the tables. */
    if (((start + n) << s->cluster_bits) > (1ull << 56)) {
        vd_set_error(error, s->img, VD_ERROR_NO_SPACE, "no room for more clusters");
        return FALSE;
    }
    /* The range is taken: blocks it lacks go after it. */
    s->free_cluster_index = start + n;
    s->reserved_lo = start;
    s->reserved_hi = start + n;
    gboolean ok = TRUE;
    for (guint64 bi = start >> s->rb_bits; ok && bi <= (start + n - 1) >> s->rb_bits; bi++)
        ok = ensure_refblock(s, bi, error);
    s->reserved_lo = s->reserved_hi = 0;
    if (!ok || !qcow2_update_refcount(s, start << s->cluster_bits, n << s->cluster_bits, 1, error))
        return FALSE;
    if (first_free != start)
        s->free_cluster_index = first_free;
    *offset = start << s->cluster_bits;
    return TRUE;
}

/* Compressed clusters are packed byte by byte; every host cluster a piece
 * of compressed data touches holds one reference for it. */
gboolean qcow2_alloc_bytes(Qcow2State *s, guint64 size, guint64 *offset, GError **error)
{
    guint64 cs = s->cluster_size;
    guint64 cur = s->free_byte_offset, rc = 0;
    /* Narrow refcounts fill up: a cluster at the maximum takes no more. */
    if (cur != 0 && (cur & (cs - 1)) != 0 &&
        !qcow2_get_refcount(s, cur >> s->cluster_bits, &rc, error))
        return FALSE;
    if (cur != 0 && (cur & (cs - 1)) != 0 && rc < s->refcount_max) {
        guint64 cluster_end = qcow2_align_up(cur, cs);
        if (cur + size <= cluster_end) {
            if (!qcow2_update_refcount(s, cur, 1, 1, error))
                return FALSE;
            *offset = cur;
            s->free_byte_offset = cur + size;
            return TRUE;
        }
        guint64 next;
        if (!qcow2_alloc_clusters(s, 1, &next, error))
            return FALSE;
        if (next == cluster_end && s->free_byte_offset == cur) {
            /* Runs on into the next cluster, which came out contiguous. */
            if (!qcow2_update_refcount(s, cur, 1, 1, error))
                return FALSE;
            *offset = cur;
            s->free_byte_offset = cur + size;
            return TRUE;
        }
        *offset = next;
        s->free_byte_offset = next + size;
        return TRUE;
    }
    guint64 n = qcow2_align_up(size, cs) / cs;
    if (!qcow2_alloc_clusters(s, n, offset, error))
        return FALSE;
    s->free_byte_offset = *offset + size;
    return TRUE;
}

gboolean qcow2_free_deferred(Qcow2State *s, guint64 offset, guint64 length, GError **error)
{
    if (length == 0)
        return TRUE;
    Qcow2Range r = { offset, length };
    g_array_append_val(s->deferred_frees, r);
    /* Keep the queue short: a flush applies it. */
    if (s->deferred_frees->len >= 4096)
        return qcow2_flush_metadata(s, error);
    return TRUE;
}

/* Called by qcow2_flush_metadata once the tables are on disk. Clusters
 * whose last reference went away are also punched out of the file. */
gboolean qcow2_apply_deferred_frees(Qcow2State *s, GError **error)
{
    g_autoptr(GArray) list = s->deferred_frees;
    s->deferred_frees = g_array_new(FALSE, FALSE, sizeof(Qcow2Range));
    for (guint i = 0; i < list->len; i++) {
        Qcow2Range *r = &g_array_index(list, Qcow2Range, i);
        if (!qcow2_update_refcount(s, r->offset, r->length, -1, error))
            return FALSE;
        guint64 first = qcow2_align_down(r->offset, s->cluster_size);
        guint64 last = qcow2_align_up(r->offset + r->length, s->cluster_size);
        for (guint64 off = first; off < last; off += s->cluster_size) {
            guint64 rc;
            if (qcow2_get_refcount(s, off >> s->cluster_bits, &rc, NULL) && rc == 0)
                vd_file_punch_hole(s->img->file, off, s->cluster_size, NULL);
        }
    }
    return TRUE;
}

gboolean qcow2_shrink_refcount_table(Qcow2State *s, GError **error)
{
    guint64 mask = (1ull << s->rb_bits) - 1;
    /* Block 0 counts the header, which is always in use. */
    for (guint64 bi = 1; bi < s->rt_entries; bi++) {
        guint64 off = s->rt[bi], self = off >> s->cluster_bits;
        if (off == 0)
            continue;
        guint8 *block;
        if (!load_block(s, bi, &block, error))
            return FALSE;
        gboolean unused = TRUE;
        for (guint64 i = 0; i <= mask && unused; i++)
            unused =
                ((bi << s->rb_bits) | i) == self || qcow2_rb_get(block, i, s->refcount_order) == 0;
        qcow2_cache_put(s->rb_cache, block);
        if (!unused)
            continue;
        s->rt[bi] = 0;
        if (!write_rt_entry(s, bi, error))
            return FALSE;
        qcow2_cache_drop(s->rb_cache, off);
        /* A block inside its own range took its count with it; one
         * counted by another block is freed there. */
        if ((self >> s->rb_bits) != bi) {
            if (!qcow2_update_refcount(s, off, s->cluster_size, -1, error))
                return FALSE;
        } else if (self < s->free_cluster_index) {
            s->free_cluster_index = self;
        }
    }
    return qcow2_cache_flush(s, s->rb_cache, error) && vd_file_sync(s->img->file, error);
}

gboolean qcow2_used_end(Qcow2State *s, guint64 end, guint64 *used_end, GError **error)
{
    guint64 mask = (1ull << s->rb_bits) - 1;
    *used_end = 0;
    for (guint64 c = end >> s->cluster_bits; c > 0;) {
        guint64 bi = (c - 1) >> s->rb_bits;
        if (bi >= s->rt_entries || s->rt[bi] == 0) {
            c = bi << s->rb_bits;
            continue;
        }
        guint8 *block;
        if (!load_block(s, bi, &block, error))
            return FALSE;
        for (; c > (bi << s->rb_bits); c--) {
            if (qcow2_rb_get(block, (c - 1) & mask, s->refcount_order) != 0) {
                *used_end = c << s->cluster_bits;
                break;
            }
        }
        qcow2_cache_put(s->rb_cache, block);
        if (*used_end != 0)
            return TRUE;
    }
    return TRUE;
}

/* Count the blocks a new refcount structure needs when it covers clusters
 * [0, end) and refs[0, nb) are the counts below the new area. */
static guint64 count_blocks(Qcow2State *s, const guint32 *refs, guint64 nb, guint64 area,
                            guint64 end)
{
    guint64 count = 0, last_bi = (end - 1) >> s->rb_bits;
    for (guint64 bi = 0; bi <= last_bi; bi++) {
        guint64 lo = bi << s->rb_bits, hi = (bi + 1) << s->rb_bits;
        gboolean used = hi > area && lo < end;
        for (guint64 c = lo; !used && c < MIN(hi, nb); c++)
            used = refs[c] != 0;
        count += used;
    }
    return count;
}

gboolean qcow2_rebuild_refcounts(Qcow2State *s, guint32 *refs, guint64 nb, GError **error)
{
    guint64 cs = s->cluster_size;
    if (!qcow2_refresh_file_size(s, error))
        return FALSE;
    guint64 area = MAX(nb, qcow2_align_up(s->file_size, cs) >> s->cluster_bits);
    guint64 nbk = 1, tc = 1;
    gboolean stable = FALSE;
    for (int iter = 0; iter < 64 && !stable; iter++) {
        guint64 end = area + nbk + tc;
        guint64 entries = ((end - 1) >> s->rb_bits) + 1;
        guint64 ntc = qcow2_align_up(entries * 8, cs) / cs;
        guint64 nnbk = count_blocks(s, refs, nb, area, area + nbk + ntc);
        stable = ntc == tc && nnbk == nbk;
        tc = ntc;
        nbk = nnbk;
    }
    if (!stable || tc * cs > QCOW2_MAX_RT_BYTES) {
        vd_set_error(error, s->img, VD_ERROR_NO_SPACE, "cannot rebuild the refcount table");
        return FALSE;
    }
    guint64 end = area + nbk + tc;
    guint64 entries = tc * cs / 8;
    g_autofree guint64 *rt = g_new0(guint64, entries);
    g_autofree guint8 *buf = g_malloc(cs);
    guint64 k = 0, last_bi = (end - 1) >> s->rb_bits;
    for (guint64 bi = 0; bi <= last_bi; bi++) {
        guint64 lo = bi << s->rb_bits, hi = (bi + 1) << s->rb_bits;
        gboolean used = hi > area && lo < end;
        memset(buf, 0, cs);
        for (guint64 c = lo; c < hi; c++) {
            guint64 v = c < nb ? refs[c] : (c >= area && c < end) ? 1 : 0;
            if (v == 0)
                continue;
            used = TRUE;
            qcow2_rb_set(buf, c - lo, s->refcount_order, MIN(v, s->refcount_max));
        }
        if (!used)
            continue;
        rt[bi] = (area + k) * cs;
        if (!vd_file_pwrite(s->img->file, rt[bi], buf, cs, error))
            return FALSE;
        k++;
    }
    g_autofree guint8 *raw = g_malloc0(tc * cs);
    for (guint64 i = 0; i < entries; i++)
        vd_put_be64(raw + i * 8, rt[i]);
    guint64 table_off = (area + nbk) * cs;
    if (!vd_file_pwrite(s->img->file, table_off, raw, tc * cs, error) ||
        !vd_file_sync(s->img->file, error))
        return FALSE;
    guint8 hdr[12];
    vd_put_be64(hdr, table_off);
    vd_put_be32(hdr + 8, (guint32)tc);
    if (!vd_file_pwrite(s->img->file, QH_RT_OFFSET, hdr, sizeof hdr, error))
        return FALSE;
    note_file_end(s, end * cs);
    qcow2_cache_drop_all(s->rb_cache);
    g_free(s->rt);
    s->rt = g_steal_pointer(&rt);
    s->rt_entries = entries;
    s->rt_offset = table_off;
    s->rt_clusters = (guint32)tc;
    s->free_cluster_index = 1;
    s->free_byte_offset = 0;
    return TRUE;
}

/* Does the image look preallocated with metadata only: clusters in use
 * clearly outnumber the clusters the file really stores? Counting stops at
 * that threshold, so fully allocated images are cheap to answer. */
gboolean qcow2_detect_metadata_preallocation(Qcow2State *s, GError **error)
{
    if (s->prealloc_checked)
        return TRUE;
    guint64 file_size;
    if (!vd_file_size(s->img->file, &file_size, error))
        return FALSE;
    gint64 stored = vd_file_allocated(s->img->file);
    guint64 real_clusters = stored > 0 ? (guint64)stored / s->cluster_size : 0;
    guint64 threshold = MAX(real_clusters * 10 / 9, real_clusters + 2);
    guint64 end = (file_size + s->cluster_size - 1) / s->cluster_size;
    guint64 in_use = 0;
    for (guint64 i = 0; i < end && in_use < threshold; i++) {
        guint64 refcount;
        if (!qcow2_get_refcount(s, i, &refcount, error))
            return FALSE;
        if (refcount > 0)
            in_use++;
    }
    s->metadata_preallocation = in_use >= threshold;
    s->prealloc_checked = TRUE;
    return TRUE;
}
