#include "pool-backend-rbd.h"

#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "errors.h"
#include "names.h"

#define DEFAULT_CONF "/etc/ceph/ceph.conf"
#define DEFAULT_USER "admin"
/* Where the administrator finds the drop-in that gives vdiskd a network
 * (data/vdiskd-ceph.conf, installed with the documentation). */
#define NETWORK_DROP_IN VDISK_DOCDIR "/vdiskd-ceph.conf"
/* vdiskd never waits librados's five minutes for a cluster that does not
 * answer: connecting and each request give up after this long. */
#define RBD_TIMEOUT "10"

struct VddRbdPool {
    char *pool; /* vdiskd's name, for messages */
    char *ceph_pool;
    char *conf;
    char *user;
    char *keyring;  /* Keyring=, or NULL */
    char *mon_host; /* instead of a configuration file, or NULL */
    gboolean from_libvirt;
    char *location;
    char *key; /* the client's key, read from the keyring */
    GMutex lock;
    rados_t cluster; /* set once connected, then never changed */
    rados_ioctx_t io;
};

/* Ceph's pool names and client ids here: nothing that could end an
 * option of an rbd: name or start one. */
static gboolean plain_name(const char *s)
{
    if (s == NULL || *s == '\0' || *s == '-' || strlen(s) > 255)
        return FALSE;
    for (const char *c = s; *c; c++)
        if (!g_ascii_isalnum(*c) && strchr("+_.-", *c) == NULL)
            return FALSE;
    return TRUE;
}

VddRbdPool *vdd_rbd_pool_new(const char *pool, const VddRbdPoolConfig *config, GError **error)
{
    const char *conf = config->conf != NULL       ? config->conf
                       : config->mon_host != NULL ? ""
                                                  : DEFAULT_CONF;
    const char *user = config->user != NULL ? config->user : DEFAULT_USER;
    if (!plain_name(config->ceph_pool)) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "'%s' is not the name of a Ceph pool vdiskd takes (letters, digits, + _ . -)",
                    config->ceph_pool != NULL ? config->ceph_pool : "");
        return NULL;
    }
    if (!plain_name(user)) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "User=%s is not a Ceph client id vdiskd takes (letters, digits, + _ . -; "
                    "without 'client.')",
                    user);
        return NULL;
    }
    if ((*conf != '\0' && !g_path_is_absolute(conf)) ||
        (config->keyring && !g_path_is_absolute(config->keyring))) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "Conf= and Keyring= must be absolute paths");
        return NULL;
    }
    VddRbdPool *p = g_new0(VddRbdPool, 1);
    g_mutex_init(&p->lock);
    p->pool = g_strdup(pool);
    p->ceph_pool = g_strdup(config->ceph_pool);
    p->conf = g_strdup(conf);
    p->user = g_strdup(user);
    p->keyring = g_strdup(config->keyring);
    p->mon_host = g_strdup(config->mon_host);
    p->from_libvirt = config->from_libvirt;
    p->location = g_strdup_printf("rbd:%s", config->ceph_pool);
    return p;
}

void vdd_rbd_pool_free(VddRbdPool *p)
{
    if (p == NULL)
        return;
    if (p->io != NULL)
        rados_ioctx_destroy(p->io);
    if (p->cluster != NULL)
        rados_shutdown(p->cluster);
    g_mutex_clear(&p->lock);
    g_free(p->pool);
    g_free(p->ceph_pool);
    g_free(p->conf);
    g_free(p->user);
    g_free(p->keyring);
    g_free(p->mon_host);
    g_free(p->location);
    if (p->key != NULL)
        memset(p->key, 0, strlen(p->key));
    g_free(p->key);
    g_free(p);
}

const char *vdd_rbd_pool_location(VddRbdPool *p) { return p->location; }
const char *vdd_rbd_pool_conf(VddRbdPool *p) { return p->conf; }

/* The cluster in messages: its configuration file, or its monitors. */
static const char *cluster_of(VddRbdPool *p) { return *p->conf != '\0' ? p->conf : p->mon_host; }
const char *vdd_rbd_pool_key(VddRbdPool *p) { return p->key; }

