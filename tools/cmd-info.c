/* vdisk info: describe an image (or its whole backing chain), as qemu-img
 * info does, in its human layout or its JSON keys. */
#include <stdlib.h>

#include "cli.h"
#include "json-writer.h"
#include "voice.h"

enum {
    OPT_BACKING_CHAIN = CLI_OPT_FIRST_PRIVATE,
};

typedef struct {
    gboolean backing_chain;
} InfoOptions;

/* ----- JSON ----- */

static void json_snapshot(JsonWriter *w, const VdSnapshotInfo *sn)
{
    json_begin_object(w);
    if (sn->icount != G_MAXUINT64)
        json_member_uint(w, "icount", sn->icount);
    json_member_uint(w, "vm-clock-nsec", sn->vm_clock_nsec % G_GUINT64_CONSTANT(1000000000));
    json_member_string(w, "name", sn->name);
    json_member_uint(w, "date-sec", sn->date_sec);
    json_member_uint(w, "date-nsec", sn->date_nsec);
    json_member_uint(w, "vm-clock-sec", sn->vm_clock_nsec / G_GUINT64_CONSTANT(1000000000));
    json_member_string(w, "id", sn->id);
    json_member_uint(w, "vm-state-size", sn->vm_state_size);
    json_end_object(w);
}

/* Members in the order qemu-img 7.2 prints them, so a diff against its
 * output stays readable. */
static void json_info(JsonWriter *w, const VdImageInfo *info)
{
    json_begin_object(w);
    if (info->snapshots != NULL && info->snapshots->len > 0) {
        json_key(w, "snapshots");
        json_begin_array(w);
        for (guint i = 0; i < info->snapshots->len; i++)
            json_snapshot(w, g_ptr_array_index(info->snapshots, i));
        json_end_array(w);
    }
    if (info->backing_filename != NULL && info->backing_format != NULL)
        json_member_string(w, "backing-filename-format", info->backing_format);
    json_member_uint(w, "virtual-size", info->virtual_size);
    json_member_string(w, "filename", info->filename);
    if (info->cluster_size != 0)
        json_member_uint(w, "cluster-size", info->cluster_size);
    json_member_string(w, "format", info->format);
    if (info->actual_size >= 0)
        json_member_int(w, "actual-size", info->actual_size);
    if (info->format_specific != NULL) {
        json_key(w, "format-specific");
        json_begin_object(w);
        json_member_string(w, "type", info->format);
        json_key(w, "data");
        json_variant(w, info->format_specific);
        json_end_object(w);
    }
    if (info->encrypted)
        json_member_bool(w, "encrypted", TRUE);
    if (info->backing_filename != NULL) {
        if (info->full_backing_filename != NULL)
            json_member_string(w, "full-backing-filename", info->full_backing_filename);
        json_member_string(w, "backing-filename", info->backing_filename);
    }
    /* qemu asks the raw view of an NBD export for no dirty flag. */
    if (!((g_str_equal(info->format, "raw") || g_str_equal(info->format, "nbd")) &&
          vd_nbd_is_name(info->filename)))
        json_member_bool(w, "dirty-flag", info->dirty);
    json_end_object(w);
}

/* ----- human ----- */

static void dump_value(GVariant *value, int indent);

static gboolean is_composite(GVariant *value)
{
    g_autoptr(GVariant) inner = NULL;

    if (g_variant_is_of_type(value, G_VARIANT_TYPE_VARIANT)) {
        inner = g_variant_get_variant(value);
        value = inner;
    }
    return g_variant_is_container(value) && !g_variant_is_of_type(value, G_VARIANT_TYPE_VARIANT);
}

/* One "key: value" line, or "key:" and the nested block, as qemu's
 * dump_qdict prints format-specific data: dashes in keys become spaces. */
static void dump_member(const char *key, GVariant *value, int indent)
{
    g_autofree char *label = g_strdelimit(g_strdup(key), "-", ' ');
    gboolean composite = is_composite(value);

    printf("%*s%s:%c", indent * 4, "", label, composite ? '\n' : ' ');
    dump_value(value, indent + 1);
    if (!composite)
        putchar('\n');
}

static void dump_dictionary(GVariant *dict, int indent)
{
    gsize n = g_variant_n_children(dict);

    for (gsize i = 0; i < n; i++) {
        g_autoptr(GVariant) entry = g_variant_get_child_value(dict, i);
        g_autoptr(GVariant) key = g_variant_get_child_value(entry, 0);
        g_autoptr(GVariant) value = g_variant_get_child_value(entry, 1);
        g_autofree char *key_text = g_variant_is_of_type(key, G_VARIANT_TYPE_STRING)
                                        ? g_variant_dup_string(key, NULL)
                                        : g_variant_print(key, FALSE);
        dump_member(key_text, value, indent);
    }
}

