#!/usr/bin/env bash
# vdisk run under the name qemu-img speaks as qemu-img 7.2: the same
# "Formatting" line (every option and its default, for each format), the
# same "-o help" list, the "qemu-img:" prefix and qemu-img's words for the
# errors scripts see, byte for byte beside the real qemu-img in the same
# run. Under its own name vdisk keeps its friendlier voice.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_programs

# same_words ARGS...: qemu-img and vdisk-as-qemu-img print the same stdout
# and stderr and exit alike (files they create are removed in between).
same_words() {
    local qrc=0 vrc=0
    rm -rf q v && mkdir q v
    local try
    for try in 1 2 3; do
        qrc=0
        rm -rf q && mkdir q
        (cd q && qemu-img "$@" >out 2>err) || qrc=$?
        # qemu's LUKS key setup fails so when the machine is busy: try again
        grep -q 'Unable to get accurate CPU usage' q/err || break
    done
    (cd v && qvd "$@" >out 2>err) || vrc=$?
    if ((qrc != vrc)) || ! cmp -s q/out v/out || ! cmp -s q/err v/err; then
        echo "qemu-img $*: exit $qrc, as qemu-img vdisk exits $vrc"
        diff q/out v/out | sed 's/^/  out /'
        diff q/err v/err | sed 's/^/  err /'
        return 1
    fi
}

t_formatting() {
    local fmt
    echo x >pw
    for args in "-f qcow2 i.qcow2 1M" "-f qcow2 i.qcow2 64M" \
        "-f qcow2 -o compat=0.10,cluster_size=4k,preallocation=metadata i.qcow2 1M" \
        "-f qcow2 -o refcount_bits=1,lazy_refcounts=on,extended_l2=on,cluster_size=64k i.qcow2 1M" \
        "-f qcow2 -o compression_type=zstd,size=2M i.qcow2" \
        "-f qcow2 --object secret,id=s0,file=../pw -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=100 i.qcow2 1M" \
        "-f raw i.raw 1M" "-f raw -o preallocation=falloc i.raw 1M" \
        "-f vmdk i.vmdk 1M" "-f vmdk -o subformat=streamOptimized,zeroed_grain=on i.vmdk 1M" \
        "-f vmdk -o adapter_type=lsilogic,toolsversion=2,hwversion=4 i.vmdk 1M" \
        "-f vdi i.vdi 1M" "-f vdi -o static=on i.vdi 1M" "-f qcow i.qcow 1M" \
        "-f luks --object secret,id=s0,file=../pw -o key-secret=s0,iter-time=100 i.luks 1M" \
        "-f vpc i.vhd 1M"; do
        # shellcheck disable=SC2086 # one argument list per string
        same_words create $args
        # under its own name: the same line (it is qemu-img's line, in both voices)
        # shellcheck disable=SC2086
        (cd v && rm -f i.* && vd create $args >out.vdisk)
        cmp q/out v/out.vdisk
    done
    # an overlay names its backing file and format where qemu-img does
    qemu-img create -f qcow2 base.qcow2 1M >/dev/null
    same_words create -f qcow2 -b ../base.qcow2 -F qcow2 o.qcow2
    same_words create -f qcow2 -b ../nobase.qcow2 -F qcow2 o.qcow2
    same_words create -f qcow2 -b ../nobase.qcow2 -F qcow2 o.qcow2 1M
    same_words create -f qcow -b ../nobase.qcow -F qcow o.qcow 1M
    qemu-img create -f qcow base.qcow 1M >/dev/null
    same_words create -f qcow -b ../base.qcow -F qcow o.qcow
}
case_run "the Formatting line of every format, as qemu-img prints it" t_formatting

t_option_help() {
    local fmt
    for fmt in qcow2 vmdk qcow vpc; do
        same_words create -f "$fmt" -o help
        same_words create -f "$fmt" -o '?'
    done
    # vdisk's raw, luks and vdi take options qemu-img's formats leave to
    # the file layer or lack (preallocation, a VDI's backing file): every
    # line of qemu-img's list is in vdisk's
    for fmt in raw luks vdi; do
        qemu-img create -f "$fmt" -o help >q.help
        qvd create -f "$fmt" -o help >v.help
        grep '^  ' q.help | while read -r line; do grep -qxF "  $line" v.help; done
    done
}
case_run "create -o help lists each option with its description" t_option_help

