/* Image locks, the way QEMU's file-posix driver takes them, so that vdisk
 * and QEMU (qemu, qemu-nbd, qemu-io, qemu-storage-daemon, qemu-img) refuse
 * each other exactly as two QEMU processes do.
 *
 * Every permission an opener may hold on a file (read consistently, write,
 * write unchanged data, resize) has two bytes: 100 + n, read-locked while
 * the opener holds permission n, and 200 + n, read-locked while it refuses
 * to share permission n with others. Taking permission n then means nobody
 * else may hold byte 200 + n, and refusing to share it means nobody else
 * may hold byte 100 + n. The locks are open file description locks
 * (F_OFD_SETLK): they belong to one open of the file, not to the process,
 * so two opens inside vdisk see each other as QEMU's do, and closing some
 * other descriptor of the file never drops them. */
#include "vdisk-driver.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200

/* QEMU's BLK_PERM_* bits (7.2 and later), in their order. */
enum {
    PERM_CONSISTENT_READ = 1 << 0,
    PERM_WRITE = 1 << 1,
    PERM_WRITE_UNCHANGED = 1 << 2,
    PERM_RESIZE = 1 << 3,
    PERM_ALL = (1 << 4) - 1,
};

static const char *const perm_names[] = { "consistent read", "write", "write unchanged", "resize" };

typedef struct {
    guint perm;     /* permissions held */
    guint unshared; /* permissions refused to others */
} LockBits;

/* What QEMU itself holds for the same kind of open (seen in /proc/locks of
 * qemu-io and qemu-nbd): a reader or a backing file refuses writers and
 * resizers; a writer also refuses them; force-share refuses nobody;
 * creating a file refuses only resizers, as qemu-img create does. */
static LockBits mode_bits(VdLockMode mode)
{
    switch (mode) {
    case VD_LOCK_READ:
        return (LockBits){ PERM_CONSISTENT_READ, PERM_WRITE | PERM_RESIZE };
    case VD_LOCK_WRITE:
        return (LockBits){ PERM_CONSISTENT_READ | PERM_WRITE | PERM_RESIZE,
                           PERM_WRITE | PERM_RESIZE };
    case VD_LOCK_SHARED_READ:
        return (LockBits){ PERM_CONSISTENT_READ, 0 };
    case VD_LOCK_CREATE:
        return (LockBits){ PERM_WRITE | PERM_RESIZE, PERM_RESIZE };
    }
    g_assert_not_reached();
}

gboolean vd_lock_mode_for_open(VdOpenFlags flags, gboolean read_write, VdLockMode *mode)
{
    if (flags & VD_OPEN_NO_LOCKING)
        return FALSE;
    if (read_write)
        *mode = VD_LOCK_WRITE;
    else
        *mode = (flags & VD_OPEN_FORCE_SHARE) ? VD_LOCK_SHARED_READ : VD_LOCK_READ;
    return TRUE;
}

static int set_byte(int fd, int byte, short type)
{
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };
    return fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : errno;
}

/* Does another open of the file hold byte? Asked as QEMU asks: could a
 * write lock be placed there. */
static gboolean byte_taken(int fd, int byte, int *err)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };
    *err = fcntl(fd, F_OFD_GETLK, &fl) == 0 ? 0 : errno;
    return *err == 0 && fl.l_type != F_UNLCK;
}

void vd_unlock_fd(int fd, guint perm, guint unshared)
{
    for (guint i = 0; i < G_N_ELEMENTS(perm_names); i++) {
        if (perm & (1u << i))
            set_byte(fd, LOCK_PERM_BASE + (int)i, F_UNLCK);
        if (unshared & (1u << i))
            set_byte(fd, LOCK_SHARED_BASE + (int)i, F_UNLCK);
    }
}

/* errno values that say "no OFD locks here" rather than "someone has it":
 * an old kernel (EINVAL), a file system that cannot lock (NFS without a
 * lock daemon, some FUSE file systems). */
static gboolean locks_unsupported(int err)
{
    return err == EINVAL || err == ENOLCK || err == EOPNOTSUPP || err == ENOSYS;
}

static void warn_unsupported(const char *name, int err)
{
    static gsize warned = 0;
    /* Once per process, as qemu warns: the next file is likely on the same
     * file system. */
    if (g_once_init_enter(&warned)) {
        g_printerr("vdisk: warning: %s: the file cannot be locked (%s); other programs "
                   "using it at the same time will not be detected\n",
                   name, g_strerror(err));
        g_once_init_leave(&warned, 1);
    }
}

/* ----- who holds it: /proc/PID/fdinfo/FD lists each open's locks ----- */

/* Does one "lock:" line of fdinfo cover byte of the file with identity id
 * ("fe:00:1234", as the kernel prints device and inode)? */
static gboolean line_covers(const char *line, const char *id, int byte)
{
    g_autofree char *needle = g_strdup_printf(" %s ", id);
    const char *at = strstr(line, needle);
    if (at == NULL)
        return FALSE;
    char *end = NULL;
    guint64 first = g_ascii_strtoull(at + strlen(needle), &end, 10);
    if (end == NULL || *end != ' ')
        return FALSE;
    const char *last_text = end + 1;
    guint64 last =
        g_str_has_prefix(last_text, "EOF") ? G_MAXUINT64 : g_ascii_strtoull(last_text, NULL, 10);
    return first <= (guint64)byte && (guint64)byte <= last;
}

