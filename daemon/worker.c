/* vdisk-worker: one job's image work, for vdiskd, in a process that can do
 * nothing else (worker-confine.h). vdiskd starts it with its end of a
 * socketpair at descriptor 3 and sends one request (worker-protocol.h); the
 * worker confines itself, does the job, and answers with progress and a
 * result. It never opens the job's files for writing itself: vdiskd
 * passes every descriptor the job writes to. */
#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <locale.h>
#include <stdio.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include "worker-confine.h"
#include "worker-protocol.h"
#include "vdisk.h"

#define SOCK VDD_WIRE_WORKER_FD

/* Bounds of one job; vdiskd may ask for less. */
#define DEFAULT_ADDRESS_SPACE (4ull << 30)
#define DEFAULT_CPU_SECONDS (4 * 3600)
#define OPEN_FILES 64
/* A split vmdk's extents are all open at once; vdiskd passes at most
 * this many of a caller's files. */
#define MAX_MORE_OPEN_FILES 2048
/* A Ceph client holds a socket per OSD it talks to, and a few pipes. */
#define RBD_OPEN_FILES 1024

/* An image of the request (worker-protocol.h). */
typedef struct {
    GVariant *dict; /* holds the strings below */
    int fd;
    const char *label, *format, *name;
    gint32 folder; /* where name lies: an index into the request's dir-paths */
    guint32 open_flags;
    guint64 max_metadata;
    gint32 appliance_disk;  /* a caller's OVA: the disk read, or -1 */
    const char *nbd_export; /* fd is a socket to an NBD server: its export */
    /* A Ceph RBD image, opened by the worker through librbd (no fd): its
     * name without the key (rbd:POOL/IMAGE:conf=..:id=..), and the key. */
    const char *rbd, *rbd_key;
    VdOptions *open_options, *create_options;
    VdSecrets *secrets;
} Image;

typedef struct {
    GVariant *msg;
    const char *operation;
    Image source, target;
    Image backing;          /* convert: a pool volume the new target is an overlay of */
    GVariant *dirs;         /* holds dir_paths */
    const char **dir_paths; /* the pool folders; NULL: no file may be opened */
    guint n_dir_paths;
    const char *misbehave;
} Request;

/* One message at a time on the socket: progress comes from the copy's
 * threads, and a request to open a file waits for its answer. */
static GMutex wire_lock;

static int fd_at(GVariant *msg, const char *key, const int *fds, guint n_fds)
{
    gint32 i = -1;
    if (!g_variant_lookup(msg, key, "i", &i) || i < 0 || (guint)i >= n_fds)
        return -1;
    return fds[i];
}

static const char *string_or(GVariant *msg, const char *key, const char *fallback)
{
    const char *s = NULL;
    return g_variant_lookup(msg, key, "&s", &s) ? s : fallback;
}

static void image_clear(Image *img)
{
    g_clear_pointer(&img->dict, g_variant_unref);
    g_clear_pointer(&img->open_options, vd_options_free);
    g_clear_pointer(&img->create_options, vd_options_free);
    g_clear_pointer(&img->secrets, vd_secrets_free);
}

/* The image under key in msg; its strings point into msg. */
static void parse_image(GVariant *msg, const char *key, const int *fds, guint n_fds, Image *img)
{
    GVariant *v = img->dict = g_variant_lookup_value(msg, key, G_VARIANT_TYPE_VARDICT);
    img->fd = -1;
    if (v == NULL)
        return;
    img->fd = fd_at(v, "fd", fds, n_fds);
    img->label = string_or(v, "label", key);
    img->format = string_or(v, "format", NULL);
    img->name = string_or(v, "name", NULL);
    img->nbd_export = string_or(v, "nbd-export", NULL);
    img->rbd = string_or(v, "rbd", NULL);
    img->rbd_key = string_or(v, "rbd-key", NULL);
    if (!g_variant_lookup(v, "folder", "i", &img->folder))
        img->folder = 0;
    if (!g_variant_lookup(v, "open-flags", "u", &img->open_flags))
        img->open_flags = VD_OPEN_NO_RELATED_FILES;
    if (!g_variant_lookup(v, "max-metadata", "t", &img->max_metadata))
        img->max_metadata = 0;
    if (!g_variant_lookup(v, "appliance-disk", "i", &img->appliance_disk) ||
        img->appliance_disk < 0)
        img->appliance_disk = -1;
    g_autoptr(GVariant) open = g_variant_lookup_value(v, "open-options", NULL);
    g_autoptr(GVariant) create = g_variant_lookup_value(v, "create-options", NULL);
    g_autoptr(GVariant) secrets = g_variant_lookup_value(v, "secrets", NULL);
    img->open_options = open != NULL ? vdd_wire_options_from_variant(open) : NULL;
    img->create_options = vdd_wire_options_from_variant(create);
    img->secrets = vdd_wire_secrets_from_variant(secrets);
}

static void send_progress(guint64 done, guint64 total, gpointer data)
{
    static gint64 last_sent;
    static gboolean failed;
    gint64 now = g_get_monotonic_time();
    g_mutex_lock(&wire_lock);
    /* A few messages a second are plenty for a progress bar. */
    if (!failed && (done >= total || now - last_sent >= G_USEC_PER_SEC / 10)) {
        last_sent = now;
        GVariantBuilder b;
        g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
        g_variant_builder_add(&b, "{sv}", "progress", g_variant_new("(tt)", done, total));
        failed = !vdd_wire_send(SOCK, g_variant_builder_end(&b), NULL, 0, NULL);
    }
    g_mutex_unlock(&wire_lock);
}

