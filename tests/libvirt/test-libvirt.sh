#!/usr/bin/env bash
# The libvirt suite: virsh and virt-manager's library (virtinst) drive volumes
# through the shim (build/plugin/vdisk-qemu-img) and vdiskd, end to end with
# the real programs: a private system bus, polkitd, vdiskd from the build
# tree, and libvirtd in a mount namespace where /usr/bin/qemu-img is masked,
# so every operation provably goes through vdisk. qemu-img/qemu-io (outside
# the namespace) are the oracle. Needs root and libvirt-daemon-system,
# libvirt-clients, virtinst; exits 77 (skip) without them.
# Prints one line per failed case, then "N passed, M failed".
set -uo pipefail
REPO=${REPO:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${BUILD:-$REPO/build}
SHIM=$BUILD/plugin/vdisk-qemu-img VDISKCTL=$BUILD/tools/vdiskctl
export PY=/usr/bin/python3

[[ $(id -u) == 0 ]] || { echo "SKIP: needs root"; exit 77; }
# The test users, polkit files and libvirt state stay in a mount namespace
# of their own.
[[ ${VDISK_PRIVATE_NS:-} == ready ]] ||
  exec "$REPO/tests/private-ns.sh" --private /run/libvirt --private /var/lib/libvirt \
    --private /var/cache/libvirt --private /var/log/libvirt "$0" "$@"
for p in libvirtd virsh qemu-img qemu-io unshare; do
  command -v "$p" >/dev/null || { echo "SKIP: $p is missing"; exit 77; }
done
[[ -d /usr/share/virt-manager/virtinst ]] || { echo "SKIP: virtinst is missing"; exit 77; }
[[ -x $SHIM && -x $BUILD/daemon/vdiskd ]] || { echo "SKIP: build first"; exit 77; }
if [[ -e /run/libvirtd.pid ]] && kill -0 "$(cat /run/libvirtd.pid)" 2>/dev/null; then
  echo "SKIP: a libvirtd is already running"; exit 77
fi

T=$(mktemp -d /tmp/vdisk-libvirt.XXXXXX)
chmod 755 "$T"
LIBVIRTD_PID=
cleanup() {
  virsh -q -c qemu:///system destroy vdisk-test >/dev/null 2>&1
  virsh -q -c qemu:///system undefine vdisk-test --snapshots-metadata >/dev/null 2>&1
  virsh -q -c qemu:///system undefine vdisk-priv --snapshots-metadata >/dev/null 2>&1
  virsh -q -c qemu:///system destroy vdisk-boot >/dev/null 2>&1
  virsh -q -c qemu:///system undefine vdisk-boot >/dev/null 2>&1
  virsh -q -c qemu:///system pool-destroy vdisktest >/dev/null 2>&1
  virsh -q -c qemu:///system pool-undefine vdisktest >/dev/null 2>&1
  [[ -n $LIBVIRTD_PID ]] && kill "$LIBVIRTD_PID" 2>/dev/null
  cd "$REPO" && vdisk_services_stop
  rm -rf "$T"
}
trap cleanup EXIT
# shellcheck source=../../scripts/services.sh
source "$REPO/scripts/services.sh"
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$T/system_bus_socket
# vdisk_start_bus listens where DBUS_SYSTEM_BUS_ADDRESS points.
cd "$REPO" && vdisk_services_start "$T" || { echo "services did not start"; exit 1; }

mkdir -p "$T/shim" && ln -s "$SHIM" "$T/shim/qemu-img"
# Every domain here runs on TCG (type qemu), so libvirtd sees no working
# /dev/kvm: one that root may open and QEMU's user may not (a container's,
# mode 600) makes it probe QEMU anew at every capabilities lookup, most of
# a minute for each virsh define. A domain's QEMU then keeps this /dev
# (namespaces = [] in the private /etc's qemu.conf): libvirt cannot move
# the mount on /dev/kvm into a /dev of the domain's own.
: >"$T/no-kvm" && chmod 000 "$T/no-kvm"
[[ ! -e /dev/kvm ]] || printf '\nnamespaces = []\n' >>/etc/libvirt/qemu.conf
unshare -m sh -c "mount --bind /dev/null /usr/bin/qemu-img &&
  { [ ! -e /dev/kvm ] || mount --bind $T/no-kvm /dev/kvm; } &&
  exec env PATH=$T/shim:/usr/sbin:/usr/bin:/sbin:/bin VDISK_SHIM_FALLBACK=0 libvirtd -d --pid-file $T/libvirtd.pid" ||
  { echo "libvirtd did not start"; exit 1; }
for _ in $(seq 50); do [[ -s $T/libvirtd.pid ]] && break; sleep 0.1; done
LIBVIRTD_PID=$(cat "$T/libvirtd.pid")
export V="virsh -q -c qemu:///system" LV=$T/pool T SHIM VDISKCTL REPO
for _ in $(seq 50); do $V version >/dev/null 2>&1 && break; sleep 0.1; done
$V pool-define-as vdisktest dir --target "$LV" >/dev/null && $V pool-build vdisktest >/dev/null &&
  $V pool-start vdisktest >/dev/null || { echo "no libvirt pool"; exit 1; }

PASSED=0 FAILED=0
# VDISK_LIBVIRT_CASES="t_a t_b" runs only those cases (the set-up is the same).
case_run() {
  local name=$1 fn=$2 log=$T/case.$((PASSED + FAILED)).log
  [[ -z ${VDISK_LIBVIRT_CASES:-} || " $VDISK_LIBVIRT_CASES " == *" $fn "* ]] || return 0
  export -f "$fn"
  if bash -eo pipefail -c "$fn" >"$log" 2>&1; then
    PASSED=$((PASSED + 1))
  else
    FAILED=$((FAILED + 1))
    echo "FAIL $name"
    tail -n 8 "$log" | sed 's/^/    /'
  fi
}
vsize() { qemu-img info -f "$2" --output=json "$1" | $PY -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }
export -f vsize

t_create() {
  $V vol-create-as vdisktest a.qcow2 64M --format qcow2
  qemu-img check -f qcow2 "$LV/a.qcow2"
  [[ $(vsize "$LV/a.qcow2" qcow2) == 67108864 ]]
  $V vol-create-as vdisktest p.qcow2 64M --format qcow2 --prealloc-metadata
  qemu-img check -f qcow2 "$LV/p.qcow2"
  $V vol-create-as vdisktest o.qcow2 64M --format qcow2 --backing-vol a.qcow2 --backing-vol-format qcow2
  qemu-img check -f qcow2 "$LV/o.qcow2"
  $V vol-dumpxml --pool vdisktest o.qcow2 >"$T/o.xml"
  grep -q "<path>$LV/a.qcow2</path>" "$T/o.xml"
  grep -q "<capacity unit='bytes'>67108864</capacity>" "$T/o.xml"
  for f in vmdk vdi qcow; do
    $V vol-create-as vdisktest "x.$f" 32M --format "$f"
    $V vol-dumpxml --pool vdisktest "x.$f" | grep -q "<format type='$f'/>"
    [[ $(vsize "$LV/x.$f" "$f") == 33554432 ]]
  done
  qemu-img check -f vmdk "$LV/x.vmdk"; qemu-img check -f vdi "$LV/x.vdi"
}
case_run "vol-create-as qcow2 (plain, preallocated, overlay), vmdk, vdi, qcow" t_create

t_xml() {
  cat >"$T/f.xml" <<XML
<volume><name>f.qcow2</name><capacity unit='MiB'>64</capacity>
  <target><format type='qcow2'/><clusterSize unit='KiB'>128</clusterSize>
  <features><lazy_refcounts/></features></target></volume>
XML
  $V vol-create vdisktest "$T/f.xml"
  qemu-img info --output=json "$LV/f.qcow2" | $PY -c '
import json,sys
d=json.load(sys.stdin)
assert d["cluster-size"]==131072, d
s=d["format-specific"]["data"]
assert s["compat"]=="1.1" and s["lazy-refcounts"] is True, s'
  qemu-img check -f qcow2 "$LV/f.qcow2"
}
case_run "vol-create from XML with lazy_refcounts and clusterSize" t_xml

t_clone_resize() {
  qemu-io -f qcow2 -c 'write -P 42 0 4M' -c 'write -P 9 60M 1M' "$LV/a.qcow2" >/dev/null
  $V vol-clone --pool vdisktest a.qcow2 b.qcow2
  qemu-img compare -f qcow2 -F qcow2 "$LV/a.qcow2" "$LV/b.qcow2"
  for f in vmdk vdi raw; do
    printf "<volume><name>c.$f</name><capacity unit='MiB'>64</capacity><target><format type='$f'/></target></volume>" >"$T/c.xml"
    $V vol-create-from vdisktest "$T/c.xml" --inputpool vdisktest a.qcow2
    qemu-img compare -f qcow2 -F "$f" "$LV/a.qcow2" "$LV/c.$f"
  done
  $V vol-resize --pool vdisktest b.qcow2 128M
  [[ $(vsize "$LV/b.qcow2" qcow2) == 134217728 ]]
  $V vol-dumpxml --pool vdisktest b.qcow2 | grep -q "<capacity unit='bytes'>134217728</capacity>"
  $V vol-resize --pool vdisktest b.qcow2 64M --shrink
  [[ $(vsize "$LV/b.qcow2" qcow2) == 67108864 ]]
  qemu-img check -f qcow2 "$LV/b.qcow2"
  qemu-img compare -f qcow2 -F qcow2 "$LV/a.qcow2" "$LV/b.qcow2"
}
case_run "vol-clone, vol-create-from to vmdk/vdi/raw, vol-resize grow and --shrink" t_clone_resize

t_virtinst() {
  $PY - <<'PY'
import sys
sys.path.insert(0, "/usr/share/virt-manager")
import virtinst
from virtinst import StorageVolume
conn = virtinst.VirtinstConnection("qemu:///system")
conn.open(None, None)
pool = conn.storagePoolLookupByName("vdisktest")
vol = StorageVolume(conn)
vol.pool = pool
vol.name = "vm.qcow2"
vol.format = "qcow2"
vol.capacity = 64 * 1024 ** 2
vol.allocation = 0
vol.validate()
v = vol.install()
c = StorageVolume(conn)
c.pool = pool
c.name = "vm-clone.qcow2"
c.set_input_vol(v)
c.validate()
c.install()
PY
  qemu-img check -f qcow2 "$LV/vm.qcow2"
  qemu-img info --output=json "$LV/vm.qcow2" | grep -q '"lazy-refcounts": true'
  qemu-img compare -f qcow2 -F qcow2 "$LV/vm.qcow2" "$LV/vm-clone.qcow2"
}
case_run "virt-manager's new-volume and clone flows (virtinst)" t_virtinst

t_snapshots() {
  $V vol-create-as vdisktest dom.qcow2 64M --format qcow2
  cat >"$T/dom.xml" <<XML
<domain type='qemu'><name>vdisk-test</name><memory unit='MiB'>64</memory>
  <os><type arch='x86_64'>hvm</type></os>
  <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
    <source file='$LV/dom.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>
XML
  $V define "$T/dom.xml" >/dev/null
  $V snapshot-create-as vdisk-test snap1 >/dev/null
  qemu-img snapshot -l "$LV/dom.qcow2" | grep -q snap1
  "$VDISKCTL" info vdisktest/dom.qcow2 | grep -q snap1
  qemu-io -f qcow2 -c 'write -P 7 0 1M' "$LV/dom.qcow2" >/dev/null
  $V snapshot-revert vdisk-test snap1
  qemu-img create -q -f raw "$T/zero.raw" 64M
  qemu-img compare -f raw -F qcow2 "$T/zero.raw" "$LV/dom.qcow2"
  $V snapshot-delete vdisk-test snap1 >/dev/null
  ! qemu-img snapshot -l "$LV/dom.qcow2" | grep -q snap1
  $V snapshot-create-as vdisk-test ext1 --disk-only --diskspec "vda,file=$LV/dom.ext1" >/dev/null
  qemu-img info --output=json "$LV/dom.ext1" | grep -q '"backing-filename": ".*dom.qcow2"'
  qemu-img check -f qcow2 "$LV/dom.ext1"
  $V dumpxml vdisk-test | grep -q "$LV/dom.ext1"
}
case_run "inactive domain: internal snapshots, external disk-only snapshot" t_snapshots

t_views() {
  $V vol-create-as vdisktest seen.qcow2 16M --format qcow2
  "$VDISKCTL" volumes vdisktest | grep -q seen.qcow2
  "$VDISKCTL" create -f qcow2 vdisktest/from-vdisk.qcow2 16M
  sleep 1
  $V vol-list vdisktest | grep -q from-vdisk.qcow2
}
case_run "libvirt and vdiskd see each other's volumes" t_views

t_shim_errors() {
  # Fallback off: a request vdiskd cannot serve fails with a clear message.
  out=$(VDISK_SHIM_FALLBACK=0 "$SHIM" info "$LV/a.qcow2" 2>&1) && exit 1
  grep -q "fallback to /usr/bin/qemu-img is off" <<<"$out"
  out=$("$SHIM" create -f qcow2 "$LV/nosize.qcow2" 2>&1) && exit 1
  grep -q "needs a size" <<<"$out"
  "$SHIM" --status | grep -q "the vdisk shim"
  # vdiskctl says the same, with exit status 0: libvirtd uses the shim
  "$VDISKCTL" libvirt status | grep -q "the vdisk shim"
}
case_run "the shim's errors, --status and vdiskctl libvirt status" t_shim_errors

t_in_use() {
  # A volume a running process holds for writing (qemu-nbd, as a VM holds its
  # disk): vol-resize fails through the shim with qemu-img's words, and the
  # volume is untouched; once it is free the same resize works.
  command -v qemu-nbd >/dev/null || { echo "qemu-nbd is missing: case skipped"; return 0; }
  $V vol-create-as vdisktest held.qcow2 64M --format qcow2
  before=$(sha256sum <"$LV/held.qcow2")
  qemu-nbd --persistent -k "$T/held.sock" -f qcow2 "$LV/held.qcow2" </dev/null >/dev/null 2>&1 &
  nbd=$!
  trap 'kill $nbd 2>/dev/null || true; wait $nbd 2>/dev/null || true' EXIT
  ino=$(stat -c %i "$LV/held.qcow2")
  for _ in $(seq 100); do grep -q ":$ino " /proc/locks && break; sleep 0.1; done
  out=$($V vol-resize --pool vdisktest held.qcow2 128M 2>&1) && { echo "resized under qemu-nbd"; exit 1; }
  echo "$out"
  grep -qF 'Failed to get "write" lock' <<<"$out"
  grep -qF "Is another process using the image [$LV/held.qcow2]?" <<<"$out"
  kill "$nbd"
  wait "$nbd" 2>/dev/null || true
  [[ $(sha256sum <"$LV/held.qcow2") == "$before" ]] || { echo "held.qcow2 changed"; exit 1; }
  $V vol-resize --pool vdisktest held.qcow2 128M || { echo "vol-resize of the freed volume failed"; exit 1; }
  [[ $(vsize "$LV/held.qcow2" qcow2) == 134217728 ]] || { echo "not resized"; exit 1; }
}
case_run "vol-resize of a volume a running process holds fails through the shim, as with qemu-img" t_in_use

t_encrypted() {
  printf 'vdisk-secret-pass' >"$T/pw"
  uuid=$(cat /proc/sys/kernel/random/uuid)
  cat >"$T/secret.xml" <<XML
<secret ephemeral='no' private='no'><uuid>$uuid</uuid><usage type='volume'><volume>$LV/enc.qcow2</volume></usage></secret>
XML
  $V secret-define "$T/secret.xml" >/dev/null
  $V secret-set-value "$uuid" --file "$T/pw" --plain >/dev/null
  cat >"$T/enc.xml" <<XML
<volume><name>enc.qcow2</name><capacity unit='MiB'>32</capacity>
  <target><format type='qcow2'/><encryption format='luks'><secret type='passphrase' uuid='$uuid'/></encryption></target></volume>
XML
  trap '$V secret-undefine $uuid >/dev/null 2>&1' EXIT
  $V vol-create vdisktest "$T/enc.xml"
  qemu-img info "$LV/enc.qcow2" | grep -qi encrypt
  O="--object secret,id=s0,file=$T/pw"
  img() { echo "driver=${2:-qcow2},encrypt.key-secret=s0,file.filename=$LV/$1"; }
  qemu-img check $O --image-opts "$(img enc.qcow2)"
  qemu-io $O --image-opts "$(img enc.qcow2)" -c 'write -P 0x5a 1M 2M' -c 'write -P 7 30M 1M' >/dev/null
  # libvirt clones it in two steps: an encrypted create, then convert -n
  # with both keys, which vdiskd's CopyFrom serves
  $V vol-clone --pool vdisktest enc.qcow2 enc-clone.qcow2
  qemu-img check $O --image-opts "$(img enc-clone.qcow2)"
  qemu-img compare $O --image-opts "$(img enc.qcow2)" "$(img enc-clone.qcow2)"
  # decrypted into a plain raw and qcow2 volume
  for f in raw qcow2; do
    printf "<volume><name>dec.$f</name><capacity unit='MiB'>32</capacity><target><format type='$f'/></target></volume>" >"$T/d.xml"
    $V vol-create-from vdisktest "$T/d.xml" --inputpool vdisktest enc.qcow2
    qemu-img compare $O --image-opts "$(img enc.qcow2)" "driver=$f,file.filename=$LV/dec.$f"
  done
  # a plain volume into a new encrypted one (its own secret): create, then convert -n
  uuid2=$(cat /proc/sys/kernel/random/uuid)
  printf "<secret ephemeral='no' private='no'><uuid>$uuid2</uuid><usage type='volume'><volume>$LV/enc-from.qcow2</volume></usage></secret>" >"$T/secret2.xml"
  $V secret-define "$T/secret2.xml" >/dev/null
  $V secret-set-value "$uuid2" --file "$T/pw" --plain >/dev/null
  trap '$V secret-undefine $uuid >/dev/null 2>&1; $V secret-undefine $uuid2 >/dev/null 2>&1' EXIT
  printf "<volume><name>enc-from.qcow2</name><capacity unit='MiB'>32</capacity><target><format type='qcow2'/><encryption format='luks'><secret type='passphrase' uuid='$uuid2'/></encryption></target></volume>" >"$T/ef.xml"
  $V vol-create-from vdisktest "$T/ef.xml" --inputpool vdisktest dec.qcow2
  qemu-img info "$LV/enc-from.qcow2" | grep -qi 'encrypted: yes'
  qemu-img compare $O --image-opts "$(img enc-from.qcow2)" "driver=qcow2,file.filename=$LV/dec.qcow2"
  # resize with the key: grow, then shrink back
  $V vol-resize --pool vdisktest enc.qcow2 64M
  [[ $(vsize "$LV/enc.qcow2" qcow2) == 67108864 ]]
  $V vol-resize --pool vdisktest enc.qcow2 32M --shrink
  [[ $(vsize "$LV/enc.qcow2" qcow2) == 33554432 ]]
  qemu-img check $O --image-opts "$(img enc.qcow2)"
  qemu-img compare $O --image-opts "$(img enc.qcow2)" "$(img enc-clone.qcow2)"
}
case_run "LUKS-encrypted volume from a libvirt secret: create, clone, create-from both ways, resize" t_encrypted

pools() {
  gdbus call --system --dest org.vdisk.VDisk1 --object-path /org/vdisk/VDisk1/Manager \
    --method org.vdisk.VDisk1.Manager.GetPools "{}"
}
export -f pools

t_private_folder() {
  # A domain's disk kept in a private folder that no pool holds: the shim
  # never makes that folder a pool (whose files every user the pool's rules
  # allow could then export). libvirtd runs the shim with the fallback off:
  # the external snapshot fails, naming the file; run with the fallback on,
  # the shim hands the work to the real qemu-img.
  P=$T/private
  mkdir -m 700 "$P"
  qemu-img create -q -f qcow2 "$P/disk.qcow2" 16M
  before=$(pools)
  cat >"$T/priv.xml" <<XML
<domain type='qemu'><name>vdisk-priv</name><memory unit='MiB'>64</memory>
  <os><type arch='x86_64'>hvm</type></os>
  <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
    <source file='$P/disk.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>
XML
  $V define "$T/priv.xml" >/dev/null
  trap '$V undefine vdisk-priv --snapshots-metadata >/dev/null 2>&1' EXIT
  out=$($V snapshot-create-as vdisk-priv ext --disk-only --diskspec "vda,file=$P/disk.ext" 2>&1) &&
    { echo "the snapshot was made through vdiskd"; exit 1; }
  echo "$out"
  grep -qF "$P/disk.ext is in no storage pool" <<<"$out"
  [[ ! -e $P/disk.ext ]] || { echo "disk.ext was made"; exit 1; }
  [[ $(pools) == "$before" ]] || { echo "GetPools changed: $before -> $(pools)"; exit 1; }

  # qemu-img create -b, fallback on: the real qemu-img makes the overlay
  VDISK_SHIM_FALLBACK=1 "$SHIM" create -q -f qcow2 -b "$P/disk.qcow2" -F qcow2 "$P/ov.qcow2"
  qemu-img info --output=json "$P/ov.qcow2" | grep -qF "\"backing-filename\": \"$P/disk.qcow2\""
  [[ $(pools) == "$before" ]] || { echo "GetPools changed: $before -> $(pools)"; exit 1; }
  # fallback off: a clear error naming the file, nothing made
  out=$(VDISK_SHIM_FALLBACK=0 "$SHIM" create -f qcow2 -b "$P/disk.qcow2" -F qcow2 "$P/ov2.qcow2" 2>&1) &&
    { echo "ov2.qcow2 made with the fallback off"; exit 1; }
  echo "$out"
  grep -qF "$P/ov2.qcow2 is in no storage pool" <<<"$out"
  grep -qF "fallback to /usr/bin/qemu-img is off" <<<"$out"
  [[ ! -e $P/ov2.qcow2 ]]
  # a convert out of the private folder into a pool, fallback off: refused
  out=$(VDISK_SHIM_FALLBACK=0 "$SHIM" convert -f qcow2 -O raw "$P/disk.qcow2" "$LV/leak.raw" 2>&1) &&
    { echo "converted out of the private folder"; exit 1; }
  echo "$out"
  grep -qF "$P/disk.qcow2 is in no storage pool" <<<"$out"
  [[ ! -e $LV/leak.raw ]]
  [[ $(pools) == "$before" ]] || { echo "GetPools changed: $before -> $(pools)"; exit 1; }

  # No pool stands for the folder, under the name one was once given
  # either: none of its files can be exported.
  h=$(printf %s "$(realpath "$P")" | sha256sum | cut -c1-16)
  "$VDISKCTL" export "dir-$h/disk.qcow2" "$T/exported.qcow2" && { echo "exported"; exit 1; }
  [[ ! -s $T/exported.qcow2 ]]
  # and vdiskd refuses to add one on a caller's word
  out=$(gdbus call --system --dest org.vdisk.VDisk1 --object-path /org/vdisk/VDisk1/Manager \
    --method org.vdisk.VDisk1.Manager.ResolvePath "$P/disk.qcow2" "{'add-directory': <true>}" 2>&1) &&
    { echo "ResolvePath answered: $out"; exit 1; }
  echo "$out"
  grep -q "org.vdisk.VDisk1.Error.InvalidArgument" <<<"$out"
  [[ $(pools) == "$before" ]] || { echo "GetPools changed: $before -> $(pools)"; exit 1; }
}
case_run "a disk in a private folder outside every pool: the shim falls back or fails, no pool is added" t_private_folder

t_vdiskd_absent() {
  # A bus without vdiskd (and, first, nothing to activate it with; then an
  # activation that fails): with the fallback on the shim runs the real
  # qemu-img, with it off it fails saying so.
  A=$T/absent
  mkdir -p "$A/services"
  cat >"$A/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$A/bus</listen>
  <auth>EXTERNAL</auth>
  <servicedir>$A/services</servicedir>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
CONF
  bus=$(dbus-daemon --config-file="$A/bus.conf" --fork --print-pid)
  trap 'kill $bus' EXIT
  export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$A/bus
  absent() {
    VDISK_SHIM_FALLBACK=1 "$SHIM" create -q -f qcow2 "$A/on-$1.qcow2" 16M
    [[ $(vsize "$A/on-$1.qcow2" qcow2) == 16777216 ]]
    qemu-img check -q -f qcow2 "$A/on-$1.qcow2"
    out=$(VDISK_SHIM_FALLBACK=0 "$SHIM" create -q -f qcow2 "$A/off-$1.qcow2" 16M 2>&1) &&
      { echo "$1: made with the fallback off"; exit 1; }
    echo "$out"
    grep -q "vdiskd is not running" <<<"$out"
    grep -qF "fallback to /usr/bin/qemu-img is off" <<<"$out"
    [[ ! -e $A/off-$1.qcow2 ]]
  }
  absent unknown
  printf '[D-BUS Service]\nName=org.vdisk.VDisk1\nExec=/bin/false\n' >"$A/services/org.vdisk.VDisk1.service"
  gdbus call --address "unix:path=$A/bus" --dest org.freedesktop.DBus \
    --object-path /org/freedesktop/DBus --method org.freedesktop.DBus.ReloadConfig >/dev/null
  absent activation
  grep -qF "Process org.vdisk.VDisk1 exited with status 1" <<<"$out"
  # no bus at all
  DBUS_SYSTEM_BUS_ADDRESS=unix:path=$A/none VDISK_SHIM_FALLBACK=1 "$SHIM" create -q -f qcow2 "$A/nobus.qcow2" 16M
  [[ $(vsize "$A/nobus.qcow2" qcow2) == 16777216 ]]
}
case_run "vdiskd absent: the shim runs the real qemu-img with the fallback on, fails clearly with it off" t_vdiskd_absent

t_cross_pool() {
  # vol-create-from into another pool: vdiskd exports into a file the shim
  # makes in that pool's folder, which gets the target's name only once
  # complete (libvirt's second pool is known to vdiskd through libvirt).
  L2=$T/pool2
  $V pool-define-as vdisktest2 dir --target "$L2" >/dev/null
  trap '$V pool-destroy vdisktest2 >/dev/null 2>&1; $V pool-undefine vdisktest2 >/dev/null 2>&1' EXIT
  $V pool-build vdisktest2 >/dev/null
  $V pool-start vdisktest2 >/dev/null
  $V vol-create-as vdisktest src2.qcow2 32M --format qcow2
  qemu-io -f qcow2 -c 'write -P 0x3c 1M 3M' "$LV/src2.qcow2" >/dev/null
  for f in qcow2 raw; do
    printf "<volume><name>x.$f</name><capacity unit='MiB'>32</capacity><target><format type='$f'/></target></volume>" >"$T/x.xml"
    $V vol-create-from vdisktest2 "$T/x.xml" --inputpool vdisktest src2.qcow2
    qemu-img compare -f qcow2 -F "$f" "$LV/src2.qcow2" "$L2/x.$f"
  done
  qemu-img check -f qcow2 "$L2/x.qcow2"
  ls -A "$L2"
  ! ls -A "$L2" | grep -q '^\.' || { echo "a hidden file is left"; exit 1; }
  "$VDISKCTL" volumes vdisktest2 | grep -q x.qcow2
}
case_run "vol-create-from into another pool" t_cross_pool

t_logical_mirror() {
  # A logical pool of libvirt's (a volume group on a loop device, named
  # with the pid, removed by name at the end) is mirrored by vdiskd as a
  # logical pool: vdiskctl pools shows its type, /dev/VG, and the group's
  # size and free space (vgs) as its capacity.
  if ! command -v vgcreate >/dev/null || [[ ! -e /dev/loop-control ]]; then
    echo "SKIP: no lvm2 or no loop devices"; return 0
  fi
  export LVM_SUPPRESS_FD_WARNINGS=1
  VG=vdisklv$$
  truncate -s 128M "$T/pv.img"
  LOOP=$(losetup -f --show "$T/pv.img")
  trap '$V pool-destroy vdisklvm >/dev/null 2>&1; $V pool-undefine vdisklvm >/dev/null 2>&1
    vgremove -q -f "$VG" >/dev/null 2>&1; pvremove -q -f "$LOOP" >/dev/null 2>&1
    losetup -d "$LOOP"' EXIT
  pvcreate -q "$LOOP"
  vgcreate -q "$VG" "$LOOP"
  $V pool-define-as vdisklvm logical --source-name "$VG" --target "/dev/$VG" >/dev/null
  $V pool-start vdisklvm >/dev/null
  for _ in $(seq 100); do "$VDISKCTL" pools | grep -q '^vdisklvm ' && break; sleep 0.1; done
  "$VDISKCTL" pools --json >"$T/pools.json"
  read -r size free < <(vgs --units b --noheadings --nosuffix -o vg_size,vg_free "$VG")
  $PY - "$T/pools.json" "$VG" "$size" "$free" <<'PY'
import json, sys
d = [p for p in json.load(open(sys.argv[1])) if p["name"] == "vdisklvm"]
assert d, "vdiskd did not mirror libvirt's logical pool"
d = d[0]
assert d["type"] == "logical" and d["directory"] == "/dev/" + sys.argv[2], d
assert d["capacity"] == int(sys.argv[3]) and d["available"] == int(sys.argv[4]), d
PY
}
case_run "a logical pool of libvirt's is mirrored as a logical pool with the group's capacity" t_logical_mirror

t_killed_shim() {
  # libvirt kills a qemu-img that takes too long: the job the shim started
  # goes with it (the shim never detaches its jobs), and no half-written
  # volume is left under the target's name or a hidden one.
  qemu-img create -q -f raw "$LV/big.raw" 2G
  qemu-io -f raw -c 'write -P 0x61 0 1536M' "$LV/big.raw" >/dev/null
  "$SHIM" convert -f raw -O qcow2 "$LV/big.raw" "$LV/big.qcow2" &
  shim=$!
  for _ in $(seq 400); do ls -A "$LV" | grep -q '^\.big\.qcow2' && break; sleep 0.05; done
  ls -A "$LV" | grep -q '^\.big\.qcow2' || { echo "the copy did not start"; exit 1; }
  kill -9 "$shim"
  wait "$shim" 2>/dev/null || true
  for _ in $(seq 300); do
    "$VDISKCTL" jobs | grep -q "No jobs are running" && break
    sleep 0.1
  done
  "$VDISKCTL" jobs | grep -q "No jobs are running" || { echo "the job still runs"; exit 1; }
  ls -A "$LV"
  [[ ! -e $LV/big.qcow2 ]] || { echo "the job went on to make big.qcow2"; exit 1; }
  ! ls -A "$LV" | grep -q '^\.big\.qcow2' || { echo "a partial file is left"; exit 1; }
  # the same into another pool (an Export into a file the shim made)
  L3=$T/pool3
  $V pool-define-as vdisktest3 dir --target "$L3" >/dev/null
  trap '$V pool-destroy vdisktest3 >/dev/null 2>&1; $V pool-undefine vdisktest3 >/dev/null 2>&1' EXIT
  $V pool-build vdisktest3 >/dev/null
  $V pool-start vdisktest3 >/dev/null
  "$SHIM" convert -f raw -O qcow2 "$LV/big.raw" "$L3/big.qcow2" &
  shim=$!
  for _ in $(seq 400); do "$VDISKCTL" jobs | grep -q "No jobs are running" || break; sleep 0.05; done
  "$VDISKCTL" jobs | grep -q "No jobs are running" && { echo "the export did not start"; exit 1; }
  kill -9 "$shim"
  wait "$shim" 2>/dev/null || true
  for _ in $(seq 300); do
    "$VDISKCTL" jobs | grep -q "No jobs are running" && break
    sleep 0.1
  done
  "$VDISKCTL" jobs | grep -q "No jobs are running" || { echo "the export still runs"; exit 1; }
  ls -A "$L3"
  [[ -z $(ls -A "$L3") ]] || { echo "the export left a file"; exit 1; }
  rm -f "$LV/big.raw"
}
case_run "a shim killed mid-convert takes its job with it: no half-written volume" t_killed_shim

t_import_vm_boots() {
  # vdiskctl import-vm --start of a VirtualBox VM whose snapshot changed
  # its boot sector from BASE to CURRENT: the domain libvirt starts from
  # the imported volume (TCG) writes CURRENT to its serial console.
  command -v qemu-system-x86_64 >/dev/null ||
    { echo "qemu-system-x86_64 not installed (qemu-system-x86): the boot is not tried"; exit 0; }
  command -v virtlogd >/dev/null || { echo "virtlogd is missing: the boot is not tried"; exit 0; }
  # libvirtd's QEMU driver hands a domain's output to virtlogd.
  virtlogd -d -p "$T/virtlogd.pid"
  trap 'kill "$(cat "$T/virtlogd.pid")"' EXIT
  mkdir "$T/boot"
  VDISK=$(dirname "$VDISKCTL")/vdisk "$REPO/tests/libvirt/make-boot-vm.sh" "$T/boot"
  "$VDISKCTL" import-vm --dry-run --domain-type qemu "$T/boot/vm" vdisktest >"$T/boot/plan.txt"
  grep -qF "<source file='$LV/vdisk-boot.qcow2'/>" "$T/boot/plan.txt"
  [[ ! -e $LV/vdisk-boot.qcow2 ]]
  "$VDISKCTL" import-vm -q --domain-type qemu --connect qemu:///system --start "$T/boot/vm" vdisktest
  qemu-img compare -U "$LV/vdisk-boot.qcow2" "$T/boot/current.qcow2"
  [[ $($V domstate vdisk-boot) == running ]]
  $V dumpxml vdisk-boot | grep -qF "<source file='$LV/vdisk-boot.qcow2'"
  # The boot sector writes its marker over and over: whatever the console
  # catches once opened is the disk's current state.
  $PY - "$($V ttyconsole vdisk-boot)" <<'PY'
import os, select, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
seen, deadline = b"", time.monotonic() + 120
while b"CURRENT" not in seen and time.monotonic() < deadline:
    if select.select([fd], [], [], 1)[0]:
        try:
            seen += os.read(fd, 4096)
        except OSError:  # nothing yet, or QEMU not yet attached (EIO)
            time.sleep(0.2)
print(seen[-200:])
assert b"CURRENT" in seen and b"BASE" not in seen, seen
PY
  # Nothing is redefined: a second import stops before copying anything.
  "$VDISKCTL" import-vm -q --connect qemu:///system "$T/boot/vm" vdisktest 2>"$T/boot/again.err" &&
    { echo "imported twice"; exit 1; }
  grep -q "a libvirt domain called 'vdisk-boot' exists already" "$T/boot/again.err"
  $V destroy vdisk-boot >/dev/null
  $V undefine vdisk-boot >/dev/null
}
case_run "vdiskctl import-vm --start: the VirtualBox VM's current state boots under libvirt" t_import_vm_boots

# The boot variants of import-vm (EFI firmware, two disks, a VMware .vmx):
# each builds its VM with make-boot-variant.sh, imports it with vdiskctl
# import-vm --start through vdiskd, and reads the domain's serial console.
# boot_ready: what booting needs, or the case ends saying why it is not
# tried; starts virtlogd, which libvirtd's QEMU driver hands the domain's
# output to (the caller's EXIT trap stops it).
boot_ready() {
  command -v qemu-system-x86_64 >/dev/null ||
    { echo "qemu-system-x86_64 not installed (qemu-system-x86): the boot is not tried"; exit 0; }
  command -v virtlogd >/dev/null || { echo "virtlogd is missing: the boot is not tried"; exit 0; }
  virtlogd -d -p "$T/virtlogd.pid"
}
# console_shows DOMAIN: its serial console shows CURRENT (within 120 s of
# TCG) and never BASE; the guest writes its marker over and over, so what
# the console catches once opened is the disk's current state.
console_shows() {
  $PY - "$($V ttyconsole "$1")" <<'PY'
import os, select, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
seen, deadline = b"", time.monotonic() + 120
while b"CURRENT" not in seen and time.monotonic() < deadline:
    if select.select([fd], [], [], 1)[0]:
        try:
            seen += os.read(fd, 4096)
        except OSError:  # nothing yet, or QEMU not yet attached (EIO)
            time.sleep(0.2)
print(seen[-300:])
assert b"CURRENT" in seen and b"BASE" not in seen, seen
PY
}
# make_variant KIND: the VM of make-boot-variant.sh KIND in $T/KIND.
make_variant() {
  mkdir "$T/$1"
  VDISK=$(dirname "$VDISKCTL")/vdisk "$REPO/tests/libvirt/make-boot-variant.sh" "$1" "$T/$1"
}
export -f boot_ready console_shows make_variant

t_import_vm_efi() {
  # A VirtualBox VM with EFI firmware and an ICH9 chipset (so a q35
  # machine, where Debian lists OVMF with Microsoft's keys first): its
  # disk's EFI System partition holds a UEFI application writing BASE,
  # which its snapshot changed to write CURRENT. The domain boots OVMF
  # without Secure Boot, which runs \EFI\BOOT\BOOTX64.EFI of the volume.
  if ! compgen -G "/usr/share/qemu/firmware/*.json" >/dev/null; then
    echo "no UEFI firmware described in /usr/share/qemu/firmware (ovmf): the EFI boot is not tried"
    exit 0
  fi
  for p in sfdisk mformat mcopy; do
    command -v "$p" >/dev/null || { echo "$p is missing (fdisk, mtools): the EFI boot is not tried"; exit 0; }
  done
  boot_ready
  trap 'kill "$(cat "$T/virtlogd.pid")"; $V destroy vdisk-efi >/dev/null 2>&1; $V undefine --nvram vdisk-efi >/dev/null 2>&1' EXIT
  make_variant efi
  "$VDISKCTL" import-vm -q --domain-type qemu --connect qemu:///system --start "$T/efi/vm" vdisktest
  qemu-img compare -U "$LV/vdisk-efi.qcow2" "$T/efi/current.qcow2"
  [[ $($V domstate vdisk-efi) == running ]]
  $V dumpxml --inactive vdisk-efi | grep -qF "<os firmware='efi'>"
  # libvirt's choice: a flash firmware without Secure Boot on q35
  $V dumpxml vdisk-efi >"$T/efi/live.xml"
  $PY - "$T/efi/live.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
os_ = ET.parse(sys.argv[1]).find("os")
assert os_.find("type").get("machine").startswith("pc-q35"), ET.tostring(os_)
loader = os_.find("loader")
assert loader is not None and loader.get("type") == "pflash", ET.tostring(os_)
assert loader.get("secure") != "yes", ET.tostring(os_)
print("firmware:", loader.text)
PY
  console_shows vdisk-efi
}
case_run "vdiskctl import-vm --start: a VirtualBox VM with EFI firmware boots on OVMF" t_import_vm_efi

t_import_vm_two_disks() {
  # A VirtualBox VM with two SATA disks, both changed by its snapshot, on
  # ports 0 and 2 (an empty DVD drive between): each becomes a volume
  # equal to its current state, attached on SATA at the port the VM had it
  # on, and the first boots.
  boot_ready
  trap 'kill "$(cat "$T/virtlogd.pid")"; $V destroy vdisk-two >/dev/null 2>&1; $V undefine vdisk-two >/dev/null 2>&1' EXIT
  make_variant two-disks
  "$VDISKCTL" import-vm -q --domain-type qemu --connect qemu:///system --start "$T/two-disks/vm" vdisktest
  qemu-img compare -U "$LV/vdisk-two.qcow2" "$T/two-disks/current.qcow2"
  qemu-img compare -U "$LV/vdisk-two-disk2.qcow2" "$T/two-disks/current2.qcow2"
  if qemu-img compare -q -U "$LV/vdisk-two-disk2.qcow2" "$T/two-disks/current.qcow2"; then
    echo "the second volume is the first disk"; exit 1
  fi
  "$VDISKCTL" volumes vdisktest | grep -qF vdisk-two-disk2.qcow2
  $V domblklist vdisk-two >"$T/two-disks/blk.txt"
  cat "$T/two-disks/blk.txt"
  grep -qE "^ *sda +$LV/vdisk-two.qcow2\$" "$T/two-disks/blk.txt"
  grep -qE "^ *sdb +$LV/vdisk-two-disk2.qcow2\$" "$T/two-disks/blk.txt"
  $V dumpxml vdisk-two >"$T/two-disks/live.xml"
  $PY - "$T/two-disks/live.xml" "$LV" <<'PY'
import sys, xml.etree.ElementTree as ET
devices = ET.parse(sys.argv[1]).find("devices")
disks = {d.find("source").get("file"): d for d in devices.findall("disk")}
assert len(disks) == 2, list(disks)
# ports 0 and 2 of the VM's one SATA controller (its DVD drive, on port 1,
# is left out)
for name, unit in (("vdisk-two.qcow2", "0"), ("vdisk-two-disk2.qcow2", "2")):
    d = disks[sys.argv[2] + "/" + name]
    assert d.find("target").get("bus") == "sata", ET.tostring(d)
    assert d.find("driver").get("type") == "qcow2", ET.tostring(d)
    a = d.find("address")
    assert (a.get("type"), a.get("controller"), a.get("unit")) == ("drive", "0", unit), ET.tostring(d)
sata = [c for c in devices.findall("controller") if c.get("type") == "sata" and c.get("index") == "0"]
assert sata, "no SATA controller 0"
PY
  console_shows vdisk-two
}
case_run "vdiskctl import-vm --start: a VirtualBox VM with two SATA disks, both imported, the first boots" t_import_vm_two_disks

t_import_vm_vmx() {
  # A VMware VM (.vmx) whose disk is a monolithicSparse vmdk under a
  # snapshot's delta (parentFileNameHint) that changed BASE to CURRENT: the
  # chain is found from the .vmx and the flattened volume boots on the
  # VM's LSI Logic SCSI controller, its NIC keeping the VM's MAC.
  boot_ready
  trap 'kill "$(cat "$T/virtlogd.pid")"; $V destroy vdisk-vmx >/dev/null 2>&1; $V undefine vdisk-vmx >/dev/null 2>&1' EXIT
  # The NIC would join libvirt's network 'default', which this suite's
  # libvirtd has defined (in its private /etc) but not started: a domain
  # on it would not start, so it gets user-mode networking, and is told.
  network=user
  if $V net-list --name | grep -qx default; then network=network; fi
  make_variant vmx
  "$VDISKCTL" import-vm --dry-run --domain-type qemu "$T/vmx/vm/vdisk-vmx.vmx" vdisktest >"$T/vmx/plan.txt"
  grep -qF "$T/vmx/vm/vdisk-vmx-000001.vmdk (vmdk," "$T/vmx/plan.txt"
  grep -qF "$T/vmx/vm/vdisk-vmx.vmdk (vmdk," "$T/vmx/plan.txt"
  "$VDISKCTL" import-vm -q --domain-type qemu --connect qemu:///system --start "$T/vmx/vm/vdisk-vmx.vmx" vdisktest 2>"$T/vmx/err"
  if [[ $network == user ]]; then
    grep -qF "vdiskctl: warning: libvirt's network 'default' is not running on qemu:///system: the domain's network cards use user-mode networking" "$T/vmx/err"
  fi
  qemu-img compare -U "$LV/vdisk-vmx.qcow2" "$T/vmx/current.qcow2"
  qemu-img compare -U -f vmdk -F qcow2 "$T/vmx/vm/vdisk-vmx-000001.vmdk" "$LV/vdisk-vmx.qcow2"
  $V dumpxml vdisk-vmx >"$T/vmx/live.xml"
  $PY - "$T/vmx/live.xml" "$LV" "$network" <<'PY'
import sys, xml.etree.ElementTree as ET
dom = ET.parse(sys.argv[1])
assert dom.find("uuid").text == "564d7a1c-2b3d-4e5f-6071-8293a4b5c6d7", dom.find("uuid").text
assert dom.find("memory").text == str(64 * 1024), dom.find("memory").text
devices = dom.find("devices")
(disk,) = devices.findall("disk")
assert disk.find("source").get("file") == sys.argv[2] + "/vdisk-vmx.qcow2", ET.tostring(disk)
assert disk.find("target").get("bus") == "scsi", ET.tostring(disk)
assert [c.get("model") for c in devices.findall("controller") if c.get("type") == "scsi"] == ["lsilogic"]
(nic,) = devices.findall("interface")
assert nic.find("mac").get("address") == "00:0c:29:b5:c6:d7", ET.tostring(nic)
assert nic.find("model").get("type") == "e1000", ET.tostring(nic)
assert nic.get("type") == sys.argv[3], ET.tostring(nic)
PY
  console_shows vdisk-vmx
}
case_run "vdiskctl import-vm --start: a VMware VM (.vmx, a vmdk snapshot's delta) boots" t_import_vm_vmx

# make_appliance KIND: the VM of make-boot-appliance.sh KIND in $T/KIND.
make_appliance() {
  mkdir "$T/$1"
  VDISK=$(dirname "$VDISKCTL")/vdisk "$REPO/tests/libvirt/make-boot-appliance.sh" "$1" "$T/$1"
}
export -f make_appliance

t_import_vm_ova() {
  # An OVA appliance (an .ovf and a streamOptimized vmdk in a tar): vdiskctl
  # passes the .ova itself, vdiskd's worker reads the disk inside it, and
  # the volume boots on the VM's IDE disk.
  boot_ready
  trap 'kill "$(cat "$T/virtlogd.pid")"; $V destroy vdisk-ova >/dev/null 2>&1; $V undefine vdisk-ova >/dev/null 2>&1' EXIT
  make_appliance ova
  "$VDISKCTL" import-vm --dry-run --domain-type qemu "$T/ova/vdisk-ova.ova" vdisktest >"$T/ova/plan.txt"
  grep -qF "$T/ova/vdisk-ova.ova:vdisk-ova-disk1.vmdk (vmdk," "$T/ova/plan.txt"
  "$VDISKCTL" import-vm -q --domain-type qemu --connect qemu:///system --start "$T/ova/vdisk-ova.ova" vdisktest
  qemu-img compare -U "$LV/vdisk-ova.qcow2" "$T/ova/current.qcow2"
  [[ $($V domstate vdisk-ova) == running ]]
  $V domblklist vdisk-ova | grep -qE "^ *hda +$LV/vdisk-ova.qcow2\$"
  console_shows vdisk-ova
}
case_run "vdiskctl import-vm --start: an OVA appliance's disk, read inside the archive, boots" t_import_vm_ova

t_import_vm_split_vmx() {
  # A VMware VM whose disk is split (twoGbMaxExtentSparse: a descriptor and
  # its -s001, -s002 extents) under a snapshot's split delta: vdiskctl
  # passes every extent of both, the volume equals the delta's current
  # state and boots, writing CURRENT, not the base's BASE.
  boot_ready
  trap 'kill "$(cat "$T/virtlogd.pid")"; $V destroy vdisk-split >/dev/null 2>&1; $V undefine vdisk-split >/dev/null 2>&1' EXIT
  make_appliance split-vmx
  "$VDISKCTL" import-vm -q --domain-type qemu --connect qemu:///system --start "$T/split-vmx/vm/vdisk-split.vmx" vdisktest
  qemu-img compare -U "$LV/vdisk-split.qcow2" "$T/split-vmx/current.qcow2"
  qemu-img compare -U -f vmdk -F qcow2 "$T/split-vmx/vm/vdisk-split-000001.vmdk" "$LV/vdisk-split.qcow2"
  [[ $($V domstate vdisk-split) == running ]]
  console_shows vdisk-split
}
case_run "vdiskctl import-vm --start: a VMware VM whose disk is a split vmdk delta on a split base boots" t_import_vm_split_vmx

t_import_vm_keep_snapshots() {
  # vdiskctl import-vm --keep-snapshots: the base and the snapshot stay two
  # volumes, vdisk-keep.qcow2 a qcow2 overlay of vdisk-keep-1.qcow2 (named
  # beside it, holding only the snapshot's changes), and the domain on the
  # overlay boots through the chain into the snapshot's CURRENT, while the
  # base alone is still BASE.
  boot_ready
  trap 'kill "$(cat "$T/virtlogd.pid")"; $V destroy vdisk-keep >/dev/null 2>&1; $V undefine vdisk-keep >/dev/null 2>&1' EXIT
  mkdir "$T/keep"
  VDISK=$(dirname "$VDISKCTL")/vdisk "$REPO/tests/libvirt/make-boot-vm.sh" "$T/keep"
  # Another VM than the first case's: its own name and UUID.
  sed -i -e 's/name="vdisk-boot"/name="vdisk-keep"/' \
    -e 's/{6d3c1f7e-3d2b-4c55-9a4e-2f1d0c9b8a72}/{6d3c1f7e-3d2b-4c55-9a4e-2f1d0c9b8a7e}/' \
    "$T/keep/vm/vdisk-boot.vbox"
  "$VDISKCTL" import-vm -q --keep-snapshots --domain-type qemu --connect qemu:///system --start \
    "$T/keep/vm" vdisktest
  qemu-img info -U --output=json "$LV/vdisk-keep.qcow2" >"$T/keep/info.json"
  [[ $($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["backing-filename"])' \
    "$T/keep/info.json") == vdisk-keep-1.qcow2 ]]
  qemu-img compare -U "$LV/vdisk-keep.qcow2" "$T/keep/current.qcow2"
  qemu-img compare -U -f qcow2 -F raw "$LV/vdisk-keep-1.qcow2" "$T/keep/base.raw"
  [[ $($V domstate vdisk-keep) == running ]]
  $V dumpxml vdisk-keep | grep -qF "<source file='$LV/vdisk-keep.qcow2'"
  console_shows vdisk-keep
}
case_run "vdiskctl import-vm --keep-snapshots --start: the snapshot is an overlay volume, and it boots" t_import_vm_keep_snapshots

echo "$PASSED passed, $FAILED failed"
[[ $FAILED == 0 ]]
