#!/bin/sh
# Integration tests for detached VMs: start, exec, pause/resume, stop, kill, rm, gc, ls, wait.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

avm() { "$AVM" "$@"; }

t_start_exec_pause_resume_stop() {
	name=$(avm start --accel tcg --name life 2>"$tmp_root/err")
	expect_eq "start prints the name" "life" "$name"
	expect_eq "state after start" "running" "$(avm inspect life | sed -n 's/.*"state": "\(.*\)".*/\1/p' | head -1)"
	out=$(avm exec life -- sh -c 'echo hi; echo oops >&2; exit 5' 2>"$tmp_root/err")
	expect_eq "exec exit code" 5 $?
	expect_eq "exec stdout" "hi" "$out"
	expect_eq "exec stderr" "oops" "$(cat "$tmp_root/err")"
	expect_eq "files survive between execs" "x" "$(avm exec life -- sh -c 'echo x >/tmp/f' && avm exec life -- cat /tmp/f)"

	# The guest clock stops while paused: guest uptime advances by far less than host time.
	g1=$(avm exec life -- cut -d' ' -f1 /proc/uptime)
	avm pause life || fail "pause"
	expect_eq "ls says paused" "paused" "$(avm ls | awk '$1 == "life" {print $2}')"
	avm exec life -- true 2>"$tmp_root/err"
	rc=$?
	[ $rc -ne 0 ] || fail "exec into a paused VM must fail"
	expect_contains "paused message" "is paused" "$(cat "$tmp_root/err")"
	sleep 3
	avm resume life || fail "resume"
	g2=$(avm exec life -- cut -d' ' -f1 /proc/uptime)
	d=$(awk -v a="$g1" -v b="$g2" 'BEGIN {printf "%d", (b - a) * 1000}')
	echo "    guest uptime advanced ${d} ms across a 3000 ms pause"
	[ "$d" -lt 2000 ] || fail "guest clock kept running while paused (+$d ms)"
	grep -q '"STOP"' "$AGENTVM_STATE_DIR/life/events.jsonl" || fail "no STOP event logged"
	grep -q '"RESUME"' "$AGENTVM_STATE_DIR/life/events.jsonl" || fail "no RESUME event logged"

	avm stop life || fail "stop"
	expect_eq "state after stop" "stopped" "$(avm ls | awk '$1 == "life" {print $2}')"
	expect_eq "reason after stop" "poweroff" "$(avm ls | awk '$1 == "life" {print $7}')"
	[ ! -e "$AGENTVM_STATE_DIR/life/agent.sock" ] || fail "agent.sock left after stop"
	avm rm life || fail "rm"
}

t_duplicate_and_bad_names() {
	avm start --accel tcg --name dup >/dev/null 2>&1 || fail "first start"
	avm start --accel tcg --name dup >/dev/null 2>"$tmp_root/err"
	expect_eq "duplicate name exit" 125 $?
	expect_contains "duplicate message" "already exists" "$(cat "$tmp_root/err")"
	avm start --accel tcg --name '../evil' >/dev/null 2>"$tmp_root/err"
	expect_eq "bad name exit" 125 $?
	avm exec nosuchvm -- true 2>"$tmp_root/err"
	expect_eq "exec unknown vm" 125 $?
	expect_contains "unknown vm message" "no VM named" "$(cat "$tmp_root/err")"
	avm rm dup 2>/dev/null
	[ $? -ne 0 ] || fail "rm of a running VM without --force must fail"
	avm rm --force dup || fail "rm --force"
}

t_kill_qemu_is_recorded() {
	avm start --accel tcg --name k1 >/dev/null || fail "start"
	qpid=$(sed -n 's/.*"qemu_pid":\([0-9]*\).*/\1/p' "$AGENTVM_STATE_DIR/k1/state.json")
	kill -9 "$qpid"
	avm wait k1 --state stopped --timeout 20 >/dev/null || fail "wait after kill -9"
	expect_eq "reason" "killed" "$(avm ls | awk '$1 == "k1" {print $7}')"
	[ ! -e "$AGENTVM_STATE_DIR/k1/agent.sock" ] || fail "socket left after QEMU died"
	avm rm k1 || fail "rm"
}