/* VdConfinement.open_beneath: the worker may open no file itself (its
 * user could not read the pool's files, and Landlock forbids it anyway);
 * vdiskd opens the name beneath the pool and passes the descriptor. */
static int ask_vdiskd_to_open(const char *rel, int flags, gpointer data)
{
    if ((flags & O_ACCMODE) != O_RDONLY) {
        errno = EACCES;
        return -1;
    }
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "open", g_variant_new_string(rel));
    g_variant_builder_add(&b, "{sv}", "directory",
                          g_variant_new_boolean((flags & O_DIRECTORY) != 0));
    g_variant_builder_add(&b, "{sv}", "folder", g_variant_new_int32(GPOINTER_TO_INT(data)));
    int fds[VDD_WIRE_MAX_FDS];
    guint n_fds = 0;
    g_mutex_lock(&wire_lock);
    g_autoptr(GVariant) answer = vdd_wire_send(SOCK, g_variant_builder_end(&b), NULL, 0, NULL)
                                     ? vdd_wire_receive(SOCK, fds, &n_fds, NULL)
                                     : NULL;
    g_mutex_unlock(&wire_lock);
    gint32 err = EIO;
    if (answer != NULL)
        g_variant_lookup(answer, "errno", "i", &err);
    int fd = -1;
    for (guint i = 0; i < n_fds; i++) {
        if (err == 0 && fd < 0)
            fd = fds[i];
        else
            close(fds[i]);
    }
    if (fd < 0)
        errno = err != 0 ? err : EIO;
    return fd;
}

/* The folder an image's names lie in, or NULL. */
static const char *folder_of(const Request *r, const Image *img)
{
    return img->folder >= 0 && (guint)img->folder < r->n_dir_paths ? r->dir_paths[img->folder]
                                                                   : NULL;
}

static VdConfinement confinement_for(const Request *r, const Image *img)
{
    const char *dir = folder_of(r, img);
    return (VdConfinement){ .dirfd = -1,
                            .dir_path = dir != NULL ? dir : "",
                            .max_metadata = img->max_metadata,
                            .open_beneath = ask_vdiskd_to_open,
                            .open_data = GINT_TO_POINTER(img->folder) };
}

static gboolean pool_relative(const Request *r, const Image *img)
{
    return img->name != NULL && folder_of(r, img) != NULL;
}

/* The name the engine opens an RBD image by: the pool's, with the key. */
static char *rbd_name_with_key(const Image *img)
{
    return img->rbd_key != NULL ? g_strdup_printf("%s:key=%s", img->rbd, img->rbd_key)
                                : g_strdup(img->rbd);
}

/* An error of the engine names the image by the name it was opened by,
 * which holds the key: messages go back over the bus, the key never. */
static void scrub_key(const Image *img, GError *error)
{
    if (error == NULL || img->rbd == NULL)
        return;
    g_autofree char *full = rbd_name_with_key(img);
    g_autoptr(GString) m = g_string_new(error->message);
    g_string_replace(m, full, img->label, 0);
    if (img->rbd_key != NULL && *img->rbd_key != '\0')
        g_string_replace(m, img->rbd_key, "(key)", 0);
    g_free(error->message);
    error->message = g_string_free(g_steal_pointer(&m), FALSE);
}

/* An RBD image (raw: the image is the disk), through librbd. */
static VdImage *open_rbd(const Image *img, VdOpenFlags flags, GError **error)
{
    g_autofree char *name = rbd_name_with_key(img);
    VdImage *image = vd_image_open_opts(
        name, "raw", flags | VD_OPEN_NO_RELATED_FILES | VD_OPEN_NO_BACKING, NULL, NULL, error);
    if (image == NULL && error != NULL)
        scrub_key(img, *error);
    return image;
}

/* A pool volume's names are resolved beneath the pool (by vdiskd); a
 * caller's file names none, and is bounded as the request says. */
static VdImage *open_image(const Request *r, const Image *img, const char *format,
                           VdOpenFlags extra, GError **error)
{
    VdOpenFlags flags = img->open_flags | extra;
    if (img->rbd != NULL)
        return open_rbd(img, flags, error);
    const VdConfinement c = confinement_for(r, img);
    if (pool_relative(r, img))
        return vd_image_open_fd_confined(img->fd, img->name, format, flags, img->open_options,
                                         img->secrets, &c, error);
    flags |= VD_OPEN_NO_RELATED_FILES;
    if (img->max_metadata == 0)
        return vd_image_open_fd_opts(img->fd, img->label, format, flags, img->open_options,
                                     img->secrets, error);
    return vd_image_open_fd_confined(img->fd, img->label, format, flags, img->open_options,
                                     img->secrets, &c, error);
}

