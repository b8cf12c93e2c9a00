#!/usr/bin/env bash
# vdi, vmdk, qcow and cow against the QEMU oracle: what qemu-img writes vdisk
# reads byte for byte; what vdisk writes qemu-img checks and compares clean;
# backing chains of VirtualBox and VMware; the convert matrix; the real-world
# fixtures; damaged images of every format fail cleanly.
source "$(dirname "$0")/lib.sh"
need_programs

FIXTURES=${VDISK_FIXTURES:-$REPO/../shared/fixtures}

# Sizes that are not a multiple of any cluster, grain or block; an empty
# image; data in the very last sector.
ODD=68161024 # 65 MiB + 3.5 KiB
pattern_raw "$T/base.raw" 64M
cp "$T/base.raw" "$T/odd.raw"
truncate -s $ODD "$T/odd.raw"
qio raw "$T/odd.raw" "write -P 91 $((ODD - 3584)) 3584" "write -P 92 $((ODD - 512)) 512"
qemu-img create -q -f raw "$T/empty.raw" 0
export ODD

# name|format|create options|qemu-img can check it
VARIANTS=(
    "vdi-dynamic|vdi||yes" "vdi-static|vdi|static=on|yes"
    "vmdk-monolithicSparse|vmdk|subformat=monolithicSparse|yes"
    "vmdk-monolithicFlat|vmdk|subformat=monolithicFlat|yes"
    "vmdk-twoGbMaxExtentSparse|vmdk|subformat=twoGbMaxExtentSparse|yes"
    "vmdk-twoGbMaxExtentFlat|vmdk|subformat=twoGbMaxExtentFlat|yes"
    "vmdk-streamOptimized|vmdk|subformat=streamOptimized|yes"
    "vmdk-zeroed-grain|vmdk|zeroed_grain=on|yes"
    "qcow|qcow||no"
)

# qemu-img itself cannot make or open empty vmdk and qcow images.
qemu_handles_empty() { [[ $1 != vmdk && $1 != qcow ]]; }
export -f qemu_handles_empty

empty_round_trip() { # where qemu-img cannot, vdisk alone: written, read back, size 0
    local fmt=$1 opts=$2
    vd convert -f raw -O "$fmt" ${opts:+-o "$opts"} "$T/empty.raw" "img.$fmt"
    vd info --output=json "img.$fmt" >info.json
    [[ $(json info.json 'd["virtual-size"]') == 0 ]]
    vd convert -f "$fmt" -O raw "img.$fmt" back.raw
    [[ $(stat -c %s back.raw) == 0 ]]
}

read_variant() { # qemu-img writes, vdisk reads; src is odd.raw or empty.raw
    local fmt=$1 opts=$2 src=$3
    qemu-img convert -f raw -O "$fmt" ${opts:+-o "$opts"} "$T/$src" "img.$fmt"
    vd convert -f "$fmt" -O raw "img.$fmt" back.raw
    cmp "$T/$src" back.raw
    vd info --output=json "img.$fmt" >info.json
    [[ $(json info.json 'd["format"]') == "$fmt" ]]
    [[ $(json info.json 'd["virtual-size"]') == $(qinfo "img.$fmt" virtual-size) ]]
}

write_variant() { # vdisk writes, qemu-img checks and compares
    local fmt=$1 opts=$2 check=$3 src=$4
    vd convert -f raw -O "$fmt" ${opts:+-o "$opts"} "$T/$src" "img.$fmt"
    if [[ $check == yes ]]; then qcheck "img.$fmt" "$fmt"; fi
    qemu-img compare -q -f raw -F "$fmt" "$T/$src" "img.$fmt"
}

create_variant() { # vdisk create, then qemu-io writes, both read it alike
    local fmt=$1 opts=$2 check=$3
    [[ $opts == *streamOptimized* ]] && return 0 # written once, front to back
    vd create -q -f "$fmt" ${opts:+-o "$opts"} "img.$fmt" 5M
    qio "$fmt" "img.$fmt" "write -P 33 1M 70k" "write -P 34 $((5 * 1048576 - 512)) 512"
    if [[ $check == yes ]]; then qcheck "img.$fmt" "$fmt"; fi
    qemu-img convert -f "$fmt" -O raw "img.$fmt" expect.raw
    vd convert -f "$fmt" -O raw "img.$fmt" got.raw
    cmp expect.raw got.raw
}

