/* libvdisk-vm: whole virtual machines, read from another product's
 * settings and planned as a libvirt domain.
 *
 * A VmMachine is what a settings file says (vbox-settings.c reads
 * VirtualBox's .vbox, vmx-settings.c VMware's .vmx, ovf-settings.c an OVF
 * appliance's descriptor; vm-settings.c picks the reader); vm-chain.c
 * finds the files of each attached disk's current state (vm-locate.c, of
 * one VirtualBox disk given alone); vm-plan.c turns both into a VmPlan
 * (one flattened qcow2 per disk, or a chain of overlays); domain-xml.c
 * writes the plan as a libvirt domain. Nothing
 * here defines, starts or writes anything: callers (vdisk import-vm,
 * vdiskctl) act on the plan. Errors are in VD_ERROR and name the settings
 * file.
 */
#pragma once

#include "vdisk.h"

G_BEGIN_DECLS

typedef enum {
    VM_FIRMWARE_BIOS,
    VM_FIRMWARE_EFI,
} VmFirmware;

/* The bus a disk sits on, as libvirt names them. */
typedef enum {
    VM_BUS_IDE,
    VM_BUS_SATA,
    VM_BUS_SCSI,
    VM_BUS_NVME,
    VM_BUS_USB,
    VM_BUS_FLOPPY,
    VM_BUS_VIRTIO,
} VmBus;

typedef enum {
    VM_DEVICE_DISK,
    VM_DEVICE_DVD,
    VM_DEVICE_FLOPPY,
} VmDeviceType;

/* One medium of the media registry; differencing images are children of
 * the image they were made on. */
typedef struct VmMedium VmMedium;
struct VmMedium {
    char *uuid;     /* lower case, without braces */
    char *location; /* as the settings file has it */
    char *format;   /* "VDI", "VMDK", ... */
    char *type;     /* "Normal", "Immutable", ...; NULL for a differencing child */
    VmDeviceType device;
    gboolean encrypted;  /* VirtualBox's own disk encryption (CRYPT/ properties) */
    VmMedium *parent;    /* borrowed; NULL for a base image */
    GPtrArray *children; /* of VmMedium, owned */
};

typedef struct {
    VmDeviceType type;
    guint port;
    guint device;
    char *medium_uuid; /* NULL: an empty drive, or a host drive */
} VmAttachment;

typedef struct {
    char *name;
    char *type; /* as in the file: "AHCI", "PIIX4", "LsiLogic", ... */
    VmBus bus;
    char *scsi_model;       /* libvirt's model for a SCSI controller, or NULL */
    GPtrArray *attachments; /* of VmAttachment */
} VmController;

typedef struct {
    guint slot;
    char *mac;        /* "08:00:27:12:34:56", or NULL when none is set */
    char *model;      /* the adapter type in the file: "82540EM", "virtio", ... */
    char *attachment; /* "NAT", "Bridged", "HostOnly", "Internal", "NATNetwork", ... or NULL */
    char *network;    /* the bridge or network name, or NULL */
} VmNic;

typedef struct {
    guint64 memory_mib;
    guint cpus;
    VmFirmware firmware;
    char *chipset;          /* "PIIX3", "ICH9" */
    GPtrArray *controllers; /* of VmController */
    GPtrArray *nics;        /* of VmNic, enabled adapters only, by slot */
} VmHardware;

typedef struct VmSnapshot VmSnapshot;
struct VmSnapshot {
    char *uuid;
    char *name;
    VmHardware *hardware;
    GPtrArray *children; /* of VmSnapshot */
};

typedef struct {
    char *settings_path;    /* the file read */
    char *folder;           /* its folder: relative locations start here */
    char *product;          /* whose settings: "VirtualBox", "VMware", "OVF" */
    char *appliance;        /* an .ova whose members the media are, or NULL */
    char *settings_version; /* "1.16-linux", "vmx hardware 19" */
    char *name;
    char *uuid; /* lower case, without braces */
    char *os_type;
    char *snapshot_folder;     /* absolute */
    char *current_snapshot;    /* uuid, or NULL */
    char *state_file;          /* a saved (suspended) VM's memory file, or NULL */
    VmHardware *hardware;      /* the current state */
    VmSnapshot *snapshots;     /* the root of the snapshot tree, or NULL */
    GPtrArray *media;          /* of VmMedium: the registry's base media */
    GHashTable *media_by_uuid; /* uuid -> VmMedium (borrowed) */
} VmMachine;

