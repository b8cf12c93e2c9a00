/* vdiskctl: calling vdiskd, finding its objects, passing the caller's
 * files (see ctl.h). */
#include "ctl.h"
#include "notify.h"
#include "qemu-syntax.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vdisk.h"

/* Without interaction a call is answered at once (jobs return a path
 * before they work); with it, polkit may wait for a password as long as the
 * user takes. */
#define CALL_TIMEOUT_MS (60 * 1000)
#define PKTTYAGENT "/usr/bin/pkttyagent"
/* How long to wait for the text agent to register before calling anyway; it
 * takes milliseconds, unless the machine is very busy. */
#define AGENT_TIMEOUT_MS 10000

#ifndef VDISK_PRIVILEGED_GROUP
#define VDISK_PRIVILEGED_GROUP "libvirt"
#endif

/* ----- polkit's text agent ----- */

static GPid agent_pid;

/* On a terminal without a desktop agent polkit has nobody to ask for the
 * password, so start pkttyagent for this process, as systemctl does (polkit
 * registers agents for processes and sessions only, and finds ours from the
 * caller of the method), and wait until it has registered: it closes the
 * notify pipe then.
 * In a graphical session, --fallback lets the desktop's agent ask instead.
 * Not elsewhere: polkit consults a fallback agent only for callers in a
 * logind session, so over ssh without one, or in a container, a fallback
 * agent would never be asked. */
static void start_tty_agent(void)
{
    int pipe_fds[2];
    char notify[32], pid[32];

    if (!g_file_test(PKTTYAGENT, G_FILE_TEST_IS_EXECUTABLE) || pipe2(pipe_fds, O_CLOEXEC) < 0)
        return;
    g_snprintf(notify, sizeof notify, "--notify-fd=%d", pipe_fds[1]);
    g_snprintf(pid, sizeof pid, "%d", (int)getpid());
    gboolean desktop = g_getenv("DISPLAY") != NULL || g_getenv("WAYLAND_DISPLAY") != NULL;
    char *const argv[] = {
        PKTTYAGENT, notify, "--process", pid, desktop ? "--fallback" : NULL, NULL
    };
    /* fork and exec by hand: only the agent may hold the write end, or the
     * wait below would not end when it closes it after registering. Only
     * async-signal-safe calls run in the child (the bus thread exists). */
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive us, even after _exit() */
        fcntl(pipe_fds[1], F_SETFD, 0);   /* the notify fd survives exec */
        execv(PKTTYAGENT, argv);
        _exit(127);
    }
    close(pipe_fds[1]);
    if (child > 0) {
        agent_pid = child;
        GPollFD pfd = { .fd = pipe_fds[0], .events = G_IO_IN | G_IO_HUP };
        g_poll(&pfd, 1, AGENT_TIMEOUT_MS);
    }
    close(pipe_fds[0]);
}

void ctl_disconnect(Ctl *ctl)
{
    if (agent_pid != 0) {
        kill(agent_pid, SIGTERM);
        waitpid(agent_pid, NULL, 0);
        g_spawn_close_pid(agent_pid);
        agent_pid = 0;
    }
    g_clear_object(&ctl->bus);
}

gboolean ctl_connect(Ctl *ctl, GError **error)
{
    ctl->bus = g_bus_get_sync(G_BUS_TYPE_SYSTEM, NULL, error);
    if (ctl->bus == NULL) {
        g_prefix_error(error, "cannot reach the system bus: ");
        return FALSE;
    }
    /* Ask for a password only where someone can type it: on a terminal,
     * or through the desktop's own agent for --notify (a file manager
     * started vdiskctl). Root never needs one, so it gets no agent either. */
    gboolean tty = isatty(STDIN_FILENO);
    if (!ctl->no_ask_password && (tty || ctl_notify_requested())) {
        ctl->call_flags |= G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION;
        if (getuid() != 0 && tty)
            start_tty_agent();
    }
    return TRUE;
}

/* ----- errors ----- */

/* The actions the privileged group gets without a password (DESIGN.md):
 * all but these two, so for these joining the group would not help. */
static gboolean action_needs_admin(const char *action)
{
    return g_str_equal(action, VDISK_ACTION_MANAGE_POOLS) ||
           g_str_equal(action, VDISK_ACTION_DELETE_VOLUME);
}

/* vdiskd's NotAuthorized message names the polkit action; say it, and what
 * the user can do about it. */
