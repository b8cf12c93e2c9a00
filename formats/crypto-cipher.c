/* Sector ciphers, PBKDF2 and hashes for encrypted images, all through
 * OpenSSL 3's EVP interface (see crypto-cipher.h). */
#include "crypto-cipher.h"
#include "vdisk-driver.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

typedef enum { IVGEN_NONE, IVGEN_PLAIN, IVGEN_PLAIN64, IVGEN_ESSIV } IvGen;

struct VdSectorCipher {
    GMutex lock; /* the contexts keep per-call state */
    EVP_CIPHER *cipher;
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
    EVP_CIPHER_CTX *essiv; /* AES-ECB with the hashed key */
    IvGen ivgen;
    int iv_len;
};

static void set_openssl_error(GError **error, const char *what)
{
    char buf[256] = "";
    unsigned long e = ERR_get_error();
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    g_set_error(error, VD_ERROR, VD_ERROR_FAILED, "%s failed%s%s", what, *buf ? ": " : "", buf);
}

static int aes_bits(const char *alg)
{
    if (g_strcmp0(alg, "aes-128") == 0 || g_strcmp0(alg, "aes") == 0)
        return 128;
    if (g_strcmp0(alg, "aes-192") == 0)
        return 192;
    if (g_strcmp0(alg, "aes-256") == 0)
        return 256;
    return 0;
}

static gboolean known_mode(const char *mode)
{
    return g_strcmp0(mode, "xts") == 0 || g_strcmp0(mode, "cbc") == 0 ||
           g_strcmp0(mode, "ecb") == 0 || g_strcmp0(mode, "ctr") == 0;
}

/* The OpenSSL name of a QEMU cipher and mode, or NULL with an error. */
static char *openssl_cipher_name(const char *alg, const char *mode, GError **error)
{
    static const char *const qemu_only[] = { "twofish", "serpent", "cast5", "des", "3des", NULL };
    int bits = aes_bits(alg);
    if (bits == 0) {
        for (int i = 0; qemu_only[i] != NULL; i++) {
            if (alg != NULL && g_str_has_prefix(alg, qemu_only[i])) {
                g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                            "cipher '%s' is not supported (vdisk uses OpenSSL, which offers AES "
                            "only for disk encryption)",
                            alg);
                return NULL;
            }
        }
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "unknown cipher '%s' (known: aes-128, aes-192, aes-256)",
                    alg != NULL ? alg : "");
        return NULL;
    }
    if (!known_mode(mode)) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "unknown cipher mode '%s' (known: xts, cbc, ecb, ctr)", mode ? mode : "");
        return NULL;
    }
    if (g_str_equal(mode, "xts") && bits == 192) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "cipher aes-192 in xts mode is not supported by OpenSSL");
        return NULL;
    }
    return g_strdup_printf("AES-%d-%s", bits, mode);
}

gsize vd_cipher_key_bytes(const char *cipher_alg, const char *mode, GError **error)
{
    g_autofree char *name = openssl_cipher_name(cipher_alg, mode, error);
    if (name == NULL)
        return 0;
    gsize n = (gsize)aes_bits(cipher_alg) / 8;
    return g_str_equal(mode, "xts") ? 2 * n : n;
}

static EVP_MD *fetch_md(const char *hash, GError **error)
{
    static const char *const known[] = { "md5",    "sha1",   "sha224",    "sha256",
                                         "sha384", "sha512", "ripemd160", NULL };
    gboolean ok = FALSE;
    for (int i = 0; known[i] != NULL; i++)
        ok = ok || g_strcmp0(hash, known[i]) == 0;
    EVP_MD *md = ok ? EVP_MD_fetch(NULL, hash, NULL) : NULL;
    if (md == NULL) {
        ERR_clear_error();
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "hash '%s' is not supported (known: sha1, sha224, sha256, sha384, sha512, "
                    "ripemd160, md5)",
                    hash != NULL ? hash : "");
    }
    return md;
}

gsize vd_hash_digest_bytes(const char *hash, GError **error)
{
    EVP_MD *md = fetch_md(hash, error);
    if (md == NULL)
        return 0;
    gsize n = (gsize)EVP_MD_get_size(md);
    EVP_MD_free(md);
    return n;
}

