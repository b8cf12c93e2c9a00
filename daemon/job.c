#include "job.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include "bouncer.h"
#include "call.h"
#include "errors.h"
#include "manager.h"
#include "options.h"
#include "vdd-dbus.h"
#include "vdisk-names.h"

#ifndef VDISK_PRIVILEGED_GROUP
#define VDISK_PRIVILEGED_GROUP "libvirt"
#endif

guint vdd_job_linger_seconds = 5;
guint vdd_job_max_running_per_user = 2;
guint vdd_job_max_queued_per_user = 8;
const char *vdd_job_privileged_group = VDISK_PRIVILEGED_GROUP;

/* The bounded worker pool every job runs on: a few jobs at once, the rest
 * wait; each job's copy engine has worker threads of its own. */
#define MAX_RUNNING_JOBS 3
/* Slots only root and the privileged group may take. */
#define RESERVED_SLOTS 1
/* PropertiesChanged for progress at most this often (and at least, while it
 * moves). */
#define PUBLISH_INTERVAL_MS 200

/* One caller's share of the pool. Lives while it holds anything. */
typedef struct {
    guint32 uid;
    gboolean privileged;
    guint held;    /* admitted and not ended: tickets, waiting and running work */
    guint running; /* on a worker thread now */
} User;

/* A piece of work on the pool: a job's, or InspectFile's. */
typedef struct {
    User *user;
    GCancellable *cancellable; /* may be NULL */
    gulong cancelled_id;
    VddWorkFunc started; /* on the main thread, as it takes a slot; may be NULL */
    VddWorkFunc run;
    VddWorkFunc done;
    gpointer data;
    gboolean owns_unit; /* ends the user's hold when done (not a job's) */
} Work;

struct _VddJob {
    GObject parent;
    VddManager *manager; /* strong */
    guint id;
    char *path;
    char *operation;
    guint32 uid;
    User *user; /* while it holds its unit (until finished) */
    VddDbusObjectSkeleton *object;
    VddDbusJob *iface;
    GCancellable *cancellable;
    guint caller_watch; /* while the caller's bus name is watched */
    gboolean caller_gone;

    VddJobFunc func;
    VddJobDoneFunc done;
    gpointer data;
    GDestroyNotify free_data;
    GError *error; /* set by the worker */

    /* Written by the engine's threads, read by the publish timer. */
    guint64 bytes_done;
    guint64 bytes_total;
    guint publish_id;
    gint64 last_time;
    guint64 last_done;
    double rate;
    gboolean finished;
};

G_DEFINE_TYPE(VddJob, vdd_job, G_TYPE_OBJECT)

/* ----- the pool and its shares ----- */

static GHashTable *users; /* uid -> User */
static GQueue waiting = G_QUEUE_INIT;
static guint running_total;
static GThreadPool *threads;
static gboolean dispatching, dispatch_again;

/* Is uid root or in the privileged group? The same group polkit's rules
 * trust with every volume action, so its members are administrators here
 * too. */
static gboolean uid_is_privileged(guint32 uid)
{
    if (uid == 0)
        return TRUE;
    if (vdd_job_privileged_group == NULL || *vdd_job_privileged_group == '\0')
        return FALSE;
    struct group *gr = getgrnam(vdd_job_privileged_group);
    if (gr == NULL)
        return FALSE;
    gid_t group = gr->gr_gid;
    struct passwd *pw = getpwuid(uid);
    if (pw == NULL)
        return FALSE;
    /* Copies: the group lookups below may reuse the static buffers. */
    g_autofree char *name = g_strdup(pw->pw_name);
    gid_t primary = pw->pw_gid;
    int n = 64;
    g_autofree gid_t *groups = g_new(gid_t, n);
    if (getgrouplist(name, primary, groups, &n) < 0) {
        groups = g_renew(gid_t, groups, n);
        if (getgrouplist(name, primary, groups, &n) < 0)
            return FALSE;
    }
    for (int i = 0; i < n; i++) {
        if (groups[i] == group)
            return TRUE;
    }
    return FALSE;
}

