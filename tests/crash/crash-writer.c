/* crash-writer: a guest for the crash suite. It drives the fault-injecting
 * engine through a seeded sequence of writes, zeroings, discards and
 * flushes on an open image (what a VM does to its disk; vdisk has no
 * command for it), and afterwards checks what a crash left:
 *
 *   crash-writer fill FILE SIZE
 *       write the backing pattern into a new raw FILE
 *   crash-writer run IMAGE SEED OPS LOG
 *       run OPS operations; after each flush that succeeded, append the
 *       number of operations it covers to LOG (synced, outside the engine)
 *   crash-writer verify IMAGE SEED OPS LOG zero|backing [lost-reads-zero]
 *       open IMAGE read-only and check every sector: what the last logged
 *       flush covered reads as written then; any other sector reads as
 *       something it held since (old or new content), never anything else;
 *       with lost-reads-zero, a sector of a write after that flush may also
 *       read as zeroes (its new cluster's data was lost, not its entry)
 *
 * Every sector the writer stores names the operation and sector it came
 * from and is otherwise filled from them, so a sector's content tells
 * where it came from, and a torn or misplaced sector is recognised. */
#include "vdisk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SECTOR 512
#define MAGIC 0x56444b43524153ULL /* "VDKCRAS" */
#define BACKING_OP G_MAXUINT32

/* A sector's possible contents: an operation's index, or these. */
#define VALUE_ZERO (-1)
#define VALUE_BACKING (-2)

typedef enum { OP_WRITE, OP_ZERO, OP_DISCARD, OP_FLUSH } OpKind;

typedef struct {
    OpKind kind;
    guint64 sector;
    guint64 count;
    gboolean may_unmap;
} Op;

static void fill_sector(guint8 *buf, guint32 op, guint64 sector)
{
    guint64 state = ((guint64)op << 40) ^ sector ^ 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < SECTOR; i += 8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        memcpy(buf + i, &state, 8);
    }
    guint64 magic = GUINT64_TO_LE(MAGIC), s = GUINT64_TO_LE(sector);
    guint32 o = GUINT32_TO_LE(op);
    memcpy(buf, &magic, 8);
    memcpy(buf + 8, &s, 8);
    memcpy(buf + 16, &o, 4);
}

/* What a sector read back holds: VALUE_ZERO, VALUE_BACKING, an operation
 * index, or G_MININT64 for anything else. */
static gint64 classify(const guint8 *buf, guint64 sector)
{
    static const guint8 zero[SECTOR];
    if (memcmp(buf, zero, SECTOR) == 0)
        return VALUE_ZERO;
    guint64 magic, s;
    guint32 op;
    memcpy(&magic, buf, 8);
    memcpy(&s, buf + 8, 8);
    memcpy(&op, buf + 16, 4);
    if (GUINT64_FROM_LE(magic) != MAGIC || GUINT64_FROM_LE(s) != sector)
        return G_MININT64;
    guint8 expect[SECTOR];
    fill_sector(expect, GUINT32_FROM_LE(op), sector);
    if (memcmp(buf, expect, SECTOR) != 0)
        return G_MININT64;
    return GUINT32_FROM_LE(op) == BACKING_OP ? VALUE_BACKING : (gint64)GUINT32_FROM_LE(op);
}

static GArray *make_ops(guint32 seed, guint n, guint64 sectors)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(seed);
    /* CRASH_WRITER_LONG: the longest run in sectors (default 512), more
     * to free whole blocks of a format with large ones (VDI). */
    const char *env = g_getenv("CRASH_WRITER_LONG");
    guint64 long_run = env != NULL ? g_ascii_strtoull(env, NULL, 10) : 512;
    GArray *ops = g_array_new(FALSE, TRUE, sizeof(Op));
    for (guint i = 0; i < n; i++) {
        Op op = { 0 };
        int r = g_rand_int_range(rand, 0, 100);
        op.kind = r < 60 ? OP_WRITE : r < 72 ? OP_ZERO : r < 84 ? OP_DISCARD : OP_FLUSH;
        /* Mostly short runs, which copy on write from the backing file;
         * sometimes runs of several clusters. */
        guint64 max = g_rand_int_range(rand, 0, 4) == 0 ? long_run : 16;
        op.count = (guint64)g_rand_int_range(rand, 1, (gint32)max + 1);
        op.count = MIN(op.count, sectors);
        op.sector = (guint64)g_rand_int_range(rand, 0, (gint32)(sectors - op.count + 1));
        op.may_unmap = g_rand_boolean(rand);
        g_array_append_val(ops, op);
    }
    return ops;
}

