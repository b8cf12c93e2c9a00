/* Compressed clusters and grains (formats/compress.c), with qemu-img as the
 * oracle, through both of vdisk's deflate paths: libdeflate (when the build
 * has it) and zlib (vd_compress_use_libdeflate(FALSE), what a build without
 * libdeflate runs). What either writes qemu-img checks clean and compares
 * equal at every qcow2 cluster size, the same input gives the same bytes
 * twice, what qemu-img compresses either reads back, and both inflate the
 * same streams to the same answer.
 */
#include "vdisk-driver.h"
#include "vdisk.h"

#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test-util.h"

#define KiB 1024u
#define MiB (1024u * 1024u)
/* Not a multiple of any cluster: the last one is padded. */
#define SOURCE_SIZE (6 * MiB + 3584)

/* ----- the oracle ----- */

static int run(const char *const *argv)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *out = NULL, *err = NULL;
    int status;
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err,
                      &status, &error))
        g_error("cannot run %s: %s", argv[0], error->message);
    if (!g_spawn_check_wait_status(status, NULL))
        g_test_message("%s failed: %s%s", argv[0], out, err);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#define RUN(...)                                           \
    ({                                                     \
        const char *const argv_[] = { __VA_ARGS__, NULL }; \
        run(argv_);                                        \
    })

static void qemu_agrees(const char *raw, const char *image, const char *format)
{
    /* qemu-img has no check for qcow (version 1). */
    if (!g_str_equal(format, "qcow"))
        g_assert_cmpint(RUN("qemu-img", "check", "-q", "-f", format, image), ==, 0);
    g_assert_cmpint(RUN("qemu-img", "compare", "-q", "-f", "raw", "-F", format, raw, image), ==, 0);
}

/* ----- the two paths ----- */

typedef struct {
    const char *name;
    gboolean libdeflate;
} Path;

static const Path paths[] = { { "libdeflate", TRUE }, { "zlib", FALSE } };

/* Switch to path p; FALSE (and a message) when this build lacks it. */
static gboolean use_path(const Path *p)
{
    if (vd_compress_use_libdeflate(p->libdeflate) || !p->libdeflate)
        return TRUE;
    g_test_message("built without libdeflate: only the zlib path is tested");
    return FALSE;
}

/* ----- source data ----- */

static void fill_text(guint8 *p, gsize len, GRand *r)
{
    static const char *const words[] = { "request", "completed", "user", "session", "cache",
                                         "hit",     "worker",    "disk", "block",   "image" };
    gsize i = 0;
    while (i < len) {
        g_autofree char *line = g_strdup_printf(
            "%08u %s %s %u\n", g_rand_int_range(r, 0, 100000000), words[g_rand_int_range(r, 0, 10)],
            words[g_rand_int_range(r, 0, 10)], g_rand_int_range(r, 0, 9999));
        gsize n = MIN(strlen(line), len - i);
        memcpy(p + i, line, n);
        i += n;
    }
}

/* Low-entropy data that repeats only every 12 KiB: the matches lie
 * farther back than qemu's 4 KiB deflate window. */
static void fill_far_repeats(guint8 *p, gsize len, GRand *r)
{
    guint8 block[12 * KiB];
    for (gsize i = 0; i < sizeof block; i++)
        block[i] = (guint8)('a' + g_rand_int_range(r, 0, 16));
    for (gsize i = 0; i < len; i += sizeof block)
        memcpy(p + i, block, MIN(sizeof block, len - i));
}

/* A 10 KiB block of random permutations of the 256 byte values, repeated:
 * its bytes are spread perfectly evenly, so a byte count alone would call
 * it incompressible, yet deflate packs it to a fraction. */
static void fill_random_repeats(guint8 *p, gsize len, GRand *r)
{
    guint8 block[10 * KiB];
    for (gsize at = 0; at < sizeof block; at += 256) {
        for (int i = 0; i < 256; i++)
            block[at + i] = (guint8)i;
        for (int i = 255; i > 0; i--) {
            int j = g_rand_int_range(r, 0, i + 1);
            guint8 t = block[at + i];
            block[at + i] = block[at + j];
            block[at + j] = t;
        }
    }
    for (gsize i = 0; i < len; i += sizeof block)
        memcpy(p + i, block, MIN(sizeof block, len - i));
}

typedef enum { MIXED, FAR_REPEATS, RANDOM_REPEATS } Source;

