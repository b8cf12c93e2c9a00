/* vdisk: qemu's "json:{...}" file names (see cli.h), read by
 * qemu-syntax/json.c and reported in vdisk's error domain. */
#include "cli.h"
#include "qemu-syntax.h"

char *cli_json_filename_options(const char *name, GError **error)
{
    g_autoptr(GError) local = NULL;
    char *text = qs_json_filename_options(name, &local);
    if (text == NULL)
        g_set_error_literal(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, local->message);
    return text;
}
