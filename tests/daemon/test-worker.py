"""vdisk-worker alone, driven the way vdiskd drives it (a socketpair at
descriptor 3, framed a{sv} messages, descriptors with SCM_RIGHTS): its
copy matches vdisk convert, it runs as an unprivileged user with no new
privileges and a seccomp filter, a hostile image gets nothing of the host's
files into the target, and (with -Dtest_hooks=true) what a taken-over
parser might try is stopped by the kernel. Needs root for the user switch
(exit 77 otherwise)."""
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile

from gi.repository import GLib

from vdiskd_env import status_of

WORKER = os.environ.get("VDISK_WORKER")
VDISK = os.environ.get("VDISK")
TEST_HOOKS = os.environ.get("VDISK_TEST_HOOKS") == "true"
failures = []


def V(sig, value):
    return GLib.Variant(sig, value)


class Worker:
    """One worker process and our end of its socket; wrap: a command line
    the worker runs under (setpriv ...)."""

    def __init__(self, request, fds, wrap=(), folder=None):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock = ours
        self.folder = folder  # a folder descriptor to answer "open" from
        self.asked = []
        argv = list(wrap) + [WORKER]
        self.pid = os.posix_spawn(argv[0], argv, dict(os.environ),
                                  file_actions=[(os.POSIX_SPAWN_DUP2, theirs.fileno(), 3)])
        theirs.close()
        body = GLib.Variant("a{sv}", request).get_data_as_bytes().get_data()
        socket.send_fds(ours, [struct.pack("<I", len(body)) + body], fds)

    def receive(self):
        head = self.sock.recv(4, socket.MSG_WAITALL)
        if len(head) < 4:
            return None
        (n,) = struct.unpack("<I", head)
        body = self.sock.recv(n, socket.MSG_WAITALL) if n else b""
        return GLib.Variant.new_from_bytes(GLib.VariantType("a{sv}"), GLib.Bytes(body),
                                           False).unpack()

    def answer_open(self, rel):
        """As vdiskd answers: a regular file beneath the folder, read-only,
        no symbolic link and no way out."""
        self.asked.append(rel)
        fd, err = -1, 13  # EACCES
        if self.folder is not None and not rel.startswith("/") and ".." not in rel.split("/"):
            try:
                fd = os.open(rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK,
                             dir_fd=self.folder)
            except OSError as e:
                err = e.errno
        body = GLib.Variant("a{sv}", {"errno": V("i", 0 if fd >= 0 else err)}) \
            .get_data_as_bytes().get_data()
        socket.send_fds(self.sock, [struct.pack("<I", len(body)) + body],
                        [fd] if fd >= 0 else [])
        if fd >= 0:
            os.close(fd)

    def finish(self, on_progress=None):
        """(result or None, wait status); progress messages go to on_progress."""
        result = None
        while True:
            m = self.receive()
            if m is None:
                break
            if "progress" in m:
                if on_progress:
                    on_progress(self, m["progress"])
                continue
            if "open" in m:
                self.answer_open(m["open"])
                continue
            result = m
        _, status = os.waitpid(self.pid, 0)
        self.sock.close()
        return result, status


def run(request, fds, on_progress=None, wrap=(), folder=None, asked=None):
    w = Worker(request, fds, wrap, folder)
    result = w.finish(on_progress)
    if asked is not None:
        asked.extend(w.asked)
    return result


def unit_bounding_set():
    """The capabilities vdiskd.service leaves the service (and its workers)."""
    unit = os.path.join(os.environ.get("G_TEST_SRCDIR", os.path.dirname(__file__) + "/.."),
                        "..", "data", "vdiskd.service.in")
    with open(unit) as f:
        for line in f:
            if line.startswith("CapabilityBoundingSet="):
                return [c.lower() for c in line.split("=", 1)[1].split()]
    raise RuntimeError("no CapabilityBoundingSet in " + unit)


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures.append(what)


def qemu_img(*args):
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True)


def convert_request(fmt, source_format=None, **extra):
    """A convert of descriptor 0 into a new image in descriptor 1 (see
    daemon/worker-protocol.h); extra: more of the source's entries."""
    source = {"fd": V("i", 0), "label": V("s", "source")}
    if source_format:
        source["format"] = V("s", source_format)
    source.update(extra)
    return {"operation": V("s", "convert"), "source": V("a{sv}", source),
            "target": V("a{sv}", {"fd": V("i", 1), "label": V("s", "target"),
                                  "format": V("s", fmt)})}


