#!/usr/bin/python3
"""The crash suite: stop vdisk dead, or cut the power under it, at the
write and flush points of each write path, and check what is left.

Every path is first run once to the end with VDISK_FAULT=count, which
gives its number of points (each host write, zeroing, truncation,
preallocation and flush is one) and the content it ends with. Then, for
each point chosen and each mode (crash: the process stops before the
point; tear: a write at the point lands half-way first; powercut: every
change since each file's last flush is kept, lost or torn at random, as a
disk cache would), the path runs again on fresh copies of its inputs and
the result must satisfy:
  - qemu-img check reports no corruption (leaks allowed) on each image
    written, and vdisk opens it;
  - every sector the guest sees holds its old or its new content (the
    guest writer also checks that what it had flushed is there);
  - an encrypted image opens with its old or its new passphrase;
  - a convert target is absent, or refused, or whole and equal to its
    source.

Environment: VDISK_FAULT_BIN (vdisk built with fault injection),
CRASH_WRITER, CRASH_POINTS (points per path and mode, 0 for all; default
70: every point of a small case, a seeded sample of 70 of a larger one),
CRASH_SEED (default 1), CRASH_PATHS (a regex of path names), CRASH_MODES
(default "crash tear powercut"), CRASH_KEEP=1 keeps failed directories. Ends with "N passed, M failed" and a table of counts.
"""
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

VDISK = os.environ.get("VDISK_FAULT_BIN", "build/tests/vdisk-fault")
WRITER = os.environ.get("CRASH_WRITER", "build/tests/crash-writer")
POINTS = int(os.environ.get("CRASH_POINTS", "70"))
SEED = int(os.environ.get("CRASH_SEED", "1"))
ONLY = re.compile(os.environ.get("CRASH_PATHS", ""))
MODES = os.environ.get("CRASH_MODES", "crash tear powercut").split()
KEEP = os.environ.get("CRASH_KEEP") == "1"
FAULT_EXIT = 99
SECTOR = 512
MB = 1 << 20
SECRET_OLD = "secret,id=sec0,data=oldpass"
SECRET_NEW = "secret,id=sec1,data=newpass"


# Paths with a failure not fixed yet: reported on every run ("known"),
# without failing the suite, until the fix lands and the entry goes.
KNOWN = {
}


class Failure(Exception):
    pass


def sh(args, cwd, env=None, check=True, timeout=120):
    full = dict(os.environ)
    full.pop("VDISK_FAULT", None)
    if env:
        full.update(env)
    for attempt in range(10):
        p = subprocess.run(args, cwd=cwd, env=full, capture_output=True, text=True,
                           timeout=timeout)
        # qemu's LUKS code times its key derivation with the thread's CPU
        # clock and now and then gives up: the oracle's hiccup, not vdisk's.
        if p.returncode == 0 or "Unable to get accurate CPU usage" not in p.stderr:
            break
        time.sleep(1)
    if check and p.returncode != 0:
        raise Failure("%s exited %d: %s" % (" ".join(args), p.returncode,
                                            (p.stderr or p.stdout).strip()[-400:]))
    return p


def qemu_io(d, img, *cmds, fmt="qcow2"):
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    sh(args + [img], d)


def view(d, img, fmt=None, image_opts=None, objects=()):
    """The guest's view of img, read by qemu-img (the oracle)."""
    out = os.path.join(d, ".view.raw")
    args = ["qemu-img", "convert", "-U", "-O", "raw"]
    for o in objects:
        args += ["--object", o]
    if image_opts:
        args += ["--image-opts", image_opts]
    else:
        if fmt:
            args += ["-f", fmt]
        args += [img]
    sh(args + [out], d)
    with open(out, "rb") as f:
        data = f.read()
    os.unlink(out)
    return data


