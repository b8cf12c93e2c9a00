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
#include "rules.h"
#include "vdisk-names.h"
#include "vdisk.h"

typedef struct {
    GTestDBus *bus;
    GDBusConnection *server;
    GDBusConnection *client;
    VddManager *manager;
    char *dir;         /* pools and state live here */
    GPtrArray *checks; /* "ACTION pool=P volume=V source-pool=S", one per check */
    GPtrArray *asked;  /* "ACTION key=value ...", every detail, keys sorted */
    gboolean deny_all; /* the policy refuses everything */
    const char *deny;  /* an action the policy refuses, or NULL */
    const char *deny_pool;
    guint32 caller;        /* who the caller is: 4242 unless a test says */
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
    *uid = f->caller != 0 ? f->caller : 4242; /* a plain user, as far as job limits go */
    if (*action == '\0')
        return TRUE; /* anyone: only who the caller is matters */
    g_autofree char *pool = detail(details, "pool");
    g_autofree char *volume = detail(details, "volume");
    g_autofree char *source = detail(details, "source-pool");
    g_ptr_array_add(f->checks, g_strdup_printf("%s pool=%s volume=%s source-pool=%s", action, pool,
                                               volume, source));
    GString *all = g_string_new(action);
    g_autoptr(GList) keys = details ? g_hash_table_get_keys(details) : NULL;
    keys = g_list_sort(keys, (GCompareFunc)strcmp);
    for (GList *l = keys; l; l = l->next)
        g_string_append_printf(all, " %s=%s", (char *)l->data,
                               (char *)g_hash_table_lookup(details, l->data));
    g_ptr_array_add(f->asked, g_string_free(all, FALSE));
    if (f->deny_all)
        return FALSE;
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
    f->asked = g_ptr_array_new_with_free_func(g_free);
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
    g_ptr_array_unref(f->asked);
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

static int compare_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The names in a folder (hidden ones too), sorted, one string. */
static char *listing(Fixture *f, const char *pool)
{
    g_autofree char *dir = g_build_filename(f->dir, pool, NULL);
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    g_assert_nonnull(d);
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    const char *name;
    while ((name = g_dir_read_name(d)) != NULL)
        g_ptr_array_add(names, g_strdup(name));
    g_ptr_array_sort(names, compare_names);
    g_ptr_array_add(names, NULL);
    return g_strjoinv(" ", (char **)names->pdata);
}

/* Two descriptors of a file of the test's, for the methods that take
 * some. */
static GUnixFDList *two_fds(Fixture *f)
{
    g_autofree char *path = g_build_filename(f->dir, "caller.img", NULL);
    int fds[2];
    fds[0] = open(path, O_RDWR | O_CREAT, 0600);
    fds[1] = open(path, O_RDWR);
    g_assert_cmpint(fds[0], >=, 0);
    g_assert_cmpint(fds[1], >=, 0);
    return g_unix_fd_list_new_from_array(fds, 2);
}

typedef struct {
    const char *object; /* "manager", "pool" (p), "volume" (p/a.raw) */
    const char *method;
    const char *args;  /* GVariant text; OTHER: the other volume (q/b.raw) */
    const char *asked; /* the one check a refused call makes */
} RuleCase;

/* What rules see of each method: the action and every detail, as
 * polkit/org.vdisk.VDisk1.policy documents them. */
static const RuleCase rule_cases[] = {
    { "manager", "AddPool", "('new', '/nowhere', @a{sv} {})",
      VDISK_ACTION_MANAGE_POOLS " operation=add-pool pool=new" },
    { "manager", "ResolvePath", "('/nowhere/x.raw', @a{sv} {})",
      VDISK_ACTION_MANAGE_POOLS " operation=resolve-path path=/nowhere/x.raw" },
    { "manager", "InspectFile", "(@h 0, @a{sv} {})", VDISK_ACTION_INSPECT " operation=inspect" },
    { "manager", "ConvertFile", "(@h 0, @h 1, 'qcow2', @a{sv} {})",
      VDISK_ACTION_INSPECT " format=qcow2 operation=convert" },
    { "pool", "CreateVolume", "('n.qcow2', 'qcow2', @t 1048576, @a{sv} {})",
      VDISK_ACTION_CREATE_VOLUME " format=qcow2 operation=create pool=p volume=n.qcow2" },
    { "pool", "ImportVolume", "(@h 0, 'i.raw', 'raw', @a{sv} {})",
      VDISK_ACTION_IMPORT_VOLUME " format=raw operation=import pool=p volume=i.raw" },
    { "pool", "Refresh", "(@a{sv} {},)", VDISK_ACTION_MANAGE_POOLS " operation=refresh pool=p" },
    { "volume", "Clone", "('c.qcow2', 'qcow2', @a{sv} {})",
      VDISK_ACTION_CREATE_VOLUME " format=qcow2 operation=clone pool=p source-pool=p "
                                 "source-volume=a.raw volume=c.qcow2" },
    { "volume", "CreateOverlay", "('o.qcow2', @a{sv} {})",
      VDISK_ACTION_CREATE_VOLUME " format=qcow2 operation=overlay pool=p source-pool=p "
                                 "source-volume=a.raw volume=o.qcow2" },
    { "volume", "Resize", "(@t 2097152, @a{sv} {})",
      VDISK_ACTION_MODIFY_VOLUME " operation=resize pool=p volume=a.raw" },
    { "volume", "CopyFrom", "(@o 'OTHER', @a{sv} {})",
      VDISK_ACTION_MODIFY_VOLUME " operation=copy pool=p source-pool=q source-volume=b.raw "
                                 "volume=a.raw" },
    { "volume", "CreateSnapshot", "('s1', @a{sv} {})",
      VDISK_ACTION_MODIFY_VOLUME " operation=CreateSnapshot pool=p snapshot=s1 volume=a.raw" },
    { "volume", "RevertSnapshot", "('s1', @a{sv} {})",
      VDISK_ACTION_MODIFY_VOLUME " operation=RevertSnapshot pool=p snapshot=s1 volume=a.raw" },
    { "volume", "DeleteSnapshot", "('s1', @a{sv} {})",
      VDISK_ACTION_MODIFY_VOLUME " operation=DeleteSnapshot pool=p snapshot=s1 volume=a.raw" },
    { "volume", "Export", "(@h 0, 'raw', @a{sv} {})",
      VDISK_ACTION_READ_VOLUME " format=raw operation=export pool=p volume=a.raw" },
    { "volume", "ExportNbd", "(@h 0, @a{sv} {})",
      VDISK_ACTION_MODIFY_VOLUME " operation=export-nbd pool=p source-pool=p source-volume=a.raw "
                                 "volume=a.raw" },
    { "volume", "Delete", "(@a{sv} {},)",
      VDISK_ACTION_DELETE_VOLUME " operation=delete pool=p volume=a.raw" },
};

typedef struct {
    char *pool;
    char *volume;
    char *other;
} Objects;

static void objects_clear(Objects *o)
{
    g_free(o->pool);
    g_free(o->volume);
    g_free(o->other);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Objects, objects_clear)

/* Pools p and q, volumes p/a.raw and q/b.raw; the checks so far
 * forgotten. */
static void make_objects(Fixture *f, Objects *o)
{
    o->pool = add_pool(f, "p");
    g_autofree char *q = add_pool(f, "q");
    o->volume = create_volume(f, o->pool, "a.raw", "raw", 1 << 20);
    o->other = create_volume(f, q, "b.raw", "raw", 1 << 20);
    g_ptr_array_set_size(f->checks, 0);
    g_ptr_array_set_size(f->asked, 0);
}

/* Call one case's method; the D-Bus error name, or NULL on success. */
static char *call_case(Fixture *f, const Objects *o, const RuleCase *c, GVariant **reply)
{
    const char *path = g_str_equal(c->object, "manager") ? VDISK_MANAGER_PATH
                       : g_str_equal(c->object, "pool")  ? o->pool
                                                         : o->volume;
    const char *iface = g_str_equal(c->object, "manager") ? VDISK_MANAGER_INTERFACE
                        : g_str_equal(c->object, "pool")  ? VDISK_POOL_INTERFACE
                                                          : VDISK_VOLUME_INTERFACE;
    g_autoptr(GString) text = g_string_new(c->args);
    g_string_replace(text, "OTHER", o->other, 0);
    g_autoptr(GError) error = NULL;
    GVariant *args = g_variant_parse(NULL, text->str, NULL, NULL, &error);
    g_assert_no_error(error);
    g_autoptr(GUnixFDList) fds = two_fds(f);
    char *remote = NULL;
    GVariant *r = call(f, path, iface, c->method, args, fds, &remote);
    if (reply != NULL)
        *reply = r;
    else if (r != NULL)
        g_variant_unref(r);
    return remote;
}

static const RuleCase *find_case(const char *method)
{
    for (gsize i = 0; i < G_N_ELEMENTS(rule_cases); i++) {
        if (g_str_equal(rule_cases[i].method, method))
            return &rule_cases[i];
    }
    return NULL;
}

/* Every method the rules give an action is refused when polkit says no,
 * after exactly one check with the action and details of its row, and
 * nothing changes in either pool. */
static void test_rules_every_method(Fixture *f, gconstpointer unused)
{
    g_auto(Objects) o = { 0 };
    make_objects(f, &o);
    gsize n_rules;
    const VddRule *rules = vdd_rules(&n_rules);
    for (gsize i = 0; i < n_rules; i++) {
        if (*rules[i].action != '\0')
            g_assert_nonnull(find_case(rules[i].method));
    }
    g_autofree char *p_before = listing(f, "p");
    g_autofree char *q_before = listing(f, "q");
    f->deny_all = TRUE;
    for (gsize i = 0; i < G_N_ELEMENTS(rule_cases); i++) {
        const RuleCase *c = &rule_cases[i];
        g_test_message("%s", c->method);
        g_ptr_array_set_size(f->asked, 0);
        g_autofree char *remote = call_case(f, &o, c, NULL);
        g_assert_cmpstr(remote, ==, VDISK_ERROR_NOT_AUTHORIZED);
        g_assert_cmpuint(f->asked->len, ==, 1);
        g_assert_cmpstr(f->asked->pdata[0], ==, c->asked);
        g_assert_nonnull(vdd_rule_lookup(g_str_equal(c->object, "manager") ? VDISK_MANAGER_INTERFACE
                                         : g_str_equal(c->object, "pool")  ? VDISK_POOL_INTERFACE
                                                                           : VDISK_VOLUME_INTERFACE,
                                         c->method));
    }
    g_autofree char *p_after = listing(f, "p");
    g_autofree char *q_after = listing(f, "q");
    g_assert_cmpstr(p_after, ==, p_before);
    g_assert_cmpstr(q_after, ==, q_before);
    g_autoptr(GVariant) r = call(f, VDISK_MANAGER_PATH, VDISK_MANAGER_INTERFACE, "GetPools",
                                 g_variant_new("(a{sv})", NULL), NULL, NULL);
    g_assert_nonnull(r); /* anyone may: no check asked */
    g_assert_cmpuint(f->asked->len, ==, 1);
}

/* A method that reads another volume is checked again with read-volume
 * on it; refused there, it creates and changes nothing. */
static void test_rules_read_check(Fixture *f, gconstpointer unused)
{
    g_auto(Objects) o = { 0 };
    make_objects(f, &o);
    g_autofree char *p_before = listing(f, "p");
    f->deny = VDISK_ACTION_READ_VOLUME;
    static const struct {
        const char *method, *read;
    } cases[] = {
        { "Clone", VDISK_ACTION_READ_VOLUME " operation=Clone pool=p volume=a.raw" },
        { "CreateOverlay",
          VDISK_ACTION_READ_VOLUME " operation=CreateOverlay pool=p volume=a.raw" },
        { "CopyFrom", VDISK_ACTION_READ_VOLUME " operation=CopyFrom pool=q volume=b.raw" },
        { "ExportNbd", VDISK_ACTION_READ_VOLUME " operation=ExportNbd pool=p volume=a.raw" },
    };
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        const RuleCase *c = find_case(cases[i].method);
        g_ptr_array_set_size(f->asked, 0);
        g_autofree char *remote = call_case(f, &o, c, NULL);
        g_assert_cmpstr(remote, ==, VDISK_ERROR_NOT_AUTHORIZED);
        g_assert_cmpuint(f->asked->len, ==, 2);
        g_assert_cmpstr(f->asked->pdata[0], ==, c->asked);
        g_assert_cmpstr(f->asked->pdata[1], ==, cases[i].read);
    }
    g_autofree char *p_after = listing(f, "p");
    g_assert_cmpstr(p_after, ==, p_before);
}

