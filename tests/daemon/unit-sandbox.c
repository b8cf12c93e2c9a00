/* unit-sandbox: start a program the way vdiskd.service confines vdiskd,
 * without systemd (test-unit-sandbox.py computes the settings from the unit
 * file and passes them here). In the order systemd's exec takes: limits,
 * the namespaces (network, mounts), the umask, the capability bounding
 * set, no-new-privs, the seccomp filters, then exec. A test program only: it
 * runs as root and is never installed.
 *
 * Usage: unit-sandbox [OPTION...] -- PROGRAM [ARG...]; --help lists the
 * options, each named after the unit setting it reproduces. Exits 77 when
 * the system refuses a namespace or a mount, 125 on any other failure. */
#include <glib.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef SCHED_DEADLINE
#define SCHED_DEADLINE 6
#endif
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

static char *syscalls_file;
static int error_number = EPERM;
static char *capabilities;
static gboolean no_new_privs;
static char *umask_text;
static int limit_nofile;
static gboolean restrict_namespaces;
static char **address_families;
static gboolean restrict_realtime;
static gboolean restrict_suid_sgid;
static gboolean lock_personality;
static gboolean memory_deny_write_execute;
static gboolean private_network;
static gboolean protect_system_strict;
static char **read_write_paths;
static gboolean protect_home;
static gboolean private_tmp;
static char **bind_paths;
static gboolean private_devices;
static gboolean protect_kernel_tunables;

static const GOptionEntry entries[] = {
    { "system-call-filter", 0, 0, G_OPTION_ARG_FILENAME, &syscalls_file,
      "SystemCallFilter= as an allow-list: FILE names one system call a line", "FILE" },
    { "system-call-error-number", 0, 0, G_OPTION_ARG_INT, &error_number,
      "SystemCallErrorNumber=: the errno of the calls the filter leaves out", "N" },
    { "capability-bounding-set", 0, 0, G_OPTION_ARG_STRING, &capabilities,
      "CapabilityBoundingSet=, as a CapBnd mask", "HEX" },
    { "no-new-privileges", 0, 0, G_OPTION_ARG_NONE, &no_new_privs, "NoNewPrivileges=yes", NULL },
    { "umask", 0, 0, G_OPTION_ARG_STRING, &umask_text, "UMask=", "OCTAL" },
    { "limit-nofile", 0, 0, G_OPTION_ARG_INT, &limit_nofile, "LimitNOFILE=", "N" },
    { "restrict-namespaces", 0, 0, G_OPTION_ARG_NONE, &restrict_namespaces,
      "RestrictNamespaces=yes", NULL },
    { "restrict-address-families", 0, 0, G_OPTION_ARG_STRING_ARRAY, &address_families,
      "RestrictAddressFamilies=: one allowed family (a number), repeated", "AF" },
    { "restrict-realtime", 0, 0, G_OPTION_ARG_NONE, &restrict_realtime, "RestrictRealtime=yes",
      NULL },
    { "restrict-suid-sgid", 0, 0, G_OPTION_ARG_NONE, &restrict_suid_sgid, "RestrictSUIDSGID=yes",
      NULL },
    { "lock-personality", 0, 0, G_OPTION_ARG_NONE, &lock_personality, "LockPersonality=yes", NULL },
    { "memory-deny-write-execute", 0, 0, G_OPTION_ARG_NONE, &memory_deny_write_execute,
      "MemoryDenyWriteExecute=yes", NULL },
    { "private-network", 0, 0, G_OPTION_ARG_NONE, &private_network, "PrivateNetwork=yes", NULL },
    { "protect-system-strict", 0, 0, G_OPTION_ARG_NONE, &protect_system_strict,
      "ProtectSystem=strict", NULL },
    { "read-write-path", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &read_write_paths,
      "ReadWritePaths=, one a time ('-' first: ignored when missing)", "PATH" },
    { "protect-home", 0, 0, G_OPTION_ARG_NONE, &protect_home, "ProtectHome=yes", NULL },
    { "private-tmp", 0, 0, G_OPTION_ARG_NONE, &private_tmp, "PrivateTmp=yes", NULL },
    { "bind-read-only-path", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &bind_paths,
      "BindReadOnlyPaths=PATH, as a drop-in would add (kept through PrivateTmp=)", "PATH" },
    { "private-devices", 0, 0, G_OPTION_ARG_NONE, &private_devices, "PrivateDevices=yes", NULL },
    { "protect-kernel-tunables", 0, 0, G_OPTION_ARG_NONE, &protect_kernel_tunables,
      "ProtectKernelTunables=yes (with ProtectControlGroups=yes: /sys read-only)", NULL },
    { NULL }
};

