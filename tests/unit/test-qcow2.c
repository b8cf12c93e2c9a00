/* qcow2 driver tests, with QEMU as the oracle: images qemu-img/qemu-io make
 * must read back exactly as qemu-img convert -O raw gives them, and images
 * vdisk writes must pass qemu-img check and compare equal to the expected
 * content. Corrupted images must fail with an error, never crash.
 */
#include "vdisk.h"

#include <glib/gstdio.h>
#include <string.h>

#define MiB (1024 * 1024)

static char *tmpdir;

static char *tpath(const char *name) { return g_build_filename(tmpdir, name, NULL); }

/* Run a command line (split like a shell would) in tmpdir; returns the
 * exit status, output in *out when given. */
static int run(char **out, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static int run(char **out, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    g_autofree char *cmd = g_strdup_vprintf(fmt, args);
    va_end(args);
    g_auto(GStrv) argv = NULL;
    g_assert_true(g_shell_parse_argv(cmd, NULL, &argv, NULL));
    g_autofree char *sout = NULL, *serr = NULL;
    int status = -1;
    g_autoptr(GError) error = NULL;
    g_assert_true(g_spawn_sync(tmpdir, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &sout, &serr,
                               &status, &error));
    if (!g_spawn_check_wait_status(status, NULL))
        g_test_message("'%s' failed: %s%s", cmd, sout, serr);
    if (out != NULL)
        *out = g_strconcat(sout, serr, NULL);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static GBytes *slurp(const char *name)
{
    g_autofree char *p = tpath(name);
    char *data;
    gsize len;
    g_assert_true(g_file_get_contents(p, &data, &len, NULL));
    return g_bytes_new_take(data, len);
}

static void spill(const char *name, const guint8 *data, gsize len)
{
    g_autofree char *p = tpath(name);
    g_assert_true(g_file_set_contents(p, (const char *)data, len, NULL));
}

/* Read all of img and compare with a raw file. */
static void assert_reads_as(VdImage *img, const char *raw)
{
    g_autoptr(GBytes) want = slurp(raw);
    gsize len;
    const guint8 *w = g_bytes_get_data(want, &len);
    g_assert_cmpuint(vd_image_size(img), ==, len);
    g_autofree guint8 *buf = g_malloc(MiB);
    for (gsize off = 0; off < len; off += MiB) {
        gsize n = MIN(MiB, len - off);
        g_autoptr(GError) error = NULL;
        g_assert_true(vd_image_read(img, off, buf, n, &error));
        g_assert_no_error(error);
        if (memcmp(buf, w + off, n) != 0) {
            gsize i = 0;
            while (buf[i] == w[off + i])
                i++;
            g_error("content differs at byte %" G_GSIZE_FORMAT, off + i);
        }
    }
}

static void assert_qemu_clean(const char *name)
{
    g_autofree char *out = NULL;
    int rc = run(&out, "qemu-img check %s", name);
    if (rc != 0 || strstr(out, "No errors were found") == NULL)
        g_error("qemu-img check %s: %s", name, out);
}

static void assert_qemu_same(const char *raw, const char *image)
{
    g_autofree char *out = NULL;
    if (run(&out, "qemu-img compare -f raw -F qcow2 %s %s", raw, image) != 0)
        g_error("qemu-img compare %s %s: %s", raw, image, out);
}

static VdImage *open_image(const char *name, VdOpenFlags flags)
{
    g_autofree char *p = tpath(name);
    g_autoptr(GError) error = NULL;
    VdImage *img = vd_image_open(p, "qcow2", flags, &error);
    g_assert_no_error(error);
    return img;
}

/* ----- reading what QEMU wrote ----- */

static const char *const read_options[] = {
    "cluster_size=64k",
    "compat=0.10",
    "compat=0.10,cluster_size=512",
    "cluster_size=512",
    "cluster_size=2M",
    "refcount_bits=1",
    "refcount_bits=2,cluster_size=1k",
    "refcount_bits=4",
    "refcount_bits=8",
    "refcount_bits=32",
    "refcount_bits=64,cluster_size=4k",
    "extended_l2=on",
    "extended_l2=on,cluster_size=2M",
    "compression_type=zstd",
    "lazy_refcounts=on",
};

static void make_qemu_image(const char *name, const char *opts)
{
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 -o %s %s 8M", opts, name), ==, 0);
    g_assert_cmpint(run(NULL,
                        "qemu-io -f qcow2 -c 'write -P 0xaa 0 100k' -c 'write -P 0xbb 1M 64k' "
                        "-c 'write -z 1100k 300k' -c 'write -P 0xcc 3M 1536' "
                        "-c 'discard 1M 32k' -c 'write -P 0x11 7M 1M' -c 'write -P 0x22 5000 3' %s",
                        name),
                    ==, 0);
}

static void test_read_options(void)
{
    for (guint i = 0; i < G_N_ELEMENTS(read_options); i++) {
        g_test_message("options %s", read_options[i]);
        make_qemu_image("r.qcow2", read_options[i]);
        g_assert_cmpint(run(NULL, "qemu-img convert -O raw r.qcow2 r.raw"), ==, 0);
        g_autoptr(VdImage) img = open_image("r.qcow2", 0);
        assert_reads_as(img, "r.raw");
        /* Our check agrees the image is clean. */
        VdCheckResult res = { 0 };
        g_autoptr(GError) error = NULL;
        g_assert_true(vd_image_check(img, VD_CHECK_REPAIR_NONE, &res, &error));
        g_assert_cmpuint(res.corruptions, ==, 0);
        g_assert_cmpuint(res.leaks, ==, 0);
        vd_check_result_clear(&res);
    }
}

static void test_read_block_status(void)
{
    make_qemu_image("b.qcow2", "cluster_size=64k");
    g_autoptr(VdImage) img = open_image("b.qcow2", 0);
    VdBlockStatus st;
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_image_block_status(img, 0, 8 * MiB, FALSE, &st, &error));
    g_assert_true(st.flags & VD_BLOCK_DATA);
    g_assert_true(st.flags & VD_BLOCK_OFFSET_VALID);
    g_assert_cmpuint(st.length, ==, 128 * 1024);
    /* 1100k..1400k was written as zeroes: the whole clusters inside read
     * as a zero extent. */
    g_assert_true(vd_image_block_status(img, 1152 * 1024, 64 * 1024, FALSE, &st, &error));
    g_assert_true(st.flags & VD_BLOCK_ZERO);
    g_assert_true(vd_image_block_status(img, 4 * MiB, 3 * MiB, FALSE, &st, &error));
    g_assert_false(st.flags & VD_BLOCK_DATA);
    g_assert_cmpuint(st.length, ==, 3 * MiB);
}

static void test_read_compressed(void)
{
    static const char *const types[] = { "zlib", "zstd" };
    static const char *const sizes[] = { "512", "4k", "64k", "2M" };
    make_qemu_image("src.qcow2", "cluster_size=64k");
    g_assert_cmpint(run(NULL, "qemu-img convert -O raw src.qcow2 src.raw"), ==, 0);
    for (guint t = 0; t < G_N_ELEMENTS(types); t++) {
        for (guint c = 0; c < G_N_ELEMENTS(sizes); c++) {
            g_assert_cmpint(run(NULL,
                                "qemu-img convert -c -O qcow2 -o compression_type=%s,"
                                "cluster_size=%s src.raw c.qcow2",
                                types[t], sizes[c]),
                            ==, 0);
            g_autoptr(VdImage) img = open_image("c.qcow2", 0);
            assert_reads_as(img, "src.raw");
        }
    }
}

static void test_read_backing(void)
{
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 base.qcow2 8M"), ==, 0);
    g_assert_cmpint(run(NULL, "qemu-io -c 'write -P 1 0 4M' base.qcow2"), ==, 0);
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "
                              "-o extended_l2=on top.qcow2"),
                    ==, 0);
    g_assert_cmpint(run(NULL, "qemu-io -c 'write -P 2 1M 3k' -c 'write -z 2M 64k' "
                              "-c 'discard 3M 1M' -c 'write -P 5 2100k 1k' top.qcow2"),
                    ==, 0);
    g_assert_cmpint(run(NULL, "qemu-img convert -O raw top.qcow2 top.raw"), ==, 0);
    g_autoptr(VdImage) img = open_image("top.qcow2", 0);
    assert_reads_as(img, "top.raw");
    g_autoptr(VdImageInfo) info = vd_image_get_info(img, NULL);
    g_assert_cmpstr(info->backing_filename, ==, "base.qcow2");
    g_assert_cmpstr(info->backing_format, ==, "qcow2");
}

