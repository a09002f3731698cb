#!/bin/sh
# Integration tests for agentvm stats and metrics: real VMs, promtool on the output, the /metrics
# endpoint (404/405, slow and idle clients), and a real Prometheus server scraping
# `serve --metrics-listen`.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

export AGENTVM_SNAPSHOT_DIR="$tmp_root/snaps"
avm() { "$AVM" "$@"; }
probe() { python3 "$here/http_probe.py" "$@"; }
bg_pids=""
stop_bg() {
	for p in $bg_pids; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	bg_pids=""
}
# One metric line's value from `agentvm metrics` output in $1 (exact series $2).
series() { awk -v s="$2" '$1 == s {print $2}' "$1"; }
# A field of the first `stats --json` entry.
jfield() { python3 -c "import json,sys; d=json.load(open(sys.argv[1]))[0]
v=d
for k in sys.argv[2].split('.'): v=v.get(k) if isinstance(v, dict) else None
print('' if v is None else v)" "$1" "$2"; }
# A free TCP port on loopback.
free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
# Wait (up to 30 s) for "metrics on http://ADDR/metrics" in log $1; prints ADDR.
listen_addr() {
	i=0
	while ! grep -q 'metrics on http://' "$1" 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 300 ] && return 1
		sleep 0.1
	done
	sed -n 's|.*metrics on http://\([^/]*\)/metrics.*|\1|p' "$1" | head -1
}

