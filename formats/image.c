/* The generic image layer: one handle over every format. It picks the
 * driver, opens the backing chain, answers reads of unallocated ranges from
 * the backing file, serialises driver calls and says "not supported by FMT"
 * for what a driver leaves out. */
#include "vdisk-driver.h"

#include "blkdebug.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

/* Longer chains than this are refused: each layer holds a descriptor, and a
 * loop that escaped the identity check would otherwise never end. */
#define MAX_CHAIN_DEPTH 256
#define PROBE_BYTES 4096

static const VdDriver *const drivers[] = {
    &vd_driver_raw, &vd_driver_qcow2, &vd_driver_qcow, &vd_driver_cow,
    &vd_driver_vdi, &vd_driver_vmdk,  &vd_driver_luks, &vd_driver_vpc,
};

static const char *format_names[G_N_ELEMENTS(drivers) + 1];

const char *const *vd_formats(void)
{
    static gsize done = 0;
    if (g_once_init_enter(&done)) {
        for (gsize i = 0; i < G_N_ELEMENTS(drivers); i++)
            format_names[i] = drivers[i]->name;
        g_once_init_leave(&done, 1);
    }
    return format_names;
}

static const VdDriver *find_driver(const char *format)
{
    for (gsize i = 0; i < G_N_ELEMENTS(drivers); i++)
        if (g_str_equal(drivers[i]->name, format))
            return drivers[i];
    return NULL;
}

static const VdDriver *require_driver(const char *format, GError **error)
{
    const VdDriver *drv = find_driver(format);
    if (drv == NULL) {
        g_autofree char *known = g_strjoinv(", ", (char **)vd_formats());
        g_set_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT,
                    "unknown image format '%s' (known: %s)", format, known);
    }
    return drv;
}

gboolean vd_format_known(const char *format) { return find_driver(format) != NULL; }

const VdCreateOption *vd_format_create_option_table(const char *format)
{
    const VdDriver *drv = find_driver(format);
    return drv != NULL ? drv->create_options : NULL;
}

/* Options of the image file itself, which every format takes (qemu's
 * file layer: they follow the format's own in its "Formatting" line). */
static const VdCreateOption file_create_options[] = {
    { "nocow", VD_OPTION_BOOL, NULL, "Turn off copy-on-write (valid only on btrfs)", TRUE },
    { "extent_size_hint", VD_OPTION_SIZE, NULL, "Extent size hint for the image file, 0 to disable",
      TRUE },
    { NULL },
};

gboolean vd_image_require_writable(VdImage *img, GError **error)
{
    if (img->read_write)
        return TRUE;
    vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT, "image is open read-only");
    return FALSE;
}

const VdCreateOption *vd_file_create_option_table(void) { return file_create_options; }

static gboolean in_table(const VdCreateOption *table, const char *key)
{
    for (const VdCreateOption *o = table; o != NULL && o->name != NULL; o++) {
        if (g_str_equal(o->name, key))
            return TRUE;
    }
    return FALSE;
}

static gboolean create_option_known(const VdDriver *drv, const char *key)
{
    return in_table(drv->create_options, key) || in_table(file_create_options, key);
}

/* nocow and extent_size_hint on the new file, where its file system
 * has them; elsewhere they change nothing, as in qemu. */
static void apply_file_options(VdFile *file, VdOptions *opts)
{
    gboolean nocow = FALSE;
    guint64 hint = 0;
    int fd = vd_file_fd(file);

    if (vd_option_bool(opts, "nocow", FALSE, &nocow, NULL) && nocow) {
        int attr = 0;
        if (ioctl(fd, FS_IOC_GETFLAGS, &attr) == 0) {
            attr |= FS_NOCOW_FL;
            (void)ioctl(fd, FS_IOC_SETFLAGS, &attr);
        }
    }
    if (vd_options_get(opts, "extent_size_hint") != NULL &&
        vd_option_size(opts, "extent_size_hint", 0, &hint, NULL) && hint > 0 &&
        hint <= G_MAXUINT32) {
        struct fsxattr attr;
        if (ioctl(fd, FS_IOC_FSGETXATTR, &attr) == 0) {
            attr.fsx_xflags |= FS_XFLAG_EXTSIZE;
            attr.fsx_extsize = (guint32)hint;
            (void)ioctl(fd, FS_IOC_FSSETXATTR, &attr);
        }
    }
}

static void add_names(GStrvBuilder *b, const VdCreateOption *table)
{
    for (const VdCreateOption *o = table; o != NULL && o->name != NULL; o++)
        g_strv_builder_add(b, o->name);
}

const char *const *vd_format_create_options(const char *format)
{
    /* The names, made once per driver from its table. */
    static GMutex lock;
    static GHashTable *names; /* driver -> char** */
    const VdDriver *drv = find_driver(format);
    char **list;

    if (drv == NULL || drv->create_options == NULL)
        return NULL;
    g_mutex_lock(&lock);
    if (names == NULL)
        names = g_hash_table_new(NULL, NULL);
    list = g_hash_table_lookup(names, drv);
    if (list == NULL) {
        g_autoptr(GStrvBuilder) b = g_strv_builder_new();
        add_names(b, drv->create_options);
        add_names(b, file_create_options);
        list = g_strv_builder_end(b);
        g_hash_table_insert(names, (gpointer)drv, list);
    }
    g_mutex_unlock(&lock);
    return (const char *const *)list;
}

/* A value as qemu-img's "Formatting" line shows it: sizes and numbers as
 * the integer qemu reads from them, other values as given. */
static char *shown_value(const VdCreateOption *o, const char *value)
{
    guint64 n = 0;

    if (o->type == VD_OPTION_SIZE && vd_parse_size(value, &n, NULL))
        return g_strdup_printf("%" G_GUINT64_FORMAT, n);
    if (o->type == VD_OPTION_NUMBER) {
        char *end = NULL;
        errno = 0;
        n = g_ascii_strtoull(value, &end, 0);
        if (errno == 0 && end != value && *end == '\0')
            return g_strdup_printf("%" G_GUINT64_FORMAT, n);
    }
    /* As qemu prints an option list: a comma in a value doubled. */
    g_auto(GStrv) parts = g_strsplit(value, ",", -1);
    return g_strjoinv(",,", parts);
}

char *vd_format_describe_create(const char *path, const char *format, guint64 size, VdOptions *opts)
{
    const VdDriver *drv = find_driver(format);
    g_autoptr(GPtrArray) keys = vd_options_keys(opts);
    GString *line = g_string_new(NULL);
    gboolean size_shown = FALSE;

    g_string_append_printf(line, "Formatting '%s', fmt=%s", path, format);
    const VdCreateOption *tables[] = { drv != NULL ? drv->create_options : NULL,
                                       file_create_options };
    for (gsize t = 0; t < G_N_ELEMENTS(tables); t++) {
        for (const VdCreateOption *o = tables[t]; o != NULL && o->name; o++) {
            if (g_str_equal(o->name, "size")) {
                g_string_append_printf(line, " size=%" G_GUINT64_FORMAT, size);
                size_shown = TRUE;
                continue;
            }
            const char *value = vd_options_get(opts, o->name);
            if (value == NULL)
                value = o->shown_default;
            if (value != NULL) {
                g_autofree char *shown = shown_value(o, value);
                g_string_append_printf(line, " %s=%s", o->name, shown);
            }
        }
    }
    if (!size_shown)
        g_string_append_printf(line, " size=%" G_GUINT64_FORMAT, size);
    /* Keys the format does not take: creating will name them in its
     * error, but the line shows what was asked for. */
    for (guint i = 0; i < keys->len; i++) {
        const char *key = keys->pdata[i];
        if (!g_str_equal(key, "size") && (drv == NULL || !create_option_known(drv, key)))
            g_string_append_printf(line, " %s=%s", key, vd_options_get(opts, key));
    }
    return g_string_free(line, FALSE);
}

const char *vd_format_from_extension(const char *filename)
{
    static const struct {
        const char *ext;
        const char *format;
    } map[] = {
        { ".qcow2", "qcow2" }, { ".qcow", "qcow" }, { ".vdi", "vdi" }, { ".vmdk", "vmdk" },
        { ".cow", "cow" },     { ".raw", "raw" },   { ".img", "raw" }, { ".iso", "raw" },
        { ".luks", "luks" },   { ".vhd", "vpc" },
    };
    g_autofree char *lower = g_ascii_strdown(filename, -1);
    for (gsize i = 0; i < G_N_ELEMENTS(map); i++)
        if (g_str_has_suffix(lower, map[i].ext) && vd_format_known(map[i].format))
            return map[i].format;
    return NULL;
}

static const VdDriver *probe_buffer(const guint8 *buf, gsize len, const char *filename,
                                    gboolean *fell_back)
{
    const VdDriver *best = &vd_driver_raw;
    int best_score = 0;
    for (gsize i = 0; i < G_N_ELEMENTS(drivers); i++) {
        if (drivers[i]->probe == NULL)
            continue;
        int score = drivers[i]->probe(buf, len, filename);
        if (score > best_score) {
            best_score = score;
            best = drivers[i];
        }
    }
    if (fell_back != NULL)
        *fell_back = best_score == 0;
    return best;
}

static const VdDriver *probe_file(VdFile *file, gboolean *fell_back, GError **error)
{
    guint8 buf[PROBE_BYTES];
    if (!vd_file_pread_zero_past_eof(file, 0, buf, sizeof buf, error))
        return NULL;
    const VdDriver *drv = probe_buffer(buf, sizeof buf, vd_file_name(file), fell_back);
    /* A fixed VHD is raw data with its footer at the end. */
    if (drv == &vd_driver_raw && vd_vpc_probe_footer(file)) {
        if (fell_back != NULL)
            *fell_back = FALSE;
        return &vd_driver_vpc;
    }
    return drv;
}