static User *user_hold(guint32 uid)
{
    if (users == NULL)
        users = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    User *user = g_hash_table_lookup(users, GUINT_TO_POINTER(uid));
    if (user == NULL) {
        user = g_new0(User, 1);
        user->uid = uid;
        user->privileged = uid_is_privileged(uid);
        g_hash_table_insert(users, GUINT_TO_POINTER(uid), user);
    }
    user->held++;
    return user;
}

static void user_release(User *user)
{
    g_return_if_fail(user->held > 0);
    if (--user->held == 0)
        g_hash_table_remove(users, GUINT_TO_POINTER(user->uid));
}

/* What vdd_job_admit leaves on an invocation: one unit of its caller's
 * share, until a job takes it or the call ends without one. */
#define TICKET_KEY "vdd-job-ticket"

static void ticket_drop(gpointer data) { user_release(data); }

/* The unit the invocation holds for uid, or a new one. */
static User *take_ticket(GDBusMethodInvocation *invocation, guint32 uid)
{
    User *user = invocation ? g_object_steal_data(G_OBJECT(invocation), TICKET_KEY) : NULL;
    if (user != NULL && user->uid == uid)
        return user;
    if (user != NULL)
        user_release(user);
    return user_hold(uid);
}

/* The methods that start a job, and InspectFile. */
static gboolean starts_work(const char *method)
{
    static const char *const methods[] = {
        "CreateVolume", "ImportVolume", "Clone",       "CopyFrom",  "Resize",
        "Export",       "ConvertFile",  "InspectFile", "ExportNbd", NULL
    };
    return method != NULL && g_strv_contains(methods, method);
}

/* The options every vdiskd method takes last. */
static GVariant *call_options(GDBusMethodInvocation *invocation)
{
    GVariant *params = g_dbus_method_invocation_get_parameters(invocation);
    gsize n = params != NULL ? g_variant_n_children(params) : 0;
    if (n == 0)
        return NULL;
    GVariant *last = g_variant_get_child_value(params, n - 1);
    if (!g_variant_is_of_type(last, G_VARIANT_TYPE_VARDICT)) {
        g_variant_unref(last);
        return NULL;
    }
    return last;
}

static gboolean call_detached(GDBusMethodInvocation *invocation, gboolean *detach, GError **error)
{
    g_autoptr(GVariant) options = call_options(invocation);
    *detach = FALSE;
    return options == NULL || vdd_options_lookup_bool(options, "detach", FALSE, detach, error);
}

gboolean vdd_job_admit(GDBusMethodInvocation *invocation, guint32 uid, GError **error)
{
    gboolean detach;
    if (!starts_work(g_dbus_method_invocation_get_method_name(invocation)))
        return TRUE;
    if (!call_detached(invocation, &detach, error))
        return FALSE;
    User *user = user_hold(uid);
    guint limit = vdd_job_max_running_per_user + vdd_job_max_queued_per_user;
    if (uid != 0 && user->held > limit) {
        user_release(user);
        g_set_error(error, VDD_ERROR, VDD_ERROR_BUSY,
                    "too many jobs for uid %u (limit %u); wait for one to finish", uid, limit);
        return FALSE;
    }
    g_object_set_data_full(G_OBJECT(invocation), TICKET_KEY, user, ticket_drop);
    return TRUE;
}

/* May w start now? Plain users leave the reserved slots free, and nobody but
 * root runs more than their share at once. */
static gboolean may_start(Work *w)
{
    guint slots = MAX_RUNNING_JOBS - (w->user->privileged ? 0 : RESERVED_SLOTS);
    if (running_total >= slots)
        return FALSE;
    return w->user->uid == 0 || w->user->running < MAX(vdd_job_max_running_per_user, 1);
}

static void work_end(Work *w)
{
    if (w->cancelled_id != 0)
        g_signal_handler_disconnect(w->cancellable, w->cancelled_id);
    User *user = w->owns_unit ? w->user : NULL;
    w->done(w->data);
    if (user != NULL)
        user_release(user);
    g_clear_object(&w->cancellable);
    g_free(w);
}

/* Start what may start, in the order it came; work cancelled while it
 * waited ends at once without running. */