#ifdef VDD_TEST_HOOKS
/* What a taken-over parser might try; the confinement must stop each. */
static gboolean misbehave(const Request *r, GError **error)
{
    const char *what = r->misbehave;
    if (g_str_equal(what, "open-shadow")) {
        int fd = open("/etc/shadow", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e), "misbehave: /etc/shadow: %s",
                        g_strerror(e));
            return FALSE;
        }
        /* Not stopped: leak the file into the target for the test to see. */
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0 && r->target.fd >= 0 && pwrite(r->target.fd, buf, n, 0) != n)
            n = -1;
        close(fd);
    } else if (g_str_equal(what, "socket")) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) {
            int e = errno;
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e), "misbehave: socket: %s",
                        g_strerror(e));
            return FALSE;
        }
        close(s);
    } else if (g_str_equal(what, "exec")) {
        execl("/bin/sh", "sh", "-c", "true", (char *)NULL);
        int e = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e), "misbehave: exec: %s",
                    g_strerror(e));
        return FALSE;
    } else if (g_str_equal(what, "write-outside")) {
        int fd = open("/tmp/vdisk-worker-outside", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            int e = errno;
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e),
                        "misbehave: /tmp/vdisk-worker-outside: %s", g_strerror(e));
            return FALSE;
        }
        close(fd);
    } else if (g_str_equal(what, "hang")) {
        /* A parser in an endless wait: vdiskd must kill it on cancel. */
        for (int i = 0; i < 600; i++)
            g_usleep(G_USEC_PER_SEC / 10);
    } else {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "unknown misbehave %s", what);
        return FALSE;
    }
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "misbehave %s was not stopped", what);
    return FALSE;
}
#endif

static GVariant *ok_result(void) { return g_variant_ref_sink(g_variant_new_boolean(TRUE)); }

/* info and describe: the header, as vdisk info reads it. describe also
 * says what the first bytes look like (vdiskd records the format of a
 * volume it has not seen, and warns of a raw volume that now looks like
 * another format), and probes when no format is given. */
static GVariant *describe(const Request *r, gboolean probe, GError **error)
{
    const char *probed = probe ? vd_probe_fd(r->source.fd, r->source.label, NULL, NULL) : NULL;
    const char *format = r->source.format != NULL ? r->source.format : probed;
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    if (probed != NULL)
        g_variant_dict_insert(&d, "probed", "s", probed);
    /* An appliance is a tar of images, never a volume: vdiskd refuses it. */
    if (probe && g_strcmp0(format, "ova") == 0)
        return g_variant_ref_sink(g_variant_dict_end(&d));
    g_autoptr(VdImage) img = open_image(r, &r->source, format, 0, error);
    g_autoptr(VdImageInfo) info = img != NULL ? vd_image_get_info(img, error) : NULL;
    if (info == NULL) {
        g_variant_dict_clear(&d);
        return NULL;
    }
    g_variant_dict_insert_value(&d, "info", vdd_wire_info_to_variant(info));
    return g_variant_ref_sink(g_variant_dict_end(&d));
}

static void copy_options_init(VdConvertOptions *opts)
{
    vd_convert_options_init(opts);
    opts->progress = send_progress;
}

/* A caller's file probed as raw (ImportVolume, ConvertFile without
 * source-format) must look like a disk: a VM's settings, an empty file
 * or text copied as a raw disk makes a volume that boots nothing. */
static gboolean check_probed_source(const Request *r, GError **error)
{
    gboolean fell_back = FALSE;
    if (r->source.format != NULL || pool_relative(r, &r->source))
        return TRUE;
    if (vd_probe_fd(r->source.fd, r->source.label, &fell_back, error) == NULL)
        return FALSE;
    VdRawKind kind = VD_RAW_DISK;
    g_autoptr(GError) local = NULL;
    if (!fell_back || vd_raw_check_fd(r->source.fd, r->source.label, &kind, &local))
        return TRUE;
    if (kind == VD_RAW_DISK) {
        g_propagate_error(error, g_steal_pointer(&local));
        return FALSE;
    }
    gboolean vm = kind == VD_RAW_VBOX_SETTINGS || kind == VD_RAW_OVF || kind == VD_RAW_VMX;
    g_set_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT,
                "%s; %sgive source-format=raw to copy it as a raw disk anyway", local->message,
                vm ? "import the VM with vdiskctl import-vm, or " : "");
    return FALSE;
}

/* An import from an NBD server: the caller connected the socket, the
 * worker only speaks NBD on it (the handshake, then reads and block
 * status), with no socket or address of its own. */
static VdImage *open_nbd_source(const Image *s, GError **error)
{
    VdImage *img =
        vd_image_open_nbd_socket(s->fd, s->nbd_export, "raw", VD_OPEN_NO_RELATED_FILES, error);
    if (img == NULL)
        g_prefix_error(error, "%s: ", s->label);
    return img;
}

/* The import's source: a caller's OVA appliance (the disk the request
 * names, or its only one) is read in place; anything else as it is. */
static VdImage *open_source(const Request *r, GError **error)
{
    const Image *s = &r->source;
    if (s->nbd_export != NULL)
        return open_nbd_source(s, error);
    gboolean ova = s->appliance_disk >= 0 || g_strcmp0(s->format, "ova") == 0;
    if (!ova && s->format == NULL && !pool_relative(r, s))
        ova = g_strcmp0(vd_probe_fd(s->fd, s->label, NULL, NULL), "ova") == 0;
    if (!ova)
        return open_image(r, s, s->format, 0, error);
    g_autoptr(GError) local = NULL;
    VdImage *img =
        vd_image_open_ova_fd(s->fd, s->label, s->appliance_disk, s->max_metadata, &local);
    if (img == NULL && s->appliance_disk < 0 &&
        g_error_matches(local, VD_ERROR, VD_ERROR_INVALID_ARGUMENT)) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "%s is an appliance of several disks; the appliance-disk option picks one "
                    "(0 for the first)",
                    s->label);
        return NULL;
    }
    if (img == NULL)
        g_propagate_error(error, g_steal_pointer(&local));
    return img;
}

