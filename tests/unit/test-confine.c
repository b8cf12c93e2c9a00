/* Unit tests of confined opens (vd_image_open_fd_confined): every name an
 * image carries resolves beneath the pool's folder descriptor or is
 * refused, files that are not regular files never block an open, a
 * differencing VDI never searches a folder it has no right to, and the
 * metadata an open reads into memory stays within its bound. Images are
 * made by qemu-img where it can make them; without it those cases skip. */
#include "vdisk-driver.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test-util.h"

#define MIB (1024 * 1024)

/* A pool folder inside the fixture's folder, with its descriptor. */
typedef struct {
    Fixture fx;
    char *pool;
    int dirfd;
    VdConfinement confine;
} Pool;

static void pool_setup(Pool *p, gconstpointer data)
{
    fixture_setup(&p->fx, data);
    p->pool = g_build_filename(p->fx.dir, "pool", NULL);
    g_assert_cmpint(g_mkdir(p->pool, 0700), ==, 0);
    p->dirfd = open(p->pool, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    g_assert_cmpint(p->dirfd, >=, 0);
    p->confine = (VdConfinement){ .dirfd = p->dirfd, .dir_path = p->pool };
}

static void pool_teardown(Pool *p, gconstpointer data)
{
    close(p->dirfd);
    g_free(p->pool);
    fixture_teardown(&p->fx, data);
}

static char *in_pool(Pool *p, const char *name) { return g_build_filename(p->pool, name, NULL); }

static int run(const char *cmdline)
{
    g_autoptr(GError) error = NULL;
    g_auto(GStrv) argv = NULL;
    g_assert_true(g_shell_parse_argv(cmdline, NULL, &argv, &error));
    int status = -1;
    g_autofree char *out = NULL, *err = NULL;
    g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err,
                               &status, &error));
    if (!g_spawn_check_wait_status(status, NULL))
        g_test_message("%s:\n%s%s", cmdline, out, err);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void run_ok(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void run_ok(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *cmd = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_assert_cmpint(run(cmd), ==, 0);
}

/* Open name (relative to the pool) confined, read-only or read-write. */
static VdImage *open_confined(Pool *p, const char *name, VdOpenFlags flags, GError **error)
{
    g_autofree char *path = in_pool(p, name);
    int fd = open(path, ((flags & VD_OPEN_READ_WRITE) ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    VdImage *img = vd_image_open_fd_confined(fd, name, NULL, flags, NULL, NULL, &p->confine, error);
    close(fd);
    return img;
}

static void expect_refused(Pool *p, const char *name, VdOpenFlags flags, const char *words)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = open_confined(p, name, flags, &error);
    g_assert_null(img);
    g_assert_nonnull(error);
    g_test_message("%s", error->message);
    g_assert_nonnull(strstr(error->message, words));
}

static guint8 *file_bytes(const char *path, gsize *len)
{
    char *data = NULL;
    g_assert_true(g_file_get_contents(path, &data, len, NULL));
    return (guint8 *)data;
}

/* A qcow2 base with a pattern, in the pool (or anywhere: path). */
static void make_base(const char *path)
{
    run_ok("qemu-img create -q -f qcow2 '%s' 4M", path);
    run_ok("qemu-io -f qcow2 -c 'write -P 0x5a 64k 128k' '%s'", path);
}

static void make_overlay(Pool *p, const char *name, const char *backing)
{
    g_autofree char *path = in_pool(p, name);
    run_ok("qemu-img create -q -f qcow2 -u -b '%s' -F qcow2 '%s' 4M", backing, path);
}

/* ----- backing files ----- */

static void test_backing_outside(Pool *p, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *outside = g_build_filename(p->fx.dir, "outside.qcow2", NULL);
    make_base(outside);
    make_overlay(p, "up.qcow2", "../outside.qcow2");
    expect_refused(p, "up.qcow2", 0, "lies outside");
    make_overlay(p, "passwd.qcow2", "/etc/passwd");
    expect_refused(p, "passwd.qcow2", 0, "/etc/passwd lies outside");
    /* Through a folder of the pool and back out again. */
    g_autofree char *sub = in_pool(p, "sub");
    g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);
    make_overlay(p, "sub/deep.qcow2", "../../outside.qcow2");
    expect_refused(p, "sub/deep.qcow2", 0, "lies outside");
    /* By path (vdisk's own CLI) the same chain opens: only the confined
     * open is bounded. */
    g_autofree char *up = in_pool(p, "up.qcow2");
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(up, NULL, 0, &error);
    g_assert_no_error(error);
}

static void test_backing_symlink(Pool *p, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *base = in_pool(p, "base.qcow2");
    make_base(base);
    g_autofree char *link = in_pool(p, "link.qcow2");
    g_assert_cmpint(symlink("base.qcow2", link), ==, 0);
    make_overlay(p, "top.qcow2", "link.qcow2");
    expect_refused(p, "top.qcow2", 0, "symbolic link");
    /* A folder on the way that is a link is refused too. */
    g_autofree char *dirlink = in_pool(p, "dir");
    g_assert_cmpint(symlink(".", dirlink), ==, 0);
    make_overlay(p, "top2.qcow2", "dir/base.qcow2");
    expect_refused(p, "top2.qcow2", 0, "symbolic link");
}

static void check_base_data(VdImage *img)
{
    VdImage *backing = vd_image_backing(img);
    g_assert_nonnull(backing);
    g_autofree guint8 *buf = g_malloc(256 * 1024);
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_image_read(img, 0, buf, 256 * 1024, &error));
    g_assert_no_error(error);
    for (gsize i = 0; i < 256 * 1024; i++)
        g_assert_cmpuint(buf[i], ==, i >= 64 * 1024 && i < 192 * 1024 ? 0x5a : 0);
}

