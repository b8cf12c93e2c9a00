/* qcow: QEMU's first copy-on-write format ("qcow version 1"), replaced by
 * qcow2 in 2006 but still read and written by qemu-img.
 *
 * Layout, all numbers big-endian: a 48-byte header (offsets below), the
 * backing file name right after it, then the L1 table at an 8-byte aligned
 * offset. A guest offset splits into an L1 index (the bits above
 * cluster_bits + l2_bits), an L2 index (the next l2_bits bits) and the
 * offset inside the cluster. L1 entries are host offsets of L2 tables
 * (0: none yet); an L2 table holds 1 << l2_bits entries, each the host
 * offset of a cluster (0: unallocated) or, with bit 63 set, a compressed
 * cluster: the low 63 - cluster_bits bits are its host offset, the
 * cluster_bits bits above them its exact length in bytes. The data is a raw
 * deflate stream that inflates to one whole cluster.
 *
 * There are no refcounts: new clusters are appended at the end of the file
 * and space that is no longer referenced is never reused.
 */
#include "blkdebug.h"
#include "crypto-cipher.h"
#include "vdisk-driver.h"

#define QCOW_MAGIC 0x514649fbu /* "QFI\xfb", shared with qcow2 */
#define QCOW_VERSION 1

/* Header fields (byte offsets). */
enum {
    HDR_MAGIC = 0,          /* u32 */
    HDR_VERSION = 4,        /* u32 */
    HDR_BACKING_OFFSET = 8, /* u64, 0 = no backing file */
    HDR_BACKING_SIZE = 16,  /* u32, name length, not NUL-terminated */
    HDR_MTIME = 20,         /* u32, unused (qemu writes 0) */
    HDR_SIZE = 24,          /* u64, virtual size in bytes */
    HDR_CLUSTER_BITS = 32,  /* u8 */
    HDR_L2_BITS = 33,       /* u8, log2 of the entries per L2 table */
    HDR_CRYPT_METHOD = 36,  /* u32, 0 = none, 1 = AES (after 2 bytes of padding) */
    HDR_L1_OFFSET = 40,     /* u64 */
    HDR_LEN = 48,
};

#define CRYPT_NONE 0
#define CRYPT_AES 1
#define ENTRY_COMPRESSED (1ull << 63)

/* What qemu accepts: 512 B to 64 KiB clusters and L2 tables. */
#define MIN_CLUSTER_BITS 9
#define MAX_CLUSTER_BITS 16
#define MIN_L2_BITS 6
#define MAX_L2_BITS 13
#define MAX_BACKING_NAME 1023
/* An L1 table is read whole into memory; 32 MiB of it addresses more than
 * any qcow image has held, and bounds what a hostile header can make us
 * allocate. */
#define MAX_L1_BYTES (32u << 20)
/* qemu pads the L1 table of a new image to whole 512-byte sectors and
 * places compressed clusters on sector boundaries. */
#define SECTOR 512u
#define L2_CACHE_SLOTS 16
/* block_status looks at this many clusters at most per call, so one call
 * never holds the image lock for long on a huge image. */
#define STATUS_MAX_CLUSTERS 65536

typedef struct {
    guint64 offset; /* host offset of the cached table; 0 = free slot */
    guint64 last_use;
    guint64 *entries; /* host byte order */
    /* Entries of new clusters not yet in the file: [dirty_lo, dirty_hi]
     * when dirty_lo <= dirty_hi (written back at a flush or eviction). */
    guint32 dirty_lo, dirty_hi;
} L2Slot;

typedef struct {
    guint cluster_bits;
    guint l2_bits;
    guint32 cluster_size;
    guint32 l2_entries;
    guint64 l1_offset;
    guint32 l1_size;
    guint64 *l1;       /* host byte order */
    guint64 file_size; /* end of the file: where the next allocation goes */
    L2Slot l2_cache[L2_CACHE_SLOTS];
    guint64 use_clock;
    /* The last compressed cluster inflated, keyed by its L2 entry (an entry
     * is never reused for other data, as space is never reused). */
    guint64 inflated_entry;
    guint8 *inflated;
    guint8 *scratch;        /* one cluster for copy-on-write */
    gboolean aes;           /* legacy AES: data clusters are encrypted */
    VdSectorCipher *cipher; /* NULL when opened without the key */
} QcowState;

/* In the order of qemu-img's "Formatting" line. */
static const VdCreateOption qcow_create_options[] = {
    { "size", VD_OPTION_SIZE, NULL, "Virtual disk size" },
    { "backing_file", VD_OPTION_STRING, NULL, "File name of a base image" },
    { "backing_fmt", VD_OPTION_STRING, NULL, "Format of the backing image" },
    { "encryption", VD_OPTION_BOOL, NULL,
      "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)" },
    { "encrypt.format", VD_OPTION_STRING, NULL, "Encrypt the image, format choices: 'aes'" },
    { "encrypt.key-secret", VD_OPTION_STRING, NULL,
      "ID of the secret that provides the AES encryption key" },
    { NULL },
};

static inline guint64 round_up(guint64 v, guint64 align) { return (v + align - 1) / align * align; }

static int qcow_probe(const guint8 *buf, gsize len, const char *filename)
{
    if (len < HDR_VERSION + 4)
        return 0;
    /* qcow2 shares the magic; the version tells them apart. */
    gboolean match =
        vd_be32(buf + HDR_MAGIC) == QCOW_MAGIC && vd_be32(buf + HDR_VERSION) == QCOW_VERSION;
    return match ? 100 : 0;
}

