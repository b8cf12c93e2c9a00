/* vdiskctl: images on NBD servers. vdiskd runs without a network of its
 * own (PrivateNetwork=yes) and never dials an address a caller names, or
 * it would be a root scanner of everyone's network: vdiskctl connects to
 * the server here, as the user and with the user's network, and passes
 * the connected socket to vdiskd as it passes a file (ImportVolume's
 * nbd-export); vdiskd's image worker speaks NBD on it. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl.h"

/* The port of an NBD URI without one (RFC-assigned, as in qemu and
 * libnbd). */
#define NBD_DEFAULT_PORT "10809"
/* How long vdiskctl waits for a TCP server to answer. */
#define CONNECT_TIMEOUT_SECONDS 30

static const char *const plain_schemes[] = { "nbd", "nbd+tcp", "nbd+unix" };
/* Forms qemu or libnbd know that vdiskctl does not connect to. */
static const char *const other_schemes[] = { "nbds", "nbds+tcp", "nbds+unix", "nbd+vsock",
                                             "nbds+vsock" };

static gboolean scheme_is(const char *arg, const char *scheme)
{
    gsize n = strlen(scheme);
    return g_ascii_strncasecmp(arg, scheme, n) == 0 && arg[n] == ':';
}

gboolean ctl_is_nbd_uri(const char *arg)
{
    for (guint i = 0; i < G_N_ELEMENTS(plain_schemes); i++)
        if (scheme_is(arg, plain_schemes[i]))
            return TRUE;
    for (guint i = 0; i < G_N_ELEMENTS(other_schemes); i++)
        if (scheme_is(arg, other_schemes[i]))
            return TRUE;
    return FALSE;
}

static int connect_unix(const char *uri, const char *path, GError **error)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof a.sun_path) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "%s: socket path %s is longer than a Unix socket's %zu bytes", uri, path,
                    sizeof a.sun_path - 1);
        return -1;
    }
    strcpy(a.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e), "%s: cannot connect to %s: %s",
                    uri, path, g_strerror(e));
        return -1;
    }
    return fd;
}

/* connect() with a bound on the wait: an address that drops what is sent
 * to it would hold vdiskctl for minutes of TCP retries. */
static int connect_within(int fd, const struct sockaddr *addr, socklen_t len)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return -1;
    int r = connect(fd, addr, len);
    if (r < 0 && errno == EINPROGRESS) {
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int err = 0;
        socklen_t elen = sizeof err;
        r = poll(&p, 1, CONNECT_TIMEOUT_SECONDS * 1000);
        if (r == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
            return -1;
        if (err != 0) {
            errno = err;
            return -1;
        }
    } else if (r < 0) {
        return -1;
    }
    return fcntl(fd, F_SETFL, flags);
}

static int connect_tcp(const char *uri, const char *host, const char *port, GError **error)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    int r = getaddrinfo(host, port, &hints, &res);
    if (r != 0) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "%s: cannot resolve %s: %s", uri, host,
                    gai_strerror(r));
        return -1;
    }
    int fd = -1, e = 0;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd >= 0 && connect_within(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            e = errno;
            close(fd);
            fd = -1;
        } else if (fd < 0) {
            e = errno;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e),
                    "%s: cannot connect to %s port %s: %s", uri, host, port, g_strerror(e));
    return fd;
}

