#include "worker-confine.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/fs.h>
#include <link.h>
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
#include <sys/socket.h>
#include <sys/stat.h>
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

/* The ELF interpreter of this program (the dynamic loader), which the
 * kernel opens for execution with any dynamically linked program. */
static int find_interpreter(struct dl_phdr_info *info, size_t size, void *data)
{
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
        if (info->dlpi_phdr[i].p_type == PT_INTERP) {
            *(const char **)data = (const char *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
            break;
        }
    }
    return 1; /* the main program comes first: only it */
}

static gboolean add_path_rule(int ruleset, const char *path, guint64 access, GError **error)
{
    int fd = open(path, O_PATH | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        if (fd >= 0)
            close(fd);
        /* Nothing there is nothing to allow. */
        return errno == ENOENT || errno == ENOTDIR || set_error_errno(error, path);
    }
    /* A file takes only the rights a file has. */
    if (!S_ISDIR(st.st_mode))
        access &= LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE |
                  LANDLOCK_ACCESS_FS_EXECUTE;
    struct landlock_path_beneath_attr rule = { .allowed_access = access, .parent_fd = fd };
    int r = (int)syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0);
    close(fd);
    if (r < 0)
        return set_error_errno(error, path);
    return TRUE;
}

/* For a worker that becomes spec's program: what it runs from. */
static gboolean add_exec_rules(int ruleset, const VddConfineSpec *spec, GError **error)
{
    const guint64 run = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_EXECUTE;
    const guint64 read = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
    const char *interpreter = NULL;
    dl_iterate_phdr(find_interpreter, &interpreter);
    /* nbdkit points its standard input and output at /dev/null. */
    if (!add_path_rule(ruleset, spec->exec_path, run, error) ||
        (interpreter != NULL && !add_path_rule(ruleset, interpreter, run, error)) ||
        !add_path_rule(ruleset, "/dev/null",
                       LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE, error))
        return FALSE;
    for (guint i = 0; spec->read_paths != NULL && spec->read_paths[i] != NULL; i++) {
        if (!add_path_rule(ruleset, spec->read_paths[i], read, error))
            return FALSE;
    }
    return TRUE;
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
        /* A Ceph client connects to the monitors and to every OSD, on
         * ports the cluster hands out: its connects are seccomp's to
         * allow, never its binds. */
        attr.handled_access_net = VDD_LANDLOCK_NET_BIND_TCP;
        if (!spec->network)
            attr.handled_access_net |= VDD_LANDLOCK_NET_CONNECT_TCP;
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
    for (guint i = 0; spec->network && spec->read_paths != NULL && spec->read_paths[i] != NULL;
         i++) {
        if (!add_path_rule(ruleset, spec->read_paths[i], LANDLOCK_ACCESS_FS_READ_FILE, error)) {
            close(ruleset);
            g_prefix_error(error, "Landlock rule: ");
            return FALSE;
        }
    }
    if (spec->exec_path != NULL && !add_exec_rules(ruleset, spec, error)) {
        close(ruleset);
        g_prefix_error(error, "Landlock rule: ");
        return FALSE;
    }
    if (syscall(SYS_landlock_restrict_self, ruleset, 0) < 0) {
        close(ruleset);
        return set_error_errno(error, "Landlock");
    }
    close(ruleset);
    state->landlock_abi = abi;
    return TRUE;
}

/* Allow each call of names (NULL-terminated); a name this architecture
 * lacks is nothing to allow. */
static gboolean allow_all(scmp_filter_ctx ctx, const char *const *names)
{
    for (guint i = 0; names[i] != NULL; i++) {
        int nr = seccomp_syscall_resolve_name(names[i]);
        if (nr != __NR_SCMP_ERROR && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) != 0)
            return FALSE;
    }
    return TRUE;
}

/* What librados and librbd do besides image I/O: IP sockets to the
 * cluster's monitors and OSDs, and the event loops of their messenger
 * threads. An AF_UNIX socket (an admin socket a configuration asks for)
 * is refused, not fatal; any other family, bind and listen still kill. */
static gboolean allow_ceph_client(scmp_filter_ctx ctx)
{
    static const char *const allowed[] = {
        "connect",      "setsockopt",    "getsockopt", "getsockname", "getpeername",
        "epoll_create", "epoll_create1", "epoll_ctl",  "epoll_wait",  "epoll_pwait",
        "pipe2",        "access",        NULL
    };
    gboolean ok = allow_all(ctx, allowed);
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
                                SCMP_A0(SCMP_CMP_EQ, AF_INET)) == 0;
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
                                SCMP_A0(SCMP_CMP_EQ, AF_INET6)) == 0;
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket), 1,
                                SCMP_A0(SCMP_CMP_EQ, AF_UNIX)) == 0;
    /* Ceph names each thread it starts from the thread that starts it,
     * which glibc does by writing /proc/self/task/TID/comm: that open
     * fails (the name is cosmetic) instead of killing the client. Every
     * other open for writing fails the same way, and Landlock would
     * refuse it anyway. */
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(openat), 1,
                                SCMP_A2(SCMP_CMP_MASKED_EQ, O_ACCMODE, O_WRONLY)) == 0;
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(openat), 1,
                                SCMP_A2(SCMP_CMP_MASKED_EQ, O_ACCMODE, O_RDWR)) == 0;
    return ok;
}