static char *make_source(Fixture *fx, const char *name, Source what)
{
    g_autoptr(GRand) r = g_rand_new_with_seed(14);
    g_autofree guint8 *buf = g_malloc0(SOURCE_SIZE);
    if (what == FAR_REPEATS) {
        fill_far_repeats(buf, SOURCE_SIZE, r);
    } else if (what == RANDOM_REPEATS) {
        fill_random_repeats(buf, SOURCE_SIZE, r);
    } else {
        gsize pos = 0;
        for (int kind = 0; pos < SOURCE_SIZE; kind = (kind + 1) % 5) {
            gsize n = MIN(SOURCE_SIZE - pos, 100 * KiB + (gsize)g_rand_int_range(r, 0, 300 * KiB));
            if (kind == 0)
                fill_text(buf + pos, n, r);
            else if (kind == 1)
                for (gsize i = 0; i < n; i++)
                    buf[pos + i] = (guint8)g_rand_int(r);
            else if (kind == 3)
                fill_far_repeats(buf + pos, n, r);
            else if (kind == 4)
                fill_random_repeats(buf + pos, n, r);
            /* kind 2: zeroes */
            pos += n;
        }
    }
    char *path = path_in(fx, name);
    g_assert_true(g_file_set_contents(path, (const char *)buf, SOURCE_SIZE, NULL));
    return path;
}

/* Worker threads of the next converts (0: the engine's choice). */
static guint convert_threads;

static void convert(const char *src, const char *src_format, const char *dst, const char *format,
                    const char *key, const char *value, gboolean compress)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) in = vd_image_open(src, src_format, 0, &error);
    g_assert_no_error(error);
    g_autoptr(VdOptions) opts = vd_options_new();
    if (key != NULL)
        vd_options_set(opts, key, value);
    VdConvertOptions co;
    vd_convert_options_init(&co);
    co.target_format = format;
    co.create_options = opts;
    co.compress = compress;
    co.threads = convert_threads;
    g_assert_true(vd_convert(in, dst, &co, &error));
    g_assert_no_error(error);
}

static GBytes *slurp(const char *path)
{
    char *data;
    gsize len;
    g_assert_true(g_file_get_contents(path, &data, &len, NULL));
    return g_bytes_new_take(data, len);
}

static guint64 file_size(const char *path)
{
    struct stat st;
    g_assert_cmpint(stat(path, &st), ==, 0);
    return (guint64)st.st_size;
}

/* Read all of image through vdisk and compare it with the raw file. */
static void vdisk_reads_as(const char *image, const char *format, const char *raw)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(image, format, 0, &error);
    g_assert_no_error(error);
    g_autoptr(GBytes) want = slurp(raw);
    g_assert_cmpuint(vd_image_size(img), ==, g_bytes_get_size(want));
    g_autofree guint8 *buf = g_malloc(g_bytes_get_size(want));
    g_assert_true(vd_image_read(img, 0, buf, g_bytes_get_size(want), &error));
    g_assert_no_error(error);
    g_assert_true(memcmp(buf, g_bytes_get_data(want, NULL), g_bytes_get_size(want)) == 0);
    /* Pieces that start and end inside compressed units (the driver's
     * read) and span whole ones (inflated without the lock). */
    memset(buf, 0, g_bytes_get_size(want));
    for (gsize off = 0; off < g_bytes_get_size(want);) {
        gsize n = MIN(70001, g_bytes_get_size(want) - off);
        g_assert_true(vd_image_read(img, off, buf + off, n, &error));
        g_assert_no_error(error);
        off += n;
    }
    g_assert_true(memcmp(buf, g_bytes_get_data(want, NULL), g_bytes_get_size(want)) == 0);
}

/* A vmdk's bytes with its descriptor's CID (random per image) zeroed. */
static GBytes *without_cid(const char *path)
{
    char *data;
    gsize len;
    g_assert_true(g_file_get_contents(path, &data, &len, NULL));
    char *cid = memmem(data, MIN(len, 64 * KiB), "\nCID=", 5);
    g_assert_nonnull(cid);
    g_assert_cmpuint(cid + 14 - data, <=, len);
    memset(cid + 5, '0', 8);
    return g_bytes_new_take(data, len);
}

