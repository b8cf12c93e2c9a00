#include "shim-status.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void shim_config_free(ShimConfig *cfg)
{
    if (cfg == NULL)
        return;
    g_free(cfg->qemu_img);
    g_free(cfg->fallback_source);
    g_free(cfg);
}

ShimConfig *shim_config_load(void)
{
    ShimConfig *cfg = g_new0(ShimConfig, 1);
    cfg->fallback = TRUE;
    cfg->qemu_img = g_strdup(SHIM_REAL_QEMU_IMG);
    cfg->fallback_source = g_strdup("the default");
    const char *file = g_getenv("VDISK_SHIM_CONFIG");
    if (file == NULL)
        file = SHIM_CONFIG_FILE;
    g_autoptr(GKeyFile) kf = g_key_file_new();
    g_autoptr(GError) error = NULL;
    if (g_key_file_load_from_file(kf, file, G_KEY_FILE_NONE, &error)) {
        g_autoptr(GError) local = NULL;
        gboolean v = g_key_file_get_boolean(kf, "shim", "fallback", &local);
        if (local == NULL) {
            cfg->fallback = v;
            g_free(cfg->fallback_source);
            cfg->fallback_source = g_strdup_printf("fallback=%s in %s", v ? "true" : "false", file);
        } else if (!g_error_matches(local, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_KEY_NOT_FOUND) &&
                   !g_error_matches(local, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_GROUP_NOT_FOUND)) {
            g_printerr("vdisk-qemu-img: %s: %s (ignored)\n", file, local->message);
        }
        g_autofree char *path = g_key_file_get_string(kf, "shim", "qemu-img", NULL);
        if (path != NULL && g_path_is_absolute(path)) {
            g_free(cfg->qemu_img);
            cfg->qemu_img = g_steal_pointer(&path);
        }
    } else if (!g_error_matches(error, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
        g_printerr("vdisk-qemu-img: %s: %s (ignored)\n", file, error->message);
    }
    const char *env = g_getenv("VDISK_SHIM_FALLBACK");
    if (env != NULL && *env != '\0') {
        cfg->fallback =
            !(g_str_equal(env, "0") || g_ascii_strcasecmp(env, "false") == 0 ||
              g_ascii_strcasecmp(env, "off") == 0 || g_ascii_strcasecmp(env, "no") == 0);
        g_free(cfg->fallback_source);
        cfg->fallback_source = g_strdup_printf("VDISK_SHIM_FALLBACK=%s", env);
    }
    return cfg;
}

char *shim_find_qemu_img(const char *search_path)
{
    g_auto(GStrv) dirs = g_strsplit(search_path ? search_path : "", ":", -1);
    for (guint i = 0; dirs[i]; i++) {
        if (dirs[i][0] != '/')
            continue;
        g_autofree char *p = g_build_filename(dirs[i], "qemu-img", NULL);
        if (access(p, X_OK) == 0)
            return g_steal_pointer(&p);
    }
    return NULL;
}

/* PATH from a process's environment, or NULL. */
static char *process_path(const char *pid)
{
    g_autofree char *file = g_strdup_printf("/proc/%s/environ", pid);
    g_autofree char *env = NULL;
    gsize len;
    if (!g_file_get_contents(file, &env, &len, NULL))
        return NULL;
    for (gsize i = 0; i < len; i += strlen(env + i) + 1)
        if (g_str_has_prefix(env + i, "PATH="))
            return g_strdup(env + i + 5);
    return NULL;
}

/* Each daemon's PATH is looked up through /proc/PID/root: it may live in a
 * mount namespace of its own (as in the tests). */
int shim_print_status(FILE *out)
{
    g_autofree char *self = realpath("/proc/self/exe", NULL);
    int found = 0, using = 0;
    DIR *proc = opendir("/proc");
    struct dirent *de;
    while (proc != NULL && (de = readdir(proc)) != NULL) {
        if (!g_ascii_isdigit(de->d_name[0]))
            continue;
        g_autofree char *comm_file = g_strdup_printf("/proc/%s/comm", de->d_name);
        g_autofree char *comm = NULL;
        if (!g_file_get_contents(comm_file, &comm, NULL, NULL))
            continue;
        g_strstrip(comm);
        if (!g_str_equal(comm, "libvirtd") && !g_str_equal(comm, "virtstoraged") &&
            !g_str_equal(comm, "virtqemud"))
            continue;
        found++;
        g_autofree char *path = process_path(de->d_name);
        g_autofree char *root = g_strdup_printf("/proc/%s/root", de->d_name);
        g_autofree char *inside = path ? shim_find_qemu_img(path) : NULL;
        g_autofree char *seen = inside ? g_strconcat(root, inside, NULL) : NULL;
        g_autofree char *real = seen ? realpath(seen, NULL) : NULL;
        /* realpath through /proc/PID/root names the file as we see it. */
        gboolean is_shim = real != NULL && self != NULL &&
                           (g_str_equal(real, self) || g_str_has_suffix(real, "/vdisk-qemu-img"));
        if (is_shim)
            using ++;
        fprintf(out, "%s (pid %s): qemu-img is %s%s\n", comm, de->d_name,
                inside ? inside : "not on its PATH",
                is_shim  ? " (the vdisk shim)"
                : inside ? " (not the vdisk shim)"
                         : "");
    }
    if (proc != NULL)
        closedir(proc);
    g_autoptr(ShimConfig) cfg = shim_config_load();
    fprintf(out, "fallback to %s: %s (%s)\n", cfg->qemu_img, cfg->fallback ? "on" : "off",
            cfg->fallback_source);
    if (found == 0) {
        fprintf(out, "no libvirt daemon is running\n");
        return 3;
    }
    return using == found ? 0 : 1;
}
