/* vdisk import-vm: a whole VirtualBox (or VMware) VM, offline. Reads the
 * VM's .vbox (or .vmx), resolves the chain of files behind each disk's
 * current state, and copies each chain, flattened, into one qcow2 in the
 * output folder (or keeps it as qcow2 overlays), with the libvirt domain
 * XML beside them. --dry-run prints the plan and the XML
 * and writes nothing. Defining the domain is vdiskctl's (the user's own
 * libvirt connection); this command only prepares the files.
 */
#include <errno.h>
#include <glib/gstdio.h>
#include <stdlib.h>

#include "cli.h"
#include "progress.h"
#include "vm.h"

enum {
    OPT_DRY_RUN = CLI_OPT_FIRST_PRIVATE,
    OPT_OUTPUT_DIR,
    OPT_VIRTIO,
    OPT_DOMAIN_TYPE,
    OPT_KEEP_SNAPSHOTS,
};

/* Where a dry run without --output-dir says the disks would go: libvirt's
 * default pool. */
#define DEFAULT_POOL_DIR "/var/lib/libvirt/images"

typedef struct {
    gboolean dry_run;
    gboolean virtio;
    gboolean progress;
    gboolean keep_snapshots;
    const char *output_dir;
    const char *domain_type;
} ImportOptions;

static gboolean import_option(int opt, const char *arg, gpointer data, GError **error)
{
    ImportOptions *opts = data;

    switch (opt) {
    case OPT_DRY_RUN:
        opts->dry_run = TRUE;
        return TRUE;
    case OPT_OUTPUT_DIR:
        opts->output_dir = arg;
        return TRUE;
    case OPT_VIRTIO:
        opts->virtio = TRUE;
        return TRUE;
    case OPT_KEEP_SNAPSHOTS:
        opts->keep_snapshots = TRUE;
        return TRUE;
    case OPT_DOMAIN_TYPE:
        if (!g_str_equal(arg, "kvm") && !g_str_equal(arg, "qemu")) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "--domain-type is kvm or qemu, not '%s'", arg);
            return FALSE;
        }
        opts->domain_type = arg;
        return TRUE;
    case 'p':
        opts->progress = TRUE;
        return TRUE;
    }
    return FALSE;
}

/* One qcow2 to make: from link (an index into the disk's chain) down,
 * flattened; with a backing file (the qcow2 of the next link) only what
 * the link itself holds. */
typedef struct {
    const VmPlanDisk *disk;
    guint link;
    const char *target;
    const char *backing; /* NULL: the whole disk */
} ImportJob;

static gboolean import_job(gpointer data, gpointer progress, GCancellable *cancellable,
                           GError **error)
{
    ImportJob *job = data;
    g_autoptr(GPtrArray) chain = g_ptr_array_new();
    for (guint i = job->link; i < job->disk->chain->len; i++)
        g_ptr_array_add(chain, job->disk->chain->pdata[i]);
    g_autoptr(VdImage) source = vm_chain_open(chain, error);
    if (source == NULL)
        return FALSE;
    g_autofree char *backing = job->backing != NULL ? g_path_get_basename(job->backing) : NULL;
    VdConvertOptions engine;
    vd_convert_options_init(&engine);
    engine.target_format = "qcow2";
    engine.backing_file = backing; /* beside the overlay */
    engine.backing_format = backing != NULL ? "qcow2" : NULL;
    engine.progress = progress_report;
    engine.progress_data = progress;
    engine.cancellable = cancellable;
    return vd_convert(source, job->target, &engine, error);
}

/* The files the import makes, in the order it makes them: each disk's
 * base layer first. */
static GPtrArray *planned_files(const VmPlan *plan)
{
    GPtrArray *files = g_ptr_array_new();
    for (guint i = 0; i < plan->disks->len; i++) {
        const VmPlanDisk *d = plan->disks->pdata[i];
        if (d->layer_paths == NULL) {
            g_ptr_array_add(files, d->target_path);
            continue;
        }
        for (guint k = d->layer_paths->len; k-- > 0;)
            g_ptr_array_add(files, d->layer_paths->pdata[k]);
    }
    return files;
}

