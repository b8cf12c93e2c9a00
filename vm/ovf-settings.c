/* The OVF reader: an appliance's descriptor (an .ovf, or the one inside an
 * .ova) into a VmMachine.
 *
 * OVF (DMTF DSP0243) describes one VirtualSystem: its Name, an
 * OperatingSystemSection, and a VirtualHardwareSection of Items, each a
 * CIM resource (rasd:ResourceType 3 processors, 4 memory, 5 IDE, 6 SCSI,
 * 20 other storage such as SATA, 17 a disk drive, 15/16 CD/DVD, 10 an
 * Ethernet adapter) tied to its controller by rasd:Parent. A disk drive's
 * HostResource names a Disk of the DiskSection, whose fileRef names a File
 * of the References: a file beside the .ovf, or a member of the .ova.
 * Producers differ in namespace prefixes (ovf:Envelope or a default
 * namespace; rasd:, sasd:, epasd: items in OVF 2), so elements and
 * attributes are matched by local name.
 */
#include <stdarg.h>

#include "vm-private.h"
#include "xml-tree.h"

enum {
    RT_PROCESSOR = 3,
    RT_MEMORY = 4,
    RT_IDE = 5,
    RT_SCSI = 6,
    RT_ETHERNET = 10,
    RT_FLOPPY = 14,
    RT_CD = 15,
    RT_DVD = 16,
    RT_DISK = 17,
    RT_OTHER_STORAGE = 20,
};

typedef struct {
    const char *path;
    VmMachine *machine;
    GHashTable *files;        /* File id -> href */
    GHashTable *disks;        /* Disk id -> href */
    GHashTable *controllers;  /* Item InstanceID -> VmController (borrowed) */
    GHashTable *ide_channels; /* VmController -> its channel */
} Ovf;

/* The readers' one way to refuse (vm_xml_fail), for this file. */
#define fail(reader, node, error, code, ...) \
    vm_xml_fail((reader)->path, (node), (error), (code), __VA_ARGS__)

static const char *local_name(const char *name)
{
    const char *colon = strrchr(name, ':');
    return colon != NULL ? colon + 1 : name;
}

static gboolean is(const VmXmlNode *node, const char *name)
{
    return g_str_equal(local_name(node->name), name);
}

/* An attribute by local name (ovf:id, vmw:osType, id). */
static const char *attr(const VmXmlNode *node, const char *name)
{
    for (guint i = 0; node->attr_names[i] != NULL; i++)
        if (g_str_equal(local_name(node->attr_names[i]), name))
            return node->attr_values[i];
    return NULL;
}

static const VmXmlNode *child(const VmXmlNode *node, const char *name)
{
    for (guint i = 0; i < node->children->len; i++)
        if (is(node->children->pdata[i], name))
            return node->children->pdata[i];
    return NULL;
}

static const char *child_text(const VmXmlNode *node, const char *name)
{
    const VmXmlNode *c = child(node, name);
    return c != NULL ? c->text : NULL;
}

static gboolean item_number(const Ovf *o, const VmXmlNode *item, const char *name, guint64 fallback,
                            guint64 *out, GError **error)
{
    const char *text = child_text(item, name);
    if (text == NULL) {
        *out = fallback;
        return TRUE;
    }
    g_autoptr(GError) local = NULL;
    if (!g_ascii_string_to_unsigned(text, 10, 0, G_MAXUINT32, out, &local))
        return fail(o, item, error, VD_ERROR_CORRUPT, "<%s>%s</%s>: %s", name, text, name,
                    local->message);
    return TRUE;
}

/* Memory's AllocationUnits: "byte * 2^20", "MegaBytes", "byte * 2^30"... */
static gboolean memory_mib(const Ovf *o, const VmXmlNode *item, guint64 quantity, guint64 *mib,
                           GError **error)
{
    const char *units = child_text(item, "AllocationUnits");
    if (units == NULL || strstr(units, "2^20") != NULL || g_str_equal(units, "MegaBytes") ||
        g_str_equal(units, "MB"))
        *mib = quantity;
    else if (strstr(units, "2^30") != NULL || g_str_equal(units, "GigaBytes") ||
             g_str_equal(units, "GB"))
        *mib = quantity * 1024;
    else if (strstr(units, "2^10") != NULL || g_str_equal(units, "KiloBytes"))
        *mib = quantity / 1024;
    else if (g_str_equal(units, "byte") || g_str_equal(units, "bytes"))
        *mib = quantity / (1024 * 1024);
    else
        return fail(o, item, error, VD_ERROR_UNSUPPORTED_FORMAT,
                    "memory in units of '%s' is not understood", units);
    return TRUE;
}

