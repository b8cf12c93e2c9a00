#include "errors.h"

#include <errno.h>
#include <gio/gio.h>

#include "vdisk-names.h"
#include "vdisk.h"

static const GDBusErrorEntry entries[] = {
    { VDD_ERROR_NOT_AUTHORIZED, VDISK_ERROR_NOT_AUTHORIZED },
    { VDD_ERROR_NOT_FOUND, VDISK_ERROR_NOT_FOUND },
    { VDD_ERROR_EXISTS, VDISK_ERROR_EXISTS },
    { VDD_ERROR_INVALID_ARGUMENT, VDISK_ERROR_INVALID_ARGUMENT },
    { VDD_ERROR_UNSUPPORTED_FORMAT, VDISK_ERROR_UNSUPPORTED_FORMAT },
    { VDD_ERROR_CORRUPT, VDISK_ERROR_CORRUPT },
    { VDD_ERROR_BUSY, VDISK_ERROR_BUSY },
    { VDD_ERROR_CANCELLED, VDISK_ERROR_CANCELLED },
    { VDD_ERROR_FAILED, VDISK_ERROR_FAILED },
};

GQuark vdd_error_quark(void)
{
    static gsize quark = 0;
    g_dbus_error_register_error_domain("vdd-error-quark", &quark, entries, G_N_ELEMENTS(entries));
    return (GQuark)quark;
}

static VddError code_for(const GError *error)
{
    if (error->domain == VDD_ERROR)
        return error->code;
    if (error->domain == VD_ERROR) {
        switch ((VdError)error->code) {
        case VD_ERROR_NOT_SUPPORTED:
        case VD_ERROR_UNSUPPORTED_FORMAT:
            return VDD_ERROR_UNSUPPORTED_FORMAT;
        case VD_ERROR_CORRUPT:
            return VDD_ERROR_CORRUPT;
        case VD_ERROR_INVALID_ARGUMENT:
            return VDD_ERROR_INVALID_ARGUMENT;
        case VD_ERROR_NOT_FOUND:
            return VDD_ERROR_NOT_FOUND;
        case VD_ERROR_EXISTS:
            return VDD_ERROR_EXISTS;
        case VD_ERROR_BUSY:
            return VDD_ERROR_BUSY;
        case VD_ERROR_CANCELLED:
            return VDD_ERROR_CANCELLED;
        default:
            return VDD_ERROR_FAILED;
        }
    }
    if (error->domain == G_IO_ERROR) {
        switch (error->code) {
        case G_IO_ERROR_CANCELLED:
            return VDD_ERROR_CANCELLED;
        case G_IO_ERROR_NOT_FOUND:
            return VDD_ERROR_NOT_FOUND;
        case G_IO_ERROR_EXISTS:
            return VDD_ERROR_EXISTS;
        case G_IO_ERROR_INVALID_ARGUMENT:
        case G_IO_ERROR_IS_DIRECTORY:
        case G_IO_ERROR_NOT_REGULAR_FILE:
        case G_IO_ERROR_INVALID_FILENAME:
            return VDD_ERROR_INVALID_ARGUMENT;
        case G_IO_ERROR_BUSY:
            return VDD_ERROR_BUSY;
        case G_IO_ERROR_PERMISSION_DENIED:
            return VDD_ERROR_NOT_AUTHORIZED;
        default:
            return VDD_ERROR_FAILED;
        }
    }
    return VDD_ERROR_FAILED;
}

GError *vdd_error_convert(const GError *error)
{
    return g_error_new_literal(VDD_ERROR, code_for(error), error->message);
}

void vdd_error_normalize(GError **error)
{
    if (error == NULL || *error == NULL || (*error)->domain == VDD_ERROR)
        return;
    GError *converted = vdd_error_convert(*error);
    g_error_free(*error);
    *error = converted;
}

void vdd_error_set_errno(GError **error, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    VddError code =
        err == ENOENT   ? VDD_ERROR_NOT_FOUND
        : err == EEXIST ? VDD_ERROR_EXISTS
        : err == EBUSY  ? VDD_ERROR_BUSY
        : (err == EISDIR || err == ENOTDIR || err == ELOOP || err == EINVAL || err == EBADF)
            ? VDD_ERROR_INVALID_ARGUMENT
            : VDD_ERROR_FAILED;
    g_set_error(error, VDD_ERROR, code, "%s: %s", what, g_strerror(err));
}