/* ----- compressed clusters: raw deflate (compress.c) ----- */

/* Inflate exactly out_len bytes. */
static gboolean inflate_cluster(const guint8 *in, gsize len, guint8 *out, gsize out_len)
{
    gsize produced;
    gboolean complete;
    return vd_inflate(VD_DEFLATE_RAW, in, len, out, out_len, &produced, &complete) &&
           produced == out_len;
}

static guint64 compressed_offset(const QcowState *s, guint64 entry)
{
    return entry & ((1ull << (63 - s->cluster_bits)) - 1);
}

static guint64 compressed_length(const QcowState *s, guint64 entry)
{
    return (entry >> (63 - s->cluster_bits)) & (s->cluster_size - 1);
}

/* An entry is used only after this says it lies inside the file. */
static gboolean check_entry(VdImage *img, guint64 guest, guint64 entry, GError **error)
{
    QcowState *s = img->priv;
    if (entry == 0)
        return TRUE;
    if (entry & ENTRY_COMPRESSED) {
        guint64 off = compressed_offset(s, entry), len = compressed_length(s, entry);
        if (len == 0 || off > s->file_size || len > s->file_size - off) {
            vd_set_error(error, img, VD_ERROR_CORRUPT,
                         "compressed cluster for guest offset %" G_GUINT64_FORMAT
                         " (%" G_GUINT64_FORMAT " bytes at %" G_GUINT64_FORMAT
                         ") is empty or lies past the end of the file",
                         guest, len, off);
            return FALSE;
        }
        return TRUE;
    }
    /* The cluster may end past the end of the file (reads as zero there),
     * but it must start inside it. */
    if (entry >= s->file_size) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "cluster for guest offset %" G_GUINT64_FORMAT " points past the end of "
                     "the file (offset %" G_GUINT64_FORMAT ")",
                     guest, entry);
        return FALSE;
    }
    return TRUE;
}

/* ----- the L2 table cache ----- */

static gboolean store_l2_entries(VdImage *img, L2Slot *slot, guint32 first, guint32 count,
                                 GError **error);

/* No entry of the slot waits to be written back. */
static void mark_clean(L2Slot *slot)
{
    slot->dirty_lo = G_MAXUINT32;
    slot->dirty_hi = 0;
}

/* Entries [first, last] of the slot wait to be written back. */
static void mark_dirty(L2Slot *slot, guint32 first, guint32 last)
{
    slot->dirty_lo = MIN(slot->dirty_lo, first);
    slot->dirty_hi = MAX(slot->dirty_hi, last);
}

/* Entries pointing at new clusters are written after the clusters' data
 * is on stable storage, and only at a flush (or when their table leaves
 * the cache), as QEMU's qcow2 writes its L2 cache: a power cut leaves at
 * worst clusters nobody points at, never an entry pointing at data that
 * is not there, and no sync per write. */
static gboolean write_back(VdImage *img, gboolean sync_first, GError **error)
{
    QcowState *s = img->priv;
    gboolean synced = !sync_first;
    for (guint i = 0; i < L2_CACHE_SLOTS; i++) {
        L2Slot *slot = &s->l2_cache[i];
        if (slot->offset == 0 || slot->dirty_lo > slot->dirty_hi)
            continue;
        if (!synced && !vd_file_sync(img->file, error))
            return FALSE;
        synced = TRUE;
        if (!store_l2_entries(img, slot, slot->dirty_lo, slot->dirty_hi - slot->dirty_lo + 1,
                              error))
            return FALSE;
        mark_clean(slot);
    }
    return TRUE;
}

static gboolean qcow_flush(VdImage *img, GError **error) { return write_back(img, TRUE, error); }

static L2Slot *find_free_slot(VdImage *img, GError **error)
{
    QcowState *s = img->priv;
    L2Slot *victim = &s->l2_cache[0];
    for (guint i = 0; i < L2_CACHE_SLOTS; i++) {
        L2Slot *slot = &s->l2_cache[i];
        if (slot->offset == 0) {
            mark_clean(slot);
            return slot;
        }
        if (slot->last_use < victim->last_use)
            victim = slot;
    }
    if (victim->dirty_lo <= victim->dirty_hi && !write_back(img, TRUE, error))
        return NULL;
    victim->offset = 0;
    mark_clean(victim);
    return victim;
}

static L2Slot *load_l2(VdImage *img, guint32 l1_index, GError **error)
{
    QcowState *s = img->priv;
    guint64 offset = s->l1[l1_index];
    for (guint i = 0; i < L2_CACHE_SLOTS; i++) {
        if (s->l2_cache[i].offset == offset) {
            s->l2_cache[i].last_use = ++s->use_clock;
            return &s->l2_cache[i];
        }
    }
    gsize bytes = (gsize)s->l2_entries * 8;
    if (offset % s->cluster_size != 0 || offset > s->file_size || bytes > s->file_size - offset) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "L1 entry %u points to an L2 table at offset %" G_GUINT64_FORMAT
                     ", which is not cluster aligned or lies past the end of the file",
                     l1_index, offset);
        return NULL;
    }
    L2Slot *slot = find_free_slot(img, error);
    if (slot == NULL)
        return NULL;
    if (slot->entries == NULL)
        slot->entries = g_new(guint64, s->l2_entries);
    if (!vd_file_pread(img->file, offset, slot->entries, bytes, error))
        return NULL;
    for (guint32 i = 0; i < s->l2_entries; i++)
        slot->entries[i] = vd_be64((const guint8 *)&slot->entries[i]);
    slot->offset = offset;
    slot->last_use = ++s->use_clock;
    return slot;
}

