/* Unit tests of the VirtualBox VDI driver: images qemu-img writes read the
 * same through vdisk, images vdisk writes pass qemu-img check and compare,
 * differencing chains find their parents by UUID, and damaged images fail
 * with a clear error. The qemu cases are skipped without qemu-img. */
#include "vdisk.h"

#include <glib/gstdio.h>
#include <fcntl.h>
#include <unistd.h>

#include "test-util.h"

#define MIB (1024 * 1024)
/* 65 MiB + 3.5 KiB: no multiple of the block size. */
#define ODD_SIZE 68161024u

/* Header offsets the tests poke at (see formats/vdi.c). */
#define HDR_TYPE 0x04c
#define HDR_BMAP_OFFSET 0x154
#define HDR_DISK_SIZE 0x170
#define HDR_BLOCKS_ALLOCATED 0x184
#define HDR_UUID_IMAGE 0x188
#define HDR_UUID_MODIFY 0x198
#define HDR_UUID_LINK 0x1a8
#define HDR_UUID_PARENT_MODIFY 0x1b8

/* Run a command line; returns its exit status, output in *out if asked. */
static int run(const char *cmdline, char **out)
{
    g_autoptr(GError) error = NULL;
    g_auto(GStrv) argv = NULL;
    g_assert_true(g_shell_parse_argv(cmdline, NULL, &argv, &error));
    int status = -1;
    g_autofree char *stdout_buf = NULL, *stderr_buf = NULL;
    g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &stdout_buf,
                               &stderr_buf, &status, &error));
    if (!g_spawn_check_wait_status(status, NULL))
        g_test_message("%s:\n%s%s", cmdline, stdout_buf, stderr_buf);
    if (out != NULL)
        *out = g_steal_pointer(&stdout_buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void run_ok(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void run_ok(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *cmd = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_assert_cmpint(run(cmd, NULL), ==, 0);
}

static VdImage *open_rw(const char *path)
{
    g_autoptr(GError) error = NULL;
    VdImage *img = vd_image_open(path, NULL, VD_OPEN_READ_WRITE, &error);
    g_assert_no_error(error);
    return img;
}

static void create_vdi(const char *path, guint64 size, const char *options)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdOptions) opts = vd_options_new();
    if (options != NULL)
        g_assert_true(vd_options_parse(opts, options, NULL));
    g_assert_true(vd_image_create(path, "vdi", size, opts, &error));
    g_assert_no_error(error);
}

static void write_fill(VdImage *img, guint64 off, gsize len, guint8 byte)
{
    g_autoptr(GError) error = NULL;
    g_autofree guint8 *buf = g_malloc(len);
    memset(buf, byte, len);
    g_assert_true(vd_image_write(img, off, buf, len, &error));
    g_assert_no_error(error);
}

/* Every byte of img equals expect (of the same size). */
static void assert_content(VdImage *img, const guint8 *expect, guint64 size)
{
    g_autoptr(GError) error = NULL;
    g_assert_cmpuint(vd_image_size(img), ==, size);
    g_autofree guint8 *buf = g_malloc(size);
    g_assert_true(vd_image_read(img, 0, buf, size, &error));
    g_assert_no_error(error);
    for (guint64 i = 0; i < size; i++)
        if (buf[i] != expect[i])
            g_error("byte %" G_GUINT64_FORMAT " is %u, expected %u", i, buf[i], expect[i]);
}

static guint8 *read_file(const char *path, gsize *len)
{
    g_autoptr(GError) error = NULL;
    char *data;
    g_assert_true(g_file_get_contents(path, &data, len, &error));
    return (guint8 *)data;
}

static void poke(const char *path, guint64 offset, const void *bytes, gsize len)
{
    int fd = open(path, O_WRONLY);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(pwrite(fd, bytes, len, (off_t)offset), ==, (ssize_t)len);
    close(fd);
}

static void peek(const char *path, guint64 offset, void *bytes, gsize len)
{
    int fd = open(path, O_RDONLY);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(pread(fd, bytes, len, (off_t)offset), ==, (ssize_t)len);
    close(fd);
}

static guint32 peek_le32(const char *path, guint64 offset)
{
    guint32 v;
    peek(path, offset, &v, 4);
    return GUINT32_FROM_LE(v);
}

/* Check and repair everything; found says whether problems are expected. */
static void repair_all(const char *path, gboolean found)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img =
        vd_image_open(path, NULL, VD_OPEN_READ_WRITE | VD_OPEN_FOR_CHECK, &error);
    g_assert_no_error(error);
    VdCheckResult res;
    g_assert_true(
        vd_image_check(img, VD_CHECK_REPAIR_ERRORS | VD_CHECK_REPAIR_LEAKS, &res, &error));
    g_assert_no_error(error);
    for (guint i = 0; i < res.messages->len; i++)
        g_test_message("check: %s", (char *)res.messages->pdata[i]);
    if (found)
        g_assert_cmpuint(res.corruptions + res.leaks, >, 0);
    else
        g_assert_cmpuint(res.corruptions + res.leaks, ==, 0);
    g_assert_cmpuint(res.corruptions, ==, res.corruptions_fixed);
    g_assert_cmpuint(res.leaks, ==, res.leaks_fixed);
    vd_check_result_clear(&res);
}

