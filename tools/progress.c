/* vdisk: progress display for long jobs (see progress.h). */
#include "progress.h"
#include "voice.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include "cli.h"

/* qemu-img prints a new line whenever more than another percent is done. */
#define LINES_STEP 1.0
/* How fast holes and zero runs pass, whatever the data's pace: they are
 * neither read, written nor compressed (a 64 GiB empty image converts in
 * about a second). A time, not a share of the data's, since data may go at
 * 30 MiB/s (compressed) or 2 GiB/s (copied) while holes go as fast. */
#define HOLE_BYTES_PER_SECOND (64.0 * 1024 * 1024 * 1024)

/* One run of data in the source: [start, end), with the data bytes of the
 * runs before it. */
typedef struct {
    guint64 start;
    guint64 end;
    guint64 before;
} DataRun;

struct Progress {
    ProgressMode mode;
    FILE *stream;
    char *label;
    GMutex lock; /* guards done, total and rate */
    guint64 done;
    guint64 total;
    guint64 rate;  /* bytes/s measured by whoever does the work; 0: unknown */
    char *waiting; /* shown instead of the numbers; NULL once the work runs */
    gint64 start_us;
    double last_percent; /* LINES: last printed value; < 0 before the first */
    GArray *data_runs;   /* DataRun, by offset; NULL: every byte counts alike */
    gboolean drawn;      /* BAR: a line is on screen and must be ended */
};

ProgressMode progress_choose_mode(FILE *stream, gboolean requested, gboolean quiet)
{
    if (quiet)
        return PROGRESS_NONE;
    /* Run as qemu-img: qemu-img's lines with -p, terminal or not, and
     * nothing without it. */
    if (voice_is_qemu())
        return requested ? PROGRESS_LINES : PROGRESS_NONE;
    if (isatty(fileno(stream)))
        return PROGRESS_BAR;
    return requested ? PROGRESS_LINES : PROGRESS_NONE;
}

Progress *progress_new(ProgressMode mode, FILE *stream, const char *label)
{
    Progress *p = g_new0(Progress, 1);

    p->mode = mode;
    p->stream = stream;
    p->label = g_strdup(label);
    g_mutex_init(&p->lock);
    p->start_us = g_get_monotonic_time();
    p->last_percent = -1;
    return p;
}

void progress_free(Progress *p)
{
    if (p == NULL)
        return;
    g_mutex_clear(&p->lock);
    if (p->data_runs != NULL)
        g_array_unref(p->data_runs);
    g_free(p->waiting);
    g_free(p->label);
    g_free(p);
}

static double percent_of(guint64 done, guint64 total);
static void draw_lines(Progress *p, double percent);
static guint64 data_below(GArray *runs, guint64 offset);

/* qemu-img's percentage counts the data copied, not the holes passed. */
static double lines_percent(Progress *p, guint64 done, guint64 total)
{
    if (p->data_runs == NULL || total == 0)
        return percent_of(done, total);
    guint64 data_total = data_below(p->data_runs, total);
    if (data_total == 0)
        return done >= total ? 100.0 : 0.0;
    return percent_of(data_below(p->data_runs, MIN(done, total)), data_total);
}

void progress_report(guint64 done, guint64 total, gpointer user_data)
{
    Progress *p = user_data;

    g_mutex_lock(&p->lock);
    p->done = done;
    p->total = total;
    /* qemu-img's lines come as the work goes, one for each step of more
     * than a percent and one when it is all done, whatever the speed; a
     * pipe is no terminal, so any thread may write them. */
    if (p->mode == PROGRESS_LINES && p->last_percent >= 0) {
        double percent = lines_percent(p, done, total);
        if (percent > p->last_percent + LINES_STEP || (percent >= 100.0 && p->last_percent < 100.0))
            draw_lines(p, percent);
    }
    g_mutex_unlock(&p->lock);
}

void progress_report_rate(Progress *p, guint64 rate)
{
    g_mutex_lock(&p->lock);
    p->rate = rate;
    g_mutex_unlock(&p->lock);
}

void progress_set_waiting(Progress *p, const char *waiting)
{
    g_mutex_lock(&p->lock);
    if (p->waiting != NULL && waiting == NULL)
        p->start_us = g_get_monotonic_time();
    g_free(p->waiting);
    p->waiting = g_strdup(waiting);
    g_mutex_unlock(&p->lock);
}