/* Reserve len bytes at the end of the file, aligned to align. The caller
 * writes them before anything points at them. */
static guint64 allocate(QcowState *s, guint64 align, guint64 len)
{
    guint64 offset = round_up(s->file_size, align);
    s->file_size = offset + len;
    return offset;
}

/* A new L2 table is written (zeroed) before the L1 entry points at it, so
 * a crash in between leaves only unreferenced space. */
static L2Slot *allocate_l2(VdImage *img, guint32 l1_index, GError **error)
{
    QcowState *s = img->priv;
    gsize bytes = (gsize)s->l2_entries * 8;
    guint64 offset = allocate(s, s->cluster_size, bytes);
    L2Slot *slot = find_free_slot(img, error);
    if (slot == NULL)
        return NULL;
    if (slot->entries == NULL)
        slot->entries = g_new(guint64, s->l2_entries);
    memset(slot->entries, 0, bytes);
    /* On stable storage before the L1 entry names it (a power cut could
     * otherwise keep the entry and lose the table). */
    if (!vd_file_pwrite(img->file, offset, slot->entries, bytes, error) ||
        !vd_file_sync(img->file, error))
        return NULL;
    guint8 be[8];
    vd_put_be64(be, offset);
    if (!vd_file_pwrite(img->file, s->l1_offset + (guint64)l1_index * 8, be, sizeof be, error))
        return NULL;
    s->l1[l1_index] = offset;
    slot->offset = offset;
    slot->last_use = ++s->use_clock;
    return slot;
}

/* The L2 table for guest offset, or NULL with *error unset when there is
 * none and allocate is FALSE. */
static L2Slot *l2_for(VdImage *img, guint64 guest, gboolean allocate_new, GError **error)
{
    QcowState *s = img->priv;
    guint32 l1_index = (guint32)(guest >> (s->cluster_bits + s->l2_bits));
    if (s->l1[l1_index] != 0)
        return load_l2(img, l1_index, error);
    return allocate_new ? allocate_l2(img, l1_index, error) : NULL;
}

static guint32 l2_index(const QcowState *s, guint64 guest)
{
    return (guint32)((guest >> s->cluster_bits) & (s->l2_entries - 1));
}

/* The (checked) entry for guest and how many bytes from guest it covers:
 * to the end of the cluster, or of the L2 table's range when there is no
 * table. */
static gboolean lookup(VdImage *img, guint64 guest, guint64 *entry, guint64 *span, GError **error)
{
    QcowState *s = img->priv;
    GError *local = NULL;
    L2Slot *slot = l2_for(img, guest, FALSE, &local);
    if (slot == NULL && local != NULL) {
        g_propagate_error(error, local);
        return FALSE;
    }
    if (slot == NULL) {
        guint64 range = 1ull << (s->cluster_bits + s->l2_bits);
        *entry = 0;
        *span = range - (guest & (range - 1));
        return TRUE;
    }
    *entry = slot->entries[l2_index(s, guest)];
    *span = s->cluster_size - (guest & (s->cluster_size - 1));
    return check_entry(img, guest, *entry, error);
}

/* Write entries [first, first+count) of slot's table, already updated in
 * the cache, to the file. */
static gboolean store_l2_entries(VdImage *img, L2Slot *slot, guint32 first, guint32 count,
                                 GError **error)
{
    g_autofree guint8 *be = g_malloc((gsize)count * 8);
    for (guint32 i = 0; i < count; i++)
        vd_put_be64(be + (gsize)i * 8, slot->entries[first + i]);
    return vd_file_pwrite(img->file, slot->offset + (guint64)first * 8, be, (gsize)count * 8,
                          error);
}

/* ----- open and close ----- */

static gboolean parse_geometry(VdImage *img, const guint8 *hdr, GError **error)
{
    QcowState *s = img->priv;
    s->cluster_bits = hdr[HDR_CLUSTER_BITS];
    s->l2_bits = hdr[HDR_L2_BITS];
    if (s->cluster_bits < MIN_CLUSTER_BITS || s->cluster_bits > MAX_CLUSTER_BITS) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "cluster_bits %u is out of range (clusters must be 512 bytes to 64 KiB)",
                     s->cluster_bits);
        return FALSE;
    }
    if (s->l2_bits < MIN_L2_BITS || s->l2_bits > MAX_L2_BITS) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "l2_bits %u is out of range (L2 tables must be 512 bytes to 64 KiB)",
                     s->l2_bits);
        return FALSE;
    }
    s->cluster_size = 1u << s->cluster_bits;
    s->l2_entries = 1u << s->l2_bits;
    return TRUE;
}

/* Legacy AES (crypto-cipher.c). */
static gboolean open_aes(VdImage *img, GError **error)
{
    QcowState *s = img->priv;
    s->aes = TRUE;
    return vd_legacy_aes_open(img, &s->cipher, error);
}

