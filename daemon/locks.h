/* The locks one job (or one method's work) holds on volumes, in one place:
 * taken one by one as the work is prepared, each as vdd_volume_lock_read
 * or vdd_volume_lock_write takes it (with the volume's backing chain), and
 * released all at once when the work ends, so that no path forgets one or
 * releases one twice. */
#pragma once

#include <glib.h>

typedef struct _VddVolume VddVolume;
typedef struct VddLockSet VddLockSet;

VddLockSet *vdd_lock_set_new(void);
/* Read- or write-lock volume for the set's work; Busy naming the volume
 * when another job holds it (the set is unchanged then). */
gboolean vdd_lock_set_read(VddLockSet *set, VddVolume *volume, GError **error);
gboolean vdd_lock_set_write(VddLockSet *set, VddVolume *volume, GError **error);
/* Release every lock of the set, the last taken first. Once: a second
 * release is a bug in the work's bookkeeping, a critical (fatal in the
 * tests). */
void vdd_lock_set_release(VddLockSet *set);
/* Free the set, releasing its locks first when the work never ended (it
 * failed before it started). */
void vdd_lock_set_free(VddLockSet *set);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VddLockSet, vdd_lock_set_free)
