#!/usr/bin/env bash
# Image locking against QEMU's own: while qemu-nbd, qemu-io or
# qemu-storage-daemon hold an image (as a running VM holds its disk), vdisk
# refuses to write it, and to read it without -U, exactly where qemu-img
# does; and while vdisk holds an image, QEMU refuses it. Backing files are
# locked for reading, locking=off proceeds, and the holder is named.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

HOLD_IMAGE=${HOLD_IMAGE:-$REPO/build/tests/hold-image}
export HOLD_IMAGE
if ! command -v qemu-nbd >/dev/null; then
    echo "qemu-nbd not found (package qemu-utils): the locking tests need it as the holder"
    echo "0 passed, 0 failed"
    exit 77
fi
[[ -x $HOLD_IMAGE ]] || { echo "missing program: $HOLD_IMAGE"; echo "0 passed, 1 failed"; exit 1; }

# nbd_hold FILE [qemu-nbd options]: serve FILE in the background; sets
# NBD_PID. With --image-opts among the options, their last one is the image.
nbd_hold() {
    local f=$1
    shift
    local args=("$@")
    [[ " $* " == *" --image-opts "* ]] || args+=("$f")
    qemu-nbd --persistent -k "$PWD/nbd-$NBD_N.sock" "${args[@]}" </dev/null >/dev/null 2>&1 &
    NBD_PID=$!
    NBD_N=$((NBD_N + 1))
    wait_locked "$f"
}
NBD_N=0
export -f holds wait_locked nbd_hold

# stop_holders_at_exit: a case that fails part way still ends the holders it
# started in the background (the case runs in a subshell of its own).
stop_holders_at_exit() {
    trap 'for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done; wait || true' EXIT
}

# stop PID: end a holder started in the background and reap it.
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# refused CODE TEXT CMD...: CMD exits with CODE and says TEXT on stderr.
refused() {
    local code=$1 text=$2 rc=0
    shift 2
    "$@" >out.txt 2>err.txt || rc=$?
    cat err.txt
    ((rc == code)) || { echo "expected exit $code, got $rc: $*"; return 1; }
    grep -qF -- "$text" err.txt || { echo "no '$text' in the error of: $*"; return 1; }
}
export -f stop_holders_at_exit stop refused

# hold FILE [hold-image options]: vdisk holds FILE (hold-image, stdin kept
# open through a fifo); sets HOLD_PID and HOLD_FD. release ends it.
hold() {
    local f=$1
    shift
    rm -f hold.in hold.out
    mkfifo hold.in
    "$HOLD_IMAGE" "$@" "$f" <hold.in >hold.out 2>hold.err &
    HOLD_PID=$!
    exec {HOLD_FD}>hold.in
    local i
    for ((i = 0; i < 100; i++)); do
        grep -q ready hold.out 2>/dev/null && return 0
        kill -0 "$HOLD_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat hold.err
    echo "hold-image did not get $f"
    return 1
}
release() {
    exec {HOLD_FD}>&-
    wait "$HOLD_PID"
}

# an image with data, and its digest
image_with_data() {
    qemu-img create -q -f qcow2 "$1" 64M
    qio qcow2 "$1" "write -P 7 0 1M" "write -P 9 10M 64k"
}

BUSY='in use by another process'
WRITE_LOCK='Failed to get "write" lock'
SHARED_LOCK='Failed to get shared "write" lock'

