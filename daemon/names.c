#include "names.h"

#include <gio/gio.h>
#include <string.h>

#include "errors.h"

gboolean vdd_name_is_valid(const char *name, const char *what, GError **error)
{
    if (name == NULL || *name == '\0') {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT, "%s name is empty", what);
        return FALSE;
    }
    gsize len = strlen(name);
    if (len > 255) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "%s name is %zu bytes long; at most 255 are allowed", what, len);
        return FALSE;
    }
    if (!g_utf8_validate(name, len, NULL)) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT, "%s name is not UTF-8", what);
        return FALSE;
    }
    if (name[0] == '.') {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "%s name '%s' starts with '.': hidden names, '.' and '..' are refused", what,
                    name);
        return FALSE;
    }
    if (strchr(name, '/') != NULL) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "%s name '%s' contains '/': it must be a single path component", what, name);
        return FALSE;
    }
    for (const char *p = name; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                        "%s name contains a control character", what);
            return FALSE;
        }
    }
    return TRUE;
}

char *vdd_name_escape(const char *name) { return g_dbus_escape_object_path(name); }
