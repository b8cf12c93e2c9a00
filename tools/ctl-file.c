/* vdiskctl: the commands on the caller's own files (inspect, convert), and
 * the output files of export and convert.
 *
 * vdiskd gets descriptors that vdiskctl opened with the user's rights, never
 * a path: a user reaches through vdiskd only the files they could open
 * themselves, and needs no privilege for it.
 */
#include "ctl.h"
#include "vdisk.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <unistd.h>

gint ctl_output_open(GUnixFDList *fds, const char *path, CtlOutput *out, GError **error)
{
    out->path = g_strdup(path);
    if (g_file_test(path, G_FILE_TEST_EXISTS)) /* not ours to hide or remove */
        return ctl_fds_append_path(fds, path, O_RDWR, error);
    g_autofree char *dir = g_path_get_dirname(path);
    g_autofree char *base = g_path_get_basename(path);
    g_autofree char *hidden = g_strdup_printf(".%.200s.partial-%d", base, (int)getpid());
    out->partial = g_build_filename(dir, hidden, NULL);
    /* Read and write: image writers read back their own metadata. */
    int fd = g_open(out->partial, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "cannot create %s: %s", path,
                    g_strerror(err));
        g_clear_pointer(&out->partial, g_free);
        return -1;
    }
    gint index = g_unix_fd_list_append(fds, fd, error);
    close(fd);
    if (index < 0)
        ctl_output_discard(out);
    return index;
}

void ctl_output_discard(CtlOutput *out)
{
    if (out->partial != NULL && g_unlink(out->partial) != 0 && errno != ENOENT)
        ctl_error("could not remove the incomplete %s: %s", out->partial, g_strerror(errno));
    g_clear_pointer(&out->partial, g_free);
}

gboolean ctl_output_finish(CtlOutput *out, GError **error)
{
    if (out->partial == NULL)
        return TRUE;
    /* Never over a file that took the name meanwhile. */
    if (vd_rename_noreplace(AT_FDCWD, out->partial, AT_FDCWD, out->path) != 0) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "cannot name %s: %s", out->path,
                    g_strerror(err));
        ctl_output_discard(out);
        return FALSE;
    }
    g_clear_pointer(&out->partial, g_free);
    return vd_sync_parent_dir(out->path, error);
}

void ctl_output_clear(CtlOutput *out)
{
    g_clear_pointer(&out->path, g_free);
    g_clear_pointer(&out->partial, g_free);
}

/* ----- vdiskctl inspect ----- */

static void print_optional_string(GVariant *info, const char *key, const char *label)
{
    const char *value = ctl_prop_string(info, key);

    if (*value)
        ctl_print_field(label, value);
}

static void print_optional_flag(GVariant *info, const char *key, const char *label)
{
    gboolean value = FALSE;

    if (g_variant_lookup(info, key, "b", &value) && value)
        ctl_print_field(label, "yes");
}

/* qemu-img info's layout, so the two read alike. */
static void print_file_info(const char *path, GVariant *info)
{
    g_autoptr(GVariant) snapshots =
        g_variant_lookup_value(info, "snapshots", G_VARIANT_TYPE("a(ssttt)"));
    guint64 cluster_size = ctl_prop_uint64(info, "cluster-size");

    ctl_print_field("image:", path);
    ctl_print_field("file format:", ctl_prop_string(info, "format"));
    ctl_print_size_field("virtual size:", ctl_prop_uint64(info, "virtual-size"));
    ctl_print_size_field("disk size:", ctl_prop_uint64(info, "actual-size"));
    if (cluster_size != 0) {
        g_autofree char *text = g_strdup_printf("%" G_GUINT64_FORMAT, cluster_size);
        ctl_print_field("cluster_size:", text);
    }
    print_optional_string(info, "backing-file", "backing file:");
    print_optional_string(info, "backing-format", "backing fmt:");
    print_optional_flag(info, "encrypted", "encrypted:");
    print_optional_flag(info, "dirty", "dirty:");
    if (snapshots != NULL && g_variant_n_children(snapshots) > 0) {
        printf("Snapshot list:\n");
        ctl_print_snapshots(snapshots);
    }
}

/* InspectFile's keys are qemu-img's JSON names already; its snapshots
 * become objects. */
static void print_file_info_json(GVariant *info)
{
    JsonWriter *w = json_writer_new();
    GVariantIter iter;
    const char *key;
    GVariant *value;

    json_begin_object(w);
    g_variant_iter_init(&iter, info);
    while (g_variant_iter_loop(&iter, "{&sv}", &key, &value)) {
        json_key(w, key);
        if (g_str_equal(key, "snapshots") &&
            g_variant_is_of_type(value, G_VARIANT_TYPE("a(ssttt)")))
            ctl_json_snapshots(w, value);
        else
            json_variant(w, value);
    }
    json_end_object(w);
    ctl_json_print(w);
}

