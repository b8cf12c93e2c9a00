#!/usr/bin/env bash
# A VirtualBox disk written into an LV, measured in the same run three
# ways: qemu-img convert into the existing device, as libvirt runs it (the
# baseline); vdisk convert -n onto the device (the engine offline, its
# host_device); and through vdiskd's logical pool (a job in the confined
# worker). The goal (issue 17) is vdisk at least as fast as qemu-img.
# Needs root (a volume group on a loop device; a private system bus,
# polkitd and vdiskd, started and stopped here) and lvm2. Not part of
# `meson test`; it prints a markdown table.
#
#   tests/bench/logical.sh [--size 2G] [--runs 3] [--dir DIR]
#
# The volume group (vdiskbenchPID) is made on a loop device over a sparse
# file in a mktemp -d directory under --dir (default $TMPDIR or /var/tmp),
# and at the end its LVs, the group and the loop devices are removed by
# name, whatever happened; no other group is touched. The source is
# qemu-img's vdi of a sparse raw image from ../shared/acceptance/mkimage.py
# (half of its 64 KiB chunks written, fixed seed), read once before the
# runs: the page cache stays warm (caches are never dropped, on a machine
# others share), and `sync` runs before each timed command.
#
# The rows, each run in turn within a round so that other work on the
# machine weighs on all alike, --runs rounds, the median of each counting:
#   qemu-img convert -n -t writeback -f vdi -O raw disk.vdi /dev/VG/LV
#   qemu-img convert -n -t none -f vdi -O raw disk.vdi /dev/VG/LV
#   vdisk convert -n -f vdi -O raw disk.vdi /dev/VG/LV
#   vdiskctl copy src/disk.vdi lvm/LV     vdiskd's CopyFrom into the existing
#       LV, what libvirt's vol-create-from into a logical pool runs through
#       the shim (the vdi lies in a dir pool of vdiskd's for it)
#   vdiskctl import disk.vdi lvm/NEW      vdiskd makes the LV with lvcreate
#       and copies; the LV is deleted through vdiskd before each run
# qemu-img runs with both cache modes that flush the device before it exits,
# as vdisk and vdiskd's job do: -t writeback (the other benchmarks' choice)
# and -t none (O_DIRECT, which admins often pick for block devices).
# libvirt's command line has no -t, and qemu-img convert's default,
# -t unsafe, never flushes. The goal counts against the faster of the two. Before each command the
# target is emptied with blkdiscard (where the device takes discards), so
# that every run starts from the same device; after it the LV must be the
# guest qemu-img compare expects, or the row is not measured.
#
# Where the kernel has no device-mapper (dmsetup version fails: a container)
# no LV can be activated. The LV is then a stand-in: made in the group's
# metadata only (lvcreate with activation=0), its device a loop device over
# a sparse file linked at /dev/VG/LV, which vdiskd's pool lists and opens as
# the LV. Every row but the import writes into it; the import, whose lvcreate
# fails there, is not measured, and the table says so.
# BUILD (default build) holds vdisk, vdiskd and vdiskctl; QEMU_IMG (default
# qemu-img).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/../.."
BUILD=${BUILD:-build}
size=2G runs=3 base=${TMPDIR:-/var/tmp}
# shellcheck source=lib.sh
source tests/bench/lib.sh
bench_args "$@"
((EUID == 0)) || { echo "needs root: it makes a volume group on a loop device and starts a system bus, polkitd and vdiskd" >&2; exit 1; }
[[ -x $BUILD/tools/vdisk && -x $BUILD/daemon/vdiskd && -x $BUILD/tools/vdiskctl ]] ||
    { echo "no vdisk, vdiskd or vdiskctl in $BUILD: build first or set BUILD" >&2; exit 1; }
for p in losetup blkdiscard pvcreate vgcreate lvcreate lvs lvremove vgremove; do
    command -v "$p" >/dev/null || { echo "$p is missing (lvm2, util-linux)" >&2; exit 1; }
done
[[ -e /dev/loop-control ]] || { echo "no loop devices here (/dev/loop-control)" >&2; exit 1; }
export LVM_SUPPRESS_FD_WARNINGS=1

