#!/usr/bin/env bash
# qcow2 (and raw) images vdisk creates and changes (create's empty layout,
# create -u, amend -o, resize --preallocation) beside the same commands of
# qemu-img:
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
    # an encrypted overlay: its header extensions in qemu's order (backing
    # format, crypto, feature table), the key material aside
    printf pass >pw
    local tool
    for tool in qemu_img_luks vd; do
        $tool create -q -f qcow2 --object secret,id=s,file=pw -b base.qcow2 -F qcow2 \
            -o encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10 $tool.qcow2 1G
        "$PY" - $tool.qcow2 >$tool.ext <<'EOF'
import struct, sys
d = open(sys.argv[1], 'rb').read()
off = struct.unpack('>I', d[100:104])[0]
while True:
    t, l = struct.unpack('>II', d[off:off + 8])
    print(hex(t), l)
    if t == 0:
        break
    off += 8 + ((l + 7) & ~7)
print('backing name at', struct.unpack('>Q', d[8:16])[0])
EOF
    done
    diff qemu_img_luks.ext vd.ext
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

# ---- amend ----

# Images to amend, made by qemu-img and qemu-io: make_KIND FILE.
make_v3() { qemu-img create -q -f qcow2 "$1" 64M && qio qcow2 "$1" "write -P 1 0 64k" "write -z 64k 64k" "write -P 2 1M 64k" "write -z 1M 64k"; }
make_v2() { qemu-img create -q -f qcow2 -o compat=0.10 "$1" 64M && qio qcow2 "$1" "write -P 1 0 64k" "write -P 2 42M 64k"; }
make_backed() {
    qemu-img create -q -f qcow2 base.qcow2 64M
    qio qcow2 base.qcow2 "write -P 7 0 4M"
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$1" 64M
    qio qcow2 "$1" "write -z 0 64k" "write -P 2 1M 64k" "write -z 1M 64k" "write -z 3M 128k"
}
make_snapshot() { make_backed "$1" && qemu-img snapshot -c foo "$1" && qio qcow2 "$1" "write -P 0x42 0 128k" "write -z 2M 64k"; }
make_v2_snapshot() { make_v2 "$1" && qemu-img snapshot -c foo "$1" && qio qcow2 "$1" "write -P 9 0 64k"; }
make_prealloc() { qemu-img create -q -f qcow2 -o preallocation=metadata "$1" 4M && qio qcow2 "$1" "write -P 3 0 1M" "write -z 512k 64k"; }
make_r8() { qemu-img create -q -f qcow2 -o refcount_bits=8 "$1" 64M && qio qcow2 "$1" "write -P 1 0 1M"; }
make_lazy() { qemu-img create -q -f qcow2 -o lazy_refcounts=on "$1" 64M && qio qcow2 "$1" "write -P 1 0 1M"; }
make_lazy_backed() {
    qemu-img create -q -f qcow2 base.qcow2 64M
    qemu-img create -q -f qcow2 -o lazy_refcounts=on -b base.qcow2 -F qcow2 "$1" 64M
    qio qcow2 "$1" "write -z 0 64k" "write -P 3 1M 64k"
}
make_zstd() { qemu-img create -q -f qcow2 -o compression_type=zstd "$1" 64M; }
make_zstd_compressed() {
    qemu-img create -q -f raw r.raw 1M
    qio raw r.raw "write -P 5 0 1M"
    qemu-img convert -c -O qcow2 -o compression_type=zstd r.raw "$1"
}
make_ext_l2() { qemu-img create -q -f qcow2 -o extended_l2=on "$1" 64M; }
make_data_file() { qemu-img create -q -f qcow2 -o data_file=t.data "$1" 64M && qio qcow2 "$1" "write -P 4 0 64k"; }
make_data_moved() { make_data_file "$1" && cp t.data other.data; }
make_data_raw() { qemu-img create -q -f qcow2 -o data_file=t.data,data_file_raw=on "$1" 64M; }

