"""The shared side of vdiskd's end-to-end tests: a private system bus, real
polkitd with the build's .policy and .rules, vdiskd from the build tree,
test users (alice in the privileged group, bob not), and a D-Bus client that
the tests run as any of them. The tests run inside private-ns.sh's mount
namespace, so the users and polkit files they add stay there.

A test file imports this module, calls main(tests) and, when run with
--client, client(argv, extra) where extra maps its own client commands to
functions of (ctx, args)."""
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
SCRIPT = os.path.abspath(sys.argv[0])


# ---------------------------------------------------------------- client side
def client(argv, extra=None):
    """Run one client command and exit; extra: more commands, name -> fn(ctx, args),
    where ctx has call, objects, vol, wait and options."""
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
    if extra and cmd in extra:
        ctx = type("Ctx", (), {})()
        ctx.conn, ctx.call, ctx.objects, ctx.vol, ctx.wait, ctx.options = (
            conn, call, objects, vol, wait, options)
        extra[cmd](ctx, a)
    elif cmd == "add-pool":
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
    elif cmd in ("import", "import-cancel", "import-nowait", "import-rw"):
        # import-rw: the source passed open for reading and writing
        fd = os.open(a[1], os.O_RDWR if cmd == "import-rw" else os.O_RDONLY)
        opts = options(a[4:])
        if cmd == "import-cancel":
            cancel_on_progress.append(False)
        if cmd == "import-nowait":  # the job outlives this client
            opts["detach"] = GLib.Variant("b", True)
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
    elif cmd == "worker-confinement":  # once vdiskd has asked a worker
        for _ in range(100):
            r = conn.call_sync(BUS, ROOT + "/Manager", "org.freedesktop.DBus.Properties", "Get",
                               GLib.Variant("(ss)", (IFACE + "Manager", "WorkerConfinement")),
                               None, 0, 10000, None).unpack()[0]
            if r:
                break
            time.sleep(0.1)
        print(json.dumps(r))
    elif cmd == "inspect":
        fd = os.open(a[0], os.O_RDONLY)
        print(json.dumps(call(ROOT + "/Manager", "Manager", "InspectFile", "(ha{sv})", [0, {}],
                              [fd])[0], default=str))
    elif cmd == "convert-file":
        s = os.open(a[0], os.O_RDONLY)
        d = os.open(a[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        j = call(ROOT + "/Manager", "Manager", "ConvertFile", "(hhsa{sv})",
                 [0, 1, a[2], options(a[3:])], [s, d])[0]
        print(json.dumps({"job": j}), flush=True)  # for a test that watches the job
        wait(j)
    elif cmd == "export":
        d = os.open(a[2], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        j = call(vol(a[0], a[1]), "Volume", "Export", "(hsa{sv})", [0, a[3], {}], [d])[0]
        wait(j)
    elif cmd == "clone-nowait":
        v, j = call(vol(a[0], a[1]), "Volume", "Clone", "(ssa{sv})",
                    [a[2], a[3], {"detach": GLib.Variant("b", True)}])
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
    """vdiskd_args and vdiskd_env: more arguments and environment for vdiskd
    (limits, say); wrap: a command line vdiskd runs under (it execs the
    rest, so vdiskd keeps the pid)."""

    def __init__(self, vdiskd_args=(), vdiskd_env=None, wrap=()):
        self.vdiskd_args = list(vdiskd_args)
        self.wrap = list(wrap)
        self.vdiskd_env = dict(vdiskd_env or {})
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
        self.log = open(os.path.join(self.t, "vdiskd.log"), "a")
        self.state = os.path.join(self.t, "state")
        os.makedirs(self.state, exist_ok=True)
        self.start_vdiskd()

    def start_vdiskd(self, timeout=10):
        """Start vdiskd (again, after a test killed it) and wait for its name."""
        denv = dict(os.environ, STATE_DIRECTORY=self.state)
        denv.update(self.vdiskd_env)
        argv = [self.vdiskd, "--idle-timeout=0", "--config-dir=" + os.path.join(self.t, "conf")]
        self.daemon = subprocess.Popen(self.wrap + argv + self.vdiskd_args,
                                       stdout=self.log, stderr=self.log, env=denv)
        self.pids.append(self.daemon.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run(["gdbus", "introspect", "--system", "--dest", BUS, "--object-path",
                                ROOT + "/Manager"], capture_output=True, timeout=timeout)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("vdiskd did not come up within %d s" % timeout)

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
        keep = os.environ.get("VDISKD_TEST_LOG")  # where to keep vdiskd's log, for debugging
        if keep:
            shutil.copy(os.path.join(self.t, "vdiskd.log"), keep)
        shutil.rmtree(self.t, ignore_errors=True)


def run(user, *args, env=None):
    cmd = ["/usr/bin/python3", SCRIPT, "--client"] + [str(a) for a in args]
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
    """qemu-img ARGS, asked again (ten times in all) when its LUKS key setup
    fails on a busy machine ("Unable to get accurate CPU usage"): that is
    qemu-img's timing, not what a test checks."""
    for _ in range(10):
        r = subprocess.run(["qemu-img"] + list(args), capture_output=True, text=True)
        if r.returncode == 0 or "Unable to get accurate CPU usage" not in r.stderr:
            break
        time.sleep(1)
    return r


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


def workers_of(pid):
    """The vdisk-worker processes pid started."""
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if comm == "vdisk-worker" and ppid == pid:
            found.append(int(p))
    return found


def new_worker(pid, earlier=()):
    """The first vdisk-worker pid starts within 20 s that is not one of
    earlier (the workers seen before: one an earlier case left behind must
    not be taken for the new one)."""
    deadline = time.monotonic() + 20
    workers = []
    while not workers and time.monotonic() < deadline:
        time.sleep(0.1)
        workers = [w for w in workers_of(pid) if w not in earlier]
    assert workers, "no worker seen"
    return workers[0]


def confined_status(worker, parent):
    """status_of(worker) once the worker has confined itself: no longer
    root, and a seccomp filter of its own on top of those it inherited from
    parent (vdiskd). It does so in its first moments; seen earlier, it is
    still the root process vdiskd forked. The fields as they were after
    10 s if it never does."""
    inherited = int(status_of(parent)["Seccomp_filters"][0])
    deadline = time.monotonic() + 10
    st = status_of(worker)
    while time.monotonic() < deadline and (any(u == "0" for u in st["Uid"]) or
                                           int(st["Seccomp_filters"][0]) <= inherited):
        time.sleep(0.05)
        st = status_of(worker)
    return st


def status_of(pid):
    """/proc/PID/status as a dict of field -> its words."""
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.split()
    return fields


def expect_denied(rc, out):
    assert rc == 3 and out.get("error") == IFACE + "Error.NotAuthorized", (rc, out)


def main(tests, env=None):
    """Run tests(env) against fresh services (env: an Env, to pass vdiskd
    arguments), in a mount namespace of their own."""
    if os.environ.get("VDISK_PRIVATE_NS") != "ready" and os.geteuid() == 0:
        ns = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../private-ns.sh")
        os.execv(ns, [ns, sys.executable, SCRIPT] + sys.argv[1:])
    if os.geteuid() != 0:
        print("1..0 # SKIP needs root")
        return 77
    for prog in ("dbus-daemon", "qemu-img", "runuser"):
        if shutil.which(prog) is None or not os.path.exists("/usr/lib/polkit-1/polkitd"):
            print("1..0 # SKIP missing %s or polkitd" % prog)
            return 77
    env = env or Env()
    try:
        env.start()
        tests(env)
    finally:
        env.stop()
    print("# %d failed" % len(FAILED))
    return 1 if FAILED else 0