static void test_backing_inside(Pool *p, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *base = in_pool(p, "base.qcow2");
    make_base(base);
    /* Beside it, by an absolute name under dir_path, and from a folder
     * below with "..": all stay beneath the pool. */
    make_overlay(p, "rel.qcow2", "base.qcow2");
    make_overlay(p, "abs.qcow2", base);
    g_autofree char *sub = in_pool(p, "sub");
    g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);
    make_overlay(p, "sub/up.qcow2", "../base.qcow2");
    const char *names[] = { "rel.qcow2", "abs.qcow2", "sub/up.qcow2" };
    for (gsize i = 0; i < G_N_ELEMENTS(names); i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(VdImage) img = open_confined(p, names[i], VD_OPEN_READ_WRITE, &error);
        g_assert_no_error(error);
        check_base_data(img);
        g_assert_cmpstr(vd_image_filename(vd_image_backing(img)), ==, base);
    }
    /* The chain below is confined too: a base that names a file outside. */
    g_autofree char *outside = g_build_filename(p->fx.dir, "outside.qcow2", NULL);
    make_base(outside);
    make_overlay(p, "mid.qcow2", "../outside.qcow2");
    make_overlay(p, "top.qcow2", "mid.qcow2");
    expect_refused(p, "top.qcow2", 0, "lies outside");
}

/* ----- qcow2 external data files ----- */

static void test_data_file_outside(Pool *p, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *outside = g_build_filename(p->fx.dir, "host-file", NULL);
    g_autofree char *img_path = in_pool(p, "vm.qcow2");
    /* qemu-img takes a relative data file name relative to its working
     * directory: make the image from inside the pool. */
    run_ok("sh -c \"cd '%s' && qemu-img create -q -f qcow2 -o data_file=../host-file vm.qcow2 1M\"",
           p->pool);
    g_autofree guint8 *content = g_malloc(MIB);
    memset(content, 0x11, MIB);
    g_assert_true(g_file_set_contents(outside, (const char *)content, MIB, NULL));
    gsize before_len, after_len;
    g_autofree guint8 *before = file_bytes(outside, &before_len);
    expect_refused(p, "vm.qcow2", VD_OPEN_READ_WRITE, "lies outside");
    expect_refused(p, "vm.qcow2", 0, "lies outside");
    g_autofree guint8 *after = file_bytes(outside, &after_len);
    g_assert_cmpmem(before, before_len, after, after_len);

    /* An absolute name outside is refused the same way. */
    g_autofree char *abs_path = in_pool(p, "abs.qcow2");
    run_ok("qemu-img create -q -f qcow2 -o data_file='%s' '%s' 1M", outside, abs_path);
    expect_refused(p, "abs.qcow2", VD_OPEN_READ_WRITE, "lies outside");
}

static void test_data_file_inside(Pool *p, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *img_path = in_pool(p, "vm.qcow2");
    run_ok("sh -c \"cd '%s' && qemu-img create -q -f qcow2 -o data_file=vm.raw vm.qcow2 1M\"",
           p->pool);
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = open_confined(p, "vm.qcow2", VD_OPEN_READ_WRITE, &error);
    g_assert_no_error(error);
    guint8 buf[4096];
    memset(buf, 0x77, sizeof buf);
    g_assert_true(vd_image_write(img, 8192, buf, sizeof buf, &error));
    g_assert_true(vd_image_flush(img, &error));
    g_clear_pointer(&img, vd_image_unref);
    g_autofree char *raw = in_pool(p, "vm.raw");
    gsize len;
    g_autofree guint8 *bytes = file_bytes(raw, &len);
    g_assert_cmpuint(len, >=, 8192 + sizeof buf);
    g_assert_cmpmem(bytes + 8192, sizeof buf, buf, sizeof buf);
}

