/* qcow2 consistency check and repair.
 *
 * Walks every structure that holds a cluster (header, L1/L2 tables of the
 * active state and of each snapshot, data clusters, the snapshot table,
 * the refcount table and blocks), counts references per cluster, and
 * compares with the stored refcounts: a stored count above the references
 * is a leak, below is corruption. The passes, their order, what each finds
 * and the words it reports are qemu-img check's, so that a script reading
 * its output or exit code sees the same; repair of leaks lowers counts,
 * repair of errors fixes a count or, where a refcount is zero or the
 * refcount structure itself is damaged, rebuilds the whole structure from
 * the references. The counters mirror qemu-img check's JSON.
 */
#include "qcow2.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    Qcow2State *s;
    VdCheckResult *res;
    guint32 *refs; /* references per cluster */
    guint32 *meta; /* of which from the refcount structure itself */
    guint64 nb;    /* clusters counted: the file's, and a partial one past it */
    guint64 cap;   /* entries refs and meta have room for */
    gboolean rebuild;
    guint64 highest; /* the last cluster with a refcount or a reference */
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

/* Count a reference to every cluster [offset, offset+len) touches. As in
 * qemu, a range that ends less than a cluster past the end of the file is
 * counted (the file may end inside its last cluster; the count then covers
 * one more cluster), one that reaches further is a corruption. */
static gboolean add_ref(Check *c, guint64 offset, guint64 len, gboolean meta)
{
    Qcow2State *s = c->s;
    if (len == 0)
        return TRUE;
    if (offset + len < offset ||
        (offset + len > s->file_size && offset + len - s->file_size >= s->cluster_size)) {
        report(c, TRUE,
               "ERROR: counting reference for region exceeding the end of the file by one "
               "cluster or more: offset 0x%" G_GINT64_MODIFIER "x size 0x%" G_GINT64_MODIFIER "x",
               offset, len);
        return FALSE;
    }
    guint64 first = offset >> s->cluster_bits;
    guint64 last = (offset + len - 1) >> s->cluster_bits;
    if (last >= c->cap) {
        guint64 cap = last + 1;
        c->refs = g_renew(guint32, c->refs, cap);
        c->meta = g_renew(guint32, c->meta, cap);
        memset(c->refs + c->cap, 0, (cap - c->cap) * sizeof(guint32));
        memset(c->meta + c->cap, 0, (cap - c->cap) * sizeof(guint32));
        c->cap = cap;
    }
    c->nb = MAX(c->nb, last + 1);
    for (guint64 i = first; i <= last; i++) {
        /* As qemu counts: no more references than the refcount width
         * holds. A cluster with more needs wider refcounts (amend). */
        if (c->refs[i] >= s->refcount_max)
            report(c, TRUE,
                   "ERROR: overflow cluster offset=0x%" G_GINT64_MODIFIER "x\n"
                   "Use qemu-img amend to increase the refcount entry width or qemu-img convert "
                   "to create a clean copy if the image cannot be opened for writing",
                   i << s->cluster_bits);
        else if (c->refs[i] < G_MAXUINT32)
            c->refs[i]++;
        if (meta)
            c->meta[i]++;
    }
    return TRUE;
}

/* Read a table of one cluster; what lies past the end of the file reads as
 * zeroes, as qemu reads it. */
