/* Desktop notifications of a job (see notify.h). The calls are
 * synchronous with a short timeout: vdiskctl waits on its own main loop
 * for vdiskd's signals, and a notification service that does not answer
 * soon is given up for the rest of the job. */
#include "notify.h"

#include <string.h>

#define NOTIFY_NAME "org.freedesktop.Notifications"
#define NOTIFY_PATH "/org/freedesktop/Notifications"
#define NOTIFY_INTERFACE "org.freedesktop.Notifications"
/* The .desktop file (data/), so the service shows its name and icon. */
#define DESKTOP_ENTRY "vdisk-import"
#define ICON "drive-harddisk"
/* A first call may start the service by activation. */
#define CALL_TIMEOUT_MS 3000
#define MIN_INTERVAL_US (G_USEC_PER_SEC / 4)

struct Notify {
    GDBusConnection *bus; /* NULL: nothing is sent */
    char *summary;
    guint32 id; /* the notification replaced, 0 before the first */
    int last_percent;
    gint64 last_sent;
    gboolean finished;
};

/* The session bus if there is one, without starting any (GIO would try
 * X11 autolaunch for a missing address). */
static GDBusConnection *session_bus(void)
{
    const char *address = g_getenv("DBUS_SESSION_BUS_ADDRESS");
    g_autofree char *fallback = NULL;
    if (address == NULL || *address == '\0') {
        const char *runtime = g_getenv("XDG_RUNTIME_DIR");
        if (runtime == NULL || *runtime == '\0')
            return NULL;
        g_autofree char *socket = g_build_filename(runtime, "bus", NULL);
        if (!g_file_test(socket, G_FILE_TEST_EXISTS))
            return NULL;
        g_autofree char *escaped = g_dbus_address_escape_value(socket);
        address = fallback = g_strconcat("unix:path=", escaped, NULL);
    }
    return g_dbus_connection_new_for_address_sync(
        address,
        G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
            G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
        NULL, NULL, NULL);
}

Notify *notify_new(const char *summary)
{
    Notify *n = g_new0(Notify, 1);
    n->summary = g_strdup(summary);
    n->last_percent = -1;
    n->bus = session_bus();
    return n;
}

void notify_free(Notify *n)
{
    if (n == NULL)
        return;
    if (n->bus != NULL)
        g_dbus_connection_flush_sync(n->bus, NULL, NULL);
    g_clear_object(&n->bus);
    g_free(n->summary);
    g_free(n);
}

gboolean notify_is_active(const Notify *n) { return n->bus != NULL && n->id != 0; }

/* Notify(app_name, replaces_id, app_icon, summary, body, actions, hints,
 * expire_timeout) -> id; a failure silences the rest. */
static void send(Notify *n, const char *summary, const char *body, GVariantBuilder *hints,
                 gint32 expire_ms)
{
    g_autoptr(GError) error = NULL;
    const char *no_actions[] = { NULL };
    g_variant_builder_add(hints, "{sv}", "desktop-entry", g_variant_new_string(DESKTOP_ENTRY));
    g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
        n->bus, NOTIFY_NAME, NOTIFY_PATH, NOTIFY_INTERFACE, "Notify",
        g_variant_new("(susss^as@a{sv}i)", "vdiskctl", n->id, ICON, summary, body, no_actions,
                      g_variant_builder_end(hints), expire_ms),
        G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE, CALL_TIMEOUT_MS, NULL, &error);
    if (reply == NULL) {
        g_debug("no desktop notification: %s", error->message);
        g_clear_object(&n->bus);
        return;
    }
    g_variant_get(reply, "(u)", &n->id);
}

void notify_progress(Notify *n, guint64 done, guint64 total)
{
    if (n->bus == NULL || n->finished)
        return;
    int percent = total == 0 ? 0 : (int)MIN(100, (done * 100.0) / (double)total);
    gint64 now = g_get_monotonic_time();
    if (percent == n->last_percent ||
        (percent < 100 && n->last_sent != 0 && now - n->last_sent < MIN_INTERVAL_US))
        return;
    n->last_percent = percent;
    n->last_sent = now;
    g_autofree char *body = g_strdup_printf("%d%%", percent);
    GVariantBuilder hints;
    g_variant_builder_init(&hints, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&hints, "{sv}", "value", g_variant_new_int32(percent));
    g_variant_builder_add(&hints, "{sv}", "category", g_variant_new_string("transfer"));
    /* Progress is not worth keeping in a notification history. */
    g_variant_builder_add(&hints, "{sv}", "transient", g_variant_new_boolean(TRUE));
    /* 0: shown until replaced; a long import outlasts the default. */
    send(n, n->summary, body, &hints, 0);
}

void notify_finish(Notify *n, gboolean success, const char *summary, const char *body)
{
    if (n->bus == NULL || n->finished)
        return;
    n->finished = TRUE;
    GVariantBuilder hints;
    g_variant_builder_init(&hints, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&hints, "{sv}", "category",
                          g_variant_new_string(success ? "transfer.complete" : "transfer.error"));
    /* A failure stays until the user has seen it. */
    g_variant_builder_add(&hints, "{sv}", "urgency", g_variant_new_byte(success ? 1 : 2));
    send(n, summary != NULL ? summary : n->summary, body != NULL ? body : "", &hints, -1);
}