/* Set while the namespaces are made: a container may refuse them (exit
 * 77, the tests' skip), which is not the launcher's fault. */
static gboolean making_namespaces;

static G_NORETURN void die(const char *what)
{
    int e = errno;
    fprintf(stderr, "unit-sandbox: %s: %s\n", what, g_strerror(e));
    if (making_namespaces && (e == EPERM || e == EACCES || e == ENOSYS)) {
        fprintf(stderr, "unit-sandbox: this system refuses the unit's namespaces\n");
        exit(77);
    }
    exit(125);
}

static G_NORETURN void die_msg(const char *what)
{
    fprintf(stderr, "unit-sandbox: %s\n", what);
    exit(125);
}

/* CapabilityBoundingSet=, as the mask /proc/PID/status shows in CapBnd
 * (the test has setpriv turn the unit's names into it). */
static void drop_bounding_set(const char *hex)
{
    char *end;
    errno = 0;
    guint64 mask = g_ascii_strtoull(hex, &end, 16);
    if (errno != 0 || *end != '\0' || end == hex)
        die_msg("--capability-bounding-set takes a hexadecimal mask");
    for (int cap = 0; cap < 64; cap++) {
        if (mask & (G_GUINT64_CONSTANT(1) << cap))
            continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            die("PR_CAPBSET_DROP");
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        die("PR_CAP_AMBIENT_CLEAR_ALL");
}

/* ---- mounts ---- */

static void bind_onto_itself(const char *path)
{
    if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0)
        die(path);
}

static void set_read_only(const char *path, gboolean read_only)
{
    struct mount_attr attr = { 0 };
    if (read_only)
        attr.attr_set = MOUNT_ATTR_RDONLY;
    else
        attr.attr_clr = MOUNT_ATTR_RDONLY;
    if (mount_setattr(AT_FDCWD, path, AT_RECURSIVE, &attr, sizeof attr) < 0)
        die(path);
}

/* A detached copy of the mount tree at path, to put back after a tmpfs
 * covered it. */
static int keep_tree(const char *path)
{
    int fd = open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (fd < 0)
        die(path);
    return fd;
}

