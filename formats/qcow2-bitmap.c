/* qcow2 persistent dirty bitmaps (the "bitmaps" header extension).
 *
 * Backup tools and libvirt's checkpoints keep bitmaps in qcow2 images: each
 * says which parts of the disk were written since some point in time. An
 * "auto" (enabled) bitmap must show every write any program makes, so a
 * program that writes without updating them must clear the autoclear bit,
 * and every bitmap is lost. vdisk keeps them instead, as qemu does:
 *
 *   - at a read-write open the directory is read, and each enabled bitmap
 *     is flagged in_use on disk (synced) before the first write;
 *   - writes, zeroing, discards and snapshot switches set bits in memory,
 *     one buffer per bitmap data cluster that changes;
 *   - at close the new bits are OR-ed into the bitmap data, then in_use is
 *     cleared. A crash in between leaves in_use set: the bitmap is then
 *     known to be inconsistent, which is the truth.
 *
 * Resizing resizes every bitmap's table. When a bitmap cannot be kept
 * (unknown type or flags, incompatible extra data, a table that does not
 * match the disk), the old rule applies: the autoclear bit is cleared and
 * all bitmaps count as inconsistent.
 */
#include "qcow2.h"

#include <string.h>

#define BME_FLAG_IN_USE (1u << 0)
#define BME_FLAG_AUTO (1u << 1)
#define BME_FLAG_EXTRA_COMPATIBLE (1u << 2)
#define BME_KNOWN_FLAGS (BME_FLAG_IN_USE | BME_FLAG_AUTO | BME_FLAG_EXTRA_COMPATIBLE)
#define BME_TYPE_DIRTY 1
#define BME_MIN_GRANULARITY_BITS 9
#define BME_MAX_GRANULARITY_BITS 31
#define BME_MAX_NAME 1023
#define BME_ENTRY_FIXED 24
/* Bitmap table entry: bit 0 "all ones" when there is no cluster. */
#define BME_TABLE_ALL_ONES 1ull

struct Qcow2Bitmap {
    char *name;
    guint64 table_offset;
    guint32 table_size;
    guint32 flags;
    guint8 type;
    guint8 granularity_bits;
    guint32 extra_size;
    guint64 entry_pos; /* of this entry in the directory */
    gboolean tracked;  /* enabled, and kept up to date by this open */
    /* Bits set since the open: table index -> one cluster of bitmap data. */
    GHashTable *dirty;
};

static void bitmap_free(Qcow2Bitmap *bm)
{
    g_free(bm->name);
    g_clear_pointer(&bm->dirty, g_hash_table_unref);
    g_free(bm);
}

/* ----- geometry ----- */

static guint64 bitmap_bits(guint64 disk_size, guint granularity_bits)
{
    return (disk_size + (1ull << granularity_bits) - 1) >> granularity_bits;
}

static guint64 bits_per_cluster(Qcow2State *s) { return s->cluster_size * 8; }

/* Table entries a bitmap of this granularity needs for disk_size. */
static guint64 table_entries(Qcow2State *s, guint64 disk_size, guint granularity_bits)
{
    guint64 bits = bitmap_bits(disk_size, granularity_bits);
    return (bits + bits_per_cluster(s) - 1) / bits_per_cluster(s);
}

/* Can vdisk read and keep this bitmap up to date at disk_size? */
static gboolean usable(Qcow2State *s, const Qcow2Bitmap *bm, guint64 disk_size)
{
    return bm->type == BME_TYPE_DIRTY && (bm->flags & ~BME_KNOWN_FLAGS) == 0 &&
           bm->granularity_bits >= BME_MIN_GRANULARITY_BITS &&
           bm->granularity_bits <= BME_MAX_GRANULARITY_BITS &&
           (bm->extra_size == 0 || (bm->flags & BME_FLAG_EXTRA_COMPATIBLE)) &&
           bm->table_size == table_entries(s, disk_size, bm->granularity_bits);
}

/* ----- the directory ----- */

static gboolean dir_invalid(Qcow2State *s, const char *why, GError **error)
{
    vd_set_error(error, s->img, VD_ERROR_CORRUPT, "the bitmap directory is invalid: %s", why);
    return FALSE;
}

