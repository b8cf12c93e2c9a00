#!/usr/bin/env bash
# test-cli.sh: every `vdisk` subcommand against qemu-img as the oracle.
#
# Each case runs in its own bash with errexit, so any failing command fails
# it. Raw cases always run; qcow2 cases run once the build knows qcow2.
# VDISK: the vdisk binary (default: build/tools/vdisk of this repository).
# Prints "N passed, M failed" and exits non-zero when a case failed.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export VDISK=${VDISK:-$REPO/build/tools/vdisk}
export PY=${PY:-/usr/bin/python3}
export T=$(mktemp -d /tmp/vdisk-test-cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
PASSED=0 FAILED=0 SKIPPED=0

if [[ ! -x $VDISK ]]; then
    echo "vdisk not built: $VDISK"
    echo "0 passed, 1 failed"
    exit 1
fi
for tool in qemu-img qemu-io; do
    command -v $tool >/dev/null || { echo "$tool missing (qemu-utils)"; exit 77; }
done

# case_run NAME FUNCTION ARGS...
case_run() {
    local name=$1 fn=$2 log=$T/case.log rc=0
    shift 2
    export -f "$fn"
    (cd "$T" && bash -eo pipefail -c '"$@"' case "$fn" "$@") >"$log" 2>&1 || rc=$?
    if ((rc == 0)); then
        PASSED=$((PASSED + 1))
    else
        FAILED=$((FAILED + 1))
        echo "FAIL $name (exit $rc)"
        tail -n 8 "$log" | sed 's/^/    /'
    fi
    rm -rf "$T/w" && mkdir "$T/w"
}
mkdir "$T/w"

have_qcow2() { "$VDISK" --help | grep -Eq '^Formats:(.*[ ,])?qcow2(,|$)'; }
qcow2_case() {
    if have_qcow2; then
        case_run "$@"
    else
        SKIPPED=$((SKIPPED + 1))
    fi
}

# ---- helpers the cases use (exported into each case's shell) ----

# expect_rc N CMD...: CMD exits with status N (never by a signal).
expect_rc() {
    local want=$1 rc=0
    shift
    "$@" || rc=$?
    ((rc == want)) || { echo "expected exit $want, got $rc: $*"; return 1; }
}

# json_get FILE KEY: one top-level key of a JSON object.
json_get() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

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

# pattern FILE SIZE: a raw image with data, explicit zeroes and holes.
pattern() {
    qemu-img create -q -f raw "$1" "$2"
    qemu-io -f raw -c 'write -P 17 0 1M' -c 'write -P 34 3M 64k' -c 'write -z 5M 64k' \
        -c "write -P 51 $(($(numfmt --from=iec "$2") - 4096)) 4096" "$1" >/dev/null
}

# leak_cluster FILE: append a cluster and give it refcount 1 (a leak).
# corrupt_header_refcount FILE: set the header cluster's refcount to 0.
set_refcount() {
    "$PY" - "$1" "$2" "$3" <<'PY'
import struct, sys, os
path, which, value = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(path, "r+b") as f:
    hdr = f.read(104)
    cluster_bits = struct.unpack(">I", hdr[20:24])[0]
    cs = 1 << cluster_bits
    rt_off = struct.unpack(">Q", hdr[48:56])[0]
    order = struct.unpack(">I", hdr[96:100])[0] if struct.unpack(">I", hdr[4:8])[0] >= 3 else 4
    assert order == 4, "test expects 16-bit refcounts"
    if which == "leak":
        end = os.path.getsize(path)
        end = (end + cs - 1) // cs * cs
        f.truncate(end + cs)
        index = end // cs
    else:
        index = 0
    f.seek(rt_off)
    block = struct.unpack(">Q", f.read(8))[0]
    assert index < cs // 2, "cluster outside the first refcount block"
    f.seek(block + 2 * index)
    f.write(struct.pack(">H", value))
PY
}
leak_cluster() { set_refcount "$1" leak 1; }
corrupt_header_refcount() { set_refcount "$1" header 0; }

export -f expect_rc json_get json_same pattern set_refcount leak_cluster corrupt_header_refcount

# ---- general ----

t_help() {
    "$VDISK" --help >out
    for c in info create convert check compare snapshot resize map; do
        grep -q "^  $c " out
        "$VDISK" $c --help | grep -q "vdisk $c"
        "$VDISK" help $c | grep -q Examples
    done
    "$VDISK" --version | grep -Eq '^vdisk version [0-9]'
    expect_rc 1 "$VDISK" frobnicate 2>err
    grep -q "^vdisk: no command 'frobnicate'" err
    expect_rc 1 "$VDISK" info --bogus x 2>err
    grep -q "unknown option '--bogus'" err
    expect_rc 1 "$VDISK" info 2>err
    grep -q "missing file name" err
}
case_run "help, version and usage errors" t_help

t_missing_file() {
    for args in "info nonexistent.img" "check nonexistent.img" "map nonexistent.img" \
        "snapshot -l nonexistent.img" "resize -f raw nonexistent.img 1M" \
        "convert -O raw nonexistent.img out.raw"; do
        rc=0
        "$VDISK" $args >out 2>&1 || rc=$?
        ((rc == 1)) || { echo "vdisk $args: exit $rc"; cat out; exit 1; }
        grep -q "^vdisk: .*nonexistent.img" out
    done
    expect_rc 2 "$VDISK" compare nonexistent.img nonexistent.img 2>/dev/null
}
case_run "a missing file is a clean error" t_missing_file

# ---- create ----

t_create_raw() {
    "$VDISK" create -f raw a.raw 64M >out
    grep -qx "Formatting 'a.raw', fmt=raw size=67108864" out
    [[ $(qemu-img info -f raw --output=json a.raw | json_get /dev/stdin virtual-size) == 67108864 ]]
    "$VDISK" create -q -fraw b.raw 1G >out
    [[ ! -s out ]]
    [[ $(stat -c %s b.raw) == 1073741824 ]]
    expect_rc 1 "$VDISK" create -f raw c.raw 2>err
    grep -q "give the image size" err
    expect_rc 1 "$VDISK" create -f raw c.raw 12Q 2>err
    grep -q "invalid size" err
    "$VDISK" create -f raw -o help | grep -q '^Supported raw options:'
}
case_run "create raw" t_create_raw

t_create_qcow2() {
    "$VDISK" create -f qcow2 -o cluster_size=4k a.qcow2 100M >out
    grep -q "^Formatting 'a.qcow2', fmt=qcow2 .*cluster_size=4k" out
    qemu-img check -f qcow2 a.qcow2
    qemu-img info -f qcow2 --output=json a.qcow2 >q.json
    [[ $(json_get q.json virtual-size) == 104857600 ]]
    [[ $(json_get q.json cluster-size) == 4096 ]]
    # an overlay takes its size from the backing file; -F is probed when missing
    "$VDISK" create -f qcow2 -b a.qcow2 -F qcow2 o1.qcow2
    "$VDISK" create -q -f qcow2 -b a.qcow2 o2.qcow2
    "$VDISK" create -f qcow2 -o backing_file=a.qcow2,backing_fmt=qcow2 o3.qcow2 >/dev/null
    for o in o1 o2 o3; do
        qemu-img info --output=json $o.qcow2 >o.json
        [[ $(json_get o.json virtual-size) == 104857600 ]]
        [[ $(json_get o.json backing-filename) == a.qcow2 ]]
        [[ $(json_get o.json backing-filename-format) == qcow2 ]]
        qemu-img check $o.qcow2
    done
    "$VDISK" create -f qcow2 -o help | grep -q cluster_size
}
qcow2_case "create qcow2 and overlays" t_create_qcow2

# ---- info ----

t_info_raw() {
    pattern a.raw 16M
    "$VDISK" info -f raw a.raw >v.txt
    qemu-img info -f raw a.raw >q.txt
    diff -u q.txt v.txt
    "$VDISK" info --output=json -f raw a.raw >v.json
    qemu-img info --output=json -f raw a.raw >q.json
    json_same v.json q.json
    # reading never warns about probing
    "$VDISK" info a.raw 2>err >/dev/null
    [[ ! -s err ]]
}
case_run "info raw is qemu-img's" t_info_raw

t_info_qcow2() {
    pattern a.raw 16M
    qemu-img convert -f raw -O qcow2 -o cluster_size=16k a.raw base.qcow2
    qemu-img snapshot -c snap1 base.qcow2
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    for f in base top; do
        "$VDISK" info --output=json $f.qcow2 >v.json
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
            <("$VDISK" info $f.qcow2 | grep -v '^disk size')
    done
    "$VDISK" info --output=json --backing-chain top.qcow2 >v.json
    qemu-img info --output=json --backing-chain top.qcow2 >q.json
    "$PY" - v.json q.json <<'PY'
import json, sys
v, q = (json.load(open(f)) for f in sys.argv[1:])
assert [i["filename"] for i in v] == [i["filename"] for i in q], (v, q)
PY
    diff -u <(qemu-img info --backing-chain top.qcow2 | grep -v '^disk size') \
        <("$VDISK" info --backing-chain top.qcow2 | grep -v '^disk size')
}
qcow2_case "info qcow2 (snapshots, backing chain) is qemu-img's" t_info_qcow2

# ---- map ----

t_map_raw() {
    pattern a.raw 16M
    diff -u <(qemu-img map -f raw --output=json a.raw) <("$VDISK" map -f raw --output=json a.raw)
    diff -u <(qemu-img map -f raw a.raw) <("$VDISK" map -f raw a.raw)
}
case_run "map raw is qemu-img's" t_map_raw

t_map_qcow2() {
    pattern a.raw 16M
    qemu-img convert -f raw -O qcow2 a.raw base.qcow2
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    qemu-io -f qcow2 -c 'write -P 9 1M 128k' -c 'write -z 8M 64k' -c 'discard 3M 64k' \
        top.qcow2 >/dev/null
    for f in base top; do
        diff -u <(qemu-img map --output=json $f.qcow2) <("$VDISK" map --output=json $f.qcow2)
        diff -u <(qemu-img map $f.qcow2) <("$VDISK" map $f.qcow2)
    done
}
qcow2_case "map qcow2 with a backing chain is qemu-img's" t_map_qcow2

# ---- convert ----

t_convert_raw() {
    pattern a.raw 32M
    "$VDISK" convert -f raw -O raw a.raw b.raw
    cmp a.raw b.raw
    (($(du -k b.raw | cut -f1) < 8192)) # holes stay holes
    # no -O and an unknown extension: raw, with a note
    "$VDISK" convert -f raw a.raw c.data 2>err
    grep -q "writing raw" err
    cmp a.raw c.data
    # -n writes into an existing image
    qemu-img create -q -f raw d.raw 32M
    "$VDISK" convert -n -f raw -O raw a.raw d.raw
    cmp a.raw d.raw
    # -p without a terminal prints qemu-img's lines; -q silences it
    "$VDISK" convert -p -f raw -O raw a.raw e.raw >out
    grep -q '(100.00/100%)' out
    "$VDISK" convert -q -p -f raw -O raw a.raw f.raw >out
    [[ ! -s out ]]
    expect_rc 1 "$VDISK" convert -f raw -O raw a.raw a.raw 2>err
    grep -q "same file" err
}
case_run "convert raw" t_convert_raw

t_convert_qcow2() {
    pattern a.raw 32M
    "$VDISK" convert -f raw a.raw b.qcow2 # format from the extension
    [[ $(qemu-img info --output=json b.qcow2 | json_get /dev/stdin format) == qcow2 ]]
    qemu-img check b.qcow2
    qemu-img compare -f raw -F qcow2 a.raw b.qcow2
    "$VDISK" convert -c -O qcow2 -o cluster_size=64k -fraw a.raw c.qcow2
    qemu-img check c.qcow2
    qemu-img compare -f raw -F qcow2 a.raw c.qcow2
    "$VDISK" convert -m 4 -W -f qcow2 -O raw c.qcow2 d.raw
    cmp a.raw d.raw
    # snapshots: -l snapshot.name=, -l NAME and -s
    qemu-img snapshot -c s1 b.qcow2
    qemu-io -f qcow2 -c 'write -P 99 0 64k' b.qcow2 >/dev/null
    "$VDISK" convert -l snapshot.name=s1 -O raw b.qcow2 s1.raw
    cmp a.raw s1.raw
    "$VDISK" convert -l s1 -O raw b.qcow2 s2.raw
    cmp a.raw s2.raw
    "$VDISK" convert -s s1 -O raw b.qcow2 s3.raw
    cmp a.raw s3.raw
    expect_rc 1 "$VDISK" convert -l nosuch -O raw b.qcow2 s4.raw 2>err
    grep -q "nosuch" err
    # -B: only the top layer's data is written
    qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 top.qcow2
    qemu-io -f qcow2 -c 'write -P 5 2M 64k' top.qcow2 >/dev/null
    "$VDISK" convert -O qcow2 -B b.qcow2 -F qcow2 top.qcow2 delta.qcow2
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
    "$VDISK" convert -S 0 -f raw -O raw big.raw out.raw >log 2>&1 &
    pid=$!
    sleep 0.3
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
    expect_rc 63 "$VDISK" check -f raw a.raw 2>err
    grep -q "does not support checks" err
}
case_run "check raw: not supported (63)" t_check_raw

t_check_qcow2() {
    pattern a.raw 16M
    qemu-img convert -f raw -O qcow2 a.raw a.qcow2
    "$VDISK" check a.qcow2 >out
    grep -qx "No errors were found on the image." out
    diff -u <(qemu-img check a.qcow2) out
    "$VDISK" check --output=json a.qcow2 >v.json
    qemu-img check --output=json a.qcow2 >q.json
    json_same v.json q.json
    # leaks: exit 3, the same JSON, repaired by -r leaks
    cp a.qcow2 l.qcow2
    leak_cluster l.qcow2
    expect_rc 3 qemu-img check l.qcow2 >/dev/null 2>&1
    expect_rc 3 "$VDISK" check l.qcow2 >out 2>/dev/null
    grep -q "1 leaked clusters were found on the image." out
    "$VDISK" check --output=json l.qcow2 >v.json 2>/dev/null || true
    qemu-img check --output=json l.qcow2 >q.json 2>/dev/null || true
    json_same v.json q.json check-errors leaks corruptions
    "$VDISK" check -r leaks l.qcow2 >out 2>/dev/null
    grep -q "Double checking the fixed image now" out
    qemu-img check l.qcow2
    # corruption: exit 2
    cp a.qcow2 c.qcow2
    corrupt_header_refcount c.qcow2
    expect_rc 2 qemu-img check c.qcow2 >/dev/null 2>&1
    expect_rc 2 "$VDISK" check c.qcow2 >out 2>/dev/null
    grep -q "errors were found on the image" out
}
qcow2_case "check qcow2: clean 0, leaks 3, corrupt 2, -r leaks" t_check_qcow2

# ---- compare ----

t_compare() {
    pattern a.raw 16M
    cp --sparse=always a.raw b.raw
    "$VDISK" compare -f raw -F raw a.raw b.raw >out
    grep -qx "Images are identical." out
    qemu-io -f raw -c 'write -P 1 7M 512' b.raw >/dev/null
    expect_rc 1 "$VDISK" compare -f raw -F raw a.raw b.raw >v.txt
    expect_rc 1 qemu-img compare -f raw -F raw a.raw b.raw >q.txt
    diff -u q.txt v.txt
    # different sizes: equal unless strict, like qemu-img
    cp --sparse=always a.raw c.raw
    truncate -s 20M c.raw
    expect_rc 0 "$VDISK" compare -f raw -F raw a.raw c.raw >out
    grep -q "Image size mismatch" out
    expect_rc 1 "$VDISK" compare -s -f raw -F raw a.raw c.raw >out
    grep -qx "Strict mode: Image size mismatch!" out
    expect_rc 1 "$VDISK" compare -q -f raw -F raw a.raw b.raw >out
    [[ ! -s out ]]
}
case_run "compare: 0 identical, 1 different, strict sizes" t_compare

t_compare_qcow2() {
    pattern a.raw 16M
    qemu-img convert -f raw -O qcow2 a.raw a.qcow2
    "$VDISK" compare a.raw a.qcow2
    qemu-io -f qcow2 -c 'write -P 1 9M 4k' a.qcow2 >/dev/null
    expect_rc 1 "$VDISK" compare -f raw -F qcow2 a.raw a.qcow2 >v.txt
    expect_rc 1 qemu-img compare -f raw -F qcow2 a.raw a.qcow2 >q.txt
    diff -u q.txt v.txt
}
qcow2_case "compare raw against qcow2" t_compare_qcow2

# ---- resize ----

t_resize_raw() {
    qemu-img create -q -f raw a.raw 16M
    "$VDISK" resize -f raw a.raw +16M >out
    grep -qx "Image resized." out
    [[ $(stat -c %s a.raw) == 33554432 ]]
    "$VDISK" resize -q -f raw a.raw 40M
    [[ $(stat -c %s a.raw) == 41943040 ]]
    expect_rc 1 "$VDISK" resize -f raw a.raw -8M 2>err
    grep -q -- "--shrink" err
    [[ $(stat -c %s a.raw) == 41943040 ]]
    "$VDISK" resize -f raw --shrink a.raw -8M >/dev/null
    [[ $(stat -c %s a.raw) == 33554432 ]]
    # probing guessed raw for a write: a warning, as qemu-img gives
    "$VDISK" resize a.raw 32M 2>err >/dev/null
    grep -q "^WARNING: Image format was not specified for 'a.raw'" err
}
case_run "resize raw (+SIZE, SIZE, -SIZE needs --shrink)" t_resize_raw

t_resize_qcow2() {
    qemu-img create -q -f qcow2 a.qcow2 64M
    qemu-io -f qcow2 -c 'write -P 3 0 1M' a.qcow2 >/dev/null
    "$VDISK" resize a.qcow2 +64M >/dev/null
    [[ $(qemu-img info --output=json a.qcow2 | json_get /dev/stdin virtual-size) == 134217728 ]]
    qemu-img check a.qcow2
    expect_rc 1 "$VDISK" resize a.qcow2 32M 2>err
    grep -q -- "--shrink" err
    "$VDISK" resize --shrink a.qcow2 32M >/dev/null
    [[ $(qemu-img info --output=json a.qcow2 | json_get /dev/stdin virtual-size) == 33554432 ]]
    qemu-img check a.qcow2
}
qcow2_case "resize qcow2" t_resize_qcow2

# ---- snapshot ----

t_snapshot_raw() {
    qemu-img create -q -f raw a.raw 1M
    "$VDISK" snapshot -l -f raw a.raw >out
    [[ ! -s out ]]
    expect_rc 1 "$VDISK" snapshot -c s1 -f raw a.raw 2>err
    grep -q "^vdisk: could not create snapshot 's1'" err
    expect_rc 1 "$VDISK" snapshot -f raw a.raw 2>err
    grep -q -- "-l, -c NAME" err
}
case_run "snapshot on raw: a clear refusal" t_snapshot_raw

t_snapshot_qcow2() {
    pattern a.raw 16M
    qemu-img convert -f raw -O qcow2 a.raw a.qcow2
    "$VDISK" snapshot -c first a.qcow2
    qemu-img snapshot -c second a.qcow2
    qemu-io -f qcow2 -c 'write -P 77 0 1M' a.qcow2 >/dev/null
    # the table: the same header and rows (dates and sizes may differ in
    # sub-second ways, so compare ID and TAG columns)
    diff -u <(qemu-img snapshot -l a.qcow2 | awk '{print $1, $2}') \
        <("$VDISK" snapshot -l a.qcow2 | awk '{print $1, $2}')
    "$VDISK" snapshot -l a.qcow2 | head -2 | diff - <(qemu-img snapshot -l a.qcow2 | head -2)
    "$VDISK" snapshot -a first a.qcow2
    qemu-img compare -f raw a.raw a.qcow2
    "$VDISK" snapshot -d first a.qcow2
    not_listed=$(qemu-img snapshot -l a.qcow2 | awk '$2 == "first"')
    [[ -z $not_listed ]]
    qemu-img snapshot -l a.qcow2 | grep -qw second
    qemu-img check a.qcow2
    expect_rc 1 "$VDISK" snapshot -a nosuch a.qcow2 2>err
    grep -q nosuch err
}
qcow2_case "snapshot -c/-l/-a/-d interoperate with qemu-img" t_snapshot_qcow2

if ! have_qcow2; then
    echo "note: this build has no qcow2 driver; $SKIPPED qcow2 cases skipped"
fi
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
