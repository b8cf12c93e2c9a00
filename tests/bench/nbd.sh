#!/usr/bin/env bash
# Serving over NBD: reading a whole export through vdisk's nbdkit plugin
# against the other servers in the same run, on the same files. Prints a
# markdown table; not part of `meson test`.
#
#   tests/bench/nbd.sh [--size 1G] [--runs 3] [--dir DIR]
#
# The source is a raw image from ../shared/acceptance/mkimage.py with
# every 64 KiB chunk written (half of them text-like, the rest random; no
# holes, so every byte crosses the socket), and qemu-img's qcow2 copy of
# it. Each server listens on a unix socket in a mktemp -d directory under
# --dir (default $TMPDIR or /var/tmp), read-only, and `nbdcopy URI null:`
# reads the whole export (with the connections and requests in flight
# nbdcopy picks for the server: both plugins and qemu-nbd -r offer
# multi-conn). Rows:
#   raw:   nbdkit vdisk format=raw   against nbdkit file (goal: within 10%)
#   qcow2: nbdkit vdisk              against qemu-nbd -r -f qcow2
#          (goal: at least as fast)
# Best of --runs runs each; the page cache is warm (the files are read
# once first), so the figures are the servers' own cost.
# VDISK_NBDKIT_PLUGIN: the plugin (default build/nbd/nbdkit-vdisk-plugin.so).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
PLUGIN=${VDISK_NBDKIT_PLUGIN:-$repo/build/nbd/nbdkit-vdisk-plugin.so}
MKIMAGE=${MKIMAGE:-$repo/../shared/acceptance/mkimage.py}
size=1G runs=3 base=${TMPDIR:-/var/tmp}
while (($#)); do
    case $1 in
    --size) size=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --dir) base=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ -f $PLUGIN ]] || { echo "no nbdkit plugin at $PLUGIN: build vdisk with nbdkit-plugin-dev, or set VDISK_NBDKIT_PLUGIN" >&2; exit 1; }
for p in nbdkit nbdcopy qemu-nbd qemu-img; do
    command -v $p >/dev/null || { echo "$p not found (packages nbdkit, libnbd-bin, qemu-utils)" >&2; exit 1; }
done

D=$(mktemp -d "$base/vdisk-bench-nbd.XXXXXX")
SERVER_PID=
stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    while kill -0 "$SERVER_PID" 2>/dev/null; do sleep 0.05; done
    SERVER_PID=
}
trap 'stop_server; rm -rf "$D"' EXIT

echo "making a $size source image in $D ..." >&2
/usr/bin/python3 "$MKIMAGE" --size "$size" --seed 1 --fill 1 --zero-chunks 0 -q "$D/src.raw"
qemu-img convert -f raw -O qcow2 "$D/src.raw" "$D/src.qcow2"
cat "$D/src.raw" "$D/src.qcow2" >/dev/null

# start NAME: one server on $D/sock, until stop_server; sets URI.
start() {
    rm -f "$D/sock" "$D/pid"
    case $1 in
    file) nbdkit -r --pidfile "$D/pid" -U "$D/sock" file "$D/src.raw" ;;
    vdisk-raw) nbdkit -r --pidfile "$D/pid" -U "$D/sock" "$PLUGIN" "file=$D/src.raw" format=raw readonly=true ;;
    vdisk-qcow2) nbdkit -r --pidfile "$D/pid" -U "$D/sock" "$PLUGIN" "file=$D/src.qcow2" readonly=true ;;
    qemu-nbd)
        qemu-nbd -r -t -e 16 -f qcow2 -k "$D/sock" --pid-file="$D/pid" "$D/src.qcow2" &
        ;;
    esac
    for _ in $(seq 200); do [[ -s $D/pid && -S $D/sock ]] && break; sleep 0.05; done
    SERVER_PID=$(cat "$D/pid")
    URI="nbd+unix:///?socket=$D/sock"
}

# best NAME: the best wall time of nbdcopy reading the whole export.
best() {
    local b="" i t
    start "$1"
    for ((i = 0; i < runs; i++)); do
        /usr/bin/time -f '%e' -o "$D/time" nbdcopy "$URI" null:
        t=$(cat "$D/time")
        if [[ -z $b ]] || awk -v a="$t" -v c="$b" 'BEGIN { exit !(a < c) }'; then b=$t; fi
    done
    stop_server
    echo "$b"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mibs() { awk -v s="$(numfmt --from=iec "$size")" -v t="$1" 'BEGIN { printf "%.0f", s / 1048576 / t }'; }

file=$(best file)
vraw=$(best vdisk-raw)
qnbd=$(best qemu-nbd)
vqcow2=$(best vdisk-qcow2)

echo "nbdkit $(nbdkit --version | awk '{print $2}'), $(qemu-nbd --version | head -1), $(nbdcopy --version | head -1); $(nproc) CPUs; $size, every chunk written; best of $runs runs; warm page cache"
echo
echo "| read $size with nbdcopy URI null: | vdisk plugin (s) | other server (s) | vdisk / other | vdisk MiB/s | goal | met |"
echo "|---|---:|---:|---:|---:|---:|:---:|"
r=$(ratio "$vraw" "$file")
met=$(awk -v r="$r" 'BEGIN { print (r <= 1.10) ? "yes" : "no" }')
echo "| raw: nbdkit vdisk format=raw vs nbdkit file | $vraw | $file | $r | $(mibs "$vraw") | ≤ 1.10 | $met |"
r=$(ratio "$vqcow2" "$qnbd")
met=$(awk -v r="$r" 'BEGIN { print (r <= 1.00) ? "yes" : "no" }')
echo "| qcow2: nbdkit vdisk vs qemu-nbd -r | $vqcow2 | $qnbd | $r | $(mibs "$vqcow2") | ≤ 1.00 | $met |"
echo
echo "ratio < 1: the vdisk plugin is faster."
