#include "worker-client.h"

#include "pool-backend.h"
#if VDD_HAVE_RBD
#include "pool-backend-rbd.h"
#endif

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "errors.h"
#include "manager.h"
#include "vdisk-driver.h"
#include "worker-protocol.h"

/* How long a worker may stop in the middle of a message. */
#define MESSAGE_TIMEOUT_SECONDS 30

const char *vdd_worker_path(void)
{
    static gsize once;
    static char *path;
    if (g_once_init_enter(&once)) {
        char *p = g_strdup(g_getenv("VDISK_WORKER"));
        if (p == NULL || *p == '\0') {
            g_free(p);
            g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
            g_autofree char *dir = self ? g_path_get_dirname(self) : NULL;
            p = dir ? g_build_filename(dir, "vdisk-worker", NULL) : NULL;
            if (p == NULL || !g_file_test(p, G_FILE_TEST_IS_EXECUTABLE)) {
                g_free(p);
                p = g_build_filename(VDISK_LIBEXECDIR, "vdisk-worker", NULL);
            }
        }
        path = p;
        g_once_init_leave(&once, 1);
    }
    return path;
}

void vdd_worker_request_caller_file(GVariantDict *d, const char *operation, guint32 uid,
                                    const char *format, const char *label, VdOpenFlags flags)
{
    GVariantDict img;
    g_variant_dict_init(&img, NULL);
    g_variant_dict_insert(&img, "fd", "i", 0);
    if (format != NULL)
        g_variant_dict_insert(&img, "format", "s", format);
    g_variant_dict_insert(&img, "label", "s", label);
    g_variant_dict_insert(&img, "open-flags", "u", (guint32)flags);
    g_variant_dict_insert(&img, "max-metadata", "t", uid == 0 ? (guint64)0 : VDD_MAX_METADATA);
    g_variant_dict_insert(d, "operation", "s", operation);
    g_variant_dict_insert_value(d, "source", g_variant_dict_end(&img));
}

void vdd_worker_request_caller_chain(GVariantDict *d, const char *operation, guint32 uid,
                                     const char *format, gint32 folder, const char *source_name,
                                     const char *const *parent_names)
{
    vdd_worker_request_caller_file(d, operation, uid, format, source_name, 0);
    g_autoptr(GVariant) plain = g_variant_dict_lookup_value(d, "source", G_VARIANT_TYPE_VARDICT);
    GVariantDict img;
    g_variant_dict_init(&img, plain);
    g_variant_dict_insert(&img, "name", "s", source_name);
    g_variant_dict_insert(&img, "folder", "i", folder);
    /* Each parent named relative to the folder of the image it backs, as
     * the engine's "backing", "backing.backing", ... options take it. */
    g_autoptr(VdOptions) opts = vd_options_new();
    g_autoptr(GString) key = g_string_new("backing");
    const char *child = source_name;
    for (guint i = 0; parent_names != NULL && parent_names[i] != NULL; i++) {
        g_autoptr(GString) rel = g_string_new(NULL);
        for (const char *c = strchr(child, '/'); c != NULL; c = strchr(c + 1, '/'))
            g_string_append(rel, "../");
        g_string_append(rel, parent_names[i]);
        vd_options_set(opts, key->str, rel->str);
        g_string_prepend(key, "backing.");
        child = parent_names[i];
    }
    g_variant_dict_insert_value(&img, "open-options", vdd_wire_options_to_variant(opts));
    g_variant_dict_insert_value(d, "source", g_variant_dict_end(&img));
}

void vdd_worker_request_appliance_disk(GVariantDict *d, gint32 index)
{
    g_autoptr(GVariant) plain = g_variant_dict_lookup_value(d, "source", G_VARIANT_TYPE_VARDICT);
    GVariantDict img;
    g_variant_dict_init(&img, plain);
    g_variant_dict_insert(&img, "appliance-disk", "i", index);
    g_variant_dict_insert_value(d, "source", g_variant_dict_end(&img));
}

