/* qemu-syntax/: qemu's option lists, sizes, secret objects and
 * --image-opts, as vdisk, vdiskctl and the shim all read them; and
 * libvdisk's typed options, which are built on it, reading them alike. */
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

#include "qemu-syntax.h"
#include "vdisk.h"

static void test_options(void)
{
    g_autoptr(GPtrArray) opts = qs_options_new();
    g_autoptr(GError) error = NULL;
    g_assert_true(qs_options_parse("backing_file=/a,,b,lazy_refcounts,compat=0.10,compat=1.1,",
                                   opts, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(opts->len, ==, 4);
    const QsOption *first = opts->pdata[0];
    g_assert_cmpstr(first->key, ==, "backing_file");
    g_assert_cmpstr(first->value, ==, "/a,b");
    g_assert_cmpstr(qs_options_get(opts, "lazy_refcounts"), ==, "on");
    g_assert_cmpstr(qs_options_get(opts, "compat"), ==, "1.1"); /* the last counts */
    g_assert_null(qs_options_get(opts, "cluster_size"));
    g_assert_true(qs_options_parse("", opts, &error));
    g_assert_cmpuint(opts->len, ==, 4);
    /* an empty option, or one without a name, as qemu refuses them */
    const char *bad[] = { ",x=1", "a=1,,,=2", "=x", "a=1,=x" };
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GPtrArray) none = qs_options_new();
        g_assert_false(qs_options_parse(bad[i], none, &error));
        g_assert_error(error, QS_ERROR, QS_ERROR_INVALID);
        g_clear_error(&error);
    }
    /* ",,,," is two commas inside one value */
    g_autoptr(GPtrArray) commas = qs_options_new();
    g_assert_true(qs_options_parse("a=1,,,,b=2", commas, &error));
    g_assert_cmpstr(qs_options_get(commas, "a"), ==, "1,,b=2");
}

static void test_sizes(void)
{
    static const struct {
        const char *text;
        guint64 bytes;
    } good[] = {
        { "0", 0 },
        { "512", 512 },
        { "512b", 512 },
        { "512B", 512 },
        { "64k", 64 << 10 },
        { "64K", 64 << 10 },
        { "20M", 20 << 20 },
        { "1G", G_GUINT64_CONSTANT(1) << 30 },
        { "1.5G", G_GUINT64_CONSTANT(3) << 29 },
        { "1.5K", 1536 },
        { "2T", G_GUINT64_CONSTANT(2) << 40 },
        { "3p", G_GUINT64_CONSTANT(3) << 50 },
        { "15E", G_GUINT64_CONSTANT(15) << 60 },
        { "18446744073709551615", G_MAXUINT64 },
        { "0x10000", 0x10000 },
        { "0X1f", 0x1f },
        { "0x10B", 0x10b },
        { "0x1000K", 0x1000 << 10 },
    };
    for (gsize i = 0; i < G_N_ELEMENTS(good); i++) {
        guint64 v = 1;
        g_autoptr(GError) error = NULL;
        g_assert_true(qs_parse_size(good[i].text, &v, &error));
        g_assert_no_error(error);
        g_assert_cmpuint(v, ==, good[i].bytes);
    }
    const char *bad[] = { "",   "-1",   "+1G", " 1G",  "1G ",  "1KB",   "1Q",
                          "G",  "16E",  "1.5", "0.1K", "1,5G", "0x1.5", "18446744073709551616",
                          "0x", "00x10" };
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        guint64 v = 7;
        g_autoptr(GError) error = NULL;
        g_assert_false(qs_parse_size(bad[i], &v, &error));
        g_assert_error(error, QS_ERROR, QS_ERROR_INVALID);
        g_autofree char *start = g_strdup_printf("invalid size '%s': ", bad[i]);
        g_assert_true(g_str_has_prefix(error->message, start));
        g_assert_cmpuint(v, ==, 7);
    }
}