static gboolean parse_crypt_method(VdImage *img, guint32 method, GError **error)
{
    if (method == CRYPT_AES)
        return open_aes(img, error);
    if (method != CRYPT_NONE) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "unknown encryption method %u", method);
        return FALSE;
    }
    return TRUE;
}

/* Size the L1 table for the virtual size and check that it lies in the file. */
static gboolean parse_l1(VdImage *img, const guint8 *hdr, GError **error)
{
    QcowState *s = img->priv;
    guint shift = s->cluster_bits + s->l2_bits;
    guint64 size = vd_be64(hdr + HDR_SIZE);
    guint64 l1_size = (size >> shift) + ((size & ((1ull << shift) - 1)) != 0);
    if (l1_size * 8 > MAX_L1_BYTES) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "virtual size %" G_GUINT64_FORMAT " needs an L1 table of %" G_GUINT64_FORMAT
                     " entries, more than the %u allowed",
                     size, l1_size, MAX_L1_BYTES / 8);
        return FALSE;
    }
    s->l1_offset = vd_be64(hdr + HDR_L1_OFFSET);
    s->l1_size = (guint32)l1_size;
    if (s->l1_offset > s->file_size || l1_size * 8 > s->file_size - s->l1_offset) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "L1 table (%u entries at offset %" G_GUINT64_FORMAT
                     ") lies past the end of the file",
                     s->l1_size, s->l1_offset);
        return FALSE;
    }
    img->size = size;
    return TRUE;
}

static gboolean load_l1(VdImage *img, GError **error)
{
    QcowState *s = img->priv;
    if (!vd_image_charge_metadata(img, (guint64)s->l1_size * 8, "L1 table", error))
        return FALSE;
    s->l1 = g_new0(guint64, MAX(s->l1_size, 1));
    if (s->l1_size == 0)
        return TRUE;
    if (!vd_file_pread(img->file, s->l1_offset, s->l1, (gsize)s->l1_size * 8, error))
        return FALSE;
    for (guint32 i = 0; i < s->l1_size; i++)
        s->l1[i] = vd_be64((const guint8 *)&s->l1[i]);
    return TRUE;
}

/* The backing file name: stored without a terminator, at most 1023 bytes. */
static gboolean parse_backing(VdImage *img, const guint8 *hdr, GError **error)
{
    QcowState *s = img->priv;
    guint64 offset = vd_be64(hdr + HDR_BACKING_OFFSET);
    guint32 len = vd_be32(hdr + HDR_BACKING_SIZE);
    if (offset == 0 || len == 0)
        return TRUE;
    if (len > MAX_BACKING_NAME) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "backing file name is %u bytes long, more than the %d allowed", len,
                     MAX_BACKING_NAME);
        return FALSE;
    }
    if (offset > s->file_size || len > s->file_size - offset) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "backing file name (%u bytes at offset %" G_GUINT64_FORMAT
                     ") lies past the end of the file",
                     len, offset);
        return FALSE;
    }
    g_autofree char *name = g_malloc0(len + 1);
    if (!vd_file_pread(img->file, offset, name, len, error))
        return FALSE;
    if (strlen(name) != len) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "backing file name contains a NUL byte");
        return FALSE;
    }
    /* qcow cannot record the backing format: the generic layer probes it. */
    g_free(img->backing_name); /* an explicit parent, which wins after open */
    img->backing_name = g_steal_pointer(&name);
    return TRUE;
}

static gboolean qcow_open(VdImage *img, GError **error)
{
    QcowState *s = g_new0(QcowState, 1);
    img->priv = s;
    if (!vd_file_size(img->file, &s->file_size, error))
        return FALSE;
    if (s->file_size < HDR_LEN) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "file is too short for a qcow header");
        return FALSE;
    }
    guint8 hdr[HDR_LEN];
    if (!vd_file_pread(img->file, 0, hdr, sizeof hdr, error))
        return FALSE;
    if (vd_be32(hdr + HDR_MAGIC) != QCOW_MAGIC) {
        vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT, "not a qcow image (bad magic)");
        return FALSE;
    }
    guint32 version = vd_be32(hdr + HDR_VERSION);
    if (version != QCOW_VERSION) {
        vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT,
                     "qcow version %u is not supported here (versions 2 and 3 are qcow2)", version);
        return FALSE;
    }
    if (!parse_crypt_method(img, vd_be32(hdr + HDR_CRYPT_METHOD), error) ||
        !parse_geometry(img, hdr, error) || !parse_l1(img, hdr, error) || !load_l1(img, error) ||
        !parse_backing(img, hdr, error))
        return FALSE;
    s->inflated = g_malloc(s->cluster_size);
    s->scratch = g_malloc(s->cluster_size);
    return TRUE;
}

static void qcow_close(VdImage *img)
{
    QcowState *s = img->priv;
    if (s == NULL)
        return;
    g_autoptr(GError) local = NULL;
    if (s->l1 != NULL && !write_back(img, TRUE, &local))
        g_warning("%s: %s", img->filename, local->message);
    for (guint i = 0; i < L2_CACHE_SLOTS; i++)
        g_free(s->l2_cache[i].entries);
    g_free(s->l1);
    g_free(s->inflated);
    g_free(s->scratch);
    vd_sector_cipher_free(s->cipher);
    g_free(s);
    img->priv = NULL;
}

/* ----- create ----- */

/* encryption=on or encrypt.format=aes: legacy AES, qcow's only cipher.
 * qemu-img wants the key now although nothing is encrypted yet. */
