/* vdisk create: make a new empty image, or an overlay on a backing file,
 * with qemu-img create's options. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef struct {
    CliCreateOptions *create;   /* -o */
    const char *backing_file;   /* -b */
    const char *backing_format; /* -F */
    gboolean unsafe;            /* -u: do not open the backing file */
} CreateOptions;

static gboolean create_option(int opt, const char *arg, gpointer data, GError **error)
{
    CreateOptions *opts = data;

    switch (opt) {
    case 'o':
        cli_create_options_add(opts->create, arg);
        return TRUE;
    case 'b':
        opts->backing_file = arg;
        return TRUE;
    case 'F':
        opts->backing_format = arg;
        return TRUE;
    case 'u':
        opts->unsafe = TRUE;
        return TRUE;
    default:
        return FALSE;
    }
}

/* Fill in what the backing file itself tells: its format when -F is
 * missing (qemu-img refuses; we probe and say so), and its size when no
 * size was given. */
static gboolean inspect_backing(const char *path, VdOptions *vopts, gboolean quiet,
                                gboolean need_size, guint64 *size, GError **error)
{
    const char *backing = vd_options_get(vopts, "backing_file");
    const char *format = vd_options_get(vopts, "backing_fmt");
    g_autofree char *resolved = vd_resolve_relative(path, backing);
    g_autoptr(VdImage) img = NULL;

    if (format == NULL) {
        format = cli_guess_backing_format(path, backing, quiet, error);
        if (format == NULL)
            return FALSE;
        vd_options_set(vopts, "backing_fmt", format);
    }
    /* Opened even when the size is given, as qemu-img does: a backing file
     * that cannot be read is refused before anything is made. Read as
     * qemu-img create reads it (force-share): an overlay may be made on a
     * disk in use. */
    g_autoptr(GError) local = NULL;
    img = vd_image_open(resolved, format, VD_OPEN_NO_BACKING | VD_OPEN_FORCE_SHARE, &local);
    if (img == NULL) {
        /* qemu-img's two lines; the reason without the engine's "PATH: ". */
        g_autofree char *own = g_strdup_printf("%s: ", resolved);
        const char *reason = local->message;
        if (g_str_has_prefix(reason, own))
            reason += strlen(own);
        if (g_str_has_prefix(reason, "cannot open: "))
            reason += strlen("cannot open: ");
        g_set_error(error, local->domain, local->code,
                    "%s: Could not open '%s': %s\nCould not open backing image.", path, backing,
                    reason);
        return FALSE;
    }
    if (need_size)
        *size = vd_image_size(img);
    return TRUE;
}

/* The size: the operand, or -o size=, or (with a backing file) its size. */
static gboolean choose_size(const char *path, const char *operand, VdOptions *vopts,
                            gboolean *have_size, guint64 *size, GError **error)
{
    const char *option = vd_options_get(vopts, "size");
    const char *text = operand != NULL ? operand : option;

    *have_size = text != NULL;
    if (text == NULL)
        return TRUE;
    if (option != NULL && !vd_parse_size(option, size, NULL)) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "%s: Parameter 'size' expects a non-negative number below 2^64: '%s' is not "
                    "one",
                    path, option);
        return FALSE;
    }
    if (operand != NULL && option != NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "%s: The image size must be specified only once", path);
        return FALSE;
    }
    if (!cli_parse_size("size", text, size, error))
        return FALSE;
    /* qemu's limit for every format, checked before "Formatting" is
     * printed, in qemu-img's words. */
    if (*size > G_MAXINT64) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "invalid size '%s': Invalid image size specified. Must be between 0 and "
                    "%" G_GINT64_FORMAT ".",
                    text, G_MAXINT64);
        return FALSE;
    }
    return TRUE;
}

/* qemu-img's "Formatting 'f', fmt=qcow2 cluster_size=65536 ... size=..."
 * line: the options set and the defaults qemu-img shows, in its order. */
static void print_formatting(const char *path, const char *format, guint64 size, VdOptions *vopts)
{
    g_autofree char *line = vd_format_describe_create(path, format, size, vopts);
    printf("%s\n", line);
    fflush(stdout);
}

/* As qemu-img, an option the format does not take is refused before the
 * "Formatting" line. */
static gboolean check_option_names(const char *path, const char *format, VdOptions *vopts)
{
    const char *const *names = vd_format_create_options(format);
    g_autoptr(GPtrArray) keys = vd_options_keys(vopts);

    for (guint i = 0; i < keys->len; i++) {
        const char *key = keys->pdata[i];
        if (names == NULL || !g_strv_contains(names, key)) {
            cli_error("%s: Invalid parameter '%s': %s has no such option ('vdisk create -f %s -o "
                      "help' lists them)",
                      path, key, format, format);
            return FALSE;
        }
    }
    return TRUE;
}

/* -b and -F are shorthands for -o backing_file= and -o backing_fmt=. */
static void merge_backing_options(VdOptions *vopts, const CreateOptions *opts)
{
    if (opts->backing_file != NULL)
        vd_options_set(vopts, "backing_file", opts->backing_file);
    if (opts->backing_format != NULL)
        vd_options_set(vopts, "backing_fmt", opts->backing_format);
}

/* The options without "size", which is not a format option for the engine. */
static VdOptions *without_size(VdOptions *vopts)
{
    g_autoptr(GPtrArray) keys = vd_options_keys(vopts);
    VdOptions *copy = vd_options_new();

    for (guint i = 0; i < keys->len; i++) {
        const char *key = g_ptr_array_index(keys, i);
        if (!g_str_equal(key, "size"))
            vd_options_set(copy, key, vd_options_get(vopts, key));
    }
    return copy;
}