gboolean vd_hash(const char *hash, const guint8 *data, gsize len, guint8 *out, GError **error)
{
    EVP_MD *md = fetch_md(hash, error);
    if (md == NULL)
        return FALSE;
    unsigned int n = 0;
    gboolean ok = EVP_Digest(data, len, out, &n, md, NULL) == 1;
    EVP_MD_free(md);
    if (!ok)
        set_openssl_error(error, "hashing");
    return ok;
}

gboolean vd_pbkdf2(const char *hash, const guint8 *pass, gsize pass_len, const guint8 *salt,
                   gsize salt_len, guint64 iterations, guint8 *out, gsize out_len, GError **error)
{
    if (iterations == 0 || iterations > G_MAXINT || pass_len > G_MAXINT || salt_len > G_MAXINT ||
        out_len > G_MAXINT) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "PBKDF2 iteration count %" G_GUINT64_FORMAT " is out of range", iterations);
        return FALSE;
    }
    EVP_MD *md = fetch_md(hash, error);
    if (md == NULL)
        return FALSE;
    /* OpenSSL wants a non-NULL pointer even for an empty passphrase. */
    static const char empty[1] = "";
    int ok = PKCS5_PBKDF2_HMAC(pass_len > 0 ? (const char *)pass : empty, (int)pass_len, salt,
                               (int)salt_len, (int)iterations, md, (int)out_len, out);
    EVP_MD_free(md);
    if (ok != 1) {
        set_openssl_error(error, "PBKDF2");
        return FALSE;
    }
    return TRUE;
}

static gint64 cpu_time_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (gint64)ts.tv_sec * G_GINT64_CONSTANT(1000000000) + ts.tv_nsec;
}

gboolean vd_pbkdf2_calibrate(const char *hash, guint64 ms, guint64 *iterations, GError **error)
{
    static const guint8 pass[] = "calibration passphrase";
    guint8 salt[32] = { 0 }, out[32];
    guint64 n = 1000;
    gint64 spent = 0;
    /* Double the count until a run takes long enough to measure. */
    for (;;) {
        gint64 t0 = cpu_time_ns();
        if (!vd_pbkdf2(hash, pass, sizeof pass - 1, salt, sizeof salt, n, out, sizeof out, error))
            return FALSE;
        spent = cpu_time_ns() - t0;
        if (spent >= 20 * 1000000 || n >= (1u << 30))
            break;
        n *= 2;
    }
    double per_ms = (double)n / ((double)MAX(spent, 1) / 1e6);
    double want = per_ms * (double)ms;
    *iterations = (guint64)CLAMP(want, 1000.0, (double)G_MAXINT);
    return TRUE;
}

gboolean vd_random_bytes(guint8 *out, gsize len, GError **error)
{
    if (len > G_MAXINT || RAND_bytes(out, (int)len) != 1) {
        set_openssl_error(error, "random number generation");
        return FALSE;
    }
    return TRUE;
}

/* Secret bytes get pages of their own, so that they can be left out of
 * core dumps (MADV_DONTDUMP), out of a forked child (MADV_WIPEONFORK) and,
 * where the memory lock limit allows, out of swap; freed, the whole mapping
 * is wiped first. The mapping's size sits in front of the bytes handed out,
 * so a free never depends on the length its caller remembers. */
#define SECURE_HEAD 64 /* keeps what follows aligned for any type */

guint8 *vd_secure_alloc(gsize len)
{
    gsize page = (gsize)sysconf(_SC_PAGESIZE);
    if (len > G_MAXSIZE - SECURE_HEAD - page)
        g_error("%s: cannot allocate %" G_GSIZE_FORMAT " bytes", G_STRLOC, len);
    gsize size = (len + SECURE_HEAD + page - 1) / page * page;
    void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        g_error("%s: cannot allocate %" G_GSIZE_FORMAT " bytes", G_STRLOC, size);
    /* Each is advice the kernel may not take: the bytes are wiped anyway. */
    madvise(map, size, MADV_DONTDUMP);
    madvise(map, size, MADV_WIPEONFORK);
    mlock(map, size);
    memcpy(map, &size, sizeof size);
    return (guint8 *)map + SECURE_HEAD;
}

