/* qcow2 internal snapshots: the snapshot table, and create / apply /
 * delete / load-for-reading.
 *
 * A snapshot is a copy of the L1 table; every L2 table and data cluster
 * reachable from it holds one more reference. The COPIED flag (refcount
 * exactly one) of the active tables is recomputed after every change, as
 * only active tables must have it right.
 */
#include "qcow2.h"

#include <stdlib.h>
#include <string.h>

#define SN_FIXED 40       /* bytes before extra data */
#define SN_EXTRA_KNOWN 24 /* vm_state_size_large, disk_size, icount */

void qcow2_snapshot_free(Qcow2Snapshot *sn)
{
    if (sn == NULL)
        return;
    g_free(sn->id);
    g_free(sn->name);
    if (sn->extra_unknown != NULL)
        g_bytes_unref(sn->extra_unknown);
    g_free(sn);
}

gboolean qcow2_read_l1(Qcow2State *s, guint64 offset, guint32 size, guint64 **l1, GError **error)
{
    guint64 bytes = (guint64)size * 8;
    if (bytes > QCOW2_MAX_L1_BYTES || (offset & (s->cluster_size - 1)) != 0 ||
        (size > 0 && offset == 0)) {
        vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                     "L1 table at 0x%" G_GINT64_MODIFIER "x with %u entries is invalid", offset,
                     size);
        return FALSE;
    }
    if (!qcow2_in_file(s, offset, bytes)) {
        vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                     "L1 table at 0x%" G_GINT64_MODIFIER "x points past the end of the file",
                     offset);
        return FALSE;
    }
    g_autofree guint8 *raw = g_malloc(MAX(bytes, 1));
    if (!vd_file_pread(s->img->file, offset, raw, bytes, error))
        return FALSE;
    guint64 *t = g_new0(guint64, MAX(size, 1));
    for (guint32 i = 0; i < size; i++)
        t[i] = vd_be64(raw + (guint64)i * 8);
    *l1 = t;
    return TRUE;
}

/* ----- the table on disk ----- */

static gboolean parse_entry(Qcow2State *s, const guint8 *p, guint64 avail, guint64 *used,
                            Qcow2Snapshot **out, GError **error)
{
    if (avail < SN_FIXED)
        return FALSE;
    guint32 extra = vd_be32(p + 36);
    guint16 id_len = vd_be16(p + 12), name_len = vd_be16(p + 14);
    if (extra > QCOW2_MAX_EXTRA_DATA)
        return FALSE;
    guint64 len = qcow2_align_up((guint64)SN_FIXED + extra + id_len + name_len, 8);
    if (len > avail && (guint64)SN_FIXED + extra + id_len + name_len > avail)
        return FALSE;
    Qcow2Snapshot *sn = g_new0(Qcow2Snapshot, 1);
    sn->l1_offset = vd_be64(p);
    sn->l1_size = vd_be32(p + 8);
    sn->date_sec = vd_be32(p + 16);
    sn->date_nsec = vd_be32(p + 20);
    sn->vm_clock_nsec = vd_be64(p + 24);
    sn->vm_state_size = vd_be32(p + 32);
    sn->icount = G_MAXUINT64;
    const guint8 *x = p + SN_FIXED;
    if (extra >= 8)
        sn->vm_state_size = vd_be64(x);
    if (extra >= 16) {
        sn->disk_size = vd_be64(x + 8);
        sn->has_disk_size = TRUE;
    }
    if (extra >= 24)
        sn->icount = vd_be64(x + 16);
    if (extra > SN_EXTRA_KNOWN)
        sn->extra_unknown = g_bytes_new(x + SN_EXTRA_KNOWN, extra - SN_EXTRA_KNOWN);
    sn->id = g_strndup((const char *)x + extra, id_len);
    sn->name = g_strndup((const char *)x + extra + id_len, name_len);
    *used = MIN(len, avail);
    *out = sn;
    /* Its L1 table is checked when the snapshot is used
     * (qcow2_snapshot_l1_check): an image with a damaged snapshot opens,
     * as in qemu, and only that snapshot is refused. */
    return TRUE;
}