/* ImportVolume with backing-volume makes an overlay of a volume of the
 * pool, which its job reads: checked again with read-volume on it, as
 * CreateOverlay is, and refused there it makes nothing. A name that is
 * no volume of the pool (another pool's, a path) is refused by the
 * handler, as is a volume that is not qcow2. */
static void test_rules_import_backing(Fixture *f, gconstpointer unused)
{
    g_auto(Objects) o = { 0 };
    make_objects(f, &o);
    g_autofree char *p_before = listing(f, "p");
    f->deny = VDISK_ACTION_READ_VOLUME;
    RuleCase c = { "pool", "ImportVolume",
                   "(@h 0, 'i.qcow2', 'qcow2', {'backing-volume': <'a.raw'>})",
                   VDISK_ACTION_IMPORT_VOLUME " format=qcow2 operation=import pool=p "
                                              "source-pool=p source-volume=a.raw volume=i.qcow2" };
    g_ptr_array_set_size(f->asked, 0);
    g_autofree char *remote = call_case(f, &o, &c, NULL);
    g_assert_cmpstr(remote, ==, VDISK_ERROR_NOT_AUTHORIZED);
    g_assert_cmpuint(f->asked->len, ==, 2);
    g_assert_cmpstr(f->asked->pdata[0], ==, c.asked);
    g_assert_cmpstr(f->asked->pdata[1], ==,
                    VDISK_ACTION_READ_VOLUME " operation=ImportVolume pool=p volume=a.raw");

    f->deny = NULL;
    static const struct {
        const char *args, *error, *asked;
    } refused[] = {
        { "(@h 0, 'i.qcow2', 'qcow2', {'backing-volume': <'b.raw'>})", VDISK_ERROR_NOT_FOUND,
          VDISK_ACTION_IMPORT_VOLUME " format=qcow2 operation=import pool=p volume=i.qcow2" },
        { "(@h 0, 'i.qcow2', 'qcow2', {'backing-volume': <'../q/b.raw'>})",
          VDISK_ERROR_INVALID_ARGUMENT,
          VDISK_ACTION_IMPORT_VOLUME " format=qcow2 operation=import pool=p volume=i.qcow2" },
        { "(@h 0, 'i.qcow2', 'qcow2', {'backing-volume': <'a.raw'>})", VDISK_ERROR_INVALID_ARGUMENT,
          NULL },
        { "(@h 0, 'i.raw', 'raw', {'backing-volume': <'a.raw'>})", VDISK_ERROR_INVALID_ARGUMENT,
          NULL },
    };
    for (gsize i = 0; i < G_N_ELEMENTS(refused); i++) {
        g_test_message("%s", refused[i].args);
        c.args = refused[i].args;
        g_ptr_array_set_size(f->asked, 0);
        g_autofree char *error = call_case(f, &o, &c, NULL);
        g_assert_cmpstr(error, ==, refused[i].error);
        /* Only a volume of the pool is checked again, and read. */
        g_assert_cmpuint(f->asked->len, ==, refused[i].asked != NULL ? 1 : 2);
        if (refused[i].asked != NULL)
            g_assert_cmpstr(f->asked->pdata[0], ==, refused[i].asked);
    }
    g_autofree char *p_after = listing(f, "p");
    g_assert_cmpstr(p_after, ==, p_before);
}

