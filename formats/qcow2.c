/* qcow2: header parsing and validation, open/close/create, metadata
 * caches and flushing, info, resize, and the driver vtable.
 *
 * The format is QEMU's (docs/interop/qcow2.rst). Guest clusters map through
 * a two-level table (L1 in memory, L2 tables in a cache) to host clusters,
 * which are reference counted (qcow2-refcount.c).
 */
#include "qcow2.h"

#include <string.h>
#include <unistd.h>

/* ----- table cache ----- */

typedef struct {
    guint64 offset;
    guint8 *data;
    gboolean used;
    gboolean dirty;
    guint pins;
    guint64 last_use;
} CacheEntry;

struct Qcow2Cache {
    CacheEntry *entries;
    guint capacity;
    gsize table_size;
    guint64 tick;
    Qcow2Cache *depends_on; /* flushed before any of our tables is written */
    gboolean flush_first;   /* the file is synced before our next write */
    GHashTable *by_offset;  /* guint64* -> CacheEntry* */
};

Qcow2Cache *qcow2_cache_new(Qcow2State *s, guint capacity, Qcow2Cache *depends_on)
{
    Qcow2Cache *c = g_new0(Qcow2Cache, 1);
    c->capacity = capacity;
    c->table_size = s->cluster_size;
    c->entries = g_new0(CacheEntry, capacity);
    c->depends_on = depends_on;
    c->by_offset = g_hash_table_new(g_int64_hash, g_int64_equal);
    return c;
}

void qcow2_cache_free(Qcow2Cache *c)
{
    if (c == NULL)
        return;
    for (guint i = 0; i < c->capacity; i++)
        g_free(c->entries[i].data);
    g_hash_table_unref(c->by_offset);
    g_free(c->entries);
    g_free(c);
}

static CacheEntry *cache_entry_of(Qcow2Cache *c, const guint8 *table)
{
    for (guint i = 0; i < c->capacity; i++)
        if (c->entries[i].data == table)
            return &c->entries[i];
    g_return_val_if_reached(NULL);
}

static gboolean cache_has_dirty(Qcow2Cache *c)
{
    for (guint i = 0; i < c->capacity; i++)
        if (c->entries[i].used && c->entries[i].dirty)
            return TRUE;
    return FALSE;
}

void qcow2_cache_depends_on_flush(Qcow2Cache *c) { c->flush_first = TRUE; }

/* Sync the image file: every table written so far is then on stable
 * storage, and none waits for a sync. */
static gboolean sync_tables(Qcow2State *s, GError **error)
{
    if (!vd_file_sync(s->img->file, error))
        return FALSE;
    s->rb_unsynced = FALSE;
    s->l2_unsynced = FALSE;
    return TRUE;
}

static gboolean cache_write_entry(Qcow2State *s, Qcow2Cache *c, CacheEntry *e, GError **error)
{
    if (!e->dirty)
        return TRUE;
    /* What our tables rely on (the refcounts of clusters they point at,
     * copied-on-write data) must be on stable storage before they are,
     * or a power cut could leave them pointing at what is not there. With
     * lazy refcounts a dirty image has its refcounts rebuilt on open, so
     * as in QEMU they are not waited for. */
    gboolean lazy = (s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS) && s->version >= 3;
    if (c->depends_on != NULL && !lazy && (cache_has_dirty(c->depends_on) || s->rb_unsynced)) {
        if (!qcow2_cache_flush(s, c->depends_on, error))
            return FALSE;
        c->flush_first = TRUE;
    }
    if (c->flush_first) {
        if (!sync_tables(s, error))
            return FALSE;
        c->flush_first = FALSE;
    }
    if (!vd_file_pwrite(s->img->file, e->offset, e->data, c->table_size, error))
        return FALSE;
    if (c == s->l2_cache)
        s->l2_unsynced = TRUE;
    else
        s->rb_unsynced = TRUE;
    e->dirty = FALSE;
    if (e->offset + c->table_size > s->file_size)
        s->file_size = e->offset + c->table_size;
    return TRUE;
}

gboolean qcow2_cache_lookup(Qcow2Cache *c, guint64 offset)
{
    return g_hash_table_contains(c->by_offset, &offset);
}

static CacheEntry *cache_victim(Qcow2Cache *c)
{
    CacheEntry *best = NULL;
    for (guint i = 0; i < c->capacity; i++) {
        CacheEntry *e = &c->entries[i];
        if (!e->used)
            return e;
        if (e->pins == 0 && (best == NULL || e->last_use < best->last_use))
            best = e;
    }
    return best;
}

gboolean qcow2_cache_get(Qcow2State *s, Qcow2Cache *c, guint64 offset, gboolean read,
                         guint8 **table, GError **error)
{
    CacheEntry *e = g_hash_table_lookup(c->by_offset, &offset);
    if (e == NULL) {
        e = cache_victim(c);
        if (e == NULL) {
            vd_set_error(error, s->img, VD_ERROR_FAILED, "metadata cache is full");
            return FALSE;
        }
        if (e->used) {
            if (!cache_write_entry(s, c, e, error))
                return FALSE;
            g_hash_table_remove(c->by_offset, &e->offset);
            e->used = FALSE;
        }
        if (e->data == NULL)
            e->data = g_malloc(c->table_size);
        if (read) {
            /* A table in the file's last, partial cluster reads as zeroes
             * past the end, as qemu reads it (qemu's own files end so). */
            guint64 have = c->table_size;
            if (!qcow2_in_file(s, offset, have))
                have = offset < s->file_size ? s->file_size - offset : 0;
            memset(e->data + have, 0, c->table_size - have);
            if (have > 0 && !vd_file_pread(s->img->file, offset, e->data, have, error))
                return FALSE;
        } else {
            memset(e->data, 0, c->table_size);
        }
        e->offset = offset;
        e->used = TRUE;
        e->dirty = !read;
        e->pins = 0;
        g_hash_table_insert(c->by_offset, &e->offset, e);
    }
    e->pins++;
    e->last_use = ++c->tick;
    *table = e->data;
    return TRUE;
}

void qcow2_cache_put(Qcow2Cache *c, guint8 *table)
{
    CacheEntry *e = cache_entry_of(c, table);
    if (e != NULL && e->pins > 0)
        e->pins--;
}

void qcow2_cache_mark_dirty(Qcow2Cache *c, guint8 *table)
{
    CacheEntry *e = cache_entry_of(c, table);
    if (e != NULL)
        e->dirty = TRUE;
}

gboolean qcow2_cache_flush(Qcow2State *s, Qcow2Cache *c, GError **error)
{
    for (guint i = 0; i < c->capacity; i++) {
        CacheEntry *e = &c->entries[i];
        if (e->used && e->dirty && !cache_write_entry(s, c, e, error))
            return FALSE;
    }
    return TRUE;
}

void qcow2_cache_drop(Qcow2Cache *c, guint64 offset)
{
    CacheEntry *e = g_hash_table_lookup(c->by_offset, &offset);
    if (e == NULL || e->pins > 0)
        return;
    g_hash_table_remove(c->by_offset, &e->offset);
    e->used = FALSE;
    e->dirty = FALSE;
}

void qcow2_cache_drop_all(Qcow2Cache *c)
{
    g_hash_table_remove_all(c->by_offset);
    for (guint i = 0; i < c->capacity; i++) {
        c->entries[i].used = FALSE;
        c->entries[i].dirty = FALSE;
        c->entries[i].pins = 0;
    }
}

/* ----- small helpers ----- */

gboolean qcow2_refresh_file_size(Qcow2State *s, GError **error)
{
    guint64 size;
    if (!vd_file_size(s->img->file, &size, error))
        return FALSE;
    s->file_size = size;
    return TRUE;
}

gboolean qcow2_in_file(Qcow2State *s, guint64 offset, guint64 len)
{
    if (offset <= s->file_size && len <= s->file_size - offset)
        return TRUE;
    if (!qcow2_refresh_file_size(s, NULL))
        return FALSE;
    return offset <= s->file_size && len <= s->file_size - offset;
}

VdFile *qcow2_data_file(Qcow2State *s)
{
    return s->data_file != NULL ? s->data_file : s->img->file;
}

gboolean qcow2_write_header_field(Qcow2State *s, guint offset, guint64 value, guint width,
                                  GError **error)
{
    guint8 buf[8];
    if (width == 8)
        vd_put_be64(buf, value);
    else
        vd_put_be32(buf, (guint32)value);
    return vd_file_pwrite(s->img->file, offset, buf, width, error);
}

static gboolean set_dirty_bit(Qcow2State *s, GError **error)
{
    if (s->set_dirty || s->version < 3)
        return TRUE;
    s->set_dirty = TRUE;
    s->incompat |= QCOW2_INCOMPAT_DIRTY;
    /* Durable before any write that relies on it, as in QEMU. */
    return qcow2_write_header_field(s, QH_INCOMPAT, s->incompat, 8, error) &&
           vd_file_sync(s->img->file, error);
}

gboolean qcow2_mark_dirty(Qcow2State *s, GError **error)
{
    if (!(s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS))
        return TRUE;
    return set_dirty_bit(s, error);
}

gboolean qcow2_mark_dirty_during(Qcow2State *s, GError **error)
{
    s->hold_dirty = TRUE;
    return set_dirty_bit(s, error);
}

