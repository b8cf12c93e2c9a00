#include "worker-confine.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/landlock.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

/* Rights of later Landlock ABIs, which older kernel headers lack. */
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15)
#endif
#define VDD_LANDLOCK_NET_BIND_TCP (1ULL << 0)
#define VDD_LANDLOCK_NET_CONNECT_TCP (1ULL << 1)
#define VDD_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)
#define VDD_LANDLOCK_SCOPE_SIGNAL (1ULL << 1)

/* struct landlock_ruleset_attr as of ABI 6; the kernel is told the size
 * its ABI knows. */
struct vdd_landlock_ruleset_attr {
    guint64 handled_access_fs;
    guint64 handled_access_net;
    guint64 scoped;
};

void vdd_confinement_clear(VddConfinement *c) { g_clear_pointer(&c->user, g_free); }

static gboolean set_error_errno(GError **error, const char *what)
{
    int e = errno;
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e), "%s: %s", what, g_strerror(e));
    return FALSE;
}

static int compare_int(gconstpointer a, gconstpointer b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

void vdd_confine_close_fds_except(const int *keep, guint n)
{
    g_autofree int *sorted = g_new(int, n + 1);
    guint k = 0;
    for (guint i = 0; i < n; i++)
        if (keep[i] > 2)
            sorted[k++] = keep[i];
    qsort(sorted, k, sizeof(int), compare_int);
    unsigned int from = 3;
    for (guint i = 0; i < k; i++) {
        if ((unsigned int)sorted[i] > from)
            close_range(from, sorted[i] - 1, 0);
        from = sorted[i] + 1;
    }
    close_range(from, ~0U, 0);
}

/* Set resource to value (never above what the service was given). */
static gboolean set_limit(int resource, guint64 value, const char *what, GError **error)
{
    struct rlimit r = { .rlim_cur = value, .rlim_max = value };
    struct rlimit old;
    /* Never raise a limit the service was given already. */
    if (getrlimit(resource, &old) == 0 && old.rlim_max != RLIM_INFINITY && old.rlim_max < value)
        r.rlim_cur = r.rlim_max = old.rlim_max;
    if (setrlimit(resource, &r) < 0)
        return set_error_errno(error, what);
    return TRUE;
}

static gboolean drop_root(VddConfinement *state, GError **error)
{
    const struct passwd *pw = getpwnam("vdisk");
    if (pw == NULL)
        pw = getpwnam("nobody");
    if (pw == NULL || pw->pw_uid == 0) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                    "neither a 'vdisk' nor a 'nobody' user exists to run the worker as");
        return FALSE;
    }
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    g_free(state->user);
    state->user = g_strdup(pw->pw_name);
    /* The bounding set matters only across exec, which seccomp forbids;
     * it is emptied where the service may (CAP_SETPCAP). */
    for (int cap = 0; cap <= CAP_LAST_CAP; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL && errno != EPERM)
            return set_error_errno(error, "dropping the capability bounding set");
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (setgroups(0, NULL) < 0)
        return set_error_errno(error, "setgroups");
    if (setresgid(gid, gid, gid) < 0)
        return set_error_errno(error, "setresgid");
    if (setresuid(uid, uid, uid) < 0)
        return set_error_errno(error, "setresuid");
    /* Leaving uid 0 clears the permitted and effective sets; make sure. */
    struct __user_cap_header_struct head = { .version = _LINUX_CAPABILITY_VERSION_3 };
    struct __user_cap_data_struct data[2] = { 0 };
    if (syscall(SYS_capset, &head, data) < 0)
        return set_error_errno(error, "clearing capabilities");
    uid_t r, e, s;
    gid_t rg, eg, sg;
    if (getresuid(&r, &e, &s) < 0 || getresgid(&rg, &eg, &sg) < 0 || r != uid || e != uid ||
        s != uid || rg != gid || eg != gid || sg != gid) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "the worker is still privileged");
        return FALSE;
    }
    state->uid = uid;
    state->gid = gid;
    state->dropped_privileges = TRUE;
    return TRUE;
}