# The supervisor writes down why QEMU ended; until it has, `ls` and `wait` must not guess
# "crashed" (they did on a loaded host, racing the supervisor).
t_slow_supervisor_is_not_a_crash() {
	avm start --accel tcg --name k3 >/dev/null || fail "start"
	spid=$(sed -n 's/.*"supervisor_pid":\([0-9]*\).*/\1/p' "$AGENTVM_STATE_DIR/k3/state.json")
	qpid=$(sed -n 's/.*"qemu_pid":\([0-9]*\).*/\1/p' "$AGENTVM_STATE_DIR/k3/state.json")
	kill -STOP "$spid"
	kill -9 "$qpid"
	sleep 0.3
	expect_eq "state while the supervisor is held" "stopping" "$(avm ls | awk '$1 == "k3" {print $2}')"
	kill -CONT "$spid"
	avm wait k3 --state stopped --timeout 20 >/dev/null || fail "wait"
	expect_eq "reason" "killed" "$(avm ls | awk '$1 == "k3" {print $7}')"
	avm rm k3 || fail "rm"
}

t_kill_supervisor_leaves_nothing_after_gc() {
	avm start --accel tcg --name k2 >/dev/null || fail "start"
	spid=$(sed -n 's/.*"supervisor_pid":\([0-9]*\).*/\1/p' "$AGENTVM_STATE_DIR/k2/state.json")
	qpid=$(sed -n 's/.*"qemu_pid":\([0-9]*\).*/\1/p' "$AGENTVM_STATE_DIR/k2/state.json")
	kill -9 "$spid"
	i=0
	while kill -0 "$qpid" 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 100 ] && { fail "QEMU outlived its supervisor"; break; }
		sleep 0.05
	done
	expect_eq "ls after supervisor death" "crashed" "$(avm ls | awk '$1 == "k2" {print $2}')"
	avm gc >/dev/null || fail "gc"
	[ ! -e "$AGENTVM_STATE_DIR/k2" ] || fail "gc left the state dir"
}

# Each command runs in its own guest cgroup: cgroup2 is mounted favordynmods (moving a process in
# waits for no RCU grace period), and a command's cgroup is gone after its EXIT, so a VM that ran
# many commands holds the running one's and at most one spare made ahead for the next.
t_guest_exec_cgroups() {
	avm start --accel tcg --name k5 >/dev/null || fail "start"
	expect_contains "cgroup2 favordynmods" "favordynmods" \
		"$(avm exec k5 -- grep cgroup2 /proc/mounts)"
	for i in 1 2 3 4 5 6; do avm exec k5 -- true || fail "exec $i"; done
	own=$(avm exec k5 -- cat /proc/self/cgroup)
	case "$own" in 0::/exec-*) ;; *) fail "the command is not in an exec cgroup: $own" ;; esac
	n=$(avm exec k5 -- sh -c 'ls -d /sys/fs/cgroup/exec-* | wc -l')
	[ "$n" -le 2 ] || fail "$n exec cgroups after 8 commands (want the running one and a spare)"
	avm rm --force k5 >/dev/null || fail "rm"
}

t_avm_kill_verb() {
	avm start --accel tcg --name k3 >/dev/null || fail "start"
	avm kill k3 || fail "kill"
	expect_eq "state" "stopped" "$(avm ls | awk '$1 == "k3" {print $2}')"
	avm rm k3 || fail "rm"
}

