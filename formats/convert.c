/* The copy engine behind convert, clone, import and export.
 *
 * The guest range is cut into chunks. Worker threads each take the next
 * chunk, ask the source's block status (holes are never read), read the
 * data, find zero blocks, compress when asked, and turn the chunk into a
 * short list of writes. Writes then happen in chunk order, so the target is
 * laid out sequentially and formats that must be written front to back
 * (streamOptimized) work; reading and compressing of later chunks goes on
 * meanwhile. Memory is a few chunk buffers per worker.
 */
#include "vdisk-driver.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK_BYTES (2u << 20)
#define DEFAULT_MIN_SPARSE 4096
#define MAX_THREADS 16

typedef enum {
    OP_DATA,       /* write buf */
    OP_ZERO,       /* make the range read zero */
    OP_COMPRESSED, /* store a compressed cluster */
} OpKind;

typedef struct {
    OpKind kind;
    guint64 offset;
    guint64 len;       /* guest bytes */
    const guint8 *buf; /* OP_DATA: len bytes; OP_COMPRESSED: packed_len bytes */
    gsize packed_len;
    /* OP_DATA: where the same bytes lie plainly in a source file, or NULL
     * (then only buf has them). */
    VdFile *src;
    guint64 src_offset;
} WriteOp;

typedef struct {
    VdImage *src; /* the first source */
    /* Every source and where it starts in the concatenation; one entry
     * past the last holds the total size. */
    VdImage **srcs;
    guint64 *starts;
    guint n_srcs;
    VdImage *dst;
    const VdConvertOptions *opts;
    guint64 size;
    guint64 chunk;
    guint32 cluster;      /* compression unit */
    guint64 sparse_block; /* zero detection unit; 0 = none */
    gboolean top_only;    /* -B: copy only the source's top layer */
    gboolean skip_zeroes; /* the target reads zero where nothing is written */
    gboolean in_order;
    gboolean offload; /* data may go file to file (vd_image_write_from_file) */

    GMutex lock;
    GCond turn;
    guint64 next_chunk; /* next chunk index to hand out */
    guint64 next_write; /* chunk index whose writes go next */
    guint64 done;       /* guest bytes finished */
    GError *error;      /* first failure; stops everyone */
    gint64 started;     /* monotonic time the copy began, for -r */
    guint64 limited;    /* data bytes counted against -r so far */
} CopyJob;

typedef struct {
    guint8 *data;   /* one chunk of guest data */
    guint8 *packed; /* compressed clusters of the chunk */
    gsize packed_used;
    GArray *ops; /* WriteOp */
} Worker;

/* ----- the sources, one after another ----- */

/* The source holding guest offset (of the concatenation). */
static guint source_at(const CopyJob *job, guint64 offset)
{
    guint i = 0;
    while (i + 1 < job->n_srcs && offset >= job->starts[i + 1])
        i++;
    return i;
}

/* Under --salvage, the block status of [offset, +len) of img where it
 * cannot be read: asked again for a quarter of the range at a time, as
 * qemu-img asks, down to the one sector that fails, which is reported (at
 * base + offset) and taken as data (reading it then decides). */
static gboolean salvage_status(const VdConvertOptions *opts, VdImage *img, guint64 base,
                               guint64 offset, guint64 len, gboolean chain, VdBlockStatus *st,
                               GError **error)
{
    for (;;) {
        GError *local = NULL;
        if (vd_image_block_status(img, offset, len, chain, st, &local))
            return TRUE;
        if (!opts->salvage) {
            g_propagate_error(error, local);
            return FALSE;
        }
        guint64 sectors = (len + 511) / 512;
        if (sectors <= 1) {
            if (opts->status_salvaged != NULL)
                opts->status_salvaged(base + offset, local, opts->progress_data);
            g_error_free(local);
            memset(st, 0, sizeof *st);
            st->flags = VD_BLOCK_DATA | VD_BLOCK_ALLOCATED;
            st->length = len;
            return TRUE;
        }
        g_error_free(local);
        len = MIN(len, (sectors + 3) / 4 * 512);
    }
}

/* Block status at offset, cut at the end of its source; *local gets the
 * offset within that source. */
static gboolean src_block_status(CopyJob *job, guint64 offset, guint64 len, gboolean chain,
                                 VdBlockStatus *st, guint64 *local, GError **error)
{
    guint i = source_at(job, offset);
    *local = offset - job->starts[i];
    len = MIN(len, job->starts[i + 1] - offset);
    return salvage_status(job->opts, job->srcs[i], job->starts[i], *local, len, chain, st, error);
}

/* qemu-img's first pass under --salvage: the block status of the sources
 * from end to end, whose failures it reports once before copying. */
