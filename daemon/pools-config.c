#include "pools-config.h"

#include <errno.h>
#include <string.h>

void vdd_pool_config_free(VddPoolConfig *pc)
{
    g_free(pc->name);
    g_free(pc->type);
    g_free(pc->directory);
    g_free(pc->pool_source);
    g_free(pc->source);
    g_free(pc->conf);
    g_free(pc->user);
    g_free(pc->keyring);
    g_free(pc);
}

GPtrArray *vdd_config_parse(const char *filename, const char *data, gsize len, GError **error)
{
    g_autoptr(GKeyFile) kf = g_key_file_new();
    if (!g_key_file_load_from_data(kf, data, len, G_KEY_FILE_NONE, error)) {
        g_prefix_error(error, "%s: ", filename);
        return NULL;
    }
    g_autoptr(GPtrArray) out = g_ptr_array_new_with_free_func((GDestroyNotify)vdd_pool_config_free);
    g_auto(GStrv) groups = g_key_file_get_groups(kf, NULL);
    for (guint i = 0; groups[i]; i++) {
        const char *g = groups[i];
        g_autofree char *name = NULL;
        if (strcmp(g, "Pool") == 0)
            name = g_key_file_get_string(kf, g, "Name", NULL);
        else if (g_str_has_prefix(g, "Pool "))
            name = g_strdup(g + 5);
        else
            continue; /* other groups are for other readers */
        g_autofree char *dir = g_key_file_get_string(kf, g, "Directory", NULL);
        g_autofree char *type = g_key_file_get_string(kf, g, "Type", NULL);
        g_autofree char *vg = g_key_file_get_string(kf, g, "Source", NULL);
        if (type == NULL)
            type = g_strdup("dir");
        if (!g_str_equal(type, "dir") && !g_str_equal(type, "logical") &&
            !g_str_equal(type, "rbd")) {
            g_set_error(error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                        "%s: [%s] Type=%s is not a pool type (dir, logical or rbd)", filename, g,
                        type);
            return NULL;
        }
        gboolean logical = g_str_equal(type, "logical"), rbd = g_str_equal(type, "rbd");
        if (name == NULL || *name == '\0' ||
            (!logical && !rbd && (dir == NULL || !g_path_is_absolute(dir)))) {
            g_set_error(error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                        "%s: [%s] needs Name= and an absolute Directory=", filename, g);
            return NULL;
        }
        if ((logical || rbd) && (vg == NULL || *vg == '\0')) {
            g_set_error(error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                        "%s: [%s] Type=%s needs Source=, the %s's name", filename, g, type,
                        logical ? "volume group" : "Ceph pool");
            return NULL;
        }
        g_autofree char *conf = rbd ? g_key_file_get_string(kf, g, "Conf", NULL) : NULL;
        g_autofree char *user = rbd ? g_key_file_get_string(kf, g, "User", NULL) : NULL;
        g_autofree char *keyring = rbd ? g_key_file_get_string(kf, g, "Keyring", NULL) : NULL;
        if ((conf != NULL && !g_path_is_absolute(conf)) ||
            (keyring != NULL && !g_path_is_absolute(keyring))) {
            g_set_error(error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                        "%s: [%s] Conf= and Keyring= must be absolute paths", filename, g);
            return NULL;
        }
        VddPoolConfig *pc = g_new0(VddPoolConfig, 1);
        pc->name = g_steal_pointer(&name);
        pc->type = g_steal_pointer(&type);
        pc->directory = logical || rbd ? NULL : g_steal_pointer(&dir);
        pc->pool_source = logical || rbd ? g_steal_pointer(&vg) : NULL;
        pc->conf = g_steal_pointer(&conf);
        pc->user = g_steal_pointer(&user);
        pc->keyring = g_steal_pointer(&keyring);
        pc->source = g_strdup(filename);
        g_ptr_array_add(out, pc);
    }
    return g_steal_pointer(&out);
}

static gint compare_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

GPtrArray *vdd_config_load_pools(const char *dir, GError **error)
{
    GPtrArray *all = g_ptr_array_new_with_free_func((GDestroyNotify)vdd_pool_config_free);
    g_autoptr(GError) local = NULL;
    g_autoptr(GDir) d = g_dir_open(dir, 0, &local);
    if (d == NULL) {
        if (!g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
            g_warning("cannot read %s: %s", dir, local->message);
        return all;
    }
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    const char *n;
    while ((n = g_dir_read_name(d)) != NULL) {
        if (g_str_has_suffix(n, ".conf") && n[0] != '.')
            g_ptr_array_add(names, g_strdup(n));
    }
    g_ptr_array_sort(names, compare_names);
    for (guint i = 0; i < names->len; i++) {
        g_autofree char *path = g_build_filename(dir, names->pdata[i], NULL);
        g_autofree char *data = NULL;
        gsize len;
        g_autoptr(GError) e = NULL;
        g_autoptr(GPtrArray) pools = NULL;
        if (!g_file_get_contents(path, &data, &len, &e) ||
            (pools = vdd_config_parse(path, data, len, &e)) == NULL) {
            g_warning("skipping %s", e->message);
            continue;
        }
        for (guint j = 0; j < pools->len; j++)
            g_ptr_array_add(all, g_steal_pointer(&pools->pdata[j]));
        g_ptr_array_set_free_func(pools, NULL);
    }
    return all;
}