# shellcheck source-path=SCRIPTDIR/../.. source=scripts/services.sh
source scripts/services.sh
D=$(mktemp -d "$base/vdisk-bench-logical.XXXXXX")
chmod 755 "$D"
VG='' LVS=() LOOPS=() LINKS=() MADE_DEV_VG=''
# Everything this script made, by name: vdiskd first (it holds the LVs
# open), then the LVs, the group, the stand-ins' links, the loop devices.
teardown() {
    local i
    vdisk_services_stop
    if [[ -n $VG ]]; then
        for i in "${LVS[@]}"; do lvremove -q -f "$VG/$i" >/dev/null 2>&1; done
        vgremove -q -f "$VG" >/dev/null 2>&1
        for i in "${LINKS[@]}"; do rm -f "$i"; done
        [[ -z $MADE_DEV_VG ]] || rmdir "/dev/$VG"
    fi
    for ((i = ${#LOOPS[@]} - 1; i >= 0; i--)); do
        pvremove -q -f "${LOOPS[i]}" >/dev/null 2>&1
        losetup -d "${LOOPS[i]}"
    done
    rm -rf "$D"
}
vdisk_on_exit teardown
trap 'exit 130' INT TERM
bytes=$(numfmt --from=iec "$size")
bench_need_space "$D" 3

mkdir "$D/src"
bench_vdi_source "$D" "$D/src/disk.vdi"
SRC=$D/src/disk.vdi

# The group, on a sparse file large enough for two LVs of the source's size
# (the target, and the import's new LV).
vg=vdiskbench$$
if vgs "$vg" >/dev/null 2>&1; then echo "a volume group $vg exists already: not touching it" >&2; exit 1; fi
truncate -s $((bytes * 2 + 256 * 1048576)) "$D/pv.img"
LOOPS+=("$(losetup -f --show "$D/pv.img")")
pvcreate -q "${LOOPS[0]}" >/dev/null
VG=$vg
vgcreate -q "$VG" "${LOOPS[0]}" >/dev/null
DM=1
dmsetup version >/dev/null 2>&1 || DM=
LVS+=(target new)
if [[ -n $DM ]]; then
    lvcreate -q --yes -L "${bytes}b" -n target "$VG" >/dev/null
    if command -v udevadm >/dev/null; then udevadm settle || true; fi
    how="an LV of the group on a loop device (device-mapper present)"
else
    # an inactive LV in the metadata; its device a loop device of its size
    lvcreate -q --config 'global{activation=0}' -an -Zn -L "${bytes}b" -n target "$VG" >/dev/null 2>&1
    lvsize=$(lvs --noheadings --units b --nosuffix -o lv_size "$VG/target" | tr -d ' ')
    truncate -s "$lvsize" "$D/target.img"
    LOOPS+=("$(losetup -f --show "$D/target.img")")
    if [[ ! -d /dev/$VG ]]; then mkdir "/dev/$VG" && MADE_DEV_VG=1; fi
    ln -s "${LOOPS[-1]}" "/dev/$VG/target" && LINKS+=("/dev/$VG/target")
    how="a stand-in LV: no device-mapper here (dmsetup version fails), so no LV can be activated; the LV is in the group's metadata only and its device is a loop device over a sparse file beside the source"
fi
LV=/dev/$VG/target

mkdir -p "$D/pools.d"
printf '[Pool src]\nDirectory=%s\n' "$D/src" >"$D/pools.d/src.conf"
printf '[Pool lvm]\nType=logical\nSource=%s\n' "$VG" >"$D/pools.d/lvm.conf"
vdisk_services_start "$D" >/dev/null
listed() {
    "$BUILD/tools/vdiskctl" -q info lvm/target >/dev/null 2>&1 &&
        "$BUILD/tools/vdiskctl" -q info src/disk.vdi >/dev/null 2>&1
}
for _ in $(seq 100); do listed && break; sleep 0.2; done
listed || { echo "vdiskd lists no lvm/target or src/disk.vdi:" >&2; tail -n 20 "$D/vdiskd.log" >&2; exit 1; }
cat "$SRC" >/dev/null
# Without device-mapper the import is tried once, to show why it is not
# measured.
import_why=''
if [[ -z $DM ]]; then
    if import_why=$("$BUILD/tools/vdiskctl" -q import "$SRC" lvm/new 2>&1); then
        import_why="it succeeded without device-mapper, which this script does not expect"
    fi
    import_why=$(head -1 <<<"$import_why")
fi

# timed CMD...: the wall time of CMD, which must succeed.
timed() {
    sync
    /usr/bin/time -f '%e' -o "$D/time" "$@" >/dev/null || { echo "failed: $*" >&2; return 1; }
    cat "$D/time"
}
# empty DEV: discard what the last run wrote, where the device takes it.
empty() { blkdiscard -f "$1" >/dev/null 2>&1 || true; }
# same DEV: the LV is the guest of the source, as qemu-img compare sees it.
same() { "$QEMU_IMG" compare -q -f vdi -F raw "$SRC" "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf (b > 0 ? "%.2f" : "n/a"), a / b }'; }

wt=() nt=() vt=() ct=() it=() bad=()
for ((r = 0; r < runs; r++)); do
    echo "round $((r + 1)) of $runs ..." >&2
    empty "$LV"
    wt+=("$(timed "$QEMU_IMG" convert -n -t writeback -f vdi -O raw "$SRC" "$LV")")
    same "$LV" || bad+=(writeback)
    empty "$LV"
    nt+=("$(timed "$QEMU_IMG" convert -n -t none -f vdi -O raw "$SRC" "$LV")")
    same "$LV" || bad+=(none)
    empty "$LV"
    vt+=("$(timed "$BUILD/tools/vdisk" convert -q -n -f vdi -O raw "$SRC" "$LV")")
    same "$LV" || bad+=(vdisk)
    empty "$LV"
    ct+=("$(timed "$BUILD/tools/vdiskctl" -q copy src/disk.vdi lvm/target)")
    same "$LV" || bad+=(copy)
    if [[ -n $DM ]]; then
        if "$BUILD/tools/vdiskctl" -q info lvm/new >/dev/null 2>&1; then
            empty "/dev/$VG/new"
            "$BUILD/tools/vdiskctl" -q delete lvm/new >/dev/null
        fi
        it+=("$(timed "$BUILD/tools/vdiskctl" -q import "$SRC" lvm/new)")
        same "/dev/$VG/new" || bad+=(import)
    fi
    echo "  qemu-img -t writeback ${wt[-1]} s, -t none ${nt[-1]} s; vdisk ${vt[-1]} s;" \
        "vdiskctl copy ${ct[-1]} s${it:+; vdiskctl import ${it[-1]} s}" >&2
done

differs() { [[ " ${bad[*]} " == *" $1 "* ]]; }
w=$(bench_median "${wt[@]}")
n=$(bench_median "${nt[@]}")
echo
echo "vdisk $(git describe --always 2>/dev/null || echo) vs $("$QEMU_IMG" --version | head -1);" \
    "$(nproc) CPUs; a $size vdi ($(numfmt --to=iec "$(du -B1 "$SRC" | cut -f1)") allocated);" \
    "median of $runs runs; warm page cache; the target emptied with blkdiscard before each run"
echo
echo "Target: $how."
echo
echo "| vdi → LV (raw) | time (s) | / qemu-img -t writeback | / qemu-img -t none | goal | goal met |"
echo "|---|---:|---:|---:|---:|:---:|"
# row NAME KEY TIME GOAL: met when TIME is no more than either qemu-img's.
row() {
    local name=$1 key=$2 t=$3 goal=$4 rw rn met=no
    if differs "$key"; then
        echo "| $name | the LV differs from the source: not measured | | | $goal | no |"
        return
    fi
    rw=$(ratio "$t" "$w")
    rn=$(ratio "$t" "$n")
    if [[ $goal == - ]]; then
        met=-
    elif awk -v a="$rw" -v b="$rn" 'BEGIN { exit !(a != "n/a" && b != "n/a" && a <= 1.0 && b <= 1.0) }'; then
        met=yes
    fi
    echo "| $name | $t | $rw | $rn | $goal | $met |"
}
row "qemu-img convert -n -t writeback into the LV" writeback "$w" -
row "qemu-img convert -n -t none into the LV" none "$n" -
row "vdisk convert -n (host_device, offline)" vdisk "$(bench_median "${vt[@]}")" "≤ 1.00"
row "vdiskctl copy into the existing LV (vdiskd's CopyFrom, libvirt's vol-create-from)" copy "$(bench_median "${ct[@]}")" "≤ 1.00"
if [[ -n $DM ]]; then
    row "vdiskctl import into a new LV (vdiskd's lvcreate, then the copy)" import "$(bench_median "${it[@]}")" "≤ 1.00"
else
    echo "| vdiskctl import into a new LV | not measured (below) | | | ≤ 1.00 | - |"
fi
echo
echo "goal: no slower than qemu-img with either cache mode. Every command ends with the data on"
echo "the device: qemu-img flushes it before it exits with -t writeback and -t none (O_DIRECT),"
echo "vdisk and vdiskd's job fdatasync it."
[[ -n $DM ]] || echo "vdiskctl import into a new LV is not measured: without device-mapper vdiskd's lvcreate cannot activate the LV it makes (vdiskctl said: $import_why)."
((${#bad[@]} == 0))
