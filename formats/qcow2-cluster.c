/* qcow2 guest cluster mapping: L1/L2 lookup, block status, reads,
 * allocating writes with copy-on-write, zero writes, discard, compressed
 * clusters, and extended L2 entries (32 subclusters per cluster).
 *
 * Writes allocate runs of new clusters contiguously and only touch L2
 * tables in the cache; qcow2_flush_metadata writes them out after the
 * refcounts. Clusters that lose a reference are queued
 * (qcow2_free_deferred) until the tables no longer point at them on disk.
 */
#include "qcow2.h"

#include <string.h>

Qcow2ClusterType qcow2_cluster_type(Qcow2State *s, guint64 entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED)
        return QCOW2_CL_COMPRESSED;
    guint64 off = entry & QCOW2_OFFSET_MASK;
    if (!s->ext_l2 && s->version >= 3 && (entry & QCOW2_OFLAG_ZERO))
        return off != 0 ? QCOW2_CL_ZERO_ALLOC : QCOW2_CL_ZERO_PLAIN;
    if (off != 0 || (s->data_file != NULL && (entry & QCOW2_OFLAG_COPIED)))
        return QCOW2_CL_NORMAL;
    return QCOW2_CL_UNALLOCATED;
}

void qcow2_compressed_range(Qcow2State *s, guint64 entry, guint64 *offset, guint64 *length)
{
    guint64 coff = entry & s->coffset_mask;
    guint64 sectors = ((entry >> s->csize_shift) & s->csize_mask) + 1;
    *offset = coff;
    *length = sectors * 512 - (coff & 511);
}

guint64 qcow2_l2_get(Qcow2State *s, const guint8 *table, guint64 index, guint64 *bitmap)
{
    if (s->ext_l2) {
        *bitmap = vd_be64(table + index * 16 + 8);
        return vd_be64(table + index * 16);
    }
    *bitmap = 0;
    return vd_be64(table + index * 8);
}

void qcow2_l2_set(Qcow2State *s, guint8 *table, guint64 index, guint64 entry, guint64 bitmap)
{
    if (s->ext_l2) {
        vd_put_be64(table + index * 16, entry);
        vd_put_be64(table + index * 16 + 8, bitmap);
    } else {
        vd_put_be64(table + index * 8, entry);
    }
}

gboolean qcow2_load_l2(Qcow2State *s, guint64 l2_offset, const char *what, guint64 what_index,
                       guint8 **table, GError **error)
{
    if ((l2_offset & (s->cluster_size - 1)) != 0) {
        vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                     "L2 table for %s %" G_GUINT64_FORMAT
                     " is not cluster aligned (0x%" G_GINT64_MODIFIER "x)",
                     what, what_index, l2_offset);
        return FALSE;
    }
    /* A table that begins in the file is read (its end may be missing,
     * as qemu's files can end inside their last cluster); one that lies
     * wholly past the end is damage. */
    if (!qcow2_cache_lookup(s->l2_cache, l2_offset) && !qcow2_in_file(s, l2_offset, 1)) {
        vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                     "L2 table for %s %" G_GUINT64_FORMAT " points past the end of the file", what,
                     what_index);
        return FALSE;
    }
    return qcow2_cache_get(s, s->l2_cache, l2_offset, TRUE, table, error);
}

static gboolean load_active_l2(Qcow2State *s, guint64 l1i, guint8 **table, GError **error)
{
    return qcow2_load_l2(s, s->l1[l1i] & QCOW2_OFFSET_MASK, "L1 entry", l1i, table, error);
}

/* ----- lookup ----- */

/* One stretch of guest bytes with the same status. */
typedef struct {
    VdExtentKind kind;
    gboolean compressed;
    guint64 host;      /* where has_host */
    gboolean has_host; /* DATA not compressed, or ZERO in a preallocated cluster */
    guint64 entry;     /* compressed: the descriptor */
    guint64 len;
} Run;

static gboolean corrupt_entry(Qcow2State *s, guint64 guest, const char *why, GError **error)
{
    vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                 "L2 entry for guest offset %" G_GUINT64_FORMAT " %s", guest, why);
    return FALSE;
}

/* Status of the bytes from pos to at most limit (same cluster): kind and
 * where the piece ends. */
static gboolean classify(Qcow2State *s, guint64 pos, guint64 limit, guint64 entry, guint64 bitmap,
                         Run *piece, GError **error)
{
    guint64 cs = s->cluster_size, cstart = qcow2_align_down(pos, cs);
    Qcow2ClusterType type = qcow2_cluster_type(s, entry);
    guint64 end = MIN(cstart + cs, limit);
    piece->compressed = FALSE;
    piece->entry = entry;
    guint64 host = entry & QCOW2_OFFSET_MASK;
    if ((type == QCOW2_CL_NORMAL || type == QCOW2_CL_ZERO_ALLOC) && (host & (cs - 1)) != 0)
        return corrupt_entry(s, cstart, "has an unaligned host offset", error);
    switch (type) {
    case QCOW2_CL_COMPRESSED:
        if (s->data_file != NULL)
            return corrupt_entry(s, cstart, "is compressed in an image with a data file", error);
        piece->kind = VD_EXTENT_DATA;
        piece->compressed = TRUE;
        break;
    case QCOW2_CL_ZERO_PLAIN:
    case QCOW2_CL_ZERO_ALLOC:
        piece->kind = VD_EXTENT_ZERO;
        break;
    case QCOW2_CL_UNALLOCATED:
    case QCOW2_CL_NORMAL:
        piece->kind = type == QCOW2_CL_NORMAL ? VD_EXTENT_DATA : VD_EXTENT_UNALLOCATED;
        if (s->ext_l2) {
            guint32 alloc = (guint32)bitmap, zero = (guint32)(bitmap >> 32);
            if ((alloc & zero) != 0 || (type == QCOW2_CL_UNALLOCATED && alloc != 0))
                return corrupt_entry(s, cstart, "has an invalid subcluster bitmap", error);
            guint sc = (guint)((pos - cstart) >> s->subcluster_bits);
            int kind = (alloc >> sc) & 1 ? 1 : (zero >> sc) & 1 ? 2 : 0;
            piece->kind = kind == 1   ? VD_EXTENT_DATA
                          : kind == 2 ? VD_EXTENT_ZERO
                                      : VD_EXTENT_UNALLOCATED;
            guint last = sc + 1;
            while (last < QCOW2_SUBCLUSTERS && ((alloc >> last) & 1  ? 1
                                                : (zero >> last) & 1 ? 2
                                                                     : 0) == kind)
                last++;
            end = MIN(cstart + ((guint64)last << s->subcluster_bits), limit);
        }
        break;
    }
    piece->host = host + (pos - cstart);
    /* A zero cluster may keep its host cluster (preallocated, or zeroed
     * without unmapping); qemu-img map shows where it lies. */
    piece->has_host = (piece->kind == VD_EXTENT_DATA && !piece->compressed) ||
                      (piece->kind == VD_EXTENT_ZERO && host != 0);
    piece->len = end - pos;
    return TRUE;
}

