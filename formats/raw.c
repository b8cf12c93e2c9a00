/* raw: the guest bytes are the file. Sparse by default; holes are found
 * with SEEK_DATA/SEEK_HOLE so copies never read them. */
#include "vdisk-driver.h"

#include "blkdebug.h"

#include <sys/stat.h>

enum { PREALLOC_OFF, PREALLOC_FALLOC, PREALLOC_FULL };
static const char *const prealloc_modes[] = { "off", "falloc", "full", NULL };

static const VdCreateOption raw_create_options[] = {
    { "size", VD_OPTION_SIZE, NULL, "Virtual disk size" },
    { "preallocation", VD_OPTION_STRING, NULL,
      "Preallocation mode (allowed values: off, falloc, full)", TRUE },
    { NULL },
};

static gboolean raw_open(VdImage *img, GError **error)
{
    if (!vd_file_size(img->file, &img->size, error))
        return FALSE;
    /* A disk is whole sectors: a file of 1234 bytes is a disk of 1536
     * whose tail reads zero, as qemu sees it. */
    img->size = (img->size + 511) / 512 * 512;
    return TRUE;
}

/* Write real zeroes over [from, to) so the blocks are allocated. */
static gboolean fill_zeroes(VdFile *file, guint64 from, guint64 to, GError **error)
{
    static const gsize chunk = 1 << 20;
    g_autofree guint8 *zeroes = g_malloc0(chunk);
    for (guint64 off = from; off < to;) {
        gsize n = (gsize)MIN(to - off, chunk);
        if (!vd_file_pwrite(file, off, zeroes, n, error))
            return FALSE;
        off += n;
    }
    return TRUE;
}

/* Grow file from old_size to new_size with the given preallocation. */
static gboolean grow(VdFile *file, guint64 old_size, guint64 new_size, int prealloc, GError **error)
{
    switch (prealloc) {
    case PREALLOC_FALLOC:
        return vd_file_allocate(file, old_size, new_size - old_size, error);
    case PREALLOC_FULL:
        return fill_zeroes(file, old_size, new_size, error);
    default:
        return vd_file_truncate(file, new_size, error);
    }
}

static gboolean raw_create(VdFile *file, const VdCreateParams *params, GError **error)
{
    int prealloc;
    if (!vd_option_choice(params->options, "preallocation", prealloc_modes, PREALLOC_OFF, &prealloc,
                          error))
        return FALSE;
    if (params->backing_file != NULL) {
        vd_set_file_error(error, params->path, VD_ERROR_NOT_SUPPORTED,
                          "raw images cannot have a backing file");
        return FALSE;
    }
    return grow(file, 0, params->size, prealloc, error);
}

static gboolean raw_block_status(VdImage *img, guint64 offset, guint64 len, VdExtent *out,
                                 GError **error)
{
    gboolean is_data;
    guint64 run;
    if (vd_file_nbd(img->file) != NULL) /* the server's own answer, as qemu-img shows it */
        return vd_nbd_extent(vd_file_nbd(img->file), offset, len, out, error);
    if (!vd_file_extent(img->file, offset, len, &is_data, &run, error))
        return FALSE;
    out->kind = is_data ? VD_EXTENT_DATA : VD_EXTENT_ZERO;
    out->length = run;
    out->offset_valid = TRUE;
    out->host_offset = offset;
    out->plain_file = is_data ? img->file : NULL;
    return TRUE;
}

static gboolean raw_read(VdImage *img, guint64 offset, void *buf, gsize len, GError **error)
{
    vd_file_debug_event(img->file, VD_EVENT_READ_AIO);
    /* A file shrunk behind our back reads as zeroes rather than failing. */
    return vd_file_pread_zero_past_eof(img->file, offset, buf, len, error);
}

static gboolean raw_write(VdImage *img, guint64 offset, const void *buf, gsize len, GError **error)
{
    vd_file_debug_event(img->file, VD_EVENT_WRITE_AIO);
    return vd_file_pwrite(img->file, offset, buf, len, error);
}

static gboolean raw_write_from_file(VdImage *img, guint64 offset, VdFile *src, guint64 src_offset,
                                    guint64 len, const void *buf, GError **error)
{
    vd_file_debug_event(img->file, VD_EVENT_WRITE_AIO);
    return vd_file_copy_range(src, src_offset, img->file, offset, len, buf, error);
}

static gboolean raw_write_zeroes(VdImage *img, guint64 offset, guint64 len, gboolean may_unmap,
                                 GError **error)
{
    return vd_file_write_zeroes(img->file, offset, len, may_unmap, error);
}

static gboolean raw_discard(VdImage *img, guint64 offset, guint64 len, GError **error)
{
    /* Best effort, like qemu: a file system without hole punching keeps the data. */
    vd_file_punch_hole(img->file, offset, len, NULL);
    return TRUE;
}

