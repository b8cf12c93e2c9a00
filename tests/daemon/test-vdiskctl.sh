#!/usr/bin/env bash
# vdiskctl against the real services: a private system bus, polkitd and
# vdiskd from the build tree, a pool in a temporary directory. Every command
# is run the way a user runs it and its result is checked on disk with
# qemu-img. Needs root, dbus, polkitd and qemu-utils; exits 77 (skip)
# without them or before vdiskd is built. Cleans up what it started, by pid.
#
#   tests/daemon/test-vdiskctl.sh            all cases
#   CASES='import|cancel' tests/daemon/...   the cases whose name matches
set -uo pipefail

REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${BUILD:-$REPO/build}
VDISKCTL=${VDISKCTL:-$BUILD/tools/vdiskctl}
VDISKD=${VDISKD:-$BUILD/daemon/vdiskd}
MKIMAGE=${MKIMAGE:-$REPO/../shared/acceptance/mkimage.py}
export VDISKCTL

skip() { echo "skip: $*"; exit 77; }
[[ $(id -u) == 0 ]] || skip "needs root (a system bus, polkitd and test users)"
# The test users and polkit files stay in a mount namespace of their own.
[[ ${VDISK_PRIVATE_NS:-} == ready ]] || exec "$REPO/tests/private-ns.sh" "$0" "$@"
[[ -x $VDISKD ]] || skip "no $VDISKD yet"
[[ -x $VDISKCTL ]] || skip "no $VDISKCTL"
for prog in dbus-daemon qemu-img qemu-io runuser useradd /usr/lib/polkit-1/polkitd; do
    command -v "$prog" >/dev/null || skip "$prog not installed"
done

T=$(mktemp -d /tmp/vdiskctl-test.XXXXXX)
chmod 755 "$T"
USERS=()
ALICE=vdiskctl-alice BOB=vdiskctl-bob
# shellcheck source=../../scripts/services.sh
source "$REPO/scripts/services.sh"

