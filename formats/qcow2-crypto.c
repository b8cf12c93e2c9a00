/* qcow2 encryption: LUKS (crypt_method 2) and legacy AES (crypt_method 1).
 *
 * LUKS: the full-disk-encryption header extension (0x0537be77) points at
 * clusters holding a LUKS1 header and its key material; data clusters are
 * encrypted in 512-byte sectors whose IV numbers come from the *host*
 * offset, as QEMU does. Legacy AES: AES-128-CBC, key = the passphrase's
 * first 16 bytes zero-padded, plain64 IVs from the *guest* sector; weak,
 * and made and written only because qemu-img still does.
 */
#include "qcow2.h"

#include <string.h>

#define SECTOR VD_CRYPTO_SECTOR_SIZE
/* A LUKS area bigger than this is not one QEMU or vdisk wrote. */
#define QCOW2_MAX_CRYPTO_AREA (64ull << 20)

static gboolean area_io(gpointer data, guint64 offset, guint8 *buf, gsize len, gboolean write,
                        GError **error)
{
    Qcow2State *s = data;
    if (offset > s->crypto_ext_length || len > s->crypto_ext_length - offset) {
        vd_set_error(error, s->img, VD_ERROR_CORRUPT,
                     "LUKS key material runs past the encryption header area");
        return FALSE;
    }
    guint64 at = s->crypto_ext_offset + offset;
    return write ? vd_file_pwrite(s->img->file, at, buf, len, error)
                 : vd_file_pread(s->img->file, at, buf, len, error);
}

static gboolean open_aes(VdImage *img, Qcow2State *s, GError **error)
{
    return vd_legacy_aes_open(img, &s->cipher, error);
}

static gboolean open_luks(VdImage *img, Qcow2State *s, GError **error)
{
    guint64 off = s->crypto_ext_offset, len = s->crypto_ext_length;
    if (off == 0 || (off & (s->cluster_size - 1)) != 0 || len < VD_LUKS_HEADER_BYTES ||
        len > QCOW2_MAX_CRYPTO_AREA || !qcow2_in_file(s, off, len)) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "the encryption header (offset 0x%" G_GINT64_MODIFIER
                     "x, length %" G_GUINT64_FORMAT ") is missing or invalid",
                     off, len);
        return FALSE;
    }
    guint8 buf[VD_LUKS_HEADER_BYTES];
    g_autoptr(GError) local = NULL;
    s->luks = g_new0(VdLuksHeader, 1);
    if (!vd_file_pread(img->file, off, buf, sizeof buf, error))
        return FALSE;
    if (!vd_luks_header_parse(buf, sizeof buf, len, s->luks, &local)) {
        vd_set_error(error, img, local->code, "%s", local->message);
        return FALSE;
    }
    return vd_luks_open_cipher(img, s->luks, "encrypt.key-secret", area_io, s, &s->cipher,
                               &s->master_key, error);
}

gboolean qcow2_crypto_open(VdImage *img, Qcow2State *s, GError **error)
{
    switch (s->crypt_method) {
    case QCOW2_CRYPT_NONE:
        return TRUE;
    case QCOW2_CRYPT_AES:
        img->encrypted = TRUE;
        return open_aes(img, s, error);
    case QCOW2_CRYPT_LUKS:
        img->encrypted = TRUE;
        if (s->data_file != NULL) {
            vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                         "encryption with an external data file is not supported");
            return FALSE;
        }
        return open_luks(img, s, error);
    default:
        vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT, "unknown encryption method %u",
                     s->crypt_method);
        return FALSE;
    }
}

void qcow2_crypto_close(Qcow2State *s)
{
    vd_sector_cipher_free(s->cipher);
    s->cipher = NULL;
    if (s->luks != NULL) {
        vd_secure_free(s->master_key, s->luks->key_bytes);
        s->master_key = NULL;
        explicit_bzero(s->luks, sizeof *s->luks);
        g_free(s->luks);
        s->luks = NULL;
    }
}

gboolean qcow2_crypto_need_key(Qcow2State *s, GError **error)
{
    if (s->cipher != NULL || !qcow2_encrypted(s))
        return TRUE;
    vd_set_error(error, s->img, VD_ERROR_INVALID_ARGUMENT,
                 "is encrypted and was opened without its passphrase (give "
                 "encrypt.key-secret=ID with --object secret, or --passphrase-file)");
    return FALSE;
}

gboolean qcow2_decrypt(Qcow2State *s, guint64 guest, guint64 host, guint8 *buf, guint64 n,
                       GError **error)
{
    guint64 at = s->crypt_method == QCOW2_CRYPT_LUKS ? host : guest;
    if (!qcow2_crypto_need_key(s, error))
        return FALSE;
    return vd_sector_cipher_decrypt(s->cipher, at / SECTOR, buf, n, error);
}

gboolean qcow2_encrypt(Qcow2State *s, guint64 guest, guint64 host, guint8 *buf, guint64 n,
                       GError **error)
{
    guint64 at = s->crypt_method == QCOW2_CRYPT_LUKS ? host : guest;
    if (!qcow2_crypto_need_key(s, error))
        return FALSE;
    return vd_sector_cipher_encrypt(s->cipher, at / SECTOR, buf, n, error);
}

