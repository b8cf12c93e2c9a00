/* A fuzz target for every format parser: the input is an image file. It is
 * opened with each driver (and by probing), described, checked, mapped and
 * read, then written and repaired; whatever the bytes say, the engine must
 * answer with an error or data, never crash, hang or allocate without
 * bound.
 *
 * Built two ways: with -fsanitize=fuzzer as a libFuzzer target (meson
 * option `fuzzing`), and as a plain program that runs each file named on
 * its command line once, for the `fuzz` suite's regression corpus.
 */
#include "vdisk.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Bounds on the work one input may cause, so a header claiming an
 * exabyte disk is explored, not read whole. */
#define MAX_EXTENTS 4096
#define READ_WINDOW (256 * 1024)

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);

static void walk(VdImage *img)
{
    guint64 size = vd_image_size(img), offset = 0;
    g_autofree guint8 *buf = g_malloc(READ_WINDOW);
    for (int n = 0; n < MAX_EXTENTS && offset < size; n++) {
        VdBlockStatus st;
        if (!vd_image_block_status(img, offset, size - offset, TRUE, &st, NULL))
            break;
        /* Read the start of each extent: that is where parsers look up tables. */
        gsize len = (gsize)MIN(st.length, (guint64)READ_WINDOW);
        if (!vd_image_read(img, offset, buf, len, NULL))
            break;
        offset += st.length;
    }
    if (size >= READ_WINDOW)
        vd_image_read(img, size - READ_WINDOW, buf, READ_WINDOW, NULL);
}

static void exercise(int fd, const char *format)
{
    /* No backing files, no extents or data files by name: the input alone. */
    VdOpenFlags flags = VD_OPEN_NO_BACKING | VD_OPEN_NO_RELATED_FILES;
    g_autoptr(VdImage) img = vd_image_open_fd(fd, "fuzz-input", format, flags, NULL);
    if (img == NULL)
        return;
    g_autoptr(VdImageInfo) info = vd_image_get_info(img, NULL);
    g_autoptr(GPtrArray) snapshots = vd_image_list_snapshots(img, NULL);
    VdCheckResult res;
    vd_image_check(img, VD_CHECK_REPAIR_NONE, &res, NULL);
    vd_check_result_clear(&res);
    walk(img);
}

/* Last, as it changes the input: the write paths. A write at each end,
 * then a repairing check, and a second open for writing that must find
 * whatever the first left behind usable. */
static void exercise_writes(int fd)
{
    VdOpenFlags flags = VD_OPEN_NO_BACKING | VD_OPEN_NO_RELATED_FILES | VD_OPEN_READ_WRITE;
    for (int round = 0; round < 2; round++) {
        g_autoptr(VdImage) img = vd_image_open_fd(fd, "fuzz-input", NULL, flags, NULL);
        if (img == NULL)
            return;
        static const guint8 block[4096] = { 0x5a };
        guint64 size = vd_image_size(img);
        if (size >= sizeof block) {
            vd_image_write(img, 0, block, sizeof block, NULL);
            vd_image_write(img, (size - sizeof block) / 512 * 512, block, sizeof block, NULL);
        }
        if (round == 0) {
            VdCheckResult res;
            vd_image_check(img, VD_CHECK_REPAIR_LEAKS | VD_CHECK_REPAIR_ERRORS, &res, NULL);
            vd_check_result_clear(&res);
        }
    }
}

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
    int fd = memfd_create("fuzz-input", MFD_CLOEXEC);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) == (ssize_t)size) {
        exercise(fd, NULL);
        for (const char *const *f = vd_formats(); *f != NULL; f++)
            exercise(fd, *f);
        exercise_writes(fd);
    }
    close(fd);
    return 0;
}

#ifndef VDISK_LIBFUZZER
/* The regression runner: each argument is one input. */
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        g_autofree char *contents = NULL;
        gsize len = 0;
        g_autoptr(GError) error = NULL;
        if (!g_file_get_contents(argv[i], &contents, &len, &error)) {
            g_printerr("%s\n", error->message);
            return 1;
        }
        LLVMFuzzerTestOneInput((const guint8 *)contents, len);
    }
    g_print("%d inputs, no crash\n", argc - 1);
    return 0;
}
#endif
