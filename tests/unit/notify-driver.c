/* Drives tools/notify.c for test-notify.py: notify-driver SUMMARY TOTAL
 * [-fast] DONE... -- ok|fail BODY reports each DONE of TOTAL bytes (0.3 s
 * apart, or at once with -fast), then the result, and prints "active" or
 * "inactive": whether a notification service answered. */
#include "notify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: notify-driver SUMMARY TOTAL [-fast] DONE... -- ok|fail BODY\n");
        return 2;
    }
    g_autoptr(Notify) n = notify_new(argv[1]);
    guint64 total = g_ascii_strtoull(argv[2], NULL, 10);
    gboolean fast = FALSE;
    int i = 3;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "-fast") == 0) {
            fast = TRUE;
            continue;
        }
        notify_progress(n, g_ascii_strtoull(argv[i], NULL, 10), total);
        if (!fast)
            g_usleep(G_USEC_PER_SEC * 3 / 10);
    }
    if (i + 2 >= argc) {
        fprintf(stderr, "notify-driver: missing '-- ok|fail BODY'\n");
        return 2;
    }
    notify_finish(n, strcmp(argv[i + 1], "ok") == 0, NULL, argv[i + 2]);
    printf("%s\n", notify_is_active(n) ? "active" : "inactive");
    return 0;
}