/* The target of a convert that is an overlay of a pool volume: the
 * volume vdiskd passed answers for the name the target gives its backing
 * file; every other name the chain below it gives is asked of vdiskd. */
typedef struct {
    gint32 folder;
    const char *name;
    int fd;
} PassedBacking;

static int open_passed_backing(const char *rel, int flags, gpointer data)
{
    const PassedBacking *b = data;
    if (!(flags & O_DIRECTORY) && (flags & O_ACCMODE) == O_RDONLY && g_str_equal(rel, b->name))
        return fcntl(b->fd, F_DUPFD_CLOEXEC, 3);
    return ask_vdiskd_to_open(rel, flags, GINT_TO_POINTER(b->folder));
}

/* A convert into an RBD image vdiskd made for it, as large as the
 * source and reading as zeroes: only the source's data is written. */
static GVariant *convert_into_rbd(const Request *r, VdImage *source, GError **error)
{
    if (g_strcmp0(r->target.format, "raw") != 0) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "%s: an RBD image holds a raw disk, not %s", r->target.label, r->target.format);
        return NULL;
    }
    g_autoptr(VdImage) target = open_rbd(&r->target, VD_OPEN_READ_WRITE, error);
    if (target == NULL)
        return NULL;
    if (vd_image_size(target) < vd_image_size(source)) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "%s: %" G_GUINT64_FORMAT
                    " bytes is smaller than the source's %" G_GUINT64_FORMAT,
                    r->target.label, vd_image_size(target), vd_image_size(source));
        return NULL;
    }
    VdConvertOptions opts;
    copy_options_init(&opts);
    opts.target_exists = TRUE;
    opts.target_is_zero = TRUE;
    gboolean ok = vd_copy_image(source, target, &opts, error);
    if (!ok)
        scrub_key(&r->target, *error);
    return ok ? ok_result() : NULL;
}

static GVariant *convert(const Request *r, GError **error)
{
    if (!check_probed_source(r, error))
        return NULL;
    g_autoptr(VdImage) source = open_source(r, error);
    if (source == NULL)
        return NULL;
    if (r->target.rbd != NULL)
        return convert_into_rbd(r, source, error);
    VdConvertOptions opts;
    copy_options_init(&opts);
    opts.target_format = r->target.format != NULL ? r->target.format : "raw";
    opts.create_options = r->target.create_options;
    opts.secrets = r->target.secrets;
    opts.target_open_flags = r->target.open_flags;
    /* A new pool volume may have a backing volume beneath the pool. */
    VdConfinement c = confinement_for(r, &r->target);
    if (pool_relative(r, &r->target))
        opts.target_confine = &c;
    else
        opts.target_open_flags |= VD_OPEN_NO_RELATED_FILES;
    /* An overlay of the volume passed as "backing" (ImportVolume's
     * backing-volume), named by its name beside the target: only what the
     * top of the source holds is copied, the rest is the backing's. */
    PassedBacking passed = { r->target.folder, r->backing.name, r->backing.fd };
    if (r->backing.fd >= 0) {
        if (!pool_relative(r, &r->target) || r->backing.name == NULL ||
            strchr(r->backing.name, '/') != NULL) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "a backing volume goes with a pool volume target, beside it");
            return NULL;
        }
        opts.backing_file = r->backing.name;
        opts.backing_format = r->backing.format != NULL ? r->backing.format : "qcow2";
        c.open_beneath = open_passed_backing;
        c.open_data = &passed;
    }
    const char *name = pool_relative(r, &r->target) ? r->target.name : r->target.label;
    return vd_convert_fd(source, r->target.fd, name, &opts, error) ? ok_result() : NULL;
}

/* CopyFrom: the source's content over an existing volume as large. */
static GVariant *copy_over(const Request *r, GError **error)
{
    g_autoptr(VdImage) source = open_image(r, &r->source, r->source.format, 0, error);
    g_autoptr(VdImage) target =
        source != NULL ? open_image(r, &r->target, r->target.format, VD_OPEN_READ_WRITE, error)
                       : NULL;
    if (target == NULL)
        return NULL;
    if (vd_image_size(target) < vd_image_size(source)) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "%s: %" G_GUINT64_FORMAT " bytes is smaller than %s (%" G_GUINT64_FORMAT
                    " bytes); resize it first",
                    r->target.label, vd_image_size(target), r->source.label, vd_image_size(source));
        return NULL;
    }
    VdConvertOptions opts;
    copy_options_init(&opts);
    opts.target_exists = TRUE;
    return vd_copy_image(source, target, &opts, error) ? ok_result() : NULL;
}

