/* qemu's "--object secret,..." definitions as the secrets option vdiskd's
 * methods take (a{say}: id to passphrase bytes). The client reads secret
 * files with its own rights, so vdiskd never opens them by name; the shim
 * and vdiskctl share this. */
#pragma once

#include <glib.h>

/* specs: "secret,id=ID,file=PATH" or "secret,id=ID,data=TEXT", each with an
 * optional ",format=raw|base64"; the leading "secret," may be
 * "qom-type=secret,". Returns a floating a{say}, or NULL with error naming
 * the definition at fault. */
GVariant *shim_secrets_variant(GPtrArray *specs, GError **error);
