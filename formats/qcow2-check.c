/* qcow2 consistency check and repair.
 *
 * Walks every structure that holds a cluster (header, L1/L2 tables of the
 * active state and of each snapshot, data clusters, the snapshot table,
 * the refcount table and blocks), counts references per cluster, and
 * compares with the stored refcounts: a stored count above the references
 * is a leak, below is corruption. Repair of leaks lowers counts; repair of
 * errors rebuilds the whole refcount structure from the references. The
 * counters mirror qemu-img check's JSON.
 */
#include "qcow2.h"

#include <string.h>
#include <unistd.h>

typedef struct {
    Qcow2State *s;
    VdCheckResult *res;
    guint32 *refs; /* references per cluster */
    guint32 *meta; /* of which from the refcount structure itself */
    guint64 nb;    /* clusters in the file */
    guint64 refcount_errors;
    guint64 flag_errors;
    guint64 next_contiguous;
} Check;

static void report(Check *c, gboolean corruption, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static void report(Check *c, gboolean corruption, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    char *msg = g_strdup_vprintf(fmt, args);
    va_end(args);
    /* A broken image can yield millions of messages; keep a readable
     * number. */
    if (c->res->messages->len < 1000)
        g_ptr_array_add(c->res->messages, msg);
    else
        g_free(msg);
    if (corruption)
        c->res->corruptions++;
}

/* Count a reference to every cluster [offset, offset+len) touches. */
static gboolean add_ref(Check *c, guint64 offset, guint64 len, gboolean meta, const char *what)
{
    if (len == 0)
        return TRUE;
    guint64 first = offset >> c->s->cluster_bits;
    guint64 last = (offset + len - 1) >> c->s->cluster_bits;
    if (last >= c->nb || offset + len < offset) {
        report(c, TRUE, "ERROR %s at offset 0x%" G_GINT64_MODIFIER "x is past the end of the file",
               what, offset);
        return FALSE;
    }
    for (guint64 i = first; i <= last; i++) {
        if (c->refs[i] < G_MAXUINT32)
            c->refs[i]++;
        if (meta)
            c->meta[i]++;
    }
    return TRUE;
}

/* What can be wrong with one data entry of an L2 table. */
enum {
    BAD_SUBCLUSTERS = 1 << 0, /* a subcluster both allocated and zero */
    BAD_COMPRESSED_COPIED = 1 << 1,
    BAD_COMPRESSED_DATA_FILE = 1 << 2,
    BAD_RESERVED = 1 << 3, /* reserved bits set */
    BAD_UNALIGNED = 1 << 4,
    BAD_PAST_EOF = 1 << 5,
};

/* Bits 1-8 and 56-61 are reserved; bit 0 too without zero flags. */
static guint64 reserved_bits(Qcow2State *s)
{
    return 0x3f000000000001feull | (s->version < 3 || s->ext_l2 ? QCOW2_OFLAG_ZERO : 0);
}

static guint entry_problems(Check *c, guint64 entry, guint64 bitmap)
{
    Qcow2State *s = c->s;
    Qcow2ClusterType type = qcow2_cluster_type(s, entry);
    guint64 host = entry & QCOW2_OFFSET_MASK, clusters = c->nb << s->cluster_bits;
    guint bad = 0;
    if (s->ext_l2 && type != QCOW2_CL_COMPRESSED &&
        ((guint32)bitmap & (guint32)(bitmap >> 32)) != 0)
        bad |= BAD_SUBCLUSTERS;
    if (type == QCOW2_CL_COMPRESSED) {
        guint64 coff, clen;
        qcow2_compressed_range(s, entry, &coff, &clen);
        if (entry & QCOW2_OFLAG_COPIED)
            bad |= BAD_COMPRESSED_COPIED;
        if (s->data_file != NULL)
            bad |= BAD_COMPRESSED_DATA_FILE;
        else if (coff + clen > clusters || coff + clen < coff)
            bad |= BAD_PAST_EOF;
    } else if (type == QCOW2_CL_NORMAL || type == QCOW2_CL_ZERO_ALLOC) {
        if (entry & reserved_bits(s))
            bad |= BAD_RESERVED;
        if ((host & (s->cluster_size - 1)) != 0)
            bad |= BAD_UNALIGNED;
        else if (s->data_file == NULL && host + s->cluster_size > clusters)
            bad |= BAD_PAST_EOF;
    }
    return bad;
}

static void check_data_entry(Check *c, guint64 entry, guint64 bitmap, guint64 guest,
                             gboolean active)
{
    Qcow2State *s = c->s;
    Qcow2ClusterType type = qcow2_cluster_type(s, entry);
    guint64 host = entry & QCOW2_OFFSET_MASK;
    guint bad = entry_problems(c, entry, bitmap);
    if (bad & BAD_SUBCLUSTERS)
        report(c, TRUE,
               "ERROR invalid subcluster bitmap for guest offset 0x%" G_GINT64_MODIFIER "x", guest);
    switch (type) {
    case QCOW2_CL_COMPRESSED: {
        guint64 coff, clen;
        qcow2_compressed_range(s, entry, &coff, &clen);
        if (bad & BAD_COMPRESSED_COPIED)
            report(c, TRUE,
                   "ERROR compressed cluster for guest offset 0x%" G_GINT64_MODIFIER
                   "x has OFLAG_COPIED set",
                   guest);
        if (bad & BAD_COMPRESSED_DATA_FILE)
            report(c, TRUE, "ERROR compressed cluster in an image with a data file");
        else
            add_ref(c, coff, clen, FALSE, "compressed cluster");
        if (active) {
            c->res->compressed_clusters++;
            c->res->allocated_clusters++;
            c->res->fragmented_clusters++; /* as qemu-img counts them */
        }
        break;
    }
    case QCOW2_CL_NORMAL:
    case QCOW2_CL_ZERO_ALLOC: {
        if (bad & BAD_RESERVED)
            report(c, TRUE,
                   "ERROR L2 entry for guest offset 0x%" G_GINT64_MODIFIER
                   "x has reserved bits set: 0x%" G_GINT64_MODIFIER "x",
                   guest, entry);
        if (bad & BAD_UNALIGNED) {
            report(c, TRUE,
                   "ERROR unaligned offset in L2 entry for guest offset 0x%" G_GINT64_MODIFIER
                   "x: 0x%" G_GINT64_MODIFIER "x",
                   guest, host);
            break;
        }
        if (s->data_file == NULL)
            add_ref(c, host, s->cluster_size, FALSE, "data cluster");
        if (active) {
            c->res->allocated_clusters++;
            if (c->next_contiguous != 0 && host != c->next_contiguous)
                c->res->fragmented_clusters++;
            c->next_contiguous = host + s->cluster_size;
        }
        break;
    }
    default:
        break;
    }
}

static void check_l1_tree(Check *c, const guint64 *l1, guint32 size, gboolean active)
{
    Qcow2State *s = c->s;
    for (guint32 i = 0; i < size; i++) {
        guint64 off = l1[i] & QCOW2_OFFSET_MASK;
        if (off == 0 && l1[i] != 0)
            report(c, TRUE,
                   "ERROR L1 entry %u has flags set but no L2 table (0x%" G_GINT64_MODIFIER "x)", i,
                   l1[i]);
        if (off == 0)
            continue;
        if ((off & (s->cluster_size - 1)) != 0) {
            report(c, TRUE, "ERROR L2 table for L1 entry %u is not cluster aligned", i);
            continue;
        }
        g_autofree char *what = g_strdup_printf("L2 table for L1 entry %u", i);
        if (!add_ref(c, off, s->cluster_size, FALSE, what))
            continue;
        guint8 *t;
        g_autoptr(GError) local = NULL;
        if (!qcow2_load_l2(s, off, "L1 entry", i, &t, &local)) {
            report(c, FALSE, "ERROR %s", local->message);
            c->res->check_errors++;
            continue;
        }
        g_autofree guint8 *copy = g_memdup2(t, s->cluster_size);
        qcow2_cache_put(s->l2_cache, t);
        for (guint64 j = 0; j < s->l2_entries; j++) {
            guint64 bitmap, e = qcow2_l2_get(s, copy, j, &bitmap);
            guint64 guest = (((guint64)i << s->l2_bits) + j) << s->cluster_bits;
            check_data_entry(c, e, bitmap, guest, active);
        }
    }
}

static void check_snapshots(Check *c)
{
    Qcow2State *s = c->s;
    add_ref(c, s->snapshots_offset, s->snapshots_size, FALSE, "snapshot table");
    for (guint i = 0; i < s->snapshots->len; i++) {
        Qcow2Snapshot *sn = s->snapshots->pdata[i];
        g_autofree guint64 *l1 = NULL;
        g_autoptr(GError) local = NULL;
        if (!add_ref(c, sn->l1_offset, (guint64)sn->l1_size * 8, FALSE, "snapshot L1 table") ||
            !qcow2_read_l1(s, sn->l1_offset, sn->l1_size, &l1, &local)) {
            if (local != NULL)
                report(c, TRUE, "ERROR snapshot '%s': %s", sn->name, local->message);
            continue;
        }
        check_l1_tree(c, l1, sn->l1_size, FALSE);
    }
}

/* Persistent dirty bitmaps: the directory, tables and data clusters.
 * Only when the autoclear bit says the extension is consistent. */
static void check_bitmaps(Check *c)
{
    Qcow2State *s = c->s;
    if (s->nb_bitmaps == 0 || !(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
        return;
    g_autoptr(GPtrArray) list = NULL;
    g_autoptr(GError) local = NULL;
    if (!qcow2_bitmaps_read_directory(s, &list, &local) ||
        !add_ref(c, s->bitmap_dir_offset, s->bitmap_dir_size, FALSE, "bitmap directory")) {
        report(c, TRUE, "ERROR %s", local ? local->message : "the bitmap directory is invalid");
        return;
    }
    for (guint i = 0; i < list->len; i++) {
        guint64 toff, tbytes;
        qcow2_bitmap_table_range(list->pdata[i], &toff, &tbytes);
        if (tbytes == 0 || !add_ref(c, toff, tbytes, FALSE, "bitmap table"))
            continue;
        g_autofree guint8 *table = g_malloc(tbytes);
        if (!vd_file_pread(s->img->file, toff, table, tbytes, NULL))
            continue;
        for (guint64 j = 0; j < tbytes / 8; j++) {
            guint64 e = vd_be64(table + j * 8) & QCOW2_OFFSET_MASK;
            if (e != 0)
                add_ref(c, e, s->cluster_size, FALSE, "bitmap data");
        }
    }
}

/* The LUKS header and key material of an encrypted image. */
static void check_crypto_header(Check *c)
{
    Qcow2State *s = c->s;
    if (s->crypto_ext_offset != 0 && s->crypto_ext_length != 0 &&
        !add_ref(c, s->crypto_ext_offset, s->crypto_ext_length, FALSE, "encryption header"))
        report(c, TRUE, "ERROR the encryption header is invalid");
}

static void check_refcount_structure(Check *c)
{
    Qcow2State *s = c->s;
    add_ref(c, s->rt_offset, (guint64)s->rt_clusters * s->cluster_size, TRUE, "refcount table");
    for (guint64 i = 0; i < s->rt_entries; i++) {
        guint64 off = s->rt[i] & QCOW2_RT_OFFSET_MASK;
        if (s->rt[i] == 0)
            continue;
        if ((s->rt[i] & (s->cluster_size - 1)) != 0) {
            report(c, TRUE, "ERROR refcount block %" G_GUINT64_FORMAT " is not cluster aligned", i);
            c->refcount_errors++;
            continue;
        }
        if (!add_ref(c, off, s->cluster_size, TRUE, "refcount block"))
            c->refcount_errors++;
    }
}

/* Compare stored refcounts with the references. */
static void compare_refcounts(Check *c, guint64 *leaks_out)
{
    Qcow2State *s = c->s;
    guint64 end = c->nb, highest = 0;
    /* Refcount blocks past the end of the file may still count clusters. */
    for (guint64 i = 0; i < s->rt_entries; i++)
        if (s->rt[i] != 0)
            end = MAX(end, (i + 1) << s->rb_bits);
    *leaks_out = 0;
    for (guint64 i = 0; i < end; i++) {
        guint64 bi = i >> s->rb_bits, stored = 0;
        if (bi >= s->rt_entries || s->rt[bi] == 0) {
            if (i >= c->nb) {
                i = ((bi + 1) << s->rb_bits) - 1; /* skip the missing block */
                continue;
            }
        } else {
            g_autoptr(GError) local = NULL;
            if (!qcow2_get_refcount(s, i, &stored, &local)) {
                c->res->check_errors++;
                c->refcount_errors++;
                report(c, FALSE, "ERROR %s", local->message);
                i = ((bi + 1) << s->rb_bits) - 1;
                continue;
            }
        }
        guint64 want = i < c->nb ? c->refs[i] : 0;
        if (stored > 0 || want > 0)
            highest = i;
        if (stored == want)
            continue;
        if (stored < want) {
            report(c, TRUE,
                   "ERROR cluster %" G_GUINT64_FORMAT " refcount=%" G_GUINT64_FORMAT
                   " reference=%" G_GUINT64_FORMAT,
                   i, stored, want);
            c->refcount_errors++;
        } else {
            report(c, FALSE,
                   "Leaked cluster %" G_GUINT64_FORMAT " refcount=%" G_GUINT64_FORMAT
                   " reference=%" G_GUINT64_FORMAT,
                   i, stored, want);
            c->res->leaks++;
            (*leaks_out)++;
        }
    }
    c->res->image_end_offset = (highest + 1) << s->cluster_bits;
}

/* The COPIED flag of active tables must say "refcount is exactly one". */
static void check_copied_flags(Check *c)
{
    Qcow2State *s = c->s;
    if (s->data_file != NULL)
        return;
    for (guint32 i = 0; i < s->l1_size; i++) {
        guint64 off = s->l1[i] & QCOW2_OFFSET_MASK, rc;
        if (off == 0 || (off & (s->cluster_size - 1)) != 0 ||
            !qcow2_get_refcount(s, off >> s->cluster_bits, &rc, NULL))
            continue;
        if ((rc == 1) != ((s->l1[i] & QCOW2_OFLAG_COPIED) != 0)) {
            report(c, TRUE,
                   "ERROR OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%" G_GINT64_MODIFIER
                   "x refcount=%" G_GUINT64_FORMAT,
                   i, s->l1[i], rc);
            c->flag_errors++;
        }
        guint8 *t;
        if (!qcow2_in_file(s, off, s->cluster_size) ||
            !qcow2_load_l2(s, off, "L1 entry", i, &t, NULL))
            continue;
        g_autofree guint8 *copy = g_memdup2(t, s->cluster_size);
        qcow2_cache_put(s->l2_cache, t);
        for (guint64 j = 0; j < s->l2_entries; j++) {
            guint64 bitmap, e = qcow2_l2_get(s, copy, j, &bitmap);
            Qcow2ClusterType type = qcow2_cluster_type(s, e);
            guint64 host = e & QCOW2_OFFSET_MASK;
            if ((type != QCOW2_CL_NORMAL && type != QCOW2_CL_ZERO_ALLOC) ||
                (host & (s->cluster_size - 1)) != 0 ||
                !qcow2_get_refcount(s, host >> s->cluster_bits, &rc, NULL))
                continue;
            if ((rc == 1) != ((e & QCOW2_OFLAG_COPIED) != 0)) {
                report(c, TRUE,
                       "ERROR OFLAG_COPIED data cluster: l2_entry=%" G_GINT64_MODIFIER
                       "x refcount=%" G_GUINT64_FORMAT,
                       e, rc);
                c->flag_errors++;
            }
        }
    }
}

/* ----- -r all: the active L1 and L2 entries -----
 * An entry that points nowhere valid cannot be trusted: its mapping is
 * dropped, so the guest range reads as zeroes (where the format can say so;
 * a version 2 image reads the backing file there), and the refcount rebuild
 * then frees what it pointed to. Flags that must not be set are cleared.
 * Tables a snapshot shares are fixed for it as well: it saw the same bad
 * entry. */

/* The "reads as zeroes, nothing allocated" form of an entry. */
static void dropped_entry(Qcow2State *s, guint64 *entry, guint64 *bitmap, guint64 guest)
{
    *entry = s->version >= 3 && !s->ext_l2 ? QCOW2_OFLAG_ZERO : 0;
    *bitmap = s->ext_l2 ? 0xffffffff00000000ull : 0;
    qcow2_bitmaps_mark(s, guest, s->cluster_size); /* the guest sees new content */
}

/* Fix one entry; TRUE when it changed. */
static gboolean repair_entry(Check *c, guint64 *entry, guint64 *bitmap, guint64 guest,
                             GPtrArray *notes)
{
    Qcow2State *s = c->s;
    guint bad = entry_problems(c, *entry, *bitmap);
    if (bad == 0)
        return FALSE;
    if (bad & (BAD_UNALIGNED | BAD_PAST_EOF | BAD_COMPRESSED_DATA_FILE)) {
        g_ptr_array_add(notes,
                        g_strdup_printf("Repairing L2 entry for guest offset 0x%" G_GINT64_MODIFIER
                                        "x: the cluster it names is invalid; it now reads "
                                        "as zeroes",
                                        guest));
        dropped_entry(s, entry, bitmap, guest);
        return TRUE;
    }
    if (bad & BAD_COMPRESSED_COPIED)
        *entry &= ~QCOW2_OFLAG_COPIED;
    if (bad & BAD_RESERVED)
        *entry &= ~reserved_bits(s);
    if (bad & BAD_SUBCLUSTERS) /* a subcluster marked zero reads as zero */
        *bitmap &= ~(*bitmap >> 32);
    g_ptr_array_add(notes,
                    g_strdup_printf("Repairing L2 entry for guest offset 0x%" G_GINT64_MODIFIER
                                    "x: invalid flags cleared",
                                    guest));
    return TRUE;
}

static gboolean repair_l2_table(Check *c, guint32 index, guint64 off, GPtrArray *notes,
                                GError **error)
{
    Qcow2State *s = c->s;
    guint8 *t;
    if (!qcow2_load_l2(s, off, "L1 entry", index, &t, error))
        return FALSE;
    gboolean changed = FALSE;
    for (guint64 j = 0; j < s->l2_entries; j++) {
        guint64 bitmap, e = qcow2_l2_get(s, t, j, &bitmap);
        guint64 guest = (((guint64)index << s->l2_bits) + j) << s->cluster_bits;
        if (repair_entry(c, &e, &bitmap, guest, notes)) {
            qcow2_l2_set(s, t, j, e, bitmap);
            changed = TRUE;
        }
    }
    if (changed)
        qcow2_cache_mark_dirty(s->l2_cache, t);
    qcow2_cache_put(s->l2_cache, t);
    return TRUE;
}

static gboolean repair_entries(Check *c, GPtrArray *notes, GError **error)
{
    Qcow2State *s = c->s;
    for (guint32 i = 0; i < s->l1_size; i++) {
        guint64 off = s->l1[i] & QCOW2_OFFSET_MASK;
        if (s->l1[i] == 0)
            continue;
        gboolean valid = off != 0 && (off & (s->cluster_size - 1)) == 0 &&
                         off + s->cluster_size <= c->nb << s->cluster_bits;
        if (!valid) {
            g_ptr_array_add(notes, g_strdup_printf("Repairing L1 entry %u: its L2 table is "
                                                   "invalid; the range it mapped is unallocated",
                                                   i));
            s->l1[i] = 0;
            qcow2_bitmaps_mark(s, (guint64)i << (s->l2_bits + s->cluster_bits), qcow2_l2_span(s));
            if (!qcow2_write_l1_entries(s, i, i, error))
                return FALSE;
            continue;
        }
        if (!repair_l2_table(c, i, off, notes, error))
            return FALSE;
    }
    return qcow2_flush_metadata(s, error);
}

static gboolean run_pass(Check *c, guint64 *leaks, GError **error)
{
    Qcow2State *s = c->s;
    if (!qcow2_refresh_file_size(s, error))
        return FALSE;
    c->nb = qcow2_align_up(s->file_size, s->cluster_size) >> s->cluster_bits;
    g_free(c->refs);
    g_free(c->meta);
    /* Two counters per cluster of the file: a sparse file can claim more
     * clusters than memory holds, which is an error, not a crash. */
    guint64 memory = (guint64)sysconf(_SC_PHYS_PAGES) * (guint64)sysconf(_SC_PAGESIZE);
    c->refs = c->nb < memory / 8 ? g_try_new0(guint32, MAX(c->nb, 1)) : NULL;
    c->meta = c->refs != NULL ? g_try_new0(guint32, MAX(c->nb, 1)) : NULL;
    if (c->meta == NULL) {
        vd_set_error(error, s->img, VD_ERROR_NOT_SUPPORTED,
                     "is too large to check: its file spans %" G_GUINT64_FORMAT
                     " clusters, and counting their references needs more memory than there is",
                     c->nb);
        return FALSE;
    }
    c->next_contiguous = 0;
    add_ref(c, 0, s->cluster_size, FALSE, "header");
    if (s->l1_size > 0)
        add_ref(c, s->l1_offset, (guint64)s->l1_size * 8, FALSE, "L1 table");
    check_l1_tree(c, s->l1, s->l1_size, TRUE);
    check_snapshots(c);
    check_bitmaps(c);
    check_crypto_header(c);
    check_refcount_structure(c);
    compare_refcounts(c, leaks);
    check_copied_flags(c);
    guint64 cs = s->cluster_size;
    c->res->total_clusters = (s->img->size + cs - 1) / cs;
    return TRUE;
}

static gboolean fix_leaks(Check *c, GError **error)
{
    Qcow2State *s = c->s;
    for (guint64 i = 0; i < c->nb; i++) {
        guint64 stored;
        if (!qcow2_get_refcount(s, i, &stored, error))
            return FALSE;
        if (stored > c->refs[i] && !qcow2_update_refcount(s, i << s->cluster_bits, 1,
                                                          -(gint64)(stored - c->refs[i]), error))
            return FALSE;
    }
    /* Leaked counts past the end of the file. */
    for (guint64 bi = 0; bi < s->rt_entries; bi++) {
        if (s->rt[bi] == 0)
            continue;
        for (guint64 i = MAX(c->nb, bi << s->rb_bits); i < (bi + 1) << s->rb_bits; i++) {
            guint64 stored;
            if (!qcow2_get_refcount(s, i, &stored, error))
                return FALSE;
            if (stored > 0 &&
                !qcow2_update_refcount(s, i << s->cluster_bits, 1, -(gint64)stored, error))
                return FALSE;
        }
    }
    return qcow2_cache_flush(s, s->rb_cache, error);
}

static gboolean rebuild(Check *c, GError **error)
{
    /* The old refcount structure is dropped, so its clusters are not
     * counted in the new one. */
    for (guint64 i = 0; i < c->nb; i++)
        c->refs[i] -= c->meta[i];
    return qcow2_rebuild_refcounts(c->s, c->refs, c->nb, error);
}

static void reset_counters(VdCheckResult *res)
{
    res->corruptions = res->leaks = res->check_errors = 0;
    res->allocated_clusters = res->fragmented_clusters = res->compressed_clusters = 0;
    g_ptr_array_set_size(res->messages, 0);
}

gboolean qcow2_check(VdImage *img, VdCheckRepair repair, VdCheckResult *res, GError **error)
{
    Qcow2State *s = img->priv;
    if (s->snapshot_loaded) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED, "cannot check while a snapshot is loaded");
        return FALSE;
    }
    if (res->messages == NULL)
        res->messages = g_ptr_array_new_with_free_func(g_free);
    if (img->read_write && !qcow2_flush_metadata(s, error))
        return FALSE;
    Check c = { .s = s, .res = res };
    guint64 leaks;
    gboolean ok = run_pass(&c, &leaks, error);
    gboolean repaired = FALSE;
    guint64 corruptions = res->corruptions;
    g_autoptr(GPtrArray) notes = g_ptr_array_new_with_free_func(g_free);
    if (ok && (repair & VD_CHECK_REPAIR_ERRORS) && corruptions > 0 && img->read_write &&
        !s->opening_dirty) {
        /* Entries first: the references they make are what the refcounts
         * are then rebuilt from. */
        ok = repair_entries(&c, notes, error);
        if (ok && notes->len > 0) {
            reset_counters(res);
            c.refcount_errors = c.flag_errors = 0;
            ok = run_pass(&c, &leaks, error);
            repaired = TRUE;
        }
    }
    guint64 flag_errors = c.flag_errors;
    if (ok && (repair & VD_CHECK_REPAIR_ERRORS) && c.refcount_errors > 0) {
        ok = rebuild(&c, error);
        repaired = TRUE;
    } else if (ok && (repair & (VD_CHECK_REPAIR_LEAKS | VD_CHECK_REPAIR_ERRORS)) && leaks > 0) {
        ok = fix_leaks(&c, error);
        repaired = TRUE;
    }
    /* Refcount repair can change which clusters have refcount one. */
    if (ok && (repair & VD_CHECK_REPAIR_ERRORS) && (flag_errors > 0 || repaired)) {
        ok = qcow2_update_copied_flags(s, error) && qcow2_flush_metadata(s, error);
        repaired = TRUE;
    }
    if (ok && repaired) {
        /* Report what is left, as qemu-img does, and what went away. */
        guint64 old_leaks = res->leaks;
        reset_counters(res);
        c.refcount_errors = c.flag_errors = 0;
        ok = run_pass(&c, &leaks, error);
        res->leaks_fixed = old_leaks > res->leaks ? old_leaks - res->leaks : 0;
        res->corruptions_fixed =
            corruptions > res->corruptions ? corruptions - res->corruptions : 0;
        /* What was done, before what is left. */
        for (guint i = 0; i < notes->len; i++)
            g_ptr_array_insert(res->messages, (gint)i, g_strdup(notes->pdata[i]));
    }
    /* Repaired refcounts make the dirty and corrupt bits obsolete. */
    if (ok && img->read_write && (repair & VD_CHECK_REPAIR_ERRORS) && res->corruptions == 0 &&
        (s->incompat & (QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_DIRTY)) && !s->set_dirty) {
        ok = vd_file_sync(img->file, error);
        if (ok) {
            s->incompat &= ~(QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_DIRTY);
            ok = qcow2_write_header_field(s, QH_INCOMPAT, s->incompat, 8, error);
        }
    }
    g_free(c.refs);
    g_free(c.meta);
    return ok;
}