static void die(GError *error)
{
    fprintf(stderr, "crash-writer: %s\n", error->message);
    exit(1);
}

static int cmd_fill(const char *path, guint64 size)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        return 1;
    }
    guint8 buf[SECTOR];
    for (guint64 s = 0; s < size / SECTOR; s++) {
        fill_sector(buf, BACKING_OP, s);
        fwrite(buf, 1, SECTOR, f);
    }
    return fclose(f) == 0 ? 0 : 1;
}

static void log_flushed(int log_fd, guint done)
{
    char line[32];
    int n = g_snprintf(line, sizeof(line), "%u\n", done);
    if (write(log_fd, line, (size_t)n) != n || fsync(log_fd) < 0) {
        perror("log");
        exit(1);
    }
}

static int cmd_run(const char *path, guint32 seed, guint n, const char *log_path)
{
    GError *error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, NULL, VD_OPEN_READ_WRITE, &error);
    if (img == NULL)
        die(error);
    guint64 sectors = vd_image_size(img) / SECTOR;
    g_autoptr(GArray) ops = make_ops(seed, n, sectors);
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
        perror(log_path);
        return 1;
    }
    g_autofree guint8 *buf = g_malloc(MIN(sectors, 65536) * SECTOR);
    for (guint i = 0; i < ops->len; i++) {
        Op *op = &g_array_index(ops, Op, i);
        guint64 offset = op->sector * SECTOR, len = op->count * SECTOR;
        gboolean ok = TRUE;
        switch (op->kind) {
        case OP_WRITE:
            for (guint64 s = 0; s < op->count; s++)
                fill_sector(buf + s * SECTOR, i, op->sector + s);
            ok = vd_image_write(img, offset, buf, len, &error);
            break;
        case OP_ZERO:
            ok = vd_image_write_zeroes(img, offset, len, op->may_unmap, &error);
            break;
        case OP_DISCARD:
            ok = vd_image_discard(img, offset, len, &error);
            break;
        case OP_FLUSH:
            ok = vd_image_flush(img, &error);
            if (ok)
                log_flushed(log_fd, i);
            break;
        }
        if (!ok)
            die(error);
    }
    if (!vd_image_flush(img, &error))
        die(error);
    log_flushed(log_fd, ops->len);
    g_clear_pointer(&img, vd_image_unref);
    close(log_fd);
    return 0;
}

static guint last_flushed(const char *log_path)
{
    g_autofree char *text = NULL;
    if (!g_file_get_contents(log_path, &text, NULL, NULL))
        return 0;
    guint last = 0;
    g_auto(GStrv) lines = g_strsplit(text, "\n", 0);
    for (guint i = 0; lines[i] != NULL; i++)
        if (*lines[i] != '\0')
            last = (guint)g_ascii_strtoull(lines[i], NULL, 10);
    return last;
}

static gboolean array_has(GArray *values, gint64 v)
{
    for (guint i = 0; i < values->len; i++)
        if (g_array_index(values, gint64, i) == v)
            return TRUE;
    return FALSE;
}

static void array_add(GArray *values, gint64 v)
{
    if (!array_has(values, v))
        g_array_append_val(values, v);
}

