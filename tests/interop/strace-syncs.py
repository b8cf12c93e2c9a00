#!/usr/bin/python3
"""Check what a run made durable, from its trace.

The trace comes from `strace -f -y -s 0 -o TRACE -e trace=SYSCALLS`, where
SYSCALLS holds at least openat, the writes (pwrite64, pwritev, write,
ftruncate, fallocate, and copy_file_range and ioctl for copies inside the
kernel: the file copied into, a reflink's target), the syncs (fdatasync, fsync) and the renames
(rename, renameat, renameat2). -y names the file behind every descriptor,
so descriptors that came over D-Bus or were duplicated need no
bookkeeping. A file written under another name and renamed into place
counts under its final name; renaming into a folder is creating a file
there. Relative names in renames are taken from the current directory,
which must be the traced run's.

  strace-syncs.py TRACE synced FILE...    every FILE was written, and a
                                          successful fdatasync or fsync of
                                          it began after its last write
  strace-syncs.py TRACE created FILE...   every FILE was created (O_CREAT)
                                          and its folder got a successful
                                          fsync after that
  strace-syncs.py TRACE removed FILE...   every FILE was unlinked and its
                                          folder got a successful fsync
                                          after that
  strace-syncs.py TRACE unsynced FILE...  every FILE was written and never
                                          synced, nor its folder
  strace-syncs.py TRACE count FILE        print how many syncs FILE got

Exits 1 with a message naming the file when a check fails.
"""
import os
import re
import sys

RENAMES = {"rename", "renameat", "renameat2"}
WRITES = {"pwrite64", "pwritev", "pwritev2", "write", "writev", "ftruncate", "fallocate",
          "copy_file_range", "ioctl"}
SYNCS = {"fdatasync", "fsync"}
UNLINKS = {"unlink", "unlinkat"}

# "PID name(ARGS" up to the end, or up to " <unfinished ...>"
CALL = re.compile(r"^(\d+)\s+(\w+)\((.*)$")
RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>(.*)$")
FD_ARG = re.compile(r"^-?\d+<([^>]*)>")
# a rename's names: an optional "DIRFD<dir>, " before each quoted path
RENAME_ARG = re.compile(r'(?:\w+<([^>]*)>,\s*)?"([^"]*)"')
RESULT = re.compile(r"\)\s+=\s+(-?\d+)(?:<([^>]*)>)?")


def parse(trace):
    """Events in completion order: (index, start, name, path, ok, args).
    start is the index at which the call began (for a sync: it covers
    only writes completed before it)."""
    events = []
    pending = {}
    for n, line in enumerate(open(trace, errors="replace")):
        line = line.rstrip("\n")
        m = RESUMED.match(line)
        if m:
            pid, name, rest = m.groups()
            start, args = pending.pop(pid, (n, ""))
            full = args + rest
        else:
            m = CALL.match(line)
            if not m:
                continue
            pid, name, args = m.groups()
            if args.endswith("<unfinished ...>"):
                pending[pid] = (n, args[: -len("<unfinished ...>")])
                continue
            start, full = n, args
        r = RESULT.search(full)
        if r is None:
            continue
        ok = int(r.group(1)) >= 0
        if name == "openat":
            events.append((n, start, name, r.group(2), ok, full))
            continue
        if name in UNLINKS:
            names = [os.path.join(d or os.getcwd(), p) for d, p in RENAME_ARG.findall(full)[:1]]
            if names:
                events.append((n, start, name, real(names[0]), ok, full))
            continue
        if name in RENAMES:
            names = [os.path.join(d or os.getcwd(), p) for d, p in RENAME_ARG.findall(full)[:2]]
            if len(names) == 2:
                events.append((n, start, name, real(names[1]), ok, real(names[0])))
            continue
        if name == "copy_file_range":
            # the file written is the third argument
            fds = re.findall(r"-?\d+<([^>]*)>", full)
            if len(fds) >= 2:
                events.append((n, start, name, fds[1], ok, full))
            continue
        if name == "ioctl" and "FICLONE" not in full:
            continue  # only a reflink (FICLONE, FICLONERANGE) writes
        fd = FD_ARG.match(full)
        if fd is not None:
            events.append((n, start, name, fd.group(1), ok, full))
    return events


def real(path):
    return os.path.realpath(path)


def fail(msg):
    print(f"strace-syncs: {msg}", file=sys.stderr)
    sys.exit(1)


def names_of(events, path):
    """path, and every name renamed into it (or into one of those)"""
    names, todo = {path}, [path]
    while todo:
        p = todo.pop()
        for e in events:
            if e[2] in RENAMES and e[4] and e[3] == p and e[5] not in names:
                names.add(e[5])
                todo.append(e[5])
    return names


def writes_of(events, path):
    names = names_of(events, path)
    return [e for e in events if e[2] in WRITES and e[3] in names and e[4]]


def syncs_of(events, path):
    names = names_of(events, path)
    return [e for e in events if e[2] in SYNCS and e[3] in names and e[4]]


def check_synced(events, path):
    writes = writes_of(events, path)
    if not writes:
        fail(f"{path}: never written")
    last = max(e[0] for e in writes)
    if not any(e[1] > last for e in syncs_of(events, path)):
        fail(f"{path}: no fdatasync/fsync after its last write (line {last + 1} of the trace)")


def check_folder_synced_after(events, path, changes, verb):
    """path's folder got a successful fsync after the last of changes
    (events that created or removed path there)."""
    if not changes:
        fail(f"{path}: not {verb} by this run")
    last = max(e[0] for e in changes)
    folder = os.path.dirname(path)
    if not any(e[1] > last and e[2] == "fsync" for e in syncs_of(events, folder)):
        fail(f"{folder}: no fsync after {os.path.basename(path)} was {verb} there")


def check_created(events, path):
    names = names_of(events, path)
    creates = [e for e in events if e[2] == "openat" and e[3] in names and e[4] and "O_CREAT" in e[5]]
    creates += [e for e in events if e[2] in RENAMES and e[3] == path and e[4]]
    check_folder_synced_after(events, path, creates, "created")


def check_removed(events, path):
    removes = [e for e in events if e[2] in UNLINKS and e[3] == path and e[4]]
    check_folder_synced_after(events, path, removes, "removed")


def check_unsynced(events, path):
    if not writes_of(events, path):
        fail(f"{path}: never written")
    if syncs_of(events, path):
        fail(f"{path}: synced although no sync was asked for")
    if syncs_of(events, os.path.dirname(path)):
        fail(f"{os.path.dirname(path)}: folder synced although no sync was asked for")


def main():
    if len(sys.argv) < 4:
        fail("usage: strace-syncs.py TRACE synced|created|removed|unsynced|count FILE...")
    events = parse(sys.argv[1])
    what = sys.argv[2]
    for path in map(real, sys.argv[3:]):
        if what == "synced":
            check_synced(events, path)
        elif what == "created":
            check_created(events, path)
        elif what == "removed":
            check_removed(events, path)
        elif what == "unsynced":
            check_unsynced(events, path)
        elif what == "count":
            print(len(syncs_of(events, path)))
        else:
            fail(f"unknown check {what}")


if __name__ == "__main__":
    main()
