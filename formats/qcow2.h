/* qcow2 driver internals shared by the qcow2-*.c files.
 *
 * Layout facts come from QEMU's docs/interop/qcow2.rst. Every number read
 * from the file is untrusted: the parsers check it before it is used as an
 * offset, a size or a loop bound.
 *
 * Metadata caching and crash safety: L2 tables and refcount blocks live in
 * small write-back caches. Dirty refcount blocks always reach the file
 * before dirty L2 tables (the L2 cache depends on the refcount cache), and
 * L2 tables before the L1 entries that point at them, so a crash leaves at
 * worst leaked clusters. Freeing goes the other way round (the reference
 * must disappear before the refcount drops), so frees are queued and only
 * applied after the tables were written (qcow2_flush_metadata).
 */
#pragma once

#include "blkdebug.h"
#include "luks-header.h"
#include "vdisk-driver.h"

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */

/* Header field offsets. */
#define QH_MAGIC 0
#define QH_VERSION 4
#define QH_BACKING_OFFSET 8
#define QH_BACKING_SIZE 16
#define QH_CLUSTER_BITS 20
#define QH_SIZE 24
#define QH_CRYPT_METHOD 32
#define QH_L1_SIZE 36
#define QH_L1_OFFSET 40
#define QH_RT_OFFSET 48
#define QH_RT_CLUSTERS 56
#define QH_NB_SNAPSHOTS 60
#define QH_SNAPSHOTS_OFFSET 64
#define QH_INCOMPAT 72
#define QH_COMPAT 80
#define QH_AUTOCLEAR 88
#define QH_REFCOUNT_ORDER 96
#define QH_HEADER_LENGTH 100
#define QH_COMPRESSION_TYPE 104
#define QH_V2_LENGTH 72
#define QH_V3_LENGTH 112 /* what we write: through compression_type, padded */

#define QCOW2_INCOMPAT_DIRTY (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2 (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN 0x1full
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)
#define QCOW2_AUTOCLEAR_BITMAPS (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_RAW (1ull << 1)

#define QCOW2_EXT_END 0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857u
#define QCOW2_EXT_BITMAPS 0x23852875u
#define QCOW2_EXT_CRYPTO 0x0537be77u
#define QCOW2_EXT_DATA_FILE 0x44415441u

/* Table entry bits. */
#define QCOW2_OFLAG_COPIED (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO (1ull << 0)
#define QCOW2_OFFSET_MASK 0x00fffffffffffe00ull /* bits 9-55 */
#define QCOW2_L1_RESERVED 0x7f000000000001ffull
#define QCOW2_RT_OFFSET_MASK 0xfffffffffffffe00ull

/* Implementation limits, as QEMU has them (hostile headers must not make us
 * allocate more than this). */
#define QCOW2_MAX_L1_BYTES (32u << 20)
#define QCOW2_MAX_RT_BYTES (8u << 20)
#define QCOW2_MAX_SNAPSHOTS 65536u
#define QCOW2_MAX_SNAPSHOT_TABLE (64u << 20)
#define QCOW2_MAX_BACKING_NAME 1023u
#define QCOW2_MAX_EXTRA_DATA 1024u
#define QCOW2_SUBCLUSTERS 32u

enum { QCOW2_COMPRESSION_ZLIB = 0, QCOW2_COMPRESSION_ZSTD = 1 };
enum { QCOW2_CRYPT_NONE = 0, QCOW2_CRYPT_AES = 1, QCOW2_CRYPT_LUKS = 2 };

/* A bounded write-back cache of one-cluster tables (L2 tables or refcount
 * blocks), keyed by host offset. */
typedef struct Qcow2Cache Qcow2Cache;

typedef struct {
    guint64 l1_offset;
    guint32 l1_size;
    char *id;
    char *name;
    guint32 date_sec;
    guint32 date_nsec;
    guint64 vm_clock_nsec;
    guint64 vm_state_size;
    guint64 disk_size;
    guint64 icount;
    gboolean has_disk_size;
    GBytes *extra_unknown; /* extra data past the fields we know, kept as is */
} Qcow2Snapshot;