static GVariant *resize(const Request *r, GError **error)
{
    guint64 size = 0;
    gboolean shrink = FALSE;
    g_variant_lookup(r->msg, "size", "t", &size);
    g_variant_lookup(r->msg, "shrink", "b", &shrink);
    g_autoptr(VdImage) img = open_image(r, &r->target, r->target.format, VD_OPEN_READ_WRITE, error);
    if (img == NULL)
        return NULL;
    send_progress(0, size, NULL);
    if (!vd_image_resize(img, size, shrink, error) || !vd_image_flush(img, error))
        return NULL;
    send_progress(size, size, NULL);
    return ok_result();
}

static GVariant *snapshot(const Request *r, GError **error)
{
    const char *op = string_or(r->msg, "snapshot-op", "");
    const char *name = string_or(r->msg, "snapshot", "");
    g_autoptr(VdImage) img = open_image(r, &r->target, r->target.format, VD_OPEN_READ_WRITE, error);
    if (img == NULL)
        return NULL;
    gboolean ok;
    if (g_str_equal(op, "create"))
        ok = vd_image_create_snapshot(img, name, error);
    else if (g_str_equal(op, "revert"))
        ok = vd_image_apply_snapshot(img, name, error);
    else if (g_str_equal(op, "delete"))
        ok = vd_image_delete_snapshot(img, name, error);
    else {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "unknown snapshot-op '%s'", op);
        return NULL;
    }
    return ok && vd_image_flush(img, error) ? ok_result() : NULL;
}

/* CreateVolume and CreateOverlay: a new image, whose backing volume (if
 * its options name one) lies beneath the pool. */
static GVariant *create(const Request *r, GError **error)
{
    guint64 size = 0;
    g_variant_lookup(r->msg, "size", "t", &size);
    const Image *t = &r->target;
    const char *format = t->format != NULL ? t->format : "raw";
    const VdConfinement c = confinement_for(r, t);
    gboolean ok = pool_relative(r, t)
                      ? vd_image_create_fd_confined(t->fd, t->name, format, size, t->create_options,
                                                    t->secrets, &c, error)
                      : vd_image_create_fd_with_secrets(t->fd, t->label, format, size,
                                                        t->create_options, t->secrets, error);
    return ok ? ok_result() : NULL;
}

static GVariant *run(const Request *r, GError **error)
{
    if (r->misbehave != NULL) {
#ifdef VDD_TEST_HOOKS
        misbehave(r, error);
        return NULL;
#else
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "misbehave: this worker was built without test hooks");
        return NULL;
#endif
    }
    const char *op = r->operation;
    if (g_str_equal(op, "status"))
        return ok_result();
    if (g_str_equal(op, "info") || g_str_equal(op, "describe"))
        return describe(r, g_str_equal(op, "describe"), error);
    if (g_str_equal(op, "convert"))
        return convert(r, error);
    if (g_str_equal(op, "copy"))
        return copy_over(r, error);
    if (g_str_equal(op, "resize"))
        return resize(r, error);
    if (g_str_equal(op, "snapshot"))
        return snapshot(r, error);
    return create(r, error);
}

/* Which images each operation needs. */
static const struct {
    const char *operation;
    gboolean source, target;
} operations[] = {
    { "status", FALSE, FALSE },  { "info", TRUE, FALSE },   { "describe", TRUE, FALSE },
    { "convert", TRUE, TRUE },   { "copy", TRUE, TRUE },    { "resize", FALSE, TRUE },
    { "snapshot", FALSE, TRUE }, { "create", FALSE, TRUE }, { "serve-nbd", TRUE, FALSE },
};

static gboolean parse_request(GVariant *msg, const int *fds, guint n_fds, Request *r,
                              GError **error)
{
    r->msg = msg;
    r->operation = string_or(msg, "operation", "");
    r->dirs = g_variant_lookup_value(msg, "dir-paths", G_VARIANT_TYPE_STRING_ARRAY);
    gsize n_dirs = 0;
    r->dir_paths = r->dirs != NULL ? g_variant_get_strv(r->dirs, &n_dirs) : NULL;
    r->n_dir_paths = (guint)n_dirs;
    r->misbehave = string_or(msg, "misbehave", NULL);
    parse_image(msg, "source", fds, n_fds, &r->source);
    parse_image(msg, "target", fds, n_fds, &r->target);
    parse_image(msg, "backing", fds, n_fds, &r->backing);
    for (guint i = 0; i < G_N_ELEMENTS(operations); i++) {
        if (!g_str_equal(operations[i].operation, r->operation))
            continue;
        if ((operations[i].source && r->source.fd < 0 && r->source.rbd == NULL) ||
            (operations[i].target && r->target.fd < 0 && r->target.rbd == NULL)) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "the request lacks a source or target descriptor");
            return FALSE;
        }
        return TRUE;
    }
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "unknown operation '%s'",
                r->operation);
    return FALSE;
}

static int finish(GVariantBuilder *b)
{
    return vdd_wire_send(SOCK, g_variant_builder_end(b), NULL, 0, NULL) ? 0 : 1;
}

/* Where nbdkit finds its descriptors: the listening socket first, as
 * socket activation passes it, then the volume its plugin serves, the
 * pipe its key comes through, and the files the volume names. */
#define NBDKIT_LISTEN_FD 3
#define NBDKIT_VOLUME_FD 4
#define NBDKIT_KEY_FD 5
#define NBDKIT_FIRST_FILE_FD 6
/* The most files a served volume may name (the plugin's backing-fd=). */
#define MAX_SERVED_FILES 32
/* Above every descriptor nbdkit gets, so that none is overwritten while
 * they are put in place. */
