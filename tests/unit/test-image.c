/* Unit tests of the generic image layer, the raw driver, option parsing,
 * the copy engine and comparison. */
#include "vdisk.h"

#include <glib/gstdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test-util.h"

#define MIB (1024 * 1024)

/* A raw image of size bytes with pattern bytes at [off, off+len). */
static VdImage *make_raw(const char *path, guint64 size)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_image_create(path, "raw", size, NULL, &error));
    g_assert_no_error(error);
    VdImage *img = vd_image_open(path, "raw", VD_OPEN_READ_WRITE, &error);
    g_assert_no_error(error);
    return img;
}

static void write_pattern(VdImage *img, guint64 off, gsize len, guint8 byte)
{
    g_autoptr(GError) error = NULL;
    g_autofree guint8 *buf = g_malloc(len);
    memset(buf, byte, len);
    g_assert_true(vd_image_write(img, off, buf, len, &error));
    g_assert_no_error(error);
}

static void assert_reads(VdImage *img, guint64 off, gsize len, guint8 byte)
{
    g_autoptr(GError) error = NULL;
    g_autofree guint8 *buf = g_malloc(len);
    g_assert_true(vd_image_read(img, off, buf, len, &error));
    g_assert_no_error(error);
    for (gsize i = 0; i < len; i++)
        if (buf[i] != byte)
            g_error("byte %" G_GUINT64_FORMAT " is %u, expected %u", off + i, buf[i], byte);
}

/* ----- parsing ----- */

static void test_parse_size(void)
{
    static const struct {
        const char *text;
        guint64 value;
    } good[] = {
        { "0", 0 },          { "512", 512 },         { "1k", 1024 },       { "1K", 1024 },
        { "64M", 64 * MIB }, { "1.5G", 3ull << 29 }, { "2T", 2ull << 40 }, { "1E", 1ull << 60 },
        { "100B", 100 },     { "0.5k", 512 },
    };
    for (gsize i = 0; i < G_N_ELEMENTS(good); i++) {
        guint64 v = 1;
        g_autoptr(GError) error = NULL;
        g_assert_true(vd_parse_size(good[i].text, &v, &error));
        g_assert_no_error(error);
        g_assert_cmpuint(v, ==, good[i].value);
    }
    static const char *const bad[] = { "", "-1", "abc", "1X", "1.3", "16E", "1kk", "0.0001k" };
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        guint64 v;
        g_autoptr(GError) error = NULL;
        g_assert_false(vd_parse_size(bad[i], &v, &error));
        g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
        g_assert_nonnull(strstr(error->message, "invalid size"));
    }
}