static double percent_of(guint64 done, guint64 total)
{
    if (total == 0)
        return 0.0;
    return MIN(100.0, (double)done * 100.0 / (double)total);
}

static void draw_lines(Progress *p, double percent)
{
    fprintf(p->stream, "    (%3.2f/100%%)\r", percent);
    fflush(p->stream);
    p->last_percent = percent;
}

/* Data bytes of the source below offset. */
static guint64 data_below(GArray *runs, guint64 offset)
{
    guint lo = 0, hi = runs->len;

    /* the first run that starts at or past offset */
    while (lo < hi) {
        guint mid = lo + (hi - lo) / 2;
        if (g_array_index(runs, DataRun, mid).start < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return 0;
    const DataRun *r = &g_array_index(runs, DataRun, lo - 1);
    return r->before + MIN(offset, r->end) - r->start;
}

gboolean progress_scan_sources(Progress *p, VdImage *const *sources, guint n_sources,
                               gboolean top_only, gboolean zero_is_data, GCancellable *cancellable,
                               GError **error)
{
    g_autoptr(GArray) runs = g_array_new(FALSE, FALSE, sizeof(DataRun));
    guint64 data = 0, base = 0;

    for (guint i = 0; i < n_sources; i++) {
        VdImage *source = sources[i];
        guint64 size = vd_image_size(source);
        for (guint64 offset = 0; offset < size;) {
            VdBlockStatus st;
            if (g_cancellable_set_error_if_cancelled(cancellable, error) ||
                !vd_image_block_status(source, offset, size - offset, !top_only, &st, error))
                return FALSE;
            guint64 n = MAX(st.length, 1);
            gboolean zero = (st.flags & VD_BLOCK_ZERO) || !(st.flags & VD_BLOCK_DATA);
            gboolean copied = top_only ? (st.flags & VD_BLOCK_ALLOCATED) != 0 : TRUE;
            if (copied && (!zero || zero_is_data)) {
                DataRun *last = runs->len > 0 ? &g_array_index(runs, DataRun, runs->len - 1) : NULL;
                if (last != NULL && last->end == base + offset) {
                    last->end += n;
                } else {
                    DataRun run = { base + offset, base + offset + n, data };
                    g_array_append_val(runs, run);
                }
                data += n;
            }
            offset += n;
        }
        base += size;
    }
    g_mutex_lock(&p->lock);
    if (p->data_runs != NULL)
        g_array_unref(p->data_runs);
    p->data_runs = g_steal_pointer(&runs);
    g_mutex_unlock(&p->lock);
    return TRUE;
}

static guint terminal_width(FILE *stream)
{
    struct winsize ws;

    if (ioctl(fileno(stream), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40)
        return ws.ws_col;
    return 80;
}

/* "1:02:03" or "02:03"; "--:--" when unknown. */
static char *format_duration(double seconds)
{
    guint64 s;

    if (seconds < 0 || seconds > 100.0 * 3600)
        return g_strdup("--:--");
    s = (guint64)(seconds + 0.5);
    if (s >= 3600)
        return g_strdup_printf("%" G_GUINT64_FORMAT ":%02u:%02u", s / 3600, (guint)(s / 60 % 60),
                               (guint)(s % 60));
    return g_strdup_printf("%02u:%02u", (guint)(s / 60), (guint)(s % 60));
}

/* The time left when the source's data is known: the data still to copy at
 * the pace of the data copied so far, plus the holes left at their own
 * pace (an image whose data comes first is not taken to copy its holes at
 * the data's speed). < 0: unknown. */
static double time_left(GArray *runs, guint64 done, guint64 total, double elapsed)
{
    guint64 at = MIN(done, total);
    double data_done = (double)data_below(runs, at);
    double data_left = (double)data_below(runs, total) - data_done;
    double holes_done = (double)at - data_done;
    double holes_left = (double)(total - at) - data_left;
    double data_time = elapsed - holes_done / HOLE_BYTES_PER_SECOND;

    if (elapsed < 0.2)
        return -1;
    if (data_left <= 0)
        return holes_left / HOLE_BYTES_PER_SECOND;
    if (data_done <= 0 || data_time <= 0)
        return -1;
    return data_left * data_time / data_done + holes_left / HOLE_BYTES_PER_SECOND;
}

/* The text right of the bar: bytes done, rate and time left. */
static char *bar_details(Progress *p, GArray *runs, guint64 done, guint64 total,
                         guint64 reported_rate, gboolean finished)
{
    double elapsed = (double)(g_get_monotonic_time() - p->start_us) / G_USEC_PER_SEC;
    /* A rate the worker measured follows changes in speed; the average since
     * we started is the fallback. */
    double rate = reported_rate > 0 ? (double)reported_rate
                  : elapsed > 0.2   ? (double)done / elapsed
                                    : 0.0;
    g_autofree char *done_str = cli_format_size(done);
    g_autofree char *total_str = cli_format_size(total);
    g_autofree char *rate_str = cli_format_size((guint64)rate);
    g_autofree char *time_str = NULL;

    if (finished)
        time_str = format_duration(elapsed);
    else if (reported_rate == 0 && runs != NULL)
        time_str = format_duration(time_left(runs, done, total, elapsed));
    else
        time_str = format_duration(rate > 0 ? (double)(total - MIN(done, total)) / rate : -1);
    return g_strdup_printf("%s/%s %s/s %s %s", done_str, total_str, rate > 0 ? rate_str : "--",
                           finished ? "in" : "ETA", time_str);
}

static void draw_waiting(Progress *p, const char *waiting)
{
    fprintf(p->stream, "\r%s: %s\033[K", p->label, waiting);
    fflush(p->stream);
    p->drawn = TRUE;
}

static void draw_bar(Progress *p, GArray *runs, guint64 done, guint64 total, guint64 rate,
                     gboolean finished)
{
    double percent = finished ? 100.0 : percent_of(done, total);
    g_autofree char *details = bar_details(p, runs, done, total, rate, finished);
    guint width = terminal_width(p->stream);
    /* label, " 100% [", "] ", details, and one spare column so the cursor
     * never wraps */
    gint bar = (gint)width - (gint)strlen(p->label) - 8 - (gint)strlen(details) - 1;
    g_autoptr(GString) line = g_string_new(NULL);

    g_string_append_printf(line, "\r%s %3.0f%% ", p->label, percent);
    if (bar >= 10) {
        gint filled = (gint)(bar * percent / 100.0);
        g_string_append_c(line, '[');
        for (gint i = 0; i < bar; i++)
            g_string_append_c(line, i < filled ? '#' : '.');
        g_string_append(line, "] ");
    }
    g_string_append(line, details);
    /* Clear what a longer previous line left on the right. */
    g_string_append(line, "\033[K");
    fputs(line->str, p->stream);
    fflush(p->stream);
    p->drawn = TRUE;
}

static void draw(Progress *p, gboolean finished)
{
    guint64 done, total, rate;
    g_autofree char *waiting = NULL;
    g_autoptr(GArray) runs = NULL;

    g_mutex_lock(&p->lock);
    if (p->data_runs != NULL)
        runs = g_array_ref(p->data_runs);
    done = p->done;
    total = p->total;
    rate = p->rate;
    waiting = g_strdup(p->waiting);
    g_mutex_unlock(&p->lock);
    if (finished)
        done = total;

    switch (p->mode) {
    case PROGRESS_NONE:
        break;
    case PROGRESS_LINES:
        /* The first line, "(0.00/100%)", before any work; then the
         * reports draw (progress_report), and the end once more, as
         * qemu-img does. */
        g_mutex_lock(&p->lock);
        if (finished)
            draw_lines(p, 100.0);
        else if (p->last_percent < 0)
            draw_lines(p, percent_of(done, total));
        g_mutex_unlock(&p->lock);
        break;
    case PROGRESS_BAR:
        if (waiting != NULL && !finished)
            draw_waiting(p, waiting);
        else if (total > 0 || finished) /* nothing to show before the first report */
            draw_bar(p, runs, done, total, finished ? 0 : rate, finished);
        break;
    }
}

gboolean progress_tick(gpointer user_data)
{
    draw(user_data, FALSE);
    return G_SOURCE_CONTINUE;
}

void progress_finish(Progress *p, gboolean success)
{
    if (p->mode == PROGRESS_NONE)
        return;
    if (success)
        draw(p, TRUE);
    /* End the line we drew over with \r, so later output starts clean. */
    if (success || p->drawn || p->last_percent >= 0)
        fputc('\n', p->stream);
    fflush(p->stream);
}
