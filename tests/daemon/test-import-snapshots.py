"""vdiskctl import-vm --keep-snapshots through vdiskd: a VirtualBox VM whose
disk is a base .vdi under two snapshots (Snapshots/{uuid}.vdi, each a
differencing VDI on the one before) becomes three qcow2 volumes, the base
flattened and each newer one an ImportVolume with "backing-volume": a qcow2
overlay of the volume before it, named beside it, holding only what its
snapshot changed. qemu-img reads each layer as the VM's state at that
snapshot and the top as the current state, and finds them clean. The
backing-volume option takes only a qcow2 volume of the same pool that the
caller may read: a path, another pool's volume, a symbolic link, a raw
volume and a volume polkit does not let the caller read are refused, and
nothing is made."""
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vdiskd_env import ALICE, Env, case, client, main, qemu_img, run  # noqa: E402

VDISK = os.environ.get("VDISK")
VDISKCTL = os.environ.get("VDISKCTL")
MiB = 1 << 20


def vdisk(*args):
    subprocess.run([VDISK] + list(args), check=True, capture_output=True)


def qemu_io(image, *cmds):
    for cmd in cmds:
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", cmd, image], check=True,
                       capture_output=True)


def vdi_uuid(path):
    out = subprocess.run([VDISK, "info", "--output=json", path], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)["format-specific"]["data"]["image-uuid"]


VBOX = """<?xml version="1.0"?>
<VirtualBox xmlns="http://www.virtualbox.org/" version="1.16-linux">
  <Machine uuid="{6d3c1f7e-3d2b-4c55-9a4e-2f1d0c9b8a73}" name="Layers" OSType="Debian_64"
           currentSnapshot="{0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f2}" snapshotFolder="Snapshots">
    <MediaRegistry>
      <HardDisks>
        <HardDisk uuid="{BASE}" location="base.vdi" format="VDI" type="Normal">
          <HardDisk uuid="{ONE}" location="Snapshots/{ONE}.vdi" format="VDI">
            <HardDisk uuid="{TWO}" location="Snapshots/{TWO}.vdi" format="VDI"/>
          </HardDisk>
        </HardDisk>
      </HardDisks>
    </MediaRegistry>
    <Snapshot uuid="{0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1}" name="installed"
              timeStamp="2024-04-30T09:00:00Z">
      <Hardware>
        <Memory RAMSize="256"/>
        <StorageControllers>
          <StorageController name="SATA" type="AHCI" PortCount="1">
            <AttachedDevice type="HardDisk" port="0" device="0"><Image uuid="{BASE}"/></AttachedDevice>
          </StorageController>
        </StorageControllers>
      </Hardware>
      <Snapshots>
        <Snapshot uuid="{0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f2}" name="upgraded"
                  timeStamp="2024-05-01T09:00:00Z">
          <Hardware>
            <Memory RAMSize="256"/>
            <StorageControllers>
              <StorageController name="SATA" type="AHCI" PortCount="1">
                <AttachedDevice type="HardDisk" port="0" device="0"><Image uuid="{ONE}"/></AttachedDevice>
              </StorageController>
            </StorageControllers>
          </Hardware>
        </Snapshot>
      </Snapshots>
    </Snapshot>
    <Hardware>
      <CPU count="1"/>
      <Memory RAMSize="256"/>
      <StorageControllers>
        <StorageController name="SATA" type="AHCI" PortCount="1">
          <AttachedDevice type="HardDisk" port="0" device="0"><Image uuid="{TWO}"/></AttachedDevice>
        </StorageController>
      </StorageControllers>
    </Hardware>
  </Machine>
</VirtualBox>
"""


