#!/bin/sh
# Integration tests for issue 15: what a hostile guest or local user can push on (bounds, the
# state dir's trust, the small sharp holes), each reproduced as an attacker would.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

export AGENTVM_SNAPSHOT_DIR="$tmp_root/snaps"

avm() { "$AVM" "$@"; }

# 6: a truncated meta.json is a damaged snapshot with a message, not SIGSEGV (exit 139).
t_restore_truncated_meta() {
	mkdir -p "$AGENTVM_SNAPSHOT_DIR/trunc"
	printf '{"format":1,' >"$AGENTVM_SNAPSHOT_DIR/trunc/meta.json"
	avm restore --network isolated trunc >/dev/null 2>"$tmp_root/err"
	rc=$?
	[ $rc -ne 0 ] && [ $rc -lt 128 ] || fail "restore of a truncated meta.json exited $rc"
	expect_contains "damaged message" "damaged" "$(cat "$tmp_root/err")"
	rm -rf "${AGENTVM_SNAPSHOT_DIR:?}/trunc"
}

# 7: the supervisor keeps none of the caller's fds: $(start 3>&1) returns once the VM is ready.
t_start_closes_inherited_fds() {
	name=$(timeout 120 "$AVM" start --accel tcg --name f1 3>&1 2>"$tmp_root/err")
	rc=$?
	[ $rc -ne 124 ] || fail "start with fd 3 inherited returned only when killed by timeout"
	expect_eq "start prints the name" "f1" "$name"
	avm rm --force f1 >/dev/null 2>&1
}

