"""An rbd pool: vdiskd's volumes are the RBD images of a Ceph pool,
configured in pools.d with Type=rbd, Source=POOL, Conf=, User= and
Keyring=. The cluster is tests/ceph-cluster.sh's (one monitor, one OSD, on
127.0.0.1, in the test's own folder), stopped by pid whatever happens.

vdiskctl pools lists the pool as rbd with the cluster's capacity; an
import of a vdi (with -p) makes an RBD image that qemu-img compare (with
qemu's own rbd driver) finds equal to the source; export to qcow2, an RBD
clone (layering: its parent a protected snapshot), resize (a shrink needs
--shrink), snapshots (as rbd snap ls lists them) and delete (rbd ls) work
on it; a qcow2 volume is refused; the worker of an rbd job is still
confined (one that tries to exec is killed, one that opens /etc/shadow is
refused), and the key never reaches its errors; a pool whose keyring
lacks the client's key is shown unavailable, saying which keyring it read.

Needs root and the Ceph packages (exit 77 with the reason otherwise)."""
import json
import os
import re
import signal
import subprocess
import sys
import time

from vdiskd_env import Env, case, client, main, qemu_img, workers_of

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER = os.path.join(HERE, "..", "ceph-cluster.sh")
CEPH_POOL = "vdisktest"
POOL = "ceph"
UNSAFE = "the image could not be processed safely"
VIRSH = ["virsh", "-q", "-c", "qemu:///system"]


def libvirt_rbd_missing():
    """Why libvirt's rbd pools cannot be tried here, or None."""
    import glob
    import shutil
    if shutil.which("libvirtd") is None or shutil.which("virsh") is None:
        return "libvirtd or virsh is missing"
    if not glob.glob("/usr/lib/*/libvirt/storage-backend/libvirt_storage_backend_rbd.so"):
        return "libvirt has no rbd pools here (libvirt-daemon-driver-storage-rbd)"
    return None


class CephEnv(Env):
    """Env with a one-node Ceph cluster, started before vdiskd (it reads
    pools.d then) and stopped by pid after it."""

    def __init__(self):
        super().__init__(vdiskd_env={"VDISKD_TEST_HOOKS": "1"})
        self.ceph_pids = []
        self.ceph = {}

    def start(self):
        vdisk = os.path.join(self.build, "tools", "vdisk")
        r = subprocess.run([vdisk, "info", "rbd:p/i:conf=/nonexistent"], capture_output=True,
                           text=True)
        why = ("vdisk was built without Ceph RBD support (-Drbd, librbd-dev)"
               if "built without Ceph RBD support" in r.stderr else
               "qemu-img has no rbd driver (qemu-block-extra): the oracle is missing"
               if not re.search(r"Supported formats:.* rbd", qemu_img("--help").stdout) else None)
        if why is not None:
            print("1..0 # SKIP " + why)
            raise SystemExit(77)
        cdir = os.path.join(self.t, "ceph")
        script = ('source "$1" && ceph_cluster_start "$2" && ceph_pool_create "$3" || exit $?\n'
                  'echo "PIDS=${CEPH_PIDS[*]}"; echo "CONF=$CEPH_CONF"; '
                  'echo "KEYRING=$CEPH_KEYRING"; echo "MONPORT=$CEPH_MON_PORT"\n')
        r = subprocess.run(["bash", "-c", script, "cluster", CLUSTER, cdir, CEPH_POOL],
                           capture_output=True, text=True, timeout=300)
        for line in r.stdout.splitlines():
            k, _, v = line.partition("=")
            if k in ("PIDS", "CONF", "KEYRING", "MONPORT"):
                self.ceph[k] = v
        # Whatever happened, the daemons that wrote pid files are ours.
        run_dir = os.path.join(cdir, "run")
        for f in os.listdir(run_dir) if os.path.isdir(run_dir) else []:
            if f.endswith(".pid"):
                with open(os.path.join(run_dir, f)) as p:
                    self.ceph_pids.append(int(p.read().strip() or 0))
        if r.returncode != 0:
            self.stop_ceph()
            print("1..0 # SKIP %s" % (r.stdout + r.stderr).strip().replace("\n", " | "))
            raise SystemExit(77)
        conf = os.path.join(self.t, "conf")
        os.makedirs(conf, exist_ok=True)
        with open(os.path.join(conf, "ceph.conf"), "w") as f:
            f.write("[Pool %s]\nType=rbd\nSource=%s\nConf=%s\nUser=admin\nKeyring=%s\n"
                    % (POOL, CEPH_POOL, self.ceph["CONF"], self.ceph["KEYRING"]))
            # The same cluster, but a keyring that holds no key for the
            # client: shown unavailable, never a hang.
            empty = os.path.join(self.t, "empty.keyring")
            with open(empty, "w") as k:
                k.write("[client.other]\n\tkey = AQBzZXJ2ZXIAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n")
            f.write("[Pool nokey]\nType=rbd\nSource=%s\nConf=%s\nKeyring=%s\n"
                    % (CEPH_POOL, self.ceph["CONF"], empty))
        super().start()

    def stop_ceph(self):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.ceph_pids:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + 10
            while sig == signal.SIGTERM and time.monotonic() < deadline and any(
                    os.path.exists("/proc/%d" % p) for p in self.ceph_pids):
                time.sleep(0.1)

    def stop(self):
        try:
            super().stop()
        finally:
            self.stop_libvirt()
            self.stop_ceph()

    def stop_libvirt(self):
        pid = getattr(self, "libvirtd", None)
        if pid is None:
            return
        for p in ("vlibrbd",):
            subprocess.run(VIRSH + ["pool-destroy", p], capture_output=True)
            subprocess.run(VIRSH + ["pool-undefine", p], capture_output=True)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            time.sleep(1)


