/* hold-image: open an image through libvdisk and keep it open, so the
 * locking tests can make vdisk the process that holds a disk (as a VM
 * holds its disk) and see QEMU refuse it.
 *
 * Usage: hold-image [-w] [-U] [-n] [-f FMT] FILE
 *   -w  open for writing (default: read-only)
 *   -U  force-share (read while others write)
 *   -n  no locking (locking=off)
 * Prints "ready" once open, then waits until stdin reaches end of file.
 * On failure prints the error on stderr and exits 1. */
#include "vdisk.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    VdOpenFlags flags = 0;
    const char *format = NULL;
    int opt;

    while ((opt = getopt(argc, argv, "wUnf:")) != -1) {
        switch (opt) {
        case 'w':
            flags |= VD_OPEN_READ_WRITE;
            break;
        case 'U':
            flags |= VD_OPEN_FORCE_SHARE;
            break;
        case 'n':
            flags |= VD_OPEN_NO_LOCKING;
            break;
        case 'f':
            format = optarg;
            break;
        default:
            fprintf(stderr, "usage: hold-image [-w] [-U] [-n] [-f FMT] FILE\n");
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: hold-image [-w] [-U] [-n] [-f FMT] FILE\n");
        return 2;
    }

    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(argv[optind], format, flags, &error);
    if (img == NULL) {
        fprintf(stderr, "hold-image: %s\n", error->message);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);

    char buf[256];
    while (read(STDIN_FILENO, buf, sizeof buf) > 0) {
        /* only the end of input matters */
    }
    return 0;
}