static gboolean parse_entry(Qcow2State *s, const guint8 *dir, guint64 size, guint64 *pos,
                            Qcow2Bitmap **out, GError **error)
{
    const guint8 *e = dir + *pos;
    if (size - *pos < BME_ENTRY_FIXED)
        return dir_invalid(s, "an entry runs past its end", error);
    guint32 name_size = vd_be16(e + 18), extra = vd_be32(e + 20);
    guint64 len = qcow2_align_up((guint64)BME_ENTRY_FIXED + extra + name_size, 8);
    if (name_size == 0 || name_size > BME_MAX_NAME || len > size - *pos)
        return dir_invalid(s, "an entry has a bad name or extra data size", error);
    Qcow2Bitmap *bm = g_new0(Qcow2Bitmap, 1);
    bm->table_offset = vd_be64(e);
    bm->table_size = vd_be32(e + 8);
    bm->flags = vd_be32(e + 12);
    bm->type = e[16];
    bm->granularity_bits = e[17];
    bm->extra_size = extra;
    bm->entry_pos = *pos;
    bm->name = g_strndup((const char *)e + BME_ENTRY_FIXED + extra, name_size);
    *out = bm;
    *pos += len;
    if ((bm->table_offset & (s->cluster_size - 1)) != 0 ||
        (guint64)bm->table_size * 8 > QCOW2_MAX_L1_BYTES ||
        (bm->table_size > 0 && !qcow2_in_file(s, bm->table_offset, (guint64)bm->table_size * 8)))
        return dir_invalid(s, "a bitmap table lies outside the file", error);
    return TRUE;
}

gboolean qcow2_bitmaps_read_directory(Qcow2State *s, GPtrArray **out, GError **error)
{
    *out = NULL;
    guint64 size = s->bitmap_dir_size, off = s->bitmap_dir_offset;
    if (s->nb_bitmaps == 0 || size > QCOW2_MAX_SNAPSHOT_TABLE ||
        (off & (s->cluster_size - 1)) != 0 || !qcow2_in_file(s, off, size))
        return dir_invalid(s, "it lies outside the file", error);
    if (!vd_image_charge_metadata(s->img, size, "bitmap directory", error))
        return FALSE;
    g_autofree guint8 *dir = g_malloc(MAX(size, 1));
    if (!vd_file_pread(s->img->file, off, dir, size, error))
        return FALSE;
    g_autoptr(GPtrArray) list = g_ptr_array_new_with_free_func((GDestroyNotify)bitmap_free);
    guint64 pos = 0;
    for (guint32 i = 0; i < s->nb_bitmaps; i++) {
        Qcow2Bitmap *bm = NULL;
        gboolean ok = parse_entry(s, dir, size, &pos, &bm, error);
        if (bm != NULL)
            g_ptr_array_add(list, bm);
        if (!ok)
            return FALSE;
    }
    *out = g_steal_pointer(&list);
    return TRUE;
}

void qcow2_bitmap_table_range(const Qcow2Bitmap *bm, guint64 *offset, guint64 *length)
{
    *offset = bm->table_offset;
    *length = (guint64)bm->table_size * 8;
}

/* Write the fields of one directory entry that vdisk changes. */
static gboolean write_entry(Qcow2State *s, const Qcow2Bitmap *bm, GError **error)
{
    guint8 fixed[16];
    vd_put_be64(fixed, bm->table_offset);
    vd_put_be32(fixed + 8, bm->table_size);
    vd_put_be32(fixed + 12, bm->flags);
    return vd_file_pwrite(s->img->file, s->bitmap_dir_offset + bm->entry_pos, fixed, sizeof fixed,
                          error);
}

static gboolean read_table(Qcow2State *s, const Qcow2Bitmap *bm, guint64 **table, GError **error)
{
    gsize bytes = (gsize)bm->table_size * 8;
    guint8 *raw = g_malloc(MAX(bytes, 1));
    if (!vd_file_pread(s->img->file, bm->table_offset, raw, bytes, error)) {
        g_free(raw);
        return FALSE;
    }
    guint64 *t = (guint64 *)raw;
    for (guint32 i = 0; i < bm->table_size; i++)
        t[i] = vd_be64(raw + (gsize)i * 8);
    *table = t;
    return TRUE;
}

static gboolean write_table(Qcow2State *s, guint64 offset, const guint64 *table, guint32 n,
                            GError **error)
{
    g_autofree guint8 *raw = g_malloc(MAX((gsize)n * 8, 1));
    for (guint32 i = 0; i < n; i++)
        vd_put_be64(raw + (gsize)i * 8, table[i]);
    return vd_file_pwrite(s->img->file, offset, raw, (gsize)n * 8, error);
}

/* ----- open ----- */