def qemu_check(d, img, fmt, objects=(), image_opts=None):
    """qemu-img check: 0 (clean) or 3 (leaks only); formats it cannot
    check are read whole instead."""
    args = ["qemu-img", "check", "-U"]
    for o in objects:
        args += ["--object", o]
    if image_opts:
        args += ["--image-opts", image_opts]
    else:
        args += ["-f", fmt, img]
    p = sh(args, d, check=False)
    if p.returncode == 63:  # no check for this format
        return
    out = p.stdout + p.stderr
    m = re.search(r"allocated blocks mismatch, is (\d+), should be (\d+)", out)
    if (fmt == "vdi" and p.returncode == 2 and m and int(m.group(1)) < int(m.group(2)) and
            "1 errors were found" in out):
        # The header counts blocks that no entry uses yet: reserved, not
        # lost (qemu-img check calls any difference an error; QEMU's own
        # order leaves it too). Safe, unlike a count below the map.
        return
    if p.returncode not in (0, 3):
        raise Failure("qemu-img check %s exited %d:\n%s" % (img, p.returncode,
                                                          (p.stdout + p.stderr)[-1500:]))


def vdisk_opens(d, img, extra=()):
    sh([VDISK, "info", *extra, img], d)


def qcow2_dirty(d, img):
    with open(os.path.join(d, img), "rb") as f:
        h = f.read(80)
    return (h[:4] == b"QFI\xfb" and int.from_bytes(h[4:8], "big") >= 3 and
            int.from_bytes(h[72:80], "big") & 1)


def repair_on_open(d, img):
    """An image left with the dirty bit set is repaired by the next
    read-write open: QEMU's (on a copy) and vdisk's must both leave an
    image that qemu-img check finds clean."""
    if not qcow2_dirty(d, img):
        return
    copy = img + ".qemu-open"
    shutil.copy(os.path.join(d, img), os.path.join(d, copy))
    sh(["qemu-io", "-f", "qcow2", "-c", "flush", copy], d)
    qemu_check(d, copy, "qcow2")
    os.unlink(os.path.join(d, copy))
    sh([WRITER, "run", img, "0", "0", ".open.log"], d)
    if qcow2_dirty(d, img):
        raise Failure("%s is still marked dirty after vdisk opened it read-write" % img)


def old_or_new(got, old, new, what):
    size = max(len(old), len(new), len(got))
    bad = []
    zero = bytes(SECTOR)
    for off in range(0, size, SECTOR):
        g = got[off:off + SECTOR] or zero
        o = old[off:off + SECTOR] or zero
        n = new[off:off + SECTOR] or zero
        if g != o and g != n:
            bad.append(off)
    if bad:
        raise Failure("%s: %d sectors hold neither the old nor the new content "
                      "(first at byte %d)" % (what, len(bad), bad[0]))


# ---------------------------------------------------------------- paths
# A path: setup(d) makes its inputs in d; cmd is what runs under the fault;
# check(d, state) runs after each crash (state comes from setup_state(d),
# computed once on the template, and the clean run).

class Path:
    def __init__(self, name, setup, cmd, check, writer=False):
        self.name, self.setup, self.cmd, self.check = name, setup, cmd, check
        self.writer = writer


def pattern_qcow2(d, name, size="4M", opts=None, base=None):
    args = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if opts:
        args += ["-o", opts]
    if base:
        args += ["-b", base, "-F", "raw"]
    sh(args + [name, size], d)


def fill_data(d, img, fmt="qcow2", seed=0):
    """A few runs of data, zeroes and partial clusters."""
    qemu_io(d, img, "write -P 0x11 0 300k", "write -P 0x22 1M 64k",
            "write -P 0x33 %dk 5k" % (2048 + 3), "write -z 1100k 64k",
            "write -P 0x44 3M 700k", fmt=fmt)


# --- guest writes through the engine (crash-writer)
WRITER_OPS = 60


