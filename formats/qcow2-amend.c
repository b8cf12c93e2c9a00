/* qcow2 amend (qemu-img amend -o): the version (compat 0.10 and 1.1), lazy
 * refcounts, the refcount width, the name of the external data file, the
 * virtual size, and the LUKS key slots (qcow2-crypto.c), with the
 * refusals of qemu-img 7.2 in its words.
 *
 * A downgrade to version 2 rewrites what version 2 cannot say: zero
 * clusters become unallocated (no backing file), explicit zeroes in a new
 * cluster (a backing file shows through unallocated ones) or zeroes in
 * their preallocated cluster, in the active L1 table and in every
 * snapshot's. The header is then rewritten as qemu writes it, so an image
 * amended by vdisk has the bytes of one amended by qemu-img.
 */
#include "qcow2.h"

#include <string.h>

/* What amend changes; the LUKS slot options are qcow2-crypto.c's. */
static const char *const amend_keys[] = {
    "compat",       "lazy_refcounts", "refcount_bits", "data_file", "data_file_raw",
    "backing_file", "backing_fmt",    "size",          NULL,
};
static const char *const slot_keys[] = {
    "encrypt.keyslot",    "encrypt.state",     "encrypt.new-secret",
    "encrypt.old-secret", "encrypt.iter-time", NULL,
};

/* What only create takes. */
static const char *const create_only_keys[] = {
    "cluster_size",
    "preallocation",
    "compression_type",
    "extended_l2",
    "encryption",
    "encrypt.format",
    "encrypt.key-secret",
    "encrypt.cipher-alg",
    "encrypt.cipher-mode",
    "encrypt.ivgen-alg",
    "encrypt.ivgen-hash-alg",
    "encrypt.hash-alg",
    NULL,
};

typedef struct {
    int version;        /* 0: unchanged */
    int lazy;           /* -1 unchanged, else 0 or 1 */
    int refcount_order; /* -1 unchanged */
    const char *data_file;
    int data_file_raw; /* -1 unchanged */
    gboolean has_size;
    guint64 size;
    gboolean slots; /* encrypt.* key slot options */
} AmendPlan;

static gboolean in_list(const char *const *list, const char *key)
{
    for (guint i = 0; list[i] != NULL; i++)
        if (g_str_equal(list[i], key))
            return TRUE;
    return FALSE;
}

/* qemu-img's amend errors name no file (there is one), nor do these. */
static gboolean fail(VdImage *img, int code, GError **error, const char *text)
{
    g_set_error_literal(error, VD_ERROR, code, text);
    return FALSE;
}

/* Every key is one amend takes; options only create takes are refused as
 * qemu-img refuses them. */
static gboolean check_keys(VdImage *img, VdOptions *opts, AmendPlan *plan, GError **error)
{
    g_autoptr(GPtrArray) keys = vd_options_keys(opts);
    for (guint i = 0; i < keys->len; i++) {
        const char *key = keys->pdata[i];
        if (in_list(amend_keys, key))
            continue;
        if (in_list(slot_keys, key)) {
            plan->slots = TRUE;
            continue;
        }
        if (in_list(create_only_keys, key))
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "Invalid parameter '%s'\nThis option is only supported for image "
                        "creation",
                        key);
        else
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "Invalid parameter '%s'", key);
        return FALSE;
    }
    return TRUE;
}