static gboolean mergeable(const Run *r, const Run *p, gboolean merge_compressed)
{
    if (r->kind != p->kind || r->compressed != p->compressed || r->has_host != p->has_host)
        return FALSE;
    if (r->compressed)
        return merge_compressed;
    return !r->has_host || p->host == r->host + r->len;
}

/* The run at offset, at most max bytes, not crossing an L2 table. */
static gboolean lookup_run(Qcow2State *s, guint64 offset, guint64 max, gboolean merge_compressed,
                           Run *r, GError **error)
{
    guint64 span = qcow2_l2_span(s), l1i = offset / span;
    guint64 limit = MIN(offset + max, (l1i + 1) * span);
    memset(r, 0, sizeof *r);
    if (l1i < s->l1_size && l1i >= s->l1_lost_from) {
        vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                     "the L1 table is cut short by the end of the file (truncated?): entry "
                     "%" G_GUINT64_FORMAT " is missing",
                     l1i);
        return FALSE;
    }
    if (l1i >= s->l1_size || (s->l1[l1i] & QCOW2_OFFSET_MASK) == 0) {
        r->kind = VD_EXTENT_UNALLOCATED;
        r->len = limit - offset;
        return TRUE;
    }
    guint8 *t;
    if (!load_active_l2(s, l1i, &t, error))
        return FALSE;
    gboolean ok = TRUE;
    for (guint64 pos = offset; pos < limit;) {
        guint64 bitmap, idx = (pos >> s->cluster_bits) & (s->l2_entries - 1);
        guint64 entry = qcow2_l2_get(s, t, idx, &bitmap);
        Run p;
        if (!(ok = classify(s, pos, limit, entry, bitmap, &p, error)))
            break;
        if (pos == offset)
            *r = p;
        else if (mergeable(r, &p, merge_compressed))
            r->len += p.len;
        else
            break;
        pos += p.len;
    }
    qcow2_cache_put(s->l2_cache, t);
    return ok;
}

gboolean qcow2_block_status(VdImage *img, guint64 offset, guint64 len, VdExtent *out,
                            GError **error)
{
    Qcow2State *s = img->priv;
    Run r;
    if (!lookup_run(s, offset, len, TRUE, &r, error))
        return FALSE;
    /* Keep merging across L2 tables: the copy engine asks for gigabytes. */
    while (r.len < len) {
        Run next;
        if (!lookup_run(s, offset + r.len, len - r.len, TRUE, &next, error))
            return FALSE;
        if (!mergeable(&r, &next, TRUE))
            break;
        r.len += next.len;
    }
    memset(out, 0, sizeof *out);
    out->kind = r.kind;
    out->length = r.len;
    out->compressed = r.compressed;
    /* Encrypted data has no place in the file a reader could use as is
     * (and a hole under it would not read as zero), as qemu-img map says. */
    if (r.has_host && !qcow2_encrypted(s)) {
        out->offset_valid = TRUE;
        out->host_offset = r.host;
    }
    if (r.kind == VD_EXTENT_DATA && out->offset_valid) {
        out->plain_file = qcow2_data_file(s);
        if (!qcow2_detect_metadata_preallocation(s, error))
            return FALSE;
        if (s->metadata_preallocation)
            out->host_file = qcow2_data_file(s);
    }
    return TRUE;
}

/* ----- reading ----- */

static gboolean load_compressed(Qcow2State *s, guint64 guest, guint64 entry, GError **error)
{
    if (s->zbuf_entry == entry)
        return TRUE;
    guint64 coff, clen;
    qcow2_compressed_range(s, entry, &coff, &clen);
    /* The stored length is rounded to sectors, so the tail may lie just
     * past the end of the file; more than that is corruption. */
    if (!qcow2_in_file(s, coff, 1) || coff + clen > qcow2_align_up(s->file_size, s->cluster_size)) {
        vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                     "compressed cluster for guest offset %" G_GUINT64_FORMAT
                     " runs past the end of the file",
                     guest);
        return FALSE;
    }
    g_autofree guint8 *in = g_malloc(clen);
    vd_file_debug_event(s->img->file, VD_EVENT_READ_COMPRESSED);
    if (!vd_file_pread_zero_past_eof(s->img->file, coff, in, clen, error))
        return FALSE;
    s->zbuf_entry = 0;
    if (!qcow2_decompress_buffer(s->compression_type, in, clen, s->zbuf, s->cluster_size)) {
        vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                     "compressed cluster for guest offset %" G_GUINT64_FORMAT
                     " does not decompress to a cluster",
                     guest);
        return FALSE;
    }
    s->zbuf_entry = entry;
    return TRUE;
}

/* The compressed cluster holding guest offset, for vd_image_read to read
 * and inflate without the lock (guest_len 0 where it is not compressed). */
gboolean qcow2_packed_unit(VdImage *img, guint64 offset, VdPackedUnit *unit, GError **error)
{
    Qcow2State *s = img->priv;
    guint64 in = qcow2_offset_into_cluster(s, offset);
    Run r;
    memset(unit, 0, sizeof *unit);
    if (!lookup_run(s, offset, s->cluster_size - in, FALSE, &r, error))
        return FALSE;
    if (r.kind != VD_EXTENT_DATA || !r.compressed)
        return TRUE;
    guint64 coff, clen;
    qcow2_compressed_range(s, r.entry, &coff, &clen);
    /* As load_compressed: the tail may lie just past the end of the file. */
    if (!qcow2_in_file(s, coff, 1) || coff + clen > qcow2_align_up(s->file_size, s->cluster_size)) {
        vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                     "compressed cluster for guest offset %" G_GUINT64_FORMAT
                     " runs past the end of the file",
                     offset);
        return FALSE;
    }
    unit->guest_offset = offset - in;
    unit->guest_len = s->cluster_size;
    unit->file = img->file;
    unit->host_offset = coff;
    unit->host_len = clen;
    return TRUE;
}

