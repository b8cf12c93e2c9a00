/* vmdk: VMware virtual disks (monolithicSparse, monolithicFlat,
 * twoGbMaxExtentSparse/Flat, streamOptimized; seSparse and ZERO extents read
 * only).
 *
 * This file opens an image (a sparse extent with its descriptor embedded, or
 * a descriptor file naming extents), creates new ones the way qemu-img
 * does, and sends each guest range to the extent that holds it. The
 * descriptor text is in vmdk-descriptor.c, the sparse formats in
 * vmdk-sparse.c.
 */
#include "vmdk.h"

#include <glib/gstdio.h>

#define DEFAULT_GRAIN_SECTORS 128u    /* 64 KiB, as qemu-img and VMware */
#define SPLIT_EXTENT_SECTORS 4194304u /* twoGbMaxExtent*: 2 GiB per file */
#define DEFAULT_HWVERSION "4"
#define DEFAULT_TOOLSVERSION "2147483647"

enum {
    SUB_MONOLITHIC_SPARSE,
    SUB_MONOLITHIC_FLAT,
    SUB_TWOGB_SPARSE,
    SUB_TWOGB_FLAT,
    SUB_STREAM,
};
static const char *const subformat_names[] = {
    "monolithicSparse",   "monolithicFlat",  "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat", "streamOptimized", NULL,
};
static const char *const adapter_types[] = { "ide", "buslogic", "lsilogic", "legacyESX", NULL };

/* In the order of qemu-img's "Formatting" line. */
static const VdCreateOption vmdk_create_options[] = {
    { "size", VD_OPTION_SIZE, NULL, "Virtual disk size" },
    { "adapter_type", VD_OPTION_STRING, NULL,
      "Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX" },
    { "backing_file", VD_OPTION_STRING, NULL, "File name of a base image" },
    { "backing_fmt", VD_OPTION_STRING, NULL, "Must be 'vmdk' if present" },
    { "compat6", VD_OPTION_BOOL, "off", "VMDK version 6 image" },
    { "hwversion", VD_OPTION_STRING, "undefined", "VMDK hardware version" },
    { "toolsversion", VD_OPTION_STRING, NULL, "VMware guest tools version" },
    { "subformat", VD_OPTION_STRING, NULL,
      "VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | "
      "twoGbMaxExtentSparse | twoGbMaxExtentFlat | streamOptimized} " },
    { "zeroed_grain", VD_OPTION_BOOL, NULL,
      "Enable efficient zero writes using the zeroed-grain GTE feature" },
    { NULL },
};

/* createTypes naming disks we can open; the raw-device ones are refused. */
static const char *const supported_types[] = {
    "monolithicSparse",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "streamOptimized",
    "vmfs",
    "vmfsSparse",
    "vmfsThin",
    "vmfsPreallocated",
    "vmfsEagerZeroedThick",
    "seSparse",
    "custom",
    NULL,
};
static const char *const raw_device_types[] = {
    "fullDevice",       "partitionedDevice",           "vmfsRaw",
    "vmfsRawDeviceMap", "vmfsPassthroughRawDeviceMap", NULL,
};

/* ----- state ----- */

static void extent_free(gpointer data)
{
    VmdkExtent *ext = data;
    vmdk_sparse_free(ext->sparse);
    vmdk_sesparse_free(ext->sesparse);
    if (ext->own_file)
        vd_file_close(ext->file);
    g_free(ext->filename);
    g_free(ext);
}

static VmdkState *state_new(void)
{
    VmdkState *s = g_new0(VmdkState, 1);
    s->extents = g_ptr_array_new_with_free_func(extent_free);
    return s;
}

static VmdkExtent *extent_at(VmdkState *s, guint i) { return s->extents->pdata[i]; }

/* The extent holding guest byte offset (offset < image size). */
static VmdkExtent *find_extent(VmdkState *s, guint64 offset)
{
    guint lo = 0, hi = s->extents->len;
    while (hi - lo > 1) {
        guint mid = (lo + hi) / 2;
        if (extent_at(s, mid)->start <= offset)
            lo = mid;
        else
            hi = mid;
    }
    return extent_at(s, lo);
}

/* ----- probing ----- */

static int vmdk_probe(const guint8 *buf, gsize len, const char *filename)
{
    if (len >= 4 && (vd_le32(buf) == VMDK_SPARSE_MAGIC || vd_le32(buf) == VMDK_COWD_MAGIC))
        return 100;
    if (g_strstr_len((const char *)buf, (gssize)len, "# Disk DescriptorFile") != NULL)
        return 100;
    return 0;
}

/* ----- opening ----- */

/* The descriptor embedded in a monolithic sparse file. Its extent lines are
 * ignored (the extent is the file itself, whatever name it gives: VMware
 * writes its own original name, FreeBSD's mkimg an empty one). */
