#!/usr/bin/env bash
# vdisk convert's options beside qemu-img convert's: several sources joined
# into one target, --salvage, -r, --bitmaps, -B with -n, -o backing_file=
# as -B, and the options
# qemu-img 7.2 refuses (-s) or refuses together. Exit codes as qemu-img's,
# the same guest bytes, bitmaps and allocation.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

vsize_of() { qemu-img info -f "$2" --output=json "$1" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }

# Several sources: the target is their concatenation, as large as all of
# them together (an odd-sized raw one among them), in any target format.
concatenate() {
    qemu-img create -q -f qcow2 a.qcow2 1M
    qio qcow2 a.qcow2 'write -P 1 0 4k' 'write -P 9 1020k 4k'
    qemu-img create -q -f raw b.raw 1536
    qio raw b.raw 'write -P 2 512 512'
    qemu-img create -q -f vdi c.vdi 2M
    qio vdi c.vdi 'write -P 3 1M 64k'
    local fmt
    for fmt in raw qcow2 vmdk; do
        qemu-img convert -O $fmt a.qcow2 b.raw c.vdi q.$fmt
        vd convert -q -O $fmt a.qcow2 b.raw c.vdi v.$fmt
        [[ $(vsize_of v.$fmt $fmt) == $(vsize_of q.$fmt $fmt) ]] ||
            { echo "$fmt: size $(vsize_of v.$fmt $fmt), qemu-img $(vsize_of q.$fmt $fmt)"; return 1; }
        qemu-img compare -q -f $fmt -F $fmt q.$fmt v.$fmt
    done
    cmp q.raw v.raw
    # what qemu-img refuses with several sources
    expect_exit 1 vd convert -l snap -O raw a.qcow2 b.raw x.raw 2>err.txt
    grep -q 'No support for concatenating multiple snapshot' err.txt
    expect_exit 1 vd convert -B a.qcow2 -O qcow2 a.qcow2 b.raw x.qcow2 2>err.txt
    grep -q 'makes no sense when concatenating multiple input images' err.txt
    [[ ! -e x.raw && ! -e x.qcow2 ]]
}
case_run "several sources are joined into one target" concatenate

# corrupt_compressed FILE: spoil the first compressed cluster of a qcow2.
corrupt_compressed() {
    "$PY" - "$1" <<'PYEOF'
import struct, sys
f = open(sys.argv[1], 'r+b'); h = f.read(104)
bits = struct.unpack('>I', h[20:24])[0]; l1 = struct.unpack('>Q', h[40:48])[0]
f.seek(l1); l2 = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
f.seek(l2); e = struct.unpack('>Q', f.read(8))[0]
assert e >> 62 & 1, "not compressed"
f.seek(e & ((1 << (62 - (bits - 8))) - 1)); f.write(b'\xff' * 16)
PYEOF
}

# --salvage: a cluster that cannot be read is copied as zeroes, with a
# warning naming its offset (none with -q); the rest is copied. Without it
# the convert fails and leaves no target.
salvage() {
    qemu-img create -q -f raw r.raw 1M
    qio raw r.raw 'write -P 5 0 1M'
    qemu-img convert -c -O qcow2 r.raw c.qcow2
    corrupt_compressed c.qcow2
    expect_exit 1 qemu-img convert -O raw c.qcow2 q.raw 2>/dev/null
    expect_exit 1 vd convert -O raw c.qcow2 v.raw 2>/dev/null
    [[ ! -e v.raw ]]
    qemu-img convert -q --salvage -O raw c.qcow2 q.raw
    vd convert --salvage -O raw c.qcow2 v.raw 2>err.txt
    cmp q.raw v.raw
    grep -q 'warning: error while reading offset 0: ' err.txt
    cmp -n 65536 v.raw /dev/zero
    vd convert -q --salvage -O qcow2 c.qcow2 v.qcow2 2>err.txt
    [[ ! -s err.txt ]]
    qemu-img compare -q -F raw v.qcow2 q.raw
    # under the name qemu-img: qemu-img's warnings, one a sector
    mkdir bin
    ln -s "$VDISK" bin/qemu-img
    qemu-img convert --salvage -O raw c.qcow2 q2.raw 2>q.err
    bin/qemu-img convert --salvage -O raw c.qcow2 v2.raw 2>v.err
    diff q.err v.err
    [[ $(wc -l <v.err) == 128 ]]
    cmp q2.raw v2.raw
}
case_run "--salvage copies unreadable clusters as zeroes" salvage

