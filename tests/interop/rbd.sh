#!/usr/bin/env bash
# vdisk on Ceph RBD images (formats/rbd.c, through librbd), offline, in
# qemu-img's names (rbd:POOL/IMAGE[@SNAP][:conf=PATH][:id=USER][:KEY=V],
# --image-opts driver=rbd, json:). A real one-node cluster is started for
# the script in its temporary directory (tests/ceph-cluster.sh) and
# stopped by pid at the end. qemu-img's rbd driver (qemu-block-extra) is
# the oracle: a VirtualBox disk with holes converted into RBD is the guest
# qemu-img compare expects, sparse (rbd du), and back out as qcow2 the
# same; info, map, compare and resize as qemu-img sees them; bad names,
# missing images and pools, a wrong configuration and a monitor that does
# not answer fail cleanly, naming the image, within bounded time.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$TESTS_DIR/ceph-cluster.sh"
need_programs

skip() {
    echo "$*"
    echo "0 passed, 0 failed"
    exit 77
}
if "$VDISK" info rbd:p/i:conf=/nonexistent 2>&1 | grep -q 'built without Ceph RBD support'; then
    skip "vdisk was built without Ceph RBD support (librbd-dev missing when it was built): not tested"
fi
if ! qemu-img --help | grep -q 'Supported formats:.* rbd'; then
    skip "qemu-img has no rbd driver (package qemu-block-extra): the oracle is missing"
fi

trap 'ceph_cluster_stop; rm -rf "$T"' EXIT
ceph_cluster_start "$T/ceph" || skip "(the RBD tests need a cluster)"
ceph_pool_create vd || skip "(the RBD tests need a pool)"
export CEPH_CONF
C=":conf=$CEPH_CONF:id=admin"
MiB=$((1 << 20))

# used NAME: the bytes rbd du counts as used by image NAME of pool vd.
used() {
    rbd du --format json "vd/$1" |
        "$PY" -c 'import json,sys; print(json.load(sys.stdin)["images"][0]["used_size"])'
}

# rbd_size NAME: the image's size as rbd info says it.
rbd_size() {
    rbd info --format json "vd/$1" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["size"])'
}

# A 256 MiB VirtualBox disk holding data in three 4 MiB objects' worth of
# places: 3 MiB at 0, 1 MiB at 100 MiB, 1 MiB at the end, and 2 MiB of
# zeroes written at 150 MiB (stored, but nothing to keep).
make_vdi() {
    qemu-img create -q -f vdi disk.vdi 256M
    qemu-io -f vdi -c 'write -P 0x11 0 3M' -c 'write -P 0x22 100M 1M' -c 'write -P 0 150M 2M' \
        -c 'write -P 0x33 255M 1M' disk.vdi >/dev/null
}

convert_vdi_into_rbd() {
    make_vdi
    vd convert -O raw disk.vdi "rbd:vd/in1$C"
    qemu-img compare -f vdi -F raw disk.vdi "rbd:vd/in1$C"
    [[ $(rbd_size in1) == $((256 * MiB)) ]]
    # Sparse: only the three objects that hold data (rbd du counts whole
    # objects), no more than qemu-img's own convert uses.
    local u q
    u=$(used in1)
    qemu-img convert -O raw disk.vdi "rbd:vd/qin1$C"
    q=$(used qin1)
    echo "used: vdisk $u, qemu-img $q"
    ((u == 12 * MiB)) || { echo "vdisk's image uses $u bytes, expected 12 MiB"; return 1; }
    ((u <= q))
    # Without -O the target of an rbd: name is raw, as qemu-img makes it.
    vd convert disk.vdi "rbd:vd/in2$C"
    qemu-img compare -f vdi -F raw disk.vdi "rbd:vd/in2$C"
    # map: the objects that hold data and the holes, as qemu-img's rbd
    # driver reports them.
    diff <(qemu-img map --output=json -f raw "rbd:vd/in1$C") <(vd map --output=json -f raw "rbd:vd/in1$C")
}