gboolean vdd_rbd_pool_is_connected(VddRbdPool *p)
{
    g_mutex_lock(&p->lock);
    gboolean connected = p->io != NULL;
    g_mutex_unlock(&p->lock);
    return connected;
}

static void append_escaped(GString *out, const char *s)
{
    for (; *s; s++) {
        if (strchr(":\\@/", *s) != NULL)
            g_string_append_c(out, '\\');
        g_string_append_c(out, *s);
    }
}

char *vdd_rbd_pool_image_name(VddRbdPool *p, const char *name)
{
    GString *out = g_string_new("rbd:");
    g_string_append_printf(out, "%s/%s", p->ceph_pool, name);
    g_string_append(out, *p->conf != '\0' ? ":conf=" : ":mon_host=");
    append_escaped(out, *p->conf != '\0' ? p->conf : p->mon_host);
    g_string_append_printf(out, ":id=%s", p->user);
    return g_string_free(out, FALSE);
}

gboolean vdd_rbd_pool_check_name(VddRbdPool *p, const char *name, GError **error)
{
    if (!vdd_name_is_valid(name, "volume", error))
        return FALSE;
    if (!plain_name(name)) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "%s/%s: an RBD image's name in vdiskd takes only letters, digits and + _ . -",
                    p->pool, name);
        return FALSE;
    }
    return TRUE;
}

static void set_rc_error(GError **error, int rc, const char *format, ...) G_GNUC_PRINTF(3, 4);
static void set_rc_error(GError **error, int rc, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    g_autofree char *what = g_strdup_vprintf(format, ap);
    va_end(ap);
    int code = rc == -ENOENT   ? VDD_ERROR_NOT_FOUND
               : rc == -EEXIST ? VDD_ERROR_EXISTS
               : rc == -EBUSY  ? VDD_ERROR_BUSY
                               : VDD_ERROR_FAILED;
    g_set_error(error, VDD_ERROR, code, "%s: %s", what, g_strerror(-rc));
}

/* ----- connecting ----- */

/* Every address of mon_host (v1:/v2: prefixes, brackets and ports aside)
 * on the loopback? Then a vdiskd without a network can still reach it. */
static gboolean monitors_on_loopback(const char *mon_host)
{
    g_auto(GStrv) parts = g_strsplit_set(mon_host, ",; []", -1);
    gboolean any = FALSE;
    for (guint i = 0; parts[i] != NULL; i++) {
        const char *a = parts[i];
        if (*a == '\0')
            continue;
        if (g_str_has_prefix(a, "v1:") || g_str_has_prefix(a, "v2:"))
            a += 3;
        any = TRUE;
        if (!g_str_has_prefix(a, "127.") && !g_str_has_prefix(a, "::1") &&
            !g_str_has_prefix(a, "localhost"))
            return FALSE;
    }
    return any;
}

/* Has this process an interface up of the kind (the loopback, or any
 * other)? Under PrivateNetwork=yes it has only lo; in a network namespace
 * of its own, not even lo is up. */
static gboolean interface_up(gboolean loopback)
{
    struct ifaddrs *list = NULL;
    if (getifaddrs(&list) < 0)
        return TRUE; /* cannot tell: let the connection say */
    gboolean found = FALSE;
    for (struct ifaddrs *i = list; i != NULL && !found; i = i->ifa_next)
        found = (i->ifa_flags & IFF_UP) && !(i->ifa_flags & IFF_LOOPBACK) == !loopback;
    freeifaddrs(list);
    return found;
}

/* Why vdiskd cannot reach the cluster's monitors, said before librados
 * retries for its whole timeout: the service's sandbox (the unit's
 * RestrictAddressFamilies=AF_UNIX and PrivateNetwork=yes) leaves it no
 * network, and only the administrator may give it one. NULL when it has
 * one. */
