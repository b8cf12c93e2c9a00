/* Names the daemon accepts from callers, and how they become object paths. */
#pragma once

#include <glib.h>

/* A volume or pool name is one path component: not empty, not starting with
 * ".", no "/" (nor NUL: D-Bus strings cannot carry one), at most 255 bytes,
 * valid UTF-8. Sets VDD_ERROR_INVALID_ARGUMENT naming what is wrong. */
gboolean vdd_name_is_valid(const char *name, const char *what, GError **error);

/* The object path element for name: [A-Za-z0-9] kept, every other byte as
 * _XX (g_dbus_escape_object_path). Returns a new string. */
char *vdd_name_escape(const char *name);