static gboolean parse_plan(VdImage *img, Qcow2State *s, VdOptions *opts, AmendPlan *plan,
                           GError **error)
{
    static const char *const versions[] = { "0.10", "v2", "1.1", "v3", NULL };
    *plan = (AmendPlan){ .lazy = -1, .refcount_order = -1, .data_file_raw = -1 };
    if (!check_keys(img, opts, plan, error))
        return FALSE;
    /* Naming the backing file and format it has is no change. */
    const char *backing = vd_options_get(opts, "backing_file");
    const char *backing_fmt = vd_options_get(opts, "backing_fmt");
    if ((backing != NULL || backing_fmt != NULL) &&
        (g_strcmp0(backing, img->backing_name) != 0 ||
         g_strcmp0(backing_fmt, img->backing_format) != 0))
        return fail(img, VD_ERROR_NOT_SUPPORTED, error,
                    "Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.");
    const char *compat = vd_options_get(opts, "compat");
    if (compat != NULL) {
        int i;
        for (i = 0; versions[i] != NULL && !g_str_equal(versions[i], compat); i++)
            ;
        if (versions[i] == NULL) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "Unknown compatibility level %s", compat);
            return FALSE;
        }
        plan->version = i < 2 ? 2 : 3;
    }
    gboolean lazy;
    if (vd_options_get(opts, "lazy_refcounts") != NULL) {
        if (!vd_option_bool(opts, "lazy_refcounts", FALSE, &lazy, error))
            return FALSE;
        plan->lazy = lazy;
    }
    const char *bits = vd_options_get(opts, "refcount_bits");
    if (bits != NULL) {
        guint64 n = 0;
        if (!g_ascii_string_to_unsigned(bits, 10, 1, 64, &n, NULL) || (n & (n - 1)) != 0)
            return fail(img, VD_ERROR_INVALID_ARGUMENT, error,
                        "Refcount width must be a power of two and may not exceed 64 bits");
        plan->refcount_order = g_bit_nth_lsf(n, -1);
    }
    if (vd_options_get(opts, "size") != NULL) {
        if (!vd_option_size(opts, "size", 0, &plan->size, error))
            return FALSE;
        plan->has_size = TRUE;
    }
    plan->data_file = vd_options_get(opts, "data_file");
    gboolean raw;
    if (vd_options_get(opts, "data_file_raw") != NULL) {
        if (!vd_option_bool(opts, "data_file_raw", FALSE, &raw, error))
            return FALSE;
        plan->data_file_raw = raw;
    }

    int version = plan->version != 0 ? plan->version : s->version;
    if (version < 3 && plan->lazy == 1)
        return fail(img, VD_ERROR_INVALID_ARGUMENT, error,
                    "Lazy refcounts only supported with compatibility level 1.1 and above (use "
                    "compat=1.1 or greater)");
    if (version < 3 && plan->refcount_order != -1 && plan->refcount_order != 4)
        return fail(img, VD_ERROR_INVALID_ARGUMENT, error,
                    "Refcount widths other than 16 bits require compatibility level 1.1 or "
                    "above (use compat=1.1 or greater)");
    if (version < 3 && plan->refcount_order == -1 && s->refcount_order != 4)
        return fail(img, VD_ERROR_INVALID_ARGUMENT, error, "compat=0.10 requires refcount_bits=16");
    if (plan->data_file != NULL && !(s->incompat & QCOW2_INCOMPAT_DATA_FILE))
        return fail(img, VD_ERROR_INVALID_ARGUMENT, error,
                    "data-file can only be set for images that use an external data file");
    if (plan->data_file != NULL &&
        (*plan->data_file == '\0' || strlen(plan->data_file) > QCOW2_MAX_BACKING_NAME))
        return fail(img, VD_ERROR_INVALID_ARGUMENT, error,
                    "data-file must name a file (at most 1023 bytes)");
    if (plan->data_file_raw == 1 && !(s->autoclear & QCOW2_AUTOCLEAR_DATA_RAW))
        return fail(img, VD_ERROR_NOT_SUPPORTED, error,
                    "data-file-raw cannot be set on existing images");
    return TRUE;
}

/* ----- downgrade ----- */

/* Calls visit for every L2 table the active L1 table and the snapshots'
 * name (a table two of them share, once per naming L1 entry). */
typedef gboolean (*L2Visit)(Qcow2State *s, guint64 l2_offset, gpointer data, GError **error);

/* With progress, each L1 entry is a step, as qemu-img amend -p counts. */
typedef struct {
    gboolean progress;
    guint64 done, total;
} L1Steps;

