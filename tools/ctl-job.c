/* vdiskctl: following vdiskd's jobs, and the jobs and cancel commands.
 *
 * A job may end before the method that started it has even replied, so the
 * watch listens to every job's Completed and PropertiesChanged from before
 * the call, remembers the ends it saw, and only then looks for its own.
 */
#include "ctl.h"

#include <glib-unix.h>
#include <pwd.h>
#include <stdlib.h>
#include <unistd.h>

#include "notify.h"
#include "progress.h"

/* How often the bar is redrawn between the daemon's updates, so the time
 * left keeps moving. */
#define TICK_MS 200

typedef struct {
    gboolean success;
    char *message;
} JobEnd;

static void job_end_free(JobEnd *end)
{
    g_free(end->message);
    g_free(end);
}

struct CtlJobWatch {
    Ctl *ctl;
    guint completed_id;
    guint changed_id;
    guint owner_id;
    GHashTable *ended; /* job path -> JobEnd */
    char *target;      /* the job waited for */
    Progress *progress;
    guint64 bytes_done;
    guint64 bytes_total;
    GMainLoop *loop;
    gboolean daemon_gone;
    gboolean cancel_sent;
};

static void on_completed(GDBusConnection *bus, const char *sender, const char *path,
                         const char *iface, const char *signal, GVariant *params, gpointer data)
{
    CtlJobWatch *watch = data;
    JobEnd *end = g_new0(JobEnd, 1);

    if (!g_variant_is_of_type(params, G_VARIANT_TYPE("(bs)"))) {
        g_free(end);
        return;
    }
    g_variant_get(params, "(bs)", &end->success, &end->message);
    g_hash_table_replace(watch->ended, g_strdup(path), end);
    if (watch->target != NULL && g_str_equal(path, watch->target))
        g_main_loop_quit(watch->loop);
}

/* Feed the bar from a Job's a{sv} of properties; PropertiesChanged carries
 * only those that changed, so the others keep their last value. A queued
 * job says so until it starts. */
static void report_progress(CtlJobWatch *watch, GVariant *props)
{
    guint64 rate;
    const char *state;

    if (watch->progress == NULL)
        return;
    if (g_variant_lookup(props, "State", "&s", &state))
        progress_set_waiting(watch->progress, g_str_equal(state, "queued")
                                                  ? "queued, waiting for a free job slot"
                                                  : NULL);
    g_variant_lookup(props, "BytesDone", "t", &watch->bytes_done);
    g_variant_lookup(props, "BytesTotal", "t", &watch->bytes_total);
    progress_report(watch->bytes_done, watch->bytes_total, watch->progress);
    ctl_notify_progress(watch->bytes_done, watch->bytes_total);
    if (g_variant_lookup(props, "Rate", "t", &rate))
        progress_report_rate(watch->progress, rate);
}

static void on_properties_changed(GDBusConnection *bus, const char *sender, const char *path,
                                  const char *iface, const char *signal, GVariant *params,
                                  gpointer data)
{
    CtlJobWatch *watch = data;
    g_autoptr(GVariant) changed = NULL;

    if (watch->target == NULL || !g_str_equal(path, watch->target) ||
        !g_variant_is_of_type(params, G_VARIANT_TYPE("(sa{sv}as)")))
        return;
    changed = g_variant_get_child_value(params, 1);
    report_progress(watch, changed);
}

static void on_daemon_vanished(GDBusConnection *bus, const char *name, gpointer data)
{
    CtlJobWatch *watch = data;

    watch->daemon_gone = TRUE;
    if (watch->loop != NULL)
        g_main_loop_quit(watch->loop);
}