static void salvage_count(VdImage *const *srcs, const guint64 *starts, guint n_srcs, gboolean chain,
                          const VdConvertOptions *opts)
{
    for (guint i = 0; i < n_srcs; i++) {
        guint64 size = starts[i + 1] - starts[i];
        for (guint64 offset = 0; offset < size;) {
            VdBlockStatus st;
            if (!salvage_status(opts, srcs[i], starts[i], offset, size - offset, chain, &st, NULL))
                return;
            offset += MAX(st.length, 1);
        }
    }
}

static void salvaged(CopyJob *job, guint64 offset, guint64 len, const GError *error)
{
    if (job->opts->salvaged != NULL)
        job->opts->salvaged(offset, len, error, job->opts->progress_data);
}

/* Under --salvage: read [offset, +len) of source i sector by sector, the
 * sectors that fail as zeroes, each run of them reported once. */
static void salvage_read(CopyJob *job, guint i, guint64 offset, guint8 *buf, guint64 len)
{
    guint64 bad_from = 0, bad_len = 0;
    g_autoptr(GError) first = NULL;
    for (guint64 pos = 0; pos < len;) {
        guint64 n = MIN(512 - (offset + pos) % 512, len - pos);
        GError *error = NULL;
        if (vd_image_read(job->srcs[i], offset + pos, buf + pos, n, &error)) {
            if (bad_len > 0)
                salvaged(job, job->starts[i] + bad_from, bad_len, first);
            bad_len = 0;
            g_clear_error(&first);
        } else {
            memset(buf + pos, 0, n);
            if (bad_len == 0) {
                bad_from = offset + pos;
                first = error;
                error = NULL;
            }
            bad_len += n;
            g_clear_error(&error);
        }
        pos += n;
    }
    if (bad_len > 0)
        salvaged(job, job->starts[i] + bad_from, bad_len, first);
}

/* Read guest bytes of the concatenation, across sources. */
static gboolean src_read(CopyJob *job, guint64 offset, guint8 *buf, guint64 len, GError **error)
{
    while (len > 0) {
        guint i = source_at(job, offset);
        guint64 local = offset - job->starts[i];
        guint64 n = MIN(len, job->starts[i + 1] - offset);
        GError *local_error = NULL;
        if (!vd_image_read(job->srcs[i], local, buf, n, &local_error)) {
            if (!job->opts->salvage) {
                g_propagate_prefixed_error(error, local_error,
                                           "error while reading at byte %" G_GUINT64_FORMAT ": ",
                                           offset);
                return FALSE;
            }
            g_error_free(local_error);
            salvage_read(job, i, local, buf, n);
        }
        offset += n;
        buf += n;
        len -= n;
    }
    return TRUE;
}

/* ----- building the write list of one chunk ----- */

/* Nothing stored, or stored but known to read zero (a hole under
 * preallocated metadata): either way there is nothing to read. */
static gboolean reads_zero(const VdBlockStatus *st)
{
    return (st->flags & VD_BLOCK_ZERO) || !(st->flags & VD_BLOCK_DATA);
}

/* Append an op; src (OP_DATA, may be NULL) says where its bytes lie in a
 * source file. */
static void add_op_from(Worker *w, OpKind kind, guint64 offset, guint64 len, const guint8 *buf,
                        VdFile *src, guint64 src_offset)
{
    WriteOp *last = w->ops->len > 0 ? &g_array_index(w->ops, WriteOp, w->ops->len - 1) : NULL;
    /* Adjacent ranges of the same kind become one write. */
    if (last != NULL && kind != OP_COMPRESSED && last->kind == kind &&
        last->offset + last->len == offset &&
        (kind == OP_ZERO ||
         ((buf == NULL ? last->buf == NULL : last->buf + last->len == buf) && last->src == src &&
          (src == NULL || last->src_offset + last->len == src_offset)))) {
        last->len += len;
        return;
    }
    WriteOp op = {
        .kind = kind, .offset = offset, .len = len, .buf = buf, .src = src, .src_offset = src_offset
    };
    g_array_append_val(w->ops, op);
}

static void add_op(Worker *w, OpKind kind, guint64 offset, guint64 len, const guint8 *buf)
{
    add_op_from(w, kind, offset, len, buf, NULL, 0);
}

/* Split data that was read into data and zero runs of sparse_block units
 * (aligned to guest offsets, as qemu-img's -S works). src, when not NULL,
 * holds the same bytes plainly from src_offset on. */
static void add_data_run(CopyJob *job, Worker *w, guint64 offset, guint64 len, const guint8 *buf,
                         VdFile *src, guint64 src_offset)
{
    if (job->sparse_block == 0) {
        add_op_from(w, OP_DATA, offset, len, buf, src, src_offset);
        return;
    }
    guint64 pos = 0;
    while (pos < len) {
        guint64 abs = offset + pos;
        guint64 n = MIN(job->sparse_block - abs % job->sparse_block, len - pos);
        gboolean zero = vd_buffer_is_zero(buf + pos, n);
        add_op_from(w, zero ? OP_ZERO : OP_DATA, abs, n, buf + pos, src, src_offset + pos);
        pos += n;
    }
}

