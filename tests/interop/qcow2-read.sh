#!/usr/bin/env bash
# qcow2 images that qemu-img and qemu-io make, with every create option and
# every kind of write, read back by vdisk exactly as qemu-img reads them; and
# `vdisk info --output=json` agrees with qemu-img info.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

SIZE=$((16 * 1048576))

# writes OPTIONS [nocompress]: the qemu-io commands for a 16 MiB image. Offsets
# are chosen so every cluster size from 512 bytes to 2 MiB sees partial-cluster
# writes, zero writes over data and over holes, discards, and compressed
# clusters followed by a partial overwrite (copy-on-write of a compressed cluster).
writes() {
    local c=(
        "write -P 0x11 0 64k"
        "write -P 0x22 102400 3000"
        "write -P 0x33 1M 1M"
        "write -z 1536k 64k"
        "write -z 5M 128k"
        "discard 1792k 256k"
        "write -P 0x44 7M 4k"
        "write -P 0x66 $((SIZE - 512)) 512"
    )
    if [[ -z ${2:-} ]]; then
        c+=("write -c -P 0x55 8M 2M" "write -c -P 0x56 12M 2M" "write -P 0x77 12M 4k" "write -z 10M 2M")
    fi
    printf '%s\n' "${c[@]}"
}

# info_agrees IMAGE: virtual-size, format, cluster-size and backing-filename
# of vdisk info --output=json match qemu-img info --output=json.
info_agrees() {
    qemu-img info --output=json "$1" >q.json
    vd info --output=json "$1" >v.json
    "$PY" - q.json v.json <<'PY'
import json, sys
q, v = (json.load(open(p)) for p in sys.argv[1:3])
bad = []
for k in ("virtual-size", "format", "cluster-size", "backing-filename", "backing-filename-format"):
    if q.get(k) != v.get(k):
        bad.append("%s: qemu-img %r, vdisk %r" % (k, q.get(k), v.get(k)))
if bad:
    sys.exit("info differs: " + "; ".join(bad))
PY
}

# reads_like_qemu IMAGE [convert options...]: vdisk and qemu-img give the same raw bytes.
reads_like_qemu() {
    local img=$1
    shift
    rm -f "$W/expect.raw" "$W/got.raw"
    qemu-img convert "$@" -O raw "$img" "$W/expect.raw"
    vd convert "$@" -O raw "$img" "$W/got.raw"
    cmp "$W/expect.raw" "$W/got.raw"
}

# qemu-img creates with OPTIONS, qemu-io writes, vdisk reads.
qemu_io_image() {
    local opts=$1 nocompress=${2:-}
    qemu-img create -q -f qcow2 ${opts:+-o "$opts"} img.qcow2 "$SIZE"
    mapfile -t cmds < <(writes "$opts" "$nocompress")
    qio qcow2 img.qcow2 "${cmds[@]}"
    qcheck img.qcow2
    reads_like_qemu img.qcow2 -f qcow2
    reads_like_qemu img.qcow2 # probed
    info_agrees img.qcow2
}

# qemu-img convert [-c] with OPTIONS from a patterned raw image, vdisk reads.
converted_image() {
    local opts=$1 compress=${2:-}
    pattern_raw src.raw 16M
    qemu-img convert ${compress:+-c} -f raw -O qcow2 ${opts:+-o "$opts"} src.raw img.qcow2
    vd convert -f qcow2 -O raw img.qcow2 got.raw
    cmp src.raw got.raw
    info_agrees img.qcow2
}

# Compressed writes need unallocated clusters, so preallocated images get none.
for o in "" compat=0.10 compat=1.1 cluster_size=512 cluster_size=4k cluster_size=64k cluster_size=2M \
    refcount_bits=1 refcount_bits=2 refcount_bits=4 refcount_bits=8 refcount_bits=16 \
    refcount_bits=32 refcount_bits=64 lazy_refcounts=on extended_l2=on,cluster_size=128k \
    extended_l2=on,cluster_size=16k compression_type=zlib compression_type=zstd \
    compat=0.10,cluster_size=4k cluster_size=2M,compression_type=zstd; do
    case_run "qemu-io writes, vdisk reads [${o:-defaults}]" qemu_io_image "$o"
done
for o in preallocation=metadata preallocation=falloc preallocation=full \
    preallocation=metadata,cluster_size=4k extended_l2=on,cluster_size=128k,preallocation=metadata; do
    case_run "qemu-io writes, vdisk reads [$o]" qemu_io_image "$o" nocompress
