/* NBD exports as files: the names qemu-img takes for an export on another
 * host (nbd://, nbd+unix://, the older nbd:HOST:PORT and nbd:unix:PATH),
 * and the connection behind a VdFile (file.c) that reads and writes one
 * through libnbd. Any format can sit on an export, as on a file; raw is
 * the guest view of one. No network code of vdisk's own: libnbd speaks
 * the protocol, vdisk only says which server, export and metadata context. */
#include "vdisk-driver.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#if HAVE_LIBNBD
#include <libnbd.h>
#endif

#define NBD_DEFAULT_PORT 10809
/* The largest request vdisk sends when the server names none, as much as
 * qemu-nbd takes. */
#define NBD_DEFAULT_MAX_REQUEST (32u << 20)
/* Block status and zeroing ask for at most this much at once: the
 * protocol's lengths are 32 bits, and some servers refuse 4 GiB. */
#define NBD_MAX_STATUS (1u << 31)
#define NBD_MAX_ZERO (1u << 30)
#define NBD_BASE_ALLOCATION "base:allocation"
#define NBD_FLAG_HOLE 1u
#define NBD_FLAG_ZERO 2u

/* ----- names ----- */

typedef struct {
    gboolean is_unix;
    char *host; /* inet */
    guint port;
    char *path; /* unix */
    char *export_name;
} NbdAddress;