/* Where a data run the source's block status answered lies plainly in a
 * file, for copying it file to file; NULL when it does not (compressed,
 * encrypted, a format that does not say) or offload is off. The data is
 * still read where zero detection needs it. */
static VdFile *plain_source(CopyJob *job, const VdBlockStatus *st, guint64 local, guint64 len,
                            guint64 *src_offset)
{
    guint64 run;
    /* Data read for zero detection goes from memory unless it can be
     * shared: asking where it lies would cost a lookup for nothing. */
    if (!job->offload || st->layer == NULL || !(st->flags & VD_BLOCK_OFFSET_VALID) ||
        (st->flags & VD_BLOCK_COMPRESSED) ||
        (job->sparse_block != 0 && !vd_file_may_clone(job->dst->file)))
        return NULL;
    VdFile *file = vd_image_plain_location(st->layer, local, len, src_offset, &run);
    return file != NULL && run >= len ? file : NULL;
}

static gboolean add_compressed_cluster(CopyJob *job, Worker *w, guint64 offset, guint64 len,
                                       const guint8 *buf)
{
    /* -S 0 allocates every cluster, zeroes too (compressed, as qemu-img). */
    if (job->sparse_block != 0 && vd_buffer_is_zero(buf, len)) {
        add_op(w, OP_ZERO, offset, len, buf);
        return TRUE;
    }
    guint8 *out = w->packed + w->packed_used;
    gsize packed = vd_image_compress(job->dst, buf, len, out, vd_compress_bound(len));
    if (packed == 0) {
        add_op(w, OP_DATA, offset, len, buf); /* incompressible: store as is */
        return TRUE;
    }
    WriteOp op = {
        .kind = OP_COMPRESSED, .offset = offset, .len = len, .buf = out, .packed_len = packed
    };
    g_array_append_val(w->ops, op);
    w->packed_used += packed;
    return TRUE;
}

/* Compression works on whole target clusters: read each cluster that holds
 * any data (holes inside it read as zero) and pack it. */
static gboolean plan_compressed(CopyJob *job, Worker *w, guint64 start, guint64 len, GError **error)
{
    for (guint64 pos = 0; pos < len;) {
        guint64 offset = start + pos;
        guint64 n = MIN((guint64)job->cluster, len - pos);
        VdBlockStatus st;
        guint64 local;
        if (!src_block_status(job, offset, n, !job->top_only, &st, &local, error))
            return FALSE;
        gboolean whole = st.length == n;
        if (whole && !(st.flags & VD_BLOCK_ALLOCATED) && job->top_only) {
            pos += n; /* the target's backing file holds it */
            continue;
        }
        if (whole && reads_zero(&st) && job->sparse_block != 0) {
            add_op(w, OP_ZERO, offset, n, w->data + pos);
        } else {
            if (!src_read(job, offset, w->data + pos, n, error))
                return FALSE;
            if (!add_compressed_cluster(job, w, offset, n, w->data + pos))
                return FALSE;
        }
        pos += n;
    }
    return TRUE;
}

static gboolean plan_plain(CopyJob *job, Worker *w, guint64 start, guint64 len, GError **error)
{
    for (guint64 pos = 0; pos < len;) {
        guint64 offset = start + pos;
        VdBlockStatus st;
        guint64 local;
        if (!src_block_status(job, offset, len - pos, !job->top_only, &st, &local, error))
            return FALSE;
        guint64 n = st.length;
        if (job->top_only && !(st.flags & VD_BLOCK_ALLOCATED)) {
            /* left to the target's backing file */
        } else if (reads_zero(&st) && job->sparse_block != 0) {
            add_op(w, OP_ZERO, offset, n, w->data + pos);
        } else {
            guint64 src_offset = 0;
            VdFile *src = plain_source(job, &st, local, n, &src_offset);
            if (src != NULL && job->sparse_block == 0) {
                /* No zero detection (-S 0): the bytes need not pass
                 * through memory at all. */
                add_op_from(w, OP_DATA, offset, n, NULL, src, src_offset);
            } else if (src_read(job, offset, w->data + pos, n, error)) {
                add_data_run(job, w, offset, n, w->data + pos, src, src_offset);
            } else {
                return FALSE;
            }
        }
        pos += n;
    }
    return TRUE;
}

/* ----- carrying out the write list ----- */

static gboolean perform_op(CopyJob *job, const WriteOp *op, GError **error)
{
    switch (op->kind) {
    case OP_DATA:
        if (op->src != NULL)
            return vd_image_write_from_file(job->dst, op->offset, op->src, op->src_offset, op->len,
                                            op->buf, error);
        return vd_image_write(job->dst, op->offset, op->buf, op->len, error);
    case OP_ZERO:
        if (job->skip_zeroes)
            return TRUE;
        return vd_image_write_zeroes(job->dst, op->offset, op->len, TRUE, error);
    case OP_COMPRESSED:
        return vd_image_write_precompressed(job->dst, op->offset, op->buf, op->packed_len, error);
    }
    return TRUE;
}

