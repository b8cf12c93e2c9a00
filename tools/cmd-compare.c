/* vdisk compare: do two images hold the same guest content? Options,
 * messages and exit codes are qemu-img compare's. */
#include <stdlib.h>

#include "cli.h"
#include "progress.h"
#include "voice.h"

/* qemu-img compare's exit codes. */
enum {
    COMPARE_EXIT_IDENTICAL = 0,
    COMPARE_EXIT_DIFFERENT = 1,
    COMPARE_EXIT_ERROR = 2,
    COMPARE_EXIT_STATUS_ERROR = 3, /* asking block status failed */
    COMPARE_EXIT_READ_ERROR = 4,
};

typedef struct {
    const char *format_b; /* -F */
    gboolean strict;      /* -s */
    gboolean progress;    /* -p */
} CompareOptions;

static gboolean compare_option(int opt, const char *arg, gpointer data, GError **error)
{
    CompareOptions *opts = data;

    switch (opt) {
    case 'F':
        opts->format_b = arg;
        return TRUE;
    case 's':
        opts->strict = TRUE;
        return TRUE;
    case 'T':
        return cli_parse_source_cache_mode(arg, NULL, error);
    case 'p':
        opts->progress = TRUE;
        return TRUE;
    case 'U':
        cli_force_share();
        return TRUE;
    default:
        return FALSE;
    }
}

typedef struct {
    VdImage *a;
    VdImage *b;
    gboolean strict;
    VdCompareResult result;
} CompareJob;

static gboolean compare_job(gpointer data, gpointer progress, GCancellable *cancellable,
                            GError **error)
{
    CompareJob *job = data;
    VdCompareFlags flags = job->strict ? VD_COMPARE_STRICT_SIZE | VD_COMPARE_STRICT_STATUS : 0;

    return vd_compare_full(job->a, job->b, flags, progress_report, progress, cancellable,
                           &job->result, error);
}

static int fail(const GError *error)
{
    cli_fail(error);
    return COMPARE_EXIT_ERROR;
}

/* The comparison failed: as qemu-img, the size warning when the images
 * were alike as far as both go, then which request failed where, with
 * its exit code. names: FILE1 and FILE2. */
static int comparison_failed(const CompareJob *job, char **names, gboolean quiet,
                             const GError *error)
{
    const VdCompareResult *res = &job->result;
    if (!res->read_failed && !res->status_failed)
        return fail(error);
    if (res->tail_checked && !quiet)
        printf("Warning: Image size mismatch!\n");
    const char *name = names[res->failed_image];
    g_autoptr(GError) told = NULL;
    if (voice_is_qemu()) {
        /* qemu-img gives the errno's text alone: the end of vdisk's. */
        const char *why = g_strrstr(error->message, ": ");
        why = why != NULL ? why + 2 : error->message;
        if (res->read_failed)
            told = g_error_new(VD_ERROR, error->code,
                               "Error while reading offset %" G_GUINT64_FORMAT " of %s: %s",
                               res->failed_offset, name, why);
        else
            told = g_error_new(VD_ERROR, error->code, "Sector allocation test failed for %s", name);
    } else {
        told = g_error_new(VD_ERROR, error->code, "%s %s at offset %" G_GUINT64_FORMAT ": %s",
                           res->read_failed ? "reading" : "asking the block status of", name,
                           res->failed_offset, error->message);
    }
    cli_fail(told);
    return res->read_failed ? COMPARE_EXIT_READ_ERROR : COMPARE_EXIT_STATUS_ERROR;
}

static int run_compare(const CliCommand *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    CliCommon common = { 0 };
    CompareOptions opts = { 0 };
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) a = NULL;
    g_autoptr(VdImage) b = NULL;
    CompareJob job = { 0 };
    int first =
        cli_parse_options(cmd, argc, argv, "f:F:spqT:U", longopts, &common, compare_option, &opts);

    if (first < 0 || !cli_check_operands(cmd, argc - first, 2, 2))
        return COMPARE_EXIT_ERROR;

    a = cli_open_image(argv[first], common.format, 0, CLI_PROBE_QUIET, &error);
    if (a == NULL)
        return fail(error);
    b = cli_open_image(argv[first + 1], opts.format_b, 0, CLI_PROBE_QUIET, &error);
    if (b == NULL)
        return fail(error);

    if (vd_image_size(a) != vd_image_size(b)) {
        if (opts.strict) {
            if (!common.quiet)
                printf("Strict mode: Image size mismatch!\n");
            return COMPARE_EXIT_DIFFERENT;
        }
    }

    job.a = a;
    job.b = b;
    job.strict = opts.strict;
    /* Progress only with -p, as qemu-img: compare's answer is its output. */
    if (!cli_run_with_progress("Comparing", opts.progress, common.quiet || !opts.progress,
                               compare_job, &job, &error))
        return comparison_failed(&job, argv + first, common.quiet, error);
    /* As qemu-img: the sizes are worth a warning only when the part both
     * images have is alike, and the answer is then about the rest. */
    if (vd_image_size(a) != vd_image_size(b) && !common.quiet &&
        (job.result.identical ||
         job.result.first_difference >= MIN(vd_image_size(a), vd_image_size(b))))
        printf("Warning: Image size mismatch!\n");
    if (job.result.status_mismatch) {
        if (!common.quiet)
            printf("Strict mode: Offset %" G_GUINT64_FORMAT " block status mismatch!\n",
                   job.result.first_difference);
        return COMPARE_EXIT_DIFFERENT;
    }
    if (!job.result.identical) {
        if (!common.quiet)
            printf("Content mismatch at offset %" G_GUINT64_FORMAT "!\n",
                   job.result.first_difference);
        return COMPARE_EXIT_DIFFERENT;
    }
    if (!common.quiet)
        printf("Images are identical.\n");
    return COMPARE_EXIT_IDENTICAL;
}

const CliCommand cli_cmd_compare = {
    .name = "compare",
    .summary = "compare the guest-visible content of two images",
    .usage = "  vdisk compare [-f FMT] [-F FMT] [-T SRC_CACHE] [-p] [-s] [-q] [-U] FILE1 FILE2",
    .help = "  -f FMT                 format of FILE1 (probed when not given)\n"
            "  -F FMT                 format of FILE2 (probed when not given)\n"
            "  -s                     strict, as qemu-img: images of different sizes differ,\n"
            "                         and so do ranges stored differently (allocated in\n"
            "                         one image only, data in one and zeroes in the other)\n"
            "                         even where they read the same; without it the\n"
            "                         larger image must read zero past the smaller one\n"
            "  -p                     show progress (qemu-img's percentage lines when\n"
            "                         stdout is not a terminal)\n"
            "  -q                     quiet: only the exit status tells\n"
            "  -U, --force-share      read the images even while another process writes them\n"
            "                         (a running VM), as qemu-img -U; it may then look\n"
            "                         inconsistent\n"
            "  -T SRC_CACHE           cache mode of the images read; accepted as qemu-img\n"
            "                         takes it, it changes nothing\n"
            "\n"
            "Exit status, as qemu-img's: 0 identical, 1 different, 2 error (opening), 3 the\n"
            "block status of a range could not be read, 4 data could not be read.\n",
    .examples = "  vdisk compare disk.raw disk.qcow2\n"
                "  vdisk compare -s -f qcow2 -F vdi a.qcow2 b.vdi && echo same\n",
    .run = run_compare,
};
