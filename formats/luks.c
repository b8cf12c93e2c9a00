/* luks: raw LUKS1 volumes, QEMU's "luks" format (libvirt's encrypted raw
 * volumes). A standard LUKS1 header and key material, then the payload:
 * guest sector n is stored encrypted at payload offset + n * 512 with IV
 * sector number n. Header work is in luks-header.c.
 */
#include "luks-header.h"

#include <string.h>

#define SECTOR VD_CRYPTO_SECTOR_SIZE

typedef struct {
    VdLuksHeader hdr;
    VdSectorCipher *cipher; /* NULL when opened without a key */
    guint8 *master_key;     /* for amend; NULL without a key */
    guint64 payload;        /* bytes */
} LuksState;

static gboolean file_io(gpointer data, guint64 offset, guint8 *buf, gsize len, gboolean write,
                        GError **error)
{
    VdFile *file = data;
    return write ? vd_file_pwrite(file, offset, buf, len, error)
                 : vd_file_pread(file, offset, buf, len, error);
}

static int luks_probe(const guint8 *buf, gsize len, const char *filename)
{
    static const guint8 magic[6] = { 'L', 'U', 'K', 'S', 0xba, 0xbe };
    return len >= 8 && memcmp(buf, magic, 6) == 0 && vd_be16(buf + 6) == 1 ? 100 : 0;
}

gboolean vd_luks_open_cipher(VdImage *img, const VdLuksHeader *hdr, const char *key_option,
                             VdLuksIO io, gpointer io_data, VdSectorCipher **cipher,
                             guint8 **master_key, GError **error)
{
    const guint8 *pass;
    gsize pass_len;
    img->encrypted = TRUE;
    if (!vd_image_passphrase(img, key_option, &pass, &pass_len, error))
        return FALSE;
    if (pass == NULL) {
        img->needs_key = TRUE;
        return TRUE;
    }
    guint8 *mk = NULL;
    g_autoptr(GError) local = NULL;
    if (!vd_luks_unlock(hdr, pass, pass_len, io, io_data, &mk, NULL, &local)) {
        vd_set_error(error, img, local->code, "%s", local->message);
        return FALSE;
    }
    *cipher = vd_luks_data_cipher(hdr, mk, error);
    if (*cipher != NULL && master_key != NULL)
        *master_key = mk;
    else
        vd_secure_free(mk, hdr->key_bytes);
    return *cipher != NULL;
}

static gboolean luks_open(VdImage *img, GError **error)
{
    LuksState *s = g_new0(LuksState, 1);
    img->priv = s;
    guint64 file_size;
    guint8 buf[VD_LUKS_HEADER_BYTES];
    if (!vd_file_size(img->file, &file_size, error))
        return FALSE;
    if (file_size < sizeof buf) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "file is too short for a LUKS header");
        return FALSE;
    }
    g_autoptr(GError) local = NULL;
    if (!vd_file_pread(img->file, 0, buf, sizeof buf, error))
        return FALSE;
    if (!vd_luks_header_parse(buf, sizeof buf, file_size, &s->hdr, &local)) {
        vd_set_error(error, img, local->code, "%s", local->message);
        return FALSE;
    }
    s->payload = (guint64)s->hdr.payload_offset * SECTOR;
    if (s->payload > file_size) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "LUKS payload offset %" G_GUINT64_FORMAT " is past the end of the file",
                     s->payload);
        return FALSE;
    }
    img->size = (file_size - s->payload) & ~(guint64)(SECTOR - 1);
    return vd_luks_open_cipher(img, &s->hdr, "key-secret", file_io, img->file, &s->cipher,
                               &s->master_key, error);
}

static void luks_close(VdImage *img)
{
    LuksState *s = img->priv;
    if (s == NULL)
        return;
    vd_sector_cipher_free(s->cipher);
    vd_secure_free(s->master_key, s->hdr.key_bytes);
    explicit_bzero(s, sizeof *s);
    g_free(s);
    img->priv = NULL;
}

static gboolean need_cipher(VdImage *img, LuksState *s, GError **error)
{
    if (s->cipher != NULL)
        return TRUE;
    vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                 "is encrypted and was opened without its passphrase (give key-secret=ID with "
                 "--object secret, or --passphrase-file)");
    return FALSE;
}