/* Nothing is overwritten: every file the import would make must be new. */
static gboolean check_targets(GPtrArray *files, const char *xml_path, GError **error)
{
    for (guint i = 0; i <= files->len; i++) {
        const char *path = i < files->len ? files->pdata[i] : xml_path;
        if (g_file_test(path, G_FILE_TEST_EXISTS)) {
            g_set_error(error, VD_ERROR, VD_ERROR_EXISTS,
                        "%s exists already; vdisk import-vm overwrites nothing", path);
            return FALSE;
        }
    }
    return TRUE;
}

static int run_import(const VmPlan *plan, const ImportOptions *opts, gboolean quiet)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *xml_name = g_strdup_printf("%s.xml", plan->file_stem);
    g_autofree char *xml_path = g_build_filename(plan->output_dir, xml_name, NULL);

    if (g_mkdir_with_parents(plan->output_dir, 0755) < 0) {
        cli_error("%s: cannot create the folder: %s", plan->output_dir, g_strerror(errno));
        return CLI_EXIT_FAILURE;
    }
    g_autoptr(GPtrArray) files = planned_files(plan);
    if (!check_targets(files, xml_path, &error))
        return cli_fail(error);

    guint made = 0;
    for (guint i = 0; i < plan->disks->len && error == NULL; i++) {
        const VmPlanDisk *disk = plan->disks->pdata[i];
        cli_note(quiet, "%s: %u file%s -> %s", disk->controller->name, disk->chain->len,
                 disk->chain->len == 1 ? "" : "s", disk->target_path);
        guint layers = disk->layer_paths != NULL ? disk->chain->len : 1;
        for (guint k = layers; k-- > 0 && error == NULL;) {
            ImportJob job = { .disk = disk, .link = k, .target = disk->target_path };
            if (disk->layer_paths != NULL) {
                job.target = disk->layer_paths->pdata[k];
                job.backing = k + 1 < layers ? disk->layer_paths->pdata[k + 1] : NULL;
            }
            g_autofree char *name = g_path_get_basename(job.target);
            g_autofree char *label = g_strdup_printf("Importing %s", name);
            if (cli_run_with_progress(label, opts->progress, quiet, import_job, &job, &error))
                made++;
        }
    }
    g_autofree char *xml = vm_domain_xml(plan);
    if (error == NULL && !g_file_set_contents(xml_path, xml, -1, &error))
        g_prefix_error(&error, "%s: ", xml_path);
    if (error != NULL) {
        /* Disks of a VM that was not imported whole are of no use alone. */
        for (guint i = 0; i < made; i++)
            g_unlink(files->pdata[i]);
        return cli_fail(error);
    }
    if (!quiet)
        printf("Imported VM '%s': %u disk%s in %s\n"
               "Domain XML: %s (define it with: virsh define %s)\n",
               plan->machine->name, plan->disks->len, plan->disks->len == 1 ? "" : "s",
               plan->output_dir, xml_path, xml_path);
    return EXIT_SUCCESS;
}

