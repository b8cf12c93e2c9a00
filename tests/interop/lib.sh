# shellcheck shell=bash
# Shared by the interop and corrupt suites; source it, define each case as a
# function, run it with `case_run NAME FUNCTION ARGS...`, end with `finish`.
#
# A case runs in a subshell with errexit and pipefail, in its own directory
# $W under one mktemp -d tree that a trap removes. Any failing command fails
# the case; so does any vdisk run that crashed, hung or (under a test setup)
# made valgrind or a sanitizer complain, even where the case expected vdisk to
# fail. The script ends with "N passed, M failed" and exits 1 if M > 0.
#
# Environment: VDISK (the vdisk executable; default build/tools/vdisk in the
# repository), VDISK_WRAPPER (a command put in front of vdisk, e.g. valgrind;
# the valgrind test setup sets it), VDISK_TIMEOUT (seconds per vdisk run,
# default 120), VDISK_KEEP=1 keeps the directories of failed cases,
# CASES=REGEX runs only the cases whose name matches.
set -uo pipefail

TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO=$(cd "$TESTS_DIR/.." && pwd)
export VDISK=${VDISK:-$REPO/build/tools/vdisk}
export PY=/usr/bin/python3
export VDISK_TIMEOUT=${VDISK_TIMEOUT:-120}
export VDISK_WRAPPER=${VDISK_WRAPPER:-}
export T
T=$(mktemp -d "${TMPDIR:-/tmp}/vdisk-test.XXXXXX")
PASSED=0 FAILED=0 NCASE=0
FAILED_NAMES=()
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM

need_programs() {
    local p
    for p in qemu-img qemu-io "$PY"; do
        command -v "$p" >/dev/null || { echo "missing program: $p"; echo "0 passed, 1 failed"; exit 1; }
    done
    if [[ ! -x $VDISK ]]; then
        echo "missing program: $VDISK (build it, or set VDISK)"
        echo "0 passed, 1 failed"
        exit 1
    fi
}

# vd ARGS...: run vdisk (behind VDISK_WRAPPER, under a timeout). Returns its
# exit status. A signal, a timeout or a valgrind error leaves a mark that
# fails the current case even when the caller expected an error.
vd() {
    local rc=0
    # shellcheck disable=SC2086 # VDISK_WRAPPER is a command line
    timeout -k 5 "$VDISK_TIMEOUT" $VDISK_WRAPPER "$VDISK" "$@" || rc=$?
    if ((rc == 124)); then
        echo "vdisk timed out after ${VDISK_TIMEOUT}s: vdisk $*" >&2
        echo "timeout: vdisk $*" >>"$T/.broken"
    elif ((rc >= 128)); then
        echo "vdisk died by signal $((rc - 128)): vdisk $*" >&2
        echo "signal $((rc - 128)): vdisk $*" >>"$T/.broken"
    elif ((rc == 99)) && [[ -n $VDISK_WRAPPER ]]; then
        echo "valgrind found errors: vdisk $*" >&2
        echo "valgrind: vdisk $*" >>"$T/.broken"
    fi
    return "$rc"
}

# qvd ARGS...: vdisk under the name qemu-img (a symlink, as a drop-in).
qvd() {
    mkdir -p "$T/as-qemu"
    ln -sfn "$VDISK" "$T/as-qemu/qemu-img"
    local saved=$VDISK rc=0
    VDISK=$T/as-qemu/qemu-img
    vd "$@" || rc=$?
    VDISK=$saved
    return "$rc"
}

case_run() {
    local name=$1 fn=$2 rc=0 log start=$SECONDS
    shift 2
    if [[ -n ${CASES:-} && ! $name =~ $CASES ]]; then return 0; fi
    NCASE=$((NCASE + 1))
    W=$T/case$NCASE
    mkdir -p "$W"
    log=$W.log
    rm -f "$T/.broken"
    # Not `( ... ) || rc=$?`: errexit is ignored inside a command whose
    # status is tested, so the case would run on past its first failure.
    (
        set -eo pipefail
        cd "$W"
        "$fn" "$@"
    ) >"$log" 2>&1 </dev/null
    rc=$?
    if ((rc == 0)) && [[ -e $T/.broken ]]; then
        rc=125
        cat "$T/.broken" >>"$log"
    fi
    if ((rc == 0)) && grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$log"; then
        rc=125
    fi
    if ((rc == 0)); then
        PASSED=$((PASSED + 1))
        echo "ok $name ($((SECONDS - start)) s)"
        rm -rf "$W" "$log"
    else
        FAILED=$((FAILED + 1))
        FAILED_NAMES+=("$name")
        echo "FAIL $name (exit $rc, $((SECONDS - start)) s)"
        tail -n 12 "$log" | sed 's/^/    /'
        if [[ -n ${VDISK_KEEP:-} ]]; then
            local keep
            keep=$(mktemp -d "${TMPDIR:-/tmp}/vdisk-failed.XXXXXX")
            cp -a "$W" "$log" "$keep"/ 2>/dev/null
            echo "    kept in $keep"
        fi
        rm -rf "$W"
    fi
}

