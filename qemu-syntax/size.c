/* qemu's size syntax. */
#include "qemu-syntax.h"

#include <errno.h>
#include <string.h>

gboolean qs_parse_size(const char *text, guint64 *size, GError **error)
{
    static const char suffixes[] = "BKMGTPE";
    char *end = NULL;
    if (text == NULL || !g_ascii_isdigit(*text))
        goto invalid;
    errno = 0;
    guint64 whole;
    if (text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        /* qemu takes hexadecimal too ("0x10000"), whole bytes only: no
         * fraction, though a suffix is still taken (qemu warns that it is
         * deprecated). */
        if (!g_ascii_isxdigit(text[2]))
            goto invalid;
        whole = g_ascii_strtoull(text + 2, &end, 16);
        if (errno != 0 || *end == '.')
            goto invalid;
    } else {
        whole = g_ascii_strtoull(text, &end, 10);
        if (errno != 0)
            goto invalid;
    }
    /* A fraction ("1.5G") is kept as num/den so the result stays exact. */
    guint64 frac_num = 0, frac_den = 1;
    if (*end == '.') {
        for (end++; g_ascii_isdigit(*end); end++) {
            if (frac_den < G_GUINT64_CONSTANT(100000000000000)) {
                frac_num = frac_num * 10 + (guint64)(*end - '0');
                frac_den *= 10;
            }
        }
    }
    int shift = 0;
    if (*end != '\0') {
        const char *s = strchr(suffixes, g_ascii_toupper(*end));
        if (s == NULL || end[1] != '\0')
            goto invalid;
        shift = (int)(s - suffixes) * 10;
    }
    if (whole > (G_MAXUINT64 >> shift))
        goto invalid;
    guint64 bytes = whole << shift;
    if (frac_num != 0) {
        unsigned __int128 scaled = (unsigned __int128)frac_num << shift;
        if (scaled % frac_den != 0 || bytes + (guint64)(scaled / frac_den) < bytes)
            goto invalid; /* not a whole number of bytes, or too large */
        bytes += (guint64)(scaled / frac_den);
    }
    *size = bytes;
    return TRUE;
invalid:
    g_set_error(error, QS_ERROR, QS_ERROR_INVALID,
                "invalid size '%s': use a number of bytes with an optional suffix "
                "K, M, G, T, P or E (powers of 1024)",
                text != NULL ? text : "");
    return FALSE;
}