static void put_tree(int fd, const char *path, gboolean is_dir)
{
    if (is_dir) {
        if (g_mkdir_with_parents(path, 0755) < 0)
            die(path);
    } else {
        int f = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (f < 0)
            die(path);
        close(f);
    }
    if (move_mount(fd, "", AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        die(path);
    close(fd);
}

static void mount_tmpfs(const char *path, const char *options, unsigned long flags)
{
    if (mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | flags, options) < 0)
        die(path);
}

/* PrivateDevices=: a /dev of its own with the pseudo devices only. */
static void private_dev(void)
{
    static const char *const nodes[] = { "null", "zero", "full", "random", "urandom", "tty" };
    int fds[G_N_ELEMENTS(nodes)];
    for (guint i = 0; i < G_N_ELEMENTS(nodes); i++) {
        g_autofree char *p = g_strconcat("/dev/", nodes[i], NULL);
        fds[i] = keep_tree(p);
    }
    if (mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=0755") < 0)
        die("/dev");
    for (guint i = 0; i < G_N_ELEMENTS(nodes); i++) {
        g_autofree char *p = g_strconcat("/dev/", nodes[i], NULL);
        put_tree(fds[i], p, FALSE);
    }
    if (mkdir("/dev/shm", 01777) < 0 || chmod("/dev/shm", 01777) < 0)
        die("/dev/shm");
    mount_tmpfs("/dev/shm", "mode=1777", 0);
    if (mkdir("/dev/pts", 0755) < 0)
        die("/dev/pts");
    if (mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666") <
        0)
        die("/dev/pts");
    if (symlink("pts/ptmx", "/dev/ptmx") < 0 || symlink("/proc/self/fd", "/dev/fd") < 0 ||
        symlink("/proc/self/fd/0", "/dev/stdin") < 0 ||
        symlink("/proc/self/fd/1", "/dev/stdout") < 0 ||
        symlink("/proc/self/fd/2", "/dev/stderr") < 0)
        die("/dev links");
}

static void set_up_mounts(void)
{
    if (unshare(CLONE_NEWNS) < 0)
        die("unshare(CLONE_NEWNS)");
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
        die("making / a slave");

    /* BindReadOnlyPaths= survive PrivateTmp=: take them before the tmpfs. */
    guint n_binds = bind_paths ? g_strv_length(bind_paths) : 0;
    g_autofree int *bind_fds = g_new0(int, n_binds + 1);
    for (guint i = 0; i < n_binds; i++)
        bind_fds[i] = keep_tree(bind_paths[i]);
    if (private_tmp) {
        mount_tmpfs("/tmp", "mode=1777", 0);
        if (access("/var/tmp", F_OK) == 0)
            mount_tmpfs("/var/tmp", "mode=1777", 0);
    }
    if (private_devices)
        private_dev();
    for (guint i = 0; i < n_binds; i++)
        put_tree(bind_fds[i], bind_paths[i], TRUE);

    if (protect_home) {
        static const char *const homes[] = { "/home", "/root", "/run/user" };
        for (guint i = 0; i < G_N_ELEMENTS(homes); i++)
            if (access(homes[i], F_OK) == 0)
                mount_tmpfs(homes[i], "mode=000", MS_RDONLY | MS_NOEXEC);
    }

    /* ProtectSystem=strict: the whole tree read-only but the API file
     * systems and a private /tmp; BindReadOnlyPaths= read-only; then the
     * ReadWritePaths=, the most specific, writable again (each a mount of
     * its own first). */
    g_autoptr(GPtrArray) writable = g_ptr_array_new();
    for (guint i = 0; protect_system_strict && read_write_paths && read_write_paths[i]; i++) {
        const char *p = read_write_paths[i];
        gboolean optional = p[0] == '-';
        if (optional)
            p++;
        if (access(p, F_OK) < 0) {
            if (optional)
                continue;
            die(p);
        }
        bind_onto_itself(p);
        g_ptr_array_add(writable, (gpointer)p);
    }
    if (protect_system_strict) {
        set_read_only("/", TRUE);
        set_read_only("/dev", FALSE);
        set_read_only("/proc", FALSE);
        if (!protect_kernel_tunables)
            set_read_only("/sys", FALSE);
        if (private_tmp) {
            set_read_only("/tmp", FALSE);
            if (access("/var/tmp", F_OK) == 0)
                set_read_only("/var/tmp", FALSE);
        }
    }
    for (guint i = 0; i < n_binds; i++)
        set_read_only(bind_paths[i], TRUE);
    for (guint i = 0; i < writable->len; i++)
        set_read_only(writable->pdata[i], FALSE);
    if (protect_kernel_tunables) {
        static const char *const tunables[] = { "/proc/sys", "/proc/sysrq-trigger", "/sys" };
        for (guint i = 0; i < G_N_ELEMENTS(tunables); i++) {
            if (access(tunables[i], F_OK) < 0)
                continue;
            bind_onto_itself(tunables[i]);
            set_read_only(tunables[i], TRUE);
        }
    }
}

/* ---- seccomp ---- */

static void load(scmp_filter_ctx ctx, const char *what)
{
    int r = seccomp_load(ctx);
    if (r < 0) {
        errno = -r;
        die(what);
    }
    seccomp_release(ctx);
}

static scmp_filter_ctx new_filter(uint32_t default_action)
{
    scmp_filter_ctx ctx = seccomp_init(default_action);
    if (ctx == NULL)
        die_msg("seccomp_init failed");
    /* libseccomp would set no-new-privs itself; systemd leaves that to
     * NoNewPrivileges=, and so does this. */
    if (seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0) < 0)
        die_msg("seccomp_attr_set failed");
    return ctx;
}

static void add(scmp_filter_ctx ctx, int r, const char *what)
{
    if (r < 0) {
        errno = -r;
        die(what);
    }
    (void)ctx;
}

/* SystemCallFilter=: the names in the file pass, everything else fails
 * with SystemCallErrorNumber=. Names this architecture lacks are skipped,
 * as systemd does. SystemCallArchitectures=native: libseccomp's filter
 * covers the native architecture only, others are killed. */
static void syscall_filter(const char *path)
{
    g_autofree char *text = NULL;
    g_autoptr(GError) error = NULL;
    if (!g_file_get_contents(path, &text, NULL, &error))
        die_msg(error->message);
    scmp_filter_ctx ctx = new_filter(SCMP_ACT_ERRNO(error_number));
    g_auto(GStrv) names = g_strsplit(text, "\n", -1);
    for (guint i = 0; names[i]; i++) {
        g_strstrip(names[i]);
        if (*names[i] == '\0')
            continue;
        int nr = seccomp_syscall_resolve_name(names[i]);
        if (nr == __NR_SCMP_ERROR || nr < 0)
            continue;
        add(ctx, seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0), names[i]);
    }
    load(ctx, "SystemCallFilter=");
}

