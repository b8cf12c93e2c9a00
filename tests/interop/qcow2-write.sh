#!/usr/bin/env bash
# qcow2 images that vdisk writes (create, convert, snapshot, resize, check
# -r) pass `qemu-img check` and read like their source in qemu-img; vdisk's
# compare and map answer like qemu-img's.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

SIZE=$((16 * 1048576))

# option_took OPTIONS IMAGE: qemu-img info shows each create option set.
option_took() {
    local opts=$1 img=$2 kv k v
    IFS=, read -ra kv <<<"$opts"
    for o in "${kv[@]}"; do
        k=${o%%=*} v=${o#*=}
        case $k in
        compat) [[ $(qspecific "$img" compat) == "$v" ]] ;;
        cluster_size) [[ $(qinfo "$img" cluster-size) == $(numfmt --from=iec "${v^^}") ]] ;;
        refcount_bits) [[ $(qspecific "$img" refcount-bits) == "$v" ]] ;;
        lazy_refcounts) [[ $(qspecific "$img" lazy-refcounts) == true ]] ;;
        extended_l2) [[ $(qspecific "$img" extended-l2) == true ]] ;;
        compression_type) [[ $(qspecific "$img" compression-type) == "$v" ]] ;;
        preallocation)
            case $v in
            falloc | full) (($(allocated "$img") >= SIZE)) ;;
            metadata)
                qemu-img map -f qcow2 --output=json "$img" >pmap.json
                [[ $(json pmap.json 'all("offset" in e for e in d)') == True ]]
                ;;
            esac
            ;;
        esac || { echo "option $o did not take effect in $img"; qemu-img info "$img"; return 1; }
    done
}

# vdisk convert [-c] -o OPTIONS from a patterned raw image: clean and identical.
convert_to() {
    local opts=$1 compress=${2:-}
    pattern_raw src.raw 16M
    vd convert ${compress:+-c} -f raw -O qcow2 ${opts:+-o "$opts"} src.raw v.qcow2
    qcheck v.qcow2
    same_guest src.raw raw v.qcow2 qcow2
    option_took "$opts" v.qcow2
    # as sparse as qemu-img's conversion (bytes on disk), give or take a few clusters
    qemu-img convert ${compress:+-c} -f raw -O qcow2 ${opts:+-o "$opts"} src.raw q.qcow2
    local vs qs cs
    vs=$(allocated v.qcow2) qs=$(allocated q.qcow2) cs=$(qinfo q.qcow2 cluster-size)
    ((vs <= qs + qs / 10 + 4 * cs)) || { echo "v.qcow2 has $vs bytes, qemu-img's conversion $qs"; return 1; }
    if [[ -n $compress ]]; then
        qemu-img check -f qcow2 --output=json v.qcow2 >chk.json
        (($(json chk.json 'd.get("compressed-clusters", 0)') > 0)) || { echo "no compressed clusters"; return 1; }
        qemu-img convert -f raw -O qcow2 ${opts:+-o "$opts"} src.raw plain.qcow2
        (($(stat -c %s v.qcow2) < $(stat -c %s plain.qcow2))) || { echo "compressed image is not smaller than an uncompressed one"; return 1; }
        qemu-img check -f qcow2 --output=json q.qcow2 >qchk.json
        echo "compressed clusters: vdisk $(json chk.json 'd.get("compressed-clusters", 0)'), qemu-img $(json qchk.json 'd.get("compressed-clusters", 0)')"
    fi
}

# vdisk create -o OPTIONS, then qemu-io writes into it: qemu-img finds the
# layout clean and the guest bytes equal the same writes on a raw image.
create_then_write() {
    local opts=$1 c=(
        "write -P 0x11 0 64k" "write -P 0x22 102400 3000" "write -P 0x33 1M 1M"
        "write -z 1536k 64k" "write -P 0x44 6M 2M" "discard 6M 2M" "write -P 0x66 $((SIZE - 512)) 512")
    vd create -f qcow2 ${opts:+-o "$opts"} v.qcow2 "$SIZE"
    qcheck v.qcow2
    [[ $(qinfo v.qcow2 virtual-size) == "$SIZE" ]]
    option_took "$opts" v.qcow2
    qemu-img create -q -f raw ref.raw "$SIZE"
    qio raw ref.raw "${c[@]}"
    qio qcow2 v.qcow2 "${c[@]}"
    qcheck v.qcow2
    same_guest ref.raw raw v.qcow2 qcow2
}

for o in "" compat=0.10 compat=1.1 cluster_size=512 cluster_size=4k cluster_size=64k cluster_size=2M \
    refcount_bits=1 refcount_bits=2 refcount_bits=4 refcount_bits=8 refcount_bits=16 \
    refcount_bits=32 refcount_bits=64 lazy_refcounts=on extended_l2=on,cluster_size=128k \
    preallocation=metadata preallocation=falloc preallocation=full compression_type=zstd; do
    case_run "vdisk create [${o:-defaults}]" create_then_write "$o"
    case_run "vdisk convert [${o:-defaults}]" convert_to "$o"
done
for o in compression_type=zlib compression_type=zstd compression_type=zlib,cluster_size=4k \
    compression_type=zstd,cluster_size=2M compat=0.10 refcount_bits=1; do
    case_run "vdisk convert -c [$o]" convert_to "$o" c