def make_vm(top):
    """top/vm: base.vdi, Snapshots/{ONE}.vdi on it, Snapshots/{TWO}.vdi on
    that, and Layers.vbox; top/base.raw, top/one.qcow2 and top/two.qcow2
    are the same three states made by qemu-img."""
    vm = os.path.join(top, "vm")
    snaps = os.path.join(vm, "Snapshots")
    os.makedirs(snaps)
    base_raw = os.path.join(top, "base.raw")
    with open(base_raw, "wb") as f:
        for i in range(16):
            f.write(bytes([0x41 + i]) * MiB)
    vdisk("convert", "-q", "-f", "raw", "-O", "vdi", base_raw, os.path.join(vm, "base.vdi"))
    one = os.path.join(top, "one.qcow2")
    assert qemu_img("create", "-q", "-f", "qcow2", "-b", base_raw, "-F", "raw",
                    one).returncode == 0
    qemu_io(one, "write -P 67 1M 1M", "write -z 3M 64k")
    two = os.path.join(top, "two.qcow2")
    assert qemu_img("create", "-q", "-f", "qcow2", "-b", one, "-F", "qcow2",
                    two).returncode == 0
    qemu_io(two, "write -P 68 9M 4k", "write -P 69 1M 64k")
    # Each child holds only what its state changed over the one before;
    # both are made beside the base, then moved where VirtualBox keeps them.
    vdisk("convert", "-q", "-O", "vdi", "-B", "base.vdi", "-F", "vdi", one,
          os.path.join(vm, "one.vdi"))
    vdisk("convert", "-q", "-O", "vdi", "-B", "one.vdi", "-F", "vdi", two,
          os.path.join(vm, "two.vdi"))
    uuid_one = vdi_uuid(os.path.join(vm, "one.vdi"))
    uuid_two = vdi_uuid(os.path.join(vm, "two.vdi"))
    os.rename(os.path.join(vm, "one.vdi"), os.path.join(snaps, "{%s}.vdi" % uuid_one))
    current = os.path.join(snaps, "{%s}.vdi" % uuid_two)
    os.rename(os.path.join(vm, "two.vdi"), current)
    text = (VBOX.replace("{BASE}", "{%s}" % vdi_uuid(os.path.join(vm, "base.vdi")))
            .replace("{ONE}", "{%s}" % uuid_one).replace("{TWO}", "{%s}" % uuid_two))
    with open(os.path.join(vm, "Layers.vbox"), "w") as f:
        f.write(text)
    for d, _, files in os.walk(top):
        shutil.chown(d, ALICE)
        for name in files:
            shutil.chown(os.path.join(d, name), ALICE)
    return vm, current


def as_alice(*argv):
    return subprocess.run(["runuser", "-u", ALICE, "--", "env",
                           "DBUS_SYSTEM_BUS_ADDRESS=" + os.environ["DBUS_SYSTEM_BUS_ADDRESS"]] +
                          list(argv), capture_output=True, text=True, cwd="/")


def chain_info(path):
    r = qemu_img("info", "--backing-chain", "--output=json", path)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def top_data(path):
    """Bytes of guest data path itself holds (not its backing chain)."""
    r = qemu_img("map", "--output=json", path)
    assert r.returncode == 0, r.stderr
    return sum(e["length"] for e in json.loads(r.stdout) if e["depth"] == 0 and e["data"])


