#include "locks.h"

#include "volume.h"

typedef struct {
    VddVolume *volume;
    gboolean write;
} Lock;

struct VddLockSet {
    GArray *locks; /* of Lock, in the order taken */
    gboolean released;
};

VddLockSet *vdd_lock_set_new(void)
{
    VddLockSet *set = g_new0(VddLockSet, 1);
    set->locks = g_array_new(FALSE, FALSE, sizeof(Lock));
    return set;
}

static gboolean take(VddLockSet *set, VddVolume *volume, gboolean write, GError **error)
{
    g_return_val_if_fail(!set->released, FALSE);
    if (!(write ? vdd_volume_lock_write(volume, error) : vdd_volume_lock_read(volume, error)))
        return FALSE;
    Lock lock = { g_object_ref(volume), write };
    g_array_append_val(set->locks, lock);
    return TRUE;
}

gboolean vdd_lock_set_read(VddLockSet *set, VddVolume *volume, GError **error)
{
    return take(set, volume, FALSE, error);
}

gboolean vdd_lock_set_write(VddLockSet *set, VddVolume *volume, GError **error)
{
    return take(set, volume, TRUE, error);
}

void vdd_lock_set_release(VddLockSet *set)
{
    if (set->released) {
        g_critical("a lock set was released twice");
        return;
    }
    set->released = TRUE;
    for (guint i = set->locks->len; i-- > 0;) {
        Lock *lock = &g_array_index(set->locks, Lock, i);
        if (lock->write)
            vdd_volume_unlock_write(lock->volume);
        else
            vdd_volume_unlock_read(lock->volume);
        g_object_unref(lock->volume);
    }
    g_array_set_size(set->locks, 0);
}

void vdd_lock_set_free(VddLockSet *set)
{
    if (set == NULL)
        return;
    if (!set->released)
        vdd_lock_set_release(set);
    g_array_unref(set->locks);
    g_free(set);
}
