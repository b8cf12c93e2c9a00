"""vdiskd confined as vdiskd.service confines it, without systemd: the test
reads data/vdiskd.service.in, computes its SystemCallFilter= as systemd does
(the groups from `systemd-analyze syscall-filter` at test time) and starts
vdiskd through unit-sandbox, which reproduces the unit's settings and execs
vdiskd. Under it the worker still confines itself (its user, no-new-privs,
Landlock, its own seccomp filter) and does InspectFile, ConvertFile,
ImportVolume, Clone, Resize, Export, CopyFrom, snapshots and CreateOverlay;
a killed worker still fails its job cleanly; an rbd pool shows at once
that vdiskd has no network, naming the drop-in. Under PrivateNetwork= it
imports an NBD export on the test's 127.0.0.1 through the socket vdiskctl
connected, and serves a volume with vdiskctl export-nbd.
A setting the unit gains that this test does not know fails the test, so
the two stay in step.

Not reproduced, or only in part, without systemd:
- Type=, BusName=, ExecStart=: the test starts its build's vdiskd on its own
  bus and waits for the name.
- TasksMax=, MemoryMax=, and PrivateDevices='s device cgroup: cgroup limits,
  and the test has no cgroup of its own without a service manager.
- StateDirectory=: the test's state folder stands for /var/lib/vdisk.
- PrivateTmp=: a /tmp of its own, but the test's folder (its bus, pool and
  state) is bound back in read-only, as a drop-in's BindReadOnlyPaths=
  would, with its pool and state folders writable (ReadWritePaths=).
- ProtectKernelTunables=: /proc/sys, /proc/sysrq-trigger and /sys read-only,
  not systemd's longer list of /proc files; ProtectKernelLogs= and
  ProtectKernelModules=: their system calls only (no /proc/kmsg or
  /usr/lib/modules masked); ProtectHostname=: its system calls, not a UTS
  namespace; ProtectHome=: left out when the build is in a home folder.
- SystemCallArchitectures=native: libseccomp's filter for the native
  architecture, which kills a call of another one.
Needs root, systemd-analyze, setpriv and what vdiskd_env needs (exit 77
otherwise)."""
import ctypes
import errno
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

from vdiskd_env import ALICE, BOB, BUS, IFACE, ROOT, Env, case, client, confined_status, main, \
    new_worker, qemu_img, run, status_of, workers_of

TEST_HOOKS = os.environ.get("VDISK_TEST_HOOKS") == "true"
UNSAFE = "the image could not be processed safely"
REPO = os.environ.get("REPO") or os.path.join(os.path.dirname(__file__), "../..")
UNIT = os.environ.get("VDISKD_UNIT") or os.path.join(REPO, "data", "vdiskd.service.in")
SANDBOX = os.environ.get("UNIT_SANDBOX")
VDISKCTL = os.environ.get("VDISKCTL", "")
PLUGIN = os.path.join(os.environ.get("BUILD", ""), "nbd", "nbdkit-vdisk-plugin.so")

# Settings of the unit that only say what the service is, or that need
# systemd itself; each with the reason.
NOT_REPRODUCED = {
    "Description": "a name", "Documentation": "a pointer",
    "Type": "how systemd waits for it: the test waits for the bus name",
    "BusName": "likewise", "ExecStart": "the test starts its build's vdiskd",
    "TasksMax": "a cgroup limit: no cgroup of the test's own without a service manager",
    "MemoryMax": "a cgroup limit, likewise",
    "StateDirectory": "the test's state folder (in the bound test folder) stands for it",
}
# Unit settings that take system calls away on top of SystemCallFilter=
# (systemd adds a deny filter for each; in an allow-list that is removal).
DENIES = {
    "ProtectKernelModules": ["@module"], "ProtectKernelLogs": ["syslog"],
    "ProtectClock": ["@clock"], "ProtectHostname": ["sethostname", "setdomainname"],
    "PrivateDevices": ["@raw-io"],
}
# Settings that take "yes": the unit-sandbox flag for each (None: its
# system calls, in DENIES, are all there is to it here).
FLAGS = {
    "NoNewPrivileges": "--no-new-privileges", "RestrictNamespaces": "--restrict-namespaces",
    "RestrictRealtime": "--restrict-realtime", "RestrictSUIDSGID": "--restrict-suid-sgid",
    "LockPersonality": "--lock-personality",
    "MemoryDenyWriteExecute": "--memory-deny-write-execute",
    "PrivateNetwork": "--private-network", "ProtectHome": "--protect-home",
    "PrivateTmp": "--private-tmp", "PrivateDevices": "--private-devices",
    "ProtectKernelTunables": "--protect-kernel-tunables",
    # /sys/fs/cgroup is under /sys, read-only with ProtectKernelTunables
    "ProtectControlGroups": "--protect-kernel-tunables",
    "ProtectKernelModules": None, "ProtectKernelLogs": None, "ProtectClock": None,
    "ProtectHostname": None,
}