static gboolean perform_ops(CopyJob *job, Worker *w, GError **error)
{
    for (guint i = 0; i < w->ops->len; i++)
        if (!perform_op(job, &g_array_index(w->ops, WriteOp, i), error))
            return FALSE;
    return TRUE;
}

/* ----- the workers ----- */

static gboolean job_failed_locked(CopyJob *job)
{
    if (job->error == NULL && job->opts->cancellable != NULL &&
        g_cancellable_is_cancelled(job->opts->cancellable))
        g_set_error(&job->error, VD_ERROR, VD_ERROR_CANCELLED, "the copy was cancelled");
    return job->error != NULL;
}

static void fail(CopyJob *job, GError *error)
{
    g_mutex_lock(&job->lock);
    if (job->error == NULL)
        job->error = error;
    else
        g_error_free(error);
    g_cond_broadcast(&job->turn);
    g_mutex_unlock(&job->lock);
}

/* Wait until it is chunk index's turn to write; FALSE when the job failed. */
static gboolean wait_turn(CopyJob *job, guint64 index)
{
    g_mutex_lock(&job->lock);
    while (job->in_order && job->next_write != index && job->error == NULL)
        g_cond_wait(&job->turn, &job->lock);
    gboolean ok = job->error == NULL;
    g_mutex_unlock(&job->lock);
    return ok;
}

static void finish_turn(CopyJob *job, guint64 bytes)
{
    g_mutex_lock(&job->lock);
    job->next_write++;
    job->done += bytes;
    if (job->opts->progress != NULL)
        job->opts->progress(job->done, job->size, job->opts->progress_data);
    g_cond_broadcast(&job->turn);
    g_mutex_unlock(&job->lock);
}

/* -r: count the chunk's data against the limit and wait until copying it
 * keeps the average within it (in steps, so that a cancel is seen). */
static void rate_wait(CopyJob *job, Worker *w)
{
    guint64 bytes = 0;
    for (guint i = 0; i < w->ops->len; i++) {
        const WriteOp *op = &g_array_index(w->ops, WriteOp, i);
        if (op->kind != OP_ZERO)
            bytes += op->len;
    }
    if (job->opts->rate_limit == 0 || bytes == 0)
        return;
    g_mutex_lock(&job->lock);
    job->limited += bytes;
    gint64 due = job->started +
                 (gint64)((double)job->limited * G_USEC_PER_SEC / (double)job->opts->rate_limit);
    g_mutex_unlock(&job->lock);
    for (gint64 now = g_get_monotonic_time(); now < due; now = g_get_monotonic_time()) {
        if (job->opts->cancellable != NULL && g_cancellable_is_cancelled(job->opts->cancellable))
            return;
        g_usleep((gulong)MIN(due - now, G_USEC_PER_SEC / 10));
    }
}

static gboolean claim_chunk(CopyJob *job, guint64 *index)
{
    g_mutex_lock(&job->lock);
    gboolean ok = !job_failed_locked(job) && job->next_chunk * job->chunk < job->size;
    if (ok)
        *index = job->next_chunk++;
    g_mutex_unlock(&job->lock);
    return ok;
}

/* Room for every cluster of a chunk compressed, worst case. */
static gsize packed_capacity(const CopyJob *job)
{
    return (gsize)(job->chunk / job->cluster) * vd_compress_bound(job->cluster);
}

static gpointer worker_main(gpointer data)
{
    CopyJob *job = data;
    Worker w = {
        .data = g_malloc(job->chunk),
        .packed = job->opts->compress ? g_malloc(packed_capacity(job)) : NULL,
        .ops = g_array_new(FALSE, FALSE, sizeof(WriteOp)),
    };
    guint64 index;
    while (claim_chunk(job, &index)) {
        guint64 start = index * job->chunk;
        guint64 len = MIN(job->chunk, job->size - start);
        GError *error = NULL;
        g_array_set_size(w.ops, 0);
        w.packed_used = 0;
        gboolean ok = job->opts->compress ? plan_compressed(job, &w, start, len, &error)
                                          : plan_plain(job, &w, start, len, &error);
        if (ok)
            rate_wait(job, &w);
        if (ok && !wait_turn(job, index))
            break;
        if (ok)
            ok = perform_ops(job, &w, &error);
        if (!ok) {
            fail(job, error);
            break;
        }
        finish_turn(job, len);
    }
    g_free(w.data);
    g_free(w.packed);
    g_array_unref(w.ops);
    return NULL;
}

static guint thread_count(const VdConvertOptions *opts)
{
    if (opts->threads > 0)
        return MIN(opts->threads, MAX_THREADS);
    /* Plain copies are I/O bound: two workers overlap a read with a write.
     * Compression wants every core. */
    guint cpus = g_get_num_processors();
    return opts->compress ? CLAMP(cpus, 2, 8) : 2;
}

