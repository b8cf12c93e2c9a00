/* The bouncer: asks polkit (or a test policy) whether a caller may do what
 * the rules (rules.h) say a method needs. Methods missing from the rules
 * are denied. Checks are asynchronous; the caller's uid comes back with
 * the answer (for logs and Job.StartedByUID). */
#pragma once

#include <gio/gio.h>

/* The action the rules give interface.method: a polkit action id, "" for methods anyone
 * may call (GetPools, Job.Cancel of one's own job), NULL when the method is
 * unknown (deny). */
const char *vdd_bouncer_action_for(const char *interface, const char *method);

#define VDD_TYPE_BOUNCER (vdd_bouncer_get_type())
G_DECLARE_FINAL_TYPE(VddBouncer, vdd_bouncer, VDD, BOUNCER, GObject)

/* Connects to polkit lazily; never fails here. */
VddBouncer *vdd_bouncer_new(void);

/* Is the sender of invocation allowed? action NULL: look it up in the table
 * for the invocation's interface and method. details (string to string,
 * may be NULL) are passed to polkit rules: pool, volume, format, operation.
 * Root (uid 0) is always allowed. */
void vdd_bouncer_check_async(VddBouncer *self, GDBusMethodInvocation *invocation,
                             const char *action, GHashTable *details, GAsyncReadyCallback callback,
                             gpointer user_data);
/* For tests of the D-Bus objects without polkitd: policy decides every
 * check of a named action instead of polkit and the root rule. It gets the
 * action and the details and may change *uid (who the test pretends the
 * caller is); for the action "" (anyone) it only changes *uid, its answer
 * is ignored. NULL restores polkit. */
typedef gboolean (*VddBouncerPolicy)(const char *action, GHashTable *details, guint32 *uid,
                                     gpointer data);
void vdd_bouncer_set_policy(VddBouncer *self, VddBouncerPolicy policy, gpointer data);

/* TRUE when allowed; *uid is the caller's uid in either case (G_MAXUINT32
 * when unknown). FALSE with VDD_ERROR_NOT_AUTHORIZED naming the action. */
gboolean vdd_bouncer_check_finish(VddBouncer *self, GAsyncResult *result, guint32 *uid,
                                  GError **error);
