#!/usr/bin/env bash
# blkdebug, QEMU's error-injection driver: the same I/O errors injected into
# convert, compare, commit and snapshot -d of qemu-img and of vdisk (under
# the name qemu-img, in two folders holding the same files) give the same
# exit status and the same words, and leave images qemu-img check finds as
# it finds qemu-img's (byte for byte where qemu-img's steps are followed).
# Under its own name vdisk names the file and the failed request.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

# setup FUNCTION: the same files in q/ (for qemu-img) and v/ (for vdisk).
setup() {
    rm -rf q v && mkdir q v
    (cd q && "$1") && (cd v && "$1")
}

# same ARGS...: qemu-img in q/ and vdisk-as-qemu-img in v/ exit alike and
# print the same stdout and stderr.
same() {
    local qrc=0 vrc=0
    (cd q && qemu-img "$@" >../q.out 2>../q.err) || qrc=$?
    (cd v && qvd "$@" >../v.out 2>../v.err) || vrc=$?
    if ((qrc != vrc)) || ! cmp -s q.out v.out || ! cmp -s q.err v.err; then
        echo "qemu-img $*: exit $qrc, as qemu-img vdisk exits $vrc"
        diff q.out v.out | sed 's/^/  out /'
        diff q.err v.err | sed 's/^/  err /'
        return 1
    fi
    # An error case must be one: the injected error really happened.
    [[ ${EXPECT_RC:-any} == any ]] || ((qrc == EXPECT_RC)) ||
        { echo "qemu-img $*: exit $qrc, expected $EXPECT_RC"; return 1; }
}

conf() { # conf FILE EVENT [KEY VALUE]...: one [inject-error] rule
    local file=$1 event=$2
    shift 2
    { echo "[inject-error]"; echo "event = \"$event\""
      while (($#)); do echo "$1 = \"$2\""; shift 2; done; } >"$file"
}

# ----- compare -----

two_images() {
    qemu-img create -q -f qcow2 a.qcow2 64M
    qemu-io -c 'write -P 7 512 512' a.qcow2 >/dev/null
    qemu-img create -q -f qcow2 b.qcow2 64M
    qemu-img create -q -f qcow2 short.qcow2 0
    conf r.conf read_aio errno 5 once off
}

compare_read_error() {
    setup two_images
    EXPECT_RC=4 same compare blkdebug:r.conf:a.qcow2 b.qcow2
    grep -qx "qemu-img: Error while reading offset 0 of blkdebug:r.conf:a.qcow2: Input/output error" q.err
    # the longer image's tail: the size warning comes first
    EXPECT_RC=4 same compare blkdebug:r.conf:a.qcow2 short.qcow2
    grep -qx "Warning: Image size mismatch!" q.out
    # vdisk's own words name the image and the request
    cd v && expect_exit 4 vd compare blkdebug:r.conf:a.qcow2 b.qcow2 2>err
    grep -q "reading blkdebug:r.conf:a.qcow2 at offset 0: .*a.qcow2: read failed: Input/output error" err
}
case_run "compare: a read error exits 4 with qemu-img's words" compare_read_error

# ----- convert -----

convert_read_error() {
    setup two_images
    EXPECT_RC=1 same convert -O raw blkdebug:r.conf:a.qcow2 out.raw
    grep -qx "qemu-img: error while reading at byte 0: Input/output error" q.err
    # an error that happens once only (once=on) does not stop a second try
    conf v/r.conf read_aio errno 5 once on
    cd v && expect_exit 1 vd convert -O raw blkdebug:r.conf:a.qcow2 out.raw 2>err
    grep -q "error while reading at byte 0: .*a.qcow2: read failed: Input/output error" err
}
case_run "convert: a read error, in qemu-img's words and in vdisk's" convert_read_error

salvage_source() {
    qemu-img create -q -f qcow2 src.qcow2 8M
    qemu-io -c 'write -P 42 0 8M' src.qcow2 >/dev/null
}

convert_salvage() {
    setup salvage_source
    local rules="{'event': 'none', 'iotype': 'block-status', 'errno': 5, 'sector': 4100},
                 {'event': 'none', 'iotype': 'read', 'errno': 5, 'sector': 8000},
                 {'event': 'none', 'iotype': 'read', 'errno': 5, 'sector': 8001}"
    local src="json:{'driver': 'blkdebug', 'inject-error': [$rules],
                     'image': {'driver': 'qcow2', 'file': {'driver': 'file', 'filename': 'src.qcow2'}}}"
    EXPECT_RC=0 same convert --salvage -O qcow2 "$src" out.qcow2
    [[ $(grep -c 'warning: error while reading block status at offset 2099200' q.err) == 2 ]]
    grep -q 'warning: error while reading offset 4096000: Input/output error' q.err
    qemu-img compare q/out.qcow2 v/out.qcow2
    qemu-img check -q v/out.qcow2
    # the sectors that could not be read came out as zeroes
    qemu-io -c 'read -P 0 4096000 1024' -c 'read -P 42 0 4096000' v/out.qcow2 >/dev/null
}
case_run "convert --salvage: block status and read errors above the format" convert_salvage

# ----- commit -----

failing_backing() {
    qemu-img create -q -f qcow2 base.qcow2 1M
    local backing="json:{'driver': 'qcow2', 'file': {'driver': 'blkdebug',
        'inject-error': [{'event': 'write_aio', 'errno': 28, 'once': true}],
        'image': {'driver': 'file', 'filename': 'base.qcow2'}}}"
    qemu-img create -q -f qcow2 -b "$(echo "$backing" | tr -d '\n' | tr -s ' ')" -F qcow2 top.qcow2
    qemu-io -c 'write -P 3 0 64k' top.qcow2 >/dev/null
}

