"""NBD through vdiskd.

vdiskctl import of an NBD export: vdiskctl connects to the server as the
user and passes the socket to vdiskd (ImportVolume's nbd-export), whose
worker speaks NBD on it. Exports of a qcow2 by qemu-nbd (on a Unix socket,
and on 127.0.0.1 with an export name) import as volumes qemu-img compare
finds identical to the qcow2; holes are not read (nbdkit's log filter in
front counts the bytes read); a slow import (nbdkit's rate filter) is
cancelled by Ctrl-C and leaves no volume; a user polkit does not let
import is refused; a server the user's process cannot reach (a socket
only root may use, a closed port) fails in vdiskctl before vdiskd is
called. vdiskd refuses an nbd-export whose descriptor is no connected
stream socket, and a non-raw source-format with it.

vdiskctl export-nbd: vdiskctl binds the socket as the user and vdiskd
serves the volume on it with nbdkit and vdisk's plugin, as an unprivileged
user with no new privileges and a seccomp filter; qemu-img compare reads
through it what the volume holds, qemu-io writes through a writable export
land in the volume, the volume is locked while served (a writer, or a
second export, is refused) and Ctrl-C ends it: the socket is gone, the
volume unlocked. Exports hold none of the job slots copies share. An
encrypted volume (LUKS in qcow2, raw LUKS) is served decrypted with the
caller's key (qemu-img compare through qemu's own LUKS reading), the key in
no argument, variable or descriptor of nbdkit's that names a file; a
missing or wrong key is refused. An overlay is served through its chain
(three deep), writes land in the overlay and the base's bytes stay the
same, the base held meanwhile; one whose backing file lies outside the
pool is refused. A user polkit does not let is refused. Servers are
started and stopped by pid, on loopback only. Needs root (exit 77
otherwise)."""
import hashlib
import json
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vdiskd_env import (ALICE, BOB, Env, case, client, main, qemu_img, run,  # noqa: E402
                        status_of)

VDISKCTL = os.environ.get("VDISKCTL")
PLUGIN = os.path.join(os.environ.get("BUILD", ""), "nbd", "nbdkit-vdisk-plugin.so")
MIB = 1 << 20


def import_nbd_fd(ctx, a):
    """POOL NAME KIND [OPTION=VALUE...]: ImportVolume with nbd-export "" of
    a descriptor of KIND: file:PATH (a regular file), unbound (a stream
    socket connected nowhere), dgram (a datagram socketpair's end),
    unix:PATH (a socket connected to PATH)."""
    from gi.repository import GLib
    pool, name, kind = a[0], a[1], a[2]
    if kind.startswith("file:"):
        fd = os.open(kind[5:], os.O_RDONLY)
    elif kind == "unbound":
        fd = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).detach()
    elif kind == "dgram":
        fd = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)[0].detach()
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(kind[5:])
        fd = s.detach()
    opts = ctx.options(a[3:])
    opts["nbd-export"] = GLib.Variant("s", "")
    v, j = ctx.call("/org/vdisk/VDisk1/pools/" + pool, "Pool", "ImportVolume", "(hssa{sv})",
                    [0, name, "qcow2", opts], [fd])
    ctx.wait(j, {"volume": v})


def as_user(user, *argv):
    return subprocess.run(["runuser", "-u", user, "--", "env",
                           "DBUS_SYSTEM_BUS_ADDRESS=" + os.environ["DBUS_SYSTEM_BUS_ADDRESS"]] +
                          list(argv), capture_output=True, text=True, cwd="/")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(path, timeout=10):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError("%s did not appear" % path)
        time.sleep(0.05)


def read_pid(path):
    wait_for(path)
    for _ in range(100):
        with open(path) as f:
            text = f.read().strip()
        if text:
            return int(text)
        time.sleep(0.05)
    raise RuntimeError("%s stays empty" % path)


