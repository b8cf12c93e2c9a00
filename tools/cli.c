/* vdisk: helpers shared by the subcommands (see cli.h). */
#include "cli.h"
#include "progress.h"
#include "voice.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

void cli_print_command_help(const CliCommand *cmd, FILE *stream)
{
    fprintf(stream, "%s\n\nUsage:\n%s\n", cmd->summary, cmd->usage);
    if (cmd->help != NULL)
        fprintf(stream, "\nOptions:\n%s", cmd->help);
    fprintf(stream, "  -h, --help             show this help\n");
    if (cmd->examples != NULL)
        fprintf(stream, "\nExamples:\n%s", cmd->examples);
}

void cli_error(const char *format, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, format);
    msg = g_strdup_vprintf(format, ap);
    va_end(ap);
    g_autofree char *text = voice_error_text(msg);
    fprintf(stderr, "%s: %s%s", voice_program(), text, voice_line_end(text));
}

void cli_advise(const char *format, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    if (voice_is_qemu())
        return;
    va_start(ap, format);
    msg = g_strdup_vprintf(format, ap);
    va_end(ap);
    fprintf(stderr, "vdisk: warning: %s\n", msg);
}

void cli_note(gboolean quiet, const char *format, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    if (quiet || voice_is_qemu())
        return;
    va_start(ap, format);
    msg = g_strdup_vprintf(format, ap);
    va_end(ap);
    fprintf(stderr, "vdisk: note: %s\n", msg);
}

/* The library's g_warning and g_message (a damaged table it read past, a
 * setting it ignored) reach the user as vdisk's own warnings, not as GLib's
 * "(process:PID): vdisk-WARNING **: time: ..." lines. */
static void log_to_user(const gchar *domain, GLogLevelFlags level, const gchar *message,
                        gpointer data)
{
    if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL)) {
        g_log_default_handler(domain, level, message, data);
        return;
    }
    if (level & G_LOG_LEVEL_DEBUG) {
        g_log_default_handler(domain, level, message, data); /* G_MESSAGES_DEBUG decides */
        return;
    }
    /* The drivers put the file's name before an error that names it
     * already: say it once. */
    const char *colon = strstr(message, ": ");
    if (colon != NULL) {
        gsize head = (gsize)(colon - message) + 2;
        if (strncmp(message, colon + 2, head) == 0)
            message = colon + 2;
    }
    fprintf(stderr, "%s: %s%s\n", voice_program(), (level & G_LOG_LEVEL_WARNING) ? "warning: " : "",
            message);
}

void cli_install_log_handler(void) { g_log_set_default_handler(log_to_user, NULL); }

/* The command running, for the hints (cli_parse_options sets it). */
static const char *current_command;

/* A next step for the errors where the message alone leaves the user
 * guessing; NULL when the message says it all. */
static const char *error_hint(const GError *error)
{
    if (g_error_matches(error, VD_ERROR, VD_ERROR_BUSY))
        return "stop the virtual machine or program using the image; commands that only read "
               "can read it as it is now with -U (--force-share)";
    /* Not when check itself failed: it cannot open the image either, and
     * sending the user back to it helps no one. */
    if (g_error_matches(error, VD_ERROR, VD_ERROR_CORRUPT) &&
        g_strcmp0(current_command, "check") != 0)
        return "'vdisk check' tells more; 'vdisk check -r all' may repair it";
    return NULL;
}

/* The file the command's errors are about (cli_error_file). */
static const char *error_file;

void cli_error_file(const char *path) { error_file = path; }

int cli_fail(const GError *error)
{
    const char *hint;

    if (error == NULL) {
        cli_error("unknown error");
        return CLI_EXIT_FAILURE;
    }
    if (g_error_matches(error, VD_ERROR, VD_ERROR_CANCELLED) ||
        g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
        cli_error("cancelled");
        return CLI_EXIT_FAILURE;
    }
    g_autofree char *own = error_file != NULL ? g_strdup_printf("%s: ", error_file) : NULL;
    if (own != NULL && !g_str_has_prefix(error->message, own))
        cli_error("%s%s", own, error->message);
    else
        cli_error("%s", error->message);
    hint = voice_is_qemu() ? NULL : error_hint(error);
    if (hint != NULL)
        fprintf(stderr, "vdisk: hint: %s\n", hint);
    return CLI_EXIT_FAILURE;
}

