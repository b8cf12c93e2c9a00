/* vdisk convert: copy an image into another one, of any format, with
 * qemu-img convert's options. Friendlier defaults: the target format comes
 * from the file name when -O is missing, a terminal gets a progress bar,
 * and Ctrl-C cancels cleanly (the engine removes the half-written target). */
#include <stdlib.h>
#include <sys/stat.h>

#include "cli.h"
#include "voice.h"
#include "progress.h"

enum {
    OPT_THREADS = CLI_OPT_FIRST_PRIVATE,
    OPT_TARGET_IS_ZERO,
    OPT_NO_COPY_OFFLOAD,
    OPT_SALVAGE,
    OPT_BITMAPS,
    OPT_SKIP_BROKEN_BITMAPS,
};

/* qemu-img caps -m at 16 coroutines; we allow a few more threads. */
#define MAX_THREADS 64
#define MAX_MIN_SPARSE (16u << 20)

typedef struct {
    CliCreateOptions *create;   /* -o */
    const char *target_format;  /* -O */
    const char *snapshot;       /* -l, as given */
    const char *backing_file;   /* -B */
    const char *backing_format; /* -F */
    gboolean compress;          /* -c */
    gboolean progress;          /* -p */
    gboolean target_exists;     /* -n */
    gboolean target_is_zero;    /* --target-is-zero */
    gboolean out_of_order;      /* -W */
    gboolean no_copy_offload;   /* --no-copy-offload */
    gboolean salvage;           /* --salvage */
    gboolean bitmaps;           /* --bitmaps */
    gboolean skip_broken;       /* --skip-broken-bitmaps */
    guint64 rate_limit;         /* -r, bytes a second */
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
        if (!cli_parse_size("-S size", arg, &opts->min_sparse, error))
            return FALSE;
        /* qemu-img's bounds: whole sectors, at most 16 MiB. */
        if (opts->min_sparse % 512 != 0 || opts->min_sparse > MAX_MIN_SPARSE) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "Invalid buffer size for sparse output specified. Valid sizes are "
                        "multiples of 512 up to %u. Select 0 to disable sparse detection (fully "
                        "allocates output).",
                        MAX_MIN_SPARSE);
            return FALSE;
        }
        return TRUE;
    case 'l':
        opts->snapshot = arg;
        return TRUE;
    case 'r':
        return cli_parse_size("rate limit", arg, &opts->rate_limit, error);
    case OPT_SALVAGE:
        opts->salvage = TRUE;
        return TRUE;
    case OPT_BITMAPS:
        opts->bitmaps = TRUE;
        return TRUE;
    case OPT_SKIP_BROKEN_BITMAPS:
        opts->skip_broken = TRUE;
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

const char *cli_target_format_from_name(const char *target, const char *option, gboolean quiet,
                                        gboolean note_raw, GError **error)
{
    /* qemu-img writes raw whatever the name: so does vdisk under its name. */
    if (voice_is_qemu())
        return "raw";
    /* A Ceph RBD image is the disk itself: raw, whatever its name says. */
    if (vd_rbd_is_name(target))
        return "raw";
    const char *format = vd_format_from_extension(target);
    if (format != NULL) {
        if (!g_str_equal(format, "raw"))
            cli_note(quiet, "no %s given: writing %s, as the extension of '%s' says", option,
                     format, target);
        return format;
    }
    g_autofree char *base = g_path_get_basename(target);
    const char *dot = strrchr(base, '.');
    if (dot != NULL && dot != base && dot[1] != '\0') {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "no %s given and the extension '%s' of '%s' names no image format; give "
                    "%s FMT (raw, qcow2, vdi, vmdk, vpc, ...)",
                    option, dot, target, option);
        return NULL;
    }
    if (note_raw)
        cli_note(quiet, "no %s given and '%s' has no extension: writing raw", option, target);
    return "raw";
}

/* -O, or for -n the existing target's own format, or the file name's
 * extension (cli_target_format_from_name). */
