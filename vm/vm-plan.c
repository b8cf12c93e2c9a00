/* The import plan: which disks of a VM become which qcow2 files, on which
 * bus of which machine type, and what is left out and why. One plan serves
 * the dry run (it is printed), the offline import (vdisk import-vm follows
 * it) and the domain XML (domain-xml.c writes it).
 */
#include <string.h>

#include "vm.h"

/* Device names run "sda".."sdz"; more disks than that on one bus prefix
 * would need names libvirt derives differently. */
#define MAX_DISKS_PER_PREFIX 26

static void plan_disk_free(VmPlanDisk *d)
{
    g_free(d->target_dev);
    g_free(d->target_name);
    g_free(d->target_path);
    if (d->chain != NULL)
        g_ptr_array_unref(d->chain);
    if (d->layer_paths != NULL)
        g_ptr_array_unref(d->layer_paths);
    g_free(d);
}

void vm_plan_free(VmPlan *plan)
{
    if (plan == NULL)
        return;
    vm_machine_free(plan->machine);
    g_free(plan->output_dir);
    g_free(plan->file_stem);
    g_free(plan->domain_type);
    g_free(plan->machine_type);
    g_free(plan->network);
    g_ptr_array_unref(plan->disks);
    g_ptr_array_unref(plan->notes);
    g_free(plan);
}

/* A file name from the VM's name: no folder separators, no leading dot,
 * nothing a shell or libvirt's XML would trip over. */
static char *file_stem(const char *name)
{
    GString *s = g_string_new(NULL);
    for (const char *p = name; *p != '\0'; p++) {
        gboolean ok = g_ascii_isalnum(*p) || *p == '-' || *p == '_' || (*p == '.' && s->len > 0);
        g_string_append_c(s, ok ? *p : '_');
    }
    if (s->len == 0)
        g_string_append(s, "vm");
    return g_string_free(s, FALSE);
}

static gint compare_attachments(gconstpointer a, gconstpointer b)
{
    const VmAttachment *x = *(VmAttachment *const *)a, *y = *(VmAttachment *const *)b;
    if (x->port != y->port)
        return x->port < y->port ? -1 : 1;
    return x->device < y->device ? -1 : x->device > y->device;
}

typedef struct {
    guint sd, vd; /* next index per device name prefix */
} DevCounter;

static char *target_dev(VmBus bus, const VmAttachment *a, DevCounter *n, GError **error)
{
    const char *prefix;
    guint index;
    switch (bus) {
    case VM_BUS_IDE:
        /* hda is primary master, hdb primary slave, hdc secondary master:
         * libvirt places an IDE disk by its name. */
        prefix = "hd";
        index = a->port * 2 + a->device;
        break;
    case VM_BUS_VIRTIO:
        prefix = "vd";
        index = n->vd++;
        break;
    default:
        prefix = "sd";
        index = n->sd++;
        break;
    }
    if (index >= MAX_DISKS_PER_PREFIX) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "more than %d disks named %s*: not planned", MAX_DISKS_PER_PREFIX, prefix);
        return NULL;
    }
    return g_strdup_printf("%s%c", prefix, 'a' + index);
}

static const char *device_name(VmDeviceType type)
{
    switch (type) {
    case VM_DEVICE_DISK:
        return "hard disk";
    case VM_DEVICE_DVD:
        return "DVD drive";
    case VM_DEVICE_FLOPPY:
        return "floppy drive";
    }
    return "device";
}

