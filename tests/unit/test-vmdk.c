/* Unit tests of the vmdk driver, with qemu-img as the oracle: what qemu-img
 * writes vdisk reads byte for byte, what vdisk writes qemu-img checks clean
 * and compares equal, snapshot chains read flattened, third-party fixtures
 * behave as their manifest says and damaged images fail with an error. */
#include "vdisk.h"
#include "vmdk.h"

#include <glib/gstdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test-util.h"

/* 65 MiB + 3.5 KiB: not a multiple of any grain. */
#define PATTERN_SIZE 68161024ull
#define LAST_SECTOR (PATTERN_SIZE - 512)

/* ----- the oracle ----- */

/* Run argv; returns the exit status (-1 when it did not exit normally). */
static int run(const char *const *argv, char **out)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *stdout_text = NULL, *stderr_text = NULL;
    int status;
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &stdout_text,
                      &stderr_text, &status, &error))
        g_error("cannot run %s: %s", argv[0], error->message);
    if (out != NULL)
        *out = g_strdup(stdout_text);
    if (!WIFEXITED(status))
        return -1;
    if (WEXITSTATUS(status) != 0 && g_test_verbose())
        g_printerr("%s: %s%s", argv[0], stdout_text, stderr_text);
    return WEXITSTATUS(status);
}

#define RUN(...)                                           \
    ({                                                     \
        const char *const argv_[] = { __VA_ARGS__, NULL }; \
        run(argv_, NULL);                                  \
    })

/* Data here and there, a zero run inside a grain, data in the last sector. */
static void make_pattern(const char *path)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_image_create(path, "raw", PATTERN_SIZE, NULL, &error));
    g_autoptr(VdImage) img = vd_image_open(path, "raw", VD_OPEN_READ_WRITE, &error);
    g_assert_no_error(error);
    guint8 buf[100000];
    for (guint i = 0; i < 40; i++) {
        guint64 off = (guint64)i * 1637 * 1024 + i * 512 + 7;
        for (gsize j = 0; j < sizeof buf; j++)
            buf[j] = (guint8)((j * 31 + i * 7) ^ (j >> 9));
        memset(buf + 3000, 0, 5000);
        g_assert_true(vd_image_write(img, off, buf, sizeof buf, &error));
    }
    memset(buf, 91, 3584);
    g_assert_true(vd_image_write(img, PATTERN_SIZE - 3584, buf, 3584, &error));
    g_assert_no_error(error);
}

static guint8 *read_all(VdImage *img)
{
    g_autoptr(GError) error = NULL;
    guint64 size = vd_image_size(img);
    guint8 *buf = g_malloc(size);
    g_assert_true(vd_image_read(img, 0, buf, size, &error));
    g_assert_no_error(error);
    return buf;
}

static void assert_same_content(const char *raw_path, const char *vmdk_path)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) raw = vd_image_open(raw_path, "raw", 0, &error);
    g_autoptr(VdImage) vmdk = vd_image_open(vmdk_path, "vmdk", 0, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(vd_image_size(vmdk), ==, vd_image_size(raw));
    VdCompareResult res;
    g_assert_true(vd_compare(raw, vmdk, TRUE, NULL, &res, &error));
    g_assert_no_error(error);
    if (!res.identical)
        g_error("%s differs from %s at byte %" G_GUINT64_FORMAT, vmdk_path, raw_path,
                res.first_difference);
}

static const char *const subformats[] = {
    "monolithicSparse",   "monolithicFlat",  "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat", "streamOptimized",
};

/* ----- qemu-img writes, vdisk reads ----- */

static void test_qemu_written(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *src = path_in(fx, "src.raw");
    make_pattern(src);
    for (gsize i = 0; i < G_N_ELEMENTS(subformats); i++) {
        g_autofree char *name = g_strdup_printf("q-%s.vmdk", subformats[i]);
        g_autofree char *dst = path_in(fx, name);
        g_autofree char *opt = g_strdup_printf("subformat=%s", subformats[i]);
        g_assert_cmpint(RUN("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", opt, src, dst),
                        ==, 0);
        assert_same_content(src, dst);
        g_autoptr(GError) error = NULL;
        g_autoptr(VdImage) img = vd_image_open(dst, NULL, 0, &error);
        g_assert_no_error(error);
        g_assert_cmpstr(vd_image_format(img), ==, "vmdk");
        g_autoptr(VdImageInfo) info = vd_image_get_info(img, &error);
        g_assert_no_error(error);
        gboolean flat = strstr(subformats[i], "Flat") != NULL;
        g_assert_cmpuint(info->cluster_size, ==, flat ? 0 : 65536);
        const char *type = NULL;
        g_assert_true(g_variant_lookup(info->format_specific, "create-type", "&s", &type));
        g_assert_cmpstr(type, ==, subformats[i]);
    }
}

