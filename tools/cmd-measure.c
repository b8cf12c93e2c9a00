/* vdisk measure: how large would a new image be? qemu-img measure's
 * numbers, words and JSON keys, for a copy of an image or an empty image
 * of a given size. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json-writer.h"

enum {
    OPT_SIZE = CLI_OPT_FIRST_PRIVATE,
};

typedef struct {
    const char *target_format; /* -O */
    CliCreateOptions *create;  /* -o */
    const char *snapshot;      /* -l */
    const char *size_text;     /* --size */
    guint64 size;
} MeasureOptions;

static gboolean measure_option(int opt, const char *arg, gpointer data, GError **error)
{
    MeasureOptions *opts = data;

    switch (opt) {
    case 'O':
        opts->target_format = arg;
        return TRUE;
    case 'o':
        if (!cli_check_option_list(arg, error))
            return FALSE;
        cli_create_options_add(opts->create, arg);
        return TRUE;
    case 'l':
        opts->snapshot = arg;
        return cli_check_snapshot_param(arg, error);
    case 'U':
        cli_force_share();
        return TRUE;
    case OPT_SIZE:
        opts->size_text = arg;
        if (!vd_parse_size(arg, &opts->size, NULL) || opts->size > G_MAXINT64) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "Invalid image size specified '%s': use a byte count or the k, M, G, T, "
                        "P or E suffixes, up to 8E",
                        arg);
            return FALSE;
        }
        return TRUE;
    default:
        return cli_secrets_option(opt, arg, error);
    }
}

static void print_measure(const VdMeasure *m, CliOutput output)
{
    if (output == CLI_OUTPUT_JSON) {
        g_autoptr(JsonWriter) w = json_writer_new();

        json_begin_object(w);
        if (m->has_bitmaps)
            json_member_uint(w, "bitmaps", m->bitmaps);
        json_member_uint(w, "required", m->required);
        json_member_uint(w, "fully-allocated", m->fully_allocated);
        json_end_object(w);
        printf("%s\n", json_writer_get(w));
        return;
    }
    printf("required size: %" G_GUINT64_FORMAT "\n", m->required);
    printf("fully allocated size: %" G_GUINT64_FORMAT "\n", m->fully_allocated);
    if (m->has_bitmaps)
        printf("bitmaps size: %" G_GUINT64_FORMAT "\n", m->bitmaps);
}

/* qemu-img looks up the secret of a LUKS target even to measure it. */
static gboolean check_key_secret(const char *format, VdOptions *opts, GError **error)
{
    gboolean luks = g_str_equal(format, "luks");
    const char *key = luks ? "key-secret" : "encrypt.key-secret";
    const char *id = vd_options_get(opts, key);
    gsize len;
    if (!luks && g_strcmp0(vd_options_get(opts, "encrypt.format"), "luks") != 0)
        return TRUE;
    if (id == NULL || vd_secrets_lookup(cli_secrets(), id, &len) != NULL)
        return TRUE;
    g_set_error(error, VD_ERROR, VD_ERROR_NOT_FOUND,
                "%s names the secret '%s', which was not given (--object secret,id=%s,file=PATH)",
                key, id, id);
    return FALSE;
}