static gboolean plan_disk(VmPlan *plan, const VmController *c, const VmAttachment *a, DevCounter *n,
                          GError **error)
{
    VmMachine *m = plan->machine;
    VmBus bus = plan->virtio ? VM_BUS_VIRTIO : c->bus;
    if (bus == VM_BUS_NVME || bus == VM_BUS_FLOPPY) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "%s: the hard disk on controller '%s' (%s) port %u has no matching libvirt "
                    "disk bus here; import it with --virtio",
                    m->settings_path, c->name, c->type, a->port);
        return FALSE;
    }
    g_autoptr(GPtrArray) chain = vm_resolve_chain(m, a->medium_uuid, error);
    if (chain == NULL)
        return FALSE;
    char *dev = target_dev(bus, a, n, error);
    if (dev == NULL) {
        g_prefix_error(error, "%s: ", m->settings_path);
        return FALSE;
    }
    VmPlanDisk *d = g_new0(VmPlanDisk, 1);
    g_ptr_array_add(plan->disks, d);
    d->controller = c;
    d->attachment = a;
    d->bus = bus;
    d->target_dev = dev;
    d->chain = g_steal_pointer(&chain);
    if (plan->disks->len == 1)
        d->target_name = g_strdup_printf("%s.qcow2", plan->file_stem);
    else
        d->target_name = g_strdup_printf("%s-disk%u.qcow2", plan->file_stem, plan->disks->len);
    d->target_path = g_build_filename(plan->output_dir, d->target_name, NULL);
    if (c->bus == VM_BUS_SCSI && c->scsi_model == NULL && !plan->virtio)
        g_ptr_array_add(plan->notes,
                        g_strdup_printf("controller '%s' (%s) has no QEMU model: its disks go "
                                        "on a SCSI controller of libvirt's choosing",
                                        c->name, c->type));
    return TRUE;
}

static void plan_nics(VmPlan *plan)
{
    const VmHardware *hw = plan->machine->hardware;
    for (guint i = 0; i < hw->nics->len; i++) {
        const VmNic *nic = hw->nics->pdata[i];
        if (nic->attachment != NULL && !g_str_equal(nic->attachment, "NAT"))
            g_ptr_array_add(plan->notes,
                            g_strdup_printf("network adapter %u (%s%s%s) goes on libvirt's "
                                            "default network",
                                            nic->slot + 1, nic->attachment,
                                            nic->network != NULL ? ": " : "",
                                            nic->network != NULL ? nic->network : ""));
        if (nic->mac == NULL)
            g_ptr_array_add(plan->notes,
                            g_strdup_printf("network adapter %u has no MAC address: libvirt "
                                            "gives it one",
                                            nic->slot + 1));
    }
}

static guint count_snapshots(const VmSnapshot *s)
{
    if (s == NULL)
        return 0;
    guint n = 1;
    for (guint i = 0; i < s->children->len; i++)
        n += count_snapshots(s->children->pdata[i]);
    return n;
}

