/* LUKS1 headers and key slots (see luks-header.h).
 *
 * Layout facts are the LUKS1 on-disk format specification's; the placement
 * of key material and payload is QEMU's (slot 0 at 4 KiB, each slot's
 * material rounded up to 4 KiB, the payload right after slot 7), so that
 * what vdisk writes matches what qemu-img writes.
 */
#include "luks-header.h"

#include <openssl/crypto.h>
#include <string.h>

/* Header field offsets (LUKS1 specification, all numbers big-endian). */
#define LH_MAGIC 0
#define LH_VERSION 6
#define LH_CIPHER_NAME 8
#define LH_CIPHER_MODE 40
#define LH_HASH_SPEC 72
#define LH_PAYLOAD_OFFSET 104
#define LH_KEY_BYTES 108
#define LH_MK_DIGEST 112
#define LH_MK_DIGEST_SALT 132
#define LH_MK_DIGEST_ITER 164
#define LH_UUID 168
#define LH_SLOTS 208
#define LH_SLOT_SIZE 48
/* Within a key slot. */
#define LS_ACTIVE 0
#define LS_ITERATIONS 4
#define LS_SALT 8
#define LS_KEY_OFFSET 40
#define LS_STRIPES 44

#define LUKS_SLOT_ACTIVE 0x00AC71F3u
#define LUKS_SLOT_INACTIVE 0x0000DEADu
#define LUKS_SECTOR 512u
#define LUKS_ALIGN 4096u /* key material and payload alignment */
/* Hostile headers must not make us allocate or compute without bound. */
#define LUKS_MAX_STRIPES 65536u
#define LUKS_MAX_AREA (64ull << 20)

static const guint8 luks_magic[6] = { 'L', 'U', 'K', 'S', 0xba, 0xbe };

static void copy_field(char *out, const guint8 *in, gsize len)
{
    memcpy(out, in, len);
    out[len] = '\0';
}

/* Split "xts-plain64" / "cbc-essiv:sha256" / "ecb" into QEMU's terms and
 * name the cipher by its key size. */
static gboolean derive_names(VdLuksHeader *h, GError **error)
{
    if (!g_str_equal(h->cipher_name, "aes")) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "LUKS cipher '%s' is not supported (vdisk uses OpenSSL, which offers AES "
                    "only for disk encryption)",
                    h->cipher_name);
        return FALSE;
    }
    g_auto(GStrv) parts = g_strsplit(h->cipher_mode, "-", 2);
    const char *mode = parts[0] != NULL ? parts[0] : "";
    const char *iv = parts[0] != NULL && parts[1] != NULL ? parts[1] : "plain64";
    if (strlen(mode) >= sizeof h->mode) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED, "LUKS cipher mode '%s' is unknown",
                    h->cipher_mode);
        return FALSE;
    }
    g_strlcpy(h->mode, mode, sizeof h->mode);
    g_auto(GStrv) ivparts = g_strsplit(iv, ":", 2);
    g_strlcpy(h->ivgen_alg, ivparts[0] != NULL ? ivparts[0] : "", sizeof h->ivgen_alg);
    g_strlcpy(h->ivgen_hash, ivparts[0] != NULL && ivparts[1] != NULL ? ivparts[1] : "",
              sizeof h->ivgen_hash);
    guint32 bits = h->key_bytes * 8 / (g_str_equal(h->mode, "xts") ? 2 : 1);
    g_snprintf(h->cipher_alg, sizeof h->cipher_alg, "aes-%u", bits);
    gsize want = vd_cipher_key_bytes(h->cipher_alg, h->mode, error);
    if (want == 0)
        return FALSE;
    if (want != h->key_bytes) {
        g_set_error(error, VD_ERROR, VD_ERROR_CORRUPT, "LUKS key size %u does not fit cipher %s-%s",
                    h->key_bytes, h->cipher_name, h->cipher_mode);
        return FALSE;
    }
    if (g_str_equal(h->ivgen_alg, "essiv") && h->ivgen_hash[0] == '\0') {
        g_set_error(error, VD_ERROR, VD_ERROR_CORRUPT, "LUKS essiv mode names no hash");
        return FALSE;
    }
    return TRUE;
}

static guint64 material_bytes(const VdLuksHeader *h, const VdLuksSlot *s)
{
    return (guint64)s->stripes * h->key_bytes;
}

