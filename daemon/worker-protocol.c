#include "worker-protocol.h"

#include <errno.h>
#include <gio/gio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The error of a failed sendmsg or recvmsg, from errno. */
static gboolean socket_error(GError **error)
{
    int e = errno;
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e), "worker socket: %s", g_strerror(e));
    return FALSE;
}

static gboolean write_all(int sock, const guint8 *p, gsize len, const int *fds, guint n_fds,
                          GError **error)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * VDD_WIRE_MAX_FDS)];
        struct cmsghdr align;
    } control;
    while (len > 0) {
        struct iovec iov = { .iov_base = (void *)p, .iov_len = len };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (n_fds > 0) {
            memset(&control, 0, sizeof control);
            m.msg_control = control.buf;
            m.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
            struct cmsghdr *c = CMSG_FIRSTHDR(&m);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
            memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
        }
        ssize_t n = sendmsg(sock, &m, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return socket_error(error);
        p += n;
        len -= n;
        n_fds = 0; /* sent with the first byte */
    }
    return TRUE;
}

gboolean vdd_wire_send(int sock, GVariant *msg, const int *fds, guint n_fds, GError **error)
{
    g_return_val_if_fail(n_fds <= VDD_WIRE_MAX_FDS, FALSE);
    g_autoptr(GVariant) owned = g_variant_ref_sink(msg);
    g_return_val_if_fail(g_variant_is_of_type(owned, G_VARIANT_TYPE_VARDICT), FALSE);
    gsize size = g_variant_get_size(owned);
    if (size > VDD_WIRE_MAX_MESSAGE) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE,
                    "worker message of %" G_GSIZE_FORMAT " bytes is too large", size);
        return FALSE;
    }
    /* The serialised form wants its own aligned buffer. */
    g_autoptr(GBytes) body = g_variant_get_data_as_bytes(owned);
    guint32 le = GUINT32_TO_LE((guint32)size);
    return write_all(sock, (const guint8 *)&le, 4, fds, n_fds, error) &&
           write_all(sock, g_bytes_get_data(body, NULL), size, NULL, 0, error);
}

/* Read exactly len bytes; descriptors that arrive are appended to fds. */
static gboolean read_all(int sock, guint8 *p, gsize len, int *fds, guint *n_fds, gboolean *eof,
                         GError **error)
{
    gsize got = 0;
    while (got < len) {
        union {
            char buf[CMSG_SPACE(sizeof(int) * VDD_WIRE_MAX_FDS)];
            struct cmsghdr align;
        } control;
        struct iovec iov = { .iov_base = p + got, .iov_len = len - got };
        struct msghdr m = { .msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = control.buf,
                            .msg_controllen = sizeof control.buf };
        ssize_t n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return socket_error(error);
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c != NULL; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                continue;
            guint k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            const int *in = (const int *)CMSG_DATA(c);
            for (guint i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, in + i, sizeof fd);
                if (*n_fds < VDD_WIRE_MAX_FDS)
                    fds[(*n_fds)++] = fd;
                else
                    close(fd);
            }
        }
        if (m.msg_flags & MSG_CTRUNC) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "worker socket: too many descriptors in one message");
            return FALSE;
        }
        if (n == 0) {
            *eof = got == 0;
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_CLOSED,
                        got == 0 ? "the worker closed its socket"
                                 : "the worker closed its socket inside a message");
            return FALSE;
        }
        got += n;
    }
    return TRUE;
}

GVariant *vdd_wire_receive(int sock, int *fds, guint *n_fds, GError **error)
{
    *n_fds = 0;
    guint8 head[4];
    gboolean eof = FALSE;
    if (!read_all(sock, head, 4, fds, n_fds, &eof, error))
        return NULL;
    guint32 size;
    memcpy(&size, head, 4);
    size = GUINT32_FROM_LE(size);
    if (size > VDD_WIRE_MAX_MESSAGE) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "worker message of %u bytes is too large", size);
        return NULL;
    }
    guint8 *body = g_malloc(size);
    if (!read_all(sock, body, size, fds, n_fds, &eof, error)) {
        g_free(body);
        return NULL;
    }
    GBytes *bytes = g_bytes_new_take(body, size);
    g_autoptr(GVariant) v = g_variant_new_from_bytes(G_VARIANT_TYPE_VARDICT, bytes, FALSE);
    g_bytes_unref(bytes);
    /* Untrusted in vdiskd: the worker may have been taken over. */
    GVariant *normal = g_variant_get_normal_form(v);
    return normal;
}

void vdd_wire_add_error(GVariantBuilder *b, const GError *error)
{
    g_variant_builder_add(b, "{sv}", "ok", g_variant_new_boolean(FALSE));
    g_variant_builder_add(b, "{sv}", "error-domain",
                          g_variant_new_string(g_quark_to_string(error->domain)));
    g_variant_builder_add(b, "{sv}", "error-code", g_variant_new_int32(error->code));
    g_variant_builder_add(b, "{sv}", "error-message", g_variant_new_string(error->message));
}

GError *vdd_wire_get_error(GVariant *result)
{
    gboolean ok = FALSE;
    if (g_variant_lookup(result, "ok", "b", &ok) && ok)
        return NULL;
    const char *domain = NULL, *message = NULL;
    gint32 code = 0;
    if (!g_variant_lookup(result, "error-domain", "&s", &domain) ||
        !g_variant_lookup(result, "error-code", "i", &code) ||
        !g_variant_lookup(result, "error-message", "&s", &message) || domain[0] == '\0')
        return g_error_new(G_IO_ERROR, G_IO_ERROR_FAILED, "the worker gave no result");
    /* Only domains this process knows already: a quark is never made from
     * what a worker says. */
    GQuark q = g_quark_try_string(domain);
    if (q == 0)
        return g_error_new(G_IO_ERROR, G_IO_ERROR_FAILED, "%s", message);
    return g_error_new_literal(q, code, message);
}