static void test_read_snapshots(void)
{
    make_qemu_image("s.qcow2", "cluster_size=4k");
    g_assert_cmpint(run(NULL, "qemu-img snapshot -c one s.qcow2"), ==, 0);
    g_assert_cmpint(run(NULL, "qemu-io -c 'write -P 7 0 2M' s.qcow2"), ==, 0);
    g_assert_cmpint(run(NULL, "qemu-img snapshot -c two s.qcow2"), ==, 0);
    g_assert_cmpint(run(NULL, "qemu-io -c 'write -P 8 1M 2M' s.qcow2"), ==, 0);
    g_assert_cmpint(run(NULL, "qemu-img convert -O raw s.qcow2 now.raw"), ==, 0);
    g_assert_cmpint(run(NULL, "qemu-img convert -l one -O raw s.qcow2 one.raw"), ==, 0);
    g_assert_cmpint(run(NULL, "qemu-img convert -l two -O raw s.qcow2 two.raw"), ==, 0);
    {
        g_autoptr(VdImage) img = open_image("s.qcow2", 0);
        assert_reads_as(img, "now.raw");
        g_autoptr(GPtrArray) list = vd_image_list_snapshots(img, NULL);
        g_assert_cmpuint(list->len, ==, 2);
        VdSnapshotInfo *sn = list->pdata[1];
        g_assert_cmpstr(sn->name, ==, "two");
        g_assert_cmpstr(sn->id, ==, "2");
    }
    static const char *const names[] = { "one", "two" };
    for (guint i = 0; i < 2; i++) {
        g_autoptr(VdImage) img = open_image("s.qcow2", 0);
        g_autoptr(GError) error = NULL;
        g_assert_true(vd_image_load_snapshot(img, names[i], &error));
        g_autofree char *raw = g_strdup_printf("%s.raw", names[i]);
        assert_reads_as(img, raw);
    }
}

