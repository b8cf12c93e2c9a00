/* What a D-Bus error from vdiskd means for the shim: whether the real
 * qemu-img may still do the work. Kept apart from the program so the unit
 * tests build the errors a bus really returns and check each one. */
#pragma once

#include <gio/gio.h>

/* Is error the bus saying that vdiskd is not there: not running and not
 * activatable (ServiceUnknown, NameHasNoOwner), or its activation failed
 * (the bus's Spawn.* errors, systemd's unit errors)? vdiskd did nothing
 * then. A call vdiskd left unanswered (NoReply) is not such an error: it
 * may have done part of the work. */
gboolean shim_error_vdiskd_absent(const GError *error);

/* Is error vdiskd saying it cannot do this request (a format, an option or
 * a method it lacks), rather than that the request cannot be done? */
gboolean shim_error_unsupported(const GError *error);

/* Is error ResolvePath's answer for a file whose folder no pool holds? */
gboolean shim_error_outside_pools(const GError *error);