#define NBDKIT_STAGING_FD (NBDKIT_FIRST_FILE_FD + MAX_SERVED_FILES)

/* serve-nbd: what the volume names (its backing chain), asked of vdiskd
 * as every job asks, each kept for nbdkit in the order asked. */
typedef struct {
    gint32 folder;
    GArray *fds; /* of int */
} ServedFiles;

static int open_for_server(const char *rel, int flags, gpointer data)
{
    ServedFiles *files = data;
    if (files->fds->len >= MAX_SERVED_FILES) {
        errno = EMFILE;
        return -1;
    }
    int fd = ask_vdiskd_to_open(rel, flags, GINT_TO_POINTER(files->folder));
    if (fd < 0)
        return -1;
    int kept = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (kept < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    g_array_append_val(files->fds, kept);
    return fd;
}

/* Open the served volume as the worker's jobs open it, read-only and
 * taking no locks (vdiskd holds them; nbdkit takes its own): a wrong or
 * missing key, or a file the volume names that vdiskd will not open, is
 * said here, as the job's error, before nbdkit starts. files gets the
 * descriptors of the files it names. */
static gboolean check_served(const Request *r, ServedFiles *files, GError **error)
{
    const Image *s = &r->source;
    if (!pool_relative(r, s)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "serve-nbd serves a pool volume");
        return FALSE;
    }
    VdConfinement c = confinement_for(r, s);
    c.open_beneath = open_for_server;
    c.open_data = files;
    VdOpenFlags flags = (s->open_flags & ~VD_OPEN_READ_WRITE) | VD_OPEN_NO_LOCKING;
    g_autoptr(VdImage) img = vd_image_open_fd_confined(s->fd, s->name, s->format, flags,
                                                       s->open_options, s->secrets, &c, error);
    if (img == NULL)
        return FALSE;
    /* nbdkit gets the files it names read-only, as vdiskd opens them. */
    g_autoptr(GPtrArray) related = vd_image_related_files(img);
    if (related->len > 0 && (s->open_flags & VD_OPEN_READ_WRITE)) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "%s writes into another file (%s), which is served read-only only: serve it "
                    "read-only",
                    s->label, (const char *)related->pdata[0]);
        return FALSE;
    }
    if (vd_image_needs_key(img)) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "%s is encrypted and was opened without its passphrase (give "
                    "volume-key-secret=ID with the secret; vdiskctl: --object "
                    "secret,id=ID,file=FILE --key-secret ID)",
                    s->label);
        return FALSE;
    }
    return TRUE;
}

/* The key the request opens the volume with, or NULL. */
static const guint8 *served_key(const Request *r, gsize *len)
{
    const char *id = r->source.open_options != NULL
                         ? vd_options_get(r->source.open_options, "encrypt.key-secret")
                         : NULL;
    return id != NULL && r->source.secrets != NULL ? vd_secrets_lookup(r->source.secrets, id, len)
                                                   : NULL;
}

/* A pipe holding the key (all of it: the pipe's buffer takes it), its
 * writing end closed: nbdkit reads it with key-secret-fd=, and the key
 * is in no argument, variable or file. The read end, or -1. */
static int key_pipe(const guint8 *key, gsize len, GError **error)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "serve-nbd: key: %s",
                    g_strerror(errno));
        return -1;
    }
    int room = fcntl(p[1], F_GETPIPE_SZ);
    gsize done = 0;
    while (room > 0 && len <= (gsize)room && done < len) {
        ssize_t n = write(p[1], key + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += (gsize)n;
    }
    close(p[1]);
    if (done < len) {
        close(p[0]);
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "serve-nbd: the key (%" G_GSIZE_FORMAT " bytes) does not fit in a pipe", len);
        return -1;
    }
    return p[0];
}

/* serve-nbd: become nbdkit ("nbdkit" s, an absolute path) with vdisk's
 * plugin ("plugin" s) serving the volume (source, of its recorded
 * format, with its key) on the caller's listening socket ("listener" i),
 * read-only with "readonly" b. The worker confines itself first, as the
 * program it starts needs (worker-confine.h: it may execute nbdkit, read
 * what nbdkit runs from, and make no socket nor connection), opens the
 * volume as a job does (asking vdiskd for its backing chain), answers
 * vdiskd, and starts nbdkit as its child with the volume, the files it
 * names and its key as inherited descriptors (nbdkit may open no pool
 * file), which it stops when vdiskd closes the socket. Returns the
 * worker's exit status. */
