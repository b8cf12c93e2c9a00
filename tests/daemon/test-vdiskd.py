#!/usr/bin/python3
"""vdiskd end to end: a private system bus, real polkitd with the project's
.policy and .rules, vdiskd from the build tree, and test users (one in the
privileged group, one not). Each method as root, privileged and unprivileged
user; jobs (progress, cancel, Busy, a client dying); hostile names and fds; a
corrupted image in a pool; many concurrent clients. Needs root (exit 77
otherwise). Everything started is stopped by pid."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

BUS = "org.vdisk.VDisk1"
ROOT = "/org/vdisk/VDisk1"
IFACE = "org.vdisk.VDisk1."
GROUP = os.environ.get("VDISK_PRIVILEGED_GROUP", "libvirt")
ALICE, BOB = "vdisk-test-alice", "vdisk-test-bob"


# ---------------------------------------------------------------- client side
def client(argv):
    from gi.repository import Gio, GLib
    conn = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)

    def call(path, iface, method, sig, args, fds=()):
        fdl = Gio.UnixFDList.new_from_array(list(fds)) if fds else None
        try:
            res, _ = conn.call_with_unix_fd_list_sync(BUS, path, IFACE + iface, method,
                                                      GLib.Variant(sig, tuple(args)), None,
                                                      Gio.DBusCallFlags.NONE, 60000, fdl, None)
            return res.unpack()
        except GLib.Error as e:
            print(json.dumps({"error": Gio.DBusError.get_remote_error(e), "message": e.message}))
            sys.exit(3)

    def objects():
        return conn.call_sync(BUS, ROOT, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects",
                              None, None, 0, 10000, None).unpack()[0]

    def vol(pool, name):
        for p, ifs in objects().items():
            v = ifs.get(IFACE + "Volume")
            if v and v["Name"] == name and p.startswith(ROOT + "/pools/" + pool + "/"):
                return p
        print(json.dumps({"error": "no-volume"}))
        sys.exit(3)

    done, progress = {}, {}
    loop = GLib.MainLoop()
    conn.signal_subscribe(BUS, IFACE + "Job", "Completed", None, None, 0,
                          lambda c, s, p, i, n, a: (done.__setitem__(p, a.unpack()), loop.quit()))
    cancel_on_progress = []

    def changed(c, s, p, i, n, a):
        ch = a.unpack()[1]
        if "Progress" in ch:
            progress.setdefault(p, []).append(ch["Progress"])
            if cancel_on_progress and ch["Progress"] > 0 and not cancel_on_progress[0]:
                cancel_on_progress[0] = True
                call(p, "Job", "Cancel", "(a{sv})", [{}])
    conn.signal_subscribe(BUS, "org.freedesktop.DBus.Properties", "PropertiesChanged", None,
                          IFACE + "Job", 0, changed)

    def wait(job, extra=None):
        GLib.timeout_add_seconds(300, loop.quit)
        while job not in done:
            loop.run()
        ok, msg = done[job]
        out = {"success": ok, "message": msg, "progress": progress.get(job, [])}
        out.update(extra or {})
        print(json.dumps(out))
        sys.exit(0 if ok else 4)

    def options(words):
        """KEY=VALUE words as a{sv}; secret:ID=TEXT go to "secrets" a{say}."""
        opts, secrets = {}, {}
        for w in words:
            k, x = w.split("=", 1)
            if k.startswith("secret:"):
                secrets[k[7:]] = GLib.Variant("ay", x.encode())
            else:
                opts[k] = GLib.Variant("s", x)
        if secrets:
            opts["secrets"] = GLib.Variant("a{say}", {k: v.unpack() for k, v in secrets.items()})
        return opts

    cmd, a = argv[0], argv[1:]
    pool = ROOT + "/pools/" + a[0] if a else None
    if cmd == "add-pool":
        print(json.dumps({"path": call(ROOT + "/Manager", "Manager", "AddPool", "(ssa{sv})",
                                       [a[0], a[1], {}])[0]}))
    elif cmd == "get-pools":
        print(json.dumps(call(ROOT + "/Manager", "Manager", "GetPools", "(a{sv})", [{}])[0]))
    elif cmd == "refresh":
        call(pool, "Pool", "Refresh", "(a{sv})", [{}])
        print("{}")
    elif cmd == "create":
        v, j = call(pool, "Pool", "CreateVolume", "(ssta{sv})",
                    [a[1], a[2], int(a[3]), options(a[4:])])
        wait(j, {"volume": v})
    elif cmd in ("import", "import-cancel", "import-nowait"):
        fd = os.open(a[1], os.O_RDONLY)
        opts = {k: GLib.Variant("s", x) for k, x in (y.split("=", 1) for y in a[4:])}
        if cmd == "import-cancel":
            cancel_on_progress.append(False)
        v, j = call(pool, "Pool", "ImportVolume", "(hssa{sv})", [0, a[2], a[3], opts], [fd])
        if cmd == "import-nowait":
            print(json.dumps({"job": j}))
            sys.stdout.flush()
            time.sleep(float(os.environ.get("HOLD", "0")))
            sys.exit(0)
        wait(j, {"volume": v})
    elif cmd == "import-fd":  # POOL KIND NAME: a hostile descriptor
        kind = a[1]
        if kind == "dir":
            fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
        elif kind == "socket":
            fd = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).detach()
        else:
            fd = os.open(a[3], os.O_WRONLY)
        v, j = call(pool, "Pool", "ImportVolume", "(hssa{sv})", [0, a[2], "qcow2", {}], [fd])
        wait(j)
    elif cmd == "inspect":
        fd = os.open(a[0], os.O_RDONLY)
        print(json.dumps(call(ROOT + "/Manager", "Manager", "InspectFile", "(ha{sv})", [0, {}],
                              [fd])[0], default=str))
    elif cmd == "convert-file":
        s = os.open(a[0], os.O_RDONLY)
        d = os.open(a[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        j = call(ROOT + "/Manager", "Manager", "ConvertFile", "(hhsa{sv})", [0, 1, a[2], {}],
                 [s, d])[0]
        wait(j)
    elif cmd == "export":
        d = os.open(a[2], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        j = call(vol(a[0], a[1]), "Volume", "Export", "(hsa{sv})", [0, a[3], {}], [d])[0]
        wait(j)
    elif cmd == "clone-nowait":
        v, j = call(vol(a[0], a[1]), "Volume", "Clone", "(ssa{sv})", [a[2], a[3], {}])
        print(json.dumps({"job": j}))
        sys.exit(0)
    elif cmd == "clone":
        v, j = call(vol(a[0], a[1]), "Volume", "Clone", "(ssa{sv})", [a[2], a[3], options(a[4:])])
        wait(j)
    elif cmd == "resize":
        j = call(vol(a[0], a[1]), "Volume", "Resize", "(ta{sv})",
                 [int(a[2]), options(a[3:])])[0]
        wait(j)
    elif cmd == "copy-from":  # POOL TARGET POOL SOURCE OPTIONS...
        j = call(vol(a[0], a[1]), "Volume", "CopyFrom", "(oa{sv})",
                 [vol(a[2], a[3]), options(a[4:])])[0]
        wait(j)
    elif cmd in ("CreateSnapshot", "RevertSnapshot", "DeleteSnapshot"):
        call(vol(a[0], a[1]), "Volume", cmd, "(sa{sv})", [a[2], {}])
        print("{}")
    elif cmd == "overlay":
        print(json.dumps({"path": call(vol(a[0], a[1]), "Volume", "CreateOverlay", "(sa{sv})",
                                       [a[2], {}])[0]}))
    elif cmd == "delete":
        call(vol(a[0], a[1]), "Volume", "Delete", "(a{sv})", [{}])
        print("{}")
    elif cmd == "volume-props":
        print(json.dumps(objects()[vol(a[0], a[1])][IFACE + "Volume"], default=str))
    else:
        sys.exit(2)
    sys.exit(0)


# ---------------------------------------------------------------- test side
class Env:
    def __init__(self):
        self.pids = []
        self.installed = []
        self.users = []
        self.t = tempfile.mkdtemp(prefix="vdiskd-test.")
        os.chmod(self.t, 0o755)
        self.build = os.environ.get("BUILD") or os.path.join(os.path.dirname(__file__), "../../build")
        self.repo = os.environ.get("REPO") or os.path.join(os.path.dirname(__file__), "../..")
        self.vdiskd = os.environ.get("VDISKD") or os.path.join(self.build, "daemon/vdiskd")
        self.addr = "unix:path=%s/bus" % self.t
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self.addr

    def start(self):
        conf = os.path.join(self.t, "bus.conf")
        with open(conf, "w") as f:
            f.write("""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>%s</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><deny own="*"/><deny send_type="method_call"/>