static gboolean read_references(Ovf *o, const VmXmlNode *envelope, GError **error)
{
    const VmXmlNode *refs = child(envelope, "References");
    for (guint i = 0; refs != NULL && i < refs->children->len; i++) {
        const VmXmlNode *file = refs->children->pdata[i];
        if (!is(file, "File"))
            continue;
        const char *id = attr(file, "id"), *href = attr(file, "href");
        if (id == NULL || href == NULL)
            return fail(o, file, error, VD_ERROR_CORRUPT, "<File> without id or href");
        if (strstr(href, "://") != NULL)
            return fail(o, file, error, VD_ERROR_NOT_SUPPORTED,
                        "file %s is at %s: only files in the appliance are read", id, href);
        g_hash_table_insert(o->files, g_strdup(id), g_strdup(href));
    }
    const VmXmlNode *section = child(envelope, "DiskSection");
    for (guint i = 0; section != NULL && i < section->children->len; i++) {
        const VmXmlNode *disk = section->children->pdata[i];
        if (!is(disk, "Disk"))
            continue;
        const char *id = attr(disk, "diskId"), *ref = attr(disk, "fileRef");
        const char *href = ref != NULL ? g_hash_table_lookup(o->files, ref) : NULL;
        if (id == NULL)
            return fail(o, disk, error, VD_ERROR_CORRUPT, "<Disk> without diskId");
        /* A disk without a file is an empty one made at import: not ours. */
        if (href != NULL)
            g_hash_table_insert(o->disks, g_strdup(id), g_strdup(href));
    }
    return TRUE;
}

static VmController *add_controller(Ovf *o, const VmXmlNode *item, VmBus bus, const char *type,
                                    const char *model)
{
    VmHardware *hw = o->machine->hardware;
    VmController *c = g_new0(VmController, 1);
    g_ptr_array_add(hw->controllers, c);
    const char *name = child_text(item, "ElementName");
    c->name = g_strdup(name != NULL ? name : type);
    c->type = g_strdup(type);
    c->bus = bus;
    c->scsi_model = g_strdup(model);
    c->attachments = g_ptr_array_new_with_free_func((GDestroyNotify)vm_attachment_free);
    const char *id = child_text(item, "InstanceID");
    if (id != NULL)
        g_hash_table_insert(o->controllers, g_strdup(id), c);
    return c;
}

static gboolean read_controller(Ovf *o, const VmXmlNode *item, guint64 type, GError **error)
{
    const char *sub = child_text(item, "ResourceSubType");
    if (type == RT_IDE) {
        guint64 channel;
        if (!item_number(o, item, "Address", 0, &channel, error))
            return FALSE;
        VmController *c = add_controller(o, item, VM_BUS_IDE, sub != NULL ? sub : "IDE", NULL);
        g_hash_table_insert(o->ide_channels, c, GUINT_TO_POINTER((guint)MIN(channel, 1)));
        return TRUE;
    }
    if (type == RT_SCSI) {
        static const struct {
            const char *ovf, *model;
        } models[] = {
            { "lsilogic", "lsilogic" },     { "lsilogicsas", "lsisas1068" },
            { "lsisas1068", "lsisas1068" }, { "VirtualSCSI", "vmpvscsi" },
            { "buslogic", NULL },           { "virtio-scsi", "virtio-scsi" },
        };
        for (gsize i = 0; i < G_N_ELEMENTS(models); i++)
            if (sub != NULL && g_ascii_strcasecmp(sub, models[i].ovf) == 0) {
                add_controller(o, item, VM_BUS_SCSI, sub, models[i].model);
                return TRUE;
            }
        return fail(o, item, error, VD_ERROR_UNSUPPORTED_FORMAT,
                    "SCSI controller of type '%s' is unknown", sub != NULL ? sub : "(none)");
    }
    /* Other storage: SATA (AHCI) is the one producers write. */
    if (sub != NULL && (g_ascii_strcasecmp(sub, "AHCI") == 0 ||
                        g_ascii_strcasecmp(sub, "vmware.sata.ahci") == 0)) {
        add_controller(o, item, VM_BUS_SATA, "AHCI", NULL);
        return TRUE;
    }
    if (sub != NULL && g_ascii_strcasecmp(sub, "vmware.nvme.controller") == 0) {
        add_controller(o, item, VM_BUS_NVME, "NVMe", NULL);
        return TRUE;
    }
    return fail(o, item, error, VD_ERROR_UNSUPPORTED_FORMAT,
                "storage controller of type '%s' is unknown", sub != NULL ? sub : "(none)");
}

