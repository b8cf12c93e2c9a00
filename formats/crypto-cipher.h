/* Sector ciphers for encrypted images: AES in XTS, CBC, ECB or CTR mode
 * with the IV generators of dm-crypt and QEMU (plain, plain64, essiv),
 * over runs of 512-byte sectors. Every primitive is OpenSSL 3's EVP.
 *
 * Names are QEMU's: cipher "aes-128"/"aes-192"/"aes-256", mode "xts",
 * "cbc", "ecb", "ctr", ivgen "plain", "plain64", "essiv", hashes "sha1",
 * "sha224", "sha256", "sha384", "sha512", "ripemd160", "md5". Ciphers QEMU
 * knows but OpenSSL 3 has not (twofish, serpent, cast5 in XTS...) are
 * refused with VD_ERROR_NOT_SUPPORTED.
 */
#pragma once

#include "vdisk.h"

G_BEGIN_DECLS

#define VD_CRYPTO_SECTOR_SIZE 512u

typedef struct VdSectorCipher VdSectorCipher;

/* Bytes of key the cipher and mode take (XTS takes two AES keys). 0 with
 * an error for an unknown or unsupported combination. */
gsize vd_cipher_key_bytes(const char *cipher_alg, const char *mode, GError **error);

/* Key bytes of a hash's digest, 0 with an error when OpenSSL lacks it. */
gsize vd_hash_digest_bytes(const char *hash, GError **error);

/* A cipher over sectors. key has vd_cipher_key_bytes() bytes; it is
 * copied. ivgen_hash is used by essiv only (may be NULL otherwise). */
VdSectorCipher *vd_sector_cipher_new(const char *cipher_alg, const char *mode, const char *ivgen,
                                     const char *ivgen_hash, const guint8 *key, gsize key_len,
                                     GError **error);
void vd_sector_cipher_free(VdSectorCipher *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VdSectorCipher, vd_sector_cipher_free)

/* Encrypt or decrypt len bytes (whole 512-byte sectors; only LUKS key
 * material ends in a part sector of whole 16-byte blocks) in place; the first
 * sector's IV is built from sector number first_sector, the next from
 * first_sector + 1 and so on. Thread safe. */
gboolean vd_sector_cipher_encrypt(VdSectorCipher *c, guint64 first_sector, guint8 *buf, gsize len,
                                  GError **error);
gboolean vd_sector_cipher_decrypt(VdSectorCipher *c, guint64 first_sector, guint8 *buf, gsize len,
                                  GError **error);

/* PBKDF2-HMAC with hash (OpenSSL's PKCS5_PBKDF2_HMAC). */
gboolean vd_pbkdf2(const char *hash, const guint8 *pass, gsize pass_len, const guint8 *salt,
                   gsize salt_len, guint64 iterations, guint8 *out, gsize out_len, GError **error);

/* PBKDF2 iterations of hash that take about ms milliseconds of CPU on this
 * machine (at least 1000), for key slots as cryptsetup and QEMU size them. */
gboolean vd_pbkdf2_calibrate(const char *hash, guint64 ms, guint64 *iterations, GError **error);

/* Digest of data with hash into out (vd_hash_digest_bytes long). */
gboolean vd_hash(const char *hash, const guint8 *data, gsize len, guint8 *out, GError **error);

/* Cryptographically random bytes. */
gboolean vd_random_bytes(guint8 *out, gsize len, GError **error);

/* Memory for keys and passphrases, zero-filled: in pages of its own, left
 * out of core dumps and forked children, kept out of swap where the limit
 * allows, and wiped on free (len: what was asked for; NULL is ignored). */
guint8 *vd_secure_alloc(gsize len);
void vd_secure_free(guint8 *p, gsize len);

/* The legacy AES of qcow and qcow2 (crypt_method 1): AES-128-CBC keyed
 * with the passphrase's first 16 bytes (zero-padded, up to a NUL byte as
 * qemu reads it), plain64 IVs from the guest sector. Weak (no key
 * derivation, the same IVs for every image of one passphrase); read and
 * written only for what qemu-img still makes and old images hold. */
VdSectorCipher *vd_legacy_aes_cipher(const guint8 *pass, gsize len, GError **error);

/* Set up *cipher for an image with legacy AES at open. Without a key,
 * *cipher stays NULL and img->needs_key is set, so the image can still be
 * described. */
typedef struct VdImage VdImage;
gboolean vd_legacy_aes_open(VdImage *img, VdSectorCipher **cipher, GError **error);

/* The encryption a new qcow or qcow2 image is asked for: *format is
 * encrypt.format's value, "aes" for its old alias encryption=on, NULL for
 * none (encryption=off is no request). Both at once is an error, as in
 * qemu-img. */
gboolean vd_create_encrypt_format(VdOptions *opts, const char **format, GError **error);

G_END_DECLS
