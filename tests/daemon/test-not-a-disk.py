"""ImportVolume and ConvertFile of a caller's file that probes as raw but is
no disk (a VirtualBox .vbox, an empty file, 100 bytes of garbage) fail in
vdisk-worker with a message naming the file and what it looks like, and
leave no volume; with source-format=raw the same files are copied. A real
raw disk (a boot sector, zeros then data) is still imported probed, and
InspectFile still reads a .vbox as raw. Needs root (exit 77 otherwise)."""
import os
import shutil
import sys

from vdiskd_env import ALICE, BOB, Env, case, client, main, qemu_img, run

VBOX = b"""<?xml version="1.0"?>
<VirtualBox xmlns="http://www.virtualbox.org/" version="1.16-linux">
  <Machine uuid="{6f4bd0a4-6a1c-4c35-9d48-1c1f1a7a1e11}" name="MyVM" OSType="Ubuntu_64"/>
</VirtualBox>
"""


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
        refused_import(vbox, "x.qcow2", "caller's source file looks like a VirtualBox VM's "
                       "settings (.vbox), not a disk; import the VM with vdiskctl import-vm")

    @case("ImportVolume of an empty file is refused; no volume left")
    def _():
        refused_import(empty, "e.qcow2", "caller's source file is an empty file, not a disk")

    @case("ImportVolume of 100 bytes of garbage is refused; no volume left")
    def _():
        refused_import(garbage, "g.qcow2",
                       "caller's source file is a file smaller than one 512-byte sector")

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
        with open(out, "rb") as f:
            assert f.read() == VBOX

    @case("InspectFile still reads a .vbox as raw")
    def _():
        rc, res = run(BOB, "inspect", vbox)
        assert rc == 0 and res["format"] == "raw" and res["virtual-size"] == len(VBOX), res


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2:])
    sys.exit(main(tests, Env()))
