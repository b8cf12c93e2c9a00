/* vdisk check: check (and optionally repair) an image's metadata, with
 * qemu-img check's options, output and exit codes. */
#include <stdlib.h>

#include "cli.h"
#include "json-writer.h"

/* qemu-img check's exit codes, which scripts test for. */
enum {
    CHECK_EXIT_CLEAN = 0,
    CHECK_EXIT_FAILED = 1,       /* the check could not complete */
    CHECK_EXIT_CORRUPT = 2,      /* corruptions found */
    CHECK_EXIT_LEAKS = 3,        /* only leaked clusters found */
    CHECK_EXIT_UNSUPPORTED = 63, /* the format has no check */
};

typedef struct {
    VdCheckRepair repair;
    VdOpenFlags cache; /* -T: how a repair's writes reach the disk, as in qemu-img */
} CheckOptions;

static gboolean check_option(int opt, const char *arg, gpointer data, GError **error)
{
    CheckOptions *opts = data;

    switch (opt) {
    case 'r':
        if (g_str_equal(arg, "leaks")) {
            opts->repair = VD_CHECK_REPAIR_LEAKS;
        } else if (g_str_equal(arg, "all")) {
            opts->repair = VD_CHECK_REPAIR_LEAKS | VD_CHECK_REPAIR_ERRORS;
        } else {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "-r must be 'leaks' or 'all', not '%s'", arg);
            return FALSE;
        }
        return TRUE;
    case 'T':
        return cli_parse_source_cache_mode(arg, &opts->cache, error);
    case 'U':
        cli_force_share();
        return TRUE;
    default:
        return FALSE;
    }
}

static void print_json(const VdCheckResult *res, const char *filename, const char *format)
{
    g_autoptr(JsonWriter) w = json_writer_new();

    /* qemu-img leaves out the counters that are zero, but always says how
     * many check errors there were. The order is the one qemu-img 7.2
     * prints, so its output and ours diff cleanly. */
    json_begin_object(w);
    if (res->image_end_offset != 0)
        json_member_uint(w, "image-end-offset", res->image_end_offset);
    if (res->compressed_clusters != 0)
        json_member_uint(w, "compressed-clusters", res->compressed_clusters);
    if (res->total_clusters != 0)
        json_member_uint(w, "total-clusters", res->total_clusters);
    if (res->corruptions_fixed != 0)
        json_member_uint(w, "corruptions-fixed", res->corruptions_fixed);
    if (res->corruptions != 0)
        json_member_uint(w, "corruptions", res->corruptions);
    json_member_uint(w, "check-errors", res->check_errors);
    if (res->leaks != 0)
        json_member_uint(w, "leaks", res->leaks);
    if (res->leaks_fixed != 0)
        json_member_uint(w, "leaks-fixed", res->leaks_fixed);
    if (res->allocated_clusters != 0)
        json_member_uint(w, "allocated-clusters", res->allocated_clusters);
    json_member_string(w, "filename", filename);
    json_member_string(w, "format", format);
    if (res->fragmented_clusters != 0)
        json_member_uint(w, "fragmented-clusters", res->fragmented_clusters);
    json_end_object(w);
    printf("%s\n", json_writer_get(w));
}

static void print_problems(const VdCheckResult *res)
{
    if (res->corruptions == 0 && res->leaks == 0 && res->check_errors == 0) {
        printf("No errors were found on the image.\n");
        return;
    }
    if (res->corruptions != 0)
        printf("\n%" G_GUINT64_FORMAT " errors were found on the image.\n"
               "Data may be corrupted, or further writes to the image may corrupt it.\n",
               res->corruptions);
    if (res->leaks != 0)
        printf("\n%" G_GUINT64_FORMAT " leaked clusters were found on the image.\n"
               "This means waste of disk space, but no harm to data.\n",
               res->leaks);
    if (res->check_errors != 0)
        printf("\n%" G_GUINT64_FORMAT " internal errors have occurred during the check.\n",
               res->check_errors);
}

static void print_human(const VdCheckResult *res)
{
    print_problems(res);
    if (res->total_clusters != 0 && res->allocated_clusters != 0)
        printf("%" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT
               " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
               res->allocated_clusters, res->total_clusters,
               res->allocated_clusters * 100.0 / res->total_clusters,
               res->fragmented_clusters * 100.0 / res->allocated_clusters,
               res->compressed_clusters * 100.0 / res->allocated_clusters);
    if (res->image_end_offset != 0)
        printf("Image end offset: %" G_GUINT64_FORMAT "\n", res->image_end_offset);
}

/* The driver's messages, one per problem, go to stderr as qemu's do. */
static void print_messages(const VdCheckResult *res)
{
    for (guint i = 0; res->messages != NULL && i < res->messages->len; i++)
        fprintf(stderr, "%s\n", (const char *)g_ptr_array_index(res->messages, i));
}

/* Repair, then check again so the report describes the repaired image;
 * the counts of what was fixed come from the first pass. Like qemu-img. */
