/* null-co: qemu's null block driver, an image that is no file at all.
 * It reads zeroes and forgets what is written to it; qemu's tests use it
 * as a source of a given size ("json:{'driver': 'null-co', 'size': N,
 * 'read-zeroes': true}"). Its options are those of qemu: size (1 GiB
 * unless given), read-zeroes and latency-ns.
 *
 * Where read-zeroes is off qemu leaves the data undefined and block status
 * says nothing is there; vdisk reads zeroes then too, which qemu allows.
 * With read-zeroes on, block status says the whole disk reads zero, at the
 * host offset of the guest's, as qemu-img map shows it.
 */
#include "vdisk-driver.h"

#include <string.h>

#define NULL_DEFAULT_SIZE (G_GUINT64_CONSTANT(1) << 30)

typedef struct {
    gboolean read_zeroes;
} NullState;

/* The keys null-co takes, and those the generic open reads itself. */
static const char *const null_keys[] = {
    "size",      "read-zeroes",    "latency-ns", "force-share",   "locking", "file.locking",
    "read-only", "auto-read-only", "discard",    "detect-zeroes", NULL,
};

static gboolean null_open(VdImage *img, GError **error)
{
    g_autoptr(GPtrArray) keys =
        img->open_options != NULL ? vd_options_keys(img->open_options) : NULL;
    for (guint i = 0; keys != NULL && i < keys->len; i++) {
        const char *key = keys->pdata[i];
        if (!g_strv_contains(null_keys, key) && !g_str_has_prefix(key, "cache.")) {
            vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                         "Block protocol 'null-co' doesn't support the option '%s'", key);
            return FALSE;
        }
    }
    g_autofree NullState *s = g_new0(NullState, 1);
    guint64 latency;
    if (!vd_option_size(img->open_options, "size", NULL_DEFAULT_SIZE, &img->size, error) ||
        !vd_option_bool(img->open_options, "read-zeroes", FALSE, &s->read_zeroes, error) ||
        !vd_option_size(img->open_options, "latency-ns", 0, &latency, error)) {
        g_prefix_error(error, "%s: ", img->filename);
        return FALSE;
    }
    if (img->size > G_MAXINT64) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "size %" G_GUINT64_FORMAT " is too large", img->size);
        return FALSE;
    }
    img->priv = g_steal_pointer(&s);
    return TRUE;
}

static void null_close(VdImage *img) { g_free(img->priv); }

static gboolean null_block_status(VdImage *img, guint64 offset, guint64 len, VdExtent *out,
                                  GError **error)
{
    NullState *s = img->priv;
    out->length = len;
    if (s->read_zeroes) {
        out->kind = VD_EXTENT_ZERO;
        out->offset_valid = TRUE;
        out->host_offset = offset;
    } else {
        /* Nothing here: the generic layer reads zeroes for it. */
        out->kind = VD_EXTENT_UNALLOCATED;
    }
    return TRUE;
}

static gboolean null_read(VdImage *img, guint64 offset, void *buf, gsize len, GError **error)
{
    memset(buf, 0, len);
    return TRUE;
}

static gboolean null_write(VdImage *img, guint64 offset, const void *buf, gsize len, GError **error)
{
    return TRUE;
}

static gboolean null_write_zeroes(VdImage *img, guint64 offset, guint64 len, gboolean may_unmap,
                                  GError **error)
{
    return TRUE;
}

static gboolean null_discard(VdImage *img, guint64 offset, guint64 len, GError **error)
{
    return TRUE;
}

static gboolean null_flush(VdImage *img, GError **error) { return TRUE; }

static gboolean null_has_zero_init(VdImage *img) { return ((NullState *)img->priv)->read_zeroes; }

const VdDriver vd_driver_null = {
    .name = "null-co",
    .no_file = TRUE,
    .open = null_open,
    .close = null_close,
    .block_status = null_block_status,
    .read = null_read,
    .write = null_write,
    .write_zeroes = null_write_zeroes,
    .discard = null_discard,
    .flush = null_flush,
    .has_zero_init = null_has_zero_init,
};
