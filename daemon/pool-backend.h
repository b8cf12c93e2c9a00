/* Where a pool's volumes live: a directory of image files (dir), the
 * logical volumes of an LVM volume group (logical), or the RBD images of
 * a Ceph pool (rbd, pool-backend-rbd.h). A Pool asks its
 * backend what volumes there are, how much room is left, and for each
 * volume's descriptor; a logical pool's backend also makes, resizes and
 * removes its volumes, with the LVM tools, as libvirt's logical pools do.
 * A dir pool makes its files itself (pool.c: hidden new files published
 * whole), and resizes them through the worker (the image's own size). */
#pragma once

#include <glib.h>

typedef enum {
    VDD_POOL_DIR,
    VDD_POOL_LOGICAL,
    VDD_POOL_RBD,
} VddPoolType;

typedef struct VddPoolBackend VddPoolBackend;

/* "dir", "logical" or "rbd" as the type; FALSE for any other. */
gboolean vdd_pool_type_from_string(const char *type, VddPoolType *out);
const char *vdd_pool_type_to_string(VddPoolType type);

/* A dir pool over the open directory dirfd (borrowed: the pool owns it)
 * at directory, for messages. */
VddPoolBackend *vdd_pool_backend_new_dir(const char *pool, const char *directory, int dirfd);
/* A logical pool on the volume group vg, which must exist (vgs is asked).
 * Its volumes are /dev/VG/NAME. */
VddPoolBackend *vdd_pool_backend_new_logical(const char *pool, const char *vg, GError **error);
/* An rbd pool on the Ceph pool config->ceph_pool (pool-backend-rbd.h), not
 * connected yet; refused with a clear error by a vdiskd built without
 * librbd. */
typedef struct VddRbdPoolConfig VddRbdPoolConfig;
VddPoolBackend *vdd_pool_backend_new_rbd(const char *pool, const VddRbdPoolConfig *config,
                                         GError **error);
/* The rbd pool behind b, or NULL for the other types. */
typedef struct VddRbdPool VddRbdPool;
VddRbdPool *vdd_pool_backend_rbd(VddPoolBackend *b);
void vdd_pool_backend_free(VddPoolBackend *b);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VddPoolBackend, vdd_pool_backend_free)

VddPoolType vdd_pool_backend_type(VddPoolBackend *b);
/* The folder volumes are found in (the directory, or /dev/VG; rbd:POOL
 * for an rbd pool, which has none). */
const char *vdd_pool_backend_directory(VddPoolBackend *b);

/* The names of the volumes there (a set of new strings). A listing that
 * fails is logged and gives what was found. */
GHashTable *vdd_pool_backend_list(VddPoolBackend *b);
/* Does a volume (or any file) of that name exist? */
gboolean vdd_pool_backend_exists(VddPoolBackend *b, const char *name);
/* Bytes in all, and free for new volumes. */
gboolean vdd_pool_backend_space(VddPoolBackend *b, guint64 *capacity, guint64 *available,
                                GError **error);
/* The volume's descriptor, opened with access (O_RDONLY or O_RDWR) without
 * following links in a dir pool: a regular file there, a block device in
 * a logical pool. -1 with error (naming POOL/NAME). */
int vdd_pool_backend_open(VddPoolBackend *b, const char *name, int access, GError **error);

/* logical and rbd: a new LV of at least size bytes (whole KiB, as libvirt
 * asks lvcreate) or RBD image of size bytes, resize one (shrinking only
 * with shrink), remove one. Blocking: they run the LVM tools or ask the
 * Ceph cluster, so call them off the main loop where they may take long.
 * Errors carry what the tool or the cluster said. */
gboolean vdd_pool_backend_create(VddPoolBackend *b, const char *name, guint64 size, GError **error);
gboolean vdd_pool_backend_resize(VddPoolBackend *b, const char *name, guint64 size, gboolean shrink,
                                 GError **error);
/* Both types: the volume is gone (a dir pool's file unlinked). */
gboolean vdd_pool_backend_remove(VddPoolBackend *b, const char *name, GError **error);
