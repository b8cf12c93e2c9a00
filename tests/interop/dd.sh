#!/usr/bin/env bash
# vdisk dd against qemu-img dd: the same operands on the same inputs give
# outputs of the same format, virtual size and content (qemu-img compare
# -s), and bad operands the same exit status.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

# same_dd [OPTIONS] OPERANDS... (without of=): qemu-img dd writes q.img,
# vdisk dd v.img; both succeed, or both fail with the same status.
same_dd() {
    local qrc=0 vrc=0 fmt=raw a prev=
    for a in "$@"; do
        if [[ $prev == -O ]]; then fmt=$a; fi
        prev=$a
    done
    rm -f q.img v.img
    qemu-img dd "$@" of=q.img 2>q.err || qrc=$?
    vd dd "$@" of=v.img 2>v.err || vrc=$?
    ((qrc == vrc)) || { echo "dd $*: qemu-img exit $qrc, vdisk $vrc"; cat q.err v.err; return 1; }
    # qemu-img says "cannot skip" and still succeeds; so must vdisk.
    if [[ -s q.err ]]; then [[ -s v.err ]] || { echo "dd $*: no message"; return 1; }; fi
    ((qrc == 0)) || return 0
    if [[ $fmt != raw ]]; then
        [[ $(qinfo v.img format) == "$fmt" ]] || { echo "dd $*: output is $(qinfo v.img format), not $fmt"; return 1; }
    fi
    [[ $(finfo v.img "$fmt" virtual-size) == $(finfo q.img "$fmt" virtual-size) ]] ||
        { echo "dd $*: virtual size $(finfo v.img "$fmt" virtual-size), qemu-img's $(finfo q.img "$fmt" virtual-size)"; return 1; }
    qemu-img compare -q -f "$fmt" -F "$fmt" q.img v.img || { echo "dd $*: content differs"; return 1; }
    if [[ $fmt == qcow2 ]]; then qcheck v.img; fi
    if [[ $fmt == raw ]]; then cmp q.img v.img; fi
}

# finfo FILE FMT FIELD: a field of qemu-img info, the format given (a raw
# copy of a qcow2 header would probe as qcow2).
finfo() { qemu-img info -f "$2" --output=json "$1" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$3"; }

inputs() {
    pattern_raw in.raw 12M
    head -c 10000 /dev/urandom >odd.bin
    qemu-img convert -q -f raw -O qcow2 in.raw in.qcow2
    qemu-img create -q -f qcow2 -b in.qcow2 -F qcow2 top.qcow2
    qio qcow2 top.qcow2 "write -P 7 1M 100k" "write -z 4M 1M"
    qemu-img convert -q -f raw -O vdi in.raw in.vdi
    qemu-img convert -q -f raw -O vmdk in.raw in.vmdk
}

copies() {
    inputs
    local src
    for src in in.raw in.qcow2 top.qcow2 in.vdi in.vmdk odd.bin; do
        same_dd if="$src"
        same_dd if="$src" bs=1M
        same_dd if="$src" bs=4k count=100
        same_dd if="$src" bs=1k count=3 skip=1
        same_dd if="$src" bs=3000 skip=2
        same_dd if="$src" bs=64k skip=10 count=150
        same_dd if="$src" bs=7 count=3
        same_dd if="$src" skip=1k
        same_dd if="$src" count=0
        same_dd -O qcow2 if="$src" bs=64k skip=3 count=40
        same_dd -O vdi if="$src" bs=1M count=5
        same_dd -O vmdk if="$src" bs=3000 skip=1
    done
    same_dd -f raw if=in.qcow2 bs=1k count=5
    same_dd -f qcow2 if=top.qcow2 bs=1M skip=1 count=3
    same_dd if=in.raw bs=1M bs=512 count=2k
    same_dd if=odd.bin if=in.raw bs=1G
    same_dd if=in.raw bs=2147483647
    same_dd if=in.raw bs=1k count=9223372036854775807
}
case_run "copies of raw, qcow2, vdi and vmdk inputs" copies

# --image-opts and --object name an encrypted input (the output is a
# plain file name), and -U reads an image another process holds.
options() {
    printf pw >pw.txt
    # Made by vdisk: qemu-img's key-slot timing fails now and then on a busy
    # machine ("Unable to get accurate CPU usage").
    vd create -q --object secret,id=s,file=pw.txt -f qcow2 \
        -o encrypt.format=luks,encrypt.key-secret=s enc.qcow2 10M
    qemu-io --object secret,id=s,file=pw.txt \
        --image-opts driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=s -c "write -P 5 1M 1M" >/dev/null
    same_dd --object secret,id=s,file=pw.txt --image-opts \
        if=driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=s bs=1M count=3
    cmp -n 1048576 -i 1048576:0 v.img <(head -c 1048576 /dev/zero | tr '\0' '\5')
    inputs
    # qemu-io holds in.qcow2 for writing meanwhile; without -U both refuse.
    qemu_io_hold qcow2 in.qcow2
    same_dd -U if=in.qcow2 bs=64k count=5
    same_dd if=in.qcow2 bs=64k count=5
    qemu_io_release
    grep -qi lock v.err
}
case_run "encrypted input by --image-opts, -U" options

skip_past_end() {
    inputs
    same_dd if=in.raw skip=100M
    same_dd if=in.raw bs=1M skip=13
    same_dd if=in.raw bs=1M count=2 skip=3
    grep -q "cannot skip" v.err
    [[ $(finfo v.img raw virtual-size) == 0 ]]
}
case_run "skip past the end makes an empty output" skip_past_end

refusals() {
    inputs
    same_dd
    same_dd if=in.raw bs=0
    same_dd if=in.raw bs=3G
    same_dd if=in.raw bs=x
    same_dd if=in.raw count=-1
    same_dd if=in.raw skip=y
    same_dd if=in.raw foo=1
    same_dd if=in.raw conv=notrunc
    same_dd if=in.raw extra
    same_dd if=missing.raw
    same_dd -O nosuchformat if=in.raw
    expect_exit 1 qemu-img dd if=in.raw 2>/dev/null
    expect_exit 1 vd dd if=in.raw
    expect_exit 1 qemu-img dd if=in.raw of=/nonexistent/dir/x 2>/dev/null
    expect_exit 1 vd dd if=in.raw of=/nonexistent/dir/x
}
case_run "refuses what qemu-img refuses" refusals

finish