void vd_convert_options_init(VdConvertOptions *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->min_sparse = DEFAULT_MIN_SPARSE;
}

static gboolean check_compress(VdImage *target, const VdConvertOptions *opts, GError **error)
{
    /* qemu-img's words; not the file's name, which for a new target is
     * the hidden one it is made under. */
    if (opts->compress && !vd_image_can_write_compressed(target)) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "Compression not supported for this file format (%s)", vd_image_format(target));
        return FALSE;
    }
    return TRUE;
}

/* The size of all sources together. */
static guint64 sources_size(VdImage *source, const VdConvertOptions *opts)
{
    guint64 size = vd_image_size(source);
    for (guint i = 0; i < opts->n_more_sources; i++)
        size += vd_image_size(opts->more_sources[i]);
    return size;
}

/* Streaming hints for the files of a copy (an image that is no file,
 * null-co, has none to give them to). */
static void set_streaming(VdImage *target, VdImage *const *srcs, guint n_srcs, gboolean on)
{
    if (target->file != NULL)
        vd_file_set_streaming(target->file, on);
    for (guint i = 0; i < n_srcs; i++)
        for (VdImage *layer = srcs[i]; layer != NULL; layer = layer->backing)
            if (layer->file != NULL)
                vd_file_set_read_streaming(layer->file, on);
}

gboolean vd_copy_image(VdImage *source, VdImage *target, const VdConvertOptions *opts,
                       GError **error)
{
    guint64 size = sources_size(source, opts);
    if (vd_image_size(target) < size) {
        vd_set_error(error, target, VD_ERROR_INVALID_ARGUMENT,
                     "target is smaller (%" G_GUINT64_FORMAT
                     " bytes) than the source %s (%" G_GUINT64_FORMAT " bytes)",
                     vd_image_size(target), vd_image_filename(source), size);
        return FALSE;
    }
    if (!check_compress(target, opts, error))
        return FALSE;
    guint n_srcs = 1 + opts->n_more_sources;
    g_autofree VdImage **srcs = g_new(VdImage *, n_srcs);
    g_autofree guint64 *starts = g_new(guint64, n_srcs + 1);
    srcs[0] = source;
    starts[0] = 0;
    for (guint i = 0; i < n_srcs; i++) {
        if (i > 0)
            srcs[i] = opts->more_sources[i - 1];
        starts[i + 1] = starts[i] + vd_image_size(srcs[i]);
    }
    CopyJob job = {
        .src = source,
        .srcs = srcs,
        .starts = starts,
        .n_srcs = n_srcs,
        .dst = target,
        .opts = opts,
        .size = size,
        .started = g_get_monotonic_time(),
        .top_only = opts->backing_file != NULL,
        .sparse_block = opts->min_sparse,
        .in_order = !opts->out_of_order || vd_image_needs_sequential_writes(target),
    };
    job.cluster = vd_image_cluster_size(target);
    if (job.cluster == 0)
        job.cluster = 65536;
    /* A chunk holds whole target clusters so compression never splits one. */
    job.chunk = MAX((guint64)CHUNK_BYTES, job.cluster) / job.cluster * job.cluster;
    job.offload = !opts->no_copy_offload && vd_image_can_write_from_file(target);
    job.skip_zeroes = opts->min_sparse != 0 && !job.top_only &&
                      (opts->target_exists ? opts->target_is_zero : vd_image_has_zero_init(target));
    g_mutex_init(&job.lock);
    g_cond_init(&job.turn);

    if (opts->salvage)
        salvage_count(srcs, starts, n_srcs, !job.top_only, opts);
    /* Under --salvage one thread, so that its reports come in order. */
    guint n = opts->salvage ? 1 : thread_count(opts);
    GThread *threads[MAX_THREADS];
    set_streaming(target, srcs, n_srcs, TRUE);
    for (guint i = 0; i < n; i++)
        threads[i] = g_thread_new("vdisk-copy", worker_main, &job);
    for (guint i = 0; i < n; i++)
        g_thread_join(threads[i]);
    set_streaming(target, srcs, n_srcs, FALSE);

    g_mutex_clear(&job.lock);
    g_cond_clear(&job.turn);
    if (job.error == NULL && opts->cancellable != NULL &&
        g_cancellable_is_cancelled(opts->cancellable))
        g_set_error(&job.error, VD_ERROR, VD_ERROR_CANCELLED, "the copy was cancelled");
    if (job.error != NULL) {
        g_propagate_error(error, job.error);
        return FALSE;
    }
    /* Everything written is on stable storage before success, unless the
     * target was opened VD_OPEN_NO_FLUSH (cache=unsafe). */
    return vd_image_flush(target, error);
}

/* ----- convert: create the target, copy, and clean up on failure ----- */

static VdOptions *options_copy(VdOptions *opts);

