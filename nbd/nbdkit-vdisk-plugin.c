/* nbdkit-vdisk-plugin: serve the guest view of any image libvdisk reads
 * (vdi, vmdk, qcow, cow, qcow2 with its backing chain, LUKS, an OVA's
 * disk, ...) over NBD, through nbdkit:
 *
 *   nbdkit vdisk file=disk.vdi [format=FMT] [readonly=true] ...
 *
 * The image is opened once, before nbdkit serves anyone, and every
 * connection shares that one handle. libvdisk's handle serialises what
 * changes it under its own lock, so requests may run in parallel, and a
 * flush on any connection flushes the one handle that every connection
 * writes through: multi-conn is safe, readers and writers alike. Writes
 * go into the image in its own format. The image's locks (QEMU's, see
 * formats/file-lock.c) are held from the open to nbdkit's exit, so a VM
 * or qemu-img that would write the image meanwhile is refused. */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "vdisk.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

/* backing-fd=N may be given this many times. */
#define MAX_PASSED_FILES 32
/* The longest passphrase key-secret-fd=N reads. */
#define MAX_KEY_BYTES (64 * 1024)

/* What the command line asked for; the image is opened in get_ready. */
static struct {
    char *file;     /* absolute */
    char *format;   /* NULL: probed */
    char *snapshot; /* internal snapshot to serve (read-only) */
    char *backing;  /* the top image's parent, absolute */
    int disk;       /* an OVA's disk, 1-based; 0: its only one */
    int fd;         /* an already open descriptor to serve; -1 none */
    /* The files the image names, already open (backing-fd=N), in the
     * order its open asks for them; each taken once (then -1). */
    int passed[MAX_PASSED_FILES];
    guint n_passed, next_passed;
    gboolean readonly;    /* open read-only: no write lock, no writes */
    VdOptions *open_opts; /* qemu's open options (key-secret=ID, ...) */
    VdSecrets *secrets;   /* object=secret,... and the passphrase */
} config = { .fd = -1 };

/* The one handle every connection shares. */
static VdImage *image;
static gboolean image_writable;
/* An OVA's disk is served in place, read-only. */
static gboolean serving_ova;

/* nbdkit's errno for a libvdisk error: what the NBD protocol can say. */
static int error_errno(const GError *error)
{
    if (error->domain != VD_ERROR)
        return EIO;
    switch (error->code) {
    case VD_ERROR_NO_SPACE:
        return ENOSPC;
    case VD_ERROR_INVALID_ARGUMENT:
        return EINVAL;
    case VD_ERROR_NOT_SUPPORTED:
        return ENOTSUP;
    case VD_ERROR_BUSY:
    case VD_ERROR_IO:
    case VD_ERROR_CORRUPT:
    default:
        return EIO;
    }
}

/* Report error to nbdkit (message and errno) and return -1. */
static int fail(GError *error)
{
    nbdkit_error("%s", error->message);
    nbdkit_set_error(error_errno(error));
    g_error_free(error);
    return -1;
}

/* The same for a write: libvdisk refuses a write it must not do (to the
 * first bytes of a probed raw file, as qemu) as an invalid argument, which
 * qemu's clients know as EPERM ("Operation not permitted"). */
static int fail_write(GError *error)
{
    int err =
        g_error_matches(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT) ? EPERM : error_errno(error);
    nbdkit_error("%s", error->message);
    nbdkit_set_error(err);
    g_error_free(error);
    return -1;
}

static void vdisk_load(void)
{
    config.open_opts = vd_options_new();
    config.secrets = vd_secrets_new();
}

static void vdisk_cleanup(void)
{
    /* The close writes cached metadata back and drops the locks. */
    g_clear_pointer(&image, vd_image_unref);
}

static void vdisk_unload(void)
{
    g_clear_pointer(&image, vd_image_unref);
    g_clear_pointer(&config.secrets, vd_secrets_free);
    g_clear_pointer(&config.open_opts, vd_options_free);
    g_clear_pointer(&config.file, g_free);
    g_clear_pointer(&config.format, g_free);
    g_clear_pointer(&config.snapshot, g_free);
    g_clear_pointer(&config.backing, g_free);
}

/* A path as given, made absolute: nbdkit may change to / before serving. */
static gboolean set_path(char **slot, const char *value)
{
    char *abs = nbdkit_absolute_path(value);
    if (abs == NULL)
        return FALSE;
    g_free(*slot);
    *slot = g_strdup(abs);
    free(abs);
    return TRUE;
}

