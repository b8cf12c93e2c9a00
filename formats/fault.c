/* Fault injection (test builds only, -DVD_FAULT_INJECTION): stop the
 * process at a chosen change to a host file, or simulate a power cut
 * there. fault.h describes the controls.
 *
 * The power cut model: a disk with a volatile write cache may keep, lose
 * or half-write anything written since the last flush, in any
 * combination. So for every file changed since its last successful flush
 * the layer keeps an undo log (the bytes and size each change replaced)
 * and the change itself. At the crash point every unflushed change is
 * rolled back, newest first, which gives exactly the flushed state; then
 * a random subset of the changes is applied again in order, some writes
 * only in part (a prefix of whole sectors), and the process ends without
 * any cleanup. Files are told apart by device and inode, so a file closed
 * and opened again, or reached through a duplicated descriptor, has one
 * log. A new file's directory entry is taken as durable. */
#include "fault.h"

#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECTOR 512

typedef enum { MODE_NONE, MODE_COUNT, MODE_CRASH, MODE_POWERCUT } Mode;

typedef struct {
    VdFaultOp op;
    guint64 offset;
    guint64 len;
    guint64 old_size;
    guint64 new_size;
    guint64 old_offset; /* where the replaced bytes were */
    GBytes *old_bytes;  /* what the change replaced (within the old size) */
    GBytes *new_bytes;  /* what a write put there */
} Change;

typedef struct {
    int fd; /* our own duplicate, to roll back through */
    GPtrArray *changes;
} FileLog;

static struct {
    Mode mode;
    guint64 point;  /* points seen so far */
    guint64 target; /* the point that crashes (1 is the first) */
    gboolean tear;
    GRand *rand;
    const char *report;
    GHashTable *files; /* "dev:ino" -> FileLog */
    FileLog *pending;  /* the file whose change is under way */
    Change *pending_change;
} fault;

static GMutex fault_lock;

static void change_free(gpointer data)
{
    Change *change = data;
    g_clear_pointer(&change->old_bytes, g_bytes_unref);
    g_clear_pointer(&change->new_bytes, g_bytes_unref);
    g_free(change);
}

static void write_report(void)
{
    if (fault.report == NULL)
        return;
    g_autofree char *text = g_strdup_printf("%" G_GUINT64_FORMAT "\n", fault.point);
    g_file_set_contents(fault.report, text, -1, NULL);
}

static void fault_init(void)
{
    static gsize done;
    if (!g_once_init_enter(&done))
        return;
    const char *spec = g_getenv("VDISK_FAULT");
    if (spec != NULL && *spec != '\0') {
        g_auto(GStrv) parts = g_strsplit(spec, ":", 0);
        guint n = g_strv_length(parts);
        if (g_str_equal(parts[0], "count")) {
            fault.mode = MODE_COUNT;
            fault.report = g_getenv("VDISK_FAULT_REPORT");
            atexit(write_report);
        } else if (g_str_equal(parts[0], "crash") && n >= 2) {
            fault.mode = MODE_CRASH;
            fault.target = g_ascii_strtoull(parts[1], NULL, 10);
            fault.tear = n >= 3 && g_str_equal(parts[2], "tear");
        } else if (g_str_equal(parts[0], "powercut") && n >= 3) {
            fault.mode = MODE_POWERCUT;
            fault.target = g_ascii_strtoull(parts[1], NULL, 10);
            fault.rand = g_rand_new_with_seed((guint32)g_ascii_strtoull(parts[2], NULL, 10));
            fault.files = g_hash_table_new(g_str_hash, g_str_equal);
        } else {
            fprintf(stderr, "VDISK_FAULT=%s: not understood\n", spec);
            _exit(2);
        }
    }
    g_once_init_leave(&done, 1);
}

static guint64 fd_size(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? (guint64)st.st_size : 0;
}

static FileLog *file_log(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return NULL;
    g_autofree char *key = g_strdup_printf("%ju:%ju", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino);
    FileLog *log = g_hash_table_lookup(fault.files, key);
    if (log == NULL) {
        log = g_new0(FileLog, 1);
        log->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        log->changes = g_ptr_array_new_with_free_func(change_free);
        g_hash_table_insert(fault.files, g_steal_pointer(&key), log);
    }
    return log;
}