# 10: kill -9 of start before READY leaves no VM nobody was told the name of.
t_start_killed_before_ready() {
	"$AVM" start --accel tcg --name k9 >/dev/null 2>&1 &
	spid=$!
	i=0
	while [ ! -e "$AGENTVM_STATE_DIR/k9/spec.json" ] && [ $i -lt 600 ]; do
		sleep 0.05
		i=$((i + 1))
	done
	kill -9 $spid
	wait $spid 2>/dev/null
	# The supervisor notices the pipe's reader gone and removes the VM (allow it to finish).
	i=0
	while [ -e "$AGENTVM_STATE_DIR/k9" ] && [ $i -lt 600 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	[ ! -e "$AGENTVM_STATE_DIR/k9" ] || { fail "a VM was left by a start killed before READY: $(avm ls)"; avm rm --force k9 >/dev/null 2>&1; }
}

# 1: a guest flooding its console fills neither the state dir nor memory: console.log is capped
# and rotated once (console.h: CONSOLE_LOG_MAX, 1 MiB each).
t_console_capped() {
	avm_run --network isolated --keep-state --name flood -- sh -c 'head -c 5000000 /dev/zero >/dev/hvc0; echo ok'
	expect_eq "flood exit" 0 "$rc"
	expect_eq "flood output" "ok" "$(cat "$out")"
	d=$AGENTVM_STATE_DIR/flood
	s0=$(stat -c %s "$d/console.log" 2>/dev/null || echo missing)
	s1=$(stat -c %s "$d/console.log.1" 2>/dev/null || echo missing)
	echo "    console.log $s0 bytes, console.log.1 $s1 bytes after 5 MB"
	[ "$s1" != missing ] || fail "console.log was not rotated"
	[ "$s0" != missing ] && [ "$s0" -le 1048576 ] || fail "console.log is $s0 bytes (cap 1048576)"
	[ "$s1" = missing ] || [ "$s1" -le 1048576 ] || fail "console.log.1 is $s1 bytes"
	avm rm flood >/dev/null 2>&1 || rm -rf "$d"
}

# 9: a guest kernel panic is recorded as crashed / guest-panic, not as a clean guest shutdown.
t_guest_panic_recorded() {
	avm start --accel tcg --network isolated --memory 256 --name pan >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	# panic_on_oom + a memory hog (busybox tail keeps one endless line): a certain panic.
	avm exec pan -- sh -c 'echo 1 >/proc/sys/vm/panic_on_oom; head -c 2000000000 /dev/zero | tail' >/dev/null 2>&1
	i=0
	while [ "$(avm ls | awk '$1 == "pan" {print $2}')" != crashed ] && [ $i -lt 600 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	expect_eq "state after a panic" "crashed" "$(avm ls | awk '$1 == "pan" {print $2}')"
	expect_contains "reason after a panic" '"exit_reason":"guest-panic"' "$(cat "$AGENTVM_STATE_DIR/pan/state.json")"
	avm rm --force pan >/dev/null 2>&1
}

# 9: filling /tmp, /dev/shm and /run fails the writes, not the guest: the tmpfs mounts are bounded
# (at the kernel's default of 50% each the guest kernel panicked).
t_tmpfs_bounded() {
	avm_run --network isolated --memory 256 -- sh -c 'for f in /tmp/a /dev/shm/b /run/c; do head -c 100000000 /dev/zero >$f 2>/dev/null && echo "$f: no limit"; done; echo alive'
	expect_eq "run exit" 0 "$rc"
	expect_eq "the guest survives full tmpfs mounts, each write failed" "alive" "$(cat "$out")"
}

# 8: output that cannot be written is a failure, not exit 0.
t_stdout_full() {
	"$AVM" run --accel tcg --network isolated -- head -c 100000 /dev/zero >/dev/full 2>"$tmp_root/err"
	rc=$?
	expect_eq "run > /dev/full exit" 1 "$rc"
	expect_contains "run > /dev/full message" "No space left" "$(cat "$tmp_root/err")"
	"$AVM" ls >/dev/full 2>"$tmp_root/err"
	expect_eq "ls > /dev/full exit" 1 "$?"
}

# Supervisor RSS in kB.
sup_rss() {
	awk '/^VmRSS/ {print $2}' /proc/"$(sed -n 's/.*"supervisor_pid":\([0-9]*\).*/\1/p' "$AGENTVM_STATE_DIR/$1/state.json")"/status
}

# 2 + 10: a slow reader does not grow the supervisor (back-pressure to the guest, nothing
# dropped), and 100 concurrent execs all run (the client limit was 64, its EOF read as a dead VM).
t_supervisor_bounded() {
	avm start --accel tcg --network isolated --name bp >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	r0=$(sup_rss bp)
	# The reader sleeps before it reads: the output waits in the guest, not in the supervisor.
	(avm exec bp -- head -c 100000000 /dev/zero | (sleep 12; wc -c) >"$tmp_root/wc") &
	bg=$!
	sleep 10
	r1=$(sup_rss bp)
	echo "    supervisor RSS ${r0} kB idle, ${r1} kB with 100 MB waiting for a slow reader"
	[ "$r1" -lt $((r0 + 16384)) ] || fail "the supervisor grew from $r0 kB to $r1 kB"
	wait $bg
	expect_eq "every byte arrived" 100000000 "$(tr -d ' ' <"$tmp_root/wc")"
	i=0
	pids=""
	while [ $i -lt 100 ]; do
		avm exec bp -- sh -c "echo $i" >"$tmp_root/c$i" 2>&1 &
		pids="$pids $!"
		i=$((i + 1))
	done
	bad=0
	for p in $pids; do wait "$p" || bad=$((bad + 1)); done
	i=0
	while [ $i -lt 100 ]; do
		[ "$(cat "$tmp_root/c$i")" = "$i" ] || { bad=$((bad + 1)); [ $bad -lt 3 ] && echo "    exec $i: $(cat "$tmp_root/c$i")"; }
		i=$((i + 1))
	done
	expect_eq "failed concurrent execs" 0 "$bad"
	avm rm --force bp >/dev/null 2>&1
}

# 11: what can be checked is checked before the boot (usage errors, 125, and no VM started).
t_validation_before_boot() {
	avm_run --network isolated --name ../evil -- true
	expect_eq "run --name ../evil" 125 "$rc"
	expect_contains "bad name message" "invalid VM name" "$(cat "$err")"
	big=$(head -c 100000 /dev/zero | tr '\0' x)
	avm_run --network isolated --env "B1=$big" --env "B2=$big" --env "B3=$big" -- true
	expect_eq "run with an oversized --env" 125 "$rc"
	expect_contains "oversized env message" "bytes one request holds" "$(cat "$err")"
	deep=$tmp_root/$(printf 'd%.0s' $(seq 1 100))
	AGENTVM_STATE_DIR=$deep "$AVM" run --accel tcg --network isolated -- true >/dev/null 2>"$tmp_root/err"
	expect_eq "run with a too deep state dir" 125 "$?"
	expect_contains "deep state dir message" "too deep" "$(cat "$tmp_root/err")"
	AGENTVM_STATE_DIR=$deep "$AVM" start --accel tcg --network isolated >/dev/null 2>"$tmp_root/err"
	expect_eq "start with a too deep state dir" 125 "$?"
	pgrep -f "qemu-system-x86_64.*$tmp_root" >/dev/null && fail "a QEMU was started"
	rm -rf "$deep"
}

# 10: a serve killed with -9 leaves .pool.sock; gc removes it, and acquire says no pool serves.
t_stale_pool_sock() {
	mkdir -p "$AGENTVM_STATE_DIR"
	python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.close()' "$AGENTVM_STATE_DIR/.pool.sock"
	avm pool acquire >/dev/null 2>"$tmp_root/err"
	[ $? -ne 0 ] || fail "acquire with no serve succeeded"
	expect_contains "acquire message" "no pool is serving" "$(cat "$tmp_root/err")"
	expect_contains "gc removes the stale socket" "stale" "$(avm gc)"
	[ ! -e "$AGENTVM_STATE_DIR/.pool.sock" ] || fail ".pool.sock is still there"
}

# 4: a state root others can write is refused, with the fix.
t_untrusted_state_root() {
	mkdir -p "$tmp_root/shared"
	chmod 777 "$tmp_root/shared"
	AGENTVM_STATE_DIR=$tmp_root/shared "$AVM" ls >/dev/null 2>"$tmp_root/err"
	expect_eq "ls in a world-writable state root" 120 "$?"
	expect_contains "the fix" "chmod go-w" "$(cat "$tmp_root/err")"
	chmod 700 "$tmp_root/shared"
	chown 12345 "$tmp_root/shared"
	AGENTVM_STATE_DIR=$tmp_root/shared "$AVM" ls >/dev/null 2>"$tmp_root/err"
	expect_eq "ls in someone else's state root" 120 "$?"
	expect_contains "owner message" "belongs to uid 12345" "$(cat "$tmp_root/err")"
	ln -s "$tmp_root/shared" "$tmp_root/link"
	AGENTVM_SNAPSHOT_DIR=$tmp_root/link "$AVM" ls >/dev/null 2>"$tmp_root/err"
	expect_eq "a symlinked snapshot root" 120 "$?"
	rm -rf "$tmp_root/shared" "$tmp_root/link"
}

# 4: what a planted state dir names is never acted on: a pid (no start time match), an
# interface that is not an agentvm tap, a symlink to another directory.
t_planted_state() {
	mkdir -p "$AGENTVM_STATE_DIR/evil" "$tmp_root/victim"
	echo keep >"$tmp_root/victim/file"
	sleep 300 &
	victim=$!
	printf '{"state":"running","supervisor_pid":%d,"qemu_pid":%d}' $victim $victim >"$AGENTVM_STATE_DIR/evil/state.json"
	printf '{"vm":"evil","mode":"nat-filtered","tap":"up0"}' >"$AGENTVM_STATE_DIR/evil/net.json"
	expect_eq "a planted pid is not a live VM" "crashed" "$(avm ls | awk '$1 == "evil" {print $2}')"
	avm kill evil >/dev/null 2>&1
	avm rm --force evil >/dev/null 2>&1
	kill -0 $victim 2>/dev/null || fail "kill/rm --force signalled the process a planted state.json named"
	kill $victim 2>/dev/null
	if [ -n "$(ip -br link show up0 2>/dev/null)" ] || [ "$(id -u)" != 0 ]; then :; else fail "rm deleted interface up0 named by a planted net.json"; fi
	ln -s "$tmp_root/victim" "$AGENTVM_STATE_DIR/link1"
	avm gc >/dev/null 2>&1
	avm rm --force link1 >/dev/null 2>&1
	[ -f "$tmp_root/victim/file" ] || fail "gc/rm followed a symlink and deleted another directory's files"
	rm -f "$AGENTVM_STATE_DIR/link1"
	rm -rf "${AGENTVM_STATE_DIR:?}/evil" "$tmp_root/victim"
}

# 4: files in a VM dir are opened beneath it without following symlinks (openat2
# RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS): a planted symlink is refused, never read through.
t_planted_symlinks() {
	d=$AGENTVM_STATE_DIR/pl
	mkdir -p "$d"
	echo secret-console >"$tmp_root/secret"
	printf '{"state":"stopped","exit_reason":"read-through-a-symlink"}' >"$tmp_root/st.json"
	printf '{"name":"pl","cpus":99}' >"$tmp_root/spec.json"
	ln -s "$tmp_root/st.json" "$d/state.json"
	ln -s "$tmp_root/secret" "$d/console.log"
	ln -s "$tmp_root/spec.json" "$d/spec.json"
	out=$(avm logs pl 2>&1)
	rc=$?
	case "$out" in *secret-console*) fail "logs read a planted console.log symlink" ;; esac
	expect_contains "logs names the symlink" "symlink" "$out"
	[ $rc -ne 0 ] || fail "logs of a symlinked console.log exits 0"
	out=$(avm inspect pl 2>&1)
	case "$out" in *read-through-a-symlink* | *99*) fail "inspect read through a planted symlink: $out" ;; esac
	case "$(avm ls 2>&1)" in *read-through*) fail "ls read state.json through a symlink" ;; esac
	rm -rf "$d" "$tmp_root/secret" "$tmp_root/st.json" "$tmp_root/spec.json"
}

