#!/usr/bin/env bash
# Encrypted conversions: vdisk against qemu-img in the same run, on the same
# files. raw → LUKS qcow2 (aes-256-xts-plain64) and back. Prints a markdown
# table; not part of `meson test`.
#
#   tests/bench/crypto.sh [--size 1G] [--runs 2] [--dir DIR]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
VDISK=${VDISK:-$repo/build/tools/vdisk}
MKIMAGE=${MKIMAGE:-$repo/../shared/acceptance/mkimage.py}
size=1G runs=2 base=${TMPDIR:-/var/tmp}
while (($#)); do
    case $1 in
    --size) size=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --dir) base=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ -x $VDISK ]] || { echo "no vdisk at $VDISK" >&2; exit 1; }
D=$(mktemp -d "$base/vdisk-bench-crypto.XXXXXX")
trap 'rm -rf "$D"' EXIT
/usr/bin/python3 "$MKIMAGE" --size "$size" --seed 1 -q "$D/src.raw"
printf 'benchmark passphrase' >"$D/pw"
SEC="secret,id=s0,file=$D/pw"
LUKS="encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=100"
# qemu-img's PBKDF calibration fails now and then on a busy machine
# ("Unable to get accurate CPU usage"): try again, for either tool.
retry() { local i; for i in 1 2 3 4 5; do "$@" && return 0; sleep 1; done; "$@"; }
retry qemu-img convert --object "$SEC" -f raw -O qcow2 -o "$LUKS" "$D/src.raw" "$D/src.qcow2"

# best TOOL ARGS... (last is the output): best wall time of the runs, sync included
best() {
    local out=${!#} b="" i t
    for ((i = 0; i < runs; i++)); do
        rm -f "$out"; sync
        retry /usr/bin/time -f '%e' -o "$D/time" sh -c '"$@" >/dev/null && sync -f "$0"' "$out" "$@"
        t=$(cat "$D/time")
        if [[ -z $b ]] || awk -v a="$t" -v c="$b" 'BEGIN { exit !(a < c) }'; then b=$t; fi
    done
    rm -f "$out"
    echo "$b"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "| conversion ($size source) | vdisk (s) | qemu-img (s) | vdisk / qemu-img |"
echo "|---|---:|---:|---:|"
for tool in vdisk qemu; do
    cmd=$([[ $tool == vdisk ]] && echo "$VDISK" || echo qemu-img)
    t=$(best "$cmd" convert --object "$SEC" -f raw -O qcow2 -o "$LUKS" "$D/src.raw" "$D/out.qcow2")
    eval "enc_$tool=$t"
    t=$(best "$cmd" convert --object "$SEC" --image-opts \
        "driver=qcow2,encrypt.key-secret=s0,file.filename=$D/src.qcow2" -O raw "$D/out.raw")
    eval "dec_$tool=$t"
done
echo "| raw → LUKS qcow2 | $enc_vdisk | $enc_qemu | $(ratio "$enc_vdisk" "$enc_qemu") |"
echo "| LUKS qcow2 → raw | $dec_vdisk | $dec_qemu | $(ratio "$dec_vdisk" "$dec_qemu") |"