gboolean qcow2_inflate_unit(VdImage *img, const VdPackedUnit *unit, const guint8 *in, guint8 *out,
                            GError **error)
{
    Qcow2State *s = img->priv;
    if (!qcow2_decompress_buffer(s->compression_type, in, unit->host_len, out, unit->guest_len)) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "compressed cluster for guest offset %" G_GUINT64_FORMAT
                     " does not decompress to a cluster",
                     unit->guest_offset);
        return FALSE;
    }
    return TRUE;
}

static gboolean read_plain(Qcow2State *s, guint64 guest, guint64 host, guint8 *buf, guint64 n,
                           GError **error);

/* Encrypted data: whole sectors are read and decrypted; guest and host
 * offsets agree modulo the cluster size, so they align together. */
static gboolean read_encrypted(Qcow2State *s, guint64 guest, guint64 host, guint8 *buf, guint64 n,
                               GError **error)
{
    guint64 head = guest & 511, span = qcow2_align_up(head + n, 512);
    if (!qcow2_crypto_need_key(s, error))
        return FALSE;
    if (head == 0 && span == n)
        return read_plain(s, guest, host, buf, n, error) &&
               qcow2_decrypt(s, guest, host, buf, n, error);
    g_autofree guint8 *tmp = g_malloc(span);
    if (!read_plain(s, guest - head, host - head, tmp, span, error) ||
        !qcow2_decrypt(s, guest - head, host - head, tmp, span, error))
        return FALSE;
    memcpy(buf, tmp + head, n);
    return TRUE;
}

static gboolean read_data(Qcow2State *s, guint64 guest, guint64 host, guint8 *buf, guint64 n,
                          GError **error)
{
    vd_file_debug_event(s->img->file, VD_EVENT_READ_AIO);
    if (qcow2_encrypted(s))
        return read_encrypted(s, guest, host, buf, n, error);
    return read_plain(s, guest, host, buf, n, error);
}

static gboolean read_plain(Qcow2State *s, guint64 guest, guint64 host, guint8 *buf, guint64 n,
                           GError **error)
{
    VdFile *f = qcow2_data_file(s);
    if (s->data_file == NULL && !qcow2_in_file(s, host, n)) {
        vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                     "data cluster for guest offset %" G_GUINT64_FORMAT
                     " points past the end of the file",
                     guest);
        return FALSE;
    }
    if (s->data_file != NULL)
        return vd_file_pread_zero_past_eof(f, host, buf, n, error);
    return vd_file_pread(f, host, buf, n, error);
}

/* Reads any range of this layer: unallocated parts come from the backing
 * chain, so copy-on-write can use it for the old content too. */
gboolean qcow2_read(VdImage *img, guint64 offset, void *buf, gsize len, GError **error)
{
    Qcow2State *s = img->priv;
    guint8 *p = buf;
    while (len > 0) {
        Run r;
        if (!lookup_run(s, offset, len, FALSE, &r, error))
            return FALSE;
        guint64 n = r.len;
        switch (r.kind) {
        case VD_EXTENT_UNALLOCATED:
            if (!vd_image_read_backing(img, offset, p, n, error))
                return FALSE;
            break;
        case VD_EXTENT_ZERO:
            memset(p, 0, n);
            break;
        case VD_EXTENT_DATA:
            if (r.compressed) {
                if (!load_compressed(s, offset, r.entry, error))
                    return FALSE;
                memcpy(p, s->zbuf + qcow2_offset_into_cluster(s, offset), n);
            } else if (!read_data(s, offset, r.host, p, n, error)) {
                return FALSE;
            }
            break;
        }
        offset += n;
        p += n;
        len -= n;
    }
    return TRUE;
}

/* ----- L1 and L2 tables for writing ----- */

static void l1_mark_dirty(Qcow2State *s, guint32 i)
{
    s->l1_dirty_lo = MIN(s->l1_dirty_lo, i);
    s->l1_dirty_hi = MAX(s->l1_dirty_hi, i);
}

gboolean qcow2_grow_l1(Qcow2State *s, guint32 min_size, GError **error)
{
    if (min_size <= s->l1_size)
        return TRUE;
    guint64 bytes = qcow2_align_up((guint64)min_size * 8, s->cluster_size);
    /* Everything the old table points at must be on disk before the new
     * table, a copy, can be named by the header. */
    if (!qcow2_flush_metadata(s, error))
        return FALSE;
    guint64 off;
    if (!qcow2_alloc_clusters(s, bytes / s->cluster_size, &off, error) ||
        !qcow2_cache_flush(s, s->rb_cache, error))
        return FALSE;
    /* Only the table's own bytes are written, as qemu does: the file of a
     * new image ends with its L1 table (196 KiB for 1 GiB, not 256). */
    guint64 used = (guint64)min_size * 8;
    g_autofree guint8 *buf = g_malloc0(used);
    for (guint32 i = 0; i < s->l1_size; i++)
        vd_put_be64(buf + (guint64)i * 8, s->l1[i]);
    if (!vd_file_pwrite(s->img->file, off, buf, used, error))
        return FALSE;
    guint8 hdr[12];
    vd_put_be32(hdr, min_size);
    vd_put_be64(hdr + 4, off);
    if (!vd_file_pwrite(s->img->file, QH_L1_SIZE, hdr, sizeof hdr, error))
        return FALSE;
    guint64 old_off = s->l1_offset,
            old_bytes = qcow2_align_up((guint64)s->l1_size * 8, s->cluster_size);
    s->l1 = g_renew(guint64, s->l1, min_size);
    memset(s->l1 + s->l1_size, 0, (min_size - s->l1_size) * 8);
    s->l1_size = min_size;
    s->l1_offset = off;
    if (off + used > s->file_size)
        s->file_size = off + used;
    return old_bytes == 0 || old_off == 0 ||
           qcow2_update_refcount(s, old_off, old_bytes, -1, error);
}

