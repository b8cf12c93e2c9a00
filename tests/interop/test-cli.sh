#!/usr/bin/env bash
# test-cli.sh: every `vdisk` subcommand against qemu-img as the oracle:
# options, output (human and JSON, line for line where qemu-img's is
# deterministic), exit codes and the files written.
#
# Raw cases always run; qcow2 cases run once the build knows qcow2.
# Environment and conventions: see lib.sh.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

SKIPPED=0
have_qcow2() { vd --help | grep -Eq '^Formats:(.*[ ,])?qcow2(,|$)'; }
qcow2_case() {
    if have_qcow2; then
        case_run "$@"
    else
        SKIPPED=$((SKIPPED + 1))
    fi
}

# json_same A B [KEY...]: the two JSON documents are equal (on KEYs if given).
json_same() {
    "$PY" - "$@" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
keys = sys.argv[3:]
if keys:
    a = {k: a.get(k) for k in keys}
    b = {k: b.get(k) for k in keys}
if a != b:
    print("vdisk:   ", json.dumps(a, sort_keys=True))
    print("qemu-img:", json.dumps(b, sort_keys=True))
    sys.exit(1)
PY
}

# set_refcount FILE leak|header VALUE: edit a qcow2 refcount in place.
# "leak" appends a cluster and gives it refcount VALUE (a leak when 1);
# "header" sets the header cluster's refcount (a corruption when 0).
set_refcount() {
    "$PY" - "$1" "$2" "$3" <<'PY'
import struct, sys, os
path, which, value = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(path, "r+b") as f:
    hdr = f.read(104)
    cs = 1 << struct.unpack(">I", hdr[20:24])[0]
    rt_off = struct.unpack(">Q", hdr[48:56])[0]
    version = struct.unpack(">I", hdr[4:8])[0]
    order = struct.unpack(">I", hdr[96:100])[0] if version >= 3 else 4
    assert order == 4, "test expects 16-bit refcounts"
    index = 0
    if which == "leak":
        end = (os.path.getsize(path) + cs - 1) // cs * cs
        f.truncate(end + cs)
        index = end // cs
    assert index < cs // 2, "cluster outside the first refcount block"
    f.seek(rt_off)
    block = struct.unpack(">Q", f.read(8))[0]
    f.seek(block + 2 * index)
    f.write(struct.pack(">H", value))
PY
}

export -f json_same set_refcount

# ---- general ----

t_help() {
    vd --help >out
    for c in info create convert check compare snapshot resize map; do
        grep -q "^  $c " out
        vd $c --help >piped; grep -q "vdisk $c" piped
        vd help $c >piped; grep -q Examples piped
    done
    vd --version >piped; grep -Eq '^vdisk version [0-9]' piped
    expect_exit 1 vd frobnicate 2>err
    grep -q "^vdisk: no command 'frobnicate'" err
    expect_exit 1 vd info --bogus x 2>err
    grep -q "unknown option '--bogus'" err
    expect_exit 1 vd info 2>err
    grep -q "missing file name" err
}
case_run "help, version and usage errors" t_help

t_missing_file() {
    for args in "info nonexistent.img" "check nonexistent.img" "map nonexistent.img" \
        "snapshot -l nonexistent.img" "resize -f raw nonexistent.img 1M" \
        "convert -O raw nonexistent.img out.raw"; do
        rc=0
        vd $args >out 2>&1 || rc=$?
        ((rc == 1)) || { echo "vdisk $args: exit $rc"; cat out; exit 1; }
        grep -q "^vdisk: .*nonexistent.img" out
    done
    expect_exit 2 vd compare nonexistent.img nonexistent.img 2>/dev/null
}
case_run "a missing file is a clean error" t_missing_file

# ---- create ----

