/* Create options in qemu-img's -o syntax, sizes with suffixes, and the
 * typed look-ups drivers use. */
#include "vdisk-driver.h"

#include <errno.h>
#include <stdlib.h>

struct VdOptions {
    GHashTable *values; /* char* key -> char* value */
};

VdOptions *vd_options_new(void)
{
    VdOptions *opts = g_new0(VdOptions, 1);
    opts->values = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    return opts;
}

void vd_options_free(VdOptions *opts)
{
    if (opts == NULL)
        return;
    g_hash_table_unref(opts->values);
    g_free(opts);
}

void vd_options_set(VdOptions *opts, const char *key, const char *value)
{
    g_hash_table_replace(opts->values, g_strdup(key), g_strdup(value));
}

const char *vd_options_get(VdOptions *opts, const char *key)
{
    return opts != NULL ? g_hash_table_lookup(opts->values, key) : NULL;
}

static gint compare_keys(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

GPtrArray *vd_options_keys(VdOptions *opts)
{
    GPtrArray *keys = g_ptr_array_new();
    GHashTableIter iter;
    gpointer key;
    g_hash_table_iter_init(&iter, opts->values);
    while (g_hash_table_iter_next(&iter, &key, NULL))
        g_ptr_array_add(keys, key);
    g_ptr_array_sort(keys, compare_keys);
    return keys;
}

char *vd_options_next_element(const char **cursor)
{
    GString *out = g_string_new(NULL);
    const char *p = *cursor;
    while (*p != '\0') {
        if (*p == ',') {
            if (p[1] == ',') {
                g_string_append_c(out, ',');
                p += 2;
                continue;
            }
            p++;
            break;
        }
        g_string_append_c(out, *p++);
    }
    *cursor = p;
    return g_string_free(out, FALSE);
}

gboolean vd_options_parse(VdOptions *opts, const char *text, GError **error)
{
    const char *cursor = text;
    while (*cursor != '\0') {
        g_autofree char *element = vd_options_next_element(&cursor);
        if (element[0] == '\0')
            continue;
        char *eq = strchr(element, '=');
        if (eq == element) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "option '%s' has no name",
                        element);
            return FALSE;
        }
        if (eq == NULL) {
            /* qemu-img accepts a bare flag name as "on". */
            vd_options_set(opts, element, "on");
            continue;
        }
        *eq = '\0';
        vd_options_set(opts, element, eq + 1);
    }
    return TRUE;
}

gboolean vd_parse_size(const char *text, guint64 *out, GError **error)
{
    static const char suffixes[] = "BKMGTPE";
    char *end = NULL;
    if (text == NULL || !g_ascii_isdigit(*text))
        goto invalid;
    errno = 0;
    guint64 whole = g_ascii_strtoull(text, &end, 10);
    if (errno != 0)
        goto invalid;
    /* A fraction ("1.5G") is kept as num/den so the result stays exact. */
    guint64 frac_num = 0, frac_den = 1;
    if (*end == '.') {
        for (end++; g_ascii_isdigit(*end); end++) {
            if (frac_den < G_GUINT64_CONSTANT(100000000000000)) {
                frac_num = frac_num * 10 + (guint64)(*end - '0');
                frac_den *= 10;
            }
        }
    }
    int shift = 0;
    if (*end != '\0') {
        const char *s = strchr(suffixes, g_ascii_toupper(*end));
        if (s == NULL || end[1] != '\0')
            goto invalid;
        shift = (int)(s - suffixes) * 10;
    }
    if (whole > (G_MAXUINT64 >> shift))
        goto invalid;
    guint64 bytes = whole << shift;
    if (frac_num != 0) {
        unsigned __int128 scaled = (unsigned __int128)frac_num << shift;
        if (scaled % frac_den != 0 || bytes + (guint64)(scaled / frac_den) < bytes)
            goto invalid; /* not a whole number of bytes, or too large */
        bytes += (guint64)(scaled / frac_den);
    }
    *out = bytes;
    return TRUE;
invalid:
    g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                "invalid size '%s': use a number of bytes with an optional suffix "
                "K, M, G, T, P or E (powers of 1024)",
                text != NULL ? text : "");
    return FALSE;
}

gboolean vd_option_bool(VdOptions *opts, const char *key, gboolean dflt, gboolean *out,
                        GError **error)
{
    const char *v = vd_options_get(opts, key);
    if (v == NULL) {
        *out = dflt;
        return TRUE;
    }
    if (g_str_equal(v, "on") || g_str_equal(v, "true") || g_str_equal(v, "yes") ||
        g_str_equal(v, "1")) {
        *out = TRUE;
        return TRUE;
    }
    if (g_str_equal(v, "off") || g_str_equal(v, "false") || g_str_equal(v, "no") ||
        g_str_equal(v, "0")) {
        *out = FALSE;
        return TRUE;
    }
    g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "option %s: '%s' is not on or off", key,
                v);
    return FALSE;
}

gboolean vd_option_size(VdOptions *opts, const char *key, guint64 dflt, guint64 *out,
                        GError **error)
{
    const char *v = vd_options_get(opts, key);
    if (v == NULL) {
        *out = dflt;
        return TRUE;
    }
    if (!vd_parse_size(v, out, error)) {
        g_prefix_error(error, "option %s: ", key);
        return FALSE;
    }
    return TRUE;
}

gboolean vd_option_choice(VdOptions *opts, const char *key, const char *const *choices, int dflt,
                          int *out, GError **error)
{
    const char *v = vd_options_get(opts, key);
    if (v == NULL) {
        *out = dflt;
        return TRUE;
    }
    for (int i = 0; choices[i] != NULL; i++) {
        if (g_str_equal(v, choices[i])) {
            *out = i;
            return TRUE;
        }
    }
    g_autofree char *list = g_strjoinv(", ", (char **)choices);
    g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "option %s: '%s' is not one of: %s",
                key, v, list);
    return FALSE;
}