static void test_qemu_empty(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    for (gsize i = 0; i < G_N_ELEMENTS(subformats); i++) {
        g_autofree char *name = g_strdup_printf("e-%s.vmdk", subformats[i]);
        g_autofree char *dst = path_in(fx, name);
        g_autofree char *opt = g_strdup_printf("subformat=%s", subformats[i]);
        g_assert_cmpint(RUN("qemu-img", "create", "-q", "-f", "vmdk", "-o", opt, dst, "5M"), ==, 0);
        g_autoptr(GError) error = NULL;
        g_autoptr(VdImage) img = vd_image_open(dst, "vmdk", 0, &error);
        g_assert_no_error(error);
        g_assert_cmpuint(vd_image_size(img), ==, 5u << 20);
        /* qemu allocates the first block of a flat file; sparse ones hold nothing */
        VdBlockStatus st;
        g_assert_true(vd_image_block_status(img, 0, 5u << 20, TRUE, &st, &error));
        if (strstr(subformats[i], "Flat") == NULL) {
            g_assert_cmpuint(st.length, ==, 5u << 20);
            g_assert_false(st.flags & VD_BLOCK_DATA);
        }
        g_autofree guint8 *buf = read_all(img);
        g_assert_true(vd_buffer_is_zero(buf, 5u << 20));
    }
}

/* ----- vdisk writes, qemu-img checks ----- */

static void convert_to_vmdk(const char *src, const char *dst, const char *subformat,
                            gboolean compress)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) in = vd_image_open(src, NULL, 0, &error);
    g_assert_no_error(error);
    g_autoptr(VdOptions) opts = vd_options_new();
    vd_options_set(opts, "subformat", subformat);
    VdConvertOptions co;
    vd_convert_options_init(&co);
    co.target_format = "vmdk";
    co.create_options = opts;
    co.compress = compress;
    g_assert_true(vd_convert(in, dst, &co, &error));
    g_assert_no_error(error);
}

static void qemu_agrees(const char *raw, const char *vmdk)
{
    g_assert_cmpint(RUN("qemu-img", "check", "-q", "-f", "vmdk", vmdk), ==, 0);
    g_assert_cmpint(RUN("qemu-img", "compare", "-q", "-f", "raw", "-F", "vmdk", raw, vmdk), ==, 0);
}

static void test_vdisk_written(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *src = path_in(fx, "src.raw");
    make_pattern(src);
    for (gsize i = 0; i < G_N_ELEMENTS(subformats); i++) {
        g_autofree char *name = g_strdup_printf("v-%s.vmdk", subformats[i]);
        g_autofree char *dst = path_in(fx, name);
        convert_to_vmdk(src, dst, subformats[i], FALSE);
        qemu_agrees(src, dst);
        assert_same_content(src, dst);
    }
    /* -c: grains deflated on the copy engine's workers. */
    g_autofree char *packed = path_in(fx, "c.vmdk");
    convert_to_vmdk(src, packed, "streamOptimized", TRUE);
    qemu_agrees(src, packed);
}

static void test_create_options(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *path = path_in(fx, "o.vmdk");
    g_autoptr(GError) error = NULL;
    g_autoptr(VdOptions) opts = vd_options_new();
    g_assert_true(vd_options_parse(opts,
                                   "adapter_type=lsilogic,compat6=on,zeroed_grain=on,"
                                   "toolsversion=1234",
                                   &error));
    g_assert_true(vd_image_create(path, "vmdk", 100u << 20, opts, &error));
    g_assert_no_error(error);
    g_autofree char *text = NULL;
    g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
    const char *desc = text + 512;
    g_assert_nonnull(strstr(desc, "ddb.virtualHWVersion = \"6\""));
    g_assert_nonnull(strstr(desc, "ddb.adapterType = \"lsilogic\""));
    g_assert_nonnull(strstr(desc, "ddb.geometry.cylinders = \"12\""));
    g_assert_nonnull(strstr(desc, "ddb.geometry.heads = \"255\""));
    g_assert_nonnull(strstr(desc, "ddb.toolsVersion = \"1234\""));
    g_assert_nonnull(strstr(desc, "parentCID=ffffffff"));
    g_assert_cmpint(RUN("qemu-img", "check", "-q", "-f", "vmdk", path), ==, 0);

    /* zeroed grains: a whole-grain zero write stores no data. */
    g_autoptr(VdImage) img = vd_image_open(path, "vmdk", VD_OPEN_READ_WRITE, &error);
    g_assert_no_error(error);
    guint8 buf[65536];
    memset(buf, 5, sizeof buf);
    g_assert_true(vd_image_write(img, 0, buf, sizeof buf, &error));
    g_assert_true(vd_image_write(img, 65536, buf, sizeof buf, &error));
    g_assert_true(vd_image_write_zeroes(img, 65536, 65536, TRUE, &error));
    g_assert_true(vd_image_write_zeroes(img, 100, 50, TRUE, &error));
    g_assert_no_error(error);
    VdBlockStatus st;
    g_assert_true(vd_image_block_status(img, 65536, 65536, FALSE, &st, &error));
    g_assert_cmpuint(st.flags & (VD_BLOCK_ZERO | VD_BLOCK_ALLOCATED), ==,
                     VD_BLOCK_ZERO | VD_BLOCK_ALLOCATED);
    g_clear_pointer(&img, vd_image_unref);
    g_assert_cmpint(RUN("qemu-img", "check", "-q", "-f", "vmdk", path), ==, 0);
    g_autofree char *expect = path_in(fx, "expect.raw");
    g_assert_true(vd_image_create(expect, "raw", 100u << 20, NULL, &error));
    g_autoptr(VdImage) raw = vd_image_open(expect, "raw", VD_OPEN_READ_WRITE, &error);
    memset(buf + 100, 0, 50);
    g_assert_true(vd_image_write(raw, 0, buf, sizeof buf, &error));
    g_assert_no_error(error);
    g_clear_pointer(&raw, vd_image_unref);
    g_assert_cmpint(RUN("qemu-img", "compare", "-q", "-f", "raw", "-F", "vmdk", expect, path), ==,
                    0);

    /* hwversion and compat6 disagree: refused. */
    g_autoptr(VdOptions) bad = vd_options_new();
    vd_options_set(bad, "hwversion", "7");
    vd_options_set(bad, "compat6", "on");
    g_autofree char *p2 = path_in(fx, "bad.vmdk");
    g_assert_false(vd_image_create(p2, "vmdk", 1u << 20, bad, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
}

/* ----- snapshot chains ----- */

static void write_bytes(VdImage *img, guint64 off, gsize len, guint8 byte, guint8 *mirror)
{
    g_autoptr(GError) error = NULL;
    g_autofree guint8 *buf = g_malloc(len);
    memset(buf, byte, len);
    g_assert_true(vd_image_write(img, off, buf, len, &error));
    g_assert_no_error(error);
    memset(mirror + off, byte, len);
}

static void create_delta(const char *path, const char *parent, const char *subformat)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdOptions) opts = vd_options_new();
    vd_options_set(opts, "backing_file", parent);
    vd_options_set(opts, "subformat", subformat);
    g_assert_true(vd_image_create(path, "vmdk", 0, opts, &error));
    g_assert_no_error(error);
}

