"""ImportVolume and ConvertFile of a caller's file that probes as raw but is
no disk (a VirtualBox .vbox, an empty file, 100 bytes of garbage) fail in
vdisk-worker with a message naming the file and what it looks like, and
leave no volume; with source-format=raw the same files are copied. A real
raw disk (a boot sector, zeros then data) is still imported probed, and
InspectFile still reads a .vbox as raw. vdiskctl import --notify shows the
refusal and a real import's progress and result as desktop notifications
(a service on a private session bus). Needs root (exit 77 otherwise)."""
import importlib.util
import os
import shutil
import sys

from vdiskd_env import ALICE, BOB, Env, case, client, main, qemu_img, run

VBOX = b"""<?xml version="1.0"?>
<VirtualBox xmlns="http://www.virtualbox.org/" version="1.16-linux">
  <Machine uuid="{6f4bd0a4-6a1c-4c35-9d48-1c1f1a7a1e11}" name="MyVM" OSType="Ubuntu_64"/>
</VirtualBox>
"""


def load_notify_test():
    """tests/unit/test-notify.py, for its session bus and notification
    service."""
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        "test_notify", os.path.join(here, "..", "unit", "test-notify.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def notify_cases(env, t, pool, vbox, disk):
    """vdiskctl import --notify, with a notification service on a private
    session bus: the refusal and a real import end as notifications."""
    vdiskctl = os.path.join(os.environ.get("BUILD", ""), "tools", "vdiskctl")
    if not os.access(vdiskctl, os.X_OK) or shutil.which("dbus-daemon") is None:
        print("# no vdiskctl in $BUILD/tools or no dbus-daemon: --notify is not tested")
        return
    tn = load_notify_test()
    folder = os.path.join(env.t, "session")
    os.mkdir(folder)
    daemon, address, conn = tn.session_bus(folder)
    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "DBUS_SYSTEM_BUS_ADDRESS": os.environ["DBUS_SYSTEM_BUS_ADDRESS"],
               "DBUS_SESSION_BUS_ADDRESS": address}

    def import_notified(path, name):
        s = tn.Service(conn)
        try:
            rc, out, err, _ = tn.run_program(run_env, [vdiskctl, "import", "--notify", path,
                                                       "p/" + name])
        finally:
            s.close()
        return rc, err, s.calls

    try:
        @case("vdiskctl import --notify of a .vbox: the refusal is the notification")
        def _():
            rc, err, calls = import_notified(vbox, "notified-vbox.qcow2")
            assert rc == 1 and "not a disk" in err, (rc, err)
            assert calls, "no notification"
            final = calls[-1]
            assert final["summary"] == "Importing MyVM.vbox into KVM", final
            assert final["hints"]["category"] == "transfer.error", final
            assert "looks like a VirtualBox VM's settings (.vbox)" in final["body"], final

        @case("vdiskctl import --notify of a disk: progress, then the result, one id")
        def _():
            rc, err, calls = import_notified(disk, "notified.qcow2")
            assert rc == 0, (rc, err)
            progress, final = calls[:-1], calls[-1]
            assert progress and all(0 <= c["hints"]["value"] <= 100 for c in progress), calls
            assert all(c["replaces"] == calls[1]["replaces"] for c in calls[1:]), calls
            assert final["hints"]["category"] == "transfer.complete", final
            assert final["body"] == "Imported %s as p/notified.qcow2 (qcow2)." % disk, final
            assert "notified.qcow2" in os.listdir(pool)
    finally:
        daemon.terminate()
        daemon.wait()


