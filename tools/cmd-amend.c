/* vdisk amend: change options of an existing image as qemu-img amend does:
 * a qcow2's version, lazy refcounts, refcount width, data file name and
 * size, and the LUKS key slots (passphrases) of encrypted qcow2 and luks
 * images. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "progress.h"
#include "voice.h"

enum { OPT_FORCE = CLI_OPT_FIRST_PRIVATE };

typedef struct {
    CliCreateOptions *create; /* -o */
    VdOpenFlags cache;        /* -t */
    gboolean progress;        /* -p */
    gboolean force;           /* --force */
} AmendOptions;

static gboolean amend_option(int opt, const char *arg, gpointer data, GError **error)
{
    AmendOptions *amend = data;

    switch (opt) {
    case 'o':
        cli_create_options_add(amend->create, arg);
        return TRUE;
    case 't':
        return cli_parse_cache_mode(arg, &amend->cache, error);
    case 'p':
        amend->progress = TRUE;
        return TRUE;
    case OPT_FORCE:
        amend->force = TRUE;
        return TRUE;
    case 'U':
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "-U (--force-share) is for commands that only read; amending writes the image");
        return FALSE;
    default:
        return FALSE;
    }
}

/* Without --image-opts, the old secret (or --passphrase-file) unlocks. */
static VdImage *open_for_amend(const char *operand, const char *format, VdOptions *opts,
                               VdOpenFlags cache, GError **error)
{
    if (cli_image_opts())
        return cli_open_image(operand, format, VD_OPEN_READ_WRITE | cache, CLI_PROBE_WARN, error);
    const char *fmt = cli_probe_format(operand, format, CLI_PROBE_WARN, error);
    if (fmt == NULL)
        return NULL;
    g_autoptr(VdOptions) open_opts = vd_options_new();
    const char *old = vd_options_get(opts, "encrypt.old-secret");
    if (old == NULL)
        old = vd_options_get(opts, "old-secret");
    if (old != NULL)
        vd_options_set(open_opts, g_str_equal(fmt, "luks") ? "key-secret" : "encrypt.key-secret",
                       old);
    return cli_open_image_with_keys(operand, fmt, open_opts, VD_OPEN_READ_WRITE | cache, error);
}

/* amend -o help: what qemu-img amend -o help lists, in its words. */
static int print_amend_options(const char *format)
{
    static const char qcow2[] =
        "  backing_file=<str>     - File name of a base image\n"
        "  backing_fmt=<str>      - Image format of the base image\n"
        "  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])\n"
        "  data_file=<str>        - File name of an external data file\n"
        "  data_file_raw=<bool (on/off)> - The external data file must stay valid as a raw "
        "image\n"
        "  encrypt.iter-time=<num> - Time to spend in PBKDF in milliseconds\n"
        "  encrypt.keyslot=<num>  - Select a single keyslot to modify explicitly\n"
        "  encrypt.new-secret=<str> - New secret to set in the matching keyslots. Empty "
        "string to erase\n"
        "  encrypt.old-secret=<str> - Select all keyslots that match this password\n"
        "  encrypt.state=<str>    - Select new state of affected keyslots (active/inactive)\n"
        "  lazy_refcounts=<bool (on/off)> - Postpone refcount updates\n"
        "  refcount_bits=<num>    - Width of a reference count entry in bits\n"
        "  size=<size>            - Virtual disk size\n";
    static const char luks[] =
        "  iter-time=<num>        - Time to spend in PBKDF in milliseconds\n"
        "  keyslot=<num>          - Select a single keyslot to modify explicitly\n"
        "  new-secret=<str>       - New secret to set in the matching keyslots. Empty string "
        "to erase\n"
        "  old-secret=<str>       - Select all keyslots that match this password\n"
        "  state=<str>            - Select new state of affected keyslots (active/inactive)\n";
    const char *list = g_str_equal(format, "qcow2")  ? qcow2
                       : g_str_equal(format, "luks") ? luks
                                                     : NULL;
    if (list == NULL) {
        cli_error("Format driver '%s' does not support option amendment", format);
        return CLI_EXIT_FAILURE;
    }
    printf("Amend options for '%s':\n%s", format, list);
    return EXIT_SUCCESS;
}

typedef struct {
    VdImage *img;
    VdOptions *opts;
    gboolean force;
} AmendJob;

static gboolean amend_job(gpointer data, gpointer progress, GCancellable *cancellable,
                          GError **error)
{
    AmendJob *job = data;
    if (progress != NULL)
        progress_report(0, 1, progress);
    if (!vd_image_amend_progress(job->img, job->opts, cli_secrets(), job->force,
                                 progress != NULL ? progress_report : NULL, progress, error) ||
        !vd_image_flush(job->img, error))
        return FALSE;
    if (progress != NULL)
        progress_report(1, 1, progress);
    return TRUE;
}