t_create_raw() {
    vd create -f raw a.raw 64M >out
    grep -qx "Formatting 'a.raw', fmt=raw size=67108864" out
    [[ $(qinfo a.raw virtual-size) == 67108864 ]]
    vd create -q -fraw b.raw 1G >out
    [[ ! -s out ]]
    [[ $(stat -c %s b.raw) == 1073741824 ]]
    expect_exit 1 vd create -f raw c.raw 2>err
    grep -q "^vdisk: c.raw: Image creation needs a size parameter: give one" err
    expect_exit 1 vd create -f raw c.raw 12Q 2>err
    grep -q "invalid size" err
    vd create -f raw -o help >piped; grep -q '^Supported raw options:' piped
}
case_run "create raw" t_create_raw

t_create_qcow2() {
    vd create -f qcow2 -o cluster_size=4k a.qcow2 100M >out
    grep -q "^Formatting 'a.qcow2', fmt=qcow2 .*cluster_size=4096 extended_l2=off" out
    qemu-img check -f qcow2 a.qcow2
    qemu-img info -f qcow2 --output=json a.qcow2 >q.json
    [[ $(json q.json 'd["virtual-size"]') == 104857600 ]]
    [[ $(json q.json 'd["cluster-size"]') == 4096 ]]
    # an overlay takes its size from the backing file; -F is probed when missing
    vd create -f qcow2 -b a.qcow2 -F qcow2 o1.qcow2
    vd create -q -f qcow2 -b a.qcow2 o2.qcow2
    vd create -f qcow2 -o backing_file=a.qcow2,backing_fmt=qcow2 o3.qcow2 >/dev/null
    for o in o1 o2 o3; do
        qemu-img info --output=json $o.qcow2 >o.json
        [[ $(json o.json 'd["virtual-size"]') == 104857600 ]]
        [[ $(json o.json 'd["backing-filename"]') == a.qcow2 ]]
        [[ $(json o.json 'd["backing-filename-format"]') == qcow2 ]]
        qemu-img check $o.qcow2
    done
    vd create -f qcow2 -o help >piped; grep -q cluster_size piped
}
qcow2_case "create qcow2 and overlays" t_create_qcow2

# ---- info ----

t_info_raw() {
    pattern_raw a.raw 16M
    vd info -f raw a.raw >v.txt
    qemu-img info -f raw a.raw >q.txt
    diff -u q.txt v.txt
    vd info --output=json -f raw a.raw >v.json
    qemu-img info --output=json -f raw a.raw >q.json
    json_same v.json q.json
    # reading never warns about probing
    vd info a.raw 2>err >/dev/null
    [[ ! -s err ]]
}
case_run "info raw is qemu-img's" t_info_raw

t_info_qcow2() {
    pattern_raw a.raw 16M
    qemu-img convert -f raw -O qcow2 -o cluster_size=16k a.raw base.qcow2
    qemu-img snapshot -c snap1 base.qcow2
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    for f in base top; do
        vd info --output=json $f.qcow2 >v.json
        qemu-img info --output=json $f.qcow2 >q.json
        json_same v.json q.json virtual-size filename format cluster-size dirty-flag \
            backing-filename backing-filename-format full-backing-filename format-specific \
            encrypted
        "$PY" - v.json q.json <<'PY'
import json, sys
v, q = (json.load(open(f)) for f in sys.argv[1:])
strip = lambda s: [{k: x[k] for k in ("id", "name", "vm-state-size", "date-sec", "vm-clock-sec")}
                   for x in s.get("snapshots", [])]
assert strip(v) == strip(q), (v.get("snapshots"), q.get("snapshots"))
PY
        # human output: same lines apart from the disk size
        diff -u <(qemu-img info $f.qcow2 | grep -v '^disk size') \
            <(vd info $f.qcow2 | grep -v '^disk size')
    done
    vd info --output=json --backing-chain top.qcow2 >v.json
    qemu-img info --output=json --backing-chain top.qcow2 >q.json
    "$PY" - v.json q.json <<'PY'
import json, sys
v, q = (json.load(open(f)) for f in sys.argv[1:])
assert [i["filename"] for i in v] == [i["filename"] for i in q], (v, q)
PY
    diff -u <(qemu-img info --backing-chain top.qcow2 | grep -v '^disk size') \
        <(vd info --backing-chain top.qcow2 | grep -v '^disk size')
}
qcow2_case "info qcow2 (snapshots, backing chain) is qemu-img's" t_info_qcow2