/* getopt_long needs one array; append --help to the command's options. */
static struct option *merge_long_options(const struct option *longopts)
{
    static const struct option shared[] = {
        { "help", no_argument, NULL, CLI_OPT_HELP },
        { "disk", required_argument, NULL, CLI_OPT_DISK },
        { "backing", required_argument, NULL, CLI_OPT_BACKING },
        { "object", required_argument, NULL, CLI_OPT_OBJECT },
        { "image-opts", no_argument, NULL, CLI_OPT_IMAGE_OPTS },
        { "target-image-opts", no_argument, NULL, CLI_OPT_TARGET_IMAGE_OPTS },
        { "passphrase-file", required_argument, NULL, CLI_OPT_PASSPHRASE_FILE },
    };
    gsize n = 0;
    struct option *all;

    while (longopts != NULL && longopts[n].name != NULL)
        n++;
    all = g_new0(struct option, n + G_N_ELEMENTS(shared) + 1);
    if (n > 0)
        memcpy(all, longopts, n * sizeof(*all));
    memcpy(all + n, shared, sizeof shared);
    return all;
}

static gboolean parse_output(const char *arg, CliOutput *out, GError **error)
{
    if (g_str_equal(arg, "human")) {
        *out = CLI_OUTPUT_HUMAN;
        return TRUE;
    }
    if (g_str_equal(arg, "json")) {
        *out = CLI_OUTPUT_JSON;
        return TRUE;
    }
    g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                "--output must be 'human' or 'json', not '%s'", arg);
    return FALSE;
}

static void report_bad_option(const CliCommand *cmd, int opt, char **argv)
{
    const char *word = argv[optind - 1];

    if (opt == ':')
        cli_error("option '%s' needs a value", word);
    else if (optopt != 0 && !g_str_has_prefix(word, "--"))
        cli_error("unknown option '-%c'", optopt);
    else
        cli_error("unknown option '%s'", word);
    voice_try_help(cmd->name);
}

/* --disk N of the command line, 0-based; -1 when not given. Global because
 * it is one per process and every way of opening an image honours it. */
static int appliance_disk = -1;
/* --backing FILE: the parent of the first image the command opens. */
static const char *source_backing;

static gboolean force_share;

void cli_force_share(void) { force_share = TRUE; }

void cli_appliance_disk_default(int index)
{
    if (appliance_disk < 0)
        appliance_disk = index;
}

int cli_parse_options(const CliCommand *cmd, int argc, char **argv, const char *shortopts,
                      const struct option *longopts, CliCommon *common, CliOptionFunc func,
                      gpointer data)
{
    /* ':' first: report a missing value apart from an unknown option. */
    g_autofree char *shorts = g_strconcat(":", shortopts, "h", NULL);
    g_autofree struct option *longs = merge_long_options(longopts);
    int opt;

    current_command = cmd->name;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, shorts, longs, NULL)) != -1) {
        g_autoptr(GError) error = NULL;
        gboolean ok = TRUE;

        switch (opt) {
        case 'h':
        case CLI_OPT_HELP:
            cli_print_command_help(cmd, stdout);
            exit(EXIT_SUCCESS);
        case ':':
        case '?':
            report_bad_option(cmd, opt, argv);
            return -1;
        case 'f':
            common->format = optarg;
            break;
        case 'q':
            common->quiet = TRUE;
            break;
        case CLI_OPT_OUTPUT:
            ok = parse_output(optarg, &common->output, &error);
            break;
        case CLI_OPT_BACKING:
            source_backing = optarg;
            break;
        case CLI_OPT_DISK: {
            guint disk = 0;
            ok = cli_parse_uint("disk number", optarg, G_MAXINT, &disk, &error);
            appliance_disk = (int)disk - 1;
            break;
        }
        case CLI_OPT_OBJECT:
        case CLI_OPT_IMAGE_OPTS:
        case CLI_OPT_TARGET_IMAGE_OPTS:
        case CLI_OPT_PASSPHRASE_FILE:
            ok = cli_secrets_option(opt, optarg, &error);
            break;
        default:
            ok = func != NULL && func(opt, optarg, data, &error);
            if (!ok && error == NULL) {
                report_bad_option(cmd, '?', argv);
                return -1;
            }
            break;
        }
        if (!ok) {
            cli_error("%s", error->message);
            return -1;
        }
    }
    return optind;
}

