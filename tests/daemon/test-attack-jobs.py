#!/usr/bin/python3
"""vdiskd's jobs under attack: a plain user's hostile InspectFile must not
stall the main loop; a plain user's endless jobs must not starve root or the
privileged group, and past a per-user limit they get Busy; a job ends with
the client that started it unless that client detached; the systemd unit
sandboxes the daemon. Real dbus-daemon, polkitd and vdiskd (vdiskd_env.py);
needs root (exit 77 otherwise)."""
import json
import os
import pwd
import struct
import subprocess
import sys
import time

from vdiskd_env import (ALICE, BOB, BUS, IFACE, ROOT, SCRIPT, Env, case, client, main,
                        qemu_img, run)

# Small limits, so that the test reaches them quickly.
RUNNING, QUEUED = 2, 2


# ---------------------------------------------------------------- client side
def timed(ctx, a):
    """POOL VOLUME: how long GetManagedObjects, GetPools and a volume
    property Get take (the longest)."""
    from gi.repository import GLib
    t = time.monotonic()
    vol = ctx.vol(a[0], a[1])
    t0 = time.monotonic()
    ctx.call(ROOT + "/Manager", "Manager", "GetPools", "(a{sv})", [{}])
    t1 = time.monotonic()
    ctx.conn.call_sync("org.vdisk.VDisk1", vol, "org.freedesktop.DBus.Properties", "Get",
                       GLib.Variant("(ss)", (IFACE + "Volume", "VirtualSize")), None, 0, 60000,
                       None)
    t2 = time.monotonic()
    print(json.dumps({"objects": t0 - t, "get-pools": t1 - t0, "get": t2 - t1}))


def flood(ctx, a):
    """N SOURCE DIR: N ConvertFile calls of SOURCE into DIR/fK.qcow2 on one
    connection; print what each returned, then stay connected until killed."""
    from gi.repository import Gio, GLib
    results = []
    for k in range(int(a[0])):
        s = os.open(a[1], os.O_RDONLY)
        d = os.open(os.path.join(a[2], "f%d.qcow2" % k), os.O_RDWR | os.O_CREAT | os.O_TRUNC,
                    0o600)
        fdl = Gio.UnixFDList.new_from_array([s, d])
        try:
            res, _ = ctx.conn.call_with_unix_fd_list_sync(
                "org.vdisk.VDisk1", ROOT + "/Manager", IFACE + "Manager", "ConvertFile",
                GLib.Variant("(hhsa{sv})", (0, 1, "qcow2", {})), None, 0, 60000, fdl, None)
            results.append({"job": res.unpack()[0]})
        except GLib.Error as e:
            results.append({"error": Gio.DBusError.get_remote_error(e), "message": e.message})
    print(json.dumps(results))
    sys.stdout.flush()
    time.sleep(3600)


def flood_import(ctx, a):
    """N POOL SOURCE: N ImportVolume calls of SOURCE as fK.qcow2 on one
    connection; print the jobs, then stay connected until killed."""
    from gi.repository import Gio, GLib
    jobs = []
    for k in range(int(a[0])):
        fdl = Gio.UnixFDList.new_from_array([os.open(a[2], os.O_RDONLY)])
        res, _ = ctx.conn.call_with_unix_fd_list_sync(
            "org.vdisk.VDisk1", ROOT + "/pools/" + a[1], IFACE + "Pool", "ImportVolume",
            GLib.Variant("(hssa{sv})", (0, "f%d.qcow2" % k, "qcow2", {})), None, 0, 60000, fdl,
            None)
        jobs.append(res.unpack()[1])
    print(json.dumps(jobs))
    sys.stdout.flush()
    time.sleep(3600)