/* The L2 table of l1i, pinned and safe to modify: a new one if there was
 * none, a private copy if a snapshot shares it. */
static gboolean get_l2_for_write(Qcow2State *s, guint64 l1i, guint8 **table, GError **error)
{
    if (l1i >= s->l1_size && !qcow2_grow_l1(s, (guint32)l1i + 1, error))
        return FALSE;
    guint64 e = s->l1[l1i], old = e & QCOW2_OFFSET_MASK;
    if (old != 0 && (e & QCOW2_OFLAG_COPIED))
        return load_active_l2(s, l1i, table, error);
    g_autofree guint8 *copy = NULL;
    if (old != 0) {
        guint8 *t;
        if (!load_active_l2(s, l1i, &t, error))
            return FALSE;
        copy = g_memdup2(t, s->cluster_size);
        qcow2_cache_put(s->l2_cache, t);
    }
    guint64 off;
    if (!qcow2_alloc_clusters(s, 1, &off, error))
        return FALSE;
    if (!qcow2_cache_get(s, s->l2_cache, off, FALSE, table, error))
        return FALSE;
    if (copy != NULL) {
        memcpy(*table, copy, s->cluster_size);
        if (!qcow2_free_deferred(s, old, s->cluster_size, error)) {
            qcow2_cache_put(s->l2_cache, *table);
            return FALSE;
        }
    }
    s->l1[l1i] = off | QCOW2_OFLAG_COPIED;
    l1_mark_dirty(s, (guint32)l1i);
    return TRUE;
}

/* Queue the release of whatever host space an L2 entry holds. */
static gboolean free_entry(Qcow2State *s, guint64 entry, GError **error)
{
    switch (qcow2_cluster_type(s, entry)) {
    case QCOW2_CL_COMPRESSED: {
        guint64 coff, clen;
        qcow2_compressed_range(s, entry, &coff, &clen);
        return qcow2_free_deferred(s, coff, clen, error);
    }
    case QCOW2_CL_NORMAL:
    case QCOW2_CL_ZERO_ALLOC:
        if (s->data_file != NULL)
            return TRUE; /* data file clusters are not refcounted */
        return qcow2_free_deferred(s, entry & QCOW2_OFFSET_MASK, s->cluster_size, error);
    default:
        return TRUE;
    }
}

/* Every change of guest content starts here: refused while a snapshot is
 * shown, and recorded in the enabled dirty bitmaps (before the write, so a
 * failed write errs on the side of "changed"). */
static gboolean begin_guest_write(Qcow2State *s, guint64 offset, guint64 len, GError **error)
{
    if (s->snapshot_loaded) {
        vd_set_error(error, s->img, VD_ERROR_INVALID_ARGUMENT, "shows a snapshot and is read-only");
        return FALSE;
    }
    qcow2_bitmaps_mark(s, offset, len);
    return TRUE;
}

/* ----- allocating writes ----- */

/* Subcluster mask covering guest bytes [a, b) of the cluster at cstart. */
static guint32 subcluster_mask(Qcow2State *s, guint64 cstart, guint64 a, guint64 b)
{
    if (!s->ext_l2)
        return 0;
    guint first = (guint)((a - cstart) >> s->subcluster_bits);
    guint last = (guint)((b - 1 - cstart) >> s->subcluster_bits);
    guint64 m = ((2ull << last) - 1) & ~((1ull << first) - 1);
    return (guint32)m;
}

static gboolean is_in_place(Qcow2State *s, guint64 entry)
{
    if (qcow2_cluster_type(s, entry) != QCOW2_CL_NORMAL)
        return FALSE;
    return s->data_file != NULL || (entry & QCOW2_OFLAG_COPIED);
}

/* How far a write boundary must grow so whole units get written: a cluster
 * when a new cluster replaces one whose content must be carried over, a
 * subcluster with extended L2 entries, nothing for in-place writes. */
static guint64 write_unit(Qcow2State *s, guint64 entry, gboolean in_place)
{
    if (!s->ext_l2)
        return in_place ? 1 : s->cluster_size;
    Qcow2ClusterType type = qcow2_cluster_type(s, entry);
    if (!in_place && (type == QCOW2_CL_NORMAL || type == QCOW2_CL_COMPRESSED))
        return s->cluster_size;
    return qcow2_subcluster_size(s);
}

/* Encrypt the parts into a bounce buffer, a piece at a time, and write
 * them: the caller's data stays plain. guest, host and every length are
 * whole sectors (qcow2_write aligns encrypted requests). */
static gboolean pwrite_encrypted(Qcow2State *s, guint64 guest, guint64 host, const guint8 *head,
                                 guint64 head_len, const guint8 *body, guint64 body_len,
                                 const guint8 *tail, guint64 tail_len, GError **error)
{
    const guint8 *parts[3] = { head, body, tail };
    guint64 lens[3] = { head_len, body_len, tail_len };
    gsize chunk = 1u << 20;
    g_autofree guint8 *tmp = g_malloc(chunk);
    for (int i = 0; i < 3; i++) {
        for (guint64 done = 0; done < lens[i];) {
            gsize n = (gsize)MIN(chunk, lens[i] - done);
            memcpy(tmp, parts[i] + done, n);
            if (!qcow2_encrypt(s, guest, host, tmp, n, error) ||
                !vd_file_pwrite(s->img->file, host, tmp, n, error))
                return FALSE;
            guest += n;
            host += n;
            done += n;
        }
    }
    return TRUE;
}

/* Where the body of a write comes from: a buffer, or (src set) a range of
 * another file that is copied file to file (buf, when set too, holding
 * the same bytes). */
typedef struct {
    const guint8 *buf;
    VdFile *src;
    guint64 src_offset;
} WriteData;