/* A header extension we keep byte for byte when rewriting the header. */
typedef struct {
    guint32 type;
    GBytes *data;
} Qcow2Extension;

/* A queued refcount decrement of every cluster [offset, offset+length)
 * touches, applied once no table on disk points there any more. */
typedef struct {
    guint64 offset;
    guint64 length;
} Qcow2Range;

typedef struct {
    VdImage *img;
    int version;
    guint cluster_bits;
    guint64 cluster_size;
    guint l2_bits;      /* log2 of entries per L2 table */
    guint64 l2_entries; /* entries per L2 table */
    gboolean ext_l2;    /* 128-bit L2 entries with 32 subclusters */
    guint subcluster_bits;
    guint refcount_order;
    guint rb_bits; /* log2 of entries per refcount block */
    guint64 refcount_max;
    guint64 incompat;
    guint64 compat;
    guint64 autoclear;
    guint header_length;
    int compression_type;
    guint csize_shift; /* x in the compressed cluster descriptor */
    guint64 csize_mask;
    guint64 coffset_mask;

    /* Active (or loaded snapshot's) L1 table, host endianness. */
    guint64 *l1;
    guint32 l1_size;
    guint32 l1_lost_from; /* first entry a truncated file lacks (read-only); G_MAXUINT32: none */
    guint64 l1_offset;
    guint32 l1_dirty_lo, l1_dirty_hi; /* dirty entry range, lo > hi when clean */

    /* Refcount table, host endianness. */
    guint64 *rt;
    guint64 rt_entries;
    guint64 rt_offset;
    guint32 rt_clusters;

    Qcow2Cache *l2_cache;
    Qcow2Cache *rb_cache;

    guint64 free_cluster_index; /* no free cluster below this one */
    guint64 free_byte_offset;   /* where the next compressed cluster goes, 0 = new cluster */
    /* Clusters being allocated whose refcounts are not set yet: the
     * refcount blocks they need go elsewhere. */
    guint64 reserved_lo, reserved_hi;
    GArray *deferred_frees; /* of Qcow2Range */

    GPtrArray *snapshots; /* of Qcow2Snapshot */
    guint64 snapshots_offset;
    guint64 snapshots_size;   /* bytes of the snapshot table on disk */
    gboolean snapshot_loaded; /* l1 shows a snapshot, read only */

    VdFile *data_file; /* NULL: data lives in img->file */
    /* Detected once: many more clusters in use than the file stores, as
     * after preallocation=metadata. Only then may holes in the file under
     * data clusters be reported as zero (qemu-img map does the same). */
    gboolean prealloc_checked;
    gboolean metadata_preallocation;
    char *data_file_name;
    guint64 crypto_ext_offset;
    guint64 crypto_ext_length;
    guint32 crypt_method;   /* QCOW2_CRYPT_* */
    VdSectorCipher *cipher; /* NULL: not encrypted, or opened without a key */
    VdLuksHeader *luks;     /* crypt_method LUKS */
    guint8 *master_key;     /* LUKS, for amend; NULL without a key */
    guint32 nb_bitmaps;     /* bitmaps extension */
    guint64 bitmap_dir_size;
    guint64 bitmap_dir_offset;
    /* The bitmap directory while a read-write open keeps the bitmaps up to
     * date (qcow2-bitmap.c), else NULL. */
    GPtrArray *bitmaps;

    GPtrArray *kept_extensions; /* of Qcow2Extension: bitmaps and unknown ones */
    /* The feature name table as stored (zero-padded to whole entries), for
     * messages. */
    guint8 *feature_table;
    guint32 feature_table_len;

    gboolean set_dirty;   /* we set the dirty bit (lazy refcounts) */
    gboolean l2_unsynced; /* L2 tables written since the last sync */
    gboolean rb_unsynced; /* refcount blocks written since the last sync */
    gboolean hold_dirty;  /* keep the dirty bit until the operation ends */
    /* The refcount rebuild of an image left dirty, at open: it must not
     * drop bad mappings the way "check -r all" does. */
    gboolean opening_dirty;
    gboolean prealloc_junk; /* has_zero_init answer */
    guint64 file_size;      /* cached length of img->file, refreshed on demand */

    /* One decompressed cluster, so small reads in a compressed cluster do
     * not inflate it again each time. */
    guint8 *zbuf;
    guint64 zbuf_entry; /* L2 entry zbuf holds, 0 = none */
} Qcow2State;

