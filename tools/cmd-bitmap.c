/* vdisk bitmap: add, remove, clear, enable, disable and merge the
 * persistent dirty bitmaps of a qcow2 image, as qemu-img bitmap does:
 * the operations run in the order given, and the first that fails stops
 * the rest. */
#include <stdlib.h>

#include "cli.h"

enum {
    OPT_ADD = CLI_OPT_FIRST_PRIVATE,
    OPT_REMOVE,
    OPT_CLEAR,
    OPT_ENABLE,
    OPT_DISABLE,
    OPT_MERGE,
};

typedef struct {
    VdBitmapOp op;
    const char *source; /* --merge SOURCE */
} BitmapAction;

typedef struct {
    GArray *actions; /* of BitmapAction */
    guint64 granularity;
    const char *source_file;   /* -b */
    const char *source_format; /* -F */
} BitmapOptions;

static gboolean bitmap_option(int opt, const char *arg, gpointer data, GError **error)
{
    BitmapOptions *opts = data;
    BitmapAction a = { 0 };

    switch (opt) {
    case OPT_ADD:
    case OPT_REMOVE:
    case OPT_CLEAR:
    case OPT_ENABLE:
    case OPT_DISABLE:
    case OPT_MERGE:
        a.op = (VdBitmapOp)(VD_BITMAP_ADD + (opt - OPT_ADD));
        a.source = opt == OPT_MERGE ? arg : NULL;
        g_array_append_val(opts->actions, a);
        return TRUE;
    case 'g':
        if (!vd_parse_size(arg, &opts->granularity, NULL) || opts->granularity > G_MAXUINT32) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "Invalid granularity specified: '%s'", arg);
            return FALSE;
        }
        return TRUE; /* 0: the default, as in qemu-img */
    case 'b':
        opts->source_file = arg;
        return TRUE;
    case 'F':
        opts->source_format = arg;
        return TRUE;
    default:
        return cli_secrets_option(opt, arg, error);
    }
}

static const char *op_name(VdBitmapOp op)
{
    static const char *const names[] = { "add", "remove", "clear", "enable", "disable", "merge" };
    return names[op];
}

static int run_bitmap(const CliCommand *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "add", no_argument, NULL, OPT_ADD },
        { "remove", no_argument, NULL, OPT_REMOVE },
        { "clear", no_argument, NULL, OPT_CLEAR },
        { "enable", no_argument, NULL, OPT_ENABLE },
        { "disable", no_argument, NULL, OPT_DISABLE },
        { "merge", required_argument, NULL, OPT_MERGE },
        { "granularity", required_argument, NULL, 'g' },
        { "source-file", required_argument, NULL, 'b' },
        { "source-format", required_argument, NULL, 'F' },
        { NULL, 0, NULL, 0 },
    };
    CliCommon common = { 0 };
    g_autoptr(GArray) actions = g_array_new(FALSE, FALSE, sizeof(BitmapAction));
    BitmapOptions opts = { .actions = actions };
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = NULL;
    g_autoptr(VdImage) source = NULL;
    const char *name;
    int first =
        cli_parse_options(cmd, argc, argv, "f:g:b:F:", longopts, &common, bitmap_option, &opts);

    if (first < 0)
        return CLI_EXIT_FAILURE;
    if (actions->len == 0) {
        cli_error("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge");
        return CLI_EXIT_FAILURE;
    }
    if (argc - first != 2) {
        cli_error("Expecting filename and bitmap name: vdisk bitmap OPERATION... FILE BITMAP");
        return CLI_EXIT_FAILURE;
    }
    if (opts.source_file != NULL) {
        gboolean merge = FALSE;

        for (guint i = 0; i < actions->len; i++)
            merge |= g_array_index(actions, BitmapAction, i).op == VD_BITMAP_MERGE;
        if (!merge) {
            cli_error("Merge bitmap source file only supported with --merge");
            return CLI_EXIT_FAILURE;
        }
    } else if (opts.source_format != NULL) {
        cli_error("-F only supported with -b");
        return CLI_EXIT_FAILURE;
    }
    name = argv[first + 1];
    img = cli_open_image(argv[first], common.format, VD_OPEN_READ_WRITE, CLI_PROBE_WARN, &error);
    if (img == NULL)
        return cli_fail(error);
    if (opts.source_file != NULL) {
        source = cli_open_image(opts.source_file, opts.source_format, VD_OPEN_NO_BACKING,
                                CLI_PROBE_QUIET, &error);
        if (source == NULL)
            return cli_fail(error);
    }
    for (guint i = 0; i < actions->len; i++) {
        const BitmapAction *a = &g_array_index(actions, BitmapAction, i);

        if (!vd_image_bitmap(img, a->op, name, (guint32)opts.granularity, FALSE, source, a->source,
                             &error)) {
            g_prefix_error(&error, "Operation %s on bitmap %s failed: ", op_name(a->op), name);
            return cli_fail(error);
        }
    }
    if (!vd_image_flush(img, &error))
        return cli_fail(error);
    return EXIT_SUCCESS;
}

const CliCommand cli_cmd_bitmap = {
    .name = "bitmap",
    .summary = "add, remove, clear, enable, disable or merge a qcow2 image's dirty bitmaps",
    .usage = "  vdisk bitmap (--add | --remove | --clear | --enable | --disable |\n"
             "               --merge SOURCE)... [-g GRANULARITY] [-b SOURCE_FILE [-F SOURCE_FMT]]\n"
             "               [-f FMT] FILE BITMAP",
    .help = "  --add                  add BITMAP, empty; enabled (it records every write\n"
            "                         from now on) unless --disable follows\n"
            "  --remove               remove BITMAP and free its clusters\n"
            "  --clear                clear every bit of BITMAP\n"
            "  --enable, --disable    start or stop recording writes in BITMAP\n"
            "  --merge SOURCE         set in BITMAP every bit set in the bitmap SOURCE (of\n"
            "                         FILE, or of SOURCE_FILE with -b)\n"
            "  -g GRANULARITY         bytes each bit of a new bitmap stands for: a power of\n"
            "                         two, at least 512 (default: the cluster size,\n"
            "                         within 4k and 64k)\n"
            "  -b SOURCE_FILE         the image holding the bitmap to merge from\n"
            "  -F SOURCE_FMT          its format (probed when not given)\n"
            "  -f FMT                 FILE's format (probed when not given)\n"
            "\n"
            "The operations run in the order given; the first that fails stops the\n"
            "rest. Bitmaps are a feature of qcow2 v3 (compat=1.1) images.\n",
    .examples = "  vdisk bitmap --add -g 64k vm.qcow2 backup-0\n"
                "  vdisk bitmap --merge backup-1 vm.qcow2 backup-0\n",
    .run = run_bitmap,
};
