#include "shim-secrets.h"

#include <string.h>

#include "shim-args.h"

/* The bytes a definition stands for, decoded from its format. */
static GBytes *secret_bytes(const char *spec, const char *text, gsize len, const char *format,
                            GError **error)
{
    if (format == NULL || g_str_equal(format, "raw"))
        return g_bytes_new(text, len);
    if (!g_str_equal(format, "base64")) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--object %s: format must be raw or base64, not '%s'", spec, format);
        return NULL;
    }
    g_autofree char *copy = g_strndup(text, len);
    gsize n;
    guchar *decoded = g_base64_decode(g_strstrip(copy), &n);
    return g_bytes_new_take(decoded, n);
}

/* One definition, read and decoded; the id is returned in *id. */
static GBytes *read_secret(const char *spec, char **id, GError **error)
{
    g_autoptr(GPtrArray) parsed = shim_options_new();
    if (!shim_parse_option_string(spec, parsed, error)) {
        g_prefix_error(error, "--object %s: ", spec);
        return NULL;
    }
    const char *type = shim_option_get(parsed, "qom-type");
    gboolean typed =
        (type != NULL && g_str_equal(type, "secret")) ||
        (parsed->len > 0 && g_str_equal(((ShimOption *)parsed->pdata[0])->key, "secret"));
    const char *file = shim_option_get(parsed, "file");
    const char *data = shim_option_get(parsed, "data");
    *id = g_strdup(shim_option_get(parsed, "id"));
    if (!typed || *id == NULL || (file == NULL) == (data == NULL)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--object %s: a secret is \"secret,id=ID,file=PATH\" or "
                    "\"secret,id=ID,data=TEXT\"",
                    spec);
        return NULL;
    }
    if (data != NULL)
        return secret_bytes(spec, data, strlen(data), shim_option_get(parsed, "format"), error);
    g_autofree char *contents = NULL;
    gsize len;
    if (!g_file_get_contents(file, &contents, &len, error)) {
        g_prefix_error(error, "--object %s: ", spec);
        return NULL;
    }
    GBytes *bytes = secret_bytes(spec, contents, len, shim_option_get(parsed, "format"), error);
    explicit_bzero(contents, len);
    return bytes;
}

GVariant *shim_secrets_variant(GPtrArray *specs, GError **error)
{
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE("a{say}"));
    for (guint i = 0; specs != NULL && i < specs->len; i++) {
        g_autofree char *id = NULL;
        g_autoptr(GBytes) bytes = read_secret(specs->pdata[i], &id, error);
        if (bytes == NULL) {
            g_variant_builder_clear(&b);
            return NULL;
        }
        gsize len;
        const void *data = g_bytes_get_data(bytes, &len);
        g_variant_builder_add(&b, "{s@ay}", id,
                              g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, data, len, 1));
    }
    return g_variant_builder_end(&b);
}