t_stats_and_metrics() {
	avm start --accel tcg --name m1 >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	avm exec m1 -- true || fail "exec true"
	avm exec m1 -- sh -c 'exit 3'
	avm exec m1 -- no-such-command 2>/dev/null
	avm exec m1 -- sh -c 'kill -9 $$'
	# Some memory in use and some packets: one to a closed port (dropped), one on port 80.
	avm exec m1 -- sh -c 'timeout 3 wget -q -O /dev/null http://198.51.100.254:8080/; timeout 3 wget -q -O /dev/null http://198.51.100.254/; true' 2>/dev/null
	avm exec m1 -- sh -c 'head -c 20000000 /dev/zero > /tmp/fill'

	avm stats m1 --json --interval 0.5 >"$tmp_root/stats.json" 2>"$tmp_root/err" || fail "stats --json: $(cat "$tmp_root/err")"
	expect_eq "stats name" "m1" "$(jfield "$tmp_root/stats.json" name)"
	expect_eq "stats state" "running" "$(jfield "$tmp_root/stats.json" state)"
	expect_eq "stats execs" 6 "$(jfield "$tmp_root/stats.json" execs)"
	python3 - "$tmp_root/stats.json" <<'EOF' || fail "stats values: $(cat "$tmp_root/stats.json")"
import json, sys
d = json.load(open(sys.argv[1]))[0]
assert d["cpu_seconds"] > 0, "cpu_seconds"
assert 0 <= d["cpu_percent"] <= 100 * 64, "cpu_percent"
assert d["host_rss_bytes"] > 10 << 20, "rss"
assert 0 < d["host_pss_bytes"] <= d["host_rss_bytes"], "pss"
# /tmp is tmpfs in the guest: the 20 MB file is guest memory in use.
assert d["guest_mem_total_bytes"] > 0, "guest total"
assert 20000000 <= d["guest_mem_used_bytes"] <= d["guest_mem_total_bytes"], "guest used"
assert d["uptime_s"] > 0, "uptime"
assert d["net"]["tx_drop_packets"] > 0, "tx drops"
EOF
	avm stats --interval 0.2 >"$tmp_root/stats.txt" 2>&1 || fail "stats table"
	expect_contains "stats table lists the VM" "m1 " "$(cat "$tmp_root/stats.txt")"
	# --follow: a sample per interval until stopped.
	# "$AVM", not the avm function: $! must be agentvm itself, not a subshell around it.
	"$AVM" stats m1 --json --follow --interval 0.3 >"$tmp_root/follow.json" 2>/dev/null &
	fpid=$!
	sleep 3
	kill "$fpid" 2>/dev/null
	wait "$fpid" 2>/dev/null
	[ "$(wc -l <"$tmp_root/follow.json")" -ge 2 ] || fail "stats --follow printed $(wc -l <"$tmp_root/follow.json") samples"

	avm metrics >"$tmp_root/m.prom" 2>"$tmp_root/err" || fail "metrics: $(cat "$tmp_root/err")"
	promtool check metrics <"$tmp_root/m.prom" >"$tmp_root/promtool.out" 2>&1 || fail "promtool: $(cat "$tmp_root/promtool.out")"
	expect_eq "vms running" 1 "$(series "$tmp_root/m.prom" 'agentvm_vms{state="running"}')"
	expect_eq "per-VM execs" 6 "$(series "$tmp_root/m.prom" 'agentvm_vm_execs_total{vm="m1"}')"
	expect_eq "exec ok" 3 "$(series "$tmp_root/m.prom" 'agentvm_exec_results_total{result="ok"}')"
	expect_eq "exec nonzero" 1 "$(series "$tmp_root/m.prom" 'agentvm_exec_results_total{result="nonzero"}')"
	expect_eq "exec start_failed" 1 "$(series "$tmp_root/m.prom" 'agentvm_exec_results_total{result="start_failed"}')"
	expect_eq "exec signal" 1 "$(series "$tmp_root/m.prom" 'agentvm_exec_results_total{result="signal"}')"
	expect_eq "exec histogram count" 6 "$(series "$tmp_root/m.prom" agentvm_exec_duration_seconds_count)"
	expect_eq "boot histogram count" 1 "$(series "$tmp_root/m.prom" agentvm_boot_duration_seconds_count)"
	[ -n "$(series "$tmp_root/m.prom" 'agentvm_vm_cpu_seconds_total{vm="m1"}')" ] || fail "no cpu series"
	[ "$(series "$tmp_root/m.prom" 'agentvm_vm_network_packets_total{vm="m1",direction="tx",verdict="dropped"}')" -gt 0 ] 2>/dev/null ||
		fail "no dropped tx packets in the metrics"
	# The audit side's anomalies.json, as it writes it: exported per rule.
	printf '{"rules": {"port_scan": 2}}' >"$AGENTVM_STATE_DIR/m1/anomalies.json"
	avm metrics >"$tmp_root/m.prom"
	expect_eq "anomalies" 2 "$(series "$tmp_root/m.prom" 'agentvm_anomalies_total{vm="m1",rule="port_scan"}')"
	# No argv or path as a label value: only the bounded label names.
	labels=$(grep -o '[a-z_]*="' "$tmp_root/m.prom" | sort -u | tr -d '="' | tr '\n' ' ')
	expect_eq "label names" "direction kind le result rule state verdict vm " "$labels"

	# Gone VMs still count: the host-wide sums keep what m1 and a `run` recorded.
	# A follower of a VM that is removed ends with one line (it used to print [] forever).
	"$AVM" stats m1 --json --follow --interval 0.3 >/dev/null 2>"$tmp_root/follow.err" &
	fpid=$!
	avm rm --force m1 >/dev/null || fail "rm"
	w=0
	while kill -0 "$fpid" 2>/dev/null && [ $w -lt 100 ]; do w=$((w + 1)); sleep 0.1; done
	if kill -0 "$fpid" 2>/dev/null; then
		fail "stats --follow still running 10 s after its VM was removed"
		kill "$fpid"
	fi
	wait "$fpid"
	expect_eq "follower's exit code" 1 "$?"
	expect_contains "follower's message" "m1 is gone" "$(cat "$tmp_root/follow.err")"
	# --cold: a real boot (a run restoring m1's boot template would count as a restore).
	avm_run --cold -- true
	expect_eq "run" 0 "$rc"
	avm metrics >"$tmp_root/m2.prom" || fail "metrics after rm"
	expect_eq "exec ok after rm and run" 4 "$(series "$tmp_root/m2.prom" 'agentvm_exec_results_total{result="ok"}')"
	expect_eq "boots after rm and run" 2 "$(series "$tmp_root/m2.prom" agentvm_boot_duration_seconds_count)"
	grep -q 'vm="m1"' "$tmp_root/m2.prom" && fail "series of a removed VM"
	promtool check metrics <"$tmp_root/m2.prom" >/dev/null 2>&1 || fail "promtool after rm"
}

