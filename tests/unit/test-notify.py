"""tools/notify.c against a notification service made here: a private
session bus (dbus-daemon with no service activation, so no real
notification daemon can start) and an org.freedesktop.Notifications
object in this process that records every Notify. Checks the progress
notifications (one id, replaced in place; the "value" hint; a percentage
sent once), the final result (category, urgency, body, no "value"), and
that without a service, without a session bus, or with a service that
never answers, the job goes on silently. Run by meson with NOTIFY_DRIVER
set; exit 77 (skip) without dbus-daemon or python3-gi."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

try:
    from gi.repository import Gio, GLib
except ImportError:
    print("1..0 # SKIP python3-gi is missing")
    sys.exit(77)

DRIVER = os.environ.get("NOTIFY_DRIVER", "")
XML = """<node><interface name="org.freedesktop.Notifications">
<method name="Notify"><arg type="s" direction="in"/><arg type="u" direction="in"/>
<arg type="s" direction="in"/><arg type="s" direction="in"/><arg type="s" direction="in"/>
<arg type="as" direction="in"/><arg type="a{sv}" direction="in"/><arg type="i" direction="in"/>
<arg type="u" direction="out"/></method>
<method name="GetCapabilities"><arg type="as" direction="out"/></method>
<method name="CloseNotification"><arg type="u" direction="in"/></method>
<method name="GetServerInformation"><arg type="s" direction="out"/><arg type="s" direction="out"/>
<arg type="s" direction="out"/><arg type="s" direction="out"/></method>
</interface></node>"""
BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:path=%s</listen><auth>EXTERNAL</auth>
<policy context="default"><allow send_destination="*" eavesdrop="true"/>
<allow eavesdrop="true"/><allow own="*"/></policy></busconfig>"""

# The daemon tests' case runner: each case reported, every case run.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "daemon"))
from vdiskd_env import FAILED, case  # noqa: E402


class Service:
    """org.freedesktop.Notifications on conn; hang: never answer Notify."""

    def __init__(self, conn, hang=False):
        self.calls, self.next_id, self.hang, self.held = [], 40, hang, []
        node = Gio.DBusNodeInfo.new_for_xml(XML)
        self.reg = conn.register_object("/org/freedesktop/Notifications", node.interfaces[0],
                                        self.method, None, None)
        self.conn = conn
        self.owner = Gio.bus_own_name_on_connection(conn, "org.freedesktop.Notifications",
                                                    Gio.BusNameOwnerFlags.NONE, None, None)
        # Until the bus says the name is ours, a client could find no owner.
        ctx = GLib.MainContext.default()
        for _ in range(200):
            r = conn.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus",
                               "org.freedesktop.DBus", "NameHasOwner",
                               GLib.Variant("(s)", ("org.freedesktop.Notifications",)),
                               None, 0, 1000, None).unpack()[0]
            if r:
                break
            ctx.iteration(False)
            time.sleep(0.01)

    def method(self, conn, sender, path, iface, name, params, inv):
        if name == "Notify":
            app, replaces, icon, summary, body, actions, hints, expire = params.unpack()
            self.calls.append({"app": app, "replaces": replaces, "icon": icon,
                               "summary": summary, "body": body, "hints": hints,
                               "expire": expire})
            if self.hang:
                self.held.append(inv)  # never answered
                return
            if replaces == 0:
                self.next_id += 1
                replaces = self.next_id
            inv.return_value(GLib.Variant("(u)", (replaces,)))
        elif name == "GetCapabilities":
            inv.return_value(GLib.Variant("(as)", (["body"],)))
        elif name == "GetServerInformation":
            inv.return_value(GLib.Variant("(ssss)", ("test", "vdisk", "1", "1.2")))
        else:
            inv.return_value(None)

    def close(self):
        Gio.bus_unown_name(self.owner)
        self.conn.unregister_object(self.reg)


def run_driver(env, *args):
    """Run the driver while this process's main loop serves the bus; its
    (rc, stdout, stderr, seconds)."""
    return run_program(env, [DRIVER] + list(args))


def run_program(env, argv):
    """Run argv with env while this process's main loop serves the bus."""
    loop = GLib.MainLoop()
    launcher = Gio.SubprocessLauncher.new(Gio.SubprocessFlags.STDOUT_PIPE |
                                          Gio.SubprocessFlags.STDERR_PIPE)
    launcher.set_environ(["%s=%s" % kv for kv in env.items()])
    start = time.monotonic()
    proc = launcher.spawnv(argv)
    result = {}

    def done(p, res):
        ok, out, err = p.communicate_utf8_finish(res)
        result.update(out=out, err=err)
        loop.quit()
    proc.communicate_utf8_async(None, None, done)
    GLib.timeout_add_seconds(30, loop.quit)
    loop.run()
    return proc.get_exit_status(), result.get("out", ""), result.get("err", ""), \
        time.monotonic() - start


