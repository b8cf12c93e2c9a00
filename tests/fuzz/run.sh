#!/usr/bin/env bash
# The fuzz suite's regression run: small images of every format (made by
# vdisk and qemu-img at test time), and deterministic mutants of them
# (flipped bytes, extreme header fields, truncations), each fed to the fuzz
# target. Every input must be answered without a crash, a sanitizer report
# or a hang. With libFuzzer (meson -Dfuzzing=true), the same seeds make a
# good starting corpus: tests/fuzz/run.sh --corpus DIR writes them there.
# tests/fuzz/found/ keeps the (small) inputs libFuzzer once broke vdisk
# with, so they stay fixed; each runs with the others.
set -uo pipefail
FUZZ=${FUZZ:?path of the fuzz-image program}
VDISK=${VDISK:?path of vdisk}
PY=/usr/bin/python3
T=$(mktemp -d /tmp/vdisk-fuzz.XXXXXX)
trap 'rm -rf "$T"' EXIT
corpus_out=
[[ ${1:-} == --corpus ]] && corpus_out=$2

seeds=$T/seeds
mkdir -p "$seeds"
qemu-img create -q -f raw "$T/src.raw" 3M
qemu-io -f raw -c 'write -P 7 0 64k' -c 'write -P 9 1M 200k' -c 'write -P 5 3070k 2k' "$T/src.raw" >/dev/null
make_seed() { # NAME FORMAT [OPTIONS] [-c]
    local name=$1 fmt=$2 opts=${3:-} c=${4:-}
    "$VDISK" convert -q $c -f raw -O "$fmt" ${opts:+-o "$opts"} "$T/src.raw" "$seeds/$name" ||
        { echo "could not make seed $name"; exit 1; }
}
make_seed v3.qcow2 qcow2 cluster_size=4k
make_seed v2.qcow2 qcow2 compat=0.10,cluster_size=512
make_seed l2x.qcow2 qcow2 extended_l2=on,cluster_size=16k
make_seed z.qcow2 qcow2 compression_type=zstd,cluster_size=4k -c
make_seed c.qcow2 qcow2 cluster_size=4k -c
make_seed a.qcow qcow
make_seed c.qcow qcow "" -c
make_seed a.cow cow
make_seed d.vdi vdi
make_seed s.vdi vdi static=on
make_seed sp.vmdk vmdk subformat=monolithicSparse
make_seed so.vmdk vmdk subformat=streamOptimized
make_seed d.vhd vpc
make_seed f.vhd vpc subformat=fixed
qemu-img snapshot -c s1 "$seeds/v3.qcow2"
printf '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 6144 FLAT "x-flat.vmdk" 0\n' >"$seeds/desc.vmdk"
printf '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 6144 FLAT "fifo" 0\n' >"$seeds/fifo.vmdk"
# Names the target resolves in its confined folder (where the input is
# sub/in.img): files beside it and above it, a FIFO, a symlink, and names
# that leave the folder. They are stored without opening anything.
mkdir -p "$T/mk/sub"
for b in base.raw ../base.raw ../link link ../../etc/passwd /etc/passwd sub/../base.raw; do
    qemu-img create -q -f qcow2 -u -b "$b" -F raw "$seeds/bk-$(echo "$b" | tr -c 'a-z0-9\n' _).qcow2" 1M
done
(cd "$T/mk/sub" && qemu-img create -q -f qcow2 -o data_file=fifo df.qcow2 1M &&
    qemu-img create -q -f qcow2 -o data_file=../fifo df2.qcow2 1M) && cp "$T/mk/sub"/df*.qcow2 "$seeds"/
"$PY" - "$seeds" <<'PY'
import struct, sys, tarfile, io, os
d = sys.argv[1]
# an OVA around the streamOptimized seed
with tarfile.open(os.path.join(d, "app.ova"), "w", format=tarfile.USTAR_FORMAT) as t:
    ovf = b'<?xml version="1.0"?><Envelope/>'
    info = tarfile.TarInfo("app.ovf"); info.size = len(ovf); t.addfile(info, io.BytesIO(ovf))
    t.add(os.path.join(d, "so.vmdk"), "disk1.vmdk")
PY
if [[ -n $corpus_out ]]; then mkdir -p "$corpus_out" && cp "$seeds"/* "$corpus_out"/ && exit 0; fi

mutants=$T/mutants
mkdir -p "$mutants"
"$PY" - "$seeds" "$mutants" <<'PY'
import os, random, struct, sys
seeds, out = sys.argv[1], sys.argv[2]
extreme = [0, 1, 0xff, 0xffff, 0x7fffffff, 0xffffffff, 0x7fffffffffffffff, 0xffffffffffffffff,
           0x100000000, 0x8000000000000000, 512, 4096, 0x1000000000]
for name in sorted(os.listdir(seeds)):
    data = open(os.path.join(seeds, name), "rb").read()
    r = random.Random(name)  # the same mutants every run
    head = min(len(data), 65536)
    for i in range(48):
        b = bytearray(data)
        kind = i % 4
        if kind == 0:  # flip a few bytes in the headers and tables
            for _ in range(r.randint(1, 8)):
                b[r.randrange(head)] ^= 1 << r.randrange(8)
        elif kind == 1:  # an extreme value in a header field
            off = r.randrange(0, min(len(b), 1024) - 8, 4)
            width = r.choice([4, 8])
            fmt = r.choice([">", "<"]) + ("I" if width == 4 else "Q")
            v = r.choice(extreme) & ((1 << (8 * width)) - 1)
            b[off:off + width] = struct.pack(fmt, v)
        elif kind == 2:  # a truncated file
            b = b[:r.randrange(1, len(b))]
        else:  # a table entry far away
            off = r.randrange(512, max(513, head - 8), 8)
            b[off:off + 8] = struct.pack(">Q", r.choice(extreme))
        open(os.path.join(out, "%s.%02d" % (name, i)), "wb").write(b)
PY

found=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/found
n=0 bad=0
for f in "$seeds"/* "$mutants"/* "$found"/*; do n=$((n + 1)); done
# Batches keep the process count low; each batch has a time limit.
mapfile -t inputs < <(ls -d "$seeds"/* "$mutants"/* "$found"/*)
for ((i = 0; i < ${#inputs[@]}; i += 40)); do
    batch=("${inputs[@]:i:40}")
    rc=0
    timeout -k 5 120 "$FUZZ" "${batch[@]}" >"$T/out" 2>&1 || rc=$?
    if ((rc != 0)) || grep -qE 'AddressSanitizer|runtime error:|CRITICAL' "$T/out"; then
        bad=$((bad + 1))
        echo "FAIL batch $((i / 40)) (exit $rc):"
        # find the input that fails, for the report
        for f in "${batch[@]}"; do
            timeout -k 5 30 "$FUZZ" "$f" >/dev/null 2>&1 || { echo "    input: $(basename "$f")"; cp "$f" /tmp/ 2>/dev/null; break; }
        done
        tail -n 5 "$T/out" | sed 's/^/    /'
    fi
done
batches=$(((${#inputs[@]} + 39) / 40))
echo "$n inputs in $batches batches"
echo "$((batches - bad)) passed, $bad failed"
((bad == 0))