writes_refused_while_nbd_writes() {
    stop_holders_at_exit
    image_with_data a.qcow2
    qemu-img create -q -f qcow2 base.qcow2 64M
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    qemu-img create -q -f raw src.raw 64M
    local before before_base
    before=$(sha256sum <a.qcow2)
    before_base=$(sha256sum <base.qcow2)
    nbd_hold a.qcow2 -f qcow2
    local a=$NBD_PID
    nbd_hold base.qcow2 -f qcow2
    local b=$NBD_PID
    # qemu-img itself, for the record: the same refusal
    refused 1 "$WRITE_LOCK" qemu-img resize a.qcow2 128M
    refused 1 "$WRITE_LOCK" vd resize a.qcow2 128M
    grep -qF "qemu-nbd, pid $a" err.txt || { echo "holder not named"; return 1; }
    refused 1 "$WRITE_LOCK" vd snapshot -c s1 a.qcow2
    refused 1 "$WRITE_LOCK" vd snapshot -d s1 a.qcow2
    refused 1 "$WRITE_LOCK" vd convert -n -f raw -O qcow2 src.raw a.qcow2
    refused 1 "$WRITE_LOCK" vd create -f qcow2 a.qcow2 1M
    refused 1 "$WRITE_LOCK" vd create -f raw a.qcow2 1M
    refused 1 "$WRITE_LOCK" vd convert -f raw -O qcow2 src.raw a.qcow2
    refused 1 "$WRITE_LOCK" vd rebase -u -b "" a.qcow2
    refused 1 "$WRITE_LOCK" vd check -r all a.qcow2
    refused 1 "$WRITE_LOCK" vd check -r leaks a.qcow2
    # commit into a base that qemu-nbd writes; and of an overlay it writes
    refused 1 "$BUSY" vd commit top.qcow2
    refused 1 "$BUSY" vd commit a.qcow2
    refused 1 "$WRITE_LOCK" vd amend -o encrypt.keyslot=1,encrypt.state=inactive a.qcow2
    # created over: nothing was cut
    [[ -s a.qcow2 ]]
    stop "$a"
    stop "$b"
    [[ $(sha256sum <a.qcow2) == "$before" ]] || { echo "a.qcow2 changed under qemu-nbd"; return 1; }
    [[ $(sha256sum <base.qcow2) == "$before_base" ]] || { echo "base.qcow2 changed"; return 1; }
    qcheck a.qcow2
    # and once free, the same commands work again
    vd resize a.qcow2 128M
    [[ $(qinfo a.qcow2 virtual-size) == $((128 * 1048576)) ]]
}
case_run "qemu-nbd writes: vdisk's writes are refused, the image unchanged" \
    writes_refused_while_nbd_writes

reads_need_U_while_nbd_writes() {
    stop_holders_at_exit
    image_with_data a.qcow2
    qemu-img create -q -f qcow2 b.qcow2 64M
    nbd_hold a.qcow2 -f qcow2
    local a=$NBD_PID
    # qemu-img refuses the same reads
    refused 1 "$SHARED_LOCK" qemu-img info a.qcow2
    refused 1 "$SHARED_LOCK" vd info a.qcow2
    refused 1 "$SHARED_LOCK" vd map a.qcow2
    refused 2 "$SHARED_LOCK" vd compare a.qcow2 b.qcow2
    refused 1 "$SHARED_LOCK" vd check a.qcow2
    refused 1 "$SHARED_LOCK" vd convert -O raw a.qcow2 out.raw
    [[ ! -e out.raw ]]
    refused 1 "$SHARED_LOCK" vd snapshot -l a.qcow2
    # -U reads it, as qemu-img -U does
    vd info -U a.qcow2 >info.txt
    grep -q "virtual size: 64 MiB" info.txt
    vd info --force-share --output=json a.qcow2 >info.json
    [[ $(json info.json 'd["virtual-size"]') == 67108864 ]]
    vd map -U --output=json a.qcow2 >map.json
    qemu-img map -U --output=json a.qcow2 >qmap.json
    [[ $(merged_map map.json) == "$(merged_map qmap.json)" ]]
    expect_exit 1 vd compare -U a.qcow2 b.qcow2
    vd check -U a.qcow2
    vd snapshot -l -U a.qcow2
    vd convert -U -O raw a.qcow2 out.raw
    qemu-img compare -U -f qcow2 -F raw a.qcow2 out.raw
    # -U never writes: qemu-img's words
    refused 1 "force-share=on can only be used with read-only images" vd check -U -r all a.qcow2
    refused 1 "force-share=on can only be used with read-only images" vd snapshot -U -c s a.qcow2
    refused 1 "--force-share" vd resize -U a.qcow2 128M
    stop "$a"
}
case_run "qemu-nbd writes: vdisk reads only with -U, as qemu-img" reads_need_U_while_nbd_writes