done
for o in "" cluster_size=512 cluster_size=2M refcount_bits=1 refcount_bits=64 lazy_refcounts=on \
    extended_l2=on,cluster_size=128k preallocation=metadata preallocation=falloc preallocation=full; do
    case_run "qemu-img convert, vdisk reads [${o:-defaults}]" converted_image "$o"
done
for o in compression_type=zlib compression_type=zstd compression_type=zlib,cluster_size=4k \
    compression_type=zstd,cluster_size=2M compression_type=zstd,extended_l2=on,cluster_size=64k compat=0.10; do
    case_run "qemu-img convert -c, vdisk reads [$o]" converted_image "$o" c
done

# A virtual size that is not a multiple of the cluster size: the last
# cluster is partial.
odd_size() {
    qemu-img create -q -f qcow2 -o cluster_size=64k img.qcow2 $((SIZE + 3 * 512))
    qio qcow2 img.qcow2 "write -c -P 0x22 $((SIZE - 131072)) 65536" "write -c -P 0x23 $SIZE $((3 * 512))" \
        "write -P 0x21 $((SIZE - 4096)) 4096"
    reads_like_qemu img.qcow2 -f qcow2
    info_agrees img.qcow2
}
case_run "virtual size not cluster aligned" odd_size

# Internal snapshots: the active layer and each snapshot read like qemu-img's.
snapshots() {
    qemu-img create -q -f qcow2 img.qcow2 "$SIZE"
    qio qcow2 img.qcow2 "write -P 0x31 0 2M" "write -c -P 0x32 4M 1M"
    qemu-img snapshot -c s1 img.qcow2
    qio qcow2 img.qcow2 "write -P 0x41 1M 2M" "discard 4M 512k" "write -z 5M 64k"
    qemu-img snapshot -c s2 img.qcow2
    qio qcow2 img.qcow2 "write -P 0x51 0 64k" "write -P 0x52 8M 1M"
    reads_like_qemu img.qcow2 -f qcow2
    reads_like_qemu img.qcow2 -f qcow2 -l snapshot.name=s1
    reads_like_qemu img.qcow2 -f qcow2 -l snapshot.name=s2
    vd snapshot -l img.qcow2 >list
    grep -qw s1 list
    grep -qw s2 list
    info_agrees img.qcow2
}
case_run "snapshots made by qemu-img read by vdisk" snapshots

# Backing chains of depth 3 with -F; relative backing names; a backing file
# shorter than its overlay; a raw base.
chain() {
    local base_fmt=$1 base_opts=${2:-}
    if [[ $base_fmt == raw ]]; then
        pattern_raw base.img 16M
    else
        pattern_raw src.raw 16M
        qemu-img convert -f raw -O qcow2 ${base_opts:+-o "$base_opts"} src.raw base.img
    fi
    qemu-img create -q -f qcow2 -b base.img -F "$base_fmt" mid.qcow2
    qio qcow2 mid.qcow2 "write -P 17 1M 128k" "write -z 3M 64k" "discard 6M 64k" "write -c -P 18 8M 1M"
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 24M
    qio qcow2 top.qcow2 "write -P 34 1M 4k" "write -P 51 15M 64k" "write -P 52 20M 64k" "write -z 8M 4k"
    reads_like_qemu top.qcow2 -f qcow2
    # from another directory: backing names resolve relative to the image
    (cd / && reads_like_qemu "$W/top.qcow2" -f qcow2)
    info_agrees top.qcow2
    info_agrees mid.qcow2
}
case_run "backing chain depth 3, qcow2 base" chain qcow2
case_run "backing chain depth 3, qcow2 base with 4k clusters" chain qcow2 cluster_size=4k
case_run "backing chain depth 3, raw base" chain raw

# A chain with absolute backing names, made in another directory.
chain_absolute() {
    mkdir sub
    pattern_raw sub/base.raw 16M
    qemu-img create -q -f qcow2 -b "$W/sub/base.raw" -F raw sub/mid.qcow2
    qemu-img create -q -f qcow2 -b "$W/sub/mid.qcow2" -F qcow2 top.qcow2
    qio qcow2 top.qcow2 "write -P 99 0 4k"
    reads_like_qemu top.qcow2 -f qcow2
    info_agrees top.qcow2
}
case_run "backing chain with absolute names" chain_absolute

finish