void vm_machine_free(VmMachine *machine);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmMachine, vm_machine_free)

/* Read a VirtualBox settings file (.vbox, settings versions 1.11 to 1.20:
 * VirtualBox 4.0 to 7.1). Whatever it cannot map with certainty (an
 * unknown controller, an attachment to a medium not in the registry, a
 * version it does not know) fails with VD_ERROR_UNSUPPORTED_FORMAT or
 * VD_ERROR_CORRUPT naming the file, its line and what. */
VmMachine *vm_vbox_load(const char *path, GError **error);
/* The same from text already read; path is used for messages and as the
 * place relative locations are taken from. */
VmMachine *vm_vbox_parse(const char *path, const char *text, gssize len, GError **error);
/* Read a VMware VM's .vmx (key = "value" lines): name, guestOS, memory,
 * vCPUs, firmware, the IDE, SATA, SCSI and NVMe disks with the vmdk each
 * names (its current state: a snapshot's delta, whose parents the vmdk
 * itself names), the network adapters. Each disk is registered under a
 * UUID made from its file name. What it cannot map with certainty is
 * refused as vm_vbox_load refuses it. */
VmMachine *vm_vmx_load(const char *path, GError **error);
VmMachine *vm_vmx_parse(const char *path, const char *text, gssize len, GError **error);

/* Read an OVF appliance: an .ovf (its disks beside it) or an .ova (its
 * disks inside): the VirtualSystem's name, memory, processors, IDE, SCSI
 * and SATA controllers with their disks, Ethernet adapters, VMware's
 * firmware setting. appliance is the .ova the descriptor came from, or
 * NULL. Refuses what it cannot map as the other readers do. */
VmMachine *vm_ovf_parse(const char *path, const char *text, gssize len, const char *appliance,
                        GError **error);
VmMachine *vm_ovf_load(const char *path, GError **error);

/* The settings file of a VM given as the file or its folder (the one
 * .vbox, .vmx or .ovf in it), or as one of its disks (a .vdi whose VM's
 * .vbox registers it, beside it or one folder up; a .vmdk beside its
 * VM's .vmx). Returns a new string. */
char *vm_settings_find(const char *path, GError **error);
/* Read a VM's settings file, VirtualBox's or VMware's by its name. */
VmMachine *vm_settings_load(const char *path, GError **error);

/* The medium registered under uuid (any case, braces or not), or NULL. */
VmMedium *vm_machine_lookup_medium(VmMachine *machine, const char *uuid);
/* Where a medium's file is: its location made absolute from the VM's
 * folder (Windows separators turned). Returns a new string. */
char *vm_machine_medium_path(VmMachine *machine, const VmMedium *medium);

const char *vm_bus_name(VmBus bus);

/* ----- chains (vm-chain.c) ----- */

typedef struct {
    char *path;   /* absolute; for an appliance's disk, the .ova */
    char *member; /* the disk's name inside the .ova, or NULL */
    char *format; /* vdisk's name: "vdi", "vmdk", ... */
    char *uuid;   /* the registry's */
    guint64 virtual_size;
    guint64 file_size;
} VmChainLink;

void vm_chain_link_free(VmChainLink *link);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmChainLink, vm_chain_link_free)

/* The files that medium uuid reads through, current state first and its
 * base last, each checked against the registry: the file exists, a VDI's
 * own image UUID is the registry's and its parent UUID is its parent's
 * (refused otherwise: "Snapshots/{..}.vdi: its header says {a}, the
 * registry {b}"). A location that does not exist is looked for by its
 * name in the VM folder and the snapshot folder, accepted only when the
 * header UUID matches. Returns a new array of VmChainLink. */
GPtrArray *vm_resolve_chain(VmMachine *machine, const char *uuid, GError **error);

/* The index vd_image_open_ova takes for the disk called member inside
 * the appliance (the order of its disk members), or -1 with
 * VD_ERROR_NOT_FOUND when it holds none of that name. */
int vm_appliance_disk_index(const char *appliance, const char *member, GError **error);

/* Open a chain from vm_resolve_chain read-only, every parent named as the
 * chain says (not searched for). Returns a new reference. */
VdImage *vm_chain_open(GPtrArray *chain, GError **error);
/* The open options that name every parent of the chain's top image
 * ("backing", "backing.backing", ...). Returns new options. */
VdOptions *vm_chain_open_options(GPtrArray *chain);

