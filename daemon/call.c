#include "call.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gunixfdlist.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bouncer.h"
#include "errors.h"
#include "job.h"
#include "manager.h"
#include "vdisk-names.h"
#include "volume.h"

/* ----- logging and replies ----- */

void vdd_log_operation(GDBusMethodInvocation *invocation, guint32 uid, const char *what,
                       const GError *error)
{
    g_message("uid %d: %s.%s %s: %s", uid == G_MAXUINT32 ? -1 : (int)uid,
              g_dbus_method_invocation_get_interface_name(invocation) + sizeof(VDISK_BUS_NAME),
              g_dbus_method_invocation_get_method_name(invocation), what ? what : "",
              error ? error->message : "ok");
}

void vdd_return_error(GDBusMethodInvocation *invocation, guint32 uid, const char *what,
                      GError *error)
{
    vdd_error_normalize(&error);
    vdd_log_operation(invocation, uid, what, error);
    g_dbus_method_invocation_return_gerror(invocation, error);
    g_error_free(error);
}

/* ----- the way in ----- */

typedef struct {
    VddManager *manager;
    gpointer target;
    const VddMethod *methods;
    gsize n_methods;
} Served;

/* A call between its arrival and its handler. */
typedef struct {
    VddCall call;
    GObject *target;
    const VddMethod *method;
    gpointer params;
    VddCallSubject subject; /* subject.source is held */
} Pending;

static void pending_free(Pending *p)
{
    g_object_unref(p->call.invocation);
    g_object_unref(p->call.manager);
    g_clear_pointer(&p->call.options, g_variant_unref);
    g_object_unref(p->target);
    g_clear_object(&p->subject.source);
    g_free(p->params);
    g_free(p);
}

static void refuse(Pending *p, GError *error)
{
    GDBusMethodInvocation *invocation = p->call.invocation;
    vdd_return_error(invocation, p->call.uid, g_dbus_method_invocation_get_object_path(invocation),
                     error);
    pending_free(p);
}

/* Authorised: a job's share of the pool is taken before anything is
 * created, then the handler acts. */
static void admit_and_handle(Pending *p)
{
    GError *error = NULL;
    if (!vdd_job_admit(p->call.invocation, p->call.uid, &error)) {
        refuse(p, error);
        return;
    }
    p->method->handle(p->target, &p->call, p->params);
    pending_free(p);
}

static void read_checked(GObject *source, GAsyncResult *res, gpointer data)
{
    Pending *p = data;
    GError *error = NULL;
    if (!vdd_bouncer_check_finish(VDD_BOUNCER(source), res, &p->call.uid, &error))
        refuse(p, error);
    else
        admit_and_handle(p);
}

static void checked(GObject *source, GAsyncResult *res, gpointer data)
{
    Pending *p = data;
    GError *error = NULL;
    if (!vdd_bouncer_check_finish(VDD_BOUNCER(source), res, &p->call.uid, &error)) {
        refuse(p, error);
        return;
    }
    /* A method that reads another volume is checked again on it, so that
     * per-pool rules hold for every volume a method touches. A source
     * that does not exist is the handler's NotFound. */
    if (p->call.rule->reads_source && p->subject.source != NULL) {
        g_autoptr(GHashTable) details = vdd_rule_read_details(p->call.rule, p->subject.source);
        vdd_bouncer_check_async(VDD_BOUNCER(source), p->call.invocation, VDISK_ACTION_READ_VOLUME,
                                details, read_checked, p);
        return;
    }
    admit_and_handle(p);
}

static const VddMethod *find_method(Served *s, const char *name)
{
    for (gsize i = 0; i < s->n_methods; i++) {
        if (strcmp(s->methods[i].method, name) == 0)
            return &s->methods[i];
    }
    return NULL;
}

/* Every method call of a served interface comes here before GDBus would
 * emit its handle-* signal; none goes on to that (FALSE: the call is
 * ours). */
static gboolean authorize_method(GDBusInterfaceSkeleton *iface, GDBusMethodInvocation *invocation,
                                 Served *s)
{
    const char *interface = g_dbus_method_invocation_get_interface_name(invocation);
    const char *name = g_dbus_method_invocation_get_method_name(invocation);
    if (g_strcmp0(interface, g_dbus_interface_skeleton_get_info(iface)->name) != 0)
        return TRUE; /* not a method of the interface: GDBus answers */
    vdd_manager_touch(s->manager);
    const VddRule *rule = vdd_rule_lookup(interface, name);
    const VddMethod *method = find_method(s, name);
    if (rule == NULL || method == NULL) {
        g_dbus_method_invocation_return_error(invocation, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_METHOD,
                                              "%s.%s is not served", interface, name);
        return FALSE;
    }
    Pending *p = g_new0(Pending, 1);
    p->call.invocation = g_object_ref(invocation);
    p->call.uid = G_MAXUINT32;
    GVariant *args = g_dbus_method_invocation_get_parameters(invocation);
    gsize n = g_variant_n_children(args);
    if (n > 0)
        p->call.options = g_variant_get_child_value(args, n - 1);
    if (p->call.options != NULL && !g_variant_is_of_type(p->call.options, G_VARIANT_TYPE_VARDICT))
        g_clear_pointer(&p->call.options, g_variant_unref);
    p->call.manager = g_object_ref(s->manager);
    p->call.rule = rule;
    p->target = g_object_ref(s->target);
    p->method = method;
    p->params = g_malloc0(MAX(method->params_size, 1));
    method->parse(s->target, args, p->params, &p->subject);
    if (p->subject.source != NULL)
        g_object_ref(p->subject.source);
    g_autoptr(GHashTable) details = vdd_rule_details(rule, &p->subject);
    vdd_bouncer_check_async(vdd_manager_get_bouncer(s->manager), invocation, rule->action, details,
                            checked, p);
    return FALSE;
}

