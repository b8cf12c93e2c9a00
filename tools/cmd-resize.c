/* vdisk resize: change an image's virtual size, to an absolute size or by
 * +SIZE / -SIZE, like qemu-img resize. */
#include <stdlib.h>

#include "cli.h"

enum {
    OPT_SHRINK = CLI_OPT_FIRST_PRIVATE,
    OPT_PREALLOCATION,
};

typedef struct {
    gboolean shrink;
    VdPreallocation prealloc; /* --preallocation */
} ResizeOptions;

static gboolean parse_preallocation(const char *arg, VdPreallocation *out, GError **error)
{
    static const char *const modes[] = {
        [VD_PREALLOC_OFF] = "off",
        [VD_PREALLOC_METADATA] = "metadata",
        [VD_PREALLOC_FALLOC] = "falloc",
        [VD_PREALLOC_FULL] = "full",
    };
    for (guint i = 0; i < G_N_ELEMENTS(modes); i++) {
        if (g_str_equal(arg, modes[i])) {
            *out = (VdPreallocation)i;
            return TRUE;
        }
    }
    g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                "Invalid preallocation mode '%s': use off, metadata, falloc or full", arg);
    return FALSE;
}

static gboolean resize_option(int opt, const char *arg, gpointer data, GError **error)
{
    ResizeOptions *opts = data;

    switch (opt) {
    case OPT_SHRINK:
        opts->shrink = TRUE;
        return TRUE;
    case OPT_PREALLOCATION:
        return parse_preallocation(arg, &opts->prealloc, error);
    case 'U':
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "-U (--force-share) is for commands that only read; resizing writes the image");
        return FALSE;
    default:
        return FALSE;
    }
}

/* "-1G" would look like an option to getopt, so a trailing "-<digit>..."
 * is taken off argv before parsing (qemu-img does the same). */
static const char *take_negative_size(int *argc, char **argv)
{
    const char *last = argv[*argc - 1];

    if (*argc >= 3 && last[0] == '-' && g_ascii_isdigit(last[1])) {
        (*argc)--;
        return last;
    }
    return NULL;
}

/* SIZE, +SIZE (grow by) or -SIZE (shrink by), relative to current. */
static gboolean new_size(const char *text, guint64 current, guint64 *out, GError **error)
{
    gboolean relative = text[0] == '+' || text[0] == '-';
    guint64 amount;

    if (!cli_parse_size("size", relative ? text + 1 : text, &amount, error))
        return FALSE;
    if (!relative) {
        *out = amount;
    } else if (text[0] == '+') {
        if (amount > G_MAXINT64 - current) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "growing by %s would overflow the size", text + 1);
            return FALSE;
        }
        *out = current + amount;
    } else {
        if (amount >= current) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "cannot shrink by %s: the image is only %" G_GUINT64_FORMAT " bytes",
                        text + 1, current);
            return FALSE;
        }
        *out = current - amount;
    }
    return TRUE;
}

static int run_resize(const CliCommand *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "shrink", no_argument, NULL, OPT_SHRINK },
        { "preallocation", required_argument, NULL, OPT_PREALLOCATION },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    CliCommon common = { 0 };
    ResizeOptions opts = { 0 };
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = NULL;
    const char *size_text = take_negative_size(&argc, argv);
    guint64 current, size;
    int first = cli_parse_options(cmd, argc, argv, "f:qU", longopts, &common, resize_option, &opts);

    if (first < 0 || !cli_check_operands(cmd, argc - first, size_text ? 1 : 2, size_text ? 1 : 2))
        return CLI_EXIT_FAILURE;
    if (size_text == NULL)
        size_text = argv[first + 1];

    /* Growing from a size inside a cluster copies the backing file's part
     * of that cluster, so the chain is opened; but a missing backing file
     * must not stop other resizes (the format refuses what needs it). */
    img = cli_open_image(argv[first], common.format, VD_OPEN_READ_WRITE, CLI_PROBE_WARN, &error);
    if (img == NULL) {
        g_autoptr(GError) chain_error = g_steal_pointer(&error);
        img = cli_open_image(argv[first], common.format, VD_OPEN_READ_WRITE | VD_OPEN_NO_BACKING,
                             CLI_PROBE_QUIET, &error);
        if (img == NULL)
            return cli_fail(chain_error);
    }
    current = vd_image_size(img);
    if (!new_size(size_text, current, &size, &error))
        return cli_fail(error);

    /* qemu-img says this before it speaks of --shrink. */
    if (size < current && opts.prealloc != VD_PREALLOC_OFF) {
        cli_error("%s: Preallocation can only be used for growing images", argv[first]);
        return CLI_EXIT_FAILURE;
    }
    if (size < current && !opts.shrink) {
        g_autofree char *from = cli_format_size(current);
        g_autofree char *to = cli_format_size(size);
        cli_error("shrinking '%s' from %s to %s drops everything past the new end; pass "
                  "--shrink if that is what you want",
                  argv[first], from, to);
        return CLI_EXIT_FAILURE;
    }
    if (!vd_image_resize_preallocated(img, size, opts.shrink, opts.prealloc, &error) ||
        !vd_image_flush(img, &error))
        return cli_fail(error);
    if (!common.quiet)
        printf("Image resized.\n");
    return EXIT_SUCCESS;
}

const CliCommand cli_cmd_resize = {
    .name = "resize",
    .summary = "grow or shrink an image's virtual size",
    .usage = "  vdisk resize [-f FMT] [--shrink] [--preallocation=MODE] [-q] FILE [+|-]SIZE",
    .help = "  -f FMT                 image format (probed when not given)\n"
            "  --shrink               allow making the image smaller; data past the new\n"
            "                         end is lost (formats refuse when it holds data)\n"
            "  --preallocation=MODE   how the added range is allocated: off (the\n"
            "                         default), metadata (qcow2: its tables and\n"
            "                         clusters), falloc (the file's blocks too) or full\n"
            "                         (zeroes written); raw takes off, falloc and full\n"
            "  -q                     quiet\n"
            "\n"
            "SIZE is the new size; +SIZE grows and -SIZE shrinks by that much.\n",
    .examples = "  vdisk resize disk.qcow2 +10G\n"
                "  vdisk resize disk.qcow2 40G\n"
                "  vdisk resize --shrink disk.raw -1G\n"
                "  vdisk resize --preallocation=falloc disk.raw +10G\n",
    .run = run_resize,
};