reader_shares_with_readers() {
    stop_holders_at_exit
    image_with_data a.qcow2
    local before
    before=$(sha256sum <a.qcow2)
    nbd_hold a.qcow2 -f qcow2 -r
    local a=$NBD_PID
    qemu-img info a.qcow2 >/dev/null
    vd info a.qcow2 >/dev/null
    vd compare a.qcow2 a.qcow2
    vd convert -O raw a.qcow2 out.raw
    vd check a.qcow2
    refused 1 "$WRITE_LOCK" qemu-img resize a.qcow2 128M
    refused 1 "$WRITE_LOCK" vd resize a.qcow2 128M
    refused 1 "$WRITE_LOCK" vd snapshot -c s1 a.qcow2
    refused 1 "$WRITE_LOCK" vd create -f qcow2 a.qcow2 1M
    stop "$a"
    [[ $(sha256sum <a.qcow2) == "$before" ]]
}
case_run "qemu-nbd -r reads: vdisk reads too, but cannot write" reader_shares_with_readers

qemu_io_holder() {
    stop_holders_at_exit
    image_with_data a.qcow2
    local before
    before=$(sha256sum <a.qcow2)
    qemu-io -f qcow2 -c 'sleep 60000' a.qcow2 </dev/null >/dev/null 2>&1 &
    local q=$!
    wait_locked a.qcow2
    refused 1 "$WRITE_LOCK" vd resize a.qcow2 128M
    grep -qF "qemu-io, pid $q" err.txt || { echo "holder not named"; return 1; }
    refused 1 "$WRITE_LOCK" vd snapshot -c s1 a.qcow2
    refused 1 "$SHARED_LOCK" vd info a.qcow2
    vd info -U a.qcow2 >/dev/null
    stop "$q"
    [[ $(sha256sum <a.qcow2) == "$before" ]]
    # read-only qemu-io lets vdisk read, not write
    qemu-io -r -f qcow2 -c 'sleep 60000' a.qcow2 </dev/null >/dev/null 2>&1 &
    q=$!
    wait_locked a.qcow2
    vd info a.qcow2 >/dev/null
    refused 1 "$WRITE_LOCK" vd resize a.qcow2 128M
    stop "$q"
}
case_run "qemu-io holds the image" qemu_io_holder

storage_daemon_holder() {
    stop_holders_at_exit
    image_with_data a.qcow2
    qemu-storage-daemon --blockdev driver=file,node-name=f,filename=a.qcow2 \
        --blockdev driver=qcow2,node-name=q,file=f \
        --nbd-server addr.type=unix,addr.path="$PWD/qsd.sock" \
        --export type=nbd,id=e,node-name=q,writable=on </dev/null >/dev/null 2>&1 &
    local s=$!
    wait_locked a.qcow2
    refused 1 "$WRITE_LOCK" vd resize a.qcow2 128M
    refused 1 "$SHARED_LOCK" vd info a.qcow2
    vd info -U a.qcow2 >/dev/null
    stop "$s"
}
if command -v qemu-storage-daemon >/dev/null; then
    case_run "qemu-storage-daemon holds the image" storage_daemon_holder
else
    echo "skip qemu-storage-daemon holds the image: qemu-storage-daemon is not installed" \
        "(package qemu-system-common)"
fi

vdisk_holds_for_writing() {
    stop_holders_at_exit
    image_with_data a.qcow2
    hold a.qcow2 -w
    refused 1 "$WRITE_LOCK" qemu-img resize a.qcow2 128M
    refused 1 "$SHARED_LOCK" qemu-img info a.qcow2
    refused 1 "$WRITE_LOCK" qemu-io -f qcow2 -c 'read 0 512' a.qcow2
    refused 1 "$WRITE_LOCK" qemu-img create -f qcow2 a.qcow2 1M
    qemu-img info -U a.qcow2 >/dev/null
    # another vdisk, naming this one
    refused 1 "$WRITE_LOCK" vd resize a.qcow2 128M
    grep -qF "hold-image, pid $HOLD_PID" err.txt || { echo "holder not named"; return 1; }
    # a VM cannot start on it
    refused 1 "$WRITE_LOCK" qemu-nbd -k "$PWD/n.sock" -f qcow2 a.qcow2
    release
    qemu-img info a.qcow2 >/dev/null
}
case_run "vdisk holds an image for writing: QEMU is refused" vdisk_holds_for_writing

