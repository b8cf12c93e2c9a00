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
# (disk size, actual-size) masked; qemu's corruption events ("qcow2: Image
# is corrupt: ...", which vdisk does not print) out, and "Check failed: ..."
# (vdisk's sentence after qemu-img's key words) cut to the key words.
normalize() {
    sed -E -i 's/[qv]\.qcow2/IMG/g; s/^(qemu-img|vdisk): //
        s/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8}/DATE/
        s/("date-n?sec"|"actual-size"): [0-9]+/\1: 0/; s/^disk size: .*/disk size: N/
        /^qcow2: /d; s/^Check failed.*/Check failed/' "$1"
}

# filter_repair FILE: where a repair rebuilt the refcount structure, the
# image may end elsewhere: qemu puts the new structure in the first free
# clusters, vdisk after the end of the file.
filter_repair() {
    sed -E -i 's/^Image end offset: .*/Image end offset: N/; s/("image-end-offset"): [0-9]+/\1: 0/' "$1"
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
    if [[ -n ${REPAIR:-} ]]; then
        filter_repair q.out
        filter_repair v.out
    fi
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

# ---- map of zero clusters, and what convert allocates ----

t_map_zero_clusters() {
    # zero clusters that keep their host cluster (written zero without
    # unmapping, or preallocated) show where it lies; those without one
    # do not, and the two kinds make separate entries (154, 179)
    new_image
    qio qcow2 t.qcow2 "write -P 1 0 4M" "write -z 1M 2M" "write -z -u 2M 64k"
    both map --output=json
    grep -q '"zero": true, "data": false, "offset": ' v.out
    both map
    qemu-img create -q -f qcow2 -o preallocation=metadata t.qcow2 8M
    qio qcow2 t.qcow2 "write -z 0 8M"
    both map --output=json
    # encrypted zero clusters do not say where they lie
    qemu_img_luks create -q -f qcow2 --object secret,id=s0,data=pw \
        -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=100 t.qcow2 4M
    qemu-io --object secret,id=s0,data=pw --image-opts \
        -c "write -P 1 0 1M" -c "write -z 0 64k" \
        "driver=qcow2,encrypt.key-secret=s0,file.filename=t.qcow2" >/dev/null
    local opts=(map --output=json --object secret,id=s0,data=pw --image-opts)
    qemu-img "${opts[@]}" driver=qcow2,encrypt.key-secret=s0,file.filename=t.qcow2 >q.out
    vd "${opts[@]}" driver=qcow2,encrypt.key-secret=s0,file.filename=t.qcow2 >v.out
    diff -u q.out v.out
    not grep -q offset v.out
}
case_run "map: zero clusters with a host cluster show its offset, as qemu-img" t_map_zero_clusters

t_convert_compressed_allocate_all() {
    # -c -S 0 writes every cluster, zeroes too, compressed (122)
    new_image
    qio qcow2 t.qcow2 "write -P 0x22 0 3M" "write -P 0 3M 3M"
    cp t.qcow2 s.qcow2
    both convert -O qcow2 -c -S 0 s.qcow2
    KEEP=1 both map --output=json
    grep -q '"start": 0, "length": 67108864, .*"data": true}' v.out
    same_images
    qio qcow2 v.qcow2 "read -P 0x22 0 3M" "read -P 0 3M 61M"
}
case_run "convert -c -S 0: every cluster allocated, as qemu-img" t_convert_compressed_allocate_all

t_convert_existing_target_zero_flags() {
    # convert -n into an image that may hold anything: a v3 target gets its
    # clusters flagged zero where the source reads zero, a v2 target (no
    # zero flag, no backing file) leaves them unallocated (122)
    local compat
    qemu-img create -q -f qcow2 s.qcow2 64M
    qio qcow2 s.qcow2 "write -P 7 1M 64k"
    for compat in 1.1 0.10; do
        qemu-img create -q -f qcow2 -o compat=$compat q.qcow2 64M
        qemu-img create -q -f qcow2 -o compat=$compat v.qcow2 64M
        KEEP=1 both convert -n -O qcow2 s.qcow2
        KEEP=1 both map --output=json
        same_images
    done
    # data there before reads zero afterwards
    new_image
    qio qcow2 t.qcow2 "write -P 9 0 64M"
    both convert -n -O qcow2 s.qcow2
    KEEP=1 both map --output=json
    same_images
    qio qcow2 v.qcow2 "read -P 0 0 1M" "read -P 7 1M 64k" "read -P 0 1088k 62M"
}
case_run "convert -n: zero clusters flagged in a v3 target, as qemu-img" t_convert_existing_target_zero_flags

# ---- rebase ----

t_rebase_zeroes_of_no_backing() {
    # what the old chain showed as zeroes for want of a backing file (none,
    # or past the end of a shorter one) is written as zero clusters, as
    # qemu-img writes it (252)
    qemu-img create -q -f qcow2 t.qcow2 384k
    qemu-img create -q -f qcow2 b.qcow2 384k
    qio qcow2 t.qcow2 "write -P 0x22 0 128k" "write -P 0x11 128k 128k"
    qio qcow2 b.qcow2 "write -P 0x11 0 64k" "write -P 0x11 128k 64k" "write -P 0x11 256k 64k"
    both rebase -b b.qcow2 -F qcow2
    KEEP=1 both map --output=json
    grep -q '"start": 262144, "length": 65536, "depth": 0, "present": true, "zero": true' v.out
    same_images
    qio qcow2 v.qcow2 "read -P 0x22 0 128k" "read -P 0x11 128k 128k" "read -P 0 256k 128k"
    # an old backing file shorter than the image: zeroes past its end
    qemu-img create -q -f qcow2 s.qcow2 128k
    qio qcow2 s.qcow2 "write -P 0x33 0 128k"
    qemu-img create -q -f qcow2 -b s.qcow2 -F qcow2 t.qcow2 384k
    both rebase -b b.qcow2 -F qcow2
    KEEP=1 both map --output=json
    same_images
    qio qcow2 v.qcow2 "read -P 0x33 0 128k" "read -P 0 128k 256k"
}
case_run "rebase: zeroes of no backing file written as zero clusters, as qemu-img (252)" t_rebase_zeroes_of_no_backing

t_rebase_v2_without_backing() {
    # a v2 image has no zero flag, and a zero write into it without a
    # backing file leaves the cluster unallocated: qemu-img 7.2 then lets
    # the new backing file show through there; vdisk writes zero data
    qemu-img create -q -f qcow2 -o compat=0.10 t.qcow2 384k
    qemu-img create -q -f qcow2 b.qcow2 384k
    qio qcow2 b.qcow2 "write -P 0x11 0 384k"
    qio qcow2 t.qcow2 "write -P 0x22 0 64k"
    vd rebase -b b.qcow2 -F qcow2 t.qcow2
    qcheck t.qcow2
    qio qcow2 t.qcow2 "read -P 0x22 0 64k" "read -P 0 64k 320k"
}
case_run "rebase: a v2 image without backing file keeps reading zeroes" t_rebase_v2_without_backing

t_rebase_unsafe_header() {
    # rebase -u rewrites the header as qemu-img does: the backing format
    # first, then the feature table, then extensions it does not know, as
    # they were (031); the header cluster is qemu-img's byte for byte
    local compat args cs
    for compat in 0.10 1.1; do
        qemu-img create -q -f qcow2 -o compat=$compat t.qcow2 64M
        "$PY" - t.qcow2 <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b")
h = bytearray(f.read(65536))
off = struct.unpack_from(">I", h, 100)[0] if struct.unpack_from(">I", h, 4)[0] == 3 else 72
while struct.unpack_from(">I", h, off)[0] != 0:
    off += 8 + (struct.unpack_from(">I", h, off + 4)[0] + 7) // 8 * 8
d = b"This is a test header extension"
h[off:off + 48] = struct.pack(">II", 0x12345678, len(d)) + d + b"\0" * 9
f.seek(0)
f.write(h)
PY
        for args in "-b /some/backing/file/path -F host_device" "-b x.qcow2 -F qcow2" "-b ''"; do
            eval "both rebase -u $args"
            cmp <(head -c 65536 q.qcow2) <(head -c 65536 v.qcow2)
            cp v.qcow2 t.qcow2
        done
    done
    # clusters of 4 KiB and less: no feature table, as in qemu-img's header
    for cs in 512 4k 8k; do
        qemu-img create -q -f qcow2 -o cluster_size=$cs t.qcow2 64M
        both rebase -u -b x.qcow2 -F qcow2
        cmp q.qcow2 v.qcow2
    done
}
case_run "rebase -u: the header as qemu-img writes it, unknown extensions last (031)" t_rebase_unsafe_header

# ---- check of sound images ----

t_check_fragmentation() {
    # 4 KiB clusters: each L2 table covers 2 MiB, so the data of one table
    # lies after the next table's own cluster; qemu-img counts fragments
    # within a table only (0.00% here), and also clusters written backwards
    qemu-img create -q -f qcow2 -o cluster_size=4096 t.qcow2 64M
    qemu-io -c "write -P 1 0 64k" -c "write -P 2 1M 128k" -c "write -P 4 20M 3M" \
        -c "write -P 3 $((64 * 1048576 - 4096)) 4k" t.qcow2 >/dev/null
    both check
    both check --output=json
    new_image
    for o in 3 2 1 0; do qemu-io -c "write -P $o ${o}M 64k" t.qcow2 >/dev/null; done
    both check
}
case_run "check: fragmented clusters counted per L2 table, as qemu-img" t_check_fragmentation

# ---- check and info of damaged images (qemu-iotests 039, 060, 108) ----

# check_all: info, check (human and JSON) must say what qemu-img says, and
# -r leaks and -r all must end as qemu-img's do: the same exit code and
# messages, images that read the same and check the same.
check_all() {
    both info
    both check
    both check --output=json
    REPAIR=1 both check -r leaks
    same_images
    REPAIR=1 both check -r all
    same_images
}

t_damage_refcount_zero() {
    # a VM killed while lazy refcounts were on: the data cluster's count is 0
    new_image -o lazy_refcounts=on
    qemu-io -c "write -P 0x5a 0 512" -c "sigraise 9" t.qcow2 >/dev/null 2>&1 || true
    check_all
    grep -q '^ERROR cluster 5 refcount=0 reference=1$' v.err || true
    KEEP=1 both check
    qio qcow2 v.qcow2 "read -P 0x5a 0 512"
}
case_run "damaged: a refcount of 0 after a crash with lazy refcounts (039)" t_damage_refcount_zero

t_damage_l2_into_l1() {
    # the L1 table names itself as an L2 table
    new_image
    poke t.qcow2 $L1 "\x80\x00\x00\x00\x00\x03\x00\x00"
    both info
    both check
    grep -qx 'ERROR cluster 3 refcount=1 reference=3' v.err
    both check --output=json
    REPAIR=1 both check -r leaks
}
case_run "damaged: an L2 reference into the L1 table (060)" t_damage_l2_into_l1

t_damage_data_into_refblock() {
    new_image
    truncate -s $((L2 + 65536)) t.qcow2
    poke t.qcow2 $L1 "\x80\x00\x00\x00\x00\x04\x00\x00"
    poke t.qcow2 $((RB + 8)) "\x00\x01"
    poke t.qcow2 $L2 "\x80\x00\x00\x00\x00\x02\x00\x00"
    check_all
    grep -qx 'Rebuilding refcount structure' v.err
}
case_run "damaged: a data cluster in the refcount block (060)" t_damage_data_into_refblock

t_damage_inactive_l2() {
    new_image
    qio qcow2 t.qcow2 "write -P 1 0 512"
    qemu-img snapshot -c foo t.qcow2
    qio qcow2 t.qcow2 "write -P 2 0 512"
    poke t.qcow2 $L2_AFTER_SNAPSHOT "\x80\x00\x00\x00\x00\x04\x00\x00"
    check_all
    grep -qx 'Repairing OFLAG_COPIED data cluster: l2_entry=8000000000040000 refcount=2' v.err
}
case_run "damaged: a data cluster in a snapshot's L2 table (060)" t_damage_inactive_l2

t_damage_unaligned_l2_entry() {
    new_image
    qio qcow2 t.qcow2 "write 0 64k"
    poke t.qcow2 $L2 "\x80\x00\x00\x00\x00\x05\x2a\x00"
    both info
    both check
    grep -qx 'ERROR offset=52a00: Data cluster is not properly aligned; L2 entry corrupted.' v.err
    both check --output=json
    REPAIR=1 both check -r leaks
    # qemu cannot repair it (and cannot read it); vdisk drops the mapping,
    # which then reads as zeroes
    cp t.qcow2 v.qcow2
    vd check -r all v.qcow2 >out 2>err
    qcheck v.qcow2
    qio qcow2 v.qcow2 "read -P 0 0 64k"
}
case_run "damaged: an unaligned data cluster (060)" t_damage_unaligned_l2_entry

t_damage_unaligned_zero_entry() {
    new_image
    qio qcow2 t.qcow2 "write 0 64k"
    poke t.qcow2 $L2 "\x80\x00\x00\x00\x00\x05\x2a\x01"
    both info
    both check
    both check --output=json
    REPAIR=1 both check -r leaks
    # (qemu cannot compare the image before the repair)
    REPAIR=1 both check -r all
    same_images
    grep -qx 'Repairing offset=52a00: Preallocated cluster is not properly aligned; L2 entry corrupted.' v.err
}
case_run "damaged: an unaligned preallocated zero cluster (060)" t_damage_unaligned_zero_entry

t_damage_refcount_table() {
    # the refcount table's first entry is zero, or unaligned; its block zero
    new_image
    qio qcow2 t.qcow2 "write 0 64k"
    cp t.qcow2 base.qcow2
    poke t.qcow2 $RT "\x00\x00\x00\x00\x00\x00\x00\x00"
    check_all
    cp base.qcow2 t.qcow2
    poke t.qcow2 $RB "\x00\x00\x00\x00\x00\x00\x00\x00"
    check_all
    cp base.qcow2 t.qcow2
    poke t.qcow2 $RT "\x00\x00\x00\x00\x00\x02\x2a\x00"
    both info
    both check
    grep -q "^Can't get refcount for cluster 3: " v.err
    both check --output=json
    REPAIR=1 both check -r leaks
}
case_run "damaged: an empty, unaligned or zeroed refcount structure (060)" t_damage_refcount_table

t_damage_refblock_outside() {
    new_image
    poke t.qcow2 $((RT + 8)) "\x00\xff\xff\xff\x00\x00\x00\x00"
    both info
    both check
    grep -qx 'ERROR refcount block 1 is outside image' v.err
    both check --output=json
    REPAIR=1 both check -r leaks
    # qemu tries to grow the file to an exabyte first; both end clean
    cp t.qcow2 v.qcow2
    vd check -r all v.qcow2 >out 2>err
    qcheck v.qcow2
}
case_run "damaged: a refcount block outside the image (060)" t_damage_refblock_outside

t_damage_refblock_past_end() {
    # qemu-iotests 108: a refcount block named just past the end of the
    # file, its own count set (clean once the file holds it) or not
    new_image
    poke t.qcow2 $((RT + 8)) "\x00\x00\x00\x00\x00\x10\x00\x00"
    cp t.qcow2 unset.qcow2
    poke t.qcow2 $((RB + 32)) "\x00\x01"
    both check
    REPAIR=1 both check -r all
    grep -qx 'Repairing refcount block 1 is outside image' v.err
    same_images
    cp unset.qcow2 t.qcow2
    REPAIR=1 both check -r all
    grep -qx 'Repairing cluster 16 refcount=1 reference=0' v.err
    same_images
}
case_run "damaged: a refcount block just past the end of the file (108)" t_damage_refblock_past_end

t_damage_counts() {
    # a count too high on a data cluster (leak, and its COPIED flag wrong)
    new_image
    qio qcow2 t.qcow2 "write -P 3 0 64k"
    poke t.qcow2 $((RB + 10)) "\x00\x02"
    check_all
    # a count past the end of the file is not looked at, as by qemu-img
    cp t.qcow2 q.qcow2
    new_image
    qio qcow2 t.qcow2 "write -P 3 0 64k"
    poke t.qcow2 $((RB + 12)) "\x00\x01"
    check_all
}
case_run "damaged: refcounts too high, in and past the file" t_damage_counts

t_damage_truncated() {
    # a file cut short: in its data, inside an L2 table, before the L2 table
    new_image
    qio qcow2 t.qcow2 "write -P 1 0 1M"
    cp t.qcow2 base.qcow2
    truncate -s 300k t.qcow2
    both info
    both check
    grep -c '^ERROR: counting reference for region exceeding the end of the file' v.err | grep -qx 16
    both check --output=json
    REPAIR=1 both check -r leaks
    cp base.qcow2 t.qcow2
    truncate -s 200k t.qcow2
    both info
    both check
    both check --output=json
    REPAIR=1 both check -r leaks
    # qemu leaves these as they are (exit 2); vdisk drops the mappings to
    # what is gone, which read as zeroes before and after
    for size in 300k 200k; do
        cp base.qcow2 v.qcow2
        truncate -s $size v.qcow2
        qemu-img convert -O raw v.qcow2 before.raw
        expect_exit 0 vd check -r all v.qcow2 >out
        qcheck v.qcow2
        qemu-img convert -O raw v.qcow2 after.raw
        cmp before.raw after.raw
    done
}
case_run "damaged: a truncated image" t_damage_truncated

t_damage_truncated_tables() {
    # cut inside the refcount block, before it, inside the refcount table:
    # the L1 table is gone. qemu-img reads the missing part as zeroes; so
    # do info and check, and reading the disk is refused, not zeroes.
    for size in 150k 100k 65k; do
        new_image
        qio qcow2 t.qcow2 "write -P 1 0 1M"
        truncate -s $size t.qcow2
        both info
        both info --output=json
        both check
        both check --output=json
        fails_cleanly vd convert -O raw t.qcow2 out.raw
    done
}
case_run "damaged: a file cut before its L1 table" t_damage_truncated_tables

t_damage_refcount_table_header() {
    # no refcount table (size 0): qemu-img check counts every cluster as
    # unreferenced by it, info refuses; a table at offset 0 (the header
    # read as the table): both work
    new_image
    poke t.qcow2 56 "\x00\x00\x00\x00"
    both check
    both check --output=json
    expect_exit 1 vd info t.qcow2 2>err
    grep -q "Image does not contain a reference count table" err
    REPAIR=1 both check -r leaks
    REPAIR=1 both check -r all
    same_images
    # no table at all (offset and size 0, qemu-iotests 108): -r all
    # rebuilds it
    new_image
    qio qcow2 t.qcow2 "write -P 7 0 64k"
    poke t.qcow2 48 "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    both check
    REPAIR=1 both check -r all
    same_images
    qio qcow2 v.qcow2 "read -P 7 0 64k"
    new_image
    poke t.qcow2 48 "\x00\x00\x00\x00\x00\x00\x00\x00"
    both info
    both check
    grep -qx 'ERROR refcount table entry 0 has reserved bits set' v.err
    both check --output=json
}
case_run "damaged: no refcount table, or one on the header (060)" t_damage_refcount_table_header

# ---- subclusters (extended L2, qemu-iotests 271) ----

# unaligned_subcluster_image ZEROED: qemu-iotests 271's damaged entry: a
# backing file of 0xff, 2 KiB of 0x01 written at 4 KiB (with ZEROED=yes
# then zeroed again, so no subcluster is allocated), and the L2 entry's
# offset made unaligned.
unaligned_subcluster_image() {
    qemu-img create -q -f raw t.base 128k
    qio raw t.base "write -P 0xff 0 128k"
    qemu-img create -q -f qcow2 -o extended_l2=on -F raw -b t.base t.qcow2
    qio qcow2 t.qcow2 "write -P 1 4k 2k"
    if [[ $1 == yes ]]; then qio qcow2 t.qcow2 "write -z 4k 2k"; fi
    poke t.qcow2 $((L2 + 6)) "\x02"
}

t_subcluster_repair_unallocated() {
    unaligned_subcluster_image yes
    both check
    grep -qx 'ERROR offset=50200: Preallocated cluster is not properly aligned; L2 entry corrupted.' v.err
    REPAIR=1 both check -r all
    same_images
    # what the guest read before: the backing file around 2 KiB of zeroes
    qio qcow2 v.qcow2 "read -P 0xff 0 4k" "read -P 0 4k 2k" "read -P 0xff 6k 122k"
}
case_run "subclusters: an unaligned entry with none allocated is repaired as by qemu-img (271)" t_subcluster_repair_unallocated

t_subcluster_repair_allocated() {
    unaligned_subcluster_image no
    both check
    both check --output=json
    # qemu cannot repair this one (nor read it); vdisk drops the lost
    # subcluster, which reads as zeroes, and keeps the others reading the
    # backing file, as they did
    cp t.qcow2 v.qcow2
    vd check -r all v.qcow2 >out 2>err
    qcheck v.qcow2
    qio qcow2 v.qcow2 "read -P 0xff 0 4k" "read -P 0 4k 2k" "read -P 0xff 6k 122k"
}
case_run "subclusters: an unaligned entry with data: only the lost subcluster reads as zeroes (271)" t_subcluster_repair_allocated

finish