gboolean vd_luks_header_parse(const guint8 *buf, gsize len, guint64 area_limit, VdLuksHeader *h,
                              GError **error)
{
    memset(h, 0, sizeof *h);
    if (len < VD_LUKS_HEADER_BYTES || memcmp(buf + LH_MAGIC, luks_magic, 6) != 0) {
        g_set_error(error, VD_ERROR, VD_ERROR_CORRUPT, "LUKS header has no LUKS magic");
        return FALSE;
    }
    guint16 version = vd_be16(buf + LH_VERSION);
    if (version != 1) {
        g_set_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT,
                    "LUKS version %u is not supported (only LUKS1)", version);
        return FALSE;
    }
    copy_field(h->cipher_name, buf + LH_CIPHER_NAME, 32);
    copy_field(h->cipher_mode, buf + LH_CIPHER_MODE, 32);
    copy_field(h->hash_spec, buf + LH_HASH_SPEC, 32);
    h->payload_offset = vd_be32(buf + LH_PAYLOAD_OFFSET);
    h->key_bytes = vd_be32(buf + LH_KEY_BYTES);
    memcpy(h->mk_digest, buf + LH_MK_DIGEST, VD_LUKS_DIGEST_BYTES);
    memcpy(h->mk_digest_salt, buf + LH_MK_DIGEST_SALT, VD_LUKS_SALT_BYTES);
    h->mk_digest_iter = vd_be32(buf + LH_MK_DIGEST_ITER);
    copy_field(h->uuid, buf + LH_UUID, 40);
    if (h->key_bytes == 0 || h->key_bytes > 64) {
        g_set_error(error, VD_ERROR, VD_ERROR_CORRUPT, "LUKS key size %u is invalid", h->key_bytes);
        return FALSE;
    }
    if (h->mk_digest_iter == 0 || h->mk_digest_iter > G_MAXINT) {
        g_set_error(error, VD_ERROR, VD_ERROR_CORRUPT,
                    "LUKS master key digest iteration count %u is invalid", h->mk_digest_iter);
        return FALSE;
    }
    if (!derive_names(h, error))
        return FALSE;
    if (vd_hash_digest_bytes(h->hash_spec, error) == 0)
        return FALSE;
    guint64 payload = (guint64)h->payload_offset * LUKS_SECTOR;
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
        const guint8 *p = buf + LH_SLOTS + i * LH_SLOT_SIZE;
        VdLuksSlot *s = &h->slots[i];
        guint32 state = vd_be32(p + LS_ACTIVE);
        s->active = state == LUKS_SLOT_ACTIVE;
        s->iterations = vd_be32(p + LS_ITERATIONS);
        memcpy(s->salt, p + LS_SALT, VD_LUKS_SALT_BYTES);
        s->key_offset = vd_be32(p + LS_KEY_OFFSET);
        s->stripes = vd_be32(p + LS_STRIPES);
        if (state != LUKS_SLOT_ACTIVE && state != LUKS_SLOT_INACTIVE) {
            g_set_error(error, VD_ERROR, VD_ERROR_CORRUPT,
                        "LUKS key slot %d has an invalid state 0x%08x", i, state);
            return FALSE;
        }
        guint64 start = (guint64)s->key_offset * LUKS_SECTOR;
        guint64 end = start + material_bytes(h, s);
        if (s->stripes == 0 || s->stripes > LUKS_MAX_STRIPES || start < VD_LUKS_HEADER_BYTES ||
            (payload > 0 && end > payload) || (area_limit > 0 && end > area_limit)) {
            g_set_error(error, VD_ERROR, VD_ERROR_CORRUPT,
                        "LUKS key slot %d (offset %u sectors, %u stripes) is invalid or "
                        "truncated",
                        i, s->key_offset, s->stripes);
            return FALSE;
        }
        if (s->active && (s->iterations == 0 || s->iterations > G_MAXINT)) {
            g_set_error(error, VD_ERROR, VD_ERROR_CORRUPT,
                        "LUKS key slot %d iteration count %u is invalid", i, s->iterations);
            return FALSE;
        }
    }
    return TRUE;
}

static void put_field(guint8 *out, const char *s, gsize len)
{
    memset(out, 0, len);
    memcpy(out, s, MIN(strlen(s), len - 1));
}

