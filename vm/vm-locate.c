/* One disk of a VirtualBox VM, given alone: which VM it belongs to, what
 * its parents are, and whether it is what the VM uses now.
 *
 * VirtualBox keeps a VM's base disks in the VM folder and the differencing
 * images of its snapshots in Snapshots/ beneath it; a differencing VDI
 * records only its parent's UUID. The engine looks for a parent beside the
 * child only; here the VM's own media registry (the .vbox beside the disk
 * or one folder up) names the chain, and without one the folder above is
 * searched by UUID too.
 */
#include "vm.h"

/* A parent search opens at most this many .vdi headers per folder. */
#define MAX_CANDIDATES 256
#define MAX_CHAIN 64

/* The image and parent UUIDs of the VDI at path (parent NULL for a
 * base), or FALSE when it is no readable VDI. */
static gboolean header_uuids(const char *path, char **image, char **parent, GError **error)
{
    g_autoptr(VdImage) img = vd_image_open(path, "vdi", VD_OPEN_NO_BACKING, error);
    if (img == NULL)
        return FALSE;
    g_autoptr(VdImageInfo) info = vd_image_get_info(img, error);
    if (info == NULL)
        return FALSE;
    const char *i = NULL, *p = NULL;
    if (info->format_specific != NULL) {
        g_variant_lookup(info->format_specific, "image-uuid", "&s", &i);
        g_variant_lookup(info->format_specific, "parent-uuid", "&s", &p);
    }
    if (i == NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_FAILED, "%s: no image UUID", path);
        return FALSE;
    }
    *image = g_ascii_strdown(i, -1);
    *parent = p != NULL ? g_ascii_strdown(p, -1) : NULL;
    return TRUE;
}

/* The folders a VM's settings may be in, for a disk at path: its own and
 * the one above (the disk in Snapshots/). */
static GPtrArray *nearby_folders(const char *path)
{
    GPtrArray *folders = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *absolute = g_canonicalize_filename(path, NULL);
    char *dir = g_path_get_dirname(absolute);
    g_ptr_array_add(folders, dir);
    if (!g_str_equal(dir, "/"))
        g_ptr_array_add(folders, g_path_get_dirname(dir));
    return folders;
}

static GPtrArray *files_with_suffix(const char *folder, const char *suffix)
{
    GPtrArray *found = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GDir) dir = g_dir_open(folder, 0, NULL);
    const char *name;
    while (dir != NULL && (name = g_dir_read_name(dir)) != NULL && found->len < MAX_CANDIDATES) {
        g_autofree char *lower = g_ascii_strdown(name, -1);
        if (g_str_has_suffix(lower, suffix))
            g_ptr_array_add(found, g_build_filename(folder, name, NULL));
    }
    g_ptr_array_sort(found, (GCompareFunc)g_strcmp0);
    return found;
}

VmMachine *vm_find_owner(const char *path, const char *uuid)
{
    g_autoptr(GPtrArray) folders = nearby_folders(path);
    for (guint i = 0; i < folders->len; i++) {
        g_autoptr(GPtrArray) settings = files_with_suffix(folders->pdata[i], ".vbox");
        for (guint k = 0; k < settings->len; k++) {
            /* A settings file that does not read is someone else's
             * problem here: this only looks for the disk's owner. */
            g_autoptr(VmMachine) m = vm_vbox_load(settings->pdata[k], NULL);
            const VmMedium *medium = m != NULL ? vm_machine_lookup_medium(m, uuid) : NULL;
            if (medium != NULL && medium->device == VM_DEVICE_DISK)
                return g_steal_pointer(&m);
        }
    }
    return NULL;
}

/* Is ancestor the medium itself or one of its parents? */
static gboolean descends_from(const VmMedium *medium, const VmMedium *ancestor)
{
    for (; medium != NULL; medium = medium->parent)
        if (medium == ancestor)
            return TRUE;
    return FALSE;
}

const VmMedium *vm_machine_current_descendant(VmMachine *machine, const char *uuid)
{
    const VmMedium *medium = vm_machine_lookup_medium(machine, uuid);
    const VmHardware *hw = machine->hardware;
    for (guint i = 0; medium != NULL && i < hw->controllers->len; i++) {
        const VmController *c = hw->controllers->pdata[i];
        for (guint k = 0; k < c->attachments->len; k++) {
            const VmAttachment *a = c->attachments->pdata[k];
            const VmMedium *attached = a->type == VM_DEVICE_DISK
                                           ? vm_machine_lookup_medium(machine, a->medium_uuid)
                                           : NULL;
            if (attached != NULL && descends_from(attached, medium))
                return attached;
        }
    }
    return NULL;
}