/* A symlink in place of the data file is not followed: the file it points
 * at (a host file root could write) keeps its bytes. */
static void test_data_file_symlink(Pool *p, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *img_path = in_pool(p, "vm.qcow2");
    run_ok("sh -c \"cd '%s' && qemu-img create -q -f qcow2 -o data_file=vm.raw vm.qcow2 1M\"",
           p->pool);
    g_autofree char *raw = in_pool(p, "vm.raw");
    g_autofree char *victim = g_build_filename(p->fx.dir, "victim", NULL);
    g_assert_true(g_file_set_contents(victim, "precious", -1, NULL));
    g_assert_cmpint(g_unlink(raw), ==, 0);
    g_assert_cmpint(symlink(victim, raw), ==, 0);
    expect_refused(p, "vm.qcow2", VD_OPEN_READ_WRITE, "symbolic link");
    g_autofree char *text = NULL;
    g_assert_true(g_file_get_contents(victim, &text, NULL, NULL));
    g_assert_cmpstr(text, ==, "precious");
}

/* ----- files that are not regular files ----- */

static void on_alarm(int sig)
{
    (void)sig;
    const char msg[] = "the open blocked on a FIFO\n";
    ssize_t n = write(2, msg, sizeof msg - 1);
    (void)n;
    _exit(99);
}

/* The data file (or extent) name is a FIFO nobody writes: the open fails
 * at once, saying what it is, by path and confined alike. */
static void expect_fifo_refused(Pool *p, const char *name)
{
    signal(SIGALRM, on_alarm);
    alarm(10);
    expect_refused(p, name, 0, "is a FIFO, not a regular file");
    expect_refused(p, name, VD_OPEN_READ_WRITE, "is a FIFO, not a regular file");
    g_autofree char *path = in_pool(p, name);
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, NULL, 0, &error);
    g_assert_null(img);
    g_assert_nonnull(strstr(error->message, "is a FIFO, not a regular file"));
    alarm(0);
}

static void test_fifo_data_file(Pool *p, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *img_path = in_pool(p, "vm.qcow2");
    run_ok("sh -c \"cd '%s' && qemu-img create -q -f qcow2 -o data_file=vm.raw vm.qcow2 1M\"",
           p->pool);
    g_autofree char *raw = in_pool(p, "vm.raw");
    g_assert_cmpint(g_unlink(raw), ==, 0);
    g_assert_cmpint(mkfifo(raw, 0600), ==, 0);
    expect_fifo_refused(p, "vm.qcow2");
}

static void write_text(const char *path, const char *text)
{
    g_assert_true(g_file_set_contents(path, text, -1, NULL));
}

static const char flat_descriptor[] = "# Disk DescriptorFile\n"
                                      "version=1\n"
                                      "CID=12345678\n"
                                      "parentCID=ffffffff\n"
                                      "createType=\"monolithicFlat\"\n"
                                      "RW 2048 FLAT \"%s\" 0\n"
                                      "ddb.virtualHWVersion = \"4\"\n";

static void make_flat_vmdk(Pool *p, const char *name, const char *extent)
{
    g_autofree char *path = in_pool(p, name);
    g_autofree char *text = g_strdup_printf(flat_descriptor, extent);
    write_text(path, text);
}

static void test_fifo_extent(Pool *p, gconstpointer data)
{
    make_flat_vmdk(p, "vm.vmdk", "vm-flat.vmdk");
    g_autofree char *flat = in_pool(p, "vm-flat.vmdk");
    g_assert_cmpint(mkfifo(flat, 0600), ==, 0);
    expect_fifo_refused(p, "vm.vmdk");
}

