#!/usr/bin/env bash
# vdisk as an NBD client (formats/nbd.c, through libnbd): exports that
# qemu-nbd (and nbdkit) serve are sources and targets in qemu-img's forms
# (nbd+unix://, nbd://, nbd:HOST:PORT, nbd:unix:PATH, json:, --image-opts
# driver=nbd). qemu-img is the oracle: a convert from an export gives
# qemu-img's image from the file, sparse and without reading the holes;
# info, map and compare of an export print what qemu-img prints; a convert
# into a writable export leaves the guest qemu-img compare expects; a
# read-only export, bad names and a dead socket fail cleanly. Servers are
# started with a pid file and stopped by that pid; everything is on
# loopback (unix sockets, 127.0.0.1).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

if ! command -v qemu-nbd >/dev/null; then
    echo "qemu-nbd not found (package qemu-utils): the NBD client is not tested"
    echo "0 passed, 0 failed"
    exit 77
fi
if "$VDISK" info "nbd+unix:///?socket=$T/none.sock" 2>&1 | grep -q 'built without NBD support'; then
    echo "vdisk was built without NBD support (libnbd-dev missing when it was built): not tested"
    echo "0 passed, 0 failed"
    exit 77
fi

# serve FILE FMT [qemu-nbd options...]: qemu-nbd serving FILE on a unix
# socket of its own, in the background; sets SOCK and URI. Every server a
# case started is stopped, by its pid, when the case ends.
serve() {
    local n=$((${NSERVED:-0} + 1)) file=$1 fmt=$2
    shift 2
    NSERVED=$n
    SOCK=$W/nbd-$n.sock
    qemu-nbd --fork --persistent --pid-file="$W/nbd-$n.pid" -k "$SOCK" -f "$fmt" "$@" "$file"
    URI="nbd+unix:///?socket=$SOCK"
    trap stop_servers EXIT
}

