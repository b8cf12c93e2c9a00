/* Secrets for encrypted images: a store of named passphrases filled from
 * qemu's "--object secret,..." syntax, and the look-ups drivers use when
 * they open or create an encrypted image. Values live in secure memory
 * (vd_secure_alloc: never in a core dump, wiped on free), every copy made
 * on the way in is wiped, and none is ever put in a message. */
#include "crypto-cipher.h"
#include "vdisk-driver.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "qemu-syntax.h"

/* A secret file larger than this is no passphrase. */
#define MAX_SECRET_FILE QS_SECRET_FILE_MAX

typedef struct {
    guint8 *data;
    gsize len;
} Secret;

struct VdSecrets {
    GHashTable *by_id; /* char* -> Secret* */
    Secret *fallback;  /* --passphrase-file or a prompt */
};

static void secret_free(Secret *s)
{
    if (s == NULL)
        return;
    vd_secure_free(s->data, s->len + 1);
    g_free(s);
}

static Secret *secret_new(const void *data, gsize len)
{
    Secret *s = g_new0(Secret, 1);
    s->data = vd_secure_alloc(len + 1);
    memcpy(s->data, data, len);
    s->data[len] = '\0';
    s->len = len;
    return s;
}

VdSecrets *vd_secrets_new(void)
{
    VdSecrets *secrets = g_new0(VdSecrets, 1);
    secrets->by_id =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)secret_free);
    return secrets;
}

void vd_secrets_free(VdSecrets *secrets)
{
    if (secrets == NULL)
        return;
    g_hash_table_unref(secrets->by_id);
    secret_free(secrets->fallback);
    g_free(secrets);
}

void vd_secrets_add(VdSecrets *secrets, const char *id, const void *data, gsize len)
{
    g_hash_table_replace(secrets->by_id, g_strdup(id), secret_new(data, len));
}

void vd_secrets_set_default(VdSecrets *secrets, const void *data, gsize len)
{
    secret_free(secrets->fallback);
    secrets->fallback = secret_new(data, len);
}

gboolean vd_secrets_has_default(VdSecrets *secrets)
{
    return secrets != NULL && secrets->fallback != NULL;
}

const guint8 *vd_secrets_lookup(VdSecrets *secrets, const char *id, gsize *len)
{
    Secret *s = secrets != NULL && id != NULL ? g_hash_table_lookup(secrets->by_id, id) : NULL;
    if (s == NULL)
        return NULL;
    *len = s->len;
    return s->data;
}

/* The whole of path in secure memory (with a NUL after it), read without
 * the intermediate buffers g_file_get_contents would leave behind. */
static guint8 *read_secret_file(const char *path, gsize *len, GError **error)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int err = errno;
        g_set_error(error, VD_ERROR, err == ENOENT ? VD_ERROR_NOT_FOUND : VD_ERROR_IO,
                    "cannot read %s: %s", path, g_strerror(err));
        return NULL;
    }
    guint8 *buf = vd_secure_alloc(MAX_SECRET_FILE + 1);
    int err;
    gsize n = qs_read_bounded(fd, buf, MAX_SECRET_FILE + 1, &err);
    close(fd);
    if (err != 0 || n > MAX_SECRET_FILE) {
        vd_secure_free(buf, MAX_SECRET_FILE + 1);
        if (err != 0)
            g_set_error(error, VD_ERROR, VD_ERROR_IO, "cannot read %s: %s", path, g_strerror(err));
        else
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "%s is larger than %u bytes: not a passphrase", path, MAX_SECRET_FILE);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

gboolean vd_secrets_set_default_from_file(VdSecrets *secrets, const char *path, GError **error)
{
    gsize len = 0;
    guint8 *data = read_secret_file(path, &len, error);
    if (data == NULL)
        return FALSE;
    gsize n = len;
    if (n > 0 && data[n - 1] == '\n')
        n--;
    vd_secrets_set_default(secrets, data, n);
    vd_secure_free(data, MAX_SECRET_FILE + 1);
    return TRUE;
}