void vdd_worker_request_nbd_source(GVariantDict *d, const char *export_name)
{
    g_autoptr(GVariant) plain = g_variant_dict_lookup_value(d, "source", G_VARIANT_TYPE_VARDICT);
    GVariantDict img;
    g_variant_dict_init(&img, plain);
    g_variant_dict_insert(&img, "nbd-export", "s", export_name);
    g_variant_dict_insert(&img, "format", "s", "raw");
    g_variant_dict_insert_value(d, "source", g_variant_dict_end(&img));
}

void vdd_worker_request_target(GVariantDict *d, gint32 fd_index, const char *label,
                               const char *name, VdOpenFlags flags, const char *format,
                               VdOptions *create, VdSecrets *secrets)
{
    GVariantDict img;
    g_variant_dict_init(&img, NULL);
    g_variant_dict_insert(&img, "fd", "i", fd_index);
    g_variant_dict_insert(&img, "label", "s", label);
    if (name != NULL)
        g_variant_dict_insert(&img, "name", "s", name);
    g_variant_dict_insert(&img, "open-flags", "u", (guint32)flags);
    g_variant_dict_insert(&img, "max-metadata", "t", (guint64)VDD_MAX_METADATA);
    g_variant_dict_insert(&img, "format", "s", format);
    g_variant_dict_insert_value(&img, "create-options", vdd_wire_options_to_variant(create));
    g_variant_dict_insert_value(&img, "secrets", vdd_wire_secrets_to_variant(secrets, create));
    g_variant_dict_insert_value(d, "target", g_variant_dict_end(&img));
}

void vdd_worker_request_volume(GVariantDict *d, const char *role, gint32 fd_index, gint32 folder,
                               const char *format, const char *name, const char *label,
                               VdOpenFlags flags, VdOptions *open_options, VdSecrets *secrets)
{
    GVariantDict img;
    g_variant_dict_init(&img, NULL);
    g_variant_dict_insert(&img, "fd", "i", fd_index);
    if (format != NULL)
        g_variant_dict_insert(&img, "format", "s", format);
    g_variant_dict_insert(&img, "name", "s", name);
    g_variant_dict_insert(&img, "folder", "i", folder);
    g_variant_dict_insert(&img, "label", "s", label);
    g_variant_dict_insert(&img, "open-flags", "u", (guint32)flags);
    g_variant_dict_insert(&img, "max-metadata", "t", (guint64)VDD_MAX_METADATA);
    if (open_options != NULL) {
        g_variant_dict_insert_value(&img, "open-options",
                                    vdd_wire_options_to_variant(open_options));
        g_variant_dict_insert_value(&img, "secrets",
                                    vdd_wire_secrets_to_variant(secrets, open_options));
    }
    g_variant_dict_insert_value(d, role, g_variant_dict_end(&img));
}

void vdd_worker_request_rbd(GVariantDict *d, const char *role, VddPool *pool, const char *name)
{
#if VDD_HAVE_RBD
    VddRbdPool *rbd = vdd_pool_backend_rbd(vdd_pool_get_backend(pool));
    g_autoptr(GVariant) old = g_variant_dict_lookup_value(d, role, G_VARIANT_TYPE_VARDICT);
    g_return_if_fail(rbd != NULL && old != NULL);
    GVariantDict img;
    g_variant_dict_init(&img, old);
    g_autofree char *image = vdd_rbd_pool_image_name(rbd, name);
    g_variant_dict_insert(&img, "rbd", "s", image);
    g_variant_dict_insert(&img, "format", "s", "raw");
    if (vdd_rbd_pool_key(rbd) != NULL)
        g_variant_dict_insert(&img, "rbd-key", "s", vdd_rbd_pool_key(rbd));
    g_variant_dict_insert_value(d, role, g_variant_dict_end(&img));
    g_variant_dict_insert(d, "rbd-conf", "s", vdd_rbd_pool_conf(rbd));
#else
    g_return_if_reached();
#endif
}

static GError *unsafe(void)
{
    return g_error_new(VDD_ERROR, VDD_ERROR_FAILED, "the image could not be processed safely");
}