def convert_pool_volume(pool, name, fmt, out):
    """Convert the pool volume name (of format fmt) into the raw file out
    as vdiskd has a worker do it, answering its requests to open files
    beneath pool: (result, the names it asked for)."""
    s, d = open_pair(os.path.join(pool, name), out)
    dirfd = os.open(pool, os.O_RDONLY | os.O_DIRECTORY)
    req = convert_request("raw", fmt, **{"name": V("s", name), "open-flags": V("u", 0)})
    req["dir-paths"] = V("as", [pool])
    asked = []
    res, _ = run(req, [s, d], folder=dirfd, asked=asked)
    for fd in (s, d, dirfd):
        os.close(fd)
    return res, asked


def open_pair(src, dst):
    s = os.open(src, os.O_RDONLY)
    d = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    return s, d


def main():
    if os.geteuid() != 0:
        print("SKIP: the worker's user switch needs root")
        sys.exit(77)
    if not WORKER or not os.path.exists(WORKER):
        print("SKIP: no vdisk-worker (VDISK_WORKER)")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="vdisk-worker-test.")
    os.chmod(tmp, 0o755)
    src = os.path.join(tmp, "src.qcow2")
    r = qemu_img("create", "-q", "-f", "qcow2", src, "96M")
    assert r.returncode == 0, r.stderr
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 40M", "-c", "write -P 0x33 60M 8M",
                    src], check=True, capture_output=True)

    # A convert through the worker is vdisk convert's.
    for fmt in ("raw", "qcow2", "vmdk", "vdi"):
        ref = os.path.join(tmp, "ref." + fmt)
        out = os.path.join(tmp, "out." + fmt)
        subprocess.run([VDISK, "convert", "-O", fmt, src, ref], check=True)
        s, d = open_pair(src, out)
        seen = []
        res, status = run(convert_request(fmt), [s, d],
                          lambda w, p: seen.append(p))
        os.close(s)
        os.close(d)
        check(res is not None and res.get("ok") is True and os.WIFEXITED(status) and
              os.WEXITSTATUS(status) == 0, "convert to %s succeeds: %s" % (fmt, res))
        cmp = qemu_img("compare", "-f", fmt, "-F", fmt, ref, out)
        check(cmp.returncode == 0, "convert to %s equals vdisk convert: %s" % (fmt, cmp.stdout))
        check(len(seen) > 0 and seen[-1][0] == seen[-1][1] and seen[-1][1] > 0,
              "convert to %s reported progress to the end: %s" % (fmt, seen[-1:]))
        if fmt != "raw":
            chk = qemu_img("check", "-f", fmt, out)
            check(chk.returncode == 0, "qemu-img check of the %s target: %s" % (fmt, chk.stdout))
        conf = (res or {}).get("confinement", {})
        check(conf.get("uid", 0) != 0 and conf.get("no-new-privs") and conf.get("seccomp"),
              "the result reports the confinement: %s" % conf)

    # During the job: an unprivileged user, no new privileges, a filter.
    s, d = open_pair(src, os.path.join(tmp, "ps.raw"))
    status = {}

    def look(w, progress):
        if not status:
            os.kill(w.pid, signal.SIGSTOP)
            status.update(status_of(w.pid))
            os.kill(w.pid, signal.SIGCONT)
    res, _ = run(convert_request("raw"), [s, d], look)
    os.close(s)
    os.close(d)
    uid = status.get("Uid", ["0"])
    check(status and all(u != "0" for u in uid), "the worker runs unprivileged: Uid %s" % uid)
    check(status.get("Gid", ["0"])[0] != "0", "and not in group 0: Gid %s" % status.get("Gid"))
    check(status.get("Groups", []) == [], "with no supplementary groups: %s" % status.get("Groups"))
    check(status.get("NoNewPrivs") == ["1"], "NoNewPrivs 1: %s" % status.get("NoNewPrivs"))
    check(status.get("Seccomp") == ["2"], "Seccomp 2: %s" % status.get("Seccomp"))
    check(status.get("CapEff") == ["0000000000000000"] and
          status.get("CapPrm") == ["0000000000000000"],
          "no capabilities: %s %s" % (status.get("CapEff"), status.get("CapPrm")))

    # As vdiskd.service starts it: the unit's bounding set, no new
    # privileges (Landlock and seccomp need no namespace, which the unit
    # forbids).
    caps = ",".join(["-all"] + ["+" + c[4:] for c in unit_bounding_set()])
    s, d = open_pair(src, os.path.join(tmp, "unit.qcow2"))
    res, status = run(convert_request("qcow2"), [s, d],
                      wrap=["/usr/bin/setpriv", "--bounding-set", caps, "--no-new-privs"])
    os.close(s)
    os.close(d)
    conf = (res or {}).get("confinement", {})
    check(res is not None and res.get("ok") is True and conf.get("uid", 0) != 0 and
          conf.get("seccomp"), "under the unit's bounding set (%s) and no-new-privs: %s"
          % (caps, res))
    cmp = qemu_img("compare", os.path.join(tmp, "ref.qcow2"), os.path.join(tmp, "unit.qcow2"))
    check(cmp.returncode == 0, "and its copy is vdisk convert's: %s" % cmp.stdout)

    # A root worker that cannot leave root does no work.
    s, d = open_pair(src, os.path.join(tmp, "stuck.raw"))
    res, status = run(convert_request("raw"), [s, d],
                      wrap=["/usr/bin/setpriv", "--bounding-set", "-setuid,-setgid"])
    os.close(s)
    os.close(d)
    # No result, and an exit status vdiskd turns into "could not be
    # processed safely", whatever the reason was.
    check(res is None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3 and
          os.path.getsize(os.path.join(tmp, "stuck.raw")) == 0,
          "without CAP_SETUID the worker refuses the job: %s, status %#x" % (res, status))

    # Info of the caller's file.
    s = os.open(src, os.O_RDONLY)
    res, _ = run({"operation": V("s", "info"), "source": V("a{sv}", {"fd": V("i", 0)})}, [s])
    os.close(s)
    info = (res or {}).get("info", {})
    check(info.get("format") == "qcow2" and info.get("virtual-size") == 96 << 20,
          "info: %s" % info)

    # Hostile images: no byte of the host's files reaches the target.
    with open("/etc/passwd", "rb") as f:
        passwd = f.read()
    hostile = os.path.join(tmp, "pool")
    os.mkdir(hostile)
    shadow = os.path.join(hostile, "shadow.qcow2")
    r = qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "/etc/shadow", "-F", "raw", shadow,
                 "1M")
    assert r.returncode == 0, r.stderr
    vmdk = os.path.join(hostile, "passwd.vmdk")
    with open(vmdk, "w") as f:
        f.write('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                'createType="monolithicFlat"\n\nRW 8 FLAT "../../etc/passwd" 0\n\n'
                'ddb.virtualHWVersion = "4"\n')
    for name, fmt in (("shadow.qcow2", "qcow2"), ("passwd.vmdk", "vmdk")):
        path = os.path.join(hostile, name)
        dirfd = os.open(hostile, os.O_RDONLY | os.O_DIRECTORY)
        for mode in ("caller's file", "pool volume"):
            out = os.path.join(tmp, "hostile.raw")
            s, d = open_pair(path, out)
            fds = [s, d]
            asked = []
            if mode == "pool volume":
                # vdiskd opens what the worker asks for, beneath the pool
                req = convert_request("raw", fmt, **{"name": V("s", name),
                                                     "open-flags": V("u", 0)})
                req["dir-paths"] = V("as", [hostile])
                res, status = run(req, fds, folder=dirfd, asked=asked)
            else:
                res, status = run(convert_request("raw", fmt), fds)
            check(all(not a.startswith("/") and ".." not in a for a in asked),
                  "the worker asks for nothing outside the pool: %s" % asked)
            os.close(s)
            os.close(d)
            with open(out, "rb") as f:
                data = f.read()
            msg = (res or {}).get("error-message", "")
            check(res is not None and res.get("ok") is False and msg and
                  os.WIFEXITED(status), "%s as a %s is refused: %s" % (name, mode, msg))
            check(passwd[:64] not in data and b"root:" not in data,
                  "no byte of the host's file in the target of %s (%s)" % (name, mode))
        os.close(dirfd)

    # A pool volume's backing file is asked of vdiskd, and read through the
    # descriptor it passes: the worker itself opens nothing.
    base, top = os.path.join(hostile, "base.qcow2"), os.path.join(hostile, "top.qcow2")
    qemu_img("convert", "-O", "qcow2", src, base)
    r = qemu_img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
    assert r.returncode == 0, r.stderr
    os.chmod(base, 0o600)  # as vdiskd makes volumes: the worker's user cannot open it
    out = os.path.join(tmp, "flat.raw")
    res, asked = convert_pool_volume(hostile, "top.qcow2", "qcow2", out)
    check(res is not None and res.get("ok") is True and asked == ["base.qcow2"],
          "a backing volume is asked for and read: %s, asked %s" % (res, asked))
    cmp = qemu_img("compare", "-f", "qcow2", "-F", "raw", top, out)
    check(cmp.returncode == 0, "the overlay and its backing file flattened: " + cmp.stdout)

    # A differencing VDI names its parent by UUID only: the worker lists the
    # pool's folder (a folder descriptor vdiskd passes) and asks for the
    # parent it finds there.
    parent, child = os.path.join(hostile, "parent.vdi"), os.path.join(hostile, "child.vdi")
    subprocess.run([VDISK, "convert", "-q", "-O", "vdi", src, parent], check=True)
    subprocess.run([VDISK, "create", "-q", "-f", "vdi", "-b", "parent.vdi", "-F", "vdi", child,
                    "96M"], check=True)
    # (the child holds no block of its own: all it reads is its parent's)
    os.chmod(parent, 0o600)
    out = os.path.join(tmp, "child.raw")
    res, asked = convert_pool_volume(hostile, "child.vdi", "vdi", out)
    check(res is not None and res.get("ok") is True and "parent.vdi" in asked,
          "a differencing VDI's parent is found in the pool's folder: %s, asked %s" % (res, asked))
    cmp = qemu_img("compare", "-f", "qcow2", "-F", "raw", src, out)
    check(cmp.returncode == 0, "the differencing VDI read through the worker: " + cmp.stdout)

    # A request the worker does not know is an error, not a crash.
    s = os.open(src, os.O_RDONLY)
    res, status = run({"operation": V("s", "format-disk"),
                       "source": V("a{sv}", {"fd": V("i", 0)})}, [s])
    os.close(s)
    check(res is not None and res.get("ok") is False and "unknown operation" in
          res.get("error-message", ""), "an unknown operation fails: %s" % res)

    # What a taken-over parser might try is stopped by the kernel.
    if not TEST_HOOKS:
        print("note: built without -Dtest_hooks=true, the misbehaving worker is not tested")
    else:
        expect = {"open-shadow": "EACCES", "socket": "SIGSYS", "exec": "SIGSYS",
                  "write-outside": "SIGSYS"}
        for what, how in expect.items():
            if os.path.exists("/tmp/vdisk-worker-outside"):
                os.unlink("/tmp/vdisk-worker-outside")
            out = os.path.join(tmp, "misbehave.raw")
            s, d = open_pair(src, out)
            req = convert_request("raw")
            req["misbehave"] = V("s", what)
            res, status = run(req, [s, d])
            os.close(s)
            os.close(d)
            if how == "SIGSYS":
                check(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS and
                      res is None, "misbehave=%s is killed by seccomp (status %#x, %s)"
                      % (what, status, res))
            else:
                check(res is not None and res.get("ok") is False and
                      "Permission denied" in res.get("error-message", ""),
                      "misbehave=%s is refused: %s" % (what, res))
            with open(out, "rb") as f:
                check(b"root:" not in f.read(), "misbehave=%s leaked nothing" % what)
        check(not os.path.exists("/tmp/vdisk-worker-outside"), "nothing was written outside")

    reflink_copies(tmp)
    block_device_target(tmp, src)

    subprocess.run(["rm", "-rf", tmp])
    if failures:
        print("%d failures" % len(failures))
        sys.exit(1)