/* RestrictNamespaces=yes: no namespace of any kind; clone3's flags are
 * out of a filter's reach, so it is ENOSYS (glibc then uses clone). */
static void namespaces_filter(void)
{
    static const unsigned long flags[] = { CLONE_NEWNS,  CLONE_NEWCGROUP, CLONE_NEWUTS,
                                           CLONE_NEWIPC, CLONE_NEWUSER,   CLONE_NEWPID,
                                           CLONE_NEWNET, CLONE_NEWTIME };
    scmp_filter_ctx ctx = new_filter(SCMP_ACT_ALLOW);
    for (guint i = 0; i < G_N_ELEMENTS(flags); i++) {
        add(ctx,
            seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
                             SCMP_A0(SCMP_CMP_MASKED_EQ, flags[i], flags[i])),
            "unshare");
        add(ctx,
            seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                             SCMP_A0(SCMP_CMP_MASKED_EQ, flags[i], flags[i])),
            "clone");
    }
    add(ctx, seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(setns), 0), "setns");
    add(ctx, seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0), "clone3");
    load(ctx, "RestrictNamespaces=");
}

/* RestrictAddressFamilies=: socket() of any other family fails with
 * EAFNOSUPPORT (socketpair and passed sockets are not affected, as under
 * systemd). */
static void address_families_filter(void)
{
    gboolean allowed[AF_MAX + 1] = { FALSE };
    for (guint i = 0; address_families[i]; i++) {
        int af = atoi(address_families[i]);
        if (af <= 0 || af > AF_MAX)
            die_msg("bad address family");
        allowed[af] = TRUE;
    }
    scmp_filter_ctx ctx = new_filter(SCMP_ACT_ALLOW);
    for (int af = 0; af <= AF_MAX; af++)
        if (!allowed[af])
            add(ctx,
                seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1,
                                 SCMP_A0(SCMP_CMP_EQ, af)),
                "socket");
    add(ctx,
        seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1,
                         SCMP_A0(SCMP_CMP_GT, AF_MAX)),
        "socket");
    load(ctx, "RestrictAddressFamilies=");
}

/* RestrictRealtime=, RestrictSUIDSGID=, LockPersonality=,
 * MemoryDenyWriteExecute=: one filter of argument checks. */