<allow send_type="signal"/><allow send_requested_reply="true" send_type="method_return"/>
<allow send_requested_reply="true" send_type="error"/><allow receive_type="method_call"/>
<allow receive_type="method_return"/><allow receive_type="error"/><allow receive_type="signal"/>
<allow send_destination="org.freedesktop.DBus"/></policy>
<includedir>/usr/share/dbus-1/system.d</includedir>
<includedir>%s/dbus</includedir></busconfig>""" % (self.addr, self.repo))
        out = subprocess.check_output(["dbus-daemon", "--config-file=" + conf, "--fork",
                                       "--print-pid"], text=True)
        self.pids.append(int(out.split()[0]))
        for src, dst in ((os.path.join(self.build, "polkit/org.vdisk.VDisk1.policy"),
                          "/usr/share/polkit-1/actions/org.vdisk.VDisk1.policy"),
                         (os.path.join(self.build, "polkit/50-vdisk.rules"),
                          "/etc/polkit-1/rules.d/50-vdisk-test.rules")):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy(src, dst)
            os.chmod(dst, 0o644)
            self.installed.append(dst)
        subprocess.run(["groupadd", "-rf", GROUP], check=True)
        for user, groups in ((ALICE, ["-G", GROUP]), (BOB, [])):
            if subprocess.run(["id", user], capture_output=True).returncode != 0:
                subprocess.run(["useradd", "-M", "-N"] + groups + [user], check=True)
                self.users.append(user)
        self.pids.append(subprocess.Popen(["/usr/lib/polkit-1/polkitd", "--no-debug"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)
        self.log = open(os.path.join(self.t, "vdiskd.log"), "w")
        self.daemon = subprocess.Popen([self.vdiskd, "--idle-timeout=0",
                                        "--config-dir=" + os.path.join(self.t, "conf")],
                                       stdout=self.log, stderr=self.log)
        self.pids.append(self.daemon.pid)
        for _ in range(100):
            r = subprocess.run(["gdbus", "introspect", "--system", "--dest", BUS, "--object-path",
                                ROOT + "/Manager"], capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("vdiskd did not come up")

    def stop(self):
        for pid in reversed(self.pids):
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
        time.sleep(0.3)
        for pid in reversed(self.pids):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        for u in self.users:
            subprocess.run(["userdel", u], capture_output=True)
        for f in self.installed:
            try:
                os.unlink(f)
            except FileNotFoundError:  # another run's cleanup got there first
                pass
        shutil.rmtree(self.t, ignore_errors=True)


def run(user, *args, env=None):
    cmd = ["/usr/bin/python3", os.path.abspath(__file__), "--client"] + [str(a) for a in args]
    if user != "root":
        cmd = ["runuser", "-u", user, "--", "env",
               "DBUS_SYSTEM_BUS_ADDRESS=" + os.environ["DBUS_SYSTEM_BUS_ADDRESS"]] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        out = {"raw": r.stdout + r.stderr}
    return r.returncode, out


def qemu_img(*args):
    return subprocess.run(["qemu-img"] + list(args), capture_output=True, text=True)


FAILED = []


def case(name):
    def deco(fn):
        try:
            fn()
            print("ok - %s" % name)
        except Exception as e:  # noqa: BLE001 -- report every failure, run every case
            FAILED.append(name)
            print("not ok - %s: %r" % (name, e))
        sys.stdout.flush()
        return fn
    return deco


def expect_denied(rc, out):
    assert rc == 3 and out.get("error") == IFACE + "Error.NotAuthorized", (rc, out)


def main():
    if os.geteuid() != 0:
        print("1..0 # SKIP needs root")
        return 77
    for prog in ("dbus-daemon", "qemu-img", "runuser"):
        if shutil.which(prog) is None or not os.path.exists("/usr/lib/polkit-1/polkitd"):
            print("1..0 # SKIP missing %s or polkitd" % prog)
            return 77
    env = Env()
    try:
        env.start()
        tests(env)
    finally:
        env.stop()
    print("# %d failed" % len(FAILED))
    return 1 if FAILED else 0


def tests(env):
    t = env.t
    pool = os.path.join(t, "pool")
    home = os.path.join(t, "home")
    os.makedirs(pool)
    os.makedirs(home)
    os.chmod(home, 0o777)
    raw = os.path.join(home, "disk.raw")
    with open(raw, "wb") as f:
        for i in range(64):
            f.write(bytes([i + 1]) * 65536)
            f.seek(1 << 20, 1)
    vdi = os.path.join(home, "disk.vdi")
    qemu_img("convert", "-f", "raw", "-O", "vdi", raw, vdi)
    os.chmod(raw, 0o644)
    os.chmod(vdi, 0o644)

    @case("pools: bob and alice may not add a pool, root may")
    def _():
        expect_denied(*run(BOB, "add-pool", "p", pool))
        expect_denied(*run(ALICE, "add-pool", "p", pool))
        rc, out = run("root", "add-pool", "p", pool)
        assert rc == 0 and out["path"] == ROOT + "/pools/p", out
        rc, out = run(BOB, "get-pools")
        assert rc == 0 and out == [ROOT + "/pools/p"], out

    @case("create: root and alice yes (qemu-img agrees), bob NotAuthorized and nothing made")
    def _():
        for user, name in (("root", "r.qcow2"), (ALICE, "a.qcow2")):
            rc, out = run(user, "create", "p", name, "qcow2", 1 << 26)
            assert rc == 0, out
            assert qemu_img("check", os.path.join(pool, name)).returncode == 0
            info = json.loads(qemu_img("info", "--output=json", os.path.join(pool, name)).stdout)
            assert info["virtual-size"] == 1 << 26 and info["format"] == "qcow2", info
        expect_denied(*run(BOB, "create", "p", "b.qcow2", "qcow2", 1 << 26))
        assert not os.path.exists(os.path.join(pool, "b.qcow2"))

    @case("import: alice yes with content equal, bob refused")
    def _():
        rc, out = run(ALICE, "import", "p", vdi, "imp.qcow2", "qcow2")
        assert rc == 0 and out["success"], out
        assert qemu_img("compare", "-f", "vdi", "-F", "qcow2", vdi,
                        os.path.join(pool, "imp.qcow2")).returncode == 0
        expect_denied(*run(BOB, "import", "p", vdi, "bimp.qcow2", "qcow2"))
        assert not os.path.exists(os.path.join(pool, "bimp.qcow2"))

    @case("fds: bob inspects and converts his own files")
    def _():
        rc, out = run(BOB, "inspect", vdi)
        assert rc == 0 and out["format"] == "vdi", out
        assert out["virtual-size"] == os.path.getsize(raw), out
        dst = os.path.join(home, "bob-out.qcow2")
        rc, out = run(BOB, "convert-file", vdi, dst, "qcow2")
        assert rc == 0, out
        assert qemu_img("compare", "-f", "vdi", "-F", "qcow2", vdi, dst).returncode == 0

    @case("export/clone/resize/snapshots: alice yes, bob refused; checked by qemu-img")
    def _():
        back = os.path.join(home, "back.raw")
        # bob's client creates its own target file before the call is refused
        expect_denied(*run(BOB, "export", "p", "imp.qcow2", back + ".bob", "raw"))
        rc, out = run(ALICE, "export", "p", "imp.qcow2", back, "raw")
        assert rc == 0, out
        assert open(back, "rb").read() == open(raw, "rb").read()
        expect_denied(*run(BOB, "clone", "p", "imp.qcow2", "c.vmdk", "vmdk"))
        rc, out = run(ALICE, "clone", "p", "imp.qcow2", "c.vmdk", "vmdk")
        assert rc == 0, out
        assert qemu_img("compare", "-f", "qcow2", "-F", "vmdk", os.path.join(pool, "imp.qcow2"),
                        os.path.join(pool, "c.vmdk")).returncode == 0
        expect_denied(*run(BOB, "resize", "p", "a.qcow2", 1 << 27))
        rc, out = run(ALICE, "resize", "p", "a.qcow2", 1 << 27)
        assert rc == 0, out
        info = json.loads(qemu_img("info", "--output=json", os.path.join(pool, "a.qcow2")).stdout)
        assert info["virtual-size"] == 1 << 27
        rc, out = run(ALICE, "volume-props", "p", "a.qcow2")
        assert out["VirtualSize"] == 1 << 27, out
        expect_denied(*run(BOB, "CreateSnapshot", "p", "a.qcow2", "s1"))
        assert run(ALICE, "CreateSnapshot", "p", "a.qcow2", "s1")[0] == 0
        assert "s1" in qemu_img("snapshot", "-l", os.path.join(pool, "a.qcow2")).stdout
        rc, out = run(ALICE, "volume-props", "p", "a.qcow2")
        assert any(s[1] == "s1" for s in out["Snapshots"]), out
        assert run(ALICE, "RevertSnapshot", "p", "a.qcow2", "s1")[0] == 0
        assert run(ALICE, "DeleteSnapshot", "p", "a.qcow2", "s1")[0] == 0
        assert qemu_img("check", os.path.join(pool, "a.qcow2")).returncode == 0
        rc, out = run(ALICE, "overlay", "p", "a.qcow2", "top.qcow2")
        assert rc == 0, out
        assert "a.qcow2" in qemu_img("info", os.path.join(pool, "top.qcow2")).stdout

    def luks(path, secret="s0"):
        return ["--object", "secret,id=%s,data=pw-%s" % (secret, secret), "--image-opts",
                "driver=qcow2,encrypt.key-secret=%s,file.filename=%s" % (secret, path)]

    @case("encrypted volumes: clone, copy-from and resize open them with their key")
    def _():
        enc, k = os.path.join(pool, "enc.qcow2"), ["volume-key-secret=s0", "secret:s0=pw-s0"]
        rc, out = run(ALICE, "create", "p", "enc.qcow2", "qcow2", 1 << 25, "encrypt.format=luks",
                      "encrypt.key-secret=s0", "secret:s0=pw-s0")
        assert rc == 0, out
        io = subprocess.run(["qemu-io"] + luks(enc) + ["-c", "write -P 0x5a 1M 3M"],
                            capture_output=True, text=True)
        assert io.returncode == 0, io.stderr
        # without its key, or with a wrong one, nothing is read and nothing is left
        rc, out = run(ALICE, "clone", "p", "enc.qcow2", "nokey.raw", "raw")
        assert rc == 4 and "passphrase" in out["message"], out
        rc, out = run(ALICE, "clone", "p", "enc.qcow2", "bad.raw", "raw", "volume-key-secret=s0",
                      "secret:s0=wrong")
        assert rc == 3 and "key slot" in out["message"], out
        rc, out = run(ALICE, "clone", "p", "enc.qcow2", "dec.raw", "raw", "volume-key-secret=x",
                      *k[1:])
        assert rc == 3 and out["error"] == IFACE + "Error.InvalidArgument", out
        assert not any(os.path.exists(os.path.join(pool, n))
                       for n in ("nokey.raw", "bad.raw", "dec.raw"))
        rc, out = run(ALICE, "clone", "p", "enc.qcow2", "dec.raw", "raw", *k)
        assert rc == 0, out
        cmp = qemu_img("compare", *luks(enc), "driver=raw,file.filename=" + pool + "/dec.raw")
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        # encrypted to encrypted under another key
        rc, out = run(ALICE, "clone", "p", "enc.qcow2", "enc2.qcow2", "qcow2", *k,
                      "encrypt.format=luks", "encrypt.key-secret=s1", "secret:s1=pw-s1")
        assert rc == 0, out
        enc2 = os.path.join(pool, "enc2.qcow2")
        assert qemu_img("check", *luks(enc2, "s1")).returncode == 0
        cmp = qemu_img("compare", *luks(enc2, "s1")[:2], *luks(enc)[:2], "--image-opts",
                       luks(enc2, "s1")[3], luks(enc)[3])
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        # CopyFrom: libvirt's clone of an encrypted volume fills a new one
        rc, out = run(ALICE, "create", "p", "fill.qcow2", "qcow2", 1 << 25, "encrypt.format=luks",
                      "encrypt.key-secret=s1", "secret:s1=pw-s1")
        assert rc == 0, out
        fill = os.path.join(pool, "fill.qcow2")
        copy = ["volume-key-secret=s1", "secret:s1=pw-s1", "source-key-secret=s0",
                "secret:s0=pw-s0"]
        expect_denied(*run(BOB, "copy-from", "p", "fill.qcow2", "p", "enc.qcow2", *copy))
        rc, out = run(ALICE, "copy-from", "p", "fill.qcow2", "p", "enc.qcow2", *copy)
        assert rc == 0, out
        assert qemu_img("check", *luks(fill, "s1")).returncode == 0
        cmp = qemu_img("compare", *luks(fill, "s1")[:2], *luks(enc)[:2], "--image-opts",
                       luks(fill, "s1")[3], luks(enc)[3])
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        # a plain source over the encrypted one, then refusals
        rc, out = run(ALICE, "copy-from", "p", "fill.qcow2", "p", "dec.raw", *copy[:2])
        assert rc == 0, out
        cmp = qemu_img("compare", *luks(fill, "s1"), "driver=raw,file.filename=" + pool + "/dec.raw")
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        rc, out = run(ALICE, "copy-from", "p", "fill.qcow2", "p", "fill.qcow2", *copy)
        assert rc == 3 and "itself" in out["message"], out
        rc, out = run(ALICE, "copy-from", "p", "fill.qcow2", "p", "imp.qcow2", *copy[:2])
        assert rc == 3 and "smaller" in out["message"], out
        # resize with the key; qemu-img opens the result
        rc, out = run(ALICE, "resize", "p", "enc.qcow2", 3 << 24, *k)
        assert rc == 0, out
        info = json.loads(qemu_img("info", "--output=json", enc).stdout)
        assert info["virtual-size"] == 3 << 24, info
        assert qemu_img("check", *luks(enc)).returncode == 0

    @case("delete: alice and bob refused, root deletes")
    def _():
        expect_denied(*run(BOB, "delete", "p", "r.qcow2"))
        expect_denied(*run(ALICE, "delete", "p", "r.qcow2"))
        assert os.path.exists(os.path.join(pool, "r.qcow2"))
        assert run("root", "delete", "p", "r.qcow2")[0] == 0
        assert not os.path.exists(os.path.join(pool, "r.qcow2"))

    @case("hostile names: /, .., hidden, empty, too long, existing")
    def _():
        for n in ("../escape.qcow2", "a/b.qcow2", ".hidden", "", "x" * 256, "a.qcow2", ".."):
            rc, out = run("root", "create", "p", n, "qcow2", 1 << 20)
            assert rc == 3 and out["error"] in (IFACE + "Error.InvalidArgument",
                                                IFACE + "Error.Exists"), (n, out)
        assert not os.path.exists(os.path.join(t, "escape.qcow2"))

    @case("hostile fds: directory, socket, write-only file")
    def _():
        wo = os.path.join(home, "wo")
        open(wo, "w").close()
        os.chmod(wo, 0o666)
        for kind in ("dir", "socket", "wo"):
            rc, out = run(ALICE, "import-fd", "p", kind, "fd-%s.qcow2" % kind, wo)
            assert rc == 3 and out["error"] == IFACE + "Error.InvalidArgument", (kind, out)
            assert not os.path.exists(os.path.join(pool, "fd-%s.qcow2" % kind))

    big = os.path.join(home, "big.raw")
    with open(big, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(512):
            f.write(block[i:] + block[:i])
    os.chmod(big, 0o644)

    @case("jobs: progress moves on a large import, and is monotonic")
    def _():
        rc, out = run(ALICE, "import", "p", big, "big.vmdk", "vmdk", "subformat=streamOptimized")
        assert rc == 0, out
        p = out["progress"]
        assert len(set(x for x in p if 0 < x < 1)) >= 2 and p == sorted(p), p

    @case("jobs: cancel mid-way fails the job and leaves no file")
    def _():
        rc, out = run(ALICE, "import-cancel", "p", big, "cx.vmdk", "vmdk",
                      "subformat=streamOptimized")
        assert rc == 4 and "ancel" in out["message"], out
        time.sleep(0.5)
        assert not os.path.exists(os.path.join(pool, "cx.vmdk"))

    @case("jobs: a second writer of a busy volume gets Busy")
    def _():
        envh = dict(os.environ, HOLD="0")
        rc, out = run(ALICE, "import-nowait", "p", big, "busy.vmdk", "vmdk",
                      "subformat=streamOptimized", env=envh)
        assert rc == 0, out
        rc, out = run(ALICE, "CreateSnapshot", "p", "busy.vmdk", "s")
        assert rc == 3 and out["error"] == IFACE + "Error.Busy", out
        for _ in range(300):
            if run("root", "volume-props", "p", "busy.vmdk")[1].get("Busy") is False:
                break
            time.sleep(0.2)

    @case("jobs: a refused CopyFrom leaves the locks of others' jobs alone")
    def _():
        rc, out = run(ALICE, "clone-nowait", "p", "big.vmdk", "rd.raw", "raw")  # reads big.vmdk
        assert rc == 0, out
        rc, out = run(ALICE, "copy-from", "p", "big.vmdk", "p", "big.vmdk")
        assert rc == 3 and "itself" in out["message"], out
        # the clone still holds its read lock: no writer may start
        rc, out = run(ALICE, "CreateSnapshot", "p", "big.vmdk", "s")
        assert rc == 3 and out["error"] == IFACE + "Error.Busy", out
        for _ in range(300):
            if run("root", "volume-props", "p", "rd.raw")[1].get("Busy") is False:
                break
            time.sleep(0.2)

    @case("a volume a running VM holds (qemu-nbd) gets Busy, naming the holder")
    def _():
        rc, out = run(ALICE, "create", "p", "held.qcow2", "qcow2", 1 << 26)
        assert rc == 0, out
        path = os.path.join(pool, "held.qcow2")
        before = open(path, "rb").read()
        nbd = subprocess.Popen(["qemu-nbd", "--persistent", "-k", os.path.join(home, "held.sock"),
                                "-f", "qcow2", path], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ino = ":%d " % os.stat(path).st_ino
            for _ in range(100):
                if ino in open("/proc/locks").read():
                    break
                time.sleep(0.1)
            rc, out = run(ALICE, "resize", "p", "held.qcow2", 1 << 27)
            assert rc == 3 and out["error"] == IFACE + "Error.Busy", out
            assert "qemu-nbd, pid %d" % nbd.pid in out["message"], out
            assert 'Failed to get "write" lock' in out["message"], out
            rc, out = run(ALICE, "CreateSnapshot", "p", "held.qcow2", "s")
            assert rc == 3 and out["error"] == IFACE + "Error.Busy", out
            # the volume is still described (read as qemu-img info -U reads)
            props = run("root", "volume-props", "p", "held.qcow2")[1]
            assert props.get("Format") == "qcow2", props
        finally:
            nbd.terminate()
            nbd.wait()
        assert open(path, "rb").read() == before

    @case("a client dying mid-job does not kill the daemon")
    def _():
        p = subprocess.Popen(["/usr/bin/python3", os.path.abspath(__file__), "--client", "import",
                              "p", big, "orphan.qcow2", "qcow2"], stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        p.kill()
        p.wait()
        time.sleep(1)
        assert env.daemon.poll() is None
        assert run(BOB, "get-pools")[0] == 0

    @case("a corrupted file in the pool shows an error and hides nothing")
    def _():
        with open(os.path.join(pool, "garbage.qcow2"), "wb") as f:
            f.write(b"QFI\xfb\x00\x00\x00\x03" + os.urandom(1000))
        assert run("root", "refresh", "p")[0] == 0
        rc, out = run(BOB, "volume-props", "p", "garbage.qcow2")
        assert rc == 0 and out["Error"] != "", out
        rc, out = run(BOB, "volume-props", "p", "a.qcow2")
        assert rc == 0 and out["Format"] == "qcow2" and out["Error"] == "", out

    @case("many concurrent clients")
    def _():
        procs = [subprocess.Popen(["/usr/bin/python3", os.path.abspath(__file__), "--client",
                                   "inspect", vdi], stdout=subprocess.PIPE)
                 for _ in range(24)]
        for p in procs:
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 0 and json.loads(out)["format"] == "vdi"
        assert env.daemon.poll() is None


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2:])
    sys.exit(main())
