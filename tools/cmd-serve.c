/* vdisk serve: serve an image over NBD, in its own format, until Ctrl-C.
 *
 * It runs nbdkit in the foreground with vdisk's nbdkit plugin (nbd/), so
 * the network side is nbdkit's: vdisk only checks the image first (so that
 * a missing file, a wrong passphrase or a VM writing the image is said in
 * vdisk's words before anything listens), prints the URI once nbdkit is
 * ready, and stops nbdkit on SIGINT or SIGTERM. nbdkit's exit closes the
 * image and drops its locks. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib-unix.h>
#include <glib/gstdio.h>

#include "cli.h"
#include "config.h"
#include "vm.h"

enum {
    OPT_PORT = CLI_OPT_FIRST_PRIVATE,
    OPT_SOCKET,
    OPT_LISTEN,
    OPT_SNAPSHOT,
    OPT_DISK,
    OPT_BACKING,
    OPT_OBJECT,
    OPT_PASSPHRASE_FILE,
};

#define DEFAULT_PORT 10809

typedef struct {
    guint port; /* 0: the default */
    const char *socket;
    const char *listen;
    const char *snapshot;
    guint disk; /* 1-based; 0: not given */
    const char *backing;
    GPtrArray *objects; /* --object specs, borrowed from argv */
    const char *passphrase_file;
    gboolean readonly;
} ServeOptions;

static gboolean serve_option(int opt, const char *arg, gpointer data, GError **error)
{
    ServeOptions *opts = data;

    switch (opt) {
    case 'r':
        opts->readonly = TRUE;
        return TRUE;
    case 'p':
    case OPT_PORT:
        return cli_parse_uint("port", arg, 65535, &opts->port, error);
    case 'k':
    case OPT_SOCKET:
        opts->socket = arg;
        return TRUE;
    case OPT_LISTEN:
        opts->listen = arg;
        return TRUE;
    case 'l':
    case OPT_SNAPSHOT:
        opts->snapshot = arg;
        return TRUE;
    case OPT_DISK:
        return cli_parse_uint("disk number", arg, G_MAXINT, &opts->disk, error);
    case OPT_BACKING:
        opts->backing = arg;
        return TRUE;
    case OPT_OBJECT:
        /* Checked (and the passphrase tried) before nbdkit starts. */
        if (!cli_secrets_option(CLI_OPT_OBJECT, arg, error))
            return FALSE;
        g_ptr_array_add(opts->objects, (gpointer)arg);
        return TRUE;
    case OPT_PASSPHRASE_FILE:
        if (!cli_secrets_option(CLI_OPT_PASSPHRASE_FILE, arg, error))
            return FALSE;
        opts->passphrase_file = arg;
        return TRUE;
    default:
        return FALSE;
    }
}

/* The plugin nbdkit loads: VDISK_NBDKIT_PLUGIN (the build tree, tests),
 * else where it was installed. NULL with error when there is none. */
static char *find_plugin(GError **error)
{
    const char *env = g_getenv("VDISK_NBDKIT_PLUGIN");
    if (env != NULL && *env != '\0')
        return g_strdup(env);
#if HAVE_NBDKIT_PLUGIN
    if (g_file_test(VDISK_NBDKIT_PLUGIN, G_FILE_TEST_EXISTS))
        return g_strdup(VDISK_NBDKIT_PLUGIN);
    g_set_error(error, VD_ERROR, VD_ERROR_NOT_FOUND,
                "vdisk's nbdkit plugin is not installed (%s is missing): install vdisk "
                "(meson install), or name the plugin with VDISK_NBDKIT_PLUGIN=PATH",
                VDISK_NBDKIT_PLUGIN);
#else
    g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                "this vdisk was built without its nbdkit plugin (nbdkit-plugin-dev was missing "
                "when it was built), so it cannot serve images over NBD");
#endif
    return NULL;
}

/* The image to serve and how the plugin opens it. */
typedef struct {
    char *path;           /* absolute */
    char *format;         /* as named by the user, or NULL: the plugin probes */
    VdOptions *open_opts; /* --image-opts' options, or NULL */
} ServeImage;

