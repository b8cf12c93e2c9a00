#!/bin/bash
# QEMU's own test suite (qemu-iotests of qemu 7.2, from Debian's source
# package) run against qemu-img and against vdisk, to measure how far vdisk
# is a drop-in for qemu-img.
#
#   tests/iotests/run.sh [--vdisk PATH] [--cache DIR] [--formats LIST]
#                        [--jobs N] [--vdisk-only | --report] [TEST...]
#
# The suite is fetched once into the cache (apt-get source qemu with a
# deb-src list of its own: nothing under /etc changes, nothing lands in the
# repository). Each test is run for each format twice: with qemu-img (the
# baseline) and with a folder in which "qemu-img" is a symlink to vdisk, so
# vdisk runs under that name as a drop-in would; qemu-io and qemu-nbd are
# QEMU's in both runs. The result is, per format and overall,
#
#   vdisk passes X of Y tests that qemu-img passes
#
# and the tests vdisk fails, each with the first line where its output
# differs (or the cause known-causes names). The baseline is kept in the
# cache: --vdisk-only reruns only the vdisk side, --report prints the
# figures of the last run again.
#
# Which tests: those that need no virtual machine. QEMU_PROG and QSD_PROG
# point at a stub that refuses to start, and a test is left out when its
# text starts a VM or the storage daemon (the bash helpers _launch_qemu,
# _send_qemu_cmd, _launch_qsd, $QEMU, $QEMU_PROG; in Python iotests.VM or
# QemuStorageDaemon). What is left uses only qemu-img, qemu-io and
# qemu-nbd. The formats: qcow2, raw, vmdk, vdi, qcow and luks.
#
# It takes about 20 minutes on 2 cores and is not part of meson test.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/vdisk-iotests
vdisk=""
formats="qcow2 raw vmdk vdi qcow luks"
jobs=2
vdisk_only=false
report_only=false
tests=()

usage() {
    sed -n '6,7p' "$0" | sed 's/^#  //'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case $1 in
    --vdisk) vdisk=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --formats) formats=${2//,/ }; shift 2 ;;
    --jobs|-j) jobs=$2; shift 2 ;;
    --vdisk-only) vdisk_only=true; shift ;;
    --report) report_only=true; shift ;;
    -h|--help) usage 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; usage 2 >&2 ;;
    *) tests+=("$1"); shift ;;
    esac
done

if [ -z "$vdisk" ]; then
    for b in "$root"/build/tools/vdisk "$root"/build-*/tools/vdisk; do
        if [ -x "$b" ]; then vdisk=$b; break; fi
    done
fi
if [ -z "$vdisk" ] || [ ! -x "$vdisk" ]; then
    echo "run.sh: no vdisk binary (build it, or give --vdisk PATH)" >&2
    exit 2
fi
vdisk=$(readlink -f "$vdisk")
for tool in qemu-img qemu-io qemu-nbd python3 apt-get; do
    if ! command -v $tool >/dev/null; then
        echo "run.sh: $tool is needed (Debian: qemu-utils, python3, apt)" >&2
        exit 2
    fi
done
python=/usr/bin/python3
[ -x $python ] || python=$(command -v python3)

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# ----- the suite, from the Debian source package -----
fetch_suite() {
    local apt=$cache/apt src=$cache/src
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$src"
    cat >"$apt/debian.sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    local aptopts=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/dev/null
        -o Dir::Etc::sourcelist="$apt/debian.sources" -o Dir::State::Lists="$apt/lists"
        -o Dir::Cache="$apt/cache" -o Debug::NoLocking=true)
    echo "Fetching qemu's source package (qemu-iotests) into $cache ..."
    apt-get -q "${aptopts[@]}" update >"$cache/apt.log" 2>&1 ||
        { cat "$cache/apt.log" >&2; exit 2; }
    (cd "$src" && apt-get -q "${aptopts[@]}" source --download-only qemu) >>"$cache/apt.log" 2>&1 ||
        { cat "$cache/apt.log" >&2; exit 2; }
    local orig
    orig=$(ls "$src"/qemu_*.orig.tar.* | head -1)
    # The tests and the Python package they import; nothing else is needed.
    tar -xf "$orig" -C "$src" --wildcards '*/tests/qemu-iotests/*' '*/python/*'
    ls "$src"/qemu_*.dsc >"$cache/version"
}

suite=$(ls -d "$cache"/src/qemu-*/tests/qemu-iotests 2>/dev/null | head -1 || true)
if [ -z "$suite" ] || [ ! -x "$suite/check" ]; then
    fetch_suite
    suite=$(ls -d "$cache"/src/qemu-*/tests/qemu-iotests | head -1)
fi

