/* Unit tests of the qcow (version 1) and cow drivers. qemu-img is the
 * oracle for qcow: what it writes vdisk reads identically, what vdisk writes
 * it finds identical. cow left QEMU in 2014, so cow is checked by round
 * trips, backing chains and its documented layout. */
#include "vdisk.h"

#include <glib/gstdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test-util.h"

#define KIB 1024
#define MIB (1024 * 1024)
/* 65 MiB + 3.5 KiB: not a multiple of any cluster size. */
#define ODD_SIZE 68161024ull

/* ----- running the oracle ----- */

/* Run argv (NULL-terminated varargs); returns the exit status. */
static int run_status(const char *first, ...)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    va_list ap;
    va_start(ap, first);
    for (const char *arg = first; arg != NULL; arg = va_arg(ap, const char *))
        g_ptr_array_add(argv, (gpointer)arg);
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    g_autofree char *out = NULL, *err = NULL;
    g_autoptr(GError) error = NULL;
    int status = -1;
    gboolean ok = g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                               &out, &err, &status, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    if (!g_spawn_check_wait_status(status, NULL)) {
        g_autofree char *cmd = g_strjoinv(" ", (char **)argv->pdata);
        g_test_message("%s failed: %s%s", cmd, out, err);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
    }
    return 0;
}

#define run_ok(...) g_assert_cmpint(run_status(__VA_ARGS__, NULL), ==, 0)

/* A raw file of ODD_SIZE with data runs, explicit zeroes, an unaligned run
 * and data up to the very last byte. */
static void make_pattern_raw(const char *path)
{
    run_ok("qemu-img", "create", "-q", "-f", "raw", path, "68161024");
    run_ok("qemu-io", "-f", "raw", "-c", "write -P 17 0 192k", "-c", "write -P 33 3M 64k", "-c",
           "write -P 49 20971520 1000", "-c", "write -z 3M 4k", "-c", "write -P 65 33554431 7",
           "-c", "write -P 91 68157440 3584", path);
}

/* qemu-img 7.2 ends `convert -c -O qcow` with exit status 1 and no message
 * (its final zero-length compressed write, which qcow refuses), although the
 * image is complete; so with -c the image is checked instead. */
static void qemu_convert_to_qcow(const char *src, const char *dst, gboolean compressed)
{
    if (!compressed) {
        run_ok("qemu-img", "convert", "-f", "raw", "-O", "qcow", src, dst);
        return;
    }
    run_status("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow", src, dst, NULL);
    run_ok("qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow", src, dst);
}

/* ----- comparing ----- */

static void assert_image_equals_raw(VdImage *img, const char *raw_path)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GMappedFile) map = g_mapped_file_new(raw_path, FALSE, &error);
    g_assert_no_error(error);
    gsize size = g_mapped_file_get_length(map);
    const guint8 *want = (const guint8 *)g_mapped_file_get_contents(map);
    g_assert_cmpuint(vd_image_size(img), ==, size);
    g_autofree guint8 *buf = g_malloc(MIB);
    for (gsize off = 0; off < size; off += MIB) {
        gsize n = MIN((gsize)MIB, size - off);
        g_assert_true(vd_image_read(img, off, buf, n, &error));
        g_assert_no_error(error);
        if (memcmp(buf, want + off, n) != 0)
            for (gsize i = 0; i < n; i++)
                if (buf[i] != want[off + i])
                    g_error("%s: byte %" G_GSIZE_FORMAT " is %u, expected %u",
                            vd_image_filename(img), off + i, buf[i], want[off + i]);
    }
}

static void assert_image_equals_buffer(VdImage *img, const guint8 *want, gsize size)
{
    g_autoptr(GError) error = NULL;
    g_assert_cmpuint(vd_image_size(img), ==, size);
    g_autofree guint8 *got = g_malloc(size);
    g_assert_true(vd_image_read(img, 0, got, size, &error));
    g_assert_no_error(error);
    for (gsize i = 0; i < size; i++)
        if (got[i] != want[i])
            g_error("%s: byte %" G_GSIZE_FORMAT " is %u, expected %u", vd_image_filename(img), i,
                    got[i], want[i]);
}

/* vdisk reads path exactly as qemu-img convert -O raw does. */
static void assert_reads_like_qemu(Fixture *fx, const char *path, const char *format)
{
    g_autofree char *expect = path_in(fx, "expect.raw");
    run_ok("qemu-img", "convert", "-f", format, "-O", "raw", path, expect);
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, format, 0, &error);
    g_assert_no_error(error);
    assert_image_equals_raw(img, expect);
    g_unlink(expect);
}

static void write_bytes(VdImage *img, guint8 *mirror, guint64 off, gsize len, guint8 byte)
{
    g_autoptr(GError) error = NULL;
    g_autofree guint8 *buf = g_malloc(len);
    memset(buf, byte, len);
    g_assert_true(vd_image_write(img, off, buf, len, &error));
    g_assert_no_error(error);
    if (mirror != NULL)
        memset(mirror + off, byte, len);
}