done

# qcow2 -> qcow2 with different options, through vdisk on both sides.
qcow2_to_qcow2() {
    pattern_raw src.raw 16M
    qemu-img convert -c -f raw -O qcow2 -o cluster_size=4k src.raw a.qcow2
    vd convert -f qcow2 -O qcow2 -o cluster_size=2M,refcount_bits=8 a.qcow2 b.qcow2
    qcheck b.qcow2
    same_guest src.raw raw b.qcow2 qcow2
}
case_run "qcow2 to qcow2 with other options" qcow2_to_qcow2

# convert -n writes into an image that exists and keeps its options; -S 0
# writes every byte, zeroes too.
convert_existing() {
    pattern_raw src.raw 16M
    qemu-img create -q -f qcow2 -o cluster_size=4k,refcount_bits=8 t.qcow2 16M
    qio qcow2 t.qcow2 "write -P 9 0 16M"
    vd convert -n -f raw -O qcow2 src.raw t.qcow2
    qcheck t.qcow2
    same_guest src.raw raw t.qcow2 qcow2
    [[ $(qinfo t.qcow2 cluster-size) == 4096 && $(qspecific t.qcow2 refcount-bits) == 8 ]]
    vd convert -S 0 -f raw -O qcow2 src.raw full.qcow2
    qcheck full.qcow2
    same_guest src.raw raw full.qcow2 qcow2
    (($(stat -c %s full.qcow2) >= SIZE)) || { echo "-S 0 left zeroes unwritten"; return 1; }
}
case_run "convert -n into an existing qcow2, and -S 0" convert_existing

# Overlays: -b/-F, -o backing_file,backing_fmt, relative names, size taken
# from the backing file; and convert -B writes only the delta.
backing() {
    pattern_raw src.raw 16M
    qemu-img convert -f raw -O qcow2 src.raw base.qcow2
    vd create -f qcow2 -b base.qcow2 -F qcow2 ov1.qcow2
    vd create -f qcow2 -o backing_file=base.qcow2,backing_fmt=qcow2 ov2.qcow2
    vd create -f qcow2 -b "$W/base.qcow2" -F qcow2 ov3.qcow2 32M
    for ov in ov1 ov2; do
        [[ $(qinfo $ov.qcow2 backing-filename) == base.qcow2 ]]
        [[ $(qinfo $ov.qcow2 backing-filename-format) == qcow2 ]]
        [[ $(qinfo $ov.qcow2 virtual-size) == "$SIZE" ]]
        qcheck $ov.qcow2
        same_guest src.raw raw $ov.qcow2 qcow2
    done
    [[ $(qinfo ov3.qcow2 backing-filename) == "$W/base.qcow2" ]]
    [[ $(qinfo ov3.qcow2 virtual-size) == $((32 * 1048576)) ]]
    qemu-img compare -q -f raw -F qcow2 src.raw ov3.qcow2    # the tail reads as zeroes
    qio qcow2 ov1.qcow2 "write -P 68 2M 64k"
    qcheck ov1.qcow2
    to_raw ov1.qcow2 full.raw -f qcow2
    vd convert -f qcow2 -O qcow2 -B base.qcow2 -F qcow2 ov1.qcow2 delta.qcow2
    qcheck delta.qcow2
    [[ $(qinfo delta.qcow2 backing-filename) == base.qcow2 ]]
    same_guest full.raw raw delta.qcow2 qcow2
    (($(stat -c %s delta.qcow2) < 4 * 1048576)) || { echo "delta holds more than the delta"; return 1; }
}
case_run "overlays (-b, -o backing_file) and convert -B" backing

# Snapshots vdisk makes are listed, read and applied by qemu-img.
snapshots_by_vdisk() {
    pattern_raw src.raw 16M
    qemu-img convert -f raw -O qcow2 src.raw s.qcow2
    qio qcow2 s.qcow2 "write -c -P 0x61 8M 1M"
    to_raw s.qcow2 at-s1.raw -f qcow2
    vd snapshot -c s1 s.qcow2
    qcheck s.qcow2
    qio qcow2 s.qcow2 "write -P 119 0 1M" "write -P 120 8M 4k" "discard 4M 1M"
    qcheck s.qcow2
    to_raw s.qcow2 now.raw -f qcow2
    vd snapshot -c s2 s.qcow2
    qemu-img snapshot -l s.qcow2 >list
    grep -qw s1 list
    grep -qw s2 list
    to_raw s.qcow2 snap1.raw -f qcow2 -l snapshot.name=s1
    cmp at-s1.raw snap1.raw
    to_raw s.qcow2 snap2.raw -f qcow2 -l snapshot.name=s2
    cmp now.raw snap2.raw
    qemu-img snapshot -a s1 s.qcow2
    same_guest at-s1.raw raw s.qcow2 qcow2
    vd snapshot -a s2 s.qcow2
    qcheck s.qcow2
    same_guest now.raw raw s.qcow2 qcow2
    vd snapshot -d s1 s.qcow2
    qcheck s.qcow2
    qemu-img snapshot -l s.qcow2 >list
    not grep -qw s1 list
    grep -qw s2 list
    vd snapshot -d s2 s.qcow2
    qcheck s.qcow2
    [[ -z $(qemu-img snapshot -l s.qcow2) ]]
    same_guest now.raw raw s.qcow2 qcow2
}
case_run "snapshots made by vdisk, used by qemu-img" snapshots_by_vdisk