gboolean qcow2_end_dirty_during(Qcow2State *s, GError **error)
{
    s->hold_dirty = FALSE;
    return qcow2_flush_metadata(s, error);
}

gboolean qcow2_write_l1_entries(Qcow2State *s, guint32 lo, guint32 hi, GError **error)
{
    if (lo > hi || s->l1_size == 0)
        return TRUE;
    hi = MIN(hi, s->l1_size - 1);
    /* A new L2 table is on stable storage before an L1 entry names it. */
    if (!qcow2_cache_flush(s, s->l2_cache, error))
        return FALSE;
    if (s->l2_unsynced && !sync_tables(s, error))
        return FALSE;
    gsize n = hi - lo + 1;
    g_autofree guint8 *buf = g_malloc(n * 8);
    for (gsize i = 0; i < n; i++)
        vd_put_be64(buf + i * 8, s->l1[lo + i]);
    return vd_file_pwrite(s->img->file, s->l1_offset + (guint64)lo * 8, buf, n * 8, error);
}

gboolean qcow2_flush_metadata(Qcow2State *s, GError **error)
{
    if (!s->img->read_write || s->snapshot_loaded)
        return TRUE;
    /* Refcounts, then L2 tables, then L1: each level only points at what
     * is already on disk. */
    if (!qcow2_cache_flush(s, s->rb_cache, error) || !qcow2_cache_flush(s, s->l2_cache, error))
        return FALSE;
    if (s->l1_dirty_lo <= s->l1_dirty_hi) {
        if (!qcow2_write_l1_entries(s, s->l1_dirty_lo, s->l1_dirty_hi, error))
            return FALSE;
        s->l1_dirty_lo = G_MAXUINT32;
        s->l1_dirty_hi = 0;
    }
    if (s->deferred_frees->len > 0) {
        /* The tables no longer point at the freed clusters on disk before
         * their refcounts drop, or a power cut could leave a cluster in
         * use with a refcount of 0 (and handed out again). */
        if (!vd_file_sync(s->img->file, error) || !qcow2_apply_deferred_frees(s, error) ||
            !qcow2_cache_flush(s, s->rb_cache, error))
            return FALSE;
    }
    if (s->set_dirty && !s->hold_dirty) {
        /* The refcounts must be durable before the bit says so. */
        if (!vd_file_sync(s->img->file, error))
            return FALSE;
        s->incompat &= ~QCOW2_INCOMPAT_DIRTY;
        if (!qcow2_write_header_field(s, QH_INCOMPAT, s->incompat, 8, error))
            return FALSE;
        s->set_dirty = FALSE;
    }
    return TRUE;
}

/* ----- header extensions ----- */

/* Entries of 48 bytes: type, bit, a name of up to 46 bytes. A last entry
 * cut short counts as far as it goes, as in qemu. */
#define FEATURE_ENTRY 48

static void parse_feature_table(Qcow2State *s, const guint8 *p, guint32 len)
{
    g_free(s->feature_table);
    s->feature_table_len = (guint32)qcow2_align_up(len, FEATURE_ENTRY);
    s->feature_table = g_malloc0(s->feature_table_len);
    memcpy(s->feature_table, p, len);
}

static gboolean parse_extensions(VdImage *img, Qcow2State *s, const guint8 *hdr, guint64 start,
                                 GError **error)
{
    guint64 off = start, cs = s->cluster_size;
    while (off + 8 <= cs) {
        guint32 type = vd_be32(hdr + off), len = vd_be32(hdr + off + 4);
        if (type == QCOW2_EXT_END)
            return TRUE;
        if (len > cs - off - 8) {
            vd_set_error(error, img, VD_ERROR_CORRUPT,
                         "header extension 0x%08x at offset %" G_GUINT64_FORMAT
                         " runs past the header cluster",
                         type, off);
            return FALSE;
        }
        const guint8 *data = hdr + off + 8;
        switch (type) {
        case QCOW2_EXT_BACKING_FORMAT:
            g_free(img->backing_format);
            img->backing_format = g_strndup((const char *)data, len);
            break;
        case QCOW2_EXT_FEATURE_TABLE:
            parse_feature_table(s, data, len);
            break;
        case QCOW2_EXT_DATA_FILE:
            g_free(s->data_file_name);
            s->data_file_name = g_strndup((const char *)data, len);
            break;
        case QCOW2_EXT_BITMAPS:
            if (len >= 24) {
                s->nb_bitmaps = vd_be32(data);
                s->bitmap_dir_size = vd_be64(data + 8);
                s->bitmap_dir_offset = vd_be64(data + 16);
            }
            break;
        case QCOW2_EXT_CRYPTO:
            s->crypto_ext_offset = len >= 16 ? vd_be64(data) : 0;
            s->crypto_ext_length = len >= 16 ? vd_be64(data + 8) : 0;
            break;
        default:
            break; /* bitmaps and unknown ones: left in place on disk */
        }
        off += 8 + qcow2_align_up(len, 8);
    }
    return TRUE; /* the area may simply end at the cluster end */
}

/* ----- open ----- */

/* The incompatible features the image needs and vdisk lacks: those the
 * feature name table names, in its order (the table ends at an entry
 * without a name), then the rest as one mask, as qemu reports them. */
static gboolean refuse_incompat(VdImage *img, Qcow2State *s, GError **error)
{
    guint64 unknown = s->incompat & ~QCOW2_INCOMPAT_KNOWN;
    if (unknown == 0)
        return TRUE;
    g_autoptr(GString) names = g_string_new(NULL);
    for (guint32 i = 0; i < s->feature_table_len; i += FEATURE_ENTRY) {
        const guint8 *e = s->feature_table + i;
        if (e[2] == '\0')
            break;
        if (e[0] != 0 || e[1] > 63 || !(unknown & (1ull << e[1])))
            continue;
        unknown &= ~(1ull << e[1]);
        g_string_append_printf(names, "%s%.46s", names->len > 0 ? ", " : "", (const char *)e + 2);
    }
    if (unknown != 0) {
        g_string_append_printf(names, "%sunknown incompatible feature bit",
                               names->len > 0 ? ", " : "");
        if ((unknown & (unknown - 1)) != 0)
            g_string_append_c(names, 's');
        for (int bit = 0, n = 0; bit < 64; bit++)
            if (unknown & (1ull << bit))
                g_string_append_printf(names, "%s %d", n++ > 0 ? "," : "", bit);
        g_string_append_printf(names, " (mask 0x%" G_GINT64_MODIFIER "x)", unknown);
    }
    vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT,
                 "uses qcow2 features this version does not support: %s", names->str);
    return FALSE;
}

static gboolean check_geometry(VdImage *img, Qcow2State *s, guint64 size, GError **error)
{
    guint64 span = qcow2_l2_span(s);
    guint64 needed = size / span + (size % span != 0);
    if ((guint64)s->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "L1 table has %u entries, more than the %u MiB limit", s->l1_size,
                     QCOW2_MAX_L1_BYTES >> 20);
        return FALSE;
    }
    /* qemu counts L1 entries in an int: a size that needs more is refused
     * whatever the table holds. */
    if (needed > G_MAXINT) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "Image is too big: the virtual size %" G_GUINT64_FORMAT
                     " needs %" G_GUINT64_FORMAT " L1 entries, more than 2^31 - 1",
                     size, needed);
        return FALSE;
    }
    if (size > (1ull << 62)) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "virtual size %" G_GUINT64_FORMAT " is too large", size);
        return FALSE;
    }
    if (needed > s->l1_size) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "L1 table has %u entries, too few for the virtual size %" G_GUINT64_FORMAT,
                     s->l1_size, size);
        return FALSE;
    }
    if (s->l1_size > 0 &&
        ((s->l1_offset & (s->cluster_size - 1)) != 0 || s->l1_offset < s->cluster_size)) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "L1 table offset 0x%" G_GINT64_MODIFIER "x is invalid", s->l1_offset);
        return FALSE;
    }
    /* A truncated file is read as qemu reads it (the tables' missing end
     * is zeroes) to be looked at, never to be written. */
    gboolean truncated_ok = !(img->flags & VD_OPEN_READ_WRITE) &&
                            s->l1_offset <= QCOW2_OFFSET_MASK && s->rt_offset <= QCOW2_OFFSET_MASK;
    if (s->l1_size > 0 && !truncated_ok &&
        !qcow2_in_file(s, s->l1_offset, (guint64)s->l1_size * 8)) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "L1 table at offset 0x%" G_GINT64_MODIFIER "x points past the end of the file",
                     s->l1_offset);
        return FALSE;
    }
    guint64 rt_bytes = (guint64)s->rt_clusters * s->cluster_size;
    /* A check looks at an image without a refcount table (all counts
     * zero, which -r all rebuilds) as qemu-img check does; a check without
     * repair and info at one on the header too (the header read as the
     * table). */
    gboolean looks = !(img->flags & VD_OPEN_READ_WRITE);
    gboolean checks = (img->flags & VD_OPEN_FOR_CHECK) != 0;
    if (s->rt_clusters == 0 && !checks) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "Image does not contain a reference count table");
        return FALSE;
    }
    if (rt_bytes > QCOW2_MAX_RT_BYTES) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "refcount table size (%u clusters) is invalid",
                     s->rt_clusters);
        return FALSE;
    }
    if ((s->rt_offset & (s->cluster_size - 1)) != 0 ||
        (s->rt_offset < s->cluster_size &&
         !(s->rt_offset == 0 && (looks || (checks && s->rt_clusters == 0))))) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "refcount table offset 0x%" G_GINT64_MODIFIER "x is invalid", s->rt_offset);
        return FALSE;
    }
    if (!truncated_ok && !qcow2_in_file(s, s->rt_offset, rt_bytes)) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "refcount table at offset 0x%" G_GINT64_MODIFIER
                     "x points past the end of the file",
                     s->rt_offset);
        return FALSE;
    }
    return TRUE;
}