static gboolean parse_encryption(const VdCreateParams *params, gboolean *aes, GError **error)
{
    const char *format;
    if (!vd_create_encrypt_format(params->options, &format, error))
        return FALSE;
    *aes = format != NULL;
    if (format == NULL && vd_options_get(params->options, "encrypt.key-secret") != NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "option 'encrypt.key-secret' needs encrypt.format=aes");
        return FALSE;
    }
    if (format != NULL && !g_str_equal(format, "aes")) {
        vd_set_file_error(error, params->path, VD_ERROR_NOT_SUPPORTED,
                          "Unsupported encryption format '%s': qcow images have only the "
                          "legacy AES (encrypt.format=aes)",
                          format);
        return FALSE;
    }
    const guint8 *pass;
    gsize len;
    return format == NULL || vd_create_passphrase(params, "encrypt.key-secret", &pass, &len, error);
}

static gboolean qcow_create(VdFile *file, const VdCreateParams *params, GError **error)
{
    gboolean aes;
    if (!parse_encryption(params, &aes, error))
        return FALSE;
    /* backing_fmt is accepted, as qemu-img does, but qcow has no field for
     * it: whoever opens the image probes the backing file. */
    gsize name_len = params->backing_file != NULL ? strlen(params->backing_file) : 0;
    if (name_len > MAX_BACKING_NAME) {
        vd_set_file_error(error, params->path, VD_ERROR_INVALID_ARGUMENT,
                          "backing file name is longer than %d bytes", MAX_BACKING_NAME);
        return FALSE;
    }
    /* qemu's choice: with a backing file, 512-byte clusters so a small
     * write copies little from the backing file, and 32 KiB L2 tables. */
    guint cluster_bits = name_len > 0 ? 9 : 12;
    guint l2_bits = name_len > 0 ? 12 : 9;
    guint shift = cluster_bits + l2_bits;
    guint64 l1_size = (params->size >> shift) + ((params->size & ((1ull << shift) - 1)) != 0);
    if (l1_size * 8 > MAX_L1_BYTES) {
        vd_set_file_error(error, params->path, VD_ERROR_INVALID_ARGUMENT,
                          "virtual size %" G_GUINT64_FORMAT " is too large for a qcow image",
                          params->size);
        return FALSE;
    }
    guint64 l1_offset = round_up(HDR_LEN + name_len, 8);

    g_autofree guint8 *head = g_malloc0(l1_offset);
    vd_put_be32(head + HDR_MAGIC, QCOW_MAGIC);
    vd_put_be32(head + HDR_VERSION, QCOW_VERSION);
    if (name_len > 0) {
        vd_put_be64(head + HDR_BACKING_OFFSET, HDR_LEN);
        vd_put_be32(head + HDR_BACKING_SIZE, (guint32)name_len);
        memcpy(head + HDR_LEN, params->backing_file, name_len);
    }
    vd_put_be64(head + HDR_SIZE, params->size);
    head[HDR_CLUSTER_BITS] = (guint8)cluster_bits;
    head[HDR_L2_BITS] = (guint8)l2_bits;
    vd_put_be32(head + HDR_CRYPT_METHOD, aes ? CRYPT_AES : CRYPT_NONE);
    vd_put_be64(head + HDR_L1_OFFSET, l1_offset);
    if (!vd_file_pwrite(file, 0, head, l1_offset, error))
        return FALSE;
    /* The empty L1 table: zeroes, padded to whole sectors as qemu does. */
    return vd_file_truncate(file, l1_offset + round_up(l1_size * 8, SECTOR), error);
}

/* ----- block status and reading ----- */

static VdExtentKind entry_kind(guint64 entry)
{
    return entry == 0 ? VD_EXTENT_UNALLOCATED : VD_EXTENT_DATA;
}

/* Runs of unallocated clusters, of compressed clusters and of plain
 * clusters that lie one after another in the file each make one extent. */
static gboolean qcow_block_status(VdImage *img, guint64 offset, guint64 len, VdExtent *out,
                                  GError **error)
{
    guint64 first, span;
    if (!lookup(img, offset, &first, &span, error))
        return FALSE;
    gboolean compressed = (first & ENTRY_COMPRESSED) != 0;
    guint64 in_cluster = offset & (((QcowState *)img->priv)->cluster_size - 1);
    guint64 host_next = first + in_cluster + span; /* for plain clusters */
    guint64 done = MIN(span, len);
    for (guint n = 1; done < len && n < STATUS_MAX_CLUSTERS; n++) {
        guint64 entry;
        if (!lookup(img, offset + done, &entry, &span, error))
            return FALSE;
        if (entry_kind(entry) != entry_kind(first) ||
            ((entry & ENTRY_COMPRESSED) != 0) != compressed)
            break;
        if (entry != 0 && !compressed) {
            if (entry != host_next)
                break;
            host_next += span;
        }
        done += MIN(span, len - done);
    }
    out->kind = entry_kind(first);
    out->length = done;
    out->compressed = compressed;
    out->offset_valid = first != 0 && !compressed && !((QcowState *)img->priv)->aes;
    out->host_offset = out->offset_valid ? first + in_cluster : 0;
    return TRUE;
}

