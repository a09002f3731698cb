#!/bin/sh
# The system calls QEMU makes on every path agentvm drives, measured with strace -f (run as root,
# in a network namespace like the integration tests; see bench/RESULTS.md "seccomp allowlist").
# Then: python3 bench/seccomp_calls.py OUTDIR/tr.*
set -u
A=${1:?usage: seccomp_measure.sh AGENTVM OUTDIR}
O=${2:?usage: seccomp_measure.sh AGENTVM OUTDIR}
mkdir -p "$O"
T=$(mktemp -d /tmp/avm-seccomp.XXXXXX)
export AGENTVM_STATE_DIR=$T/state AGENTVM_CACHE_DIR=$T/cache AGENTVM_SNAPSHOT_DIR=$T/snaps
S="strace -f -qq -o"
truncate -s 64M $T/d.ext4 && mkfs.ext4 -q $T/d.ext4
mkdir -p $T/share && echo hi > $T/share/f && chmod 755 $T $T/share
# 1: run with a disk and shares, network nat-filtered
$S $O/tr.run $A run --accel tcg --disk $T/d.ext4 --share $T/share:/data --share $T/share:/ro:ro -- sh -c 'cat /data/f; echo x > /data/new; dd if=/dev/zero of=/workspace/z bs=1M count=4 conv=fsync 2>/dev/null; ip link; sync' ; echo run=$?
# 2: start (nat-filtered, disk, share), exec, pause/resume, snapshot save, stop
$S $O/tr.start $A start --accel tcg --name s1 --disk $T/d.ext4 >/dev/null &
sleep 1; $A wait s1 --state running --timeout 60
$A exec s1 -- sh -c 'echo y > /workspace/y; head -c 1000000 /dev/urandom | md5sum; ping -c1 -W1 198.51.100.1 >/dev/null 2>&1; true'
$A cp /etc/hostname s1:/root/h && $A cp s1:/root/h $T/h.out
$A pause s1 && $A resume s1
$A snapshot save s1 sn1 ; echo save=$?
$A exec s1 -- echo after
$A qmp s1 query-status >/dev/null
$A stop s1; wait
$S $O/tr.start3 $A start --accel tcg --name s3 --network isolated --share $T/share:/data >/dev/null &
sleep 1; $A wait s3 --state running --timeout 60; $A exec s3 -- sh -c 'ls /data; echo q > /data/q'; $A stop s3; wait
# isolated start too for snapshot without disk/share
$S $O/tr.start2 $A start --accel tcg --name s2 --network isolated >/dev/null &
sleep 1; $A wait s2 --state running --timeout 60
$A snapshot save s2 sn2; $A kill s2; wait
# 3: restore clones (copy-on-write), exec, reset, stop
$S $O/tr.restore $A restore sn1 --count 2 --name c >/dev/null &
sleep 1; $A wait c-1 --state running --timeout 60; $A wait c-2 --state running --timeout 60
$A exec c-1 -- sh -c 'echo z >/workspace/z2; sync'
$A exec c-2 -- echo ok
$A reset c-1; $A exec c-1 -- echo reset-ok
$A stop c-1; $A stop c-2; wait
$S $O/tr.restore2 $A restore sn2 --name d >/dev/null &
sleep 1; $A wait d --state running --timeout 60; $A exec d -- echo ok; $A rm --force d; wait
for v in s1 s2 c-1 c-2 d; do $A rm --force $v >/dev/null 2>&1; done
$A snapshot rm sn1; $A snapshot rm sn2
echo done: traces in $O
rm -rf "$T"
