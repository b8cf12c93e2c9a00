/* VdFile: host file I/O with full-length reads and writes, and errors that
 * name the file. Every format driver does its I/O through this. A VdFile
 * may also be an NBD export (nbd.c): the same calls, through libnbd. */
#include "vdisk-driver.h"

#include "blkdebug.h"
#include "fault.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

struct VdFile {
    int fd;     /* -1 for an NBD export or an RBD image */
    VdNbd *nbd; /* the export's connection, or NULL */
    VdRbd *rbd; /* the Ceph RBD image, or NULL */
    char *name;
    gboolean writable;
    /* A slice shows [base, base + limit) of the host file as a whole file
     * (a disk inside an OVA tar). Plain files have base 0, no limit. */
    guint64 base;
    guint64 limit;
    gboolean no_flush; /* cache=unsafe: syncs are skipped */
    /* Image lock bytes held on this open (file-lock.c); released at close,
     * since a caller's descriptor may keep the open alive after it. */
    guint lock_perm;
    guint lock_unshared;
    /* What the kernel refused for copies into this file (vd_file_copy_range),
     * so that it is asked once, not for every run. */
    gboolean no_clone;
    gboolean no_copy_range;
    guint64 clone_block; /* the file system's block size, once asked */
    /* vd_file_set_streaming: bytes written since writeback was last
     * started, 0 when off. */
    gboolean streaming;
    guint64 unkicked;
    guint64 stream_end; /* the end of the furthest write so far */
    guint64 kicked_end; /* stream_end when writeback was last started */
    /* vd_file_set_read_streaming found the file outside the page cache:
     * what is read is dropped from it after. */
    gboolean read_cold;
    guint64 dropped_to; /* read_cold: dropped from the page cache below this */
    VdBlkdebug *debug;  /* error injection (blkdebug.c), or NULL */
    /* A block device (an LV, a disk): its size is fixed, and ranges are
     * zeroed by the device (BLKZEROOUT), or discarded where the device
     * says that reads back zeroes. */
    gboolean block;
    gboolean discard_zeroes;
    guint sector; /* the device's logical block size */
};

/* A request blkdebug fails, where one is attached. */
#define DEBUG_CHECK(file, io, offset, len, error) \
    G_UNLIKELY((file)->debug != NULL &&           \
               !vd_blkdebug_check((file)->debug, io, offset, len, (file)->name, error))

void vd_file_set_debug(VdFile *file, VdBlkdebug *debug)
{
    vd_blkdebug_free(file->debug);
    file->debug = debug;
}

void vd_file_debug_event(VdFile *file, VdDebugEvent event)
{
    if (G_UNLIKELY(file != NULL && file->debug != NULL))
        vd_blkdebug_event(file->debug, event);
}

gboolean vd_file_has_debug(VdFile *file) { return file != NULL && file->debug != NULL; }

static void set_errno_error(GError **error, const char *name, int err, const char *what)
{
    VdError code = err == ENOSPC ? VD_ERROR_NO_SPACE : VD_ERROR_IO;
    if (err == ENOENT)
        code = VD_ERROR_NOT_FOUND;
    vd_set_file_error(error, name, code, "%s: %s", what, g_strerror(err));
}

static VdFile *wrap_fd(int fd, const char *name, gboolean writable)
{
    VdFile *file = g_new0(VdFile, 1);
    file->fd = fd;
    file->name = g_strdup(name);
    file->writable = writable;
    file->limit = G_MAXUINT64;
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISBLK(st.st_mode)) {
        unsigned int zeroes = 0;
        int sector = 0;
        file->block = TRUE;
        file->discard_zeroes = ioctl(fd, BLKDISCARDZEROES, &zeroes) == 0 && zeroes != 0;
        file->sector = ioctl(fd, BLKSSZGET, &sector) == 0 && sector >= 512 ? (guint)sector : 512;
    }
    return file;
}

VdFile *vd_file_wrap_nbd(VdNbd *nbd, const char *name, gboolean writable)
{
    VdFile *file = wrap_fd(-1, name, writable);
    file->nbd = nbd;
    return file;
}

VdNbd *vd_file_nbd(VdFile *file) { return file->nbd; }

VdFile *vd_file_wrap_rbd(VdRbd *rbd, const char *name, gboolean writable)
{
    VdFile *file = wrap_fd(-1, name, writable);
    file->rbd = rbd;
    return file;
}

VdRbd *vd_file_rbd(VdFile *file) { return file->rbd; }

/* What a file that is no regular file is, for messages. */
static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISSOCK(mode))
        return "a socket";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISLNK(mode))
        return "a symbolic link";
    return "a special file";
}

/* Wrap fd, opened with O_NONBLOCK so that a FIFO could not stall the open,
 * once it is known to be a regular file (or, with allow_block, a block
 * device); it then blocks again as files do. Otherwise fd is closed. */
static VdFile *wrap_checked(int fd, const char *name, gboolean read_write, gboolean allow_block,
                            GError **error)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int err = errno;
        close(fd);
        set_errno_error(error, name, err, "cannot stat");
        return NULL;
    }
    if (!S_ISREG(st.st_mode) && !(allow_block && S_ISBLK(st.st_mode))) {
        close(fd);
        vd_set_file_error(error, name, VD_ERROR_INVALID_ARGUMENT, "is %s, not a regular file",
                          file_kind(st.st_mode));
        return NULL;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
        int err = errno;
        close(fd);
        set_errno_error(error, name, err, "cannot set blocking mode");
        return NULL;
    }
    return wrap_fd(fd, name, read_write);
}

