#!/usr/bin/env bash
# vdisk bitmap against qemu-img bitmap: the same operations on two copies
# of an image leave the same bitmaps (qemu-img info: names, flags,
# granularity), both copies pass qemu-img check after every step, each
# operation exits as qemu-img's does, and merged bits are the ones qemu
# reads back (through qemu-nbd's dirty-bitmap map, where qemu-nbd exists).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

image() {
    qemu-img create -q -f qcow2 "$@" q.qcow2 100M
    cp q.qcow2 v.qcow2
}

# run NAME OPS...: qemu-img bitmap OPS on q.qcow2 and vdisk bitmap OPS on
# v.qcow2: the same exit status, the same bitmaps, both images clean.
run() {
    local name=$1 qrc=0 vrc=0
    shift
    qemu-img bitmap "$@" q.qcow2 "$name" 2>q.err || qrc=$?
    vd bitmap "$@" v.qcow2 "$name" 2>v.err || vrc=$?
    ((qrc == vrc)) || { echo "bitmap $* $name: qemu-img exit $qrc, vdisk $vrc"; cat q.err v.err; return 1; }
    ((vrc == 0)) || [[ -s v.err ]] || { echo "bitmap $* $name: no message"; return 1; }
    diff -u <(bitmaps q.qcow2) <(bitmaps v.qcow2) || { echo "bitmaps differ after bitmap $* $name"; return 1; }
    qcheck q.qcow2
    qcheck v.qcow2
}

sequence() {
    image
    run b0 --add
    run b0 --add
    run b1 --add -g 128k
    run b2 --add --disable
    run b3 --add -g 1000
    run b3 --add -g 256
    run b3 --add -g 512
    run b4 --add -g 2M
    run b0 --disable
    run b2 --enable
    run b1 --clear
    run b1 --remove
    run nosuch --remove
    run nosuch --clear
    run nosuch --enable
    run b2 --merge b0
    run b2 --merge nosuch
    run b5 --add -g 64k --remove
    run b5 --remove --add
    run b6 --add --disable --enable --clear
    run b8 --add -g 0
    run b9 --add -g 4G
    run b9 --add -b q.qcow2
    run b9 --add -F qcow2
    run b8 --remove
    # vdisk info lists the bitmaps as qemu-img info does
    qemu-img info --output=json v.qcow2 >q.json
    vd info --output=json v.qcow2 >v.json
    [[ $(json v.json 'd["format-specific"]["data"]["bitmaps"]') == \
        "$(json q.json 'd["format-specific"]["data"]["bitmaps"]')" ]]
    for b in b0 b2 b3 b4 b5 b6; do run "$b" --remove; done
    [[ -z $(bitmaps v.qcow2) ]]
    # No bitmap left: no extension and no autoclear bit, as qemu-img leaves it.
    qemu-img info --output=json v.qcow2 | grep -q '"bitmaps"' && { echo "bitmaps extension left"; return 1; }
    run b7 --add
}
case_run "each operation as qemu-img, the images clean after each" sequence

# The default granularity follows the cluster size within 4k and 64k.
granularity() {
    local cs
    for cs in 512 4k 16k 64k 256k 2M; do
        image -o cluster_size=$cs
        run b0 --add
        run b1 --add --disable -g 8k
    done
}
case_run "default granularity for each cluster size" granularity

# A bitmap vdisk added records vdisk's writes as qemu's records qemu's.
tracked() {
    image
    run b0 --add -g 4k
    run b1 --add --disable
    qemu-img create -q -f raw src.raw 100M
    qio raw src.raw "write -P 9 10M 64k" "write -P 8 33M 4k" "write -P 7 99M 1M"
    vd convert -n --target-is-zero -f raw -O qcow2 src.raw v.qcow2
    qemu-img convert -n --target-is-zero -f raw -O qcow2 src.raw q.qcow2
    qcheck v.qcow2
    diff -u <(bitmaps q.qcow2) <(bitmaps v.qcow2)
    command -v qemu-nbd >/dev/null || { echo "skip: qemu-nbd not installed, bits unchecked"; return 0; }
    diff -u <(dirty q.qcow2 b0) <(dirty v.qcow2 b0)
    [[ $(dirty v.qcow2 b0 | wc -l) == 3 ]]
    [[ -z $(dirty v.qcow2 b1) ]]
}
case_run "an added bitmap records vdisk's writes" tracked

usage() {
    image
    expect_exit 1 vd bitmap v.qcow2 b0
    expect_exit 1 vd bitmap --add v.qcow2
    expect_exit 1 vd bitmap --add v.qcow2 b0 extra
    qemu-img create -q -f raw r.raw 1M
    expect_exit 1 vd bitmap --add -f raw r.raw b0
    qemu-img create -q -f qcow2 -o compat=0.10 old.qcow2 1M
    expect_exit 1 vd bitmap --add old.qcow2 b0
    expect_exit 1 qemu-img bitmap --add old.qcow2 b0 2>/dev/null
}
case_run "usage errors and images without bitmaps" usage

merge_bits() {
    command -v qemu-nbd >/dev/null || { echo "skip: qemu-nbd not installed, merged bits unchecked"; return 0; }
    local f
    for f in m.qcow2 src.qcow2; do qemu-img create -q -f qcow2 "$f" 10M; done
    # qemu records writes in the enabled bitmaps a and s.
    qemu-img bitmap --add m.qcow2 a
    qemu-img bitmap --add -g 4k src.qcow2 s
    qio qcow2 m.qcow2 "write 1M 64k" "write 5M 4k" "write 10236k 4k"
    qio qcow2 src.qcow2 "write 2M 4k" "write 7M 100k"
    cp m.qcow2 qm.qcow2
    # Into a bitmap of finer and of coarser granularity, from the same
    # image and from another (-b).
    for g in 512 1M; do
        qemu-img bitmap --add --disable -g $g qm.qcow2 c$g
        vd bitmap --add --disable -g $g m.qcow2 c$g
        qemu-img bitmap --merge a qm.qcow2 c$g
        vd bitmap --merge a m.qcow2 c$g
        qemu-img bitmap --merge s -b src.qcow2 -F qcow2 qm.qcow2 c$g
        vd bitmap --merge s -b src.qcow2 -F qcow2 m.qcow2 c$g
        qcheck m.qcow2
        dirty qm.qcow2 c$g >q.map
        dirty m.qcow2 c$g >v.map
        diff -u q.map v.map
        [[ -s v.map ]]
    done
    # vdisk reads what qemu-img made, and qemu what vdisk cleared.
    vd bitmap --clear m.qcow2 c512
    qcheck m.qcow2
    [[ -z $(dirty m.qcow2 c512) ]]
    dirty m.qcow2 a >v.map
    grep -q "^1048576 65536$" v.map
}
case_run "merged bits are the ones qemu reads back" merge_bits

# --merge -b TOP into TOP's own backing file (qemu-iotests qemu-img-bitmaps):
# the source is read without its backing chain, which holds the target.
merge_from_overlay() {
    qemu-img create -q -f qcow2 base.qcow2 10M
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    qemu-img bitmap --add top.qcow2 b2
    qemu-io -f qcow2 -c 'write 1M 64k' top.qcow2 >/dev/null
    vd bitmap --add --merge b2 -b top.qcow2 -F qcow2 -f qcow2 base.qcow2 b3
    [[ $(bitmaps base.qcow2) == "b3 65536 auto" ]]
    diff <(dirty top.qcow2 b2) <(dirty base.qcow2 b3)
    qcheck base.qcow2
}
case_run "merge from an overlay into its backing file" merge_from_overlay

finish
