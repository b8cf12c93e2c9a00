#!/usr/bin/env bash
# Durable by default: every vdisk command that writes ends with what it
# wrote on stable storage (an fdatasync or fsync of each file after its last
# write, and an fsync of the folder that gained a new file) before it
# reports success; -t unsafe waits for nothing. Checked on the system calls
# themselves, traced with strace -y (strace-syncs.py reads the trace), and
# the images still pass qemu-img check and compare.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs
if ! command -v strace >/dev/null; then
    echo "strace not found (scripts/deps.sh installs it): the durability checks are skipped"
    exit 77
fi
# Under valgrind strace would trace valgrind; the checks need vdisk itself.
if [[ -n $VDISK_WRAPPER ]]; then
    echo "VDISK_WRAPPER is set: the durability checks trace vdisk alone and are skipped"
    exit 77
fi

SYSCALLS=openat,pwrite64,pwritev,pwritev2,write,writev,ftruncate,fallocate,copy_file_range,ioctl,fdatasync,fsync,rename,renameat,renameat2

# traced ARGS...: vdisk ARGS under strace, the trace in ./trace.
traced() {
    timeout -k 5 "$VDISK_TIMEOUT" strace -f -y -s 0 -o trace -e trace="$SYSCALLS" "$VDISK" "$@"
}
# syncs synced|created|unsynced|count FILE...: see strace-syncs.py.
syncs() { "$PY" "$TESTS_DIR/interop/strace-syncs.py" trace "$@"; }

# ---- convert ----

convert_default() {
    local fmt=$1
    shift
    pattern_raw src.raw 8M
    traced convert -q "$@" -f raw -O "$fmt" src.raw "out.$fmt"
    syncs synced "out.$fmt"
    syncs created "out.$fmt"
    same_guest src.raw raw "out.$fmt" "$fmt"
}
case_run "convert to qcow2 syncs the target and its folder" convert_default qcow2
case_run "convert to raw syncs the target and its folder" convert_default raw
case_run "convert to vdi syncs the target and its folder" convert_default vdi
case_run "convert to vmdk syncs the target and its folder" convert_default vmdk
case_run "convert -c to qcow2 syncs the target" convert_default qcow2 -c
case_run "convert -c to vmdk streamOptimized syncs the target" \
    convert_default vmdk -c -o subformat=streamOptimized

convert_vmdk_extents() {
    pattern_raw src.raw 8M
    traced convert -q -f raw -O vmdk -o subformat=twoGbMaxExtentFlat src.raw d.vmdk
    syncs synced d.vmdk d-f001.vmdk
    syncs created d.vmdk d-f001.vmdk
    same_guest src.raw raw d.vmdk vmdk
}
case_run "convert to a split vmdk syncs every extent" convert_vmdk_extents

convert_unsafe() {
    pattern_raw src.raw 8M
    traced convert -q -t unsafe -f raw -O qcow2 src.raw out.qcow2
    syncs unsynced out.qcow2
    qcheck out.qcow2
    same_guest src.raw raw out.qcow2 qcow2
}
case_run "convert -t unsafe syncs nothing" convert_unsafe

convert_unsafe_vmdk() {
    pattern_raw src.raw 8M
    traced convert -q -t unsafe -f raw -O vmdk -o subformat=twoGbMaxExtentSparse src.raw d.vmdk
    syncs unsynced d.vmdk d-s001.vmdk
    same_guest src.raw raw d.vmdk vmdk
}
case_run "convert -t unsafe to a split vmdk syncs no extent" convert_unsafe_vmdk

convert_modes() {
    pattern_raw src.raw 8M
    local mode n
    traced convert -q -f raw -O qcow2 src.raw base.qcow2
    local plain
    plain=$(syncs count base.qcow2)
    for mode in writeback none writethrough directsync; do
        traced convert -q -t "$mode" -f raw -O qcow2 src.raw "$mode.qcow2"
        syncs synced "$mode.qcow2"
        syncs created "$mode.qcow2"
        same_guest src.raw raw "$mode.qcow2" qcow2
        n=$(syncs count "$mode.qcow2")
        case $mode in
        writethrough | directsync)
            ((n > plain)) || { echo "-t $mode: $n syncs, no more than the default's $plain"; return 1; } ;;
        *)
            ((n == plain)) || { echo "-t $mode: $n syncs, the default made $plain"; return 1; } ;;
        esac
    done
}
case_run "convert -t writeback/none/writethrough/directsync" convert_modes