static int run_import_vm(const CliCommand *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "dry-run", no_argument, NULL, OPT_DRY_RUN },
        { "output-dir", required_argument, NULL, OPT_OUTPUT_DIR },
        { "pool-dir", required_argument, NULL, OPT_OUTPUT_DIR },
        { "virtio", no_argument, NULL, OPT_VIRTIO },
        { "domain-type", required_argument, NULL, OPT_DOMAIN_TYPE },
        { "keep-snapshots", no_argument, NULL, OPT_KEEP_SNAPSHOTS },
        { 0 },
    };
    ImportOptions opts = { 0 };
    CliCommon common = { 0 };
    g_autoptr(GError) error = NULL;

    int first = cli_parse_options(cmd, argc, argv, "qp", longopts, &common, import_option, &opts);
    if (first < 0)
        return CLI_EXIT_FAILURE;
    if (!cli_check_operands(cmd, argc - first, 1, 1))
        return CLI_EXIT_FAILURE;
    if (!opts.dry_run && opts.output_dir == NULL) {
        cli_error("import-vm needs --output-dir DIR (or --dry-run to see the plan)");
        return CLI_EXIT_FAILURE;
    }

    g_autofree char *settings = vm_settings_find(argv[first], &error);
    if (settings == NULL)
        return cli_fail(error);
    VmMachine *machine = vm_settings_load(settings, &error);
    if (machine == NULL)
        return cli_fail(error);
    g_autoptr(VmPlan) plan =
        vm_plan_new(machine, opts.output_dir != NULL ? opts.output_dir : DEFAULT_POOL_DIR,
                    opts.virtio, opts.domain_type, &error);
    if (plan == NULL)
        return cli_fail(error);
    if (opts.keep_snapshots)
        vm_plan_keep_snapshots(plan);

    if (opts.dry_run) {
        g_autofree char *text = vm_plan_describe(plan);
        g_autofree char *xml = vm_domain_xml(plan);
        printf("%s\nDomain XML:\n%s", text, xml);
        return EXIT_SUCCESS;
    }
    return run_import(plan, &opts, common.quiet);
}

const CliCommand cli_cmd_import_vm = {
    .name = "import-vm",
    .summary = "turn a VirtualBox or VMware VM, or an OVA, into qcow2 disks and a libvirt domain",
    .usage = "  vdisk import-vm [--dry-run] [--output-dir DIR] [--virtio] [--domain-type TYPE]\n"
             "                  [--keep-snapshots] [-p] [-q] VM.vbox|VM.vmx|VM.ova|VM.ovf|VMFOLDER",
    .help = "  --dry-run              print the plan (each disk's chain of files, sizes and\n"
            "                         target) and the libvirt domain XML; write nothing\n"
            "  --output-dir DIR       where the qcow2 disks and the domain XML go (made if\n"
            "                         missing); --pool-dir DIR is the same. A dry run\n"
            "                         without it plans for " DEFAULT_POOL_DIR "\n"
            "  --virtio               put disks and network cards on virtio instead of the\n"
            "                         buses and models the VM had (the guest needs its\n"
            "                         drivers)\n"
            "  --domain-type TYPE     kvm (the default) or qemu (emulation, no KVM needed)\n"
            "  --keep-snapshots       keep each disk's snapshots as a chain of qcow2\n"
            "                         overlays (NAME.qcow2 on NAME-2.qcow2 on NAME-1.qcow2)\n"
            "                         instead of one flattened qcow2\n"
            "  -p                     show progress, as vdisk convert -p\n"
            "  -q                     quiet: no progress, no notes\n"
            "\n"
            "Each disk of the VM's current state becomes one qcow2: a disk with snapshots\n"
            "is read through its chain of differencing images (found by UUID through the\n"
            "VM's media registry, in the VM folder and its Snapshots folder, each file's\n"
            "header checked) and flattened. The domain XML has the VM's memory, vCPUs,\n"
            "firmware (OVMF for EFI), disk buses (SATA, IDE, SCSI) and network cards with\n"
            "their MAC addresses on libvirt's default network. Nothing is defined in\n"
            "libvirt and nothing is overwritten; if one disk fails, the disks made are\n"
            "removed. A VMware VM (its .vmx) goes the same way: each disk's vmdk, a\n"
            "snapshot's delta on its base, is read through its chain. So does an OVF\n"
            "appliance: an .ova, its disks read in place, or an .ovf with its disks.\n",
    .examples = "  vdisk import-vm --dry-run ~/VirtualBox\\ VMs/Debian\n"
                "  vdisk import-vm --output-dir ~/kvm ~/VirtualBox\\ VMs/Debian/Debian.vbox\n"
                "  virsh define ~/kvm/Debian.xml\n"
                "  vdisk import-vm --keep-snapshots --output-dir ~/kvm ~/vmware/Web/Web.vmx\n"
                "  vdisk import-vm --output-dir ~/kvm appliance.ova\n",
    .run = run_import_vm,
};