# ----- which tests: no VM, no storage daemon -----
vm_pattern='\$\{?QEMU\}?([^_A-Za-z]|$)|_launch_qemu|_send_qemu_cmd|_qemu_comm|\$\{?QEMU_PROG|\bQEMU_PROG\b|run_qemu|_launch_qsd|QSD_PROG|qemu-storage-daemon|iotests\.VM|\bVM\(|QemuStorageDaemon|qemu_prog|\bqsd\b'
if [ ${#tests[@]} -eq 0 ]; then
    for f in "$suite"/[0-9][0-9][0-9] "$suite"/tests/*; do
        case $f in *.out* | *~) continue ;; esac
        [ -f "$f" ] && [ -x "$f" ] || continue
        grep -qE "$vm_pattern" "$f" && continue
        tests+=("${f##*/}")
    done
fi

# ----- the programs each run sees -----
bins=$cache/bin
mkdir -p "$bins/vdisk" "$bins/qemu"
cat >"$bins/no-vm" <<'EOF'
#!/bin/sh
# QEMU_PROG and QSD_PROG of this run: no test here may start a VM.
[ "$1" = -machine ] && [ "$2" = help ] && exit 0
echo "no virtual machine in this run of qemu-iotests" >&2
exit 1
EOF
chmod +x "$bins/no-vm"
# A copy, so that a rebuild during the run changes nothing.
cp "$vdisk" "$bins/vdisk.bin"
ln -sfn ../vdisk.bin "$bins/vdisk/qemu-img"
ln -sfn "$(command -v qemu-img)" "$bins/qemu/qemu-img"

results=$cache/results
mkdir -p "$results"

# run_side SIDE FMT: the TAP output of ./check goes to results/SIDE-FMT.tap,
# the outputs of failed tests stay in work/SIDE/FMT.
run_side() {
    local side=$1 fmt=$2 work=$cache/work/$1/$2
    rm -rf "$work"
    mkdir -p "$work/scratch" "$work/sock"
    echo "  $side, $fmt: ${#tests[@]} tests ..." >&2
    (cd "$suite" &&
        env QEMU_IMG_PROG="$bins/$side/qemu-img" QEMU_IO_PROG="$(command -v qemu-io)" \
            QEMU_NBD_PROG="$(command -v qemu-nbd)" QEMU_PROG="$bins/no-vm" QSD_PROG="$bins/no-vm" \
            TEST_DIR="$work/scratch" SOCK_DIR="$work/sock" PATH="$bins/$side:$PATH" \
            $python ./check -tap -"$fmt" -j "$jobs" "${tests[@]}" \
            >"$results/$side-$fmt.tap" 2>"$work/check.err" || true)
}

echo "qemu-iotests from $(cat "$cache/version" 2>/dev/null || echo "$suite"); vdisk: $vdisk" >&2
for fmt in $formats; do
    $report_only && break
    if ! $vdisk_only || [ ! -s "$results/qemu-$fmt.tap" ]; then
        run_side qemu "$fmt"
    fi
    run_side vdisk "$fmt"
done

# ----- the figures -----
# passed FILE: the tests that passed (not skipped) in a TAP file.
passed() { sed -n 's/^ok [a-z0-9]* \([^ ]*\)$/\1/p' "$1" | sort -u; }
# baseline FMT: the tests qemu-img passed among those the vdisk run ran
# (a baseline kept from an older list may hold more).
baseline() {
    comm -12 <(passed "$results/qemu-$1.tap") \
        <(sed -n 's/^\(not \)\{0,1\}ok [a-z0-9]* \([^ ]*\).*$/\2/p' "$results/vdisk-$1.tap" | sort -u)
}

# first_difference FMT TEST: the first line where vdisk's output differs.
first_difference() {
    local fmt=$1 t=$2 bad ref
    bad=$(ls "$cache/work/vdisk/$fmt/scratch/$t/$t.out.bad" \
        "$cache/work/vdisk/$fmt/scratch/$t.out.bad" 2>/dev/null | head -1 || true)
    local file=$suite/$t
    [[ $t =~ ^[0-9]+$ ]] || file=$suite/tests/$t
    for ref in "$file.out.$fmt" "$file.out"; do [ -f "$ref" ] && break; done
    if [ -z "$bad" ] || [ ! -f "$ref" ]; then
        echo "(no output kept)"
        return
    fi
    local line
    line=$(diff "$ref" "$bad" | grep '^[<>]' | head -1 | cut -c1-150 || true)
    echo "${line:-(the same output, another exit status)}"
}

# known_cause FMT TEST: the cause named in known-causes, if any.
known_cause() {
    [ -f "$here/known-causes" ] || return 0
    awk -v t="$2" -v f="$1" '$1 == t && ($2 == f || $2 == "*") { $1 = ""; $2 = ""; sub(/^  /, ""); print; exit }' \
        "$here/known-causes"
}

total_y=0
total_x=0
report=$results/report.txt
: >"$report"
{
    echo "qemu-iotests, no-VM tests: vdisk under the name qemu-img against qemu-img $(qemu-img --version | head -1 | cut -d' ' -f3)"
    echo
    for fmt in $formats; do
        base=$(baseline "$fmt")
        mine=$(passed "$results/vdisk-$fmt.tap")
        y=$(printf '%s\n' "$base" | grep -c . || true)
        x=$(comm -12 <(printf '%s\n' "$base") <(printf '%s\n' "$mine") | grep -c . || true)
        total_y=$((total_y + y))
        total_x=$((total_x + x))
        pct=$(awk -v x="$x" -v y="$y" 'BEGIN { printf "%.0f", y ? 100 * x / y : 100 }')
        printf '%-6s vdisk passes %d of %d tests that qemu-img passes (%s%%)\n' "$fmt" "$x" "$y" "$pct"
    done
    pct=$(awk -v x="$total_x" -v y="$total_y" 'BEGIN { printf "%.0f", y ? 100 * x / y : 100 }')
    printf '%-6s vdisk passes %d of %d tests that qemu-img passes (%s%%)\n' all "$total_x" "$total_y" "$pct"
    echo
    echo "Failing (test, format: cause or first differing line, '<' qemu-img's expected, '>' vdisk's):"
    for fmt in $formats; do
        comm -23 <(baseline "$fmt") <(passed "$results/vdisk-$fmt.tap") |
            while read -r t; do
                [ -n "$t" ] || continue
                cause=$(known_cause "$fmt" "$t")
                [ -n "$cause" ] || cause=$(first_difference "$fmt" "$t")
                printf '  %s %s: %s\n' "$t" "$fmt" "$cause"
            done
    done
} | tee "$report"
echo >&2
echo "The report is $report; vdisk's outputs are under $cache/work/vdisk." >&2
