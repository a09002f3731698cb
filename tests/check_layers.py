#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""
The source tree's rooms and the direction of their arrows (README: "The source tree"), checked.

Every room of src/ (and qmp/, netfilter/) has a rank; a room may use only rooms of a lower rank.
Checked two ways, so neither a stray #include nor an extern declaration slips through:
  1. includes: '#include "room/x.h"' in a room's .c/.h names itself or a lower room; a header
     named *_internal.h is included only inside its own room;
  2. symbols: every undefined symbol of a room's objects (nm) that another room defines is
     defined in a lower room; and no cycle of files spans two rooms.
cli/ and shim/ are programs at the top; api/ is the public library over everything below.

Usage: check_layers.py BUILD_DIR   (the objects of BUILD_DIR/obj; exit 1 on any violation)
"""
import collections
import glob
import os
import re
import subprocess
import sys

# Lowest first. guest-init/proto.h is the guest protocol, shared by host and guest: anyone may
# include it (it is the one header of guest-init/ the host sees).
RANKS = ["base", "qmp", "netfilter", "state", "obs", "image", "jail", "spec", "net", "vm",
         "control", "snapshot", "report", "pool", "api", "cli", "shim"]
TOP = {"cli", "shim"}  # programs: may use any room, nothing uses them
SHARED_HEADERS = {"guest-init/proto.h", "include/agentvm.h"}


def room_of(path):
    parts = path.split("/")
    if parts[0] == "src":
        return parts[1]
    return parts[0]


def rank(room):
    return RANKS.index(room) if room in RANKS else None


def sources():
    files = glob.glob("src/*/*.[ch]") + glob.glob("qmp/*.[ch]") + glob.glob("netfilter/*.[ch]")
    return sorted(f for f in files if room_of(f) not in ("gen", "include"))


def check_includes(errors):
    inc = re.compile(r'^\s*#\s*include\s+"([a-z-]+)/([a-z0-9_]+\.h)"', re.M)
    for f in sources():
        me = room_of(f)
        with open(f) as fh:
            text = fh.read()
        for room, header in inc.findall(text):
            name = room + "/" + header
            if room == me or name in SHARED_HEADERS:
                continue
            if header.endswith("_internal.h"):
                errors.append(f"{f}: includes {name}, another room's internal header")
                continue
            if me in TOP:
                continue
            if rank(room) is None or rank(me) is None:
                errors.append(f"{f}: includes {name}: room '{room}' or '{me}' has no rank "
                              "(add it to RANKS in tests/check_layers.py and to the README map)")
            elif rank(room) > rank(me):
                errors.append(f"{f}: includes {name}, but {me}/ is below {room}/ "
                              f"({' < '.join(RANKS)})")


def nm(obj, args):
    out = subprocess.run(["nm"] + args + [obj], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def check_symbols(build, errors):
    objs = {}
    for f in sources():
        if f.endswith(".c"):
            o = os.path.join(build, "obj", f[:-2] + ".o")
            if not os.path.exists(o):
                errors.append(f"{o}: missing (build first: make)")
                continue
            objs[f[:-2]] = o
    defined, used = {}, collections.defaultdict(set)
    for name, o in objs.items():
        for line in nm(o, ["--defined-only", "-g"]):
            p = line.split()
            if len(p) == 3:
                defined[p[2]] = name
        for line in nm(o, ["-u"]):
            used[name].add(line.split()[-1])
    edges = collections.defaultdict(set)
    for name, syms in used.items():
        me = room_of(name)
        for s in sorted(syms):
            owner = defined.get(s)
            if not owner or owner == name:
                continue
            edges[name].add(owner)
            them = room_of(owner)
            if them == me or me in TOP:
                continue
            if them in TOP:
                errors.append(f"{name}.c calls {s} of {owner}.c: nothing calls into a program")
            elif rank(them) > rank(me):
                errors.append(f"{name}.c calls {s} of {owner}.c, but {me}/ is below {them}/")
    # Cycles of files across rooms (Tarjan), reported even where ranks were skipped (TOP).
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(comp)

    sys.setrecursionlimit(100000)
    for v in list(objs):
        if v not in index:
            visit(v)
    for comp in sccs:
        if len({room_of(f) for f in comp}) > 1:
            errors.append("files call each other in a circle across rooms: " +
                          ", ".join(sorted(f + ".c" for f in comp)))
    return len(objs), sum(len(v) for v in edges.values())


def main():
    if len(sys.argv) != 2:
        print("usage: check_layers.py BUILD_DIR", file=sys.stderr)
        return 2
    errors = []
    check_includes(errors)
    n_files, n_edges = check_symbols(sys.argv[1], errors)
    for e in errors:
        print("FAIL", e)
    if errors:
        return 1
    print(f"ok layers: {n_files} files, {n_edges} calls between files, rooms "
          f"{' < '.join(RANKS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