static void test_chain(Fixture *fx, gconstpointer data)
{
    const guint64 size = 9u << 20;
    g_autofree guint8 *expect = g_malloc0(size);
    g_autoptr(GError) error = NULL;
    g_autofree char *base = path_in(fx, "base.vmdk");
    g_assert_true(vd_image_create(base, "vmdk", size, NULL, &error));
    g_autoptr(VdImage) img = vd_image_open(base, "vmdk", VD_OPEN_READ_WRITE, &error);
    g_assert_no_error(error);
    write_bytes(img, 0, size, 1, expect);
    g_clear_pointer(&img, vd_image_unref);
    const char *layers[] = { "d1.vmdk", "d2.vmdk", "d3.vmdk" };
    const char *kinds[] = { "monolithicSparse", "twoGbMaxExtentSparse", "monolithicSparse" };
    const char *parent = "base.vmdk";
    for (guint i = 0; i < G_N_ELEMENTS(layers); i++) {
        g_autofree char *path = path_in(fx, layers[i]);
        create_delta(path, parent, kinds[i]);
        img = vd_image_open(path, "vmdk", VD_OPEN_READ_WRITE, &error);
        g_assert_no_error(error);
        /* partial grains (copied up from the parent), whole grains, runs */
        write_bytes(img, 1000 + i * 70000, 3000, (guint8)(10 + i), expect);
        write_bytes(img, (2u << 20) + i * 65536, 3 * 65536, (guint8)(20 + i), expect);
        write_bytes(img, size - 512, 512, (guint8)(30 + i), expect);
        g_assert_true(vd_image_write_zeroes(img, (5u << 20) + i * 4096, 4096, TRUE, &error));
        memset(expect + (5u << 20) + i * 4096, 0, 4096);
        g_assert_no_error(error);
        g_clear_pointer(&img, vd_image_unref);
        parent = layers[i];
    }
    g_autofree char *top = path_in(fx, "d3.vmdk");
    img = vd_image_open(top, NULL, 0, &error);
    g_assert_no_error(error);
    g_autofree guint8 *got = read_all(img);
    g_assert_true(memcmp(got, expect, size) == 0);
    /* the delta records its parent's CID */
    VdCheckResult res;
    g_assert_true(vd_image_check(img, VD_CHECK_REPAIR_NONE, &res, &error));
    g_assert_cmpuint(res.corruptions + res.check_errors, ==, 0);
    vd_check_result_clear(&res);
    g_clear_pointer(&img, vd_image_unref);
    if (!have_qemu())
        return;
    g_autofree char *flat = path_in(fx, "flat.raw");
    g_assert_true(g_file_set_contents(flat, (const char *)expect, (gssize)size, NULL));
    g_assert_cmpint(RUN("qemu-img", "compare", "-q", "-f", "raw", "-F", "vmdk", flat, top), ==, 0);
    g_assert_cmpint(RUN("qemu-img", "check", "-q", "-f", "vmdk", top), ==, 0);
}

static guint32 image_cid(const char *path)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, "vmdk", VD_OPEN_NO_BACKING, &error);
    g_assert_no_error(error);
    g_autoptr(VdImageInfo) info = vd_image_get_info(img, &error);
    g_assert_no_error(error);
    guint32 cid;
    g_assert_true(g_variant_lookup(info->format_specific, "cid", "u", &cid));
    return cid;
}

/* Open path with parent named as its parent (NULL: parentFileNameHint). */
static VdImage *open_on(const char *path, const char *parent, GError **error)
{
    g_autoptr(VdOptions) opts = vd_options_new();
    if (parent != NULL)
        vd_options_set(opts, "backing", parent);
    return vd_image_open_opts(path, NULL, 0, opts, NULL, error);
}

