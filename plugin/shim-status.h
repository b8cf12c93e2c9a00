/* The shim's configuration and `vdisk-qemu-img --status` (which a
 * `vdiskctl libvirt status` can call or link). */
#pragma once

#include <stdio.h>
#include <glib.h>

#define SHIM_CONFIG_FILE "/etc/vdisk/qemu-img-shim.conf"
#define SHIM_REAL_QEMU_IMG "/usr/bin/qemu-img"

typedef struct {
    gboolean fallback;     /* run the real qemu-img for what vdiskd cannot do */
    char *qemu_img;        /* the real qemu-img, an absolute path */
    char *fallback_source; /* where the fallback setting came from, for messages */
} ShimConfig;

void shim_config_free(ShimConfig *cfg);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ShimConfig, shim_config_free)

/* The configuration: defaults (fallback on, /usr/bin/qemu-img), then
 * SHIM_CONFIG_FILE (or $VDISK_SHIM_CONFIG), group [shim], keys
 * fallback=true|false and qemu-img=PATH, then $VDISK_SHIM_FALLBACK (0/1).
 * Never fails: a broken file is reported on stderr and ignored. */
ShimConfig *shim_config_load(void);

/* Is the program libvirtd would run as "qemu-img" (first on the PATH of
 * every running libvirtd or virtstoraged) the shim? Prints one line per
 * daemon, the fallback setting, and returns an exit status: 0 every
 * libvirt daemon uses the shim, 1 one does not, 3 none runs. */
int shim_print_status(FILE *out);

/* The first executable "qemu-img" on search_path (a PATH value), or NULL. */
char *shim_find_qemu_img(const char *search_path);