static gboolean read_table(Check *c, guint64 offset, guint8 *buf, GError **error)
{
    Qcow2State *s = c->s;
    guint64 have = offset < s->file_size ? MIN(s->file_size - offset, s->cluster_size) : 0;
    memset(buf + have, 0, s->cluster_size - have);
    return have == 0 || vd_file_pread(s->img->file, offset, buf, have, error);
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

/* A cluster that holds no data yet: a zero cluster with an offset, or
 * with subclusters one none of which is allocated. */
static gboolean preallocated(Qcow2State *s, guint64 entry, guint64 bitmap)
{
    return qcow2_cluster_type(s, entry) == QCOW2_CL_ZERO_ALLOC ||
           (s->ext_l2 && (guint32)bitmap == 0);
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
                   "ERROR: coffset=0x%" G_GINT64_MODIFIER
                   "x: copied flag must never be set for compressed clusters",
                   coff);
        if (bad & BAD_COMPRESSED_DATA_FILE)
            report(c, TRUE,
                   "ERROR compressed cluster %" G_GUINT64_FORMAT
                   " with data file, entry=0x%" G_GINT64_MODIFIER "x",
                   guest >> s->cluster_bits, entry);
        else
            add_ref(c, coff, clen, FALSE);
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
            report(c, TRUE, "ERROR found l2 entry with reserved bits set: %" G_GINT64_MODIFIER "x",
                   entry);
        if (bad & BAD_UNALIGNED)
            report(c, TRUE,
                   "ERROR offset=%" G_GINT64_MODIFIER "x: %s cluster is not properly aligned; "
                   "L2 entry corrupted.",
                   host, preallocated(s, entry, bitmap) ? "Preallocated" : "Data");
        /* An unaligned offset still holds the clusters it overlaps, as
         * qemu counts them. */
        if (s->data_file == NULL)
            add_ref(c, host, s->cluster_size, FALSE);
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
    g_autofree guint8 *table = g_malloc(s->cluster_size);
    for (guint32 i = 0; i < size; i++) {
        guint64 off = l1[i] & QCOW2_OFFSET_MASK;
        /* qemu reads the header as the table of such an entry. */
        if (off == 0 && l1[i] != 0)
            report(c, TRUE,
                   "ERROR L1 entry %u has flags set but no L2 table (0x%" G_GINT64_MODIFIER "x)", i,
                   l1[i]);
        if (off == 0)
            continue;
        add_ref(c, off, s->cluster_size, FALSE);
        if ((off & (s->cluster_size - 1)) != 0) {
            /* qemu goes on to read whatever lies there; nothing at an
             * unaligned offset is a table, so it is not read here. */
            report(c, TRUE,
                   "ERROR l2_offset=%" G_GINT64_MODIFIER
                   "x: Table is not cluster aligned; L1 entry corrupted",
                   off);
            continue;
        }
        g_autoptr(GError) local = NULL;
        if (!read_table(c, off, table, &local)) {
            report(c, FALSE, "ERROR reading L2 table at 0x%" G_GINT64_MODIFIER "x: %s", off,
                   local->message);
            c->res->check_errors++;
            continue;
        }
        /* Fragmentation is counted within each L2 table, as qemu-img
         * counts it: a cluster that does not follow the one before it in
         * the same table; the first of a table never counts. */
        c->next_contiguous = 0;
        for (guint64 j = 0; j < s->l2_entries; j++) {
            guint64 bitmap, e = qcow2_l2_get(s, table, j, &bitmap);
            guint64 guest = (((guint64)i << s->l2_bits) + j) << s->cluster_bits;
            check_data_entry(c, e, bitmap, guest, active);
        }
    }
}

static void check_snapshots(Check *c)
{
    Qcow2State *s = c->s;
    for (guint i = 0; i < s->snapshots->len; i++) {
        Qcow2Snapshot *sn = s->snapshots->pdata[i];
        g_autofree guint64 *l1 = NULL;
        g_autoptr(GError) local = NULL;
        /* A damaged entry's table is not followed, in qemu's words. */
        if ((sn->l1_offset & (s->cluster_size - 1)) != 0) {
            report(c, TRUE,
                   "ERROR snapshot %s (%s) l1_offset=0x%" G_GINT64_MODIFIER
                   "x: L1 table is not cluster aligned; snapshot table entry corrupted",
                   sn->id, sn->name, sn->l1_offset);
            continue;
        }
        if ((guint64)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
            report(c, TRUE,
                   "ERROR snapshot %s (%s) l1_size=0x%x: L1 table is too large; snapshot table "
                   "entry corrupted",
                   sn->id, sn->name, sn->l1_size);
            continue;
        }
        if (!add_ref(c, sn->l1_offset, (guint64)sn->l1_size * 8, FALSE))
            continue;
        if (!qcow2_read_l1(s, sn->l1_offset, sn->l1_size, &l1, &local)) {
            report(c, TRUE, "ERROR snapshot %s (%s): %s", sn->id, sn->name, local->message);
            continue;
        }
        check_l1_tree(c, l1, sn->l1_size, FALSE);
    }
    add_ref(c, s->snapshots_offset, s->snapshots_size, FALSE);
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
        !add_ref(c, s->bitmap_dir_offset, s->bitmap_dir_size, FALSE)) {
        report(c, TRUE, "ERROR %s", local ? local->message : "the bitmap directory is invalid");
        return;
    }
    for (guint i = 0; i < list->len; i++) {
        guint64 toff, tbytes;
        qcow2_bitmap_table_range(list->pdata[i], &toff, &tbytes);
        if (tbytes == 0 || !add_ref(c, toff, tbytes, FALSE))
            continue;
        g_autofree guint8 *table = g_malloc(tbytes);
        if (!vd_file_pread(s->img->file, toff, table, tbytes, NULL))
            continue;
        for (guint64 j = 0; j < tbytes / 8; j++) {
            guint64 e = vd_be64(table + j * 8) & QCOW2_OFFSET_MASK;
            if (e != 0)
                add_ref(c, e, s->cluster_size, FALSE);
        }
    }
}