vdisk_holds_for_reading() {
    stop_holders_at_exit
    image_with_data a.qcow2
    hold a.qcow2
    qemu-img info a.qcow2 >/dev/null
    qemu-io -r -f qcow2 -c 'read -P 7 0 512' a.qcow2 >/dev/null
    refused 1 "$WRITE_LOCK" qemu-img resize a.qcow2 128M
    refused 1 "$WRITE_LOCK" qemu-io -f qcow2 -c 'read 0 512' a.qcow2
    release
    # force-share holds nothing that refuses a writer
    hold a.qcow2 -U
    qemu-io -f qcow2 -c 'write -P 3 0 512' a.qcow2 >/dev/null
    release
    # and force-share cannot write
    not "$HOLD_IMAGE" -w -U a.qcow2 </dev/null 2>err.txt
    grep -qF "force-share=on can only be used with read-only images" err.txt
}
case_run "vdisk holds an image for reading: QEMU reads, cannot write" vdisk_holds_for_reading

backing_files_locked() {
    stop_holders_at_exit
    qemu-img create -q -f qcow2 base.qcow2 64M
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    # qemu-nbd writes the base: writing the overlay (which reads the base)
    # is refused as qemu-io's is
    nbd_hold base.qcow2 -f qcow2
    local b=$NBD_PID
    refused 1 "$SHARED_LOCK" qemu-io -f qcow2 -c 'read 0 512' top.qcow2
    refused 1 "$SHARED_LOCK" vd rebase -b "" top.qcow2
    grep -q "base.qcow2" err.txt
    refused 1 "$SHARED_LOCK" vd convert -O raw top.qcow2 out.raw
    vd convert -U -O raw top.qcow2 out.raw
    stop "$b"
    # vdisk writes the overlay: its base is locked for reading
    hold top.qcow2 -w
    refused 1 "$WRITE_LOCK" qemu-io -f qcow2 -c 'write 0 512' base.qcow2
    refused 1 "$WRITE_LOCK" vd resize base.qcow2 128M
    qemu-img info base.qcow2 >/dev/null
    release
    # commit writes the base through its own handle: not refused by itself
    qio qcow2 top.qcow2 "write -P 5 0 64k"
    vd commit top.qcow2
    qio qcow2 base.qcow2 "read -P 5 0 64k"
}
case_run "backing files are locked for reading" backing_files_locked

locking_off() {
    stop_holders_at_exit
    image_with_data a.qcow2
    nbd_hold a.qcow2 -f qcow2
    local a=$NBD_PID
    vd info --image-opts driver=qcow2,file.filename=a.qcow2,file.locking=off >info.txt 2>err.txt
    grep -q "virtual size: 64 MiB" info.txt
    [[ ! -s err.txt ]] || { echo "locking=off printed: $(cat err.txt)"; return 1; }
    vd map --image-opts driver=qcow2,file.filename=a.qcow2,locking=off >/dev/null
    refused 1 "locking must be" vd info --image-opts driver=qcow2,file.filename=a.qcow2,file.locking=maybe
    stop "$a"
    # nothing held with -n: qemu-img resizes while hold-image has it open
    hold a.qcow2 -w -n
    qemu-img resize a.qcow2 128M
    release
}
case_run "locking=off proceeds without a word" locking_off

same_process_opens() {
    stop_holders_at_exit
    image_with_data a.qcow2
    vd compare a.qcow2 a.qcow2
    vd convert -O qcow2 a.qcow2 b.qcow2
    vd compare a.qcow2 b.qcow2
    # nothing stays locked after vdisk exits
    not holds a.qcow2
    not holds b.qcow2
}
case_run "opens inside one vdisk share reads; nothing stays locked" same_process_opens

finish
