/* Unit tests of libvdiskd: no bus, no polkit. */
#include <string.h>

#include <fcntl.h>
#include <glib/gstdio.h>

#include "bouncer.h"
#include "daemon.h"
#include "manager.h"
#include "pool.h"
#include "volume.h"
#include "errors.h"
#include "locks.h"
#include "names.h"
#include "options.h"
#include "pools-config.h"
#include "vdisk-names.h"

static void test_bouncer_table(void)
{
    static const struct {
        const char *iface, *method, *action;
    } expect[] = {
        { VDISK_MANAGER_INTERFACE, "GetPools", "" },
        { VDISK_MANAGER_INTERFACE, "AddPool", VDISK_ACTION_MANAGE_POOLS },
        { VDISK_MANAGER_INTERFACE, "InspectFile", VDISK_ACTION_INSPECT },
        { VDISK_MANAGER_INTERFACE, "ConvertFile", VDISK_ACTION_INSPECT },
        { VDISK_POOL_INTERFACE, "CreateVolume", VDISK_ACTION_CREATE_VOLUME },
        { VDISK_POOL_INTERFACE, "ImportVolume", VDISK_ACTION_IMPORT_VOLUME },
        { VDISK_POOL_INTERFACE, "Refresh", VDISK_ACTION_MANAGE_POOLS },
        { VDISK_VOLUME_INTERFACE, "Clone", VDISK_ACTION_CREATE_VOLUME },
        { VDISK_VOLUME_INTERFACE, "CreateOverlay", VDISK_ACTION_CREATE_VOLUME },
        { VDISK_VOLUME_INTERFACE, "Resize", VDISK_ACTION_MODIFY_VOLUME },
        { VDISK_VOLUME_INTERFACE, "CreateSnapshot", VDISK_ACTION_MODIFY_VOLUME },
        { VDISK_VOLUME_INTERFACE, "RevertSnapshot", VDISK_ACTION_MODIFY_VOLUME },
        { VDISK_VOLUME_INTERFACE, "DeleteSnapshot", VDISK_ACTION_MODIFY_VOLUME },
        { VDISK_VOLUME_INTERFACE, "Export", VDISK_ACTION_READ_VOLUME },
        { VDISK_VOLUME_INTERFACE, "Delete", VDISK_ACTION_DELETE_VOLUME },
        { VDISK_JOB_INTERFACE, "Cancel", "" },
    };
    for (gsize i = 0; i < G_N_ELEMENTS(expect); i++)
        g_assert_cmpstr(vdd_bouncer_action_for(expect[i].iface, expect[i].method), ==,
                        expect[i].action);
    /* Deny by default. */
    g_assert_null(vdd_bouncer_action_for(VDISK_MANAGER_INTERFACE, "Shutdown"));
    g_assert_null(vdd_bouncer_action_for(VDISK_VOLUME_INTERFACE, "GetPools"));
    g_assert_null(vdd_bouncer_action_for("org.freedesktop.DBus.Properties", "Set"));
    g_assert_null(vdd_bouncer_action_for(NULL, "Delete"));
}

static void test_names(void)
{
    const char *good[] = { "a.qcow2", "disk 1.vdi", "ü.vmdk", "a..b", "x" };
    for (gsize i = 0; i < G_N_ELEMENTS(good); i++)
        g_assert_true(vdd_name_is_valid(good[i], "volume", NULL));
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    const char *bad[] = { "",        ".", "..",   "../escape.qcow2", "a/b.qcow2",
                          ".hidden", "/", "a\nb", "\xff\xfe",        longname };
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) error = NULL;
        g_assert_false(vdd_name_is_valid(bad[i], "volume", &error));
        g_assert_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT);
    }
    longname[255] = '\0';
    g_assert_true(vdd_name_is_valid(longname, "volume", NULL));
    g_autofree char *esc = vdd_name_escape("a b.qcow2");
    g_assert_true(g_variant_is_object_path(g_strconcat("/x/", esc, NULL)));
    g_assert_cmpstr(esc, ==, "a_20b_2eqcow2");
}

