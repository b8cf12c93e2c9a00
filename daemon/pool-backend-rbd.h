/* A pool of Ceph RBD images (pool-backend.h's rbd type), through librados
 * and librbd. The cluster is the administrator's: a ceph.conf, a client
 * id and its keyring, from /etc/vdisk/pools.d. vdiskd (root) reads the
 * keyring; the worker that copies an image's data gets the key alone, in
 * its request, never the keyring's file. Every call here may block on the
 * network (bounded by short Ceph timeouts): call them off the main loop,
 * or only once the pool is connected and for one quick request. */
#pragma once

#include <glib.h>

typedef struct VddRbdPool VddRbdPool;

typedef struct VddRbdPoolConfig {
    const char *ceph_pool; /* Source= */
    const char *conf;      /* Conf=, NULL: /etc/ceph/ceph.conf */
    const char *user;      /* User=, NULL: admin */
    const char *keyring;   /* Keyring=, NULL: what the configuration names */
    /* A pool libvirt defines names its monitors ("HOST:PORT,..."), not a
     * configuration file: then conf is NULL and none is read, and the
     * key is looked for where Ceph's clients look by default (libvirt
     * keeps its own in a secret vdiskd cannot read). */
    const char *mon_host;
    gboolean from_libvirt;
} VddRbdPoolConfig;

/* The pool pool (vdiskd's name, for messages) on config; not connected
 * yet. NULL with an error for a configuration that cannot be right (a
 * pool name or id with characters Ceph does not take). */
VddRbdPool *vdd_rbd_pool_new(const char *pool, const VddRbdPoolConfig *config, GError **error);
void vdd_rbd_pool_free(VddRbdPool *p);

/* Connect, once (again after a failure). Blocks up to the timeouts. The
 * error says why the pool is unavailable: vdiskd without network (and
 * the drop-in that gives it), no key, no monitor answering, no such
 * pool. */
gboolean vdd_rbd_pool_connect(VddRbdPool *p, GError **error);
gboolean vdd_rbd_pool_is_connected(VddRbdPool *p);

/* "rbd:CEPHPOOL" for the pool's Directory. */
const char *vdd_rbd_pool_location(VddRbdPool *p);
/* The configuration file the worker reads (Landlock lets it); "" for a
 * pool that names its monitors instead. */
const char *vdd_rbd_pool_conf(VddRbdPool *p);
/* The image name as the engine opens it, without the key:
 * rbd:CEPHPOOL/NAME:conf=CONF:id=USER, or :mon_host=... for a pool that
 * names its monitors (a new string). */
char *vdd_rbd_pool_image_name(VddRbdPool *p, const char *name);
/* The client's key (base64), as the keyring holds it; NULL when the
 * cluster needs none. Borrowed. */
const char *vdd_rbd_pool_key(VddRbdPool *p);

/* Is name an image name vdiskd takes here (letters, digits, + _ . -)? */
gboolean vdd_rbd_pool_check_name(VddRbdPool *p, const char *name, GError **error);

/* Connected pool only. */
GHashTable *vdd_rbd_pool_list(VddRbdPool *p, GError **error);
gboolean vdd_rbd_pool_space(VddRbdPool *p, guint64 *capacity, guint64 *available, GError **error);
/* The image's size, allocated bytes (whole objects, from its object map;
 * 0 for an image without fast-diff, where finding them would read every
 * object) and snapshot names (a NULL-terminated array, new). */
gboolean vdd_rbd_pool_stat(VddRbdPool *p, const char *name, guint64 *size, guint64 *allocated,
                           char ***snapshots, GError **error);
gboolean vdd_rbd_pool_create(VddRbdPool *p, const char *name, guint64 size, GError **error);
gboolean vdd_rbd_pool_resize(VddRbdPool *p, const char *name, guint64 size, gboolean shrink,
                             GError **error);
gboolean vdd_rbd_pool_remove(VddRbdPool *p, const char *name, GError **error);
/* Remove an image vdiskd made for a job that failed or was cancelled,
 * whose killed worker may still hold its lock: the lock is broken first.
 * Never for a volume someone may be using. */
gboolean vdd_rbd_pool_remove_abandoned(VddRbdPool *p, const char *name, GError **error);
/* name as an RBD clone of source: a snapshot of source taken for it,
 * protected (a clone's parent must be), and a copy-on-write child of it
 * (layering). */
gboolean vdd_rbd_pool_clone(VddRbdPool *p, const char *source, const char *name, GError **error);
