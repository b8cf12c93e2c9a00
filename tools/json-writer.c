/* vdisk: a small streaming JSON emitter (see json-writer.h). */
#include "json-writer.h"

#include <math.h>

typedef struct {
    gboolean is_object;
    guint count; /* members or elements written so far */
} JsonLevel;

struct JsonWriter {
    GString *out;
    GArray *stack; /* of JsonLevel */
    gboolean after_key;
};

JsonWriter *json_writer_new(void)
{
    JsonWriter *w = g_new0(JsonWriter, 1);

    w->out = g_string_new(NULL);
    w->stack = g_array_new(FALSE, TRUE, sizeof(JsonLevel));
    return w;
}

void json_writer_free(JsonWriter *w)
{
    if (w == NULL)
        return;
    g_string_free(w->out, TRUE);
    g_array_unref(w->stack);
    g_free(w);
}

const char *json_writer_get(JsonWriter *w) { return w->out->str; }

static JsonLevel *top(JsonWriter *w)
{
    return w->stack->len == 0 ? NULL : &g_array_index(w->stack, JsonLevel, w->stack->len - 1);
}

static void newline_indent(JsonWriter *w, guint depth)
{
    g_string_append_c(w->out, '\n');
    for (guint i = 0; i < depth; i++)
        g_string_append(w->out, "    ");
}

/* Separator and indentation before an array element or a member's key. */
static void next_item(JsonWriter *w)
{
    JsonLevel *level = top(w);

    if (level == NULL)
        return;
    if (level->count++ > 0)
        g_string_append_c(w->out, ',');
    newline_indent(w, w->stack->len);
}

static void before_value(JsonWriter *w)
{
    JsonLevel *level = top(w);

    if (w->after_key) {
        w->after_key = FALSE;
        return;
    }
    g_warn_if_fail(level == NULL || !level->is_object);
    next_item(w);
}

void json_append_escaped(GString *out, const char *value)
{
    g_string_append_c(out, '"');
    for (const char *p = value; *p != '\0'; p++) {
        guchar c = (guchar)*p;

        switch (c) {
        case '"':
            g_string_append(out, "\\\"");
            break;
        case '\\':
            g_string_append(out, "\\\\");
            break;
        case '\n':
            g_string_append(out, "\\n");
            break;
        case '\r':
            g_string_append(out, "\\r");
            break;
        case '\t':
            g_string_append(out, "\\t");
            break;
        default:
            if (c < 0x20)
                g_string_append_printf(out, "\\u%04x", c);
            else
                g_string_append_c(out, (char)c);
        }
    }
    g_string_append_c(out, '"');
}

static void begin(JsonWriter *w, gboolean is_object)
{
    JsonLevel level = { .is_object = is_object };

    before_value(w);
    g_string_append_c(w->out, is_object ? '{' : '[');
    g_array_append_val(w->stack, level);
}

static void end(JsonWriter *w, gboolean is_object)
{
    JsonLevel *level = top(w);

    g_return_if_fail(level != NULL && level->is_object == is_object);
    g_array_set_size(w->stack, w->stack->len - 1);
    /* Also an empty one closes on a line of its own: "[\n    ]", as qemu-img
     * prints it, so that its output and vdisk's compare equal. */
    newline_indent(w, w->stack->len);
    g_string_append_c(w->out, is_object ? '}' : ']');
}

void json_begin_object(JsonWriter *w) { begin(w, TRUE); }

void json_end_object(JsonWriter *w) { end(w, TRUE); }

void json_begin_array(JsonWriter *w) { begin(w, FALSE); }

void json_end_array(JsonWriter *w) { end(w, FALSE); }

void json_key(JsonWriter *w, const char *key)
{
    JsonLevel *level = top(w);

    g_return_if_fail(level != NULL && level->is_object && !w->after_key);
    next_item(w);
    json_append_escaped(w->out, key);
    g_string_append(w->out, ": ");
    w->after_key = TRUE;
}

void json_string(JsonWriter *w, const char *value)
{
    before_value(w);
    if (value == NULL)
        g_string_append(w->out, "null");
    else
        json_append_escaped(w->out, value);
}

void json_int(JsonWriter *w, gint64 value)
{
    before_value(w);
    g_string_append_printf(w->out, "%" G_GINT64_FORMAT, value);
}

void json_uint(JsonWriter *w, guint64 value)
{
    before_value(w);
    g_string_append_printf(w->out, "%" G_GUINT64_FORMAT, value);
}