static gboolean parse_version_3(VdImage *img, Qcow2State *s, const guint8 *h, GError **error)
{
    s->incompat = vd_be64(h + QH_INCOMPAT);
    s->compat = vd_be64(h + QH_COMPAT);
    s->autoclear = vd_be64(h + QH_AUTOCLEAR);
    s->refcount_order = vd_be32(h + QH_REFCOUNT_ORDER);
    s->header_length = vd_be32(h + QH_HEADER_LENGTH);
    if (s->header_length < 104 || s->header_length % 8 != 0 || s->header_length > s->cluster_size) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "header length %u is invalid", s->header_length);
        return FALSE;
    }
    if (s->refcount_order > 6) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "refcount order %u is invalid (at most 6)",
                     s->refcount_order);
        return FALSE;
    }
    s->compression_type = s->header_length > QH_COMPRESSION_TYPE ? h[QH_COMPRESSION_TYPE] : 0;
    gboolean bit = (s->incompat & QCOW2_INCOMPAT_COMPRESSION) != 0;
    if (bit != (s->compression_type != 0) || s->compression_type > QCOW2_COMPRESSION_ZSTD) {
        vd_set_error(error, img,
                     bit || s->compression_type == 0 ? VD_ERROR_CORRUPT
                                                     : VD_ERROR_UNSUPPORTED_FORMAT,
                     "compression type %d does not match the incompatible feature bits",
                     s->compression_type);
        return FALSE;
    }
    return TRUE;
}

static void setup_geometry(Qcow2State *s)
{
    s->cluster_size = 1ull << s->cluster_bits;
    s->l2_bits = s->cluster_bits - (s->ext_l2 ? 4 : 3);
    s->l2_entries = 1ull << s->l2_bits;
    s->subcluster_bits = s->cluster_bits - (s->ext_l2 ? 5 : 0);
    s->rb_bits = s->cluster_bits + 3 - s->refcount_order;
    s->refcount_max =
        s->refcount_order == 6 ? G_MAXUINT64 : (1ull << (1u << s->refcount_order)) - 1;
    s->csize_shift = 62 - (s->cluster_bits - 8);
    s->csize_mask = (1ull << (s->cluster_bits - 8)) - 1;
    s->coffset_mask = (1ull << s->csize_shift) - 1;
}

static gboolean open_data_file(VdImage *img, Qcow2State *s, GError **error)
{
    if (!(s->incompat & QCOW2_INCOMPAT_DATA_FILE)) {
        s->autoclear &= ~QCOW2_AUTOCLEAR_DATA_RAW;
        return TRUE;
    }
    if (s->data_file_name == NULL || *s->data_file_name == '\0') {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "uses an external data file but does not name it");
        return FALSE;
    }
    g_autoptr(GError) local = NULL;
    s->data_file = vd_image_open_related_file(img, s->data_file_name, img->read_write, &local);
    if (s->data_file == NULL) {
        /* A data file that is missing, in use, or refused (outside the
         * confinement, no regular file) says so; anything else is I/O. */
        VdError code = VD_ERROR_IO;
        if (g_error_matches(local, VD_ERROR, VD_ERROR_NOT_FOUND) ||
            g_error_matches(local, VD_ERROR, VD_ERROR_BUSY) ||
            g_error_matches(local, VD_ERROR, VD_ERROR_INVALID_ARGUMENT))
            code = (VdError)local->code;
        vd_set_error(error, img, code, "cannot open external data file '%s': %s", s->data_file_name,
                     local->message);
        return FALSE;
    }
    return TRUE;
}

static gboolean read_backing_name(VdImage *img, Qcow2State *s, const guint8 *h, GError **error)
{
    guint64 off = vd_be64(h + QH_BACKING_OFFSET);
    guint32 len = vd_be32(h + QH_BACKING_SIZE);
    if (off == 0)
        return TRUE;
    if (len > QCOW2_MAX_BACKING_NAME || off > s->cluster_size || len > s->cluster_size - off) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "backing file name (offset %" G_GUINT64_FORMAT ", length %u) is invalid", off,
                     len);
        return FALSE;
    }
    if (len == 0)
        return TRUE;
    g_free(img->backing_name); /* an explicit parent, which wins after open */
    img->backing_name = g_strndup((const char *)h + off, len);
    if (strlen(img->backing_name) != len) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "backing file name contains a NUL byte");
        return FALSE;
    }
    if (s->data_file != NULL && (s->autoclear & QCOW2_AUTOCLEAR_DATA_RAW)) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "a raw external data file cannot have a backing file");
        return FALSE;
    }
    return TRUE;
}

static gboolean load_l1(VdImage *img, Qcow2State *s, GError **error)
{
    g_free(s->l1);
    s->l1 = NULL;
    s->l1_lost_from = G_MAXUINT32;
    if (s->l1_size == 0)
        return TRUE;
    if (!vd_image_charge_metadata(img, (guint64)s->l1_size * 8, "L1 table", error))
        return FALSE;
    guint64 bytes = (guint64)s->l1_size * 8;
    if (qcow2_in_file(s, s->l1_offset, bytes))
        return qcow2_read_l1(s, s->l1_offset, s->l1_size, &s->l1, error);
    /* Open checked that this is a read-only open: what the file holds of
     * the table is read, the rest is zeroes whose ranges refuse to be read
     * (lookup_run); check counts what is missing. */
    guint64 have = s->l1_offset < s->file_size ? MIN(s->file_size - s->l1_offset, bytes) : 0;
    g_autofree guint8 *raw = g_malloc0(bytes);
    if (have > 0 && !vd_file_pread(img->file, s->l1_offset, raw, have, error))
        return FALSE;
    s->l1 = g_new0(guint64, s->l1_size);
    s->l1_lost_from = (guint32)(have / 8);
    for (guint32 i = 0; i < s->l1_lost_from; i++)
        s->l1[i] = vd_be64(raw + (guint64)i * 8);
    return TRUE;
}

/* A dirty image (lazy refcounts, not closed cleanly) gets its refcounts
 * rebuilt before anything is written, as QEMU does. */
static gboolean repair_dirty(VdImage *img, Qcow2State *s, GError **error)
{
    VdCheckResult res = { 0 };
    res.messages = g_ptr_array_new_with_free_func(g_free);
    s->opening_dirty = TRUE;
    gboolean ok = qcow2_check(img, VD_CHECK_REPAIR_LEAKS | VD_CHECK_REPAIR_ERRORS, &res, error);
    s->opening_dirty = FALSE;
    gboolean clean = res.corruptions == 0;
    vd_check_result_clear(&res);
    if (!ok)
        return FALSE;
    if (!clean) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "was not closed cleanly and its refcounts could not be repaired");
        return FALSE;
    }
    s->incompat &= ~QCOW2_INCOMPAT_DIRTY;
    return qcow2_write_header_field(s, QH_INCOMPAT, s->incompat, 8, error) &&
           vd_file_sync(img->file, error);
}

static gboolean open_read_write(VdImage *img, Qcow2State *s, GError **error)
{
    gboolean for_check = (img->flags & VD_OPEN_FOR_CHECK) != 0;
    if ((s->incompat & QCOW2_INCOMPAT_CORRUPT) && !for_check) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "is marked corrupt; it can only be opened read-only (or checked and "
                     "repaired)");
        return FALSE;
    }
    /* Unknown autoclear bits must go before we write. Bitmaps stay when
     * they can be kept up to date, and always for a check: it counts their
     * clusters, and a broken directory is for it to report. */
    guint64 keep = s->data_file != NULL ? QCOW2_AUTOCLEAR_DATA_RAW : 0;
    if ((s->autoclear & QCOW2_AUTOCLEAR_BITMAPS) && s->version >= 3) {
        gboolean kept;
        if (!qcow2_bitmaps_open(s, &kept, error))
            return FALSE;
        if (kept || for_check)
            keep |= QCOW2_AUTOCLEAR_BITMAPS;
    }
    if ((s->autoclear & ~keep) != 0 && s->version >= 3) {
        s->autoclear &= keep;
        if (!qcow2_write_header_field(s, QH_AUTOCLEAR, s->autoclear, 8, error))
            return FALSE;
    }
    if ((s->incompat & QCOW2_INCOMPAT_DIRTY) && !for_check)
        return repair_dirty(img, s, error);
    return TRUE;
}

