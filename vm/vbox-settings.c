/* The VirtualBox settings reader: a VM's .vbox file into a VmMachine.
 *
 * The file is VirtualBox's settings XML (root <VirtualBox version="1.N-os">,
 * one <Machine>): the media registry (HardDisks nesting their
 * differencing children), the current state's <Hardware> (CPU, Memory,
 * Firmware, Chipset, Network adapters, StorageControllers with the
 * attached media) and the snapshot tree, each <Snapshot> with the hardware
 * it had. Settings versions 1.11 (VirtualBox 4.0) to 1.20 (7.1) are read;
 * older files keep their media in the global VirtualBox.xml, newer ones
 * are not known yet. The controllers sit beside <Hardware> in some
 * versions and inside it in others; both are read. What matters for the
 * import and is not understood is refused, naming the file and line.
 */
#include <errno.h>
#include <stdarg.h>

#include "vm-private.h"
#include "xml-tree.h"

/* VirtualBox 4.0 (settings 1.11) moved the media registry from the global
 * VirtualBox.xml into each VM's own file; older files cannot be resolved
 * alone. */
#define MIN_SETTINGS_MINOR 11
#define MAX_SETTINGS_MINOR 20
/* Real settings files are a few KiB to a few hundred; this bounds what a
 * stray huge file makes us read. */
#define MAX_SETTINGS_BYTES (16 * 1024 * 1024)
/* The "ports" of the largest controller (SAS: 255) and a VM's adapters. */
#define MAX_PORT 255
#define MAX_CPUS 1024
#define MAX_MEMORY_MIB (G_GUINT64_CONSTANT(16) * 1024 * 1024)

typedef struct {
    const char *path;
    VmMachine *machine;
} Reader;

/* The readers' one way to refuse (vm_xml_fail), for this file. */
#define fail(reader, node, error, code, ...) \
    vm_xml_fail((reader)->path, (node), (error), (code), __VA_ARGS__)

/* ----- values ----- */

static char *required_uuid(const Reader *r, const VmXmlNode *node, const char *attr, GError **error)
{
    const char *text = vm_xml_attr(node, attr);
    char *uuid = vm_uuid_normalize(text);
    if (uuid == NULL) {
        if (text == NULL)
            fail(r, node, error, VD_ERROR_CORRUPT, "<%s> has no %s", node->name, attr);
        else
            fail(r, node, error, VD_ERROR_CORRUPT, "<%s %s=\"%s\">: not a UUID", node->name, attr,
                 text);
    }
    return uuid;
}

static gboolean uint_attr(const Reader *r, const VmXmlNode *node, const char *attr,
                          guint64 fallback, guint64 max, guint64 *out, GError **error)
{
    const char *text = vm_xml_attr(node, attr);
    if (text == NULL) {
        *out = fallback;
        return TRUE;
    }
    g_autoptr(GError) local = NULL;
    if (!g_ascii_string_to_unsigned(text, 10, 0, max, out, &local))
        return fail(r, node, error, VD_ERROR_CORRUPT, "<%s %s=\"%s\">: %s", node->name, attr, text,
                    local->message);
    return TRUE;
}

static gboolean bool_attr(const VmXmlNode *node, const char *attr, gboolean fallback)
{
    const char *text = vm_xml_attr(node, attr);
    if (text == NULL)
        return fallback;
    return g_str_equal(text, "true") || g_str_equal(text, "1");
}

/* ----- the media registry ----- */