static guint64 landlock_fs_rights(int abi)
{
    guint64 rights =
        LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE |
        LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR |
        LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR |
        LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |
        LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK | LANDLOCK_ACCESS_FS_MAKE_SYM;
    if (abi >= 2)
        rights |= LANDLOCK_ACCESS_FS_REFER;
    if (abi >= 3)
        rights |= LANDLOCK_ACCESS_FS_TRUNCATE;
    if (abi >= 5)
        rights |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
    return rights;
}

/* Landlock: the folders' files may be read, nothing else may be opened.
 * Descriptors open already (the job's source and target) keep their
 * access. */
static gboolean apply_landlock(const VddConfineSpec *spec, VddConfinement *state, GError **error)
{
    int abi = (int)syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    if (abi < 0) {
        if (errno == ENOSYS || errno == EOPNOTSUPP) {
            state->landlock_abi = 0;
            return TRUE;
        }
        return set_error_errno(error, "Landlock");
    }
    struct vdd_landlock_ruleset_attr attr = { .handled_access_fs = landlock_fs_rights(abi) };
    gsize size = sizeof attr.handled_access_fs;
    if (abi >= 4) {
        attr.handled_access_net = VDD_LANDLOCK_NET_BIND_TCP | VDD_LANDLOCK_NET_CONNECT_TCP;
        size = offsetof(struct vdd_landlock_ruleset_attr, scoped);
    }
    if (abi >= 6) {
        attr.scoped = VDD_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | VDD_LANDLOCK_SCOPE_SIGNAL;
        size = sizeof attr;
    }
    int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0);
    if (ruleset < 0)
        return set_error_errno(error, "Landlock ruleset");
    for (guint i = 0; i < spec->n_dir_fds; i++) {
        struct landlock_path_beneath_attr rule = {
            .allowed_access = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR,
            .parent_fd = spec->dir_fds[i],
        };
        if (syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0) < 0) {
            close(ruleset);
            return set_error_errno(error, "Landlock rule for the pool's folder");
        }
    }
    if (syscall(SYS_landlock_restrict_self, ruleset, 0) < 0) {
        close(ruleset);
        return set_error_errno(error, "Landlock");
    }
    close(ruleset);
    state->landlock_abi = abi;
    return TRUE;
}

/* A name this architecture lacks is nothing to allow. */
static gboolean allow(scmp_filter_ctx ctx, const char *name)
{
    int nr = seccomp_syscall_resolve_name(name);
    return nr == __NR_SCMP_ERROR || seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) == 0;
}

/* What reading and writing images on descriptors takes, with threads and
 * GLib around it; anything else kills the process. Paths are Landlock's
 * business; this is about classes of system calls. */
