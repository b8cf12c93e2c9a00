#!/usr/bin/env bash
# Serving images over NBD: vdisk's nbdkit plugin (nbd/) and `vdisk serve`.
# Every format vdisk reads is served on a unix socket and read by qemu-img
# through NBD against the file itself (qemu-img and qemu-io are the
# oracle); nbdinfo --map shows vdisk map's ranges; what qemu-io writes
# through NBD lands in the image, which keeps its format and which
# qemu-img check finds clean; readonly=true refuses writes; the image is
# locked while served; `vdisk serve` prints the URI and stops on SIGINT
# leaving the image unlocked. Servers are started with --pidfile and
# stopped by that pid; everything is on loopback.
#
# VDISK_NBDKIT_PLUGIN: the plugin (default build/nbd/nbdkit-vdisk-plugin.so).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

PLUGIN=${VDISK_NBDKIT_PLUGIN:-$REPO/build/nbd/nbdkit-vdisk-plugin.so}
export VDISK_NBDKIT_PLUGIN=$PLUGIN
REAL=${VDISK_REAL_FIXTURES:-$REPO/../shared/fixtures/real}
export REAL
for p in nbdkit nbdinfo; do
    if ! command -v $p >/dev/null; then
        echo "$p not found (packages nbdkit, libnbd-bin; scripts/deps.sh installs them): serving over NBD is not tested"
        echo "0 passed, 0 failed"
        exit 77
    fi
done
if [[ ! -f $PLUGIN ]]; then
    echo "no nbdkit plugin at $PLUGIN (vdisk built without nbdkit-plugin-dev?): serving over NBD is not tested"
    echo "0 passed, 0 failed"
    exit 77
fi
# A plugin built with a sanitizer needs its runtime loaded first, which
# nbdkit (not so built) does not do.
if ! err=$(nbdkit "$PLUGIN" --dump-plugin 2>&1 >/dev/null); then
    if [[ $err == *ASan* || $err == *Sanitizer* ]]; then
        echo "nbdkit cannot load $PLUGIN, built with a sanitizer: serving over NBD is not tested"
        echo "0 passed, 0 failed"
        exit 77
    fi
    echo "nbdkit cannot load $PLUGIN: $err"
    echo "0 passed, 1 failed"
    exit 1
fi

# serve FILE [KEY=VALUE...]: nbdkit with the plugin in the background on
# a unix socket of its own; sets URI and SERVER (its pidfile). Fails when
# nbdkit does (it says why).
serve() {
    local n=$((${SERVED:-0} + 1))
    SERVED=$n
    SERVER=$W/nbdkit-$n.pid
    URI="nbd+unix:///?socket=$W/nbd-$n.sock"
    local file=()
    [[ -z $1 ]] || file=("file=$1")
    nbdkit --pidfile "$SERVER" --unix "$W/nbd-$n.sock" "$PLUGIN" "${file[@]}" "${@:2}" || return 1
    for _ in $(seq 100); do [[ -s $SERVER ]] && return 0; sleep 0.05; done
    echo "nbdkit wrote no pidfile within 5 s"
    return 1
}

# stop_server [PIDFILE]: stop the server and wait until it is gone (its
# exit closes the image and drops the locks).
stop_server() {
    local f=${1:-$SERVER} pid
    [[ -s $f ]] || return 0
    pid=$(cat "$f")
    rm -f "$f"
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
    echo "nbdkit $pid did not stop within 10 s"
    return 1
}

# A case that fails part way still stops what it started.
stop_all_at_exit() {
    trap 'for f in "$W"/nbdkit-*.pid; do stop_server "$f" || true; done' EXIT
}

# nbd_map URI: the NBD base:allocation map as "start length type" runs.
nbd_map() {
    nbdinfo --map --json "$1" | "$PY" -c '
import json, sys
runs = []
for e in json.load(sys.stdin):
    if runs and runs[-1][2] == e["type"] and runs[-1][0] + runs[-1][1] == e["offset"]:
        runs[-1][1] += e["length"]
    else:
        runs.append([e["offset"], e["length"], e["type"]])
for r in runs:
    print(*r)'
}