static gboolean read_embedded_descriptor(VdImage *img, VmdkState *s, guint64 offset, guint64 size,
                                         GError **error)
{
    guint64 file_size;
    if (!vd_file_size(img->file, &file_size, error))
        return FALSE;
    if (offset == 0 || size == 0) {
        s->desc = vmdk_descriptor_new();
        return TRUE;
    }
    if (offset > file_size || size > file_size - offset) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "the embedded descriptor (%" G_GUINT64_FORMAT " bytes at %" G_GUINT64_FORMAT
                     ") lies past the end of the file",
                     size, offset);
        return FALSE;
    }
    gsize len = (gsize)MIN(size, (guint64)VMDK_MAX_DESCRIPTOR);
    g_autofree char *text = g_malloc0(len + 1);
    if (!vd_file_pread(img->file, offset, text, len, error))
        return FALSE;
    g_autoptr(GError) local = NULL;
    s->desc = vmdk_descriptor_parse(text, len, img->filename, TRUE, &local);
    if (s->desc == NULL) {
        if (!g_error_matches(local, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT)) {
            g_propagate_error(error, g_steal_pointer(&local));
            return FALSE;
        }
        /* An empty or unreadable descriptor area: the sparse header alone
         * describes the disk. */
        s->desc = vmdk_descriptor_new();
    }
    s->desc_offset = offset;
    s->desc_capacity = size;
    s->desc_len = strnlen(text, len);
    s->desc_text = g_steal_pointer(&text);
    return TRUE;
}

static gboolean open_monolithic(VdImage *img, VmdkState *s, const guint8 *header, GError **error)
{
    VmdkExtent *ext = g_new0(VmdkExtent, 1);
    ext->type = VMDK_EXTENT_SPARSE;
    ext->file = img->file;
    ext->filename = g_strdup(img->filename);
    g_ptr_array_add(s->extents, ext);
    guint64 desc_offset = 0, desc_size = 0;
    if (!vmdk_sparse_open(img, ext, header, &desc_offset, &desc_size, error))
        return FALSE;
    return read_embedded_descriptor(img, s, desc_offset, desc_size, error);
}

static gboolean check_create_type(VdImage *img, const char *type, GError **error)
{
    if (type == NULL || g_strv_contains(supported_types, type))
        return TRUE;
    if (g_strv_contains(raw_device_types, type))
        vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT,
                     "unsupported image type '%s': disks that map a raw host device are not "
                     "supported",
                     type);
    else
        vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT, "unsupported image type '%s'", type);
    return FALSE;
}

static gboolean open_sparse_extent(VdImage *img, VmdkExtent *ext, const VmdkExtentLine *line,
                                   GError **error)
{
    guint8 header[VMDK_SECTOR];
    if (!vd_file_pread_zero_past_eof(ext->file, 0, header, sizeof header, error))
        return FALSE;
    if (vd_le32(header) == VMDK_COWD_MAGIC) {
        vd_set_file_error(error, vd_file_name(ext->file), VD_ERROR_UNSUPPORTED_FORMAT,
                          "ESX sparse (COWD) extents are not supported");
        return FALSE;
    }
    if (vd_le32(header) != VMDK_SPARSE_MAGIC) {
        vd_set_file_error(error, vd_file_name(ext->file), VD_ERROR_CORRUPT,
                          "not a sparse extent (no KDMV header)");
        return FALSE;
    }
    if (!vmdk_sparse_open(img, ext, header, NULL, NULL, error))
        return FALSE;
    if (vmdk_sparse_capacity(ext->sparse) < line->sectors * VMDK_SECTOR) {
        vd_set_file_error(error, vd_file_name(ext->file), VD_ERROR_CORRUPT,
                          "the extent holds %" G_GUINT64_FORMAT " sectors, the descriptor "
                          "says %" G_GUINT64_FORMAT,
                          vmdk_sparse_capacity(ext->sparse) / VMDK_SECTOR, line->sectors);
        return FALSE;
    }
    return TRUE;
}

static gboolean open_extent(VdImage *img, VmdkState *s, const VmdkExtentLine *line, guint64 start,
                            GError **error)
{
    VmdkExtent *ext = g_new0(VmdkExtent, 1);
    g_ptr_array_add(s->extents, ext);
    ext->type = line->type;
    ext->start = start;
    /* qemu-img info and map name an extent by the descriptor's folder as
     * the image was named ("dir/t-f001.vmdk" for "dir/t.vmdk"). */
    if (line->filename != NULL)
        ext->filename = vd_resolve_relative(img->filename, line->filename);
    ext->read_only = line->access != VMDK_ACCESS_RW || line->type == VMDK_EXTENT_ZERO ||
                     line->type == VMDK_EXTENT_SESPARSE;
    if (line->access == VMDK_ACCESS_NOACCESS) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED, "extent '%s' is marked NOACCESS",
                     line->filename ? line->filename : "");
        return FALSE;
    }
    if (line->type == VMDK_EXTENT_VMFSSPARSE) {
        vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT,
                     "ESX sparse (VMFSSPARSE) extents are not supported");
        return FALSE;
    }
    ext->length = line->sectors * VMDK_SECTOR;
    if (line->type == VMDK_EXTENT_ZERO)
        return TRUE;
    if (!vmdk_extent_name_is_safe(line->filename, img->filename, error))
        return FALSE;
    ext->file =
        vd_image_open_related_file(img, line->filename, img->read_write && !ext->read_only, error);
    if (ext->file == NULL)
        return FALSE;
    ext->own_file = TRUE;
    switch (line->type) {
    case VMDK_EXTENT_FLAT:
        ext->flat_offset = line->offset * VMDK_SECTOR;
        return TRUE;
    case VMDK_EXTENT_SESPARSE:
        return vmdk_sesparse_open(img, ext, error);
    default:
        return open_sparse_extent(img, ext, line, error);
    }
}

