/* Ceph RBD names (formats/rbd.c) without a cluster: which names are RBD
 * images, qemu's --image-opts driver=rbd options as a name (escaped as
 * qemu escapes one, and read back the same), and the names that are
 * refused before anything connects. A real cluster is tests/interop/rbd.sh's. */
#include "vdisk-driver.h"

#include <string.h>
#include <unistd.h>

static void test_is_name(void)
{
    static const char *const rbd[] = { "rbd:pool/image", "rbd:p/ns/i@snap:conf=/c", "rbd:" };
    static const char *const not_rbd[] = { "disk.raw", "./rbd:p/i", "/rbd:p/i", "rbdimage",
                                           "nbd://h/rbd:p/i" };
    for (gsize i = 0; i < G_N_ELEMENTS(rbd); i++)
        g_assert_true(vd_rbd_is_name(rbd[i]));
    for (gsize i = 0; i < G_N_ELEMENTS(not_rbd); i++)
        g_assert_false(vd_rbd_is_name(not_rbd[i]));
}

static char *name_from(const char *text, GError **error)
{
    g_autoptr(VdOptions) opts = vd_options_new();
    g_assert_true(vd_options_parse(opts, text, NULL));
    return vd_rbd_name_from_options(opts, error);
}

static void test_from_options(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *plain =
        name_from("pool=vms,image=desktop,conf=/etc/ceph/c.conf,user=libvirt", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(plain, ==, "rbd:vms/desktop:conf=/etc/ceph/c.conf:id=libvirt");

    g_autofree char *full = name_from("pool=vms,namespace=team,image=desktop,snapshot=s1", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(full, ==, "rbd:vms/team/desktop@s1");

    /* ':', '/' and '@' in a part are escaped with a backslash. */
    g_autofree char *odd = name_from("pool=a:b,image=c@d/e,conf=/x:y", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(odd, ==, "rbd:a\\:b/c\\@d\\/e:conf=/x\\:y");

    g_assert_null(name_from("pool=vms", &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_null(name_from("pool=vms,image=i,server.0.host=h", &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
    g_assert_nonnull(strstr(error->message, "server.0.host"));
}

/* Opening name fails with code, and the message names the image and
 * holds what. */
static void assert_open_fails(const char *name, VdOpenFlags flags, VdError code, const char *what)
{
    g_autoptr(GError) error = NULL;
    VdImage *img = vd_image_open(name, "raw", flags, &error);
    g_assert_null(img);
    g_assert_error(error, VD_ERROR, (gint)code);
    if (strstr(error->message, what) == NULL || strstr(error->message, "rbd:") == NULL)
        g_error("opening %s: '%s' does not say '%s'", name, error->message, what);
}

static void test_bad_names(void)
{
    const VdError bad = VD_ERROR_INVALID_ARGUMENT;
    assert_open_fails("rbd:", 0, bad, "no pool");
    assert_open_fails("rbd:/image", 0, bad, "no pool");
    assert_open_fails("rbd:pool", 0, bad, "no image after the pool");
    assert_open_fails("rbd:pool/", 0, bad, "no image");
    assert_open_fails("rbd:pool/ns/image/more", 0, bad, "more than POOL/NAMESPACE/IMAGE");
    assert_open_fails("rbd:pool/image@", 0, bad, "no snapshot after @");
    assert_open_fails("rbd:pool/image:conf", 0, bad, "option 'conf' has no =VALUE");
    assert_open_fails("rbd:pool/image:=x", 0, bad, "has no =VALUE");
}

/* Names that parse get as far as the cluster: here, a configuration file
 * that is not there (or, without librbd, the build's refusal). */
static void test_parsed_names(void)
{
    if (!vd_rbd_supported()) {
        assert_open_fails("rbd:p/i:conf=/nonexistent/c.conf", 0, VD_ERROR_NOT_SUPPORTED,
                          "built without Ceph RBD support");
        return;
    }
    assert_open_fails("rbd:p/i:conf=/nonexistent/c.conf", 0, VD_ERROR_NOT_FOUND,
                      "cannot read the Ceph configuration file /nonexistent/c.conf");
    /* The escapes of vd_rbd_name_from_options read back as they were. */
    assert_open_fails("rbd:a\\:b/c\\@d:conf=/nonexistent/x\\:y", 0, VD_ERROR_NOT_FOUND,
                      "configuration file /nonexistent/x:y:");
    /* A snapshot is read-only: refused for writing before any connection. */
    assert_open_fails("rbd:p/i@s1:conf=/nonexistent/c.conf", VD_OPEN_READ_WRITE,
                      VD_ERROR_INVALID_ARGUMENT, "snapshot 's1' is read-only");
    /* An unknown Ceph option in the name. */
    g_autofree char *conf = NULL;
    int fd = g_file_open_tmp("vdisk-test-rbd-XXXXXX.conf", &conf, NULL);
    g_assert_cmpint(fd, >=, 0);
    close(fd);
    g_assert_true(g_file_set_contents(conf, "[global]\nmon_host = 127.0.0.1:1\n", -1, NULL));
    g_autofree char *name = g_strdup_printf("rbd:p/i:conf=%s:no_such_option=1", conf);
    assert_open_fails(name, 0, VD_ERROR_INVALID_ARGUMENT,
                      "'no_such_option' is no Ceph configuration option");
    unlink(conf);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/rbd/is-name", test_is_name);
    g_test_add_func("/rbd/from-options", test_from_options);
    g_test_add_func("/rbd/bad-names", test_bad_names);
    g_test_add_func("/rbd/parsed-names", test_parsed_names);
    return g_test_run();
}