# -r: at most RATE bytes of data a second; qemu-img's suffixes; a bad rate
# refused as qemu-img refuses it.
rate_limit() {
    qemu-img create -q -f raw r.raw 64M
    qio raw r.raw 'write -P 7 0 3M' 'write -P 8 60M 1M'
    local t0 t1
    t0=$(date +%s%N)
    vd convert -q -r 2M -O qcow2 r.raw v.qcow2
    t1=$(date +%s%N)
    # 4 MiB of data at 2 MiB/s: about 2 s, the 60 MiB of holes free
    (((t1 - t0) / 1000000 >= 1500)) || { echo "took $(((t1 - t0) / 1000000)) ms"; return 1; }
    (((t1 - t0) / 1000000 < 20000)) || { echo "took $(((t1 - t0) / 1000000)) ms"; return 1; }
    qemu-img compare -q -F raw v.qcow2 r.raw
    vd convert -q -r 0 -O raw r.raw z.raw
    cmp r.raw z.raw
    local bad
    for bad in -1 1x; do
        expect_exit 1 qemu-img convert -r $bad -O raw r.raw q.raw 2>/dev/null
        expect_exit 1 vd convert -r $bad -O raw r.raw v.raw 2>err.txt
        grep -q 'rate limit' err.txt
    done
}
case_run "-r limits the rate of the copy" rate_limit

# --bitmaps: the target gets each bitmap with its granularity, its
# enabled state and its bits, as qemu-img's convert --bitmaps gives them;
# formats without bitmaps are refused in qemu-img's words.
copy_bitmaps() {
    qemu-img create -q -f qcow2 s.qcow2 4M
    qemu-img bitmap --add s.qcow2 b0
    qemu-img bitmap --add -g 128k --disable s.qcow2 b1
    qio qcow2 s.qcow2 'write -P 1 0 64k' 'write -P 2 1M 300k'
    qemu-img bitmap --enable s.qcow2 b1
    qio qcow2 s.qcow2 'write -P 3 3M 4k'
    qemu-img bitmap --disable s.qcow2 b1
    qemu-img convert --bitmaps -O qcow2 s.qcow2 q.qcow2
    vd convert -q --bitmaps -O qcow2 s.qcow2 v.qcow2
    diff <(bitmaps q.qcow2) <(bitmaps v.qcow2)
    [[ $(bitmaps v.qcow2 | wc -l) == 2 ]]
    qcheck v.qcow2
    qemu-img compare -q q.qcow2 v.qcow2
    if command -v qemu-nbd >/dev/null; then
        local b
        for b in b0 b1; do
            diff <(dirty q.qcow2 $b) <(dirty v.qcow2 $b)
            [[ -n $(dirty v.qcow2 $b) ]]
        done
    else
        echo "skip: qemu-nbd not installed, copied bits unchecked"
    fi
    # without --bitmaps none are copied
    vd convert -q -O qcow2 s.qcow2 n.qcow2
    [[ -z $(bitmaps n.qcow2) ]]
    expect_exit 1 qemu-img convert --bitmaps -O raw s.qcow2 q.raw 2>/dev/null
    expect_exit 1 vd convert --bitmaps -O raw s.qcow2 v.raw 2>err.txt
    grep -q "Format driver 'raw' does not support bitmaps" err.txt
    qemu-img create -q -f raw p.raw 1M
    expect_exit 1 vd convert --bitmaps -O qcow2 p.raw p.qcow2 2>err.txt
    grep -q 'Source lacks bitmap support' err.txt
    expect_exit 1 vd convert --skip-broken-bitmaps -O qcow2 s.qcow2 k.qcow2 2>err.txt
    grep -q 'requires --bitmaps' err.txt
    [[ ! -e v.raw && ! -e p.qcow2 && ! -e k.qcow2 ]]
    # Bitmaps left in use by a process that died are inconsistent: refused,
    # or with --skip-broken-bitmaps left out with a warning each, as
    # qemu-img does (the consistent one is copied).
    qemu-img create -q -f qcow2 ib.qcow2 4M
    qemu-img bitmap --add ib.qcow2 good
    qemu-img bitmap --add ib.qcow2 bad
    qemu-io -f qcow2 -c 'write 0 64k' -c 'sigraise 9' ib.qcow2 >/dev/null 2>&1 || true
    qemu-img bitmap --add ib.qcow2 fresh
    expect_exit 1 qemu-img convert --bitmaps -O qcow2 ib.qcow2 iq.qcow2 2>/dev/null
    expect_exit 1 vd convert --bitmaps -O qcow2 ib.qcow2 iv.qcow2 2>err.txt
    grep -q "Cannot copy inconsistent bitmap 'bad'" err.txt
    [[ ! -e iv.qcow2 ]]
    qemu-img convert --bitmaps --skip-broken-bitmaps -O qcow2 ib.qcow2 iq.qcow2 2>q.err
    vd convert --bitmaps --skip-broken-bitmaps -O qcow2 ib.qcow2 iv.qcow2 2>v.err
    diff <(sed 's/^[a-z-]*: //' q.err) <(sed 's/^[a-z-]*: //' v.err)
    diff <(bitmaps iq.qcow2) <(bitmaps iv.qcow2)
    [[ $(bitmaps iv.qcow2) == "fresh 65536 auto" ]]
}
case_run "--bitmaps copies persistent bitmaps as qemu-img does" copy_bitmaps

