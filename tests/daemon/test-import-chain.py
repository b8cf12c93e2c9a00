"""ImportVolume of a differencing image with its parents passed as
descriptors (the "chain" option): a VirtualBox VM's current state,
Snapshots/{uuid}.vdi on the base one folder up, imports as the flattened
current state, with every file of the chain removed from the filesystem
before the call, so vdiskd and its worker could open nothing by name.
Without the chain it fails naming the missing parent; a descriptor that is
not the parent (another VDI) or not a regular file is refused, and no
volume is left."""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vdiskd_env import ALICE, Env, case, client, main, qemu_img, run  # noqa: E402

VDISK = os.environ.get("VDISK")
VDISKCTL = os.environ.get("VDISKCTL")
MAKE_BOOT_VM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../libvirt/make-boot-vm.sh")


def import_chain(ctx, a):
    """POOL NAME SOURCE [PARENT...] [--remove DIR]: ImportVolume of SOURCE
    with each PARENT passed in "chain" by its name relative to SOURCE's
    folder; with --remove, DIR is removed once every file is open."""
    from gi.repository import GLib
    remove = None
    if "--remove" in a:
        i = a.index("--remove")
        remove, a = a[i + 1], a[:i]
    pool, name, source, parents = a[0], a[1], a[2], a[3:]
    fds = [os.open(source, os.O_RDONLY)]
    chain = []
    for p in parents:
        fds.append(os.open(p, os.O_RDONLY | os.O_DIRECTORY if os.path.isdir(p) else os.O_RDONLY))
        chain.append((os.path.relpath(p, os.path.dirname(source)), len(fds) - 1))
    if remove:
        shutil.rmtree(remove)
    opts = {"chain": GLib.Variant("a(sh)", chain)} if chain else {}
    v, j = ctx.call("/org/vdisk/VDisk1/pools/" + pool, "Pool", "ImportVolume", "(hssa{sv})",
                    [0, name, "qcow2", opts], fds)
    ctx.wait(j, {"volume": v})


def vdisk(*args):
    subprocess.run([VDISK] + list(args), check=True, capture_output=True)


def vdi_uuid(path):
    import json
    out = subprocess.run([VDISK, "info", "--output=json", path], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)["format-specific"]["data"]["image-uuid"]


def make_vm(top, work):
    """top/VM/base.vdi and its differencing child top/VM/Snapshots/{uuid}.vdi;
    work/current.qcow2 is the same current state made by qemu-img."""
    vm = os.path.join(top, "VM")
    os.makedirs(os.path.join(vm, "Snapshots"))
    os.makedirs(os.path.join(vm, "Logs"))
    base_raw = os.path.join(work, "base.raw")
    with open(base_raw, "wb") as f:
        for i in range(16):
            f.write(bytes([0x41 + i]) * (1 << 20))
    vdisk("convert", "-q", "-f", "raw", "-O", "vdi", base_raw, os.path.join(vm, "base.vdi"))
    current = os.path.join(work, "current.qcow2")
    assert qemu_img("create", "-q", "-f", "qcow2", "-b", base_raw, "-F", "raw",
                    current).returncode == 0
    for cmd in ("write -P 67 1M 1M", "write -z 3M 64k", "write -P 68 9M 4k"):
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", cmd, current], check=True,
                       capture_output=True)
    child = os.path.join(vm, "child.vdi")
    vdisk("convert", "-q", "-O", "vdi", "-B", "base.vdi", "-F", "vdi", current, child)
    snap = os.path.join(vm, "Snapshots", "{%s}.vdi" % vdi_uuid(child))
    os.rename(child, snap)
    # Another base of the same size: the wrong parent.
    vdisk("convert", "-q", "-f", "raw", "-O", "vdi", base_raw, os.path.join(vm, "other.vdi"))
    return vm, snap