# 1: a full state dir: state.json stays true (paused is paused, a stop is a stop) and says why
# other writes failed. In a mount namespace of its own, on a small tmpfs.
t_full_state_dir() {
	full=$tmp_root/full
	mkdir -p "$full"
	AGENTVM_STATE_DIR=$full unshare -m sh -c '
		mount -t tmpfs -o size=1m,mode=0700 tmpfs "$AGENTVM_STATE_DIR" || exit 99
		"$AVM" start --accel tcg --network isolated --name fs >/dev/null || exit 98
		head -c 2000000 /dev/zero >"$AGENTVM_STATE_DIR/filler" 2>/dev/null
		"$AVM" exec fs -- sh -c "head -c 300000 /dev/zero >/dev/hvc0" >/dev/null 2>&1
		"$AVM" pause fs >/dev/null
		sleep 0.5
		echo "paused: $("$AVM" ls 2>/dev/null | awk "\$1 == \"fs\" {print \$2}")"
		"$AVM" resume fs >/dev/null
		"$AVM" stop fs >/dev/null
		echo "stopped: $("$AVM" ls 2>"$0.err" | awk "\$1 == \"fs\" {print \$2, \$7}")"
		cat "$0.err"
		"$AVM" rm fs >/dev/null
		rm -f "$AGENTVM_STATE_DIR/filler"
		umount "$AGENTVM_STATE_DIR"' "$tmp_root/fs" >"$tmp_root/fs.out" 2>&1
	rc=$?
	[ $rc -ne 99 ] || { skip "cannot mount a tmpfs in a new mount namespace"; return; }
	expect_eq "start in a small state dir" 0 "$rc"
	o=$(cat "$tmp_root/fs.out")
	expect_contains "paused shows paused with the state dir full" "paused: paused" "$o"
	expect_contains "a stop is a stop with the state dir full" "stopped: stopped poweroff" "$o"
	expect_contains "ls says what could not be written" "No space left" "$o"
	rm -rf "$full"
}

