#!/usr/bin/env bash
# make-boot-variant.sh KIND DIR: a VM folder DIR/vm that boots, for the
# libvirt suite's import-vm variants. As in make-boot-vm.sh, the VM's base
# disk writes BASE to the first serial port, over and over, and its current
# state (a snapshot's delta on the base) writes CURRENT instead. KIND is
#   efi        a VirtualBox VM with EFI firmware (ICH9 chipset, SATA): its
#              disk is GPT with an EFI System partition whose FAT holds
#              \EFI\BOOT\BOOTX64.EFI (make-efi-app.py); the snapshot
#              changes that file
#   two-disks  a VirtualBox VM with two SATA disks, each a base and its
#              snapshot's differencing image: port 0 boots, port 2 holds
#              data (port 1 is an empty DVD drive)
#   vmx        a VMware VM (vdisk-vmx.vmx) whose disk is a monolithicSparse
#              vmdk and a VMware snapshot's delta on it (parentFileNameHint),
#              both made by qemu-img
# DIR/current.qcow2 (and DIR/current2.qcow2, the second disk) is the
# current state made by qemu-img, for comparing. VDISK is the build's vdisk.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KIND=$1
cd "$2"
PY=${PY:-/usr/bin/python3}
VDISK=${VDISK:?set VDISK to the vdisk of the build}
ESP_TYPE=C12A7328-F81F-11D2-BA4B-00A0C93EC93B # GPT: EFI System partition

# delta BASE CURRENT OUT: OUT, a qcow2 over the raw BASE, holding only the
# 4 KiB blocks in which the raw CURRENT differs from BASE, as a snapshot
# holds only what changed since.
delta() {
    qemu-img create -q -f qcow2 -b "$PWD/$1" -F raw "$3"
    "$PY" - "$1" "$2" <<'PY' | while read -r off; do
import sys
a, b = open(sys.argv[1], "rb"), open(sys.argv[2], "rb")
off = 0
while True:
    x, y = a.read(4096), b.read(4096)
    if not x and not y:
        break
    if x != y:
        print(off)
    off += 4096
PY
        dd if="$2" of=block bs=4096 skip=$((off / 4096)) count=1 status=none
        qemu-io -f qcow2 -c "write -s block $off 4096" "$3" >/dev/null
    done
    rm -f block
}

# bios_disk FILE TEXT: a 4 MiB disk whose boot sector writes TEXT.
bios_disk() {
    "$PY" "$HERE/make-boot-sector.py" "$1.mbr" "$2"
    qemu-img create -q -f raw "$1" 4M
    dd if="$1.mbr" of="$1" conv=notrunc status=none
}

# efi_disk FILE TEXT: an 8 MiB GPT disk, one EFI System partition from
# 1 MiB whose FAT holds an application writing TEXT as the removable-media
# boot file, \EFI\BOOT\BOOTX64.EFI (no mount: mtools writes at the
# partition's offset).
efi_disk() {
    truncate -s 8M "$1"
    printf 'label: gpt\nstart=2048, size=12288, type=%s, name="EFI System"\n' "$ESP_TYPE" |
        sfdisk -q "$1"
    mformat -i "$1@@1M" -T 12288 -h 64 -s 32 -N 5664736b -v ESP ::
    mmd -i "$1@@1M" ::/EFI ::/EFI/BOOT
    "$PY" "$HERE/make-efi-app.py" "$1.efi" "$2"
    mcopy -i "$1@@1M" "$1.efi" ::/EFI/BOOT/BOOTX64.EFI
}

# efi_current BASE OUT TEXT: OUT, BASE with BOOTX64.EFI rewritten to TEXT.
efi_current() {
    cp "$1" "$2"
    "$PY" "$HERE/make-efi-app.py" "$2.efi" "$3"
    mcopy -o -i "$2@@1M" "$2.efi" ::/EFI/BOOT/BOOTX64.EFI
}

vdi_uuid() {
    "$VDISK" info --output=json "$1" |
        "$PY" -c 'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"]["image-uuid"])'
}

# snapshot_vdis BASE_RAW CURRENT_QCOW2 NAME: vm/NAME.vdi from the base and
# its differencing child in vm/Snapshots/{uuid}.vdi, as VirtualBox lays
# out a disk a snapshot has changed; sets BASE_UUID and CHILD_UUID.
snapshot_vdis() {
    mkdir -p vm/Snapshots
    "$VDISK" convert -q -f raw -O vdi "$1" "vm/$3.vdi"
    "$VDISK" convert -q -O vdi -B "$3.vdi" -F vdi "$2" "vm/$3-child.vdi"
    BASE_UUID=$(vdi_uuid "vm/$3.vdi")
    CHILD_UUID=$(vdi_uuid "vm/$3-child.vdi")
    mv "vm/$3-child.vdi" "vm/Snapshots/{$CHILD_UUID}.vdi"
}

registry_entry() { # NAME: the last snapshot_vdis' base and child, registered
    cat <<XML
        <HardDisk uuid="{$BASE_UUID}" location="$1.vdi" format="VDI" type="Normal">
          <HardDisk uuid="{$CHILD_UUID}" location="Snapshots/{$CHILD_UUID}.vdi" format="VDI"/>
        </HardDisk>
XML
}

attached() { # PORT UUID
    printf '            <AttachedDevice type="HardDisk" hotpluggable="false" port="%s" device="0"><Image uuid="{%s}"/></AttachedDevice>\n' "$1" "$2"
}

