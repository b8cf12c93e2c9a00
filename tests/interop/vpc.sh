#!/usr/bin/env bash
# VHD (qemu's "vpc"): images qemu-img made, fixed and dynamic, with data
# qemu-io wrote at various offsets (whole blocks, part of a block, part of
# a sector run, none), are probed as vpc, show qemu-img's virtual size and
# read back as qemu reads them. Damaged images fail with a message naming
# the problem, never a crash.
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

finish
