/* The VMware settings reader: a VM's .vmx into a VmMachine.
 *
 * A .vmx is lines of key = "value" (keys case-insensitive, '#' comments,
 * "|22"-style hex escapes in values). A disk is "<bus><n>:<unit>.*"
 * (ide0:0, scsi0:1, sata0:0, nvme0:0) with present = "TRUE" and the vmdk
 * in fileName: what the VM uses now, a snapshot's delta when it has
 * snapshots, whose parents the vmdk names itself (parentFileNameHint). A
 * NIC is ethernet<n>.*. There is no media registry: each disk is
 * registered here under a UUID made from its file name, so the chain and
 * the plan treat both products alike.
 */
#include <stdarg.h>
#include <stdlib.h>

#include "vm-private.h"

/* A .vmx is a few KiB; this bounds what a stray file makes us read. */
#define MAX_VMX_BYTES (1024 * 1024)
#define MAX_INDEX 64

typedef struct {
    const char *path;
    GHashTable *keys; /* lower-case key -> value */
} Vmx;

static gboolean fail(const Vmx *v, GError **error, VdError code, const char *format, ...)
    G_GNUC_PRINTF(4, 5);

static gboolean fail(const Vmx *v, GError **error, VdError code, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    g_autofree char *msg = g_strdup_vprintf(format, ap);
    va_end(ap);
    g_set_error(error, VD_ERROR, code, "%s: %s", v->path, msg);
    return FALSE;
}

static const char *get(const Vmx *v, const char *format, ...) G_GNUC_PRINTF(2, 3);

static const char *get(const Vmx *v, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    g_autofree char *key = g_strdup_vprintf(format, ap);
    va_end(ap);
    g_autofree char *lower = g_ascii_strdown(key, -1);
    return g_hash_table_lookup(v->keys, lower);
}

static gboolean is_true(const char *value)
{
    return value != NULL && (g_ascii_strcasecmp(value, "TRUE") == 0 || g_str_equal(value, "1"));
}

/* "|22" is '"', "|7C" is '|': VMware's escapes in values. */
static char *unescape(const char *text)
{
    GString *s = g_string_new(NULL);
    for (const char *p = text; *p != '\0'; p++) {
        if (*p == '|' && g_ascii_isxdigit(p[1]) && g_ascii_isxdigit(p[2])) {
            g_string_append_c(s,
                              (char)(g_ascii_xdigit_value(p[1]) * 16 + g_ascii_xdigit_value(p[2])));
            p += 2;
        } else {
            g_string_append_c(s, *p);
        }
    }
    return g_string_free(s, FALSE);
}

static gboolean parse_lines(Vmx *v, const char *text, gssize len, GError **error)
{
    g_autofree char *copy = len < 0 ? g_strdup(text) : g_strndup(text, (gsize)len);
    if (!g_utf8_validate(copy, -1, NULL))
        return fail(v, error, VD_ERROR_UNSUPPORTED_FORMAT,
                    "not VMware settings: the file is not text (UTF-8)");
    g_auto(GStrv) lines = g_strsplit(copy, "\n", -1);
    for (guint n = 0; lines[n] != NULL; n++) {
        char *line = g_strstrip(lines[n]);
        if (line[0] == '\0' || line[0] == '#')
            continue;
        char *eq = strchr(line, '=');
        if (eq == NULL)
            return fail(v, error, VD_ERROR_UNSUPPORTED_FORMAT,
                        "line %u is not key = \"value\": not VMware settings", n + 1);
        *eq = '\0';
        g_autofree char *key = g_ascii_strdown(g_strstrip(line), -1);
        char *value = g_strstrip(eq + 1);
        gsize vlen = strlen(value);
        if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
            value[vlen - 1] = '\0';
            value++;
        }
        if (key[0] == '\0')
            return fail(v, error, VD_ERROR_UNSUPPORTED_FORMAT, "line %u has no key", n + 1);
        g_hash_table_replace(v->keys, g_steal_pointer(&key), unescape(value));
    }
    if (get(v, "config.version") == NULL && get(v, "virtualHW.version") == NULL)
        return fail(v, error, VD_ERROR_UNSUPPORTED_FORMAT,
                    "not VMware settings: no config.version or virtualHW.version");
    return TRUE;
}