# Snapshots qemu-img makes are listed, read, applied and deleted by vdisk.
snapshots_by_qemu() {
    pattern_raw src.raw 16M
    qemu-img convert -f raw -O qcow2 src.raw q.qcow2
    qemu-img snapshot -c q1 q.qcow2
    qio qcow2 q.qcow2 "write -P 102 5M 1M"
    to_raw q.qcow2 now.raw -f qcow2
    vd snapshot -l q.qcow2 >list
    grep -qw q1 list
    vd convert -f qcow2 -O raw -l snapshot.name=q1 q.qcow2 q1.raw
    cmp src.raw q1.raw
    vd snapshot -a q1 q.qcow2
    qcheck q.qcow2
    same_guest src.raw raw q.qcow2 qcow2
    vd snapshot -d q1 q.qcow2
    qcheck q.qcow2
    [[ -z $(qemu-img snapshot -l q.qcow2) ]]
}
case_run "snapshots made by qemu-img, used by vdisk" snapshots_by_qemu

# resize: grow (unaligned, and far enough to move the L1 table), shrink.
resize_grow() {
    local opts=$1 from=$2 to=$3
    pattern_raw src.raw "$from"
    qemu-img convert -f raw -O qcow2 ${opts:+-o "$opts"} src.raw r.qcow2
    vd resize r.qcow2 "$to"
    qcheck r.qcow2
    local want
    want=$(numfmt --from=iec "${to#+}")
    [[ $to == +* ]] && want=$((want + $(stat -c %s src.raw)))
    [[ $(qinfo r.qcow2 virtual-size) == "$want" ]] || { echo "size $(qinfo r.qcow2 virtual-size), want $want"; return 1; }
    qemu-img compare -q -f raw -F qcow2 src.raw r.qcow2   # old content, zeroes after
    qio qcow2 r.qcow2 "write -P 7 $((want - 4096)) 4096"
    qcheck r.qcow2
}
case_run "resize grow +16M" resize_grow "" 16M +16M
case_run "resize grow to an unaligned size" resize_grow "" 16M $((20 * 1048576 + 512))
case_run "resize grow moves the L1 table [cluster_size=512]" resize_grow cluster_size=512 1M 64M
case_run "resize grow [refcount_bits=1]" resize_grow refcount_bits=1 4M 48M

resize_shrink() {
    pattern_raw src.raw 16M
    qemu-img create -q -f qcow2 r.qcow2 32M
    qemu-img convert -n -f raw -O qcow2 src.raw r.qcow2
    fails_cleanly vd resize r.qcow2 16M                 # shrinking needs --shrink
    [[ $(qinfo r.qcow2 virtual-size) == $((32 * 1048576)) ]]
    vd resize --shrink r.qcow2 16M                       # the tail holds nothing
    [[ $(qinfo r.qcow2 virtual-size) == "$SIZE" ]]
    qcheck r.qcow2
    same_guest src.raw raw r.qcow2 qcow2
    # Shrinking over data either works like qemu-img (content cut) or fails
    # cleanly leaving the image as it was.
    cp r.qcow2 r2.qcow2
    head -c $((8 * 1048576)) src.raw >cut.raw
    if vd resize --shrink r2.qcow2 8M; then
        qcheck r2.qcow2
        same_guest cut.raw raw r2.qcow2 qcow2
    else
        qcheck r2.qcow2
        same_guest src.raw raw r2.qcow2 qcow2
    fi
}
case_run "resize --shrink" resize_shrink

# shrink_both DIR_SETUP SIZE: the image q/i and v/i (made alike by the
# caller) shrunk by qemu-img and by vdisk: the same file length and map,
# both clean, the same guest bytes.
shrink_both() {
    (cd q && qemu-img resize -q --shrink i "$1")
    (cd v && vd resize -q --shrink i "$1")
    (cd q && qemu-img check -q i) && (cd v && qemu-img check -q i)
    [[ $(stat -c %s v/i) == $(stat -c %s q/i) ]] ||
        { echo "file length $(stat -c %s v/i), qemu-img's $(stat -c %s q/i)"; return 1; }
    diff <(cd q && qemu-img map --output=json i) <(cd v && qemu-img map --output=json i)
    (cd q && qemu-img convert -O raw i ../q.raw) && (cd v && qemu-img convert -O raw i ../v.raw)
    cmp q.raw v.raw
}

