/* vdiskd's D-Bus objects on a private bus (GTestDBus), with the bouncer's
 * polkit replaced by a test policy: no root, no polkitd, seconds to run.
 * The daemon's side and the client's are two connections of this process;
 * the test iterates the main loop while it waits for replies and jobs. */
#include <fcntl.h>
#include <gio/gunixfdlist.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bouncer.h"
#include "manager.h"
#include "vdisk-names.h"
#include "vdisk.h"

typedef struct {
    GTestDBus *bus;
    GDBusConnection *server;
    GDBusConnection *client;
    VddManager *manager;
    char *dir;         /* pools and state live here */
    GPtrArray *checks; /* "ACTION pool=P volume=V source-pool=S", one per check */
    const char *deny;  /* an action the policy refuses, or NULL */
    const char *deny_pool;
    GHashTable *completed; /* job path -> "1 message" or "0 message" */
} Fixture;

static char *detail(GHashTable *details, const char *key)
{
    const char *v = details ? g_hash_table_lookup(details, key) : NULL;
    return g_strdup(v ? v : "-");
}

static gboolean policy(const char *action, GHashTable *details, guint32 *uid, gpointer data)
{
    Fixture *f = data;
    g_autofree char *pool = detail(details, "pool");
    g_autofree char *volume = detail(details, "volume");
    g_autofree char *source = detail(details, "source-pool");
    g_ptr_array_add(f->checks, g_strdup_printf("%s pool=%s volume=%s source-pool=%s", action, pool,
                                               volume, source));
    *uid = 4242; /* a plain user, as far as job limits go */
    if (f->deny == NULL || strcmp(action, f->deny) != 0)
        return TRUE;
    return f->deny_pool != NULL && strcmp(pool, f->deny_pool) != 0;
}

static void on_completed(GDBusConnection *c, const char *sender, const char *path,
                         const char *iface, const char *signal, GVariant *params, gpointer data)
{
    Fixture *f = data;
    gboolean ok;
    const char *message;
    g_variant_get(params, "(b&s)", &ok, &message);
    g_hash_table_insert(f->completed, g_strdup(path), g_strdup_printf("%d %s", ok, message));
}

static void setup(Fixture *f, gconstpointer unused)
{
    f->dir = g_dir_make_tmp("vdisk-dbus-XXXXXX", NULL);
    g_assert_nonnull(f->dir);
    g_autofree char *state = g_build_filename(f->dir, "state", NULL);
    g_setenv("STATE_DIRECTORY", state, TRUE);
    f->bus = g_test_dbus_new(G_TEST_DBUS_NONE);
    g_test_dbus_up(f->bus);
    const char *address = g_test_dbus_get_bus_address(f->bus);
    GDBusConnectionFlags flags = G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                 G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION;
    f->server = g_dbus_connection_new_for_address_sync(address, flags, NULL, NULL, NULL);
    f->client = g_dbus_connection_new_for_address_sync(address, flags, NULL, NULL, NULL);
    g_assert_nonnull(f->server);
    g_assert_nonnull(f->client);
    f->manager = vdd_manager_new();
    vdd_bouncer_set_policy(vdd_manager_get_bouncer(f->manager), policy, f);
    vdd_manager_export(f->manager, f->server);
    f->checks = g_ptr_array_new_with_free_func(g_free);
    f->completed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_dbus_connection_signal_subscribe(f->client, NULL, VDISK_JOB_INTERFACE, "Completed", NULL,
                                       NULL, G_DBUS_SIGNAL_FLAGS_NONE, on_completed, f, NULL);
}