def session_bus(folder):
    """A private session bus with its socket in folder, without service
    activation: (its dbus-daemon, its address, a connection to it)."""
    conf = os.path.join(folder, "bus.conf")
    with open(conf, "w") as f:
        f.write(BUS_CONF % os.path.join(folder, "bus"))
    daemon = subprocess.Popen(["dbus-daemon", "--config-file=" + conf, "--nofork",
                               "--print-address"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    address = daemon.stdout.readline().strip()
    conn = Gio.DBusConnection.new_for_address_sync(
        address, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT |
        Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
    return daemon, address, conn


def main():
    if not DRIVER or not os.access(DRIVER, os.X_OK):
        print("1..0 # SKIP NOTIFY_DRIVER is not set to the built notify-driver")
        return 77
    if shutil.which("dbus-daemon") is None:
        print("1..0 # SKIP dbus-daemon is missing (package dbus)")
        return 77
    t = tempfile.mkdtemp(prefix="vdisk-notify.")
    daemon, address, conn = session_bus(t)
    try:
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "DBUS_SESSION_BUS_ADDRESS": address}
        tests(conn, base, t)
    finally:
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(t, ignore_errors=True)
    print("# %d failed" % len(FAILED))
    return 1 if FAILED else 0


def tests(conn, base, t):
    @case("progress replaces one notification; each percentage once, as the value hint")
    def _():
        s = Service(conn)
        try:
            rc, out, err, _ = run_driver(base, "Importing MyVM.vdi", "1000",
                                         "0", "50", "52", "500", "1000", "--", "ok",
                                         "Imported MyVM.vdi as default/MyVM.qcow2")
        finally:
            s.close()
        assert rc == 0 and out.strip() == "active" and err == "", (rc, out, err)
        progress, final = s.calls[:-1], s.calls[-1]
        # 50 and 52 bytes of 1000 are both 5%: sent once
        assert [c["hints"]["value"] for c in progress] == [0, 5, 50, 100], s.calls
        assert [c["body"] for c in progress] == ["0%", "5%", "50%", "100%"], s.calls
        assert progress[0]["replaces"] == 0, progress[0]
        assert all(c["replaces"] == 41 for c in s.calls[1:]), s.calls
        for c in progress:
            assert c["summary"] == "Importing MyVM.vdi" and c["app"] == "vdiskctl", c
            assert c["hints"]["category"] == "transfer" and c["expire"] == 0, c
            assert c["hints"]["desktop-entry"] == "vdisk-import", c
        assert final["body"] == "Imported MyVM.vdi as default/MyVM.qcow2", final
        assert final["summary"] == "Importing MyVM.vdi", final
        assert "value" not in final["hints"], final
        assert final["hints"]["category"] == "transfer.complete", final
        assert final["hints"]["urgency"] == 1 and final["expire"] == -1, final

    @case("a failure is the final notification: transfer.error, critical")
    def _():
        s = Service(conn)
        try:
            rc, out, err, _ = run_driver(base, "Importing MyVM.vbox", "100", "10", "--", "fail",
                                         "caller's source file looks like a VirtualBox VM's "
                                         "settings (.vbox), not a disk")
        finally:
            s.close()
        assert rc == 0 and out.strip() == "active", (rc, out, err)
        assert len(s.calls) == 2, s.calls
        final = s.calls[1]
        assert final["replaces"] == s.next_id, final
        assert final["hints"]["category"] == "transfer.error", final
        assert final["hints"]["urgency"] == 2, final
        assert final["body"].startswith("caller's source file looks like"), final

    @case("updates faster than four a second are dropped, but 100% always goes")
    def _():
        s = Service(conn)
        try:
            steps = [str(i) for i in range(0, 101)]
            rc, out, err, _ = run_driver(base, "Importing", "100", "-fast", *steps,
                                         "--", "ok", "done")
        finally:
            s.close()
        assert rc == 0 and out.strip() == "active", (rc, out, err)
        values = [c["hints"]["value"] for c in s.calls[:-1]]
        assert values[0] == 0 and values[-1] == 100 and len(values) <= 5, values

    @case("no notification service on the bus: nothing said, the job goes on")
    def _():
        rc, out, err, secs = run_driver(base, "Importing", "100", "50", "--", "ok", "done")
        assert rc == 0 and out.strip() == "inactive" and err == "", (rc, out, err)
        assert secs < 5, secs

    @case("no session bus at all: nothing said, none started")
    def _():
        empty = os.path.join(t, "runtime")
        os.mkdir(empty, 0o700)
        env = {"PATH": base["PATH"], "XDG_RUNTIME_DIR": empty, "DISPLAY": ":99"}
        rc, out, err, secs = run_driver(env, "Importing", "100", "50", "--", "ok", "done")
        assert rc == 0 and out.strip() == "inactive" and err == "", (rc, out, err)
        assert secs < 5, secs

    @case("a service that never answers costs one timeout, then is left alone")
    def _():
        s = Service(conn, hang=True)
        try:
            rc, out, err, secs = run_driver(base, "Importing", "100", "-fast", "0", "50", "100",
                                            "--", "ok", "done")
        finally:
            s.close()
        assert rc == 0 and out.strip() == "inactive" and err == "", (rc, out, err)
        assert len(s.calls) == 1, s.calls
        assert secs < 8, secs


if __name__ == "__main__":
    sys.exit(main())