void vd_luks_header_store(const VdLuksHeader *h, guint8 *buf)
{
    memset(buf, 0, VD_LUKS_HEADER_BYTES);
    memcpy(buf + LH_MAGIC, luks_magic, 6);
    vd_put_be16(buf + LH_VERSION, 1);
    put_field(buf + LH_CIPHER_NAME, h->cipher_name, 32);
    put_field(buf + LH_CIPHER_MODE, h->cipher_mode, 32);
    put_field(buf + LH_HASH_SPEC, h->hash_spec, 32);
    vd_put_be32(buf + LH_PAYLOAD_OFFSET, h->payload_offset);
    vd_put_be32(buf + LH_KEY_BYTES, h->key_bytes);
    memcpy(buf + LH_MK_DIGEST, h->mk_digest, VD_LUKS_DIGEST_BYTES);
    memcpy(buf + LH_MK_DIGEST_SALT, h->mk_digest_salt, VD_LUKS_SALT_BYTES);
    vd_put_be32(buf + LH_MK_DIGEST_ITER, h->mk_digest_iter);
    put_field(buf + LH_UUID, h->uuid, 40);
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
        guint8 *p = buf + LH_SLOTS + i * LH_SLOT_SIZE;
        const VdLuksSlot *s = &h->slots[i];
        vd_put_be32(p + LS_ACTIVE, s->active ? LUKS_SLOT_ACTIVE : LUKS_SLOT_INACTIVE);
        vd_put_be32(p + LS_ITERATIONS, s->active ? s->iterations : 0);
        if (s->active)
            memcpy(p + LS_SALT, s->salt, VD_LUKS_SALT_BYTES);
        vd_put_be32(p + LS_KEY_OFFSET, s->key_offset);
        vd_put_be32(p + LS_STRIPES, s->stripes);
    }
}

/* ----- the anti-forensic splitter (LUKS1 specification, "AF-Splitter") ----- */

/* Hash each digest-sized block i of buf as H(be32(i) || block), in place;
 * a last short block keeps its length. */
static gboolean diffuse(const char *hash, guint8 *buf, gsize len, gsize ds, GError **error)
{
    guint8 in[4 + 64], out[64];
    for (gsize i = 0, off = 0; off < len; i++, off += ds) {
        gsize n = MIN(ds, len - off);
        vd_put_be32(in, (guint32)i);
        memcpy(in + 4, buf + off, n);
        if (!vd_hash(hash, in, 4 + n, out, error))
            return FALSE;
        memcpy(buf + off, out, n);
    }
    explicit_bzero(in, sizeof in);
    explicit_bzero(out, sizeof out);
    return TRUE;
}

static void xor_into(guint8 *d, const guint8 *s, gsize len)
{
    for (gsize i = 0; i < len; i++)
        d[i] ^= s[i];
}

gboolean vd_luks_af_split(const char *hash, const guint8 *key, gsize len, guint32 stripes,
                          guint8 *out, GError **error)
{
    gsize ds = vd_hash_digest_bytes(hash, error);
    if (ds == 0 || ds > 64)
        return FALSE;
    guint8 *d = vd_secure_alloc(len);
    gboolean ok = TRUE;
    for (guint32 i = 0; ok && i + 1 < stripes; i++) {
        ok = vd_random_bytes(out + (gsize)i * len, len, error);
        if (ok) {
            xor_into(d, out + (gsize)i * len, len);
            ok = diffuse(hash, d, len, ds, error);
        }
    }
    if (ok) {
        guint8 *last = out + (gsize)(stripes - 1) * len;
        memcpy(last, d, len);
        xor_into(last, key, len);
    }
    vd_secure_free(d, len);
    return ok;
}

gboolean vd_luks_af_merge(const char *hash, const guint8 *in, gsize len, guint32 stripes,
                          guint8 *key, GError **error)
{
    gsize ds = vd_hash_digest_bytes(hash, error);
    if (ds == 0 || ds > 64)
        return FALSE;
    memset(key, 0, len);
    for (guint32 i = 0; i + 1 < stripes; i++) {
        xor_into(key, in + (gsize)i * len, len);
        if (!diffuse(hash, key, len, ds, error))
            return FALSE;
    }
    xor_into(key, in + (gsize)(stripes - 1) * len, len);
    return TRUE;
}

/* ----- key slots ----- */

static VdSectorCipher *header_cipher(const VdLuksHeader *h, const guint8 *key, GError **error)
{
    return vd_sector_cipher_new(h->cipher_alg, h->mode, h->ivgen_alg,
                                h->ivgen_hash[0] != '\0' ? h->ivgen_hash : NULL, key, h->key_bytes,
                                error);
}