static gboolean open_descriptor_file(VdImage *img, VmdkState *s, GError **error)
{
    guint64 size;
    if (!vd_file_size(img->file, &size, error))
        return FALSE;
    if (size > VMDK_MAX_DESCRIPTOR) {
        vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT,
                     "not a vmdk image: no sparse header, and too large (%" G_GUINT64_FORMAT
                     " bytes) for a descriptor",
                     size);
        return FALSE;
    }
    s->desc_text = g_malloc0(size + 1);
    if (!vd_file_pread(img->file, 0, s->desc_text, (gsize)size, error))
        return FALSE;
    s->desc_len = (gsize)size;
    s->desc_in_own_file = TRUE;
    s->desc = vmdk_descriptor_parse(s->desc_text, s->desc_len, img->filename, FALSE, error);
    if (s->desc == NULL || !check_create_type(img, s->desc->create_type, error))
        return FALSE;
    guint64 start = 0;
    for (guint i = 0; i < s->desc->extents->len; i++) {
        const VmdkExtentLine *line = s->desc->extents->pdata[i];
        if (line->sectors * VMDK_SECTOR > G_MAXINT64 - start) {
            vd_set_error(error, img, VD_ERROR_CORRUPT,
                         "the extents add up to more than 2^63 "
                         "bytes");
            return FALSE;
        }
        if (!open_extent(img, s, line, start, error))
            return FALSE;
        start += line->sectors * VMDK_SECTOR;
    }
    return TRUE;
}

/* A compressed extent can only be written as a new stream; seSparse not at all. */
static gboolean prepare_writing(VdImage *img, VmdkState *s, GError **error)
{
    for (guint i = 0; i < s->extents->len; i++) {
        VmdkExtent *ext = extent_at(s, i);
        if (ext->type == VMDK_EXTENT_SESPARSE) {
            vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                         "seSparse extents can only be read; convert the disk to write it");
            return FALSE;
        }
        if (ext->sparse != NULL && vmdk_sparse_is_compressed(ext->sparse) && !ext->read_only &&
            !vmdk_sparse_start_stream(img, ext, error))
            return FALSE;
    }
    return TRUE;
}

static gboolean vmdk_open(VdImage *img, GError **error)
{
    VmdkState *s = state_new();
    img->priv = s;
    guint8 header[VMDK_SECTOR];
    if (!vd_file_pread_zero_past_eof(img->file, 0, header, sizeof header, error))
        return FALSE;
    gboolean ok;
    if (vd_le32(header) == VMDK_SPARSE_MAGIC) {
        ok = open_monolithic(img, s, header, error);
    } else if (vd_le32(header) == VMDK_COWD_MAGIC) {
        vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT,
                     "ESX sparse (COWD) disks are not supported");
        ok = FALSE;
    } else {
        ok = open_descriptor_file(img, s, error);
    }
    if (!ok)
        return FALSE;
    img->size = 0;
    for (guint i = 0; i < s->extents->len; i++)
        img->size += extent_at(s, i)->length;
    const char *hint = s->desc->parent_hint;
    if (hint != NULL && *hint != '\0') {
        g_free(img->backing_name); /* an explicit parent, which wins after open */
        img->backing_name = g_strdup(hint);
        img->backing_format = g_strdup("vmdk"); /* VMware chains are vmdk throughout */
    }
    return !img->read_write || prepare_writing(img, s, error);
}

/* ----- parent CID ----- */

/* A delta records its parent's CID, and the parent gets a new CID when it
 * is written: a parent whose CID differs is another disk, or one changed
 * since the delta was made, and the delta's grains no longer fit it.
 * VMware refuses to open such a chain; so do we, whether the parent came
 * from parentFileNameHint or was named by the caller. (qemu reads on; its
 * own check is compiled out.) A parentCID of ffffffff records no parent,
 * so there is nothing to compare. */
static gboolean vmdk_check_backing(VdImage *img, GError **error)
{
    VmdkState *s = img->priv;
    VdImage *parent = img->backing;
    guint32 want = s->desc->parent_cid;
    if (want == VMDK_NO_PARENT_CID)
        return TRUE;
    if (parent->drv != &vd_driver_vmdk) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "its parent is the vmdk image with CID %08x, but %s is a %s image", want,
                     parent->filename, parent->drv->name);
        return FALSE;
    }
    guint32 have = ((VmdkState *)parent->priv)->desc->cid;
    if (have != want) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "its parentCID is %08x, but %s has CID %08x: not the disk this delta was "
                     "made on, or changed since",
                     want, parent->filename, have);
        return FALSE;
    }
    return TRUE;
}

/* ----- block status and reading ----- */

