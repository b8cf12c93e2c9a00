#include "bouncer.h"

#include <polkit/polkit.h>
#include <string.h>

#include "errors.h"
#include "rules.h"
#include "vdisk-names.h"

const char *vdd_bouncer_action_for(const char *interface, const char *method)
{
    const VddRule *rule = vdd_rule_lookup(interface, method);
    return rule != NULL ? rule->action : NULL;
}

struct _VddBouncer {
    GObject parent;
    PolkitAuthority *authority; /* NULL until first needed */
    VddBouncerPolicy policy;    /* tests only */
    gpointer policy_data;
};

G_DEFINE_TYPE(VddBouncer, vdd_bouncer, G_TYPE_OBJECT)

static void vdd_bouncer_finalize(GObject *obj)
{
    VddBouncer *self = VDD_BOUNCER(obj);
    g_clear_object(&self->authority);
    G_OBJECT_CLASS(vdd_bouncer_parent_class)->finalize(obj);
}

static void vdd_bouncer_class_init(VddBouncerClass *klass)
{
    G_OBJECT_CLASS(klass)->finalize = vdd_bouncer_finalize;
}

static void vdd_bouncer_init(VddBouncer *self) {}

VddBouncer *vdd_bouncer_new(void) { return g_object_new(VDD_TYPE_BOUNCER, NULL); }

void vdd_bouncer_set_policy(VddBouncer *self, VddBouncerPolicy policy, gpointer data)
{
    self->policy = policy;
    self->policy_data = data;
}

typedef struct {
    GDBusMethodInvocation *invocation;
    char *action;
    GHashTable *details;
    guint32 uid;
} Check;

static void check_free(Check *c)
{
    g_object_unref(c->invocation);
    g_free(c->action);
    g_clear_pointer(&c->details, g_hash_table_unref);
    g_free(c);
}

/* "CreateVolume of POOL/VOLUME needs authorisation for ACTION": the
 * method and what the caller named, never an object path. */
static void deny(GTask *task, Check *c, const char *why)
{
    const char *pool = c->details ? g_hash_table_lookup(c->details, "pool") : NULL;
    const char *volume = c->details ? g_hash_table_lookup(c->details, "volume") : NULL;
    g_autofree char *of = pool == NULL     ? g_strdup("")
                          : volume == NULL ? g_strdup_printf(" of pool %s", pool)
                                           : g_strdup_printf(" of %s/%s", pool, volume);
    g_task_return_new_error(
        task, VDD_ERROR, VDD_ERROR_NOT_AUTHORIZED, "%s%s needs authorisation for %s%s%s",
        g_dbus_method_invocation_get_method_name(c->invocation), of,
        c->action ? c->action : "(no action: denied)", why ? ": " : "", why ? why : "");
}

static void polkit_done(GObject *source, GAsyncResult *res, gpointer data)
{
    g_autoptr(GTask) task = data;
    Check *c = g_task_get_task_data(task);
    g_autoptr(GError) error = NULL;
    g_autoptr(PolkitAuthorizationResult) result =
        polkit_authority_check_authorization_finish(POLKIT_AUTHORITY(source), res, &error);
    if (result == NULL) {
        g_warning("polkit check of %s failed: %s", c->action, error->message);
        deny(task, c, error->message);
        return;
    }
    if (polkit_authorization_result_get_is_authorized(result)) {
        g_task_return_boolean(task, TRUE);
        return;
    }
    deny(task, c,
         polkit_authorization_result_get_is_challenge(result)
             ? "authentication is required (retry interactively)"
             : NULL);
}