static void serve_image_clear(ServeImage *si)
{
    g_free(si->path);
    g_free(si->format);
    g_clear_pointer(&si->open_opts, vd_options_free);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(ServeImage, serve_image_clear)

/* A differencing VDI whose parents are not beside it, where VirtualBox
 * keeps them (its VM's media registry, or the folder above Snapshots/):
 * the plugin cannot look there, so each parent is named to it
 * ("backing", "backing.backing", ...). */
static VdImage *open_vbox_chain(ServeImage *si, GError **error)
{
    g_autoptr(GPtrArray) chain = vm_chain_for_vdi(si->path, error);
    if (chain == NULL)
        return NULL;
    g_autoptr(VdOptions) named = vm_chain_open_options(chain);
    if (si->open_opts == NULL)
        si->open_opts = vd_options_new();
    g_autoptr(GPtrArray) keys = vd_options_keys(named);
    for (guint i = 0; i < keys->len; i++)
        vd_options_set(si->open_opts, keys->pdata[i], vd_options_get(named, keys->pdata[i]));
    return vd_image_open_opts(si->path, "vdi", 0, si->open_opts, cli_secrets(), error);
}

/* Open the image as the plugin will, read-only, and close it again: errors
 * in vdisk's words before anything listens. *ask_passphrase is set when
 * it is encrypted, no key was given and a terminal can be asked. */
static gboolean check_image(ServeImage *si, const ServeOptions *opts, const char *fmt,
                            gboolean *ask_passphrase, GError **error)
{
    g_autoptr(VdImage) img = NULL;
    if (g_str_equal(fmt, "ova")) {
        img = vd_image_open_ova(si->path, (int)opts->disk - 1, error);
    } else if (opts->disk > 0) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "%s: --disk is for OVA appliances, and this is a %s image", si->path, fmt);
        return FALSE;
    } else {
        g_autoptr(VdOptions) o = vd_options_new();
        if (si->open_opts != NULL) {
            g_autoptr(GPtrArray) keys = vd_options_keys(si->open_opts);
            for (guint i = 0; i < keys->len; i++)
                vd_options_set(o, keys->pdata[i], vd_options_get(si->open_opts, keys->pdata[i]));
        }
        if (opts->backing != NULL) {
            g_autofree char *abs = g_canonicalize_filename(opts->backing, NULL);
            vd_options_set(o, "backing", abs);
        }
        g_autoptr(GError) local = NULL;
        img = vd_image_open_opts(si->path, fmt, 0, o, cli_secrets(), &local);
        if (img == NULL && g_str_equal(fmt, "vdi") && opts->backing == NULL &&
            g_error_matches(local, VD_ERROR, VD_ERROR_NOT_FOUND))
            img = open_vbox_chain(si, error);
        else if (img == NULL)
            g_propagate_error(error, g_steal_pointer(&local));
    }
    if (img == NULL)
        return FALSE;
    *ask_passphrase = FALSE;
    if (vd_image_needs_key(img)) {
        if (!isatty(STDIN_FILENO)) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "%s is encrypted: give its passphrase with --passphrase-file FILE",
                        si->path);
            return FALSE;
        }
        *ask_passphrase = TRUE;
    }
    if (opts->snapshot != NULL && !vd_image_load_snapshot(img, opts->snapshot, error)) {
        g_prefix_error(error, "Failed to load snapshot '%s': ", opts->snapshot);
        return FALSE;
    }
    return TRUE;
}

static char *serve_uri(const ServeOptions *opts, const char *socket_path)
{
    if (socket_path != NULL) {
        g_autofree char *escaped = g_uri_escape_string(socket_path, "/", FALSE);
        return g_strdup_printf("nbd+unix:///?socket=%s", escaped);
    }
    const char *host = opts->listen != NULL ? opts->listen : "127.0.0.1";
    guint port = opts->port != 0 ? opts->port : DEFAULT_PORT;
    if (strchr(host, ':') != NULL)
        return g_strdup_printf("nbd://[%s]:%u/", host, port);
    return g_strdup_printf("nbd://%s:%u/", host, port);
}