/* A new volume whose backing option names a volume of the pool reads
 * through it: CreateVolume and ImportVolume are checked again with
 * read-volume on it, and refused there make nothing. Named twice, two
 * ways, the backing file the new volume gets is the volume checked. */
static void test_rules_create_backing(Fixture *f, gconstpointer unused)
{
    g_auto(Objects) o = { 0 };
    make_objects(f, &o);
    g_autofree char *c = create_volume(f, o.pool, "c.raw", "raw", 1 << 20);
    g_autofree char *p_before = listing(f, "p");
    f->deny = VDISK_ACTION_READ_VOLUME;
    static const RuleCase cases[] = {
        { "pool", "CreateVolume", "('n.qcow2', 'qcow2', @t 1048576, {'backing': <'a.raw'>})",
          VDISK_ACTION_CREATE_VOLUME " format=qcow2 operation=create pool=p source-pool=p "
                                     "source-volume=a.raw volume=n.qcow2" },
        { "pool", "CreateVolume",
          "('n.qcow2', 'qcow2', @t 0, {'backing-file': <'a.raw'>, 'backing-format': <'raw'>})",
          VDISK_ACTION_CREATE_VOLUME " format=qcow2 operation=create pool=p source-pool=p "
                                     "source-volume=a.raw volume=n.qcow2" },
        { "pool", "ImportVolume", "(@h 0, 'i.qcow2', 'qcow2', {'backing': <'a.raw'>})",
          VDISK_ACTION_IMPORT_VOLUME " format=qcow2 operation=import pool=p source-pool=p "
                                     "source-volume=a.raw volume=i.qcow2" },
    };
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_test_message("%s", cases[i].args);
        g_ptr_array_set_size(f->asked, 0);
        g_autofree char *remote = call_case(f, &o, &cases[i], NULL);
        g_assert_cmpstr(remote, ==, VDISK_ERROR_NOT_AUTHORIZED);
        g_assert_cmpuint(f->asked->len, ==, 2);
        g_assert_cmpstr(f->asked->pdata[0], ==, cases[i].asked);
        g_autofree char *read = g_strdup_printf(
            VDISK_ACTION_READ_VOLUME " operation=%s pool=p volume=a.raw", cases[i].method);
        g_assert_cmpstr(f->asked->pdata[1], ==, read);
    }
    g_autofree char *p_after = listing(f, "p");
    g_assert_cmpstr(p_after, ==, p_before);

    f->deny = NULL;
    const RuleCase twice = { "pool", "CreateVolume",
                             "('n.qcow2', 'qcow2', @t 1048576, {'backing': <'a.raw'>, "
                             "'backing-file': <'c.raw'>, 'backing-format': <'raw'>})",
                             NULL };
    g_ptr_array_set_size(f->asked, 0);
    g_autoptr(GVariant) r = NULL;
    g_autofree char *remote = call_case(f, &o, &twice, &r);
    g_assert_null(remote);
    const char *volume, *job;
    g_variant_get(r, "(&o&o)", &volume, &job);
    wait_job(f, job, TRUE);
    g_autofree char *backing = volume_string(f, volume, "BackingFile");
    g_assert_cmpuint(f->asked->len, ==, 2);
    g_autofree char *read = g_strdup_printf(
        VDISK_ACTION_READ_VOLUME " operation=CreateVolume pool=p volume=%s", backing);
    g_assert_cmpstr(f->asked->pdata[1], ==, read);
}