static void dump_list(GVariant *list, int indent)
{
    gsize n = g_variant_n_children(list);

    for (gsize i = 0; i < n; i++) {
        g_autoptr(GVariant) child = g_variant_get_child_value(list, i);
        gboolean composite = is_composite(child);

        printf("%*s[%zu]:%c", indent * 4, "", i, composite ? '\n' : ' ');
        dump_value(child, indent + 1);
        if (!composite)
            putchar('\n');
    }
}

static void dump_value(GVariant *value, int indent)
{
    if (g_variant_is_of_type(value, G_VARIANT_TYPE_VARIANT)) {
        g_autoptr(GVariant) inner = g_variant_get_variant(value);
        dump_value(inner, indent);
    } else if (g_variant_is_of_type(value, G_VARIANT_TYPE_BOOLEAN)) {
        printf("%s", g_variant_get_boolean(value) ? "true" : "false");
    } else if (g_variant_is_of_type(value, G_VARIANT_TYPE_STRING)) {
        printf("%s", g_variant_get_string(value, NULL));
    } else if (g_variant_is_of_type(value, G_VARIANT_TYPE_DICTIONARY)) {
        dump_dictionary(value, indent);
    } else if (g_variant_is_container(value)) {
        dump_list(value, indent);
    } else {
        /* Numbers: reuse the JSON writer's number formatting. */
        g_autoptr(JsonWriter) w = json_writer_new();
        json_variant(w, value);
        printf("%s", json_writer_get(w));
    }
}

static void human_backing(const VdImageInfo *info)
{
    printf("backing file: %s", info->backing_filename);
    if (info->full_backing_filename == NULL)
        printf(" (cannot determine actual path)");
    else if (!g_str_equal(info->backing_filename, info->full_backing_filename))
        printf(" (actual path: %s)", info->full_backing_filename);
    putchar('\n');
    if (info->backing_format != NULL)
        printf("backing file format: %s\n", info->backing_format);
}

static void human_info(const VdImageInfo *info)
{
    g_autofree char *vsize = cli_format_size(info->virtual_size);
    g_autofree char *dsize =
        info->actual_size >= 0 ? cli_format_size(info->actual_size) : g_strdup("unavailable");

    printf("image: %s\n"
           "file format: %s\n"
           "virtual size: %s (%" G_GUINT64_FORMAT " bytes)\n"
           "disk size: %s\n",
           info->filename, info->format, vsize, info->virtual_size, dsize);
    if (info->encrypted)
        printf("encrypted: yes\n");
    if (info->cluster_size != 0)
        printf("cluster_size: %u\n", info->cluster_size);
    if (info->dirty)
        printf("cleanly shut down: no\n");
    if (info->backing_filename != NULL)
        human_backing(info);
    if (info->snapshots != NULL && info->snapshots->len > 0)
        cli_print_snapshot_table(info->snapshots);
    if (info->format_specific != NULL) {
        printf("Format specific information:\n");
        dump_value(info->format_specific, 1);
    }
}

/* ----- the command ----- */

static gboolean info_option(int opt, const char *arg, gpointer data, GError **error)
{
    InfoOptions *opts = data;

    switch (opt) {
    case OPT_BACKING_CHAIN:
        opts->backing_chain = TRUE;
        return TRUE;
    case 'U':
        cli_force_share();
        return TRUE;
    default:
        return FALSE;
    }
}

/* An OVA appliance: say which disks it holds before describing the one
 * that was opened (--disk N picks another). */
static gboolean print_appliance_disks(const char *path, GError **error)
{
    if (!vd_is_ova(path))
        return TRUE;
    g_autoptr(GPtrArray) disks = vd_ova_list_disks(path, error);
    if (disks == NULL)
        return FALSE;
    printf("appliance: %s\n", path);
    for (guint i = 0; i < disks->len; i++)
        printf("disk %u: %s\n", i + 1, (const char *)disks->pdata[i]);
    putchar('\n');
    return TRUE;
}

/* The images to describe: the top one, and with a chain every backing
 * layer below it. Each is borrowed from top. */
static GPtrArray *collect_chain(VdImage *top, gboolean backing_chain)
{
    GPtrArray *chain = g_ptr_array_new();

    for (VdImage *img = top; img != NULL; img = vd_image_backing(img)) {
        g_ptr_array_add(chain, img);
        if (!backing_chain)
            break;
    }
    return chain;
}

