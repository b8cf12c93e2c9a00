#!/usr/bin/env bash
# qcow2 images vdisk creates and changes (create's empty layout, create -u,
# amend -o, resize --preallocation) beside the same commands of qemu-img:
# the same exit code, the same header fields in qemu-img info, qemu-img
# check clean, the same guest data.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

# layout FILE: the file's length and where its tables are, as a line.
layout() {
    "$PY" - "$1" <<'EOF'
import struct, sys
d = open(sys.argv[1], 'rb').read()
h = struct.unpack('>IIQIIQIIQQIIQ', d[:72])
cs = 1 << h[4]
rt = [struct.unpack('>Q', d[h[9] + 8 * i:h[9] + 8 * i + 8])[0] for i in range(h[10] * cs // 8)]
print('length', len(d), 'l1', h[7], h[8], 'reftable', h[9], h[10], 'blocks', [x for x in rt if x])
EOF
}

# same_empty SIZE CREATE-OPTIONS...: vdisk create makes the file qemu-img
# create makes: byte for byte, the same length and blocks on disk.
same_empty() {
    local size=$1
    shift
    rm -f q.qcow2 v.qcow2
    qemu-img create -q -f qcow2 "$@" q.qcow2 ${size:+"$size"}
    vd create -q -f qcow2 "$@" v.qcow2 ${size:+"$size"}
    [[ $(layout v.qcow2) == "$(layout q.qcow2)" ]] ||
        { echo "layout of $* $size: vdisk $(layout v.qcow2), qemu-img $(layout q.qcow2)"; return 1; }
    cmp q.qcow2 v.qcow2 || { echo "create $* $size: not the bytes qemu-img writes"; return 1; }
    [[ $(allocated v.qcow2) == $(allocated q.qcow2) ]] ||
        { echo "create $* $size: $(allocated v.qcow2) bytes on disk, qemu-img $(allocated q.qcow2)"; return 1; }
    [[ $(qinfo v.qcow2 actual-size) == $(qinfo q.qcow2 actual-size) ]]
    qcheck v.qcow2
}

empty_layout() {
    qemu-img create -q -f qcow2 base.qcow2 1G
    same_empty 1G
    [[ $(stat -c %s v.qcow2) == 196624 ]]
    same_empty 0
    same_empty 100M -o compat=0.10
    same_empty 16T
    same_empty 1G -o cluster_size=2M
    same_empty 1G -o cluster_size=4k,refcount_bits=64
    same_empty 1G -o extended_l2=on
    same_empty 1G -o lazy_refcounts=on,refcount_bits=1
    same_empty 2G -b base.qcow2 -F qcow2
    same_empty 2G -b base.qcow2 -F qcow2 -o compat=0.10
    same_empty "" -b base.qcow2 -F qcow2
    same_empty 1G -o preallocation=metadata
}
case_run "an empty qcow2 is laid out as qemu-img lays it out" empty_layout

# An L1 table of many small clusters needs refcount blocks past the one the
# header's cluster has; they go after the table, as qemu puts them.
small_clusters() {
    same_empty 1G -o cluster_size=512
    same_empty 16G -o cluster_size=512
    same_empty 64G -o cluster_size=512,refcount_bits=1
    # The refcount table itself grows here: placed otherwise than qemu's,
    # but clean and readable.
    vd create -q -f qcow2 -o cluster_size=512,refcount_bits=64 v.qcow2 64G
    qcheck v.qcow2
    qio qcow2 v.qcow2 "write -P 0x5a 63G 4k"
    qcheck v.qcow2
    qio qcow2 v.qcow2 "read -P 0x5a 63G 4k"
}
case_run "small clusters: refcount blocks after a large L1 table" small_clusters

# create -u: the backing file is not opened (it may not exist yet); the
# header names it as given, as qemu-img create -u writes it.
create_unsafe() {
    local tool
    for tool in qemu-img vd; do
        rm -f "$tool.qcow2"
        $tool create -q -f qcow2 -u -b missing.qcow2 -F qcow2 "$tool.qcow2" 1G
    done
    cmp qemu-img.qcow2 vd.qcow2
    qemu-img create -q -f qcow2 missing.qcow2 64M
    qcheck vd.qcow2
    rm missing.qcow2
    [[ $(qinfo vd.qcow2 backing-filename) == missing.qcow2 ]]
    [[ $(qinfo vd.qcow2 backing-filename-format) == qcow2 ]]
    [[ $(qinfo vd.qcow2 virtual-size) == 1073741824 ]]
    vd create -q -f qcow2 -u -b missing.raw -F raw -o compat=0.10 v2.qcow2 2G
    [[ $(qspecific v2.qcow2 compat) == 0.10 && $(qinfo v2.qcow2 backing-filename) == missing.raw ]]
    # qemu-img refuses -u without a size or without a backing format
    expect_exit 1 qemu-img create -q -f qcow2 -u -b missing.qcow2 -F qcow2 q.qcow2
    expect_exit 1 vd create -q -f qcow2 -u -b missing.qcow2 -F qcow2 v.qcow2
    expect_exit 1 qemu-img create -q -f qcow2 -u -b missing.qcow2 q.qcow2 1G
    expect_exit 1 vd create -q -f qcow2 -u -b missing.qcow2 v.qcow2 1G 2>err.txt
    grep -q "Backing file specified without backing format" err.txt
    # without -u the backing file must open
    expect_exit 1 vd create -q -f qcow2 -b missing.qcow2 -F qcow2 v.qcow2 1G
}
case_run "create -u names a backing file it does not open" create_unsafe

finish
