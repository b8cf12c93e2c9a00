#!/usr/bin/env bash
# Import into Ceph RBD: vdisk against qemu-img, measured in the same run on
# the same cluster. Not part of `meson test`; it prints a markdown table.
#
#   tests/bench/rbd.sh [--size 2G] [--dir DIR] [--runs 3]
#
# A one-node cluster (tests/ceph-cluster.sh: one monitor, one BlueStore OSD
# on a sparse file, loopback) is started in a mktemp -d directory (under
# --dir, default $TMPDIR or /var/tmp) and stopped, by pid, at the end. The
# source is a VirtualBox disk: qemu-img's conversion of a sparse raw image
# from ../shared/acceptance/mkimage.py (half of its 64 KiB chunks written;
# fixed seed), or of a simpler one where that script is missing.
#
# Each tool turns it into a new RBD image, --runs times (default 3), and the
# median counts: vdisk convert -O raw disk.vdi rbd:POOL/IMAGE against
# qemu-img convert -t writeback -O raw disk.vdi rbd:POOL/IMAGE (both flush
# the image before they exit; qemu-img's default, -t unsafe, does not). The
# image is removed before each run. vdisk's image must be the guest
# qemu-img compare expects, or the row is not measured. The table also shows
# the space each image uses in the cluster (rbd du: whole objects).
# VDISK (default build/tools/vdisk), QEMU_IMG (default qemu-img).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
VDISK=${VDISK:-$repo/build/tools/vdisk}
size=2G runs=3 base=${TMPDIR:-/var/tmp}
# shellcheck source=lib.sh
source "$here/lib.sh"
bench_args "$@"

[[ -x $VDISK ]] || { echo "no vdisk at $VDISK: build first or set VDISK" >&2; exit 1; }
"$QEMU_IMG" --help | grep -q 'Supported formats:.* rbd' ||
    { echo "qemu-img has no rbd driver (package qemu-block-extra)" >&2; exit 1; }
if "$VDISK" info rbd:p/i:conf=/nonexistent 2>&1 | grep -q 'built without Ceph RBD support'; then
    echo "vdisk was built without Ceph RBD support (librbd-dev)" >&2
    exit 1
fi

# shellcheck source=../ceph-cluster.sh
source "$repo/tests/ceph-cluster.sh"
D=$(mktemp -d "$base/vdisk-bench-rbd.XXXXXX")
trap 'ceph_cluster_stop; rm -rf "$D"' EXIT
trap 'exit 130' INT TERM
bench_need_space "$D" 3

echo "starting a Ceph cluster in $D/ceph ..." >&2
CEPH_OSD_SIZE=$(($(numfmt --from=iec "$size") * 3 / 1048576 + 4096))M ceph_cluster_start "$D/ceph" >&2 || exit 1
ceph_pool_create bench >&2 || exit 1

bench_vdi_source "$D" "$D/disk.vdi"
C=":conf=$CEPH_CONF:id=admin"

# remove IMAGE: the image a run before made in the benchmark's pool.
remove() { rbd rm "bench/$1" >/dev/null 2>&1 || true; }

echo
echo "$("$VDISK" --version 2>/dev/null | head -1 || echo vdisk) vs $("$QEMU_IMG" --version | head -1);" \
    "$(nproc) CPUs; a $size vdi ($(numfmt --to=iec "$(du -B1 "$D/disk.vdi" | cut -f1)") allocated);" \
    "one-node Ceph $(ceph --version | awk '{ print $3 }') (BlueStore on a sparse file on $(df --output=fstype "$D" | tail -1));" \
    "median of $runs runs"
echo
echo "| import | vdisk (s) | qemu-img (s) | vdisk / qemu-img | goal | vdisk used | qemu-img used | goal met |"
echo "|---|---:|---:|---:|---:|---:|---:|:---:|"
vt=$(bench_median_run "remove v" "$VDISK" convert -O raw "$D/disk.vdi" "rbd:bench/v$C")
if ! "$QEMU_IMG" compare -q -f vdi -F raw "$D/disk.vdi" "rbd:bench/v$C"; then
    echo "| vdi → rbd | vdisk's image differs from the source: not measured | | | | | | no |"
    exit 1
fi
bench_rbd_row "vdi → rbd (raw)" "$vt" "$D/disk.vdi" "$C"
