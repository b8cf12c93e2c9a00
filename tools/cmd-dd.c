/* vdisk dd: copy part of an image into a new one, with dd's operands, as
 * qemu-img dd does. The output is created anew (as -O FMT, raw by
 * default) with the size of what is copied; count limits the input to its
 * first count blocks, skipped ones included, as qemu-img counts them. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Copies go through a buffer of this size whatever bs is: the result is
 * the same, and a bs of 2G needs no 2 GiB of memory. */
#define DD_CHUNK (1u << 20)
#define DD_MAX_BS G_MAXINT32

typedef struct {
    const char *input;  /* if= */
    const char *output; /* of= */
    guint64 bs;         /* bs=, 512 by default */
    guint64 count;      /* count=, with has_count */
    guint64 skip;       /* skip= */
    gboolean has_count;
} DdOperands;

static gboolean dd_option(int opt, const char *arg, gpointer data, GError **error)
{
    const char **out_format = data;

    if (opt == 'O') {
        *out_format = arg;
        return TRUE;
    }
    if (opt == 'U') {
        cli_force_share();
        return TRUE;
    }
    return cli_secrets_option(opt, arg, error);
}

static gboolean parse_number(const char *key, const char *value, guint64 *out, GError **error)
{
    if (vd_parse_size(value, out, NULL) && *out <= G_MAXINT64)
        return TRUE;
    g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                "Invalid %s specified: '%s' is not a number (the k, M, G, T, P and E suffixes "
                "may be used)",
                key, value);
    return FALSE;
}

/* if=, of=, bs=, count=, skip=; a later one wins, as in qemu-img. */
static gboolean parse_operands(int argc, char **argv, DdOperands *ops, GError **error)
{
    for (int i = 0; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        g_autofree char *key = eq != NULL ? g_strndup(argv[i], eq - argv[i]) : NULL;
        const char *value = eq != NULL ? eq + 1 : NULL;

        if (key == NULL) {
            g_set_error(
                error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                "unrecognized operand %s: operands are if=, of=, bs=, count= and skip=", argv[i]);
            return FALSE;
        }
        if (g_str_equal(key, "if")) {
            ops->input = value;
        } else if (g_str_equal(key, "of")) {
            ops->output = value;
        } else if (g_str_equal(key, "bs")) {
            if (!parse_number("bs", value, &ops->bs, error))
                return FALSE;
            if (ops->bs == 0 || ops->bs > DD_MAX_BS) {
                g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                            "Invalid bs specified. Must be between 1 and %d.", DD_MAX_BS);
                return FALSE;
            }
        } else if (g_str_equal(key, "count")) {
            if (!parse_number("count", value, &ops->count, error))
                return FALSE;
            ops->has_count = TRUE;
        } else if (g_str_equal(key, "skip")) {
            if (!parse_number("skip", value, &ops->skip, error))
                return FALSE;
        } else {
            g_set_error(
                error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                "unrecognized operand %s: operands are if=, of=, bs=, count= and skip=", key);
            return FALSE;
        }
    }
    if (ops->input == NULL || ops->output == NULL) {
        g_set_error_literal(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                            "Must specify both input and output files (if=FILE of=FILE)");
        return FALSE;
    }
    return TRUE;
}

typedef struct {
    VdImage *in;
    VdImage *out;
    guint64 start; /* first input byte copied */
    guint64 end;   /* input byte after the last one copied */
} DdJob;

static gboolean all_zero(const guint8 *buf, gsize len)
{
    return len == 0 || (buf[0] == 0 && memcmp(buf, buf + 1, len - 1) == 0);
}

static gboolean dd_job(gpointer data, GCancellable *cancellable, GError **error)
{
    DdJob *job = data;
    guint64 in_size = vd_image_size(job->in);
    gboolean zero_init = vd_image_has_zero_init(job->out);
    g_autofree guint8 *buf = g_malloc(DD_CHUNK);

    for (guint64 pos = job->start; pos < job->end;) {
        gsize len = (gsize)MIN(job->end - pos, DD_CHUNK);
        /* The input ends on a 512-byte boundary for qemu; past its real
         * end it reads zeroes. */
        gsize have = pos < in_size ? (gsize)MIN(len, in_size - pos) : 0;
        guint64 out_pos = pos - job->start;

        if (g_cancellable_set_error_if_cancelled(cancellable, error))
            return FALSE;
        if (have > 0 && !vd_image_read(job->in, pos, buf, have, error))
            return FALSE;
        memset(buf + have, 0, len - have);
        if (!all_zero(buf, len)) {
            if (!vd_image_write(job->out, out_pos, buf, len, error))
                return FALSE;
        } else if (!zero_init && !vd_image_write_zeroes(job->out, out_pos, len, TRUE, error)) {
            return FALSE;
        }
        pos += len;
    }
    return vd_image_flush(job->out, error);
}

