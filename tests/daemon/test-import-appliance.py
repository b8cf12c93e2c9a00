"""ImportVolume of the disks that are more than one file or inside another:
an OVA appliance passed as one descriptor with the disk to read
("appliance-disk"), read in place, and a split vmdk (twoGbMaxExtentSparse
or Flat: a descriptor naming -s001.vmdk ... extents beside it) with each
extent passed as a descriptor by the name the descriptor gives it
("related-files"), a VMware snapshot's split delta on its split base too.
Each volume equals what qemu-img reads; the files are removed before the
call where the test makes it, so nothing is opened by name. A descriptor
naming an extent that was not passed (a file that is there beside it,
/etc/shadow, ../x) fails naming it, and no volume is left; so do option
values that name nothing passed."""
import json
import os
import shutil
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vdiskd_env import ALICE, Env, case, client, main, qemu_img, run  # noqa: E402

VDISK = os.environ.get("VDISK")
VDISKCTL = os.environ.get("VDISKCTL")


def import_files(ctx, a):
    """POOL NAME SPEC: ImportVolume of spec["source"] with spec's "chain"
    (paths, nearest parent first), "related" ([image, name, path]...),
    "appliance-disk" and "source-format"; spec["remove"] is removed once
    every file is open."""
    from gi.repository import GLib
    pool, name, spec = a[0], a[1], json.loads(a[2])
    fds = [os.open(spec["source"], os.O_RDONLY)]
    opts = {}
    chain = []
    for p in spec.get("chain", []):
        fds.append(os.open(p, os.O_RDONLY))
        chain.append((os.path.relpath(p, os.path.dirname(spec["source"])), len(fds) - 1))
    if chain:
        opts["chain"] = GLib.Variant("a(sh)", chain)
    if "related" in spec:
        # Sent over a socket before the call, its end closed; "socket"
        # says otherwise: "stream" (the wrong kind), "open" (not closed),
        # "short" (a descriptor fewer than the names), "empty" (a packet
        # of no file first).
        kind = spec.get("socket", "")
        mine, theirs = socket.socketpair(
            socket.AF_UNIX, socket.SOCK_STREAM if kind == "stream" else socket.SOCK_SEQPACKET)
        related = spec["related"]
        if kind == "empty":
            mine.send(GLib.Variant("a(us)", []).get_data_as_bytes().get_data() or b"\0")
        for start in range(0, len(related), 253):
            batch = related[start:start + 253]
            files = [os.open(path, os.O_RDONLY) for _, _, path in batch]
            data = GLib.Variant("a(us)", [(i, n) for i, n, _ in batch]).get_data_as_bytes()
            socket.send_fds(mine, [data.get_data()], files[:-1] if kind == "short" else files)
            for f in files:
                os.close(f)
        if kind != "open":
            mine.close()
        fds.append(theirs.detach())
        opts["related-files"] = GLib.Variant("h", len(fds) - 1)
    if "appliance-disk" in spec:
        opts["appliance-disk"] = GLib.Variant("i", spec["appliance-disk"])
    if "source-format" in spec:
        opts["source-format"] = GLib.Variant("s", spec["source-format"])
    if "remove" in spec:
        shutil.rmtree(spec["remove"])
    v, j = ctx.call("/org/vdisk/VDisk1/pools/" + pool, "Pool", "ImportVolume", "(hssa{sv})",
                    [0, name, "qcow2", opts], fds)
    ctx.wait(j, {"volume": v})


def sh(*argv):
    subprocess.run(list(argv), check=True, capture_output=True)


def qio(path, *cmds):
    argv = ["qemu-io", "-f", "vmdk"]
    for c in cmds:
        argv += ["-c", c]
    sh(*(argv + [path]))


def pattern_raw(path, mib, seed):
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(bytes([(seed + i) % 251 + 1]) * (1 << 20))


