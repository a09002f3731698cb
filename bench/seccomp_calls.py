#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# usage: seccomp_calls.py TRACE... (strace -f -o files of agentvm commands): the system calls QEMU
# made, with counts and errors, and the arguments of the calls the filter checks.
import re,sys,collections

pat=re.compile(r'^(\d+) +(?:<\.\.\. (\w+) resumed>|(\w+)\()(.*)$')
calls=collections.Counter(); args=collections.defaultdict(collections.Counter); res=collections.defaultdict(collections.Counter)
for f in sys.argv[1:]:
    lines=[pat.match(l) for l in open(f, errors='replace')]
    lines=[(int(m.group(1)), m.group(2) or m.group(3), bool(m.group(3)), m.group(4)) for m in lines if m]
    execat={}; kids=collections.defaultdict(list)
    for i,(pid,name,start,rest) in enumerate(lines):
        if start and name=='execve' and 'qemu-system' in rest.split(',')[0]: execat[pid]=i
        r=re.search(r'= (\d+)$', rest.strip())
        if name in ('clone','clone3','fork','vfork') and r: kids[pid].append(int(r.group(1)))
    # QEMU's threads are in its pid namespace: their clone returns no host pid. Everything not
    # reachable from agentvm's first process through host pids is QEMU's.
    root=lines[0][0]; host={root}; todo=[root]
    while todo:
        p=todo.pop()
        for k in kids[p]:
            if k not in host and k not in execat: host.add(k); todo.append(k)
    qemu=set(p for p,_,_,_ in lines) - host
    for i,(pid,name,start,rest) in enumerate(lines):
        if pid not in qemu or (pid in execat and i<=execat[pid]): continue
        if not start:
            r=re.search(r'= (-?\d+|\?)( (E[A-Z]+))?', rest)
            if r and r.group(3): res[name][r.group(3)]+=1
            continue
        calls[name]+=1
        r=re.search(r'\) += (-?\d+)( (E[A-Z]+))?', rest)
        if r and r.group(3): res[name][r.group(3)]+=1
        if name in ('clone','socket','prctl','fcntl','ioctl','socketpair','setsockopt','getsockopt','futex','seccomp','madvise','mmap','mprotect','openat'):
            parts=rest.split(', ')
            a={'clone':[x for x in parts if x.startswith('flags')][:1], 'socket':parts[:2], 'socketpair':parts[:2], 'prctl':parts[:1], 'seccomp':parts[:1]}.get(name, parts[1:2] if name not in('mmap','mprotect') else parts[2:3])
            if name=='openat': a=[x for x in parts if x.startswith('O_')][:1]
            args[name][' '.join(a)[:90]]+=1
for k,v in sorted(calls.items()): print(k,v, dict(res[k]) if res[k] else '')
print('----')
for k,v in args.items(): print(k, dict(v))
