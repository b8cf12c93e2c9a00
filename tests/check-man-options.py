#!/usr/bin/env python3
"""vdisk(1), as built, renders without groff warnings and names every option
that 'vdisk help COMMAND' lists, in that command's subsection.

Usage: check-man-options.py VDISK BUILT_MAN_PAGE
"""
import re
import subprocess
import sys

vdisk, page = sys.argv[1:3]
warnings = subprocess.run(["groff", "-man", "-ww", "-z", page], capture_output=True, text=True)
if warnings.stderr.strip():
    sys.exit(f"{page}: groff warns:\n{warnings.stderr}")
text = subprocess.run(["groff", "-man", "-Tutf8", "-P-cbou", page], capture_output=True,
                      text=True, check=True, env={"MANWIDTH": "200", "PATH": "/usr/bin:/bin"}).stdout
text = text.replace("\u2010", "-").replace("\u2212", "-")

listing = subprocess.run([vdisk, "help"], capture_output=True, text=True).stdout
names = []
inside = False
for line in listing.splitlines():
    if line == "Commands:":
        inside = True
    elif inside and not line.strip():
        break
    elif inside and line.split()[0] != "help":
        names.append(line.split()[0])
if len(names) < 10:
    sys.exit(f"'vdisk help' lists only {names}")

missing = []
for i, name in enumerate(names):
    start = re.search(rf"^   {re.escape(name)}$", text, re.M)
    if not start:
        missing.append(f"{name}: no subsection")
        continue
    end = re.search(rf"^   {re.escape(names[i + 1])}$", text[start.end():], re.M) if i + 1 < len(names) else None
    section = text[start.end(): start.end() + end.start()] if end else text[start.end():]
    helptext = subprocess.run([vdisk, "help", name], capture_output=True, text=True)
    helptext = helptext.stdout or helptext.stderr
    options = set(re.findall(r"^ {2}(--?[A-Za-z][-\w]*)", helptext, re.M))
    for option in sorted(options):
        if not re.search(rf"(?<![-\w]){re.escape(option)}(?![-\w])", section):
            missing.append(f"{name}: {option}")
print(f"{len(names)} commands checked")
if missing:
    sys.exit("vdisk(1) lacks:\n  " + "\n  ".join(missing))