# 3: the jail, asserted from outside: QEMU's uid/gid, capabilities, no_new_privs, seccomp, its
# namespaces and its cgroup limits.
t_jail_with_a_share() {
	# A writable 9p share: QEMU runs as the share's owner (what the guest writes is the owner's
	# files), still without capabilities, in its namespaces, under seccomp; only the share is
	# bound into its root.
	[ "$(id -u)" = 0 ] || { skip "the jail needs root"; return; }
	id agentvm-qemu >/dev/null 2>&1 || { skip "no user agentvm-qemu (make deps creates it)"; return; }
	sd=$tmp_root/share-owned
	mkdir -p "$sd"
	chown 65534:65534 "$sd"
	avm start --accel tcg --network isolated --name js --share "$sd:/data" >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	q=$(sed -n 's/.*"qemu_pid":\([0-9]*\).*/\1/p' "$AGENTVM_STATE_DIR/js/state.json")
	expect_eq "QEMU runs as the share's owner" 65534 "$(awk '/^Uid:/ {print $2}' "/proc/$q/status")"
	expect_eq "QEMU's effective capabilities" 0000000000000000 "$(awk '/^CapEff:/ {print $2}' "/proc/$q/status")"
	expect_eq "seccomp mode" 2 "$(awk '/^Seccomp:/ {print $2}' "/proc/$q/status")"
	[ "$(readlink /proc/$q/ns/mnt)" != "$(readlink /proc/self/ns/mnt)" ] || fail "QEMU shares the mount namespace"
	avm exec js -- sh -c 'echo from-guest >/data/out.txt' || fail "write to the share"
	expect_eq "the guest's file is the owner's on the host" "65534 from-guest" "$(stat -c %u "$sd/out.txt") $(cat "$sd/out.txt")"
	[ ! -e "/proc/$q/root/etc/shadow" ] || fail "/etc/shadow is visible in QEMU's root"
	avm rm --force js >/dev/null
	rm -rf "$sd"
}

