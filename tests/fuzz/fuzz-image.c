/* A fuzz target for every format parser: the input is an image file. It is
 * opened with each driver (and by probing), described, checked, mapped and
 * read, then written and repaired; whatever the bytes say, the engine must
 * answer with an error or data, never crash, hang or allocate without
 * bound.
 *
 * Once more the way vdiskd opens a pool's volume: confined to a folder that
 * holds a file, a folder, a FIFO and a symlink to a file outside, so the
 * names an input carries (backing files, data files, extents, a VDI's
 * parent) are resolved by the confinement, and metadata is bounded.
 *
 * Built two ways: with -fsanitize=fuzzer as a libFuzzer target (meson
 * option `fuzzing`), and as a plain program that runs each file named on
 * its command line once, for the `fuzz` suite's regression corpus.
 */
#include "vdisk.h"

#include <fcntl.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bounds on the work one input may cause, so a header claiming an
 * exabyte disk is explored, not read whole. */
#define MAX_EXTENTS 4096
#define READ_WINDOW (256 * 1024)

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);

static void walk(VdImage *img)
{
    guint64 size = vd_image_size(img), offset = 0;
    g_autofree guint8 *buf = g_malloc(READ_WINDOW);
    for (int n = 0; n < MAX_EXTENTS && offset < size; n++) {
        VdBlockStatus st;
        if (!vd_image_block_status(img, offset, size - offset, TRUE, &st, NULL))
            break;
        /* Read the start of each extent: that is where parsers look up tables. */
        gsize len = (gsize)MIN(st.length, (guint64)READ_WINDOW);
        if (!vd_image_read(img, offset, buf, len, NULL))
            break;
        offset += st.length;
    }
    if (size >= READ_WINDOW)
        vd_image_read(img, size - READ_WINDOW, buf, READ_WINDOW, NULL);
}

static void exercise(int fd, const char *format)
{
    /* No backing files, no extents or data files by name: the input alone. */
    VdOpenFlags flags = VD_OPEN_NO_BACKING | VD_OPEN_NO_RELATED_FILES;
    g_autoptr(VdImage) img = vd_image_open_fd(fd, "fuzz-input", format, flags, NULL);
    if (img == NULL)
        return;
    g_autoptr(VdImageInfo) info = vd_image_get_info(img, NULL);
    g_autoptr(GPtrArray) snapshots = vd_image_list_snapshots(img, NULL);
    VdCheckResult res;
    vd_image_check(img, VD_CHECK_REPAIR_NONE, &res, NULL);
    vd_check_result_clear(&res);
    walk(img);
}

/* The folder confined opens look in, made once per process. It and its
 * subfolder sub/ (where the input sits) each hold files the seeds name
 * (base.raw, x-flat.vmdk), a FIFO (named as a seed's data file: it must be
 * refused at once, never waited on) and a symlink to a file outside. */
static char *pool_path;
static int pool_fd = -1;
static const char *const pool_entries[] = { "base.raw", "x-flat.vmdk", "fifo", "link" };

static void pool_remove(void)
{
    for (int level = 0; level < 2; level++) {
        g_autofree char *dir =
            level == 0 ? g_build_filename(pool_path, "sub", NULL) : g_strdup(pool_path);
        for (gsize i = 0; i < G_N_ELEMENTS(pool_entries); i++) {
            g_autofree char *p = g_build_filename(dir, pool_entries[i], NULL);
            g_remove(p);
        }
        g_rmdir(dir);
    }
}

/* A sparse file of size bytes (left out if it cannot be made). */
static void sparse_file(const char *dir, const char *name, off_t size)
{
    g_autofree char *p = g_build_filename(dir, name, NULL);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    if (ftruncate(fd, size) < 0)
        g_remove(p);
    close(fd);
}

static void pool_fill(const char *dir)
{
    sparse_file(dir, "base.raw", 1 << 20);
    sparse_file(dir, "x-flat.vmdk", 3 << 20);
    g_autofree char *fifo = g_build_filename(dir, "fifo", NULL);
    g_autofree char *link = g_build_filename(dir, "link", NULL);
    mkfifo(fifo, 0600);
    if (symlink("/etc/passwd", link) < 0) {
        /* the other entries still test something */
    }
}

static gboolean pool_ready(void)
{
    if (pool_fd >= 0)
        return TRUE;
    pool_path = g_dir_make_tmp("vdisk-fuzz-pool-XXXXXX", NULL);
    if (pool_path == NULL)
        return FALSE;
    atexit(pool_remove);
    g_autofree char *sub = g_build_filename(pool_path, "sub", NULL);
    g_mkdir(sub, 0700);
    pool_fill(pool_path);
    pool_fill(sub);
    pool_fd = open(pool_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return pool_fd >= 0;
}

static void exercise_confined(int fd)
{
    if (!pool_ready())
        return;
    VdConfinement confine = { .dirfd = pool_fd, .dir_path = pool_path, .max_metadata = 1 << 20 };
    g_autoptr(VdImage) img =
        vd_image_open_fd_confined(fd, "sub/in.img", NULL, 0, NULL, NULL, &confine, NULL);
    if (img == NULL)
        return;
    g_autoptr(VdImageInfo) info = vd_image_get_info(img, NULL);
    walk(img);
}

/* Last, as it changes the input: the write paths. A write at each end,
 * then a repairing check, and a second open for writing that must find
 * whatever the first left behind usable. */
static void exercise_writes(int fd)
{
    VdOpenFlags flags = VD_OPEN_NO_BACKING | VD_OPEN_NO_RELATED_FILES | VD_OPEN_READ_WRITE;
    for (int round = 0; round < 2; round++) {
        g_autoptr(VdImage) img = vd_image_open_fd(fd, "fuzz-input", NULL, flags, NULL);
        if (img == NULL)
            return;
        static const guint8 block[4096] = { 0x5a };
        guint64 size = vd_image_size(img);
        if (size >= sizeof block) {
            vd_image_write(img, 0, block, sizeof block, NULL);
            vd_image_write(img, (size - sizeof block) / 512 * 512, block, sizeof block, NULL);
        }
        if (round == 0) {
            VdCheckResult res;
            vd_image_check(img, VD_CHECK_REPAIR_LEAKS | VD_CHECK_REPAIR_ERRORS, &res, NULL);
            vd_check_result_clear(&res);
        }
    }
}

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
    int fd = memfd_create("fuzz-input", MFD_CLOEXEC);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) == (ssize_t)size) {
        exercise(fd, NULL);
        for (const char *const *f = vd_formats(); *f != NULL; f++)
            exercise(fd, *f);
        exercise_confined(fd);
        exercise_writes(fd);
    }
    close(fd);
    return 0;
}

#ifndef VDISK_LIBFUZZER
/* The regression runner: each argument is one input. */
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        g_autofree char *contents = NULL;
        gsize len = 0;
        g_autoptr(GError) error = NULL;
        if (!g_file_get_contents(argv[i], &contents, &len, &error)) {
            g_printerr("%s\n", error->message);
            return 1;
        }
        LLVMFuzzerTestOneInput((const guint8 *)contents, len);
    }
    g_print("%d inputs, no crash\n", argc - 1);
    return 0;
}
#endif