def writer_setup(backing, opts=None):
    def setup(d):
        if backing:
            sh([WRITER, "fill", "base.raw", str(4 * MB)], d)
            pattern_qcow2(d, "disk.qcow2", opts=opts, base="base.raw")
        else:
            pattern_qcow2(d, "disk.qcow2", opts=opts)
    return setup


def writer_cmd(d, img="disk.qcow2"):
    return [WRITER, "run", img, str(SEED), str(WRITER_OPS), "flushed.log"]


def writer_check(initial, img="disk.qcow2", fmt="qcow2", lost_reads_zero=False):
    def check(d, state):
        if fmt == "qcow2":
            repair_on_open(d, img)
        qemu_check(d, img, fmt)
        vdisk_opens(d, img)
        p = sh([WRITER, "verify", img, str(SEED), str(WRITER_OPS), "flushed.log", initial] +
               (["lost-reads-zero"] if lost_reads_zero else []), d, check=False)
        if p.returncode != 0:
            raise Failure("content after the crash:\n" + p.stderr.strip())
    return check


def writer_path(name, fmt, opts=None, backing=False):
    """Guest writes into another format: the block map entry after its
    data (VDI), the grain table after its grains (vmdk), the L2 entry
    after the cluster (qcow)."""
    img = "disk." + fmt

    def setup(d):
        args = ["qemu-img", "create", "-q", "-f", fmt]
        if opts:
            args += ["-o", opts]
        if backing:
            sh([WRITER, "fill", "base.raw", str(4 * MB)], d)
            args += ["-b", "base.raw", "-F", "raw"]
        sh(args + [img, "4M"], d)
    return Path(name, setup, lambda d: writer_cmd(d, img),
                writer_check("backing" if backing else "zero", img, fmt), writer=True)


def bitmap_setup(d):
    pattern_qcow2(d, "disk.qcow2")
    sh(["qemu-img", "bitmap", "--add", "disk.qcow2", "b0"], d)


# --- convert
def convert_setup(d):
    pattern_qcow2(d, "src.qcow2")
    fill_data(d, "src.qcow2")


def convert_path(fmt, create_opts=None, objects=(), target_opts=None):
    suffix = {"luks": "luks", "raw": "raw"}.get(fmt, fmt)
    target = "out." + suffix
    cmd = [VDISK, "convert", "-O", fmt]
    for o in objects:
        cmd += ["--object", o]
    if create_opts:
        cmd += ["-o", create_opts]
    cmd += ["src.qcow2", target]

    def check(d, state):
        if not os.path.exists(os.path.join(d, target)):
            return
        args = ["qemu-img", "info", "-U", "-f", fmt]
        for o in objects:
            args += ["--object", o]
        if sh(args + [target], d, check=False).returncode != 0:
            return  # qemu-img refuses it: it cannot be taken for a disk
        if target_opts:
            got = view(d, target, image_opts=target_opts + ",file.filename=" + target,
                       objects=objects)
        else:
            got = view(d, target, fmt=fmt)
        if got != state["source"]:
            raise Failure("the partial target %s opens as a whole %s image" % (target, fmt))
        if target_opts:
            qemu_check(d, target, fmt, objects=objects,
                       image_opts=target_opts + ",file.filename=" + target)
        else:
            qemu_check(d, target, fmt)
    name = "convert-" + fmt + ("-" + create_opts.split("=")[-1] if create_opts and
                               "subformat" in create_opts else "")
    return Path(name, convert_setup, lambda d: cmd, check)


def convert_state(d):
    return {"source": view(d, "src.qcow2", fmt="qcow2")}


# --- in-place commands on one qcow2 image
def inplace_setup(extra=None):
    def setup(d):
        pattern_qcow2(d, "disk.qcow2")
        fill_data(d, "disk.qcow2")
        if extra:
            extra(d)
    return setup