CtlJobWatch *ctl_job_watch_new(Ctl *ctl)
{
    CtlJobWatch *watch = g_new0(CtlJobWatch, 1);

    watch->ctl = ctl;
    watch->ended =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)job_end_free);
    watch->loop = g_main_loop_new(NULL, FALSE);
    watch->completed_id = g_dbus_connection_signal_subscribe(
        ctl->bus, VDISK_BUS_NAME, VDISK_JOB_INTERFACE, "Completed", NULL, NULL,
        G_DBUS_SIGNAL_FLAGS_NONE, on_completed, watch, NULL);
    /* arg0 filters on the interface whose properties changed. */
    watch->changed_id = g_dbus_connection_signal_subscribe(
        ctl->bus, VDISK_BUS_NAME, "org.freedesktop.DBus.Properties", "PropertiesChanged", NULL,
        VDISK_JOB_INTERFACE, G_DBUS_SIGNAL_FLAGS_NONE, on_properties_changed, watch, NULL);
    watch->owner_id =
        g_bus_watch_name_on_connection(ctl->bus, VDISK_BUS_NAME, G_BUS_NAME_WATCHER_FLAGS_NONE,
                                       NULL, on_daemon_vanished, watch, NULL);
    return watch;
}

void ctl_job_watch_free(CtlJobWatch *watch)
{
    if (watch == NULL)
        return;
    g_dbus_connection_signal_unsubscribe(watch->ctl->bus, watch->completed_id);
    g_dbus_connection_signal_unsubscribe(watch->ctl->bus, watch->changed_id);
    g_bus_unwatch_name(watch->owner_id);
    g_hash_table_unref(watch->ended);
    g_main_loop_unref(watch->loop);
    g_free(watch->target);
    g_free(watch);
}

static void cancel_done(GObject *source, GAsyncResult *result, gpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply =
        g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);

    if (reply == NULL) {
        ctl_error_from_dbus(error);
        fprintf(stderr, "\n");
        ctl_error("cannot cancel the job: %s", error->message);
    }
}

/* The first Ctrl-C asks vdiskd to cancel (which removes a half-written
 * target) and keeps waiting to report how it ended; the second means the
 * user will not wait. */
static gboolean on_interrupt(gpointer data)
{
    CtlJobWatch *watch = data;

    if (watch->cancel_sent) {
        fprintf(stderr,
                "\nvdiskctl: interrupted again; not waiting for job %s (vdiskd cancels it)\n",
                watch->target);
        _exit(130);
    }
    watch->cancel_sent = TRUE;
    fprintf(stderr, "\nvdiskctl: cancelling (press Ctrl-C again to stop waiting)...\n");
    g_dbus_connection_call(watch->ctl->bus, VDISK_BUS_NAME, watch->target, VDISK_JOB_INTERFACE,
                           "Cancel", g_variant_new("(a{sv})", NULL), NULL, watch->ctl->call_flags,
                           -1, NULL, cancel_done, watch);
    return G_SOURCE_CONTINUE;
}

/* The job's state now, for a bar that starts where the job is. Errors do not
 * matter: a job that already ended has sent its Completed. */
static void read_initial_progress(CtlJobWatch *watch)
{
    g_autoptr(GVariant) reply =
        ctl_call(watch->ctl, watch->target, "org.freedesktop.DBus.Properties", "GetAll",
                 g_variant_new("(s)", VDISK_JOB_INTERFACE), "(a{sv})", NULL, NULL);
    g_autoptr(GVariant) props = NULL;

    if (reply == NULL)
        return;
    props = g_variant_get_child_value(reply, 0);
    report_progress(watch, props);
}

/* Wait on the main loop, with Ctrl-C and the bar's redraw, until the target
 * ended or vdiskd left the bus. */
static void run_until_end(CtlJobWatch *watch)
{
    guint sigint = g_unix_signal_add(SIGINT, on_interrupt, watch);
    guint sigterm = g_unix_signal_add(SIGTERM, on_interrupt, watch);
    guint timer = 0;

    if (watch->progress != NULL)
        timer = g_timeout_add(TICK_MS, progress_tick, watch->progress);
    /* Signals that came while we were calling are queued on this context;
     * the loop dispatches them before anything new. */
    if (!g_hash_table_contains(watch->ended, watch->target) && !watch->daemon_gone)
        g_main_loop_run(watch->loop);
    g_source_remove(sigint);
    g_source_remove(sigterm);
    if (timer != 0)
        g_source_remove(timer);
}

