/* vdiskctl: pools and the listing of their volumes. */
#include "ctl.h"

#include <stdlib.h>

/* ----- vdiskctl pools ----- */

/* dir, logical or rbd; a vdiskd from before pool types has dir pools only. */
static const char *pool_type(const CtlObject *pool)
{
    const char *type = ctl_prop_string(pool->props, "Type");
    return type != NULL && *type != '\0' ? type : "dir";
}

static void add_pool_row(CtlTable *table, const CtlObject *pool)
{
    g_autoptr(GVariant) volumes =
        g_variant_lookup_value(pool->props, "Volumes", G_VARIANT_TYPE("ao"));
    g_autofree char *count =
        g_strdup_printf("%zu", volumes != NULL ? g_variant_n_children(volumes) : (gsize)0);
    g_autofree char *capacity = ctl_format_size(ctl_prop_uint64(pool->props, "Capacity"));
    g_autofree char *available = ctl_format_size(ctl_prop_uint64(pool->props, "Available"));

    ctl_table_add_row(table, ctl_prop_string(pool->props, "Name"),
                      ctl_prop_string(pool->props, "Directory"), pool_type(pool), count, capacity,
                      available, NULL);
}

/* The pools as JSON: name, directory, type, capacity and available in bytes,
 * error (why the pool is unavailable, "" while it is usable) and the names
 * of their volumes. */
static void print_pools_json(GVariant *objects, GPtrArray *pools)
{
    g_autoptr(GPtrArray) volumes = ctl_objects_with(objects, VDISK_VOLUME_INTERFACE);
    JsonWriter *w = json_writer_new();

    json_begin_array(w);
    for (guint i = 0; i < pools->len; i++) {
        const CtlObject *pool = pools->pdata[i];
        json_begin_object(w);
        json_member_string(w, "name", ctl_prop_string(pool->props, "Name"));
        json_member_string(w, "directory", ctl_prop_string(pool->props, "Directory"));
        json_member_string(w, "type", pool_type(pool));
        json_member_uint(w, "capacity", ctl_prop_uint64(pool->props, "Capacity"));
        json_member_uint(w, "available", ctl_prop_uint64(pool->props, "Available"));
        json_member_string(w, "error", ctl_prop_string(pool->props, "Error"));
        json_key(w, "volumes");
        json_begin_array(w);
        for (guint v = 0; v < volumes->len; v++) {
            const CtlObject *vol = volumes->pdata[v];
            if (g_str_equal(ctl_prop_string(vol->props, "Pool"), pool->path))
                json_string(w, ctl_prop_string(vol->props, "Name"));
        }
        json_end_array(w);
        json_end_object(w);
    }
    json_end_array(w);
    ctl_json_print(w);
}

static int run_pools(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) objects = ctl_get_objects(ctl, &error);
    g_autoptr(GPtrArray) pools = NULL;
    g_autoptr(CtlTable) table = NULL;

    if (objects == NULL)
        return ctl_fail(error);
    pools = ctl_objects_with(objects, VDISK_POOL_INTERFACE);
    if (ctl->json) {
        print_pools_json(objects, pools);
        return EXIT_SUCCESS;
    }
    if (pools->len == 0) {
        ctl_say(ctl, "No pools; an administrator adds one with 'vdiskctl add-pool NAME DIR'.");
        return EXIT_SUCCESS;
    }
    table = ctl_table_new("POOL", "DIRECTORY", "TYPE", "VOLUMES", "CAPACITY", "AVAILABLE", NULL);
    for (guint i = 0; i < pools->len; i++)
        add_pool_row(table, pools->pdata[i]);
    ctl_table_print(table, stdout);
    /* An rbd pool vdiskd cannot reach (no network, no key) says why. */
    for (guint i = 0; i < pools->len; i++) {
        const CtlObject *pool = pools->pdata[i];
        const char *why = ctl_prop_string(pool->props, "Error");
        if (*why != '\0')
            printf("Pool %s is unavailable: %s\n", ctl_prop_string(pool->props, "Name"), why);
    }
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_pools = {
    .name = "pools",
    .operands = "",
    .summary = "list the storage pools",
    .options = CTL_OPT_JSON,
    .examples = "  vdiskctl pools\n"
                "  vdiskctl pools --json\n",
    .min_operands = 0,
    .max_operands = 0,
    .run = run_pools,
};

/* ----- vdiskctl volumes ----- */

/* What a listing says besides the numbers: why a volume cannot be read,
 * or that a job writes it. */
static const char *volume_status(GVariant *props)
{
    const char *problem = ctl_prop_string(props, "Error");
    gboolean busy = FALSE;

    if (*problem)
        return problem;
    g_variant_lookup(props, "Busy", "b", &busy);
    return busy ? "busy" : "ok";
}

static void add_volume_row(CtlTable *table, const char *pool_name, const CtlObject *vol)
{
    g_autofree char *label =
        g_strdup_printf("%s/%s", pool_name, ctl_prop_string(vol->props, "Name"));
    g_autofree char *virtual = ctl_format_size(ctl_prop_uint64(vol->props, "VirtualSize"));
    g_autofree char *allocated = ctl_format_size(ctl_prop_uint64(vol->props, "AllocatedSize"));
    const char *format = ctl_prop_string(vol->props, "Format");
    const char *backing = ctl_prop_string(vol->props, "BackingFile");

    ctl_table_add_row(table, label, *format ? format : "?", virtual, allocated,
                      *backing ? backing : "-", volume_status(vol->props), NULL);
}