def block_device_target(tmp, src):
    """A logical pool's volume is a block device: the worker, under its
    filter, sizes it (BLKGETSIZE64) and zeroes what the source has as
    zeroes (BLKZEROOUT) on a loop device that held other bytes, and the
    copy is the source's."""
    if shutil.which("losetup") is None or not os.path.exists("/dev/loop-control"):
        print("SKIP: no loop devices: the block device target is not tested")
        return
    backing = os.path.join(tmp, "device.img")
    with open(backing, "wb") as f:
        f.write(os.urandom(1 << 20) * 100)
    r = subprocess.run(["losetup", "-f", "--show", backing], capture_output=True, text=True)
    if r.returncode != 0:
        print("SKIP: losetup cannot attach a loop device: " + r.stderr.strip())
        return
    dev = r.stdout.strip()
    try:
        s = os.open(src, os.O_RDONLY)
        d = os.open(dev, os.O_RDWR)
        res, status = run(convert_request("raw"), [s, d])
        os.close(s)
        os.close(d)
        check(res is not None and res.get("ok") is True and os.WIFEXITED(status) and
              os.WEXITSTATUS(status) == 0, "convert into a block device succeeds: %s" % res)
        # the device is 100 MiB, the source 96: its last 4 MiB keep their bytes
        part = os.path.join(tmp, "device-head.raw")
        with open(dev, "rb") as f, open(part, "wb") as out:
            out.write(f.read(96 << 20))
        cmp = qemu_img("compare", "-f", "qcow2", "-F", "raw", src, part)
        check(cmp.returncode == 0, "the device's first 96 MiB are the source's: %s" % cmp.stdout)
        check(os.path.getsize(backing) == 100 << 20, "the device was not resized")
    finally:
        subprocess.run(["losetup", "-d", dev])