static gboolean qcow2_open(VdImage *img, GError **error)
{
    Qcow2State *s = g_new0(Qcow2State, 1);
    s->l1_lost_from = G_MAXUINT32;
    img->priv = s;
    s->img = img;
    s->deferred_frees = g_array_new(FALSE, FALSE, sizeof(Qcow2Range));
    s->snapshots = g_ptr_array_new_with_free_func((GDestroyNotify)qcow2_snapshot_free);
    s->l1_dirty_lo = G_MAXUINT32;
    if (!qcow2_refresh_file_size(s, error))
        return FALSE;
    guint8 small[QH_V3_LENGTH] = { 0 };
    if (s->file_size < QH_V2_LENGTH ||
        !vd_file_pread(img->file, 0, small, MIN(s->file_size, sizeof small), error)) {
        if (error != NULL && *error == NULL)
            vd_set_error(error, img, VD_ERROR_CORRUPT, "file is too short for a qcow2 header");
        return FALSE;
    }
    if (vd_be32(small + QH_MAGIC) != QCOW2_MAGIC) {
        vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT,
                     "Image is not in qcow2 format: it does not start with qcow2's magic");
        return FALSE;
    }
    s->version = (int)vd_be32(small + QH_VERSION);
    if (s->version != 2 && s->version != 3) {
        vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT, "qcow2 version %d is not supported",
                     s->version);
        return FALSE;
    }
    s->cluster_bits = vd_be32(small + QH_CLUSTER_BITS);
    if (s->cluster_bits < 9 || s->cluster_bits > 21) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "cluster bits %u are invalid (512 bytes to 2 MiB clusters)", s->cluster_bits);
        return FALSE;
    }
    s->cluster_size = 1ull << s->cluster_bits;
    g_autofree guint8 *h = g_malloc0(s->cluster_size);
    if (!vd_file_pread_zero_past_eof(img->file, 0, h, s->cluster_size, error))
        return FALSE;
    s->header_length = QH_V2_LENGTH;
    s->refcount_order = 4;
    if (s->version == 3 && !parse_version_3(img, s, h, error))
        return FALSE;
    s->ext_l2 = (s->incompat & QCOW2_INCOMPAT_EXTL2) != 0;
    setup_geometry(s);
    if (!parse_extensions(img, s, h, s->header_length, error))
        return FALSE;
    s->crypt_method = vd_be32(h + QH_CRYPT_METHOD);
    if (!refuse_incompat(img, s, error))
        return FALSE;
    if (s->ext_l2 && s->cluster_bits < 14) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "extended L2 entries need clusters of at least 16 KiB");
        return FALSE;
    }
    guint64 size = vd_be64(h + QH_SIZE);
    s->l1_size = vd_be32(h + QH_L1_SIZE);
    s->l1_offset = vd_be64(h + QH_L1_OFFSET);
    s->rt_offset = vd_be64(h + QH_RT_OFFSET);
    s->rt_clusters = vd_be32(h + QH_RT_CLUSTERS);
    if (!check_geometry(img, s, size, error) || !open_data_file(img, s, error) ||
        !read_backing_name(img, s, h, error))
        return FALSE;
    guint cap_l2 = CLAMP((8u << 20) >> s->cluster_bits, 4, 128);
    guint cap_rb = CLAMP((2u << 20) >> s->cluster_bits, 4, 64);
    s->rb_cache = qcow2_cache_new(s, cap_rb, NULL);
    s->l2_cache = qcow2_cache_new(s, cap_l2, s->rb_cache);
    s->zbuf = g_malloc(s->cluster_size);
    s->free_cluster_index = 1;
    img->size = size;
    if (!load_l1(img, s, error) || !qcow2_refcount_load(s, error) ||
        !qcow2_snapshots_load(s, vd_be32(h + QH_NB_SNAPSHOTS), vd_be64(h + QH_SNAPSHOTS_OFFSET),
                              error))
        return FALSE;
    if (!qcow2_crypto_open(img, s, error))
        return FALSE;
    if (img->read_write && !open_read_write(img, s, error))
        return FALSE;
    return TRUE;
}

static void qcow2_close(VdImage *img)
{
    Qcow2State *s = img->priv;
    if (s == NULL)
        return;
    if (s->rb_cache != NULL && s->l2_cache != NULL && img->read_write) {
        g_autoptr(GError) local = NULL;
        if (!qcow2_bitmaps_store(s, &local) || !qcow2_flush_metadata(s, &local) ||
            (s->data_file != NULL && !vd_file_sync(s->data_file, &local)))
            g_warning("%s: %s", img->filename, local->message);
    }
    qcow2_bitmaps_free(s);
    qcow2_cache_free(s->l2_cache);
    qcow2_cache_free(s->rb_cache);
    g_free(s->l1);
    g_free(s->rt);
    g_array_unref(s->deferred_frees);
    g_ptr_array_unref(s->snapshots);
    if (s->data_file != NULL)
        vd_file_close(s->data_file);
    g_free(s->data_file_name);
    g_free(s->feature_table);
    g_free(s->zbuf);
    qcow2_crypto_close(s);
    g_free(s);
    img->priv = NULL;
}

static int qcow2_probe(const guint8 *buf, gsize len, const char *filename)
{
    if (len < 8 || vd_be32(buf) != QCOW2_MAGIC)
        return 0;
    /* Version 1 is the qcow driver's; of later versions open says which
     * ones are supported. */
    return vd_be32(buf + 4) >= 2 ? 100 : 0;
}

/* ----- create ----- */

typedef struct {
    int version;
    guint64 cluster_size;
    guint refcount_order;
    const char *data_file; /* data_file=: an external data file to make */
    gboolean data_raw;     /* data_file_raw=on */
    gboolean lazy_refcounts;
    int prealloc;
    int compression_type;
    gboolean ext_l2;
    gboolean luks; /* encrypt.format=luks */
    gboolean aes;  /* encrypt.format=aes or encryption=on: legacy AES */
} CreateOpts;

enum { PREALLOC_OFF, PREALLOC_METADATA, PREALLOC_FALLOC, PREALLOC_FULL };

static gboolean parse_refcount_bits(VdOptions *opts, CreateOpts *o, GError **error)
{
    const char *text = vd_options_get(opts, "refcount_bits");
    o->refcount_order = 4;
    if (text == NULL)
        return TRUE;
    static const char *const widths[] = { "1", "2", "4", "8", "16", "32", "64", NULL };
    for (int i = 0; widths[i] != NULL; i++) {
        if (g_str_equal(text, widths[i])) {
            o->refcount_order = (guint)i;
            return TRUE;
        }
    }
    g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                "refcount_bits must be a power of two from 1 to 64, not '%s'", text);
    return FALSE;
}

/* encrypt.format=luks makes a LUKS-encrypted image, encrypt.format=aes
 * (or encryption=on) one of the legacy AES, which takes no other
 * encrypt.* option than its key. */
static gboolean parse_encryption(VdOptions *opts, CreateOpts *o, GError **error)
{
    const char *format;
    if (!vd_create_encrypt_format(opts, &format, error))
        return FALSE;
    if (format != NULL && !g_str_equal(format, "luks") && !g_str_equal(format, "aes")) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "encrypt.format must be 'luks' or 'aes', not '%s'", format);
        return FALSE;
    }
    o->luks = g_strcmp0(format, "luks") == 0;
    o->aes = g_strcmp0(format, "aes") == 0;
    g_autoptr(GPtrArray) keys = vd_options_keys(opts);
    for (guint i = 0; !o->luks && i < keys->len; i++) {
        const char *key = keys->pdata[i];
        if (!g_str_has_prefix(key, "encrypt.") || g_str_equal(key, "encrypt.format") ||
            (o->aes && g_str_equal(key, "encrypt.key-secret")))
            continue;
        if (o->aes)
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "Parameter '%s' is unexpected (legacy AES takes only encrypt.key-secret)",
                        key);
        else
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "option '%s' needs encrypt.format=luks", key);
        return FALSE;
    }
    return TRUE;
}

static gboolean parse_create_opts(const VdCreateParams *p, CreateOpts *o, GError **error)
{
    static const char *const compat[] = { "0.10", "1.1", "v2", "v3", NULL };
    static const char *const prealloc[] = { "off", "metadata", "falloc", "full", NULL };
    static const char *const ctypes[] = { "zlib", "zstd", NULL };
    int c;
    VdOptions *opts = p->options;
    if (!parse_encryption(opts, o, error) ||
        !vd_option_bool(opts, "data_file_raw", FALSE, &o->data_raw, error))
        return FALSE;
    o->data_file = vd_options_get(opts, "data_file");
    if (!vd_option_choice(opts, "compat", compat, 1, &c, error) ||
        !vd_option_size(opts, "cluster_size", 65536, &o->cluster_size, error) ||
        !parse_refcount_bits(opts, o, error) ||
        !vd_option_bool(opts, "lazy_refcounts", FALSE, &o->lazy_refcounts, error) ||
        !vd_option_choice(opts, "preallocation", prealloc, 0, &o->prealloc, error) ||
        !vd_option_choice(opts, "compression_type", ctypes, 0, &o->compression_type, error) ||
        !vd_option_bool(opts, "extended_l2", FALSE, &o->ext_l2, error))
        return FALSE;
    o->version = c == 0 || c == 2 ? 2 : 3;
    const char *bad = NULL;
    if (o->data_raw && o->data_file == NULL)
        bad = "data-file-raw requires data-file";
    else if (o->data_file != NULL && o->version == 2)
        bad = "External data files are only supported with compatibility level 1.1 and above "
              "(use version=v3 or greater)";
    else if (o->data_raw && p->backing_file != NULL)
        bad = "Backing file and data-file-raw cannot be used at the same time";
    else if (o->data_file != NULL && *o->data_file == '\0')
        bad = "Could not create '': No such file or directory";
    else if (o->data_file != NULL && strlen(o->data_file) > QCOW2_MAX_BACKING_NAME)
        bad = "the data file name is longer than 1023 bytes";
    else if (o->data_file != NULL && (p->in_descriptor || p->confine != NULL))
        bad = "an external data file is made by its path: not for an image made in a "
              "descriptor or a folder of its own";
    if (bad != NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "%s", bad);
        return FALSE;
    }
    /* A raw data file reads as the disk, so every cluster maps to its own
     * offset there from the start: metadata at least, as qemu makes it. */
    if (o->data_raw && o->prealloc == PREALLOC_OFF)
        o->prealloc = PREALLOC_METADATA;
    if (o->cluster_size < 512 || o->cluster_size > (2u << 20) ||
        (o->cluster_size & (o->cluster_size - 1)) != 0)
        bad = "cluster_size must be a power of two from 512 bytes to 2 MiB";
    else if (o->version == 2 && o->refcount_order != 4)
        bad = "refcount_bits other than 16 need compat=1.1";
    else if (o->version == 2 && o->lazy_refcounts)
        bad = "lazy_refcounts need compat=1.1";
    else if (o->version == 2 && o->compression_type != QCOW2_COMPRESSION_ZLIB)
        bad = "compression_type=zstd needs compat=1.1";
    else if (o->version == 2 && o->ext_l2)
        bad = "extended_l2 needs compat=1.1";
    else if (o->ext_l2 && o->cluster_size < 16384)
        bad = "extended_l2 needs a cluster_size of at least 16k";
    else if (p->backing_file != NULL && o->prealloc != PREALLOC_OFF && !o->ext_l2)
        bad = "a backing file and preallocation can only be used together with extended_l2";
    else if (p->backing_file != NULL && strlen(p->backing_file) > QCOW2_MAX_BACKING_NAME)
        bad = "the backing file name is longer than 1023 bytes";
    if (bad != NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "%s", bad);
        return FALSE;
    }
    return TRUE;
}