/* What probing picks for an open file, an OVA included. */
static const char *probe_open_file(VdFile *file, gboolean *fell_back_to_raw, GError **error)
{
    if (vd_ova_probe(file)) {
        if (fell_back_to_raw != NULL)
            *fell_back_to_raw = FALSE;
        return "ova";
    }
    const VdDriver *drv = probe_file(file, fell_back_to_raw, error);
    return drv != NULL ? drv->name : NULL;
}

const char *vd_probe_file(const char *path, gboolean *fell_back_to_raw, GError **error)
{
    g_autoptr(VdFile) file = vd_nbd_is_name(path)   ? vd_file_open_nbd(path, NULL, FALSE, error)
                             : vd_rbd_is_name(path) ? vd_file_open_rbd(path, FALSE, error)
                                                    : vd_file_open(path, FALSE, error);
    return file != NULL ? probe_open_file(file, fell_back_to_raw, error) : NULL;
}

const char *vd_probe_fd(int fd, const char *name, gboolean *fell_back_to_raw, GError **error)
{
    g_autoptr(VdFile) file = vd_file_open_fd(fd, name, error);
    return file != NULL ? probe_open_file(file, fell_back_to_raw, error) : NULL;
}

/* ----- paths of files named inside images ----- */

char *vd_resolve_relative(const char *image_filename, const char *name)
{
    /* An image named without a folder keeps its relative names as they are
     * ("a.qcow2", not "./a.qcow2"), as qemu-img prints them. A json: name
     * is options, not a path; an image under blkdebug has its folder. */
    image_filename = vd_blkdebug_image_name(image_filename);
    if (g_path_is_absolute(name) || strchr(image_filename, '/') == NULL ||
        g_str_has_prefix(name, "json:"))
        return g_strdup(name);
    g_autofree char *dir = g_path_get_dirname(image_filename);
    return g_build_filename(dir, name, NULL);
}

/* ----- image locks ----- */

/* Lock a file that an open with flags touches (file-lock.c); on a conflict
 * file is closed and NULL returned. */
static VdFile *lock_or_close(VdFile *file, VdOpenFlags flags, gboolean read_write, GError **error)
{
    VdLockMode mode;
    if (file == NULL || !vd_lock_mode_for_open(flags, read_write, &mode))
        return file;
    if (!vd_file_lock(file, mode, error)) {
        vd_file_close(file);
        return NULL;
    }
    return file;
}

/* The lock flags the open options ask for: "locking=off" (or
 * "file.locking=off", qemu's --image-opts spelling) and "force-share=on";
 * then refuse force-share with writing, in qemu's words. */
static gboolean apply_lock_options(const char *name, VdOptions *opts, VdOpenFlags *flags,
                                   GError **error)
{
    const char *locking = vd_options_get(opts, "file.locking");
    if (locking == NULL)
        locking = vd_options_get(opts, "locking");
    if (g_strcmp0(locking, "off") == 0)
        *flags |= VD_OPEN_NO_LOCKING;
    else if (locking != NULL && !g_str_equal(locking, "on") && !g_str_equal(locking, "auto")) {
        vd_set_file_error(error, name, VD_ERROR_INVALID_ARGUMENT,
                          "locking must be 'on', 'off' or 'auto', not '%s'", locking);
        return FALSE;
    }
    gboolean force_share = FALSE;
    if (vd_options_get(opts, "force-share") != NULL &&
        !vd_option_bool(opts, "force-share", FALSE, &force_share, error))
        return FALSE;
    if (force_share)
        *flags |= VD_OPEN_FORCE_SHARE;
    if ((*flags & VD_OPEN_FORCE_SHARE) && (*flags & VD_OPEN_READ_WRITE)) {
        vd_set_file_error(error, name, VD_ERROR_INVALID_ARGUMENT,
                          "force-share=on can only be used with read-only images");
        return FALSE;
    }
    return TRUE;
}

/* The file of an image opened by path, locked as flags and the lock
 * options in opts (may be NULL) ask; *flags gains what the options add. */
static VdFile *open_locked(const char *path, VdOptions *opts, VdOpenFlags *flags, GError **error)
{
    if (!apply_lock_options(path, opts, flags, error))
        return NULL;
    gboolean rw = (*flags & VD_OPEN_READ_WRITE) != 0;
    if (vd_nbd_is_name(path)) /* another host's disk: its server locks it */
        return vd_file_open_nbd(path, opts, rw, error);
    if (vd_rbd_is_name(path)) /* a Ceph image: librbd's exclusive lock guards it */
        return vd_file_open_rbd(path, rw, error);
    return lock_or_close(vd_file_open(path, rw, error), *flags, rw, error);
}

/* ----- open and close ----- */

static VdImage *image_new(VdFile *file, const char *filename, const VdDriver *drv,
                          VdOpenFlags flags)
{
    VdImage *img = g_new0(VdImage, 1);
    img->refcount = 1;
    img->drv = drv;
    img->file = file;
    img->filename = g_strdup(filename);
    img->flags = flags;
    img->read_write = (flags & VD_OPEN_READ_WRITE) != 0;
    if (file != NULL) /* NULL: an image that is no file (null-co) */
        vd_file_set_no_flush(file, (flags & VD_OPEN_NO_FLUSH) != 0);
    g_mutex_init(&img->lock);
    return img;
}

/* The identity of an open file, to catch backing chains that loop. */
static char *file_identity(VdFile *file)
{
    struct stat st;
    if (fstat(vd_file_fd(file), &st) < 0)
        return NULL;
    return g_strdup_printf("%ju:%ju", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino);
}

/* What one open call carries down the backing chain: the files seen so far
 * (to catch loops), the key options and secrets of encrypted layers, where
 * the names images carry may lead and how much metadata may still be read. */
struct VdOpenContext {
    GHashTable *seen;
    VdOptions *open_options;
    VdSecrets *secrets;
    const VdConfinement *confine; /* NULL: names are paths */
    guint64 metadata_left;        /* G_MAXUINT64: only the formats' own bounds */
    gboolean no_folder;           /* the top image has no folder (see VdImage) */
};
typedef struct VdOpenContext OpenContext;

/* ----- files named inside images ----- */

/* The rest of name after the folder dir ("/srv/pool/a/b" under
 * "/srv/pool" is "a/b"; the folder itself is ""), or NULL when name lies
 * elsewhere. */
static const char *path_under(const char *dir, const char *name)
{
    gsize n = strlen(dir);
    while (n > 0 && dir[n - 1] == '/')
        n--;
    if (strncmp(name, dir, n) != 0 || (name[n] != '/' && name[n] != '\0'))
        return NULL;
    name += n;
    while (*name == '/')
        name++;
    return name;
}

/* rel with "." and ".." taken out by name ("sub/../a" is "a"), or NULL
 * when it climbs above its start. Beneath a confinement no component may
 * be a link, so this is where the file really lies. */
static char *normalise_beneath(const char *rel)
{
    g_auto(GStrv) parts = g_strsplit(rel, "/", -1);
    g_autoptr(GPtrArray) kept = g_ptr_array_new();
    for (guint i = 0; parts[i] != NULL; i++) {
        if (*parts[i] == '\0' || g_str_equal(parts[i], "."))
            continue;
        if (!g_str_equal(parts[i], "..")) {
            g_ptr_array_add(kept, parts[i]);
            continue;
        }
        if (kept->len == 0)
            return NULL;
        g_ptr_array_set_size(kept, (gint)kept->len - 1);
    }
    if (kept->len == 0)
        return g_strdup(".");
    g_ptr_array_add(kept, NULL);
    return g_strjoinv("/", (char **)kept->pdata);
}

static const VdConfinement *confinement(VdImage *img)
{
    return img->open_ctx != NULL ? img->open_ctx->confine : NULL;
}

/* The name beneath c of the image a caller opens or creates there (name
 * relative to dirfd, or absolute under dir_path), folded; NULL with an
 * error when it is not a file beneath c. */
static char *confined_top_name(const VdConfinement *c, const char *name, GError **error)
{
    const char *beneath = g_path_is_absolute(name) ? path_under(c->dir_path, name) : name;
    char *rel = beneath != NULL ? normalise_beneath(beneath) : NULL;
    if (rel == NULL || g_str_equal(rel, ".")) {
        g_free(rel);
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "%s lies outside %s", name,
                    c->dir_path);
        return NULL;
    }
    return rel;
}

/* Where name, found inside the image whose name beneath c is base, lies
 * beneath c: *rel, and *label for messages. */
static gboolean locate_beneath(const VdConfinement *c, const char *base, const char *name,
                               char **label, char **rel, GError **error)
{
    g_autofree char *joined = NULL;
    if (g_path_is_absolute(name)) {
        const char *tail = path_under(c->dir_path, name);
        joined = g_strdup(tail != NULL ? tail : "..");
    } else {
        g_autofree char *dir = g_path_get_dirname(base);
        joined = g_build_filename(dir, name, NULL);
    }
    *rel = normalise_beneath(joined);
    if (*rel == NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "%s lies outside %s", name,
                    c->dir_path);
        return FALSE;
    }
    *label = g_build_filename(c->dir_path, *rel, NULL);
    return TRUE;
}

/* Where name, found inside img, lies: *label is the path that messages
 * (and an image opened on it) use; *rel is its name beneath the
 * confinement, NULL when there is none. */
static gboolean locate_name(VdImage *img, const char *name, char **label, char **rel,
                            GError **error)
{
    const VdConfinement *c = confinement(img);
    *rel = NULL;
    if (c == NULL) {
        if (img->no_folder && !g_path_is_absolute(name)) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "%s cannot be found: the image was opened from %s without a folder", name,
                        vd_file_nbd(img->file) != NULL   ? "an NBD export"
                        : vd_file_rbd(img->file) != NULL ? "a Ceph RBD image"
                                                         : "a descriptor");
            return FALSE;
        }
        *label = vd_resolve_relative(img->filename, name);
        return TRUE;
    }
    return locate_beneath(c, img->name_beneath, name, label, rel, error);
}

