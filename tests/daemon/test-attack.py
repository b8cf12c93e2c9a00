#!/usr/bin/python3
"""vdiskd under attack: what a libvirt-group user, a plain user or a VM guest
that owns only the bytes of its disk tried against the root daemon, each
case a hole that once let root read or write a file it should not have.
Real dbus-daemon, polkitd and vdiskd (vdiskd_env.py), in a mount namespace
of their own; needs root (exit 77 otherwise)."""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

from vdiskd_env import (ALICE, BOB, BUS, IFACE, ROOT, case, client, expect_denied, main,
                        qemu_img, run)

SECRET = b"ROOT-ONLY-SECRET" * 4096  # 64 KiB that must never leave root's files


def export_nowait(ctx, a):
    """POOL VOLUME TARGET FORMAT OPTIONS...: start an export that outlives this
    client (detach), print its job at once."""
    from gi.repository import GLib
    d = os.open(a[2], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    opts = ctx.options(a[4:])
    opts["detach"] = GLib.Variant("b", True)
    j = ctx.call(ctx.vol(a[0], a[1]), "Volume", "Export", "(hsa{sv})", [0, a[3], opts], [d])[0]
    print(json.dumps({"job": j}))
    sys.stdout.flush()
    sys.exit(0)


EXTRA = {"export-nowait": export_nowait}


def write_at(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def contains_secret(path):
    with open(path, "rb") as f:
        return SECRET[:4096] in f.read()


def qcow2_header_naming(t, option):
    """The bytes of a small qcow2 whose header names another file (-o option)."""
    hdr = os.path.join(t, "hdr.qcow2")
    r = qemu_img("create", "-q", "-f", "qcow2", "-o", option, hdr, "1M")
    assert r.returncode == 0, r.stderr
    data = open(hdr, "rb").read()
    os.unlink(hdr)
    return data


def tests(env):
    t = env.t
    pool = os.path.join(t, "pool")
    os.makedirs(pool)
    secret = os.path.join(t, "secret.raw")  # a root-only host file
    # Headers that name it first: qemu-img create empties a data file.
    headers = {"guest": qcow2_header_naming(t, "data_file=%s,data_file_raw=on" % secret)}
    r = qemu_img("create", "-q", "-f", "qcow2", "-o", "data_file=%s,data_file_raw=on" % secret,
                 os.path.join(pool, "df.qcow2"), "1M")
    assert r.returncode == 0, r.stderr
    with open(secret, "wb") as f:
        f.write(SECRET * 16)
    os.chmod(secret, 0o600)
    out_dir = os.path.join(t, "alice")
    os.makedirs(out_dir)
    shutil.chown(out_dir, ALICE)
    rc, out = run("root", "add-pool", "p", pool)
    assert rc == 0, out

    def props(name, p="p"):
        rc, out = run("root", "volume-props", p, name)
        assert rc == 0, out
        return out

    def export(name, fmt="raw", user=ALICE, p="p"):
        dst = os.path.join(out_dir, "%s.%s.out" % (name, fmt))
        return run(user, "export", p, name, dst, fmt), dst

    @case("the Manager and vdiskctl status say how image parsing is confined")
    def _():
        rc, out = run(BOB, "worker-confinement")
        assert rc == 0 and out.get("uid", 0) != 0 and out.get("user") not in (None, "root"), out
        assert out["seccomp"] is True and out["no-new-privs"] is True, out
        vdiskctl = os.path.join(env.build, "tools", "vdiskctl")
        r = subprocess.run(["runuser", "-u", BOB, "--", "env",
                            "DBUS_SYSTEM_BUS_ADDRESS=" + os.environ["DBUS_SYSTEM_BUS_ADDRESS"],
                            vdiskctl, "status"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "as %s (uid %d)" % (out["user"], out["uid"]) in r.stdout, r.stdout
        assert "seccomp filter" in r.stdout and "no new privileges" in r.stdout, r.stdout

    @case("a guest writes a qcow2 header naming a host file into its raw disk: "
          "vdiskd keeps it raw, never reads or writes that file")
    def _():
        rc, out = run("root", "create", "p", "guest.raw", "raw", 8 << 20)
        assert rc == 0, out
        vol = os.path.join(pool, "guest.raw")
        write_at(vol, 0, headers["guest"])
        assert run("root", "refresh", "p")[0] == 0
        p = props("guest.raw")
        assert p["Format"] == "raw", p
        assert "qcow2" in p["Error"] and "raw" in p["Error"], p
        (rc, out), dst = export("guest.raw")
        assert rc == 0, out
        assert open(dst, "rb").read() == open(vol, "rb").read(), "not exported as raw bytes"
        assert not contains_secret(dst)
        rc, out = run(ALICE, "clone", "p", "guest.raw", "guest-copy.raw", "raw")
        assert rc == 0, out
        assert open(os.path.join(pool, "guest-copy.raw"), "rb").read() == open(vol, "rb").read()
        # a CopyFrom into it writes the volume's bytes, not the named file
        rc, out = run("root", "create", "p", "zeros.raw", "raw", 8 << 20)
        assert rc == 0, out
        before = open(secret, "rb").read()
        rc, out = run(ALICE, "copy-from", "p", "guest.raw", "p", "zeros.raw")
        assert rc == 0, out
        assert open(secret, "rb").read() == before, "the host file was written"
        assert open(vol, "rb").read(1 << 20) == b"\0" * (1 << 20)

    @case("a file imported as raw whose content is a qcow2 header stays raw")
    def _():
        src = os.path.join(out_dir, "evil.img")
        with open(src, "wb") as f:
            f.write(headers["guest"])
            f.truncate(8 << 20)
        os.chmod(src, 0o644)
        rc, out = run(ALICE, "import", "p", src, "imported.raw", "raw", "source-format=raw")
        assert rc == 0, out
        assert props("imported.raw")["Format"] == "raw"
        before = open(secret, "rb").read()
        rc, out = run(ALICE, "copy-from", "p", "imported.raw", "p", "zeros.raw")
        assert rc == 0, out
        assert open(secret, "rb").read() == before, "the host file was overwritten"
        (rc, out), dst = export("imported.raw")
        assert rc == 0 and not contains_secret(dst), out

    @case("names inside a volume vdiskd did not make lie beneath the pool: data file, extent, "
          "backing file outside are refused")
    def _():
        outside = os.path.join(t, "outside")
        os.makedirs(outside)
        shutil.copy(secret, os.path.join(outside, "disk.raw"))
        cases = {
            "bf.qcow2": ["-f", "qcow2", "-b", os.path.join(outside, "disk.raw"), "-F", "raw"],
            "rel.qcow2": ["-f", "qcow2", "-b", "../outside/disk.raw", "-F", "raw"],
        }
        for name, args in cases.items():
            r = qemu_img("create", "-q", *args, os.path.join(pool, name), "1M")
            assert r.returncode == 0, r.stderr
        # a flat vmdk whose extent climbs out of the pool
        with open(os.path.join(pool, "ext.vmdk"), "w") as f:
            f.write('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                    'createType="monolithicFlat"\n\nRW 2048 FLAT "../outside/disk.raw" 0\n\n'
                    'ddb.virtualHWVersion = "4"\nddb.geometry.cylinders = "2"\n'
                    'ddb.geometry.heads = "16"\nddb.geometry.sectors = "63"\n'
                    'ddb.adapterType = "ide"\n')
        assert run("root", "refresh", "p")[0] == 0
        for name in ["df.qcow2", "ext.vmdk"] + list(cases):
            (rc, out), dst = export(name)
            assert rc != 0, (name, out)
            assert "outside" in out.get("message", ""), (name, out)
            assert not os.path.exists(dst) or not contains_secret(dst), name
            rc, out = run(ALICE, "copy-from", "p", name, "p", "zeros.raw")
            assert rc != 0, (name, out)
        assert open(os.path.join(outside, "disk.raw"), "rb").read() == SECRET * 16, "written"
        assert open(secret, "rb").read() == SECRET * 16, "the root-only file was written"

    @case("a backing file reached through a symbolic link is refused, even inside the pool")
    def _():
        r = qemu_img("create", "-q", "-f", "raw", os.path.join(pool, "real-base.raw"), "1M")
        assert r.returncode == 0
        os.symlink("real-base.raw", os.path.join(pool, "link-base"))
        r = qemu_img("create", "-q", "-f", "qcow2", "-b", "link-base", "-F", "raw",
                     os.path.join(pool, "via-link.qcow2"))
        assert r.returncode == 0, r.stderr
        assert run("root", "refresh", "p")[0] == 0
        (rc, out), _ = export("via-link.qcow2")
        assert rc != 0 and "link" in out.get("message", ""), out

    @case("a symbolic link flipped between a pool file and a root-only file never leaks it")
    def _():
        apool = os.path.join(t, "alice-pool")
        os.makedirs(apool)
        shutil.chown(apool, ALICE)
        rc, out = run("root", "add-pool", "ap", apool)
        assert rc == 0, out
        base = os.path.join(apool, "base.raw")
        r = qemu_img("create", "-q", "-f", "raw", base, "1M")
        assert r.returncode == 0
        top = os.path.join(apool, "top.qcow2")
        link = os.path.join(apool, "flip")
        os.symlink("base.raw", link)
        r = qemu_img("create", "-q", "-f", "qcow2", "-b", "flip", "-F", "raw", top)
        assert r.returncode == 0, r.stderr
        for f in (base, top):
            shutil.chown(f, ALICE)
        assert run("root", "refresh", "ap")[0] == 0
        flipper = subprocess.Popen(
            ["/usr/bin/python3", "-c",
             "import os,sys\nwhile True:\n"
             " for target in ('base.raw', sys.argv[2]):\n"
             "  os.symlink(target, sys.argv[1] + '.new'); os.rename(sys.argv[1] + '.new', sys.argv[1])",
             link, secret], cwd=apool, user=ALICE, stdout=subprocess.DEVNULL)
        try:
            leaks = 0
            for i in range(25):
                (rc, out), dst = export("top.qcow2", p="ap")
                if rc == 0 and contains_secret(dst):
                    leaks += 1
            assert leaks == 0, "%d exports carried the root-only file" % leaks
        finally:
            flipper.kill()
            flipper.wait()

    @case("per-pool rules hold for every volume a method reads: CopyFrom's source, a "
          "backing file in another pool")
    def _():
        sdir = os.path.join(t, "secret-pool")
        os.makedirs(sdir)
        assert run("root", "add-pool", "secret", sdir)[0] == 0
        rc, out = run("root", "create", "secret", "s.raw", "raw", 8 << 20)
        assert rc == 0, out
        with open(os.path.join(sdir, "s.raw"), "r+b") as f:
            f.write(SECRET)
        # admins' rule: alice may not read anything in pool "secret"
        with open("/etc/polkit-1/rules.d/40-vdisk-attack-test.rules", "w") as f:
            f.write('polkit.addRule(function(action, subject) {\n'
                    '  if (action.id == "org.vdisk.VDisk1.read-volume" &&\n'
                    '      action.lookup("pool") == "secret" && subject.user == "%s")\n'
                    '    return polkit.Result.NO;\n});\n' % ALICE)
        deadline = time.monotonic() + 20
        while run(ALICE, "export", "secret", "s.raw", os.path.join(out_dir, "probe"), "raw")[1].get(
                "error") != IFACE + "Error.NotAuthorized":
            assert time.monotonic() < deadline, "polkitd never loaded the test rule"
            time.sleep(0.5)
        rc, out = run("root", "create", "p", "target.raw", "raw", 8 << 20)
        assert rc == 0, out
        expect_denied(*run(ALICE, "copy-from", "p", "target.raw", "secret", "s.raw"))
        assert b"ROOT-ONLY" not in open(os.path.join(pool, "target.raw"), "rb").read()
        rc, out = run("root", "copy-from", "p", "target.raw", "secret", "s.raw")
        assert rc == 0, out
        # a backing file in another pool is not followed, whoever asks
        r = qemu_img("create", "-q", "-f", "qcow2", "-b", "../secret-pool/s.raw", "-F", "raw",
                     os.path.join(pool, "cross.qcow2"))
        assert r.returncode == 0, r.stderr
        assert run("root", "refresh", "p")[0] == 0
        (rc, out), dst = export("cross.qcow2")
        assert rc != 0 and "outside" in out.get("message", ""), out
        (rc, out), dst = export("cross.qcow2", user="root")
        assert rc != 0 and "outside" in out.get("message", ""), out

    @case("new volumes are 0600 whatever vdiskd's umask")
    def _():
        for name in ("guest.raw", "guest-copy.raw", "imported.raw", "zeros.raw"):
            assert mode(os.path.join(pool, name)) == 0o600, (name, oct(mode(os.path.join(pool, name))))
        rc, out = run(ALICE, "overlay", "p", "zeros.raw", "over.qcow2")
        assert rc == 0, out
        assert mode(os.path.join(pool, "over.qcow2")) == 0o600

    @case("a FIFO named as a data file neither hangs a refresh nor vdiskd's start")
    def _():
        fifo_pool = os.path.join(t, "fifo-pool")
        os.makedirs(fifo_pool)
        # qemu-img makes a relative data file in its working directory
        r = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                            "data_file=pipe,data_file_raw=on", "fifo.qcow2", "1M"],
                           cwd=fifo_pool, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        os.unlink(os.path.join(fifo_pool, "pipe"))
        os.mkfifo(os.path.join(fifo_pool, "pipe"))
        os.makedirs(os.path.join(t, "conf"), exist_ok=True)
        with open(os.path.join(t, "conf", "fifo.conf"), "w") as f:
            f.write("[Pool]\nName=fifo\nDirectory=%s\n" % fifo_pool)
        env.daemon.send_signal(signal.SIGTERM)
        env.daemon.wait(timeout=30)
        env.start_vdiskd(timeout=15)
        p = props("fifo.qcow2", "fifo")
        assert "regular file" in p["Error"] or "FIFO" in p["Error"], p
        t0 = time.monotonic()
        assert run("root", "refresh", "fifo")[0] == 0
        assert time.monotonic() - t0 < 10

    @case("vdiskd's restart removes the hidden partial files a killed import left")
    def _():
        gone = subprocess.Popen(["true"])
        gone.wait()  # a pid that is no process now
        leftover = os.path.join(pool, ".half.qcow2.partial-%d-0" % gone.pid)
        shim_leftover = os.path.join(pool, ".copy.raw.partial-%d" % gone.pid)
        for f in (leftover, shim_leftover):
            with open(f, "wb") as out:
                out.write(b"half")
        mine = os.path.join(pool, ".keep.partial-x")  # not a partial file's name: kept
        open(mine, "w").close()
        env.daemon.send_signal(signal.SIGKILL)
        env.daemon.wait(timeout=30)
        env.start_vdiskd(timeout=15)
        assert run("root", "add-pool", "p", pool)[0] == 0
        assert not os.path.exists(leftover) and not os.path.exists(shim_leftover)
        assert os.path.exists(mine)
        rc, out = run("root", "volume-props", "p", "half.qcow2")
        assert rc != 0, out

    @case("CreateVolume refuses vmdk layouts that make files by name; an existing extent "
          "keeps its data")
    def _():
        flat = os.path.join(pool, "v-flat.vmdk")
        with open(flat, "wb") as f:
            f.write(SECRET)
        for sub in ("monolithicFlat", "twoGbMaxExtentFlat", "twoGbMaxExtentSparse"):
            rc, out = run(ALICE, "create", "p", "v.vmdk", "vmdk", 1 << 20, "subformat=" + sub)
            assert rc == 3 and out["error"] == IFACE + "Error.InvalidArgument", (sub, out)
        assert open(flat, "rb").read() == SECRET
        assert not os.path.exists(os.path.join(pool, "v.vmdk"))
        src = os.path.join(out_dir, "small.raw")
        with open(src, "wb") as f:
            f.truncate(1 << 20)
        os.chmod(src, 0o644)
        rc, out = run(ALICE, "import", "p", src, "v.vmdk", "vmdk", "subformat=monolithicFlat")
        assert rc == 3 and out["error"] == IFACE + "Error.InvalidArgument", out
        assert open(flat, "rb").read() == SECRET

    @case("a base cannot be resized while an export reads it through its overlay")
    def _():
        base = os.path.join(pool, "big-base.raw")
        with open(base, "wb") as f:
            for i in range(256):
                f.write(os.urandom(1 << 20))
        r = qemu_img("create", "-q", "-f", "qcow2", "-b", "big-base.raw", "-F", "raw",
                     os.path.join(pool, "big-top.qcow2"))
        assert r.returncode == 0
        assert run("root", "refresh", "p")[0] == 0
        dst = os.path.join(out_dir, "big.vmdk")
        rc, out = run(ALICE, "export-nowait", "p", "big-top.qcow2", dst, "vmdk",
                      "subformat=streamOptimized")
        assert rc == 0, out
        rc, out = run(ALICE, "resize", "p", "big-base.raw", 512 << 20)
        assert rc == 3 and out["error"] == IFACE + "Error.Busy", out
        assert os.path.getsize(base) == 256 << 20


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2:], EXTRA)
    sys.exit(main(tests))