/* Inflate the compressed cluster entry into s->inflated. */
static gboolean inflate_entry(VdImage *img, guint64 entry, GError **error)
{
    QcowState *s = img->priv;
    if (s->inflated_entry == entry)
        return TRUE;
    s->inflated_entry = 0;
    gsize len = (gsize)compressed_length(s, entry);
    g_autofree guint8 *packed = g_malloc(len);
    if (!vd_file_pread(img->file, compressed_offset(s, entry), packed, len, error))
        return FALSE;
    if (!inflate_cluster(packed, len, s->inflated, s->cluster_size)) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "compressed cluster at offset %" G_GUINT64_FORMAT " does not decompress",
                     compressed_offset(s, entry));
        return FALSE;
    }
    s->inflated_entry = entry;
    return TRUE;
}

/* Read len bytes of guest data at guest into buf, one entry's span at a
 * time, with plain clusters that follow each other in the file merged into
 * one read. */
static gboolean read_run(VdImage *img, guint64 guest, guint64 host, guint8 *buf, gsize len,
                         GError **error)
{
    QcowState *s = img->priv;
    vd_file_debug_event(img->file, VD_EVENT_READ_AIO);
    if (!vd_file_pread_zero_past_eof(img->file, host, buf, len, error))
        return FALSE;
    return !s->aes || vd_sector_cipher_decrypt(s->cipher, guest / 512, buf, len, error);
}

/* Encrypted data is read in whole sectors. */
static gboolean read_aligned(VdImage *img, guint64 offset, guint8 *buf, gsize len, GError **error);

static gboolean qcow_read(VdImage *img, guint64 offset, void *buf, gsize len, GError **error)
{
    QcowState *s = img->priv;
    if (s->aes && s->cipher == NULL) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "is encrypted and was opened without its passphrase (give "
                     "encrypt.key-secret=ID with --object secret, or --passphrase-file)");
        return FALSE;
    }
    if (s->aes && ((offset & 511) != 0 || (len & 511) != 0))
        return read_aligned(img, offset, buf, len, error);
    guint8 *out = buf;
    guint64 run_guest = 0;
    guint64 run_host = 0;
    guint8 *run_buf = NULL;
    gsize run_len = 0;
    for (gsize done = 0; done < len;) {
        guint64 guest = offset + done, entry, span;
        if (!lookup(img, guest, &entry, &span, error))
            return FALSE;
        gsize n = (gsize)MIN(span, len - done);
        guint64 in_cluster = guest & (s->cluster_size - 1);
        gboolean plain = entry != 0 && !(entry & ENTRY_COMPRESSED);
        if (plain && run_len > 0 && entry + in_cluster == run_host + run_len) {
            run_len += n;
            done += n;
            continue;
        }
        if (run_len > 0 && !read_run(img, run_guest, run_host, run_buf, run_len, error))
            return FALSE;
        run_len = 0;
        if (plain) {
            run_guest = guest;
            run_host = entry + in_cluster;
            run_buf = out + done;
            run_len = n;
        } else if (entry != 0) {
            if (!inflate_entry(img, entry, error))
                return FALSE;
            memcpy(out + done, s->inflated + in_cluster, n);
        } else if (!vd_image_read_backing(img, guest, out + done, n, error)) {
            return FALSE; /* the generic layer asks for data only; be safe anyway */
        }
        done += n;
    }
    return run_len == 0 || read_run(img, run_guest, run_host, run_buf, run_len, error);
}

static gboolean read_aligned(VdImage *img, guint64 offset, guint8 *buf, gsize len, GError **error)
{
    guint64 start = offset & ~(guint64)511, end = (offset + len + 511) & ~(guint64)511;
    g_autofree guint8 *tmp = g_malloc(end - start);
    if (!qcow_read(img, start, tmp, end - start, error))
        return FALSE;
    memcpy(buf, tmp + (offset - start), len);
    return TRUE;
}

/* ----- writing ----- */

/* Store len bytes of the guest's data for guest offset guest at host: as
 * they are, or with legacy AES encrypted through a bounce buffer (guest,
 * host and len are then whole sectors), the caller's bytes staying plain. */
static gboolean put_data(VdImage *img, guint64 host, guint64 guest, const guint8 *data, gsize len,
                         GError **error)
{
    QcowState *s = img->priv;
    vd_file_debug_event(img->file, VD_EVENT_WRITE_AIO);
    if (!s->aes)
        return vd_file_pwrite(img->file, host, data, len, error);
    gsize chunk = MIN(len, (gsize)1 << 20);
    g_autofree guint8 *tmp = g_malloc(chunk);
    for (gsize done = 0; done < len;) {
        gsize n = MIN(chunk, len - done);
        memcpy(tmp, data + done, n);
        if (!vd_sector_cipher_encrypt(s->cipher, (guest + done) / SECTOR, tmp, n, error) ||
            !vd_file_pwrite(img->file, host + done, tmp, n, error))
            return FALSE;
        done += n;
    }
    return TRUE;
}

/* count whole clusters from guest offset guest, all unallocated and in one
 * L2 table, written as one piece of the file; the entries follow once the
 * data is there. */
static gboolean write_new_clusters(VdImage *img, L2Slot *slot, guint64 guest, guint32 count,
                                   const guint8 *data, GError **error)
{
    QcowState *s = img->priv;
    guint32 first = l2_index(s, guest);
    guint64 len = (guint64)count * s->cluster_size;
    guint64 host = allocate(s, s->cluster_size, len);
    if (!put_data(img, host, guest, data, (gsize)len, error))
        return FALSE;

    for (guint32 i = 0; i < count; i++)
        slot->entries[first + i] = host + (guint64)i * s->cluster_size;
    mark_dirty(slot, first, first + count - 1);
    return TRUE;
}