/* Said once: the same kernel and user serve every job. */
static void log_confinement(GVariant *result)
{
    static gsize once;
    g_autoptr(GVariant) c = g_variant_lookup_value(result, "confinement", G_VARIANT_TYPE_VARDICT);
    if (c == NULL || !g_once_init_enter(&once))
        return;
    const char *user = "?";
    gint32 abi = 0;
    gboolean seccomp = FALSE;
    g_variant_lookup(c, "user", "&s", &user);
    g_variant_lookup(c, "landlock-abi", "i", &abi);
    g_variant_lookup(c, "seccomp", "b", &seccomp);
    if (abi > 0)
        g_message("jobs run in vdisk-worker as %s, with Landlock ABI %d and %s", user, abi,
                  seccomp ? "a seccomp filter" : "no seccomp filter");
    else
        g_message("jobs run in vdisk-worker as %s, with %s; this kernel has no Landlock, so the "
                  "worker's filesystem access is bounded by its user only",
                  user, seccomp ? "a seccomp filter" : "no seccomp filter");
    g_once_init_leave(&once, 1);
}

/* Every worker's operation and the user it ran as, for debugging (and
 * for the tests that check every job runs in a worker). */
static void log_job(GPid pid, GVariant *request, GVariant *result)
{
    const char *operation = "?", *user = "?";
    guint32 uid = G_MAXUINT32;
    g_variant_lookup(request, "operation", "&s", &operation);
    g_autoptr(GVariant) c = g_variant_lookup_value(result, "confinement", G_VARIANT_TYPE_VARDICT);
    if (c != NULL) {
        g_variant_lookup(c, "user", "&s", &user);
        g_variant_lookup(c, "uid", "u", &uid);
    }
    g_debug("vdisk-worker %d: %s, as %s (uid %u)", (int)pid, operation, user, uid);
}

static gboolean spawn(int child_sock, GPid *pid, GError **error)
{
    const char *argv[] = { vdd_worker_path(), NULL };
    g_autoptr(GStrvBuilder) env = g_strv_builder_new();
    static const char *const passed[] = { "G_DEBUG", "G_MESSAGES_DEBUG", NULL };
    for (guint i = 0; passed[i]; i++) {
        const char *v = g_getenv(passed[i]);
        if (v != NULL) {
            g_autofree char *kv = g_strdup_printf("%s=%s", passed[i], v);
            g_strv_builder_add(env, kv);
        }
    }
    g_auto(GStrv) envp = g_strv_builder_end(env);
    const int source_fds[] = { child_sock };
    const int target_fds[] = { VDD_WIRE_WORKER_FD };
    return g_spawn_async_with_pipes_and_fds(NULL, argv, (const char *const *)envp,
                                            G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDIN_FROM_DEV_NULL,
                                            NULL, NULL, -1, -1, -1, source_fds, target_fds, 1, pid,
                                            NULL, NULL, NULL, error);
}

/* rel beneath folder, opened for reading: first as a mere path, so that
 * nothing but a regular file (or a folder, when wanted) is ever opened for
 * real (opening some devices does something), then reopened through that
 * path, which holds the very same file. -1 with errno; ENODEV for a file
 * of another kind. */
static int open_for_worker(const VddWorkerFolder *folder, const char *rel, gboolean directory)
{
    int want = directory ? O_DIRECTORY : 0;
    int path_fd = vd_openat_beneath(folder->dirfd, rel, O_PATH | O_CLOEXEC | want, TRUE);
    if (path_fd < 0)
        return -1;
    struct stat st;
    if (fstat(path_fd, &st) < 0 || !(directory ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode))) {
        close(path_fd);
        errno = ENODEV;
        return -1;
    }
    g_autofree char *proc = g_strdup_printf("/proc/self/fd/%d", path_fd);
    int fd = open(proc, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | want);
    int err = errno;
    close(path_fd);
    errno = err;
    return fd;
}

/* A worker's request to open a file: opened beneath the folder, read
 * only, never through a symbolic link, a regular file (or a folder when it
 * asks for one), and passed back. Whatever the worker names, nothing
 * outside the folder is opened. */