t_logs_and_inspect() {
	avm start --accel tcg --name lg >/dev/null || fail "start"
	avm exec lg -- sh -c 'echo console-marker >/dev/hvc0' || fail "write console"
	sleep 0.2
	expect_contains "logs" "console-marker" "$(avm logs lg)"
	j=$(avm inspect lg)
	expect_contains "inspect accel" '"accel": "tcg"' "$j"
	expect_contains "inspect qmp socket" 'qmp.sock' "$j"
	expect_contains "inspect spec" '"memory_mib": 512' "$j"
	avm rm --force lg || fail "rm --force"
}

t_twenty_concurrent_vms() {
	n=${AVM_TEST_CONCURRENT:-20}
	i=0
	while [ $i -lt "$n" ]; do
		avm start --accel tcg --memory 128 --name "c$i" >/dev/null 2>"$tmp_root/err.$i" &
		i=$((i + 1))
	done
	wait
	running=$(avm ls | awk '$2 == "running"' | wc -l)
	expect_eq "running VMs" "$n" "$running"
	i=0
	while [ $i -lt "$n" ]; do
		avm exec "c$i" -- sh -c "echo vm-$i" >"$tmp_root/o.$i" 2>&1 &
		i=$((i + 1))
	done
	wait
	i=0
	while [ $i -lt "$n" ]; do
		expect_eq "exec in c$i" "vm-$i" "$(cat "$tmp_root/o.$i")"
		i=$((i + 1))
	done
	expect_eq "ls --json count" "$n" "$(avm ls --json | grep -c '"dir"')"
	i=0
	while [ $i -lt "$n" ]; do
		avm rm --force "c$i" &
		i=$((i + 1))
	done
	wait
}

t_qmp_verbs_and_events() {
	avm start --accel tcg --name qm >/dev/null || fail "start"
	out=$(avm qmp qm query-status)
	expect_eq "qmp exit" 0 $?
	expect_contains "query-status" '"status": "running"' "$out"
	out=$(avm qmp qm no-such-command)
	expect_eq "invalid command exit" 1 $?
	expect_contains "invalid command class" "CommandNotFound" "$out"
	avm qmp qm query-status 'not json' >/dev/null 2>&1
	[ $? -ne 0 ] || fail "bad argument JSON must fail"

	avm events qm --follow >"$tmp_root/ev" 2>&1 &
	evpid=$!
	avm pause qm && avm resume qm || fail "pause/resume"
	out=$(printf 'stop\nquery-status\ncont\n' | avm qmp qm --shell)
	expect_contains "shell shows events" "event STOP" "$out"
	expect_contains "shell runs commands" '"status": "paused"' "$out"
	avm stop qm || fail "stop"
	i=0
	while kill -0 $evpid 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 100 ] && { fail "events --follow did not end with the VM"; kill $evpid; break; }
		sleep 0.05
	done
	wait $evpid 2>/dev/null
	expect_eq "followed STOP events" 2 "$(grep -c ' STOP ' "$tmp_root/ev")"
	expect_eq "followed RESUME events" 2 "$(grep -c ' RESUME ' "$tmp_root/ev")"
	expect_contains "json events" '"event":"STOP"' "$(avm events qm --json)"
	avm rm qm || fail "rm"
}

# start restores a boot template by default; the cold path of the life cycle as well.
t_start_cold_life_cycle() {
	export AGENTVM_BOOT_CACHE=0
	t_start_exec_pause_resume_stop
	unset AGENTVM_BOOT_CACHE
}

filter=${1:-}
for t in t_start_exec_pause_resume_stop t_start_cold_life_cycle t_duplicate_and_bad_names t_kill_qemu_is_recorded \
	t_slow_supervisor_is_not_a_crash t_kill_supervisor_leaves_nothing_after_gc t_guest_exec_cgroups \
	t_avm_kill_verb t_logs_and_inspect \
	t_qmp_verbs_and_events t_twenty_concurrent_vms; do
	case "$t" in *"$filter"*) run_test "$t" ;; esac
done
summary