/* Nothing to convert: the source's file is already the image a convert
 * into its own format with these options makes (its driver says so), so
 * the target may share all of its extents, which costs metadata only
 * (a clone on XFS or btrfs). Data clusters stay as the source stores them. */
static gboolean whole_file_clonable(VdImage *source, const VdConvertOptions *opts)
{
    g_autoptr(VdOptions) create = NULL;
    /* An image open for writing may have metadata not yet in its file. */
    if (opts->no_copy_offload || opts->compress || opts->target_exists || source->read_write ||
        opts->n_more_sources > 0 || opts->backing_file != NULL || source->backing != NULL ||
        source->drv->same_as_new == NULL || !g_str_equal(opts->target_format, source->drv->name))
        return FALSE;
    create = options_copy(opts->create_options);
    return source->drv->same_as_new(source, create);
}

/* Share source's whole file with the new, empty target file; *cloned
 * says whether that happened (else target is untouched and the copy goes
 * the usual way). The target is synced as a copy's would be. */
static gboolean clone_whole_file(VdImage *source, VdFile *target, const VdConvertOptions *opts,
                                 gboolean *cloned, GError **error)
{
    vd_file_set_no_flush(target, (opts->target_open_flags & VD_OPEN_NO_FLUSH) != 0);
    if (!vd_file_clone(source->file, target, cloned, error))
        return FALSE;
    if (!*cloned)
        return TRUE;
    if (!vd_file_sync(target, error))
        return FALSE;
    if (opts->progress != NULL)
        opts->progress(source->size, source->size, opts->progress_data);
    return TRUE;
}

static gboolean same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

static gboolean refuse_overwriting_chain(VdImage *source, const char *target_path, GError **error)
{
    for (VdImage *layer = source; layer != NULL; layer = vd_image_backing(layer)) {
        if (same_file(vd_image_filename(layer), target_path)) {
            vd_set_file_error(error, target_path, VD_ERROR_INVALID_ARGUMENT,
                              "the target is the source image %s itself; converting in "
                              "place would destroy it: write to a new file, then rename it",
                              vd_image_filename(layer));
            return FALSE;
        }
    }
    return TRUE;
}

static VdOptions *options_copy(VdOptions *opts)
{
    VdOptions *copy = vd_options_new();
    if (opts != NULL) {
        g_autoptr(GPtrArray) keys = vd_options_keys(opts);
        for (guint i = 0; i < keys->len; i++)
            vd_options_set(copy, keys->pdata[i], vd_options_get(opts, keys->pdata[i]));
    }
    return copy;
}

static VdOptions *target_create_options(const VdConvertOptions *opts)
{
    VdOptions *copy = options_copy(opts->create_options);
    if (opts->backing_file != NULL) {
        vd_options_set(copy, "backing_file", opts->backing_file);
        if (opts->backing_format != NULL)
            vd_options_set(copy, "backing_fmt", opts->backing_format);
    }
    return copy;
}

/* The options that open the target: target_open_options, or else the key
 * a new encrypted target is made with (its create options name it). */
static VdOptions *target_open_options(const VdConvertOptions *opts)
{
    if (opts->target_open_options != NULL)
        return options_copy(opts->target_open_options);
    VdOptions *keys = vd_options_new();
    static const char *const names[] = { "encrypt.key-secret", "key-secret" };
    for (gsize i = 0; i < G_N_ELEMENTS(names); i++) {
        const char *id = vd_options_get(opts->create_options, names[i]);
        if (id != NULL)
            vd_options_set(keys, names[i], id);
    }
    return keys;
}

static VdImage *open_or_create_target(VdImage *source, const char *path,
                                      const VdConvertOptions *opts, gboolean *created,
                                      GError **error)
{
    *created = FALSE;
    if (!opts->target_exists) {
        g_autoptr(VdOptions) create = target_create_options(opts);
        if (!vd_image_create_flags(path, opts->target_format, sources_size(source, opts), create,
                                   opts->secrets, opts->target_open_flags, error))
            return NULL;
        *created = TRUE;
    }
    g_autoptr(VdOptions) open_opts = target_open_options(opts);
    return vd_image_open_opts(path, opts->target_format,
                              VD_OPEN_READ_WRITE | opts->target_open_flags, open_opts,
                              opts->secrets, error);
}

/* A new target is written under a hidden name next to it and renamed into
 * place once complete (and on stable storage), so that a crash or a power
 * cut never leaves a file at the target's name that looks like a finished
 * image; an interrupted run leaves only the hidden file, which no one takes
 * for the disk. A vmdk names its extents (and a monolithic one itself)
 * after the descriptor's name, so it is made under its own name inside a
 * hidden folder next to the target, and its files are moved out of it,
 * the descriptor last; with a relative backing file, which would resolve
 * from inside that folder, it is made in place. So is an existing device,
 * symbolic link or other special file, as qemu-img does. */