static char *network_missing(VddRbdPool *p, const char *mon_host)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s >= 0)
        close(s);
    gboolean no_ip = s < 0 && (errno == EAFNOSUPPORT || errno == EPERM || errno == EACCES);
    if (!no_ip && interface_up(monitors_on_loopback(mon_host)))
        return NULL;
    return g_strdup_printf("vdiskd has no network to reach the Ceph cluster of %s (monitors %s): "
                           "its service allows none by default; an administrator allows the "
                           "cluster's network with the drop-in %s (copied to "
                           "/etc/systemd/system/vdiskd.service.d/ with the cluster's addresses "
                           "in IPAddressAllow=)",
                           cluster_of(p), *mon_host != '\0' ? mon_host : "unknown",
                           NETWORK_DROP_IN);
}

/* The key of client.USER in a keyring file (Ceph's INI-like format:
 * "[client.USER]" then "key = BASE64"); NULL when it has none. */
static char *key_in_keyring(const char *path, const char *user)
{
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL))
        return NULL;
    g_autofree char *section = g_strdup_printf("[client.%s]", user);
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    gboolean in = FALSE;
    char *key = NULL;
    for (guint i = 0; lines[i] != NULL && key == NULL; i++) {
        char *l = g_strstrip(lines[i]);
        if (*l == '[') {
            in = g_str_equal(l, section);
            continue;
        }
        if (!in || !g_str_has_prefix(l, "key"))
            continue;
        char *v = g_strstrip(l + 3);
        if (*v == '=')
            key = g_strdup(g_strstrip(v + 1));
    }
    memset(text, 0, strlen(text));
    if (key != NULL && *key == '\0')
        g_clear_pointer(&key, g_free);
    return key;
}

/* The first keyring of the configuration's list ("a,b,c", with $cluster
 * and $name expanded by librados) that holds the client's key. */
static char *find_key(VddRbdPool *p, rados_t cluster, char **looked, GError **error)
{
    char keyring[4096] = "";
    if (p->keyring != NULL)
        g_strlcpy(keyring, p->keyring, sizeof keyring);
    else
        (void)rados_conf_get(cluster, "keyring", keyring, sizeof keyring);
    *looked = g_strdup(keyring);
    g_auto(GStrv) paths = g_strsplit_set(keyring, ",; ", -1);
    for (guint i = 0; paths[i] != NULL; i++) {
        if (*paths[i] == '\0')
            continue;
        char *key = key_in_keyring(paths[i], p->user);
        if (key != NULL)
            return key;
    }
    return NULL;
}