static gboolean visit_l1(Qcow2State *s, const guint64 *l1, guint32 size, L2Visit visit,
                         gpointer data, L1Steps *steps, GError **error)
{
    VdImage *img = s->img;
    for (guint32 i = 0; i < size; i++) {
        guint64 l2 = l1[i] & QCOW2_OFFSET_MASK;
        if (l2 != 0 && !visit(s, l2, data, error))
            return FALSE;
        steps->done++;
        if (steps->progress && img->amend_progress != NULL)
            img->amend_progress(steps->done, steps->total, img->amend_progress_data);
    }
    return TRUE;
}

static gboolean visit_all_l2(Qcow2State *s, L2Visit visit, gpointer data, gboolean progress,
                             GError **error)
{
    L1Steps steps = { .progress = progress, .total = s->l1_size };
    for (guint i = 0; i < s->snapshots->len; i++)
        steps.total += ((Qcow2Snapshot *)s->snapshots->pdata[i])->l1_size;
    if (!visit_l1(s, s->l1, s->l1_size, visit, data, &steps, error))
        return FALSE;
    for (guint i = 0; i < s->snapshots->len; i++) {
        Qcow2Snapshot *sn = s->snapshots->pdata[i];
        g_autofree guint64 *l1 = NULL;
        if (!qcow2_snapshot_l1_check(s, sn, error) ||
            !qcow2_read_l1(s, sn->l1_offset, sn->l1_size, &l1, error) ||
            !visit_l1(s, l1, sn->l1_size, visit, data, &steps, error))
            return FALSE;
    }
    return TRUE;
}

static gboolean find_compressed(Qcow2State *s, guint64 l2_offset, gpointer data, GError **error)
{
    gboolean *found = data;
    guint8 *table;
    if (!qcow2_load_l2(s, l2_offset, "table at offset", l2_offset, &table, error))
        return FALSE;
    for (guint64 i = 0; i < s->l2_entries && !*found; i++) {
        guint64 bitmap;
        *found = qcow2_cluster_type(s, qcow2_l2_get(s, table, i, &bitmap)) == QCOW2_CL_COMPRESSED;
    }
    qcow2_cache_put(s->l2_cache, table);
    return TRUE;
}

typedef struct {
    guint8 *zero; /* a cluster of zeroes */
    guint64 done, total;
} Expansion;

/* Version 2 has no zero flag: each zero cluster of the table becomes what
 * reads as zeroes there. */
static gboolean expand_zeroes(Qcow2State *s, guint64 l2_offset, gpointer data, GError **error)
{
    Expansion *x = data;
    VdImage *img = s->img;
    guint64 refs;
    guint8 *table;
    if (!qcow2_get_refcount(s, l2_offset >> s->cluster_bits, &refs, error) ||
        !qcow2_load_l2(s, l2_offset, "table at offset", l2_offset, &table, error))
        return FALSE;
    gboolean ok = TRUE, changed = FALSE;
    for (guint64 i = 0; ok && i < s->l2_entries; i++) {
        guint64 bitmap, entry = qcow2_l2_get(s, table, i, &bitmap);
        guint64 host = entry & QCOW2_OFFSET_MASK;
        switch (qcow2_cluster_type(s, entry)) {
        case QCOW2_CL_ZERO_PLAIN:
            if (img->backing_name == NULL) {
                entry = 0;
            } else {
                /* The backing file would show through: real zeroes, in a
                 * cluster counted once for each L1 entry naming the
                 * table. */
                ok = qcow2_alloc_clusters(s, 1, &host, error) &&
                     vd_file_pwrite(img->file, host, x->zero, s->cluster_size, error) &&
                     (refs <= 1 ||
                      qcow2_update_refcount(s, host, s->cluster_size, (gint64)refs - 1, error));
                entry = host | (refs == 1 ? QCOW2_OFLAG_COPIED : 0);
            }
            break;
        case QCOW2_CL_ZERO_ALLOC:
            ok = vd_file_pwrite(img->file, host, x->zero, s->cluster_size, error);
            entry &= ~QCOW2_OFLAG_ZERO;
            break;
        default:
            continue;
        }
        if (ok) {
            qcow2_l2_set(s, table, i, entry, 0);
            changed = TRUE;
        }
    }
    if (changed) {
        /* The zeroes are on disk before a table points at them. */
        qcow2_cache_depends_on_flush(s->l2_cache);
        qcow2_cache_mark_dirty(s->l2_cache, table);
    }
    qcow2_cache_put(s->l2_cache, table);
    return ok;
}