static const char *choose_target_format(const ConvertOptions *opts, const char *target,
                                        gboolean quiet, GError **error)
{
    if (opts->target_format != NULL)
        return opts->target_format;
    if (opts->target_exists)
        return cli_probe_format(target, NULL, CLI_PROBE_WARN, error);
    return cli_target_format_from_name(target, "-O", quiet, TRUE, error);
}

/* The persistent bitmaps of source (an aa{sv} of qemu-img info's
 * "bitmaps"), or NULL when it has none. */
static GVariant *source_bitmaps(VdImage *source)
{
    g_autoptr(VdImageInfo) info = vd_image_get_info(source, NULL);
    if (info == NULL || info->format_specific == NULL)
        return NULL;
    return g_variant_lookup_value(info->format_specific, "bitmaps", G_VARIANT_TYPE("aa{sv}"));
}

static gboolean bitmap_in_use(GVariant *bitmap)
{
    g_autofree const char **flags = NULL;
    if (!g_variant_lookup(bitmap, "flags", "^a&s", &flags))
        return FALSE;
    return g_strv_contains(flags, "in-use");
}

/* --bitmaps, before anything is copied: a source and a target that keep
 * persistent bitmaps (qcow2), and no inconsistent bitmap unless
 * --skip-broken-bitmaps; in qemu-img's words. */
static gboolean bitmaps_check(VdImage *source, const char *target_format, gboolean skip_broken,
                              GError **error)
{
    if (!g_str_equal(vd_image_format(source), "qcow2")) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED, "Source lacks bitmap support");
        return FALSE;
    }
    if (!g_str_equal(target_format, "qcow2")) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "Format driver '%s' does not support bitmaps", target_format);
        return FALSE;
    }
    /* Last to first, as qemu-img names them. */
    g_autoptr(GVariant) list = source_bitmaps(source);
    for (gsize i = list != NULL ? g_variant_n_children(list) : 0; i > 0; i--) {
        g_autoptr(GVariant) bm = g_variant_get_child_value(list, i - 1);
        const char *name = NULL;
        g_variant_lookup(bm, "name", "&s", &name);
        if (!bitmap_in_use(bm))
            continue;
        if (!skip_broken && voice_is_qemu()) {
            g_set_error(error, VD_ERROR, VD_ERROR_FAILED,
                        "Cannot copy inconsistent bitmap '%s'\nTry --skip-broken-bitmaps, or use "
                        "'qemu-img bitmap --remove' to delete it",
                        name);
            return FALSE;
        }
        if (!skip_broken) {
            g_set_error(error, VD_ERROR, VD_ERROR_FAILED,
                        "Cannot copy inconsistent bitmap '%s'; try --skip-broken-bitmaps, or "
                        "remove it with 'vdisk bitmap --remove'",
                        name);
            return FALSE;
        }
        cli_error("warning: Skipping inconsistent bitmap '%s'", name);
    }
    return TRUE;
}

/* --bitmaps, after the copy: each consistent bitmap of source made in the
 * target with its granularity and enabled state, holding the same bits. */
static gboolean copy_bitmaps(VdImage *source, const char *target_path, const char *target_format,
                             VdOptions *target_open, gboolean skip_broken, GError **error)
{
    g_autoptr(GVariant) list = source_bitmaps(source);
    if (list == NULL || g_variant_n_children(list) == 0)
        return TRUE;
    g_autoptr(VdImage) target = vd_image_open_opts(target_path, target_format, VD_OPEN_READ_WRITE,
                                                   target_open, cli_secrets(), error);
    if (target == NULL)
        return FALSE;
    for (gsize i = 0; i < g_variant_n_children(list); i++) {
        g_autoptr(GVariant) bm = g_variant_get_child_value(list, i);
        const char *name = NULL;
        guint32 granularity = 0;
        g_autofree const char **flags = NULL;
        g_variant_lookup(bm, "name", "&s", &name);
        g_variant_lookup(bm, "granularity", "u", &granularity);
        g_variant_lookup(bm, "flags", "^a&s", &flags);
        if (name == NULL || (skip_broken && bitmap_in_use(bm)))
            continue;
        gboolean disabled = flags == NULL || !g_strv_contains(flags, "auto");
        if (!vd_image_bitmap(target, VD_BITMAP_ADD, name, granularity, disabled, NULL, NULL,
                             error) ||
            !vd_image_bitmap(target, VD_BITMAP_MERGE, name, 0, FALSE, source, name, error)) {
            g_prefix_error(error, "Failed to populate bitmap %s: ", name);
            return FALSE;
        }
    }
    return vd_image_flush(target, error);
}