/* A disk names "ovf:/disk/ID" (or "/disk/ID"). */
static const char *disk_href(const Ovf *o, const char *resource, char **id)
{
    if (resource == NULL)
        return NULL;
    const char *slash = strrchr(resource, '/');
    *id = g_strdup(slash != NULL ? slash + 1 : resource);
    return g_hash_table_lookup(o->disks, *id);
}

static gboolean read_drive(Ovf *o, const VmXmlNode *item, guint64 type, GError **error)
{
    const char *parent = child_text(item, "Parent");
    VmController *c = parent != NULL ? g_hash_table_lookup(o->controllers, parent) : NULL;
    if (c == NULL)
        return fail(o, item, error, VD_ERROR_CORRUPT,
                    "drive '%s' sits on controller '%s', which is not among the items before it",
                    child_text(item, "ElementName") != NULL ? child_text(item, "ElementName") : "",
                    parent != NULL ? parent : "(none)");
    guint64 unit;
    if (!item_number(o, item, "AddressOnParent", 0, &unit, error))
        return FALSE;
    VmAttachment *a = g_new0(VmAttachment, 1);
    g_ptr_array_add(c->attachments, a);
    a->port = (guint)unit;
    if (c->bus == VM_BUS_IDE) {
        /* An IDE controller item is one channel (its Address); the unit is
         * master or slave on it. */
        a->port = GPOINTER_TO_UINT(g_hash_table_lookup(o->ide_channels, c));
        a->device = (guint)unit;
    }
    if (type != RT_DISK) {
        a->type = type == RT_FLOPPY ? VM_DEVICE_FLOPPY : VM_DEVICE_DVD;
        return TRUE;
    }
    a->type = VM_DEVICE_DISK;
    g_autofree char *id = NULL;
    const char *href = disk_href(o, child_text(item, "HostResource"), &id);
    if (href == NULL)
        return fail(o, item, error, VD_ERROR_CORRUPT,
                    "disk drive names disk '%s', which no file of the appliance holds",
                    id != NULL ? id : "(none)");
    VmMachine *m = o->machine;
    g_autofree char *key = g_strdup_printf("ovf disk %s", id);
    g_autofree char *sum = g_compute_checksum_for_string(G_CHECKSUM_MD5, key, -1);
    a->medium_uuid =
        g_strdup_printf("%.8s-%.4s-%.4s-%.4s-%.12s", sum, sum + 8, sum + 12, sum + 16, sum + 20);
    if (g_hash_table_contains(m->media_by_uuid, a->medium_uuid))
        return fail(o, item, error, VD_ERROR_UNSUPPORTED_FORMAT,
                    "disk '%s' is attached twice (a shared disk is not imported)", id);
    g_autofree char *lower = g_ascii_strdown(href, -1);
    VmMedium *medium = g_new0(VmMedium, 1);
    medium->uuid = g_strdup(a->medium_uuid);
    medium->location = g_strdup(href);
    medium->format = g_strdup(g_str_has_suffix(lower, ".vdi")     ? "VDI"
                              : g_str_has_suffix(lower, ".qcow2") ? "QCOW2"
                              : g_str_has_suffix(lower, ".img")   ? "RAW"
                                                                  : "VMDK");
    medium->type = g_strdup("Normal");
    medium->device = VM_DEVICE_DISK;
    medium->children = g_ptr_array_new_with_free_func((GDestroyNotify)vm_medium_free);
    g_ptr_array_add(m->media, medium);
    g_hash_table_insert(m->media_by_uuid, medium->uuid, medium);
    return TRUE;
}