/* Open a file that img names: the one way backing files, data files,
 * extents and parents are reached, by path or beneath the confinement.
 * label and rel (may be NULL) receive what locate_name says. */
static VdFile *open_named(VdImage *img, const char *name, gboolean read_write, char **label,
                          char **rel, GError **error)
{
    g_autofree char *path = NULL;
    g_autofree char *beneath = NULL;
    if (!locate_name(img, name, &path, &beneath, error))
        return NULL;
    const VdConfinement *c = confinement(img);
    VdFile *file = c != NULL ? vd_file_open_beneath(c, beneath, path, read_write, error)
                             : vd_file_open_regular(path, read_write, error);
    if (file == NULL)
        return NULL;
    if (label != NULL)
        *label = g_steal_pointer(&path);
    if (rel != NULL)
        *rel = g_steal_pointer(&beneath);
    return file;
}

VdFile *vd_image_open_related_file(VdImage *img, const char *name, gboolean read_write,
                                   GError **error)
{
    if (img->flags & VD_OPEN_NO_RELATED_FILES) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "the image refers to another file (%s), which is not opened here", name);
        return NULL;
    }
    VdFile *file = lock_or_close(open_named(img, name, read_write, NULL, NULL, error), img->flags,
                                 read_write, error);
    if (file == NULL)
        return NULL;
    vd_file_set_no_flush(file, (img->flags & VD_OPEN_NO_FLUSH) != 0);
    if (img->related_names == NULL)
        img->related_names = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(img->related_names, g_strdup(name));
    return file;
}

GPtrArray *vd_image_related_files(VdImage *img)
{
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; img->related_names != NULL && i < img->related_names->len; i++)
        g_ptr_array_add(names, g_strdup(img->related_names->pdata[i]));
    return names;
}

VdFile *vd_image_peek_file(VdImage *img, const char *name, GError **error)
{
    if (img->flags & VD_OPEN_NO_RELATED_FILES) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "the image refers to another file (%s), which is not opened here", name);
        return NULL;
    }
    g_autoptr(VdFile) file = open_named(img, name, FALSE, NULL, NULL, error);
    struct stat st;
    if (file == NULL || fstat(vd_file_fd(file), &st) < 0)
        return NULL;
    if (!S_ISREG(st.st_mode)) {
        vd_set_file_error(error, vd_file_name(file), VD_ERROR_INVALID_ARGUMENT,
                          "is not a regular file");
        return NULL;
    }
    return g_steal_pointer(&file);
}

GPtrArray *vd_image_list_folder(VdImage *img, guint max_entries)
{
    if ((img->flags & VD_OPEN_NO_RELATED_FILES) || img->no_folder)
        return NULL;
    const VdConfinement *c = confinement(img);
    g_autofree char *dir = g_path_get_dirname(c != NULL ? img->name_beneath : img->filename);
    int fd = c == NULL ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                       : vd_confinement_openat(c, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return NULL;
    }
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    struct dirent *e;
    while (names->len < max_entries && (e = readdir(d)) != NULL)
        if (!g_str_equal(e->d_name, ".") && !g_str_equal(e->d_name, ".."))
            g_ptr_array_add(names, g_strdup(e->d_name));
    closedir(d);
    return names;
}

gboolean vd_image_charge_metadata(VdImage *img, guint64 bytes, const char *what, GError **error)
{
    OpenContext *ctx = img->open_ctx;
    if (ctx == NULL || ctx->metadata_left == G_MAXUINT64)
        return TRUE;
    if (bytes > ctx->metadata_left) {
        guint64 limit = ctx->confine->max_metadata, used = limit - ctx->metadata_left;
        if (used == 0)
            vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                         "%s of %" G_GUINT64_FORMAT " bytes is over the limit of %" G_GUINT64_FORMAT
                         " bytes of metadata this open may read",
                         what, bytes, limit);
        else
            vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                         "%s of %" G_GUINT64_FORMAT " bytes, after %" G_GUINT64_FORMAT
                         " bytes of other tables, is over the limit of %" G_GUINT64_FORMAT
                         " bytes of metadata this open may read",
                         what, bytes, used, limit);
        return FALSE;
    }
    ctx->metadata_left -= bytes;
    return TRUE;
}

static VdImage *open_layer(VdFile *file, const char *filename, const char *beneath,
                           const char *format, VdOpenFlags flags, OpenContext *ctx, guint depth,
                           GError **error);

static gboolean open_backing(VdImage *img, OpenContext *ctx, guint depth, GError **error)
{
    if (img->backing_name == NULL || (img->flags & VD_OPEN_NO_BACKING))
        return TRUE;
    if (img->flags & VD_OPEN_NO_RELATED_FILES) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "the image has a backing file (%s), which is not opened here",
                     img->backing_name);
        return FALSE;
    }
    if (depth >= MAX_CHAIN_DEPTH) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "backing chain is deeper than %d images",
                     MAX_CHAIN_DEPTH);
        return FALSE;
    }
    g_autofree char *path = NULL;
    g_autofree char *beneath = NULL;
    g_autoptr(GError) local = NULL;
    /* The backing chain is read only; flags other than that carry down.
     * Backing files are locked for reading: nobody may write them while
     * an overlay depends on them, unless this open shares them. */
    VdOpenFlags bflags = img->flags & ~(VdOpenFlags)VD_OPEN_READ_WRITE;
    VdOpenFlags lock_flags = bflags;
    if (bflags & VD_OPEN_BACKING_SHARE_WRITE)
        lock_flags |= VD_OPEN_FORCE_SHARE;
    if (g_str_has_prefix(img->backing_name, "json:") && ctx->confine == NULL) {
        /* qemu's json: name: the options of a node tree (blkdebug.c). */
        img->backing = vd_image_open_json(img->backing_name, img->backing_format, lock_flags,
                                          ctx->secrets, error);
        if (img->backing == NULL)
            g_prefix_error(error, "%s: cannot open backing file: ", img->filename);
        return img->backing != NULL &&
               (img->drv->check_backing == NULL || img->drv->check_backing(img, error));
    }
    VdFile *file = lock_or_close(open_named(img, img->backing_name, FALSE, &path, &beneath, &local),
                                 lock_flags, FALSE, &local);
    if (file == NULL) {
        VdError code = VD_ERROR_IO;
        if (g_error_matches(local, VD_ERROR, VD_ERROR_NOT_FOUND) ||
            g_error_matches(local, VD_ERROR, VD_ERROR_BUSY) ||
            g_error_matches(local, VD_ERROR, VD_ERROR_INVALID_ARGUMENT))
            code = (VdError)local->code;
        vd_set_error(error, img, code, "cannot open backing file: %s", local->message);
        return FALSE;
    }
    img->backing =
        open_layer(file, path, beneath, img->backing_format, bflags, ctx, depth + 1, error);
    if (img->backing == NULL)
        return FALSE;
    return img->drv->check_backing == NULL || img->drv->check_backing(img, error);
}

static void override_backing(VdImage *img, const char *name, const char *format)
{
    g_free(img->backing_name);
    img->backing_name = g_strdup(name);
    g_free(img->backing_format);
    img->backing_format = g_strdup(format);
}

/* The open option naming the parent of the layer at depth: "backing" for
 * the top image, "backing.backing" for its parent, and so on (leaf
 * "backing-format" the same way), so a caller that knows a whole chain (a
 * VirtualBox VM's differencing images, spread over the VM folder and its
 * Snapshots folder) can name every link of it. */
static char *backing_key(guint depth, const char *leaf)
{
    GString *key = g_string_new(NULL);
    for (guint i = 0; i < depth; i++)
        g_string_append(key, "backing.");
    g_string_append(key, leaf);
    return g_string_free(key, FALSE);
}

/* Open one layer on file (taking it) and, below it, its backing chain.
 * beneath is its name beneath the confinement (NULL without one). */
static VdImage *open_layer(VdFile *file, const char *filename, const char *beneath,
                           const char *format, VdOpenFlags flags, OpenContext *ctx, guint depth,
                           GError **error)
{
    g_autofree char *identity = file_identity(file);
    if (identity != NULL && !g_hash_table_add(ctx->seen, g_steal_pointer(&identity))) {
        vd_set_file_error(error, filename, VD_ERROR_CORRUPT,
                          "backing chain loops back to this file");
        vd_file_close(file);
        return NULL;
    }
    const VdDriver *drv =
        format != NULL ? require_driver(format, error) : probe_file(file, NULL, error);
    if (drv == NULL) {
        vd_file_close(file);
        return NULL;
    }
    /* A backing file whose raw format was probed: whoever writes it later
     * (commit) keeps to qemu's rule for such files. */
    if (depth > 0 && format == NULL && drv == &vd_driver_raw)
        flags |= VD_OPEN_PROBED_RAW;
    g_autoptr(VdImage) img = image_new(file, filename, drv, flags);
    img->open_options = ctx->open_options;
    img->secrets = ctx->secrets;
    img->name_beneath = g_strdup(beneath);
    /* Opened from a descriptor named without a folder, the top image has
     * no folder its relative names could be found in. */
    img->no_folder = depth == 0 && ctx->no_folder;
    img->open_ctx = ctx;
    /* An explicit parent for this layer ("backing" open option, see
     * backing_key): set before open so formats that search for their
     * parent (differencing VDIs) take it, and again after, over what the
     * header names. */
    g_autofree char *parent_key = backing_key(depth, "backing");
    g_autofree char *format_key = backing_key(depth, "backing-format");
    const char *parent = vd_options_get(ctx->open_options, parent_key);
    if (parent != NULL)
        img->backing_name = g_strdup(parent);
    gboolean opened = drv->open(img, error);
    img->open_options = NULL; /* the caller's; only open may look at them */
    img->secrets = NULL;
    if (!opened)
        return NULL;
    if (parent != NULL)
        override_backing(img, parent, vd_options_get(ctx->open_options, format_key));
    if (img->read_write && drv->write == NULL) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED, "%s images cannot be written", drv->name);
        return NULL;
    }
    gboolean ok = open_backing(img, ctx, depth, error);
    img->open_ctx = NULL;
    return ok ? g_steal_pointer(&img) : NULL;
}

