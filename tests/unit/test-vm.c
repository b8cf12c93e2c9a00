/* Unit tests of vm/: the VirtualBox settings reader, the chain resolution
 * (VDI chains made here, their differencing images in Snapshots/ as
 * VirtualBox keeps them), the plan and the libvirt domain XML. */
#include <stdio.h>
#include <string.h>

#include "test-util.h"
#include "vdisk.h"
#include "vm.h"

#define MACHINE_UUID "11111111-2222-3333-4444-555555555555"
#define SNAP_UUID "99999999-2222-3333-4444-555555555555"
#define ISO_UUID "aaaaaaaa-2222-3333-4444-555555555555"
#define DISK_UUID "bbbbbbbb-2222-3333-4444-555555555555"
#define MIB (1024 * 1024)

/* A settings file of version (NULL: 1.16-linux) with these pieces. */
static char *vbox_text(const char *version, const char *machine_attrs, const char *registry,
                       const char *hardware, const char *snapshots)
{
    return g_strdup_printf(
        "<?xml version=\"1.0\"?>\n"
        "<!-- written by the test -->\n"
        "<VirtualBox xmlns=\"http://www.virtualbox.org/\" version=\"%s\">\n"
        "  <Machine uuid=\"{" MACHINE_UUID "}\" name=\"Test VM\" OSType=\"Windows10_64\" %s>\n"
        "    <MediaRegistry>\n%s    </MediaRegistry>\n"
        "%s"
        "    <Hardware>\n%s    </Hardware>\n"
        "  </Machine>\n"
        "</VirtualBox>\n",
        version != NULL ? version : "1.16-linux", machine_attrs != NULL ? machine_attrs : "",
        registry != NULL ? registry : "", snapshots != NULL ? snapshots : "",
        hardware != NULL ? hardware : "");
}

static const char *const full_registry =
    "      <HardDisks>\n"
    "        <HardDisk uuid=\"{" DISK_UUID "}\" location=\"base.vdi\" format=\"VDI\" "
    "type=\"Normal\">\n"
    "          <HardDisk uuid=\"{CCCCCCCC-2222-3333-4444-555555555555}\" "
    "location=\"Snapshots/{cccccccc-2222-3333-4444-555555555555}.vdi\" format=\"VDI\"/>\n"
    "        </HardDisk>\n"
    "      </HardDisks>\n"
    "      <DVDImages>\n"
    "        <Image uuid=\"{" ISO_UUID "}\" location=\"/isos/install.iso\"/>\n"
    "      </DVDImages>\n";

static const char *const full_hardware =
    "      <CPU count=\"4\"><PAE enabled=\"true\"/></CPU>\n"
    "      <Memory RAMSize=\"3072\"/>\n"
    "      <Firmware type=\"EFI64\"/>\n"
    "      <Chipset type=\"ICH9\"/>\n"
    "      <Network>\n"
    "        <Adapter slot=\"1\" enabled=\"true\" MACAddress=\"080027ABCDE0\" type=\"virtio\">\n"
    "          <DisabledModes><NAT/></DisabledModes>\n"
    "          <BridgedInterface name=\"eth0\"/>\n"
    "        </Adapter>\n"
    "        <Adapter slot=\"0\" enabled=\"true\" MACAddress=\"080027ABCDEF\" type=\"82540EM\">\n"
    "          <NAT/>\n"
    "        </Adapter>\n"
    "        <Adapter slot=\"2\" enabled=\"false\" MACAddress=\"080027ABCDE2\"/>\n"
    "      </Network>\n"
    "      <StorageControllers>\n"
    "        <StorageController name=\"SATA\" type=\"AHCI\" PortCount=\"2\">\n"
    "          <AttachedDevice type=\"HardDisk\" port=\"0\" device=\"0\">\n"
    "            <Image uuid=\"{cccccccc-2222-3333-4444-555555555555}\"/>\n"
    "          </AttachedDevice>\n"
    "          <AttachedDevice type=\"DVD\" port=\"1\" device=\"0\">\n"
    "            <Image uuid=\"{" ISO_UUID "}\"/>\n"
    "          </AttachedDevice>\n"
    "        </StorageController>\n"
    "        <StorageController name=\"IDE\" type=\"PIIX4\" PortCount=\"2\">\n"
    "          <AttachedDevice type=\"DVD\" port=\"1\" device=\"0\"/>\n"
    "        </StorageController>\n"
    "      </StorageControllers>\n";

static const char *const full_snapshots =
    "    <Snapshot uuid=\"{" SNAP_UUID "}\" name=\"Before update\">\n"
    "      <Hardware>\n"
    "        <CPU count=\"2\"/>\n"
    "        <Memory RAMSize=\"2048\"/>\n"
    "        <StorageControllers>\n"
    "          <StorageController name=\"SATA\" type=\"AHCI\" PortCount=\"1\">\n"
    "            <AttachedDevice type=\"HardDisk\" port=\"0\" device=\"0\">\n"
    "              <Image uuid=\"{" DISK_UUID "}\"/>\n"
    "            </AttachedDevice>\n"
    "          </StorageController>\n"
    "        </StorageControllers>\n"
    "      </Hardware>\n"
    "      <Snapshots>\n"
    "        <Snapshot uuid=\"{98999999-2222-3333-4444-555555555555}\" name=\"Later\">\n"
    "          <Hardware><Memory RAMSize=\"1024\"/></Hardware>\n"
    "        </Snapshot>\n"
    "      </Snapshots>\n"
    "    </Snapshot>\n";

static VmMachine *parse(const char *text, GError **error)
{
    return vm_vbox_parse("/vms/Test VM/Test VM.vbox", text, -1, error);
}

static void test_read_settings(void)
{
    g_autofree char *text = vbox_text("1.19-windows",
                                      "currentSnapshot=\"{" SNAP_UUID "}\" "
                                      "stateFile=\"Snapshots/2024-05-01T10-00-00.sav\"",
                                      full_registry, full_hardware, full_snapshots);
    g_autoptr(GError) error = NULL;
    g_autoptr(VmMachine) m = parse(text, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(m->name, ==, "Test VM");
    g_assert_cmpstr(m->uuid, ==, MACHINE_UUID);
    g_assert_cmpstr(m->os_type, ==, "Windows10_64");
    g_assert_cmpstr(m->folder, ==, "/vms/Test VM");
    g_assert_cmpstr(m->snapshot_folder, ==, "/vms/Test VM/Snapshots");
    g_assert_cmpstr(m->current_snapshot, ==, SNAP_UUID);
    g_assert_cmpstr(m->state_file, ==, "Snapshots/2024-05-01T10-00-00.sav");

    const VmHardware *hw = m->hardware;
    g_assert_cmpuint(hw->cpus, ==, 4);
    g_assert_cmpuint(hw->memory_mib, ==, 3072);
    g_assert_cmpint(hw->firmware, ==, VM_FIRMWARE_EFI);
    g_assert_cmpstr(hw->chipset, ==, "ICH9");

    /* Enabled adapters only, in slot order, MACs as libvirt writes them. */
    g_assert_cmpuint(hw->nics->len, ==, 2);
    const VmNic *nic0 = hw->nics->pdata[0], *nic1 = hw->nics->pdata[1];
    g_assert_cmpuint(nic0->slot, ==, 0);
    g_assert_cmpstr(nic0->mac, ==, "08:00:27:ab:cd:ef");
    g_assert_cmpstr(nic0->attachment, ==, "NAT");
    g_assert_cmpstr(nic0->model, ==, "82540EM");
    g_assert_cmpuint(nic1->slot, ==, 1);
    g_assert_cmpstr(nic1->attachment, ==, "Bridged");
    g_assert_cmpstr(nic1->network, ==, "eth0");

    g_assert_cmpuint(hw->controllers->len, ==, 2);
    const VmController *sata = hw->controllers->pdata[0], *ide = hw->controllers->pdata[1];
    g_assert_cmpstr(sata->type, ==, "AHCI");
    g_assert_cmpint(sata->bus, ==, VM_BUS_SATA);
    g_assert_cmpint(ide->bus, ==, VM_BUS_IDE);
    g_assert_cmpuint(sata->attachments->len, ==, 2);
    const VmAttachment *disk = sata->attachments->pdata[0], *dvd = sata->attachments->pdata[1];
    g_assert_cmpint(disk->type, ==, VM_DEVICE_DISK);
    g_assert_cmpstr(disk->medium_uuid, ==, "cccccccc-2222-3333-4444-555555555555");
    g_assert_cmpint(dvd->type, ==, VM_DEVICE_DVD);
    g_assert_cmpuint(dvd->port, ==, 1);
    const VmAttachment *empty = ide->attachments->pdata[0];
    g_assert_null(empty->medium_uuid);

    /* The registry: the differencing child under its base, by any case. */
    VmMedium *child = vm_machine_lookup_medium(m, "{CCCCCCCC-2222-3333-4444-555555555555}");
    g_assert_nonnull(child);
    g_assert_nonnull(child->parent);
    g_assert_cmpstr(child->parent->uuid, ==, DISK_UUID);
    g_assert_cmpstr(child->parent->type, ==, "Normal");
    g_autofree char *path = vm_machine_medium_path(m, child);
    g_assert_cmpstr(path, ==, "/vms/Test VM/Snapshots/{cccccccc-2222-3333-4444-555555555555}.vdi");
    g_assert_cmpint(vm_machine_lookup_medium(m, ISO_UUID)->device, ==, VM_DEVICE_DVD);

    /* The snapshot tree, each with its own hardware. */
    g_assert_nonnull(m->snapshots);
    g_assert_cmpstr(m->snapshots->name, ==, "Before update");
    g_assert_cmpuint(m->snapshots->hardware->memory_mib, ==, 2048);
    g_assert_cmpuint(m->snapshots->hardware->cpus, ==, 2);
    const VmController *old = m->snapshots->hardware->controllers->pdata[0];
    g_assert_cmpstr(((VmAttachment *)old->attachments->pdata[0])->medium_uuid, ==, DISK_UUID);
    g_assert_cmpuint(m->snapshots->children->len, ==, 1);
    g_assert_cmpstr(((VmSnapshot *)m->snapshots->children->pdata[0])->name, ==, "Later");
}

static void test_defaults(void)
{
    /* BIOS, PIIX3 and one CPU when the file does not say; a location with
     * Windows separators. */
    g_autofree char *text = vbox_text("1.15-linux", NULL,
                                      "<HardDisks><HardDisk uuid=\"{" DISK_UUID
                                      "}\" location=\"disks\\a.vdi\" format=\"VDI\" "
                                      "type=\"Normal\"/></HardDisks>",
                                      "<Memory RAMSize=\"512\"/>", NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(VmMachine) m = parse(text, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(m->hardware->cpus, ==, 1);
    g_assert_cmpint(m->hardware->firmware, ==, VM_FIRMWARE_BIOS);
    g_assert_cmpstr(m->hardware->chipset, ==, "PIIX3");
    g_assert_cmpuint(m->hardware->nics->len, ==, 0);
    g_assert_null(m->snapshots);
    g_autofree char *path = vm_machine_medium_path(m, vm_machine_lookup_medium(m, DISK_UUID));
    g_assert_cmpstr(path, ==, "/vms/Test VM/disks/a.vdi");
}

/* text must fail with code, and the message must hold every one of the
 * NULL-terminated pieces. */
static void assert_refused(const char *text, int code, ...)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VmMachine) m = parse(text, &error);
    g_assert_null(m);
    g_assert_error(error, VD_ERROR, code);
    g_assert_true(g_str_has_prefix(error->message, "/vms/Test VM/Test VM.vbox"));
    va_list ap;
    va_start(ap, code);
    for (const char *piece; (piece = va_arg(ap, const char *)) != NULL;)
        if (strstr(error->message, piece) == NULL)
            g_error("'%s' is not in the message: %s", piece, error->message);
    va_end(ap);
}

static void test_versions(void)
{
    const char *good[] = { "1.11-linux",   "1.12-linux", "1.15-linux", "1.16-linux", "1.17-macosx",
                           "1.18-windows", "1.19-linux", "1.20-linux", "1.16" };
    for (gsize i = 0; i < G_N_ELEMENTS(good); i++) {
        g_autofree char *text = vbox_text(good[i], NULL, NULL, "<Memory RAMSize=\"64\"/>", NULL);
        g_autoptr(GError) error = NULL;
        g_autoptr(VmMachine) m = parse(text, &error);
        g_assert_no_error(error);
        g_assert_cmpstr(m->settings_version, ==, good[i]);
    }
    struct {
        const char *version, *says;
    } bad[] = {
        { "1.10-linux", "VirtualBox 3 or older" },    { "1.21-linux", "newer than vdisk knows" },
        { "2.0-linux", "not one VirtualBox writes" }, { "1.x-linux", "not one VirtualBox writes" },
        { "", "not one VirtualBox writes" },
    };
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree char *text =
            vbox_text(bad[i].version, NULL, NULL, "<Memory RAMSize=\"64\"/>", NULL);
        assert_refused(text, VD_ERROR_UNSUPPORTED_FORMAT, bad[i].says, NULL);
    }
}

