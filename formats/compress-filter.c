/* compress: qemu's compress filter, an image put over another one so that
 * everything written goes into it compressed ("json:{'driver': 'compress',
 * 'file': {'driver': 'qcow2', 'file': {'driver': 'file', 'filename':
 * 'd.qcow2'}}}", or --image-opts driver=compress,file.driver=qcow2,
 * file.file.filename=d.qcow2). The image below must take compressed
 * clusters (qcow2, qcow, a streamOptimized vmdk).
 *
 * The filter is no file of its own (a fileless driver, see image.c): it
 * opens the image below from its "file." options and answers reads and
 * block status from it. A write is cut into the clusters below; each is
 * written whole, compressed, the part the write does not cover read from
 * the image first, as qemu's block layer fills a write up to the filter's
 * alignment. Zero writes and discards pass through as they are.
 */
#include "vdisk-driver.h"

#include <string.h>

typedef struct {
    VdImage *below;
    guint64 cluster;
} CompressFilter;

/* The image below: format file.driver, named by file.file.filename (or
 * file.filename); its other "file.KEY" options are its own KEY. */
static VdImage *open_below(VdImage *img, GError **error)
{
    VdOptions *opts = img->open_options;
    const char *format = vd_options_get(opts, "file.driver");
    const char *path = vd_options_get(opts, "file.file.filename");
    if (path == NULL)
        path = vd_options_get(opts, "file.filename");
    const char *protocol = vd_options_get(opts, "file.file.driver");
    if (format == NULL || path == NULL) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "the compress filter needs the image below it (file.driver=FORMAT and "
                     "file.file.filename=PATH)");
        return NULL;
    }
    if (protocol != NULL && !g_str_equal(protocol, "file")) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "the compress filter takes an image in a local file (file.file.driver=file)");
        return NULL;
    }
    g_autoptr(VdOptions) below = vd_options_new();
    g_autoptr(GPtrArray) keys = opts != NULL ? vd_options_keys(opts) : g_ptr_array_new();
    for (guint i = 0; i < keys->len; i++) {
        const char *key = keys->pdata[i];
        if (!g_str_has_prefix(key, "file.") || g_str_equal(key, "file.driver") ||
            g_str_equal(key, "file.filename") || g_str_has_prefix(key, "file.file."))
            continue;
        vd_options_set(below, key + strlen("file."), vd_options_get(opts, key));
    }
    const char *locking = vd_options_get(opts, "file.file.locking");
    if (locking != NULL)
        vd_options_set(below, "file.locking", locking);
    return vd_image_open_opts(path, format, img->flags, below, img->secrets, error);
}

static gboolean filter_open(VdImage *img, GError **error)
{
    g_autoptr(VdImage) below = open_below(img, error);
    if (below == NULL)
        return FALSE;
    if (img->read_write && !vd_image_can_write_compressed(below)) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "Compression is not supported for underlying format: %s",
                     vd_image_format(below));
        return FALSE;
    }
    CompressFilter *f = g_new0(CompressFilter, 1);
    f->cluster = vd_image_cluster_size(below);
    if (f->cluster == 0)
        f->cluster = 65536;
    img->size = vd_image_size(below);
    f->below = g_steal_pointer(&below);
    img->priv = f;
    return TRUE;
}

static void filter_close(VdImage *img)
{
    CompressFilter *f = img->priv;
    if (f == NULL)
        return;
    vd_image_unref(f->below);
    g_free(f);
}

/* What the image below reads, down its chain: data, or zeroes. */
static gboolean filter_block_status(VdImage *img, guint64 offset, guint64 len, VdExtent *out,
                                    GError **error)
{
    CompressFilter *f = img->priv;
    VdBlockStatus st;
    if (!vd_image_block_status(f->below, offset, len, TRUE, &st, error))
        return FALSE;
    out->length = MIN(st.length, len);
    out->kind = (st.flags & VD_BLOCK_DATA) ? VD_EXTENT_DATA : VD_EXTENT_ZERO;
    out->compressed = (st.flags & VD_BLOCK_COMPRESSED) != 0;
    return TRUE;
}

static gboolean filter_read(VdImage *img, guint64 offset, void *buf, gsize len, GError **error)
{
    return vd_image_read(((CompressFilter *)img->priv)->below, offset, buf, len, error);
}

static gboolean filter_write(VdImage *img, guint64 offset, const void *buf, gsize len,
                             GError **error)
{
    CompressFilter *f = img->priv;
    const guint8 *in = buf;
    g_autofree guint8 *whole = g_malloc(f->cluster);
    while (len > 0) {
        guint64 start = offset / f->cluster * f->cluster;
        gsize clen = (gsize)MIN(f->cluster, img->size - start);
        gsize skip = (gsize)(offset - start), n = MIN(len, clen - skip);
        if (n < clen) {
            if (!vd_image_read(f->below, start, whole, clen, error))
                return FALSE;
            memcpy(whole + skip, in, n);
        }
        if (!vd_image_write_compressed(f->below, start, n < clen ? whole : in, clen, error))
            return FALSE;
        in += n;
        offset += n;
        len -= n;
    }
    return TRUE;
}

static gboolean filter_write_zeroes(VdImage *img, guint64 offset, guint64 len, gboolean may_unmap,
                                    GError **error)
{
    return vd_image_write_zeroes(((CompressFilter *)img->priv)->below, offset, len, may_unmap,
                                 error);
}

static gboolean filter_discard(VdImage *img, guint64 offset, guint64 len, GError **error)
{
    return vd_image_discard(((CompressFilter *)img->priv)->below, offset, len, error);
}

static gboolean filter_flush(VdImage *img, GError **error)
{
    return vd_image_flush(((CompressFilter *)img->priv)->below, error);
}

static void filter_get_info(VdImage *img, VdImageInfo *info)
{
    CompressFilter *f = img->priv;
    info->cluster_size = (guint32)f->cluster;
    g_autoptr(VdImageInfo) below = vd_image_get_info(f->below, NULL);
    if (below != NULL)
        info->actual_size = below->actual_size;
}

static gboolean filter_has_zero_init(VdImage *img)
{
    return vd_image_has_zero_init(((CompressFilter *)img->priv)->below);
}

static guint32 filter_cluster_size(VdImage *img)
{
    return (guint32)((CompressFilter *)img->priv)->cluster;
}

const VdDriver vd_driver_compress_filter = {
    .name = "compress",
    .no_file = TRUE,
    .open = filter_open,
    .close = filter_close,
    .block_status = filter_block_status,
    .read = filter_read,
    .write = filter_write,
    .write_zeroes = filter_write_zeroes,
    .discard = filter_discard,
    .flush = filter_flush,
    .get_info = filter_get_info,
    .has_zero_init = filter_has_zero_init,
    .cluster_size = filter_cluster_size,
};