static void test_options_parse(void)
{
    g_autoptr(VdOptions) opts = vd_options_new();
    g_autoptr(GError) error = NULL;
    g_assert_true(
        vd_options_parse(opts, "cluster_size=4k,backing_file=a,,b.img,lazy_refcounts", &error));
    g_assert_no_error(error);
    g_assert_cmpstr(vd_options_get(opts, "cluster_size"), ==, "4k");
    g_assert_cmpstr(vd_options_get(opts, "backing_file"), ==, "a,b.img");
    g_assert_cmpstr(vd_options_get(opts, "lazy_refcounts"), ==, "on");
    g_autoptr(GPtrArray) keys = vd_options_keys(opts);
    g_assert_cmpuint(keys->len, ==, 3);
    g_assert_cmpstr(keys->pdata[0], ==, "backing_file");
    g_assert_false(vd_options_parse(opts, "=x", &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
}

static void test_format_names(void)
{
    g_assert_cmpstr(vd_format_from_extension("/x/Disk.QCOW2"), ==, "qcow2");
    g_assert_cmpstr(vd_format_from_extension("a.img"), ==, "raw");
    g_assert_null(vd_format_from_extension("a.txt"));
    g_assert_true(vd_format_known("raw"));
    g_assert_false(vd_format_known("nonsense"));
}

/* ----- raw ----- */

static void test_raw_sparse_create(Fixture *fx, gconstpointer data)
{
    g_autofree char *path = path_in(fx, "a.raw");
    g_autoptr(VdImage) img = make_raw(path, 8 * MIB);
    g_assert_cmpuint(vd_image_size(img), ==, 8 * MIB);
    g_assert_cmpstr(vd_image_format(img), ==, "raw");
    struct stat st;
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_blocks, ==, 0);
    assert_reads(img, 0, MIB, 0);
}

static void test_raw_preallocation(Fixture *fx, gconstpointer data)
{
    for (int i = 0; i < 2; i++) {
        g_autofree char *path = path_in(fx, i == 0 ? "falloc.raw" : "full.raw");
        g_autoptr(VdOptions) opts = vd_options_new();
        vd_options_set(opts, "preallocation", i == 0 ? "falloc" : "full");
        g_autoptr(GError) error = NULL;
        g_assert_true(vd_image_create(path, "raw", 4 * MIB, opts, &error));
        g_assert_no_error(error);
        struct stat st;
        g_assert_cmpint(stat(path, &st), ==, 0);
        g_assert_cmpint(st.st_size, ==, 4 * MIB);
        g_assert_cmpint(st.st_blocks * 512, >=, 4 * MIB);
    }
    g_autofree char *bad = path_in(fx, "bad.raw");
    g_autoptr(VdOptions) opts = vd_options_new();
    vd_options_set(opts, "preallocation", "sometimes");
    g_autoptr(GError) error = NULL;
    g_assert_false(vd_image_create(bad, "raw", MIB, opts, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_assert_false(g_file_test(bad, G_FILE_TEST_EXISTS));
}

static void test_raw_unknown_option(Fixture *fx, gconstpointer data)
{
    g_autofree char *path = path_in(fx, "x.raw");
    g_autoptr(VdOptions) opts = vd_options_new();
    vd_options_set(opts, "cluster_size", "4k");
    g_autoptr(GError) error = NULL;
    g_assert_false(vd_image_create(path, "raw", MIB, opts, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "cluster_size"));
}

static void test_raw_read_write_status(Fixture *fx, gconstpointer data)
{
    g_autofree char *path = path_in(fx, "rw.raw");
    g_autoptr(VdImage) img = make_raw(path, 16 * MIB);
    write_pattern(img, 4 * MIB, MIB, 0xab);
    assert_reads(img, 4 * MIB, MIB, 0xab);
    assert_reads(img, 0, 4 * MIB, 0);

    VdBlockStatus st;
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_image_block_status(img, 0, 16 * MIB, TRUE, &st, &error));
    g_assert_no_error(error);
    g_assert_true(st.flags & VD_BLOCK_ZERO);
    g_assert_false(st.flags & VD_BLOCK_DATA);
    g_assert_cmpuint(st.length, ==, 4 * MIB);
    g_assert_true(vd_image_block_status(img, 4 * MIB, 12 * MIB, TRUE, &st, &error));
    g_assert_true(st.flags & VD_BLOCK_DATA);
    g_assert_cmpuint(st.length, ==, MIB);

    /* Zeroing with unmap punches the data out again. */
    g_assert_true(vd_image_write_zeroes(img, 4 * MIB, MIB, TRUE, &error));
    g_assert_no_error(error);
    assert_reads(img, 4 * MIB, MIB, 0);
    g_assert_true(vd_image_block_status(img, 0, 16 * MIB, TRUE, &st, &error));
    g_assert_false(st.flags & VD_BLOCK_DATA);
    g_assert_cmpuint(st.length, ==, 16 * MIB);
}

static void test_raw_out_of_range(Fixture *fx, gconstpointer data)
{
    g_autofree char *path = path_in(fx, "r.raw");
    g_autoptr(VdImage) img = make_raw(path, MIB);
    guint8 buf[512] = { 0 };
    g_autoptr(GError) error = NULL;
    g_assert_false(vd_image_read(img, MIB - 256, buf, sizeof buf, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, path));
}

static void test_raw_read_only(Fixture *fx, gconstpointer data)
{
    g_autofree char *path = path_in(fx, "ro.raw");
    g_clear_pointer(&(VdImage *){ make_raw(path, MIB) }, vd_image_unref);
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, "raw", 0, &error);
    g_assert_no_error(error);
    guint8 buf[512] = { 1 };
    g_assert_false(vd_image_write(img, 0, buf, sizeof buf, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
}

static void test_raw_resize(Fixture *fx, gconstpointer data)
{
    g_autofree char *path = path_in(fx, "grow.raw");
    g_autoptr(VdImage) img = make_raw(path, 2 * MIB);
    write_pattern(img, MIB, MIB, 7);
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_image_resize(img, 6 * MIB, FALSE, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(vd_image_size(img), ==, 6 * MIB);
    assert_reads(img, 2 * MIB, 4 * MIB, 0);
    assert_reads(img, MIB, MIB, 7);
    /* Shrinking needs the caller's consent. */
    g_assert_false(vd_image_resize(img, MIB, FALSE, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_true(vd_image_resize(img, MIB, TRUE, &error));
    g_assert_no_error(error);
    struct stat st;
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, MIB);
}

static void test_open_errors(Fixture *fx, gconstpointer data)
{
    g_autofree char *path = path_in(fx, "missing.img");
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, NULL, 0, &error);
    g_assert_null(img);
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_FOUND);
    g_assert_nonnull(strstr(error->message, path));
    g_clear_error(&error);
    g_assert_null(vd_image_open(fx->dir, "raw", 0, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_autofree char *raw = path_in(fx, "r.raw");
    g_clear_pointer(&(VdImage *){ make_raw(raw, MIB) }, vd_image_unref);
    g_assert_null(vd_image_open(raw, "nonsense", 0, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT);
}

static void test_probe_raw_fallback(Fixture *fx, gconstpointer data)
{
    g_autofree char *path = path_in(fx, "p.raw");
    g_clear_pointer(&(VdImage *){ make_raw(path, MIB) }, vd_image_unref);
    gboolean fell_back = FALSE;
    g_autoptr(GError) error = NULL;
    g_assert_cmpstr(vd_probe_file(path, &fell_back, &error), ==, "raw");
    g_assert_true(fell_back);
}

/* ----- copy engine ----- */

static void count_progress(guint64 done, guint64 total, gpointer data)
{
    guint64 *last = data;
    g_assert_cmpuint(done, >=, *last);
    g_assert_cmpuint(done, <=, total);
    *last = done;
}

static void test_convert_keeps_holes(Fixture *fx, gconstpointer data)
{
    g_autofree char *src_path = path_in(fx, "src.raw");
    g_autofree char *dst_path = path_in(fx, "dst.raw");
    g_autoptr(VdImage) src = make_raw(src_path, 32 * MIB + 4096);
    write_pattern(src, 0, MIB, 1);
    write_pattern(src, 8 * MIB, 3 * MIB, 2);
    write_pattern(src, 20 * MIB, MIB, 0); /* explicit zeroes become a hole */
    write_pattern(src, 32 * MIB, 4096, 3);

    VdConvertOptions opts;
    vd_convert_options_init(&opts);
    opts.target_format = "raw";
    guint64 last = 0;
    opts.progress = count_progress;
    opts.progress_data = &last;
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_convert(src, dst_path, &opts, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(last, ==, 32 * MIB + 4096);

    g_autoptr(VdImage) dst = vd_image_open(dst_path, "raw", 0, &error);
    g_assert_no_error(error);
    VdCompareResult res;
    g_assert_true(vd_compare(src, dst, TRUE, NULL, &res, &error));
    g_assert_true(res.identical);
    struct stat st;
    g_assert_cmpint(stat(dst_path, &st), ==, 0);
    g_assert_cmpint(st.st_blocks * 512, <=, 5 * MIB + 64 * 1024);
}

static void test_convert_cancel_removes_target(Fixture *fx, gconstpointer data)
{
    g_autofree char *src_path = path_in(fx, "src.raw");
    g_autofree char *dst_path = path_in(fx, "dst.raw");
    g_autoptr(VdImage) src = make_raw(src_path, 8 * MIB);
    write_pattern(src, 0, 8 * MIB, 9);
    g_autoptr(GCancellable) cancel = g_cancellable_new();
    g_cancellable_cancel(cancel);
    VdConvertOptions opts;
    vd_convert_options_init(&opts);
    opts.target_format = "raw";
    opts.cancellable = cancel;
    g_autoptr(GError) error = NULL;
    g_assert_false(vd_convert(src, dst_path, &opts, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_CANCELLED);
    g_assert_false(g_file_test(dst_path, G_FILE_TEST_EXISTS));
}

static void test_convert_refuses_own_source(Fixture *fx, gconstpointer data)
{
    g_autofree char *src_path = path_in(fx, "self.raw");
    g_autoptr(VdImage) src = make_raw(src_path, MIB);
    write_pattern(src, 0, 4096, 5);
    VdConvertOptions opts;
    vd_convert_options_init(&opts);
    opts.target_format = "raw";
    g_autoptr(GError) error = NULL;
    g_assert_false(vd_convert(src, src_path, &opts, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    assert_reads(src, 0, 4096, 5);
}

static void test_compare(Fixture *fx, gconstpointer data)
{
    g_autofree char *a_path = path_in(fx, "a.raw");
    g_autofree char *b_path = path_in(fx, "b.raw");
    g_autoptr(VdImage) a = make_raw(a_path, 4 * MIB);
    g_autoptr(VdImage) b = make_raw(b_path, 5 * MIB);
    write_pattern(a, MIB, 4096, 1);
    write_pattern(b, MIB, 4096, 1);
    VdCompareResult res;
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_compare(a, b, FALSE, NULL, &res, &error));
    g_assert_true(res.identical);
    g_assert_true(vd_compare(a, b, TRUE, NULL, &res, &error));
    g_assert_false(res.identical);
    write_pattern(b, MIB + 1024, 1, 2);
    g_assert_true(vd_compare(a, b, FALSE, NULL, &res, &error));
    g_assert_false(res.identical);
    g_assert_cmpuint(res.first_difference, ==, MIB + 1024);
    write_pattern(b, MIB + 1024, 1, 1);
    write_pattern(b, 4 * MIB + 512, 1, 3); /* past a's end */
    g_assert_true(vd_compare(a, b, FALSE, NULL, &res, &error));
    g_assert_false(res.identical);
    g_assert_cmpuint(res.first_difference, ==, 4 * MIB + 512);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/parse/size", test_parse_size);
    g_test_add_func("/parse/options", test_options_parse);
    g_test_add_func("/parse/format-names", test_format_names);
#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
    ADD("/raw/sparse-create", test_raw_sparse_create);
    ADD("/raw/preallocation", test_raw_preallocation);
    ADD("/raw/unknown-option", test_raw_unknown_option);
    ADD("/raw/read-write-status", test_raw_read_write_status);
    ADD("/raw/out-of-range", test_raw_out_of_range);
    ADD("/raw/read-only", test_raw_read_only);
    ADD("/raw/resize", test_raw_resize);
    ADD("/image/open-errors", test_open_errors);
    ADD("/image/probe-raw-fallback", test_probe_raw_fallback);
    ADD("/convert/keeps-holes", test_convert_keeps_holes);
    ADD("/convert/cancel-removes-target", test_convert_cancel_removes_target);
    ADD("/convert/refuses-own-source", test_convert_refuses_own_source);
    ADD("/compare/content", test_compare);
#undef ADD
    return g_test_run();
}