static void address_clear(NbdAddress *a)
{
    g_free(a->host);
    g_free(a->path);
    g_free(a->export_name);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(NbdAddress, address_clear)

gboolean vd_nbd_is_name(const char *name)
{
    return name != NULL && (g_str_has_prefix(name, "nbd:") || g_str_has_prefix(name, "nbd+") ||
                            g_str_has_prefix(name, "nbds:") || g_str_has_prefix(name, "nbds+"));
}

/* The name qemu gives an export in its messages and in map and info. */
static char *address_name(const NbdAddress *a)
{
    const char *sep = *a->export_name != '\0' ? "/" : "";
    if (a->is_unix)
        return g_strdup_printf("nbd+unix://%s%s?socket=%s", sep, a->export_name, a->path);
    return g_strdup_printf("nbd://%s:%u%s%s", a->host, a->port, sep, a->export_name);
}

static gboolean bad_name(GError **error, const char *name, const char *why)
{
    vd_set_file_error(error, name, VD_ERROR_INVALID_ARGUMENT, "not a valid NBD address: %s", why);
    return FALSE;
}

static gboolean parse_port(const char *text, guint *port)
{
    guint64 n;
    if (!g_ascii_string_to_unsigned(text, 10, 1, 65535, &n, NULL))
        return FALSE;
    *port = (guint)n;
    return TRUE;
}

/* nbd://HOST[:PORT]/EXPORT, nbd+tcp://..., nbd+unix:///EXPORT?socket=PATH */
static gboolean parse_uri(const char *name, NbdAddress *a, GError **error)
{
    g_autoptr(GError) local = NULL;
    g_autoptr(GUri) uri = g_uri_parse(name, G_URI_FLAGS_ENCODED_QUERY, &local);
    if (uri == NULL)
        return bad_name(error, name, local->message);
    const char *scheme = g_uri_get_scheme(uri);
    if (g_str_has_prefix(scheme, "nbds")) {
        vd_set_file_error(error, name, VD_ERROR_NOT_SUPPORTED,
                          "NBD over TLS (%s://) is not supported: use an export without TLS, or "
                          "a tunnel to it (ssh -L)",
                          scheme);
        return FALSE;
    }
    if (g_str_equal(scheme, "nbd+unix"))
        a->is_unix = TRUE;
    else if (!g_str_equal(scheme, "nbd") && !g_str_equal(scheme, "nbd+tcp"))
        return bad_name(error, name, "the scheme is none of nbd, nbd+tcp and nbd+unix");
    const char *path = g_uri_get_path(uri);
    while (*path == '/')
        path++;
    a->export_name = g_strdup(path);
    const char *query = g_uri_get_query(uri);
    g_autoptr(GHashTable) params = NULL;
    if (query != NULL && *query != '\0') {
        params = g_uri_parse_params(query, -1, "&", G_URI_PARAMS_NONE, &local);
        if (params == NULL)
            return bad_name(error, name, local->message);
    }
    guint n_params = params != NULL ? g_hash_table_size(params) : 0;
    const char *host = g_uri_get_host(uri);
    if (a->is_unix) {
        const char *socket = params != NULL ? g_hash_table_lookup(params, "socket") : NULL;
        if (socket == NULL || *socket == '\0' || n_params != 1)
            return bad_name(error, name, "nbd+unix:// takes one parameter, ?socket=PATH");
        if (host != NULL && *host != '\0' && !g_str_equal(host, "localhost"))
            return bad_name(error, name, "nbd+unix:// names no host");
        a->path = g_strdup(socket);
        return TRUE;
    }
    if (n_params != 0)
        return bad_name(error, name, "nbd:// takes no parameters (a unix socket is nbd+unix://)");
    if (host == NULL || *host == '\0')
        return bad_name(error, name, "no host (nbd://HOST[:PORT]/EXPORT)");
    a->host = g_strdup(host);
    a->port = g_uri_get_port(uri) > 0 ? (guint)g_uri_get_port(uri) : NBD_DEFAULT_PORT;
    return TRUE;
}

/* qemu's older nbd:HOST:PORT[:exportname=NAME] and nbd:unix:PATH[:exportname=NAME] */
static gboolean parse_legacy(const char *name, NbdAddress *a, GError **error)
{
    g_autofree char *rest = g_strdup(name + strlen("nbd:"));
    char *export_part = strstr(rest, ":exportname=");
    if (export_part != NULL) {
        a->export_name = g_strdup(export_part + strlen(":exportname="));
        *export_part = '\0';
    } else {
        a->export_name = g_strdup("");
    }
    if (g_str_has_prefix(rest, "unix:")) {
        if (rest[5] == '\0')
            return bad_name(error, name, "no socket path (nbd:unix:PATH)");
        a->is_unix = TRUE;
        a->path = g_strdup(rest + 5);
        return TRUE;
    }
    char *colon = strrchr(rest, ':');
    if (colon == NULL || colon == rest || !parse_port(colon + 1, &a->port))
        return bad_name(error, name, "expected nbd:HOST:PORT or nbd:unix:PATH");
    *colon = '\0';
    /* [::1]:10809 */
    if (rest[0] == '[' && colon[-1] == ']') {
        colon[-1] = '\0';
        a->host = g_strdup(rest + 1);
    } else {
        a->host = g_strdup(rest);
    }
    return TRUE;
}

static gboolean parse_name(const char *name, NbdAddress *a, GError **error)
{
    if (strstr(name, "://") != NULL)
        return parse_uri(name, a, error);
    if (g_str_has_prefix(name, "nbd:"))
        return parse_legacy(name, a, error);
    return bad_name(error, name,
                    "expected nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH");
}

char *vd_nbd_name_from_options(VdOptions *opts, GError **error)
{
    const char *type = vd_options_get(opts, "server.type");
    const char *export_name = vd_options_get(opts, "export");
    g_auto(NbdAddress) a = { .export_name = g_strdup(export_name != NULL ? export_name : "") };
    const char *legacy = vd_options_get(opts, "path");
    if (type == NULL && legacy != NULL)
        type = "unix";
    if (type == NULL && vd_options_get(opts, "host") != NULL)
        type = "inet";
    if (g_strcmp0(type, "unix") == 0) {
        const char *path = vd_options_get(opts, "server.path");
        if (path == NULL)
            path = legacy;
        if (path == NULL || *path == '\0') {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "driver=nbd: server.type=unix needs server.path=SOCKET");
            return NULL;
        }
        a.is_unix = TRUE;
        a.path = g_strdup(path);
    } else if (g_strcmp0(type, "inet") == 0) {
        const char *host = vd_options_get(opts, "server.host");
        const char *port = vd_options_get(opts, "server.port");
        if (host == NULL)
            host = vd_options_get(opts, "host");
        if (port == NULL)
            port = vd_options_get(opts, "port");
        if (host == NULL || *host == '\0') {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "driver=nbd: server.type=inet needs server.host=HOST");
            return NULL;
        }
        a.host = g_strdup(host);
        a.port = NBD_DEFAULT_PORT;
        if (port != NULL && !parse_port(port, &a.port)) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "driver=nbd: server.port must be a port number, not '%s'", port);
            return NULL;
        }
    } else if (type == NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "driver=nbd needs server.type=unix (with server.path) or server.type=inet "
                    "(with server.host and server.port)");
        return NULL;
    } else {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "driver=nbd: server.type=%s is not supported (unix or inet)", type);
        return NULL;
    }
    return address_name(&a);
}