# same_amend [--bytes] MAKE AMEND-ARGS...: an image made by MAKE, copied,
# amended by qemu-img in q/ and by vdisk in v/: the same exit code and
# qemu-img info; where qemu-img succeeded, vdisk's image checks clean and
# reads as qemu-img's; with --bytes the two files are the same bytes.
same_amend() {
    local bytes=
    [[ $1 == --bytes ]] && { bytes=1; shift; }
    local make=$1 qrc=0 vrc=0
    shift
    rm -rf q v m && mkdir q v m
    (cd m && $make t.qcow2)
    cp -a m/. q/ && cp -a m/. v/
    (cd q && qemu-img amend "$@" t.qcow2 2>../q.err) || qrc=$?
    (cd v && vd amend "$@" t.qcow2 2>../v.err) || vrc=$?
    cat q.err v.err
    ((qrc == vrc)) || { echo "amend $*: qemu-img exit $qrc, vdisk $vrc"; return 1; }
    (cd q && qemu-img info --output=json t.qcow2 | grep -v actual-size) >q.info
    (cd v && qemu-img info --output=json t.qcow2 | grep -v actual-size) >v.info
    diff q.info v.info || { echo "amend $*: qemu-img info differs"; return 1; }
    if ((qrc == 0)); then
        (cd v && qcheck t.qcow2) || { echo "amend $*: vdisk's image does not check clean"; return 1; }
        (cd q && qemu-img convert -O raw t.qcow2 ../q.raw) && (cd v && qemu-img convert -O raw t.qcow2 ../v.raw)
        cmp q.raw v.raw || { echo "amend $*: the guest reads otherwise"; return 1; }
    else
        cmp m/t.qcow2 v/t.qcow2 || { echo "amend $*: a refused amend changed the image"; return 1; }
    fi
    [[ -z $bytes ]] || cmp q/t.qcow2 v/t.qcow2 || { echo "amend $*: not the bytes qemu-img writes"; return 1; }
}

amend_compat() {
    same_amend --bytes make_v3 -o compat=0.10
    same_amend --bytes make_v3 -o compat=v2
    same_amend --bytes make_v2 -o compat=1.1
    same_amend --bytes make_v2 -o compat=1.1,lazy_refcounts=on,size=128M
    same_amend --bytes make_backed -o compat=0.10
    same_amend --bytes make_prealloc -o compat=0.10
    same_amend --bytes make_v2_snapshot -o compat=1.1
    same_amend --bytes make_zstd -o compat=0.10
    same_amend --bytes make_v3 -o compat=0.10,refcount_bits=16,lazy_refcounts=off
    same_amend make_r8 -o compat=0.10,refcount_bits=16
    # lazy refcounts: what is left out of date is written before the
    # version 2 header, which has no dirty bit
    same_amend --bytes make_lazy_backed -o compat=0.10
    same_amend --bytes make_lazy_backed -o compat=0.10,lazy_refcounts=off
    # zero clusters in a snapshot's L2 tables too; qemu-img 7.2 leaves an
    # OFLAG_COPIED error on a preallocated zero cluster both tables share
    # (its check says so), vdisk does not (same_amend checks vdisk's)
    same_amend make_snapshot -o compat=0.10
    not qcheck q/t.qcow2 2>/dev/null
    same_amend make_v3 -o compat=0.10
    [[ $(cd v && qspecific t.qcow2 compat) == 0.10 ]]
    # -p prints qemu-img's progress lines, from 0 to 100
    vd amend -p -o compat=1.1 v/t.qcow2 >progress.txt
    grep -q '(0.00/100%)' progress.txt && grep -q '(100.00/100%)' progress.txt
    [[ $(qspecific v/t.qcow2 compat) == 1.1 ]]
}

# qemu-iotests 061's progress of a downgrade: a step per L1 entry, of the
# image and of each snapshot; the same bytes on stdout as qemu-img's.
make_4g() {
    qemu-img create -q -f qcow2 base.qcow2 4G
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$1" 4G
    qio qcow2 "$1" "write -z 0 64k" "write -z 1G 64k" "write -z 2G 64k" "write -z 3G 64k"
}
make_4g_snapshot() { make_4g "$1" && qemu-img snapshot -c foo "$1"; }
amend_progress() {
    local make
    for make in make_4g make_4g_snapshot; do
        same_amend --bytes $make -p -o compat=0.10
        (cd q && rm t.qcow2 && cp ../m/t.qcow2 . && qemu-img amend -p -o compat=0.10 t.qcow2 >../q.out)
        (cd v && rm t.qcow2 && cp ../m/t.qcow2 . && vd amend -p -o compat=0.10 t.qcow2 >../v.out)
        cmp q.out v.out || { cat -A q.out v.out; return 1; }
    done
    grep -q '(6.25/100%)' v.out
}
case_run "amend compat: upgrade, and downgrade with zero clusters expanded" amend_compat
case_run "amend -p: a downgrade's progress as qemu-img prints it" amend_progress