/* ----- writing through the API ----- */

/* Apply the same operations to an image and to an in-memory model. */
typedef struct {
    VdImage *img;
    guint8 *model;
    gsize size;
} Pair;

static void pair_write(Pair *p, guint64 off, gsize len, guint8 pattern)
{
    g_autofree guint8 *buf = g_malloc(len);
    for (gsize i = 0; i < len; i++)
        buf[i] = (guint8)(pattern + i / 4096);
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_image_write(p->img, off, buf, len, &error));
    g_assert_no_error(error);
    memcpy(p->model + off, buf, len);
}

static void pair_zero(Pair *p, guint64 off, gsize len, gboolean unmap)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_image_write_zeroes(p->img, off, len, unmap, &error));
    g_assert_no_error(error);
    memset(p->model + off, 0, len);
}

static void pair_compressed(Pair *p, guint64 off, gsize len, guint8 pattern)
{
    g_autofree guint8 *buf = g_malloc(len);
    for (gsize i = 0; i < len; i++)
        buf[i] = (guint8)(pattern + (i % 7 == 0));
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_image_write_compressed(p->img, off, buf, len, &error));
    g_assert_no_error(error);
    memcpy(p->model + off, buf, len);
}

/* Discard whole clusters without backing file: they read as zero. */
static void pair_discard(Pair *p, guint64 off, gsize len)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_image_discard(p->img, off, len, &error));
    g_assert_no_error(error);
    memset(p->model + off, 0, len);
}

static const char *const write_options[] = {
    "cluster_size=64k",
    "compat=0.10",
    "cluster_size=512",
    "cluster_size=2M",
    "refcount_bits=1",
    "refcount_bits=2,cluster_size=512",
    "refcount_bits=64,cluster_size=4k",
    "extended_l2=on",
    "extended_l2=on,cluster_size=128k",
    "compression_type=zstd",
    "lazy_refcounts=on",
    "preallocation=metadata",
    "preallocation=full,cluster_size=16k",
};

static guint64 align_up(guint64 v, guint64 a) { return (v + a - 1) / a * a; }

static void write_workload(Pair *p, guint64 cs)
{
    pair_write(p, 0, 300 * 1024, 0x10);          /* several clusters */
    pair_write(p, 5000, 3, 0x20);                /* inside one */
    pair_write(p, 2 * MiB - 1000, 5000, 0x30);   /* across a boundary */
    pair_write(p, 3 * MiB + 512, 2 * MiB, 0x40); /* long, unaligned */
    pair_zero(p, 3 * MiB + 1024 * 64, 256 * 1024, TRUE);
    pair_zero(p, 100, 1000, FALSE);        /* partial cluster */
    pair_zero(p, 7 * MiB, 1 * MiB, FALSE); /* nothing there yet */
    pair_discard(p, align_up(4 * MiB, cs), cs * 2);
    pair_compressed(p, 6 * MiB, cs, 0x50);
    pair_write(p, 6 * MiB + 10, 20, 0x60); /* rewrite part of it */
    pair_compressed(p, 6 * MiB + cs * 2, cs, 0x70);
    pair_compressed(p, 6 * MiB + cs * 3, cs, 0x71);
    pair_write(p, p->size - 4096, 4096, 0x80); /* the very end */
}