# vd_map FILE [FMT]: vdisk map of FILE in the same terms (hole = no data,
# zero = reads as zeroes), merged alike.
vd_map() {
    vd map -U --output=json ${2:+-f "$2"} "$1" | "$PY" -c '
import json, sys
runs = []
for e in json.load(sys.stdin):
    t = (0 if e["data"] else 1) | (2 if e["zero"] else 0)
    if runs and runs[-1][2] == t and runs[-1][0] + runs[-1][1] == e["start"]:
        runs[-1][1] += e["length"]
    else:
        runs.append([e["start"], e["length"], t])
for r in runs:
    print(*r)'
}

# What the cases write through NBD, by qemu-io on the raw export, and the
# same on a raw copy for the expected content.
WRITES=("write -P 0x5a 1M 192k" "write -z 2M 64k" "write -z -u 4M 128k" "write -P 0x33 7M 4k"
    "write -P 0x77 0 512")
export WRITES
export -f serve stop_server stop_all_at_exit nbd_map vd_map holds

source_raw() { pattern_raw src.raw 8M; }

# served_reads FILE FMT [KEY=VALUE...]: the export reads as src.raw, read
# only and read-write, and its map is vdisk map's.
served_reads() {
    local f=$1 fmt=$2
    shift 2
    stop_all_at_exit
    serve "$f" readonly=true "$@"
    qemu-img compare "$URI" src.raw
    stop_server
    serve "$f" "$@"
    qemu-img compare -U "$URI" src.raw
    [[ $fmt == luks ]] || diff <(nbd_map "$URI") <(vd_map "$f" "$fmt")
    stop_server
}