static gboolean flat_status(VmdkExtent *ext, guint64 rel, guint64 len, VdExtent *out,
                            GError **error)
{
    gboolean is_data;
    guint64 run;
    if (!vd_file_extent(ext->file, ext->flat_offset + rel, len, &is_data, &run, error))
        return FALSE;
    out->kind = is_data ? VD_EXTENT_DATA : VD_EXTENT_ZERO;
    out->length = run;
    out->offset_valid = TRUE;
    out->host_offset = ext->flat_offset + rel;
    out->plain_file = is_data ? ext->file : NULL;
    return TRUE;
}

static gboolean vmdk_block_status(VdImage *img, guint64 offset, guint64 len, VdExtent *out,
                                  GError **error)
{
    VmdkState *s = img->priv;
    VmdkExtent *ext = find_extent(s, offset);
    guint64 rel = offset - ext->start;
    len = MIN(len, ext->length - rel);
    memset(out, 0, sizeof *out);
    gboolean ok = TRUE;
    switch (ext->type) {
    case VMDK_EXTENT_FLAT:
        ok = flat_status(ext, rel, len, out, error);
        break;
    case VMDK_EXTENT_ZERO:
        out->kind = VD_EXTENT_ZERO;
        out->length = len;
        break;
    case VMDK_EXTENT_SESPARSE:
        ok = vmdk_sesparse_status(img, ext, rel, len, out, error);
        break;
    default:
        ok = vmdk_sparse_status(img, ext, rel, len, out, error);
        break;
    }
    out->host_name = ext->filename;
    return ok;
}

static gboolean read_extent(VdImage *img, VmdkExtent *ext, guint64 rel, guint8 *buf, gsize n,
                            GError **error)
{
    switch (ext->type) {
    case VMDK_EXTENT_FLAT:
        /* A flat file shorter than its extent reads as zeroes past its end. */
        return vd_file_pread_zero_past_eof(ext->file, ext->flat_offset + rel, buf, n, error);
    case VMDK_EXTENT_ZERO:
        memset(buf, 0, n);
        return TRUE;
    case VMDK_EXTENT_SESPARSE:
        return vmdk_sesparse_read(img, ext, rel, buf, n, error);
    default:
        return vmdk_sparse_read(img, ext, rel, buf, n, error);
    }
}

static gboolean vmdk_packed_unit(VdImage *img, guint64 offset, VdPackedUnit *unit, GError **error)
{
    VmdkState *s = img->priv;
    VmdkExtent *ext = find_extent(s, offset);
    memset(unit, 0, sizeof *unit);
    if (ext->sparse == NULL)
        return TRUE;
    if (!vmdk_sparse_packed_unit(img, ext, offset - ext->start, unit, error))
        return FALSE;
    unit->guest_offset += ext->start;
    return TRUE;
}

static gboolean vmdk_inflate_unit(VdImage *img, const VdPackedUnit *unit, const guint8 *in,
                                  guint8 *out, GError **error)
{
    return vmdk_sparse_inflate_unit(unit, in, out, error);
}

static gboolean vmdk_read(VdImage *img, guint64 offset, void *buf, gsize len, GError **error)
{
    VmdkState *s = img->priv;
    guint8 *out = buf;
    while (len > 0) {
        VmdkExtent *ext = find_extent(s, offset);
        guint64 rel = offset - ext->start;
        gsize n = (gsize)MIN((guint64)len, ext->length - rel);
        if (!read_extent(img, ext, rel, out, n, error))
            return FALSE;
        offset += n;
        out += n;
        len -= n;
    }
    return TRUE;
}

/* ----- writing ----- */

/* Like VMware and qemu, give the disk a new content id on its first change,
 * so deltas made on the old content can tell. */
static gboolean update_cid(VdImage *img, VmdkState *s, GError **error)
{
    if (s->cid_updated || s->desc_text == NULL)
        return TRUE;
    s->cid_updated = TRUE;
    guint32 cid = g_random_int();
    g_autofree char *text = vmdk_descriptor_replace_cid(s->desc_text, s->desc_len, cid);
    gsize len = strlen(text);
    if (s->desc_in_own_file) {
        if (!vd_file_truncate(img->file, 0, error) ||
            !vd_file_pwrite(img->file, 0, text, len, error))
            return FALSE;
    } else {
        if (len > s->desc_capacity)
            return TRUE; /* cannot happen for a CID of 8 digits; keep the old one */
        if (MAX(len, s->desc_len) == 0)
            return TRUE; /* no descriptor text to rewrite */
        g_autofree char *padded = g_malloc0(MAX(len, s->desc_len));
        memcpy(padded, text, len);
        if (!vd_file_pwrite(img->file, s->desc_offset, padded, MAX(len, s->desc_len), error))
            return FALSE;
    }
    s->desc->cid = cid;
    return TRUE;
}

static gboolean writable_extent(VdImage *img, VmdkExtent *ext, GError **error)
{
    if (ext->read_only) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED, "extent '%s' is read-only",
                     ext->filename != NULL ? ext->filename : "ZERO");
        return FALSE;
    }
    return TRUE;
}

