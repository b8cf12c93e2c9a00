/* The files behind an attached disk: from the medium the current state
 * attaches (the deepest differencing image) up its parents in the media
 * registry to the base, each file found where the registry says and
 * checked against its own header.
 *
 * A differencing VDI records only its parent's UUID, so the registry is
 * what names the files; the header UUIDs are what proves the registry
 * right. A chain that disagrees with its files is refused: copying it
 * would give the guest a disk that never existed.
 */
#include <errno.h>
#include <sys/stat.h>

#include "vm.h"

/* VirtualBox keeps a snapshot's differencing image per snapshot; a chain
 * longer than the engine's backing limit could not be opened anyway. */
#define MAX_CHAIN 64

void vm_chain_link_free(VmChainLink *link)
{
    if (link == NULL)
        return;
    g_free(link->path);
    g_free(link->member);
    g_free(link->format);
    g_free(link->uuid);
    g_free(link);
}

/* vdisk's format for a VirtualBox medium format, or NULL. */
static const char *format_from_vbox(const char *format)
{
    static const char *const known[] = { "vdi", "vmdk", "qcow2", "qcow", "raw" };
    for (gsize i = 0; i < G_N_ELEMENTS(known); i++)
        if (g_ascii_strcasecmp(format, known[i]) == 0 && vd_format_known(known[i]))
            return known[i];
    return NULL;
}

/* The image and parent UUIDs a VDI's header carries (parent NULL for a
 * base image). */
static gboolean vdi_header_uuids(VdImage *img, char **image_uuid, char **parent_uuid,
                                 GError **error)
{
    g_autoptr(VdImageInfo) info = vd_image_get_info(img, error);
    if (info == NULL)
        return FALSE;
    const char *image = NULL, *parent = NULL;
    if (info->format_specific != NULL) {
        g_variant_lookup(info->format_specific, "image-uuid", "&s", &image);
        g_variant_lookup(info->format_specific, "parent-uuid", "&s", &parent);
    }
    if (image == NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_FAILED, "%s: the VDI header's UUID is not shown",
                    vd_image_filename(img));
        return FALSE;
    }
    *image_uuid = g_ascii_strdown(image, -1);
    *parent_uuid = parent != NULL ? g_ascii_strdown(parent, -1) : NULL;
    return TRUE;
}

/* Does path hold a VDI whose header UUID is uuid? */
static gboolean vdi_has_uuid(const char *path, const char *uuid)
{
    g_autoptr(VdImage) img = vd_image_open(path, "vdi", VD_OPEN_NO_BACKING, NULL);
    g_autofree char *image = NULL, *parent = NULL;
    return img != NULL && vdi_header_uuids(img, &image, &parent, NULL) && g_str_equal(image, uuid);
}

/* Where the medium's file is. VirtualBox writes the location it had when
 * the VM was last saved; a VM folder moved from another machine (another
 * user's home, a Windows drive) still has its files beside the settings,
 * so a missing file is looked for by its name in the VM folder and the
 * snapshot folder, and taken only when its header UUID is the medium's. */
static char *locate(VmMachine *machine, const VmMedium *medium, const char *format, GError **error)
{
    g_autofree char *path = vm_machine_medium_path(machine, medium);
    if (g_file_test(path, G_FILE_TEST_EXISTS))
        return g_steal_pointer(&path);
    if (g_str_equal(format, "vdi")) {
        g_autofree char *base = g_path_get_basename(path);
        const char *folders[] = { machine->folder, machine->snapshot_folder };
        for (gsize i = 0; i < G_N_ELEMENTS(folders); i++) {
            g_autofree char *candidate = g_build_filename(folders[i], base, NULL);
            if (g_file_test(candidate, G_FILE_TEST_IS_REGULAR) &&
                vdi_has_uuid(candidate, medium->uuid))
                return g_steal_pointer(&candidate);
        }
    }
    g_set_error(error, VD_ERROR, VD_ERROR_NOT_FOUND,
                "%s: hard disk {%s} is at '%s', and %s does not exist%s", machine->settings_path,
                medium->uuid, medium->location, path,
                g_str_equal(format, "vdi") ? " (nor is a VDI of that UUID by that name in the "
                                             "VM folder or its snapshot folder)"
                                           : "");
    return NULL;
}

