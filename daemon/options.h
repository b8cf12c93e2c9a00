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

/* Option "secrets" a{say}: passphrases by the ids that encryption options
 * name (encrypt.key-secret, key-secret, and the *-key-secret options
 * below). *out is a new store, or NULL when the option is absent. */
gboolean vdd_options_lookup_secrets(GVariant *options, VdSecrets **out, GError **error);

/* What opens an encrypted image: the id in the string option key_option
 * ("volume-key-secret", "source-key-secret") and the passphrases of
 * "secrets". Both NULL when the image is opened without a key. */
typedef struct {
    VdOptions *open; /* engine open options: encrypt.key-secret=ID */
    VdSecrets *secrets;
} VddImageKey;

gboolean vdd_options_to_image_key(GVariant *options, const char *key_option, VddImageKey *key,
                                  GError **error);
void vdd_image_key_clear(VddImageKey *key);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VddImageKey, vdd_image_key_clear)
