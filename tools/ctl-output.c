/* vdiskctl: messages, tables and JSON (see ctl.h). */
#include "ctl.h"

#include <stdarg.h>

#include "cli.h"
#include "json-writer.h"
#include "notify.h"

void ctl_error(const char *format, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, format);
    msg = g_strdup_vprintf(format, ap);
    va_end(ap);
    fprintf(stderr, "vdiskctl: %s\n", msg);
    ctl_notify_record(msg);
}

int ctl_fail(const GError *error)
{
    if (error == NULL)
        ctl_error("unknown error");
    else if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        ctl_error("cancelled");
    else
        ctl_error("%s", error->message);
    return CTL_EXIT_FAILURE;
}

void ctl_say(const Ctl *ctl, const char *format, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, format);
    msg = g_strdup_vprintf(format, ap);
    va_end(ap);
    ctl_notify_record(msg);
    if (ctl->quiet || ctl->json)
        return;
    printf("%s\n", msg);
}

/* ----- tables ----- */

struct CtlTable {
    GPtrArray *rows; /* of GStrv; the first is the header */
    guint columns;
};

static GStrv collect_cells(const char *first, va_list ap)
{
    g_autoptr(GStrvBuilder) cells = g_strv_builder_new();

    for (const char *cell = first; cell != NULL; cell = va_arg(ap, const char *))
        g_strv_builder_add(cells, cell);
    return g_strv_builder_end(cells);
}

CtlTable *ctl_table_new(const char *first_header, ...)
{
    CtlTable *table = g_new0(CtlTable, 1);
    va_list ap;
    GStrv header;

    va_start(ap, first_header);
    header = collect_cells(first_header, ap);
    va_end(ap);
    table->rows = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
    table->columns = g_strv_length(header);
    g_ptr_array_add(table->rows, header);
    return table;
}

void ctl_table_add_row(CtlTable *table, const char *first_cell, ...)
{
    va_list ap;
    GStrv row;

    va_start(ap, first_cell);
    row = collect_cells(first_cell, ap);
    va_end(ap);
    g_return_if_fail(g_strv_length(row) == table->columns);
    g_ptr_array_add(table->rows, row);
}

void ctl_table_print(CtlTable *table, FILE *stream)
{
    g_autofree guint *widths = g_new0(guint, table->columns);

    for (guint r = 0; r < table->rows->len; r++) {
        GStrv row = table->rows->pdata[r];
        for (guint c = 0; c < table->columns; c++)
            widths[c] = MAX(widths[c], (guint)g_utf8_strlen(row[c], -1));
    }
    for (guint r = 0; r < table->rows->len; r++) {
        GStrv row = table->rows->pdata[r];
        g_autoptr(GString) line = g_string_new(NULL);
        for (guint c = 0; c < table->columns; c++) {
            g_string_append(line, row[c]);
            /* No padding after the last column: no trailing blanks. */
            if (c + 1 < table->columns) {
                for (guint pad = g_utf8_strlen(row[c], -1); pad < widths[c] + 2; pad++)
                    g_string_append_c(line, ' ');
            }
        }
        fprintf(stream, "%s\n", line->str);
    }
}

void ctl_table_free(CtlTable *table)
{
    if (table == NULL)
        return;
    g_ptr_array_unref(table->rows);
    g_free(table);
}

/* ----- values ----- */

char *ctl_format_size(guint64 bytes) { return cli_format_size(bytes); }

void ctl_json_print(JsonWriter *w)
{
    printf("%s\n", json_writer_get(w));
    json_writer_free(w);
}

void ctl_json_snapshots(JsonWriter *w, GVariant *snapshots)
{
    GVariantIter iter;
    const char *id, *name;
    guint64 date, clock, state;

    json_begin_array(w);
    if (snapshots != NULL) {
        g_variant_iter_init(&iter, snapshots);
        while (g_variant_iter_next(&iter, "(&s&sttt)", &id, &name, &date, &clock, &state)) {
            g_autoptr(GDateTime) when = g_date_time_new_from_unix_local((gint64)date);
            g_autofree char *iso = when != NULL ? g_date_time_format_iso8601(when) : NULL;
            json_begin_object(w);
            json_member_string(w, "id", id);
            json_member_string(w, "name", name);
            if (iso != NULL)
                json_member_string(w, "date", iso);
            json_member_uint(w, "date-sec", date);
            json_member_uint(w, "vm-state-size", state);
            json_member_uint(w, "vm-clock-sec", clock / G_GUINT64_CONSTANT(1000000000));
            json_member_uint(w, "vm-clock-nsec", clock % G_GUINT64_CONSTANT(1000000000));
            json_end_object(w);
        }
    }
    json_end_array(w);
}