static guint64 put_extension(guint8 *h, guint64 off, guint32 type, const void *data, guint32 len)
{
    vd_put_be32(h + off, type);
    vd_put_be32(h + off + 4, len);
    memcpy(h + off + 8, data, len);
    return off + 8 + qcow2_align_up(len, 8);
}

/* Read the header cluster into old and copy into h (both a cluster) the
 * header and every extension but those of type drop, in their order and
 * byte for byte; *off is where the next extension goes in h. */
static gboolean copy_header_without(Qcow2State *s, guint32 drop, guint8 *old, guint8 *h,
                                    guint64 *off, GError **error)
{
    guint64 cs = s->cluster_size;
    if (!vd_file_pread_zero_past_eof(s->img->file, 0, old, cs, error))
        return FALSE;
    memcpy(h, old, s->header_length);
    *off = s->header_length;
    for (guint64 pos = s->header_length; pos + 8 <= cs;) {
        guint32 type = vd_be32(old + pos), len = vd_be32(old + pos + 4);
        if (type == QCOW2_EXT_END || len > cs - pos - 8)
            break;
        if (type != drop)
            *off = put_extension(h, *off, type, old + pos + 8, len);
        pos += 8 + qcow2_align_up(len, 8);
    }
    return TRUE;
}

/* After the extensions at off: the end marker, then the backing file name
 * (blen bytes, may be 0), with the header fields that find it. FALSE when
 * they do not fit in the header cluster of cs bytes. */
static gboolean put_backing_name(guint8 *h, guint64 off, guint64 cs, const char *name, gsize blen)
{
    if (off + 8 + blen > cs)
        return FALSE;
    off += 8; /* the end-of-extensions marker, zero */
    vd_put_be64(h + QH_BACKING_OFFSET, blen > 0 ? off : 0);
    vd_put_be32(h + QH_BACKING_SIZE, (guint32)blen);
    if (blen > 0)
        memcpy(h + off, name, blen);
    return TRUE;
}

static guint64 feature_table(guint8 *out)
{
    static const struct {
        guint8 type, bit;
        const char *name;
    } features[] = {
        { 0, 0, "dirty bit" },
        { 0, 1, "corrupt bit" },
        { 0, 2, "external data file" },
        { 0, 3, "compression type" },
        { 0, 4, "extended L2 entries" },
        { 1, 0, "lazy refcounts" },
        { 2, 0, "bitmaps" },
        { 2, 1, "raw external data" },
    };
    memset(out, 0, G_N_ELEMENTS(features) * 48);
    for (guint i = 0; i < G_N_ELEMENTS(features); i++) {
        out[i * 48] = features[i].type;
        out[i * 48 + 1] = features[i].bit;
        memcpy(out + i * 48 + 2, features[i].name, strlen(features[i].name));
    }
    return G_N_ELEMENTS(features) * 48;
}

/* The header cluster of a new image: header, extensions, backing name.
 * The refcount table is cluster 1 and its first block cluster 2. */
static gboolean build_header(const VdCreateParams *p, const CreateOpts *o, guint8 *h,
                             GError **error)
{
    guint64 cs = o->cluster_size;
    vd_put_be32(h + QH_MAGIC, QCOW2_MAGIC);
    vd_put_be32(h + QH_VERSION, (guint32)o->version);
    vd_put_be32(h + QH_CLUSTER_BITS, (guint32)g_bit_nth_lsf(cs, -1));
    vd_put_be64(h + QH_SIZE, 0);
    vd_put_be64(h + QH_RT_OFFSET, cs);
    vd_put_be32(h + QH_RT_CLUSTERS, 1);
    guint64 off = QH_V2_LENGTH;
    if (o->version == 3) {
        guint64 incompat = (o->compression_type ? QCOW2_INCOMPAT_COMPRESSION : 0) |
                           (o->ext_l2 ? QCOW2_INCOMPAT_EXTL2 : 0) |
                           (o->data_file != NULL ? QCOW2_INCOMPAT_DATA_FILE : 0);
        vd_put_be64(h + QH_INCOMPAT, incompat);
        vd_put_be64(h + QH_AUTOCLEAR, o->data_raw ? QCOW2_AUTOCLEAR_DATA_RAW : 0);
        vd_put_be64(h + QH_COMPAT, o->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0);
        vd_put_be32(h + QH_REFCOUNT_ORDER, o->refcount_order);
        vd_put_be32(h + QH_HEADER_LENGTH, QH_V3_LENGTH);
        h[QH_COMPRESSION_TYPE] = (guint8)o->compression_type;
        off = QH_V3_LENGTH;
    }
    /* qemu's order: backing format, (data file,) crypto, feature table. */
    gsize blen = p->backing_file != NULL ? strlen(p->backing_file) : 0;
    gsize flen = p->backing_format != NULL ? strlen(p->backing_format) : 0;
    if (flen > 0)
        off = put_extension(h, off, QCOW2_EXT_BACKING_FORMAT, p->backing_format, (guint32)flen);
    if (o->data_file != NULL)
        off =
            put_extension(h, off, QCOW2_EXT_DATA_FILE, o->data_file, (guint32)strlen(o->data_file));
    if (o->luks) {
        /* Filled in once the LUKS header has clusters (qcow2-crypto.c). */
        static const guint8 placeholder[16] = { 0 };
        off = put_extension(h, off, QCOW2_EXT_CRYPTO, placeholder, sizeof placeholder);
    }
    guint8 table[8 * 48];
    guint64 tlen = feature_table(table);
    /* The feature name table is a courtesy; like qemu, leave it out of
     * clusters of 4 KiB and less. */
    if (o->version == 3 && cs > 4096 && off + 8 + tlen + 8 + blen <= cs)
        off = put_extension(h, off, QCOW2_EXT_FEATURE_TABLE, table, (guint32)tlen);
    if (!put_backing_name(h, off, cs, p->backing_file, blen)) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "the backing file name does not fit in the header cluster");
        return FALSE;
    }
    return TRUE;
}

/* Write header, refcount table and first refcount block with counts for
 * those three clusters. */
static gboolean write_skeleton(VdFile *file, const VdCreateParams *p, const CreateOpts *o,
                               GError **error)
{
    guint64 cs = o->cluster_size;
    g_autofree guint8 *buf = g_malloc0(cs * 3);
    if (!build_header(p, o, buf, error))
        return FALSE;
    vd_put_be64(buf + cs, 2 * cs);
    for (int i = 0; i < 3; i++)
        qcow2_rb_set(buf + 2 * cs, (guint64)i, o->refcount_order, 1);
    return vd_file_pwrite(file, 0, buf, cs * 3, error);
}

/* Preallocate the guest range [offset, offset+len) (offset a cluster
 * boundary): tables and clusters, and then the file's blocks past where
 * the file ended (falloc) or zeroes there (full). */