static void test_refusals(void)
{
    g_autofree char *unknown_controller =
        vbox_text(NULL, NULL, NULL,
                  "<Memory RAMSize=\"64\"/><StorageControllers>"
                  "<StorageController name=\"Fancy\" type=\"QuantumBus\" PortCount=\"1\"/>"
                  "</StorageControllers>",
                  NULL);
    assert_refused(unknown_controller, VD_ERROR_UNSUPPORTED_FORMAT, "Fancy", "QuantumBus",
                   ":8:", NULL);

    g_autofree char *unknown_disk = vbox_text(
        NULL, NULL, NULL,
        "<Memory RAMSize=\"64\"/><StorageControllers>"
        "<StorageController name=\"SATA\" type=\"AHCI\" PortCount=\"1\">"
        "<AttachedDevice type=\"HardDisk\" port=\"0\" device=\"0\"><Image uuid=\"{" DISK_UUID
        "}\"/>"
        "</AttachedDevice></StorageController></StorageControllers>",
        NULL);
    assert_refused(unknown_disk, VD_ERROR_NOT_FOUND, DISK_UUID, "current state", "SATA", NULL);

    /* A disk attached in a snapshot only, unregistered, is refused too. */
    g_autofree char *snapshot_disk = vbox_text(
        NULL, NULL, NULL, "<Memory RAMSize=\"64\"/>",
        "<Snapshot uuid=\"{" SNAP_UUID "}\" name=\"old\"><Hardware><Memory RAMSize=\"64\"/>"
        "<StorageControllers><StorageController name=\"SATA\" type=\"AHCI\" PortCount=\"1\">"
        "<AttachedDevice type=\"HardDisk\" port=\"0\" device=\"0\"><Image uuid=\"{" DISK_UUID
        "}\"/>"
        "</AttachedDevice></StorageController></StorageControllers></Hardware></Snapshot>");
    assert_refused(snapshot_disk, VD_ERROR_NOT_FOUND, "snapshot 'old'", NULL);

    g_autofree char *unknown_device =
        vbox_text(NULL, NULL, NULL,
                  "<Memory RAMSize=\"64\"/><StorageControllers>"
                  "<StorageController name=\"SATA\" type=\"AHCI\" PortCount=\"1\">"
                  "<AttachedDevice type=\"Tape\" port=\"0\" device=\"0\"/></StorageController>"
                  "</StorageControllers>",
                  NULL);
    assert_refused(unknown_device, VD_ERROR_UNSUPPORTED_FORMAT, "Tape", NULL);

    g_autofree char *bad_mac =
        vbox_text(NULL, NULL, NULL,
                  "<Memory RAMSize=\"64\"/><Network><Adapter slot=\"0\" enabled=\"true\" "
                  "MACAddress=\"08:00:27:AB:CD:EF\"><NAT/></Adapter></Network>",
                  NULL);
    assert_refused(bad_mac, VD_ERROR_CORRUPT, "MAC address", NULL);

    g_autofree char *twice = vbox_text(NULL, NULL,
                                       "<HardDisks>"
                                       "<HardDisk uuid=\"{" DISK_UUID "}\" location=\"a.vdi\" "
                                       "format=\"VDI\" type=\"Normal\"/>"
                                       "<HardDisk uuid=\"{" DISK_UUID "}\" location=\"b.vdi\" "
                                       "format=\"VDI\" type=\"Normal\"/>"
                                       "</HardDisks>",
                                       "<Memory RAMSize=\"64\"/>", NULL);
    assert_refused(twice, VD_ERROR_CORRUPT, "registered twice", NULL);

    g_autofree char *lost_current = vbox_text(NULL, "currentSnapshot=\"{" SNAP_UUID "}\"", NULL,
                                              "<Memory RAMSize=\"64\"/>", NULL);
    assert_refused(lost_current, VD_ERROR_CORRUPT, "not in the snapshot tree", NULL);

    g_autofree char *no_memory = vbox_text(NULL, NULL, NULL, "<CPU count=\"2\"/>", NULL);
    assert_refused(no_memory, VD_ERROR_CORRUPT, "RAMSize", NULL);

    g_autofree char *bad_firmware =
        vbox_text(NULL, NULL, NULL, "<Memory RAMSize=\"64\"/><Firmware type=\"Coreboot\"/>", NULL);
    assert_refused(bad_firmware, VD_ERROR_UNSUPPORTED_FORMAT, "Coreboot", NULL);

    g_autofree char *bad_uuid =
        g_strdup("<VirtualBox version=\"1.16-linux\"><Machine uuid=\"{nope}\" name=\"x\"><Hardware>"
                 "<Memory RAMSize=\"64\"/></Hardware></Machine></VirtualBox>");
    assert_refused(bad_uuid, VD_ERROR_CORRUPT, "not a UUID", NULL);

    assert_refused("<domain type='kvm'><name>x</name></domain>", VD_ERROR_UNSUPPORTED_FORMAT,
                   "<domain>", NULL);
    assert_refused("<VirtualBox version=\"1.19-linux\"><MachineEncrypted uuid=\"{" MACHINE_UUID
                   "}\">AAAA</MachineEncrypted></VirtualBox>",
                   VD_ERROR_NOT_SUPPORTED, "encrypted", NULL);
    assert_refused("<VirtualBox version=\"1.16-linux\"><Global/></VirtualBox>",
                   VD_ERROR_UNSUPPORTED_FORMAT, "no <Machine>", NULL);
    assert_refused("QFI\xfb garbage \x01\x02", VD_ERROR_CORRUPT, "not well-formed", NULL);
    assert_refused("<VirtualBox version=\"1.16-linux\"><Machine>", VD_ERROR_CORRUPT,
                   "not well-formed", NULL);
    assert_refused("", VD_ERROR_CORRUPT, "not well-formed", NULL);
}

