/* Create options in qemu-img's -o syntax, sizes with suffixes (both read
 * by qemu-syntax/, as every front end reads them), and the typed look-ups
 * drivers use. */
#include "vdisk-driver.h"

#include <stdlib.h>

#include "qemu-syntax.h"

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

/* A QS_ERROR as libvdisk reports it: the same message, in VD_ERROR. */
void vd_error_from_qs(GError **error)
{
    if (error == NULL || *error == NULL || (*error)->domain != QS_ERROR)
        return;
    (*error)->domain = VD_ERROR;
    switch ((*error)->code) {
    case QS_ERROR_UNSUPPORTED:
        (*error)->code = VD_ERROR_NOT_SUPPORTED;
        break;
    case QS_ERROR_NOT_FOUND:
        (*error)->code = VD_ERROR_NOT_FOUND;
        break;
    case QS_ERROR_IO:
        (*error)->code = VD_ERROR_IO;
        break;
    default:
        (*error)->code = VD_ERROR_INVALID_ARGUMENT;
    }
}

gboolean vd_options_parse(VdOptions *opts, const char *text, GError **error)
{
    g_autoptr(GPtrArray) list = qs_options_new();
    if (!qs_options_parse(text, list, error)) {
        vd_error_from_qs(error);
        return FALSE;
    }
    for (guint i = 0; i < list->len; i++) {
        QsOption *o = list->pdata[i];
        vd_options_set(opts, o->key, o->value);
    }
    return TRUE;
}

gboolean vd_parse_size(const char *text, guint64 *out, GError **error)
{
    if (qs_parse_size(text, out, error))
        return TRUE;
    vd_error_from_qs(error);
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