static gboolean pwrite_parts(Qcow2State *s, guint64 guest, guint64 host, const guint8 *head,
                             guint64 head_len, const WriteData *data, guint64 body_len,
                             const guint8 *tail, guint64 tail_len, GError **error)
{
    VdFile *f = qcow2_data_file(s);
    const guint8 *body = data->buf;
    vd_file_debug_event(s->img->file, VD_EVENT_WRITE_AIO);
    if (data->src != NULL) {
        /* Never encrypted: the generic layer asks only plain images. */
        return (head_len == 0 || vd_file_pwrite(f, host, head, head_len, error)) &&
               vd_file_copy_range(data->src, data->src_offset, f, host + head_len, body_len,
                                  data->buf, error) &&
               (tail_len == 0 ||
                vd_file_pwrite(f, host + head_len + body_len, tail, tail_len, error));
    }
    if (qcow2_encrypted(s))
        return pwrite_encrypted(s, guest, host, head, head_len, body, body_len, tail, tail_len,
                                error);
    guint64 total = head_len + body_len + tail_len;
    if ((head_len > 0 || tail_len > 0) && total <= (1u << 20)) {
        /* One write instead of three for small unaligned requests. */
        g_autofree guint8 *buf = g_malloc(total);
        /* A missing part comes as NULL with length 0: memcpy must not see it. */
        if (head_len > 0)
            memcpy(buf, head, head_len);
        memcpy(buf + head_len, body, body_len);
        if (tail_len > 0)
            memcpy(buf + head_len + body_len, tail, tail_len);
        return vd_file_pwrite(f, host, buf, total, error);
    }
    return (head_len == 0 || vd_file_pwrite(f, host, head, head_len, error)) &&
           vd_file_pwrite(f, host + head_len, body, body_len, error) &&
           (tail_len == 0 || vd_file_pwrite(f, host + head_len + body_len, tail, tail_len, error));
}

typedef struct {
    guint8 *table;
    guint64 table_guest; /* guest offset the table starts at */
    guint64 pos, end;    /* guest bytes to write */
    WriteData data;      /* the bytes of guest offset pos */
    gboolean in_place;
    guint64 host0; /* host offset of the group's first cluster (in place) */
} WriteGroup;

static guint64 entry_at(Qcow2State *s, const WriteGroup *g, guint64 guest, guint64 *bitmap)
{
    guint64 idx = (guest - g->table_guest) >> s->cluster_bits;
    return qcow2_l2_get(s, g->table, idx, bitmap);
}

static gboolean update_entries(Qcow2State *s, WriteGroup *g, guint64 exp_start, guint64 exp_end,
                               GError **error)
{
    guint64 cs = s->cluster_size, first = qcow2_align_down(g->pos, cs);
    for (guint64 c = first; c < exp_end; c += cs) {
        guint64 bitmap, idx = (c - g->table_guest) >> s->cluster_bits;
        guint64 entry = qcow2_l2_get(s, g->table, idx, &bitmap);
        guint32 mask = subcluster_mask(s, c, MAX(exp_start, c), MIN(exp_end, c + cs));
        guint32 alloc = (guint32)bitmap, zero = (guint32)(bitmap >> 32);
        if (g->in_place) {
            alloc |= mask;
            zero &= ~mask;
        } else {
            if (!free_entry(s, entry, error))
                return FALSE;
            Qcow2ClusterType type = qcow2_cluster_type(s, entry);
            if (type == QCOW2_CL_NORMAL || type == QCOW2_CL_COMPRESSED) {
                alloc = 0xffffffffu; /* the whole old cluster was copied */
                zero = 0;
            } else {
                alloc = mask;
                zero &= ~mask;
            }
            entry = (g->host0 + (c - first)) | QCOW2_OFLAG_COPIED;
        }
        qcow2_l2_set(s, g->table, idx, entry, (guint64)zero << 32 | alloc);
    }
    qcow2_cache_mark_dirty(s->l2_cache, g->table);
    return TRUE;
}

static gboolean write_group(Qcow2State *s, WriteGroup *g, GError **error)
{
    guint64 cs = s->cluster_size, bitmap;
    guint64 head_entry = entry_at(s, g, g->pos, &bitmap);
    guint64 tail_entry = entry_at(s, g, g->end - 1, &bitmap);
    guint64 exp_start = qcow2_align_down(g->pos, write_unit(s, head_entry, g->in_place));
    guint64 exp_end = qcow2_align_up(g->end, write_unit(s, tail_entry, g->in_place));
    exp_end = MIN(exp_end, g->table_guest + qcow2_l2_span(s));
    guint64 head_len = g->pos - exp_start, tail_len = exp_end - g->end;
    guint64 first = qcow2_align_down(g->pos, cs);
    /* Old content around the request, read before the mapping changes. */
    g_autofree guint8 *head = head_len > 0 ? g_malloc(head_len) : NULL;
    g_autofree guint8 *tail = tail_len > 0 ? g_malloc(tail_len) : NULL;
    if ((head_len > 0 && !qcow2_read(s->img, exp_start, head, head_len, error)) ||
        (tail_len > 0 && !qcow2_read(s->img, g->end, tail, tail_len, error)))
        return FALSE;
    if (!g->in_place) {
        guint64 n = (qcow2_align_up(exp_end, cs) - first) / cs;
        if (s->data_file != NULL)
            g->host0 = first; /* guest offset = host offset */
        else if (!qcow2_alloc_clusters(s, n, &g->host0, error))
            return FALSE;
    }
    guint64 host = g->host0 + (exp_start - first);
    if (!pwrite_parts(s, exp_start, host, head, head_len, &g->data, g->end - g->pos, tail, tail_len,
                      error))
        return FALSE;
    /* Copied-on-write bytes are durable before an L2 entry points at them,
     * as in QEMU: they are old data the guest never asked to rewrite. */
    if (!g->in_place && (head_len > 0 || tail_len > 0))
        qcow2_cache_depends_on_flush(s->l2_cache);
    if (s->data_file == NULL && host + (exp_end - exp_start) > s->file_size)
        s->file_size = host + (exp_end - exp_start);
    if (s->zbuf_entry != 0)
        s->zbuf_entry = 0;
    return update_entries(s, g, exp_start, exp_end, error);
}

/* Split [offset, offset+len) of one L2 table into groups of clusters
 * written the same way: in place and host-contiguous, or newly allocated
 * together. */