static gboolean write_extent(VdImage *img, VmdkExtent *ext, guint64 rel, const guint8 *buf, gsize n,
                             GError **error)
{
    if (!writable_extent(img, ext, error))
        return FALSE;
    if (ext->type == VMDK_EXTENT_FLAT)
        return vd_file_pwrite(ext->file, ext->flat_offset + rel, buf, n, error);
    return vmdk_sparse_write(img, ext, rel, buf, n, error);
}

static gboolean vmdk_write(VdImage *img, guint64 offset, const void *buf, gsize len, GError **error)
{
    VmdkState *s = img->priv;
    if (!update_cid(img, s, error))
        return FALSE;
    const guint8 *in = buf;
    while (len > 0) {
        VmdkExtent *ext = find_extent(s, offset);
        guint64 rel = offset - ext->start;
        gsize n = (gsize)MIN((guint64)len, ext->length - rel);
        if (!write_extent(img, ext, rel, in, n, error))
            return FALSE;
        offset += n;
        in += n;
        len -= n;
    }
    return TRUE;
}

static gboolean zero_extent(VdImage *img, VmdkExtent *ext, guint64 rel, guint64 n,
                            gboolean may_unmap, GError **error)
{
    if (ext->type == VMDK_EXTENT_ZERO)
        return TRUE;
    if (!writable_extent(img, ext, error))
        return FALSE;
    if (ext->type == VMDK_EXTENT_FLAT)
        return vd_file_write_zeroes(ext->file, ext->flat_offset + rel, n, may_unmap, error);
    return vmdk_sparse_write_zeroes(img, ext, rel, n, error);
}

static gboolean vmdk_write_zeroes(VdImage *img, guint64 offset, guint64 len, gboolean may_unmap,
                                  GError **error)
{
    VmdkState *s = img->priv;
    if (!update_cid(img, s, error))
        return FALSE;
    while (len > 0) {
        VmdkExtent *ext = find_extent(s, offset);
        guint64 rel = offset - ext->start;
        guint64 n = MIN(len, ext->length - rel);
        if (!zero_extent(img, ext, rel, n, may_unmap, error))
            return FALSE;
        offset += n;
        len -= n;
    }
    return TRUE;
}

/* The grain size of the first sparse extent: what compression works on. */
static guint32 first_grain_bytes(VmdkState *s)
{
    for (guint i = 0; i < s->extents->len; i++)
        if (extent_at(s, i)->sparse != NULL)
            return vmdk_sparse_grain_bytes(extent_at(s, i)->sparse);
    return 0;
}

static gsize vmdk_compress(VdImage *img, const void *in, gsize len, void *out, gsize out_len)
{
    VmdkState *s = img->priv; /* extents do not change once open: no lock needed */
    guint32 grain = first_grain_bytes(s);
    if (grain == 0 || len > grain)
        return 0;
    return vmdk_compress_grain(in, len, grain, out, out_len);
}

static gboolean vmdk_write_compressed(VdImage *img, guint64 offset, const void *data, gsize len,
                                      GError **error)
{
    VmdkState *s = img->priv;
    if (!update_cid(img, s, error))
        return FALSE;
    VmdkExtent *ext = find_extent(s, offset);
    if (ext->sparse == NULL || !vmdk_sparse_is_stream_writer(ext->sparse)) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "only streamOptimized images store compressed grains");
        return FALSE;
    }
    return vmdk_sparse_write_compressed(img, ext, offset - ext->start, data, len, error);
}

static gboolean vmdk_flush(VdImage *img, GError **error)
{
    VmdkState *s = img->priv;
    for (guint i = 0; i < s->extents->len; i++) {
        VmdkExtent *ext = extent_at(s, i);
        if (ext->read_only)
            continue;
        if (ext->sparse != NULL && !vmdk_sparse_flush(img, ext, error))
            return FALSE;
        if (ext->own_file && !vd_file_sync(ext->file, error))
            return FALSE;
    }
    return TRUE;
}

static void vmdk_close(VdImage *img)
{
    VmdkState *s = img->priv;
    if (s == NULL)
        return;
    if (img->read_write && s->desc != NULL) {
        g_autoptr(GError) error = NULL;
        if (!vmdk_flush(img, &error))
            g_warning("%s: %s", img->filename, error->message);
    }
    vmdk_descriptor_free(s->desc);
    g_ptr_array_unref(s->extents);
    g_free(s->desc_text);
    g_free(s);
    img->priv = NULL;
}

/* ----- info ----- */

static const char *extent_format(const VmdkExtent *ext, gboolean monolithic)
{
    if (monolithic)
        return ""; /* qemu names no type for a disk that is its own extent */
    switch (ext->type) {
    case VMDK_EXTENT_FLAT:
        return "FLAT";
    case VMDK_EXTENT_ZERO:
        return "ZERO";
    case VMDK_EXTENT_SESPARSE:
        return "SESPARSE";
    default:
        return "SPARSE";
    }
}

/* Descriptors may be in any encoding (they have an encoding= key); a
 * GVariant string must be UTF-8. */
static GVariant *text_variant(const char *text)
{
    return g_variant_new_take_string(g_utf8_make_valid(text, -1));
}

/* The keys in the order qemu-img 7.2 prints them (its ImageInfo of the
 * extent: compressed, virtual-size, filename, cluster-size, format), so
 * that both outputs diff cleanly, human and JSON. */