gboolean qcow2_snapshots_load(Qcow2State *s, guint32 nb, guint64 offset, GError **error)
{
    g_ptr_array_set_size(s->snapshots, 0);
    s->snapshots_offset = offset;
    s->snapshots_size = 0;
    if (nb == 0)
        return TRUE;
    if (nb > QCOW2_MAX_SNAPSHOTS || (offset & (s->cluster_size - 1)) != 0 || offset == 0 ||
        !qcow2_in_file(s, offset, 1)) {
        vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                     "snapshot table (%u entries at 0x%" G_GINT64_MODIFIER "x) is invalid", nb,
                     offset);
        return FALSE;
    }
    /* Entries are variable length: read what could hold them, capped. */
    guint64 max = MIN(s->file_size - offset, (guint64)QCOW2_MAX_SNAPSHOT_TABLE);
    max = MIN(max, (guint64)nb * (SN_FIXED + QCOW2_MAX_EXTRA_DATA + 2 * 65535 + 8));
    if (!vd_image_charge_metadata(s->img, max, "snapshot table", error))
        return FALSE;
    g_autofree guint8 *raw = g_malloc(max);
    if (!vd_file_pread(s->img->file, offset, raw, max, error))
        return FALSE;
    guint64 pos = 0;
    for (guint32 i = 0; i < nb; i++) {
        Qcow2Snapshot *sn = NULL;
        guint64 used = 0;
        gboolean ok = parse_entry(s, raw + pos, max - pos, &used, &sn, error);
        if (sn != NULL)
            g_ptr_array_add(s->snapshots, sn);
        if (!ok) {
            if (error != NULL && *error == NULL)
                vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                             "snapshot table entry %u runs past the end of the table", i);
            return FALSE;
        }
        pos += used;
    }
    s->snapshots_size = pos;
    return TRUE;
}

static GByteArray *serialize_table(Qcow2State *s)
{
    GByteArray *out = g_byte_array_new();
    for (guint i = 0; i < s->snapshots->len; i++) {
        Qcow2Snapshot *sn = s->snapshots->pdata[i];
        gsize unknown = sn->extra_unknown != NULL ? g_bytes_get_size(sn->extra_unknown) : 0;
        gsize id_len = strlen(sn->id), name_len = strlen(sn->name);
        gsize extra = SN_EXTRA_KNOWN + unknown;
        gsize len = qcow2_align_up(SN_FIXED + extra + id_len + name_len, 8);
        guint base = out->len;
        g_byte_array_set_size(out, base + len);
        guint8 *p = out->data + base;
        memset(p, 0, len);
        vd_put_be64(p, sn->l1_offset);
        vd_put_be32(p + 8, sn->l1_size);
        vd_put_be16(p + 12, (guint16)id_len);
        vd_put_be16(p + 14, (guint16)name_len);
        vd_put_be32(p + 16, sn->date_sec);
        vd_put_be32(p + 20, sn->date_nsec);
        vd_put_be64(p + 24, sn->vm_clock_nsec);
        vd_put_be32(p + 32, sn->vm_state_size > G_MAXUINT32 ? 0 : (guint32)sn->vm_state_size);
        vd_put_be32(p + 36, (guint32)extra);
        vd_put_be64(p + 40, sn->vm_state_size);
        vd_put_be64(p + 48, sn->has_disk_size ? sn->disk_size : s->img->size);
        vd_put_be64(p + 56, sn->icount);
        if (unknown > 0)
            memcpy(p + 64, g_bytes_get_data(sn->extra_unknown, NULL), unknown);
        memcpy(p + SN_FIXED + extra, sn->id, id_len);
        memcpy(p + SN_FIXED + extra + id_len, sn->name, name_len);
    }
    return out;
}

