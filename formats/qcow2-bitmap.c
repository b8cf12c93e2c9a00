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

/* ----- changing the directory (qemu-img bitmap) ----- */

#define BME_MAX_BITMAPS 65535
#define BME_MAX_DIR_SIZE (64u << 20)
#define BME_MIN_GRANULARITY (1u << BME_MIN_GRANULARITY_BITS)

static Qcow2Bitmap *find_bitmap(GPtrArray *list, const char *name)
{
    for (guint i = 0; list != NULL && i < list->len; i++) {
        Qcow2Bitmap *bm = list->pdata[i];
        if (g_str_equal(bm->name, name))
            return bm;
    }
    return NULL;
}

static guint bm_index(GPtrArray *list, Qcow2Bitmap *bm)
{
    guint i = 0;
    g_ptr_array_find(list, bm, &i);
    return i;
}

static guint64 entry_bytes(const Qcow2Bitmap *bm)
{
    return qcow2_align_up((guint64)BME_ENTRY_FIXED + strlen(bm->name), 8);
}

/* Write s->bitmaps as a new directory in new clusters, make the header's
 * extension name it (or drop the extension when none is left), then free
 * the old directory. The header changes last, so a crash leaves either
 * directory whole. */
static gboolean write_directory(Qcow2State *s, GError **error)
{
    guint n = s->bitmaps->len;
    guint64 size = 0, offset = 0;
    for (guint i = 0; i < n; i++)
        size += entry_bytes(s->bitmaps->pdata[i]);
    if (size > BME_MAX_DIR_SIZE) {
        vd_set_error(error, s->img, VD_ERROR_NOT_SUPPORTED, "the bitmap directory is full");
        return FALSE;
    }
    g_autofree guint8 *dir = g_malloc0(MAX(size, 1));
    guint64 pos = 0;
    for (guint i = 0; i < n; i++) {
        Qcow2Bitmap *bm = s->bitmaps->pdata[i];
        guint8 *e = dir + pos;
        vd_put_be64(e, bm->table_offset);
        vd_put_be32(e + 8, bm->table_size);
        vd_put_be32(e + 12, bm->flags);
        e[16] = bm->type;
        e[17] = bm->granularity_bits;
        e[18] = (guint8)(strlen(bm->name) >> 8);
        e[19] = (guint8)strlen(bm->name);
        vd_put_be32(e + 20, 0);
        memcpy(e + BME_ENTRY_FIXED, bm->name, strlen(bm->name));
        bm->entry_pos = pos;
        pos += entry_bytes(bm);
    }
    if (n > 0 && (!qcow2_alloc_clusters(s, qcow2_align_up(size, s->cluster_size) >> s->cluster_bits,
                                        &offset, error) ||
                  !vd_file_pwrite(s->img->file, offset, dir, size, error)))
        return FALSE;
    if (!qcow2_flush_metadata(s, error) || !vd_file_sync(s->img->file, error))
        return FALSE;
    guint64 old_offset = s->bitmap_dir_offset, old_size = s->bitmap_dir_size;
    gboolean had = s->nb_bitmaps > 0 && (s->autoclear & QCOW2_AUTOCLEAR_BITMAPS);
    s->nb_bitmaps = n;
    s->bitmap_dir_offset = offset;
    s->bitmap_dir_size = size;
    if (!qcow2_write_bitmaps_extension(s, error))
        return FALSE;
    if (had && old_size > 0 &&
        !qcow2_free_deferred(s, old_offset, qcow2_align_up(old_size, s->cluster_size), error))
        return FALSE;
    return qcow2_flush_metadata(s, error);
}

/* Free a bitmap's data clusters, and its table too when drop_table. */
static gboolean free_bitmap_clusters(Qcow2State *s, Qcow2Bitmap *bm, gboolean drop_table,
                                     GError **error)
{
    g_autofree guint64 *table = NULL;
    if (bm->table_size == 0)
        return TRUE;
    if (!read_table(s, bm, &table, error))
        return FALSE;
    gboolean any = FALSE;
    for (guint32 i = 0; i < bm->table_size; i++) {
        guint64 host = table[i] & QCOW2_OFFSET_MASK;
        any |= table[i] != 0;
        if (host != 0 && !qcow2_free_deferred(s, host, s->cluster_size, error))
            return FALSE;
        table[i] = 0;
    }
    if (drop_table)
        return qcow2_free_deferred(s, bm->table_offset,
                                   qcow2_align_up((guint64)bm->table_size * 8, s->cluster_size),
                                   error);
    /* The table reads all zeros before the data clusters are freed. */
    return !any || (write_table(s, bm->table_offset, table, bm->table_size, error) &&
                    vd_file_sync(s->img->file, error));
}