int ctl_nbd_connect(const char *uri, char **export_name, GError **error)
{
    for (guint i = 0; i < G_N_ELEMENTS(other_schemes); i++) {
        if (scheme_is(uri, other_schemes[i])) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                        "%s: %s is not supported: vdiskctl connects to NBD servers over TCP "
                        "(nbd://HOST[:PORT]/EXPORT) or Unix sockets "
                        "(nbd+unix:///EXPORT?socket=PATH), without TLS",
                        uri, other_schemes[i]);
            return -1;
        }
    }
    g_autoptr(GError) local = NULL;
    g_autoptr(GUri) u = g_uri_parse(uri, G_URI_FLAGS_ENCODED_QUERY, &local);
    if (u == NULL) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "%s: not an NBD URI: %s", uri,
                    local->message);
        return -1;
    }
    gboolean unix_socket = g_ascii_strcasecmp(g_uri_get_scheme(u), "nbd+unix") == 0;
    const char *host = g_uri_get_host(u);
    const char *path = g_uri_get_path(u);
    const char *query = g_uri_get_query(u);
    g_autoptr(GHashTable) params = NULL;
    if (query != NULL &&
        (params = g_uri_parse_params(query, -1, "&", G_URI_PARAMS_NONE, &local)) == NULL) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "%s: %s", uri, local->message);
        return -1;
    }
    const char *socket_path = params != NULL ? g_hash_table_lookup(params, "socket") : NULL;
    if (params != NULL) {
        GHashTableIter it;
        const char *key;
        g_hash_table_iter_init(&it, params);
        while (g_hash_table_iter_next(&it, (gpointer *)&key, NULL)) {
            if (!unix_socket || !g_str_equal(key, "socket")) {
                g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                            "%s: the URI's query '%s' is not supported (only nbd+unix takes "
                            "socket=PATH)",
                            uri, key);
                return -1;
            }
        }
    }
    if (unix_socket && (socket_path == NULL || *socket_path == '\0' ||
                        (host != NULL && *host != '\0') || g_uri_get_port(u) != -1)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "%s: an nbd+unix URI has no host or port and names its socket: "
                    "nbd+unix:///EXPORT?socket=PATH",
                    uri);
        return -1;
    }
    if (!unix_socket && (host == NULL || *host == '\0')) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "%s: the URI names no host: nbd://HOST[:PORT]/EXPORT", uri);
        return -1;
    }
    /* The export is the path without its first slash ("" the default
     * export), as qemu and libnbd read it. */
    const char *name = *path == '/' ? path + 1 : path;
    if (strlen(name) > 4096) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "%s: an NBD export name is at most 4096 bytes", uri);
        return -1;
    }
    int fd;
    if (unix_socket) {
        fd = connect_unix(uri, socket_path, error);
    } else {
        g_autofree char *port = g_uri_get_port(u) != -1 ? g_strdup_printf("%d", g_uri_get_port(u))
                                                        : g_strdup(NBD_DEFAULT_PORT);
        fd = connect_tcp(uri, host, port, error);
    }
    if (fd >= 0)
        *export_name = g_strdup(name);
    return fd;
}

int ctl_import_nbd(Ctl *ctl, const char *uri, const char *target)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *pool_name = NULL;
    g_autofree char *name = NULL;
    g_autofree char *export_name = NULL;
    g_autofree char *format = NULL;
    g_autofree char *volume = NULL;
    g_autofree char *job = NULL;
    g_autoptr(GVariant) options = NULL;
    g_autoptr(CtlObject) pool = NULL;
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();

    if (!ctl_split_volume_arg(target, &pool_name, &name, &error) ||
        (options = ctl_call_options(ctl, &error)) == NULL)
        return ctl_fail(error);
    /* Connected first, as the user: a server this process cannot reach
     * fails here, before vdiskd is asked anything. */
    int sock = ctl_nbd_connect(uri, &export_name, &error);
    if (sock < 0)
        return ctl_fail(error);
    gint handle = g_unix_fd_list_append(fds, sock, &error);
    close(sock); /* the list holds its own copy, closed once the call is sent */
    if (handle < 0 || (pool = ctl_find_pool(ctl, pool_name, &error)) == NULL ||
        (format = ctl_pick_format(ctl, name, "qcow2", &error)) == NULL)
        return ctl_fail(error);
    GVariantDict d;
    g_variant_dict_init(&d, options);
    g_variant_dict_insert(&d, "nbd-export", "s", export_name);
    g_autoptr(GVariant) with_export = g_variant_ref_sink(g_variant_dict_end(&d));
    g_autoptr(CtlJobWatch) watch = ctl_job_watch_new(ctl);
    g_autoptr(VddDbusPool) proxy = ctl_pool_proxy(ctl, pool->path, &error);
    gboolean called =
        proxy != NULL &&
        vdd_dbus_pool_call_import_volume_sync(
            proxy, g_variant_new_handle(handle), name, format, ctl_job_options(ctl, with_export),
            ctl->call_flags, ctl_timeout(ctl), fds, &volume, &job, NULL, NULL, &error);
    /* vdiskd has its own copy now: the server sees the end of the
     * connection when the import ends, not when vdiskctl exits. */
    g_clear_object(&fds);
    if (!ctl_job_follow(watch, called, job, "Importing", &error)) {
        ctl_error_name_file(error, "source", uri);
        return ctl_fail(error);
    }
    ctl_say(ctl, "Imported %s as %s (%s).", uri, target, format);
    return EXIT_SUCCESS;
}

/* ----- vdiskctl export-nbd ----- */

/* A Unix socket listening at path, bound here as the user: the file is
 * the user's, where the user may make one, and vdiskd makes none. */