/* Open the image on file (taking it) with a fresh context made from ctx's
 * options, secrets, confinement and no_folder. */
static VdImage *open_top(VdFile *file, const char *filename, const char *beneath,
                         const char *format, VdOpenFlags flags, OpenContext ctx, GError **error)
{
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    ctx.seen = seen;
    ctx.metadata_left = ctx.confine != NULL && ctx.confine->max_metadata != 0
                            ? ctx.confine->max_metadata
                            : G_MAXUINT64;
    return open_layer(file, filename, beneath, format, flags, &ctx, 0, error);
}

static VdImage *open_file_with_keys(VdFile *file, const char *filename, const char *format,
                                    VdOpenFlags flags, VdOptions *open_options, VdSecrets *secrets,
                                    GError **error)
{
    /* An image on an NBD export has no folder its relative names could be
     * found in. */
    OpenContext ctx = {
        .open_options = open_options,
        .secrets = secrets,
        .no_folder = vd_file_nbd(file) != NULL || vd_file_rbd(file) != NULL,
    };
    return open_top(file, filename, NULL, format, flags, ctx, error);
}

static VdImage *open_file(VdFile *file, const char *filename, const char *format, VdOpenFlags flags,
                          GError **error)
{
    return open_file_with_keys(file, filename, format, flags, NULL, NULL, error);
}

static VdImage *open_ova_disk(VdFile *archive, int index, VdOpenFlags flags, GError **error)
{
    if (flags & VD_OPEN_READ_WRITE) {
        vd_set_file_error(error, vd_file_name(archive), VD_ERROR_NOT_SUPPORTED,
                          "disks inside an OVA appliance are read only; convert them out");
        return NULL;
    }
    VdFile *disk = vd_ova_open_disk(archive, index, NULL, error);
    if (disk == NULL)
        return NULL;
    g_autofree char *label = g_strdup(vd_file_name(disk));
    return open_file(disk, label, NULL, flags, error);
}

gboolean vd_is_ova(const char *path)
{
    g_autoptr(VdFile) file = vd_file_open(path, FALSE, NULL);
    return file != NULL && vd_ova_probe(file);
}

VdImage *vd_image_open_ova(const char *path, int index, GError **error)
{
    g_autoptr(VdFile) archive = lock_or_close(vd_file_open(path, FALSE, error), 0, FALSE, error);
    if (archive == NULL)
        return NULL;
    return open_ova_disk(archive, index, 0, error);
}

VdImage *vd_image_open_ova_fd(int fd, const char *name, int index, guint64 max_metadata,
                              GError **error)
{
    g_autoptr(VdFile) archive = lock_or_close(vd_file_open_fd(fd, name, error), 0, FALSE, error);
    if (archive == NULL)
        return NULL;
    if (!vd_ova_probe(archive)) {
        vd_set_file_error(error, name, VD_ERROR_UNSUPPORTED_FORMAT,
                          "not an OVA appliance (a tar archive whose first member is an .ovf)");
        return NULL;
    }
    VdFile *disk = vd_ova_open_disk(archive, index, NULL, error);
    if (disk == NULL)
        return NULL;
    g_autofree char *label = g_strdup(vd_file_name(disk));
    /* The disk names no other file: the bound is all the confinement is
     * for, and nothing is asked of open_beneath. */
    const VdConfinement bound = { .dirfd = -1, .dir_path = "", .max_metadata = max_metadata };
    OpenContext ctx = { .confine = max_metadata != 0 ? &bound : NULL };
    return open_top(disk, label, NULL, NULL, VD_OPEN_NO_RELATED_FILES, ctx, error);
}

VdImage *vd_image_open(const char *path, const char *format, VdOpenFlags flags, GError **error)
{
    if (g_str_has_prefix(path, "json:"))
        return vd_image_open_json(path, format, flags, NULL, error);
    VdFile *file = open_locked(path, NULL, &flags, error);
    if (file == NULL)
        return NULL;
    if ((format == NULL || g_str_equal(format, "ova")) && vd_ova_probe(file)) {
        g_autoptr(VdFile) archive = file;
        return open_ova_disk(archive, -1, flags, error);
    }
    /* An export goes by qemu's name for it ("nbd+unix://?socket=S"). */
    g_autofree char *name = g_strdup(vd_file_name(file));
    return open_file(file, name, format, flags, error);
}

VdImage *vd_image_open_opts(const char *path, const char *format, VdOpenFlags flags,
                            VdOptions *open_opts, VdSecrets *secrets, GError **error)
{
    if (g_str_has_prefix(path, "json:"))
        return vd_image_open_json(path, format, flags, secrets, error);
    VdFile *file = open_locked(path, open_opts, &flags, error);
    if (file == NULL)
        return NULL;
    g_autofree char *name = g_strdup(vd_file_name(file));
    return open_file_with_keys(file, name, format, flags, open_opts, secrets, error);
}

VdImage *vd_image_open_nbd_socket(int fd, const char *export_name, const char *format,
                                  VdOpenFlags flags, GError **error)
{
    VdFile *file =
        vd_file_open_nbd_socket(fd, export_name, (flags & VD_OPEN_READ_WRITE) != 0, error);
    if (file == NULL)
        return NULL;
    g_autofree char *name = g_strdup(vd_file_name(file));
    return open_file(file, name, format, flags, error);
}

static const VdDriver *const fileless_drivers[] = { &vd_driver_null, &vd_driver_compress_filter };

static const VdDriver *find_fileless_driver(const char *format)
{
    for (gsize i = 0; format != NULL && i < G_N_ELEMENTS(fileless_drivers); i++)
        if (g_str_equal(fileless_drivers[i]->name, format))
            return fileless_drivers[i];
    return NULL;
}

gboolean vd_format_is_fileless(const char *format) { return find_fileless_driver(format) != NULL; }

VdImage *vd_image_open_fileless(const char *format, const char *name, VdOpenFlags flags,
                                VdOptions *open_opts, GError **error)
{
    const VdDriver *drv = find_fileless_driver(format);
    if (drv == NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT,
                    "%s: '%s' is no driver of images without a file", name, format);
        return NULL;
    }
    g_autoptr(VdImage) img = image_new(NULL, name, drv, flags);
    img->no_folder = TRUE;
    img->open_options = open_opts;
    gboolean opened = drv->open(img, error);
    img->open_options = NULL;
    return opened ? g_steal_pointer(&img) : NULL;
}

VdImage *vd_image_open_on_file(VdFile *file, const char *name, const char *format,
                               VdOpenFlags flags, VdOptions *open_opts, VdSecrets *secrets,
                               GError **error)
{
    if (!apply_lock_options(name, open_opts, &flags, error)) {
        vd_file_close(file);
        return NULL;
    }
    file = lock_or_close(file, flags, (flags & VD_OPEN_READ_WRITE) != 0, error);
    if (file == NULL)
        return NULL;
    return open_file_with_keys(file, name, format, flags, open_opts, secrets, error);
}

gboolean vd_image_needs_key(VdImage *img)
{
    for (; img != NULL; img = img->backing)
        if (img->needs_key)
            return TRUE;
    return FALSE;
}

gboolean vd_image_is_encrypted(VdImage *img) { return img->encrypted; }

gboolean vd_image_amend(VdImage *img, VdOptions *opts, VdSecrets *secrets, GError **error)
{
    return vd_image_amend_progress(img, opts, secrets, FALSE, NULL, NULL, error);
}

gboolean vd_image_amend_progress(VdImage *img, VdOptions *opts, VdSecrets *secrets, gboolean force,
                                 VdProgressFunc progress, gpointer progress_data, GError **error)
{
    if (img->drv->amend == NULL) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "amending options is not supported by the %s format", img->drv->name);
        return FALSE;
    }
    if (!vd_image_require_writable(img, error))
        return FALSE;
    g_mutex_lock(&img->lock);
    img->amend_progress = progress;
    img->amend_progress_data = progress_data;
    img->amend_force = force;
    gboolean ok = img->drv->amend(img, opts, secrets, error);
    img->amend_progress = NULL;
    img->amend_force = FALSE;
    g_mutex_unlock(&img->lock);
    return ok;
}

gboolean vd_image_bitmap(VdImage *img, VdBitmapOp op, const char *name, guint32 granularity,
                         gboolean disabled, VdImage *source, const char *source_name,
                         GError **error)
{
    if (img->drv->bitmap == NULL) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "Can't store persistent bitmaps: the %s format has none (qcow2 has)",
                     img->drv->name);
        return FALSE;
    }
    if (!vd_image_require_writable(img, error))
        return FALSE;
    /* A source other than img is only read: its own lock is enough. */
    if (source != NULL && source != img)
        g_mutex_lock(&source->lock);
    g_mutex_lock(&img->lock);
    gboolean ok =
        img->drv->bitmap(img, op, name, granularity, disabled, source, source_name, error);
    g_mutex_unlock(&img->lock);
    if (source != NULL && source != img)
        g_mutex_unlock(&source->lock);
    return ok;
}

VdImage *vd_image_open_fd(int fd, const char *name, const char *format, VdOpenFlags flags,
                          GError **error)
{
    return vd_image_open_fd_opts(fd, name, format, flags, NULL, NULL, error);
}

/* vd_image_open_fd_opts and vd_image_open_fd_confined: label names the
 * image in messages, beneath beneath confine (both NULL without one). */
