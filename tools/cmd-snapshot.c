/* vdisk snapshot: list, create, apply and delete internal snapshots, with
 * qemu-img snapshot's options and table. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "voice.h"

typedef enum {
    SNAPSHOT_NONE,
    SNAPSHOT_LIST,
    SNAPSHOT_CREATE,
    SNAPSHOT_APPLY,
    SNAPSHOT_DELETE,
} SnapshotAction;

typedef struct {
    SnapshotAction action;
    const char *name;
} SnapshotOptions;

static void print_snapshot_row(const VdSnapshotInfo *sn)
{
    g_autoptr(GDateTime) date = g_date_time_new_from_unix_local(sn->date_sec);
    g_autofree char *date_text =
        date != NULL ? g_date_time_format(date, "%Y-%m-%d %H:%M:%S") : g_strdup("?");
    g_autofree char *size = cli_format_size(sn->vm_state_size);
    guint64 secs = sn->vm_clock_nsec / G_GUINT64_CONSTANT(1000000000);
    g_autofree char *clock =
        g_strdup_printf("%02u:%02u:%02u.%03u", (guint)(secs / 3600), (guint)(secs / 60 % 60),
                        (guint)(secs % 60), (guint)(sn->vm_clock_nsec / 1000000 % 1000));
    g_autofree char *icount = sn->icount == G_MAXUINT64
                                  ? g_strdup("")
                                  : g_strdup_printf("%" G_GUINT64_FORMAT, sn->icount);

    /* Column widths are qemu's bdrv_snapshot_dump. */
    printf("%-9s %-16s %8s%20s%13s%11s\n", sn->id, sn->name, size, date_text, clock, icount);
}

void cli_print_snapshot_table(GPtrArray *snapshots)
{
    printf("Snapshot list:\n");
    printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
    for (guint i = 0; i < snapshots->len; i++)
        print_snapshot_row(g_ptr_array_index(snapshots, i));
}

static gboolean set_action(SnapshotOptions *opts, SnapshotAction action, const char *name,
                           GError **error)
{
    if (opts->action != SNAPSHOT_NONE) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "give only one of -l, -c, -a and -d");
        return FALSE;
    }
    opts->action = action;
    opts->name = name;
    return TRUE;
}

static gboolean snapshot_option(int opt, const char *arg, gpointer data, GError **error)
{
    SnapshotOptions *opts = data;

    switch (opt) {
    case 'l':
        return set_action(opts, SNAPSHOT_LIST, NULL, error);
    case 'c':
        return set_action(opts, SNAPSHOT_CREATE, arg, error);
    case 'a':
        return set_action(opts, SNAPSHOT_APPLY, arg, error);
    case 'd':
        return set_action(opts, SNAPSHOT_DELETE, arg, error);
    case 'U':
        cli_force_share();
        return TRUE;
    default:
        return FALSE;
    }
}

static gboolean list_snapshots(VdImage *img, GError **error)
{
    g_autoptr(GPtrArray) snapshots = vd_image_list_snapshots(img, error);

    if (snapshots == NULL)
        return FALSE;
    /* qemu-img prints nothing at all for an image without snapshots. */
    if (snapshots->len > 0)
        cli_print_snapshot_table(snapshots);
    return TRUE;
}

static gboolean has_snapshot_named(VdImage *img, const char *name, GError **error)
{
    g_autoptr(GPtrArray) snapshots = vd_image_list_snapshots(img, error);

    if (snapshots == NULL)
        return FALSE;
    for (guint i = 0; i < snapshots->len; i++) {
        const VdSnapshotInfo *sn = g_ptr_array_index(snapshots, i);
        if (g_str_equal(sn->name, name))
            return TRUE;
    }
    g_set_error(error, VD_ERROR, VD_ERROR_NOT_FOUND, "snapshot not found");
    return FALSE;
}

/* The snapshot was deleted, but freeing clusters failed (blkdebug injects
 * such errors): they only leak. Where the old snapshot table alone could
 * not be freed, say so and go on, as qemu-img does (its words under its
 * name); else the error in qemu-img's words. TRUE: the delete stands. */
