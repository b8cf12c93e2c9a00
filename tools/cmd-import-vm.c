/* vdisk import-vm: a whole VirtualBox VM, offline. Reads the VM's .vbox,
 * resolves the chain of files behind each disk's current state, and copies
 * each chain, flattened, into one qcow2 in the output folder, with the
 * libvirt domain XML beside them. --dry-run prints the plan and the XML
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
};

/* Where a dry run without --output-dir says the disks would go: libvirt's
 * default pool. */
#define DEFAULT_POOL_DIR "/var/lib/libvirt/images"

typedef struct {
    gboolean dry_run;
    gboolean virtio;
    gboolean progress;
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

typedef struct {
    const VmPlanDisk *disk;
} ImportJob;

static gboolean import_job(gpointer data, gpointer progress, GCancellable *cancellable,
                           GError **error)
{
    ImportJob *job = data;
    g_autoptr(VdImage) source = vm_chain_open(job->disk->chain, error);
    if (source == NULL)
        return FALSE;
    VdConvertOptions engine;
    vd_convert_options_init(&engine);
    engine.target_format = "qcow2";
    engine.progress = progress_report;
    engine.progress_data = progress;
    engine.cancellable = cancellable;
    return vd_convert(source, job->disk->target_path, &engine, error);
}

/* Nothing is overwritten: every file the import would make must be new. */
static gboolean check_targets(const VmPlan *plan, const char *xml_path, GError **error)
{
    for (guint i = 0; i <= plan->disks->len; i++) {
        const char *path =
            i < plan->disks->len ? ((VmPlanDisk *)plan->disks->pdata[i])->target_path : xml_path;
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
    if (!check_targets(plan, xml_path, &error))
        return cli_fail(error);

    guint done = 0;
    for (; done < plan->disks->len; done++) {
        const VmPlanDisk *disk = plan->disks->pdata[done];
        ImportJob job = { .disk = disk };
        g_autofree char *label = g_strdup_printf("Importing %s", disk->target_name);
        cli_note(quiet, "%s: %u file%s -> %s", disk->controller->name, disk->chain->len,
                 disk->chain->len == 1 ? "" : "s", disk->target_path);
        if (!cli_run_with_progress(label, opts->progress, quiet, import_job, &job, &error))
            break;
    }
    g_autofree char *xml = vm_domain_xml(plan);
    if (error == NULL && !g_file_set_contents(xml_path, xml, -1, &error))
        g_prefix_error(&error, "%s: ", xml_path);
    if (error != NULL) {
        /* Disks of a VM that was not imported whole are of no use alone. */
        for (guint i = 0; i < done && i < plan->disks->len; i++)
            g_unlink(((VmPlanDisk *)plan->disks->pdata[i])->target_path);
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

    g_autofree char *settings = vm_vbox_find(argv[first], &error);
    if (settings == NULL)
        return cli_fail(error);
    VmMachine *machine = vm_vbox_load(settings, &error);
    if (machine == NULL)
        return cli_fail(error);
    g_autoptr(VmPlan) plan =
        vm_plan_new(machine, opts.output_dir != NULL ? opts.output_dir : DEFAULT_POOL_DIR,
                    opts.virtio, opts.domain_type, &error);
    if (plan == NULL)
        return cli_fail(error);

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
    .summary = "turn a VirtualBox VM into qcow2 disks and a libvirt domain",
    .usage = "  vdisk import-vm [--dry-run] [--output-dir DIR] [--virtio] [--domain-type TYPE]\n"
             "                  [-p] [-q] VM.vbox|VMFOLDER",
    .help = "  --dry-run              print the plan (each disk's chain of files, sizes and\n"
            "                         target) and the libvirt domain XML; write nothing\n"
            "  --output-dir DIR       where the qcow2 disks and the domain XML go (made if\n"
            "                         missing); --pool-dir DIR is the same. A dry run\n"
            "                         without it plans for " DEFAULT_POOL_DIR "\n"
            "  --virtio               put disks and network cards on virtio instead of the\n"
            "                         buses and models the VM had (the guest needs its\n"
            "                         drivers)\n"
            "  --domain-type TYPE     kvm (the default) or qemu (emulation, no KVM needed)\n"
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
            "removed.\n",
    .examples = "  vdisk import-vm --dry-run ~/VirtualBox\\ VMs/Debian\n"
                "  vdisk import-vm --output-dir ~/kvm ~/VirtualBox\\ VMs/Debian/Debian.vbox\n"
                "  virsh define ~/kvm/Debian.xml\n",
    .run = run_import_vm,
};