static VdImage *open_fd(int fd, const char *label, const char *beneath, const char *format,
                        VdOpenFlags flags, VdOptions *open_opts, VdSecrets *secrets,
                        const VdConfinement *confine, GError **error)
{
    VdFile *file = vd_file_open_fd(fd, label, error);
    if (file == NULL)
        return NULL;
    if ((flags & VD_OPEN_READ_WRITE) && !vd_file_is_writable(file)) {
        vd_set_file_error(error, label, VD_ERROR_INVALID_ARGUMENT,
                          "descriptor is not open for reading and writing");
        vd_file_close(file);
        return NULL;
    }
    /* The caller's descriptor is locked too: the dup shares its open. */
    if (!apply_lock_options(label, open_opts, &flags, error)) {
        vd_file_close(file);
        return NULL;
    }
    file = lock_or_close(file, flags, (flags & VD_OPEN_READ_WRITE) != 0, error);
    if (file == NULL)
        return NULL;
    OpenContext ctx = {
        .open_options = open_opts,
        .secrets = secrets,
        .confine = confine,
        .no_folder = confine == NULL && strchr(label, '/') == NULL,
    };
    return open_top(file, label, beneath, format, flags, ctx, error);
}

VdImage *vd_image_open_fd_opts(int fd, const char *name, const char *format, VdOpenFlags flags,
                               VdOptions *open_opts, VdSecrets *secrets, GError **error)
{
    g_autofree char *fallback = g_strdup_printf("fd %d", fd);
    return open_fd(fd, name != NULL ? name : fallback, NULL, format, flags, open_opts, secrets,
                   NULL, error);
}

VdImage *vd_image_open_fd_confined(int fd, const char *name, const char *format, VdOpenFlags flags,
                                   VdOptions *open_opts, VdSecrets *secrets,
                                   const VdConfinement *confine, GError **error)
{
    g_return_val_if_fail(confine != NULL && confine->dir_path != NULL, NULL);
    g_autofree char *rel = confined_top_name(confine, name, error);
    if (rel == NULL)
        return NULL;
    g_autofree char *label = g_build_filename(confine->dir_path, rel, NULL);
    return open_fd(fd, label, rel, format, flags, open_opts, secrets, confine, error);
}

VdImage *vd_image_ref(VdImage *img)
{
    g_atomic_int_inc(&img->refcount);
    return img;
}

void vd_image_unref(VdImage *img)
{
    if (img == NULL || !g_atomic_int_dec_and_test(&img->refcount))
        return;
    if (img->drv->close != NULL) /* drivers cope with a half-done open */
        img->drv->close(img);
    vd_image_unref(img->backing);
    vd_file_close(img->file);
    vd_blkdebug_free(img->debug);
    g_mutex_clear(&img->lock);
    g_free(img->backing_name);
    g_free(img->backing_format);
    g_free(img->filename);
    g_free(img->name_beneath);
    if (img->related_names != NULL)
        g_ptr_array_unref(img->related_names);
    g_free(img);
}

/* ----- simple accessors ----- */

const char *vd_image_format(VdImage *img) { return img->drv->name; }
const char *vd_image_filename(VdImage *img) { return img->filename; }
guint64 vd_image_size(VdImage *img) { return img->size; }
VdImage *vd_image_backing(VdImage *img) { return img->backing; }

guint32 vd_image_cluster_size(VdImage *img)
{
    return img->drv->cluster_size != NULL ? img->drv->cluster_size(img) : 0;
}

gboolean vd_image_can_write_compressed(VdImage *img)
{
    /* Compressed clusters are never encrypted: qemu refuses the mix too. */
    return img->drv->compress != NULL && img->drv->write_compressed != NULL && !img->encrypted;
}

gboolean vd_image_has_zero_init(VdImage *img)
{
    if (img->backing != NULL || img->backing_name != NULL)
        return FALSE;
    return img->drv->has_zero_init != NULL && img->drv->has_zero_init(img);
}

gboolean vd_image_needs_sequential_writes(VdImage *img) { return img->drv->sequential_writes; }

/* ----- argument checks shared by the I/O calls ----- */

/* A request a blkdebug node above the format fails. */
#define IMAGE_DEBUG_CHECK(img, io, offset, len, error) \
    G_UNLIKELY((img)->debug != NULL &&                 \
               !vd_blkdebug_check((img)->debug, io, offset, len, (img)->filename, error))

static gboolean check_range(VdImage *img, guint64 offset, guint64 len, GError **error)
{
    if (offset > img->size || len > img->size - offset) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "access at offset %" G_GUINT64_FORMAT " length %" G_GUINT64_FORMAT
                     " is beyond the virtual size %" G_GUINT64_FORMAT,
                     offset, len, img->size);
        return FALSE;
    }
    return TRUE;
}

static gboolean check_writable(VdImage *img, guint64 offset, guint64 len, GError **error)
{
    if (!vd_image_require_writable(img, error))
        return FALSE;
    return check_range(img, offset, len, error);
}

static gboolean not_supported(VdImage *img, const char *what, GError **error)
{
    vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED, "%s is not supported by the %s format", what,
                 img->drv->name);
    return FALSE;
}

/* ----- reading ----- */

static gboolean layer_status(VdImage *img, guint64 offset, guint64 len, VdExtent *ext,
                             GError **error)
{
    memset(ext, 0, sizeof *ext);
    g_mutex_lock(&img->lock);
    gboolean ok = img->drv->block_status(img, offset, len, ext, error);
    g_mutex_unlock(&img->lock);
    if (ok && (ext->length == 0 || ext->length > len)) {
        vd_set_error(error, img, VD_ERROR_FAILED,
                     "internal error: block status gave length %" G_GUINT64_FORMAT, ext->length);
        return FALSE;
    }
    return ok;
}

static gboolean read_backing_unlocked(VdImage *img, guint64 offset, void *buf, gsize len,
                                      GError **error)
{
    VdImage *backing = img->backing;
    guint64 inside = 0;
    if (backing != NULL && offset < backing->size)
        inside = MIN(len, backing->size - offset);
    if (inside > 0 && !vd_image_read(backing, offset, buf, inside, error))
        return FALSE;
    memset((guint8 *)buf + inside, 0, len - inside);
    return TRUE;
}

gboolean vd_image_read_backing(VdImage *img, guint64 offset, void *buf, gsize len, GError **error)
{
    return read_backing_unlocked(img, offset, buf, len, error);
}

/* The driver reads one stretch, under the image's lock. A raw image's
 * read is a pread of its file and holds no state to guard: its readers
 * (an NBD server's connections, the copy engine's workers) read at once. */
static gboolean read_locked(VdImage *img, guint64 offset, guint8 *out, gsize n, GError **error)
{
    if (img->drv == &vd_driver_raw)
        return img->drv->read(img, offset, out, n, error);
    g_mutex_lock(&img->lock);
    gboolean ok = img->drv->read(img, offset, out, n, error);
    g_mutex_unlock(&img->lock);
    return ok;
}

/* Compressed data: each whole unit is read and inflated straight into out
 * without the image lock, so every thread that reads (the copy engine's
 * workers) inflates at once. Only of an image open read-only, where no
 * write can move a unit between its lookup and its read; part of a unit
 * goes through the driver's read, which keeps the last unit inflated for
 * the next small read. */
static gboolean read_packed(VdImage *img, guint64 offset, guint8 *out, gsize len, GError **error)
{
    g_autofree guint8 *in = NULL;
    gsize in_size = 0;
    while (len > 0) {
        VdPackedUnit unit = { 0 };
        g_mutex_lock(&img->lock);
        gboolean ok = img->drv->packed_unit(img, offset, &unit, error);
        g_mutex_unlock(&img->lock);
        if (!ok)
            return FALSE;
        gsize n = len;
        if (unit.guest_len > 0 && unit.guest_offset <= offset)
            n = (gsize)MIN((guint64)len, unit.guest_offset + unit.guest_len - offset);
        if (unit.guest_len > 0 && unit.guest_offset == offset && n == unit.guest_len) {
            if (in_size < unit.host_len) {
                g_free(in);
                in = g_malloc(unit.host_len);
                in_size = unit.host_len;
            }
            if (!vd_file_pread_zero_past_eof(unit.file, unit.host_offset, in, unit.host_len,
                                             error) ||
                !img->drv->inflate_unit(img, &unit, in, out, error))
                return FALSE;
        } else if (!read_locked(img, offset, out, n, error)) {
            return FALSE;
        }
        offset += n;
        out += n;
        len -= n;
    }
    return TRUE;
}

gboolean vd_image_read(VdImage *img, guint64 offset, void *buf, gsize len, GError **error)
{
    if (!check_range(img, offset, len, error) ||
        IMAGE_DEBUG_CHECK(img, VD_DEBUG_IO_READ, offset, len, error))
        return FALSE;
    guint8 *out = buf;
    while (len > 0) {
        VdExtent ext;
        if (!layer_status(img, offset, len, &ext, error))
            return FALSE;
        gsize n = (gsize)ext.length;
        gboolean ok = TRUE;
        switch (ext.kind) {
        case VD_EXTENT_DATA:
            if (ext.compressed && img->drv->packed_unit != NULL && !img->read_write) {
                ok = read_packed(img, offset, out, n, error);
                break;
            }
            ok = read_locked(img, offset, out, n, error);
            break;
        case VD_EXTENT_ZERO:
            memset(out, 0, n);
            break;
        case VD_EXTENT_UNALLOCATED:
            ok = read_backing_unlocked(img, offset, out, n, error);
            break;
        }
        if (!ok)
            return FALSE;
        offset += n;
        out += n;
        len -= n;
    }
    return TRUE;
}

/* ----- writing ----- */

/* Write the driver's cached metadata back and, with sync, wait until the
 * image's files are on stable storage. Called with img->lock held. */
static gboolean flush_locked(VdImage *img, gboolean sync, GError **error)
{
    if (img->drv->flush != NULL && !img->drv->flush(img, error))
        return FALSE;
    return !sync || img->file == NULL || vd_file_sync(img->file, error);
}

/* cache=writethrough: a write is on stable storage when it returns. ok is
 * the write's own result. Called with img->lock held. */
static gboolean write_through(VdImage *img, gboolean ok, GError **error)
{
    return ok && (!(img->flags & VD_OPEN_WRITETHROUGH) || flush_locked(img, TRUE, error));
}