def ovf(name, disks):
    """An OVF descriptor of VM name whose SATA disks are the members
    disks (each of its size in bytes)."""
    refs = "".join('<File ovf:id="file%d" ovf:href="%s"/>' % (i, d) for i, (d, _) in
                   enumerate(disks))
    sect = "".join('<Disk ovf:capacity="%d" ovf:diskId="vmdisk%d" ovf:fileRef="file%d" '
                   'ovf:format="http://www.vmware.com/interfaces/specifications/'
                   'vmdk.html#streamOptimized"/>' % (size, i, i) for i, (_, size) in
                   enumerate(disks))
    items = "".join("""<Item><rasd:AddressOnParent>%d</rasd:AddressOnParent>
<rasd:HostResource>/disk/vmdisk%d</rasd:HostResource><rasd:InstanceID>%d</rasd:InstanceID>
<rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>""" % (i, i, 10 + i)
                    for i in range(len(disks)))
    return """<?xml version="1.0"?>
<Envelope ovf:version="1.0" xmlns="http://schemas.dmtf.org/ovf/envelope/1"
 xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
 xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
<References>%s</References>
<DiskSection><Info>disks</Info>%s</DiskSection>
<VirtualSystem ovf:id="%s"><Info>A virtual machine</Info><Name>%s</Name>
<VirtualHardwareSection><Info>hardware</Info>
<Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType>
<rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
<Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID>
<rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>256</rasd:VirtualQuantity></Item>
<Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID>
<rasd:ResourceSubType>AHCI</rasd:ResourceSubType><rasd:ResourceType>20</rasd:ResourceType></Item>
%s</VirtualHardwareSection></VirtualSystem></Envelope>
""" % (refs, sect, name, name, items)


def make_ova(folder, name, raws):
    """folder/NAME.ova of the raw images raws as streamOptimized vmdks,
    the .ovf first as OVF wants."""
    os.makedirs(folder)
    disks = []
    for i, raw in enumerate(raws):
        member = "%s-disk%d.vmdk" % (name, i + 1)
        sh(VDISK, "convert", "-q", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
           raw, os.path.join(folder, member))
        disks.append((member, os.path.getsize(raw)))
    with open(os.path.join(folder, name + ".ovf"), "w") as f:
        f.write(ovf(name, disks))
    ova = os.path.join(folder, name + ".ova")
    sh("tar", "-cf", ova, "--format=ustar", "-C", folder, name + ".ovf", *[d for d, _ in disks])
    return ova


def chown_tree(top):
    shutil.chown(top, ALICE)
    for d, dirs, files in os.walk(top):
        for f in dirs + files:
            shutil.chown(os.path.join(d, f), ALICE)


def as_alice(*argv):
    return subprocess.run(["runuser", "-u", ALICE, "--", "env",
                           "DBUS_SYSTEM_BUS_ADDRESS=" + os.environ["DBUS_SYSTEM_BUS_ADDRESS"]] +
                          list(argv), capture_output=True, text=True, cwd="/")


def extents(descriptor):
    """The extent names a vmdk descriptor gives, in order."""
    with open(descriptor) as f:
        return [line.split('"')[1] for line in f if line.startswith("RW ")]