static void finish_and_compare(Pair *p, const char *name)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_image_flush(p->img, &error));
    g_clear_pointer(&p->img, vd_image_unref);
    spill("expect.raw", p->model, p->size);
    assert_qemu_clean(name);
    assert_qemu_same("expect.raw", name);
}

static VdImage *create_image(const char *name, guint64 size, const char *opts)
{
    g_autoptr(VdOptions) o = vd_options_new();
    g_autoptr(GError) error = NULL;
    if (opts != NULL)
        g_assert_true(vd_options_parse(o, opts, &error));
    g_autofree char *p = tpath(name);
    g_assert_true(vd_image_create(p, "qcow2", size, o, &error));
    g_assert_no_error(error);
    return open_image(name, VD_OPEN_READ_WRITE);
}

static void test_write_options(void)
{
    for (guint i = 0; i < G_N_ELEMENTS(write_options); i++) {
        g_test_message("options %s", write_options[i]);
        Pair p = { .size = 16 * MiB };
        p.model = g_malloc0(p.size);
        p.img = create_image("w.qcow2", p.size, write_options[i]);
        write_workload(&p, vd_image_cluster_size(p.img));
        finish_and_compare(&p, "w.qcow2");
        /* And we read back what we wrote. */
        g_autoptr(VdImage) img = open_image("w.qcow2", 0);
        assert_reads_as(img, "expect.raw");
        g_free(p.model);
    }
}

static void test_write_backing_cow(void)
{
    static const char *const opts[] = { "cluster_size=64k", "extended_l2=on", "compat=0.10" };
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 cbase.qcow2 4M"), ==, 0);
    g_assert_cmpint(run(NULL, "qemu-io -c 'write -P 0x33 0 4M' cbase.qcow2"), ==, 0);
    g_assert_cmpint(run(NULL, "qemu-img convert -O raw cbase.qcow2 cbase.raw"), ==, 0);
    for (guint i = 0; i < G_N_ELEMENTS(opts); i++) {
        g_autofree char *o =
            g_strdup_printf("%s,backing_file=cbase.qcow2,backing_fmt=qcow2", opts[i]);
        Pair p = { .size = 4 * MiB };
        g_autoptr(GBytes) base = slurp("cbase.raw");
        p.model = g_memdup2(g_bytes_get_data(base, NULL), p.size);
        p.img = create_image("cow.qcow2", 0, o);
        g_assert_cmpuint(vd_image_size(p.img), ==, 4 * MiB);
        g_assert_false(vd_image_has_zero_init(p.img));
        pair_write(&p, 1000, 10, 0x44);      /* copy-on-write around it */
        pair_write(&p, 70000, 200000, 0x45); /* head and tail */
        pair_zero(&p, MiB, 100000, TRUE);    /* whole clusters flagged, edges written */
        /* Discarded clusters show the backing file again. */
        g_autoptr(GError) error = NULL;
        g_assert_true(vd_image_discard(p.img, 0, 65536, &error));
        memcpy(p.model, g_bytes_get_data(base, NULL), 65536);
        finish_and_compare(&p, "cow.qcow2");
        g_free(p.model);
    }
}

