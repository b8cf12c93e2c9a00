/* vdiskctl --notify: a long job shown as a desktop notification.
 *
 * A file manager runs vdiskctl from vdisk-import.desktop with no terminal
 * to see, so the job's progress and its result go to the user's
 * notification service (org.freedesktop.Notifications on the session
 * bus): one notification, replaced in place as the percentage changes
 * (the "value" hint, which GNOME Shell, KDE Plasma, dunst and others draw
 * as a bar), then replaced by the result. Without a session bus or a
 * notification service every call does nothing: a notification is a
 * courtesy, never a reason for the job to fail.
 */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

typedef struct Notify Notify;

/* A notification titled summary ("Importing MyVM.vdi"), sent at the first
 * notify_progress or notify_finish. The session bus is the one
 * DBUS_SESSION_BUS_ADDRESS names, or $XDG_RUNTIME_DIR/bus; none is
 * started. Never NULL; free with notify_free. */
Notify *notify_new(const char *summary);
void notify_free(Notify *n);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Notify, notify_free)

/* done of total bytes: the notification with the percentage as its body
 * and "value" hint. Sent only when the percentage changed, and then at
 * most four times a second (always for 100%). */
void notify_progress(Notify *n, guint64 done, guint64 total);

/* The result, replacing the progress: title summary (NULL keeps the one
 * of notify_new), body the message; "transfer.complete" or
 * "transfer.error" with critical urgency. Nothing is sent after it. */
void notify_finish(Notify *n, gboolean success, const char *summary, const char *body);

/* Whether a notification service answered (so far): for tests and for a
 * caller that would say something else instead. */
gboolean notify_is_active(const Notify *n);

/* ----- vdiskctl's notification (ctl-notify.c) ----- */

/* --notify was given; the notification starts with ctl_notify_start. */
void ctl_notify_request(void);
gboolean ctl_notify_requested(void);
/* With --notify: the notification of command on operand ("Importing
 * MyVM.vbox into KVM" for import and import-vm). Otherwise nothing. */
void ctl_notify_start(const char *command, const char *operand);
/* A job's bytes done of total (ctl-job.c). */
void ctl_notify_progress(guint64 done, guint64 total);
/* A line the user was told (ctl_say, ctl_error); the last is the body of
 * the result. */
void ctl_notify_record(const char *message);
/* The command ended with status (EXIT_SUCCESS or not): the result is
 * sent and the notification freed. */
void ctl_notify_end(int status);

G_END_DECLS
