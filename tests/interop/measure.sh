#!/usr/bin/env bash
# vdisk measure against qemu-img measure: the same stdout (human and JSON)
# for empty images over a matrix of sizes and qcow2 options, for copies of
# raw, qcow2, vdi and vmdk sources (sparse, dense, zero clusters, backing
# chains, snapshots, bitmaps), for LUKS and legacy AES targets, and the
# same exit status for the formats and arguments qemu-img refuses.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

# same_measure ARGS...: vdisk measure and qemu-img measure print the same,
# in both output forms, or both fail with the same exit status.
same_measure() {
    local out qrc vrc
    for out in human json; do
        qrc=0 vrc=0
        qemu-img measure --output=$out "$@" >q.out 2>q.err || qrc=$?
        vd measure --output=$out "$@" >v.out 2>v.err || vrc=$?
        ((qrc == vrc)) || { echo "measure $*: qemu-img exit $qrc, vdisk $vrc"; cat q.err v.err; return 1; }
        diff -u q.out v.out || { echo "measure --output=$out $* differs (qemu-img above)"; return 1; }
        ((qrc == 0)) || [[ -s v.err ]] || { echo "no message: measure $*"; return 1; }
    done
}

# same_refusal ARGS...: both fail with exit 1, vdisk with a message.
same_refusal() {
    expect_exit 1 qemu-img measure "$@" 2>/dev/null
    expect_exit 1 vd measure "$@" 2>err.txt
    [[ -s err.txt ]] || { echo "no message: measure $*"; return 1; }
}

empty_matrix() {
    local size cs
    # 5T with 512-byte clusters has too large an L1 table: both refuse.
    for size in 0 512 1000 1M 1G 100G 1T 5T 1048577; do
        same_measure --size "$size"
        same_measure --size "$size" -O raw
        same_measure --size "$size" -O qcow2
        for cs in 512 4k 64k 1M 2M; do
            same_measure --size "$size" -O qcow2 -o cluster_size=$cs
        done
    done
}
case_run "empty images of many sizes and cluster sizes" empty_matrix

empty_options() {
    local o
    for o in preallocation=off preallocation=metadata preallocation=falloc preallocation=full \
        refcount_bits=1 refcount_bits=2 refcount_bits=8 refcount_bits=32 refcount_bits=64 \
        extended_l2=on extended_l2=on,cluster_size=16k extended_l2=on,cluster_size=2M \
        compat=0.10 compat=1.1 lazy_refcounts=on compression_type=zstd \
        cluster_size=512,refcount_bits=64,preallocation=full \
        cluster_size=4k,extended_l2=off,preallocation=metadata backing_file=x.qcow2; do
        same_measure --size 10G -O qcow2 -o "$o"
        same_measure --size 12345678 -O qcow2 -o "$o"
    done
    same_measure --size 1G -O raw -o preallocation=full
    # qemu's raw measure takes any preallocation value, even a wrong one.
    same_measure --size 1G -O raw -o preallocation=metadata
    same_measure --size 1G -O raw -o preallocation=bogus
    same_measure --size 1G -O qcow2 -o preallocation=bogus
}
case_run "empty qcow2 with each option" empty_options

sources() {
    pattern_raw sparse.raw 24M
    head -c $((8 * 1048576)) /dev/urandom >dense.raw
    qemu-img create -q -f qcow2 q.qcow2 100M
    qio qcow2 q.qcow2 "write -P 1 0 5M" "write -z 10M 2M" "write -P 2 50M 100k" \
        "write -P 3 99M 1M" "write -P 0 60M 64k"
    qemu-img create -q -f qcow2 -b q.qcow2 -F qcow2 top.qcow2
    qio qcow2 top.qcow2 "write -P 4 20M 300k" "write -z 0 1M"
    qemu-img create -q -f qcow2 -o cluster_size=4k small.qcow2 3M
    qio qcow2 small.qcow2 "write -P 5 4097 1"
    qemu-img convert -f raw -O vdi sparse.raw v.vdi
    qemu-img convert -f raw -O vmdk sparse.raw m.vmdk
    qemu-img convert -f raw -O vmdk -o subformat=streamOptimized sparse.raw s.vmdk
    qemu-img create -q -f raw odd.raw 1000
    qemu-img convert -c -f raw -O qcow2 sparse.raw comp.qcow2
    # extended L2: zero and data subclusters in the same cluster
    qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=128k ext.qcow2 10M
    qio qcow2 ext.qcow2 "write -P 1 0 8k" "write -z 128k 64k" "write -P 2 300k 4k" \
        "write -P 3 1M 256k" "write -z 1088k 4k"
    # an overlay that discards and zeroes over its backing file's data
    qemu-img create -q -f qcow2 -b q.qcow2 -F qcow2 ov.qcow2
    qio qcow2 ov.qcow2 "discard 0 1M" "write -z 2M 1M" "write -P 6 70M 64k"
}

