/* vmdk descriptors: the small text that names a disk's extents, its content
 * id (CID) and its parent. Parsing is bounded (size, line length, extent
 * count) because the text comes from untrusted images, and extent names are
 * checked so that they never leave the descriptor's folder.
 */
#include "vmdk.h"

#include <errno.h>
#include <stdlib.h>

static void extent_line_free(gpointer data)
{
    VmdkExtentLine *line = data;
    g_free(line->filename);
    g_free(line);
}

void vmdk_descriptor_free(VmdkDescriptor *desc)
{
    if (desc == NULL)
        return;
    g_free(desc->create_type);
    g_free(desc->parent_hint);
    g_ptr_array_unref(desc->extents);
    g_free(desc);
}

VmdkDescriptor *vmdk_descriptor_new(void)
{
    VmdkDescriptor *desc = g_new0(VmdkDescriptor, 1);
    desc->parent_cid = VMDK_NO_PARENT_CID;
    desc->extents = g_ptr_array_new_with_free_func(extent_line_free);
    return desc;
}

/* ----- small lexical helpers ----- */

static const char *skip_blanks(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* The value of key = "value" with blanks and one pair of quotes removed. */
static char *unquote(const char *value)
{
    const char *p = skip_blanks(value);
    gsize len = strlen(p);
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    if (len >= 2 && p[0] == '"' && p[len - 1] == '"')
        return g_strndup(p + 1, len - 2);
    return g_strndup(p, len);
}

static gboolean parse_u64(const char *text, int base, guint64 *out)
{
    if (text == NULL || *text == '\0' || *text == '-')
        return FALSE;
    char *end;
    errno = 0;
    guint64 v = g_ascii_strtoull(text, &end, base);
    if (errno != 0 || end == text || *skip_blanks(end) != '\0')
        return FALSE;
    *out = v;
    return TRUE;
}

/* CIDs are 32-bit hex numbers; a malformed one is kept as 0 (as qemu does)
 * rather than refusing a disk over a label. */
static guint32 parse_cid(const char *value, guint32 dflt)
{
    g_autofree char *v = unquote(value);
    guint64 cid;
    if (!parse_u64(v, 16, &cid) || cid > G_MAXUINT32)
        return dflt;
    return (guint32)cid;
}

/* ----- extent lines ----- */

static gboolean parse_access(const char *word, VmdkAccess *out)
{
    static const struct {
        const char *name;
        VmdkAccess access;
    } map[] = { { "RW", VMDK_ACCESS_RW },
                { "RDONLY", VMDK_ACCESS_RDONLY },
                { "NOACCESS", VMDK_ACCESS_NOACCESS } };
    for (gsize i = 0; i < G_N_ELEMENTS(map); i++) {
        if (g_str_equal(word, map[i].name)) {
            *out = map[i].access;
            return TRUE;
        }
    }
    return FALSE;
}

static gboolean parse_extent_type(const char *word, VmdkExtentType *out, const char *filename,
                                  GError **error)
{
    static const struct {
        const char *name;
        VmdkExtentType type;
    } map[] = {
        { "FLAT", VMDK_EXTENT_FLAT },         { "VMFS", VMDK_EXTENT_FLAT },
        { "SPARSE", VMDK_EXTENT_SPARSE },     { "ZERO", VMDK_EXTENT_ZERO },
        { "SESPARSE", VMDK_EXTENT_SESPARSE }, { "VMFSSPARSE", VMDK_EXTENT_VMFSSPARSE },
    };
    for (gsize i = 0; i < G_N_ELEMENTS(map); i++) {
        if (g_str_equal(word, map[i].name)) {
            *out = map[i].type;
            return TRUE;
        }
    }
    if (g_str_equal(word, "VMFSRDM") || g_str_equal(word, "VMFSRAW"))
        vd_set_file_error(error, filename, VD_ERROR_UNSUPPORTED_FORMAT,
                          "raw device mapping extents (%s) are not supported", word);
    else
        vd_set_file_error(error, filename, VD_ERROR_CORRUPT, "unknown extent type '%s'", word);
    return FALSE;
}

/* The next blank-separated word of *p; a quoted word may hold blanks. */
static char *next_word(const char **p)
{
    const char *s = skip_blanks(*p);
    if (*s == '\0')
        return NULL;
    const char *end;
    char *word;
    if (*s == '"') {
        end = strchr(s + 1, '"');
        if (end == NULL)
            return NULL;
        word = g_strndup(s + 1, (gsize)(end - s - 1));
        end++;
    } else {
        end = s;
        while (*end != '\0' && *end != ' ' && *end != '\t')
            end++;
        word = g_strndup(s, (gsize)(end - s));
    }
    *p = end;
    return word;
}

gboolean vmdk_extent_name_is_safe(const char *name, const char *filename, GError **error)
{
    if (*name == '\0') {
        vd_set_file_error(error, filename, VD_ERROR_CORRUPT, "an extent has an empty file name");
        return FALSE;
    }
    if (g_str_has_prefix(name, "\\\\") || strchr(name, '\\') != NULL ||
        (g_ascii_isalpha(name[0]) && name[1] == ':')) {
        vd_set_file_error(error, filename, VD_ERROR_UNSUPPORTED_FORMAT,
                          "extent '%s' is a Windows device or path; raw disk access is not "
                          "supported",
                          name);
        return FALSE;
    }
    if (g_path_is_absolute(name)) {
        vd_set_file_error(error, filename, VD_ERROR_CORRUPT,
                          "extent '%s' is an absolute path; extents must lie next to the "
                          "descriptor",
                          name);
        return FALSE;
    }
    g_auto(GStrv) parts = g_strsplit(name, "/", -1);
    for (guint i = 0; parts[i] != NULL; i++) {
        if (g_str_equal(parts[i], "..")) {
            vd_set_file_error(error, filename, VD_ERROR_CORRUPT,
                              "extent '%s' leaves the descriptor's folder", name);
            return FALSE;
        }
    }
    return TRUE;
}

/* Largest guest size a vmdk can describe without overflowing byte counts. */
#define MAX_SECTORS (G_MAXINT64 / VMDK_SECTOR)

static gboolean parse_extent_line(VmdkDescriptor *desc, const char *line, const char *filename,
                                  GError **error)
{
    const char *p = line;
    g_autofree char *access = next_word(&p);
    g_autofree char *size = next_word(&p);
    g_autofree char *type = next_word(&p);
    g_autoptr(GError) local = NULL;
    VmdkExtentLine ext = { 0 };
    if (access == NULL || !parse_access(access, &ext.access) || type == NULL ||
        !parse_u64(size, 10, &ext.sectors)) {
        vd_set_file_error(error, filename, VD_ERROR_CORRUPT, "malformed extent line '%s'", line);
        return FALSE;
    }
    if (ext.sectors > MAX_SECTORS) {
        vd_set_file_error(error, filename, VD_ERROR_CORRUPT,
                          "extent size %" G_GUINT64_FORMAT " sectors is too large", ext.sectors);
        return FALSE;
    }
    if (!parse_extent_type(type, &ext.type, filename, error))
        return FALSE;
    g_autofree char *name = next_word(&p);
    g_autofree char *offset = next_word(&p);
    if (name == NULL && ext.type != VMDK_EXTENT_ZERO) {
        vd_set_file_error(error, filename, VD_ERROR_CORRUPT, "extent line '%s' names no file",
                          line);
        return FALSE;
    }
    /* A VMFS extent is a whole file and a FLAT one starts at its offset:
     * qemu refuses either line without its form. */
    if ((g_str_equal(type, "VMFS") && offset != NULL) ||
        (g_str_equal(type, "FLAT") && offset == NULL)) {
        vd_set_file_error(error, filename, VD_ERROR_CORRUPT, "malformed extent line '%s'", line);
        return FALSE;
    }
    if (offset != NULL && (!parse_u64(offset, 10, &ext.offset) || ext.offset > MAX_SECTORS)) {
        vd_set_file_error(error, filename, VD_ERROR_CORRUPT, "bad extent offset in '%s'", line);
        return FALSE;
    }
    if (desc->extents->len >= VMDK_MAX_EXTENTS) {
        vd_set_file_error(error, filename, VD_ERROR_CORRUPT, "more than %u extents",
                          VMDK_MAX_EXTENTS);
        return FALSE;
    }
    VmdkExtentLine *copy = g_new(VmdkExtentLine, 1);
    *copy = ext;
    copy->filename = g_steal_pointer(&name);
    g_ptr_array_add(desc->extents, copy);
    return TRUE;
}

static gboolean is_extent_line(const char *line)
{
    return g_str_has_prefix(line, "RW ") || g_str_has_prefix(line, "RDONLY ") ||
           g_str_has_prefix(line, "NOACCESS ") || g_str_has_prefix(line, "RW\t") ||
           g_str_has_prefix(line, "RDONLY\t") || g_str_has_prefix(line, "NOACCESS\t");
}

/* ----- key = value lines ----- */

static void parse_key_value(VmdkDescriptor *desc, const char *line)
{
    const char *eq = strchr(line, '=');
    if (eq == NULL)
        return; /* VMware ignores lines it does not understand; so do we */
    g_autofree char *key = g_strstrip(g_strndup(line, (gsize)(eq - line)));
    const char *value = eq + 1;
    if (g_str_equal(key, "CID")) {
        desc->cid = parse_cid(value, 0);
    } else if (g_str_equal(key, "parentCID")) {
        desc->parent_cid = parse_cid(value, VMDK_NO_PARENT_CID);
    } else if (g_str_equal(key, "createType")) {
        g_free(desc->create_type);
        desc->create_type = unquote(value);
    } else if (g_str_equal(key, "parentFileNameHint")) {
        g_free(desc->parent_hint);
        desc->parent_hint = unquote(value);
    }
}

/* ----- the whole text ----- */

static gboolean parse_line(VmdkDescriptor *desc, char *line, const char *filename, GError **error)
{
    g_strstrip(line); /* also drops the \r of CRLF descriptors */
    if (*line == '\0' || *line == '#')
        return TRUE;
    if (is_extent_line(line))
        return parse_extent_line(desc, line, filename, error);
    parse_key_value(desc, line);
    return TRUE;
}

static gboolean looks_like_descriptor(const char *text)
{
    return strstr(text, "# Disk DescriptorFile") != NULL || g_str_has_prefix(text, "version=") ||
           strstr(text, "\nversion=") != NULL;
}

VmdkDescriptor *vmdk_descriptor_parse(const char *text, gsize len, const char *filename,
                                      gboolean embedded, GError **error)
{
    if (len > VMDK_MAX_DESCRIPTOR) {
        vd_set_file_error(error, filename, VD_ERROR_CORRUPT,
                          "descriptor of %" G_GSIZE_FORMAT " bytes is larger than %u bytes", len,
                          VMDK_MAX_DESCRIPTOR);
        return NULL;
    }
    g_autofree char *copy = g_strndup(text, len); /* stops at the first NUL */
    if (!looks_like_descriptor(copy)) {
        vd_set_file_error(error, filename, VD_ERROR_UNSUPPORTED_FORMAT, "not a vmdk descriptor");
        return NULL;
    }
    g_autoptr(VmdkDescriptor) desc = vmdk_descriptor_new();
    for (char *line = copy; line != NULL && *line != '\0';) {
        char *nl = strchr(line, '\n');
        if (nl != NULL)
            *nl = '\0';
        if (strlen(line) > VMDK_MAX_LINE) {
            vd_set_file_error(error, filename, VD_ERROR_CORRUPT,
                              "descriptor line longer than %u bytes", VMDK_MAX_LINE);
            return NULL;
        }
        if (!parse_line(desc, line, filename, error))
            return NULL;
        line = nl != NULL ? nl + 1 : NULL;
    }
    if (!embedded && desc->extents->len == 0) {
        vd_set_file_error(error, filename, VD_ERROR_CORRUPT, "descriptor lists no extents");
        return NULL;
    }
    return g_steal_pointer(&desc);
}

/* ----- writing ----- */

static const char *extent_type_name(VmdkExtentType type)
{
    switch (type) {
    case VMDK_EXTENT_FLAT:
        return "FLAT";
    case VMDK_EXTENT_ZERO:
        return "ZERO";
    case VMDK_EXTENT_SESPARSE:
        return "SESPARSE";
    case VMDK_EXTENT_VMFSSPARSE:
        return "VMFSSPARSE";
    case VMDK_EXTENT_SPARSE:
        break;
    }
    return "SPARSE";
}

static void append_extent_line(GString *out, const VmdkExtentLine *ext)
{
    static const char *const access[] = { "RW", "RDONLY", "NOACCESS" };
    g_string_append_printf(out, "%s %" G_GUINT64_FORMAT " %s", access[ext->access], ext->sectors,
                           extent_type_name(ext->type));
    if (ext->type != VMDK_EXTENT_ZERO)
        g_string_append_printf(out, " \"%s\"", ext->filename);
    if (ext->type == VMDK_EXTENT_FLAT)
        g_string_append_printf(out, " %" G_GUINT64_FORMAT, ext->offset);
    g_string_append_c(out, '\n');
}

/* The legacy CHS geometry VMware writes: 16 heads for IDE, 255 for SCSI,
 * 63 sectors per track, cylinders capped at the BIOS limit. */
static void geometry(const VmdkDdb *ddb, guint64 *cylinders, guint *heads)
{
    *heads = g_str_equal(ddb->adapter_type, "ide") ? 16 : 255;
    *cylinders = MIN(ddb->sectors / (*heads * 63u), (guint64)16383);
}

char *vmdk_descriptor_format(const VmdkDescriptor *desc, const VmdkDdb *ddb)
{
    GString *out = g_string_new("# Disk DescriptorFile\nversion=1\n");
    g_string_append_printf(out, "CID=%08x\nparentCID=%08x\ncreateType=\"%s\"\n", desc->cid,
                           desc->parent_cid, desc->create_type);
    if (desc->parent_hint != NULL)
        g_string_append_printf(out, "parentFileNameHint=\"%s\"\n", desc->parent_hint);
    g_string_append(out, "\n# Extent description\n");
    for (guint i = 0; i < desc->extents->len; i++)
        append_extent_line(out, desc->extents->pdata[i]);
    guint64 cylinders;
    guint heads;
    geometry(ddb, &cylinders, &heads);
    g_string_append_printf(out,
                           "\n# The Disk Data Base\n#DDB\n\n"
                           "ddb.virtualHWVersion = \"%s\"\n"
                           "ddb.geometry.cylinders = \"%" G_GUINT64_FORMAT "\"\n"
                           "ddb.geometry.heads = \"%u\"\n"
                           "ddb.geometry.sectors = \"63\"\n"
                           "ddb.adapterType = \"%s\"\n"
                           "ddb.toolsVersion = \"%s\"\n",
                           ddb->hwversion, cylinders, heads, ddb->adapter_type, ddb->toolsversion);
    return g_string_free(out, FALSE);
}

char *vmdk_descriptor_replace_cid(const char *text, gsize len, guint32 cid)
{
    g_autofree char *copy = g_strndup(text, len);
    g_auto(GStrv) lines = g_strsplit(copy, "\n", -1);
    for (guint i = 0; lines[i] != NULL; i++) {
        const char *p = skip_blanks(lines[i]);
        if (!g_str_has_prefix(p, "CID") || *skip_blanks(p + 3) != '=')
            continue;
        gboolean crlf = g_str_has_suffix(lines[i], "\r");
        g_free(lines[i]);
        lines[i] = g_strdup_printf("CID=%08x%s", cid, crlf ? "\r" : "");
        break;
    }
    return g_strjoinv("\n", lines);
}