def read_unit(path):
    """The [Service] settings of a unit file: name -> its values, in order."""
    settings, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line
                continue
            key, _, value = line.partition("=")
            settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


def syscall_groups():
    """systemd's system call groups: @name -> its members (names and groups)."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"],
                         capture_output=True, text=True, check=True).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith(" ") and current is not None:
            word = line.strip()
            if word and not word.startswith("#"):
                current.append(word)
        else:
            current = None
    return groups


def expand(name, groups):
    if not name.startswith("@"):
        return {name}
    if name not in groups:
        raise RuntimeError("systemd-analyze knows no group %s" % name)
    found = set()
    for member in groups[name]:
        found |= expand(member, groups)
    return found


def allowed_syscalls(filters, denies, groups):
    """SystemCallFilter= lines as systemd reads them: the first line that
    allows makes an allow-list that starts from @default; later lines add
    names, '~' lines remove them."""
    allowed = None
    for value in filters:
        if value == "":
            allowed = None
            continue
        invert = value.startswith("~")
        if allowed is None:
            if invert:
                raise RuntimeError("the unit's filter is a deny-list; this test knows allow-lists")
            allowed = expand("@default", groups)
        for word in value.lstrip("~").split():
            if ":" in word:
                raise RuntimeError("per-call errno (%s) is not reproduced" % word)
            names = expand(word, groups)
            allowed = allowed - names if invert else allowed | names
    for word in denies if allowed is not None else ():
        allowed -= expand(word, groups)
    return allowed


def since_reset(values):
    """A list setting's words: an empty assignment clears what came before."""
    words = []
    for v in values:
        words = words + v.split() if v else []
    if any(w.startswith("~") for w in words):
        raise RuntimeError("an inverted list (%s) is not reproduced" % " ".join(words))
    return words


def checkouts_in_tmp():
    """The source and build trees that lie under /tmp or /var/tmp (a tree
    inside another counted once)."""
    trees = []
    for p in sorted({os.path.realpath(REPO), os.path.realpath(os.environ.get("BUILD", REPO))}):
        if not p.startswith(("/tmp/", "/var/tmp/")):
            continue
        if not any(p == t or p.startswith(t + "/") for t in trees):
            trees.append(p)
    return trees