convert_existing() {
    pattern_raw src.raw 8M
    qemu-img create -q -f qcow2 out.qcow2 8M
    traced convert -q -n -f raw -O qcow2 src.raw out.qcow2
    syncs synced out.qcow2
    same_guest src.raw raw out.qcow2 qcow2
}
case_run "convert -n syncs the existing target" convert_existing

convert_refuses() {
    qemu-img create -q -f raw src.raw 1M
    expect_exit 1 vd convert -t sometimes -O qcow2 src.raw a.qcow2 2>err
    grep -q "Invalid cache option: sometimes" err
    expect_exit 1 vd convert -T sometimes -O qcow2 src.raw a.qcow2 2>err
    grep -q "Invalid source cache option: sometimes" err
    [[ ! -e a.qcow2 ]]
    vd convert -T none -O qcow2 src.raw a.qcow2
    expect_exit 1 vd commit -t sometimes a.qcow2 2>err
    grep -q "Invalid cache option: sometimes" err
}
case_run "bad -t/-T are refused clearly" convert_refuses

convert_stale_partials() {
    pattern_raw src.raw 4M
    # what a killed convert left: its process is gone
    sh -c 'exit 0' & local dead=$!
    wait "$dead"
    echo half >".out.qcow2.partial-$dead"
    mkdir ".out.vmdk.partial-$dead" && echo half >".out.vmdk.partial-$dead/out-flat.vmdk"
    # a running convert's file is kept
    sleep 30 & local alive=$!
    echo busy >".out.qcow2.partial-$alive"
    "$VDISK" convert -q -f raw -O qcow2 src.raw out.qcow2
    "$VDISK" convert -q -f raw -O vmdk src.raw out.vmdk
    kill "$alive"
    [[ ! -e .out.qcow2.partial-$dead && ! -e .out.vmdk.partial-$dead ]] || { ls -a; return 1; }
    [[ -e .out.qcow2.partial-$alive ]]
    same_guest src.raw raw out.qcow2 qcow2
}
case_run "convert removes what a killed convert to the same target left" convert_stale_partials

# ---- create, resize, snapshots ----

create_syncs() {
    local fmt=$1
    traced create -q -f "$fmt" "new.$fmt" 64M
    syncs synced "new.$fmt"
    syncs created "new.$fmt"
    qemu-img info -f "$fmt" "new.$fmt" >/dev/null
}
case_run "create qcow2 syncs the image and its folder" create_syncs qcow2
case_run "create raw syncs the image and its folder" create_syncs raw
case_run "create vdi syncs the image and its folder" create_syncs vdi
case_run "create vmdk syncs the image and its folder" create_syncs vmdk

resize_syncs() {
    local fmt=$1
    qemu-img create -q -f "$fmt" "r.$fmt" 16M
    traced resize -q -f "$fmt" "r.$fmt" 32M
    syncs synced "r.$fmt"
    [[ $(qinfo "r.$fmt" virtual-size) == $((32 * 1048576)) ]]
}
case_run "resize qcow2 syncs the image" resize_syncs qcow2
case_run "resize raw syncs the image" resize_syncs raw

snapshot_syncs() {
    qemu-img create -q -f qcow2 s.qcow2 16M
    qio qcow2 s.qcow2 "write -P 1 0 1M"
    traced snapshot -c one s.qcow2
    syncs synced s.qcow2
    qio qcow2 s.qcow2 "write -P 2 0 1M"
    traced snapshot -a one s.qcow2
    syncs synced s.qcow2
    qio qcow2 s.qcow2 "read -P 1 0 1M"
    traced snapshot -d one s.qcow2
    syncs synced s.qcow2
    qcheck s.qcow2
    [[ -z $(qemu-img snapshot -l s.qcow2) ]]
}
case_run "snapshot -c/-a/-d sync the image" snapshot_syncs

# ---- commit, rebase, amend, check -r ----

commit_syncs() {
    qemu-img create -q -f qcow2 base.qcow2 16M
    qio qcow2 base.qcow2 "write -P 1 0 4M"
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    qio qcow2 top.qcow2 "write -P 2 1M 1M"
    traced commit -q top.qcow2
    syncs synced base.qcow2 top.qcow2
    qio qcow2 base.qcow2 "read -P 2 1M 1M" "read -P 1 2M 2M"
    qcheck base.qcow2
    qcheck top.qcow2
}
case_run "commit syncs the base and the emptied overlay" commit_syncs