static gboolean downgrade(VdImage *img, Qcow2State *s, GError **error)
{
    if (s->incompat & QCOW2_INCOMPAT_DATA_FILE)
        return fail(img, VD_ERROR_NOT_SUPPORTED, error,
                    "Cannot downgrade an image with a data file");
    guint64 other = s->incompat & ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_COMPRESSION);
    if (other != 0) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "Cannot downgrade an image with incompatible features 0x%" G_GINT64_MODIFIER
                    "x set",
                    other);
        return FALSE;
    }
    if (s->nb_bitmaps > 0)
        return fail(img, VD_ERROR_NOT_SUPPORTED, error,
                    "Cannot downgrade an image with persistent bitmaps (version 2 has none): "
                    "remove them with 'vdisk bitmap --remove' first");
    for (guint i = 0; i < s->snapshots->len; i++) {
        Qcow2Snapshot *sn = s->snapshots->pdata[i];
        /* Version 2 snapshots are of the image's size. */
        if (sn->has_disk_size && sn->disk_size != img->size)
            return fail(img, VD_ERROR_NOT_SUPPORTED, error,
                        "Internal snapshots prevent downgrade of image");
    }
    if (s->compression_type != QCOW2_COMPRESSION_ZLIB) {
        gboolean found = FALSE;
        if (!visit_all_l2(s, find_compressed, &found, FALSE, error))
            return FALSE;
        if (found)
            return fail(img, VD_ERROR_NOT_SUPPORTED, error,
                        "Cannot downgrade an image with zstd compression type and existing "
                        "compressed clusters");
    }
    Expansion x = { .zero = g_malloc0(s->cluster_size) };
    gboolean ok = visit_all_l2(s, expand_zeroes, &x, TRUE, error) && qcow2_flush_metadata(s, error);
    g_free(x.zero);
    if (!ok)
        return FALSE;
    s->version = 2;
    s->incompat = 0;
    s->compat = 0;
    s->autoclear = 0;
    s->compression_type = QCOW2_COMPRESSION_ZLIB;
    return TRUE;
}

/* ----- refcount width ----- */

/* New refcount structures of the new width, placed past everything in use,
 * with the counts the old ones hold; the old ones become free space. The
 * dirty bit covers the switch, so a crash leaves an image that the next
 * read-write open repairs. */
static gboolean change_refcount_order(VdImage *img, Qcow2State *s, guint order, GError **error)
{
    guint64 cs = s->cluster_size;
    guint64 max = order == 6 ? G_MAXUINT64 : (1ull << (1u << order)) - 1;
    if (!qcow2_flush_metadata(s, error) || !qcow2_refresh_file_size(s, error))
        return FALSE;
    guint64 nb = qcow2_align_up(s->file_size, cs) >> s->cluster_bits;
    g_autofree guint32 *refs = g_new0(guint32, MAX(nb, 1));
    for (guint64 c = 0; c < nb; c++) {
        guint64 v;
        if (!qcow2_get_refcount(s, c, &v, error))
            return FALSE;
        if (v > max) {
            g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                        "Cannot decrease refcount entry width to %u bits: Cluster at offset "
                        "0x%" G_GINT64_MODIFIER "x has a refcount of %" G_GUINT64_FORMAT,
                        1u << order, c << s->cluster_bits, v);
            return FALSE;
        }
        refs[c] = (guint32)MIN(v, G_MAXUINT32);
    }
    for (guint64 i = 0; i < s->rt_clusters; i++)
        if ((s->rt_offset >> s->cluster_bits) + i < nb)
            refs[(s->rt_offset >> s->cluster_bits) + i] = 0;
    for (guint64 bi = 0; bi < s->rt_entries; bi++) {
        guint64 c = (s->rt[bi] & QCOW2_RT_OFFSET_MASK) >> s->cluster_bits;
        if (s->rt[bi] != 0 && c < nb)
            refs[c] = 0;
    }
    if (!qcow2_mark_dirty_during(s, error))
        return FALSE;
    qcow2_cache_drop_all(s->rb_cache);
    s->refcount_order = order;
    s->rb_bits = s->cluster_bits + 3 - order;
    s->refcount_max = max;
    return qcow2_rebuild_refcounts(s, refs, nb, error) &&
           qcow2_write_header_field(s, QH_REFCOUNT_ORDER, order, 4, error) &&
           vd_file_sync(img->file, error) && qcow2_end_dirty_during(s, error);
}

