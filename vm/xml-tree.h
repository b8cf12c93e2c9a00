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

G_END_DECLS