static gboolean write_in_table(Qcow2State *s, guint64 offset, const WriteData *data, guint64 len,
                               GError **error)
{
    guint64 cs = s->cluster_size, span = qcow2_l2_span(s), l1i = offset / span;
    guint8 *t;
    if (!get_l2_for_write(s, l1i, &t, error))
        return FALSE;
    WriteGroup g = { .table = t, .table_guest = l1i * span };
    guint64 end = offset + len;
    gboolean ok = TRUE;
    for (guint64 pos = offset; ok && pos < end;) {
        guint64 bitmap, entry = entry_at(s, &g, pos, &bitmap);
        g.in_place = is_in_place(s, entry);
        g.host0 = entry & QCOW2_OFFSET_MASK;
        guint64 c = qcow2_align_down(pos, cs) + cs;
        for (; c < end; c += cs) {
            guint64 e = entry_at(s, &g, c, &bitmap);
            if (is_in_place(s, e) != g.in_place)
                break;
            if (g.in_place && (e & QCOW2_OFFSET_MASK) != g.host0 + (c - qcow2_align_down(pos, cs)))
                break;
        }
        g.pos = pos;
        g.end = MIN(c, end);
        g.data = *data;
        g.data.src_offset += pos - offset;
        if (data->buf != NULL)
            g.data.buf += pos - offset;
        ok = write_group(s, &g, error);
        pos = g.end;
    }
    qcow2_cache_put(s->l2_cache, t);
    return ok;
}

/* Write a range one L2 table at a time. */
static gboolean write_data(Qcow2State *s, guint64 offset, const WriteData *data, guint64 len,
                           GError **error)
{
    guint64 span = qcow2_l2_span(s);
    WriteData d = *data;
    while (len > 0) {
        guint64 n = MIN(len, qcow2_align_down(offset, span) + span - offset);
        if (!write_in_table(s, offset, &d, n, error))
            return FALSE;
        offset += n;
        d.src_offset += n;
        if (d.buf != NULL)
            d.buf += n;
        len -= n;
    }
    return TRUE;
}

/* Encrypted images are written in whole sectors: widen the request with
 * the old content around it. */
static gboolean write_sector_aligned(VdImage *img, guint64 offset, const guint8 *buf, gsize len,
                                     GError **error)
{
    guint64 start = offset & ~(guint64)511;
    guint64 end = MIN(qcow2_align_up(offset + len, 512), qcow2_align_up(img->size, 512));
    gsize span = (gsize)(end - start);
    g_autofree guint8 *tmp = g_malloc0(span);
    guint64 readable = MIN(end, img->size) - start;
    if (offset > start && !qcow2_read(img, start, tmp, MIN(512, readable), error))
        return FALSE;
    if (end > offset + len && end - 512 >= start) {
        guint64 a = end - 512;
        if (a < img->size && !qcow2_read(img, a, tmp + (a - start), MIN(512, img->size - a), error))
            return FALSE;
    }
    memcpy(tmp + (offset - start), buf, len);
    return qcow2_write(img, start, tmp, span, error);
}

gboolean qcow2_write(VdImage *img, guint64 offset, const void *buf, gsize len, GError **error)
{
    Qcow2State *s = img->priv;
    if (!begin_guest_write(s, offset, len, error))
        return FALSE;
    if (qcow2_encrypted(s)) {
        if (!qcow2_crypto_need_key(s, error))
            return FALSE;
        if ((offset & 511) != 0 || (len & 511) != 0)
            return write_sector_aligned(img, offset, buf, len, error);
    }
    WriteData data = { .buf = buf };
    return write_data(s, offset, &data, len, error);
}

gboolean qcow2_write_from_file(VdImage *img, guint64 offset, VdFile *src, guint64 src_offset,
                               guint64 len, const void *buf, GError **error)
{
    Qcow2State *s = img->priv;
    if (!begin_guest_write(s, offset, len, error))
        return FALSE;
    WriteData data = { .buf = buf, .src = src, .src_offset = src_offset };
    return write_data(s, offset, &data, len, error);
}

/* ----- zero writes and discard ----- */

/* Does the cluster already read as zeroes without backing-file help? */
static gboolean reads_zero(Qcow2State *s, guint64 entry, guint64 bitmap, guint32 mask)
{
    Qcow2ClusterType type = qcow2_cluster_type(s, entry);
    if (type == QCOW2_CL_ZERO_PLAIN || type == QCOW2_CL_ZERO_ALLOC)
        return TRUE;
    if (s->ext_l2 && type != QCOW2_CL_COMPRESSED)
        return ((guint32)(bitmap >> 32) & mask) == mask;
    return type == QCOW2_CL_UNALLOCATED && s->img->backing_name == NULL;
}

/* Is the cluster flagged zero already? A v3 image flags even clusters that
 * read zero unallocated, as qemu does (a v2 image has no flag: there,
 * reading zero is all a zero write can do). */
static gboolean flagged_zero(Qcow2State *s, guint64 entry, guint64 bitmap, guint32 mask)
{
    if (s->version < 3)
        return reads_zero(s, entry, bitmap, mask);
    Qcow2ClusterType type = qcow2_cluster_type(s, entry);
    if (type == QCOW2_CL_ZERO_PLAIN || type == QCOW2_CL_ZERO_ALLOC)
        return TRUE;
    if (s->ext_l2 && type != QCOW2_CL_COMPRESSED)
        return ((guint32)(bitmap >> 32) & mask) == mask;
    return FALSE;
}

static gboolean write_zero_bytes(Qcow2State *s, guint64 offset, guint64 len, GError **error)
{
    g_autofree guint8 *zero = g_malloc0(MIN(len, s->cluster_size));
    while (len > 0) {
        guint64 n = MIN(len, s->cluster_size);
        if (!qcow2_write(s->img, offset, zero, n, error))
            return FALSE;
        offset += n;
        len -= n;
    }
    return TRUE;
}

/* New entry (and bitmap) for a cluster of which [a, b) becomes zero;
 * *release says the old host space is to be freed. */
