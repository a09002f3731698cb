#!/bin/sh
# Integration tests for the audit log, connection logging and anomaly alerts (issue 12): real VMs
# under TCG. The network tests build the two-namespace fake internet of netns.sh; nothing touches
# the machine's own network.
# Usage: AVM=build/agentvm sh tests/integration/test_audit.sh [FILTER]   (ONLY="t_a t_b" works too)
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/netns.sh"

trap 'net_down; cleanup_all' EXIT
trap 'exit 130' INT TERM

export AGENTVM_LOG_DIR="$tmp_root/log"
LOG=$AGENTVM_LOG_DIR/audit.jsonl
BOOT="--accel tcg --boot-timeout 180"
S=$NET_SERVER

# Every line of the log is one JSON object whose ts is epoch_ms in New York time, with the
# offset the tz database gives (Python's zoneinfo: an independent reading of it). Prints the
# number of lines; exits non-zero on the first bad one.
check_log() {
	python3 - "$LOG" <<'PY'
import json, sys, datetime, zoneinfo
ny = zoneinfo.ZoneInfo("America/New_York")
n = 0
for i, line in enumerate(open(sys.argv[1], encoding="utf-8"), 1):
    try:
        ev = json.loads(line)
    except ValueError as e:
        sys.exit(f"line {i} is not JSON ({e}): {line[:200]!r}")
    t = datetime.datetime.fromtimestamp(ev["epoch_ms"] / 1000, tz=ny)
    want = t.isoformat(timespec="milliseconds")
    if ev["ts"] != want:
        sys.exit(f"line {i}: ts {ev['ts']} but epoch_ms {ev['epoch_ms']} is {want}")
    n += 1
print(n)
PY
}

# Events (as compact JSON, one a line) matching a Python condition on `e`.
events() { # condition
	python3 - "$LOG" "$1" <<'PY'
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    e = json.loads(line)
    if eval(sys.argv[2]):
        print(json.dumps(e, separators=(",", ":")))
PY
}
count() { events "$1" | wc -l | tr -d ' '; }

# --- tests --------------------------------------------------------------------------------------

t_lifecycle_and_concurrent_execs() {
	vm=aud1
	"$AVM" start $BOOT --network isolated --name $vm >/dev/null 2>"$tmp_root/err" ||
		{ fail "start: $(cat "$tmp_root/err")"; return; }
	# 24 execs at once, each with its own exit code and output.
	pids=""
	for i in $(seq 1 24); do
		"$AVM" exec $vm -- sh -c "head -c $((i * 100)) /dev/zero; exit $((i % 5))" >/dev/null 2>&1 &
		pids="$pids $!"
	done
	# shellcheck disable=SC2086
	wait $pids
	"$AVM" pause $vm >/dev/null && "$AVM" resume $vm >/dev/null || fail "pause/resume"
	"$AVM" exec $vm -- /no/such/command >/dev/null 2>&1
	"$AVM" stop $vm >/dev/null || fail "stop"
	"$AVM" rm $vm >/dev/null || fail "rm"
	n=$(check_log) || { fail "bad log: $n"; return; }
	for ev in vm.created vm.ready vm.paused vm.resumed vm.stopped vm.removed; do
		expect_eq "$ev events" 1 "$(count "e['event']=='$ev' and e.get('vm')=='$vm'")"
	done
	expect_eq "exec.start" 25 "$(count "e['event']=='exec.start' and e['vm']=='$vm'")"
	expect_eq "exec.end" 25 "$(count "e['event']=='exec.end' and e['vm']=='$vm'")"
	# Each exec's end has its exit code and exactly its output size.
	for i in 3 17 24; do
		expect_eq "exec $i" 1 "$(count "e['event']=='exec.end' and e['bytes_out']==$((i * 100)) and \
e['exit_code']==$((i % 5)) and e['argv'][0]=='sh' and e['duration_ms']>=0")"
	done
	expect_eq "failed exec" 1 "$(count "e['event']=='exec.end' and e['argv']==['/no/such/command'] \
and e['result']!='exited'")"
	# 19 of the 24 exited non-zero within a minute: the failed_execs rule (10) fired once.
	expect_eq "failed_execs alert" 1 "$(count "e['event']=='anomaly' and e['vm']=='$vm' and \
e['rule']=='failed_execs'")"
	# The reader: --vm and --json filter, --since in the future shows nothing.
	expect_eq "audit --vm" "$(count "e.get('vm')=='$vm'")" \
		"$("$AVM" audit --vm $vm --json | wc -l | tr -d ' ')"
	expect_eq "audit --since" 0 "$("$AVM" audit --since 2099-01-01 | wc -l | tr -d ' ')"
	"$AVM" audit --vm $vm | grep -q "exec.end .*$vm .*exit_code=4" || fail "audit text output"
	"$AVM" audit --since 5x >/dev/null 2>&1
	expect_eq "bad --since exit" 125 $?
}

