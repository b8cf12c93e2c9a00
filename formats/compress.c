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
 * such clusters (tests/unit/test-compress.c checks it on data that
 * repeats only every 12 KiB).
 *
 * Setting up a zlib deflate stream costs more than compressing a small
 * cluster (zlib allocates and clears about 270 KiB of state), and a
 * libdeflate compressor is larger still (650 KiB at level 4), so each
 * thread keeps one of each kind and reuses it. The copy engine compresses and inflates on its
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
/* looks_incompressible: pieces it judges, and its table (twice the most
 * strings a piece samples). */
#define PIECE_BYTES 65536
#define SEEN_SLOTS 4096

typedef struct {
    z_stream deflate[2]; /* per VdDeflateFormat */
    gboolean deflate_ready[2];
    z_stream inflate[2];
    gboolean inflate_ready[2];
    ZSTD_CCtx *zstd_c;
    ZSTD_DCtx *zstd_d;
#if HAVE_LIBDEFLATE
    struct libdeflate_compressor *ld_c;
    struct libdeflate_compressor *ld_stored; /* level 0: stored blocks only */
    /* looks_incompressible's table of sampled 8-byte strings */
    guint64 seen[SEEN_SLOTS];
    guint32 seen_round[SEEN_SLOTS];
    guint32 round;
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
    if (ts->ld_stored != NULL)
        libdeflate_free_compressor(ts->ld_stored);
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
/* Is piece (4 KiB to 64 KiB) beyond deflate's reach: its bytes spread so
 * evenly that Huffman codes gain under 1%, and no string of a few dozen
 * bytes in it comes back (a match needs one)? Random, encrypted and
 * already compressed data is, and deflate spends most of its time on it
 * for nothing: half of a convert -c of a disk whose free space once held
 * such files.
 *
 * Evenness: the chi-square statistic of the byte counts (of every byte, or
 * every 4th in a large piece). Random data gives about 255 (its degrees of
 * freedom); an entropy short of 8 bits a byte by d adds about 2 n d ln 2,
 * so below 330 + n / 16 the bytes carry more than 7.95 bits each.
 *
 * Repeats: 8-byte strings sampled where a hash of their first 4 bytes has
 * 5 leading zero bits (1 position in 32, chosen by content, so a repeated
 * run is sampled alike in both copies) must all differ; a run of 100
 * bytes that comes back is caught 19 times in 20, one of 256 almost
 * surely. */
static gboolean piece_incompressible(ThreadStreams *ts, const guint8 *p, gsize len)
{
    guint32 count[256] = { 0 };
    gsize stride = len > 16384 ? 4 : 1, n = 0;
    for (gsize i = 0; i < len; i += stride, n++)
        count[p[i]]++;
    guint64 spread = 0;
    for (int b = 0; b < 256; b++) {
        gint64 d = 256 * (gint64)count[b] - (gint64)n;
        spread += (guint64)(d * d);
    }
    /* chi-square = spread / (256 n) */
    if (spread >= (guint64)256 * n * (330 + n / 16))
        return FALSE;
    if (++ts->round == 0) { /* wrapped: forget the old rounds' marks */
        memset(ts->seen_round, 0, sizeof ts->seen_round);
        ts->round = 1;
    }
    for (gsize i = 0; i + 8 <= len; i++) {
        guint32 head;
        memcpy(&head, p + i, 4);
        if ((head * 2654435761u) >> 27 != 0)
            continue;
        guint64 v;
        memcpy(&v, p + i, 8);
        guint32 slot = (guint32)((v * 0x9e3779b97f4a7c15ull) >> 52) & (SEEN_SLOTS - 1);
        for (; ts->seen_round[slot] == ts->round; slot = (slot + 1) & (SEEN_SLOTS - 1))
            if (ts->seen[slot] == v)
                return FALSE;
        ts->seen[slot] = v;
        ts->seen_round[slot] = ts->round;
    }
    return TRUE;
}

/* Every 64 KiB piece of buf is incompressible (deflate's window is 32 KiB,
 * so a repeat across pieces gains little). Buffers under 4 KiB are always
 * deflated: too small to judge, and cheap. */
static gboolean looks_incompressible(ThreadStreams *ts, const guint8 *buf, gsize len)
{
    if (len < 4096)
        return FALSE;
    for (gsize pos = 0; pos < len; pos += PIECE_BYTES) {
        gsize n = MIN((gsize)PIECE_BYTES, len - pos);
        if (n < 4096 && pos > 0)
            break; /* a short tail goes with the pieces before it */
        if (!piece_incompressible(ts, buf + pos, n))
            return FALSE;
    }
    return TRUE;
}

static gsize libdeflate_deflate(VdDeflateFormat format, const void *in, gsize len, void *out,
                                gsize out_len)
{
    ThreadStreams *ts = streams();
    struct libdeflate_compressor **c = &ts->ld_c;
    int level = LIBDEFLATE_LEVEL;
    /* Incompressible data goes into stored blocks at the speed of a copy:
     * as large as deflate would have made it (qcow2 then keeps the cluster
     * plain; a vmdk grain must be a stream), and as deterministic. */
    if (looks_incompressible(ts, in, len)) {
        c = &ts->ld_stored;
        level = 0;
    }
    if (*c == NULL && (*c = libdeflate_alloc_compressor(level)) == NULL)
        return 0;
    /* 0 when the output does not fit, as zlib_deflate. */
    if (format == VD_DEFLATE_RAW)
        return libdeflate_deflate_compress(*c, in, len, out, out_len);
    return libdeflate_zlib_compress(*c, in, len, out, out_len);
}

/* TRUE when libdeflate inflated a whole stream into out (its end may come
 * before out is full); FALSE leaves the buffer to zlib. */
static gboolean libdeflate_inflate(VdDeflateFormat format, const void *in, gsize len, void *out,
                                   gsize out_len, gsize *produced)
{
    ThreadStreams *ts = streams();
    if (ts->ld_d == NULL && (ts->ld_d = libdeflate_alloc_decompressor()) == NULL)
        return FALSE;
    size_t used_in = 0, made = 0;
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
