#!/usr/bin/env bash
# VHD (qemu's "vpc"): images qemu-img made, fixed and dynamic, with data
# qemu-io wrote at various offsets (whole blocks, part of a block, part of
# a sector run, none), are probed as vpc, show qemu-img's virtual size and
# read back as qemu reads them. Damaged images fail with a message naming
# the problem, never a crash. VHDs vdisk creates and writes are qemu-img's
# bytes (footer, dynamic header, table, block layout; the footer's
# timestamp, UUID and checksum aside) and read back through qemu.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

# vsize FILE: qemu-img's virtual size of a VHD (named: qemu probes a fixed
# VHD, whose footer is at the end, as raw).
vsize() { qemu-img info -f vpc --output=json "$1" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }

# make_vhd SUBFORMAT FILE: a 100M VHD with data in some blocks and holes.
make_vhd() {
    qemu-img create -q -f vpc -o subformat="$1" "$2" 100M
    qemu-io -f vpc -c 'write -P 0x11 0 64k' -c 'write -P 0x22 3M 4k' \
        -c 'write -P 0x33 50M 1536' -c 'write -P 0x44 97M 2M' -c 'write -P 0x55 4194816 512' \
        "$2" >/dev/null
}

reads_as_qemu() {
    make_vhd "$1" d.vhd
    vd info d.vhd >info.txt
    grep -qx 'file format: vpc' info.txt
    [[ $(vd info --output=json d.vhd | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') == $(vsize d.vhd) ]]
    # Guest data, not container bytes, whatever the target.
    vd convert -O qcow2 d.vhd out.qcow2
    qemu-img compare -q -f vpc -F qcow2 d.vhd out.qcow2
    vd convert -O raw d.vhd out.raw
    qemu-img compare -q -f vpc -F raw d.vhd out.raw
    vd compare d.vhd out.qcow2
    # Without -f or -O the .vhd is probed, not taken as raw.
    vd convert d.vhd probed.qcow2 2>/dev/null
    qemu-img compare -q -F vpc probed.qcow2 d.vhd
}
case_run "dynamic VHD from qemu-img reads as qemu reads it" reads_as_qemu dynamic
case_run "fixed VHD from qemu-img reads as qemu reads it" reads_as_qemu fixed

empty_sizes() {
    for size in 1M 100M 1G 127G; do
        qemu-img create -q -f vpc "e$size.vhd" "$size"
        [[ $(vd info --output=json "e$size.vhd" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') == $(vsize "e$size.vhd") ]]
    done
}
case_run "virtual size as qemu-img's" empty_sizes

# poke FILE OFFSET HEX: overwrite bytes.
poke() { printf "$(echo "$3" | sed 's/../\\x&/g')" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }

# fix_sum FILE OFFSET LEN FIELD: recompute a VHD checksum (ones' complement
# of the byte sum) of the structure at OFFSET.
fix_sum() {
    "$PY" - "$@" <<'PYEOF'
import sys
f, off, n, field = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with open(f, 'r+b') as fh:
    fh.seek(off); b = bytearray(fh.read(n)); b[field:field+4] = b'\0' * 4
    s = (~sum(b)) & 0xffffffff
    fh.seek(off + field); fh.write(s.to_bytes(4, 'big'))
PYEOF
}

hostile() {
    make_vhd dynamic d.vhd
    size=$(stat -c %s d.vhd)
    # A footer whose checksum is wrong.
    cp d.vhd a.vhd; poke a.vhd $((size - 512 + 64)) 00000000
    poke a.vhd 64 00000000
    fails_cleanly vd info a.vhd 2>err.txt; grep -q checksum err.txt; grep -q a.vhd err.txt
    # A block table entry past the end of the file.
    cp d.vhd b.vhd; poke b.vhd 1536 7fffffff
    fails_cleanly vd convert -O raw b.vhd b.raw 2>err.txt; grep -q 'past the end' err.txt
    # A block size that is not a power of two (checksum kept right).
    cp d.vhd c.vhd; poke c.vhd $((512 + 32)) 00300000; fix_sum c.vhd 512 1024 36
    fails_cleanly vd info c.vhd 2>err.txt; grep -q 'power of two' err.txt
    # A block table far past the end of the file.
    cp d.vhd t.vhd; poke t.vhd $((512 + 16)) 00000000ffff0000; fix_sum t.vhd 512 1024 36
    fails_cleanly vd info t.vhd 2>err.txt; grep -q 'past the end' err.txt
    # A differencing VHD is refused by name.
    cp d.vhd diff.vhd; poke diff.vhd 60 00000004; fix_sum diff.vhd 0 512 64
    poke diff.vhd $((size - 512 + 60)) 00000004; fix_sum diff.vhd $((size - 512)) 512 64
    fails_cleanly vd info diff.vhd 2>err.txt; grep -q 'differencing' err.txt; grep -q diff.vhd err.txt
}
case_run "damaged VHDs fail with a clear error" hostile

# footer_fields FILE: the footer at the end without timestamp, checksum and
# UUID (what two VHDs made at different times may differ in), in hex.
footer_fields() {
    "$PY" - "$1" <<'PYEOF'
import sys
with open(sys.argv[1], 'rb') as f:
    if f.seekable():   # a fixed VHD is as long as its disk: read its end only
        f.seek(-512, 2)
    b = bytearray(f.read()[-512:])
for off, n in ((24, 4), (64, 4), (68, 16)):
    b[off:off + n] = bytes(n)
print(b.hex())
PYEOF
}

# same_vhd A B: the same file length, footer (but what footer_fields
# leaves out), and for a dynamic disk the same copy of it at 0, the same
# header, table and blocks.
same_vhd() {
    [[ $(stat -c %s "$1") == $(stat -c %s "$2") ]] || { echo "lengths differ: $(stat -c %s "$1") $(stat -c %s "$2")"; return 1; }
    [[ $(footer_fields "$1") == $(footer_fields "$2") ]] || { echo "footers differ"; return 1; }
    local len=$(($(stat -c %s "$1") - 512))
    if [[ $(od -An -tx1 -j60 -N4 "$1" | tr -d ' ') == 00000003 ]]; then
        cmp <(head -c 512 "$1" | footer_fields /dev/stdin) <(head -c 512 "$2" | footer_fields /dev/stdin)
        cmp <(head -c "$len" "$1" | tail -c +513) <(head -c "$len" "$2" | tail -c +513)
    fi
}

# A new VHD has qemu-img's size, geometry, file length and layout, for
# sizes across the geometry's ranges (17, 31, 63 and 255 sectors a track),
# with and without force_size, up to the largest qemu-img allows; what
# qemu-img refuses vdisk refuses.
create_as_qemu() {
    local size fs sub qrc vrc
    for size in 0 1000 1M 10M 33M 127M 505M 1G 15G 32G 127G 128G 1T 2040G 2041G 3T 1234567; do
        for fs in off on; do
            for sub in dynamic fixed; do
                rm -f q.vhd v.vhd
                qrc=0 vrc=0
                qemu-img create -q -f vpc -o subformat=$sub,force_size=$fs q.vhd $size 2>/dev/null || qrc=$?
                vd create -q -f vpc -o subformat=$sub,force_size=$fs v.vhd $size 2>err.txt || vrc=$?
                [[ $qrc == "$vrc" ]] || { echo "$size $sub force_size=$fs: qemu-img exit $qrc, vdisk $vrc"; return 1; }
                if ((qrc != 0)); then
                    grep -q "too large for file format 'vpc'" err.txt
                    continue
                fi
                same_vhd q.vhd v.vhd || { echo "in $size $sub force_size=$fs"; return 1; }
                # (qemu cannot open the empty dynamic disk it makes)
                [[ $size == 0 ]] ||
                    [[ $(vsize v.vhd) == $(vd info --output=json v.vhd | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') ]]
            done
        done
    done
}
case_run "create: the VHD qemu-img makes, every size range" create_as_qemu

# A convert into vpc writes the blocks qemu-img's convert writes, where it
# writes them; the guest bytes are the source's; qemu reads them and vdisk
# reads them back.
convert_to_vpc() {
    local sub=$1
    qemu-img create -q -f qcow2 src.qcow2 100M
    qio qcow2 src.qcow2 'write -P 0x11 0 64k' 'write -P 0x22 3M 4k' 'write -P 0x33 50M 1536' \
        'write -P 0x44 97M 2M' 'write -P 0x55 4194816 512' 'write -P 0x66 104856576 1024'
    vd convert -q -O vpc -o subformat="$sub" src.qcow2 v.vhd
    qemu-img convert -O vpc -o subformat="$sub" src.qcow2 q.vhd
    same_vhd q.vhd v.vhd
    qemu-img compare -q -f vpc -F qcow2 v.vhd src.qcow2
    qemu-img map -f vpc --output=json v.vhd >vmap.json
    qemu-img map -f vpc --output=json q.vhd >qmap.json
    cmp vmap.json qmap.json
    # vdisk's map is qemu-img's (holes in a fixed disk's file read zero)
    vd map --output=json v.vhd | cmp - vmap.json
    vd compare q.vhd v.vhd
    # and out again
    vd convert -q -O qcow2 v.vhd back.qcow2
    qemu-img compare -q -f vpc -F qcow2 v.vhd back.qcow2
    # without -O, as the extension says
    vd convert -q src.qcow2 named.vhd
    qemu-img compare -q -f vpc -F qcow2 named.vhd src.qcow2
}
case_run "convert to a dynamic VHD as qemu-img converts" convert_to_vpc dynamic
case_run "convert to a fixed VHD as qemu-img converts" convert_to_vpc fixed

# vdisk writes into a VHD qemu made and qemu wrote (blocks stored and not,
# parts of blocks), and qemu-io writes into one vdisk made: each reads
# the other's data.
write_both_ways() {
    local sub=$1
    qemu-img create -q -f vpc -o subformat="$sub" q.vhd 20M
    qio vpc q.vhd 'write -P 0x11 0 1M' 'write -P 0x22 5M 4k'
    pattern_raw src.raw 20M
    # a source of the disk's size, with holes: vdisk writes its data and
    # zeroes over qemu's where the source reads zero
    truncate -s "$(vsize q.vhd)" src.raw
    vd convert -q -n -f raw -O vpc src.raw q.vhd
    qemu-img compare -q -f vpc -F raw q.vhd src.raw
    vd create -q -f vpc -o subformat="$sub" v.vhd 20M
    qio vpc v.vhd 'write -P 0x33 1M 3M' 'write -P 0x44 7340544 1024' 'write -z 2M 64k'
    qemu-io -f vpc -c 'read -P 0x33 1M 1M' -c 'read -P 0 2M 64k' v.vhd | not grep -q 'Pattern verification failed'
    vd convert -q -O raw v.vhd v.raw
    qemu-img compare -q -f vpc -F raw v.vhd v.raw
}
case_run "dynamic VHD: vdisk writes where qemu wrote, qemu where vdisk did" write_both_ways dynamic
case_run "fixed VHD: vdisk writes where qemu wrote, qemu where vdisk did" write_both_ways fixed

# A block another program stored with sectors marked absent in its bitmap
# (they read zero, whatever the file holds there): vdisk's write marks the
# sectors it writes present and the others still read zero.
bitmap_clear_sectors() {
    qemu-img create -q -f vpc d.vhd 4M
    qio vpc d.vhd 'write -P 0x77 0 2M'
    # the first block's bitmap (at the block's sector, after the table)
    local bat=$(od -An -tx1 -j1536 -N4 d.vhd | tr -d ' ')
    local start=$((16#$bat * 512))
    # sectors 0-7 and 16-23 absent: their 0x77 bytes must not show
    printf '\x00\xff\x00' | dd of=d.vhd bs=1 seek="$start" conv=notrunc status=none
    vd convert -q -O raw d.vhd before.raw
    cmp -n 4096 before.raw /dev/zero
    # vdisk writes 4 KiB at 8 KiB (sectors 16-23)
    qemu-img create -q -f raw w.raw 4M
    qio raw w.raw 'write -P 0x99 8k 4k'
    # only that range of the source is data; -S makes the rest holes that
    # -n with --target-is-zero does not write
    vd convert -q -n --target-is-zero -f raw -O vpc w.raw d.vhd
    vd convert -q -O raw d.vhd after.raw
    cmp -n 4096 after.raw /dev/zero
    [[ $(od -v -An -tx1 -j8192 -N4096 after.raw | tr -d ' \n' | tr -d 9) == "" ]]
    [[ $(od -v -An -tx1 -j4096 -N4096 after.raw | tr -d ' \n' | tr -d 7) == "" ]]
}
case_run "writes into a block whose bitmap marks sectors absent" bitmap_clear_sectors

# A Virtual PC disk ("vpc " creator) is as large as its geometry says,
# even where its current size says more, as qemu sizes it; a Hyper-V one
# ("win ") by its current size.
sized_by_creator() {
    qemu-img create -q -f vpc d.vhd 10M
    local size=$(stat -c %s d.vhd) creator
    for creator in 76706320 77696e20; do
        cp d.vhd c.vhd
        # creator app, and a current size of 11 MiB
        for off in 0 $((size - 512)); do
            poke c.vhd $((off + 28)) "$creator"
            poke c.vhd $((off + 48)) 0000000000b00000
            fix_sum c.vhd "$off" 512 64
        done
        [[ $(vd info --output=json c.vhd | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') == $(vsize c.vhd) ]] ||
            { echo "creator $creator: vdisk $(vd info --output=json c.vhd), qemu-img $(vsize c.vhd)"; return 1; }
    done
}
case_run "virtual size by the creator, as qemu-img's" sized_by_creator

# What qemu-img refuses for a VHD, vdisk refuses: a resize, a backing file.
refused_as_qemu() {
    vd create -q -f vpc d.vhd 10M
    not qemu-img resize -q -f vpc d.vhd 20M 2>/dev/null
    fails_cleanly vd resize d.vhd 20M
    expect_exit 63 vd check d.vhd
    qemu-img create -q -f raw b.raw 10M
    fails_cleanly vd create -f vpc -b b.raw -F raw o.vhd
    [[ ! -e o.vhd ]]
}
case_run "resize and backing files refused as qemu-img refuses them" refused_as_qemu

finish
