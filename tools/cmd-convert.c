/* vdisk convert: copy an image into another one, of any format, with
 * qemu-img convert's options. Friendlier defaults: the target format comes
 * from the file name when -O is missing, a terminal gets a progress bar,
 * and Ctrl-C cancels cleanly (the engine removes the half-written target). */
#include <stdlib.h>
#include <sys/stat.h>

#include "cli.h"
#include "progress.h"

enum {
    OPT_THREADS = CLI_OPT_FIRST_PRIVATE,
    OPT_TARGET_IS_ZERO,
    OPT_NO_COPY_OFFLOAD,
};

/* qemu-img caps -m at 16 coroutines; we allow a few more threads. */
#define MAX_THREADS 64

typedef struct {
    CliCreateOptions *create;   /* -o */
    const char *target_format;  /* -O */
    const char *snapshot;       /* -l / -s, as given */
    const char *backing_file;   /* -B */
    const char *backing_format; /* -F */
    gboolean compress;          /* -c */
    gboolean progress;          /* -p */
    gboolean target_exists;     /* -n */
    gboolean target_is_zero;    /* --target-is-zero */
    gboolean out_of_order;      /* -W */
    gboolean no_copy_offload;   /* --no-copy-offload */
    gboolean have_min_sparse;
    guint64 min_sparse; /* -S */
    guint threads;      /* -m, --threads */
    VdOpenFlags cache;  /* -t: the target's cache mode */
} ConvertOptions;

static gboolean convert_option(int opt, const char *arg, gpointer data, GError **error)
{
    ConvertOptions *opts = data;

    switch (opt) {
    case 'O':
        opts->target_format = arg;
        return TRUE;
    case 'o':
        cli_create_options_add(opts->create, arg);
        return TRUE;
    case 'c':
        opts->compress = TRUE;
        return TRUE;
    case 'p':
        opts->progress = TRUE;
        return TRUE;
    case 'n':
        opts->target_exists = TRUE;
        return TRUE;
    case OPT_TARGET_IS_ZERO:
        opts->target_is_zero = TRUE;
        return TRUE;
    case 'W':
        opts->out_of_order = TRUE;
        return TRUE;
    case 'B':
        opts->backing_file = arg;
        return TRUE;
    case 'F':
        opts->backing_format = arg;
        return TRUE;
    case 'S':
        opts->have_min_sparse = TRUE;
        return cli_parse_size("-S size", arg, &opts->min_sparse, error);
    case 's':
    case 'l':
        opts->snapshot = arg;
        return TRUE;
    case 'm':
    case OPT_THREADS:
        return cli_parse_uint("thread count", arg, MAX_THREADS, &opts->threads, error);
    case 't':
        return cli_parse_cache_mode(arg, &opts->cache, error);
    case 'T':
        return cli_parse_source_cache_mode(arg, NULL, error);
    case 'C':
        /* qemu-img's opt-in; vdisk offloads by default. */
        opts->no_copy_offload = FALSE;
        return TRUE;
    case OPT_NO_COPY_OFFLOAD:
        opts->no_copy_offload = TRUE;
        return TRUE;
    case 'U':
        cli_force_share();
        return TRUE;
    default:
        return FALSE;
    }
}

/* -O, or for -n the existing target's own format, or the file name's
 * extension; a name without one (a device) is raw as qemu-img does. An
 * extension that names no format is an error: "disk.qcw2" is a typo,
 * not a wish for raw. */
static const char *choose_target_format(const ConvertOptions *opts, const char *target,
                                        gboolean quiet, GError **error)
{
    const char *format;

    if (opts->target_format != NULL)
        return opts->target_format;
    if (opts->target_exists)
        return cli_probe_format(target, NULL, CLI_PROBE_WARN, error);
    format = vd_format_from_extension(target);
    if (format != NULL) {
        /* qemu-img writes raw whatever the name: say what vdisk chose. */
        if (!g_str_equal(format, "raw"))
            cli_note(quiet, "no -O given: writing %s, as the extension of '%s' says", format,
                     target);
        return format;
    }
    g_autofree char *base = g_path_get_basename(target);
    const char *dot = strrchr(base, '.');
    if (dot != NULL && dot != base && dot[1] != '\0') {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "no -O given and the extension '%s' of '%s' names no image format; give "
                    "-O FMT (raw, qcow2, vdi, vmdk, ...)",
                    dot, target);
        return NULL;
    }
    cli_note(quiet, "no -O given and '%s' has no extension: writing raw", target);
    return "raw";
}

typedef struct {
    VdImage *source;
    const char *target_path;
    VdConvertOptions engine;
} ConvertJob;