static gboolean read_medium(Reader *r, const VmXmlNode *node, VmDeviceType device, VmMedium *parent,
                            GPtrArray *into, GError **error)
{
    VmMachine *m = r->machine;
    g_autofree char *uuid = required_uuid(r, node, "uuid", error);
    if (uuid == NULL)
        return FALSE;
    const char *location = vm_xml_attr(node, "location");
    if (location == NULL || location[0] == '\0')
        return fail(r, node, error, VD_ERROR_CORRUPT, "medium {%s} has no location", uuid);
    if (g_hash_table_contains(m->media_by_uuid, uuid))
        return fail(r, node, error, VD_ERROR_CORRUPT, "medium {%s} is registered twice", uuid);
    VmMedium *medium = g_new0(VmMedium, 1);
    medium->uuid = g_steal_pointer(&uuid);
    medium->location = g_strdup(location);
    medium->format = g_strdup(vm_xml_attr(node, "format"));
    medium->type = g_strdup(vm_xml_attr(node, "type"));
    medium->device = device;
    medium->parent = parent;
    medium->children = g_ptr_array_new_with_free_func((GDestroyNotify)vm_medium_free);
    g_ptr_array_add(into, medium);
    g_hash_table_insert(m->media_by_uuid, medium->uuid, medium);
    if (device == VM_DEVICE_DISK && medium->format == NULL)
        return fail(r, node, error, VD_ERROR_CORRUPT, "hard disk {%s} has no format", medium->uuid);
    /* Differencing images nest in the image they were made on. */
    for (guint i = 0; i < node->children->len; i++) {
        const VmXmlNode *child = node->children->pdata[i];
        /* VirtualBox's disk encryption keeps its key store in the
         * medium's properties; the data is then ciphertext to anyone
         * else. */
        const char *property =
            g_str_equal(child->name, "Property") ? vm_xml_attr(child, "name") : NULL;
        if (property != NULL && g_str_has_prefix(property, "CRYPT/"))
            medium->encrypted = TRUE;
        if (g_str_equal(child->name, "HardDisk") && device == VM_DEVICE_DISK &&
            !read_medium(r, child, device, medium, medium->children, error))
            return FALSE;
    }
    return TRUE;
}

static gboolean read_media_list(Reader *r, const VmXmlNode *registry, const char *list,
                                const char *item, VmDeviceType device, GError **error)
{
    const VmXmlNode *node = vm_xml_child(registry, list);
    if (node == NULL)
        return TRUE;
    for (guint i = 0; i < node->children->len; i++) {
        const VmXmlNode *child = node->children->pdata[i];
        if (g_str_equal(child->name, item) &&
            !read_medium(r, child, device, NULL, r->machine->media, error))
            return FALSE;
    }
    return TRUE;
}

static gboolean read_registry(Reader *r, const VmXmlNode *machine, GError **error)
{
    const VmXmlNode *registry = vm_xml_child(machine, "MediaRegistry");
    if (registry == NULL)
        return TRUE;
    return read_media_list(r, registry, "HardDisks", "HardDisk", VM_DEVICE_DISK, error) &&
           read_media_list(r, registry, "DVDImages", "Image", VM_DEVICE_DVD, error) &&
           read_media_list(r, registry, "FloppyImages", "Image", VM_DEVICE_FLOPPY, error);
}

/* ----- hardware ----- */

typedef struct {
    const char *type;
    VmBus bus;
    const char *scsi_model; /* libvirt's controller model */
} ControllerType;

/* Every controller type of the settings schema. BusLogic has no QEMU
 * device: its disks go on a SCSI controller whose model libvirt picks. */
static const ControllerType controller_types[] = {
    { "AHCI", VM_BUS_SATA, NULL },           { "PIIX3", VM_BUS_IDE, NULL },
    { "PIIX4", VM_BUS_IDE, NULL },           { "ICH6", VM_BUS_IDE, NULL },
    { "LsiLogic", VM_BUS_SCSI, "lsilogic" }, { "LsiLogicSas", VM_BUS_SCSI, "lsisas1068" },
    { "BusLogic", VM_BUS_SCSI, NULL },       { "VirtioSCSI", VM_BUS_SCSI, "virtio-scsi" },
    { "NVMe", VM_BUS_NVME, NULL },           { "USB", VM_BUS_USB, NULL },
    { "I82078", VM_BUS_FLOPPY, NULL },
};

static gboolean read_attachment(Reader *r, const VmXmlNode *node, VmController *c, GError **error)
{
    const char *type = vm_xml_attr(node, "type");
    VmAttachment *a = g_new0(VmAttachment, 1);
    g_ptr_array_add(c->attachments, a);
    if (g_strcmp0(type, "HardDisk") == 0)
        a->type = VM_DEVICE_DISK;
    else if (g_strcmp0(type, "DVD") == 0)
        a->type = VM_DEVICE_DVD;
    else if (g_strcmp0(type, "Floppy") == 0)
        a->type = VM_DEVICE_FLOPPY;
    else
        return fail(r, node, error, VD_ERROR_UNSUPPORTED_FORMAT,
                    "device attached to controller '%s' is of unknown type '%s'", c->name,
                    type != NULL ? type : "(none)");
    guint64 port, device;
    if (!uint_attr(r, node, "port", 0, MAX_PORT, &port, error) ||
        !uint_attr(r, node, "device", 0, MAX_PORT, &device, error))
        return FALSE;
    a->port = (guint)port;
    a->device = (guint)device;
    const VmXmlNode *image = vm_xml_child(node, "Image");
    if (image != NULL && (a->medium_uuid = required_uuid(r, image, "uuid", error)) == NULL)
        return FALSE;
    if (a->type == VM_DEVICE_DISK && image == NULL)
        return fail(r, node, error, VD_ERROR_UNSUPPORTED_FORMAT,
                    "hard disk on controller '%s' port %u device %u is no image (a host "
                    "drive?)",
                    c->name, a->port, a->device);
    return TRUE;
}

