#include "pool-backend.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "errors.h"
#include "names.h"
#if VDD_HAVE_RBD
#include "pool-backend-rbd.h"
#endif

struct VddPoolBackend {
    VddPoolType type;
    char *pool;      /* the pool's name, for messages */
    char *directory; /* dir: the directory; logical: /dev/VG */
    int dirfd;       /* dir: borrowed from the pool */
    char *vg;        /* logical: the volume group */
    VddRbdPool *rbd; /* rbd: the Ceph pool */
};

static const char *const type_names[] = {
    [VDD_POOL_DIR] = "dir", [VDD_POOL_LOGICAL] = "logical", [VDD_POOL_RBD] = "rbd"
};

gboolean vdd_pool_type_from_string(const char *type, VddPoolType *out)
{
    for (guint i = 0; i < G_N_ELEMENTS(type_names); i++)
        if (g_strcmp0(type, type_names[i]) == 0) {
            *out = (VddPoolType)i;
            return TRUE;
        }
    return FALSE;
}

const char *vdd_pool_type_to_string(VddPoolType type) { return type_names[type]; }

VddPoolBackend *vdd_pool_backend_new_dir(const char *pool, const char *directory, int dirfd)
{
    VddPoolBackend *b = g_new0(VddPoolBackend, 1);
    b->type = VDD_POOL_DIR;
    b->pool = g_strdup(pool);
    b->directory = g_strdup(directory);
    b->dirfd = dirfd;
    return b;
}

VddPoolBackend *vdd_pool_backend_new_rbd(const char *pool, const VddRbdPoolConfig *config,
                                         GError **error)
{
#if VDD_HAVE_RBD
    VddRbdPool *rbd = vdd_rbd_pool_new(pool, config, error);
    if (rbd == NULL)
        return NULL;
    VddPoolBackend *b = g_new0(VddPoolBackend, 1);
    b->type = VDD_POOL_RBD;
    b->pool = g_strdup(pool);
    b->directory = g_strdup(vdd_rbd_pool_location(rbd));
    b->dirfd = -1;
    b->rbd = rbd;
    return b;
#else
    g_set_error(error, VDD_ERROR, VDD_ERROR_UNSUPPORTED_FORMAT,
                "Ceph RBD pools are not supported by this vdiskd (built without librbd: -Drbd)");
    return NULL;
#endif
}

VddRbdPool *vdd_pool_backend_rbd(VddPoolBackend *b) { return b->rbd; }

void vdd_pool_backend_free(VddPoolBackend *b)
{
    if (b == NULL)
        return;
#if VDD_HAVE_RBD
    vdd_rbd_pool_free(b->rbd);
#endif
    g_free(b->pool);
    g_free(b->directory);
    g_free(b->vg);
    g_free(b);
}

VddPoolType vdd_pool_backend_type(VddPoolBackend *b) { return b->type; }
const char *vdd_pool_backend_directory(VddPoolBackend *b) { return b->directory; }

/* ----- the LVM tools ----- */

/* Run an LVM tool (argv[0] found on PATH) with nothing on its standard
 * input, so that it never waits for an answer; its standard output in
 * *out when out is given. An error carries what it said on stderr. */
static gboolean run_lvm(const char *const *argv, char **out, GError **error)
{
    g_autofree char *stdout_text = NULL, *stderr_text = NULL;
    int status = 0;
    /* LVM warns of every descriptor it inherits; vdiskd's are not its
     * business. */
    g_auto(GStrv) env = g_get_environ();
    env = g_environ_setenv(env, "LVM_SUPPRESS_FD_WARNINGS", "1", TRUE);
    if (!g_spawn_sync(NULL, (char **)argv, env, G_SPAWN_SEARCH_PATH | G_SPAWN_STDIN_FROM_DEV_NULL,
                      NULL, NULL, &stdout_text, &stderr_text, &status, error)) {
        g_prefix_error(error, "cannot run %s: ", argv[0]);
        return FALSE;
    }
    if (!g_spawn_check_wait_status(status, NULL)) {
        g_autofree char *cmd = g_strjoinv(" ", (char **)argv);
        g_strstrip(stderr_text);
        g_set_error(error, VDD_ERROR, VDD_ERROR_FAILED, "%s failed: %s", cmd,
                    *stderr_text != '\0' ? stderr_text : "no message");
        return FALSE;
    }
    if (out != NULL)
        *out = g_steal_pointer(&stdout_text);
    return TRUE;
}

