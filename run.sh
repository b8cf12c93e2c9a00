#!/usr/bin/env bash
# The main job, offline: build vdisk, make a sample disk, convert it to
# qcow2 with a progress bar, show what vdisk sees, and prove the content
# survived. (Once vdiskd exists this runs the same import through it.)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
source scripts/deps.sh
vdisk_install_deps
vdisk_build

VDISK=$PWD/build/tools/vdisk
work=$(mktemp -d /tmp/vdisk-run.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== A 1 GiB sample disk: data, zeroes and holes"
/usr/bin/python3 scripts/sample-disk.py "$work/sample.raw" 1024

echo "== vdisk convert sample.raw -> disk.qcow2 (format from the extension)"
"$VDISK" convert -p "$work/sample.raw" "$work/disk.qcow2"

echo "== vdisk info disk.qcow2"
"$VDISK" info "$work/disk.qcow2"

echo "== vdisk check disk.qcow2"
"$VDISK" check "$work/disk.qcow2"

echo "== vdisk compare sample.raw disk.qcow2"
"$VDISK" compare -f raw -F qcow2 "$work/sample.raw" "$work/disk.qcow2"

echo "== vdisk convert -c (compressed) and the sizes on disk"
"$VDISK" convert -p -c -O qcow2 "$work/sample.raw" "$work/small.qcow2"
du -h --apparent-size "$work/sample.raw" | sed 's/^/apparent /'
du -h "$work/sample.raw" "$work/disk.qcow2" "$work/small.qcow2"
