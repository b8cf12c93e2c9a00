#!/usr/bin/env bash
# The main job: a desktop user imports a VirtualBox disk into a KVM storage
# pool as qcow2 through vdiskd, and sees progress.
#
# Installs what is missing and builds; then starts a private system bus,
# polkitd and vdiskd from the build tree with a pool in a temporary folder,
# makes a VirtualBox .vdi with data, imports it with `vdiskctl import` as
# qcow2 (live progress bar), prints `vdiskctl info` of the result and
# `qemu-img compare` of source and result, and stops everything it started.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
if ((EUID != 0)); then
  exec sudo --preserve-env=PATH "$0" "$@" # system bus, polkitd and policy files need root
fi
source scripts/deps.sh
source scripts/services.sh
vdisk_install_deps
vdisk_build
# The polkit policy and the services' state stay in a mount namespace of
# their own: the host's files are left as they were.
[[ ${VDISK_PRIVATE_NS:-} == ready ]] || exec tests/private-ns.sh "$0" "$@"

work=$(mktemp -d /tmp/vdisk-run.XXXXXX)
chmod 755 "$work"
trap 'vdisk_services_stop; rm -rf "$work"' EXIT

echo "== Starting a private system bus, polkitd and vdiskd (pool 'kvm' in $work/pool)"
mkdir -p "$work/pool" "$work/pools.d"
printf '[Pool kvm]\nDirectory=%s\n' "$work/pool" >"$work/pools.d/kvm.conf"
vdisk_services_start "$work"

echo "== A VirtualBox disk: 2 GiB with data, zeroes and holes"
/usr/bin/python3 scripts/sample-disk.py "$work/sample.raw" 2048
build/tools/vdisk convert -q -f raw -O vdi "$work/sample.raw" "$work/MyVM.vdi"
ls -lhs "$work/MyVM.vdi"

echo "== vdiskctl import MyVM.vdi kvm/myvm.qcow2 -f qcow2"
build/tools/vdiskctl import -p "$work/MyVM.vdi" kvm/myvm.qcow2 -f qcow2

echo "== vdiskctl info kvm/myvm.qcow2"
build/tools/vdiskctl info kvm/myvm.qcow2

echo "== qemu-img compare MyVM.vdi pool/myvm.qcow2"
qemu-img compare -f vdi -F qcow2 "$work/MyVM.vdi" "$work/pool/myvm.qcow2"
qemu-img check -f qcow2 "$work/pool/myvm.qcow2"