void vd_secure_free(guint8 *p, gsize len)
{
    (void)len;
    if (p == NULL)
        return;
    guint8 *map = p - SECURE_HEAD;
    gsize size;
    memcpy(&size, map, sizeof size);
    explicit_bzero(map, size);
    munlock(map, size);
    munmap(map, size);
}

static gboolean parse_ivgen(const char *ivgen, IvGen *out, GError **error)
{
    if (ivgen == NULL || g_str_equal(ivgen, "plain64"))
        *out = IVGEN_PLAIN64;
    else if (g_str_equal(ivgen, "plain"))
        *out = IVGEN_PLAIN;
    else if (g_str_equal(ivgen, "essiv"))
        *out = IVGEN_ESSIV;
    else {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "unknown IV generator '%s' (known: plain, plain64, essiv)", ivgen);
        return FALSE;
    }
    return TRUE;
}

static EVP_CIPHER_CTX *new_ctx(EVP_CIPHER *cipher, const guint8 *key, int enc, GError **error)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL || EVP_CipherInit_ex2(ctx, cipher, key, NULL, enc, NULL) != 1 ||
        EVP_CIPHER_CTX_set_padding(ctx, 0) != 1) {
        set_openssl_error(error, "setting up the cipher");
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* The ESSIV cipher: AES in ECB mode keyed with hash(key), its size set by
 * the digest length (sha256 gives AES-256), as QEMU picks it. */
static gboolean setup_essiv(VdSectorCipher *c, const char *hash, const guint8 *key, gsize key_len,
                            GError **error)
{
    gsize dlen = vd_hash_digest_bytes(hash != NULL ? hash : "sha256", error);
    if (dlen == 0)
        return FALSE;
    if (dlen != 16 && dlen != 24 && dlen != 32) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "essiv hash '%s' gives %zu bytes, not an AES key size", hash, dlen);
        return FALSE;
    }
    guint8 salt[64];
    if (!vd_hash(hash != NULL ? hash : "sha256", key, key_len, salt, error))
        return FALSE;
    g_autofree char *name = g_strdup_printf("AES-%zu-ECB", dlen * 8);
    EVP_CIPHER *ecb = EVP_CIPHER_fetch(NULL, name, NULL);
    if (ecb == NULL) {
        set_openssl_error(error, name);
        return FALSE;
    }
    c->essiv = new_ctx(ecb, salt, 1, error);
    EVP_CIPHER_free(ecb);
    explicit_bzero(salt, sizeof salt);
    return c->essiv != NULL;
}

VdSectorCipher *vd_sector_cipher_new(const char *cipher_alg, const char *mode, const char *ivgen,
                                     const char *ivgen_hash, const guint8 *key, gsize key_len,
                                     GError **error)
{
    gsize want = vd_cipher_key_bytes(cipher_alg, mode, error);
    if (want == 0)
        return NULL;
    if (key_len != want) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "cipher %s-%s takes a %zu-byte key, not %zu bytes", cipher_alg, mode, want,
                    key_len);
        return NULL;
    }
    g_autofree char *name = openssl_cipher_name(cipher_alg, mode, error);
    g_autoptr(VdSectorCipher) c = g_new0(VdSectorCipher, 1);
    g_mutex_init(&c->lock);
    if (!parse_ivgen(ivgen, &c->ivgen, error))
        return NULL;
    if (g_str_equal(mode, "ecb"))
        c->ivgen = IVGEN_NONE;
    c->cipher = EVP_CIPHER_fetch(NULL, name, NULL);
    if (c->cipher == NULL) {
        set_openssl_error(error, name);
        return NULL;
    }
    c->iv_len = EVP_CIPHER_get_iv_length(c->cipher);
    c->enc = new_ctx(c->cipher, key, 1, error);
    if (c->enc == NULL)
        return NULL;
    c->dec = new_ctx(c->cipher, key, 0, error);
    if (c->dec == NULL)
        return NULL;
    if (c->ivgen == IVGEN_ESSIV && !setup_essiv(c, ivgen_hash, key, key_len, error))
        return NULL;
    return g_steal_pointer(&c);
}

void vd_sector_cipher_free(VdSectorCipher *c)
{
    if (c == NULL)
        return;
    EVP_CIPHER_CTX_free(c->enc);
    EVP_CIPHER_CTX_free(c->dec);
    EVP_CIPHER_CTX_free(c->essiv);
    EVP_CIPHER_free(c->cipher);
    g_mutex_clear(&c->lock);
    g_free(c);
}

