/* vdiskd's side of vdisk-worker: one job's image work run in a new,
 * confined worker process (worker-confine.h), so that vdiskd itself never
 * parses an image's contents. */
#pragma once

#include <gio/gio.h>

#include "job.h"
#include "pool.h"
#include "vdisk.h"

/* The pool folder a job's worker may have files opened beneath. The
 * worker opens no file itself: it asks, and vdiskd opens the name beneath
 * dirfd (read only, no symbolic link on the way, a regular file or a
 * folder) and passes the descriptor.
 *
 * Or, where files is set, a folder of the caller's own files that exists
 * only in name: files maps each name beneath it (as the engine asks for
 * it) to a descriptor the caller passed (borrowed), the worker gets a
 * duplicate of the one its name matches, and any other name, and every
 * folder, is refused; dirfd is -1 and nothing is opened by name. */
typedef struct {
    int dirfd;
    const char *dir_path;
    GHashTable *files; /* char* -> GINT_TO_POINTER(fd), or NULL */
    /* How the worker's errors name a file beneath it, as its caller knows
     * it: "POOL" for DIR/NAME becomes POOL/NAME, "" leaves the folder out
     * (NAME as the caller gave it); NULL names it by its path. */
    const char *label;
} VddWorkerFolder;

/* How one worker is run besides its request. */
typedef struct {
    const int *fds; /* borrowed; the worker gets copies */
    guint n_fds;
    const VddWorkerFolder *folders; /* an image's "folder" indexes these */
    guint n_folders;                /* 0: the worker may open nothing */
    VdProgressFunc progress;        /* may be NULL */
    gpointer progress_data;
    GCancellable *cancellable; /* may be NULL; cancelling kills the worker */
    guint timeout_seconds;     /* the longest silence mid-message; 0: 30 s */
} VddWorkerCall;

/* Start a worker, hand it request (a{sv}, see worker-protocol.h; a
 * floating reference is sunk) and call's descriptors, answer its requests
 * to open files beneath call's folders, relay its progress, and wait for
 * its result. Blocks: call it off the main loop, except for a describe.
 *
 * Returns the result message (a new reference) when the work succeeded.
 * Otherwise NULL with: the worker's own error; G_IO_ERROR_CANCELLED; or,
 * when the worker crashed, was killed (by seccomp, a limit, anyone) or
 * broke the protocol, VDD_ERROR_FAILED "the image could not be processed
 * safely". */
GVariant *vdd_worker_run(GVariant *request, const VddWorkerCall *call, GError **error);

/* vdd_worker_run for a job's work: progress goes to job (may be NULL),
 * cancellable is the job's, and files are opened beneath the folders of
 * pools (NULL-terminated, in the order of the images' "folder"; NULL:
 * none). */
GVariant *vdd_worker_run_job(GVariant *request, const int *fds, guint n_fds, VddPool *const *pools,
                             VddJob *job, GCancellable *cancellable, GError **error);

/* vdd_worker_run_job with one more folder after the pools': the caller's
 * files (see VddWorkerFolder), NULL for none. */
GVariant *vdd_worker_run_job_with_files(GVariant *request, const int *fds, guint n_fds,
                                        VddPool *const *pools, const VddWorkerFolder *files,
                                        VddJob *job, GCancellable *cancellable, GError **error);

/* Request entries for a job that reads the caller's file (descriptor 0):
 * root's files have the formats' own bounds, everyone else's
 * VDD_MAX_METADATA. format may be NULL (probe). */
void vdd_worker_request_caller_file(GVariantDict *d, const char *operation, guint32 uid,
                                    const char *format, const char *label, VdOpenFlags flags);
/* The same for a caller's file that reads through a chain of the
 * caller's files (a differencing image on its parents): the file is
 * `source_name` beneath the folder of the caller's files (index folder),
 * and its parents, nearest first, are parent_names there (each relative
 * to that folder), named to the engine as its backing chain so that no
 * parent is searched for. Everyone's files but root's have their
 * metadata bounded by VDD_MAX_METADATA, the chain's together. */
void vdd_worker_request_caller_chain(GVariantDict *d, const char *operation, guint32 uid,
                                     const char *format, gint32 folder, const char *source_name,
                                     const char *const *parent_names);
/* After vdd_worker_request_caller_file: the caller's file is an OVA
 * appliance, and the source is its disk index (from 0). */
void vdd_worker_request_appliance_disk(GVariantDict *d, gint32 index);
/* After vdd_worker_request_caller_file: the caller's descriptor is a
 * socket connected to an NBD server, and the source the export of that
 * name on it ("" the default), read as raw. */
void vdd_worker_request_nbd_source(GVariantDict *d, const char *export_name);
/* And for a new image in descriptor fd_index (role "target"): its format, create
 * options and the secrets they name (may be NULL), with a label for
 * messages; name is its name beneath the first folder's pool (NULL: a
 * caller's file, which may name no other file). */
void vdd_worker_request_target(GVariantDict *d, gint32 fd_index, const char *label,
                               const char *name, VdOpenFlags flags, const char *format,
                               VdOptions *create, VdSecrets *secrets);
/* A pool volume in descriptor fd_index as role ("source" or "target"):
 * the pool folder it lies in (an index into the call's folders), its
 * recorded format (NULL: probe), its name beneath the pool, a label for
 * messages, open flags and its key (may be NULL). Its metadata is bounded
 * by VDD_MAX_METADATA. */
void vdd_worker_request_volume(GVariantDict *d, const char *role, gint32 fd_index, gint32 folder,
                               const char *format, const char *name, const char *label,
                               VdOpenFlags flags, VdOptions *open_options, VdSecrets *secrets);

/* After the role's image is in d: it is volume name of pool, an rbd pool,
 * which the worker opens through librbd by the name the pool's
 * configuration gives it (never a caller's), with the client's key (read
 * by vdiskd from the keyring; the worker gets no keyring file). The
 * request also names the cluster's configuration, the one file the
 * worker may read, and lets it connect to the network. */
void vdd_worker_request_rbd(GVariantDict *d, const char *role, VddPool *pool, const char *name);

/* Serve a volume over NBD until cancelled: a worker that confines itself
 * and runs nbdkit (request "serve-nbd", worker-protocol.h) with fds
 * (borrowed: the volume, the caller's listening socket), the files the
 * volume names opened for it beneath pool (its folder 0) as for a job.
 * The request's secrets are wiped once sent. Blocks: call it off the
 * main loop. Returns TRUE never; FALSE with
 * G_IO_ERROR_CANCELLED once cancellable is cancelled and the server
 * stopped (vdiskd closes the worker's socket, the worker stops nbdkit:
 * TERM, then KILL after 5 s), the worker's error when it refused, or
 * VDD_ERROR_FAILED when the server could not start or ended by itself. */
/* Where nbdkit and vdisk's plugin for it are, for vdd_worker_serve:
 * nbdkit on PATH, the plugin $VDISK_NBDKIT_PLUGIN (the build tree, for
 * the tests) or nbdkit's plugin folder. New strings, or FALSE with
 * VDD_ERROR_UNSUPPORTED_FORMAT saying which is missing. */
gboolean vdd_worker_nbdkit(char **nbdkit, char **plugin, GError **error);
gboolean vdd_worker_serve(GVariant *request, const int *fds, guint n_fds, VddPool *pool,
                          GCancellable *cancellable, GError **error);

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