static int run_create(const CliCommand *cmd, int argc, char **argv)
{
    CliCommon common = { 0 };
    g_auto(CliCreateOptions) create = { 0 };
    CreateOptions opts = { .create = &create };
    g_autoptr(GError) error = NULL;
    g_autoptr(VdOptions) parsed = NULL;
    g_autoptr(VdOptions) vopts = NULL;
    const char *path;
    const char *format;
    gboolean have_size = FALSE;
    guint64 size = 0;
    int first =
        cli_parse_options(cmd, argc, argv, "f:o:b:F:qu", NULL, &common, create_option, &opts);

    if (first < 0)
        return CLI_EXIT_FAILURE;
    format = common.format != NULL ? common.format : "raw";
    if (create.help)
        return cli_print_create_options(format, first < argc ? argv[first] : NULL);
    if (!cli_check_operands(cmd, argc - first, 1, 2))
        return CLI_EXIT_FAILURE;
    path = argv[first];
    /* Without -f the name's extension says, as for convert's target. */
    if (common.format == NULL &&
        (format = cli_target_format_from_name(path, "-f", common.quiet, FALSE, &error)) == NULL)
        return cli_fail(error);
    cli_error_file(path);
    /* "file:NAME" is the file NAME, as qemu reads it. */
    g_autofree char *local = cli_local_path(path);
    if (!vd_format_known(format)) {
        g_autofree char *known = g_strjoinv(", ", (char **)vd_formats());
        cli_error("%s: Unknown file format '%s'; formats this build knows: %s", path, format,
                  known);
        return CLI_EXIT_FAILURE;
    }

    parsed = cli_create_options_parse(&create, &error);
    if (parsed == NULL)
        return cli_fail(error);
    merge_backing_options(parsed, &opts);
    /* -b '' is a mistake, not "no backing file" (qemu-img's words). */
    if (g_strcmp0(vd_options_get(parsed, "backing_file"), "") == 0) {
        cli_error("%s: Expected backing file name, got empty string", path);
        return CLI_EXIT_FAILURE;
    }
    if (!choose_size(path, first + 1 < argc ? argv[first + 1] : NULL, parsed, &have_size, &size,
                     &error))
        return cli_fail(error);

    if (vd_options_get(parsed, "backing_file") != NULL && opts.unsafe &&
        vd_options_get(parsed, "backing_fmt") == NULL) {
        /* Nothing to probe: the format must be named, as qemu-img says. */
        cli_error("%s: Backing file specified without backing format: give it with -F", path);
        return CLI_EXIT_FAILURE;
    }
    if (vd_options_get(parsed, "backing_file") != NULL && !opts.unsafe) {
        if (!inspect_backing(local, parsed, common.quiet, !have_size, &size, &error))
            return cli_fail(error);
        have_size = TRUE;
    }
    if (!have_size) {
        cli_error("%s: Image creation needs a size parameter: give one (e.g. 'vdisk create -f %s "
                  "%s 20G'), or a backing file with -b to take its size",
                  path, format, path);
        return CLI_EXIT_FAILURE;
    }

    vopts = without_size(parsed);
    if (!check_option_names(path, format, vopts))
        return CLI_EXIT_FAILURE;
    if (!common.quiet)
        print_formatting(path, format, size, vopts);
    /* -u: the backing file is not opened, here nor by the library. */
    if (!cli_ensure_new_passphrase(format, vopts, &error))
        return cli_fail(error);
    if (opts.unsafe
            ? !vd_image_create_unsafe(local, format, size, vopts, cli_secrets(), &error)
            : !vd_image_create_with_secrets(local, format, size, vopts, cli_secrets(), &error))
        return cli_fail(error);
    return EXIT_SUCCESS;
}

const CliCommand cli_cmd_create = {
    .name = "create",
    .summary = "create a new image",
    .usage = "  vdisk create [-f FMT] [-o OPTIONS] [-b BACKING [-F BACKING_FMT]] [-u] [-q] FILE "
             "[SIZE]",
    .help = "  -f FMT                 format of the new image (default: raw)\n"
            "  -o OPTIONS             format options, KEY=VALUE[,KEY=VALUE...]; ',,' is a\n"
            "                         literal comma; '-o help' lists the format's options\n"
            "  -b BACKING             create an overlay on top of this backing file;\n"
            "                         a relative name is relative to FILE's directory\n"
            "  -F BACKING_FMT         format of the backing file (probed when not given)\n"
            "  -u                     do not open the backing file (SIZE is then required)\n"
            "  -q                     quiet: do not print the 'Formatting' line\n"
            "  --object secret,id=ID,file=PATH   a passphrase for encrypt.key-secret=ID\n"
            "  --passphrase-file FILE the passphrase of a new encrypted image (else a\n"
            "                         terminal prompts for it)\n"
            "\n"
            "SIZE takes the suffixes K, M, G, T, P, E (powers of 1024). Without SIZE an\n"
            "overlay gets its backing file's size.\n",
    .examples = "  vdisk create -f qcow2 disk.qcow2 20G\n"
                "  vdisk create -f qcow2 -o cluster_size=2M,lazy_refcounts=on big.qcow2 1T\n"
                "  vdisk create -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2\n"
                "  vdisk create -f qcow2 -o help\n"
                "  vdisk create -f qcow2 -o encrypt.format=luks --passphrase-file pw secret.qcow2 "
                "20G\n"
                "  vdisk create -f luks --object secret,id=s0,file=pw -o key-secret=s0 vol.luks "
                "20G\n",
    .run = run_create,
};