#if HAVE_LIBNBD

/* ----- the connection ----- */

struct VdNbd {
    struct nbd_handle *h;
    char *name;
    guint64 size;
    gsize max_request;
    /* The metadata context block status comes from, and whether it is
     * qemu's x-dirty-bitmap reading of another context than
     * base:allocation. NULL: the server has no block status. */
    char *context;
    gboolean foreign_context;
    /* A discard is a zero the server may unmap (NBD_CMD_WRITE_ZEROES
     * without NO_HOLE), not NBD_CMD_TRIM: after a trim the range need not
     * read zero, and a raw disk's discarded range must. */
    gboolean can_zero, can_flush;
    /* The extents of the last block status reply, for the reads that ask
     * block status before every read: [cache_start, +) in pairs of
     * (length, flags). Dropped by every write. */
    GMutex cache_lock;
    guint64 cache_start;
    GArray *cache; /* guint32 pairs */
    /* Counts the drops: a reply is cached only if no write began or
     * ended while it was asked for (it may describe the old data). */
    guint64 cache_gen;
};

/* libnbd's last error without the name of the call it came from
 * ("nbd_pread: ..."). */
static const char *last_error(void)
{
    const char *msg = nbd_get_error();
    if (msg == NULL)
        return NULL;
    if (g_str_has_prefix(msg, "nbd_")) {
        const char *colon = strstr(msg, ": ");
        if (colon != NULL)
            msg = colon + 2;
    }
    return msg;
}

static void nbd_error(GError **error, const char *name, const char *what)
{
    int err = nbd_get_errno();
    const char *msg = last_error();
    VdError code = err == ENOSPC ? VD_ERROR_NO_SPACE : VD_ERROR_IO;
    if (err == ENOENT || err == ECONNREFUSED)
        code = VD_ERROR_NOT_FOUND;
    vd_set_file_error(error, name, code, "%s: %s", what,
                      msg != NULL ? msg : (err != 0 ? g_strerror(err) : "unknown error"));
}

void vd_nbd_close(VdNbd *nbd)
{
    if (nbd == NULL)
        return;
    if (nbd->h != NULL) {
        (void)nbd_shutdown(nbd->h, 0);
        nbd_close(nbd->h);
    }
    g_mutex_clear(&nbd->cache_lock);
    if (nbd->cache != NULL)
        g_array_unref(nbd->cache);
    g_free(nbd->context);
    g_free(nbd->name);
    g_free(nbd);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VdNbd, vd_nbd_close)

static VdNbd *nbd_new(const char *name, const char *export_name, const char *context,
                      GError **error)
{
    g_autoptr(VdNbd) nbd = g_new0(VdNbd, 1);
    g_mutex_init(&nbd->cache_lock);
    nbd->name = g_strdup(name);
    nbd->h = nbd_create();
    if (nbd->h == NULL) {
        nbd_error(error, name, "cannot make an NBD handle");
        return NULL;
    }
    nbd->context = g_strdup(context != NULL ? context : NBD_BASE_ALLOCATION);
    nbd->foreign_context = context != NULL;
    if (nbd_set_export_name(nbd->h, export_name) < 0 ||
        nbd_add_meta_context(nbd->h, nbd->context) < 0) {
        nbd_error(error, name, "cannot set up the NBD connection");
        return NULL;
    }
    return g_steal_pointer(&nbd);
}

