/* The libvirt shim's command-line parsing, on the exact command lines
 * libvirt 9.0 builds (recorded from a libvirtd running a logging
 * qemu-img). */
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

#include "shim-args.h"
#include "shim-errors.h"

static ShimRequest *parse(const char *line, GError **error)
{
    g_auto(GStrv) argv = g_strsplit(line, " ", -1);
    return shim_parse_args((int)g_strv_length(argv), argv, error);
}

static void test_create(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(ShimRequest) r = parse(
        "qemu-img create -f qcow2 -o preallocation=falloc,compat=0.10 /p/a.qcow2 65536K", &error);
    g_assert_no_error(error);
    g_assert_cmpint(r->command, ==, SHIM_CMD_CREATE);
    g_assert_cmpstr(r->format, ==, "qcow2");
    g_assert_cmpstr(r->filename, ==, "/p/a.qcow2");
    g_assert_cmpuint(r->size, ==, 67108864);
    g_assert_cmpstr(qs_options_get(r->options, "preallocation"), ==, "falloc");
    g_assert_cmpstr(qs_options_get(r->options, "compat"), ==, "0.10");
    g_assert_null(r->unsupported);
}

static void test_create_features(void)
{
    g_autoptr(ShimRequest) r = parse(
        "qemu-img create -f qcow2 -o compat=1.1,cluster_size=131072,lazy_refcounts /p/f 64M", NULL);
    g_assert_cmpstr(qs_options_get(r->options, "lazy_refcounts"), ==, "on");
    g_assert_cmpstr(qs_options_get(r->options, "cluster_size"), ==, "131072");
    g_assert_cmpuint(r->size, ==, 64 << 20);
}

static void test_create_backing(void)
{
    g_autoptr(ShimRequest) r =
        parse("qemu-img create -f qcow2 -b /p/a.qcow2 -o backing_fmt=qcow2,compat=0.10 /p/o 65536K",
              NULL);
    g_assert_cmpstr(r->backing, ==, "/p/a.qcow2");
    g_assert_cmpstr(r->backing_format, ==, "qcow2");
    g_assert_null(qs_options_get(r->options, "backing_fmt"));
    /* External snapshot of an inactive domain: no size. */
    g_autoptr(ShimRequest) s =
        parse("qemu-img create -f qcow2 -o backing_fmt=qcow2,backing_file=/p/dom.qcow2 /p/dom.ext1",
              NULL);
    g_assert_cmpstr(s->backing, ==, "/p/dom.qcow2");
    g_assert_null(s->size_text);
    g_assert_cmpuint(s->options->len, ==, 0);
}

static void test_create_encrypted(void)
{
    g_autoptr(ShimRequest) r =
        parse("qemu-img create -f qcow2 --object secret,id=v_encrypt0,file=/run/s -o "
              "encrypt.format=luks,encrypt.key-secret=v_encrypt0,compat=0.10 /p/enc.qcow2 32768K",
              NULL);
    g_assert_cmpuint(r->objects->len, ==, 1);
    g_assert_cmpstr(r->objects->pdata[0], ==, "secret,id=v_encrypt0,file=/run/s");
    g_assert_cmpstr(qs_options_get(r->options, "encrypt.key-secret"), ==, "v_encrypt0");
    g_assert_null(r->unsupported);
}

static void test_escaped_commas(void)
{
    g_autoptr(ShimRequest) r =
        parse("qemu-img create -f qcow2 -o backing_file=/a,,b,compat=1.1 /p/x 1M", NULL);
    g_assert_nonnull(r);
    g_assert_cmpstr(r->backing, ==, "/a,b");
    g_assert_cmpstr(qs_options_get(r->options, "compat"), ==, "1.1");
    g_autoptr(GError) error = NULL;
    g_assert_null(parse("qemu-img create -f qcow2 -o ,x=1 /p/x 1M", &error));
    g_assert_nonnull(strstr(error->message, "Invalid option list"));
}

static void test_convert(void)
{
    g_autoptr(ShimRequest) r =
        parse("qemu-img convert -f qcow2 -O qcow2 -o compat=1.1,lazy_refcounts /p/a /p/b", NULL);
    g_assert_cmpint(r->command, ==, SHIM_CMD_CONVERT);
    g_assert_cmpstr(r->format, ==, "qcow2");
    g_assert_cmpstr(r->out_format, ==, "qcow2");
    g_assert_cmpstr(r->filename, ==, "/p/a");
    g_assert_cmpstr(r->target, ==, "/p/b");
    g_assert_null(r->unsupported);
}