static gboolean check_vdi(VmMachine *machine, const VmMedium *medium, VdImage *img, GError **error)
{
    g_autofree char *image = NULL, *parent = NULL;
    if (!vdi_header_uuids(img, &image, &parent, error))
        return FALSE;
    const char *path = vd_image_filename(img);
    if (!g_str_equal(image, medium->uuid)) {
        g_set_error(error, VD_ERROR, VD_ERROR_CORRUPT,
                    "%s: its header says it is {%s}, but %s registers it as {%s}", path, image,
                    machine->settings_path, medium->uuid);
        return FALSE;
    }
    if (medium->parent == NULL && parent != NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_CORRUPT,
                    "%s: a differencing image (its parent is {%s}), but %s registers it as a "
                    "base disk",
                    path, parent, machine->settings_path);
        return FALSE;
    }
    if (medium->parent != NULL && parent == NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_CORRUPT,
                    "%s: not a differencing image, but %s registers it as made on {%s}", path,
                    machine->settings_path, medium->parent->uuid);
        return FALSE;
    }
    if (medium->parent != NULL && !g_str_equal(parent, medium->parent->uuid)) {
        g_set_error(error, VD_ERROR, VD_ERROR_CORRUPT,
                    "%s: its header says its parent is {%s}, but %s registers it under {%s}", path,
                    parent, machine->settings_path, medium->parent->uuid);
        return FALSE;
    }
    return TRUE;
}

int vm_appliance_disk_index(const char *appliance, const char *member, GError **error)
{
    g_autoptr(GPtrArray) names = vd_ova_list_disks(appliance, error);
    if (names == NULL)
        return -1;
    for (guint i = 0; i < names->len; i++)
        if (g_str_equal(names->pdata[i], member))
            return (int)i;
    g_set_error(error, VD_ERROR, VD_ERROR_NOT_FOUND, "%s: the appliance holds no disk %s",
                appliance, member);
    return -1;
}

/* A disk inside an .ova: read in place, never unpacked. */
static VmChainLink *appliance_link(VmMachine *machine, const VmMedium *medium, const char *format,
                                   GError **error)
{
    int index = vm_appliance_disk_index(machine->appliance, medium->location, error);
    if (index < 0)
        return NULL;
    g_autoptr(VdImage) img = vd_image_open_ova(machine->appliance, index, error);
    if (img == NULL)
        return NULL;
    if (!g_str_equal(vd_image_format(img), format)) {
        g_set_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT,
                    "%s: disk %s is a %s image, not %s as its name says", machine->appliance,
                    medium->location, vd_image_format(img), format);
        return NULL;
    }
    g_autoptr(VdImageInfo) info = vd_image_get_info(img, error);
    if (info == NULL)
        return NULL;
    VmChainLink *link = g_new0(VmChainLink, 1);
    link->path = g_strdup(machine->appliance);
    link->member = g_strdup(medium->location);
    link->format = g_strdup(format);
    link->uuid = g_strdup(medium->uuid);
    link->virtual_size = vd_image_size(img);
    link->file_size = info->actual_size > 0 ? (guint64)info->actual_size : 0;
    return link;
}

/* The bytes img's own files take: the one at path (st) and those it
 * names besides its parent, a split vmdk's extents, which a descriptor
 * of a few hundred bytes says nothing of. */
static guint64 files_size(VdImage *img, const char *path, const struct stat *st)
{
    guint64 size = (guint64)st->st_size;
    g_autoptr(GPtrArray) names = vd_image_related_files(img);
    for (guint i = 0; i < names->len; i++) {
        g_autofree char *other = vd_resolve_relative(path, names->pdata[i]);
        struct stat ost;
        if (stat(other, &ost) == 0)
            size += (guint64)ost.st_size;
    }
    return size;
}

static VmChainLink *resolve_link(VmMachine *machine, const VmMedium *medium, GError **error)
{
    const char *format = format_from_vbox(medium->format);
    if (format == NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT,
                    "%s: hard disk {%s} (%s) is in the %s format, which vdisk does not read",
                    machine->settings_path, medium->uuid, medium->location, medium->format);
        return NULL;
    }
    if (medium->encrypted) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "%s: hard disk {%s} (%s) is encrypted by VirtualBox, which vdisk cannot "
                    "read; decrypt it in VirtualBox first (VBoxManage encryptmedium "
                    "--oldpassword)",
                    machine->settings_path, medium->uuid, medium->location);
        return NULL;
    }
    if (medium->parent != NULL && !g_str_equal(format, "vdi")) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "%s: hard disk {%s} (%s) is a differencing %s image; only differencing "
                    "VDI chains are followed",
                    machine->settings_path, medium->uuid, medium->location, medium->format);
        return NULL;
    }
    if (machine->appliance != NULL)
        return appliance_link(machine, medium, format, error);
    g_autofree char *path = locate(machine, medium, format, error);
    if (path == NULL)
        return NULL;
    g_autoptr(VdImage) img = vd_image_open(path, format, VD_OPEN_NO_BACKING, error);
    if (img == NULL)
        return NULL;
    if (g_str_equal(format, "vdi") && !check_vdi(machine, medium, img, error))
        return NULL;
    struct stat st;
    if (stat(path, &st) < 0) {
        g_set_error(error, VD_ERROR, VD_ERROR_IO, "%s: %s", path, g_strerror(errno));
        return NULL;
    }
    VmChainLink *link = g_new0(VmChainLink, 1);
    link->path = g_steal_pointer(&path);
    link->format = g_strdup(format);
    link->uuid = g_strdup(medium->uuid);
    link->virtual_size = vd_image_size(img);
    link->file_size = files_size(img, link->path, &st);
    return link;
}