static gboolean deleted_with_leaks(GError *error)
{
    g_autoptr(GRegex) re =
        g_regex_new("snapshot deleted, but its clusters leak \\(check -r leaks frees them\\): "
                    "(?:freeing the old snapshot table failed: (?:[^;]*: )?([^:;]*)(?:; |$))?"
                    "(?:freeing the snapshot's clusters failed: (?:.*: )?([^:;]*))?$",
                    0, 0, NULL);
    g_autoptr(GMatchInfo) match = NULL;
    if (!g_regex_match(re, error->message, 0, &match))
        return FALSE;
    g_autofree char *table = g_match_info_fetch(match, 1);
    g_autofree char *clusters = g_match_info_fetch(match, 2);
    if (clusters == NULL || *clusters == '\0') {
        if (voice_is_qemu())
            fprintf(stderr, "qcow2_free_clusters failed: %s\n", table);
        else
            cli_error("warning: %s", error->message);
        return TRUE;
    }
    if (!voice_is_qemu())
        return FALSE;
    if (table != NULL && *table != '\0')
        fprintf(stderr, "qcow2_free_clusters failed: %s\n", table);
    g_autofree char *message =
        g_strdup_printf("Failed to free the cluster and L1 table: %s", clusters);
    g_free(error->message);
    error->message = g_steal_pointer(&message);
    return FALSE;
}

static gboolean do_action(VdImage *img, const SnapshotOptions *opts, GError **error)
{
    switch (opts->action) {
    case SNAPSHOT_LIST:
        return list_snapshots(img, error);
    case SNAPSHOT_CREATE:
        if (vd_image_create_snapshot(img, opts->name, error))
            return TRUE;
        g_prefix_error(error, "Could not create snapshot '%s': ", opts->name);
        return FALSE;
    case SNAPSHOT_APPLY:
        if (vd_image_apply_snapshot(img, opts->name, error))
            return TRUE;
        g_prefix_error(error, "Could not apply snapshot '%s': ", opts->name);
        return FALSE;
    case SNAPSHOT_DELETE:
        /* qemu-img -d looks at names only. */
        if (!has_snapshot_named(img, opts->name, error)) {
            g_prefix_error(error, "Could not delete snapshot '%s': ", opts->name);
            return FALSE;
        }
        if (vd_image_delete_snapshot(img, opts->name, error))
            return TRUE;
        if (deleted_with_leaks(*error)) {
            g_clear_error(error);
            return TRUE;
        }
        g_prefix_error(error, "Could not delete snapshot '%s': ", opts->name);
        return FALSE;
    case SNAPSHOT_NONE:
        /* qemu-img opens the image and does nothing. */
        return TRUE;
    }
    g_assert_not_reached();
}

static int run_snapshot(const CliCommand *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    CliCommon common = { 0 };
    SnapshotOptions opts = { 0 };
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = NULL;
    gboolean writes;
    int first = cli_parse_options(cmd, argc, argv, "lc:a:d:f:qU", longopts, &common,
                                  snapshot_option, &opts);

    if (first < 0 || !cli_check_operands(cmd, argc - first, 1, 1))
        return CLI_EXIT_FAILURE;

    /* Snapshots live in this file alone: the backing chain is not needed. */
    writes = opts.action != SNAPSHOT_LIST && opts.action != SNAPSHOT_NONE;
    img = cli_open_image(argv[first], common.format,
                         VD_OPEN_NO_BACKING | (writes ? VD_OPEN_READ_WRITE : 0),
                         writes ? CLI_PROBE_WARN : CLI_PROBE_QUIET, &error);
    if (img == NULL)
        return cli_fail(error);
    if (!do_action(img, &opts, &error))
        return cli_fail(error);
    if (writes && !vd_image_flush(img, &error))
        return cli_fail(error);
    return EXIT_SUCCESS;
}

const CliCommand cli_cmd_snapshot = {
    .name = "snapshot",
    .summary = "list, create, apply or delete internal snapshots",
    .usage = "  vdisk snapshot [-f FMT] [-q] [-U] -l FILE\n"
             "  vdisk snapshot [-f FMT] [-q] -c|-a|-d NAME FILE",
    .help = "  -l                     list the snapshots (without -l, -c, -a or -d: nothing,\n"
            "                         as qemu-img)\n"
            "  -c NAME                create a snapshot of the current content (a name\n"
            "                         that exists gives a second snapshot of that name)\n"
            "  -a NAME                apply (revert to) a snapshot: the one of that id, else\n"
            "                         the first of that name, as qemu-img picks\n"
            "  -d NAME                delete the first snapshot of that name (not an id,\n"
            "                         as qemu-img)\n"
            "  -f FMT                 image format (probed when not given)\n"
            "  -q                     quiet\n"
            "  -U, --force-share      with -l: list even while another process (a running\n"
            "                         VM) writes the image, as qemu-img -U\n",
    .examples = "  vdisk snapshot -c before-upgrade vm.qcow2\n"
                "  vdisk snapshot -l vm.qcow2\n"
                "  vdisk snapshot -a before-upgrade vm.qcow2\n",
    .run = run_snapshot,
};
