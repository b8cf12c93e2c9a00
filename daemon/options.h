/* The a{sv} options of vdiskd's methods. */
#pragma once

#include <glib.h>

#include "vdisk.h"

/* The engine create options in options (a{sv}): D-Bus names use dashes
 * (cluster-size, lazy-refcounts, backing-format) and map to the engine's
 * qemu-img names (cluster_size, lazy_refcounts, backing_fmt; "backing" is
 * backing_file). Values may be strings, booleans or integers. Keys in
 * daemon_keys (NULL-terminated, may be NULL) are left for the caller;
 * format (may be NULL) checks the keys against what that format takes.
 * Returns a new VdOptions, or NULL with VDD_ERROR_INVALID_ARGUMENT. */
VdOptions *vdd_options_to_create(GVariant *options, const char *format,
                                 const char *const *daemon_keys, GError **error);

/* A string option, or NULL when absent; a wrong type is an error. */
gboolean vdd_options_lookup_string(GVariant *options, const char *key, const char **out,
                                   GError **error);
/* A boolean option ("true"/"false" strings accepted), dflt when absent. */
gboolean vdd_options_lookup_bool(GVariant *options, const char *key, gboolean dflt, gboolean *out,
                                 GError **error);
/* A format vdisk knows, or VDD_ERROR_UNSUPPORTED_FORMAT naming it. */
gboolean vdd_check_format(const char *format, GError **error);