/* Where build_header put the extension's data: right after the header. */
/* Where the data of the crypto header extension create wrote lies in the
 * header cluster (after the backing format's, as qemu orders them). */
static gboolean extension_data_offset(Qcow2State *s, guint64 *offset, GError **error)
{
    guint64 cs = s->cluster_size;
    g_autofree guint8 *h = g_malloc0(cs);
    if (!vd_file_pread_zero_past_eof(s->img->file, 0, h, cs, error))
        return FALSE;
    for (guint64 pos = s->version == 3 ? s->header_length : QH_V2_LENGTH; pos + 8 <= cs;) {
        guint32 type = vd_be32(h + pos), len = vd_be32(h + pos + 4);
        if (type == QCOW2_EXT_END || len > cs - pos - 8)
            break;
        if (type == QCOW2_EXT_CRYPTO && len >= 16) {
            *offset = pos + 8;
            return TRUE;
        }
        pos += 8 + qcow2_align_up(len, 8);
    }
    vd_set_error(error, s->img, VD_ERROR_CORRUPT, "the crypto header extension is missing");
    return FALSE;
}

/* Legacy AES keeps no header of its own: the key comes from the
 * passphrase alone. qemu-img wants it now, so does vdisk. */
static gboolean create_aes(Qcow2State *s, const VdCreateParams *p, GError **error)
{
    const guint8 *pass;
    gsize pass_len;
    if (!vd_create_passphrase(p, "encrypt.key-secret", &pass, &pass_len, error))
        return FALSE;
    s->cipher = vd_legacy_aes_cipher(pass, pass_len, error);
    if (s->cipher == NULL)
        return FALSE;
    s->crypt_method = QCOW2_CRYPT_AES;
    s->img->encrypted = TRUE;
    return qcow2_write_header_field(s, QH_CRYPT_METHOD, QCOW2_CRYPT_AES, 4, error);
}

gboolean qcow2_crypto_create(Qcow2State *s, const VdCreateParams *p, gboolean aes, GError **error)
{
    VdLuksCreateParams cp;
    const guint8 *pass;
    gsize pass_len;
    guint64 area, off;
    if (aes)
        return create_aes(s, p, error);
    if (!vd_luks_create_params_from_options(p->options, "encrypt.", &cp, error) ||
        !vd_create_passphrase(p, "encrypt.key-secret", &pass, &pass_len, error) ||
        !vd_luks_area_bytes(&cp, &area, error))
        return FALSE;
    guint64 n = qcow2_align_up(area, s->cluster_size) / s->cluster_size;
    if (!qcow2_alloc_clusters(s, n, &off, error))
        return FALSE;
    s->crypto_ext_offset = off;
    s->crypto_ext_length = area;
    /* Unused key slots read as zeroes; the file must reach the area's end. */
    guint64 end = off + n * s->cluster_size, size;
    if (!vd_file_size(s->img->file, &size, error) ||
        (size < end && !vd_file_truncate(s->img->file, end, error)))
        return FALSE;
    if (end > s->file_size)
        s->file_size = end;
    s->luks = g_new0(VdLuksHeader, 1);
    guint8 *mk = NULL;
    if (!vd_luks_create(&cp, pass, pass_len, area_io, s, s->luks, &mk, error))
        return FALSE;
    s->master_key = mk;
    s->cipher = vd_luks_data_cipher(s->luks, mk, error);
    if (s->cipher == NULL)
        return FALSE;
    guint8 ext[16];
    vd_put_be64(ext, off);
    vd_put_be64(ext + 8, area);
    s->crypt_method = QCOW2_CRYPT_LUKS;
    s->img->encrypted = TRUE;
    guint64 ext_off;
    return extension_data_offset(s, &ext_off, error) &&
           vd_file_pwrite(s->img->file, ext_off, ext, sizeof ext, error) &&
           qcow2_write_header_field(s, QH_CRYPT_METHOD, QCOW2_CRYPT_LUKS, 4, error);
}

gboolean qcow2_crypto_amend(VdImage *img, VdOptions *opts, VdSecrets *secrets, GError **error)
{
    Qcow2State *s = img->priv;
    g_autoptr(GPtrArray) keys = vd_options_keys(opts);
    for (guint i = 0; i < keys->len; i++) {
        if (!g_str_has_prefix(keys->pdata[i], "encrypt.")) {
            vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                         "amending option '%s' is not supported (only encrypt.* key slots)",
                         (const char *)keys->pdata[i]);
            return FALSE;
        }
    }
    if (s->crypt_method != QCOW2_CRYPT_LUKS) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "key slots can only be changed on LUKS-encrypted images");
        return FALSE;
    }
    if (!qcow2_crypto_need_key(s, error))
        return FALSE;
    g_autoptr(GError) local = NULL;
    if (!vd_luks_amend(s->luks, s->master_key, opts, "encrypt.", secrets, img->amend_force, area_io,
                       s, &local)) {
        vd_set_error(error, img, local->code, "%s", local->message);
        return FALSE;
    }
    return vd_file_sync(img->file, error);
}

GVariant *qcow2_crypto_info(Qcow2State *s)
{
    if (s->crypt_method == QCOW2_CRYPT_LUKS && s->luks != NULL)
        return vd_luks_info(s->luks, TRUE);
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "format", g_variant_new_string("aes"));
    return g_variant_builder_end(&b);
}