static gboolean connect_locked(VddRbdPool *p, GError **error)
{
    rados_t cluster = NULL;
    /* The cluster's name ("ceph") and the client's expand $cluster and
     * $name in the default keyring paths, also without a configuration
     * file. */
    g_autofree char *client = g_strdup_printf("client.%s", p->user);
    int rc = rados_create2(&cluster, "ceph", client, 0);
    if (rc < 0) {
        set_rc_error(error, rc, "pool %s: cannot make a Ceph cluster handle", p->pool);
        return FALSE;
    }
    (void)rados_conf_set(cluster, "log_to_stderr", "false");
    (void)rados_conf_set(cluster, "err_to_stderr", "false");
    rc = *p->conf != '\0' ? rados_conf_read_file(cluster, p->conf)
                          : rados_conf_set(cluster, "mon_host", p->mon_host);
    if (rc < 0 && *p->conf == '\0') {
        set_rc_error(error, rc, "pool %s: monitors '%s'", p->pool, p->mon_host);
        rados_shutdown(cluster);
        return FALSE;
    }
    if (rc < 0) {
        set_rc_error(error, rc, "pool %s: cannot read the Ceph configuration %s", p->pool, p->conf);
        rados_shutdown(cluster);
        return FALSE;
    }
    (void)rados_conf_set(cluster, "client_mount_timeout", RBD_TIMEOUT);
    (void)rados_conf_set(cluster, "rados_mon_op_timeout", RBD_TIMEOUT);
    (void)rados_conf_set(cluster, "rados_osd_op_timeout", RBD_TIMEOUT);
    /* vdiskd keeps no admin socket and writes no log of librados. */
    (void)rados_conf_set(cluster, "admin_socket", "");
    (void)rados_conf_set(cluster, "log_file", "");
    if (p->keyring != NULL)
        (void)rados_conf_set(cluster, "keyring", p->keyring);
    char mon_host[1024] = "", auth[256] = "";
    (void)rados_conf_get(cluster, "mon_host", mon_host, sizeof mon_host);
    (void)rados_conf_get(cluster, "auth_client_required", auth, sizeof auth);
    g_autofree char *no_network = network_missing(p, mon_host);
    if (no_network != NULL) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_FAILED, "pool %s: %s", p->pool, no_network);
        rados_shutdown(cluster);
        return FALSE;
    }
    /* The worker gets the key itself: it can read no keyring. */
    g_autofree char *looked = NULL;
    char *key = find_key(p, cluster, &looked, error);
    if (key == NULL && strstr(auth, "cephx") != NULL) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_FAILED,
                    "pool %s: no key for client.%s in the keyring (looked in %s); %s", p->pool,
                    p->user, *looked != '\0' ? looked : "no keyring named",
                    p->from_libvirt ? "libvirt keeps the key in a secret vdiskd cannot read: "
                                      "give vdiskd a keyring there, or configure the pool in "
                                      "/etc/vdisk/pools.d with Keyring="
                                    : "name the keyring with Keyring= in the pool's "
                                      "configuration");
        rados_shutdown(cluster);
        return FALSE;
    }
    /* librados is given the key vdiskd found, rather than left to look
     * for keyrings itself: without a configuration file it expands the
     * default keyring paths without the cluster's name. */
    if (key != NULL)
        (void)rados_conf_set(cluster, "key", key);
    rc = rados_connect(cluster);
    if (rc < 0) {
        if (rc == -ETIMEDOUT)
            g_set_error(error, VDD_ERROR, VDD_ERROR_FAILED,
                        "pool %s: no monitor of the Ceph cluster of %s (%s) answered within %s s",
                        p->pool, cluster_of(p), mon_host, RBD_TIMEOUT);
        else
            set_rc_error(error, rc,
                         "pool %s: cannot connect to the Ceph cluster of %s as client.%s", p->pool,
                         cluster_of(p), p->user);
        g_free(key);
        rados_shutdown(cluster);
        return FALSE;
    }
    rados_ioctx_t io = NULL;
    rc = rados_ioctx_create(cluster, p->ceph_pool, &io);
    if (rc < 0) {
        if (rc == -ENOENT)
            g_set_error(error, VDD_ERROR, VDD_ERROR_NOT_FOUND,
                        "pool %s: the Ceph cluster of %s has no pool '%s'", p->pool, cluster_of(p),
                        p->ceph_pool);
        else
            set_rc_error(error, rc, "pool %s: cannot open Ceph pool '%s'", p->pool, p->ceph_pool);
        g_free(key);
        rados_shutdown(cluster);
        return FALSE;
    }
    p->cluster = cluster;
    p->io = io;
    p->key = key;
    return TRUE;
}

gboolean vdd_rbd_pool_connect(VddRbdPool *p, GError **error)
{
    g_mutex_lock(&p->lock);
    gboolean ok = p->io != NULL || connect_locked(p, error);
    g_mutex_unlock(&p->lock);
    return ok;
}

static gboolean check_connected(VddRbdPool *p, GError **error)
{
    if (vdd_rbd_pool_is_connected(p))
        return TRUE;
    g_set_error(error, VDD_ERROR, VDD_ERROR_FAILED,
                "pool %s: not connected to its Ceph cluster (refresh the pool)", p->pool);
    return FALSE;
}

/* ----- volumes ----- */