/* Allowed, a Clone asks create-volume with its details, then read-volume
 * on the volume it copies, and makes the clone. */
static void test_rules_clone_allowed(Fixture *f, gconstpointer unused)
{
    g_auto(Objects) o = { 0 };
    make_objects(f, &o);
    g_autoptr(GVariant) r = NULL;
    g_autofree char *remote = call_case(f, &o, find_case("Clone"), &r);
    g_assert_null(remote);
    const char *job;
    g_variant_get(r, "(&o&o)", NULL, &job);
    wait_job(f, job, TRUE);
    g_assert_cmpuint(f->asked->len, ==, 2);
    g_assert_cmpstr(f->asked->pdata[0], ==, find_case("Clone")->asked);
    g_assert_cmpstr(f->asked->pdata[1], ==,
                    VDISK_ACTION_READ_VOLUME " operation=Clone pool=p volume=a.raw");
    g_autofree char *file = g_build_filename(f->dir, "p", "c.qcow2", NULL);
    g_assert_true(g_file_test(file, G_FILE_TEST_IS_REGULAR));
}

/* Anyone may cancel their own job; another user's job needs
 * cancel-job-other-user, asked with the job's operation. */
static void test_rules_cancel(Fixture *f, gconstpointer unused)
{
    g_autofree char *pool = add_pool(f, "p");
    g_autoptr(GVariant) r =
        call(f, pool, VDISK_POOL_INTERFACE, "CreateVolume",
             g_variant_new("(ssta{sv})", "a.raw", "raw", (guint64)1 << 20, NULL), NULL, NULL);
    g_assert_nonnull(r);
    const char *job;
    g_variant_get(r, "(&o&o)", NULL, &job);
    wait_job(f, job, TRUE); /* finished jobs stay on the bus a while */
    g_ptr_array_set_size(f->asked, 0);
    f->caller = 4343;
    f->deny = VDISK_ACTION_CANCEL_JOB_OTHER_USER;
    g_autofree char *remote = NULL;
    g_autoptr(GVariant) refused =
        call(f, job, VDISK_JOB_INTERFACE, "Cancel", g_variant_new("(a{sv})", NULL), NULL, &remote);
    g_assert_null(refused);
    g_assert_cmpstr(remote, ==, VDISK_ERROR_NOT_AUTHORIZED);
    g_assert_cmpuint(f->asked->len, ==, 1);
    g_assert_cmpstr(f->asked->pdata[0], ==, VDISK_ACTION_CANCEL_JOB_OTHER_USER " operation=create");
    /* Its owner may: the job has completed, which is the answer. */
    g_ptr_array_set_size(f->asked, 0);
    f->caller = 4242;
    g_clear_pointer(&remote, g_free);
    g_autoptr(GVariant) own =
        call(f, job, VDISK_JOB_INTERFACE, "Cancel", g_variant_new("(a{sv})", NULL), NULL, &remote);
    g_assert_null(own);
    g_assert_cmpstr(remote, ==, VDISK_ERROR_FAILED);
    g_assert_cmpuint(f->asked->len, ==, 0);
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
    ADD("/dbus/rules/every-method", test_rules_every_method);
    ADD("/dbus/rules/read-check", test_rules_read_check);
    ADD("/dbus/rules/import-backing", test_rules_import_backing);
    ADD("/dbus/rules/create-backing", test_rules_create_backing);
    ADD("/dbus/rules/clone-allowed", test_rules_clone_allowed);
    ADD("/dbus/rules/cancel", test_rules_cancel);
    return g_test_run();
}