# resize --shrink over data, as qemu-img: the clusters past the end are
# dropped, the tables and refcount blocks left empty freed, the file cut
# after its last cluster in use. With a backing file (qemu-iotests 292),
# with 512-byte clusters (many L2 tables and refcount blocks), a snapshot,
# an external data file (cut to the new size).
shrink_over_data() {
    mkdir q v
    local d
    for d in q v; do
        (cd $d && qemu-img create -q -f qcow2 b 1M && qio qcow2 b 'write -P 0x11 0 1M' &&
            qemu-img create -q -f qcow2 -b b -F qcow2 i && qio qcow2 i 'write -P 0x22 0 1M')
    done
    shrink_both 520k
    (cd q && qemu-img resize -q i 567k) && (cd v && vd resize -q i 567k)
    (cd v && qio qcow2 i 'read -P 0x22 0 520k' 'read -P 0 520k 47k')
    diff <(cd q && qemu-img map --output=json i) <(cd v && qemu-img map --output=json i)

    for d in q v; do
        (cd $d && rm -f i b && qemu-img create -q -f qcow2 -o cluster_size=512 i 2M &&
            qio qcow2 i 'write -P 3 0 2M' 'discard 64k 64k')
    done
    shrink_both 100k
    for d in q v; do
        (cd $d && rm -f i && qemu-img create -q -f qcow2 i 4M && qio qcow2 i 'write -P 4 0 4M' &&
            qemu-img snapshot -c s1 i && qio qcow2 i 'write -P 5 1M 2M')
    done
    shrink_both $((1048576 + 512))
    (cd v && qemu-img convert -l s1 -O raw i ../s1.raw)
    (cd q && qemu-img convert -l s1 -O raw i ../q1.raw)
    cmp s1.raw q1.raw
    for d in q v; do
        (cd $d && rm -f i && qemu-img create -q -f qcow2 -o data_file=i.data i 4M &&
            qio qcow2 i 'write -P 6 0 4M')
    done
    shrink_both 1M
    [[ $(stat -c %s v/i.data) == 1048576 && $(stat -c %s q/i.data) == 1048576 ]]
}
case_run "resize --shrink over data as qemu-img" shrink_over_data

# check -r: a leaked cluster (allocated in the refcounts, used by nothing)
# and a refcount too low (a corruption), found and repaired.
# shellcheck disable=SC2089,SC2090 # Python source, not a command line
QCOW2_EDIT='
import struct, sys
path, what = sys.argv[1], sys.argv[2]
f = open(path, "r+b")
h = f.read(104)
cluster_bits, = struct.unpack(">I", h[20:24])
cs = 1 << cluster_bits
rt_off, = struct.unpack(">Q", h[48:56])
order = struct.unpack(">I", h[96:100])[0] if struct.unpack(">I", h[4:8])[0] >= 3 else 4
assert order == 4, "edit only 16-bit refcounts"
f.seek(rt_off); rb_off, = struct.unpack(">Q", f.read(8))
size = f.seek(0, 2)
def set_ref(idx, val):
    f.seek(rb_off + 2 * idx); f.write(struct.pack(">H", val))
def get_ref(idx):
    f.seek(rb_off + 2 * idx); return struct.unpack(">H", f.read(2))[0]
if what == "leak":          # append a cluster that only the refcounts know
    idx = (size + cs - 1) // cs
    f.truncate((idx + 1) * cs)
    set_ref(idx, 1)
