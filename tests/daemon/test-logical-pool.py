"""A logical pool: vdiskd's volumes are the LVs of an LVM volume group,
configured in pools.d with Type=logical and Source=VG. The group lives on a
loop device over a sparse file made here, with a name of its own (the pid
in it), and is removed by name with its loop device whatever happens.

vdiskctl pools lists the pool as logical with the group's size and free
space (as vgs tells them). Where the kernel has device-mapper (LVs can be
activated): vdiskctl import of a vdi makes an LV that qemu-img compare
finds equal to the source, resize grows it with lvresize, a shrink needs
--shrink, a qcow2 volume is refused, and delete removes the LV. Without
device-mapper those steps are skipped, saying so; a new volume is then
refused with what lvcreate said, and no LV is left.

Needs root, loop devices and lvm2 (exit 77 otherwise)."""
import json
import os
import shutil
import subprocess
import sys

from vdiskd_env import Env, case, client, main, qemu_img

VG = "vdisktest%d" % os.getpid()
POOL = "lv"
LVM_ENV = dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1")


def lvm(*args, check=True):
    r = subprocess.run(list(args), capture_output=True, text=True, env=LVM_ENV,
                       stdin=subprocess.DEVNULL, timeout=120)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(args), r.stderr.strip()))
    return r


def lvs():
    r = lvm("lvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "lv_name,lv_size", VG)
    return {f[0]: int(f[1]) for f in (line.split() for line in r.stdout.splitlines()) if f}


def device_mapper():
    return lvm("dmsetup", "version", check=False).returncode == 0


class LogicalEnv(Env):
    """Env with a volume group on a loop device, set up before vdiskd
    starts (it reads pools.d then) and torn down after it stops."""

    def __init__(self):
        super().__init__()
        self.loop = None
        self.vg = False

    def start(self):
        backing = os.path.join(self.t, "pv.img")
        with open(backing, "wb") as f:
            f.truncate(256 << 20)
        self.loop = subprocess.run(["losetup", "-f", "--show", backing], capture_output=True,
                                   text=True, check=True).stdout.strip()
        lvm("pvcreate", "-q", self.loop)
        lvm("vgcreate", "-q", VG, self.loop)
        self.vg = True
        conf = os.path.join(self.t, "conf")
        os.makedirs(conf, exist_ok=True)
        with open(os.path.join(conf, "lvm.conf"), "w") as f:
            f.write("[Pool %s]\nType=logical\nSource=%s\n" % (POOL, VG))
        super().start()

    def stop(self):
        try:
            super().stop()
        finally:
            if self.vg:
                lvm("vgremove", "-q", "-f", VG, check=False)
            if self.loop:
                lvm("pvremove", "-q", "-f", self.loop, check=False)
                subprocess.run(["losetup", "-d", self.loop], capture_output=True)


def tests(env):
    vdiskctl = os.path.join(env.build, "tools", "vdiskctl")
    t = env.t

    def ctl(*args):
        return subprocess.run([vdiskctl, "--no-ask-password"] + list(args), capture_output=True,
                              text=True, timeout=300)

    @case("vdiskctl pools lists the logical pool with its type and the group's size and free space")
    def _():
        r = ctl("pools", "--json")
        assert r.returncode == 0, r.stderr
        pool = [p for p in json.loads(r.stdout) if p["name"] == POOL][0]
        size, free = (int(x) for x in lvm("vgs", "--units", "b", "--noheadings", "--nosuffix",
                                          "-o", "vg_size,vg_free", VG).stdout.split())
        assert pool["type"] == "logical", pool
        assert pool["directory"] == "/dev/" + VG, pool
        assert pool["capacity"] == size and pool["available"] == free, (pool, size, free)
        r = ctl("pools")
        row = [line.split() for line in r.stdout.splitlines() if line.split()[:1] == [POOL]]
        assert row and row[0][1] == "/dev/" + VG and row[0][2] == "logical", r.stdout

    src = os.path.join(t, "disk.vdi")
    assert qemu_img("create", "-f", "vdi", src, "20M").returncode == 0
    r = subprocess.run(["qemu-io", "-c", "write -P 0x5a 1M 3M", "-c", "write -P 0x11 15M 1M",
                        src], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    os.chmod(t, 0o755)

    if not device_mapper():
        print("# SKIP the kernel has no device-mapper here (dmsetup version fails): LVs cannot "
              "be activated, so import, resize and delete of an LV are not tested")

        @case("without device-mapper a new volume is refused with lvcreate's words, no LV left")
        def _():
            r = ctl("import", src, POOL + "/vol")
            assert r.returncode != 0, r.stdout
            assert "lvcreate" in r.stderr, r.stderr
            print("# " + r.stderr.strip().replace("\n", " | "))
            assert lvs() == {}, lvs()
        return

    dev = "/dev/%s/vol" % VG

    @case("vdiskctl import of a vdi into the logical pool: an LV qemu-img compare finds equal")
    def _():
        r = ctl("import", src, POOL + "/vol")
        assert r.returncode == 0, r.stderr
        assert "vol" in lvs(), lvs()
        assert lvs()["vol"] >= 20 << 20, lvs()
        r = qemu_img("compare", "-f", "vdi", "-F", "raw", src, dev)
        assert r.returncode == 0, r.stdout + r.stderr
        r = ctl("info", POOL + "/vol", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["format"] == "raw", r.stdout + r.stderr

    @case("a qcow2 volume in a logical pool is refused: its volumes are raw")
    def _():
        r = ctl("import", "--format", "qcow2", src, POOL + "/q")
        assert r.returncode != 0 and "raw" in r.stderr, r.stderr
        assert "q" not in lvs(), lvs()

    @case("resize grows the LV with lvresize; a shrink needs --shrink")
    def _():
        before = lvs()["vol"]
        r = ctl("resize", POOL + "/vol", "+8M")
        assert r.returncode == 0, r.stderr
        assert lvs()["vol"] >= before + (8 << 20), (before, lvs())
        r = ctl("resize", POOL + "/vol", "24M")
        assert r.returncode != 0, r.stdout
        assert lvs()["vol"] >= before + (8 << 20), lvs()
        r = qemu_img("compare", "-f", "vdi", "-F", "raw", src, dev)
        assert r.returncode == 0, r.stdout + r.stderr

    @case("delete removes the LV")
    def _():
        r = ctl("delete", POOL + "/vol")
        assert r.returncode == 0, r.stderr
        assert "vol" not in lvs(), lvs()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2:])
    if os.geteuid() == 0 and os.environ.get("VDISK_PRIVATE_NS") == "ready":
        missing = [p for p in ("losetup", "pvcreate", "vgcreate", "lvcreate", "dmsetup")
                   if shutil.which(p) is None]
        if missing or not os.path.exists("/dev/loop-control"):
            print("1..0 # SKIP no loop devices or no lvm2 (%s): the logical pool is not tested"
                  % (", ".join(missing) or "/dev/loop-control"))
            sys.exit(77)
    sys.exit(main(tests, LogicalEnv()))