static gboolean check_and_repair(VdImage *img, VdCheckRepair repair, gboolean human,
                                 VdCheckResult *res, GError **error)
{
    guint64 corruptions_fixed, leaks_fixed;

    /* What was found is said also when the check then fails, as qemu-img
     * says it. */
    gboolean ok = vd_image_check(img, repair, res, error);
    print_messages(res);
    if (!ok)
        return FALSE;
    /* What a repair wrote is on stable storage before it is reported. */
    if (repair != VD_CHECK_REPAIR_NONE && !vd_image_flush(img, error))
        return FALSE;
    if (repair == VD_CHECK_REPAIR_NONE || (res->corruptions_fixed == 0 && res->leaks_fixed == 0))
        return TRUE;

    corruptions_fixed = res->corruptions_fixed;
    leaks_fixed = res->leaks_fixed;
    if (human)
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %" G_GUINT64_FORMAT " leaked clusters\n"
               "    %" G_GUINT64_FORMAT " corruptions\n\n"
               "Double checking the fixed image now...\n",
               leaks_fixed, corruptions_fixed);
    vd_check_result_clear(res);
    if (!vd_image_check(img, VD_CHECK_REPAIR_NONE, res, error))
        return FALSE;
    print_messages(res);
    res->corruptions_fixed = corruptions_fixed;
    res->leaks_fixed = leaks_fixed;
    return TRUE;
}

static int exit_code(const VdCheckResult *res)
{
    if (res->check_errors != 0) {
        cli_error("Check failed: %" G_GUINT64_FORMAT " internal errors", res->check_errors);
        return CHECK_EXIT_FAILED;
    }
    if (res->corruptions != 0)
        return CHECK_EXIT_CORRUPT;
    if (res->leaks != 0)
        return CHECK_EXIT_LEAKS;
    return CHECK_EXIT_CLEAN;
}

static int run_check(const CliCommand *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "output", required_argument, NULL, CLI_OPT_OUTPUT },
        { "repair", required_argument, NULL, 'r' },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    CliCommon common = { 0 };
    CheckOptions opts = { 0 };
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = NULL;
    VdCheckResult res = { 0 };
    int rc;
    int first =
        cli_parse_options(cmd, argc, argv, "f:r:qT:U", longopts, &common, check_option, &opts);

    if (first < 0 || !cli_check_operands(cmd, argc - first, 1, 1))
        return CHECK_EXIT_FAILED;

    /* The check reads this file's metadata only; it must open images other
     * commands refuse (dirty, unknown autoclear bits). */
    img = cli_open_image(argv[first], common.format,
                         VD_OPEN_FOR_CHECK | VD_OPEN_NO_BACKING | opts.cache |
                             (opts.repair ? VD_OPEN_READ_WRITE : 0),
                         opts.repair ? CLI_PROBE_WARN : CLI_PROBE_QUIET, &error);
    if (img == NULL)
        return cli_fail(error);

    if (!check_and_repair(img, opts.repair, common.output == CLI_OUTPUT_HUMAN && !common.quiet,
                          &res, &error)) {
        vd_check_result_clear(&res);
        if (g_error_matches(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED)) {
            cli_error("This image format does not support checks");
            return CHECK_EXIT_UNSUPPORTED;
        }
        cli_fail(error);
        return CHECK_EXIT_FAILED;
    }

    if (common.output == CLI_OUTPUT_JSON)
        print_json(&res, argv[first], vd_image_format(img));
    else if (!common.quiet)
        print_human(&res);
    rc = exit_code(&res);
    vd_check_result_clear(&res);
    return rc;
}

const CliCommand cli_cmd_check = {
    .name = "check",
    .summary = "check an image for corruption and leaked clusters, and repair them",
    .usage = "  vdisk check [-f FMT] [-r leaks|all] [-T SRC_CACHE] [--output=human|json] [-q]\n"
             "              [-U] FILE",
    .help = "  -f FMT                 image format (probed when not given)\n"
            "  -r leaks               repair leaked clusters (safe)\n"
            "  -r all                 repair leaks and errors (back the image up first)\n"
            "  --output=human|json    output style; JSON keys are qemu-img's\n"
            "  -q                     quiet\n"
            "  -U, --force-share      read the image even while another process writes it\n"
            "                         (a running VM), as qemu-img -U; it may then look\n"
            "                         inconsistent; not with -r\n"
            "  -T SRC_CACHE           cache mode of FILE (see 'vdisk convert --help' for\n"
            "                         -t): with -r, unsafe does not wait for the disk\n"
            "\n"
            "Exit status, as qemu-img's: 0 no problems, 1 the check could not complete,\n"
            "2 corruptions found, 3 only leaks found, 63 the format has no check.\n",
    .examples = "  vdisk check disk.qcow2\n"
                "  vdisk check -r leaks disk.qcow2\n"
                "  vdisk check --output=json disk.qcow2\n",
    .run = run_check,
};
