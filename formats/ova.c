/* OVA appliances: a tar archive holding an .ovf descriptor and the disks
 * (usually streamOptimized vmdk). A disk is read in place, through a slice
 * of the archive file, never unpacked to a temporary file.
 *
 * Tar facts used (POSIX ustar): 512-byte header blocks; name at 0 (100
 * bytes), size at 124 (12 bytes, octal, or base-256 when the top bit of the
 * first byte is set), type flag at 156, "ustar" at 257, name prefix at 345
 * (155 bytes). Member data follows its header, padded to 512 bytes. GNU
 * long names (type 'L') and pax headers (type 'x', key "path") carry names
 * longer than 100 bytes in the data of an extra member before the file.
 */
#include "vdisk-driver.h"

#define TAR_BLOCK 512
#define TAR_NAME 0
#define TAR_NAME_LEN 100
#define TAR_SIZE 124
#define TAR_SIZE_LEN 12
#define TAR_TYPE 156
#define TAR_MAGIC 257
#define TAR_PREFIX 345
#define TAR_PREFIX_LEN 155
#define MAX_LONG_NAME 4096
#define MAX_MEMBERS 10000

typedef struct {
    char *name;
    guint64 offset; /* of the data */
    guint64 size;
} TarMember;

static void tar_member_free(TarMember *m)
{
    g_free(m->name);
    g_free(m);
}

static gboolean is_tar_header(const guint8 *h) { return memcmp(h + TAR_MAGIC, "ustar", 5) == 0; }

static gboolean parse_size(const guint8 *field, guint64 *out)
{
    if (field[0] & 0x80) { /* base-256 for members of 8 GiB and more */
        guint64 v = field[0] & 0x7f;
        for (int i = 1; i < TAR_SIZE_LEN; i++) {
            if (v >> 56)
                return FALSE;
            v = v << 8 | field[i];
        }
        *out = v;
        return TRUE;
    }
    guint64 v = 0;
    for (int i = 0; i < TAR_SIZE_LEN && field[i] != 0 && field[i] != ' '; i++) {
        if (field[i] < '0' || field[i] > '7' || v >> 60)
            return FALSE;
        v = v * 8 + (guint64)(field[i] - '0');
    }
    *out = v;
    return TRUE;
}

static char *header_name(const guint8 *h)
{
    g_autofree char *name = g_strndup((const char *)h + TAR_NAME, TAR_NAME_LEN);
    g_autofree char *prefix = g_strndup((const char *)h + TAR_PREFIX, TAR_PREFIX_LEN);
    if (*prefix != '\0')
        return g_strconcat(prefix, "/", name, NULL);
    return g_steal_pointer(&name);
}

/* The "path" record of a pax extended header, or NULL. */
static char *pax_path(const char *data, gsize len)
{
    const char *p = data, *end = data + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (gsize)(end - p));
        if (nl == NULL)
            break;
        const char *space = memchr(p, ' ', (gsize)(nl - p));
        if (space != NULL && g_str_has_prefix(space + 1, "path="))
            return g_strndup(space + 6, (gsize)(nl - space - 6));
        p = nl + 1;
    }
    return NULL;
}