commit_write_error() {
    setup failing_backing
    EXPECT_RC=1 same commit top.qcow2
    grep -qx "qemu-img: Block job failed: No space left on device" q.err
    cd v
    qcheck base.qcow2
    qcheck top.qcow2
    # the overlay keeps its data: nothing the user had is lost
    qemu-io -c 'read -P 3 0 64k' top.qcow2 >/dev/null
}
case_run "commit: a write error in the base (a json: backing file)" commit_write_error

overlay() {
    qemu-img create -q -f qcow2 base.qcow2 64M
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    qemu-io -c 'write -P 5 0 64k' -c 'write -P 6 1M 128k' top.qcow2 >/dev/null
}

commit_empty_error() {
    local event
    for event in l1_update empty_image_prepare reftable_update refblock_alloc; do
        setup overlay
        conf q/e.conf "$event"
        cp q/e.conf v/e.conf
        EXPECT_RC=1 same commit blkdebug:e.conf:top.qcow2
        grep -qx "qemu-img: Failed to empty blkdebug:e.conf:top.qcow2: Input/output error" q.err
        # qemu-img's steps: the overlay as qemu-img leaves it, byte for byte
        cmp q/top.qcow2 v/top.qcow2 || { echo "$event: the overlay differs from qemu-img's"; return 1; }
        # the data reached the base
        qemu-io -c 'read -P 6 1M 128k' v/base.qcow2 >/dev/null
        # the dirty bit has the next open repair it; then it is clean
        qemu-io -c close v/top.qcow2 >/dev/null 2>&1
        qcheck v/top.qcow2
    done
}
case_run "commit: emptying the overlay fails at each of qemu's steps" commit_empty_error

commit_empty_ok() {
    setup overlay
    EXPECT_RC=0 same commit top.qcow2
    cmp q/top.qcow2 v/top.qcow2
    # (where qemu-img puts the base's new clusters varies from run to run)
    qemu-img compare q/base.qcow2 v/base.qcow2
    qcheck v/base.qcow2
}
case_run "commit: the emptied overlay is qemu-img's, byte for byte" commit_empty_ok

# ----- snapshot -d -----

snapshotted() {
    qemu-img create -q -f qcow2 s.qcow2 64M
    qemu-io -c 'write 0 64k' s.qcow2 >/dev/null
    qemu-img snapshot -c foo s.qcow2
    conf f.conf cluster_free errno 5
}

snapshot_delete_error() {
    setup snapshotted
    EXPECT_RC=1 same snapshot -d foo blkdebug:f.conf:s.qcow2
    grep -qx "qcow2_free_clusters failed: Input/output error" q.err
    # the snapshot is gone; what is left is leaks, as qemu-img leaves it
    [[ -z $(qemu-img snapshot -l v/s.qcow2) ]]
    local qrc=0 vrc=0
    qemu-img check q/s.qcow2 >q.check 2>&1 || qrc=$?
    qemu-img check v/s.qcow2 >v.check 2>&1 || vrc=$?
    ((qrc == 3 && vrc == 3)) || { echo "check: qemu-img's image $qrc, vdisk's $vrc"; return 1; }
    diff q.check v.check
    qemu-img check -q -r leaks v/s.qcow2
    qcheck v/s.qcow2
}
case_run "snapshot -d: an error freeing clusters leaves leaks only" snapshot_delete_error

# ----- the rules -----

