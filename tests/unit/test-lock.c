/* Image locks (formats/file-lock.c) inside one process: two opens of a file
 * see each other as two QEMU processes would, a caller's descriptor is
 * locked and released again, and create never cuts a file in use. The
 * interop suite (tests/interop/locking.sh) checks the same against QEMU. */
#include "vdisk.h"

#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *dir;
    char *path;
} Fixture;

static void fixture_set_up(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    fx->dir = g_dir_make_tmp("vdisk-lock-XXXXXX", &error);
    g_assert_no_error(error);
    fx->path = g_build_filename(fx->dir, "a.qcow2", NULL);
    g_assert_true(vd_image_create(fx->path, "qcow2", 1 << 20, NULL, &error));
    g_assert_no_error(error);
}

static void fixture_tear_down(Fixture *fx, gconstpointer data)
{
    g_autoptr(GDir) dir = g_dir_open(fx->dir, 0, NULL);
    for (const char *name; dir != NULL && (name = g_dir_read_name(dir)) != NULL;) {
        g_autofree char *p = g_build_filename(fx->dir, name, NULL);
        g_unlink(p);
    }
    g_rmdir(fx->dir);
    g_free(fx->path);
    g_free(fx->dir);
}

static VdImage *open_ok(const char *path, VdOpenFlags flags)
{
    g_autoptr(GError) error = NULL;
    VdImage *img = vd_image_open(path, "qcow2", flags, &error);
    g_assert_no_error(error);
    return img;
}

/* Opening path with flags fails with Busy and QEMU's words for lock. */
static void open_busy(const char *path, VdOpenFlags flags, const char *lock)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, "qcow2", flags, &error);
    g_assert_null(img);
    g_assert_error(error, VD_ERROR, VD_ERROR_BUSY);
    g_assert_nonnull(strstr(error->message, "in use by another process"));
    g_assert_nonnull(strstr(error->message, lock));
    g_assert_nonnull(strstr(error->message, "a.qcow2"));
}

static const char *const WRITE_LOCK = "Failed to get \"write\" lock";
static const char *const SHARED_WRITE_LOCK = "Failed to get shared \"write\" lock";

static void test_readers_share(Fixture *fx, gconstpointer data)
{
    g_autoptr(VdImage) a = open_ok(fx->path, 0);
    g_autoptr(VdImage) b = open_ok(fx->path, 0);
    open_busy(fx->path, VD_OPEN_READ_WRITE, WRITE_LOCK);
    g_clear_pointer(&a, vd_image_unref);
    open_busy(fx->path, VD_OPEN_READ_WRITE, WRITE_LOCK);
    g_clear_pointer(&b, vd_image_unref);
    g_autoptr(VdImage) w = open_ok(fx->path, VD_OPEN_READ_WRITE);
}

static void test_writer_excludes(Fixture *fx, gconstpointer data)
{
    g_autoptr(VdImage) w = open_ok(fx->path, VD_OPEN_READ_WRITE);
    open_busy(fx->path, VD_OPEN_READ_WRITE, WRITE_LOCK);
    open_busy(fx->path, 0, SHARED_WRITE_LOCK);
    /* force-share reads, and no-locking takes and checks nothing */
    g_autoptr(VdImage) shared = open_ok(fx->path, VD_OPEN_FORCE_SHARE);
    g_autoptr(VdImage) unlocked = open_ok(fx->path, VD_OPEN_READ_WRITE | VD_OPEN_NO_LOCKING);
    /* a create over it is refused before a byte is cut */
    guint8 before[512], after[512];
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_image_read(w, 0, before, sizeof before, &error));
    struct stat st0, st1;
    g_assert_cmpint(g_stat(fx->path, &st0), ==, 0);
    g_assert_false(vd_image_create(fx->path, "raw", 4096, NULL, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_BUSY);
    g_clear_error(&error);
    g_assert_cmpint(g_stat(fx->path, &st1), ==, 0);
    g_assert_cmpuint(st0.st_size, ==, st1.st_size);
    g_assert_true(vd_image_read(w, 0, after, sizeof after, &error));
    g_assert_cmpmem(before, sizeof before, after, sizeof after);
}