# -n with -B: only what the source holds above BACKING is written into the
# existing target, which keeps its own backing file (qemu-img's map of
# the result); -o and --target-is-zero with a backing file refused in
# qemu-img's words.
existing_with_backing() {
    qemu-img create -q -f qcow2 base.qcow2 4M
    qio qcow2 base.qcow2 'write -P 1 0 1M'
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    qio qcow2 top.qcow2 'write -P 2 2M 64k'
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 q.qcow2
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 v.qcow2
    qemu-img convert -n -B base.qcow2 -O qcow2 top.qcow2 q.qcow2
    vd convert -q -n -B base.qcow2 -O qcow2 top.qcow2 v.qcow2
    diff <(qemu-img map --output=json q.qcow2) <(qemu-img map --output=json v.qcow2)
    qemu-img compare -q top.qcow2 v.qcow2
    expect_exit 1 vd convert -n -o cluster_size=4k -O qcow2 top.qcow2 v.qcow2 2>err.txt
    grep -q -- '-o has no effect when skipping image creation' err.txt
    expect_exit 1 vd convert -n --target-is-zero -B base.qcow2 -O qcow2 top.qcow2 v.qcow2 2>err.txt
    grep -q 'Cannot use --target-is-zero when the destination image has a backing file' err.txt
}
case_run "-n with -B copies the top into an existing overlay" existing_with_backing

# -o backing_file=B is -B to qemu-img: the new target gets B as its backing
# file and holds only what differs from it (qemu-img's map of the result,
# for each format with backing files), not a full copy below a backing file.
backing_file_option() {
    local fmt
    for fmt in qcow2 qcow vmdk; do
        qemu-img create -q -f $fmt b.$fmt 6M
        qio $fmt b.$fmt 'write -P 1 0 2M' 'write -P 3 4M 64k'
        qemu-img create -q -f $fmt -b b.$fmt -F $fmt o.$fmt 6M
        qio $fmt o.$fmt 'write -P 2 1M 64k'
        qemu-img convert -f $fmt -O $fmt -o backing_file=b.$fmt,backing_fmt=$fmt o.$fmt q.$fmt
        vd convert -q -f $fmt -O $fmt -o backing_file=b.$fmt,backing_fmt=$fmt o.$fmt v.$fmt
        diff <(qemu-img map --output=json q.$fmt) <(qemu-img map --output=json v.$fmt)
        qemu-img compare -q o.$fmt v.$fmt
        qemu-img info v.$fmt | grep -qx "backing file: b.$fmt"
        [[ $fmt != qcow2 ]] || qemu-img check -q v.$fmt
    done
    expect_exit 1 vd convert -O qcow2 -o backing_file=b.qcow2 o.qcow2 o.qcow2 x.qcow2 2>err.txt
    grep -q 'makes no sense when concatenating' err.txt
}
case_run "-o backing_file= copies only what differs from it, as -B" backing_file_option

