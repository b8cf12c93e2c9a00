/* vdiskctl: the files an image of the user's reads through, found and
 * opened here, as the user, and passed to vdiskd with ImportVolume's
 * "chain" and "related-files" options (or "appliance-disk" for a disk
 * inside an OVA), so that vdiskd never opens a user's path.
 *
 * A differencing image's parents are found as vdisk convert finds them:
 * by the engine (the names a qcow2 or vmdk carries, a VDI's parent beside
 * it) and, for a VirtualBox VM's Snapshots/ layout, through the VM's media
 * registry or the folder above (vm/vm-locate.c).
 */
#include "ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vdisk.h"
#include "vm.h"

/* Parents passed in a call's own descriptors, beside the source and the
 * related-files socket. */
#define MAX_CHAIN_PASSED 14
/* A packet of the related-files socket: at most SCM_MAX_FD descriptors. */
#define RELATED_PACKET_FDS 253

/* A link for a layer the engine opened. */
static VmChainLink *link_of_layer(VdImage *layer)
{
    VmChainLink *link = g_new0(VmChainLink, 1);
    link->path = g_canonicalize_filename(vd_image_filename(layer), NULL);
    link->format = g_strdup(vd_image_format(layer));
    link->uuid = g_strdup("");
    link->virtual_size = vd_image_size(layer);
    return link;
}

GPtrArray *ctl_chain_of_file(const char *path, const char *format, GError **error)
{
    g_autoptr(GPtrArray) chain = g_ptr_array_new_with_free_func((GDestroyNotify)vm_chain_link_free);
    g_autoptr(GError) local = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, format, 0, &local);
    if (img != NULL) {
        for (VdImage *layer = img; layer != NULL; layer = vd_image_backing(layer))
            g_ptr_array_add(chain, link_of_layer(layer));
        return g_steal_pointer(&chain);
    }
    /* A VirtualBox snapshot's differencing VDI, its base one folder up. */
    g_autoptr(VdImage) alone = vd_image_open(path, format, VD_OPEN_NO_BACKING, NULL);
    if (alone != NULL && g_str_equal(vd_image_format(alone), "vdi") &&
        g_error_matches(local, VD_ERROR, VD_ERROR_NOT_FOUND))
        return vm_chain_for_vdi(path, error);
    /* A vmdk fails on the files it names (extents, its parent) more than
     * on itself: only here can they be named by their paths. */
    if (g_strcmp0(format != NULL ? format : vd_probe_file(path, NULL, NULL), "vmdk") == 0) {
        g_propagate_error(error, g_steal_pointer(&local));
        return NULL;
    }
    /* No chain: vdiskd reads the file and says what is wrong with it. */
    return g_steal_pointer(&chain);
}

/* to as a name relative to the folder from (both absolute): "../b.vdi". */
static char *relative_name(const char *from, const char *to)
{
    g_auto(GStrv) a = g_strsplit(from, "/", -1);
    g_auto(GStrv) b = g_strsplit(to, "/", -1);
    guint na = g_strv_length(a), nb = g_strv_length(b), common = 0;
    /* The last part of to is its file name: never common. */
    while (common < na && common + 1 < nb && g_str_equal(a[common], b[common]))
        common++;
    GString *rel = g_string_new(NULL);
    for (guint i = common; i < na; i++)
        if (*a[i] != '\0')
            g_string_append(rel, "../");
    for (guint i = common; i < nb; i++) {
        g_string_append(rel, b[i]);
        if (i + 1 < nb)
            g_string_append_c(rel, '/');
    }
    return g_string_free(rel, FALSE);
}

GVariant *ctl_chain_option(GPtrArray *chain, GUnixFDList *fds, GError **error)
{
    if (chain == NULL || chain->len < 2)
        return NULL;
    const VmChainLink *top = chain->pdata[0];
    /* The system bus carries 16 descriptors a message: the source, its
     * parents and the socket of their extents. */
    if (chain->len - 1 > MAX_CHAIN_PASSED) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "%s reads through %u parents; vdiskd can be passed %d at most (a D-Bus "
                    "message carries 16 descriptors): 'vdisk convert' or 'vdisk import-vm' "
                    "read it offline",
                    top->path, chain->len - 1, MAX_CHAIN_PASSED);
        return NULL;
    }
    g_autofree char *folder = g_path_get_dirname(top->path);
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE("a(sh)"));
    for (guint i = 1; i < chain->len; i++) {
        const VmChainLink *link = chain->pdata[i];
        if (link->member != NULL) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                        "%s: a disk inside an appliance cannot be the parent of another",
                        link->path);
            g_variant_builder_clear(&b);
            return NULL;
        }
        gint index = ctl_fds_append_path(fds, link->path, O_RDONLY, error);
        if (index < 0) {
            g_variant_builder_clear(&b);
            return NULL;
        }
        g_autofree char *name = relative_name(folder, link->path);
        g_variant_builder_add(&b, "(sh)", name, index);
    }
    return g_variant_builder_end(&b);
}