static void ask_polkit(VddBouncer *self, GTask *task, Check *c)
{
    if (self->authority == NULL) {
        g_autoptr(GError) error = NULL;
        self->authority = polkit_authority_get_sync(NULL, &error);
        if (self->authority == NULL) {
            g_warning("cannot reach polkit: %s", error->message);
            deny(task, c, "polkit is not available");
            g_object_unref(task);
            return;
        }
    }
    g_autoptr(PolkitSubject) subject =
        polkit_system_bus_name_new(g_dbus_method_invocation_get_sender(c->invocation));
    g_autoptr(PolkitDetails) details = polkit_details_new();
    if (c->details != NULL) {
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, c->details);
        while (g_hash_table_iter_next(&it, &k, &v))
            polkit_details_insert(details, k, v);
    }
    PolkitCheckAuthorizationFlags flags = POLKIT_CHECK_AUTHORIZATION_FLAGS_NONE;
    GDBusMessage *msg = g_dbus_method_invocation_get_message(c->invocation);
    if (g_dbus_message_get_flags(msg) & G_DBUS_MESSAGE_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION)
        flags |= POLKIT_CHECK_AUTHORIZATION_FLAGS_ALLOW_USER_INTERACTION;
    polkit_authority_check_authorization(self->authority, subject, c->action, details, flags, NULL,
                                         polkit_done, task);
}

static void uid_done(GObject *source, GAsyncResult *res, gpointer data)
{
    GTask *task = data;
    Check *c = g_task_get_task_data(task);
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) reply =
        g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), res, &error);
    if (reply == NULL) {
        deny(task, c, "cannot find out who the caller is");
        g_object_unref(task);
        return;
    }
    g_variant_get(reply, "(u)", &c->uid);
    if (c->action == NULL) {
        deny(task, c, NULL);
        g_object_unref(task);
        return;
    }
    VddBouncer *self = g_task_get_source_object(task);
    if (self->policy != NULL) {
        /* "" is anyone: the policy only says who the caller is. */
        if (self->policy(c->action, c->details, &c->uid, self->policy_data) || c->action[0] == '\0')
            g_task_return_boolean(task, TRUE);
        else
            deny(task, c, "the test policy says no");
        g_object_unref(task);
        return;
    }
    if (c->uid == 0 || c->action[0] == '\0') {
        g_task_return_boolean(task, TRUE);
        g_object_unref(task);
        return;
    }
    ask_polkit(self, task, c);
}

void vdd_bouncer_check_async(VddBouncer *self, GDBusMethodInvocation *invocation,
                             const char *action, GHashTable *details, GAsyncReadyCallback callback,
                             gpointer user_data)
{
    GTask *task = g_task_new(self, NULL, callback, user_data);
    Check *c = g_new0(Check, 1);
    c->invocation = g_object_ref(invocation);
    c->uid = G_MAXUINT32;
    if (action == NULL)
        action = vdd_bouncer_action_for(g_dbus_method_invocation_get_interface_name(invocation),
                                        g_dbus_method_invocation_get_method_name(invocation));
    c->action = g_strdup(action);
    c->details = details ? g_hash_table_ref(details) : NULL;
    g_task_set_task_data(task, c, (GDestroyNotify)check_free);
    const char *sender = g_dbus_method_invocation_get_sender(invocation);
    GDBusConnection *conn = g_dbus_method_invocation_get_connection(invocation);
    if (sender == NULL) { /* a peer-to-peer connection: no bus to ask */
        deny(task, c, "no sender");
        g_object_unref(task);
        return;
    }
    g_dbus_connection_call(conn, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                           "org.freedesktop.DBus", "GetConnectionUnixUser",
                           g_variant_new("(s)", sender), G_VARIANT_TYPE("(u)"),
                           G_DBUS_CALL_FLAGS_NONE, -1, NULL, uid_done, task);
}

gboolean vdd_bouncer_check_finish(VddBouncer *self, GAsyncResult *result, guint32 *uid,
                                  GError **error)
{
    Check *c = g_task_get_task_data(G_TASK(result));
    if (uid != NULL)
        *uid = c->uid;
    return g_task_propagate_boolean(G_TASK(result), error);
}