/* A volume group name as LVM takes them: letters, digits and "+_.-", not
 * starting with "-". Anything else never reaches a command line. */
static gboolean vg_name_is_valid(const char *vg)
{
    if (vg == NULL || *vg == '\0' || *vg == '-' || strlen(vg) > 127 || g_str_equal(vg, ".") ||
        g_str_equal(vg, ".."))
        return FALSE;
    for (const char *p = vg; *p; p++)
        if (!g_ascii_isalnum(*p) && strchr("+_.-", *p) == NULL)
            return FALSE;
    return TRUE;
}

/* LV names are volume names that LVM also takes (a stricter set), so a
 * name never becomes an option of a command. */
static gboolean check_lv_name(VddPoolBackend *b, const char *name, GError **error)
{
    if (!vdd_name_is_valid(name, "volume", error))
        return FALSE;
    for (const char *p = name; *p; p++)
        if (!g_ascii_isalnum(*p) && strchr("+_.-", *p) == NULL) {
            g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                        "%s/%s: a logical volume's name takes only letters, digits and + _ . -",
                        b->pool, name);
            return FALSE;
        }
    if (name[0] == '-' || g_str_has_prefix(name, "snapshot") || g_str_has_prefix(name, "pvmove")) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "%s/%s: LVM reserves that name for a logical volume", b->pool, name);
        return FALSE;
    }
    return TRUE;
}

static gboolean vg_space(const char *vg, guint64 *capacity, guint64 *available, GError **error)
{
    const char *argv[] = {
        "vgs", "--units", "b", "--noheadings", "--nosuffix", "-o", "vg_size,vg_free", vg, NULL
    };
    g_autofree char *out = NULL;
    if (!run_lvm(argv, &out, error))
        return FALSE;
    g_auto(GStrv) fields = g_strsplit_set(g_strstrip(out), " \t", -1);
    guint64 v[2];
    guint n = 0;
    for (guint i = 0; fields[i] != NULL && n < 2; i++)
        if (*fields[i] != '\0' &&
            g_ascii_string_to_unsigned(fields[i], 10, 0, G_MAXUINT64, &v[n], NULL))
            n++;
    if (n != 2) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_FAILED,
                    "volume group %s: vgs gave no size and free space", vg);
        return FALSE;
    }
    *capacity = v[0];
    *available = v[1];
    return TRUE;
}

VddPoolBackend *vdd_pool_backend_new_logical(const char *pool, const char *vg, GError **error)
{
    guint64 capacity, available;
    if (!vg_name_is_valid(vg)) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "'%s' is not the name of a volume group", vg != NULL ? vg : "");
        return NULL;
    }
    if (!vg_space(vg, &capacity, &available, error))
        return NULL;
    VddPoolBackend *b = g_new0(VddPoolBackend, 1);
    b->type = VDD_POOL_LOGICAL;
    b->pool = g_strdup(pool);
    b->vg = g_strdup(vg);
    b->directory = g_build_filename("/dev", vg, NULL);
    b->dirfd = -1;
    return b;
}

/* ----- listing ----- */