/* key-secret-fd=N: the passphrase is every byte the descriptor gives
 * until its end, as qemu reads a secret's file= (a pipe the parent wrote
 * it into and closed); the descriptor is closed. */
static int set_key_fd(const char *value)
{
    int fd;
    if (nbdkit_parse_int("key-secret-fd", value, &fd) == -1)
        return -1;
    if (fd <= 2) {
        nbdkit_error("key-secret-fd=%s: not a descriptor of its own", value);
        return -1;
    }
    guint8 *buf = g_malloc(MAX_KEY_BYTES + 1);
    gsize len = 0;
    int err = 0;
    while (len <= MAX_KEY_BYTES) {
        ssize_t n = read(fd, buf + len, MAX_KEY_BYTES + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? errno : 0;
            break;
        }
        len += (gsize)n;
    }
    close(fd);
    int r = 0;
    if (err != 0) {
        nbdkit_error("key-secret-fd=%s: %s", value, g_strerror(err));
        r = -1;
    } else if (len > MAX_KEY_BYTES) {
        nbdkit_error("key-secret-fd=%s: a passphrase of more than %d bytes", value, MAX_KEY_BYTES);
        r = -1;
    } else {
        vd_secrets_set_default(config.secrets, buf, len);
    }
    explicit_bzero(buf, MAX_KEY_BYTES + 1);
    g_free(buf);
    return r;
}

static int add_passed_file(const char *value)
{
    int fd;
    if (nbdkit_parse_int("backing-fd", value, &fd) == -1)
        return -1;
    if (fd <= 2) {
        nbdkit_error("backing-fd=%s: not a descriptor of its own", value);
        return -1;
    }
    if (config.n_passed == MAX_PASSED_FILES) {
        nbdkit_error("backing-fd: at most %d descriptors", MAX_PASSED_FILES);
        return -1;
    }
    config.passed[config.n_passed++] = fd;
    return 0;
}

static int set_password(const char *value)
{
    char *password = NULL;
    if (nbdkit_read_password(value, &password) == -1)
        return -1;
    vd_secrets_set_default(config.secrets, password, strlen(password));
    explicit_bzero(password, strlen(password));
    free(password);
    return 0;
}

/* Open options of qemu's that pass through as they are: the secret an
 * encrypted image names, the backing chain's formats and files, locking. */
static gboolean is_open_option(const char *key)
{
    static const char *const plain[] = { "key-secret", "backing-format", "locking", "force-share" };
    for (gsize i = 0; i < G_N_ELEMENTS(plain); i++)
        if (g_str_equal(key, plain[i]))
            return TRUE;
    return g_str_has_prefix(key, "encrypt.") || g_str_has_prefix(key, "backing.") ||
           g_str_has_prefix(key, "file.");
}

static int vdisk_config(const char *key, const char *value)
{
    g_autoptr(GError) error = NULL;

    if (g_str_equal(key, "file"))
        return set_path(&config.file, value) ? 0 : -1;
    if (g_str_equal(key, "format")) {
        if (!vd_format_known(value) && !g_str_equal(value, "ova")) {
            g_autofree char *known = g_strjoinv(", ", (char **)vd_formats());
            nbdkit_error("format=%s: no such format (vdisk knows %s, and ova)", value, known);
            return -1;
        }
        g_free(config.format);
        config.format = g_strdup(value);
        return 0;
    }
    if (g_str_equal(key, "snapshot")) {
        g_free(config.snapshot);
        config.snapshot = g_strdup(value);
        return 0;
    }
    if (g_str_equal(key, "backing"))
        return set_path(&config.backing, value) ? 0 : -1;
    if (g_str_equal(key, "disk")) {
        if (nbdkit_parse_int("disk", value, &config.disk) == -1)
            return -1;
        if (config.disk < 1) {
            nbdkit_error("disk=%s: an OVA's disks are numbered from 1", value);
            return -1;
        }
        return 0;
    }
    if (g_str_equal(key, "fd")) {
        if (nbdkit_parse_int("fd", value, &config.fd) == -1)
            return -1;
        if (config.fd < 0) {
            nbdkit_error("fd=%s: not a file descriptor", value);
            return -1;
        }
        return 0;
    }
    if (g_str_equal(key, "readonly")) {
        int r = nbdkit_parse_bool(value);
        if (r == -1)
            return -1;
        config.readonly = r;
        return 0;
    }
    if (g_str_equal(key, "password"))
        return set_password(value);
    if (g_str_equal(key, "key-secret-fd"))
        return set_key_fd(value);
    if (g_str_equal(key, "backing-fd"))
        return add_passed_file(value);
    if (g_str_equal(key, "key-secret-file")) {
        if (!vd_secrets_set_default_from_file(config.secrets, value, &error)) {
            nbdkit_error("key-secret-file: %s", error->message);
            return -1;
        }
        return 0;
    }
    if (g_str_equal(key, "object")) {
        if (!vd_secrets_add_object(config.secrets, value, &error)) {
            nbdkit_error("object=%s: %s", value, error->message);
            return -1;
        }
        return 0;
    }
    if (is_open_option(key)) {
        vd_options_set(config.open_opts, key, value);
        return 0;
    }
    nbdkit_error("unknown parameter '%s' (nbdkit vdisk --help lists them)", key);
    return -1;
}