amend_snapshot_downgrade() {
    # the snapshot's zeroes stay zeroes over a backing file that holds data
    make_snapshot t.qcow2
    vd amend -o compat=0.10 t.qcow2
    qcheck t.qcow2
    [[ $(qspecific t.qcow2 compat) == 0.10 ]]
    qio qcow2 t.qcow2 "read -P 0x42 0 128k" "read -P 0 2M 64k" "read -P 0 3M 128k" "read -P 7 128k 64k"
    qemu-img snapshot -a foo t.qcow2
    qcheck t.qcow2
    qio qcow2 t.qcow2 "read -P 0 0 64k" "read -P 7 64k 64k" "read -P 0 1M 64k" "read -P 7 2M 64k"
}
case_run "amend compat=0.10 expands the zero clusters of snapshots" amend_snapshot_downgrade

amend_refcounts() {
    local b
    for b in 1 2 8 32 64; do
        same_amend make_v3 -o refcount_bits=$b
        [[ $(cd v && qspecific t.qcow2 refcount-bits) == "$b" ]]
    done
    same_amend make_r8 -o refcount_bits=16
    same_amend make_lazy -o lazy_refcounts=off,refcount_bits=1
    same_amend make_v3 -o size=128M,refcount_bits=8
    # a width too narrow for a refcount the image has
    make_snapshot s.qcow2
    qemu-img snapshot -c bar s.qcow2
    expect_exit 1 vd amend -o refcount_bits=1 s.qcow2 2>err.txt
    grep -q "Cannot decrease refcount entry width to 1 bits" err.txt
    qcheck s.qcow2
    [[ $(qspecific s.qcow2 refcount-bits) == 16 ]]
}
case_run "amend refcount_bits rewrites the refcount structures" amend_refcounts

amend_lazy() {
    same_amend --bytes make_v3 -o lazy_refcounts=on
    same_amend --bytes make_lazy -o lazy_refcounts=off
    same_amend --bytes make_lazy -o lazy_refcounts=on
    # a dirty image: its refcounts are repaired before the bit goes
    qemu-img create -q -f qcow2 -o lazy_refcounts=on d.qcow2 64M
    qemu-io -c "write -P 0x2a 0 128k" -c flush -c "sigraise 9" d.qcow2 >/dev/null 2>&1 || true
    [[ $(qinfo d.qcow2 dirty-flag) == True ]]
    vd amend -o lazy_refcounts=off d.qcow2
    qcheck d.qcow2
    [[ $(qspecific d.qcow2 lazy-refcounts) == false && $(qinfo d.qcow2 dirty-flag) == False ]]
    qio qcow2 d.qcow2 "read -P 0x2a 0 128k"
}
case_run "amend lazy_refcounts on and off" amend_lazy

amend_data_file() {
    # the data file was copied: the header names the copy
    same_amend --bytes make_data_moved -o data_file=other.data
    [[ $(cd v && qspecific t.qcow2 data-file) == other.data ]]
    same_amend --bytes make_data_raw -o data_file_raw=off
    same_amend --bytes make_data_file -o data_file_raw=on
    same_amend --bytes make_data_file -o data_file_raw=off
    same_amend --bytes make_v3 -o data_file=x.data
    same_amend --bytes make_data_file -o compat=0.10
}
case_run "amend data_file renames an external data file" amend_data_file

amend_refusals() {
    local o
    for o in cluster_size=4k preallocation=metadata compression_type=zstd extended_l2=on \
        encryption=on encrypt.format=luks foo=bar compat=0.42 refcount_bits=3 \
        refcount_bits=128 lazy_refcounts=maybe backing_file=b.qcow2 backing_fmt=raw \
        backing_file=b.qcow2,backing_fmt=qcow2; do
        same_amend --bytes make_v3 -o "$o"
    done
    grep -q "Invalid parameter 'backing_fmt'\|Cannot amend the backing file" v.err
    same_amend make_v3 -o cluster_size=4k
    grep -q "Invalid parameter 'cluster_size'" v.err
    for o in lazy_refcounts=on refcount_bits=8 compat=0.10,lazy_refcounts=on; do
        same_amend --bytes make_v2 -o "$o"
    done
    same_amend --bytes make_r8 -o compat=0.10
    same_amend --bytes make_ext_l2 -o compat=0.10
    same_amend --bytes make_zstd_compressed -o compat=0.10
    # the backing file and format it has are no change; any other is refused
    same_amend --bytes make_backed -o backing_file=base.qcow2,backing_fmt=qcow2
    same_amend --bytes make_backed -o backing_file=base.qcow2
    grep -q "Cannot amend the backing file" v.err
    same_amend --bytes make_backed -o backing_file=other.qcow2,backing_fmt=qcow2
}
case_run "amend refuses what qemu-img refuses, in its words" amend_refusals

