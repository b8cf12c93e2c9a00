#!/usr/bin/env bash
# Install what is missing, build, and run every test suite (meson test).
# Extra arguments go to meson test, e.g. ./test.sh --suite unit
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
source scripts/deps.sh
vdisk_install_deps
vdisk_build

rc=0
meson test -C build --print-errorlogs --num-processes 2 "$@" || rc=$?

# One closing line that any CI reads: N passed, M failed. The status is
# meson test's alone: a summary that cannot be made changes nothing.
/usr/bin/python3 - build/meson-logs/testlog.json <<'PY' || echo "(no summary: meson test wrote no log)" >&2
import json, sys
passed = failed = skipped = 0
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif r == "SKIP":
        skipped += 1
    else:
        failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
exit $rc
