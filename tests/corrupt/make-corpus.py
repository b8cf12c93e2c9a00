#!/usr/bin/python3
"""Make the corrupted-image corpus in a directory (qcow2, and a few tables
of the other formats), from small images that qemu-img and qemu-io make on
the spot (nothing binary lives in the repo).

    /usr/bin/python3 make-corpus.py OUTDIR

Writes OUTDIR/*.qcow2 and OUTDIR/MANIFEST.tsv, one case a line:

    name  image  info  convert  check  action  names  description

where info and convert are "fail" (vdisk must refuse with a clear error) or
"ok"/"any" (must succeed / may succeed, and then must read what qemu-img
reads), check is "corrupt" (exit 1 or 2), "leak" (exit 3), "clean" (0) or
"any", action names an extra step run.sh performs ("-" for none), and names lists
the file names (comma separated) of which an error message must mention one.
"""
import os
import struct
import subprocess
import sys

HDR_MAGIC, HDR_VERSION = 0, 4
HDR_BACKING_OFFSET, HDR_BACKING_SIZE = 8, 16
HDR_CLUSTER_BITS, HDR_SIZE = 20, 24
HDR_CRYPT, HDR_L1_SIZE, HDR_L1_OFFSET = 32, 36, 40
HDR_RT_OFFSET, HDR_RT_CLUSTERS = 48, 56
HDR_NB_SNAPSHOTS, HDR_SNAPSHOTS_OFFSET = 60, 64
HDR_INCOMPAT, HDR_COMPAT, HDR_AUTOCLEAR = 72, 80, 88
HDR_REFCOUNT_ORDER, HDR_LENGTH = 96, 100
HDR_V3_LEN = 104

L2E_OFFSET_MASK = 0x00FFFFFFFFFFFE00
QCOW_OFLAG_COPIED = 1 << 63
QCOW_OFLAG_COMPRESSED = 1 << 62
GiB = 1 << 30

out = sys.argv[1]
cases = []


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def path(name):
    return os.path.join(out, name)


def qemu_image(name, size="4M", opts="", writes=(), snapshot=None):
    p = path(name)
    run("qemu-img", "create", "-q", "-f", "qcow2", *(["-o", opts] if opts else []), p, size)
    if writes:
        cmd = ["qemu-io", "-f", "qcow2"]
        for w in writes:
            cmd += ["-c", w]
        run(*cmd, p)
    if snapshot:
        run("qemu-img", "snapshot", "-c", snapshot, p)
    return p