static int vdisk_config_complete(void)
{
    if (config.file == NULL && config.fd < 0) {
        nbdkit_error("the image to serve is missing: give file=PATH");
        return -1;
    }
    if (config.n_passed > 0 && config.fd < 0) {
        nbdkit_error("backing-fd=N goes with fd=N: the image's files all come as descriptors");
        return -1;
    }
    return 0;
}

/* Which format to open file as: the named one, or the probed one. A file
 * that probes as raw keeps qemu's rule (VD_OPEN_PROBED_RAW): what a client
 * writes can never turn it into an image of a format that names other
 * files. */
static const char *choose_format(VdOpenFlags *flags, GError **error)
{
    if (config.format != NULL)
        return config.format;
    gboolean fell_back = FALSE;
    const char *fmt = config.fd >= 0 ? vd_probe_fd(config.fd, config.file, &fell_back, error)
                                     : vd_probe_file(config.file, &fell_back, error);
    if (fmt != NULL && fell_back)
        *flags |= VD_OPEN_PROBED_RAW;
    return fmt;
}

static VdImage *open_ova(GError **error)
{
    if (config.fd >= 0) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "fd=%d: an OVA is served by file=PATH only", config.fd);
        return NULL;
    }
    return vd_image_open_ova(config.file, config.disk - 1, error);
}

/* VdConfinement.open_beneath for an image served from descriptors only:
 * each file its open asks for (its backing file, then that one's, ...) is
 * the next descriptor passed, whatever its name; nbdkit opens no file by
 * name. */
static int next_passed_file(const char *rel, int flags, gpointer data)
{
    struct stat st;
    if (config.next_passed >= config.n_passed || (flags & O_ACCMODE) != O_RDONLY) {
        errno = EACCES;
        return -1;
    }
    int fd = config.passed[config.next_passed];
    if (fstat(fd, &st) < 0)
        return -1;
    if (((flags & O_DIRECTORY) != 0) != S_ISDIR(st.st_mode)) {
        errno = S_ISDIR(st.st_mode) ? EISDIR : ENOTDIR;
        return -1;
    }
    /* The engine owns what it is given. */
    config.passed[config.next_passed++] = -1;
    return fd;
}

/* fd= with backing-fd=: the names inside the image are resolved as they
 * would be beside file= (so that one lying outside its folder is refused
 * as vdiskd refuses it), and each is answered by a passed descriptor. */
static VdImage *open_passed(const char *fmt, VdOpenFlags flags, GError **error)
{
    g_autofree char *dir = config.file != NULL ? g_path_get_dirname(config.file) : g_strdup("/");
    g_autofree char *base =
        config.file != NULL ? g_path_get_basename(config.file) : g_strdup_printf("fd%d", config.fd);
    const VdConfinement c = { .dirfd = -1, .dir_path = dir, .open_beneath = next_passed_file };
    VdImage *img = vd_image_open_fd_confined(config.fd, base, fmt, flags, config.open_opts,
                                             config.secrets, &c, error);
    for (guint i = config.next_passed; i < config.n_passed; i++) {
        close(config.passed[i]);
        config.passed[i] = -1;
    }
    config.next_passed = config.n_passed;
    return img;
}

