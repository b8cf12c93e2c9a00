#!/usr/bin/env bash
# Encrypted images against qemu-img: LUKS qcow2 and raw LUKS made by each
# side read identically by the other (every cipher, mode, IV generator and
# hash qemu-img offers that OpenSSL has), qemu-img check clean, raw LUKS
# headers accepted by cryptsetup, legacy AES qcow/qcow2 rescued, made and
# written as qemu-img does, key slots
# added and removed with amend, and clear errors for wrong or missing keys.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

# qemu-img's PBKDF2 calibration fails now and then on a loaded machine.
retry() {
    local i
    for ((i = 1; i < 10; i++)); do "$@" && return 0; sleep 1; done
    "$@"
}
export -f retry

setup_secrets() {
    printf 'correct horse battery' >pass
    printf 'second passphrase' >pass2
    printf 'Zq9-not-the-key' >wrong
    SEC="secret,id=sec0,file=$PWD/pass"
    SEC2="secret,id=sec1,file=$PWD/pass2"
    BAD="secret,id=sec0,file=$PWD/wrong"
}

qcow2_opts() { echo "driver=qcow2,encrypt.key-secret=${2:-sec0},file.filename=$1"; }
luks_opts() { echo "driver=luks,key-secret=${2:-sec0},file.filename=$1"; }

VARIANTS=(
    ""
    "cipher-alg=aes-128"
    "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256"
    "cipher-alg=aes-256,cipher-mode=cbc,ivgen-alg=plain64"
    "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=plain"
    "cipher-alg=aes-256,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha1"
    "hash-alg=sha512"
    "hash-alg=sha384"
    "cipher-mode=ecb"
)

# prefix "encrypt." onto each key of a variant
with_prefix() { [[ -z $1 ]] || echo "$1" | sed 's/\([^,=]*\)=/encrypt.\1=/g'; }

luks_qcow2_from_qemu() {
    setup_secrets
    pattern_raw src.raw 8M
    local o
    o=$(with_prefix "$1")
    retry qemu-img convert --object "$SEC" -f raw -O qcow2 \
        -o "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=50${o:+,$o}" src.raw e.qcow2
    vd convert --object "$SEC" --image-opts "$(qcow2_opts e.qcow2)" -O raw back.raw
    cmp src.raw back.raw
    # and qemu-io writes at odd places read back alike
    qemu-io --object "$SEC" --image-opts -c 'write -P 7 1536 3584' -c 'write -P 8 7M 512' \
        "$(qcow2_opts e.qcow2)" >/dev/null
    retry qemu-img convert --object "$SEC" --image-opts "$(qcow2_opts e.qcow2)" -O raw q.raw
    vd convert --object "$SEC" --image-opts "$(qcow2_opts e.qcow2)" -O raw v.raw
    cmp q.raw v.raw
}

luks_qcow2_from_vdisk() {
    setup_secrets
    pattern_raw src.raw 8M
    local o
    o=$(with_prefix "$1")
    vd convert --object "$SEC" -f raw -O qcow2 \
        -o "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=50${o:+,$o}" src.raw v.qcow2
    qemu-img check --object "$SEC" --image-opts "$(qcow2_opts v.qcow2)"
    qemu-img convert --object "$SEC" --image-opts "$(qcow2_opts v.qcow2)" -O raw q.raw
    cmp src.raw q.raw
    not grep -q "correct horse" v.qcow2
    not grep -q "the quick brown fox" v.qcow2
}

raw_luks_both_ways() {
    setup_secrets
    pattern_raw src.raw 8M
    vd convert --object "$SEC" -f raw -O luks -o "key-secret=sec0,iter-time=50${1:+,$1}" src.raw v.luks
    qemu-img convert --object "$SEC" --image-opts "$(luks_opts v.luks)" -O raw q.raw
    cmp src.raw q.raw
    if command -v cryptsetup >/dev/null; then
        cryptsetup luksDump v.luks | grep -q '^Version:.*1'
        cryptsetup open --test-passphrase --key-file pass v.luks
        not cryptsetup open --test-passphrase --key-file wrong v.luks
    fi
    retry qemu-img convert --object "$SEC" -f raw -O luks -o "key-secret=sec0,iter-time=50${1:+,$1}" \
        src.raw q.luks
    vd convert --object "$SEC" --image-opts "$(luks_opts q.luks)" -O raw back.raw
    cmp src.raw back.raw
}