def tests(env):
    vdiskctl = os.path.join(env.build, "tools", "vdiskctl")
    t = env.t
    conf = env.ceph["CONF"]
    cenv = dict(os.environ, CEPH_CONF=conf)

    def ctl(*args):
        return subprocess.run([vdiskctl, "--no-ask-password"] + list(args), capture_output=True,
                              text=True, timeout=300)

    def rbd(*args):
        r = subprocess.run(["rbd", "-p", CEPH_POOL] + list(args), capture_output=True,
                           text=True, env=cenv, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def name(image):
        return "rbd:%s/%s:conf=%s" % (CEPH_POOL, image, conf)

    def pool(which=POOL):
        r = ctl("pools", "--json")
        assert r.returncode == 0, r.stderr
        return [p for p in json.loads(r.stdout) if p["name"] == which][0]

    # vdiskd connects to the cluster off its main loop: the pool is usable
    # (or says why not) a moment after it starts.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (pool()["error"] == "connecting to the Ceph cluster"
                                           or pool("nokey")["error"] == "connecting to the Ceph "
                                           "cluster"):
        time.sleep(0.2)

    @case("vdiskctl pools lists the rbd pool with its type and the cluster's size and free space")
    def _():
        p = pool()
        assert p["error"] == "", p
        assert p["type"] == "rbd" and p["directory"] == "rbd:" + CEPH_POOL, p
        df = json.loads(subprocess.run(["ceph", "df", "--format", "json"], capture_output=True,
                                       text=True, env=cenv, check=True).stdout)["stats"]
        # Without a ceph-mgr (this cluster has none) ceph df says 0: the
        # OSDs' devices, as the monitor knows them, are the capacity.
        osds = json.loads(subprocess.run(["ceph", "osd", "metadata", "--format", "json"],
                                         capture_output=True, text=True, env=cenv,
                                         check=True).stdout)
        devices = sum(int(o["bluestore_bdev_size"]) for o in osds)
        assert p["capacity"] == (df["total_bytes"] or devices) > 0, (p, df, devices)
        assert 0 < p["available"] <= p["capacity"], p
        r = ctl("pools")
        row = [line.split() for line in r.stdout.splitlines() if line.split()[:1] == [POOL]]
        assert row and row[0][1] == "rbd:" + CEPH_POOL and row[0][2] == "rbd", r.stdout

    @case("an rbd pool whose keyring has no key for its client is unavailable, naming the keyring")
    def _():
        p = pool("nokey")
        assert "no key for client.admin" in p["error"], p
        assert "empty.keyring" in p["error"], p
        r = ctl("pools")
        assert "Pool nokey is unavailable: " in r.stdout, r.stdout
        r = ctl("import", os.path.join(t, "none"), "nokey/x")
        assert r.returncode != 0, r.stdout

    src = os.path.join(t, "disk.vdi")
    assert qemu_img("create", "-f", "vdi", src, "24M").returncode == 0
    r = subprocess.run(["qemu-io", "-c", "write -P 0x5a 1M 3M", "-c", "write -P 0x11 15M 1M",
                        src], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    os.chmod(t, 0o755)

    @case("vdiskctl import -p of a vdi makes an RBD image qemu-img compare finds equal")
    def _():
        r = ctl("import", "-p", src, POOL + "/vol")
        assert r.returncode == 0, r.stderr
        assert "vol" in rbd("ls").split(), rbd("ls")
        info = json.loads(rbd("info", "vol", "--format", "json"))
        assert info["size"] == 24 << 20, info
        assert "layering" in info["features"], info
        r = qemu_img("compare", "-f", "vdi", "-F", "raw", src, name("vol"))
        assert r.returncode == 0, r.stdout + r.stderr
        # Sparse: what the vdi holds, not its 24 MiB of zeroes.
        du = json.loads(rbd("du", "vol", "--format", "json"))["images"][0]
        assert du["used_size"] <= 8 << 20, du
        r = ctl("volumes", POOL)
        assert r.returncode == 0 and "vol" in r.stdout, r.stdout + r.stderr
        r = ctl("info", POOL + "/vol", "--json")
        info = json.loads(r.stdout)
        assert info["format"] == "raw" and info["virtual-size"] == 24 << 20, r.stdout
        # What the image takes in the cluster: the objects the data lies
        # in (4 MiB each), as rbd du counts them.
        assert info["actual-size"] == du["used_size"] > 0, (info, du)

    @case("create makes an empty raw RBD image; copy writes an RBD volume over it")
    def _():
        r = ctl("create", POOL + "/blank", "24M")
        assert r.returncode == 0, r.stderr
        assert json.loads(rbd("info", "blank", "--format", "json"))["size"] == 24 << 20
        r = ctl("copy", POOL + "/vol", POOL + "/blank")
        assert r.returncode == 0, r.stderr
        r = qemu_img("compare", "-f", "vdi", "-F", "raw", src, name("blank"))
        assert r.returncode == 0, r.stdout + r.stderr
        r = ctl("delete", POOL + "/blank")
        assert r.returncode == 0, r.stderr

    @case("an import cancelled mid-way leaves no RBD image")
    def _():
        big = os.path.join(t, "big.vdi")
        assert qemu_img("create", "-f", "vdi", big, "256M").returncode == 0
        r = subprocess.run(["qemu-io", "-c", "write -P 0x33 0 128M", big], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        rc, res = run_client("import-cancel", POOL, big, "cancelled", "raw")
        assert rc == 4 and "ancel" in res.get("message", ""), (rc, res)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "cancelled" in rbd("ls").split():
            time.sleep(0.2)
        assert "cancelled" not in rbd("ls").split(), rbd("ls")
        os.unlink(big)

    @case("a qcow2 volume in an rbd pool is refused: its volumes are raw")
    def _():
        r = ctl("import", "-f", "qcow2", src, POOL + "/q")
        assert r.returncode != 0 and "raw" in r.stderr, r.stderr
        assert "q" not in rbd("ls").split(), rbd("ls")

    @case("export of an RBD volume to qcow2 equals the source")
    def _():
        out = os.path.join(t, "out.qcow2")
        r = ctl("export", "-f", "qcow2", POOL + "/vol", out)
        assert r.returncode == 0, r.stderr
        r = qemu_img("compare", "-f", "vdi", "-F", "qcow2", src, out)
        assert r.returncode == 0, r.stdout + r.stderr

    @case("clone in the rbd pool is an RBD clone of a protected snapshot, equal to its source")
    def _():
        r = ctl("clone", POOL + "/vol", POOL + "/copy")
        assert r.returncode == 0, r.stderr
        info = json.loads(rbd("info", "copy", "--format", "json"))
        assert info["parent"]["image"] == "vol", info
        assert info["parent"]["snapshot"] == "vdisk-clone-copy", info
        r = qemu_img("compare", "-f", "vdi", "-F", "raw", src, name("copy"))
        assert r.returncode == 0, r.stdout + r.stderr
        r = ctl("snapshot", "list", POOL + "/vol")
        assert "vdisk-clone-copy" in r.stdout, r.stdout + r.stderr

    @case("resize grows the RBD image; a shrink needs --shrink")
    def _():
        r = ctl("resize", POOL + "/vol", "+8M")
        assert r.returncode == 0, r.stderr
        assert json.loads(rbd("info", "vol", "--format", "json"))["size"] == 32 << 20
        r = ctl("resize", POOL + "/vol", "16M")
        assert r.returncode != 0 and "shrink" in r.stderr, r.stdout + r.stderr
        assert json.loads(rbd("info", "vol", "--format", "json"))["size"] == 32 << 20
        r = ctl("info", POOL + "/vol", "--json")
        assert json.loads(r.stdout)["virtual-size"] == 32 << 20, r.stdout

    @case("snapshots of an RBD volume are RBD snapshots: create, list, revert, delete")
    def _():
        r = ctl("snapshot", "create", POOL + "/copy", "before")
        assert r.returncode == 0, r.stderr
        snaps = [s["name"] for s in json.loads(rbd("snap", "ls", "copy", "--format", "json"))]
        assert snaps == ["before"], snaps
        r = ctl("snapshot", "list", POOL + "/copy")
        assert r.returncode == 0 and "before" in r.stdout, r.stdout + r.stderr
        r = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x77 0 1M", name("copy")],
                           capture_output=True, text=True, env=cenv)
        assert r.returncode == 0, r.stderr
        assert qemu_img("compare", "-f", "vdi", "-F", "raw", src, name("copy")).returncode == 1
        r = ctl("snapshot", "revert", POOL + "/copy", "before")
        assert r.returncode == 0, r.stderr
        r = qemu_img("compare", "-f", "vdi", "-F", "raw", src, name("copy"))
        assert r.returncode == 0, r.stdout + r.stderr
        r = ctl("snapshot", "delete", POOL + "/copy", "before")
        assert r.returncode == 0, r.stderr
        assert json.loads(rbd("snap", "ls", "copy", "--format", "json")) == []

    @case("the worker of an rbd job stays confined: exec kills it, /etc/shadow is refused")
    def _():
        for what, expect in (("exec", UNSAFE), ("open-shadow", "Permission denied")):
            rc, res = run_client("import", POOL, src, "bad", "raw", "misbehave=" + what)
            assert rc != 0 and expect in res.get("message", ""), (what, rc, res)
            assert "bad" not in rbd("ls").split(), rbd("ls")
        assert workers_of(env.daemon.pid) == [], workers_of(env.daemon.pid)

    @case("an rbd job's error names the volume, never the client's key")
    def _():
        with open(env.ceph["KEYRING"]) as f:
            key = [line.split("=", 1)[1].strip() for line in f if "key" in line][0]
        # The worker opens the image with the key in its name, and the
        # engine's error names the image it could not open: one removed
        # behind vdiskd's back.
        rbd("create", "--size", "4M", "ghost")
        assert ctl("refresh", POOL).returncode == 0
        rbd("rm", "ghost")
        r = ctl("export", POOL + "/ghost", os.path.join(t, "ghost.raw"))
        assert r.returncode != 0, r.stdout + r.stderr
        assert r.stderr.startswith("vdiskctl: %s/ghost: there is no RBD image 'ghost'" % POOL), \
            r.stderr
        assert key not in r.stderr and "key=" not in r.stderr, r.stderr
        assert ctl("refresh", POOL).returncode == 0

    @case("delete removes the RBD image; its clone's parent snapshot goes with the clone")
    def _():
        r = ctl("delete", POOL + "/copy")
        assert r.returncode == 0, r.stderr
        assert "copy" not in rbd("ls").split(), rbd("ls")
        assert json.loads(rbd("snap", "ls", "vol", "--format", "json")) == []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "vdisk-clone-copy" in ctl(
                "snapshot", "list", POOL + "/vol").stdout:
            time.sleep(0.2)
        r = ctl("snapshot", "list", POOL + "/vol")
        assert "vdisk-clone-copy" not in r.stdout, r.stdout
        r = ctl("delete", POOL + "/vol")
        assert r.returncode == 0, r.stderr
        assert rbd("ls").split() == [], rbd("ls")

    libvirt_cases(env, ctl, rbd, pool, src)

    @case("vdiskd without a network shows the rbd pool unavailable, naming the drop-in, at once")
    def _():
        # As under the unit's PrivateNetwork=yes: a network namespace of
        # its own (not even its loopback is up).
        env.daemon.kill()
        env.daemon.wait()
        env.wrap = ["unshare", "-n", "--"]
        env.start_vdiskd()
        start = time.monotonic()
        while time.monotonic() - start < 30 and pool()["error"] == "connecting to the Ceph " \
                "cluster":
            time.sleep(0.1)
        p = pool()
        assert "vdiskd has no network" in p["error"], p
        assert "vdiskd-ceph.conf" in p["error"], p
        assert time.monotonic() - start < 5, time.monotonic() - start
        assert p["volumes"] == [], p


def libvirt_cases(env, ctl, rbd, pool, src):
    """libvirt's rbd pool, mirrored by vdiskd: its Ceph pool, monitors and
    client come from libvirt's XML; its key is in a libvirt secret, which
    vdiskd cannot read."""
    why = libvirt_rbd_missing()
    if why is not None:
        print("# SKIP libvirt's rbd pool is not tested: %s" % why)
        return
    t = env.t
    conf = env.ceph["CONF"]
    key = subprocess.run(["ceph", "auth", "get-key", "client.admin"], capture_output=True,
                         text=True, env=dict(os.environ, CEPH_CONF=conf), check=True).stdout
    pidfile = os.path.join(t, "libvirtd.pid")
    r = subprocess.run(["libvirtd", "-d", "--pid-file", pidfile], capture_output=True, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not os.path.exists(pidfile):
        time.sleep(0.1)
    if r.returncode != 0 or not os.path.exists(pidfile):
        print("# SKIP libvirt's rbd pool is not tested: libvirtd did not start: " + r.stderr)
        return
    with open(pidfile) as f:
        env.libvirtd = int(f.read().strip())
    while time.monotonic() < deadline and subprocess.run(VIRSH + ["version"],
                                                         capture_output=True).returncode:
        time.sleep(0.1)
    rbd("create", "--size", "8M", "fromlibvirt")

    @case("libvirt's rbd pool is mirrored: unavailable without a keyring, naming where it looked")
    def _():
        uuid = open("/proc/sys/kernel/random/uuid").read().strip()
        xml = os.path.join(t, "secret.xml")
        with open(xml, "w") as f:
            f.write("<secret ephemeral='no' private='yes'><uuid>%s</uuid><usage type='ceph'>"
                    "<name>client.admin secret</name></usage></secret>" % uuid)
        for args in (["secret-define", xml], ["secret-set-value", uuid, key]):
            r = subprocess.run(VIRSH + args, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
        xml = os.path.join(t, "rbd-pool.xml")
        with open(xml, "w") as f:
            f.write("<pool type='rbd'><name>vlibrbd</name><source><name>%s</name>"
                    "<host name='127.0.0.1' port='%s'/><auth type='ceph' username='admin'>"
                    "<secret usage='client.admin secret'/></auth></source></pool>"
                    % (CEPH_POOL, env.ceph["MONPORT"]))
        for args in (["pool-define", xml], ["pool-start", "vlibrbd"]):
            r = subprocess.run(VIRSH + args, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
        # vdiskd looks at libvirt's pools again on its events, or every 10 s.
        deadline = time.monotonic() + 30
        p = None
        while time.monotonic() < deadline:
            r = ctl("pools", "--json")
            found = [x for x in json.loads(r.stdout) if x["name"] == "vlibrbd"]
            if found and found[0]["error"] != "connecting to the Ceph cluster":
                p = found[0]
                break
            time.sleep(0.3)
        assert p is not None, r.stdout
        assert p["type"] == "rbd" and p["directory"] == "rbd:" + CEPH_POOL, p
        assert "no key for client.admin" in p["error"], p
        assert "/etc/ceph/ceph.client.admin.keyring" in p["error"], p
        assert "libvirt keeps the key in a secret" in p["error"], p

    @case("with a keyring where Ceph's clients look, the mirrored pool lists and imports")
    def _():
        os.makedirs("/etc/ceph", exist_ok=True)  # /etc is the test's own copy
        with open("/etc/ceph/ceph.client.admin.keyring", "w") as f:
            f.write("[client.admin]\n\tkey = %s\n" % key)
        try:
            r = ctl("refresh", "vlibrbd")
            assert r.returncode == 0, r.stderr
            p = pool("vlibrbd")
            assert p["error"] == "" and "fromlibvirt" in p["volumes"], p
            assert p["capacity"] > 0, p
            # The worker reaches the monitors libvirt's XML names.
            r = ctl("import", src, "vlibrbd/vfromvdisk")
            assert r.returncode == 0, r.stderr
            r = qemu_img("compare", "-f", "vdi", "-F", "raw", src,
                         "rbd:%s/vfromvdisk:conf=%s" % (CEPH_POOL, env.ceph["CONF"]))
            assert r.returncode == 0, r.stdout + r.stderr
            r = ctl("delete", "vlibrbd/vfromvdisk")
            assert r.returncode == 0, r.stderr
        finally:
            os.unlink("/etc/ceph/ceph.client.admin.keyring")
    rbd("rm", "fromlibvirt")
    env.stop_libvirt()
    env.libvirtd = None


def run_client(*args):
    cmd = ["/usr/bin/python3", os.path.abspath(__file__), "--client"] + [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return r.returncode, json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return r.returncode, {"message": r.stdout + r.stderr}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2:])
    sys.exit(main(tests, CephEnv()))