static gboolean preallocate_data(Qcow2State *s, int mode, guint64 offset, guint64 len,
                                 GError **error)
{
    if (mode == PREALLOC_OFF)
        return TRUE;
    guint64 before, end;
    if (!vd_file_size(s->img->file, &before, error))
        return FALSE;
    /* What the file held is left as it is, to its cluster's end. */
    before = qcow2_align_up(before, s->cluster_size);
    if (!qcow2_preallocate(s, offset, len, error) || !qcow2_flush_metadata(s, error))
        return FALSE;
    if (!vd_file_size(s->img->file, &end, error))
        return FALSE;
    /* Data clusters are allocated last, so the file's tail holds them. */
    guint64 need = s->file_size;
    if (mode == PREALLOC_METADATA)
        return need <= end || vd_file_truncate(s->img->file, need, error);
    /* L2 tables sit between runs of data clusters, so the holes to fill
     * are anywhere in the file, not only at its end. */
    need = MAX(need, end);
    if (mode == PREALLOC_FALLOC)
        return need <= before || vd_file_allocate(s->img->file, before, need - before, error);
    if (mode == PREALLOC_FULL) {
        /* Real zero bytes: the point is that the blocks are there. */
        g_autofree guint8 *zero = g_malloc0(1u << 20);
        for (guint64 off = before; off < need;) {
            gboolean is_data;
            guint64 run;
            if (!vd_file_extent(s->img->file, off, need - off, &is_data, &run, error))
                return FALSE;
            run = MAX(run, 1);
            for (guint64 o = off; !is_data && o < off + run; o += 1u << 20)
                if (!vd_file_pwrite(s->img->file, o, zero, MIN(off + run - o, 1u << 20), error))
                    return FALSE;
            off += run;
        }
    }
    return TRUE;
}

/* The external data file of a new image, as qemu's file layer makes a
 * raw image: emptied, then as long as the disk, its blocks reserved
 * (falloc) or written (full). The name is the image's for it, found from
 * the image's folder as opening the image finds it. *created says whether
 * this made the file. */
static gboolean create_data_file(const VdCreateParams *p, const CreateOpts *o, char **path,
                                 gboolean *created, GError **error)
{
    *path = vd_resolve_relative(p->path, o->data_file);
    g_autoptr(VdFile) f = vd_file_create_beside(*path, created, error);
    if (f == NULL || !vd_file_truncate(f, 0, error))
        return FALSE;
    if (o->prealloc == PREALLOC_FULL) {
        g_autofree guint8 *zero = g_malloc0(1u << 20);
        for (guint64 off = 0; off < p->size; off += 1u << 20)
            if (!vd_file_pwrite(f, off, zero, MIN(p->size - off, 1u << 20), error))
                return FALSE;
    } else if (!vd_file_truncate(f, p->size, error) ||
               (o->prealloc == PREALLOC_FALLOC && p->size > 0 &&
                !vd_file_allocate(f, 0, p->size, error))) {
        return FALSE;
    }
    return p->no_flush || vd_file_sync(f, error);
}

static gboolean qcow2_create_image(VdFile *file, const VdCreateParams *p, CreateOpts o,
                                   GError **error);

static gboolean qcow2_create(VdFile *file, const VdCreateParams *p, GError **error)
{
    CreateOpts o = { 0 };
    if (!parse_create_opts(p, &o, error))
        return FALSE;
    g_autofree char *data_path = NULL;
    gboolean data_created = FALSE;
    gboolean ok = o.data_file == NULL || create_data_file(p, &o, &data_path, &data_created, error);
    ok = ok && qcow2_create_image(file, p, o, error);
    /* The caller removes the image of a failed create, this the data file
     * it made for it. */
    if (!ok && data_created)
        unlink(data_path);
    return ok;
}

/* The image itself, o as parsed. */
static gboolean qcow2_create_image(VdFile *file, const VdCreateParams *p, CreateOpts o,
                                   GError **error)
{
    if (!write_skeleton(file, p, &o, error))
        return FALSE;
    /* Then reopen what we wrote and let the normal code size the L1 table
     * and preallocate. The VdFile stays the caller's. */
    VdImage tmp = { 0 };
    tmp.drv = &vd_driver_qcow2;
    tmp.file = file;
    tmp.filename = (char *)p->path;
    tmp.flags = VD_OPEN_READ_WRITE | VD_OPEN_NO_BACKING;
    tmp.read_write = TRUE;
    gboolean ok = qcow2_open(&tmp, error);
    Qcow2State *s = tmp.priv;
    if (ok) {
        guint64 span = qcow2_l2_span(s);
        guint64 l1 = p->size / span + (p->size % span != 0);
        if (l1 * 8 > QCOW2_MAX_L1_BYTES) {
            vd_set_error(error, &tmp, VD_ERROR_INVALID_ARGUMENT,
                         "virtual size %" G_GUINT64_FORMAT " is too large for %" G_GUINT64_FORMAT
                         "-byte clusters",
                         p->size, s->cluster_size);
            ok = FALSE;
        }
        ok = ok && (l1 == 0 || qcow2_grow_l1(s, (guint32)l1, error)) &&
             qcow2_write_header_field(s, QH_SIZE, p->size, 8, error);
        if (ok)
            tmp.size = p->size;
        /* Preallocated clusters come before the LUKS header, as qemu-img
         * lays them out (their bytes are not encrypted zeroes). */
        ok = ok && preallocate_data(s, o.prealloc, 0, p->size, error);
        ok = ok && (!(o.luks || o.aes) || qcow2_crypto_create(s, p, o.aes, error)) &&
             qcow2_flush_metadata(s, error);
    }
    qcow2_close(&tmp);
    g_free(tmp.backing_name);
    g_free(tmp.backing_format);
    return ok;
}

/* ----- info, flush, resize ----- */

static void qcow2_get_info(VdImage *img, VdImageInfo *info)
{
    Qcow2State *s = img->priv;
    info->cluster_size = (guint32)s->cluster_size;
    info->dirty = (s->incompat & QCOW2_INCOMPAT_DIRTY) != 0 && !s->set_dirty;
    info->encrypted = qcow2_encrypted(s);
    if (info->snapshots != NULL)
        g_ptr_array_unref(info->snapshots);
    info->snapshots = qcow2_list_snapshots(img, NULL);
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "compat",
                          g_variant_new_string(s->version == 3 ? "1.1" : "0.10"));
    if (s->version == 3 && s->data_file_name != NULL) {
        g_variant_builder_add(&b, "{sv}", "data-file", g_variant_new_string(s->data_file_name));
        g_variant_builder_add(&b, "{sv}", "data-file-raw",
                              g_variant_new_boolean(s->autoclear & QCOW2_AUTOCLEAR_DATA_RAW));
    }
    g_variant_builder_add(&b, "{sv}", "compression-type",
                          g_variant_new_string(s->compression_type ? "zstd" : "zlib"));
    if (s->version == 3)
        g_variant_builder_add(&b, "{sv}", "lazy-refcounts",
                              g_variant_new_boolean(s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS));
    GVariant *bitmaps = qcow2_bitmaps_info(s);
    if (bitmaps != NULL)
        g_variant_builder_add(&b, "{sv}", "bitmaps", bitmaps);
    g_variant_builder_add(&b, "{sv}", "refcount-bits", g_variant_new_int32(1 << s->refcount_order));
    if (qcow2_encrypted(s))
        g_variant_builder_add(&b, "{sv}", "encrypt", qcow2_crypto_info(s));
    if (s->version == 3) {
        g_variant_builder_add(&b, "{sv}", "corrupt",
                              g_variant_new_boolean(s->incompat & QCOW2_INCOMPAT_CORRUPT));
        g_variant_builder_add(&b, "{sv}", "extended-l2", g_variant_new_boolean(s->ext_l2));
    }
    if (info->format_specific != NULL)
        g_variant_unref(info->format_specific);
    info->format_specific = g_variant_ref_sink(g_variant_builder_end(&b));
}

static gboolean qcow2_flush(VdImage *img, GError **error)
{
    Qcow2State *s = img->priv;
    if (!qcow2_flush_metadata(s, error))
        return FALSE;
    return s->data_file == NULL || vd_file_sync(s->data_file, error);
}

/* Shrink to new_size as qemu does: the clusters past the new end are
 * discarded (what they held is gone, as --shrink warns), the L2 tables
 * past it and the refcount blocks left counting nothing are freed, and
 * the file is cut after its last cluster in use (clusters in use before
 * that stay where they are). An external data file is cut at the new
 * size. The caller writes the new size into the header. */
static gboolean shrink(VdImage *img, guint64 new_size, GError **error)
{
    Qcow2State *s = img->priv;
    guint64 cs = s->cluster_size, span = qcow2_l2_span(s);
    guint64 from = qcow2_align_up(new_size, cs);
    if (from < img->size && !qcow2_discard(img, from, img->size - from, error))
        return FALSE;
    guint64 l1 = new_size / span + (new_size % span != 0);
    if (l1 < s->l1_size) {
        for (guint64 i = l1; i < s->l1_size; i++) {
            guint64 l2 = s->l1[i] & QCOW2_OFFSET_MASK;
            s->l1[i] = 0;
            if (l2 != 0 && !qcow2_free_deferred(s, l2, cs, error))
                return FALSE;
        }
        if (!qcow2_write_l1_entries(s, (guint32)l1, s->l1_size - 1, error))
            return FALSE;
    }
    guint64 file_end, used_end;
    if (!qcow2_flush_metadata(s, error) || !qcow2_shrink_refcount_table(s, error) ||
        !vd_file_size(img->file, &file_end, error) ||
        !qcow2_used_end(s, qcow2_align_up(file_end, cs), &used_end, error))
        return FALSE;
    if (used_end < file_end &&
        (!vd_file_truncate(img->file, used_end, error) || !qcow2_refresh_file_size(s, error)))
        return FALSE;
    return s->data_file == NULL || vd_file_truncate(s->data_file, new_size, error);
}

/* A resize, with [old size, new_size) preallocated as mode says when it
 * grows (PREALLOC_*). */