# -s (a snapshot by name, removed from qemu-img convert before 7.2) is an
# unknown option for both; -l does what it did.
no_s_option() {
    qemu-img create -q -f qcow2 s.qcow2 1M
    qemu-img snapshot -c snap s.qcow2
    expect_exit 1 qemu-img convert -s snap -O raw s.qcow2 q.raw 2>/dev/null
    expect_exit 1 vd convert -s snap -O raw s.qcow2 v.raw 2>err.txt
    grep -q "option '-s'" err.txt
    [[ ! -e v.raw ]]
    vd convert -q -l snap -O raw s.qcow2 l.raw
}
case_run "-s is refused as qemu-img 7.2 refuses it" no_s_option

# A new image's format comes from -f/-O or else its name: an extension that
# names no format is an error for convert, create and dd (nothing made),
# an unknown -O of measure too; a .vhd is a VHD, never raw container bytes.
unknown_extension() {
    qemu-img create -q -f raw s.raw 1M
    expect_exit 1 vd convert s.raw c.qcw2 2>err.txt
    grep -q "extension '.qcw2' of 'c.qcw2' names no image format" err.txt
    expect_exit 1 vd create x.qcw2 1M 2>err.txt
    grep -q "extension '.qcw2' of 'x.qcw2' names no image format" err.txt
    expect_exit 1 vd dd if=s.raw of=d.qcw2 2>err.txt
    grep -q "extension '.qcw2' of 'd.qcw2' names no image format" err.txt
    expect_exit 1 vd measure -O qcw2 s.raw 2>err.txt
    grep -q "Unknown file format 'qcw2'" err.txt
    [[ ! -e c.qcw2 && ! -e x.qcw2 && ! -e d.qcw2 ]]
    vd create -q y.vhd 1M
    vd dd if=s.raw of=d.vhd
    vd convert -q s.raw c.vhd
    vd create -q y.qcow2 1M
    local f
    for f in y.vhd d.vhd c.vhd; do
        [[ $(qemu-img info -f vpc --output=json $f | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["format"])') == vpc ]]
        [[ $(vd info --output=json $f | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["format"])') == vpc ]]
    done
    qcheck y.qcow2
    # a name without an extension is raw (a device, as for qemu-img)
    vd create -q plain 1M
    [[ $(stat -c %s plain) == 1048576 ]]
}
case_run "an unknown target extension is an error everywhere" unknown_extension

# -S, -m and --target-is-zero take what qemu-img takes and refuse, with
# qemu-img's exit code and words, what it refuses.
option_bounds() {
    qemu-img create -q -f qcow2 a.qcow2 1M
    qio qcow2 a.qcow2 'write -P 1 0 4k'
    local S qrc vrc
    for S in 0 512 4k 16M 513 1000 32M; do
        qrc=0 vrc=0
        qemu-img convert -S $S -O raw a.qcow2 q.raw 2>/dev/null || qrc=$?
        vd convert -S $S -O raw a.qcow2 v.raw 2>err.txt || vrc=$?
        [[ $qrc == "$vrc" ]] || { echo "-S $S: qemu-img exit $qrc, vdisk $vrc"; return 1; }
        if ((vrc != 0)); then grep -q 'Invalid buffer size for sparse output' err.txt; else cmp q.raw v.raw; fi
        rm -f q.raw v.raw
    done
    expect_exit 1 vd convert -m 0 -O raw a.qcow2 v.raw 2>/dev/null
    vd convert -q -m 16 -W -O raw a.qcow2 v.raw
    expect_exit 1 vd convert --target-is-zero -O raw a.qcow2 z.raw 2>err.txt
    grep -q -- '--target-is-zero requires use of -n flag' err.txt
    # -c into a format that cannot compress: qemu-img's words, no hidden
    # file's name, nothing left
    expect_exit 1 qemu-img convert -c -O vpc a.qcow2 q.vhd 2>/dev/null
    expect_exit 1 vd convert -c -O vpc a.qcow2 v.vhd 2>err.txt
    grep -q 'Compression not supported for this file format' err.txt
    not grep -q partial err.txt
    [[ -z $(ls -A | grep -e v.vhd -e partial) ]]
}
case_run "-S, -m and --target-is-zero within qemu-img's bounds" option_bounds

# A null-co source (qemu's driver that is no file and reads zeroes), named
# by json: and by --image-opts: the target is qemu-img's, sparse (-S 512)
# or written in full (-S 0), and map of the source is qemu-img's. Bad
# options are refused in qemu's words.
null_source() {
    local src="json:{'driver': 'null-co', 'size': 1048576, 'read-zeroes': true}" fmt s
    for fmt in qcow2 raw; do
        for s in 512 0; do
            qemu-img convert -O $fmt -S $s "$src" q.$fmt
            vd convert -q -O $fmt -S $s "$src" v.$fmt
            qemu-img map --output=json -f $fmt q.$fmt >q.map
            qemu-img map --output=json -f $fmt v.$fmt >v.map
            # qemu's file layer writes the first 4 KiB of a new raw file
            # (tests/iotests/known-causes, 253): compare raw from there.
            if [[ $fmt == raw && $s != 0 ]]; then
                [[ $(merged_map v.map) == "0 1048576 True False" ]]
            else
                diff <(merged_map q.map) <(merged_map v.map)
            fi
            qemu-img compare -q -f $fmt -F $fmt q.$fmt v.$fmt
        done
    done
    [[ $(qinfo v.raw virtual-size) == 1048576 ]]
    qemu-img map --output=json "$src" >q.map
    vd map --output=json "$src" >v.map
    diff q.map v.map
    src="driver=null-co,size=65536,read-zeroes=on"
    qemu-img map --output=json --image-opts "$src" >q.map
    vd map --output=json --image-opts "$src" >v.map
    diff q.map v.map
    [[ $(vd info --output=json null-co:// | json /dev/stdin 'd["virtual-size"]') == 1073741824 ]]
    expect_exit 1 vd info --image-opts driver=null-co,size=4096,bogus=1 2>err.txt
    grep -q "Block protocol 'null-co' doesn't support the option 'bogus'" err.txt
}
case_run "a null-co source reads zeroes, as qemu's" null_source

# qemu's compress filter over an existing target (--target-image-opts
# driver=compress,file.driver=qcow2,...): every cluster written compressed,
# the map and compressed cluster count of qemu-img's; map through the
# filter (a json: name) is qemu-img's too.
compress_filter() {
    qemu-img create -q -f raw src.raw 1M
    qio raw src.raw 'write -P 7 0 320k' 'write -P 8 640k 64k'
    qemu-img create -q -f qcow2 q.qcow2 1M
    qemu-img create -q -f qcow2 v.qcow2 1M
    qemu-img convert -n -f raw src.raw --target-image-opts \
        "driver=compress,file.driver=qcow2,file.file.filename=q.qcow2"
    vd convert -q -n -f raw src.raw --target-image-opts \
        "driver=compress,file.driver=qcow2,file.file.filename=v.qcow2"
    qcheck v.qcow2
    [[ $(qemu-img check --output=json v.qcow2 | json /dev/stdin 'd["compressed-clusters"]') == 6 ]]
    diff <(qemu-img map --output=json q.qcow2) <(qemu-img map --output=json v.qcow2)
    qemu-img compare -q -f raw -F qcow2 src.raw v.qcow2
    local f="json:{'driver': 'compress', 'file': {'driver': 'qcow2', 'file': {'driver': 'file', 'filename': 'v.qcow2'}}}"
    diff <(qemu-img map --output=json "$f") <(vd map --output=json "$f")
    [[ $(vd info --output=json "$f" | json /dev/stdin 'd["format"]') == compress ]]
}
case_run "the compress filter over a target compresses every cluster" compress_filter

finish