typedef struct {
    char *path;   /* where the target is made */
    char *folder; /* the hidden folder holding it, or NULL */
} Partial;

static void partial_remove(const Partial *p)
{
    if (p->folder == NULL) {
        unlink(p->path);
        return;
    }
    g_autoptr(GDir) folder = g_dir_open(p->folder, 0, NULL);
    const char *entry;
    while (folder != NULL && (entry = g_dir_read_name(folder)) != NULL) {
        g_autofree char *path = g_build_filename(p->folder, entry, NULL);
        unlink(path);
    }
    g_rmdir(p->folder);
}

/* Remove what an earlier convert to the same target left when it was
 * killed: ".BASE.partial-PID" files (or a vmdk's folder of them) whose
 * process is gone. One that is still running keeps its file. */
static void remove_stale_partials(const char *dir, const char *base)
{
    g_autofree char *prefix = g_strdup_printf(".%s.partial-", base);
    g_autoptr(GDir) folder = g_dir_open(dir, 0, NULL);
    const char *entry;
    while (folder != NULL && (entry = g_dir_read_name(folder)) != NULL) {
        guint64 pid;
        if (!g_str_has_prefix(entry, prefix) ||
            !g_ascii_string_to_unsigned(entry + strlen(prefix), 10, 1, G_MAXINT, &pid, NULL) ||
            kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        g_autofree char *path = g_build_filename(dir, entry, NULL);
        struct stat st;
        if (lstat(path, &st) < 0)
            continue;
        Partial stale = { .path = path, .folder = S_ISDIR(st.st_mode) ? path : NULL };
        if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))
            partial_remove(&stale);
    }
}

static gboolean partial_plan(const char *target_path, const VdConvertOptions *opts, Partial *p)
{
    struct stat st;
    memset(p, 0, sizeof *p);
    if (opts->target_exists || (lstat(target_path, &st) == 0 && !S_ISREG(st.st_mode)))
        return FALSE;
    gboolean vmdk = g_str_equal(opts->target_format, "vmdk");
    if (vmdk && opts->backing_file != NULL && !g_path_is_absolute(opts->backing_file))
        return FALSE;
    g_autofree char *dir = g_path_get_dirname(target_path);
    g_autofree char *base = g_path_get_basename(target_path);
    g_autofree char *name = g_strdup_printf(".%s.partial-%d", base, (int)getpid());
    remove_stale_partials(dir, base);
    if (!vmdk) {
        p->path = g_build_filename(dir, name, NULL);
        return TRUE;
    }
    p->folder = g_build_filename(dir, name, NULL);
    if (g_mkdir(p->folder, 0755) < 0 && errno != EEXIST) {
        g_clear_pointer(&p->folder, g_free);
        return FALSE;
    }
    p->path = g_build_filename(p->folder, base, NULL);
    return TRUE;
}

/* Move the files a vmdk made beside its descriptor (its extents) out of
 * the hidden folder, next to the target. */
static gboolean partial_move_extents(const Partial *p, const char *target_path, GError **error)
{
    g_autofree char *dir = g_path_get_dirname(target_path);
    g_autofree char *base = g_path_get_basename(p->path);
    g_autoptr(GDir) folder = g_dir_open(p->folder, 0, error);
    if (folder == NULL)
        return FALSE;
    const char *entry;
    while ((entry = g_dir_read_name(folder)) != NULL) {
        if (g_str_equal(entry, base))
            continue;
        g_autofree char *from = g_build_filename(p->folder, entry, NULL);
        g_autofree char *to = g_build_filename(dir, entry, NULL);
        if (rename(from, to) < 0) {
            vd_set_file_error(error, to, VD_ERROR_IO, "cannot move %s into place: %s", from,
                              g_strerror(errno));
            return FALSE;
        }
    }
    return TRUE;
}

/* Move what was made into place, the target itself last. */
static gboolean partial_finish(const Partial *p, const char *target_path, GError **error)
{
    if (p->folder != NULL && !partial_move_extents(p, target_path, error))
        return FALSE;
    if (rename(p->path, target_path) < 0) {
        vd_set_file_error(error, target_path, VD_ERROR_IO, "cannot rename %s into place: %s",
                          p->path, g_strerror(errno));
        return FALSE;
    }
    if (p->folder != NULL)
        g_rmdir(p->folder);
    return TRUE;
}

static void partial_clear(Partial *p)
{
    g_free(p->path);
    g_free(p->folder);
}

/* A file at the target's name that a new image is renamed over must not be
 * in use (a running VM's disk): checked as qemu-img create checks it, and
 * held so until the rename. *guard stays NULL where nothing is there. */