static gboolean answer_open(int sock, const VddWorkerCall *call, GVariant *msg)
{
    const char *rel = NULL;
    gboolean directory = FALSE;
    gint32 index = 0;
    g_variant_lookup(msg, "open", "&s", &rel);
    g_variant_lookup(msg, "directory", "b", &directory);
    g_variant_lookup(msg, "folder", "i", &index);
    const VddWorkerFolder *folder =
        index >= 0 && (guint)index < call->n_folders ? &call->folders[index] : NULL;
    int fd = -1, err = EACCES;
    if (folder != NULL && folder->files != NULL) {
        /* The caller's files: only those passed, by the name given. */
        gpointer passed;
        if (directory || rel == NULL ||
            !g_hash_table_lookup_extended(folder->files, rel, NULL, &passed))
            err = directory ? EACCES : ENOENT;
        else if ((fd = fcntl(GPOINTER_TO_INT(passed), F_DUPFD_CLOEXEC, 3)) < 0)
            err = errno;
    } else if (folder != NULL && rel != NULL && *rel != '\0') {
        fd = open_for_worker(folder, rel, directory);
        err = errno;
    }
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "errno", g_variant_new_int32(fd >= 0 ? 0 : err));
    gboolean sent = vdd_wire_send(sock, g_variant_builder_end(&b), &fd, fd >= 0 ? 1 : 0, NULL);
    if (fd >= 0)
        close(fd);
    return sent;
}

/* Read messages until the worker closes its end. FALSE when it broke the
 * protocol or the job was cancelled (then *cancelled). */
static gboolean converse(int sock, const VddWorkerCall *call, GVariant **result,
                         gboolean *cancelled)
{
    GPollFD cancel_fd;
    gboolean have_cancel = g_cancellable_make_pollfd(call->cancellable, &cancel_fd);
    gboolean ok = TRUE;
    /* A job's worker may be quiet for long (a big fsync) and is stopped by
     * cancelling it. A call that cannot be cancelled (describing a volume,
     * which vdiskd's main loop waits for; inspect; status) only reads
     * headers: a worker quiet that long is stuck, and is given up rather
     * than hold every client up. */
    int silence_ms = have_cancel ? -1 : MESSAGE_TIMEOUT_SECONDS * 1000;
    for (;;) {
        struct pollfd p[2] = { { .fd = sock, .events = POLLIN },
                               { .fd = have_cancel ? cancel_fd.fd : -1, .events = POLLIN } };
        int n = poll(p, 2, silence_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                g_warning("vdisk-worker: no word for %d s; stopped", MESSAGE_TIMEOUT_SECONDS);
            ok = FALSE;
            break;
        }
        if (g_cancellable_is_cancelled(call->cancellable)) {
            *cancelled = TRUE;
            ok = FALSE;
            break;
        }
        if (p[0].revents == 0)
            continue;
        int fds[VDD_WIRE_MAX_FDS];
        guint n_fds = 0;
        g_autoptr(GError) local = NULL;
        g_autoptr(GVariant) msg = vdd_wire_receive(sock, fds, &n_fds, &local);
        for (guint i = 0; i < n_fds; i++)
            close(fds[i]);
        if (msg == NULL) {
            /* The end of the stream after a result is how a worker ends. */
            ok = g_error_matches(local, G_IO_ERROR, G_IO_ERROR_CLOSED) &&
                 strstr(local->message, "inside") == NULL;
            if (!ok)
                g_warning("vdisk-worker: %s", local->message);
            break;
        }
        guint64 done, total;
        if (g_variant_lookup(msg, "progress", "(tt)", &done, &total)) {
            if (call->progress != NULL && done <= total)
                call->progress(done, total, call->progress_data);
        } else if (g_variant_lookup(msg, "open", "&s", NULL)) {
            if (!answer_open(sock, call, msg)) {
                ok = FALSE;
                break;
            }
        } else if (*result == NULL) {
            *result = g_steal_pointer(&msg);
        } else {
            g_warning("vdisk-worker sent a second result");
            ok = FALSE;
            break;
        }
    }
    if (have_cancel)
        g_cancellable_release_fd(call->cancellable);
    return ok;
}