# ---- map ----

t_map_raw() {
    pattern_raw a.raw 16M
    diff -u <(qemu-img map -f raw --output=json a.raw) <(vd map -f raw --output=json a.raw)
    diff -u <(qemu-img map -f raw a.raw) <(vd map -f raw a.raw)
}
case_run "map raw is qemu-img's" t_map_raw

t_map_qcow2() {
    pattern_raw a.raw 16M
    qemu-img convert -f raw -O qcow2 a.raw base.qcow2
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    qemu-io -f qcow2 -c 'write -P 9 1M 128k' -c 'write -z 8M 64k' -c 'discard 3M 64k' \
        top.qcow2 >/dev/null
    for f in base top; do
        diff -u <(qemu-img map --output=json $f.qcow2) <(vd map --output=json $f.qcow2)
        diff -u <(qemu-img map $f.qcow2) <(vd map $f.qcow2)
    done
}
qcow2_case "map qcow2 with a backing chain is qemu-img's" t_map_qcow2

# ---- convert ----

t_convert_raw() {
    pattern_raw a.raw 32M
    vd convert -f raw -O raw a.raw b.raw
    cmp a.raw b.raw
    (($(du -k b.raw | cut -f1) < 8192)) # holes stay holes
    # no -O and no extension (a device's name): raw, with a note
    vd convert -f raw a.raw c 2>err
    grep -q "writing raw" err
    cmp a.raw c
    # no -O and an extension that names no format: an error, not a guess
    expect_exit 1 vd convert -f raw a.raw c.data 2>err
    grep -q "extension '.data' of 'c.data' names no image format; give -O FMT" err
    [[ ! -e c.data ]]
    # -n writes into an existing image
    qemu-img create -q -f raw d.raw 32M
    vd convert -n -f raw -O raw a.raw d.raw
    cmp a.raw d.raw
    # -p without a terminal prints qemu-img's lines; -q silences it
    vd convert -p -f raw -O raw a.raw e.raw >out
    grep -q '(100.00/100%)' out
    vd convert -q -p -f raw -O raw a.raw f.raw >out
    [[ ! -s out ]]
    expect_exit 1 vd convert -f raw -O raw a.raw a.raw 2>err
    grep -q "is the source image" err
}
case_run "convert raw" t_convert_raw

t_convert_qcow2() {
    pattern_raw a.raw 32M
    vd convert -f raw a.raw b.qcow2 # format from the extension
    [[ $(qinfo b.qcow2 format) == qcow2 ]]
    qemu-img check b.qcow2
    qemu-img compare -f raw -F qcow2 a.raw b.qcow2
    vd convert -c -O qcow2 -o cluster_size=64k -fraw a.raw c.qcow2
    qemu-img check c.qcow2
    qemu-img compare -f raw -F qcow2 a.raw c.qcow2
    vd convert -m 4 -W -f qcow2 -O raw c.qcow2 d.raw
    cmp a.raw d.raw
    # snapshots: -l snapshot.name= and -l NAME (-s is gone, as in qemu-img 7.2)
    qemu-img snapshot -c s1 b.qcow2
    qemu-io -f qcow2 -c 'write -P 99 0 64k' b.qcow2 >/dev/null
    vd convert -l snapshot.name=s1 -O raw b.qcow2 s1.raw
    cmp a.raw s1.raw
    vd convert -l s1 -O raw b.qcow2 s2.raw
    cmp a.raw s2.raw
    expect_exit 1 vd convert -s s1 -O raw b.qcow2 s3.raw 2>/dev/null
    expect_exit 1 vd convert -l nosuch -O raw b.qcow2 s4.raw 2>err
    grep -q "nosuch" err
    # -B: only the top layer's data is written
    qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 top.qcow2
    qemu-io -f qcow2 -c 'write -P 5 2M 64k' top.qcow2 >/dev/null
    vd convert -O qcow2 -B b.qcow2 -F qcow2 top.qcow2 delta.qcow2
    qemu-img check delta.qcow2
    qemu-img compare top.qcow2 delta.qcow2
    (($(stat -c %s delta.qcow2) < 2 * 1048576))
}
qcow2_case "convert qcow2 (-c, -l, -s, -B, extension)" t_convert_qcow2