/* A connection or handshake that failed, in words for the user: where
 * the server was to be, or which export it does not have. label names the
 * export as the user did. */
static void connect_error(GError **error, const char *label, const char *where,
                          const char *export_name)
{
    int err = nbd_get_errno();
    const char *msg = last_error();
    if (msg == NULL)
        msg = err != 0 ? g_strerror(err) : "unknown error";
    if (g_str_has_prefix(msg, "connect: ") || g_str_has_prefix(msg, "getaddrinfo: "))
        vd_set_file_error(error, label, VD_ERROR_NOT_FOUND,
                          "cannot connect to the NBD server at '%s': %s", where,
                          err != 0 ? g_strerror(err) : strchr(msg, ' ') + 1);
    else if (strstr(msg, "server has no export named") != NULL)
        vd_set_file_error(error, label, VD_ERROR_NOT_FOUND,
                          "the NBD server at '%s' has no export named '%s'", where, export_name);
    else
        vd_set_file_error(error, label, VD_ERROR_IO,
                          "NBD handshake with the server at '%s' failed: %s", where, msg);
}

/* After the handshake: what the export is and what it can do. label
 * names the export in messages as the user did. */
static gboolean nbd_connected(VdNbd *nbd, const char *label, gboolean read_write, GError **error)
{
    int64_t size = nbd_get_size(nbd->h);
    if (size < 0) {
        nbd_error(error, label, "cannot get the size of the NBD export");
        return FALSE;
    }
    nbd->size = (guint64)size;
    if (read_write && nbd_is_read_only(nbd->h) != 0) {
        vd_set_file_error(error, label, VD_ERROR_INVALID_ARGUMENT,
                          "the NBD export is read-only: it cannot be opened for writing");
        return FALSE;
    }
    int64_t max = nbd_get_block_size(nbd->h, LIBNBD_SIZE_MAXIMUM);
    nbd->max_request =
        max > 0 ? (gsize)MIN(max, (int64_t)NBD_DEFAULT_MAX_REQUEST) : NBD_DEFAULT_MAX_REQUEST;
    nbd->can_zero = nbd_can_zero(nbd->h) > 0;
    nbd->can_flush = nbd_can_flush(nbd->h) > 0;
    if (nbd_can_meta_context(nbd->h, nbd->context) <= 0) {
        if (nbd->foreign_context) {
            vd_set_file_error(error, label, VD_ERROR_NOT_FOUND,
                              "the NBD server has no metadata context %s (x-dirty-bitmap)",
                              nbd->context);
            return FALSE;
        }
        g_clear_pointer(&nbd->context, g_free); /* everything is data */
    }
    return TRUE;
}

static VdNbd *nbd_open_address(const NbdAddress *a, const char *label, const char *context,
                               gboolean read_write, GError **error)
{
    g_autofree char *name = address_name(a);
    g_autoptr(VdNbd) nbd = nbd_new(name, a->export_name, context, error);
    if (nbd == NULL)
        return NULL;
    int rc;
    g_autofree char *where = NULL;
    if (a->is_unix) {
        where = g_strdup(a->path);
        rc = nbd_connect_unix(nbd->h, a->path);
    } else {
        g_autofree char *port = g_strdup_printf("%u", a->port);
        where = g_strdup_printf("%s:%u", a->host, a->port);
        rc = nbd_connect_tcp(nbd->h, a->host, port);
    }
    if (rc < 0) {
        connect_error(error, label, where, a->export_name);
        return NULL;
    }
    return nbd_connected(nbd, label, read_write, error) ? g_steal_pointer(&nbd) : NULL;
}