static void test_load_files(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *empty = path_in(fx, "empty.vbox");
    g_assert_true(g_file_set_contents(empty, "", 0, NULL));
    g_assert_null(vm_vbox_load(empty, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT);
    g_clear_error(&error);

    g_autofree char *missing = path_in(fx, "missing.vbox");
    g_assert_null(vm_vbox_load(missing, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_FOUND);
    g_clear_error(&error);

    /* A folder names its one .vbox; none or two is an error. */
    g_unlink(empty);
    g_assert_null(vm_settings_find(fx->dir, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_FOUND);
    g_clear_error(&error);
    g_autofree char *a = path_in(fx, "a.vbox");
    g_assert_true(g_file_set_contents(a, "x", 1, NULL));
    g_autofree char *found = vm_settings_find(fx->dir, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(found, ==, a);
    g_autofree char *b = path_in(fx, "b.vbox");
    g_assert_true(g_file_set_contents(b, "x", 1, NULL));
    g_assert_null(vm_settings_find(fx->dir, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT);
}

/* ----- chains on real VDI files ----- */

static char *vdi_uuid(const char *path)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, "vdi", VD_OPEN_NO_BACKING, &error);
    g_assert_no_error(error);
    g_autoptr(VdImageInfo) info = vd_image_get_info(img, &error);
    g_assert_no_error(error);
    const char *uuid = NULL;
    g_assert_true(g_variant_lookup(info->format_specific, "image-uuid", "&s", &uuid));
    return g_strdup(uuid);
}

static void fill(const char *path, guint64 offset, guint64 len, guint8 byte)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdImage) img = vd_image_open(path, "vdi", VD_OPEN_READ_WRITE, &error);
    g_assert_no_error(error);
    g_autofree guint8 *buf = g_malloc(len);
    memset(buf, byte, len);
    g_assert_true(vd_image_write(img, offset, buf, len, &error));
    g_assert_true(vd_image_flush(img, &error));
    g_assert_no_error(error);
}

/* A differencing VDI on parent, beside it (where vdisk looks for a VDI's
 * parent), named as VirtualBox names it: {UUID}.vdi. */
static char *make_child(const char *folder, const char *parent)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VdOptions) opts = vd_options_new();
    g_autofree char *tmp = g_build_filename(folder, "new-child.vdi", NULL);
    vd_options_set(opts, "backing_file", parent);
    vd_options_set(opts, "backing_fmt", "vdi");
    gboolean created = vd_image_create(tmp, "vdi", 0, opts, &error);
    g_assert_no_error(error);
    g_assert_true(created);
    g_autofree char *uuid = vdi_uuid(tmp);
    g_autofree char *name = g_strdup_printf("{%s}.vdi", uuid);
    char *dest = g_build_filename(folder, name, NULL);
    g_assert_cmpint(g_rename(tmp, dest), ==, 0);
    return dest;
}

/* Move the file at *path into folder. */
static void move_into(char **path, const char *folder)
{
    g_autofree char *base = g_path_get_basename(*path);
    char *dest = g_build_filename(folder, base, NULL);
    g_assert_cmpint(g_rename(*path, dest), ==, 0);
    g_free(*path);
    *path = dest;
}

typedef struct {
    char *base, *child, *grandchild;
    char *base_uuid, *child_uuid, *grandchild_uuid;
} Chain;

static void chain_clear(Chain *c)
{
    g_free(c->base);
    g_free(c->child);
    g_free(c->grandchild);
    g_free(c->base_uuid);
    g_free(c->child_uuid);
    g_free(c->grandchild_uuid);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Chain, chain_clear)

/* base.vdi in the VM folder reads 'B' in its first 3 MiB; the child 'C'
 * at 1 MiB, the grandchild 'G' at 2 MiB; both children are made beside
 * the base and then moved to Snapshots/, as VirtualBox keeps them. */
static void make_chain(Fixture *fx, Chain *c)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *snapshots = path_in(fx, "Snapshots");
    g_assert_cmpint(g_mkdir(snapshots, 0755), ==, 0);
    c->base = path_in(fx, "base.vdi");
    g_assert_true(vd_image_create(c->base, "vdi", 4 * MIB, NULL, &error));
    g_assert_no_error(error);
    fill(c->base, 0, 3 * MIB, 'B');
    c->child = make_child(fx->dir, c->base);
    fill(c->child, MIB, 4096, 'C');
    c->grandchild = make_child(fx->dir, c->child);
    fill(c->grandchild, 2 * MIB, 4096, 'G');
    c->base_uuid = vdi_uuid(c->base);
    c->child_uuid = vdi_uuid(c->child);
    c->grandchild_uuid = vdi_uuid(c->grandchild);
    move_into(&c->child, snapshots);
    move_into(&c->grandchild, snapshots);
}

static char *write_vbox(Fixture *fx, const char *registry, const char *hardware)
{
    g_autofree char *text = vbox_text(NULL, NULL, registry, hardware, NULL);
    char *path = path_in(fx, "Test VM.vbox");
    g_assert_true(g_file_set_contents(path, text, -1, NULL));
    return path;
}

static char *chain_registry(const Chain *c, const char *base_location)
{
    return g_strdup_printf("<HardDisks>"
                           "<HardDisk uuid=\"{%s}\" location=\"%s\" format=\"VDI\" "
                           "type=\"Normal\">"
                           "<HardDisk uuid=\"{%s}\" location=\"Snapshots/{%s}.vdi\" format=\"VDI\">"
                           "<HardDisk uuid=\"{%s}\" location=\"Snapshots/{%s}.vdi\" "
                           "format=\"VDI\"/>"
                           "</HardDisk></HardDisk></HardDisks>",
                           c->base_uuid, base_location, c->child_uuid, c->child_uuid,
                           c->grandchild_uuid, c->grandchild_uuid);
}

static char *sata_hardware(const char *uuid)
{
    return g_strdup_printf("<Memory RAMSize=\"256\"/><StorageControllers>"
                           "<StorageController name=\"SATA\" type=\"AHCI\" PortCount=\"1\">"
                           "<AttachedDevice type=\"HardDisk\" port=\"0\" device=\"0\">"
                           "<Image uuid=\"{%s}\"/></AttachedDevice>"
                           "</StorageController></StorageControllers>",
                           uuid);
}

static void assert_byte(VdImage *img, guint64 offset, guint8 want)
{
    g_autoptr(GError) error = NULL;
    guint8 got = 0;
    g_assert_true(vd_image_read(img, offset, &got, 1, &error));
    g_assert_no_error(error);
    g_assert_cmpint(got, ==, want);
}

