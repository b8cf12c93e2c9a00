#!/usr/bin/env bash
# Files that are not what they seem: a FIFO or a device named inside an
# image is refused at once (never waited on, never opened as the image's
# data); a symlink or a folder where a new vmdk's extent file goes is
# refused (never followed), and a failed create removes only the files it
# made; a secret given on the command line (--object secret,data=) draws
# one warning that ps shows it.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

# A qcow2 whose external data file is a FIFO, and a vmdk whose extent is
# one: every command fails at once, naming the FIFO, instead of waiting
# for a writer that never comes.
fifo_named_inside() {
    qemu-img create -q -f qcow2 -o data_file=vm.raw vm.qcow2 1M
    rm vm.raw
    mkfifo vm.raw
    printf '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 2048 FLAT "disk-flat.vmdk" 0\n' >disk.vmdk
    mkfifo disk-flat.vmdk
    local f
    for f in vm.qcow2 disk.vmdk; do
        VDISK_TIMEOUT=10 fails_cleanly vd info "$f" 2>err
        grep -q 'is a FIFO, not a regular file' err
        VDISK_TIMEOUT=10 fails_cleanly vd convert -O raw "$f" out.raw 2>err
        grep -q 'is a FIFO' err
        [[ ! -e out.raw ]]
    done
    VDISK_TIMEOUT=10 fails_cleanly vd check vm.qcow2
    # opening for writing is refused the same way
    VDISK_TIMEOUT=10 fails_cleanly vd resize vm.qcow2 2M 2>err
    grep -q 'is a FIFO' err
}

# A device named inside an image (here a backing file) is refused too; a
# device the user names on the command line is still read.
device_named_inside() {
    local dev
    for dev in /dev/loop0 /dev/null; do [[ -b $dev || -c $dev ]] && break; done
    qemu-img create -q -f qcow2 -u -b "$dev" -F raw top.qcow2 1M
    VDISK_TIMEOUT=10 fails_cleanly vd info --backing-chain top.qcow2 2>err
    grep -qE 'is a (block|character) device, not a regular file' err
    if [[ -b /dev/loop0 && -r /dev/loop0 ]]; then
        vd info /dev/loop0 >out
        grep -q 'file format: raw' out
    fi
}

# A symlink named like the flat extent: refused, its target untouched, and
# nothing of the new disk left behind.
flat_extent_symlink() {
    printf 'precious' >victim
    ln -s victim disk-flat.vmdk
    fails_cleanly vd create -q -f vmdk -o subformat=monolithicFlat disk.vmdk 1M 2>err
    grep -q 'symbolic link' err
    [[ $(cat victim) == precious ]]
    [[ -L disk-flat.vmdk ]]
    [[ ! -e disk.vmdk ]]
    # without the link the same create works, and qemu-img reads it
    rm disk-flat.vmdk
    vd create -q -f vmdk -o subformat=monolithicFlat disk.vmdk 1M
    [[ $(qinfo disk.vmdk virtual-size) == 1048576 ]]
    [[ $(cat victim) == precious ]]
}

# A split create that fails at its second extent: the first, made by this
# create, is removed; files that were there before stay, unchanged.
split_failure_keeps_existing() {
    printf 'old first extent' >disk-f001.vmdk
    mkdir disk-f002.vmdk
    printf 'old descriptor' >real.vmdk
    ln -s real.vmdk disk.vmdk
    fails_cleanly vd create -q -f vmdk -o subformat=twoGbMaxExtentFlat disk.vmdk 3G
    [[ $(cat disk-f001.vmdk) == 'old first extent' ]]
    [[ -d disk-f002.vmdk ]]
    [[ ! -e disk-f003.vmdk ]]
    # the file named was there before: it keeps its name (emptied, as
    # qemu-img create leaves it), and so does the link to it
    [[ -L disk.vmdk && -f real.vmdk && ! -s real.vmdk ]]
    rm disk.vmdk real.vmdk
    # with nothing there before, the first extent this create made goes
    mkdir keep
    ln -s keep disk-s002.vmdk
    fails_cleanly vd create -q -f vmdk -o subformat=twoGbMaxExtentSparse disk.vmdk 3G
    [[ ! -e disk-s001.vmdk && ! -e disk.vmdk && -L disk-s002.vmdk ]]
    [[ -z $(ls keep) ]]
}

# Overwriting existing extent files (what qemu-img create does) still works.
split_overwrite() {
    qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse disk.vmdk 3G
    qio vmdk disk.vmdk "write -P 7 0 64k"
    vd create -q -f vmdk -o subformat=twoGbMaxExtentSparse disk.vmdk 3G
    qemu-img check -q -f vmdk disk.vmdk
    qemu-io -f vmdk -c "read -P 0 0 64k" disk.vmdk | grep -q 'read 65536/65536'
}

# data= on the command line: one warning, whatever the number of such
# objects; file= draws none. The secret itself works either way.
secret_data_warning() {
    printf 'pw-one' >pass
    vd create -q -f luks --object secret,id=k,data=pw-one -o key-secret=k,iter-time=10 \
        a.luks 1M 2>err
    grep -c 'warning:.*command line.*file=' err | grep -qx 1
    not grep -q 'pw-one' err
    vd info --object secret,id=k,data=pw-one --object secret,id=j,data=x,,y \
        --image-opts driver=luks,key-secret=k,file.filename=a.luks >/dev/null 2>err
    grep -c 'warning:' err | grep -qx 1
    vd info --object "secret,id=k,file=$PWD/pass" --image-opts \
        driver=luks,key-secret=k,file.filename=a.luks >/dev/null 2>err
    not grep -q 'warning' err
    # a value that merely contains "data=" is no inline secret
    vd info --object "secret,id=k,file=$PWD/pass,,data=x" --image-opts \
        driver=luks,key-secret=k,file.filename=a.luks >/dev/null 2>err || true
    not grep -q 'warning' err
    qemu-img info --object secret,id=k,file=pass --image-opts \
        driver=luks,key-secret=k,file.filename=a.luks >/dev/null
}

case_run fifo-named-inside fifo_named_inside
case_run device-named-inside device_named_inside
case_run flat-extent-symlink flat_extent_symlink
case_run split-failure-keeps-existing split_failure_keeps_existing
case_run split-overwrite split_overwrite
case_run secret-data-warning secret_data_warning
finish
