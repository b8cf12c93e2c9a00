/* A method call of vdiskd: the one way in for every method of the Manager,
 * a Pool and a Volume (rules.h says what each needs), and the helpers that
 * answer and log it. */
#pragma once

#include <gio/gio.h>

#include "rules.h"

typedef struct _VddManager VddManager;

/* An authorised call, as its method's handler gets it. */
typedef struct {
    GDBusMethodInvocation *invocation;
    guint32 uid;       /* the caller's */
    GVariant *options; /* the a{sv} every method takes last */
    VddManager *manager;
    const VddRule *rule;
} VddCall;

/* A method of an object: parse fills params (a struct of params_size
 * bytes, zeroed) from the call's parameters, borrowing from them, and
 * the subject its rule makes the polkit details of; it cannot fail (the
 * bus checked the signature) and decides nothing. handle runs once the
 * call is authorised and admitted (vdd_job_admit); it answers the
 * invocation, now or later (keeping a reference), and may keep neither
 * call nor params after it returns. */
typedef void (*VddParseFunc)(gpointer target, GVariant *parameters, gpointer params,
                             VddCallSubject *subject);
typedef void (*VddHandleFunc)(gpointer target, VddCall *call, gconstpointer params);
typedef struct {
    const char *method;
    gsize params_size;
    VddParseFunc parse;
    VddHandleFunc handle;
} VddMethod;

/* A row of an object's method table: the method's name, its parameters'
 * type, and its parse and handle functions (typed for that struct). */
#define VDD_METHOD(name, Params, parse, handle)                      \
    {                                                                \
        name, sizeof(Params), (VddParseFunc)(void (*)(void))(parse), \
            (VddHandleFunc)(void (*)(void))(handle)                  \
    }

/* Serve the methods of iface (a generated skeleton) for target, which owns
 * iface: every call is looked up in the rules, parsed once, checked with
 * manager's bouncer (and again with read-volume on the volume it reads,
 * where its rule says so), admitted, and handed to its handler. A refusal
 * is answered here and creates nothing. */
void vdd_call_serve(gpointer iface, VddManager *manager, gpointer target, const VddMethod *methods,
                    gsize n_methods);

/* Log one operation: caller uid, method, object, result. */
void vdd_log_operation(GDBusMethodInvocation *invocation, guint32 uid, const char *what,
                       const GError *error);
/* Reply with error (converted to VDD_ERROR, taken) and log it. */
void vdd_return_error(GDBusMethodInvocation *invocation, guint32 uid, const char *what,
                      GError *error);

/* A caller's descriptor from the message: index handle in its fd list, dup'ed
 * (caller closes). Checks it is a regular file with the access wanted
 * (O_RDONLY: readable; O_RDWR: readable and writable, not append); one
 * passed for reading and writing where reading is wanted comes back
 * reopened for reading only. -1 with InvalidArgument. */
int vdd_caller_fd(GDBusMethodInvocation *invocation, gint32 handle, int access, const char *what,
                  GError **error);
/* The same checks of fd, a caller's descriptor that came another way
 * (taken: the result, or closed on failure). */
int vdd_caller_fd_check(int fd, int access, const char *what, GError **error);
/* A caller's connected stream socket from the message (ImportVolume's
 * nbd-export: the caller dialled an NBD server with its own rights and
 * network, vdiskd dials nothing): a Unix, IPv4 or IPv6 SOCK_STREAM socket
 * that has a peer, dup'ed (caller closes). -1 with InvalidArgument. */
int vdd_caller_socket(GDBusMethodInvocation *invocation, gint32 handle, const char *what,
                      GError **error);