/* A delta opens only on the parent whose CID it records: another disk, one
 * written since, or one of another format is refused with both files and
 * both CIDs named. A byte-for-byte copy of the parent is the parent. */
static void test_parent_cid(Fixture *fx, gconstpointer data)
{
    const guint64 size = 2u << 20;
    g_autofree guint8 *expect = g_malloc0(size);
    g_autoptr(GError) error = NULL;
    g_autofree char *base = path_in(fx, "base.vmdk");
    g_autofree char *other = path_in(fx, "other.vmdk");
    g_autofree char *copy = path_in(fx, "copy.vmdk");
    g_autofree char *raw = path_in(fx, "p.raw");
    g_autofree char *delta = path_in(fx, "delta.vmdk");
    g_assert_true(vd_image_create(base, "vmdk", size, NULL, &error));
    g_assert_true(vd_image_create(other, "vmdk", size, NULL, &error));
    g_assert_true(vd_image_create(raw, "raw", size, NULL, &error));
    g_assert_no_error(error);
    {
        g_autoptr(VdImage) img = vd_image_open(base, "vmdk", VD_OPEN_READ_WRITE, &error);
        g_assert_no_error(error);
        write_bytes(img, 0, size, 7, expect);
    }
    create_delta(delta, "base.vmdk", "monolithicSparse");
    {
        g_autoptr(VdImage) img = vd_image_open(delta, "vmdk", VD_OPEN_READ_WRITE, &error);
        g_assert_no_error(error);
        write_bytes(img, 4096, 100, 8, expect);
    }
    guint32 base_cid = image_cid(base), other_cid = image_cid(other);
    g_assert_cmphex(base_cid, !=, other_cid);

    g_autofree char *want = g_strdup_printf("parentCID is %08x", base_cid);
    g_autofree char *have = g_strdup_printf("%s has CID %08x", other, other_cid);
    g_autoptr(VdImage) wrong = open_on(delta, other, &error);
    g_assert_null(wrong);
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, delta));
    g_assert_nonnull(strstr(error->message, want));
    g_assert_nonnull(strstr(error->message, have));
    g_clear_error(&error);

    g_autoptr(VdImage) not_vmdk = open_on(delta, raw, &error);
    g_assert_null(not_vmdk);
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "raw image"));
    g_clear_error(&error);

    g_autofree char *bytes = NULL;
    gsize len;
    g_assert_true(g_file_get_contents(base, &bytes, &len, NULL));
    g_assert_true(g_file_set_contents(copy, bytes, (gssize)len, NULL));
    {
        g_autoptr(VdImage) img = open_on(delta, copy, &error);
        g_assert_no_error(error);
        g_autofree guint8 *got = read_all(img);
        g_assert_true(memcmp(got, expect, size) == 0);
    }

    /* Writing the parent gives it a new CID: its delta no longer fits. */
    {
        g_autoptr(VdImage) img = vd_image_open(base, "vmdk", VD_OPEN_READ_WRITE, &error);
        g_assert_no_error(error);
        write_bytes(img, 0, 512, 9, expect);
    }
    g_assert_cmphex(image_cid(base), !=, base_cid);
    g_autoptr(VdImage) changed = open_on(delta, NULL, &error);
    g_assert_null(changed);
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, want));
    g_assert_nonnull(strstr(error->message, "base.vmdk"));
    g_clear_error(&error);
    /* The delta alone still opens, for info and check. */
    g_autoptr(VdImage) alone = vd_image_open(delta, NULL, VD_OPEN_NO_BACKING, &error);
    g_assert_no_error(error);
}

/* ----- streamOptimized writing ----- */