/* Send entries (a(us)) and their descriptors as one packet. */
static gboolean send_packet(int sock, GVariant *v, const int *fds, guint n_fds, GError **error)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * RELATED_PACKET_FDS)];
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = { (void *)g_variant_get_data(v), g_variant_get_size(v) };
    struct msghdr m = { .msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = control.buf,
                        .msg_controllen = CMSG_SPACE(sizeof(int) * n_fds) };
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
    if (sendmsg(sock, &m, MSG_NOSIGNAL) < 0) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                    "cannot pass the files to vdiskd: %s", g_strerror(err));
        return FALSE;
    }
    return TRUE;
}

GVariant *ctl_related_files_option(GPtrArray *chain, GUnixFDList *fds, GError **error)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GArray) images = g_array_new(FALSE, FALSE, sizeof(guint32));
    g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; chain != NULL && i < chain->len; i++) {
        const VmChainLink *link = chain->pdata[i];
        if (link->member != NULL)
            continue; /* inside an appliance: names nothing */
        g_autoptr(GError) local = NULL;
        g_autoptr(VdImage) img =
            vd_image_open(link->path, link->format, VD_OPEN_NO_BACKING, &local);
        if (img == NULL && g_error_matches(local, VD_ERROR, VD_ERROR_NOT_FOUND)) {
            /* A lost extent is told here, by its path. */
            g_propagate_error(error, g_steal_pointer(&local));
            return NULL;
        }
        if (img == NULL)
            continue; /* vdiskd reads the file and says what is wrong with it */
        g_autoptr(GPtrArray) related = vd_image_related_files(img);
        for (guint j = 0; j < related->len; j++) {
            const char *name = related->pdata[j];
            if (!g_utf8_validate(name, -1, NULL)) {
                g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                            "%s names a file whose name is not UTF-8, which vdiskd cannot be "
                            "told; rename it and its mention",
                            link->path);
                return NULL;
            }
            g_ptr_array_add(paths, vd_resolve_relative(link->path, name));
            g_ptr_array_add(names, g_strdup(name));
            g_array_append_val(images, i);
        }
    }
    if (names->len == 0)
        return NULL;
    /* More than a D-Bus message carries: over a socket vdiskd reads
     * before it answers, sent and closed here first. */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "socketpair: %s",
                    g_strerror(err));
        return NULL;
    }
    gboolean ok = TRUE;
    for (guint start = 0; ok && start < names->len; start += RELATED_PACKET_FDS) {
        guint n = MIN(names->len - start, RELATED_PACKET_FDS);
        int packet[RELATED_PACKET_FDS];
        guint opened = 0;
        GVariantBuilder b;
        g_variant_builder_init(&b, G_VARIANT_TYPE("a(us)"));
        for (; ok && opened < n; opened++) {
            const char *path = paths->pdata[start + opened];
            packet[opened] = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
            if (packet[opened] < 0) {
                int err = errno;
                g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "%s: %s", path,
                            g_strerror(err));
                ok = FALSE;
                break;
            }
            g_variant_builder_add(&b, "(us)", g_array_index(images, guint32, start + opened),
                                  (const char *)names->pdata[start + opened]);
        }
        GVariant *entries = g_variant_ref_sink(g_variant_builder_end(&b));
        ok = ok && send_packet(sv[0], entries, packet, n, error);
        g_variant_unref(entries);
        for (guint k = 0; k < opened; k++)
            close(packet[k]);
    }
    close(sv[0]);
    gint index = ok ? g_unix_fd_list_append(fds, sv[1], error) : -1;
    close(sv[1]);
    return index >= 0 ? g_variant_new_handle(index) : NULL;
}

gint ctl_appliance_disk(const char *path, const char *member, GError **error)
{
    if (member != NULL)
        return vm_appliance_disk_index(path, member, error);
    g_autoptr(GPtrArray) disks = vd_ova_list_disks(path, error);
    if (disks == NULL)
        return -1;
    if (disks->len == 1)
        return 0;
    if (disks->len == 0) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "%s: the appliance holds no disk",
                    path);
        return -1;
    }
    g_ptr_array_add(disks, NULL);
    g_autofree char *list = g_strjoinv(", ", (char **)disks->pdata);
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "%s is an appliance of %u disks (%s): 'vdiskctl import-vm %s POOL' imports "
                "them all with their VM, 'vdisk convert --disk N' one of them",
                path, disks->len - 1, list, path);
    return -1;
}

void ctl_chain_warn_not_current(const char *path, GPtrArray *chain)
{
    const VmChainLink *top = chain != NULL && chain->len > 0 ? chain->pdata[0] : NULL;
    if (top == NULL || g_strcmp0(top->format, "vdi") != 0)
        return;
    g_autoptr(VmMachine) owner = NULL;
    g_autofree char *current_path = vm_current_state_of(path, &owner);
    if (current_path == NULL)
        return;
    fprintf(stderr,
            "vdiskctl: warning: %s is not the current state of VirtualBox VM '%s': the VM now "
            "uses %s, made on it since (a snapshot). Importing %s gives the disk as it was; "
            "'vdiskctl import-vm %s POOL' imports the VM as it is now\n",
            path, owner->name, current_path, path, owner->settings_path);
}
