/* A Job: one long operation, exported at /org/vdisk/VDisk1/jobs/<n> while it
 * runs and a few seconds after, run on the daemon's bounded worker pool.
 *
 * The pool is shared fairly: every non-root caller may have a few jobs
 * running and a few more waiting (beyond that a call gets Busy before
 * anything is created), and the last slot is kept for root and the
 * privileged group, so plain users' endless jobs never starve an
 * administrator's. A job ends with the bus connection that started it
 * unless that call's options said detach = true. */
#pragma once

#include <gio/gio.h>

typedef struct _VddManager VddManager;

#define VDD_TYPE_JOB (vdd_job_get_type())
G_DECLARE_FINAL_TYPE(VddJob, vdd_job, VDD, JOB, GObject)

/* Runs on a worker thread. Report progress with vdd_job_progress (a
 * VdProgressFunc); check cancellable. */
typedef gboolean (*VddJobFunc)(VddJob *job, gpointer data, GCancellable *cancellable,
                               GError **error);
/* Runs on the main thread once the work is done, before Completed is
 * emitted: update volumes, remove partial targets, release locks. error
 * is NULL on success; it may rewrite *message. */
typedef void (*VddJobDoneFunc)(VddJob *job, gpointer data, const GError *error);

/* Admission, called once a method is authorised and before it creates
 * anything: for a method that starts a job (or InspectFile, which works on
 * the job pool), count one more job against uid's limit and hold it on the
 * invocation until vdd_job_new or vdd_job_run_work takes it (or the
 * invocation is freed). FALSE with Busy past the limit, or InvalidArgument
 * when the options' "detach" is not a boolean. */
gboolean vdd_job_admit(GDBusMethodInvocation *invocation, guint32 uid, GError **error);

/* A new job, exported at once, for the method call invocation. Its State is
 * "queued" until its work takes one of the job slots, then "running", and
 * at its end "completed", "failed" or "cancelled". Unless the call's
 * options had detach = true, the job is cancelled when the caller's bus
 * name goes away. objects: volume paths it works on (may be NULL). */
VddJob *vdd_job_new(VddManager *manager, GDBusMethodInvocation *invocation, const char *operation,
                    guint32 uid, const char *const *objects);
const char *vdd_job_get_object_path(VddJob *self);
guint32 vdd_job_get_uid(VddJob *self);
GCancellable *vdd_job_get_cancellable(VddJob *self);
/* Queue the work. The job keeps data until done has run, then frees it. */
void vdd_job_start(VddJob *self, VddJobFunc func, VddJobDoneFunc done, gpointer data,
                   GDestroyNotify free_data);
/* The same for a server (ExportNbd), whose work lasts until it is
 * cancelled: it runs at once on a thread of its own, holding none of the
 * job slots the copies share. */
void vdd_job_start_server(VddJob *self, VddJobFunc func, VddJobDoneFunc done, gpointer data,
                          GDestroyNotify free_data);
/* Complete at once, without work (e.g. CreateVolume of an empty image). */
void vdd_job_complete_now(VddJob *self, const GError *error);

/* Work for a method call that is not a job (InspectFile): run(data) on the
 * job pool under uid's limits, then done(data) on the main thread, which
 * replies to the call. */
typedef void (*VddWorkFunc)(gpointer data);
void vdd_job_run_work(GDBusMethodInvocation *invocation, guint32 uid, VddWorkFunc run,
                      VddWorkFunc done, gpointer data);

/* A VdProgressFunc: user_data is the VddJob. Thread safe. */
void vdd_job_progress(guint64 done, guint64 total, gpointer user_data);

/* Seconds a finished job stays exported (tests shorten it). */
extern guint vdd_job_linger_seconds;
/* Per non-root uid: jobs running at once, and jobs waiting beyond those
 * (daemon.c sets them from the command line). */
extern guint vdd_job_max_running_per_user;
extern guint vdd_job_max_queued_per_user;
/* Members of this group share root's reserved slot (the group polkit's
 * rules trust); NULL: root only. */
extern const char *vdd_job_privileged_group;
