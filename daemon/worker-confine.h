/* The confinement vdisk-worker puts itself in before it reads a byte of an
 * image, so that a parser bug that slips past the formats' own checks
 * reaches nothing but the descriptors of its one job.
 *
 * In this order: every descriptor but the job's is closed; resource limits
 * (address space, CPU time, open files) are set; a worker started as root
 * drops every capability and becomes an unprivileged user (the "vdisk"
 * system user, or "nobody"); PR_SET_NO_NEW_PRIVS and not dumpable (no
 * process of that user may trace it); Landlock allows reading beneath the
 * job's folder descriptors and nothing else on the filesystem (where the
 * kernel has Landlock; said in the log where it has not); and a seccomp
 * filter kills the process on any system call that reading and writing
 * images does not need (exec, socket, ptrace, mount, opening a file for
 * writing, ...); the worker of an RBD image's job alone may connect to
 * the network (see network below). */
#pragma once

#include <glib.h>
#include <sys/types.h>

typedef struct {
    const int *keep_fds; /* every descriptor the job may use, 0-2 are kept too */
    guint n_keep_fds;
    const int *dir_fds; /* folders the worker may open files beneath (read only) */
    guint n_dir_fds;
    guint64 address_space; /* bytes; 0: unlimited */
    guint64 cpu_seconds;   /* 0: unlimited */
    guint64 open_files;
    /* A worker that becomes another program (nbdkit, serving a volume
     * over NBD) names it here: Landlock lets it execute that file (and
     * the ELF interpreter) and read beneath read_paths (NULL-terminated;
     * folders and files), and the seccomp filter, instead of allowing
     * only what image I/O needs, kills it on what no server of a passed
     * descriptor needs: creating a socket, connecting, binding, tracing,
     * mounting, namespaces, modules, ... NULL: image work only. */
    const char *exec_path;
    const char *const *read_paths;
    /* A job on a Ceph RBD image (an rbd pool's volume): the worker speaks
     * to the cluster itself, so it may create and connect AF_INET and
     * AF_INET6 sockets (an AF_UNIX one is refused, any other kills it),
     * Landlock does not restrict the TCP ports it connects to, and it may
     * read read_paths (the cluster's ceph.conf). Nothing else widens. */
    gboolean network;
} VddConfineSpec;

typedef struct {
    char *user; /* the user the worker runs as */
    uid_t uid;
    gid_t gid;
    gboolean dropped_privileges; /* it was root and is not any more */
    gboolean no_new_privs;
    int landlock_abi; /* 0: the kernel has no Landlock */
    gboolean seccomp;
} VddConfinement;

void vdd_confinement_clear(VddConfinement *c);

/* Close every descriptor above 2 but keep (n of them). */
void vdd_confine_close_fds_except(const int *keep, guint n);

/* Confine the calling process as spec says; it must still be single
 * threaded. Fills *state with what is in effect. FALSE when any step that
 * must not be skipped failed: the process must then exit without touching
 * an image. */
gboolean vdd_confine_apply(const VddConfineSpec *spec, VddConfinement *state, GError **error);

/* The confinement as a{sv}: "user" s, "uid" u, "no-new-privs" b,
 * "landlock-abi" i, "seccomp" b. */
GVariant *vdd_confinement_to_variant(const VddConfinement *state);
