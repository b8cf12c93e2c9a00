/* libvirt's dir pools as vdisk pools (DESIGN.md, "The libvirt shim"): every
 * active libvirt `dir` pool is also a vdisk pool of the same name and
 * directory, and after vdiskd changes the volumes of such a pool it asks
 * libvirt to refresh it, so virsh and virt-manager see the change at once.
 *
 * Only libvirt's public API is used, on qemu:///system. libvirtd may be
 * absent, start or stop at any time: the connection is retried on a timer
 * and on demand, and a dropped connection is noticed by its close callback.
 * Every libvirt call runs on a worker thread, never on the main loop: a
 * libvirtd that waits for our shim must not wait for us in turn. Built
 * without libvirt (meson -Dlibvirt=disabled) all of this is a no-op. */
#pragma once

#include <gio/gio.h>

typedef struct _VddManager VddManager;
typedef struct _VddLibvirt VddLibvirt;

/* Start watching libvirt at uri (NULL: qemu:///system) for manager's pools.
 * Never fails: libvirt missing is "no libvirt pools". Free with
 * vdd_libvirt_free before the manager. */
VddLibvirt *vdd_libvirt_new(VddManager *manager, const char *uri);
void vdd_libvirt_free(VddLibvirt *self);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VddLibvirt, vdd_libvirt_free)

/* Look libvirt's pools up again now, connecting first if need be, and add
 * (or drop) the vdisk pools that mirror them; callback runs on the main
 * thread once done, or after timeout_ms (0: no limit) if libvirt is slow.
 * Never fails. */
typedef void (*VddLibvirtSyncFunc)(gpointer data);
void vdd_libvirt_sync(VddLibvirt *self, guint timeout_ms, VddLibvirtSyncFunc callback,
                      gpointer data);

/* The vdisk pool pool_name changed its volumes: refresh the libvirt pool
 * of that name (soon, once for a burst of changes). Nothing when libvirt
 * has no such pool. */
void vdd_libvirt_pool_changed(VddLibvirt *self, const char *pool_name);

/* Is pool_name a vdisk pool that mirrors a libvirt pool? */
gboolean vdd_libvirt_has_pool(VddLibvirt *self, const char *pool_name);