elif what == "bump":        # a data cluster counted twice (so not COPIED)
    l1_off, = struct.unpack(">Q", h[40:48])
    f.seek(l1_off); l2, = struct.unpack(">Q", f.read(8)); l2 &= 0x00fffffffffffe00
    f.seek(l2); e, = struct.unpack(">Q", f.read(8)); data = e & 0x00fffffffffffe00
    f.seek(l2); f.write(struct.pack(">Q", e & ~(1 << 63)))
    set_ref(data // cs, get_ref(data // cs) + 1)
elif what in ("unaligned", "eof"):  # the second data entry of the first L2 table points badly
    l1_off, = struct.unpack(">Q", h[40:48])
    f.seek(l1_off); l2, = struct.unpack(">Q", f.read(8)); l2 &= 0x00fffffffffffe00
    f.seek(l2 + 8); e, = struct.unpack(">Q", f.read(8))
    host = e & 0x00fffffffffffe00
    host = host + 512 if what == "unaligned" else 1 << 40
    f.seek(l2 + 8); f.write(struct.pack(">Q", (e & ~0x00fffffffffffe00) | host))
elif what == "l1eof":       # an L1 entry whose L2 table lies past the end of the file
    l1_off, = struct.unpack(">Q", h[40:48])
    f.seek(l1_off + 8); f.write(struct.pack(">Q", (1 << 63) | (1 << 41)))
elif what == "zero":        # a data cluster nobody counts: a corruption
    l1_off, = struct.unpack(">Q", h[40:48])
    f.seek(l1_off); l2, = struct.unpack(">Q", f.read(8)); l2 &= 0x00fffffffffffe00
    f.seek(l2); e, = struct.unpack(">Q", f.read(8)); data = e & 0x00fffffffffffe00
    set_ref(data // cs, 0)
'
# shellcheck disable=SC2090
export QCOW2_EDIT
qcow2_edit() { "$PY" -c "$QCOW2_EDIT" "$@"; }

check_repair() {
    local damage=$1 want=$2 mode=$3
    pattern_raw src.raw 16M
    qemu-img convert -f raw -O qcow2 src.raw c.qcow2
    expect_exit 0 vd check c.qcow2
    qcow2_edit c.qcow2 "$damage"
    expect_exit "$want" qemu-img check -q c.qcow2     # the damage is what we meant
    expect_exit "$want" vd check c.qcow2
    vd check --output=json c.qcow2 >v.json || true
    qemu-img check --output=json c.qcow2 >q.json || true
    "$PY" - q.json v.json <<'PY'
import json, sys
q, v = (json.load(open(p)) for p in sys.argv[1:3])
for k in ("leaks", "corruptions"):
    assert q.get(k, 0) == v.get(k, 0), "%s: qemu-img %r, vdisk %r" % (k, q.get(k), v.get(k))
PY
    vd check -r "$mode" c.qcow2
    expect_exit 0 vd check c.qcow2
    expect_exit 0 qemu-img check c.qcow2
    same_guest src.raw raw c.qcow2 qcow2
}
case_run "check: a leaked cluster (exit 3), -r leaks repairs it" check_repair leak 3 leaks
case_run "check: a leaked cluster (exit 3), -r all repairs it" check_repair leak 3 all
case_run "check: a refcount too high (exit 3), -r all repairs it" check_repair bump 3 all
case_run "check: a refcount of 0 on data (exit 2), -r all repairs it" check_repair zero 2 all

# -r all on bad L1/L2 entries: the mapping is dropped (it now reads as
# zeroes), everything else is kept, and qemu-img finds the result clean.
check_repair_entry() {
    local damage=$1 zeroed=$2
    qemu-img create -q -f qcow2 c.qcow2 1G
    qio qcow2 c.qcow2 "write -P 1 0 64k" "write -P 2 64k 64k" "write -P 3 128k 64k" "write -P 4 600M 64k"
    qcow2_edit c.qcow2 "$damage"
    expect_exit 2 qemu-img check -q c.qcow2
    expect_exit 2 vd check c.qcow2
    expect_exit 2 vd check -r leaks c.qcow2      # leaks only: the corruption stays
    vd check -r all c.qcow2 >out.txt 2>&1
    grep -q '^Repairing L[12] entry' out.txt
    expect_exit 0 qemu-img check c.qcow2
    expect_exit 0 vd check c.qcow2
    local cmds=("read -P 1 0 64k" "read -P 3 128k 64k" "read -P 4 600M 64k")
    case $zeroed in
    64k) cmds[1]="read -P 3 128k 64k" cmds+=("read -P 0 64k 64k") ;;
    600M) cmds[2]="read -P 0 600M 64k" cmds+=("read -P 2 64k 64k") ;;
    esac
    qio qcow2 c.qcow2 "${cmds[@]}"
}
case_run "check -r all: an unaligned data cluster in an L2 entry" check_repair_entry unaligned 64k
case_run "check -r all: an L2 entry past the end of the file" check_repair_entry eof 64k
case_run "check -r all: an L1 entry past the end of the file" check_repair_entry l1eof 600M

# compare: 0 identical, 1 different, 2 on error; -s makes a size difference count.
compare_codes() {
    pattern_raw src.raw 16M
    qemu-img convert -f raw -O qcow2 src.raw a.qcow2
    expect_exit 0 vd compare src.raw a.qcow2
    expect_exit 0 vd compare -f raw -F qcow2 src.raw a.qcow2
    cp src.raw other.raw
    printf 'x' | dd of=other.raw bs=1 seek=$((9 * 1048576 + 7)) conv=notrunc status=none
    expect_exit 1 vd compare -f raw -F qcow2 other.raw a.qcow2
    vd compare -f raw -F qcow2 other.raw a.qcow2 >out || true
    grep -q "$((9 * 1048576))" out || { echo "compare does not name the offset:"; cat out; return 1; }
    cp src.raw big.raw
    truncate -s 20M big.raw
    expect_exit 0 vd compare big.raw a.qcow2       # the longer one reads zero past the end
    expect_exit 1 vd compare -s big.raw a.qcow2
    printf 'y' | dd of=big.raw bs=1 seek=$((18 * 1048576)) conv=notrunc status=none
    expect_exit 1 vd compare big.raw a.qcow2
    expect_exit 2 vd compare src.raw missing.qcow2
    printf 'QFI\xfbgarbage' >bad.qcow2
    expect_exit 2 vd compare -f raw -F qcow2 src.raw bad.qcow2
}
case_run "compare exit codes 0/1/2" compare_codes

