/* Compression shared by the formats: raw deflate (qcow, qcow2), zlib
 * streams (vmdk) and zstd (qcow2).
 *
 * Every cluster and grain is a buffer of its own, so with libdeflate
 * (HAVE_LIBDEFLATE) both directions go through it: it deflates and
 * inflates whole buffers several times faster than zlib. zlib stays for
 * builds without it and for what libdeflate refuses when inflating (see
 * vd_inflate).
 *
 * libdeflate compresses with a 32 KiB window where qemu's zlib uses 4 KiB
 * for qcow and qcow2 clusters. qemu inflates a cluster in one call into a
 * buffer that holds the whole cluster, so a match may reach back to the
 * start of the cluster whatever window the writer used: qemu-img reads
 * such clusters (tests/unit/test-qcow2.c checks it on data that repeats
 * only at 12 KiB).
 *
 * Setting up a zlib deflate stream costs more than compressing a small
 * cluster (zlib allocates and clears about 270 KiB of state), and a
 * libdeflate compressor is as large, so each thread keeps one of each
 * kind and reuses it. The copy engine compresses and inflates on its
 * worker threads, which makes this pay off on every cluster.
 */
#include "vdisk-driver.h"

#include "config.h"

#include <zlib.h>
#include <zstd.h>
#if HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

/* The deflate window qemu uses for qcow and qcow2: 2^12 bytes. */
#define RAW_WINDOW_BITS (-12)
/* Inflating with the largest window reads streams of every window size. */
#define RAW_INFLATE_WINDOW_BITS (-MAX_WBITS)
#define ZLIB_WINDOW_BITS MAX_WBITS
/* libdeflate's level. Against qemu's zlib level 6, level 4 takes about
 * a third of the time and its output stays within 2%: smaller for 64 KiB
 * qcow2 clusters (its larger window), at most 1.5% larger for 512 B and
 * 4 KiB ones, at most 2% for vmdk grains (where zlib has the same 32 KiB
 * window); level 1 is 5-8% larger there. */
#define LIBDEFLATE_LEVEL 4

typedef struct {
    z_stream deflate[2]; /* per VdDeflateFormat */
    gboolean deflate_ready[2];
    z_stream inflate[2];
    gboolean inflate_ready[2];
    ZSTD_CCtx *zstd_c;
    ZSTD_DCtx *zstd_d;
#if HAVE_LIBDEFLATE
    struct libdeflate_compressor *ld_c;
    struct libdeflate_decompressor *ld_d;
#endif
} ThreadStreams;

static void thread_streams_free(gpointer data)
{
    ThreadStreams *ts = data;
    for (int i = 0; i < 2; i++) {
        if (ts->deflate_ready[i])
            deflateEnd(&ts->deflate[i]);
        if (ts->inflate_ready[i])
            inflateEnd(&ts->inflate[i]);
    }
    ZSTD_freeCCtx(ts->zstd_c);
    ZSTD_freeDCtx(ts->zstd_d);
#if HAVE_LIBDEFLATE
    if (ts->ld_c != NULL)
        libdeflate_free_compressor(ts->ld_c);
    if (ts->ld_d != NULL)
        libdeflate_free_decompressor(ts->ld_d);
#endif
    g_free(ts);
}

static GPrivate thread_streams = G_PRIVATE_INIT(thread_streams_free);

static ThreadStreams *streams(void)
{
    ThreadStreams *ts = g_private_get(&thread_streams);
    if (ts == NULL) {
        ts = g_new0(ThreadStreams, 1);
        g_private_set(&thread_streams, ts);
    }
    return ts;
}

/* Tests turn libdeflate off to check the zlib path of the same build. */
static gint use_libdeflate = HAVE_LIBDEFLATE;

gboolean vd_compress_use_libdeflate(gboolean use)
{
    if (!HAVE_LIBDEFLATE)
        return FALSE;
    g_atomic_int_set(&use_libdeflate, use);
    return TRUE;
}

/* ----- zlib ----- */

static z_stream *deflater(VdDeflateFormat format)
{
    ThreadStreams *ts = streams();
    z_stream *zs = &ts->deflate[format];
    if (ts->deflate_ready[format])
        return deflateReset(zs) == Z_OK ? zs : NULL;
    /* Raw clusters as qemu makes them (memLevel 9: the same output for the
     * same input); zlib grains as compress2() makes them (memLevel 8), the
     * setting compressBound() is computed for. */
    int bits = format == VD_DEFLATE_RAW ? RAW_WINDOW_BITS : ZLIB_WINDOW_BITS;
    int mem_level = format == VD_DEFLATE_RAW ? 9 : 8;
    if (deflateInit2(zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, bits, mem_level, Z_DEFAULT_STRATEGY) !=
        Z_OK)
        return NULL;
    ts->deflate_ready[format] = TRUE;
    return zs;
}

static z_stream *inflater(VdDeflateFormat format)
{
    ThreadStreams *ts = streams();
    z_stream *zs = &ts->inflate[format];
    if (ts->inflate_ready[format])
        return inflateReset(zs) == Z_OK ? zs : NULL;
    int bits = format == VD_DEFLATE_RAW ? RAW_INFLATE_WINDOW_BITS : ZLIB_WINDOW_BITS;
    if (inflateInit2(zs, bits) != Z_OK)
        return NULL;
    ts->inflate_ready[format] = TRUE;
    return zs;
}