def snapshots_with_data(d):
    sh(["qemu-img", "snapshot", "-c", "s1", "disk.qcow2"], d)
    qemu_io(d, "disk.qcow2", "write -P 0x55 64k 200k", "write -P 0x66 2M 128k",
            "discard 3M 128k")
    sh(["qemu-img", "snapshot", "-c", "s2", "disk.qcow2"], d)
    qemu_io(d, "disk.qcow2", "write -P 0x77 0 64k")


def inplace_check(images, view_of="disk.qcow2", fmt="qcow2", objects=()):
    def check(d, state):
        for img, ifmt in images:
            if ifmt == "qcow2":
                repair_on_open(d, img)
            qemu_check(d, img, ifmt, objects=objects)
            vdisk_opens(d, img)
        got = view(d, view_of, fmt=fmt)
        old_or_new(got, state["old"], state["new"], view_of)
    return check


def small_data(d):
    pattern_qcow2(d, "disk.qcow2")
    qemu_io(d, "disk.qcow2", "write -P 0x11 0 300k", "write -P 0x22 1M 64k",
            "write -z 1100k 64k", "write -P 0x44 1800k 100k")


def leaky_setup(d):
    pattern_qcow2(d, "disk.qcow2")
    fill_data(d, "disk.qcow2")
    # Leak clusters: grow the file with clusters no table references.
    with open(os.path.join(d, "disk.qcow2"), "ab") as f:
        f.write(b"\xab" * (3 * 65536))


def bad_refcounts_setup(d):
    """Refcounts of 0 under used clusters, one too high: check -r all
    rebuilds them."""
    pattern_qcow2(d, "disk.qcow2")
    qemu_io(d, "disk.qcow2", "write -P 0x11 0 300k", "write -P 0x44 3M 700k")
    with open(os.path.join(d, "disk.qcow2"), "r+b") as f:
        h = f.read(104)
        f.seek(int.from_bytes(h[48:56], "big"))
        block = int.from_bytes(f.read(8), "big")
        for cluster, refcount in ((5, 0), (6, 0), (7, 0), (8, 2)):
            f.seek(block + 2 * cluster)
            f.write(refcount.to_bytes(2, "big"))


def qemu_errors(d, img):
    p = sh(["qemu-img", "check", "-U", "-f", "qcow2", img], d, check=False)
    m = re.search(r"(\d+) errors were found", p.stdout + p.stderr)
    return int(m.group(1)) if m else 0


def repair_check(d, state):
    """A repair stopped part-way may leave what it had not repaired yet,
    never more: no more errors than before, and the same content."""
    errors = qemu_errors(d, "disk.qcow2")
    if errors > state["errors"]:
        raise Failure("%d errors after the crash, %d before the repair" %
                      (errors, state["errors"]))
    got = view(d, "disk.qcow2", fmt="qcow2")
    old_or_new(got, state["old"], state["new"], "disk.qcow2")


def repair_state(d):
    return {"old": view(d, "disk.qcow2", fmt="qcow2"), "errors": qemu_errors(d, "disk.qcow2")}


def chain_setup(d):
    pattern_qcow2(d, "base.qcow2")
    fill_data(d, "base.qcow2")
    sh(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
        "mid.qcow2"], d)
    qemu_io(d, "mid.qcow2", "write -P 0x88 512k 300k", "write -z 3M 64k")
    sh(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2",
        "disk.qcow2"], d)
    qemu_io(d, "disk.qcow2", "write -P 0x99 100k 64k", "write -P 0x9a 2M 1M")
    pattern_qcow2(d, "other.qcow2")
    qemu_io(d, "other.qcow2", "write -P 0x11 0 300k")


def luks_setup(fmt):
    def setup(d):
        if fmt == "luks":
            args = ["-f", "luks", "-o", "key-secret=sec0,iter-time=10", "disk.luks", "2M"]
        else:
            args = ["-f", "qcow2", "-o",
                    "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
                    "disk.qcow2", "2M"]
        # qemu-img's PBKDF timing can fail on a busy machine ("Unable to get
        # accurate CPU usage"): try again.
        for attempt in range(5):
            p = sh(["qemu-img", "create", "-q", "--object", SECRET_OLD] + args, d, check=False)
            if p.returncode == 0 or "accurate CPU usage" not in p.stderr:
                break
        if p.returncode != 0:
            raise Failure("qemu-img create: " + p.stderr.strip())
        sh(["qemu-io", "--object", SECRET_OLD, "--image-opts", "-c", "write -P 0x5a 0 1M",
            luks_opts(fmt, "sec0")], d)
    return setup