static gboolean read_nic(Ovf *o, const VmXmlNode *item, GError **error)
{
    VmHardware *hw = o->machine->hardware;
    VmNic *nic = g_new0(VmNic, 1);
    nic->slot = hw->nics->len;
    g_ptr_array_add(hw->nics, nic);
    const char *sub = child_text(item, "ResourceSubType");
    /* OVF's names for the adapters; QEMU's in domain-xml.c. */
    nic->model = g_strdup(sub == NULL                                  ? "E1000"
                          : g_ascii_strcasecmp(sub, "PCNet32") == 0    ? "Am79C973"
                          : g_ascii_strcasecmp(sub, "VmxNet3") == 0    ? "vmxnet3"
                          : g_ascii_strcasecmp(sub, "E1000e") == 0     ? "e1000e"
                          : g_ascii_strcasecmp(sub, "virtio-net") == 0 ? "virtio"
                                                                       : sub);
    const char *connection = child_text(item, "Connection");
    nic->attachment = g_strdup("network");
    /* OVF names the network, not how the host attached it. */
    nic->network = g_strdup(connection);
    const char *mac = child_text(item, "Address");
    if (mac != NULL && mac[0] != '\0') {
        g_autofree char *lower = g_ascii_strdown(mac, -1);
        gboolean ok = strlen(lower) == 17;
        for (int i = 0; ok && i < 17; i++)
            ok = i % 3 == 2 ? lower[i] == ':' : g_ascii_isxdigit(lower[i]);
        if (!ok)
            return fail(o, item, error, VD_ERROR_CORRUPT,
                        "MAC address '%s' is not six hex "
                        "pairs",
                        mac);
        nic->mac = g_steal_pointer(&lower);
    }
    return TRUE;
}

static gboolean read_hardware(Ovf *o, const VmXmlNode *system, GError **error)
{
    const VmXmlNode *section = child(system, "VirtualHardwareSection");
    if (section == NULL)
        return fail(o, system, error, VD_ERROR_CORRUPT, "no VirtualHardwareSection");
    VmHardware *hw = o->machine->hardware;
    gboolean have_memory = FALSE;
    for (guint i = 0; i < section->children->len; i++) {
        const VmXmlNode *item = section->children->pdata[i];
        if (is(item, "Config") && g_strcmp0(attr(item, "key"), "firmware") == 0) {
            const char *value = attr(item, "value");
            if (g_strcmp0(value, "efi") == 0)
                hw->firmware = VM_FIRMWARE_EFI;
            else if (g_strcmp0(value, "bios") != 0)
                return fail(o, item, error, VD_ERROR_UNSUPPORTED_FORMAT, "unknown firmware '%s'",
                            value != NULL ? value : "");
            continue;
        }
        if (!is(item, "Item") && !is(item, "StorageItem") && !is(item, "EthernetPortItem"))
            continue;
        guint64 type, quantity;
        if (!item_number(o, item, "ResourceType", 0, &type, error) ||
            !item_number(o, item, "VirtualQuantity", 0, &quantity, error))
            return FALSE;
        switch (type) {
        case RT_PROCESSOR:
            hw->cpus = MAX((guint)MIN(quantity, 1024), 1);
            break;
        case RT_MEMORY:
            if (!memory_mib(o, item, quantity, &hw->memory_mib, error))
                return FALSE;
            have_memory = TRUE;
            break;
        case RT_IDE:
        case RT_SCSI:
        case RT_OTHER_STORAGE:
            if (!read_controller(o, item, type, error))
                return FALSE;
            break;
        case RT_DISK:
        case RT_CD:
        case RT_DVD:
        case RT_FLOPPY:
            if (!read_drive(o, item, type, error))
                return FALSE;
            break;
        case RT_ETHERNET:
            if (!read_nic(o, item, error))
                return FALSE;
            break;
        default:
            break; /* sound, USB, video: nothing a disk import needs */
        }
    }
    if (!have_memory)
        return fail(o, section, error, VD_ERROR_CORRUPT, "no memory item (ResourceType 4)");
    return TRUE;
}