static void test_extent_confined(Pool *p, gconstpointer data)
{
    g_autofree char *outside = g_build_filename(p->fx.dir, "x.raw", NULL);
    g_autofree char *zeroes = g_malloc0(MIB);
    g_assert_true(g_file_set_contents(outside, zeroes, MIB, NULL));
    make_flat_vmdk(p, "up.vmdk", "../x.raw");
    expect_refused(p, "up.vmdk", 0, "leaves the descriptor's folder");
    /* A link beside the descriptor that leads outside. */
    g_autofree char *link = in_pool(p, "vm-flat.vmdk");
    g_assert_cmpint(symlink(outside, link), ==, 0);
    make_flat_vmdk(p, "vm.vmdk", "vm-flat.vmdk");
    expect_refused(p, "vm.vmdk", VD_OPEN_READ_WRITE, "symbolic link");
    /* The real thing beside it opens, and reads what the extent holds. */
    g_autofree char *flat = in_pool(p, "ok-flat.vmdk");
    g_autofree guint8 *pattern = g_malloc(MIB);
    memset(pattern, 0xc3, MIB);
    g_assert_true(g_file_set_contents(flat, (const char *)pattern, MIB, NULL));
    make_flat_vmdk(p, "ok.vmdk", "ok-flat.vmdk");
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = open_confined(p, "ok.vmdk", 0, &error);
    g_assert_no_error(error);
    g_autofree guint8 *buf = g_malloc(MIB);
    g_assert_true(vd_image_read(img, 0, buf, MIB, &error));
    g_assert_cmpmem(buf, MIB, pattern, MIB);
}

/* ----- differencing VDIs ----- */

static void create_vdi(const char *path, const char *opts_text)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdOptions) opts = vd_options_new();
    if (opts_text != NULL)
        g_assert_true(vd_options_parse(opts, opts_text, &error));
    g_assert_true(vd_image_create(path, "vdi", opts_text != NULL ? 0 : 4 * MIB, opts, &error));
    g_assert_no_error(error);
}

/* A parent and its child made side by side in folder; the child is then
 * moved into the pool under child_name. */
static void make_vdi_pair(Pool *p, const char *folder, const char *child_name)
{
    g_autofree char *parent = g_build_filename(folder, "parent.vdi", NULL);
    g_autofree char *child = g_build_filename(folder, "child.vdi", NULL);
    create_vdi(parent, NULL);
    create_vdi(child, "backing_file=parent.vdi");
    g_autofree char *moved = in_pool(p, child_name);
    if (!g_str_equal(child, moved))
        g_assert_cmpint(g_rename(child, moved), ==, 0);
}

static void test_vdi_parent_outside(Pool *p, gconstpointer data)
{
    make_vdi_pair(p, p->fx.dir, "child.vdi");
    g_autofree char *outside = g_build_filename(p->fx.dir, "parent.vdi", NULL);
    /* The parent is not searched for outside the pool... */
    expect_refused(p, "child.vdi", 0, "is not among the .vdi files");
    /* ... nor reached through a link in the pool. */
    g_autofree char *link = in_pool(p, "parent.vdi");
    g_assert_cmpint(symlink(outside, link), ==, 0);
    expect_refused(p, "child.vdi", 0, "is not among the .vdi files");
    g_assert_cmpint(g_unlink(link), ==, 0);
    /* Named explicitly, it is refused as outside. */
    g_autoptr(GError) error = NULL;
    g_autoptr(VdOptions) open_opts = vd_options_new();
    vd_options_set(open_opts, "backing", outside);
    g_autofree char *child = in_pool(p, "child.vdi");
    int fd = open(child, O_RDONLY | O_CLOEXEC);
    g_autoptr(VdImage) img =
        vd_image_open_fd_confined(fd, "child.vdi", NULL, 0, open_opts, NULL, &p->confine, &error);
    close(fd);
    g_assert_null(img);
    g_assert_nonnull(strstr(error->message, "lies outside"));
    /* Copied into the pool, it is found. */
    g_autofree char *inside = in_pool(p, "parent.vdi");
    gsize len;
    g_autofree guint8 *bytes = file_bytes(outside, &len);
    g_assert_true(g_file_set_contents(inside, (const char *)bytes, (gssize)len, NULL));
    g_clear_error(&error);
    g_autoptr(VdImage) found = open_confined(p, "child.vdi", 0, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(vd_image_filename(vd_image_backing(found)), ==, inside);
}

/* A differencing VDI from a descriptor without a folder never searches
 * the process's working directory, even when its parent sits there. */
static void test_vdi_no_folder(Pool *p, gconstpointer data)
{
    make_vdi_pair(p, p->pool, "child.vdi");
    g_autofree char *child = in_pool(p, "child.vdi");
    g_autofree char *cwd = g_get_current_dir();
    g_assert_cmpint(chdir(p->pool), ==, 0);
    int fd = open(child, O_RDONLY | O_CLOEXEC);
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) bare = vd_image_open_fd(fd, "child.vdi", NULL, 0, &error);
    g_assert_null(bare);
    g_assert_nonnull(strstr(error->message, "not searched for"));
    g_clear_error(&error);
    g_autoptr(VdImage) inspect = vd_image_open_fd(
        fd, "caller's file", NULL, VD_OPEN_NO_BACKING | VD_OPEN_NO_RELATED_FILES, &error);
    g_assert_no_error(error);
    g_autoptr(VdImageInfo) info = vd_image_get_info(inspect, &error);
    g_assert_null(info->backing_filename);
    close(fd);
    g_assert_cmpint(chdir(cwd), ==, 0);
    /* Named with its folder, the path open still finds it. */
    g_autoptr(VdImage) by_path = vd_image_open(child, NULL, 0, &error);
    g_assert_no_error(error);
    g_assert_nonnull(vd_image_backing(by_path));
}

