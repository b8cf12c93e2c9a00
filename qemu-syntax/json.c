/* qemu's "json:{...}" file names (see qemu-syntax.h).
 *
 * qemu-img takes an image's open options as a JSON object in place of its
 * name ("json:{"driver": "qcow2", "file": {"driver": "file", "filename":
 * "d.qcow2"}}"), the same options --image-opts takes as key=value. Nested
 * objects become dotted keys, list items keys numbered from 0 ("a": [{"b":
 * 1}] is a.0.b=1), as qemu flattens them; strings (in double or single
 * quotes, as qemu's parser takes them), numbers and true/false become
 * their text.
 */
#include <string.h>

#include "qemu-syntax.h"

typedef struct {
    const char *p;
    GString *out; /* key=value,... with ",," for a comma in a value */
    GError **error;
    guint depth; /* objects and lists open around p */
} JsonScan;

/* A json: name can come from inside an image (a backing file name): a
 * bound on nesting keeps its parse off the end of the stack. */
#define MAX_DEPTH 32

static gboolean fail(JsonScan *s, const char *what)
{
    g_set_error(s->error, QS_ERROR, QS_ERROR_INVALID,
                "Could not parse the JSON file name: %s at '%.20s'", what, s->p);
    return FALSE;
}

static void skip_space(JsonScan *s)
{
    while (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')
        s->p++;
}

static char *scan_string(JsonScan *s)
{
    char quote = *s->p++;
    GString *text = g_string_new(NULL);

    while (*s->p != '\0' && *s->p != quote) {
        char c = *s->p++;
        if (c == '\\' && *s->p != '\0') {
            c = *s->p++;
            switch (c) {
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'r':
                c = '\r';
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            default:
                break; /* \" \' \\ \/ as themselves; \u is not used for file names */
            }
        }
        g_string_append_c(text, c);
    }
    if (*s->p != quote) {
        g_string_free(text, TRUE);
        fail(s, "an unterminated string");
        return NULL;
    }
    s->p++;
    return g_string_free(text, FALSE);
}

static gboolean scan_object(JsonScan *s, const char *prefix);
static gboolean scan_value(JsonScan *s, const char *key);

static gboolean scan_list(JsonScan *s, const char *prefix)
{
    s->p++; /* '[' */
    skip_space(s);
    if (*s->p == ']') {
        s->p++;
        return TRUE;
    }
    for (guint index = 0;; index++) {
        g_autofree char *key = g_strdup_printf("%s.%u", prefix, index);
        if (!scan_value(s, key))
            return FALSE;
        skip_space(s);
        if (*s->p == ',') {
            s->p++;
            continue;
        }
        if (*s->p == ']') {
            s->p++;
            return TRUE;
        }
        return fail(s, "',' or ']' was expected");
    }
}

static gboolean scan_value(JsonScan *s, const char *key)
{
    g_autofree char *value = NULL;

    skip_space(s);
    if ((*s->p == '{' || *s->p == '[') && s->depth >= MAX_DEPTH)
        return fail(s, "objects and lists nested too deep");
    if (*s->p == '{') {
        s->depth++;
        gboolean ok = scan_object(s, key);
        s->depth--;
        return ok;
    }
    if (*s->p == '"' || *s->p == '\'') {
        value = scan_string(s);
        if (value == NULL)
            return FALSE;
    } else if (*s->p == '[') {
        s->depth++;
        gboolean ok = scan_list(s, key);
        s->depth--;
        return ok;
    } else {
        const char *start = s->p;
        while (g_ascii_isalnum(*s->p) || *s->p == '-' || *s->p == '+' || *s->p == '.')
            s->p++;
        if (s->p == start)
            return fail(s, "a value was expected");
        value = g_strndup(start, (gsize)(s->p - start));
        if (g_str_equal(value, "true") || g_str_equal(value, "false")) {
            char *onoff = g_strdup(value[0] == 't' ? "on" : "off");
            g_free(value);
            value = onoff;
        }
    }
    if (s->out->len > 0)
        g_string_append_c(s->out, ',');
    g_string_append_printf(s->out, "%s=", key);
    for (const char *c = value; *c != '\0'; c++) {
        if (*c == ',')
            g_string_append_c(s->out, ',');
        g_string_append_c(s->out, *c);
    }
    return TRUE;
}

static gboolean scan_object(JsonScan *s, const char *prefix)
{
    s->p++; /* '{' */
    skip_space(s);
    if (*s->p == '}') {
        s->p++;
        return TRUE;
    }
    for (;;) {
        skip_space(s);
        if (*s->p != '"' && *s->p != '\'')
            return fail(s, "a key in quotes was expected");
        g_autofree char *name = scan_string(s);
        if (name == NULL)
            return FALSE;
        g_autofree char *key =
            *prefix != '\0' ? g_strdup_printf("%s.%s", prefix, name) : g_strdup(name);
        skip_space(s);
        if (*s->p++ != ':')
            return fail(s, "':' was expected");
        if (!scan_value(s, key))
            return FALSE;
        skip_space(s);
        if (*s->p == ',') {
            s->p++;
            continue;
        }
        if (*s->p == '}') {
            s->p++;
            return TRUE;
        }
        return fail(s, "',' or '}' was expected");
    }
}

char *qs_json_filename_options(const char *name, GError **error)
{
    g_autoptr(GString) out = g_string_new(NULL);
    JsonScan s = { name + strlen("json:"), out, error };

    skip_space(&s);
    if (*s.p != '{') {
        fail(&s, "an object was expected");
        return NULL;
    }
    if (!scan_object(&s, ""))
        return NULL;
    skip_space(&s);
    if (*s.p != '\0') {
        fail(&s, "text after the object");
        return NULL;
    }
    return g_string_free(g_steal_pointer(&out), FALSE);
}