for v in "${VARIANTS[@]}"; do
    IFS='|' read -r name fmt opts check <<<"$v"
    case_run "qemu-img writes, vdisk reads [$name]" read_variant "$fmt" "$opts" odd.raw
    case_run "vdisk writes [$name]" write_variant "$fmt" "$opts" "$check" odd.raw
    if qemu_handles_empty "$fmt"; then
        case_run "qemu-img writes, vdisk reads, empty [$name]" read_variant "$fmt" "$opts" empty.raw
        case_run "vdisk writes, empty [$name]" write_variant "$fmt" "$opts" "$check" empty.raw
    else
        case_run "empty image round trip [$name]" empty_round_trip "$fmt" "$opts"
    fi
    case_run "vdisk creates, qemu-io writes [$name]" create_variant "$fmt" "$opts" "$check"
done

compressed_writes() { # convert -c where the format can store compressed data
    vd convert -c -f raw -O qcow "$T/odd.raw" c.qcow
    qemu-img compare -q -f raw -F qcow "$T/odd.raw" c.qcow
    vd convert -c -f raw -O vmdk -o subformat=streamOptimized "$T/odd.raw" c.vmdk
    qcheck c.vmdk vmdk
    qemu-img compare -q -f raw -F vmdk "$T/odd.raw" c.vmdk
    (($(stat -c %s c.qcow) < $(allocated "$T/odd.raw")))
}
case_run "compressed qcow and streamOptimized vmdk" compressed_writes

incompressible_stream() { # grains that deflate makes larger still go into a stream
    # Random.Random(59)'s first 64 KiB grow past zlib's compressBound() when
    # deflated with memLevel 9: a case that once failed the stream writer.
    "$PY" -c 'import random,sys; sys.stdout.buffer.write(random.Random(59).randbytes(8 << 20))' >rand.raw
    vd convert -f raw -O vmdk -o subformat=streamOptimized rand.raw r.vmdk
    qcheck r.vmdk vmdk
    qemu-img compare -q -f raw -F vmdk rand.raw r.vmdk
    vd convert -c -f raw -O qcow2 rand.raw r.qcow2
    qemu-img compare -q -f raw -F qcow2 rand.raw r.qcow2
}
case_run "random data into streamOptimized vmdk and compressed qcow2" incompressible_stream

matrix() { # every readable format to every writable one, content kept
    local formats=(raw qcow2 qcow vdi vmdk cow) a b
    for a in "${formats[@]}"; do vd convert -q -f raw -O "$a" "$T/odd.raw" "m.$a"; done
    for a in "${formats[@]}"; do
        for b in "${formats[@]}"; do
            vd convert -q -f "$a" -O "$b" "m.$a" "m.$a.$b"
            vd convert -q -f "$b" -O raw "m.$a.$b" back.raw
            cmp "$T/odd.raw" back.raw || { echo "content changed: $a -> $b"; return 1; }
            if [[ $b != cow ]]; then qemu-img compare -q -f raw -F "$b" "$T/odd.raw" "m.$a.$b"; fi
            rm -f "m.$a.$b"* back.raw
        done
    done
}
case_run "convert matrix raw/qcow2/qcow/vdi/vmdk/cow" matrix

