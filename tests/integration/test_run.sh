#!/bin/sh
# Integration tests for `agentvm run`: real QEMU microVMs under TCG, real guest agent.
# Usage: AVM=build/agentvm sh tests/integration/test_run.sh [FILTER]
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

t_echo_and_exit_zero() {
	avm_run -- echo hello world
	expect_eq "exit code" 0 "$rc"
	expect_eq "stdout" "hello world" "$(cat "$out")"
	expect_eq "stderr" "" "$(cat "$err")"
}

t_exit_code_passthrough() {
	avm_run -- sh -c 'exit 7'
	expect_eq "exit code" 7 "$rc"
	avm_run -- false
	expect_eq "false" 1 "$rc"
}

t_stderr_separated() {
	avm_run -- sh -c 'echo to-out; echo to-err >&2; echo more-out'
	expect_eq "exit" 0 "$rc"
	expect_eq "stdout" "to-out
more-out" "$(cat "$out")"
	expect_eq "stderr" "to-err" "$(cat "$err")"
}

t_stdin_forwarded_with_eof() {
	out=$tmp_root/out
	printf 'one\ntwo\nthree\n' | "$AVM" run --accel tcg -- sh -c 'wc -l; echo after-eof' >"$out" 2>"$tmp_root/err"
	rc=$?
	expect_eq "exit" 0 "$rc"
	expect_eq "stdout" "3
after-eof" "$(tr -d ' ' <"$out")"
	# stdin from /dev/null reaches the command as an immediate EOF
	avm_run -- cat </dev/null
	expect_eq "cat </dev/null exit" 0 "$rc"
	expect_eq "cat </dev/null out" "" "$(cat "$out")"
	# a regular file as stdin (not pollable) works too
	seq 1 1000 >"$tmp_root/in.txt"
	avm_run -- md5sum <"$tmp_root/in.txt"
	expect_eq "file stdin md5" "$(md5sum <"$tmp_root/in.txt" | cut -d' ' -f1)" "$(cut -d' ' -f1 <"$out")"
}

t_unread_stdin_does_not_end_the_command() {
	# The guest drops stdin a command leaves unread (over 1 MiB for 5 s) and says so; the
	# command must still finish normally with its own output and exit code.
	head -c 3000000 /dev/zero | "$AVM" run --accel tcg -- sh -c 'sleep 7; echo done; exit 3' \
		>"$tmp_root/out" 2>"$tmp_root/err"
	expect_eq "exit" 3 $?
	expect_eq "stdout" "done" "$(cat "$tmp_root/out")"
	expect_contains "warning" "did not read its stdin" "$(cat "$tmp_root/err")"
}

t_killed_by_signal() {
	avm_run -- sh -c 'kill -TERM $$'
	expect_eq "128+SIGTERM" 143 "$rc"
	avm_run -- sh -c 'kill -KILL $$'
	expect_eq "128+SIGKILL" 137 "$rc"
}

t_command_not_found() {
	avm_run -- /no/such/command
	expect_eq "exit" 127 "$rc"
	expect_contains "message" "command not found" "$(cat "$err")"
	avm_run -- /etc/passwd
	expect_eq "not executable" 126 "$rc"
}

t_env_and_workdir() {
	avm_run --env FOO=bar --env 'SPACED=a b' --workdir /tmp -- sh -c 'echo "$FOO|$SPACED|$(pwd)"'
	expect_eq "exit" 0 "$rc"
	expect_eq "stdout" "bar|a b|/tmp" "$(cat "$out")"
	avm_run --workdir /does/not/exist -- true
	[ "$rc" -ne 0 ] || fail "a missing workdir should fail"
}

t_profiles_and_sizes() {
	avm_run --profile standard -- nproc
	expect_eq "standard cpus" 2 "$(cat "$out")"
	avm_run --memory 256 -- sh -c "awk '/MemTotal/ {print \$2}' /proc/meminfo"
	kb=$(cat "$out")
	[ "${kb:-0}" -gt 200000 ] && [ "${kb:-0}" -le 262144 ] || fail "256 MiB guest reports MemTotal $kb kB"
}

t_output_10mib_intact() {
	avm_run -- sh -c 'yes 0123456789abcdef | head -c 10485760'
	expect_eq "exit" 0 "$rc"
	expect_eq "size" 10485760 "$(wc -c <"$out")"
	expect_eq "content" "$(yes 0123456789abcdef | head -c 10485760 | md5sum | cut -d' ' -f1)" \
		"$(md5sum <"$out" | cut -d' ' -f1)"
}

t_output_streams_before_exit() {
	# The command prints, then blocks on stdin until the test has seen the first line: output
	# buffered until exit would never arrive and the test would fail on its guard timeout.
	fifo=$tmp_root/fifo
	mkfifo "$fifo"
	"$AVM" run --accel tcg -- sh -c 'echo first; read x; echo "second $x"' <"$fifo" >"$tmp_root/out" 2>"$tmp_root/err" &
	pid=$!
	exec 9>"$fifo"
	wait_for_text "$tmp_root/out" first
	echo go >&9
	exec 9>&-
	wait $pid
	expect_eq "exit" 0 $?
	expect_eq "stdout" "first
second go" "$(cat "$tmp_root/out")"
}

t_timeout_kills_and_tears_down() {
	avm_run --timeout 2 -- sleep 60
	expect_eq "exit" 124 "$rc"
	expect_contains "message" "timed out" "$(cat "$err")"
}

t_sigint_forwarded() {
	"$AVM" run --accel tcg -- sh -c 'echo ready; sleep 60' >"$tmp_root/out" 2>"$tmp_root/err" &
	pid=$!
	wait_for_text "$tmp_root/out" ready
	kill -INT $pid
	wait $pid
	expect_eq "exit after SIGINT" 130 $?
}