/* Loads the filter built in ctx (ok: every rule was added) and releases
 * it. */
static gboolean load_filter(scmp_filter_ctx ctx, gboolean ok, VddConfinement *state, GError **error)
{
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

/* What reading and writing images on descriptors takes, with threads and
 * GLib around it; anything else kills the process. Paths are Landlock's
 * business; this is about classes of system calls. */
static gboolean apply_seccomp(gboolean network, VddConfinement *state, GError **error)
{
    static const char *const allowed[] = {
        /* I/O on descriptors it holds */
        "read", "write", "pread64", "pwrite64", "readv", "writev", "preadv", "pwritev", "preadv2",
        "pwritev2", "lseek", "close", "fstat", "newfstatat", "statx", "fstatfs", "statfs", "fcntl",
        "flock", "fsync", "fdatasync", "ftruncate", "fallocate", "fadvise64", "copy_file_range",
        "sync_file_range", "getdents64", "readlinkat", "faccessat", "faccessat2", "dup", "dup3",
        "sendmsg", "recvmsg", "poll", "ppoll",
        /* NBD on a socket the caller connected (an import from an NBD
         * server): libnbd's send, recv and shutdown. Creating a socket,
         * connecting and binding stay forbidden. */
        "sendto", "recvfrom", "shutdown",
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
    gboolean ok = allow_all(ctx, allowed);
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
    /* A logical pool's volume is a block device it was given: its size,
     * and zeroing (or discarding) ranges of it. */
    static const unsigned long block_ioctls[] = { BLKGETSIZE64, BLKSSZGET, BLKDISCARDZEROES,
                                                  BLKZEROOUT, BLKDISCARD };
    for (guint i = 0; i < G_N_ELEMENTS(block_ioctls); i++)
        ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                                    SCMP_A1(SCMP_CMP_EQ, block_ioctls[i])) == 0;
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prlimit64), 1,
                                SCMP_A2(SCMP_CMP_EQ, 0)) == 0;
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
                                SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid())) == 0;
    if (network)
        ok = ok && allow_ceph_client(ctx);
    return load_filter(ctx, ok, state, error);
}

/* For a worker that becomes a server of the descriptors it was passed
 * (nbdkit): everything it may need but what would reach beyond them. A
 * new network connection (socket, connect, bind), other processes
 * (ptrace, process_vm_*), the system (mount, namespaces, modules, keys,
 * clocks, reboot) kill it. */
static gboolean apply_seccomp_server(VddConfinement *state, GError **error)
{
    static const char *const denied[] = { "socket",
                                          "socketpair",
                                          "connect",
                                          "bind",
                                          "ptrace",
                                          "process_vm_readv",
                                          "process_vm_writev",
                                          "mount",
                                          "umount2",
                                          "pivot_root",
                                          "chroot",
                                          "unshare",
                                          "setns",
                                          "mount_setattr",
                                          "move_mount",
                                          "open_tree",
                                          "fsopen",
                                          "fsmount",
                                          "fspick",
                                          "kexec_load",
                                          "kexec_file_load",
                                          "init_module",
                                          "finit_module",
                                          "delete_module",
                                          "bpf",
                                          "perf_event_open",
                                          "keyctl",
                                          "add_key",
                                          "request_key",
                                          "userfaultfd",
                                          "open_by_handle_at",
                                          "name_to_handle_at",
                                          "swapon",
                                          "swapoff",
                                          "reboot",
                                          "acct",
                                          "settimeofday",
                                          "clock_settime",
                                          "clock_adjtime",
                                          "adjtimex",
                                          "iopl",
                                          "ioperm",
                                          "personality",
                                          "setuid",
                                          "setgid",
                                          "setreuid",
                                          "setregid",
                                          "setresuid",
                                          "setresgid",
                                          "setgroups",
                                          "setfsuid",
                                          "setfsgid",
                                          "capset",
                                          "quotactl",
                                          "lookup_dcookie",
                                          "io_uring_setup",
                                          NULL };
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (ctx == NULL) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "seccomp: no filter");
        return FALSE;
    }
    gboolean ok = TRUE;
    for (guint i = 0; ok && denied[i]; i++) {
        int nr = seccomp_syscall_resolve_name(denied[i]);
        ok = nr == __NR_SCMP_ERROR || seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, nr, 0) == 0;
    }
    /* No new namespaces through clone either; clone3's flags are out of
     * the filter's reach, so glibc falls back to clone. */
    static const scmp_datum_t namespaces[] = { CLONE_NEWNS,    CLONE_NEWUTS, CLONE_NEWIPC,
                                               CLONE_NEWUSER,  CLONE_NEWPID, CLONE_NEWNET,
                                               CLONE_NEWCGROUP };
    for (guint i = 0; ok && i < G_N_ELEMENTS(namespaces); i++)
        ok = seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, namespaces[i], namespaces[i])) == 0;
    ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) == 0;
    return load_filter(ctx, ok, state, error);
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
    return apply_landlock(spec, state, error) &&
           (spec->exec_path != NULL ? apply_seccomp_server(state, error)
                                    : apply_seccomp(spec->network, state, error));
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