# map --output=json agrees with qemu-img map once runs of equal (zero,
# data) are merged.
map_agrees() {
    local img=$1
    shift
    qemu-img map --output=json "$@" "$img" >q.json
    vd map --output=json "$@" "$img" >v.json
    merged_map q.json >q.map
    merged_map v.json >v.map
    diff q.map v.map || { echo "map differs (qemu-img <, vdisk >)"; return 1; }
}
map_qcow2() {
    local opts=$1 c=(
        "write -P 1 0 64k" "write -z 1M 128k" "write -P 2 2M 1M" "write -z 2M 64k"
        "write -P 4 $((SIZE - 4096)) 4096")
    # compressed writes need unallocated clusters
    [[ $opts == *preallocation* ]] || c+=("write -c -P 3 4M 1M")
    qemu-img create -q -f qcow2 ${opts:+-o "$opts"} m.qcow2 "$SIZE"
    qio qcow2 m.qcow2 "${c[@]}"
    map_agrees m.qcow2 -f qcow2
}
case_run "map agrees with qemu-img [defaults]" map_qcow2 ""
case_run "map agrees with qemu-img [cluster_size=4k]" map_qcow2 cluster_size=4k
case_run "map agrees with qemu-img [extended_l2=on,cluster_size=128k]" map_qcow2 extended_l2=on,cluster_size=128k
case_run "map agrees with qemu-img [preallocation=metadata]" map_qcow2 preallocation=metadata
map_chain() {
    pattern_raw base.raw 16M
    qemu-img create -q -f qcow2 -b base.raw -F raw ov.qcow2
    qio qcow2 ov.qcow2 "write -P 5 1M 64k" "write -z 3M 64k" "discard 6M 64k"
    map_agrees ov.qcow2 -f qcow2
}
case_run "map agrees with qemu-img [backing chain]" map_chain

# Persistent dirty bitmaps: qemu reads them back (through qemu-nbd, the way
# backup tools do) after vdisk wrote, resized and switched snapshots.
# dirty IMAGE BITMAP: the dirty ranges, "start+length" per line.
dirty() {
    local sock=$W/nbd.sock pid
    rm -f "$sock"
    qemu-nbd -k "$sock" -r -f qcow2 -B "$2" "$1" &
    pid=$!
    for _ in $(seq 50); do [[ -S $sock ]] && break; sleep 0.1; done
    qemu-img map --output=json --image-opts \
        "driver=nbd,server.type=unix,server.path=$sock,x-dirty-bitmap=qemu:dirty-bitmap:$2" >dmap.json
    kill "$pid" && wait "$pid" 2>/dev/null
    # qemu reports a dirty range as "data": false
    json dmap.json '"\n".join("%d+%d" % (e["start"], e["length"]) for e in d if not e["data"])'
}
export -f dirty

bitmaps_kept() {
    command -v qemu-nbd >/dev/null || { echo "qemu-nbd missing"; return 1; }
    qemu-img create -q -f qcow2 b.qcow2 64M
    qemu-img bitmap --add b.qcow2 b0
    qemu-img bitmap --add -g 512 b.qcow2 fine
    qemu-img bitmap --add b.qcow2 off
    qemu-img bitmap --disable b.qcow2 off
    qemu-io -c 'write 4M 1M' b.qcow2 >/dev/null      # qemu's own bits, to keep
    qemu-img create -q -f raw src.raw 64M
    qemu-io -f raw -c 'write -P 9 10M 64k' -c 'write -P 8 33M 4k' src.raw >/dev/null
    cp b.qcow2 q.qcow2
    vd convert -n --target-is-zero -f raw -O qcow2 src.raw b.qcow2
    qemu-img convert -n --target-is-zero -f raw -O qcow2 src.raw q.qcow2
    qcheck b.qcow2
    # every bitmap as qemu-img's own write left it; the disabled one untouched
    for bm in b0 fine off; do
        [[ $(dirty b.qcow2 "$bm") == "$(dirty q.qcow2 "$bm")" ]] ||
            { echo "bitmap $bm: vdisk $(dirty b.qcow2 "$bm"), qemu-img $(dirty q.qcow2 "$bm")"; return 1; }
    done
    [[ $(dirty b.qcow2 fine) == $'4194304+1048576\n10485760+65536\n34603008+4096' ]]
    [[ -z $(dirty b.qcow2 off) ]]
    # not left in use, and still enabled
    qemu-img info --output=json b.qcow2 >i.json
    [[ $(json i.json '[b["flags"] for b in d["format-specific"]["data"]["bitmaps"]]') == "[['auto'], ['auto'], []]" ]]
    # and vdisk info lists them as qemu-img info does
    vd info --output=json b.qcow2 >vi.json
    [[ $(json vi.json 'd["format-specific"]["data"]["bitmaps"]') == \
        "$(json i.json 'd["format-specific"]["data"]["bitmaps"]')" ]]
}
case_run "dirty bitmaps: vdisk's writes set the bits qemu-img's set" bitmaps_kept

bitmaps_resize_and_snapshots() {
    qemu-img create -q -f qcow2 b.qcow2 3G
    qemu-img bitmap --add -g 512 b.qcow2 fine
    qemu-io -c 'write 1M 4k' -c 'write 2G 64k' -c 'discard 2G 64k' b.qcow2 >/dev/null
    vd resize --shrink b.qcow2 30M      # the table shrinks, the bit at 2G goes
    qcheck b.qcow2
    [[ $(dirty b.qcow2 fine) == 1048576+4096 ]]
    vd resize b.qcow2 4G                # the table grows (qemu writes past the old end)
    qcheck b.qcow2
    qemu-io -c 'write 3G 4k' b.qcow2 >/dev/null
    [[ $(dirty b.qcow2 fine) == $'1048576+4096\n3221225472+4096' ]]
    # a snapshot switch may change every byte: all of it is dirty
    vd snapshot -c s1 b.qcow2
    [[ $(dirty b.qcow2 fine) == $'1048576+4096\n3221225472+4096' ]]
    vd snapshot -a s1 b.qcow2
    qcheck b.qcow2
    [[ $(dirty b.qcow2 fine) == 0+4294967296 ]]
}
case_run "dirty bitmaps follow resize and snapshot switches" bitmaps_resize_and_snapshots