class Image:
    """A qcow2 file opened for editing; fields are read and written big-endian."""

    def __init__(self, p):
        self.f = open(p, "r+b")

    def u32(self, off, val=None):
        return self._field(off, ">I", val)

    def u64(self, off, val=None):
        return self._field(off, ">Q", val)

    def _field(self, off, fmt, val):
        self.f.seek(off)
        if val is None:
            return struct.unpack(fmt, self.f.read(struct.calcsize(fmt)))[0]
        self.f.write(struct.pack(fmt, val))
        return val

    @property
    def cluster_size(self):
        return 1 << self.u32(HDR_CLUSTER_BITS)

    def l2_table(self, l1_index=0):
        return self.u64(self.u64(HDR_L1_OFFSET) + 8 * l1_index) & L2E_OFFSET_MASK

    def l2_entry_offset(self, guest_offset):
        cs = self.cluster_size
        per_l2 = cs // 8
        cluster = guest_offset // cs
        return self.l2_table(cluster // per_l2) + 8 * (cluster % per_l2)

    def refblock(self, index=0):
        return self.u64(self.u64(HDR_RT_OFFSET) + 8 * index)

    def size(self):
        return self.f.seek(0, 2)

    def truncate(self, n):
        self.f.truncate(n)

    def write(self, off, data):
        self.f.seek(off)
        self.f.write(data)

    def close(self):
        self.f.close()


def case(name, image, info, convert, check, action, description, names=()):
    names = ",".join([os.path.basename(image), *names])
    cases.append((name, os.path.basename(image), info, convert, check, action, names, description))


def edited(name, description, edit, info="fail", convert="fail", check="corrupt", action="-",
           base=None, **kw):
    """Copy a fresh qemu-img image, apply edit(Image), and record the case."""
    p = base(name + ".qcow2") if base else qemu_image(name + ".qcow2", **kw)
    img = Image(p)
    edit(img)
    img.close()
    case(name, p, info, convert, check, action, description)


DATA = ("write -P 0x11 0 64k", "write -P 0x22 1M 128k", "write -P 0x33 3M 64k")


def plain(name):
    return qemu_image(name, writes=DATA)


def compressed(name):
    return qemu_image(name, writes=("write -P 0x11 0 64k", "write -c -P 0x44 2M 64k",
                                    "write -c -P 0x45 2112k 64k"))


def with_snapshot(name):
    return qemu_image(name, writes=DATA, snapshot="s1")


# ---- header fields that make the image unopenable ----
edited("l1-size-huge", "L1 table size of 2^31-1 entries",
       lambda i: i.u32(HDR_L1_SIZE, 0x7FFFFFFF), base=plain)
edited("l1-size-too-small", "L1 table of 0 entries for a 4 MiB disk",
       lambda i: i.u32(HDR_L1_SIZE, 0), base=plain)
edited("l1-offset-unaligned", "L1 table offset not cluster aligned",
       lambda i: i.u64(HDR_L1_OFFSET, i.u64(HDR_L1_OFFSET) + 8), base=plain)
edited("l1-offset-huge", "L1 table offset 0x7fffffffffff0000",
       lambda i: i.u64(HDR_L1_OFFSET, 0x7FFFFFFFFFFF0000), base=plain)
edited("l1-offset-past-eof", "L1 table offset 1 GiB in a small file",
       lambda i: i.u64(HDR_L1_OFFSET, GiB), base=plain, info="any")
edited("refcount-table-past-eof", "refcount table offset 1 GiB in a small file",
       lambda i: i.u64(HDR_RT_OFFSET, GiB), base=plain, info="any", convert="any")
edited("refcount-table-unaligned", "refcount table offset not cluster aligned",
       lambda i: i.u64(HDR_RT_OFFSET, i.u64(HDR_RT_OFFSET) + 512), base=plain)
edited("refcount-table-huge", "refcount table of 2^24 clusters",
       lambda i: i.u32(HDR_RT_CLUSTERS, 0xFFFFFF), base=plain)
edited("cluster-bits-0", "cluster_bits 0", lambda i: i.u32(HDR_CLUSTER_BITS, 0), base=plain)
edited("cluster-bits-8", "cluster_bits 8 (256-byte clusters)",
       lambda i: i.u32(HDR_CLUSTER_BITS, 8), base=plain)
edited("cluster-bits-30", "cluster_bits 30 (1 GiB clusters)",
       lambda i: i.u32(HDR_CLUSTER_BITS, 30), base=plain)
edited("header-length-small", "header_length 50, shorter than a v3 header",
       lambda i: i.u32(HDR_LENGTH, 50), base=plain)
edited("header-length-huge", "header_length 0xffffff00",
       lambda i: i.u32(HDR_LENGTH, 0xFFFFFF00), base=plain)
edited("version-4", "qcow2 version 4", lambda i: i.u32(HDR_VERSION, 4), base=plain)
edited("refcount-order-7", "refcount_order 7 (128-bit refcounts)",
       lambda i: i.u32(HDR_REFCOUNT_ORDER, 7), base=plain)
edited("incompatible-feature-unknown", "unknown incompatible feature bit 40",
       lambda i: i.u64(HDR_INCOMPAT, i.u64(HDR_INCOMPAT) | 1 << 40), base=plain)
edited("virtual-size-huge", "virtual size 2^63 - 512",
       lambda i: i.u64(HDR_SIZE, (1 << 63) - 512), base=plain)


def long_backing_name(i):
    i.write(4096, b"b" * 5000)
    i.u64(HDR_BACKING_OFFSET, 4096)
    i.u32(HDR_BACKING_SIZE, 5000)


edited("backing-name-5000", "backing file name of 5000 bytes", long_backing_name, base=plain)


def backing_name_past_eof(i):
    i.u64(HDR_BACKING_OFFSET, GiB)
    i.u32(HDR_BACKING_SIZE, 16)


edited("backing-name-past-eof", "backing file name stored past the end of the file",
       backing_name_past_eof, base=plain)


def header_extension_huge(i):
    # a header extension, right after the header, whose length runs past the cluster
    i.write(i.u32(HDR_LENGTH), struct.pack(">II", 0x12345678, 0x7FFFFFF0))


edited("header-extension-huge", "header extension of length 0x7ffffff0",
       header_extension_huge, base=plain)
edited("snapshot-count-huge", "nb_snapshots 0xffffffff",
       lambda i: i.u32(HDR_NB_SNAPSHOTS, 0xFFFFFFFF), base=with_snapshot)
edited("snapshot-table-past-eof", "snapshot table offset 1 GiB in a small file",
       lambda i: i.u64(HDR_SNAPSHOTS_OFFSET, GiB), base=with_snapshot, info="any",
       convert="any", action="snapshot-list")


def truncated_header(n):
    return lambda i: i.truncate(n)


edited("truncated-header-50", "file cut to 50 bytes, inside the v2 header",
       truncated_header(50), base=plain)
edited("truncated-header-80", "file cut to 80 bytes, inside the v3 header",
       truncated_header(80), base=plain)

# ---- tables that point where they must not ----


def l1_entry_past_eof(i):
    off = i.u64(HDR_L1_OFFSET)
    i.u64(off, QCOW_OFLAG_COPIED | GiB)


edited("l1-entry-past-eof", "L1 entry 0 points 1 GiB into a small file", l1_entry_past_eof,
       base=plain, info="any")


def l2_entry_past_eof(i):
    e = i.l2_entry_offset(0)
    i.u64(e, QCOW_OFLAG_COPIED | GiB)


edited("l2-entry-past-eof", "L2 entry of cluster 0 points 1 GiB into a small file",
       l2_entry_past_eof, base=plain, info="any")


def l2_entry_unaligned(i):
    e = i.l2_entry_offset(1 << 20)
    i.u64(e, i.u64(e) + 512)


edited("l2-entry-unaligned", "L2 entry for 1 MiB not cluster aligned", l2_entry_unaligned,
       base=plain, info="any")


def l2_entries_shared(i):
    # two guest clusters share one host cluster whose refcount says 1
    a, b = i.l2_entry_offset(0), i.l2_entry_offset(1 << 20)
    i.u64(b, i.u64(a))


edited("l2-entries-shared", "two L2 entries point at one cluster of refcount 1",
       l2_entries_shared, base=plain, info="any", convert="any")


def l1_entry_on_header(i):
    i.u64(i.u64(HDR_L1_OFFSET), QCOW_OFLAG_COPIED | 0)


edited("l1-entry-on-header", "L1 entry 0 points at the header cluster", l1_entry_on_header,
       base=plain, info="any", convert="any")


def compressed_entry(i, guest):
    e = i.l2_entry_offset(guest)
    v = i.u64(e)
    assert v & QCOW_OFLAG_COMPRESSED, "expected a compressed cluster at %d" % guest
    return e, v


def compressed_overrun(i):
    e, v = compressed_entry(i, 2 << 20)
    x = 62 - (i.u32(HDR_CLUSTER_BITS) - 8)
    sectors_mask = ((1 << 62) - 1) ^ ((1 << x) - 1)
    i.u64(e, v | sectors_mask)       # as many extra 512-byte sectors as the field holds
    i.truncate(((v & ((1 << x) - 1)) + 600) // 512 * 512)  # and the file ends right after


edited("compressed-overrun", "compressed cluster descriptor runs past the end of the file",
       compressed_overrun, base=compressed, info="any")


def compressed_past_eof(i):
    e, v = compressed_entry(i, 2 << 20)
    x = 62 - (i.u32(HDR_CLUSTER_BITS) - 8)
    i.u64(e, (v & ~((1 << x) - 1)) | GiB)


edited("compressed-past-eof", "compressed cluster stored 1 GiB into a small file",
       compressed_past_eof, base=compressed, info="any")


def compressed_garbage(i):
    e, v = compressed_entry(i, 2 << 20)
    x = 62 - (i.u32(HDR_CLUSTER_BITS) - 8)
    i.write(v & ((1 << x) - 1), os.urandom(256))


edited("compressed-garbage", "compressed cluster bytes replaced with random bytes",
       compressed_garbage, base=compressed, info="any", check="any")


def truncated_data(i):
    # keep the metadata, drop the data clusters at the end of the file
    i.truncate(i.size() - 2 * i.cluster_size)


edited("truncated-data", "file cut short: the last data clusters are gone", truncated_data,
       base=plain, info="any")

# ---- refcounts ----


def refcount_max(i):
    # the first data cluster's 16-bit refcount at its maximum: a snapshot
    # would have to increment it. Shared clusters lose the COPIED flag.
    cs = i.cluster_size
    e = i.l2_entry_offset(0)
    data = i.u64(e) & L2E_OFFSET_MASK
    i.u64(e, i.u64(e) & ~QCOW_OFLAG_COPIED)
    i.write(i.refblock() + 2 * (data // cs), struct.pack(">H", 0xFFFF))


edited("refcount-overflow-16", "a refcount at 0xffff, then vdisk snapshot -c",
       refcount_max, base=plain, info="ok", convert="ok", check="leak", action="snapshot")
case("refcount-overflow-1", qemu_image("refcount-overflow-1.qcow2", opts="refcount_bits=1",
                                       writes=DATA),
     "ok", "ok", "clean", "snapshot", "refcount_bits=1, then vdisk snapshot -c")


def leak_only(i):
    cs = i.cluster_size
    idx = (i.size() + cs - 1) // cs
    i.truncate((idx + 1) * cs)
    i.write(i.refblock() + 2 * idx, struct.pack(">H", 1))


edited("leak-only", "one cluster counted but used by nothing (only a leak)", leak_only,
       base=plain, info="ok", convert="ok", check="leak")

# ---- backing chains that cannot be opened ----


def backing(p, name):
    run("qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-b", name, "-F", "qcow2", p)


a, b = plain("loop-a.qcow2"), plain("loop-b.qcow2")
backing(a, "loop-b.qcow2")
backing(b, "loop-a.qcow2")
case("backing-loop", a, "any", "fail", "any", "-", "a.qcow2 backed by b.qcow2 backed by a.qcow2",
     names=["loop-b.qcow2"])
s = plain("loop-self.qcow2")
backing(s, "loop-self.qcow2")
case("backing-self", s, "any", "fail", "any", "-", "an image backed by itself")
m = plain("backing-missing.qcow2")
backing(m, "no-such-file.qcow2")
case("backing-missing", m, "any", "fail", "any", "-", "the backing file does not exist",
     names=["no-such-file.qcow2"])

# ---- tables of the other formats placed past the end of the file ----
# qemu-img reads such a table as zeroes; vdisk refuses the image as damaged
# before it sets memory aside for the table (a few KiB of file claiming a
# table of up to 1 GiB). A VDI so cut short opens read-only, as in qemu-img,
# with only the entries the file holds: info describes it, a read of a
# block whose entry is missing fails.


def other_format(name, fmt, field, pack, value, description, info="fail", convert="fail"):
    p = path(name)
    run("qemu-img", "create", "-q", "-f", fmt, p, "4M")
    with open(p, "r+b") as f:
        f.seek(field)
        f.write(struct.pack(pack, value))
    case(name.rsplit(".", 1)[0], p, info, convert, "corrupt", "-", description)


other_format("vdi-block-map-past-eof.vdi", "vdi", 0x154, "<I", GiB,
             "VDI block map 1 GiB into a small file", info="any")
# the 4 entries of the 4 MiB disk are in the file: qemu-img reads them too
other_format("vdi-block-map-huge.vdi", "vdi", 0x180, "<I", 1 << 28,
             "VDI block map of 2^28 entries (1 GiB) in a small file", info="any", convert="any")
other_format("vmdk-grain-directory-past-eof.vmdk", "vmdk", 56, "<Q", GiB // 512,
             "vmdk grain directory 1 GiB into a small file")
other_format("qcow-l1-past-eof.qcow", "qcow", 40, ">Q", GiB,
             "qcow (version 1) L1 table 1 GiB into a small file")

with open(path("MANIFEST.tsv"), "w") as f:
    for c in cases:
        f.write("\t".join(c) + "\n")
print("%d cases in %s" % (len(cases), out))
