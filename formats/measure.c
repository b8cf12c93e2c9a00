/* How large a new image would be: qemu-img measure.
 *
 * Two figures, as qemu computes them so that the numbers agree byte for
 * byte: the file size needed for a copy of a source (or an empty image of
 * a given size), and the size of the same image fully allocated. Only raw,
 * qcow2 and luks are measured; qemu 7.2 refuses the other formats, and so
 * does vdisk. The qcow2 figure is an upper bound of what vdisk's own convert
 * writes, which places no more metadata than qemu does.
 */
#include "crypto-cipher.h"
#include "luks-header.h"
#include "vdisk-driver.h"

#include <string.h>

static guint64 align_up(guint64 v, guint64 to) { return (v + to - 1) / to * to; }

/* Clusters of refcount blocks and refcount table needed to count clusters
 * clusters plus themselves: the fixed point, found by iterating. */
static guint64 refcount_clusters(guint64 clusters, guint64 cluster_size, guint refcount_order)
{
    guint64 per_block = cluster_size * 8 >> refcount_order;
    guint64 per_table = cluster_size / 8;
    guint64 blocks = 0, table = 0, n = 0, last;

    do {
        last = n;
        blocks = (clusters + table + blocks + per_block - 1) / per_block;
        table = (blocks + per_table - 1) / per_table;
        n = clusters + blocks + table;
    } while (n != last);
    return blocks + table;
}

/* A qcow2 image of size (cluster aligned) with every cluster allocated:
 * header cluster, L2 tables, L1 table, refcount metadata and data. */
static guint64 qcow2_full_size(guint64 size, guint64 cs, guint refcount_order, gboolean ext_l2)
{
    guint64 l2_entry = ext_l2 ? 16 : 8;
    guint64 meta = cs;
    guint64 l2_entries = align_up(size / cs, cs / l2_entry);
    guint64 l1_entries;

    meta += l2_entries * l2_entry;
    l1_entries = align_up(l2_entries * l2_entry / cs, cs / 8);
    meta += l1_entries * 8;
    meta += refcount_clusters((meta + size) / cs, cs, refcount_order) * cs;
    return meta + size;
}

typedef struct {
    guint64 cluster_size;
    guint refcount_order;
    gboolean ext_l2;
    gboolean v3;
    int prealloc;
    gboolean has_backing;
    guint64 luks_area; /* encrypt.format=luks: its header and key material */
} Qcow2Target;

/* qemu's bound on a qcow2 L1 table. */
#define MAX_L1_BYTES (32ull << 20)

enum { PREALLOC_OFF, PREALLOC_METADATA, PREALLOC_FALLOC, PREALLOC_FULL };

static gboolean invalid(GError **error, const char *message)
{
    g_set_error_literal(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, message);
    return FALSE;
}

/* The bytes a LUKS header with these options (prefix "encrypt." in qcow2)
 * takes before the data. qemu-img wants the key's secret named even to
 * measure. */
static gboolean luks_area(VdOptions *opts, const char *prefix, guint64 *bytes, GError **error)
{
    g_autofree char *key = g_strconcat(prefix, "key-secret", NULL);
    VdLuksCreateParams p;
    if (vd_options_get(opts, key) == NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "Parameter '%s' is required for cipher", key);
        return FALSE;
    }
    return vd_luks_create_params_from_options(opts, prefix, &p, error) &&
           vd_luks_area_bytes(&p, bytes, error);
}