static gboolean uint_value(const Vmx *v, const char *key, guint64 fallback, guint64 max,
                           guint64 *out, GError **error)
{
    const char *text = get(v, "%s", key);
    if (text == NULL) {
        *out = fallback;
        return TRUE;
    }
    g_autoptr(GError) local = NULL;
    if (!g_ascii_string_to_unsigned(text, 10, 0, max, out, &local))
        return fail(v, error, VD_ERROR_CORRUPT, "%s = \"%s\": %s", key, text, local->message);
    return TRUE;
}

/* ----- disks ----- */

typedef struct {
    const char *bus; /* key prefix */
    VmBus vm_bus;
} BusPrefix;

static const BusPrefix buses[] = {
    { "ide", VM_BUS_IDE },
    { "sata", VM_BUS_SATA },
    { "scsi", VM_BUS_SCSI },
    { "nvme", VM_BUS_NVME },
};

/* libvirt's model for a VMware SCSI adapter. */
static gboolean scsi_model(const Vmx *v, const char *dev, const char **type, const char **model,
                           GError **error)
{
    static const struct {
        const char *vmware, *libvirt;
    } models[] = {
        { "lsilogic", "lsilogic" },
        { "lsisas1068", "lsisas1068" },
        { "pvscsi", "vmpvscsi" },
        { "buslogic", NULL }, /* no QEMU device: libvirt's choice */
    };
    if (dev == NULL) {
        /* VMware picks by guest OS; libvirt picks its own. */
        *type = "SCSI (default)";
        *model = NULL;
        return TRUE;
    }
    for (gsize i = 0; i < G_N_ELEMENTS(models); i++)
        if (g_ascii_strcasecmp(dev, models[i].vmware) == 0) {
            *type = models[i].vmware;
            *model = models[i].libvirt;
            return TRUE;
        }
    return fail(v, error, VD_ERROR_UNSUPPORTED_FORMAT, "SCSI adapter type '%s' is unknown", dev);
}

/* A UUID standing for a disk file, so the disk can sit in the registry
 * the chain resolution reads. */
static char *disk_uuid(const char *file)
{
    g_autofree char *sum = g_compute_checksum_for_string(G_CHECKSUM_MD5, file, -1);
    return g_strdup_printf("%.8s-%.4s-%.4s-%.4s-%.12s", sum, sum + 8, sum + 12, sum + 16, sum + 20);
}

static gboolean read_device(Vmx *v, VmMachine *m, VmController *c, guint bus_index, guint unit,
                            const char *prefix, GError **error)
{
    const char *file = get(v, "%s%u:%u.fileName", prefix, bus_index, unit);
    const char *type = get(v, "%s%u:%u.deviceType", prefix, bus_index, unit);
    VmAttachment *a = g_new0(VmAttachment, 1);
    g_ptr_array_add(c->attachments, a);
    /* ide0:1 is the primary slave; the other buses number units alone. */
    a->port = g_str_equal(prefix, "ide") ? bus_index : unit;
    a->device = g_str_equal(prefix, "ide") ? unit : 0;
    if (type != NULL && (g_str_has_prefix(type, "cdrom") || g_str_has_prefix(type, "atapi"))) {
        a->type = VM_DEVICE_DVD;
        return TRUE;
    }
    if (type != NULL && g_ascii_strcasecmp(type, "disk") != 0 &&
        g_ascii_strcasecmp(type, "scsi-hardDisk") != 0 &&
        g_ascii_strcasecmp(type, "ata-hardDisk") != 0)
        return fail(v, error, VD_ERROR_UNSUPPORTED_FORMAT,
                    "%s%u:%u is a device of type '%s', not a virtual disk", prefix, bus_index, unit,
                    type);
    g_autofree char *lower = file != NULL ? g_ascii_strdown(file, -1) : NULL;
    if (lower == NULL || !g_str_has_suffix(lower, ".vmdk"))
        return fail(v, error, VD_ERROR_UNSUPPORTED_FORMAT,
                    "%s%u:%u names no .vmdk file (fileName = \"%s\")", prefix, bus_index, unit,
                    file != NULL ? file : "");
    a->type = VM_DEVICE_DISK;
    a->medium_uuid = disk_uuid(file);
    if (g_hash_table_contains(m->media_by_uuid, a->medium_uuid))
        return fail(v, error, VD_ERROR_UNSUPPORTED_FORMAT,
                    "%s is attached twice (a shared disk is not imported)", file);
    VmMedium *medium = g_new0(VmMedium, 1);
    medium->uuid = g_strdup(a->medium_uuid);
    medium->location = g_strdup(file);
    medium->format = g_strdup("VMDK");
    medium->type = g_strdup("Normal");
    medium->device = VM_DEVICE_DISK;
    medium->children = g_ptr_array_new_with_free_func((GDestroyNotify)vm_medium_free);
    g_ptr_array_add(m->media, medium);
    g_hash_table_insert(m->media_by_uuid, medium->uuid, medium);
    return TRUE;
}

