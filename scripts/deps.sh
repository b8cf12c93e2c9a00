# Sourced by run.sh and test.sh: install the Debian packages vdisk needs to
# build and test, when any is missing.
VDISK_PACKAGES=(
  meson ninja-build pkg-config gcc
  libglib2.0-dev libglib2.0-dev-bin zlib1g-dev libdeflate-dev libzstd-dev libssl-dev libpolkit-gobject-1-dev
  libseccomp-dev libnbd-dev
  qemu-utils qemu-system-x86 ovmf mtools fdisk python3 xz-utils bzip2 time clang-format libxml2-utils groff-base
  desktop-file-utils shared-mime-info libglib2.0-bin
  dbus dbus-daemon polkitd pkexec python3-gi python3-dbus gir1.2-glib-2.0 passwd util-linux
  cryptsetup-bin strace systemd xfsprogs e2fsprogs nbdkit nbdkit-plugin-dev libnbd-bin lvm2
  libvirt-dev libvirt-daemon-system libvirt-clients virtinst python3-libvirt
  ceph-mon ceph-osd ceph-common librbd-dev qemu-block-extra libvirt-daemon-driver-storage-rbd
)

vdisk_install_deps() {
  local missing=() p
  for p in "${VDISK_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "Installing: ${missing[*]}"
  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; return 1; }
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# Configure build/ once, then compile. The crash suite needs the
# fault-injecting test copies of vdisk, the daemon suite a vdisk-worker that
# misbehaves on request (neither is ever installed).
vdisk_build() {
  if [[ ! -f build/build.ninja ]]; then
    meson setup build -Dfault_injection=true -Dtest_hooks=true
  else
    local opts
    opts=$(meson introspect --buildoptions build)
    if ! grep -q '"name": "fault_injection", "value": true' <<<"$opts" ||
       ! grep -q '"name": "test_hooks", "value": true' <<<"$opts"; then
      # --reconfigure reads meson_options.txt again: a build/ made before
      # an option existed does not know it yet.
      meson setup --reconfigure build -Dfault_injection=true -Dtest_hooks=true
    fi
  fi
  meson compile -C build
}