/* The engine names a file beneath a folder by its path: in what the
 * caller is told, by the name the caller knows it by (VddWorkerFolder's
 * label), never by vdiskd's paths. */
static void name_folders(GError *error, const VddWorkerCall *call)
{
    for (guint i = 0; i < call->n_folders; i++) {
        const VddWorkerFolder *f = &call->folders[i];
        if (f->label == NULL || f->dir_path == NULL || *f->dir_path == '\0')
            continue;
        g_autofree char *from = g_strconcat(f->dir_path, "/", NULL);
        g_autofree char *to = *f->label ? g_strconcat(f->label, "/", NULL) : g_strdup("");
        g_auto(GStrv) parts = g_strsplit(error->message, from, -1);
        g_free(error->message);
        error->message = g_strjoinv(to, parts);
    }
}

/* A new worker, with the socket vdiskd talks to it on (timeout_seconds
 * for each message each way), or -1. */
static int start_worker(int timeout_seconds, GPid *pid, GError **error)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        vdd_error_set_errno(error, errno, "worker socket");
        return -1;
    }
    g_autoptr(GError) local = NULL;
    gboolean started = spawn(sv[1], pid, &local);
    close(sv[1]);
    if (!started) {
        close(sv[0]);
        g_warning("cannot start %s: %s", vdd_worker_path(), local->message);
        g_propagate_error(error, unsafe());
        return -1;
    }
    struct timeval tv = { .tv_sec = timeout_seconds };
    setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return sv[0];
}

/* request with "dir-paths", where its folders are (their descriptors
 * stay here); the reference to request is given up. */
static GVariant *with_dir_paths(GVariant *request, const VddWorkerCall *call)
{
    if (call->n_folders == 0)
        return request;
    g_autoptr(GPtrArray) paths = g_ptr_array_new();
    for (guint i = 0; i < call->n_folders; i++)
        g_ptr_array_add(paths, (gpointer)call->folders[i].dir_path);
    GVariantDict d;
    g_variant_dict_init(&d, request);
    g_variant_dict_insert_value(
        &d, "dir-paths", g_variant_new_strv((const char *const *)paths->pdata, (gssize)paths->len));
    g_variant_unref(request);
    return g_variant_ref_sink(g_variant_dict_end(&d));
}

GVariant *vdd_worker_run(GVariant *request, const VddWorkerCall *call, GError **error)
{
    g_autoptr(GVariant) req = g_variant_ref_sink(request);
    /* Error domains the worker may name must be known here. */
    (void)VD_ERROR;
    (void)G_IO_ERROR;
    GPid pid;
    int sock = start_worker(
        call->timeout_seconds != 0 ? call->timeout_seconds : MESSAGE_TIMEOUT_SECONDS, &pid, error);
    if (sock < 0)
        return NULL;
    g_autoptr(GError) local = NULL;

    g_autoptr(GVariant) result = NULL;
    gboolean cancelled = FALSE;
    /* The request says where its pools are; their descriptors stay here. */
    req = with_dir_paths(req, call);
    gboolean talked = vdd_wire_send(sock, g_variant_ref(req), call->fds, call->n_fds, &local) &&
                      converse(sock, call, &result, &cancelled);
    if (!talked)
        kill(pid, SIGKILL);
    close(sock);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    g_spawn_close_pid(pid);

    if (cancelled) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED, "Operation was cancelled");
        return NULL;
    }
    if (!talked || result == NULL || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (WIFSIGNALED(status))
            g_warning("vdisk-worker %d was killed by signal %d (%s)%s", pid, WTERMSIG(status),
                      g_strsignal(WTERMSIG(status)),
                      WTERMSIG(status) == SIGSYS ? ": a system call outside its filter" : "");
        else if (local != NULL)
            g_warning("vdisk-worker %d: %s", pid, local->message);
        else
            g_warning("vdisk-worker %d ended with status %d%s", pid,
                      WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                      result == NULL ? " and no result" : "");
        g_propagate_error(error, unsafe());
        return NULL;
    }
    log_confinement(result);
    log_job(pid, req, result);
    GError *failure = vdd_wire_get_error(result);
    if (failure != NULL) {
        name_folders(failure, call);
        g_propagate_error(error, failure);
        return NULL;
    }
    return g_steal_pointer(&result);
}