static GVariant *extent_info(const VmdkExtent *ext, gboolean monolithic)
{
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    if (ext->sparse != NULL && vmdk_sparse_is_compressed(ext->sparse))
        g_variant_builder_add(&b, "{sv}", "compressed", g_variant_new_boolean(TRUE));
    g_variant_builder_add(&b, "{sv}", "virtual-size", g_variant_new_uint64(ext->length));
    g_variant_builder_add(&b, "{sv}", "filename",
                          text_variant(ext->filename != NULL ? ext->filename : ""));
    if (ext->sparse != NULL)
        g_variant_builder_add(&b, "{sv}", "cluster-size",
                              g_variant_new_uint32(vmdk_sparse_grain_bytes(ext->sparse)));
    g_variant_builder_add(&b, "{sv}", "format",
                          g_variant_new_string(extent_format(ext, monolithic)));
    return g_variant_builder_end(&b);
}

static void vmdk_get_info(VdImage *img, VdImageInfo *info)
{
    VmdkState *s = img->priv;
    info->cluster_size = first_grain_bytes(s);
    GVariantBuilder b, list;
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "cid", g_variant_new_uint32(s->desc->cid));
    g_variant_builder_add(&b, "{sv}", "parent-cid", g_variant_new_uint32(s->desc->parent_cid));
    const char *type = s->desc->create_type;
    VmdkSparse *first = extent_at(s, 0)->sparse;
    if (type == NULL && !s->desc_in_own_file) /* a bare sparse extent says what it is */
        type = vmdk_sparse_is_compressed(first) ? "streamOptimized" : "monolithicSparse";
    else if (type == NULL)
        type = "custom";
    g_variant_builder_add(&b, "{sv}", "create-type", text_variant(type));
    g_variant_builder_init(&list, G_VARIANT_TYPE("aa{sv}"));
    for (guint i = 0; i < s->extents->len; i++)
        g_variant_builder_add_value(&list, extent_info(extent_at(s, i), !s->desc_in_own_file));
    g_variant_builder_add(&b, "{sv}", "extents", g_variant_builder_end(&list));
    info->format_specific = g_variant_builder_end(&b);
}

static guint32 vmdk_cluster_size(VdImage *img) { return first_grain_bytes(img->priv); }

/* New sparse extents read zero; so do flat files we just created. */
static gboolean vmdk_has_zero_init(VdImage *img)
{
    VmdkState *s = img->priv;
    for (guint i = 0; i < s->extents->len; i++) {
        VmdkExtent *ext = extent_at(s, i);
        if (ext->type == VMDK_EXTENT_FLAT) {
            gboolean is_data;
            guint64 run;
            if (!vd_file_extent(ext->file, ext->flat_offset, ext->length, &is_data, &run, NULL) ||
                is_data || run < ext->length)
                return FALSE;
        }
    }
    return TRUE;
}

static gboolean vmdk_check(VdImage *img, VdCheckRepair repair, VdCheckResult *res, GError **error)
{
    VmdkState *s = img->priv;
    for (guint i = 0; i < s->extents->len; i++) {
        VmdkExtent *ext = extent_at(s, i);
        if (ext->sparse != NULL && !vmdk_sparse_check(img, ext, res, error))
            return FALSE;
    }
    return TRUE;
}

/* ----- creating ----- */

typedef struct {
    int subformat;
    VmdkDdb ddb;
    gboolean zeroed_grain;
    gboolean no_flush; /* cache=unsafe: the extent files need no sync */
    guint64 sectors;
    char *stem; /* file name without its extension */
    char *ext;  /* ".vmdk" or whatever the name ends with */
    char *dir;
} CreatePlan;

static void plan_clear(CreatePlan *p)
{
    g_free(p->stem);
    g_free(p->ext);
    g_free(p->dir);
}

static gboolean parse_hwversion(VdOptions *opts, const char *path, const char **out, GError **error)
{
    gboolean compat6;
    if (!vd_option_bool(opts, "compat6", FALSE, &compat6, error))
        return FALSE;
    const char *hw = vd_options_get(opts, "hwversion");
    if (compat6 && hw != NULL && !g_str_equal(hw, "6")) {
        vd_set_file_error(error, path, VD_ERROR_INVALID_ARGUMENT,
                          "compat6 cannot be combined with hwversion=%s", hw);
        return FALSE;
    }
    guint64 n;
    if (hw != NULL && (!g_ascii_string_to_unsigned(hw, 10, 1, 999, &n, NULL))) {
        vd_set_file_error(error, path, VD_ERROR_INVALID_ARGUMENT,
                          "hwversion must be a number, not '%s'", hw);
        return FALSE;
    }
    *out = compat6 ? "6" : hw != NULL ? hw : DEFAULT_HWVERSION;
    return TRUE;
}

