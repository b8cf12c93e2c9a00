#include "job.h"

#include "bouncer.h"
#include "errors.h"
#include "manager.h"
#include "vdd-dbus.h"
#include "vdisk-names.h"

guint vdd_job_linger_seconds = 5;

/* The bounded worker pool every job runs on: a few jobs at once, the rest
 * wait; each job's copy engine has worker threads of its own. */
#define MAX_RUNNING_JOBS 3
/* PropertiesChanged for progress at most this often (and at least, while it
 * moves). */
#define PUBLISH_INTERVAL_MS 200

struct _VddJob {
    GObject parent;
    VddManager *manager; /* strong */
    guint id;
    char *path;
    char *operation;
    guint32 uid;
    VddDbusObjectSkeleton *object;
    VddDbusJob *iface;
    GCancellable *cancellable;

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

static GThreadPool *pool;

static void vdd_job_finalize(GObject *obj)
{
    VddJob *self = VDD_JOB(obj);
    g_clear_handle_id(&self->publish_id, g_source_remove);
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

static gboolean worker_done(gpointer data)
{
    VddJob *self = data;
    finish(self, self->error);
    g_object_unref(self);
    return G_SOURCE_REMOVE;
}

static void worker(gpointer data, gpointer unused)
{
    VddJob *self = data;
    GError *error = NULL;
    if (g_cancellable_set_error_if_cancelled(self->cancellable, &error) ||
        !self->func(self, self->data, self->cancellable, &error))
        self->error = error;
    g_main_context_invoke(NULL, worker_done, self);
}

void vdd_job_start(VddJob *self, VddJobFunc func, VddJobDoneFunc done, gpointer data,
                   GDestroyNotify free_data)
{
    self->func = func;
    self->done = done;
    self->data = data;
    self->free_data = free_data;
    if (pool == NULL)
        pool = g_thread_pool_new(worker, NULL, MAX_RUNNING_JOBS, FALSE, NULL);
    self->publish_id = g_timeout_add(PUBLISH_INTERVAL_MS, publish_tick, self);
    g_thread_pool_push(pool, g_object_ref(self), NULL);
}

/* ----- Cancel ----- */

static void cancel_now(VddJob *self, GDBusMethodInvocation *invocation, guint32 uid)
{
    if (self->finished) {
        g_dbus_method_invocation_return_error(invocation, VDD_ERROR, VDD_ERROR_FAILED,
                                              "job %s has already completed", self->path);
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

static void caller_checked(GObject *source, GAsyncResult *res, gpointer data)
{
    CancelCall *c = data;
    g_autoptr(GError) error = NULL;
    guint32 uid;
    if (!vdd_bouncer_check_finish(VDD_BOUNCER(source), res, &uid, &error)) {
        g_dbus_method_invocation_return_gerror(c->invocation, error);
        cancel_call_free(c);
        return;
    }
    if (uid == 0 || uid == c->job->uid) {
        cancel_now(c->job, c->invocation, uid);
        cancel_call_free(c);
        return;
    }
    g_autoptr(GHashTable) details = g_hash_table_new(g_str_hash, g_str_equal);
    g_hash_table_insert(details, "operation", c->job->operation);
    vdd_bouncer_check_async(VDD_BOUNCER(source), c->invocation, VDISK_ACTION_CANCEL_JOB_OTHER_USER,
                            details, other_user_checked, c);
}

static gboolean handle_cancel(VddDbusJob *iface, GDBusMethodInvocation *invocation,
                              GVariant *options, VddJob *self)
{
    vdd_manager_touch(self->manager);
    CancelCall *c = g_new0(CancelCall, 1);
    c->job = g_object_ref(self);
    c->invocation = g_object_ref(invocation);
    vdd_bouncer_check_async(vdd_manager_get_bouncer(self->manager), invocation, NULL, NULL,
                            caller_checked, c);
    return TRUE;
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
    self->path = g_strdup_printf(VDISK_JOBS_PATH "/%u", self->id);
    self->object = vdd_dbus_object_skeleton_new(self->path);
    self->iface = vdd_dbus_job_skeleton_new();
    const char *const none[] = { NULL };
    g_object_set(self->iface, "operation", operation, "started-by-uid", uid, "cancelable", TRUE,
                 "objects", objects ? objects : none, "state", "running", "error", "", "start-time",
                 (guint64)g_get_real_time(), NULL);
    g_signal_connect(self->iface, "handle-cancel", G_CALLBACK(handle_cancel), self);
    vdd_dbus_object_skeleton_set_job(self->object, self->iface);
    vdd_manager_export_job(manager, self, G_DBUS_OBJECT_SKELETON(self->object));
    return self;
}
