#include "rules.h"

#include <string.h>

#include "pool.h"
#include "vdisk-names.h"
#include "volume.h"

#define M VDISK_MANAGER_INTERFACE
#define P VDISK_POOL_INTERFACE
#define V VDISK_VOLUME_INTERFACE
#define POOL VDD_DETAIL_POOL
#define VOLUME VDD_DETAIL_VOLUME
#define FORMAT VDD_DETAIL_FORMAT
#define SNAPSHOT VDD_DETAIL_SNAPSHOT
#define PATH VDD_DETAIL_PATH
#define SOURCE VDD_DETAIL_SOURCE

/* The whole table (DESIGN.md, "Authorisation"; the details are those
 * polkit/org.vdisk.VDisk1.policy documents). "volume" is the volume a
 * method makes or changes: Clone's and CreateOverlay's new one, the called
 * one otherwise; "source-*" is the volume it reads besides: the called one
 * for Clone and CreateOverlay, CopyFrom's source, the volume a
 * CreateVolume or ImportVolume makes an overlay of (its backing option,
 * ImportVolume's backing-volume). */
static const VddRule rules[] = {
    { M, "GetPools", "", NULL, 0, FALSE },
    { M, "AddPool", VDISK_ACTION_MANAGE_POOLS, "add-pool", POOL, FALSE },
    { M, "ResolvePath", VDISK_ACTION_MANAGE_POOLS, "resolve-path", PATH, FALSE },
    { M, "InspectFile", VDISK_ACTION_INSPECT, "inspect", 0, FALSE },
    { M, "ConvertFile", VDISK_ACTION_INSPECT, "convert", FORMAT, FALSE },
    { P, "CreateVolume", VDISK_ACTION_CREATE_VOLUME, "create", POOL | VOLUME | FORMAT | SOURCE,
      TRUE },
    { P, "ImportVolume", VDISK_ACTION_IMPORT_VOLUME, "import", POOL | VOLUME | FORMAT | SOURCE,
      TRUE },
    { P, "Refresh", VDISK_ACTION_MANAGE_POOLS, "refresh", POOL, FALSE },
    { V, "Clone", VDISK_ACTION_CREATE_VOLUME, "clone", POOL | VOLUME | FORMAT | SOURCE, TRUE },
    { V, "CreateOverlay", VDISK_ACTION_CREATE_VOLUME, "overlay", POOL | VOLUME | FORMAT | SOURCE,
      TRUE },
    { V, "Resize", VDISK_ACTION_MODIFY_VOLUME, "resize", POOL | VOLUME, FALSE },
    { V, "CopyFrom", VDISK_ACTION_MODIFY_VOLUME, "copy", POOL | VOLUME | SOURCE, TRUE },
    { V, "CreateSnapshot", VDISK_ACTION_MODIFY_VOLUME, "CreateSnapshot", POOL | VOLUME | SNAPSHOT,
      FALSE },
    { V, "RevertSnapshot", VDISK_ACTION_MODIFY_VOLUME, "RevertSnapshot", POOL | VOLUME | SNAPSHOT,
      FALSE },
    { V, "DeleteSnapshot", VDISK_ACTION_MODIFY_VOLUME, "DeleteSnapshot", POOL | VOLUME | SNAPSHOT,
      FALSE },
    { V, "Export", VDISK_ACTION_READ_VOLUME, "export", POOL | VOLUME | FORMAT, FALSE },
    /* Serving holds the volume (and writes it, unless read-only): modify,
     * and read-volume on it too, so a rule that keeps a user from reading
     * a pool keeps its volumes from being served to them. */
    { V, "ExportNbd", VDISK_ACTION_MODIFY_VOLUME, "export-nbd", POOL | VOLUME | SOURCE, TRUE },
    { V, "Delete", VDISK_ACTION_DELETE_VOLUME, "delete", POOL | VOLUME, FALSE },
    /* Own jobs: anyone; others' jobs: job.c asks again for
     * VDISK_ACTION_CANCEL_JOB_OTHER_USER. */
    { VDISK_JOB_INTERFACE, "Cancel", "", NULL, 0, FALSE },
};

const VddRule *vdd_rule_lookup(const char *interface, const char *method)
{
    if (interface == NULL || method == NULL)
        return NULL;
    for (gsize i = 0; i < G_N_ELEMENTS(rules); i++) {
        if (strcmp(rules[i].interface, interface) == 0 && strcmp(rules[i].method, method) == 0)
            return &rules[i];
    }
    return NULL;
}

const VddRule *vdd_rules(gsize *n_rules)
{
    *n_rules = G_N_ELEMENTS(rules);
    return rules;
}

static void add(GHashTable *details, const char *key, const char *value)
{
    if (value != NULL)
        g_hash_table_insert(details, g_strdup(key), g_strdup(value));
}

GHashTable *vdd_rule_details(const VddRule *rule, const VddCallSubject *subject)
{
    GHashTable *details = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    VddDetails want = rule->details;
    if (want & POOL)
        add(details, "pool", subject->pool);
    if (want & VOLUME)
        add(details, "volume", subject->volume);
    if (want & FORMAT)
        add(details, "format", subject->format);
    if (want & SNAPSHOT)
        add(details, "snapshot", subject->snapshot);
    if (want & PATH)
        add(details, "path", subject->path);
    if ((want & SOURCE) && subject->source != NULL) {
        add(details, "source-pool", vdd_pool_get_name(vdd_volume_get_pool(subject->source)));
        add(details, "source-volume", vdd_volume_get_name(subject->source));
    }
    add(details, "operation", rule->operation);
    return details;
}

GHashTable *vdd_rule_read_details(const VddRule *rule, VddVolume *source)
{
    GHashTable *details = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    add(details, "pool", vdd_pool_get_name(vdd_volume_get_pool(source)));
    add(details, "volume", vdd_volume_get_name(source));
    add(details, "operation", rule->method);
    return details;
}