static inline Qcow2State *qcow2_state(VdImage *img) { return img->priv; }
static inline guint64 qcow2_align_up(guint64 v, guint64 a) { return (v + a - 1) & ~(a - 1); }
static inline guint64 qcow2_align_down(guint64 v, guint64 a) { return v & ~(a - 1); }
static inline guint64 qcow2_offset_into_cluster(Qcow2State *s, guint64 v)
{
    return v & (s->cluster_size - 1);
}
static inline guint64 qcow2_subcluster_size(Qcow2State *s)
{
    return s->cluster_size >> (s->ext_l2 ? 5 : 0);
}
/* Virtual bytes one L2 table maps. */
static inline guint64 qcow2_l2_span(Qcow2State *s) { return s->l2_entries << s->cluster_bits; }

/* ----- qcow2.c: header, caches, flushing ----- */
Qcow2Cache *qcow2_cache_new(Qcow2State *s, guint capacity, Qcow2Cache *depends_on);
void qcow2_cache_free(Qcow2Cache *c);
/* Get the table at offset, pinned. With read the content comes from the
 * file (the caller checked the offset), else the buffer is zero-filled and
 * marked dirty (a new table). Unpin with qcow2_cache_put. */
gboolean qcow2_cache_get(Qcow2State *s, Qcow2Cache *c, guint64 offset, gboolean read,
                         guint8 **table, GError **error);
gboolean qcow2_cache_lookup(Qcow2Cache *c, guint64 offset);
void qcow2_cache_put(Qcow2Cache *c, guint8 *table);
void qcow2_cache_mark_dirty(Qcow2Cache *c, guint8 *table);
gboolean qcow2_cache_flush(Qcow2State *s, Qcow2Cache *c, GError **error);
/* Sync the file before c writes its next table (as QEMU's
 * qcow2_cache_depends_on_flush): after copy-on-write data that the
 * updated L2 entries will point at. */
void qcow2_cache_depends_on_flush(Qcow2Cache *c);
/* Forget the table at offset (its cluster was freed), dirty or not. */
void qcow2_cache_drop(Qcow2Cache *c, guint64 offset);
void qcow2_cache_drop_all(Qcow2Cache *c);

/* Write refcounts, L2 tables, the L1 table, then apply queued frees. */
gboolean qcow2_flush_metadata(Qcow2State *s, GError **error);
/* Rewrite the header cluster as qemu lays it out, from s (version, size,
 * feature bits, refcount width, data file name) and the extensions and
 * backing file name the file has: the header (72 bytes for version 2,
 * 112 for 3), the extensions in qemu's order (backing format, data file,
 * crypto, feature table, bitmaps, then unknown ones as they are), the
 * backing file name. Flushes and syncs before and after the write. */
gboolean qcow2_rewrite_header(Qcow2State *s, GError **error);
gboolean qcow2_write_header_field(Qcow2State *s, guint offset, guint64 value, guint width,
                                  GError **error);
/* Lazy refcounts: set the dirty bit before the first refcount update that
 * may be left out of date. */
gboolean qcow2_mark_dirty(Qcow2State *s, GError **error);
/* Keep the dirty bit set (v3) from here to qcow2_end_dirty_during, around
 * an operation that changes refcounts and OFLAG_COPIED flags in separate
 * writes (internal snapshots): no order of those writes is consistent at
 * every step, so a crash in between leaves an image that the next
 * read-write open repairs, in QEMU as in vdisk, instead of one that
 * qemu-img check calls corrupt. */