VdSectorCipher *vd_luks_data_cipher(const VdLuksHeader *h, const guint8 *master_key, GError **error)
{
    return header_cipher(h, master_key, error);
}

/* The key material is sectors numbered from 0 at its start, encrypted
 * with the passphrase-derived key. */
static gsize material_buffer_bytes(gsize n) { return (n + 15) & ~(gsize)15; }

static gboolean digest_matches(const VdLuksHeader *h, const guint8 *mk, gboolean *match,
                               GError **error)
{
    guint8 digest[VD_LUKS_DIGEST_BYTES];
    if (!vd_pbkdf2(h->hash_spec, mk, h->key_bytes, h->mk_digest_salt, VD_LUKS_SALT_BYTES,
                   h->mk_digest_iter, digest, sizeof digest, error))
        return FALSE;
    *match = CRYPTO_memcmp(digest, h->mk_digest, sizeof digest) == 0;
    return TRUE;
}

static gboolean try_slot(const VdLuksHeader *h, const VdLuksSlot *s, const guint8 *pass,
                         gsize pass_len, VdLuksIO io, gpointer data, guint8 *mk, gboolean *match,
                         GError **error)
{
    gsize n = (gsize)material_bytes(h, s), nbuf = material_buffer_bytes(n);
    guint8 *slot_key = vd_secure_alloc(h->key_bytes);
    guint8 *material = vd_secure_alloc(nbuf);
    gboolean ok = vd_pbkdf2(h->hash_spec, pass, pass_len, s->salt, VD_LUKS_SALT_BYTES,
                            s->iterations, slot_key, h->key_bytes, error) &&
                  io(data, (guint64)s->key_offset * LUKS_SECTOR, material, n, FALSE, error);
    if (ok) {
        g_autoptr(VdSectorCipher) c = header_cipher(h, slot_key, error);
        ok = c != NULL && vd_sector_cipher_decrypt(c, 0, material, nbuf, error) &&
             vd_luks_af_merge(h->hash_spec, material, h->key_bytes, s->stripes, mk, error) &&
             digest_matches(h, mk, match, error);
    }
    vd_secure_free(slot_key, h->key_bytes);
    vd_secure_free(material, nbuf);
    return ok;
}

gboolean vd_luks_unlock(const VdLuksHeader *h, const guint8 *pass, gsize pass_len, VdLuksIO io,
                        gpointer data, guint8 **master_key, int *slot_out, GError **error)
{
    guint8 *mk = vd_secure_alloc(h->key_bytes);
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
        gboolean match = FALSE;
        if (!h->slots[i].active)
            continue;
        if (!try_slot(h, &h->slots[i], pass, pass_len, io, data, mk, &match, error)) {
            vd_secure_free(mk, h->key_bytes);
            return FALSE;
        }
        if (match) {
            *master_key = mk;
            if (slot_out != NULL)
                *slot_out = i;
            return TRUE;
        }
    }
    vd_secure_free(mk, h->key_bytes);
    g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "no key slot matches the passphrase");
    return FALSE;
}

static gboolean write_slot_material(VdLuksHeader *h, int slot, const guint8 *mk, const guint8 *pass,
                                    gsize pass_len, VdLuksIO io, gpointer data, GError **error)
{
    VdLuksSlot *s = &h->slots[slot];
    gsize n = (gsize)material_bytes(h, s), nbuf = material_buffer_bytes(n);
    guint8 *slot_key = vd_secure_alloc(h->key_bytes);
    guint8 *material = vd_secure_alloc(nbuf);
    gboolean ok = vd_random_bytes(s->salt, VD_LUKS_SALT_BYTES, error) &&
                  vd_pbkdf2(h->hash_spec, pass, pass_len, s->salt, VD_LUKS_SALT_BYTES,
                            s->iterations, slot_key, h->key_bytes, error) &&
                  vd_luks_af_split(h->hash_spec, mk, h->key_bytes, s->stripes, material, error);
    if (ok) {
        g_autoptr(VdSectorCipher) c = header_cipher(h, slot_key, error);
        ok = c != NULL && vd_sector_cipher_encrypt(c, 0, material, nbuf, error) &&
             io(data, (guint64)s->key_offset * LUKS_SECTOR, material, n, TRUE, error);
    }
    vd_secure_free(slot_key, h->key_bytes);
    vd_secure_free(material, nbuf);
    return ok;
}

static gboolean write_header(const VdLuksHeader *h, VdLuksIO io, gpointer data, GError **error)
{
    guint8 buf[VD_LUKS_HEADER_BYTES];
    vd_luks_header_store(h, buf);
    return io(data, 0, buf, sizeof buf, TRUE, error);
}