VmPlan *vm_plan_new(VmMachine *machine, const char *output_dir, gboolean virtio,
                    const char *domain_type, GError **error)
{
    g_autoptr(VmPlan) plan = g_new0(VmPlan, 1);
    plan->machine = machine;
    plan->output_dir = g_canonicalize_filename(output_dir, NULL);
    plan->file_stem = file_stem(machine->name);
    plan->virtio = virtio;
    plan->domain_type = g_strdup(domain_type != NULL ? domain_type : "kvm");
    plan->disks = g_ptr_array_new_with_free_func((GDestroyNotify)plan_disk_free);
    plan->notes = g_ptr_array_new_with_free_func(g_free);
    plan->network = g_strdup("default");
    const VmHardware *hw = machine->hardware;

    gboolean ide = FALSE;
    DevCounter n = { 0 };
    for (guint i = 0; i < hw->controllers->len; i++) {
        VmController *c = hw->controllers->pdata[i];
        g_ptr_array_sort(c->attachments, compare_attachments);
        for (guint k = 0; k < c->attachments->len; k++) {
            const VmAttachment *a = c->attachments->pdata[k];
            if (a->type != VM_DEVICE_DISK) {
                const VmMedium *medium = a->medium_uuid != NULL
                                             ? vm_machine_lookup_medium(machine, a->medium_uuid)
                                             : NULL;
                g_ptr_array_add(plan->notes,
                                g_strdup_printf("the %s on '%s' port %u device %u%s%s is left out",
                                                device_name(a->type), c->name, a->port, a->device,
                                                medium != NULL ? " with " : "",
                                                medium != NULL ? medium->location : ""));
                continue;
            }
            if (!plan_disk(plan, c, a, &n, error))
                return NULL;
            if (!virtio && c->bus == VM_BUS_IDE)
                ide = TRUE;
        }
    }
    if (plan->disks->len == 0)
        g_ptr_array_add(plan->notes, g_strdup("the VM has no hard disk"));
    /* QEMU's q35 has no IDE controller: a VM whose disks are on IDE keeps
     * the older PC machine, whatever its chipset was. */
    if (g_str_equal(hw->chipset, "ICH9") && !ide) {
        plan->machine_type = g_strdup("q35");
    } else {
        plan->machine_type = g_strdup("pc");
        if (g_str_equal(hw->chipset, "ICH9"))
            g_ptr_array_add(plan->notes, g_strdup("the chipset was ICH9, but q35 machines have "
                                                  "no IDE: the machine is pc (i440FX)"));
    }
    plan_nics(plan);
    /* An OVF's osType is VMware's guestOS name. */
    plan->osinfo_id = g_strcmp0(machine->product, "VirtualBox") != 0
                          ? vm_osinfo_from_vmware(machine->os_type)
                          : vm_osinfo_from_vbox(machine->os_type);
    if (plan->osinfo_id == NULL)
        g_ptr_array_add(plan->notes,
                        g_strdup_printf("OS type '%s' has no libosinfo id here",
                                        machine->os_type != NULL ? machine->os_type : "(none)"));
    if (machine->state_file != NULL)
        g_ptr_array_add(plan->notes,
                        g_strdup_printf("the VM is saved (suspended, %s), not shut down: its "
                                        "disks lack what the guest had not yet written; shut it "
                                        "down in VirtualBox first for a clean import",
                                        machine->state_file));
    guint snapshots = count_snapshots(machine->snapshots);
    gboolean deltas = FALSE;
    for (guint i = 0; i < plan->disks->len; i++)
        deltas |= ((VmPlanDisk *)plan->disks->pdata[i])->chain->len > 1;
    if (snapshots == 0 && deltas)
        g_ptr_array_add(plan->notes,
                        g_strdup("the VM has snapshots (its disks are chains of deltas): the "
                                 "current state is imported, each disk flattened; the snapshots "
                                 "are not kept"));
    if (snapshots > 0)
        g_ptr_array_add(plan->notes,
                        g_strdup_printf("the VM has %u snapshot%s: the current state is imported, "
                                        "each disk flattened; the snapshots are not kept",
                                        snapshots, snapshots == 1 ? "" : "s"));
    return g_steal_pointer(&plan);
}

void vm_plan_keep_snapshots(VmPlan *plan)
{
    plan->keep_snapshots = TRUE;
    for (guint i = 0; i < plan->disks->len; i++) {
        VmPlanDisk *d = plan->disks->pdata[i];
        g_autofree char *stem =
            g_strndup(d->target_name, strlen(d->target_name) - strlen(".qcow2"));
        g_clear_pointer(&d->layer_paths, g_ptr_array_unref);
        d->layer_paths = g_ptr_array_new_with_free_func(g_free);
        g_ptr_array_add(d->layer_paths, g_strdup(d->target_path));
        /* Numbered from the base up, so a later snapshot gets the next
         * number and the names of the older layers stay. */
        for (guint k = 1; k < d->chain->len; k++) {
            g_autofree char *name = g_strdup_printf("%s-%u.qcow2", stem, d->chain->len - k);
            g_ptr_array_add(d->layer_paths, g_build_filename(plan->output_dir, name, NULL));
        }
    }
    for (guint i = 0; i < plan->notes->len; i++)
        if (g_str_has_prefix(plan->notes->pdata[i], "the VM has ") &&
            strstr(plan->notes->pdata[i], "snapshot") != NULL)
            g_ptr_array_remove_index(plan->notes, i--);
}

/* "4.0 MiB": a plain space, whatever the locale (GLib's own uses a
 * no-break space in UTF-8 locales). */
static char *human_size(guint64 bytes)
{
    static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB" };
    if (bytes < 1024)
        return g_strdup_printf("%" G_GUINT64_FORMAT " B", bytes);
    double value = (double)bytes / 1024;
    gsize unit = 0;
    while (value >= 1024 && unit + 1 < G_N_ELEMENTS(units)) {
        value /= 1024;
        unit++;
    }
    return g_strdup_printf("%.1f %s", value, units[unit]);
}

void vm_plan_user_networking(VmPlan *plan, const char *why)
{
    g_clear_pointer(&plan->network, g_free);
    guint n = plan->machine->hardware->nics->len;
    if (n > 0)
        g_ptr_array_add(plan->notes,
                        g_strdup_printf("the network card%s use%s user-mode networking (outgoing "
                                        "connections only): %s",
                                        n == 1 ? "" : "s", n == 1 ? "s" : "", why));
}