t_errors() {
    qemu-img create -f qcow2 c.qcow2 1M >/dev/null
    qemu-img create -f raw r.raw 1M >/dev/null
    same_words info nofile
    same_words info -f foo ../r.raw
    same_words info -f qcow2 ../r.raw
    same_words map -f qcow2 ../r.raw
    same_words create -f foo x 1M
    same_words create -f qcow2 x.qcow2
    same_words create -f qcow2 x.qcow2 1Q
    same_words create -f qcow2 x.qcow2 9E
    same_words create -f qcow2 -o foo=1 x.qcow2 1M
    same_words convert -O foo ../r.raw o
    same_words info
    same_words resize ../c.qcow2
    same_words info -z ../r.raw
    same_words bogus
    same_words
    local o
    for o in cluster_size=3000 compat=0.10,lazy_refcounts=on compat=0.42 preallocation=1234 \
        size=-1024 refcount_bits=3 compression_type=foo extended_l2=on,cluster_size=4k; do
        same_words create -f qcow2 -o "$o" x.qcow2 64M
    done
    same_words create -f qcow2 -o size=10M x.qcow2 20M
    same_words create -f qcow2 -o size=foo x.qcow2
    # a backing file without its format is refused as qemu-img 7.2 refuses it
    qemu-img create -f qcow2 -b c.qcow2 -F qcow2 o.qcow2 >/dev/null
    same_words rebase -u -b c.qcow2 ../o.qcow2
    same_words convert -O qcow2 -B ../c.qcow2 ../c.qcow2 n.qcow2
    same_words create -f qcow2 -b ../c.qcow2 n.qcow2
    same_words convert -O qcow2 -B ../c.qcow2 -o backing_fmt=qcow2 ../c.qcow2 n.qcow2
    same_words resize -f raw ../r.raw 512K
    same_words create -f vmdk -o subformat=monolithicFlat,zeroed_grain=on f.vmdk 1M
    # vmdk images qemu refuses to open, in its words
    printf '# Disk DescriptorFile\nversion=1\nCID=58ab4847\nparentCID=ffffffff\ncreateType="vmfs"\n\n# Extent description\nRW 12582912 VMFS "dummy.vmdk" 1\n' >vmfs.vmdk
    same_words info ../vmfs.vmdk
    qemu-img create -q -f vmdk trunc.vmdk 100G
    truncate -s 10M trunc.vmdk
    same_words info ../trunc.vmdk
    # a capacity whose grain directory cannot be held (qemu-iotests 059, afl9)
    qemu-img create -q -f vmdk huge.vmdk 1M
    printf '\x01\x00\x00\x1b\xfc\xff\xff\x1e' | dd of=huge.vmdk bs=1 seek=12 conv=notrunc status=none
    same_words info ../huge.vmdk
    # measure's usage errors, in qemu-img's order
    same_words measure
    same_words measure -f qcow2
    same_words measure -l snap1
    same_words measure --image-opts
    same_words measure -o ,
    same_words measure -l snapshot.foo=bar
    same_words measure --output foo
    same_words measure --size -1
    same_words measure --size 2G ../r.raw
    same_words check -f raw ../r.raw
    same_words commit -f raw ../r.raw
}
case_run "errors as qemu-img words them, with its prefix" t_errors

# A VDI whose header qemu refuses, and one whose block map runs past the
# end of the file, which qemu opens for info (qemu-iotests 084).
t_vdi_header() {
    poke() { printf "$2" | dd of=d.vdi bs=1 seek="$1" conv=notrunc status=none; }
    qemu-img create -q -f vdi d.vdi 64M
    poke 368 '\x00\x00\x00\xf8\xff\xff\x01\x00' # the largest disk size
    poke 384 '\x80\xff\xff\x1f' # and its blocks: the map is 2 GiB
    same_words info ../d.vdi
    expect_exit 1 vd map d.vdi 2>err
    grep -q 'block map entry 64 points past the end of the file' err
    expect_exit 1 vd resize d.vdi 1G 2>err
    grep -q 'extends past the end of the file' err
    poke 368 '\x00\x00\x01\xf8\xff\xff\x01\x00' # 64 KiB more
    same_words info ../d.vdi
    poke 368 '\x00\x00\x00\x04\x00\x00\x00\x00' # 64 MiB
    poke 384 '\x3f\x00\x00\x00' # in 63 blocks
    same_words info ../d.vdi
    poke 384 '\x81\xff\xff\x1f'
    same_words info ../d.vdi
    poke 384 '\x40\x00\x00\x00'
    same_words info ../d.vdi
    poke 376 '\xff\xff\x0f\x00' # a block size of 1 MiB - 1
    same_words info ../d.vdi
}
case_run "VDI headers qemu refuses or opens, in its words" t_vdi_header