gboolean vd_luks_add_slot(VdLuksHeader *h, int slot, const guint8 *master_key, const guint8 *pass,
                          gsize pass_len, guint64 iter_time_ms, VdLuksIO io, gpointer data,
                          GError **error)
{
    if (slot < 0 || slot >= VD_LUKS_NUM_SLOTS) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "key slot %d is out of range (0 to 7)", slot);
        return FALSE;
    }
    if (h->slots[slot].active) {
        g_set_error(error, VD_ERROR, VD_ERROR_EXISTS, "key slot %d is already in use", slot);
        return FALSE;
    }
    guint64 iters;
    if (!vd_pbkdf2_calibrate(h->hash_spec, iter_time_ms ? iter_time_ms : 2000, &iters, error))
        return FALSE;
    h->slots[slot].iterations = (guint32)iters;
    if (!write_slot_material(h, slot, master_key, pass, pass_len, io, data, error))
        return FALSE;
    h->slots[slot].active = TRUE;
    return write_header(h, io, data, error);
}

gboolean vd_luks_remove_slot(VdLuksHeader *h, int slot, VdLuksIO io, gpointer data, GError **error)
{
    if (slot < 0 || slot >= VD_LUKS_NUM_SLOTS) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "key slot %d is out of range (0 to 7)", slot);
        return FALSE;
    }
    VdLuksSlot *s = &h->slots[slot];
    gsize n = (gsize)material_bytes(h, s);
    /* Random bytes, not zeroes, over the old material, as cryptsetup does. */
    g_autofree guint8 *junk = g_malloc(n);
    if (!vd_random_bytes(junk, n, error))
        return FALSE;
    s->active = FALSE;
    s->iterations = 0;
    memset(s->salt, 0, sizeof s->salt);
    return io(data, (guint64)s->key_offset * LUKS_SECTOR, junk, n, TRUE, error) &&
           write_header(h, io, data, error);
}

int vd_luks_free_slot(const VdLuksHeader *h)
{
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++)
        if (!h->slots[i].active)
            return i;
    return -1;
}

int vd_luks_active_slots(const VdLuksHeader *h)
{
    int n = 0;
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++)
        n += h->slots[i].active;
    return n;
}

/* ----- creating ----- */

static void fill_defaults(const VdLuksCreateParams *in, VdLuksCreateParams *p)
{
    *p = *in;
    if (p->cipher_alg == NULL)
        p->cipher_alg = "aes-256";
    if (p->cipher_mode == NULL)
        p->cipher_mode = "xts";
    if (p->ivgen_alg == NULL)
        p->ivgen_alg = "plain64";
    if (p->hash_alg == NULL)
        p->hash_alg = "sha256";
    if (p->ivgen_hash_alg == NULL && g_str_equal(p->ivgen_alg, "essiv"))
        p->ivgen_hash_alg = "sha256";
    if (p->iter_time_ms == 0)
        p->iter_time_ms = 2000;
}

static guint32 slot_sectors(guint32 key_bytes)
{
    guint64 n = (guint64)key_bytes * VD_LUKS_STRIPES;
    return (guint32)(((n + LUKS_ALIGN - 1) / LUKS_ALIGN * LUKS_ALIGN) / LUKS_SECTOR);
}

gboolean vd_luks_area_bytes(const VdLuksCreateParams *in, guint64 *bytes, GError **error)
{
    VdLuksCreateParams p;
    fill_defaults(in, &p);
    gsize kb = vd_cipher_key_bytes(p.cipher_alg, p.cipher_mode, error);
    if (kb == 0)
        return FALSE;
    *bytes = (guint64)(LUKS_ALIGN / LUKS_SECTOR + VD_LUKS_NUM_SLOTS * slot_sectors((guint32)kb)) *
             LUKS_SECTOR;
    return TRUE;
}