/* Write part of a cluster that has no plain copy yet: the rest of it comes
 * from the compressed copy, the backing file or zeroes. */
static gboolean copy_on_write(VdImage *img, L2Slot *slot, guint64 guest, const guint8 *data,
                              gsize len, GError **error)
{
    QcowState *s = img->priv;
    guint32 index = l2_index(s, guest);
    guint64 entry = slot->entries[index];
    guint64 cluster_start = guest & ~(guint64)(s->cluster_size - 1);
    if (entry & ENTRY_COMPRESSED) {
        if (!inflate_entry(img, entry, error))
            return FALSE;
        memcpy(s->scratch, s->inflated, s->cluster_size);
    } else if (!vd_image_read_backing(img, cluster_start, s->scratch, s->cluster_size, error)) {
        return FALSE;
    }
    memcpy(s->scratch + (guest - cluster_start), data, len);
    return write_new_clusters(img, slot, cluster_start, 1, s->scratch, error);
}

/* Encrypted data is written in whole sectors: the request is widened with
 * the old content of its first and last sector. */
static gboolean write_aligned(VdImage *img, guint64 offset, const guint8 *buf, gsize len,
                              GError **error);

static gboolean qcow_write(VdImage *img, guint64 offset, const void *buf, gsize len, GError **error)
{
    QcowState *s = img->priv;
    const guint8 *in = buf;
    if (s->aes && s->cipher == NULL) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "is encrypted and was opened without its passphrase (give "
                     "encrypt.key-secret=ID with --object secret, or --passphrase-file)");
        return FALSE;
    }
    if (s->aes && ((offset & (SECTOR - 1)) != 0 || (len & (SECTOR - 1)) != 0))
        return write_aligned(img, offset, buf, len, error);
    for (gsize done = 0; done < len;) {
        guint64 guest = offset + done;
        L2Slot *slot = l2_for(img, guest, TRUE, error);
        if (slot == NULL)
            return FALSE;
        guint32 index = l2_index(s, guest);
        guint64 entry = slot->entries[index];
        if (!check_entry(img, guest, entry, error))
            return FALSE;
        guint64 in_cluster = guest & (s->cluster_size - 1);
        gsize n = (gsize)MIN(s->cluster_size - in_cluster, len - done);
        if (entry != 0 && !(entry & ENTRY_COMPRESSED)) {
            if (!put_data(img, entry + in_cluster, guest, in + done, n, error))
                return FALSE;
        } else if (entry == 0 && n == s->cluster_size) {
            /* Whole new clusters: as many as this table and the buffer hold. */
            guint32 count = 1;
            while (index + count < s->l2_entries && slot->entries[index + count] == 0 &&
                   (guint64)(count + 1) * s->cluster_size <= len - done)
                count++;
            n = (gsize)count * s->cluster_size;
            if (!write_new_clusters(img, slot, guest, count, in + done, error))
                return FALSE;
        } else if (!copy_on_write(img, slot, guest, in + done, n, error)) {
            return FALSE;
        }
        done += n;
    }
    return TRUE;
}

static gboolean write_aligned(VdImage *img, guint64 offset, const guint8 *buf, gsize len,
                              GError **error)
{
    guint64 start = offset & ~(guint64)(SECTOR - 1);
    guint64 end = round_up(offset + len, SECTOR);
    g_autofree guint8 *tmp = g_malloc(end - start);
    if (!qcow_read(img, start, tmp, SECTOR, error) ||
        (end - SECTOR > start &&
         !qcow_read(img, end - SECTOR, tmp + (end - SECTOR - start), SECTOR, error)))
        return FALSE;
    memcpy(tmp + (offset - start), buf, len);
    return qcow_write(img, start, tmp, end - start, error);
}

static gboolean write_zero_data(VdImage *img, guint64 offset, guint64 len, GError **error)
{
    static const gsize chunk = 1 << 20;
    g_autofree guint8 *zeroes = g_malloc0((gsize)MIN(len, chunk));
    for (guint64 done = 0; done < len;) {
        gsize n = (gsize)MIN(len - done, chunk);
        if (!qcow_write(img, offset + done, zeroes, n, error))
            return FALSE;
        done += n;
    }
    return TRUE;
}

/* qcow has no zero flag. Without a backing file an unallocated cluster
 * reads as zero, so whole clusters can simply be dropped (their space is
 * leaked: qcow never reuses space); with one, zeroes are written. */
static gboolean qcow_write_zeroes(VdImage *img, guint64 offset, guint64 len, gboolean may_unmap,
                                  GError **error)
{
    QcowState *s = img->priv;
    if (img->backing_name != NULL)
        return write_zero_data(img, offset, len, error);
    for (guint64 done = 0; done < len;) {
        guint64 guest = offset + done, entry, span;
        if (!lookup(img, guest, &entry, &span, error))
            return FALSE;
        guint64 n = MIN(span, len - done);
        gboolean whole = (guest & (s->cluster_size - 1)) == 0 && n == s->cluster_size;
        if (entry == 0) {
            /* already reads as zero */
        } else if (whole && (may_unmap || (entry & ENTRY_COMPRESSED))) {
            L2Slot *slot = l2_for(img, guest, FALSE, error);
            if (slot == NULL)
                return FALSE;
            guint32 index = l2_index(s, guest);
            slot->entries[index] = 0;
            if (!store_l2_entries(img, slot, index, 1, error))
                return FALSE;
        } else if (!write_zero_data(img, guest, n, error)) {
            return FALSE;
        }
        done += n;
    }
    return TRUE;
}