static int serve_nbd(Request *r, const int *fds, guint n_fds)
{
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_autoptr(GError) error = NULL;
    int listener = fd_at(r->msg, "listener", fds, n_fds);
    const char *nbdkit = string_or(r->msg, "nbdkit", "");
    const char *plugin = string_or(r->msg, "plugin", "");
    gboolean readonly = FALSE;
    g_variant_lookup(r->msg, "readonly", "b", &readonly);
    if (listener < 0 || r->source.format == NULL || !g_path_is_absolute(nbdkit) ||
        !g_path_is_absolute(plugin)) {
        g_set_error(&error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "serve-nbd needs a listener, the volume's format and where nbdkit and its "
                    "plugin are");
        vdd_wire_add_error(&b, error);
        return finish(&b);
    }
    const int keep[] = { SOCK, r->source.fd, listener };
    const char *const read_paths[] = { "/usr", "/etc/ld.so.cache", plugin, NULL };
    const VddConfineSpec spec = { .keep_fds = keep,
                                  .n_keep_fds = G_N_ELEMENTS(keep),
                                  .address_space = DEFAULT_ADDRESS_SPACE,
                                  .cpu_seconds = 0, /* it serves until stopped */
                                  .open_files = OPEN_FILES + 2 * MAX_SERVED_FILES,
                                  .exec_path = nbdkit,
                                  .read_paths = read_paths };
    VddConfinement state;
    if (!vdd_confine_apply(&spec, &state, &error)) {
        g_warning("the worker could not confine itself: %s", error->message);
        return 3;
    }
    g_variant_builder_add(&b, "{sv}", "confinement", vdd_confinement_to_variant(&state));
    vdd_confinement_clear(&state);
    g_autoptr(GArray) named = g_array_new(FALSE, FALSE, sizeof(int));
    ServedFiles files = { r->source.folder, named };
    gsize key_len = 0;
    const guint8 *key = served_key(r, &key_len);
    int key_fd = -1;
    if (!check_served(r, &files, &error) ||
        (key != NULL && (key_fd = key_pipe(key, key_len, &error)) < 0)) {
        vdd_wire_add_error(&b, error);
        return finish(&b);
    }
    /* nbdkit has the key now; this process keeps no copy. */
    vdd_wire_wipe_secrets(r->msg);
    g_clear_pointer(&r->source.secrets, vd_secrets_free);
    /* Every descriptor nbdkit gets, where it gets it. */
    g_autoptr(GArray) from = g_array_new(FALSE, FALSE, sizeof(int));
    g_autoptr(GArray) to = g_array_new(FALSE, FALSE, sizeof(int));
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(argv, g_strdup(nbdkit));
    g_ptr_array_add(argv, g_strdup("--exit-with-parent"));
    g_ptr_array_add(argv, g_strdup(plugin));
    /* The volume's path names it in messages, and its backing files are
     * found beside it as the worker found them. */
    g_ptr_array_add(argv, g_strdup_printf("file=%s", r->source.label));
    g_ptr_array_add(argv, g_strdup_printf("fd=%d", NBDKIT_VOLUME_FD));
    g_ptr_array_add(argv, g_strdup_printf("format=%s", r->source.format));
    if (readonly)
        g_ptr_array_add(argv, g_strdup("readonly=true"));
    const int listen_to = NBDKIT_LISTEN_FD, volume_to = NBDKIT_VOLUME_FD, key_to = NBDKIT_KEY_FD;
    g_array_append_val(from, listener);
    g_array_append_val(to, listen_to);
    g_array_append_val(from, r->source.fd);
    g_array_append_val(to, volume_to);
    if (key_fd >= 0) {
        g_ptr_array_add(argv, g_strdup_printf("key-secret-fd=%d", NBDKIT_KEY_FD));
        g_array_append_val(from, key_fd);
        g_array_append_val(to, key_to);
    }
    for (guint i = 0; i < named->len; i++) {
        int target = NBDKIT_FIRST_FILE_FD + (int)i;
        g_ptr_array_add(argv, g_strdup_printf("backing-fd=%d", target));
        g_array_append_val(from, g_array_index(named, int, i));
        g_array_append_val(to, target);
    }
    g_ptr_array_add(argv, NULL);
    /* Staged above every target, so that putting one in place never
     * overwrites another. */
    for (guint i = 0; i < from->len; i++) {
        int *fd = &g_array_index(from, int, i);
        int staged = fcntl(*fd, F_DUPFD_CLOEXEC, NBDKIT_STAGING_FD);
        if (staged < 0) {
            g_set_error(&error, G_IO_ERROR, g_io_error_from_errno(errno), "serve-nbd: %s",
                        g_strerror(errno));
            vdd_wire_add_error(&b, error);
            return finish(&b);
        }
        /* The listener and volume stay the worker's; the others were its
         * own copies. */
        if (*fd != listener && *fd != r->source.fd)
            close(*fd);
        *fd = staged;
    }
    g_variant_builder_add(&b, "{sv}", "ok", g_variant_new_boolean(TRUE));
    if (finish(&b) != 0)
        return 1;
    pid_t child = fork();
    if (child < 0) {
        fprintf(stderr, "vdisk-worker: serve-nbd: %s\n", g_strerror(errno));
        return 1;
    }
    if (child == 0) {
        /* The listener replaces the socket to vdiskd, which stays the
         * worker's. */
        char pid[32];
        g_snprintf(pid, sizeof pid, "LISTEN_PID=%d", (int)getpid());
        const char *envp[] = { "LISTEN_FDS=1", pid, NULL };
        /* dup2 leaves the copy open across exec. */
        for (guint i = 0; i < from->len; i++)
            if (dup2(g_array_index(from, int, i), g_array_index(to, int, i)) < 0)
                _exit(126);
        execve(nbdkit, (char *const *)argv->pdata, (char *const *)envp);
        fprintf(stderr, "vdisk-worker: cannot run %s: %s\n", nbdkit, g_strerror(errno));
        _exit(127);
    }
    for (guint i = 0; i < from->len; i++)
        close(g_array_index(from, int, i));
    /* The worker stays nbdkit's parent, of the same user, so it may stop
     * it (vdiskd, without CAP_KILL in its unit, may not): when vdiskd
     * closes its end (the job cancelled, vdiskd gone), nbdkit is stopped;
     * when nbdkit ends, so does the worker, and vdiskd sees the socket
     * end. nbdkit's --exit-with-parent covers the worker's death. */
    for (;;) {
        int status;
        if (waitpid(child, &status, WNOHANG) == child)
            return 0;
        struct pollfd p = { .fd = SOCK, .events = POLLIN };
        char byte;
        if (poll(&p, 1, 200) > 0 && recv(SOCK, &byte, 1, MSG_DONTWAIT) <= 0)
            break;
    }
    kill(child, SIGTERM);
    for (int i = 0; i < 50; i++) {
        if (waitpid(child, NULL, WNOHANG) == child)
            return 0;
        g_usleep(100 * 1000);
    }
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return 0;
}