# A command the VM takes with it (QEMU killed mid-command) counts as an error.
t_lost_exec() {
	avm start --accel tcg --name m2 --network isolated >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	avm metrics >"$tmp_root/l0.prom"
	e0=$(series "$tmp_root/l0.prom" 'agentvm_exec_results_total{result="error"}')
	avm exec m2 -- sleep 600 >/dev/null 2>&1 &
	xpid=$!
	i=0
	until avm exec m2 -- sh -c 'ps | grep -q "[s]leep 600"'; do
		i=$((i + 1))
		[ $i -gt 60 ] && { fail "the sleep never started"; break; }
		sleep 0.5
	done
	avm kill m2 || fail "kill"
	wait "$xpid"
	avm wait m2 --state stopped --timeout 30 >/dev/null 2>&1
	avm metrics >"$tmp_root/l1.prom"
	expect_eq "errors after a lost command" $((e0 + 1)) "$(series "$tmp_root/l1.prom" 'agentvm_exec_results_total{result="error"}')"
	expect_eq "vms crashed or stopped" 1 "$(($(series "$tmp_root/l1.prom" 'agentvm_vms{state="stopped"}') + $(series "$tmp_root/l1.prom" 'agentvm_vms{state="crashed"}')))"
	avm rm --force m2 >/dev/null || fail "rm"
}

t_bad_flags() {
	avm stats nosuch 2>"$tmp_root/err"
	expect_eq "stats unknown VM" 1 $?
	expect_contains "stats unknown VM message" "no VM named" "$(cat "$tmp_root/err")"
	avm stats --interval 0 2>/dev/null
	expect_eq "stats bad interval" 125 $?
	avm metrics --listen nonsense 2>"$tmp_root/err"
	expect_eq "metrics bad address" 125 $?
	expect_contains "bad address message" "ADDR:PORT" "$(cat "$tmp_root/err")"
	avm metrics extra 2>/dev/null
	expect_eq "metrics extra argument" 125 $?
	avm serve --pool nosuch --metrics-listen 127.0.0.1 2>"$tmp_root/err"
	expect_eq "serve bad metrics address" 125 $?
	expect_contains "serve bad address message" "--metrics-listen" "$(cat "$tmp_root/err")"
	# A port in use: one clear line, non-zero, nothing left.
	"$AVM" metrics --listen 127.0.0.1:0 2>"$tmp_root/ml0.log" &
	bg_pids=$!
	addr=$(listen_addr "$tmp_root/ml0.log") || fail "no listen line"
	avm metrics --listen "$addr" 2>"$tmp_root/err"
	expect_eq "port in use" 1 $?
	expect_contains "port in use message" "cannot listen on $addr" "$(cat "$tmp_root/err")"
	stop_bg
}

