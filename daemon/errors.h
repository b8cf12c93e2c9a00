/* The daemon's error domain: one code per org.vdisk.VDisk1.Error.* name, and
 * the conversion of engine, GIO and errno errors into it. */
#pragma once

#include <glib.h>

#define VDD_ERROR (vdd_error_quark())
GQuark vdd_error_quark(void);

typedef enum {
    VDD_ERROR_NOT_AUTHORIZED,
    VDD_ERROR_NOT_FOUND,
    VDD_ERROR_EXISTS,
    VDD_ERROR_INVALID_ARGUMENT,
    VDD_ERROR_UNSUPPORTED_FORMAT,
    VDD_ERROR_CORRUPT,
    VDD_ERROR_BUSY,
    VDD_ERROR_CANCELLED,
    VDD_ERROR_FAILED,
} VddError;

/* A new GError in VDD_ERROR for any error (VD_ERROR, G_IO_ERROR, others),
 * same message. */
GError *vdd_error_convert(const GError *error);
/* Convert *error in place (no-op when NULL or already VDD_ERROR). */
void vdd_error_normalize(GError **error);
/* Set a VDD_ERROR from errno with "what: strerror". */
void vdd_error_set_errno(GError **error, int err, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