# write_vbox NAME HARDWARE REGISTRY SNAPSHOT_DISKS CURRENT_DISKS: the
# VirtualBox 7 settings of a VM with one snapshot, its disks on one SATA
# controller (AHCI).
write_vbox() {
    cat >"vm/$1.vbox" <<XML
<?xml version="1.0"?>
<VirtualBox xmlns="http://www.virtualbox.org/" version="1.19-linux">
  <Machine uuid="{7e4d2a10-5b3c-4d6e-8f70-$(printf %s "$1" | sha256sum | cut -c1-12)}" name="$1" OSType="Other_64"
           currentSnapshot="{2b1e0c3d-4a59-4687-9a5b-6c7d8e9f0a1b}" snapshotFolder="Snapshots">
    <MediaRegistry>
      <HardDisks>
$3
      </HardDisks>
    </MediaRegistry>
    <Snapshot uuid="{2b1e0c3d-4a59-4687-9a5b-6c7d8e9f0a1b}" name="first" timeStamp="2024-04-30T09:00:00Z">
      <Hardware>
        <Memory RAMSize="128"/>
        <StorageControllers>
          <StorageController name="SATA" type="AHCI" PortCount="4" Bootable="true">
$4
          </StorageController>
        </StorageControllers>
      </Hardware>
    </Snapshot>
    <Hardware>
      <CPU count="1"/>
      <Memory RAMSize="128"/>
$2
      <StorageControllers>
        <StorageController name="SATA" type="AHCI" PortCount="4" useHostIOCache="false" Bootable="true">
$5
        </StorageController>
      </StorageControllers>
    </Hardware>
  </Machine>
</VirtualBox>
XML
}

case $KIND in
efi)
    efi_disk base.raw BASE
    efi_current base.raw current.raw CURRENT
    delta base.raw current.raw current.qcow2
    snapshot_vdis base.raw current.qcow2 vdisk-efi
    write_vbox vdisk-efi '      <Firmware type="EFI"/>
      <Chipset type="ICH9"/>' "$(registry_entry vdisk-efi)" \
        "$(attached 0 "$BASE_UUID")" "$(attached 0 "$CHILD_UUID")"
    ;;
two-disks)
    bios_disk base.raw BASE
    bios_disk current.raw CURRENT
    delta base.raw current.raw current.qcow2
    snapshot_vdis base.raw current.qcow2 vdisk-two
    BASE1=$BASE_UUID CHILD1=$CHILD_UUID
    # The data disk: a pattern in its base, the snapshot changing some
    # and zeroing some.
    qemu-img create -q -f raw base2.raw 6M
    qemu-io -f raw -c "write -P 0x5a 0 2M" -c "write -P 0x3c 5M 64k" base2.raw >/dev/null
    qemu-img create -q -f qcow2 -b "$PWD/base2.raw" -F raw current2.qcow2
    qemu-io -f qcow2 -c "write -P 0x71 1M 192k" -c "write -z 5M 64k" -c "write -P 0x17 3M 4k" \
        current2.qcow2 >/dev/null
    snapshot_vdis base2.raw current2.qcow2 vdisk-two-data
    # as VirtualBox's new VM wizard leaves it: the DVD drive on port 1,
    # empty, so the data disk is on port 2
    DVD='            <AttachedDevice passthrough="false" type="DVD" hotpluggable="false" port="1" device="0"/>'
    write_vbox vdisk-two '      <Chipset type="ICH9"/>' \
        "$(registry_entry vdisk-two-data)
$(BASE_UUID=$BASE1 CHILD_UUID=$CHILD1 registry_entry vdisk-two)" \
        "$(attached 0 "$BASE1")
$(attached 2 "$BASE_UUID")" "$(attached 0 "$CHILD1")
$DVD
$(attached 2 "$CHILD_UUID")"
    ;;
vmx)
    bios_disk base.raw BASE
    bios_disk current.raw CURRENT
    delta base.raw current.raw current.qcow2
    mkdir vm
    # VMware's own layout: the base disk, and the snapshot's delta
    # NAME-000001.vmdk naming it as its parent.
    qemu-img convert -f raw -O vmdk base.raw vm/vdisk-vmx.vmdk
    (cd vm && qemu-img create -q -f vmdk -b vdisk-vmx.vmdk -F vmdk vdisk-vmx-000001.vmdk)
    qemu-io -f vmdk -c "write -s current.raw.mbr 0 512" vm/vdisk-vmx-000001.vmdk >/dev/null
    cat >vm/vdisk-vmx.vmx <<'VMX'
.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
displayName = "vdisk-vmx"
guestOS = "other-64"
memsize = "64"
numvcpus = "1"
uuid.bios = "56 4d 7a 1c 2b 3d 4e 5f-60 71 82 93 a4 b5 c6 d7"
nvram = "vdisk-vmx.nvram"
scsi0.present = "TRUE"
scsi0.virtualDev = "lsilogic"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "vdisk-vmx-000001.vmdk"
ide1:0.present = "TRUE"
ide1:0.deviceType = "cdrom-raw"
ide1:0.fileName = "auto detect"
ide1:0.startConnected = "FALSE"
ethernet0.present = "TRUE"
ethernet0.connectionType = "nat"
ethernet0.virtualDev = "e1000"
ethernet0.addressType = "generated"
ethernet0.generatedAddress = "00:0c:29:b5:c6:d7"
ethernet0.generatedAddressOffset = "0"
VMX
    ;;
*)
    echo "make-boot-variant.sh: unknown kind '$KIND'" >&2
    exit 2
    ;;
esac