t_endpoint() {
	"$AVM" metrics --listen 127.0.0.1:0 2>"$tmp_root/ml.log" &
	mpid=$!
	bg_pids="$mpid"
	addr=$(listen_addr "$tmp_root/ml.log") || { fail "no listen line: $(cat "$tmp_root/ml.log")"; stop_bg; return; }
	host=${addr%:*}
	port=${addr##*:}
	probe get "http://$addr/metrics" >"$tmp_root/get.out" || fail "GET /metrics"
	expect_eq "GET /metrics status" 200 "$(head -1 "$tmp_root/get.out")"
	tail -n +2 "$tmp_root/get.out" | promtool check metrics >/dev/null 2>&1 || fail "promtool on the endpoint's body"
	expect_eq "GET / status" 404 "$(probe get "http://$addr/" | head -1)"
	expect_eq "POST status" 405 "$(probe get "http://$addr/metrics" "" POST | head -1)"
	expect_eq "DELETE status" 405 "$(probe get "http://$addr/metrics" "" DELETE | head -1)"

	# Slowloris: 16 connections trickling headers from 127.0.0.1 (its per-address limit) and
	# more beyond it; meanwhile another client is served at once.
	probe slowloris "$host" "$port" 24 12 >"$tmp_root/slow.out" 2>&1 &
	spid=$!
	sleep 3
	expect_eq "GET during slowloris" 200 "$(probe get "http://$addr/metrics" 127.0.0.2 | head -1)"
	wait "$spid"
	closed=$(cat "$tmp_root/slow.out")
	echo "    slowloris: $closed of 24 trickling connections closed by the server"
	[ "$closed" -ge 8 ] 2>/dev/null || fail "connections beyond the per-address limit were kept: $closed"
	# An idle connection is closed after the timeout.
	idle=$(probe idle "$host" "$port" 60)
	echo "    idle connection closed after ${idle} s"
	[ "$idle" != never ] && [ "$idle" != data ] || fail "idle connection: $idle"
	kill -0 "$mpid" 2>/dev/null || fail "the endpoint died"
	expect_eq "GET after the attack" 200 "$(probe get "http://$addr/metrics" | head -1)"
	stop_bg
}

t_prometheus_scrapes_serve() {
	avm start --accel tcg --name golden --network isolated >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	avm snapshot save golden gold >/dev/null 2>"$tmp_root/err" || fail "save: $(cat "$tmp_root/err")"
	avm rm --force golden >/dev/null
	"$AVM" serve --pool gold --pool-min 1 --pool-max 1 --metrics-listen 127.0.0.1:0 2>"$tmp_root/serve.log" &
	bg_pids=$!
	addr=$(listen_addr "$tmp_root/serve.log") || { fail "serve: $(cat "$tmp_root/serve.log")"; stop_bg; return; }
	ppt=$(free_port)
	mkdir -p "$tmp_root/prom"
	cat >"$tmp_root/prom/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: agentvm
    static_configs:
      - targets: ['$addr']
EOF
	prometheus --config.file="$tmp_root/prom/prometheus.yml" --storage.tsdb.path="$tmp_root/prom/data" \
		--web.listen-address="127.0.0.1:$ppt" >"$tmp_root/prom/log" 2>&1 &
	bg_pids="$bg_pids $!"
	got=$(probe prom 127.0.0.1 "$ppt" 'up{job="agentvm"} == 1' 90)
	expect_contains "prometheus scraped agentvm" '"job": "agentvm"' "$got"
	got=$(probe prom 127.0.0.1 "$ppt" 'agentvm_pool_vms{state="ready"} == 1' 120)
	expect_contains "pool ready series arrived" '"state": "ready"' "$got"
	got=$(probe prom 127.0.0.1 "$ppt" 'agentvm_restore_duration_seconds_count >= 1' 60)
	expect_contains "restore histogram arrived" "agentvm_restore_duration_seconds_count" "$got"
	got=$(probe prom 127.0.0.1 "$ppt" 'agentvm_vm_cpu_seconds_total' 30)
	expect_contains "per-VM cpu series arrived" '"vm": "' "$got"
	stop_bg
	w=0
	while [ -n "$(ls -A "$AGENTVM_STATE_DIR" | grep -vx -e .net -e .metrics)" ] && [ $w -lt 100 ]; do w=$((w + 1)); sleep 0.1; done
	avm snapshot rm gold >/dev/null 2>&1
}

for t in ${ONLY:-t_stats_and_metrics t_lost_exec t_bad_flags t_endpoint t_prometheus_scrapes_serve}; do
	run_test "$t"
done
stop_bg
summary
