#include "shim-errors.h"

#include <string.h>

#include "vdisk-names.h"

/* Every error of a call that reached the bus carries its D-Bus name, the
 * bus's own ones included (GDBus keeps it with the error even where it
 * maps the name to a G_DBUS_ERROR code): match the names, not the codes. */
gboolean shim_error_vdiskd_absent(const GError *error)
{
    g_autofree char *name = g_dbus_error_get_remote_error(error);
    if (name == NULL)
        return FALSE;
    return g_str_equal(name, "org.freedesktop.DBus.Error.ServiceUnknown") ||
           g_str_equal(name, "org.freedesktop.DBus.Error.NameHasNoOwner") ||
           g_str_has_prefix(name, "org.freedesktop.DBus.Error.Spawn.") ||
           g_str_has_prefix(name, "org.freedesktop.systemd1.");
}

gboolean shim_error_unsupported(const GError *error)
{
    g_autofree char *name = g_dbus_error_get_remote_error(error);
    if (name == NULL)
        return FALSE;
    return g_str_equal(name, "org.freedesktop.DBus.Error.UnknownMethod") ||
           g_str_equal(name, VDISK_ERROR_UNSUPPORTED_FORMAT) ||
           (g_str_equal(name, VDISK_ERROR_INVALID_ARGUMENT) &&
            (strstr(error->message, "has no option") != NULL ||
             strstr(error->message, "cannot be used for a target") != NULL ||
             strstr(error->message, "needs files of its own") != NULL));
}

gboolean shim_error_outside_pools(const GError *error)
{
    g_autofree char *name = g_dbus_error_get_remote_error(error);
    return name != NULL && g_str_equal(name, VDISK_ERROR_NOT_FOUND);
}