static char *not_authorized_text(const char *message)
{
    g_autoptr(GRegex) regex = g_regex_new("org\\.vdisk\\.VDisk1\\.[a-z][a-z-]*", 0, 0, NULL);
    g_autoptr(GMatchInfo) match = NULL;
    g_autofree char *action = NULL;

    if (g_regex_match(regex, message, 0, &match))
        action = g_match_info_fetch(match, 0);
    if (action != NULL && action_needs_admin(action))
        return g_strdup_printf("not authorized: %s; ask an administrator", action);
    return g_strdup_printf("not authorized: %s; ask an administrator or join the %s group",
                           action != NULL ? action : message, VDISK_PRIVILEGED_GROUP);
}

/* Errors whose message alone leaves the user guessing: what it means goes
 * before or after it. */
static const struct {
    const char *name;
    const char *before;
    const char *after;
} explained_errors[] = {
    { "org.freedesktop.DBus.Error.ServiceUnknown",
      "vdiskd is not running and could not be started (", ")" },
    { "org.freedesktop.DBus.Error.NameHasNoOwner", "vdiskd is not running (", ")" },
    { "org.freedesktop.DBus.Error.AccessDenied",
      "the system bus refused the call; is vdisk's bus policy installed? (", ")" },
    { "org.freedesktop.DBus.Error.NoReply", "vdiskd did not answer (", ")" },
    { "org.freedesktop.DBus.Error.Timeout", "vdiskd did not answer (", ")" },
    { "org.freedesktop.DBus.Error.UnknownObject", "", " (it may have gone away just now)" },
    { VDISK_ERROR_BUSY, "", " (a job is using it; 'vdiskctl jobs' lists them)" },
};

void ctl_error_from_dbus(GError *error)
{
    g_autofree char *name = NULL;
    char *text = NULL;

    if (error == NULL || !g_dbus_error_is_remote_error(error))
        return;
    name = g_dbus_error_get_remote_error(error);
    g_dbus_error_strip_remote_error(error);
    if (g_str_equal(name, VDISK_ERROR_NOT_AUTHORIZED)) {
        text = not_authorized_text(error->message);
    } else if (g_str_equal(name, VDISK_ERROR_CANCELLED)) {
        error->domain = G_IO_ERROR;
        error->code = G_IO_ERROR_CANCELLED;
    } else if (g_str_equal(name, VDISK_ERROR_BUSY) &&
               strstr(error->message, "in use by another process") != NULL) {
        /* Another program holds the image (a running VM): the message names
         * it; no job of vdiskd's is to blame. */
    } else {
        for (gsize i = 0; i < G_N_ELEMENTS(explained_errors) && text == NULL; i++) {
            if (g_str_equal(name, explained_errors[i].name))
                text = g_strconcat(explained_errors[i].before, error->message,
                                   explained_errors[i].after, NULL);
        }
    }
    if (text != NULL) {
        g_free(error->message);
        error->message = text;
    }
}

void ctl_error_name_file(GError *error, const char *role, const char *path)
{
    g_autofree char *quoted = g_strconcat("'", role, "'", NULL);
    g_autofree char *quoted_path = g_strconcat("'", path, "'", NULL);
    gsize n = strlen(role);

    if (error == NULL)
        return;
    /* "source: ..." and "source is an empty file, ..." */
    if (g_str_has_prefix(error->message, role) &&
        (error->message[n] == ':' || error->message[n] == ' ')) {
        char *named = g_strconcat(path, error->message + n, NULL);
        g_free(error->message);
        error->message = named;
    }
    if (strstr(error->message, quoted) != NULL) {
        g_auto(GStrv) parts = g_strsplit(error->message, quoted, -1);
        g_free(error->message);
        error->message = g_strjoinv(quoted_path, parts);
    }
}

/* ----- calls ----- */

gint ctl_timeout(const Ctl *ctl)
{
    return ctl->call_flags & G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION ? G_MAXINT
                                                                               : CALL_TIMEOUT_MS;
}

GVariant *ctl_no_options(void)
{
    GVariantBuilder empty;

    g_variant_builder_init(&empty, G_VARIANT_TYPE_VARDICT);
    return g_variant_builder_end(&empty);
}

gboolean ctl_called(gboolean ok, GError **error)
{
    if (!ok && error != NULL)
        ctl_error_from_dbus(*error);
    return ok;
}

/* Only methods are called through these: properties come with the
 * objects (ctl_get_objects), jobs' signals through CtlJobWatch. */
#define CALL_ONLY \
    (G_DBUS_PROXY_FLAGS_DO_NOT_LOAD_PROPERTIES | G_DBUS_PROXY_FLAGS_DO_NOT_CONNECT_SIGNALS)