t_jail() {
	[ "$(id -u)" = 0 ] || { skip "the jail needs root"; return; }
	id agentvm-qemu >/dev/null 2>&1 || { skip "no user agentvm-qemu (make deps creates it)"; return; }
	avm start --accel tcg --network isolated --cpus 2 --memory 256 --name jl >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	q=$(sed -n 's/.*"qemu_pid":\([0-9]*\).*/\1/p' "$AGENTVM_STATE_DIR/jl/state.json")
	st=/proc/$q/status
	[ "$(awk '/^Uid:/ {print $2}' "$st")" != 0 ] || fail "QEMU runs as uid 0"
	[ "$(awk '/^Gid:/ {print $2}' "$st")" != 0 ] || fail "QEMU runs as gid 0"
	expect_eq "QEMU's effective capabilities" 0000000000000000 "$(awk '/^CapEff:/ {print $2}' "$st")"
	expect_eq "QEMU's bounding set" 0000000000000000 "$(awk '/^CapBnd:/ {print $2}' "$st")"
	expect_eq "no_new_privs" 1 "$(awk '/^NoNewPrivs:/ {print $2}' "$st")"
	expect_eq "seccomp mode" 2 "$(awk '/^Seccomp:/ {print $2}' "$st")"
	# Ours (the allowlist, before exec) and QEMU's own -sandbox on top.
	nf=$(awk '/^Seccomp_filters:/ {print $2}' "$st")
	[ -z "$nf" ] || [ "$nf" -ge 2 ] || fail "seccomp filters: $nf, want ours and -sandbox's"
	for ns in mnt pid ipc uts net; do
		[ "$(readlink /proc/$q/ns/$ns)" != "$(readlink /proc/self/ns/$ns)" ] || fail "QEMU shares the $ns namespace"
	done
	# Its root holds what it needs and not the host's /etc or /root.
	[ ! -e /proc/$q/root/etc/shadow ] || fail "/etc/shadow is visible in QEMU's root"
	[ ! -e "/proc/$q/root$AGENTVM_STATE_DIR/jl/state.json" ] || fail "state.json is visible in QEMU's root"
	# Limits: 2 CPUs, 256 MiB + 256 MiB overhead, 256 pids (v1 here; v2 on a unified host).
	if grep -q '^0::/agentvm.slice' /proc/$q/cgroup; then
		cg=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/$q/cgroup)
		expect_eq "cpu.max" "200000 100000" "$(cat "$cg/cpu.max")"
		expect_eq "memory.max" 536870912 "$(cat "$cg/memory.max")"
		expect_eq "pids.max" 256 "$(cat "$cg/pids.max")"
	elif grep -q ':pids:.*agentvm-jl-' /proc/$q/cgroup; then
		c=$(sed -n 's/^[0-9]*:cpu:\(.*\)/\1/p' /proc/$q/cgroup)
		m=$(sed -n 's/^[0-9]*:memory:\(.*\)/\1/p' /proc/$q/cgroup)
		p=$(sed -n 's/^[0-9]*:pids:\(.*\)/\1/p' /proc/$q/cgroup)
		expect_eq "cpu quota" 200000 "$(cat /sys/fs/cgroup/cpu$c/cpu.cfs_quota_us)"
		expect_eq "memory limit" 536870912 "$(cat /sys/fs/cgroup/memory$m/memory.limit_in_bytes)"
		expect_eq "pids.max" 256 "$(cat /sys/fs/cgroup/pids$p/pids.max)"
		cgdir=/sys/fs/cgroup/pids$p
	else
		fail "QEMU is in no agentvm cgroup: $(cat /proc/$q/cgroup | tr '\n' ' ')"
	fi
	# io weight (custom sizes: the host's default 100) where the host's block layer has one
	# (cgroup v2 io.cost or BFQ; v1 BFQ, or CFQ's 10-1000 scale: 500).
	if [ -n "${cg:-}" ] && grep -qw io "$cg/cgroup.controllers" 2>/dev/null &&
		{ [ -f "$cg/io.weight" ] || [ -f "$cg/io.bfq.weight" ]; }; then
		expect_eq "io weight" 100 "$(cat "$cg/io.weight" "$cg/io.bfq.weight" 2>/dev/null | awk '/^default/ {print $2; exit}')"
	elif [ -z "${cg:-}" ] && ls /sys/fs/cgroup/blkio/ 2>/dev/null | grep -q '^blkio\.\(bfq\.\)*weight$\|^blkio\.bfq\.io_service_bytes$'; then
		b=$(sed -n 's/^[0-9]*:blkio:\(.*agentvm-jl-.*\)/\1/p' /proc/$q/cgroup)
		[ -n "$b" ] || fail "the host has blkio weights but QEMU is in no blkio cgroup of ours"
		w=$(cat "/sys/fs/cgroup/blkio$b/blkio.bfq.weight" 2>/dev/null || cat "/sys/fs/cgroup/blkio$b/blkio.weight")
		case "$w" in 100 | 500) ;; *) fail "blkio weight: $w" ;; esac
	fi
	expect_eq "the jailed VM runs commands" ok "$(avm exec jl -- echo ok)"
	avm pause jl && avm resume jl || fail "pause/resume through the inherited QMP socket"
	avm stop jl >/dev/null
	avm rm jl >/dev/null
	[ -z "${cgdir:-}" ] || [ ! -d "$cgdir" ] || fail "the VM's cgroup $cgdir was left behind"
}

