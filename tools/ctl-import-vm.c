/* vdiskctl import-vm: a whole VM (VirtualBox .vbox or its folder, VMware
 * .vmx, OVF .ovf or .ova) into a pool of vdiskd and a libvirt domain.
 *
 * The VM is read and planned here with libvdisk-vm, as vdisk import-vm
 * plans it; every file of each disk's chain is opened here, as the user,
 * and passed to vdiskd (ImportVolume with its "chain"), which copies it
 * into the pool as one qcow2. The domain is defined through the user's
 * own libvirt connection (virsh, as a child), never through vdiskd:
 * libvirt decides what the user may define. A failed import deletes the
 * volumes it made and defines nothing.
 */
#include "ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <stdlib.h>

#include "vdisk.h"
#include "vm.h"

/* virsh with the user's connection and args; its stdout in *out (may be
 * NULL). FALSE with error (its stderr) when it fails or is missing. */
static gboolean virsh(const Ctl *ctl, const char *const *args, char **out, GError **error)
{
    g_autoptr(GStrvBuilder) argv = g_strv_builder_new();
    g_strv_builder_add(argv, "virsh");
    g_strv_builder_add(argv, "-q");
    if (ctl->connect_uri != NULL) {
        g_strv_builder_add(argv, "-c");
        g_strv_builder_add(argv, ctl->connect_uri);
    }
    g_strv_builder_addv(argv, (const char **)args);
    g_auto(GStrv) v = g_strv_builder_end(argv);
    g_autofree char *err = NULL;
    int status;
    if (!g_spawn_sync(NULL, v, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, out, &err, &status, error)) {
        g_prefix_error(error, "cannot run virsh (libvirt-clients): ");
        return FALSE;
    }
    if (!g_spawn_check_wait_status(status, NULL)) {
        g_strstrip(err);
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "virsh %s: %s", args[0],
                    *err ? err : "failed");
        return FALSE;
    }
    return TRUE;
}

/* Is a domain called name defined on the user's connection? */
static gboolean domain_exists(const Ctl *ctl, const char *name)
{
    const char *args[] = { "domuuid", name, NULL };
    return virsh(ctl, args, NULL, NULL);
}

/* The network cards join libvirt's network "default" where the user's
 * connection has it running; elsewhere (qemu:///session, a host whose
 * "default" was never started) a domain on it would not start, so they
 * get user-mode networking, as virt-install gives them there. Nothing is
 * changed when the connection cannot be asked: virsh define says why. */
static void choose_network(const Ctl *ctl, VmPlan *plan)
{
    const char *args[] = { "net-list", "--name", NULL };
    g_autofree char *out = NULL;
    g_autofree char *program = g_find_program_in_path("virsh");
    if (program == NULL || !virsh(ctl, args, &out, NULL))
        return;
    g_auto(GStrv) active = g_strsplit(out, "\n", -1);
    for (char **name = active; *name != NULL; name++)
        if (g_str_equal(g_strstrip(*name), plan->network))
            return;
    g_autofree char *why =
        g_strdup_printf("libvirt's network '%s' is not running on %s", plan->network,
                        ctl->connect_uri != NULL ? ctl->connect_uri : "virsh's connection");
    vm_plan_user_networking(plan, why);
    if (!ctl->dry_run && plan->machine->hardware->nics->len > 0)
        fprintf(stderr,
                "vdiskctl: warning: %s: the domain's network cards use user-mode networking "
                "(start it, or change them with virsh edit, to have them join it)\n",
                why);
}

/* The options of one disk's ImportVolume: its source's format, the
 * chain of its parents and the files they name (a split vmdk's extents),
 * opened here; or, for a disk inside an OVA, which of its disks it is. */