static VdImage *open_image(GError **error)
{
    VdOpenFlags flags = 0;
    const char *fmt = choose_format(&flags, error);
    if (fmt == NULL)
        return NULL;
    const char *label = config.file != NULL ? config.file : NULL;
    if (g_str_equal(fmt, "ova")) {
        serving_ova = TRUE;
        return open_ova(error);
    }
    if (config.disk > 0) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "%s: disk=%d is for OVA appliances, and this is a %s image",
                    label != NULL ? label : "fd", config.disk, fmt);
        return NULL;
    }
    /* A snapshot is shown read-only, as qemu-nbd -l shows it. */
    if (!config.readonly && config.snapshot == NULL)
        flags |= VD_OPEN_READ_WRITE;
    if (config.backing != NULL)
        vd_options_set(config.open_opts, "backing", config.backing);
    if (config.n_passed > 0)
        return open_passed(fmt, flags, error);
    if (config.fd >= 0)
        return vd_image_open_fd_opts(config.fd, label, fmt, flags, config.open_opts, config.secrets,
                                     error);
    return vd_image_open_opts(config.file, fmt, flags, config.open_opts, config.secrets, error);
}

/* Open the image before nbdkit serves anyone (and before it forks, so that
 * errors reach the user): its locks are held from here on. */
static int vdisk_get_ready(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = open_image(&error);
    if (img == NULL) {
        nbdkit_error("%s", error->message);
        return -1;
    }
    const char *name = vd_image_filename(img);
    if (vd_image_needs_key(img)) {
        nbdkit_error(
            "%s is encrypted: give its passphrase with password=- (asked on the "
            "terminal), password=+FILE, key-secret-file=FILE, or "
            "object=secret,id=ID,file=FILE and %s=ID",
            name, g_str_equal(vd_image_format(img), "luks") ? "key-secret" : "encrypt.key-secret");
        return -1;
    }
    if (config.snapshot != NULL && !vd_image_load_snapshot(img, config.snapshot, &error)) {
        nbdkit_error("%s: snapshot '%s': %s", name, config.snapshot, error->message);
        return -1;
    }
    image_writable = !config.readonly && config.snapshot == NULL && !serving_ova;
    nbdkit_debug("serving %s (%s, %" G_GUINT64_FORMAT " bytes) %s", name, vd_image_format(img),
                 vd_image_size(img), image_writable ? "read-write" : "read-only");
    image = g_steal_pointer(&img);
    return 0;
}

static void *vdisk_open(int readonly)
{
    /* Every connection shares the one image; the handle only has to be
     * something other than NULL. */
    return image;
}

/* A writer's data is on stable storage when its connection ends, even
 * if the client never asked for a flush. */
static void vdisk_close(void *handle)
{
    g_autoptr(GError) error = NULL;
    if (image_writable && !vd_image_flush(image, &error))
        nbdkit_error("%s", error->message);
}

static int64_t vdisk_get_size(void *handle) { return (int64_t)vd_image_size(image); }

static int vdisk_can_write(void *handle) { return image_writable; }

static int vdisk_can_flush(void *handle) { return 1; }

static int vdisk_can_trim(void *handle) { return image_writable; }

static int vdisk_can_zero(void *handle) { return image_writable; }

static int vdisk_can_fua(void *handle) { return NBDKIT_FUA_EMULATE; }

static int vdisk_can_extents(void *handle) { return 1; }

/* One handle, serialised, and flush flushes it all: see the top. */
static int vdisk_can_multi_conn(void *handle) { return 1; }

static int vdisk_block_size(void *handle, uint32_t *minimum, uint32_t *preferred, uint32_t *maximum)
{
    guint32 cluster = vd_image_cluster_size(image);
    *minimum = 1;
    *preferred = CLAMP(cluster, 4096, 2 * 1024 * 1024);
    *maximum = 0xffffffff;
    return 0;
}

static int vdisk_pread(void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    GError *error = NULL;
    return vd_image_read(image, offset, buf, count, &error) ? 0 : fail(error);
}

static int vdisk_pwrite(void *handle, const void *buf, uint32_t count, uint64_t offset,
                        uint32_t flags)
{
    GError *error = NULL;
    return vd_image_write(image, offset, buf, count, &error) ? 0 : fail_write(error);
}

static int vdisk_zero(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
    GError *error = NULL;
    gboolean may_unmap = (flags & NBDKIT_FLAG_MAY_TRIM) != 0;
    return vd_image_write_zeroes(image, offset, count, may_unmap, &error) ? 0 : fail_write(error);
}

static int vdisk_trim(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
    GError *error = NULL;
    return vd_image_discard(image, offset, count, &error) ? 0 : fail_write(error);
}

static int vdisk_flush(void *handle, uint32_t flags)
{
    GError *error = NULL;
    return vd_image_flush(image, &error) ? 0 : fail(error);
}

/* base:allocation from vdisk's block status through the whole chain, as
 * qemu-nbd answers it: a range no layer stores data for is a hole, and
 * one that reads as zeroes says so, so a client copies sparsely. */