bitmaps_inconsistent() {
    qemu-img create -q -f qcow2 b.qcow2 64M
    qemu-img bitmap --add b.qcow2 good
    qemu-img bitmap --add b.qcow2 stale
    # mark "stale" in use, as a crash mid-session leaves it
    "$PY" - b.qcow2 <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b")
h = f.read(4096)
off = struct.unpack(">I", h[100:104])[0]
while True:
    t, n = struct.unpack(">II", h[off:off + 8])
    if t == 0x23852875:
        dir_off = struct.unpack(">Q", h[off + 24:off + 32])[0]
        break
    off += 8 + (n + 7) // 8 * 8
f.seek(dir_off); d = f.read(4096); pos = 0
while True:
    name_size, extra = struct.unpack(">HI", d[pos + 18:pos + 24])
    if d[pos + 24 + extra:pos + 24 + extra + name_size] == b"stale":
        flags = struct.unpack(">I", d[pos + 12:pos + 16])[0]
        f.seek(dir_off + pos + 12); f.write(struct.pack(">I", flags | 1)); break
    pos += (24 + extra + name_size + 7) // 8 * 8
PY
    qemu-img info b.qcow2 | grep -q in-use
    qemu-img create -q -f raw src.raw 64M
    qemu-io -f raw -c 'write -P 3 8M 64k' src.raw >/dev/null
    vd convert -n --target-is-zero -f raw -O qcow2 src.raw b.qcow2
    [[ $(dirty b.qcow2 good) == 8388608+65536 ]]
    qemu-img info --output=json b.qcow2 >i.json   # left as it was
    [[ $(json i.json '{b["name"]: b["flags"] for b in d["format-specific"]["data"]["bitmaps"]}') == \
        "{'good': ['auto'], 'stale': ['in-use', 'auto']}" ]]
    expect_exit 1 vd resize b.qcow2 128M
    out=$(vd resize b.qcow2 128M 2>&1) || true
    grep -q "bitmap 'stale' is inconsistent" <<<"$out"
    [[ $(qinfo b.qcow2 virtual-size) == 67108864 ]]
}
case_run "dirty bitmaps: one left in use stays so, and blocks a resize" bitmaps_inconsistent

bitmaps_and_repair() {
    qemu-img create -q -f qcow2 c.qcow2 1G
    qemu-img bitmap --add c.qcow2 b0
    qio qcow2 c.qcow2 "write -P 1 0 64k" "write -P 2 64k 64k"
    qemu-img bitmap --clear c.qcow2 b0
    qcow2_edit c.qcow2 unaligned
    vd check -r all c.qcow2 >/dev/null
    expect_exit 0 qemu-img check c.qcow2
    # the bitmap survived the repair and names the range whose content it changed
    [[ $(dirty c.qcow2 b0) == 65536+65536 ]]
}
case_run "check -r all keeps dirty bitmaps and marks what it dropped" bitmaps_and_repair

# rebase: the guest sees the same disk on the new backing file, laid out as
# qemu-img rebase lays it out; -u only renames; -b "" flattens.
rebase_images() {
    qemu-img create -q -f qcow2 base1.qcow2 64M
    qio qcow2 base1.qcow2 "write -P 1 0 8M" "write -P 3 40M 1M"
    qemu-img create -q -f qcow2 base2.qcow2 64M
    qio qcow2 base2.qcow2 "write -P 1 0 4M" "write -P 2 4M 4M" "write -P 9 50M 64k"
    qemu-img create -q -f qcow2 -b base1.qcow2 -F qcow2 top.qcow2
    qio qcow2 top.qcow2 "write -P 7 1M 64k" "write -P 8 6M 128k"
    qemu-img convert -O raw top.qcow2 before.raw
    cp top.qcow2 qtop.qcow2
}
export -f rebase_images

rebase_safe() {
    rebase_images
    vd rebase -q -b base2.qcow2 -F qcow2 top.qcow2
    qcheck top.qcow2
    [[ $(qinfo top.qcow2 backing-filename) == base2.qcow2 ]]
    [[ $(qinfo top.qcow2 backing-filename-format) == qcow2 ]]
    same_guest before.raw raw top.qcow2 qcow2
    qemu-img rebase -b base2.qcow2 -F qcow2 qtop.qcow2
    qemu-img map --output=json top.qcow2 >v.json
    qemu-img map --output=json qtop.qcow2 >q.json
    cmp v.json q.json || { echo "layout differs from qemu-img rebase"; diff v.json q.json; return 1; }
}
case_run "rebase onto another backing file: same content, same layout as qemu-img" rebase_safe

