/* qcow2 compressed clusters: raw deflate ("zlib" in QEMU's words, a 4 KiB
 * window and no zlib header) and zstd.
 *
 * Both directions are pure functions of their buffers, so the copy engine
 * may compress on several threads without the image lock.
 */
#include "qcow2.h"

#include <zlib.h>
#include <zstd.h>

/* QEMU writes raw deflate streams with a 2^12 byte window. */
#define QCOW2_DEFLATE_WINDOW_BITS (-12)

static gsize deflate_buffer(const void *in, gsize len, void *out, gsize out_len)
{
    z_stream strm = { 0 };
    if (deflateInit2(&strm, Z_DEFAULT_COMPRESSION, Z_DEFLATED, QCOW2_DEFLATE_WINDOW_BITS, 9,
                     Z_DEFAULT_STRATEGY) != Z_OK)
        return 0;
    strm.next_in = (Bytef *)in;
    strm.avail_in = (uInt)len;
    strm.next_out = out;
    strm.avail_out = (uInt)out_len;
    int ret = deflate(&strm, Z_FINISH);
    gsize produced = out_len - strm.avail_out;
    deflateEnd(&strm);
    /* Z_OK or Z_BUF_ERROR here mean the output did not fit. */
    return ret == Z_STREAM_END ? produced : 0;
}

static gboolean inflate_buffer(const void *in, gsize len, void *out, gsize out_len)
{
    z_stream strm = { 0 };
    if (inflateInit2(&strm, QCOW2_DEFLATE_WINDOW_BITS) != Z_OK)
        return FALSE;
    strm.next_in = (Bytef *)in;
    strm.avail_in = (uInt)len;
    strm.next_out = out;
    strm.avail_out = (uInt)out_len;
    int ret = inflate(&strm, Z_FINISH);
    gboolean full = strm.avail_out == 0;
    inflateEnd(&strm);
    /* The stored length is rounded up to sectors, so the input may go on
     * past the stream: a full output buffer is success even when inflate
     * did not see the end marker. */
    return full && (ret == Z_STREAM_END || ret == Z_OK || ret == Z_BUF_ERROR);
}

static gsize zstd_compress_buffer(const void *in, gsize len, void *out, gsize out_len)
{
    size_t ret = ZSTD_compress(out, out_len, in, len, ZSTD_CLEVEL_DEFAULT);
    return ZSTD_isError(ret) ? 0 : ret;
}

static gboolean zstd_decompress_buffer(const void *in, gsize len, void *out, gsize out_len)
{
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    if (dctx == NULL)
        return FALSE;
    ZSTD_inBuffer input = { in, len, 0 };
    ZSTD_outBuffer output = { out, out_len, 0 };
    gboolean ok = TRUE;
    /* Streaming, because the input may carry padding after the frame(s)
     * and a cluster may have been written as several frames. */
    while (output.pos < output.size) {
        size_t before_in = input.pos, before_out = output.pos;
        size_t ret = ZSTD_decompressStream(dctx, &output, &input);
        if (ZSTD_isError(ret)) {
            ok = FALSE;
            break;
        }
        if (input.pos == before_in && output.pos == before_out) {
            ok = FALSE; /* no progress: truncated input */
            break;
        }
    }
    ZSTD_freeDCtx(dctx);
    return ok && output.pos == output.size;
}

/* Compress len bytes; returns the compressed length, or 0 when it does not
 * fit in out_len bytes. */
gsize qcow2_compress_buffer(int type, const void *in, gsize len, void *out, gsize out_len)
{
    if (type == QCOW2_COMPRESSION_ZSTD)
        return zstd_compress_buffer(in, len, out, out_len);
    return deflate_buffer(in, len, out, out_len);
}

/* Decompress exactly out_len bytes; FALSE when the data is broken or
 * yields less. */
gboolean qcow2_decompress_buffer(int type, const void *in, gsize len, void *out, gsize out_len)
{
    if (type == QCOW2_COMPRESSION_ZSTD)
        return zstd_decompress_buffer(in, len, out, out_len);
    return inflate_buffer(in, len, out, out_len);
}
