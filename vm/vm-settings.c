/* A VM's settings, whoever wrote them: the file in a VM folder, and the
 * reader for it. */
#include "vm.h"

/* A disk given where a VM is asked for (the file manager's "Import into
 * KVM" on a .vdi or .vmdk): the VM it belongs to. */
static char *settings_of_disk(const char *path, GError **error)
{
    g_autofree char *lower = g_ascii_strdown(path, -1);
    g_autofree char *found = NULL;
    if (g_str_has_suffix(lower, ".vdi")) {
        found = vm_owner_settings(path);
    } else {
        /* A VMware VM keeps its .vmx beside its disks. */
        g_autofree char *folder = g_path_get_dirname(path);
        found = vm_settings_find(folder, NULL);
        if (found != NULL && !g_str_has_suffix(found, ".vmx"))
            g_clear_pointer(&found, g_free);
    }
    if (found == NULL)
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_FOUND,
                    "%s is a disk, and no VM it belongs to was found beside it; import the disk "
                    "alone (vdiskctl import %s POOL/NAME.qcow2, or vdisk convert)",
                    path, path);
    return g_steal_pointer(&found);
}

char *vm_settings_find(const char *path, GError **error)
{
    if (!g_file_test(path, G_FILE_TEST_IS_DIR)) {
        if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
            g_set_error(error, VD_ERROR, VD_ERROR_NOT_FOUND, "%s: no such file or folder", path);
            return NULL;
        }
        g_autofree char *lower = g_ascii_strdown(path, -1);
        if (g_str_has_suffix(lower, ".vdi") || g_str_has_suffix(lower, ".vmdk"))
            return settings_of_disk(path, error);
        return g_strdup(path);
    }
    g_autoptr(GDir) dir = g_dir_open(path, 0, error);
    if (dir == NULL) {
        g_prefix_error(error, "%s: ", path);
        return NULL;
    }
    g_autoptr(GPtrArray) found = g_ptr_array_new_with_free_func(g_free);
    const char *name;
    while ((name = g_dir_read_name(dir)) != NULL)
        if (g_str_has_suffix(name, ".vbox") || g_str_has_suffix(name, ".vmx") ||
            g_str_has_suffix(name, ".ovf"))
            g_ptr_array_add(found, g_strdup(name));
    if (found->len != 1) {
        g_set_error(error, VD_ERROR,
                    found->len == 0 ? VD_ERROR_NOT_FOUND : VD_ERROR_INVALID_ARGUMENT,
                    "%s: %s; name the VM's settings file", path,
                    found->len == 0 ? "no .vbox, .vmx or .ovf file in this folder"
                                    : "more than one .vbox, .vmx or .ovf file in this folder");
        return NULL;
    }
    return g_build_filename(path, found->pdata[0], NULL);
}

VmMachine *vm_settings_load(const char *path, GError **error)
{
    g_autofree char *lower = g_ascii_strdown(path, -1);
    if (g_str_has_suffix(lower, ".vmx"))
        return vm_vmx_load(path, error);
    if (g_str_has_suffix(lower, ".ovf") || g_str_has_suffix(lower, ".ova"))
        return vm_ovf_load(path, error);
    return vm_vbox_load(path, error);
}