static gboolean raw_resize(VdImage *img, guint64 new_size, gboolean allow_shrink, GError **error)
{
    if (vd_file_nbd(img->file) != NULL) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED, "an NBD export cannot be resized");
        return FALSE;
    }
    /* A device's size is its own (an LV is resized with lvresize): a
     * resize to it is done, any other refused, as qemu-img refuses it. */
    if (vd_file_is_block(img->file) && new_size != img->size) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "is a block device of %" G_GUINT64_FORMAT
                     " bytes and cannot be resized to %" G_GUINT64_FORMAT
                     " (resize the device itself)",
                     img->size, new_size);
        return FALSE;
    }
    if (new_size <= img->size)
        return vd_file_truncate(img->file, new_size, error);
    return grow(img->file, img->size, new_size, PREALLOC_OFF, error);
}

static gboolean raw_grow_preallocated(VdImage *img, guint64 new_size, VdPreallocation mode,
                                      GError **error)
{
    if (mode == VD_PREALLOC_METADATA) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "Unsupported preallocation mode: metadata (raw has no metadata; use "
                     "falloc or full)");
        return FALSE;
    }
    return grow(img->file, img->size, new_size,
                mode == VD_PREALLOC_FULL ? PREALLOC_FULL : PREALLOC_FALLOC, error);
}

static gboolean raw_has_zero_init(VdImage *img)
{
    /* A regular file we just created reads zero; a block device may not.
     * A new RBD image holds no object: it reads zero. */
    if (vd_file_rbd(img->file) != NULL)
        return TRUE;
    struct stat st;
    return fstat(vd_file_fd(img->file), &st) == 0 && S_ISREG(st.st_mode);
}

/* An RBD image's object size is its cluster size, as qemu-img info shows
 * it; whole objects are also what a copy into it best writes at once. */
static guint32 raw_cluster_size(VdImage *img)
{
    VdRbd *rbd = img->file != NULL ? vd_file_rbd(img->file) : NULL;
    return rbd != NULL ? vd_rbd_object_size(rbd) : 0;
}

static void raw_get_info(VdImage *img, VdImageInfo *info)
{
    info->cluster_size = raw_cluster_size(img);
}

/* Internal snapshots: an RBD image's own (qemu-img snapshot takes them
 * there); a file has none. */
static VdRbd *raw_rbd(VdImage *img) { return img->file != NULL ? vd_file_rbd(img->file) : NULL; }

static GPtrArray *raw_list_snapshots(VdImage *img, GError **error)
{
    if (raw_rbd(img) != NULL)
        return vd_rbd_list_snapshots(raw_rbd(img), error);
    return g_ptr_array_new_with_free_func((GDestroyNotify)vd_snapshot_info_free);
}

static gboolean raw_snapshot(VdImage *img, VdRbdSnapshotOp op, const char *name, GError **error)
{
    if (raw_rbd(img) != NULL && vd_rbd_snapshot(raw_rbd(img), op, name, error)) {
        guint64 size = 0;
        if (op == VD_RBD_SNAPSHOT_APPLY && vd_file_size(img->file, &size, error))
            img->size = (size + 511) / 512 * 512;
        return TRUE;
    }
    if (raw_rbd(img) == NULL)
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "internal snapshots is not supported by the raw format");
    return FALSE;
}

static gboolean raw_create_snapshot(VdImage *img, const char *name, GError **error)
{
    return raw_snapshot(img, VD_RBD_SNAPSHOT_CREATE, name, error);
}

static gboolean raw_apply_snapshot(VdImage *img, const char *name, GError **error)
{
    return raw_snapshot(img, VD_RBD_SNAPSHOT_APPLY, name, error);
}

static gboolean raw_delete_snapshot(VdImage *img, const char *name, GError **error)
{
    return raw_snapshot(img, VD_RBD_SNAPSHOT_DELETE, name, error);
}

const VdDriver vd_driver_raw = {
    .name = "raw",
    .create_options = raw_create_options,
    .open = raw_open,
    .create = raw_create,
    .block_status = raw_block_status,
    .read = raw_read,
    .write = raw_write,
    .write_from_file = raw_write_from_file,
    .write_zeroes = raw_write_zeroes,
    .discard = raw_discard,
    .resize = raw_resize,
    .grow_preallocated = raw_grow_preallocated,
    .has_zero_init = raw_has_zero_init,
    .cluster_size = raw_cluster_size,
    .get_info = raw_get_info,
    .list_snapshots = raw_list_snapshots,
    .create_snapshot = raw_create_snapshot,
    .apply_snapshot = raw_apply_snapshot,
    .delete_snapshot = raw_delete_snapshot,
};
