/* vdisk map: where does each range of the guest disk come from? The output
 * is qemu-img map's, entry for entry: the same merging rules, the same JSON
 * line format and the same human table. */
#include <stdlib.h>

#include "cli.h"
#include "json-writer.h"

enum {
    OPT_START_OFFSET = CLI_OPT_FIRST_PRIVATE,
    OPT_MAX_LENGTH,
};

typedef struct {
    guint64 start;
    guint64 max_length; /* 0: to the end */
} MapOptions;

typedef struct {
    guint64 start;
    guint64 length;
    guint depth;
    gboolean present;
    gboolean zero;
    gboolean data;
    gboolean has_offset;
    guint64 offset;
    const char *filename; /* layer holding the data, when has_offset */
} MapEntry;

static gboolean map_option(int opt, const char *arg, gpointer data, GError **error)
{
    MapOptions *opts = data;

    switch (opt) {
    case 's':
    case OPT_START_OFFSET:
        return cli_parse_size("start offset", arg, &opts->start, error);
    case 'l':
    case OPT_MAX_LENGTH:
        return cli_parse_size("length", arg, &opts->max_length, error);
    case 'U':
        cli_force_share();
        return TRUE;
    default:
        return FALSE;
    }
}

/* Layers below img; qemu reports unallocated ranges at the bottom one. */
static guint chain_depth(VdImage *img)
{
    guint depth = 0;

    for (VdImage *b = vd_image_backing(img); b != NULL; b = vd_image_backing(b))
        depth++;
    return depth;
}

static gboolean get_entry(VdImage *img, guint bottom, guint64 offset, guint64 len, MapEntry *e,
                          GError **error)
{
    VdBlockStatus st = { 0 };

    if (!vd_image_block_status(img, offset, len, TRUE, &st, error))
        return FALSE;
    *e = (MapEntry){
        .start = offset,
        .length = MIN(st.length, len),
        .depth = (st.flags & VD_BLOCK_ALLOCATED) ? st.depth : bottom,
        .present = (st.flags & VD_BLOCK_ALLOCATED) != 0,
        .zero = (st.flags & VD_BLOCK_ZERO) != 0,
        .data = (st.flags & VD_BLOCK_DATA) != 0,
        .has_offset = (st.flags & VD_BLOCK_OFFSET_VALID) != 0,
        .offset = st.host_offset,
    };
    if (e->has_offset)
        e->filename = st.host_name != NULL ? st.host_name : vd_image_filename(img);
    return TRUE;
}

/* qemu's entry_mergeable: same status, same file, contiguous on the host. */
static gboolean mergeable(const MapEntry *a, const MapEntry *b)
{
    if (a->length == 0)
        return FALSE;
    if (a->zero != b->zero || a->data != b->data || a->depth != b->depth ||
        a->present != b->present || (a->filename == NULL) != (b->filename == NULL) ||
        a->has_offset != b->has_offset)
        return FALSE;
    if (a->filename != NULL && !g_str_equal(a->filename, b->filename))
        return FALSE;
    return !a->has_offset || a->offset + a->length == b->offset;
}

static gboolean dump_human(const MapEntry *e, MapEntry *next, GError **error)
{
    if (e->data && !e->has_offset) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "File contains external, encrypted or compressed clusters.");
        return FALSE;
    }
    if (e->data && !e->zero)
        printf("%#-16" G_GINT64_MODIFIER "x%#-16" G_GINT64_MODIFIER "x%#-16" G_GINT64_MODIFIER
               "x%s\n",
               e->start, e->length, e->has_offset ? e->offset : 0,
               e->filename != NULL ? e->filename : "");
    /* The table does not tell zero from unallocated; folding them together
     * lets more entries merge, as in qemu. */
    if (next != NULL && (!next->data || next->zero)) {
        next->data = FALSE;
        next->zero = TRUE;
    }
    return TRUE;
}