static gboolean add_bitmap(Qcow2State *s, const char *name, guint32 granularity, gboolean disabled,
                           GError **error)
{
    if (granularity == 0)
        granularity = (guint32)CLAMP(s->cluster_size, 4096, 65536); /* qemu's default */
    if (granularity < BME_MIN_GRANULARITY || (granularity & (granularity - 1)) != 0) {
        vd_set_error(error, s->img, VD_ERROR_INVALID_ARGUMENT,
                     "Granularity must be power of 2 and at least 512, not %u", granularity);
        return FALSE;
    }
    if (strlen(name) == 0 || strlen(name) > BME_MAX_NAME) {
        vd_set_error(error, s->img, VD_ERROR_INVALID_ARGUMENT,
                     "a bitmap name must have 1 to %d bytes", BME_MAX_NAME);
        return FALSE;
    }
    if (s->bitmaps->len >= BME_MAX_BITMAPS) {
        vd_set_error(error, s->img, VD_ERROR_NOT_SUPPORTED, "the image has %d bitmaps already",
                     BME_MAX_BITMAPS);
        return FALSE;
    }
    Qcow2Bitmap *bm = g_new0(Qcow2Bitmap, 1);
    bm->name = g_strdup(name);
    bm->type = BME_TYPE_DIRTY;
    bm->granularity_bits = (guint8)g_bit_nth_lsf(granularity, -1);
    bm->flags = disabled ? 0 : BME_FLAG_AUTO;
    guint64 n = table_entries(s, s->img->size, bm->granularity_bits);
    bm->table_size = (guint32)n;
    g_ptr_array_add(s->bitmaps, bm);
    if (n == 0)
        return write_directory(s, error);
    /* An empty bitmap: every table entry 0 (all zeros), no data. */
    g_autofree guint64 *table = g_new0(guint64, n);
    if (!qcow2_alloc_clusters(s, qcow2_align_up(n * 8, s->cluster_size) >> s->cluster_bits,
                              &bm->table_offset, error) ||
        !write_table(s, bm->table_offset, table, (guint32)n, error)) {
        g_ptr_array_remove(s->bitmaps, bm);
        return FALSE;
    }
    return write_directory(s, error);
}

/* Each run of set bits of bm (of image s) as guest bytes, marked in dst. */
static gboolean merge_bits(Qcow2State *s, Qcow2Bitmap *bm, Qcow2State *ds, Qcow2Bitmap *dst,
                           GError **error)
{
    g_autofree guint64 *table = NULL;
    g_autofree guint8 *data = g_malloc(s->cluster_size);
    guint64 per = bits_per_cluster(s), nbits = bitmap_bits(s->img->size, bm->granularity_bits);
    if (!read_table(s, bm, &table, error))
        return FALSE;
    for (guint32 i = 0; i < bm->table_size; i++) {
        guint64 host = table[i] & QCOW2_OFFSET_MASK;
        if (host == 0 && !(table[i] & BME_TABLE_ALL_ONES))
            continue;
        if (host == 0)
            memset(data, 0xff, s->cluster_size);
        else if (!vd_file_pread(s->img->file, host, data, s->cluster_size, error))
            return FALSE;
        for (guint64 b = 0; b < per && i * per + b < nbits; b++) {
            if (!(data[b / 8] & (1u << (b & 7))))
                continue;
            guint64 first = b;
            while (b + 1 < per && i * per + b + 1 < nbits &&
                   (data[(b + 1) / 8] & (1u << ((b + 1) & 7))))
                b++;
            guint64 start = (i * per + first) << bm->granularity_bits;
            guint64 end = MIN((i * per + b + 1) << bm->granularity_bits, s->img->size);
            if (start < ds->img->size)
                mark_bitmap(ds, dst, start, MIN(end, ds->img->size) - start);
        }
    }
    return TRUE;
}

static gboolean usable_or_fail(Qcow2State *s, Qcow2Bitmap *bm, GError **error)
{
    if ((bm->flags & BME_FLAG_IN_USE) && !bm->tracked) {
        vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                     "Bitmap '%s' is inconsistent and cannot be used; remove it (--remove)",
                     bm->name);
        return FALSE;
    }
    if (!usable(s, bm, s->img->size)) {
        vd_set_error(error, s->img, VD_ERROR_NOT_SUPPORTED,
                     "the bitmap '%s' is of a kind vdisk cannot change", bm->name);
        return FALSE;
    }
    return TRUE;
}