static void assert_file_content(const char *path, const guint8 *expect, guint64 size)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, NULL, 0, &error);
    g_assert_no_error(error);
    assert_content(img, expect, size);
}

/* ----- qemu-img writes, vdisk reads ----- */

static void qemu_read_case(Fixture *fx, const char *options)
{
    g_autofree char *vdi = path_in(fx, "q.vdi");
    g_autofree char *raw = path_in(fx, "q.raw");
    run_ok("qemu-img create -q -f vdi %s%s %s %u", options ? "-o " : "", options ? options : "",
           vdi, ODD_SIZE);
    /* Data inside blocks, across a block boundary, and in the last sector. */
    run_ok("qemu-io -f vdi -c 'write -P 17 4096 8192' -c 'write -P 33 1572864 1048576' "
           "-c 'write -P 91 68157440 3584' %s",
           vdi);
    run_ok("qemu-img convert -f vdi -O raw %s %s", vdi, raw);
    gsize len;
    g_autofree guint8 *expect = read_file(raw, &len);
    g_assert_cmpuint(len, ==, ODD_SIZE);

    g_autoptr(GError) error = NULL;
    g_assert_cmpstr(vd_probe_file(vdi, NULL, &error), ==, "vdi");
    g_autoptr(VdImage) img = vd_image_open(vdi, NULL, 0, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(vd_image_format(img), ==, "vdi");
    assert_content(img, expect, ODD_SIZE);
    g_autoptr(VdImageInfo) info = vd_image_get_info(img, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(info->cluster_size, ==, MIB);
    g_assert_cmpuint(info->virtual_size, ==, ODD_SIZE);
    g_assert_null(info->backing_filename);
    /* A base image shows its own UUID and no parent's. */
    g_assert_nonnull(info->format_specific);
    const char *uuid;
    g_assert_true(g_variant_lookup(info->format_specific, "image-uuid", "&s", &uuid));
    g_assert_cmpuint(strlen(uuid), ==, 36);
    g_assert_false(g_variant_lookup(info->format_specific, "parent-uuid", "&s", &uuid));
}

static void test_qemu_dynamic(Fixture *fx, gconstpointer data)
{
    if (have_qemu())
        qemu_read_case(fx, NULL);
}

static void test_qemu_static(Fixture *fx, gconstpointer data)
{
    if (have_qemu())
        qemu_read_case(fx, "static=on");
}

static void test_qemu_empty(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *vdi = path_in(fx, "e.vdi");
    run_ok("qemu-img create -q -f vdi %s 5M", vdi);
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(vdi, "vdi", 0, &error);
    g_assert_no_error(error);
    g_autofree guint8 *zero = g_malloc0(5 * MIB);
    assert_content(img, zero, 5 * MIB);
    /* One run, all zero, no data to read. */
    VdBlockStatus st;
    g_assert_true(vd_image_block_status(img, 0, 5 * MIB, TRUE, &st, &error));
    g_assert_cmpuint(st.length, ==, 5 * MIB);
    g_assert_cmpuint(st.flags & (VD_BLOCK_DATA | VD_BLOCK_ZERO), ==, VD_BLOCK_ZERO);
    g_assert_true(vd_image_has_zero_init(img));
}

/* ----- vdisk writes, qemu-img checks ----- */

/* Write a mix of partial, whole and spanning blocks into a new image and
 * the same into expect. */
static void write_mix(VdImage *img, guint8 *expect)
{
    static const struct {
        guint64 off;
        gsize len;
        guint8 byte;
    } writes[] = {
        { 512, 1024, 1 },                   /* partial first block */
        { 3 * MIB, 2 * MIB, 2 },            /* two whole blocks */
        { 6 * MIB - 4096, 8192, 3 },        /* across a boundary */
        { 20 * MIB + 7, 3 * MIB + 100, 4 }, /* unaligned, several blocks */
        { ODD_SIZE - 3584, 3584, 5 },       /* the last sector, in a short last block */
        { 3 * MIB + 100, 50, 6 },           /* overwrite in place */
    };
    for (gsize i = 0; i < G_N_ELEMENTS(writes); i++) {
        write_fill(img, writes[i].off, writes[i].len, writes[i].byte);
        memset(expect + writes[i].off, writes[i].byte, writes[i].len);
    }
}

static void write_case(Fixture *fx, const char *options, guint32 type)
{
    g_autofree char *vdi = path_in(fx, "w.vdi");
    g_autofree char *raw = path_in(fx, "w.raw");
    create_vdi(vdi, ODD_SIZE, options);
    g_assert_cmpuint(peek_le32(vdi, HDR_TYPE), ==, type);
    g_autofree guint8 *expect = g_malloc0(ODD_SIZE);
    {
        g_autoptr(VdImage) img = open_rw(vdi);
        write_mix(img, expect);
        assert_content(img, expect, ODD_SIZE);
        g_autoptr(GError) error = NULL;
        g_assert_true(vd_image_flush(img, &error));
        g_assert_no_error(error);
    }
    g_autoptr(GError) error = NULL;
    g_assert_true(g_file_set_contents(raw, (char *)expect, ODD_SIZE, &error));
    if (!have_qemu())
        return;
    run_ok("qemu-img check -q -f vdi %s", vdi);
    run_ok("qemu-img compare -q -f raw -F vdi %s %s", raw, vdi);
    g_autofree char *json = NULL;
    g_autofree char *cmd = g_strdup_printf("qemu-img info --output=json %s", vdi);
    g_assert_cmpint(run(cmd, &json), ==, 0);
    g_assert_nonnull(strstr(json, "\"virtual-size\": 68161024"));
    g_assert_nonnull(strstr(json, "\"cluster-size\": 1048576"));
}

static void test_write_dynamic(Fixture *fx, gconstpointer data)
{
    write_case(fx, NULL, 1);
    /* Only the blocks written are in the file. */
    g_autofree char *vdi = path_in(fx, "w.vdi");
    GStatBuf st;
    g_assert_cmpint(g_stat(vdi, &st), ==, 0);
    g_assert_cmpint(st.st_size, <, 16 * MIB);
}

static void test_write_static(Fixture *fx, gconstpointer data)
{
    write_case(fx, "static=on", 2);
    g_autofree char *vdi = path_in(fx, "w.vdi");
    g_assert_cmpuint(peek_le32(vdi, HDR_BLOCKS_ALLOCATED), ==, 66);
}

static void test_zeroes_and_discard(Fixture *fx, gconstpointer data)
{
    g_autofree char *vdi = path_in(fx, "z.vdi");
    create_vdi(vdi, 8 * MIB, NULL);
    g_autofree guint8 *expect = g_malloc0(8 * MIB);
    g_autoptr(GError) error = NULL;
    {
        g_autoptr(VdImage) img = open_rw(vdi);
        write_fill(img, 0, 4 * MIB, 7);
        memset(expect, 7, 4 * MIB);
        g_assert_true(vd_image_write_zeroes(img, MIB + 10, MIB, TRUE, &error));
        memset(expect + MIB + 10, 0, MIB);
        g_assert_true(vd_image_discard(img, 3 * MIB, MIB, &error));
        memset(expect + 3 * MIB, 0, MIB);
        g_assert_true(vd_image_write_zeroes(img, 5 * MIB, 2 * MIB, FALSE, &error));
        g_assert_no_error(error);
        assert_content(img, expect, 8 * MIB);
        /* Freeing block 0 moves the last stored block (2) into its place. */
        g_assert_true(vd_image_write_zeroes(img, 0, MIB, TRUE, &error));
        memset(expect, 0, MIB);
        g_assert_no_error(error);
        assert_content(img, expect, 8 * MIB);
        VdBlockStatus st;
        g_assert_true(vd_image_block_status(img, 0, MIB, FALSE, &st, &error));
        g_assert_cmpuint(st.flags & (VD_BLOCK_ZERO | VD_BLOCK_DATA), ==, VD_BLOCK_ZERO);
        write_fill(img, 6 * MIB, 100, 8); /* and allocating still works */
        memset(expect + 6 * MIB, 8, 100);
        assert_content(img, expect, 8 * MIB);
    }
    g_assert_cmpuint(peek_le32(vdi, HDR_BLOCKS_ALLOCATED), ==, 3);
    GStatBuf sb;
    g_assert_cmpint(g_stat(vdi, &sb), ==, 0);
    g_assert_cmpint(sb.st_size, ==, 1024 + 3 * MIB);
    assert_file_content(vdi, expect, 8 * MIB);
    if (!have_qemu())
        return;
    run_ok("qemu-img check -q -f vdi %s", vdi);
}

/* ----- differencing chains ----- */

/* base <- d1 <- d2, each layer written partly; the chain reads as the
 * layers flattened, and still does after every file is renamed. */
static void test_chain(Fixture *fx, gconstpointer data)
{
    g_autofree char *base = path_in(fx, "base.vdi");
    g_autofree char *d1 = path_in(fx, "d1.vdi");
    g_autofree char *d2 = path_in(fx, "d2.vdi");
    const guint64 size = 10 * MIB + 3584;
    g_autofree guint8 *expect = g_malloc0(size);
    g_autoptr(GError) error = NULL;

    create_vdi(base, size, NULL);
    {
        g_autoptr(VdImage) img = open_rw(base);
        write_fill(img, 0, size, 0x11);
        memset(expect, 0x11, size);
    }
    create_vdi(d1, 0, "backing_file=base.vdi,backing_fmt=vdi");
    g_assert_cmpuint(peek_le32(d1, HDR_TYPE), ==, 4);
    guint8 a[16], b[16];
    peek(base, HDR_UUID_IMAGE, a, 16);
    peek(d1, HDR_UUID_LINK, b, 16);
    g_assert_cmpmem(a, 16, b, 16);
    peek(base, HDR_UUID_MODIFY, a, 16);
    peek(d1, HDR_UUID_PARENT_MODIFY, b, 16);
    g_assert_cmpmem(a, 16, b, 16);
    guint8 d1_created[16];
    peek(d1, HDR_UUID_MODIFY, d1_created, 16);
    {
        g_autoptr(VdImage) img = open_rw(d1);
        g_assert_false(vd_image_has_zero_init(img));
        write_fill(img, MIB + 100, 200, 0x22); /* partial: the rest from base */
        memset(expect + MIB + 100, 0x22, 200);
        write_fill(img, 4 * MIB, 2 * MIB, 0x23);
        memset(expect + 4 * MIB, 0x23, 2 * MIB);
        g_assert_true(vd_image_write_zeroes(img, 8 * MIB, MIB, TRUE, &error));
        memset(expect + 8 * MIB, 0, MIB);
        g_assert_true(vd_image_write_zeroes(img, 7 * MIB + 10, 20, TRUE, &error));
        memset(expect + 7 * MIB + 10, 0, 20);
        /* Discarding an unstored block keeps showing the parent, and a
         * stored one shows it again. */
        g_assert_true(vd_image_discard(img, 9 * MIB, MIB, &error));
        write_fill(img, 2 * MIB, MIB, 0x24);
        g_assert_true(vd_image_discard(img, 2 * MIB, MIB, &error));
        g_assert_no_error(error);
        assert_content(img, expect, size);
    }
    /* Writing gave d1 a new modification UUID; d2 records that one. */
    peek(d1, HDR_UUID_MODIFY, a, 16);
    g_assert_true(memcmp(a, d1_created, 16) != 0);
    create_vdi(d2, 0, "backing_file=d1.vdi");
    peek(d2, HDR_UUID_PARENT_MODIFY, b, 16);
    g_assert_cmpmem(a, 16, b, 16);
    g_assert_cmpuint(a[7] >> 4, ==, 4); /* version 4, little-endian field order */
    g_assert_cmpuint(a[8] >> 6, ==, 2);
    {
        g_autoptr(VdImage) img = open_rw(d2);
        write_fill(img, MIB + 150, 10, 0x33);
        memset(expect + MIB + 150, 0x33, 10);
        write_fill(img, size - 100, 100, 0x34);
        memset(expect + size - 100, 0x34, 100);
        assert_content(img, expect, size);
        /* Block status: d2's own block, then d1's, then base's. */
        VdBlockStatus st;
        g_assert_true(vd_image_block_status(img, MIB, MIB, TRUE, &st, &error));
        g_assert_cmpuint(st.depth, ==, 0);
        g_assert_true(vd_image_block_status(img, 4 * MIB, MIB, TRUE, &st, &error));
        g_assert_cmpuint(st.depth, ==, 1);
        g_assert_true(vd_image_block_status(img, 0, MIB, TRUE, &st, &error));
        g_assert_cmpuint(st.depth, ==, 2);
        g_assert_true(vd_image_block_status(img, 8 * MIB, MIB, TRUE, &st, &error));
        g_assert_cmpuint(st.depth, ==, 1);
        g_assert_cmpuint(st.flags & (VD_BLOCK_ZERO | VD_BLOCK_DATA), ==, VD_BLOCK_ZERO);
        g_autoptr(VdImageInfo) info = vd_image_get_info(img, &error);
        g_assert_no_error(error);
        g_assert_cmpstr(info->backing_filename, ==, "d1.vdi");
        g_assert_cmpstr(info->backing_format, ==, "vdi");
    }
    /* Renamed as VirtualBox names them: found by UUID all the same. */
    g_autofree char *vbox = path_in(fx, "vbox");
    g_assert_cmpint(g_mkdir(vbox, 0755), ==, 0);
    g_autofree char *r0 = g_build_filename(vbox, "{aaaa}.vdi", NULL);
    g_autofree char *r1 = g_build_filename(vbox, "{bbbb}.vdi", NULL);
    g_autofree char *r2 = g_build_filename(vbox, "{cccc}.vdi", NULL);
    g_assert_cmpint(g_rename(base, r0), ==, 0);
    g_assert_cmpint(g_rename(d1, r1), ==, 0);
    g_assert_cmpint(g_rename(d2, r2), ==, 0);
    g_autoptr(VdImage) img = vd_image_open(r2, NULL, 0, &error);
    g_assert_no_error(error);
    assert_content(img, expect, size);
    g_assert_cmpstr(vd_image_filename(vd_image_backing(vd_image_backing(img))), ==, r0);

    /* Without its parent: an error naming the parent's UUID... */
    g_assert_cmpint(g_unlink(r1), ==, 0);
    g_autoptr(VdImage) orphan = vd_image_open(r2, NULL, 0, &error);
    g_assert_null(orphan);
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_FOUND);
    g_assert_nonnull(strstr(error->message, "differencing"));
    g_clear_error(&error);
    /* ...unless the caller wants this layer alone. */
    g_autoptr(VdImage) alone = vd_image_open(r2, NULL, VD_OPEN_NO_BACKING, &error);
    g_assert_no_error(error);
    g_assert_nonnull(alone);
}

/* What convert -B does: the target links to the parent and holds only
 * what the source's top layer holds. */
static void test_convert_onto_parent(Fixture *fx, gconstpointer data)
{
    g_autofree char *base = path_in(fx, "base.vdi");
    g_autofree char *top = path_in(fx, "top.vdi");
    g_autofree char *d1 = path_in(fx, "d1.vdi");
    g_autoptr(GError) error = NULL;
    g_autofree guint8 *expect = g_malloc(6 * MIB);
    create_vdi(base, 6 * MIB, NULL);
    {
        g_autoptr(VdImage) img = open_rw(base);
        write_fill(img, 0, 6 * MIB, 0x41);
        memset(expect, 0x41, 6 * MIB);
    }
    create_vdi(top, 0, "backing_file=base.vdi");
    {
        g_autoptr(VdImage) img = open_rw(top);
        write_fill(img, 2 * MIB + 512, 4096, 0x42);
        memset(expect + 2 * MIB + 512, 0x42, 4096);
        g_assert_true(vd_image_write_zeroes(img, 4 * MIB, MIB, TRUE, &error));
        memset(expect + 4 * MIB, 0, MIB);
    }
    g_autoptr(VdImage) src = vd_image_open(top, NULL, 0, &error);
    g_assert_no_error(error);
    VdConvertOptions opts;
    vd_convert_options_init(&opts);
    opts.target_format = "vdi";
    opts.backing_file = base;
    opts.backing_format = "vdi";
    g_assert_true(vd_convert(src, d1, &opts, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(peek_le32(d1, HDR_TYPE), ==, 4);
    g_assert_cmpuint(peek_le32(d1, HDR_BLOCKS_ALLOCATED), ==, 1);
    g_autoptr(VdImage) out = vd_image_open(d1, NULL, 0, &error);
    g_assert_no_error(error);
    assert_content(out, expect, 6 * MIB);
    g_autoptr(VdImageInfo) info = vd_image_get_info(out, &error);
    g_assert_cmpstr(info->backing_filename, ==, "base.vdi");
}

/* A UUID as info shows it, for matching error messages. */
static char *image_uuid(const char *path)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, "vdi", VD_OPEN_NO_BACKING, &error);
    g_assert_no_error(error);
    g_autoptr(VdImageInfo) info = vd_image_get_info(img, &error);
    g_assert_no_error(error);
    char *uuid = NULL;
    g_assert_true(g_variant_lookup(info->format_specific, "image-uuid", "s", &uuid));
    return uuid;
}

/* Open path with "parent" named as its parent (NULL: found by UUID). */
static VdImage *open_with_parent(const char *path, const char *parent, VdOpenFlags flags,
                                 GError **error)
{
    g_autoptr(VdOptions) opts = vd_options_new();
    if (parent != NULL)
        vd_options_set(opts, "backing", parent);
    return vd_image_open_opts(path, NULL, flags, opts, NULL, error);
}

/* base <- d1 <- d2, and an unrelated image of the same size: only the
 * parent each child records is accepted, found or named, and sizes that
 * VirtualBox cannot make are refused. */
static void test_wrong_parent(Fixture *fx, gconstpointer data)
{
    g_autofree char *base = path_in(fx, "base.vdi");
    g_autofree char *other = path_in(fx, "other.vdi");
    g_autofree char *d1 = path_in(fx, "d1.vdi");
    g_autofree char *raw = path_in(fx, "p.raw");
    g_autofree char *lonely = path_in(fx, "lonely");
    g_autofree char *d2 = g_build_filename(lonely, "d2.vdi", NULL);
    const guint64 size = 4 * MIB + 3584;
    g_autofree guint8 *expect = g_malloc(size);
    g_autoptr(GError) error = NULL;

    create_vdi(base, size, NULL);
    create_vdi(other, size, NULL);
    {
        g_autoptr(VdImage) a = open_rw(base), b = open_rw(other);
        write_fill(a, 0, size, 0x11);
        write_fill(b, 0, size, 0x55);
        memset(expect, 0x11, size);
    }
    create_vdi(d1, 0, "backing_file=base.vdi");
    {
        g_autoptr(VdImage) img = open_rw(d1);
        write_fill(img, MIB, 1000, 0x22);
        memset(expect + MIB, 0x22, 1000);
    }
    g_autofree char *d2_here = path_in(fx, "d2.vdi");
    create_vdi(d2_here, 0, "backing_file=d1.vdi");
    {
        g_autoptr(VdImage) img = open_rw(d2_here);
        write_fill(img, 3 * MIB, 10, 0x33);
        memset(expect + 3 * MIB, 0x33, 10);
    }
    g_assert_cmpint(g_mkdir(lonely, 0755), ==, 0);
    g_assert_cmpint(g_rename(d2_here, d2), ==, 0);
    g_autofree char *u_d1 = image_uuid(d1), *u_base = image_uuid(base),
                    *u_other = image_uuid(other);

    /* An unrelated image, the grandparent: the child's recorded parent
     * UUID and the named file's UUID are both in the message. */
    const char *wrong[][2] = { { other, u_other }, { base, u_base } };
    for (gsize i = 0; i < G_N_ELEMENTS(wrong); i++) {
        for (int alone = 0; alone < 2; alone++) {
            g_autoptr(VdImage) img =
                open_with_parent(d2, wrong[i][0], alone ? VD_OPEN_NO_BACKING : 0, &error);
            g_assert_null(img);
            g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
            g_autofree char *want = g_strdup_printf("its parent is {%s}", u_d1);
            g_autofree char *have = g_strdup_printf("%s is {%s}", wrong[i][0], wrong[i][1]);
            g_assert_nonnull(strstr(error->message, d2));
            g_assert_nonnull(strstr(error->message, want));
            g_assert_nonnull(strstr(error->message, have));
            g_clear_error(&error);
        }
    }
    /* Not a VDI at all. */
    g_assert_true(vd_image_create(raw, "raw", size, NULL, &error));
    {
        g_autoptr(VdImage) img = open_with_parent(d2, raw, 0, &error);
        g_assert_null(img);
        g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
        g_assert_nonnull(strstr(error->message, "raw image"));
        g_clear_error(&error);
    }
    /* A base image has no parent to name. */
    {
        g_autoptr(VdImage) img = open_with_parent(other, base, 0, &error);
        g_assert_null(img);
        g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
        g_assert_nonnull(strstr(error->message, "not a differencing image"));
        g_clear_error(&error);
    }
    /* The right parent: the whole chain, down to base found by UUID. */
    {
        g_autoptr(VdImage) img = open_with_parent(d2, d1, 0, &error);
        g_assert_no_error(error);
        assert_content(img, expect, size);
        g_autoptr(VdImageInfo) info = vd_image_get_info(img, &error);
        g_assert_cmpstr(info->backing_filename, ==, d1);
        const char *p;
        g_assert_true(g_variant_lookup(info->format_specific, "parent-uuid", "&s", &p));
        g_assert_cmpstr(p, ==, u_d1);
    }

    /* A child larger than its parent (grown after the snapshot) reads
     * zeroes past the parent's end; a smaller one is refused, at open and
     * when it is created. */
    guint8 le[8];
    guint64 grown = 5 * MIB; /* still inside the 5 blocks of the map */
    for (int i = 0; i < 8; i++)
        le[i] = (guint8)(grown >> (8 * i));
    poke(d1, HDR_DISK_SIZE, le, 8);
    {
        g_autoptr(VdImage) img = vd_image_open(d1, NULL, 0, &error);
        g_assert_no_error(error);
        g_assert_cmpuint(vd_image_size(img), ==, grown);
        guint8 tail[512], zero[512] = { 0 };
        g_assert_true(vd_image_read(img, grown - 512, tail, 512, &error));
        g_assert_cmpmem(tail, 512, zero, 512);
    }
    poke(base, HDR_DISK_SIZE, le, 8);
    for (int i = 0; i < 8; i++)
        le[i] = (guint8)(size >> (8 * i));
    poke(d1, HDR_DISK_SIZE, le, 8);
    {
        g_autoptr(VdImage) img = vd_image_open(d1, NULL, 0, &error);
        g_assert_null(img);
        g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
        g_assert_nonnull(strstr(error->message, "larger"));
        g_clear_error(&error);
    }
    g_autofree char *small = path_in(fx, "small.vdi");
    g_autoptr(VdOptions) opts = vd_options_new();
    vd_options_set(opts, "backing_file", "base.vdi");
    g_assert_false(vd_image_create(small, "vdi", MIB, opts, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "smaller than its parent"));
    g_assert_false(g_file_test(small, G_FILE_TEST_EXISTS));
}

static void test_create_refusals(Fixture *fx, gconstpointer data)
{
    g_autofree char *raw = path_in(fx, "p.raw");
    g_autofree char *d = path_in(fx, "d.vdi");
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_image_create(raw, "raw", MIB, NULL, &error));
    g_autoptr(VdOptions) opts = vd_options_new();
    vd_options_set(opts, "backing_file", "p.raw");
    g_assert_false(vd_image_create(d, "vdi", 0, opts, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "VDI parent"));
    g_assert_nonnull(strstr(error->message, "p.raw"));
    g_clear_error(&error);
    g_assert_false(g_file_test(d, G_FILE_TEST_EXISTS));

    /* A parent in another folder could never be found again. */
    g_autofree char *sub = path_in(fx, "sub");
    g_assert_cmpint(g_mkdir(sub, 0755), ==, 0);
    g_autofree char *parent = g_build_filename(sub, "p.vdi", NULL);
    create_vdi(parent, MIB, NULL);
    g_autoptr(VdOptions) opts2 = vd_options_new();
    vd_options_set(opts2, "backing_file", "sub/p.vdi");
    g_assert_false(vd_image_create(d, "vdi", 0, opts2, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);

    g_autoptr(VdOptions) opts3 = vd_options_new();
    vd_options_set(opts3, "static", "maybe");
    g_assert_false(vd_image_create(d, "vdi", MIB, opts3, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);

    g_assert_false(vd_image_create(d, "vdi", 1ull << 52, NULL, &error));
    g_assert_nonnull(strstr(error->message, "too large"));
}

/* VirtualBox's own layout and a block size other than 1 MiB (qemu reads
 * only 1 MiB blocks): header size 0x190, map and data apart, blocks not in
 * guest order. */
static void test_other_block_size(Fixture *fx, gconstpointer data)
{
    enum { BS = 4096, BLOCKS = 16, DATA = 0x1000 };
    guint8 file[DATA + 2 * BS] = { 0 };
    memcpy(file, "<<< Oracle VM VirtualBox Disk Image >>>\n", 40);
    guint32 v32[][2] = {
        { 0x40, 0xbeda107f }, { 0x44, 0x00010001 },
        { 0x48, 0x190 },      { HDR_TYPE, 1 },
        { 0x154, 0x400 },     { 0x158, DATA },
        { 0x168, 512 },       { 0x178, BS },
        { 0x180, BLOCKS },    { HDR_BLOCKS_ALLOCATED, 2 },
    };
    for (gsize i = 0; i < G_N_ELEMENTS(v32); i++) {
        guint32 le = GUINT32_TO_LE(v32[i][1]);
        memcpy(file + v32[i][0], &le, 4);
    }
    guint64 disk = GUINT64_TO_LE(BLOCKS * BS - 512);
    memcpy(file + HDR_DISK_SIZE, &disk, 8);
    for (guint32 i = 0; i < BLOCKS; i++) {
        guint32 e = GUINT32_TO_LE(i == 0 ? 1 : i == 1 ? 0 : i == 5 ? 0xfffffffe : 0xffffffff);
        memcpy(file + 0x400 + 4 * i, &e, 4);
    }
    memset(file + DATA, 0xa0, BS);
    memset(file + DATA + BS, 0xa1, BS);
    g_autofree char *vdi = path_in(fx, "vbox.vdi");
    g_autoptr(GError) error = NULL;
    g_assert_true(g_file_set_contents(vdi, (char *)file, sizeof file, &error));

    g_autofree guint8 *expect = g_malloc0(BLOCKS * BS - 512);
    memset(expect, 0xa1, BS);
    memset(expect + BS, 0xa0, BS);
    g_autoptr(VdImage) img = open_rw(vdi);
    g_assert_cmpuint(vd_image_cluster_size(img), ==, BS);
    assert_content(img, expect, BLOCKS * BS - 512);
    write_fill(img, 3 * BS + 10, 2 * BS, 0xb0); /* blocks 3-5, one a zero block */
    memset(expect + 3 * BS + 10, 0xb0, 2 * BS);
    write_fill(img, BLOCKS * BS - 1024, 512, 0xb1); /* the short last block */
    memset(expect + BLOCKS * BS - 1024, 0xb1, 512);
    assert_content(img, expect, BLOCKS * BS - 512);
    /* New blocks reach the header and the map at a flush. */
    g_assert_true(vd_image_flush(img, &error));
    g_assert_cmpuint(peek_le32(vdi, HDR_BLOCKS_ALLOCATED), ==, 6);
    VdCheckResult res;
    g_assert_true(vd_image_check(img, VD_CHECK_REPAIR_NONE, &res, &error));
    g_assert_cmpuint(res.corruptions + res.leaks, ==, 0);
    vd_check_result_clear(&res);
}

/* ----- damaged images ----- */

static void assert_open_fails(const char *path, const char *needle)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, NULL, 0, &error);
    g_assert_null(img);
    g_assert_nonnull(error);
    g_test_message("%s", error->message);
    if (strstr(error->message, needle) == NULL)
        g_error("'%s' does not say '%s'", error->message, needle);
}

