/* vdisk: progress display for long jobs (see progress.h). */
#include "progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include "cli.h"

/* qemu-img prints a new line whenever another percent is done. */
#define LINES_STEP 1.0

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
    gboolean drawn;      /* BAR: a line is on screen and must be ended */
};

ProgressMode progress_choose_mode(FILE *stream, gboolean requested, gboolean quiet)
{
    if (quiet)
        return PROGRESS_NONE;
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
    g_free(p->waiting);
    g_free(p->label);
    g_free(p);
}

void progress_report(guint64 done, guint64 total, gpointer user_data)
{
    Progress *p = user_data;

    g_mutex_lock(&p->lock);
    p->done = done;
    p->total = total;
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

static void draw_lines(Progress *p, double percent, gboolean force)
{
    if (!force && p->last_percent >= 0 && percent - p->last_percent < LINES_STEP)
        return;
    fprintf(p->stream, "    (%3.2f/100%%)\r", percent);
    fflush(p->stream);
    p->last_percent = percent;
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

/* The text right of the bar: bytes done, rate and time left. */
static char *bar_details(Progress *p, guint64 done, guint64 total, guint64 reported_rate,
                         gboolean finished)
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

static void draw_bar(Progress *p, guint64 done, guint64 total, guint64 rate, gboolean finished)
{
    double percent = finished ? 100.0 : percent_of(done, total);
    g_autofree char *details = bar_details(p, done, total, rate, finished);
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

    g_mutex_lock(&p->lock);
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
        draw_lines(p, finished ? 100.0 : percent_of(done, total), finished);
        break;
    case PROGRESS_BAR:
        if (waiting != NULL && !finished)
            draw_waiting(p, waiting);
        else
            draw_bar(p, done, total, finished ? 0 : rate, finished);
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