gboolean cli_check_operands(const CliCommand *cmd, int count, int min, int max)
{
    if (count >= min && count <= max)
        return TRUE;
    if (count < min)
        cli_error("%s: missing %s", cmd->name, count == 0 ? "file name" : "operand");
    else
        cli_error("%s: too many operands", cmd->name);
    if (!voice_is_qemu())
        fprintf(stderr, "Usage:\n%s\n", cmd->usage);
    voice_try_help(cmd->name);
    return FALSE;
}

/* A source no format claimed: a disk, or what the user should do with it. */
static gboolean check_probed_source(const char *path, GError **error)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "%s: %s", path, g_strerror(err));
        return FALSE;
    }
    VdRawKind kind = VD_RAW_DISK;
    g_autoptr(GError) local = NULL;
    gboolean ok = vd_raw_check_fd(fd, path, &kind, &local);
    close(fd);
    if (ok)
        return TRUE;
    if (kind == VD_RAW_DISK) { /* it could not be read */
        g_propagate_error(error, g_steal_pointer(&local));
        return FALSE;
    }
    gboolean vm = kind == VD_RAW_VBOX_SETTINGS || kind == VD_RAW_OVF || kind == VD_RAW_VMX;
    g_set_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT,
                "%s; %sgive -f raw to copy it as a raw disk anyway", local->message,
                vm ? "import the VM with 'vdisk import-vm', or " : "");
    return FALSE;
}

const char *cli_probe_format(const char *path, const char *explicit_format, CliProbeWarning warn,
                             GError **error)
{
    gboolean fell_back = FALSE;
    const char *format;

    if (explicit_format != NULL)
        return explicit_format;
    format = vd_probe_file(path, &fell_back, error);
    if (format != NULL && fell_back && warn == CLI_PROBE_WARN)
        voice_warn_probed_raw(path);
    /* A Ceph RBD image is a disk: no file to look at for what else it is. */
    if (format != NULL && fell_back && warn == CLI_PROBE_SOURCE && !vd_rbd_is_name(path) &&
        !check_probed_source(path, error))
        return NULL;
    return format;
}

static VdImage *open_image(const char *path, const char *format, VdOpenFlags flags,
                           CliProbeWarning warn, GError **error);

/* qemu-img's "Could not open 'PATH': ..." (the words scripts look for) in
 * front of vdisk's reason, in place of the bare "PATH: " the library's
 * messages start with. */
static void prefix_could_not_open(const char *path, GError *error)
{
    if (error == NULL || g_error_matches(error, VD_ERROR, VD_ERROR_CANCELLED) ||
        g_str_has_prefix(error->message, "Could not open"))
        return;
    g_autofree char *own = g_strdup_printf("%s: ", path);
    const char *reason =
        g_str_has_prefix(error->message, own) ? error->message + strlen(own) : error->message;
    if (g_str_has_prefix(reason, "cannot open: "))
        reason += strlen("cannot open: ");
    g_autofree char *message = g_strdup_printf("Could not open '%s': %s", path, reason);
    g_free(error->message);
    error->message = g_steal_pointer(&message);
}

