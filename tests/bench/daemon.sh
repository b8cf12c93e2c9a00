#!/usr/bin/env bash
# The desktop import through vdiskd against vdisk convert of the same image
# in the same run: a 2 GiB VirtualBox disk into a pool as qcow2. The goal is
# the daemon path within 5% of the direct one. Needs root (a private system
# bus, polkitd and vdiskd are started and stopped here). Not part of
# `meson test`.
#
#   tests/bench/daemon.sh [--size 2G] [--runs 3] [--dir DIR]
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/../.."
size=2G runs=3 base=${TMPDIR:-/var/tmp}
# shellcheck source=lib.sh
source tests/bench/lib.sh
bench_args "$@"
((EUID == 0)) || { echo "needs root: it starts a system bus, polkitd and vdiskd" >&2; exit 1; }
source scripts/services.sh
D=$(mktemp -d "$base/vdisk-bench-daemon.XXXXXX")
chmod 755 "$D"
vdisk_on_exit 'vdisk_services_stop; rm -rf "$D"'
mkdir -p "$D/pool" "$D/pools.d"
printf '[Pool bench]\nDirectory=%s\n' "$D/pool" >"$D/pools.d/bench.conf"
bench_vdi_source "$D" "$D/src.vdi"
vdisk_services_start "$D" >/dev/null

# timed OUTPUT CMD...: wall time of one run, sync of the output included
timed() {
    local out=$1
    shift
    sync
    /usr/bin/time -f '%e' -o "$D/time" sh -c '"$@" >/dev/null && sync -f "$0"' "$out" "$@"
    cat "$D/time"
}
lower() { awk -v a="$1" -v b="$2" 'BEGIN { print (b == "" || a < b) ? a : b }'; }
direct="" daemon=""
for ((i = 0; i < runs; i++)); do
    rm -f "$D/direct.qcow2"
    direct=$(lower "$(timed "$D/direct.qcow2" build/tools/vdisk convert -q -f vdi -O qcow2 "$D/src.vdi" "$D/direct.qcow2")" "$direct")
    # a new volume name each run: the pool knows the last one until it is deleted
    daemon=$(lower "$(timed "$D/pool/imp$i.qcow2" build/tools/vdiskctl import -q "$D/src.vdi" "bench/imp$i.qcow2" -f qcow2)" "$daemon")
    qemu-img compare -q -f vdi -F qcow2 "$D/src.vdi" "$D/pool/imp$i.qcow2"
    build/tools/vdiskctl delete -q "bench/imp$i.qcow2" >/dev/null 2>&1 || rm -f "$D/pool/imp$i.qcow2"
done
echo "| $size vdi → qcow2 | vdisk convert (s) | vdiskctl import via vdiskd (s) | daemon / direct |"
echo "|---|---:|---:|---:|"
echo "| best of $runs | $direct | $daemon | $(awk -v a="$daemon" -v b="$direct" 'BEGIN { printf "%.2f", a / b }') |"