typedef struct {
    VdImage *source;
    const char *target_path;
    VdConvertOptions engine;
} ConvertJob;

static gboolean salvage_quiet;

/* --salvage: each range that could not be read, as qemu-img warns of it
 * (one line for a run of sectors, not one a sector). */
static void warn_salvaged(guint64 offset, guint64 len, const GError *error, gpointer data)
{
    if (salvage_quiet)
        return;
    /* Run as qemu-img: its lines, one a sector, in its words. */
    if (voice_is_qemu()) {
        for (guint64 pos = offset; pos < offset + len; pos += 512 - pos % 512)
            cli_error("warning: error while reading offset %" G_GUINT64_FORMAT
                      ": Input/output error",
                      pos);
        return;
    }
    cli_error("warning: error while reading offset %" G_GUINT64_FORMAT ": %s (%" G_GUINT64_FORMAT
              " bytes copied as zeroes)",
              offset, error != NULL ? error->message : "read failed", len);
}

/* --salvage: a sector whose block status could not be read (it is read
 * as data). */
static void warn_status_salvaged(guint64 offset, const GError *error, gpointer data)
{
    if (salvage_quiet)
        return;
    if (voice_is_qemu()) {
        /* qemu-img gives the errno's text alone: the end of vdisk's. */
        const char *why = g_strrstr(error->message, ": ");
        cli_error("warning: error while reading block status at offset %" G_GUINT64_FORMAT ": %s",
                  offset, why != NULL ? why + 2 : error->message);
        return;
    }
    cli_error("warning: error while reading block status at offset %" G_GUINT64_FORMAT
              ": %s (read as data)",
              offset, error->message);
}

