/* A plan as a libvirt domain: what virt-install would write for the VM,
 * with the disks the import makes. The domain is only written here;
 * defining it is the caller's (vdiskctl, through the user's own libvirt
 * connection).
 */
#include "vm.h"

#define LIBOSINFO_NS "http://libosinfo.org/xmlns/libvirt/domain/1.0"

static void append_escaped(GString *s, const char *format, ...) G_GNUC_PRINTF(2, 3);

static void append_escaped(GString *s, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    g_autofree char *text = g_markup_vprintf_escaped(format, ap);
    va_end(ap);
    g_string_append(s, text);
}

/* QEMU's device for a VirtualBox network adapter type. */
static const char *nic_model(const VmPlan *plan, const VmNic *nic)
{
    if (plan->virtio || g_str_equal(nic->model, "virtio"))
        return "virtio";
    if (g_str_has_prefix(nic->model, "Am79C") || g_ascii_strcasecmp(nic->model, "vlance") == 0)
        return "pcnet";
    /* VMware's paravirtual and newer Intel cards: QEMU has both. */
    if (g_ascii_strcasecmp(nic->model, "vmxnet3") == 0)
        return "vmxnet3";
    if (g_ascii_strcasecmp(nic->model, "e1000e") == 0)
        return "e1000e";
    return "e1000"; /* 82540EM, 82543GC, 82545EM: Intel PRO/1000 */
}

/* The ports of one of QEMU's AHCI controllers. */
#define AHCI_PORTS 6

/* Where a SATA disk goes: on the port the VM had it on. Left to itself
 * libvirt places a disk by its name (sda on port 0, sdb on port 1),
 * closing the gaps a VM's DVD drive or removed disk left. A VM
 * controller with a port past the sixth takes more than one of libvirt's,
 * and the next VM controller's start after them. */
static void sata_address(const VmPlan *plan, const VmPlanDisk *disk, guint *controller, guint *unit)
{
    const VmHardware *hw = plan->machine->hardware;
    guint first = 0;
    for (guint i = 0; i < hw->controllers->len && hw->controllers->pdata[i] != disk->controller;
         i++) {
        guint taken = 0;
        for (guint k = 0; k < plan->disks->len; k++) {
            const VmPlanDisk *d = plan->disks->pdata[k];
            if (d->controller == hw->controllers->pdata[i] && d->bus == VM_BUS_SATA)
                taken = MAX(taken, d->attachment->port / AHCI_PORTS + 1);
        }
        first += taken;
    }
    *controller = first + disk->attachment->port / AHCI_PORTS;
    *unit = disk->attachment->port % AHCI_PORTS;
}

static void append_controllers(GString *s, const VmPlan *plan)
{
    /* One SCSI controller of the model the VM had, per VM controller. */
    guint index = 0;
    const VmHardware *hw = plan->machine->hardware;
    for (guint i = 0; i < hw->controllers->len && !plan->virtio; i++) {
        const VmController *c = hw->controllers->pdata[i];
        gboolean used = FALSE;
        for (guint k = 0; k < plan->disks->len; k++)
            used |= ((const VmPlanDisk *)plan->disks->pdata[k])->controller == c;
        if (c->bus != VM_BUS_SCSI || !used)
            continue;
        if (c->scsi_model != NULL)
            append_escaped(s, "    <controller type='scsi' index='%u' model='%s'/>\n", index,
                           c->scsi_model);
        else
            append_escaped(s, "    <controller type='scsi' index='%u'/>\n", index);
        index++;
    }
}