void json_double(JsonWriter *w, double value)
{
    char buf[G_ASCII_DTOSTR_BUF_SIZE];

    before_value(w);
    /* JSON has no NaN or infinity. */
    if (!isfinite(value))
        g_string_append(w->out, "null");
    else
        g_string_append(w->out, g_ascii_dtostr(buf, sizeof(buf), value));
}

void json_bool(JsonWriter *w, gboolean value)
{
    before_value(w);
    g_string_append(w->out, value ? "true" : "false");
}

void json_null(JsonWriter *w)
{
    before_value(w);
    g_string_append(w->out, "null");
}

void json_member_string(JsonWriter *w, const char *key, const char *value)
{
    json_key(w, key);
    json_string(w, value);
}

void json_member_uint(JsonWriter *w, const char *key, guint64 value)
{
    json_key(w, key);
    json_uint(w, value);
}

void json_member_int(JsonWriter *w, const char *key, gint64 value)
{
    json_key(w, key);
    json_int(w, value);
}

void json_member_bool(JsonWriter *w, const char *key, gboolean value)
{
    json_key(w, key);
    json_bool(w, value);
}

/* A dictionary key as a JSON member name: strings as they are, anything
 * else in GVariant text form. */
static void variant_key(JsonWriter *w, GVariant *key)
{
    if (g_variant_is_of_type(key, G_VARIANT_TYPE_STRING)) {
        json_key(w, g_variant_get_string(key, NULL));
    } else {
        g_autofree char *text = g_variant_print(key, FALSE);
        json_key(w, text);
    }
}

static void variant_dictionary(JsonWriter *w, GVariant *value)
{
    GVariantIter iter;
    GVariant *entry;

    json_begin_object(w);
    g_variant_iter_init(&iter, value);
    while ((entry = g_variant_iter_next_value(&iter)) != NULL) {
        g_autoptr(GVariant) key = g_variant_get_child_value(entry, 0);
        g_autoptr(GVariant) member = g_variant_get_child_value(entry, 1);

        variant_key(w, key);
        json_variant(w, member);
        g_variant_unref(entry);
    }
    json_end_object(w);
}

static void variant_sequence(JsonWriter *w, GVariant *value)
{
    gsize n = g_variant_n_children(value);

    json_begin_array(w);
    for (gsize i = 0; i < n; i++) {
        g_autoptr(GVariant) child = g_variant_get_child_value(value, i);
        json_variant(w, child);
    }
    json_end_array(w);
}

void json_variant(JsonWriter *w, GVariant *value)
{
    if (value == NULL) {
        json_null(w);
        return;
    }
    switch (g_variant_classify(value)) {
    case G_VARIANT_CLASS_BOOLEAN:
        json_bool(w, g_variant_get_boolean(value));
        break;
    case G_VARIANT_CLASS_BYTE:
        json_uint(w, g_variant_get_byte(value));
        break;
    case G_VARIANT_CLASS_INT16:
        json_int(w, g_variant_get_int16(value));
        break;
    case G_VARIANT_CLASS_UINT16:
        json_uint(w, g_variant_get_uint16(value));
        break;
    case G_VARIANT_CLASS_INT32:
        json_int(w, g_variant_get_int32(value));
        break;
    case G_VARIANT_CLASS_UINT32:
        json_uint(w, g_variant_get_uint32(value));
        break;
    case G_VARIANT_CLASS_INT64:
        json_int(w, g_variant_get_int64(value));
        break;
    case G_VARIANT_CLASS_UINT64:
        json_uint(w, g_variant_get_uint64(value));
        break;
    case G_VARIANT_CLASS_HANDLE:
        json_int(w, g_variant_get_handle(value));
        break;
    case G_VARIANT_CLASS_DOUBLE:
        json_double(w, g_variant_get_double(value));
        break;
    case G_VARIANT_CLASS_STRING:
    case G_VARIANT_CLASS_OBJECT_PATH:
    case G_VARIANT_CLASS_SIGNATURE:
        json_string(w, g_variant_get_string(value, NULL));
        break;
    case G_VARIANT_CLASS_VARIANT: {
        g_autoptr(GVariant) inner = g_variant_get_variant(value);
        json_variant(w, inner);
        break;
    }
    case G_VARIANT_CLASS_MAYBE: {
        g_autoptr(GVariant) inner = g_variant_get_maybe(value);
        json_variant(w, inner);
        break;
    }
    case G_VARIANT_CLASS_ARRAY:
        if (g_variant_type_is_dict_entry(g_variant_type_element(g_variant_get_type(value))))
            variant_dictionary(w, value);
        else
            variant_sequence(w, value);
        break;
    case G_VARIANT_CLASS_TUPLE:
    case G_VARIANT_CLASS_DICT_ENTRY:
        variant_sequence(w, value);
        break;
    }
}