legacy_aes() {
    local fmt=$1
    setup_secrets
    retry qemu-img create -q -f "$fmt" --object "$SEC" -o encrypt.format=aes,encrypt.key-secret=sec0 \
        "old.$fmt" 16M
    qemu-io --object "$SEC" --image-opts -c 'write -P 9 0 3M' -c 'write -P 10 9M 1M' \
        -c 'write -P 11 12345 777' "driver=$fmt,encrypt.key-secret=sec0,file.filename=old.$fmt" >/dev/null
    qemu-img convert --object "$SEC" --image-opts "driver=$fmt,encrypt.key-secret=sec0,file.filename=old.$fmt" \
        -O raw expect.raw
    vd convert --object "$SEC" --image-opts "driver=$fmt,encrypt.key-secret=sec0,file.filename=old.$fmt" \
        -O raw got.raw
    cmp expect.raw got.raw
    vd info "old.$fmt" | grep -q '^encrypted: yes'
    # rescued into LUKS
    vd convert --object "$SEC" --image-opts "driver=$fmt,encrypt.key-secret=sec0,file.filename=old.$fmt" \
        -O qcow2 -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=50 new.qcow2
    qemu-img compare --object "$SEC" --image-opts "$(qcow2_opts new.qcow2)" "driver=raw,file.filename=expect.raw"
    # written in place by vdisk, read by qemu-img
    pattern_raw src.raw 16M
    vd convert -n --object "$SEC" -f raw --target-image-opts src.raw \
        "driver=$fmt,encrypt.key-secret=sec0,file.filename=old.$fmt"
    qemu-img compare --object "$SEC" --image-opts \
        "driver=$fmt,encrypt.key-secret=sec0,file.filename=old.$fmt" "driver=raw,file.filename=src.raw"
}

# Legacy AES made by vdisk, as qemu-img makes it (qemu-iotests 134, 158):
# the same file byte for byte; a warning that names LUKS under vdisk's name
# and nothing under qemu-img's; data written by either side read alike by
# both, on its own and below an encrypted overlay.
legacy_aes_created() {
    local fmt=$1 o
    setup_secrets
    qemu-img create -q -f "$fmt" --object "$SEC" -o encrypt.format=aes,encrypt.key-secret=sec0 "q.$fmt" 16M
    vd create -q -f "$fmt" --object "$SEC" -o encrypt.format=aes,encrypt.key-secret=sec0 "v.$fmt" 16M 2>err
    cmp "q.$fmt" "v.$fmt"
    grep -q 'warning: legacy AES.*-o encrypt.format=luks' err
    (($(wc -l <err) == 1))
    vd create -q -f "$fmt" --object "$SEC" -o encryption=on,encrypt.key-secret=sec0 "on.$fmt" 16M 2>/dev/null
    cmp "q.$fmt" "on.$fmt"
    qvd create -f "$fmt" --object "$SEC" -o encryption=on,encrypt.key-secret=sec0 "qv.$fmt" 16M \
        >out 2>err
    [[ ! -s err ]]
    grep -q "^Formatting 'qv.$fmt', fmt=$fmt .*encryption=on encrypt.key-secret=sec0" out
    cmp "q.$fmt" "qv.$fmt"
    fails_cleanly vd create -f "$fmt" -o encryption=on "nokey.$fmt" 16M
    [[ ! -e nokey.$fmt ]]
    # vdisk writes, qemu-io writes at odd places over it, both read the same
    o="driver=$fmt,encrypt.key-secret=sec0,file.filename=v.$fmt"
    pattern_raw src.raw 16M
    vd convert -n --object "$SEC" -f raw --target-image-opts src.raw "$o"
    qemu-img compare --object "$SEC" --image-opts "$o" "driver=raw,file.filename=src.raw"
    qemu-io --object "$SEC" --image-opts -c 'write -P 7 1536 3584' -c 'write -P 8 12345 777' "$o" >/dev/null
    qemu-img convert --object "$SEC" --image-opts "$o" -O raw q.raw
    vd convert --object "$SEC" --image-opts "$o" -O raw v.raw
    cmp q.raw v.raw
    # an encrypted overlay made by vdisk on the base, written by qemu-io
    vd create -q -f "$fmt" --object "$SEC" -u -b "v.$fmt" -F "$fmt" \
        -o encrypt.format=aes,encrypt.key-secret=sec0 "top.$fmt" 16M 2>/dev/null
    o="driver=$fmt,file.filename=top.$fmt,encrypt.key-secret=sec0,backing.encrypt.key-secret=sec0"
    qemu-io --object "$SEC" --image-opts -c 'write -P 14 0 1024' -c 'write -P 15 70000 5000' "$o" >/dev/null
    qemu-img convert --object "$SEC" --image-opts "$o" -O raw q.raw
    vd convert --object "$SEC" --image-opts "$o" -O raw v.raw
    cmp q.raw v.raw
    # compressed clusters would lie in the clear: refused, as for LUKS
    fails_cleanly vd convert -c --object "$SEC" -f raw -O "$fmt" \
        -o encrypt.format=aes,encrypt.key-secret=sec0 src.raw c."$fmt"
}