/* qemu's rule for a raw image whose format was probed: a write that would
 * make its first bytes probe as another format is refused, so that what a
 * guest writes cannot turn its disk into an image naming other files. */
static gboolean probed_raw_write_allowed(VdImage *img, guint64 offset, const void *buf, gsize len,
                                         GError **error)
{
    if (!(img->flags & VD_OPEN_PROBED_RAW) || img->drv != &vd_driver_raw || offset >= PROBE_BYTES)
        return TRUE;
    guint8 head[PROBE_BYTES];
    if (!vd_file_pread_zero_past_eof(img->file, 0, head, sizeof head, error))
        return FALSE;
    memcpy(head + offset, buf, (gsize)MIN((guint64)len, sizeof head - offset));
    const VdDriver *drv = probe_buffer(head, sizeof head, img->filename, NULL);
    if (drv == &vd_driver_raw)
        return TRUE;
    vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                 "Operation not permitted: the format was probed as raw, and this write would "
                 "make the image probe as %s (name the format raw to write it)",
                 drv->name);
    return FALSE;
}

gboolean vd_image_write(VdImage *img, guint64 offset, const void *buf, gsize len, GError **error)
{
    if (!check_writable(img, offset, len, error) ||
        !probed_raw_write_allowed(img, offset, buf, len, error) ||
        IMAGE_DEBUG_CHECK(img, VD_DEBUG_IO_WRITE, offset, len, error))
        return FALSE;
    if (len == 0)
        return TRUE;
    g_mutex_lock(&img->lock);
    gboolean ok = img->drv->write(img, offset, buf, len, error);
    ok = write_through(img, ok, error);
    g_mutex_unlock(&img->lock);
    return ok;
}

gboolean vd_image_can_write_from_file(VdImage *img)
{
    /* A probed raw image checks what reaches its first bytes: by buffer. */
    return img->drv->write_from_file != NULL && !img->encrypted &&
           !(img->flags & VD_OPEN_PROBED_RAW);
}

gboolean vd_image_format_probed(VdImage *img) { return (img->flags & VD_OPEN_PROBED_RAW) != 0; }

gboolean vd_image_write_from_file(VdImage *img, guint64 offset, VdFile *src, guint64 src_offset,
                                  guint64 len, const void *buf, GError **error)
{
    if (!vd_image_can_write_from_file(img))
        return not_supported(img, "copying file to file", error);
    if (!check_writable(img, offset, len, error))
        return FALSE;
    if (len == 0)
        return TRUE;
    g_mutex_lock(&img->lock);
    gboolean ok = img->drv->write_from_file(img, offset, src, src_offset, len, buf, error);
    ok = write_through(img, ok, error);
    g_mutex_unlock(&img->lock);
    return ok;
}

static gboolean write_zero_buffers(VdImage *img, guint64 offset, guint64 len, GError **error)
{
    static const gsize chunk = 1 << 20;
    g_autofree guint8 *zeroes = g_malloc0((gsize)MIN(len, chunk));
    for (guint64 done = 0; done < len;) {
        gsize n = (gsize)MIN(len - done, chunk);
        if (!img->drv->write(img, offset + done, zeroes, n, error))
            return FALSE;
        done += n;
    }
    return TRUE;
}

gboolean vd_image_write_zeroes(VdImage *img, guint64 offset, guint64 len, gboolean may_unmap,
                               GError **error)
{
    if (!check_writable(img, offset, len, error) ||
        IMAGE_DEBUG_CHECK(img, VD_DEBUG_IO_WRITE_ZEROES, offset, len, error))
        return FALSE;
    if (len == 0)
        return TRUE;
    g_mutex_lock(&img->lock);
    gboolean ok = img->drv->write_zeroes != NULL
                      ? img->drv->write_zeroes(img, offset, len, may_unmap, error)
                      : write_zero_buffers(img, offset, len, error);
    ok = write_through(img, ok, error);
    g_mutex_unlock(&img->lock);
    return ok;
}

gboolean vd_image_discard(VdImage *img, guint64 offset, guint64 len, GError **error)
{
    if (!check_writable(img, offset, len, error) ||
        IMAGE_DEBUG_CHECK(img, VD_DEBUG_IO_DISCARD, offset, len, error))
        return FALSE;
    if (img->drv->discard == NULL || len == 0)
        return TRUE; /* discard is advisory */
    g_mutex_lock(&img->lock);
    gboolean ok = img->drv->discard(img, offset, len, error);
    ok = write_through(img, ok, error);
    g_mutex_unlock(&img->lock);
    return ok;
}

gboolean vd_image_make_empty(VdImage *img, GError **error)
{
    if (!vd_image_require_writable(img, error))
        return FALSE;
    if (img->drv->make_empty == NULL)
        return vd_image_discard(img, 0, img->size, error) && vd_image_flush(img, error);
    g_mutex_lock(&img->lock);
    gboolean ok = img->drv->make_empty(img, error);
    g_mutex_unlock(&img->lock);
    return ok && vd_image_flush(img, error);
}

gsize vd_image_compress(VdImage *img, const void *in, gsize len, void *out, gsize out_len)
{
    if (img->drv->compress == NULL)
        return 0;
    return img->drv->compress(img, in, len, out, out_len);
}

gboolean vd_image_write_precompressed(VdImage *img, guint64 offset, const void *data, gsize len,
                                      GError **error)
{
    if (!vd_image_can_write_compressed(img))
        return not_supported(img, "compressed writing", error);
    if (!check_writable(img, offset, 0, error))
        return FALSE;
    g_mutex_lock(&img->lock);
    gboolean ok = img->drv->write_compressed(img, offset, data, len, error);
    ok = write_through(img, ok, error);
    g_mutex_unlock(&img->lock);
    return ok;
}

gboolean vd_image_write_compressed(VdImage *img, guint64 offset, const void *buf, gsize len,
                                   GError **error)
{
    if (!vd_image_can_write_compressed(img))
        return not_supported(img, "compressed writing", error);
    if (!check_writable(img, offset, len, error))
        return FALSE;
    gsize room = vd_compress_bound(len);
    g_autofree guint8 *packed = g_malloc(room);
    gsize packed_len = vd_image_compress(img, buf, len, packed, room);
    if (packed_len == 0)
        return vd_image_write(img, offset, buf, len, error);
    return vd_image_write_precompressed(img, offset, packed, packed_len, error);
}

static gboolean flush_image(VdImage *img, gboolean sync, GError **error)
{
    if (!img->read_write)
        return TRUE;
    if (IMAGE_DEBUG_CHECK(img, VD_DEBUG_IO_FLUSH, 0, 0, error))
        return FALSE;
    g_mutex_lock(&img->lock);
    gboolean ok = flush_locked(img, sync, error);
    g_mutex_unlock(&img->lock);
    return ok;
}

gboolean vd_image_flush(VdImage *img, GError **error) { return flush_image(img, TRUE, error); }

gboolean vd_image_write_back(VdImage *img, GError **error)
{
    return flush_image(img, FALSE, error);
}

/* ----- block status ----- */

static void status_from_extent(const VdExtent *ext, guint depth, VdImage *layer, VdBlockStatus *out)
{
    out->length = ext->length;
    out->depth = depth;
    out->layer = layer;
    out->host_offset = ext->host_offset;
    out->host_name = NULL;
    if (ext->offset_valid && layer != NULL)
        out->host_name = ext->host_name != NULL ? ext->host_name : layer->filename;
    out->flags = 0;
    if (ext->kind == VD_EXTENT_DATA)
        out->flags = VD_BLOCK_DATA | VD_BLOCK_ALLOCATED;
    else if (ext->kind == VD_EXTENT_ZERO)
        out->flags = VD_BLOCK_ZERO | VD_BLOCK_ALLOCATED;
    else
        out->flags = VD_BLOCK_ZERO; /* nothing anywhere: reads zero */
    if (ext->offset_valid)
        out->flags |= VD_BLOCK_OFFSET_VALID;
    if (ext->compressed)
        out->flags |= VD_BLOCK_COMPRESSED;
    if (ext->status_flags_set)
        out->flags = ext->status_flags;
}

/* Stored data whose host range is a hole in the file reads zero: say so,
 * as qemu-img map does for preallocated metadata. */
static gboolean mark_host_holes(const VdExtent *ext, VdBlockStatus *out, GError **error)
{
    if (ext->kind != VD_EXTENT_DATA || !ext->offset_valid || ext->host_file == NULL)
        return TRUE;
    /* Past the end of the file is no hole but damage: leave it to the read
     * to report. */
    guint64 file_size;
    if (!vd_file_size(ext->host_file, &file_size, error))
        return FALSE;
    if (ext->host_offset >= file_size)
        return TRUE;
    guint64 in_file = MIN(out->length, file_size - ext->host_offset);
    gboolean is_data;
    guint64 run;
    if (!vd_file_extent(ext->host_file, ext->host_offset, in_file, &is_data, &run, error))
        return FALSE;
    out->length = run;
    if (!is_data)
        out->flags |= VD_BLOCK_ZERO;
    return TRUE;
}

VdFile *vd_image_plain_location(VdImage *layer, guint64 offset, guint64 len, guint64 *host_offset,
                                guint64 *run)
{
    VdExtent ext;
    /* Through blkdebug, copies go the way the driver reads, where its
     * events and errors happen. */
    if (layer->encrypted || layer->debug != NULL || vd_file_has_debug(layer->file) ||
        !layer_status(layer, offset, len, &ext, NULL) || ext.kind != VD_EXTENT_DATA ||
        ext.compressed || !ext.offset_valid)
        return NULL;
    *host_offset = ext.host_offset;
    *run = ext.length;
    return ext.plain_file;
}