/* Write the in-memory list as a new table, point the header at it, free
 * the old one. */
/* Write the table and point the header at it; *old and *old_size say
 * where the previous one lay, for free_old_table. */
static gboolean write_new_table(Qcow2State *s, guint64 *old, guint64 *old_size, GError **error)
{
    *old = *old_size = 0;
    g_autoptr(GByteArray) raw = serialize_table(s);
    guint64 off = 0, cs = s->cluster_size;
    if (raw->len > QCOW2_MAX_SNAPSHOT_TABLE) {
        vd_set_error(error, s->img, VD_ERROR_NO_SPACE, "the snapshot table is full");
        return FALSE;
    }
    if (raw->len > 0) {
        if (!qcow2_alloc_clusters(s, qcow2_align_up(raw->len, cs) / cs, &off, error) ||
            !qcow2_cache_flush(s, s->rb_cache, error) ||
            !vd_file_pwrite(s->img->file, off, raw->data, raw->len, error))
            return FALSE;
    }
    /* The new table is durable before the header names it, and the header
     * before the old table's clusters are freed. */
    guint8 hdr[12];
    vd_put_be32(hdr, s->snapshots->len);
    vd_put_be64(hdr + 4, off);
    if (!vd_file_sync(s->img->file, error) ||
        !vd_file_pwrite(s->img->file, QH_NB_SNAPSHOTS, hdr, sizeof hdr, error) ||
        !vd_file_sync(s->img->file, error))
        return FALSE;
    *old = s->snapshots_offset;
    *old_size = s->snapshots_size;
    s->snapshots_offset = off;
    s->snapshots_size = raw->len;
    return TRUE;
}

/* Drop the refcount of a table no longer used (the old snapshot table, a
 * deleted snapshot's L1 table). */
static gboolean free_old_table(Qcow2State *s, guint64 old, guint64 old_size, GError **error)
{
    if (old == 0 || old_size == 0)
        return TRUE;
    vd_file_debug_event(s->img->file, VD_EVENT_CLUSTER_FREE);
    return qcow2_update_refcount(s, old, old_size, -1, error);
}

static gboolean write_table(Qcow2State *s, GError **error)
{
    guint64 old, old_size;
    return write_new_table(s, &old, &old_size, error) && free_old_table(s, old, old_size, error);
}

gboolean qcow2_snapshots_rewrite(Qcow2State *s, GError **error)
{
    return qcow2_flush_metadata(s, error) && write_table(s, error) &&
           qcow2_flush_metadata(s, error);
}

/* ----- refcounts of a whole L1 tree ----- */

static gboolean update_l2_refs(Qcow2State *s, guint64 l2_off, guint32 l1i, gint64 delta,
                               GError **error)
{
    guint8 *t;
    if (!qcow2_load_l2(s, l2_off, "L1 entry", l1i, &t, error))
        return FALSE;
    /* A copy: updating refcounts may write back and evict tables. */
    g_autofree guint8 *copy = g_memdup2(t, s->cluster_size);
    qcow2_cache_put(s->l2_cache, t);
    for (guint64 j = 0; j < s->l2_entries; j++) {
        guint64 bitmap, e = qcow2_l2_get(s, copy, j, &bitmap);
        gboolean ok = TRUE;
        switch (qcow2_cluster_type(s, e)) {
        case QCOW2_CL_COMPRESSED: {
            guint64 coff, clen;
            qcow2_compressed_range(s, e, &coff, &clen);
            ok = qcow2_update_refcount(s, coff, clen, delta, error);
            break;
        }
        case QCOW2_CL_NORMAL:
        case QCOW2_CL_ZERO_ALLOC:
            if (s->data_file == NULL)
                ok = qcow2_update_refcount(s, e & QCOW2_OFFSET_MASK, s->cluster_size, delta, error);
            break;
        default:
            break;
        }
        if (!ok)
            return FALSE;
    }
    return qcow2_update_refcount(s, l2_off, s->cluster_size, delta, error);
}