static guint64 compressed_clusters(const char *path)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, "qcow2", 0, &error);
    g_assert_no_error(error);
    VdCheckResult res = { 0 };
    g_assert_true(vd_image_check(img, VD_CHECK_REPAIR_NONE, &res, &error));
    g_assert_no_error(error);
    guint64 n = res.compressed_clusters;
    vd_check_result_clear(&res);
    return n;
}

/* ----- writing ----- */

static const char *const cluster_sizes[] = { "512", "1k", "4k", "64k", "2M" };

/* convert -c to qcow2 at every cluster size, through both paths: qemu-img
 * finds each clean and equal to the source, each run gives the same bytes,
 * and the other path reads it back. */
static void test_qcow2_cluster_sizes(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *src = make_source(fx, "src.raw", MIXED);
    g_autofree char *a = path_in(fx, "a.qcow2");
    g_autofree char *b = path_in(fx, "b.qcow2");
    for (gsize p = 0; p < G_N_ELEMENTS(paths); p++) {
        if (!use_path(&paths[p]))
            continue;
        for (gsize c = 0; c < G_N_ELEMENTS(cluster_sizes); c++) {
            g_test_message("%s, cluster_size=%s", paths[p].name, cluster_sizes[c]);
            convert(src, "raw", a, "qcow2", "cluster_size", cluster_sizes[c], TRUE);
            qemu_agrees(src, a, "qcow2");
            /* Compressed: well below the source's 6 MiB, a fifth random
             * (2 MiB metadata clusters alone make more). */
            g_assert_cmpuint(compressed_clusters(a), >, 0);
            if (c < G_N_ELEMENTS(cluster_sizes) - 1)
                g_assert_cmpuint(file_size(a), <, SOURCE_SIZE * 3 / 4);
            if (paths[p].libdeflate) {
                /* No more than 3% larger than zlib at qemu's settings
                 * makes it (the same metadata on both sides). */
                vd_compress_use_libdeflate(FALSE);
                convert(src, "raw", b, "qcow2", "cluster_size", cluster_sizes[c], TRUE);
                vd_compress_use_libdeflate(TRUE);
                g_test_message("%" G_GUINT64_FORMAT " bytes, zlib %" G_GUINT64_FORMAT, file_size(a),
                               file_size(b));
                g_assert_cmpuint(file_size(a) * 100, <=, file_size(b) * 103);
            }
            /* The same bytes again, from one worker instead of several. */
            convert_threads = 1;
            convert(src, "raw", b, "qcow2", "cluster_size", cluster_sizes[c], TRUE);
            convert_threads = 0;
            g_autoptr(GBytes) ba = slurp(a);
            g_autoptr(GBytes) bb = slurp(b);
            g_assert_true(g_bytes_equal(ba, bb));
            vd_compress_use_libdeflate(!paths[p].libdeflate);
            vdisk_reads_as(a, "qcow2", src);
            use_path(&paths[p]);
        }
    }
    vd_compress_use_libdeflate(TRUE);
}

/* libdeflate's matches reach back past qemu's 4 KiB window (the far
 * repeats shrink to a fraction of what zlib's 4 KiB window makes of
 * them), and qemu-img reads such clusters. */
static void test_qcow2_far_matches(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    if (!vd_compress_use_libdeflate(TRUE)) {
        g_test_skip("built without libdeflate");
        return;
    }
    g_autofree char *src = make_source(fx, "far.raw", FAR_REPEATS);
    g_autofree char *ld = path_in(fx, "ld.qcow2");
    g_autofree char *zl = path_in(fx, "zl.qcow2");
    static const char *const sizes[] = { "64k", "256k", "2M" };
    for (gsize c = 0; c < G_N_ELEMENTS(sizes); c++) {
        g_test_message("far repeats, cluster_size=%s", sizes[c]);
        vd_compress_use_libdeflate(TRUE);
        convert(src, "raw", ld, "qcow2", "cluster_size", sizes[c], TRUE);
        vd_compress_use_libdeflate(FALSE);
        convert(src, "raw", zl, "qcow2", "cluster_size", sizes[c], TRUE);
        vd_compress_use_libdeflate(TRUE);
        qemu_agrees(src, ld, "qcow2");
        qemu_agrees(src, zl, "qcow2");
        g_assert_cmpuint(compressed_clusters(ld), >, 0);
        g_assert_cmpuint(compressed_clusters(zl), >, 0);
        g_test_message("far repeats, cluster_size=%s: libdeflate %" G_GUINT64_FORMAT
                       " bytes, zlib %" G_GUINT64_FORMAT,
                       sizes[c], file_size(ld), file_size(zl));
        /* (2 MiB metadata clusters would hide the gap.) */
        if (c < G_N_ELEMENTS(sizes) - 1)
            g_assert_cmpuint(file_size(ld) * 2, <, file_size(zl));
    }
    /* Evenly spread bytes that repeat every 10 KiB must not pass for
     * incompressible data; compressed, they take less than half. */
    g_autofree char *rnd = make_source(fx, "rnd.raw", RANDOM_REPEATS);
    convert(rnd, "raw", ld, "qcow2", "cluster_size", "64k", TRUE);
    qemu_agrees(rnd, ld, "qcow2");
    g_assert_cmpuint(file_size(ld), <, SOURCE_SIZE / 2);
}