convert_rbd_out() {
    make_vdi
    qemu-img convert -O raw disk.vdi "rbd:vd/out1$C"
    vd convert -O qcow2 "rbd:vd/out1$C" out.qcow2
    qemu-img compare -f vdi -F qcow2 disk.vdi out.qcow2
    qcheck out.qcow2
    # The holes stay holes: the qcow2 has no more data than vdisk's convert
    # of the vdi itself gives.
    vd convert -O qcow2 disk.vdi direct.qcow2
    diff <(qemu-img map --output=json out.qcow2) <(qemu-img map --output=json direct.qcow2)
    # A read-only snapshot of the image is a source of its own: a write
    # made after it is not in it.
    rbd snap create vd/out1@s1 >/dev/null
    qemu-io -f raw -c 'write -P 0x44 1M 4k' "rbd:vd/out1$C" >/dev/null
    vd convert -O qcow2 "rbd:vd/out1@s1$C" snap.qcow2
    qemu-img compare -f vdi -F qcow2 disk.vdi snap.qcow2
    not qemu-img compare -q -f vdi -F raw disk.vdi "rbd:vd/out1$C"
    fails_cleanly vd resize "rbd:vd/out1@s1$C" 300M 2>err
    grep -q "snapshot 's1' is read-only" err
}

info_and_compare() {
    qemu-img create -q -f raw "rbd:vd/info1$C" 96M
    qemu-io -f raw -c 'write -P 9 5M 64k' "rbd:vd/info1$C" >/dev/null
    qemu-img info --output=json -f raw "rbd:vd/info1$C" >q.json
    vd info --output=json -f raw "rbd:vd/info1$C" >v.json
    local k
    for k in virtual-size format cluster-size dirty-flag; do
        [[ $(json q.json "d['$k']") == "$(json v.json "d['$k']")" ]] ||
            { echo "info $k differs"; cat q.json v.json; return 1; }
    done
    vd info "rbd:vd/info1$C" >v.txt
    grep -qx 'virtual size: 96 MiB (100663296 bytes)' v.txt
    grep -qx 'disk size: unavailable' v.txt
    grep -qx 'cluster_size: 4194304' v.txt
    # compare: equal to a raw file of the same bytes, then one byte apart.
    qemu-img convert -f raw -O raw "rbd:vd/info1$C" same.raw
    vd compare -f raw -F raw same.raw "rbd:vd/info1$C"
    qemu-io -f raw -c 'write -P 1 50M 512' "rbd:vd/info1$C" >/dev/null
    expect_exit 1 qemu-img compare -q -f raw -F raw same.raw "rbd:vd/info1$C"
    expect_exit 1 vd compare -q -f raw -F raw same.raw "rbd:vd/info1$C"
    # qemu's other spellings of the same image.
    vd info --image-opts "driver=rbd,pool=vd,image=info1,conf=$CEPH_CONF,user=admin" >o.txt
    grep -qx 'virtual size: 96 MiB (100663296 bytes)' o.txt
    vd info "json:{\"driver\": \"raw\", \"file\": {\"driver\": \"rbd\", \"pool\": \"vd\", \"image\": \"info1\", \"conf\": \"$CEPH_CONF\"}}" >j.txt
    grep -qx 'virtual size: 96 MiB (100663296 bytes)' j.txt
}

resize_image() {
    make_vdi
    vd convert -O raw disk.vdi "rbd:vd/rs1$C"
    vd resize "rbd:vd/rs1$C" +64M
    [[ $(rbd_size rs1) == $((320 * MiB)) ]]
    [[ $(qinfo "rbd:vd/rs1$C" virtual-size) == $((320 * MiB)) ]]
    # The new part reads zero: still the vdi's guest, to qemu-img.
    qemu-img compare -f vdi -F raw disk.vdi "rbd:vd/rs1$C"
    # Shrinking drops data: refused without --shrink, the size unchanged.
    fails_cleanly vd resize "rbd:vd/rs1$C" 128M
    [[ $(rbd_size rs1) == $((320 * MiB)) ]]
    vd resize --shrink "rbd:vd/rs1$C" 128M
    [[ $(rbd_size rs1) == $((128 * MiB)) ]]
    qemu-img convert -f vdi -O raw disk.vdi full.raw
    truncate -s 128M full.raw
    qemu-img compare -f raw -F raw full.raw "rbd:vd/rs1$C"
}