static void dispatch(void)
{
    if (dispatching) {
        dispatch_again = TRUE;
        return;
    }
    dispatching = TRUE;
    do {
        dispatch_again = FALSE;
        g_autoptr(GPtrArray) cancelled = g_ptr_array_new();
        for (GList *l = waiting.head, *next; l != NULL; l = next) {
            next = l->next;
            Work *w = l->data;
            if (w->cancellable != NULL && g_cancellable_is_cancelled(w->cancellable)) {
                g_queue_delete_link(&waiting, l);
                g_ptr_array_add(cancelled, w);
            } else if (may_start(w)) {
                g_queue_delete_link(&waiting, l);
                if (w->cancelled_id != 0) {
                    g_signal_handler_disconnect(w->cancellable, w->cancelled_id);
                    w->cancelled_id = 0;
                }
                running_total++;
                w->user->running++;
                if (w->started != NULL)
                    w->started(w->data);
                g_thread_pool_push(threads, w, NULL);
            }
        }
        for (guint i = 0; i < cancelled->len; i++)
            work_end(cancelled->pdata[i]);
    } while (dispatch_again);
    dispatching = FALSE;
}

static gboolean dispatch_idle(gpointer unused)
{
    dispatch();
    return G_SOURCE_REMOVE;
}

/* A cancel may come from any thread; waiting work is looked at on the main
 * one. */
static void waiting_cancelled(GCancellable *cancellable, gpointer unused)
{
    g_idle_add(dispatch_idle, NULL);
}

static gboolean worker_done(gpointer data)
{
    Work *w = data;
    running_total--;
    w->user->running--;
    work_end(w);
    dispatch();
    return G_SOURCE_REMOVE;
}

static void worker(gpointer data, gpointer unused)
{
    Work *w = data;
    w->run(w->data);
    g_main_context_invoke(NULL, worker_done, w);
}

static void queue_work(Work *w)
{
    if (threads == NULL)
        threads = g_thread_pool_new(worker, NULL, MAX_RUNNING_JOBS, FALSE, NULL);
    if (w->cancellable != NULL)
        w->cancelled_id =
            g_signal_connect(w->cancellable, "cancelled", G_CALLBACK(waiting_cancelled), NULL);
    g_queue_push_tail(&waiting, w);
    dispatch();
}

void vdd_job_run_work(GDBusMethodInvocation *invocation, guint32 uid, VddWorkFunc run,
                      VddWorkFunc done, gpointer data)
{
    Work *w = g_new0(Work, 1);
    w->user = take_ticket(invocation, uid);
    w->owns_unit = TRUE;
    w->run = run;
    w->done = done;
    w->data = data;
    queue_work(w);
}

/* ----- the Job object ----- */

static void release_unit(VddJob *self)
{
    if (self->user != NULL)
        user_release(self->user);
    self->user = NULL;
}

static void vdd_job_finalize(GObject *obj)
{
    VddJob *self = VDD_JOB(obj);
    g_clear_handle_id(&self->publish_id, g_source_remove);
    g_clear_handle_id(&self->caller_watch, g_bus_unwatch_name);
    release_unit(self);
    if (self->free_data != NULL && self->data != NULL)
        self->free_data(self->data);
    g_clear_error(&self->error);
    g_clear_object(&self->cancellable);
    g_clear_object(&self->iface);
    g_clear_object(&self->object);
    g_clear_object(&self->manager);
    g_free(self->path);
    g_free(self->operation);
    G_OBJECT_CLASS(vdd_job_parent_class)->finalize(obj);
}

static void vdd_job_class_init(VddJobClass *klass)
{
    G_OBJECT_CLASS(klass)->finalize = vdd_job_finalize;
}

static void vdd_job_init(VddJob *self) { self->cancellable = g_cancellable_new(); }

const char *vdd_job_get_object_path(VddJob *self) { return self->path; }
guint32 vdd_job_get_uid(VddJob *self) { return self->uid; }
GCancellable *vdd_job_get_cancellable(VddJob *self) { return self->cancellable; }