rebase_unsafe_and_flatten() {
    rebase_images
    mkdir moved && cp base1.qcow2 moved/
    vd rebase -u -b moved/base1.qcow2 -F qcow2 top.qcow2   # only the name changes
    [[ $(qinfo top.qcow2 backing-filename) == moved/base1.qcow2 ]]
    same_guest before.raw raw top.qcow2 qcow2
    vd rebase -b "" top.qcow2
    [[ -z $(qinfo top.qcow2 backing-filename) ]]
    rm -r moved base1.qcow2
    qcheck top.qcow2
    same_guest before.raw raw top.qcow2 qcow2
    expect_exit 1 vd rebase top.qcow2                      # -b is required
    expect_exit 1 vd rebase -b missing.qcow2 -F qcow2 top.qcow2
    [[ -z $(qinfo top.qcow2 backing-filename) ]]           # a failed rebase changes nothing
}
case_run "rebase -u renames the backing file, -b \"\" flattens" rebase_unsafe_and_flatten

# commit: the base ends up as qemu-img commit leaves it, the overlay empty.
commit_images() {
    qemu-img create -q -f qcow2 base.qcow2 32M
    qio qcow2 base.qcow2 "write -P 1 0 8M"
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 48M
    qio qcow2 mid.qcow2 "write -P 5 12M 1M"
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 48M
    qio qcow2 top.qcow2 "write -P 7 1M 64k" "write -z 2M 1M" "write -P 8 40M 128k"
    qemu-img convert -O raw top.qcow2 before.raw
    mkdir q && cp base.qcow2 mid.qcow2 top.qcow2 q/
}
export -f commit_images

commit_into_backing() {
    commit_images
    vd commit -q top.qcow2
    (cd q && qemu-img commit -q top.qcow2)
    for f in base mid top; do qcheck $f.qcow2; done
    same_guest before.raw raw top.qcow2 qcow2       # the chain shows the same disk
    same_guest before.raw raw mid.qcow2 qcow2       # and so does the backing file alone
    same_guest q/mid.qcow2 qcow2 mid.qcow2 qcow2    # as qemu-img's commit left it
    qemu-img map --output=json -f qcow2 top.qcow2 >m.json
    [[ $(json m.json 'sum(1 for e in d if e["depth"] == 0)') == 0 ]]   # emptied
}
case_run "commit into the backing file, then the overlay is empty" commit_into_backing

commit_deeper() {
    commit_images
    vd commit -q -b base.qcow2 top.qcow2            # -b: into the base, implies -d
    qcheck base.qcow2
    [[ $(qinfo base.qcow2 virtual-size) == 50331648 ]]   # grown to the overlay's size
    same_guest before.raw raw base.qcow2 qcow2
    same_guest before.raw raw top.qcow2 qcow2        # the overlay kept its data
    vd commit -q -d mid.qcow2 2>/dev/null            # -d: keep the overlay as it is
    qemu-img map --output=json -f qcow2 mid.qcow2 >m.json
    [[ $(json m.json 'sum(1 for e in d if e["depth"] == 0)') -gt 0 ]]
    expect_exit 1 vd commit base.qcow2               # nothing to commit into
    expect_exit 1 vd commit -b src.nothere top.qcow2
}
case_run "commit -b into a deeper base, -d keeps the overlay, clear errors" commit_deeper

# create -o data_file=: the image and its data file as qemu-img makes them,
# byte for byte, in every preallocation mode, raw or not (data_file_raw
# maps every cluster from the start); written by qemu-io they stay alike.
# What qemu-img refuses is refused in its words, and nothing is left.
create_data_file() {
    mkdir v q
    local m raw
    for m in off metadata falloc full; do
        for raw in off on; do
            (cd v && vd create -q -f qcow2 -o data_file=d,preallocation=$m,data_file_raw=$raw i 4M)
            (cd q && qemu-img create -q -f qcow2 -o data_file=d,preallocation=$m,data_file_raw=$raw i 4M)
            cmp v/i q/i
            cmp v/d q/d
            case $m in
            falloc | full) (($(allocated v/d) >= 4194304)) ;;
            *) (($(allocated v/d) < 1048576)) ;;
            esac
            (cd v && qcheck i && qio qcow2 i 'write -P 7 1M 64k')
            (cd q && qio qcow2 i 'write -P 7 1M 64k')
            cmp v/i q/i
            cmp v/d q/d
        done
    done
    echo old >v/d
    (cd v && vd create -q -f qcow2 -o data_file=d i 4M)
    [[ $(stat -c %s v/d) == 4194304 && $(allocated v/d) == 0 ]]  # emptied, as qemu-img does
    rm -f v/*
    (cd v && expect_exit 1 vd create -q -f qcow2 -o data_file_raw=on i 1M) 2>err.txt
    grep -q "data-file-raw requires data-file" err.txt
    (cd v && expect_exit 1 vd create -q -f qcow2 -o compat=0.10,data_file=d i 1M) 2>err.txt
    grep -q "only supported with compatibility level 1.1" err.txt
    (cd v && expect_exit 1 vd create -q -f qcow2 -b ../q/i -F qcow2 -o data_file=d,data_file_raw=on i 1M) 2>err.txt
    grep -q "Backing file and data-file-raw cannot be used at the same time" err.txt
    # refused once the data file is made: it goes too
    (cd v && expect_exit 1 vd create -q -f qcow2 -o cluster_size=512,data_file=d i 8T) 2>err.txt
    [[ -z $(ls v) ]]
}
case_run "create -o data_file= makes qemu-img's image and data file" create_data_file

finish