stop_servers() {
    local p
    for p in "$W"/*.pid; do
        [[ -f $p ]] || continue
        kill "$(cat "$p")" 2>/dev/null || true
        rm -f "$p"
    done
    sleep 0.2 # let qemu-nbd write back and close its image
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# data_ranges FILE: the ranges qemu-img map calls data, one "start length" a line.
data_ranges() {
    qemu-img map --output=json -f qcow2 "$1" |
        "$PY" -c 'import json,sys; [print(e["start"], e["length"]) for e in json.load(sys.stdin) if e["data"]]'
}

# A qcow2 of 64 GiB holding a few MiB: data at the start, in the middle
# and in the last sector, and a range written as zeroes.
make_sparse_source() {
    qemu-img create -q -f qcow2 src.qcow2 64G
    qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' -c 'write -P 0x33 10G 64k' \
        -c 'write -z 20G 1M' -c 'write -P 0x77 68719476224 512' src.qcow2 >/dev/null
}

case_convert_from_export() {
    make_sparse_source
    serve src.qcow2 qcow2 -r
    vd convert -O qcow2 "$URI" out.qcow2
    qemu-img convert -O qcow2 src.qcow2 ref.qcow2
    qemu-img compare -q -f qcow2 -F qcow2 out.qcow2 ref.qcow2
    qcheck out.qcow2
    # Sparse: what is data in qemu-img's copy is data in vdisk's, and no more.
    diff <(data_ranges ref.qcow2) <(data_ranges out.qcow2)
    local ours theirs
    ours=$(qinfo out.qcow2 actual-size)
    theirs=$(qinfo ref.qcow2 actual-size)
    ((ours <= theirs + 1048576)) || { echo "out.qcow2 takes $ours bytes, qemu-img's copy $theirs"; return 1; }
    # And raw, as qemu-img makes it from the file.
    vd convert -O raw "$URI" out.raw
    qemu-img compare -q -f raw -F qcow2 out.raw src.qcow2
    (($(stat -c %b out.raw) * 512 < 16 * 1048576)) || { echo "out.raw is not sparse"; return 1; }
}

# The holes of an export are never read: nbdkit's log filter records every
# request, and the reads add up to the data, not to the disk's 8 GiB.
case_holes_not_read() {
    command -v nbdkit >/dev/null || { echo "nbdkit not found (package nbdkit): skipped"; return 0; }
    [[ -e /usr/lib/x86_64-linux-gnu/nbdkit/filters/nbdkit-log-filter.so ]] ||
        nbdkit --filter=log null --dump-plugin >/dev/null 2>&1 ||
        { echo "nbdkit's log filter is missing: skipped"; return 0; }
    truncate -s 8G disk.raw
    qemu-io -f raw -c 'write -P 0x11 4G 2M' -c 'write -P 0x22 8589869056 64k' disk.raw >/dev/null
    nbdkit --filter=log -P "$W/nbdkit.pid" -U "$W/k.sock" file disk.raw logfile="$W/requests.log"
    trap stop_servers EXIT
    vd convert -O qcow2 "nbd+unix:///?socket=$W/k.sock" out.qcow2
    stop_servers
    qemu-img compare -q -f qcow2 -F raw out.qcow2 disk.raw
    local read
    read=$("$PY" - "$W/requests.log" <<'EOF'
import re, sys
total = 0
for line in open(sys.argv[1]):
    m = re.search(r'\bRead id=\d+ offset=0x[0-9a-f]+ count=(0x[0-9a-f]+)', line)
    if m:
        total += int(m.group(1), 16)
print(total)
EOF
)
    grep -q ' Extents ' "$W/requests.log" || { echo "no block status was asked"; return 1; }
    ((read <= 4 * 1048576)) || { echo "read $read bytes of a disk holding 2 MiB + 64 KiB"; return 1; }
}

case_info_map_compare() {
    qemu-img create -q -f qcow2 src.qcow2 64M
    qemu-io -f qcow2 -c 'write -P 0x11 1M 1M' -c 'write -z 8M 1M' -c 'write -P 0x22 60M 64k' \
        src.qcow2 >/dev/null
    serve src.qcow2 qcow2 -r
    diff <(qemu-img info "$URI") <(vd info "$URI")
    diff <(qemu-img info --output=json "$URI") <(vd info --output=json "$URI")
    diff <(qemu-img map "$URI") <(vd map "$URI")
    diff <(qemu-img map --output=json "$URI") <(vd map --output=json "$URI")
    diff <(qemu-img compare "$URI" src.qcow2) <(vd compare "$URI" src.qcow2)
    cp src.qcow2 other.qcow2
    qemu-io -f qcow2 -c 'write -P 0x33 2M 512' other.qcow2 >/dev/null
    local want
    want=$(qemu-img compare "$URI" other.qcow2) && { echo "qemu-img found them identical"; return 1; }
    expect_exit 1 vd compare "$URI" other.qcow2 >got.txt
    [[ $(cat got.txt) == "$want" ]] || { echo "vdisk: $(cat got.txt); qemu-img: $want"; return 1; }
}

# The x-dirty-bitmap context of --image-opts, as qemu-img map shows it.
case_dirty_bitmap_map() {
    qemu-img create -q -f qcow2 src.qcow2 16M
    qemu-img bitmap --add -f qcow2 src.qcow2 b0
    qemu-io -f qcow2 -c 'write 1M 1M' -c 'write 9M 64k' src.qcow2 >/dev/null
    serve src.qcow2 qcow2 -r -B b0 -A
    local opts="driver=nbd,server.type=unix,server.path=$SOCK" x
    # qemu-img calls the export with no format above it format nbd.
    diff <(qemu-img info --image-opts "$opts") <(vd info --image-opts "$opts")
    diff <(qemu-img info --output=json --image-opts "$opts") <(vd info --output=json --image-opts "$opts")
    for x in "" ",x-dirty-bitmap=qemu:dirty-bitmap:b0" ",x-dirty-bitmap=qemu:allocation-depth"; do
        diff <(qemu-img map --output=json --image-opts "$opts$x") \
            <(vd map --output=json --image-opts "$opts$x")
    done
    fails_cleanly vd map --image-opts "$opts,x-dirty-bitmap=qemu:dirty-bitmap:nope" 2>err.txt
    grep -q 'qemu:dirty-bitmap:nope' err.txt
}

case_convert_into_export() {
    qemu-img create -q -f qcow2 src.qcow2 32M
    qemu-io -f qcow2 -c 'write -P 0x44 0 1M' -c 'write -P 0x55 30M 512' src.qcow2 >/dev/null
    qemu-img create -q -f raw target.raw 64M
    # Old contents where the source goes (the rest of a larger export stays).
    qemu-io -f raw -c 'write -P 0xee 0 32M' target.raw >/dev/null
    serve target.raw raw
    vd convert -O raw src.qcow2 "$URI"
    stop_servers
    qemu-img compare -q -f qcow2 -F raw src.qcow2 target.raw
    # -n, as qemu-img needs it, the same.
    qemu-io -f qcow2 -c 'write -P 0x66 4M 1M' src.qcow2 >/dev/null
    serve target.raw raw
    vd convert -n -O raw src.qcow2 "$URI"
    stop_servers
    qemu-img compare -q -f qcow2 -F raw src.qcow2 target.raw
    # A qcow2 laid on the export: the export's bytes are then an image.
    serve target.raw raw
    vd convert -O qcow2 src.qcow2 "$URI"
    stop_servers
    [[ $(qinfo target.raw format) == qcow2 ]]
    qcheck target.raw
    qemu-img compare -q -f qcow2 -F qcow2 src.qcow2 target.raw
    # Formats that append to their file cannot be laid on an export.
    serve target.raw raw
    fails_cleanly vd convert -O vmdk src.qcow2 "$URI" 2>err.txt
    grep -q 'vmdk image grows by appending' err.txt
    stop_servers
    [[ $(qinfo target.raw format) == qcow2 ]] # untouched
    # An export too small for the source: a clear error, nothing written.
    qemu-img create -q -f qcow2 big.qcow2 128M
    truncate -s 64M small.raw
    serve small.raw raw
    fails_cleanly vd convert -O raw big.qcow2 "$URI" 2>err.txt
    grep -q "$SOCK" err.txt
    grep -q 'cannot grow' err.txt
    fails_cleanly vd convert -n -O raw big.qcow2 "$URI" 2>err.txt
    grep -q 'smaller' err.txt
    stop_servers
    [[ $(qemu-img map --output=json -f raw small.raw | "$PY" -c 'import json,sys; print(any(e["data"] for e in json.load(sys.stdin)))') == False ]]
}

case_readonly_refused() {
    qemu-img create -q -f qcow2 src.qcow2 16M
    qemu-img create -q -f raw target.raw 16M
    serve target.raw raw -r
    fails_cleanly vd convert -n -O raw src.qcow2 "$URI" 2>err.txt
    grep -q "$SOCK.*read-only" err.txt
    fails_cleanly vd convert -O raw src.qcow2 "$URI" 2>err.txt
    grep -q "read-only" err.txt
}

case_bad_names() {
    local name
    for name in "nbd://" "nbd+unix:///" "nbd+unix:///?sock=$W/x" "nbd:foo" "nbd:unix:" \
        "nbd://127.0.0.1/?socket=x" "nbd+rdma://127.0.0.1/"; do
        fails_cleanly timeout 20 "$VDISK" info "$name" 2>err.txt
        grep -qF "$name" err.txt || grep -q 'not a valid NBD address' err.txt
    done
    fails_cleanly timeout 20 "$VDISK" info "nbds://127.0.0.1/x" 2>err.txt
    grep -q 'TLS' err.txt
    # A socket nobody listens on any more, and one that is not there.
    "$PY" -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.close()' "$W/dead.sock"
    fails_cleanly timeout 20 "$VDISK" info "nbd+unix:///?socket=$W/dead.sock" 2>err.txt
    grep -q "dead.sock.*refused" err.txt
    fails_cleanly timeout 20 "$VDISK" convert -O raw "nbd+unix:///?socket=$W/gone.sock" out.raw 2>err.txt
    grep -q "gone.sock" err.txt
    [[ ! -e out.raw ]]
    # A server that was killed, and an export it does not have.
    qemu-img create -q -f raw disk.raw 1M
    serve disk.raw raw -r
    fails_cleanly timeout 20 "$VDISK" info "nbd+unix:///nope?socket=$SOCK" 2>err.txt
    grep -q "nope" err.txt
    stop_servers
    fails_cleanly timeout 20 "$VDISK" info "$URI" 2>err.txt
    grep -qF "$SOCK" err.txt
}

case_inet() {
    qemu-img create -q -f qcow2 src.qcow2 32M
    qemu-io -f qcow2 -c 'write -P 0x12 3M 1M' src.qcow2 >/dev/null
    local port
    port=$(free_port)
    qemu-nbd --fork --persistent --pid-file="$W/inet.pid" -b 127.0.0.1 -p "$port" -x exp -r \
        -f qcow2 src.qcow2
    trap stop_servers EXIT
    local uri="nbd://127.0.0.1:$port/exp"
    diff <(qemu-img info "$uri") <(vd info "$uri")
    vd convert -O qcow2 "$uri" out.qcow2
    qemu-img compare -q -f qcow2 -F qcow2 out.qcow2 src.qcow2
    vd compare "nbd:127.0.0.1:$port:exportname=exp" src.qcow2
    vd compare "json:{\"driver\": \"nbd\", \"server\": {\"type\": \"inet\", \"host\": \"127.0.0.1\", \"port\": \"$port\"}, \"export\": \"exp\"}" src.qcow2
    vd compare --image-opts "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$port,export=exp" \
        driver=qcow2,file.filename=src.qcow2
    # Another export name is not served.
    fails_cleanly vd info "nbd://127.0.0.1:$port/other" 2>err.txt
    grep -q other err.txt
}

# A qcow2 served as its bytes: -f qcow2 (or probing) reads the image on it.
case_image_on_export() {
    qemu-img create -q -f qcow2 src.qcow2 16M
    qemu-io -f qcow2 -c 'write -P 0x9 5M 1M' src.qcow2 >/dev/null
    serve src.qcow2 raw -r
    diff <(qemu-img info "$URI") <(vd info "$URI")
    diff <(qemu-img info -f qcow2 "$URI") <(vd info -f qcow2 "$URI")
    vd convert -f qcow2 -O raw "$URI" out.raw
    qemu-img compare -q -f raw -F qcow2 out.raw src.qcow2
    vd compare "nbd:unix:$SOCK" src.qcow2
    vd compare "json:{\"driver\": \"qcow2\", \"file\": {\"driver\": \"nbd\", \"server\": {\"type\": \"unix\", \"path\": \"$SOCK\"}}}" src.qcow2
    vd compare --image-opts "driver=qcow2,file.driver=nbd,file.server.type=unix,file.server.path=$SOCK" \
        driver=qcow2,file.filename=src.qcow2
}

# Under the name qemu-img, the errors of NBD names are qemu-img's words.
case_qemu_voice() {
    mkdir -p "$W/as-qemu"
    ln -sfn "$VDISK" "$W/as-qemu/qemu-img"
    qemu-img create -q -f qcow2 src.qcow2 16M
    qemu-img create -q -f qcow2 big.qcow2 128M
    truncate -s 64M target.raw
    serve target.raw raw -r
    local ro=$URI
    serve target.raw raw --shared=4 # the same file, writable
    "$PY" -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.close()' "$W/dead.sock"
    local port
    port=$(free_port)
    local -a cmds=(
        "info nbd+unix:///?socket=$W/gone.sock"
        "info nbd+unix:///?socket=$W/dead.sock"
        "info nbd://127.0.0.1:$port/"
        "info nbds://127.0.0.1/x"
        "info nbd://"
        "info nbd:foo"
        "info nbd+unix:///nope?socket=$SOCK"
        "convert -n -O raw src.qcow2 $ro"
        "convert -n -O raw big.qcow2 $URI"
        "info $URI"
        "map --output=json $URI"
    )
    local c want got rc_want rc_got
    for c in "${cmds[@]}"; do
        rc_want=0 rc_got=0
        # shellcheck disable=SC2086 # each is a command line
        want=$(qemu-img $c 2>&1) || rc_want=$?
        # shellcheck disable=SC2086
        got=$(timeout 20 "$W/as-qemu/qemu-img" $c 2>&1) || rc_got=$?
        [[ $got == "$want" && $rc_got == "$rc_want" ]] ||
            { echo "qemu-img $c: qemu-img ($rc_want): $want"; echo "vdisk ($rc_got): $got"; return 1; }
    done
}

case_run convert-from-export case_convert_from_export
case_run holes-not-read case_holes_not_read
case_run info-map-compare case_info_map_compare
case_run dirty-bitmap-map case_dirty_bitmap_map
case_run convert-into-export case_convert_into_export
case_run readonly-refused case_readonly_refused
case_run bad-names case_bad_names
case_run inet case_inet
case_run image-on-export case_image_on_export
case_run qemu-voice case_qemu_voice
finish