# amend -o help lists what amend takes, in qemu-img's lines.
amend_help() {
    qemu-img create -q -f qcow2 t.qcow2 1M
    local a
    for a in "-f qcow2 -o help t.qcow2" "-o help t.qcow2" "-f qcow2 -o cluster_size=4k,? t.qcow2" \
        "-f luks -o help x" "-f qcow2 -o help"; do
        # shellcheck disable=SC2086 # word lists
        qemu-img amend $a >q.out
        # shellcheck disable=SC2086
        vd amend $a >v.out
        diff q.out v.out
    done
    grep -q "^Amend options for 'qcow2':" v.out
    expect_exit 1 vd amend -f raw -o help t.qcow2
}
case_run "amend -o help as qemu-img's" amend_help

# qemu-iotests 061's resize with snapshots: a version 2 image with one is
# not resized (its snapshots have no size of their own), a version 3 one
# is, both ways; a downgrade needs every snapshot of the image's size.
resize_with_snapshots() {
    local tool
    for tool in qemu-img vd; do
        rm -f t.qcow2
        qemu-img create -q -f qcow2 -o compat=0.10 t.qcow2 32M
        qio qcow2 t.qcow2 "write -P 0x2a 24M 64k"
        qemu-img snapshot -c foo t.qcow2
        expect_exit 1 $tool resize -q t.qcow2 64M
        [[ $(qinfo t.qcow2 virtual-size) == 33554432 ]]
        $tool amend -o compat=1.1,size=128M t.qcow2
        qemu-img snapshot -c bar t.qcow2
        $tool resize -q --shrink t.qcow2 64M
        [[ $(qinfo t.qcow2 virtual-size) == 67108864 ]]
        expect_exit 1 $tool amend -o compat=0.10,size=32M t.qcow2 2>err.txt
        grep -q "Internal snapshots prevent downgrade of image" err.txt
        qemu-img snapshot -d bar t.qcow2
        $tool amend -o compat=0.10,size=32M t.qcow2
        [[ $(qspecific t.qcow2 compat) == 0.10 && $(qinfo t.qcow2 virtual-size) == 33554432 ]]
        qcheck t.qcow2
        qio qcow2 t.qcow2 "read -P 0x2a 24M 64k"
        cp t.qcow2 "$tool.qcow2"
    done
    cmp qemu-img.qcow2 vd.qcow2 || diff <(qemu-img map --output=json qemu-img.qcow2) <(qemu-img map --output=json vd.qcow2)
}
case_run "resize and amend of an image with snapshots, as qemu-iotests 061" resize_with_snapshots

# ---- resize --preallocation ----

# same_resize FMT CREATE-OPTS OPTION... SIZE: qemu-img resize and vdisk
# resize of the same new image of 1 MiB: exit code, file length, blocks on
# disk, qemu-img map and check.
same_resize() {
    local fmt=$1 copts=$2 qrc=0 vrc=0
    shift 2
    local size=${*: -1} opts=("${@:1:$#-1}")
    rm -f q.$fmt v.$fmt
    qemu-img create -q -f "$fmt" ${copts:+-o "$copts"} q.$fmt 1M
    qemu-img create -q -f "$fmt" ${copts:+-o "$copts"} v.$fmt 1M
    qemu-img resize -q -f "$fmt" "${opts[@]}" q.$fmt "$size" 2>q.err || qrc=$?
    vd resize -q -f "$fmt" "${opts[@]}" v.$fmt "$size" 2>v.err || vrc=$?
    cat q.err v.err
    ((qrc == vrc)) || { echo "resize $*: qemu-img exit $qrc, vdisk $vrc"; return 1; }
    [[ $(stat -c %s v.$fmt) == $(stat -c %s q.$fmt) ]] ||
        { echo "resize $*: length $(stat -c %s v.$fmt), qemu-img's $(stat -c %s q.$fmt)"; return 1; }
    # blocks on disk as qemu-img's, give or take the file system's own
    local va qa
    va=$(allocated v.$fmt) qa=$(allocated q.$fmt)
    ((va <= qa + 16384 && qa <= va + 16384)) ||
        { echo "resize $*: $va bytes on disk, qemu-img's $qa"; return 1; }
    [[ ${SAME_MAP:-1} == 0 ]] ||
        diff <(qemu-img map -f "$fmt" --output=json q.$fmt) <(qemu-img map -f "$fmt" --output=json v.$fmt)
    [[ $fmt != qcow2 ]] || qcheck v.$fmt
    qemu-img compare -q -f "$fmt" -F "$fmt" q.$fmt v.$fmt
}