/* The names of the regular, visible files in the directory. */
static GHashTable *list_files(VddPoolBackend *b, GHashTable *names)
{
    int fd = openat(b->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (dir == NULL) {
        g_warning("pool %s: cannot read %s: %s", b->pool, b->directory, g_strerror(errno));
        if (fd >= 0)
            close(fd);
        return names;
    }
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        struct stat st;
        if (de->d_name[0] == '.' || fstatat(b->dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            !S_ISREG(st.st_mode) || !vdd_name_is_valid(de->d_name, "volume", NULL))
            continue;
        g_hash_table_add(names, g_strdup(de->d_name));
    }
    closedir(dir);
    return names;
}

/* The LVs of the group that hold data a volume can be: not the hidden
 * ones LVM keeps for itself, not thin pools. */
static GHashTable *list_lvs(VddPoolBackend *b, GHashTable *names)
{
    const char *argv[] = { "lvs", "--noheadings", "-o", "lv_name,lv_attr", b->vg, NULL };
    g_autofree char *out = NULL;
    g_autoptr(GError) error = NULL;
    if (!run_lvm(argv, &out, &error)) {
        g_warning("pool %s: %s", b->pool, error->message);
        return names;
    }
    g_auto(GStrv) lines = g_strsplit(out, "\n", -1);
    for (guint i = 0; lines[i] != NULL; i++) {
        g_auto(GStrv) f = g_strsplit_set(g_strstrip(lines[i]), " \t", 2);
        if (f[0] == NULL || f[1] == NULL || *f[0] == '\0')
            continue;
        const char *attr = g_strstrip(f[1]);
        if (attr[0] == 't' || !check_lv_name(b, f[0], NULL))
            continue;
        g_hash_table_add(names, g_strdup(f[0]));
    }
    return names;
}

GHashTable *vdd_pool_backend_list(VddPoolBackend *b)
{
#if VDD_HAVE_RBD
    if (b->type == VDD_POOL_RBD) {
        g_autoptr(GError) error = NULL;
        GHashTable *images = vdd_rbd_pool_list(b->rbd, &error);
        if (images == NULL)
            g_warning("%s", error->message);
        return images != NULL ? images
                              : g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    }
#endif
    GHashTable *names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    return b->type == VDD_POOL_DIR ? list_files(b, names) : list_lvs(b, names);
}

gboolean vdd_pool_backend_exists(VddPoolBackend *b, const char *name)
{
    struct stat st;
    if (b->type == VDD_POOL_DIR)
        return fstatat(b->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
    g_autoptr(GHashTable) lvs = vdd_pool_backend_list(b);
    return g_hash_table_contains(lvs, name);
}

gboolean vdd_pool_backend_space(VddPoolBackend *b, guint64 *capacity, guint64 *available,
                                GError **error)
{
    if (b->type == VDD_POOL_LOGICAL)
        return vg_space(b->vg, capacity, available, error);
#if VDD_HAVE_RBD
    if (b->type == VDD_POOL_RBD)
        return vdd_rbd_pool_space(b->rbd, capacity, available, error);
#endif
    struct statvfs sv;
    if (fstatvfs(b->dirfd, &sv) < 0) {
        vdd_error_set_errno(error, errno, "pool %s", b->pool);
        return FALSE;
    }
    *capacity = (guint64)sv.f_blocks * sv.f_frsize;
    *available = (guint64)sv.f_bavail * sv.f_frsize;
    return TRUE;
}

/* ----- a volume's descriptor ----- */

int vdd_pool_backend_open(VddPoolBackend *b, const char *name, int access, GError **error)
{
    int fd;
    if (b->type == VDD_POOL_RBD) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "%s/%s is an RBD image: the worker opens it through librbd", b->pool, name);
        return -1;
    }
    if (b->type == VDD_POOL_DIR) {
        fd = openat(b->dirfd, name, access | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    } else {
        /* /dev/VG/NAME is udev's (or LVM's) link to the device node. */
        if (!check_lv_name(b, name, error))
            return -1;
        g_autofree char *path = g_build_filename(b->directory, name, NULL);
        fd = open(path, access | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    }
    if (fd < 0) {
        vdd_error_set_errno(error, errno, "%s/%s", b->pool, name);
        return -1;
    }
    struct stat st;
    gboolean right = fstat(fd, &st) == 0 &&
                     (b->type == VDD_POOL_DIR ? S_ISREG(st.st_mode) : S_ISBLK(st.st_mode));
    if (!right) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT, "%s/%s is not %s", b->pool, name,
                    b->type == VDD_POOL_DIR ? "a regular file" : "a block device");
        close(fd);
        return -1;
    }
    /* O_NONBLOCK only kept a FIFO from hanging the open. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

/* ----- making, resizing and removing LVs ----- */

static gboolean check_logical(VddPoolBackend *b, const char *what, GError **error)
{
    if (b->type == VDD_POOL_LOGICAL || b->type == VDD_POOL_RBD)
        return TRUE;
    g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT, "pool %s: %s is for logical pools",
                b->pool, what);
    return FALSE;
}