/* nbdkit's command line for the image. */
static GPtrArray *nbdkit_argv(const char *nbdkit, const char *plugin, const ServeImage *si,
                              const ServeOptions *opts, const char *socket_path,
                              const char *pidfile, gboolean ask_passphrase)
{
    GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(argv, g_strdup(nbdkit));
    /* In the foreground, and gone with vdisk even if vdisk is killed. */
    g_ptr_array_add(argv, g_strdup("--exit-with-parent"));
    g_ptr_array_add(argv, g_strdup("--foreground"));
    g_ptr_array_add(argv, g_strdup_printf("--pidfile=%s", pidfile));
    if (socket_path != NULL) {
        g_ptr_array_add(argv, g_strdup_printf("--unix=%s", socket_path));
    } else {
        /* Loopback unless the user names another address. */
        g_ptr_array_add(argv, g_strdup_printf("--ipaddr=%s",
                                              opts->listen != NULL ? opts->listen : "127.0.0.1"));
        g_ptr_array_add(argv,
                        g_strdup_printf("--port=%u", opts->port != 0 ? opts->port : DEFAULT_PORT));
    }
    if (opts->readonly)
        g_ptr_array_add(argv, g_strdup("--readonly"));
    g_ptr_array_add(argv, g_strdup(plugin));
    g_ptr_array_add(argv, g_strdup_printf("file=%s", si->path));
    if (si->format != NULL)
        g_ptr_array_add(argv, g_strdup_printf("format=%s", si->format));
    if (opts->readonly)
        g_ptr_array_add(argv, g_strdup("readonly=true"));
    if (opts->snapshot != NULL)
        g_ptr_array_add(argv, g_strdup_printf("snapshot=%s", opts->snapshot));
    if (opts->disk > 0)
        g_ptr_array_add(argv, g_strdup_printf("disk=%u", opts->disk));
    if (opts->backing != NULL) {
        g_autofree char *abs = g_canonicalize_filename(opts->backing, NULL);
        g_ptr_array_add(argv, g_strdup_printf("backing=%s", abs));
    }
    if (si->open_opts != NULL) {
        g_autoptr(GPtrArray) keys = vd_options_keys(si->open_opts);
        for (guint i = 0; i < keys->len; i++)
            g_ptr_array_add(argv, g_strdup_printf("%s=%s", (char *)keys->pdata[i],
                                                  vd_options_get(si->open_opts, keys->pdata[i])));
    }
    for (guint i = 0; i < opts->objects->len; i++)
        g_ptr_array_add(argv, g_strdup_printf("object=%s", (char *)opts->objects->pdata[i]));
    if (opts->passphrase_file != NULL) {
        g_autofree char *abs = g_canonicalize_filename(opts->passphrase_file, NULL);
        g_ptr_array_add(argv, g_strdup_printf("key-secret-file=%s", abs));
    }
    /* nbdkit asks on the terminal itself. */
    if (ask_passphrase)
        g_ptr_array_add(argv, g_strdup("password=-"));
    g_ptr_array_add(argv, NULL);
    return argv;
}

typedef struct {
    GMainLoop *loop;
    GPid pid;
    gboolean exited;
    int status;
    gboolean stopping;
    const char *pidfile;
    const char *uri;
    const char *path;
    gboolean readonly;
    gboolean announced;
} Server;

static void server_exited(GPid pid, int status, gpointer data)
{
    Server *s = data;
    s->exited = TRUE;
    s->status = status;
    g_spawn_close_pid(pid);
    g_main_loop_quit(s->loop);
}

static gboolean server_stop(gpointer data)
{
    Server *s = data;
    if (!s->stopping)
        fprintf(stderr, "\nvdisk: stopping the server...\n");
    s->stopping = TRUE;
    if (!s->exited)
        kill(s->pid, SIGTERM);
    return G_SOURCE_CONTINUE;
}