/* ----- one disk of a VM, given alone (vm-locate.c) ----- */

/* The VM whose media registry has the hard disk uuid: a .vbox in the
 * disk's folder or the folder above it. Settings that do not read are
 * passed over. Returns a new VmMachine, or NULL. */
VmMachine *vm_find_owner(const char *path, const char *uuid);
/* The settings file of the VM the VDI at path belongs to (vm_find_owner
 * by its own UUID), or NULL. */
char *vm_owner_settings(const char *path);
/* When the VDI at path belongs to a VM whose current state has moved on
 * from it (a snapshot was made on it since): the file the VM uses now, and
 * *owner that VM. NULL otherwise (also for a file that is no VDI). */
char *vm_current_state_of(const char *path, VmMachine **owner);
/* The hard disk the VM's current state attaches that is uuid or made on
 * it (its current state), or NULL when none is attached. Borrowed. */
const VmMedium *vm_machine_current_descendant(VmMachine *machine, const char *uuid);
/* The chain behind the VDI at path, its parents found through the media
 * registry of the VM it belongs to (vm_find_owner) or, without one, by
 * UUID among the .vdi files of its folder and the folder above, each
 * parent's folder searched the same way. path is the chain's first link.
 * Returns a new array of VmChainLink. */
GPtrArray *vm_chain_for_vdi(const char *path, GError **error);

/* ----- the plan (vm-plan.c) ----- */

typedef struct {
    const VmController *controller; /* borrowed from the machine */
    const VmAttachment *attachment;
    VmBus bus;         /* the target's: the controller's, or virtio */
    char *target_dev;  /* "sda", "hdb", "vda" */
    char *target_name; /* "MyVM.qcow2" */
    char *target_path; /* in the output folder */
    GPtrArray *chain;  /* of VmChainLink */
    /* With vm_plan_keep_snapshots: a qcow2 per link of chain (char*, in
     * the same order; the first is target_path), each the overlay of the
     * next; otherwise NULL. */
    GPtrArray *layer_paths;
} VmPlanDisk;

typedef struct {
    VmMachine *machine; /* owned */
    char *output_dir;
    char *file_stem; /* the VM's name made a file name: "My_VM" */
    gboolean virtio;
    gboolean keep_snapshots;
    char *domain_type;     /* "kvm" or "qemu" */
    char *machine_type;    /* "pc" or "q35" */
    const char *osinfo_id; /* or NULL when the OS type has none */
    GPtrArray *disks;      /* of VmPlanDisk */
    GPtrArray *notes;      /* char*: what the plan leaves out, and why */
    /* The libvirt network the network cards join ("default"), or NULL for
     * user-mode networking (vm_plan_user_networking). */
    char *network;
} VmPlan;

void vm_plan_free(VmPlan *plan);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmPlan, vm_plan_free)

/* Plan the import of machine (taken) into output_dir: every hard disk of
 * the current state, its chain, its target. virtio puts disks and NICs on
 * virtio. Fails when a disk cannot be placed on a libvirt bus. */
VmPlan *vm_plan_new(VmMachine *machine, const char *output_dir, gboolean virtio,
                    const char *domain_type, GError **error);
/* Keep each disk's chain as a chain of qcow2 overlays (the VM's
 * snapshots stay as backing files) instead of one flattened qcow2: names a
 * target per layer, "NAME.qcow2" for the current state on "NAME-1.qcow2"
 * (the base), "NAME-2.qcow2", ... */
void vm_plan_keep_snapshots(VmPlan *plan);
/* The network cards get user-mode networking instead of the libvirt
 * network "default" (which the connection lacks, or has not started:
 * why), and the plan's notes say so when the VM has any. */
void vm_plan_user_networking(VmPlan *plan, const char *why);
/* The plan in words, for --dry-run. Returns a new string. */
char *vm_plan_describe(const VmPlan *plan);

/* ----- libvirt (domain-xml.c, os-map.c) ----- */

/* The libvirt domain XML of the plan. Returns a new string. */
char *vm_domain_xml(const VmPlan *plan);
/* libosinfo's id for a VirtualBox OS type ("Ubuntu22_LTS_64"), or NULL. */
const char *vm_osinfo_from_vbox(const char *os_type);
/* libosinfo's id for a VMware guestOS ("ubuntu-64"), or NULL. */
const char *vm_osinfo_from_vmware(const char *guest_os);

G_END_DECLS