static void save_buffer(const char *path, const guint8 *buf, gsize len)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(g_file_set_contents(path, (const char *)buf, (gssize)len, &error));
    g_assert_no_error(error);
}

static guint8 *load_file(const char *path, gsize *len)
{
    g_autoptr(GError) error = NULL;
    char *data = NULL;
    g_assert_true(g_file_get_contents(path, &data, len, &error));
    g_assert_no_error(error);
    return (guint8 *)data;
}

static void convert(VdImage *src, const char *dst, const char *format, gboolean compress)
{
    g_autoptr(GError) error = NULL;
    VdConvertOptions opts;
    vd_convert_options_init(&opts);
    opts.target_format = format;
    opts.compress = compress;
    g_assert_true(vd_convert(src, dst, &opts, &error));
    g_assert_no_error(error);
}

static VdImage *create_and_open(const char *path, const char *format, guint64 size,
                                const char *options)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdOptions) opts = vd_options_new();
    if (options != NULL)
        g_assert_true(vd_options_parse(opts, options, &error));
    g_assert_true(vd_image_create(path, format, size, opts, &error));
    g_assert_no_error(error);
    VdImage *img = vd_image_open(path, format, VD_OPEN_READ_WRITE, &error);
    g_assert_no_error(error);
    return img;
}

/* ----- qcow images qemu-img wrote ----- */