def luks_file(fmt):
    return "disk.luks" if fmt == "luks" else "disk.qcow2"


def luks_opts(fmt, sec):
    if fmt == "luks":
        return "driver=luks,key-secret=%s,file.filename=disk.luks" % sec
    return "driver=qcow2,encrypt.key-secret=%s,file.filename=disk.qcow2" % sec


def amend_cmd(fmt):
    pre = "" if fmt == "luks" else "encrypt."
    return [VDISK, "amend", "--object", SECRET_OLD, "--object", SECRET_NEW,
            "--image-opts", luks_opts(fmt, "sec0"), "-o",
            "%sstate=active,%snew-secret=sec1,%siter-time=10" % (pre, pre, pre)]


def amend_check(fmt):
    def check(d, state):
        opened = 0
        for sec, obj in (("sec0", SECRET_OLD), ("sec1", SECRET_NEW)):
            try:
                got = view(d, None, image_opts=luks_opts(fmt, sec), objects=[obj])
            except Failure:
                continue
            qemu_check(d, None, fmt, objects=[obj], image_opts=luks_opts(fmt, sec))
            if got != state["old"]:
                raise Failure("the content read with %s changed" % sec)
            opened += 1
        if opened == 0:
            raise Failure("neither the old nor the new passphrase opens the image")
    return check


def luks_state(fmt):
    def state(d):
        return {"old": view(d, None, image_opts=luks_opts(fmt, "sec0"), objects=[SECRET_OLD])}
    return state


def inplace_state(view_of="disk.qcow2", fmt="qcow2"):
    def state(d):
        return {"old": view(d, view_of, fmt=fmt)}
    return state


ONE = [("disk.qcow2", "qcow2")]
CHAIN = [("disk.qcow2", "qcow2"), ("mid.qcow2", "qcow2"), ("base.qcow2", "qcow2")]