GHashTable *vdd_rbd_pool_list(VddRbdPool *p, GError **error)
{
    if (!check_connected(p, error))
        return NULL;
    size_t max = 64;
    g_autofree rbd_image_spec_t *images = NULL;
    int rc;
    for (;;) {
        images = g_renew(rbd_image_spec_t, images, max);
        rc = rbd_list2(p->io, images, &max);
        if (rc != -ERANGE)
            break;
    }
    if (rc < 0) {
        set_rc_error(error, rc, "pool %s: cannot list the RBD images of '%s'", p->pool,
                     p->ceph_pool);
        return NULL;
    }
    GHashTable *names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    for (size_t i = 0; i < max; i++)
        if (plain_name(images[i].name) && vdd_name_is_valid(images[i].name, "volume", NULL))
            g_hash_table_add(names, g_strdup(images[i].name));
    rbd_image_spec_list_cleanup(images, max);
    return names;
}

/* The OSDs' devices added up, as the monitor knows them ("osd metadata":
 * bluestore_bdev_size of each), or 0. */
static guint64 osd_devices_size(VddRbdPool *p)
{
    const char *cmd[] = { "{\"prefix\": \"osd metadata\", \"format\": \"json\"}", NULL };
    char *out = NULL, *status = NULL;
    size_t out_len = 0, status_len = 0;
    int rc = rados_mon_command(p->cluster, cmd, 1, "", 0, &out, &out_len, &status, &status_len);
    guint64 total = 0;
    if (rc == 0 && out != NULL) {
        /* A key of each OSD's object: no JSON parser is needed for it. */
        g_autofree char *text = g_strndup(out, out_len);
        const char *key = "\"bluestore_bdev_size\":";
        for (const char *at = strstr(text, key); at != NULL; at = strstr(at + 1, key)) {
            const char *v = at + strlen(key);
            while (*v == ' ' || *v == '"')
                v++;
            total += g_ascii_strtoull(v, NULL, 10);
        }
    }
    rados_buffer_free(out);
    rados_buffer_free(status);
    return total;
}

gboolean vdd_rbd_pool_space(VddRbdPool *p, guint64 *capacity, guint64 *available, GError **error)
{
    if (!check_connected(p, error))
        return FALSE;
    /* A pool's own quota and free space come from the manager (ceph-mgr),
     * and so do the cluster's totals: the cluster's raw space stands for
     * the pool's (what a new image may take at most). */
    struct rados_cluster_stat_t st;
    int rc = rados_cluster_stat(p->cluster, &st);
    if (rc < 0) {
        set_rc_error(error, rc, "pool %s: cannot read the Ceph cluster's space", p->pool);
        return FALSE;
    }
    *capacity = (guint64)st.kb * 1024;
    *available = (guint64)st.kb_avail * 1024;
    /* Without a manager every figure reads 0: the size of the OSDs'
     * devices, which the monitor keeps, is the capacity then, and as what
     * is used is unknown, all of it is shown available. */
    if (*capacity == 0)
        *capacity = *available = osd_devices_size(p);
    return TRUE;
}

static gboolean open_image(VddRbdPool *p, const char *name, gboolean read_only, rbd_image_t *image,
                           GError **error)
{
    if (!check_connected(p, error) || !vdd_rbd_pool_check_name(p, name, error))
        return FALSE;
    int rc = read_only ? rbd_open_read_only(p->io, name, image, NULL)
                       : rbd_open(p->io, name, image, NULL);
    if (rc < 0) {
        *image = NULL;
        set_rc_error(error, rc, "%s/%s", p->pool, name);
        return FALSE;
    }
    return TRUE;
}

static int count_extent(uint64_t offset, size_t len, int exists, void *arg)
{
    if (exists)
        *(guint64 *)arg += len;
    return 0;
}