static void test_corrupt(Fixture *fx, gconstpointer data)
{
    g_autofree char *vdi = path_in(fx, "c.vdi");
    create_vdi(vdi, 4 * MIB, NULL);
    {
        g_autoptr(VdImage) img = open_rw(vdi);
        write_fill(img, 0, 2 * MIB, 9);
    }
    gsize len;
    g_autofree guint8 *good = read_file(vdi, &len);
    g_autoptr(GError) error = NULL;
    guint32 bmap = peek_le32(vdi, HDR_BMAP_OFFSET);

    g_assert_cmpint(truncate(vdi, 300), ==, 0);
    assert_open_fails(vdi, "too short");

    g_assert_true(g_file_set_contents(vdi, (char *)good, len, &error));
    guint32 far = GUINT32_TO_LE(0x7ffffff0);
    poke(vdi, bmap, &far, 4);
    assert_open_fails(vdi, "block map entry 0 points past the end of the file");

    g_assert_true(g_file_set_contents(vdi, (char *)good, len, &error));
    guint64 huge = GUINT64_TO_LE(1ull << 62);
    poke(vdi, HDR_DISK_SIZE, &huge, 8);
    assert_open_fails(vdi, "too large");

    g_assert_true(g_file_set_contents(vdi, (char *)good, len, &error));
    guint64 over = GUINT64_TO_LE(5 * MIB);
    poke(vdi, HDR_DISK_SIZE, &over, 8);
    assert_open_fails(vdi, "does not fit");

    g_assert_true(g_file_set_contents(vdi, (char *)good, len, &error));
    guint32 type = GUINT32_TO_LE(4); /* differencing, but no parent UUID */
    poke(vdi, HDR_TYPE, &type, 4);
    assert_open_fails(vdi, "parent");

    g_assert_true(g_file_set_contents(vdi, (char *)good, len, &error));
    /* A map past the end of the file opens read-only, as qemu-img opens it
     * (info and check describe it); reading what the missing map would say
     * fails, and opening to write is refused. */
    g_assert_true(g_file_set_contents(vdi, (char *)good, len, &error));
    guint32 past_map = GUINT32_TO_LE((guint32)len);
    poke(vdi, HDR_BMAP_OFFSET, &past_map, 4);
    {
        g_autoptr(VdImage) img = vd_image_open(vdi, NULL, 0, &error);
        g_assert_no_error(error);
        guint8 buf[512];
        g_assert_false(vd_image_read(img, 0, buf, sizeof buf, &error));
        g_assert_error(error, VD_ERROR, VD_ERROR_CORRUPT);
        g_assert_nonnull(strstr(error->message, "lies past the end of the file"));
        g_clear_error(&error);
    }
    g_autoptr(VdImage) rw = vd_image_open(vdi, NULL, VD_OPEN_READ_WRITE, &error);
    g_assert_null(rw);
    g_assert_error(error, VD_ERROR, VD_ERROR_CORRUPT);
    g_assert_nonnull(strstr(error->message, "extends past the end of the file"));
}