static void test_snapshots_api(void)
{
    Pair p = { .size = 4 * MiB };
    p.model = g_malloc0(p.size);
    p.img = create_image("sn.qcow2", p.size, "cluster_size=4k");
    pair_write(&p, 0, 2 * MiB, 0x01);
    pair_compressed(&p, 3 * MiB, 4096, 0x02);
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_image_create_snapshot(p.img, "first", &error));
    g_autofree guint8 *first = g_memdup2(p.model, p.size);
    pair_write(&p, 4096 + 100, 300000, 0x03); /* copy-on-write of shared clusters */
    pair_zero(&p, MiB, 64 * 1024, TRUE);
    pair_discard(&p, 3 * MiB, 4096);
    g_assert_true(vd_image_create_snapshot(p.img, "second", &error));
    /* A name that exists gives a second snapshot of that name, as in qemu. */
    g_assert_true(vd_image_create_snapshot(p.img, "second", &error));
    pair_write(&p, 0, 8192, 0x04);
    g_autoptr(GPtrArray) list = vd_image_list_snapshots(p.img, &error);
    g_assert_cmpuint(list->len, ==, 3);
    g_assert_cmpstr(((VdSnapshotInfo *)list->pdata[2])->id, ==, "3");
    g_assert_cmpstr(((VdSnapshotInfo *)list->pdata[2])->name, ==, "second");
    finish_and_compare(&p, "sn.qcow2");
    spill("first.raw", first, p.size);
    g_assert_cmpint(run(NULL, "qemu-img convert -l first -O raw sn.qcow2 qfirst.raw"), ==, 0);
    g_autoptr(GBytes) qfirst = slurp("qfirst.raw");
    g_assert_cmpmem(g_bytes_get_data(qfirst, NULL), g_bytes_get_size(qfirst), first, p.size);

    p.img = open_image("sn.qcow2", VD_OPEN_READ_WRITE);
    g_assert_true(vd_image_delete_snapshot(p.img, "second", &error));
    g_assert_true(vd_image_apply_snapshot(p.img, "first", &error));
    memcpy(p.model, first, p.size);
    pair_write(&p, 2 * MiB, 4096, 0x05);
    finish_and_compare(&p, "sn.qcow2");
    p.img = open_image("sn.qcow2", VD_OPEN_READ_WRITE);
    g_assert_true(vd_image_delete_snapshot(p.img, "1", &error));      /* by id */
    g_assert_true(vd_image_delete_snapshot(p.img, "second", &error)); /* the other one */
    g_assert_false(vd_image_delete_snapshot(p.img, "nope", &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_FOUND);
    g_clear_error(&error);
    finish_and_compare(&p, "sn.qcow2");
    g_free(p.model);
}

static void test_resize(void)
{
    Pair p = { .size = 2 * MiB };
    p.model = g_malloc0(64 * MiB);
    p.img = create_image("rs.qcow2", p.size, "cluster_size=512");
    pair_write(&p, 0, 4096, 0x09);
    g_autoptr(GError) error = NULL;
    /* 512-byte clusters: 64 MiB needs a bigger L1 table. */
    g_assert_true(vd_image_resize(p.img, 64 * MiB, FALSE, &error));
    g_assert_no_error(error);
    p.size = 64 * MiB;
    pair_write(&p, 60 * MiB, 4096, 0x0a);
    /* Shrinking over data drops it, as qemu-img does; growing again
     * shows zeroes there. */
    g_assert_true(vd_image_resize(p.img, 32 * MiB, TRUE, &error));
    g_assert_no_error(error);
    p.size = 32 * MiB;
    finish_and_compare(&p, "rs.qcow2");
    p.img = open_image("rs.qcow2", VD_OPEN_READ_WRITE);
    g_assert_true(vd_image_resize(p.img, 64 * MiB, FALSE, &error));
    memset(p.model + 60 * MiB, 0, 4096);
    p.size = 64 * MiB;
    finish_and_compare(&p, "rs.qcow2");
    g_free(p.model);
}

/* qemu's compress filter over a qcow2: writes of any alignment land as
 * whole compressed clusters (what they do not cover read from the image
 * first), reads and the size come from the image below. */
