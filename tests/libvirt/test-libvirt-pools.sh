#!/usr/bin/env bash
# libvirt's logical and rbd pools with vdisk, end to end with the real
# programs: a private system bus, polkitd, vdiskd from the build tree, and
# libvirtd in a mount namespace where /usr/bin/qemu-img is masked and
# "qemu-img" on its PATH is the shim behind a wrapper that records every
# command line libvirt runs, so the test knows which operations went
# through qemu-img (and so through vdiskd) and which libvirt did itself.
#
#   test-libvirt-pools.sh logical   a logical pool on a volume group that
#       libvirt builds on a loop device (named with the pid, removed by name
#       whatever happens): vol-create-as, vol-create-from a qcow2 volume of
#       a dir pool into an LV (qemu-img convert -f qcow2 -O raw SRC
#       /dev/VG/LV, served by vdiskd's CopyFrom as a job), back out into the
#       dir pool, vol-resize, qemu-img compare of source and LV. Where the
#       kernel has no device-mapper (dmsetup version fails) no LV can be
#       activated: libvirt's own steps that need one are skipped, saying
#       so, and the shim's part is run on a stand-in, an LV made inactive
#       in the group's metadata whose device is a loop device at /dev/VG/LV.
#   test-libvirt-pools.sh rbd       an rbd pool on a one-node Ceph cluster
#       (tests/ceph-cluster.sh, stopped by pid): images vdisk writes are
#       libvirt's volumes, volumes libvirt makes are read by vdisk, and
#       libvirt runs no qemu-img for any of it.
#
# Needs root and libvirt; exits 77 (skip) with the reason when something
# it needs is missing. Prints one line per failed case, then
# "N passed, M failed".
set -uo pipefail
REPO=${REPO:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${BUILD:-$REPO/build}
SHIM=$BUILD/plugin/vdisk-qemu-img VDISKCTL=$BUILD/tools/vdiskctl VDISK=$BUILD/tools/vdisk
export PY=/usr/bin/python3
MODE=${1:-}
[[ $MODE == logical || $MODE == rbd ]] || { echo "usage: $0 logical|rbd" >&2; exit 2; }

[[ $(id -u) == 0 ]] || { echo "SKIP: needs root"; exit 77; }
[[ ${VDISK_PRIVATE_NS:-} == ready ]] ||
  exec "$REPO/tests/private-ns.sh" --private /run/libvirt --private /var/lib/libvirt \
    --private /var/cache/libvirt --private /var/log/libvirt "$0" "$@"
for p in libvirtd virsh qemu-img qemu-io unshare; do
  command -v "$p" >/dev/null || { echo "SKIP: $p is missing"; exit 77; }
done
[[ -x $SHIM && -x $BUILD/daemon/vdiskd && -x $VDISK ]] || { echo "SKIP: build first"; exit 77; }
if [[ -e /run/libvirtd.pid ]] && kill -0 "$(cat /run/libvirtd.pid)" 2>/dev/null; then
  echo "SKIP: a libvirtd is already running"; exit 77
fi
export LVM_SUPPRESS_FD_WARNINGS=1
if [[ $MODE == logical ]]; then
  for p in losetup pvcreate vgcreate lvcreate lvs dmsetup; do
    command -v "$p" >/dev/null || { echo "SKIP: $p is missing (lvm2, util-linux)"; exit 77; }
  done
  [[ -e /dev/loop-control ]] || { echo "SKIP: no loop devices (/dev/loop-control)"; exit 77; }
else
  [[ -e /usr/lib/x86_64-linux-gnu/libvirt/storage-backend/libvirt_storage_backend_rbd.so ]] ||
    compgen -G "/usr/lib/*/libvirt/storage-backend/libvirt_storage_backend_rbd.so" >/dev/null ||
    { echo "SKIP: libvirt has no rbd pools here (libvirt-daemon-driver-storage-rbd)"; exit 77; }
  if "$VDISK" info rbd:p/i:conf=/nonexistent 2>&1 | grep -q 'built without Ceph RBD support'; then
    echo "SKIP: vdisk was built without Ceph RBD support"; exit 77
  fi
  qemu-img --help | grep -q 'Supported formats:.* rbd' ||
    { echo "SKIP: qemu-img has no rbd driver (qemu-block-extra): the oracle is missing"; exit 77; }
fi

T=$(mktemp -d /tmp/vdisk-libvirt-pools.XXXXXX)
chmod 755 "$T"
LIBVIRTD_PID='' VG='' LOOPS=() LINKS=() MADE_DEV_VG=''
# shellcheck source=../ceph-cluster.sh
source "$REPO/tests/ceph-cluster.sh"
# shellcheck source=../../scripts/services.sh
source "$REPO/scripts/services.sh"
cleanup() {
  local p l
  for p in vdisklvm vdiskrbd vdiskdir; do
    virsh -q -c qemu:///system pool-destroy "$p" >/dev/null 2>&1
    virsh -q -c qemu:///system pool-undefine "$p" >/dev/null 2>&1
  done
  [[ -n $LIBVIRTD_PID ]] && kill "$LIBVIRTD_PID" 2>/dev/null
  if [[ -n $VG ]]; then
    vgremove -q -f "$VG" >/dev/null 2>&1
    # the stand-in devices' links, and the folder, only those made here
    for l in "${LINKS[@]}"; do rm -f "$l"; done
    [[ -z $MADE_DEV_VG ]] || rmdir "/dev/$VG"
  fi
  for ((l = ${#LOOPS[@]} - 1; l >= 0; l--)); do
    pvremove -q -f "${LOOPS[l]}" >/dev/null 2>&1
    losetup -d "${LOOPS[l]}"
  done
  ceph_cluster_stop
  cd "$REPO" && vdisk_services_stop
  rm -rf "$T"
}
trap cleanup EXIT

if [[ $MODE == rbd ]]; then
  ceph_cluster_start "$T/ceph" || { echo "SKIP: the libvirt rbd pool needs a Ceph cluster"; exit 77; }
  ceph_pool_create vdiskrbd || { echo "SKIP: the libvirt rbd pool needs a Ceph pool"; exit 77; }
  # vdiskd's own rbd pool on the same Ceph pool (pools.d is read at its start)
  mkdir -p "$T/pools.d"
  printf '[Pool vdceph]\nType=rbd\nSource=vdiskrbd\nConf=%s\nUser=admin\nKeyring=%s\n' \
    "$CEPH_CONF" "$CEPH_KEYRING" >"$T/pools.d/ceph.conf"
fi

export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$T/system_bus_socket
cd "$REPO" && vdisk_services_start "$T" || { echo "services did not start"; exit 1; }

# "qemu-img" for libvirtd: a record of its command line, then the shim.
mkdir -p "$T/shim"
cat >"$T/shim/qemu-img" <<SH
#!/bin/sh
printf '%s\n' "\$*" >>"$T/qemu-img.log"
exec "$SHIM" "\$@"
SH
chmod 755 "$T/shim/qemu-img"
: >"$T/qemu-img.log"
unshare -m sh -c "mount --bind /dev/null /usr/bin/qemu-img &&
  exec env PATH=$T/shim:/usr/sbin:/usr/bin:/sbin:/bin VDISK_SHIM_FALLBACK=0 libvirtd -d --pid-file $T/libvirtd.pid" ||
  { echo "libvirtd did not start"; exit 1; }
for _ in $(seq 50); do [[ -s $T/libvirtd.pid ]] && break; sleep 0.1; done
LIBVIRTD_PID=$(cat "$T/libvirtd.pid")
export V="virsh -q -c qemu:///system" D=$T/dir T SHIM VDISKCTL VDISK
for _ in $(seq 50); do $V version >/dev/null 2>&1 && break; sleep 0.1; done
$V pool-define-as vdiskdir dir --target "$D" >/dev/null && $V pool-build vdiskdir >/dev/null &&
  $V pool-start vdiskdir >/dev/null || { echo "no libvirt dir pool"; exit 1; }

PASSED=0 FAILED=0
case_run() {
  local name=$1 fn=$2 log=$T/case.$((PASSED + FAILED)).log
  export -f "$fn"
  if bash -eo pipefail -c "$fn" >"$log" 2>&1; then
    PASSED=$((PASSED + 1))
    grep '^SKIP' "$log" || true
  else
    FAILED=$((FAILED + 1))
    echo "FAIL $name"
    tail -n 12 "$log" | sed 's/^/    /'
  fi
}
vsize() { qemu-img info -f "$2" --output=json "$1" | $PY -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }
# ran PATTERN: libvirt ran a qemu-img whose command line matches PATTERN
# (grep -E) since the log was last emptied.
ran() { grep -qE "$1" "$T/qemu-img.log" || { echo "libvirt ran no qemu-img '$1':"; cat "$T/qemu-img.log"; return 1; }; }
# vdiskd_copied POOL/VOLUME: vdiskd's log shows a CopyFrom into it, and its
# job's end, with success.
vdiskd_copied() {
  awk -v call="Volume.CopyFrom $1: ok" 'index($0, call) { seen = 1 }
    seen && /job [0-9]+ \(copy, uid 0\): succeeded/ { ok = 1 } END { exit !ok }' "$T/vdiskd.log" ||
    { echo "no CopyFrom job into $1 succeeded:"; tail -n 20 "$T/vdiskd.log"; return 1; }
}
export -f vsize ran vdiskd_copied

# ---------------------------------------------------------------- logical
if [[ $MODE == logical ]]; then
  VG=vdisklv$$
  truncate -s 256M "$T/pv.img"
  LOOPS+=("$(losetup -f --show "$T/pv.img")") || { echo "no loop device"; exit 1; }
  DM=1
  dmsetup version >/dev/null 2>&1 || DM=
  export VG DM PV=${LOOPS[0]}

  t_pool() {
    # libvirt builds the group on the loop device (pvcreate, vgcreate) and
    # starts the pool; vdiskd mirrors it as a logical pool.
    $V pool-define-as vdisklvm logical --source-dev "$PV" --source-name "$VG" --target "/dev/$VG" >/dev/null
    $V pool-build vdisklvm >/dev/null
    vgs "$VG" >/dev/null
    $V pool-start vdisklvm >/dev/null
    for _ in $(seq 100); do "$VDISKCTL" pools | grep -q '^vdisklvm ' && break; sleep 0.1; done
    "$VDISKCTL" pools | grep -E '^vdisklvm +/dev/'"$VG"' +logical '
    $V vol-create-as vdiskdir src.qcow2 32M --format qcow2
    qemu-io -f qcow2 -c 'write -P 0x5a 1M 3M' -c 'write -P 0x11 30M 1M' "$D/src.qcow2" >/dev/null
  }
  case_run "libvirt builds and starts a logical pool on a loop device; vdiskd mirrors it" t_pool

  if [[ -n $DM ]]; then
    t_create_from() {
      $V vol-create-as vdisklvm lv1 16M
      lvs "$VG/lv1"
      : >"$T/qemu-img.log"
      printf "<volume><name>lv2</name><capacity unit='MiB'>32</capacity></volume>" >"$T/lv2.xml"
      $V vol-create-from vdisklvm "$T/lv2.xml" --inputpool vdiskdir src.qcow2
      ran "^convert -f qcow2 -O raw (.* )?$D/src.qcow2 /dev/$VG/lv2\$"
      vdiskd_copied vdisklvm/lv2
      qemu-img compare -f qcow2 -F raw "$D/src.qcow2" "/dev/$VG/lv2"
      # never grown: the LV is as lvcreate made it
      [[ $(blockdev --getsize64 "/dev/$VG/lv2") == 33554432 ]]
      # and back out into the dir pool as qcow2 (libvirt reads an LV as raw)
      : >"$T/qemu-img.log"
      printf "<volume><name>back.qcow2</name><capacity unit='MiB'>32</capacity><target><format type='qcow2'/></target></volume>" >"$T/back.xml"
      $V vol-create-from vdiskdir "$T/back.xml" --inputpool vdisklvm lv2
      ran "^convert -f raw -O qcow2 (.* )?/dev/$VG/lv2 $D/back.qcow2\$"
      qemu-img compare -f qcow2 -F qcow2 "$D/src.qcow2" "$D/back.qcow2"
      # a raw source libvirt copies into the LV itself: no qemu-img
      qemu-img convert -f qcow2 -O raw "$D/src.qcow2" "$D/src.raw"
      $V pool-refresh vdiskdir >/dev/null
      : >"$T/qemu-img.log"
      printf "<volume><name>lvraw</name><capacity unit='MiB'>32</capacity></volume>" >"$T/lvraw.xml"
      $V vol-create-from vdisklvm "$T/lvraw.xml" --inputpool vdiskdir src.raw
      [[ ! -s $T/qemu-img.log ]] || { echo "libvirt ran:"; cat "$T/qemu-img.log"; exit 1; }
      qemu-img compare -f raw -F raw "$D/src.raw" "/dev/$VG/lvraw"
      # and so is a clone of an LV in the pool
      $V vol-clone --pool vdisklvm lv2 lv2c
      [[ ! -s $T/qemu-img.log ]] || { echo "libvirt ran:"; cat "$T/qemu-img.log"; exit 1; }
      qemu-img compare -f raw -F raw "/dev/$VG/lv2" "/dev/$VG/lv2c"
    }
    case_run "vol-create-from a qcow2 volume into an LV is vdiskd's CopyFrom job; and back" t_create_from

    t_resize() {
      # libvirt 9.0's logical pools have no volume resize; vdiskd resizes
      # the LV with lvresize, and libvirt sees it after a refresh.
      if out=$($V vol-resize --pool vdisklvm lv2 64M 2>&1); then
        echo "libvirt resized the LV itself"
      else
        echo "$out"
        grep -qi "support" <<<"$out"
        "$VDISKCTL" resize vdisklvm/lv2 64M
      fi
      [[ $(blockdev --getsize64 "/dev/$VG/lv2") -ge 67108864 ]]
      $V pool-refresh vdisklvm >/dev/null
      $V vol-info --bytes --pool vdisklvm lv2 | grep -E 'Capacity: +67108864 bytes'
      # its first 32 MiB still the source's
      qemu-img compare -f qcow2 -F raw "$D/src.qcow2" \
        "json:{\"driver\":\"raw\",\"size\":33554432,\"file\":{\"driver\":\"host_device\",\"filename\":\"/dev/$VG/lv2\"}}"
    }
    case_run "vol-resize of an LV (vdiskd's lvresize where libvirt has none)" t_resize
  else
    echo "SKIP: the kernel has no device-mapper here (dmsetup version fails): no LV can be activated, so libvirt's vol-create-as, vol-create-from and vol-resize in the logical pool are not run; the shim's part runs on a stand-in LV"
    t_no_dm() {
      out=$($V vol-create-as vdisklvm lv1 16M 2>&1) && { echo "an LV was made without device-mapper"; exit 1; }
      echo "$out"
      grep -q lvcreate <<<"$out"
      [[ -z $(lvs --noheadings "$VG") ]]
    }
    case_run "without device-mapper libvirt's vol-create-as fails with lvcreate's words, no LV left" t_no_dm
  fi

  # The shim's part on its own, with the command lines libvirt builds: on
  # the LVs libvirt made where LVs can be activated, otherwise on stand-ins
  # (an inactive LV in the group's metadata whose device is a loop device
  # at /dev/VG/NAME, made after vdiskd listed the pool, as libvirt makes an
  # LV just before its convert into it).
  standin() {
    local name=$1 size=$2 dev
    lvcreate -q --config 'global{activation=0}' -an -Zn -L "$size" -n "$name" "$VG" >/dev/null 2>&1
    truncate -s "$size" "$T/$name.img"
    dev=$(losetup -f --show "$T/$name.img")
    LOOPS+=("$dev")
    if [[ ! -d /dev/$VG ]]; then mkdir "/dev/$VG" && MADE_DEV_VG=1; fi
    ln -s "$dev" "/dev/$VG/$name" && LINKS+=("/dev/$VG/$name")
  }
  if [[ -z $DM ]]; then
    standin lv3 32M
    standin small 8M
  else
    lvcreate -q --yes -L 32M -n lv3 "$VG" >/dev/null
    lvcreate -q --yes -L 8M -n small "$VG" >/dev/null
  fi
  export -f standin

  t_shim_lv() {
    head -c 8M /dev/urandom >"$T/noise"
    dd if="$T/noise" of="/dev/$VG/small" bs=1M conv=fsync status=none
    VDISK_SHIM_FALLBACK=0 "$SHIM" convert -f qcow2 -O raw "$D/src.qcow2" "/dev/$VG/lv3"
    vdiskd_copied vdisklvm/lv3
    qemu-img compare -f qcow2 -F raw "$D/src.qcow2" "/dev/$VG/lv3"
    [[ $(blockdev --getsize64 "/dev/$VG/lv3") == 33554432 ]]
    # out of the LV into the dir pool
    VDISK_SHIM_FALLBACK=0 "$SHIM" convert -f raw -O qcow2 "/dev/$VG/lv3" "$D/back3.qcow2"
    qemu-img compare -f qcow2 -F qcow2 "$D/src.qcow2" "$D/back3.qcow2"
    qemu-img check -q -f qcow2 "$D/back3.qcow2"
    # an LV smaller than the source: refused in qemu-img's words, untouched
    out=$(VDISK_SHIM_FALLBACK=0 "$SHIM" convert -f qcow2 -O raw "$D/src.qcow2" "/dev/$VG/small" 2>&1) &&
      { echo "converted into the smaller LV"; exit 1; }
    echo "$out"
    grep -qF "qemu-img: /dev/$VG/small: error while converting raw: Cannot grow device files" <<<"$out"
    cmp "$T/noise" "/dev/$VG/small"
    [[ $(blockdev --getsize64 "/dev/$VG/small") == 8388608 ]]
    # a name in /dev/VG that is no LV: the real qemu-img's (which would
    # make a file there); with the fallback off nothing is made
    out=$(VDISK_SHIM_FALLBACK=0 "$SHIM" convert -f qcow2 -O raw "$D/src.qcow2" "/dev/$VG/nolv" 2>&1) &&
      { echo "converted into /dev/$VG/nolv"; exit 1; }
    echo "$out"
    grep -qF "/dev/$VG/nolv is no logical volume of its pool" <<<"$out"
    [[ ! -e /dev/$VG/nolv ]]
    # a qcow2 written over an LV: not vdiskd's (a logical pool's volumes are raw)
    out=$(VDISK_SHIM_FALLBACK=0 "$SHIM" convert -f qcow2 -O qcow2 "$D/src.qcow2" "/dev/$VG/lv3" 2>&1) &&
      { echo "a qcow2 went onto the LV"; exit 1; }
    grep -qF "a logical volume holds a raw disk" <<<"$out"
    qemu-img compare -f qcow2 -F raw "$D/src.qcow2" "/dev/$VG/lv3"
  }
  case_run "the shim: convert into an LV as libvirt runs it is vdiskd's job; a smaller LV, a name that is no LV, -O qcow2 refused" t_shim_lv
fi

# -------------------------------------------------------------------- rbd
if [[ $MODE == rbd ]]; then
  KEY=$(ceph auth get-key client.admin)
  export C=":conf=$CEPH_CONF" CEPH_CONF CEPH_MON_PORT
  t_rbd_pool() {
    uuid=$(cat /proc/sys/kernel/random/uuid)
    printf "<secret ephemeral='no' private='yes'><uuid>%s</uuid><usage type='ceph'><name>client.admin secret</name></usage></secret>" \
      "$uuid" >"$T/secret.xml"
    $V secret-define "$T/secret.xml" >/dev/null
    printf '%s' "$KEY" >"$T/key.b64"
    $V secret-set-value "$uuid" --file "$T/key.b64" >/dev/null
    # the monitor's msgr v1 port, as libvirt's rbd pool speaks it
    cat >"$T/rbd-pool.xml" <<XML
<pool type='rbd'><name>vdiskrbd</name>
  <source><name>vdiskrbd</name><host name='127.0.0.1' port='$CEPH_MON_PORT'/>
    <auth type='ceph' username='admin'><secret usage='client.admin secret'/></auth></source></pool>
XML
    $V pool-define "$T/rbd-pool.xml" >/dev/null
    $V pool-start vdiskrbd >/dev/null
    $V pool-info vdiskrbd | grep -E '^State: +running'
  }
  export KEY
  case_run "libvirt starts an rbd pool on the cluster with a cephx secret" t_rbd_pool

  t_rbd_vdisk_to_libvirt() {
    qemu-img create -q -f vdi "$T/disk.vdi" 40M
    qemu-io -f vdi -c 'write -P 0x5a 1M 3M' -c 'write -P 0x11 39M 1M' "$T/disk.vdi" >/dev/null
    "$VDISK" convert -O raw "$T/disk.vdi" "rbd:vdiskrbd/fromvdisk$C"
    $V pool-refresh vdiskrbd >/dev/null
    $V vol-list vdiskrbd | grep -qE '^ *fromvdisk +vdiskrbd/fromvdisk'
    $V vol-info --bytes --pool vdiskrbd fromvdisk | grep -E 'Capacity: +41943040 bytes'
    qemu-img compare -f vdi -F raw "$T/disk.vdi" "rbd:vdiskrbd/fromvdisk$C"
  }
  case_run "an image vdisk converts into the Ceph pool is a volume of libvirt's rbd pool" t_rbd_vdisk_to_libvirt

  t_rbd_libvirt_to_vdisk() {
    $V vol-create-as vdiskrbd made 48M
    "$VDISK" info --output=json "rbd:vdiskrbd/made$C" >"$T/made.json"
    $PY -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["virtual-size"]==50331648, d' "$T/made.json"
    # vdisk writes into it, qemu-img reads it back
    "$VDISK" convert -n -O raw "$T/disk.vdi" "rbd:vdiskrbd/made$C"
    qemu-img compare -f vdi -F raw "$T/disk.vdi" "json:{\"driver\":\"raw\",\"size\":41943040,\"file\":{\"driver\":\"rbd\",\"pool\":\"vdiskrbd\",\"image\":\"made\",\"conf\":\"$CEPH_CONF\"}}"
    $V vol-resize --pool vdiskrbd made 64M
    "$VDISK" info --output=json "rbd:vdiskrbd/made$C" >"$T/made.json"
    $PY -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["virtual-size"]==67108864, d' "$T/made.json"
    $V vol-clone --pool vdiskrbd fromvdisk cloned
    qemu-img compare -f raw -F raw "rbd:vdiskrbd/fromvdisk$C" "rbd:vdiskrbd/cloned$C"
    "$VDISK" compare "rbd:vdiskrbd/cloned$C" "$T/disk.vdi"
    $V vol-delete --pool vdiskrbd cloned
    out=$("$VDISK" info "rbd:vdiskrbd/cloned$C" 2>&1) && { echo "cloned is still there"; exit 1; }
    echo "$out"
  }
  case_run "volumes libvirt makes, resizes and clones in the rbd pool are read by vdisk" t_rbd_libvirt_to_vdisk

  t_rbd_vdiskd_to_libvirt() {
    # A volume vdiskd makes in its rbd pool is a volume of libvirt's rbd
    # pool on the same Ceph pool, and one libvirt deletes is gone for
    # vdiskd after a refresh.
    for _ in $(seq 100); do "$VDISKCTL" pools | grep -qE '^vdceph .* rbd ' && break; sleep 0.2; done
    "$VDISKCTL" pools | grep -E '^vdceph .* rbd '
    "$VDISKCTL" import "$T/disk.vdi" vdceph/byvdiskd
    qemu-img compare -f vdi -F raw "$T/disk.vdi" "rbd:vdiskrbd/byvdiskd$C"
    $V pool-refresh vdiskrbd >/dev/null
    $V vol-list vdiskrbd | grep -qE '^ *byvdiskd +vdiskrbd/byvdiskd'
    $V vol-info --bytes --pool vdiskrbd byvdiskd | grep -E 'Capacity: +41943040 bytes'
    # and the other way
    $V vol-create-as vdiskrbd bylibvirt 24M
    "$VDISKCTL" refresh vdceph
    "$VDISKCTL" volumes vdceph | grep -qw bylibvirt
    "$VDISKCTL" info --json vdceph/bylibvirt | $PY -c 'import json,sys; d=json.load(sys.stdin); assert d["virtual-size"]==25165824, d'
    $V vol-delete --pool vdiskrbd bylibvirt >/dev/null
    "$VDISKCTL" refresh vdceph
    ! "$VDISKCTL" volumes vdceph | grep -qw bylibvirt
  }
  case_run "a volume vdiskd makes in its rbd pool is listed by libvirt's rbd pool on the same Ceph pool" t_rbd_vdiskd_to_libvirt

  t_rbd_no_qemu_img() {
    # Between the dir pool and the rbd pool libvirt 9.0 copies nothing:
    # an RBD volume's path is POOL/IMAGE, no file, and its rbd pool clones
    # only images of the same pool. Whatever it says, no file or image is
    # left half-made.
    $V pool-info vdiskrbd | grep -E '^State: +running'
    $V vol-create-as vdiskdir d.qcow2 16M --format qcow2
    printf "<volume><name>fromdir</name><capacity unit='MiB'>16</capacity></volume>" >"$T/fd.xml"
    if $V vol-create-from vdiskrbd "$T/fd.xml" --inputpool vdiskdir d.qcow2 >"$T/fd.out" 2>&1; then
      cat "$T/fd.out"
      qemu-img compare -f qcow2 -F raw "$D/d.qcow2" "rbd:vdiskrbd/fromdir$C"
    else
      cat "$T/fd.out"
      ! rbd -p vdiskrbd ls | grep -qx fromdir
    fi
    printf "<volume><name>fromrbd.qcow2</name><capacity unit='MiB'>40</capacity><target><format type='qcow2'/></target></volume>" >"$T/fr.xml"
    if $V vol-create-from vdiskdir "$T/fr.xml" --inputpool vdiskrbd fromvdisk >"$T/fr.out" 2>&1; then
      cat "$T/fr.out"
      qemu-img compare -f raw -F qcow2 "rbd:vdiskrbd/fromvdisk$C" "$D/fromrbd.qcow2"
    else
      cat "$T/fr.out"
      [[ ! -e $D/fromrbd.qcow2 ]]
    fi
    echo "libvirt ran:"; cat "$T/qemu-img.log"
    # The one qemu-img libvirt ran in this test made d.qcow2: its rbd pool
    # (start, refresh, create, resize, clone, delete, and these two) ran
    # none, librbd does its work.
    ! grep -v "^create -f qcow2 .*$D/d.qcow2 " "$T/qemu-img.log"
  }
  case_run "between a dir pool and the rbd pool, and in the rbd pool: what libvirt runs" t_rbd_no_qemu_img

  t_rbd_shim_names() {
    # An rbd: name reaching the shim (from someone else than libvirt) is
    # never read as a file: with the fallback on the real qemu-img
    # converts it, with it off the shim refuses, naming the protocol and
    # neither the image nor its key, and makes nothing.
    VDISK_SHIM_FALLBACK=1 "$SHIM" convert -f raw -O qcow2 "rbd:vdiskrbd/fromvdisk$C" "$D/viashim.qcow2"
    qemu-img compare -f vdi -F qcow2 "$T/disk.vdi" "$D/viashim.qcow2"
    name="rbd:vdiskrbd/fromvdisk:id=admin:key=$KEY:auth_supported=cephx:mon_host=127.0.0.1\\:$CEPH_MON_PORT"
    out=$(VDISK_SHIM_FALLBACK=0 "$SHIM" convert -f raw -O qcow2 "$name" "$D/off.qcow2" 2>&1) &&
      { echo "converted with the fallback off"; exit 1; }
    echo "$out"
    grep -qF "the source is a rbd: image, which qemu opens through that protocol, not a file" <<<"$out"
    ! grep -qF "$KEY" <<<"$out"
    [[ ! -e $D/off.qcow2 ]]
    out=$(VDISK_SHIM_FALLBACK=0 "$SHIM" create -f raw "rbd:vdiskrbd/new$C" 16M 2>&1) &&
      { echo "created with the fallback off"; exit 1; }
    grep -qF "the image is a rbd: image" <<<"$out"
    ! rbd -p vdiskrbd ls | grep -qx new
  }
  case_run "an rbd: name reaching the shim goes to the real qemu-img, never read as a file" t_rbd_shim_names
fi

echo "$PASSED passed, $FAILED failed"
[[ $FAILED == 0 ]]
