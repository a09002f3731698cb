#!/bin/sh
# Helpers for integration tests: each test runs in a private state dir and must leave nothing.
# shellcheck disable=SC2034

AVM=${AVM:?AVM must point at the agentvm binary}
TESTS_PASSED=0
TESTS_FAILED=0
TESTS_SKIPPED=0
FAILED_NAMES=""

tmp_root=$(mktemp -d /tmp/avm-it.XXXXXX)
export AGENTVM_STATE_DIR="$tmp_root/state"
# The audit log too: a run's lines stay with it (not in /var/log/agentvm).
export AGENTVM_LOG_DIR="$tmp_root/log"
# The input hash cache of snapshot saves: ours, so that nothing outlives the run.
export AGENTVM_CACHE_DIR="$tmp_root/cache"

cleanup_all() {
	# Kill only QEMUs of this run (their console path is under our tmp dir).
	pkill -9 -f "qemu-system-x86_64.*$tmp_root" 2>/dev/null || true
	rm -rf "$tmp_root"
}
trap cleanup_all EXIT INT TERM

fail() {
	echo "    FAIL: $*"
	CURRENT_OK=0
}

# Nothing of this run may remain: no QEMU process, no state dir entry.
check_leftovers() {
	i=0
	while pgrep -f "qemu-system-x86_64.*$tmp_root" >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -gt 50 ] && { fail "a QEMU process was left running: $(pgrep -af "qemu-system-x86_64.*$tmp_root")"; pkill -9 -f "qemu-system-x86_64.*$tmp_root"; break; }
		sleep 0.1
	done
	# .net/ is the host's lease directory, not a VM: only a lease file in it is a leftover.
	if [ -d "$AGENTVM_STATE_DIR" ] && [ -n "$(ls -A "$AGENTVM_STATE_DIR" | grep -vx -e .net -e .metrics)" ]; then
		fail "state dirs left behind: $(ls -A "$AGENTVM_STATE_DIR" | grep -vx -e .net -e .metrics)"
		rm -rf "${AGENTVM_STATE_DIR:?}"/*
	fi
	if [ -n "$(ls -A "$AGENTVM_STATE_DIR/.net/leases" 2>/dev/null)" ]; then
		fail "leases left behind: $(ls -A "$AGENTVM_STATE_DIR/.net/leases")"
		rm -f "$AGENTVM_STATE_DIR/.net/leases"/* "$AGENTVM_STATE_DIR/.net/leases"/.tmp.*
	fi
	# A script on the host's network (HOST_NETWORK=1: it starts no VM) shares the machine with
	# other users' VMs: their taps and table are not its leftovers.
	if [ -z "${HOST_NETWORK:-}" ]; then
		# Taps go away with the last fd, which a short-lived closer process closes (see close_async):
		# allow it a moment. The table goes with the last VM.
		i=0
		while ip -br link 2>/dev/null | grep -q '^avm-'; do
			i=$((i + 1))
			[ $i -gt 30 ] && { fail "taps left behind: $(ip -br link | awk '/^avm-/ {print $1}' | tr '\n' ' ')"; break; }
			sleep 0.1
		done
		if [ "$(id -u)" = 0 ] && nft list table inet agentvm >/dev/null 2>&1; then
			fail "table inet agentvm left behind with no VM running"
			nft delete table inet agentvm 2>/dev/null
		fi
	fi
	# A test script may check more (taps, nft rules) by naming a function here.
	[ -n "${LEFTOVER_HOOK:-}" ] && "$LEFTOVER_HOOK"
	return 0
}

run_test() {
	_tname=$1
	shift
	CURRENT_OK=1
	CURRENT_SKIP=""
	t0=$(date +%s%N)
	"$_tname" "$@"
	check_leftovers
	ms=$((($(date +%s%N) - t0) / 1000000))
	if [ -n "$CURRENT_SKIP" ]; then
		TESTS_SKIPPED=$((TESTS_SKIPPED + 1))
		echo "  SKIP $_tname: $CURRENT_SKIP"
	elif [ $CURRENT_OK -eq 1 ]; then
		TESTS_PASSED=$((TESTS_PASSED + 1))
		echo "  ok   $_tname (${ms} ms)"
	else
		TESTS_FAILED=$((TESTS_FAILED + 1))
		FAILED_NAMES="$FAILED_NAMES $_tname"
		echo "  FAIL $_tname (${ms} ms)"
	fi
}

skip() {
	CURRENT_SKIP=$*
}

expect_eq() { # what expected actual
	[ "$2" = "$3" ] || fail "$1: expected '$2', got '$3'"
}

expect_contains() { # what needle haystack
	case "$3" in
	*"$2"*) ;;
	*) fail "$1: expected to contain '$2', got '$3'" ;;
	esac
}

# Run agentvm quietly under TCG; stdout/stderr to files $out/$err; rc in $rc.
avm_run() {
	out=$tmp_root/out
	err=$tmp_root/err
	"$AVM" run --accel tcg "$@" >"$out" 2>"$err"
	rc=$?
}

# Wait (up to 60 s) until file $1 contains $2.
wait_for_text() {
	i=0
	while ! grep -q "$2" "$1" 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 600 ] && { fail "'$2' never appeared in $1"; return 1; }
		sleep 0.1
	done
}

summary() {
	echo "integration: $TESTS_PASSED passed, $TESTS_FAILED failed, $TESTS_SKIPPED skipped${FAILED_NAMES:+ (failed:$FAILED_NAMES)}"
	[ "$TESTS_FAILED" -eq 0 ]
}