# The cgroup dirs of QEMU's VM (v2: one; v1: cpu, memory, pids), from /proc/PID/cgroup.
qemu_cgroups() {
	if grep -q '^0::/agentvm.slice' "/proc/$1/cgroup"; then
		echo "/sys/fs/cgroup$(sed -n 's/^0:://p' "/proc/$1/cgroup")"
	else
		for c in cpu memory pids; do
			p=$(sed -n "s/^[0-9]*:$c:\(.*agentvm-.*\)/\1/p" "/proc/$1/cgroup")
			[ -z "$p" ] || echo "/sys/fs/cgroup/$c$p"
		done
	fi
}

# A supervisor killed with -9 never removes its VM's cgroups: gc does (only agentvm's own).
t_gc_cgroups() {
	[ "$(id -u)" = 0 ] || { skip "cgroups need root"; return; }
	avm start --accel tcg --network isolated --name gcg >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	q=$(sed -n 's/.*"qemu_pid":\([0-9]*\).*/\1/p' "$AGENTVM_STATE_DIR/gcg/state.json")
	s=$(sed -n 's/.*"supervisor_pid":\([0-9]*\).*/\1/p' "$AGENTVM_STATE_DIR/gcg/state.json")
	cgs=$(qemu_cgroups "$q")
	[ -n "$cgs" ] || { skip "QEMU is in no agentvm cgroup (no cgroup limits on this host)"; avm rm --force gcg >/dev/null 2>&1; return; }
	# An empty cgroup of someone else's beside ours, named like ours but not recorded: kept.
	other=$(dirname "$(echo "$cgs" | head -1)")/agentvm-other-$$
	mkdir "$other"
	kill -9 "$s"
	i=0
	while [ -d "/proc/$q" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	for c in $cgs; do [ -d "$c" ] || fail "test premise: $c already gone after kill -9"; done
	avm gc >/dev/null 2>"$tmp_root/err" || fail "gc: $(cat "$tmp_root/err")"
	for c in $cgs; do [ ! -d "$c" ] || fail "gc left the dead VM's cgroup $c"; done
	[ -d "$other" ] || fail "gc removed a cgroup no VM of its recorded"
	rmdir "$other"
	avm rm --force gcg >/dev/null 2>&1
}

# 3: a second local user reaches nothing of root's VMs: not the state dir, not the sockets.
t_other_user() {
	[ "$(id -u)" = 0 ] || { skip "needs root"; return; }
	avm start --accel tcg --network isolated --name ou >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	chmod 755 "$tmp_root"
	out=$(setpriv --reuid=65534 --regid=65534 --clear-groups sh -c "ls '$AGENTVM_STATE_DIR/ou' 2>&1; AGENTVM_STATE_DIR='$AGENTVM_STATE_DIR' '$AVM' exec ou -- true 2>&1; echo rc=\$?")
	chmod 700 "$tmp_root"
	expect_contains "another user cannot list the state dir" "Permission denied" "$out"
	case "$out" in *rc=0*) fail "another user ran a command in root's VM: $out" ;; esac
	avm rm --force ou >/dev/null 2>&1
}