int main(int argc, char **argv)
{
    /* Messages are English and UTF-8 whatever the service's locale: no
     * charset module is loaded once the filesystem is out of reach. */
    setlocale(LC_ALL, "C.UTF-8");
    g_log_set_writer_func(g_log_writer_standard_streams, NULL, NULL);
    g_set_prgname("vdisk-worker");
    struct stat st;
    if (argc != 1 || fstat(SOCK, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        fprintf(stderr, "vdisk-worker does one job for vdiskd, which starts it with a socket "
                        "at descriptor 3\n");
        return 2;
    }
    const int sock = SOCK;
    vdd_confine_close_fds_except(&sock, 1);

    int fds[VDD_WIRE_MAX_FDS];
    guint n_fds = 0;
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) msg = vdd_wire_receive(SOCK, fds, &n_fds, &error);
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    if (msg == NULL) {
        g_warning("%s", error->message);
        return 1;
    }
    Request r = { 0 };
    if (!parse_request(msg, fds, n_fds, &r, &error)) {
        vdd_wire_add_error(&b, error);
        return finish(&b);
    }
    if (g_str_equal(r.operation, "serve-nbd"))
        return serve_nbd(&r, fds, n_fds);

    int keep[VDD_WIRE_MAX_FDS + 1];
    memcpy(keep, fds, n_fds * sizeof(int));
    keep[n_fds] = SOCK;
    guint64 address_space = DEFAULT_ADDRESS_SPACE, cpu = DEFAULT_CPU_SECONDS, more_files = 0;
    g_variant_lookup(msg, "address-space", "t", &address_space);
    g_variant_lookup(msg, "cpu-seconds", "t", &cpu);
    g_variant_lookup(msg, "open-files", "t", &more_files);
    /* A job on an RBD image reaches its Ceph cluster: the configuration
     * vdiskd names is the one file it reads, its sockets (one to each
     * monitor and OSD it talks to) the more files it holds. */
    const char *rbd_conf = string_or(msg, "rbd-conf", NULL);
    const char *const read_paths[] = { rbd_conf != NULL && *rbd_conf != '\0' ? rbd_conf : NULL,
                                       NULL };
    if (rbd_conf != NULL)
        more_files = MAX(more_files, RBD_OPEN_FILES);
    const VddConfineSpec spec = { .keep_fds = keep,
                                  .network = rbd_conf != NULL,
                                  .read_paths = rbd_conf != NULL ? read_paths : NULL,
                                  .n_keep_fds = n_fds + 1,
                                  /* Nothing on the filesystem: vdiskd opens what
                                   * the job reads beneath its pool. */
                                  .dir_fds = NULL,
                                  .n_dir_fds = 0,
                                  .address_space = address_space,
                                  .cpu_seconds = cpu,
                                  .open_files = OPEN_FILES + MIN(more_files, MAX_MORE_OPEN_FILES) };
    VddConfinement state;
    if (!vdd_confine_apply(&spec, &state, &error)) {
        /* Said here, for the journal; vdiskd fails the job as unsafe,
         * whatever the reason was. */
        g_warning("the worker could not confine itself: %s", error->message);
        return 3;
    }
    if (state.landlock_abi == 0)
        g_message("this kernel has no Landlock: the worker's filesystem access is not restricted "
                  "beyond its user");
    g_variant_builder_add(&b, "{sv}", "confinement", vdd_confinement_to_variant(&state));
    vdd_confinement_clear(&state);

    g_autoptr(GVariant) answer = run(&r, &error);
    scrub_key(&r.source, error);
    scrub_key(&r.target, error);
    image_clear(&r.source); /* its key with it */
    image_clear(&r.target);
    image_clear(&r.backing);
    if (answer == NULL) {
        vdd_wire_add_error(&b, error);
    } else {
        g_variant_builder_add(&b, "{sv}", "ok", g_variant_new_boolean(TRUE));
        if (g_variant_is_of_type(answer, G_VARIANT_TYPE_VARDICT)) {
            GVariantIter it;
            const char *key;
            GVariant *value;
            g_variant_iter_init(&it, answer);
            while (g_variant_iter_next(&it, "{&sv}", &key, &value)) {
                g_variant_builder_add(&b, "{sv}", key, value);
                g_variant_unref(value);
            }
        }
    }
    return finish(&b);
}
