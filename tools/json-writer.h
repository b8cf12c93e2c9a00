/* vdisk: a small streaming JSON emitter.
 *
 * Output is pretty-printed the way qemu-img prints its JSON (four-space
 * indent, "key": value), so scripts and eyes used to qemu-img find the same
 * shape. Commas are placed by the writer: callers just emit keys and values
 * in order.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct JsonWriter JsonWriter;

JsonWriter *json_writer_new(void);
void json_writer_free(JsonWriter *w);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(JsonWriter, json_writer_free)

void json_begin_object(JsonWriter *w);
void json_end_object(JsonWriter *w);
void json_begin_array(JsonWriter *w);
void json_end_array(JsonWriter *w);

/* Inside an object: the key of the next value. */
void json_key(JsonWriter *w, const char *key);

void json_string(JsonWriter *w, const char *value);
void json_int(JsonWriter *w, gint64 value);
void json_uint(JsonWriter *w, guint64 value);
void json_double(JsonWriter *w, double value);
void json_bool(JsonWriter *w, gboolean value);
void json_null(JsonWriter *w);

/* Any GVariant: a{sv} and other dictionaries become objects (keys in the
 * order the variant holds them), arrays and tuples become arrays, variants
 * are unwrapped, numbers, booleans and strings map directly, and maybe
 * types become null when empty. */
void json_variant(JsonWriter *w, GVariant *value);

/* Convenience for key + value pairs. */
void json_member_string(JsonWriter *w, const char *key, const char *value);
void json_member_uint(JsonWriter *w, const char *key, guint64 value);
void json_member_int(JsonWriter *w, const char *key, gint64 value);
void json_member_bool(JsonWriter *w, const char *key, gboolean value);

/* The text so far; the writer keeps ownership. */
const char *json_writer_get(JsonWriter *w);

/* JSON string escaping of value (with quotes) appended to out. */
void json_append_escaped(GString *out, const char *value);

G_END_DECLS