VddDbusManager *ctl_manager_proxy(Ctl *ctl, GError **error)
{
    return vdd_dbus_manager_proxy_new_sync(ctl->bus, CALL_ONLY, VDISK_BUS_NAME, VDISK_MANAGER_PATH,
                                           NULL, error);
}

VddDbusPool *ctl_pool_proxy(Ctl *ctl, const char *path, GError **error)
{
    return vdd_dbus_pool_proxy_new_sync(ctl->bus, CALL_ONLY, VDISK_BUS_NAME, path, NULL, error);
}

VddDbusVolume *ctl_volume_proxy(Ctl *ctl, const char *path, GError **error)
{
    return vdd_dbus_volume_proxy_new_sync(ctl->bus, CALL_ONLY, VDISK_BUS_NAME, path, NULL, error);
}

VddDbusJob *ctl_job_proxy(Ctl *ctl, const char *path, GError **error)
{
    return vdd_dbus_job_proxy_new_sync(ctl->bus, CALL_ONLY, VDISK_BUS_NAME, path, NULL, error);
}

/* ----- objects ----- */

void ctl_object_free(CtlObject *obj)
{
    if (obj == NULL)
        return;
    g_free(obj->path);
    g_clear_pointer(&obj->props, g_variant_unref);
    g_free(obj);
}

static CtlObject *object_new(const char *path, GVariant *props)
{
    CtlObject *obj = g_new0(CtlObject, 1);

    obj->path = g_strdup(path);
    obj->props = g_variant_ref(props);
    return obj;
}

GVariant *ctl_get_objects(Ctl *ctl, GError **error)
{
    /* org.freedesktop.DBus.ObjectManager's one method: every object with
     * every interface's properties, in one round trip. */
    GVariant *reply = g_dbus_connection_call_sync(
        ctl->bus, VDISK_BUS_NAME, VDISK_ROOT_PATH, "org.freedesktop.DBus.ObjectManager",
        "GetManagedObjects", NULL, G_VARIANT_TYPE("(a{oa{sa{sv}}})"), ctl->call_flags,
        ctl_timeout(ctl), NULL, error);

    if (!ctl_called(reply != NULL, error))
        return NULL;
    GVariant *objects = g_variant_get_child_value(reply, 0);
    g_variant_unref(reply);
    return objects;
}

/* People read names sorted as a file manager sorts them ("disk2" before
 * "disk10"); jobs, which have no Name, by their number the same way. */
static gint compare_objects(gconstpointer a, gconstpointer b)
{
    const CtlObject *x = *(const CtlObject *const *)a;
    const CtlObject *y = *(const CtlObject *const *)b;
    const char *nx = ctl_prop_string(x->props, "Name");
    const char *ny = ctl_prop_string(y->props, "Name");
    g_autofree char *kx = g_utf8_collate_key_for_filename(*nx ? nx : x->path, -1);
    g_autofree char *ky = g_utf8_collate_key_for_filename(*ny ? ny : y->path, -1);

    return strcmp(kx, ky);
}

GPtrArray *ctl_objects_with(GVariant *objects, const char *iface)
{
    GPtrArray *found = g_ptr_array_new_with_free_func((GDestroyNotify)ctl_object_free);
    GVariantIter iter;
    const char *path;
    GVariant *ifaces;

    g_variant_iter_init(&iter, objects);
    while (g_variant_iter_loop(&iter, "{&o@a{sa{sv}}}", &path, &ifaces)) {
        g_autoptr(GVariant) props = g_variant_lookup_value(ifaces, iface, G_VARIANT_TYPE_VARDICT);
        if (props != NULL)
            g_ptr_array_add(found, object_new(path, props));
    }
    g_ptr_array_sort(found, compare_objects);
    return found;
}

CtlObject *ctl_object_lookup(GPtrArray *objects, const char *key, const char *value)
{
    for (guint i = 0; i < objects->len; i++) {
        CtlObject *obj = objects->pdata[i];
        if (g_str_equal(key, "path") ? g_str_equal(obj->path, value)
                                     : g_str_equal(ctl_prop_string(obj->props, key), value))
            return obj;
    }
    return NULL;
}

char *ctl_volume_label(GVariant *objects, const char *volume_path)
{
    g_autoptr(GPtrArray) pools = ctl_objects_with(objects, VDISK_POOL_INTERFACE);
    g_autoptr(GPtrArray) volumes = ctl_objects_with(objects, VDISK_VOLUME_INTERFACE);
    CtlObject *vol = ctl_object_lookup(volumes, "path", volume_path);
    CtlObject *pool;

    if (vol == NULL)
        return g_strdup(volume_path);
    pool = ctl_object_lookup(pools, "path", ctl_prop_string(vol->props, "Pool"));
    return g_strdup_printf("%s/%s", pool != NULL ? ctl_prop_string(pool->props, "Name") : "?",
                           ctl_prop_string(vol->props, "Name"));
}