/* Called without the image lock: uses only the geometry, fixed at open. */
static gsize qcow_compress(VdImage *img, const void *in, gsize len, void *out, gsize out_len)
{
    QcowState *s = img->priv;
    if (len > s->cluster_size)
        return 0;
    /* A compressed cluster always inflates to a whole cluster, so the last,
     * short cluster of an image is padded with zeroes (as qemu does). */
    g_autofree guint8 *padded = NULL;
    if (len < s->cluster_size) {
        padded = g_malloc0(s->cluster_size);
        memcpy(padded, in, len);
        in = padded;
    }
    /* The length field has cluster_bits bits: at most cluster_size - 1. */
    gsize limit = MIN(out_len, (gsize)s->cluster_size - 1);
    return vd_deflate(VD_DEFLATE_RAW, in, s->cluster_size, out, limit);
}

static gboolean qcow_write_compressed(VdImage *img, guint64 offset, const void *data, gsize len,
                                      GError **error)
{
    QcowState *s = img->priv;
    /* qemu stores compressed clusters unencrypted even in an encrypted
     * image: refused rather than leak the data. */
    if (s->aes) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "compression and encryption cannot be used together");
        return FALSE;
    }
    if ((offset & (s->cluster_size - 1)) != 0 || len == 0 || len >= s->cluster_size) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "compressed write of %" G_GSIZE_FORMAT " bytes at offset %" G_GUINT64_FORMAT
                     " is not one cluster's compressed data",
                     len, offset);
        return FALSE;
    }
    L2Slot *slot = l2_for(img, offset, TRUE, error);
    if (slot == NULL)
        return FALSE;
    guint64 host = allocate(s, SECTOR, len);
    if (host > compressed_offset(s, G_MAXUINT64)) {
        vd_set_error(error, img, VD_ERROR_NO_SPACE,
                     "the file is too large to address another compressed cluster");
        return FALSE;
    }
    if (!vd_file_pwrite(img->file, host, data, len, error))
        return FALSE;
    guint32 index = l2_index(s, offset);
    slot->entries[index] = ENTRY_COMPRESSED | (guint64)len << (63 - s->cluster_bits) | host;
    mark_dirty(slot, index, index);
    return TRUE;
}

/* ----- questions ----- */

static void qcow_get_info(VdImage *img, VdImageInfo *info)
{
    QcowState *s = img->priv;
    info->cluster_size = s->cluster_size;
    info->encrypted = s->aes;
    if (s->aes) {
        GVariantBuilder b, e;
        g_variant_builder_init(&e, G_VARIANT_TYPE_VARDICT);
        g_variant_builder_add(&e, "{sv}", "format", g_variant_new_string("aes"));
        g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
        g_variant_builder_add(&b, "{sv}", "encrypt", g_variant_builder_end(&e));
        if (info->format_specific != NULL)
            g_variant_unref(info->format_specific);
        info->format_specific = g_variant_ref_sink(g_variant_builder_end(&b));
    }
}

static guint32 qcow_cluster_size(VdImage *img) { return ((QcowState *)img->priv)->cluster_size; }

/* Unallocated clusters read as zero; the generic layer says FALSE when
 * there is a backing file. */
static gboolean qcow_has_zero_init(VdImage *img) { return TRUE; }

/* Only the whole image: its L1 table is cleared and the file cut after
 * it, as qemu empties a qcow (what commit does to the overlay it
 * committed). Any other range stays as it is: discard is advisory, and
 * qcow has no way to free a cluster in the middle. */
static gboolean qcow_discard(VdImage *img, guint64 offset, guint64 len, GError **error)
{
    QcowState *s = img->priv;
    if (offset != 0 || len < img->size || s->l1_size == 0)
        return TRUE;
    for (guint i = 0; i < L2_CACHE_SLOTS; i++) {
        mark_clean(&s->l2_cache[i]);
        s->l2_cache[i].offset = 0;
    }
    s->inflated_entry = 0;
    memset(s->l1, 0, (gsize)s->l1_size * 8);
    /* On disk zero is zero in either byte order. */
    if (!vd_file_pwrite(img->file, s->l1_offset, s->l1, (gsize)s->l1_size * 8, error) ||
        !vd_file_sync(img->file, error))
        return FALSE;
    s->file_size = s->l1_offset + (guint64)s->l1_size * 8;
    return vd_file_truncate(img->file, s->file_size, error);
}

const VdDriver vd_driver_qcow = {
    .name = "qcow",
    .create_options = qcow_create_options,
    .probe = qcow_probe,
    .open = qcow_open,
    .close = qcow_close,
    .flush = qcow_flush,
    .create = qcow_create,
    .block_status = qcow_block_status,
    .read = qcow_read,
    .write = qcow_write,
    .write_zeroes = qcow_write_zeroes,
    .compress = qcow_compress,
    .write_compressed = qcow_write_compressed,
    .get_info = qcow_get_info,
    .has_zero_init = qcow_has_zero_init,
    .discard = qcow_discard,
    .cluster_size = qcow_cluster_size,
};