/* The LUKS header and key material of an encrypted image. */
static void check_crypto_header(Check *c)
{
    Qcow2State *s = c->s;
    if (s->crypto_ext_offset != 0 && s->crypto_ext_length != 0 &&
        !add_ref(c, s->crypto_ext_offset, s->crypto_ext_length, FALSE))
        return;
}

/* The refcount blocks: each must be where a cluster can be, and counted
 * once (by the table) when the blocks before it have been counted. */
static void check_refcount_blocks(Check *c, VdCheckRepair fix)
{
    Qcow2State *s = c->s;
    guint64 file_clusters = qcow2_align_up(s->file_size, s->cluster_size) >> s->cluster_bits;
    for (guint64 i = 0; i < s->rt_entries; i++) {
        guint64 off = s->rt[i] & QCOW2_RT_OFFSET_MASK, cluster = off >> s->cluster_bits;
        if ((s->rt[i] & ~QCOW2_RT_OFFSET_MASK) != 0) {
            report(c, TRUE,
                   "ERROR refcount table entry %" G_GUINT64_FORMAT " has reserved bits set", i);
            c->rebuild = TRUE;
            continue;
        }
        if ((off & (s->cluster_size - 1)) != 0) {
            report(c, TRUE,
                   "ERROR refcount block %" G_GUINT64_FORMAT
                   " is not cluster aligned; refcount table entry corrupted",
                   i);
            c->rebuild = TRUE;
            continue;
        }
        if (off != 0 && cluster >= file_clusters) {
            report(c, TRUE, "%s refcount block %" G_GUINT64_FORMAT " is outside image",
                   (fix & VD_CHECK_REPAIR_ERRORS) ? "Repairing" : "ERROR", i);
            if (!(fix & VD_CHECK_REPAIR_ERRORS))
                continue;
            /* As qemu: the file grows to hold the block (which then reads
             * as zeroes and is counted below); where it cannot, the
             * structure is rebuilt. Not by more than 1 TiB: a block that
             * far is damage, not a file cut short. */
            g_autoptr(GError) local = NULL;
            if (off - s->file_size > (G_GUINT64_CONSTANT(1) << 40)) {
                /* qemu's words: past its largest offset, or what a file
                 * system says of such a size */
                int err = off > (guint64)G_MAXINT64 - s->cluster_size ? EINVAL : EFBIG;
                g_set_error(&local, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "%s", g_strerror(err));
            } else if (vd_file_truncate(s->img->file, off + s->cluster_size, &local) &&
                       qcow2_refresh_file_size(s, &local)) {
                c->res->corruptions--;
                c->res->corruptions_fixed++;
                file_clusters = cluster + 1;
            }
            if (local != NULL) {
                report(c, FALSE, "ERROR could not resize image: %s", local->message);
                c->rebuild = TRUE;
                continue;
            }
        }
        if (off == 0)
            continue;
        add_ref(c, off, s->cluster_size, TRUE);
        if (c->refs[cluster] != 1) {
            report(c, TRUE, "ERROR refcount block %" G_GUINT64_FORMAT " refcount=%u", i,
                   c->refs[cluster]);
            c->rebuild = TRUE;
        }
    }
}

/* Compare stored refcounts with the references, over the clusters of the
 * file (a count past its end is not looked at, as in qemu). With fix, a
 * leak or a count too low (not zero) is set right and counted as fixed;
 * a count of zero for a cluster in use asks for a rebuild. */