gboolean vd_luks_create(const VdLuksCreateParams *in, const guint8 *pass, gsize pass_len,
                        VdLuksIO io, gpointer data, VdLuksHeader *h, guint8 **master_key,
                        GError **error)
{
    VdLuksCreateParams p;
    fill_defaults(in, &p);
    memset(h, 0, sizeof *h);
    gsize kb = vd_cipher_key_bytes(p.cipher_alg, p.cipher_mode, error);
    if (kb == 0 || vd_hash_digest_bytes(p.hash_alg, error) == 0)
        return FALSE;
    if ((kb * VD_LUKS_STRIPES) % LUKS_SECTOR != 0) {
        /* Key material ending in a part sector: cryptsetup copes, QEMU
         * aborts on it, so such volumes are read but not made. */
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "cipher %s-%s is not supported for new volumes: QEMU cannot open them",
                    p.cipher_alg, p.cipher_mode);
        return FALSE;
    }
    if (!g_str_equal(p.ivgen_alg, "plain") && !g_str_equal(p.ivgen_alg, "plain64") &&
        !g_str_equal(p.ivgen_alg, "essiv")) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "unknown IV generator '%s' (known: plain, plain64, essiv)", p.ivgen_alg);
        return FALSE;
    }
    g_strlcpy(h->cipher_name, "aes", sizeof h->cipher_name);
    if (g_str_equal(p.ivgen_alg, "essiv"))
        g_snprintf(h->cipher_mode, sizeof h->cipher_mode, "%s-essiv:%s", p.cipher_mode,
                   p.ivgen_hash_alg);
    else
        g_snprintf(h->cipher_mode, sizeof h->cipher_mode, "%s-%s", p.cipher_mode, p.ivgen_alg);
    g_strlcpy(h->hash_spec, p.hash_alg, sizeof h->hash_spec);
    h->key_bytes = (guint32)kb;
    guint32 per_slot = slot_sectors(h->key_bytes);
    h->payload_offset = LUKS_ALIGN / LUKS_SECTOR + VD_LUKS_NUM_SLOTS * per_slot;
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
        h->slots[i].key_offset = LUKS_ALIGN / LUKS_SECTOR + (guint32)i * per_slot;
        h->slots[i].stripes = VD_LUKS_STRIPES;
    }
    char *uuid = g_uuid_string_random();
    g_strlcpy(h->uuid, uuid, sizeof h->uuid);
    g_free(uuid);
    if (!derive_names(h, error))
        return FALSE;

    guint8 *mk = vd_secure_alloc(kb);
    guint64 iters = 0;
    gboolean ok = vd_random_bytes(mk, kb, error) &&
                  vd_random_bytes(h->mk_digest_salt, VD_LUKS_SALT_BYTES, error) &&
                  vd_pbkdf2_calibrate(h->hash_spec, p.iter_time_ms, &iters, error);
    if (ok) {
        /* The digest only confirms a key a slot gave; an eighth of the
         * slot's work, as cryptsetup budgets it. */
        h->mk_digest_iter = (guint32)MAX(iters / 8, 1000);
        h->slots[0].iterations = (guint32)iters;
        ok = vd_pbkdf2(h->hash_spec, mk, kb, h->mk_digest_salt, VD_LUKS_SALT_BYTES,
                       h->mk_digest_iter, h->mk_digest, VD_LUKS_DIGEST_BYTES, error) &&
             write_slot_material(h, 0, mk, pass, pass_len, io, data, error);
    }
    if (ok) {
        h->slots[0].active = TRUE;
        ok = write_header(h, io, data, error);
    }
    if (!ok) {
        vd_secure_free(mk, kb);
        return FALSE;
    }
    *master_key = mk;
    return TRUE;
}

gboolean vd_luks_create_params_from_options(VdOptions *opts, const char *prefix,
                                            VdLuksCreateParams *p, GError **error)
{
    memset(p, 0, sizeof *p);
    g_autofree char *k_alg = g_strconcat(prefix, "cipher-alg", NULL);
    g_autofree char *k_mode = g_strconcat(prefix, "cipher-mode", NULL);
    g_autofree char *k_iv = g_strconcat(prefix, "ivgen-alg", NULL);
    g_autofree char *k_ivh = g_strconcat(prefix, "ivgen-hash-alg", NULL);
    g_autofree char *k_hash = g_strconcat(prefix, "hash-alg", NULL);
    g_autofree char *k_iter = g_strconcat(prefix, "iter-time", NULL);
    p->cipher_alg = vd_options_get(opts, k_alg);
    p->cipher_mode = vd_options_get(opts, k_mode);
    p->ivgen_alg = vd_options_get(opts, k_iv);
    p->ivgen_hash_alg = vd_options_get(opts, k_ivh);
    p->hash_alg = vd_options_get(opts, k_hash);
    const char *iter = vd_options_get(opts, k_iter);
    if (iter != NULL) {
        guint64 v = 0;
        if (!g_ascii_string_to_unsigned(iter, 10, 1, 3600000, &v, NULL)) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "%s must be a number of milliseconds, not '%s'", k_iter, iter);
            return FALSE;
        }
        p->iter_time_ms = v;
    }
    return TRUE;
}