char *vm_plan_describe(const VmPlan *plan)
{
    const VmMachine *m = plan->machine;
    const VmHardware *hw = m->hardware;
    GString *s = g_string_new(NULL);
    g_string_append_printf(s, "VM '%s'%s%s%s, from %s (%s settings, %s)\n", m->name,
                           m->uuid != NULL ? " {" : "", m->uuid != NULL ? m->uuid : "",
                           m->uuid != NULL ? "}" : "", m->settings_path, m->product,
                           m->settings_version);
    g_string_append_printf(s, "  OS type:  %s%s%s%s\n", m->os_type != NULL ? m->os_type : "(none)",
                           plan->osinfo_id != NULL ? " (libosinfo " : "",
                           plan->osinfo_id != NULL ? plan->osinfo_id : "",
                           plan->osinfo_id != NULL ? ")" : "");
    g_string_append_printf(s, "  memory:   %" G_GUINT64_FORMAT " MiB\n", hw->memory_mib);
    g_string_append_printf(s, "  vCPUs:    %u\n", hw->cpus);
    g_string_append_printf(s, "  firmware: %s\n",
                           hw->firmware == VM_FIRMWARE_EFI ? "EFI (OVMF)" : "BIOS");
    g_string_append_printf(s, "  machine:  %s (chipset %s), domain type %s\n", plan->machine_type,
                           hw->chipset, plan->domain_type);
    g_string_append(s, "Disks:\n");
    for (guint i = 0; i < plan->disks->len; i++) {
        const VmPlanDisk *d = plan->disks->pdata[i];
        const VmChainLink *top = d->chain->pdata[0];
        g_autofree char *vsize = human_size(top->virtual_size);
        g_string_append_printf(s, "  %s (%s) port %u device %u -> %s, %s %s, %s\n",
                               d->controller->name, d->controller->type, d->attachment->port,
                               d->attachment->device, d->target_path, vm_bus_name(d->bus),
                               d->target_dev, vsize);
        for (guint k = 0; k < d->chain->len; k++) {
            const VmChainLink *link = d->chain->pdata[k];
            g_autofree char *fsize = human_size(link->file_size);
            const char *role = k == 0 ? (d->chain->len > 1 ? "current" : "image")
                                      : (k + 1 == d->chain->len ? "base" : "parent");
            /* Only VirtualBox's registry has UUIDs to show. */
            gboolean show_uuid = g_strcmp0(m->product, "VirtualBox") == 0 && link->uuid != NULL &&
                                 link->uuid[0] != '\0';
            g_string_append_printf(s, "    %-8s %s%s%s (%s, %s%s%s%s)\n", role, link->path,
                                   link->member != NULL ? ":" : "",
                                   link->member != NULL ? link->member : "", link->format, fsize,
                                   show_uuid ? ", {" : "", show_uuid ? link->uuid : "",
                                   show_uuid ? "}" : "");
            if (d->layer_paths != NULL)
                g_string_append_printf(s, "             -> %s%s\n",
                                       (const char *)d->layer_paths->pdata[k],
                                       k + 1 < d->chain->len ? ", an overlay of the next" : "");
        }
    }
    if (plan->disks->len == 0)
        g_string_append(s, "  (none)\n");
    g_string_append(s, "Network:\n");
    for (guint i = 0; i < hw->nics->len; i++) {
        const VmNic *nic = hw->nics->pdata[i];
        g_string_append_printf(s, "  adapter %u: %s, %s%s -> libvirt network 'default'\n",
                               nic->slot + 1, nic->mac != NULL ? nic->mac : "(no MAC)", nic->model,
                               nic->attachment != NULL ? "" : ", not attached");
    }
    if (hw->nics->len == 0)
        g_string_append(s, "  (none)\n");
    if (plan->notes->len > 0) {
        g_string_append(s, "Notes:\n");
        for (guint i = 0; i < plan->notes->len; i++)
            g_string_append_printf(s, "  - %s\n", (const char *)plan->notes->pdata[i]);
    }
    return g_string_free(s, FALSE);
}