static void dump_json(const MapEntry *e, gboolean last)
{
    printf("{ \"start\": %" G_GUINT64_FORMAT ", \"length\": %" G_GUINT64_FORMAT
           ", \"depth\": %u, \"present\": %s, \"zero\": %s, \"data\": %s",
           e->start, e->length, e->depth, e->present ? "true" : "false", e->zero ? "true" : "false",
           e->data ? "true" : "false");
    if (e->has_offset)
        printf(", \"offset\": %" G_GUINT64_FORMAT, e->offset);
    putchar('}');
    if (!last)
        puts(",");
}

static gboolean dump_entry(CliOutput output, const MapEntry *e, MapEntry *next, GError **error)
{
    if (output == CLI_OUTPUT_JSON) {
        dump_json(e, next == NULL);
        return TRUE;
    }
    return dump_human(e, next, error);
}

static gboolean map_image(VdImage *img, CliOutput output, guint64 start, guint64 end,
                          GError **error)
{
    guint bottom = chain_depth(img);
    MapEntry curr = { .start = start };

    if (output == CLI_OUTPUT_JSON)
        putchar('[');
    else
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    while (curr.start + curr.length < end) {
        guint64 offset = curr.start + curr.length;
        MapEntry next;

        if (!get_entry(img, bottom, offset, end - offset, &next, error))
            return FALSE;
        if (mergeable(&curr, &next)) {
            curr.length += next.length;
            continue;
        }
        if (curr.length > 0 && !dump_entry(output, &curr, &next, error))
            return FALSE;
        curr = next;
    }
    if (curr.length > 0 && !dump_entry(output, &curr, NULL, error))
        return FALSE;
    if (output == CLI_OUTPUT_JSON)
        puts("]");
    return TRUE;
}

static int run_map(const CliCommand *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "output", required_argument, NULL, CLI_OPT_OUTPUT },
        { "start-offset", required_argument, NULL, OPT_START_OFFSET },
        { "max-length", required_argument, NULL, OPT_MAX_LENGTH },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    CliCommon common = { 0 };
    MapOptions opts = { 0 };
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = NULL;
    guint64 size, end;
    int first = cli_parse_options(cmd, argc, argv, "f:s:l:U", longopts, &common, map_option, &opts);

    if (first < 0 || !cli_check_operands(cmd, argc - first, 1, 1))
        return CLI_EXIT_FAILURE;
    img = cli_open_image(argv[first], common.format, 0, CLI_PROBE_QUIET, &error);
    if (img == NULL)
        return cli_fail(error);

    size = vd_image_size(img);
    end = size;
    if (opts.max_length != 0 && opts.start < size)
        end = MIN(size, opts.start + opts.max_length);
    if (!map_image(img, common.output, MIN(opts.start, size), end, &error)) {
        fflush(stdout);
        return cli_fail(error);
    }
    return EXIT_SUCCESS;
}

const CliCommand cli_cmd_map = {
    .name = "map",
    .summary = "show where the guest disk's data lies: holes, zeroes, host offsets",
    .usage = "  vdisk map [-f FMT] [--output=human|json] [--start-offset=OFFSET]\n"
             "            [--max-length=LEN] [-U] FILE",
    .help = "  -f FMT                 image format (probed when not given)\n"
            "  --output=human|json    human: the ranges holding data and where they lie\n"
            "                         in which file; json: every range, with qemu-img's\n"
            "                         keys (start, length, depth, present, zero, data,\n"
            "                         offset)\n"
            "  -s, --start-offset=OFFSET   begin at this guest offset\n"
            "  -l, --max-length=LEN        map at most LEN bytes\n"
            "  -U, --force-share      read FILE even while another process writes it\n"
            "                         (a running VM), as qemu-img -U; it may then look\n"
            "                         inconsistent\n",
    .examples = "  vdisk map disk.qcow2\n"
                "  vdisk map --output=json overlay.qcow2\n",
    .run = run_map,
};