gboolean qcow2_mark_dirty_during(Qcow2State *s, GError **error);
/* Flush, then clear the bit once everything is durable. */
gboolean qcow2_end_dirty_during(Qcow2State *s, GError **error);
gboolean qcow2_refresh_file_size(Qcow2State *s, GError **error);
/* Is [offset, offset+len) inside the image file? */
gboolean qcow2_in_file(Qcow2State *s, guint64 offset, guint64 len);
VdFile *qcow2_data_file(Qcow2State *s);

/* ----- qcow2-refcount.c ----- */
gboolean qcow2_refcount_load(Qcow2State *s, GError **error);
gboolean qcow2_get_refcount(Qcow2State *s, guint64 cluster, guint64 *refcount, GError **error);
gboolean qcow2_detect_metadata_preallocation(Qcow2State *s, GError **error);
/* Add delta to the refcount of every cluster [offset, offset+length)
 * touches. */
gboolean qcow2_update_refcount(Qcow2State *s, guint64 offset, guint64 length, gint64 delta,
                               GError **error);
/* Allocate n contiguous clusters with refcount 1; *offset is the first. */
gboolean qcow2_alloc_clusters(Qcow2State *s, guint64 n, guint64 *offset, GError **error);
/* Allocate size bytes for compressed data, packed after the previous. */
gboolean qcow2_alloc_bytes(Qcow2State *s, guint64 size, guint64 *offset, GError **error);
/* Queue a refcount decrement for after the next table write-back. */
gboolean qcow2_free_deferred(Qcow2State *s, guint64 offset, guint64 length, GError **error);
gboolean qcow2_apply_deferred_frees(Qcow2State *s, GError **error);
/* After a shrink: free the refcount blocks that count no cluster but
 * themselves (their table entries become 0), as qemu's shrink does. */
gboolean qcow2_shrink_refcount_table(Qcow2State *s, GError **error);
/* The end of the last cluster in use below end (0: none), to cut the
 * file there. */
gboolean qcow2_used_end(Qcow2State *s, guint64 end, guint64 *used_end, GError **error);
/* Replace the whole refcount structure by one describing refs (one count
 * per cluster, nb clusters), placed past everything in use. */
gboolean qcow2_rebuild_refcounts(Qcow2State *s, guint32 *refs, guint64 nb, GError **error);
guint64 qcow2_rb_get(const guint8 *block, guint64 index, guint order);
void qcow2_rb_set(guint8 *block, guint64 index, guint order, guint64 value);

/* ----- qcow2-cluster.c ----- */
typedef enum {
    QCOW2_CL_UNALLOCATED,
    QCOW2_CL_ZERO_PLAIN, /* zero flag, no host cluster */
    QCOW2_CL_ZERO_ALLOC, /* zero flag with a preallocated host cluster */
    QCOW2_CL_NORMAL,
    QCOW2_CL_COMPRESSED,
} Qcow2ClusterType;

Qcow2ClusterType qcow2_cluster_type(Qcow2State *s, guint64 entry);
/* The host range a compressed descriptor names. */
void qcow2_compressed_range(Qcow2State *s, guint64 entry, guint64 *offset, guint64 *length);
guint64 qcow2_l2_get(Qcow2State *s, const guint8 *table, guint64 index, guint64 *bitmap);
void qcow2_l2_set(Qcow2State *s, guint8 *table, guint64 index, guint64 entry, guint64 bitmap);
/* Load the L2 table of an L1 entry (validated), pinned in the cache. */
gboolean qcow2_load_l2(Qcow2State *s, guint64 l2_offset, const char *what, guint64 what_index,
                       guint8 **table, GError **error);
gboolean qcow2_block_status(VdImage *img, guint64 offset, guint64 len, VdExtent *out,
                            GError **error);