void vdd_call_serve(gpointer iface, VddManager *manager, gpointer target, const VddMethod *methods,
                    gsize n_methods)
{
    Served *s = g_new0(Served, 1);
    s->manager = manager;
    s->target = target;
    s->methods = methods;
    s->n_methods = n_methods;
    g_signal_connect_data(iface, "g-authorize-method", G_CALLBACK(authorize_method), s,
                          (GClosureNotify)(void (*)(void))g_free, 0);
}

/* ----- caller's descriptors ----- */

/* A file a caller passed open for reading and writing, of which a job
 * only reads: a new open of the same file for reading only, so that the
 * worker that parses it (and a parser bug in it) can never write the
 * caller's file. fd is taken. */
static int reopen_read_only(int fd, const char *what, GError **error)
{
    g_autofree char *proc = g_strdup_printf("/proc/self/fd/%d", fd);
    int ro = open(proc, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    int err = errno;
    close(fd);
    if (ro < 0) {
        vdd_error_set_errno(error, err, "%s: cannot reopen for reading only", what);
        return -1;
    }
    fcntl(ro, F_SETFL, fcntl(ro, F_GETFL) & ~O_NONBLOCK);
    return ro;
}

/* The descriptor a call passed under handle, dup'ed for the caller to
 * own, or -1. */
static int passed_fd(GDBusMethodInvocation *invocation, gint32 handle, const char *what,
                     GError **error)
{
    GUnixFDList *list =
        g_dbus_message_get_unix_fd_list(g_dbus_method_invocation_get_message(invocation));
    if (list == NULL || handle < 0 || handle >= g_unix_fd_list_get_length(list)) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "%s: no file descriptor was passed with handle %d", what, handle);
        return -1;
    }
    int fd = g_unix_fd_list_get(list, handle, error);
    if (fd < 0) {
        vdd_error_normalize(error);
        return -1;
    }
    return fd;
}

int vdd_caller_fd(GDBusMethodInvocation *invocation, gint32 handle, int access, const char *what,
                  GError **error)
{
    int fd = passed_fd(invocation, handle, what, error);
    if (fd < 0)
        return -1;
    return vdd_caller_fd_check(fd, access, what, error);
}

int vdd_caller_fd_check(int fd, int access, const char *what, GError **error)
{
    struct stat st;
    int flags = fcntl(fd, F_GETFL);
    if (fstat(fd, &st) < 0 || flags < 0) {
        vdd_error_set_errno(error, errno, "%s", what);
        close(fd);
        return -1;
    }
    const char *problem = NULL;
    int mode = flags & O_ACCMODE;
    if (S_ISDIR(st.st_mode))
        problem = "is a directory, not a regular file";
    else if (!S_ISREG(st.st_mode))
        problem = "is not a regular file";
    else if (access == O_RDONLY && mode != O_RDONLY && mode != O_RDWR)
        problem = "is not open for reading";
    else if (access == O_RDWR && mode != O_RDWR)
        problem = "is not open for reading and writing";
    else if (access == O_RDWR && (flags & O_APPEND))
        problem = "is open for appending only";
    if (problem != NULL) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT, "%s: the descriptor %s", what,
                    problem);
        close(fd);
        return -1;
    }
    return access == O_RDONLY && mode == O_RDWR ? reopen_read_only(fd, what, error) : fd;
}

int vdd_caller_socket(GDBusMethodInvocation *invocation, gint32 handle, const char *what,
                      GError **error)
{
    int fd = passed_fd(invocation, handle, what, error);
    if (fd < 0)
        return -1;
    struct stat st;
    int type = 0, domain = 0;
    socklen_t len = sizeof type, dlen = sizeof domain;
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    const char *problem = NULL;
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
        problem = "is not a socket";
    else if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
             getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) < 0 || type != SOCK_STREAM ||
             (domain != AF_UNIX && domain != AF_INET && domain != AF_INET6))
        problem = "is not a Unix, IPv4 or IPv6 stream socket";
    else if (getpeername(fd, (struct sockaddr *)&peer, &plen) < 0)
        problem = "is not a connected socket";
    if (problem != NULL) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT, "%s: the descriptor %s", what,
                    problem);
        close(fd);
        return -1;
    }
    return fd;
}