void vdd_job_progress(guint64 done, guint64 total, gpointer user_data)
{
    VddJob *self = user_data;
    __atomic_store_n(&self->bytes_total, total, __ATOMIC_RELAXED);
    __atomic_store_n(&self->bytes_done, done, __ATOMIC_RELAXED);
}

static void publish(VddJob *self)
{
    guint64 done = __atomic_load_n(&self->bytes_done, __ATOMIC_RELAXED);
    guint64 total = __atomic_load_n(&self->bytes_total, __ATOMIC_RELAXED);
    gint64 now = g_get_monotonic_time();
    if (done == vdd_dbus_job_get_bytes_done(self->iface) &&
        total == vdd_dbus_job_get_bytes_total(self->iface))
        return;
    if (self->last_time != 0 && now > self->last_time && done >= self->last_done) {
        double inst = (double)(done - self->last_done) * G_USEC_PER_SEC / (now - self->last_time);
        self->rate = self->rate == 0 ? inst : 0.7 * self->rate + 0.3 * inst;
    }
    self->last_time = now;
    self->last_done = done;
    double progress = total > 0 ? (double)done / (double)total : 0.0;
    if (progress > 1.0)
        progress = 1.0;
    /* Progress never goes back, and reaches 1.0 only when the job has
     * completed. */
    if (progress < vdd_dbus_job_get_progress(self->iface))
        progress = vdd_dbus_job_get_progress(self->iface);
    if (progress >= 1.0)
        progress = 0.999;
    g_object_freeze_notify(G_OBJECT(self->iface));
    vdd_dbus_job_set_bytes_total(self->iface, total);
    vdd_dbus_job_set_bytes_done(self->iface, done);
    vdd_dbus_job_set_progress(self->iface, progress);
    vdd_dbus_job_set_rate(self->iface, (guint64)self->rate);
    g_object_thaw_notify(G_OBJECT(self->iface));
}

static gboolean publish_tick(gpointer data)
{
    publish(data);
    return G_SOURCE_CONTINUE;
}

static gboolean unexport(gpointer data)
{
    VddJob *self = data;
    vdd_manager_unexport_job(self->manager, self);
    g_object_unref(self);
    return G_SOURCE_REMOVE;
}

static void finish(VddJob *self, const GError *error)
{
    if (self->finished)
        return;
    self->finished = TRUE;
    g_clear_handle_id(&self->publish_id, g_source_remove);
    g_clear_handle_id(&self->caller_watch, g_bus_unwatch_name);
    release_unit(self);
    g_autoptr(GError) converted = error ? vdd_error_convert(error) : NULL;
    if (self->done != NULL)
        self->done(self, self->data, converted);
    if (self->free_data != NULL && self->data != NULL)
        self->free_data(self->data);
    self->data = NULL;
    self->free_data = NULL;

    gboolean cancelled = converted && converted->code == VDD_ERROR_CANCELLED;
    g_autofree char *message = NULL;
    if (converted == NULL)
        message = g_strdup_printf("%s done", self->operation);
    else if (cancelled && self->caller_gone)
        message = g_strdup_printf("%s cancelled: its caller left the bus", self->operation);
    else if (cancelled && g_strrstr(converted->message, "ancel") == NULL)
        message = g_strdup_printf("%s cancelled: %s", self->operation, converted->message);
    else
        message = g_strdup(converted->message);

    publish(self);
    g_object_freeze_notify(G_OBJECT(self->iface));
    if (converted == NULL) {
        guint64 total = vdd_dbus_job_get_bytes_total(self->iface);
        vdd_dbus_job_set_bytes_done(self->iface, total);
        vdd_dbus_job_set_progress(self->iface, 1.0);
        vdd_dbus_job_set_state(self->iface, "completed");
    } else {
        vdd_dbus_job_set_state(self->iface, cancelled ? "cancelled" : "failed");
        vdd_dbus_job_set_error(self->iface, message);
    }
    vdd_dbus_job_set_cancelable(self->iface, FALSE);
    g_object_thaw_notify(G_OBJECT(self->iface));
    /* The properties go out before Completed, so a client that stops
     * listening at Completed has seen the final values. */
    g_dbus_interface_skeleton_flush(G_DBUS_INTERFACE_SKELETON(self->iface));
    vdd_dbus_job_emit_completed(self->iface, converted == NULL, message);
    g_message("job %u (%s, uid %u): %s", self->id, self->operation, self->uid,
              converted == NULL ? "succeeded" : message);
    vdd_manager_job_finished(self->manager, self);
    g_timeout_add_seconds(vdd_job_linger_seconds, unexport, g_object_ref(self));
}