static gboolean read_controllers(Reader *r, const VmXmlNode *list, VmHardware *hw, GError **error)
{
    for (guint i = 0; i < list->children->len; i++) {
        const VmXmlNode *node = list->children->pdata[i];
        if (!g_str_equal(node->name, "StorageController"))
            continue;
        const char *type = vm_xml_attr(node, "type");
        const char *name = vm_xml_attr(node, "name");
        const ControllerType *known = NULL;
        for (gsize k = 0; k < G_N_ELEMENTS(controller_types) && type != NULL; k++)
            if (g_str_equal(controller_types[k].type, type))
                known = &controller_types[k];
        if (known == NULL)
            return fail(r, node, error, VD_ERROR_UNSUPPORTED_FORMAT,
                        "storage controller '%s' is of unknown type '%s'",
                        name != NULL ? name : "(unnamed)", type != NULL ? type : "(none)");
        VmController *c = g_new0(VmController, 1);
        g_ptr_array_add(hw->controllers, c);
        c->name = g_strdup(name != NULL ? name : type);
        c->type = g_strdup(type);
        c->bus = known->bus;
        c->scsi_model = g_strdup(known->scsi_model);
        c->attachments = g_ptr_array_new_with_free_func((GDestroyNotify)vm_attachment_free);
        for (guint k = 0; k < node->children->len; k++) {
            const VmXmlNode *child = node->children->pdata[k];
            if (g_str_equal(child->name, "AttachedDevice") && !read_attachment(r, child, c, error))
                return FALSE;
        }
    }
    return TRUE;
}

/* The kinds of attachment an adapter can have, by element. */
static const struct {
    const char *element;
    const char *kind;
} nic_kinds[] = {
    { "NAT", "NAT" },
    { "NATNetwork", "NATNetwork" },
    { "BridgedInterface", "Bridged" },
    { "HostInterface", "Bridged" },
    { "InternalNetwork", "Internal" },
    { "HostOnlyInterface", "HostOnly" },
    { "HostOnlyNetwork", "HostOnlyNetwork" },
    { "GenericInterface", "Generic" },
    { "CloudNetwork", "Cloud" },
};

/* "080027AbCdEf" to "08:00:27:ab:cd:ef", or NULL. */
static char *mac_from_vbox(const char *text)
{
    if (text == NULL || strlen(text) != 12)
        return NULL;
    for (int i = 0; i < 12; i++)
        if (!g_ascii_isxdigit(text[i]))
            return NULL;
    g_autofree char *lower = g_ascii_strdown(text, 12);
    return g_strdup_printf("%.2s:%.2s:%.2s:%.2s:%.2s:%.2s", lower, lower + 2, lower + 4, lower + 6,
                           lower + 8, lower + 10);
}