static gboolean parse_qcow2_target(VdOptions *opts, Qcow2Target *t, GError **error)
{
    static const char *const compat[] = { "0.10", "1.1", "v2", "v3", NULL };
    static const char *const prealloc[] = { "off", "metadata", "falloc", "full", NULL };
    static const char *const ctypes[] = { "zlib", "zstd", NULL };
    guint64 bits;
    int c, ctype;
    const char *encrypt;

    if (!vd_option_choice(opts, "compat", compat, 1, &c, error) ||
        !vd_option_size(opts, "cluster_size", 65536, &t->cluster_size, error) ||
        !vd_option_size(opts, "refcount_bits", 16, &bits, error) ||
        !vd_option_choice(opts, "preallocation", prealloc, PREALLOC_OFF, &t->prealloc, error) ||
        !vd_option_choice(opts, "compression_type", ctypes, 0, &ctype, error) ||
        !vd_option_bool(opts, "extended_l2", FALSE, &t->ext_l2, error) ||
        !vd_create_encrypt_format(opts, &encrypt, error))
        return FALSE;
    t->v3 = c == 1 || c == 3;
    t->has_backing = vd_options_get(opts, "backing_file") != NULL;
    if (t->cluster_size < 512 || t->cluster_size > (2u << 20) ||
        (t->cluster_size & (t->cluster_size - 1)) != 0)
        return invalid(error, "Cluster size must be a power of two between 512 and 2048k");
    if (bits == 0 || bits > 64 || (bits & (bits - 1)) != 0)
        return invalid(error, "Refcount width must be a power of two and may not exceed 64 bits");
    t->refcount_order = (guint)g_bit_nth_lsf(bits, -1);
    if (!t->v3 && bits != 16)
        return invalid(error, "Different refcount widths than 16 bits require compatibility "
                              "level 1.1 or above (use compat=1.1 or greater)");
    if (t->ext_l2 && !t->v3)
        return invalid(error, "Extended L2 entries are only supported with compatibility "
                              "level 1.1 and above (use compat=1.1 or greater)");
    if (t->ext_l2 && t->cluster_size < 16384)
        return invalid(error, "Extended L2 entries are only supported with cluster sizes of at "
                              "least 16384 bytes");
    /* Legacy AES takes no room of its own; LUKS its header, in clusters. */
    if (encrypt != NULL && !g_str_equal(encrypt, "aes") && !g_str_equal(encrypt, "luks")) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "encrypt.format must be 'luks' or 'aes', not '%s'", encrypt);
        return FALSE;
    }
    return g_strcmp0(encrypt, "luks") != 0 || luks_area(opts, "encrypt.", &t->luks_area, error);
}

/* Bytes of data clusters a copy of source would allocate: every cluster
 * that holds data which does not read as zeroes. */
static gboolean allocated_bytes(VdImage *source, guint64 cs, guint64 *out, GError **error)
{
    guint64 size = vd_image_size(source), offset = 0, total = 0;

    while (offset < size) {
        VdBlockStatus st = { 0 };

        if (!vd_image_block_status(source, offset, size - offset, TRUE, &st, error))
            return FALSE;
        if ((st.flags & VD_BLOCK_DATA) && !(st.flags & VD_BLOCK_ZERO)) {
            guint64 end = align_up(offset + st.length, cs);

            total += end - offset / cs * cs;
            offset = end;
        } else {
            offset += st.length;
        }
    }
    *out = total;
    return TRUE;
}

/* The source's persistent bitmaps (from qcow2 info), which a qcow2 copy
 * made with --bitmaps would carry, in clusters of cs bytes: each bitmap's
 * data fully allocated, its table, and the directory. *has is FALSE when
 * the source cannot hold bitmaps at all (then qemu does not report them). */
static void bitmaps_size(VdImage *source, guint64 cs, gboolean *has, guint64 *out)
{
    g_autoptr(VdImageInfo) info = NULL;
    g_autoptr(GVariant) list = NULL;
    const char *compat = NULL;
    guint64 total = 0, dir = 0;

    *has = FALSE;
    *out = 0;
    if (!g_str_equal(vd_image_format(source), "qcow2"))
        return;
    info = vd_image_get_info(source, NULL);
    if (info == NULL || info->format_specific == NULL)
        return;
    if (!g_variant_lookup(info->format_specific, "compat", "&s", &compat) ||
        g_str_equal(compat, "0.10"))
        return;
    *has = TRUE;
    list = g_variant_lookup_value(info->format_specific, "bitmaps", G_VARIANT_TYPE("aa{sv}"));
    for (gsize i = 0; list != NULL && i < g_variant_n_children(list); i++) {
        g_autoptr(GVariant) bm = g_variant_get_child_value(list, i);
        const char *name = "";
        guint32 granularity = 65536;
        guint64 bits, clusters;

        g_variant_lookup(bm, "name", "&s", &name);
        g_variant_lookup(bm, "granularity", "u", &granularity);
        bits = (vd_image_size(source) + granularity - 1) / granularity;
        clusters = (align_up(bits, 8) / 8 + cs - 1) / cs;
        total += clusters * cs + align_up(clusters * 8, cs);
        /* A directory entry: 24 bytes and the name, to a multiple of 8. */
        dir += align_up(24 + strlen(name), 8);
    }
    *out = total + align_up(dir, cs);
}

