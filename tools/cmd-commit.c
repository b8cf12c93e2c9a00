/* vdisk commit: write an overlay's changes into its backing file (or a file
 * further down its chain), then empty the overlay, like qemu-img commit. */
#include <glib/gstdio.h>
#include <stdlib.h>

#include "cli.h"
#include "progress.h"
#include "voice.h"

typedef struct {
    const char *base;  /* -b */
    gboolean keep_top; /* -d, or implied by -b */
    gboolean progress; /* -p */
    VdOpenFlags cache; /* -t */
} CommitOptions;

static gboolean commit_option(int opt, const char *arg, gpointer data, GError **error)
{
    CommitOptions *opts = data;

    switch (opt) {
    case 'b':
        opts->base = arg;
        return TRUE;
    case 'd':
        opts->keep_top = TRUE;
        return TRUE;
    case 'p':
        opts->progress = TRUE;
        return TRUE;
    case 't':
        return cli_parse_cache_mode(arg, &opts->cache, error);
    case 'r': /* rate limit: nothing to choose here */
        return TRUE;
    default:
        return FALSE;
    }
}

static gboolean same_file(const char *a, const char *b)
{
    GStatBuf sa, sb;
    return g_stat(a, &sa) == 0 && g_stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* The layer of top's chain to commit into, and its depth. */
static VdImage *find_base(VdImage *top, const char *wanted, guint *depth, GError **error)
{
    guint d = 1;
    VdImage *above = top;
    for (VdImage *layer = vd_image_backing(top); layer != NULL;
         above = layer, layer = vd_image_backing(layer), d++) {
        /* A relative name is taken from the folder of the image whose
         * backing file is compared, as qemu-img takes it. */
        g_autofree char *name =
            wanted != NULL ? vd_resolve_relative(vd_image_filename(above), wanted) : NULL;
        if (wanted == NULL || same_file(vd_image_filename(layer), name)) {
            *depth = d;
            return layer;
        }
    }
    if (wanted == NULL)
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "%s has no backing file to commit into", vd_image_filename(top));
    else
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_FOUND, "%s is not in the backing chain of %s",
                    wanted, vd_image_filename(top));
    return NULL;
}

typedef struct {
    VdImage *top, *base;
    guint depth;
} CommitJob;

static gboolean commit_job(gpointer data, gpointer progress, GCancellable *cancellable,
                           GError **error)
{
    CommitJob *job = data;
    return vd_image_commit(job->top, job->base, job->depth, progress_report, progress, cancellable,
                           error);
}

/* After a commit into the immediate backing file the overlay's clusters
 * say nothing the base does not: drop them (qcow2, qcow), so it reads through. */
static gboolean empty_overlay(const char *path, const char *format, VdOpenFlags cache,
                              GError **error)
{
    g_autoptr(VdImage) img = cli_open_image_with_keys(
        path, format, NULL, VD_OPEN_READ_WRITE | VD_OPEN_NO_BACKING | cache, error);
    if (img == NULL)
        return FALSE;
    const char *format_name = vd_image_format(img);
    if (!g_str_equal(format_name, "qcow2") && !g_str_equal(format_name, "qcow"))
        return TRUE; /* other formats keep their clusters; they read the same */
    return vd_image_make_empty(img, error);
}

static int run_commit(const CliCommand *cmd, int argc, char **argv)
{
    CommitOptions opts = { 0 };
    CliCommon common = { 0 };
    g_autoptr(GError) error = NULL;
    int first =
        cli_parse_options(cmd, argc, argv, "f:b:dpqt:r:", NULL, &common, commit_option, &opts);

    if (first < 0 || !cli_check_operands(cmd, argc - first, 1, 1))
        return CLI_EXIT_FAILURE;
    const char *path = argv[first];
    /* The chain below top is written through the base's own handle, which
     * keeps other writers out: top's open must not refuse it. */
    g_autoptr(VdImage) top =
        cli_open_image_with_keys(path, common.format, NULL, VD_OPEN_BACKING_SHARE_WRITE, &error);
    if (top == NULL)
        return cli_fail(error);
    g_autofree char *top_format = g_strdup(vd_image_format(top));
    guint depth = 0;
    VdImage *layer = find_base(top, opts.base, &depth, &error);
    if (layer == NULL)
        return cli_fail(error);
    /* The base is written through a handle of its own. */
    VdOpenFlags probed = vd_image_format_probed(layer) ? VD_OPEN_PROBED_RAW : 0;
    g_autoptr(VdImage) base = cli_open_image_with_keys(
        vd_image_filename(layer), vd_image_format(layer), NULL,
        VD_OPEN_READ_WRITE | VD_OPEN_NO_BACKING | probed | opts.cache, &error);
    if (base == NULL)
        return cli_fail(error);

    CommitJob job = { top, base, depth };
    gboolean ok =
        cli_run_with_progress("Committing", opts.progress, common.quiet, commit_job, &job, &error);
    g_clear_pointer(&base, vd_image_unref);
    g_clear_pointer(&top, vd_image_unref);
    if (!ok && voice_is_qemu())
        g_prefix_error(&error, "Block job failed: ");
    if (!ok)
        return cli_fail(error);
    /* Layers between the overlay and a deeper base now read wrongly, so the
     * overlay must keep its data: -b implies -d, as in qemu-img. */
    if (!opts.keep_top && opts.base == NULL &&
        !empty_overlay(path, top_format, opts.cache, &error)) {
        if (voice_is_qemu()) {
            /* qemu-img gives the errno's text alone: the end of vdisk's. */
            const char *why = g_strrstr(error->message, ": ");
            g_autoptr(GError) told = g_error_new(VD_ERROR, error->code, "Failed to empty %s: %s",
                                                 path, why != NULL ? why + 2 : error->message);
            return cli_fail(told);
        }
        g_prefix_error(&error, "committed, but could not empty %s: ", path);
        return cli_fail(error);
    }
    if (!common.quiet)
        printf("Image committed.\n");
    return EXIT_SUCCESS;
}

const CliCommand cli_cmd_commit = {
    .name = "commit",
    .summary = "write an overlay's changes into its backing file",
    .usage = "  vdisk commit [-f FMT] [-t CACHE] [-b BASE] [-d] [-p] [-q] FILE",
    .help = "  -f FMT                 format of FILE (probed when not given)\n"
            "  -b BASE                commit into this file of FILE's backing chain\n"
            "                         (default: its backing file); implies -d\n"
            "  -d                     do not empty FILE afterwards\n"
            "  -p                     show progress (a terminal gets a bar anyway)\n"
            "  -q                     quiet\n" CLI_HELP_CACHE "\n"
            "The base grows to FILE's size when it is smaller. Afterwards a qcow2 FILE is\n"
            "emptied (it reads through to the base), unless -d or -b. With -b, the files\n"
            "between FILE and BASE no longer show the disk as it was.\n",
    .examples = "  vdisk commit overlay.qcow2\n"
                "  vdisk commit -b base.qcow2 top.qcow2\n",
    .run = run_commit,
};