gboolean vd_image_block_status(VdImage *img, guint64 offset, guint64 len, gboolean through_chain,
                               VdBlockStatus *out, GError **error)
{
    if (!check_range(img, offset, len, error))
        return FALSE;
    if (len == 0) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT, "block status of an empty range");
        return FALSE;
    }
    if (IMAGE_DEBUG_CHECK(img, VD_DEBUG_IO_BLOCK_STATUS, offset, len, error))
        return FALSE;
    VdImage *layer = img;
    for (guint depth = 0;; depth++) {
        VdExtent ext;
        if (!layer_status(layer, offset, len, &ext, error))
            return FALSE;
        VdImage *below = layer->backing;
        gboolean descend = ext.kind == VD_EXTENT_UNALLOCATED && through_chain && below != NULL;
        if (!descend) {
            status_from_extent(&ext, depth, ext.kind == VD_EXTENT_UNALLOCATED ? NULL : layer, out);
            if (!mark_host_holes(&ext, out, error))
                return FALSE;
            if (ext.kind == VD_EXTENT_UNALLOCATED && !through_chain && layer->backing_name)
                out->flags &= ~(guint32)VD_BLOCK_ZERO; /* the backing file would answer */
            return TRUE;
        }
        len = ext.length;
        if (offset >= below->size) {
            /* Past the end of a shorter backing file the guest reads zero. */
            ext.kind = VD_EXTENT_UNALLOCATED;
            status_from_extent(&ext, depth + 1, NULL, out);
            return TRUE;
        }
        len = MIN(len, below->size - offset);
        layer = below;
    }
}

/* ----- info ----- */

void vd_snapshot_info_free(VdSnapshotInfo *info)
{
    if (info == NULL)
        return;
    g_free(info->id);
    g_free(info->name);
    g_free(info);
}

void vd_image_info_free(VdImageInfo *info)
{
    if (info == NULL)
        return;
    g_free(info->filename);
    g_free(info->backing_filename);
    g_free(info->full_backing_filename);
    g_free(info->backing_format);
    if (info->snapshots != NULL)
        g_ptr_array_unref(info->snapshots);
    if (info->format_specific != NULL)
        g_variant_unref(info->format_specific);
    g_free(info);
}

VdImageInfo *vd_image_get_info(VdImage *img, GError **error)
{
    VdImageInfo *info = g_new0(VdImageInfo, 1);
    info->filename = g_strdup(img->filename);
    info->format = img->drv->name;
    info->virtual_size = img->size;
    info->actual_size = img->file != NULL ? vd_file_allocated(img->file) : 0;
    if (img->backing_name != NULL) {
        info->backing_filename = g_strdup(img->backing_name);
        info->full_backing_filename = vd_resolve_relative(img->filename, img->backing_name);
        info->backing_format =
            g_strdup(img->backing != NULL ? img->backing->drv->name : img->backing_format);
    }
    g_mutex_lock(&img->lock);
    if (img->drv->get_info != NULL)
        img->drv->get_info(img, info);
    g_mutex_unlock(&img->lock);
    if (info->snapshots == NULL && img->drv->list_snapshots != NULL) {
        info->snapshots = vd_image_list_snapshots(img, error);
        if (info->snapshots == NULL) {
            vd_image_info_free(info);
            return NULL;
        }
    }
    /* Drivers may hand over a floating or a sunk reference: own one either way. */
    if (info->format_specific != NULL && g_variant_is_floating(info->format_specific))
        g_variant_ref_sink(info->format_specific);
    return info;
}

/* ----- resize, check, snapshots: dispatch or "not supported" ----- */

gboolean vd_image_resize(VdImage *img, guint64 new_size, gboolean allow_shrink, GError **error)
{
    if (img->drv->resize == NULL)
        return not_supported(img, "resizing", error);
    if (!vd_image_require_writable(img, error))
        return FALSE;
    if (new_size < img->size && !allow_shrink) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "shrinking the image would drop the data past the new end; pass "
                     "--shrink if that is intended");
        return FALSE;
    }
    g_mutex_lock(&img->lock);
    gboolean ok = img->drv->resize(img, new_size, allow_shrink, error);
    if (ok)
        img->size = new_size;
    g_mutex_unlock(&img->lock);
    return ok;
}

gboolean vd_image_resize_preallocated(VdImage *img, guint64 new_size, gboolean allow_shrink,
                                      VdPreallocation prealloc, GError **error)
{
    if (prealloc == VD_PREALLOC_OFF)
        return vd_image_resize(img, new_size, allow_shrink, error);
    if (new_size < img->size) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "Preallocation can only be used for growing images");
        return FALSE;
    }
    if (img->drv->grow_preallocated == NULL) {
        vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                     "the %s format cannot preallocate what a resize adds", img->drv->name);
        return FALSE;
    }
    if (!vd_image_require_writable(img, error))
        return FALSE;
    if (new_size == img->size)
        return TRUE;
    g_mutex_lock(&img->lock);
    gboolean ok = img->drv->grow_preallocated(img, new_size, prealloc, error);
    if (ok)
        img->size = new_size;
    g_mutex_unlock(&img->lock);
    return ok;
}

void vd_check_result_clear(VdCheckResult *res)
{
    if (res->messages != NULL)
        g_ptr_array_unref(res->messages);
    memset(res, 0, sizeof *res);
}

gboolean vd_image_check(VdImage *img, VdCheckRepair repair, VdCheckResult *res, GError **error)
{
    memset(res, 0, sizeof *res);
    res->messages = g_ptr_array_new_with_free_func(g_free);
    if (img->drv->check == NULL)
        return not_supported(img, "checking", error);
    if (repair != VD_CHECK_REPAIR_NONE && !img->read_write) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT, "repair needs the image writable");
        return FALSE;
    }
    g_mutex_lock(&img->lock);
    gboolean ok = img->drv->check(img, repair, res, error);
    g_mutex_unlock(&img->lock);
    return ok;
}

GPtrArray *vd_image_list_snapshots(VdImage *img, GError **error)
{
    if (img->drv->list_snapshots == NULL)
        return g_ptr_array_new_with_free_func((GDestroyNotify)vd_snapshot_info_free);
    g_mutex_lock(&img->lock);
    GPtrArray *list = img->drv->list_snapshots(img, error);
    g_mutex_unlock(&img->lock);
    return list;
}

typedef gboolean (*SnapshotOp)(VdImage *img, const char *name, GError **error);

static gboolean snapshot_call(VdImage *img, SnapshotOp op, const char *name, gboolean writes,
                              GError **error)
{
    if (op == NULL)
        return not_supported(img, "internal snapshots", error);
    /* An empty name is a name to qemu-img. */
    if (name == NULL) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT, "no snapshot name");
        return FALSE;
    }
    if (writes && !vd_image_require_writable(img, error))
        return FALSE;
    g_mutex_lock(&img->lock);
    gboolean ok = op(img, name, error);
    g_mutex_unlock(&img->lock);
    return ok;
}

gboolean vd_image_create_snapshot(VdImage *img, const char *name, GError **error)
{
    return snapshot_call(img, img->drv->create_snapshot, name, TRUE, error);
}

gboolean vd_image_apply_snapshot(VdImage *img, const char *name_or_id, GError **error)
{
    return snapshot_call(img, img->drv->apply_snapshot, name_or_id, TRUE, error);
}

gboolean vd_image_delete_snapshot(VdImage *img, const char *name_or_id, GError **error)
{
    return snapshot_call(img, img->drv->delete_snapshot, name_or_id, TRUE, error);
}

gboolean vd_image_load_snapshot(VdImage *img, const char *name_or_id, GError **error)
{
    if (!snapshot_call(img, img->drv->load_snapshot, name_or_id, FALSE, error))
        return FALSE;
    img->read_write = FALSE;
    return TRUE;
}

/* ----- create ----- */

static gboolean validate_create_options(const VdDriver *drv, VdOptions *opts, GError **error)
{
    g_autoptr(GPtrArray) keys = vd_options_keys(opts);
    for (guint i = 0; i < keys->len; i++) {
        const char *key = keys->pdata[i];
        if (g_str_equal(key, "size"))
            continue;
        if (!create_option_known(drv, key)) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "the %s format has no option '%s'", drv->name, key);
            return FALSE;
        }
    }
    return TRUE;
}

VdImage *vd_create_open_backing(const VdCreateParams *params, const char *format, VdOpenFlags flags,
                                GError **error)
{
    const VdConfinement *c = params->confine;
    const char *name = params->backing_file;
    if (c == NULL && params->in_descriptor && strchr(params->path, '/') == NULL &&
        !g_path_is_absolute(name)) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "%s cannot be found: the image is made in a descriptor without a folder", name);
        return NULL;
    }
    if (c == NULL) {
        g_autofree char *path = vd_resolve_relative(params->path, name);
        return vd_image_open(path, format, flags, error);
    }
    g_autofree char *label = NULL;
    g_autofree char *rel = NULL;
    if (!locate_beneath(c, params->name_beneath, name, &label, &rel, error))
        return NULL;
    g_autoptr(VdFile) file = vd_file_open_beneath(c, rel, label, FALSE, error);
    if (file == NULL)
        return NULL;
    return vd_image_open_fd_confined(vd_file_fd(file), rel, format, flags, NULL, NULL, c, error);
}

/* Fill in the backing format (probed when not given) and, for size 0, the
 * size from the backing file; both need the backing file to open. */
static gboolean inspect_backing(const VdCreateParams *params, char **backing_format, guint64 *size,
                                GError **error)
{
    /* Force-share, as qemu-img create reads it: an overlay may be made on
     * a disk a running VM writes (an external snapshot). */
    g_autoptr(VdImage) bimg =
        vd_create_open_backing(params, *backing_format, VD_OPEN_FORCE_SHARE, error);
    if (bimg == NULL) {
        g_prefix_error(error, "%s: backing file: ", params->path);
        return FALSE;
    }
    if (*backing_format == NULL)
        *backing_format = g_strdup(bimg->drv->name);
    if (*size == 0)
        *size = bimg->size;
    return TRUE;
}