static GVariant *disk_options(const VmPlanDisk *disk, GUnixFDList *fds, GError **error)
{
    const VmChainLink *top = disk->chain->pdata[0];
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    if (top->member != NULL) {
        gint index = ctl_appliance_disk(top->path, top->member, error);
        if (index < 0) {
            g_variant_dict_clear(&d);
            return NULL;
        }
        g_variant_dict_insert(&d, "source-format", "s", "ova");
        g_variant_dict_insert(&d, "appliance-disk", "i", index);
        return g_variant_dict_end(&d);
    }
    g_variant_dict_insert(&d, "source-format", "s", top->format);
    GError *local = NULL;
    GVariant *chain = ctl_chain_option(disk->chain, fds, &local);
    GVariant *related = local == NULL ? ctl_related_files_option(disk->chain, fds, &local) : NULL;
    if (local != NULL) {
        g_propagate_error(error, local);
        g_variant_dict_clear(&d);
        return NULL;
    }
    if (chain != NULL)
        g_variant_dict_insert_value(&d, "chain", chain);
    if (related != NULL)
        g_variant_dict_insert_value(&d, "related-files", related);
    return g_variant_dict_end(&d);
}

/* The volume of a disk's layer k: with --keep-snapshots a volume per link
 * of its chain (named as vdisk import-vm names the files), otherwise the
 * one flattened volume. A new string. */
static char *layer_name(const VmPlanDisk *disk, guint k)
{
    return disk->layer_paths != NULL ? g_path_get_basename(disk->layer_paths->pdata[k])
                                     : g_strdup(disk->target_name);
}

/* Import layer link of disk as volume name of pool: its chain from that
 * link down, flattened, or with backing (the volume of the next link,
 * made before it) as an overlay holding only what the link itself holds.
 * Its new volume's path in *volume (even when the job failed, once
 * vdiskd made it). */
static gboolean import_disk(Ctl *ctl, const CtlObject *pool, const VmPlanDisk *disk, guint link,
                            const char *name, const char *backing, char **volume, GError **error)
{
    g_autoptr(GPtrArray) links = g_ptr_array_new();
    for (guint k = link; k < disk->chain->len; k++)
        g_ptr_array_add(links, disk->chain->pdata[k]);
    VmPlanDisk layer = *disk;
    layer.chain = links;
    disk = &layer;
    const VmChainLink *top = disk->chain->pdata[0];
    /* A disk inside an OVA: the appliance is passed, read in place. */
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    gint fd = ctl_fds_append_path(fds, top->path, O_RDONLY, error);
    if (fd < 0)
        return FALSE;
    g_autoptr(GVariant) options = disk_options(disk, fds, error);
    if (options == NULL)
        return FALSE;
    if (backing != NULL) {
        GVariantDict d;
        g_variant_dict_init(&d, options);
        g_variant_dict_insert(&d, "backing-volume", "s", backing);
        g_variant_unref(g_steal_pointer(&options));
        options = g_variant_dict_end(&d);
    }
    g_variant_ref_sink(options);
    g_autofree char *label = g_strdup_printf("Importing %s", name);
    g_autoptr(CtlJobWatch) watch = ctl_job_watch_new(ctl);
    g_autoptr(VddDbusPool) proxy = ctl_pool_proxy(ctl, pool->path, error);
    g_autofree char *job = NULL;
    gboolean called = proxy != NULL && vdd_dbus_pool_call_import_volume_sync(
                                           proxy, g_variant_new_handle(fd), name, "qcow2",
                                           ctl_job_options(ctl, options), ctl->call_flags,
                                           ctl_timeout(ctl), fds, volume, &job, NULL, NULL, error);
    if (ctl_job_follow(watch, called, job, label, error))
        return TRUE;
    ctl_error_name_file(error != NULL ? *error : NULL, "source", top->path);
    return FALSE;
}

/* After a failure: the volumes made are of no use without their VM.
 * Newest first: an overlay goes before the volume it is made on. */
static void delete_volumes(Ctl *ctl, const char *pool_name, GPtrArray *volumes, GPtrArray *names)
{
    for (guint i = volumes->len; i-- > 0;) {
        g_autoptr(GError) error = NULL;
        g_autoptr(VddDbusVolume) proxy = ctl_volume_proxy(ctl, volumes->pdata[i], &error);
        if (proxy == NULL ||
            !ctl_called(vdd_dbus_volume_call_delete_sync(proxy, ctl_no_options(), ctl->call_flags,
                                                         ctl_timeout(ctl), NULL, &error),
                        &error))
            ctl_error("%s/%s is left in the pool (%s); delete it with 'vdiskctl delete %s/%s'",
                      pool_name, (const char *)names->pdata[i], error->message, pool_name,
                      (const char *)names->pdata[i]);
    }
}