gboolean qcow2_read(VdImage *img, guint64 offset, void *buf, gsize len, GError **error);
gboolean qcow2_packed_unit(VdImage *img, guint64 offset, VdPackedUnit *unit, GError **error);
gboolean qcow2_inflate_unit(VdImage *img, const VdPackedUnit *unit, const guint8 *in, guint8 *out,
                            GError **error);
gboolean qcow2_write(VdImage *img, guint64 offset, const void *buf, gsize len, GError **error);
gboolean qcow2_write_from_file(VdImage *img, guint64 offset, VdFile *src, guint64 src_offset,
                               guint64 len, const void *buf, GError **error);
gboolean qcow2_write_zeroes(VdImage *img, guint64 offset, guint64 len, gboolean may_unmap,
                            GError **error);
gboolean qcow2_discard(VdImage *img, guint64 offset, guint64 len, GError **error);
gboolean qcow2_write_compressed(VdImage *img, guint64 offset, const void *data, gsize len,
                                GError **error);
/* Give [offset, offset+len) host clusters without writing data. */
gboolean qcow2_preallocate(Qcow2State *s, guint64 offset, guint64 len, GError **error);
/* Make the L1 table hold at least min_size entries (moves it). */
gboolean qcow2_grow_l1(Qcow2State *s, guint32 min_size, GError **error);
gboolean qcow2_write_l1_entries(Qcow2State *s, guint32 lo, guint32 hi, GError **error);

/* ----- qcow2-crypto.c ----- */
/* Set up decryption at open (crypt_method from the header). */
gboolean qcow2_crypto_open(VdImage *img, Qcow2State *s, GError **error);
void qcow2_crypto_close(Qcow2State *s);
/* Is the data encrypted (with or without a key at hand)? */
static inline gboolean qcow2_encrypted(Qcow2State *s) { return s->crypt_method != 0; }
/* Fail unless the key is there. */
gboolean qcow2_crypto_need_key(Qcow2State *s, GError **error);
/* Decrypt data read from host offset host for guest offset guest (both
 * 512-aligned, n a multiple of 512). */
gboolean qcow2_decrypt(Qcow2State *s, guint64 guest, guint64 host, guint8 *buf, guint64 n,
                       GError **error);
/* Encrypt data to be written at host offset host for guest offset guest
 * (both 512-aligned, n a multiple of 512). */
gboolean qcow2_encrypt(Qcow2State *s, guint64 guest, guint64 host, guint8 *buf, guint64 n,
                       GError **error);
/* Create: the LUKS header for encrypt.format=luks, written into newly
 * allocated clusters, with the extension that points at it; or, aes set,
 * the legacy AES, which needs nothing but the header field. */
gboolean qcow2_crypto_create(Qcow2State *s, const VdCreateParams *p, gboolean aes, GError **error);
/* qemu-img amend's encrypt.* options: add or remove key slots. */
gboolean qcow2_crypto_amend(VdImage *img, VdOptions *opts, VdSecrets *secrets, GError **error);
GVariant *qcow2_crypto_info(Qcow2State *s);

/* ----- qcow2-amend.c ----- */
/* qemu-img amend -o for qcow2: compat, lazy_refcounts, refcount_bits,
 * data_file, data_file_raw=off, size and the LUKS key slots; refuses the
 * rest (backing_file, create-only options) in qemu-img's words. */
gboolean qcow2_amend(VdImage *img, VdOptions *opts, VdSecrets *secrets, GError **error);

/* ----- qcow2-compress.c ----- */
gsize qcow2_compress_buffer(int type, const void *in, gsize len, void *out, gsize out_len);
gboolean qcow2_decompress_buffer(int type, const void *in, gsize len, void *out, gsize out_len);

/* ----- qcow2-snapshot.c ----- */
gboolean qcow2_snapshots_load(Qcow2State *s, guint32 nb, guint64 offset, GError **error);
/* Write the snapshot table again as s->snapshots says (into new clusters,
 * the old ones freed), every entry with all the extra data vdisk knows. */