static void test_create_options(void)
{
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
    g_variant_builder_add(&b, "{sv}", "cluster-size", g_variant_new_uint32(65536));
    g_variant_builder_add(&b, "{sv}", "lazy-refcounts", g_variant_new_boolean(TRUE));
    g_variant_builder_add(&b, "{sv}", "compat", g_variant_new_string("1.1"));
    g_variant_builder_add(&b, "{sv}", "backing", g_variant_new_string("base.qcow2"));
    g_variant_builder_add(&b, "{sv}", "backing-format", g_variant_new_string("qcow2"));
    g_variant_builder_add(&b, "{sv}", "source-format", g_variant_new_string("vdi"));
    g_autoptr(GVariant) opts = g_variant_ref_sink(g_variant_builder_end(&b));
    const char *const daemon_keys[] = { "source-format", NULL };
    g_autoptr(GError) error = NULL;
    g_autoptr(VdOptions) o = vdd_options_to_create(opts, "qcow2", daemon_keys, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(vd_options_get(o, "cluster_size"), ==, "65536");
    g_assert_cmpstr(vd_options_get(o, "lazy_refcounts"), ==, "on");
    g_assert_cmpstr(vd_options_get(o, "compat"), ==, "1.1");
    g_assert_cmpstr(vd_options_get(o, "backing_file"), ==, "base.qcow2");
    g_assert_cmpstr(vd_options_get(o, "backing_fmt"), ==, "qcow2");
    g_assert_null(vd_options_get(o, "source_format"));

    /* Unknown for the format, and a wrong type. */
    g_autoptr(GVariant) bad = g_variant_ref_sink(g_variant_new_parsed("{'subformat': <'x'>}"));
    g_assert_null(vdd_options_to_create(bad, "qcow2", NULL, &error));
    g_assert_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_autoptr(GVariant) typ = g_variant_ref_sink(g_variant_new_parsed("{'compat': <[1, 2]>}"));
    g_assert_null(vdd_options_to_create(typ, "qcow2", NULL, &error));
    g_assert_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);

    gboolean v;
    g_autoptr(GVariant) s = g_variant_ref_sink(g_variant_new_parsed("{'shrink': <'true'>}"));
    g_assert_true(vdd_options_lookup_bool(s, "shrink", FALSE, &v, &error));
    g_assert_true(v);
}

static void test_daemon_options(void)
{
    {
        g_auto(VddDaemonOptions) o = { 0 };
        char *args[] = { "vdiskd", NULL };
        char **argv = args;
        int argc = 1;
        g_assert_true(vdd_daemon_parse_options(&o, &argc, &argv, NULL));
        g_assert_cmpuint(o.idle_timeout, ==, 300);
        g_assert_cmpstr(o.config_dir, ==, VDD_DEFAULT_CONFIG_DIR);
    }
    {
        g_auto(VddDaemonOptions) o = { 0 };
        char *args[] = { "vdiskd", "--idle-timeout=0", "--config-dir", "/tmp/x", NULL };
        char **argv = args;
        int argc = 4;
        g_assert_true(vdd_daemon_parse_options(&o, &argc, &argv, NULL));
        g_assert_cmpuint(o.idle_timeout, ==, 0);
        g_assert_cmpstr(o.config_dir, ==, "/tmp/x");
    }
    {
        g_auto(VddDaemonOptions) o = { 0 };
        char *args[] = { "vdiskd", "--idle-timeout=-5", NULL };
        char **argv = args;
        int argc = 2;
        g_autoptr(GError) error = NULL;
        g_assert_false(vdd_daemon_parse_options(&o, &argc, &argv, &error));
        g_assert_nonnull(error);
    }
}

static void test_config(void)
{
    const char *text = "[Pool images]\nDirectory=/var/lib/libvirt/images\n"
                       "[Pool]\nName=other\nDirectory=/srv/x\n[Unrelated]\nA=b\n";
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) pools = vdd_config_parse("t.conf", text, strlen(text), &error);
    g_assert_no_error(error);
    g_assert_cmpuint(pools->len, ==, 2);
    VddPoolConfig *a = pools->pdata[0], *b = pools->pdata[1];
    g_assert_cmpstr(a->name, ==, "images");
    g_assert_cmpstr(a->directory, ==, "/var/lib/libvirt/images");
    g_assert_cmpstr(b->name, ==, "other");
    const char *bad = "[Pool x]\nDirectory=relative\n";
    g_assert_null(vdd_config_parse("b.conf", bad, strlen(bad), &error));
    g_assert_nonnull(error);
    g_autoptr(GPtrArray) none = vdd_config_load_pools("/nonexistent/vdisk", NULL);
    g_assert_cmpuint(none->len, ==, 0);
}

/* Type=logical takes the volume group in Source=, Type=rbd the Ceph pool
 * and its cluster's Conf=, User= and Keyring=; unknown types, a logical
 * or rbd pool without its Source= and a relative Conf= are refused
 * naming the file. */
