/* NBD exports through libnbd (formats/nbd.c), over a socket the caller
 * connected: vd_image_open_nbd_socket, the entry point vdiskd's worker
 * uses for a socket vdiskctl hands it. nbdkit serves on the other end of
 * a socketpair (nbdkit -s: the protocol on its stdin and stdout), so no
 * network and no socket file is involved. Also the names the opens take. */
#include "vdisk-driver.h"

#include "test-util.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* nbdkit -s ARGS... on a socketpair: our end, or -1 (test skipped) when
 * nbdkit or NBD support is missing. */
static int serve(const char *const *args, GPid *pid)
{
    if (!vd_nbd_supported()) {
        g_test_skip("vdisk was built without libnbd");
        return -1;
    }
    g_autofree char *nbdkit = g_find_program_in_path("nbdkit");
    if (nbdkit == NULL) {
        g_test_skip("nbdkit not found (package nbdkit)");
        return -1;
    }
    int sv[2];
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_ptr_array_add(argv, nbdkit);
    g_ptr_array_add(argv, "-s");
    for (gsize i = 0; args[i] != NULL; i++)
        g_ptr_array_add(argv, (gpointer)args[i]);
    g_ptr_array_add(argv, NULL);
    g_autoptr(GError) error = NULL;
    gboolean ok =
        g_spawn_async_with_fds(NULL, (char **)argv->pdata, NULL, G_SPAWN_DO_NOT_REAP_CHILD, NULL,
                               NULL, pid, sv[1], sv[1], -1, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    close(sv[1]);
    return sv[0];
}

static void stop(GPid pid, int fd)
{
    close(fd);
    kill(pid, SIGTERM);
    int status;
    waitpid(pid, &status, 0);
    g_spawn_close_pid(pid);
}

static void test_read_write(void)
{
    GPid pid;
    int fd = serve((const char *const[]){ "memory", "4M", NULL }, &pid);
    if (fd < 0)
        return;
    g_autoptr(GError) error = NULL;
    VdImage *img = vd_image_open_nbd_socket(fd, "", "raw", VD_OPEN_READ_WRITE, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(vd_image_size(img), ==, 4 << 20);
    g_assert_cmpstr(vd_image_format(img), ==, "raw");
    g_autofree char *name = g_strdup_printf("NBD export '' on fd %d", fd);
    g_assert_cmpstr(vd_image_filename(img), ==, name);
    /* The caller's descriptor is its own still. */
    g_assert_cmpint(fcntl(fd, F_GETFD), >=, 0);

    guint8 data[4096], back[4096];
    memset(data, 0x5a, sizeof data);
    /* Asked before the write, the range reads zero; the answer, kept for
     * the reads that follow, must not outlive the write. */
    VdBlockStatus before;
    g_assert_true(vd_image_block_status(img, 1 << 20, 4096, FALSE, &before, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(before.flags & VD_BLOCK_DATA, ==, 0);
    g_assert_true(vd_image_write(img, 1 << 20, data, sizeof data, &error));
    g_assert_no_error(error);
    g_assert_true(vd_image_flush(img, &error));
    g_assert_no_error(error);
    g_assert_true(vd_image_read(img, 1 << 20, back, sizeof back, &error));
    g_assert_no_error(error);
    g_assert_cmpmem(back, sizeof back, data, sizeof data);

    /* Block status is the server's: the written page is data, the rest
     * reads zero and is not read by a copy. */
    VdBlockStatus st;
    g_assert_true(vd_image_block_status(img, 0, 1 << 20, FALSE, &st, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(st.flags & (VD_BLOCK_DATA | VD_BLOCK_ZERO), ==, VD_BLOCK_ZERO);
    g_assert_cmpuint(st.length, ==, 1 << 20);
    g_assert_true(vd_image_block_status(img, 1 << 20, 1 << 20, FALSE, &st, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(st.flags & (VD_BLOCK_DATA | VD_BLOCK_ZERO), ==, VD_BLOCK_DATA);
    g_assert_cmpuint(st.length, >=, sizeof data); /* the server's pages (nbdkit's: 32 KiB) */
    g_assert_cmpuint(st.length, <=, 64 << 10);

    /* Zeroes are written as zeroes: the page reads zero again. */
    g_assert_true(vd_image_write_zeroes(img, 1 << 20, sizeof data, TRUE, &error));
    g_assert_no_error(error);
    g_assert_true(vd_image_read(img, 1 << 20, back, sizeof back, &error));
    g_assert_no_error(error);
    g_assert_true(vd_buffer_is_zero(back, sizeof back));

    /* An export keeps its size. */
    g_assert_false(vd_image_resize(img, 8 << 20, FALSE, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
    vd_image_unref(img);
    stop(pid, fd);
}

static void test_read_only_export(void)
{
    GPid pid;
    int fd = serve((const char *const[]){ "-r", "memory", "1M", NULL }, &pid);
    if (fd < 0)
        return;
    g_autoptr(GError) error = NULL;
    VdImage *img = vd_image_open_nbd_socket(fd, NULL, "raw", VD_OPEN_READ_WRITE, &error);
    g_assert_null(img);
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "read-only"));
    stop(pid, fd);

    fd = serve((const char *const[]){ "-r", "memory", "1M", NULL }, &pid);
    g_clear_error(&error);
    img = vd_image_open_nbd_socket(fd, NULL, NULL, 0, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(vd_image_size(img), ==, 1 << 20);
    vd_image_unref(img);
    stop(pid, fd);
}

/* Any format on an export: a qcow2 served as its bytes is probed as one. */
static void test_image_on_export(Fixture *fx, gconstpointer data)
{
    g_autofree char *path = path_in(fx, "disk.qcow2");
    g_autoptr(GError) error = NULL;
    g_assert_true(vd_image_create(path, "qcow2", 64 << 20, NULL, &error));
    g_assert_no_error(error);
    g_autofree char *file_arg = g_strdup_printf("file=%s", path);
    GPid pid;
    int fd = serve((const char *const[]){ "-r", "file", file_arg, NULL }, &pid);
    if (fd < 0)
        return;
    VdImage *img = vd_image_open_nbd_socket(fd, "", NULL, 0, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(vd_image_format(img), ==, "qcow2");
    g_assert_cmpuint(vd_image_size(img), ==, 64 << 20);
    vd_image_unref(img);
    stop(pid, fd);
}

static void test_missing_export(void)
{
    GPid pid;
    int fd = serve((const char *const[]){ "--filter=exportname", "memory", "1M", "exportname=a",
                                          "exportname-strict=true", NULL },
                   &pid);
    if (fd < 0)
        return;
    g_autoptr(GError) error = NULL;
    VdImage *img = vd_image_open_nbd_socket(fd, "b", "raw", 0, &error);
    g_assert_null(img);
    g_assert_nonnull(error);
    g_assert_nonnull(strstr(error->message, "'b'"));
    stop(pid, fd);
}

static void test_names(void)
{
    static const char *const nbd[] = {
        "nbd://host/exp", "nbd+unix:///?socket=/s", "nbd+tcp://h:1/",
        "nbds://h/x",     "nbd:127.0.0.1:10809",    "nbd:unix:/run/s.sock",
    };
    static const char *const not_nbd[] = { "disk.qcow2", "./nbd:x", "/nbd://x", "nbdfile",
                                           "file:nbd.img" };
    for (gsize i = 0; i < G_N_ELEMENTS(nbd); i++)
        g_assert_true(vd_nbd_is_name(nbd[i]));
    for (gsize i = 0; i < G_N_ELEMENTS(not_nbd); i++)
        g_assert_false(vd_nbd_is_name(not_nbd[i]));

    g_autoptr(GError) error = NULL;
    g_autoptr(VdOptions) opts = vd_options_new();
    g_assert_true(
        vd_options_parse(opts, "server.type=unix,server.path=/run/s.sock,export=e", &error));
    g_autofree char *unix_name = vd_nbd_name_from_options(opts, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(unix_name, ==, "nbd+unix:///e?socket=/run/s.sock");

    g_autoptr(VdOptions) inet = vd_options_new();
    g_assert_true(vd_options_parse(inet, "server.type=inet,server.host=10.0.0.1", &error));
    g_autofree char *inet_name = vd_nbd_name_from_options(inet, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(inet_name, ==, "nbd://10.0.0.1:10809");

    g_autoptr(VdOptions) bad = vd_options_new();
    g_assert_true(vd_options_parse(bad, "server.type=inet,server.host=h,server.port=x", &error));
    g_assert_null(vd_nbd_name_from_options(bad, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/nbd/socket/read-write", test_read_write);
    g_test_add_func("/nbd/socket/read-only-export", test_read_only_export);
    g_test_add("/nbd/socket/image-on-export", Fixture, NULL, fixture_setup, test_image_on_export,
               fixture_teardown);
    g_test_add_func("/nbd/socket/missing-export", test_missing_export);
    g_test_add_func("/nbd/names", test_names);
    return g_test_run();
}