void vdd_job_complete_now(VddJob *self, const GError *error) { finish(self, error); }

static void job_run(gpointer data)
{
    VddJob *self = data;
    GError *error = NULL;
    if (g_cancellable_set_error_if_cancelled(self->cancellable, &error) ||
        !self->func(self, self->data, self->cancellable, &error))
        self->error = error;
}

/* The job has a slot: its work goes to a thread now. The change goes out at
 * once, so a job that is quick to end is still seen running. */
static void job_started(gpointer data)
{
    VddJob *self = data;
    if (self->finished)
        return;
    vdd_dbus_job_set_state(self->iface, "running");
    g_dbus_interface_skeleton_flush(G_DBUS_INTERFACE_SKELETON(self->iface));
}

/* After the work, or instead of it when cancelled while waiting. */
static void job_done(gpointer data)
{
    VddJob *self = data;
    if (self->error == NULL && g_cancellable_is_cancelled(self->cancellable))
        self->error = g_error_new(VDD_ERROR, VDD_ERROR_CANCELLED, "%s cancelled before it started",
                                  self->operation);
    finish(self, self->error);
    g_object_unref(self);
}

/* The job takes its work and starts publishing its progress; the Work
 * that runs it. */
static Work *job_work(VddJob *self, VddJobFunc func, VddJobDoneFunc done, gpointer data,
                      GDestroyNotify free_data)
{
    self->func = func;
    self->done = done;
    self->data = data;
    self->free_data = free_data;
    self->publish_id = g_timeout_add(PUBLISH_INTERVAL_MS, publish_tick, self);
    Work *w = g_new0(Work, 1);
    w->user = self->user;
    w->run = job_run;
    w->done = job_done;
    w->data = g_object_ref(self);
    return w;
}

void vdd_job_start(VddJob *self, VddJobFunc func, VddJobDoneFunc done, gpointer data,
                   GDestroyNotify free_data)
{
    Work *w = job_work(self, func, done, data, free_data);
    w->cancellable = g_object_ref(self->cancellable);
    w->started = job_started;
    queue_work(w);
}

/* A server's work runs beside the pool, on a thread of its own: it waits
 * for its clients and its end for hours and holds none of the slots that
 * copies share; the caller's admission still counts it. */
static gboolean server_done(gpointer data)
{
    work_end(data);
    dispatch();
    return G_SOURCE_REMOVE;
}

static gpointer server_thread(gpointer data)
{
    Work *w = data;
    w->run(w->data);
    g_main_context_invoke(NULL, server_done, w);
    return NULL;
}

void vdd_job_start_server(VddJob *self, VddJobFunc func, VddJobDoneFunc done, gpointer data,
                          GDestroyNotify free_data)
{
    Work *w = job_work(self, func, done, data, free_data);
    job_started(self);
    g_thread_unref(g_thread_new("vdd-server", server_thread, w));
}

/* ----- Cancel ----- */

static void cancel_now(VddJob *self, GDBusMethodInvocation *invocation, guint32 uid)
{
    if (self->finished) {
        /* Named as 'vdiskctl jobs' shows it: its number. */
        g_dbus_method_invocation_return_error(invocation, VDD_ERROR, VDD_ERROR_FAILED,
                                              "job %s has already completed",
                                              strrchr(self->path, '/') + 1);
        return;
    }
    g_message("uid %u: Cancel %s (%s): ok", uid, self->path, self->operation);
    g_cancellable_cancel(self->cancellable);
    vdd_dbus_job_complete_cancel(self->iface, invocation);
}

typedef struct {
    VddJob *job;
    GDBusMethodInvocation *invocation;
} CancelCall;