static gboolean convert_job(gpointer data, gpointer progress, GCancellable *cancellable,
                            GError **error)
{
    ConvertJob *job = data;

    job->engine.progress = progress_report;
    job->engine.progress_data = progress;
    job->engine.cancellable = cancellable;
    /* Where the data lies, for a time left that counts holes as the fast
     * work they are; without it the bar still shows bytes. */
    if (!progress_scan_source(progress, job->source, job->engine.backing_file != NULL,
                              job->engine.min_sparse == 0, cancellable, NULL) &&
        g_cancellable_set_error_if_cancelled(cancellable, error))
        return FALSE;
    return vd_convert(job->source, job->target_path, &job->engine, error);
}

/* Fill the engine's options from ours; backing_format may have been
 * probed, so it is passed apart. */
static void engine_options(const ConvertOptions *opts, const char *target_format,
                           const char *backing_format, VdOptions *create_options,
                           VdConvertOptions *out)
{
    vd_convert_options_init(out);
    out->target_format = target_format;
    out->create_options = create_options;
    out->compress = opts->compress;
    out->target_exists = opts->target_exists;
    out->target_is_zero = opts->target_is_zero;
    out->backing_file = opts->backing_file;
    out->backing_format = backing_format;
    if (opts->have_min_sparse)
        out->min_sparse = opts->min_sparse;
    out->threads = opts->threads;
    out->out_of_order = opts->out_of_order;
    out->no_copy_offload = opts->no_copy_offload;
    out->target_open_flags = opts->cache;
}

static int run_convert(const CliCommand *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "threads", required_argument, NULL, OPT_THREADS },
        { "force-share", no_argument, NULL, 'U' },
        { "target-is-zero", no_argument, NULL, OPT_TARGET_IS_ZERO },
        { "no-copy-offload", no_argument, NULL, OPT_NO_COPY_OFFLOAD },
        { NULL, 0, NULL, 0 },
    };
    CliCommon common = { 0 };
    g_auto(CliCreateOptions) create = { 0 };
    ConvertOptions opts = { .create = &create };
    g_autoptr(GError) error = NULL;
    g_autoptr(VdOptions) create_options = NULL;
    g_autoptr(VdImage) source = NULL;
    const char *target_format;
    const char *backing_format;
    ConvertJob job = { 0 };
    int first = cli_parse_options(cmd, argc, argv, "f:O:o:cpqnWB:F:S:s:l:m:t:T:UC", longopts,
                                  &common, convert_option, &opts);

    if (first < 0)
        return CLI_EXIT_FAILURE;
    if (create.help)
        return cli_print_create_options(opts.target_format != NULL ? opts.target_format : "raw");
    if (!cli_check_operands(cmd, argc - first, 2, 2))
        return CLI_EXIT_FAILURE;
    job.target_path = argv[first + 1];
    g_autofree char *target_file = NULL, *target_driver = NULL;
    g_autoptr(VdOptions) target_open = NULL;
    if (cli_target_image_opts()) {
        if (!opts.target_exists) {
            cli_error("convert: --target-image-opts needs -n (an existing target)");
            return CLI_EXIT_FAILURE;
        }
        if (!cli_split_image_opts(job.target_path, &target_file, &target_driver, &target_open,
                                  &error))
            return cli_fail(error);
        job.target_path = target_file;
        if (opts.target_format == NULL)
            opts.target_format = target_driver;
    }
    if (opts.target_is_zero && !opts.target_exists) {
        cli_error("convert: --target-is-zero needs -n (an existing target)");
        return CLI_EXIT_FAILURE;
    }
    if (opts.target_exists && (create.texts != NULL || opts.backing_file != NULL)) {
        cli_error("convert: -n writes into an existing image; -o and -B only apply when "
                  "vdisk creates the target");
        return CLI_EXIT_FAILURE;
    }

    create_options = cli_create_options_parse(&create, &error);
    if (create_options == NULL)
        return cli_fail(error);
    target_format = choose_target_format(&opts, job.target_path, common.quiet, &error);
    if (target_format == NULL)
        return cli_fail(error);
    if (!cli_check_format(target_format))
        return CLI_EXIT_FAILURE;
    backing_format = opts.backing_format;
    if (opts.backing_file != NULL && backing_format == NULL) {
        backing_format =
            cli_guess_backing_format(job.target_path, opts.backing_file, common.quiet, &error);
        if (backing_format == NULL)
            return cli_fail(error);
    }

    source =
        cli_open_at_snapshot(argv[first], common.format, opts.snapshot, CLI_PROBE_SOURCE, &error);
    if (source == NULL)
        return cli_fail(error);
    job.source = source;
    engine_options(&opts, target_format, backing_format, create_options, &job.engine);
    job.engine.secrets = cli_secrets();
    job.engine.target_open_options = target_open;
    if (!opts.target_exists && !cli_ensure_new_passphrase(target_format, create_options, &error))
        return cli_fail(error);
    if (opts.compress && (g_str_equal(target_format, "luks") ||
                          vd_options_get(create_options, "encrypt.format") != NULL)) {
        cli_error("convert: compression and encryption cannot be used together");
        return CLI_EXIT_FAILURE;
    }
    if (!cli_run_with_progress("Converting", opts.progress, common.quiet, convert_job, &job,
                               &error))
        return cli_fail(error);
    return EXIT_SUCCESS;
}