static void compare_refcounts(Check *c, VdCheckRepair fix)
{
    Qcow2State *s = c->s;
    c->highest = 0;
    for (guint64 i = 0; i < c->nb; i++) {
        guint64 stored = 0, bi = i >> s->rb_bits;
        g_autoptr(GError) local = NULL;
        /* A block wholly past the end of a truncated file counts nothing,
         * as qemu reads it (zeroes). */
        guint64 rb = bi < s->rt_entries ? s->rt[bi] & QCOW2_RT_OFFSET_MASK : 0;
        gboolean lost = rb != 0 && (rb & (s->cluster_size - 1)) == 0 && rb >= s->file_size;
        if (!lost && !qcow2_get_refcount(s, i, &stored, &local)) {
            report(c, FALSE, "Can't get refcount for cluster %" G_GUINT64_FORMAT ": %s", i,
                   g_strerror(EIO));
            c->res->check_errors++;
            continue;
        }
        guint64 want = c->refs[i];
        if (stored > 0 || want > 0)
            c->highest = i;
        if (stored == want)
            continue;
        guint64 *fixed = NULL;
        if (stored == 0)
            c->rebuild = TRUE;
        else if (stored > want && (fix & VD_CHECK_REPAIR_LEAKS))
            fixed = &c->res->leaks_fixed;
        else if (stored < want && (fix & VD_CHECK_REPAIR_ERRORS))
            fixed = &c->res->corruptions_fixed;
        report(c, FALSE,
               "%s cluster %" G_GUINT64_FORMAT " refcount=%" G_GUINT64_FORMAT
               " reference=%" G_GUINT64_FORMAT,
               fixed != NULL   ? "Repairing"
               : stored < want ? "ERROR"
                               : "Leaked",
               i, stored, want);
        if (fixed != NULL) {
            g_autoptr(GError) update = NULL;
            if (qcow2_update_refcount(s, i << s->cluster_bits, 1, (gint64)want - (gint64)stored,
                                      &update)) {
                (*fixed)++;
                continue;
            }
            report(c, FALSE, "ERROR could not fix cluster %" G_GUINT64_FORMAT ": %s", i,
                   update->message);
        }
        if (stored < want)
            c->res->corruptions++;
        else
            c->res->leaks++;
    }
}

/* The COPIED flag of active tables must say "refcount is exactly one".
 * With fix, the flags are set right afterwards: with -r all always, with
 * -r leaks once nothing else is wrong (the leaks fixed, a flag is wrong
 * only because a refcount dropped to one), as in qemu. */