static void test_qcow_read_qemu(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    gboolean compressed = GPOINTER_TO_INT(data);
    g_autofree char *src = path_in(fx, "src.raw");
    g_autofree char *img_path = path_in(fx, "img.qcow");
    make_pattern_raw(src);
    qemu_convert_to_qcow(src, img_path, compressed);
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(img_path, NULL, 0, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(vd_image_format(img), ==, "qcow");
    g_assert_cmpuint(vd_image_cluster_size(img), ==, 4096);
    assert_image_equals_raw(img, src);

    VdBlockStatus st;
    g_assert_true(vd_image_block_status(img, 0, vd_image_size(img), TRUE, &st, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(st.length, ==, 192 * KIB);
    g_assert_true(st.flags & VD_BLOCK_DATA);
    g_assert_cmpint(!!(st.flags & VD_BLOCK_COMPRESSED), ==, compressed);
    g_assert_cmpint(!!(st.flags & VD_BLOCK_OFFSET_VALID), ==, !compressed);
}

static void test_qcow_read_qemu_empty(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *img_path = path_in(fx, "empty.qcow");
    run_ok("qemu-img", "create", "-q", "-f", "qcow", img_path, "68161024");
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(img_path, NULL, 0, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(vd_image_size(img), ==, ODD_SIZE);
    VdBlockStatus st;
    g_assert_true(vd_image_block_status(img, 0, ODD_SIZE, TRUE, &st, &error));
    g_assert_cmpuint(st.length, ==, ODD_SIZE);
    g_assert_false(st.flags & VD_BLOCK_ALLOCATED);
    g_assert_true(vd_image_has_zero_init(img));
    assert_reads_like_qemu(fx, img_path, "qcow");
}

static void test_qcow_read_qemu_last_sector(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *img_path = path_in(fx, "last.qcow");
    run_ok("qemu-img", "create", "-q", "-f", "qcow", img_path, "68161024");
    run_ok("qemu-io", "-f", "qcow", "-c", "write -P 7 68160512 512", img_path);
    assert_reads_like_qemu(fx, img_path, "qcow");
}

static void test_qcow_read_qemu_backing(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *base = path_in(fx, "base.raw");
    g_autofree char *over = path_in(fx, "over.qcow");
    make_pattern_raw(base);
    run_ok("qemu-img", "create", "-q", "-f", "qcow", "-b", "base.raw", "-F", "raw", over);
    run_ok("qemu-io", "-f", "qcow", "-c", "write -P 9 1000 3000", "-c", "write -P 10 5M 64k", "-c",
           "write -P 11 68160000 1024", over);
    assert_reads_like_qemu(fx, over, "qcow");

    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(over, NULL, 0, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(vd_image_cluster_size(img), ==, 512); /* qemu's choice with a backing file */
    g_assert_nonnull(vd_image_backing(img));
    g_autoptr(VdImageInfo) info = vd_image_get_info(img, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(info->backing_filename, ==, "base.raw");
    g_assert_cmpuint(info->cluster_size, ==, 512);
    g_assert_false(vd_image_has_zero_init(img));
}

/* ----- qcow images vdisk writes ----- */

static void test_qcow_write_convert(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    gboolean compressed = GPOINTER_TO_INT(data);
    g_autofree char *src_path = path_in(fx, "src.raw");
    g_autofree char *dst = path_in(fx, "out.qcow");
    g_autofree char *qemu_made = path_in(fx, "qemu.qcow");
    make_pattern_raw(src_path);
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) src = vd_image_open(src_path, "raw", 0, &error);
    g_assert_no_error(error);
    convert(src, dst, "qcow", compressed);
    run_ok("qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow", src_path, dst);
    /* The same header as qemu-img writes (geometry, L1 offset, no mtime). */
    qemu_convert_to_qcow(src_path, qemu_made, compressed);
    run_ok("cmp", "-s", "-n", "48", dst, qemu_made);
    g_autoptr(VdImage) back = vd_image_open(dst, NULL, 0, &error);
    g_assert_no_error(error);
    assert_image_equals_raw(back, src_path);
}

static void test_qcow_write_random(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    const gsize size = 10 * MIB + 3584;
    g_autofree char *path = path_in(fx, "w.qcow");
    g_autofree char *mirror_path = path_in(fx, "mirror.raw");
    g_autofree guint8 *mirror = g_malloc0(size);
    {
        g_autoptr(VdImage) img = create_and_open(path, "qcow", size, NULL);
        write_bytes(img, mirror, 100, 5000, 1);            /* unaligned, two clusters */
        write_bytes(img, mirror, 4096 * 3, 4096 * 40, 2);  /* whole clusters */
        write_bytes(img, mirror, 4096 * 10 + 7, 9, 3);     /* inside an allocated cluster */
        write_bytes(img, mirror, 2 * MIB - 100, 300, 4);   /* across two L2 tables */
        write_bytes(img, mirror, size - 512, 512, 5);      /* the last sector */
        write_bytes(img, mirror, 7 * MIB, 1 * MIB + 1, 6); /* ends one byte into a cluster */
        g_autoptr(GError) error = NULL;
        g_assert_true(vd_image_flush(img, &error));
        g_assert_no_error(error);
    }
    save_buffer(mirror_path, mirror, size);
    run_ok("qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow", mirror_path, path);
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, NULL, 0, &error);
    g_assert_no_error(error);
    assert_image_equals_buffer(img, mirror, size);
}

static void test_qcow_write_backing(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *base = path_in(fx, "base.raw");
    g_autofree char *over = path_in(fx, "over.qcow");
    g_autofree char *mirror_path = path_in(fx, "mirror.raw");
    make_pattern_raw(base);
    gsize size;
    g_autofree guint8 *mirror = load_file(base, &size);
    {
        g_autoptr(VdImage) img = create_and_open(over, "qcow", 0, "backing_file=base.raw");
        g_assert_cmpuint(vd_image_size(img), ==, ODD_SIZE);
        g_assert_cmpuint(vd_image_cluster_size(img), ==, 512);
        write_bytes(img, mirror, 100, 50, 0xa1); /* copy-on-write of one cluster */
        write_bytes(img, mirror, 3 * MIB - 10, 64 * KIB, 0xa2);
        write_bytes(img, mirror, 20 * MIB + 3, 1, 0xa3);
        write_bytes(img, mirror, ODD_SIZE - 700, 700, 0xa4);
        g_autoptr(GError) error = NULL;
        g_assert_true(vd_image_write_zeroes(img, 100 * KIB, 8 * KIB, TRUE, &error));
        g_assert_no_error(error);
        memset(mirror + 100 * KIB, 0, 8 * KIB);
    }
    save_buffer(mirror_path, mirror, size);
    run_ok("qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow", mirror_path, over);
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(over, NULL, 0, &error);
    g_assert_no_error(error);
    assert_image_equals_raw(img, mirror_path);
}

/* A partial write into a compressed cluster keeps the rest of it. */
static void test_qcow_write_over_compressed(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    const gsize size = 1 * MIB;
    g_autofree char *path = path_in(fx, "c.qcow");
    g_autofree char *mirror_path = path_in(fx, "mirror.raw");
    g_autofree guint8 *mirror = g_malloc0(size);
    g_autoptr(GError) error = NULL;
    {
        g_autoptr(VdImage) img = create_and_open(path, "qcow", size, NULL);
        g_assert_true(vd_image_can_write_compressed(img));
        g_autofree guint8 *cluster = g_malloc(4096);
        for (guint i = 0; i < 4096; i++)
            cluster[i] = (guint8)(i / 64);
        for (guint64 off = 0; off < 16 * KIB; off += 4096) {
            g_assert_true(vd_image_write_compressed(img, off, cluster, 4096, &error));
            g_assert_no_error(error);
            memcpy(mirror + off, cluster, 4096);
        }
        VdBlockStatus st;
        g_assert_true(vd_image_block_status(img, 0, size, FALSE, &st, &error));
        g_assert_cmpuint(st.length, ==, 16 * KIB);
        g_assert_true(st.flags & VD_BLOCK_COMPRESSED);
        write_bytes(img, mirror, 4096 + 100, 10, 0xee);
        g_assert_true(vd_image_write_zeroes(img, 8192, 4096, TRUE, &error));
        g_assert_no_error(error);
        memset(mirror + 8192, 0, 4096);
    }
    save_buffer(mirror_path, mirror, size);
    run_ok("qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow", mirror_path, path);
    g_autoptr(VdImage) img = vd_image_open(path, NULL, 0, &error);
    g_assert_no_error(error);
    assert_image_equals_buffer(img, mirror, size);
}

static void test_qcow_write_zeroes(Fixture *fx, gconstpointer data)
{
    const gsize size = 4 * MIB;
    g_autofree char *path = path_in(fx, "z.qcow");
    g_autoptr(VdImage) img = create_and_open(path, "qcow", size, NULL);
    g_autofree guint8 *mirror = g_malloc0(size);
    write_bytes(img, mirror, 0, 1 * MIB, 0x55);
    g_autoptr(GError) error = NULL;
    /* Whole clusters are dropped, the partial ones at the ends zeroed. */
    g_assert_true(vd_image_write_zeroes(img, 4096 + 512, 64 * KIB, TRUE, &error));
    g_assert_no_error(error);
    memset(mirror + 4096 + 512, 0, 64 * KIB);
    VdBlockStatus st;
    g_assert_true(vd_image_block_status(img, 8192, size - 8192, FALSE, &st, &error));
    g_assert_false(st.flags & VD_BLOCK_ALLOCATED);
    g_assert_cmpuint(st.length, ==, 60 * KIB);
    assert_image_equals_buffer(img, mirror, size);
}

/* Plain clusters that follow each other in the file make one extent. */
static void test_qcow_block_status_merges(Fixture *fx, gconstpointer data)
{
    g_autofree char *path = path_in(fx, "m.qcow");
    g_autoptr(VdImage) img = create_and_open(path, "qcow", 8 * MIB, NULL);
    write_bytes(img, NULL, 0, 1 * MIB, 1);
    g_autoptr(GError) error = NULL;
    VdBlockStatus st;
    g_assert_true(vd_image_block_status(img, 512, 8 * MIB - 512, FALSE, &st, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(st.length, ==, 1 * MIB - 512);
    g_assert_true(st.flags & VD_BLOCK_OFFSET_VALID);
    g_assert_cmpuint(st.host_offset % 4096, ==, 512);
    g_assert_true(vd_image_block_status(img, 1 * MIB, 7 * MIB, FALSE, &st, &error));
    g_assert_cmpuint(st.length, ==, 7 * MIB);
    g_assert_false(st.flags & VD_BLOCK_ALLOCATED);
}

/* ----- the real-world fixtures (../../shared/fixtures) ----- */

static char *fixtures_dir(void)
{
    const char *env = g_getenv("VDISK_FIXTURES");
    if (env != NULL)
        return g_strdup(env);
    return g_build_filename(g_test_get_dir(G_TEST_DIST), "..", "..", "shared", "fixtures", NULL);
}

static void test_qcow_fixtures(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *dir = fixtures_dir();
    g_autofree char *freebsd = g_build_filename(dir, "freebsd-mkimg_img-1x1-512-gpt.qcow.xz", NULL);
    g_autofree char *tsk = g_build_filename(dir, "sleuthkit_image.qcow", NULL);
    if (!g_file_test(freebsd, G_FILE_TEST_EXISTS) || !g_file_test(tsk, G_FILE_TEST_EXISTS)) {
        g_test_skip("fixtures not found (set VDISK_FIXTURES)");
        return;
    }
    g_autofree char *xz = g_find_program_in_path("xz");
    if (xz == NULL) {
        g_test_skip("xz not found");
        return;
    }
    g_autofree char *unpacked = path_in(fx, "freebsd.qcow");
    g_autofree char *script = g_strdup_printf("xz -dc '%s' > '%s'", freebsd, unpacked);
    run_ok("sh", "-c", script);
    assert_reads_like_qemu(fx, unpacked, "qcow");
    assert_reads_like_qemu(fx, tsk, "qcow");
}

/* ----- damaged qcow headers and tables ----- */

static void patch(const char *path, goffset at, const void *bytes, gsize len)
{
    FILE *f = fopen(path, "r+b");
    g_assert_nonnull(f);
    g_assert_cmpint(fseeko(f, at, SEEK_SET), ==, 0);
    g_assert_cmpuint(fwrite(bytes, 1, len, f), ==, len);
    fclose(f);
}

static void patch_be32(const char *path, goffset at, guint32 v)
{
    guint32 be = GUINT32_TO_BE(v);
    patch(path, at, &be, 4);
}

static void patch_be64(const char *path, goffset at, guint64 v)
{
    guint64 be = GUINT64_TO_BE(v);
    patch(path, at, &be, 8);
}

static void patch_u8(const char *path, goffset at, guint8 v) { patch(path, at, &v, 1); }

/* A small qcow: 4 KiB clusters, L1 at 48, L2 at 4096, the first data
 * cluster at 8192 (qemu-img's layout, made by vdisk). */
static void make_small_qcow(const char *path)
{
    g_autoptr(VdImage) img = create_and_open(path, "qcow", 1 * MIB, NULL);
    write_bytes(img, NULL, 0, 8192, 0x42);
}

static void expect_open_error(const char *path, VdError code, const char *needle)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, "qcow", 0, &error);
    g_assert_null(img);
    g_assert_error(error, VD_ERROR, (gint)code);
    g_assert_nonnull(strstr(error->message, path)); /* names the file */
    if (needle != NULL && strstr(error->message, needle) == NULL)
        g_error("message '%s' lacks '%s'", error->message, needle);
}

static void expect_read_error(const char *path)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, "qcow", 0, &error);
    g_assert_no_error(error);
    guint8 buf[8192];
    g_assert_false(vd_image_read(img, 0, buf, sizeof buf, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_CORRUPT);
}

typedef void (*Damage)(const char *path);

static void damage_truncate(const char *path) { g_assert_cmpint(truncate(path, 30), ==, 0); }
static void damage_version(const char *path) { patch_be32(path, 4, 2); }
static void damage_cluster_small(const char *path) { patch_u8(path, 32, 8); }
static void damage_cluster_big(const char *path) { patch_u8(path, 32, 17); }
static void damage_l2_small(const char *path) { patch_u8(path, 33, 5); }
static void damage_l2_big(const char *path) { patch_u8(path, 33, 14); }
static void damage_crypt_aes(const char *path) { patch_be32(path, 36, 1); }
static void damage_crypt_unknown(const char *path) { patch_be32(path, 36, 9); }
static void damage_size_huge(const char *path) { patch_be64(path, 24, G_MAXUINT64); }
static void damage_size_big(const char *path) { patch_be64(path, 24, 1ull << 62); }
static void damage_l1_offset(const char *path) { patch_be64(path, 40, 1ull << 40); }
static void damage_backing_long(const char *path)
{
    patch_be64(path, 8, 48);
    patch_be32(path, 16, 2000);
}
static void damage_backing_past_eof(const char *path)
{
    patch_be64(path, 8, 1ull << 33);
    patch_be32(path, 16, 10);
}

static void test_qcow_corrupt_header(Fixture *fx, gconstpointer data)
{
    static const struct {
        Damage damage;
        VdError code;
        const char *needle;
    } cases[] = {
        { damage_truncate, VD_ERROR_CORRUPT, "too short" },
        { damage_version, VD_ERROR_UNSUPPORTED_FORMAT, "version 2" },
        { damage_cluster_small, VD_ERROR_CORRUPT, "cluster_bits 8" },
        { damage_cluster_big, VD_ERROR_CORRUPT, "cluster_bits 17" },
        { damage_l2_small, VD_ERROR_CORRUPT, "l2_bits 5" },
        { damage_l2_big, VD_ERROR_CORRUPT, "l2_bits 14" },
        { damage_crypt_unknown, VD_ERROR_CORRUPT, "encryption method 9" },
        { damage_size_huge, VD_ERROR_CORRUPT, "L1" },
        { damage_size_big, VD_ERROR_CORRUPT, "L1" },
        { damage_l1_offset, VD_ERROR_CORRUPT, "past the end" },
        { damage_backing_long, VD_ERROR_CORRUPT, "1023" },
        { damage_backing_past_eof, VD_ERROR_CORRUPT, "past the end" },
    };
    g_autofree char *path = path_in(fx, "bad.qcow");
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        make_small_qcow(path);
        cases[i].damage(path);
        expect_open_error(path, cases[i].code, cases[i].needle);
    }
    /* Legacy AES: without a key it opens for inspection only; opened for
     * writing without it, it refuses writes. */
    make_small_qcow(path);
    damage_crypt_aes(path);
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, "qcow", 0, &error);
    g_assert_no_error(error);
    g_assert_true(vd_image_needs_key(img));
    guint8 buf[512];
    g_assert_false(vd_image_read(img, 0, buf, sizeof buf, &error));
    g_assert_nonnull(strstr(error->message, "opened without its passphrase"));
    g_clear_error(&error);
    g_clear_pointer(&img, vd_image_unref); /* its read lock would refuse a writer */
    img = vd_image_open(path, "qcow", VD_OPEN_READ_WRITE, &error);
    g_assert_no_error(error);
    memset(buf, 7, sizeof buf);
    g_assert_false(vd_image_write(img, 0, buf, sizeof buf, &error));
    g_assert_nonnull(strstr(error->message, "opened without its passphrase"));
}

static void test_qcow_corrupt_tables(Fixture *fx, gconstpointer data)
{
    g_autofree char *path = path_in(fx, "bad.qcow");
    static const guint64 l1_values[] = { 4096 + 8, 1ull << 40, 1ull << 63 | 4096 };
    for (gsize i = 0; i < G_N_ELEMENTS(l1_values); i++) {
        make_small_qcow(path);
        patch_be64(path, 48, l1_values[i]);
        expect_read_error(path);
    }
    static const guint64 l2_values[] = {
        1ull << 40,                          /* data past the end of the file */
        1ull << 63 | 100ull << 51 | 1 << 30, /* compressed data past the end */
        1ull << 63 | 8192,                   /* compressed, of length 0 */
        1ull << 63 | 100ull << 51 | 8192,    /* compressed, but not deflate data */
    };
    for (gsize i = 0; i < G_N_ELEMENTS(l2_values); i++) {
        make_small_qcow(path);
        patch_be64(path, 4096, l2_values[i]);
        expect_read_error(path);
    }
    /* The error reaches a copy too, and the copy leaves nothing behind. */
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, "qcow", 0, &error);
    g_assert_no_error(error);
    g_autofree char *out = path_in(fx, "out.raw");
    VdConvertOptions opts;
    vd_convert_options_init(&opts);
    opts.target_format = "raw";
    g_assert_false(vd_convert(img, out, &opts, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_CORRUPT);
    g_assert_false(g_file_test(out, G_FILE_TEST_EXISTS));
}

static void test_qcow_create_options(Fixture *fx, gconstpointer data)
{
    g_autofree char *path = path_in(fx, "o.qcow");
    g_autofree char *base = path_in(fx, "base.raw");
    const char *const *keys = vd_format_create_options("qcow");
    g_assert_true(g_strv_contains(keys, "backing_file"));
    g_assert_true(g_strv_contains(keys, "backing_fmt"));
    g_assert_true(g_strv_contains(keys, "encryption"));
    g_assert_true(g_strv_contains(keys, "encrypt.format"));
    /* Legacy AES is made (test-crypto), but not without its key, not
     * with a key and no format, and in no other format. */
    static const struct {
        const char *options;
        gint code;
        const char *needle;
    } refused[] = {
        { "encryption=on", VD_ERROR_INVALID_ARGUMENT, "needs a passphrase" },
        { "encrypt.format=aes", VD_ERROR_INVALID_ARGUMENT, "needs a passphrase" },
        { "encrypt.key-secret=sec0", VD_ERROR_INVALID_ARGUMENT, "needs encrypt.format=aes" },
        { "encrypt.format=luks", VD_ERROR_NOT_SUPPORTED, "Unsupported encryption format" },
        { "encryption=on,encrypt.format=aes", VD_ERROR_INVALID_ARGUMENT, "at the same time" },
    };
    for (gsize i = 0; i < G_N_ELEMENTS(refused); i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(VdOptions) opts = vd_options_new();
        g_assert_true(vd_options_parse(opts, refused[i].options, &error));
        g_assert_false(vd_image_create(path, "qcow", MIB, opts, &error));
        g_assert_error(error, VD_ERROR, refused[i].code);
        g_assert_nonnull(strstr(error->message, refused[i].needle));
    }
    /* backing_fmt is taken and, as qcow has nowhere to keep it, dropped. */
    /* The base is closed first: an open for writing would refuse (lock)
     * the overlay's read of it, as in QEMU. */
    vd_image_unref(create_and_open(base, "raw", MIB, NULL));
    g_autoptr(VdImage) img =
        create_and_open(path, "qcow", 0, "backing_file=base.raw,backing_fmt=raw,encryption=off");
    g_assert_cmpuint(vd_image_size(img), ==, MIB);
    g_assert_nonnull(vd_image_backing(img));
    g_autoptr(GError) error = NULL;
    gboolean fell_back = TRUE;
    g_assert_cmpstr(vd_probe_file(path, &fell_back, &error), ==, "qcow");
    g_assert_false(fell_back);
}

/* ----- cow ----- */

static guint32 get_be32(const guint8 *p)
{
    guint32 v;
    memcpy(&v, p, 4);
    return GUINT32_FROM_BE(v);
}

static guint64 get_be64(const guint8 *p)
{
    guint64 v;
    memcpy(&v, p, 8);
    return GUINT64_FROM_BE(v);
}

static void put_be32(guint8 *p, guint32 v)
{
    v = GUINT32_TO_BE(v);
    memcpy(p, &v, 4);
}

static void put_be64(guint8 *p, guint64 v)
{
    v = GUINT64_TO_BE(v);
    memcpy(p, &v, 8);
}

static const guint64 cow_size = 5 * MIB + 3584;

static void test_cow_roundtrip(Fixture *fx, gconstpointer data)
{
    g_autofree char *path = path_in(fx, "r.cow");
    g_autofree guint8 *mirror = g_malloc0(cow_size);
    {
        g_autoptr(VdImage) img = create_and_open(path, "cow", cow_size, NULL);
        g_assert_true(vd_image_has_zero_init(img));
        write_bytes(img, mirror, 0, 512, 1);
        write_bytes(img, mirror, 1000, 5000, 2); /* partial sectors at both ends */
        write_bytes(img, mirror, 1 * MIB, 300 * KIB, 3);
        write_bytes(img, mirror, 1 * MIB + 7, 3, 4); /* into a stored sector */
        write_bytes(img, mirror, cow_size - 100, 100, 5);
    }
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, NULL, 0, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(vd_image_format(img), ==, "cow");
    assert_image_equals_buffer(img, mirror, cow_size);

    VdBlockStatus st;
    g_assert_true(vd_image_block_status(img, 0, cow_size, FALSE, &st, &error));
    g_assert_cmpuint(st.length, ==, 6144); /* sectors 0..11 */
    g_assert_true(st.flags & VD_BLOCK_DATA);
    g_assert_true(st.flags & VD_BLOCK_OFFSET_VALID);
    g_assert_true(vd_image_block_status(img, 6144, cow_size - 6144, FALSE, &st, &error));
    g_assert_cmpuint(st.length, ==, 1 * MIB - 6144);
    g_assert_false(st.flags & VD_BLOCK_ALLOCATED);
    g_assert_true(vd_image_block_status(img, 1 * MIB, cow_size - MIB, FALSE, &st, &error));
    g_assert_cmpuint(st.length, ==, 300 * KIB);
}

/* The header and bitmap are where the comment in cow.c says. */
static void test_cow_layout(Fixture *fx, gconstpointer data)
{
    g_autofree char *base = path_in(fx, "base.raw");
    g_autofree char *path = path_in(fx, "l.cow");
    vd_image_unref(create_and_open(base, "raw", 8 * MIB, NULL)); /* closed: see above */
    {
        g_autoptr(VdImage) img = create_and_open(path, "cow", 0, "backing_file=base.raw");
        write_bytes(img, NULL, 9 * 512, 512, 0x77);
    }
    gsize len;
    g_autofree guint8 *file = load_file(path, &len);
    guint64 sectors = 8 * MIB / 512;
    guint64 data_offset = (1056 + sectors / 8 + 511) / 512 * 512;
    g_assert_cmpuint(len, ==, data_offset + 10 * 512);
    g_assert_cmpuint(get_be32(file), ==, 0x4f4f4f4d);
    g_assert_cmpuint(get_be32(file + 4), ==, 2);
    g_assert_cmpstr((const char *)file + 8, ==, "base.raw");
    g_assert_cmpuint(get_be64(file + 1040), ==, 8 * MIB);
    g_assert_cmpuint(get_be32(file + 1048), ==, 512);
    g_assert_cmpuint(file[1056], ==, 0);
    g_assert_cmpuint(file[1057], ==, 0x02); /* sector 9: bit 1 of byte 1 */
    g_assert_cmpuint(file[data_offset + 9 * 512], ==, 0x77);
}

/* User-Mode Linux's packed header: size at 1036, sector size at 1044. */
static void test_cow_packed_layout(Fixture *fx, gconstpointer data)
{
    g_autofree char *path = path_in(fx, "uml.cow");
    const guint64 size = 64 * KIB, sectors = size / 512;
    const gsize data_offset = (1048 + sectors / 8 + 511) / 512 * 512;
    gsize len = data_offset + size;
    g_autofree guint8 *file = g_malloc0(len);
    put_be32(file, 0x4f4f4f4d);
    put_be32(file + 4, 2);
    put_be64(file + 1036, size);
    put_be32(file + 1044, 512);
    file[1048 + 2] = 0x01; /* sector 16 */
    memset(file + data_offset + 16 * 512, 0x3c, 512);
    save_buffer(path, file, len);
    g_autofree guint8 *want = g_malloc0(size);
    memset(want + 16 * 512, 0x3c, 512);
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, NULL, 0, &error);
    g_assert_no_error(error);
    assert_image_equals_buffer(img, want, size);
}

