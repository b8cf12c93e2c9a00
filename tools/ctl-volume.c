/* vdiskctl: the commands on one volume (info, create, import, export,
 * clone, resize, snapshot, overlay, delete). */
#include "ctl.h"

#include <fcntl.h>
#include <stdlib.h>

#include "vdisk.h"
#include "vm.h"

/* ----- vdiskctl info ----- */

static void print_volume(const CtlVolume *vol)
{
    GVariant *props = vol->volume->props;
    const char *backing = ctl_prop_string(props, "BackingFile");
    const char *backing_format = ctl_prop_string(props, "BackingFormat");
    const char *problem = ctl_prop_string(props, "Error");
    g_autofree char *label = g_strdup_printf("%s/%s", vol->pool_name, vol->name);
    g_autoptr(GVariant) snapshots =
        g_variant_lookup_value(props, "Snapshots", G_VARIANT_TYPE("a(ssttt)"));
    gboolean encrypted = FALSE, busy = FALSE;

    g_variant_lookup(props, "Encrypted", "b", &encrypted);
    g_variant_lookup(props, "Busy", "b", &busy);
    ctl_print_field("volume:", label);
    ctl_print_field("file:", ctl_prop_string(props, "Path"));
    ctl_print_field("format:", *ctl_prop_string(props, "Format") ? ctl_prop_string(props, "Format")
                                                                 : "unknown");
    ctl_print_size_field("virtual size:", ctl_prop_uint64(props, "VirtualSize"));
    ctl_print_size_field("disk size:", ctl_prop_uint64(props, "AllocatedSize"));
    if (*backing) {
        g_autofree char *text = *backing_format
                                    ? g_strdup_printf("%s (format: %s)", backing, backing_format)
                                    : g_strdup(backing);
        ctl_print_field("backing file:", text);
    }
    ctl_print_field("encrypted:", encrypted ? "yes" : "no");
    if (*problem)
        ctl_print_field("error:", problem);
    if (busy)
        ctl_print_field("busy:", "yes, a job is writing it ('vdiskctl jobs')");
    if (snapshots != NULL && g_variant_n_children(snapshots) > 0) {
        printf("Snapshot list:\n");
        ctl_print_snapshots(snapshots);
    }
}

/* One volume as JSON: the object each entry of 'volumes --json' is. */
static void print_volume_json(const CtlVolume *vol)
{
    JsonWriter *w = json_writer_new();

    ctl_json_volume(w, vol->pool_name, vol->volume->props);
    ctl_json_print(w);
}

