#!/usr/bin/env bash
# The fuzz suite's regression run of the VM settings readers: the .vbox
# files of the unit tests, a .vbox, a .vmx and an .ovf written here, and
# deterministic mutants of each (bytes flipped, attributes emptied or
# swapped for extremes, elements nested deep or cut short), each fed to
# fuzz-vbox.
# Every input must be answered without a crash, a sanitizer report or a
# hang. As with run.sh, vbox.sh --corpus DIR writes the seeds there for a
# libFuzzer run.
set -uo pipefail
FUZZ_VBOX=${FUZZ_VBOX:?path of the fuzz-vbox program}
PY=/usr/bin/python3
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d /tmp/vdisk-fuzz-vbox.XXXXXX)
trap 'rm -rf "$T"' EXIT
corpus_out=
[[ ${1:-} == --corpus ]] && corpus_out=$2

mkdir -p "$T/seeds" "$T/mutants"
cp "$HERE"/../unit/data/*.vbox "$T/seeds/"
"$PY" - "$T/seeds" "$T/mutants" <<'PY'
import os, random, re, sys
seeds, out = sys.argv[1], sys.argv[2]
# A settings file of the newer layout (controllers inside <Hardware>,
# firmware, a snapshot tree, adapters of each kind) to mutate as well.
small = '''<?xml version="1.0"?>
<VirtualBox xmlns="http://www.virtualbox.org/" version="1.19-linux">
  <Machine uuid="{11111111-2222-3333-4444-555555555555}" name="m" OSType="Ubuntu22_LTS_64" currentSnapshot="{21111111-2222-3333-4444-555555555555}">
    <MediaRegistry><HardDisks>
      <HardDisk uuid="{31111111-2222-3333-4444-555555555555}" location="a.vdi" format="VDI" type="Normal">
        <HardDisk uuid="{41111111-2222-3333-4444-555555555555}" location="Snapshots/b.vdi" format="VDI"/>
      </HardDisk></HardDisks>
      <DVDImages><Image uuid="{51111111-2222-3333-4444-555555555555}" location="x.iso"/></DVDImages>
    </MediaRegistry>
    <Snapshot uuid="{21111111-2222-3333-4444-555555555555}" name="s"><Hardware><Memory RAMSize="64"/>
      <StorageControllers><StorageController name="S" type="AHCI" PortCount="1">
        <AttachedDevice type="HardDisk" port="0" device="0"><Image uuid="{31111111-2222-3333-4444-555555555555}"/></AttachedDevice>
      </StorageController></StorageControllers></Hardware>
      <Snapshots><Snapshot uuid="{61111111-2222-3333-4444-555555555555}" name="t"><Hardware><Memory RAMSize="1"/></Hardware></Snapshot></Snapshots>
    </Snapshot>
    <Hardware><CPU count="2"/><Memory RAMSize="512"/><Firmware type="EFI"/><Chipset type="ICH9"/>
      <Network>
        <Adapter slot="0" enabled="true" MACAddress="080027000001" type="82540EM"><NAT/></Adapter>
        <Adapter slot="1" enabled="true" MACAddress="080027000002"><BridgedInterface name="br0"/></Adapter>
        <Adapter slot="2" enabled="true"><GenericInterface driver="x"/></Adapter>
      </Network>
      <StorageControllers>
        <StorageController name="S" type="AHCI" PortCount="2">
          <AttachedDevice type="HardDisk" port="0" device="0"><Image uuid="{41111111-2222-3333-4444-555555555555}"/></AttachedDevice>
          <AttachedDevice type="DVD" port="1" device="0"><Image uuid="{51111111-2222-3333-4444-555555555555}"/></AttachedDevice>
        </StorageController>
        <StorageController name="I" type="PIIX4" PortCount="2"/>
      </StorageControllers>
    </Hardware>
  </Machine>
</VirtualBox>
'''
open(os.path.join(seeds, "small.vbox"), "w").write(small)
open(os.path.join(seeds, "small.ovf"), "w").write(
    '<?xml version="1.0"?><Envelope ovf:version="1.0" xmlns="http://schemas.dmtf.org/ovf/envelope/1"'
    ' xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="r" xmlns:vmw="v">'
    '<References><File ovf:id="f1" ovf:href="d.vmdk"/></References>'
    '<DiskSection><Disk ovf:diskId="d1" ovf:fileRef="f1" ovf:capacity="1048576"/></DiskSection>'
    '<VirtualSystem ovf:id="s"><Name>n</Name><OperatingSystemSection vmw:osType="ubuntu64Guest"/>'
    '<VirtualHardwareSection>'
    '<Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>'
    '<Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>64</rasd:VirtualQuantity></Item>'
    '<Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>5</rasd:ResourceType></Item>'
    '<Item><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>'
    '<Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/d1</rasd:HostResource><rasd:InstanceID>5</rasd:InstanceID><rasd:Parent>4</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>'
    '<Item><rasd:AddressOnParent>1</rasd:AddressOnParent><rasd:InstanceID>6</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>15</rasd:ResourceType></Item>'
    '<Item><rasd:Address>00:0c:29:00:00:02</rasd:Address><rasd:InstanceID>7</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>'
    '<vmw:Config vmw:key="firmware" vmw:value="efi"/>'
    '</VirtualHardwareSection></VirtualSystem></Envelope>')
open(os.path.join(seeds, "small.vmx"), "w").write(
    '.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "19"\n'
    'displayName = "a |22b|22"\nmemsize = "512"\nnumvcpus = "2"\nfirmware = "efi"\n'
    'uuid.bios = "56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc"\n'
    'scsi0.present = "TRUE"\nscsi0.virtualDev = "lsilogic"\nscsi0:0.present = "TRUE"\n'
    'scsi0:0.fileName = "a-000001.vmdk"\nide1:0.present = "TRUE"\n'
    'ide1:0.deviceType = "cdrom-image"\nethernet0.present = "TRUE"\n'
    'ethernet0.generatedAddress = "00:0c:29:00:00:01"\n')
# Differencing images 300 deep: more than the reader's nesting bound.
nest = ''.join('<HardDisk uuid="{%08x-2222-3333-4444-555555555555}" location="x%d" format="VDI" type="Normal">' % (i + 1, i) for i in range(300))
open(os.path.join(seeds, "deep.vbox"), "w").write(
    '<VirtualBox version="1.16-linux"><Machine uuid="{11111111-2222-3333-4444-555555555555}" name="d">'
    '<MediaRegistry><HardDisks>' + nest + '</HardDisk>' * 300 + '</HardDisks></MediaRegistry>'
    '<Hardware><Memory RAMSize="1"/></Hardware></Machine></VirtualBox>')
extremes = ["", "-1", "0", "4294967296", "18446744073709551616", "{}", "{zz}", "\u00e9", "&amp;", "1.999-x", "EFI99"]
n = 0
for name in sorted(os.listdir(seeds)):
    text = open(os.path.join(seeds, name), encoding="latin-1").read()
    r = random.Random(name)
    attrs = list(re.finditer(r'="([^"]*)"', text))
    for i in range(40):
        t = text
        kind = i % 4
        if kind == 0 and attrs:
            m = r.choice(attrs)
            t = t[:m.start(1)] + r.choice(extremes) + t[m.end(1):]
        elif kind == 1:
            b = bytearray(t.encode("latin-1"))
            for _ in range(1 + i // 4):
                b[r.randrange(len(b))] = r.randrange(256)
            t = b.decode("latin-1")
        elif kind == 2:
            t = t[: r.randrange(len(t))]
        else:
            tags = list(re.finditer(r"<[A-Za-z][^>]*>", t))
            if tags:
                m = r.choice(tags)
                t = t[:m.start()] + m.group(0) * 2 + t[m.end():]
        open(os.path.join(out, "%s.%02d" % (name, i)), "w", encoding="latin-1").write(t)
        n += 1
print(n, "mutants")
PY
if [[ -n $corpus_out ]]; then
    mkdir -p "$corpus_out" && cp "$T"/seeds/* "$corpus_out"/ && echo "seeds written to $corpus_out"
    exit 0
fi
failed=0 count=0
for f in "$T"/seeds/* "$T"/mutants/*; do
    count=$((count + 1))
    rc=0
    timeout -k 5 30 "$FUZZ_VBOX" "$f" >"$T/out" 2>&1 || rc=$?
    if ((rc != 0)) || grep -qE 'AddressSanitizer|runtime error:|CRITICAL' "$T/out"; then
        echo "FAIL (exit $rc): $(basename "$f")"
        head -5 "$T/out"
        failed=$((failed + 1))
    fi
done
echo "$count inputs, $failed failed"
((failed == 0))