/* base.raw <- a.cow <- b.cow reads as the flattened content. */
static void test_cow_chain(Fixture *fx, gconstpointer data)
{
    g_autofree char *base = path_in(fx, "base.raw");
    g_autofree char *a = path_in(fx, "a.cow");
    g_autofree char *b = path_in(fx, "b.cow");
    g_autofree char *flat = path_in(fx, "flat.raw");
    g_autofree guint8 *mirror = g_malloc0(cow_size);
    {
        g_autoptr(VdImage) img = create_and_open(base, "raw", cow_size, NULL);
        write_bytes(img, mirror, 0, cow_size, 0x10);
    }
    {
        g_autoptr(VdImage) img = create_and_open(a, "cow", 0, "backing_file=base.raw");
        g_assert_false(vd_image_has_zero_init(img));
        write_bytes(img, mirror, 700, 1000, 0x20); /* partial sectors copy from base */
        write_bytes(img, mirror, 2 * MIB, 64 * KIB, 0x21);
        g_autoptr(GError) error = NULL;
        g_assert_true(vd_image_write_zeroes(img, 3 * MIB, 8 * KIB, TRUE, &error));
        g_assert_no_error(error);
        memset(mirror + 3 * MIB, 0, 8 * KIB);
    }
    {
        g_autoptr(VdImage) img = create_and_open(b, "cow", 0, "backing_file=a.cow,backing_fmt=cow");
        write_bytes(img, mirror, 1200, 10, 0x30); /* partial sector copies from a over base */
        write_bytes(img, mirror, 2 * MIB + 32 * KIB, 64 * KIB, 0x31);
        write_bytes(img, mirror, cow_size - 1, 1, 0x32);
    }
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(b, NULL, 0, &error);
    g_assert_no_error(error);
    assert_image_equals_buffer(img, mirror, cow_size);

    VdBlockStatus st;
    g_assert_true(vd_image_block_status(img, 2 * MIB, 16 * KIB, TRUE, &st, &error));
    g_assert_cmpuint(st.depth, ==, 1);
    g_assert_true(vd_image_block_status(img, 4 * MIB, 16 * KIB, TRUE, &st, &error));
    g_assert_cmpuint(st.depth, ==, 2);

    convert(img, flat, "raw", FALSE);
    g_autoptr(VdImage) copy = vd_image_open(flat, "raw", 0, &error);
    g_assert_no_error(error);
    assert_image_equals_buffer(copy, mirror, cow_size);
}