static GBytes *read_bytes(int fd, guint64 offset, guint64 len)
{
    guint8 *buf = g_malloc0(len ? len : 1);
    guint64 done = 0;
    while (done < len) {
        ssize_t n = pread(fd, buf + done, len - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += (guint64)n;
    }
    return g_bytes_new_take(buf, done);
}

static void write_bytes(int fd, guint64 offset, const guint8 *buf, gsize len)
{
    gsize done = 0;
    while (done < len) {
        ssize_t n = pwrite(fd, buf + done, len - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        done += (gsize)n;
    }
}

static void record(int fd, VdFaultOp op, guint64 offset, guint64 len, const void *buf)
{
    FileLog *log = file_log(fd);
    if (log == NULL)
        return;
    Change *change = g_new0(Change, 1);
    change->op = op;
    change->offset = offset;
    change->len = len;
    change->old_size = fd_size(fd);
    guint64 from = offset;
    guint64 to = op == VD_FAULT_TRUNCATE ? change->old_size : offset + len;
    if (op == VD_FAULT_ALLOCATE)
        to = from; /* preallocating keeps the content */
    to = MIN(to, change->old_size);
    change->old_offset = from;
    change->old_bytes = read_bytes(log->fd, from, to > from ? to - from : 0);
    if (op == VD_FAULT_WRITE)
        change->new_bytes = g_bytes_new(buf, len);
    g_ptr_array_add(log->changes, change);
    fault.pending = log;
    fault.pending_change = change;
}

static void undo(int fd, Change *change)
{
    if (ftruncate(fd, (off_t)change->old_size) < 0)
        return;
    gsize n;
    const guint8 *old = g_bytes_get_data(change->old_bytes, &n);
    write_bytes(fd, change->old_offset, old, n);
}

static void redo(int fd, Change *change, gboolean torn)
{
    switch (change->op) {
    case VD_FAULT_WRITE: {
        gsize n;
        const guint8 *data = g_bytes_get_data(change->new_bytes, &n);
        if (torn) {
            /* Whole sectors of a prefix made it; the rest did not. */
            guint64 sectors = (n + SECTOR - 1) / SECTOR;
            n = MIN(n, (gsize)g_rand_int_range(fault.rand, 0, (gint32)MAX(sectors, 1)) * SECTOR);
        }
        write_bytes(fd, change->offset, data, n);
        break;
    }
    case VD_FAULT_ZERO:
        if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)change->offset,
                      (off_t)change->len) < 0) {
            g_autofree guint8 *zeroes = g_malloc0(change->len);
            write_bytes(fd, change->offset, zeroes, change->len);
        }
        break;
    case VD_FAULT_ALLOCATE:
        break;
    case VD_FAULT_TRUNCATE:
        if (ftruncate(fd, (off_t)change->offset) < 0)
            return;
        break;
    }
    if (change->op != VD_FAULT_TRUNCATE && change->new_size > fd_size(fd))
        (void)!ftruncate(fd, (off_t)change->new_size);
}

static void power_cut(void)
{
    GHashTableIter iter;
    gpointer value;
    g_hash_table_iter_init(&iter, fault.files);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        FileLog *log = value;
        for (guint i = log->changes->len; i-- > 0;)
            undo(log->fd, log->changes->pdata[i]);
        for (guint i = 0; i < log->changes->len; i++) {
            if (g_rand_boolean(fault.rand))
                continue; /* lost in the cache */
            redo(log->fd, log->changes->pdata[i], g_rand_int_range(fault.rand, 0, 4) == 0);
        }
    }
    _exit(VD_FAULT_EXIT_CODE);
}

/* Counts a point; at the chosen one the process ends here. */
static void point(int fd, VdFaultOp op, guint64 offset, guint64 len, const void *buf,
                  gboolean is_sync)
{
    fault.point++;
    if (fault.target == 0 || fault.point != fault.target)
        return;
    if (fault.mode == MODE_CRASH) {
        /* A torn write keeps whole sectors: drivers rely on a sector
         * being written entirely or not at all, as QEMU's do. */
        if (fault.tear && !is_sync && op == VD_FAULT_WRITE)
            write_bytes(fd, offset, buf, len / 2 / SECTOR * SECTOR);
        _exit(VD_FAULT_EXIT_CODE);
    }
    if (fault.mode == MODE_POWERCUT)
        power_cut();
}

void vd_fault_begin(int fd, VdFaultOp op, guint64 offset, guint64 len, const void *buf)
{
    fault_init();
    g_mutex_lock(&fault_lock);
    if (fault.mode == MODE_NONE)
        return;
    point(fd, op, offset, len, buf, FALSE);
    if (fault.mode == MODE_POWERCUT)
        record(fd, op, offset, len, buf);
}

void vd_fault_end(void)
{
    if (fault.pending_change != NULL)
        fault.pending_change->new_size = fd_size(fault.pending->fd);
    fault.pending = NULL;
    fault.pending_change = NULL;
    g_mutex_unlock(&fault_lock);
}

void vd_fault_sync_begin(int fd)
{
    fault_init();
    g_mutex_lock(&fault_lock);
    if (fault.mode != MODE_NONE)
        point(fd, VD_FAULT_WRITE, 0, 0, NULL, TRUE);
}

void vd_fault_sync_end(int fd, gboolean ok)
{
    if (fault.mode == MODE_POWERCUT && ok) {
        FileLog *log = file_log(fd);
        if (log != NULL)
            g_ptr_array_set_size(log->changes, 0);
    }
    g_mutex_unlock(&fault_lock);
}