static gboolean update_tree_refs(Qcow2State *s, const guint64 *l1, guint32 size, gint64 delta,
                                 GError **error)
{
    for (guint32 i = 0; i < size; i++) {
        guint64 off = l1[i] & QCOW2_OFFSET_MASK;
        if (off != 0 && !update_l2_refs(s, off, i, delta, error))
            return FALSE;
    }
    return TRUE;
}

static gboolean fix_l2_flags(Qcow2State *s, guint32 l1i, GError **error)
{
    guint8 *t;
    if (!qcow2_load_l2(s, s->l1[l1i] & QCOW2_OFFSET_MASK, "L1 entry", l1i, &t, error))
        return FALSE;
    gboolean dirty = FALSE, ok = TRUE;
    for (guint64 j = 0; ok && j < s->l2_entries; j++) {
        guint64 bitmap, e = qcow2_l2_get(s, t, j, &bitmap), rc;
        Qcow2ClusterType type = qcow2_cluster_type(s, e);
        if (type != QCOW2_CL_NORMAL && type != QCOW2_CL_ZERO_ALLOC)
            continue;
        ok = qcow2_get_refcount(s, (e & QCOW2_OFFSET_MASK) >> s->cluster_bits, &rc, error);
        guint64 want = rc == 1 ? QCOW2_OFLAG_COPIED : 0;
        if (ok && (e & QCOW2_OFLAG_COPIED) != want) {
            qcow2_l2_set(s, t, j, (e & ~QCOW2_OFLAG_COPIED) | want, bitmap);
            dirty = TRUE;
        }
    }
    if (dirty)
        qcow2_cache_mark_dirty(s->l2_cache, t);
    qcow2_cache_put(s->l2_cache, t);
    return ok;
}

gboolean qcow2_update_copied_flags(Qcow2State *s, GError **error)
{
    if (s->data_file != NULL)
        return TRUE; /* always set there */
    for (guint32 i = 0; i < s->l1_size; i++) {
        guint64 off = s->l1[i] & QCOW2_OFFSET_MASK, rc;
        if (off == 0)
            continue;
        if (!qcow2_get_refcount(s, off >> s->cluster_bits, &rc, error))
            return FALSE;
        guint64 want = (s->l1[i] & ~QCOW2_OFLAG_COPIED) | (rc == 1 ? QCOW2_OFLAG_COPIED : 0);
        if (want != s->l1[i]) {
            s->l1[i] = want;
            s->l1_dirty_lo = MIN(s->l1_dirty_lo, i);
            s->l1_dirty_hi = MAX(s->l1_dirty_hi, i);
        }
        if (!fix_l2_flags(s, i, error))
            return FALSE;
    }
    return TRUE;
}

/* ----- operations ----- */

/* The first snapshot whose id is name_or_id, else the first of that name,
 * as qemu picks one to apply or to read (names need not be unique); with
 * by_name_first, names before ids, as qemu-img snapshot -d looks (it looks
 * at names only). */
static Qcow2Snapshot *find_snapshot_in_order(Qcow2State *s, const char *name_or_id,
                                             gboolean by_name_first, guint *index)
{
    for (int pass = 0; pass < 2; pass++) {
        gboolean by_id = (pass == 0) != by_name_first;
        for (guint i = 0; i < s->snapshots->len; i++) {
            Qcow2Snapshot *sn = s->snapshots->pdata[i];
            if (g_str_equal(by_id ? sn->id : sn->name, name_or_id)) {
                if (index != NULL)
                    *index = i;
                return sn;
            }
        }
    }
    return NULL;
}

