/* A Job: one long operation, exported at /org/vdisk/VDisk1/jobs/<n> while it
 * runs and a few seconds after, run on the daemon's bounded worker pool. */
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

/* A new job, exported at once, for the method call invocation (its sender
 * started it). objects: volume paths it works on (may be NULL). */
VddJob *vdd_job_new(VddManager *manager, GDBusMethodInvocation *invocation, const char *operation,
                    guint32 uid, const char *const *objects);
const char *vdd_job_get_object_path(VddJob *self);
guint32 vdd_job_get_uid(VddJob *self);
GCancellable *vdd_job_get_cancellable(VddJob *self);
/* Queue the work. The job keeps data until done has run, then frees it. */
void vdd_job_start(VddJob *self, VddJobFunc func, VddJobDoneFunc done, gpointer data,
                   GDestroyNotify free_data);
/* Complete at once, without work (e.g. CreateVolume of an empty image). */
void vdd_job_complete_now(VddJob *self, const GError *error);

/* A VdProgressFunc: user_data is the VddJob. Thread safe. */
void vdd_job_progress(guint64 done, guint64 total, gpointer user_data);

/* Seconds a finished job stays exported (tests shorten it). */
extern guint vdd_job_linger_seconds;
