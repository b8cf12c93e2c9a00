/* Unit tests of the encryption layer: known-answer vectors for PBKDF2
 * (RFC 6070, RFC 7914) and AES-XTS (IEEE 1619), the anti-forensic
 * splitter, LUKS header round trips, wrong passphrases, truncated key
 * material, unknown ciphers, and encrypted qcow2 and luks images through
 * the engine API (unaligned writes, backing files, snapshots, resize),
 * legacy AES qcow and qcow2 made and written. */
#include "luks-header.h"

#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>

static void hex_to_bytes(const char *hex, guint8 *out, gsize len)
{
    for (gsize i = 0; i < len; i++) {
        unsigned v;
        g_assert_true(sscanf(hex + 2 * i, "%2x", &v) == 1);
        out[i] = (guint8)v;
    }
}

static void assert_hex(const guint8 *got, const char *hex)
{
    gsize len = strlen(hex) / 2;
    g_autofree guint8 *want = g_malloc(len);
    hex_to_bytes(hex, want, len);
    g_assert_cmpmem(got, len, want, len);
}

/* ----- primitives ----- */

static void test_pbkdf2_vectors(void)
{
    g_autoptr(GError) error = NULL;
    guint8 out[64];
    /* RFC 6070, PBKDF2-HMAC-SHA1. */
    g_assert_true(vd_pbkdf2("sha1", (const guint8 *)"password", 8, (const guint8 *)"salt", 4, 1,
                            out, 20, &error));
    assert_hex(out, "0c60c80f961f0e71f3a9b524af6012062fe037a6");
    g_assert_true(vd_pbkdf2("sha1", (const guint8 *)"password", 8, (const guint8 *)"salt", 4, 4096,
                            out, 20, &error));
    assert_hex(out, "4b007901b765489abead49d926f721d065a429c1");
    /* RFC 7914 section 11, PBKDF2-HMAC-SHA256. */
    g_assert_true(vd_pbkdf2("sha256", (const guint8 *)"passwd", 6, (const guint8 *)"salt", 4, 1,
                            out, 64, &error));
    assert_hex(out, "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
                    "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783");
    g_assert_no_error(error);
}