GVariant *vdd_worker_run_job(GVariant *request, const int *fds, guint n_fds, VddPool *const *pools,
                             VddJob *job, GCancellable *cancellable, GError **error)
{
    return vdd_worker_run_job_with_files(request, fds, n_fds, pools, NULL, job, cancellable, error);
}

GVariant *vdd_worker_run_job_with_files(GVariant *request, const int *fds, guint n_fds,
                                        VddPool *const *pools, const VddWorkerFolder *files,
                                        VddJob *job, GCancellable *cancellable, GError **error)
{
    VddWorkerFolder folders[3];
    guint n_folders = 0;
    for (; pools != NULL && pools[n_folders] != NULL; n_folders++) {
        g_return_val_if_fail(n_folders < G_N_ELEMENTS(folders) - 1, NULL);
        folders[n_folders] = (VddWorkerFolder){ vdd_pool_get_dirfd(pools[n_folders]),
                                                vdd_pool_get_directory(pools[n_folders]), NULL,
                                                vdd_pool_get_name(pools[n_folders]) };
    }
    if (files != NULL)
        folders[n_folders++] = *files;
    const VddWorkerCall call = { .fds = fds,
                                 .n_fds = n_fds,
                                 .folders = folders,
                                 .n_folders = n_folders,
                                 .progress = job != NULL ? vdd_job_progress : NULL,
                                 .progress_data = job,
                                 .cancellable = cancellable };
    return vdd_worker_run(request, &call, error);
}

gboolean vdd_worker_nbdkit(char **nbdkit, char **plugin, GError **error)
{
#if HAVE_NBDKIT_PLUGIN
    const char *env = g_getenv("VDISK_NBDKIT_PLUGIN");
    g_autofree char *p = g_strdup(env != NULL && *env != '\0' ? env : VDISK_NBDKIT_PLUGIN);
    if (!g_file_test(p, G_FILE_TEST_IS_REGULAR)) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_UNSUPPORTED_FORMAT,
                    "serving over NBD needs vdisk's nbdkit plugin, which is not installed (%s)", p);
        return FALSE;
    }
    g_autofree char *n = g_find_program_in_path("nbdkit");
    if (n == NULL) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_UNSUPPORTED_FORMAT,
                    "serving over NBD needs nbdkit, which is not installed");
        return FALSE;
    }
    *nbdkit = g_steal_pointer(&n);
    *plugin = g_steal_pointer(&p);
    return TRUE;
#else
    g_set_error(error, VDD_ERROR, VDD_ERROR_UNSUPPORTED_FORMAT,
                "this vdiskd was built without vdisk's nbdkit plugin (nbdkit-plugin-dev): it "
                "cannot serve volumes over NBD");
    return FALSE;
#endif
}

/* Wait for the worker pid to end: it does soon once its socket is closed.
 * One that does not within 15 s is killed (where vdiskd may: its unit
 * gives it no CAP_KILL over the worker's user, and the socket's end is
 * what stops a worker there). */
static int reap(GPid pid)
{
    int status = 0;
    for (int i = 0; i < 150; i++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            return status;
        g_usleep(100 * 1000);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return status;
}

/* Wait until sock has something to read (or its end) or cancellable is
 * cancelled: FALSE for the latter. */
static gboolean wait_readable(int sock, GCancellable *cancellable)
{
    GPollFD cancel_fd;
    gboolean have_cancel = g_cancellable_make_pollfd(cancellable, &cancel_fd);
    gboolean readable = FALSE;
    while (!g_cancellable_is_cancelled(cancellable)) {
        struct pollfd p[2] = { { .fd = sock, .events = POLLIN },
                               { .fd = have_cancel ? cancel_fd.fd : -1, .events = POLLIN } };
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[0].revents != 0 && !g_cancellable_is_cancelled(cancellable)) {
            readable = TRUE;
            break;
        }
    }
    if (have_cancel)
        g_cancellable_release_fd(cancellable);
    return readable;
}