def build_paths():
    paths = []
    # Guest writes: allocating writes copying on write from a backing
    # file, zeroes, discards, flushes; with lazy refcounts; a dirty bitmap.
    p = Path("guest-writes-backing", writer_setup(True), writer_cmd, writer_check("backing"),
             writer=True)
    paths.append(p)
    # With lazy refcounts, as in QEMU, nothing orders a new cluster's data
    # before its L2 entry: an unflushed write may come back as zeroes (never
    # as other data; copied-on-write bytes still must be there).
    p = Path("guest-writes-lazy-refcounts", writer_setup(True, "lazy_refcounts=on"), writer_cmd,
             writer_check("backing", lost_reads_zero=True), writer=True)
    paths.append(p)
    p = Path("guest-writes-bitmap", bitmap_setup, writer_cmd, writer_check("zero"), writer=True)
    paths.append(p)
    paths.append(writer_path("guest-writes-vdi", "vdi"))
    p = writer_path("guest-writes-vdi-whole-blocks", "vdi")
    p.env = {"CRASH_WRITER_LONG": "4096"}
    paths.append(p)
    paths.append(writer_path("guest-writes-vmdk", "vmdk"))
    paths.append(writer_path("guest-writes-vmdk-zeroed-grain", "vmdk", "zeroed_grain=on"))
    paths.append(writer_path("guest-writes-qcow-backing", "qcow", backing=True))
    # A dynamic VHD: a new block's footer moved past it, then its bitmap,
    # then its table entry.
    paths.append(writer_path("guest-writes-vpc", "vpc"))
    # Convert into every format that can be written.
    for fmt, opts, objects, topts in (
            ("qcow2", None, (), None),
            ("qcow2", "compat=0.10", (), None),
            ("qcow", None, (), None),
            ("vdi", None, (), None),
            ("vmdk", "subformat=monolithicSparse", (), None),
            ("vmdk", "subformat=streamOptimized", (), None),
            ("vmdk", "subformat=twoGbMaxExtentSparse", (), None),
            ("vmdk", "subformat=monolithicFlat", (), None),
            ("cow", None, (), None),
            # force_size: the target as large as the source, not its
            # geometry's size, so that a whole target reads as the source
            ("vpc", "force_size=on", (), None),
            ("vpc", "subformat=fixed,force_size=on", (), None),
            ("luks", "key-secret=sec0,iter-time=10", (SECRET_OLD,), "driver=luks,key-secret=sec0"),
            ("raw", None, (), None)):
        p = convert_path(fmt, opts, objects, topts)
        if fmt == "qcow2" and opts:
            p.name = "convert-qcow2-v2"
        if fmt == "vpc":
            p.name = "convert-vpc-" + ("fixed" if "fixed" in opts else "dynamic")
        p.state = convert_state
        paths.append(p)
    # Internal snapshots.
    for name, cmd in (("snapshot-create", ["snapshot", "-c", "s3"]),
                      ("snapshot-apply", ["snapshot", "-a", "s1"]),
                      ("snapshot-delete", ["snapshot", "-d", "s1"])):
        p = Path(name, inplace_setup(snapshots_with_data),
                 (lambda c: lambda d: [VDISK] + c + ["disk.qcow2"])(cmd), inplace_check(ONE))
        p.state = inplace_state()
        paths.append(p)
    for name, size, extra in (("resize-grow", "9M", []), ("resize-shrink", "2M", ["--shrink"])):
        p = Path(name, small_data,
                 (lambda s, e: lambda d: [VDISK, "resize"] + e + ["disk.qcow2", s])(size, extra),
                 inplace_check(ONE))
        p.state = inplace_state()
        paths.append(p)
    p = Path("rebase", chain_setup,
             lambda d: [VDISK, "rebase", "-b", "other.qcow2", "-F", "qcow2", "disk.qcow2"],
             inplace_check(CHAIN))
    p.state = inplace_state()
    paths.append(p)
    p = Path("commit", chain_setup, lambda d: [VDISK, "commit", "disk.qcow2"],
             inplace_check(CHAIN, view_of="mid.qcow2"))
    p.state = inplace_state("mid.qcow2")
    paths.append(p)
    p = Path("check-repair", leaky_setup, lambda d: [VDISK, "check", "-r", "all", "disk.qcow2"],
             inplace_check(ONE))
    p.state = inplace_state()
    paths.append(p)
    p = Path("check-repair-refcounts", bad_refcounts_setup,
             lambda d: [VDISK, "check", "-r", "all", "disk.qcow2"], repair_check)
    p.state = repair_state
    paths.append(p)
    for fmt in ("luks", "qcow2"):
        p = Path("amend-" + fmt, luks_setup(fmt), (lambda f: lambda d: amend_cmd(f))(fmt),
                 amend_check(fmt))
        p.state = luks_state(fmt)
        paths.append(p)
    for p in paths:
        if not hasattr(p, "state"):
            p.state = lambda d: {}
    return paths