static void test_check(Fixture *fx, gconstpointer data)
{
    g_autofree char *vdi = path_in(fx, "k.vdi");
    create_vdi(vdi, 4 * MIB, NULL);
    {
        g_autoptr(VdImage) img = open_rw(vdi);
        write_fill(img, 0, 3 * MIB, 9);
    }
    guint32 bmap = peek_le32(vdi, HDR_BMAP_OFFSET);
    g_autoptr(GError) error = NULL;
    VdCheckResult res;
    {
        g_autoptr(VdImage) img = vd_image_open(vdi, NULL, VD_OPEN_FOR_CHECK, &error);
        g_assert_no_error(error);
        g_assert_true(vd_image_check(img, VD_CHECK_REPAIR_NONE, &res, &error));
        g_assert_cmpuint(res.corruptions, ==, 0);
        /* No cluster counts or end offset: qemu-img's check of a VDI
         * prints none, and vdisk's output has its keys. */
        g_assert_cmpuint(res.allocated_clusters, ==, 0);
        g_assert_cmpuint(res.total_clusters, ==, 0);
        g_assert_cmpuint(res.image_end_offset, ==, 0);
        vd_check_result_clear(&res);
    }
    /* A crash between the map and the header: the count lags. */
    guint32 two = GUINT32_TO_LE(2);
    poke(vdi, HDR_BLOCKS_ALLOCATED, &two, 4);
    {
        g_autoptr(VdImage) img =
            vd_image_open(vdi, NULL, VD_OPEN_READ_WRITE | VD_OPEN_FOR_CHECK, &error);
        g_assert_no_error(error);
        g_assert_true(vd_image_check(img, VD_CHECK_REPAIR_ERRORS, &res, &error));
        g_assert_cmpuint(res.corruptions, ==, 1);
        g_assert_cmpuint(res.corruptions_fixed, ==, 1);
        vd_check_result_clear(&res);
    }
    g_assert_cmpuint(peek_le32(vdi, HDR_BLOCKS_ALLOCATED), ==, 3);
    if (have_qemu())
        run_ok("qemu-img check -q -f vdi %s", vdi);

    /* Two entries sharing a block: reported, then repaired by dropping the
     * second and closing the hole it leaves in the data area. */
    guint32 dup = GUINT32_TO_LE(0);
    poke(vdi, bmap + 4, &dup, 4);
    {
        g_autoptr(VdImage) img = vd_image_open(vdi, NULL, VD_OPEN_FOR_CHECK, &error);
        g_assert_no_error(error);
        g_assert_true(vd_image_check(img, VD_CHECK_REPAIR_NONE, &res, &error));
        g_assert_cmpuint(res.corruptions, >=, 1);
        gboolean named = FALSE;
        for (guint i = 0; i < res.messages->len; i++)
            named |= strstr(res.messages->pdata[i], "entry 1 points at block 0") != NULL;
        g_assert_true(named);
        vd_check_result_clear(&res);
    }
    repair_all(vdi, TRUE);
    g_autofree guint8 *expect = g_malloc0(4 * MIB);
    memset(expect, 9, MIB);
    memset(expect + 2 * MIB, 9, MIB);
    assert_file_content(vdi, expect, 4 * MIB);
    g_assert_cmpuint(peek_le32(vdi, HDR_BLOCKS_ALLOCATED), ==, 2);
    if (have_qemu())
        run_ok("qemu-img check -q -f vdi %s", vdi);

    /* An entry pointing past the end: only check can open it, reading
     * through it fails, and repair makes the block read zero. */
    guint32 far = GUINT32_TO_LE(0x7ffffff0);
    poke(vdi, bmap, &far, 4);
    {
        g_autoptr(VdImage) img = vd_image_open(vdi, NULL, VD_OPEN_FOR_CHECK, &error);
        g_assert_no_error(error);
        guint8 byte;
        g_assert_false(vd_image_read(img, 0, &byte, 1, &error));
        g_assert_error(error, VD_ERROR, VD_ERROR_CORRUPT);
        g_clear_error(&error);
        g_assert_true(vd_image_read(img, 2 * MIB, &byte, 1, &error));
        g_assert_cmpuint(byte, ==, 9);
    }
    repair_all(vdi, TRUE);
    memset(expect, 0, MIB);
    assert_file_content(vdi, expect, 4 * MIB);
    if (have_qemu())
        run_ok("qemu-img check -q -f vdi %s", vdi);
    repair_all(vdi, FALSE);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
    ADD("/vdi/qemu/dynamic", test_qemu_dynamic);
    ADD("/vdi/qemu/static", test_qemu_static);
    ADD("/vdi/qemu/empty", test_qemu_empty);
    ADD("/vdi/write/dynamic", test_write_dynamic);
    ADD("/vdi/write/static", test_write_static);
    ADD("/vdi/write/zeroes-discard", test_zeroes_and_discard);
    ADD("/vdi/chain/depth-3", test_chain);
    ADD("/vdi/chain/convert", test_convert_onto_parent);
    ADD("/vdi/chain/wrong-parent", test_wrong_parent);
    ADD("/vdi/create/refusals", test_create_refusals);
    ADD("/vdi/block-size", test_other_block_size);
    ADD("/vdi/corrupt", test_corrupt);
    ADD("/vdi/check", test_check);
    return g_test_run();
}