static void test_convert_encrypted(void)
{
    g_autoptr(ShimRequest) r =
        parse("qemu-img convert --image-opts -n --target-image-opts --object "
              "secret,id=b_encrypt0,file=/run/s1 --object secret,id=a_encrypt0,file=/run/s2 "
              "driver=qcow2,file.filename=/p/a,encrypt.key-secret=a_encrypt0 "
              "driver=qcow2,file.filename=/p/b,encrypt.key-secret=b_encrypt0",
              NULL);
    g_assert_cmpstr(r->filename, ==, "/p/a");
    g_assert_cmpstr(r->target, ==, "/p/b");
    g_assert_cmpstr(r->format, ==, "qcow2");
    g_assert_cmpstr(r->out_format, ==, "qcow2");
    g_assert_true(r->no_create);
    g_assert_cmpuint(r->objects->len, ==, 2);
    g_assert_cmpstr(r->source_key, ==, "a_encrypt0");
    g_assert_cmpstr(r->target_key, ==, "b_encrypt0");
    g_assert_null(r->unsupported); /* vdiskd's CopyFrom serves it */
    /* An encrypted source into a plain raw target (vol-create-from). */
    g_autoptr(ShimRequest) d =
        parse("qemu-img convert --image-opts -n --target-image-opts --object "
              "secret,id=a_encrypt0,file=/run/s2 "
              "driver=qcow2,file.filename=/p/a,encrypt.key-secret=a_encrypt0 "
              "driver=raw,file.filename=/p/d",
              NULL);
    g_assert_cmpstr(d->source_key, ==, "a_encrypt0");
    g_assert_null(d->target_key);
    g_assert_cmpstr(d->out_format, ==, "raw");
    g_assert_null(d->unsupported);
    /* Image options vdiskd does not take still go to qemu-img. */
    g_autoptr(ShimRequest) o =
        parse("qemu-img convert --image-opts -n --target-image-opts "
              "driver=qcow2,file.filename=/p/a,encrypt.format=aes driver=raw,file.filename=/p/d",
              NULL);
    g_assert_nonnull(o->unsupported);
    g_autoptr(ShimRequest) n =
        parse("qemu-img convert -n -f qcow2 -O qcow2 -o compat=1.1 /p/a /p/b", NULL);
    g_assert_nonnull(n->unsupported);
    g_autoptr(GError) error = NULL;
    g_assert_null(
        parse("qemu-img convert --target-image-opts /p/a driver=raw,file.filename=/p/b", &error));
    g_assert_nonnull(strstr(error->message, "requires use of -n"));
}

static void test_resize(void)
{
    g_autoptr(ShimRequest) r = parse("qemu-img resize --shrink /p/b 67108864", NULL);
    g_assert_cmpint(r->command, ==, SHIM_CMD_RESIZE);
    g_assert_true(r->shrink);
    g_assert_cmpuint(r->size, ==, 67108864);
    g_autoptr(ShimRequest) e =
        parse("qemu-img resize --object secret,id=s,file=/f --image-opts "
              "driver=qcow2,encrypt.key-secret=s,file.filename=/p/e 67108864",
              NULL);
    g_assert_cmpstr(e->filename, ==, "/p/e");
    g_assert_cmpstr(e->source_key, ==, "s");
    g_assert_null(e->unsupported);
    g_autoptr(ShimRequest) rel = parse("qemu-img resize /p/b +1G", NULL);
    g_assert_nonnull(rel->unsupported);
}

static void test_snapshot(void)
{
    const char *ops = "cad";
    for (int i = 0; i < 3; i++) {
        g_autofree char *line = g_strdup_printf("qemu-img snapshot -%c snap1 /p/dom", ops[i]);
        g_autoptr(ShimRequest) r = parse(line, NULL);
        g_assert_cmpint(r->command, ==, SHIM_CMD_SNAPSHOT);
        g_assert_cmpint(r->snapshot_op, ==, ops[i]);
        g_assert_cmpstr(r->snapshot, ==, "snap1");
        g_assert_cmpstr(r->filename, ==, "/p/dom");
        g_assert_null(r->unsupported);
    }
}

