/* Pools configured in /etc/vdisk/pools.d (every .conf file there). */
#pragma once

#include <glib.h>

#define VDD_DEFAULT_CONFIG_DIR "/etc/vdisk/pools.d"

typedef struct {
    char *name;
    char *type;        /* "dir", "logical" or "rbd" */
    char *directory;   /* dir: the directory; NULL for the others */
    char *pool_source; /* logical: the volume group; rbd: the Ceph pool (Source=) */
    /* rbd: the cluster's ceph.conf (Conf=, NULL: /etc/ceph/ceph.conf), the
     * client id (User=, NULL: admin) and its keyring (Keyring=, NULL:
     * what the configuration names). */
    char *conf;
    char *user;
    char *keyring;
    char *source; /* the file it came from */
} VddPoolConfig;

void vdd_pool_config_free(VddPoolConfig *pc);

/* Parse one file: a key file with one or more [Pool] or [Pool NAME] groups
 * holding Type= (dir when absent), Directory= for a dir pool, Source= (the
 * volume group) for a logical one, Source= (the Ceph pool), Conf=, User=
 * and Keyring= for an rbd one, and Name= for a bare [Pool]. Returns
 * VddPoolConfig* entries. For example:
 *
 *   [Pool ceph]
 *   Type=rbd
 *   Source=libvirt-pool
 *   Conf=/etc/ceph/ceph.conf
 *   User=libvirt
 *   Keyring=/etc/ceph/ceph.client.libvirt.keyring
 *
 * The key stays in the keyring, read by vdiskd alone (root); vdiskd needs
 * the cluster's network, which its unit denies by default (see
 * vdiskd-ceph.conf among vdisk's documentation). */
GPtrArray *vdd_config_parse(const char *filename, const char *data, gsize len, GError **error);
/* Every *.conf in dir in name order; a bad file is skipped with a warning.
 * A missing dir gives an empty array. */
GPtrArray *vdd_config_load_pools(const char *dir, GError **error);
