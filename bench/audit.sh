#!/bin/sh
# The cost of the audit log and connection logging (issue 12), in ONE run, two VMs side by side in
# the throwaway two-namespace topology of tests/integration/netns.sh: "on" (the default) and
# "off" (started and driven with AGENTVM_AUDIT=off: no audit lines, no conntrack/NFLOG listener,
# no anomaly monitor). Rounds alternate between them and the order flips each round.
#   (a1) exec round trip of `true` (`agentvm exec`, timed on the host: the CLI writes exec.start
#        and exec.end, the supervisor sees the EXIT)
#   (a2) connection rate: C short HTTP requests in a row from the guest (busybox wget to the
#        internet host's :80): each is a conn.open + conn.close line written by the supervisor
#   (a3) bulk upload throughput, one connection of MIB MiB into a sink (timed by the sink)
# Prints a markdown table for bench/RESULTS.md. usage: bench/audit.sh build/agentvm [N] [C] [MIB]
set -u
AVM=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
N=${2:-${BENCH_N:-7}}
C=${3:-100}
MIB=${4:-32}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../tests/integration/netns.sh"

tmp=$(mktemp -d /tmp/avm-bench-audit.XXXXXX)
trap 'net_down; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
export AGENTVM_STATE_DIR=$tmp/state AGENTVM_LOG_DIR=$tmp/log

if ! why=$(net_missing); then
	echo "bench/audit: skipped: $why" >&2
	exit 0
fi
accel=tcg
[ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && accel=kvm
die() {
	echo "bench/audit: $*" >&2
	exit 1
}
# on|off, then the agentvm arguments.
avm() {
	_mode=$1
	shift
	if [ "$_mode" = off ]; then
		AGENTVM_AUDIT=off ip netns exec "$NS_HOST" "$AVM" "$@"
	else
		ip netns exec "$NS_HOST" "$AVM" "$@"
	fi
}
ns_now() { date +%s%N; }
. "$(dirname "$0")/lib.sh"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }

net_up "$tmp/net" >"$tmp/net_up.log" 2>&1 || die "topology: $(cat "$tmp/net_up.log")"
S=$NET_SERVER
net_sink_up 5001 "$tmp/sink.log" || die "sink did not start"
for m in on off; do
	avm $m start --accel $accel --name $m --allow tcp:80 --allow tcp:5001 >/dev/null \
		2>"$tmp/err" || die "start $m: $(cat "$tmp/err")"
done

: >"$tmp/sink.log"
r=0
while [ $r -lt "$N" ]; do
	if [ $((r % 2)) -eq 0 ]; then order="on off"; else order="off on"; fi
	for m in $order; do
		# (a1) 5 execs a round
		for _ in 1 2 3 4 5; do
			t=$(ns_now)
			avm $m exec $m -- true || die "exec $m"
			echo $((($(ns_now) - t) / 1000)) >>"$tmp/a1.$m"
		done
		# (a2)
		t=$(ns_now)
		avm $m exec --timeout 600 $m -- sh -c "i=0; while [ \$i -lt $C ]; do \
wget -q -O /dev/null http://$S:80/ || exit 1; i=\$((i + 1)); done" || die "wget loop $m"
		echo $((($(ns_now) - t) / 1000)) >>"$tmp/a2.$m"
		# (a3)
		avm $m exec --timeout 600 $m -- sh -c "dd if=/dev/zero bs=64k count=$((MIB * 16)) \
2>/dev/null | nc $S 5001" || die "upload $m"
		sleep 0.3
		tail -1 "$tmp/sink.log" | awk '{printf "%.1f\n", $1 / (($3 - $2) / 1e9) / 1e6}' >>"$tmp/a3.$m"
	done
	r=$((r + 1))
done
# conn.open lines of the "on" VM prove the logging ran; none of "off".
opens_on=$(grep -c '"event":"conn.open","vm":"on"' "$tmp/log/audit.jsonl" 2>/dev/null)
opens_off=$(grep -c '"vm":"off"' "$tmp/log/audit.jsonl" 2>/dev/null)
lost=$(grep -c '"event":"connlog.lost","vm":"on"' "$tmp/log/audit.jsonl" 2>/dev/null)
for m in on off; do avm $m rm --force $m >/dev/null; done

a1on=$(median "$tmp/a1.on") a1off=$(median "$tmp/a1.off")
a2on=$(median "$tmp/a2.on") a2off=$(median "$tmp/a2.off")
a3on=$(median "$tmp/a3.on") a3off=$(median "$tmp/a3.off")
cat <<EOF
### Audit and connection logging (bench/audit.sh, N=$N rounds, accel $accel, $(date -u +%Y-%m-%d))

| measure | logging on | logging off | on/off |
| --- | --- | --- | --- |
| (a1) \`agentvm exec VM -- true\` round trip, median of $((N * 5)) | $(awk -v v="$a1on" 'BEGIN {printf "%.1f", v / 1000}') ms | $(awk -v v="$a1off" 'BEGIN {printf "%.1f", v / 1000}') ms | $(ratio "$a1on" "$a1off") |
| (a2) $C HTTP requests in a row from the guest (one exec), median of $N | $(awk -v v="$a2on" 'BEGIN {printf "%.0f", v / 1000}') ms | $(awk -v v="$a2off" 'BEGIN {printf "%.0f", v / 1000}') ms | $(ratio "$a2on" "$a2off") |
| (a3) upload throughput, one connection of $MIB MiB, median of $N | $a3on MB/s | $a3off MB/s | $(ratio "$a3on" "$a3off") |

- "off" = the VM started and driven with \`AGENTVM_AUDIT=off\` (no audit lines, no conntrack/NFLOG
  listener, no anomaly monitor); both VMs nat-filtered with the same policy, rounds interleaved.
- The "on" VM's log got $opens_on conn.open lines (expected $((N * (C + 1))) or so: the wget
  requests and the uploads) and $lost connlog.lost reports; the "off" VM $opens_off lines.
EOF