def nbdkit_of(pid):
    """The nbdkit processes that vdiskd's (pid's) workers started."""
    procs = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        procs[int(p)] = (comm, int(stat[stat.rindex(")") + 2:].split()[1]))
    return [p for p, (comm, ppid) in procs.items()
            if comm == "nbdkit" and procs.get(ppid, ("", 0)) == ("vdisk-worker", pid)]


def imports_logged(env):
    """How many ImportVolume calls vdiskd has logged (every call that
    reached it, allowed or not)."""
    with open(os.path.join(env.t, "vdiskd.log")) as f:
        return f.read().count(".ImportVolume ")


def tests(env):
    pool = os.path.join(env.t, "pool")
    os.makedirs(pool)
    assert run("root", "add-pool", "p", pool)[0] == 0
    work = os.path.join(env.t, "work")
    os.makedirs(work)
    os.chmod(work, 0o755)

    # 1 GiB of guest disk with 3 MiB of data (and a zeroed run) in it.
    src = os.path.join(work, "src.qcow2")
    assert qemu_img("create", "-q", "-f", "qcow2", src, "1G").returncode == 0
    r = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1M",
                        "-c", "write -P 0xa5 512M 2M", "-c", "write -z 768M 1M", src],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # 8 MiB of data for the import that is cancelled.
    big = os.path.join(work, "big.qcow2")
    assert qemu_img("create", "-q", "-f", "qcow2", big, "64M").returncode == 0
    assert subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 8M", big],
                          capture_output=True).returncode == 0

    def qemu_nbd(*args):
        pidfile = os.path.join(work, "qemu-nbd.%d.pid" % len(env.pids))
        subprocess.run(["qemu-nbd", "--fork", "--persistent", "--pid-file=" + pidfile, "-r",
                        "-f", "qcow2"] + list(args), check=True)
        env.pids.append(read_pid(pidfile))

    def nbdkit(*args):
        pidfile = os.path.join(work, "nbdkit.%d.pid" % len(env.pids))
        subprocess.run(["nbdkit", "-P", pidfile] + list(args), check=True)
        env.pids.append(read_pid(pidfile))

    unix_sock = os.path.join(work, "src.sock")
    qemu_nbd("-k", unix_sock, src)
    wait_for(unix_sock)
    os.chmod(unix_sock, 0o666)  # the test users connect to it
    port = free_port()
    qemu_nbd("-b", "127.0.0.1", "-p", str(port), "-x", "web", src)
    root_sock = os.path.join(work, "root-only.sock")
    qemu_nbd("-k", root_sock, src)
    wait_for(root_sock)
    os.chmod(root_sock, 0o600)

    def vdiskctl(user, *args):
        return as_user(user, VDISKCTL, *args)

    def same(volume, reference=src, fmt="qcow2"):
        r = qemu_img("compare", "-f", fmt, "-F", "qcow2", volume, reference)
        assert r.returncode == 0, r.stdout + r.stderr

    @case("vdiskctl import nbd+unix:///?socket=... copies qemu-nbd's export of a qcow2")
    def _():
        r = vdiskctl(ALICE, "import", "-q", "nbd+unix:///?socket=" + unix_sock, "p/u.qcow2")
        assert r.returncode == 0, r.stderr
        same(os.path.join(pool, "u.qcow2"))
        info = json.loads(qemu_img("info", "--output=json", os.path.join(pool, "u.qcow2")).stdout)
        assert info["format"] == "qcow2" and info["virtual-size"] == 1 << 30, info
        # Only the data is allocated: the holes were not written.
        assert info["actual-size"] < 16 * MIB, info

    @case("vdiskctl import nbd://127.0.0.1:PORT/EXPORT copies the export of that name")
    def _():
        r = vdiskctl(ALICE, "import", "-q", "nbd://127.0.0.1:%d/web" % port, "p/t.raw")
        assert r.returncode == 0, r.stderr
        same(os.path.join(pool, "t.raw"), fmt="raw")
        assert os.stat(os.path.join(pool, "t.raw")).st_blocks * 512 < 16 * MIB

    @case("an export the server does not have fails naming the URI, and leaves no volume")
    def _():
        uri = "nbd://127.0.0.1:%d/nosuch" % port
        r = vdiskctl(ALICE, "import", "-q", uri, "p/nosuch.qcow2")
        assert r.returncode == 1 and uri in r.stderr, r
        assert sorted(os.listdir(pool)) == ["t.raw", "u.qcow2"], os.listdir(pool)

    @case("the import reads only the data: block status says where the holes are")
    def _():
        logged = os.path.join(work, "log.sock")
        logfile = os.path.join(work, "nbd.log")
        nbdkit("-U", logged, "--filter=log", "nbd", "socket=" + unix_sock, "logfile=" + logfile)
        wait_for(logged)
        os.chmod(logged, 0o666)
        r = vdiskctl(ALICE, "import", "-q", "nbd+unix:///?socket=" + logged, "p/sparse.qcow2")
        assert r.returncode == 0, r.stderr
        same(os.path.join(pool, "sparse.qcow2"))
        with open(logfile) as f:
            log = f.read()
        read = sum(int(m.group(1), 16)
                   for m in re.finditer(r"\bRead id=\d+ offset=0x[0-9a-f]+ count=0x([0-9a-f]+)",
                                        log))
        assert "BlockStatus" in log or "Extents" in log, log[-2000:]
        assert 0 < read <= 8 * MIB, "read %d bytes of a 1 GiB export with 3 MiB of data" % read

    @case("Ctrl-C cancels an NBD import: the job ends cancelled, no volume is left")
    def _():
        big_sock = os.path.join(work, "big.sock")
        slow = os.path.join(work, "slow.sock")
        qemu_nbd("-k", big_sock, big)
        wait_for(big_sock)
        nbdkit("-U", slow, "--filter=rate", "nbd", "socket=" + big_sock, "rate=1M")
        wait_for(slow)
        os.chmod(slow, 0o666)
        # setpriv execs vdiskctl in its place: the signal goes to vdiskctl.
        pw = pwd.getpwnam(ALICE)
        p = subprocess.Popen(["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid, "--init-groups",
                              "env",
                              "DBUS_SYSTEM_BUS_ADDRESS=" + os.environ["DBUS_SYSTEM_BUS_ADDRESS"],
                              VDISKCTL, "import", "nbd+unix:///?socket=" + slow,
                              "p/cancelled.qcow2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
        deadline = time.monotonic() + 60
        moving = False
        while time.monotonic() < deadline and not moving:
            time.sleep(0.3)
            r = subprocess.run([VDISKCTL, "jobs", "--json"], capture_output=True, text=True)
            jobs = json.loads(r.stdout or "[]")
            moving = any(j.get("operation") == "import" and j.get("progress", 0) > 0
                         for j in jobs)
        assert moving, "the import never showed progress"
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 1 and "cancel" in err, (p.returncode, err)
        assert "cancelled.qcow2" not in " ".join(os.listdir(pool)), os.listdir(pool)

    @case("a user polkit does not let import is refused, and no volume is made")
    def _():
        r = vdiskctl(BOB, "import", "--no-ask-password", "-q",
                     "nbd+unix:///?socket=" + unix_sock, "p/bob.qcow2")
        assert r.returncode == 1 and "not authori" in r.stderr.lower(), r
        assert not os.path.exists(os.path.join(pool, "bob.qcow2"))

    @case("a server the user cannot reach fails in vdiskctl, before any call to vdiskd")
    def _():
        before = imports_logged(env)
        r = vdiskctl(ALICE, "import", "-q", "nbd+unix:///?socket=" + root_sock, "p/root.qcow2")
        assert r.returncode == 1, r
        assert "cannot connect" in r.stderr and "Permission denied" in r.stderr, r.stderr
        closed = free_port()
        r = vdiskctl(ALICE, "import", "-q", "nbd://127.0.0.1:%d/" % closed, "p/closed.qcow2")
        assert r.returncode == 1 and "Connection refused" in r.stderr, r
        r = vdiskctl(ALICE, "import", "-q", "nbds://127.0.0.1:%d/" % port, "p/tls.qcow2")
        assert r.returncode == 1 and "not supported" in r.stderr, r
        assert imports_logged(env) == before, "vdiskd was called"
        assert not any(n in os.listdir(pool) for n in ("root.qcow2", "closed.qcow2", "tls.qcow2"))

    @case("vdiskd takes for nbd-export only a connected stream socket, read as raw")
    def _():
        for kind, problem in (("file:" + src, "is not a socket"),
                              ("unbound", "is not a connected socket"),
                              ("dgram", "is not a Unix, IPv4 or IPv6 stream socket")):
            rc, out = run(ALICE, "import-nbd-fd", "p", "bad.qcow2", kind)
            assert rc == 3 and problem in out.get("message", ""), (kind, out)
        rc, out = run(ALICE, "import-nbd-fd", "p", "bad.qcow2", "unix:" + unix_sock,
                      "source-format=qcow2")
        assert rc == 3 and "raw" in out.get("message", ""), out
        assert not os.path.exists(os.path.join(pool, "bad.qcow2"))
        rc, out = run(ALICE, "import-nbd-fd", "p", "direct.qcow2", "unix:" + unix_sock)
        assert rc == 0, out
        same(os.path.join(pool, "direct.qcow2"))

    if not os.path.exists(PLUGIN or ""):
        print("# no nbdkit plugin in the build (nbdkit-plugin-dev): export-nbd is not tested")
        return
    home = os.path.join(work, "alice")
    os.makedirs(home)
    os.chown(home, pwd.getpwnam(ALICE).pw_uid, 0)

    def export_nbd(volume, sock, *args):
        """vdiskctl export-nbd as alice, until it says it serves."""
        pw = pwd.getpwnam(ALICE)
        p = subprocess.Popen(["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid,
                              "--init-groups", "env",
                              "DBUS_SYSTEM_BUS_ADDRESS=" + os.environ["DBUS_SYSTEM_BUS_ADDRESS"],
                              VDISKCTL, "export-nbd", volume, "--socket", sock] + list(args),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
        line = p.stdout.readline()
        if "Serving" not in line:
            p.kill()
            raise AssertionError("export-nbd: %r %r" % (line, p.communicate()))
        # Ctrl-C is vdiskctl's once it catches SIGINT (it says "Serving" first).
        deadline = time.monotonic() + 10
        while not int(status_of(p.pid)["SigCgt"][0], 16) & (1 << (signal.SIGINT - 1)):
            assert time.monotonic() < deadline, "vdiskctl never catches SIGINT"
            time.sleep(0.05)
        return p

    def stop(p):
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, (p.returncode, out, err)
        return out

    def writable(path, fmt="qcow2"):
        """Whether qemu-io may take the write lock of path."""
        r = subprocess.run(["qemu-io", "-f", fmt, "-c", "read 0 512", path],
                           capture_output=True, text=True)
        return r.returncode == 0 and "lock" not in r.stderr, r.stderr

    @case("vdiskctl export-nbd --readonly serves what the volume holds; Ctrl-C ends it, the "
          "socket gone, the volume unlocked")
    def _():
        volume = os.path.join(pool, "u.qcow2")
        sock = os.path.join(home, "ro.sock")
        p = export_nbd("p/u.qcow2", sock, "--readonly")
        try:
            # Alice's alone (and root's), whatever her umask.
            assert os.stat(sock).st_mode & 0o077 == 0, oct(os.stat(sock).st_mode)
            assert os.stat(sock).st_uid == pwd.getpwnam(ALICE).pw_uid
            r = qemu_img("compare", "-f", "raw", "-F", "qcow2",
                         "nbd+unix:///?socket=" + sock, src)
            assert r.returncode == 0, r.stdout + r.stderr
            # A writer is refused while it is served: the volume's lock.
            assert not writable(volume)[0], "the served volume is not locked"
            servers = nbdkit_of(env.daemon.pid)
            assert len(servers) == 1, servers
            st = status_of(servers[0])
            assert st["Uid"][0] != "0" and st["NoNewPrivs"] == ["1"] and st["Seccomp"] == ["2"], st
            assert st["CapEff"] == ["0000000000000000"], st
        finally:
            stop(p)
        assert not os.path.exists(sock)
        ok, err = writable(volume)
        assert ok, err
        assert nbdkit_of(env.daemon.pid) == []

    @case("a writable export takes writes into the volume, and is the volume's only writer")
    def _():
        volume = os.path.join(pool, "w.raw")
        assert qemu_img("create", "-q", "-f", "raw", volume, "16M").returncode == 0
        assert run("root", "refresh", "p")[0] == 0
        sock = os.path.join(home, "rw.sock")
        p = export_nbd("p/w.raw", sock)
        try:
            r = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x77 4096 8192",
                                "nbd+unix:///?socket=" + sock], capture_output=True, text=True)
            assert r.returncode == 0 and "error" not in r.stderr.lower(), r.stdout + r.stderr
            # A second export of it is Busy, named.
            r = as_user(ALICE, VDISKCTL, "export-nbd", "p/w.raw", "--readonly", "--socket",
                        os.path.join(home, "second.sock"))
            assert r.returncode == 1 and "p/w.raw" in r.stderr, r
            assert not os.path.exists(os.path.join(home, "second.sock"))
        finally:
            stop(p)
        r = subprocess.run(["qemu-io", "-f", "raw", "-c", "read -P 0x77 4096 8192",
                            "-c", "read -P 0 0 4096", volume], capture_output=True, text=True)
        assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout

    @case("exports hold no job slot: with two served, the same user's import runs at once")
    def _():
        # A user runs 2 jobs at once (3 slots in all, 1 kept for root and
        # the privileged group): exports that took slots would queue it.
        served = [export_nbd("p/u.qcow2", os.path.join(home, "a.sock"), "--readonly"),
                  export_nbd("p/direct.qcow2", os.path.join(home, "b.sock"), "--readonly")]
        try:
            r = subprocess.run(["runuser", "-u", ALICE, "--", "env",
                                "DBUS_SYSTEM_BUS_ADDRESS=" + os.environ["DBUS_SYSTEM_BUS_ADDRESS"],
                                VDISKCTL, "import", "-q", "nbd+unix:///?socket=" + unix_sock,
                                "p/beside.qcow2"], capture_output=True, text=True, cwd="/",
                               timeout=60)
            assert r.returncode == 0, r.stderr
            same(os.path.join(pool, "beside.qcow2"))
        finally:
            for p in served:
                stop(p)

    def alices(name, text):
        """A file of alice's in her folder, holding text."""
        path = os.path.join(home, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        os.chown(path, pwd.getpwnam(ALICE).pw_uid, 0)
        return path

    def checksum(path):
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    def qemu_io(*args):
        r = subprocess.run(["qemu-io"] + list(args), capture_output=True, text=True)
        assert r.returncode == 0 and "error" not in (r.stdout + r.stderr).lower() and \
            "Pattern verification failed" not in r.stdout, r.stdout + r.stderr

    def refused(volume, *args):
        """export-nbd as alice that must fail: its stderr."""
        # The server of an export stopped a moment ago may still be on its
        # way out (vdiskctl ends with its job, the worker's nbdkit after).
        deadline = time.monotonic() + 10
        while nbdkit_of(env.daemon.pid):
            assert time.monotonic() < deadline, ("a stopped export's server lives on",
                                                 nbdkit_of(env.daemon.pid))
            time.sleep(0.05)
        sock = os.path.join(home, "refused.sock")
        r = as_user(ALICE, VDISKCTL, "export-nbd", volume, "--socket", sock, *args)
        assert r.returncode == 1, r
        assert not os.path.exists(sock), "the socket of a refused export is left"
        assert nbdkit_of(env.daemon.pid) == [], ("a refused export serves", r)
        return r.stderr

    @case("an encrypted volume is served decrypted with the caller's key (in no argument, "
          "variable or file of nbdkit's); without it, or with a wrong one, it is refused")
    def _():
        enc = os.path.join(pool, "enc.qcow2")
        rc, out = run(ALICE, "create", "p", "enc.qcow2", "qcow2", 16 * MIB,
                      "encrypt.format=luks", "encrypt.key-secret=s0", "secret:s0=pw-s0-x")
        assert rc == 0, out
        key, wrong = alices("key", "pw-s0-x"), alices("wrong", "pw-s1-x")
        luks = ["--object", "secret,id=k,file=" + key, "--image-opts",
                "driver=qcow2,encrypt.key-secret=k,file.filename=" + enc]
        qemu_io(*luks, "-c", "write -P 0x5a 1M 3M")
        sock = os.path.join(home, "enc.sock")
        with_key = ["--object", "secret,id=k,file=" + key, "--key-secret", "k"]
        p = export_nbd("p/enc.qcow2", sock, "--readonly", *with_key)
        try:
            # The export is the guest's plain disk, as qemu decrypts it.
            r = qemu_img("compare", *luks[:3], "driver=raw,file.driver=nbd,file.server.type=unix,"
                         "file.server.path=" + sock, luks[3])
            assert r.returncode == 0, r.stdout + r.stderr
            servers = nbdkit_of(env.daemon.pid)
            assert len(servers) == 1, servers
            for what in ("cmdline", "environ"):
                with open("/proc/%d/%s" % (servers[0], what), "rb") as f:
                    assert b"pw-s0" not in f.read(), what
            # Its descriptors: none is a file holding the key.
            fds = "/proc/%d/fd" % servers[0]
            for fd in os.listdir(fds):
                target = os.readlink(os.path.join(fds, fd))
                assert target not in (key, wrong), ("nbdkit holds a key file", target)
        finally:
            stop(p)
        # Writes through a writable export are encrypted into the volume.
        p = export_nbd("p/enc.qcow2", sock, *with_key)
        try:
            qemu_io("-f", "raw", "-c", "write -P 0x66 8M 1M", "nbd+unix:///?socket=" + sock)
        finally:
            stop(p)
        qemu_io(*luks, "-c", "read -P 0x66 8M 1M", "-c", "read -P 0x5a 1M 3M")
        with open(enc, "rb") as f:
            assert b"\x66" * 4096 not in f.read(), "plain data in the encrypted volume"
        err = refused("p/enc.qcow2", "--readonly")
        assert "passphrase" in err, err
        err = refused("p/enc.qcow2", "--object", "secret,id=k,file=" + wrong, "--key-secret", "k")
        assert "key slot" in err and "p/enc.qcow2" in err, err
        err = refused("p/enc.qcow2", "--object", "secret,id=k,file=" + key, "--key-secret", "x")
        assert "secret" in err, err
        ok, err = writable(enc)
        assert "lock" not in err, err
        # Raw LUKS likewise.
        raw = os.path.join(pool, "enc.luks")
        r = qemu_img("create", "-q", "-f", "luks", *luks[:2], "-o", "key-secret=k", raw, "8M")
        assert r.returncode == 0, r.stderr
        raw_opts = "driver=luks,key-secret=k,file.filename=" + raw
        qemu_io(*luks[:3], raw_opts, "-c", "write -P 0x77 2M 1M")
        rc, out = run("root", "refresh", "p")
        assert rc == 0, out
        p = export_nbd("p/enc.luks", sock, "--readonly", *with_key)
        try:
            r = qemu_img("compare", *luks[:3], "driver=raw,file.driver=nbd,file.server.type=unix,"
                         "file.server.path=" + sock, raw_opts)
            assert r.returncode == 0, r.stdout + r.stderr
        finally:
            stop(p)
        err = refused("p/enc.luks", "--object", "secret,id=k,file=" + wrong, "--key-secret", "k")
        assert "key slot" in err, err

    @case("an overlay is served through its backing chain, and writes land in the overlay only")
    def _():
        base, top = os.path.join(pool, "base.qcow2"), os.path.join(pool, "top.qcow2")
        rc, out = run(ALICE, "create", "p", "base.qcow2", "qcow2", 16 * MIB)
        assert rc == 0, out
        qemu_io("-f", "qcow2", "-c", "write -P 0x11 0 4M", "-c", "write -P 0x22 8M 2M", base)
        rc, out = run(ALICE, "overlay", "p", "base.qcow2", "top.qcow2")
        assert rc == 0, out
        qemu_io("-f", "qcow2", "-c", "write -P 0x33 1M 1M", top)
        rc, out = run(ALICE, "overlay", "p", "top.qcow2", "top2.qcow2")
        assert rc == 0, out
        before = checksum(base)
        sock = os.path.join(home, "top.sock")
        uri = "nbd+unix:///?socket=" + sock
        # Three deep, read-only: the guest's view through the chain.
        p = export_nbd("p/top2.qcow2", sock, "--readonly")
        try:
            r = qemu_img("compare", "-f", "raw", "-F", "qcow2", uri,
                         os.path.join(pool, "top2.qcow2"))
            assert r.returncode == 0, r.stdout + r.stderr
        finally:
            stop(p)
        p = export_nbd("p/top.qcow2", sock)
        try:
            # -U: the served volume is write-locked, as by any writer.
            r = qemu_img("compare", "-U", "-f", "raw", "-F", "qcow2", uri, top)
            assert r.returncode == 0, r.stdout + r.stderr
            qemu_io("-f", "raw", "-c", "write -P 0x44 8M 1M", "-c", "write -P 0x55 0 64K", uri)
            # The base under a served overlay is held: not resized, not written.
            rc, out = run(ALICE, "resize", "p", "base.qcow2", 32 * MIB)
            assert rc != 0 and "Busy" in out.get("error", ""), out
            assert not writable(base)[0], "the served overlay's base is not locked"
        finally:
            stop(p)
        assert checksum(base) == before, "the base changed"
        qemu_io("-f", "qcow2", "-c", "read -P 0x44 8M 1M", "-c", "read -P 0x22 9M 1M",
                "-c", "read -P 0x55 0 64K", "-c", "read -P 0x11 64K 960K",
                "-c", "read -P 0x33 1M 1M", top)
        assert qemu_img("check", top).returncode == 0
        ok, err = writable(base)
        assert ok, err

    @case("an overlay whose backing file lies outside the pool is refused, nothing served")
    def _():
        evil = os.path.join(pool, "evil.qcow2")
        assert qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "/etc/passwd", "-F", "raw",
                        evil, "1M").returncode == 0
        assert run("root", "refresh", "p")[0] == 0
        err = refused("p/evil.qcow2", "--readonly")
        assert "lies outside" in err, err

    @case("export-nbd by a user polkit does not let is refused, and the socket removed")
    def _():
        bob_home = os.path.join(work, "bob")
        os.makedirs(bob_home)
        os.chown(bob_home, pwd.getpwnam(BOB).pw_uid, 0)
        sock = os.path.join(bob_home, "b.sock")
        r = as_user(BOB, VDISKCTL, "export-nbd", "--no-ask-password", "p/u.qcow2", "--socket",
                    sock)
        assert r.returncode == 1 and "not authorized" in r.stderr, r
        assert not os.path.exists(sock)
        assert nbdkit_of(env.daemon.pid) == []


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2:], {"import-nbd-fd": import_nbd_fd})
    missing = [p for p in ("qemu-nbd", "qemu-io", "nbdkit")
               if subprocess.run(["which", p], capture_output=True).returncode != 0]
    if missing or VDISKCTL is None:
        print("1..0 # SKIP needs %s" % (", ".join(missing) or "VDISKCTL (the build's vdiskctl)"))
        sys.exit(77)
    sys.exit(main(tests, Env(vdiskd_env={"VDISK_NBDKIT_PLUGIN": PLUGIN})))
