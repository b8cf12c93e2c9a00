#include "volume-formats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "vdisk.h"

typedef struct {
    char *format;
    dev_t dev;
    ino_t ino;
} Record;

struct VddFormatRecords {
    char *directory;     /* the pool's */
    char *file;          /* where its records are kept */
    GHashTable *by_name; /* name -> Record */
    GMutex lock;         /* jobs record the volumes they publish */
};

static void record_free(Record *r)
{
    g_free(r->format);
    g_free(r);
}

static const char *state_directory(void)
{
    /* systemd's StateDirectory= may list several; the first is vdiskd's. */
    static char *dir;
    if (dir == NULL) {
        const char *env = g_getenv("STATE_DIRECTORY");
        dir = env != NULL && *env != '\0' ? g_strndup(env, strcspn(env, ":"))
                                          : g_strdup(VDD_DEFAULT_STATE_DIR);
    }
    return dir;
}

/* One line per volume: FORMAT DEV INO NAME. Names never hold a control
 * character (names.c), so a line ends at the newline and the name is the
 * rest of it. */
static void parse(VddFormatRecords *self, const char *text)
{
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    for (guint i = 0; lines[i] != NULL; i++) {
        char format[32];
        unsigned long long dev, ino;
        int name_at = 0;
        if (lines[i][0] == '#' || lines[i][0] == '\0' ||
            sscanf(lines[i], "%31s %llu %llu %n", format, &dev, &ino, &name_at) != 3 ||
            name_at == 0 || lines[i][name_at] == '\0' || !vd_format_known(format))
            continue;
        Record *r = g_new0(Record, 1);
        r->format = g_strdup(format);
        r->dev = (dev_t)dev;
        r->ino = (ino_t)ino;
        g_hash_table_replace(self->by_name, g_strdup(lines[i] + name_at), r);
    }
}

VddFormatRecords *vdd_format_records_load(const char *directory)
{
    VddFormatRecords *self = g_new0(VddFormatRecords, 1);
    self->directory = g_strdup(directory);
    self->by_name =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)record_free);
    g_mutex_init(&self->lock);
    g_autofree char *sum = g_compute_checksum_for_string(G_CHECKSUM_SHA256, directory, -1);
    g_autofree char *base = g_strdup_printf("%.32s.formats", sum);
    self->file = g_build_filename(state_directory(), "formats", base, NULL);
    g_autofree char *text = NULL;
    g_autoptr(GError) error = NULL;
    if (g_file_get_contents(self->file, &text, NULL, &error))
        parse(self, text);
    else if (!g_error_matches(error, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        g_warning("pool folder %s: cannot read the recorded formats of its volumes: %s", directory,
                  error->message);
    return self;
}

void vdd_format_records_free(VddFormatRecords *self)
{
    if (self == NULL)
        return;
    g_hash_table_unref(self->by_name);
    g_mutex_clear(&self->lock);
    g_free(self->directory);
    g_free(self->file);
    g_free(self);
}

char *vdd_format_records_lookup(VddFormatRecords *self, const char *name, const struct stat *st)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&self->lock);
    Record *r = g_hash_table_lookup(self->by_name, name);
    return r != NULL && r->dev == st->st_dev && r->ino == st->st_ino ? g_strdup(r->format) : NULL;
}

/* Write the records to a new file, sync it, and rename it over the old
 * one: a crash leaves the old records or the new, never half of them. */
static gboolean save(VddFormatRecords *self)
{
    g_autoptr(GString) text = g_string_new(NULL);
    g_string_append_printf(text, "# vdiskd: formats of the volumes in %s\n", self->directory);
    GHashTableIter it;
    gpointer name, value;
    g_hash_table_iter_init(&it, self->by_name);
    while (g_hash_table_iter_next(&it, &name, &value)) {
        Record *r = value;
        g_string_append_printf(text, "%s %llu %llu %s\n", r->format, (unsigned long long)r->dev,
                               (unsigned long long)r->ino, (const char *)name);
    }
    g_autofree char *dir = g_path_get_dirname(self->file);
    g_autofree char *tmp = g_strdup_printf("%s.new-%d", self->file, (int)getpid());
    int fd = -1;
    gboolean ok =
        g_mkdir_with_parents(dir, 0700) == 0 &&
        (fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600)) >= 0 &&
        write(fd, text->str, text->len) == (ssize_t)text->len && fsync(fd) == 0;
    int err = errno;
    if (fd >= 0 && close(fd) < 0 && ok) {
        ok = FALSE;
        err = errno;
    }
    if (ok && rename(tmp, self->file) < 0) {
        ok = FALSE;
        err = errno;
    }
    if (!ok) {
        unlink(tmp);
        g_warning("cannot save the recorded volume formats of %s in %s: %s", self->directory,
                  self->file, g_strerror(err));
        return FALSE;
    }
    g_autoptr(GError) sync_error = NULL;
    if (!vd_sync_parent_dir(self->file, &sync_error))
        g_warning("%s", sync_error->message);
    return TRUE;
}

gboolean vdd_format_records_set(VddFormatRecords *self, const char *name, const struct stat *st,
                                const char *format)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&self->lock);
    Record *old = g_hash_table_lookup(self->by_name, name);
    if (old != NULL && old->dev == st->st_dev && old->ino == st->st_ino &&
        g_str_equal(old->format, format))
        return TRUE;
    Record *r = g_new0(Record, 1);
    r->format = g_strdup(format);
    r->dev = st->st_dev;
    r->ino = st->st_ino;
    g_hash_table_replace(self->by_name, g_strdup(name), r);
    return save(self);
}

void vdd_format_records_forget(VddFormatRecords *self, const char *name)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&self->lock);
    if (g_hash_table_remove(self->by_name, name))
        save(self);
}