static int vdisk_extents(void *handle, uint32_t count, uint64_t offset, uint32_t flags,
                         struct nbdkit_extents *extents)
{
    guint64 end = offset + count;
    while (offset < end) {
        GError *error = NULL;
        VdBlockStatus st = { 0 };
        if (!vd_image_block_status(image, offset, end - offset, TRUE, &st, &error))
            return fail(error);
        guint32 type = 0;
        if (!(st.flags & VD_BLOCK_DATA))
            type |= NBDKIT_EXTENT_HOLE;
        if (st.flags & VD_BLOCK_ZERO)
            type |= NBDKIT_EXTENT_ZERO;
        if (nbdkit_add_extent(extents, offset, st.length, type) == -1)
            return -1;
        offset += st.length;
        if (flags & NBDKIT_FLAG_REQ_ONE)
            break;
    }
    return 0;
}

static void vdisk_dump_plugin(void)
{
    g_autofree char *formats = g_strjoinv(",", (char **)vd_formats());
    printf("vdisk_formats=%s,ova\n", formats);
}

#define VDISK_CONFIG_HELP                                                                  \
    "file=PATH              (required) the image to serve: any format vdisk reads\n"       \
    "format=FMT             its format (probed when not given; a file probed as raw\n"     \
    "                       refuses writes that would make it probe as another format)\n"  \
    "readonly=true          open the image read-only: no write lock, writes refused\n"     \
    "snapshot=NAME          serve an internal snapshot (qcow2), read-only\n"               \
    "backing=PATH           the image's parent, over what its header names\n"              \
    "backing-format=FMT     the parent's format\n"                                         \
    "disk=N                 the Nth disk of an OVA appliance (from 1; read-only)\n"        \
    "fd=N                   serve the image already open on descriptor N (file= then\n"    \
    "                       only names it in messages and for relative backing files)\n"   \
    "password=SECRET|-|+FILE|-FD   an encrypted image's passphrase, as nbdkit reads\n"     \
    "                       passwords: - asks on the terminal, +FILE reads a file,\n"      \
    "                       -FD a descriptor\n"                                            \
    "key-secret-fd=N        the passphrase: every byte descriptor N gives until its\n"     \
    "                       end (a pipe), kept as it is; N is closed\n"                    \
    "backing-fd=N           with fd=: the files the image names (its backing file,\n"      \
    "                       then that one's, ...) are not opened by name but are these\n"  \
    "                       descriptors, one per file in the order the chain names\n"      \
    "                       them (repeat backing-fd=; read-only)\n"                        \
    "key-secret-file=FILE   the passphrase from FILE (one trailing newline dropped),\n"    \
    "                       as vdisk --passphrase-file\n"                                  \
    "object=secret,id=ID,file=FILE   a secret as qemu's --object, named by\n"              \
    "                       key-secret=ID (luks) or encrypt.key-secret=ID (qcow2, qcow)\n" \
    "locking=off            take no image locks (qemu's file.locking=off)\n"               \
    "The image is opened once and shared by every connection: multi-conn is safe."

static struct nbdkit_plugin plugin = {
    .name = "vdisk",
    .longname = "vdisk virtual disk image plugin",
    .version = VDISK_VERSION,
    .description = "Serve the guest view of a virtual disk image (vdi, vmdk, qcow, cow, qcow2, "
                   "luks, vpc, raw, an OVA's disk) read and written in its own format.",
    .load = vdisk_load,
    .unload = vdisk_unload,
    .config = vdisk_config,
    .config_complete = vdisk_config_complete,
    .config_help = VDISK_CONFIG_HELP,
    .magic_config_key = "file",
    .dump_plugin = vdisk_dump_plugin,
    .get_ready = vdisk_get_ready,
    .cleanup = vdisk_cleanup,
    .open = vdisk_open,
    .close = vdisk_close,
    .get_size = vdisk_get_size,
    .block_size = vdisk_block_size,
    .can_write = vdisk_can_write,
    .can_flush = vdisk_can_flush,
    .can_trim = vdisk_can_trim,
    .can_zero = vdisk_can_zero,
    .can_fua = vdisk_can_fua,
    .can_extents = vdisk_can_extents,
    .can_multi_conn = vdisk_can_multi_conn,
    .pread = vdisk_pread,
    .pwrite = vdisk_pwrite,
    .zero = vdisk_zero,
    .trim = vdisk_trim,
    .flush = vdisk_flush,
    .extents = vdisk_extents,
};

NBDKIT_REGISTER_PLUGIN(plugin)