t_qemu_crash_reported() {
	"$AVM" run --accel tcg -- sh -c 'echo ready; sleep 60' >"$tmp_root/out" 2>"$tmp_root/err" &
	pid=$!
	wait_for_text "$tmp_root/out" ready
	pkill -9 -f "qemu-system-x86_64.*$tmp_root"
	wait $pid
	rc=$?
	expect_eq "exit after QEMU died" 122 "$rc"
	expect_contains "message" "QEMU exited" "$(cat "$tmp_root/err")"
}

t_tcg_warning_once() {
	"$AVM" run -- true >"$tmp_root/out" 2>"$tmp_root/err"
	rc=$?
	expect_eq "exit" 0 "$rc"
	# agentvm's own rule (src/vm/host.c): KVM needs /dev/kvm and vmx/svm in the CPU flags.
	if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then
		expect_eq "no warning under KVM" "" "$(cat "$tmp_root/err")"
	else
		expect_eq "one warning line" 1 "$(grep -c 'TCG' "$tmp_root/err")"
	fi
}

t_bad_input_clear_errors() {
	avm_run --cpus lots -- true
	expect_eq "bad --cpus" 125 "$rc"
	expect_contains "message" "--cpus 'lots'" "$(cat "$err")"
	avm_run --bogus -- true
	expect_eq "unknown flag" 125 "$rc"
	avm_run
	expect_eq "no command" 125 "$rc"
	expect_contains "message" "no command given" "$(cat "$err")"
	avm_run --kernel /nonexistent/vmlinux -- true
	expect_eq "missing kernel" 120 "$rc"
	expect_contains "message" "/nonexistent/vmlinux" "$(cat "$err")"
	if [ ! -e /dev/kvm ]; then
		"$AVM" run --accel kvm -- true >/dev/null 2>"$tmp_root/err"
		expect_eq "kvm without /dev/kvm" 120 $?
		expect_contains "message" "/dev/kvm" "$(cat "$tmp_root/err")"
	fi
	AGENTVM_QEMU=/nonexistent/qemu "$AVM" run --accel tcg -- true >/dev/null 2>"$tmp_root/err"
	expect_eq "missing qemu" 120 $?
	# A kernel that is not a kernel: QEMU refuses it; the error names the cause.
	echo garbage >"$tmp_root/bad-kernel"
	avm_run --kernel "$tmp_root/bad-kernel" -- true
	expect_eq "bad kernel" 121 "$rc"
	expect_contains "message" "QEMU exited" "$(cat "$err")"
}

t_hundred_runs_no_hang() {
	n=${AVM_TEST_RUNS:-100}
	i=0
	while [ $i -lt "$n" ]; do
		"$AVM" run --accel tcg --boot-timeout 30 -- true >/dev/null 2>"$tmp_root/err"
		r=$?
		[ $r -eq 0 ] || { fail "run $i exited $r: $(cat "$tmp_root/err")"; break; }
		# Nothing may outlive a run: no state dir, no QEMU of ours.
		if [ -n "$(ls -A "$AGENTVM_STATE_DIR" 2>/dev/null | grep -vx -e .net -e .metrics)" ] ||
		   [ -n "$(ls -A "$AGENTVM_STATE_DIR/.net/leases" 2>/dev/null)" ] ||
			pgrep -f "qemu-system-x86_64.*$tmp_root" >/dev/null; then
			fail "run $i left something behind: $(ls -A "$AGENTVM_STATE_DIR" "$AGENTVM_STATE_DIR/.net/leases" 2>/dev/null) $(pgrep -af "qemu-system-x86_64.*$tmp_root")"
			break
		fi
		i=$((i + 1))
	done
	echo "    $i runs"
}

# The suite runs cached by default (boot templates: every run after the first of a shape is a
# restore); this is the cold path (AGENTVM_BOOT_CACHE=0) for a representative subset: output,
# exit codes, stdin with EOF, env and workdir, a timeout, a forwarded SIGINT.
t_cold_path_subset() {
	iso=$(AGENTVM_BOOT_CACHE=0 "$AVM" run --accel tcg -- cat /proc/cmdline)
	case "$iso" in *agentvm.template*) fail "AGENTVM_BOOT_CACHE=0 restored a template" ;; esac
	export AGENTVM_BOOT_CACHE=0
	for c in t_echo_and_exit_zero t_exit_code_passthrough t_stdin_forwarded_with_eof \
		t_env_and_workdir t_timeout_kills_and_tears_down t_sigint_forwarded; do
		"$c"
	done
	unset AGENTVM_BOOT_CACHE
}

# And the default is the cached path: a clone's cmdline says so.
t_default_is_a_template_clone() {
	avm_run -- true
	avm_run -- cat /proc/cmdline
	expect_contains "a template's clone" "agentvm.template=1" "$(cat "$out")"
}

filter=${1:-}
for t in t_default_is_a_template_clone t_cold_path_subset t_echo_and_exit_zero t_exit_code_passthrough t_stderr_separated t_stdin_forwarded_with_eof t_unread_stdin_does_not_end_the_command \
	t_killed_by_signal t_command_not_found t_env_and_workdir t_profiles_and_sizes \
	t_output_10mib_intact t_output_streams_before_exit t_timeout_kills_and_tears_down \
	t_sigint_forwarded t_qemu_crash_reported t_tcg_warning_once t_bad_input_clear_errors \
	t_hundred_runs_no_hang; do
	case "$t" in *"$filter"*) run_test "$t" ;; esac
done
summary