static int listen_at(const char *path, GError **error)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof a.sun_path) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "%s: longer than a Unix socket's %zu bytes", path, sizeof a.sun_path - 1);
        return -1;
    }
    strcpy(a.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    /* The export is the user's: only the user (and root) may connect. */
    mode_t mask = umask(0077);
    int bound = fd >= 0 ? bind(fd, (struct sockaddr *)&a, sizeof a) : -1;
    umask(mask);
    if (bound < 0 || listen(fd, 16) < 0) {
        int e = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e), "%s: cannot listen there: %s",
                    path, e == EADDRINUSE ? "a file of that name exists" : g_strerror(e));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int run_export_nbd(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autofree char *job = NULL;
    const char *path = ctl->socket_path;

    if (path == NULL) {
        ctl_error("export-nbd needs --socket PATH: where to serve the volume");
        return CTL_EXIT_FAILURE;
    }
    g_autoptr(CtlVolume) vol = ctl_find_volume(ctl, operands[0], &error);
    /* The key (--object, --key-secret) is read before the socket is made. */
    g_autoptr(GVariant) call_options = vol != NULL ? ctl_call_options(ctl, &error) : NULL;
    if (call_options == NULL)
        return ctl_fail(error);
    int sock = listen_at(path, &error);
    if (sock < 0)
        return ctl_fail(error);
    gint handle = g_unix_fd_list_append(fds, sock, &error);
    close(sock); /* the list's copy goes to vdiskd's server */
    GVariantDict d;
    g_variant_dict_init(&d, call_options);
    if (ctl->readonly)
        g_variant_dict_insert(&d, "readonly", "b", TRUE);
    g_autoptr(GVariant) options = g_variant_ref_sink(g_variant_dict_end(&d));
    g_autoptr(CtlJobWatch) watch = ctl_job_watch_new(ctl);
    g_autoptr(VddDbusVolume) proxy =
        handle >= 0 ? ctl_volume_proxy(ctl, vol->volume->path, &error) : NULL;
    gboolean called =
        proxy != NULL && vdd_dbus_volume_call_export_nbd_sync(
                             proxy, g_variant_new_handle(handle), ctl_job_options(ctl, options),
                             ctl->call_flags, ctl_timeout(ctl), fds, &job, NULL, NULL, &error);
    g_clear_object(&fds);
    if (called) {
        g_autofree char *escaped = g_uri_escape_string(path, "/", FALSE);
        ctl_say(ctl, "Serving %s%s on nbd+unix:///?socket=%s until Ctrl-C", operands[0],
                ctl->readonly ? " read-only" : "", escaped);
        fflush(stdout);
    }
    /* Served until Ctrl-C cancels the job: that is its normal end. A
     * server has no progress to show: no bar. */
    gboolean quiet = ctl->quiet;
    ctl->quiet = TRUE;
    gboolean ok = ctl_job_follow(watch, called, job, "Serving", &error);
    ctl->quiet = quiet;
    unlink(path);
    if (!ok && !g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        return ctl_fail(error);
    ctl_say(ctl, "Stopped serving %s.", operands[0]);
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_export_nbd = {
    .name = "export-nbd",
    .operands = "POOL/VOLUME",
    .summary = "serve a volume to you over NBD on a Unix socket, until Ctrl-C",
    .options = CTL_OPT_NBD_SERVE | CTL_OPT_OBJECT | CTL_OPT_KEY,
    .help = "  --socket PATH          the Unix socket to serve on (made here, as you;\n"
            "                         removed at the end)\n"
            "  --readonly             serve it read-only (a read lock: a VM may still\n"
            "                         read it, none may write it)\n" CTL_HELP_KEY CTL_HELP_OBJECT,
    .notes = "vdiskctl makes the socket with your rights and hands it to vdiskd, which\n"
             "serves the volume on it with nbdkit and vdisk's plugin, confined as its\n"
             "image worker is, holding the volume's lock as any writer (--readonly:\n"
             "reader) does: a volume a VM uses is refused (Busy). Clients connect with\n"
             "nbd+unix:///?socket=PATH (qemu-img, qemu-nbd -c, nbdcopy, nbdfuse) until\n"
             "Ctrl-C stops the export. An overlay is served as its guest sees it,\n"
             "through its whole backing chain (only the volume itself is written); an\n"
             "encrypted volume is served decrypted, with its key (--key-secret).\n",
    .examples = "  vdiskctl export-nbd default/web.qcow2 --socket /tmp/web.sock --readonly\n"
                "  qemu-img compare nbd+unix:///?socket=/tmp/web.sock web-copy.qcow2\n"
                "  vdiskctl export-nbd default/vault.qcow2 --socket /tmp/vault.sock \\\n"
                "      --object secret,id=k,file=pw --key-secret k\n",
    .min_operands = 1,
    .max_operands = 1,
    .run = run_export_nbd,
};