/* "-L SIZEk": whole KiB, rounded up (lvcreate rounds up again to whole
 * extents). */
static char *size_k(guint64 size)
{
    return g_strdup_printf("%" G_GUINT64_FORMAT "k", (size + 1023) / 1024);
}

gboolean vdd_pool_backend_create(VddPoolBackend *b, const char *name, guint64 size, GError **error)
{
    if (!check_logical(b, "making a logical volume", error))
        return FALSE;
#if VDD_HAVE_RBD
    if (b->type == VDD_POOL_RBD)
        return vdd_rbd_pool_create(b->rbd, name, size, error);
#endif
    if (!check_lv_name(b, name, error))
        return FALSE;
    if (size == 0) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "%s/%s: a logical volume cannot be empty", b->pool, name);
        return FALSE;
    }
    g_autofree char *k = size_k(size);
    /* --yes: a signature left on the disk below is wiped, not asked about. */
    const char *argv[] = { "lvcreate", "--yes", "--name", name, "-L", k, b->vg, NULL };
    if (!run_lvm(argv, NULL, error)) {
        g_prefix_error(error, "%s/%s: ", b->pool, name);
        return FALSE;
    }
    return TRUE;
}

gboolean vdd_pool_backend_resize(VddPoolBackend *b, const char *name, guint64 size, gboolean shrink,
                                 GError **error)
{
    if (!check_logical(b, "resizing a logical volume", error))
        return FALSE;
#if VDD_HAVE_RBD
    if (b->type == VDD_POOL_RBD)
        return vdd_rbd_pool_resize(b->rbd, name, size, shrink, error);
#endif
    if (!check_lv_name(b, name, error))
        return FALSE;
    g_autofree char *k = size_k(size);
    g_autofree char *lv = g_strdup_printf("%s/%s", b->vg, name);
    /* -f: a shrink the caller asked for is not asked about again. */
    const char *grow[] = { "lvresize", "-L", k, lv, NULL };
    const char *shrink_argv[] = { "lvresize", "-f", "-L", k, lv, NULL };
    if (!run_lvm(shrink ? shrink_argv : grow, NULL, error)) {
        g_prefix_error(error, "%s/%s: ", b->pool, name);
        return FALSE;
    }
    return TRUE;
}

gboolean vdd_pool_backend_remove(VddPoolBackend *b, const char *name, GError **error)
{
    if (b->type == VDD_POOL_DIR) {
        if (unlinkat(b->dirfd, name, 0) < 0 && errno != ENOENT) {
            vdd_error_set_errno(error, errno, "cannot delete");
            return FALSE;
        }
        return TRUE;
    }
#if VDD_HAVE_RBD
    if (b->type == VDD_POOL_RBD)
        return vdd_rbd_pool_remove(b->rbd, name, error);
#endif
    if (!check_lv_name(b, name, error))
        return FALSE;
    g_autofree char *lv = g_strdup_printf("%s/%s", b->vg, name);
    const char *argv[] = { "lvremove", "-f", lv, NULL };
    if (!run_lvm(argv, NULL, error)) {
        g_prefix_error(error, "%s/%s: ", b->pool, name);
        return FALSE;
    }
    return TRUE;
}
