/* vdisk rebase: give an image another backing file, keeping what the guest
 * sees (or, with -u, only changing the name), like qemu-img rebase. */
#include <stdlib.h>

#include "cli.h"
#include "progress.h"

typedef struct {
    const char *backing;        /* -b; "" means none */
    const char *backing_format; /* -F */
    gboolean unsafe;            /* -u */
    gboolean progress;          /* -p */
    VdOpenFlags cache;          /* -t */
    gboolean force_share;       /* -U: for the backing files, as qemu-img's */
} RebaseOptions;

static gboolean rebase_option(int opt, const char *arg, gpointer data, GError **error)
{
    RebaseOptions *opts = data;

    switch (opt) {
    case 'b':
        opts->backing = arg;
        return TRUE;
    case 'F':
        opts->backing_format = arg;
        return TRUE;
    case 'u':
        opts->unsafe = TRUE;
        return TRUE;
    case 'p':
        opts->progress = TRUE;
        return TRUE;
    case 't':
        return cli_parse_cache_mode(arg, &opts->cache, error);
    case 'T':
        return cli_parse_source_cache_mode(arg, NULL, error);
    case 'U':
        opts->force_share = TRUE;
        return TRUE;
    default:
        return FALSE;
    }
}

typedef struct {
    VdImage *img;
    VdImage *new_backing;
    const RebaseOptions *opts;
    const char *backing_format;
} RebaseJob;

static gboolean rebase_job(gpointer data, gpointer progress, GCancellable *cancellable,
                           GError **error)
{
    RebaseJob *job = data;
    const char *backing = *job->opts->backing != '\0' ? job->opts->backing : NULL;

    return vd_image_rebase(job->img, backing, job->backing_format, job->new_backing,
                           job->opts->unsafe, progress_report, progress, cancellable, error);
}

/* The new backing file, opened (with its chain) for reading, as the image
 * will name it: relative names are relative to the image's folder. */
static VdImage *open_new_backing(const char *image, const RebaseOptions *opts, const char *format,
                                 GError **error)
{
    g_autofree char *path = vd_resolve_relative(image, opts->backing);
    g_autoptr(VdImage) img = cli_open_image_with_keys(
        path, format, NULL, opts->force_share ? VD_OPEN_FORCE_SHARE : 0, error);

    if (img == NULL)
        g_prefix_error(error, "could not open the new backing file: ");
    return g_steal_pointer(&img);
}

static int run_rebase(const CliCommand *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    CliCommon common = { 0 };
    RebaseOptions opts = { 0 };
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = NULL;
    g_autoptr(VdImage) new_backing = NULL;
    const char *backing_format;
    int first = cli_parse_options(cmd, argc, argv, "f:b:F:upqt:T:U", longopts, &common,
                                  rebase_option, &opts);

    if (first < 0 || !cli_check_operands(cmd, argc - first, 1, 1))
        return CLI_EXIT_FAILURE;
    if (opts.backing == NULL) {
        cli_error("rebase: give the new backing file with -b (-b \"\" for none: the image then "
                  "holds all its data itself)");
        return CLI_EXIT_FAILURE;
    }
    /* -u never reads the old chain, which may be what went missing. */
    img = cli_open_image_with_keys(argv[first], common.format, NULL,
                                   VD_OPEN_READ_WRITE | opts.cache |
                                       (opts.unsafe ? VD_OPEN_NO_BACKING : 0) |
                                       (opts.force_share ? VD_OPEN_BACKING_SHARE_WRITE : 0),
                                   &error);
    if (img == NULL)
        return cli_fail(error);
    backing_format = opts.backing_format;
    if (*opts.backing != '\0' && backing_format == NULL) {
        backing_format = cli_guess_backing_format(argv[first], opts.backing, common.quiet, &error);
        if (backing_format == NULL)
            return cli_fail(error);
    }
    if (*opts.backing != '\0' && !opts.unsafe) {
        new_backing = open_new_backing(argv[first], &opts, backing_format, &error);
        if (new_backing == NULL)
            return cli_fail(error);
    }
    RebaseJob job = { img, new_backing, &opts, backing_format };
    if (!cli_run_with_progress("Rebasing", opts.progress, common.quiet, rebase_job, &job, &error))
        return cli_fail(error);
    return EXIT_SUCCESS;
}

const CliCommand cli_cmd_rebase = {
    .name = "rebase",
    .summary = "give an image another backing file, keeping its content",
    .usage = "  vdisk rebase [-f FMT] [-t CACHE] [-T SRC_CACHE] [-u] [-p] [-q] [-U] -b BACKING\n"
             "               [-F BACKING_FMT] FILE",
    .help = "  -f FMT                 format of FILE (probed when not given)\n"
            "  -b BACKING             the new backing file (relative to FILE's folder);\n"
            "                         \"\" for none: FILE then holds all its data itself\n"
            "  -F BACKING_FMT         format of BACKING (probed when not given)\n"
            "  -u                     unsafe: only change the name, copy nothing (for a\n"
            "                         backing file that was moved or renamed)\n"
            "  -p                     show progress (a terminal gets a bar anyway)\n"
            "  -q                     quiet\n"
            "  -U, --force-share      read the old and new backing files even while another\n"
            "                         process writes them, as qemu-img -U\n" CLI_HELP_CACHE
            "  -T SRC_CACHE           cache mode of the images read; accepted as qemu-img\n"
            "                         takes it, it changes nothing\n"
            "\n"
            "Without -u, every range FILE does not hold itself and where BACKING differs\n"
            "from the old backing chain is copied into FILE first, so the guest sees the\n"
            "same disk; an interrupted rebase leaves FILE on its old backing file.\n",
    .examples = "  vdisk rebase -b new-base.qcow2 -F qcow2 overlay.qcow2\n"
                "  vdisk rebase -u -b /moved/base.qcow2 -F qcow2 overlay.qcow2\n"
                "  vdisk rebase -b \"\" overlay.qcow2               # flatten\n",
    .run = run_rebase,
};