#define NAMED_OPEN_FLAGS (O_CLOEXEC | O_NONBLOCK | O_NOCTTY)

static VdFile *open_path(const char *path, gboolean read_write, gboolean allow_block,
                         GError **error)
{
    int fd = open(path, (read_write ? O_RDWR : O_RDONLY) | NAMED_OPEN_FLAGS);
    if (fd < 0) {
        int err = errno;
        vd_set_file_error(error, path, err == ENOENT ? VD_ERROR_NOT_FOUND : VD_ERROR_IO,
                          "cannot open: %s", g_strerror(err));
        return NULL;
    }
    return wrap_checked(fd, path, read_write, allow_block, error);
}

VdFile *vd_file_open(const char *path, gboolean read_write, GError **error)
{
    /* Names the user gives only: a name read from inside an image
     * (vd_file_open_regular) is a plain path, never a blkdebug name. */
    if (g_str_has_prefix(path, "blkdebug:"))
        return vd_blkdebug_open_file(path, read_write, error);
    return open_path(path, read_write, TRUE, error);
}

VdFile *vd_file_open_regular(const char *path, gboolean read_write, GError **error)
{
    return open_path(path, read_write, FALSE, error);
}

/* ----- opening beneath a folder ----- */

/* openat2 confined to dirfd; -1 with ENOSYS where the kernel lacks it. */
static int openat2_beneath(int dirfd, const char *rel, int flags)
{
#ifdef SYS_openat2
    struct open_how how = {
        .flags = (guint64)flags,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    /* EAGAIN: a rename somewhere on the way raced the lookup; look again. */
    for (int tries = 0; tries < 16; tries++) {
        int fd = (int)syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
        if (fd >= 0 || (errno != EAGAIN && errno != EINTR))
            return fd;
    }
    return -1;
#else
    errno = ENOSYS;
    return -1;
#endif
}

/* The same, one component at a time, for kernels without openat2: ".."
 * is taken by name (it may not climb above dirfd), and no component may
 * be a symbolic link. */
static int walk_beneath(int dirfd, const char *rel, int flags)
{
    g_auto(GStrv) parts = g_strsplit(rel, "/", -1);
    g_autoptr(GPtrArray) path = g_ptr_array_new();
    for (guint i = 0; parts[i] != NULL; i++) {
        if (*parts[i] == '\0' || g_str_equal(parts[i], "."))
            continue;
        if (!g_str_equal(parts[i], "..")) {
            g_ptr_array_add(path, parts[i]);
            continue;
        }
        if (path->len == 0) {
            errno = EXDEV;
            return -1;
        }
        g_ptr_array_set_size(path, (gint)path->len - 1);
    }
    if (path->len == 0) {
        /* The folder itself, which only a folder's open may ask for. */
        if (flags & O_DIRECTORY)
            return openat(dirfd, ".", flags);
        errno = EISDIR;
        return -1;
    }
    int cur = dirfd;
    for (guint i = 0; i + 1 < path->len; i++) {
        int next = openat(cur, path->pdata[i], O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int err = errno;
        struct stat st;
        if (next < 0 && err == ENOTDIR &&
            fstatat(cur, path->pdata[i], &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
            err = ELOOP;
        if (cur != dirfd)
            close(cur);
        if (next < 0) {
            errno = err;
            return -1;
        }
        cur = next;
    }
    int fd = openat(cur, path->pdata[path->len - 1], flags | O_NOFOLLOW);
    int err = errno;
    if (cur != dirfd)
        close(cur);
    errno = err;
    return fd;
}

int vd_openat_beneath(int dirfd, const char *rel, int flags, gboolean use_openat2)
{
    if (use_openat2) {
        /* EPERM: a container's system call filter that predates openat2
         * refuses it so; the walk is as safe, and says EPERM again if the
         * file itself was the reason. */
        int fd = openat2_beneath(dirfd, rel, flags);
        if (fd >= 0 || (errno != ENOSYS && errno != EPERM))
            return fd;
    }
    return walk_beneath(dirfd, rel, flags);
}

int vd_confinement_openat(const VdConfinement *c, const char *rel, int flags)
{
    if (c->open_beneath != NULL)
        return c->open_beneath(rel, flags, c->open_data);
    return vd_openat_beneath(c->dirfd, rel, flags, TRUE);
}

VdFile *vd_file_open_beneath(const VdConfinement *c, const char *rel, const char *name,
                             gboolean read_write, GError **error)
{
    int fd = vd_confinement_openat(c, rel, (read_write ? O_RDWR : O_RDONLY) | NAMED_OPEN_FLAGS);
    if (fd >= 0)
        return wrap_checked(fd, name, read_write, FALSE, error);
    int err = errno;
    switch (err) {
    case EXDEV:
        vd_set_file_error(error, name, VD_ERROR_INVALID_ARGUMENT, "lies outside %s", c->dir_path);
        break;
    case ELOOP:
        vd_set_file_error(error, name, VD_ERROR_INVALID_ARGUMENT,
                          "is or passes through a symbolic link, which is not followed in %s",
                          c->dir_path);
        break;
    case ENODEV: /* what open_beneath says of a file of another kind */
        vd_set_file_error(error, name, VD_ERROR_INVALID_ARGUMENT,
                          "is not a regular file (a device, FIFO or socket is never opened)");
        break;
    default:
        set_errno_error(error, name, err, "cannot open");
        break;
    }
    return NULL;
}

VdFile *vd_file_create(const char *path, GError **error)
{
    /* No O_TRUNC: a file someone is using (a running VM's disk) must be
     * locked and found free before it loses a byte, as qemu-img create
     * does. */
    gboolean created = FALSE;
    int fd = open(path, O_RDWR | NAMED_OPEN_FLAGS);
    if (fd < 0 && errno == ENOENT) {
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | NAMED_OPEN_FLAGS, 0644);
        created = fd >= 0;
        if (fd < 0 && errno == EEXIST) /* made by someone else meanwhile */
            fd = open(path, O_RDWR | NAMED_OPEN_FLAGS);
    }
    if (fd < 0) {
        set_errno_error(error, path, errno, "cannot create");
        return NULL;
    }
    /* A block device may be a target (qemu-img writes disks too). */
    g_autoptr(VdFile) file = wrap_checked(fd, path, TRUE, TRUE, error);
    if (file == NULL)
        return NULL;
    struct stat st;
    if (!vd_file_lock(file, VD_LOCK_CREATE, error) ||
        (fstat(fd, &st) == 0 && st.st_size != 0 && !vd_file_truncate(file, 0, error))) {
        if (created)
            unlink(path);
        return NULL;
    }
    return g_steal_pointer(&file);
}

VdFile *vd_file_create_beside(const char *path, gboolean *created, GError **error)
{
    /* O_NOFOLLOW: a symlink planted under the name is refused, never
     * written through. Nothing is cut here: the caller empties the files
     * once all of them are open, so a later one failing leaves the earlier
     * ones as they were. */
    *created = FALSE;
    const int flags = O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    int fd = open(path, flags);
    if (fd < 0 && errno == ENOENT) {
        fd = open(path, flags | O_CREAT | O_EXCL, 0644);
        *created = fd >= 0;
    }
    if (fd < 0) {
        int err = errno;
        if (err == ELOOP)
            vd_set_file_error(error, path, VD_ERROR_EXISTS,
                              "is a symbolic link, which is not followed: remove it or choose "
                              "another name");
        else
            set_errno_error(error, path, err, "cannot create");
        return NULL;
    }
    g_autoptr(VdFile) file = wrap_fd(fd, path, TRUE);
    struct stat st;
    gboolean regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    if (!regular)
        vd_set_file_error(error, path, VD_ERROR_INVALID_ARGUMENT, "is not a regular file");
    else
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK); /* only kept a FIFO from blocking */
    if (!regular || !vd_file_lock(file, VD_LOCK_CREATE, error)) {
        if (*created)
            unlink(path);
        *created = FALSE;
        return NULL;
    }
    return g_steal_pointer(&file);
}

VdFile *vd_file_open_fd(int fd, const char *name, GError **error)
{
    int flags = fcntl(fd, F_GETFL);
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (flags < 0 || copy < 0) {
        set_errno_error(error, name, errno, "bad file descriptor");
        return NULL;
    }
    return wrap_fd(copy, name, (flags & O_ACCMODE) == O_RDWR);
}

VdFile *vd_file_open_slice(VdFile *parent, guint64 offset, guint64 length, const char *name,
                           GError **error)
{
    guint64 size;
    if (parent->nbd != NULL || parent->rbd != NULL) {
        vd_set_file_error(error, parent->name, VD_ERROR_NOT_SUPPORTED,
                          "a member of an archive on an NBD export cannot be opened");
        return NULL;
    }
    if (!vd_file_size(parent, &size, error))
        return NULL;
    if (offset > size || length > size - offset) {
        vd_set_file_error(error, parent->name, VD_ERROR_CORRUPT,
                          "member %s lies past the end of the file", name);
        return NULL;
    }
    VdFile *slice = vd_file_open_fd(parent->fd, name, error);
    if (slice == NULL)
        return NULL;
    slice->writable = FALSE;
    slice->base = parent->base + offset;
    slice->limit = length;
    return slice;
}

void vd_file_close(VdFile *file)
{
    if (file == NULL)
        return;
    if (file->lock_perm != 0 || file->lock_unshared != 0)
        vd_unlock_fd(file->fd, file->lock_perm, file->lock_unshared);
    if (file->nbd != NULL)
        vd_nbd_close(file->nbd);
    else if (file->rbd != NULL)
        vd_rbd_close(file->rbd);
    else
        close(file->fd);
    vd_blkdebug_free(file->debug);
    g_free(file->name);
    g_free(file);
}

const char *vd_file_name(VdFile *file) { return file->name; }
int vd_file_fd(VdFile *file) { return file->fd; }
gboolean vd_file_is_writable(VdFile *file) { return file->writable; }
void vd_file_set_no_flush(VdFile *file, gboolean no_flush) { file->no_flush = no_flush; }

gboolean vd_file_lock(VdFile *file, VdLockMode mode, GError **error)
{
    /* A slice shares its archive's open, which holds the archive's lock;
     * an NBD export's server keeps its own. */
    if (file->limit != G_MAXUINT64 || file->nbd != NULL || file->rbd != NULL)
        return TRUE;
    return vd_lock_fd(file->fd, file->name, mode, &file->lock_perm, &file->lock_unshared, error);
}

gboolean vd_file_size(VdFile *file, guint64 *size, GError **error)
{
    if (file->nbd != NULL) {
        *size = vd_nbd_size(file->nbd);
        return TRUE;
    }
    if (file->rbd != NULL) {
        *size = vd_rbd_size(file->rbd);
        return TRUE;
    }
    if (file->limit != G_MAXUINT64) {
        *size = file->limit;
        return TRUE;
    }
    struct stat st;
    if (fstat(file->fd, &st) < 0) {
        set_errno_error(error, file->name, errno, "cannot stat");
        return FALSE;
    }
    if (S_ISBLK(st.st_mode)) {
        guint64 bytes = 0;
        if (ioctl(file->fd, BLKGETSIZE64, &bytes) < 0) {
            set_errno_error(error, file->name, errno, "cannot get device size");
            return FALSE;
        }
        *size = bytes;
        return TRUE;
    }
    *size = (guint64)st.st_size;
    return TRUE;
}

gint64 vd_file_allocated(VdFile *file)
{
    if (file->nbd != NULL || file->rbd != NULL)
        return -1; /* the server's disk is not ours to measure */
    if (file->limit != G_MAXUINT64)
        return (gint64)file->limit;
    struct stat st;
    if (fstat(file->fd, &st) < 0)
        return -1;
    return (gint64)st.st_blocks * 512;
}

/* Reads of a copy behind which the cache is dropped, and how far behind:
 * the page cache keeps large folios (up to 2 MiB) that a drop must cover
 * whole, and the other worker may still be reading a little behind. */
#define DROP_MIN_READ (256u << 10)
#define DROP_LAG (8u << 20)
#define DROP_ALIGN (2u << 20)

/* A cold source was read [offset, +len): drop that from the page cache,
 * and everything a copy has read behind it, so a source larger than
 * memory does not push everything else out. */
static void drop_read(VdFile *file, guint64 offset, guint64 len)
{
    (void)posix_fadvise(file->fd, (off_t)offset, (off_t)len, POSIX_FADV_DONTNEED);
    guint64 end = offset + len, from = file->dropped_to;
    if (len < DROP_MIN_READ || end < DROP_LAG + DROP_ALIGN)
        return; /* metadata, or the start */
    guint64 to = (end - DROP_LAG) / DROP_ALIGN * DROP_ALIGN;
    if (to <= from)
        return;
    file->dropped_to = to;
    (void)posix_fadvise(file->fd, (off_t)from, (off_t)(to - from), POSIX_FADV_DONTNEED);
}

/* pread until len bytes or EOF; *got says how many arrived. */
static gboolean pread_full(VdFile *file, guint64 offset, void *buf, gsize len, gsize *got,
                           GError **error)
{
    gsize done = 0;
    if (offset > G_MAXINT64 || len > G_MAXINT64 - offset) {
        vd_set_file_error(error, file->name, VD_ERROR_CORRUPT,
                          "read at offset %" G_GUINT64_FORMAT " is out of range", offset);
        return FALSE;
    }
    if (DEBUG_CHECK(file, VD_DEBUG_IO_READ, offset, len, error))
        return FALSE;
    if (file->nbd != NULL) {
        guint64 size = vd_nbd_size(file->nbd);
        *got = offset >= size ? 0 : (gsize)MIN(len, size - offset);
        return vd_nbd_pread(file->nbd, offset, buf, *got, error);
    }
    if (file->rbd != NULL) {
        guint64 size = vd_rbd_size(file->rbd);
        *got = offset >= size ? 0 : (gsize)MIN(len, size - offset);
        return vd_rbd_pread(file->rbd, offset, buf, *got, error);
    }
    if (file->limit != G_MAXUINT64)
        len = offset >= file->limit ? 0 : MIN(len, file->limit - offset);
    offset += file->base;
    while (done < len) {
        ssize_t n = pread(file->fd, (guint8 *)buf + done, len - done, (off_t)(offset + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            set_errno_error(error, file->name, errno, "read failed");
            return FALSE;
        }
        if (n == 0)
            break;
        done += (gsize)n;
    }
    if (file->read_cold && done > 0)
        drop_read(file, offset, done);
    *got = done;
    return TRUE;
}

/* Files smaller than this are left to the page cache. */
#define READ_STREAM_MIN (16u << 20)

/* Is the page at offset in the page cache? Asked without waiting for the
 * disk (RWF_NOWAIT); where that cannot be asked, say yes. */
static gboolean page_cached(VdFile *file, guint64 offset)
{
    guint8 page[4096];
    struct iovec iov = { .iov_base = page, .iov_len = sizeof page };
    ssize_t n = preadv2(file->fd, &iov, 1, (off_t)(offset & ~(guint64)4095), RWF_NOWAIT);
    return n > 0 || (n < 0 && errno != EAGAIN);
}

void vd_file_set_read_streaming(VdFile *file, gboolean streaming)
{
    guint64 size;
    file->read_cold = FALSE;
    file->dropped_to = 0;
    if (!streaming || file->nbd != NULL || file->base != 0 || file->limit != G_MAXUINT64 ||
        !vd_file_size(file, &size, NULL) || size < READ_STREAM_MIN)
        return;
    /* Pages across the file, away from the header a format's open has
     * just read: a file read before is cached there, a cold one is not. */
    file->read_cold = !page_cached(file, size / 4) && !page_cached(file, size / 2) &&
                      !page_cached(file, size / 4 * 3);
}

gboolean vd_file_pread(VdFile *file, guint64 offset, void *buf, gsize len, GError **error)
{
    gsize got = 0;
    if (!pread_full(file, offset, buf, len, &got, error))
        return FALSE;
    if (got < len) {
        vd_set_file_error(error, file->name, VD_ERROR_CORRUPT,
                          "unexpected end of file reading %" G_GSIZE_FORMAT
                          " bytes at offset %" G_GUINT64_FORMAT,
                          len, offset);
        return FALSE;
    }
    return TRUE;
}

gboolean vd_file_pread_zero_past_eof(VdFile *file, guint64 offset, void *buf, gsize len,
                                     GError **error)
{
    gsize got = 0;
    if (!pread_full(file, offset, buf, len, &got, error))
        return FALSE;
    memset((guint8 *)buf + got, 0, len - got);
    return TRUE;
}

/* Bytes written between two starts of writeback of a streamed file: the
 * disk gets to work while the copy goes on, instead of all at the final
 * sync, and the page cache holds about this much of the target. */
#define STREAM_KICK_BYTES (32u << 20)

void vd_file_set_streaming(VdFile *file, gboolean streaming)
{
    file->streaming = streaming;
    file->unkicked = file->stream_end = file->kicked_end = 0;
}

/* A streamed file was written [offset, +len): every STREAM_KICK_BYTES,
 * start writeback of what is dirty, then wait for what the previous kick
 * started (written by now, unless the disk is slower than the copy, when
 * the final sync would wait as long) and drop it from the page cache. A
 * copy writes front to back, so that is the range before the previous
 * kick's furthest write. No durability is claimed: vd_file_sync gives it. */
static void written(VdFile *file, guint64 offset, guint64 len)
{
    if (!file->streaming || file->no_flush || file->nbd != NULL)
        return;
    file->stream_end = MAX(file->stream_end, offset + len);
    file->unkicked += len;
    if (file->unkicked < STREAM_KICK_BYTES)
        return;
    file->unkicked = 0;
    (void)sync_file_range(file->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    if (file->kicked_end > 0) {
        (void)sync_file_range(file->fd, 0, (off64_t)file->kicked_end, SYNC_FILE_RANGE_WAIT_BEFORE);
        (void)posix_fadvise(file->fd, 0, (off_t)file->kicked_end, POSIX_FADV_DONTNEED);
    }
    file->kicked_end = file->stream_end;
}

gboolean vd_file_pwrite(VdFile *file, guint64 offset, const void *buf, gsize len, GError **error)
{
    gsize done = 0;
    if (!file->writable) {
        vd_set_file_error(error, file->name, VD_ERROR_INVALID_ARGUMENT, "is open read-only");
        return FALSE;
    }
    if (offset > G_MAXINT64 || len > G_MAXINT64 - offset) {
        vd_set_file_error(error, file->name, VD_ERROR_INVALID_ARGUMENT,
                          "write at offset %" G_GUINT64_FORMAT " is out of range", offset);
        return FALSE;
    }
    if (DEBUG_CHECK(file, VD_DEBUG_IO_WRITE, offset, len, error))
        return FALSE;
    if (file->nbd != NULL)
        return vd_nbd_pwrite(file->nbd, offset, buf, len, error);
    if (file->rbd != NULL)
        return vd_rbd_pwrite(file->rbd, offset, buf, len, error);
    vd_fault_begin(file->fd, VD_FAULT_WRITE, offset, len, buf);
    while (done < len) {
        ssize_t n =
            pwrite(file->fd, (const guint8 *)buf + done, len - done, (off_t)(offset + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int err = errno;
            vd_fault_end();
            set_errno_error(error, file->name, err, "write failed");
            return FALSE;
        }
        done += (gsize)n;
    }
    vd_fault_end();
    written(file, offset, len);
    return TRUE;
}

/* ----- block devices ----- */

/* Run a range ioctl (BLKZEROOUT, BLKDISCARD) over [offset, +len), whole
 * logical blocks only: *head and *tail say how much is left unaligned at
 * either end for the caller to write. -1 with errno on failure. */
static int block_range_ioctl(VdFile *file, unsigned long request, guint64 offset, guint64 len,
                             guint64 *head, guint64 *tail)
{
    guint64 sector = file->sector, end = offset + len;
    guint64 from = (offset + sector - 1) / sector * sector, to = end / sector * sector;
    if (from >= to) {
        *head = len;
        *tail = 0;
        return 0;
    }
    *head = from - offset;
    *tail = end - to;
    guint64 range[2] = { from, to - from };
    vd_fault_begin(file->fd, VD_FAULT_ZERO, from, to - from, NULL);
    int rc = ioctl(file->fd, request, range);
    int err = errno;
    vd_fault_end();
    errno = err;
    return rc;
}

/* Zeroes written by the caller's way, for what no ioctl covers. */
static gboolean write_zero_bytes(VdFile *file, guint64 offset, guint64 len, GError **error)
{
    static const gsize chunk = 1 << 20;
    if (len == 0)
        return TRUE;
    g_autofree guint8 *zeroes = g_malloc0((gsize)MIN(len, chunk));
    for (guint64 done = 0; done < len;) {
        gsize n = (gsize)MIN(len - done, chunk);
        if (!vd_file_pwrite(file, offset + done, zeroes, n, error))
            return FALSE;
        done += n;
    }
    return TRUE;
}

/* Past the end of a device nothing can be written: say so, naming it. */
static gboolean block_check_end(VdFile *file, guint64 offset, guint64 len, GError **error)
{
    guint64 size;
    if (!vd_file_size(file, &size, error))
        return FALSE;
    if (offset <= size && len <= size - offset)
        return TRUE;
    vd_set_file_error(error, file->name, VD_ERROR_NO_SPACE,
                      "is a block device of %" G_GUINT64_FORMAT
                      " bytes, which cannot grow to %" G_GUINT64_FORMAT,
                      size, offset + len);
    return FALSE;
}

/* A discard that must read back zeroes, as a hole in a file does: only
 * where the device promises that (BLKDISCARDZEROES); elsewhere refused as
 * not supported, and the caller writes zeroes. */
static gboolean block_discard(VdFile *file, guint64 offset, guint64 len, GError **error)
{
    guint64 head, tail;
    if (!file->discard_zeroes) {
        vd_set_file_error(error, file->name, VD_ERROR_NOT_SUPPORTED,
                          "the device does not read back zeroes after a discard");
        return FALSE;
    }
    if (!block_check_end(file, offset, len, error))
        return FALSE;
    if (block_range_ioctl(file, BLKDISCARD, offset, len, &head, &tail) < 0) {
        int err = errno;
        vd_set_file_error(error, file->name,
                          err == EOPNOTSUPP ? VD_ERROR_NOT_SUPPORTED : VD_ERROR_IO,
                          "cannot discard: %s", g_strerror(err));
        return FALSE;
    }
    return write_zero_bytes(file, offset, head, error) &&
           write_zero_bytes(file, offset + len - tail, tail, error);
}

/* Zero a range of a device: discarded where that reads back zeroes and
 * may_unmap allows it, else zeroed by the device (BLKZEROOUT, which uses
 * the device's write-zeroes command where it has one), else written. */
static gboolean block_write_zeroes(VdFile *file, guint64 offset, guint64 len, gboolean may_unmap,
                                   GError **error)
{
    guint64 head, tail;
    if (!block_check_end(file, offset, len, error))
        return FALSE;
    if (may_unmap && file->discard_zeroes && block_discard(file, offset, len, NULL))
        return TRUE;
    if (block_range_ioctl(file, BLKZEROOUT, offset, len, &head, &tail) < 0)
        return write_zero_bytes(file, offset, len, error);
    return write_zero_bytes(file, offset, head, error) &&
           write_zero_bytes(file, offset + len - tail, tail, error);
}

gboolean vd_file_is_block(VdFile *file) { return file->block; }

gboolean vd_file_punch_hole(VdFile *file, guint64 offset, guint64 len, GError **error)
{
    if (DEBUG_CHECK(file, VD_DEBUG_IO_DISCARD, offset, len, error))
        return FALSE;
    if (file->nbd != NULL) /* zeroes the server may free: what a hole is */
        return vd_nbd_zero(file->nbd, offset, len, TRUE, error);
    if (file->rbd != NULL)
        return vd_rbd_zero(file->rbd, offset, len, TRUE, error);
    if (file->block)
        return block_discard(file, offset, len, error);
    vd_fault_begin(file->fd, VD_FAULT_ZERO, offset, len, NULL);
    int rc =
        fallocate(file->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len);
    int err = errno;
    vd_fault_end();
    if (rc < 0) {
        vd_set_file_error(error, file->name,
                          err == EOPNOTSUPP ? VD_ERROR_NOT_SUPPORTED : VD_ERROR_IO,
                          "cannot punch a hole: %s", g_strerror(err));
        return FALSE;
    }
    return TRUE;
}

gboolean vd_file_write_zeroes(VdFile *file, guint64 offset, guint64 len, gboolean may_punch,
                              GError **error)
{
    guint64 size;
    if (DEBUG_CHECK(file, VD_DEBUG_IO_WRITE_ZEROES, offset, len, error))
        return FALSE;
    if (file->nbd != NULL)
        return vd_nbd_zero(file->nbd, offset, len, may_punch, error);
    if (file->rbd != NULL)
        return vd_rbd_zero(file->rbd, offset, len, may_punch, error);
    if (file->block)
        return block_write_zeroes(file, offset, len, may_punch, error);
    if (!vd_file_size(file, &size, error))
        return FALSE;
    /* Past the end of the file zeroes come free: only extend the size. */
    if (offset >= size)
        return vd_file_truncate(file, offset + len, error);
    if (may_punch) {
        guint64 end = offset + len;
        if (end > size && !vd_file_truncate(file, end, error))
            return FALSE;
        if (vd_file_punch_hole(file, offset, MIN(len, size - offset), NULL))
            return TRUE;
    }
    vd_fault_begin(file->fd, VD_FAULT_ZERO, offset, len, NULL);
    int rc = fallocate(file->fd, FALLOC_FL_ZERO_RANGE, (off_t)offset, (off_t)len);
    vd_fault_end();
    return rc == 0 || write_zero_bytes(file, offset, len, error);
}

gboolean vd_file_truncate(VdFile *file, guint64 size, GError **error)
{
    /* An export keeps its size: a format may end short of it (as on a
     * block device), never past it. */
    if (file->nbd != NULL) {
        if (size <= vd_nbd_size(file->nbd))
            return TRUE;
        vd_set_file_error(error, file->name, VD_ERROR_NO_SPACE,
                          "the NBD export is %" G_GUINT64_FORMAT
                          " bytes and cannot grow to %" G_GUINT64_FORMAT,
                          vd_nbd_size(file->nbd), size);
        return FALSE;
    }
    if (file->rbd != NULL) /* an RBD image grows and shrinks as a file does */
        return size == vd_rbd_size(file->rbd) || vd_rbd_resize(file->rbd, size, error);
    /* A device keeps its size too: what a format asks up to its end is
     * there already, and what lies past the new end stays as it was. */
    if (file->block)
        return block_check_end(file, 0, size, error);
    vd_fault_begin(file->fd, VD_FAULT_TRUNCATE, size, 0, NULL);
    int rc = size > G_MAXINT64 ? -1 : ftruncate(file->fd, (off_t)size);
    int err = size > G_MAXINT64 ? EFBIG : errno;
    vd_fault_end();
    if (rc < 0) {
        set_errno_error(error, file->name, err, "cannot change the file size");
        return FALSE;
    }
    return TRUE;
}

gboolean vd_file_allocate(VdFile *file, guint64 offset, guint64 len, GError **error)
{
    if (file->nbd != NULL) {
        vd_set_file_error(error, file->name, VD_ERROR_NOT_SUPPORTED,
                          "an NBD export cannot be preallocated");
        return FALSE;
    }
    if (file->rbd != NULL) /* grown where it ends short, then zeroes that take their room */
        return (offset + len <= vd_rbd_size(file->rbd) ||
                vd_rbd_resize(file->rbd, offset + len, error)) &&
               vd_rbd_zero(file->rbd, offset, len, FALSE, error);
    if (file->block) /* every block of a device is there */
        return block_check_end(file, offset, len, error);
    vd_fault_begin(file->fd, VD_FAULT_ALLOCATE, offset, len, NULL);
    int err = posix_fallocate(file->fd, (off_t)offset, (off_t)len);
    vd_fault_end();
    if (err != 0) {
        set_errno_error(error, file->name, err, "cannot preallocate");
        return FALSE;
    }
    return TRUE;
}

gboolean vd_file_sync(VdFile *file, GError **error)
{
    if (file->no_flush)
        return TRUE;
    if (DEBUG_CHECK(file, VD_DEBUG_IO_FLUSH, 0, 0, error))
        return FALSE;
    if (file->nbd != NULL)
        return vd_nbd_flush(file->nbd, error);
    if (file->rbd != NULL)
        return vd_rbd_flush(file->rbd, error);
    vd_fault_sync_begin(file->fd);
    int rc = fdatasync(file->fd);
    int err = errno;
    vd_fault_sync_end(file->fd, rc == 0);
    if (rc < 0 && err != EINVAL) {
        set_errno_error(error, file->name, err, "sync failed");
        return FALSE;
    }
    return TRUE;
}

gboolean vd_file_extent(VdFile *file, guint64 offset, guint64 max, gboolean *is_data, guint64 *run,
                        GError **error)
{
    if (DEBUG_CHECK(file, VD_DEBUG_IO_BLOCK_STATUS, offset, max, error))
        return FALSE;
    if (file->nbd != NULL) {
        VdExtent ext = { 0 };
        if (!vd_nbd_extent(file->nbd, offset, max, &ext, error))
            return FALSE;
        *is_data = ext.kind == VD_EXTENT_DATA;
        *run = ext.length;
        return TRUE;
    }
    if (file->rbd != NULL)
        return vd_rbd_extent(file->rbd, offset, max, is_data, run, error);
    if (file->base != 0 || file->limit != G_MAXUINT64) {
        *is_data = TRUE; /* a slice of an archive: holes do not line up */
        *run = max;
        return TRUE;
    }
    off_t data = lseek(file->fd, (off_t)offset, SEEK_DATA);
    if (data < 0) {
        if (errno == ENXIO) {
            /* No data from here on: a hole up to EOF (and beyond). */
            *is_data = FALSE;
            *run = max;
            return TRUE;
        }
        *is_data = TRUE; /* the file system cannot tell */
        *run = max;
        return TRUE;
    }
    if ((guint64)data > offset) {
        *is_data = FALSE;
        *run = MIN((guint64)data - offset, max);
        return TRUE;
    }
    off_t hole = lseek(file->fd, (off_t)offset, SEEK_HOLE);
    *is_data = TRUE;
    *run = hole < 0 || (guint64)hole <= offset ? max : MIN((guint64)hole - offset, max);
    return TRUE;
}

/* ----- copies inside the kernel ----- */

#ifndef VD_FAULT_INJECTION /* test copies copy through a buffer (see below) */

/* Errors that say "not this way here" (another file system, a file system
 * or kernel without it, ranges it will not take, a system call filter),
 * never that the data is at fault. */
static gboolean offload_refused(int err)
{
    return err == EXDEV || err == EOPNOTSUPP || err == ENOTTY || err == EINVAL || err == ENOSYS ||
           err == EPERM || err == EBADF || err == ETXTBSY;
}

/* Share the range's extents with src (FICLONERANGE): 1 done, 0 refused,
 * -1 with errno on failure. Offsets and length must be whole blocks of
 * dst's file system, or the length must reach src's end. */
static int clone_range(VdFile *src, guint64 src_offset, VdFile *dst, guint64 dst_offset,
                       guint64 len)
{
    if (dst->no_clone)
        return 0;
    if (dst->clone_block == 0) {
        struct stat st;
        if (fstat(dst->fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_blksize <= 0) {
            g_atomic_int_set(&dst->no_clone, TRUE);
            return 0;
        }
        dst->clone_block = (guint64)st.st_blksize;
    }
    guint64 block = dst->clone_block;
    if (src_offset % block != 0 || dst_offset % block != 0 || len % block != 0)
        return 0; /* this run only: the next one may be aligned */
    struct file_clone_range arg = {
        .src_fd = src->fd,
        .src_offset = src_offset,
        .src_length = len,
        .dest_offset = dst_offset,
    };
    if (ioctl(dst->fd, FICLONERANGE, &arg) == 0)
        return 1;
    if (offload_refused(errno)) {
        /* EINVAL may be this run's alignment on a file system with larger
         * blocks: only the other refusals are for good. */
        if (errno != EINVAL)
            g_atomic_int_set(&dst->no_clone, TRUE);
        return 0;
    }
    return -1;
}

/* copy_file_range as far as it goes: the bytes copied, or -1 with errno
 * (refused before any byte, or failed). */
static gint64 copy_range(VdFile *src, guint64 src_offset, VdFile *dst, guint64 dst_offset,
                         guint64 len)
{
    guint64 done = 0;
    while (done < len && !dst->no_copy_range) {
        loff_t in = (loff_t)(src_offset + done), out = (loff_t)(dst_offset + done);
        ssize_t n =
            copy_file_range(src->fd, &in, dst->fd, &out, (size_t)MIN(len - done, 1u << 30), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && offload_refused(errno) && done == 0) {
            dst->no_copy_range = TRUE;
            return 0;
        }
        if (n < 0)
            return -1;
        if (n == 0)
            break; /* src ends early: the rest is read as zeroes below */
        done += (guint64)n;
    }
    return (gint64)done;
}

#endif

/* The plain way: read into a buffer and write it. Bytes past src's end
 * read as zeroes, as vd_file_pread_zero_past_eof gives them. */
static gboolean bounce_copy(VdFile *src, guint64 src_offset, VdFile *dst, guint64 dst_offset,
                            guint64 len, GError **error)
{
    static const gsize chunk = 1 << 20;
    g_autofree guint8 *buf = g_malloc((gsize)MIN(len, chunk));
    for (guint64 done = 0; done < len;) {
        gsize n = (gsize)MIN(len - done, chunk);
        if (!vd_file_pread_zero_past_eof(src, src_offset + done, buf, n, error) ||
            !vd_file_pwrite(dst, dst_offset + done, buf, n, error))
            return FALSE;
        done += n;
    }
    return TRUE;
}

gboolean vd_file_copy_range(VdFile *src, guint64 src_offset, VdFile *dst, guint64 dst_offset,
                            guint64 len, const void *buf, GError **error)
{
    if (!dst->writable) {
        vd_set_file_error(error, dst->name, VD_ERROR_INVALID_ARGUMENT, "is open read-only");
        return FALSE;
    }
    if (dst_offset > G_MAXINT64 || len > G_MAXINT64 - dst_offset || src_offset > G_MAXINT64 ||
        len > G_MAXINT64 - src_offset) {
        vd_set_file_error(error, dst->name, VD_ERROR_INVALID_ARGUMENT,
                          "copy to offset %" G_GUINT64_FORMAT " is out of range", dst_offset);
        return FALSE;
    }
    if (len == 0)
        return TRUE;
    /* An NBD export or blkdebug on either side: the bytes go through
     * memory. */
    if (src->nbd != NULL || dst->nbd != NULL || src->rbd != NULL || dst->rbd != NULL ||
        src->debug != NULL || dst->debug != NULL)
        return buf != NULL ? vd_file_pwrite(dst, dst_offset, buf, len, error)
                           : bounce_copy(src, src_offset, dst, dst_offset, len, error);
#ifdef VD_FAULT_INJECTION
    /* The fault layer sees every byte written: test copies of the engine
     * copy through a buffer, in the same order. */
    if (buf != NULL)
        return vd_file_pwrite(dst, dst_offset, buf, len, error);
    return bounce_copy(src, src_offset, dst, dst_offset, len, error);
#else
    /* A slice (an archive member) is copied within its bounds only. */
    guint64 avail = src->limit == G_MAXUINT64  ? len
                    : src_offset >= src->limit ? 0
                                               : MIN(len, src->limit - src_offset);
    guint64 host = src->base + src_offset;
    guint64 done = 0;
    if (avail == len) {
        int rc = clone_range(src, host, dst, dst_offset, len);
        if (rc < 0) {
            set_errno_error(error, dst->name, errno, "cannot share extents");
            return FALSE;
        }
        if (rc > 0)
            return TRUE;
    }
    /* Bytes already in memory cost one copy into the page cache; the
     * kernel's copy would read them again first. */
    if (buf != NULL)
        return vd_file_pwrite(dst, dst_offset, buf, len, error);
    if (done < avail) {
        gint64 n = copy_range(src, host + done, dst, dst_offset + done, avail - done);
        if (n < 0) {
            set_errno_error(error, dst->name, errno, "copy failed");
            return FALSE;
        }
        written(dst, dst_offset + done, (guint64)n);
        done += (guint64)n;
    }
    return done == len ||
           bounce_copy(src, src_offset + done, dst, dst_offset + done, len - done, error);
#endif
}

gboolean vd_file_may_clone(VdFile *dst) { return !g_atomic_int_get(&dst->no_clone); }

gboolean vd_file_clone(VdFile *src, VdFile *dst, gboolean *cloned, GError **error)
{
    *cloned = FALSE;
    struct stat st;
    if (src->debug != NULL || dst->debug != NULL)
        return TRUE;
    if (src->nbd != NULL || dst->nbd != NULL || src->rbd != NULL || dst->rbd != NULL ||
        src->base != 0 || src->limit != G_MAXUINT64 || fstat(src->fd, &st) < 0 ||
        !S_ISREG(st.st_mode) || !dst->writable)
        return TRUE;
#ifdef VD_FAULT_INJECTION
    return TRUE; /* the fault layer sees writes only: test copies copy */
#else
    if (ioctl(dst->fd, FICLONE, src->fd) == 0) {
        *cloned = TRUE;
        return TRUE;
    }
    if (offload_refused(errno))
        return TRUE;
    set_errno_error(error, dst->name, errno, "cannot share the source's extents");
    return FALSE;
#endif
}
