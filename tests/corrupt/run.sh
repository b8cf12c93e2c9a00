#!/usr/bin/env bash
# The corrupted-image corpus: each malformed qcow2 that make-corpus.py makes
# (from fresh qemu-img images, at test time) goes through vdisk info, convert
# and check. vdisk must refuse what cannot be read with a message naming the
# file, never crash, hang (20 s per command) or leave a half-written target;
# what it does read must read like qemu-img; check must see the damage.
# MANIFEST.tsv (written by make-corpus.py) says what each case expects.
source "$(dirname "${BASH_SOURCE[0]}")/../interop/lib.sh"
need_programs
export VDISK_TIMEOUT=${VDISK_CORRUPT_TIMEOUT:-20}
[[ -n $VDISK_WRAPPER ]] && VDISK_TIMEOUT=$((VDISK_TIMEOUT * 10))

export CORPUS=$T/corpus
mkdir -p "$CORPUS"
"$PY" "$(dirname "${BASH_SOURCE[0]}")/make-corpus.py" "$CORPUS" || { echo "0 passed, 1 failed"; exit 1; }

# names_file ERRFILE NAMES: the message mentions one of the comma-separated names.
names_file() {
    local n
    IFS=, read -ra n <<<"$2"
    for x in "${n[@]}"; do grep -qF -- "$x" "$1" && return 0; done
    echo "the message does not name ${2//,/ or }:"
    cat "$1"
    return 1
}

# refused ERRFILE RC NAMES WHAT: a clean refusal: error exit below 124, a message naming the file.
refused() {
    local err=$1 rc=$2 names=$3 what=$4
    ((rc != 0)) || { echo "$what: expected an error, got success"; return 1; }
    ((rc < 124)) || { echo "$what: crashed or hung (exit $rc)"; cat "$err"; return 1; }
    [[ -s $err ]] || { echo "$what: error exit $rc without a message on stderr"; return 1; }
    names_file "$err" "$names"
}

corrupt_case() {
    local name=$1 image=$2 info=$3 convert=$4 check=$5 action=$6 names=$7
    local img=$CORPUS/$image rc
    cd "$CORPUS" || return 1
    # the image as qemu-img reads it, when it can (a loop hangs qemu-img)
    local qemu_ok=0
    timeout 20 qemu-img convert -O raw "$img" "$W/qemu.raw" 2>/dev/null && qemu_ok=1

    echo "== vdisk info"
    rc=0
    vd info --output=json "$img" >"$W/info.json" 2>"$W/info.err" || rc=$?
    cat "$W/info.err"
    case $info:$rc in
    ok:0 | any:0) "$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$W/info.json" ||
        { echo "info --output=json is not JSON"; return 1; } ;;
    *) [[ $info != ok ]] || { echo "info: expected success, got exit $rc"; return 1; }
        refused "$W/info.err" "$rc" "$names" info ;;
    esac

    echo "== vdisk convert -O raw"
    rc=0
    vd convert -O raw "$img" "$W/out.raw" 2>"$W/convert.err" || rc=$?
    cat "$W/convert.err"
    if ((rc == 0)) && [[ $convert != fail ]]; then
        ((qemu_ok)) || { echo "convert: vdisk read what qemu-img cannot"; return 1; }
        cmp "$W/qemu.raw" "$W/out.raw" || { echo "convert: vdisk reads other bytes than qemu-img"; return 1; }
    else
        [[ $convert != ok ]] || { echo "convert: expected success, got exit $rc"; return 1; }
        refused "$W/convert.err" "$rc" "$names" convert
        [[ ! -e $W/out.raw ]] || { echo "convert: a half-written target was left behind"; return 1; }
    fi

    echo "== vdisk check"
    rc=0
    vd check "$img" >"$W/check.out" 2>"$W/check.err" || rc=$?
    cat "$W/check.out" "$W/check.err"
    ((rc < 124)) || { echo "check: crashed or hung (exit $rc)"; return 1; }
    case $check in
    corrupt) ((rc == 1 || rc == 2)) || { echo "check: expected exit 1 or 2 (corruption), got $rc"; return 1; } ;;
    leak) ((rc == 3)) || { echo "check: expected exit 3 (leaks only), got $rc"; return 1; } ;;
    clean) ((rc == 0)) || { echo "check: expected exit 0, got $rc"; return 1; } ;;
    any) ((rc <= 3)) || { echo "check: exit $rc is not a check result"; return 1; } ;;
    esac
    if ((rc == 1)); then refused "$W/check.err" "$rc" "$names" check; fi
    if ((rc == 2 || rc == 3)); then
        [[ -s $W/check.out || -s $W/check.err ]] || { echo "check: exit $rc and not a word said"; return 1; }
    fi

    case $action in
    snapshot)
        # A snapshot would overflow a refcount: either refuse and leave the
        # image as it was, or manage (copying) with the image still sound.
        echo "== vdisk snapshot -c"
        local after
        rc=0
        vd snapshot -c s-new "$img" 2>"$W/snap.err" || rc=$?
        cat "$W/snap.err"
        ((rc < 124)) || { echo "snapshot: crashed or hung (exit $rc)"; return 1; }
        qemu-img check "$img" >"$W/qcheck.out" 2>&1 && after=0 || after=$?
        ((after == 0 || after == 3)) || { echo "snapshot: the image is corrupt now:"; cat "$W/qcheck.out"; return 1; }
        qemu-img convert -O raw "$img" "$W/now.raw"
        cmp "$W/qemu.raw" "$W/now.raw" || { echo "snapshot: the active image changed"; return 1; }
        if ((rc == 0)); then
            qemu-img convert -O raw -l snapshot.name=s-new "$img" "$W/snap.raw"
            cmp "$W/qemu.raw" "$W/snap.raw"
        else
            refused "$W/snap.err" "$rc" "$names" snapshot
            not grep -qw s-new <(qemu-img snapshot -l "$img")
        fi
        ;;
    snapshot-list)
        echo "== vdisk snapshot -l"
        rc=0
        vd snapshot -l "$img" >/dev/null 2>"$W/snap.err" || rc=$?
        cat "$W/snap.err"
        refused "$W/snap.err" "$rc" "$names" "snapshot -l"
        ;;
    esac
}

while IFS=$'\t' read -r name image info convert check action names description; do
    case_run "$name: $description" corrupt_case "$name" "$image" "$info" "$convert" "$check" "$action" "$names"
done <"$CORPUS/MANIFEST.tsv"

finish