t_convert_cancel() {
    # Enough data that the copy is still running when Ctrl-C arrives.
    qemu-img create -q -f raw big.raw 1G
    qemu-io -f raw -c 'write -P 7 0 1G' big.raw >/dev/null
    rc=0
    # vdisk itself, not the vd wrapper: the signal must reach it.
    "$VDISK" convert -S 0 -f raw -O raw big.raw out.raw >log 2>&1 &
    pid=$!
    # Ctrl-C once the copy has written data (its handler is set by then:
    # before it, SIGINT would end vdisk as it ends any program; the hidden
    # target has its full length from the start), or after 10 s.
    local i
    for ((i = 0; i < 200; i++)); do
        [[ $(du -c .out.raw.partial-* 2>/dev/null | tail -1 | cut -f1) -gt 0 ]] && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.05
    done
    kill -INT $pid
    wait $pid || rc=$?
    if ((rc == 0)); then
        echo "the copy finished before the interrupt; nothing to check"
        exit 0
    fi
    ((rc == 1)) || { echo "exit $rc"; cat log; exit 1; }
    grep -q "vdisk: cancelled" log
    [[ ! -e out.raw ]]
}
case_run "Ctrl-C cancels convert and removes the target" t_convert_cancel

# ---- check ----

t_check_raw() {
    qemu-img create -q -f raw a.raw 1M
    expect_exit 63 vd check -f raw a.raw 2>err
    grep -q "does not support checks" err
}
case_run "check raw: not supported (63)" t_check_raw

t_check_qcow2() {
    pattern_raw a.raw 16M
    qemu-img convert -f raw -O qcow2 a.raw a.qcow2
    vd check a.qcow2 >out
    grep -qx "No errors were found on the image." out
    diff -u <(qemu-img check a.qcow2) out
    vd check --output=json a.qcow2 >v.json
    qemu-img check --output=json a.qcow2 >q.json
    json_same v.json q.json
    # leaks: exit 3, the same JSON, repaired by -r leaks
    cp a.qcow2 l.qcow2
    set_refcount l.qcow2 leak 1
    expect_exit 3 qemu-img check l.qcow2 >/dev/null 2>&1
    expect_exit 3 vd check l.qcow2 >out 2>/dev/null
    grep -q "1 leaked clusters were found on the image." out
    vd check --output=json l.qcow2 >v.json 2>/dev/null || true
    qemu-img check --output=json l.qcow2 >q.json 2>/dev/null || true
    json_same v.json q.json check-errors leaks corruptions
    vd check -r leaks l.qcow2 >out 2>/dev/null
    grep -q "Double checking the fixed image now" out
    qemu-img check l.qcow2
    # corruption: exit 2
    cp a.qcow2 c.qcow2
    set_refcount c.qcow2 header 0
    expect_exit 2 qemu-img check c.qcow2 >/dev/null 2>&1
    expect_exit 2 vd check c.qcow2 >out 2>/dev/null
    grep -q "errors were found on the image" out
}
qcow2_case "check qcow2: clean 0, leaks 3, corrupt 2, -r leaks" t_check_qcow2

# ---- compare ----