static gboolean read_disks(Vmx *v, VmMachine *m, GError **error)
{
    VmHardware *hw = m->hardware;
    for (gsize b = 0; b < G_N_ELEMENTS(buses); b++) {
        const char *prefix = buses[b].bus;
        for (guint n = 0; n < MAX_INDEX; n++) {
            g_autoptr(GPtrArray) units = g_ptr_array_new();
            for (guint u = 0; u < MAX_INDEX; u++)
                if (is_true(get(v, "%s%u:%u.present", prefix, n, u)))
                    g_ptr_array_add(units, GUINT_TO_POINTER(u + 1));
            /* An IDE channel is there without present = "TRUE"; the other
             * adapters must be present for their disks to count. */
            if (units->len == 0 ||
                (!g_str_equal(prefix, "ide") && !is_true(get(v, "%s%u.present", prefix, n))))
                continue;
            VmController *c = g_new0(VmController, 1);
            g_ptr_array_add(hw->controllers, c);
            c->name = g_strdup_printf("%s%u", prefix, n);
            c->bus = buses[b].vm_bus;
            c->attachments = g_ptr_array_new_with_free_func((GDestroyNotify)vm_attachment_free);
            const char *type = prefix, *model = NULL;
            if (c->bus == VM_BUS_SCSI &&
                !scsi_model(v, get(v, "scsi%u.virtualDev", n), &type, &model, error))
                return FALSE;
            c->type = g_strdup(c->bus == VM_BUS_SATA ? "AHCI" : type);
            c->scsi_model = g_strdup(model);
            for (guint i = 0; i < units->len; i++)
                if (!read_device(v, m, c, n, GPOINTER_TO_UINT(units->pdata[i]) - 1, prefix, error))
                    return FALSE;
        }
    }
    return TRUE;
}

/* ----- network ----- */

static gboolean read_nics(Vmx *v, VmHardware *hw, GError **error)
{
    for (guint n = 0; n < MAX_INDEX; n++) {
        if (!is_true(get(v, "ethernet%u.present", n)))
            continue;
        VmNic *nic = g_new0(VmNic, 1);
        g_ptr_array_add(hw->nics, nic);
        nic->slot = n;
        const char *dev = get(v, "ethernet%u.virtualDev", n);
        nic->model = g_strdup(dev != NULL ? dev : "vlance");
        const char *kind = get(v, "ethernet%u.connectionType", n);
        nic->attachment =
            g_strdup(kind == NULL || g_ascii_strcasecmp(kind, "nat") == 0 ? "NAT" : kind);
        const char *address_type = get(v, "ethernet%u.addressType", n);
        const char *mac = address_type != NULL && g_ascii_strcasecmp(address_type, "static") == 0
                              ? get(v, "ethernet%u.address", n)
                              : get(v, "ethernet%u.generatedAddress", n);
        if (mac == NULL)
            continue;
        g_autofree char *lower = g_ascii_strdown(mac, -1);
        gboolean ok = strlen(lower) == 17;
        for (int i = 0; ok && i < 17; i++)
            ok = i % 3 == 2 ? lower[i] == ':' : g_ascii_isxdigit(lower[i]);
        if (!ok)
            return fail(v, error, VD_ERROR_CORRUPT,
                        "ethernet%u: MAC address '%s' is not "
                        "six hex pairs",
                        n, mac);
        nic->mac = g_steal_pointer(&lower);
    }
    return TRUE;
}