/* Flag the enabled bitmaps in_use on disk, synced before any write. */
static gboolean start_tracking(Qcow2State *s, GError **error)
{
    gboolean any = FALSE;
    for (guint i = 0; i < s->bitmaps->len; i++) {
        Qcow2Bitmap *bm = s->bitmaps->pdata[i];
        if (!bm->tracked)
            continue;
        bm->flags |= BME_FLAG_IN_USE;
        bm->dirty = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
        if (!write_entry(s, bm, error))
            return FALSE;
        any = TRUE;
    }
    return !any || vd_file_sync(s->img->file, error);
}

gboolean qcow2_bitmaps_open(Qcow2State *s, gboolean *kept, GError **error)
{
    *kept = FALSE;
    g_autoptr(GPtrArray) list = NULL;
    g_autoptr(GError) local = NULL;
    if (!qcow2_bitmaps_read_directory(s, &list, &local)) {
        if (local->domain != VD_ERROR || local->code != VD_ERROR_CORRUPT) {
            g_propagate_error(error, g_steal_pointer(&local));
            return FALSE;
        }
        return TRUE; /* a broken directory: the bitmaps are given up */
    }
    for (guint i = 0; i < list->len; i++) {
        Qcow2Bitmap *bm = list->pdata[i];
        gboolean in_use = (bm->flags & BME_FLAG_IN_USE) != 0;
        /* An enabled bitmap vdisk cannot update would go stale. */
        if ((bm->flags & BME_FLAG_AUTO) && !in_use && !usable(s, bm, s->img->size))
            return TRUE;
        bm->tracked = (bm->flags & BME_FLAG_AUTO) && !in_use;
    }
    s->bitmaps = g_steal_pointer(&list);
    *kept = TRUE;
    return start_tracking(s, error);
}

/* ----- marking ----- */

static void set_bits(guint8 *data, guint64 first, guint64 last)
{
    for (guint64 b = first; b <= last;) {
        if ((b & 7) == 0 && last - b >= 7) {
            guint64 bytes = (last - b + 1) / 8;
            memset(data + b / 8, 0xff, bytes);
            b += bytes * 8;
        } else {
            data[b / 8] |= (guint8)(1u << (b & 7));
            b++;
        }
    }
}

static void mark_bitmap(Qcow2State *s, Qcow2Bitmap *bm, guint64 offset, guint64 len)
{
    guint64 nbits = bitmap_bits(s->img->size, bm->granularity_bits);
    guint64 first = offset >> bm->granularity_bits;
    guint64 last = MIN((offset + len - 1) >> bm->granularity_bits, nbits - 1);
    guint64 per = bits_per_cluster(s);
    while (first <= last) {
        guint64 index = first / per, end = MIN(last, index * per + per - 1);
        guint8 *data = g_hash_table_lookup(bm->dirty, GSIZE_TO_POINTER(index));
        if (data == NULL) {
            data = g_malloc0(s->cluster_size);
            g_hash_table_insert(bm->dirty, GSIZE_TO_POINTER(index), data);
        }
        set_bits(data, first - index * per, end - index * per);
        first = end + 1;
    }
}

void qcow2_bitmaps_mark(Qcow2State *s, guint64 offset, guint64 len)
{
    if (s->bitmaps == NULL || len == 0 || offset >= s->img->size)
        return;
    len = MIN(len, s->img->size - offset);
    for (guint i = 0; i < s->bitmaps->len; i++) {
        Qcow2Bitmap *bm = s->bitmaps->pdata[i];
        if (bm->tracked)
            mark_bitmap(s, bm, offset, len);
    }
}

/* ----- storing ----- */

/* Keep only bits [0, nbits) of the cluster at table index: the unused
 * tail of the last cluster must be zero. */
static void clear_tail(Qcow2State *s, guint8 *data, guint64 index, guint64 nbits)
{
    guint64 per = bits_per_cluster(s), start = index * per;
    for (guint64 b = nbits > start ? nbits - start : 0; b < per; b++)
        data[b / 8] &= (guint8) ~(1u << (b & 7));
}

/* OR one cluster of new bits into table entry *entry; allocates the
 * cluster of a table entry that reads as all zeros. */