def tests(env):
    t = os.path.join(env.t, "files")
    os.mkdir(t)
    os.chmod(t, 0o755)

    def make(name, data):
        path = os.path.join(t, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o644)
        return path

    vbox = make("MyVM.vbox", VBOX)
    empty = make("empty", b"")
    garbage = make("garbage", os.urandom(100))
    # A boot sector (a jump, then the 0x55AA signature) on a 1 MiB disk,
    # and a disk whose first 64 KiB are zeros before its data.
    boot = b"\xeb\x3c\x90MSDOS5.0".ljust(510, b"\0") + b"\x55\xaa"
    mbr = make("mbr.raw", boot.ljust(1 << 20, b"\0"))
    zeros = make("zeros.raw", b"\0" * 65536 + b"data" * 16384 + b"\0" * (1 << 20))

    pool = os.path.join(env.t, "pool")
    os.mkdir(pool)
    assert run("root", "add-pool", "p", pool)[0] == 0

    def pool_files():
        return sorted(os.listdir(pool))

    def refused_import(path, name, says):
        before = pool_files()
        rc, res = run(ALICE, "import", "p", path, name, "qcow2")
        assert rc == 4 and not res["success"], res
        assert says in res["message"], res
        assert "give source-format=raw to copy it as a raw disk anyway" in res["message"], res
        assert pool_files() == before, (before, pool_files())
        rc, res = run(ALICE, "volume-props", "p", name)
        assert rc == 3 and res.get("error") == "no-volume", (rc, res)

    @case("ImportVolume of a .vbox is refused, naming it a VM's settings; no volume left")
    def _():
        refused_import(vbox, "x.qcow2", "source looks like a VirtualBox VM's "
                       "settings (.vbox), not a disk; import the VM with vdiskctl import-vm")

    @case("ImportVolume of an empty file is refused; no volume left")
    def _():
        refused_import(empty, "e.qcow2", "source is an empty file, not a disk")

    @case("ImportVolume of 100 bytes of garbage is refused; no volume left")
    def _():
        refused_import(garbage, "g.qcow2",
                       "source is a file smaller than one 512-byte sector")

    def imported_equal(path, name, *opts):
        rc, res = run(ALICE, "import", "p", path, name, "qcow2", *opts)
        assert rc == 0 and res["success"], res
        back = os.path.join(env.t, name + ".raw")
        r = qemu_img("convert", "-f", "qcow2", "-O", "raw", os.path.join(pool, name), back)
        assert r.returncode == 0, r.stderr
        with open(path, "rb") as a, open(back, "rb") as b:
            want = a.read()
            got = b.read()
        # qcow2 sizes are whole sectors: what follows the file reads as zeros
        assert got[:len(want)] == want and not got[len(want):].strip(b"\0"), name

    @case("with source-format=raw the .vbox, the empty and the garbage file are imported")
    def _():
        imported_equal(vbox, "vbox-raw.qcow2", "source-format=raw")
        imported_equal(garbage, "garbage-raw.qcow2", "source-format=raw")
        rc, res = run(ALICE, "import", "p", empty, "empty-raw.qcow2", "qcow2",
                      "source-format=raw")
        assert rc == 0 and res["success"], res
        assert "empty-raw.qcow2" in pool_files()

    @case("real raw disks (a boot sector, zeros then data) are still imported probed")
    def _():
        imported_equal(mbr, "mbr.qcow2")
        imported_equal(zeros, "zeros.qcow2")

    @case("ConvertFile of a .vbox is refused and leaves the target empty; raw copies it")
    def _():
        out = os.path.join(t, "out.qcow2")
        open(out, "wb").close()
        shutil.chown(out, BOB)
        rc, res = run(BOB, "convert-file", vbox, out, "qcow2")
        assert rc == 4 and not res["success"], res
        assert "looks like a VirtualBox VM's settings (.vbox)" in res["message"], res
        assert os.stat(out).st_size == 0
        rc, res = run(BOB, "convert-file", vbox, out, "raw", "source-format=raw")
        assert rc == 0 and res["success"], res
        # raw is a disk of whole 512-byte sectors, as qemu reads it: the
        # tail of the last one reads zero
        with open(out, "rb") as f:
            assert f.read() == VBOX + bytes(-len(VBOX) % 512)

    notify_cases(env, t, pool, vbox, zeros)

    @case("InspectFile still reads a .vbox as raw")
    def _():
        rc, res = run(BOB, "inspect", vbox)
        assert rc == 0 and res["format"] == "raw", res
        assert res["virtual-size"] == (len(VBOX) + 511) // 512 * 512, res


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2:])
    sys.exit(main(tests, Env()))