static gboolean luks_block_status(VdImage *img, guint64 offset, guint64 len, VdExtent *out,
                                  GError **error)
{
    out->kind = VD_EXTENT_DATA;
    out->length = len;
    return TRUE;
}

/* The sector-aligned span around [offset, offset+len). */
static void align_span(guint64 offset, gsize len, guint64 *start, gsize *span)
{
    *start = offset & ~(guint64)(SECTOR - 1);
    guint64 end = (offset + len + SECTOR - 1) & ~(guint64)(SECTOR - 1);
    *span = (gsize)(end - *start);
}

static gboolean read_sectors(VdImage *img, LuksState *s, guint64 start, guint8 *buf, gsize len,
                             GError **error)
{
    return vd_file_pread_zero_past_eof(img->file, s->payload + start, buf, len, error) &&
           vd_sector_cipher_decrypt(s->cipher, start / SECTOR, buf, len, error);
}

static gboolean luks_read(VdImage *img, guint64 offset, void *buf, gsize len, GError **error)
{
    LuksState *s = img->priv;
    if (!need_cipher(img, s, error))
        return FALSE;
    guint64 start;
    gsize span;
    align_span(offset, len, &start, &span);
    if (start == offset && span == len)
        return read_sectors(img, s, start, buf, len, error);
    g_autofree guint8 *tmp = g_malloc(span);
    if (!read_sectors(img, s, start, tmp, span, error))
        return FALSE;
    memcpy(buf, tmp + (offset - start), len);
    return TRUE;
}

static gboolean luks_write(VdImage *img, guint64 offset, const void *buf, gsize len, GError **error)
{
    LuksState *s = img->priv;
    if (!need_cipher(img, s, error))
        return FALSE;
    guint64 start;
    gsize span;
    align_span(offset, len, &start, &span);
    /* Encrypt a copy, in pieces, so the caller's buffer stays plain. */
    gsize chunk = MIN(span, (gsize)1 << 20);
    g_autofree guint8 *tmp = g_malloc(chunk);
    const guint8 *src = buf;
    for (guint64 pos = start; pos < start + span;) {
        gsize n = (gsize)MIN(chunk, start + span - pos);
        guint64 a = MAX(pos, offset), b = MIN(pos + n, offset + len);
        if (a > pos || b < pos + n) {
            /* Partial sectors at the edges keep their old content. */
            if (!read_sectors(img, s, pos, tmp, n, error))
                return FALSE;
        }
        memcpy(tmp + (a - pos), src + (a - offset), b - a);
        if (!vd_sector_cipher_encrypt(s->cipher, pos / SECTOR, tmp, n, error) ||
            !vd_file_pwrite(img->file, s->payload + pos, tmp, n, error))
            return FALSE;
        pos += n;
    }
    return TRUE;
}

static gboolean luks_flush(VdImage *img, GError **error) { return vd_file_sync(img->file, error); }

static gboolean luks_resize(VdImage *img, guint64 new_size, gboolean allow_shrink, GError **error)
{
    LuksState *s = img->priv;
    if (new_size % SECTOR != 0) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "the size of a LUKS volume must be a multiple of 512 bytes");
        return FALSE;
    }
    if (new_size < img->size && !allow_shrink) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT, "shrinking needs --shrink");
        return FALSE;
    }
    guint64 old = img->size;
    if (!vd_file_truncate(img->file, s->payload + new_size, error))
        return FALSE;
    img->size = new_size;
    /* The new tail must read as zeroes: encrypt them. */
    if (new_size > old && s->cipher != NULL) {
        g_autofree guint8 *zero = g_malloc0(1u << 20);
        for (guint64 pos = old; pos < new_size; pos += 1u << 20)
            if (!luks_write(img, pos, zero, (gsize)MIN(1u << 20, new_size - pos), error))
                return FALSE;
    }
    return TRUE;
}

static void luks_get_info(VdImage *img, VdImageInfo *info)
{
    LuksState *s = img->priv;
    info->encrypted = TRUE;
    if (info->format_specific != NULL)
        g_variant_unref(info->format_specific);
    info->format_specific = g_variant_ref_sink(vd_luks_info(&s->hdr, FALSE));
}