# A backing file not of the format -F names, or a format that does not
# exist (even with -u, and then nothing is created), in qemu's words; a
# commit that would make a probed raw backing file probe as another format
# is refused as qemu refuses it, and the base stays raw (qemu-iotests 301).
t_backing_format() {
    qemu-img create -q -f qcow b.qcow 32M
    same_words create -f qcow -b ../b.qcow -F vmdk n.qcow 32M
    same_words create -f qcow -b ../b.qcow -F garbage n.qcow 32M
    same_words create -f qcow -u -b ../b.qcow -F garbage n.qcow 32M
    same_words info -f vmdk ../b.qcow
    rm b.qcow
    truncate -s 32M b.raw
    qemu-img create -q -f qcow2 h.qcow2 32M
    truncate -s 32M h.qcow2
    local tool
    for tool in qemu-img qvd; do
        rm -f o.qcow && qemu-img create -q -f qcow -b b.raw -F raw o.qcow 32M
        qemu-img convert -n -f raw -O qcow h.qcow2 o.qcow
        expect_exit 1 $tool commit -f qcow o.qcow 2>"err.$tool"
        qemu-img info b.raw | grep -qx 'file format: raw'
        cmp -n 512 b.raw /dev/zero
    done
    diff err.qemu-img err.qvd
}
case_run "backing formats and a probed raw base as qemu-img treats them" t_backing_format

# A LUKS passphrase that is not UTF-8 is refused at create, as qemu takes
# it as text (an image made with it would be one qemu cannot open), and the
# new file is not left behind (qemu-iotests 282).
t_secret_not_utf8() {
    printf ':<;\xff' >nu
    same_words create -f luks --object secret,id=sec0,file=../nu -o key-secret=sec0 vol.img 4M
    [[ ! -e v/vol.img ]]
    same_words create -f qcow2 --object secret,id=sec0,file=../nu \
        -o encrypt.format=luks,encrypt.key-secret=sec0 e.qcow2 1M
    [[ ! -e v/e.qcow2 ]]
    expect_exit 1 vd create -q -f luks --passphrase-file nu vol.img 4M 2>err
    grep -q 'not valid UTF-8' err
    [[ ! -e vol.img ]]
}
case_run "a passphrase that is not UTF-8 is refused as qemu-img refuses it" t_secret_not_utf8

t_own_voice() {
    qemu-img create -f raw r.raw 1M >/dev/null
    expect_exit 1 vd info -f qcow2 r.raw 2>err
    grep -q "^vdisk: Could not open 'r.raw': Image is not in qcow2 format: " err
    expect_exit 1 vd create -f qcow2 x.qcow2 2>err
    grep -q "^vdisk: x.qcow2: Image creation needs a size parameter: give one" err
    expect_exit 1 vd info 2>err
    grep -q "^Try 'vdisk info --help' for more information\.$" err
    not grep -q qemu-img err
    vd --version | grep -q '^vdisk version '
    qvd --version | grep -q '^qemu-img version 7\.2\.'
}
case_run "under its own name vdisk keeps its voice" t_own_voice

t_json_names() {
    qemu-img create -f qcow2 c.qcow2 1M >/dev/null
    qemu-io -f qcow2 -c 'write -P 7 0 64k' c.qcow2 >/dev/null
    same_words info 'json:{"driver":"qcow2","file.filename":"../c.qcow2"}'
    same_words info "json:{'driver': 'qcow2', 'file': {'driver': 'file', 'filename': '../c.qcow2'}}"
    same_words map --output=json 'json:{"driver":"qcow2","file":{"filename":"../c.qcow2"}}'
    same_words compare -f qcow2 -F qcow2 ../c.qcow2 'json:{"driver":"qcow2","file.filename":"../c.qcow2"}'
    # and under vdisk's own name
    vd info 'json:{"driver":"qcow2","file.filename":"c.qcow2"}' | grep -qx 'file format: qcow2'
}
case_run "json: file names as qemu-img takes them" t_json_names