static void test_errors_and_others(void)
{
    g_autoptr(GError) error = NULL;
    g_assert_null(parse("qemu-img create -f qcow2 /p/x", &error));
    g_assert_nonnull(strstr(error->message, "needs a size"));
    g_clear_error(&error);
    g_assert_null(parse("qemu-img create -f qcow2 /p/x 12Q", &error));
    g_clear_error(&error);
    g_assert_null(parse("qemu-img create --bogus /p/x 1M", &error));
    g_clear_error(&error);
    g_autoptr(ShimRequest) info = parse("qemu-img info /p/x", NULL);
    g_assert_cmpint(info->command, ==, SHIM_CMD_OTHER);
    g_assert_nonnull(info->unsupported);
    g_autoptr(ShimRequest) v = parse("qemu-img --version", NULL);
    g_assert_cmpint(v->command, ==, SHIM_CMD_VERSION);
    /* sizes as qemu-img reads them, refused in its words */
    g_autoptr(ShimRequest) g = parse("qemu-img create -f raw /p/x 1G", NULL);
    g_assert_cmpuint(g->size, ==, 1073741824);
    g_autoptr(ShimRequest) b = parse("qemu-img create -f raw /p/x 512", NULL);
    g_assert_cmpuint(b->size, ==, 512);
    g_autoptr(ShimRequest) f = parse("qemu-img resize /p/x 1.5G", NULL);
    g_assert_cmpuint(f->size, ==, 3u << 29);
    g_assert_null(parse("qemu-img create -f raw /p/x 1.5", &error));
    g_assert_nonnull(strstr(error->message, "Invalid image size specified"));
    g_clear_error(&error);
    /* an --image-opts that names no file, or a file the shim cannot reach */
    g_assert_null(parse("qemu-img resize --image-opts driver=qcow2 1G", &error));
    g_assert_nonnull(strstr(error->message, "A block device must be specified"));
    g_clear_error(&error);
    g_autoptr(ShimRequest) nbd = parse(
        "qemu-img resize --image-opts driver=raw,file.driver=nbd,file.filename=/p/x 1G", NULL);
    g_assert_nonnull(nbd->unsupported);
}

/* libvirt's vol-create-from a qcow2 volume into a logical pool: the LV is
 * made first (lvcreate), then filled by a convert without -n, the target
 * the LV's device path; and from an LV (raw, as libvirt reads any block
 * volume) into a dir pool. */
static void test_convert_logical(void)
{
    g_autoptr(ShimRequest) r =
        parse("qemu-img convert -f qcow2 -O raw /p/src.qcow2 /dev/vg0/lv-1", NULL);
    g_assert_cmpint(r->command, ==, SHIM_CMD_CONVERT);
    g_assert_false(r->no_create);
    g_assert_cmpstr(r->format, ==, "qcow2");
    g_assert_cmpstr(r->out_format, ==, "raw");
    g_assert_cmpstr(r->target, ==, "/dev/vg0/lv-1");
    g_assert_cmpuint(r->options->len, ==, 0);
    g_assert_null(r->unsupported);
    g_autoptr(ShimRequest) back =
        parse("qemu-img convert -f raw -O qcow2 /dev/vg0/lv-1 /p/back.qcow2", NULL);
    g_assert_cmpstr(back->filename, ==, "/dev/vg0/lv-1");
    g_assert_null(back->unsupported);
}

/* Names qemu opens through a protocol (a Ceph RBD image with libvirt's
 * :id=, :auth_supported=, :mon_host=, :key= parts; an NBD export; a json:
 * name) are no files of a pool: they go to the real qemu-img, and the
 * reason, which is logged, never carries the name (an rbd: name may hold a
 * key). A file whose name has a ':' after a '/' is still a file. */
static void test_protocol_names(void)
{
    static const char *const lines[] = {
        "qemu-img convert -f qcow2 -O raw /p/a.qcow2 "
        "rbd:pool/img:id=admin:auth_supported=cephx\\;none:mon_host=127.0.0.1\\:6789:key=QUFB",
        "qemu-img convert -f raw -O qcow2 rbd:pool/img:conf=/etc/ceph/ceph.conf /p/b.qcow2",
        "qemu-img create -f raw rbd:pool/new 1G",
        "qemu-img resize rbd:pool/img 2G",
        "qemu-img snapshot -c s1 rbd:pool/img",
        "qemu-img convert -O raw nbd:unix:/run/s.sock /p/x.raw",
        "qemu-img convert -O raw json:{\"file.filename\":\"/p/a\"} /p/x.raw",
        "qemu-img create -f qcow2 -b rbd:pool/base -F raw /p/o.qcow2 1G",
        "qemu-img convert --image-opts -O raw driver=rbd,pool=pool,image=img /p/x.raw",
    };
    for (guint i = 0; i < G_N_ELEMENTS(lines); i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(ShimRequest) r = parse(lines[i], &error);
        g_assert_no_error(error);
        g_assert_nonnull(r->unsupported);
        g_assert_null(strstr(r->unsupported, "key"));
        g_assert_null(strstr(r->unsupported, "pool/"));
    }
    g_autoptr(ShimRequest) rbd = parse(lines[1], NULL);
    g_assert_cmpstr(rbd->unsupported, ==,
                    "the source is a rbd: image, which qemu opens through that protocol, not a "
                    "file");
    g_autoptr(ShimRequest) opts = parse(lines[8], NULL);
    g_assert_nonnull(strstr(opts->unsupported, "driver=rbd"));
    /* a ':' after a '/' is part of a file name */
    g_autoptr(ShimRequest) colon = parse("qemu-img convert -f qcow2 -O raw /p/a:1 /p/b:2", NULL);
    g_assert_null(colon->unsupported);
    g_assert_cmpstr(colon->filename, ==, "/p/a:1");
}

