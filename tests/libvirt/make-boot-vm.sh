#!/usr/bin/env bash
# make-boot-vm.sh DIR: a VirtualBox VM folder DIR/vm that boots, for the
# libvirt suite's import-vm case. Its base disk's boot sector writes BASE
# to the first serial port, over and over with a pause between; a snapshot
# (Snapshots/{uuid}.vdi, a differencing VDI on the base one folder up)
# changes it to write CURRENT. DIR/current.qcow2 is that current state
# made by qemu-img, for comparing. VDISK is the build's vdisk.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$1"
PY=${PY:-/usr/bin/python3}
VDISK=${VDISK:?set VDISK to the vdisk of the build}

boot_sector() { # FILE TEXT
    "$PY" "$HERE/make-boot-sector.py" "$1" "$2"
}
vdi_uuid() {
    "$VDISK" info --output=json "$1" |
        "$PY" -c 'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"]["image-uuid"])'
}

mkdir -p vm/Snapshots
boot_sector base.mbr BASE
boot_sector current.mbr CURRENT
qemu-img create -q -f raw base.raw 4M
dd if=base.mbr of=base.raw conv=notrunc status=none
"$VDISK" convert -q -f raw -O vdi base.raw vm/base.vdi
qemu-img create -q -f qcow2 -b "$PWD/base.raw" -F raw current.qcow2
qemu-io -f qcow2 -c "write -s current.mbr 0 512" current.qcow2 >/dev/null
"$VDISK" convert -q -O vdi -B base.vdi -F vdi current.qcow2 vm/child.vdi
BASE=$(vdi_uuid vm/base.vdi)
CHILD=$(vdi_uuid vm/child.vdi)
mv vm/child.vdi "vm/Snapshots/{$CHILD}.vdi"
cat >vm/vdisk-boot.vbox <<XML
<?xml version="1.0"?>
<VirtualBox xmlns="http://www.virtualbox.org/" version="1.16-linux">
  <Machine uuid="{6d3c1f7e-3d2b-4c55-9a4e-2f1d0c9b8a72}" name="vdisk-boot" OSType="Other"
           currentSnapshot="{0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0fa}" snapshotFolder="Snapshots">
    <MediaRegistry>
      <HardDisks>
        <HardDisk uuid="{$BASE}" location="base.vdi" format="VDI" type="Normal">
          <HardDisk uuid="{$CHILD}" location="Snapshots/{$CHILD}.vdi" format="VDI"/>
        </HardDisk>
      </HardDisks>
    </MediaRegistry>
    <Snapshot uuid="{0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0fa}" name="first" timeStamp="2024-04-30T09:00:00Z">
      <Hardware>
        <Memory RAMSize="64"/>
        <StorageControllers>
          <StorageController name="IDE" type="PIIX4" PortCount="2">
            <AttachedDevice type="HardDisk" port="0" device="0"><Image uuid="{$BASE}"/></AttachedDevice>
          </StorageController>
        </StorageControllers>
      </Hardware>
    </Snapshot>
    <Hardware>
      <CPU count="1"/>
      <Memory RAMSize="64"/>
      <Chipset type="PIIX3"/>
      <StorageControllers>
        <StorageController name="IDE" type="PIIX4" PortCount="2">
          <AttachedDevice type="HardDisk" port="0" device="0"><Image uuid="{$CHILD}"/></AttachedDevice>
        </StorageController>
      </StorageControllers>
    </Hardware>
  </Machine>
</VirtualBox>
XML