t_file_names() {
    # "file:NAME" names the file NAME, even one with a ':' in its name
    same_words create -f qcow2 file:x:y.qcow2 1M
    qemu-img create -q -f qcow2 base.qcow2 1M
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 file:top:1.qcow2
    same_words info file:../top:1.qcow2
    same_words map file:../top:1.qcow2
    vd create -q -f raw file:a:b.raw 1M
    [[ -f a:b.raw ]]
}
case_run "file: names as qemu-img takes them" t_file_names

t_file_options() {
    local fmt
    for fmt in qcow2 raw vmdk vdi qcow vpc; do
        same_words create -f "$fmt" -o extent_size_hint=0 "i.$fmt" 1M
        same_words create -f "$fmt" -o nocow=on,extent_size_hint=1M "i.$fmt" 1M
    done
}
case_run "the file options every format takes (nocow, extent_size_hint)" t_file_options

t_progress() {
    command -v script >/dev/null || { echo "script(1) missing: progress on a terminal not tested"; return 0; }
    qemu-img create -f raw p.raw 4M >/dev/null
    qemu-io -f raw -c 'write -P 1 0 1M' p.raw >/dev/null
    mkdir -p "$T/as-qemu" && ln -sfn "$VDISK" "$T/as-qemu/qemu-img"
    # on a terminal: qemu-img's lines with -p, byte for byte; nothing without -p
    script -qec "qemu-img convert -p -f raw -O qcow2 p.raw q.qcow2" /dev/null >q.tty
    script -qec "$T/as-qemu/qemu-img convert -p -f raw -O qcow2 p.raw v.qcow2" /dev/null >v.tty
    cmp q.tty v.tty
    rm -f v.qcow2
    script -qec "$T/as-qemu/qemu-img convert -f raw -O qcow2 p.raw v.qcow2" /dev/null >v.tty
    [[ ! -s v.tty ]]
    qemu-img compare p.raw v.qcow2
}
case_run "progress as qemu-img's on a terminal" t_progress

# features IMG BITS TABLE: set the incompatible feature BITS (a mask, in Python) of a
# qcow2 v3 image and make TABLE (bytes, Python notation) its feature name
# table, as qemu-iotests 036 does with qcow2.py.
features() {
    "$PY" - "$@" <<'PY'
import struct, sys
path, bits, table = sys.argv[1], eval(sys.argv[2]), eval(sys.argv[3])
f = open(path, "r+b")
h = bytearray(f.read(65536))
struct.pack_into(">Q", h, 72, struct.unpack_from(">Q", h, 72)[0] | bits)
off, exts = struct.unpack_from(">I", h, 100)[0], []
while True:
    t, n = struct.unpack_from(">II", h, off)
    if t == 0:
        break
    if t != 0x6803f857:
        exts.append((t, bytes(h[off + 8:off + 8 + n])))
    off += 8 + (n + 7) // 8 * 8
if table:
    exts.append((0x6803f857, table))
out = b"".join(struct.pack(">II", t, len(d)) + d + b"\0" * (-len(d) % 8) for t, d in exts)
out += b"\0" * 8
start = struct.unpack_from(">I", h, 100)[0]
h[start:start + len(out) + 8] = out + b"\0" * 8
f.seek(0)
f.write(h)
PY
}

t_unknown_features() {
    local table name='b"\x00\x3d" + b"test1".ljust(46, b"\0") + b"\x00\x3e" + b"test2".ljust(46, b"\0")'
    # no table, a table cut short naming one bit, a table naming some bits
    # and others of other types: names in the table's order, the rest as a
    # mask (036)
    for table in 'b""' 'b"\x00\x3fTest feature"' "$name" \
        "b'\x01\x3d' + b'x'.ljust(46, b'\0') + $name" \
        "b'\x00\x3e' + b'second'.ljust(46, b'\0') + b'\x00\x3d' + b'first'.ljust(46, b'\0')"; do
        qemu-img create -q -f qcow2 f.qcow2 1M
        features f.qcow2 "7 << 61" "$table"
        same_words info ../f.qcow2
        same_words check ../f.qcow2
    done
    # one unknown bit without a name
    qemu-img create -q -f qcow2 f.qcow2 1M
    features f.qcow2 "1 << 40" 'b""'
    same_words info ../f.qcow2
    # under vdisk's name: the bit numbers too
    expect_exit 1 vd info f.qcow2 2>err
    grep -q 'unknown incompatible feature bit 40 (mask 0x10000000000)$' err
}
case_run "unknown incompatible features named as qemu-img names them" t_unknown_features