static gboolean convert_job(gpointer data, gpointer progress, GCancellable *cancellable,
                            GError **error)
{
    ConvertJob *job = data;

    job->engine.progress = progress_report;
    job->engine.progress_data = progress;
    job->engine.cancellable = cancellable;
    /* Where the data lies, for a time left that counts holes as the fast
     * work they are; without it the bar still shows bytes. */
    g_autofree VdImage **sources = g_new(VdImage *, job->engine.n_more_sources + 1);
    sources[0] = job->source;
    for (guint i = 0; i < job->engine.n_more_sources; i++)
        sources[i + 1] = job->engine.more_sources[i];
    if (!progress_scan_sources(progress, sources, job->engine.n_more_sources + 1,
                               job->engine.backing_file != NULL, job->engine.min_sparse == 0,
                               cancellable, NULL) &&
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
    out->salvage = opts->salvage;
    out->salvaged = warn_salvaged;
    out->status_salvaged = warn_status_salvaged;
    out->rate_limit = opts->rate_limit;
}

/* The --image-opts of the image below qemu's compress filter when text
 * puts one over the target ("driver=compress,file.driver=qcow2,
 * file.file.filename=t.qcow2" -> "driver=qcow2,file.filename=t.qcow2"),
 * else NULL. */
static char *compress_filter_below(const char *text)
{
    g_autoptr(VdOptions) opts = vd_options_new();
    if (!vd_options_parse(opts, text, NULL) ||
        g_strcmp0(vd_options_get(opts, "driver"), "compress") != 0)
        return NULL;
    g_autoptr(GString) out = g_string_new(NULL);
    g_autoptr(GPtrArray) keys = vd_options_keys(opts);
    for (guint i = 0; i < keys->len; i++) {
        const char *key = keys->pdata[i];
        if (!g_str_has_prefix(key, "file."))
            continue;
        g_string_append_printf(out, "%s%s=", out->len > 0 ? "," : "", key + strlen("file."));
        for (const char *c = vd_options_get(opts, key); *c != '\0'; c++)
            g_string_append(out, *c == ',' ? ",," : (char[]){ *c, '\0' });
    }
    return g_string_free(g_steal_pointer(&out), FALSE);
}

static int run_convert(const CliCommand *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "threads", required_argument, NULL, OPT_THREADS },
        { "force-share", no_argument, NULL, 'U' },
        { "target-is-zero", no_argument, NULL, OPT_TARGET_IS_ZERO },
        { "no-copy-offload", no_argument, NULL, OPT_NO_COPY_OFFLOAD },
        { "salvage", no_argument, NULL, OPT_SALVAGE },
        { "bitmaps", no_argument, NULL, OPT_BITMAPS },
        { "skip-broken-bitmaps", no_argument, NULL, OPT_SKIP_BROKEN_BITMAPS },
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
    int first = cli_parse_options(cmd, argc, argv, "f:O:o:cpqnWB:F:S:l:m:t:T:UCr:", longopts,
                                  &common, convert_option, &opts);

    if (first < 0)
        return CLI_EXIT_FAILURE;
    if (create.help)
        return cli_print_create_options(opts.target_format != NULL ? opts.target_format : "raw",
                                        first < argc ? argv[argc - 1] : NULL);
    if (!cli_check_operands(cmd, argc - first, 2, G_MAXINT))
        return CLI_EXIT_FAILURE;
    int n_sources = argc - first - 1;
    job.target_path = argv[argc - 1];
    if (n_sources > 1 && opts.snapshot != NULL) {
        cli_error("No support for concatenating multiple snapshot");
        return CLI_EXIT_FAILURE;
    }
    if (n_sources > 1 && opts.backing_file != NULL) {
        cli_error("Having a backing file for the target makes no sense when concatenating "
                  "multiple input images");
        return CLI_EXIT_FAILURE;
    }
    if (opts.skip_broken && !opts.bitmaps) {
        cli_error("Use of --skip-broken-bitmaps requires --bitmaps");
        return CLI_EXIT_FAILURE;
    }
    g_autofree char *target_file = NULL, *target_driver = NULL, *below = NULL;
    g_autoptr(VdOptions) target_open = NULL;
    if (cli_target_image_opts()) {
        if (!opts.target_exists) {
            cli_error("convert: --target-image-opts needs -n (an existing target)");
            return CLI_EXIT_FAILURE;
        }
        /* qemu's compress filter over the target: every write compressed,
         * which is -c into the image below it. */
        below = compress_filter_below(job.target_path);
        if (below != NULL) {
            job.target_path = below;
            opts.compress = TRUE;
        }
        if (!cli_split_image_opts(job.target_path, &target_file, &target_driver, &target_open,
                                  &error))
            return cli_fail(error);
        job.target_path = target_file;
        if (opts.target_format == NULL)
            opts.target_format = target_driver;
    }
    if (opts.target_is_zero && !opts.target_exists) {
        cli_error("--target-is-zero requires use of -n flag");
        return CLI_EXIT_FAILURE;
    }
    /* -n with -B copies what the source holds above BACKING into the
     * existing target, whose own backing file stays as it is. */
    if (opts.target_exists && create.texts != NULL) {
        cli_error("-o has no effect when skipping image creation");
        return CLI_EXIT_FAILURE;
    }
    if (opts.target_is_zero && opts.backing_file != NULL) {
        cli_error("Cannot use --target-is-zero when the destination image has a backing file");
        return CLI_EXIT_FAILURE;
    }

    create_options = cli_create_options_parse(&create, &error);
    if (create_options == NULL)
        return cli_fail(error);
    /* qemu-img takes -o backing_file= as -B (and before it): the target
     * gets that backing file and only what differs from it is copied. */
    const char *backing_option = vd_options_get(create_options, "backing_file");
    if (backing_option != NULL) {
        opts.backing_file = backing_option;
        if (n_sources > 1) {
            cli_error("Having a backing file for the target makes no sense when concatenating "
                      "multiple input images");
            return CLI_EXIT_FAILURE;
        }
    }
    target_format = choose_target_format(&opts, job.target_path, common.quiet, &error);
    if (target_format == NULL)
        return cli_fail(error);
    if (!cli_check_format(target_format))
        return CLI_EXIT_FAILURE;
    /* -F, or -o backing_fmt= as qemu-img takes it too */
    backing_format = opts.backing_format != NULL ? opts.backing_format
                                                 : vd_options_get(create_options, "backing_fmt");
    if (opts.backing_file != NULL && backing_format == NULL && !opts.target_exists) {
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
    g_autoptr(GPtrArray) more = g_ptr_array_new_with_free_func((GDestroyNotify)vd_image_unref);
    for (int i = 1; i < n_sources; i++) {
        VdImage *img =
            cli_open_at_snapshot(argv[first + i], common.format, NULL, CLI_PROBE_SOURCE, &error);
        if (img == NULL)
            return cli_fail(error);
        g_ptr_array_add(more, img);
    }
    engine_options(&opts, target_format, backing_format, create_options, &job.engine);
    job.engine.more_sources = (VdImage **)more->pdata;
    job.engine.n_more_sources = more->len;
    salvage_quiet = common.quiet;
    if (opts.bitmaps && !bitmaps_check(source, target_format, opts.skip_broken, &error))
        return cli_fail(error);
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
    if (opts.bitmaps && !copy_bitmaps(source, job.target_path, target_format, target_open,
                                      opts.skip_broken, &error))
        return cli_fail(error);
    return EXIT_SUCCESS;
}

const CliCommand cli_cmd_convert = {
    .name = "convert",
    .summary = "copy an image into a new one, changing format, compression or backing",
    .usage = "  vdisk convert [-f FMT] [-O FMT] [-o OPTIONS] [-c] [-p] [-q] [-n "
             "[--target-is-zero]] [-W]\n"
             "                [-B BACKING [-F BACKING_FMT]] [-S SIZE] [-m N] [-t CACHE]\n"
             "                [-T SRC_CACHE] [-U] [-l snapshot.name=NAME | -l NAME] [-r RATE]\n"
             "                [--salvage] [--bitmaps [--skip-broken-bitmaps]]\n"
             "                SOURCE [SOURCE2...] TARGET",
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
            "                         differs from it (with -n: copy only what SOURCE\n"
            "                         holds above BACKING into the existing TARGET)\n"
            "  -F BACKING_FMT         format of BACKING (probed when not given)\n"
            "  -S SIZE                zero runs at least SIZE long stay holes (default\n"
            "                         4K; 0 writes every byte)\n"
            "  -l snapshot.name=NAME  convert the content of an internal snapshot\n"
            "  -l snapshot.id=ID, -l NAME   the same (qemu-img 7.2 has no -s, nor has vdisk)\n"
            "  -m N, --threads N      copy with N worker threads\n"
            "  -W                     allow out-of-order writes to the target\n"
            "  -r RATE                copy at most RATE bytes of data a second (K, M, G...\n"
            "                         suffixes); holes and zero runs do not count\n"
            "  --salvage              copy what cannot be read as zeroes, with a warning\n"
            "                         for each range, instead of failing\n"
            "  --bitmaps              also copy the persistent dirty bitmaps of a qcow2\n"
            "                         SOURCE into the qcow2 TARGET\n"
            "  --skip-broken-bitmaps  with --bitmaps: leave out inconsistent bitmaps\n"
            "                         instead of failing\n"
            "  SOURCE SOURCE2...      several sources: TARGET holds them one after the\n"
            "                         other, as large as all of them\n"
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
        "  vdisk convert -O raw part1.raw part2.qcow2 whole.raw   # one after the other\n"
        "  vdisk convert --object secret,id=s0,file=pw -O qcow2 \\\n"
        "      -o encrypt.format=luks,encrypt.key-secret=s0 plain.raw secret.qcow2\n"
        "  vdisk convert --object secret,id=s0,file=pw --image-opts \\\n"
        "      driver=qcow2,encrypt.key-secret=s0,file.filename=secret.qcow2 -O raw plain.raw\n",
    .run = run_convert,
};
