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
    guint owner_id;
    GHashTable *ended; /* job path -> JobEnd */
    char *target;      /* the job waited for */
    VddDbusJob *job;   /* its proxy, with its properties */
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

static void on_properties_changed(GDBusProxy *proxy, GVariant *changed,
                                  const char *const *invalidated, gpointer data)
{
    report_progress(data, changed);
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
    g_bus_unwatch_name(watch->owner_id);
    g_hash_table_unref(watch->ended);
    g_main_loop_unref(watch->loop);
    g_free(watch->target);
    g_clear_object(&watch->job);
    g_free(watch);
}

static void cancel_done(GObject *source, GAsyncResult *result, gpointer data)
{
    g_autoptr(GError) error = NULL;

    if (!ctl_called(vdd_dbus_job_call_cancel_finish(VDD_DBUS_JOB(source), result, &error),
                    &error)) {
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
    if (watch->job != NULL)
        vdd_dbus_job_call_cancel(watch->job, ctl_no_options(), watch->ctl->call_flags,
                                 ctl_timeout(watch->ctl), NULL, cancel_done, watch);
    return G_SOURCE_CONTINUE;
}

/* The job's proxy: its properties now, for a bar that starts where the
 * job is, and as they change. Errors do not matter: a job that already
 * ended has sent its Completed. */
static void follow_properties(CtlJobWatch *watch)
{
    g_autoptr(GVariant) now = NULL;
    g_auto(GStrv) names = NULL;
    GVariantDict props;

    g_clear_object(&watch->job);
    watch->job = vdd_dbus_job_proxy_new_sync(watch->ctl->bus, G_DBUS_PROXY_FLAGS_DO_NOT_AUTO_START,
                                             VDISK_BUS_NAME, watch->target, NULL, NULL);
    if (watch->job == NULL)
        return;
    g_signal_connect(watch->job, "g-properties-changed", G_CALLBACK(on_properties_changed), watch);
    g_variant_dict_init(&props, NULL);
    names = g_dbus_proxy_get_cached_property_names(G_DBUS_PROXY(watch->job));
    for (guint i = 0; names != NULL && names[i] != NULL; i++) {
        g_autoptr(GVariant) value =
            g_dbus_proxy_get_cached_property(G_DBUS_PROXY(watch->job), names[i]);
        g_variant_dict_insert_value(&props, names[i], value);
    }
    now = g_variant_ref_sink(g_variant_dict_end(&props));
    report_progress(watch, now);
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
    follow_properties(watch);
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

GVariant *ctl_job_options(const Ctl *ctl, GVariant *options)
{
    GVariantDict d;

    g_variant_dict_init(&d, options);
    if (ctl->detach)
        g_variant_dict_insert_value(&d, "detach", g_variant_new_boolean(TRUE));
    return g_variant_dict_end(&d);
}

gboolean ctl_job_follow(CtlJobWatch *watch, gboolean called, const char *job, const char *label,
                        GError **error)
{
    if (!ctl_called(called, error))
        return FALSE;
    if (watch->ctl->detach) {
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

/* The volumes a job works on, as "POOL/NAME"; one gone meanwhile is left
 * out. */
static GStrv job_volume_list(GVariant *objects, GVariant *props)
{
    g_autoptr(GStrvBuilder) labels = g_strv_builder_new();
    g_autofree const char **paths = NULL;
    g_autoptr(GVariant) value = g_variant_lookup_value(props, "Objects", G_VARIANT_TYPE("ao"));

    if (value != NULL)
        paths = g_variant_get_objv(value, NULL);
    for (gsize i = 0; paths != NULL && paths[i] != NULL; i++) {
        g_autofree char *label = ctl_volume_label(objects, paths[i]);
        if (!g_str_equal(label, paths[i]))
            g_strv_builder_add(labels, label);
    }
    return g_strv_builder_end(labels);
}

/* The same joined with commas, "-" for none. */
static char *job_volumes(GVariant *objects, GVariant *props)
{
    g_auto(GStrv) strv = job_volume_list(objects, props);

    return strv[0] != NULL ? g_strjoinv(",", strv) : g_strdup("-");
}

/* The jobs as JSON: each by its number, what it does to which volumes,
 * how far it is (bytes, bytes a second) and whose it is. */
static void print_jobs_json(GVariant *objects, GPtrArray *jobs)
{
    JsonWriter *w = json_writer_new();

    json_begin_array(w);
    for (guint i = 0; i < jobs->len; i++) {
        const CtlObject *job = jobs->pdata[i];
        double progress = 0;
        guint32 uid = 0;
        gboolean cancelable = FALSE;
        g_auto(GStrv) volumes = job_volume_list(objects, job->props);
        g_autofree char *user = NULL;
        guint64 start = ctl_prop_uint64(job->props, "StartTime");
        g_autoptr(GDateTime) started =
            start != 0 ? g_date_time_new_from_unix_local((gint64)(start / G_USEC_PER_SEC)) : NULL;
        g_autofree char *iso = started != NULL ? g_date_time_format_iso8601(started) : NULL;

        g_variant_lookup(job->props, "Progress", "d", &progress);
        g_variant_lookup(job->props, "StartedByUID", "u", &uid);
        g_variant_lookup(job->props, "Cancelable", "b", &cancelable);
        user = user_name(uid);
        json_begin_object(w);
        json_member_string(w, "id", job_number(job->path));
        json_member_string(w, "operation", ctl_prop_string(job->props, "Operation"));
        json_member_string(w, "state", ctl_prop_string(job->props, "State"));
        json_key(w, "progress");
        json_double(w, progress);
        json_member_uint(w, "bytes-done", ctl_prop_uint64(job->props, "BytesDone"));
        json_member_uint(w, "bytes-total", ctl_prop_uint64(job->props, "BytesTotal"));
        json_member_uint(w, "rate", ctl_prop_uint64(job->props, "Rate"));
        json_member_string(w, "user", user);
        json_member_uint(w, "uid", uid);
        json_member_bool(w, "cancelable", cancelable);
        if (iso != NULL)
            json_member_string(w, "started", iso);
        if (*ctl_prop_string(job->props, "Error"))
            json_member_string(w, "error", ctl_prop_string(job->props, "Error"));
        json_key(w, "volumes");
        json_begin_array(w);
        for (guint v = 0; volumes[v] != NULL; v++)
            json_string(w, volumes[v]);
        json_end_array(w);
        json_end_object(w);
    }
    json_end_array(w);
    ctl_json_print(w);
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
        print_jobs_json(objects, jobs);
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
    g_autoptr(VddDbusJob) proxy = NULL;

    if (path == NULL || (objects = ctl_get_objects(ctl, &error)) == NULL)
        return ctl_fail(error);
    jobs = ctl_objects_with(objects, VDISK_JOB_INTERFACE);
    if (ctl_object_lookup(jobs, "path", path) == NULL) {
        ctl_error("no job %s is running ('vdiskctl jobs' lists them)", job_number(path));
        return CTL_EXIT_FAILURE;
    }
    proxy = ctl_job_proxy(ctl, path, &error);
    if (proxy == NULL ||
        !ctl_called(vdd_dbus_job_call_cancel_sync(proxy, ctl_no_options(), ctl->call_flags,
                                                  ctl_timeout(ctl), NULL, &error),
                    &error))
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