static void remove_tree(const char *path)
{
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    const char *name;
    while (dir != NULL && (name = g_dir_read_name(dir)) != NULL) {
        g_autofree char *child = g_build_filename(path, name, NULL);
        struct stat st;
        if (lstat(child, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(child);
        else
            g_unlink(child);
    }
    g_rmdir(path);
}

static void teardown(Fixture *f, gconstpointer unused)
{
    g_object_unref(f->manager);
    g_dbus_connection_close_sync(f->client, NULL, NULL);
    g_dbus_connection_close_sync(f->server, NULL, NULL);
    g_object_unref(f->client);
    g_object_unref(f->server);
    g_test_dbus_down(f->bus);
    g_object_unref(f->bus);
    g_ptr_array_unref(f->checks);
    g_hash_table_unref(f->completed);
    remove_tree(f->dir);
    g_free(f->dir);
}

typedef struct {
    gboolean done;
    GVariant *reply;
    GError *error;
} Call;

static void call_done(GObject *source, GAsyncResult *res, gpointer data)
{
    Call *c = data;
    c->reply = g_dbus_connection_call_with_unix_fd_list_finish(G_DBUS_CONNECTION(source), NULL, res,
                                                               &c->error);
    c->done = TRUE;
}

/* A method call from the client, the main loop turning until it returns.
 * NULL with *remote set to the D-Bus error name on failure. */
static GVariant *call(Fixture *f, const char *path, const char *iface, const char *method,
                      GVariant *params, GUnixFDList *fds, char **remote)
{
    Call c = { 0 };
    g_dbus_connection_call_with_unix_fd_list(
        f->client, g_dbus_connection_get_unique_name(f->server), path, iface, method, params, NULL,
        G_DBUS_CALL_FLAGS_NONE, 30000, fds, NULL, call_done, &c);
    while (!c.done)
        g_main_context_iteration(NULL, TRUE);
    if (c.error != NULL) {
        if (remote != NULL)
            *remote = g_dbus_error_get_remote_error(c.error);
        g_test_message("%s: %s", method, c.error->message);
        g_error_free(c.error);
    }
    return c.reply;
}

static void wait_job(Fixture *f, const char *job, gboolean want_success)
{
    gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
    while (!g_hash_table_contains(f->completed, job) && g_get_monotonic_time() < deadline)
        g_main_context_iteration(NULL, TRUE);
    const char *result = g_hash_table_lookup(f->completed, job);
    g_assert_nonnull(result);
    g_assert_cmpint(result[0] == '1', ==, want_success);
}

static char *add_pool(Fixture *f, const char *name)
{
    g_autofree char *dir = g_build_filename(f->dir, name, NULL);
    g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
    g_autoptr(GVariant) r = call(f, VDISK_MANAGER_PATH, VDISK_MANAGER_INTERFACE, "AddPool",
                                 g_variant_new("(ssa{sv})", name, dir, NULL), NULL, NULL);
    g_assert_nonnull(r);
    char *path;
    g_variant_get(r, "(o)", &path);
    return path;
}

/* CreateVolume, waited for: the volume's object path. */
static char *create_volume(Fixture *f, const char *pool, const char *name, const char *format,
                           guint64 size)
{
    g_autoptr(GVariant) r = call(f, pool, VDISK_POOL_INTERFACE, "CreateVolume",
                                 g_variant_new("(ssta{sv})", name, format, size, NULL), NULL, NULL);
    g_assert_nonnull(r);
    char *volume;
    const char *job;
    g_variant_get(r, "(o&o)", &volume, &job);
    wait_job(f, job, TRUE);
    return volume;
}

static char *volume_string(Fixture *f, const char *volume, const char *property)
{
    g_autoptr(GVariant) r =
        call(f, volume, "org.freedesktop.DBus.Properties", "Get",
             g_variant_new("(ss)", VDISK_VOLUME_INTERFACE, property), NULL, NULL);
    g_assert_nonnull(r);
    g_autoptr(GVariant) v = NULL;
    g_variant_get(r, "(v)", &v);
    return g_variant_dup_string(v, NULL);
}

static gboolean checked(Fixture *f, const char *what)
{
    for (guint i = 0; i < f->checks->len; i++)
        if (strcmp(f->checks->pdata[i], what) == 0)
            return TRUE;
    return FALSE;
}

static void test_create(Fixture *f, gconstpointer unused)
{
    g_autofree char *pool = add_pool(f, "p");
    g_autofree char *vol = create_volume(f, pool, "a.raw", "raw", 1 << 20);
    g_autofree char *file = g_build_filename(f->dir, "p", "a.raw", NULL);
    struct stat st;
    g_assert_cmpint(stat(file, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 1 << 20);
    g_assert_cmpint(st.st_mode & 07777, ==, 0600);
    g_autofree char *format = volume_string(f, vol, "Format");
    g_assert_cmpstr(format, ==, "raw");
    g_assert_true(checked(f, VDISK_ACTION_CREATE_VOLUME " pool=p volume=a.raw source-pool=-"));
}

static void test_denied(Fixture *f, gconstpointer unused)
{
    g_autofree char *pool = add_pool(f, "p");
    f->deny = VDISK_ACTION_CREATE_VOLUME;
    g_autofree char *remote = NULL;
    g_autoptr(GVariant) r =
        call(f, pool, VDISK_POOL_INTERFACE, "CreateVolume",
             g_variant_new("(ssta{sv})", "b.raw", "raw", (guint64)1 << 20, NULL), NULL, &remote);
    g_assert_null(r);
    g_assert_cmpstr(remote, ==, "org.vdisk.VDisk1.Error.NotAuthorized");
    g_autofree char *file = g_build_filename(f->dir, "p", "b.raw", NULL);
    g_assert_false(g_file_test(file, G_FILE_TEST_EXISTS));
}

/* CopyFrom reads its source: read-volume is checked on the source's pool,
 * and a rule that refuses it there refuses the copy. */
static void test_copy_from_checks_source(Fixture *f, gconstpointer unused)
{
    g_autofree char *p = add_pool(f, "p");
    g_autofree char *q = add_pool(f, "q");
    g_autofree char *target = create_volume(f, p, "t.raw", "raw", 1 << 20);
    g_autofree char *source = create_volume(f, q, "s.raw", "raw", 1 << 20);
    f->deny = VDISK_ACTION_READ_VOLUME;
    f->deny_pool = "q";
    g_autofree char *remote = NULL;
    g_autoptr(GVariant) r = call(f, target, VDISK_VOLUME_INTERFACE, "CopyFrom",
                                 g_variant_new("(oa{sv})", source, NULL), NULL, &remote);
    g_assert_null(r);
    g_assert_cmpstr(remote, ==, "org.vdisk.VDisk1.Error.NotAuthorized");
    g_assert_true(checked(f, VDISK_ACTION_MODIFY_VOLUME " pool=p volume=t.raw source-pool=q"));
    g_assert_true(checked(f, VDISK_ACTION_READ_VOLUME " pool=q volume=s.raw source-pool=-"));
}

/* A raw volume whose bytes become a qcow2 header stays raw. */
static void test_recorded_format(Fixture *f, gconstpointer unused)
{
    g_autofree char *pool = add_pool(f, "p");
    g_autofree char *vol = create_volume(f, pool, "g.raw", "raw", 4 << 20);
    g_autofree char *header = g_build_filename(f->dir, "header.qcow2", NULL);
    g_assert_true(vd_image_create(header, "qcow2", 1 << 20, NULL, NULL));
    g_autofree char *bytes = NULL;
    gsize len;
    g_assert_true(g_file_get_contents(header, &bytes, &len, NULL));
    g_autofree char *file = g_build_filename(f->dir, "p", "g.raw", NULL);
    int fd = open(file, O_WRONLY);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(pwrite(fd, bytes, len, 0), ==, (gssize)len);
    close(fd);
    g_autoptr(GVariant) r =
        call(f, pool, VDISK_POOL_INTERFACE, "Refresh", g_variant_new("(a{sv})", NULL), NULL, NULL);
    g_assert_nonnull(r);
    g_autofree char *format = volume_string(f, vol, "Format");
    g_autofree char *error = volume_string(f, vol, "Error");
    g_assert_cmpstr(format, ==, "raw");
    g_assert_nonnull(strstr(error, "qcow2"));
}

/* A caller's own file, passed as a descriptor. */
static void test_inspect_fd(Fixture *f, gconstpointer unused)
{
    g_autofree char *path = g_build_filename(f->dir, "mine.qcow2", NULL);
    g_assert_true(vd_image_create(path, "qcow2", 3 << 20, NULL, NULL));
    int fd = open(path, O_RDONLY);
    g_assert_cmpint(fd, >=, 0);
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new_from_array(&fd, 1);
    g_autoptr(GVariant) r = call(f, VDISK_MANAGER_PATH, VDISK_MANAGER_INTERFACE, "InspectFile",
                                 g_variant_new("(ha{sv})", 0, NULL), fds, NULL);
    g_assert_nonnull(r);
    g_autoptr(GVariant) info = g_variant_get_child_value(r, 0);
    const char *format = NULL;
    guint64 size = 0;
    g_assert_true(g_variant_lookup(info, "format", "&s", &format));
    g_assert_true(g_variant_lookup(info, "virtual-size", "t", &size));
    g_assert_cmpstr(format, ==, "qcow2");
    g_assert_cmpuint(size, ==, 3 << 20);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    if (g_find_program_in_path("dbus-daemon") == NULL) {
        g_test_skip("dbus-daemon is not installed");
        return g_test_run();
    }
#define ADD(name, fn) g_test_add(name, Fixture, NULL, setup, fn, teardown)
    ADD("/dbus/create-volume", test_create);
    ADD("/dbus/denied", test_denied);
    ADD("/dbus/copy-from-checks-source", test_copy_from_checks_source);
    ADD("/dbus/recorded-format", test_recorded_format);
    ADD("/dbus/inspect-fd", test_inspect_fd);
    return g_test_run();
}