/* ----- amend ----- */

/* The key slot options alone, for qcow2-crypto.c. */
static VdOptions *slot_options(VdOptions *opts)
{
    VdOptions *slots = vd_options_new();
    for (guint i = 0; slot_keys[i] != NULL; i++) {
        const char *v = vd_options_get(opts, slot_keys[i]);
        if (v != NULL)
            vd_options_set(slots, slot_keys[i], v);
    }
    return slots;
}

gboolean qcow2_amend(VdImage *img, VdOptions *opts, VdSecrets *secrets, GError **error)
{
    Qcow2State *s = img->priv;
    AmendPlan plan;
    if (!parse_plan(img, s, opts, &plan, error))
        return FALSE;
    if (plan.slots) {
        g_autoptr(VdOptions) slots = slot_options(opts);
        if (!qcow2_crypto_amend(img, slots, secrets, error))
            return FALSE;
    }
    gboolean header = FALSE;
    if (plan.version == 3 && s->version == 2) {
        /* Version 3 snapshots record the disk's size: those written
         * without it get the image's, as qemu upgrades them, in a table
         * written before the header says version 3. */
        gboolean lacking = FALSE;
        for (guint i = 0; i < s->snapshots->len; i++) {
            Qcow2Snapshot *sn = s->snapshots->pdata[i];
            if (!sn->has_disk_size) {
                sn->disk_size = img->size;
                sn->has_disk_size = lacking = TRUE;
            }
        }
        if (lacking && !qcow2_snapshots_rewrite(s, error))
            return FALSE;
        s->version = 3;
        s->incompat = s->compat = s->autoclear = 0;
        s->refcount_order = 4;
        s->compression_type = QCOW2_COMPRESSION_ZLIB;
        header = TRUE;
    }
    if (plan.data_file != NULL && g_strcmp0(plan.data_file, s->data_file_name) != 0) {
        g_free(s->data_file_name);
        s->data_file_name = g_strdup(plan.data_file);
        header = TRUE;
    }
    if (plan.data_file_raw == 0 && (s->autoclear & QCOW2_AUTOCLEAR_DATA_RAW)) {
        s->autoclear &= ~QCOW2_AUTOCLEAR_DATA_RAW;
        header = TRUE;
    }
    gboolean lazy_now = (s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS) != 0;
    if (plan.lazy != -1 && plan.lazy != lazy_now && s->version == 3) {
        /* Refcounts left out of date are written (and the dirty bit
         * cleared) before the image stops saying they may be. */
        if (!plan.lazy && !qcow2_flush_metadata(s, error))
            return FALSE;
        s->compat ^= QCOW2_COMPAT_LAZY_REFCOUNTS;
        header = TRUE;
    }
    if (header && !qcow2_rewrite_header(s, error))
        return FALSE;
    if (plan.refcount_order != -1 && (guint)plan.refcount_order != s->refcount_order &&
        !change_refcount_order(img, s, (guint)plan.refcount_order, error))
        return FALSE;
    if (plan.has_size && plan.size != img->size) {
        if (!img->drv->resize(img, plan.size, TRUE, error))
            return FALSE;
        img->size = plan.size;
    }
    if (plan.version == 2 && s->version == 3)
        return downgrade(img, s, error) && qcow2_rewrite_header(s, error);
    return TRUE;
}