vdi_chain() { # differencing VDIs of depth 3, parents found by UUID
    qemu-img convert -f raw -O vdi "$T/base.raw" base.vdi
    qemu-img create -q -f qcow2 -b base.vdi -F vdi o1.qcow2
    qio qcow2 o1.qcow2 "write -P 201 3M 1M" "write -z 9M 1M"
    qemu-img create -q -f qcow2 -b o1.qcow2 -F qcow2 o2.qcow2
    qio qcow2 o2.qcow2 "write -P 202 3M 64k" "write -P 203 40M 2M"
    qemu-img create -q -f qcow2 -b o2.qcow2 -F qcow2 o3.qcow2
    qio qcow2 o3.qcow2 "write -P 204 63M 1M"
    vd convert -q -f qcow2 -O vdi -B base.vdi -F vdi o1.qcow2 d1.vdi
    vd convert -q -f qcow2 -O vdi -B d1.vdi -F vdi o2.qcow2 d2.vdi
    vd convert -q -f qcow2 -O vdi -B d2.vdi -F vdi o3.qcow2 d3.vdi
    (($(stat -c %s d3.vdi) < 4194304))
    qemu-img convert -f qcow2 -O raw o3.qcow2 expect.raw
    vd convert -q -O raw d3.vdi got.raw
    cmp expect.raw got.raw
    vd info --backing-chain d3.vdi | grep -q d1.vdi
    mkdir vbox
    mv base.vdi "vbox/{aaaa}.vdi"; mv d1.vdi "vbox/{bbbb}.vdi"
    mv d2.vdi "vbox/{cccc}.vdi"; mv d3.vdi "vbox/{dddd}.vdi"
    vd convert -q -O qcow2 "vbox/{dddd}.vdi" vm.qcow2
    qemu-img compare -q -f raw -F qcow2 expect.raw vm.qcow2
    # a child away from its parent: found again when named with --backing
    mkdir lonely
    mv "vbox/{dddd}.vdi" lonely/
    fails_cleanly vd convert -O raw "lonely/{dddd}.vdi" lost.raw
    [[ ! -e lost.raw ]]
    vd convert -q --backing "vbox/{cccc}.vdi" -O raw "lonely/{dddd}.vdi" named.raw
    cmp expect.raw named.raw
    vd info --backing "vbox/{cccc}.vdi" --backing-chain "lonely/{dddd}.vdi" | grep -q aaaa
    # naming the base or the middle snapshot instead skips a layer: refused
    for wrong in aaaa bbbb; do
        expect_exit 1 vd convert --backing "vbox/{$wrong}.vdi" -O raw "lonely/{dddd}.vdi" lost.raw
        [[ ! -e lost.raw ]]
    done
    rm "vbox/{bbbb}.vdi"
    fails_cleanly vd convert --backing "vbox/{cccc}.vdi" -O raw "lonely/{dddd}.vdi" lost.raw
    [[ ! -e lost.raw ]]
}
case_run "VirtualBox differencing chain of depth 3" vdi_chain

vdi_uuid() { # vdi_uuid FILE KEY: image-uuid or parent-uuid as vdisk info shows it
    vd info --output=json "$1" >uuid.json
    json uuid.json "d['format-specific']['data']['$2']"
}

# refused CMD...: CMD exits 1 and says why on stderr, kept in refused.err.
refused() {
    expect_exit 1 "$@" 2>refused.err
    cat refused.err >&2
    [[ -s refused.err ]]
}

vdi_wrong_parent() { # a differencing VDI opens only on the parent whose UUID it records
    qemu-img convert -f raw -O vdi "$T/base.raw" base.vdi
    qemu-img create -q -f vdi unrelated.vdi 64M
    qemu-img create -q -f qcow2 -b base.vdi -F vdi o1.qcow2
    qio qcow2 o1.qcow2 "write -P 201 3M 1M" "write -z 9M 1M"
    vd convert -q -f qcow2 -O vdi -B base.vdi -F vdi o1.qcow2 d1.vdi
    qemu-img create -q -f qcow2 -b o1.qcow2 -F qcow2 o2.qcow2
    qio qcow2 o2.qcow2 "write -P 202 3M 64k" "write -P 203 40M 2M"
    vd convert -q -f qcow2 -O vdi -B d1.vdi -F vdi o2.qcow2 d2.vdi
    qemu-img convert -f qcow2 -O raw o2.qcow2 expect.raw
    local u_base u_d1 u_other
    u_base=$(vdi_uuid base.vdi image-uuid)
    u_d1=$(vdi_uuid d1.vdi image-uuid)
    u_other=$(vdi_uuid unrelated.vdi image-uuid)
    [[ $(vdi_uuid d2.vdi parent-uuid) == "$u_d1" && $(vdi_uuid d1.vdi parent-uuid) == "$u_base" ]]
    # what info shows of a child in place: the parent it found, by UUID
    vd info --output=json d2.vdi >i.json
    [[ $(json i.json 'd["backing-filename"]') == d1.vdi ]]
    [[ $(json i.json 'd["full-backing-filename"]') == d1.vdi ]]
    [[ $(json i.json 'd["backing-filename-format"]') == vdi ]]
    vd info d2.vdi | grep -qx "backing file: d1.vdi"
    vd info d2.vdi | grep -qx "    parent uuid: $u_d1"
    vd info --output=json --backing-chain d2.vdi >chain.json
    [[ $(json chain.json '[i["filename"] for i in d]') == "['d2.vdi', 'd1.vdi', 'base.vdi']" ]]
    mkdir lonely
    mv d2.vdi lonely/
    # an unrelated parent of the same size, and the grandparent (which
    # skips the middle snapshot): refused, both files and UUIDs named,
    # no target left behind
    local wrong u
    for wrong in unrelated base; do
        [[ $wrong == base ]] && u=$u_base || u=$u_other
        refused vd convert --backing $wrong.vdi -O raw lonely/d2.vdi out.raw
        [[ ! -e out.raw ]]
        grep -q "Could not open 'lonely/d2.vdi': its parent is {$u_d1}, but .*/$wrong.vdi is {$u}" refused.err
        refused vd convert --backing $wrong.vdi -O qcow2 lonely/d2.vdi out.qcow2
        [[ ! -e out.qcow2 ]]
        refused vd info --backing $wrong.vdi lonely/d2.vdi
        expect_exit 2 vd compare --backing $wrong.vdi lonely/d2.vdi expect.raw 2>cmp.err
        grep -q "its parent is {$u_d1}" cmp.err
    done
    # a qcow2 is no VDI parent
    refused vd convert --backing o1.qcow2 -O raw lonely/d2.vdi out.raw
    grep -q "o1.qcow2 is a qcow2 image" refused.err
    [[ ! -e out.raw ]]
    # the right one: the same disk qemu-img sees through the qcow2 chain
    vd convert -q --backing d1.vdi -O raw lonely/d2.vdi out.raw
    qemu-img compare -q -f raw -F raw expect.raw out.raw
    vd convert -q --backing d1.vdi -O qcow2 lonely/d2.vdi out.qcow2
    qemu-img compare -q -f raw -F qcow2 expect.raw out.qcow2
    vd info --output=json --backing d1.vdi lonely/d2.vdi >i.json
    [[ $(json i.json 'd["backing-filename"]') == "$PWD/d1.vdi" ]]
    [[ $(json i.json 'd["format-specific"]["data"]["parent-uuid"]') == "$u_d1" ]]
}
case_run "VirtualBox differencing chain: a wrong parent is refused" vdi_wrong_parent