VdFile *vd_file_open_nbd(const char *name, VdOptions *opts, gboolean read_write, GError **error)
{
    g_auto(NbdAddress) a = { 0 };
    if (!parse_name(name, &a, error))
        return NULL;
    const char *context = vd_options_get(opts, "x-dirty-bitmap");
    VdNbd *nbd = nbd_open_address(&a, name, context, read_write, error);
    if (nbd == NULL)
        return NULL;
    return vd_file_wrap_nbd(nbd, nbd->name, read_write);
}

VdFile *vd_file_open_nbd_socket(int fd, const char *export_name, gboolean read_write,
                                GError **error)
{
    if (export_name == NULL)
        export_name = "";
    g_autofree char *name = g_strdup_printf("NBD export '%s' on fd %d", export_name, fd);
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (copy < 0) {
        vd_set_file_error(error, name, VD_ERROR_INVALID_ARGUMENT, "bad file descriptor: %s",
                          g_strerror(errno));
        return NULL;
    }
    g_autoptr(VdNbd) nbd = nbd_new(name, export_name, NULL, error);
    if (nbd == NULL) {
        close(copy);
        return NULL;
    }
    /* libnbd owns the copy from here on, failed or not. */
    if (nbd_connect_socket(nbd->h, copy) < 0) {
        g_autofree char *where = g_strdup_printf("fd %d", fd);
        connect_error(error, name, where, export_name);
        return NULL;
    }
    if (!nbd_connected(nbd, name, read_write, error))
        return NULL;
    VdNbd *owned = g_steal_pointer(&nbd);
    return vd_file_wrap_nbd(owned, owned->name, read_write);
}

/* ----- I/O ----- */

guint64 vd_nbd_size(VdNbd *nbd) { return nbd->size; }

static void drop_cache(VdNbd *nbd)
{
    g_mutex_lock(&nbd->cache_lock);
    g_clear_pointer(&nbd->cache, g_array_unref);
    nbd->cache_gen++;
    g_mutex_unlock(&nbd->cache_lock);
}

gboolean vd_nbd_pread(VdNbd *nbd, guint64 offset, void *buf, gsize len, GError **error)
{
    for (gsize done = 0; done < len;) {
        gsize n = MIN(len - done, nbd->max_request);
        if (nbd_pread(nbd->h, (guint8 *)buf + done, n, offset + done, 0) < 0) {
            g_autofree char *what = g_strdup_printf("read of %" G_GSIZE_FORMAT
                                                    " bytes at offset %" G_GUINT64_FORMAT " failed",
                                                    n, offset + done);
            nbd_error(error, nbd->name, what);
            return FALSE;
        }
        done += n;
    }
    return TRUE;
}

static gboolean write_all(VdNbd *nbd, guint64 offset, const void *buf, gsize len, GError **error)
{
    for (gsize done = 0; done < len;) {
        gsize n = MIN(len - done, nbd->max_request);
        if (nbd_pwrite(nbd->h, (const guint8 *)buf + done, n, offset + done, 0) < 0) {
            g_autofree char *what = g_strdup_printf("write of %" G_GSIZE_FORMAT
                                                    " bytes at offset %" G_GUINT64_FORMAT " failed",
                                                    n, offset + done);
            nbd_error(error, nbd->name, what);
            return FALSE;
        }
        done += n;
    }
    return TRUE;
}

static gboolean zero_all(VdNbd *nbd, guint64 offset, guint64 len, gboolean may_unmap,
                         GError **error)
{
    if (!nbd->can_zero) {
        static const gsize chunk = 1 << 20;
        g_autofree guint8 *zeroes = g_malloc0((gsize)MIN(len, chunk));
        for (guint64 done = 0; done < len;) {
            gsize n = (gsize)MIN(len - done, chunk);
            if (!write_all(nbd, offset + done, zeroes, n, error))
                return FALSE;
            done += n;
        }
        return TRUE;
    }
    for (guint64 done = 0; done < len;) {
        guint64 n = MIN(len - done, NBD_MAX_ZERO);
        if (nbd_zero(nbd->h, n, offset + done, may_unmap ? 0 : LIBNBD_CMD_FLAG_NO_HOLE) < 0) {
            nbd_error(error, nbd->name, "writing zeroes failed");
            return FALSE;
        }
        done += n;
    }
    return TRUE;
}

