/* qemu's option lists and the --image-opts strings made of them. */
#include "qemu-syntax.h"

#include <string.h>

G_DEFINE_QUARK(qs - error - quark, qs_error)

static void option_free(QsOption *o)
{
    g_free(o->key);
    g_free(o->value);
    g_free(o);
}

GPtrArray *qs_options_new(void)
{
    return g_ptr_array_new_with_free_func((GDestroyNotify)option_free);
}

/* One element of text from *cursor to the next single comma (",," is a
 * comma inside it); *cursor moves past that comma. */
static char *next_element(const char **cursor)
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

gboolean qs_options_parse(const char *text, GPtrArray *out, GError **error)
{
    const char *cursor = text;
    while (*cursor != '\0') {
        g_autofree char *element = next_element(&cursor);
        if (element[0] == '\0') {
            g_set_error(error, QS_ERROR, QS_ERROR_INVALID, "option list '%s' has an empty option",
                        text);
            return FALSE;
        }
        char *eq = strchr(element, '=');
        if (eq == element) {
            g_set_error(error, QS_ERROR, QS_ERROR_INVALID, "option '%s' has no name", element);
            return FALSE;
        }
        QsOption *o = g_new0(QsOption, 1);
        o->key = eq != NULL ? g_strndup(element, eq - element) : g_strdup(element);
        o->value = g_strdup(eq != NULL ? eq + 1 : "on");
        g_ptr_array_add(out, o);
    }
    return TRUE;
}

const char *qs_options_get(GPtrArray *options, const char *key)
{
    for (guint i = options != NULL ? options->len : 0; i > 0; i--) {
        QsOption *o = options->pdata[i - 1];
        if (g_str_equal(o->key, key))
            return o->value;
    }
    return NULL;
}

void qs_image_opts_free(QsImageOpts *opts)
{
    if (opts == NULL)
        return;
    g_free(opts->filename);
    g_free(opts->driver);
    g_free(opts->file_driver);
    g_free(opts->key_secret);
    g_clear_pointer(&opts->options, g_ptr_array_unref);
    g_free(opts);
}

QsImageOpts *qs_image_opts_parse(const char *text, GError **error)
{
    g_autoptr(QsImageOpts) opts = g_new0(QsImageOpts, 1);
    opts->options = qs_options_new();
    if (!qs_options_parse(text, opts->options, error))
        return NULL;
    const char *file = qs_options_get(opts->options, "file.filename");
    if (file == NULL)
        file = qs_options_get(opts->options, "filename");
    if (file == NULL) {
        g_set_error(error, QS_ERROR, QS_ERROR_NO_FILE, "'%s' names no file (file.filename=PATH)",
                    text);
        return NULL;
    }
    const char *key = qs_options_get(opts->options, "encrypt.key-secret");
    if (key == NULL)
        key = qs_options_get(opts->options, "key-secret");
    opts->filename = g_strdup(file);
    opts->driver = g_strdup(qs_options_get(opts->options, "driver"));
    opts->file_driver = g_strdup(qs_options_get(opts->options, "file.driver"));
    opts->key_secret = g_strdup(key);
    return g_steal_pointer(&opts);
}