static void test_pbkdf2_refuses(void)
{
    g_autoptr(GError) error = NULL;
    guint8 out[20];
    g_assert_false(vd_pbkdf2("whirlpool-9", (const guint8 *)"p", 1, (const guint8 *)"s", 1, 1, out,
                             20, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
    g_clear_error(&error);
    g_assert_false(
        vd_pbkdf2("sha256", (const guint8 *)"p", 1, (const guint8 *)"s", 1, 0, out, 20, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
}

/* IEEE 1619-2007 XTS-AES-128 vector 2: key1 = 11.., key2 = 22.., data unit
 * 0x3333333333, 32 bytes of 0x44. The tweak is the little-endian data unit
 * number, which is what plain64 makes of a sector number. */
static void test_xts_vector(void)
{
    g_autoptr(GError) error = NULL;
    guint8 key[32], buf[32];
    memset(key, 0x11, 16);
    memset(key + 16, 0x22, 16);
    memset(buf, 0x44, sizeof buf);
    g_autoptr(VdSectorCipher) c =
        vd_sector_cipher_new("aes-128", "xts", "plain64", NULL, key, sizeof key, &error);
    g_assert_no_error(error);
    g_assert_true(vd_sector_cipher_encrypt(c, 0x3333333333ull, buf, sizeof buf, &error));
    assert_hex(buf, "c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0");
    g_assert_true(vd_sector_cipher_decrypt(c, 0x3333333333ull, buf, sizeof buf, &error));
    for (gsize i = 0; i < sizeof buf; i++)
        g_assert_cmpuint(buf[i], ==, 0x44);
}

static void roundtrip(const char *alg, const char *mode, const char *ivgen, const char *hash)
{
    g_autoptr(GError) error = NULL;
    gsize kb = vd_cipher_key_bytes(alg, mode, &error);
    g_assert_no_error(error);
    guint8 key[64];
    for (gsize i = 0; i < kb; i++)
        key[i] = (guint8)(i * 7 + 3);
    g_autoptr(VdSectorCipher) c = vd_sector_cipher_new(alg, mode, ivgen, hash, key, kb, &error);
    g_assert_no_error(error);
    guint8 plain[2048], buf[2048];
    for (gsize i = 0; i < sizeof plain; i++)
        plain[i] = (guint8)(i / 512); /* sectors differ, and repeat inside */
    memcpy(buf, plain, sizeof buf);
    g_assert_true(vd_sector_cipher_encrypt(c, 100, buf, sizeof buf, &error));
    g_assert_true(memcmp(buf, plain, 512) != 0);
    if (!g_str_equal(mode, "ecb"))
        g_assert_true(memcmp(buf, buf + 512, 16) != 0 || plain[0] != plain[512]);
    /* Sector numbers matter (except for ECB): decrypting as another sector
     * gives other bytes. */
    guint8 other[512];
    memcpy(other, buf, 512);
    g_assert_true(vd_sector_cipher_decrypt(c, 101, other, 512, &error));
    if (!g_str_equal(mode, "ecb"))
        g_assert_true(memcmp(other, plain, 512) != 0);
    g_assert_true(vd_sector_cipher_decrypt(c, 100, buf, sizeof buf, &error));
    g_assert_cmpmem(buf, sizeof buf, plain, sizeof plain);
}

static void test_cipher_roundtrips(void)
{
    roundtrip("aes-256", "xts", "plain64", NULL);
    roundtrip("aes-128", "xts", "plain", NULL);
    roundtrip("aes-128", "cbc", "essiv", "sha256");
    roundtrip("aes-256", "cbc", "plain64", NULL);
    roundtrip("aes-192", "cbc", "plain64", NULL);
    roundtrip("aes-256", "ctr", "plain64", NULL);
    roundtrip("aes-128", "ecb", NULL, NULL);
}

static void test_unknown_cipher(void)
{
    g_autoptr(GError) error = NULL;
    guint8 key[64] = { 0 };
    g_assert_null(vd_sector_cipher_new("twofish-256", "xts", "plain64", NULL, key, 64, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
    g_assert_nonnull(strstr(error->message, "twofish"));
    g_clear_error(&error);
    g_assert_null(vd_sector_cipher_new("aes-256", "ofb", "plain64", NULL, key, 32, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
    g_clear_error(&error);
    g_assert_null(vd_sector_cipher_new("aes-256", "xts", "plain64", NULL, key, 32, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_null(vd_sector_cipher_new("aes-256", "cbc", "rainbow", NULL, key, 32, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
}

static void test_af_splitter(void)
{
    g_autoptr(GError) error = NULL;
    guint8 key[40], back[40];
    for (gsize i = 0; i < sizeof key; i++)
        key[i] = (guint8)(0xa0 + i);
    for (guint32 stripes = 1; stripes <= 4000; stripes = stripes * 7 + 1) {
        g_autofree guint8 *split = g_malloc(sizeof key * stripes);
        g_assert_true(vd_luks_af_split("sha256", key, sizeof key, stripes, split, &error));
        g_assert_true(vd_luks_af_merge("sha256", split, sizeof key, stripes, back, &error));
        g_assert_cmpmem(back, sizeof back, key, sizeof key);
        if (stripes > 1) {
            /* Losing one stripe loses the key. */
            split[0] ^= 1;
            g_assert_true(vd_luks_af_merge("sha256", split, sizeof key, stripes, back, &error));
            g_assert_true(memcmp(back, key, sizeof key) != 0);
        }
    }
    /* Two stripes by the specification: key = diffuse(s0) ^ s1, where diffuse
     * hashes each digest-sized block i as H(be32(i) || block). */
    guint8 split[64] = { 0 }, d[32], in[36] = { 0 };
    g_assert_true(vd_hash("sha256", in, sizeof in, d, &error)); /* block 0 of s0 = 0 */
    g_assert_true(vd_luks_af_merge("sha256", split, 32, 2, back, &error));
    g_assert_cmpmem(back, 32, d, 32);
    g_assert_no_error(error);
}

/* ----- LUKS headers in memory ----- */

typedef struct {
    guint8 *data;
    gsize len;
} Area;

static gboolean mem_io(gpointer p, guint64 offset, guint8 *buf, gsize len, gboolean write,
                       GError **error)
{
    Area *a = p;
    if (offset + len > a->len) {
        g_set_error(error, VD_ERROR, VD_ERROR_IO, "past the end");
        return FALSE;
    }
    if (write)
        memcpy(a->data + offset, buf, len);
    else
        memcpy(buf, a->data + offset, len);
    return TRUE;
}

static void make_volume(const VdLuksCreateParams *p, Area *a, VdLuksHeader *h, guint8 **mk)
{
    g_autoptr(GError) error = NULL;
    guint64 bytes;
    g_assert_true(vd_luks_area_bytes(p, &bytes, &error));
    a->len = bytes;
    a->data = g_malloc0(bytes);
    g_assert_true(vd_luks_create(p, (const guint8 *)"hunter2", 7, mem_io, a, h, mk, &error));
    g_assert_no_error(error);
}

static void test_luks_roundtrip(void)
{
    static const VdLuksCreateParams variants[] = {
        { .iter_time_ms = 10 },
        { "aes-128", "cbc", "essiv", "sha256", "sha1", 10 },
        { "aes-256", "cbc", "plain64", NULL, "sha512", 10 },
    };
    for (gsize v = 0; v < G_N_ELEMENTS(variants); v++) {
        g_autoptr(GError) error = NULL;
        Area a;
        VdLuksHeader h, parsed;
        guint8 *mk = NULL, *mk2 = NULL;
        int slot = -1;
        make_volume(&variants[v], &a, &h, &mk);
        g_assert_cmpuint((guint64)h.payload_offset * 512, ==, a.len);
        g_assert_true(vd_luks_header_parse(a.data, a.len, a.len, &parsed, &error));
        g_assert_no_error(error);
        g_assert_cmpstr(parsed.cipher_alg, ==, h.cipher_alg);
        g_assert_cmpstr(parsed.cipher_mode, ==, h.cipher_mode);
        g_assert_true(parsed.slots[0].active);
        g_assert_false(parsed.slots[1].active);
        g_assert_true(
            vd_luks_unlock(&parsed, (const guint8 *)"hunter2", 7, mem_io, &a, &mk2, &slot, &error));
        g_assert_cmpint(slot, ==, 0);
        g_assert_cmpmem(mk, h.key_bytes, mk2, parsed.key_bytes);
        vd_secure_free(mk2, parsed.key_bytes);

        /* A second passphrase in slot 3, then the first one removed. */
        g_assert_true(
            vd_luks_add_slot(&parsed, 3, mk, (const guint8 *)"second", 6, 10, mem_io, &a, &error));
        g_assert_true(vd_luks_remove_slot(&parsed, 0, mem_io, &a, &error));
        g_assert_true(vd_luks_header_parse(a.data, a.len, a.len, &parsed, &error));
        g_assert_false(parsed.slots[0].active);
        g_assert_true(parsed.slots[3].active);
        g_assert_false(
            vd_luks_unlock(&parsed, (const guint8 *)"hunter2", 7, mem_io, &a, &mk2, NULL, &error));
        g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
        g_clear_error(&error);
        g_assert_true(
            vd_luks_unlock(&parsed, (const guint8 *)"second", 6, mem_io, &a, &mk2, &slot, &error));
        g_assert_cmpint(slot, ==, 3);
        g_assert_cmpmem(mk, h.key_bytes, mk2, parsed.key_bytes);
        vd_secure_free(mk2, parsed.key_bytes);
        vd_secure_free(mk, h.key_bytes);
        g_free(a.data);
    }
}

static void test_luks_wrong_passphrase(void)
{
    g_autoptr(GError) error = NULL;
    VdLuksCreateParams p = { .iter_time_ms = 10 };
    Area a;
    VdLuksHeader h;
    guint8 *mk = NULL, *mk2 = NULL;
    make_volume(&p, &a, &h, &mk);
    g_assert_false(
        vd_luks_unlock(&h, (const guint8 *)"hunter3", 7, mem_io, &a, &mk2, NULL, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_assert_cmpstr(error->message, ==, "no key slot matches the passphrase");
    g_assert_null(strstr(error->message, "hunter"));
    g_assert_null(mk2);
    vd_secure_free(mk, h.key_bytes);
    g_free(a.data);
}

static void test_luks_truncated(void)
{
    g_autoptr(GError) error = NULL;
    VdLuksCreateParams p = { .iter_time_ms = 10 };
    Area a;
    VdLuksHeader h, parsed;
    guint8 *mk = NULL;
    make_volume(&p, &a, &h, &mk);
    /* The container holds less than slot 7's key material. */
    g_assert_false(vd_luks_header_parse(a.data, a.len, a.len - 4096, &parsed, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_CORRUPT);
    g_assert_nonnull(strstr(error->message, "truncated"));
    g_clear_error(&error);
    /* A header cut short. */
    g_assert_false(vd_luks_header_parse(a.data, 300, 0, &parsed, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_CORRUPT);
    g_clear_error(&error);
    /* Stripes pointing past the payload. */
    vd_put_be32(a.data + 208 + 44, 400000);
    g_assert_false(vd_luks_header_parse(a.data, a.len, a.len, &parsed, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_CORRUPT);
    vd_secure_free(mk, h.key_bytes);
    g_free(a.data);
}

static void test_luks_unknown_cipher(void)
{
    g_autoptr(GError) error = NULL;
    VdLuksCreateParams p = { .iter_time_ms = 10 };
    Area a;
    VdLuksHeader h, parsed;
    guint8 *mk = NULL;
    make_volume(&p, &a, &h, &mk);
    memset(a.data + 8, 0, 32);
    memcpy(a.data + 8, "serpent", 7);
    g_assert_false(vd_luks_header_parse(a.data, a.len, a.len, &parsed, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
    g_assert_nonnull(strstr(error->message, "serpent"));
    g_clear_error(&error);
    VdLuksCreateParams bad = { .cipher_alg = "twofish-128", .iter_time_ms = 10 };
    guint64 bytes;
    g_assert_false(vd_luks_area_bytes(&bad, &bytes, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
    vd_secure_free(mk, h.key_bytes);
    g_free(a.data);
}

static void test_secret_objects(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdSecrets) s = vd_secrets_new();
    gsize len = 0;
    g_assert_true(vd_secrets_add_object(s, "secret,id=a,data=x,,y", &error));
    g_assert_cmpmem(vd_secrets_lookup(s, "a", &len), len, "x,y", 3);
    g_assert_true(vd_secrets_add_object(s, "secret,id=b,data=aGVsbG8=,format=base64", &error));
    g_assert_cmpmem(vd_secrets_lookup(s, "b", &len), len, "hello", 5);
    g_assert_false(vd_secrets_add_object(s, "secret,data=x", &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_false(vd_secrets_add_object(s, "secret,id=c,file=/nonexistent/pw", &error));
    g_clear_error(&error);
    g_assert_false(vd_secrets_add_object(s, "secret,id=d,data=topsecret,colour=red", &error));
    g_assert_null(strstr(error->message, "topsecret"));
    g_assert_null(vd_secrets_lookup(s, "zzz", &len));
}

/* The VmFlags of the mapping holding p in /proc/self/smaps, or NULL when
 * no mapping holds it. */
static char *mapping_flags(const void *p)
{
    g_autofree char *smaps = NULL;
    g_assert_true(g_file_get_contents("/proc/self/smaps", &smaps, NULL, NULL));
    g_auto(GStrv) lines = g_strsplit(smaps, "\n", -1);
    gboolean inside = FALSE;
    for (guint i = 0; lines[i] != NULL; i++) {
        guint64 lo, hi;
        char dash;
        if (sscanf(lines[i], "%" G_GINT64_MODIFIER "x%c%" G_GINT64_MODIFIER "x", &lo, &dash, &hi) ==
                3 &&
            dash == '-')
            inside = (guintptr)p >= lo && (guintptr)p < hi;
        else if (inside && g_str_has_prefix(lines[i], "VmFlags:"))
            return g_strdup(lines[i]);
    }
    return NULL;
}

/* Secrets and keys live in memory left out of core dumps ("dd"), which
 * is given back (unmapped, after a wipe) when they are freed. */
static void test_secret_memory(void)
{
    guint8 *key = vd_secure_alloc(64);
    g_assert_nonnull(key);
    g_assert_true(vd_buffer_is_zero(key, 64));
    g_autofree char *flags = mapping_flags(key);
    g_assert_nonnull(flags);
    g_assert_nonnull(strstr(flags, " dd"));
    memset(key, 0xa5, 64);
    vd_secure_free(key, 64);
    g_autofree char *gone = mapping_flags(key);
    g_assert_null(gone);

    g_autoptr(VdSecrets) s = vd_secrets_new();
    g_autoptr(GError) error = NULL;
    gsize len = 0;
    g_assert_true(vd_secrets_add_object(s, "secret,id=a,data=hunter2", &error));
    const guint8 *pass = vd_secrets_lookup(s, "a", &len);
    g_assert_cmpmem(pass, len, "hunter2", 7);
    g_autofree char *pass_flags = mapping_flags(pass);
    g_assert_nonnull(pass_flags);
    g_assert_nonnull(strstr(pass_flags, " dd"));
    /* The file form and base64, through the same memory. */
    g_autofree char *dir = g_dir_make_tmp("vdisk-secret-XXXXXX", NULL);
    g_autofree char *file = g_build_filename(dir, "pw", NULL);
    g_assert_true(g_file_set_contents(file, "aGVsbG8=\n", -1, NULL));
    g_autofree char *spec = g_strdup_printf("secret,id=b,file=%s,format=base64", file);
    g_assert_true(vd_secrets_add_object(s, spec, &error));
    g_assert_cmpmem(vd_secrets_lookup(s, "b", &len), len, "hello", 5);
    g_assert_true(vd_secrets_set_default_from_file(s, file, &error));
    g_assert_true(vd_secrets_has_default(s));
    g_unlink(file);
    g_rmdir(dir);
}

/* ----- encrypted images through the engine ----- */

static char *tmp_path(const char *dir, const char *name)
{
    return g_build_filename(dir, name, NULL);
}

static void fill(guint8 *buf, gsize len, guint seed)
{
    for (gsize i = 0; i < len; i++)
        buf[i] = (guint8)(i * 31 + seed);
}

static void test_image_qcow2(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("vdisk-crypto-XXXXXX", NULL);
    g_autofree char *base = tmp_path(dir, "base.qcow2");
    g_autofree char *top = tmp_path(dir, "top.qcow2");
    g_autoptr(VdSecrets) secrets = vd_secrets_new();
    vd_secrets_add(secrets, "k", "sesame", 6);
    g_autoptr(VdOptions) copts = vd_options_new();
    g_assert_true(vd_options_parse(
        copts, "encrypt.format=luks,encrypt.key-secret=k,encrypt.iter-time=10", &error));
    g_autoptr(VdOptions) oopts = vd_options_new();
    vd_options_set(oopts, "encrypt.key-secret", "k");
    g_assert_true(vd_image_create_with_secrets(base, "qcow2", 4 << 20, copts, secrets, &error));
    g_assert_no_error(error);

    guint8 data[70000], back[70000];
    fill(data, sizeof data, 1);
    {
        g_autoptr(VdImage) img =
            vd_image_open_opts(base, "qcow2", VD_OPEN_READ_WRITE, oopts, secrets, &error);
        g_assert_no_error(error);
        g_assert_true(vd_image_is_encrypted(img));
        g_assert_false(vd_image_needs_key(img));
        /* Unaligned writes: sectors are read, merged and encrypted again. */
        g_assert_true(vd_image_write(img, 1000, data, sizeof data, &error));
        g_assert_true(vd_image_write(img, 3, data, 10, &error));
        g_assert_true(vd_image_write_zeroes(img, 2000, 100, TRUE, &error));
        g_assert_true(vd_image_create_snapshot(img, "one", &error));
        g_assert_true(vd_image_write(img, 65536, data, 512, &error));
        g_assert_true(vd_image_resize(img, 8 << 20, FALSE, &error));
        g_assert_no_error(error);
    }
    /* A plain overlay on the encrypted base: copy-on-write decrypts. */
    g_autoptr(VdOptions) topts = vd_options_new();
    vd_options_set(topts, "backing_file", base);
    vd_options_set(topts, "backing_fmt", "qcow2");
    g_assert_true(vd_image_create_with_secrets(top, "qcow2", 0, topts, secrets, &error));
    g_assert_no_error(error);
    {
        g_autoptr(VdImage) img =
            vd_image_open_opts(top, "qcow2", VD_OPEN_READ_WRITE, oopts, secrets, &error);
        g_assert_no_error(error);
        g_assert_true(vd_image_write(img, 70000, data, 7, &error));
        g_assert_true(vd_image_read(img, 0, back, sizeof back, &error));
        g_assert_no_error(error);
        guint8 want[70000];
        memset(want, 0, sizeof want);
        memcpy(want + 1000, data, sizeof data - 1000);
        memcpy(want + 3, data, 10);
        memset(want + 2000, 0, 100);
        memcpy(want + 65536, data, 512);
        g_assert_cmpmem(back, 65536, want, 65536);
        g_assert_cmpmem(back + 65536, 512, data, 512);
    }
    {
        /* Without the key: info works, data does not. */
        g_autoptr(VdImage) img = vd_image_open(base, "qcow2", 0, &error);
        g_assert_no_error(error);
        g_assert_true(vd_image_needs_key(img));
        g_autoptr(VdImageInfo) info = vd_image_get_info(img, &error);
        g_assert_true(info->encrypted);
        g_assert_false(vd_image_read(img, 1000, back, 512, &error));
        g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
        g_clear_error(&error);
    }
    {
        /* A wrong passphrase fails at open. */
        g_autoptr(VdSecrets) wrong = vd_secrets_new();
        vd_secrets_add(wrong, "k", "sesamf", 6);
        g_autoptr(VdImage) img = vd_image_open_opts(base, "qcow2", 0, oopts, wrong, &error);
        g_assert_null(img);
        g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
        g_assert_nonnull(strstr(error->message, "no key slot matches the passphrase"));
        g_assert_null(strstr(error->message, "sesam"));
        g_clear_error(&error);
    }
    {
        /* The snapshot kept the old content; check finds nothing wrong. */
        g_autoptr(VdImage) img = vd_image_open_opts(base, "qcow2", 0, oopts, secrets, &error);
        g_assert_no_error(error);
        VdCheckResult res = { 0 };
        g_assert_true(vd_image_check(img, VD_CHECK_REPAIR_NONE, &res, &error));
        g_assert_cmpuint(res.corruptions, ==, 0);
        g_assert_cmpuint(res.leaks, ==, 0);
        vd_check_result_clear(&res);
        g_assert_true(vd_image_load_snapshot(img, "one", &error));
        g_assert_true(vd_image_read(img, 65536, back, 512, &error));
        g_assert_cmpmem(back, 512, data + 65536 - 1000, 512);
    }
    g_unlink(top);
    g_unlink(base);
    g_rmdir(dir);
}

static void test_image_luks(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("vdisk-crypto-XXXXXX", NULL);
    g_autofree char *path = tmp_path(dir, "v.luks");
    g_autoptr(VdSecrets) secrets = vd_secrets_new();
    vd_secrets_set_default(secrets, "open sesame", 11);
    g_autoptr(VdOptions) copts = vd_options_new();
    vd_options_set(copts, "iter-time", "10");
    vd_options_set(copts, "cipher-alg", "aes-128");
    g_assert_true(vd_image_create_with_secrets(path, "luks", 1 << 20, copts, secrets, &error));
    g_assert_no_error(error);
    guint8 data[5000], back[5000];
    fill(data, sizeof data, 9);
    {
        g_autoptr(VdImage) img =
            vd_image_open_opts(path, NULL, VD_OPEN_READ_WRITE, NULL, secrets, &error);
        g_assert_no_error(error);
        g_assert_cmpstr(vd_image_format(img), ==, "luks");
        g_assert_cmpuint(vd_image_size(img), ==, 1 << 20);
        g_assert_true(vd_image_write(img, 777, data, sizeof data, &error));
        g_assert_no_error(error);
    }
    g_autoptr(VdImage) img = vd_image_open_opts(path, NULL, 0, NULL, secrets, &error);
    g_assert_true(vd_image_read(img, 777, back, sizeof back, &error));
    g_assert_cmpmem(back, sizeof back, data, sizeof data);
    g_assert_no_error(error);
    g_unlink(path);
    g_rmdir(dir);
}

/* Legacy AES, made and written as qemu-img still does, in qcow and qcow2:
 * unaligned writes read back; the file holds the data encrypted with
 * AES-128-CBC under the passphrase's first 16 bytes, each sector's IV its
 * guest sector number (not its place in the file); a passphrase that only
 * shares those 16 bytes opens it too, as in qemu. */
static void legacy_aes_image(const char *format)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("vdisk-crypto-XXXXXX", NULL);
    g_autofree char *path = tmp_path(dir, "aes.img");
    static const char pass[] = "a passphrase longer than sixteen bytes";
    g_autoptr(VdSecrets) secrets = vd_secrets_new();
    vd_secrets_add(secrets, "k", pass, strlen(pass));
    g_autoptr(VdOptions) copts = vd_options_new();
    g_assert_true(vd_options_parse(copts, "encrypt.format=aes,encrypt.key-secret=k", &error));
    g_assert_true(vd_image_create_with_secrets(path, format, 1 << 20, copts, secrets, &error));
    g_assert_no_error(error);
    g_autoptr(VdOptions) oopts = vd_options_new();
    vd_options_set(oopts, "encrypt.key-secret", "k");

    guint8 data[70000], back[72000], want[72000];
    fill(data, sizeof data, 5);
    memset(want, 0, sizeof want);
    memcpy(want + 1000, data, sizeof data);
    memcpy(want + 3, data, 10);
    memset(want + 2000, 0, 100);
    {
        g_autoptr(VdImage) img =
            vd_image_open_opts(path, format, VD_OPEN_READ_WRITE, oopts, secrets, &error);
        g_assert_no_error(error);
        g_assert_true(vd_image_is_encrypted(img));
        g_assert_true(vd_image_write(img, 1000, data, sizeof data, &error));
        g_assert_true(vd_image_write(img, 3, data, 10, &error));
        g_assert_true(vd_image_write_zeroes(img, 2000, 100, FALSE, &error));
        g_assert_no_error(error);
        /* Compressed clusters would be stored in the clear: refused. */
        guint8 packed[100] = { 0 };
        g_assert_false(vd_image_write_precompressed(img, 1 << 19, packed, sizeof packed, &error));
        g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
        g_clear_error(&error);
    }
    g_autoptr(VdSecrets) first16 = vd_secrets_new();
    vd_secrets_add(first16, "k", pass, 16);
    g_autoptr(VdImage) img = vd_image_open_opts(path, format, 0, oopts, first16, &error);
    g_assert_no_error(error);
    g_assert_true(vd_image_read(img, 0, back, sizeof back, &error));
    g_assert_no_error(error);
    g_assert_cmpmem(back, sizeof back, want, sizeof want);

    gchar *contents = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(path, &contents, &len, NULL));
    g_autofree gchar *file = contents;
    g_assert_null(memmem(file, len, data + 4096, 512));
    g_autoptr(VdSectorCipher) c =
        vd_sector_cipher_new("aes-128", "cbc", "plain64", NULL, (const guint8 *)pass, 16, &error);
    g_assert_no_error(error);
    guint8 sector[512];
    memcpy(sector, want + 8 * 512, 512);
    g_assert_true(vd_sector_cipher_encrypt(c, 8, sector, sizeof sector, &error));
    g_assert_nonnull(memmem(file, len, sector, sizeof sector));
    g_unlink(path);
    g_rmdir(dir);
}

static void test_image_legacy_aes(void)
{
    legacy_aes_image("qcow");
    legacy_aes_image("qcow2");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/crypto/pbkdf2/vectors", test_pbkdf2_vectors);
    g_test_add_func("/crypto/pbkdf2/refuses", test_pbkdf2_refuses);
    g_test_add_func("/crypto/cipher/xts-vector", test_xts_vector);
    g_test_add_func("/crypto/cipher/roundtrips", test_cipher_roundtrips);
    g_test_add_func("/crypto/cipher/unknown", test_unknown_cipher);
    g_test_add_func("/crypto/luks/af-splitter", test_af_splitter);
    g_test_add_func("/crypto/luks/roundtrip", test_luks_roundtrip);
    g_test_add_func("/crypto/luks/wrong-passphrase", test_luks_wrong_passphrase);
    g_test_add_func("/crypto/luks/truncated", test_luks_truncated);
    g_test_add_func("/crypto/luks/unknown-cipher", test_luks_unknown_cipher);
    g_test_add_func("/crypto/secrets/objects", test_secret_objects);
    g_test_add_func("/crypto/secrets/memory", test_secret_memory);
    g_test_add_func("/crypto/image/qcow2", test_image_qcow2);
    g_test_add_func("/crypto/image/luks", test_image_luks);
    g_test_add_func("/crypto/image/legacy-aes", test_image_legacy_aes);
    return g_test_run();
}