static gboolean make_iv(VdSectorCipher *c, guint64 sector, guint8 *iv, GError **error)
{
    memset(iv, 0, 16);
    switch (c->ivgen) {
    case IVGEN_NONE:
        return TRUE;
    case IVGEN_PLAIN:
        vd_put_le32(iv, (guint32)sector);
        return TRUE;
    case IVGEN_PLAIN64:
        vd_put_le64(iv, sector);
        return TRUE;
    case IVGEN_ESSIV: {
        guint8 in[16] = { 0 };
        int n = 0;
        vd_put_le64(in, sector);
        if (EVP_EncryptUpdate(c->essiv, iv, &n, in, 16) != 1 || n != 16) {
            set_openssl_error(error, "ESSIV");
            return FALSE;
        }
        return TRUE;
    }
    }
    return TRUE;
}

static gboolean crypt_sectors(VdSectorCipher *c, gboolean enc, guint64 sector, guint8 *buf,
                              gsize len, GError **error)
{
    /* Key material may end in a part sector; data never does. */
    if (len % 16 != 0) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "encrypted I/O of %zu bytes is not a whole number of cipher blocks", len);
        return FALSE;
    }
    EVP_CIPHER_CTX *ctx = enc ? c->enc : c->dec;
    gboolean ok = TRUE;
    g_mutex_lock(&c->lock);
    for (gsize off = 0; ok && off < len; off += VD_CRYPTO_SECTOR_SIZE, sector++) {
        guint8 iv[16];
        int n = 0;
        int chunk = (int)MIN(VD_CRYPTO_SECTOR_SIZE, len - off);
        ok = make_iv(c, sector, iv, error);
        if (!ok)
            break;
        if (EVP_CipherInit_ex2(ctx, NULL, NULL, c->iv_len > 0 ? iv : NULL, enc, NULL) != 1 ||
            EVP_CipherUpdate(ctx, buf + off, &n, buf + off, chunk) != 1 || n != chunk) {
            set_openssl_error(error, enc ? "encryption" : "decryption");
            ok = FALSE;
        }
    }
    g_mutex_unlock(&c->lock);
    return ok;
}

gboolean vd_sector_cipher_encrypt(VdSectorCipher *c, guint64 first_sector, guint8 *buf, gsize len,
                                  GError **error)
{
    return crypt_sectors(c, TRUE, first_sector, buf, len, error);
}

gboolean vd_sector_cipher_decrypt(VdSectorCipher *c, guint64 first_sector, guint8 *buf, gsize len,
                                  GError **error)
{
    return crypt_sectors(c, FALSE, first_sector, buf, len, error);
}

VdSectorCipher *vd_legacy_aes_cipher(const guint8 *pass, gsize len, GError **error)
{
    /* qemu takes the passphrase as a C string: it ends at a NUL byte. */
    guint8 key[16] = { 0 };
    memcpy(key, pass, strnlen((const char *)pass, MIN(len, sizeof key)));
    VdSectorCipher *c =
        vd_sector_cipher_new("aes-128", "cbc", "plain64", NULL, key, sizeof key, error);
    explicit_bzero(key, sizeof key);
    return c;
}

gboolean vd_legacy_aes_open(VdImage *img, VdSectorCipher **cipher, GError **error)
{
    img->encrypted = TRUE;
    const guint8 *pass;
    gsize len;
    if (!vd_image_passphrase(img, "encrypt.key-secret", &pass, &len, error))
        return FALSE;
    if (pass == NULL) {
        img->needs_key = TRUE;
        return TRUE;
    }
    *cipher = vd_legacy_aes_cipher(pass, len, error);
    return *cipher != NULL;
}

gboolean vd_create_encrypt_format(VdOptions *opts, const char **format, GError **error)
{
    gboolean legacy = FALSE;
    *format = vd_options_get(opts, "encrypt.format");
    if (!vd_option_bool(opts, "encryption", FALSE, &legacy, error))
        return FALSE;
    if (legacy && *format != NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "'encrypt.format' and its alias 'encryption' can't be used at the same time");
        return FALSE;
    }
    if (legacy)
        *format = "aes";
    return TRUE;
}
