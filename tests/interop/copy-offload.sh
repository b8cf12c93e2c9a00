#!/usr/bin/env bash
# Copy offload: convert copies data that lies plainly in the source file
# into a raw or qcow2 target inside the kernel (copy_file_range, and on XFS
# shared extents through FICLONERANGE), and --no-copy-offload copies it
# through vdisk's buffers. Both paths give the same guest content and the
# same allocation (qemu-img map), zero blocks stay holes, and the target is
# synced after the copy as after writes.
#
# The XFS cases (root, mkfs.xfs, losetup) make a reflink XFS in a file on a
# loop device, mounted inside a mount namespace of this script's own so
# nothing reaches the host, and show that the target shares its extents with
# the source (filefrag -v: "shared"); the device is unmounted and detached
# by name at the end, also on failure. Without them those cases are skipped
# with the reason.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

# src.raw: 24 MiB, every other 64 KiB written (text-like and random), some
# explicit zero blocks inside the data, a hole at the end.
make_source() {
    "$PY" - "$1" <<'PY'
import random, sys
r, C = random.Random(7), 1 << 16
with open(sys.argv[1], "wb") as f:
    f.truncate(24 << 20)
    for i in range(0, (20 << 20) // C, 2):
        f.seek(i * C)
        if i % 10 == 4:
            f.write(b"\0" * C)                       # allocated zeroes
        elif i % 3 == 0:
            f.write((b"%08d log line\n" % i) * (C // 16))
        else:
            block = bytearray(r.randbytes(C))
            block[4096:8192] = bytes(4096)           # a zero block inside data
            f.write(block)
PY
}

# sources FMT...: src.FMT from src.raw by qemu-img.
sources() {
    make_source src.raw
    local f
    for f in "$@"; do
        [[ $f == raw ]] || qemu-img convert -f raw -O "$f" src.raw "src.$f"
    done
}

# map_of IMAGE FMT [data]: where data and zeroes lie (not where in the
# file), neighbours alike merged; with "data" only where data is allocated.
map_of() { qemu-img map --output=json -f "$2" "$1" | "$PY" -c '
import json, sys
runs = []
for e in json.load(sys.stdin):
    key = (e["data"],) if sys.argv[1:] == ["data"] else (e["data"], e["zero"])
    if runs and runs[-1][2] == key and runs[-1][0] + runs[-1][1] == e["start"]:
        runs[-1][1] += e["length"]
    else:
        runs.append([e["start"], e["length"], key])
for r in runs:
    print(*r)' ${3:-}; }

# both_paths SRC_FMT DST_FMT: offload on and off give equal content and map.
both_paths() {
    local s=$1 d=$2
    sources "$s"
    vd convert -q -f "$s" -O "$d" "src.$s" "on.$d"
    vd convert -q --no-copy-offload -f "$s" -O "$d" "src.$s" "off.$d"
    qemu-img compare -q -f raw -F "$d" src.raw "on.$d"
    qemu-img compare -q -s -f "$d" -F "$d" "off.$d" "on.$d"
    [[ $(map_of "on.$d" "$d") == $(map_of "off.$d" "$d") ]]
    if [[ $d == qcow2 ]]; then qemu-img check -q "on.$d"; fi
    # no zeroes written: the explicit zero blocks stay holes
    (($(du -k "on.$d" | cut -f1) <= $(du -k "off.$d" | cut -f1) + 64))
}
for p in raw:raw raw:qcow2 qcow2:raw qcow2:qcow2 vdi:qcow2 vmdk:qcow2 vmdk:raw; do
    case_run "${p/:/ → }: offload on and off give the same image" both_paths "${p%:*}" "${p#*:}"
done

# Without zero detection (-S 0) the data never passes through vdisk's
# memory: the kernel copies it (or shares it), and it is synced after.
# With zero detection the data is read anyway, and where the file system
# cannot share extents it is written from memory (the kernel's copy would
# read it a second time).
offloaded_and_synced() {
    command -v strace >/dev/null || { echo "strace not found (scripts/deps.sh installs it)"; return 1; }
    sources qcow2
    timeout -k 5 "$VDISK_TIMEOUT" strace -f -y -s 0 -o trace \
        -e trace=openat,pwrite64,copy_file_range,ioctl,fdatasync,fsync,rename \
        "$VDISK" convert -q -S 0 -f qcow2 -O raw src.qcow2 out.raw
    grep -Eq 'copy_file_range\(.*out\.raw.*= [1-9]|FICLONERANGE.* = 0' trace
    "$PY" "$TESTS_DIR/interop/strace-syncs.py" trace synced out.raw
    qemu-img compare -q -f raw -F raw src.raw out.raw
    timeout -k 5 "$VDISK_TIMEOUT" strace -f -y -s 0 -o trace2 -e trace=copy_file_range,ioctl \
        "$VDISK" convert -q -S 0 --no-copy-offload -f qcow2 -O raw src.qcow2 out2.raw
    not grep -Eq 'copy_file_range|FICLONERANGE' trace2
    cmp out.raw out2.raw
}
case_run "-S 0: qcow2 → raw goes file to file and is synced after" offloaded_and_synced

# A copy does not fill the page cache with its target: writeback starts
# every few tens of MiB and what is written back is dropped, so of 256 MiB
# written far less stays cached (all of it did before).
page_cache_bounded() {
    command -v fincore >/dev/null || { echo "fincore not found (util-linux)"; return 1; }
    "$PY" -c '
import random, sys
r = random.Random(3)
with open("src.raw", "wb") as f:
    for i in range(256):
        f.write(r.randbytes(1 << 20))'
    qemu-img convert -f raw -O qcow2 src.raw src.qcow2
    vd convert -q -f qcow2 -O raw src.qcow2 out.raw
    local cached
    cached=$(fincore -b -n -o RES out.raw)
    echo "cached: $cached bytes of out.raw"
    ((cached < 128 << 20))
    qemu-img compare -q -f raw -F raw src.raw out.raw
}
case_run "a copy leaves little of its target in the page cache" page_cache_bounded

# A source the copy finds outside the page cache is read through without
# staying in it; one found cached stays cached.
source_cache() {
    command -v fincore >/dev/null || { echo "fincore not found (util-linux)"; return 1; }
    "$PY" -c '
import random
r = random.Random(4)
with open("src.raw", "wb") as f:
    for i in range(256):
        f.write(r.randbytes(1 << 20))'
    qemu-img convert -f raw -O qcow2 src.raw src.qcow2
    local f cached
    for f in raw qcow2; do
        # written back first: dirty pages cannot be dropped
        "$PY" -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "src.$f"
        vd convert -q -O qcow2 "src.$f" "cold-$f.qcow2"
        cached=$(fincore -b -n -o RES "src.$f")
        echo "cold $f source: $cached bytes cached after"
        ((cached < 64 << 20))
        cat "src.$f" >/dev/null
        vd convert -q -O raw "src.$f" "warm-$f.raw"
        cached=$(fincore -b -n -o RES "src.$f")
        echo "warm $f source: $cached bytes cached after"
        # all of it but what the kernel may reclaim meanwhile on a busy
        # machine (a dropped warm source would leave next to nothing)
        ((cached >= 224 << 20))
        qemu-img compare -q -f raw -F qcow2 src.raw "cold-$f.qcow2"
    done
}
case_run "a cold source does not stay in the page cache, a warm one does" source_cache

# Compressed and encrypted data never goes file to file.
transformed_data() {
    make_source src.raw
    qemu-img convert -c -f raw -O qcow2 src.raw src-c.qcow2
    vd convert -q -f qcow2 -O qcow2 src-c.qcow2 out.qcow2
    qemu-img compare -q -f raw -F qcow2 src.raw out.qcow2
    printf secret >pass
    vd convert -q --object secret,id=s0,file=pass -o encrypt.format=luks,encrypt.key-secret=s0 \
        -f raw -O qcow2 src.raw enc.qcow2
    qemu-img compare -q --object secret,id=s0,file=pass \
        --image-opts driver=raw,file.filename=src.raw \
        "driver=qcow2,encrypt.key-secret=s0,file.filename=enc.qcow2"
}
case_run "compressed and encrypted images convert as before" transformed_data

# ---- on XFS with reflink ----

xfs_reason() {
    ((EUID == 0)) || { echo "needs root (a loop device and a mount)"; return; }
    local p
    for p in mkfs.xfs losetup filefrag unshare; do
        command -v "$p" >/dev/null || { echo "$p not found (scripts/deps.sh installs xfsprogs)"; return; }
    done
    if [[ -z ${VDISK_OFFLOAD_NS:-} ]] && ! unshare --mount --propagation private true 2>/dev/null; then
        echo "cannot make a private mount namespace"
        return
    fi
}
reason=$(xfs_reason)
if [[ -n $reason ]]; then
    echo "# SKIP the XFS cases: $reason"
    finish
    exit
fi
if [[ -z ${VDISK_OFFLOAD_NS:-} ]]; then
    # The first part ran here; the XFS part runs in a mount namespace.
    echo "# the XFS cases, in a private mount namespace:"
    VDISK_OFFLOAD_NS=1 CASES='^xfs' unshare --mount --propagation private -- "$0" ||
        { FAILED=$((FAILED + 1)) && FAILED_NAMES+=("the XFS cases"); }
    finish
    exit
fi

XFS_IMG=$T/xfs.img XFS=$T/xfs XFS_DEV=""
xfs_cleanup() {
    if mountpoint -q "$XFS"; then umount "$XFS" || umount -l "$XFS"; fi
    [[ -n $XFS_DEV ]] && losetup -d "$XFS_DEV" 2>/dev/null
    rm -rf "$T"
}
trap xfs_cleanup EXIT
truncate -s 1G "$XFS_IMG"
mkdir -p "$XFS"
if ! mkfs.xfs -q -m reflink=1 "$XFS_IMG" || ! XFS_DEV=$(losetup -f --show "$XFS_IMG") ||
    ! mount -t xfs "$XFS_DEV" "$XFS"; then
    echo "# SKIP the XFS cases: cannot make and mount an XFS file system on a loop device"
    finish
    exit
fi

# shares FILE: some extent of FILE is shared with another file.
shares() { filefrag -v "$1" >"$1.extents" && grep -q shared "$1.extents"; }

# xfs_clone SRC_FMT DST_FMT shared|copied [CREATE_OPTIONS]
xfs_clone() {
    local s=$1 d=$2 o=(${4:+-o "$4"})
    cd "$XFS" && mkdir "$s-$d" && cd "$s-$d"
    sources "$s"
    vd convert -q "${o[@]}" -f "$s" -O "$d" "src.$s" "on.$d"
    vd convert -q "${o[@]}" --no-copy-offload -f "$s" -O "$d" "src.$s" "off.$d"
    if [[ $3 == shared ]]; then shares "on.$d"; else not shares "on.$d"; fi
    not shares "off.$d"
    qemu-img compare -q -f raw -F "$d" src.raw "on.$d"
    qemu-img compare -q -s -f "$d" -F "$d" "off.$d" "on.$d"
    [[ $(map_of "on.$d" "$d") == $(map_of "off.$d" "$d") ]]
    if [[ $d == qcow2 ]]; then qemu-img check -q "on.$d"; fi
    cmp "on.$d" "off.$d" || [[ $d == qcow2 ]] # a raw target is the same file, byte for byte
}
for p in raw:raw raw:qcow2 qcow2:raw vmdk:qcow2; do
    case_run "xfs: ${p/:/ → } shares the source's extents" xfs_clone "${p%:*}" "${p#*:}" shared
done
# (into the same options a qcow2 is cloned whole: xfs_whole)
case_run "xfs: qcow2 → qcow2 of other clusters shares the source's extents" \
    xfs_clone qcow2 qcow2 shared cluster_size=128k
# qemu-img's VDI keeps its blocks 512-byte aligned in the file (data at
# 1536), which no 4 KiB-block file system shares: copied by the kernel.
case_run "xfs: vdi → qcow2 with unaligned blocks is copied, not shared" xfs_clone vdi qcow2 copied

# Nothing to convert: a qcow2 that is what a convert would make is cloned
# whole (one FICLONE); one with a snapshot, or into other options, is copied
# cluster by cluster and loses the snapshot as a convert does.
xfs_whole() {
    command -v strace >/dev/null || { echo "strace not found (scripts/deps.sh installs it)"; return 1; }
    cd "$XFS" && mkdir whole && cd whole
    sources qcow2
    strace -f -o trace -e trace=ioctl,copy_file_range,pwrite64 \
        "$VDISK" convert -q -f qcow2 -O qcow2 src.qcow2 clone.qcow2
    grep -q 'FICLONE,' trace
    not grep -Eq 'FICLONERANGE|copy_file_range' trace
    shares clone.qcow2
    qemu-img compare -q -f raw -F qcow2 src.raw clone.qcow2
    qemu-img check -q clone.qcow2
    # Allocated as the source; a range the source stores as unwritten
    # extents (qemu-img's preallocation) is a hole in the clone, which
    # qemu-img map may call zero where the source's page cache says data.
    [[ $(map_of clone.qcow2 qcow2 data) == $(map_of src.qcow2 qcow2 data) ]]

    # -o that changes the image: cluster by cluster
    strace -f -o trace2 -e trace=ioctl "$VDISK" convert -q -o cluster_size=128k -O qcow2 \
        src.qcow2 big.qcow2
    not grep -q 'FICLONE,' trace2
    grep -q 'FICLONERANGE' trace2
    qemu-img compare -q -f raw -F qcow2 src.raw big.qcow2
    qemu-img check -q big.qcow2

    # a snapshot: not carried over
    cp --reflink=never src.qcow2 snap.qcow2
    qemu-img snapshot -c before snap.qcow2
    strace -f -o trace3 -e trace=ioctl "$VDISK" convert -q -O qcow2 snap.qcow2 out.qcow2
    not grep -q 'FICLONE,' trace3
    [[ -z $(qemu-img snapshot -l out.qcow2) ]]
    qemu-img compare -q -f raw -F qcow2 src.raw out.qcow2

    # --no-copy-offload copies every byte
    strace -f -o trace4 -e trace=ioctl,copy_file_range \
        "$VDISK" convert -q --no-copy-offload -O qcow2 src.qcow2 off.qcow2
    not grep -Eq 'FICLONE|copy_file_range' trace4
    not shares off.qcow2
}
case_run "xfs: a qcow2 with nothing to convert is cloned whole" xfs_whole

# Shared extents stay the source's when the target is written afterwards.
xfs_write_after() {
    cd "$XFS" && mkdir after && cd after
    sources qcow2
    vd convert -q -f qcow2 -O qcow2 src.qcow2 clone.qcow2
    qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' clone.qcow2 >/dev/null
    qemu-img compare -q -f raw -F qcow2 src.raw src.qcow2
    not qemu-img compare -q -f raw -F qcow2 src.raw clone.qcow2
    qemu-img check -q clone.qcow2
}
case_run "xfs: writing a clone leaves its source as it was" xfs_write_after

finish