static void test_config_types(void)
{
    const char *text = "[Pool lvm]\nType=logical\nSource=vg0\n"
                       "[Pool d]\nType=dir\nDirectory=/srv/d\n";
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) pools = vdd_config_parse("t.conf", text, strlen(text), &error);
    g_assert_no_error(error);
    g_assert_cmpuint(pools->len, ==, 2);
    VddPoolConfig *a = pools->pdata[0], *b = pools->pdata[1];
    g_assert_cmpstr(a->type, ==, "logical");
    g_assert_cmpstr(a->pool_source, ==, "vg0");
    g_assert_null(a->directory);
    g_assert_cmpstr(b->type, ==, "dir");
    g_assert_cmpstr(b->directory, ==, "/srv/d");
    const char *rbd_text = "[Pool ceph]\nType=rbd\nSource=rbdpool\nConf=/etc/ceph/c.conf\n"
                           "User=libvirt\nKeyring=/etc/ceph/k\n[Pool c2]\nType=rbd\nSource=p2\n";
    g_autoptr(GPtrArray) rbd = vdd_config_parse("r.conf", rbd_text, strlen(rbd_text), &error);
    g_assert_no_error(error);
    g_assert_cmpuint(rbd->len, ==, 2);
    VddPoolConfig *r = rbd->pdata[0], *r2 = rbd->pdata[1];
    g_assert_cmpstr(r->type, ==, "rbd");
    g_assert_cmpstr(r->pool_source, ==, "rbdpool");
    g_assert_cmpstr(r->conf, ==, "/etc/ceph/c.conf");
    g_assert_cmpstr(r->user, ==, "libvirt");
    g_assert_cmpstr(r->keyring, ==, "/etc/ceph/k");
    g_assert_null(r->directory);
    /* The defaults (/etc/ceph/ceph.conf, admin, the conf's keyring) are
     * the backend's. */
    g_assert_null(r2->conf);
    g_assert_null(r2->user);
    g_assert_null(r2->keyring);
    const char *bad[] = { "[Pool r]\nType=rbd\n", "[Pool x]\nType=zfs\n",
                          "[Pool l]\nType=logical\n",
                          "[Pool r]\nType=rbd\nSource=p\nConf=ceph.conf\n" };
    const char *says[] = { "needs Source=, the Ceph pool's name", "is not a pool type",
                           "needs Source=", "must be absolute" };
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_clear_error(&error);
        g_assert_null(vdd_config_parse("b.conf", bad[i], strlen(bad[i]), &error));
        g_assert_nonnull(error);
        g_assert_nonnull(strstr(error->message, "b.conf"));
        g_assert_nonnull(strstr(error->message, says[i]));
    }
}

static void test_error_names(void)
{
    g_autoptr(GError) e = g_error_new_literal(VDD_ERROR, VDD_ERROR_BUSY, "x");
    g_autofree char *name = g_dbus_error_encode_gerror(e);
    g_assert_cmpstr(name, ==, VDISK_ERROR_BUSY);
    g_autoptr(GError) io = g_error_new_literal(G_IO_ERROR, G_IO_ERROR_CANCELLED, "c");
    g_autoptr(GError) c = vdd_error_convert(io);
    g_assert_error(c, VDD_ERROR, VDD_ERROR_CANCELLED);
    g_autoptr(GError) vd = g_error_new_literal(VD_ERROR, VD_ERROR_CORRUPT, "bad");
    g_autoptr(GError) c2 = vdd_error_convert(vd);
    g_assert_error(c2, VDD_ERROR, VDD_ERROR_CORRUPT);
}

/* A job holds its volume; the volume holds its pool and so the pool's
 * folder descriptor, after libvirt stopped the pool (a job once read the
 * freed pool as it finished, and could unlink through a reused
 * descriptor). */
static void test_volume_keeps_pool(void)
{
    g_autofree char *dir = g_dir_make_tmp("vdiskd-pool-XXXXXX", NULL);
    g_autofree char *file = g_build_filename(dir, "v.raw", NULL);
    g_assert_true(g_file_set_contents(file, "data", 4, NULL));
    g_setenv("STATE_DIRECTORY", dir, TRUE);
    g_autoptr(VddManager) manager = vdd_manager_new();
    VddPool *pool = vdd_manager_add_pool(manager, "t", dir, NULL);
    g_assert_nonnull(pool);
    VddVolume *vol = g_object_ref(vdd_pool_lookup_volume(pool, "v.raw"));
    g_object_add_weak_pointer(G_OBJECT(pool), (gpointer *)&pool);
    g_assert_true(vdd_manager_remove_pool(manager, "t"));
    g_assert_nonnull(pool); /* the volume's job still runs */
    g_assert_true(vdd_volume_get_pool(vol) == pool);
    g_assert_cmpint(fcntl(vdd_pool_get_dirfd(pool), F_GETFD), >=, 0);
    g_object_unref(vol); /* the job is done */
    g_assert_null(pool);
    g_autofree char *records = g_build_filename(dir, "formats", NULL);
    g_autoptr(GDir) d = g_dir_open(records, 0, NULL);
    const char *name;
    while (d != NULL && (name = g_dir_read_name(d)) != NULL) {
        g_autofree char *path = g_build_filename(records, name, NULL);
        g_unlink(path);
    }
    g_rmdir(records);
    g_unlink(file);
    g_rmdir(dir);
}

/* A pool in a new folder with volumes named but no files (so no worker
 * describes them): enough for the locks. */
