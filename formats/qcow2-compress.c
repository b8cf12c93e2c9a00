/* qcow2 compressed clusters: raw deflate ("zlib" in QEMU's words, a 4 KiB
 * window and no zlib header) and zstd.
 *
 * Both directions are pure functions of their buffers, so the copy engine
 * may compress on several threads without the image lock.
 */
#include "qcow2.h"

/* Compress len bytes; returns the compressed length, or 0 when it does not
 * fit in out_len bytes. */
gsize qcow2_compress_buffer(int type, const void *in, gsize len, void *out, gsize out_len)
{
    if (type == QCOW2_COMPRESSION_ZSTD)
        return vd_zstd_compress(in, len, out, out_len);
    return vd_deflate(VD_DEFLATE_RAW, in, len, out, out_len);
}

/* Decompress exactly out_len bytes; FALSE when the data is broken or
 * yields less. */
gboolean qcow2_decompress_buffer(int type, const void *in, gsize len, void *out, gsize out_len)
{
    if (type == QCOW2_COMPRESSION_ZSTD)
        return vd_zstd_decompress(in, len, out, out_len);
    /* The stored length is rounded up to sectors, so the input may go on
     * past the stream: a full output buffer is success even when inflate
     * did not see the end marker. */
    gsize produced;
    gboolean complete;
    return vd_inflate(VD_DEFLATE_RAW, in, len, out, out_len, &produced, &complete) &&
           produced == out_len;
}
