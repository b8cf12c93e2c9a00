#include "daemon.h"

#include <gio/gio.h>
#include <glib-unix.h>

#include "config.h"
#include "pools-config.h"
#include "errors.h"
#include "job.h"
#include "libvirt-pools.h"
#include "manager.h"
#include "vdisk-names.h"

void vdd_daemon_options_clear(VddDaemonOptions *opts)
{
    g_clear_pointer(&opts->config_dir, g_free);
}

gboolean vdd_daemon_parse_options(VddDaemonOptions *opts, int *argc, char ***argv, GError **error)
{
    gint64 idle = 300;
    g_autofree char *config_dir = NULL;
    gboolean session = FALSE, replace = FALSE, version = FALSE;
    g_autofree char *idle_text = NULL;
    gint max_running = (gint)vdd_job_max_running_per_user;
    gint max_queued = (gint)vdd_job_max_queued_per_user;
    GOptionEntry entries[] = {
        { "idle-timeout", 0, 0, G_OPTION_ARG_STRING, &idle_text,
          "Exit after SECONDS without calls when no job runs (default 300, 0: never)", "SECONDS" },
        { "config-dir", 0, 0, G_OPTION_ARG_FILENAME, &config_dir,
          "Read pools from DIR/*.conf (default " VDD_DEFAULT_CONFIG_DIR ")", "DIR" },
        { "max-jobs-per-user", 0, 0, G_OPTION_ARG_INT, &max_running,
          "Jobs one user other than root may have running at once (default 2)", "N" },
        { "max-queued-jobs-per-user", 0, 0, G_OPTION_ARG_INT, &max_queued,
          "Jobs one user other than root may have waiting besides those (default 8)", "N" },
        { "session", 0, 0, G_OPTION_ARG_NONE, &session, "Use the session bus (development)", NULL },
        { "replace", 'r', 0, G_OPTION_ARG_NONE, &replace, "Replace a running vdiskd", NULL },
        { "version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version and exit", NULL },
        { NULL },
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("- the vdisk D-Bus service");
    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, argc, argv, error))
        return FALSE;
    if (version) {
        g_print("vdiskd %s\n", VDISK_VERSION);
        exit(0);
    }
    if (idle_text != NULL) {
        guint64 v;
        if (!g_ascii_string_to_unsigned(idle_text, 10, 0, G_MAXUINT32, &v, NULL)) {
            g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "--idle-timeout: '%s' is not a number of seconds", idle_text);
            return FALSE;
        }
        idle = (gint64)v;
    }
    if (max_running < 1 || max_queued < 0) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--max-jobs-per-user must be at least 1 and --max-queued-jobs-per-user at "
                    "least 0");
        return FALSE;
    }
    vdd_job_max_running_per_user = (guint)max_running;
    vdd_job_max_queued_per_user = (guint)max_queued;
    opts->idle_timeout = (guint)idle;
    opts->config_dir = config_dir ? g_steal_pointer(&config_dir) : g_strdup(VDD_DEFAULT_CONFIG_DIR);
    opts->session_bus = session;
    opts->replace = replace;
    return TRUE;
}

typedef struct {
    GMainLoop *loop;
    VddManager *manager;
    const VddDaemonOptions *opts;
    int status;
    gboolean stopping;
    gint64 stop_deadline;
} Daemon;

/* How long running jobs get to wind down after SIGTERM (systemd waits 90 s
 * before SIGKILL). */
#define STOP_GRACE_SECONDS 20

static void bus_acquired(GDBusConnection *conn, const char *name, gpointer data)
{
    Daemon *d = data;
    vdd_manager_export(d->manager, conn);
}

static void name_acquired(GDBusConnection *conn, const char *name, gpointer data)
{
    g_message("vdiskd %s serving %s", VDISK_VERSION, name);
}

static void name_lost(GDBusConnection *conn, const char *name, gpointer data)
{
    Daemon *d = data;
    g_warning("could not own %s, or lost it (is another vdiskd running? may root own it?)", name);
    d->status = 1;
    g_main_loop_quit(d->loop);
}

/* Exit once the cancelled jobs have cleaned up (or the grace is over). */
static gboolean wait_for_jobs(gpointer data)
{
    Daemon *d = data;
    if (vdd_manager_running_jobs(d->manager) > 0 && g_get_monotonic_time() < d->stop_deadline)
        return G_SOURCE_CONTINUE;
    g_main_loop_quit(d->loop);
    return G_SOURCE_REMOVE;
}

/* A job killed mid-copy would leave a target that looks whole: cancel the
 * running ones and let them remove what they wrote before leaving. A second
 * signal leaves at once. */
static gboolean on_signal(gpointer data)
{
    Daemon *d = data;
    if (d->stopping) {
        g_main_loop_quit(d->loop);
        return G_SOURCE_CONTINUE;
    }
    d->stopping = TRUE;
    guint running = vdd_manager_cancel_jobs(d->manager);
    g_message("exiting on signal%s", running > 0 ? ", after cancelling the running jobs" : "");
    d->stop_deadline = g_get_monotonic_time() + STOP_GRACE_SECONDS * G_USEC_PER_SEC;
    g_timeout_add(50, wait_for_jobs, d);
    return G_SOURCE_CONTINUE;
}

static gboolean idle_check(gpointer data)
{
    Daemon *d = data;
    if (vdd_manager_is_idle(d->manager, d->opts->idle_timeout)) {
        g_message("idle for %u s with no job running: exiting", d->opts->idle_timeout);
        g_main_loop_quit(d->loop);
        return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

int vdd_daemon_run(const VddDaemonOptions *opts)
{
    Daemon d = { .opts = opts };
    (void)VDD_ERROR; /* register the D-Bus error names before any reply */
    d.loop = g_main_loop_new(NULL, FALSE);
    d.manager = vdd_manager_new();
    vdd_manager_load_config(d.manager, opts->config_dir);
    g_autoptr(VddLibvirt) libvirt = NULL;
    /* VDISKD_LIBVIRT_URI: another libvirt to mirror, or "none" (tests). */
    const char *libvirt_uri = g_getenv("VDISKD_LIBVIRT_URI");
    if (!opts->session_bus && g_strcmp0(libvirt_uri, "none") != 0) {
        libvirt = vdd_libvirt_new(d.manager, libvirt_uri);
        vdd_manager_set_libvirt(d.manager, libvirt);
    }
    guint owner =
        g_bus_own_name(opts->session_bus ? G_BUS_TYPE_SESSION : G_BUS_TYPE_SYSTEM, VDISK_BUS_NAME,
                       G_BUS_NAME_OWNER_FLAGS_ALLOW_REPLACEMENT |
                           (opts->replace ? G_BUS_NAME_OWNER_FLAGS_REPLACE : 0),
                       bus_acquired, name_acquired, name_lost, &d, NULL);
    g_unix_signal_add(SIGTERM, on_signal, &d);
    g_unix_signal_add(SIGINT, on_signal, &d);
    if (opts->idle_timeout > 0)
        g_timeout_add_seconds(1, idle_check, &d);
    g_main_loop_run(d.loop);
    g_bus_unown_name(owner);
    vdd_manager_set_libvirt(d.manager, NULL);
    g_clear_pointer(&libvirt, vdd_libvirt_free);
    g_clear_object(&d.manager);
    g_main_loop_unref(d.loop);
    return d.status;
}