char *cli_local_path(const char *name)
{
    if (!g_str_has_prefix(name, "file:"))
        return g_strdup(name);
    /* What is left must not look like another protocol's name itself. */
    const char *rest = name + strlen("file:");
    const char *colon = strchr(rest, ':'), *slash = strchr(rest, '/');
    if (colon != NULL && (slash == NULL || colon < slash))
        return g_strconcat("./", rest, NULL);
    return g_strdup(rest);
}

VdImage *cli_open_image(const char *path, const char *format, VdOpenFlags flags,
                        CliProbeWarning warn, GError **error)
{
    g_autoptr(GError) local = NULL;
    g_autofree char *file = cli_image_opts() ? g_strdup(path) : cli_local_path(path);
    path = file;

    if (format != NULL && !cli_image_opts() && !vd_format_known(format)) {
        g_autofree char *known = g_strjoinv(", ", (char **)vd_formats());
        g_set_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT,
                    "Could not open '%s': Unknown file format '%s' (formats this build knows: "
                    "%s)",
                    path, format, known);
        return NULL;
    }
    VdImage *img = open_image(path, format, flags, warn, &local);
    if (img == NULL) {
        prefix_could_not_open(path, local);
        g_propagate_error(error, g_steal_pointer(&local));
    }
    return img;
}

/* The snapshot -l names: its name, or its id (the engine looks either up;
 * with both, the name, the friendlier one). */
static char *snapshot_param(const char *param, GError **error)
{
    g_auto(GStrv) parts = g_strsplit(param, ",", -1);
    const char *name = NULL, *id = NULL;
    g_autofree char *bad = NULL;

    if (strchr(param, '=') == NULL)
        return g_strdup(param);
    for (char **p = parts; *p != NULL; p++) {
        if (g_str_has_prefix(*p, "snapshot.name="))
            name = *p + strlen("snapshot.name=");
        else if (g_str_has_prefix(*p, "snapshot.id="))
            id = *p + strlen("snapshot.id=");
        else if (bad == NULL)
            bad = g_strndup(*p, strcspn(*p, "="));
    }
    if (bad != NULL || (name == NULL && id == NULL)) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "Failed in parsing snapshot param '%s': unknown key '%s'; expected "
                    "snapshot.name=NAME, snapshot.id=ID or NAME",
                    param, bad != NULL ? bad : "");
        return NULL;
    }
    return g_strdup(name != NULL ? name : id);
}

gboolean cli_check_snapshot_param(const char *param, GError **error)
{
    g_autofree char *name = snapshot_param(param, error);
    return name != NULL;
}

gboolean cli_check_option_list(const char *text, GError **error)
{
    gsize element = 0; /* bytes of the element read so far */
    gboolean empty = FALSE;

    for (const char *c = text; *c != '\0' && !empty; c++) {
        if (*c == ',' && c[1] == ',') { /* ",," is a comma in a value */
            c++;
            element++;
        } else if (*c == ',') {
            empty = element == 0;
            element = 0;
        } else {
            element++;
        }
    }
    if (empty || element == 0) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "Invalid option list: %s", text);
        return FALSE;
    }
    return TRUE;
}

VdImage *cli_open_at_snapshot(const char *path, const char *format, const char *snapshot,
                              CliProbeWarning warn, GError **error)
{
    g_autoptr(VdImage) img = cli_open_image(path, format, 0, warn, error);
    if (img == NULL || snapshot == NULL)
        return g_steal_pointer(&img);
    g_autofree char *name = snapshot_param(snapshot, error);
    if (name == NULL)
        return NULL;
    if (!vd_image_load_snapshot(img, name, error)) {
        g_prefix_error(error, "Failed to load snapshot '%s': ", name);
        return NULL;
    }
    return g_steal_pointer(&img);
}

/* An image that is no file (null-co) named by its open options: text
 * (the options) when its driver is such a one, else NULL and *img NULL
 * with no error. name is what messages call it. */