def import_job(ctx, a):
    """POOL SOURCE NAME FORMAT DETACH: ImportVolume; print the job and, with
    DETACH=hold, stay connected until killed; otherwise exit at once."""
    from gi.repository import GLib
    fd = os.open(a[1], os.O_RDONLY)
    opts = {"detach": GLib.Variant("b", True)} if a[4] == "detach" else {}
    v, j = ctx.call(ROOT + "/pools/" + a[0], "Pool", "ImportVolume", "(hssa{sv})",
                    [0, a[2], a[3], opts], [fd])
    print(json.dumps({"job": j, "volume": v}))
    sys.stdout.flush()
    if a[4] == "hold":
        time.sleep(3600)


def convert_states(ctx, a):
    """SRC DST: ConvertFile to qcow2; print the job and its State as the call
    returned, then wait for its end and add the States that PropertiesChanged
    carried for it, in order."""
    from gi.repository import GLib
    seen = {}

    def changed(c, s, path, i, n, args):
        props = args.unpack()[1]
        if "State" in props:
            seen.setdefault(path, []).append(props["State"])
    ctx.conn.signal_subscribe(BUS, "org.freedesktop.DBus.Properties", "PropertiesChanged", None,
                              IFACE + "Job", 0, changed)
    s = os.open(a[0], os.O_RDONLY)
    d = os.open(a[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    j = ctx.call(ROOT + "/Manager", "Manager", "ConvertFile", "(hhsa{sv})",
                 [0, 1, "qcow2", {}], [s, d])[0]
    state = ctx.conn.call_sync(BUS, j, "org.freedesktop.DBus.Properties", "Get",
                               GLib.Variant("(ss)", (IFACE + "Job", "State")), None, 0, 10000,
                               None).unpack()[0]
    print(json.dumps({"job": j, "state": state}))
    sys.stdout.flush()
    ctx.wait(j, {"states": seen})


def cancel(ctx, a):
    """JOB: cancel it."""
    ctx.call(a[0], "Job", "Cancel", "(a{sv})", [{}])
    print("{}")


def jobs(ctx, a):
    """Every exported job's State, Error and StartedByUID."""
    out = {}
    for path, ifs in ctx.objects().items():
        j = ifs.get(IFACE + "Job")
        if j:
            out[path] = {"state": j["State"], "error": j["Error"], "uid": j["StartedByUID"]}
    print(json.dumps(out))


EXTRA = {"timed": timed, "flood": flood, "flood-import": flood_import, "import-job": import_job,
         "jobs": jobs, "convert-states": convert_states, "cancel": cancel}


# ---------------------------------------------------------------- test side
def hostile_vdi(path):
    """A 1 MiB VDI whose block map claims 2^28 entries (1 GiB, sparse): its
    parse reads and checks the whole map."""
    qemu_img("create", "-q", "-f", "vdi", path, "1M")
    blocks = 1 << 28
    with open(path, "r+b") as f:
        f.seek(0x154)
        bmap = struct.unpack("<I", f.read(4))[0]
        f.seek(0x158)
        f.write(struct.pack("<I", bmap + blocks * 4))
        f.seek(0x180)
        f.write(struct.pack("<I", blocks))
        f.truncate(bmap + blocks * 4)
    os.chmod(path, 0o644)


def endless_qcow2(path, size="1T"):
    """A qcow2 of 2 MiB clusters whose every L2 entry names the same cluster
    of zeroes: tiny on disk, but a copy reads (and finds zero) all of it."""
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", path, size)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0 0 2M", path], check=True,
                   capture_output=True)
    with open(path, "r+b") as f:
        hdr = f.read(104)
        cluster = 1 << struct.unpack(">I", hdr[20:24])[0]
        l1_size = struct.unpack(">I", hdr[36:40])[0]
        l1_off = struct.unpack(">Q", hdr[40:48])[0]
        f.seek(l1_off)
        l1 = list(struct.unpack(">%dQ" % l1_size, f.read(8 * l1_size)))
        f.seek(l1[0] & 0x00fffffffffffe00)
        entry = f.read(8)
        # one L2 table, shared by every L1 entry, full of that entry
        for i in range(l1_size):
            l1[i] = l1[0]
        f.seek(l1_off)
        f.write(struct.pack(">%dQ" % l1_size, *l1))
        f.seek(l1[0] & 0x00fffffffffffe00)
        f.write(entry * (cluster // 8))
    os.chmod(path, 0o644)


def job_states(user="root"):
    rc, out = run(user, "jobs")
    assert rc == 0, out
    return out


def wait_state(job, states, seconds=20):
    """The job's state once it is one of states (None when unexported)."""
    for _ in range(int(seconds * 5)):
        s = job_states().get(job)
        if s is None or s["state"] in states:
            return s
        time.sleep(0.2)
    return job_states().get(job)


def spawn(argv, user="root"):
    """A client in the background (the client itself, not a runuser above
    it, so that killing it closes its connection)."""
    cmd = ["/usr/bin/python3", SCRIPT, "--client"] + [str(x) for x in argv]
    pw = pwd.getpwnam(user)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, user=pw.pw_uid,
                            group=pw.pw_gid, extra_groups=os.getgrouplist(user, pw.pw_gid),
                            env={"DBUS_SYSTEM_BUS_ADDRESS": os.environ["DBUS_SYSTEM_BUS_ADDRESS"],
                                 "PATH": os.environ.get("PATH", "/usr/bin:/bin")})


def start(argv, user="root"):
    """spawn, and wait for the client's first line (as JSON)."""
    p = spawn(argv, user)
    return p, json.loads(p.stdout.readline() or "null")


def stop(p):
    if p.poll() is None:
        p.kill()
    p.wait()


def tests(env):
    t = env.t
    pool = os.path.join(t, "pool")
    home = os.path.join(t, "home")
    os.makedirs(pool)
    os.makedirs(home)
    os.chmod(home, 0o777)
    bob_uid = pwd.getpwnam(BOB).pw_uid
    hostile = os.path.join(home, "hostile.vdi")
    hostile_vdi(hostile)
    endless = os.path.join(home, "endless.qcow2")
    endless_qcow2(endless)
    finite = os.path.join(home, "finite.qcow2")
    endless_qcow2(finite, "24G")
    bob_dir = os.path.join(home, "bob")
    os.makedirs(bob_dir)
    os.chown(bob_dir, bob_uid, -1)
    assert run("root", "add-pool", "p", pool)[0] == 0
    rc, out = run("root", "create", "p", "v.qcow2", "qcow2", 1 << 26)
    assert rc == 0, out
    small = os.path.join(home, "small.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", small, "64M")
    os.chmod(small, 0o644)

    @case("a plain user's InspectFile of a hostile file stops at the metadata bound, at once")
    def _():
        t0 = time.monotonic()
        rc, out = run(BOB, "inspect", hostile)
        took = time.monotonic() - t0
        assert rc == 3 and "over the limit" in out.get("message", ""), out
        assert took < 3, "took %.1f s" % took

    @case("InspectFile of hostile files parses off the main loop: others are answered at once")
    def _():
        # the same calls with nothing parsing: how slow this machine answers
        # now (a busy CI machine is slow for every call, not only these)
        idle = 0.0
        for _ in range(3):
            rc, out = run("root", "timed", "p", "v.qcow2")
            assert rc == 0, out
            idle = max(idle, out["objects"], out["get-pools"], out["get"])
        # root's opens have no metadata bound: these parses take seconds
        procs = [spawn(["inspect", hostile], "root") for _ in range(4)]
        try:
            time.sleep(1)
            worst, during = 0.0, 0
            for _ in range(6):
                rc, out = run("root", "timed", "p", "v.qcow2")
                assert rc == 0, out
                worst = max(worst, out["objects"], out["get-pools"], out["get"])
                # a measure counts only when a parse was going on
                during += any(p.poll() is None for p in procs)
                time.sleep(0.2)
            # a parse on the main loop would hold every call for seconds
            assert worst < 1.0 + 4 * idle, "the main loop stalled for %.1f s (%.2f s idle)" % (worst, idle)
            assert during > 0, "the parses ended too soon to tell"
        finally:
            # their parses hold bob's share until they end
            for p in procs:
                try:
                    p.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    stop(p)

    flooder = []

    @case("a plain user's jobs past the limit get Busy before anything is made")
    def _():
        p, out = start(["flood", RUNNING + QUEUED + 1, endless, bob_dir], BOB)
        flooder.append(p)
        assert isinstance(out, list), out
        assert all("job" in r for r in out[:RUNNING + QUEUED]), out
        last = out[RUNNING + QUEUED]
        assert last.get("error") == IFACE + "Error.Busy", last
        assert "too many jobs for uid %d (limit %d)" % (bob_uid, RUNNING + QUEUED) in \
            last["message"], last
        states = job_states()
        bobs = [j for j, s in states.items() if s["uid"] == bob_uid]
        assert len(bobs) == RUNNING + QUEUED, states
        # those past her running limit wait, and say so
        assert sorted(states[j]["state"] for j in bobs) == \
            ["queued"] * QUEUED + ["running"] * RUNNING, states

    @case("a plain user's endless jobs do not starve root or the privileged group")
    def _():
        assert flooder and flooder[0].poll() is None
        for user, name in (("root", "r1.qcow2"), (ALICE, "a1.qcow2")):
            t0 = time.monotonic()
            rc, out = run(user, "create", "p", name, "qcow2", 1 << 26)
            took = time.monotonic() - t0
            assert rc == 0 and out["success"], (user, out)
            assert took < 10, "%s's create took %.1f s" % (user, took)
        # alice and root may still start jobs beside bob's
        for user, name in (("root", "r2.qcow2"), (ALICE, "a2.qcow2")):
            rc, out = run(user, "convert-file", small, os.path.join(home, name), "qcow2")
            assert rc == 0 and out["success"], (user, out)

    @case("the flooding client killed: its jobs, running or waiting, end cancelled")
    def _():
        before = [j for j, s in job_states().items() if s["uid"] == bob_uid]
        assert len(before) == RUNNING + QUEUED, before
        stop(flooder[0])
        for j in before:
            s = wait_state(j, ("cancelled", "failed", "completed"), 10)
            assert s is not None and s["state"] == "cancelled", (j, s)
            assert "caller left" in s["error"], s
        # and bob may start again
        p, out = start(["flood", 1, finite, bob_dir], BOB)
        stop(p)
        assert "job" in out[0], out

    def bob_idle():
        """Wait until none of bob's jobs is queued or running."""
        for _ in range(100):
            if not [s for s in job_states().values()
                    if s["uid"] == bob_uid and s["state"] in ("queued", "running")]:
                return
            time.sleep(0.2)
        raise AssertionError("bob's jobs did not end: %r" % job_states())

    def bob_holds_his_slots():
        """A client of bob's holding RUNNING endless jobs, and their paths,
        once they run."""
        bob_idle()
        p, out = start(["flood", RUNNING, endless, bob_dir], BOB)
        assert isinstance(out, list) and all("job" in r for r in out), out
        held = [r["job"] for r in out]
        for j in held:
            s = wait_state(j, ("running",), 10)
            assert s is not None and s["state"] == "running", (j, s)
        return p, held

    medium = os.path.join(home, "medium.qcow2")
    endless_qcow2(medium, "2G")

    @case("a job past its user's slots is queued until one frees, then runs and completes")
    def _():
        p, held = bob_holds_his_slots()
        q = None
        try:
            q, out = start(["convert-states", medium, os.path.join(bob_dir, "queued.qcow2")],
                           BOB)
            assert out and out["state"] == "queued", out
            job = out["job"]
            time.sleep(1)
            assert job_states()[job]["state"] == "queued", job_states()
            vdiskctl = os.path.join(env.build, "tools", "vdiskctl")
            if os.path.exists(vdiskctl):
                r = subprocess.run([vdiskctl, "jobs"], capture_output=True, text=True)
                row = [x for x in r.stdout.splitlines()
                       if x.split()[:1] == [job.rsplit("/", 1)[1]]]
                assert row and row[0].split()[1:3] == ["convert", "queued"], r.stdout
            rc, res = run(BOB, "cancel", held[0])
            assert rc == 0, res
            s = wait_state(job, ("running", "completed"), 20)
            assert s is not None and s["state"] in ("running", "completed"), s
            res = json.loads(q.communicate(timeout=300)[0].strip().splitlines()[-1])
            assert res["success"], res
            assert res["states"].get(job) == ["running", "completed"], res
            assert job_states()[job]["state"] == "completed"
            assert qemu_img("compare", "-f", "qcow2", "-F", "qcow2", medium,
                            os.path.join(bob_dir, "queued.qcow2")).returncode == 0
        finally:
            if q is not None:
                stop(q)
            stop(p)

    @case("vdiskctl says a queued job waits for a slot, then shows its progress")
    def _():
        p, held = bob_holds_his_slots()
        c = None
        try:
            out = os.path.join(bob_dir, "ctl-queued.qcow2")
            log = os.path.join(t, "ctl-queued.out")
            vdiskctl = os.path.join(env.build, "tools", "vdiskctl")
            # script(1) gives vdiskctl a terminal, where it draws its bar
            c = subprocess.Popen(["runuser", "-u", BOB, "--", "env",
                                  "DBUS_SYSTEM_BUS_ADDRESS=" + os.environ["DBUS_SYSTEM_BUS_ADDRESS"],
                                  "script", "-qec", "%s convert -O qcow2 %s %s" %
                                  (vdiskctl, medium, out), "/dev/null"],
                                 stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                 stdin=subprocess.PIPE)  # open: at its end script types ^D
            queued = []
            for _ in range(100):
                queued = [j for j, s in job_states().items()
                          if s["uid"] == bob_uid and s["state"] == "queued"]
                if queued:
                    break
                time.sleep(0.2)
            assert queued, job_states()
            time.sleep(1)
            with open(log, errors="replace") as f:
                before = f.read()
            assert "queued, waiting for a free job slot" in before, before
            rc, res = run(BOB, "cancel", held[0])
            assert rc == 0, res
            c.stdin.close()
            assert c.wait(timeout=300) == 0, open(log, errors="replace").read()
            with open(log, errors="replace") as f:
                after = f.read()
            assert "100%" in after[len(before):], after
            assert qemu_img("compare", "-f", "qcow2", "-F", "qcow2", medium, out).returncode == 0
        finally:
            if c is not None:
                stop(c)
            stop(p)

    @case("a privileged user past the limit: CreateVolume gets Busy and makes no volume")
    def _():
        p, out = start(["flood-import", RUNNING + QUEUED, "p", endless], ALICE)
        try:
            assert isinstance(out, list) and len(out) == RUNNING + QUEUED, out
            rc, out = run(ALICE, "create", "p", "over.qcow2", "qcow2", 1 << 26)
            assert rc == 3 and out["error"] == IFACE + "Error.Busy", out
            assert not [f for f in os.listdir(pool) if "over" in f], os.listdir(pool)
            rc, out = run("root", "volume-props", "p", "over.qcow2")
            assert rc == 3 and out.get("error") == "no-volume", out
            # root is never limited
            rc, out = run("root", "create", "p", "root-too.qcow2", "qcow2", 1 << 26)
            assert rc == 0 and out["success"], out
        finally:
            stop(p)
        # her client gone, its imports are cancelled and leave nothing
        for _ in range(50):
            left = [f for f in os.listdir(pool) if f.startswith(("f", ".f"))]
            if not left:
                break
            time.sleep(0.2)
        assert not left, left

    @case("a client killed with SIGKILL mid-import: the job is cancelled, no volume is left")
    def _():
        p, out = start(["import-job", "p", endless, "gone.qcow2", "qcow2", "hold"], ALICE)
        try:
            assert "job" in out, out
            time.sleep(1)
            assert job_states()[out["job"]]["state"] == "running"
        finally:
            p.send_signal(9)
            p.wait()
        s = wait_state(out["job"], ("cancelled", "failed", "completed"), 10)
        assert s is not None and s["state"] == "cancelled", s
        time.sleep(0.5)
        assert not os.path.exists(os.path.join(pool, "gone.qcow2"))
        assert not [f for f in os.listdir(pool) if "gone" in f], os.listdir(pool)
        rc, out = run("root", "volume-props", "p", "gone.qcow2")
        assert rc == 3 and out.get("error") == "no-volume", out

    @case("a detached import outlives its client and completes")
    def _():
        rc, out = run(ALICE, "import-job", "p", finite, "kept.qcow2", "qcow2", "detach")
        assert rc == 0 and "job" in out, out
        s = wait_state(out["job"], ("cancelled", "failed", "completed"), 300)
        assert s is not None and s["state"] == "completed", s
        assert qemu_img("compare", "-f", "qcow2", "-F", "qcow2", finite,
                        os.path.join(pool, "kept.qcow2")).returncode == 0

    @case("vdiskctl --detach prints the job and leaves it to complete")
    def _():
        vdiskctl = os.path.join(env.build, "tools", "vdiskctl")
        if not os.path.exists(vdiskctl):
            print("# skipped: no %s in this build" % vdiskctl)
            return
        pw = pwd.getpwnam(ALICE)
        r = subprocess.run([vdiskctl, "import", "--detach", "--no-ask-password", finite,
                            "p/ctl.qcow2"], capture_output=True, text=True, user=pw.pw_uid,
                           group=pw.pw_gid, extra_groups=os.getgrouplist(ALICE, pw.pw_gid),
                           env={"DBUS_SYSTEM_BUS_ADDRESS": os.environ["DBUS_SYSTEM_BUS_ADDRESS"]})
        assert r.returncode == 0, r
        job = r.stdout.strip()
        assert job.startswith(ROOT + "/jobs/"), r.stdout
        s = wait_state(job, ("cancelled", "failed", "completed"), 300)
        assert s is not None and s["state"] == "completed", s
        assert os.path.exists(os.path.join(pool, "ctl.qcow2"))

    @case("a detach option that is no boolean is refused")
    def _():
        rc, out = run(ALICE, "create", "p", "d.qcow2", "qcow2", 1 << 26, "detach=maybe")
        assert rc == 3 and out["error"] == IFACE + "Error.InvalidArgument", out
        assert not os.path.exists(os.path.join(pool, "d.qcow2"))

    @case("the unit: 0077 umask, no devices, no homes, descriptor, task and memory bounds")
    def _():
        unit = os.path.join(env.build, "data", "vdiskd.service")
        keys = {}
        for line in open(unit):
            if "=" in line and not line.startswith("#"):
                k, v = line.strip().split("=", 1)
                keys.setdefault(k, v)
        assert keys.get("UMask") == "0077", keys
        assert keys.get("PrivateDevices") == "yes", keys
        assert keys.get("ProtectHome") == "yes", keys
        for k in ("LimitNOFILE", "TasksMax", "MemoryMax"):
            assert keys.get(k), (k, keys)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client(sys.argv[2:], EXTRA)
    sys.exit(main(tests, Env(vdiskd_args=["--max-jobs-per-user=%d" % RUNNING,
                                          "--max-queued-jobs-per-user=%d" % QUEUED])))