# A log directory others may write is refused with the fix: like an untrusted state dir, it stops
# every verb before it does anything (exit 120, a host problem).
t_untrusted_log_dir() {
	mkdir -p "$tmp_root/badlog" && chmod 0777 "$tmp_root/badlog"
	AGENTVM_LOG_DIR="$tmp_root/badlog" "$AVM" audit >/dev/null 2>"$tmp_root/err"
	expect_eq "audit in a 0777 dir" 120 $?
	expect_contains "message" "chmod go-w" "$(cat "$tmp_root/err")"
	AGENTVM_LOG_DIR="$tmp_root/badlog" "$AVM" ls >/dev/null 2>&1 && fail "ls ran with an untrusted log dir"
	rm -rf "$tmp_root/badlog"
}

avm() { ip netns exec "$NS_HOST" "$AVM" "$@"; }

# Normal traffic (HTTP, DNS, one blocked port) is logged connection by connection and raises no
# alert; then a port scan of the internet host raises scan_ports, counted in anomalies.json.
t_connections_and_scan_alert() {
	[ -n "${NET_READY:-}" ] || { skip "${NET_WHY:-no network topology}"; return; }
	vm=scan1
	avm start $BOOT --name $vm >/dev/null 2>"$tmp_root/err" ||
		{ fail "start: $(cat "$tmp_root/err")"; return; }
	guest=$(avm net ls --json | python3 -c 'import json,sys
print(next(o["guest"] for o in json.load(sys.stdin) if o["vm"]=="'$vm'"))' 2>/dev/null)
	avm exec --timeout 240 $vm -- sh -c "wget -q -O - http://$S:80/ >/dev/null; \
wget -q -O - http://$S:443/ >/dev/null; nslookup example.test >/dev/null; \
timeout 5 nc -w 3 $S 8080 </dev/null >/dev/null 2>&1; true" >/dev/null 2>&1
	# Closing events come when conntrack forgets the flow (TCP: after TIME_WAIT, 120 s by
	# default; the test's namespace shortens it); wait for the open and the drop.
	i=0
	until [ "$(count "e['event']=='conn.open' and e['dst']=='$S' and e['dport']==80")" -ge 1 ] &&
		[ "$(count "e['event']=='conn.drop' and e['dst']=='$S' and e['dport']==8080")" -ge 1 ] &&
		[ "$(count "e['event']=='conn.close' and e['dst']=='$S' and e['dport']==80")" -ge 1 ]; do
		i=$((i + 1))
		[ $i -gt 90 ] && break
		sleep 1
	done
	expect_eq "conn.open to :80 (allowed, from $guest)" 1 "$(count "e['event']=='conn.open' and \
e['vm']=='$vm' and e['dst']=='$S' and e['dport']==80 and e['verdict']=='allowed' and \
e['proto']=='tcp' and e['src']=='$guest' and e['sport']>0")"
	expect_eq "conn.close of :80 with bytes" 1 "$(count "e['event']=='conn.close' and \
e['vm']=='$vm' and e['dport']==80 and e['bytes_in']>0 and e['bytes_out']>0 and \
e['packets_out']>0 and 'duration_ms' in e")"
	[ "$(count "e['event']=='conn.drop' and e['vm']=='$vm' and e['dport']==8080 and \
e['verdict']=='dropped' and e['direction']=='out' and e['src']=='$guest'")" -ge 1 ] ||
		fail "no conn.drop for :8080: $(events "e.get('vm')=='$vm' and e['event'].startswith('conn')")"
	[ "$(count "e['event']=='conn.open' and e['vm']=='$vm' and e['dport']==53")" -ge 1 ] ||
		fail "no conn.open for DNS"
	expect_eq "anomalies from normal traffic" "" "$(events "e['event']=='anomaly' and e['vm']=='$vm'")"
	# The scan: 40 ports at once, most of them closed by the filter.
	avm exec --timeout 240 $vm -- sh -c "for p in \$(seq 1 40); do \
(timeout 3 nc -w 2 $S \$p </dev/null >/dev/null 2>&1 &); done; sleep 4" >/dev/null 2>&1
	i=0
	until [ "$(count "e['event']=='anomaly' and e['vm']=='$vm' and e['rule']=='scan_ports'")" -ge 1 ]; do
		i=$((i + 1))
		[ $i -gt 30 ] && break
		sleep 1
	done
	expect_eq "scan alert" 1 "$(count "e['event']=='anomaly' and e['vm']=='$vm' and \
e['rule']=='scan_ports' and e['action']=='none'")"
	# A scan also drops many packets: the drops rule may fire with it.
	expect_eq "anomalies.json scan_ports" 1 "$(python3 -c 'import json,sys
print(json.load(open(sys.argv[1]))["rules"]["scan_ports"])' "$AGENTVM_STATE_DIR/$vm/anomalies.json" \
		2>&1)"
	# The metrics export exactly this file.
	avm metrics 2>/dev/null | grep -q "^agentvm_anomalies_total{vm=\"$vm\",rule=\"scan_ports\"} 1\$" ||
		fail "agentvm metrics has no scan_ports count for $vm"
	expect_eq "still running (no action by default)" running \
		"$(avm inspect $vm | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null)"
	check_log >/dev/null || fail "bad log line"
	avm rm --force $vm >/dev/null || fail "rm"
}

# A flood beyond the log rate (3 events/s here) is counted in connlog.lost, not logged, and the
# VM's traffic is not held up: every request still gets its answer.
t_flood_counts_what_it_cannot_log() {
	[ -n "${NET_READY:-}" ] || { skip "${NET_WHY:-no network topology}"; return; }
	vm=flood1
	printf 'log_rate = 3\nscan_ports = 0\n' >"$tmp_root/anomaly.conf"
	AGENTVM_ANOMALY_CONF="$tmp_root/anomaly.conf" avm start $BOOT --name $vm >/dev/null \
		2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	avm exec --timeout 240 $vm -- sh -c "for i in \$(seq 1 30); do \
(wget -q -O - http://$S:80/ >/tmp/w.\$i 2>&1 &); done; sleep 8; cat /tmp/w.* | grep -c internet:80" \
		>"$tmp_root/out" 2>&1
	expect_eq "answers to 30 requests" 30 "$(cat "$tmp_root/out")"
	i=0
	until [ "$(count "e['event']=='connlog.lost' and e['vm']=='$vm'")" -ge 1 ]; do
		i=$((i + 1))
		[ $i -gt 30 ] && break
		sleep 1
	done
	[ "$(events "e['event']=='connlog.lost' and e['vm']=='$vm'" | python3 -c 'import json,sys
print(sum(json.loads(l)["unlogged"] for l in sys.stdin))')" -gt 0 ] ||
		fail "no connlog.lost with unlogged > 0"
	opens=$(count "e['event']=='conn.open' and e['vm']=='$vm'")
	[ "$opens" -lt 30 ] || fail "all $opens opens were logged despite log_rate = 3"
	avm rm --force $vm >/dev/null || fail "rm"
}

# The opt-in action: "action = pause" pauses a VM on its first alert (and says so in the event).
t_pause_action() {
	[ -n "${NET_READY:-}" ] || { skip "${NET_WHY:-no network topology}"; return; }
	vm=pause1
	printf 'scan_ports = 3\naction = pause\n' >"$tmp_root/anomaly.conf"
	AGENTVM_ANOMALY_CONF="$tmp_root/anomaly.conf" avm start $BOOT --name $vm >/dev/null \
		2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	# In the background: the exec returns before the VM is paused under it.
	avm exec $vm -- sh -c "for p in 8080 8081 8082 8083 8084; do \
(timeout 3 nc -w 2 $S \$p </dev/null >/dev/null 2>&1 &); done" >/dev/null 2>&1
	i=0
	until [ "$(count "e['event']=='vm.paused' and e['vm']=='$vm'")" -ge 1 ]; do
		i=$((i + 1))
		[ $i -gt 30 ] && break
		sleep 1
	done
	expect_eq "alert with action" 1 "$(count "e['event']=='anomaly' and e['vm']=='$vm' and \
e['rule']=='scan_ports' and e['action']=='pause'")"
	expect_eq "state" paused "$(avm inspect $vm | python3 -c 'import json,sys
print(json.load(sys.stdin)["state"])' 2>/dev/null)"
	avm rm --force $vm >/dev/null || fail "rm"
}

# `agentvm run` (no supervisor) logs its connections too: the allowed one and the dropped one.
t_run_logs_connections() {
	[ -n "${NET_READY:-}" ] || { skip "${NET_WHY:-no network topology}"; return; }
	avm run $BOOT --name run1 -- sh -c "wget -q -O - http://$S:80/; \
timeout 5 nc -w 3 $S 8080 </dev/null; sleep 1" >"$tmp_root/out" 2>"$tmp_root/err"
	expect_eq "run output" "internet:80" "$(cat "$tmp_root/out")"
	expect_eq "conn.open :80" 1 "$(count "e['event']=='conn.open' and e['vm']=='run1' and \
e['dst']=='$S' and e['dport']==80 and e['verdict']=='allowed'")"
	[ "$(count "e['event']=='conn.drop' and e['vm']=='run1' and e['dport']==8080")" -ge 1 ] ||
		fail "no conn.drop for :8080 from run: $(events "e.get('vm')=='run1'")"
	for ev in vm.created vm.ready exec.start exec.end vm.stopped vm.removed; do
		expect_eq "$ev of run1" 1 "$(count "e['event']=='$ev' and e.get('vm')=='run1'")"
	done
}

all_tests="t_lifecycle_and_concurrent_execs t_untrusted_log_dir t_connections_and_scan_alert
t_flood_counts_what_it_cannot_log t_pause_action t_run_logs_connections"
NET_READY=""
NET_WHY=""
if ! NET_WHY=$(net_missing); then
	:
elif net_up "$tmp_root/net" >"$tmp_root/net_up.log" 2>&1; then
	NET_READY=1
	# Closed TCP flows leave conntrack (and give their conn.close) soon, in this test's ns only.
	hx sh -c 'echo 5 >/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait' 2>/dev/null
	hx sh -c 'echo 10 >/proc/sys/net/netfilter/nf_conntrack_udp_timeout' 2>/dev/null
else
	NET_WHY="topology: $(tr '\n' ' ' <"$tmp_root/net_up.log")"
fi
for t in ${ONLY:-$all_tests}; do
	case "$t" in *"${1:-}"*) run_test "$t" ;; esac
done
summary