gboolean qcow2_snapshot_l1_check(Qcow2State *s, const Qcow2Snapshot *sn, GError **error)
{
    if ((guint64)sn->l1_size * 8 <= QCOW2_MAX_L1_BYTES &&
        (sn->l1_offset & (s->cluster_size - 1)) == 0 && (sn->l1_offset != 0 || sn->l1_size == 0))
        return TRUE;
    if ((guint64)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES)
        vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                     "snapshot '%s' has an invalid L1 table: %u entries, more than the %u MiB "
                     "limit",
                     sn->name, sn->l1_size, QCOW2_MAX_L1_BYTES >> 20);
    else
        vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                     "snapshot '%s' has an invalid L1 table: offset 0x%" G_GINT64_MODIFIER
                     "x is not cluster aligned",
                     sn->name, sn->l1_offset);
    return FALSE;
}

static Qcow2Snapshot *require_snapshot(Qcow2State *s, const char *name_or_id,
                                       gboolean by_name_first, guint *index, GError **error)
{
    Qcow2Snapshot *sn = find_snapshot_in_order(s, name_or_id, by_name_first, index);
    if (sn == NULL)
        vd_set_error(error, s->img, VD_ERROR_NOT_FOUND, "has no snapshot '%s'", name_or_id);
    else if (!qcow2_snapshot_l1_check(s, sn, error))
        return NULL;
    return sn;
}

static gboolean refuse_unsupported(Qcow2State *s, GError **error)
{
    if (s->data_file != NULL) {
        vd_set_error(error, s->img, VD_ERROR_NOT_SUPPORTED,
                     "internal snapshots cannot be used with an external data file");
        return FALSE;
    }
    if (s->snapshot_loaded) {
        vd_set_error(error, s->img, VD_ERROR_INVALID_ARGUMENT, "shows a snapshot and is read-only");
        return FALSE;
    }
    return TRUE;
}

GPtrArray *qcow2_list_snapshots(VdImage *img, GError **error)
{
    Qcow2State *s = img->priv;
    GPtrArray *list = g_ptr_array_new_with_free_func((GDestroyNotify)vd_snapshot_info_free);
    for (guint i = 0; i < s->snapshots->len; i++) {
        Qcow2Snapshot *sn = s->snapshots->pdata[i];
        VdSnapshotInfo *info = g_new0(VdSnapshotInfo, 1);
        info->id = g_strdup(sn->id);
        info->name = g_strdup(sn->name);
        info->vm_state_size = sn->vm_state_size;
        info->date_sec = sn->date_sec;
        info->date_nsec = sn->date_nsec;
        info->vm_clock_nsec = sn->vm_clock_nsec;
        info->icount = sn->icount;
        g_ptr_array_add(list, info);
    }
    return list;
}

static char *new_snapshot_id(Qcow2State *s)
{
    guint64 max = 0;
    for (guint i = 0; i < s->snapshots->len; i++) {
        Qcow2Snapshot *sn = s->snapshots->pdata[i];
        guint64 v = g_ascii_strtoull(sn->id, NULL, 10);
        max = MAX(max, v);
    }
    return g_strdup_printf("%" G_GUINT64_FORMAT, max + 1);
}

static gboolean write_l1_copy(Qcow2State *s, guint64 *offset, GError **error)
{
    guint64 bytes = qcow2_align_up((guint64)s->l1_size * 8, s->cluster_size);
    *offset = 0;
    if (bytes == 0)
        return TRUE;
    if (!qcow2_alloc_clusters(s, bytes / s->cluster_size, offset, error) ||
        !qcow2_cache_flush(s, s->rb_cache, error))
        return FALSE;
    g_autofree guint8 *buf = g_malloc0(bytes);
    for (guint32 i = 0; i < s->l1_size; i++)
        vd_put_be64(buf + (guint64)i * 8, s->l1[i]);
    return vd_file_pwrite(s->img->file, *offset, buf, bytes, error);
}

