#!/usr/bin/env bash
# raw images through vdisk: sparse create, preallocation, holes kept by
# convert, resize grow and --shrink, map like qemu-img's.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

MiB=1048576

create_sparse() {
    vd create -f raw r.raw 64M
    [[ $(stat -c %s r.raw) == $((64 * MiB)) ]]
    (($(allocated r.raw) <= 64 * 1024)) || { echo "not sparse: $(allocated r.raw) bytes"; return 1; }
    [[ $(qinfo r.raw format) == raw ]]
    vd create -f raw -o preallocation=off r2.raw 1G
    [[ $(stat -c %s r2.raw) == $((1024 * MiB)) ]]
    (($(allocated r2.raw) <= 64 * 1024))
    vd create -f raw odd.raw $((5 * MiB + 512))
    [[ $(stat -c %s odd.raw) == $((5 * MiB + 512)) ]]
}
case_run "create is sparse" create_sparse

create_prealloc() {
    local mode=$1
    vd create -f raw -o preallocation="$mode" p.raw 32M
    [[ $(stat -c %s p.raw) == $((32 * MiB)) ]]
    (($(allocated p.raw) >= 32 * MiB)) || { echo "preallocation=$mode left $(allocated p.raw) bytes allocated"; return 1; }
    cmp -n $((32 * MiB)) p.raw /dev/zero
}
case_run "create preallocation=falloc" create_prealloc falloc
case_run "create preallocation=full" create_prealloc full

create_refuses() {
    fails_cleanly vd create -f raw -o preallocation=bogus x.raw 1M
    fails_cleanly vd create -f raw -o no_such_option=1 y.raw 1M
    fails_cleanly vd create -f raw z.raw notasize
}
case_run "create refuses bad options" create_refuses

convert_holes() {
    pattern_raw src.raw 32M
    # explicit zeroes written as data in the source must come out as holes
    dd if=/dev/zero of=src.raw bs=1M count=2 seek=20 conv=notrunc status=none
    vd convert -f raw -O raw src.raw copy.raw
    cmp src.raw copy.raw
    (($(allocated copy.raw) <= $(allocated src.raw) - MiB)) ||
        { echo "holes not kept: source $(allocated src.raw), copy $(allocated copy.raw)"; return 1; }
    qemu-img convert -f raw -O raw src.raw q.raw
    (($(allocated copy.raw) <= $(allocated q.raw) + 256 * 1024)) ||
        { echo "less sparse than qemu-img: $(allocated copy.raw) vs $(allocated q.raw)"; return 1; }
}
case_run "convert raw to raw keeps holes" convert_holes

convert_roundtrip() {
    pattern_raw src.raw 32M
    vd convert -f raw -O qcow2 src.raw mid.qcow2
    vd convert -f qcow2 -O raw mid.qcow2 back.raw
    cmp src.raw back.raw
    (($(allocated back.raw) <= $(allocated src.raw) + 256 * 1024))
}
case_run "raw to qcow2 to raw" convert_roundtrip

convert_existing() {   # -n writes into an existing target and keeps its size
    pattern_raw src.raw 8M
    qemu-img create -q -f raw t.raw 8M
    qio raw t.raw "write -P 3 1M 1M"
    vd convert -n -f raw -O raw src.raw t.raw
    cmp src.raw t.raw
}
case_run "convert -n into an existing raw image" convert_existing

resize_grow() {
    pattern_raw src.raw 16M
    cp --sparse=always src.raw r.raw
    local before
    before=$(allocated r.raw)
    vd resize -f raw r.raw +16M
    [[ $(stat -c %s r.raw) == $((32 * MiB)) ]]
    cmp -n $((16 * MiB)) src.raw r.raw
    cmp -i $((16 * MiB)):0 -n $((16 * MiB)) r.raw /dev/zero
    (($(allocated r.raw) <= before + 64 * 1024)) || { echo "growing allocated the tail"; return 1; }
    vd resize r.raw 40M
    [[ $(stat -c %s r.raw) == $((40 * MiB)) ]]
}
case_run "resize grow" resize_grow

resize_shrink() {
    pattern_raw src.raw 16M
    cp src.raw r.raw
    fails_cleanly vd resize -f raw r.raw 8M     # needs --shrink, like qemu-img 7.2
    [[ $(stat -c %s r.raw) == $((16 * MiB)) ]]
    vd resize -f raw --shrink r.raw 8M
    [[ $(stat -c %s r.raw) == $((8 * MiB)) ]]
    cmp r.raw <(head -c $((8 * MiB)) src.raw)
    vd resize -f raw --shrink r.raw -1M
    [[ $(stat -c %s r.raw) == $((7 * MiB)) ]]
    fails_cleanly vd resize -f raw --shrink r.raw -1G
    [[ $(stat -c %s r.raw) == $((7 * MiB)) ]]
}
case_run "resize --shrink" resize_shrink

map_agrees() {
    pattern_raw m.raw 16M
    dd if=/dev/zero of=m.raw bs=64k count=2 seek=100 conv=notrunc status=none
    qemu-img map -f raw --output=json m.raw >q.json
    vd map -f raw --output=json m.raw >v.json
    merged_map q.json >q.map
    merged_map v.json >v.map
    diff q.map v.map || { echo "map differs (qemu-img <, vdisk >)"; return 1; }
}
case_run "map agrees with qemu-img" map_agrees

info_raw() {
    vd create -f raw i.raw 12M
    vd info --output=json i.raw >v.json
    [[ $(json v.json 'd["format"]') == raw ]]
    [[ $(json v.json 'd["virtual-size"]') == $((12 * MiB)) ]]
    [[ $(json v.json '"cluster-size" in d') == False ]]
}
case_run "info --output=json for raw" info_raw

finish