static gboolean guard_replaced_file(const char *target_path, VdFile **guard, GError **error)
{
    struct stat st;
    *guard = NULL;
    if (lstat(target_path, &st) < 0 || !S_ISREG(st.st_mode))
        return TRUE;
    VdFile *file = vd_file_open(target_path, FALSE, NULL);
    if (file == NULL)
        return TRUE; /* the rename replaces it; nobody can be using it through us */
    if (!vd_file_lock(file, VD_LOCK_CREATE, error)) {
        vd_file_close(file);
        return FALSE;
    }
    *guard = file;
    return TRUE;
}

gboolean vd_convert(VdImage *source, const char *target_path, const VdConvertOptions *opts,
                    GError **error)
{
    if (opts->target_format == NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "no target format given");
        return FALSE;
    }
    if (!refuse_overwriting_chain(source, target_path, error))
        return FALSE;
    for (guint i = 0; i < opts->n_more_sources; i++)
        if (!refuse_overwriting_chain(opts->more_sources[i], target_path, error))
            return FALSE;
    gboolean created = FALSE;
    /* An NBD export is written in place: there is no folder to make a
     * hidden file in, and nothing to remove on failure. So is a Ceph RBD
     * image, removed again when this made it and the copy failed. */
    if (vd_nbd_is_name(target_path) || vd_rbd_is_name(target_path)) {
        g_autoptr(VdImage) target =
            open_or_create_target(source, target_path, opts, &created, error);
        gboolean ok = target != NULL && vd_copy_image(source, target, opts, error);
        g_clear_pointer(&target, vd_image_unref);
        if (!ok && created && vd_rbd_is_name(target_path))
            (void)vd_rbd_remove(target_path, NULL);
        return ok;
    }
    Partial partial;
    g_autoptr(VdFile) replaced = NULL;
    if (!opts->target_exists && !guard_replaced_file(target_path, &replaced, error))
        return FALSE;
    gboolean hidden = partial_plan(target_path, opts, &partial);
    if (!hidden) /* made in place: its own create takes the lock */
        g_clear_pointer(&replaced, vd_file_close);
    const char *path = hidden ? partial.path : target_path;
    gboolean ok = TRUE, cloned = FALSE;
    if (hidden && whole_file_clonable(source, opts)) {
        g_autoptr(VdFile) file = vd_file_create(path, error);
        ok = file != NULL && clone_whole_file(source, file, opts, &cloned, error);
    }
    if (ok && !cloned) {
        g_autoptr(VdImage) target = open_or_create_target(source, path, opts, &created, error);
        ok = target != NULL && vd_copy_image(source, target, opts, error);
    }
    if (ok && hidden) {
        ok = partial_finish(&partial, target_path, error) &&
             ((opts->target_open_flags & VD_OPEN_NO_FLUSH) ||
              vd_sync_parent_dir(target_path, error));
    }
    if (!ok && hidden)
        partial_remove(&partial);
    else if (!ok && created)
        unlink(target_path); /* never leave a half-written image that looks whole */
    partial_clear(&partial);
    return ok;
}

gboolean vd_convert_fd(VdImage *source, int fd, const char *name, const VdConvertOptions *opts,
                       GError **error)
{
    if (opts->target_format == NULL && !opts->target_exists) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "no target format given");
        return FALSE;
    }
    const VdConfinement *c = opts->target_confine;
    guint64 size = sources_size(source, opts);
    struct stat st;
    if (!opts->target_exists && whole_file_clonable(source, opts) && fstat(fd, &st) == 0 &&
        S_ISREG(st.st_mode) && st.st_size == 0) {
        g_autoptr(VdFile) file = vd_file_open_fd(fd, name, error);
        gboolean cloned = FALSE;
        if (file == NULL)
            return FALSE;
        if (!clone_whole_file(source, file, opts, &cloned, error)) {
            (void)!ftruncate(fd, 0);
            return FALSE;
        }
        if (cloned)
            return TRUE;
    }
    if (!opts->target_exists) {
        g_autoptr(VdOptions) create = target_create_options(opts);
        gboolean made =
            c != NULL ? vd_image_create_fd_confined(fd, name, opts->target_format, size, create,
                                                    opts->secrets, c, error)
                      : vd_image_create_fd_flags(fd, name, opts->target_format, size, create,
                                                 opts->secrets, opts->target_open_flags, error);
        if (!made)
            return FALSE;
    }
    g_autoptr(VdOptions) open_opts = target_open_options(opts);
    VdOpenFlags flags = VD_OPEN_READ_WRITE | opts->target_open_flags;
    g_autoptr(VdImage) target =
        c != NULL ? vd_image_open_fd_confined(fd, name, opts->target_format, flags, open_opts,
                                              opts->secrets, c, error)
                  : vd_image_open_fd_opts(fd, name, opts->target_format, flags, open_opts,
                                          opts->secrets, error);
    gboolean ok = target != NULL && vd_copy_image(source, target, opts, error);
    g_clear_pointer(&target, vd_image_unref);
    if (!ok && !opts->target_exists) /* nothing half-written that looks whole */
        (void)!ftruncate(fd, 0);
    return ok;
}
