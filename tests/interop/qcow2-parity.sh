#!/bin/bash
# qcow2 snapshots, and check and info of damaged qcow2 images, beside
# qemu-img 7.2.
#
# Each case makes an image with qemu-img and qemu-io (and damages it the way
# qemu-iotests 039, 060, 108 and 138 do, by writing bytes into the file),
# then runs the same command through qemu-img and through vdisk, each on its
# own copy: the exit codes must be equal, and stdout and stderr too once the
# file names and the program's name before an error are taken out. Where a
# command writes, the two copies must then read the same (qemu-img compare)
# and qemu-img check must say the same of both.
#
# Environment as for every interop script (lib.sh).
# shellcheck source=tests/interop/lib.sh
source "$(dirname "$0")/lib.sh"
need_programs

# Where qemu-iotests' test images keep their tables (64 MiB, 64 KiB clusters,
# as qemu-img 7.2 lays them out).
RT=65536 RB=131072 L1=196608 L2=262144 L2_AFTER_SNAPSHOT=524288

# poke FILE OFFSET BYTES: write printf-escaped BYTES at OFFSET.
poke() { printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }

# normalize FILE: the image names and the program's name out; dates (two
# runs need not fall in the same second) and the host file's allocation
# (disk size, actual-size) masked.
normalize() {
    sed -E -i 's/[qv]\.qcow2/IMG/g; s/^(qemu-img|vdisk): //
        s/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8}/DATE/
        s/("date-n?sec"|"actual-size"): [0-9]+/\1: 0/; s/^disk size: .*/disk size: N/' "$1"
}

# both ARGS...: qemu-img ARGS q.qcow2 and vdisk ARGS v.qcow2, each on a fresh
# copy of t.qcow2 unless KEEP=1; exit code, stdout and stderr must match.
both() {
    local qrc=0 vrc=0
    if [[ -z ${KEEP:-} ]]; then
        cp t.qcow2 q.qcow2
        cp t.qcow2 v.qcow2
    fi
    qemu-img "$@" q.qcow2 >q.out 2>q.err || qrc=$?
    vd "$@" v.qcow2 >v.out 2>v.err || vrc=$?
    normalize q.out
    normalize q.err
    normalize v.out
    normalize v.err
    ((qrc == vrc)) || { echo "exit codes differ for $*: qemu-img $qrc, vdisk $vrc"; cat q.err v.err; return 1; }
    diff -u q.out v.out || { echo "stdout differs for $*"; return 1; }
    diff -u q.err v.err || { echo "stderr differs for $*"; return 1; }
}

# same_images: q.qcow2 and v.qcow2 read the same and check the same.
same_images() {
    local qrc=0 vrc=0
    qemu-img compare -q q.qcow2 v.qcow2 || { echo "the two images read differently"; return 1; }
    qemu-img check q.qcow2 >/dev/null 2>&1 || qrc=$?
    qemu-img check v.qcow2 >/dev/null 2>&1 || vrc=$?
    ((qrc == vrc)) || { echo "qemu-img check: $qrc on qemu-img's image, $vrc on vdisk's"; return 1; }
}

new_image() { qemu-img create -q -f qcow2 t.qcow2 64M "$@"; }

# ---- snapshots ----

t_snapshot_duplicate_name() {
    new_image
    qio qcow2 t.qcow2 "write -P 1 0 64k"
    both snapshot -c s1
    KEEP=1 both snapshot -c s1
    KEEP=1 both snapshot
    KEEP=1 both snapshot -l
    grep -c ' s1 ' v.out | grep -qx 2
    same_images
    # the icount qemu-img stores is in vdisk's snapshots too
    KEEP=1 both info --output=json
    grep -q '"icount": 0' v.out
}
case_run "snapshot -c NAME twice: two snapshots, as qemu-img" t_snapshot_duplicate_name

# Ids and names that cross: "1" is the name of snapshot 2. -a takes the id
# first, -d the name only, as qemu-img 7.2 does.
t_snapshot_which_one() {
    new_image
    qio qcow2 t.qcow2 "write -P 1 0 64k"
    qemu-img snapshot -c X t.qcow2
    qio qcow2 t.qcow2 "write -P 2 0 64k"
    qemu-img snapshot -c 1 t.qcow2
    qio qcow2 t.qcow2 "write -P 3 0 64k"
    qemu-img snapshot -c X t.qcow2
    qio qcow2 t.qcow2 "write -P 4 0 64k"
    both snapshot -a 1
    qio qcow2 v.qcow2 "read -P 1 0 64k"
    same_images
    both snapshot -a X
    qio qcow2 v.qcow2 "read -P 1 0 64k"
    both snapshot -d 1
    KEEP=1 both snapshot -l
    not grep -q '^2 ' v.out
    same_images
    both snapshot -d X
    KEEP=1 both snapshot -l
    grep -q '^3 ' v.out
    not grep -q '^1 ' v.out
    same_images
    both snapshot -d 3
    grep -q "Could not delete snapshot '3': snapshot not found" v.err
    both snapshot -c ''
    KEEP=1 both snapshot -l
    same_images
}
case_run "snapshot -a/-d on names that repeat and ids that are names" t_snapshot_which_one

t_snapshot_icount_listing() {
    new_image
    qemu-img snapshot -c a t.qcow2
    qemu-img snapshot -c b t.qcow2
    both snapshot -l
    grep -q 'ICOUNT' v.out
    both info
    both info --output=json
    # a snapshot without an icount (extra data of 16 bytes, as a VM without
    # record/replay writes -1 or an older qemu writes none) shows none
    "$PY" - t.qcow2 <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b")
h = f.read(72)
off = struct.unpack(">Q", h[64:72])[0]
f.seek(off + 40 + 16)
f.write(struct.pack(">Q", 0xffffffffffffffff))
PY
    both snapshot -l
    both info --output=json
    [[ $(json v.out '["icount" in s for s in d["snapshots"]]') == "[False, True]" ]]
}
case_run "snapshot -l and info: the ICOUNT column and icount key" t_snapshot_icount_listing

finish