/* ----- metadata bounds ----- */

static void expect_bounded(Pool *p, const char *name, guint64 limit, const char *table)
{
    p->confine.max_metadata = limit;
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = open_confined(p, name, 0, &error);
    g_assert_null(img);
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
    g_test_message("%s", error->message);
    g_assert_nonnull(strstr(error->message, table));
    g_autofree char *words = g_strdup_printf("over the limit of %" G_GUINT64_FORMAT, limit);
    g_assert_nonnull(strstr(error->message, words));
    /* Within a generous bound (and with none) the same image opens. */
    g_clear_error(&error);
    p->confine.max_metadata = 64 * MIB;
    g_autoptr(VdImage) ok = open_confined(p, name, 0, &error);
    g_assert_no_error(error);
    p->confine.max_metadata = 0;
    g_autoptr(VdImage) unbounded = open_confined(p, name, 0, &error);
    g_assert_no_error(error);
}

static void test_metadata_bound(Pool *p, gconstpointer data)
{
    if (!have_qemu())
        return;
    /* 1 TiB with 64 KiB clusters: an L1 table of 16 KiB. */
    g_autofree char *qcow2 = in_pool(p, "big.qcow2");
    run_ok("qemu-img create -q -f qcow2 '%s' 1T", qcow2);
    expect_bounded(p, "big.qcow2", 8192, "L1 table");
    /* 64 GiB in 1 MiB blocks: a block map of 256 KiB. */
    g_autofree char *vdi = in_pool(p, "big.vdi");
    run_ok("qemu-img create -q -f vdi '%s' 64G", vdi);
    expect_bounded(p, "big.vdi", 65536, "block map");
    /* 1 TiB sparse vmdk: a grain directory of 32 KiB (twice, with its copy). */
    g_autofree char *vmdk = in_pool(p, "big.vmdk");
    run_ok("qemu-img create -q -f vmdk '%s' 1T", vmdk);
    expect_bounded(p, "big.vmdk", 16384, "grain directory");
    /* The bound covers the whole chain of one open: each qcow2 here holds
     * a refcount table of 64 KiB (read, then kept: 128 KiB), which fits
     * once in 200000 bytes but not twice. */
    g_autofree char *small = in_pool(p, "small.qcow2");
    g_autofree char *alone = in_pool(p, "alone.qcow2");
    run_ok("qemu-img create -q -f qcow2 '%s' 1M", alone);
    p->confine.max_metadata = 200000;
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = open_confined(p, "alone.qcow2", 0, &error);
    g_assert_no_error(error);
    run_ok("qemu-img create -q -f qcow2 -b big.qcow2 -F qcow2 '%s' 1M", small);
    expect_bounded(p, "small.qcow2", 200000, "refcount table");
}

/* A table the header puts past the end of the file is damage, found
 * before any memory is set aside for it: a VDI whose map runs past the end
 * opens read-only with only the entries the file holds, and is refused
 * for writing. */
static void test_table_past_eof(Pool *p, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *vdi = in_pool(p, "short.vdi");
    run_ok("qemu-img create -q -f vdi '%s' 1G", vdi);
    /* Claim 2^28 blocks (a 1 GiB map) in a file of a few KiB. */
    int fd = open(vdi, O_RDWR | O_CLOEXEC);
    guint8 blocks[4] = { 0, 0, 0, 0x10 };
    g_assert_cmpint(pwrite(fd, blocks, 4, 0x180), ==, 4);
    guint8 size[8] = { 0, 0, 0, 0, 0, 0x10, 0, 0 }; /* 2^44 bytes: 2^28 MiB blocks */
    g_assert_cmpint(pwrite(fd, size, 8, 0x170), ==, 8);
    close(fd);
    g_autoptr(GError) error = NULL;
    {
        g_autoptr(VdImage) reader = open_confined(p, "short.vdi", 0, &error);
        g_assert_no_error(error);
    }
    g_autoptr(VdImage) img = open_confined(p, "short.vdi", VD_OPEN_READ_WRITE, &error);
    g_assert_null(img);
    g_assert_error(error, VD_ERROR, VD_ERROR_CORRUPT);
    g_test_message("%s", error->message);
    g_assert_nonnull(strstr(error->message, "extends past the end of the file"));
}