static guint64 zeroed_entry(Qcow2State *s, guint64 cstart, guint64 a, guint64 b, guint64 entry,
                            guint64 *bitmap, gboolean may_unmap, gboolean *release)
{
    Qcow2ClusterType type = qcow2_cluster_type(s, entry);
    *release = FALSE;
    if (s->ext_l2) {
        guint32 mask = subcluster_mask(s, cstart, a, b);
        guint32 alloc = (guint32)*bitmap & ~mask, zero = (guint32)(*bitmap >> 32) | mask;
        if (type == QCOW2_CL_COMPRESSED || (alloc == 0 && may_unmap)) {
            /* Nothing left in the host cluster: let it go. */
            *release = type != QCOW2_CL_UNALLOCATED;
            entry = 0;
            zero = type == QCOW2_CL_COMPRESSED ? 0xffffffffu : zero;
            alloc = 0;
        }
        *bitmap = (guint64)zero << 32 | alloc;
        return entry;
    }
    if (s->version < 3) {
        *release = TRUE;
        return 0; /* only reached without a backing file */
    }
    if (type == QCOW2_CL_NORMAL && !may_unmap && (entry & QCOW2_OFLAG_COPIED))
        return entry | QCOW2_OFLAG_ZERO; /* keep the preallocation */
    if (s->data_file != NULL && (type == QCOW2_CL_NORMAL || type == QCOW2_CL_ZERO_ALLOC))
        return (entry & ~QCOW2_OFLAG_COMPRESSED) | QCOW2_OFLAG_ZERO;
    *release = TRUE;
    return QCOW2_OFLAG_ZERO;
}

/* Flag whole units of one cluster piece [pos, cend) as zero; *head_end and
 * *tail_start tell which bytes at the edges are left to be written as zero
 * data. */
static gboolean zero_units(Qcow2State *s, guint8 *t, guint64 idx, guint64 cstart, guint64 pos,
                           guint64 cend, gboolean may_unmap, guint64 *head_end, guint64 *tail_start,
                           gboolean *dirty, GError **error)
{
    guint64 cs = s->cluster_size, bitmap;
    guint64 entry = qcow2_l2_get(s, t, idx, &bitmap);
    Qcow2ClusterType type = qcow2_cluster_type(s, entry);
    guint64 unit = s->ext_l2 ? qcow2_subcluster_size(s) : cs;
    /* The tail of the image counts as a whole unit. */
    guint64 a = qcow2_align_up(pos, unit);
    guint64 b = cend >= s->img->size ? cend : qcow2_align_down(cend, unit);
    gboolean whole_cluster = a == cstart && (b == cstart + cs || cend >= s->img->size);
    gboolean flag = a < b;
    if (type == QCOW2_CL_COMPRESSED && !whole_cluster)
        flag = FALSE; /* part of a compressed cluster: rewrite it as data */
    if (s->version < 3 && s->img->backing_name != NULL)
        flag = FALSE; /* v2 has no zero flag: deallocating would show the backing file */
    if (!flag) {
        *head_end = *tail_start = cend;
        return TRUE;
    }
    *head_end = a;
    *tail_start = b;
    guint32 mask = subcluster_mask(s, cstart, a, b);
    if (flagged_zero(s, entry, bitmap, mask))
        return TRUE;
    gboolean release;
    guint64 nbitmap = bitmap;
    guint64 nentry = zeroed_entry(s, cstart, a, b, entry, &nbitmap, may_unmap, &release);
    if (release && !free_entry(s, entry, error))
        return FALSE;
    qcow2_l2_set(s, t, idx, nentry, nbitmap);
    *dirty = TRUE;
    s->zbuf_entry = 0;
    return TRUE;
}

static gboolean zero_edge(Qcow2State *s, guint8 *t, guint64 idx, guint64 cstart, guint64 a,
                          guint64 b, GError **error)
{
    if (a >= b)
        return TRUE;
    guint64 bitmap, entry = qcow2_l2_get(s, t, idx, &bitmap);
    if (reads_zero(s, entry, bitmap, subcluster_mask(s, cstart, a, b)))
        return TRUE;
    return write_zero_bytes(s, a, b - a, error);
}

static gboolean zero_in_table(Qcow2State *s, guint64 offset, guint64 len, gboolean may_unmap,
                              GError **error)
{
    guint64 cs = s->cluster_size, span = qcow2_l2_span(s), l1i = offset / span;
    guint64 end = offset + len;
    /* Without a zero flag, unallocated without backing is as zero as it
     * gets; a v3 image flags the clusters, allocating the table. */
    if (s->img->backing_name == NULL && s->version < 3 &&
        (l1i >= s->l1_size || (s->l1[l1i] & QCOW2_OFFSET_MASK) == 0))
        return TRUE;
    guint8 *t;
    if (!get_l2_for_write(s, l1i, &t, error))
        return FALSE;
    gboolean ok = TRUE, dirty = FALSE;
    for (guint64 pos = offset; ok && pos < end;) {
        guint64 cstart = qcow2_align_down(pos, cs), cend = MIN(cstart + cs, end);
        guint64 idx = (cstart - l1i * span) >> s->cluster_bits, head_end, tail_start;
        ok = zero_units(s, t, idx, cstart, pos, cend, may_unmap, &head_end, &tail_start, &dirty,
                        error) &&
             zero_edge(s, t, idx, cstart, pos, MIN(head_end, cend), error) &&
             zero_edge(s, t, idx, cstart, MAX(tail_start, head_end), cend, error);
        pos = cend;
    }
    if (dirty)
        qcow2_cache_mark_dirty(s->l2_cache, t);
    qcow2_cache_put(s->l2_cache, t);
    return ok;
}

gboolean qcow2_write_zeroes(VdImage *img, guint64 offset, guint64 len, gboolean may_unmap,
                            GError **error)
{
    Qcow2State *s = img->priv;
    if (!begin_guest_write(s, offset, len, error))
        return FALSE;
    if (s->data_file != NULL && (s->autoclear & QCOW2_AUTOCLEAR_DATA_RAW)) {
        /* The data file must stay a valid raw image: zeroes go there too. */
        if (!write_zero_bytes(s, offset, len, error))
            return FALSE;
        return TRUE;
    }
    guint64 span = qcow2_l2_span(s);
    while (len > 0) {
        guint64 n = MIN(len, qcow2_align_down(offset, span) + span - offset);
        if (!zero_in_table(s, offset, n, may_unmap, error))
            return FALSE;
        offset += n;
        len -= n;
    }
    return TRUE;
}