static GPtrArray *read_members(VdFile *file, GError **error)
{
    g_autoptr(GPtrArray) members = g_ptr_array_new_with_free_func((GDestroyNotify)tar_member_free);
    guint64 size;
    if (!vd_file_size(file, &size, error))
        return NULL;
    g_autofree char *long_name = NULL;
    guint64 pos = 0;
    while (pos + TAR_BLOCK <= size && members->len < MAX_MEMBERS) {
        guint8 h[TAR_BLOCK];
        if (!vd_file_pread(file, pos, h, sizeof h, error))
            return NULL;
        if (vd_buffer_is_zero(h, sizeof h))
            break; /* end-of-archive marker */
        guint64 len;
        if (!is_tar_header(h) || !parse_size(h + TAR_SIZE, &len) || len > size - pos - TAR_BLOCK) {
            vd_set_file_error(error, vd_file_name(file), VD_ERROR_CORRUPT,
                              "tar header at offset %" G_GUINT64_FORMAT " is damaged", pos);
            return NULL;
        }
        guint64 data = pos + TAR_BLOCK;
        char type = (char)h[TAR_TYPE];
        if (type == 'L' || type == 'x') {
            gsize n = (gsize)MIN(len, (guint64)MAX_LONG_NAME);
            g_autofree char *text = g_malloc0(n + 1);
            if (!vd_file_pread(file, data, text, n, error))
                return NULL;
            g_free(long_name);
            long_name = type == 'L' ? g_strdup(text) : pax_path(text, n);
        } else if (type == '0' || type == '\0') {
            TarMember *m = g_new0(TarMember, 1);
            m->name = long_name != NULL ? g_steal_pointer(&long_name) : header_name(h);
            m->offset = data;
            m->size = len;
            g_ptr_array_add(members, m);
        } else {
            g_clear_pointer(&long_name, g_free);
        }
        pos = data + (len + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
    }
    return g_steal_pointer(&members);
}

static gboolean is_disk_name(const char *name)
{
    g_autofree char *lower = g_ascii_strdown(name, -1);
    static const char *const exts[] = { ".vmdk", ".vdi", ".qcow2", ".img", ".raw", ".iso" };
    for (gsize i = 0; i < G_N_ELEMENTS(exts); i++)
        if (g_str_has_suffix(lower, exts[i]))
            return TRUE;
    return FALSE;
}

gboolean vd_ova_probe(VdFile *file)
{
    guint8 h[TAR_BLOCK];
    if (!vd_file_pread(file, 0, h, sizeof h, NULL) || !is_tar_header(h))
        return FALSE;
    /* The OVF standard puts the descriptor first in the archive. */
    g_autofree char *name = header_name(h);
    g_autofree char *lower = g_ascii_strdown(name, -1);
    return g_str_has_suffix(lower, ".ovf");
}

/* The disk members of the archive, in archive order. */
static GPtrArray *disk_members(VdFile *file, GError **error)
{
    g_autoptr(GPtrArray) all = read_members(file, error);
    if (all == NULL)
        return NULL;
    GPtrArray *disks = g_ptr_array_new_with_free_func((GDestroyNotify)tar_member_free);
    for (guint i = 0; i < all->len; i++) {
        TarMember *m = all->pdata[i];
        if (is_disk_name(m->name))
            g_ptr_array_add(disks, g_ptr_array_steal_index(all, i--));
    }
    return disks;
}

GPtrArray *vd_ova_list_disks(const char *path, GError **error)
{
    g_autoptr(VdFile) file = vd_file_open(path, FALSE, error);
    if (file == NULL)
        return NULL;
    g_autoptr(GPtrArray) disks = disk_members(file, error);
    if (disks == NULL)
        return NULL;
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; i < disks->len; i++)
        g_ptr_array_add(names, g_strdup(((TarMember *)disks->pdata[i])->name));
    return names;
}

/* An OVF descriptor is a few KiB to a few hundred; this bounds what a
 * hostile archive makes us read. */
#define MAX_DESCRIPTOR (4 * 1024 * 1024)

char *vd_ova_read_descriptor(const char *path, gsize *len, GError **error)
{
    g_autoptr(VdFile) file = vd_file_open(path, FALSE, error);
    if (file == NULL)
        return NULL;
    g_autoptr(GPtrArray) members = read_members(file, error);
    if (members == NULL)
        return NULL;
    for (guint i = 0; i < members->len; i++) {
        const TarMember *m = members->pdata[i];
        g_autofree char *lower = g_ascii_strdown(m->name, -1);
        if (!g_str_has_suffix(lower, ".ovf"))
            continue;
        if (m->size > MAX_DESCRIPTOR) {
            vd_set_file_error(error, path, VD_ERROR_NOT_SUPPORTED,
                              "its descriptor %s is %" G_GUINT64_FORMAT
                              " bytes, more than the %d read",
                              m->name, m->size, MAX_DESCRIPTOR);
            return NULL;
        }
        g_autofree char *text = g_malloc((gsize)m->size + 1);
        if (!vd_file_pread(file, m->offset, text, (gsize)m->size, error))
            return NULL;
        text[m->size] = '\0';
        *len = (gsize)m->size;
        return g_steal_pointer(&text);
    }
    vd_set_file_error(error, path, VD_ERROR_NOT_FOUND, "the appliance holds no .ovf descriptor");
    return NULL;
}

VdFile *vd_ova_open_disk(VdFile *file, int index, char **member_name, GError **error)
{
    g_autoptr(GPtrArray) disks = disk_members(file, error);
    if (disks == NULL)
        return NULL;
    if (disks->len == 0) {
        vd_set_file_error(error, vd_file_name(file), VD_ERROR_NOT_FOUND,
                          "the appliance holds no disk image");
        return NULL;
    }
    if (index < 0 && disks->len > 1) {
        vd_set_file_error(error, vd_file_name(file), VD_ERROR_INVALID_ARGUMENT,
                          "the appliance holds %u disks; pick one with --disk N (1 to %u)",
                          disks->len, disks->len);
        return NULL;
    }
    if (index < 0)
        index = 0;
    if ((guint)index >= disks->len) {
        vd_set_file_error(error, vd_file_name(file), VD_ERROR_NOT_FOUND,
                          "the appliance has no disk %d (it holds %u)", index + 1, disks->len);
        return NULL;
    }
    TarMember *m = disks->pdata[index];
    g_autofree char *label = g_strdup_printf("%s:%s", vd_file_name(file), m->name);
    VdFile *slice = vd_file_open_slice(file, m->offset, m->size, label, error);
    if (slice != NULL && member_name != NULL)
        *member_name = g_strdup(m->name);
    return slice;
}