static void argument_filters(void)
{
    scmp_filter_ctx ctx = new_filter(SCMP_ACT_ALLOW);
    const uint32_t eperm = SCMP_ACT_ERRNO(EPERM);
    if (restrict_realtime) {
        static const int policies[] = { SCHED_FIFO, SCHED_RR, SCHED_DEADLINE };
        for (guint i = 0; i < G_N_ELEMENTS(policies); i++)
            add(ctx,
                seccomp_rule_add(
                    ctx, eperm, SCMP_SYS(sched_setscheduler), 1,
                    SCMP_A1(SCMP_CMP_MASKED_EQ, ~(scmp_datum_t)SCHED_RESET_ON_FORK, policies[i])),
                "sched_setscheduler");
    }
    if (restrict_suid_sgid) {
        /* Each call that can give a file a mode: the argument holding the
         * mode, and the one holding the open flags that must create (-1:
         * the call always creates or changes). */
        static const struct {
            const char *name;
            unsigned mode_arg;
            int flags_arg;
        } setters[] = {
            { "chmod", 1, -1 }, { "fchmod", 1, -1 }, { "fchmodat", 2, -1 }, { "creat", 1, -1 },
            { "open", 2, 1 },   { "openat", 3, 2 },  { "mknod", 1, -1 },    { "mknodat", 2, -1 },
        };
        static const mode_t bits[] = { S_ISUID, S_ISGID };
        for (guint i = 0; i < G_N_ELEMENTS(bits); i++) {
            for (guint j = 0; j < G_N_ELEMENTS(setters); j++) {
                struct scmp_arg_cmp cmp[2] = {
                    SCMP_CMP(setters[j].mode_arg, SCMP_CMP_MASKED_EQ, bits[i], bits[i]),
                    SCMP_CMP((unsigned)setters[j].flags_arg, SCMP_CMP_MASKED_EQ, O_CREAT, O_CREAT),
                };
                int nr = seccomp_syscall_resolve_name(setters[j].name);
                if (nr == __NR_SCMP_ERROR) /* not on this architecture */
                    continue;
                add(ctx,
                    seccomp_rule_add_array(ctx, eperm, nr, setters[j].flags_arg < 0 ? 1 : 2, cmp),
                    setters[j].name);
            }
        }
    }
    if (lock_personality) {
        int current = personality(0xffffffff);
        add(ctx,
            seccomp_rule_add(ctx, eperm, SCMP_SYS(personality), 1,
                             SCMP_A0(SCMP_CMP_NE, (scmp_datum_t)current)),
            "personality");
    }
    if (memory_deny_write_execute) {
        add(ctx,
            seccomp_rule_add(
                ctx, eperm, SCMP_SYS(mmap), 1,
                SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC | PROT_WRITE, PROT_EXEC | PROT_WRITE)),
            "mmap");
        add(ctx,
            seccomp_rule_add(ctx, eperm, SCMP_SYS(mprotect), 1,
                             SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC)),
            "mprotect");
        add(ctx,
            seccomp_rule_add(ctx, eperm, SCMP_SYS(pkey_mprotect), 1,
                             SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC)),
            "pkey_mprotect");
        add(ctx,
            seccomp_rule_add(ctx, eperm, SCMP_SYS(shmat), 1,
                             SCMP_A2(SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC)),
            "shmat");
    }
    load(ctx, "argument filters");
}

int main(int argc, char **argv)
{
    g_autoptr(GOptionContext) context = g_option_context_new("-- PROGRAM [ARG...]");
    g_autoptr(GError) error = NULL;
    g_option_context_add_main_entries(context, entries, NULL);
    if (!g_option_context_parse(context, &argc, &argv, &error)) {
        fprintf(stderr, "unit-sandbox: %s\n", error->message);
        return 2;
    }
    int first = argc > 1 && strcmp(argv[1], "--") == 0 ? 2 : 1;
    if (first >= argc) {
        fprintf(stderr, "unit-sandbox: no program to run\n");
        return 2;
    }
    if (getuid() != 0)
        die_msg("needs root, as the service manager is");

    if (limit_nofile > 0) {
        struct rlimit r = { .rlim_cur = limit_nofile, .rlim_max = limit_nofile };
        if (setrlimit(RLIMIT_NOFILE, &r) < 0)
            die("LimitNOFILE=");
    }
    making_namespaces = TRUE;
    if (private_network && unshare(CLONE_NEWNET) < 0)
        die("unshare(CLONE_NEWNET)");
    if (protect_system_strict || protect_home || private_tmp || private_devices ||
        protect_kernel_tunables || bind_paths)
        set_up_mounts();
    making_namespaces = FALSE;
    /* The service's umask, not the one its namespace was made under (the
     * folders a checkout under /tmp is put back in stay 0755, as systemd
     * makes them, so its unprivileged worker may walk to the plugin). */
    if (umask_text)
        umask((mode_t)strtoul(umask_text, NULL, 8));
    if (capabilities)
        drop_bounding_set(capabilities);
    if (no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        die("PR_SET_NO_NEW_PRIVS");
    /* Without no-new-privs loading a filter takes CAP_SYS_ADMIN, which this
     * process keeps (the bounding set limits what exec gives), as
     * systemd's does. The allow-list goes on last: loading the others
     * takes seccomp(), which it need not allow. */
    if (restrict_namespaces)
        namespaces_filter();
    if (address_families)
        address_families_filter();
    if (restrict_realtime || restrict_suid_sgid || lock_personality || memory_deny_write_execute)
        argument_filters();
    if (syscalls_file)
        syscall_filter(syscalls_file);
    execv(argv[first], argv + first);
    die(argv[first]);
}
