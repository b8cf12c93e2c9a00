"""data/vdisk-import.desktop: desktop-file-validate finds nothing to say;
it runs vdiskctl import-vm --notify on the one file picked; its MimeType
covers what shared-mime-info on this machine calls a .vdi, a .vmdk and an
.ova, and names no type that neither shared-mime-info nor vdisk's own
data/vdisk-mime.xml defines (a typo would hide the entry); with
data/vdisk-mime.xml added to a private copy of the MIME database, GIO
tells a .vbox, a .vmx and an .ovf by name, and a .vbox and a .vmx by
content alone; the desktop-entry hint of tools/notify.c names it. Usage: check-desktop.py
SOURCE_ROOT. Exit 77 (skip) without desktop-file-validate or the
shared-mime-info database."""
import configparser
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

MIME_XML = "/usr/share/mime/packages/freedesktop.org.xml"
NS = "{http://www.freedesktop.org/standards/shared-mime-info}"

# A VM's settings files as the hypervisors write them (heads only), and the
# type each must get: by name, and with no name to go by.
SAMPLES = {
    "vm.vbox": ('<?xml version="1.0"?>\n<VirtualBox xmlns="http://www.innotek.de/'
                'VirtualBox-settings" version="1.19-linux">\n<Machine name="vm"/>\n'
                '</VirtualBox>\n', "application/x-virtualbox-vbox"),
    "vm.vmx": ('.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "19"\n',
               "application/x-vmware-vm"),
    "vm.ovf": ('<?xml version="1.0"?>\n<Envelope xmlns="http://schemas.dmtf.org/ovf/'
               'envelope/1"/>\n', "application/x-virtualbox-ovf"),
}


def mime_types(xml_path):
    """The types (and aliases) xml_path defines, and its globs' types."""
    known, by_glob = set(), {}
    for mt in ET.parse(xml_path).getroot().iter(NS + "mime-type"):
        names = [mt.get("type")] + [a.get("type") for a in mt.iter(NS + "alias")]
        known.update(names)
        for g in mt.iter(NS + "glob"):
            by_glob.setdefault(g.get("pattern"), set()).update(names)
    return known, by_glob


def sniffed_types(ours):
    """What GIO calls each sample, by name and by content alone, with a
    private MIME database of shared-mime-info's types and ours."""
    with tempfile.TemporaryDirectory() as tmp:
        packages = os.path.join(tmp, "share", "mime", "packages")
        os.makedirs(packages)
        shutil.copy(MIME_XML, packages)
        shutil.copy(ours, os.path.join(packages, "vdisk.xml"))
        subprocess.run(["update-mime-database", os.path.join(tmp, "share", "mime")],
                       check=True, capture_output=True)
        env = dict(os.environ, XDG_DATA_DIRS=os.path.join(tmp, "share"),
                   XDG_DATA_HOME=os.path.join(tmp, "home"))
        found = {}
        for name, (text, _) in SAMPLES.items():
            for label in (name, "no-extension-" + name.replace(".", "-")):
                path = os.path.join(tmp, label)
                with open(path, "w") as f:
                    f.write(text)
                r = subprocess.run(["gio", "info", "-a", "standard::content-type", path],
                                   capture_output=True, text=True, env=env)
                found[label] = r.stdout.rsplit(":", 1)[-1].strip()
        return found


def main(root):
    validate = shutil.which("desktop-file-validate")
    if validate is None:
        print("1..0 # SKIP desktop-file-validate is missing (package desktop-file-utils)")
        return 77
    if not os.path.exists(MIME_XML):
        print("1..0 # SKIP %s is missing (package shared-mime-info)" % MIME_XML)
        return 77
    path = os.path.join(root, "data", "vdisk-import.desktop")
    failed = []

    def check(ok, what):
        print(("ok - " if ok else "not ok - ") + what)
        if not ok:
            failed.append(what)

    r = subprocess.run([validate, path], capture_output=True, text=True)
    check(r.returncode == 0 and not (r.stdout + r.stderr).strip(),
          "desktop-file-validate: %s" % ((r.stdout + r.stderr).strip() or "clean"))

    entry = configparser.ConfigParser(interpolation=None, strict=True)
    entry.optionxform = str
    entry.read(path)
    e = entry["Desktop Entry"]
    check(e.get("Exec") == "vdiskctl import-vm --notify %f", "Exec: " + e.get("Exec", ""))
    check(e.get("Terminal") == "false", "no terminal: notifications say how it went")

    types = [t for t in e.get("MimeType", "").split(";") if t]
    ours = os.path.join(root, "data", "vdisk-mime.xml")
    known, by_glob = mime_types(MIME_XML)
    our_known, our_globs = mime_types(ours)
    unknown = [t for t in types if t not in known | our_known]
    check(not unknown, "every MimeType is defined by shared-mime-info or data/vdisk-mime.xml "
          "(unknown: %s)" % unknown)
    check(not our_known & known, "data/vdisk-mime.xml redefines no shared-mime-info type "
          "(%s)" % sorted(our_known & known))
    for glob, names in our_globs.items():
        by_glob.setdefault(glob, set()).update(names)
    for glob in ("*.vdi", "*.vmdk", "*.ova"):
        check(bool(by_glob.get(glob, set()) & set(types)),
              "%s (%s) is in MimeType" % (glob, sorted(by_glob.get(glob, []))))
    for glob in ("*.vbox", "*.vmx", "*.ovf"):
        check(bool(by_glob.get(glob, set()) & set(types)),
              "%s (%s) is in MimeType" % (glob, sorted(by_glob.get(glob, []))))

    if shutil.which("gio") is None or shutil.which("update-mime-database") is None:
        print("# gio or update-mime-database is missing: the types are not sniffed")
    else:
        found = sniffed_types(ours)
        for name, (_, want) in SAMPLES.items():
            check(found[name] == want, "GIO calls %s %s (%s)" % (name, want, found[name]))
            if not name.endswith(".ovf"):  # an .ovf is only told by its name
                label = "no-extension-" + name.replace(".", "-")
                check(found[label] == want,
                      "GIO calls %s by its content %s (%s)" % (name, want, found[label]))

    with open(os.path.join(root, "tools", "notify.c")) as f:
        hint = '#define DESKTOP_ENTRY "vdisk-import"' in f.read()
    check(hint, "tools/notify.c's desktop-entry hint names vdisk-import")
    print("# %d failed" % len(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