rules_source() {
    qemu-img create -q -f raw d.raw 16M
    qemu-io -f raw -c 'write -P 9 0 16M' d.raw >/dev/null
    # the first read passes and moves to state 2, where reads fail
    printf '[set-state]\nevent = "read_aio"\nstate = "1"\nnew_state = "2"\n' >s.conf
    printf '[inject-error]\nevent = "read_aio"\nstate = "2"\nerrno = "5"\n' >>s.conf
    # only a request that covers sector 8191 fails
    printf '[inject-error]\nevent = "read_aio"\nerrno = "5"\nsector = "8191"\n' >sector.conf
}

rules() {
    setup rules_source
    # state: the first read passes, the second fails
    EXPECT_RC=4 same compare -f raw -F raw blkdebug:s.conf:d.raw d.raw
    grep -qx "qemu-img: Error while reading offset 2097152 of blkdebug:s.conf:d.raw: Input/output error" q.err
    cd v
    expect_exit 1 vd dd -f raw -O raw bs=512k if=blkdebug:s.conf:d.raw of=out.raw
    cd ..
    # sector: the first 2 MiB read passes, the one over sector 8191 fails
    EXPECT_RC=4 same compare -f raw -F raw blkdebug:sector.conf:d.raw d.raw
    grep -qx "qemu-img: Error while reading offset 2097152 of blkdebug:sector.conf:d.raw: Input/output error" q.err
    cd v
    # the rules in --image-opts
    vd convert --image-opts -O raw \
        "driver=blkdebug,image.driver=raw,image.file.filename=d.raw,inject-error.0.event=none,inject-error.0.iotype=read,inject-error.0.sector=32767" \
        x.raw 2>err && { echo "the read of the last sector did not fail"; return 1; }
    grep -q "read failed: Input/output error" err
}
case_run "rules: state, sector, once and --image-opts" rules

force_share() {
    qemu-img create -q -f qcow2 d.qcow2 1M
    local opts=driver=blkdebug,image.driver=qcow2,image.file.filename=d.qcow2
    qemu_io_hold qcow2 d.qcow2
    # qemu-io writes it: refused, unless force-share (-U) says to read anyway
    fails_cleanly vd info --image-opts "$opts"
    vd info --image-opts "$opts,force-share=on" >info
    qemu_io_release
    grep -q "file format: qcow2" info
    # options qemu takes for any node are accepted
    vd info --image-opts "$opts,cache.direct=off,detect-zeroes=off" >/dev/null
    fails_cleanly vd info --image-opts "$opts,no-such-option=1"
}
case_run "options of any node: force-share reads an image another process writes" force_share

names_inside() {
    # A file outside the image's folder, and a vmdk whose extent names it
    # through blkdebug (no '/' first, no '..'): a name from inside an image
    # is a plain path, never a blkdebug name.
    mkdir outside img
    printf 'SECRETSECRET' >outside/secret.raw
    truncate -s 1M outside/secret.raw
    cd img
    qemu-img create -q -f vmdk -o subformat=monolithicFlat f.vmdk 1M
    sed -i "s|\"f-flat.vmdk\"|\"blkdebug::$W/outside/secret.raw\"|" f.vmdk
    grep -q "blkdebug::" f.vmdk
    fails_cleanly vd convert -f vmdk -O raw f.vmdk out.raw
    [[ ! -e out.raw ]] || not grep -q SECRET out.raw
}
case_run "a name inside an image is never a blkdebug name" names_inside

bad_configs() {
    qemu-img create -q -f raw d.raw 1M
    printf '[inject-error]\nevent = "no_such_event"\n' >bad.conf
    printf '[inject-eror]\nevent = "read_aio"\n' >section.conf
    printf '[inject-error]\nerrno = "5"\n' >noevent.conf
}

bad_config() {
    setup bad_configs
    local c
    for c in missing bad section noevent; do
        EXPECT_RC=1 same info blkdebug:$c.conf:d.raw
    done
    cd v
    # vdisk's words name the file and the line
    fails_cleanly vd info blkdebug:missing.conf:d.raw 2>err
    grep -q "Could not read blkdebug config file missing.conf: No such file or directory" err
    fails_cleanly vd info blkdebug:bad.conf:d.raw 2>err
    grep -q 'bad.conf:2: Invalid event name "no_such_event"' err
    fails_cleanly vd info blkdebug:noevent.conf:d.raw 2>err
    grep -q 'noevent.conf:1: Missing event name for rule' err
    # an empty config: blkdebug::FILE, nothing injected
    vd info --output=json blkdebug::d.raw >info
    grep -q '"virtual-size": 1048576' info
}
case_run "bad configs are refused, naming the file and line" bad_config

finish