static gboolean open_fileless(const char *text, const char *name, VdOpenFlags flags, VdImage **img,
                              GError **error)
{
    g_autoptr(VdOptions) all = vd_options_new();
    *img = NULL;
    if (!vd_options_parse(all, text, NULL) || !vd_format_is_fileless(vd_options_get(all, "driver")))
        return TRUE;
    g_autoptr(VdOptions) opts = vd_options_new();
    g_autoptr(GPtrArray) keys = vd_options_keys(all);
    for (guint i = 0; i < keys->len; i++)
        if (!g_str_equal(keys->pdata[i], "driver"))
            vd_options_set(opts, keys->pdata[i], vd_options_get(all, keys->pdata[i]));
    *img = vd_image_open_fileless(vd_options_get(all, "driver"), name, flags, opts, error);
    return *img != NULL;
}

/* An image named by its open options (--image-opts, a json: name). */
static VdImage *open_by_options(const char *text, const char *name, const char *format,
                                VdOpenFlags flags, CliProbeWarning warn, GError **error)
{
    g_autofree char *file = NULL, *driver = NULL;
    g_autoptr(VdOptions) opts = NULL;
    VdImage *fileless = NULL;
    if (!open_fileless(text, name, flags, &fileless, error) || fileless != NULL)
        return fileless;
    VdImage *debugged = NULL; /* blkdebug somewhere in the tree */
    if (!vd_image_open_blkdebug(text, format, flags, cli_secrets(), &debugged, error) ||
        debugged != NULL)
        return debugged;
    if (!cli_split_image_opts(text, &file, &driver, &opts, error))
        return NULL;
    const char *dfmt = cli_probe_format(file, driver != NULL ? driver : format, warn, error);
    if (dfmt == NULL)
        return NULL;
    return cli_open_image_with_keys(file, dfmt, opts, flags, error);
}

static VdImage *open_image(const char *path, const char *format, VdOpenFlags flags,
                           CliProbeWarning warn, GError **error)
{
    if (force_share)
        flags |= VD_OPEN_FORCE_SHARE;
    /* An NBD export: the open probes its format on the one connection (a
     * qemu-nbd without --persistent serves only one). */
    if (vd_nbd_is_name(path) && !cli_image_opts())
        return cli_open_image_with_keys(path, format, NULL, flags, error);
    if (cli_image_opts())
        return open_by_options(path, path, NULL, flags, warn, error);
    if (g_str_has_prefix(path, "json:")) {
        g_autofree char *text = cli_json_filename_options(path, error);
        return text != NULL ? open_by_options(text, path, format, flags, warn, error) : NULL;
    }
    if (g_str_has_prefix(path, "null-co:")) {
        /* qemu's null-co protocol, with its default options (1 GiB). */
        if (!g_str_equal(path, "null-co://")) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "The only allowed filename for this driver is 'null-co://'");
            return NULL;
        }
        if (format != NULL && !g_str_equal(format, "raw") && !g_str_equal(format, "null-co")) {
            g_set_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT,
                        "Image is not in %s format (null-co:// reads zeroes)", format);
            return NULL;
        }
        return vd_image_open_fileless("null-co", path, flags, NULL, error);
    }
    const char *fmt = cli_probe_format(path, format, warn, error);

    if (fmt == NULL)
        return NULL;
    if (g_str_equal(fmt, "ova"))
        return vd_image_open_ova(path, appliance_disk, error);
    g_autoptr(VdOptions) opts = NULL;
    if (source_backing != NULL) {
        /* Only the first image: a convert's target or compare's second
         * image keep their own parents. */
        /* The user means a path from here, not from the image's folder. */
        g_autofree char *absolute = g_canonicalize_filename(source_backing, NULL);
        opts = vd_options_new();
        vd_options_set(opts, "backing", absolute);
        source_backing = NULL;
    }
    g_autoptr(GError) local = NULL;
    VdImage *img = cli_open_image_with_keys(path, fmt, opts, flags, &local);
    gboolean vdi = g_str_equal(fmt, "vdi");
    /* A differencing VDI whose parent is not beside it: VirtualBox's
     * layout (cli-vbox.c), unless the user named the parent. */
    if (img == NULL && vdi && opts == NULL &&
        g_error_matches(local, VD_ERROR, VD_ERROR_NOT_FOUND)) {
        g_clear_error(&local);
        img = cli_vbox_open_chain(path, NULL, flags, &local);
    }
    if (img == NULL) {
        g_propagate_error(error, g_steal_pointer(&local));
        return NULL;
    }
    if (vdi && opts == NULL && (flags & VD_OPEN_NO_BACKING)) {
        VdImage *named = cli_vbox_name_parent(path, img, flags);
        if (named != NULL) {
            vd_image_unref(img);
            img = named;
        }
    }
    if (vdi && !(flags & VD_OPEN_READ_WRITE))
        cli_vbox_check_current(path);
    return img;
}