/* ----- info ----- */

GVariant *vd_luks_info(const VdLuksHeader *h, gboolean with_format)
{
    GVariantBuilder b, slots;
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "ivgen-alg", g_variant_new_string(h->ivgen_alg));
    if (h->ivgen_hash[0] != '\0')
        g_variant_builder_add(&b, "{sv}", "ivgen-hash-alg", g_variant_new_string(h->ivgen_hash));
    g_variant_builder_add(&b, "{sv}", "hash-alg", g_variant_new_string(h->hash_spec));
    g_variant_builder_add(&b, "{sv}", "cipher-alg", g_variant_new_string(h->cipher_alg));
    g_variant_builder_add(&b, "{sv}", "uuid", g_variant_new_string(h->uuid));
    if (with_format)
        g_variant_builder_add(&b, "{sv}", "format", g_variant_new_string("luks"));
    g_variant_builder_add(&b, "{sv}", "cipher-mode", g_variant_new_string(h->mode));
    g_variant_builder_init(&slots, G_VARIANT_TYPE("aa{sv}"));
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
        const VdLuksSlot *s = &h->slots[i];
        GVariantBuilder sb;
        g_variant_builder_init(&sb, G_VARIANT_TYPE_VARDICT);
        g_variant_builder_add(&sb, "{sv}", "active", g_variant_new_boolean(s->active));
        if (s->active)
            g_variant_builder_add(&sb, "{sv}", "iters", g_variant_new_uint64(s->iterations));
        g_variant_builder_add(&sb, "{sv}", "key-offset",
                              g_variant_new_uint64((guint64)s->key_offset * LUKS_SECTOR));
        if (s->active)
            g_variant_builder_add(&sb, "{sv}", "stripes", g_variant_new_uint64(s->stripes));
        g_variant_builder_add_value(&slots, g_variant_builder_end(&sb));
    }
    g_variant_builder_add(&b, "{sv}", "slots", g_variant_builder_end(&slots));
    g_variant_builder_add(&b, "{sv}", "payload-offset",
                          g_variant_new_uint64((guint64)h->payload_offset * LUKS_SECTOR));
    g_variant_builder_add(&b, "{sv}", "master-key-iters", g_variant_new_uint64(h->mk_digest_iter));
    return g_variant_builder_end(&b);
}

/* ----- amend (add and remove key slots) ----- */

static const guint8 *named_secret(VdSecrets *secrets, const char *key, const char *id, gsize *len,
                                  GError **error)
{
    const guint8 *p = vd_secrets_lookup(secrets, id, len);
    if (p == NULL)
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_FOUND,
                    "%s names the secret '%s', which was not given (--object secret,id=%s,"
                    "file=PATH)",
                    key, id, id);
    return p;
}

/* Does passphrase open slot i (with this master key)? */
static gboolean slot_takes(const VdLuksHeader *h, int i, const guint8 *pass, gsize pass_len,
                           VdLuksIO io, gpointer data, gboolean *match, GError **error)
{
    guint8 *mk = vd_secure_alloc(h->key_bytes);
    gboolean ok = try_slot(h, &h->slots[i], pass, pass_len, io, data, mk, match, error);
    vd_secure_free(mk, h->key_bytes);
    return ok;
}