gboolean qcow2_create_snapshot(VdImage *img, const char *name, GError **error)
{
    Qcow2State *s = img->priv;
    if (!refuse_unsupported(s, error))
        return FALSE;
    if (s->snapshots->len >= QCOW2_MAX_SNAPSHOTS) {
        vd_set_error(error, img, VD_ERROR_NO_SPACE,
                     "the snapshot table is full: it holds the %u snapshots qemu allows",
                     QCOW2_MAX_SNAPSHOTS);
        return FALSE;
    }
    if (strlen(name) > 65535) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT, "cannot add snapshot '%s'", name);
        return FALSE;
    }
    /* Copy of the L1 table, then the references it adds, then the flags
     * of the now shared active tables, then the table naming it: a crash
     * in between only leaks. */
    guint64 l1_copy;
    if (!qcow2_flush_metadata(s, error) || !qcow2_mark_dirty_during(s, error) ||
        !write_l1_copy(s, &l1_copy, error) || !update_tree_refs(s, s->l1, s->l1_size, 1, error) ||
        !qcow2_update_copied_flags(s, error) || !qcow2_flush_metadata(s, error))
        return FALSE;
    Qcow2Snapshot *sn = g_new0(Qcow2Snapshot, 1);
    gint64 now = g_get_real_time();
    sn->l1_offset = l1_copy;
    sn->l1_size = s->l1_size;
    sn->id = new_snapshot_id(s);
    sn->name = g_strdup(name);
    sn->date_sec = (guint32)(now / G_USEC_PER_SEC);
    sn->date_nsec = (guint32)(now % G_USEC_PER_SEC) * 1000;
    sn->disk_size = img->size;
    sn->has_disk_size = TRUE;
    /* qemu-img snapshot -c stores 0 here (only a VM records -1, "none"),
     * and lists it in its ICOUNT column: the same bytes as qemu-img's. */
    sn->icount = 0;
    g_ptr_array_add(s->snapshots, sn);
    if (!write_table(s, error)) {
        g_ptr_array_remove_index(s->snapshots, s->snapshots->len - 1);
        return FALSE;
    }
    return qcow2_end_dirty_during(s, error);
}

gboolean qcow2_apply_snapshot(VdImage *img, const char *name_or_id, GError **error)
{
    Qcow2State *s = img->priv;
    if (!refuse_unsupported(s, error))
        return FALSE;
    Qcow2Snapshot *sn = require_snapshot(s, name_or_id, FALSE, NULL, error);
    if (sn == NULL)
        return FALSE;
    guint64 size = sn->has_disk_size ? sn->disk_size : img->size;
    guint64 span = qcow2_l2_span(s), needed = size / span + (size % span != 0);
    g_autofree guint64 *snl1 = NULL;
    if (size != img->size && !qcow2_bitmaps_check_resize(s, error))
        return FALSE;
    if (!qcow2_flush_metadata(s, error) || !qcow2_mark_dirty_during(s, error) ||
        !qcow2_read_l1(s, sn->l1_offset, sn->l1_size, &snl1, error) ||
        !qcow2_grow_l1(s, (guint32)MAX(sn->l1_size, needed), error))
        return FALSE;
    /* Take the snapshot's references first, switch the active L1, then
     * drop the old tree's references. */
    g_autofree guint64 *old = g_memdup2(s->l1, (gsize)s->l1_size * 8);
    if (!update_tree_refs(s, snl1, sn->l1_size, 1, error) || !qcow2_flush_metadata(s, error))
        return FALSE;
    memset(s->l1, 0, (gsize)s->l1_size * 8);
    memcpy(s->l1, snl1, (gsize)sn->l1_size * 8);
    if (!qcow2_write_l1_entries(s, 0, s->l1_size - 1, error) || !vd_file_sync(s->img->file, error))
        return FALSE;
    if (size != img->size) {
        if (!qcow2_bitmaps_resize(s, size, error) ||
            !qcow2_write_header_field(s, QH_SIZE, size, 8, error))
            return FALSE;
        img->size = size;
    }
    /* The whole disk may read differently now. */
    qcow2_bitmaps_mark(s, 0, img->size);
    if (!update_tree_refs(s, old, s->l1_size, -1, error) || !qcow2_update_copied_flags(s, error))
        return FALSE;
    s->zbuf_entry = 0;
    return qcow2_end_dirty_during(s, error);
}