static gboolean merge_cluster(Qcow2State *s, guint64 *entry, guint8 *bits, gboolean *allocated,
                              GError **error)
{
    guint64 host = *entry & QCOW2_OFFSET_MASK;
    if (host == 0 && (*entry & BME_TABLE_ALL_ONES))
        return TRUE; /* already all set */
    if (host == 0) {
        if (!qcow2_alloc_clusters(s, 1, &host, error))
            return FALSE;
        *entry = host;
        *allocated = TRUE;
        return vd_file_pwrite(s->img->file, host, bits, s->cluster_size, error);
    }
    g_autofree guint8 *old = g_malloc(s->cluster_size);
    if (!vd_file_pread(s->img->file, host, old, s->cluster_size, error))
        return FALSE;
    for (guint64 i = 0; i < s->cluster_size; i++)
        old[i] |= bits[i];
    return vd_file_pwrite(s->img->file, host, old, s->cluster_size, error);
}

static gboolean store_bitmap(Qcow2State *s, Qcow2Bitmap *bm, GError **error)
{
    if (g_hash_table_size(bm->dirty) == 0)
        return TRUE;
    g_autofree guint64 *table = NULL;
    if (!read_table(s, bm, &table, error))
        return FALSE;
    guint64 nbits = bitmap_bits(s->img->size, bm->granularity_bits);
    gboolean allocated = FALSE;
    GHashTableIter it;
    gpointer key, value;
    g_hash_table_iter_init(&it, bm->dirty);
    while (g_hash_table_iter_next(&it, &key, &value)) {
        guint64 index = GPOINTER_TO_SIZE(key);
        if (index >= bm->table_size)
            continue; /* past a shrunk end */
        clear_tail(s, value, index, nbits);
        if (!merge_cluster(s, &table[index], value, &allocated, error))
            return FALSE;
    }
    g_hash_table_remove_all(bm->dirty);
    /* Clusters newly allocated for the bitmap have their refcounts on
     * stable storage before the table names them, or a crash could leave
     * a referenced cluster with a refcount of 0. */
    if (allocated &&
        (!qcow2_cache_flush(s, s->rb_cache, error) || !vd_file_sync(s->img->file, error)))
        return FALSE;
    return write_table(s, bm->table_offset, table, bm->table_size, error);
}

gboolean qcow2_bitmaps_store(Qcow2State *s, GError **error)
{
    if (s->bitmaps == NULL)
        return TRUE;
    gboolean any = FALSE;
    for (guint i = 0; i < s->bitmaps->len; i++) {
        Qcow2Bitmap *bm = s->bitmaps->pdata[i];
        if (bm->tracked && !store_bitmap(s, bm, error))
            return FALSE;
        any |= bm->tracked;
    }
    if (!any)
        return TRUE;
    /* The data and its refcounts are on disk before in_use goes. */
    if (!qcow2_flush_metadata(s, error) || !vd_file_sync(s->img->file, error))
        return FALSE;
    for (guint i = 0; i < s->bitmaps->len; i++) {
        Qcow2Bitmap *bm = s->bitmaps->pdata[i];
        if (!bm->tracked)
            continue;
        bm->flags &= ~BME_FLAG_IN_USE;
        bm->tracked = FALSE;
        if (!write_entry(s, bm, error))
            return FALSE;
    }
    return vd_file_sync(s->img->file, error);
}

void qcow2_bitmaps_free(Qcow2State *s) { g_clear_pointer(&s->bitmaps, g_ptr_array_unref); }

/* ----- info ----- */

GVariant *qcow2_bitmaps_info(Qcow2State *s)
{
    /* An open that keeps the bitmaps has the directory as it is on disk. */
    g_autoptr(GPtrArray) read = NULL;
    GPtrArray *list = s->bitmaps;
    if (list == NULL) {
        if (s->nb_bitmaps == 0 || !(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS) ||
            !qcow2_bitmaps_read_directory(s, &read, NULL))
            return NULL;
        list = read;
    }
    GVariantBuilder all;
    g_variant_builder_init(&all, G_VARIANT_TYPE("aa{sv}"));
    for (guint i = 0; i < list->len; i++) {
        const Qcow2Bitmap *bm = list->pdata[i];
        GVariantBuilder flags, one;
        g_variant_builder_init(&flags, G_VARIANT_TYPE_STRING_ARRAY);
        if (bm->flags & BME_FLAG_IN_USE)
            g_variant_builder_add(&flags, "s", "in-use");
        if (bm->flags & BME_FLAG_AUTO)
            g_variant_builder_add(&flags, "s", "auto");
        g_variant_builder_init(&one, G_VARIANT_TYPE_VARDICT);
        g_variant_builder_add(&one, "{sv}", "flags", g_variant_builder_end(&flags));
        g_variant_builder_add(&one, "{sv}", "name", g_variant_new_string(bm->name));
        g_variant_builder_add(&one, "{sv}", "granularity",
                              g_variant_new_uint32(1u << MIN(bm->granularity_bits, 31)));
        g_variant_builder_add_value(&all, g_variant_builder_end(&one));
    }
    return g_variant_builder_end(&all);
}