# Internal snapshots of an RBD image are RBD snapshots, listed as qemu-img
# lists them; a revert brings back the data (and the size) of then.
snapshots() {
    make_vdi
    vd convert -O raw disk.vdi "rbd:vd/sn1$C"
    vd snapshot -c s1 "rbd:vd/sn1$C"
    rbd snap ls --format json vd/sn1 | grep -q '"name":"s1"'
    diff <(qemu-img snapshot -l "rbd:vd/sn1$C") <(vd snapshot -l "rbd:vd/sn1$C")
    qemu-img info --output=json -f raw "rbd:vd/sn1$C" >q.json
    vd info --output=json -f raw "rbd:vd/sn1$C" >v.json
    [[ $(json q.json "d['snapshots']") == "$(json v.json "d['snapshots']")" ]]
    qemu-img info -f raw "rbd:vd/sn1$C" | sed -n '/^Snapshot list:/,$p' >q.txt
    vd info -f raw "rbd:vd/sn1$C" | sed -n '/^Snapshot list:/,$p' >v.txt
    diff q.txt v.txt
    grep -q '^s1 ' v.txt
    qemu-io -f raw -c 'write -P 0x5a 0 1M' -c 'write -P 0x5b 200M 4M' "rbd:vd/sn1$C" >/dev/null
    vd resize -f raw "rbd:vd/sn1$C" 300M
    fails_cleanly vd snapshot -c s1 "rbd:vd/sn1$C" 2>e1
    grep -q "snapshot 's1' exists already" e1
    vd snapshot -a s1 "rbd:vd/sn1$C"
    [[ $(rbd_size sn1) == $((256 * MiB)) ]]
    qemu-img compare -f vdi -F raw disk.vdi "rbd:vd/sn1$C"
    fails_cleanly vd snapshot -a nope "rbd:vd/sn1$C" 2>e2
    grep -q "has no snapshot 'nope'" e2
    vd snapshot -d s1 "rbd:vd/sn1$C"
    [[ -z $(qemu-img snapshot -l "rbd:vd/sn1$C") ]]
    # A file has no internal snapshots, as before.
    qemu-img create -q -f raw f.raw 1M
    fails_cleanly vd snapshot -c s1 f.raw 2>e3
    grep -q 'internal snapshots is not supported by the raw format' e3
}

# A convert -n into an image that holds other data: the source's holes are
# zeroed there (its objects freed), nowhere else is written.
convert_into_existing() {
    make_vdi
    qemu-img create -q -f raw "rbd:vd/ex1$C" 256M
    qemu-io -f raw -c 'write -P 0x55 40M 8M' -c 'write -P 0x66 200M 1M' "rbd:vd/ex1$C" >/dev/null
    vd convert -n -O raw disk.vdi "rbd:vd/ex1$C"
    qemu-img compare -f vdi -F raw disk.vdi "rbd:vd/ex1$C"
    local u
    u=$(used ex1)
    ((u == 12 * MiB)) || { echo "after convert -n the image uses $u bytes, expected 12 MiB"; return 1; }
}

# A new image is never made over one that exists: the convert is refused
# and the image keeps its data.
existing_target_kept() {
    make_vdi
    qemu-img create -q -f raw "rbd:vd/keep1$C" 16M
    qemu-io -f raw -c 'write -P 0x77 0 1M' "rbd:vd/keep1$C" >/dev/null
    qemu-img convert -f raw -O raw "rbd:vd/keep1$C" before.raw
    fails_cleanly vd convert -O raw disk.vdi "rbd:vd/keep1$C" 2>err
    grep -q "RBD image 'keep1' in pool 'vd' exists already" err
    qemu-img compare -f raw -F raw before.raw "rbd:vd/keep1$C"
    [[ $(rbd_size keep1) == $((16 * MiB)) ]]
}