static void test_secret_parse(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(QsSecret) f = qs_secret_parse("secret,id=k,file=/run/a,,b", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(f->id, ==, "k");
    g_assert_cmpstr(f->file, ==, "/run/a,b");
    g_assert_null(f->data);
    g_assert_false(f->base64);
    g_autoptr(QsSecret) q = qs_secret_parse("qom-type=secret,id=b,data=aGk=,format=base64", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(q->data, ==, "aGk=");
    g_assert_true(q->base64);
    g_autoptr(QsSecret) untyped = qs_secret_parse("id=u,data=x", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(untyped->id, ==, "u");

    static const struct {
        const char *spec;
        int code;
    } bad[] = {
        { "iothread,id=a", QS_ERROR_UNSUPPORTED },
        { "qom-type=iothread,id=a", QS_ERROR_UNSUPPORTED },
        { "secret,data=topsecret", QS_ERROR_INVALID },
        { "secret,id=a", QS_ERROR_INVALID },
        { "secret,id=a,file=/x,data=topsecret", QS_ERROR_INVALID },
        { "secret,id=a,data=topsecret,format=hex", QS_ERROR_INVALID },
        { "secret,id=a,data=topsecret,colour=red", QS_ERROR_INVALID },
        { "secret,,id=a,data=topsecret", QS_ERROR_UNSUPPORTED },
        { "secret,id=a,,data=topsecret,=topsecret", QS_ERROR_INVALID },
    };
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_assert_null(qs_secret_parse(bad[i].spec, &error));
        g_assert_error(error, QS_ERROR, bad[i].code);
        /* a secret never goes into a message */
        g_assert_null(strstr(error->message, "topsecret"));
        g_clear_error(&error);
    }
}

/* The value of id in an a{say}, as a string. */
static char *secret_of(GVariant *secrets, const char *id)
{
    g_autoptr(GVariant) v = g_variant_lookup_value(secrets, id, G_VARIANT_TYPE_BYTESTRING);
    if (v == NULL)
        return NULL;
    gsize len;
    const char *data = g_variant_get_fixed_array(v, &len, 1);
    return g_strndup(data, len);
}

static void test_secrets_variant(void)
{
    g_autofree char *dir = g_dir_make_tmp("vdisk-qs-XXXXXX", NULL);
    g_autofree char *file = g_build_filename(dir, "pw", NULL);
    g_autofree char *big = g_build_filename(dir, "big", NULL);
    g_assert_true(g_file_set_contents(file, "from-a-file", -1, NULL));
    g_autofree char *zeros = g_malloc0(QS_SECRET_FILE_MAX + 1);
    g_assert_true(g_file_set_contents(big, zeros, QS_SECRET_FILE_MAX + 1, NULL));
    g_autofree char *from_file = g_strdup_printf("secret,id=f,file=%s", file);
    g_autoptr(GPtrArray) specs = g_ptr_array_new();
    g_ptr_array_add(specs, from_file);
    g_ptr_array_add(specs, "secret,id=d,data=plain,,comma");
    g_ptr_array_add(specs, "qom-type=secret,id=b,data=YmFzZTY0IQ==,format=base64");
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) v = g_variant_ref_sink(qs_secrets_variant(specs, &error));
    g_assert_no_error(error);
    g_assert_true(g_variant_is_of_type(v, G_VARIANT_TYPE("a{say}")));
    g_autofree char *f = secret_of(v, "f");
    g_autofree char *d = secret_of(v, "d");
    g_autofree char *b = secret_of(v, "b");
    g_assert_cmpstr(f, ==, "from-a-file");
    g_assert_cmpstr(d, ==, "plain,comma");
    g_assert_cmpstr(b, ==, "base64!");

    g_autofree char *too_big = g_strdup_printf("secret,id=big,file=%s", big);
    static const struct {
        const char *spec;
        int code;
    } bad[] = {
        { "secret,data=x", QS_ERROR_INVALID },
        { "iothread,id=a,data=x", QS_ERROR_UNSUPPORTED },
        { "secret,id=nofile,file=/nonexistent/pw", QS_ERROR_NOT_FOUND },
        { "secret,id=endless,file=/dev/zero", QS_ERROR_INVALID }, /* read no further */
        { NULL, QS_ERROR_INVALID },                               /* too_big */
    };
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GPtrArray) one = g_ptr_array_new();
        g_ptr_array_add(one, from_file);
        g_ptr_array_add(one, (gpointer)(bad[i].spec != NULL ? bad[i].spec : too_big));
        g_assert_null(qs_secrets_variant(one, &error));
        g_assert_error(error, QS_ERROR, bad[i].code);
        if (bad[i].code == QS_ERROR_NOT_FOUND) /* the file named as it was given */
            g_assert_nonnull(strstr(error->message, "file=/nonexistent/pw"));
        g_clear_error(&error);
    }
    g_unlink(file);
    g_unlink(big);
    g_rmdir(dir);
}