cleanup() {
    local i
    vdisk_services_stop
    for i in "${USERS[@]}"; do userdel "$i" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT

# ----- the services -----

# alice is in the privileged group, bob is not.
make_users() {
    getent group libvirt >/dev/null || groupadd -r libvirt
    if ! id "$ALICE" >/dev/null 2>&1; then useradd -M -N -G libvirt "$ALICE" && USERS+=("$ALICE"); fi
    if ! id "$BOB" >/dev/null 2>&1; then useradd -M -N "$BOB" && USERS+=("$BOB"); fi
}

# The bus, polkitd (with the project's policy) and vdiskd, as run.sh starts them.
# The users first: polkitd then knows them from its start.
make_users && vdisk_services_start "$T" >"$T/services.log" 2>&1 ||
    { cat "$T/services.log"; echo "could not start the services"; echo "0 passed, 1 failed"; exit 1; }
VDISKD_PID=$VDISK_DAEMON_PID

# ----- helpers -----

POOL=$T/pool
mkdir -p "$POOL" "$T/bob" "$T/alice"
chown "$BOB" "$T/bob"
chown "$ALICE" "$T/alice"

ctl() { "$VDISKCTL" "$@"; }
as_user() { local u=$1; shift; runuser -u "$u" -- env DBUS_SYSTEM_BUS_ADDRESS="$DBUS_SYSTEM_BUS_ADDRESS" "$@"; }
vsize() { qemu-img info --output=json "$1" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }
json_get() { /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# fails WANT CMD...: CMD exits 1 and its stderr has "vdiskctl: " and WANT.
fails() {
    local want=$1 rc=0; shift
    "$@" >"$T/out" 2>"$T/err" || rc=$?
    [[ $rc == 1 ]] || { echo "exit $rc, wanted 1: $*"; cat "$T/err"; return 1; }
    grep -q "^vdiskctl: " "$T/err" || { echo "no 'vdiskctl:' message"; cat "$T/err"; return 1; }
    grep -qF -- "$want" "$T/err" || { echo "wanted '$want' in:"; cat "$T/err"; return 1; }
}
# data FILE SIZE: a raw image with a pattern in every 3rd MiB.
data() {
    local mb=$(($2)) i cmds=()
    qemu-img create -q -f raw "$1" "${mb}M"
    for ((i = 0; i < mb; i += 3)); do cmds+=(-c "write -P $((i % 250 + 1)) ${i}M 256k"); done
    qemu-io -f raw "${cmds[@]}" "$1" >/dev/null
}
# big FILE: an image whose compressing import lasts seconds.
big() {
    if [[ -f $MKIMAGE ]]; then
        /usr/bin/python3 "$MKIMAGE" -q --size 1G --fill 0.9 --seed 3 "$1"
    else
        head -c 1G /dev/urandom >"$1"
    fi
}

# stuck PID: where vdiskd and the vdiskctl PID wait, for a case that gave up
# waiting on them: their threads' kernel wait channels, vdiskd's last log
# lines (timed) and its jobs as vdiskctl sees them.
stuck() {
    local p task
    for p in "$VDISKD_PID" "$1"; do
        for task in /proc/"$p"/task/*; do
            echo "$(cat "$task/comm" 2>/dev/null) $(cut -d' ' -f3 "$task/stat" 2>/dev/null) $(cat "$task/wchan" 2>/dev/null)"
        done | sort | uniq -c | sed "s|^|pid $p: |"
    done
    tail -n 8 "$T/vdiskd.log"
    timeout 10 "$VDISKCTL" jobs
}

PASSED=0 FAILED=0
check() {
    local name=$1 fn=$2 rc=0
    [[ -n ${CASES:-} ]] && ! grep -qE "$CASES" <<<"$name" && return
    export -f "$fn"
    bash -eo pipefail -c "$fn" >"$T/case.log" 2>&1 || rc=$?
    if ((rc == 0)); then
        PASSED=$((PASSED + 1)); echo "ok   $name"
    else
        FAILED=$((FAILED + 1)); echo "FAIL $name"; sed 's/^/    /' "$T/case.log" | tail -n 30
    fi
}
export T POOL ALICE BOB MKIMAGE REPO VDISKD_PID
export -f ctl as_user vsize json_get fails data big stuck

data "$T/src.raw" 32
qemu-img convert -f raw -O vdi "$T/src.raw" "$T/bob/disk.vdi"
cp "$T/bob/disk.vdi" "$T/alice/disk.vdi"
chown "$BOB" "$T/bob/disk.vdi"; chown "$ALICE" "$T/alice/disk.vdi"

# ----- the cases -----

usage() {
    ctl --help | grep -q 'vdiskctl COMMAND'
    ctl --version | grep -q '^vdiskctl version '
    ctl help import | grep -qF 'FILE|NBD-URI POOL/VOLUME'
    ctl create --help | grep -q 'cluster_size'
    fails "no command 'frobnicate'" ctl frobnicate
    fails "missing operand" ctl create t/a.qcow2
    fails "unknown option '--shrink'" ctl create --shrink t/a.qcow2 1M
    fails "not POOL/VOLUME" ctl info just-a-name
}
check "help, version and usage errors" usage

add_pool() {
    (cd "$T" && ctl add-pool t pool) | grep -q 'Added pool t'
    ctl pools | grep -E "^t +$POOL " >/dev/null
    [[ $(ctl pools --json | json_get 'd[0]["directory"]') == "$POOL" ]]
    ctl --json pools | json_get 'd[0]["name"]' | grep -qx t   # options before the command
    fails "no pool 'nope'" ctl volumes nope
}
check "add-pool, pools (--json), volumes of a missing pool" add_pool

create() {
    ctl create t/a.qcow2 64M | grep -qx 'Created t/a.qcow2 (qcow2, 64 MiB).'
    qemu-img check -q "$POOL/a.qcow2"
    [[ $(vsize "$POOL/a.qcow2") == 67108864 ]]
    ctl create -q t/b.vmdk 16M   # format from the extension
    qemu-img info "$POOL/b.vmdk" | grep -q 'file format: vmdk'
    # a layout that makes files beside the volume by name is not for vdiskd
    fails "needs files of its own" ctl create -q t/flat.vmdk 16M -o subformat=monolithicFlat
    [[ ! -e $POOL/flat.vmdk && ! -e $POOL/flat-flat.vmdk ]]
    ctl create -f raw t/c 1M >/dev/null
    qemu-img info "$POOL/c" | grep -q 'file format: raw'
    ctl create t/d.qcow2 8M -o cluster_size=128k,lazy_refcounts=on -o compat=1.1 >/dev/null
    qemu-img info "$POOL/d.qcow2" | grep -q 'cluster_size: 131072'
    qemu-img info "$POOL/d.qcow2" | grep -q 'lazy refcounts: true'
    fails "exists" ctl create t/a.qcow2 1M
    fails "" ctl create t/.hidden.qcow2 1M
    [[ ! -e $POOL/.hidden.qcow2 ]]
    fails "" ctl create t/x.qcow2 12Q
    # an extension that names no format is an error, not a guess; -f settles it
    fails "the extension .qcw2 names no format" ctl create t/typo.qcw2 1M
    [[ ! -e $POOL/typo.qcw2 ]]
    ctl create -q -f qcow2 t/typo.qcw2 1M
    qemu-img info "$POOL/typo.qcw2" | grep -q 'file format: qcow2'
}
check "create: sizes, formats by extension and -f, -o options, refusals" create

volumes_info() {
    ctl volumes t | grep -E '^t/a.qcow2 +qcow2 +64 MiB ' >/dev/null
    ctl volumes | grep -q '^t/b.vmdk '
    [[ $(ctl volumes t --json | json_get 'len(d)') -ge 3 ]]
    ctl info t/a.qcow2 | grep -q '^format: *qcow2'
    ctl info t/a.qcow2 | grep -q '^virtual size: *64 MiB (67108864 bytes)'
    [[ $(ctl info t/a.qcow2 --json | json_get 'd["virtual-size"]') == 67108864 ]]
    fails "no volume 'zz.qcow2' in pool 't'" ctl info t/zz.qcow2
}
check "volumes and info, human and --json" volumes_info

import() {
    ctl import "$T/bob/disk.vdi" t/imp.qcow2 </dev/null | grep -q 'Imported .* as t/imp.qcow2 (qcow2)'
    qemu-img check -q "$POOL/imp.qcow2"
    qemu-img compare -f raw -F qcow2 "$T/src.raw" "$POOL/imp.qcow2"
    ctl import -p -f vmdk "$T/bob/disk.vdi" t/imp2 -o subformat=streamOptimized 2>"$T/progress" >/dev/null
    grep -q '(100.00/100%)' "$T/progress"
    qemu-img compare -f raw -F vmdk "$T/src.raw" "$POOL/imp2"
    fails "cannot open $T/none.vdi" ctl import "$T/none.vdi" t/none.qcow2
}
check "import a vdi (format from the name, -f, -o, -p), missing file" import

# A pool on a 2 MiB file system: an import whose measure (about 3.3 MiB as
# qcow2) does not fit is refused before anything is copied; a small one
# still goes in.
import_no_space() {
    mkdir -p "$T/small"
    mount -t tmpfs -o size=2m vdisk-test "$T/small"
    # vdiskd keeps the pool (and its folder) open: a lazy unmount.
    trap 'umount -l "$T/small"' EXIT
    ctl add-pool small "$T/small" >/dev/null
    fails "has 2 MiB free: nothing was copied" ctl import "$T/bob/disk.vdi" small/big.qcow2
    grep -q "vdisk measure" "$T/err"
    [[ -z $(ls -A "$T/small") ]] || { echo "left behind: $(ls -A "$T/small")"; exit 1; }
    qemu-img create -q -f raw "$T/tiny.raw" 1M
    qemu-io -f raw -c "write -P 3 0 64k" "$T/tiny.raw" >/dev/null
    ctl import "$T/tiny.raw" small/tiny.qcow2 </dev/null >/dev/null
    qemu-img compare -q -f raw -F qcow2 "$T/tiny.raw" "$T/small/tiny.qcow2"
}
check "import refuses what the pool cannot hold (vdisk measure)" import_no_space

export_clone() {
    ctl export t/imp.qcow2 "$T/out.raw" | grep -q 'Exported t/imp.qcow2 to .* (raw)'
    cmp "$T/src.raw" "$T/out.raw"
    ctl export t/imp.qcow2 "$T/out.img" -q
    cmp "$T/src.raw" "$T/out.img"
    ctl export t/imp.qcow2 "$T/out.vdi" -q
    qemu-img compare -f raw -F vdi "$T/src.raw" "$T/out.vdi"
    ctl clone t/imp.qcow2 imp.vmdk | grep -q 'Cloned t/imp.qcow2 to t/imp.vmdk (vmdk)'
    qemu-img compare -f qcow2 -F vmdk "$POOL/imp.qcow2" "$POOL/imp.vmdk"
    ctl clone t/imp.qcow2 t/imp-copy -q   # POOL/NAME form, format of the source
    qemu-img info "$POOL/imp-copy" | grep -q 'file format: qcow2'
    fails "must be in pool 't'" ctl clone t/imp.qcow2 other/x.qcow2
}
check "export to files of mine, clone within the pool" export_clone

resize() {
    ctl resize t/a.qcow2 +64M | grep -qx 'Resized t/a.qcow2 to 128 MiB.'
    [[ $(vsize "$POOL/a.qcow2") == 134217728 ]]
    fails "--shrink" ctl resize t/a.qcow2 -64M
    [[ $(vsize "$POOL/a.qcow2") == 134217728 ]]
    ctl resize t/a.qcow2 -64M --shrink -q
    [[ $(vsize "$POOL/a.qcow2") == 67108864 ]]
    ctl resize -q t/a.qcow2 96M
    [[ $(vsize "$POOL/a.qcow2") == 100663296 ]]
}
check "resize: absolute, +relative, -relative needs --shrink" resize

encrypted() {   # the passphrase file is alice's own; vdiskctl reads it and passes the bytes
    printf 'secret-pass' >"$T/alice/pw" && chown "$ALICE" "$T/alice/pw" && chmod 600 "$T/alice/pw"
    k=(--object "secret,id=k,file=$T/alice/pw")
    qk() { echo "driver=qcow2,encrypt.key-secret=k,file.filename=$POOL/$1"; }
    as_user "$ALICE" "$VDISKCTL" create t/e.qcow2 32M "${k[@]}" -o encrypt.format=luks,encrypt.key-secret=k -q
    qemu-io --object "secret,id=k,file=$T/alice/pw" --image-opts "$(qk e.qcow2)" -c 'write -P 0x6b 2M 1M' >/dev/null
    ctl info t/e.qcow2 | grep -qi 'encrypted: *yes'
    # without the key nothing is read, and nothing is left behind
    fails "passphrase" ctl clone t/e.qcow2 e-nokey.raw
    [[ ! -e $POOL/e-nokey.raw ]]
    fails "file=" as_user "$ALICE" "$VDISKCTL" clone t/e.qcow2 x.raw --object secret,id=k,file=$T/alice/nope --key-secret k
    as_user "$ALICE" "$VDISKCTL" clone t/e.qcow2 e-plain.raw "${k[@]}" --key-secret k -q
    qemu-img compare --object "secret,id=k,file=$T/alice/pw" --image-opts "$(qk e.qcow2)" "driver=raw,file.filename=$POOL/e-plain.raw"
    as_user "$ALICE" "$VDISKCTL" resize t/e.qcow2 48M "${k[@]}" --key-secret k -q
    [[ $(vsize "$POOL/e.qcow2") == 50331648 ]]
    # copy: over an existing encrypted volume, which keeps its encryption
    ctl create -q t/e2.qcow2 48M --object secret,id=k2,data=other -o encrypt.format=luks,encrypt.key-secret=k2
    as_user "$ALICE" "$VDISKCTL" copy t/e.qcow2 t/e2.qcow2 "${k[@]}" --key-secret k \
        --object secret,id=k2,data=other --target-key-secret k2 | grep -qx 'Copied t/e.qcow2 over t/e2.qcow2.'
    qemu-img compare --object "secret,id=k,file=$T/alice/pw" --object secret,id=k2,data=other --image-opts \
        "$(qk e.qcow2)" "driver=qcow2,encrypt.key-secret=k2,file.filename=$POOL/e2.qcow2"
    qemu-img info "$POOL/e2.qcow2" | grep -q 'encrypted: yes'
    fails "smaller" ctl copy t/e.qcow2 t/e-plain.raw "${k[@]}" --key-secret k
    fails "unknown option '--target-key-secret'" ctl clone t/e.qcow2 y.raw --target-key-secret k
    # legacy AES is read, never made by vdiskd (no terminal to warn on)
    fails "legacy AES encryption is weak" ctl create t/aes.qcow2 32M "${k[@]}" -o encrypt.format=aes,encrypt.key-secret=k
    fails "encrypt.format=luks" ctl create t/aes.qcow 32M "${k[@]}" -o encryption=on,encrypt.key-secret=k
    truncate -s 4M "$T/alice/plain.raw" && chown "$ALICE" "$T/alice/plain.raw"
    fails "legacy AES" as_user "$ALICE" "$VDISKCTL" import "$T/alice/plain.raw" t/aes2.qcow2 "${k[@]}" -o encrypt.format=aes,encrypt.key-secret=k
    [[ ! -e $POOL/aes.qcow2 && ! -e $POOL/aes.qcow && ! -e $POOL/aes2.qcow2 ]]
}
check "encrypted volumes: create, clone, resize and copy with --object and --key-secret" encrypted

snapshots() {
    ctl snapshot create t/a.qcow2 before | grep -q 'Created snapshot before of t/a.qcow2'
    qemu-img snapshot -l "$POOL/a.qcow2" | grep -q before
    ctl snapshot list t/a.qcow2 | grep -q ' before '
    [[ $(ctl snapshot list t/a.qcow2 --json | json_get 'd[0]["name"]') == before ]]
    ctl info t/a.qcow2 | grep -q '^Snapshot list:'
    ctl snapshot revert t/a.qcow2 before -q
    ctl snapshot delete t/a.qcow2 before -q
    ! qemu-img snapshot -l "$POOL/a.qcow2" | grep -q before
    ctl snapshot list t/a.qcow2 | grep -q 'no snapshots'
    fails "needs POOL/VOLUME and the snapshot's NAME" ctl snapshot create t/a.qcow2
    fails "not create, revert, delete or list" ctl snapshot frob t/a.qcow2 x
    qemu-img check -q "$POOL/a.qcow2"
}
check "snapshot create, list (--json), revert, delete" snapshots

# --json speaks of POOL/VOLUME and job numbers with named fields and sizes
# in bytes: no D-Bus tuple, no object path, no D-Bus property name.
json_fields() {
    ctl snapshot create -q t/a.qcow2 js1
    no_paths() { ! grep -q '/org/vdisk' "$1" || { echo "an object path in $1:"; cat "$1"; exit 1; }; }
    ctl pools --json >"$T/j"; no_paths "$T/j"
    /usr/bin/python3 - "$T/j" "$POOL" <<'PY'
import json, sys
d = [p for p in json.load(open(sys.argv[1])) if p["name"] == "t"][0]
assert set(d) == {"name", "directory", "type", "capacity", "available", "error", "volumes"}, d
assert d["error"] == "", d
assert d["directory"] == sys.argv[2] and d["capacity"] >= d["available"] > 0, d
assert d["type"] == "dir", d
assert "a.qcow2" in d["volumes"], d
PY
    ctl volumes t --json >"$T/j"; no_paths "$T/j"
    ctl info t/a.qcow2 --json >"$T/k"; no_paths "$T/k"
    /usr/bin/python3 - "$T/j" "$T/k" "$POOL" <<'PY'
import json, sys
vols, info, pool = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
assert isinstance(vols, list) and isinstance(info, dict), (vols, info)
a = [v for v in vols if v["volume"] == "t/a.qcow2"][0]
assert a == info, (a, info)
for key, want in (("pool", "t"), ("name", "a.qcow2"), ("file", pool + "/a.qcow2"),
                  ("format", "qcow2"), ("encrypted", False), ("busy", False)):
    assert info[key] == want, (key, info)
assert isinstance(info["virtual-size"], int) and info["actual-size"] > 0, info
assert not any(k[0].isupper() for k in info), info
s = [x for x in info["snapshots"] if x["name"] == "js1"][0]
assert set(s) == {"id", "name", "date", "date-sec", "vm-state-size", "vm-clock-sec", "vm-clock-nsec"}, s
assert s["vm-state-size"] == 0 and s["id"].isdigit() and s["date"][:2] == "20", s
PY
    ctl snapshot list t/a.qcow2 --json | json_get '[s["id"] for s in d if s["name"] == "js1"][0]' | grep -qx '[0-9]*'
    ctl status --json >"$T/j"
    json_get 'sorted(d)' <"$T/j" | grep -qx "\['version', 'worker'\]"
    as_user "$BOB" "$VDISKCTL" inspect --json "$T/bob/disk.vdi" | json_get 'd["format"]' | grep -qx vdi
    cp "$POOL/a.qcow2" "$T/snap.qcow2" && chmod 644 "$T/snap.qcow2"
    ctl inspect --json "$T/snap.qcow2" | json_get '[s["name"] for s in d["snapshots"]]' | grep -q "'js1'"
    ctl snapshot delete -q t/a.qcow2 js1
}
check "--json: named fields, POOL/VOLUME names, no object paths" json_fields

overlay_delete() {
    ctl overlay t/imp.qcow2 top.qcow2 | grep -q 'Created t/top.qcow2 on top of t/imp.qcow2'
    qemu-img info "$POOL/top.qcow2" | grep -q 'backing file: .*imp.qcow2'
    ctl info t/top.qcow2 | grep -q '^backing file: .*imp.qcow2'
    ctl delete t/top.qcow2 | grep -qx 'Deleted t/top.qcow2.'
    [[ ! -e $POOL/top.qcow2 ]]
    fails "no volume 'top.qcow2'" ctl delete t/top.qcow2
}
check "overlay, delete" overlay_delete

user_files() {   # inspect and convert need no privilege: the fds are the user's own
    as_user "$BOB" "$VDISKCTL" inspect "$T/bob/disk.vdi" | grep -q '^file format: *vdi'
    [[ $(as_user "$BOB" "$VDISKCTL" inspect --json "$T/bob/disk.vdi" | json_get 'd["virtual-size"]') == 33554432 ]]
    as_user "$BOB" "$VDISKCTL" convert "$T/bob/disk.vdi" "$T/bob/out.qcow2" -q
    qemu-img compare -f raw -F qcow2 "$T/src.raw" "$T/bob/out.qcow2"
    as_user "$BOB" "$VDISKCTL" convert -O vmdk "$T/bob/disk.vdi" "$T/bob/out.x" -q
    qemu-img info "$T/bob/out.x" | grep -q 'file format: vmdk'
    [[ $(stat -c %U "$T/bob/out.qcow2") == "$BOB" ]]
    # a file bob cannot read is not read for him
    install -m 600 "$T/src.raw" "$T/secret.raw"
    fails "cannot open $T/secret.raw: Permission denied" as_user "$BOB" "$VDISKCTL" inspect "$T/secret.raw" </dev/null
}
check "inspect and convert files of an unprivileged user" user_files

denied() {
    local msg="not authorized: org.vdisk.VDisk1.create-volume; ask an administrator or join the libvirt group"
    fails "$msg" as_user "$BOB" "$VDISKCTL" create t/bob.qcow2 1M </dev/null
    [[ ! -e $POOL/bob.qcow2 ]]
    fails "not authorized: org.vdisk.VDisk1.import-volume" \
        as_user "$BOB" "$VDISKCTL" import "$T/bob/disk.vdi" t/bob.qcow2 </dev/null
    [[ ! -e $POOL/bob.qcow2 ]]
    fails "not authorized: org.vdisk.VDisk1.delete-volume; ask an administrator" \
        as_user "$BOB" "$VDISKCTL" delete t/a.qcow2 </dev/null
    ! grep -q 'libvirt group' "$T/err"
    [[ -e $POOL/a.qcow2 ]]
    fails "not authorized: org.vdisk.VDisk1.manage-pools" \
        as_user "$BOB" "$VDISKCTL" --no-ask-password refresh t
    # export writes a file bob owns, but reading a volume is not his to do
    fails "not authorized: org.vdisk.VDisk1.read-volume" \
        as_user "$BOB" "$VDISKCTL" export t/imp.qcow2 "$T/bob/stolen.raw" </dev/null
    [[ ! -e $T/bob/stolen.raw ]]
}
check "an unprivileged user is refused with a readable message" denied

# vdiskd's errors name what the caller named: POOL/VOLUME for a volume, the
# user's own file name for a file passed open (vdiskctl puts it for the
# role vdiskd gives it), never vdiskd's paths or words of its own.
daemon_errors() {
    { printf 'QFI\xfb\0\0\0\3'; head -c 4096 /dev/urandom; } >"$T/bad.qcow2"
    chmod 644 "$T/bad.qcow2"
    cp "$T/bad.qcow2" "$POOL/bad.qcow2"
    ctl refresh -q t
    ctl create -q t/small.qcow2 1M
    ctl create -q t/big.qcow2 4M
    no_jargon() {
        if grep -E "$POOL|caller's|/org/vdisk" "$T/err"; then echo "vdiskd's words above"; exit 1; fi
    }
    fails "$T/bad.qcow2: cluster bits" ctl inspect "$T/bad.qcow2"; no_jargon
    fails "$T/bad.qcow2: not a VDI image" ctl convert -f vdi "$T/bad.qcow2" "$T/o.raw"; no_jargon
    ctl volumes t | grep -E '^t/bad.qcow2 .* t/bad.qcow2: cluster bits' >/dev/null
    ctl info --json t/bad.qcow2 | json_get 'd["error"]' | grep -q '^t/bad.qcow2: cluster bits'
    fails "t/bad.qcow2 cannot be read: cluster bits" ctl clone t/bad.qcow2 c.raw; no_jargon
    fails "t/bad.qcow2 cannot be read: cluster bits" ctl overlay t/bad.qcow2 top.qcow2; no_jargon
    fails "t/small.qcow2: 1048576 bytes is smaller than t/big.qcow2 (4194304 bytes)" \
        ctl copy t/big.qcow2 t/small.qcow2; no_jargon
    fails "t/small.qcow2: has no snapshot 'nosuch'" ctl snapshot delete t/small.qcow2 nosuch
    # the refusal itself, as any client of vdiskd reads it
    as_user "$BOB" gdbus call --system --dest org.vdisk.VDisk1 --object-path /org/vdisk/VDisk1/pools/t \
        --method org.vdisk.VDisk1.Pool.CreateVolume bob.qcow2 qcow2 1048576 '{}' >"$T/out" 2>"$T/err" </dev/null && exit 1
    grep -q "NotAuthorized: CreateVolume of t/bob.qcow2 needs authorisation for org.vdisk.VDisk1.create-volume" "$T/err" ||
        { cat "$T/err"; exit 1; }
    rm -f "$POOL/bad.qcow2"
    ctl refresh -q t
}
check "vdiskd's errors name POOL/VOLUME and the user's files" daemon_errors

privileged() {   # needs the project's .policy and .rules installed
    ls /usr/share/polkit-1/actions/org.vdisk.* >/dev/null 2>&1 || { echo "no policy installed: not tested"; exit 0; }
    as_user "$ALICE" "$VDISKCTL" import "$T/alice/disk.vdi" t/alice.qcow2 </dev/null >/dev/null
    qemu-img compare -f raw -F qcow2 "$T/src.raw" "$POOL/alice.qcow2"
    fails "not authorized: org.vdisk.VDisk1.delete-volume; ask an administrator" \
        as_user "$ALICE" "$VDISKCTL" delete t/alice.qcow2 </dev/null
}
check "a member of the privileged group imports, may not delete" privileged

interactive() {   # on a terminal polkit asks for a password through pkttyagent
    command -v script >/dev/null && [[ -x /usr/bin/pkttyagent ]] || { echo "no script(1) or pkttyagent: not tested"; exit 0; }
    # Nobody types: the prompt must appear, then the call fails once the pty
    # closes. stdin stays open meanwhile: at its end script(1) would type ^D.
    sleep 12 | timeout 8 runuser -u "$BOB" -- env DBUS_SYSTEM_BUS_ADDRESS="$DBUS_SYSTEM_BUS_ADDRESS" \
        script -qec "$VDISKCTL create t/asked.qcow2 1M" /dev/null >"$T/tty.out" 2>&1 || true
    grep -q 'AUTHENTICATING FOR org.vdisk.VDisk1.create-volume' "$T/tty.out" ||
        { echo "no prompt:"; cat "$T/tty.out"; exit 1; }
    [[ ! -e $POOL/asked.qcow2 ]]
    # --no-ask-password: no prompt, a plain refusal
    timeout 20 runuser -u "$BOB" -- env DBUS_SYSTEM_BUS_ADDRESS="$DBUS_SYSTEM_BUS_ADDRESS" \
        script -qec "$VDISKCTL create --no-ask-password t/asked.qcow2 1M" /dev/null </dev/null >"$T/tty.out" 2>&1 || true
    ! grep -q AUTHENTICATING "$T/tty.out"
    grep -q 'vdiskctl: not authorized' "$T/tty.out"
}
check "polkit asks for a password on a terminal, not with --no-ask-password" interactive

jobs_cancel() {
    big "$T/big.raw"
    ctl jobs --json | json_get 'len(d)' >/dev/null   # finished jobs linger a few seconds
    ctl import -f vmdk -o subformat=streamOptimized "$T/big.raw" t/big.vmdk >"$T/imp.out" 2>&1 &
    local pid=$! n= i
    for ((i = 0; i < 100; i++)); do
        n=$(ctl jobs --json | json_get '" ".join(j["id"] for j in d if j["state"] == "running")')
        [[ -n $n ]] && break
        sleep 0.1
    done
    [[ -n $n ]] || { echo "no job seen"; exit 1; }
    ctl jobs | grep -E "^$n +import +running .*t/big.vmdk" >/dev/null
    ctl jobs --json >"$T/j"
    ! grep -q '/org/vdisk' "$T/j"
    json_get '[j for j in d if j["id"] == "'"$n"'"][0]' <"$T/j" | grep -q "'volumes': \['t/big.vmdk'\]"
    json_get '[j for j in d if j["id"] == "'"$n"'"][0]' <"$T/j" | grep -q "'operation': 'import'"
    json_get '[sorted(j) for j in d if j["id"] == "'"$n"'"][0]' <"$T/j" |
        grep -qxF "['bytes-done', 'bytes-total', 'cancelable', 'id', 'operation', 'progress', 'rate', 'started', 'state', 'uid', 'user', 'volumes']"
    ctl cancel "$n" | grep -q "Asked job $n to cancel"
    local rc=0; wait "$pid" || rc=$?
    [[ $rc == 1 ]] || { echo "import exited $rc"; cat "$T/imp.out"; exit 1; }
    grep -qi 'vdiskctl: .*cancel' "$T/imp.out"
    sleep 1
    [[ ! -e $POOL/big.vmdk ]]
    fails "no job 99999 is running" ctl cancel 99999
    fails "not a job number" ctl cancel x7
}
check "jobs lists a running import, cancel stops it and no file is left" jobs_cancel

interrupt() {   # Ctrl-C cancels the job and waits for its end
    [[ -f $T/big.raw ]] || big "$T/big.raw"
    "$VDISKCTL" import -p -f vmdk -o subformat=streamOptimized "$T/big.raw" t/int.vmdk >"$T/int.out" 2>&1 &
    local pid=$! i
    for ((i = 0; i < 100; i++)); do
        grep -q '/100%' "$T/int.out" && break
        sleep 0.1
    done
    kill -INT "$pid"
    local rc=0; wait "$pid" || rc=$?
    [[ $rc == 1 ]] || { echo "exit $rc"; cat "$T/int.out"; exit 1; }
    grep -q 'vdiskctl: cancelling' "$T/int.out"
    grep -q 'vdiskctl: cancelled' "$T/int.out"
    sleep 1
    [[ ! -e $POOL/int.vmdk ]]
    ctl pools >/dev/null   # the daemon is still there
}
check "Ctrl-C cancels the job, removes the partial volume" interrupt

# The exit statuses vdiskctl(1) documents, each as the program gives it:
# the page lists 0, 1 and 130, and libvirt status's 0, 1 and 3.
exit_statuses() {
    local man=$REPO/man/vdiskctl.1 rc
    [[ $(sed -n '/^\.SH EXIT STATUS/,/^\.SH /p' "$man" | grep -A1 '^\.TP' | grep '^\.B ' | tr -d '.B \n') == 01130 ]] ||
        { echo "vdiskctl(1) lists other statuses:"; sed -n '/^\.SH EXIT STATUS/,/^\.SH /p' "$man"; exit 1; }
    status_is() { local want=$1 rc=0; shift; "$@" >"$T/out" 2>"$T/err" </dev/null || rc=$?
        [[ $rc == "$want" ]] || { echo "exit $rc, wanted $want: $*"; cat "$T/err"; exit 1; }; }
    # 0: success, help, version, a detached job
    status_is 0 ctl pools
    status_is 0 ctl --help
    status_is 0 ctl --version
    status_is 0 ctl create t/st.qcow2 1M --detach
    grep -qx '/org/vdisk/VDisk1/jobs/[0-9]*' "$T/out"
    # 1: usage errors, each with its line
    for args in "" "frobnicate" "create t/x.qcow2" "create --shrink t/x.qcow2 1M" "create t/x.qcow2 12Q" \
        "pools extra"; do
        # shellcheck disable=SC2086
        status_is 1 ctl $args
        grep -q '^vdiskctl: ' "$T/err" || { echo "no line for: $args"; cat "$T/err"; exit 1; }
    done
    # 1: vdiskd refuses (not authorised; no such volume; a name that exists)
    status_is 1 as_user "$BOB" "$VDISKCTL" create t/bob.qcow2 1M
    grep -q 'not authorized' "$T/err"
    status_is 1 ctl info t/none.qcow2
    status_is 1 ctl create t/st.qcow2 1M
    # 1: a job that fails
    ctl create -q t/st-small.qcow2 1M && ctl create -q t/st-big.qcow2 4M
    status_is 1 ctl copy t/st-big.qcow2 t/st-small.qcow2
    grep -q 'smaller than' "$T/err"
    # 1: a job cancelled by Ctrl-C; 130: a second Ctrl-C
    [[ -f $T/big.raw ]] || big "$T/big.raw"
    local twice
    for twice in 0 1; do
        "$VDISKCTL" import -p -f vmdk -o subformat=streamOptimized "$T/big.raw" t/st-int.vmdk >"$T/int.out" 2>&1 &
        local pid=$! i
        for ((i = 0; i < 600; i++)); do grep -q '/100%' "$T/int.out" && break; sleep 0.1; done
        grep -q '/100%' "$T/int.out" || { echo "no progress (Ctrl-C x$((twice + 1))):"; cat "$T/int.out"; stuck "$pid"; exit 1; }
        # vdiskd held still: the job cannot end between the two
        ((twice)) && kill -STOP "$VDISKD_PID"
        kill -INT "$pid"
        if ((twice)); then
            for ((i = 0; i < 100; i++)); do grep -q 'vdiskctl: cancelling' "$T/int.out" && break; sleep 0.05; done
            kill -INT "$pid"
        fi
        rc=0; wait "$pid" || rc=$?
        ((twice)) && kill -CONT "$VDISKD_PID"
        [[ $rc == $((twice ? 130 : 1)) ]] || { echo "Ctrl-C x$((twice + 1)): exit $rc"; cat "$T/int.out"; exit 1; }
        for ((i = 0; i < 100; i++)); do ctl jobs | grep -q st-int || break; sleep 0.2; done
    done
    # libvirt status: 0, 1 or 3 as it finds libvirt's daemons
    rc=0; ctl libvirt status >/dev/null 2>&1 || rc=$?
    [[ $rc == 0 || $rc == 1 || $rc == 3 ]] || { echo "libvirt status: exit $rc"; exit 1; }
}
check "exit statuses as vdiskctl(1) documents them" exit_statuses

client_killed() {   # vdiskctl dies mid-convert: nothing appears under the target's name
    [[ -f $T/big.raw ]] || big "$T/big.raw"
    "$VDISKCTL" convert -p -O vmdk -o subformat=streamOptimized "$T/big.raw" "$T/gone.vmdk" >"$T/gone.out" 2>&1 &
    local pid=$! i
    for ((i = 0; i < 100; i++)); do
        grep -q '/100%' "$T/gone.out" && break
        sleep 0.1
    done
    compgen -G "$T/.gone.vmdk.partial-*" >/dev/null
    kill -9 "$pid"
    wait "$pid" || true
    [[ ! -e $T/gone.vmdk ]] || { echo "a half-written image has the target's name"; exit 1; }
    for ((i = 0; i < 100; i++)); do ctl jobs | grep -q convert || break; sleep 0.2; done
    [[ ! -e $T/gone.vmdk ]]
    rm -f "$T"/.gone.vmdk.partial-*
}
check "vdiskctl killed mid-convert: no half-written file under the target's name" client_killed

# Durable jobs: strace follows vdiskd (and, where vdiskctl creates the
# file, vdiskctl) while each job runs; strace-syncs.py reads the traces.
SYNCS=$REPO/tests/interop/strace-syncs.py
TRACED=openat,pwrite64,pwritev,pwritev2,write,writev,ftruncate,fallocate,fdatasync,fsync,rename,renameat,renameat2,unlink,unlinkat
# traced_daemon CMD...: CMD while strace follows vdiskd into $T/dtrace.
traced_daemon() {
    local pid i rc=0
    strace -f -y -s 0 -e trace="$TRACED" -o "$T/dtrace" -p "$VDISKD_PID" 2>"$T/dtrace.log" &
    pid=$!
    for ((i = 0; i < 100; i++)); do grep -q attached "$T/dtrace.log" && break; sleep 0.1; done
    sleep 0.3
    "$@" || rc=$?
    kill -INT "$pid"
    wait "$pid" || true
    return "$rc"
}
# traced_client CMD...: CMD itself under strace into $T/ctrace.
traced_client() { strace -f -y -s 0 -e trace="$TRACED" -o "$T/ctrace" "$@"; }
# dsyncs / csyncs CHECK FILE...: strace-syncs.py over the daemon's / client's trace.
dsyncs() { /usr/bin/python3 "$SYNCS" "$T/dtrace" "$@"; }
csyncs() { /usr/bin/python3 "$SYNCS" "$T/ctrace" "$@"; }
export SYNCS TRACED VDISKD_PID
export -f traced_daemon traced_client dsyncs csyncs

durable_jobs() {
    command -v strace >/dev/null || { echo "strace not installed (scripts/deps.sh): not tested"; exit 0; }
    traced_daemon ctl create -q t/dur.qcow2 32M
    dsyncs synced "$POOL/dur.qcow2"
    dsyncs created "$POOL/dur.qcow2"
    traced_daemon ctl import -q "$T/bob/disk.vdi" t/dur-imp.qcow2 </dev/null
    dsyncs synced "$POOL/dur-imp.qcow2"
    dsyncs created "$POOL/dur-imp.qcow2"
    qemu-img compare -q -f raw -F qcow2 "$T/src.raw" "$POOL/dur-imp.qcow2"
    traced_daemon ctl clone -q t/dur-imp.qcow2 dur-clone.vdi
    dsyncs synced "$POOL/dur-clone.vdi"
    dsyncs created "$POOL/dur-clone.vdi"
    qemu-img compare -q -f raw -F vdi "$T/src.raw" "$POOL/dur-clone.vdi"
    # export and convert write into a hidden file vdiskctl made, which it
    # renames into place and whose folder it syncs; the daemon's syncs of
    # the hidden file are matched to the final name through the client's
    # rename (the client's trace goes after the daemon's: it renames last)
    traced_daemon traced_client "$VDISKCTL" export -q t/dur-imp.qcow2 "$T/dur-out.vmdk"
    cat "$T/dtrace" "$T/ctrace" >"$T/both"
    /usr/bin/python3 "$SYNCS" "$T/both" synced "$T/dur-out.vmdk"
    csyncs created "$T/dur-out.vmdk"
    qemu-img compare -q -f raw -F vmdk "$T/src.raw" "$T/dur-out.vmdk"
    traced_daemon traced_client "$VDISKCTL" convert -q "$T/bob/disk.vdi" "$T/dur-conv.qcow2"
    cat "$T/dtrace" "$T/ctrace" >"$T/both"
    /usr/bin/python3 "$SYNCS" "$T/both" synced "$T/dur-conv.qcow2"
    csyncs created "$T/dur-conv.qcow2"
    qemu-img compare -q -f raw -F qcow2 "$T/src.raw" "$T/dur-conv.qcow2"
    traced_daemon ctl copy t/dur-imp.qcow2 t/dur.qcow2 >/dev/null
    dsyncs synced "$POOL/dur.qcow2"
    qemu-img compare -q -f raw -F qcow2 "$T/src.raw" "$POOL/dur.qcow2"
    traced_daemon ctl resize -q t/dur.qcow2 64M
    dsyncs synced "$POOL/dur.qcow2"
    local op
    for op in create revert delete; do
        traced_daemon ctl snapshot "$op" -q t/dur.qcow2 s1
        dsyncs synced "$POOL/dur.qcow2"
    done
    traced_daemon ctl overlay t/dur.qcow2 dur-top.qcow2 >/dev/null
    dsyncs synced "$POOL/dur-top.qcow2"
    dsyncs created "$POOL/dur-top.qcow2"
    qemu-img check -q "$POOL/dur.qcow2"
    qemu-img check -q "$POOL/dur-top.qcow2"
    # a deleted volume must not come back after a power cut
    traced_daemon ctl delete t/dur-clone.vdi
    [[ ! -e $POOL/dur-clone.vdi ]]
    dsyncs removed "$POOL/dur-clone.vdi"
}
check "every job that writes waits for the disk (fdatasync, and fsync of a new file's folder; of a deleted one's too)" durable_jobs

in_use() {   # a volume a running VM holds (here qemu-nbd): refused, the holder named
    command -v qemu-nbd >/dev/null || { echo "qemu-nbd is missing: case skipped"; return 0; }
    ctl create -q t/held.qcow2 64M
    local before
    before=$(sha256sum <"$POOL/held.qcow2")
    qemu-nbd --persistent -k "$T/held.sock" -f qcow2 "$POOL/held.qcow2" </dev/null >/dev/null 2>&1 &
    local nbd=$! i ino
    trap 'kill $nbd 2>/dev/null || true; wait $nbd 2>/dev/null || true' EXIT
    ino=$(stat -c %i "$POOL/held.qcow2")
    for ((i = 0; i < 100; i++)); do grep -q ":$ino " /proc/locks && break; sleep 0.1; done
    fails "in use by another process (qemu-nbd, pid $nbd)" ctl resize t/held.qcow2 128M
    grep -qF 'Failed to get "write" lock' "$T/err"
    if grep -q "a job is using it" "$T/err"; then echo "blamed on a job"; exit 1; fi
    fails "in use by another process (qemu-nbd, pid $nbd)" ctl snapshot create t/held.qcow2 s1
    ctl info t/held.qcow2 | grep -q qcow2   # still described, read with force-share
    kill "$nbd"
    wait "$nbd" 2>/dev/null || true
    [[ $(sha256sum <"$POOL/held.qcow2") == "$before" ]]
    ctl resize -q t/held.qcow2 128M
    [[ $(vsize "$POOL/held.qcow2") == 134217728 ]]
}
check "a volume a running VM holds: resize and snapshot refused, the holder named" in_use

no_daemon() {   # last: stops vdiskd, in the middle of a job
    [[ -f $T/big.raw ]] || big "$T/big.raw"
    "$VDISKCTL" import -p -f vmdk -o subformat=streamOptimized "$T/big.raw" t/term.vmdk >"$T/term.out" 2>&1 &
    local pid=$! i
    for ((i = 0; i < 100; i++)); do
        grep -q '/100%' "$T/term.out" && break
        sleep 0.1
    done
    compgen -G "$POOL/.term.vmdk.partial-*" >/dev/null   # written under a hidden name
    [[ ! -e $POOL/term.vmdk ]]
    # SIGTERM (systemctl stop): the job is cancelled and its half-written
    # volume removed before vdiskd leaves, cleanly
    kill "$VDISKD_PID"
    local rc=0
    for ((i = 0; i < 100; i++)); do kill -0 "$VDISKD_PID" 2>/dev/null || break; sleep 0.1; done
    ! kill -0 "$VDISKD_PID" 2>/dev/null
    wait "$pid" || rc=$?
    [[ $rc == 1 ]] || { echo "import exited $rc"; cat "$T/term.out"; exit 1; }
    [[ ! -e $POOL/term.vmdk ]] || { echo "the partial volume was left behind"; exit 1; }
    fails "vdiskd is not running" ctl pools
}
VDISKD_PID=${VDISKD_PID:-}
export VDISKD_PID
check "stopping vdiskd cancels its jobs, leaves no partial volume; then a readable error" no_daemon

# start_vdiskd: vdiskd again on the same bus, with pool t; sets VDISKD_PID.
start_vdiskd() {
    "$VDISKD" --idle-timeout=0 --config-dir="$T/pools.d" >>"$T/vdiskd2.log" 2>&1 &
    VDISKD_PID=$!
    vdisk_wait_for_name org.vdisk.VDisk1
    ctl add-pool t "$POOL" >/dev/null
}
export VDISKD
export -f start_vdiskd vdisk_wait_for_name

killed() {   # after no_daemon: vdiskd dies (SIGKILL, a power cut) in the middle of an import
    [[ -f $T/big.raw ]] || big "$T/big.raw"
    start_vdiskd
    trap 'kill -9 $VDISKD_PID 2>/dev/null || true' EXIT
    "$VDISKCTL" import -p -f qcow2 "$T/big.raw" t/killed.qcow2 >"$T/kill.out" 2>&1 &
    local pid=$! i
    for ((i = 0; i < 100; i++)); do
        grep -q '/100%' "$T/kill.out" && break
        sleep 0.1
    done
    kill -9 "$VDISKD_PID"
    wait "$pid" || true
    # what was written lies under a hidden name; the volume's own name
    # never shows a half-written image
    [[ ! -e $POOL/killed.qcow2 ]] || { echo "a partial volume has the volume's name"; exit 1; }
    compgen -G "$POOL/.killed.qcow2.partial-*" >/dev/null
    start_vdiskd
    if ctl volumes t | grep -q killed; then echo "the partial file is listed as a volume"; exit 1; fi
    ctl import -q -f qcow2 "$T/bob/disk.vdi" t/killed.qcow2 </dev/null   # the name is free
    qemu-img compare -q -f raw -F qcow2 "$T/src.raw" "$POOL/killed.qcow2"
}
check "vdiskd killed mid-import: no volume under the name; a new import takes it" killed

echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