/* Writes drop the cached block status as they begin and as they end. */
gboolean vd_nbd_pwrite(VdNbd *nbd, guint64 offset, const void *buf, gsize len, GError **error)
{
    drop_cache(nbd);
    gboolean ok = write_all(nbd, offset, buf, len, error);
    drop_cache(nbd);
    return ok;
}

gboolean vd_nbd_zero(VdNbd *nbd, guint64 offset, guint64 len, gboolean may_unmap, GError **error)
{
    drop_cache(nbd);
    gboolean ok = zero_all(nbd, offset, len, may_unmap, error);
    drop_cache(nbd);
    return ok;
}

gboolean vd_nbd_flush(VdNbd *nbd, GError **error)
{
    if (nbd->can_flush && nbd_flush(nbd->h, 0) < 0) {
        nbd_error(error, nbd->name, "flush failed");
        return FALSE;
    }
    return TRUE;
}

/* ----- block status ----- */

typedef struct {
    const char *context;
    GArray *entries;
} StatusReply;

static int status_entries(void *user_data, const char *metacontext, uint64_t offset,
                          uint32_t *entries, size_t nr_entries, int *error)
{
    StatusReply *reply = user_data;
    if (!g_str_equal(metacontext, reply->context) || reply->entries->len > 0)
        return 0; /* another context, or a server that answers twice */
    g_array_append_vals(reply->entries, entries, (guint)(nr_entries & ~(size_t)1));
    return 0;
}

/* The flags at offset and how far they go, from the cached reply. */
static gboolean cached_status(VdNbd *nbd, guint64 offset, guint64 max, guint32 *flags, guint64 *run)
{
    gboolean found = FALSE;
    g_mutex_lock(&nbd->cache_lock);
    guint64 pos = nbd->cache_start;
    for (guint i = 0; nbd->cache != NULL && i + 1 < nbd->cache->len && pos <= offset; i += 2) {
        guint64 len = g_array_index(nbd->cache, guint32, i);
        if (offset < pos + len) {
            *flags = g_array_index(nbd->cache, guint32, i + 1);
            *run = MIN(pos + len - offset, max);
            found = TRUE;
            break;
        }
        pos += len;
    }
    g_mutex_unlock(&nbd->cache_lock);
    return found;
}

/* The NBD flags of the context at offset, over at most max bytes. */
static gboolean nbd_status(VdNbd *nbd, guint64 offset, guint64 max, guint32 *flags, guint64 *run,
                           GError **error)
{
    if (nbd->context == NULL) {
        *flags = 0;
        *run = max;
        return TRUE;
    }
    if (cached_status(nbd, offset, max, flags, run))
        return TRUE;
    g_mutex_lock(&nbd->cache_lock);
    guint64 gen = nbd->cache_gen;
    g_mutex_unlock(&nbd->cache_lock);
    g_autoptr(GArray) entries = g_array_new(FALSE, FALSE, sizeof(guint32));
    StatusReply reply = { .context = nbd->context, .entries = entries };
    guint64 ask = MIN(nbd->size - offset, NBD_MAX_STATUS);
    nbd_extent_callback cb = { .callback = status_entries, .user_data = &reply };
    if (nbd_block_status(nbd->h, ask, offset, cb, 0) < 0) {
        nbd_error(error, nbd->name, "block status failed");
        return FALSE;
    }
    if (entries->len < 2 || g_array_index(entries, guint32, 0) == 0) {
        /* A server that says nothing of the range: take it as data. */
        *flags = 0;
        *run = max;
        return TRUE;
    }
    g_mutex_lock(&nbd->cache_lock);
    if (nbd->cache_gen == gen) {
        g_clear_pointer(&nbd->cache, g_array_unref);
        nbd->cache = g_array_ref(entries);
        nbd->cache_start = offset;
    }
    g_mutex_unlock(&nbd->cache_lock);
    *flags = g_array_index(entries, guint32, 1);
    *run = MIN((guint64)g_array_index(entries, guint32, 0), max);
    return TRUE;
}