finish() {
    if ((FAILED)); then
        echo "failed cases:"
        printf '  %s\n' "${FAILED_NAMES[@]}"
    fi
    echo "$PASSED passed, $FAILED failed"
    ((FAILED == 0))
}

# not CMD...: succeeds when the simple command CMD fails.
not() { if "$@"; then return 1; fi; }

# expect_exit CODE CMD...: CMD must exit with CODE.
expect_exit() {
    local want=$1 rc=0
    shift
    "$@" || rc=$?
    ((rc == want)) || { echo "expected exit $want, got $rc: $*"; return 1; }
}

# fails_cleanly CMD...: CMD fails with a message on stderr, not by a signal.
fails_cleanly() {
    local rc=0 err
    err=$(mktemp "$T/err.XXXXXX")
    "$@" 2>"$err" >/dev/null || rc=$?
    cat "$err" >&2
    ((rc != 0)) || { echo "expected an error, got success: $*"; return 1; }
    ((rc < 124)) || { echo "crashed or hung (exit $rc): $*"; return 1; }
    [[ -s $err ]] || { echo "error exit without a message: $*"; return 1; }
}

# json FILE EXPR: evaluate a Python expression over the JSON document d.
json() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

# qinfo FILE FIELD: a top-level field of qemu-img info --output=json.
qinfo() { qemu-img info --output=json "$1" | "$PY" -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$2"; }

# qspecific FILE KEY: a qcow2 format-specific field as qemu-img reports it.
qspecific() {
    qemu-img info --output=json "$1" |
        "$PY" -c 'import json,sys; d=json.load(sys.stdin)["format-specific"]["data"]; v=d.get(sys.argv[1], ""); print(str(v).lower() if isinstance(v, bool) else v)' "$2"
}

# qemu_img_luks ARGS...: qemu-img ARGS, tried again (three times in all)
# when qemu's LUKS key setup fails on a busy machine ("Unable to get
# accurate CPU usage"), which is qemu-img's timing and not what is tested.
qemu_img_luks() {
    local try err
    err=$(mktemp "$T/qemu-img-err.XXXXXX")
    for try in 1 2 3; do
        qemu-img "$@" 2>"$err" && { rm -f "$err"; return 0; }
        grep -q 'Unable to get accurate CPU usage' "$err" || break
        sleep 1
    done
    cat "$err" >&2
    rm -f "$err"
    return 1
}

# holds FILE: does some process hold a lock on FILE (its inode in /proc/locks)?
holds() { grep -q ":$(stat -c %i "$1") " /proc/locks; }

# wait_locked FILE: until a holder started in the background has FILE locked.
wait_locked() {
    local i
    for ((i = 0; i < 100; i++)); do
        holds "$1" && return 0
        sleep 0.1
    done
    echo "nothing locked $1 within 10 s"
    return 1
}

# qemu_io_hold FMT FILE: qemu-io holds FILE open for writing in the
# background, as a running VM would, from when this returns (its lock is
# seen: a loaded machine may take seconds to start qemu-io, which a fixed
# sleep missed) until qemu_io_release, or 60 s.
qemu_io_hold() {
    qemu-io -f "$1" -c "sleep 60000" "$2" </dev/null >/dev/null 2>&1 &
    HOLDER=$!
    wait_locked "$2"
}

# qemu_io_release: the holder of qemu_io_hold is gone.
qemu_io_release() {
    kill "$HOLDER" 2>/dev/null || true
    wait "$HOLDER" 2>/dev/null || true
}

# bitmaps FILE: the bitmaps qemu-img info reports, one line each.
bitmaps() {
    qemu-img info -U -f qcow2 --output=json "$1" |
        "$PY" -c 'import json,sys; d=json.load(sys.stdin)["format-specific"]["data"]; [print(b["name"], b["granularity"], ",".join(b["flags"])) for b in d.get("bitmaps", [])]'
}

# dirty FILE BITMAP: the ranges qemu reads as dirty in BITMAP. A socket
# of its own: two run at once in a diff's <(...), and qemu-nbd removes its
# socket's name when it ends.
dirty() {
    local sock=$W/nbd-$BASHPID.sock pid
    qemu-nbd -r -t -k "$sock" -f qcow2 -B "$2" "$1" &
    pid=$!
    for _ in $(seq 50); do [[ -S $sock ]] && break; sleep 0.1; done
    qemu-img map --output=json --image-opts \
        "driver=nbd,server.type=unix,server.path=$sock,x-dirty-bitmap=qemu:dirty-bitmap:$2" |
        "$PY" -c 'import json,sys; [print(e["start"], e["length"]) for e in json.load(sys.stdin) if not e["data"]]'
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

# qcheck FILE [FMT]: qemu-img check finds no corruption and no leak (exit 0).
qcheck() { qemu-img check -q -f "${2:-qcow2}" "$1"; }

# to_raw FILE OUT [qemu-img convert options]: the guest view by qemu-img.
to_raw() { local f=$1 o=$2; shift 2; qemu-img convert "$@" -O raw "$f" "$o"; }

# same_guest A FMT_A B FMT_B: same virtual size, same guest bytes (by qemu-img).
same_guest() {
    local sa sb
    sa=$(qemu-img info -f "$2" --output=json "$1" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    sb=$(qemu-img info -f "$4" --output=json "$3" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    [[ $sa == "$sb" ]] || { echo "virtual sizes differ: $1 $sa, $3 $sb"; return 1; }
    qemu-img compare -q -f "$2" -F "$4" "$1" "$3" || { echo "content differs: $1 $3"; qemu-img compare -f "$2" -F "$4" "$1" "$3"; return 1; }
}

# allocated FILE: bytes the file occupies on disk.
allocated() { du -B1 "$1" | cut -f1; }

# qio FMT FILE CMD...: qemu-io commands, quiet, failing when any fails.
qio() {
    local fmt=$1 f=$2 out
    shift 2
    local args=() c
    for c in "$@"; do args+=(-c "$c"); done
    out=$(qemu-io -f "$fmt" "${args[@]}" "$f" 2>&1) || { echo "$out"; return 1; }
    if grep -qiE 'error|failed|invalid|not supported' <<<"$out"; then echo "qemu-io: $out"; return 1; fi
}

# pattern_raw FILE SIZE: data of several patterns, explicit zeroes, holes and
# data in the last sector.
pattern_raw() {
    local f=$1 size=$2 mb i
    qemu-img create -q -f raw "$f" "$size"
    mb=$(($(numfmt --from=iec "$size") / 1048576))
    local cmds=()
    for ((i = 0; i < mb; i += 3)); do cmds+=("write -P $(((i * 37) % 251 + 1)) ${i}M 192k"); done
    for ((i = 1; i < mb; i += 5)); do cmds+=("write -z ${i}M 64k"); done
    cmds+=("write -P 90 $((mb * 1048576 - 4096)) 4096")
    qio raw "$f" "${cmds[@]}"
    # something that is not one repeated byte, and compresses
    "$PY" - "$f" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    text = b"".join(b"line %06d: the quick brown fox jumps over the lazy dog\n" % i for i in range(4000))
    f.seek(2 * 1048576 + 12345); f.write(text[:200000])
    import random
    r = random.Random(7)
    f.seek(4 * 1048576); f.write(bytes(r.getrandbits(8) for _ in range(65536)))
PY
}

# merged_map JSON_FILE: qemu-img map --output=json style entries merged into
# runs of the same (zero, data), printed one "start length zero data" a line.
# qemu-img also sets zero on data clusters whose host range is a hole in the
# image file (it asks the file system), and so does vdisk. VDISK_MAP_STRICT=0
# ignores zero where data is true, for a file system without SEEK_HOLE.
merged_map() {
    "$PY" - "$1" <<'PY'
import json, os, sys
strict = os.environ.get("VDISK_MAP_STRICT", "1") != "0"
runs = []
for e in json.load(open(sys.argv[1])):
    data = bool(e["data"])
    key = (bool(e["zero"]) and (strict or not data), data)
    if runs and tuple(runs[-1][2:]) == key and runs[-1][0] + runs[-1][1] == e["start"]:
        runs[-1][1] += e["length"]
    else:
        runs.append([e["start"], e["length"], *key])
for r in runs:
    print(*r)
PY
}

export -f vd not expect_exit fails_cleanly json qinfo qspecific qcheck to_raw same_guest allocated qio pattern_raw merged_map