# 12: each EXEC in its own cgroup in the guest: --timeout reaches a setsid'd child too, and an
# OOM kill is reported as such.
t_exec_cgroup() {
	avm start --accel tcg --network isolated --memory 256 --name cg >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	avm exec cg -- test -d /sys/fs/cgroup/exec-1 2>/dev/null
	avm exec --timeout 3 cg -- sh -c 'setsid sleep 1000 & sleep 1000' >/dev/null 2>&1
	expect_eq "timeout exit" 124 "$?"
	n=$(avm exec cg -- sh -c 'for p in /proc/[0-9]*; do cat $p/comm 2>/dev/null; done | grep -c "^sleep$"')
	expect_eq "sleeps left after the timeout (a setsid'd one included)" 0 "$n"
	avm exec cg -- sh -c 'exec tail </dev/zero' >/dev/null 2>"$tmp_root/err"
	rc=$?
	expect_eq "exit of an OOM-killed command" 137 "$rc"
	expect_contains "OOM message" "OOM killer" "$(cat "$tmp_root/err")"
	expect_eq "the VM survives" ok "$(avm exec cg -- echo ok)"
	avm rm --force cg >/dev/null 2>&1
}

# A rootless QEMU (pid $1) is jailed in a user namespace of its own where the host allows them:
# the user's ids, no capabilities, no_new_privs, seccomp, its own namespaces and minimal root.
rootless_jail_checks() {
	st=/proc/$1/status
	expect_eq "a rootless QEMU runs as the user" 65534 "$(awk '/^Uid:/ {print $2}' "$st")"
	if [ "$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo 0)" = 0 ] ||
		[ "$(cat /proc/sys/kernel/unprivileged_userns_clone 2>/dev/null || echo 1)" = 0 ]; then
		expect_contains "the warning names what is missing" "user namespaces" "$(cat "$tmp_root/err")"
		return
	fi
	expect_eq "rootless CapEff" 0000000000000000 "$(awk '/^CapEff:/ {print $2}' "$st")"
	expect_eq "rootless CapBnd" 0000000000000000 "$(awk '/^CapBnd:/ {print $2}' "$st")"
	expect_eq "rootless no_new_privs" 1 "$(awk '/^NoNewPrivs:/ {print $2}' "$st")"
	expect_eq "rootless seccomp" 2 "$(awk '/^Seccomp:/ {print $2}' "$st")"
	for ns in user mnt pid ipc uts net; do
		[ "$(readlink /proc/$1/ns/$ns)" != "$(readlink /proc/self/ns/$ns)" ] || fail "the rootless QEMU shares the $ns namespace"
	done
	[ ! -e "/proc/$1/root/etc/passwd" ] || fail "/etc is visible in the rootless QEMU's root"
	[ ! -e "/proc/$1/root$rl/agentvm/rl2/state.json" ] || fail "state.json is visible in the rootless QEMU's root"
}