static gboolean luks_create(VdFile *file, const VdCreateParams *p, GError **error)
{
    static const char *const prealloc[] = { "off", "metadata", "falloc", "full", NULL };
    VdLuksCreateParams cp;
    int mode = 0;
    const guint8 *pass;
    gsize pass_len;
    if (!vd_luks_create_params_from_options(p->options, "", &cp, error) ||
        !vd_option_choice(p->options, "preallocation", prealloc, 0, &mode, error) ||
        !vd_create_passphrase(p, "key-secret", &pass, &pass_len, error))
        return FALSE;
    if (p->backing_file != NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED, "luks volumes have no backing file");
        return FALSE;
    }
    VdLuksHeader hdr;
    guint8 *mk = NULL;
    if (!vd_luks_create(&cp, pass, pass_len, file_io, file, &hdr, &mk, error))
        return FALSE;
    guint64 payload = (guint64)hdr.payload_offset * SECTOR;
    gboolean ok = vd_file_truncate(file, payload + p->size, error);
    if (ok && mode == 2)
        ok = vd_file_allocate(file, payload, MAX(p->size, 1), error);
    if (ok && mode == 3 && p->size > 0) {
        /* Encrypted zeroes, so the volume reads as zeroes and is allocated. */
        g_autoptr(VdSectorCipher) c = vd_luks_data_cipher(&hdr, mk, error);
        g_autofree guint8 *buf = g_malloc(1u << 20);
        ok = c != NULL;
        for (guint64 pos = 0; ok && pos < p->size; pos += 1u << 20) {
            gsize n = (gsize)MIN(1u << 20, p->size - pos);
            memset(buf, 0, n);
            ok = vd_sector_cipher_encrypt(c, pos / SECTOR, buf, n, error) &&
                 vd_file_pwrite(file, payload + pos, buf, n, error);
        }
    }
    vd_secure_free(mk, hdr.key_bytes);
    return ok;
}

static gboolean luks_amend(VdImage *img, VdOptions *opts, VdSecrets *secrets, GError **error)
{
    LuksState *s = img->priv;
    if (!need_cipher(img, s, error))
        return FALSE;
    g_autoptr(GError) local = NULL;
    if (!vd_luks_amend(&s->hdr, s->master_key, opts, "", secrets, img->amend_force, file_io,
                       img->file, &local)) {
        vd_set_error(error, img, local->code, "%s", local->message);
        return FALSE;
    }
    return TRUE;
}

/* In the order of qemu-img's "Formatting" line. */
static const VdCreateOption luks_create_options[] = {
    { "size", VD_OPTION_SIZE, NULL, "Virtual disk size" },
    { "key-secret", VD_OPTION_STRING, NULL,
      "ID of the secret that provides the keyslot passphrase" },
    { "cipher-alg", VD_OPTION_STRING, NULL, "Name of encryption cipher algorithm" },
    { "cipher-mode", VD_OPTION_STRING, NULL, "Name of encryption cipher mode" },
    { "ivgen-alg", VD_OPTION_STRING, NULL, "Name of IV generator algorithm" },
    { "ivgen-hash-alg", VD_OPTION_STRING, NULL, "Name of IV generator hash algorithm" },
    { "hash-alg", VD_OPTION_STRING, NULL, "Name of encryption hash algorithm" },
    { "iter-time", VD_OPTION_NUMBER, NULL, "Time to spend in PBKDF in milliseconds" },
    { "preallocation", VD_OPTION_STRING, NULL,
      "Preallocation mode (allowed values: off, falloc, full)", TRUE },
    { NULL },
};

const VdDriver vd_driver_luks = {
    .name = "luks",
    .create_options = luks_create_options,
    .probe = luks_probe,
    .open = luks_open,
    .close = luks_close,
    .create = luks_create,
    .block_status = luks_block_status,
    .read = luks_read,
    .write = luks_write,
    .flush = luks_flush,
    .resize = luks_resize,
    .get_info = luks_get_info,
    .amend = luks_amend,
};
