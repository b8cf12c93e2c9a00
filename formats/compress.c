/* Compression shared by the formats: raw deflate (qcow, qcow2), zlib
 * streams (vmdk) and zstd (qcow2).
 *
 * Setting up a deflate stream costs more than compressing a small cluster
 * (zlib allocates and clears about 270 KiB of state), so each thread keeps
 * one stream per flavour and resets it between clusters. The copy engine
 * compresses on its worker threads, which makes this pay off on every
 * cluster of a `convert -c`.
 */
#include "vdisk-driver.h"

#include <zlib.h>
#include <zstd.h>

/* The deflate window qemu uses for qcow and qcow2: 2^12 bytes. */
#define RAW_WINDOW_BITS (-12)
/* Inflating with the largest window reads streams of every window size. */
#define RAW_INFLATE_WINDOW_BITS (-MAX_WBITS)
#define ZLIB_WINDOW_BITS MAX_WBITS

typedef struct {
    z_stream deflate[2]; /* per VdDeflateFormat */
    gboolean deflate_ready[2];
    z_stream inflate[2];
    gboolean inflate_ready[2];
    ZSTD_CCtx *zstd_c;
    ZSTD_DCtx *zstd_d;
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

gsize vd_deflate(VdDeflateFormat format, const void *in, gsize len, void *out, gsize out_len)
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

gboolean vd_inflate(VdDeflateFormat format, const void *in, gsize len, void *out, gsize out_len,
                    gsize *produced, gboolean *complete)
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