t_compare() {
    pattern_raw a.raw 16M
    cp --sparse=always a.raw b.raw
    vd compare -f raw -F raw a.raw b.raw >out
    grep -qx "Images are identical." out
    qemu-io -f raw -c 'write -P 1 7M 512' b.raw >/dev/null
    expect_exit 1 vd compare -f raw -F raw a.raw b.raw >v.txt
    expect_exit 1 qemu-img compare -f raw -F raw a.raw b.raw >q.txt
    diff -u q.txt v.txt
    # different sizes: equal unless strict, like qemu-img
    cp --sparse=always a.raw c.raw
    truncate -s 20M c.raw
    expect_exit 0 vd compare -f raw -F raw a.raw c.raw >out
    grep -q "Image size mismatch" out
    expect_exit 1 vd compare -s -f raw -F raw a.raw c.raw >out
    grep -qx "Strict mode: Image size mismatch!" out
    expect_exit 1 vd compare -q -f raw -F raw a.raw b.raw >out
    [[ ! -s out ]]
}
case_run "compare: 0 identical, 1 different, strict sizes" t_compare

t_compare_qcow2() {
    pattern_raw a.raw 16M
    qemu-img convert -f raw -O qcow2 a.raw a.qcow2
    vd compare a.raw a.qcow2
    qemu-io -f qcow2 -c 'write -P 1 9M 4k' a.qcow2 >/dev/null
    expect_exit 1 vd compare -f raw -F qcow2 a.raw a.qcow2 >v.txt
    expect_exit 1 qemu-img compare -f raw -F qcow2 a.raw a.qcow2 >q.txt
    diff -u q.txt v.txt
}
qcow2_case "compare raw against qcow2" t_compare_qcow2

# ---- resize ----

t_resize_raw() {
    qemu-img create -q -f raw a.raw 16M
    vd resize -f raw a.raw +16M >out
    grep -qx "Image resized." out
    [[ $(stat -c %s a.raw) == 33554432 ]]
    vd resize -q -f raw a.raw 40M
    [[ $(stat -c %s a.raw) == 41943040 ]]
    expect_exit 1 vd resize -f raw a.raw -8M 2>err
    grep -q -- "--shrink" err
    [[ $(stat -c %s a.raw) == 41943040 ]]
    vd resize -f raw --shrink a.raw -8M >/dev/null
    [[ $(stat -c %s a.raw) == 33554432 ]]
    # probing guessed raw for a write: a warning, as qemu-img gives
    vd resize a.raw 32M 2>err >/dev/null
    grep -q "^WARNING: Image format was not specified for 'a.raw'" err
}
case_run "resize raw (+SIZE, SIZE, -SIZE needs --shrink)" t_resize_raw

t_resize_qcow2() {
    qemu-img create -q -f qcow2 a.qcow2 64M
    qemu-io -f qcow2 -c 'write -P 3 0 1M' a.qcow2 >/dev/null
    vd resize a.qcow2 +64M >/dev/null
    [[ $(qinfo a.qcow2 virtual-size) == 134217728 ]]
    qemu-img check a.qcow2
    expect_exit 1 vd resize a.qcow2 32M 2>err
    grep -q -- "--shrink" err
    vd resize --shrink a.qcow2 32M >/dev/null
    [[ $(qinfo a.qcow2 virtual-size) == 33554432 ]]
    qemu-img check a.qcow2
}
qcow2_case "resize qcow2" t_resize_qcow2

# ---- snapshot ----

t_snapshot_raw() {
    qemu-img create -q -f raw a.raw 1M
    vd snapshot -l -f raw a.raw >out
    [[ ! -s out ]]
    expect_exit 1 vd snapshot -c s1 -f raw a.raw 2>err
    grep -q "^vdisk: Could not create snapshot 's1'" err
    # no action: nothing, as qemu-img
    vd snapshot -f raw a.raw >out
    [[ ! -s out ]]
}
case_run "snapshot on raw: a clear refusal" t_snapshot_raw