VmMachine *vm_ovf_parse(const char *path, const char *text, gssize len, const char *appliance,
                        GError **error)
{
    g_autoptr(VmXmlNode) root = vm_xml_parse(path, text, len, error);
    if (root == NULL)
        return NULL;
    g_autoptr(VmMachine) m = g_new0(VmMachine, 1);
    g_autoptr(GHashTable) files = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GHashTable) disks = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GHashTable) controllers =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GHashTable) ide_channels = g_hash_table_new(NULL, NULL);
    Ovf o = { .path = path,
              .machine = m,
              .files = files,
              .disks = disks,
              .controllers = controllers,
              .ide_channels = ide_channels };
    m->settings_path = g_canonicalize_filename(path, NULL);
    m->folder = g_path_get_dirname(m->settings_path);
    m->snapshot_folder = g_strdup(m->folder);
    m->appliance = appliance != NULL ? g_canonicalize_filename(appliance, NULL) : NULL;
    m->product = g_strdup("OVF");
    m->media = g_ptr_array_new_with_free_func((GDestroyNotify)vm_medium_free);
    m->media_by_uuid = g_hash_table_new(g_str_hash, g_str_equal);
    VmHardware *hw = g_new0(VmHardware, 1);
    m->hardware = hw;
    hw->cpus = 1;
    hw->chipset = g_strdup("PIIX3");
    hw->controllers = g_ptr_array_new_with_free_func((GDestroyNotify)vm_controller_free);
    hw->nics = g_ptr_array_new_with_free_func((GDestroyNotify)vm_nic_free);

    if (!is(root, "Envelope")) {
        fail(&o, root, error, VD_ERROR_UNSUPPORTED_FORMAT,
             "not an OVF descriptor: the root element is <%s>", root->name);
        return NULL;
    }
    const char *version = attr(root, "version");
    m->settings_version = g_strdup_printf("OVF %s", version != NULL ? version : "1.0");
    if (child(root, "VirtualSystemCollection") != NULL) {
        fail(&o, root, error, VD_ERROR_NOT_SUPPORTED,
             "the appliance holds several VMs (a VirtualSystemCollection); import one at a "
             "time");
        return NULL;
    }
    const VmXmlNode *system = child(root, "VirtualSystem");
    if (system == NULL) {
        fail(&o, root, error, VD_ERROR_UNSUPPORTED_FORMAT, "no <VirtualSystem>");
        return NULL;
    }
    const char *name = child_text(system, "Name");
    if (name == NULL)
        name = attr(system, "id");
    if (name == NULL || name[0] == '\0') {
        fail(&o, system, error, VD_ERROR_CORRUPT, "the VirtualSystem has no name");
        return NULL;
    }
    m->name = g_strdup(name);
    const VmXmlNode *os = child(system, "OperatingSystemSection");
    if (os != NULL)
        m->os_type = g_strdup(attr(os, "osType")); /* VMware's guestOS */
    if (!read_references(&o, root, error) || !read_hardware(&o, system, error))
        return NULL;
    return g_steal_pointer(&m);
}

VmMachine *vm_ovf_load(const char *path, GError **error)
{
    g_autofree char *text = NULL;
    gsize len = 0;
    g_autofree char *lower = g_ascii_strdown(path, -1);
    if (g_str_has_suffix(lower, ".ova")) {
        text = vd_ova_read_descriptor(path, &len, error);
        if (text == NULL)
            return NULL;
        g_autofree char *label = g_strdup_printf("%s (its .ovf)", path);
        VmMachine *m = vm_ovf_parse(label, text, (gssize)len, path, error);
        if (m != NULL) {
            g_free(m->settings_path);
            m->settings_path = g_canonicalize_filename(path, NULL);
        }
        return m;
    }
    if (!vm_read_settings_file(path, "the appliance's descriptor", &text, &len, error))
        return NULL;
    return vm_ovf_parse(path, text, (gssize)len, NULL, error);
}