def tests(env):
    pool = os.path.join(env.t, "pool")
    os.makedirs(pool)
    assert run("root", "add-pool", "p", pool)[0] == 0
    work = os.path.join(env.t, "work")
    os.makedirs(work)
    os.chmod(env.t, 0o755)

    def vol(name):
        return os.path.join(pool, name)

    def same(volume, fmt, source):
        r = qemu_img("compare", "-f", "qcow2", "-F", fmt, vol(volume), source)
        assert r.returncode == 0, r.stdout + r.stderr
        assert qemu_img("check", vol(volume)).returncode == 0

    def refused(rc, out, volume, *words):
        assert rc != 0 and not out.get("success"), out
        m = out.get("message", "")
        for w in words:
            assert w in m, m
        print("# " + m)
        assert not os.path.exists(vol(volume)), volume

    # ---- OVA appliances
    raw1, raw2 = os.path.join(work, "one.raw"), os.path.join(work, "two.raw")
    pattern_raw(raw1, 6, 7)
    pattern_raw(raw2, 3, 90)
    one = make_ova(os.path.join(work, "ova1"), "Single", [raw1])
    two = make_ova(os.path.join(work, "ova2"), "Pair", [raw1, raw2])
    chown_tree(work)

    @case("an OVA's disk imports read in place (appliance-disk 0), the archive "
          "removed before the call")
    def _():
        gone = os.path.join(work, "gone")
        shutil.copytree(os.path.join(work, "ova1"), gone)
        chown_tree(gone)
        spec = {"source": os.path.join(gone, "Single.ova"), "appliance-disk": 0, "remove": gone}
        rc, out = run(ALICE, "import-files", "p", "ova.qcow2", json.dumps(spec))
        assert rc == 0 and out["success"], out
        same("ova.qcow2", "raw", raw1)

    @case("appliance-disk picks the second disk of two; without it an appliance of "
          "several disks is refused, saying which option picks one")
    def _():
        spec = {"source": two, "appliance-disk": 1, "source-format": "ova"}
        rc, out = run(ALICE, "import-files", "p", "second.qcow2", json.dumps(spec))
        assert rc == 0 and out["success"], out
        same("second.qcow2", "raw", raw2)
        rc, out = run(ALICE, "import-files", "p", "which.qcow2", json.dumps({"source": two}))
        refused(rc, out, "which.qcow2", "several disks", "appliance-disk")

    @case("appliance-disk is checked: not negative, not of another source format, not with "
          "a chain; a disk the appliance lacks fails the job; a file that is no appliance too")
    def _():
        for value, words in ((-1, "from 0 to"), (2 ** 31 - 1, "from 0 to")):
            rc, out = run(ALICE, "import-files", "p", "bad.qcow2",
                          json.dumps({"source": one, "appliance-disk": value}))
            assert rc == 3 and out["error"].endswith("Error.InvalidArgument"), out
            assert words in out["message"], out
        rc, out = run(ALICE, "import-files", "p", "bad.qcow2",
                      json.dumps({"source": one, "appliance-disk": 0, "source-format": "vmdk"}))
        assert rc == 3 and "not a source of format vmdk" in out["message"], out
        rc, out = run(ALICE, "import-files", "p", "bad.qcow2",
                      json.dumps({"source": one, "appliance-disk": 0, "chain": [raw1]}))
        assert rc == 3 and "no chain" in out["message"], out
        rc, out = run(ALICE, "import-files", "p", "bad.qcow2",
                      json.dumps({"source": one, "appliance-disk": 1}))
        refused(rc, out, "bad.qcow2", "has no disk 2")
        rc, out = run(ALICE, "import-files", "p", "bad.qcow2",
                      json.dumps({"source": raw1, "appliance-disk": 0}))
        refused(rc, out, "bad.qcow2", "not an OVA appliance")
        assert not os.path.exists(vol("bad.qcow2"))

    @case("vdiskctl import of an OVA imports its disk, not the archive as a raw disk; an "
          "appliance of two disks is refused naming import-vm")
    def _():
        if VDISKCTL is None:
            print("# VDISKCTL not set: vdiskctl import is not tested")
            return
        r = as_alice(VDISKCTL, "import", "-q", one, "p/ctl-ova.qcow2")
        assert r.returncode == 0, r.stderr
        same("ctl-ova.qcow2", "raw", raw1)
        r = as_alice(VDISKCTL, "import", "-q", two, "p/ctl-two.qcow2")
        assert r.returncode == 1, r
        assert "appliance of 2 disks" in r.stderr and "import-vm" in r.stderr, r.stderr
        assert not os.path.exists(vol("ctl-two.qcow2"))

    @case("vdiskctl import-vm of an OVA imports each disk of the appliance through vdiskd "
          "and defines the domain (libvirt's test driver)")
    def _():
        if VDISKCTL is None or shutil.which("virsh") is None:
            print("# no vdiskctl or virsh: not tested")
            return
        r = as_alice(VDISKCTL, "import-vm", "--connect", "test:///default", "--domain-type",
                     "qemu", two, "p")
        assert r.returncode == 0, r.stderr
        assert "defined domain 'Pair'" in r.stdout, r.stdout
        volumes = sorted(f for f in os.listdir(pool) if f.startswith("Pair"))
        assert volumes == ["Pair-disk2.qcow2", "Pair.qcow2"], volumes
        same("Pair.qcow2", "raw", raw1)
        same("Pair-disk2.qcow2", "raw", raw2)

    # ---- split vmdks
    split = os.path.join(work, "split")
    os.makedirs(split)
    base = os.path.join(split, "base.vmdk")
    # 17 extents: more descriptors than a D-Bus message carries (16).
    sh("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", base,
       "33G")
    # Data on both sides of the first extent's end, and in the last extent.
    qio(base, "write -P 65 2047M 2M", "write -P 66 0 64k", "write -P 67 32800M 64k")
    top = os.path.join(split, "base-000001.vmdk")
    sh("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", "-b",
       "base.vmdk", "-F", "vmdk", top)
    qio(top, "write -P 68 2048M 64k", "write -z 0 4k")
    flat = os.path.join(split, "flat.vmdk")
    sh("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentFlat", flat, "3G")
    qio(flat, "write -P 69 2047M 2M")
    chown_tree(work)
    base_extents = extents(base)
    assert len(base_extents) == 17, base_extents

    @case("a twoGbMaxExtentSparse vmdk imports with each extent passed by the name its "
          "descriptor gives, the files removed before the call")
    def _():
        copy = os.path.join(work, "split-copy")
        shutil.copytree(split, copy)
        chown_tree(copy)
        spec = {"source": os.path.join(copy, "base.vmdk"), "remove": copy,
                "related": [[0, e, os.path.join(copy, e)] for e in base_extents]}
        rc, out = run(ALICE, "import-files", "p", "split.qcow2", json.dumps(spec))
        assert rc == 0 and out["success"], out
        same("split.qcow2", "vmdk", base)

    @case("a split delta on its split base: the parent in chain, both links' extents "
          "in related-files (the parent's as image 1)")
    def _():
        spec = {"source": top, "chain": [base],
                "related": [[0, e, os.path.join(split, e)] for e in extents(top)] +
                           [[1, e, os.path.join(split, e)] for e in base_extents]}
        rc, out = run(ALICE, "import-files", "p", "delta.qcow2", json.dumps(spec))
        assert rc == 0 and out["success"], out
        same("delta.qcow2", "vmdk", top)
        assert "backing file" not in qemu_img("info", vol("delta.qcow2")).stdout

    @case("a split vmdk without its extents fails naming the first; one extent short "
          "fails naming the one missing")
    def _():
        rc, out = run(ALICE, "import-files", "p", "alone.qcow2", json.dumps({"source": base}))
        refused(rc, out, "alone.qcow2", "base-s001.vmdk")
        spec = {"source": base,
                "related": [[0, e, os.path.join(split, e)] for e in base_extents[:2]]}
        rc, out = run(ALICE, "import-files", "p", "short.qcow2", json.dumps(spec))
        refused(rc, out, "short.qcow2", "base-s003.vmdk")

    @case("related-files is checked before any job: no absolute name, none leaving its "
          "image's folder, no image beyond the chain, no name twice, no more than 256; its "
          "socket is a closed SOCK_SEQPACKET, a descriptor to each name")
    def _():
        e0 = os.path.join(split, base_extents[0])
        for related, words in (([[0, "/etc/shadow", e0]], "not a name inside"),
                               ([[0, "../x.vmdk", e0]], "not a name inside"),
                               ([[0, "a/../../x", e0]], "not a name inside"),
                               ([[1, base_extents[0], e0]], "neither the source"),
                               ([[0, base_extents[0], e0], [0, "./" + base_extents[0], e0]],
                                "given twice"),
                               ([[0, "x%d.vmdk" % i, e0] for i in range(257)],
                                "from 1 to 256 files")):
            rc, out = run(ALICE, "import-files", "p", "bad.qcow2",
                          json.dumps({"source": base, "related": related}))
            assert rc == 3 and out["error"].endswith("Error.InvalidArgument"), out
            assert words in out["message"], out
        good = [[0, e, os.path.join(split, e)] for e in base_extents]
        for kind, words in (("stream", "not a Unix SOCK_SEQPACKET socket"),
                            ("open", "other end closed, before the call"),
                            ("short", "one entry for each"),
                            ("empty", "1 to 253 descriptors")):
            rc, out = run(ALICE, "import-files", "p", "bad.qcow2",
                          json.dumps({"source": base, "related": good, "socket": kind}))
            assert rc == 3 and out["error"].endswith("Error.InvalidArgument"), out
            assert words in out["message"], out
        assert not os.path.exists(vol("bad.qcow2"))

    @case("a hostile descriptor naming an extent that was not passed fails naming it, "
          "though the file is there beside it; /etc/shadow and ../ names are refused")
    def _():
        evil = os.path.join(work, "evil")
        os.makedirs(evil)
        for e in base_extents:
            shutil.copy(os.path.join(split, e), evil)
        # secret.vmdk is a real extent beside the descriptor that vdiskd
        # could read: only a name-based open would find it.
        shutil.copy(os.path.join(split, base_extents[1]), os.path.join(evil, "secret.vmdk"))
        with open(base) as f:
            text = f.read()
        for tag, name in (("beside", "secret.vmdk"), ("shadow", "/etc/shadow"),
                          ("up", "../../x.vmdk")):
            desc = os.path.join(evil, tag + ".vmdk")
            with open(desc, "w") as f:
                f.write(text.replace('"%s"' % base_extents[1], '"%s"' % name))
        chown_tree(evil)
        related = [[0, e, os.path.join(evil, e)] for e in base_extents]
        rc, out = run(ALICE, "import-files", "p", "evil.qcow2", json.dumps(
            {"source": os.path.join(evil, "beside.vmdk"), "related": related}))
        refused(rc, out, "evil.qcow2", "secret.vmdk", "No such file")
        assert "caller's" not in out["message"], out
        rc, out = run(ALICE, "import-files", "p", "evil.qcow2", json.dumps(
            {"source": os.path.join(evil, "shadow.vmdk"), "related": related}))
        refused(rc, out, "evil.qcow2", "/etc/shadow", "absolute path")
        rc, out = run(ALICE, "import-files", "p", "evil.qcow2", json.dumps(
            {"source": os.path.join(evil, "up.vmdk"), "related": related}))
        refused(rc, out, "evil.qcow2", "../../x.vmdk", "leaves the descriptor's folder")
        if VDISKCTL is not None:
            r = as_alice(VDISKCTL, "import", "-q", os.path.join(evil, "shadow.vmdk"),
                         "p/evil.qcow2")
            assert r.returncode == 1 and "/etc/shadow" in r.stderr, r
            assert not os.path.exists(vol("evil.qcow2"))

    @case("vdiskctl import of a split vmdk, a split delta on its split base and a "
          "twoGbMaxExtentFlat vmdk passes every extent; each volume equals qemu-img's")
    def _():
        if VDISKCTL is None:
            return
        for source, name in ((base, "ctl-split.qcow2"), (top, "ctl-delta.qcow2"),
                             (flat, "ctl-flat.qcow2")):
            r = as_alice(VDISKCTL, "import", "-q", source, "p/" + name)
            assert r.returncode == 0, r.stderr
            same(name, "vmdk", source)

    @case("vdiskctl import-vm of a VMware VM whose disk is a split delta on a split base; "
          "its plan gives each link's size with its extents")
    def _():
        if VDISKCTL is None or shutil.which("virsh") is None:
            return
        with open(os.path.join(split, "Web.vmx"), "w") as f:
            f.write('.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "19"\n'
                    'displayName = "Split web"\nguestOS = "debian11-64"\nmemsize = "256"\n'
                    'numvcpus = "1"\nsata0.present = "TRUE"\nsata0:0.present = "TRUE"\n'
                    'sata0:0.fileName = "base-000001.vmdk"\n')
        chown_tree(split)
        # The plan counts a split disk's extents, not its descriptor alone.
        r = as_alice(VDISKCTL, "import-vm", "--dry-run", os.path.join(split, "Web.vmx"), "p")
        assert r.returncode == 0, r.stderr
        assert "%s (vmdk, " % base in r.stdout and "(vmdk, 512 B)" not in r.stdout, r.stdout
        r = as_alice(VDISKCTL, "import-vm", "--connect", "test:///default", "--domain-type",
                     "qemu", os.path.join(split, "Web.vmx"), "p")
        assert r.returncode == 0, r.stderr
        volumes = [f for f in os.listdir(pool) if f.startswith("Split")]
        assert len(volumes) == 1, volumes
        same(volumes[0], "vmdk", top)


    @case("vdiskctl import-vm --keep-snapshots of that VM: the split base and the split delta "
          "each become a volume, the delta's an overlay of the base's")
    def _():
        if VDISKCTL is None or shutil.which("virsh") is None:
            return
        with open(os.path.join(split, "Kept.vmx"), "w") as f:
            f.write('.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "19"\n'
                    'displayName = "Kept"\nguestOS = "debian11-64"\nmemsize = "256"\n'
                    'numvcpus = "1"\nsata0.present = "TRUE"\nsata0:0.present = "TRUE"\n'
                    'sata0:0.fileName = "base-000001.vmdk"\n')
        chown_tree(split)
        r = as_alice(VDISKCTL, "import-vm", "--keep-snapshots", "--connect", "test:///default",
                     "--domain-type", "qemu", os.path.join(split, "Kept.vmx"), "p")
        assert r.returncode == 0, r.stderr
        assert sorted(f for f in os.listdir(pool) if f.startswith("Kept")) == [
            "Kept-1.qcow2", "Kept.qcow2"], os.listdir(pool)
        same("Kept-1.qcow2", "vmdk", base)
        same("Kept.qcow2", "vmdk", top)
        info = qemu_img("info", vol("Kept.qcow2")).stdout
        assert "backing file: Kept-1.qcow2" in info, info

    @case("vdiskctl import of an image on 15 parents says vdiskd can be passed 14 at most, "
          "instead of losing its connection to the bus")
    def _():
        if VDISKCTL is None:
            return
        deep = os.path.join(work, "deep")
        os.makedirs(deep)
        sh("qemu-img", "create", "-q", "-f", "qcow2", os.path.join(deep, "l0.qcow2"), "1M")
        for i in range(1, 16):
            sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", "l%d.qcow2" % (i - 1), "-F",
               "qcow2", os.path.join(deep, "l%d.qcow2" % i))
        chown_tree(deep)
        r = as_alice(VDISKCTL, "import", "-q", os.path.join(deep, "l15.qcow2"), "p/deep.qcow2")
        assert r.returncode == 1, r
        assert "reads through 15 parents" in r.stderr and "14 at most" in r.stderr, r.stderr
        r = as_alice(VDISKCTL, "import", "-q", os.path.join(deep, "l14.qcow2"), "p/deep.qcow2")
        assert r.returncode == 0, r.stderr

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2:], {"import-files": import_files})
    if VDISK is None or shutil.which("qemu-io") is None:
        print("1..0 # SKIP needs VDISK (the build's vdisk) and qemu-io")
        sys.exit(77)
    sys.exit(main(tests, Env()))
