/* A small element tree over GMarkup, for the settings files vm/ reads: the
 * readers walk elements and attributes and name the line of whatever they
 * refuse. Text content is kept only where an element has no children. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct VmXmlNode VmXmlNode;
struct VmXmlNode {
    char *name;
    GStrv attr_names;
    GStrv attr_values;
    int line;
    char *text;          /* trimmed text, or NULL */
    VmXmlNode *parent;   /* borrowed */
    GPtrArray *children; /* of VmXmlNode, owned */
};

void vm_xml_node_free(VmXmlNode *node);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmXmlNode, vm_xml_node_free)

/* Parse text (len -1: NUL-terminated) into its root element. Errors are
 * VD_ERROR_CORRUPT "NAME:LINE: ...". */
VmXmlNode *vm_xml_parse(const char *name, const char *text, gssize len, GError **error);
/* The attribute's value (borrowed), or NULL. */
const char *vm_xml_attr(const VmXmlNode *node, const char *name);
/* The first child element called name, or NULL. */
VmXmlNode *vm_xml_child(const VmXmlNode *node, const char *name);
/* Set error (domain VD_ERROR, code) to "PATH:LINE: message", the line
 * node's (node NULL: "PATH: message"), and return FALSE: how the readers
 * refuse what they do not understand. */
gboolean vm_xml_fail(const char *path, const VmXmlNode *node, GError **error, int code,
                     const char *format, ...) G_GNUC_PRINTF(5, 6);

G_END_DECLS