gboolean qcow2_snapshots_rewrite(Qcow2State *s, GError **error);
/* Is the L1 table sn's entry names one that can be read (aligned, within
 * qemu's size limit)? Else an error naming the snapshot. */
gboolean qcow2_snapshot_l1_check(Qcow2State *s, const Qcow2Snapshot *sn, GError **error);
void qcow2_snapshot_free(Qcow2Snapshot *sn);
GPtrArray *qcow2_list_snapshots(VdImage *img, GError **error);
gboolean qcow2_create_snapshot(VdImage *img, const char *name, GError **error);
gboolean qcow2_apply_snapshot(VdImage *img, const char *name_or_id, GError **error);
gboolean qcow2_delete_snapshot(VdImage *img, const char *name_or_id, GError **error);
gboolean qcow2_load_snapshot(VdImage *img, const char *name_or_id, GError **error);
/* Set or clear the COPIED flags of the active tables from the refcounts. */
gboolean qcow2_update_copied_flags(Qcow2State *s, GError **error);
/* Read a snapshot's (or any) L1 table from the file, validated. */
gboolean qcow2_read_l1(Qcow2State *s, guint64 offset, guint32 size, guint64 **l1, GError **error);

/* ----- qcow2-bitmap.c: persistent dirty bitmaps ----- */
typedef struct Qcow2Bitmap Qcow2Bitmap;
/* The directory's entries (of Qcow2Bitmap), checked to lie in the file;
 * VD_ERROR_CORRUPT when it does not. */
gboolean qcow2_bitmaps_read_directory(Qcow2State *s, GPtrArray **out, GError **error);
/* Where a bitmap's table lies in the file. */
void qcow2_bitmap_table_range(const Qcow2Bitmap *bm, guint64 *offset, guint64 *length);
/* Read-write open: take over the bitmaps (*kept) and flag the enabled ones
 * in use, or leave *kept FALSE when they cannot all be kept up to date. */
gboolean qcow2_bitmaps_open(Qcow2State *s, gboolean *kept, GError **error);
/* Guest bytes [offset, offset+len) changed. */
void qcow2_bitmaps_mark(Qcow2State *s, guint64 offset, guint64 len);
/* Write the changed bits and clear in_use (at close). */
gboolean qcow2_bitmaps_store(Qcow2State *s, GError **error);
void qcow2_bitmaps_free(Qcow2State *s);
/* For info: each bitmap's flags, name and granularity (aa{sv}, floating),
 * or NULL when there are none (or they are inconsistent). */
GVariant *qcow2_bitmaps_info(Qcow2State *s);
/* Resizing: can every bitmap follow, then make them follow (called while
 * img->size is still the old size). */
gboolean qcow2_bitmaps_check_resize(Qcow2State *s, GError **error);
gboolean qcow2_bitmaps_resize(Qcow2State *s, guint64 new_size, GError **error);
/* qemu-img bitmap: one operation on the bitmap name (see vd_image_bitmap). */
gboolean qcow2_bitmap_change(VdImage *img, VdBitmapOp op, const char *name, guint32 granularity,
                             gboolean disabled, VdImage *source, const char *source_name,
                             GError **error);
/* Rewrite the header cluster with the bitmaps extension as s says
 * (nb_bitmaps, bitmap_dir_offset/size; none when nb_bitmaps is 0) and the
 * autoclear bit to match, every other extension and the backing file name
 * kept as they are. Synced before and after. */
gboolean qcow2_write_bitmaps_extension(Qcow2State *s, GError **error);

/* ----- qcow2-empty.c ----- */
/* Drop every cluster after a commit, as QEMU does (its blkdebug events). */
gboolean qcow2_make_empty(VdImage *img, GError **error);

/* ----- qcow2-check.c ----- */
gboolean qcow2_check(VdImage *img, VdCheckRepair repair, VdCheckResult *res, GError **error);
