#include "options.h"

#include <string.h>

#include "errors.h"
#include "worker-protocol.h"

static char *value_to_string(GVariant *value)
{
    if (g_variant_is_of_type(value, G_VARIANT_TYPE_STRING))
        return g_variant_dup_string(value, NULL);
    if (g_variant_is_of_type(value, G_VARIANT_TYPE_BOOLEAN))
        return g_strdup(g_variant_get_boolean(value) ? "on" : "off");
    if (g_variant_is_of_type(value, G_VARIANT_TYPE_UINT64))
        return g_strdup_printf("%" G_GUINT64_FORMAT, g_variant_get_uint64(value));
    if (g_variant_is_of_type(value, G_VARIANT_TYPE_INT64))
        return g_strdup_printf("%" G_GINT64_FORMAT, g_variant_get_int64(value));
    if (g_variant_is_of_type(value, G_VARIANT_TYPE_UINT32))
        return g_strdup_printf("%u", g_variant_get_uint32(value));
    if (g_variant_is_of_type(value, G_VARIANT_TYPE_INT32))
        return g_strdup_printf("%d", g_variant_get_int32(value));
    return NULL;
}

static char *engine_key(const char *key)
{
    if (strcmp(key, "backing") == 0 || strcmp(key, "backing-file") == 0)
        return g_strdup("backing_file");
    if (strcmp(key, "backing-format") == 0)
        return g_strdup("backing_fmt");
    char *k = g_strdup(key);
    g_strdelimit(k, "-", '_');
    return k;
}

/* vdisk and qemu-img still make legacy AES images when asked on the
 * command line, with a warning there; the daemon has no one to warn, and
 * its callers (desktops, libvirt) never need the weak format for a new
 * volume, so it makes LUKS only. Old AES volumes are still read. */
static gboolean refuse_legacy_aes(VdOptions *opts, GError **error)
{
    const char *format = vd_options_get(opts, "encrypt.format");
    const char *legacy = vd_options_get(opts, "encryption");
    gboolean on = legacy != NULL && (g_ascii_strcasecmp(legacy, "on") == 0 ||
                                     g_ascii_strcasecmp(legacy, "true") == 0);
    if ((format != NULL && g_ascii_strcasecmp(format, "aes") == 0) || on) {
        g_set_error_literal(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                            "legacy AES encryption is weak and vdiskd makes no new volume with "
                            "it: use encrypt.format=luks (old AES volumes are still read)");
        return FALSE;
    }
    return TRUE;
}

VdOptions *vdd_options_to_create(GVariant *options, const char *format,
                                 const char *const *daemon_keys, GError **error)
{
    g_autoptr(VdOptions) opts = vd_options_new();
    const char *const *allowed = format ? vd_format_create_options(format) : NULL;
    GVariantIter it;
    const char *key;
    GVariant *value;
    g_variant_iter_init(&it, options);
    while (g_variant_iter_next(&it, "{&sv}", &key, &value)) {
        g_autoptr(GVariant) v = value;
        /* "detach" is every job's (job.c). */
        if ((daemon_keys != NULL && g_strv_contains(daemon_keys, key)) ||
            strcmp(key, "detach") == 0)
            continue;
        g_autofree char *text = value_to_string(v);
        if (text == NULL) {
            g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                        "option '%s' has type %s; a string, boolean or integer is expected", key,
                        g_variant_get_type_string(v));
            return NULL;
        }
        /* Engine names with dashes of their own (encrypt.key-secret) pass
         * as they are. */
        g_autofree char *ekey =
            allowed != NULL && g_strv_contains(allowed, key) ? g_strdup(key) : engine_key(key);
        if (format != NULL && (allowed == NULL || !g_strv_contains(allowed, ekey))) {
            g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                        "the %s format has no option '%s'", format, key);
            return NULL;
        }
        vd_options_set(opts, ekey, text);
    }
    if (!refuse_legacy_aes(opts, error))
        return NULL;
    return g_steal_pointer(&opts);
}

gboolean vdd_options_lookup_string(GVariant *options, const char *key, const char **out,
                                   GError **error)
{
    *out = NULL;
    g_autoptr(GVariant) v = g_variant_lookup_value(options, key, NULL);
    if (v == NULL)
        return TRUE;
    if (!g_variant_is_of_type(v, G_VARIANT_TYPE_STRING)) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT, "option '%s' must be a string",
                    key);
        return FALSE;
    }
    /* The string lives as long as options does. */
    g_variant_lookup(options, key, "&s", out);
    return TRUE;
}

gboolean vdd_options_lookup_bool(GVariant *options, const char *key, gboolean dflt, gboolean *out,
                                 GError **error)
{
    *out = dflt;
    g_autoptr(GVariant) v = g_variant_lookup_value(options, key, NULL);
    if (v == NULL)
        return TRUE;
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_BOOLEAN)) {
        *out = g_variant_get_boolean(v);
        return TRUE;
    }
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_STRING)) {
        const char *s = g_variant_get_string(v, NULL);
        if (g_ascii_strcasecmp(s, "true") == 0 || g_ascii_strcasecmp(s, "on") == 0 ||
            strcmp(s, "1") == 0) {
            *out = TRUE;
            return TRUE;
        }
        if (g_ascii_strcasecmp(s, "false") == 0 || g_ascii_strcasecmp(s, "off") == 0 ||
            strcmp(s, "0") == 0) {
            *out = FALSE;
            return TRUE;
        }
    }
    g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT, "option '%s' must be a boolean", key);
    return FALSE;
}

gboolean vdd_check_format(const char *format, GError **error)
{
    if (!vd_format_known(format)) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_UNSUPPORTED_FORMAT, "unknown format '%s'", format);
        return FALSE;
    }
    return TRUE;
}

gboolean vdd_options_lookup_secrets(GVariant *options, VdSecrets **out, GError **error)
{
    *out = NULL;
    g_autoptr(GVariant) v = g_variant_lookup_value(options, "secrets", NULL);
    if (v == NULL)
        return TRUE;
    if (!g_variant_is_of_type(v, G_VARIANT_TYPE("a{say}"))) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "option 'secrets' must be a{say}, not %s", g_variant_get_type_string(v));
        return FALSE;
    }
    /* An empty a{say} still means "secrets were given": an empty store. */
    *out = vdd_wire_secrets_from_variant(v);
    if (*out == NULL)
        *out = vd_secrets_new();
    return TRUE;
}

gboolean vdd_options_to_image_key(GVariant *options, const char *key_option, VddImageKey *key,
                                  GError **error)
{
    memset(key, 0, sizeof *key);
    const char *id;
    if (!vdd_options_lookup_string(options, key_option, &id, error) ||
        !vdd_options_lookup_secrets(options, &key->secrets, error))
        return FALSE;
    if (id == NULL)
        return TRUE;
    gsize len;
    if (vd_secrets_lookup(key->secrets, id, &len) == NULL) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "option '%s' names the secret '%s', which 'secrets' does not hold", key_option,
                    id);
        vdd_image_key_clear(key);
        return FALSE;
    }
    /* The engine takes either spelling for every encrypted format. */
    key->open = vd_options_new();
    vd_options_set(key->open, "encrypt.key-secret", id);
    return TRUE;
}

void vdd_image_key_clear(VddImageKey *key)
{
    g_clear_pointer(&key->open, vd_options_free);
    g_clear_pointer(&key->secrets, vd_secrets_free);
}