static void check_copied_flags(Check *c, VdCheckRepair fix, gboolean *repair)
{
    Qcow2State *s = c->s;
    if ((fix & VD_CHECK_REPAIR_LEAKS) && c->res->check_errors == 0 && c->res->corruptions == 0 &&
        c->res->leaks == 0)
        fix |= VD_CHECK_REPAIR_ERRORS;
    const char *what = (fix & VD_CHECK_REPAIR_ERRORS) ? "Repairing" : "ERROR";
    if (s->data_file != NULL)
        return;
    g_autofree guint8 *table = g_malloc(s->cluster_size);
    for (guint32 i = 0; i < s->l1_size; i++) {
        guint64 off = s->l1[i] & QCOW2_OFFSET_MASK, rc;
        if (off == 0 || (off & (s->cluster_size - 1)) != 0 ||
            !qcow2_get_refcount(s, off >> s->cluster_bits, &rc, NULL))
            continue;
        if ((rc == 1) != ((s->l1[i] & QCOW2_OFLAG_COPIED) != 0)) {
            report(c, FALSE,
                   "%s OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%" G_GINT64_MODIFIER
                   "x refcount=%" G_GUINT64_FORMAT,
                   what, i, s->l1[i], rc);
            if (fix & VD_CHECK_REPAIR_ERRORS) {
                c->res->corruptions_fixed++;
                *repair = TRUE;
            } else {
                c->res->corruptions++;
            }
        }
        if (!read_table(c, off, table, NULL))
            continue;
        for (guint64 j = 0; j < s->l2_entries; j++) {
            guint64 bitmap, e = qcow2_l2_get(s, table, j, &bitmap);
            Qcow2ClusterType type = qcow2_cluster_type(s, e);
            guint64 host = e & QCOW2_OFFSET_MASK;
            if ((type != QCOW2_CL_NORMAL && type != QCOW2_CL_ZERO_ALLOC) ||
                !qcow2_get_refcount(s, host >> s->cluster_bits, &rc, NULL))
                continue;
            if ((rc == 1) != ((e & QCOW2_OFLAG_COPIED) != 0)) {
                report(c, FALSE,
                       "%s OFLAG_COPIED data cluster: l2_entry=%" G_GINT64_MODIFIER
                       "x refcount=%" G_GUINT64_FORMAT,
                       what, e, rc);
                if (fix & VD_CHECK_REPAIR_ERRORS) {
                    c->res->corruptions_fixed++;
                    *repair = TRUE;
                } else {
                    c->res->corruptions++;
                }
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

/* An entry whose cluster is gone: nothing allocated, what it stored reads
 * as zeroes. */
static void dropped_entry(Qcow2State *s, guint64 *entry, guint64 *bitmap, guint64 guest)
{
    *entry = s->version >= 3 && !s->ext_l2 ? QCOW2_OFLAG_ZERO : 0;
    /* With subclusters only what was stored is lost: those subclusters
     * read as zeroes, the others as before (zero, or the backing file's). */
    *bitmap = s->ext_l2 ? ((*bitmap | *bitmap >> 32) & 0xffffffffull) << 32 : 0;
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
    if ((bad & BAD_UNALIGNED) && preallocated(s, *entry, *bitmap)) {
        /* What qemu repairs too, in its words. */
        g_ptr_array_add(notes, g_strdup_printf("Repairing offset=%" G_GINT64_MODIFIER
                                               "x: Preallocated cluster is not properly aligned; "
                                               "L2 entry corrupted.",
                                               (guint64)(*entry & QCOW2_OFFSET_MASK)));
        dropped_entry(s, entry, bitmap, guest);
        return TRUE;
    }
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

/* Counters for the clusters of the file as it is now. */
static gboolean prepare(Check *c, GError **error)
{
    Qcow2State *s = c->s;
    if (!qcow2_refresh_file_size(s, error))
        return FALSE;
    c->nb = qcow2_align_up(s->file_size, s->cluster_size) >> s->cluster_bits;
    g_clear_pointer(&c->refs, g_free);
    g_clear_pointer(&c->meta, g_free);
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
    c->cap = MAX(c->nb, 1);
    c->rebuild = FALSE;
    c->next_contiguous = 0;
    return TRUE;
}

/* Count the references of every structure, in qemu's order. */
static void calculate(Check *c, VdCheckRepair fix)
{
    Qcow2State *s = c->s;
    VdCheckResult *res = c->res;
    res->allocated_clusters = res->fragmented_clusters = res->compressed_clusters = 0;
    add_ref(c, 0, s->cluster_size, FALSE);
    add_ref(c, s->l1_offset, (guint64)s->l1_size * 8, FALSE);
    check_l1_tree(c, s->l1, s->l1_size, TRUE);
    check_snapshots(c);
    add_ref(c, s->rt_offset, (guint64)s->rt_clusters * s->cluster_size, TRUE);
    check_crypto_header(c);
    check_bitmaps(c);
    check_refcount_blocks(c, fix);
}

/* The new structure is written beside the old one, whose clusters it
 * counts as in use: a crash before the header names the new one leaves the
 * old one whole. recount then frees them, as qemu does. */
static gboolean rebuild(Check *c, GError **error)
{
    return qcow2_rebuild_refcounts(c->s, c->refs, c->nb, error);
}

/* After a rebuild: the references again, for what is left and where the
 * image ends. What the old refcount structure held is now leaked and
 * freed ("Repairing cluster N refcount=1 reference=0", as qemu-img says);
 * it is not counted as a repair, and what calculate finds again was
 * reported already. */
static gboolean recount(Check *c, GError **error)
{
    VdCheckResult *res = c->res;
    guint reported = res->messages->len;
    guint64 leaks_fixed = res->leaks_fixed;
    res->corruptions = res->leaks = 0;
    if (!prepare(c, error))
        return FALSE;
    calculate(c, VD_CHECK_REPAIR_NONE);
    g_ptr_array_set_size(res->messages, reported);
    compare_refcounts(c, VD_CHECK_REPAIR_LEAKS);
    res->leaks_fixed = leaks_fixed;
    return TRUE;
}

/* In a version 3 image every snapshot records the disk's size: an entry
 * whose extra data stops short of it is incomplete. Repairing writes the
 * table again with the image's size there, as qemu does. */
static gboolean check_snapshot_table(Check *c, VdCheckRepair fix, GError **error)
{
    Qcow2State *s = c->s;
    gboolean repair = (fix & VD_CHECK_REPAIR_ERRORS) != 0;
    guint64 incomplete = 0;
    for (guint i = 0; s->version >= 3 && i < s->snapshots->len; i++) {
        Qcow2Snapshot *sn = s->snapshots->pdata[i];
        if (sn->has_disk_size)
            continue;
        report(c, !repair, "%s snapshot table entry %u is incomplete",
               repair ? "Repairing" : "ERROR", i);
        incomplete++;
        sn->disk_size = s->img->size;
        sn->has_disk_size = repair;
    }
    if (!repair || incomplete == 0)
        return TRUE;
    if (!qcow2_snapshots_rewrite(s, error))
        return FALSE;
    c->res->corruptions_fixed += incomplete;
    return TRUE;
}

static gboolean check_and_fix(Check *c, VdCheckRepair fix, GError **error)
{
    Qcow2State *s = c->s;
    VdCheckResult *res = c->res;
    gboolean fix_flags = FALSE;

    if (!check_snapshot_table(c, fix, error))
        return FALSE;

    /* Entries that point nowhere valid first: the references they make are
     * what the refcounts are then compared with. */
    if ((fix & VD_CHECK_REPAIR_ERRORS) && !s->opening_dirty) {
        g_autoptr(GPtrArray) notes = g_ptr_array_new_with_free_func(g_free);
        if (!prepare(c, error) || !repair_entries(c, notes, error))
            return FALSE;
        for (guint i = 0; i < notes->len; i++)
            report(c, FALSE, "%s", (const char *)notes->pdata[i]);
        res->corruptions_fixed += notes->len;
    }
    if (!prepare(c, error))
        return FALSE;
    calculate(c, fix);
    guint64 corruptions = res->corruptions, leaks = res->leaks;
    compare_refcounts(c, VD_CHECK_REPAIR_NONE);
    if (c->rebuild && (fix & VD_CHECK_REPAIR_ERRORS)) {
        report(c, FALSE, "Rebuilding refcount structure");
        res->corruptions_fixed += res->corruptions;
        res->leaks_fixed += res->leaks;
        if (!rebuild(c, error) || !recount(c, error))
            return FALSE;
    } else if (fix != VD_CHECK_REPAIR_NONE) {
        if (c->rebuild) {
            report(c, FALSE, "ERROR need to rebuild refcount structures");
            res->check_errors++;
            g_set_error(error, VD_ERROR, VD_ERROR_CORRUPT,
                        "Check failed: the refcount structure must be rebuilt, which -r all "
                        "does");
            return FALSE;
        }
        if (res->corruptions != corruptions || res->leaks != leaks) {
            res->corruptions = corruptions;
            res->leaks = leaks;
            compare_refcounts(c, fix);
        }
    }
    check_copied_flags(c, fix, &fix_flags);
    /* Fixed counts can change which clusters have refcount one. */
    if (fix_flags && !qcow2_update_copied_flags(s, error))
        return FALSE;
    if (fix != VD_CHECK_REPAIR_NONE && !qcow2_flush_metadata(s, error))
        return FALSE;
    res->image_end_offset = (c->highest + 1) << s->cluster_bits;
    res->total_clusters = qcow2_align_up(s->img->size, s->cluster_size) >> s->cluster_bits;
    return TRUE;
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
    VdCheckRepair fix = img->read_write ? repair : VD_CHECK_REPAIR_NONE;
    gboolean ok = check_and_fix(&c, fix, error);
    /* Repaired refcounts make the dirty and corrupt bits obsolete. */
    if (ok && (fix & VD_CHECK_REPAIR_ERRORS) && res->corruptions == 0 &&
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