def tests(env):
    pool = os.path.join(env.t, "pool")
    os.makedirs(pool)
    assert run("root", "add-pool", "p", pool)[0] == 0
    other = os.path.join(env.t, "other")
    os.makedirs(other)
    assert run("root", "add-pool", "q", other)[0] == 0
    work = os.path.join(env.t, "work")
    os.makedirs(work)
    shutil.chown(work, ALICE)
    vm, current = make_vm(work)
    layers = [os.path.join(pool, n) for n in ("Layers-1.qcow2", "Layers-2.qcow2",
                                              "Layers.qcow2")]

    def import_vm(user, *args):
        argv = [VDISKCTL, "import-vm"] + list(args) + [vm, "p"]
        if user == "root":
            return subprocess.run(argv, capture_output=True, text=True, cwd="/")
        return as_alice(*argv)

    have_virsh = shutil.which("virsh") is not None
    if VDISKCTL is None:
        print("# VDISKCTL not set: vdiskctl import-vm is not tested")

    @case("vdiskctl import-vm --keep-snapshots --dry-run shows a volume per layer, the "
          "domain on the newest, and makes nothing")
    def _():
        if VDISKCTL is None:
            return
        r = import_vm(ALICE, "--dry-run", "--keep-snapshots", "--domain-type", "qemu")
        assert r.returncode == 0, r.stderr
        for path in layers:
            assert "-> " + path in r.stdout, r.stdout
        assert r.stdout.count("an overlay of the next") == 2, r.stdout
        assert "<source file='%s'/>" % layers[2] in r.stdout, r.stdout
        assert "snapshots are not kept" not in r.stdout, r.stdout
        assert sorted(os.listdir(pool)) == [], os.listdir(pool)

    @case("a definition that fails after the layers were made deletes every one of them")
    def _():
        if VDISKCTL is None or not have_virsh:
            print("# no virsh (libvirt-clients): not tested")
            return
        r = import_vm("root", "-q", "--keep-snapshots", "--connect", "test:///nowhere/at-all")
        assert r.returncode == 1, r
        assert "the domain was not defined" in r.stderr, r.stderr
        assert "is left in the pool" not in r.stderr, r.stderr
        left = [n for n in os.listdir(pool) if not n.startswith(".")]
        assert left == [], left

    @case("vdiskctl import-vm --keep-snapshots makes the chain of qcow2 volumes: the base "
          "flattened, each snapshot an overlay of the one before, the top the current state")
    def _():
        if VDISKCTL is None or not have_virsh:
            return
        r = import_vm(ALICE, "--keep-snapshots", "--connect", "test:///default",
                      "--domain-type", "qemu")
        assert r.returncode == 0, r.stderr
        assert "defined domain 'Layers'" in r.stdout, r.stdout
        assert "3 volumes, the snapshots kept" in r.stdout, r.stdout
        info = chain_info(layers[2])
        assert [os.path.basename(i["filename"]) for i in info] == \
            ["Layers.qcow2", "Layers-2.qcow2", "Layers-1.qcow2"], info
        assert [i["format"] for i in info] == ["qcow2"] * 3, info
        # Named relative, beside each other in the pool's folder.
        assert info[0]["backing-filename"] == "Layers-2.qcow2", info[0]
        assert info[0]["backing-filename-format"] == "qcow2", info[0]
        assert info[1]["backing-filename"] == "Layers-1.qcow2", info[1]
        assert info[1]["backing-filename-format"] == "qcow2", info[1]
        assert "backing-filename" not in info[2], info[2]
        for path in layers:
            c = qemu_img("check", path)
            assert c.returncode == 0, c.stdout + c.stderr
        # Each layer reads as the VM's state at its snapshot.
        for path, state, fmt in ((layers[0], os.path.join(vm, "base.vdi"), "vdi"),
                                 (layers[0], os.path.join(work, "base.raw"), "raw"),
                                 (layers[1], os.path.join(work, "one.qcow2"), "qcow2"),
                                 (layers[2], os.path.join(work, "two.qcow2"), "qcow2")):
            c = qemu_img("compare", "-f", "qcow2", "-F", fmt, path, state)
            assert c.returncode == 0, (path, state, c.stdout + c.stderr)
        # The top against the source chain flattened by vdisk itself.
        flat = os.path.join(work, "flat.raw")
        vdisk("convert", "-q", "-O", "raw", current, flat)
        c = qemu_img("compare", "-f", "qcow2", "-F", "raw", layers[2], flat)
        assert c.returncode == 0, c.stdout + c.stderr
        # The overlays hold only what their snapshot changed (whole VDI
        # blocks of 1 MiB at most): blocks 1 and 3, then 1 and 9.
        assert top_data(layers[0]) == 16 * MiB, top_data(layers[0])
        for path in layers[1:]:
            assert 0 < top_data(path) <= 2 * MiB, (path, top_data(path))

    # ---- the backing-volume option itself, at the D-Bus level.
    src = os.path.join(work, "small.qcow2")
    assert qemu_img("create", "-q", "-f", "qcow2", src, "16M").returncode == 0
    qemu_io(src, "write -P 90 0 64k")
    shutil.chown(src, ALICE)
    assert qemu_img("create", "-q", "-f", "qcow2", os.path.join(pool, "b.qcow2"),
                    "16M").returncode == 0
    assert qemu_img("create", "-q", "-f", "raw", os.path.join(pool, "r.raw"),
                    "16M").returncode == 0
    assert qemu_img("create", "-q", "-f", "qcow2", os.path.join(other, "o.qcow2"),
                    "16M").returncode == 0
    for name in ("guarded.qcow2", "readable.qcow2"):
        assert qemu_img("create", "-q", "-f", "qcow2", os.path.join(pool, name),
                        "16M").returncode == 0
    outside = os.path.join(env.t, "outside.qcow2")
    assert qemu_img("create", "-q", "-f", "qcow2", outside, "16M").returncode == 0
    os.symlink(outside, os.path.join(pool, "link.qcow2"))
    os.symlink("/etc/passwd", os.path.join(pool, "passwd"))
    assert run("root", "refresh", "p")[0] == 0
    assert run("root", "refresh", "q")[0] == 0

    def made(name):
        return os.path.exists(os.path.join(pool, name))

    @case("backing-volume makes an overlay of a volume of the pool holding only the source's "
          "top")
    def _():
        rc, out = run(ALICE, "import", "p", src, "over.qcow2", "qcow2",
                      "backing-volume=b.qcow2")
        assert rc == 0 and out["success"], out
        info = chain_info(os.path.join(pool, "over.qcow2"))
        assert info[0]["backing-filename"] == "b.qcow2", info[0]
        assert info[0]["backing-filename-format"] == "qcow2", info[0]
        c = qemu_img("compare", os.path.join(pool, "over.qcow2"), src)
        assert c.returncode == 0, c.stdout + c.stderr
        assert top_data(os.path.join(pool, "over.qcow2")) == 64 << 10
        assert qemu_img("check", os.path.join(pool, "over.qcow2")).returncode == 0

    for value, error, why in (
            ("../other/o.qcow2", "InvalidArgument", "a path out of the pool"),
            ("/etc/passwd", "InvalidArgument", "an absolute path"),
            ("o.qcow2", "NotFound", "another pool's volume"),
            ("link.qcow2", "NotFound", "a symbolic link in the pool to a qcow2 outside it"),
            ("passwd", "NotFound", "a symbolic link in the pool to /etc/passwd"),
            ("r.raw", "InvalidArgument", "a raw volume"),
            ("", "InvalidArgument", "an empty name")):
        @case("backing-volume of %s is refused before any job" % why)
        def _():
            rc, out = run(ALICE, "import", "p", src, "bad.qcow2", "qcow2",
                          "backing-volume=" + value)
            assert rc == 3 and out.get("error", "").endswith("Error." + error), out
            print("# " + out["message"])
            assert not made("bad.qcow2")

    @case("a volume replaced by a symbolic link behind vdiskd's back is not followed")
    def _():
        os.unlink(os.path.join(pool, "b.qcow2"))
        os.symlink(outside, os.path.join(pool, "b.qcow2"))
        rc, out = run(ALICE, "import", "p", src, "swapped.qcow2", "qcow2",
                      "backing-volume=b.qcow2")
        assert rc == 3, out
        print("# " + out["message"])
        assert not made("swapped.qcow2")

    @case("backing-volume asks read-volume on the volume: a rule that denies reading it "
          "refuses the import, which makes nothing")
    def _():
        rules = "/etc/polkit-1/rules.d/40-vdisk-test-snapshots.rules"
        with open(rules, "w") as f:
            f.write('polkit.addRule(function(action, subject) {\n'
                    '    if (action.id == "org.vdisk.VDisk1.read-volume" &&\n'
                    '        action.lookup("volume") == "guarded.qcow2")\n'
                    '        return polkit.Result.NO;\n'
                    '});\n')
        env.installed.append(rules)
        # polkitd reads its rules again when the folder changes.
        for _ in range(50):
            rc, out = run(ALICE, "import", "p", src, "secret.qcow2", "qcow2",
                          "backing-volume=guarded.qcow2")
            if rc == 3:
                break
            run("root", "delete", "p", "secret.qcow2")
            time.sleep(0.2)
        assert rc == 3 and out["error"].endswith("Error.NotAuthorized"), out
        assert not made("secret.qcow2")
        rc, out = run(ALICE, "import", "p", src, "allowed.qcow2", "qcow2",
                      "backing-volume=readable.qcow2")
        assert rc == 0 and out["success"], out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2:])
    if VDISK is None or shutil.which("qemu-io") is None:
        print("1..0 # SKIP needs VDISK (the build's vdisk) and qemu-io")
        sys.exit(77)
    sys.exit(main(tests, Env()))