# Preallocated LUKS qcow2 (qemu-iotests 188): laid out as qemu-img lays it
# out (the clusters first, the LUKS header after them), clean for qemu-img
# check; the clusters decrypt to noise, so a copy into one writes its zeroes.
preallocated_luks() {
    setup_secrets
    local m o
    for m in metadata falloc full; do
        qemu_img_luks create -q -f qcow2 --object "$SEC" \
            -o "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=50,preallocation=$m" "q-$m.qcow2" 4M
        vd create -q -f qcow2 --object "$SEC" \
            -o "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=50,preallocation=$m" "v-$m.qcow2" 4M
        o="driver=qcow2,encrypt.key-secret=sec0,file.filename=v-$m.qcow2"
        qemu-img check -q --object "$SEC" --image-opts "$o"
        [[ $(stat -c %s "v-$m.qcow2") == $(stat -c %s "q-$m.qcow2") ]]
        qemu-img map --output=json --object "$SEC" --image-opts "$o" >v.map
        qemu-img map --output=json --object "$SEC" --image-opts "$(qcow2_opts "q-$m.qcow2")" >q.map
        diff q.map v.map
    done
    # metadata: the same clusters hold metadata in both files
    "$PY" - q-metadata.qcow2 v-metadata.qcow2 <<'PY'
import sys
a, b = (open(n, "rb").read() for n in sys.argv[1:])
used = lambda d: [i for i in range(len(d) // 65536) if d[i * 65536:(i + 1) * 65536].strip(b"\0")]
assert used(a) == used(b), (used(a), used(b))
assert a[:5 * 65536] == b[:5 * 65536]
PY
    qemu-img create -q -f raw empty.raw 4M
    vd convert --object "$SEC" -O qcow2 \
        -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=50,preallocation=metadata empty.raw c.qcow2
    qemu-img compare --object "$SEC" --image-opts "driver=raw,file.filename=empty.raw" "$(qcow2_opts c.qcow2)"
}

wrong_or_missing_key() {
    setup_secrets
    pattern_raw src.raw 4M
    retry qemu-img convert --object "$SEC" -f raw -O qcow2 \
        -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=50 src.raw e.qcow2
    fails_cleanly vd convert --object "$BAD" --image-opts "$(qcow2_opts e.qcow2)" -O raw out.raw 2>err
    grep -q 'no key slot matches the passphrase' err
    not grep -q 'Zq9-not-the-key' err
    [[ ! -e out.raw ]]
    fails_cleanly vd convert -O raw e.qcow2 out.raw 2>err
    grep -q 'is encrypted' err
    [[ ! -e out.raw ]]
    fails_cleanly vd convert --image-opts "$(qcow2_opts e.qcow2 nosuch)" -O raw out.raw
    [[ ! -e out.raw ]]
    # a passphrase file works as well as a secret object
    vd convert --passphrase-file pass -O raw e.qcow2 out.raw
    cmp src.raw out.raw
    # compression and encryption do not mix
    fails_cleanly vd convert -c --object "$SEC" -O qcow2 -o encrypt.format=luks,encrypt.key-secret=sec0 \
        src.raw c.qcow2
    [[ ! -e c.qcow2 ]]
    # aes-192 key slots end in a part sector, which qemu-img aborts on
    fails_cleanly vd convert --object "$SEC" -O qcow2 \
        -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.cipher-alg=aes-192,encrypt.cipher-mode=cbc \
        src.raw c.qcow2
    [[ ! -e c.qcow2 ]]
    fails_cleanly vd convert --object "$SEC" -O qcow2 \
        -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.cipher-alg=twofish-256 src.raw c.qcow2
    [[ ! -e c.qcow2 ]]
}

info_shows_encryption() {
    setup_secrets
    vd create -q -f qcow2 --object "$SEC" -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=50 \
        e.qcow2 16M
    vd info e.qcow2 | grep -q '^encrypted: yes'
    vd info --output=json e.qcow2 >i.json
    [[ $(json i.json 'd["encrypted"]') == True ]]
    [[ $(json i.json 'd["format-specific"]["data"]["encrypt"]["format"]') == luks ]]
    [[ $(json i.json 'd["format-specific"]["data"]["encrypt"]["cipher-alg"]') == aes-256 ]]
    qemu-img info --output=json e.qcow2 >q.json
    [[ $(json q.json 'd["format-specific"]["data"]["encrypt"]["payload-offset"]') == \
        $(json i.json 'd["format-specific"]["data"]["encrypt"]["payload-offset"]') ]]
}

amend_key_slots() {
    setup_secrets
    pattern_raw src.raw 4M
    vd convert --object "$SEC" -f raw -O qcow2 \
        -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=50 src.raw v.qcow2
    vd amend --object "$SEC" --object "$SEC2" \
        -o encrypt.state=active,encrypt.new-secret=sec1,encrypt.old-secret=sec0,encrypt.iter-time=50 v.qcow2
    qemu-img convert --object "$SEC2" --image-opts "$(qcow2_opts v.qcow2 sec1)" -O raw q.raw
    cmp src.raw q.raw
    vd amend --object "$SEC2" --image-opts -o encrypt.state=inactive,encrypt.keyslot=0 \
        "$(qcow2_opts v.qcow2 sec1)"
    not qemu-img convert --object "$SEC" --image-opts "$(qcow2_opts v.qcow2)" -O raw x.raw
    fails_cleanly vd amend --object "$SEC2" -o encrypt.state=inactive,encrypt.old-secret=sec1 v.qcow2
    qemu-img check --object "$SEC2" --image-opts "$(qcow2_opts v.qcow2 sec1)"
    # and a slot qemu-img adds opens in vdisk
    retry qemu-img amend --object "$SEC2" --object "$SEC" --image-opts \
        -o encrypt.state=active,encrypt.new-secret=sec0,encrypt.iter-time=50 "$(qcow2_opts v.qcow2 sec1)"
    vd convert --object "$SEC" --image-opts "$(qcow2_opts v.qcow2)" -O raw back.raw
    cmp src.raw back.raw
    # raw luks too
    vd convert --object "$SEC" -f raw -O luks -o key-secret=sec0,iter-time=50 src.raw v.luks
    vd amend --object "$SEC" --object "$SEC2" -o state=active,new-secret=sec1,old-secret=sec0,iter-time=50 v.luks
    qemu-img convert --object "$SEC2" --image-opts "$(luks_opts v.luks sec1)" -O raw q2.raw
    cmp src.raw q2.raw
}

resize_snapshot_backing() {
    setup_secrets
    pattern_raw src.raw 4M
    vd convert --object "$SEC" -f raw -O qcow2 \
        -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=50 src.raw v.qcow2
    vd snapshot --object "$SEC" --image-opts -c snap1 "$(qcow2_opts v.qcow2)"
    vd resize --object "$SEC" --image-opts "$(qcow2_opts v.qcow2)" 6M
    qemu-io --object "$SEC" --image-opts -c 'write -P 3 5M 64k' "$(qcow2_opts v.qcow2)" >/dev/null
    qemu-img check --object "$SEC" --image-opts "$(qcow2_opts v.qcow2)"
    vd check --object "$SEC" --image-opts "$(qcow2_opts v.qcow2)"
    qemu-img convert --object "$SEC" --image-opts "$(qcow2_opts v.qcow2)" -O raw q.raw
    vd convert --object "$SEC" --image-opts "$(qcow2_opts v.qcow2)" -O raw w.raw
    cmp q.raw w.raw
    vd convert --object "$SEC" -l snap1 --image-opts "$(qcow2_opts v.qcow2)" -O raw s.raw
    cmp src.raw s.raw
    # an encrypted overlay on an encrypted base, made by vdisk, read by qemu-img
    vd create -q -f qcow2 --object "$SEC" -b v.qcow2 -F qcow2 \
        -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=50 top.qcow2
    qemu-io --object "$SEC" --image-opts -c 'write -P 4 100k 4k' \
        "driver=qcow2,encrypt.key-secret=sec0,file.filename=top.qcow2,backing.encrypt.key-secret=sec0" >/dev/null
    qemu-img convert --object "$SEC" --image-opts \
        "driver=qcow2,encrypt.key-secret=sec0,file.filename=top.qcow2,backing.encrypt.key-secret=sec0" -O raw qt.raw
    vd convert --object "$SEC" --image-opts "$(qcow2_opts top.qcow2)" -O raw vt.raw
    cmp qt.raw vt.raw
}

# Key slots amended under the name qemu-img (qemu-iotests 293): each step
# run by qemu-img and by vdisk-as-qemu-img on copies of one image, in
# folders of their own: the same exit status and messages, and afterwards
# the same secrets open each copy. --force overwrites a slot in use and
# removes the last one.
amend_key_slot_refusals() {
    local fmt=$1 p="" i s
    [[ $fmt == qcow2 ]] && p=encrypt.
    setup_secrets
    printf 'third' >pass3
    mkdir -p as-qemu q v && ln -sfn "$VDISK" as-qemu/qemu-img
    local qi=$PWD/as-qemu/qemu-img
    local secs=(--object "$SEC" --object "$SEC2" --object "secret,id=sec2,file=$PWD/pass3")
    if [[ $fmt == qcow2 ]]; then
        qemu_img_luks create -q -f qcow2 "${secs[@]}" \
            -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 q/t.img 4M
    else
        qemu_img_luks create -q -f luks "${secs[@]}" -o key-secret=sec0,iter-time=10 q/t.img 4M
    fi
    cp q/t.img v/t.img
    # step ARGS...: amend t.img (opened with sec0, else the secret KEY=...)
    step() {
        local key=$1 qrc=0 vrc=0 try
        shift
        local spec="driver=$fmt,file.filename=t.img,${p}key-secret=$key"
        for ((try = 0; try < 10; try++)); do
            qrc=0
            (cd q && qemu-img amend "${secs[@]}" "$@" --image-opts "$spec" 2>err) || qrc=$?
            grep -q 'Unable to get accurate CPU usage' q/err || break
            sleep 1
        done
        (cd v && "$qi" amend "${secs[@]}" "$@" --image-opts "$spec" 2>err) || vrc=$?
        ((qrc == vrc)) || { echo "amend $*: qemu-img exit $qrc, vdisk $vrc"; cat q/err v/err; return 1; }
        diff -u q/err v/err || { echo "amend $*: messages differ (qemu-img's above)"; return 1; }
    }
    step sec0 -o "${p}state=active,${p}new-secret=sec1,${p}iter-time=10"
    step sec0 -o "${p}state=active,${p}new-secret=sec2,${p}keyslot=1,${p}iter-time=10"
    step sec0 -o "${p}state=active,${p}new-secret=sec2,${p}keyslot=1,${p}iter-time=10" --force
    step sec0 -o "${p}state=inactive,${p}old-secret=sec1"
    step sec0 -o "${p}state=inactive,${p}old-secret=sec5"
    step sec0 -o "${p}state=inactive,${p}keyslot=3"
    step sec0 -o "${p}state=inactive,${p}keyslot=1,${p}old-secret=sec0"
    step sec0 -o "${p}state=inactive,${p}keyslot=8"
    step sec0 -o "${p}state=active,${p}new-secret=sec1,${p}keyslot=9"
    step sec0 -o "${p}state=inactive"
    step sec0 -o "${p}state=active"
    step sec0 -o "${p}new-secret=sec1"
    step sec0 -o "${p}state=inactive,${p}old-secret=sec0"
    step sec2 -o "${p}state=inactive,${p}keyslot=1"
    step sec2 -o "${p}state=inactive,${p}old-secret=sec2"
    for ((i = 0; i < 7; i++)); do
        step sec2 -o "${p}state=active,${p}new-secret=sec0,${p}iter-time=10"
    done
    step sec2 -o "${p}state=active,${p}new-secret=sec1,${p}iter-time=10"
    grep -q "Can't add a keyslot - all keyslots are in use" v/err
    step sec2 -o "${p}state=inactive,${p}old-secret=sec0"
    step sec2 -o "${p}state=inactive,${p}keyslot=0" --force
    step sec2 -o "${p}state=inactive,${p}keyslot=1" --force
    for s in sec0 sec1 sec2; do
        local spec="driver=$fmt,file.filename=t.img,${p}key-secret=$s" qo=0 vo=0
        (cd q && qemu-io "${secs[@]}" -c 'read 0 512' --image-opts "$spec") >/dev/null 2>&1 || qo=$?
        (cd v && qemu-io "${secs[@]}" -c 'read 0 512' --image-opts "$spec") >/dev/null 2>&1 || vo=$?
        ((qo == vo)) || { echo "$s opens one copy and not the other"; return 1; }
    done
    (cd v && not qemu-io "${secs[@]}" -c 'read 0 512' --image-opts \
        "driver=$fmt,file.filename=t.img,${p}key-secret=sec2") >/dev/null 2>&1
}

# A new encrypted image's key not named, or named and not given: under
# the name qemu-img, qemu-img's exit status and words, for create and
# measure; under vdisk's name, what to give.
key_errors_as_qemu() {
    setup_secrets
    mkdir -p as-qemu q v && ln -sfn "$VDISK" as-qemu/qemu-img
    local qi=$PWD/as-qemu/qemu-img args qrc vrc
    local cases=(
        "create -q -f qcow -o encryption=on z.img 1M"
        "create -q -f qcow2 -o encrypt.format=aes z.img 1M"
        "create -q -f qcow2 -o encrypt.format=aes,encrypt.key-secret=nosuch z.img 1M"
        "create -q -f qcow2 -o encrypt.format=luks,encrypt.key-secret=nosuch z.img 1M"
        "create -q -f luks -o key-secret=nosuch z.img 1M"
        "create -q -f luks z.img 1M"
        "measure -O qcow2 --size 1M -o encrypt.format=luks,encrypt.key-secret=nosuch"
        "measure -O luks --size 1M -o key-secret=nosuch"
        "measure -O luks --size 1M"
    )
    for args in "${cases[@]}"; do
        qrc=0 vrc=0
        # shellcheck disable=SC2086 # each case is a command line
        (cd q && qemu-img $args </dev/null 2>err) || qrc=$?
        # shellcheck disable=SC2086
        (cd v && "$qi" $args </dev/null 2>err) || vrc=$?
        ((qrc == vrc)) || { echo "$args: qemu-img exit $qrc, vdisk $vrc"; cat q/err v/err; return 1; }
        diff -u q/err v/err || { echo "$args: messages differ (qemu-img's above)"; return 1; }
    done
    fails_cleanly vd create -q -f qcow2 -o encrypt.format=luks,encrypt.key-secret=nosuch z.img 1M 2>err
    grep -q -- "--object secret,id=nosuch,file=PATH" err
}

for v in "${VARIANTS[@]}"; do
    case_run "LUKS qcow2 made by qemu-img [${v:-defaults}]" luks_qcow2_from_qemu "$v"
    case_run "LUKS qcow2 made by vdisk [${v:-defaults}]" luks_qcow2_from_vdisk "$v"
done
case_run "raw LUKS both ways [defaults]" raw_luks_both_ways ""
case_run "raw LUKS both ways [aes-128 cbc essiv]" raw_luks_both_ways \
    "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256"
case_run "raw LUKS both ways [sha512]" raw_luks_both_ways "hash-alg=sha512"
case_run "legacy AES qcow2 rescued" legacy_aes qcow2
case_run "legacy AES qcow rescued" legacy_aes qcow
case_run "legacy AES qcow2 created and written" legacy_aes_created qcow2
case_run "legacy AES qcow created and written" legacy_aes_created qcow
case_run "preallocated LUKS qcow2 as qemu-img makes it" preallocated_luks
case_run "wrong or missing key: clear errors, no target" wrong_or_missing_key
case_run "a new image's key missing, in qemu-img's words" key_errors_as_qemu
case_run "info shows encryption" info_shows_encryption
case_run "amend adds and removes key slots" amend_key_slots
case_run "amend of key slots as qemu-img refuses and forces it (qcow2)" amend_key_slot_refusals qcow2
case_run "amend of key slots as qemu-img refuses and forces it (luks)" amend_key_slot_refusals luks
case_run "resize, snapshot and backing of LUKS qcow2" resize_snapshot_backing
finish
