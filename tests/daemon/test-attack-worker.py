"""vdiskd hands the image work of ConvertFile, InspectFile and ImportVolume
to vdisk-worker: a worker that misbehaves (with -Dtest_hooks=true), crashes or
is killed becomes a failed job, "the image could not be processed safely",
its half-written target is emptied, and vdiskd answers the next call. Needs
root (exit 77 otherwise)."""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

from vdiskd_env import (ALICE, BOB, IFACE, ROOT, Env, case, client, confined_status, main,
                        new_worker, qemu_img, run, workers_of)

TEST_HOOKS = os.environ.get("VDISK_TEST_HOOKS") == "true"
UNSAFE = "the image could not be processed safely"


def convert_cancel(ctx, a):
    """SRC DST: ConvertFile of a hanging worker, cancelled once the test says
    (it removes the file named by $CANCEL_WHEN_GONE)."""
    s = os.open(a[0], os.O_RDONLY)
    d = os.open(a[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    j = ctx.call(ROOT + "/Manager", "Manager", "ConvertFile", "(hhsa{sv})",
                 [0, 1, "raw", ctx.options(["misbehave=hang"])], [s, d])[0]
    flag = os.environ["CANCEL_WHEN_GONE"]
    while os.path.exists(flag):
        time.sleep(0.05)
    ctx.call(j, "Job", "Cancel", "(a{sv})", [{}])
    ctx.wait(j)


def inspect_opts(ctx, a):
    fd = os.open(a[0], os.O_RDONLY)
    print(json.dumps(ctx.call(ROOT + "/Manager", "Manager", "InspectFile", "(ha{sv})",
                              [0, ctx.options(a[1:])], [fd])[0], default=str))


EXTRA = {"convert-cancel": convert_cancel,
         "inspect-opts": inspect_opts}


# What the loop device the block-device cases attach holds: no byte of it may
# reach a volume or an exported file.
DEVICE_CONTENT = b"vdisk-test: a block device's own"


def attach_loop(backing):
    """A loop device over backing (a file vdiskd must never read): its
    path, or None with the reason."""
    if shutil.which("losetup") is None:
        return None, "no losetup"
    r = subprocess.run(["losetup", "-f", "--show", "-r", backing], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        return None, "losetup -f: " + (r.stderr.strip() or "no free loop device")
    dev = r.stdout.strip()
    try:
        with open(dev, "rb") as f:
            ok = f.read(len(DEVICE_CONTENT)) == DEVICE_CONTENT
    except OSError:
        ok = False
    if not ok:
        subprocess.run(["losetup", "-d", dev], capture_output=True)
        return None, "%s does not read back what it was attached over" % dev
    return dev, None


def data_file_image(path, name):
    """A qcow2 whose first MiB lies, cluster for cluster, in a raw external
    data file named name (as qemu-img amend writes it; the file need not
    exist)."""
    placeholder = path + ".data"
    r = qemu_img("create", "-q", "-f", "qcow2", "-o",
                 "data_file=%s,data_file_raw=on" % placeholder, path, "1M")
    assert r.returncode == 0, r.stderr
    subprocess.run(["qemu-io", "-c", "write -P 0x11 0 1M", path], check=True,
                   capture_output=True)
    r = qemu_img("amend", "-f", "qcow2", "-o", "data_file=" + name, path)
    assert r.returncode == 0, r.stderr
    os.unlink(placeholder)
    os.chmod(path, 0o644)


def holds_device_content(path):
    with open(path, "rb") as f:
        return DEVICE_CONTENT[:16] in f.read()


def client_with_worker(env, user, *args, extra_env=()):
    """Start this file's client as user in the background (args: its
    command and operands) and wait until vdiskd has a worker for it: the
    client's process and the worker's pid."""
    earlier = workers_of(env.daemon.pid)
    p = subprocess.Popen(["runuser", "-u", user, "--", "env",
                          "DBUS_SYSTEM_BUS_ADDRESS=" + os.environ["DBUS_SYSTEM_BUS_ADDRESS"],
                          *extra_env, "/usr/bin/python3", os.path.abspath(sys.argv[0]),
                          "--client", *args],
                         stdout=subprocess.PIPE, text=True)
    return p, new_worker(env.daemon.pid, earlier)


def tests(env):
    # Bob's own folder, for the files he passes.
    t = os.path.join(env.t, "bob")
    os.mkdir(t)
    shutil.chown(t, BOB)
    src = os.path.join(t, "src.qcow2")
    assert qemu_img("create", "-q", "-f", "qcow2", src, "64M").returncode == 0
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 8M", src], check=True, capture_output=True)
    os.chmod(src, 0o644)
    with open("/etc/passwd", "rb") as f:
        passwd = f.read()

    def alive():
        rc, out = run(BOB, "get-pools")
        assert rc == 0, ("vdiskd does not answer", rc, out)

    def size(path):
        return os.stat(path).st_size

    @case("ConvertFile through the worker matches vdisk convert")
    def _():
        out = os.path.join(t, "conv.qcow2")
        ref = os.path.join(t, "ref.qcow2")
        subprocess.run([os.environ["VDISK"], "convert", "-O", "qcow2", src, ref], check=True)
        rc, res = run(BOB, "convert-file", src, out, "qcow2")
        assert rc == 0 and res["success"], res
        r = qemu_img("compare", ref, out)
        assert r.returncode == 0, r.stdout

    @case("InspectFile through the worker")
    def _():
        rc, res = run(BOB, "inspect", src)
        assert rc == 0 and res["format"] == "qcow2" and res["virtual-size"] == 64 << 20, res

    @case("a hostile caller's image (backing file /etc/shadow) gets nothing to the target")
    def _():
        bad = os.path.join(t, "shadow.qcow2")
        assert qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "/etc/shadow", "-F", "raw",
                        bad, "1M").returncode == 0
        os.chmod(bad, 0o644)
        out = os.path.join(t, "shadow.raw")
        rc, res = run(BOB, "convert-file", bad, out, "raw")
        assert rc == 4 and not res["success"] and "backing file" in res["message"], res
        assert size(out) == 0, size(out)

    pool = os.path.join(env.t, "pool")
    os.mkdir(pool)
    assert run("root", "add-pool", "p", pool)[0] == 0

    def pool_files():
        return sorted(os.listdir(pool))

    @case("ImportVolume through the worker matches vdisk convert")
    def _():
        rc, res = run(ALICE, "import", "p", src, "imported.qcow2", "qcow2")
        assert rc == 0 and res["success"], res
        ref = os.path.join(env.t, "ref-import.qcow2")
        subprocess.run([os.environ["VDISK"], "convert", "-O", "qcow2", src, ref], check=True)
        r = qemu_img("compare", ref, os.path.join(pool, "imported.qcow2"))
        assert r.returncode == 0, r.stdout
        assert os.stat(os.path.join(pool, "imported.qcow2")).st_mode & 0o777 == 0o600

    @case("an encrypted import gets its key through the worker")
    def _():
        rc, res = run(ALICE, "import", "p", src, "secret.qcow2", "qcow2",
                      "encrypt.format=luks", "encrypt.key-secret=k", "secret:k=hunter2")
        assert rc == 0 and res["success"], res
        r = subprocess.run(["qemu-img", "compare", "--object", "secret,id=k,data=hunter2",
                            "--image-opts", "driver=qcow2,file.filename=" + src,
                            "driver=qcow2,encrypt.key-secret=k,file.filename=" +
                            os.path.join(pool, "secret.qcow2")], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr

    @case("a hostile import (qcow2 backed by /etc/shadow) is refused and leaves no volume")
    def _():
        bad = os.path.join(t, "shadow-import.qcow2")
        assert qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "/etc/shadow", "-F", "raw",
                        bad, "1M").returncode == 0
        os.chmod(bad, 0o644)
        before = pool_files()
        rc, res = run(ALICE, "import", "p", bad, "stolen.raw", "raw")
        assert rc == 4 and not res["success"] and "backing file" in res["message"], res
        assert pool_files() == before, (before, pool_files())

    block_device_cases(env, t, pool)

    if not TEST_HOOKS:
        print("# built without -Dtest_hooks=true: the misbehaving worker is not tested")
        return

    @case("a worker killed with SIGKILL mid-import leaves no volume; vdiskd answers")
    def _():
        before = pool_files()
        p, worker = client_with_worker(env, ALICE, "import", "p", src, "killed.qcow2", "qcow2",
                                       "misbehave=hang")
        os.kill(worker, signal.SIGKILL)
        res = json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1])
        assert not res["success"] and res["message"] == UNSAFE, res
        assert pool_files() == before, (before, pool_files())
        rc, res = run(ALICE, "volume-props", "p", "killed.qcow2")
        assert rc == 3, res
        alive()

    @case("a caller's file passed for reading and writing reaches the worker read-only")
    def _():
        home = os.path.join(env.t, "alice-rw")
        os.mkdir(home)
        shutil.chown(home, ALICE)
        mine = os.path.join(home, "src.qcow2")
        shutil.copy(src, mine)
        shutil.chown(mine, ALICE)
        p, worker = client_with_worker(env, ALICE, "import-rw", "p", mine, "rw.qcow2", "qcow2",
                                       "misbehave=hang")
        modes = []
        for fd in os.listdir("/proc/%d/fd" % worker):
            try:
                if os.readlink("/proc/%d/fd/%s" % (worker, fd)) != mine:
                    continue
                with open("/proc/%d/fdinfo/%s" % (worker, fd)) as f:
                    flags = next(line for line in f if line.startswith("flags:"))
            except OSError:
                continue
            modes.append(int(flags.split()[1], 8) & os.O_ACCMODE)
        os.kill(worker, signal.SIGKILL)
        p.communicate(timeout=60)
        assert modes and all(m == os.O_RDONLY for m in modes), modes
        alive()

    @case("an import whose worker tries a socket fails and leaves no volume")
    def _():
        before = pool_files()
        rc, res = run(ALICE, "import", "p", src, "sock.qcow2", "qcow2", "misbehave=socket")
        assert rc == 4 and res["message"] == UNSAFE, res
        assert pool_files() == before, (before, pool_files())
        alive()

    for what in ("socket", "exec", "write-outside"):
        @case("a worker that tries %s is killed; the job fails, vdiskd lives on" % what)
        def _():
            out = os.path.join(t, "m.raw")
            rc, res = run(BOB, "convert-file", src, out, "raw", "misbehave=" + what)
            assert rc == 4 and not res["success"] and res["message"] == UNSAFE, res
            assert size(out) == 0, size(out)
            assert not os.path.exists("/tmp/vdisk-worker-outside")
            alive()

    @case("a worker that opens /etc/shadow is refused by Landlock")
    def _():
        out = os.path.join(t, "m.raw")
        rc, res = run(BOB, "convert-file", src, out, "raw", "misbehave=open-shadow")
        assert rc == 4 and not res["success"] and "Permission denied" in res["message"], res
        with open(out, "rb") as f:
            data = f.read()
        assert b"root:" not in data and passwd[:32] not in data
        alive()

    @case("InspectFile of a worker killed by seccomp is Failed")
    def _():
        rc, res = run(BOB, "inspect-opts", src, "misbehave=socket")
        assert rc == 3 and res["error"] == IFACE + "Error.Failed" and UNSAFE in res["message"], res
        alive()

    @case("InspectFile of a worker that never answers is Failed after 30 s of silence")
    def _():
        # A call no client can cancel (InspectFile, and the describe of a
        # volume that vdiskd's main loop waits for) gives a silent worker
        # up: before, the wait had no end but the worker's own.
        start = time.monotonic()
        rc, res = run(BOB, "inspect-opts", src, "misbehave=hang")
        took = time.monotonic() - start
        assert rc == 3 and res["error"] == IFACE + "Error.Failed" and UNSAFE in res["message"], res
        assert 29 < took < 50, took
        alive()

    @case("the worker runs unprivileged; SIGKILL mid-job fails the job and empties the target")
    def _():
        out = os.path.join(t, "k.raw")
        p, worker = client_with_worker(env, BOB, "convert-file", src, out, "raw",
                                       "misbehave=hang")
        try:
            st = confined_status(worker, env.daemon.pid)
        finally:
            os.kill(worker, signal.SIGKILL)
        assert all(u != "0" for u in st["Uid"]) and st["NoNewPrivs"] == ["1"] and \
            st["Seccomp"] == ["2"] and st["CapEff"] == ["0000000000000000"], \
            dict((k, st[k]) for k in ("Uid", "Gid", "NoNewPrivs", "Seccomp", "CapEff"))
        res = json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1])
        assert not res["success"] and res["message"] == UNSAFE, res
        assert size(out) == 0
        alive()

    @case("cancelling the job kills its worker")
    def _():
        out = os.path.join(t, "c.raw")
        flag = os.path.join(t, "cancel-flag")
        open(flag, "w").close()
        p, worker = client_with_worker(env, BOB, "convert-cancel", src, out,
                                       extra_env=["CANCEL_WHEN_GONE=" + flag])
        os.unlink(flag)
        res = json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1])
        assert not res["success"] and "cancel" in res["message"], res
        # vdiskd reaps the worker as the job ends; a loaded machine may
        # take a moment to show it gone.
        deadline = time.monotonic() + 5
        while worker in workers_of(env.daemon.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker not in workers_of(env.daemon.pid), "the worker outlived its job"
        alive()


def block_device_cases(env, t, pool):
    """qcow2 images whose external data file is a block device, named by its
    absolute path (/dev/loopN, or a node of it outside the pool that anyone
    may read) or as a node inside the pool: imported by a member of the
    privileged group, or present in the pool and cloned or exported, each is
    refused and nothing of the device reaches a volume or a file."""
    backing = os.path.join(env.t, "device-content.raw")
    with open(backing, "wb") as f:
        f.write(DEVICE_CONTENT * ((4 << 20) // len(DEVICE_CONTENT)))
    os.chmod(backing, 0o600)
    dev, why = attach_loop(backing)
    if dev is None:
        print("# SKIP the block-device data files: %s" % why)
        return
    rdev = os.stat(dev).st_rdev
    outside_node = os.path.join(env.t, "blockdev-outside")
    pool_node = os.path.join(pool, "blockdev")
    out_dir = os.path.join(env.t, "alice-blk")
    made = []
    try:
        for node in (outside_node, pool_node):
            os.mknod(node, 0o644 | stat.S_IFBLK, rdev)
            os.chmod(node, 0o644)  # readable by anyone: only vdisk's own checks stand between
            made.append(node)
        os.mkdir(out_dir)
        shutil.chown(out_dir, ALICE)
        # case -> the name the image gives its data file, and why a pool
        # volume that names it is refused
        names = {"abs-dev": dev, "abs-node": outside_node, "pool-node": "blockdev"}
        why_not = {"abs-dev": "lies outside", "abs-node": "lies outside",
                   "pool-node": "is not a regular file"}
        caller = {}
        for key, name in names.items():
            caller[key] = os.path.join(t, "blk-%s.qcow2" % key)
            data_file_image(caller[key], name)
            shutil.copy(caller[key], os.path.join(pool, "blk-%s.qcow2" % key))
            os.chmod(os.path.join(pool, "blk-%s.qcow2" % key), 0o600)
        assert run("root", "refresh", "p")[0] == 0

        def pool_leaks():
            leaks = []
            for f in os.listdir(pool):
                path = os.path.join(pool, f)
                if stat.S_ISREG(os.lstat(path).st_mode) and holds_device_content(path):
                    leaks.append(f)
            return leaks

        @case("the block-device data files are no empty threat: qemu-img reads the device "
              "through each")
        def _():
            for key in names:
                out = os.path.join(env.t, "oracle-%s.raw" % key)
                # qemu-img finds a relative data file from its working folder
                r = subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw",
                                    "blk-%s.qcow2" % key, out], cwd=pool, capture_output=True,
                                   text=True)
                assert r.returncode == 0, (key, r.stderr)
                assert holds_device_content(out), key
                os.unlink(out)

        for key in names:
            @case("an import of a qcow2 whose data file is a block device (%s) is refused; "
                  "nothing of the device reaches the pool" % key)
            def _():
                before = sorted(os.listdir(pool))
                rc, res = run(ALICE, "import", "p", caller[key], "blk-import-%s.raw" % key, "raw")
                assert rc in (3, 4) and not res.get("success"), res
                assert "external data file '%s'" % names[key] in res.get("message", ""), res
                assert sorted(os.listdir(pool)) == before, (before, os.listdir(pool))
                assert not pool_leaks(), pool_leaks()

            @case("a pool volume whose data file is a block device (%s): Clone and Export are "
                  "refused, nothing of the device is copied" % key)
            def _():
                vol = "blk-%s.qcow2" % key
                clone = "blk-clone-%s.raw" % key
                rc, res = run(ALICE, "clone", "p", vol, clone, "raw")
                assert rc in (3, 4) and not res.get("success"), res
                msg = res.get("message", "")
                assert "external data file '%s'" % names[key] in msg and why_not[key] in msg, res
                assert clone not in os.listdir(pool)
                dst = os.path.join(out_dir, "%s.raw" % key)
                rc, res = run(ALICE, "export", "p", vol, dst, "raw")
                assert rc in (3, 4) and not res.get("success"), res
                msg = res.get("message", "")
                assert "external data file '%s'" % names[key] in msg and why_not[key] in msg, res
                assert not os.path.exists(dst) or not holds_device_content(dst), dst
                assert not pool_leaks(), pool_leaks()
    finally:
        for node in made:
            os.unlink(node)
        subprocess.run(["losetup", "-d", dev], capture_output=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2:], EXTRA)
    # the misbehaving workers need vdiskd to pass "misbehave" on
    sys.exit(main(tests, Env(vdiskd_env={"VDISKD_TEST_HOOKS": "1"})))