gboolean qcow2_delete_snapshot(VdImage *img, const char *name_or_id, GError **error)
{
    Qcow2State *s = img->priv;
    if (!refuse_unsupported(s, error))
        return FALSE;
    guint index;
    Qcow2Snapshot *sn = require_snapshot(s, name_or_id, TRUE, &index, error);
    if (sn == NULL)
        return FALSE;
    g_autofree guint64 *snl1 = NULL;
    if (!qcow2_flush_metadata(s, error) || !qcow2_mark_dirty_during(s, error))
        return FALSE;
    guint64 l1_off = sn->l1_offset, l1_bytes = (guint64)sn->l1_size * 8;
    guint32 l1_size = sn->l1_size;
    /* Out of the table first; its references go afterwards, in QEMU's
     * order (the old table, the snapshot's clusters, its L1 table), so
     * that blkdebug's events fail the same steps. From here a failure
     * leaks clusters, nothing worse. */
    Qcow2Snapshot *removed = g_ptr_array_steal_index(s->snapshots, index);
    guint64 old, old_size;
    if (!write_new_table(s, &old, &old_size, error)) {
        g_ptr_array_insert(s->snapshots, (gint)index, removed);
        return FALSE;
    }
    qcow2_snapshot_free(removed);
    g_autoptr(GError) table_error = NULL;
    free_old_table(s, old, old_size, &table_error);
    g_autoptr(GError) local = NULL;
    if (!qcow2_flush_metadata(s, &local) || !qcow2_read_l1(s, l1_off, l1_size, &snl1, &local) ||
        !update_tree_refs(s, snl1, l1_size, -1, &local) ||
        !free_old_table(s, l1_off, l1_bytes, &local) || !qcow2_update_copied_flags(s, &local) ||
        !qcow2_end_dirty_during(s, &local)) {
        vd_set_error(error, img, (VdError)local->code,
                     "snapshot deleted, but its clusters leak (check -r leaks frees them): "
                     "%s%s%sfreeing the snapshot's clusters failed: %s",
                     table_error != NULL ? "freeing the old snapshot table failed: " : "",
                     table_error != NULL ? table_error->message : "",
                     table_error != NULL ? "; " : "", local->message);
        return FALSE;
    }
    if (table_error != NULL) {
        vd_set_error(error, img, (VdError)table_error->code,
                     "snapshot deleted, but its clusters leak (check -r leaks frees them): "
                     "freeing the old snapshot table failed: %s",
                     table_error->message);
        return FALSE;
    }
    return TRUE;
}

gboolean qcow2_load_snapshot(VdImage *img, const char *name_or_id, GError **error)
{
    Qcow2State *s = img->priv;
    Qcow2Snapshot *sn = require_snapshot(s, name_or_id, FALSE, NULL, error);
    if (sn == NULL)
        return FALSE;
    g_autofree guint64 *snl1 = NULL;
    if (!qcow2_flush_metadata(s, error) ||
        !qcow2_read_l1(s, sn->l1_offset, sn->l1_size, &snl1, error))
        return FALSE;
    guint64 size = sn->has_disk_size ? sn->disk_size : img->size;
    guint64 span = qcow2_l2_span(s), needed = size / span + (size % span != 0);
    if (needed > sn->l1_size) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "snapshot '%s' has an L1 table too small for its size", sn->name);
        return FALSE;
    }
    s->snapshot_loaded = TRUE;
    g_free(s->l1);
    s->l1 = g_steal_pointer(&snl1);
    s->l1_size = sn->l1_size;
    s->l1_lost_from = G_MAXUINT32;
    s->l1_dirty_lo = G_MAXUINT32;
    s->l1_dirty_hi = 0;
    s->zbuf_entry = 0;
    img->size = size;
    return TRUE;
}