gboolean cli_parse_size(const char *what, const char *text, guint64 *out, GError **error)
{
    g_autoptr(GError) local = NULL;

    if (vd_parse_size(text, out, &local))
        return TRUE;
    /* vd_parse_size's message starts "invalid size 'TEXT':"; say once what
     * the size was for instead of repeating that clause. */
    const char *why = strstr(local->message, "': ");
    g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "invalid %s '%s'%s%s", what, text,
                why != NULL ? ": " : "", why != NULL ? why + 3 : "");
    return FALSE;
}

gboolean cli_parse_uint(const char *what, const char *text, guint max, guint *out, GError **error)
{
    guint64 value = 0;

    if (!g_ascii_string_to_unsigned(text, 10, 1, max, &value, NULL)) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "invalid %s '%s': expected a number from 1 to %u", what, text, max);
        return FALSE;
    }
    *out = (guint)value;
    return TRUE;
}

/* ----- running a job in a worker thread ----- */

typedef struct {
    CliJobFunc func;
    gpointer data;
    GCancellable *cancellable;
    GMainLoop *loop;
    gboolean ok;
    GError *error;
    guint interrupts;
} CliJob;

static gboolean job_done_idle(gpointer user_data)
{
    CliJob *job = user_data;

    g_main_loop_quit(job->loop);
    return G_SOURCE_REMOVE;
}

static gpointer job_thread(gpointer user_data)
{
    CliJob *job = user_data;

    job->ok = job->func(job->data, job->cancellable, &job->error);
    g_idle_add(job_done_idle, job);
    return NULL;
}

static gboolean job_interrupted(gpointer user_data)
{
    CliJob *job = user_data;

    /* The first Ctrl-C asks the engine to stop and clean up (it removes a
     * half-written target). A second one means the user will not wait. */
    if (++job->interrupts > 1) {
        fprintf(stderr, "\nvdisk: interrupted again, exiting without cleaning up\n");
        _exit(130);
    }
    fprintf(stderr, "\nvdisk: cancelling (press Ctrl-C again to exit at once)...\n");
    g_cancellable_cancel(job->cancellable);
    return G_SOURCE_CONTINUE;
}

gboolean cli_run_job(CliJobFunc func, gpointer data, GCancellable *cancellable, GSourceFunc tick,
                     gpointer tick_data, guint tick_ms, GError **error)
{
    CliJob job = { .func = func, .data = data, .cancellable = cancellable };
    g_autoptr(GMainLoop) loop = g_main_loop_new(NULL, FALSE);
    guint sigint, sigterm, timer = 0;
    GThread *thread;

    job.loop = loop;
    /* Signal sources deliver on the main loop, so the handler may call
     * g_cancellable_cancel, which is not async-signal-safe. */
    sigint = g_unix_signal_add(SIGINT, job_interrupted, &job);
    sigterm = g_unix_signal_add(SIGTERM, job_interrupted, &job);
    if (tick != NULL)
        timer = g_timeout_add(tick_ms, tick, tick_data);
    thread = g_thread_new("vdisk-job", job_thread, &job);
    g_main_loop_run(loop);
    g_thread_join(thread);
    g_source_remove(sigint);
    g_source_remove(sigterm);
    if (timer != 0)
        g_source_remove(timer);

    if (!job.ok) {
        if (job.error != NULL)
            g_propagate_error(error, job.error);
        else
            g_set_error(error, VD_ERROR, VD_ERROR_FAILED, "the operation failed");
        return FALSE;
    }
    g_clear_error(&job.error);
    return TRUE;
}