def sandbox_args(unit, groups, workdir, bind, writable):
    """unit-sandbox's arguments for the unit's settings; raises on a setting
    it neither reproduces nor lists in NOT_REPRODUCED."""
    args, denies, filters = [], [], []
    home_paths = ("/home", "/root", "/run/user")
    for (section, key), values in unit.items():
        value = values[-1]
        if section != "[Service]" or key in NOT_REPRODUCED:
            continue
        if key in FLAGS:
            if value in ("no", "false", "off", "0"):
                continue
            if value not in ("yes", "true", "on", "1"):
                raise RuntimeError("%s=%s: this test knows only yes and no" % (key, value))
            denies += DENIES.get(key, [])
            flag = FLAGS[key]
            if key == "ProtectHome" and any(os.path.abspath(p).startswith(home_paths)
                                            for p in (REPO, os.environ.get("BUILD", REPO))):
                print("# note: the build is under a home folder; ProtectHome= not reproduced")
                flag = None
            if flag and flag not in args:
                args.append(flag)
        elif key == "SystemCallFilter":
            filters = values
        elif key == "SystemCallErrorNumber":
            args.append("--system-call-error-number=%d" % getattr(errno, value))
        elif key == "SystemCallArchitectures":
            if value != "native":
                raise RuntimeError("SystemCallArchitectures=%s: this test knows 'native'" % value)
            # libseccomp's filter is for the native architecture only
        elif key == "CapabilityBoundingSet":
            args.append("--capability-bounding-set=" + bounding_set_of(since_reset(values)))
        elif key == "UMask":
            args.append("--umask=" + value)
        elif key == "LimitNOFILE":
            args.append("--limit-nofile=" + value)
        elif key == "RestrictAddressFamilies":
            for af in since_reset(values):
                args.append("--restrict-address-families=%d" % socket.AddressFamily[af].value)
        elif key == "ProtectSystem":
            if value != "strict":
                raise RuntimeError("ProtectSystem=%s: this test knows 'strict'" % value)
            args.append("--protect-system-strict")
        elif key == "ReadWritePaths":
            for p in since_reset(values):
                args.append("--read-write-path=" + p)
        else:
            raise RuntimeError("the unit sets %s=, which this test neither reproduces nor lists "
                               "as not reproduced" % key)
    allowed = allowed_syscalls(filters, denies, groups)
    if allowed is None:
        raise RuntimeError("the unit has no SystemCallFilter=; this test expects one")
    path = os.path.join(workdir, "allowed-syscalls")
    with open(path, "w") as f:
        f.write("\n".join(sorted(allowed)) + "\n")
    # The test's folder stands for /run/dbus, the pool's folder and the
    # state directory: read-only but for the two folders vdiskd may write.
    args += ["--bind-read-only-path=" + bind] + ["--read-write-path=" + p for p in writable]
    # vdiskd and vdisk-worker installed live in /usr/libexec; built in a
    # checkout under /tmp or /var/tmp they would vanish behind PrivateTmp=,
    # so that checkout is bound back read-only, as /usr is.
    for tree in checkouts_in_tmp():
        args.append("--bind-read-only-path=" + tree)
    return [SANDBOX] + args + ["--system-call-filter=" + path, "--"], allowed


# ---------------------------------------------------------------- client side
EXTRA = {}


# ---------------------------------------------------------------- test side
def kernel_landlock_abi():
    """The Landlock ABI this kernel offers (0: none), asked outside any sandbox."""
    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # landlock_create_ruleset
    return abi if abi > 0 else 0


