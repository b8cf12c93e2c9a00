#!/usr/bin/env bash
# A VirtualBox disk imported into vdiskd's rbd pool (vdiskctl import, a job
# in the confined worker) against qemu-img convert -O raw of the same disk
# into the same Ceph pool, measured in the same run. The goal is the daemon
# path at least as fast, and as sparse. Needs root (a private system bus,
# polkitd and vdiskd are started and stopped here) and the Ceph packages.
# Not part of `meson test`; it prints a markdown table.
#
#   tests/bench/pools.sh [--size 2G] [--runs 3] [--dir DIR]
#
# The cluster is tests/ceph-cluster.sh's (one monitor, one BlueStore OSD on
# a sparse file, loopback), in a mktemp -d directory under --dir (default
# $TMPDIR or /var/tmp), stopped by pid at the end. The source is qemu-img's
# vdi of a sparse raw image from ../shared/acceptance/mkimage.py (half of
# its 64 KiB chunks written, fixed seed). Each run makes a new image, the
# one before removed; the median of --runs counts. qemu-img runs with
# -t writeback (it flushes before it exits, as vdiskd's job does). The
# imported image must be the guest qemu-img compare expects, or the row is
# not measured. BUILD (default build) holds vdiskd and vdiskctl.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/../.."
BUILD=${BUILD:-build}
size=2G runs=3 base=${TMPDIR:-/var/tmp}
# shellcheck source=lib.sh
source tests/bench/lib.sh
bench_args "$@"
((EUID == 0)) || { echo "needs root: it starts a system bus, polkitd and vdiskd" >&2; exit 1; }
[[ -x $BUILD/daemon/vdiskd && -x $BUILD/tools/vdiskctl ]] ||
    { echo "no vdiskd or vdiskctl in $BUILD: build first or set BUILD" >&2; exit 1; }
"$QEMU_IMG" --help | grep -q 'Supported formats:.* rbd' ||
    { echo "qemu-img has no rbd driver (package qemu-block-extra)" >&2; exit 1; }

source scripts/services.sh
source tests/ceph-cluster.sh
D=$(mktemp -d "$base/vdisk-bench-pools.XXXXXX")
chmod 755 "$D"
vdisk_on_exit 'vdisk_services_stop; ceph_cluster_stop; rm -rf "$D"'
bench_need_space "$D" 3

echo "starting a Ceph cluster in $D/ceph ..." >&2
CEPH_OSD_SIZE=$(($(numfmt --from=iec "$size") * 3 / 1048576 + 4096))M ceph_cluster_start "$D/ceph" >&2 || exit 1
ceph_pool_create bench >&2 || exit 1

bench_vdi_source "$D" "$D/disk.vdi"

mkdir -p "$D/pools.d"
printf '[Pool ceph]\nType=rbd\nSource=bench\nConf=%s\nKeyring=%s\n' "$CEPH_CONF" "$CEPH_KEYRING" \
    >"$D/pools.d/ceph.conf"
vdisk_services_start "$D" >/dev/null
for _ in $(seq 100); do
    "$BUILD/tools/vdiskctl" pools --json | /usr/bin/python3 -c \
        'import json,sys; sys.exit(any(p["error"] for p in json.load(sys.stdin)))' && break
    sleep 0.2
done
C=":conf=$CEPH_CONF:id=admin"

# remove IMAGE: the image a run before made, through vdiskd for its own
# volume, so that it forgets it.
remove() {
    "$BUILD/tools/vdiskctl" -q delete "ceph/$1" >/dev/null 2>&1 || true
    rbd rm "bench/$1" >/dev/null 2>&1 || true
}

echo
echo "vdiskd $(git describe --always 2>/dev/null || echo) vs $("$QEMU_IMG" --version | head -1);" \
    "$(nproc) CPUs; a $size vdi ($(numfmt --to=iec "$(du -B1 "$D/disk.vdi" | cut -f1)") allocated);" \
    "one-node Ceph $(ceph --version | awk '{ print $3 }'); median of $runs runs"
echo
echo "| import | vdiskctl (s) | qemu-img (s) | vdiskctl / qemu-img | goal | vdiskctl used | qemu-img used | goal met |"
echo "|---|---:|---:|---:|---:|---:|---:|:---:|"
vt=$(bench_median_run "remove v" "$BUILD/tools/vdiskctl" -q import "$D/disk.vdi" ceph/v)
if ! "$QEMU_IMG" compare -q -f vdi -F raw "$D/disk.vdi" "rbd:bench/v$C"; then
    echo "| vdi → rbd pool | vdiskd's image differs from the source: not measured | | | | | | no |"
    exit 1
fi
bench_rbd_row "vdi → vdiskd rbd pool (raw)" "$vt" "$D/disk.vdi" "$C"
