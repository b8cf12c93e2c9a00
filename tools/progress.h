/* vdisk: progress display for long jobs.
 *
 * On a terminal a bar with percentage, bytes, rate and ETA is redrawn in
 * place. With -p on a non-terminal the output is qemu-img's "(12.34/100%)"
 * lines, so scripts that parse qemu-img -p keep working. Otherwise nothing
 * is printed.
 *
 * The engine reports progress from its worker threads; progress_report only
 * records the numbers, and progress_tick (on the main loop) draws them, so
 * the terminal is written from one thread only.
 */
#pragma once

#include <glib.h>
#include <stdio.h>

#include "vdisk.h"

G_BEGIN_DECLS

typedef enum {
    PROGRESS_NONE,
    PROGRESS_LINES, /* qemu-img -p style */
    PROGRESS_BAR,   /* interactive bar */
} ProgressMode;

typedef struct Progress Progress;

/* The mode for a command: requested is -p, quiet is -q (which wins, as in
 * qemu-img). A bar needs stream to be a terminal. */
ProgressMode progress_choose_mode(FILE *stream, gboolean requested, gboolean quiet);

/* label is shown before the bar ("Converting"). */
Progress *progress_new(ProgressMode mode, FILE *stream, const char *label);
void progress_free(Progress *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Progress, progress_free)

/* A VdProgressFunc: safe to call from any thread. */
void progress_report(guint64 done, guint64 total, gpointer user_data);
/* The current transfer rate in bytes/s as the worker measured it (vdiskd's
 * Job.Rate); without it the bar shows the average since progress_new. */
void progress_report_rate(Progress *p, guint64 rate);
/* While waiting is not NULL, the bar shows that text instead of the numbers
 * (a job that waits for one of vdiskd's slots); setting it back to NULL
 * restarts the clock that the average rate and the time taken count from. */
void progress_set_waiting(Progress *p, const char *waiting);
/* Before a copy of sources (n_sources of them, one after the other, as
 * convert joins them) starts, on the job's thread: find where their data
 * lies (block status; holes and zero runs are not data), so that the time
 * left counts them as the fast work they are. top_only: only what a source
 * itself stores is copied (convert -B); zero_is_data: zero runs are
 * written as data (convert -S 0). The work done is then taken as a prefix of
 * the guest range, as the copy engine reports it. Fails only when cancelled
 * or on a read error of the metadata; the ETA then stays by bytes. */
gboolean progress_scan_sources(Progress *p, VdImage *const *sources, guint n_sources,
                               gboolean top_only, gboolean zero_is_data, GCancellable *cancellable,
                               GError **error);
/* A GSourceFunc for cli_run_job: draws the latest numbers. */
gboolean progress_tick(gpointer user_data);
/* Draw the final state and end the line. */
void progress_finish(Progress *p, gboolean success);

G_END_DECLS