gboolean vd_nbd_extent(VdNbd *nbd, guint64 offset, guint64 max, VdExtent *out, GError **error)
{
    guint32 flags;
    guint64 run;
    if (offset >= nbd->size) { /* the tail of a last partial sector */
        out->kind = VD_EXTENT_ZERO;
        out->length = max;
        return TRUE;
    }
    if (!nbd_status(nbd, offset, MIN(max, nbd->size - offset), &flags, &run, error))
        return FALSE;
    out->length = run;
    out->offset_valid = TRUE;
    out->host_offset = offset;
    gboolean hole = (flags & NBD_FLAG_HOLE) != 0, zero = (flags & NBD_FLAG_ZERO) != 0;
    if (nbd->foreign_context) {
        /* qemu's x-dirty-bitmap: another context's bits read as if they
         * were base:allocation's (a dirty bit is a "hole"), for map to
         * show. The bytes say nothing of the data: it is read as it is. */
        out->kind = VD_EXTENT_DATA;
        out->status_flags_set = TRUE;
        out->status_flags = (hole ? 0 : VD_BLOCK_DATA) | (zero ? VD_BLOCK_ZERO : 0);
        if (out->status_flags != 0)
            out->status_flags |= VD_BLOCK_ALLOCATED | VD_BLOCK_OFFSET_VALID;
        return TRUE;
    }
    if (zero) {
        /* Reads zero: nothing to read. Data that happens to be zeroes is
         * data and zero to qemu-img map. */
        out->kind = VD_EXTENT_ZERO;
        if (!hole) {
            out->status_flags_set = TRUE;
            out->status_flags =
                VD_BLOCK_DATA | VD_BLOCK_ZERO | VD_BLOCK_ALLOCATED | VD_BLOCK_OFFSET_VALID;
        }
        return TRUE;
    }
    /* A hole that need not read zero is read like data. */
    out->kind = VD_EXTENT_DATA;
    return TRUE;
}

#else /* !HAVE_LIBNBD */

static gboolean no_nbd(const char *name, GError **error)
{
    vd_set_file_error(error, name, VD_ERROR_NOT_SUPPORTED,
                      "vdisk was built without NBD support (libnbd was not found when it was "
                      "built)");
    return FALSE;
}

VdFile *vd_file_open_nbd(const char *name, VdOptions *opts, gboolean read_write, GError **error)
{
    /* A name that is no NBD address is still told so first. */
    g_auto(NbdAddress) a = { 0 };
    if (parse_name(name, &a, error))
        no_nbd(name, error);
    return NULL;
}

VdFile *vd_file_open_nbd_socket(int fd, const char *export_name, gboolean read_write,
                                GError **error)
{
    no_nbd("NBD export", error);
    return NULL;
}

void vd_nbd_close(VdNbd *nbd) {}
guint64 vd_nbd_size(VdNbd *nbd) { return 0; }
gboolean vd_nbd_pread(VdNbd *nbd, guint64 offset, void *buf, gsize len, GError **error)
{
    return no_nbd(NULL, error);
}
gboolean vd_nbd_pwrite(VdNbd *nbd, guint64 offset, const void *buf, gsize len, GError **error)
{
    return no_nbd(NULL, error);
}
gboolean vd_nbd_zero(VdNbd *nbd, guint64 offset, guint64 len, gboolean may_unmap, GError **error)
{
    return no_nbd(NULL, error);
}
gboolean vd_nbd_flush(VdNbd *nbd, GError **error) { return no_nbd(NULL, error); }
gboolean vd_nbd_extent(VdNbd *nbd, guint64 offset, guint64 max, VdExtent *out, GError **error)
{
    return no_nbd(NULL, error);
}

#endif

gboolean vd_nbd_supported(void) { return HAVE_LIBNBD; }