gboolean vdd_rbd_pool_stat(VddRbdPool *p, const char *name, guint64 *size, guint64 *allocated,
                           char ***snapshots, GError **error)
{
    rbd_image_t image;
    if (!open_image(p, name, TRUE, &image, error))
        return FALSE;
    rbd_image_info_t info;
    int rc = rbd_stat(image, &info, sizeof info);
    if (rc < 0) {
        rbd_close(image);
        set_rc_error(error, rc, "%s/%s", p->pool, name);
        return FALSE;
    }
    *size = info.size;
    *allocated = 0;
    uint64_t features = 0;
    if (rbd_get_features(image, &features) == 0 && (features & RBD_FEATURE_FAST_DIFF) &&
        rbd_diff_iterate2(image, NULL, 0, info.size, 0, 1, count_extent, allocated) < 0)
        *allocated = 0;
    int max = 16;
    g_autofree rbd_snap_info_t *snaps = NULL;
    for (;;) {
        snaps = g_renew(rbd_snap_info_t, snaps, max);
        rc = rbd_snap_list(image, snaps, &max);
        if (rc != -ERANGE)
            break;
    }
    g_autoptr(GStrvBuilder) names = g_strv_builder_new();
    for (int i = 0; i < rc; i++)
        g_strv_builder_add(names, snaps[i].name);
    if (rc >= 0)
        rbd_snap_list_end(snaps);
    rbd_close(image);
    *snapshots = g_strv_builder_end(names);
    return TRUE;
}

/* The options of a new image: layering (clones of a snapshot), with the
 * lock and maps that make block status cheap; Ceph's defaults, named so
 * that a cluster with other defaults still clones. */
static rbd_image_options_t new_image_options(void)
{
    rbd_image_options_t opts;
    rbd_image_options_create(&opts);
    rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_FEATURES,
                                 RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK |
                                     RBD_FEATURE_OBJECT_MAP | RBD_FEATURE_FAST_DIFF |
                                     RBD_FEATURE_DEEP_FLATTEN);
    return opts;
}

gboolean vdd_rbd_pool_create(VddRbdPool *p, const char *name, guint64 size, GError **error)
{
    if (!check_connected(p, error) || !vdd_rbd_pool_check_name(p, name, error))
        return FALSE;
    rbd_image_options_t opts = new_image_options();
    int rc = rbd_create4(p->io, name, size, opts);
    rbd_image_options_destroy(opts);
    if (rc == -EEXIST) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_EXISTS, "%s/%s exists already", p->pool, name);
        return FALSE;
    }
    if (rc < 0) {
        set_rc_error(error, rc, "%s/%s: cannot create the RBD image", p->pool, name);
        return FALSE;
    }
    return TRUE;
}

gboolean vdd_rbd_pool_resize(VddRbdPool *p, const char *name, guint64 size, gboolean shrink,
                             GError **error)
{
    rbd_image_t image;
    if (!open_image(p, name, FALSE, &image, error))
        return FALSE;
    rbd_image_info_t info;
    int rc = rbd_stat(image, &info, sizeof info);
    if (rc == 0 && size < info.size && !shrink) {
        rbd_close(image);
        g_set_error(error, VDD_ERROR, VDD_ERROR_INVALID_ARGUMENT,
                    "%s/%s: %" G_GUINT64_FORMAT " bytes is smaller than its %" G_GUINT64_FORMAT
                    "; shrinking loses the data past the new end and needs the shrink option",
                    p->pool, name, size, (guint64)info.size);
        return FALSE;
    }
    if (rc == 0)
        rc = rbd_resize2(image, size, shrink, NULL, NULL);
    rbd_close(image);
    if (rc < 0) {
        set_rc_error(error, rc, "%s/%s: cannot resize the RBD image", p->pool, name);
        return FALSE;
    }
    return TRUE;
}