/* A vmdk names its own parent (a VMware snapshot's delta names the disk
 * it was made on, and the engine checks the CIDs): where the registry's
 * chain ends on one, the engine's chain below it is the rest. */
static gboolean append_own_parents(GPtrArray *chain, GError **error)
{
    const VmChainLink *last = chain->pdata[chain->len - 1];
    if (g_str_equal(last->format, "vdi") || last->member != NULL)
        return TRUE;
    g_autoptr(VdImage) img = vd_image_open(last->path, last->format, 0, error);
    if (img == NULL)
        return FALSE;
    for (VdImage *layer = vd_image_backing(img); layer != NULL; layer = vd_image_backing(layer)) {
        if (chain->len >= MAX_CHAIN) {
            g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                        "%s: more than %d images in its chain", last->path, MAX_CHAIN);
            return FALSE;
        }
        struct stat st;
        const char *path = vd_image_filename(layer);
        if (stat(path, &st) < 0) {
            g_set_error(error, VD_ERROR, VD_ERROR_IO, "%s: %s", path, g_strerror(errno));
            return FALSE;
        }
        VmChainLink *link = g_new0(VmChainLink, 1);
        link->path = g_canonicalize_filename(path, NULL);
        link->format = g_strdup(vd_image_format(layer));
        link->uuid = g_strdup("");
        link->virtual_size = vd_image_size(layer);
        link->file_size = files_size(layer, path, &st);
        g_ptr_array_add(chain, link);
    }
    return TRUE;
}

GPtrArray *vm_resolve_chain(VmMachine *machine, const char *uuid, GError **error)
{
    const VmMedium *medium = vm_machine_lookup_medium(machine, uuid);
    if (medium == NULL || medium->device != VM_DEVICE_DISK) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_FOUND,
                    "%s: no hard disk {%s} in the media registry", machine->settings_path, uuid);
        return NULL;
    }
    g_autoptr(GPtrArray) chain = g_ptr_array_new_with_free_func((GDestroyNotify)vm_chain_link_free);
    for (; medium != NULL; medium = medium->parent) {
        if (chain->len >= MAX_CHAIN) {
            g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                        "%s: hard disk {%s} sits on more than %d differencing images",
                        machine->settings_path, uuid, MAX_CHAIN);
            return NULL;
        }
        VmChainLink *link = resolve_link(machine, medium, error);
        if (link == NULL)
            return NULL;
        g_ptr_array_add(chain, link);
    }
    return append_own_parents(chain, error) ? g_steal_pointer(&chain) : NULL;
}

VdOptions *vm_chain_open_options(GPtrArray *chain)
{
    VdOptions *opts = vd_options_new();
    g_autoptr(GString) prefix = g_string_new(NULL);
    for (guint i = 1; i < chain->len; i++) {
        const VmChainLink *link = chain->pdata[i];
        g_autofree char *key = g_strconcat(prefix->str, "backing", NULL);
        g_autofree char *format_key = g_strconcat(prefix->str, "backing-format", NULL);
        vd_options_set(opts, key, link->path);
        vd_options_set(opts, format_key, link->format);
        g_string_append(prefix, "backing.");
    }
    return opts;
}

VdImage *vm_chain_open(GPtrArray *chain, GError **error)
{
    g_autoptr(VdOptions) opts = vm_chain_open_options(chain);
    const VmChainLink *top = chain->pdata[0];
    if (top->member != NULL) {
        int index = vm_appliance_disk_index(top->path, top->member, error);
        return index < 0 ? NULL : vd_image_open_ova(top->path, index, error);
    }
    return vd_image_open_opts(top->path, top->format, 0, opts, NULL, error);
}
