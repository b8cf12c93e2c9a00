#!/usr/bin/env bash
# The main job: a desktop user imports a VirtualBox disk into a KVM storage
# pool as qcow2 through vdiskd, and sees progress.
#
# Installs what is missing and builds; then starts a private system bus,
# polkitd and vdiskd from the build tree with a pool in a temporary folder,
# makes a VirtualBox .vdi with data, imports it with `vdiskctl import` as
# qcow2 (live progress bar), prints `vdiskctl info` of the result and
# `qemu-img compare` of source and result. Then a whole VirtualBox VM with
# a snapshot (tests/libvirt/make-boot-vm.sh: a tiny disk whose boot sector
# prints BASE, changed to CURRENT in the snapshot) goes in with `vdiskctl
# import-vm`: the plan and domain (--dry-run), the import through vdiskd
# with the domain defined (libvirt's test driver), and the imported disk
# booted under QEMU, which prints CURRENT. It stops everything it started.
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
vdisk_on_exit 'vdisk_services_stop; rm -rf "$work"' # exits 0 exactly when all above did

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

echo "== A whole VirtualBox VM with a snapshot: the base in the VM folder, its current state in Snapshots/"
mkdir -p "$work/vbox"
VDISK=$PWD/build/tools/vdisk tests/libvirt/make-boot-vm.sh "$work/vbox"
(cd "$work/vbox/vm" && find . -type f | sort)

echo "== vdiskctl import-vm --dry-run: the plan and the libvirt domain"
build/tools/vdiskctl import-vm --dry-run --domain-type qemu "$work/vbox/vm" kvm

# libvirt's test driver stands in for the user's qemu:///system here: the
# domain is defined there, and the VM is booted below with QEMU directly.
echo "== vdiskctl import-vm: its disk into pool kvm through vdiskd, its domain defined"
build/tools/vdiskctl import-vm --domain-type qemu --connect test:///default "$work/vbox/vm" kvm
build/tools/vdiskctl volumes kvm

if command -v qemu-system-x86_64 >/dev/null; then
  echo "== It boots: the imported disk's serial port (BASE was the base; CURRENT is the VM as it is now)"
  volume=$(find "$work/pool" -maxdepth 1 -name 'vdisk-boot*.qcow2' | head -n 1)
  qemu-system-x86_64 -machine pc,accel=tcg -m 32 -display none -no-reboot -monitor none \
    -nodefaults -snapshot -serial "file:$work/serial.log" -drive "file=$volume,format=qcow2,if=ide" \
    2>/dev/null &
  qemu=$!
  for ((i = 0; i < 600; i++)); do
    [[ -s $work/serial.log ]] && grep -q $'\r' "$work/serial.log" && break
    sleep 0.1
  done
  kill "$qemu" 2>/dev/null || true
  wait "$qemu" 2>/dev/null || true
  tr -d '\r' <"$work/serial.log" | head -n 1
  grep -q CURRENT "$work/serial.log"
fi