gboolean vdd_worker_serve(GVariant *request, const int *fds, guint n_fds, VddPool *pool,
                          GCancellable *cancellable, GError **error)
{
    const VddWorkerFolder folder = { vdd_pool_get_dirfd(pool), vdd_pool_get_directory(pool), NULL,
                                     vdd_pool_get_name(pool) };
    const VddWorkerCall call = { .folders = &folder, .n_folders = 1, .cancellable = cancellable };
    g_autoptr(GVariant) req = with_dir_paths(g_variant_ref_sink(request), &call);
    GPid pid;
    int sock = start_worker(MESSAGE_TIMEOUT_SECONDS, &pid, error);
    if (sock < 0)
        return FALSE;
    g_autoptr(GError) local = NULL;
    /* Its answer, once it is confined, has opened the volume (asking for
     * the files it names, as a job does) and nbdkit starts. */
    g_autoptr(GVariant) result = NULL;
    gboolean sent = vdd_wire_send(sock, g_variant_ref(req), fds, n_fds, &local);
    /* The worker has the key now. */
    vdd_wire_wipe_secrets(req);
    while (sent && result == NULL && wait_readable(sock, cancellable)) {
        int passed[VDD_WIRE_MAX_FDS];
        guint n_passed = 0;
        g_autoptr(GVariant) msg = vdd_wire_receive(sock, passed, &n_passed, &local);
        for (guint i = 0; i < n_passed; i++)
            close(passed[i]);
        if (msg == NULL)
            break;
        if (!g_variant_lookup(msg, "open", "&s", NULL))
            result = g_steal_pointer(&msg);
        else if (!answer_open(sock, &call, msg))
            break;
    }
    GError *failure = result != NULL ? vdd_wire_get_error(result) : NULL;
    if (failure != NULL)
        name_folders(failure, &call);
    if (result != NULL && failure == NULL) {
        log_confinement(result);
        log_job(pid, req, result);
        /* Served until the job is cancelled, or the server ends. */
        wait_readable(sock, cancellable);
    }
    close(sock); /* the worker stops nbdkit, and ends */
    int status = reap(pid);
    g_spawn_close_pid(pid);
    if (g_cancellable_is_cancelled(cancellable) && failure == NULL) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED, "Operation was cancelled");
        return FALSE;
    }
    if (failure != NULL) {
        g_propagate_error(error, failure);
        return FALSE;
    }
    if (result == NULL) {
        g_warning("vdisk-worker %d (serve-nbd) gave no answer%s%s; wait status %d", pid,
                  local != NULL ? ": " : "", local != NULL ? local->message : "", status);
        g_propagate_error(error, unsafe());
        return FALSE;
    }
    g_warning("the NBD server of vdisk-worker %d ended by itself (wait status %d)", pid, status);
    g_set_error(error, VDD_ERROR, VDD_ERROR_FAILED,
                "the NBD server ended by itself (vdiskd's log says why)");
    return FALSE;
}

GVariant *vdd_worker_status(GError **error)
{
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "operation", "s", "status");
    const VddWorkerCall call = { 0 };
    g_autoptr(GVariant) result = vdd_worker_run(g_variant_dict_end(&d), &call, error);
    if (result == NULL)
        return NULL;
    GVariant *c = g_variant_lookup_value(result, "confinement", G_VARIANT_TYPE_VARDICT);
    if (c == NULL)
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "the worker did not say how it runs");
    return c;
}

char *vdd_worker_test_misbehave(GVariant *options)
{
#ifdef VDD_TEST_HOOKS
    /* Only when the test that started vdiskd asked for it too: a test
     * build installed by mistake still lets no caller steer its workers. */
    const char *on = g_getenv("VDISKD_TEST_HOOKS");
    char *what = NULL;
    if (on != NULL && g_str_equal(on, "1"))
        g_variant_lookup(options, "misbehave", "s", &what);
    return what;
#else
    return NULL;
#endif
}