gboolean ctl_job_watch_wait(CtlJobWatch *watch, const char *job, const char *label, GError **error)
{
    ProgressMode mode = progress_choose_mode(stderr, watch->ctl->progress, watch->ctl->quiet);
    g_autoptr(Progress) progress = progress_new(mode, stderr, label);
    JobEnd *end;

    g_free(watch->target);
    watch->target = g_strdup(job);
    watch->progress = progress;
    watch->bytes_done = watch->bytes_total = 0;
    read_initial_progress(watch);
    run_until_end(watch);

    end = g_hash_table_lookup(watch->ended, job);
    progress_finish(progress, end != NULL && end->success);
    watch->progress = NULL;
    if (end == NULL) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "vdiskd left the bus before job %s ended",
                    job);
        return FALSE;
    }
    if (end->success)
        return TRUE;
    if (watch->cancel_sent)
        g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_CANCELLED, "cancelled");
    else
        g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                            *end->message ? end->message : "the job failed");
    return FALSE;
}

/* params with detach = true added to the options every method takes last. */
static GVariant *detached_params(GVariant *params)
{
    g_autoptr(GVariant) sunk = g_variant_ref_sink(params);
    gsize n = g_variant_n_children(sunk);
    g_autofree GVariant **children = g_new0(GVariant *, n);
    GVariantBuilder options;

    for (gsize i = 0; i + 1 < n; i++)
        children[i] = g_variant_get_child_value(sunk, i);
    g_variant_builder_init(&options, G_VARIANT_TYPE_VARDICT);
    {
        g_autoptr(GVariant) old = g_variant_get_child_value(sunk, n - 1);
        GVariantIter it;
        const char *key;
        GVariant *value;

        g_variant_iter_init(&it, old);
        while (g_variant_iter_next(&it, "{&sv}", &key, &value)) {
            g_variant_builder_add(&options, "{sv}", key, value);
            g_variant_unref(value);
        }
    }
    g_variant_builder_add(&options, "{sv}", "detach", g_variant_new_boolean(TRUE));
    children[n - 1] = g_variant_builder_end(&options);
    return g_variant_new_tuple(children, n);
}

gboolean ctl_call_job(Ctl *ctl, const char *path, const char *iface, const char *method,
                      GVariant *params, GUnixFDList *fds, const char *label, char **volume,
                      GError **error)
{
    g_autoptr(CtlJobWatch) watch = ctl_job_watch_new(ctl);
    g_autoptr(GVariant) reply = NULL;
    const char *job;

    if (ctl->detach)
        params = detached_params(params);
    reply = ctl_call(ctl, path, iface, method, params, volume != NULL ? "(oo)" : "(o)", fds, error);
    if (reply == NULL)
        return FALSE;
    if (volume != NULL)
        g_variant_get(reply, "(o&o)", volume, &job);
    else
        g_variant_get(reply, "(&o)", &job);
    if (ctl->detach) {
        /* The job outlives us; what it makes is for 'vdiskctl jobs' and the
         * job's own properties to tell. */
        printf("%s\n", job);
        fflush(stdout);
        exit(EXIT_SUCCESS);
    }
    return ctl_job_watch_wait(watch, job, label, error);
}

/* ----- vdiskctl jobs ----- */

/* "7" for /org/vdisk/VDisk1/jobs/7. */
static const char *job_number(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash != NULL ? slash + 1 : path;
}

static char *user_name(guint32 uid)
{
    struct passwd *pw = getpwuid(uid);

    return pw != NULL ? g_strdup(pw->pw_name) : g_strdup_printf("%u", uid);
}

/* The volumes a job works on, as "pool/name" joined with commas. */
static char *job_volumes(GVariant *objects, GVariant *props)
{
    g_autoptr(GStrvBuilder) labels = g_strv_builder_new();
    g_auto(GStrv) strv = NULL;
    g_autofree const char **paths = NULL;
    g_autoptr(GVariant) value = g_variant_lookup_value(props, "Objects", G_VARIANT_TYPE("ao"));

    if (value != NULL)
        paths = g_variant_get_objv(value, NULL);
    for (gsize i = 0; paths != NULL && paths[i] != NULL; i++) {
        g_autofree char *label = ctl_volume_label(objects, paths[i]);
        g_strv_builder_add(labels, label);
    }
    strv = g_strv_builder_end(labels);
    return strv[0] != NULL ? g_strjoinv(",", strv) : g_strdup("-");
}