/* The chain from the VDI at path by UUID alone, each parent looked for in
 * the folders near the child and near the first image. */
static GPtrArray *chain_by_search(const char *path, GError **error)
{
    g_autoptr(GPtrArray) chain = g_ptr_array_new_with_free_func((GDestroyNotify)vm_chain_link_free);
    g_autofree char *current = g_canonicalize_filename(path, NULL);
    g_autoptr(GPtrArray) first_folders = nearby_folders(path);
    while (current != NULL) {
        g_autofree char *image = NULL, *parent = NULL;
        if (!header_uuids(current, &image, &parent, error))
            return NULL;
        VmChainLink *link = g_new0(VmChainLink, 1);
        link->path = g_strdup(current);
        link->format = g_strdup("vdi");
        link->uuid = g_strdup(image);
        g_ptr_array_add(chain, link);
        g_clear_pointer(&current, g_free);
        if (parent == NULL)
            break;
        if (chain->len >= MAX_CHAIN) {
            g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                        "%s: more than %d differencing images", path, MAX_CHAIN);
            return NULL;
        }
        g_autoptr(GPtrArray) folders = nearby_folders(link->path);
        for (guint i = 0; i < first_folders->len; i++)
            g_ptr_array_add(folders, g_strdup(first_folders->pdata[i]));
        for (guint i = 0; i < folders->len && current == NULL; i++) {
            g_autoptr(GPtrArray) vdis = files_with_suffix(folders->pdata[i], ".vdi");
            for (guint k = 0; k < vdis->len && current == NULL; k++) {
                g_autofree char *cand_image = NULL, *cand_parent = NULL;
                if (header_uuids(vdis->pdata[k], &cand_image, &cand_parent, NULL) &&
                    g_str_equal(cand_image, parent))
                    current = g_strdup(vdis->pdata[k]);
            }
        }
        if (current == NULL) {
            g_set_error(error, VD_ERROR, VD_ERROR_NOT_FOUND,
                        "%s: its parent {%s} is neither beside it, nor in the folder above, "
                        "nor registered in a VirtualBox VM there (.vbox)",
                        link->path, parent);
            return NULL;
        }
    }
    return g_steal_pointer(&chain);
}

char *vm_current_state_of(const char *path, VmMachine **owner)
{
    *owner = NULL;
    g_autofree char *image = NULL, *parent = NULL;
    if (!header_uuids(path, &image, &parent, NULL))
        return NULL;
    g_autoptr(VmMachine) m = vm_find_owner(path, image);
    const VmMedium *current = m != NULL ? vm_machine_current_descendant(m, image) : NULL;
    if (current == NULL || g_ascii_strcasecmp(current->uuid, image) == 0)
        return NULL;
    char *current_path = vm_machine_medium_path(m, current);
    *owner = g_steal_pointer(&m);
    return current_path;
}

char *vm_owner_settings(const char *path)
{
    g_autofree char *image = NULL, *parent = NULL;
    if (!header_uuids(path, &image, &parent, NULL))
        return NULL;
    g_autoptr(VmMachine) owner = vm_find_owner(path, image);
    return owner != NULL ? g_strdup(owner->settings_path) : NULL;
}

GPtrArray *vm_chain_for_vdi(const char *path, GError **error)
{
    g_autofree char *image = NULL, *parent = NULL;
    if (!header_uuids(path, &image, &parent, error))
        return NULL;
    g_autoptr(VmMachine) owner = vm_find_owner(path, image);
    if (owner != NULL) {
        g_autoptr(GPtrArray) chain = vm_resolve_chain(owner, image, error);
        if (chain == NULL) {
            g_prefix_error(error, "through the VM's settings: ");
            return NULL;
        }
        /* The file named, where the registry has another of its UUID (a
         * copy): the one the user named is the one read. */
        VmChainLink *top = chain->pdata[0];
        g_free(top->path);
        top->path = g_canonicalize_filename(path, NULL);
        return g_steal_pointer(&chain);
    }
    return chain_by_search(path, error);
}