/* Define the domain of plan (and start it) through the user's libvirt. */
static gboolean define_domain(Ctl *ctl, const VmPlan *plan, GError **error)
{
    g_autofree char *xml = vm_domain_xml(plan);
    g_autofree char *file = NULL;
    int fd = g_file_open_tmp("vdiskctl-domain-XXXXXX.xml", &file, error);
    if (fd < 0)
        return FALSE;
    close(fd);
    gboolean ok = g_file_set_contents(file, xml, -1, error);
    const char *define[] = { "define", file, NULL };
    ok = ok && virsh(ctl, define, NULL, error);
    g_unlink(file);
    return ok;
}

static int run_import_vm(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    const char *pool_name = operands[1];
    if (ctl->domain_type != NULL && !g_str_equal(ctl->domain_type, "kvm") &&
        !g_str_equal(ctl->domain_type, "qemu")) {
        ctl_error("--domain-type is kvm or qemu, not '%s'", ctl->domain_type);
        return CTL_EXIT_FAILURE;
    }
    g_autofree char *settings = vm_settings_find(operands[0], &error);
    VmMachine *machine = settings != NULL ? vm_settings_load(settings, &error) : NULL;
    if (machine == NULL)
        return ctl_fail(error);
    g_autoptr(CtlObject) pool = ctl_find_pool(ctl, pool_name, &error);
    if (pool == NULL) {
        vm_machine_free(machine);
        return ctl_fail(error);
    }
    /* The domain's disks are the volumes' files, in the pool's folder. */
    const char *folder = ctl_prop_string(pool->props, "Directory");
    g_autoptr(VmPlan) plan = vm_plan_new(machine, folder, ctl->virtio, ctl->domain_type, &error);
    if (plan == NULL)
        return ctl_fail(error);
    if (ctl->keep_snapshots)
        vm_plan_keep_snapshots(plan);
    choose_network(ctl, plan);

    if (ctl->dry_run) {
        g_autofree char *text = vm_plan_describe(plan);
        g_autofree char *xml = vm_domain_xml(plan);
        printf("%s\nInto pool %s; the domain is defined with virsh%s%s.\n\nDomain XML:\n%s", text,
               pool_name, ctl->connect_uri != NULL ? " -c " : "",
               ctl->connect_uri != NULL ? ctl->connect_uri : "", xml);
        return EXIT_SUCCESS;
    }

    /* Nothing is overwritten: the domain's name is checked before any copy
     * (vdiskd refuses a volume name in use by itself). */
    const char *name = plan->machine->name;
    g_autofree char *virsh_path = g_find_program_in_path("virsh");
    if (virsh_path == NULL) {
        ctl_error("virsh is not installed (libvirt-clients): vdiskctl import-vm defines the "
                  "domain with it; --dry-run shows the plan and the XML without it");
        return CTL_EXIT_FAILURE;
    }
    if (domain_exists(ctl, name)) {
        ctl_error("a libvirt domain called '%s' exists already; vdiskctl import-vm "
                  "redefines nothing",
                  name);
        return CTL_EXIT_FAILURE;
    }
    g_autoptr(GPtrArray) volumes = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; i < plan->disks->len && error == NULL; i++) {
        const VmPlanDisk *disk = plan->disks->pdata[i];
        /* With --keep-snapshots a volume per link, the base first, each
         * newer one an overlay of the one made before it. */
        guint layers = disk->layer_paths != NULL ? disk->chain->len : 1;
        ctl_say(ctl, "%s: %u file%s -> %s/%s%s", disk->controller->name, disk->chain->len,
                disk->chain->len == 1 ? "" : "s", pool_name, disk->target_name,
                layers > 1 ? ", on its snapshots' volumes" : "");
        for (guint k = layers; k-- > 0 && error == NULL;) {
            g_autofree char *layer = layer_name(disk, k);
            g_autofree char *backing = k + 1 < layers ? layer_name(disk, k + 1) : NULL;
            char *volume = NULL;
            /* A failed job's volume is vdiskd's to remove; only a made one
             * is ours. */
            if (import_disk(ctl, pool, disk, k, layer, backing, &volume, &error)) {
                g_ptr_array_add(volumes, volume);
                g_ptr_array_add(names, g_steal_pointer(&layer));
            } else {
                g_free(volume);
            }
        }
    }
    if (error == NULL && !define_domain(ctl, plan, &error))
        g_prefix_error(&error, "the domain was not defined: ");
    if (error != NULL) {
        delete_volumes(ctl, pool_name, volumes, names);
        return ctl_fail(error);
    }
    g_autofree char *kept = volumes->len > plan->disks->len
                                ? g_strdup_printf(" (%u volumes, the snapshots kept)", volumes->len)
                                : g_strdup("");
    ctl_say(ctl, "Imported VM '%s': %u disk%s into pool %s%s; defined domain '%s'.", name,
            plan->disks->len, plan->disks->len == 1 ? "" : "s", pool_name, kept, name);
    if (ctl->start) {
        const char *start[] = { "start", name, NULL };
        if (!virsh(ctl, start, NULL, &error)) {
            g_prefix_error(&error, "domain '%s' is defined but did not start: ", name);
            return ctl_fail(error);
        }
        ctl_say(ctl, "Started domain '%s'.", name);
    }
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_import_vm = {
    .name = "import-vm",
    .operands = "VM.vbox|VMFOLDER|VM.vmx|VM.ovf|VM.ova POOL",
    .summary = "import a VirtualBox or VMware VM into a pool and define it in libvirt",
    .options = CTL_OPT_PROGRESS | CTL_OPT_IMPORT_VM | CTL_OPT_NOTIFY,
    .help = "  --dry-run              print the plan (each disk's chain of files, sizes and\n"
            "                         volume) and the libvirt domain XML; do nothing\n"
            "  --virtio               put disks and network cards on virtio instead of the\n"
            "                         buses and models the VM had (the guest needs its\n"
            "                         drivers)\n"
            "  --domain-type TYPE     kvm (the default) or qemu (emulation, no KVM needed)\n"
            "  --start                start the domain once it is defined\n"
            "  --connect URI          the libvirt connection to define it on (virsh -c);\n"
            "                         by default virsh's own\n"
            "  --keep-snapshots       keep each disk's snapshots as a chain of qcow2\n"
            "                         volumes (NAME.qcow2 on NAME-2.qcow2 on NAME-1.qcow2,\n"
            "                         each holding only what its snapshot changed)\n"
            "                         instead of one flattened volume\n" CTL_HELP_PROGRESS
                CTL_HELP_NOTIFY,
    .notes = "Each disk of the VM's current state becomes one qcow2 volume of POOL, read\n"
             "through its chain of differencing images (a VirtualBox snapshot's\n"
             "Snapshots/{uuid}.vdi on its base, a VMware delta on its parent, each\n"
             "vmdk with its extents). vdiskctl opens every file with your rights and\n"
             "hands the descriptors to vdiskd, which opens none by name; an .ova is\n"
             "handed over whole, and vdiskd reads each disk inside it. The domain\n"
             "(memory, vCPUs, firmware, disk buses, network cards with their MAC\n"
             "addresses) is defined with virsh on your own\n"
             "libvirt connection, its disks the new volumes. A domain of the VM's name\n"
             "must not exist; if a disk or the definition fails, the volumes made are\n"
             "deleted (or named, where you may not delete) and nothing is defined.\n"
             "With --keep-snapshots each file of a disk's chain becomes a volume, the\n"
             "base first, each newer one a qcow2 overlay of the one before (its backing\n"
             "file named beside it, in the pool's folder); the domain's disk is the\n"
             "newest.\n",
    .examples = "  vdiskctl import-vm --dry-run ~/VirtualBox\\ VMs/Debian default\n"
                "  vdiskctl import-vm ~/VirtualBox\\ VMs/Debian default --connect qemu:///system "
                "--start\n"
                "  vdiskctl import-vm ~/vmware/Web/Web.vmx default --virtio\n"
                "  vdiskctl import-vm ~/Downloads/appliance.ova default\n"
                "  vdiskctl import-vm --keep-snapshots ~/VirtualBox\\ VMs/Debian default\n",
    .min_operands = 2,
    .max_operands = 2,
    .run = run_import_vm,
};