static gint compare_nics(gconstpointer a, gconstpointer b)
{
    const VmNic *x = *(VmNic *const *)a, *y = *(VmNic *const *)b;
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

static gboolean read_nics(Reader *r, const VmXmlNode *network, VmHardware *hw, GError **error)
{
    for (guint i = 0; i < network->children->len; i++) {
        const VmXmlNode *node = network->children->pdata[i];
        if (!g_str_equal(node->name, "Adapter") || !bool_attr(node, "enabled", FALSE))
            continue;
        guint64 slot;
        if (!uint_attr(r, node, "slot", 0, MAX_PORT, &slot, error))
            return FALSE;
        const char *mac = vm_xml_attr(node, "MACAddress");
        VmNic *nic = g_new0(VmNic, 1);
        g_ptr_array_add(hw->nics, nic);
        nic->slot = (guint)slot;
        nic->model = g_strdup(vm_xml_attr(node, "type"));
        if (nic->model == NULL)
            nic->model = g_strdup("Am79C973"); /* the schema's default */
        if (mac != NULL && (nic->mac = mac_from_vbox(mac)) == NULL)
            return fail(r, node, error, VD_ERROR_CORRUPT,
                        "network adapter %u: MAC address '%s' is not 12 hex digits", nic->slot,
                        mac);
        for (guint k = 0; k < node->children->len && nic->attachment == NULL; k++) {
            const VmXmlNode *child = node->children->pdata[k];
            if (g_str_equal(child->name, "DisabledModes"))
                continue;
            /* The kind is shown, not acted on: the domain's NIC goes on
             * libvirt's default network whatever it was. */
            nic->attachment = g_strdup(child->name);
            for (gsize j = 0; j < G_N_ELEMENTS(nic_kinds); j++)
                if (g_str_equal(child->name, nic_kinds[j].element)) {
                    g_free(nic->attachment);
                    nic->attachment = g_strdup(nic_kinds[j].kind);
                }
            nic->network = g_strdup(vm_xml_attr(child, "name"));
        }
    }
    g_ptr_array_sort(hw->nics, compare_nics);
    return TRUE;
}

/* Firmware and Chipset sit in <Hardware>, or (settings 1.20) in its
 * <Platform>. */
static const VmXmlNode *hardware_setting(const VmXmlNode *hardware, const char *name)
{
    const VmXmlNode *node = vm_xml_child(hardware, name);
    const VmXmlNode *platform = vm_xml_child(hardware, "Platform");
    if (node == NULL && platform != NULL)
        node = vm_xml_child(platform, name);
    return node;
}

static VmHardware *read_hardware(Reader *r, const VmXmlNode *owner, GError **error)
{
    const VmXmlNode *node = vm_xml_child(owner, "Hardware");
    if (node == NULL) {
        fail(r, owner, error, VD_ERROR_CORRUPT, "<%s> has no <Hardware>", owner->name);
        return NULL;
    }
    g_autoptr(VmHardware) hw = g_new0(VmHardware, 1);
    hw->controllers = g_ptr_array_new_with_free_func((GDestroyNotify)vm_controller_free);
    hw->nics = g_ptr_array_new_with_free_func((GDestroyNotify)vm_nic_free);
    guint64 value;

    const VmXmlNode *cpu = vm_xml_child(node, "CPU");
    if (!uint_attr(r, cpu != NULL ? cpu : node, "count", 1, MAX_CPUS, &value, error))
        return NULL;
    hw->cpus = MAX((guint)value, 1);

    const VmXmlNode *memory = vm_xml_child(node, "Memory");
    if (memory == NULL || vm_xml_attr(memory, "RAMSize") == NULL) {
        fail(r, node, error, VD_ERROR_CORRUPT, "<Hardware> has no <Memory RAMSize>");
        return NULL;
    }
    if (!uint_attr(r, memory, "RAMSize", 0, MAX_MEMORY_MIB, &hw->memory_mib, error))
        return NULL;

    const VmXmlNode *firmware = hardware_setting(node, "Firmware");
    const char *fw = firmware != NULL ? vm_xml_attr(firmware, "type") : NULL;
    if (fw == NULL || g_str_equal(fw, "BIOS")) {
        hw->firmware = VM_FIRMWARE_BIOS;
    } else if (g_str_has_prefix(fw, "EFI")) { /* EFI, EFI32, EFI64, EFIDUAL */
        hw->firmware = VM_FIRMWARE_EFI;
    } else {
        fail(r, firmware, error, VD_ERROR_UNSUPPORTED_FORMAT, "unknown firmware type '%s'", fw);
        return NULL;
    }

    const VmXmlNode *chipset = hardware_setting(node, "Chipset");
    const char *cs = chipset != NULL ? vm_xml_attr(chipset, "type") : NULL;
    if (cs != NULL && !g_str_equal(cs, "PIIX3") && !g_str_equal(cs, "ICH9")) {
        fail(r, chipset, error, VD_ERROR_UNSUPPORTED_FORMAT,
             "chipset '%s' is not an x86 PC chipset (PIIX3 or ICH9)", cs);
        return NULL;
    }
    hw->chipset = g_strdup(cs != NULL ? cs : "PIIX3");

    const VmXmlNode *network = vm_xml_child(node, "Network");
    if (network != NULL && !read_nics(r, network, hw, error))
        return NULL;

    /* The controllers are inside <Hardware> or beside it, by version. */
    const VmXmlNode *controllers = vm_xml_child(node, "StorageControllers");
    if (controllers == NULL)
        controllers = vm_xml_child(owner, "StorageControllers");
    if (controllers != NULL && !read_controllers(r, controllers, hw, error))
        return NULL;
    return g_steal_pointer(&hw);
}

/* Every hard disk attached must be in the registry: a VM's media are
 * registered in its own file since VirtualBox 4.0. */
static gboolean check_attachments(Reader *r, const VmHardware *hw, const char *state,
                                  GError **error)
{
    for (guint i = 0; i < hw->controllers->len; i++) {
        const VmController *c = hw->controllers->pdata[i];
        for (guint k = 0; k < c->attachments->len; k++) {
            const VmAttachment *a = c->attachments->pdata[k];
            if (a->type != VM_DEVICE_DISK)
                continue;
            const VmMedium *medium = vm_machine_lookup_medium(r->machine, a->medium_uuid);
            if (medium == NULL || medium->device != VM_DEVICE_DISK)
                return fail(r, NULL, error, VD_ERROR_NOT_FOUND,
                            "%s: the hard disk on controller '%s' port %u device %u, {%s}, is "
                            "not among the hard disks of the media registry (is it registered "
                            "only in VirtualBox.xml?)",
                            state, c->name, a->port, a->device, a->medium_uuid);
        }
    }
    return TRUE;
}

/* ----- snapshots ----- */

static VmSnapshot *read_snapshot(Reader *r, const VmXmlNode *node, GError **error)
{
    g_autoptr(VmSnapshot) s = g_new0(VmSnapshot, 1);
    s->children = g_ptr_array_new_with_free_func((GDestroyNotify)vm_snapshot_free);
    s->uuid = required_uuid(r, node, "uuid", error);
    s->name = g_strdup(vm_xml_attr(node, "name"));
    if (s->uuid == NULL || (s->hardware = read_hardware(r, node, error)) == NULL)
        return NULL;
    g_autofree char *state = g_strdup_printf("snapshot '%s'", s->name != NULL ? s->name : "");
    if (!check_attachments(r, s->hardware, state, error))
        return NULL;
    const VmXmlNode *children = vm_xml_child(node, "Snapshots");
    for (guint i = 0; children != NULL && i < children->children->len; i++) {
        const VmXmlNode *child = children->children->pdata[i];
        if (!g_str_equal(child->name, "Snapshot"))
            continue;
        VmSnapshot *c = read_snapshot(r, child, error);
        if (c == NULL)
            return NULL;
        g_ptr_array_add(s->children, c);
    }
    return g_steal_pointer(&s);
}

static gboolean snapshot_exists(const VmSnapshot *s, const char *uuid)
{
    if (s == NULL)
        return FALSE;
    if (g_str_equal(s->uuid, uuid))
        return TRUE;
    for (guint i = 0; i < s->children->len; i++)
        if (snapshot_exists(s->children->pdata[i], uuid))
            return TRUE;
    return FALSE;
}

/* ----- the file ----- */

static gboolean check_version(Reader *r, const VmXmlNode *root, GError **error)
{
    const char *version = vm_xml_attr(root, "version");
    if (version == NULL)
        return fail(r, root, error, VD_ERROR_UNSUPPORTED_FORMAT,
                    "<VirtualBox> has no settings version");
    guint64 minor = 0;
    g_auto(GStrv) parts = g_strsplit(version, "-", 2);
    g_auto(GStrv) numbers = g_strsplit(parts[0] != NULL ? parts[0] : "", ".", -1);
    gboolean ok = g_strv_length(numbers) == 2 && g_str_equal(numbers[0], "1") &&
                  g_ascii_string_to_unsigned(numbers[1], 10, 0, 999, &minor, NULL);
    if (!ok)
        return fail(r, root, error, VD_ERROR_UNSUPPORTED_FORMAT,
                    "settings version '%s' is not one VirtualBox writes (1.N-platform)", version);
    if (minor < MIN_SETTINGS_MINOR)
        return fail(r, root, error, VD_ERROR_UNSUPPORTED_FORMAT,
                    "settings version %s is from VirtualBox 3 or older, whose media are "
                    "registered in VirtualBox.xml; open the VM once in a newer VirtualBox to "
                    "update it (1.%d to 1.%d are read)",
                    version, MIN_SETTINGS_MINOR, MAX_SETTINGS_MINOR);
    if (minor > MAX_SETTINGS_MINOR)
        return fail(r, root, error, VD_ERROR_UNSUPPORTED_FORMAT,
                    "settings version %s is newer than vdisk knows (1.%d to 1.%d are read)",
                    version, MIN_SETTINGS_MINOR, MAX_SETTINGS_MINOR);
    return TRUE;
}

VmMachine *vm_vbox_parse(const char *path, const char *text, gssize len, GError **error)
{
    g_autoptr(VmXmlNode) root = vm_xml_parse(path, text, len, error);
    if (root == NULL)
        return NULL;
    g_autoptr(VmMachine) m = g_new0(VmMachine, 1);
    Reader r = { .path = path, .machine = m };
    m->settings_path = g_canonicalize_filename(path, NULL);
    m->folder = g_path_get_dirname(m->settings_path);
    m->media = g_ptr_array_new_with_free_func((GDestroyNotify)vm_medium_free);
    m->media_by_uuid = g_hash_table_new(g_str_hash, g_str_equal);

    if (!g_str_equal(root->name, "VirtualBox")) {
        fail(&r, root, error, VD_ERROR_UNSUPPORTED_FORMAT,
             "not VirtualBox settings: the root element is <%s>, not <VirtualBox>", root->name);
        return NULL;
    }
    if (!check_version(&r, root, error))
        return NULL;
    m->product = g_strdup("VirtualBox");
    m->settings_version = g_strdup(vm_xml_attr(root, "version"));
    const VmXmlNode *machine = vm_xml_child(root, "Machine");
    if (machine == NULL && vm_xml_child(root, "MachineEncrypted") != NULL) {
        fail(&r, root, error, VD_ERROR_NOT_SUPPORTED,
             "the VM's settings are encrypted (VirtualBox VM encryption); remove the "
             "encryption in VirtualBox first (VBoxManage encryptvm VM removeencryption)");
        return NULL;
    }
    if (machine == NULL) {
        fail(&r, root, error, VD_ERROR_UNSUPPORTED_FORMAT,
             "no <Machine>: this is not a VM's settings file (VirtualBox.xml?)");
        return NULL;
    }
    const char *name = vm_xml_attr(machine, "name");
    if (name == NULL || name[0] == '\0') {
        fail(&r, machine, error, VD_ERROR_CORRUPT, "<Machine> has no name");
        return NULL;
    }
    m->name = g_strdup(name);
    if ((m->uuid = required_uuid(&r, machine, "uuid", error)) == NULL)
        return NULL;
    m->os_type = g_strdup(vm_xml_attr(machine, "OSType"));
    const char *snapshot_folder = vm_xml_attr(machine, "snapshotFolder");
    m->snapshot_folder = vm_path_from_settings(
        m->folder, snapshot_folder != NULL && snapshot_folder[0] ? snapshot_folder : "Snapshots");
    if (vm_xml_attr(machine, "currentSnapshot") != NULL &&
        (m->current_snapshot = required_uuid(&r, machine, "currentSnapshot", error)) == NULL)
        return NULL;

    m->state_file = g_strdup(vm_xml_attr(machine, "stateFile"));
    if (!read_registry(&r, machine, error))
        return NULL;
    if ((m->hardware = read_hardware(&r, machine, error)) == NULL)
        return NULL;
    if (!check_attachments(&r, m->hardware, "the current state", error))
        return NULL;
    const VmXmlNode *snapshot = vm_xml_child(machine, "Snapshot");
    if (snapshot != NULL && (m->snapshots = read_snapshot(&r, snapshot, error)) == NULL)
        return NULL;
    if (m->current_snapshot != NULL && !snapshot_exists(m->snapshots, m->current_snapshot)) {
        fail(&r, machine, error, VD_ERROR_CORRUPT,
             "the current snapshot {%s} is not in the snapshot tree", m->current_snapshot);
        return NULL;
    }
    return g_steal_pointer(&m);
}

VmMachine *vm_vbox_load(const char *path, GError **error)
{
    g_autoptr(GMappedFile) file = g_mapped_file_new(path, FALSE, error);
    if (file == NULL) {
        g_prefix_error(error, "cannot read the VM's settings: ");
        if ((*error)->domain != VD_ERROR) {
            int code = (*error)->code == G_FILE_ERROR_NOENT ? VD_ERROR_NOT_FOUND : VD_ERROR_IO;
            (*error)->domain = VD_ERROR;
            (*error)->code = code;
        }
        return NULL;
    }
    gsize len = g_mapped_file_get_length(file);
    if (len == 0) {
        g_set_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT,
                    "%s: the file is empty, not a VM's settings", path);
        return NULL;
    }
    if (len > MAX_SETTINGS_BYTES) {
        g_set_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT,
                    "%s: %" G_GSIZE_FORMAT " bytes is too large for a VM's settings file", path,
                    len);
        return NULL;
    }
    return vm_vbox_parse(path, g_mapped_file_get_contents(file), (gssize)len, error);
}