# A convert that fails part way removes the image it made (qemu-img
# leaves it behind), so nothing looks like a finished copy.
failed_convert_removes_image() {
    qemu-img create -q -f raw src.raw 64M
    qemu-io -f raw -c 'write -P 1 0 1M' -c 'write -P 2 32M 1M' src.raw >/dev/null
    printf '[inject-error]\nevent = "read_aio"\nerrno = "5"\n' >r.conf
    fails_cleanly vd convert -f raw -O raw blkdebug:r.conf:src.raw "rbd:vd/fail1$C"
    not rbd info vd/fail1 >/dev/null 2>&1
    rbd ls vd >ls.txt
    not grep -qx fail1 ls.txt
}

errors_are_clear() {
    fails_cleanly vd info "rbd:vd/nope$C" 2>e1
    grep -q "rbd:vd/nope.*there is no RBD image 'nope' in pool 'vd'" e1
    fails_cleanly vd info "rbd:nopool/x$C" 2>e2
    grep -q "the Ceph cluster has no pool 'nopool'" e2
    fails_cleanly vd info "rbd:vd/x:conf=$W/missing.conf" 2>e3
    grep -q "cannot read the Ceph configuration file $W/missing.conf: No such file or directory" e3
    fails_cleanly vd convert -O raw "rbd:vd/nope$C" out.raw 2>e4
    grep -q "there is no RBD image 'nope'" e4
    [[ ! -e out.raw ]]
    fails_cleanly vd info "rbd:vd" 2>e5
    grep -q 'not a valid RBD image name' e5
    fails_cleanly vd info "rbd:vd/x:conf=$CEPH_CONF:no_such_option=1" 2>e6
    grep -q "'no_such_option' is no Ceph configuration option" e6
    fails_cleanly vd info "rbd:vd/x:conf=$CEPH_CONF:id=nobody" 2>e7
    grep -q "refused client.nobody" e7
    # The keyring named in the name, where the configuration names none.
    grep -v '^keyring = ' "$CEPH_CONF" >nokey.conf
    qemu-img create -q -f raw "rbd:vd/key1$C" 8M
    fails_cleanly vd info "rbd:vd/key1:conf=$W/nokey.conf:keyring=$W/none.keyring" 2>e8
    grep -q "no key for it in the keyring ($W/none.keyring)" e8
    vd info "rbd:vd/key1:conf=$W/nokey.conf:id=admin:keyring=$CEPH_KEYRING" | grep -q 'virtual size: 8 MiB'
    # No configuration file at all: the monitor and keyring in the name,
    # its ':' escaped as qemu escapes it.
    (unset CEPH_CONF; HOME=$W vd info \
        "rbd:vd/key1:mon_host=127.0.0.1\\:$CEPH_MON_PORT:keyring=$CEPH_KEYRING") >n.txt
    grep -q 'virtual size: 8 MiB' n.txt
    if [[ ! -e /etc/ceph/ceph.conf ]]; then
        (unset CEPH_CONF; HOME=$W fails_cleanly vd info rbd:vd/key1) 2>e9
        grep -q 'no Ceph configuration found .*name it with :conf=PATH' e9
    fi
}

# A configuration whose monitor does not answer: the open gives up after
# 30 s (librados alone would wait five minutes), naming the configuration;
# a shorter client_mount_timeout in the name is taken.
dead_monitor_times_out() {
    local port start
    port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf '[global]\nmon_host = 127.0.0.1:%s\nauth_client_required = none\n' "$port" >dead.conf
    start=$SECONDS
    fails_cleanly vd info "rbd:vd/x:conf=$W/dead.conf" 2>e1
    grep -q "cannot connect to the Ceph cluster of $W/dead.conf: no monitor answered within 30 s" e1
    ((SECONDS - start < 60))
    start=$SECONDS
    fails_cleanly vd info "rbd:vd/x:conf=$W/dead.conf:client_mount_timeout=3" 2>e2
    grep -q "no monitor answered within 3 s" e2
    ((SECONDS - start < 20))
}

case_run convert-vdi-into-rbd convert_vdi_into_rbd
case_run convert-rbd-out convert_rbd_out
case_run info-and-compare info_and_compare
case_run resize resize_image
case_run snapshots snapshots
case_run convert-into-existing convert_into_existing
case_run existing-target-kept existing_target_kept
case_run failed-convert-removes-image failed_convert_removes_image
case_run errors-are-clear errors_are_clear
case_run dead-monitor-times-out dead_monitor_times_out
finish