static int run_measure(const CliCommand *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "output", required_argument, NULL, CLI_OPT_OUTPUT },
        { "size", required_argument, NULL, OPT_SIZE },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    CliCommon common = { 0 };
    g_auto(CliCreateOptions) create = { 0 };
    MeasureOptions opts = { .target_format = "raw", .create = &create };
    g_autoptr(GError) error = NULL;
    g_autoptr(VdOptions) create_options = NULL;
    g_autoptr(VdImage) source = NULL;
    VdMeasure m;
    int first =
        cli_parse_options(cmd, argc, argv, "f:O:o:l:U", longopts, &common, measure_option, &opts);
    int operands;

    if (first < 0)
        return CLI_EXIT_FAILURE;
    operands = argc - first;
    if (operands > 1) {
        cli_error("At most one filename argument is allowed.");
        return CLI_EXIT_FAILURE;
    }
    /* In qemu-img's order. */
    if (operands == 0 && (common.format != NULL || opts.snapshot != NULL || cli_image_opts())) {
        cli_error("--image-opts, -f, and -l require a filename argument.");
        return CLI_EXIT_FAILURE;
    }
    if (opts.size_text != NULL && operands > 0) {
        cli_error("--size N cannot be used together with a filename.");
        return CLI_EXIT_FAILURE;
    }
    if (opts.size_text == NULL && operands == 0) {
        cli_error("Either --size N or one filename must be specified.");
        return CLI_EXIT_FAILURE;
    }
    if (!cli_check_format(opts.target_format) ||
        (common.format != NULL && !cli_check_format(common.format)))
        return CLI_EXIT_FAILURE;
    if (create.help)
        return cli_print_create_options(opts.target_format, NULL);
    create_options = cli_create_options_parse(&create, &error);
    if (create_options == NULL || !check_key_secret(opts.target_format, create_options, &error))
        return cli_fail(error);
    if (operands == 1) {
        source = cli_open_at_snapshot(argv[first], common.format, opts.snapshot, CLI_PROBE_QUIET,
                                      &error);
        if (source == NULL)
            return cli_fail(error);
    }
    if (!vd_measure(source, opts.size, opts.target_format, create_options, &m, &error))
        return cli_fail(error);
    print_measure(&m, common.output);
    return EXIT_SUCCESS;
}

const CliCommand cli_cmd_measure = {
    .name = "measure",
    .summary = "how large a new image (or a copy of one) would be",
    .usage = "  vdisk measure [--output=human|json] [-O FMT] [-o OPTIONS] --size SIZE\n"
             "  vdisk measure [--output=human|json] [-O FMT] [-o OPTIONS] [-f FMT]\n"
             "                [-l SNAPSHOT] [-U] FILE",
    .help = "  --size SIZE            measure an empty image of SIZE bytes (suffixes k, M,\n"
            "                         G, T, P, E)\n"
            "  FILE                   measure a copy of FILE, as convert would make it\n"
            "  -f FMT                 FILE's format (probed when not given)\n"
            "  -l snapshot.name=NAME  measure a copy of an internal snapshot of FILE;\n"
            "  -l snapshot.id=ID, -l NAME   the same\n"
            "  -O FMT                 the new image's format: raw (the default), qcow2 or\n"
            "                         luks; like qemu-img 7.2, other formats are not measured\n"
            "  -o OPTIONS             its create options (cluster_size, preallocation,\n"
            "                         refcount_bits, extended_l2, compat, backing_file,\n"
            "                         encrypt.format=luks with encrypt.key-secret...);\n"
            "                         -o help lists them\n"
            "  --output=human|json    human: 'required size: N' and 'fully allocated\n"
            "                         size: N' (and 'bitmaps size: N' for a qcow2 copy of\n"
            "                         a qcow2); json: the keys required, fully-allocated\n"
            "                         and bitmaps, as qemu-img\n"
            "  -U, --force-share      read FILE even while another process writes it\n"
            "  --object secret,id=ID,file=PATH, --image-opts   as for convert\n"
            "\n"
            "'required' is the file size the image needs (metadata and the clusters\n"
            "that hold data, in bytes), 'fully allocated' its size with every cluster\n"
            "allocated.\n",
    .examples = "  vdisk measure --size 100G -O qcow2\n"
                "  vdisk measure --size 100G -O qcow2 --object secret,id=s0,file=pw \\\n"
                "      -o encrypt.format=luks,encrypt.key-secret=s0\n"
                "  vdisk measure --output=json -O qcow2 -o cluster_size=2M disk.raw\n",
    .run = run_measure,
};