const CliCommand cli_cmd_convert = {
    .name = "convert",
    .summary = "copy an image into a new one, changing format, compression or backing",
    .usage = "  vdisk convert [-f FMT] [-O FMT] [-o OPTIONS] [-c] [-p] [-q] [-n "
             "[--target-is-zero]] [-W]\n"
             "                [-B BACKING [-F BACKING_FMT]] [-S SIZE] [-m N] [-t CACHE]\n"
             "                [-T SRC_CACHE] [-U] [-l snapshot.name=NAME | -l NAME | -s NAME]\n"
             "                SOURCE TARGET",
    .help = "  -f FMT                 source format (probed when not given)\n"
            "  -O FMT                 target format; when missing it comes from TARGET's\n"
            "                         extension (.qcow2, .vdi, .vmdk, .img, ...); raw\n"
            "                         when it has none; another extension is an error\n"
            "  -o OPTIONS             target format options, as for 'vdisk create'\n"
            "  -c                     compress the target (qcow2, vmdk streamOptimized)\n"
            "  -p                     show progress (a bar on a terminal; qemu-img's\n"
            "                         '(12.34/100%)' lines otherwise). A terminal gets the\n"
            "                         bar even without -p\n"
            "  -q                     quiet: no progress, no notes\n"
            "  -n                     write into the existing TARGET instead of creating it\n"
            "  -U, --force-share      read SOURCE even while another process writes it\n"
            "                         (a running VM), as qemu-img -U; it may then look\n"
            "                         inconsistent\n"
            "  --target-is-zero       with -n: TARGET reads as zeroes already, so zero runs\n"
            "                         are not written\n"
            "  -B BACKING             give the target this backing file and copy only what\n"
            "                         differs from it\n"
            "  -F BACKING_FMT         format of BACKING (probed when not given)\n"
            "  -S SIZE                zero runs at least SIZE long stay holes (default\n"
            "                         4K; 0 writes every byte)\n"
            "  -l snapshot.name=NAME  convert the content of an internal snapshot\n"
            "  -l snapshot.id=ID, -l NAME, -s NAME   the same\n"
            "  -m N, --threads N      copy with N worker threads\n"
            "  -W                     allow out-of-order writes to the target\n"
            "  --disk N               for an OVA appliance SOURCE: convert its Nth disk\n"
            "  --backing FILE         FILE is SOURCE's parent (a differencing VDI whose\n"
            "                         parent is not beside it, or a moved backing file)\n"
            "  --object secret,id=ID,file=PATH   a passphrase that encrypt.key-secret=ID\n"
            "                         (or key-secret=ID for luks) names\n"
            "  --image-opts           SOURCE is driver=FMT,file.filename=PATH,KEY=VALUE...\n"
            "  --target-image-opts    TARGET is such options too (with -n)\n"
            "  --passphrase-file FILE passphrase of an encrypted source or new target\n"
            "  -t CACHE               cache mode of the target: writeback (the default)\n"
            "                         or none: on stable storage before vdisk reports\n"
            "                         success; writethrough or directsync: also after every\n"
            "                         write; unsafe: never wait for the disk (a power cut\n"
            "                         may lose or damage the target). qemu-img convert's\n"
            "                         default is unsafe; vdisk's is not\n"
            "  -T SRC_CACHE           cache mode of the source; accepted as qemu-img takes\n"
            "                         it, it changes nothing\n"
            "  --no-copy-offload      copy every byte through vdisk's buffers; by default\n"
            "                         data stored plainly goes file to file inside the\n"
            "                         kernel (copy_file_range), as shared extents on\n"
            "                         XFS and btrfs (a reflink: no data is copied)\n"
            "  -C                     copy offloading (qemu-img's opt-in): the default\n"
            "\n"
            "Ctrl-C cancels; a target that vdisk created is then removed.\n",
    .examples =
        "  vdisk convert -f vdi -O qcow2 vm.vdi vm.qcow2\n"
        "  vdisk convert disk.vmdk disk.qcow2          # formats from the names\n"
        "  vdisk convert -c -p -O qcow2 big.raw small.qcow2\n"
        "  vdisk convert -O qcow2 -B base.qcow2 -F qcow2 top.qcow2 delta.qcow2\n"
        "  vdisk convert -l snapshot.name=clean -O raw vm.qcow2 clean.raw\n"
        "  vdisk convert --disk 2 appliance.ova data.qcow2\n"
        "  vdisk convert --object secret,id=s0,file=pw -O qcow2 \\\n"
        "      -o encrypt.format=luks,encrypt.key-secret=s0 plain.raw secret.qcow2\n"
        "  vdisk convert --object secret,id=s0,file=pw --image-opts \\\n"
        "      driver=qcow2,encrypt.key-secret=s0,file.filename=secret.qcow2 -O raw plain.raw\n",
    .run = run_convert,
};