/* The same for every table a format must hold in the file: moved 1 GiB
 * into a file of a few KiB, the open refuses the image as damaged (qemu-img
 * reads such tables as zeroes; vdisk never sets memory aside for a table
 * that is not there). */
static void test_tables_past_eof(Pool *p, gconstpointer data)
{
    if (!have_qemu())
        return;
    static const struct {
        const char *name, *format;
        goffset offset;
        int width; /* 8: big-endian, -8: little-endian, -4: little-endian 32 bits */
        guint64 value;
        const char *words;
    } cases[] = {
        { "l1.qcow2", "qcow2", 40, 8, 1ull << 30, "L1 table" },
        { "rt.qcow2", "qcow2", 48, 8, 1ull << 30, "refcount table" },
        { "l1.qcow", "qcow", 40, 8, 1ull << 30, "L1 table" },
        { "gd.vmdk", "vmdk", 56, -8, 1ull << 21, "grain directory" },
        { "bmap.vdi", "vdi", 0x154, -4, 1u << 30, "block map" },
    };
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *path = in_pool(p, cases[i].name);
        run_ok("qemu-img create -q -f %s '%s' 4M", cases[i].format, path);
        guint8 field[8];
        int n = ABS(cases[i].width);
        for (int b = 0; b < n; b++)
            field[b] = (guint8)(cases[i].value >> (cases[i].width > 0 ? 8 * (n - 1 - b) : 8 * b));
        int fd = open(path, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(pwrite(fd, field, n, cases[i].offset), ==, n);
        close(fd);
        g_autoptr(GError) error = NULL;
        /* A qcow2 or VDI cut short opens read-only, as qemu-img opens it
         * (info and check describe it; a guest read of what is missing
         * fails); what would write into it must still refuse it. */
        gboolean opens_read_only =
            g_str_equal(cases[i].format, "qcow2") || g_str_equal(cases[i].format, "vdi");
        if (opens_read_only) {
            g_autoptr(VdImage) reader = open_confined(p, cases[i].name, 0, NULL);
            g_assert_nonnull(reader);
        }
        g_autoptr(VdImage) img =
            open_confined(p, cases[i].name, opens_read_only ? VD_OPEN_READ_WRITE : 0, &error);
        g_assert_null(img);
        g_assert_error(error, VD_ERROR, VD_ERROR_CORRUPT);
        g_test_message("%s", error->message);
        g_assert_nonnull(strstr(error->message, cases[i].words));
        g_assert_true(strstr(error->message, "past the end of the file") != NULL ||
                      strstr(error->message, "outside the file") != NULL);
    }
}

/* The caller's own name for the image is folded and must stay beneath
 * the pool too: it is where relative names inside the image start. */
static void test_top_name(Pool *p, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *base = in_pool(p, "base.qcow2");
    make_base(base);
    make_overlay(p, "vm.qcow2", "base.qcow2");
    g_autofree char *sub = in_pool(p, "sub");
    g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);
    g_autofree char *path = in_pool(p, "vm.qcow2");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    const char *outside[] = { "../vm.qcow2", "sub/../../vm.qcow2", "/etc/vm.qcow2", "." };
    for (gsize i = 0; i < G_N_ELEMENTS(outside); i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(VdImage) img =
            vd_image_open_fd_confined(fd, outside[i], NULL, 0, NULL, NULL, &p->confine, &error);
        g_assert_null(img);
        g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
        g_assert_nonnull(strstr(error->message, "lies outside"));
    }
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img =
        vd_image_open_fd_confined(fd, "sub/../vm.qcow2", NULL, 0, NULL, NULL, &p->confine, &error);
    close(fd);
    g_assert_no_error(error);
    g_assert_cmpstr(vd_image_filename(img), ==, path);
    check_base_data(img);
}

/* ----- creating an overlay in the pool ----- */

/* Create name (in the pool) as a qcow2 over backing, confined; the
 * descriptor is the caller's new file. */