/* ----- the file ----- */

/* uuid.bios = "56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc" */
static char *uuid_from_vmx(const char *text)
{
    if (text == NULL)
        return NULL;
    GString *hex = g_string_new(NULL);
    for (const char *p = text; *p != '\0'; p++)
        if (g_ascii_isxdigit(*p))
            g_string_append_c(hex, g_ascii_tolower(*p));
        else if (*p != ' ' && *p != '-')
            break;
    g_autofree char *h = g_string_free(hex, FALSE);
    if (strlen(h) != 32)
        return NULL;
    return g_strdup_printf("%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
}

VmMachine *vm_vmx_parse(const char *path, const char *text, gssize len, GError **error)
{
    g_autoptr(GHashTable) keys = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    Vmx v = { .path = path, .keys = keys };
    if (!parse_lines(&v, text, len, error))
        return NULL;
    g_autoptr(VmMachine) m = g_new0(VmMachine, 1);
    m->settings_path = g_canonicalize_filename(path, NULL);
    m->folder = g_path_get_dirname(m->settings_path);
    m->snapshot_folder = g_strdup(m->folder);
    m->product = g_strdup("VMware");
    const char *hw_version = get(&v, "virtualHW.version");
    m->settings_version =
        g_strdup_printf("virtual hardware %s", hw_version != NULL ? hw_version : "?");
    m->media = g_ptr_array_new_with_free_func((GDestroyNotify)vm_medium_free);
    m->media_by_uuid = g_hash_table_new(g_str_hash, g_str_equal);
    const char *name = get(&v, "displayName");
    g_autofree char *base = g_path_get_basename(path);
    if (name == NULL || name[0] == '\0') {
        /* The file name, as VMware shows a VM without one. */
        char *dot = strrchr(base, '.');
        if (dot != NULL)
            *dot = '\0';
        name = base;
    }
    m->name = g_strdup(name);
    m->uuid = uuid_from_vmx(get(&v, "uuid.bios"));
    m->os_type = g_strdup(get(&v, "guestOS"));

    VmHardware *hw = g_new0(VmHardware, 1);
    m->hardware = hw;
    hw->controllers = g_ptr_array_new_with_free_func((GDestroyNotify)vm_controller_free);
    hw->nics = g_ptr_array_new_with_free_func((GDestroyNotify)vm_nic_free);
    guint64 value;
    if (get(&v, "memsize") == NULL) {
        fail(&v, error, VD_ERROR_CORRUPT, "no memsize");
        return NULL;
    }
    if (!uint_value(&v, "memsize", 0, G_GUINT64_CONSTANT(16) * 1024 * 1024, &hw->memory_mib,
                    error) ||
        !uint_value(&v, "numvcpus", 1, 1024, &value, error))
        return NULL;
    hw->cpus = MAX((guint)value, 1);
    const char *firmware = get(&v, "firmware");
    if (firmware == NULL || g_ascii_strcasecmp(firmware, "bios") == 0) {
        hw->firmware = VM_FIRMWARE_BIOS;
    } else if (g_ascii_strcasecmp(firmware, "efi") == 0) {
        hw->firmware = VM_FIRMWARE_EFI;
    } else {
        fail(&v, error, VD_ERROR_UNSUPPORTED_FORMAT, "unknown firmware '%s'", firmware);
        return NULL;
    }
    /* VMware's virtual hardware is a 440BX board: QEMU's pc. */
    hw->chipset = g_strdup("440BX");
    if (!read_disks(&v, m, error) || !read_nics(&v, hw, error))
        return NULL;
    return g_steal_pointer(&m);
}

VmMachine *vm_vmx_load(const char *path, GError **error)
{
    g_autofree char *text = NULL;
    gsize len = 0;
    if (!vm_read_settings_file(path, "the VM's settings", &text, &len, error))
        return NULL;
    if (len == 0 || len > MAX_VMX_BYTES) {
        g_set_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT,
                    "%s: %" G_GSIZE_FORMAT " bytes is no VM's settings file", path, len);
        return NULL;
    }
    return vm_vmx_parse(path, text, (gssize)len, error);
}