def bounding_set_of(caps):
    """The CapBnd a process gets with these capabilities, as setpriv makes it."""
    spec = ",".join(["-all"] + ["+" + c.lower()[4:] for c in caps])
    out = subprocess.run(["setpriv", "--bounding-set", spec, "grep", "CapBnd", "/proc/self/status"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[1]


# A probe run under the same sandbox: what the unit takes away is gone.
PROBE = r"""
import ctypes, errno, json, mmap, os, socket, tempfile
libc = ctypes.CDLL(None, use_errno=True)
def err(fn):
    try:
        fn()
        return 0
    except OSError as e:
        return e.errno
def unshare():  # a user namespace needs no capability: only the filter refuses it
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        raise OSError(ctypes.get_errno(), "unshare")
def write_usr():
    path = "/usr/.vdisk-unit-test-%d" % os.getpid()
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    os.unlink(path)
def suid():
    with tempfile.NamedTemporaryFile() as f:
        os.chmod(f.name, 0o4755)
def personality():
    if libc.personality(0x0008) == -1:  # PER_LINUX32
        raise OSError(ctypes.get_errno(), "personality")
def scm_rights():  # how the worker will ask vdiskd for a pool's file
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    socket.send_fds(a, [b"x"], [0])
    msg, fds, _, _ = socket.recv_fds(b, 1, 1)
    assert msg == b"x" and len(fds) == 1
out = {"inet": err(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()),
       "unix": err(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()),
       "scm-rights": err(scm_rights),
       "setaffinity": err(lambda: os.sched_setaffinity(0, os.sched_getaffinity(0))),
       "write-usr": err(write_usr),
       "write-exec": err(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC)),
       "setuid-bit": err(suid), "personality": err(personality),
       "umask": os.umask(0o22)}
out["unshare"] = err(unshare)  # last: it would change who the probe is
print(json.dumps(out))
"""


def tests(env, sandbox, allowed):
    pid = env.daemon.pid
    t = os.path.join(env.t, "bob")
    os.mkdir(t)
    shutil.chown(t, BOB)
    src = os.path.join(t, "src.qcow2")
    assert qemu_img("create", "-q", "-f", "qcow2", src, "64M").returncode == 0
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 8M", "-c", "write -P 0x33 40M 1M", src],
                   check=True, capture_output=True)
    os.chmod(src, 0o644)
    pool = os.path.join(env.t, "pool")  # made before vdiskd, writable to it
    unit = read_unit(UNIT)

    def alive():
        rc, out = run(BOB, "get-pools")
        assert rc == 0, ("vdiskd does not answer", rc, out)

    def pool_files():
        return sorted(os.listdir(pool))

    def vdiskctl(user, *args):
        return subprocess.run(["runuser", "-u", user, "--", "env",
                               "DBUS_SYSTEM_BUS_ADDRESS=" + os.environ["DBUS_SYSTEM_BUS_ADDRESS"],
                               VDISKCTL] + list(args), capture_output=True, text=True, cwd="/")

    @case("vdiskd runs under the unit's settings")
    def _():
        st = status_of(pid)
        caps = " ".join(unit[("[Service]", "CapabilityBoundingSet")]).split()
        assert st["NoNewPrivs"] == ["1"] and st["Seccomp"] == ["2"], st
        assert st["CapBnd"] == [bounding_set_of(caps)] and st["CapEff"] == st["CapBnd"], st
        assert st["Umask"] == [unit[("[Service]", "UMask")][-1]], st["Umask"]
        with open("/proc/%d/limits" % pid) as f:
            nofile = [line.split()[3:5] for line in f if line.startswith("Max open files")][0]
        assert nofile == [unit[("[Service]", "LimitNOFILE")][-1]] * 2, nofile
        for ns in ("net", "mnt"):
            assert os.readlink("/proc/%d/ns/%s" % (pid, ns)) != os.readlink("/proc/self/ns/" + ns)
        with open("/proc/%d/mountinfo" % pid) as f:
            mounts = {m[4]: m[5].split(",")[0] for m in (line.split() for line in f)}
        assert mounts.get(env.t) == "ro" and mounts.get(pool) == "rw" and \
            mounts.get(env.state) == "rw" and mounts.get("/usr", mounts["/"]) == "ro", mounts
        # what the worker needs to confine itself and to receive descriptors
        needs = {"setresuid", "setgroups", "capset", "prlimit64", "prctl", "seccomp",
                 "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
                 "socketpair", "sendmsg", "recvmsg"}
        assert needs <= allowed, needs - allowed
        assert not {"ptrace", "mount", "bpf", "init_module", "kexec_load"} & allowed

    @case("the sandbox takes away what the unit takes away")
    def _():
        r = subprocess.run(sandbox + ["/usr/bin/python3", "-c", PROBE], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out == {"unshare": errno.EPERM, "inet": errno.EAFNOSUPPORT, "unix": 0,
                       "scm-rights": 0, "setaffinity": errno.EPERM, "write-usr": errno.EROFS,
                       "write-exec": errno.EPERM, "setuid-bit": errno.EPERM,
                       "personality": errno.EPERM, "umask": 0o077}, out

    @case("WorkerConfinement and vdiskctl status: the worker's user, Landlock, seccomp")
    def _():
        rc, out = run(BOB, "worker-confinement")
        assert rc == 0 and "error" not in out, out
        assert out.get("user") in ("vdisk", "nobody") and out.get("uid", 0) != 0, out
        assert out["no-new-privs"] is True and out["seccomp"] is True, out
        assert out["landlock-abi"] == kernel_landlock_abi(), (out, kernel_landlock_abi())
        r = subprocess.run(["runuser", "-u", BOB, "--", "env",
                            "DBUS_SYSTEM_BUS_ADDRESS=" + os.environ["DBUS_SYSTEM_BUS_ADDRESS"],
                            os.environ["VDISKCTL"], "status"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "as %s (uid %d)" % (out["user"], out["uid"]) in r.stdout, r.stdout
        assert "seccomp filter" in r.stdout and "no new privileges" in r.stdout, r.stdout
        if out["landlock-abi"]:
            assert "Landlock ABI %d" % out["landlock-abi"] in r.stdout, r.stdout

    @case("InspectFile")
    def _():
        rc, res = run(BOB, "inspect", src)
        assert rc == 0 and res["format"] == "qcow2" and res["virtual-size"] == 64 << 20, res

    @case("ConvertFile matches vdisk convert")
    def _():
        for fmt in ("raw", "qcow2"):
            out = os.path.join(t, "conv." + fmt)
            ref = os.path.join(t, "ref." + fmt)
            subprocess.run([os.environ["VDISK"], "convert", "-O", fmt, src, ref], check=True)
            rc, res = run(BOB, "convert-file", src, out, fmt)
            assert rc == 0 and res["success"], res
            r = qemu_img("compare", "-f", fmt, "-F", fmt, ref, out)
            assert r.returncode == 0, r.stdout + r.stderr

    assert run("root", "add-pool", "p", pool)[0] == 0
    vol = os.path.join(pool, "imported.qcow2")

    @case("ImportVolume of a qcow2")
    def _():
        rc, res = run(ALICE, "import", "p", src, "imported.qcow2", "qcow2")
        assert rc == 0 and res["success"], res
        r = qemu_img("compare", src, vol)
        assert r.returncode == 0, r.stdout + r.stderr
        assert qemu_img("check", vol).returncode == 0
        assert os.stat(vol).st_mode & 0o777 == 0o600

    @case("Clone of a pool volume")
    def _():
        rc, res = run(ALICE, "clone", "p", "imported.qcow2", "clone.qcow2", "qcow2")
        assert rc == 0 and res["success"], res
        r = qemu_img("compare", src, os.path.join(pool, "clone.qcow2"))
        assert r.returncode == 0, r.stdout + r.stderr

    @case("Resize of a pool volume")
    def _():
        rc, res = run(ALICE, "resize", "p", "clone.qcow2", 96 << 20)
        assert rc == 0 and res["success"], res
        info = json.loads(qemu_img("info", "--output=json", os.path.join(pool, "clone.qcow2"))
                          .stdout)
        assert info["virtual-size"] == 96 << 20, info
        assert qemu_img("check", os.path.join(pool, "clone.qcow2")).returncode == 0

    @case("Export of a pool volume to the caller's file")
    def _():
        out_dir = os.path.join(env.t, "alice")
        os.mkdir(out_dir)
        shutil.chown(out_dir, ALICE)
        out = os.path.join(out_dir, "export.raw")
        rc, res = run(ALICE, "export", "p", "imported.qcow2", out, "raw")
        assert rc == 0 and res["success"], res
        r = qemu_img("compare", "-f", "qcow2", "-F", "raw", src, out)
        assert r.returncode == 0, r.stdout + r.stderr

    @case("CopyFrom one pool volume into another")
    def _():
        rc, res = run(ALICE, "create", "p", "copy.qcow2", "qcow2", 64 << 20)
        assert rc == 0 and res["success"], res
        rc, res = run(ALICE, "copy-from", "p", "copy.qcow2", "p", "imported.qcow2")
        assert rc == 0 and res["success"], res
        r = qemu_img("compare", src, os.path.join(pool, "copy.qcow2"))
        assert r.returncode == 0, r.stdout + r.stderr

    @case("snapshots: create, revert, delete")
    def _():
        v = os.path.join(pool, "copy.qcow2")
        for what in ("CreateSnapshot", "RevertSnapshot", "DeleteSnapshot"):
            rc, res = run(ALICE, what, "p", "copy.qcow2", "s1")
            assert rc == 0, (what, res)
            listed = "s1" in qemu_img("snapshot", "-l", v).stdout
            assert listed == (what != "DeleteSnapshot"), (what, listed)
        assert qemu_img("check", v).returncode == 0
        assert qemu_img("compare", src, v).returncode == 0

    @case("CreateOverlay over a pool volume")
    def _():
        rc, res = run(ALICE, "overlay", "p", "imported.qcow2", "top.qcow2")
        assert rc == 0, res
        top = os.path.join(pool, "top.qcow2")
        info = json.loads(qemu_img("info", "--output=json", top).stdout)
        assert info.get("backing-filename") == "imported.qcow2", info
        r = qemu_img("compare", src, top)
        assert r.returncode == 0, r.stdout + r.stderr

    @case("Clone of an overlay reads its backing volume")
    def _():
        rc, res = run(ALICE, "clone", "p", "top.qcow2", "flat.raw", "raw")
        assert rc == 0 and res["success"], res
        r = qemu_img("compare", "-f", "qcow2", "-F", "raw", src, os.path.join(pool, "flat.raw"))
        assert r.returncode == 0, r.stdout + r.stderr

    @case("every job above ran in vdisk-worker, as an unprivileged user")
    def _():
        with open(os.path.join(env.t, "vdiskd.log")) as f:
            ran = re.findall(r"vdisk-worker \d+: (\w+), as (\S+) \(uid (\d+)\)", f.read())
        ops = {op for op, _, _ in ran}
        for op in ("describe", "info", "convert", "copy", "resize", "snapshot", "create"):
            assert op in ops, (op, sorted(ops))
        assert all(uid != "0" and user != "root" for _, user, uid in ran), ran

    if not TEST_HOOKS:
        print("# built without -Dtest_hooks=true: the killed and misbehaving workers are not "
              "tested")
        return

    @case("a worker killed mid-import: the job fails cleanly, no volume, vdiskd answers")
    def _():
        before = pool_files()
        p = subprocess.Popen(["runuser", "-u", ALICE, "--", "env",
                              "DBUS_SYSTEM_BUS_ADDRESS=" + os.environ["DBUS_SYSTEM_BUS_ADDRESS"],
                              "/usr/bin/python3", os.path.abspath(sys.argv[0]), "--client",
                              "import", "p", src, "killed.qcow2", "qcow2", "misbehave=hang"],
                             stdout=subprocess.PIPE, text=True)
        worker = new_worker(pid)
        # A worker is seen as soon as it starts, still root; it confines
        # itself before it reads the job (misbehave=hang then holds it).
        daemon_filters = int(status_of(pid)["Seccomp_filters"][0])
        try:
            st = confined_status(worker, pid)
            assert all(u != "0" for u in st["Uid"]) and st["NoNewPrivs"] == ["1"], st
            assert st["Seccomp"] == ["2"] and st["CapEff"] == ["0000000000000000"], st
            # its own filter on top of the unit's, which it inherited
            assert int(st["Seccomp_filters"][0]) == daemon_filters + 1, (st, daemon_filters)
        finally:
            os.kill(worker, signal.SIGKILL)
        res = json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1])
        assert not res["success"] and res["message"] == UNSAFE, res
        assert pool_files() == before, (before, pool_files())
        alive()

    nbd = all(shutil.which(p) for p in ("qemu-nbd", "nbdkit")) and os.access(VDISKCTL, os.X_OK)

    @case("vdiskctl import nbd://127.0.0.1:PORT/: vdiskd, on a network of its own, reads the "
          "export through the socket vdiskctl connected")
    def _():
        if not nbd:
            print("# no qemu-nbd, nbdkit or vdiskctl: NBD is not tested under the unit")
            return
        port = socket.socket()
        port.bind(("127.0.0.1", 0))
        number = port.getsockname()[1]
        port.close()
        pidfile = os.path.join(t, "qemu-nbd.pid")
        subprocess.run(["qemu-nbd", "--fork", "--persistent", "--pid-file=" + pidfile, "-r",
                        "-f", "qcow2", "-b", "127.0.0.1", "-p", str(number), src], check=True)
        with open(pidfile) as f:
            env.pids.append(int(f.read()))
        # PrivateNetwork: that address is not vdiskd's to reach.
        assert os.readlink("/proc/%d/ns/net" % pid) != os.readlink("/proc/self/ns/net")
        r = vdiskctl(ALICE, "import", "-q", "nbd://127.0.0.1:%d/" % number, "p/nbd.qcow2")
        assert r.returncode == 0, r.stderr
        r = qemu_img("compare", src, os.path.join(pool, "nbd.qcow2"))
        assert r.returncode == 0, r.stdout + r.stderr

    @case("an NBD import from a server that stalls is cancelled at once: vdiskd stops its worker")
    def _():
        if not nbd:
            return
        # Every read waits an hour: the worker sits in libnbd, waiting.
        stalled = os.path.join(t, "stalled.sock")
        pidfile = os.path.join(t, "nbdkit.pid")
        subprocess.run(["nbdkit", "-P", pidfile, "-U", stalled, "--filter=delay", "pattern",
                        "64M", "rdelay=3600"], check=True)
        for _ in range(100):
            if os.path.exists(pidfile) and os.path.getsize(pidfile) > 0:
                break
            time.sleep(0.05)
        with open(pidfile) as f:
            env.pids.append(int(f.read()))
        os.chmod(stalled, 0o666)
        pw = pwd.getpwnam(ALICE)
        p = subprocess.Popen(["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid,
                              "--init-groups", "env",
                              "DBUS_SYSTEM_BUS_ADDRESS=" + os.environ["DBUS_SYSTEM_BUS_ADDRESS"],
                              VDISKCTL, "import", "nbd+unix:///?socket=" + stalled,
                              "p/stalled.qcow2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
        new_worker(pid)
        time.sleep(1)  # in its first read, and vdiskctl catching SIGINT
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 1 and "cancel" in err, (p.returncode, err)
        assert not any("stalled" in n for n in pool_files()), pool_files()
        assert workers_of(pid) == []
        alive()

    @case("vdiskctl export-nbd under the unit: nbdkit serves the volume on the caller's socket")
    def _():
        if not nbd or not os.path.exists(PLUGIN):
            print("# no nbdkit, vdiskctl or plugin: export-nbd is not tested under the unit")
            return
        home = os.path.join(env.t, "alice-nbd")
        os.mkdir(home)
        shutil.chown(home, ALICE)
        sock = os.path.join(home, "s.sock")
        pw = pwd.getpwnam(ALICE)  # setpriv execs vdiskctl: the signal goes to it
        p = subprocess.Popen(["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid,
                              "--init-groups", "env",
                              "DBUS_SYSTEM_BUS_ADDRESS=" + os.environ["DBUS_SYSTEM_BUS_ADDRESS"],
                              VDISKCTL, "export-nbd", "p/imported.qcow2", "--readonly",
                              "--socket", sock],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
        try:
            line = p.stdout.readline()
            assert "Serving" in line, (line, p.stderr.read() if p.poll() is not None else "")
            deadline = time.monotonic() + 10  # until vdiskctl catches SIGINT
            while not int(status_of(p.pid)["SigCgt"][0], 16) & (1 << (signal.SIGINT - 1)):
                assert time.monotonic() < deadline, "vdiskctl never catches SIGINT"
                time.sleep(0.05)
            r = qemu_img("compare", "-f", "raw", "-F", "qcow2", "nbd+unix:///?socket=" + sock,
                         src)
            assert r.returncode == 0, r.stdout + r.stderr
        finally:
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=60)
        assert p.returncode == 0, (out, err)
        assert not os.path.exists(sock)
        alive()

    @case("an rbd pool under the unit is unavailable at once: no network, naming the drop-in")
    def _():
        # RestrictAddressFamilies=AF_UNIX: vdiskd says so before librados
        # would wait for a monitor (pools.d names one on 192.0.2.1).
        deadline = time.monotonic() + 10
        while True:
            r = vdiskctl(BOB, "pools", "--json")
            p = [x for x in json.loads(r.stdout) if x["name"] == "ceph"][0]
            if p["error"] != "connecting to the Ceph cluster" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert "vdiskd has no network" in p["error"], p
        assert "vdiskd-ceph.conf" in p["error"], p
        assert p["type"] == "rbd" and p["volumes"] == [], p
        alive()

    @case("a worker that tries a socket is killed by its own filter under the unit's")
    def _():
        out = os.path.join(t, "m.raw")
        rc, res = run(BOB, "convert-file", src, out, "raw", "misbehave=socket")
        assert rc == 4 and not res["success"] and res["message"] == UNSAFE, res
        assert os.path.getsize(out) == 0
        alive()


def start():
    if os.geteuid() == 0 and os.environ.get("VDISK_PRIVATE_NS") != "ready":
        return main(lambda env: None)  # re-executes this file in its own namespace
    for prog, why in ((SANDBOX, "no unit-sandbox (UNIT_SANDBOX)"),
                      (shutil.which("systemd-analyze"), "no systemd-analyze (package systemd)"),
                      (shutil.which("setpriv"), "no setpriv (util-linux)")):
        if not prog or not os.path.exists(prog):
            print("1..0 # SKIP " + why)
            return 77
    # G_MESSAGES_DEBUG: vdiskd logs each worker's operation and user
    env = Env(vdiskd_env={"VDISKD_TEST_HOOKS": "1", "G_MESSAGES_DEBUG": "vdiskd",
                          "VDISK_NBDKIT_PLUGIN": PLUGIN})
    try:
        folders = [os.path.join(env.t, "state"), os.path.join(env.t, "pool")]
        for d in folders:
            os.mkdir(d)
        sandbox, allowed = sandbox_args(read_unit(UNIT), syscall_groups(), env.t, env.t, folders)
    except RuntimeError as e:
        print("not ok - reproducing %s: %s" % (UNIT, e))
        shutil.rmtree(env.t, ignore_errors=True)
        return 1
    # A container that refuses the namespaces skips, as private-ns.sh does.
    r = subprocess.run(sandbox + ["/bin/true"], capture_output=True, text=True)
    if r.returncode == 77:
        print("1..0 # SKIP cannot reproduce the unit's sandbox here: " + r.stderr.strip())
        shutil.rmtree(env.t, ignore_errors=True)
        return 77
    # An rbd pool whose cluster the unit gives vdiskd no network to reach.
    conf = os.path.join(env.t, "conf")
    os.makedirs(conf, exist_ok=True)
    with open(os.path.join(env.t, "ceph.conf"), "w") as f:
        f.write("[global]\nmon_host = 192.0.2.1:6789\n")
    with open(os.path.join(env.t, "ceph.keyring"), "w") as f:
        f.write("[client.admin]\n\tkey = AQBzZXJ2ZXIAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n")
    with open(os.path.join(conf, "ceph.conf"), "w") as f:
        f.write("[Pool ceph]\nType=rbd\nSource=rbd\nConf=%s\nKeyring=%s\n"
                % (os.path.join(env.t, "ceph.conf"), os.path.join(env.t, "ceph.keyring")))
    env.wrap = sandbox
    rc = main(lambda e: tests(e, sandbox, allowed), env)
    shutil.rmtree(env.t, ignore_errors=True)  # when main skipped before starting env
    return rc


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2:], EXTRA)
    sys.exit(start())