gboolean vdd_rbd_pool_remove(VddRbdPool *p, const char *name, GError **error)
{
    if (!check_connected(p, error) || !vdd_rbd_pool_check_name(p, name, error))
        return FALSE;
    /* A clone vdiskd made holds its parent's snapshot "vdisk-clone-NAME",
     * protected while the clone lives: it goes with the clone, so that the
     * parent can be deleted once its clones are. */
    g_autofree char *parent = NULL, *parent_snap = NULL;
    rbd_image_t image;
    if (rbd_open_read_only(p->io, name, &image, NULL) == 0) {
        rbd_linked_image_spec_t spec;
        rbd_snap_spec_t snap;
        if (rbd_get_parent(image, &spec, &snap) == 0) {
            g_autofree char *mine = g_strdup_printf("vdisk-clone-%s", name);
            if (g_strcmp0(spec.pool_name, p->ceph_pool) == 0 && g_str_equal(snap.name, mine)) {
                parent = g_strdup(spec.image_name);
                parent_snap = g_steal_pointer(&mine);
            }
            rbd_linked_image_spec_cleanup(&spec);
            rbd_snap_spec_cleanup(&snap);
        }
        rbd_close(image);
    }
    int rc = rbd_remove(p->io, name);
    if (rc == -ENOTEMPTY) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_BUSY, "%s/%s has snapshots; delete them first",
                    p->pool, name);
        return FALSE;
    }
    if (rc == -EBUSY) {
        g_set_error(error, VDD_ERROR, VDD_ERROR_BUSY,
                    "%s/%s is in use, or has clones (a snapshot of it is their parent)", p->pool,
                    name);
        return FALSE;
    }
    if (rc < 0 && rc != -ENOENT) {
        set_rc_error(error, rc, "%s/%s: cannot remove the RBD image", p->pool, name);
        return FALSE;
    }
    if (parent != NULL && rbd_open(p->io, parent, &image, NULL) == 0) {
        if (rbd_snap_unprotect(image, parent_snap) == 0)
            (void)rbd_snap_remove(image, parent_snap);
        rbd_close(image);
    }
    return TRUE;
}

gboolean vdd_rbd_pool_remove_abandoned(VddRbdPool *p, const char *name, GError **error)
{
    if (!check_connected(p, error) || !vdd_rbd_pool_check_name(p, name, error))
        return FALSE;
    /* The worker killed mid-copy still holds the image's exclusive lock
     * and its watch, which the cluster would drop only after its watch
     * timeout (30 s): the lock is broken, which blocklists that client,
     * and the image can go at once. */
    rbd_image_t image;
    if (rbd_open(p->io, name, &image, NULL) == 0) {
        rbd_lock_mode_t mode;
        char *owners[8];
        size_t n = G_N_ELEMENTS(owners);
        if (rbd_lock_get_owners(image, &mode, owners, &n) == 0) {
            for (size_t i = 0; i < n; i++)
                (void)rbd_lock_break(image, mode, owners[i]);
            rbd_lock_get_owners_cleanup(owners, n);
        }
        rbd_close(image);
    }
    return vdd_rbd_pool_remove(p, name, error);
}

gboolean vdd_rbd_pool_clone(VddRbdPool *p, const char *source, const char *name, GError **error)
{
    if (!vdd_rbd_pool_check_name(p, name, error))
        return FALSE;
    rbd_image_t image;
    if (!open_image(p, source, FALSE, &image, error))
        return FALSE;
    /* One snapshot per clone, named after it, as libvirt's rbd backend
     * does: the clone's parent stays as it was when cloned. */
    g_autofree char *snap = g_strdup_printf("vdisk-clone-%s", name);
    int rc = rbd_snap_create(image, snap);
    if (rc == 0)
        rc = rbd_snap_protect(image, snap);
    rbd_close(image);
    if (rc < 0) {
        set_rc_error(error, rc, "%s/%s: cannot take the snapshot %s to clone", p->pool, source,
                     snap);
        return FALSE;
    }
    rbd_image_options_t opts = new_image_options();
    rc = rbd_clone3(p->io, source, snap, p->io, name, opts);
    rbd_image_options_destroy(opts);
    if (rc < 0) {
        set_rc_error(error, rc, "%s/%s: cannot clone %s@%s", p->pool, name, source, snap);
        if (open_image(p, source, FALSE, &image, NULL)) {
            (void)rbd_snap_unprotect(image, snap);
            (void)rbd_snap_remove(image, snap);
            rbd_close(image);
        }
        return FALSE;
    }
    return TRUE;
}