static CtlObject *find_pool_in(GVariant *objects, const char *name, GError **error)
{
    g_autoptr(GPtrArray) pools = ctl_objects_with(objects, VDISK_POOL_INTERFACE);
    CtlObject *pool = ctl_object_lookup(pools, "Name", name);

    if (pool == NULL) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                    "no pool '%s' ('vdiskctl pools' lists them)", name);
        return NULL;
    }
    return object_new(pool->path, pool->props);
}

CtlObject *ctl_find_pool(Ctl *ctl, const char *name, GError **error)
{
    g_autoptr(GVariant) objects = ctl_get_objects(ctl, error);

    return objects != NULL ? find_pool_in(objects, name, error) : NULL;
}

void ctl_volume_free(CtlVolume *vol)
{
    if (vol == NULL)
        return;
    g_free(vol->pool_name);
    g_free(vol->name);
    ctl_object_free(vol->pool);
    ctl_object_free(vol->volume);
    g_free(vol);
}

gboolean ctl_split_volume_arg(const char *arg, char **pool, char **name, GError **error)
{
    const char *slash = strchr(arg, '/');

    if (slash == NULL || slash == arg || slash[1] == '\0' || strchr(slash + 1, '/') != NULL) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "'%s' is not POOL/VOLUME (e.g. default/disk.qcow2)", arg);
        return FALSE;
    }
    *pool = g_strndup(arg, slash - arg);
    *name = g_strdup(slash + 1);
    return TRUE;
}

/* The volume called name whose Pool is pool_path. */
static CtlObject *find_volume_in(GVariant *objects, const char *pool_path, const char *name)
{
    g_autoptr(GPtrArray) volumes = ctl_objects_with(objects, VDISK_VOLUME_INTERFACE);

    for (guint i = 0; i < volumes->len; i++) {
        CtlObject *vol = volumes->pdata[i];
        if (g_str_equal(ctl_prop_string(vol->props, "Name"), name) &&
            g_str_equal(ctl_prop_string(vol->props, "Pool"), pool_path))
            return object_new(vol->path, vol->props);
    }
    return NULL;
}

CtlVolume *ctl_find_volume(Ctl *ctl, const char *arg, GError **error)
{
    g_autoptr(CtlVolume) vol = g_new0(CtlVolume, 1);
    g_autoptr(GVariant) objects = NULL;

    if (!ctl_split_volume_arg(arg, &vol->pool_name, &vol->name, error))
        return NULL;
    objects = ctl_get_objects(ctl, error);
    if (objects == NULL)
        return NULL;
    vol->pool = find_pool_in(objects, vol->pool_name, error);
    if (vol->pool == NULL)
        return NULL;
    vol->volume = find_volume_in(objects, vol->pool->path, vol->name);
    if (vol->volume == NULL) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                    "no volume '%s' in pool '%s' ('vdiskctl volumes %s' lists them)", vol->name,
                    vol->pool_name, vol->pool_name);
        return NULL;
    }
    return g_steal_pointer(&vol);
}

char *ctl_new_name_in_pool(const CtlVolume *vol, const char *arg, GError **error)
{
    g_autofree char *pool = NULL;
    g_autofree char *name = NULL;

    if (strchr(arg, '/') == NULL)
        return g_strdup(arg);
    if (!ctl_split_volume_arg(arg, &pool, &name, error))
        return NULL;
    if (!g_str_equal(pool, vol->pool_name)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "'%s' must be in pool '%s', where %s/%s is", arg, vol->pool_name,
                    vol->pool_name, vol->name);
        return NULL;
    }
    return g_steal_pointer(&name);
}

/* ----- formats and create options ----- */

VddDbusManager *ctl_manager_properties(Ctl *ctl, GError **error)
{
    g_autoptr(VddDbusManager) manager =
        vdd_dbus_manager_proxy_new_sync(ctl->bus, G_DBUS_PROXY_FLAGS_DO_NOT_CONNECT_SIGNALS,
                                        VDISK_BUS_NAME, VDISK_MANAGER_PATH, NULL, error);
    g_autofree char *owner = NULL;

    if (manager == NULL)
        return NULL;
    /* A proxy of a name nobody owns is made all the same, empty. */
    owner = g_dbus_proxy_get_name_owner(G_DBUS_PROXY(manager));
    if (owner == NULL || vdd_dbus_manager_get_version(manager) == NULL) {
        g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_NOT_CONNECTED,
                            owner == NULL ? "vdiskd is not running" : "vdiskd did not answer");
        return NULL;
    }
    return g_steal_pointer(&manager);
}