gboolean vd_luks_amend(VdLuksHeader *h, const guint8 *master_key, VdOptions *opts,
                       const char *prefix, VdSecrets *secrets, gboolean force, VdLuksIO io,
                       gpointer data, GError **error)
{
    g_autofree char *k_state = g_strconcat(prefix, "state", NULL);
    g_autofree char *k_slot = g_strconcat(prefix, "keyslot", NULL);
    g_autofree char *k_new = g_strconcat(prefix, "new-secret", NULL);
    g_autofree char *k_old = g_strconcat(prefix, "old-secret", NULL);
    g_autofree char *k_iter = g_strconcat(prefix, "iter-time", NULL);
    const char *state = vd_options_get(opts, k_state);
    const char *slot_text = vd_options_get(opts, k_slot);
    const char *new_id = vd_options_get(opts, k_new);
    const char *old_id = vd_options_get(opts, k_old);
    int slot = -1;
    if (slot_text != NULL) {
        guint64 v;
        if (!g_ascii_string_to_unsigned(slot_text, 10, 0, VD_LUKS_NUM_SLOTS - 1, &v, NULL)) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "Invalid keyslot %s specified, must be between 0 and 7", slot_text);
            return FALSE;
        }
        slot = (int)v;
    }
    if (state == NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "Parameter 'state' is missing (%s=active adds a passphrase, %s=inactive "
                    "removes one)",
                    k_state, k_state);
        return FALSE;
    }
    if (!g_str_equal(state, "active") && !g_str_equal(state, "inactive")) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "%s must be 'active' (add a passphrase) or 'inactive' (remove one)", k_state);
        return FALSE;
    }
    if (g_str_equal(state, "active")) {
        VdLuksCreateParams cp;
        gsize len;
        if (new_id == NULL) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "'new-secret' is required to activate a keyslot (%s=ID)", k_new);
            return FALSE;
        }
        if (!vd_luks_create_params_from_options(opts, prefix, &cp, error))
            return FALSE;
        const guint8 *pass = named_secret(secrets, k_new, new_id, &len, error);
        if (pass == NULL)
            return FALSE;
        if (slot < 0)
            slot = vd_luks_free_slot(h);
        if (slot < 0) {
            g_set_error(error, VD_ERROR, VD_ERROR_NO_SPACE,
                        "Can't add a keyslot - all keyslots are in use: remove one first "
                        "(%sstate=inactive)",
                        prefix);
            return FALSE;
        }
        if (h->slots[slot].active && !force) {
            g_set_error(error, VD_ERROR, VD_ERROR_EXISTS,
                        "Refusing to overwrite active keyslot %d - please erase it first (or "
                        "give --force)",
                        slot);
            return FALSE;
        }
        /* --force: the slot's new material goes over its old. */
        gboolean was_active = h->slots[slot].active;
        h->slots[slot].active = FALSE;
        if (!vd_luks_add_slot(h, slot, master_key, pass, len, cp.iter_time_ms, io, data, error)) {
            h->slots[slot].active = was_active;
            return FALSE;
        }
        return TRUE;
    }
    /* inactive: the given slot, or every slot the old secret opens. */
    gboolean remove[VD_LUKS_NUM_SLOTS] = { FALSE };
    int n_remove = 0;
    if (slot >= 0) {
        if (!h->slots[slot].active && !force) {
            g_set_error(error, VD_ERROR, VD_ERROR_NOT_FOUND,
                        "Given keyslot %d is already erased (inactive)", slot);
            return FALSE;
        }
        if (old_id != NULL) {
            gsize len;
            gboolean match = FALSE;
            const guint8 *pass = named_secret(secrets, k_old, old_id, &len, error);
            if (pass == NULL ||
                (h->slots[slot].active && !slot_takes(h, slot, pass, len, io, data, &match, error)))
                return FALSE;
            if (!match) {
                g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                            "Given keyslot %d doesn't contain the given old password for erase "
                            "operation",
                            slot);
                return FALSE;
            }
        }
        if (h->slots[slot].active && vd_luks_active_slots(h) == 1 && !force) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "Attempt to erase the only active keyslot %d which will erase all the "
                        "data in the image irreversibly - refusing operation (--force does it)",
                        slot);
            return FALSE;
        }
        remove[slot] = TRUE;
        n_remove = 1;
    } else if (old_id != NULL) {
        gsize len;
        const guint8 *pass = named_secret(secrets, k_old, old_id, &len, error);
        if (pass == NULL)
            return FALSE;
        for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
            gboolean match = FALSE;
            if (h->slots[i].active && !slot_takes(h, i, pass, len, io, data, &match, error))
                return FALSE;
            if (match) {
                remove[i] = TRUE;
                n_remove++;
            }
        }
        if (n_remove == 0) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "No keyslots match given (old) password for erase operation (%s)", k_old);
            return FALSE;
        }
        if (n_remove == vd_luks_active_slots(h) && !force) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "All the active keyslots match the (old) password that was given and "
                        "erasing them will erase all the data in the image irreversibly - "
                        "refusing operation (--force does it)");
            return FALSE;
        }
    } else {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "To erase keyslot(s), either explicit keyslot index or the password currently "
                    "contained in them must be given (%s=N or %s=ID)",
                    k_slot, k_old);
        return FALSE;
    }
    for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++)
        if (remove[i] && !vd_luks_remove_slot(h, i, io, data, error))
            return FALSE;
    return TRUE;
}