GVariant *vdd_wire_options_to_variant(VdOptions *opts)
{
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE("a{ss}"));
    if (opts != NULL) {
        g_autoptr(GPtrArray) keys = vd_options_keys(opts);
        for (guint i = 0; i < keys->len; i++)
            g_variant_builder_add(&b, "{ss}", (const char *)keys->pdata[i],
                                  vd_options_get(opts, keys->pdata[i]));
    }
    return g_variant_builder_end(&b);
}

VdOptions *vdd_wire_options_from_variant(GVariant *v)
{
    VdOptions *opts = vd_options_new();
    if (v == NULL || !g_variant_is_of_type(v, G_VARIANT_TYPE("a{ss}")))
        return opts;
    GVariantIter it;
    const char *key, *value;
    g_variant_iter_init(&it, v);
    while (g_variant_iter_next(&it, "{&s&s}", &key, &value))
        vd_options_set(opts, key, value);
    return opts;
}

GVariant *vdd_wire_secrets_to_variant(VdSecrets *secrets, VdOptions *create)
{
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE("a{say}"));
    if (secrets != NULL && create != NULL) {
        g_autoptr(GPtrArray) keys = vd_options_keys(create);
        for (guint i = 0; i < keys->len; i++) {
            if (!g_str_has_suffix(keys->pdata[i], "key-secret"))
                continue;
            const char *id = vd_options_get(create, keys->pdata[i]);
            gsize len = 0;
            const guint8 *data = vd_secrets_lookup(secrets, id, &len);
            if (data != NULL)
                g_variant_builder_add(&b, "{s@ay}", id,
                                      g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, data, len, 1));
        }
    }
    return g_variant_builder_end(&b);
}

VdSecrets *vdd_wire_secrets_from_variant(GVariant *v)
{
    if (v == NULL || !g_variant_is_of_type(v, G_VARIANT_TYPE("a{say}")) ||
        g_variant_n_children(v) == 0)
        return NULL;
    VdSecrets *secrets = vd_secrets_new();
    GVariantIter it;
    const char *id;
    GVariant *data;
    g_variant_iter_init(&it, v);
    while (g_variant_iter_next(&it, "{&s@ay}", &id, &data)) {
        gsize len;
        const guint8 *bytes = g_variant_get_fixed_array(data, &len, 1);
        vd_secrets_add(secrets, id, bytes, len);
        g_variant_unref(data);
    }
    return secrets;
}

void vdd_wire_wipe_secrets(GVariant *msg)
{
    static const char *const roles[] = { "source", "target", "backing" };
    for (guint r = 0; r < G_N_ELEMENTS(roles); r++) {
        g_autoptr(GVariant) img = g_variant_lookup_value(msg, roles[r], G_VARIANT_TYPE_VARDICT);
        g_autoptr(GVariant) secrets =
            img != NULL ? g_variant_lookup_value(img, "secrets", G_VARIANT_TYPE("a{say}")) : NULL;
        for (gsize i = 0; secrets != NULL && i < g_variant_n_children(secrets); i++) {
            g_autoptr(GVariant) entry = g_variant_get_child_value(secrets, i);
            g_autoptr(GVariant) data = g_variant_get_child_value(entry, 1);
            gsize len = 0;
            /* Where GLib keeps the bytes: written over, although the API
             * hands them out read-only, since nothing else may wipe them. */
            guint8 *bytes = (guint8 *)g_variant_get_fixed_array(data, &len, 1);
            if (bytes != NULL && len > 0)
                explicit_bzero(bytes, len);
        }
    }
}

GVariant *vdd_snapshots_to_variant(GPtrArray *snapshots)
{
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE("a(ssttt)"));
    for (guint i = 0; snapshots != NULL && i < snapshots->len; i++) {
        VdSnapshotInfo *s = snapshots->pdata[i];
        g_variant_builder_add(&b, "(ssttt)", s->id ? s->id : "", s->name ? s->name : "",
                              (guint64)s->date_sec, s->vm_clock_nsec, s->vm_state_size);
    }
    return g_variant_builder_end(&b);
}

GVariant *vdd_wire_info_to_variant(VdImageInfo *info)
{
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
    g_variant_builder_add(&b, "{sv}", "format", g_variant_new_string(info->format));
    g_variant_builder_add(&b, "{sv}", "virtual-size", g_variant_new_uint64(info->virtual_size));
    g_variant_builder_add(&b, "{sv}", "actual-size",
                          g_variant_new_uint64(info->actual_size < 0 ? 0 : info->actual_size));
    g_variant_builder_add(&b, "{sv}", "cluster-size", g_variant_new_uint32(info->cluster_size));
    g_variant_builder_add(&b, "{sv}", "encrypted", g_variant_new_boolean(info->encrypted));
    g_variant_builder_add(&b, "{sv}", "dirty", g_variant_new_boolean(info->dirty));
    g_variant_builder_add(
        &b, "{sv}", "backing-file",
        g_variant_new_string(info->backing_filename ? info->backing_filename : ""));
    g_variant_builder_add(&b, "{sv}", "backing-format",
                          g_variant_new_string(info->backing_format ? info->backing_format : ""));
    g_variant_builder_add(&b, "{sv}", "snapshots", vdd_snapshots_to_variant(info->snapshots));
    if (info->format_specific != NULL)
        g_variant_builder_add(&b, "{sv}", "format-specific", info->format_specific);
    return g_variant_builder_end(&b);
}