static void test_stream_writer(Fixture *fx, gconstpointer data)
{
    const guint64 size = (3u << 20) + 1536;
    g_autofree guint8 *expect = g_malloc0(size);
    g_autoptr(GError) error = NULL;
    g_autofree char *path = path_in(fx, "s.vmdk");
    g_autoptr(VdOptions) opts = vd_options_new();
    vd_options_set(opts, "subformat", "streamOptimized");
    g_assert_true(vd_image_create(path, "vmdk", size, opts, &error));
    g_autoptr(VdImage) img = vd_image_open(path, "vmdk", VD_OPEN_READ_WRITE, &error);
    g_assert_no_error(error);
    g_assert_true(vd_image_needs_sequential_writes(img));
    write_bytes(img, 100, 1000, 1, expect);
    write_bytes(img, 5000, 1000, 2, expect);    /* same grain, later */
    g_assert_true(vd_image_flush(img, &error)); /* a flush mid-grain... */
    write_bytes(img, 9000, 1000, 3, expect);    /* ...and the grain goes on */
    write_bytes(img, 65536 * 3 + 17, 200000, 4, expect);
    write_bytes(img, size - 512, 512, 5, expect);
    /* going back is refused with a clear error */
    guint8 byte = 9;
    g_assert_false(vd_image_write(img, 0, &byte, 1, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
    g_clear_error(&error);
    g_autofree guint8 *got = read_all(img);
    g_assert_true(memcmp(got, expect, size) == 0);
    g_clear_pointer(&img, vd_image_unref);
    img = vd_image_open(path, "vmdk", 0, &error);
    g_assert_no_error(error);
    g_free(got);
    got = read_all(img);
    g_assert_true(memcmp(got, expect, size) == 0);
    g_clear_pointer(&img, vd_image_unref);
    /* a stream that holds data cannot be opened for writing */
    g_assert_null(vd_image_open(path, "vmdk", VD_OPEN_READ_WRITE, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
    if (!have_qemu())
        return;
    g_autofree char *flat = path_in(fx, "flat.raw");
    g_assert_true(g_file_set_contents(flat, (const char *)expect, (gssize)size, NULL));
    qemu_agrees(flat, path);
}

/* ----- descriptors ----- */

static void test_descriptor_parse(void)
{
    static const char text[] =
        "# Disk DescriptorFile\r\nversion=1 \r\nCID=1234abcd\r\nparentCID=ffffffff\r\n"
        "createType=\"custom\"\r\n# RW 1 FLAT \"commented.vmdk\" 0\r\n"
        "RW 2048 FLAT \"with space-flat.vmdk\" 16\r\nRDONLY 100 ZERO\r\n"
        "RW 4096 SPARSE \"sub/dir.vmdk\"\r\nddb.adapterType=\"ide\"\r\n";
    g_autoptr(GError) error = NULL;
    g_autoptr(VmdkDescriptor) d = vmdk_descriptor_parse(text, sizeof text - 1, "t", FALSE, &error);
    g_assert_no_error(error);
    g_assert_cmphex(d->cid, ==, 0x1234abcd);
    g_assert_cmphex(d->parent_cid, ==, 0xffffffff);
    g_assert_cmpstr(d->create_type, ==, "custom");
    g_assert_cmpuint(d->extents->len, ==, 3);
    VmdkExtentLine *e0 = d->extents->pdata[0], *e1 = d->extents->pdata[1];
    g_assert_cmpstr(e0->filename, ==, "with space-flat.vmdk");
    g_assert_cmpuint(e0->offset, ==, 16);
    g_assert_cmpint(e1->type, ==, VMDK_EXTENT_ZERO);
    g_assert_cmpint(e1->access, ==, VMDK_ACCESS_RDONLY);

    /* unsafe names */
    const char *bad[] = { "../x.vmdk",     "a/../../x", "/etc/shadow", "\\\\.\\PhysicalDrive2",
                          "C:\\disk.vmdk", "" };
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_assert_false(vmdk_extent_name_is_safe(bad[i], "t", &error));
        g_assert_nonnull(error);
        g_clear_error(&error);
    }
    g_assert_true(vmdk_extent_name_is_safe("sub/ok..name.vmdk", "t", &error));

    /* bounds: too long, too many extents, malformed sizes */
    GString *many = g_string_new("# Disk DescriptorFile\n");
    for (guint i = 0; i <= VMDK_MAX_EXTENTS; i++)
        g_string_append(many, "RW 1 ZERO\n");
    g_assert_null(vmdk_descriptor_parse(many->str, many->len, "t", FALSE, &error));
    g_clear_error(&error);
    g_string_free(many, TRUE);
    g_autofree char *longline = g_strnfill(VMDK_MAX_LINE + 10, 'a');
    g_autofree char *t2 = g_strdup_printf("# Disk DescriptorFile\n%s\nRW 1 ZERO\n", longline);
    g_assert_null(vmdk_descriptor_parse(t2, strlen(t2), "t", FALSE, &error));
    g_clear_error(&error);
    const char *t3 = "# Disk DescriptorFile\nRW -5 FLAT \"x\" 0\n";
    g_assert_null(vmdk_descriptor_parse(t3, strlen(t3), "t", FALSE, &error));
    g_clear_error(&error);
    const char *t4 = "# Disk DescriptorFile\nRW 5 VMFSRDM \"x\"\n";
    g_assert_null(vmdk_descriptor_parse(t4, strlen(t4), "t", FALSE, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT);
    g_clear_error(&error);

    g_autofree char *swapped = vmdk_descriptor_replace_cid(text, sizeof text - 1, 0x42);
    g_assert_nonnull(strstr(swapped, "CID=00000042\r\nparentCID=ffffffff"));
}

/* A hand-written descriptor mixing FLAT (with an offset), ZERO and SPARSE
 * (made by qemu-img). */
static void test_multi_extent(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autoptr(GError) error = NULL;
    g_autofree char *flat = path_in(fx, "data.bin");
    g_autofree guint8 *bytes = g_malloc(1u << 20);
    for (guint i = 0; i < 1u << 20; i++)
        bytes[i] = (guint8)(i * 13 + 1);
    g_assert_true(g_file_set_contents(flat, (const char *)bytes, 1 << 20, NULL));
    g_autofree char *sparse = path_in(fx, "part.vmdk");
    g_assert_cmpint(RUN("qemu-img", "create", "-q", "-f", "vmdk", sparse, "1M"), ==, 0);
    g_assert_cmpint(RUN("qemu-io", "-f", "vmdk", "-c", "write -P 66 4096 8192", sparse), ==, 0);
    g_autofree char *desc = path_in(fx, "multi.vmdk");
    const char *text =
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        "createType=\"custom\"\n\n"
        "RW 1024 FLAT \"data.bin\" 1024\nRW 2048 ZERO\nRW 2048 SPARSE \"part.vmdk\"\n";
    g_assert_true(g_file_set_contents(desc, text, -1, NULL));
    g_autoptr(VdImage) img = vd_image_open(desc, NULL, 0, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(vd_image_size(img), ==, 5u << 19);
    g_autofree guint8 *got = read_all(img);
    g_assert_true(memcmp(got, bytes + (1u << 19), 1u << 19) == 0);
    for (guint i = 1u << 19; i < (3u << 19) + 4096; i++)
        g_assert_cmpuint(got[i], ==, 0);
    for (guint i = (3u << 19) + 4096; i < (3u << 19) + 12288; i++)
        g_assert_cmpuint(got[i], ==, 66);
    VdBlockStatus st;
    g_assert_true(vd_image_block_status(img, 1u << 19, 1u << 20, FALSE, &st, &error));
    g_assert_cmpuint(st.length, ==, 1u << 20);
    g_assert_true(st.flags & VD_BLOCK_ZERO);
    /* qemu is no oracle here: it skips ZERO and RDONLY extent lines. */
}

/* ----- damaged images ----- */

static void assert_open_or_read_fails(const char *path)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, "vmdk", 0, &error);
    if (img != NULL) {
        guint64 size = vd_image_size(img);
        g_autofree guint8 *buf = g_malloc(MIN(size, 64u << 20));
        gboolean ok = TRUE;
        for (guint64 off = 0; ok && off < size; off += 64u << 20)
            ok = vd_image_read(img, off, buf, MIN(size - off, 64u << 20), &error);
        g_assert_false(ok);
    }
    g_assert_nonnull(error);
    g_assert_cmpstr(error->message, !=, "");
}

static void patch(const char *path, guint64 offset, const void *bytes, gsize len)
{
    FILE *f = fopen(path, "r+b");
    g_assert_nonnull(f);
    g_assert_cmpint(fseek(f, (long)offset, SEEK_SET), ==, 0);
    g_assert_cmpuint(fwrite(bytes, 1, len, f), ==, len);
    fclose(f);
}

static guint32 le32_at(const char *path, guint64 offset)
{
    g_autofree char *data = NULL;
    gsize len;
    g_assert_true(g_file_get_contents(path, &data, &len, NULL));
    g_assert_cmpuint(offset + 4, <=, len);
    const guint8 *p = (const guint8 *)data + offset;
    return (guint32)p[0] | (guint32)p[1] << 8 | (guint32)p[2] << 16 | (guint32)p[3] << 24;
}

static char *damaged_copy(Fixture *fx, const char *src, const char *name)
{
    char *dst = path_in(fx, name);
    g_autofree char *data = NULL;
    gsize len;
    g_assert_true(g_file_get_contents(src, &data, &len, NULL));
    g_assert_true(g_file_set_contents(dst, data, (gssize)len, NULL));
    return dst;
}

static void test_corrupt(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *good = path_in(fx, "good.vmdk");
    g_assert_true(vd_image_create(good, "vmdk", 4u << 20, NULL, &error));
    g_autoptr(VdImage) img = vd_image_open(good, "vmdk", VD_OPEN_READ_WRITE, &error);
    g_assert_no_error(error);
    guint8 buf[65536];
    memset(buf, 7, sizeof buf);
    for (guint i = 0; i < 4; i++)
        g_assert_true(vd_image_write(img, i * 65536 * 3, buf, sizeof buf, &error));
    g_clear_pointer(&img, vd_image_unref);

    g_autofree char *t = damaged_copy(fx, good, "trunc.vmdk");
    g_assert_cmpint(truncate(t, 700), ==, 0);
    assert_open_or_read_fails(t);

    /* first grain table entry far past the end of the file */
    g_autofree char *g = damaged_copy(fx, good, "gte.vmdk");
    guint32 gd = le32_at(g, 56), gt = le32_at(g, (guint64)gd * 512);
    guint32 far = 0x7fffff00;
    patch(g, (guint64)gt * 512, &far, 4);
    assert_open_or_read_fails(g);

    /* grain directory outside the file */
    g_autofree char *d = damaged_copy(fx, good, "gd.vmdk");
    guint64 gd_far = 1ull << 40;
    patch(d, 56, &gd_far, 8);
    assert_open_or_read_fails(d);

    /* huge capacity: "L1 size too big" */
    g_autofree char *c = damaged_copy(fx, good, "cap.vmdk");
    guint64 cap = 1ull << 60;
    patch(c, 12, &cap, 8);
    assert_open_or_read_fails(c);

    /* grain size not a power of two, and too many grain table entries */
    g_autofree char *s = damaged_copy(fx, good, "grain.vmdk");
    guint64 grain = 100;
    patch(s, 20, &grain, 8);
    assert_open_or_read_fails(s);
    g_autofree char *n = damaged_copy(fx, good, "gtes.vmdk");
    guint32 gtes = 4096;
    patch(n, 44, &gtes, 4);
    assert_open_or_read_fails(n);

    /* descriptors naming files outside their folder or a host device */
    const char *descs[] = {
        "RW 999999999999 FLAT \"../../../../etc/shadow\" 0",
        "RW 8 FLAT \"/etc/passwd\" 0",
        "RW 1000000 FLAT \"\\\\.\\PhysicalDrive2\" 0",
        "RW 8 FLAT \"missing.bin\" 0",
        "RW 8 SPARSE \"good.vmdk\"\nRW 8 SPARSE \"good.vmdk\"\nRW 8 COWD \"x\"",
    };
    for (gsize i = 0; i < G_N_ELEMENTS(descs); i++) {
        g_autofree char *text = g_strdup_printf(
            "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n%s\n", descs[i]);
        g_autofree char *p = path_in(fx, "desc.vmdk");
        g_assert_true(g_file_set_contents(p, text, -1, NULL));
        assert_open_or_read_fails(p);
    }
    const char *full = "# Disk DescriptorFile\nversion=1\ncreateType=\"fullDevice\"\n"
                       "RW 1000000 FLAT \"disk.img\" 0\n";
    g_autofree char *fd = path_in(fx, "full.vmdk");
    g_assert_true(g_file_set_contents(fd, full, -1, NULL));
    g_assert_null(vd_image_open(fd, "vmdk", 0, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT);
    g_assert_nonnull(strstr(error->message, "fullDevice"));
    g_clear_error(&error);

    /* a descriptor-sized file that is not one, and one that is too big */
    g_autofree char *junk = path_in(fx, "junk.vmdk");
    g_autofree char *big = g_strnfill(100000, '#');
    g_assert_true(g_file_set_contents(junk, big, -1, NULL));
    assert_open_or_read_fails(junk);
}

static void test_stream_corrupt(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *good = path_in(fx, "s.vmdk");
    g_autoptr(VdOptions) opts = vd_options_new();
    vd_options_set(opts, "subformat", "streamOptimized");
    g_assert_true(vd_image_create(good, "vmdk", 1u << 20, opts, &error));
    g_autoptr(VdImage) img = vd_image_open(good, "vmdk", VD_OPEN_READ_WRITE, &error);
    guint8 buf[65536];
    for (gsize i = 0; i < sizeof buf; i++)
        buf[i] = (guint8)(i * 7);
    g_assert_true(vd_image_write(img, 0, buf, sizeof buf, &error));
    g_assert_no_error(error);
    g_clear_pointer(&img, vd_image_unref);
    /* the first grain's marker starts the data area (sector 128) */
    g_autofree char *a = damaged_copy(fx, good, "size.vmdk");
    guint32 size = 0x7fffffff;
    patch(a, 128 * 512 + 8, &size, 4);
    assert_open_or_read_fails(a);
    g_autofree char *b = damaged_copy(fx, good, "data.vmdk");
    patch(b, 128 * 512 + 14, "garbage!", 8);
    assert_open_or_read_fails(b);
    /* no footer */
    g_autofree char *c = damaged_copy(fx, good, "nofooter.vmdk");
    struct stat st;
    g_assert_cmpint(stat(c, &st), ==, 0);
    g_assert_cmpint(truncate(c, st.st_size - 1024), ==, 0);
    assert_open_or_read_fails(c);
}

/* ----- seSparse (read only) ----- */

static void put64(guint8 *p, guint64 v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (guint8)(v >> (8 * i));
}

/* A tiny seSparse extent laid out by hand: header, volatile header,
 * directory, one grain table, two grains. */
static void test_sesparse(Fixture *fx, gconstpointer data)
{
    const gsize size = (67 + 16) * 512;
    g_autofree guint8 *f = g_malloc0(size);
    put64(f + 0, 0xcafebabe);
    put64(f + 8, 0x0000000200000001ull);
    put64(f + 16, 16384); /* capacity: 8 MiB */
    put64(f + 24, 8);     /* grain: 4 KiB */
    put64(f + 32, 64);    /* grain table: 32 KiB */
    put64(f + 80, 1);     /* volatile header */
    put64(f + 128, 2);    /* directory, one sector */
    put64(f + 136, 1);
    put64(f + 144, 3); /* grain tables */
    put64(f + 152, 64);
    put64(f + 192, 67); /* grains */
    put64(f + 200, 16);
    put64(f + 512, 0xcafecafe);
    put64(f + 2 * 512, 0x1000000000000000ull);
    put64(f + 3 * 512 + 0 * 8, 0x3000000000000000ull); /* grain 0: stored grain 0 */
    put64(f + 3 * 512 + 1 * 8, 0x2000000000000000ull); /* grain 1: zero */
    put64(f + 3 * 512 + 5 * 8, 0x3001000000000000ull); /* grain 5: stored grain 1 */
    memset(f + 67 * 512, 0xa1, 4096);
    memset(f + 67 * 512 + 4096, 0xb2, 4096);
    g_autofree char *ext = path_in(fx, "se-sesparse.vmdk");
    g_assert_true(g_file_set_contents(ext, (const char *)f, (gssize)size, NULL));
    g_autofree char *desc = path_in(fx, "se.vmdk");
    const char *text = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
                       "createType=\"seSparse\"\nRW 16384 SESPARSE \"se-sesparse.vmdk\"\n";
    g_assert_true(g_file_set_contents(desc, text, -1, NULL));
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(desc, NULL, 0, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(vd_image_size(img), ==, 8u << 20);
    g_autofree guint8 *got = read_all(img);
    for (guint i = 0; i < 8u << 20; i++) {
        guint8 want = i < 4096 ? 0xa1 : (i >= 5 * 4096 && i < 6 * 4096) ? 0xb2 : 0;
        if (got[i] != want)
            g_error("byte %u is %02x, expected %02x", i, got[i], want);
    }
    VdBlockStatus st;
    g_assert_true(vd_image_block_status(img, 4096, 4096, FALSE, &st, &error));
    g_assert_cmpuint(st.flags & (VD_BLOCK_ZERO | VD_BLOCK_ALLOCATED), ==,
                     VD_BLOCK_ZERO | VD_BLOCK_ALLOCATED);
    g_assert_true(vd_image_block_status(img, 8192, 4096 * 3, FALSE, &st, &error));
    g_assert_false(st.flags & VD_BLOCK_ALLOCATED);
    g_assert_cmpuint(st.length, ==, 4096 * 3);
    g_clear_pointer(&img, vd_image_unref);
    /* read only, as in qemu */
    g_assert_null(vd_image_open(desc, NULL, VD_OPEN_READ_WRITE, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
    g_clear_error(&error);

    /* a grain number past the grain area */
    put64(f + 3 * 512 + 5 * 8, 0x3fff000000000fffull);
    g_assert_true(g_file_set_contents(ext, (const char *)f, (gssize)size, NULL));
    assert_open_or_read_fails(desc);
    /* a journal to replay */
    f[512 + 24] = 1;
    g_assert_true(g_file_set_contents(ext, (const char *)f, (gssize)size, NULL));
    assert_open_or_read_fails(desc);
}

/* ----- third-party fixtures ----- */

static char *fixtures_dir(void)
{
    const char *env = g_getenv("VDISK_FIXTURES");
    if (env != NULL)
        return g_strdup(env);
    const char *src = g_getenv("G_TEST_SRCDIR");
    g_autofree char *guess =
        g_build_filename(src != NULL ? src : ".", "..", "..", "shared", "fixtures", NULL);
    if (g_file_test(guess, G_FILE_TEST_IS_DIR))
        return g_steal_pointer(&guess);
    return g_strdup("/work/shared/fixtures");
}

static gboolean unpack(const char *src, const char *dst)
{
    const char *tool = g_str_has_suffix(src, ".bz2")  ? "bzip2"
                       : g_str_has_suffix(src, ".xz") ? "xz"
                                                      : NULL;
    if (tool == NULL) {
        g_autofree char *data = NULL;
        gsize len;
        return g_file_get_contents(src, &data, &len, NULL) &&
               g_file_set_contents(dst, data, (gssize)len, NULL);
    }
    g_autofree char *cmd = g_strdup_printf("%s -dc '%s' > '%s'", tool, src, dst);
    const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
    return run(argv, NULL) == 0;
}

static void test_fixtures(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *dir = fixtures_dir();
    g_autofree char *manifest = g_build_filename(dir, "MANIFEST.tsv", NULL);
    g_autofree char *text = NULL;
    if (!g_file_get_contents(manifest, &text, NULL, NULL)) {
        g_test_skip("no fixture manifest (set VDISK_FIXTURES)");
        return;
    }
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    guint tried = 0;
    for (guint i = 0; lines[i] != NULL; i++) {
        g_auto(GStrv) f = g_strsplit(lines[i], "\t", 3);
        if (f[0] == NULL || f[0][0] == '#' || f[1] == NULL || f[2] == NULL ||
            !g_str_equal(f[1], "vmdk"))
            continue;
        g_autofree char *src = g_build_filename(dir, f[0], NULL);
        g_autofree char *img = path_in(fx, "fx.vmdk");
        g_assert_true(unpack(src, img));
        tried++;
        if (g_str_equal(f[2], "ok")) {
            g_autofree char *expect = path_in(fx, "fx.raw");
            g_assert_cmpint(RUN("qemu-img", "convert", "-f", "vmdk", "-O", "raw", img, expect), ==,
                            0);
            assert_same_content(expect, img);
            g_unlink(expect);
        } else {
            assert_open_or_read_fails(img);
        }
        g_unlink(img);
    }
    g_assert_cmpuint(tried, >=, 8);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/vmdk/descriptor", test_descriptor_parse);
#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
    ADD("/vmdk/qemu-written", test_qemu_written);
    ADD("/vmdk/qemu-empty", test_qemu_empty);
    ADD("/vmdk/vdisk-written", test_vdisk_written);
    ADD("/vmdk/create-options", test_create_options);
    ADD("/vmdk/chain", test_chain);
    ADD("/vmdk/chain/parent-cid", test_parent_cid);
    ADD("/vmdk/stream-writer", test_stream_writer);
    ADD("/vmdk/multi-extent", test_multi_extent);
    ADD("/vmdk/corrupt", test_corrupt);
    ADD("/vmdk/stream-corrupt", test_stream_corrupt);
    ADD("/vmdk/sesparse", test_sesparse);
    ADD("/vmdk/fixtures", test_fixtures);
    return g_test_run();
}