t_snapshot_qcow2() {
    pattern_raw a.raw 16M
    qemu-img convert -f raw -O qcow2 a.raw a.qcow2
    vd snapshot -c first a.qcow2
    qemu-img snapshot -c second a.qcow2
    qemu-io -f qcow2 -c 'write -P 77 0 1M' a.qcow2 >/dev/null
    # the table: the same header and rows (dates and sizes may differ in
    # sub-second ways, so compare ID and TAG columns)
    diff -u <(qemu-img snapshot -l a.qcow2 | awk '{print $1, $2}') \
        <(vd snapshot -l a.qcow2 | awk '{print $1, $2}')
    vd snapshot -l a.qcow2 | head -2 | diff - <(qemu-img snapshot -l a.qcow2 | head -2)
    vd snapshot -a first a.qcow2
    qemu-img compare -f raw a.raw a.qcow2
    vd snapshot -d first a.qcow2
    not_listed=$(qemu-img snapshot -l a.qcow2 | awk '$2 == "first"')
    [[ -z $not_listed ]]
    qemu-img snapshot -l a.qcow2 >piped; grep -qw second piped
    qemu-img check a.qcow2
    expect_exit 1 vd snapshot -a nosuch a.qcow2 2>err
    grep -q nosuch err
}
qcow2_case "snapshot -c/-l/-a/-d interoperate with qemu-img" t_snapshot_qcow2

# ---- qemu-img's words in vdisk's errors, compare as qemu-img (issue 15) ----

t_error_words() {
    # the key words scripts grep for in qemu-img's errors
    expect_exit 1 vd info nonexistent.img 2>err
    grep -q "^vdisk: Could not open 'nonexistent.img': No such file or directory$" err
    qemu-img create -q -f raw a.raw 1M
    expect_exit 1 vd info -f foo a.raw 2>err
    grep -q "Unknown file format 'foo'" err
    expect_exit 1 vd create -f foo b.img 1M 2>err
    grep -q "Unknown file format 'foo'" err
    [[ ! -e b.img ]]
    # once each, not "invalid size '-1G': invalid size '-1G'"
    expect_exit 1 vd create -f raw b.img -- -1G 2>err
    (($(grep -o "invalid size '-1G'" err | wc -l) == 1))
    # a size no image may have is refused before "Formatting" is printed
    expect_exit 1 vd create -f qcow2 b.qcow2 9E >out 2>err
    [[ ! -s out && ! -e b.qcow2 ]]
    grep -q "Must be between 0 and 9223372036854775807" err
}
case_run "errors keep qemu-img's key words, once, before Formatting" t_error_words

t_error_words_qcow2() {
    qemu-img create -q -f raw a.raw 1M
    expect_exit 1 vd info -f qcow2 a.raw 2>err
    grep -q "^vdisk: Could not open 'a.raw': Image is not in qcow2 format" err
    # check could not open a damaged image: its hint must not send the user
    # back to check; info's still may. (A truncated file opens for both, as
    # in qemu-img; an unaligned L1 table offset does not, as in qemu-img.)
    qemu-img create -q -f qcow2 t.qcow2 1G
    qemu-io -c 'write 0 1M' t.qcow2 >/dev/null
    printf '\x00\x00\x00\x00\x00\x03\x00\x08' | dd of=t.qcow2 bs=1 seek=40 conv=notrunc status=none
    expect_exit 1 vd check t.qcow2 2>err
    ! grep -q "vdisk check" err
    expect_exit 1 vd info t.qcow2 2>err
    grep -q "hint: 'vdisk check' tells more" err
}
qcow2_case "qcow2 errors keep qemu-img's key words; check's hint is not check" t_error_words_qcow2