static void test_force_share_reads_only(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img =
        vd_image_open(fx->path, "qcow2", VD_OPEN_READ_WRITE | VD_OPEN_FORCE_SHARE, &error);
    g_assert_null(img);
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "force-share=on can only be used with read-only"));
    /* the same from open options */
    g_clear_error(&error);
    g_autoptr(VdOptions) opts = vd_options_new();
    vd_options_set(opts, "force-share", "on");
    img = vd_image_open_opts(fx->path, "qcow2", VD_OPEN_READ_WRITE, opts, NULL, &error);
    g_assert_null(img);
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
}

static void test_locking_off_option(Fixture *fx, gconstpointer data)
{
    g_autoptr(VdImage) w = open_ok(fx->path, VD_OPEN_READ_WRITE);
    g_autoptr(GError) error = NULL;
    g_autoptr(VdOptions) opts = vd_options_new();
    vd_options_set(opts, "file.locking", "off");
    g_autoptr(VdImage) img = vd_image_open_opts(fx->path, "qcow2", 0, opts, NULL, &error);
    g_assert_no_error(error);
    g_assert_nonnull(img);
    vd_options_set(opts, "file.locking", "sometimes");
    g_autoptr(VdImage) bad = vd_image_open_opts(fx->path, "qcow2", 0, opts, NULL, &error);
    g_assert_null(bad);
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
}

/* A caller's descriptor is locked through the image's dup of it, and the
 * lock goes with the image, though the caller keeps the descriptor open. */
static void test_descriptor_locked_and_released(Fixture *fx, gconstpointer data)
{
    int fd = open(fx->path, O_RDWR | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    g_autoptr(GError) error = NULL;
    VdImage *img = vd_image_open_fd(fd, fx->path, "qcow2", VD_OPEN_READ_WRITE, &error);
    g_assert_no_error(error);
    open_busy(fx->path, 0, SHARED_WRITE_LOCK);
    vd_image_unref(img);
    g_autoptr(VdImage) again = open_ok(fx->path, VD_OPEN_READ_WRITE);
    g_clear_pointer(&again, vd_image_unref);
    /* create into a descriptor: refused while the file is in use */
    g_autoptr(VdImage) w = open_ok(fx->path, VD_OPEN_READ_WRITE);
    g_assert_false(vd_image_create_fd(fd, fx->path, "raw", 4096, NULL, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_BUSY);
    struct stat st;
    g_assert_cmpint(fstat(fd, &st), ==, 0);
    g_assert_cmpint(st.st_size, >, 4096);
    close(fd);
}

/* A backing file is locked for reading: no writer while an overlay uses it,
 * except through the commit's own share. */
static void test_backing_locked(Fixture *fx, gconstpointer data)
{
    g_autofree char *top = g_build_filename(fx->dir, "top.qcow2", NULL);
    g_autoptr(VdOptions) opts = vd_options_new();
    vd_options_set(opts, "backing_file", "a.qcow2");
    vd_options_set(opts, "backing_fmt", "qcow2");
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_image_create(top, "qcow2", 0, opts, &error));
    g_assert_no_error(error);
    g_autoptr(VdImage) t = open_ok(top, VD_OPEN_READ_WRITE);
    open_busy(fx->path, VD_OPEN_READ_WRITE, WRITE_LOCK);
    g_clear_pointer(&t, vd_image_unref);
    t = open_ok(top, VD_OPEN_BACKING_SHARE_WRITE);
    g_autoptr(VdImage) base = open_ok(fx->path, VD_OPEN_READ_WRITE);
    /* and an overlay can be made on a base in use (force-share read) */
    g_autofree char *top2 = g_build_filename(fx->dir, "top2.qcow2", NULL);
    g_assert_true(vd_image_create(top2, "qcow2", 0, opts, &error));
    g_assert_no_error(error);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define ADD(name, fn) g_test_add(name, Fixture, NULL, fixture_set_up, fn, fixture_tear_down)
    ADD("/lock/readers-share", test_readers_share);
    ADD("/lock/writer-excludes", test_writer_excludes);
    ADD("/lock/force-share-reads-only", test_force_share_reads_only);
    ADD("/lock/locking-off-option", test_locking_off_option);
    ADD("/lock/descriptor", test_descriptor_locked_and_released);
    ADD("/lock/backing", test_backing_locked);
#undef ADD
    return g_test_run();
}