/* nbdkit writes its pidfile once it accepts connections: then the URI. */
static gboolean server_poll_ready(gpointer data)
{
    Server *s = data;
    if (s->exited || s->stopping)
        return G_SOURCE_REMOVE;
    if (!g_file_test(s->pidfile, G_FILE_TEST_EXISTS))
        return G_SOURCE_CONTINUE;
    printf("%s\n", s->uri);
    fflush(stdout);
    cli_note(FALSE, "serving %s %s at %s; Ctrl-C stops", s->path,
             s->readonly ? "read-only" : "read-write", s->uri);
    s->announced = TRUE;
    return G_SOURCE_REMOVE;
}

static int run_server(GPtrArray *argv, Server *s)
{
    g_autoptr(GError) error = NULL;
    if (!g_spawn_async(NULL, (char **)argv->pdata, NULL,
                       G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_CHILD_INHERITS_STDIN, NULL, NULL,
                       &s->pid, &error)) {
        cli_error("could not run nbdkit: %s", error->message);
        return CLI_EXIT_FAILURE;
    }
    g_autoptr(GMainLoop) loop = g_main_loop_new(NULL, FALSE);
    s->loop = loop;
    g_child_watch_add(s->pid, server_exited, s);
    guint sigint = g_unix_signal_add(SIGINT, server_stop, s);
    guint sigterm = g_unix_signal_add(SIGTERM, server_stop, s);
    guint ready = g_timeout_add(50, server_poll_ready, s);
    g_main_loop_run(loop);
    g_source_remove(sigint);
    g_source_remove(sigterm);
    if (!s->announced && !s->stopping)
        g_source_remove(ready);

    if (WIFEXITED(s->status) && WEXITSTATUS(s->status) == 0)
        return EXIT_SUCCESS;
    /* nbdkit said why on stderr, unless something killed it. */
    if (!s->announced && !s->stopping)
        cli_error("nbdkit could not serve %s", s->path);
    else if (WIFSIGNALED(s->status))
        cli_error("nbdkit, serving %s, was killed by signal %d", s->path, WTERMSIG(s->status));
    else
        cli_error("nbdkit, serving %s, stopped with exit status %d", s->path,
                  WEXITSTATUS(s->status));
    return CLI_EXIT_FAILURE;
}

static int run_serve(const CliCommand *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "readonly", no_argument, NULL, 'r' },
        { "read-only", no_argument, NULL, 'r' },
        { "port", required_argument, NULL, OPT_PORT },
        { "socket", required_argument, NULL, OPT_SOCKET },
        { "listen", required_argument, NULL, OPT_LISTEN },
        { "snapshot", required_argument, NULL, OPT_SNAPSHOT },
        { "disk", required_argument, NULL, OPT_DISK },
        { "backing", required_argument, NULL, OPT_BACKING },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "passphrase-file", required_argument, NULL, OPT_PASSPHRASE_FILE },
        { NULL, 0, NULL, 0 },
    };
    CliCommon common = { 0 };
    g_autoptr(GPtrArray) objects = g_ptr_array_new();
    ServeOptions opts = { .objects = objects };
    g_autoptr(GError) error = NULL;
    g_auto(ServeImage) si = { 0 };
    int first =
        cli_parse_options(cmd, argc, argv, "f:rp:k:l:", longopts, &common, serve_option, &opts);

    if (first < 0 || !cli_check_operands(cmd, argc - first, 1, 1))
        return CLI_EXIT_FAILURE;
    if (opts.socket != NULL && (opts.port != 0 || opts.listen != NULL)) {
        cli_error("--socket serves on a unix socket: it goes with neither --port nor --listen");
        return CLI_EXIT_FAILURE;
    }
    if (common.format != NULL && !g_str_equal(common.format, "ova") &&
        !cli_check_format(common.format))
        return CLI_EXIT_FAILURE;

    if (cli_image_opts()) {
        g_autofree char *file = NULL, *driver = NULL;
        if (!cli_split_image_opts(argv[first], &file, &driver, &si.open_opts, &error))
            return cli_fail(error);
        si.path = g_canonicalize_filename(file, NULL);
        si.format = g_strdup(driver != NULL ? driver : common.format);
    } else {
        si.path = g_canonicalize_filename(argv[first], NULL);
        si.format = g_strdup(common.format);
    }

    g_autofree char *plugin = find_plugin(&error);
    if (plugin == NULL)
        return cli_fail(error);
    g_autofree char *nbdkit = g_find_program_in_path("nbdkit");
    if (nbdkit == NULL) {
        cli_error("nbdkit is not installed (Debian package nbdkit): vdisk serve runs it");
        return CLI_EXIT_FAILURE;
    }

    /* A probed format the plugin probes again itself, so that a file that
     * only looks raw keeps qemu's rule for writes to its first bytes. */
    const char *fmt = cli_probe_format(si.path, si.format, CLI_PROBE_WARN, &error);
    gboolean ask_passphrase = FALSE;
    if (fmt == NULL || !check_image(&si, &opts, fmt, &ask_passphrase, &error))
        return cli_fail(error);

    g_autofree char *socket_path =
        opts.socket != NULL ? g_canonicalize_filename(opts.socket, NULL) : NULL;
    g_autofree char *dir = g_dir_make_tmp("vdisk-serve-XXXXXX", &error);
    if (dir == NULL)
        return cli_fail(error);
    g_autofree char *pidfile = g_build_filename(dir, "nbdkit.pid", NULL);
    g_autofree char *uri = serve_uri(&opts, socket_path);
    g_autoptr(GPtrArray) nargv =
        nbdkit_argv(nbdkit, plugin, &si, &opts, socket_path, pidfile, ask_passphrase);

    gboolean readonly = opts.readonly || opts.snapshot != NULL || g_str_equal(fmt, "ova");
    Server server = { .pidfile = pidfile, .uri = uri, .path = si.path, .readonly = readonly };
    int rc = run_server(nargv, &server);
    g_unlink(pidfile);
    g_rmdir(dir);
    /* nbdkit leaves its socket behind. */
    if (socket_path != NULL && server.announced)
        g_unlink(socket_path);
    return rc;
}