/* streamOptimized vmdk (zlib grains) and qcow version 1 through both paths:
 * qemu-img agrees, and each run gives the same bytes. */
static void test_vmdk_and_qcow(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *src = make_source(fx, "src.raw", MIXED);
    g_autofree char *a = path_in(fx, "a.vmdk");
    g_autofree char *b = path_in(fx, "b.vmdk");
    g_autofree char *q = path_in(fx, "a.qcow");
    g_autofree char *q2 = path_in(fx, "b.qcow");
    for (gsize p = 0; p < G_N_ELEMENTS(paths); p++) {
        if (!use_path(&paths[p]))
            continue;
        g_test_message("%s", paths[p].name);
        convert(src, "raw", a, "vmdk", "subformat", "streamOptimized", FALSE);
        qemu_agrees(src, a, "vmdk");
        g_assert_cmpuint(file_size(a), <, SOURCE_SIZE * 3 / 4);
        g_assert_cmpint(g_rename(a, b), ==, 0);
        convert(src, "raw", a, "vmdk", "subformat", "streamOptimized", FALSE);
        g_autoptr(GBytes) ba = without_cid(a);
        g_autoptr(GBytes) bb = without_cid(b);
        g_assert_true(g_bytes_equal(ba, bb));

        convert(src, "raw", q, "qcow", NULL, NULL, TRUE);
        qemu_agrees(src, q, "qcow");
        g_assert_cmpuint(file_size(q), <, SOURCE_SIZE * 2 / 3);
        convert(src, "raw", q2, "qcow", NULL, NULL, TRUE);
        g_autoptr(GBytes) qa = slurp(q);
        g_autoptr(GBytes) qb = slurp(q2);
        g_assert_true(g_bytes_equal(qa, qb));

        vd_compress_use_libdeflate(!paths[p].libdeflate);
        vdisk_reads_as(a, "vmdk", src);
        vdisk_reads_as(q, "qcow", src);
    }
    vd_compress_use_libdeflate(TRUE);
}

/* ----- reading what qemu-img compressed ----- */

static void test_qemu_written(Fixture *fx, gconstpointer data)
{
    if (!have_qemu())
        return;
    g_autofree char *src = make_source(fx, "src.raw", MIXED);
    g_autofree char *img = path_in(fx, "q.img");
    for (gsize c = 0; c < G_N_ELEMENTS(cluster_sizes); c++) {
        g_autofree char *opt = g_strdup_printf("cluster_size=%s", cluster_sizes[c]);
        g_assert_cmpint(
            RUN("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", opt, src, img), ==,
            0);
        for (gsize p = 0; p < G_N_ELEMENTS(paths); p++)
            if (use_path(&paths[p]))
                vdisk_reads_as(img, "qcow2", src);
    }
    g_assert_cmpint(RUN("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
                        "subformat=streamOptimized", src, img),
                    ==, 0);
    for (gsize p = 0; p < G_N_ELEMENTS(paths); p++)
        if (use_path(&paths[p]))
            vdisk_reads_as(img, "vmdk", src);
    /* qemu-img 7.2's convert -c -O qcow writes the whole image but exits
     * 1 without a word at the end (it compresses only whole clusters, so
     * the source is some); compare says whether the image is right. */
    g_assert_cmpint(truncate(src, 6 * MiB), ==, 0);
    g_unlink(img);
    RUN("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow", src, img);
    g_assert_cmpint(RUN("qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow", src, img), ==, 0);
    for (gsize p = 0; p < G_N_ELEMENTS(paths); p++)
        if (use_path(&paths[p]))
            vdisk_reads_as(img, "qcow", src);
    vd_compress_use_libdeflate(TRUE);
}