static void test_compress_filter(void)
{
    g_autoptr(GError) error = NULL;
    vd_image_unref(create_image("cf.qcow2", MiB, NULL));
    g_autofree char *path = tpath("cf.qcow2");
    g_autoptr(VdOptions) o = vd_options_new();
    vd_options_set(o, "file.driver", "qcow2");
    vd_options_set(o, "file.file.filename", path);
    g_assert_true(vd_format_is_fileless("compress"));
    VdImage *f = vd_image_open_fileless("compress", "cf", VD_OPEN_READ_WRITE, o, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(vd_image_size(f), ==, MiB);
    g_autofree guint8 *model = g_malloc0(MiB);
    memset(model + 1000, 0x5a, 200000);
    g_assert_true(vd_image_write(f, 1000, model + 1000, 200000, &error));
    memset(model + 200000, 0xa5, 10); /* into a cluster written compressed already */
    g_assert_true(vd_image_write(f, 200000, model + 200000, 10, &error));
    g_assert_no_error(error);
    g_autofree guint8 *back = g_malloc(MiB);
    g_assert_true(vd_image_read(f, 0, back, MiB, &error));
    g_assert_cmpmem(back, MiB, model, MiB);
    g_assert_true(vd_image_flush(f, &error));
    vd_image_unref(f);
    spill("expect.raw", model, MiB);
    assert_qemu_clean("cf.qcow2");
    assert_qemu_same("expect.raw", "cf.qcow2");
    g_autofree char *out = NULL;
    g_assert_cmpint(run(&out, "qemu-img check --output=json cf.qcow2"), ==, 0);
    g_assert_nonnull(strstr(out, "\"compressed-clusters\": 4,")); /* 0-256k */

    /* Below it, an image that takes no compressed clusters. */
    g_autofree char *raw = tpath("expect.raw");
    vd_options_set(o, "file.driver", "raw");
    vd_options_set(o, "file.file.filename", raw);
    g_assert_null(vd_image_open_fileless("compress", "cf", VD_OPEN_READ_WRITE, o, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
}

static void test_info(void)
{
    g_autoptr(VdImage) img = create_image("i.qcow2", MiB, "refcount_bits=8,extended_l2=on");
    g_autoptr(VdImageInfo) info = vd_image_get_info(img, NULL);
    g_assert_cmpuint(info->cluster_size, ==, 65536);
    g_assert_nonnull(info->format_specific);
    GVariantDict d;
    g_variant_dict_init(&d, info->format_specific);
    const char *compat = NULL, *ctype = NULL;
    gboolean ext = FALSE;
    gint32 bits = 0;
    g_assert_true(g_variant_dict_lookup(&d, "compat", "&s", &compat));
    g_assert_cmpstr(compat, ==, "1.1");
    g_assert_true(g_variant_dict_lookup(&d, "compression-type", "&s", &ctype));
    g_assert_cmpstr(ctype, ==, "zlib");
    g_assert_true(g_variant_dict_lookup(&d, "extended-l2", "b", &ext));
    g_assert_true(ext);
    g_assert_true(g_variant_dict_lookup(&d, "refcount-bits", "i", &bits));
    g_assert_cmpint(bits, ==, 8);
    g_variant_dict_clear(&d);
    g_assert_true(vd_image_has_zero_init(img));
}

static void test_create_refusals(void)
{
    static const char *const bad[] = {
        "compat=0.10,refcount_bits=8",
        "compat=v2,compression_type=zstd",
        "extended_l2=on,cluster_size=4k",
        "cluster_size=1000",
        "cluster_size=4M",
        "encryption=on",
        "encrypt.format=luks",
        "refcount_bits=3",
        "lazy_refcounts=on,compat=0.10",
    };
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(VdOptions) o = vd_options_new();
        g_autoptr(GError) error = NULL;
        g_assert_true(vd_options_parse(o, bad[i], &error));
        g_autofree char *p = tpath("bad-create.qcow2");
        g_assert_false(vd_image_create(p, "qcow2", MiB, o, &error));
        g_assert_nonnull(error);
        g_test_message("%s: %s", bad[i], error->message);
    }
}

/* ----- check and repair ----- */

static void test_check_repair(void)
{
    /* A dirty lazy-refcounts image whose writer died: opening it writable
     * rebuilds the refcounts first. */
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 -o lazy_refcounts=on d.qcow2 8M"), ==,
                    0);
    run(NULL, "qemu-io -c 'write -P 3 0 1M' -c 'sigraise 9' d.qcow2");
    g_assert_cmpint(run(NULL, "qemu-img convert -U -O raw d.qcow2 d.raw"), ==, 0);
    {
        g_autoptr(VdImage) img = open_image("d.qcow2", VD_OPEN_READ_WRITE);
        g_autoptr(VdImageInfo) info = vd_image_get_info(img, NULL);
        g_assert_false(info->dirty);
        assert_reads_as(img, "d.raw");
    }
    assert_qemu_clean("d.qcow2");

    /* A leaked cluster: the refcount of a cluster nothing uses. */
    g_autoptr(VdImage) img0 = create_image("l.qcow2", 4 * MiB, "cluster_size=4k");
    g_autoptr(GError) error = NULL;
    g_clear_pointer(&img0, vd_image_unref);
    g_autoptr(GBytes) file = slurp("l.qcow2");
    gsize len = g_bytes_get_size(file);
    /* Refcount block is cluster 2; refcount of cluster 20 (16-bit), which
     * the file holds (counts past its end are not looked at, as by
     * qemu-img). */
    gsize grown = MAX(len, 21 * 4096);
    guint8 *data = g_malloc0(grown);
    memcpy(data, g_bytes_get_data(file, NULL), len);
    data[2 * 4096 + 20 * 2 + 1] = 1;
    spill("l.qcow2", data, grown);
    g_free(data);
    g_autoptr(VdImage) img = open_image("l.qcow2", VD_OPEN_READ_WRITE);
    VdCheckResult res = { 0 };
    g_assert_true(vd_image_check(img, VD_CHECK_REPAIR_NONE, &res, &error));
    g_assert_cmpuint(res.leaks, ==, 1);
    vd_check_result_clear(&res);
    g_assert_true(vd_image_check(img, VD_CHECK_REPAIR_LEAKS, &res, &error));
    g_assert_cmpuint(res.leaks_fixed, ==, 1);
    g_assert_cmpuint(res.leaks, ==, 0);
    vd_check_result_clear(&res);
    g_clear_pointer(&img, vd_image_unref);
    assert_qemu_clean("l.qcow2");

    /* A refcount too low (corruption) is rebuilt with REPAIR_ERRORS. */
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 -o cluster_size=4k z.qcow2 4M"), ==, 0);
    g_assert_cmpint(run(NULL, "qemu-io -c 'write -P 6 0 64k' z.qcow2"), ==, 0);
    file = (g_bytes_unref(file), slurp("z.qcow2"));
    len = g_bytes_get_size(file);
    data = g_memdup2(g_bytes_get_data(file, NULL), len);
    data[2 * 4096 + 5 * 2 + 1] = 0; /* cluster 5 is data */
    spill("z.qcow2", data, len);
    g_free(data);
    img = open_image("z.qcow2", VD_OPEN_READ_WRITE | VD_OPEN_FOR_CHECK);
    g_assert_true(
        vd_image_check(img, VD_CHECK_REPAIR_ERRORS | VD_CHECK_REPAIR_LEAKS, &res, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(res.corruptions_fixed, >=, 1);
    g_assert_cmpuint(res.corruptions, ==, 0);
    vd_check_result_clear(&res);
    g_clear_pointer(&img, vd_image_unref);
    assert_qemu_clean("z.qcow2");
}

/* ----- corrupted images ----- */

static void patch(const char *name, guint64 offset, const void *bytes, gsize n)
{
    g_autoptr(GBytes) file = slurp(name);
    gsize len = g_bytes_get_size(file);
    guint8 *data = g_malloc0(MAX(len, offset + n));
    memcpy(data, g_bytes_get_data(file, NULL), len);
    memcpy(data + offset, bytes, n);
    spill(name, data, MAX(len, offset + n));
    g_free(data);
}

static void put_be64(guint8 *p, guint64 v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (guint8)(v >> (56 - 8 * i));
}

/* Open and read everything; some step must fail with an error. */
static void assert_fails_cleanly(const char *name, const char *expect)
{
    g_autofree char *p = tpath(name);
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(p, "qcow2", 0, &error);
    if (img != NULL) {
        g_autofree guint8 *buf = g_malloc(MiB);
        for (guint64 off = 0; off < vd_image_size(img) && error == NULL; off += MiB)
            vd_image_read(img, off, buf, MIN(MiB, vd_image_size(img) - off), &error);
    }
    g_assert_nonnull(error);
    g_test_message("%s: %s", name, error->message);
    if (expect != NULL && strstr(error->message, expect) == NULL)
        g_error("%s: '%s' does not say '%s'", name, error->message, expect);
}

static void test_corrupt(void)
{
    guint8 be[8];
    make_qemu_image("good.qcow2", "cluster_size=64k");
    g_autoptr(GBytes) good = slurp("good.qcow2");
    const guint8 *g = g_bytes_get_data(good, NULL);
    guint64 l1 = 0, rt = 0;
    for (int i = 0; i < 8; i++) {
        l1 = l1 << 8 | g[40 + i];
        rt = rt << 8 | g[48 + i];
    }
    const struct {
        guint64 offset;
        guint64 value;
        int width;
        const char *expect;
    } cases[] = {
        { 40, 0x7fffffffffff0000ull, 8, "L1 table" }, /* L1 offset */
        { 40, 0x10001ull, 8, "L1 table" },            /* unaligned */
        { 36, 0x7fffffffull, 4, "L1 table" },         /* huge L1 */
        { 48, 0x7fffffffffff0000ull, 8, "refcount table" },
        { 56, 0xffffffull, 4, "refcount table" },
        { 20, 30, 4, "cluster bits" },
        { 24, 0xffffffffffffffffull, 8, "size" },
        { 32, 1, 4, "opened without its passphrase" }, /* legacy AES, no key */
        { 72, 1ull << 40, 8, "feature" },
        { 100, 4096 * 1024, 4, "header length" },
        { 60, 0xffffffffull, 4, "snapshot" },
        { 16, 5000, 4, "backing file" },
        { l1, 0x8000000010000000ull, 8, "L1 entry 0 points past the end of the file" },
        { l1, 0x8000000000012345ull, 8, "aligned" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        spill("bad.qcow2", g, g_bytes_get_size(good));
        if (cases[i].offset == 16) {
            put_be64(be, 200); /* backing offset, then a too long name */
            patch("bad.qcow2", 8, be, 8);
        }
        put_be64(be, cases[i].value);
        patch("bad.qcow2", cases[i].offset, be + 8 - cases[i].width, cases[i].width);
        assert_fails_cleanly("bad.qcow2", cases[i].expect);
    }
    /* A compressed cluster whose descriptor runs past the end. */
    g_assert_cmpint(run(NULL, "qemu-img convert -c -O qcow2 -o cluster_size=4k good.qcow2 "
                              "cz.qcow2"),
                    ==, 0);
    g_autoptr(VdImage) img = open_image("cz.qcow2", 0);
    g_autoptr(GError) error = NULL;
    VdBlockStatus st;
    g_assert_true(vd_image_block_status(img, 0, 4096, FALSE, &st, &error));
    g_assert_true(st.flags & VD_BLOCK_COMPRESSED);
    g_clear_pointer(&img, vd_image_unref);
    g_autoptr(GBytes) cz = slurp("cz.qcow2");
    const guint8 *c = g_bytes_get_data(cz, NULL);
    guint64 cl1 = 0;
    for (int i = 0; i < 8; i++)
        cl1 = cl1 << 8 | c[40 + i];
    guint64 l2 = 0;
    for (int i = 0; i < 8; i++)
        l2 = l2 << 8 | c[cl1 + i];
    l2 &= 0x00fffffffffffe00ull;
    /* cluster_bits 12: the offset field has 58 bits, sectors above. */
    put_be64(be, (1ull << 62) | (15ull << 58) | (g_bytes_get_size(cz) - 100));
    patch("cz.qcow2", l2, be, 8);
    assert_fails_cleanly("cz.qcow2", "compressed");
    /* Garbage instead of compressed data. */
    spill("cz.qcow2", c, g_bytes_get_size(cz));
    guint64 e = 0;
    for (int i = 0; i < 8; i++)
        e = e << 8 | c[l2 + i];
    guint8 junk[64];
    memset(junk, 0xff, sizeof junk);
    patch("cz.qcow2", e & ((1ull << 58) - 1), junk, sizeof junk);
    assert_fails_cleanly("cz.qcow2", "decompress");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_autofree char *qemu_img = g_find_program_in_path("qemu-img");
    g_autofree char *qemu_io = g_find_program_in_path("qemu-io");
    if (qemu_img == NULL || qemu_io == NULL) {
        g_print("1..0 # SKIP qemu-img and qemu-io are needed\n");
        return 77;
    }
    tmpdir = g_dir_make_tmp("vdisk-qcow2-XXXXXX", NULL);
    g_assert_nonnull(tmpdir);
    g_test_add_func("/qcow2/read/options", test_read_options);
    g_test_add_func("/qcow2/read/block-status", test_read_block_status);
    g_test_add_func("/qcow2/read/compressed", test_read_compressed);
    g_test_add_func("/qcow2/read/backing", test_read_backing);
    g_test_add_func("/qcow2/read/snapshots", test_read_snapshots);
    g_test_add_func("/qcow2/write/options", test_write_options);
    g_test_add_func("/qcow2/write/backing-cow", test_write_backing_cow);
    g_test_add_func("/qcow2/write/snapshots", test_snapshots_api);
    g_test_add_func("/qcow2/write/resize", test_resize);
    g_test_add_func("/qcow2/info", test_info);
    g_test_add_func("/qcow2/create/refusals", test_create_refusals);
    g_test_add_func("/qcow2/check/repair", test_check_repair);
    g_test_add_func("/qcow2/corrupt", test_corrupt);
    g_test_add_func("/qcow2/compress-filter", test_compress_filter);
    int rc = g_test_run();
    g_autofree char *cmd = g_strdup_printf("rm -rf %s", tmpdir);
    if (g_getenv("VDISK_KEEP_TMP") == NULL)
        (void)system(cmd);
    g_free(tmpdir);
    return rc;
}