gboolean qcow2_bitmap_change(VdImage *img, VdBitmapOp op, const char *name, guint32 granularity,
                             gboolean disabled, VdImage *source, const char *source_name,
                             GError **error)
{
    Qcow2State *s = img->priv;
    if (s->version < 3) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "Can't store persistent bitmaps: a qcow2 v2 image (compat=0.10) has none");
        return FALSE;
    }
    if (s->bitmaps == NULL) {
        if (s->nb_bitmaps > 0 && (s->autoclear & QCOW2_AUTOCLEAR_BITMAPS)) {
            vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                         "its bitmaps are of a kind vdisk cannot keep");
            return FALSE;
        }
        s->bitmaps = g_ptr_array_new_with_free_func((GDestroyNotify)bitmap_free);
        s->nb_bitmaps = 0;
    }
    for (guint i = 0; i < s->bitmaps->len; i++) {
        const Qcow2Bitmap *b = s->bitmaps->pdata[i];
        if (b->extra_size != 0) {
            vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                         "the bitmap '%s' carries extra data vdisk cannot keep", b->name);
            return FALSE;
        }
    }
    Qcow2Bitmap *bm = find_bitmap(s->bitmaps, name);
    if (op == VD_BITMAP_ADD) {
        if (bm != NULL) {
            vd_set_error(error, img, VD_ERROR_EXISTS, "Bitmap already exists: %s", name);
            return FALSE;
        }
        return add_bitmap(s, name, granularity, disabled, error);
    }
    if (bm == NULL) {
        vd_set_error(error, img, VD_ERROR_NOT_FOUND, "Dirty bitmap '%s' not found", name);
        return FALSE;
    }
    if (op == VD_BITMAP_REMOVE) {
        /* The directory stops naming it before its clusters are freed. */
        g_ptr_array_steal_index(s->bitmaps, bm_index(s->bitmaps, bm));
        gboolean ok = write_directory(s, error) && free_bitmap_clusters(s, bm, TRUE, error) &&
                      qcow2_flush_metadata(s, error);
        bitmap_free(bm);
        return ok;
    }
    if (!usable_or_fail(s, bm, error))
        return FALSE;
    switch (op) {
    case VD_BITMAP_CLEAR:
        return free_bitmap_clusters(s, bm, FALSE, error) && qcow2_flush_metadata(s, error);
    case VD_BITMAP_ENABLE:
    case VD_BITMAP_DISABLE:
        if (op == VD_BITMAP_ENABLE)
            bm->flags |= BME_FLAG_AUTO;
        else
            bm->flags &= ~(BME_FLAG_AUTO | BME_FLAG_IN_USE);
        bm->tracked = bm->tracked && op == VD_BITMAP_ENABLE;
        return write_entry(s, bm, error) && vd_file_sync(img->file, error);
    case VD_BITMAP_MERGE: {
        Qcow2State *ss = s;
        g_autoptr(GPtrArray) other = NULL;
        if (source != NULL && source != img) {
            if (source->drv != img->drv) {
                vd_set_error(error, source, VD_ERROR_NOT_SUPPORTED,
                             "has no persistent bitmaps: only qcow2 images have them");
                return FALSE;
            }
            ss = source->priv;
            if (ss->nb_bitmaps == 0 || !(ss->autoclear & QCOW2_AUTOCLEAR_BITMAPS) ||
                !qcow2_bitmaps_read_directory(ss, &other, error)) {
                if (error != NULL && *error != NULL)
                    return FALSE;
            }
        }
        Qcow2Bitmap *src =
            find_bitmap(other != NULL ? other : (ss == s ? s->bitmaps : NULL), source_name);
        if (src == NULL) {
            vd_set_error(error, ss->img, VD_ERROR_NOT_FOUND, "Dirty bitmap '%s' not found",
                         source_name);
            return FALSE;
        }
        if ((src->flags & BME_FLAG_IN_USE) && !src->tracked) {
            vd_set_error(error, ss->img, VD_ERROR_CORRUPT,
                         "Bitmap '%s' is inconsistent and cannot be used", src->name);
            return FALSE;
        }
        if (src->type != BME_TYPE_DIRTY || src->granularity_bits < BME_MIN_GRANULARITY_BITS ||
            src->granularity_bits > BME_MAX_GRANULARITY_BITS ||
            src->table_size != table_entries(ss, ss->img->size, src->granularity_bits)) {
            vd_set_error(error, ss->img, VD_ERROR_NOT_SUPPORTED,
                         "the bitmap '%s' is of a kind vdisk cannot read", src->name);
            return FALSE;
        }
        gboolean temporary = bm->dirty == NULL;
        if (temporary)
            bm->dirty = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
        gboolean ok = merge_bits(ss, src, s, bm, error) && store_bitmap(s, bm, error) &&
                      qcow2_flush_metadata(s, error);
        if (temporary)
            g_clear_pointer(&bm->dirty, g_hash_table_unref);
        return ok;
    }
    default:
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT, "unknown bitmap operation");
        return FALSE;
    }
}