/* ----- vd_inflate: both paths give the same answer ----- */

typedef struct {
    gboolean ok;
    gsize produced;
    gboolean complete;
    guint8 *out;
} Inflated;

static Inflated inflate_with(const Path *p, VdDeflateFormat format, const guint8 *in, gsize len,
                             gsize out_len)
{
    Inflated r = { .out = g_malloc0(out_len + 1) };
    use_path(p);
    r.ok = vd_inflate(format, in, len, r.out, out_len, &r.produced, &r.complete);
    return r;
}

/* Whole, padded, cut short, too long for the buffer, and damaged streams
 * of both flavours: the libdeflate path answers exactly as zlib does (the
 * callers' rules, such as qcow2 taking a full cluster from a stream that
 * goes on, rest on those answers). */
static void test_inflate_agrees(Fixture *fx, gconstpointer data)
{
    g_autoptr(GRand) r = g_rand_new_with_seed(5);
    const gsize n = 64 * KiB;
    g_autofree guint8 *plain = g_malloc(n);
    fill_text(plain, n / 2, r);
    fill_far_repeats(plain + n / 2, n / 2, r);
    for (int format = VD_DEFLATE_RAW; format <= VD_DEFLATE_ZLIB; format++) {
        for (gsize w = 0; w < G_N_ELEMENTS(paths); w++) {
            if (!use_path(&paths[w]))
                continue;
            gsize cap = vd_compress_bound(n);
            g_autofree guint8 *packed = g_malloc0(cap + 512);
            gsize plen = vd_deflate(format, plain, n, packed, cap);
            g_assert_cmpuint(plen, >, 0);
            g_assert_cmpuint(plen, <, n / 2);
            /* A buffer too small for the stream gives 0, as zlib does. */
            g_autofree guint8 *small = g_malloc(plen);
            g_assert_cmpuint(vd_deflate(format, plain, n, small, plen - 1), ==, 0);

            g_autofree guint8 *damaged = g_memdup2(packed, plen);
            for (gsize i = plen / 3; i < plen / 3 + 64; i++)
                damaged[i] ^= 0x5a;
            struct {
                const char *what;
                const guint8 *in;
                gsize len, out_len;
            } cases[] = {
                { "whole", packed, plen, n },           { "padded", packed, plen + 512, n },
                { "roomy", packed, plen, n + 4096 },    { "cut short", packed, plen / 2, n },
                { "too long", packed, plen, n - 4096 }, { "damaged", damaged, plen, n },
            };
            for (gsize c = 0; c < G_N_ELEMENTS(cases); c++) {
                Inflated z =
                    inflate_with(&paths[1], format, cases[c].in, cases[c].len, cases[c].out_len);
                for (gsize p = 0; p < G_N_ELEMENTS(paths); p++) {
                    if (!use_path(&paths[p]))
                        continue;
                    Inflated x = inflate_with(&paths[p], format, cases[c].in, cases[c].len,
                                              cases[c].out_len);
                    g_test_message("format %d, written by %s, %s, read by %s: ok %d produced %zu "
                                   "complete %d",
                                   format, paths[w].name, cases[c].what, paths[p].name, x.ok,
                                   x.produced, x.complete);
                    g_assert_cmpint(x.ok, ==, z.ok);
                    if (z.ok) {
                        g_assert_cmpuint(x.produced, ==, z.produced);
                        g_assert_cmpint(x.complete, ==, z.complete);
                        g_assert_true(memcmp(x.out, z.out, x.produced) == 0);
                    }
                    g_free(x.out);
                }
                if (c < 3)
                    g_assert_true(z.ok && z.complete && z.produced == n &&
                                  memcmp(z.out, plain, n) == 0);
                g_free(z.out);
            }
        }
    }
    vd_compress_use_libdeflate(TRUE);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
    ADD("/compress/inflate-agrees", test_inflate_agrees);
    ADD("/compress/qcow2/cluster-sizes", test_qcow2_cluster_sizes);
    ADD("/compress/qcow2/far-matches", test_qcow2_far_matches);
    ADD("/compress/vmdk-and-qcow", test_vmdk_and_qcow);
    ADD("/compress/qemu-written", test_qemu_written);
    return g_test_run();
}