static gboolean resize_with(VdImage *img, guint64 new_size, int mode, GError **error)
{
    Qcow2State *s = img->priv;
    guint64 old_size = img->size, span = qcow2_l2_span(s);
    if (new_size > old_size && img->backing_name != NULL && img->backing == NULL &&
        qcow2_offset_into_cluster(s, old_size) != 0 && s->version >= 3) {
        /* The rest of the last cluster becomes zeroes; its start must be
         * copied from the backing file. */
        vd_set_error(error, img, VD_ERROR_NOT_FOUND,
                     "growing it needs its backing file '%s', which could not be opened",
                     img->backing_name);
        return FALSE;
    }
    if (new_size > (1ull << 62)) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT, "new size is too large");
        return FALSE;
    }
    /* A version 2 snapshot has no size of its own: it is the image's. A
     * version 3 one records its size, and keeps its own tables. */
    if (new_size != old_size && s->version < 3 && s->snapshots->len > 0) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "Can't resize a v2 image which has snapshots (amend -o compat=1.1 first)");
        return FALSE;
    }
    if (new_size < old_size &&
        (!qcow2_bitmaps_check_resize(s, error) || !shrink(img, new_size, error)))
        return FALSE;
    guint64 l1 = new_size / span + (new_size % span != 0);
    if (l1 * 8 > QCOW2_MAX_L1_BYTES) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "new size is too large for this cluster size");
        return FALSE;
    }
    if (!qcow2_bitmaps_check_resize(s, error))
        return FALSE;
    if (l1 > s->l1_size && !qcow2_grow_l1(s, (guint32)l1, error))
        return FALSE;
    if (!qcow2_bitmaps_resize(s, new_size, error))
        return FALSE;
    if (!qcow2_write_header_field(s, QH_SIZE, new_size, 8, error))
        return FALSE;
    img->size = new_size;
    /* Preallocated clusters read as zeroes (the file is a hole or zeroes
     * past its old end); over a backing file they are also flagged zero,
     * keeping their clusters, as qemu leaves them. The first cluster,
     * which old data may share, is left as it is. */
    guint64 from = qcow2_align_up(old_size, s->cluster_size);
    if (new_size > old_size && mode != PREALLOC_OFF) {
        if (new_size > from && !preallocate_data(s, mode, from, new_size - from, error))
            return FALSE;
        /* The part of the last cluster the image now reaches into gets its
         * blocks too, where that cluster is stored (by metadata
         * preallocation, it may be a hole). */
        VdExtent ext = { 0 };
        if ((mode == PREALLOC_FALLOC || mode == PREALLOC_FULL) && from > old_size &&
            (!qcow2_block_status(img, old_size, MIN(from, new_size) - old_size, &ext, error) ||
             (ext.kind != VD_EXTENT_UNALLOCATED && ext.offset_valid &&
              !vd_file_allocate(img->file, ext.host_offset, ext.length, error))))
            return FALSE;
        return img->backing_name == NULL || s->version < 3 ||
               qcow2_write_zeroes(img, old_size, new_size - old_size, FALSE, error);
    }
    /* The new area must read as zeroes, not as what a longer backing file
     * holds there. */
    if (new_size > old_size && img->backing_name != NULL && s->version >= 3)
        return qcow2_write_zeroes(img, old_size, new_size - old_size, TRUE, error);
    return TRUE;
}

static gboolean qcow2_resize(VdImage *img, guint64 new_size, gboolean allow_shrink, GError **error)
{
    return resize_with(img, new_size, PREALLOC_OFF, error);
}

static gboolean qcow2_grow_preallocated(VdImage *img, guint64 new_size, VdPreallocation mode,
                                        GError **error)
{
    static const int modes[] = { [VD_PREALLOC_OFF] = PREALLOC_OFF,
                                 [VD_PREALLOC_METADATA] = PREALLOC_METADATA,
                                 [VD_PREALLOC_FALLOC] = PREALLOC_FALLOC,
                                 [VD_PREALLOC_FULL] = PREALLOC_FULL };
    Qcow2State *s = img->priv;
    if (qcow2_encrypted(s) || s->data_file != NULL) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "preallocation is not supported for encrypted images or images with an "
                     "external data file");
        return FALSE;
    }
    return resize_with(img, new_size, modes[mode], error);
}

/* ----- rebase: a new backing file name in the header cluster ----- */

/* Rewrite the header cluster: the header as it is, every extension but the
 * backing format one (in their order, kept byte for byte), the new backing
 * format extension, then the backing file name. */
/* The header rebuilt as qemu's qcow2_update_header writes it: the fields
 * from s, the extensions in qemu's order (backing format, data file,
 * crypto header, feature table, bitmaps, then the unknown ones as they
 * were), the backing file name last. With set_backing, name and format
 * (NULL: none) replace the backing file's. */
static gboolean write_header(Qcow2State *s, gboolean set_backing, const char *name,
                             const char *format, GError **error)
{
    VdImage *img = s->img;
    guint64 cs = s->cluster_size;
    g_autofree guint8 *old = g_malloc0(cs);
    g_autofree guint8 *h = g_malloc0(cs);
    /* Everything the header points at is durable before it changes, and
     * the dirty bit that flush may clear is not written back. */
    if (!qcow2_flush_metadata(s, error) || !vd_file_sync(img->file, error) ||
        !vd_file_pread_zero_past_eof(img->file, 0, old, cs, error))
        return FALSE;
    memcpy(h, old, QH_V2_LENGTH);
    vd_put_be32(h + QH_VERSION, (guint32)s->version);
    vd_put_be64(h + QH_SIZE, img->size);
    guint64 off = QH_V2_LENGTH;
    if (s->version == 3) {
        vd_put_be64(h + QH_INCOMPAT, s->incompat);
        vd_put_be64(h + QH_COMPAT, s->compat);
        vd_put_be64(h + QH_AUTOCLEAR, s->autoclear);
        vd_put_be32(h + QH_REFCOUNT_ORDER, s->refcount_order);
        vd_put_be32(h + QH_HEADER_LENGTH, QH_V3_LENGTH);
        h[QH_COMPRESSION_TYPE] = (guint8)s->compression_type;
        off = QH_V3_LENGTH;
    }
    /* The extensions as they are, by type, in qemu's order. */
    static const guint32 order[] = { QCOW2_EXT_BACKING_FORMAT, QCOW2_EXT_DATA_FILE,
                                     QCOW2_EXT_CRYPTO,         QCOW2_EXT_FEATURE_TABLE,
                                     QCOW2_EXT_BITMAPS,        0 };
    for (guint k = 0; k < G_N_ELEMENTS(order); k++) {
        if (order[k] == QCOW2_EXT_DATA_FILE) {
            if (s->version == 3 && s->data_file_name != NULL)
                off = put_extension(h, off, QCOW2_EXT_DATA_FILE, s->data_file_name,
                                    (guint32)strlen(s->data_file_name));
            continue;
        }
        if (order[k] == QCOW2_EXT_BACKING_FORMAT && set_backing) {
            if (name != NULL && *name != '\0' && format != NULL && *format != '\0')
                off = put_extension(h, off, QCOW2_EXT_BACKING_FORMAT, format,
                                    (guint32)strlen(format));
            continue;
        }
        if (order[k] == QCOW2_EXT_FEATURE_TABLE) {
            guint8 table[8 * 48];
            guint32 tlen = (guint32)feature_table(table);
            if (s->version == 3 && cs > 4096 && off + 8 + tlen <= cs)
                off = put_extension(h, off, QCOW2_EXT_FEATURE_TABLE, table, tlen);
            continue;
        }
        for (guint64 pos = s->header_length; pos + 8 <= cs;) {
            guint32 type = vd_be32(old + pos), len = vd_be32(old + pos + 4);
            if (type == QCOW2_EXT_END || len > cs - pos - 8)
                break;
            gboolean known = type == QCOW2_EXT_BACKING_FORMAT || type == QCOW2_EXT_DATA_FILE ||
                             type == QCOW2_EXT_CRYPTO || type == QCOW2_EXT_FEATURE_TABLE ||
                             type == QCOW2_EXT_BITMAPS;
            gboolean emit = order[k] == 0 ? !known : type == order[k];
            if (emit && off + 8 + qcow2_align_up(len, 8) + 8 > cs) {
                vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                             "the header extensions do not fit in the header cluster");
                return FALSE;
            }
            if (emit)
                off = put_extension(h, off, type, old + pos + 8, len);
            pos += 8 + qcow2_align_up(len, 8);
        }
    }
    g_autofree char *old_name = NULL;
    if (!set_backing) {
        guint64 boff = vd_be64(old + QH_BACKING_OFFSET);
        guint32 len = vd_be32(old + QH_BACKING_SIZE);
        if (boff == 0 || boff > cs || len > cs - boff)
            len = 0;
        name = old_name = g_strndup((const char *)old + boff, len);
    }
    gsize blen = name != NULL ? strlen(name) : 0;
    if (!put_backing_name(h, off, cs, name, blen)) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "the backing file name does not fit in the header cluster");
        return FALSE;
    }
    if (!vd_file_pwrite(img->file, 0, h, cs, error) || !vd_file_sync(img->file, error))
        return FALSE;
    s->header_length = s->version == 3 ? QH_V3_LENGTH : QH_V2_LENGTH;
    return TRUE;
}

gboolean qcow2_rewrite_header(Qcow2State *s, GError **error)
{
    return write_header(s, FALSE, NULL, NULL, error);
}