static gboolean measure_qcow2(VdImage *source, guint64 size, VdOptions *opts, VdMeasure *out,
                              GError **error)
{
    Qcow2Target t = { 0 };
    guint64 virtual_size, l2_entry, data = 0;

    if (!parse_qcow2_target(opts, &t, error))
        return FALSE;
    l2_entry = t.ext_l2 ? 16 : 8;
    virtual_size = align_up(source != NULL ? vd_image_size(source) : size, t.cluster_size);
    /* The L1 table of an image this large would pass qemu's limit. */
    if ((virtual_size / t.cluster_size + t.cluster_size / l2_entry - 1) /
            (t.cluster_size / l2_entry) * 8 >
        MAX_L1_BYTES)
        return invalid(error, "The image size is too large (try using a larger cluster size)");
    if (source != NULL) {
        if (t.has_backing)
            data = virtual_size;
        else if (!allocated_bytes(source, t.cluster_size, &data, error))
            return FALSE;
        bitmaps_size(source, t.cluster_size, &out->has_bitmaps, &out->bitmaps);
        out->has_bitmaps = out->has_bitmaps && t.v3;
    }
    if (t.prealloc == PREALLOC_FALLOC || t.prealloc == PREALLOC_FULL)
        data = virtual_size;
    out->fully_allocated =
        qcow2_full_size(virtual_size, t.cluster_size, t.refcount_order, t.ext_l2) +
        align_up(t.luks_area, t.cluster_size);
    out->required = out->fully_allocated - virtual_size + data;
    return TRUE;
}

/* qemu's raw measure looks at no option: any preallocation value passes. */
static void measure_raw(VdImage *source, guint64 size, VdMeasure *out)
{
    out->required = align_up(source != NULL ? vd_image_size(source) : size, 512);
    out->fully_allocated = out->required;
}

/* Encrypted, every byte of the disk takes its room whether written or
 * not: the header and the whole disk (not rounded, as in qemu). */
static gboolean measure_luks(VdImage *source, guint64 size, VdOptions *opts, VdMeasure *out,
                             GError **error)
{
    guint64 area;
    if (!luks_area(opts, "", &area, error))
        return FALSE;
    out->required = area + (source != NULL ? vd_image_size(source) : size);
    out->fully_allocated = out->required;
    return TRUE;
}

/* Every option must be one the format takes when creating an image. */
static gboolean check_keys(const char *format, VdOptions *opts, GError **error)
{
    const char *const *known = vd_format_create_options(format);
    g_autoptr(GPtrArray) keys = vd_options_keys(opts);

    for (guint i = 0; i < keys->len; i++) {
        const char *key = keys->pdata[i];

        if (known == NULL || !g_strv_contains(known, key)) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "Invalid parameter '%s' for format '%s'", key, format);
            return FALSE;
        }
    }
    return TRUE;
}

gboolean vd_measure(VdImage *source, guint64 size, const char *format, VdOptions *opts,
                    VdMeasure *out, GError **error)
{
    g_autoptr(VdOptions) none = NULL;

    *out = (VdMeasure){ 0 };
    if (!vd_format_known(format)) {
        g_set_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT, "Unknown file format '%s'",
                    format);
        return FALSE;
    }
    if (opts == NULL)
        opts = none = vd_options_new();
    if (!check_keys(format, opts, error))
        return FALSE;
    if (source != NULL && vd_image_needs_key(source)) {
        vd_set_error(error, source, VD_ERROR_INVALID_ARGUMENT,
                     "the image is encrypted: its data cannot be measured without its key");
        return FALSE;
    }
    if (g_str_equal(format, "qcow2"))
        return measure_qcow2(source, size, opts, out, error);
    if (g_str_equal(format, "raw")) {
        measure_raw(source, size, out);
        return TRUE;
    }
    if (g_str_equal(format, "luks"))
        return measure_luks(source, size, opts, out, error);
    g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                "Block driver '%s' does not support size measurement", format);
    return FALSE;
}