static void cancel_call_free(CancelCall *c)
{
    g_object_unref(c->job);
    g_object_unref(c->invocation);
    g_free(c);
}

static void other_user_checked(GObject *source, GAsyncResult *res, gpointer data)
{
    CancelCall *c = data;
    g_autoptr(GError) error = NULL;
    guint32 uid;
    if (vdd_bouncer_check_finish(VDD_BOUNCER(source), res, &uid, &error))
        cancel_now(c->job, c->invocation, uid);
    else
        g_dbus_method_invocation_return_gerror(c->invocation, error);
    cancel_call_free(c);
}

typedef struct {
    char none;
} CancelParams;

static void parse_cancel(VddJob *self, GVariant *args, CancelParams *p, VddCallSubject *s) {}

/* Anyone may cancel their own job (the rule's action is ""); another
 * user's job needs VDISK_ACTION_CANCEL_JOB_OTHER_USER. */
static void cancel(VddJob *self, VddCall *call, const CancelParams *p)
{
    if (call->uid == 0 || call->uid == self->uid) {
        cancel_now(self, call->invocation, call->uid);
        return;
    }
    CancelCall *c = g_new0(CancelCall, 1);
    c->job = g_object_ref(self);
    c->invocation = g_object_ref(call->invocation);
    g_autoptr(GHashTable) details = g_hash_table_new(g_str_hash, g_str_equal);
    g_hash_table_insert(details, "operation", self->operation);
    vdd_bouncer_check_async(vdd_manager_get_bouncer(self->manager), c->invocation,
                            VDISK_ACTION_CANCEL_JOB_OTHER_USER, details, other_user_checked, c);
}

static const VddMethod job_methods[] = {
    VDD_METHOD("Cancel", CancelParams, parse_cancel, cancel),
};

/* The caller's connection is gone (killed, crashed, or simply done with
 * us): nobody is left to take the result, so stop the work and remove what
 * it half wrote. */
static void caller_vanished(GDBusConnection *conn, const char *name, gpointer data)
{
    VddJob *self = data;
    if (self->finished || self->caller_gone)
        return;
    self->caller_gone = TRUE;
    g_message("job %u (%s, uid %u): its caller %s left the bus: cancelling", self->id,
              self->operation, self->uid, name);
    g_cancellable_cancel(self->cancellable);
}

VddJob *vdd_job_new(VddManager *manager, GDBusMethodInvocation *invocation, const char *operation,
                    guint32 uid, const char *const *objects)
{
    static guint next_id = 1;
    VddJob *self = g_object_new(VDD_TYPE_JOB, NULL);
    self->manager = g_object_ref(manager);
    self->id = next_id++;
    self->operation = g_strdup(operation);
    self->uid = uid;
    self->user = take_ticket(invocation, uid);
    self->path = g_strdup_printf(VDISK_JOBS_PATH "/%u", self->id);
    self->object = vdd_dbus_object_skeleton_new(self->path);
    self->iface = vdd_dbus_job_skeleton_new();
    const char *const none[] = { NULL };
    g_object_set(self->iface, "operation", operation, "started-by-uid", uid, "cancelable", TRUE,
                 "objects", objects ? objects : none, "state", "queued", "error", "", "start-time",
                 (guint64)g_get_real_time(), NULL);
    vdd_call_serve(self->iface, manager, self, job_methods, G_N_ELEMENTS(job_methods));
    vdd_dbus_object_skeleton_set_job(self->object, self->iface);
    vdd_manager_export_job(manager, self, G_DBUS_OBJECT_SKELETON(self->object));

    gboolean detach = FALSE;
    const char *sender = invocation ? g_dbus_method_invocation_get_sender(invocation) : NULL;
    if (sender != NULL && call_detached(invocation, &detach, NULL) && !detach) {
        /* A unique name never comes back: once it has no owner (even
         * before this watch starts) the caller is gone for good. */
        self->caller_watch = g_bus_watch_name_on_connection(
            g_dbus_method_invocation_get_connection(invocation), sender,
            G_BUS_NAME_WATCHER_FLAGS_NONE, NULL, caller_vanished, self, NULL);
    }
    return self;
}