/* Everything vd_image_create checks before it touches a file: the driver,
 * the options, the backing file; fills params (its strings owned by opts
 * or *backing_format; where the image goes is set there already). */
static const VdDriver *prepare_create(const char *path, const char *format, guint64 size,
                                      VdOptions *opts, char **backing_format,
                                      VdCreateParams *params, VdOpenFlags flags, GError **error)
{
    params->path = path;
    const VdDriver *drv = require_driver(format, error);
    if (drv == NULL)
        return NULL;
    if (drv->create == NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED, "creating %s images is not supported",
                    drv->name);
        return NULL;
    }
    if (!validate_create_options(drv, opts, error))
        return NULL;
    if (vd_options_get(opts, "size") != NULL && !vd_option_size(opts, "size", 0, &size, error))
        return NULL;
    const char *backing = vd_options_get(opts, "backing_file");
    *backing_format = g_strdup(vd_options_get(opts, "backing_fmt"));
    params->backing_file = backing;
    if (backing != NULL && !(flags & VD_OPEN_NO_BACKING) &&
        !inspect_backing(params, backing_format, &size, error))
        return NULL;
    /* Unchecked (-u), the backing format must still name a format. */
    if (backing != NULL && *backing_format != NULL && find_driver(*backing_format) == NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT,
                    "%s: unrecognized backing format '%s'", path, *backing_format);
        return NULL;
    }
    if (backing == NULL && *backing_format != NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "a backing format was given without a backing file");
        return NULL;
    }
    /* Image formats count in 512-byte sectors: round up as qemu-img does,
     * so an odd-sized source still fits. Raw keeps the exact size. */
    if (drv != &vd_driver_raw) {
        if (size > G_MAXUINT64 - 511) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "size is too large");
            return NULL;
        }
        size = (size + 511) & ~(guint64)511;
    }
    params->size = size;
    params->options = opts;
    params->backing_format = *backing_format;
    return drv;
}

gboolean vd_image_create(const char *path, const char *format, guint64 size, VdOptions *opts,
                         GError **error)
{
    return vd_image_create_with_secrets(path, format, size, opts, NULL, error);
}

gboolean vd_image_create_with_secrets(const char *path, const char *format, guint64 size,
                                      VdOptions *opts, VdSecrets *secrets, GError **error)
{
    return vd_image_create_flags(path, format, size, opts, secrets, 0, error);
}

gboolean vd_image_create_unsafe(const char *path, const char *format, guint64 size, VdOptions *opts,
                                VdSecrets *secrets, GError **error)
{
    return vd_image_create_flags(path, format, size, opts, secrets, VD_OPEN_NO_BACKING, error);
}

/* A new image on an NBD export, as qemu makes one on a protocol that
 * makes no files: the export keeps its size (a raw image must fit in it),
 * its first sector is zeroed so that nothing there probes as an older
 * image, and the format is written from offset 0. No file is made beside
 * it. */
static gboolean create_on_nbd(const char *path, const VdDriver *drv, VdCreateParams *params,
                              VdOpenFlags flags, GError **error)
{
    /* Formats that find room for new data at the end of their file would
     * write past the export's: only those that place it themselves. */
    static const char *const placed[] = { "raw", "qcow2", "vdi", "luks", NULL };
    if (!g_strv_contains(placed, drv->name)) {
        vd_set_file_error(error, path, VD_ERROR_NOT_SUPPORTED,
                          "a %s image grows by appending to its file, which an NBD export of "
                          "fixed size cannot take: make it raw, qcow2 or vdi there",
                          drv->name);
        return FALSE;
    }
    g_autoptr(VdFile) file = vd_file_open_nbd(path, NULL, TRUE, error);
    guint64 size = 0;
    if (file == NULL || !vd_file_size(file, &size, error))
        return FALSE;
    if (drv == &vd_driver_raw && params->size > size) {
        vd_set_file_error(error, path, VD_ERROR_NO_SPACE,
                          "the NBD export is %" G_GUINT64_FORMAT
                          " bytes, smaller than the %" G_GUINT64_FORMAT
                          " bytes asked for (an export cannot grow)",
                          size, params->size);
        return FALSE;
    }
    vd_file_set_no_flush(file, (flags & VD_OPEN_NO_FLUSH) != 0);
    params->no_flush = (flags & VD_OPEN_NO_FLUSH) != 0;
    params->in_descriptor = TRUE;
    return vd_file_write_zeroes(file, 0, MIN(size, 512), FALSE, error) &&
           drv->create(file, params, error) && vd_file_sync(file, error);
}

gboolean vd_image_create_flags(const char *path, const char *format, guint64 size, VdOptions *opts,
                               VdSecrets *secrets, VdOpenFlags flags, GError **error)
{
    g_autoptr(VdOptions) empty = NULL;
    if (opts == NULL)
        opts = empty = vd_options_new();
    g_autofree char *backing_format = NULL;
    VdCreateParams params = { 0 };
    const VdDriver *drv =
        prepare_create(path, format, size, opts, &backing_format, &params, flags, error);
    if (drv == NULL)
        return FALSE;
    params.secrets = secrets;
    if (vd_nbd_is_name(path))
        return create_on_nbd(path, drv, &params, flags, error);
    if (vd_rbd_is_name(path))
        return vd_rbd_create_format(path, drv, &params, (flags & VD_OPEN_NO_FLUSH) != 0, error);
    /* A failed create removes the file only if it made it: a file the
     * caller named that was there before keeps its name (as with
     * qemu-img), and no folder entry this call did not make is removed. */
    struct stat st;
    gboolean existed = lstat(path, &st) == 0;
    g_autoptr(VdFile) file = vd_file_create(path, error);
    if (file == NULL)
        return FALSE;
    /* The other formats find room for new data at the file's end, which a
     * device does not have: a device holds a raw disk. */
    if (vd_file_is_block(file) && drv != &vd_driver_raw) {
        vd_set_file_error(error, path, VD_ERROR_NOT_SUPPORTED,
                          "is a block device: vdisk makes only raw images on one, not %s",
                          drv->name);
        return FALSE;
    }
    apply_file_options(file, opts);
    gboolean no_flush = (flags & VD_OPEN_NO_FLUSH) != 0;
    vd_file_set_no_flush(file, no_flush);
    params.no_flush = no_flush;
    /* The new image, and its name in the folder (with the extent files a
     * vmdk made beside it), are on stable storage before success. */
    if (!drv->create(file, &params, error) || !vd_file_sync(file, error) ||
        (!no_flush && !vd_sync_parent_dir(path, error))) {
        if (!existed)
            unlink(path);
        else
            vd_file_truncate(file, 0, NULL); /* never left looking like a whole image */
        return FALSE;
    }
    return TRUE;
}

gboolean vd_image_create_fd(int fd, const char *name, const char *format, guint64 size,
                            VdOptions *opts, GError **error)
{
    return vd_image_create_fd_with_secrets(fd, name, format, size, opts, NULL, error);
}

gboolean vd_image_create_fd_with_secrets(int fd, const char *name, const char *format, guint64 size,
                                         VdOptions *opts, VdSecrets *secrets, GError **error)
{
    return vd_image_create_fd_flags(fd, name, format, size, opts, secrets, 0, error);
}

/* vd_image_create_fd_flags and vd_image_create_fd_confined: label names
 * the image in messages, beneath beneath confine (both NULL without one). */
static gboolean create_fd(int fd, const char *label, const char *beneath, const char *format,
                          guint64 size, VdOptions *opts, VdSecrets *secrets,
                          const VdConfinement *confine, VdOpenFlags flags, GError **error)
{
    g_autoptr(VdOptions) empty = NULL;
    if (opts == NULL)
        opts = empty = vd_options_new();
    g_autofree char *backing_format = NULL;
    VdCreateParams params = { .in_descriptor = TRUE, .confine = confine, .name_beneath = beneath };
    const VdDriver *drv =
        prepare_create(label, format, size, opts, &backing_format, &params, flags, error);
    if (drv == NULL)
        return FALSE;
    params.secrets = secrets;
    g_autoptr(VdFile) file = vd_file_open_fd(fd, label, error);
    if (file == NULL)
        return FALSE;
    if (!vd_file_is_writable(file)) {
        vd_set_file_error(error, label, VD_ERROR_INVALID_ARGUMENT,
                          "descriptor is not open for reading and writing");
        return FALSE;
    }
    /* Locked and found free before anything is cut, as a path's create. */
    if (!vd_file_lock(file, VD_LOCK_CREATE, error) || !vd_file_truncate(file, 0, error))
        return FALSE;
    params.no_flush = (flags & VD_OPEN_NO_FLUSH) != 0;
    vd_file_set_no_flush(file, params.no_flush);
    /* The caller made the file: syncing its folder entry is the caller's. */
    if (!drv->create(file, &params, error) || !vd_file_sync(file, error)) {
        vd_file_truncate(file, 0, NULL);
        return FALSE;
    }
    return TRUE;
}

gboolean vd_image_create_fd_flags(int fd, const char *name, const char *format, guint64 size,
                                  VdOptions *opts, VdSecrets *secrets, VdOpenFlags flags,
                                  GError **error)
{
    g_autofree char *fallback = g_strdup_printf("fd %d", fd);
    return create_fd(fd, name != NULL ? name : fallback, NULL, format, size, opts, secrets, NULL,
                     flags, error);
}

gboolean vd_image_create_fd_confined(int fd, const char *name, const char *format, guint64 size,
                                     VdOptions *opts, VdSecrets *secrets,
                                     const VdConfinement *confine, GError **error)
{
    g_return_val_if_fail(confine != NULL && confine->dir_path != NULL, FALSE);
    g_autofree char *rel = confined_top_name(confine, name, error);
    if (rel == NULL)
        return FALSE;
    g_autofree char *label = g_build_filename(confine->dir_path, rel, NULL);
    return create_fd(fd, label, rel, format, size, opts, secrets, confine, 0, error);
}