static gboolean create_confined(Pool *p, const char *name, const char *format, const char *backing,
                                const char *backing_fmt, GError **error)
{
    g_autofree char *path = in_pool(p, name);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    g_assert_cmpint(fd, >=, 0);
    g_autoptr(VdOptions) opts = vd_options_new();
    vd_options_set(opts, "backing_file", backing);
    if (backing_fmt != NULL)
        vd_options_set(opts, "backing_fmt", backing_fmt);
    gboolean ok = vd_image_create_fd_confined(fd, name, format, 0, opts, NULL, &p->confine, error);
    close(fd);
    return ok;
}

static void expect_create_refused(Pool *p, const char *name, const char *backing, const char *words)
{
    g_autoptr(GError) error = NULL;
    g_assert_false(create_confined(p, name, "qcow2", backing, NULL, &error));
    g_assert_nonnull(error);
    g_test_message("%s", error->message);
    g_assert_nonnull(strstr(error->message, words));
    /* Nothing was written into the descriptor. */
    g_autofree char *path = in_pool(p, name);
    struct stat st;
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 0);
}

/* The backing file a new overlay names (and what that names in turn) is
 * opened beneath the pool, as opening the overlay will: vdiskd's
 * CreateOverlay never reads a file outside the pool or through a link. */
static void test_create_overlay(Pool *p, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *outside = g_build_filename(p->fx.dir, "outside.qcow2", NULL);
    make_base(outside);
    expect_create_refused(p, "a.qcow2", "../outside.qcow2", "lies outside");
    expect_create_refused(p, "b.qcow2", outside, "lies outside");
    expect_create_refused(p, "c.qcow2", "/etc/passwd", "lies outside");
    g_autofree char *link = in_pool(p, "link.qcow2");
    g_assert_cmpint(symlink(outside, link), ==, 0);
    expect_create_refused(p, "d.qcow2", "link.qcow2", "symbolic link");
    g_autofree char *fifo = in_pool(p, "fifo.qcow2");
    g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
    expect_create_refused(p, "e.qcow2", "fifo.qcow2", "is a FIFO");
    /* A base in the pool that itself names a file outside. */
    make_overlay(p, "mid.qcow2", "../outside.qcow2");
    expect_create_refused(p, "f.qcow2", "mid.qcow2", "lies outside");

    /* Beside it, and by an absolute name under dir_path: made, sized from
     * the base, and reading what the base holds. */
    g_autofree char *base = in_pool(p, "base.qcow2");
    make_base(base);
    g_autofree char *sub = in_pool(p, "sub");
    g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);
    const char *names[] = { "rel.qcow2", "abs.qcow2", "sub/up.qcow2" };
    const char *backings[] = { "base.qcow2", base, "../base.qcow2" };
    for (gsize i = 0; i < G_N_ELEMENTS(names); i++) {
        g_autoptr(GError) error = NULL;
        g_assert_true(create_confined(p, names[i], "qcow2", backings[i], NULL, &error));
        g_assert_no_error(error);
        g_autoptr(VdImage) img = open_confined(p, names[i], 0, &error);
        g_assert_no_error(error);
        g_assert_cmpuint(vd_image_size(img), ==, 4 * MIB);
        check_base_data(img);
        g_autofree char *path = in_pool(p, names[i]);
        run_ok("qemu-img check -q '%s'", path);
    }
}

/* The other creators that read a backing file: a differencing VDI reads
 * its parent's identity, a vmdk delta its parent's CID; confined, both
 * stay beneath the pool. A descriptor never gets a vmdk whose extents
 * would be made by path next to it. */
