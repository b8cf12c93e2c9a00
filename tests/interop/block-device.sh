#!/usr/bin/env bash
# Block devices as raw images, as qemu-img's host_device takes them: a loop
# device over a sparse file is converted into (with -n and without), read
# from, compared and mapped. Its size is its own: never grown, shrunk or
# truncated; a source larger than it is refused naming both, and so is a
# resize. What the source has as zeroes reads zero on a device that held
# other bytes before. qemu-img is the oracle. Each case detaches its loop
# device by its backing file, also when it fails.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs
if (($(id -u) != 0)); then
    echo "not root: loop devices cannot be attached, the block device checks are skipped"
    exit 77
fi
if [[ ! -e /dev/loop-control ]] || ! command -v losetup >/dev/null; then
    echo "no loop devices here (/dev/loop-control or losetup missing): the block device checks are skipped"
    exit 77
fi
probe=$T/probe.img
truncate -s 1M "$probe"
if ! dev=$(losetup -f --show "$probe" 2>/dev/null); then
    echo "losetup cannot attach a loop device here: the block device checks are skipped"
    exit 77
fi
losetup -d "$dev"

# Every loop device a case attached, by its backing file.
detach_all() {
    local f d
    for f in "$T"/case*/device.img; do
        [[ -e $f ]] || continue
        for d in $(losetup -n -O NAME -j "$f" 2>/dev/null); do
            losetup -d "$d" 2>/dev/null || true
        done
    done
}
trap 'detach_all; rm -rf "$T"' EXIT

SIZE=$((64 << 20))

# attach: a loop device over a new sparse device.img of $SIZE bytes in the
# case's directory; its name in $DEV.
attach() {
    truncate -s "$SIZE" device.img
    DEV=$(losetup -f --show device.img)
    trap 'losetup -d "$DEV" 2>/dev/null || true' EXIT
    [[ $(blockdev --getsize64 "$DEV") == "$SIZE" ]]
}

# the device (and its backing file) still has its size.
same_size() {
    [[ $(blockdev --getsize64 "$DEV") == "$SIZE" ]]
    [[ $(stat -c %s device.img) == "$SIZE" ]]
}

# scribble MiB: random bytes over the first MiB mebibytes of the device.
scribble() { dd if=/dev/urandom of="$DEV" bs=1M count="$1" conv=fsync status=none; }

case_vdi_into_device() {
    attach
    scribble 64
    qemu-img create -f vdi src.vdi 64M >/dev/null
    qemu-io -c 'write -P 0x5a 1M 3M' -c 'write -P 0x11 20M 1M' -c 'write -P 0x22 63M 1M' \
        src.vdi >/dev/null
    vd convert src.vdi "$DEV" -n -O raw
    qemu-img compare src.vdi "$DEV"
    qemu-img compare -f vdi -F raw src.vdi device.img
    same_size
}

case_qcow2_into_device() {
    attach
    scribble 48
    qemu-img create -f qcow2 src.qcow2 48M >/dev/null
    qemu-io -c 'write -P 0x33 0 64k' -c 'write -z 1M 2M' -c 'write -P 0x44 40M 5M' \
        src.qcow2 >/dev/null
    vd convert -f qcow2 src.qcow2 "$DEV" -n -O raw
    qemu-img compare src.qcow2 "$DEV"
    same_size
}

# Without -n the device is the new raw image, as qemu-img makes it there.
case_convert_creates_on_device() {
    attach
    scribble 32
    qemu-img create -f qcow2 src.qcow2 32M >/dev/null
    qemu-io -c 'write -P 0x55 3M 1M' src.qcow2 >/dev/null
    vd convert src.qcow2 -O raw "$DEV"
    qemu-img compare src.qcow2 "$DEV"
    same_size
    # any other format would need room past the device's end
    fails_cleanly vd convert src.qcow2 -O qcow2 "$DEV" 2>err
    grep -F "$DEV: is a block device: vdisk makes only raw images on one" err
    qemu-img compare src.qcow2 "$DEV"
}

case_from_device() {
    attach
    qemu-io -f raw -c 'write -P 0x66 0 1M' -c 'write -P 0x77 50M 2M' "$DEV" >/dev/null
    vd info "$DEV" >info
    grep -Fx "virtual size: 64 MiB (67108864 bytes)" info
    vd convert -f raw "$DEV" -O qcow2 out.qcow2
    qemu-img check out.qcow2
    qemu-img compare out.qcow2 "$DEV"
    vd convert -f raw "$DEV" -O vdi out.vdi
    qemu-img compare out.vdi "$DEV"
    vd compare out.qcow2 "$DEV"
    vd map -f raw "$DEV" >map
    qemu-img map -f raw "$DEV" >qmap
    diff qmap map
    same_size
}

case_too_small() {
    attach
    scribble 64
    sum=$(md5sum <"$DEV")
    qemu-img create -f vdi big.vdi 65M >/dev/null
    qemu-io -c 'write -P 0x5a 0 1M' big.vdi >/dev/null
    fails_cleanly vd convert big.vdi "$DEV" -n -O raw 2>err
    grep -F "$DEV" err
    grep -F "big.vdi" err
    fails_cleanly vd convert big.vdi -O raw "$DEV" 2>err
    grep -F "$DEV" err
    same_size
    [[ $(md5sum <"$DEV") == "$sum" ]]
}

case_never_resized() {
    attach
    scribble 64
    sum=$(md5sum <"$DEV")
    fails_cleanly vd resize -f raw "$DEV" 100M 2>err
    grep -F "$DEV: is a block device" err
    fails_cleanly vd resize -f raw --shrink "$DEV" 32M 2>err
    grep -F "$DEV: is a block device" err
    # its own size is a resize that has nothing to do, as for qemu-img
    qemu-img resize -f raw "$DEV" 64M
    vd resize -f raw "$DEV" 64M
    same_size
    [[ $(md5sum <"$DEV") == "$sum" ]]
}

# Under the name qemu-img its refusals are qemu-img's, word for word.
case_qemu_img_voice() {
    attach
    qemu-img create -f qcow2 big.qcow2 65M >/dev/null
    for args in "resize -f raw $DEV 100M" "resize -f raw $DEV 32M" "create -f raw $DEV 100M" \
        "convert -n -O raw big.qcow2 $DEV"; do
        # shellcheck disable=SC2086 # args is a command line
        qemu-img $args >want 2>&1 || echo "exit $?" >>want
        # shellcheck disable=SC2086
        qvd $args >got 2>&1 || echo "exit $?" >>got
        diff want got
    done
    same_size
}

case_run vdi_into_device case_vdi_into_device
case_run qcow2_into_device case_qcow2_into_device
case_run convert_creates_on_device case_convert_creates_on_device
case_run from_device case_from_device
case_run too_small case_too_small
case_run never_resized case_never_resized
case_run qemu_img_voice case_qemu_img_voice
finish
