#!/usr/bin/python3
"""vdiskd end to end: a private system bus, real polkitd with the project's
.policy and .rules, vdiskd from the build tree, and test users (one in the
privileged group, one not). Each method as root, privileged and unprivileged
user; jobs (progress, cancel, Busy, a client dying); hostile names and fds; a
corrupted image in a pool; many concurrent clients. Needs root (exit 77
otherwise). Everything started is stopped by pid."""
import json
import os
import socket
import subprocess
import sys
import time

from vdiskd_env import (ALICE, BOB, IFACE, ROOT, SCRIPT, case, client, expect_denied, main,
                        qemu_img, run)


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
        # the key is tried by the job's worker: the job fails
        assert rc == 4 and "key slot" in out["message"], out
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
        # Text that deflate must really work on (random data is stored, and
        # a raw source into qcow2 is copied by the kernel): the job is still
        # running when its client dies. Text is no disk unless the caller
        # says raw.
        text = os.path.join(home, "text.raw")
        with open(text, "wb") as f:
            for chunk in range(256):
                f.write(b"".join(b"line %d.%d of a source that compresses\n" % (chunk, i)
                                 for i in range(27000))[:1 << 20])
        os.chmod(text, 0o644)
        orphan = os.path.join(pool, "orphan.vmdk")

        def partial():  # the job's file until it is published as orphan.vmdk
            return [n for n in os.listdir(pool) if n.startswith(".orphan.vmdk.partial-")]
        p = subprocess.Popen(["/usr/bin/python3", SCRIPT, "--client", "import",
                              "p", text, "orphan.vmdk", "vmdk", "subformat=streamOptimized",
                              "source-format=raw"],
                             stdout=subprocess.DEVNULL)
        for _ in range(3000):  # the job has begun once its file exists
            if partial() or p.poll() is not None:
                break
            time.sleep(0.01)
        assert p.poll() is None, "the import ended before its client could die"
        p.kill()
        p.wait()
        time.sleep(1)
        assert env.daemon.poll() is None
        assert run(BOB, "get-pools")[0] == 0
        # nobody is left to take the result: the job was cancelled with it
        for _ in range(100):
            if not os.path.exists(orphan) and not partial():
                break
            time.sleep(0.2)
        assert not os.path.exists(orphan) and not partial(), partial()

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
        procs = [subprocess.Popen(["/usr/bin/python3", SCRIPT, "--client",
                                   "inspect", vdi], stdout=subprocess.PIPE)
                 for _ in range(24)]
        for p in procs:
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 0 and json.loads(out)["format"] == "vdi"
        assert env.daemon.poll() is None


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2:])
    sys.exit(main(tests))