const CliCommand cli_cmd_serve = {
    .name = "serve",
    .summary = "serve an image over NBD (through nbdkit) until Ctrl-C",
    .usage = "  vdisk serve [-f FMT] [--port=PORT [--listen=ADDR] | --socket=PATH]\n"
             "              [--readonly] [--snapshot=NAME] [--disk=N] [--backing=FILE]\n"
             "              [--passphrase-file=FILE | --object secret,... --image-opts] FILE",
    .help = "  -f FMT                 image format (probed when not given)\n"
            "  -p, --port=PORT        serve on this TCP port (default 10809)\n"
            "  --listen=ADDR          listen on ADDR instead of 127.0.0.1: other hosts can\n"
            "                         then read (and write) the disk; NBD has no password\n"
            "  -k, --socket=PATH      serve on a unix socket instead of TCP\n"
            "  -r, --readonly         open FILE read-only (no write lock); clients cannot\n"
            "                         write\n"
            "  -l, --snapshot=NAME    serve an internal snapshot (read-only)\n"
            "  --disk=N               which disk of an OVA appliance (from 1; read-only)\n"
            "  --backing=FILE         FILE's parent, over what its header names\n"
            "  --passphrase-file=FILE     the passphrase of an encrypted image\n"
            "  --object secret,id=ID,file=FILE   a secret, named with --image-opts\n"
            "  --image-opts           FILE is qemu's open options:\n"
            "                         driver=FMT,file.filename=PATH,key-secret=ID,...\n"
            "\n"
            "vdisk serve runs nbdkit with vdisk's plugin in the foreground (nbdkit vdisk\n"
            "does the same by hand), prints the URI on stdout once it accepts\n"
            "connections, and serves until SIGINT (Ctrl-C) or SIGTERM: then nbdkit stops,\n"
            "the image is closed and unlocked, and vdisk exits 0. Writes go into the image\n"
            "in its own format; while it is served, the image is locked as QEMU locks it.\n",
    .examples = "  vdisk serve disk.vdi\n"
                "      then: qemu-system-x86_64 -drive file=nbd://127.0.0.1:10809/,format=raw\n"
                "  vdisk serve --socket /tmp/disk.sock --readonly appliance.ova\n"
                "  vdisk serve --port 10810 --listen 0.0.0.0 disk.vmdk\n",
    .run = run_serve,
};