static int run_inspect(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autoptr(VddDbusManager) manager = NULL;
    g_autoptr(GVariant) info = NULL;
    GVariantDict options;
    gint fd = ctl_fds_append_path(fds, operands[0], O_RDONLY, &error);

    if (fd < 0 || (manager = ctl_manager_proxy(ctl, &error)) == NULL)
        return ctl_fail(error);
    g_variant_dict_init(&options, NULL);
    if (ctl->format != NULL)
        g_variant_dict_insert_value(&options, "format", g_variant_new_string(ctl->format));
    if (!ctl_called(vdd_dbus_manager_call_inspect_file_sync(
                        manager, g_variant_new_handle(fd), g_variant_dict_end(&options),
                        ctl->call_flags, ctl_timeout(ctl), fds, &info, NULL, NULL, &error),
                    &error)) {
        ctl_error_name_file(error, "image", operands[0]);
        return ctl_fail(error);
    }
    if (ctl->json)
        print_file_info_json(info);
    else
        print_file_info(operands[0], info);
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_inspect = {
    .name = "inspect",
    .operands = "FILE",
    .summary = "show the format and sizes of an image file of yours",
    .notes = "FILE is opened with your rights; no privilege is needed.\n",
    .options = CTL_OPT_FORMAT | CTL_OPT_JSON,
    .help = "  -f FMT                 read FILE as FMT instead of probing\n",
    .examples = "  vdiskctl inspect ~/Downloads/appliance.vmdk\n"
                "  vdiskctl inspect disk.vdi --json\n",
    .min_operands = 1,
    .max_operands = 1,
    .run = run_inspect,
};

/* ----- vdiskctl convert ----- */

static int run_convert(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
    g_autoptr(GVariant) options = ctl_call_options(ctl, &error);
    g_autofree char *format = NULL;
    g_auto(CtlOutput) output = { 0 };
    gint source, target;

    if (options == NULL || (source = ctl_fds_append_path(fds, operands[0], O_RDONLY, &error)) < 0 ||
        (target = ctl_output_open(fds, operands[1], &output, &error)) < 0)
        return ctl_fail(error);
    /* qemu-img convert writes raw unless told otherwise. */
    format = ctl_pick_format(ctl, operands[1], "raw", &error);
    if (format == NULL) {
        ctl_output_discard(&output);
        return ctl_fail(error);
    }
    g_autoptr(CtlJobWatch) watch = ctl_job_watch_new(ctl);
    g_autoptr(VddDbusManager) manager = ctl_manager_proxy(ctl, &error);
    g_autofree char *job = NULL;
    gboolean called =
        manager != NULL && vdd_dbus_manager_call_convert_file_sync(
                               manager, g_variant_new_handle(source), g_variant_new_handle(target),
                               format, ctl_job_options(ctl, options), ctl->call_flags,
                               ctl_timeout(ctl), fds, &job, NULL, NULL, &error);
    if (!ctl_job_follow(watch, called, job, "Converting", &error)) {
        ctl_error_name_file(error, "source", operands[0]);
        ctl_error_name_file(error, "target", operands[1]);
        ctl_output_discard(&output);
        return ctl_fail(error);
    }
    if (!ctl_output_finish(&output, &error))
        return ctl_fail(error);
    ctl_say(ctl, "Converted %s to %s (%s).", operands[0], operands[1], format);
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_convert = {
    .name = "convert",
    .operands = "SOURCE TARGET",
    .summary = "convert an image file of yours into another format",
    .options = CTL_OPT_FORMAT | CTL_OPT_OUT_FORMAT | CTL_OPT_CREATE | CTL_OPT_PROGRESS,
    .help = "  -f FMT                 format of SOURCE (probed by default)\n"
            "  -O FMT                 format of TARGET; by default its extension when it\n"
            "                         is a format (.img is raw); raw for a name without\n"
            "                         one; an extension that is no format is an "
            "error\n" CTL_HELP_CREATE_OPTIONS CTL_HELP_PROGRESS,
    .notes = "Both files are opened with your rights; no privilege is needed.\n",
    .examples = "  vdiskctl convert disk.vdi disk.qcow2\n"
                "  vdiskctl convert -O vmdk -o subformat=streamOptimized disk.qcow2 disk.vmdk\n",
    .min_operands = 2,
    .max_operands = 2,
    .run = run_convert,
};