static int run_info(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(CtlVolume) vol = ctl_find_volume(ctl, operands[0], &error);

    if (vol == NULL)
        return ctl_fail(error);
    if (ctl->json)
        print_volume_json(vol);
    else
        print_volume(vol);
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_info = {
    .name = "info",
    .operands = "POOL/VOLUME",
    .summary = "show a volume's format, sizes, backing file and snapshots",
    .options = CTL_OPT_JSON,
    .examples = "  vdiskctl info default/win10.qcow2\n"
                "  vdiskctl info default/win10.qcow2 --json\n",
    .min_operands = 1,
    .max_operands = 1,
    .run = run_info,
};

/* ----- vdiskctl create ----- */

static int run_create(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *pool_name = NULL;
    g_autofree char *name = NULL;
    g_autofree char *format = NULL;
    g_autofree char *volume = NULL;
    g_autofree char *human = NULL;
    g_autoptr(CtlObject) pool = NULL;
    g_autoptr(GVariant) options = NULL;
    guint64 size;

    if (!ctl_split_volume_arg(operands[0], &pool_name, &name, &error) ||
        !vd_parse_size(operands[1], &size, &error) ||
        (options = ctl_call_options(ctl, &error)) == NULL)
        return ctl_fail(error);
    pool = ctl_find_pool(ctl, pool_name, &error);
    if (pool == NULL)
        return ctl_fail(error);
    /* A logical or rbd pool's volumes are raw. */
    const char *type = ctl_prop_string(pool->props, "Type");
    format = ctl_pick_format(
        ctl, name, g_str_equal(type, "logical") || g_str_equal(type, "rbd") ? "raw" : "qcow2",
        &error);
    if (format == NULL)
        return ctl_fail(error);
    g_autoptr(CtlJobWatch) watch = ctl_job_watch_new(ctl);
    g_autoptr(VddDbusPool) proxy = ctl_pool_proxy(ctl, pool->path, &error);
    g_autofree char *job = NULL;
    gboolean called =
        proxy != NULL && vdd_dbus_pool_call_create_volume_sync(
                             proxy, name, format, size, ctl_job_options(ctl, options),
                             ctl->call_flags, ctl_timeout(ctl), &volume, &job, NULL, &error);
    if (!ctl_job_follow(watch, called, job, "Creating", &error))
        return ctl_fail(error);
    human = ctl_format_size(size);
    ctl_say(ctl, "Created %s (%s, %s).", operands[0], format, human);
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_create = {
    .name = "create",
    .operands = "POOL/VOLUME SIZE",
    .summary = "create an empty volume",
    .options = CTL_OPT_FORMAT | CTL_OPT_CREATE | CTL_OPT_PROGRESS | CTL_OPT_DETACH | CTL_OPT_OBJECT,
    .help = CTL_HELP_FORMAT
    "                         otherwise qcow2\n" CTL_HELP_CREATE_OPTIONS CTL_HELP_NEW_KEY
        CTL_HELP_OBJECT CTL_HELP_PROGRESS CTL_HELP_DETACH,
    .notes = "SIZE takes the suffixes K, M, G, T (powers of 1024).\n",
    .examples = "  vdiskctl create default/web.qcow2 20G\n"
                "  vdiskctl create default/secret.qcow2 20G --object secret,id=k,file=pw \\\n"
                "      -o encrypt.format=luks,encrypt.key-secret=k\n"
                "  vdiskctl create default/db.qcow2 100G -o cluster_size=2M,lazy_refcounts=on\n"
                "  vdiskctl create default/top.qcow2 20G -o backing_file=base.qcow2\n"
                "  vdiskctl create default/share.vmdk 8G -o subformat=monolithicFlat\n",
    .min_operands = 2,
    .max_operands = 2,
    .run = run_create,
};

/* ----- vdiskctl import ----- */

/* options with key set to value (floating), or as they are when value
 * is NULL; FALSE when local, the error making value, is set. */
static gboolean add_option(GVariant **options, const char *key, GVariant *value, GError *local,
                           GError **error)
{
    if (value == NULL) {
        if (local == NULL)
            return TRUE;
        g_propagate_error(error, local);
        return FALSE;
    }
    GVariantDict d;
    g_variant_dict_init(&d, *options);
    g_variant_dict_insert_value(&d, key, value);
    g_variant_unref(*options);
    *options = g_variant_ref_sink(g_variant_dict_end(&d));
    return TRUE;
}

/* options with "chain" added when chain has parents, and "related-files"
 * when its images name other files (a split vmdk's extents). */
static gboolean add_chain_option(GVariant **options, GPtrArray *chain, GUnixFDList *fds,
                                 GError **error)
{
    GError *local = NULL;
    GVariant *value = ctl_chain_option(chain, fds, &local);
    if (!add_option(options, "chain", value, local, error))
        return FALSE;
    value = ctl_related_files_option(chain, fds, &local);
    return add_option(options, "related-files", value, local, error);
}

/* An OVA appliance is read in place by vdiskd: options with its only
 * disk as "appliance-disk"; its chain is empty. */
static GPtrArray *appliance_chain(GVariant **options, const char *path, GError **error)
{
    GError *local = NULL;
    gint index = ctl_appliance_disk(path, NULL, &local);
    if (!add_option(options, "appliance-disk", index >= 0 ? g_variant_new_int32(index) : NULL,
                    local, error))
        return NULL;
    return g_ptr_array_new_with_free_func((GDestroyNotify)vm_chain_link_free);
}

/* Refuse, before the copy starts, an import that the pool's file system
 * cannot hold: what vdisk measure says a qcow2 copy of path needs,
 * against the pool's Available. Only qcow2 is checked: a raw volume is
 * written sparse, which the measure does not count, and other formats
 * are not measured. Whatever cannot be opened or measured here is left to
 * the copy to report. */
static gboolean check_import_fits(Ctl *ctl, const CtlObject *pool, const char *path,
                                  const char *format, const char *label, GError **error)
{
    g_autoptr(VdOptions) opts = vd_options_new();
    g_autoptr(VdImage) img = NULL;
    guint64 available;
    VdMeasure m;

    if (!g_str_equal(format, "qcow2") ||
        !g_variant_lookup(pool->props, "Available", "t", &available))
        return TRUE;
    for (guint i = 0; ctl->create_options != NULL && i < ctl->create_options->len; i++) {
        if (!vd_options_parse(opts, ctl->create_options->pdata[i], NULL))
            return TRUE;
    }
    img = vd_image_open(path,
                        ctl->source_format != NULL && !g_str_equal(ctl->source_format, "ova")
                            ? ctl->source_format
                            : NULL,
                        0, NULL);
    if (img == NULL || !vd_measure(img, 0, format, opts, &m, NULL) || m.required <= available)
        return TRUE;
    g_autofree char *need = ctl_format_size(m.required);
    g_autofree char *have = ctl_format_size(available);
    g_set_error(error, VD_ERROR, VD_ERROR_NO_SPACE,
                "%s would need up to %s as %s (vdisk measure), but the file system of pool "
                "'%s' has %s free: nothing was copied",
                label, need, format, ctl_prop_string(pool->props, "Name"), have);
    return FALSE;
}

static int run_import(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *pool_name = NULL;
    g_autofree char *name = NULL;
    g_autofree char *format = NULL;
    g_autofree char *volume = NULL;
    g_autoptr(CtlObject) pool = NULL;
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autoptr(GVariant) options = NULL;
    g_autoptr(GPtrArray) chain = NULL;
    gint fd;

    if (ctl_is_nbd_uri(operands[0]))
        return ctl_import_nbd(ctl, operands[0], operands[1]);
    if (!ctl_split_volume_arg(operands[1], &pool_name, &name, &error) ||
        (options = ctl_call_options(ctl, &error)) == NULL)
        return ctl_fail(error);
    /* Opened here, as the user: vdiskd reads only what the user can,
     * the parents of a differencing image too (ctl-chain.c). */
    gboolean appliance = (ctl->source_format == NULL || g_str_equal(ctl->source_format, "ova")) &&
                         vd_is_ova(operands[0]);
    fd = ctl_fds_append_path(fds, operands[0], O_RDONLY, &error);
    if (fd < 0 ||
        (chain = appliance ? appliance_chain(&options, operands[0], &error)
                           : ctl_chain_of_file(operands[0], ctl->source_format, &error)) == NULL ||
        !add_chain_option(&options, chain, fds, &error) ||
        (pool = ctl_find_pool(ctl, pool_name, &error)) == NULL)
        return ctl_fail(error);
    ctl_chain_warn_not_current(operands[0], chain);
    /* A logical pool's volumes (LVs) and an rbd pool's (RBD images) are
     * raw. */
    const char *type = ctl_prop_string(pool->props, "Type");
    gboolean raw_only = g_str_equal(type, "logical") || g_str_equal(type, "rbd");
    format = ctl_pick_format(ctl, name, raw_only ? "raw" : "qcow2", &error);
    if (format == NULL || !check_import_fits(ctl, pool, operands[0], format, operands[1], &error))
        return ctl_fail(error);
    g_autoptr(CtlJobWatch) watch = ctl_job_watch_new(ctl);
    g_autoptr(VddDbusPool) proxy = ctl_pool_proxy(ctl, pool->path, &error);
    g_autofree char *job = NULL;
    gboolean called = proxy != NULL &&
                      vdd_dbus_pool_call_import_volume_sync(proxy, g_variant_new_handle(fd), name,
                                                            format, ctl_job_options(ctl, options),
                                                            ctl->call_flags, ctl_timeout(ctl), fds,
                                                            &volume, &job, NULL, NULL, &error);
    if (!ctl_job_follow(watch, called, job, "Importing", &error)) {
        ctl_error_name_file(error, "source", operands[0]);
        return ctl_fail(error);
    }
    ctl_say(ctl, "Imported %s as %s (%s).", operands[0], operands[1], format);
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_import = {
    .name = "import",
    .operands = "FILE|NBD-URI POOL/VOLUME",
    .summary = "copy an image file of yours, or an NBD export, into a pool",
    .options = CTL_OPT_FORMAT | CTL_OPT_CREATE | CTL_OPT_PROGRESS | CTL_OPT_DETACH |
               CTL_OPT_SOURCE | CTL_OPT_OBJECT | CTL_OPT_NOTIFY,
    .help = CTL_HELP_FORMAT
    "                         otherwise qcow2\n"
    "  --source-format FMT    format of FILE (probed by default)\n" CTL_HELP_CREATE_OPTIONS
        CTL_HELP_NEW_KEY CTL_HELP_OBJECT CTL_HELP_PROGRESS CTL_HELP_DETACH CTL_HELP_NOTIFY,
    .notes = "FILE is opened with your rights and handed to vdiskd, which never opens\n"
             "it by name: you need no access to the pool's directory. So are the\n"
             "parents of a differencing image and the extents of a split vmdk\n"
             "(NAME-s001.vmdk ...). An OVA appliance's only disk is read inside it.\n"
             "An NBD export (nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH)\n"
             "is connected to by vdiskctl, with your network access, and the socket\n"
             "handed to vdiskd, which has no network and dials no address itself;\n"
             "it copies the disk the server exports, holes left out.\n",
    .examples =
        "  vdiskctl import ~/VirtualBox\\ VMs/xp/xp.vdi default/xp.qcow2\n"
        "  vdiskctl import disk.vmdk default/disk -f qcow2 -o compression_type=zstd\n"
        "  vdiskctl import nbd://backup.example.org/web default/web.qcow2\n"
        "  vdiskctl import 'nbd+unix:///?socket=/run/user/1000/disk.sock' default/d.qcow2\n",
    .min_operands = 2,
    .max_operands = 2,
    .run = run_import,
};

/* ----- vdiskctl export ----- */

static int run_export(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(CtlVolume) vol = ctl_find_volume(ctl, operands[0], &error);
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autofree char *format = NULL;
    g_autoptr(GVariant) options = NULL;
    g_auto(CtlOutput) output = { 0 };
    gint fd;

    if (vol == NULL || (options = ctl_call_options(ctl, &error)) == NULL)
        return ctl_fail(error);
    format =
        ctl_pick_format(ctl, operands[1], ctl_prop_string(vol->volume->props, "Format"), &error);
    if (format == NULL)
        return ctl_fail(error);
    fd = ctl_output_open(fds, operands[1], &output, &error);
    if (fd < 0)
        return ctl_fail(error);
    g_autoptr(CtlJobWatch) watch = ctl_job_watch_new(ctl);
    g_autoptr(VddDbusVolume) proxy = ctl_volume_proxy(ctl, vol->volume->path, &error);
    g_autofree char *job = NULL;
    gboolean called =
        proxy != NULL && vdd_dbus_volume_call_export_sync(
                             proxy, g_variant_new_handle(fd), format, ctl_job_options(ctl, options),
                             ctl->call_flags, ctl_timeout(ctl), fds, &job, NULL, NULL, &error);
    if (!ctl_job_follow(watch, called, job, "Exporting", &error)) {
        ctl_error_name_file(error, "target", operands[1]);
        ctl_output_discard(&output);
        return ctl_fail(error);
    }
    if (!ctl_output_finish(&output, &error))
        return ctl_fail(error);
    ctl_say(ctl, "Exported %s to %s (%s).", operands[0], operands[1], format);
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_export = {
    .name = "export",
    .operands = "POOL/VOLUME FILE",
    .summary = "copy a volume into a file of yours, in any format",
    .options = CTL_OPT_FORMAT | CTL_OPT_CREATE | CTL_OPT_PROGRESS | CTL_OPT_OBJECT | CTL_OPT_KEY,
    .help = CTL_HELP_FORMAT
    "                         otherwise the volume's format\n" CTL_HELP_CREATE_OPTIONS CTL_HELP_KEY
        CTL_HELP_OBJECT CTL_HELP_PROGRESS,
    .notes = "FILE is created (or overwritten) with your rights and handed to vdiskd;\n"
             "after a failure or Ctrl-C a FILE that did not exist before is removed.\n",
    .examples = "  vdiskctl export default/xp.qcow2 xp.vdi\n"
                "  vdiskctl export default/web.qcow2 web.vmdk -o subformat=streamOptimized\n",
    .min_operands = 2,
    .max_operands = 2,
    .run = run_export,
};

/* ----- vdiskctl clone ----- */

static int run_clone(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(CtlVolume) vol = ctl_find_volume(ctl, operands[0], &error);
    g_autofree char *name = NULL;
    g_autofree char *format = NULL;
    g_autofree char *volume = NULL;
    g_autoptr(GVariant) options = NULL;

    if (vol == NULL || (name = ctl_new_name_in_pool(vol, operands[1], &error)) == NULL ||
        (options = ctl_call_options(ctl, &error)) == NULL)
        return ctl_fail(error);
    format = ctl_pick_format(ctl, name, ctl_prop_string(vol->volume->props, "Format"), &error);
    if (format == NULL)
        return ctl_fail(error);
    g_autoptr(CtlJobWatch) watch = ctl_job_watch_new(ctl);
    g_autoptr(VddDbusVolume) proxy = ctl_volume_proxy(ctl, vol->volume->path, &error);
    g_autofree char *job = NULL;
    gboolean called =
        proxy != NULL && vdd_dbus_volume_call_clone_sync(
                             proxy, name, format, ctl_job_options(ctl, options), ctl->call_flags,
                             ctl_timeout(ctl), &volume, &job, NULL, &error);
    if (!ctl_job_follow(watch, called, job, "Cloning", &error))
        return ctl_fail(error);
    ctl_say(ctl, "Cloned %s to %s/%s (%s).", operands[0], vol->pool_name, name, format);
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_clone = {
    .name = "clone",
    .operands = "POOL/VOLUME NEWNAME",
    .summary = "copy a volume within its pool, in any format",
    .options = CTL_OPT_FORMAT | CTL_OPT_CREATE | CTL_OPT_PROGRESS | CTL_OPT_DETACH |
               CTL_OPT_OBJECT | CTL_OPT_KEY,
    .help = CTL_HELP_FORMAT
    "                         otherwise the volume's format\n" CTL_HELP_CREATE_OPTIONS
        CTL_HELP_NEW_KEY CTL_HELP_KEY CTL_HELP_OBJECT CTL_HELP_PROGRESS CTL_HELP_DETACH,
    .examples = "  vdiskctl clone default/base.qcow2 test.qcow2\n"
                "  vdiskctl clone default/base.qcow2 base.vmdk\n"
                "  vdiskctl clone default/secret.qcow2 plain.raw --object secret,id=k,file=pw \\\n"
                "      --key-secret k\n",
    .min_operands = 2,
    .max_operands = 2,
    .run = run_clone,
};

/* ----- vdiskctl copy ----- */

static int run_copy(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(CtlVolume) source = ctl_find_volume(ctl, operands[0], &error);
    g_autoptr(CtlVolume) target = NULL;
    g_autoptr(GVariant) options = NULL;

    if (source == NULL || (target = ctl_find_volume(ctl, operands[1], &error)) == NULL ||
        (options = ctl_call_options(ctl, &error)) == NULL)
        return ctl_fail(error);
    g_autoptr(CtlJobWatch) watch = ctl_job_watch_new(ctl);
    g_autoptr(VddDbusVolume) proxy = ctl_volume_proxy(ctl, target->volume->path, &error);
    g_autofree char *job = NULL;
    gboolean called =
        proxy != NULL && vdd_dbus_volume_call_copy_from_sync(
                             proxy, source->volume->path, ctl_job_options(ctl, options),
                             ctl->call_flags, ctl_timeout(ctl), &job, NULL, &error);
    if (!ctl_job_follow(watch, called, job, "Copying", &error))
        return ctl_fail(error);
    ctl_say(ctl, "Copied %s over %s.", operands[0], operands[1]);
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_copy = {
    .name = "copy",
    .operands = "POOL/SOURCE POOL/TARGET",
    .summary = "write a volume's content over another, existing one",
    .options =
        CTL_OPT_PROGRESS | CTL_OPT_DETACH | CTL_OPT_OBJECT | CTL_OPT_KEY | CTL_OPT_TARGET_KEY,
    .help = "  --key-secret ID        the --object secret that opens an encrypted SOURCE\n"
            "  --target-key-secret ID the one that opens an encrypted TARGET\n" CTL_HELP_OBJECT
                CTL_HELP_PROGRESS CTL_HELP_DETACH,
    .notes = "TARGET keeps its format, options and encryption, and must be at least as\n"
             "large as SOURCE (as with qemu-img convert -n); what it held is lost.\n",
    .examples = "  vdiskctl copy default/golden.qcow2 default/vm1.qcow2\n"
                "  vdiskctl copy default/plain.raw default/secret.qcow2 \\\n"
                "      --object secret,id=k,file=pw --target-key-secret k\n",
    .min_operands = 2,
    .max_operands = 2,
    .run = run_copy,
};

/* ----- vdiskctl resize ----- */

/* SIZE, or +SIZE / -SIZE relative to current. */
static gboolean parse_new_size(const char *text, guint64 current, guint64 *out, GError **error)
{
    gboolean relative = text[0] == '+' || text[0] == '-';
    guint64 amount;

    if (!vd_parse_size(relative ? text + 1 : text, &amount, error))
        return FALSE;
    if (!relative)
        *out = amount;
    else if (text[0] == '+' && amount <= G_MAXUINT64 - current)
        *out = current + amount;
    else if (text[0] == '-' && amount <= current)
        *out = current - amount;
    else {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "'%s' takes the size out of range", text);
        return FALSE;
    }
    return TRUE;
}

static int run_resize(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(CtlVolume) vol = ctl_find_volume(ctl, operands[0], &error);
    g_autofree char *human = NULL;
    guint64 current, size;

    if (vol == NULL)
        return ctl_fail(error);
    current = ctl_prop_uint64(vol->volume->props, "VirtualSize");
    if (!parse_new_size(operands[1], current, &size, &error))
        return ctl_fail(error);
    if (size < current && !ctl->shrink) {
        ctl_error("shrinking %s throws away the data past the new end; "
                  "add --shrink if that is what you want",
                  operands[0]);
        return CTL_EXIT_FAILURE;
    }
    g_autoptr(GVariant) options = ctl_call_options(ctl, &error);
    if (options == NULL)
        return ctl_fail(error);
    g_autoptr(CtlJobWatch) watch = ctl_job_watch_new(ctl);
    g_autoptr(VddDbusVolume) proxy = ctl_volume_proxy(ctl, vol->volume->path, &error);
    g_autofree char *job = NULL;
    gboolean called = proxy != NULL && vdd_dbus_volume_call_resize_sync(
                                           proxy, size, ctl_job_options(ctl, options),
                                           ctl->call_flags, ctl_timeout(ctl), &job, NULL, &error);
    if (!ctl_job_follow(watch, called, job, "Resizing", &error))
        return ctl_fail(error);
    human = ctl_format_size(size);
    ctl_say(ctl, "Resized %s to %s.", operands[0], human);
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_resize = {
    .name = "resize",
    .operands = "POOL/VOLUME [+|-]SIZE",
    .summary = "change a volume's virtual size",
    .options = CTL_OPT_SHRINK | CTL_OPT_PROGRESS | CTL_OPT_DETACH | CTL_OPT_OBJECT | CTL_OPT_KEY,
    .help = "  --shrink               allow making the volume smaller (data past the\n"
            "                         new end is lost)\n" CTL_HELP_KEY CTL_HELP_OBJECT
                CTL_HELP_PROGRESS CTL_HELP_DETACH,
    .notes = "+SIZE and -SIZE are relative to the current size.\n",
    .examples = "  vdiskctl resize default/web.qcow2 40G\n"
                "  vdiskctl resize default/web.qcow2 +10G\n"
                "  vdiskctl resize default/web.qcow2 -5G --shrink\n",
    .min_operands = 2,
    .max_operands = 2,
    .run = run_resize,
};

/* ----- vdiskctl snapshot ----- */

static const struct {
    const char *action;
    gboolean (*call)(VddDbusVolume *proxy, const char *name, GVariant *options,
                     GDBusCallFlags flags, gint timeout, GCancellable *cancellable, GError **error);
    const char *done; /* what ctl_say reports */
} snapshot_actions[] = {
    { "create", vdd_dbus_volume_call_create_snapshot_sync, "Created" },
    { "revert", vdd_dbus_volume_call_revert_snapshot_sync, "Reverted to" },
    { "delete", vdd_dbus_volume_call_delete_snapshot_sync, "Deleted" },
};

static int list_snapshots(Ctl *ctl, const char *arg)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(CtlVolume) vol = ctl_find_volume(ctl, arg, &error);
    g_autoptr(GVariant) snapshots = NULL;

    if (vol == NULL)
        return ctl_fail(error);
    snapshots = g_variant_lookup_value(vol->volume->props, "Snapshots", G_VARIANT_TYPE("a(ssttt)"));
    if (ctl->json) {
        JsonWriter *w = json_writer_new();
        ctl_json_snapshots(w, snapshots); /* [] without */
        ctl_json_print(w);
    } else if (snapshots == NULL || g_variant_n_children(snapshots) == 0)
        ctl_say(ctl, "%s has no snapshots.", arg);
    else
        ctl_print_snapshots(snapshots);
    return EXIT_SUCCESS;
}

static int run_snapshot(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(CtlVolume) vol = NULL;
    g_autoptr(VddDbusVolume) proxy = NULL;
    const char *action = operands[0];

    if (g_str_equal(action, "list") && n_operands == 2)
        return list_snapshots(ctl, operands[1]);
    for (gsize i = 0; i < G_N_ELEMENTS(snapshot_actions); i++) {
        if (!g_str_equal(action, snapshot_actions[i].action))
            continue;
        if (n_operands != 3) {
            ctl_error("snapshot %s needs POOL/VOLUME and the snapshot's NAME", action);
            return CTL_EXIT_FAILURE;
        }
        vol = ctl_find_volume(ctl, operands[1], &error);
        if (vol != NULL)
            proxy = ctl_volume_proxy(ctl, vol->volume->path, &error);
        if (proxy == NULL ||
            !ctl_called(snapshot_actions[i].call(proxy, operands[2], ctl_no_options(),
                                                 ctl->call_flags, ctl_timeout(ctl), NULL, &error),
                        &error))
            return ctl_fail(error);
        ctl_say(ctl, "%s snapshot %s of %s.", snapshot_actions[i].done, operands[2], operands[1]);
        return EXIT_SUCCESS;
    }
    ctl_error("snapshot: '%s' is not create, revert, delete or list (with list, no NAME)", action);
    return CTL_EXIT_FAILURE;
}

const CtlCommand ctl_cmd_snapshot = {
    .name = "snapshot",
    .operands = "create|revert|delete POOL/VOLUME NAME\n"
                "  vdiskctl snapshot [OPTIONS] list POOL/VOLUME",
    .summary = "create, revert to, delete or list a volume's internal snapshots",
    .options = CTL_OPT_JSON,
    .notes = "NAME may also be a snapshot's ID. --json applies to list.\n",
    .examples = "  vdiskctl snapshot create default/web.qcow2 before-upgrade\n"
                "  vdiskctl snapshot list default/web.qcow2\n"
                "  vdiskctl snapshot revert default/web.qcow2 before-upgrade\n"
                "  vdiskctl snapshot delete default/web.qcow2 before-upgrade\n",
    .min_operands = 2,
    .max_operands = 3,
    .run = run_snapshot,
};

/* ----- vdiskctl overlay ----- */

static int run_overlay(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(CtlVolume) vol = ctl_find_volume(ctl, operands[0], &error);
    g_autofree char *name = NULL;
    g_autoptr(VddDbusVolume) proxy = NULL;
    g_autofree char *overlay = NULL;

    if (vol == NULL || (name = ctl_new_name_in_pool(vol, operands[1], &error)) == NULL ||
        (proxy = ctl_volume_proxy(ctl, vol->volume->path, &error)) == NULL ||
        !ctl_called(vdd_dbus_volume_call_create_overlay_sync(proxy, name, ctl_no_options(),
                                                             ctl->call_flags, ctl_timeout(ctl),
                                                             &overlay, NULL, &error),
                    &error))
        return ctl_fail(error);
    ctl_say(ctl, "Created %s/%s on top of %s.", vol->pool_name, name, operands[0]);
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_overlay = {
    .name = "overlay",
    .operands = "POOL/VOLUME NEWNAME",
    .summary = "create a qcow2 volume backed by this one (external snapshot)",
    .notes = "Writes then go to NEWNAME; POOL/VOLUME stays as it is.\n",
    .examples = "  vdiskctl overlay default/base.qcow2 base-top.qcow2\n",
    .min_operands = 2,
    .max_operands = 2,
    .run = run_overlay,
};

/* ----- vdiskctl delete ----- */

static int run_delete(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(CtlVolume) vol = ctl_find_volume(ctl, operands[0], &error);
    g_autoptr(VddDbusVolume) proxy = NULL;

    if (vol == NULL || (proxy = ctl_volume_proxy(ctl, vol->volume->path, &error)) == NULL ||
        !ctl_called(vdd_dbus_volume_call_delete_sync(proxy, ctl_no_options(), ctl->call_flags,
                                                     ctl_timeout(ctl), NULL, &error),
                    &error))
        return ctl_fail(error);
    ctl_say(ctl, "Deleted %s.", operands[0]);
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_delete = {
    .name = "delete",
    .operands = "POOL/VOLUME",
    .summary = "delete a volume's file (administrators)",
    .examples = "  vdiskctl delete default/test.qcow2\n",
    .min_operands = 1,
    .max_operands = 1,
    .run = run_delete,
};