# served_writes FILE FMT [KEY=VALUE...]: qemu-io's writes through the
# export land in the image, which stays FMT and (where qemu-img can tell)
# checks clean.
served_writes() {
    local f=$1 fmt=$2 c args=()
    shift 2
    stop_all_at_exit
    cp src.raw expect.raw
    for c in "${WRITES[@]}"; do args+=(-c "$c"); done
    qemu-io -f raw "${args[@]}" expect.raw >/dev/null
    serve "$f" "$@"
    # locked while served: qemu refuses to open it for writing
    not qemu-io -f raw -c "read 0 512" "$f" 2>/dev/null
    out=$(qemu-io -f raw "${args[@]}" "$URI" 2>&1)
    not grep -qiE 'error|failed' <<<"$out"
    qemu-img compare -U "$URI" expect.raw
    stop_server
    [[ $(vd info --output=json "$f" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["format"])') == "$fmt" ]]
}

fmt_case() {
    local fmt=$1 opts=$2 f
    source_raw
    f=img.$fmt
    qemu-img convert -f raw -O "$fmt" ${opts:+-o "$opts"} src.raw "$f"
    served_reads "$f" "$fmt"
    served_writes "$f" "$fmt"
    [[ $(qinfo "$f" format) == "$fmt" ]]
    qemu-img compare -f "$fmt" -F raw "$f" expect.raw
    # qemu-img checks neither qcow nor vpc
    if [[ $fmt != qcow && $fmt != vpc ]]; then qemu-img check -q -f "$fmt" "$f"; fi
}
case_run "vdi dynamic" fmt_case vdi ""
case_run "vdi static" fmt_case vdi static=on
case_run "vmdk monolithicSparse" fmt_case vmdk subformat=monolithicSparse
case_run "vmdk twoGbMaxExtentSparse" fmt_case vmdk subformat=twoGbMaxExtentSparse
case_run "vmdk monolithicFlat" fmt_case vmdk subformat=monolithicFlat
case_run "qcow" fmt_case qcow ""
case_run "qcow2" fmt_case qcow2 ""
case_run "vpc" fmt_case vpc force_size=on

stream_optimized() { # read-only: its grains are written once, in order
    source_raw
    qemu-img convert -f raw -O vmdk -o subformat=streamOptimized src.raw s.vmdk
    sum=$(sha256sum <s.vmdk)
    stop_all_at_exit
    serve s.vmdk readonly=true
    qemu-img compare "$URI" src.raw
    diff <(nbd_map "$URI") <(vd_map s.vmdk)
    stop_server
    fails_cleanly serve s.vmdk 2>err
    grep -q streamOptimized err
    [[ $(sha256sum <s.vmdk) == "$sum" ]]
}
case_run "vmdk streamOptimized" stream_optimized

qcow2_chain() { # the guest view through the chain; writes land in the top
    source_raw
    qemu-img create -q -f qcow2 base.qcow2 8M
    qio qcow2 base.qcow2 "write -P 0x11 0 4M" "write -P 0x12 6M 1M"
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
    qio qcow2 mid.qcow2 "write -P 0x21 1M 1M" "write -z 6M 512k"
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
    qio qcow2 top.qcow2 "write -P 0x31 3M 64k" "discard 1M 64k"
    qemu-img convert -O raw top.qcow2 src.raw
    base_sum=$(sha256sum <base.qcow2)
    served_reads top.qcow2 qcow2
    served_writes top.qcow2 qcow2
    qemu-img compare top.qcow2 expect.raw
    qcheck top.qcow2
    [[ $(sha256sum <base.qcow2) == "$base_sum" ]]
    # backing= names the parent explicitly
    qemu-img create -q -f qcow2 -u -b nowhere.qcow2 -F qcow2 orphan.qcow2 8M
    fails_cleanly serve orphan.qcow2
    stop_all_at_exit
    serve orphan.qcow2 readonly=true backing="$W/base.qcow2" backing-format=qcow2
    qemu-img convert -O raw base.qcow2 base.raw
    qemu-img compare "$URI" base.raw
}
case_run "qcow2 with a backing chain" qcow2_chain

trim() { # NBD_CMD_TRIM frees the clusters: they read zero, no data there
    source_raw
    qemu-img convert -f raw -O qcow2 src.raw t.qcow2
    stop_all_at_exit
    serve t.qcow2
    out=$(qemu-io -f raw -c "discard 0 2M" "$URI" 2>&1)
    not grep -qiE 'error|failed' <<<"$out"
    qemu-img map -U --output=json t.qcow2 >map.json
    stop_server
    qcheck t.qcow2
    qemu-io -f qcow2 -c "read -P 0 0 2M" t.qcow2 >/dev/null
    "$PY" - map.json <<'PY'
import json, sys
for e in json.load(open(sys.argv[1])):
    if e["start"] < 2 << 20 and e["data"]:
        sys.exit(f"still data after the trim: {e}")
PY
}
case_run "trim" trim

vdisk_both_ends() { # vdisk's NBD client reads vdisk's server, sparsely
    source_raw
    qemu-img convert -f raw -O vdi src.raw b.vdi
    stop_all_at_exit
    serve b.vdi readonly=true
    if ! vd info "$URI" >info.txt 2>&1; then
        grep -qi 'libnbd' info.txt || { cat info.txt; exit 1; }
        echo "vdisk built without libnbd: its NBD client is not tested here"
        return 0
    fi
    vd convert -q -O qcow2 "$URI" b.qcow2
    qemu-img compare b.qcow2 src.raw
    vd compare "$URI" b.vdi
    diff <(vd_map "$URI") <(vd_map b.vdi)
}
case_run "vdisk's NBD client against the plugin" vdisk_both_ends

snapshot() { # snapshot=NAME: the disk as it was, read-only
    source_raw
    qemu-img convert -f raw -O qcow2 src.raw s.qcow2
    qemu-img snapshot -c before s.qcow2
    qio qcow2 s.qcow2 "write -P 0x99 0 1M"
    sum=$(sha256sum <s.qcow2)
    stop_all_at_exit
    serve s.qcow2 snapshot=before
    qemu-img compare "$URI" src.raw
    nbdinfo "$URI" | grep -q 'is_read_only: true'
    stop_server
    [[ $(sha256sum <s.qcow2) == "$sum" ]]
    fails_cleanly serve s.qcow2 snapshot=nosuch 2>err
    grep -q nosuch err
}
case_run "an internal snapshot" snapshot

cow() { # no other tool reads cow: vdisk's own conversions are the reference
    source_raw
    vd convert -q -f raw -O cow src.raw c.cow
    served_reads c.cow cow
    served_writes c.cow cow
    vd convert -q -O raw c.cow got.raw
    cmp got.raw expect.raw
}
case_run "cow" cow

luks() {
    source_raw
    # qemu's secret is the whole file; key-secret-file drops one newline
    # at its end, as vdisk's --passphrase-file
    printf 'nbd secret' >pass.raw
    printf 'nbd secret\n' >pass
    qemu_img_luks convert -f raw -O luks --object secret,id=s,file=pass.raw \
        -o key-secret=s,iter-time=100 src.raw l.luks
    served_reads l.luks luks key-secret-file="$W/pass"
    # nbdkit's password convention and qemu's secret objects work too
    stop_all_at_exit
    serve l.luks readonly=true password=+"$W/pass.raw"
    qemu-img compare "$URI" src.raw
    stop_server
    serve l.luks readonly=true object=secret,id=k,file="$W/pass.raw" key-secret=k
    qemu-img compare "$URI" src.raw
    stop_server
    # no key, or the wrong one: nbdkit refuses to start, saying why
    fails_cleanly serve l.luks 2>err
    grep -q encrypted err
    printf 'wrong\n' >bad
    fails_cleanly serve l.luks key-secret-file="$W/bad"
    served_writes l.luks luks key-secret-file="$W/pass"
    qemu-img convert --object secret,id=s,file=pass.raw --image-opts \
        "driver=luks,key-secret=s,file.filename=l.luks" -O raw got.raw
    cmp got.raw expect.raw
}
case_run "luks" luks

real_vdi() { # a disk VirtualBox made
    [[ -f $REAL/hoho-hdd.vdi.xz ]] || { echo "no real fixtures at $REAL: skipped"; return 0; }
    stop_all_at_exit
    xz -dc "$REAL/hoho-hdd.vdi.xz" >vbox.vdi
    serve vbox.vdi readonly=true
    qemu-img compare "$URI" vbox.vdi
    diff <(nbd_map "$URI") <(vd_map vbox.vdi)
}
case_run "a VirtualBox vdi" real_vdi

ova() { # an OVA's disk, in place and read-only
    [[ -f $REAL/cdi-fake.ova ]] || { echo "no real fixtures at $REAL: skipped"; return 0; }
    stop_all_at_exit
    cp "$REAL/cdi-fake.ova" a.ova
    tar -xf a.ova disk1.vmdk
    serve a.ova
    qemu-img compare "$URI" disk1.vmdk
    nbdinfo "$URI" | grep -q 'is_read_only: true'
    stop_server
    serve a.ova disk=1 format=ova
    qemu-img compare "$URI" disk1.vmdk
    stop_server
    fails_cleanly serve a.ova disk=2
}
case_run "an OVA's disk" ova

readonly_refuses() { # readonly=true: writes refused, the file unchanged
    source_raw
    qemu-img convert -f raw -O vdi src.raw r.vdi
    sum=$(sha256sum <r.vdi)
    stop_all_at_exit
    serve r.vdi readonly=true
    out=$(qemu-io -f raw -c "write -P 1 0 64k" "$URI" 2>&1) || true
    grep -qi 'read-only\|permission\|not permitted' <<<"$out" || { echo "write not refused: $out"; exit 1; }
    # a reader's lock: other readers welcome, writers refused
    qemu-img info r.vdi >/dev/null
    not qemu-io -f vdi -c "write 0 512" r.vdi 2>/dev/null
    stop_server
    [[ $(sha256sum <r.vdi) == "$sum" ]]
}
case_run "readonly=true refuses writes" readonly_refuses

probed_raw() { # a probed raw file keeps qemu's rule for its first bytes
    source_raw
    cp src.raw r.img
    stop_all_at_exit
    serve r.img
    qemu-img create -q -f qcow2 hdr.qcow2 1M
    head -c 512 hdr.qcow2 >hdr
    out=$(qemu-io -f raw -c "write -s hdr 0 512" "$URI" 2>&1) || true
    grep -qi 'not permitted' <<<"$out" || { echo "header write not refused: $out"; exit 1; }
    qemu-io -f raw -c "write -P 9 1M 4k" "$URI" >/dev/null
    stop_server
    [[ $(qinfo r.img format) == raw ]]
}
case_run "probed raw" probed_raw

multi_conn() { # several connections at once write the one image
    source_raw
    qemu-img convert -f raw -O qcow2 src.raw m.qcow2
    stop_all_at_exit
    serve m.qcow2
    nbdinfo "$URI" | grep -q 'can_multi_conn: true'
    nbdcopy --connections=4 src.raw "$URI" 2>/dev/null || nbdcopy src.raw "$URI"
    qemu-img compare -U "$URI" src.raw
    stop_server
    qcheck m.qcow2
    qemu-img compare m.qcow2 src.raw
}
case_run "multi-conn writes" multi_conn

sparse_copy() { # clients copy sparsely: holes are never read nor written
    qemu-img create -q -f vdi big.vdi 1G
    qio vdi big.vdi "write -P 7 100M 1M" "write -P 8 1023M 64k"
    stop_all_at_exit
    serve big.vdi readonly=true
    nbdcopy "$URI" out.raw
    qemu-img convert -O qcow2 "$URI" out.qcow2
    stop_server
    qemu-img compare big.vdi out.raw
    qemu-img compare big.vdi out.qcow2
    (($(allocated out.raw) <= 4 * 1048576)) || { echo "nbdcopy's copy is not sparse: $(allocated out.raw)"; exit 1; }
    (($(allocated out.qcow2) <= 4 * 1048576)) || { echo "qemu-img's copy is not sparse: $(allocated out.qcow2)"; exit 1; }
}
case_run "sparse copies" sparse_copy

served_fd() { # fd=N: an image already open (vdiskd's worker serves so)
    source_raw
    qemu-img convert -f raw -O qcow2 src.raw f.qcow2
    stop_all_at_exit
    serve "" fd=3 3<>f.qcow2
    qemu-img compare -U "$URI" src.raw
    qemu-io -f raw -c "write -P 0x66 0 64k" "$URI" >/dev/null
    not qemu-io -f qcow2 -c "read 0 512" f.qcow2 2>/dev/null
    stop_server
    qemu-io -f qcow2 -c "read -P 0x66 0 64k" f.qcow2 >/dev/null
    qcheck f.qcow2
}
case_run "an open descriptor" served_fd

vdisk_serve() { # vdisk serve: the URI, then SIGINT stops it, unlocked
    source_raw
    qemu-img convert -f raw -O vdi src.raw s.vdi
    # vdisk itself, not vd's timeout, gets the signal
    "$VDISK" serve --socket "$W/s.sock" s.vdi >uri 2>err &
    pid=$!
    for _ in $(seq 100); do [[ -s uri ]] && break; sleep 0.05; done
    [[ $(cat uri) == "nbd+unix:///?socket=$W/s.sock" ]]
    qemu-io -f raw -c "write -P 0x44 64k 64k" "$(cat uri)" >/dev/null
    holds s.vdi
    kill -INT "$pid"
    rc=0
    wait "$pid" || rc=$?
    ((rc == 0)) || { echo "vdisk serve exited $rc"; cat err; exit 1; }
    # nothing holds the image any more: a plain qemu-img works
    not holds s.vdi
    qemu-img info s.vdi >/dev/null
    qemu-io -f vdi -c "read -P 0x44 64k 64k" s.vdi >/dev/null
    qemu-img check -q s.vdi
    [[ ! -e s.sock ]]
}
case_run "vdisk serve and SIGINT" vdisk_serve

# serve_bg ARGS...: vdisk serve ARGS in the background (vdisk itself, not
# vd's timeout, so that it gets the signals); sets PID and URI once it
# printed the URI, fails when it exits first.
serve_bg() {
    "$VDISK" serve "$@" >uri 2>err &
    PID=$!
    for _ in $(seq 200); do
        [[ -s uri ]] && break
        kill -0 $PID 2>/dev/null || { cat err; return 1; }
        sleep 0.05
    done
    URI=$(cat uri)
}

vdisk_serve_luks() { # the secret options of the other commands
    source_raw
    printf 'serve secret' >pass
    qemu_img_luks convert -f raw -O luks --object secret,id=s,file=pass \
        -o key-secret=s,iter-time=100 src.raw l.luks
    qemu_img_luks convert -f raw -O qcow2 --object secret,id=s,file=pass \
        -o encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=100 src.raw e.qcow2
    trap 'kill $PID 2>/dev/null || true; wait' EXIT
    serve_bg --socket "$W/a.sock" --passphrase-file pass l.luks
    qemu-img compare -U "$URI" src.raw
    kill -INT $PID
    wait $PID
    serve_bg --readonly --socket "$W/b.sock" --object secret,id=k,file=pass --image-opts \
        "driver=qcow2,encrypt.key-secret=k,file.filename=e.qcow2"
    qemu-img compare "$URI" src.raw
    kill -INT $PID
    wait $PID
    # no key and no terminal: vdisk says how to give one, nothing listens
    fails_cleanly vd serve --socket "$W/c.sock" l.luks 2>err
    grep -q 'passphrase' err
    [[ ! -e c.sock ]]
}
case_run "vdisk serve of encrypted images" vdisk_serve_luks

vdisk_serve_vbox() { # a VirtualBox snapshot's disk, its parent one folder up
    mkdir -p vm/Snapshots
    pattern_raw base.raw 16M
    vd convert -q -f raw -O vdi base.raw vm/base.vdi
    qemu-img create -q -f qcow2 -b "$PWD/base.raw" -F raw current.qcow2
    qio qcow2 current.qcow2 "write -P 67 1M 1M" "write -z 3M 64k" "write -P 68 9M 4k"
    vd convert -q -O vdi -B base.vdi -F vdi current.qcow2 vm/child.vdi
    uuid=$(vd info --output=json vm/child.vdi | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"]["image-uuid"])')
    mv vm/child.vdi "vm/Snapshots/{$uuid}.vdi"
    # nbdkit vdisk alone does not look there
    fails_cleanly serve "vm/Snapshots/{$uuid}.vdi" readonly=true
    trap 'kill $PID 2>/dev/null || true; wait' EXIT
    serve_bg --readonly --socket "$W/v.sock" "vm/Snapshots/{$uuid}.vdi"
    qemu-img compare "$URI" current.qcow2
    kill -INT $PID
    wait $PID
}
case_run "vdisk serve of a VirtualBox snapshot's disk" vdisk_serve_vbox

vdisk_serve_inet() { # TCP on 127.0.0.1, stopped by SIGTERM
    source_raw
    qemu-img convert -f raw -O vmdk src.raw t.vmdk
    port=$((20000 + RANDOM % 20000))
    "$VDISK" serve --readonly --port "$port" t.vmdk >uri 2>err &
    pid=$!
    for _ in $(seq 100); do [[ -s uri ]] && break; kill -0 $pid 2>/dev/null || break; sleep 0.05; done
    [[ $(cat uri) == "nbd://127.0.0.1:$port/" ]] || { cat err; exit 1; }
    qemu-img compare "$(cat uri)" src.raw
    # only loopback listens
    listening=$(ss -Hltn "sport = :$port")
    [[ $listening == *"127.0.0.1:$port "* && $listening != *"0.0.0.0:$port"* ]] || { echo "$listening"; exit 1; }
    kill -TERM "$pid"
    wait "$pid"
    qemu-img info t.vmdk >/dev/null
}
case_run "vdisk serve on 127.0.0.1" vdisk_serve_inet

vdisk_serve_errors() { # clear errors, nothing started
    source_raw
    fails_cleanly vd serve --socket "$W/x.sock" nothere.vdi
    VDISK_NBDKIT_PLUGIN=$W/none.so fails_cleanly vd serve --socket "$W/x.sock" src.raw 2>err
    grep -q 'plugin' err
    fails_cleanly env PATH=/nonexistent "$VDISK" serve --socket "$W/x.sock" src.raw 2>err
    grep -q 'nbdkit is not installed' err
    qemu-img convert -f raw -O qcow2 src.raw busy.qcow2
    stop_all_at_exit
    serve busy.qcow2
    fails_cleanly vd serve --socket "$W/y.sock" busy.qcow2
    [[ ! -e y.sock ]]
}
case_run "vdisk serve errors" vdisk_serve_errors

finish
