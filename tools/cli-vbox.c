/* vdisk: a VirtualBox VM's disk given alone. A differencing VDI in the
 * VM's Snapshots folder has its parent one folder up, where the engine
 * (which looks beside the child) does not find it: the VM's own media
 * registry names the chain, or the folder above is searched by UUID
 * (vm/vm-locate.c). And a disk that is not what the VM uses now (a base
 * disk under snapshots) is read as it is, with a warning that names the
 * current state, so nobody imports an old state without knowing. */
#include "cli.h"
#include "vm.h"

VdImage *cli_vbox_open_chain(const char *path, VdOptions *open_opts, VdOpenFlags flags,
                             GError **error)
{
    g_autoptr(GPtrArray) chain = vm_chain_for_vdi(path, error);
    if (chain == NULL)
        return NULL;
    g_autoptr(VdOptions) opts = vm_chain_open_options(chain);
    if (open_opts != NULL) {
        g_autoptr(GPtrArray) keys = vd_options_keys(open_opts);
        for (guint i = 0; i < keys->len; i++)
            vd_options_set(opts, keys->pdata[i], vd_options_get(open_opts, keys->pdata[i]));
    }
    return cli_open_image_with_keys(path, "vdi", opts, flags, error);
}

VdImage *cli_vbox_name_parent(const char *path, VdImage *img, VdOpenFlags flags)
{
    g_autoptr(VdImageInfo) info = vd_image_get_info(img, NULL);
    if (info == NULL || info->backing_filename != NULL || info->format_specific == NULL ||
        !g_variant_lookup(info->format_specific, "parent-uuid", "&s", NULL))
        return NULL;
    g_autoptr(GPtrArray) chain = vm_chain_for_vdi(path, NULL);
    if (chain == NULL || chain->len < 2)
        return NULL;
    /* Named, the parent is checked against the child's header still. */
    g_autoptr(VdOptions) opts = vd_options_new();
    const VmChainLink *parent = chain->pdata[1];
    vd_options_set(opts, "backing", parent->path);
    vd_options_set(opts, "backing-format", parent->format);
    return cli_open_image_with_keys(path, "vdi", opts, flags, NULL);
}

void cli_vbox_check_current(const char *path)
{
    g_autoptr(VmMachine) owner = NULL;
    g_autofree char *current_path = vm_current_state_of(path, &owner);
    if (current_path == NULL)
        return;
    cli_advise("%s is not the current state of VirtualBox VM '%s': the VM now uses %s, made on it "
               "since (a snapshot). Reading %s gives the disk as it was; 'vdisk import-vm %s' "
               "imports the VM as it is now",
               path, owner->name, current_path, path, owner->settings_path);
}