gboolean vd_secrets_add_object(VdSecrets *secrets, const char *spec, GError **error)
{
    g_autoptr(QsSecret) secret = qs_secret_parse(spec, error);
    if (secret == NULL) {
        vd_error_from_qs(error);
        return FALSE;
    }
    /* text: the secret as given (NUL-terminated), in secure memory. */
    guint8 *text = NULL;
    gsize text_size = 0, len = 0;
    if (secret->file != NULL) {
        text = read_secret_file(secret->file, &len, error);
        if (text == NULL) {
            g_prefix_error(error, "--object secret '%s': ", secret->id);
            return FALSE;
        }
        text_size = MAX_SECRET_FILE + 1;
    } else {
        len = strlen(secret->data);
        text_size = len + 1;
        text = vd_secure_alloc(text_size);
        memcpy(text, secret->data, len);
    }
    if (secret->base64) {
        /* Decoded in place, so no copy is left in memory GLib frees. */
        gsize out_len = 0;
        g_base64_decode_inplace(g_strstrip((char *)text), &out_len);
        explicit_bzero(text + out_len, text_size - out_len);
        len = out_len;
    }
    vd_secrets_add(secrets, secret->id, text, len);
    vd_secure_free(text, text_size);
    return TRUE;
}

gboolean vd_create_passphrase(const VdCreateParams *params, const char *key, const guint8 **pass,
                              gsize *len, GError **error)
{
    const char *id = vd_options_get(params->options, key);
    if (id != NULL) {
        *pass = vd_secrets_lookup(params->secrets, id, len);
        if (*pass == NULL) {
            g_set_error(error, VD_ERROR, VD_ERROR_NOT_FOUND,
                        "%s names the secret '%s', which was not given (--object secret,id=%s,"
                        "file=PATH)",
                        key, id, id);
            return FALSE;
        }
        /* qemu takes a LUKS passphrase as UTF-8 text: an image made with
         * other bytes would be one qemu cannot open. */
        if (!g_utf8_validate((const char *)*pass, (gssize)*len, NULL)) {
            vd_set_file_error(error, params->path, VD_ERROR_INVALID_ARGUMENT,
                              "Data from secret %s is not valid UTF-8", id);
            return FALSE;
        }
        return TRUE;
    }
    if (params->secrets != NULL && params->secrets->fallback != NULL) {
        *pass = params->secrets->fallback->data;
        *len = params->secrets->fallback->len;
        if (!g_utf8_validate((const char *)*pass, (gssize)*len, NULL)) {
            vd_set_file_error(error, params->path, VD_ERROR_INVALID_ARGUMENT,
                              "the passphrase is not valid UTF-8, which qemu takes it as");
            return FALSE;
        }
        return TRUE;
    }
    g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                "an encrypted image needs a passphrase: give %s=ID with --object "
                "secret,id=ID,file=PATH, or --passphrase-file",
                key);
    return FALSE;
}

gboolean vd_image_passphrase(VdImage *img, const char *key, const guint8 **pass, gsize *len,
                             GError **error)
{
    /* qemu names it per driver; accept either spelling. */
    const char *id = vd_options_get(img->open_options, key);
    if (id == NULL)
        id =
            vd_options_get(img->open_options,
                           g_str_has_prefix(key, "encrypt.") ? "key-secret" : "encrypt.key-secret");
    *pass = NULL;
    *len = 0;
    if (id != NULL) {
        *pass = vd_secrets_lookup(img->secrets, id, len);
        if (*pass == NULL) {
            vd_set_error(error, img, VD_ERROR_NOT_FOUND,
                         "the key secret '%s' was not given (--object secret,id=%s,file=PATH)", id,
                         id);
            return FALSE;
        }
        return TRUE;
    }
    if (img->secrets != NULL && img->secrets->fallback != NULL) {
        *pass = img->secrets->fallback->data;
        *len = img->secrets->fallback->len;
    }
    return TRUE;
}