vdi_create_on_parent() { # vdisk create -b: the parent's UUID recorded, a wrong parent refused
    pattern_raw base.raw 8M
    vd convert -q -f raw -O vdi base.raw base.vdi
    vd create -q -f vdi -b base.vdi d1.vdi
    [[ $(vdi_uuid d1.vdi parent-uuid) == "$(vdi_uuid base.vdi image-uuid)" ]]
    [[ $(vdi_uuid d1.vdi image-uuid) != "$(vdi_uuid base.vdi image-uuid)" ]]
    # filled with vdisk convert -n: the chain reads as the source
    qemu-img create -q -f raw new.raw 8M
    qio raw new.raw "write -P 7 1M 1M"
    vd convert -q -n -f raw -O vdi new.raw d1.vdi
    vd convert -q -O raw d1.vdi out.raw
    qemu-img compare -q -f raw -F raw new.raw out.raw
    vd create -q -f vdi -b d1.vdi d2.vdi 16M # a grown snapshot is fine
    vd convert -q -O raw d2.vdi grown.raw
    cp new.raw want.raw
    truncate -s 16M want.raw # zeroes past the parent's end
    cmp want.raw grown.raw
    # not a VDI, missing, smaller than the parent: refused, nothing made
    qemu-img create -q -f qcow2 q.qcow2 8M
    refused vd create -q -f vdi -b q.qcow2 x.vdi
    grep -q "x.vdi: a differencing VDI image can only sit on a VDI parent, and q.qcow2 is qcow2" refused.err
    refused vd create -q -f vdi -b q.qcow2 -F vdi x.vdi
    refused vd create -q -f vdi -b missing.vdi x.vdi 8M
    grep -q missing.vdi refused.err
    refused vd create -q -f vdi -b base.vdi x.vdi 4M
    grep -q "smaller than its parent base.vdi" refused.err
    refused vd convert -q -f raw -O vdi -B q.qcow2 new.raw x.vdi
    [[ ! -e x.vdi ]]
}
case_run "VirtualBox differencing image made by vdisk create -b" vdi_create_on_parent