static gboolean qcow2_set_backing(VdImage *img, const char *name, const char *format,
                                  GError **error)
{
    Qcow2State *s = img->priv;
    gsize blen = name != NULL ? strlen(name) : 0, flen = format != NULL ? strlen(format) : 0;
    if (blen > QCOW2_MAX_BACKING_NAME) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "the backing file name is longer than 1023 bytes");
        return FALSE;
    }
    if (blen > 0 && s->data_file != NULL && (s->autoclear & QCOW2_AUTOCLEAR_DATA_RAW)) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "an image with a raw external data file cannot have a backing file");
        return FALSE;
    }
    /* Everything else is written first: the header names the new file
     * last (write_header flushes before it writes). */
    if (!write_header(s, TRUE, blen > 0 ? name : NULL, format, error))
        return FALSE;
    g_free(img->backing_name);
    g_free(img->backing_format);
    img->backing_name = blen > 0 ? g_strdup(name) : NULL;
    img->backing_format = blen > 0 && flen > 0 ? g_strdup(format) : NULL;
    return TRUE;
}

gboolean qcow2_write_bitmaps_extension(Qcow2State *s, GError **error)
{
    VdImage *img = s->img;
    guint64 cs = s->cluster_size;
    g_autofree guint8 *old = g_malloc0(cs);
    g_autofree guint8 *h = g_malloc0(cs);
    guint64 off;
    if (!copy_header_without(s, QCOW2_EXT_BITMAPS, old, h, &off, error))
        return FALSE;
    if (s->nb_bitmaps > 0) {
        guint8 ext[24] = { 0 };
        vd_put_be32(ext, s->nb_bitmaps);
        vd_put_be64(ext + 8, s->bitmap_dir_size);
        vd_put_be64(ext + 16, s->bitmap_dir_offset);
        off = put_extension(h, off, QCOW2_EXT_BITMAPS, ext, sizeof ext);
        s->autoclear |= QCOW2_AUTOCLEAR_BITMAPS;
    } else {
        s->autoclear &= ~QCOW2_AUTOCLEAR_BITMAPS;
    }
    vd_put_be64(h + QH_AUTOCLEAR, s->autoclear);
    guint64 boff = vd_be64(old + QH_BACKING_OFFSET);
    guint32 blen = vd_be32(old + QH_BACKING_SIZE);
    if (boff == 0 || boff > cs || blen > cs - boff)
        blen = 0;
    g_autofree char *name = g_strndup((const char *)old + boff, blen);
    if (!put_backing_name(h, off, cs, name, blen)) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "the bitmaps extension does not fit in the header cluster");
        return FALSE;
    }
    return vd_file_sync(img->file, error) && vd_file_pwrite(img->file, 0, h, cs, error) &&
           vd_file_sync(img->file, error);
}

static gboolean qcow2_has_zero_init(VdImage *img)
{
    Qcow2State *s = img->priv;
    /* As in qemu: preallocated clusters of an encrypted image decrypt to
     * noise, and an image with its first L2 table is taken as preallocated. */
    if (qcow2_encrypted(s) && s->l1_size > 0 && s->l1[0] != 0)
        return FALSE;
    return s->data_file == NULL && !s->prealloc_junk;
}

static guint32 qcow2_cluster_size(VdImage *img) { return (guint32)qcow2_state(img)->cluster_size; }

/* The header a create with these options writes, and nothing a convert
 * leaves behind (snapshots, bitmaps, a backing or data
 * file, encryption, the dirty or corrupt bit). */
static gboolean qcow2_same_as_new(VdImage *img, VdOptions *create_options)
{
    Qcow2State *s = img->priv;
    CreateOpts o = { 0 };
    VdCreateParams p = { .size = img->size, .options = create_options };
    if (!parse_create_opts(&p, &o, NULL))
        return FALSE;
    guint64 incompat =
        (o.compression_type != QCOW2_COMPRESSION_ZLIB ? QCOW2_INCOMPAT_COMPRESSION : 0) |
        (o.ext_l2 ? QCOW2_INCOMPAT_EXTL2 : 0);
    return o.version == s->version && o.cluster_size == s->cluster_size &&
           o.refcount_order == s->refcount_order &&
           o.lazy_refcounts == ((s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS) != 0) &&
           o.compression_type == s->compression_type && o.ext_l2 == s->ext_l2 &&
           o.prealloc == PREALLOC_OFF && !o.luks && !o.aes && s->crypt_method == QCOW2_CRYPT_NONE &&
           s->incompat == incompat && s->autoclear == 0 && s->snapshots->len == 0 &&
           s->nb_bitmaps == 0 && s->data_file == NULL && img->backing_name == NULL &&
           !s->snapshot_loaded;
}

static gsize qcow2_compress(VdImage *img, const void *in, gsize len, void *out, gsize out_len)
{
    Qcow2State *s = img->priv;
    if (len > s->cluster_size || s->data_file != NULL || qcow2_encrypted(s))
        return 0;
    g_autofree guint8 *padded = NULL;
    if (len < s->cluster_size) {
        /* The last cluster of an image is stored as a whole cluster. */
        padded = g_malloc0(s->cluster_size);
        memcpy(padded, in, len);
        in = padded;
    }
    gsize limit = MIN(out_len, s->cluster_size - 1);
    if (len < s->cluster_size)
        limit = MIN(limit, len > 0 ? len - 1 : 0);
    gsize n = qcow2_compress_buffer(s->compression_type, in, s->cluster_size, out, limit);
    return n;
}

/* In the order of qemu-img's "Formatting" line. */
static const VdCreateOption qcow2_create_options[] = {
    { "encryption", VD_OPTION_BOOL, NULL,
      "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)" },
    { "encrypt.format", VD_OPTION_STRING, NULL,
      "Encrypt the image, format choices: 'aes', 'luks'" },
    { "encrypt.key-secret", VD_OPTION_STRING, NULL,
      "ID of secret providing qcow AES key or LUKS passphrase" },
    { "encrypt.cipher-alg", VD_OPTION_STRING, NULL, "Name of encryption cipher algorithm" },
    { "encrypt.cipher-mode", VD_OPTION_STRING, NULL, "Name of encryption cipher mode" },
    { "encrypt.ivgen-alg", VD_OPTION_STRING, NULL, "Name of IV generator algorithm" },
    { "encrypt.ivgen-hash-alg", VD_OPTION_STRING, NULL, "Name of IV generator hash algorithm" },
    { "encrypt.hash-alg", VD_OPTION_STRING, NULL, "Name of encryption hash algorithm" },
    { "encrypt.iter-time", VD_OPTION_NUMBER, NULL, "Time to spend in PBKDF in milliseconds" },
    { "cluster_size", VD_OPTION_SIZE, "65536", "qcow2 cluster size" },
    { "extended_l2", VD_OPTION_BOOL, "off", "Extended L2 tables" },
    { "preallocation", VD_OPTION_STRING, NULL,
      "Preallocation mode (allowed values: off, metadata, falloc, full)" },
    { "compression_type", VD_OPTION_STRING, "zlib",
      "Compression method used for image cluster compression" },
    { "size", VD_OPTION_SIZE, NULL, "Virtual disk size" },
    { "compat", VD_OPTION_STRING, NULL, "Compatibility level (v2 [0.10] or v3 [1.1])" },
    { "backing_file", VD_OPTION_STRING, NULL, "File name of a base image" },
    { "backing_fmt", VD_OPTION_STRING, NULL, "Image format of the base image" },
    { "data_file", VD_OPTION_STRING, NULL, "File name of an external data file" },
    { "data_file_raw", VD_OPTION_BOOL, NULL,
      "The external data file must stay valid as a raw image" },
    { "lazy_refcounts", VD_OPTION_BOOL, "off", "Postpone refcount updates" },
    { "refcount_bits", VD_OPTION_NUMBER, "16", "Width of a reference count entry in bits" },
    { NULL },
};

const VdDriver vd_driver_qcow2 = {
    .name = "qcow2",
    .create_options = qcow2_create_options,
    .probe = qcow2_probe,
    .open = qcow2_open,
    .close = qcow2_close,
    .create = qcow2_create,
    .block_status = qcow2_block_status,
    .read = qcow2_read,
    .write = qcow2_write,
    .write_from_file = qcow2_write_from_file,
    .write_zeroes = qcow2_write_zeroes,
    .discard = qcow2_discard,
    .compress = qcow2_compress,
    .write_compressed = qcow2_write_compressed,
    .packed_unit = qcow2_packed_unit,
    .inflate_unit = qcow2_inflate_unit,
    .flush = qcow2_flush,
    .resize = qcow2_resize,
    .grow_preallocated = qcow2_grow_preallocated,
    .get_info = qcow2_get_info,
    .check = qcow2_check,
    .list_snapshots = qcow2_list_snapshots,
    .create_snapshot = qcow2_create_snapshot,
    .apply_snapshot = qcow2_apply_snapshot,
    .delete_snapshot = qcow2_delete_snapshot,
    .load_snapshot = qcow2_load_snapshot,
    .has_zero_init = qcow2_has_zero_init,
    .cluster_size = qcow2_cluster_size,
    .same_as_new = qcow2_same_as_new,
    .amend = qcow2_amend,
    .set_backing = qcow2_set_backing,
    .bitmap = qcow2_bitmap_change,
    .make_empty = qcow2_make_empty,
};