resize_preallocation() {
    local p
    for p in off metadata falloc full bogus; do
        same_resize raw "" --preallocation=$p 3M
        same_resize qcow2 "" --preallocation=$p +2M
        # qemu-img places the refcount blocks for falloc and full of small
        # clusters ahead of the data; vdisk where they are needed
        SAME_MAP=$([[ $p == falloc || $p == full ]] && echo 0 || echo 1) \
            same_resize qcow2 cluster_size=512 --preallocation=$p 3M
    done
    grep -q "Invalid preallocation mode 'bogus'" v.err
    same_resize raw "" --preallocation=metadata 3M
    grep -q "Unsupported preallocation mode: metadata" v.err
    # never for shrinking, even with --shrink
    same_resize qcow2 "" --preallocation=falloc 512k
    same_resize raw "" --preallocation=full --shrink 512k
    grep -q "Preallocation can only be used for growing images" v.err
    qemu-img create -q -f qcow2 s.qcow2 1M
    vd resize -q --preallocation=off --shrink s.qcow2 512k
    [[ $(qinfo s.qcow2 virtual-size) == 524288 ]]
    qcheck s.qcow2
    # --preallocation=off is a plain resize
    same_resize qcow2 "" --preallocation=off +1M
}
case_run "resize --preallocation as qemu-img resize" resize_preallocation

# qemu-iotests 125: what a preallocating resize allocated, later writes
# use: the file does not grow, and with falloc or full its blocks neither.
resize_preallocated_writes() {
    local cs grow mode cmode size=$((2048 * 1024 - 48 * 1024)) len1 host1
    for cs in 512 64k; do
        for grow in 16 48 80; do
            for mode in metadata falloc full; do
                # created with metadata preallocation, the last cluster is
                # a hole in the file that the growth reaches into
                for cmode in off metadata; do
                    rm -f t.qcow2
                    qemu-img create -q -f qcow2 -o cluster_size=$cs,preallocation=$cmode t.qcow2 $size
                    vd resize -q --preallocation=$mode t.qcow2 +${grow}K
                    qio qcow2 t.qcow2 "write 0 $size"
                    len1=$(stat -c %s t.qcow2) host1=$(allocated t.qcow2)
                    qio qcow2 t.qcow2 "write $size ${grow}K"
                    (($(stat -c %s t.qcow2) <= len1)) || { echo "$cs $cmode +${grow}K $mode: the file grew"; return 1; }
                    [[ $mode == metadata ]] || (($(allocated t.qcow2) <= host1)) ||
                        { echo "$cs $cmode +${grow}K $mode: blocks were added"; return 1; }
                    qcheck t.qcow2
                done
            done
        done
    done
    # over a backing file: the old part reads the backing file, the new
    # part zeroes; 7 clusters, as in qemu-iotests 125
    qemu-img create -q -f raw base.raw 128k
    qio raw base.raw "write -P 1 0 128k"
    local orig dst
    for orig in 31k 33k; do
        for dst in 96k 128k; do
            for mode in metadata full; do
                rm -f t.qcow2
                qemu-img create -q -f qcow2 -b base.raw -F raw -o cluster_size=64k t.qcow2 $orig
                vd resize -q --preallocation=$mode t.qcow2 $dst
                qio qcow2 t.qcow2 "read -P 1 0 $orig" "read -P 0 $orig 63k"
                qio qcow2 t.qcow2 "read -P 0 $orig $(($(numfmt --from=iec ${dst^^}) - $(numfmt --from=iec ${orig^^})))"
                [[ $(stat -c %s t.qcow2) == $((65536 * 7)) ]] ||
                    { echo "$orig to $dst $mode: $(stat -c %s t.qcow2) bytes, not 7 clusters"; return 1; }
                qcheck t.qcow2
            done
        done
    done
}
case_run "resize --preallocation: later writes use what it allocated" resize_preallocated_writes