/* key: the string property when it is not empty. */
static void member_if_set(JsonWriter *w, const char *key, GVariant *props, const char *property)
{
    const char *value = ctl_prop_string(props, property);

    if (*value)
        json_member_string(w, key, value);
}

void ctl_json_volume(JsonWriter *w, const char *pool_name, GVariant *props)
{
    g_autofree char *label = g_strdup_printf("%s/%s", pool_name, ctl_prop_string(props, "Name"));
    g_autoptr(GVariant) snapshots =
        g_variant_lookup_value(props, "Snapshots", G_VARIANT_TYPE("a(ssttt)"));
    gboolean encrypted = FALSE, busy = FALSE;

    g_variant_lookup(props, "Encrypted", "b", &encrypted);
    g_variant_lookup(props, "Busy", "b", &busy);
    json_begin_object(w);
    json_member_string(w, "volume", label);
    json_member_string(w, "pool", pool_name);
    json_member_string(w, "name", ctl_prop_string(props, "Name"));
    member_if_set(w, "file", props, "Path");
    member_if_set(w, "format", props, "Format");
    json_member_uint(w, "virtual-size", ctl_prop_uint64(props, "VirtualSize"));
    json_member_uint(w, "actual-size", ctl_prop_uint64(props, "AllocatedSize"));
    member_if_set(w, "backing-file", props, "BackingFile");
    member_if_set(w, "backing-format", props, "BackingFormat");
    json_member_bool(w, "encrypted", encrypted);
    json_member_bool(w, "busy", busy);
    member_if_set(w, "error", props, "Error");
    json_key(w, "snapshots");
    ctl_json_snapshots(w, snapshots);
    json_end_object(w);
}

const char *ctl_prop_string(GVariant *props, const char *key)
{
    const char *value = NULL;

    if (props == NULL || !g_variant_lookup(props, key, "&s", &value)) {
        /* Object paths are strings to the reader too. */
        if (props == NULL || !g_variant_lookup(props, key, "&o", &value))
            return "";
    }
    return value;
}

guint64 ctl_prop_uint64(GVariant *props, const char *key)
{
    g_autoptr(GVariant) value = g_variant_lookup_value(props, key, NULL);

    if (value == NULL)
        return 0;
    if (g_variant_is_of_type(value, G_VARIANT_TYPE_UINT64))
        return g_variant_get_uint64(value);
    if (g_variant_is_of_type(value, G_VARIANT_TYPE_UINT32))
        return g_variant_get_uint32(value);
    return 0;
}

void ctl_print_field(const char *label, const char *value) { printf("%-14s%s\n", label, value); }

void ctl_print_size_field(const char *label, guint64 bytes)
{
    g_autofree char *human = ctl_format_size(bytes);
    g_autofree char *text = g_strdup_printf("%s (%" G_GUINT64_FORMAT " bytes)", human, bytes);

    ctl_print_field(label, text);
}

/* "2024-05-01 12:00:00", the way qemu-img shows a snapshot's date. */
static char *format_date(guint64 seconds)
{
    g_autoptr(GDateTime) date = g_date_time_new_from_unix_local((gint64)seconds);

    return date != NULL ? g_date_time_format(date, "%Y-%m-%d %H:%M:%S") : g_strdup("-");
}

/* "00:01:02.345", the guest clock at the snapshot. */
static char *format_vm_clock(guint64 nsec)
{
    guint64 ms = nsec / 1000000;

    return g_strdup_printf("%02" G_GUINT64_FORMAT ":%02u:%02u.%03u", ms / 3600000,
                           (guint)(ms / 60000 % 60), (guint)(ms / 1000 % 60), (guint)(ms % 1000));
}

void ctl_print_snapshots(GVariant *snapshots)
{
    g_autoptr(CtlTable) table = ctl_table_new("ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", NULL);
    GVariantIter iter;
    const char *id, *name;
    guint64 date, clock, state;

    g_variant_iter_init(&iter, snapshots);
    while (g_variant_iter_next(&iter, "(&s&sttt)", &id, &name, &date, &clock, &state)) {
        g_autofree char *size = ctl_format_size(state);
        g_autofree char *when = format_date(date);
        g_autofree char *vm_clock = format_vm_clock(clock);
        ctl_table_add_row(table, id, name, size, when, vm_clock, NULL);
    }
    ctl_table_print(table, stdout);
}
