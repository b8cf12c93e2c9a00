# shellcheck shell=bash
# What the benchmark scripts share; sourced after they set their defaults
# (size, runs, base) and before they read their arguments:
#
#   bench_args "$@"                  --size, --runs, --dir and --help
#   bench_need_space DIR FACTOR      exit unless DIR has FACTOR x size free
#   bench_vdi_source DIR OUT.vdi     the VirtualBox disk every import row reads
#   bench_median VALUE...            the median
#   bench_median_run CLEAN CMD...    the median wall time of runs runs of CMD
#   bench_rbd_used POOL/IMAGE        bytes an RBD image takes in its cluster
#   bench_rbd_row LABEL SECONDS ...  qemu-img's import beside it, as a table row
#
# The source is qemu-img's vdi of a sparse raw image: mkimage.py's of the
# shared acceptance checks (MKIMAGE), or where it is missing half of the
# 64 KiB chunks written, fixed seed, so that every run reads the same disk.

BENCH_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MKIMAGE=${MKIMAGE:-$BENCH_REPO/../shared/acceptance/mkimage.py}
QEMU_IMG=${QEMU_IMG:-qemu-img}

# bench_args ARGS...: set size, runs and base from --size, --runs and --dir;
# --help prints the script's header comment.
# shellcheck disable=SC2034  # the caller's variables
bench_args() {
    while (($#)); do
        case $1 in
        --size) size=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --dir) base=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
        esac
    done
}

# bench_need_space DIR FACTOR: exit 1, saying so, unless DIR's file system
# has FACTOR times the source's size free.
bench_need_space() {
    local need avail
    need=$(($(numfmt --from=iec "$size") * $2))
    avail=$(($(df -B1 --output=avail "$1" | tail -1)))
    ((avail > need)) ||
        { echo "$1 has $(numfmt --to=iec "$avail") free; the benchmark needs about $(numfmt --to=iec "$need")" >&2; exit 1; }
}

# bench_vdi_source DIR OUT: a size-byte VirtualBox disk at OUT, made in DIR.
bench_vdi_source() {
    local raw=$1/src.raw
    echo "making a $size VirtualBox disk in $1 ..." >&2
    if [[ -r $MKIMAGE ]]; then
        /usr/bin/python3 "$MKIMAGE" --size "$size" --seed 1 -q "$raw"
    else
        echo "$MKIMAGE not found: using a simple generator" >&2
        /usr/bin/python3 - "$raw" "$(numfmt --from=iec "$size")" <<'PY'
import random, sys
path, size = sys.argv[1], int(sys.argv[2])
r, C = random.Random(1), 1 << 16
with open(path, "wb") as f:
    f.truncate(size)
    for i in range(0, size // C, 2):          # every other 64 KiB chunk
        f.seek(i * C)
        f.write(r.randbytes(C))
PY
    fi
    "$QEMU_IMG" convert -f raw -O vdi "$raw" "$2"
    rm -f "$raw"
}

# bench_median VALUE...: the median of the values.
bench_median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# bench_median_run "CLEAN [ARG...]" CMD...: the median wall time of runs
# runs of CMD, its output dropped; the command CLEAN ARG... (a function of
# the caller: remove what the run before made) and sync before each run.
bench_median_run() {
    local -a clean
    local i t times=() timing
    read -ra clean <<<"$1"
    shift
    timing=$(mktemp)
    for ((i = 0; i < runs; i++)); do
        "${clean[@]}"
        sync
        /usr/bin/time -f '%e' -o "$timing" "$@" >/dev/null || { echo "failed: $*" >&2; rm -f "$timing"; return 1; }
        read -r t <"$timing"
        times+=("$t")
    done
    rm -f "$timing"
    bench_median "${times[@]}"
}

# bench_rbd_used POOL/IMAGE: the bytes the image takes in its cluster.
bench_rbd_used() {
    rbd du --format json "$1" |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["images"][0]["used_size"])'
}

# bench_rbd_row LABEL SECONDS SOURCE RBD-OPTIONS: qemu-img convert of SOURCE
# into bench/q (-t writeback: it flushes before it exits), timed as
# bench_median_run times it, beside vdisk's SECONDS for bench/v: the table
# row, its goal met when vdisk is no slower and no less sparse. The caller
# defines remove (its clean-up of an image) for both.
bench_rbd_row() {
    local qt vu qu ratio met=no
    qt=$(bench_median_run "remove q" "$QEMU_IMG" convert -t writeback -O raw "$3" "rbd:bench/q$4")
    vu=$(bench_rbd_used bench/v)
    qu=$(bench_rbd_used bench/q)
    ratio=$(awk -v a="$2" -v b="$qt" 'BEGIN { printf (b > 0 ? "%.2f" : "n/a"), a / b }')
    if awk -v r="$ratio" 'BEGIN { exit !(r != "n/a" && r <= 1.0) }' && ((vu <= qu)); then met=yes; fi
    echo "| $1 | $2 | $qt | $ratio | ≤ 1.00, as sparse | $(numfmt --to=iec "$vu") | $(numfmt --to=iec "$qu") | $met |"
}
