/* What a file that probed as raw looks like: a disk, or something a user
 * picked by mistake (a VM's settings, an empty or tiny file, text).
 *
 * Raw has no header, so probing settles on it for anything no driver
 * claims; a copy of a 2 KiB .vbox "imported" as a disk succeeds and
 * leaves the user with a volume that boots nothing. Real raw disks are a
 * whole number of 512-byte sectors (qemu-img, dd of a device, an ISO's
 * 2 KiB blocks) and start with binary: zeros, a boot sector, a
 * filesystem's superblock. Text through their first sectors they never
 * are, so what is text is named, and the caller who means it still gets
 * the copy by naming the format. */
#include "vdisk.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECTOR 512
/* How much of the start is looked at: a settings file says what it is in
 * its first lines; a disk's first sectors are never all text. */
#define LOOK_BYTES 4096

/* Valid UTF-8 without NUL or control characters other than the white
 * space text files have. A sequence cut at the end of what was read
 * (truncated) still counts. */
static gboolean is_text(const char *buf, gsize len, gboolean truncated)
{
    const char *end = NULL;
    if (!g_utf8_validate_len(buf, len, &end)) {
        gsize rest = len - (gsize)(end - buf);
        if (!truncated || rest >= 4 || (guchar)*end < 0xc0)
            return FALSE;
        len -= rest;
    }
    for (gsize i = 0; i < len; i++) {
        guchar c = (guchar)buf[i];
        if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f') || c == 0x7f)
            return FALSE;
    }
    return TRUE;
}

/* A line of the text starts with key (case-insensitive), then blanks and '='. */
static gboolean has_vmx_key(const char *text, const char *key)
{
    gsize n = strlen(key);
    for (const char *line = text; line != NULL && *line != '\0';) {
        while (*line == ' ' || *line == '\t')
            line++;
        if (g_ascii_strncasecmp(line, key, n) == 0) {
            const char *p = line + n;
            while (*p == ' ' || *p == '\t')
                p++;
            if (*p == '=')
                return TRUE;
        }
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
    return FALSE;
}

static VdRawKind text_kind(const char *text)
{
    const char *p = text;
    if (g_str_has_prefix(p, "\xef\xbb\xbf")) /* a byte-order mark */
        p += 3;
    while (g_ascii_isspace(*p))
        p++;
    if (*p == '<') {
        if (strstr(p, "<VirtualBox") != NULL)
            return VD_RAW_VBOX_SETTINGS;
        if (strstr(p, "Envelope") != NULL && strstr(p, "schemas.dmtf.org/ovf/envelope") != NULL)
            return VD_RAW_OVF;
        return VD_RAW_XML;
    }
    if (has_vmx_key(p, "config.version") || has_vmx_key(p, "virtualHW.version") ||
        has_vmx_key(p, ".encoding"))
        return VD_RAW_VMX;
    return VD_RAW_TEXT;
}

/* Samples taken across a file whose start is text: a text file is text
 * all through, while a disk image whose first sectors happen to hold text
 * (a filesystem image starting with a text file's data, an image made of
 * text chunks) shows binary or zeros somewhere else. */
#define SAMPLES 16

static gboolean text_throughout(int fd, guint64 size)
{
    char buf[SECTOR];
    for (guint i = 1; i <= SAMPLES; i++) {
        guint64 at = size / SAMPLES * i;
        at = at >= SECTOR ? (at - SECTOR) / SECTOR * SECTOR : 0;
        if (at < LOOK_BYTES)
            continue;
        ssize_t n = pread(fd, buf, sizeof buf, (off_t)at);
        if (n <= 0)
            return n == 0; /* shrunk meanwhile: judge by the start */
        /* A sample may start inside a character: skip its tail. */
        gsize skip = 0;
        while (skip < 3 && skip < (gsize)n && ((guchar)buf[skip] & 0xc0) == 0x80)
            skip++;
        if (!is_text(buf + skip, (gsize)n - skip, TRUE))
            return FALSE;
    }
    return TRUE;
}

gboolean vd_raw_kind_fd(int fd, const char *name, VdRawKind *kind, GError **error)
{
    struct stat st;
    *kind = VD_RAW_DISK;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        g_set_error(error, VD_ERROR, VD_ERROR_IO, "%s: %s", name, g_strerror(err));
        return FALSE;
    }
    /* A device is a disk, and its size is not what fstat says. */
    if (!S_ISREG(st.st_mode))
        return TRUE;
    if (st.st_size == 0) {
        *kind = VD_RAW_EMPTY;
        return TRUE;
    }
    char buf[LOOK_BYTES + 1];
    gsize want = MIN((guint64)st.st_size, LOOK_BYTES), got = 0;
    while (got < want) {
        ssize_t n = pread(fd, buf + got, want - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int err = errno;
            g_set_error(error, VD_ERROR, VD_ERROR_IO, "%s: %s", name, g_strerror(err));
            return FALSE;
        }
        if (n == 0)
            break;
        got += (gsize)n;
    }
    buf[got] = '\0';
    if (got > 0 && is_text(buf, got, (guint64)st.st_size > got) &&
        text_throughout(fd, (guint64)st.st_size))
        *kind = text_kind(buf);
    else if (st.st_size < SECTOR)
        *kind = VD_RAW_TOO_SMALL;
    else if (st.st_size % SECTOR != 0)
        *kind = VD_RAW_PARTIAL_SECTOR;
    return TRUE;
}

const char *vd_raw_kind_describe(VdRawKind kind)
{
    switch (kind) {
    case VD_RAW_DISK:
        return "a raw disk";
    case VD_RAW_EMPTY:
        return "an empty file";
    case VD_RAW_TOO_SMALL:
        return "a file smaller than one 512-byte sector";
    case VD_RAW_PARTIAL_SECTOR:
        return "a file that is not a whole number of 512-byte sectors";
    case VD_RAW_VBOX_SETTINGS:
        return "a VirtualBox VM's settings (.vbox)";
    case VD_RAW_OVF:
        return "an OVF appliance's descriptor (.ovf)";
    case VD_RAW_VMX:
        return "a VMware VM's settings (.vmx)";
    case VD_RAW_XML:
        return "an XML document";
    case VD_RAW_TEXT:
        return "a text file";
    }
    return "an unknown file";
}

gboolean vd_raw_check_fd(int fd, const char *name, VdRawKind *kind, GError **error)
{
    VdRawKind k = VD_RAW_DISK;
    if (!vd_raw_kind_fd(fd, name, &k, error))
        return FALSE;
    if (kind != NULL)
        *kind = k;
    if (k == VD_RAW_DISK)
        return TRUE;
    /* What the size says is certain; what the text says, a likeness. */
    gboolean by_size = k == VD_RAW_EMPTY || k == VD_RAW_TOO_SMALL || k == VD_RAW_PARTIAL_SECTOR;
    g_set_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT, "%s %s %s, not a disk", name,
                by_size ? "is" : "looks like", vd_raw_kind_describe(k));
    return FALSE;
}