static gsize zlib_deflate(VdDeflateFormat format, const void *in, gsize len, void *out,
                          gsize out_len)
{
    z_stream *zs = deflater(format);
    if (zs == NULL)
        return 0;
    zs->next_in = (Bytef *)in;
    zs->avail_in = (uInt)len;
    zs->next_out = out;
    zs->avail_out = (uInt)out_len;
    /* Anything but the end of the stream means the output did not fit. */
    return deflate(zs, Z_FINISH) == Z_STREAM_END ? out_len - zs->avail_out : 0;
}

static gboolean zlib_inflate(VdDeflateFormat format, const void *in, gsize len, void *out,
                             gsize out_len, gsize *produced, gboolean *complete)
{
    z_stream *zs = inflater(format);
    if (zs == NULL)
        return FALSE;
    zs->next_in = (Bytef *)in;
    zs->avail_in = (uInt)len;
    zs->next_out = out;
    zs->avail_out = (uInt)out_len;
    int ret = inflate(zs, Z_FINISH);
    *produced = out_len - zs->avail_out;
    *complete = ret == Z_STREAM_END;
    /* Z_BUF_ERROR: out of input or out of room, which the caller judges
     * from produced; anything else is damaged data. */
    return ret == Z_STREAM_END || ret == Z_OK || ret == Z_BUF_ERROR;
}

/* ----- libdeflate ----- */

#if HAVE_LIBDEFLATE
static gsize libdeflate_deflate(VdDeflateFormat format, const void *in, gsize len, void *out,
                                gsize out_len)
{
    ThreadStreams *ts = streams();
    if (ts->ld_c == NULL && (ts->ld_c = libdeflate_alloc_compressor(LIBDEFLATE_LEVEL)) == NULL)
        return 0;
    /* 0 when the output does not fit, as zlib_deflate. */
    if (format == VD_DEFLATE_RAW)
        return libdeflate_deflate_compress(ts->ld_c, in, len, out, out_len);
    return libdeflate_zlib_compress(ts->ld_c, in, len, out, out_len);
}

/* TRUE when libdeflate inflated a whole stream into out (its end may come
 * before out is full); FALSE leaves the buffer to zlib. */
static gboolean libdeflate_inflate(VdDeflateFormat format, const void *in, gsize len, void *out,
                                   gsize out_len, gsize *produced)
{
    ThreadStreams *ts = streams();
    if (ts->ld_d == NULL && (ts->ld_d = libdeflate_alloc_decompressor()) == NULL)
        return FALSE;
    size_t used_in, made;
    enum libdeflate_result ret =
        format == VD_DEFLATE_RAW
            ? libdeflate_deflate_decompress_ex(ts->ld_d, in, len, out, out_len, &used_in, &made)
            : libdeflate_zlib_decompress_ex(ts->ld_d, in, len, out, out_len, &used_in, &made);
    *produced = made;
    return ret == LIBDEFLATE_SUCCESS;
}
#endif

/* ----- the formats' entry points ----- */

gsize vd_deflate(VdDeflateFormat format, const void *in, gsize len, void *out, gsize out_len)
{
#if HAVE_LIBDEFLATE
    if (g_atomic_int_get(&use_libdeflate))
        return libdeflate_deflate(format, in, len, out, out_len);
#endif
    return zlib_deflate(format, in, len, out, out_len);
}

gboolean vd_inflate(VdDeflateFormat format, const void *in, gsize len, void *out, gsize out_len,
                    gsize *produced, gboolean *complete)
{
#if HAVE_LIBDEFLATE
    /* libdeflate answers a whole stream that fits; zlib, which qemu reads
     * with, judges the rest as before: a stream longer than out or cut
     * short (qcow2 accepts a full cluster either way, as qemu does), and
     * damaged data. */
    if (g_atomic_int_get(&use_libdeflate) &&
        libdeflate_inflate(format, in, len, out, out_len, produced)) {
        *complete = TRUE;
        return TRUE;
    }
#endif
    return zlib_inflate(format, in, len, out, out_len, produced, complete);
}

gsize vd_zstd_compress(const void *in, gsize len, void *out, gsize out_len)
{
    ThreadStreams *ts = streams();
    if (ts->zstd_c == NULL && (ts->zstd_c = ZSTD_createCCtx()) == NULL)
        return 0;
    size_t ret = ZSTD_compressCCtx(ts->zstd_c, out, out_len, in, len, ZSTD_CLEVEL_DEFAULT);
    return ZSTD_isError(ret) ? 0 : ret;
}

gboolean vd_zstd_decompress(const void *in, gsize len, void *out, gsize out_len)
{
    ThreadStreams *ts = streams();
    if (ts->zstd_d == NULL && (ts->zstd_d = ZSTD_createDCtx()) == NULL)
        return FALSE;
    ZSTD_DCtx_reset(ts->zstd_d, ZSTD_reset_session_only);
    ZSTD_inBuffer input = { in, len, 0 };
    ZSTD_outBuffer output = { out, out_len, 0 };
    /* Streaming, because the input may carry padding after the frame(s)
     * and a cluster may have been written as several frames. */
    while (output.pos < output.size) {
        size_t before_in = input.pos, before_out = output.pos;
        size_t ret = ZSTD_decompressStream(ts->zstd_d, &output, &input);
        if (ZSTD_isError(ret))
            return FALSE;
        if (input.pos == before_in && output.pos == before_out)
            return FALSE; /* no progress: truncated input */
    }
    return TRUE;
}
