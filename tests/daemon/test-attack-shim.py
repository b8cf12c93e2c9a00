#!/usr/bin/python3
"""The libvirt shim (build/plugin/vdisk-qemu-img) and ResolvePath under
attack: a file outside every pool never makes its folder a pool (a domain's
disk in a private 0700 folder would otherwise be exported by any user the
pool's rules allow); the shim hands such a file to the real qemu-img, or
with the fallback off fails naming it; a shim killed mid-convert takes its
job with it; with vdiskd absent the fallback runs. Real dbus-daemon,
polkitd and vdiskd (vdiskd_env.py), no libvirtd; needs root (exit 77
otherwise)."""
import hashlib
import json
import os
import subprocess
import sys
import time

from vdiskd_env import ALICE, BOB, IFACE, ROOT, Env, case, client, main, qemu_img, run


# ---------------------------------------------------------------- client side
def resolve(ctx, a):
    """PATH [add-directory]: ResolvePath, with add-directory true when asked."""
    from gi.repository import GLib
    opts = {"add-directory": GLib.Variant("b", True)} if a[1:] == ["add-directory"] else {}
    print(json.dumps(ctx.call(ROOT + "/Manager", "Manager", "ResolvePath", "(sa{sv})",
                              [a[0], opts])))


def job_count(ctx, a):
    """How many jobs are exported."""
    print(json.dumps(sum(1 for ifs in ctx.objects().values() if IFACE + "Job" in ifs)))


def visible(ctx, a):
    """The folders of the pools and the files of the volumes the caller sees."""
    dirs, paths = [], []
    for ifs in ctx.objects().values():
        if IFACE + "Pool" in ifs:
            dirs.append(ifs[IFACE + "Pool"]["Directory"])
        if IFACE + "Volume" in ifs:
            paths.append(ifs[IFACE + "Volume"]["Path"])
    print(json.dumps({"pools": sorted(dirs), "volumes": sorted(paths)}))


EXTRA = {"resolve": resolve, "job-count": job_count, "visible": visible}