char *vm_domain_xml(const VmPlan *plan)
{
    const VmMachine *m = plan->machine;
    const VmHardware *hw = m->hardware;
    GString *s = g_string_new(NULL);
    append_escaped(s, "<domain type='%s'>\n", plan->domain_type);
    append_escaped(s, "  <name>%s</name>\n", m->name);
    if (m->uuid != NULL)
        append_escaped(s, "  <uuid>%s</uuid>\n", m->uuid);
    append_escaped(s, "  <description>Imported from %s (%s) by vdisk</description>\n", m->product,
                   m->settings_path);
    if (plan->osinfo_id != NULL) {
        g_string_append(s, "  <metadata>\n");
        append_escaped(s, "    <libosinfo:libosinfo xmlns:libosinfo='%s'>\n", LIBOSINFO_NS);
        append_escaped(s, "      <libosinfo:os id='%s'/>\n", plan->osinfo_id);
        g_string_append(s, "    </libosinfo:libosinfo>\n");
        g_string_append(s, "  </metadata>\n");
    }
    g_string_append_printf(s, "  <memory unit='MiB'>%" G_GUINT64_FORMAT "</memory>\n",
                           hw->memory_mib);
    g_string_append_printf(s, "  <vcpu>%u</vcpu>\n", hw->cpus);
    /* firmware='efi': libvirt picks the OVMF build (and its variable
     * store) that the host's firmware descriptors offer. */
    if (hw->firmware == VM_FIRMWARE_EFI)
        g_string_append(s, "  <os firmware='efi'>\n");
    else
        g_string_append(s, "  <os>\n");
    append_escaped(s, "    <type arch='x86_64' machine='%s'>hvm</type>\n", plan->machine_type);
    /* Without Secure Boot: a VM's Secure Boot keys live in its NVRAM file
     * (VirtualBox's and VMware's .nvram), which is not imported, and
     * libvirt left to choose takes the first firmware the host lists for
     * the machine, on Debian for q35 the one with Microsoft's keys
     * enrolled, which refuses ("Access Denied") every boot loader those
     * keys did not sign. */
    if (hw->firmware == VM_FIRMWARE_EFI)
        g_string_append(s, "    <firmware>\n      <feature enabled='no' name='secure-boot'/>\n"
                           "    </firmware>\n");
    g_string_append(s, "    <boot dev='hd'/>\n");
    g_string_append(s, "  </os>\n");
    g_string_append(s, "  <features>\n    <acpi/>\n    <apic/>\n  </features>\n");
    g_string_append(s, "  <clock offset='utc'/>\n");
    g_string_append(s, "  <devices>\n");
    for (guint i = 0; i < plan->disks->len; i++) {
        const VmPlanDisk *d = plan->disks->pdata[i];
        g_string_append(s, "    <disk type='file' device='disk'>\n");
        g_string_append(s, "      <driver name='qemu' type='qcow2'/>\n");
        append_escaped(s, "      <source file='%s'/>\n", d->target_path);
        append_escaped(s, "      <target dev='%s' bus='%s'/>\n", d->target_dev,
                       vm_bus_name(d->bus));
        if (d->bus == VM_BUS_SATA) {
            guint controller, unit;
            sata_address(plan, d, &controller, &unit);
            g_string_append_printf(s,
                                   "      <address type='drive' controller='%u' bus='0' "
                                   "target='0' unit='%u'/>\n",
                                   controller, unit);
        }
        g_string_append(s, "    </disk>\n");
    }
    append_controllers(s, plan);
    for (guint i = 0; i < hw->nics->len; i++) {
        const VmNic *nic = hw->nics->pdata[i];
        g_string_append_printf(s, "    <interface type='%s'>\n",
                               plan->network != NULL ? "network" : "user");
        if (nic->mac != NULL)
            append_escaped(s, "      <mac address='%s'/>\n", nic->mac);
        if (plan->network != NULL)
            append_escaped(s, "      <source network='%s'/>\n", plan->network);
        append_escaped(s, "      <model type='%s'/>\n", nic_model(plan, nic));
        g_string_append(s, "    </interface>\n");
    }
    g_string_append(s, "    <serial type='pty'/>\n");
    g_string_append(s, "    <console type='pty'/>\n");
    g_string_append(s, "    <input type='tablet' bus='usb'/>\n");
    g_string_append(s, "    <graphics type='vnc' port='-1'/>\n");
    g_string_append(s, "    <video>\n      <model type='vga'/>\n    </video>\n");
    g_string_append(s, "  </devices>\n");
    g_string_append(s, "</domain>\n");
    return g_string_free(s, FALSE);
}