static gboolean apply_seccomp(VddConfinement *state, GError **error)
{
    static const char *const allowed[] = {
        /* I/O on descriptors it holds */
        "read", "write", "pread64", "pwrite64", "readv", "writev", "preadv", "pwritev", "preadv2",
        "pwritev2", "lseek", "close", "fstat", "newfstatat", "statx", "fstatfs", "statfs", "fcntl",
        "flock", "fsync", "fdatasync", "ftruncate", "fallocate", "fadvise64", "copy_file_range",
        "sync_file_range", "getdents64", "readlinkat", "faccessat", "faccessat2", "dup", "dup3",
        "sendmsg", "recvmsg", "poll", "ppoll",
        /* memory */
        "brk", "munmap", "mremap", "madvise", "mlock", "mlock2", "munlock",
        /* threads, time, signals, exit */
        "futex", "set_robust_list", "get_robust_list", "rseq", "set_tid_address", "gettid",
        "getpid", "getppid", "sched_yield", "sched_getaffinity", "rt_sigaction", "rt_sigprocmask",
        "rt_sigreturn", "sigaltstack", "clock_gettime", "clock_getres", "clock_nanosleep",
        "nanosleep", "gettimeofday", "getrandom", "eventfd2", "restart_syscall", "exit",
        "exit_group",
        /* who it is, what it may (for its report) */
        "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "capget", "uname",
        "getrlimit", NULL
    };
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
    if (ctx == NULL) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "seccomp: no filter");
        return FALSE;
    }
    gboolean ok = TRUE;
    for (guint i = 0; ok && allowed[i]; i++)
        ok = allow(ctx, allowed[i]);
    /* Opening for reading only: backing files and extents beneath the
     * pool's folder (Landlock says which); never for writing or creating. */
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(openat), 1,
                                SCMP_A2(SCMP_CMP_MASKED_EQ, O_ACCMODE | O_CREAT | O_TRUNC, 0)) == 0;
    /* openat2's flags are out of the filter's reach: the library falls
     * back to openat, one component at a time. clone3 likewise, for
     * glibc's fallback to clone. */
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(openat2), 0) == 0;
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) == 0;
    /* Threads, never processes. */
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                                SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD)) == 0;
    /* No executable memory. */
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1,
                                SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)) == 0;
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
                                SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)) == 0;
    /* Naming its threads; asking whether stderr is a terminal; reading a
     * limit but never setting one; signals to itself only (abort). */
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
                                SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME)) == 0;
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
                                SCMP_A0(SCMP_CMP_EQ, PR_GET_NAME)) == 0;
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                                SCMP_A1(SCMP_CMP_EQ, TCGETS)) == 0;
    /* The copy engine shares extents between two files it holds (a
     * reflink, on XFS and btrfs): runs, or a whole file. */
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                                SCMP_A1(SCMP_CMP_EQ, FICLONERANGE)) == 0;
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                                SCMP_A1(SCMP_CMP_EQ, FICLONE)) == 0;
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prlimit64), 1,
                                SCMP_A2(SCMP_CMP_EQ, 0)) == 0;
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
                                SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid())) == 0;
    if (!ok) {
        seccomp_release(ctx);
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "seccomp: building the filter failed");
        return FALSE;
    }
    int r = seccomp_load(ctx);
    seccomp_release(ctx);
    if (r < 0) {
        errno = -r;
        return set_error_errno(error, "seccomp");
    }
    state->seccomp = TRUE;
    return TRUE;
}

gboolean vdd_confine_apply(const VddConfineSpec *spec, VddConfinement *state, GError **error)
{
    memset(state, 0, sizeof *state);
    vdd_confine_close_fds_except(spec->keep_fds, spec->n_keep_fds);
    /* 0 in the spec: no limit of vdisk's own; never a core dump. */
    if ((spec->address_space != 0 &&
         !set_limit(RLIMIT_AS, spec->address_space, "address space limit", error)) ||
        (spec->cpu_seconds != 0 &&
         !set_limit(RLIMIT_CPU, spec->cpu_seconds, "CPU time limit", error)) ||
        (spec->open_files != 0 &&
         !set_limit(RLIMIT_NOFILE, spec->open_files, "open files limit", error)) ||
        !set_limit(RLIMIT_CORE, 0, "core limit", error))
        return FALSE;
    state->uid = geteuid();
    state->gid = getegid();
    if (geteuid() == 0) {
        if (!drop_root(state, error))
            return FALSE;
    } else {
        const struct passwd *pw = getpwuid(geteuid());
        state->user = pw != NULL ? g_strdup(pw->pw_name) : g_strdup_printf("%u", geteuid());
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return set_error_errno(error, "PR_SET_NO_NEW_PRIVS");
    state->no_new_privs = TRUE;
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        return set_error_errno(error, "PR_SET_DUMPABLE");
    return apply_landlock(spec, state, error) && apply_seccomp(state, error);
}

GVariant *vdd_confinement_to_variant(const VddConfinement *state)
{
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "user", g_variant_new_string(state->user ? state->user : ""));
    g_variant_builder_add(&b, "{sv}", "uid", g_variant_new_uint32(state->uid));
    g_variant_builder_add(&b, "{sv}", "no-new-privs", g_variant_new_boolean(state->no_new_privs));
    g_variant_builder_add(&b, "{sv}", "landlock-abi", g_variant_new_int32(state->landlock_abi));
    g_variant_builder_add(&b, "{sv}", "seccomp", g_variant_new_boolean(state->seccomp));
    return g_variant_builder_end(&b);
}