/* ----- -o create options ----- */

static gboolean is_help_request(const char *text)
{
    g_auto(GStrv) parts = g_strsplit(text, ",", -1);

    for (char **p = parts; *p != NULL; p++) {
        if (g_str_equal(*p, "help") || g_str_equal(*p, "?"))
            return TRUE;
    }
    return FALSE;
}

void cli_create_options_add(CliCreateOptions *co, const char *text)
{
    if (co->texts == NULL)
        co->texts = g_ptr_array_new();
    if (is_help_request(text))
        co->help = TRUE;
    g_ptr_array_add(co->texts, (gpointer)text);
}

void cli_create_options_clear(CliCreateOptions *co)
{
    g_clear_pointer(&co->texts, g_ptr_array_unref);
    co->help = FALSE;
}

VdOptions *cli_create_options_parse(const CliCreateOptions *co, GError **error)
{
    g_autoptr(VdOptions) opts = vd_options_new();

    for (guint i = 0; co->texts != NULL && i < co->texts->len; i++) {
        const char *text = g_ptr_array_index(co->texts, i);
        if (!vd_options_parse(opts, text, error)) {
            g_prefix_error(error, "invalid -o '%s': ", text);
            return NULL;
        }
    }
    return g_steal_pointer(&opts);
}

gboolean cli_check_format(const char *format)
{
    g_autofree char *list = NULL;

    if (vd_format_known(format))
        return TRUE;
    list = g_strjoinv(", ", (char **)vd_formats());
    cli_error("Unknown file format '%s'; formats this build knows: %s", format, list);
    return FALSE;
}

static int compare_option_names(gconstpointer a, gconstpointer b)
{
    const VdCreateOption *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* Adds the entries of table that show, skipping names already there. */
static void add_listed_options(GPtrArray *list, const VdCreateOption *table, gboolean file_level)
{
    for (const VdCreateOption *o = table; o != NULL && o->name != NULL; o++) {
        gboolean listed = FALSE;
        for (guint i = 0; i < list->len && !listed; i++)
            listed = g_str_equal(((const VdCreateOption *)list->pdata[i])->name, o->name);
        if (!listed && (file_level || !o->file_level))
            g_ptr_array_add(list, (gpointer)o);
    }
}

int cli_print_create_options(const char *format, const char *filename)
{
    static const char *const type_names[] = {
        [VD_OPTION_STRING] = "<str>",
        [VD_OPTION_BOOL] = "<bool (on/off)>",
        [VD_OPTION_SIZE] = "<size>",
        [VD_OPTION_NUMBER] = "<num>",
    };
    const VdCreateOption *table;
    g_autoptr(GPtrArray) sorted = g_ptr_array_new();

    if (!cli_check_format(format))
        return CLI_EXIT_FAILURE;
    /* qemu-img's list: by name, each with its type and description; with a
     * file name it is one list with the file's own options. */
    table = vd_format_create_option_table(format);
    add_listed_options(sorted, table, filename != NULL);
    if (filename != NULL)
        add_listed_options(sorted, vd_file_create_option_table(), TRUE);
    g_ptr_array_sort(sorted, compare_option_names);
    if (filename != NULL)
        printf("Supported options:\n");
    else
        printf("Supported %s options:\n", format);
    for (guint i = 0; i < sorted->len; i++) {
        const VdCreateOption *o = sorted->pdata[i];
        g_autofree char *name = g_strdup_printf("%s=%s", o->name, type_names[o->type]);
        printf("  %-22s - %s\n", name, o->help);
    }
    if (filename == NULL)
        printf("\nThe protocol level may support further options.\n"
               "Specify the target filename to include those options.\n");
    return EXIT_SUCCESS;
}

/* ----- backing files ----- */

const char *cli_guess_backing_format(const char *image_path, const char *backing, gboolean quiet,
                                     GError **error)
{
    g_autofree char *resolved = vd_resolve_relative(image_path, backing);
    const char *format = cli_probe_format(resolved, NULL, CLI_PROBE_QUIET, error);

    if (format == NULL) {
        g_prefix_error(error, "could not open backing file '%s': ", resolved);
        return NULL;
    }
    /* qemu-img 7.2 refuses a backing file without its format, each
     * command in its words; run as qemu-img, vdisk does the same. */
    if (voice_is_qemu()) {
        if (g_strcmp0(current_command, "create") == 0)
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "Backing file specified without backing format\nDetected format of %s.",
                        format);
        else if (g_strcmp0(current_command, "rebase") == 0)
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "Could not change the backing file to '%s': backing format must be "
                        "specified",
                        backing);
        else
            g_set_error_literal(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                                "Use of backing file requires explicit backing format");
        return NULL;
    }
    cli_note(quiet, "no backing format given (-F); '%s' looks like %s, recording that", backing,
             format);
    return format;
}