static gboolean discard_in_table(Qcow2State *s, guint64 offset, guint64 len, GError **error)
{
    guint64 span = qcow2_l2_span(s), l1i = offset / span;
    if (l1i >= s->l1_size || (s->l1[l1i] & QCOW2_OFFSET_MASK) == 0)
        return TRUE;
    guint64 first = (offset - l1i * span) >> s->cluster_bits, n = len >> s->cluster_bits;
    guint8 *t;
    /* Look first, so a table shared with a snapshot is only copied when
     * something changes. */
    if (!load_active_l2(s, l1i, &t, error))
        return FALSE;
    gboolean any = FALSE;
    for (guint64 i = first; i < first + n && !any; i++) {
        guint64 bitmap;
        any = qcow2_l2_get(s, t, i, &bitmap) != 0 || bitmap != 0;
    }
    qcow2_cache_put(s->l2_cache, t);
    if (!any)
        return TRUE;
    if (!get_l2_for_write(s, l1i, &t, error))
        return FALSE;
    gboolean ok = TRUE;
    for (guint64 i = first; ok && i < first + n; i++) {
        guint64 bitmap, entry = qcow2_l2_get(s, t, i, &bitmap);
        if (entry == 0 && bitmap == 0)
            continue;
        if (s->data_file != NULL && (s->autoclear & QCOW2_AUTOCLEAR_DATA_RAW))
            continue; /* the raw data file keeps its content */
        ok = free_entry(s, entry, error);
        qcow2_l2_set(s, t, i, 0, 0);
    }
    s->zbuf_entry = 0;
    qcow2_cache_mark_dirty(s->l2_cache, t);
    qcow2_cache_put(s->l2_cache, t);
    return ok;
}

/* Discard drops whole clusters only; afterwards they read from the backing
 * file again (or as zeroes without one). */
gboolean qcow2_discard(VdImage *img, guint64 offset, guint64 len, GError **error)
{
    Qcow2State *s = img->priv;
    if (!begin_guest_write(s, offset, len, error))
        return FALSE;
    guint64 cs = s->cluster_size, end = offset + len;
    guint64 start = qcow2_align_up(offset, cs);
    /* The partial last cluster of the image counts as whole. */
    guint64 stop = end >= img->size ? qcow2_align_up(end, cs) : qcow2_align_down(end, cs);
    guint64 span = qcow2_l2_span(s);
    for (guint64 pos = start; pos < stop;) {
        guint64 n = MIN(stop - pos, qcow2_align_down(pos, span) + span - pos);
        if (!discard_in_table(s, pos, n, error))
            return FALSE;
        pos += n;
    }
    return TRUE;
}

/* ----- compressed writes ----- */

gboolean qcow2_write_compressed(VdImage *img, guint64 offset, const void *data, gsize len,
                                GError **error)
{
    Qcow2State *s = img->priv;
    if (!begin_guest_write(s, offset, len, error))
        return FALSE;
    if (s->data_file != NULL) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "compressed clusters cannot be used with an external data file");
        return FALSE;
    }
    if (qcow2_encrypted(s)) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "compression and encryption cannot be used together");
        return FALSE;
    }
    if (qcow2_offset_into_cluster(s, offset) != 0 || len == 0 || len >= s->cluster_size) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "compressed write at %" G_GUINT64_FORMAT " of %" G_GSIZE_FORMAT
                     " bytes is not one compressed cluster",
                     offset, len);
        return FALSE;
    }
    guint64 span = qcow2_l2_span(s), l1i = offset / span;
    guint8 *t;
    if (!get_l2_for_write(s, l1i, &t, error))
        return FALSE;
    guint64 idx = (offset - l1i * span) >> s->cluster_bits, bitmap, coff;
    guint64 old = qcow2_l2_get(s, t, idx, &bitmap);
    gboolean ok = qcow2_alloc_bytes(s, len, &coff, error);
    if (ok && coff > s->coffset_mask) {
        vd_set_error(error, img, VD_ERROR_NO_SPACE,
                     "compressed data cannot be stored this far into the file");
        ok = FALSE;
    }
    ok = ok && vd_file_pwrite(img->file, coff, data, len, error);
    if (ok) {
        if (coff + len > s->file_size)
            s->file_size = coff + len;
        guint64 extra = ((coff + len - 1) >> 9) - (coff >> 9);
        guint64 entry = QCOW2_OFLAG_COMPRESSED | (extra << s->csize_shift) | coff;
        ok = free_entry(s, old, error);
        qcow2_l2_set(s, t, idx, entry, 0);
        qcow2_cache_mark_dirty(s->l2_cache, t);
        s->zbuf_entry = 0;
    }
    qcow2_cache_put(s->l2_cache, t);
    return ok;
}

/* ----- preallocation and shrinking ----- */

gboolean qcow2_preallocate(Qcow2State *s, guint64 offset, guint64 len, GError **error)
{
    guint64 cs = s->cluster_size, span = qcow2_l2_span(s);
    guint64 end = qcow2_align_up(offset + len, cs);
    for (guint64 pos = qcow2_align_down(offset, cs); pos < end;) {
        guint64 l1i = pos / span, n = MIN(end - pos, (l1i + 1) * span - pos) / cs;
        guint8 *t;
        if (!get_l2_for_write(s, l1i, &t, error))
            return FALSE;
        guint64 idx = (pos - l1i * span) >> s->cluster_bits, host, bitmap;
        gboolean ok = s->data_file != NULL || qcow2_alloc_clusters(s, n, &host, error);
        for (guint64 i = 0; ok && i < n; i++) {
            guint64 e = qcow2_l2_get(s, t, idx + i, &bitmap);
            if (e != 0)
                continue; /* leaves a hole in the run: harmless */
            guint64 h = s->data_file != NULL ? pos + i * cs : host + i * cs;
            qcow2_l2_set(s, t, idx + i, h | QCOW2_OFLAG_COPIED, bitmap);
            if (h + cs > s->file_size && s->data_file == NULL)
                s->file_size = h + cs;
        }
        qcow2_cache_mark_dirty(s->l2_cache, t);
        qcow2_cache_put(s->l2_cache, t);
        if (!ok)
            return FALSE;
        pos += n * cs;
    }
    return TRUE;
}
