#!/usr/bin/env bash
# Serving over NBD: reading a whole export through vdisk's nbdkit plugin
# against the other servers in the same run, on the same files. Prints a
# markdown table; not part of `meson test`.
#
#   tests/bench/nbd.sh [--size 1G] [--runs 5] [--dir DIR]
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
# Both servers of a row run at once and their reads take turns, --runs
# each, and the median counts, so a machine busy with other work weighs on
# both alike and one quiet moment does not decide a row;
# the page cache is warm (the files are read once first), so the figures
# are the servers' own cost.
# VDISK_NBDKIT_PLUGIN: the plugin (default build/nbd/nbdkit-vdisk-plugin.so).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
PLUGIN=${VDISK_NBDKIT_PLUGIN:-$repo/build/nbd/nbdkit-vdisk-plugin.so}
MKIMAGE=${MKIMAGE:-$repo/../shared/acceptance/mkimage.py}
size=1G runs=5 base=${TMPDIR:-/var/tmp}
# shellcheck source=lib.sh
source "$here/lib.sh"
bench_args "$@"
[[ -f $PLUGIN ]] || { echo "no nbdkit plugin at $PLUGIN: build vdisk with nbdkit-plugin-dev, or set VDISK_NBDKIT_PLUGIN" >&2; exit 1; }
for p in nbdkit nbdcopy qemu-nbd qemu-img; do
    command -v $p >/dev/null || { echo "$p not found (packages nbdkit, libnbd-bin, qemu-utils)" >&2; exit 1; }
done

D=$(mktemp -d "$base/vdisk-bench-nbd.XXXXXX")
PIDS=()
stop_servers() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || continue
        while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
    done
    PIDS=()
}
trap 'stop_servers; rm -rf "$D"' EXIT

echo "making a $size source image in $D ..." >&2
/usr/bin/python3 "$MKIMAGE" --size "$size" --seed 1 --fill 1 --zero-chunks 0 -q "$D/src.raw"
qemu-img convert -f raw -O qcow2 "$D/src.raw" "$D/src.qcow2"
cat "$D/src.raw" "$D/src.qcow2" >/dev/null

# start NAME: a server on $D/NAME.sock, until stop_servers.
start() {
    local sock=$D/$1.sock pid=$D/$1.pid
    case $1 in
    file) nbdkit -r --pidfile "$pid" -U "$sock" file "$D/src.raw" ;;
    vdisk-raw) nbdkit -r --pidfile "$pid" -U "$sock" "$PLUGIN" "file=$D/src.raw" format=raw readonly=true ;;
    vdisk-qcow2) nbdkit -r --pidfile "$pid" -U "$sock" "$PLUGIN" "file=$D/src.qcow2" readonly=true ;;
    qemu-nbd) qemu-nbd -r -t -e 16 -f qcow2 -k "$sock" --pid-file="$pid" "$D/src.qcow2" & ;;
    esac
    for _ in $(seq 200); do [[ -s $pid && -S $sock ]] && break; sleep 0.05; done
    PIDS+=("$(cat "$pid")")
}

# race A B: the median wall times of nbdcopy reading each export whole,
# the two taking turns so that both see the same machine; "TA TB".
race() {
    local i name ta=() tb=()
    start "$1"
    start "$2"
    for ((i = 0; i < runs; i++)); do
        for name in "$1" "$2"; do
            /usr/bin/time -f '%e' -o "$D/time" nbdcopy "nbd+unix:///?socket=$D/$name.sock" null:
            if [[ $name == "$1" ]]; then ta+=("$(cat "$D/time")"); else tb+=("$(cat "$D/time")"); fi
        done
    done
    stop_servers
    echo "$(median "${ta[@]}") $(median "${tb[@]}")"
}
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mibs() { awk -v s="$(numfmt --from=iec "$size")" -v t="$1" 'BEGIN { printf "%.0f", s / 1048576 / t }'; }

read -r vraw file < <(race vdisk-raw file)
read -r vqcow2 qnbd < <(race vdisk-qcow2 qemu-nbd)

echo "nbdkit $(nbdkit --version | awk '{print $2}'), $(qemu-nbd --version | head -1), $(nbdcopy --version | head -1); $(nproc) CPUs; $size, every chunk written; median of $runs runs each, taking turns; warm page cache"
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