# ---------------------------------------------------------------- test side
def tests(env):
    shim = os.path.join(env.build, "plugin/vdisk-qemu-img")
    if not os.access(shim, os.X_OK):
        print("# the shim is not built: its cases skipped")
        return
    pool = os.path.join(env.t, "pool")
    os.makedirs(pool)
    rc, out = run("root", "add-pool", "kvm", pool)
    assert rc == 0, out
    private = os.path.join(env.t, "private")
    os.mkdir(private, 0o700)
    disk = os.path.join(private, "disk.qcow2")
    assert qemu_img("create", "-q", "-f", "qcow2", disk, "16M").returncode == 0
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1M", disk], check=True,
                   capture_output=True)

    def pools():
        rc, out = run("root", "get-pools")
        assert rc == 0, out
        return sorted(out)

    def run_shim(*args, fallback):
        e = dict(os.environ, VDISK_SHIM_FALLBACK="1" if fallback else "0")
        return subprocess.run([shim] + list(args), capture_output=True, text=True, env=e,
                              timeout=120)

    before = pools()

    @case("ResolvePath: add-directory is refused, a file outside every pool is NotFound")
    def _():
        rc, out = run("root", "resolve", disk, "add-directory")
        assert rc == 3 and out["error"] == IFACE + "Error.InvalidArgument", out
        assert "AddPool" in out["message"], out
        rc, out = run("root", "resolve", disk)
        assert rc == 3 and out["error"] == IFACE + "Error.NotFound", out
        assert "no storage pool" in out["message"], out
        assert pools() == before, (before, pools())
        rc, out = run("root", "resolve", os.path.join(pool, "new.qcow2"))
        assert rc == 0 and out[0] == ROOT + "/pools/kvm" and out[1] == "new.qcow2", out

    @case("the shim on a file in a private folder: the real qemu-img or a clear error, no pool")
    def _():
        ov = os.path.join(private, "ov.qcow2")
        r = run_shim("create", "-q", "-f", "qcow2", "-b", disk, "-F", "qcow2", ov, fallback=True)
        assert r.returncode == 0, r.stderr
        info = json.loads(qemu_img("info", "--output=json", ov).stdout)
        assert info["backing-filename"] == disk, info
        ov2 = os.path.join(private, "ov2.qcow2")
        r = run_shim("create", "-f", "qcow2", "-b", disk, "-F", "qcow2", ov2, fallback=False)
        assert r.returncode != 0, r.stdout
        assert "%s is in no storage pool" % ov2 in r.stderr, r.stderr
        assert "fallback to /usr/bin/qemu-img is off" in r.stderr, r.stderr
        assert not os.path.exists(ov2)
        # out of the private folder into a pool
        leak = os.path.join(pool, "leak.raw")
        r = run_shim("convert", "-f", "qcow2", "-O", "raw", disk, leak, fallback=False)
        assert r.returncode != 0 and "%s is in no storage pool" % disk in r.stderr, r.stderr
        assert not os.path.exists(leak)
        assert pools() == before, (before, pools())
        # no pool under the name one was once given: nothing of it to export
        h = hashlib.sha256(os.path.realpath(private).encode()).hexdigest()[:16]
        out_file = os.path.join(env.t, "alice-out.qcow2")
        rc, out = run(ALICE, "export", "dir-" + h, "disk.qcow2", out_file, "qcow2")
        assert rc != 0, out
        assert not os.path.exists(out_file) or os.path.getsize(out_file) == 0

    @case("after the shim ran on them, no caller sees the private folder or its files")
    def _():
        # The shim never makes a folder a pool (ResolvePath refuses
        # add-directory): a pool would show every file in it to each user
        # the pool's rules allow, and libvirt itself keeps a domain's disk
        # in a folder no pool holds out of every listing. So neither bob,
        # outside the privileged group, nor root (manage-pools) sees it.
        real = os.path.realpath(private)
        for who in (BOB, ALICE, "root"):
            rc, out = run(who, "visible")
            assert rc == 0, (who, out)
            assert not [d for d in out["pools"] if os.path.realpath(d) == real], (who, out)
            assert not [v for v in out["volumes"]
                        if os.path.realpath(v).startswith(real + "/")], (who, out)
            assert [d for d in out["pools"]
                    if os.path.realpath(d) == os.path.realpath(pool)], (who, out)

    @case("the shim in a pool works through vdiskd")
    def _():
        target = os.path.join(pool, "made.qcow2")
        r = run_shim("create", "-q", "-f", "qcow2", target, "32M", fallback=False)
        assert r.returncode == 0, r.stderr
        rc, out = run("root", "volume-props", "kvm", "made.qcow2")
        assert rc == 0 and out["Format"] == "qcow2" and out["VirtualSize"] == 32 << 20, out

    @case("a shim killed mid-convert takes its job with it: no half-written volume")
    def _():
        src = os.path.join(pool, "big.raw")
        assert qemu_img("create", "-q", "-f", "raw", src, "2G").returncode == 0
        subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x61 0 1536M", src], check=True,
                       capture_output=True)
        p = subprocess.Popen([shim, "convert", "-f", "raw", "-O", "qcow2", src,
                              os.path.join(pool, "big.qcow2")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def hidden():
            return [n for n in os.listdir(pool) if n.startswith(".big.qcow2")]
        for _ in range(400):
            if hidden():
                break
            time.sleep(0.05)
        assert hidden(), "the copy did not start"
        p.kill()
        p.wait()
        for _ in range(300):
            rc, n = run("root", "job-count")
            if rc == 0 and n == 0:
                break
            time.sleep(0.1)
        assert n == 0, "the job still runs"
        assert not os.path.exists(os.path.join(pool, "big.qcow2")), "the job made big.qcow2"
        assert not hidden(), hidden()
        os.unlink(src)

    @case("vdiskd absent: the shim runs the real qemu-img with the fallback on")
    def _():
        env.daemon.kill()
        env.daemon.wait()
        try:
            on = os.path.join(env.t, "absent-on.qcow2")
            r = run_shim("create", "-q", "-f", "qcow2", on, "16M", fallback=True)
            assert r.returncode == 0, r.stderr
            info = json.loads(qemu_img("info", "--output=json", on).stdout)
            assert info["format"] == "qcow2" and info["virtual-size"] == 16 << 20, info
            off = os.path.join(env.t, "absent-off.qcow2")
            r = run_shim("create", "-q", "-f", "qcow2", off, "16M", fallback=False)
            assert r.returncode != 0 and "vdiskd is not running" in r.stderr, r.stderr
            assert not os.path.exists(off)
        finally:
            env.start_vdiskd()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2:], EXTRA)
    sys.exit(main(tests))
