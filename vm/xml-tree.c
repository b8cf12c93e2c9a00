/* The element tree of xml-tree.h, built with GMarkup (GLib's own parser:
 * no DTDs, no external entities, nothing fetched). */
#include "xml-tree.h"

#include <stdarg.h>

#include "vdisk.h"

/* A settings file nests a few levels (the snapshot tree the most); this is
 * far beyond any real one and keeps a hostile file from recursing deep. */
#define MAX_DEPTH 200

typedef struct {
    VmXmlNode *root;
    VmXmlNode *current;
    guint depth;
} Builder;

void vm_xml_node_free(VmXmlNode *node)
{
    if (node == NULL)
        return;
    g_free(node->name);
    g_strfreev(node->attr_names);
    g_strfreev(node->attr_values);
    g_free(node->text);
    if (node->children != NULL)
        g_ptr_array_unref(node->children);
    g_free(node);
}

static void start_element(GMarkupParseContext *context, const char *element_name,
                          const char **attribute_names, const char **attribute_values,
                          gpointer user_data, GError **error)
{
    Builder *b = user_data;
    if (b->depth >= MAX_DEPTH) {
        g_set_error(error, G_MARKUP_ERROR, G_MARKUP_ERROR_INVALID_CONTENT,
                    "elements nest deeper than %d levels", MAX_DEPTH);
        return;
    }
    VmXmlNode *node = g_new0(VmXmlNode, 1);
    node->name = g_strdup(element_name);
    node->attr_names = g_strdupv((char **)attribute_names);
    node->attr_values = g_strdupv((char **)attribute_values);
    node->children = g_ptr_array_new_with_free_func((GDestroyNotify)vm_xml_node_free);
    g_markup_parse_context_get_position(context, &node->line, NULL);
    node->parent = b->current;
    if (b->current != NULL)
        g_ptr_array_add(b->current->children, node);
    else
        b->root = node;
    b->current = node;
    b->depth++;
}

static void end_element(GMarkupParseContext *context, const char *element_name, gpointer user_data,
                        GError **error)
{
    Builder *b = user_data;
    VmXmlNode *node = b->current;
    if (node->text != NULL) {
        g_strstrip(node->text);
        if (node->children->len > 0 || node->text[0] == '\0')
            g_clear_pointer(&node->text, g_free);
    }
    b->current = node->parent;
    b->depth--;
}

static void text(GMarkupParseContext *context, const char *text, gsize text_len, gpointer user_data,
                 GError **error)
{
    Builder *b = user_data;
    if (b->current == NULL)
        return;
    g_autofree char *piece = g_strndup(text, text_len);
    char *joined = g_strconcat(b->current->text != NULL ? b->current->text : "", piece, NULL);
    g_free(b->current->text);
    b->current->text = joined;
}

static const GMarkupParser parser = {
    .start_element = start_element,
    .end_element = end_element,
    .text = text,
};

VmXmlNode *vm_xml_parse(const char *name, const char *text_in, gssize len, GError **error)
{
    Builder b = { 0 };
    g_autoptr(GMarkupParseContext) ctx =
        g_markup_parse_context_new(&parser, G_MARKUP_TREAT_CDATA_AS_TEXT, &b, NULL);
    g_autoptr(GError) local = NULL;
    gboolean ok = g_markup_parse_context_parse(ctx, text_in, len, &local) &&
                  g_markup_parse_context_end_parse(ctx, &local);
    if (ok && b.root == NULL)
        g_set_error_literal(&local, G_MARKUP_ERROR, G_MARKUP_ERROR_EMPTY, "no element");
    if (!ok || local != NULL) {
        int line = 0;
        g_markup_parse_context_get_position(ctx, &line, NULL);
        g_set_error(error, VD_ERROR, VD_ERROR_CORRUPT, "%s:%d: not well-formed XML: %s", name, line,
                    local->message);
        vm_xml_node_free(b.root);
        return NULL;
    }
    return b.root;
}

const char *vm_xml_attr(const VmXmlNode *node, const char *name)
{
    for (guint i = 0; node->attr_names[i] != NULL; i++)
        if (g_str_equal(node->attr_names[i], name))
            return node->attr_values[i];
    return NULL;
}

VmXmlNode *vm_xml_child(const VmXmlNode *node, const char *name)
{
    for (guint i = 0; i < node->children->len; i++) {
        VmXmlNode *child = node->children->pdata[i];
        if (g_str_equal(child->name, name))
            return child;
    }
    return NULL;
}

gboolean vm_xml_fail(const char *path, const VmXmlNode *node, GError **error, int code,
                     const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    g_autofree char *msg = g_strdup_vprintf(format, ap);
    va_end(ap);
    if (node != NULL)
        g_set_error(error, VD_ERROR, code, "%s:%d: %s", path, node->line, msg);
    else
        g_set_error(error, VD_ERROR, code, "%s: %s", path, msg);
    return FALSE;
}
