"""data/vdisk-import.desktop: desktop-file-validate finds nothing to say;
it runs vdiskctl import-vm --notify on the one file picked; its MimeType
covers what shared-mime-info on this machine calls a .vdi, a .vmdk and an
.ova, and names no type that neither shared-mime-info nor VirtualBox's
and VMware's own packages define (a typo would hide the entry); the
desktop-entry hint of tools/notify.c names it. Usage: check-desktop.py
SOURCE_ROOT. Exit 77 (skip) without desktop-file-validate or the
shared-mime-info database."""
import configparser
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

MIME_XML = "/usr/share/mime/packages/freedesktop.org.xml"
NS = "{http://www.freedesktop.org/standards/shared-mime-info}"
# Types VirtualBox's (virtualbox.xml) and VMware's packages define, not
# shared-mime-info: a .vbox is application/xml, a .vmx text/plain without them.
FROM_HYPERVISORS = {"application/x-virtualbox-vbox", "application/x-virtualbox-ovf",
                    "application/x-vmware-vm"}


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
    known, by_glob = set(), {}
    for mt in ET.parse(MIME_XML).getroot().iter(NS + "mime-type"):
        names = [mt.get("type")] + [a.get("type") for a in mt.iter(NS + "alias")]
        known.update(names)
        for g in mt.iter(NS + "glob"):
            by_glob.setdefault(g.get("pattern"), set()).update(names)
    unknown = [t for t in types if t not in known and t not in FROM_HYPERVISORS]
    check(not unknown, "every MimeType is defined somewhere (unknown: %s)" % unknown)
    for glob in ("*.vdi", "*.vmdk", "*.ova"):
        check(bool(by_glob.get(glob, set()) & set(types)),
              "%s (%s) is in MimeType" % (glob, sorted(by_glob.get(glob, []))))
    check("application/x-virtualbox-vbox" in types, "a VirtualBox VM's .vbox is in MimeType")

    with open(os.path.join(root, "tools", "notify.c")) as f:
        hint = '#define DESKTOP_ENTRY "vdisk-import"' in f.read()
    check(hint, "tools/notify.c's desktop-entry hint names vdisk-import")
    print("# %d failed" % len(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