t_image_too_big() {
    # a virtual size of 1 EiB needs more L1 entries than qemu counts (054)
    qemu-img create -q -f qcow2 b.qcow2 4G
    "$PY" -c 'import struct,sys; f=open(sys.argv[1],"r+b"); f.seek(24); f.write(struct.pack(">Q", 1 << 60))' b.qcow2
    same_words info ../b.qcow2
    same_words check ../b.qcow2
    expect_exit 1 vd info b.qcow2 2>err
    grep -q "Image is too big: the virtual size $((1 << 60)) needs" err
}
case_run "a virtual size too big for qemu's L1 index: qemu-img's words" t_image_too_big

t_refcount_overflow() {
    # 112: a snapshot with 1-bit refcounts, a cluster referenced twice
    qemu-img create -q -f qcow2 -o refcount_bits=1 r.qcow2 64M
    qio qcow2 r.qcow2 'write 0 512'
    same_words snapshot -c foo ../r.qcow2
    qemu-img create -q -f qcow2 -o refcount_bits=1 c.qcow2 64M
    qio qcow2 c.qcow2 'write 0 64k'
    printf '\x80\x00\x00\x00\x00\x05\x00\x00' | dd of=c.qcow2 bs=1 seek=$((0x40008)) conv=notrunc 2>/dev/null
    same_words check ../c.qcow2
    cp c.qcow2 c2.qcow2
    (cd q && qemu-img check -r all ../c.qcow2 >out 2>&1) || true
    (cd v && qvd check -r all ../c2.qcow2 >out 2>&1) || true
    sed 's/c2.qcow2/c.qcow2/' v/out | diff q/out -
    cmp c.qcow2 c2.qcow2   # nothing repaired: the refcount width is too small
    # 080: an L1 table too small for the virtual size
    qemu-img create -q -f qcow2 l.qcow2 64M
    qemu-img snapshot -c foo l.qcow2
    printf '\x00\x00\x00\x00' | dd of=l.qcow2 bs=1 seek=36 conv=notrunc 2>/dev/null
    same_words info ../l.qcow2
}
case_run "refcount overflow and a small L1 table in qemu-img's words" t_refcount_overflow

t_damaged_snapshot_l1() {
    # 080: a snapshot whose L1 table is misaligned or too large; the image
    # opens, the snapshot is refused where it is used, check names it
    local poke
    for poke in '\x00\x00\x00\x00\x00\x40\x02\x00@0' '\x10\x00\x00\x00@8'; do
        qemu-img create -q -f qcow2 s.qcow2 64M
        qio qcow2 s.qcow2 'write 0 512'
        qemu-img snapshot -c test s.qcow2
        local table
        table=$("$PY" -c 'import struct,sys; f=open(sys.argv[1],"rb"); f.seek(64); print(struct.unpack(">Q", f.read(8))[0])' s.qcow2)
        printf "${poke%@*}" | dd of=s.qcow2 bs=1 seek=$((table + ${poke#*@})) conv=notrunc 2>/dev/null
        vd info s.qcow2 >/dev/null
        vd convert -O raw s.qcow2 active.raw
        same_words convert -l test ../s.qcow2 x.raw
        same_words snapshot -a test ../s.qcow2
        same_words snapshot -d test ../s.qcow2
        same_words check ../s.qcow2
        same_words amend -o compat=0.10 ../s.qcow2
    done
}
case_run "a snapshot with a damaged L1 table: the image opens, the snapshot is refused" t_damaged_snapshot_l1

t_snapshot_table_full() {
    # qemu's limit of 65536 snapshots: the next is refused before anything changes
    qemu-img create -q -f qcow2 f.qcow2 64M
    "$PY" - f.qcow2 <<'PYEOF'
import os, struct, sys
f = open(sys.argv[1], 'r+b')
off = (os.path.getsize(sys.argv[1]) + 65535) // 65536 * 65536
entry = struct.pack('>QIHHIIQII', 0, 0, 1, 0, 0, 0, 0, 0, 0) + b'1' + bytes(7)
f.seek(off); f.write(entry * 65536)
f.seek(60); f.write(struct.pack('>IQ', 65536, off))
PYEOF
    cp f.qcow2 before.qcow2
    same_words snapshot -c test ../f.qcow2
    cmp f.qcow2 before.qcow2
    expect_exit 1 vd snapshot -c test f.qcow2 2>err.txt
    grep -q "the snapshot table is full" err.txt
}
case_run "the 65537th snapshot is refused as qemu-img refuses it" t_snapshot_table_full

finish