static int run_dd(const CliCommand *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    CliCommon common = { 0 };
    const char *out_format = NULL;
    DdOperands ops = { .bs = 512 };
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) in = NULL;
    g_autoptr(VdImage) out = NULL;
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    DdJob job = { 0 };
    guint64 size;
    int first;

    first = cli_parse_options(cmd, argc, argv, "f:O:U", longopts, &common, dd_option, &out_format);
    if (first < 0)
        return CLI_EXIT_FAILURE;
    if (!parse_operands(argc - first, argv + first, &ops, &error))
        return cli_fail(error);
    if (out_format == NULL &&
        (out_format = cli_target_format_from_name(ops.output, "-O", FALSE, FALSE, &error)) == NULL)
        return cli_fail(error);
    if (!cli_check_format(out_format) ||
        (common.format != NULL && !cli_check_format(common.format)))
        return CLI_EXIT_FAILURE;

    in = cli_open_image(ops.input, common.format, 0, CLI_PROBE_QUIET, &error);
    if (in == NULL)
        return cli_fail(error);
    size = (vd_image_size(in) + 511) / 512 * 512;
    if (ops.has_count && ops.count <= G_MAXINT64 / ops.bs && ops.count * ops.bs < size)
        size = ops.count * ops.bs;
    job.in = in;
    job.end = size;
    if (ops.skip > G_MAXINT64 / ops.bs || ops.skip * ops.bs > size) {
        /* qemu-img says so, makes an empty output and succeeds. */
        cli_error("%s: cannot skip to specified offset: skip=%" G_GUINT64_FORMAT
                  " blocks of %" G_GUINT64_FORMAT " bytes lie past its end",
                  ops.input, ops.skip, ops.bs);
        job.start = job.end = 0;
    } else {
        job.start = ops.skip * ops.bs;
    }
    if (!vd_image_create(ops.output, out_format, (job.end - job.start + 511) / 512 * 512, NULL,
                         &error)) {
        g_prefix_error(&error, "error while creating output image: ");
        return cli_fail(error);
    }
    /* --image-opts is for the input only, as in qemu-img dd. */
    out = cli_open_image_with_keys(ops.output, out_format, NULL, VD_OPEN_READ_WRITE, &error);
    if (out == NULL)
        return cli_fail(error);
    job.out = out;
    if (!cli_run_job(dd_job, &job, cancellable, NULL, NULL, 0, &error))
        return cli_fail(error);
    return EXIT_SUCCESS;
}

const CliCommand cli_cmd_dd = {
    .name = "dd",
    .summary = "copy part of an image into a new one, with dd's operands",
    .usage = "  vdisk dd [-f FMT] [-O OUTPUT_FMT] [-U] [bs=BYTES] [count=BLOCKS]\n"
             "           [skip=BLOCKS] if=INPUT of=OUTPUT",
    .help = "  if=INPUT               the image to read (any format vdisk reads)\n"
            "  of=OUTPUT              the image to create; an existing file is replaced\n"
            "  bs=BYTES               block size, 512 by default, at most 2147483647\n"
            "  count=BLOCKS           copy only up to the end of the first BLOCKS input\n"
            "                         blocks (skipped blocks count, as in qemu-img)\n"
            "  skip=BLOCKS            start BLOCKS blocks into the input; past its end,\n"
            "                         an empty output is made (with a message)\n"
            "  -f FMT                 INPUT's format (probed when not given)\n"
            "  -O OUTPUT_FMT          OUTPUT's format, raw by default\n"
            "  -U, --force-share      read INPUT even while another process writes it\n"
            "  --object secret,id=ID,file=PATH, --image-opts   as for convert\n"
            "\n"
            "Numbers take the suffixes k, M, G, T, P and E. The input's size counts in\n"
            "whole 512-byte sectors, and so does the output's, as in qemu-img; zero\n"
            "blocks are left unallocated in the output.\n",
    .examples = "  vdisk dd if=disk.qcow2 of=mbr.raw bs=512 count=1\n"
                "  vdisk dd -O qcow2 if=disk.raw of=tail.qcow2 bs=1M skip=1024\n",
    .run = run_dd,
};
