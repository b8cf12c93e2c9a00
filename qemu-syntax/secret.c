/* qemu's secret objects ("--object secret,id=ID,file=PATH"), and the
 * secrets option vdiskd's methods take, made of them. A secret's value
 * never goes into a message, and every copy of it made here is wiped. */
#include "qemu-syntax.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static void wipe(char *s)
{
    if (s != NULL)
        explicit_bzero(s, strlen(s));
}

/* An option list whose values may hold a secret: wiped, then freed. */
static void options_wipe_free(GPtrArray *options)
{
    for (guint i = 0; i < options->len; i++)
        wipe(((QsOption *)options->pdata[i])->value);
    g_ptr_array_unref(options);
}
typedef GPtrArray WipedOptions;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(WipedOptions, options_wipe_free)

void qs_secret_free(QsSecret *secret)
{
    if (secret == NULL)
        return;
    g_free(secret->id);
    g_free(secret->file);
    wipe(secret->data);
    g_free(secret->data);
    g_free(secret);
}

static gboolean is_property(const char *key)
{
    static const char *const known[] = { "qom-type", "id", "file", "data", "format" };
    for (guint i = 0; i < G_N_ELEMENTS(known); i++)
        if (g_str_equal(key, known[i]))
            return TRUE;
    return FALSE;
}

QsSecret *qs_secret_parse(const char *spec, GError **error)
{
    g_autoptr(WipedOptions) list = qs_options_new();
    if (!qs_options_parse(spec, list, NULL)) {
        /* qs_options_parse's message quotes the text, data= and all. */
        g_set_error(error, QS_ERROR, QS_ERROR_INVALID,
                    "--object: a definition is \"secret,id=ID,file=PATH\" (an option is empty "
                    "or has no name)");
        return NULL;
    }
    g_autoptr(QsSecret) secret = g_new0(QsSecret, 1);
    const char *format = NULL;
    for (guint i = 0; i < list->len; i++) {
        QsOption *o = list->pdata[i];
        if (i == 0 && !is_property(o->key)) {
            /* the object's type, "secret" */
            if (!g_str_equal(o->key, "secret")) {
                g_set_error(error, QS_ERROR, QS_ERROR_UNSUPPORTED,
                            "--object %s: only secret objects are supported", o->key);
                return NULL;
            }
        } else if (g_str_equal(o->key, "qom-type")) {
            if (!g_str_equal(o->value, "secret")) {
                g_set_error(error, QS_ERROR, QS_ERROR_UNSUPPORTED,
                            "--object %s: only secret objects are supported", o->value);
                return NULL;
            }
        } else if (g_str_equal(o->key, "id")) {
            g_free(secret->id);
            secret->id = g_strdup(o->value);
        } else if (g_str_equal(o->key, "file")) {
            g_free(secret->file);
            secret->file = g_strdup(o->value);
        } else if (g_str_equal(o->key, "data")) {
            wipe(secret->data);
            g_free(secret->data);
            secret->data = g_strdup(o->value);
        } else if (g_str_equal(o->key, "format")) {
            format = o->value;
        } else {
            g_set_error(error, QS_ERROR, QS_ERROR_INVALID,
                        "--object secret: unknown property '%s' (known: id, file, data, format)",
                        o->key);
            return NULL;
        }
    }
    if (secret->id == NULL || secret->id[0] == '\0') {
        g_set_error(error, QS_ERROR, QS_ERROR_INVALID, "--object secret: id= is missing");
        return NULL;
    }
    if ((secret->file != NULL) == (secret->data != NULL)) {
        g_set_error(error, QS_ERROR, QS_ERROR_INVALID,
                    "--object secret '%s': give exactly one of file= and data=", secret->id);
        return NULL;
    }
    secret->base64 = format != NULL && g_str_equal(format, "base64");
    if (format != NULL && !secret->base64 && !g_str_equal(format, "raw")) {
        g_set_error(error, QS_ERROR, QS_ERROR_INVALID,
                    "--object secret '%s': format must be raw or base64, not '%s'", secret->id,
                    format);
        return NULL;
    }
    return g_steal_pointer(&secret);
}

gsize qs_read_bounded(int fd, void *buf, gsize cap, int *err)
{
    gsize n = 0;

    *err = 0;
    while (n < cap) {
        ssize_t r = read(fd, (char *)buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            *err = errno;
        if (r <= 0)
            break;
        n += (gsize)r;
    }
    return n;
}

/* The whole of path, at most QS_SECRET_FILE_MAX bytes (a wrong file=, say
 * /dev/zero, must not fill memory), with a NUL after it. */
static char *read_file(const QsSecret *secret, gsize *len, GError **error)
{
    int fd = open(secret->file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int err = errno;
        g_set_error(error, QS_ERROR, err == ENOENT ? QS_ERROR_NOT_FOUND : QS_ERROR_IO,
                    "--object secret '%s': cannot read file=%s: %s", secret->id, secret->file,
                    g_strerror(err));
        return NULL;
    }
    gsize size = QS_SECRET_FILE_MAX + 1;
    char *buf = g_malloc(size + 1);
    int err;
    gsize n = qs_read_bounded(fd, buf, size, &err);
    close(fd);
    if (err != 0 || n > QS_SECRET_FILE_MAX) {
        explicit_bzero(buf, n);
        g_free(buf);
        if (err != 0)
            g_set_error(error, QS_ERROR, QS_ERROR_IO,
                        "--object secret '%s': cannot read file=%s: %s", secret->id, secret->file,
                        g_strerror(err));
        else
            g_set_error(error, QS_ERROR, QS_ERROR_INVALID,
                        "--object secret '%s': file=%s is larger than %u bytes: not a passphrase",
                        secret->id, secret->file, QS_SECRET_FILE_MAX);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* The bytes secret stands for: its file's or data's, decoded. */
static GBytes *secret_value(const QsSecret *secret, GError **error)
{
    char *text = NULL;
    gsize len = 0;
    if (secret->file != NULL) {
        if ((text = read_file(secret, &len, error)) == NULL)
            return NULL;
    } else {
        text = g_strdup(secret->data);
        len = strlen(text);
    }
    gsize size = len; /* what to wipe: the text before decoding */
    if (secret->base64) {
        /* Decoded in place, so no other copy is left behind. */
        g_base64_decode_inplace(g_strstrip(text), &len);
    }
    GBytes *bytes = g_bytes_new(text, len);
    explicit_bzero(text, size);
    g_free(text);
    return bytes;
}

GVariant *qs_secrets_variant(GPtrArray *specs, GError **error)
{
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE("a{say}"));
    for (guint i = 0; specs != NULL && i < specs->len; i++) {
        g_autoptr(QsSecret) secret = qs_secret_parse(specs->pdata[i], error);
        g_autoptr(GBytes) bytes = secret != NULL ? secret_value(secret, error) : NULL;
        if (bytes == NULL) {
            g_variant_builder_clear(&b);
            return NULL;
        }
        gsize len;
        const void *data = g_bytes_get_data(bytes, &len);
        g_variant_builder_add(&b, "{s@ay}", secret->id,
                              g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, data, len, 1));
        explicit_bzero((void *)data, len);
    }
    return g_variant_builder_end(&b);
}
