/* What the GTest programs share: a fresh temporary folder per test (the
 * Fixture), paths in it, and the check for the QEMU oracle. Each test
 * program is its own executable, so these are static functions here. */
#pragma once

#include <glib.h>
#include <glib/gstdio.h>

typedef struct {
    char *dir;
} Fixture;

static void remove_tree(const char *path)
{
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    const char *name;
    while (dir != NULL && (name = g_dir_read_name(dir)) != NULL) {
        g_autofree char *child = g_build_filename(path, name, NULL);
        if (g_file_test(child, G_FILE_TEST_IS_DIR) && !g_file_test(child, G_FILE_TEST_IS_SYMLINK))
            remove_tree(child);
        else
            g_unlink(child);
    }
    g_rmdir(path);
}

static G_GNUC_UNUSED void fixture_setup(Fixture *fx, gconstpointer data)
{
    fx->dir = g_dir_make_tmp("vdisk-unit-XXXXXX", NULL);
    g_assert_nonnull(fx->dir);
}

static G_GNUC_UNUSED void fixture_teardown(Fixture *fx, gconstpointer data)
{
    remove_tree(fx->dir);
    g_free(fx->dir);
}

static G_GNUC_UNUSED char *path_in(Fixture *fx, const char *name)
{
    return g_build_filename(fx->dir, name, NULL);
}

/* qemu-img and qemu-io present? Otherwise the test is skipped. */
static G_GNUC_UNUSED gboolean have_qemu(void)
{
    g_autofree char *img = g_find_program_in_path("qemu-img");
    g_autofree char *io = g_find_program_in_path("qemu-io");
    if (img == NULL || io == NULL) {
        g_test_skip("qemu-img or qemu-io not installed");
        return FALSE;
    }
    return TRUE;
}