static VddPool *empty_pool(VddManager *manager, char **dir)
{
    *dir = g_dir_make_tmp("vdiskd-locks-XXXXXX", NULL);
    g_setenv("STATE_DIRECTORY", *dir, TRUE);
    VddPool *pool = vdd_manager_add_pool(manager, "l", *dir, NULL);
    g_assert_nonnull(pool);
    return pool;
}

/* A job's locks are taken through its set and released once, all of
 * them; a Busy volume leaves the set as it was. */
static void test_lock_set(void)
{
    g_autoptr(VddManager) manager = vdd_manager_new();
    g_autofree char *dir = NULL;
    VddPool *pool = empty_pool(manager, &dir);
    VddVolume *a = vdd_pool_add_volume(pool, "a.raw");
    VddVolume *b = vdd_pool_add_volume(pool, "b.raw");
    g_autoptr(GError) error = NULL;

    VddLockSet *job = vdd_lock_set_new();
    g_assert_true(vdd_lock_set_write(job, a, NULL));
    g_assert_true(vdd_lock_set_read(job, b, NULL));
    g_autoptr(VddLockSet) other = vdd_lock_set_new();
    g_assert_false(vdd_lock_set_read(other, a, &error));
    g_assert_error(error, VDD_ERROR, VDD_ERROR_BUSY);
    g_clear_error(&error);
    g_assert_false(vdd_lock_set_write(other, b, &error));
    g_assert_error(error, VDD_ERROR, VDD_ERROR_BUSY);
    g_clear_error(&error);
    g_assert_true(vdd_lock_set_read(other, b, NULL)); /* readers share */
    vdd_lock_set_release(job);
    g_assert_false(vdd_volume_is_locked(a));
    g_assert_true(vdd_volume_is_locked(b));
    vdd_lock_set_free(job); /* released already: nothing more */
    g_assert_true(vdd_volume_is_locked(b));

    /* A set freed before its work ended (a failed request) releases. */
    g_assert_true(vdd_lock_set_write(other, a, NULL));
    g_clear_pointer(&other, vdd_lock_set_free);
    g_assert_false(vdd_volume_is_locked(a));
    g_assert_false(vdd_volume_is_locked(b));
    vdd_manager_remove_pool(manager, "l");
    g_rmdir(dir);
}

/* Releasing twice, or unlocking what was never locked, is a bug in a
 * job's bookkeeping: a critical, fatal under G_DEBUG=fatal-criticals as
 * the daemon tests run. */
static void test_unbalanced_release(void)
{
    g_autoptr(VddManager) manager = vdd_manager_new();
    g_autofree char *dir = NULL;
    VddPool *pool = empty_pool(manager, &dir);
    VddVolume *a = vdd_pool_add_volume(pool, "a.raw");
    g_autoptr(VddLockSet) set = vdd_lock_set_new();
    g_assert_true(vdd_lock_set_read(set, a, NULL));
    vdd_lock_set_release(set);
    g_test_expect_message("vdiskd", G_LOG_LEVEL_CRITICAL, "a lock set was released twice");
    vdd_lock_set_release(set);
    g_test_assert_expected_messages();
    g_test_expect_message("vdiskd", G_LOG_LEVEL_CRITICAL, "*a.raw: read unlock without a lock");
    vdd_volume_unlock_read(a);
    g_test_assert_expected_messages();
    g_test_expect_message("vdiskd", G_LOG_LEVEL_CRITICAL, "*a.raw: write unlock without a lock");
    vdd_volume_unlock_write(a);
    g_test_assert_expected_messages();
    g_assert_false(vdd_volume_is_locked(a));
    vdd_manager_remove_pool(manager, "l");
    g_rmdir(dir);
}

/* The daemon tests make criticals fatal (tests/meson.build), so that an
 * unbalanced unlock fails the test that caused it. */
static void test_criticals_are_fatal(void)
{
    g_assert_nonnull(strstr(g_getenv("G_DEBUG") ? g_getenv("G_DEBUG") : "", "fatal-criticals"));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/daemon/bouncer-table", test_bouncer_table);
    g_test_add_func("/daemon/names", test_names);
    g_test_add_func("/daemon/create-options", test_create_options);
    g_test_add_func("/daemon/daemon-options", test_daemon_options);
    g_test_add_func("/daemon/config", test_config);
    g_test_add_func("/daemon/config-types", test_config_types);
    g_test_add_func("/daemon/error-names", test_error_names);
    g_test_add_func("/daemon/volume-keeps-pool", test_volume_keeps_pool);
    g_test_add_func("/daemon/lock-set", test_lock_set);
    g_test_add_func("/daemon/unbalanced-release", test_unbalanced_release);
    g_test_add_func("/daemon/criticals-are-fatal", test_criticals_are_fatal);
    return g_test_run();
}