# A size inside a cluster, grown over a backing file: the start of that
# cluster is the backing file's (before, vdisk opened no backing file for a
# resize and the start read as zeroes); with the backing file gone, that
# growth is refused and a cluster-aligned one still works.
resize_partial_cluster() {
    qemu-img create -q -f raw base.raw 128k
    qio raw base.raw "write -P 1 0 128k"
    qemu-img create -q -f qcow2 -b base.raw -F raw t.qcow2 31k
    vd resize -q t.qcow2 96k
    qio qcow2 t.qcow2 "read -P 1 0 31k" "read -P 0 31k 65k"
    qcheck t.qcow2
    qemu-img create -q -f qcow2 -u -b gone.qcow2 -F qcow2 g.qcow2 33k
    expect_exit 1 vd resize g.qcow2 1M 2>err.txt
    grep -q "gone.qcow2" err.txt
    [[ $(qinfo g.qcow2 virtual-size) == $((33 * 1024)) ]]
    qemu-img create -q -f qcow2 -u -b gone.qcow2 -F qcow2 g.qcow2 64k
    vd resize -q g.qcow2 1M
    [[ $(qinfo g.qcow2 virtual-size) == 1048576 ]]
}
case_run "resize from inside a cluster keeps the backing file's part" resize_partial_cluster

# snapshot_table FILE: each entry of a qcow2's snapshot table as
# "name extra-size disk-size" (disk size "-" where the entry has none).
# snapshot_table FILE strip: first cut every entry's extra data to 0 and
# 8 bytes, in turn, as version 2 images from old qemu have them.
snapshot_table() {
    "$PY" - "$@" <<'PYEOF'
import struct, sys
f = open(sys.argv[1], 'r+b'); h = f.read(72)
nb, off = struct.unpack('>IQ', h[60:72])
f.seek(off); raw = f.read(1 << 20)
entries, pos = [], 0
for i in range(nb):
    idl, nml = struct.unpack('>HH', raw[pos + 12:pos + 16])
    ext = struct.unpack('>I', raw[pos + 36:pos + 40])[0]
    body = raw[pos + 40:pos + 40 + ext]
    names = raw[pos + 40 + ext:pos + 40 + ext + idl + nml]
    entries.append((raw[pos:pos + 36], body, names, idl))
    pos += (40 + ext + idl + nml + 7) // 8 * 8
if len(sys.argv) > 2:
    out = b''
    for i, (fixed, body, names, idl) in enumerate(entries):
        body = body[:8 * (i % 2)]
        e = fixed + struct.pack('>I', len(body)) + body + names
        out += e + b'\0' * (-len(e) % 8)
    f.seek(off); f.write(out + b'\0' * (pos - len(out)))
else:
    for fixed, body, names, idl in entries:
        disk = struct.unpack('>Q', body[8:16])[0] if len(body) >= 16 else '-'
        print(names[idl:].decode(), len(body), disk)
PYEOF
}

# amend compat=1.1 of a version 2 image whose snapshots lack the records
# version 3 needs (their disk size): they get the image's, as qemu-img
# gives them. A version 3 image with such entries is incomplete to check,
# and -r all fills them in (qemu-iotests 261).
amend_snapshot_records() {
    qemu-img create -q -f qcow2 -o compat=0.10 v.qcow2 64M
    qemu-img snapshot -c sn0 v.qcow2
    qemu-img snapshot -c sn1 v.qcow2
    snapshot_table v.qcow2 strip
    cp v.qcow2 q.qcow2
    cp v.qcow2 b.qcow2
    qemu-img amend -o compat=1.1 q.qcow2
    vd amend -o compat=1.1 v.qcow2
    qcheck v.qcow2
    diff <(snapshot_table q.qcow2) <(snapshot_table v.qcow2)
    [[ $(snapshot_table v.qcow2) == "sn0 24 67108864"$'\n'"sn1 24 67108864" ]]
    printf '\x00\x00\x00\x03' | dd of=b.qcow2 bs=1 seek=4 conv=notrunc 2>/dev/null
    printf '\x00\x00\x00\x04\x00\x00\x00\x68' | dd of=b.qcow2 bs=1 seek=96 conv=notrunc 2>/dev/null
    expect_exit 2 vd check b.qcow2 2>err.txt
    grep -q "ERROR snapshot table entry 1 is incomplete" err.txt
    vd check -r all b.qcow2 2>err.txt
    grep -q "Repairing snapshot table entry 0 is incomplete" err.txt
    qcheck b.qcow2
    [[ $(snapshot_table b.qcow2) == "sn0 24 67108864"$'\n'"sn1 24 67108864" ]]
}
case_run "amend compat=1.1 gives old snapshots the records version 3 needs" amend_snapshot_records

finish