# ---------------------------------------------------------------- driver
def run_path(path, top):
    tmpl = os.path.join(top, path.name, "template")
    os.makedirs(tmpl)
    path.setup(tmpl)
    state = path.state(tmpl)

    # The clean run: its points, and the content it ends with.
    clean = os.path.join(top, path.name, "clean")
    shutil.copytree(tmpl, clean)
    report = os.path.join(top, path.name, "points")
    os.environ.update(getattr(path, "env", {}))
    p = sh(path.cmd(clean), clean, env={"VDISK_FAULT": "count", "VDISK_FAULT_REPORT": report},
           check=False)
    if p.returncode != 0:
        raise Failure("the run without a fault failed: " + p.stderr.strip()[-400:])
    with open(report) as f:
        total = int(f.read())
    left = [n for n in os.listdir(clean) if ".partial-" in n]
    if left:
        raise Failure("the run without a fault left %s behind" % ", ".join(left))
    if "old" in state and not path.name.startswith("amend"):
        state["new"] = view(clean, "mid.qcow2" if path.name == "commit" else "disk.qcow2")
    elif path.name.startswith("amend"):
        state["new"] = state["old"]
    path.check(clean, state)

    rng = random.Random("%s:%d" % (path.name, SEED))
    tried = failed = 0
    messages = []
    for mode in MODES:
        points = list(range(1, total + 1))
        if POINTS and len(points) > POINTS:
            points = sorted(rng.sample(points, POINTS))
        for n in points:
            work = os.path.join(top, path.name, "%s-%d" % (mode, n))
            shutil.copytree(tmpl, work)
            fault = {"crash": "crash:%d" % n, "tear": "crash:%d:tear" % n,
                     "powercut": "powercut:%d:%d" % (n, rng.randrange(1 << 30))}[mode]
            tried += 1
            try:
                p = sh(path.cmd(work), work, env={"VDISK_FAULT": fault}, check=False)
                if p.returncode != FAULT_EXIT:
                    raise Failure("exited %d instead of stopping at the fault: %s" %
                                  (p.returncode, p.stderr.strip()[-300:]))
                path.check(work, state)
                shutil.rmtree(work)
            except (Failure, subprocess.TimeoutExpired) as e:
                failed += 1
                messages.append("%s VDISK_FAULT=%s: %s" % (path.name, fault, e))
                if not KEEP:
                    shutil.rmtree(work)
    return total, tried, failed, messages


def main():
    for prog in ("qemu-img", "qemu-io"):
        if shutil.which(prog) is None:
            print("SKIP: %s is missing" % prog)
            return 77
    for prog in (VDISK, WRITER):
        if not os.access(prog, os.X_OK):
            print("SKIP: %s is missing (configure with -Dfault_injection=true)" % prog)
            return 77
    top = tempfile.mkdtemp(prefix="vdisk-crash.")
    passed = failed = 0
    rows = []
    start = time.time()
    for path in build_paths():
        if not ONLY.search(path.name):
            continue
        os.environ.pop("CRASH_WRITER_LONG", None)
        t0 = time.time()
        try:
            total, tried, nfail, messages = run_path(path, top)
        except (Failure, subprocess.TimeoutExpired) as e:
            print("FAIL %s: %s" % (path.name, e))
            failed += 1
            rows.append((path.name, 0, 0, 1, 0))
            continue
        for m in messages[:5]:
            print("  " + m.strip().replace("\n", "\n    "))
        if len(messages) > 5:
            print("  ... and %d more" % (len(messages) - 5))
        status = "ok" if nfail == 0 else "KNOWN" if path.name in KNOWN else "FAIL"
        print("%-4s %-32s %4d points, %5d tried, %3d failed (%.0f s)" %
              (status, path.name, total, tried, nfail, time.time() - t0), flush=True)
        rows.append((path.name, total, tried, nfail, time.time() - t0))
        if nfail and path.name in KNOWN:
            print("      known: " + KNOWN[path.name])
            passed += 1
        elif nfail:
            failed += 1
        else:
            passed += 1
    if not KEEP or failed == 0:
        shutil.rmtree(top, ignore_errors=True)
    else:
        print("failed cases kept in", top)
    print("%d paths, %d crash points tried, %d failures (%d in known-failing paths), %.0f s" %
          (len(rows), sum(r[2] for r in rows), sum(r[3] for r in rows),
           sum(r[3] for r in rows if r[0] in KNOWN), time.time() - start))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