static void test_create_other_formats(Pool *p, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *outside = g_build_filename(p->fx.dir, "outside.vdi", NULL);
    run_ok("qemu-img create -q -f vdi '%s' 4M", outside);
    g_autofree char *parent = in_pool(p, "parent.vdi");
    run_ok("qemu-img create -q -f vdi '%s' 4M", parent);
    g_autoptr(GError) error = NULL;
    g_assert_false(create_confined(p, "x.vdi", "vdi", "../outside.vdi", "vdi", &error));
    g_assert_nonnull(strstr(error->message, "lies outside"));
    g_clear_error(&error);
    g_assert_true(create_confined(p, "child.vdi", "vdi", "parent.vdi", "vdi", &error));
    g_assert_no_error(error);
    g_autoptr(VdImage) child = open_confined(p, "child.vdi", 0, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(vd_image_filename(vd_image_backing(child)), ==, parent);

    g_autofree char *vmdk_out = g_build_filename(p->fx.dir, "outside.vmdk", NULL);
    run_ok("qemu-img create -q -f vmdk '%s' 4M", vmdk_out);
    g_assert_false(create_confined(p, "x.vmdk", "vmdk", vmdk_out, "vmdk", &error));
    g_assert_nonnull(strstr(error->message, "lies outside"));
    g_clear_error(&error);

    g_autofree char *flat = in_pool(p, "flat.vmdk");
    int fd = open(flat, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    g_autoptr(VdOptions) opts = vd_options_new();
    vd_options_set(opts, "subformat", "monolithicFlat");
    g_assert_false(vd_image_create_fd(fd, flat, "vmdk", MIB, opts, &error));
    close(fd);
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
    g_autofree char *extent = in_pool(p, "flat-flat.vmdk");
    g_assert_false(g_file_test(extent, G_FILE_TEST_EXISTS));
}

/* A descriptor named without a folder has nowhere to find a relative
 * backing name: never the process's working directory. */
static void test_create_no_folder(Pool *p, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *base = in_pool(p, "base.qcow2");
    make_base(base);
    g_autofree char *old = g_get_current_dir();
    g_assert_cmpint(chdir(p->pool), ==, 0);
    g_autofree char *path = in_pool(p, "new.qcow2");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    g_autoptr(VdOptions) opts = vd_options_new();
    vd_options_set(opts, "backing_file", "base.qcow2");
    g_autoptr(GError) error = NULL;
    gboolean ok = vd_image_create_fd(fd, "caller's file", "qcow2", 0, opts, &error);
    close(fd);
    g_assert_cmpint(chdir(old), ==, 0);
    g_assert_false(ok);
    g_assert_nonnull(strstr(error->message, "without a folder"));
}

/* ----- the walk for kernels without openat2 ----- */

static void test_walk_beneath(Pool *p, gconstpointer data)
{
    g_autofree char *sub = in_pool(p, "sub");
    g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);
    g_autofree char *f = in_pool(p, "sub/f");
    write_text(f, "x");
    g_autofree char *outside = g_build_filename(p->fx.dir, "o", NULL);
    write_text(outside, "o");
    g_autofree char *l1 = in_pool(p, "link");
    g_assert_cmpint(symlink("sub/f", l1), ==, 0);
    g_autofree char *l2 = in_pool(p, "dirlink");
    g_assert_cmpint(symlink("sub", l2), ==, 0);
    for (int use = 0; use < 2; use++) {
        int fd = vd_openat_beneath(p->dirfd, "sub/../sub/./f", O_RDONLY | O_CLOEXEC, use);
        g_assert_cmpint(fd, >=, 0);
        close(fd);
        g_assert_cmpint(vd_openat_beneath(p->dirfd, "../o", O_RDONLY, use), ==, -1);
        g_assert_cmpint(errno, ==, EXDEV);
        g_assert_cmpint(vd_openat_beneath(p->dirfd, "sub/../../o", O_RDONLY, use), ==, -1);
        g_assert_cmpint(errno, ==, EXDEV);
        g_assert_cmpint(vd_openat_beneath(p->dirfd, "link", O_RDONLY, use), ==, -1);
        g_assert_cmpint(errno, ==, ELOOP);
        g_assert_cmpint(vd_openat_beneath(p->dirfd, "dirlink/f", O_RDONLY, use), ==, -1);
        g_assert_cmpint(errno, ==, ELOOP);
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define ADD(name, fn) g_test_add(name, Pool, NULL, pool_setup, fn, pool_teardown)
    ADD("/confine/backing-outside", test_backing_outside);
    ADD("/confine/backing-symlink", test_backing_symlink);
    ADD("/confine/backing-inside", test_backing_inside);
    ADD("/confine/data-file-outside", test_data_file_outside);
    ADD("/confine/data-file-inside", test_data_file_inside);
    ADD("/confine/data-file-symlink", test_data_file_symlink);
    ADD("/confine/fifo-data-file", test_fifo_data_file);
    ADD("/confine/fifo-extent", test_fifo_extent);
    ADD("/confine/extent", test_extent_confined);
    ADD("/confine/vdi-parent-outside", test_vdi_parent_outside);
    ADD("/confine/vdi-no-folder", test_vdi_no_folder);
    ADD("/confine/metadata-bound", test_metadata_bound);
    ADD("/confine/table-past-eof", test_table_past_eof);
    ADD("/confine/tables-past-eof", test_tables_past_eof);
    ADD("/confine/top-name", test_top_name);
    ADD("/confine/create-overlay", test_create_overlay);
    ADD("/confine/create-other-formats", test_create_other_formats);
    ADD("/confine/create-no-folder", test_create_no_folder);
    ADD("/confine/walk-beneath", test_walk_beneath);
    return g_test_run();
}