/* ----- resizing ----- */

gboolean qcow2_bitmaps_check_resize(Qcow2State *s, GError **error)
{
    for (guint i = 0; s->bitmaps != NULL && i < s->bitmaps->len; i++) {
        Qcow2Bitmap *bm = s->bitmaps->pdata[i];
        if ((bm->flags & BME_FLAG_IN_USE) && !bm->tracked) {
            vd_set_error(error, s->img, VD_ERROR_NOT_SUPPORTED,
                         "cannot resize: the bitmap '%s' is inconsistent (in use); remove it "
                         "first (qemu-img bitmap --remove)",
                         bm->name);
            return FALSE;
        }
        if (!usable(s, bm, s->img->size)) {
            vd_set_error(error, s->img, VD_ERROR_NOT_SUPPORTED,
                         "cannot resize: the bitmap '%s' is of a kind vdisk cannot resize",
                         bm->name);
            return FALSE;
        }
    }
    return TRUE;
}

/* Zero the bits of the last data cluster past the bitmap's new end. */
static gboolean clear_table_tail(Qcow2State *s, guint64 *table, guint32 n, guint64 nbits,
                                 GError **error)
{
    if (n == 0 || nbits % bits_per_cluster(s) == 0)
        return TRUE;
    guint64 *entry = &table[n - 1], host = *entry & QCOW2_OFFSET_MASK;
    g_autofree guint8 *data = g_malloc(s->cluster_size);
    if (host == 0 && !(*entry & BME_TABLE_ALL_ONES))
        return TRUE; /* all zeros */
    if (host == 0) {
        memset(data, 0xff, s->cluster_size);
        if (!qcow2_alloc_clusters(s, 1, &host, error))
            return FALSE;
        *entry = host;
    } else if (!vd_file_pread(s->img->file, host, data, s->cluster_size, error)) {
        return FALSE;
    }
    clear_tail(s, data, n - 1, nbits);
    return vd_file_pwrite(s->img->file, host, data, s->cluster_size, error);
}

static gboolean resize_bitmap(Qcow2State *s, Qcow2Bitmap *bm, guint64 new_size, GError **error)
{
    guint64 n = table_entries(s, new_size, bm->granularity_bits);
    g_autofree guint64 *old = NULL;
    if (!read_table(s, bm, &old, error))
        return FALSE;
    g_autofree guint64 *table = g_new0(guint64, MAX(n, 1));
    memcpy(table, old, MIN(n, (guint64)bm->table_size) * 8);
    if (!clear_table_tail(s, table, (guint32)n, bitmap_bits(new_size, bm->granularity_bits), error))
        return FALSE;
    guint64 old_offset = bm->table_offset, old_bytes = (guint64)bm->table_size * 8;
    guint64 bytes = n * 8, offset = 0;
    if (bytes > 0 &&
        (!qcow2_alloc_clusters(s, qcow2_align_up(bytes, s->cluster_size) >> s->cluster_bits,
                               &offset, error) ||
         !write_table(s, offset, table, (guint32)n, error)))
        return FALSE;
    bm->table_offset = offset;
    bm->table_size = (guint32)n;
    if (!qcow2_flush_metadata(s, error) || !vd_file_sync(s->img->file, error) ||
        !write_entry(s, bm, error))
        return FALSE;
    /* Nothing points at the old table or the dropped data any more. */
    for (guint64 i = n; i < old_bytes / 8; i++) {
        guint64 host = old[i] & QCOW2_OFFSET_MASK;
        if (host != 0 && !qcow2_free_deferred(s, host, s->cluster_size, error))
            return FALSE;
    }
    return old_bytes == 0 || qcow2_free_deferred(s, old_offset, old_bytes, error);
}

gboolean qcow2_bitmaps_resize(Qcow2State *s, guint64 new_size, GError **error)
{
    for (guint i = 0; s->bitmaps != NULL && i < s->bitmaps->len; i++) {
        Qcow2Bitmap *bm = s->bitmaps->pdata[i];
        /* New bits of a tracked bitmap are stored against the new size. */
        if (bm->tracked && !store_bitmap(s, bm, error))
            return FALSE;
        if (table_entries(s, new_size, bm->granularity_bits) != bm->table_size ||
            new_size < s->img->size) {
            if (!resize_bitmap(s, bm, new_size, error))
                return FALSE;
        }
    }
    return TRUE;
}