vmdk_chain() { # VMware delta disks of depth 3 on a parent
    qemu-img convert -f raw -O vmdk "$T/base.raw" base.vmdk
    qemu-img create -q -f qcow2 -b base.vmdk -F vmdk o1.qcow2
    qio qcow2 o1.qcow2 "write -P 77 10M 512k"
    qemu-img create -q -f qcow2 -b o1.qcow2 -F qcow2 o2.qcow2
    qio qcow2 o2.qcow2 "write -P 78 10M 4k" "write -P 79 50M 1M"
    qemu-img create -q -f qcow2 -b o2.qcow2 -F qcow2 o3.qcow2
    qio qcow2 o3.qcow2 "write -z 50M 64k"
    vd convert -q -f qcow2 -O vmdk -B base.vmdk -F vmdk o1.qcow2 d1.vmdk
    vd convert -q -f qcow2 -O vmdk -B d1.vmdk -F vmdk o2.qcow2 d2.vmdk
    vd convert -q -f qcow2 -O vmdk -B d2.vmdk -F vmdk o3.qcow2 d3.vmdk
    (($(stat -c %s d3.vmdk) < 4194304))
    qemu-img compare -q -f qcow2 -F vmdk o3.qcow2 d3.vmdk
    vd convert -q -O raw d3.vmdk got.raw
    qemu-img compare -q -f qcow2 -F raw o3.qcow2 got.raw
}
case_run "VMware parent chain of depth 3" vmdk_chain

vmdk_wrong_parent() { # a delta opens only on the parent whose CID it records
    pattern_raw base.raw 8M
    qemu-img convert -f raw -O vmdk base.raw base.vmdk
    qemu-img create -q -f vmdk other.vmdk 8M
    qemu-img create -q -f vmdk -b base.vmdk -F vmdk delta.vmdk
    qio vmdk delta.vmdk "write -P 5 1M 64k"
    local cid pcid ocid
    cid=$(qemu-img info --output=json base.vmdk | "$PY" -c 'import json,sys; print("%08x" % json.load(sys.stdin)["format-specific"]["data"]["cid"])')
    ocid=$(qemu-img info --output=json other.vmdk | "$PY" -c 'import json,sys; print("%08x" % json.load(sys.stdin)["format-specific"]["data"]["cid"])')
    pcid=$(qemu-img info --output=json delta.vmdk | "$PY" -c 'import json,sys; print("%08x" % json.load(sys.stdin)["format-specific"]["data"]["parent-cid"])')
    [[ $pcid == "$cid" ]]
    vd convert -q -O raw delta.vmdk ok.raw
    qemu-img compare -q -f vmdk -F raw delta.vmdk ok.raw
    # another disk named as the parent
    refused vd convert --backing other.vmdk -O raw delta.vmdk bad.raw
    grep -q "Could not open 'delta.vmdk': its parentCID is $cid, but .*other.vmdk has CID $ocid" refused.err
    [[ ! -e bad.raw ]]
    refused vd convert --backing base.raw -O raw delta.vmdk bad.raw
    grep -q "base.raw is a raw image" refused.err
    # vdisk create -b records the parent's CID as qemu-img reads it
    vd create -q -f vmdk -b base.vmdk mine.vmdk
    [[ $(qemu-img info --output=json mine.vmdk | "$PY" -c 'import json,sys; print("%08x" % json.load(sys.stdin)["format-specific"]["data"]["parent-cid"])') == "$cid" ]]
    # the parent written since (qemu gives it a new CID): its deltas no longer fit
    qio vmdk base.vmdk "write -P 9 0 4k"
    refused vd convert -O raw delta.vmdk bad.raw
    grep -q "Could not open 'delta.vmdk': its parentCID is $cid, but base.vmdk has CID" refused.err
    [[ ! -e bad.raw ]]
    refused vd info --backing-chain mine.vmdk
    vd info delta.vmdk >/dev/null # the delta alone is still described
}
case_run "VMware delta disk: a parent with another CID is refused" vmdk_wrong_parent

cow_chain() { # cow over cow over raw: no other tool reads cow, so round trips
    vd create -q -f cow -b "$T/base.raw" -F raw a.cow
    vd convert -q -f raw -O raw "$T/base.raw" expect.raw
    qio raw expect.raw "write -P 61 5M 3k"
    vd convert -q -n -f raw -O cow expect.raw a.cow
    vd create -q -f cow -b a.cow -F cow b.cow
    vd convert -q -O raw b.cow got.raw
    cmp expect.raw got.raw
}
case_run "cow chain on raw" cow_chain