static void test_chain(Fixture *fx, gconstpointer data)
{
    g_auto(Chain) c = { 0 };
    make_chain(fx, &c);
    g_autofree char *registry = chain_registry(&c, "base.vdi");
    g_autofree char *hardware = sata_hardware(c.grandchild_uuid);
    g_autofree char *vbox = write_vbox(fx, registry, hardware);
    g_autoptr(GError) error = NULL;
    g_autoptr(VmMachine) m = vm_vbox_load(vbox, &error);
    g_assert_no_error(error);

    g_autoptr(GPtrArray) chain = vm_resolve_chain(m, c.grandchild_uuid, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(chain->len, ==, 3);
    const VmChainLink *top = chain->pdata[0], *mid = chain->pdata[1], *base = chain->pdata[2];
    g_assert_cmpstr(top->path, ==, c.grandchild);
    g_assert_cmpstr(mid->path, ==, c.child);
    g_assert_cmpstr(base->path, ==, c.base);
    g_assert_cmpstr(top->uuid, ==, c.grandchild_uuid);
    g_assert_cmpuint(base->virtual_size, ==, 4 * MIB);
    g_assert_cmpstr(base->format, ==, "vdi");

    /* Opened as the chain says, the top reads all three layers. */
    g_autoptr(VdImage) img = vm_chain_open(chain, &error);
    g_assert_no_error(error);
    assert_byte(img, 0, 'B');
    assert_byte(img, MIB, 'C');
    assert_byte(img, MIB + 4096, 'B');
    assert_byte(img, 2 * MIB, 'G');
    assert_byte(img, 3 * MIB, 0);

    /* The child is current in the snapshot before: its own chain of two. */
    g_autoptr(GPtrArray) shorter = vm_resolve_chain(m, c.child_uuid, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(shorter->len, ==, 2);
}

static void test_chain_moved_vm(Fixture *fx, gconstpointer data)
{
    /* The VM came from another machine: the base's recorded location is
     * gone, but a VDI of its UUID and name is in the VM folder. */
    g_auto(Chain) c = { 0 };
    make_chain(fx, &c);
    g_autofree char *registry = chain_registry(&c, "C:\\Users\\someone\\VMs\\Test VM\\base.vdi");
    g_autofree char *hardware = sata_hardware(c.grandchild_uuid);
    g_autofree char *vbox = write_vbox(fx, registry, hardware);
    g_autoptr(GError) error = NULL;
    g_autoptr(VmMachine) m = vm_vbox_load(vbox, &error);
    g_assert_no_error(error);
    g_autoptr(GPtrArray) chain = vm_resolve_chain(m, c.grandchild_uuid, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(((VmChainLink *)chain->pdata[2])->path, ==, c.base);

    /* A file of that name but another UUID is not taken for it. */
    g_autoptr(VmMachine) m2 = NULL;
    g_assert_cmpint(g_unlink(c.base), ==, 0);
    g_assert_true(vd_image_create(c.base, "vdi", 4 * MIB, NULL, &error));
    m2 = vm_vbox_load(vbox, &error);
    g_assert_no_error(error);
    g_assert_null(vm_resolve_chain(m2, c.grandchild_uuid, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_FOUND);
}

static void test_chain_mismatch(Fixture *fx, gconstpointer data)
{
    g_auto(Chain) c = { 0 };
    make_chain(fx, &c);
    g_autoptr(GError) error = NULL;

    /* The registry puts the grandchild straight on the base. */
    g_autofree char *skipped = g_strdup_printf(
        "<HardDisks><HardDisk uuid=\"{%s}\" location=\"base.vdi\" format=\"VDI\" "
        "type=\"Normal\"><HardDisk uuid=\"{%s}\" location=\"Snapshots/{%s}.vdi\" format=\"VDI\"/>"
        "</HardDisk></HardDisks>",
        c.base_uuid, c.grandchild_uuid, c.grandchild_uuid);
    g_autofree char *hardware = sata_hardware(c.grandchild_uuid);
    g_autofree char *vbox = write_vbox(fx, skipped, hardware);
    g_autoptr(VmMachine) m = vm_vbox_load(vbox, &error);
    g_assert_no_error(error);
    g_assert_null(vm_resolve_chain(m, c.grandchild_uuid, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_CORRUPT);
    g_assert_nonnull(strstr(error->message, "its header says its parent is"));
    g_assert_nonnull(strstr(error->message, c.child_uuid));
    g_clear_error(&error);

    /* A registry UUID that is not the file's. */
    g_autofree char *wrong = g_strdup_printf("<HardDisks><HardDisk uuid=\"{" DISK_UUID
                                             "}\" location=\"base.vdi\" format=\"VDI\" "
                                             "type=\"Normal\"/></HardDisks>");
    g_autofree char *hardware2 = sata_hardware(DISK_UUID);
    g_autofree char *vbox2 = write_vbox(fx, wrong, hardware2);
    g_autoptr(VmMachine) m2 = vm_vbox_load(vbox2, &error);
    g_assert_no_error(error);
    g_assert_null(vm_resolve_chain(m2, DISK_UUID, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_CORRUPT);
    g_assert_nonnull(strstr(error->message, "its header says it is"));
    g_clear_error(&error);

    /* A differencing image registered as a base disk. */
    g_autofree char *as_base = g_strdup_printf("<HardDisks><HardDisk uuid=\"{%s}\" "
                                               "location=\"Snapshots/{%s}.vdi\" format=\"VDI\" "
                                               "type=\"Normal\"/></HardDisks>",
                                               c.child_uuid, c.child_uuid);
    g_autofree char *hardware3 = sata_hardware(c.child_uuid);
    g_autofree char *vbox3 = write_vbox(fx, as_base, hardware3);
    g_autoptr(VmMachine) m3 = vm_vbox_load(vbox3, &error);
    g_assert_no_error(error);
    g_assert_null(vm_resolve_chain(m3, c.child_uuid, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_CORRUPT);
    g_assert_nonnull(strstr(error->message, "registers it as a base disk"));
    g_clear_error(&error);

    /* A disk encrypted by VirtualBox: its data would be ciphertext. The
     * key store is a property of the base; the child inherits it. */
    g_autofree char *crypt =
        g_strdup_printf("<HardDisks><HardDisk uuid=\"{%s}\" location=\"base.vdi\" format=\"VDI\" "
                        "type=\"Normal\"><Property name=\"CRYPT/KeyId\" value=\"vm\"/>"
                        "<Property name=\"CRYPT/KeyStore\" value=\"U0NORQ==\"/>"
                        "<HardDisk uuid=\"{%s}\" location=\"Snapshots/{%s}.vdi\" format=\"VDI\"/>"
                        "</HardDisk></HardDisks>",
                        c.base_uuid, c.child_uuid, c.child_uuid);
    g_autofree char *vbox5 = write_vbox(fx, crypt, hardware3);
    g_autoptr(VmMachine) m5 = vm_vbox_load(vbox5, &error);
    g_assert_no_error(error);
    g_assert_null(vm_resolve_chain(m5, c.child_uuid, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
    g_assert_nonnull(strstr(error->message, "encrypted by VirtualBox"));
    g_assert_nonnull(strstr(error->message, c.base_uuid));
    g_clear_error(&error);

    /* A format vdisk does not read. */
    g_autofree char *vhd = g_strdup_printf("<HardDisks><HardDisk uuid=\"{" DISK_UUID "}\" "
                                           "location=\"disk.vhd\" format=\"VHD\" "
                                           "type=\"Normal\"/></HardDisks>");
    g_autofree char *vbox4 = write_vbox(fx, vhd, hardware2);
    g_autoptr(VmMachine) m4 = vm_vbox_load(vbox4, &error);
    g_assert_no_error(error);
    g_assert_null(vm_resolve_chain(m4, DISK_UUID, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_UNSUPPORTED_FORMAT);
}

static void test_locate(Fixture *fx, gconstpointer data)
{
    g_auto(Chain) c = { 0 };
    make_chain(fx, &c);
    g_autoptr(GError) error = NULL;

    /* No settings: the grandchild's parent is beside it, the child's one
     * folder up. */
    g_assert_null(vm_find_owner(c.grandchild, c.grandchild_uuid));
    g_autoptr(GPtrArray) searched = vm_chain_for_vdi(c.grandchild, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(searched->len, ==, 3);
    g_assert_cmpstr(((VmChainLink *)searched->pdata[1])->path, ==, c.child);
    g_assert_cmpstr(((VmChainLink *)searched->pdata[2])->path, ==, c.base);
    g_autoptr(VdImage) img = vm_chain_open(searched, &error);
    g_assert_no_error(error);
    assert_byte(img, 2 * MIB, 'G');
    assert_byte(img, MIB, 'C');

    /* With the VM's settings beside the base: its owner, and what the
     * current state uses in place of the base and the child. */
    g_autofree char *registry = chain_registry(&c, "base.vdi");
    g_autofree char *hardware = sata_hardware(c.grandchild_uuid);
    g_autofree char *vbox = write_vbox(fx, registry, hardware);
    g_autoptr(VmMachine) owner = vm_find_owner(c.child, c.child_uuid);
    g_assert_nonnull(owner);
    g_assert_cmpstr(owner->settings_path, ==, vbox);
    const VmMedium *current = vm_machine_current_descendant(owner, c.base_uuid);
    g_assert_nonnull(current);
    g_assert_cmpstr(current->uuid, ==, c.grandchild_uuid);
    g_assert_true(vm_machine_current_descendant(owner, c.grandchild_uuid) == current);
    g_autoptr(GPtrArray) registered = vm_chain_for_vdi(c.child, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(registered->len, ==, 2);

    /* A disk of no VM, and a base whose parent is nowhere. */
    g_autofree char *lone = path_in(fx, "lone.vdi");
    g_assert_true(vd_image_create(lone, "vdi", MIB, NULL, &error));
    g_autofree char *lone_uuid = vdi_uuid(lone);
    g_assert_null(vm_find_owner(lone, lone_uuid));
    g_assert_cmpint(g_unlink(vbox), ==, 0);
    g_assert_cmpint(g_unlink(c.base), ==, 0);
    g_assert_null(vm_chain_for_vdi(c.grandchild, &error));
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_FOUND);
    g_assert_nonnull(strstr(error->message, c.base_uuid));
}

/* ----- the plan and the domain ----- */

static void assert_contains(const char *text, const char *piece)
{
    if (strstr(text, piece) == NULL)
        g_error("'%s' is not in:\n%s", piece, text);
}

static void test_plan(Fixture *fx, gconstpointer data)
{
    g_auto(Chain) c = { 0 };
    make_chain(fx, &c);
    g_autoptr(GError) error = NULL;
    g_autofree char *other = path_in(fx, "data.vdi");
    g_assert_true(vd_image_create(other, "vdi", MIB, NULL, &error));
    g_autofree char *other_uuid = vdi_uuid(other);
    g_autofree char *chain = chain_registry(&c, "base.vdi");
    g_autofree char *registry = g_strdup_printf(
        "%.*s<HardDisk uuid=\"{%s}\" location=\"data.vdi\" format=\"VDI\" type=\"Normal\"/>"
        "</HardDisks>",
        (int)(strlen(chain) - strlen("</HardDisks>")), chain, other_uuid);
    g_autofree char *hardware = g_strdup_printf(
        "<CPU count=\"2\"/><Memory RAMSize=\"1024\"/><Firmware type=\"EFI\"/>"
        "<Chipset type=\"ICH9\"/>"
        "<Network><Adapter slot=\"0\" enabled=\"true\" MACAddress=\"080027000001\" "
        "type=\"82540EM\"><NAT/></Adapter></Network>"
        "<StorageControllers>"
        "<StorageController name=\"IDE\" type=\"PIIX4\" PortCount=\"2\">"
        "<AttachedDevice type=\"HardDisk\" port=\"1\" device=\"0\"><Image uuid=\"{%s}\"/>"
        "</AttachedDevice></StorageController>"
        "<StorageController name=\"SCSI\" type=\"LsiLogic\" PortCount=\"16\">"
        "<AttachedDevice type=\"HardDisk\" port=\"0\" device=\"0\"><Image uuid=\"{%s}\"/>"
        "</AttachedDevice></StorageController>"
        "</StorageControllers>",
        c.grandchild_uuid, other_uuid);
    g_autofree char *vbox = write_vbox(fx, registry, hardware);
    g_autofree char *out = path_in(fx, "out");

    VmMachine *m = vm_vbox_load(vbox, &error);
    g_assert_no_error(error);
    g_autoptr(VmPlan) plan = vm_plan_new(m, out, FALSE, "qemu", &error);
    g_assert_no_error(error);
    g_assert_cmpuint(plan->disks->len, ==, 2);
    const VmPlanDisk *d0 = plan->disks->pdata[0], *d1 = plan->disks->pdata[1];
    g_assert_cmpstr(d0->target_name, ==, "Test_VM.qcow2");
    g_assert_cmpstr(d1->target_name, ==, "Test_VM-disk2.qcow2");
    g_autofree char *target0 = g_build_filename(out, "Test_VM.qcow2", NULL);
    g_assert_cmpstr(d0->target_path, ==, target0);
    /* IDE secondary master is hdc; with an IDE disk the machine is pc. */
    g_assert_cmpstr(d0->target_dev, ==, "hdc");
    g_assert_cmpint(d0->bus, ==, VM_BUS_IDE);
    g_assert_cmpuint(d0->chain->len, ==, 3);
    g_assert_cmpstr(d1->target_dev, ==, "sda");
    g_assert_cmpstr(plan->machine_type, ==, "pc");
    g_assert_cmpstr(plan->osinfo_id, ==, "http://microsoft.com/win/10");

    g_autofree char *text = vm_plan_describe(plan);
    assert_contains(text, c.grandchild);
    assert_contains(text, c.base);
    assert_contains(text, "4.0 MiB");
    assert_contains(text, "q35 machines have no IDE");

    g_autofree char *xml = vm_domain_xml(plan);
    assert_contains(xml, "<domain type='qemu'>");
    assert_contains(xml, "<name>Test VM</name>");
    assert_contains(xml, "<uuid>" MACHINE_UUID "</uuid>");
    assert_contains(xml, "<memory unit='MiB'>1024</memory>");
    assert_contains(xml, "<vcpu>2</vcpu>");
    assert_contains(xml, "<os firmware='efi'>");
    /* no Secure Boot: its keys stay behind in VirtualBox's NVRAM file */
    assert_contains(xml, "<feature enabled='no' name='secure-boot'/>");
    assert_contains(xml, "machine='pc'");
    assert_contains(xml, "<target dev='hdc' bus='ide'/>");
    assert_contains(xml, "<target dev='sda' bus='scsi'/>");
    assert_contains(xml, "<controller type='scsi' index='0' model='lsilogic'/>");
    assert_contains(xml, "<mac address='08:00:27:00:00:01'/>");
    assert_contains(xml, "<source network='default'/>");
    assert_contains(xml, "<model type='e1000'/>");
    assert_contains(xml, "<libosinfo:os id='http://microsoft.com/win/10'/>");
    g_autofree char *source = g_markup_printf_escaped("<source file='%s'/>", target0);
    assert_contains(xml, source);

    /* Kept as overlays: a qcow2 per layer, numbered from the base. */
    vm_plan_keep_snapshots(plan);
    g_assert_cmpuint(d0->layer_paths->len, ==, 3);
    g_assert_cmpstr(d0->layer_paths->pdata[0], ==, target0);
    g_autofree char *layer1 = g_build_filename(out, "Test_VM-1.qcow2", NULL);
    g_autofree char *layer2 = g_build_filename(out, "Test_VM-2.qcow2", NULL);
    g_assert_cmpstr(d0->layer_paths->pdata[1], ==, layer2);
    g_assert_cmpstr(d0->layer_paths->pdata[2], ==, layer1);
    g_assert_cmpuint(d1->layer_paths->len, ==, 1);
    g_autofree char *kept = vm_plan_describe(plan);
    assert_contains(kept, layer1);
    assert_contains(kept, "an overlay of the next");

    /* --virtio: every disk and NIC on virtio, and q35 is kept. */
    VmMachine *m2 = vm_vbox_load(vbox, &error);
    g_autoptr(VmPlan) virtio = vm_plan_new(m2, out, TRUE, NULL, &error);
    g_assert_no_error(error);
    g_autofree char *xml2 = vm_domain_xml(virtio);
    assert_contains(xml2, "<domain type='kvm'>");
    assert_contains(xml2, "<target dev='vda' bus='virtio'/>");
    assert_contains(xml2, "<target dev='vdb' bus='virtio'/>");
    assert_contains(xml2, "<model type='virtio'/>");
    assert_contains(xml2, "machine='q35'");
    g_assert_null(strstr(xml2, "<controller type='scsi'"));
}

static void test_plan_notes(void)
{
    /* A saved VM and one without disks: planned, with notes that say so. */
    g_autofree char *text =
        vbox_text(NULL, "stateFile=\"Snapshots/2024.sav\"", NULL,
                  "<Memory RAMSize=\"64\"/><Network><Adapter slot=\"3\" enabled=\"true\">"
                  "<InternalNetwork name=\"lab\"/></Adapter></Network>",
                  NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(VmPlan) plan = vm_plan_new(parse(text, NULL), "/srv/vms", FALSE, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(plan->disks->len, ==, 0);
    g_autofree char *describe = vm_plan_describe(plan);
    assert_contains(describe, "the VM is saved (suspended, Snapshots/2024.sav)");
    assert_contains(describe, "the VM has no hard disk");
    assert_contains(describe,
                    "network adapter 4 (Internal: lab) goes on libvirt's default network");
    assert_contains(describe, "network adapter 4 has no MAC address");
    g_autofree char *xml = vm_domain_xml(plan);
    g_assert_null(strstr(xml, "<disk"));
    g_assert_null(strstr(xml, "<mac"));
    assert_contains(xml, "<interface type='network'>");

    /* Where libvirt's network is not running: user-mode networking, said. */
    vm_plan_user_networking(plan, "libvirt's network 'default' is not running on test:///x");
    g_free(describe);
    describe = vm_plan_describe(plan);
    assert_contains(describe, "the network card uses user-mode networking (outgoing connections "
                              "only): libvirt's network 'default' is not running on test:///x");
    g_free(xml);
    xml = vm_domain_xml(plan);
    assert_contains(xml, "<interface type='user'>");
    g_assert_null(strstr(xml, "<source network"));
}

/* A hard disk attached at PORT, its text kept in OWNED. */
static const char *disk_at(guint port, const char *uuid, GPtrArray *owned)
{
    char *text = g_strdup_printf("<AttachedDevice type=\"HardDisk\" port=\"%u\" device=\"0\">"
                                 "<Image uuid=\"{%s}\"/></AttachedDevice>",
                                 port, uuid);
    g_ptr_array_add(owned, text);
    return text;
}

/* SATA disks keep the VM's ports: a gap stays a gap, a port past the
 * sixth (QEMU's AHCI has six) is on a further controller, and a second
 * VM controller starts after the libvirt controllers of the first. */
static void test_plan_sata_ports(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    static const char *const names[] = { "a", "b", "c", "d" };
    g_autoptr(GString) registry = g_string_new("<HardDisks>");
    g_autoptr(GPtrArray) owned = g_ptr_array_new_with_free_func(g_free);
    const char *uuids[G_N_ELEMENTS(names)];
    for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
        g_autofree char *file = g_strdup_printf("%s.vdi", names[i]);
        g_autofree char *path = path_in(fx, file);
        g_assert_true(vd_image_create(path, "vdi", MIB, NULL, &error));
        uuids[i] = vdi_uuid(path);
        g_ptr_array_add(owned, (char *)uuids[i]);
        g_string_append_printf(registry,
                               "<HardDisk uuid=\"{%s}\" location=\"%s\" format=\"VDI\" "
                               "type=\"Normal\"/>",
                               uuids[i], file);
    }
    g_string_append(registry, "</HardDisks>");
    g_autofree char *hardware =
        g_strdup_printf("<Memory RAMSize=\"256\"/><Chipset type=\"ICH9\"/><StorageControllers>"
                        "<StorageController name=\"SATA\" type=\"AHCI\" PortCount=\"30\">%s%s%s"
                        "<AttachedDevice type=\"DVD\" port=\"1\" device=\"0\"/></StorageController>"
                        "<StorageController name=\"SATA 2\" type=\"AHCI\" PortCount=\"4\">%s"
                        "</StorageController></StorageControllers>",
                        disk_at(8, uuids[2], owned), disk_at(0, uuids[0], owned),
                        disk_at(2, uuids[1], owned), disk_at(1, uuids[3], owned));
    g_autofree char *vbox = write_vbox(fx, registry->str, hardware);
    VmMachine *m = vm_vbox_load(vbox, &error);
    g_assert_no_error(error);
    g_autoptr(VmPlan) plan = vm_plan_new(m, "/srv", FALSE, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(plan->disks->len, ==, 4);
    g_autofree char *xml = vm_domain_xml(plan);
    static const struct {
        const char *source, *dev, *controller, *unit;
    } want[] = {
        { "Test_VM.qcow2", "sda", "0", "0" },
        { "Test_VM-disk2.qcow2", "sdb", "0", "2" },
        { "Test_VM-disk3.qcow2", "sdc", "1", "2" },
        { "Test_VM-disk4.qcow2", "sdd", "2", "1" },
    };
    for (guint i = 0; i < G_N_ELEMENTS(want); i++) {
        g_autofree char *disk = g_strdup_printf(
            "      <source file='/srv/%s'/>\n"
            "      <target dev='%s' bus='sata'/>\n"
            "      <address type='drive' controller='%s' bus='0' target='0' unit='%s'/>\n",
            want[i].source, want[i].dev, want[i].controller, want[i].unit);
        assert_contains(xml, disk);
    }
    g_assert_cmpuint(((VmPlanDisk *)plan->disks->pdata[0])->attachment->port, ==, 0);

    /* On virtio libvirt numbers the disks itself. */
    VmMachine *m2 = vm_vbox_load(vbox, &error);
    g_assert_no_error(error);
    g_autoptr(VmPlan) virtio = vm_plan_new(m2, "/srv", TRUE, NULL, &error);
    g_assert_no_error(error);
    g_autofree char *xml2 = vm_domain_xml(virtio);
    g_assert_null(strstr(xml2, "<address"));
}

static void test_plan_refusals(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *disk = path_in(fx, "disk.vdi");
    g_assert_true(vd_image_create(disk, "vdi", MIB, NULL, &error));
    g_autofree char *uuid = vdi_uuid(disk);
    g_autofree char *registry =
        g_strdup_printf("<HardDisks><HardDisk uuid=\"{%s}\" location=\"disk.vdi\" format=\"VDI\" "
                        "type=\"Normal\"/></HardDisks>",
                        uuid);
    g_autofree char *nvme = g_strdup_printf(
        "<Memory RAMSize=\"64\"/><StorageControllers>"
        "<StorageController name=\"NVMe\" type=\"NVMe\" PortCount=\"1\">"
        "<AttachedDevice type=\"HardDisk\" port=\"0\" device=\"0\"><Image uuid=\"{%s}\"/>"
        "</AttachedDevice></StorageController></StorageControllers>",
        uuid);
    g_autofree char *vbox = write_vbox(fx, registry, nvme);
    g_autoptr(VmPlan) plan = vm_plan_new(vm_vbox_load(vbox, NULL), fx->dir, FALSE, NULL, &error);
    g_assert_null(plan);
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED);
    g_assert_nonnull(strstr(error->message, "--virtio"));
    g_clear_error(&error);
    /* With --virtio the same VM is planned. */
    g_autoptr(VmPlan) virtio = vm_plan_new(vm_vbox_load(vbox, NULL), fx->dir, TRUE, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(virtio->disks->len, ==, 1);

    /* A missing file is named. */
    g_assert_cmpint(g_unlink(disk), ==, 0);
    g_autoptr(VmPlan) gone = vm_plan_new(vm_vbox_load(vbox, NULL), fx->dir, TRUE, NULL, &error);
    g_assert_null(gone);
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_FOUND);
    g_assert_nonnull(strstr(error->message, "disk.vdi"));
}

/* ----- settings files from elsewhere (tests/unit/data/SOURCES) ----- */

#define LV_VM "74864f52-a7b7-4172-a7a5-54b6f3e9cd21"
#define LV_DISK1 "105122e9-f6d2-42c1-9c11-c01699c79517"
#define LV_DISK2 "f113fdf8-9750-4557-a8be-87fd02319071"
#define LV_CHILD1 "a28723b5-8093-4548-bf87-e5fa4136f0a3"
#define LV_CHILD2 "e1ff7f14-e6e5-40ac-8e05-8381a8ee5be9"
#define LV_SNAP "364c7314-b2d9-4fcf-b786-47b987449ef7"

static VmMachine *load_data(const char *name, GError **error)
{
    g_autofree char *path = g_test_build_filename(G_TEST_DIST, "unit", "data", name, NULL);
    return vm_vbox_load(path, error);
}

/* libvirt's VirtualBox driver writes settings 1.12, controllers beside
 * the hardware: two IDE disks, empty SATA, SCSI and floppy controllers,
 * one of eight adapters enabled. */
static void test_real_nosnap(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VmMachine) m = load_data("libvirt-2disks-nosnap.vbox", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(m->name, ==, LV_VM);
    g_assert_cmpstr(m->uuid, ==, LV_VM);
    g_assert_cmpstr(m->os_type, ==, "Other");
    g_assert_cmpstr(m->settings_version, ==, "1.12-linux");
    g_assert_cmpstr(m->snapshot_folder, ==, "/home/libvirt/vbox/" LV_VM "/Snapshots");
    g_assert_null(m->snapshots);
    g_assert_null(m->current_snapshot);
    const VmHardware *hw = m->hardware;
    g_assert_cmpuint(hw->memory_mib, ==, 192);
    g_assert_cmpuint(hw->cpus, ==, 1);
    g_assert_cmpint(hw->firmware, ==, VM_FIRMWARE_BIOS);
    g_assert_cmpstr(hw->chipset, ==, "PIIX3");
    g_assert_cmpuint(hw->controllers->len, ==, 4);
    const VmBus buses[] = { VM_BUS_IDE, VM_BUS_SATA, VM_BUS_SCSI, VM_BUS_FLOPPY };
    for (guint i = 0; i < 4; i++)
        g_assert_cmpint(((VmController *)hw->controllers->pdata[i])->bus, ==, buses[i]);
    const VmController *ide = hw->controllers->pdata[0];
    g_assert_cmpstr(ide->name, ==, "IDE Controller");
    g_assert_cmpuint(ide->attachments->len, ==, 2);
    const VmAttachment *a1 = ide->attachments->pdata[1];
    g_assert_cmpuint(a1->port, ==, 0);
    g_assert_cmpuint(a1->device, ==, 1);
    g_assert_cmpstr(a1->medium_uuid, ==, LV_DISK2);
    g_assert_cmpstr(((VmController *)hw->controllers->pdata[2])->scsi_model, ==, "lsilogic");
    g_assert_cmpuint(hw->nics->len, ==, 1);
    const VmNic *nic = hw->nics->pdata[0];
    g_assert_cmpstr(nic->mac, ==, "08:00:27:2a:58:9d");
    g_assert_cmpstr(nic->attachment, ==, "Bridged");
    g_assert_cmpstr(nic->network, ==, "hns0000000v");

    /* Its disks are not here: the plan names the first one missing. */
    g_autoptr(VmPlan) plan = vm_plan_new(g_steal_pointer(&m), "/tmp", FALSE, NULL, &error);
    g_assert_null(plan);
    g_assert_error(error, VD_ERROR, VD_ERROR_NOT_FOUND);
    g_assert_nonnull(strstr(error->message, "libvirtTest-disk1.vdi"));
}

/* Set the image UUID (and, unless NULL, the parent UUID) of a VDI, in the
 * byte order VirtualBox stores them: the first three fields little-endian. */
static void set_vdi_uuid(const char *path, const char *text, guint offset)
{
    guint8 u[16];
    unsigned int f[11];
    g_assert_cmpint(sscanf(text, "%8x-%4x-%4x-%2x%2x-%2x%2x%2x%2x%2x%2x", &f[0], &f[1], &f[2],
                           &f[3], &f[4], &f[5], &f[6], &f[7], &f[8], &f[9], &f[10]),
                    ==, 11);
    u[0] = f[0] & 0xff;
    u[1] = (f[0] >> 8) & 0xff;
    u[2] = (f[0] >> 16) & 0xff;
    u[3] = f[0] >> 24;
    u[4] = f[1] & 0xff;
    u[5] = f[1] >> 8;
    u[6] = f[2] & 0xff;
    u[7] = f[2] >> 8;
    for (int i = 0; i < 8; i++)
        u[8 + i] = (guint8)f[3 + i];
    FILE *file = fopen(path, "r+b");
    g_assert_nonnull(file);
    g_assert_cmpint(fseek(file, offset, SEEK_SET), ==, 0);
    g_assert_cmpuint(fwrite(u, 1, sizeof(u), file), ==, sizeof(u));
    g_assert_cmpint(fclose(file), ==, 0);
}

#define VDI_UUID_IMAGE 0x188 /* the VDI header's image UUID */

/* A base VDI of size bytes reading byte, and a differencing child on it
 * writing child_byte at 0, with the UUIDs and names the settings give. */
static void make_vdi_pair(Fixture *fx, const char *base_name, const char *base_uuid, guint64 size,
                          guint8 byte, const char *child_name, const char *child_uuid,
                          guint8 child_byte)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *base = path_in(fx, base_name);
    g_assert_true(vd_image_create(base, "vdi", size, NULL, &error));
    g_assert_no_error(error);
    fill(base, 0, size, byte);
    set_vdi_uuid(base, base_uuid, VDI_UUID_IMAGE);
    g_autofree char *made = make_child(fx->dir, base); /* links to base_uuid */
    set_vdi_uuid(made, child_uuid, VDI_UUID_IMAGE);
    g_autofree char *child = path_in(fx, child_name);
    g_assert_cmpint(g_rename(made, child), ==, 0);
    fill(child, 0, 4096, child_byte);
}

/* The same driver's file of a VM with one snapshot: each disk's current
 * state is a differencing child. Its recorded folders are another
 * machine's, so the files made here beside it are found by name, each
 * taken only for its UUID; the plan and the chains follow the registry. */
static void test_real_1snap(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *src =
        g_test_build_filename(G_TEST_DIST, "unit", "data", "libvirt-2disks-1snap.vbox", NULL);
    g_autofree char *text = NULL;
    g_assert_true(g_file_get_contents(src, &text, NULL, NULL));
    g_autofree char *vbox = path_in(fx, "vm.vbox");
    g_assert_true(g_file_set_contents(vbox, text, -1, NULL));
    make_vdi_pair(fx, "libvirtTest-disk1.vdi", LV_DISK1, 2 * MIB, 'A', "fakedisk-0.vdi", LV_CHILD1,
                  'a');
    make_vdi_pair(fx, "libvirtTest-disk2.vdi", LV_DISK2, MIB, 'Z', "fakedisk-1.vdi", LV_CHILD2,
                  'z');

    VmMachine *m = vm_vbox_load(vbox, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(m->current_snapshot, ==, LV_SNAP);
    g_assert_cmpstr(m->snapshots->uuid, ==, LV_SNAP);
    const VmController *old = m->snapshots->hardware->controllers->pdata[0];
    g_assert_cmpstr(((VmAttachment *)old->attachments->pdata[0])->medium_uuid, ==, LV_DISK1);
    g_assert_cmpstr(vm_machine_lookup_medium(m, LV_CHILD2)->parent->uuid, ==, LV_DISK2);

    g_autofree char *out = path_in(fx, "out");
    g_autoptr(VmPlan) plan = vm_plan_new(m, out, FALSE, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(plan->disks->len, ==, 2);
    const VmPlanDisk *d0 = plan->disks->pdata[0], *d1 = plan->disks->pdata[1];
    g_assert_cmpstr(d0->target_dev, ==, "hda");
    g_assert_cmpstr(d1->target_dev, ==, "hdb");
    g_assert_cmpuint(d0->chain->len, ==, 2);
    g_autofree char *child0 = path_in(fx, "fakedisk-0.vdi");
    g_autofree char *base1 = path_in(fx, "libvirtTest-disk2.vdi");
    g_assert_cmpstr(((VmChainLink *)d0->chain->pdata[0])->path, ==, child0);
    g_assert_cmpstr(((VmChainLink *)d1->chain->pdata[1])->path, ==, base1);
    g_assert_cmpstr(plan->machine_type, ==, "pc");
    g_assert_null(plan->osinfo_id);

    g_autoptr(VdImage) img = vm_chain_open(d1->chain, &error);
    g_assert_no_error(error);
    assert_byte(img, 0, 'z');
    assert_byte(img, 4096, 'Z');

    g_autofree char *xml = vm_domain_xml(plan);
    assert_contains(xml, "<name>" LV_VM "</name>");
    assert_contains(xml, "<memory unit='MiB'>192</memory>");
    assert_contains(xml, "<target dev='hda' bus='ide'/>");
    assert_contains(xml, "<target dev='hdb' bus='ide'/>");
    assert_contains(xml, "<mac address='08:00:27:2a:58:9d'/>");
    assert_contains(xml, "<os>");
    g_assert_null(strstr(xml, "<firmware>"));              /* a BIOS VM asks no firmware feature */
    g_assert_null(strstr(xml, "<controller type='scsi'")); /* no disk on it */
    g_assert_null(strstr(xml, "libosinfo"));
}

/* ----- VMware ----- */

static const char *const vmx_text =
    ".encoding = \"UTF-8\"\n"
    "config.version = \"8\"\n"
    "virtualHW.version = \"19\"\n"
    "# a comment\n"
    "displayName = \"Win |22ten|22\"\n"
    "guestOS = \"windows9-64\"\n"
    "memsize = \"4096\"\n"
    "numvcpus = \"4\"\n"
    "firmware = \"efi\"\n"
    "uuid.bios = \"56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc\"\n"
    "scsi0.present = \"TRUE\"\n"
    "scsi0.virtualDev = \"pvscsi\"\n"
    "SCSI0:1.present = \"TRUE\"\n"
    "scsi0:1.fileName = \"Win-000002.vmdk\"\n"
    "sata0.present = \"FALSE\"\n"
    "sata0:0.present = \"TRUE\"\n"
    "sata0:0.fileName = \"ignored.vmdk\"\n"
    "ide0:1.present = \"TRUE\"\n"
    "ide0:1.fileName = \"data.vmdk\"\n"
    "ide1:0.present = \"TRUE\"\n"
    "ide1:0.deviceType = \"cdrom-image\"\n"
    "ide1:0.fileName = \"/isos/win.iso\"\n"
    "ethernet0.present = \"TRUE\"\n"
    "ethernet0.virtualDev = \"e1000e\"\n"
    "ethernet0.addressType = \"generated\"\n"
    "ethernet0.generatedAddress = \"00:0C:29:AB:CD:EF\"\n"
    "ethernet1.present = \"TRUE\"\n"
    "ethernet1.addressType = \"static\"\n"
    "ethernet1.address = \"00:50:56:00:00:01\"\n"
    "ethernet1.connectionType = \"hostonly\"\n"
    "ethernet2.present = \"FALSE\"\n";

static void test_vmx(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VmMachine) m = vm_vmx_parse("/vms/win/Win.vmx", vmx_text, -1, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(m->product, ==, "VMware");
    g_assert_cmpstr(m->name, ==, "Win \"ten\"");
    g_assert_cmpstr(m->uuid, ==, "564d1234-5678-9abc-def0-123456789abc");
    g_assert_cmpstr(m->os_type, ==, "windows9-64");
    g_assert_cmpstr(vm_osinfo_from_vmware(m->os_type), ==, "http://microsoft.com/win/10");
    const VmHardware *hw = m->hardware;
    g_assert_cmpuint(hw->memory_mib, ==, 4096);
    g_assert_cmpuint(hw->cpus, ==, 4);
    g_assert_cmpint(hw->firmware, ==, VM_FIRMWARE_EFI);
    /* IDE first, then SCSI; the SATA adapter is not present. */
    g_assert_cmpuint(hw->controllers->len, ==, 3);
    const VmController *ide0 = hw->controllers->pdata[0], *ide1 = hw->controllers->pdata[1];
    const VmController *scsi = hw->controllers->pdata[2];
    g_assert_cmpint(ide0->bus, ==, VM_BUS_IDE);
    const VmAttachment *slave = ide0->attachments->pdata[0];
    g_assert_cmpuint(slave->port, ==, 0);
    g_assert_cmpuint(slave->device, ==, 1);
    const VmMedium *data = vm_machine_lookup_medium(m, slave->medium_uuid);
    g_assert_cmpstr(data->location, ==, "data.vmdk");
    g_assert_cmpint(((VmAttachment *)ide1->attachments->pdata[0])->type, ==, VM_DEVICE_DVD);
    g_assert_cmpint(scsi->bus, ==, VM_BUS_SCSI);
    g_assert_cmpstr(scsi->scsi_model, ==, "vmpvscsi");
    const VmAttachment *disk = scsi->attachments->pdata[0];
    g_assert_cmpuint(disk->port, ==, 1);
    g_autofree char *path =
        vm_machine_medium_path(m, vm_machine_lookup_medium(m, disk->medium_uuid));
    g_assert_cmpstr(path, ==, "/vms/win/Win-000002.vmdk");
    g_assert_cmpuint(hw->nics->len, ==, 2);
    const VmNic *n0 = hw->nics->pdata[0], *n1 = hw->nics->pdata[1];
    g_assert_cmpstr(n0->mac, ==, "00:0c:29:ab:cd:ef");
    g_assert_cmpstr(n0->model, ==, "e1000e");
    g_assert_cmpstr(n0->attachment, ==, "NAT");
    g_assert_cmpstr(n1->mac, ==, "00:50:56:00:00:01");
    g_assert_cmpstr(n1->attachment, ==, "hostonly");

    struct {
        const char *text, *says;
        int code;
    } bad[] = {
        { "<domain><name>x</name></domain>\n", "not key = \"value\"", VD_ERROR_UNSUPPORTED_FORMAT },
        { "<VirtualBox version=\"1.16-linux\"/>\n", "no config.version",
          VD_ERROR_UNSUPPORTED_FORMAT },
        { "\xff\xfe binary", "not text", VD_ERROR_UNSUPPORTED_FORMAT },
        { "displayName = \"x\"\nmemsize = \"64\"\n", "no config.version",
          VD_ERROR_UNSUPPORTED_FORMAT },
        { "config.version = \"8\"\n", "no memsize", VD_ERROR_CORRUPT },
        { "config.version = \"8\"\nmemsize = \"64\"\nscsi0.present = \"TRUE\"\n"
          "scsi0.virtualDev = \"quantum\"\nscsi0:0.present = \"TRUE\"\n"
          "scsi0:0.fileName = \"a.vmdk\"\n",
          "quantum", VD_ERROR_UNSUPPORTED_FORMAT },
        { "config.version = \"8\"\nmemsize = \"64\"\nide0:0.present = \"TRUE\"\n"
          "ide0:0.deviceType = \"rawDisk\"\nide0:0.fileName = \"/dev/sda\"\n",
          "rawDisk", VD_ERROR_UNSUPPORTED_FORMAT },
        { "config.version = \"8\"\nmemsize = \"64\"\nide0:0.present = \"TRUE\"\n"
          "ide0:0.fileName = \"disk.img\"\n",
          "names no .vmdk", VD_ERROR_UNSUPPORTED_FORMAT },
        { "config.version = \"8\"\nmemsize = \"64\"\nethernet0.present = \"TRUE\"\n"
          "ethernet0.generatedAddress = \"00:0c:29\"\n",
          "MAC address", VD_ERROR_CORRUPT },
        { "config.version = \"8\"\nmemsize = \"64\"\nfirmware = \"coreboot\"\n", "coreboot",
          VD_ERROR_UNSUPPORTED_FORMAT },
    };
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_clear_error(&error);
        g_autoptr(VmMachine) no = vm_vmx_parse("/vms/x.vmx", bad[i].text, -1, &error);
        g_assert_null(no);
        g_assert_error(error, VD_ERROR, bad[i].code);
        g_assert_true(g_str_has_prefix(error->message, "/vms/x.vmx: "));
        if (strstr(error->message, bad[i].says) == NULL)
            g_error("'%s' is not in: %s", bad[i].says, error->message);
    }
}

/* ----- OVF ----- */

/* As VirtualBox exports: default namespace, two IDE channels, SATA. */
static const char *const ovf_text =
    "<?xml version=\"1.0\"?>\n"
    "<Envelope ovf:version=\"1.0\" xml:lang=\"en-US\" "
    "xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\""
    " xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\""
    " xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/"
    "CIM_ResourceAllocationSettingData\""
    " xmlns:vmw=\"http://www.vmware.com/schema/ovf\">\n"
    "  <References><File ovf:id=\"file1\" ovf:href=\"appliance-disk001.vmdk\"/></References>\n"
    "  <DiskSection><Info>disks</Info>\n"
    "    <Disk ovf:capacity=\"8589934592\" ovf:diskId=\"vmdisk1\" ovf:fileRef=\"file1\""
    " ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>\n"
    "    <Disk ovf:capacity=\"1048576\" ovf:diskId=\"empty\"/>\n"
    "  </DiskSection>\n"
    "  <VirtualSystem ovf:id=\"appliance\">\n"
    "    <Name>My Appliance</Name>\n"
    "    <OperatingSystemSection ovf:id=\"96\" vmw:osType=\"debian11_64Guest\"/>\n"
    "    <VirtualHardwareSection>\n"
    "      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType>"
    "<rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>\n"
    "      <Item><rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>"
    "<rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType>"
    "<rasd:VirtualQuantity>2048</rasd:VirtualQuantity></Item>\n"
    "      <Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID>"
    "<rasd:ResourceSubType>PIIX4</rasd:ResourceSubType><rasd:ResourceType>5</rasd:ResourceType></"
    "Item>\n"
    "      <Item><rasd:Address>1</rasd:Address><rasd:InstanceID>4</rasd:InstanceID>"
    "<rasd:ResourceSubType>PIIX4</rasd:ResourceSubType><rasd:ResourceType>5</rasd:ResourceType></"
    "Item>\n"
    "      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>sataController0</rasd:ElementName>"
    "<rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>AHCI</rasd:ResourceSubType>"
    "<rasd:ResourceType>20</rasd:ResourceType></Item>\n"
    "      <Item><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>"
    "<rasd:Connection>NAT</rasd:Connection><rasd:InstanceID>6</rasd:InstanceID>"
    "<rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></"
    "Item>\n"
    "      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent>"
    "<rasd:HostResource>/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>7</rasd:InstanceID>"
    "<rasd:Parent>5</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>\n"
    "      <Item><rasd:AddressOnParent>1</rasd:AddressOnParent><rasd:InstanceID>8</rasd:InstanceID>"
    "<rasd:Parent>4</rasd:Parent><rasd:ResourceType>15</rasd:ResourceType></Item>\n"
    "      <vmw:Config ovf:required=\"false\" vmw:key=\"firmware\" vmw:value=\"efi\"/>\n"
    "    </VirtualHardwareSection>\n"
    "  </VirtualSystem>\n"
    "</Envelope>\n";

static void test_ovf(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VmMachine) m = vm_ovf_parse("/vms/a.ovf", ovf_text, -1, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(m->product, ==, "OVF");
    g_assert_cmpstr(m->name, ==, "My Appliance");
    g_assert_null(m->appliance);
    g_assert_cmpstr(m->os_type, ==, "debian11_64Guest");
    g_assert_cmpstr(vm_osinfo_from_vmware(m->os_type), ==, "http://debian.org/debian/11");
    const VmHardware *hw = m->hardware;
    g_assert_cmpuint(hw->cpus, ==, 2);
    g_assert_cmpuint(hw->memory_mib, ==, 2048);
    g_assert_cmpint(hw->firmware, ==, VM_FIRMWARE_EFI);
    g_assert_cmpuint(hw->controllers->len, ==, 3);
    const VmController *ide1 = hw->controllers->pdata[1], *sata = hw->controllers->pdata[2];
    g_assert_cmpint(ide1->bus, ==, VM_BUS_IDE);
    const VmAttachment *cd = ide1->attachments->pdata[0];
    g_assert_cmpint(cd->type, ==, VM_DEVICE_DVD);
    g_assert_cmpuint(cd->port, ==, 1); /* secondary channel */
    g_assert_cmpuint(cd->device, ==, 1);
    g_assert_cmpint(sata->bus, ==, VM_BUS_SATA);
    g_assert_cmpstr(sata->name, ==, "sataController0");
    const VmAttachment *disk = sata->attachments->pdata[0];
    g_assert_cmpint(disk->type, ==, VM_DEVICE_DISK);
    const VmMedium *medium = vm_machine_lookup_medium(m, disk->medium_uuid);
    g_assert_cmpstr(medium->location, ==, "appliance-disk001.vmdk");
    g_assert_cmpstr(medium->format, ==, "VMDK");
    g_assert_cmpuint(hw->nics->len, ==, 1);
    const VmNic *nic = hw->nics->pdata[0];
    g_assert_null(nic->mac);
    g_assert_cmpstr(nic->model, ==, "E1000");
    g_assert_cmpstr(nic->network, ==, "NAT");

    struct {
        const char *text, *says;
        int code;
    } bad[] = {
        { "<VirtualBox version=\"1.16-linux\"/>", "not an OVF descriptor",
          VD_ERROR_UNSUPPORTED_FORMAT },
        { "<Envelope><VirtualSystemCollection/></Envelope>", "several VMs",
          VD_ERROR_NOT_SUPPORTED },
        { "<Envelope><VirtualSystem ovf:id=\"x\"><VirtualHardwareSection/></VirtualSystem>"
          "</Envelope>",
          "no memory item", VD_ERROR_CORRUPT },
        { "<Envelope><References><File ovf:id=\"f\" ovf:href=\"http://example.com/d.vmdk\"/>"
          "</References><VirtualSystem ovf:id=\"x\"/></Envelope>",
          "only files in the appliance", VD_ERROR_NOT_SUPPORTED },
        { "<Envelope><VirtualSystem ovf:id=\"x\"><VirtualHardwareSection>"
          "<Item><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1</"
          "rasd:VirtualQuantity></Item>"
          "<Item><rasd:ResourceType>17</rasd:ResourceType><rasd:Parent>9</rasd:Parent></Item>"
          "</VirtualHardwareSection></VirtualSystem></Envelope>",
          "not among the items before it", VD_ERROR_CORRUPT },
        { "<Envelope><VirtualSystem ovf:id=\"x\"><VirtualHardwareSection>"
          "<Item><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1</"
          "rasd:VirtualQuantity></Item>"
          "<Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>6</rasd:ResourceType>"
          "<rasd:ResourceSubType>quantum</rasd:ResourceSubType></Item>"
          "</VirtualHardwareSection></VirtualSystem></Envelope>",
          "quantum", VD_ERROR_UNSUPPORTED_FORMAT },
        { "<Envelope><VirtualSystem ovf:id=\"x\"><VirtualHardwareSection>"
          "<Item><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1</"
          "rasd:VirtualQuantity></Item>"
          "<Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>6</rasd:ResourceType>"
          "<rasd:ResourceSubType>lsilogic</rasd:ResourceSubType></Item>"
          "<Item><rasd:ResourceType>17</rasd:ResourceType><rasd:Parent>3</rasd:Parent>"
          "<rasd:HostResource>ovf:/disk/nowhere</rasd:HostResource></Item>"
          "</VirtualHardwareSection></VirtualSystem></Envelope>",
          "nowhere", VD_ERROR_CORRUPT },
    };
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_clear_error(&error);
        g_autoptr(VmMachine) no = vm_ovf_parse("/vms/x.ovf", bad[i].text, -1, NULL, &error);
        g_assert_null(no);
        g_assert_error(error, VD_ERROR, bad[i].code);
        g_assert_true(g_str_has_prefix(error->message, "/vms/x.ovf"));
        if (strstr(error->message, bad[i].says) == NULL)
            g_error("'%s' is not in: %s", bad[i].says, error->message);
    }
}

static void test_osinfo(void)
{
    g_assert_cmpstr(vm_osinfo_from_vbox("Ubuntu22_LTS_64"), ==, "http://ubuntu.com/ubuntu/22.04");
    g_assert_cmpstr(vm_osinfo_from_vbox("Windows11_64"), ==, "http://microsoft.com/win/11");
    g_assert_cmpstr(vm_osinfo_from_vbox("Linux26_64"), ==, "http://libosinfo.org/linux/2022");
    g_assert_null(vm_osinfo_from_vbox("Haiku_64"));
    g_assert_null(vm_osinfo_from_vbox(NULL));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/vm/settings/read", test_read_settings);
    g_test_add_func("/vm/settings/defaults", test_defaults);
    g_test_add_func("/vm/settings/versions", test_versions);
    g_test_add_func("/vm/settings/refusals", test_refusals);
    g_test_add("/vm/settings/files", Fixture, NULL, fixture_setup, test_load_files,
               fixture_teardown);
    g_test_add("/vm/chain/resolve", Fixture, NULL, fixture_setup, test_chain, fixture_teardown);
    g_test_add("/vm/chain/moved-vm", Fixture, NULL, fixture_setup, test_chain_moved_vm,
               fixture_teardown);
    g_test_add("/vm/chain/mismatch", Fixture, NULL, fixture_setup, test_chain_mismatch,
               fixture_teardown);
    g_test_add("/vm/chain/locate", Fixture, NULL, fixture_setup, test_locate, fixture_teardown);
    g_test_add("/vm/plan/domain", Fixture, NULL, fixture_setup, test_plan, fixture_teardown);
    g_test_add_func("/vm/plan/notes", test_plan_notes);
    g_test_add("/vm/plan/sata-ports", Fixture, NULL, fixture_setup, test_plan_sata_ports,
               fixture_teardown);
    g_test_add("/vm/plan/refusals", Fixture, NULL, fixture_setup, test_plan_refusals,
               fixture_teardown);
    g_test_add_func("/vm/osinfo", test_osinfo);
    g_test_add_func("/vm/vmx", test_vmx);
    g_test_add_func("/vm/ovf", test_ovf);
    g_test_add_func("/vm/real/libvirt-nosnap", test_real_nosnap);
    g_test_add("/vm/real/libvirt-1snap", Fixture, NULL, fixture_setup, test_real_1snap,
               fixture_teardown);
    return g_test_run();
}