static int cmd_verify(const char *path, guint32 seed, guint n, const char *log_path,
                      const char *initial, gboolean lost_reads_zero)
{
    GError *error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, NULL, 0, &error);
    if (img == NULL)
        die(error);
    guint64 sectors = vd_image_size(img) / SECTOR;
    g_autoptr(GArray) ops = make_ops(seed, n, sectors);
    guint flushed = last_flushed(log_path);
    gint64 start = g_str_equal(initial, "backing") ? VALUE_BACKING : VALUE_ZERO;

    /* state[s]: what sector s may hold once the flushed operations are
     * done (a discard leaves a choice); allowed[s] adds what any later
     * operation may have put there. */
    GArray **state = g_new0(GArray *, sectors);
    GArray **allowed = g_new0(GArray *, sectors);
    for (guint64 s = 0; s < sectors; s++) {
        state[s] = g_array_new(FALSE, FALSE, sizeof(gint64));
        array_add(state[s], start);
    }
    for (guint i = 0; i < ops->len; i++) {
        if (i == flushed)
            for (guint64 s = 0; s < sectors; s++)
                allowed[s] = g_array_copy(state[s]);
        Op *op = &g_array_index(ops, Op, i);
        for (guint64 s = op->sector; s < op->sector + op->count && op->kind != OP_FLUSH; s++) {
            gint64 v = op->kind == OP_WRITE ? (gint64)i : VALUE_ZERO;
            if (op->kind == OP_DISCARD) {
                /* A discard reads as zeroes or as the backing file, or
                 * may be ignored. */
                array_add(state[s], VALUE_ZERO);
                if (start == VALUE_BACKING)
                    array_add(state[s], VALUE_BACKING);
            } else {
                g_array_set_size(state[s], 0);
                array_add(state[s], v);
            }
            if (i >= flushed) {
                for (guint j = 0; j < state[s]->len; j++)
                    array_add(allowed[s], g_array_index(state[s], gint64, j));
                /* Unflushed new data may be lost under a cluster entry
                 * that was not: the new cluster reads as zeroes. */
                if (lost_reads_zero && op->kind == OP_WRITE)
                    array_add(allowed[s], VALUE_ZERO);
            }
        }
    }
    if (flushed >= ops->len)
        for (guint64 s = 0; s < sectors; s++)
            allowed[s] = g_array_copy(state[s]);

    int bad = 0;
    guint8 buf[64 * SECTOR];
    for (guint64 s = 0; s < sectors; s += 64) {
        guint64 count = MIN(64, sectors - s);
        if (!vd_image_read(img, s * SECTOR, buf, count * SECTOR, &error))
            die(error);
        for (guint64 k = 0; k < count; k++) {
            gint64 v = classify(buf + k * SECTOR, s + k);
            if (array_has(allowed[s + k], v))
                continue;
            if (bad++ < 5) {
                g_autoptr(GString) want = g_string_new(NULL);
                for (guint j = 0; j < allowed[s + k]->len; j++)
                    g_string_append_printf(want, " %" G_GINT64_FORMAT,
                                           g_array_index(allowed[s + k], gint64, j));
                fprintf(stderr,
                        "sector %" G_GUINT64_FORMAT ": holds %s%" G_GINT64_FORMAT
                        ", allowed:%s (flushed through op %u)\n",
                        s + k, v == G_MININT64 ? "garbage " : "", v == G_MININT64 ? 0 : v,
                        want->str, flushed);
            }
        }
    }
    for (guint64 s = 0; s < sectors; s++) {
        g_array_unref(state[s]);
        g_array_unref(allowed[s]);
    }
    g_free(state);
    g_free(allowed);
    if (bad > 0) {
        fprintf(stderr, "%d sectors hold what no operation left there\n", bad);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && g_str_equal(argv[1], "fill"))
        return cmd_fill(argv[2], g_ascii_strtoull(argv[3], NULL, 10));
    if (argc == 6 && g_str_equal(argv[1], "run"))
        return cmd_run(argv[2], (guint32)g_ascii_strtoull(argv[3], NULL, 10),
                       (guint)g_ascii_strtoull(argv[4], NULL, 10), argv[5]);
    if ((argc == 7 || argc == 8) && g_str_equal(argv[1], "verify"))
        return cmd_verify(argv[2], (guint32)g_ascii_strtoull(argv[3], NULL, 10),
                          (guint)g_ascii_strtoull(argv[4], NULL, 10), argv[5], argv[6],
                          argc == 8 && g_str_equal(argv[7], "lost-reads-zero"));
    fprintf(stderr, "usage: crash-writer fill FILE SIZE | run IMAGE SEED OPS LOG |\n"
                    "       verify IMAGE SEED OPS LOG zero|backing [lost-reads-zero]\n");
    return 2;
}
