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
#include <sys/socket.h>
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

typedef struct {
    GVariant *msg;
    const char *operation;
    int source_fd, target_fd, dir_fd;
    const char *source_format, *source_label, *source_name, *dir_path;
    const char *format, *target_label;
    guint32 open_flags, target_open_flags;
    guint64 max_metadata;
    const char *misbehave;
} Request;

typedef struct {
    GMutex lock;
    gint64 last_sent;
    gboolean failed;
} Progress;

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

static void send_progress(guint64 done, guint64 total, gpointer data)
{
    Progress *p = data;
    gint64 now = g_get_monotonic_time();
    g_mutex_lock(&p->lock);
    /* A few messages a second are plenty for a progress bar. */
    if (!p->failed && (done >= total || now - p->last_sent >= G_USEC_PER_SEC / 10)) {
        p->last_sent = now;
        GVariantBuilder b;
        g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
        g_variant_builder_add(&b, "{sv}", "progress", g_variant_new("(tt)", done, total));
        p->failed = !vdd_wire_send(SOCK, g_variant_builder_end(&b), NULL, 0, NULL);
    }
    g_mutex_unlock(&p->lock);
}

static VdImage *open_source(const Request *r, GError **error)
{
    if (r->dir_fd >= 0 && r->source_name != NULL) {
        const VdConfinement c = { .dirfd = r->dir_fd,
                                  .dir_path = r->dir_path,
                                  .max_metadata = r->max_metadata };
        return vd_image_open_fd_confined(r->source_fd, r->source_name, r->source_format,
                                         r->open_flags, NULL, NULL, &c, error);
    }
    if (r->max_metadata == 0)
        return vd_image_open_fd(r->source_fd, r->source_label, r->source_format, r->open_flags,
                                error);
    const VdConfinement c = { .dirfd = -1, .dir_path = "", .max_metadata = r->max_metadata };
    return vd_image_open_fd_confined(r->source_fd, r->source_label, r->source_format, r->open_flags,
                                     NULL, NULL, &c, error);
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
        if (n > 0 && r->target_fd >= 0 && pwrite(r->target_fd, buf, n, 0) != n)
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
    if (g_str_equal(r->operation, "status"))
        return g_variant_ref_sink(g_variant_new_boolean(TRUE));
    g_autoptr(VdImage) source = open_source(r, error);
    if (source == NULL)
        return NULL;
    if (g_str_equal(r->operation, "info")) {
        g_autoptr(VdImageInfo) info = vd_image_get_info(source, error);
        return info != NULL ? g_variant_ref_sink(vdd_wire_info_to_variant(info)) : NULL;
    }
    /* convert */
    g_autoptr(GVariant) create_v = g_variant_lookup_value(r->msg, "create-options", NULL);
    g_autoptr(VdOptions) create = vdd_wire_options_from_variant(create_v);
    g_autoptr(GVariant) secrets_v = g_variant_lookup_value(r->msg, "secrets", NULL);
    g_autoptr(VdSecrets) secrets = vdd_wire_secrets_from_variant(secrets_v);
    Progress p = { 0 };
    g_mutex_init(&p.lock);
    VdConvertOptions opts;
    vd_convert_options_init(&opts);
    opts.target_format = r->format;
    opts.create_options = create;
    opts.secrets = secrets;
    opts.target_open_flags = r->target_open_flags;
    opts.progress = send_progress;
    opts.progress_data = &p;
    gboolean ok = vd_convert_fd(source, r->target_fd, r->target_label, &opts, error);
    g_mutex_clear(&p.lock);
    return ok ? g_variant_ref_sink(g_variant_new_boolean(TRUE)) : NULL;
}

static gboolean parse_request(GVariant *msg, const int *fds, guint n_fds, Request *r,
                              GError **error)
{
    r->msg = msg;
    r->operation = string_or(msg, "operation", "");
    r->source_fd = fd_at(msg, "source", fds, n_fds);
    r->target_fd = fd_at(msg, "target", fds, n_fds);
    r->dir_fd = fd_at(msg, "dir", fds, n_fds);
    r->source_format = string_or(msg, "source-format", NULL);
    r->source_label = string_or(msg, "source-label", "source");
    r->source_name = string_or(msg, "source-name", NULL);
    r->dir_path = string_or(msg, "dir-path", "");
    r->format = string_or(msg, "format", "raw");
    r->target_label = string_or(msg, "target-label", "target");
    r->misbehave = string_or(msg, "misbehave", NULL);
    if (!g_variant_lookup(msg, "open-flags", "u", &r->open_flags))
        r->open_flags = VD_OPEN_NO_RELATED_FILES;
    if (!g_variant_lookup(msg, "target-open-flags", "u", &r->target_open_flags))
        r->target_open_flags = VD_OPEN_NO_RELATED_FILES;
    if (!g_variant_lookup(msg, "max-metadata", "t", &r->max_metadata))
        r->max_metadata = 0;
    /* status: no image, only the confinement the worker runs under. */
    if (g_str_equal(r->operation, "status"))
        return TRUE;
    gboolean convert = g_str_equal(r->operation, "convert");
    if (!convert && !g_str_equal(r->operation, "info")) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "unknown operation '%s'",
                    r->operation);
        return FALSE;
    }
    if (r->source_fd < 0 || (convert && r->target_fd < 0)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "the request lacks a source or target descriptor");
        return FALSE;
    }
    return TRUE;
}

static int finish(GVariantBuilder *b)
{
    return vdd_wire_send(SOCK, g_variant_builder_end(b), NULL, 0, NULL) ? 0 : 1;
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

    int keep[VDD_WIRE_MAX_FDS + 1];
    memcpy(keep, fds, n_fds * sizeof(int));
    keep[n_fds] = SOCK;
    guint64 address_space = DEFAULT_ADDRESS_SPACE, cpu = DEFAULT_CPU_SECONDS;
    g_variant_lookup(msg, "address-space", "t", &address_space);
    g_variant_lookup(msg, "cpu-seconds", "t", &cpu);
    const VddConfineSpec spec = { .keep_fds = keep,
                                  .n_keep_fds = n_fds + 1,
                                  .dir_fds = &r.dir_fd,
                                  .n_dir_fds = r.dir_fd >= 0 ? 1 : 0,
                                  .address_space = address_space,
                                  .cpu_seconds = cpu,
                                  .open_files = OPEN_FILES };
    VddConfinement state;
    if (!vdd_confine_apply(&spec, &state, &error)) {
        g_prefix_error(&error, "the worker could not confine itself: ");
        g_warning("%s", error->message);
        vdd_confinement_clear(&state);
        vdd_wire_add_error(&b, error);
        return finish(&b);
    }
    if (state.landlock_abi == 0)
        g_message("this kernel has no Landlock: the worker's filesystem access is not restricted "
                  "beyond its user");
    g_variant_builder_add(&b, "{sv}", "confinement", vdd_confinement_to_variant(&state));
    vdd_confinement_clear(&state);

    g_autoptr(GVariant) answer = run(&r, &error);
    if (answer == NULL) {
        vdd_wire_add_error(&b, error);
    } else {
        g_variant_builder_add(&b, "{sv}", "ok", g_variant_new_boolean(TRUE));
        if (g_variant_is_of_type(answer, G_VARIANT_TYPE_VARDICT))
            g_variant_builder_add(&b, "{sv}", "info", answer);
    }
    return finish(&b);
}
