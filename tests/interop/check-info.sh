#!/usr/bin/env bash
# check and info of vmdk and vdi images beside qemu-img's: the same lines
# and keys in the same order (check: no cluster counts or end offset where
# qemu-img has none; info: the extents' keys in qemu-img's order), the same
# exit codes. On images qemu-img makes (every vmdk subformat, dynamic and
# static VDIs, with data) and on the real images of other producers in
# shared/fixtures/real.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

REAL=${VDISK_REAL_FIXTURES:-$REPO/../shared/fixtures/real}

# images: qemu-img's vmdk and vdi images with some data, and the real
# ones of those formats the manifest says vdisk reads whole.
images() {
    local sub
    for sub in monolithicSparse streamOptimized twoGbMaxExtentSparse twoGbMaxExtentFlat monolithicFlat; do
        qemu-img create -q -f vmdk -o subformat=$sub "q-$sub.vmdk" 3G
    done
    qio vmdk q-monolithicSparse.vmdk 'write -P 1 0 1M' 'write -P 2 2G 64k'
    qio vmdk q-twoGbMaxExtentSparse.vmdk 'write -P 3 2047M 2M'
    qemu-img create -q -f vdi q-dynamic.vdi 10M
    qio vdi q-dynamic.vdi 'write -P 4 0 3M'
    qemu-img create -q -f vdi -o static=on q-static.vdi 4M
    if [[ ! -f $REAL/MANIFEST.tsv ]]; then
        echo "no real fixtures at $REAL: only qemu-img's images"
        return 0
    fi
    local file producer source license sha fmt mode expect
    while IFS=$'\t' read -r file producer source license sha fmt mode expect; do
        [[ $file == \#* || $file == file || $mode != full ]] && continue
        [[ $fmt == vmdk || $fmt == vdi ]] || continue
        case $file in
            *.xz) xz -dc "$REAL/$file" >"real-${file%.xz}" ;;
            *) cp "$REAL/$file" "real-$file" ;;
        esac
    done <"$REAL/MANIFEST.tsv"
}

# same_output WHAT FILE CMD...: qemu-img CMD and vdisk CMD print the same
# stdout (the disk's usage on the host aside) and exit alike.
same_output() {
    local what=$1 f=$2 qrc=0 vrc=0
    shift 2
    qemu-img "$@" "$f" 2>/dev/null | grep -v -e '^disk size:' -e '"actual-size":' >q.out || qrc=$?
    vd "$@" "$f" 2>/dev/null | grep -v -e '^disk size:' -e '"actual-size":' >v.out || vrc=$?
    [[ $qrc == "$vrc" ]] || { echo "$what $f: qemu-img exit $qrc, vdisk $vrc"; return 1; }
    diff -u q.out v.out || { echo "$what $f: output differs"; return 1; }
}

check_as_qemu() {
    images
    local f n=0
    for f in q-*.vmdk q-*.vdi real-*; do
        [[ $f == *-s0[0-9][0-9].vmdk || $f == *-f0[0-9][0-9].vmdk || $f == *-flat.vmdk ]] && continue
        same_output check "$f" check --output=json
        same_output check "$f" check
        n=$((n + 1))
    done
    ((n >= 7)) || { echo "only $n images checked"; return 1; }
}
case_run "check of vmdk and vdi prints what qemu-img prints" check_as_qemu

info_as_qemu() {
    images
    local f
    for f in q-*.vmdk real-*.vmdk; do
        [[ $f == *-s0[0-9][0-9].vmdk || $f == *-f0[0-9][0-9].vmdk || $f == *-flat.vmdk ]] && continue
        [[ -e $f ]] || continue
        same_output info "$f" info
        same_output info "$f" info --output=json
    done
}
case_run "info of vmdk extents in qemu-img's order" info_as_qemu

# An extent is named by the descriptor's folder as the image was named
# ("sub/t-s001.vmdk" for "sub/t.vmdk"), in info and in map's File column.
extent_names_as_qemu() {
    mkdir sub
    local sub
    for sub in twoGbMaxExtentSparse twoGbMaxExtentFlat monolithicSparse; do
        qemu-img create -q -f vmdk -o subformat=$sub "sub/$sub.vmdk" 5G
        qio vmdk "sub/$sub.vmdk" 'write -P 1 65024 1k' 'write -P 2 2147483136 1k' 'write 5368643584 1k'
        same_output info "sub/$sub.vmdk" info
        same_output info "sub/$sub.vmdk" info --output=json
        same_output map "sub/$sub.vmdk" map
        same_output info "$PWD/sub/$sub.vmdk" info
        same_output map "$PWD/sub/$sub.vmdk" map
    done
    vd map sub/twoGbMaxExtentSparse.vmdk | grep -q 'sub/twoGbMaxExtentSparse-s002.vmdk$'
}
case_run "vmdk extents named beside the descriptor as qemu-img names them" extent_names_as_qemu

# Under the name qemu-img, info of a VDI is qemu-img's to the line: no
# format-specific section (vdisk's own name shows the VirtualBox UUIDs).
vdi_info_as_qemu_img() {
    mkdir bin
    ln -s "$VDISK" bin/qemu-img
    qemu-img create -q -f vdi d.vdi 10M
    qio vdi d.vdi 'write -P 4 0 1M'
    local o
    for o in human json; do
        qemu-img info --output=$o d.vdi | grep -v -e '^disk size:' -e '"actual-size":' >q.out
        bin/qemu-img info --output=$o d.vdi | grep -v -e '^disk size:' -e '"actual-size":' >v.out
        diff -u q.out v.out
    done
    vd info --output=json d.vdi | grep -q '"image-uuid"'
}
case_run "info of a VDI under the name qemu-img is qemu-img's" vdi_info_as_qemu_img

finish