def tests(env):
    pool = os.path.join(env.t, "pool")
    os.makedirs(pool)
    assert run("root", "add-pool", "p", pool)[0] == 0
    work = os.path.join(env.t, "work")
    os.makedirs(work)
    shutil.chown(work, ALICE)
    os.chmod(env.t, 0o755)

    def fresh_vm(tag):
        """A VM folder of alice's that only she can read."""
        top = os.path.join(work, tag)
        os.makedirs(top)
        vm, snap = make_vm(top, work)
        for d, _, files in os.walk(top):
            shutil.chown(d, ALICE)
            for f in files:
                shutil.chown(os.path.join(d, f), ALICE)
        os.chmod(top, 0o700)
        return top, vm, snap

    @case("a differencing VDI with its parent passed as a descriptor imports as the "
          "current state, with its files gone from the filesystem")
    def _():
        top, vm, snap = fresh_vm("a")
        rc, out = run(ALICE, "import-chain", "p", "flat.qcow2", snap,
                      os.path.join(vm, "base.vdi"), "--remove", top)
        assert rc == 0 and out["success"], out
        assert not os.path.exists(top)
        target = os.path.join(pool, "flat.qcow2")
        r = qemu_img("compare", "-f", "qcow2", "-F", "qcow2", target,
                     os.path.join(work, "current.qcow2"))
        assert r.returncode == 0, r.stdout + r.stderr
        r = qemu_img("info", target)
        assert "backing file" not in r.stdout, r.stdout
        assert qemu_img("check", target).returncode == 0

    top, vm, snap = fresh_vm("b")

    @case("without the chain it fails naming the parent it did not find")
    def _():
        rc, out = run(ALICE, "import-chain", "p", "lone.qcow2", snap)
        assert rc == 4 and not out["success"], out
        m = out["message"]
        assert "parent" in m and "not found" in m and '"chain"' in m, m
        print("# " + m)
        assert not os.path.exists(os.path.join(pool, "lone.qcow2"))

    @case("a chain descriptor that is not the parent (another VDI's UUID) is refused")
    def _():
        rc, out = run(ALICE, "import-chain", "p", "wrong.qcow2", snap,
                      os.path.join(vm, "other.vdi"))
        assert rc == 4 and not out["success"], out
        assert "not the image this one was made on" in out["message"], out
        print("# " + out["message"])
        assert not os.path.exists(os.path.join(pool, "wrong.qcow2"))

    @case("a chain descriptor of a folder is refused before any job")
    def _():
        rc, out = run(ALICE, "import-chain", "p", "dir.qcow2", snap, os.path.join(vm, "Logs"))
        assert rc == 3 and out["error"].endswith("Error.InvalidArgument"), out
        assert "is a directory" in out["message"], out
        assert not os.path.exists(os.path.join(pool, "dir.qcow2"))

    @case("the parent asks only for names among the caller's files: a qcow2 whose "
          "backing file is named in its header reads that name through the chain")
    def _():
        base = os.path.join(work, "c", "base.qcow2")
        os.makedirs(os.path.dirname(base))
        assert qemu_img("convert", "-f", "raw", "-O", "qcow2", os.path.join(work, "base.raw"),
                        base).returncode == 0
        top_img = os.path.join(work, "c", "top.qcow2")
        assert qemu_img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
                        top_img).returncode == 0
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 99 5M 64k", top_img],
                       check=True, capture_output=True)
        for f in (base, top_img, os.path.dirname(base)):
            shutil.chown(f, ALICE)
        rc, out = run(ALICE, "import-chain", "p", "q.qcow2", top_img, base)
        assert rc == 0 and out["success"], out
        r = qemu_img("compare", os.path.join(pool, "q.qcow2"), top_img)
        assert r.returncode == 0, r.stdout + r.stderr

    @case("vdiskctl import of a snapshot's differencing VDI finds its base one folder up "
          "and passes it: the volume is the current state")
    def _():
        if VDISKCTL is None:
            print("# VDISKCTL not set: vdiskctl import is not tested")
            return
        r = as_alice(VDISKCTL, "import", "-q", snap, "p/ctl.qcow2")
        assert r.returncode == 0, r.stderr
        cmp = qemu_img("compare", os.path.join(pool, "ctl.qcow2"),
                       os.path.join(work, "current.qcow2"))
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr

    @case("vdiskctl import of a differencing VDI whose base is gone names where it looked")
    def _():
        if VDISKCTL is None:
            return
        lost = os.path.join(work, "lost")
        os.makedirs(os.path.join(lost, "Snapshots"))
        shutil.copy(snap, os.path.join(lost, "Snapshots"))
        for d in (lost, os.path.join(lost, "Snapshots")):
            shutil.chown(d, ALICE)
        r = as_alice(VDISKCTL, "import", "-q",
                     os.path.join(lost, "Snapshots", os.path.basename(snap)), "p/lost.qcow2")
        assert r.returncode == 1, r
        assert "neither beside it, nor in the folder above" in r.stderr, r.stderr
        assert not os.path.exists(os.path.join(pool, "lost.qcow2"))

    vm_top = os.path.join(work, "boot")
    os.makedirs(vm_top)
    subprocess.run([MAKE_BOOT_VM, vm_top], check=True, env=dict(os.environ, VDISK=VDISK))
    for d, _, files in os.walk(vm_top):
        shutil.chown(d, ALICE)
        for f in files:
            shutil.chown(os.path.join(d, f), ALICE)
    vm_folder = os.path.join(vm_top, "vm")
    volume = os.path.join(pool, "vdisk-boot.qcow2")

    def import_vm(user, *args):
        argv = [VDISKCTL, "import-vm"] + list(args) + [vm_folder, "p"]
        if user == "root":
            return subprocess.run(argv, capture_output=True, text=True, cwd="/")
        return as_alice(*argv)

    @case("vdiskctl import-vm --dry-run prints the plan and the domain on the pool's folder, "
          "and makes nothing")
    def _():
        if VDISKCTL is None:
            return
        r = import_vm(ALICE, "--dry-run", "--domain-type", "qemu")
        assert r.returncode == 0, r.stderr
        assert "<source file='%s'/>" % volume in r.stdout, r.stdout
        assert "<domain type='qemu'>" in r.stdout and "Snapshots/{" in r.stdout, r.stdout
        assert not os.path.exists(volume)

    @case("vdiskctl import-vm whose domain cannot be defined deletes the volume it made")
    def _():
        if VDISKCTL is None or shutil.which("virsh") is None:
            print("# no virsh (libvirt-clients): not tested")
            return
        r = import_vm("root", "-q", "--connect", "test:///nowhere/at-all")
        assert r.returncode == 1, r
        assert "the domain was not defined" in r.stderr, r.stderr
        assert not os.path.exists(volume)

    @case("vdiskctl import-vm of a user who may not delete names the volume it left")
    def _():
        if VDISKCTL is None or shutil.which("virsh") is None:
            return
        r = import_vm(ALICE, "-q", "--connect", "test:///nowhere/at-all")
        assert r.returncode == 1, r
        assert "p/vdisk-boot.qcow2 is left in the pool" in r.stderr, r.stderr
        assert os.path.exists(volume)
        rc, out = run("root", "delete", "p", "vdisk-boot.qcow2")
        assert rc == 0 and not os.path.exists(volume), out

    @case("vdiskctl import-vm imports the VM's current state into the pool and defines it "
          "(libvirt's test driver)")
    def _():
        if VDISKCTL is None or shutil.which("virsh") is None:
            return
        r = import_vm(ALICE, "--connect", "test:///default", "--domain-type", "qemu")
        assert r.returncode == 0, r.stderr
        assert "defined domain 'vdisk-boot'" in r.stdout, r.stdout
        cmp = qemu_img("compare", volume, os.path.join(vm_top, "current.qcow2"))
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        assert "backing file" not in qemu_img("info", volume).stdout
        # A second import: the volume's name is taken, and vdiskd says so.
        r = import_vm(ALICE, "-q", "--connect", "test:///default")
        assert r.returncode == 1 and "exists already" in r.stderr, r


def as_alice(*argv):
    return subprocess.run(["runuser", "-u", ALICE, "--", "env",
                           "DBUS_SYSTEM_BUS_ADDRESS=" + os.environ["DBUS_SYSTEM_BUS_ADDRESS"]] +
                          list(argv), capture_output=True, text=True, cwd="/")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2:], {"import-chain": import_chain})
    if VDISK is None or shutil.which("qemu-io") is None:
        print("1..0 # SKIP needs VDISK (the build's vdisk) and qemu-io")
        sys.exit(77)
    sys.exit(main(tests, Env()))