typedef struct {
    CliProgressJobFunc func;
    gpointer data;
    Progress *progress;
} ProgressJob;

static gboolean progress_job(gpointer data, GCancellable *cancellable, GError **error)
{
    ProgressJob *job = data;
    return job->func(job->data, job->progress, cancellable, error);
}

gboolean cli_run_with_progress(const char *label, gboolean requested, gboolean quiet,
                               CliProgressJobFunc func, gpointer data, GError **error)
{
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    g_autoptr(Progress) progress =
        progress_new(progress_choose_mode(stdout, requested, quiet), stdout, label);
    ProgressJob job = { func, data, progress };
    progress_tick(progress);
    gboolean ok = cli_run_job(progress_job, &job, cancellable, progress_tick, progress, 100, error);
    progress_finish(progress, ok);
    return ok;
}

/* qemu's cache modes and what each means for vdisk. vdisk's engine keeps
 * its buffers in ordinary memory and writes small metadata updates, so it
 * never opens O_DIRECT: "none" behaves as writeback and "directsync" as
 * writethrough, which gives the same guarantee on stable storage. */
static const struct {
    const char *name;
    VdOpenFlags flags;
} cache_modes[] = {
    { "writeback", 0 },
    { "none", 0 },
    { "writethrough", VD_OPEN_WRITETHROUGH },
    { "directsync", VD_OPEN_WRITETHROUGH },
    { "unsafe", VD_OPEN_NO_FLUSH },
};

static gboolean find_cache_mode(const char *arg, VdOpenFlags *flags)
{
    for (gsize i = 0; i < G_N_ELEMENTS(cache_modes); i++) {
        if (g_str_equal(arg, cache_modes[i].name)) {
            *flags = cache_modes[i].flags;
            return TRUE;
        }
    }
    return FALSE;
}

static gboolean parse_cache_mode(const char *arg, VdOpenFlags *flags, const char *which,
                                 GError **error)
{
    if (find_cache_mode(arg, flags))
        return TRUE;
    g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                "Invalid %scache option: %s (known: writeback, none, writethrough, directsync, "
                "unsafe)",
                which, arg);
    return FALSE;
}

gboolean cli_parse_cache_mode(const char *arg, VdOpenFlags *flags, GError **error)
{
    return parse_cache_mode(arg, flags, "", error);
}

gboolean cli_parse_source_cache_mode(const char *arg, VdOpenFlags *flags, GError **error)
{
    VdOpenFlags ignored;
    return parse_cache_mode(arg, flags != NULL ? flags : &ignored, "source ", error);
}
