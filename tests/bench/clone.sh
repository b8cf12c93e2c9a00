#!/usr/bin/env bash
# Clone benchmark on a reflink file system: vdisk against qemu-img, in the
# same run on the same files. Not part of `meson test`; it prints a
# markdown table.
#
#   tests/bench/clone.sh [--size 2G] [--runs 3]
#
# As root: makes an XFS (mkfs.xfs -m reflink=1) in a file under $TMPDIR or
# /var/tmp, on a loop device, mounted in a mount namespace of the script's
# own (nothing reaches the host), and detached by name at the end. The
# source is the convert benchmark's image (../shared/acceptance/mkimage.py,
# half of its 64 KiB chunks written; fixed seed), as a qcow2 and a raw made
# by qemu-img on that file system.
#
# Rows: a qcow2 into qcow2 with nothing to convert (vdisk shares the whole
# file), a qcow2 into a qcow2 of other clusters and a raw into qcow2 (runs
# shared cluster by cluster, zero blocks found), each against qemu-img
# convert -t writeback (durable, as vdisk is), and qemu-img convert -C
# (its copy offload). Each timing includes a sync -f of the file system;
# best of --runs. The last column says whether the target shares extents
# with the source (filefrag -v). VDISK (default build/tools/vdisk),
# QEMU_IMG (default qemu-img).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
VDISK=${VDISK:-$repo/build/tools/vdisk}
QEMU_IMG=${QEMU_IMG:-qemu-img}
MKIMAGE=${MKIMAGE:-$repo/../shared/acceptance/mkimage.py}
size=2G runs=3

while (($#)); do
    case $1 in
    --size) size=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

((EUID == 0)) || { echo "clone.sh needs root (a loop device and a mount)" >&2; exit 1; }
for p in mkfs.xfs losetup filefrag unshare "$QEMU_IMG"; do
    command -v "$p" >/dev/null || { echo "$p not found (scripts/deps.sh installs xfsprogs, qemu-utils)" >&2; exit 1; }
done
[[ -x $VDISK ]] || { echo "no vdisk at $VDISK: build first or set VDISK" >&2; exit 1; }
[[ -r $MKIMAGE ]] || { echo "$MKIMAGE not found (set MKIMAGE)" >&2; exit 1; }

if [[ -z ${VDISK_CLONE_NS:-} ]]; then
    exec env VDISK_CLONE_NS=1 unshare --mount --propagation private -- "$0" --size "$size" --runs "$runs"
fi

base=${TMPDIR:-/var/tmp}
D=$(mktemp -d "$base/vdisk-clone.XXXXXX")
X=$D/xfs dev=""
cleanup() {
    if mountpoint -q "$X"; then umount "$X" || umount -l "$X"; fi
    [[ -n $dev ]] && losetup -d "$dev" 2>/dev/null
    rm -rf "$D"
}
trap cleanup EXIT
bytes=$(numfmt --from=iec "$size")
truncate -s $((bytes * 4 + (1 << 30))) "$D/xfs.img"
mkfs.xfs -q -m reflink=1 "$D/xfs.img"
dev=$(losetup -f --show "$D/xfs.img")
mkdir "$X"
mount -t xfs "$dev" "$X"

echo "making a $size source on XFS ..." >&2
/usr/bin/python3 "$MKIMAGE" --size "$size" --seed 1 -q "$X/src.raw"
"$QEMU_IMG" convert -f raw -O qcow2 "$X/src.raw" "$X/src.qcow2"
sync

# measure OUT CMD...: best wall time (ms resolution: a clone takes
# milliseconds) and CPU (user+sys) of the run that gave it, the file
# system synced in each.
measure() {
    local out=$1 best="" cpu="" i t u s t0 t1
    shift
    for ((i = 0; i < runs; i++)); do
        rm -f "$out"
        sync
        t0=$EPOCHREALTIME
        /usr/bin/time -f '%e %U %S' -o "$D/time" sh -c '"$@" >/dev/null && sync -f "$0"' "$out" "$@" ||
            { echo "failed: $*" >&2; return 1; }
        t1=$EPOCHREALTIME
        read -r _ u s <"$D/time"
        t=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        if [[ -z $best ]] || awk -v a="$t" -v b="$best" 'BEGIN { exit !(a < b) }'; then
            best=$t
            cpu=$(awk -v a="$u" -v b="$s" 'BEGIN { printf "%.2f", a + b }')
        fi
    done
    echo "$best $cpu $( (($(filefrag -v "$out" | grep -c shared) > 0)) && echo yes || echo no)"
}

cases=(
    "qcow2 → qcow2 (nothing to convert)|-f qcow2 -O qcow2|src.qcow2|out.qcow2|qcow2"
    "qcow2 → qcow2 -o cluster_size=128k|-f qcow2 -O qcow2 -o cluster_size=128k|src.qcow2|out.qcow2|qcow2"
    "raw → qcow2|-f raw -O qcow2|src.raw|out.qcow2|qcow2"
    "qcow2 → raw|-f qcow2 -O raw|src.qcow2|out.raw|raw"
)

echo
echo "$("$VDISK" --version 2>/dev/null | head -1) vs $("$QEMU_IMG" --version | head -1); $(nproc) CPUs;" \
    "$size source ($(numfmt --to=iec "$(du -B1 "$X/src.raw" | cut -f1)") allocated); XFS (reflink=1) on a loop device" \
    "in a file on $(df --output=fstype "$D" | tail -1); best of $runs runs; warm page cache"
echo
echo "| conversion | vdisk (s) | vdisk CPU (s) | shared | qemu-img -t writeback (s) | qemu-img CPU (s) | qemu-img -C -t writeback (s) | shared | vdisk / qemu-img |"
echo "|---|---:|---:|---|---:|---:|---:|---|---:|"
for c in "${cases[@]}"; do
    IFS='|' read -r label opts src out fmt <<<"$c"
    # shellcheck disable=SC2086 # opts is a list of words
    read -r vt vc vsh < <(measure "$X/v-$out" "$VDISK" convert $opts "$X/$src" "$X/v-$out")
    if ! "$QEMU_IMG" compare -q -f raw -F "$fmt" "$X/src.raw" "$X/v-$out"; then
        echo "| $label | vdisk output differs from the source: not measured | | | | | | | |"
        continue
    fi
    rm -f "$X/v-$out"
    # shellcheck disable=SC2086
    read -r qt qc _ < <(measure "$X/q-$out" "$QEMU_IMG" convert -t writeback $opts "$X/$src" "$X/q-$out")
    rm -f "$X/q-$out"
    # shellcheck disable=SC2086
    read -r ct _ csh < <(measure "$X/c-$out" "$QEMU_IMG" convert -C -t writeback $opts "$X/$src" "$X/c-$out")
    rm -f "$X/c-$out"
    ratio=$(awk -v a="$vt" -v b="$qt" 'BEGIN { printf (b > 0 ? "%.3f" : "n/a"), a / b }')
    echo "| $label | $vt | $vc | $vsh | $qt | $qc | $ct | $csh | $ratio |"
done
echo
echo "shared: the target shares extents with the source (filefrag -v). Each timed run ends with"
echo "sync -f of the file system."