char *ctl_pick_format(Ctl *ctl, const char *name, const char *fallback, GError **error)
{
    const char *base = strrchr(name, '/');
    const char *dot = strrchr(base != NULL ? base + 1 : name, '.');
    g_autofree char *ext = NULL;
    g_autoptr(VddDbusManager) manager = NULL;
    const char *const *formats;

    if (ctl->format != NULL)
        return g_strdup(ctl->format);
    if (dot == NULL || dot[1] == '\0')
        return g_strdup(fallback);
    ext = g_ascii_strdown(dot + 1, -1);
    if (g_str_equal(ext, "img"))
        return g_strdup("raw");
    manager = ctl_manager_properties(ctl, NULL);
    formats = manager != NULL ? vdd_dbus_manager_get_writable_formats(manager) : NULL;
    if (formats == NULL)
        return g_strdup(fallback);
    if (g_strv_contains(formats, ext))
        return g_strdup(ext);
    /* A typo (.qcw2) must not quietly become another format. */
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "%s: the extension .%s names no format vdiskd writes; give the format with -f",
                name, dot + 1);
    return NULL;
}

/* qemu-img's -o keys as vdiskd's option names: dashes for underscores, and
 * the two whose name changed (backing files are volumes of the pool). */
static char *option_name(const char *key)
{
    static const struct {
        const char *qemu;
        const char *daemon;
    } renamed[] = {
        { "backing_file", "backing" },
        { "backing_fmt", "backing-format" },
    };

    for (gsize i = 0; i < G_N_ELEMENTS(renamed); i++) {
        if (g_str_equal(key, renamed[i].qemu))
            return g_strdup(renamed[i].daemon);
    }
    return g_strdelimit(g_strdup(key), "_", '-');
}

GVariant *ctl_call_options(const Ctl *ctl, GError **error)
{
    g_autoptr(VdOptions) opts = vd_options_new();
    g_autoptr(GPtrArray) keys = NULL;
    GVariantBuilder builder;

    for (guint i = 0; ctl->create_options != NULL && i < ctl->create_options->len; i++) {
        if (!vd_options_parse(opts, ctl->create_options->pdata[i], error))
            return NULL;
    }
    g_variant_builder_init(&builder, G_VARIANT_TYPE_VARDICT);
    /* vdiskd takes every create option as a string and parses it the way
     * the engine parses -o, so "64k" and "on" mean what they mean to vdisk. */
    keys = vd_options_keys(opts);
    for (guint i = 0; i < keys->len; i++) {
        g_autofree char *name = option_name(keys->pdata[i]);
        g_variant_builder_add(&builder, "{sv}", name,
                              g_variant_new_string(vd_options_get(opts, keys->pdata[i])));
    }
    if (ctl->source_format != NULL)
        g_variant_builder_add(&builder, "{sv}", "source-format",
                              g_variant_new_string(ctl->source_format));
    if (ctl->shrink)
        g_variant_builder_add(&builder, "{sv}", "shrink", g_variant_new_boolean(TRUE));
    if (ctl->objects != NULL && ctl->objects->len > 0) {
        GVariant *secrets = qs_secrets_variant(ctl->objects, error);
        if (secrets == NULL) {
            g_variant_builder_clear(&builder);
            return NULL;
        }
        g_variant_builder_add(&builder, "{sv}", "secrets", secrets);
    }
    if (ctl->volume_key_secret != NULL)
        g_variant_builder_add(&builder, "{sv}", "volume-key-secret",
                              g_variant_new_string(ctl->volume_key_secret));
    if (ctl->source_key_secret != NULL)
        g_variant_builder_add(&builder, "{sv}", "source-key-secret",
                              g_variant_new_string(ctl->source_key_secret));
    return g_variant_ref_sink(g_variant_builder_end(&builder));
}

/* ----- the caller's files ----- */

gint ctl_fds_append_path(GUnixFDList *fds, const char *path, int flags, GError **error)
{
    int fd = g_open(path, flags | O_CLOEXEC, 0644);
    gint index;

    if (fd < 0) {
        int saved = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved), "cannot open %s: %s", path,
                    g_strerror(saved));
        return -1;
    }
    index = g_unix_fd_list_append(fds, fd, error);
    close(fd);
    return index;
}