static void test_image_opts(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(QsImageOpts) o = qs_image_opts_parse(
        "driver=qcow2,file.filename=/p/a,,b.qcow2,key-secret=k1,encrypt.key-secret=k2", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(o->filename, ==, "/p/a,b.qcow2");
    g_assert_cmpstr(o->driver, ==, "qcow2");
    g_assert_null(o->file_driver);
    g_assert_cmpstr(o->key_secret, ==, "k2");
    g_assert_cmpuint(o->options->len, ==, 4);
    g_autoptr(QsImageOpts) plain = qs_image_opts_parse("filename=/p/x,file.driver=file", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(plain->filename, ==, "/p/x");
    g_assert_null(plain->driver);
    g_assert_cmpstr(plain->file_driver, ==, "file");
    g_assert_null(qs_image_opts_parse("driver=raw", &error));
    g_assert_error(error, QS_ERROR, QS_ERROR_NO_FILE);
    g_clear_error(&error);
    g_assert_null(qs_image_opts_parse(",driver=raw,filename=/p/x", &error));
    g_assert_error(error, QS_ERROR, QS_ERROR_INVALID);
}

/* json: names flatten as qemu flattens them: objects to dotted keys, list
 * items numbered from 0, true/false to on/off, a comma doubled. */
static void test_json_names(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *text = qs_json_filename_options(
        "json:{'driver': 'blkdebug', 'inject-error': [{'event': 'none', 'once': true},"
        " {\"errno\": 28}], 'image': {'filename': 'a,b'}, 'list': []}",
        &error);
    g_assert_no_error(error);
    g_assert_cmpstr(text, ==,
                    "driver=blkdebug,inject-error.0.event=none,inject-error.0.once=on,"
                    "inject-error.1.errno=28,image.filename=a,,b");
    g_assert_null(qs_json_filename_options("json:{'a': [1, }", &error));
    g_assert_error(error, QS_ERROR, QS_ERROR_INVALID);
    g_clear_error(&error);
    g_assert_null(qs_json_filename_options("json:{'a': [1]} x", &error));
    g_assert_error(error, QS_ERROR, QS_ERROR_INVALID);
    g_clear_error(&error);
    /* nesting is bounded (a backing file name is read from the image) */
    g_autoptr(GString) deep = g_string_new("json:{'a': ");
    for (int i = 0; i < 100000; i++)
        g_string_append_c(deep, '[');
    g_assert_null(qs_json_filename_options(deep->str, &error));
    g_assert_error(error, QS_ERROR, QS_ERROR_INVALID);
    g_assert_nonnull(strstr(error->message, "nested too deep"));
}

/* libvdisk's options and sizes are qemu-syntax's, in VD_ERROR: vdisk and
 * vdiskctl (through libvdisk) read a command line as the shim does. */
static void test_libvdisk_reads_alike(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdOptions) opts = vd_options_new();
    g_assert_false(vd_options_parse(opts, ",cluster_size=4k", &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_autoptr(GPtrArray) list = qs_options_new();
    g_assert_false(qs_options_parse(",cluster_size=4k", list, NULL));

    const char *sizes[] = { "1.5G", "512b", "16E", "1.5", "3p", "-1" };
    for (gsize i = 0; i < G_N_ELEMENTS(sizes); i++) {
        guint64 a = 0, b = 0;
        gboolean qs = qs_parse_size(sizes[i], &a, NULL);
        gboolean vd = vd_parse_size(sizes[i], &b, &error);
        g_assert_cmpint(qs, ==, vd);
        g_assert_cmpuint(a, ==, b);
        if (!vd) {
            g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
            g_clear_error(&error);
        }
    }

    g_autoptr(VdSecrets) secrets = vd_secrets_new();
    g_assert_false(vd_secrets_add_object(secrets, "iothread,id=a", &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
    g_clear_error(&error);
    g_assert_false(vd_secrets_add_object(secrets, "secret,id=n,file=/nonexistent/pw", &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_FOUND);
    g_clear_error(&error);
    g_assert_true(vd_secrets_add_object(secrets, "secret,id=a,data=eA==,format=base64", &error));
    gsize len = 0;
    g_assert_cmpmem(vd_secrets_lookup(secrets, "a", &len), len, "x", 1);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qemu-syntax/options", test_options);
    g_test_add_func("/qemu-syntax/sizes", test_sizes);
    g_test_add_func("/qemu-syntax/secret-parse", test_secret_parse);
    g_test_add_func("/qemu-syntax/secrets-variant", test_secrets_variant);
    g_test_add_func("/qemu-syntax/image-opts", test_image_opts);
    g_test_add_func("/qemu-syntax/json-names", test_json_names);
    g_test_add_func("/qemu-syntax/libvdisk-reads-alike", test_libvdisk_reads_alike);
    return g_test_run();
}
