/* vdiskd's side of vdisk-worker: one job's image work run in a new,
 * confined worker process (worker-confine.h), so that vdiskd itself never
 * parses an image's contents. */
#pragma once

#include <gio/gio.h>

#include "vdisk.h"

/* Start a worker, hand it request (a{sv}, see worker-protocol.h; a
 * floating reference is sunk) and fds (borrowed; the worker gets copies),
 * relay its progress to progress(progress_data), and wait for its result.
 * Blocks: call it on the job pool. Cancelling kills the worker.
 *
 * Returns the result message (a new reference) when the work succeeded.
 * Otherwise NULL with: the worker's own error; G_IO_ERROR_CANCELLED; or,
 * when the worker crashed, was killed (by seccomp, a limit, anyone) or
 * broke the protocol, VDD_ERROR_FAILED "the image could not be processed
 * safely". */
GVariant *vdd_worker_run(GVariant *request, const int *fds, guint n_fds, VdProgressFunc progress,
                         gpointer progress_data, GCancellable *cancellable, GError **error);

/* Request entries for a job that reads the caller's file (descriptor 0):
 * root's files have the formats' own bounds, everyone else's
 * VDD_MAX_METADATA. format may be NULL (probe). */
void vdd_worker_request_caller_file(GVariantDict *d, const char *operation, guint32 uid,
                                    const char *format, const char *label, VdOpenFlags flags);
/* And for a convert into descriptor 1: the new image's format, create
 * options and the secrets they name (may be NULL), with a label for
 * messages. */
void vdd_worker_request_target(GVariantDict *d, const char *label, VdOpenFlags flags,
                               const char *format, VdOptions *create, VdSecrets *secrets);

/* Start a worker that confines itself and does no image work, and return
 * what it ran under (the "confinement" a{sv} of worker-protocol.h). Blocks. */
GVariant *vdd_worker_status(GError **error);

/* The "misbehave" option of a call, for the tests of the worker's
 * confinement: NULL unless vdiskd was built with -Dtest_hooks=true and
 * started with VDISKD_TEST_HOOKS=1. A new string. */
char *vdd_worker_test_misbehave(GVariant *options);

/* The worker executable: $VDISK_WORKER, else vdisk-worker next to this
 * program (the build tree; installed, both are in libexecdir), else
 * libexecdir's. */
const char *vdd_worker_path(void);