static int run_amend(const CliCommand *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "force-share", no_argument, NULL, 'U' },
        { "force", no_argument, NULL, OPT_FORCE },
        { NULL, 0, NULL, 0 },
    };
    CliCommon common = { 0 };
    g_auto(CliCreateOptions) create = { 0 };
    AmendOptions amend = { .create = &create };
    g_autoptr(GError) error = NULL;
    g_autoptr(VdOptions) opts = NULL;
    g_autoptr(VdImage) img = NULL;
    int first =
        cli_parse_options(cmd, argc, argv, "f:o:pqt:U", longopts, &common, amend_option, &amend);

    if (first < 0)
        return CLI_EXIT_FAILURE;
    if (create.help) {
        /* The format named, else the file's. */
        const char *fmt = common.format;
        if (fmt == NULL && first < argc)
            fmt = cli_probe_format(argv[first], NULL, CLI_PROBE_QUIET, &error);
        if (fmt == NULL && error != NULL)
            return cli_fail(error);
        if (fmt == NULL) {
            cli_error("amend -o help: name the format with -f, or the image");
            return CLI_EXIT_FAILURE;
        }
        return print_amend_options(fmt);
    }
    if (!cli_check_operands(cmd, argc - first, 1, 1))
        return CLI_EXIT_FAILURE;
    if (create.texts == NULL) {
        cli_error("amend: give the options to change with -o");
        return CLI_EXIT_FAILURE;
    }
    opts = cli_create_options_parse(&create, &error);
    if (opts == NULL)
        return cli_fail(error);
    img = open_for_amend(argv[first], common.format, opts, amend.cache, &error);
    if (img == NULL)
        return cli_fail(error);
    /* Progress only when asked for, as qemu-img: amend is mostly quick. */
    AmendJob job = { img, opts, amend.force };
    gboolean ok = amend.progress ? cli_run_with_progress("Amending", TRUE, common.quiet, amend_job,
                                                         &job, &error)
                                 : amend_job(&job, NULL, NULL, &error);
    if (!ok && !voice_is_qemu() && strstr(error->message, "'qemu-img rebase'") != NULL) {
        g_autoptr(GString) text = g_string_new(error->message);
        g_string_replace(text, "'qemu-img rebase'", "'vdisk rebase'", 0);
        g_free(error->message);
        error->message = g_string_free(g_steal_pointer(&text), FALSE);
    }
    if (!ok)
        return cli_fail(error);
    return EXIT_SUCCESS;
}

const CliCommand cli_cmd_amend = {
    .name = "amend",
    .summary = "change options of an existing image (qcow2 version, refcounts, passphrases)",
    .usage = "  vdisk amend [--object secret,id=ID,file=PATH]... [--image-opts] [-f FMT]\n"
             "              [-t CACHE] [-p] [-q] [--force] -o OPTIONS FILE",
    .help = "  -f FMT                 format of FILE (probed when not given)\n"
            "  -o OPTIONS             what to change, for qcow2:\n"
            "       compat=0.10|1.1    the version; a downgrade turns zero clusters into\n"
            "                         what version 2 can say (refused with a data file,\n"
            "                         extended L2 entries or bitmaps)\n"
            "       lazy_refcounts=on|off  refcount_bits=1..64 (rewrites the refcounts)\n"
            "       data_file=NAME     the new name of the external data file\n"
            "       data_file_raw=off  size=SIZE\n"
            "                         and the key slots (luks takes them without\n"
            "                         'encrypt.'):\n"
            "       encrypt.state=active,encrypt.new-secret=ID[,encrypt.keyslot=N]\n"
            "                         add the passphrase of secret ID (in slot N, else the\n"
            "                         first free one); encrypt.iter-time=MS sets its cost\n"
            "       encrypt.state=inactive,encrypt.keyslot=N\n"
            "       encrypt.state=inactive,encrypt.old-secret=ID\n"
            "                         remove slot N, or every slot secret ID opens (the last\n"
            "                         active slot is not removed, an active slot N not\n"
            "                         overwritten, without --force)\n"
            "  --force                allow what loses data: removing the last key slot\n"
            "                         (nothing opens the image any more), overwriting one\n"
            "  --object secret,id=ID,file=PATH   a passphrase the options name\n"
            "  --image-opts           FILE is driver=FMT,file.filename=PATH,\n"
            "                         encrypt.key-secret=ID (the current passphrase)\n"
            "  --passphrase-file FILE the current passphrase\n" CLI_HELP_CACHE
            "  -p                     show progress\n"
            "  -q                     quiet\n"
            "\n"
            "The current passphrase unlocks the image: encrypt.key-secret with\n"
            "--image-opts, else encrypt.old-secret, else --passphrase-file or a prompt.\n",
    .examples =
        "  vdisk amend -o compat=0.10 disk.qcow2               # for an old QEMU\n"
        "  vdisk amend -o refcount_bits=64 disk.qcow2\n"
        "  vdisk amend --object secret,id=old,file=pw --object secret,id=new,file=pw2 \\\n"
        "      -o encrypt.state=active,encrypt.new-secret=new,encrypt.old-secret=old disk.qcow2\n"
        "  vdisk amend --object secret,id=old,file=pw \\\n"
        "      -o encrypt.state=inactive,encrypt.old-secret=old disk.qcow2\n",
    .run = run_amend,
};