ova() { # the disk inside an appliance, read in place
    qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$T/odd.raw" disk1.vmdk
    qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$T/base.raw" disk2.vmdk
    printf '<?xml version="1.0"?>\n<Envelope/>\n' >app.ovf
    tar -cf one.ova app.ovf disk1.vmdk
    tar -cf two.ova app.ovf disk1.vmdk disk2.vmdk
    vd info one.ova | grep -q disk1.vmdk
    vd convert -q -O qcow2 one.ova one.qcow2
    qemu-img compare -q -f raw -F qcow2 "$T/odd.raw" one.qcow2
    fails_cleanly vd convert -O qcow2 two.ova two.qcow2 # several disks: pick one
    [[ ! -e two.qcow2 ]]
    vd info two.ova | grep -q disk2.vmdk
    vd convert -q --disk 2 -O qcow2 two.ova two.qcow2
    qemu-img compare -q -f raw -F qcow2 "$T/base.raw" two.qcow2
    fails_cleanly vd convert --disk 3 -O raw two.ova none.raw
}
case_run "OVA appliances: one disk, several disks" ova

fixtures() { # images made by other products (shared/fixtures/MANIFEST.tsv)
    local manifest=$FIXTURES/MANIFEST.tsv name fmt expect f
    [[ -f $manifest ]] || { echo "no fixtures at $FIXTURES: skipped"; return 0; }
    while IFS=$'\t' read -r name fmt expect; do
        [[ $name == \#* || -z $name ]] && continue
        f=fx.$fmt
        case $name in
            *.bz2) bzip2 -dc "$FIXTURES/$name" >"$f" ;;
            *.xz) xz -dc "$FIXTURES/$name" >"$f" ;;
            *) cp "$FIXTURES/$name" "$f" ;;
        esac
        if [[ $expect == ok ]]; then
            qemu-img convert -f "$fmt" -O raw "$f" expect.raw
            vd convert -f "$fmt" -O raw "$f" got.raw || { echo "fixture $name: vdisk failed"; return 1; }
            cmp expect.raw got.raw || { echo "fixture $name: content differs"; return 1; }
        else
            fails_cleanly vd convert -f "$fmt" -O raw "$f" got.raw || { echo "fixture $name"; return 1; }
            [[ ! -e got.raw ]]
        fi
        rm -f fx.* expect.raw got.raw
    done <"$manifest"
}
case_run "real-world fixtures" fixtures

# poke FILE OFFSET HEXBYTES: overwrite bytes in place.
poke() { printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
export -f poke

damaged() { # each: a clear error, no crash, no target left
    local f
    qemu-img convert -f raw -O vdi "$T/base.raw" c.vdi
    qemu-img convert -f raw -O vmdk "$T/base.raw" c.vmdk
    qemu-img convert -f raw -O qcow "$T/base.raw" c.qcow
    vd convert -q -f raw -O cow "$T/base.raw" c.cow
    cp c.vdi t1.vdi; truncate -s 300 t1.vdi                       # truncated header
    cp c.vdi t2.vdi; poke t2.vdi 512 '\xf0\xff\xff\x7f'             # block map entry past the end
    cp c.vdi t3.vdi; poke t3.vdi $((0x170)) '\x00\x00\x00\x00\x00\x00\x00\x40' # 2^62 bytes
    cp c.vdi t4.vdi; poke t4.vdi $((0x178)) '\x00\x00\x00\x00'      # block size 0
    cp c.vmdk t5.vmdk; truncate -s 700 t5.vmdk
    printf '# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\nRW 999999999999 FLAT "../../../../etc/shadow" 0\n' >t6.vmdk
    printf '# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\nRW 10 FLAT "/etc/passwd" 0\n' >t7.vmdk
    head -c 70000 /dev/zero | tr '\0' 'x' | sed '1s/^/# Disk DescriptorFile\n/' >t8.vmdk # garbage
    cp c.qcow t9.qcow; poke t9.qcow 32 '\x1f'                        # cluster_bits 31
    cp c.qcow t10.qcow; truncate -s 40 t10.qcow
    cp c.qcow t11.qcow; poke t11.qcow 40 '\x7f\xff\xff\xff\xff\xff\x00\x00' # L1 past the end
    cp c.cow t12.cow; truncate -s 100 t12.cow
    cp c.cow t13.cow; poke t13.cow 1040 '\x7f\xff\xff\xff\xff\xff\xff\xff' # size 2^63
    for f in t1.vdi t2.vdi t3.vdi t4.vdi t5.vmdk t6.vmdk t7.vmdk t8.vmdk t9.qcow t10.qcow t11.qcow t12.cow t13.cow; do
        fails_cleanly vd convert -f "${f##*.}" -O raw "$f" "out.$f.raw" || { echo "damaged $f"; return 1; }
        [[ ! -e out.$f.raw ]] || { echo "target left for $f"; return 1; }
    done
}
case_run "damaged vdi, vmdk, qcow and cow images" damaged

finish