static gboolean parse_create_options(const VdCreateParams *params, CreatePlan *p, GError **error)
{
    VdOptions *opts = params->options;
    int adapter;
    p->no_flush = params->no_flush;
    if (!vd_option_choice(opts, "subformat", subformat_names, SUB_MONOLITHIC_SPARSE, &p->subformat,
                          error) ||
        !vd_option_choice(opts, "adapter_type", adapter_types, 0, &adapter, error) ||
        !vd_option_bool(opts, "zeroed_grain", FALSE, &p->zeroed_grain, error) ||
        !parse_hwversion(opts, params->path, &p->ddb.hwversion, error))
        return FALSE;
    /* A flat extent has no grain table to mark zeroes in (qemu's words). */
    if (p->zeroed_grain &&
        (p->subformat == SUB_MONOLITHIC_FLAT || p->subformat == SUB_TWOGB_FLAT)) {
        vd_set_file_error(error, params->path, VD_ERROR_INVALID_ARGUMENT,
                          "Flat image can't enable zeroed grain");
        return FALSE;
    }
    const char *tools = vd_options_get(opts, "toolsversion");
    guint64 n;
    if (tools != NULL && !g_ascii_string_to_unsigned(tools, 10, 0, G_MAXINT32, &n, NULL)) {
        vd_set_file_error(error, params->path, VD_ERROR_INVALID_ARGUMENT,
                          "toolsversion must be a number, not '%s'", tools);
        return FALSE;
    }
    p->ddb.toolsversion = tools != NULL ? tools : DEFAULT_TOOLSVERSION;
    p->ddb.adapter_type = adapter_types[adapter];
    if (params->size > G_MAXINT64 - VMDK_SECTOR) {
        vd_set_file_error(error, params->path, VD_ERROR_INVALID_ARGUMENT, "size too large");
        return FALSE;
    }
    p->sectors = (params->size + VMDK_SECTOR - 1) / VMDK_SECTOR;
    p->ddb.sectors = p->sectors;
    g_autofree char *base = g_path_get_basename(params->path);
    const char *dot = strrchr(base, '.');
    p->stem = dot != NULL && dot != base ? g_strndup(base, (gsize)(dot - base)) : g_strdup(base);
    p->ext = g_strdup(dot != NULL && dot != base ? dot : "");
    p->dir = g_path_get_dirname(params->path);
    return TRUE;
}

/* The parent's CID, which the new delta records as its parentCID. */
static gboolean read_parent_cid(const VdCreateParams *params, guint32 *cid, GError **error)
{
    if (params->backing_format != NULL && !g_str_equal(params->backing_format, "vmdk")) {
        vd_set_file_error(error, params->path, VD_ERROR_INVALID_ARGUMENT,
                          "invalid backing file format %s: a vmdk parent must be vmdk",
                          params->backing_format);
        return FALSE;
    }
    g_autoptr(VdImage) parent =
        vd_create_open_backing(params, "vmdk", VD_OPEN_NO_BACKING | VD_OPEN_FORCE_SHARE, error);
    if (parent == NULL)
        return FALSE;
    *cid = ((VmdkState *)parent->priv)->desc->cid;
    return TRUE;
}

static char *plan_file(const CreatePlan *p, const char *suffix)
{
    g_autofree char *name = g_strdup_printf("%s%s%s", p->stem, suffix, p->ext);
    return g_build_filename(p->dir, name, NULL);
}

static void add_extent_line(VmdkDescriptor *desc, VmdkExtentType type, guint64 sectors,
                            const char *path)
{
    VmdkExtentLine *line = g_new0(VmdkExtentLine, 1);
    line->type = type;
    line->sectors = sectors;
    line->filename = g_path_get_basename(path);
    g_ptr_array_add(desc->extents, line);
}

/* The extent files of a new split or flat vmdk, opened (or made) before
 * any is written, so that one that cannot be (a symlink in its place, a
 * folder, no permission) fails the create with every existing file still
 * as it was. Only the files this create made are removed on failure. */
typedef struct {
    GPtrArray *files; /* VdFile*, in extent order */
    GPtrArray *paths; /* char* */
    GArray *created;  /* gboolean: made by this create */
} NewExtents;

static void new_extents_clear(NewExtents *x, gboolean remove_created)
{
    for (guint i = 0; i < x->files->len; i++) {
        vd_file_close(x->files->pdata[i]);
        if (remove_created && g_array_index(x->created, gboolean, i))
            g_unlink(x->paths->pdata[i]);
    }
    g_ptr_array_unref(x->files);
    g_ptr_array_unref(x->paths);
    g_array_unref(x->created);
}

static gboolean fill_extent(VdFile *file, const CreatePlan *p, gboolean sparse, guint64 sectors,
                            GError **error)
{
    vd_file_set_no_flush(file, p->no_flush);
    if (!vd_file_truncate(file, 0, error))
        return FALSE;
    gboolean ok;
    if (sparse) {
        VmdkSparseCreate sc = { .capacity = sectors,
                                .grain_sectors = DEFAULT_GRAIN_SECTORS,
                                .zeroed_grain = p->zeroed_grain };
        ok = vmdk_sparse_create(file, &sc, error);
    } else {
        ok = vd_file_truncate(file, sectors * VMDK_SECTOR, error);
    }
    return ok && vd_file_sync(file, error);
}