copies() {
    sources
    local src cs
    for src in sparse.raw dense.raw q.qcow2 top.qcow2 small.qcow2 v.vdi m.vmdk s.vmdk odd.raw \
        comp.qcow2 ext.qcow2 ov.qcow2; do
        same_measure "$src"
        same_measure -O raw "$src"
        for cs in 512 4k 64k 2M; do
            same_measure -O qcow2 -o cluster_size=$cs "$src"
        done
        same_measure -O qcow2 -o preallocation=falloc "$src"
        same_measure -O qcow2 -o extended_l2=on,refcount_bits=8 "$src"
        same_measure -O qcow2 -o backing_file=q.qcow2 "$src"
        same_measure -O qcow2 -o compat=0.10 "$src"
    done
    same_measure -f raw -O qcow2 q.qcow2
    same_measure -f qcow2 -O qcow2 top.qcow2
}
case_run "copies of raw, qcow2, vdi and vmdk sources" copies

snapshots_and_bitmaps() {
    qemu-img create -q -f qcow2 q.qcow2 100M
    qio qcow2 q.qcow2 "write -P 1 0 5M"
    qemu-img snapshot -c s1 q.qcow2
    qio qcow2 q.qcow2 "write -P 2 80M 1M"
    same_measure -O qcow2 -l s1 q.qcow2
    same_measure -O qcow2 -l snapshot.name=s1 q.qcow2
    same_measure -O qcow2 -l snapshot.id=1 q.qcow2
    same_measure -O qcow2 q.qcow2
    qemu-img bitmap --add q.qcow2 b0
    qemu-img bitmap --add -g 512 q.qcow2 a-much-longer-bitmap-name-that-needs-a-bigger-entry
    qemu-img bitmap --add -g 1M --disable q.qcow2 b2
    same_measure -O qcow2 q.qcow2
    same_measure -O qcow2 -o cluster_size=512 q.qcow2
    same_measure -O qcow2 -o cluster_size=2M q.qcow2
    same_measure -O qcow2 -o compat=0.10 q.qcow2
    same_measure -O raw q.qcow2
    # The numbers qemu-img 7.2 gives for this case, in case both drift.
    vd measure --output=json -O qcow2 -o cluster_size=512 q.qcow2 >m.json
    [[ $(json m.json 'd["bitmaps"]') == $(qemu-img measure --output=json -O qcow2 -o cluster_size=512 q.qcow2 | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["bitmaps"])') ]]
    (($(json m.json 'd["bitmaps"]') > 0))
}
case_run "internal snapshots and bitmaps of a qcow2 source" snapshots_and_bitmaps

# An encrypted source named by --image-opts and --object, and -U on an
# image another process holds.
options() {
    printf pw >pw.txt
    # Made by vdisk: qemu-img's key-slot timing fails now and then on a busy
    # machine ("Unable to get accurate CPU usage").
    vd create -q --object secret,id=s,file=pw.txt -f qcow2 \
        -o encrypt.format=luks,encrypt.key-secret=s enc.qcow2 10M
    qemu-io --object secret,id=s,file=pw.txt \
        --image-opts driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=s -c "write 1M 1M" >/dev/null
    same_measure --object secret,id=s,file=pw.txt --image-opts \
        driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=s -O qcow2
    qemu-img create -q -f qcow2 q.qcow2 10M
    qio qcow2 q.qcow2 "write 0 3M"
    qemu_io_hold qcow2 q.qcow2
    same_measure -U -O qcow2 q.qcow2
    same_measure -O qcow2 q.qcow2
    qemu_io_release
    grep -qi lock v.err
}
case_run "encrypted source by --image-opts, -U" options

# qemu-img measure of a LUKS target makes a LUKS header in memory (its
# key setup is timed), which fails now and then on a busy machine ("Unable
# to get accurate CPU usage"): qemu-img is asked again then.
same_measure_luks() {
    local out qrc vrc try
    for out in human json; do
        for ((try = 0; try < 10; try++)); do
            qrc=0
            qemu-img measure --output=$out "$@" >q.out 2>q.err || qrc=$?
            grep -q 'Unable to get accurate CPU usage' q.err || break
            sleep 1
        done
        vrc=0
        vd measure --output=$out "$@" >v.out 2>v.err || vrc=$?
        ((qrc == vrc)) || { echo "measure $*: qemu-img exit $qrc, vdisk $vrc"; cat q.err v.err; return 1; }
        diff -u q.out v.out || { echo "measure --output=$out $* differs (qemu-img above)"; return 1; }
        ((qrc == 0)) || [[ -s v.err ]] || { echo "no message: measure $*"; return 1; }
    done
}

# Encrypted targets (qemu-iotests 178): a LUKS qcow2 holds its header in
# whole clusters beside everything else, a raw LUKS volume is the header and
# the whole disk; legacy AES takes no room; the key must be named.
encrypted_targets() {
    printf 'base' >pw
    local sec="secret,id=sec0,file=$PWD/pw" size cs
    qemu-img create -q -f raw data.raw 64M
    qemu-io -f raw -c 'write 512 512' -c 'write 1M 64k' -c 'write 40M 63k' data.raw >/dev/null
    for size in 0 1000 1G 100G; do
        same_measure_luks --object "$sec" --size "$size" -O luks -o key-secret=sec0
        same_measure_luks --object "$sec" --size "$size" -O qcow2 -o encrypt.format=luks,encrypt.key-secret=sec0
    done
    for cs in 512 4k 2M; do
        same_measure_luks --object "$sec" --size 1G -O qcow2 \
            -o encrypt.format=luks,encrypt.key-secret=sec0,cluster_size=$cs
    done
    same_measure_luks --object "$sec" --size 1G -O luks \
        -o key-secret=sec0,cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256
    same_measure_luks --object "$sec" --size 1G -O qcow2 \
        -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc
    same_measure_luks --object "$sec" -f raw data.raw -O luks -o key-secret=sec0
    same_measure_luks --object "$sec" -f raw data.raw -O qcow2 -o encrypt.format=luks,encrypt.key-secret=sec0
    same_measure_luks --object "$sec" -f raw data.raw -O qcow2 \
        -o encrypt.format=luks,encrypt.key-secret=sec0,preallocation=full
    same_measure --object "$sec" -f raw data.raw -O qcow2 -o encrypt.format=aes,encrypt.key-secret=sec0
    same_measure --size 1G -O qcow2 -o encryption=on
    same_refusal --size 1G -O qcow2 -o encrypt.format=luks
    grep -q "Parameter 'encrypt.key-secret' is required for cipher" err.txt
    same_refusal --size 1G -O luks
}
case_run "encrypted targets" encrypted_targets

refusals() {
    qemu-img create -q -f qcow2 q.qcow2 10M
    local fmt
    for fmt in vdi vmdk qcow; do
        same_refusal --size 1G -O "$fmt"
        same_refusal -O "$fmt" q.qcow2
    done
    grep -q "does not support size measurement" err.txt
    same_refusal --size 1G -O nosuchformat
    same_refusal
    same_refusal --size 1G q.qcow2
    same_refusal --size 1G -f qcow2
    same_refusal --size 1G -l s1
    same_refusal q.qcow2 q.qcow2
    same_refusal --size x
    same_refusal --size -1
    same_refusal --size 8E -O qcow2
    same_refusal --size 1G --output=xml
    same_refusal --size 1G -O qcow2 -o no_such=1
    same_refusal --size 1G -O qcow2 -o cluster_size=3k
    same_refusal --size 1G -O qcow2 -o cluster_size=4M
    same_refusal --size 1G -O qcow2 -o compat=0.10,refcount_bits=8
    same_refusal --size 1G -O qcow2 -o extended_l2=on,cluster_size=4k
    same_refusal --size 1G -O raw -o cluster_size=4k
    same_refusal missing.qcow2
    same_refusal -l nosnap q.qcow2
    grep -q "nosnap" err.txt
}
case_run "refuses what qemu-img refuses" refusals

finish
