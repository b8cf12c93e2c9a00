#!/usr/bin/env bash
# make-boot-appliance.sh KIND DIR: a VM that boots, for the libvirt
# suite's import-vm variants whose disks vdiskd gets in more than one file
# or inside another. Its disk's boot sector (make-boot-sector.py) writes
# CURRENT to the first serial port, over and over. KIND is
#   ova        DIR/vdisk-ova.ova: an OVF appliance (the .ovf first, as OVF
#              wants, then its disk as a streamOptimized vmdk) of a VM with
#              one IDE disk and no network card
#   split-vmx  DIR/vm/vdisk-split.vmx: a VMware VM whose disk is a VMware
#              snapshot's delta (parentFileNameHint) on its base, both
#              twoGbMaxExtentSparse vmdks of 3 GiB (a descriptor and two
#              extents each) made by qemu-img: the base's boot sector writes
#              BASE and data lies in its second extent, the delta's boot
#              sector writes CURRENT
# DIR/current.qcow2 is the disk's current state made by qemu-img, for
# comparing. VDISK is the build's vdisk.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KIND=$1
cd "$2"
PY=${PY:-/usr/bin/python3}
VDISK=${VDISK:?set VDISK to the vdisk of the build}

case $KIND in
ova)
    "$PY" "$HERE/make-boot-sector.py" current.mbr CURRENT
    qemu-img create -q -f raw disk.raw 4M
    dd if=current.mbr of=disk.raw conv=notrunc status=none
    qemu-img convert -q -f raw -O qcow2 disk.raw current.qcow2
    mkdir app
    "$VDISK" convert -q -f raw -O vmdk -o subformat=streamOptimized disk.raw app/vdisk-ova-disk1.vmdk
    cat >app/vdisk-ova.ovf <<'XML'
<?xml version="1.0"?>
<Envelope ovf:version="1.0" xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References>
    <File ovf:id="file1" ovf:href="vdisk-ova-disk1.vmdk"/>
  </References>
  <DiskSection>
    <Info>The virtual disks</Info>
    <Disk ovf:capacity="4194304" ovf:diskId="vmdisk1" ovf:fileRef="file1"
        ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="vdisk-ova">
    <Info>A virtual machine</Info>
    <Name>vdisk-ova</Name>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <Item>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>64</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:HostResource>/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
XML
    tar -cf vdisk-ova.ova --format=ustar -C app vdisk-ova.ovf vdisk-ova-disk1.vmdk
    rm -r app
    ;;
split-vmx)
    "$PY" "$HERE/make-boot-sector.py" base.mbr BASE
    "$PY" "$HERE/make-boot-sector.py" current.mbr CURRENT
    mkdir vm
    qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse vm/vdisk-split.vmdk 3G
    qemu-io -f vmdk -c "write -s base.mbr 0 512" -c "write -P 83 2047M 2M" \
        vm/vdisk-split.vmdk >/dev/null
    qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse -b vdisk-split.vmdk -F vmdk \
        vm/vdisk-split-000001.vmdk
    qemu-io -f vmdk -c "write -s current.mbr 0 512" -c "write -P 84 2048M 64k" \
        vm/vdisk-split-000001.vmdk >/dev/null
    qemu-img convert -q -f vmdk -O qcow2 vm/vdisk-split-000001.vmdk current.qcow2
    cat >vm/vdisk-split.vmx <<'EOF'
.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
displayName = "vdisk-split"
guestOS = "other"
memsize = "64"
numvcpus = "1"
ide0:0.present = "TRUE"
ide0:0.fileName = "vdisk-split-000001.vmdk"
EOF
    ;;
*)
    echo "make-boot-appliance.sh: no kind $KIND (ova, split-vmx)" >&2
    exit 2
    ;;
esac
