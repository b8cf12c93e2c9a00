/* LUKS1: the header and its eight key slots, as the LUKS1 on-disk format
 * specification defines them, and as QEMU lays them out (qcow2's
 * full-disk-encryption header and the raw "luks" format).
 *
 * Key slots hold the master key split by the anti-forensic splitter and
 * encrypted with a key derived from a passphrase by PBKDF2. The header's
 * master key digest tells which slot a passphrase opened. All cryptography
 * is OpenSSL's (crypto-cipher.h).
 */
#pragma once

#include "crypto-cipher.h"
#include "vdisk-driver.h"

G_BEGIN_DECLS

#define VD_LUKS_HEADER_BYTES 592u
#define VD_LUKS_NUM_SLOTS 8
#define VD_LUKS_STRIPES 4000u
#define VD_LUKS_DIGEST_BYTES 20u
#define VD_LUKS_SALT_BYTES 32u

typedef struct {
    gboolean active;
    guint32 iterations;
    guint8 salt[VD_LUKS_SALT_BYTES];
    guint32 key_offset; /* sectors from the start of the header */
    guint32 stripes;
} VdLuksSlot;

typedef struct {
    char cipher_name[33];   /* "aes" */
    char cipher_mode[33];   /* "xts-plain64", "cbc-essiv:sha256" */
    char hash_spec[33];     /* "sha256" */
    guint32 payload_offset; /* sectors */
    guint32 key_bytes;
    guint8 mk_digest[VD_LUKS_DIGEST_BYTES];
    guint8 mk_digest_salt[VD_LUKS_SALT_BYTES];
    guint32 mk_digest_iter;
    char uuid[41];
    VdLuksSlot slots[VD_LUKS_NUM_SLOTS];
    /* Derived from the above, in QEMU's terms. */
    char cipher_alg[16]; /* "aes-256" */
    char mode[8];        /* "xts" */
    char ivgen_alg[16];  /* "plain64" */
    char ivgen_hash[16]; /* for essiv, else "" */
} VdLuksHeader;

/* What a new volume uses; NULL fields take QEMU's defaults
 * (aes-256, xts, plain64, sha256, 2000 ms). */
typedef struct {
    const char *cipher_alg;
    const char *cipher_mode;
    const char *ivgen_alg;
    const char *ivgen_hash_alg;
    const char *hash_alg;
    guint64 iter_time_ms;
} VdLuksCreateParams;

/* Read the create options with this prefix ("encrypt." for qcow2, "" for
 * raw luks): cipher-alg, cipher-mode, ivgen-alg, ivgen-hash-alg, hash-alg,
 * iter-time. Strings stay owned by opts. */
gboolean vd_luks_create_params_from_options(VdOptions *opts, const char *prefix,
                                            VdLuksCreateParams *p, GError **error);

/* Reads (write FALSE) or writes len bytes at offset from the start of the
 * LUKS header, wherever the format keeps it. */
typedef gboolean (*VdLuksIO)(gpointer data, guint64 offset, guint8 *buf, gsize len, gboolean write,
                             GError **error);

/* Parse and check the 592-byte header in buf. area_limit, when not 0, is
 * how many bytes the container holds for header and key material. */
gboolean vd_luks_header_parse(const guint8 *buf, gsize len, guint64 area_limit, VdLuksHeader *h,
                              GError **error);
/* The on-disk bytes of h (VD_LUKS_HEADER_BYTES). */
void vd_luks_header_store(const VdLuksHeader *h, guint8 *buf);

/* Bytes of header plus key material (the payload offset) for a volume with
 * these parameters, before creating it. */
gboolean vd_luks_area_bytes(const VdLuksCreateParams *p, guint64 *bytes, GError **error);

/* Find the slot the passphrase opens and return the master key
 * (h->key_bytes long, free with vd_secure_free). A passphrase no slot takes
 * is VD_ERROR_INVALID_ARGUMENT "no key slot matches the passphrase";
 * *slot_out (may be NULL) says which slot matched. */
gboolean vd_luks_unlock(const VdLuksHeader *h, const guint8 *pass, gsize pass_len, VdLuksIO io,
                        gpointer data, guint8 **master_key, int *slot_out, GError **error);

/* Make a new volume: header and key slot 0 for the passphrase, written
 * through io (which must hold vd_luks_area_bytes bytes). Returns the
 * header and the new master key. */
gboolean vd_luks_create(const VdLuksCreateParams *p, const guint8 *pass, gsize pass_len,
                        VdLuksIO io, gpointer data, VdLuksHeader *h, guint8 **master_key,
                        GError **error);

/* Store master_key in slot (0..7, which must be inactive) under a new
 * passphrase, with iterations calibrated to iter_time_ms (0: 2000 ms), and
 * write slot and header. */
gboolean vd_luks_add_slot(VdLuksHeader *h, int slot, const guint8 *master_key, const guint8 *pass,
                          gsize pass_len, guint64 iter_time_ms, VdLuksIO io, gpointer data,
                          GError **error);
/* Wipe the key material of slot and mark it inactive. */
gboolean vd_luks_remove_slot(VdLuksHeader *h, int slot, VdLuksIO io, gpointer data, GError **error);
/* The first inactive slot, or -1. */
int vd_luks_free_slot(const VdLuksHeader *h);
int vd_luks_active_slots(const VdLuksHeader *h);

/* The cipher for the payload. */
VdSectorCipher *vd_luks_data_cipher(const VdLuksHeader *h, const guint8 *master_key,
                                    GError **error);

/* For drivers: unlock an image being opened with the passphrase its open
 * option key_option names (sets img->encrypted; without a passphrase sets
 * img->needs_key and returns TRUE with *cipher NULL). */
gboolean vd_luks_open_cipher(VdImage *img, const VdLuksHeader *hdr, const char *key_option,
                             VdLuksIO io, gpointer io_data, VdSectorCipher **cipher,
                             guint8 **master_key, GError **error);

/* qemu-img amend's LUKS options (with prefix "encrypt." for qcow2): add a
 * key slot (state=active, new-secret, optional keyslot, iter-time) or
 * remove slots (state=inactive, keyslot or old-secret). master_key is the
 * open volume's. Unless force (qemu-img amend --force), an active slot is
 * never overwritten and the last active slot never removed. The refusals
 * carry qemu's words. */
gboolean vd_luks_amend(VdLuksHeader *h, const guint8 *master_key, VdOptions *opts,
                       const char *prefix, VdSecrets *secrets, gboolean force, VdLuksIO io,
                       gpointer data, GError **error);

/* qemu-img info's description of a LUKS volume (a{sv}): with_format for
 * a qcow2's "encrypt" block, which names its format ("format": "luks")
 * among the header's fields; a raw LUKS image's own section has no such
 * key. */
GVariant *vd_luks_info(const VdLuksHeader *h, gboolean with_format);

/* The anti-forensic splitter (exposed for tests): split key (len bytes)
 * into stripes*len bytes of out with hash, and merge back. */
gboolean vd_luks_af_split(const char *hash, const guint8 *key, gsize len, guint32 stripes,
                          guint8 *out, GError **error);
gboolean vd_luks_af_merge(const char *hash, const guint8 *in, gsize len, guint32 stripes,
                          guint8 *key, GError **error);

G_END_DECLS
