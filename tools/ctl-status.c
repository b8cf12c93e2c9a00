/* vdiskctl status: the daemon's version and how it parses images. */
#include "ctl.h"

#include <stdlib.h>

#include "json-writer.h"

/* One line on the worker's confinement, from WorkerConfinement. */
static char *describe_worker(GVariant *c)
{
    const char *error = NULL, *user = "?";
    guint32 uid = 0;
    gint32 abi = 0;
    gboolean nnp = FALSE, seccomp = FALSE;
    if (g_variant_lookup(c, "error", "&s", &error))
        return g_strdup_printf("cannot be started: %s", error);
    if (!g_variant_lookup(c, "user", "&s", &user))
        return g_strdup("not known yet (vdiskd asks a worker as it starts)");
    g_variant_lookup(c, "uid", "u", &uid);
    g_variant_lookup(c, "landlock-abi", "i", &abi);
    g_variant_lookup(c, "no-new-privs", "b", &nnp);
    g_variant_lookup(c, "seccomp", "b", &seccomp);
    g_autofree char *landlock =
        abi > 0 ? g_strdup_printf("Landlock ABI %d", abi) : g_strdup("no Landlock (kernel)");
    return g_strdup_printf("as %s (uid %u), %s, %s, %s", user, uid,
                           nnp ? "no new privileges" : "new privileges allowed", landlock,
                           seccomp ? "seccomp filter" : "no seccomp filter");
}

static int run_status(Ctl *ctl, char **operands, int n_operands)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VddDbusManager) manager = ctl_manager_properties(ctl, &error);
    if (manager == NULL)
        return ctl_fail(error);
    const char *version = vdd_dbus_manager_get_version(manager);
    g_autoptr(GVariant) worker = vdd_dbus_manager_dup_worker_confinement(manager);
    if (worker == NULL)
        worker = g_variant_ref_sink(ctl_no_options());
    if (ctl->json) {
        g_autoptr(JsonWriter) w = json_writer_new();
        json_begin_object(w);
        json_member_string(w, "version", version);
        json_key(w, "worker");
        json_variant(w, worker);
        json_end_object(w);
        printf("%s\n", json_writer_get(w));
        return EXIT_SUCCESS;
    }
    g_autofree char *line = describe_worker(worker);
    ctl_print_field("vdiskd", version);
    ctl_print_field("image worker", line);
    return EXIT_SUCCESS;
}

const CtlCommand ctl_cmd_status = {
    .name = "status",
    .operands = "",
    .summary = "show vdiskd's version and how it confines image parsing",
    .options = CTL_OPT_JSON,
    .examples = "  vdiskctl status\n"
                "  vdiskctl status --json\n",
    .min_operands = 0,
    .max_operands = 0,
    .run = run_status,
};