rebase_syncs() {
    qemu-img create -q -f qcow2 old.qcow2 16M
    qio qcow2 old.qcow2 "write -P 1 0 4M"
    qemu-img create -q -f qcow2 new.qcow2 16M
    qemu-img create -q -f qcow2 -b old.qcow2 -F qcow2 top.qcow2
    traced rebase -q -b new.qcow2 -F qcow2 top.qcow2
    syncs synced top.qcow2
    qio qcow2 top.qcow2 "read -P 1 0 4M"
    [[ $(qinfo top.qcow2 backing-filename) == new.qcow2 ]]
    qemu-img create -q -f qcow2 -b old.qcow2 -F qcow2 top2.qcow2
    traced rebase -q -t unsafe -b new.qcow2 -F qcow2 top2.qcow2
    syncs unsynced top2.qcow2
    qio qcow2 top2.qcow2 "read -P 1 0 4M"
}
case_run "rebase syncs the image (-t unsafe does not)" rebase_syncs

amend_syncs() {
    printf 'correct horse battery' >pass
    printf 'second passphrase' >pass2
    local sec="secret,id=sec0,file=$PWD/pass" sec2="secret,id=sec1,file=$PWD/pass2"
    qemu_img_luks create -q --object "$sec" -f qcow2 \
        -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 e.qcow2 4M
    traced amend --object "$sec" --object "$sec2" \
        -o encrypt.state=active,encrypt.new-secret=sec1,encrypt.old-secret=sec0,encrypt.iter-time=10 e.qcow2
    syncs synced e.qcow2
    qemu-img check -q --object "$sec2" --image-opts \
        "driver=qcow2,encrypt.key-secret=sec1,file.filename=e.qcow2"
}
case_run "amend (a LUKS key slot) syncs the image" amend_syncs

check_repair_syncs() {
    qemu-img create -q -f qcow2 c.qcow2 16M
    qio qcow2 c.qcow2 "write -P 1 0 1M"
    # a leaked cluster: appended, counted in the refcounts, used by nothing
    "$PY" - c.qcow2 <<'PY'
import os, struct, sys
path = sys.argv[1]
with open(path, "r+b") as f:
    hdr = f.read(104)
    cs = 1 << struct.unpack(">I", hdr[20:24])[0]
    rt_off = struct.unpack(">Q", hdr[48:56])[0]
    end = (os.path.getsize(path) + cs - 1) // cs * cs
    f.truncate(end + cs)
    f.seek(rt_off)
    block = struct.unpack(">Q", f.read(8))[0]
    f.seek(block + 2 * (end // cs))
    f.write(struct.pack(">H", 1))
PY
    expect_exit 3 qemu-img check -q c.qcow2
    traced check -q -r all c.qcow2
    syncs synced c.qcow2
    qcheck c.qcow2
}
case_run "check -r syncs what it repaired" check_repair_syncs

# ---- dd, bitmap ----

dd_syncs() {
    local fmt=$1
    pattern_raw src.raw 8M
    traced dd -f raw -O "$fmt" bs=64k skip=2 if=src.raw "of=out.$fmt"
    syncs synced "out.$fmt"
    syncs created "out.$fmt"
    qemu-img dd -f raw -O "$fmt" bs=64k skip=2 if=src.raw "of=q.$fmt"
    same_guest "q.$fmt" "$fmt" "out.$fmt" "$fmt"
}
case_run "dd to raw syncs the output and its folder" dd_syncs raw
case_run "dd to qcow2 syncs the output and its folder" dd_syncs qcow2

bitmap_syncs() {
    qemu-img create -q -f qcow2 b.qcow2 16M
    qemu-img bitmap --add b.qcow2 b0
    qio qcow2 b.qcow2 "write -P 1 0 1M"
    local op
    for op in "--add b1" "--merge b0 b1" "--disable b0" "--clear b0" "--remove b0"; do
        set -- $op
        # the file goes before the bitmap's name
        traced bitmap "${@:1:$#-1}" b.qcow2 "${!#}"
        syncs synced b.qcow2
        qcheck b.qcow2
    done
}
case_run "bitmap syncs each change" bitmap_syncs

finish