/* twoGbMaxExtent* and monolithicFlat: extent files next to a descriptor. */
static gboolean create_split(VdFile *file, const CreatePlan *p, VmdkDescriptor *desc,
                             GError **error)
{
    gboolean sparse = p->subformat == SUB_TWOGB_SPARSE;
    gboolean split = p->subformat != SUB_MONOLITHIC_FLAT;
    NewExtents x = {
        .files = g_ptr_array_new(),
        .paths = g_ptr_array_new_with_free_func(g_free),
        .created = g_array_new(FALSE, FALSE, sizeof(gboolean)),
    };
    g_autoptr(GArray) sizes = g_array_new(FALSE, FALSE, sizeof(guint64));
    gboolean ok = TRUE;
    guint64 done = 0;
    for (guint n = 1; ok && (n == 1 || done < p->sectors); n++) {
        guint64 sectors =
            split ? MIN(p->sectors - done, (guint64)SPLIT_EXTENT_SECTORS) : p->sectors;
        g_autofree char *suffix =
            split ? g_strdup_printf(sparse ? "-s%03u" : "-f%03u", n) : g_strdup("-flat");
        char *path = plan_file(p, suffix);
        gboolean created = FALSE;
        VdFile *ext = vd_file_create_beside(path, &created, error);
        ok = ext != NULL;
        if (ok) {
            g_ptr_array_add(x.files, ext);
            g_ptr_array_add(x.paths, path);
            g_array_append_val(x.created, created);
            g_array_append_val(sizes, sectors);
            add_extent_line(desc, sparse ? VMDK_EXTENT_SPARSE : VMDK_EXTENT_FLAT, sectors, path);
        } else {
            g_free(path);
        }
        done += sectors;
    }
    for (guint i = 0; ok && i < x.files->len; i++)
        ok = fill_extent(x.files->pdata[i], p, sparse, g_array_index(sizes, guint64, i), error);
    if (ok) {
        g_autofree char *text = vmdk_descriptor_format(desc, &p->ddb);
        ok = vd_file_pwrite(file, 0, text, strlen(text), error);
    }
    /* The caller removes the descriptor of a failed create; we remove the
     * extents this create made, so no half-made disk is left behind. */
    new_extents_clear(&x, !ok);
    return ok;
}

static gboolean create_monolithic(VdFile *file, const VdCreateParams *params, const CreatePlan *p,
                                  VmdkDescriptor *desc, GError **error)
{
    add_extent_line(desc, VMDK_EXTENT_SPARSE, p->sectors, params->path);
    g_autofree char *text = vmdk_descriptor_format(desc, &p->ddb);
    VmdkSparseCreate sc = {
        .capacity = p->sectors,
        .grain_sectors = DEFAULT_GRAIN_SECTORS,
        .zeroed_grain = p->zeroed_grain,
        .stream = p->subformat == SUB_STREAM,
        .descriptor = text,
    };
    return vmdk_sparse_create(file, &sc, error);
}

static gboolean vmdk_create(VdFile *file, const VdCreateParams *params, GError **error)
{
    CreatePlan plan = { 0 };
    g_autoptr(VmdkDescriptor) desc = vmdk_descriptor_new();
    gboolean ok = parse_create_options(params, &plan, error);
    gboolean own_files = plan.subformat != SUB_MONOLITHIC_SPARSE && plan.subformat != SUB_STREAM;
    if (ok && own_files && params->in_descriptor) {
        /* Its extents would be made by path next to a name that only
         * labels the descriptor: never, for a caller's descriptor. */
        vd_set_file_error(error, params->path, VD_ERROR_NOT_SUPPORTED,
                          "the %s subformat needs files of its own; an image made in a "
                          "descriptor can be monolithicSparse or streamOptimized",
                          subformat_names[plan.subformat]);
        ok = FALSE;
    }
    desc->cid = g_random_int();
    desc->create_type = g_strdup(subformat_names[plan.subformat]);
    if (ok && params->backing_file != NULL) {
        desc->parent_hint = g_strdup(params->backing_file);
        ok = read_parent_cid(params, &desc->parent_cid, error);
    }
    if (ok) {
        if (!own_files)
            ok = create_monolithic(file, params, &plan, desc, error);
        else
            ok = create_split(file, &plan, desc, error);
    }
    plan_clear(&plan);
    return ok;
}

const VdDriver vd_driver_vmdk = {
    .name = "vmdk",
    .create_options = vmdk_create_options,
    .probe = vmdk_probe,
    .open = vmdk_open,
    .close = vmdk_close,
    .create = vmdk_create,
    .block_status = vmdk_block_status,
    .read = vmdk_read,
    .write = vmdk_write,
    .write_zeroes = vmdk_write_zeroes,
    .compress = vmdk_compress,
    .write_compressed = vmdk_write_compressed,
    .packed_unit = vmdk_packed_unit,
    .inflate_unit = vmdk_inflate_unit,
    .flush = vmdk_flush,
    .get_info = vmdk_get_info,
    .check = vmdk_check,
    .has_zero_init = vmdk_has_zero_init,
    .cluster_size = vmdk_cluster_size,
    .check_backing = vmdk_check_backing,
    /* streamOptimized must be written front to back; the others do not
     * mind, and in-order copies are what the engine does by default. */
    .sequential_writes = TRUE,
};
