/* The vdisk error domain and the helpers that put a file name first in
 * every message. */
#include "vdisk-driver.h"

G_DEFINE_QUARK(vdisk - error - quark, vd_error)

static void set_error_va(GError **error, const char *filename, VdError code, const char *fmt,
                         va_list args)
{
    if (error == NULL)
        return;
    g_autofree char *msg = g_strdup_vprintf(fmt, args);
    if (filename != NULL)
        g_set_error(error, VD_ERROR, code, "%s: %s", filename, msg);
    else
        g_set_error_literal(error, VD_ERROR, code, msg);
}

void vd_set_error(GError **error, VdImage *img, VdError code, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    set_error_va(error, img != NULL ? img->filename : NULL, code, fmt, args);
    va_end(args);
}

void vd_set_file_error(GError **error, const char *filename, VdError code, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    set_error_va(error, filename, code, fmt, args);
    va_end(args);
}

gboolean vd_buffer_is_zero(const void *buf, gsize len)
{
    const guint8 *p = buf;
    /* Check the head byte-wise, then compare the buffer with itself shifted
     * by 16 bytes: memcmp is vectorised, a byte loop is not. */
    gsize head = MIN(len, (gsize)16);
    for (gsize i = 0; i < head; i++)
        if (p[i] != 0)
            return FALSE;
    if (len <= 16)
        return TRUE;
    return memcmp(p, p + 16, len - 16) == 0;
}