t_compare_size_warning() {
    # the size warning only when the common part is alike, as qemu-img
    qemu-img create -q -f qcow2 a.qcow2 4M
    qemu-img create -q -f qcow2 b.qcow2 8M
    qemu-io -c 'write -P 1 1M 64k' a.qcow2 >/dev/null
    qemu-io -c 'write -P 2 1M 64k' b.qcow2 >/dev/null
    local f
    for f in "" "-P 1 1M 64k" "-P 3 6M 4k"; do
        [[ -z $f ]] || qemu-io -c "write $f" b.qcow2 >/dev/null
        rc_q=0 rc_v=0
        qemu-img compare a.qcow2 b.qcow2 >q.txt || rc_q=$?
        vd compare a.qcow2 b.qcow2 >v.txt || rc_v=$?
        diff -u q.txt v.txt
        ((rc_q == rc_v))
    done
}
qcow2_case "compare warns of a size mismatch as qemu-img does" t_compare_size_warning

t_compare_strict_status() {
    # same content, stored differently: qemu-img -s fails, so must vdisk
    qemu-img create -q -f qcow2 a.qcow2 4M
    qemu-img create -q -f qcow2 b.qcow2 4M
    qemu-io -c 'write -z 1M 64k' b.qcow2 >/dev/null
    expect_exit 0 vd compare a.qcow2 b.qcow2 >/dev/null
    expect_exit 1 qemu-img compare -s a.qcow2 b.qcow2 >q.txt
    expect_exit 1 vd compare -s a.qcow2 b.qcow2 >v.txt
    diff -u q.txt v.txt
    qemu-io -c 'write -P 5 2M 64k' a.qcow2 >/dev/null
    expect_exit 1 qemu-img compare -s a.qcow2 b.qcow2 >q.txt
    expect_exit 1 vd compare -s a.qcow2 b.qcow2 >v.txt
    diff -u q.txt v.txt
    grep -qx "Strict mode: Offset 1048576 block status mismatch!" v.txt
    # stored alike: identical in strict mode too
    cat a.qcow2 >c.qcow2
    qemu-img compare -s a.qcow2 c.qcow2
    vd compare -s a.qcow2 c.qcow2 >v.txt
    grep -qx "Images are identical." v.txt
}
qcow2_case "compare -s fails on block status as qemu-img's strict mode" t_compare_strict_status

t_compare_progress() {
    pattern_raw a.raw 16M
    cp --sparse=always a.raw b.raw
    # -p is progress (qemu-img's lines on a pipe), not --force-share
    vd compare -p -f raw -F raw a.raw b.raw >out
    grep -q "(100.00/100%)" out
    grep -q "Images are identical." out
    vd compare -f raw -F raw a.raw b.raw >out
    ! grep -q "/100%" out
}
case_run "compare -p prints qemu-img's progress lines" t_compare_progress

t_convert_says_format() {
    # qemu-img writes raw without -O; vdisk follows the extension, and says so
    qemu-img create -q -f raw a.raw 1M
    vd convert -f raw a.raw b.qcow2 2>err
    grep -qx "vdisk: note: no -O given: writing qcow2, as the extension of 'b.qcow2' says" err
    qemu-img info --output=json b.qcow2 | grep -q '"format": "qcow2"'
    vd convert -q -f raw a.raw c.qcow2 2>err
    [[ ! -s err ]]
    vd convert -f raw a.raw d.raw 2>err
    [[ ! -s err ]]
}
qcow2_case "convert without -O names the format the extension chose" t_convert_says_format

t_progress_lines() {
    # -p on a pipe: qemu-img's lines, one per step of the data copied
    # (holes do not count), the same bytes as qemu-img's here
    qemu-img create -q -f raw a.raw 64M
    head -c 8M /dev/urandom | dd of=a.raw bs=1M seek=10 conv=notrunc status=none
    qemu-img convert -p -f raw -O qcow2 a.raw q.qcow2 >q.txt
    vd convert -p -f raw -O qcow2 a.raw v.qcow2 >v.txt
    cmp q.txt v.txt
    qemu-img create -q -f raw e.raw 1G
    qemu-img convert -p -f raw -O raw e.raw q.raw >q.txt
    vd convert -p -f raw -O raw e.raw v.raw >v.txt
    cmp q.txt v.txt
}
qcow2_case "convert -p on a pipe prints qemu-img's lines" t_progress_lines