/* The volumes of pool (all pools when NULL), in pool order. */
static GPtrArray *volumes_of(GVariant *objects, GPtrArray *pools, const CtlObject *only,
                             GPtrArray **pool_names)
{
    g_autoptr(GPtrArray) volumes = ctl_objects_with(objects, VDISK_VOLUME_INTERFACE);
    GPtrArray *picked = g_ptr_array_new();

    *pool_names = g_ptr_array_new();
    for (guint p = 0; p < pools->len; p++) {
        CtlObject *pool = pools->pdata[p];
        if (only != NULL && !g_str_equal(pool->path, only->path))
            continue;
        for (guint v = 0; v < volumes->len; v++) {
            CtlObject *vol = volumes->pdata[v];
            if (!g_str_equal(ctl_prop_string(vol->props, "Pool"), pool->path))
                continue;
            /* Keep the volume alive past volumes: hand it over. */
            g_ptr_array_add(picked, g_ptr_array_steal_index(volumes, v--));
            g_ptr_array_add(*pool_names, (gpointer)ctl_prop_string(pool->props, "Name"));
        }
    }
    g_ptr_array_set_free_func(picked, (GDestroyNotify)ctl_object_free);
    return picked;
}

static int run_volumes(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GVariant) objects = ctl_get_objects(ctl, &error);
    g_autoptr(GPtrArray) pools = NULL;
    g_autoptr(GPtrArray) volumes = NULL;
    g_autoptr(GPtrArray) pool_names = NULL;
    g_autoptr(CtlTable) table = NULL;
    CtlObject *only = NULL;

    if (objects == NULL)
        return ctl_fail(error);
    pools = ctl_objects_with(objects, VDISK_POOL_INTERFACE);
    if (n_operands > 0) {
        only = ctl_object_lookup(pools, "Name", operands[0]);
        if (only == NULL) {
            ctl_error("no pool '%s' ('vdiskctl pools' lists them)", operands[0]);
            return CTL_EXIT_FAILURE;
        }
    }
    volumes = volumes_of(objects, pools, only, &pool_names);
    if (ctl->json) {
        JsonWriter *w = json_writer_new();
        json_begin_array(w);
        for (guint i = 0; i < volumes->len; i++)
            ctl_json_volume(w, pool_names->pdata[i], ((CtlObject *)volumes->pdata[i])->props);
        json_end_array(w);
        ctl_json_print(w);
        return EXIT_SUCCESS;
    }
    table = ctl_table_new("VOLUME", "FORMAT", "VIRTUAL SIZE", "DISK SIZE", "BACKING FILE", "STATUS",
                          NULL);
    for (guint i = 0; i < volumes->len; i++)
        add_volume_row(table, pool_names->pdata[i], volumes->pdata[i]);
    ctl_table_print(table, stdout);
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_volumes = {
    .name = "volumes",
    .operands = "[POOL]",
    .summary = "list the volumes of one pool or of all",
    .options = CTL_OPT_JSON,
    .examples = "  vdiskctl volumes\n"
                "  vdiskctl volumes default --json\n",
    .min_operands = 0,
    .max_operands = 1,
    .run = run_volumes,
};

/* ----- vdiskctl add-pool ----- */

static int run_add_pool(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    /* vdiskd does not share our working directory. */
    g_autofree char *dir = g_canonicalize_filename(operands[1], NULL);
    g_autoptr(VddDbusManager) manager = ctl_manager_proxy(ctl, &error);
    g_autofree char *pool = NULL;

    if (manager == NULL || !ctl_called(vdd_dbus_manager_call_add_pool_sync(
                                           manager, operands[0], dir, ctl_no_options(),
                                           ctl->call_flags, ctl_timeout(ctl), &pool, NULL, &error),
                                       &error))
        return ctl_fail(error);
    ctl_say(ctl, "Added pool %s at %s.", operands[0], dir);
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_add_pool = {
    .name = "add-pool",
    .operands = "NAME DIRECTORY",
    .summary = "manage a directory as a pool (administrators)",
    .notes = "DIRECTORY must exist. The pool lasts until vdiskd exits; pools kept\n"
             "across restarts are configured in /etc/vdisk/pools.d/.\n",
    .examples = "  vdiskctl add-pool images /var/lib/libvirt/images\n",
    .min_operands = 2,
    .max_operands = 2,
    .run = run_add_pool,
};

/* ----- vdiskctl refresh ----- */

static int run_refresh(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(CtlObject) pool = ctl_find_pool(ctl, operands[0], &error);
    g_autoptr(VddDbusPool) proxy = NULL;

    if (pool == NULL || (proxy = ctl_pool_proxy(ctl, pool->path, &error)) == NULL ||
        !ctl_called(vdd_dbus_pool_call_refresh_sync(proxy, ctl_no_options(), ctl->call_flags,
                                                    ctl_timeout(ctl), NULL, &error),
                    &error))
        return ctl_fail(error);
    ctl_say(ctl, "Refreshed pool %s.", operands[0]);
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_refresh = {
    .name = "refresh",
    .operands = "POOL",
    .summary = "rescan a pool's directory (administrators)",
    .examples = "  vdiskctl refresh default\n",
    .min_operands = 1,
    .max_operands = 1,
    .run = run_refresh,
};