/* The errors as a call returns them: built from the D-Bus name the bus
 * sent, which GDBus maps to a G_DBUS_ERROR code for its own names and
 * keeps for g_dbus_error_get_remote_error in every case. */
static gboolean absent(const char *name)
{
    g_autoptr(GError) e = g_dbus_error_new_for_dbus_error(name, "some message");
    return shim_error_vdiskd_absent(e);
}

static void test_dbus_errors(void)
{
    /* vdiskd neither running nor activatable, or its activation failed:
     * the real qemu-img may do the work. */
    g_assert_true(absent("org.freedesktop.DBus.Error.ServiceUnknown"));
    g_assert_true(absent("org.freedesktop.DBus.Error.NameHasNoOwner"));
    g_assert_true(absent("org.freedesktop.DBus.Error.Spawn.ChildExited"));
    g_assert_true(absent("org.freedesktop.DBus.Error.Spawn.ExecFailed"));
    g_assert_true(absent("org.freedesktop.systemd1.NoSuchUnit"));
    /* vdiskd there, or maybe half way through: never a second try */
    g_assert_false(absent("org.freedesktop.DBus.Error.NoReply"));
    g_assert_false(absent("org.freedesktop.DBus.Error.AccessDenied"));
    g_assert_false(absent("org.vdisk.VDisk1.Error.Failed"));
    g_autoptr(GError) local = g_error_new_literal(G_IO_ERROR, G_IO_ERROR_CLOSED, "closed");
    g_assert_false(shim_error_vdiskd_absent(local));

    g_autoptr(GError) unknown_method =
        g_dbus_error_new_for_dbus_error("org.freedesktop.DBus.Error.UnknownMethod", "no CopyFrom");
    g_assert_true(shim_error_unsupported(unknown_method));
    g_autoptr(GError) format =
        g_dbus_error_new_for_dbus_error("org.vdisk.VDisk1.Error.UnsupportedFormat", "qed");
    g_assert_true(shim_error_unsupported(format));
    g_autoptr(GError) option = g_dbus_error_new_for_dbus_error(
        "org.vdisk.VDisk1.Error.InvalidArgument", "qcow2 has no option 'x'");
    g_assert_true(shim_error_unsupported(option));
    g_autoptr(GError) size =
        g_dbus_error_new_for_dbus_error("org.vdisk.VDisk1.Error.InvalidArgument", "bad size");
    g_assert_false(shim_error_unsupported(size));

    g_autoptr(GError) outside = g_dbus_error_new_for_dbus_error(
        "org.vdisk.VDisk1.Error.NotFound", "/private/disk.qcow2 is in no storage pool");
    g_assert_true(shim_error_outside_pools(outside));
    g_assert_false(shim_error_outside_pools(size));
    g_assert_false(shim_error_unsupported(outside));
    g_assert_false(shim_error_vdiskd_absent(outside));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/shim/create", test_create);
    g_test_add_func("/shim/create-features", test_create_features);
    g_test_add_func("/shim/create-backing", test_create_backing);
    g_test_add_func("/shim/create-encrypted", test_create_encrypted);
    g_test_add_func("/shim/escaped-commas", test_escaped_commas);
    g_test_add_func("/shim/convert", test_convert);
    g_test_add_func("/shim/convert-encrypted", test_convert_encrypted);
    g_test_add_func("/shim/resize", test_resize);
    g_test_add_func("/shim/snapshot", test_snapshot);
    g_test_add_func("/shim/errors-and-others", test_errors_and_others);
    g_test_add_func("/shim/dbus-errors", test_dbus_errors);
    g_test_add_func("/shim/convert-logical", test_convert_logical);
    g_test_add_func("/shim/protocol-names", test_protocol_names);
    return g_test_run();
}
