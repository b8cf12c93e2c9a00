/* vdisk: qemu-img's human sizes (cli_format_size, see cli.h). In a file
 * of its own so vdiskctl, which shares the progress bar, need not link the
 * rest of cli.c and with it the engine. */
#include <math.h>

#include "cli.h"

char *cli_format_size(guint64 bytes)
{
    static const char *const prefixes[] = { "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei" };
    int exponent = 0;
    int i;

    /* qemu's size_to_str: switch to the next unit once the number would
     * reach 1000, so "1000 KiB" is shown as "0.977 MiB". */
    frexp((double)bytes / (1000.0 / 1024.0), &exponent);
    i = (exponent - 1) / 10;
    if (i < 0)
        i = 0;
    if (i >= (int)G_N_ELEMENTS(prefixes))
        i = G_N_ELEMENTS(prefixes) - 1;
    return g_strdup_printf("%0.3g %sB", (double)bytes / (double)(1ULL << (i * 10)), prefixes[i]);
}
