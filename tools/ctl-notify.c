/* vdiskctl --notify: the command's one desktop notification (notify.h).
 *
 * A process runs one command, so the notification is this file's own:
 * vdiskctl.c starts it once the command line is read and ends it with the
 * command's status, ctl-job.c feeds it every job's progress, and
 * ctl-output.c hands it each line the user is told, the last of which is
 * the result's body ("Imported ..." or the error).
 */
#include "notify.h"

#include <stdlib.h>

static gboolean requested;
static Notify *notification;
static char *last_message;

void ctl_notify_request(void) { requested = TRUE; }

gboolean ctl_notify_requested(void) { return requested; }

void ctl_notify_start(const char *command, const char *operand)
{
    if (!requested || notification != NULL)
        return;
    g_autofree char *base = g_path_get_basename(operand != NULL ? operand : "");
    g_autofree char *title = g_str_has_prefix(command, "import")
                                 ? g_strdup_printf("Importing %s into KVM", base)
                                 : g_strdup_printf("vdiskctl %s %s", command, base);
    notification = notify_new(title);
}

void ctl_notify_progress(guint64 done, guint64 total)
{
    if (notification != NULL)
        notify_progress(notification, done, total);
}

void ctl_notify_record(const char *message)
{
    if (notification == NULL)
        return;
    g_free(last_message);
    last_message = g_strdup(message);
}

void ctl_notify_end(int status)
{
    if (notification == NULL)
        return;
    gboolean ok = status == EXIT_SUCCESS;
    notify_finish(notification, ok, NULL,
                  last_message != NULL ? last_message
                  : ok                 ? "Done."
                                       : "Failed.");
    g_clear_pointer(&notification, notify_free);
    g_clear_pointer(&last_message, g_free);
}