static void add_job_row(CtlTable *table, GVariant *objects, const CtlObject *job)
{
    double progress = 0;
    guint32 uid = 0;
    g_autofree char *percent = NULL;
    g_autofree char *rate = ctl_format_size(ctl_prop_uint64(job->props, "Rate"));
    g_autofree char *rate_s = g_strconcat(rate, "/s", NULL);
    g_autofree char *user = NULL;
    g_autofree char *volumes = job_volumes(objects, job->props);

    g_variant_lookup(job->props, "Progress", "d", &progress);
    g_variant_lookup(job->props, "StartedByUID", "u", &uid);
    percent = g_strdup_printf("%.0f%%", progress * 100.0);
    user = user_name(uid);
    ctl_table_add_row(table, job_number(job->path), ctl_prop_string(job->props, "Operation"),
                      ctl_prop_string(job->props, "State"), percent, rate_s, user, volumes, NULL);
}

static int run_jobs(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) objects = ctl_get_objects(ctl, &error);
    g_autoptr(GPtrArray) jobs = NULL;
    g_autoptr(CtlTable) table = NULL;

    if (objects == NULL)
        return ctl_fail(error);
    jobs = ctl_objects_with(objects, VDISK_JOB_INTERFACE);
    if (ctl->json) {
        ctl_print_objects_json(jobs);
        return EXIT_SUCCESS;
    }
    if (jobs->len == 0) {
        ctl_say(ctl, "No jobs are running.");
        return EXIT_SUCCESS;
    }
    table = ctl_table_new("JOB", "OPERATION", "STATE", "PROGRESS", "RATE", "USER", "VOLUMES", NULL);
    for (guint i = 0; i < jobs->len; i++)
        add_job_row(table, objects, jobs->pdata[i]);
    ctl_table_print(table, stdout);
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_jobs = {
    .name = "jobs",
    .operands = "",
    .summary = "list vdiskd's jobs, running and queued",
    .options = CTL_OPT_JSON,
    .examples = "  vdiskctl jobs\n"
                "  vdiskctl jobs --json\n",
    .min_operands = 0,
    .max_operands = 0,
    .run = run_jobs,
};

/* ----- vdiskctl cancel ----- */

/* A job as the user names it: its number (as 'vdiskctl jobs' shows) or its
 * object path. */
static char *job_path_of(const char *arg, GError **error)
{
    if (arg[0] != '\0' && strspn(arg, "0123456789") == strlen(arg))
        return g_strdup_printf("%s/%s", VDISK_JOBS_PATH, arg);
    if (g_str_has_prefix(arg, VDISK_JOBS_PATH "/") && g_variant_is_object_path(arg))
        return g_strdup(arg);
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "'%s' is not a job number or a job's object path", arg);
    return NULL;
}

static int run_cancel(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = job_path_of(operands[0], &error);
    g_autoptr(GVariant) objects = NULL;
    g_autoptr(GPtrArray) jobs = NULL;
    g_autoptr(GVariant) reply = NULL;

    if (path == NULL || (objects = ctl_get_objects(ctl, &error)) == NULL)
        return ctl_fail(error);
    jobs = ctl_objects_with(objects, VDISK_JOB_INTERFACE);
    if (ctl_object_lookup(jobs, "path", path) == NULL) {
        ctl_error("no job %s is running ('vdiskctl jobs' lists them)", job_number(path));
        return CTL_EXIT_FAILURE;
    }
    reply = ctl_call(ctl, path, VDISK_JOB_INTERFACE, "Cancel", g_variant_new("(a{sv})", NULL), "()",
                     NULL, &error);
    if (reply == NULL)
        return ctl_fail(error);
    ctl_say(ctl, "Asked job %s to cancel.", job_number(path));
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_cancel = {
    .name = "cancel",
    .operands = "JOB",
    .summary = "cancel a running or queued job",
    .notes = "JOB is the number 'vdiskctl jobs' shows, or the job's object path.\n"
             "Cancelling another user's job needs an administrator.\n",
    .examples = "  vdiskctl cancel 3\n"
                "  vdiskctl cancel /org/vdisk/VDisk1/jobs/3\n",
    .min_operands = 1,
    .max_operands = 1,
    .run = run_cancel,
};