/* raw -> cow -> qcow -> raw keeps every byte; qemu-img agrees on the qcow. */
static void test_cow_convert(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *src_path = path_in(fx, "src.raw");
    g_autofree char *cow = path_in(fx, "m.cow");
    g_autofree char *qcow = path_in(fx, "m.qcow");
    make_pattern_raw(src_path);
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) src = vd_image_open(src_path, "raw", 0, &error);
    g_assert_no_error(error);
    convert(src, cow, "cow", FALSE);
    g_autoptr(VdImage) c = vd_image_open(cow, NULL, 0, &error);
    g_assert_no_error(error);
    assert_image_equals_raw(c, src_path);
    convert(c, qcow, "qcow", FALSE);
    run_ok("qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow", src_path, qcow);
}

static void expect_cow_open_error(const char *path, VdError code)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, "cow", 0, &error);
    g_assert_null(img);
    g_assert_error(error, VD_ERROR, (gint)code);
    g_assert_nonnull(strstr(error->message, path));
}

static void test_cow_corrupt(Fixture *fx, gconstpointer data)
{
    g_autofree char *path = path_in(fx, "bad.cow");
    g_autoptr(GError) error = NULL;
    static const char *cases[] = { "truncate", "version", "name", "sector", "size" };
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_assert_true(vd_image_create(path, "cow", MIB, NULL, &error));
        g_assert_no_error(error);
        VdError code = VD_ERROR_CORRUPT;
        if (g_str_equal(cases[i], "truncate")) {
            g_assert_cmpint(truncate(path, 1000), ==, 0);
        } else if (g_str_equal(cases[i], "version")) {
            patch_be32(path, 4, 3);
            code = VD_ERROR_UNSUPPORTED_FORMAT;
        } else if (g_str_equal(cases[i], "name")) {
            guint8 name[1024];
            memset(name, 'x', sizeof name);
            patch(path, 8, name, sizeof name);
        } else if (g_str_equal(cases[i], "sector")) {
            patch_be32(path, 1048, 4096);
        } else {
            patch_be64(path, 1040, G_MAXUINT64 - 511);
        }
        expect_cow_open_error(path, code);
    }
    /* A name too long for the 1024-byte field is refused at create. */
    g_autofree char *longname = g_strnfill(1100, 'n');
    g_autofree char *opt = g_strdup_printf("backing_file=%s", longname);
    g_autoptr(VdOptions) opts = vd_options_new();
    g_assert_true(vd_options_parse(opts, opt, &error));
    g_assert_false(vd_image_create(path, "cow", MIB, opts, &error));
    g_assert_nonnull(error);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define ADD(name, fn, data) g_test_add(name, Fixture, data, fixture_setup, fn, fixture_teardown)
    ADD("/qcow/read/qemu-plain", test_qcow_read_qemu, GINT_TO_POINTER(FALSE));
    ADD("/qcow/read/qemu-compressed", test_qcow_read_qemu, GINT_TO_POINTER(TRUE));
    ADD("/qcow/read/qemu-empty", test_qcow_read_qemu_empty, NULL);
    ADD("/qcow/read/qemu-last-sector", test_qcow_read_qemu_last_sector, NULL);
    ADD("/qcow/read/qemu-backing", test_qcow_read_qemu_backing, NULL);
    ADD("/qcow/read/fixtures", test_qcow_fixtures, NULL);
    ADD("/qcow/write/convert", test_qcow_write_convert, GINT_TO_POINTER(FALSE));
    ADD("/qcow/write/convert-compressed", test_qcow_write_convert, GINT_TO_POINTER(TRUE));
    ADD("/qcow/write/random", test_qcow_write_random, NULL);
    ADD("/qcow/write/backing", test_qcow_write_backing, NULL);
    ADD("/qcow/write/over-compressed", test_qcow_write_over_compressed, NULL);
    ADD("/qcow/write/zeroes", test_qcow_write_zeroes, NULL);
    ADD("/qcow/block-status/merges", test_qcow_block_status_merges, NULL);
    ADD("/qcow/corrupt/header", test_qcow_corrupt_header, NULL);
    ADD("/qcow/corrupt/tables", test_qcow_corrupt_tables, NULL);
    ADD("/qcow/create-options", test_qcow_create_options, NULL);
    ADD("/cow/roundtrip", test_cow_roundtrip, NULL);
    ADD("/cow/layout", test_cow_layout, NULL);
    ADD("/cow/packed-layout", test_cow_packed_layout, NULL);
    ADD("/cow/chain", test_cow_chain, NULL);
    ADD("/cow/convert", test_cow_convert, NULL);
    ADD("/cow/corrupt", test_cow_corrupt, NULL);
#undef ADD
    return g_test_run();
}