# 5: rootless: a user without privileges runs, starts, execs, snapshots and restores with
# --network isolated in their own $XDG_RUNTIME_DIR (state) and $HOME (snapshots, cache).
t_rootless() {
	[ "$(id -u)" = 0 ] || { skip "needs root to become another user"; return; }
	command -v setpriv >/dev/null || { skip "no setpriv"; return; }
	rl=$tmp_root/rootless
	mkdir -p "$rl"
	chown 65534:65534 "$rl"
	chmod 755 "$tmp_root"
	as_nobody() {
		setpriv --reuid=65534 --regid=65534 --clear-groups env -u AGENTVM_STATE_DIR \
			-u AGENTVM_CACHE_DIR -u AGENTVM_SNAPSHOT_DIR -u AGENTVM_LOG_DIR XDG_RUNTIME_DIR="$rl" HOME="$rl" \
			"$AVM" "$@"
	}
	expect_eq "rootless run" hi "$(as_nobody run --accel tcg --network isolated -- echo hi 2>"$tmp_root/err")"
	as_nobody start --accel tcg --network isolated --name rl1 >/dev/null 2>"$tmp_root/err" || fail "rootless start: $(cat "$tmp_root/err")"
	expect_eq "rootless exec" 42 "$(as_nobody exec rl1 -- sh -c 'echo 42' 2>>"$tmp_root/err")"
	as_nobody snapshot save rl1 rls >/dev/null 2>>"$tmp_root/err" || fail "rootless save: $(cat "$tmp_root/err")"
	as_nobody restore rls --name rl2 >/dev/null 2>>"$tmp_root/err" || fail "rootless restore: $(cat "$tmp_root/err")"
	expect_eq "rootless exec in the clone" ok "$(as_nobody exec rl2 -- echo ok 2>>"$tmp_root/err")"
	q=$(pgrep -f "qemu-system-x86_64.*$rl/agentvm/rl2" | head -1)
	[ -n "$q" ] || fail "no QEMU found for rl2"
	[ -z "$q" ] || rootless_jail_checks "$q"
	as_nobody rm --force rl1 >/dev/null 2>&1
	as_nobody rm --force rl2 >/dev/null 2>&1
	as_nobody snapshot rm rls >/dev/null 2>&1
	chmod 700 "$tmp_root"
	rm -rf "$rl"
}

# A guest fork bomb and a memory hog leave the host and another VM responsive, and the bombed
# VM itself once --timeout killed the command's cgroup.
t_fork_bomb_and_hog() {
	avm start --accel tcg --network isolated --memory 256 --name fa >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	avm start --accel tcg --network isolated --memory 256 --name fb >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; avm rm --force fa >/dev/null 2>&1; return; }
	avm exec --timeout 8 fa -- sh -c 'f() { f | f & }; f; sleep 100' >/dev/null 2>&1 &
	bomb=$!
	avm exec fb -- sh -c 'exec tail </dev/zero' >/dev/null 2>&1 &
	hog=$!
	sleep 3
	expect_eq "the other VM answers during the bomb" ok "$(avm exec fb -- echo ok 2>&1)"
	expect_eq "the host answers" ok "$(echo ok)"
	wait $bomb
	expect_eq "the bomb ends by its timeout" 124 "$?"
	wait $hog
	expect_eq "the bombed VM answers again" ok "$(avm exec fa -- echo ok 2>&1)"
	expect_eq "the hogged VM answers again" ok "$(avm exec fb -- echo ok 2>&1)"
	avm rm --force fa >/dev/null 2>&1
	avm rm --force fb >/dev/null 2>&1
}

run_test t_fork_bomb_and_hog
run_test t_rootless
run_test t_exec_cgroup
run_test t_jail
run_test t_gc_cgroups
run_test t_jail_with_a_share
run_test t_other_user
run_test t_full_state_dir
run_test t_untrusted_state_root
run_test t_planted_state
run_test t_planted_symlinks
run_test t_validation_before_boot
run_test t_stale_pool_sock
run_test t_stdout_full
run_test t_supervisor_bounded
run_test t_console_capped
run_test t_guest_panic_recorded
run_test t_tmpfs_bounded
run_test t_restore_truncated_meta
run_test t_start_closes_inherited_fds
run_test t_start_killed_before_ready
summary