def shares_extents(path):
    out = subprocess.run(["filefrag", "-v", path], capture_output=True, text=True).stdout
    return "shared" in out


def reflink_copies(tmp):
    """On a reflink XFS the worker's copies share extents with the source
    (ioctl FICLONE for a qcow2 with nothing to convert, FICLONERANGE for
    runs), which its seccomp filter lets through instead of killing it.
    The file system is made on a loop device inside this test's own mount
    namespace (main() re-runs the test there)."""
    if os.environ.get("VDISK_WORKER_NS") != "1":
        print("note: no private mount namespace, the reflink copies are not tested")
        return
    if not all(shutil.which(p) for p in ("mkfs.xfs", "losetup", "filefrag")):
        print("note: mkfs.xfs, losetup or filefrag missing (xfsprogs, util-linux, e2fsprogs): "
              "the reflink copies are not tested")
        return
    img, mnt = os.path.join(tmp, "xfs.img"), os.path.join(tmp, "xfs")
    with open(img, "wb") as f:
        f.truncate(512 << 20)
    os.mkdir(mnt)
    if subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", img]).returncode != 0:
        print("note: mkfs.xfs failed, the reflink copies are not tested")
        return
    dev = subprocess.run(["losetup", "-f", "--show", img], capture_output=True,
                         text=True).stdout.strip()
    try:
        if not dev or subprocess.run(["mount", "-t", "xfs", dev, mnt]).returncode != 0:
            print("note: cannot mount XFS on a loop device, the reflink copies are not tested")
            return
        os.chmod(mnt, 0o755)
        raw = os.path.join(mnt, "src.raw")
        with open(raw, "wb") as f:
            f.write(os.urandom(8 << 20))
        qcow2 = os.path.join(mnt, "src.qcow2")
        assert qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, qcow2).returncode == 0
        for src, fmt, how in ((qcow2, "qcow2", "FICLONE"), (raw, "raw", "FICLONERANGE"),
                              (qcow2, "raw", "FICLONERANGE")):
            out = os.path.join(mnt, "out-%s-%s" % (os.path.basename(src), fmt))
            s, d = open_pair(src, out)
            res, status = run(convert_request(fmt), [s, d])
            os.close(s)
            os.close(d)
            check(res is not None and res.get("ok") is True and os.WIFEXITED(status),
                  "%s → %s on XFS through the worker (%s) succeeds: status %#x, %s"
                  % (os.path.basename(src), fmt, how, status, res))
            cmp = qemu_img("compare", "-f", "raw", "-F", fmt, raw, out)
            check(cmp.returncode == 0, "and equals the source: %s" % cmp.stdout)
            check(shares_extents(out), "and shares extents with the source")
    finally:
        subprocess.run(["umount", mnt])
        if dev:
            subprocess.run(["losetup", "-d", dev])


if (os.geteuid() == 0 and os.environ.get("VDISK_WORKER_NS") is None and shutil.which("unshare")
        and subprocess.run(["unshare", "--mount", "--propagation", "private", "true"]).returncode == 0):
    # Once more in a mount namespace of its own, for the XFS mount.
    os.environ["VDISK_WORKER_NS"] = "1"
    os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", "--",
                          sys.executable] + sys.argv)
main()