t_progress_eta() {
    command -v script >/dev/null || { echo "skipped: no script(1) (util-linux) for a terminal"; return 0; }
    # 128 MiB of data deflate must work on, then 32 GiB of hole: the time
    # left must count the hole as the fast work it is
    head -c 96M /dev/urandom | base64 -w 0 | head -c 128M >a.raw
    truncate -s 32G a.raw
    local start took
    start=$(date +%s)
    script -qec "$VDISK convert -c -f raw -O qcow2 a.raw a.qcow2" /dev/null >out
    took=$(($(date +%s) - start))
    tr '\r' '\n' <out | sed 's/\x1b\[K//g' >frames
    grep -q "32 GiB/32 GiB" frames
    # no empty first frame before the job knows its size
    ! grep -q " 0 B/0 B" frames
    # no frame expects much more than the whole job took (counting bytes
    # alone, the hole would make it promise some 250 times that); measured
    # against this run's own time, so a loaded machine does not fail it
    grep -o 'ETA [0-9:]*' frames |
        awk -F'[ :]' -v took="$took" '{ if ($2 * 60 + $3 > 2 * took + 5) { print "took " took "s: " $0; bad = 1 } } END { exit bad }'
}
qcow2_case "the bar's time left counts holes as fast work" t_progress_eta

t_library_warnings() {
    # a bitmap that cannot be stored when the image is closed (no room to
    # grow the file) is the library's warning: vdisk's words, not GLib's
    qemu-img create -q -f qcow2 t.qcow2 4M
    qemu-io -c 'write -P 1 0 1M' t.qcow2 >/dev/null
    qemu-img bitmap --add t.qcow2 b0
    head -c 1M /dev/urandom >src.raw
    truncate -s 4M src.raw
    local blocks=$(($(stat -c %s t.qcow2) / 1024))
    (
        trap '' XFSZ
        ulimit -f "$blocks"
        expect_exit 1 vd convert -n -f raw -O qcow2 src.raw t.qcow2
    ) 2>err
    cat err
    grep -q "^vdisk: warning: t.qcow2: write failed" err
    ! grep -q "(process:" err
    ! grep -q "t.qcow2: t.qcow2" err
}
qcow2_case "the library's warnings are vdisk's, said once" t_library_warnings

if ((SKIPPED)); then
    echo "note: this build has no qcow2 driver; $SKIPPED qcow2 cases skipped"
fi
# commit empties the overlay it committed, qcow (version 1) as qcow2, as
# qemu-img does (qemu-iotests 097): nothing left in it.
t_commit_empties() {
    local fmt
    for fmt in qcow qcow2; do
        qemu-img create -q -f "$fmt" base.$fmt 4M
        qemu-img create -q -f "$fmt" -b base.$fmt -F "$fmt" top.$fmt
        qemu-io -f "$fmt" -c 'write -P 1 1M 64k' top.$fmt >/dev/null
        cp base.$fmt qbase.$fmt
        qemu-img create -q -f "$fmt" -b qbase.$fmt -F "$fmt" qtop.$fmt
        qemu-io -f "$fmt" -c 'write -P 1 1M 64k' qtop.$fmt >/dev/null
        qemu-img commit -q qtop.$fmt
        vd commit -q top.$fmt
        # nothing left in the overlay itself: it reads through to the base
        qemu-img map --output=json -f "$fmt" top.$fmt >map.json
        not grep -q '"depth": 0, "present": true' map.json
        # a qcow is cut after its L1 table, as qemu-img cuts it (qemu-img
        # makes an emptied qcow2 anew, vdisk frees its clusters)
        [[ $fmt != qcow ]] || [[ $(stat -c %s top.$fmt) == $(stat -c %s qtop.$fmt) ]]
        qemu-img compare -q -f "$fmt" -F "$fmt" top.$fmt qtop.$fmt
    done
}
case_run "commit empties a qcow or qcow2 overlay as qemu-img does" t_commit_empties

finish