/* Do the --image-opts text's options say driver=nbd? */
static gboolean names_nbd_driver(const char *text)
{
    g_autoptr(VdOptions) opts = vd_options_new();
    return vd_options_parse(opts, text, NULL) &&
           g_strcmp0(vd_options_get(opts, "driver"), "nbd") == 0;
}

static int run_info(const CliCommand *cmd, int argc, char **argv)
{
    cli_set_inspect_only(); /* encrypted images are described without their key */
    static const struct option longopts[] = {
        { "output", required_argument, NULL, CLI_OPT_OUTPUT },
        { "backing-chain", no_argument, NULL, OPT_BACKING_CHAIN },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    CliCommon common = { 0 };
    InfoOptions opts = { 0 };
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = NULL;
    g_autoptr(GPtrArray) chain = NULL;
    g_autoptr(GPtrArray) infos = g_ptr_array_new_with_free_func((GDestroyNotify)vd_image_info_free);
    int first = cli_parse_options(cmd, argc, argv, "f:U", longopts, &common, info_option, &opts);

    if (first < 0 || !cli_check_operands(cmd, argc - first, 1, 1))
        return CLI_EXIT_FAILURE;

    /* info lists an appliance's disks and describes the first one (or
     * --disk N); a convert must be told which. */
    cli_appliance_disk_default(0);
    /* Without --backing-chain the backing file is not needed, and a missing
     * one must not stop us from describing the overlay. */
    img = cli_open_image(argv[first], common.format, opts.backing_chain ? 0 : VD_OPEN_NO_BACKING,
                         CLI_PROBE_QUIET, &error);
    if (img == NULL)
        return cli_fail(error);

    if (common.output == CLI_OUTPUT_HUMAN && !print_appliance_disks(argv[first], &error))
        return cli_fail(error);
    chain = collect_chain(img, opts.backing_chain);
    for (guint i = 0; i < chain->len; i++) {
        VdImageInfo *info = vd_image_get_info(g_ptr_array_index(chain, i), &error);
        if (info == NULL)
            return cli_fail(error);
        /* qemu-img's vdi driver shows nothing format-specific: under its
         * name the VirtualBox UUIDs vdisk shows stay out. */
        if (voice_is_qemu() && g_strcmp0(info->format, "vdi") == 0)
            g_clear_pointer(&info->format_specific, g_variant_unref);
        /* --image-opts driver=nbd: the export with no format above it,
         * which qemu-img calls format "nbd". */
        if (i == 0 && cli_image_opts() && g_str_equal(info->format, "raw") &&
            vd_nbd_is_name(info->filename) && names_nbd_driver(argv[first]))
            info->format = "nbd";
        g_ptr_array_add(infos, info);
    }

    if (common.output == CLI_OUTPUT_JSON) {
        g_autoptr(JsonWriter) w = json_writer_new();
        if (opts.backing_chain)
            json_begin_array(w);
        for (guint i = 0; i < infos->len; i++)
            json_info(w, g_ptr_array_index(infos, i));
        if (opts.backing_chain)
            json_end_array(w);
        printf("%s\n", json_writer_get(w));
    } else {
        for (guint i = 0; i < infos->len; i++) {
            if (i > 0)
                putchar('\n');
            human_info(g_ptr_array_index(infos, i));
        }
    }
    return EXIT_SUCCESS;
}

const CliCommand cli_cmd_info = {
    .name = "info",
    .summary = "show an image's format, sizes, backing file and snapshots",
    .usage = "  vdisk info [-f FMT] [--output=human|json] [--backing-chain] [-U] FILE",
    .help = "  -f FMT                 image format (probed when not given)\n"
            "  --output=human|json    output style; JSON keys are qemu-img's\n"
            "  --backing-chain        describe every image of the backing chain\n"
            "                         (JSON: an array, top image first)\n"
            "  --disk N               for an OVA appliance: describe its Nth disk\n"
            "  --backing FILE         FILE is the image's parent (a differencing VDI whose\n"
            "                         parent is not beside it, or a moved backing file)\n"
            "  -U, --force-share      read the image even while another process writes it\n"
            "                         (a running VM), as qemu-img -U; it may then look\n"
            "                         inconsistent\n",
    .examples = "  vdisk info disk.qcow2\n"
                "  vdisk info --output=json --backing-chain overlay.qcow2\n",
    .run = run_info,
};