static gboolean pid_holds(const char *pid, const char *id, int byte)
{
    g_autofree char *dir_path = g_build_filename("/proc", pid, "fdinfo", NULL);
    g_autoptr(GDir) dir = g_dir_open(dir_path, 0, NULL);
    if (dir == NULL)
        return FALSE;
    for (const char *fd; (fd = g_dir_read_name(dir)) != NULL;) {
        g_autofree char *path = g_build_filename(dir_path, fd, NULL);
        g_autofree char *text = NULL;
        if (!g_file_get_contents(path, &text, NULL, NULL))
            continue;
        g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
        for (char **line = lines; *line != NULL; line++)
            if (g_str_has_prefix(*line, "lock:") && line_covers(*line, id, byte))
                return TRUE;
    }
    return FALSE;
}

/* "qemu-nbd, pid 1234" for a process holding byte of fd's file, another
 * one than this first; NULL when /proc does not tell (another container,
 * no permission). */
static char *find_holder(int fd, int byte)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return NULL;
    g_autofree char *id =
        g_strdup_printf("%02x:%02x:%ju", major(st.st_dev), minor(st.st_dev), (uintmax_t)st.st_ino);
    g_autofree char *self = g_strdup_printf("%d", (int)getpid());
    g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
    if (proc == NULL)
        return NULL;
    gboolean self_holds = FALSE;
    for (const char *pid; (pid = g_dir_read_name(proc)) != NULL;) {
        if (!g_ascii_isdigit(pid[0]))
            continue;
        if (g_str_equal(pid, self)) {
            self_holds = pid_holds(pid, id, byte);
            continue;
        }
        if (!pid_holds(pid, id, byte))
            continue;
        g_autofree char *comm_path = g_build_filename("/proc", pid, "comm", NULL);
        g_autofree char *comm = NULL;
        if (g_file_get_contents(comm_path, &comm, NULL, NULL))
            g_strstrip(comm);
        return g_strdup_printf("%s, pid %s", comm != NULL ? comm : "?", pid);
    }
    if (self_holds)
        return g_strdup("this process, through another open of it");
    return NULL;
}

static void set_busy_error(GError **error, const char *name, int fd, int byte, gboolean shared,
                           guint bit)
{
    g_autofree char *holder = find_holder(fd, byte);
    vd_set_file_error(error, name, VD_ERROR_BUSY,
                      "in use by another process (%s); stop it first (Failed to get %s\"%s\" lock)",
                      holder != NULL ? holder : "a running VM?", shared ? "shared " : "",
                      perm_names[bit]);
}

/* The first permission in mask whose byte at base + n someone else holds,
 * or -1. */
static int first_taken(int fd, guint mask, int base)
{
    for (guint i = 0; i < G_N_ELEMENTS(perm_names); i++) {
        int err = 0;
        if ((mask & (1u << i)) && byte_taken(fd, base + (int)i, &err))
            return (int)i;
    }
    return -1;
}

/* Check, after taking our own bytes, that nobody else conflicts (QEMU's
 * order: first the permissions we take, then the ones we do not share). */
static gboolean check_conflicts(int fd, const char *name, LockBits bits, GError **error)
{
    int i = first_taken(fd, bits.perm, LOCK_SHARED_BASE);
    if (i >= 0) {
        set_busy_error(error, name, fd, LOCK_SHARED_BASE + i, FALSE, (guint)i);
        return FALSE;
    }
    i = first_taken(fd, bits.unshared, LOCK_PERM_BASE);
    if (i >= 0) {
        set_busy_error(error, name, fd, LOCK_PERM_BASE + i, TRUE, (guint)i);
        return FALSE;
    }
    return TRUE;
}

gboolean vd_lock_fd(int fd, const char *name, VdLockMode mode, guint *perm, guint *unshared,
                    GError **error)
{
    LockBits bits = mode_bits(mode);
    LockBits taken = { 0, 0 };
    *perm = *unshared = 0;
    for (guint i = 0; i < G_N_ELEMENTS(perm_names); i++) {
        for (int shared_byte = 0; shared_byte < 2; shared_byte++) {
            guint want = shared_byte ? bits.unshared : bits.perm;
            if (!(want & (1u << i)))
                continue;
            int byte = (shared_byte ? LOCK_SHARED_BASE : LOCK_PERM_BASE) + (int)i;
            int err = set_byte(fd, byte, F_RDLCK);
            if (err == 0) {
                *(shared_byte ? &taken.unshared : &taken.perm) |= 1u << i;
                continue;
            }
            vd_unlock_fd(fd, taken.perm, taken.unshared);
            if (locks_unsupported(err)) {
                warn_unsupported(name, err);
                return TRUE;
            }
            if (err == EAGAIN || err == EACCES)
                vd_set_file_error(error, name, VD_ERROR_BUSY,
                                  "in use by another process; stop it first (Failed to lock "
                                  "byte %d)",
                                  byte);
            else
                vd_set_file_error(error, name, VD_ERROR_IO, "Failed to lock byte %d: %s", byte,
                                  g_strerror(err));
            return FALSE;
        }
    }
    if (!check_conflicts(fd, name, bits, error)) {
        vd_unlock_fd(fd, taken.perm, taken.unshared);
        return FALSE;
    }
    *perm = taken.perm;
    *unshared = taken.unshared;
    return TRUE;
}
