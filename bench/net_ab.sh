#!/bin/sh
# Before/after of the network's set-up and teardown in ONE run: two agentvm binaries (A = before,
# B = after) started and removed with --network isolated, nat-filtered and an egress policy
# (--allow-domain x2 + --allow-cidr), N rounds, interleaved, inside tests/integration/netns.sh's
# throwaway namespaces. Per binary and mode: the set-up window (spec.json -> qemu.pid mtimes:
# lease, tap, nft, dnsmasq spawn) and the wall time of `rm --force`; then what the network adds
# over isolated (median of per-round differences) and the B/A ratio.
# usage: bench/net_ab.sh A_AGENTVM B_AGENTVM [N]   (root; AGENTVM_IMAGES if not next to them)
set -u
A=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
B=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
N=${3:-10}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../tests/integration/netns.sh"
tmp=$(mktemp -d /tmp/avm-bench-netab.XXXXXX)
trap 'net_down; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
export AGENTVM_STATE_DIR=$tmp/state
die() {
	echo "bench/net_ab: $*" >&2
	exit 1
}
if ! why=$(net_missing); then
	echo "bench/net_ab: skipped: $why" >&2
	exit 0
fi
net_up "$tmp/net" >"$tmp/net_up.log" 2>&1 || die "topology: $(cat "$tmp/net_up.log")"
net_resolv_conf "nameserver $NET_SERVER"
ns_now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
one() { # A|B mode name -> "setup_us rm_us" appended to $tmp/<A|B>.<mode>
	_bin=$A
	[ "$1" = B ] && _bin=$B
	case $2 in
	pol) set -- "$1" "$2" "$3" --allow-domain good.test --allow-domain '*.example.test' --allow-cidr 10.77.0.0/16 ;;
	*) set -- "$1" "$2" "$3" --network "$2" ;;
	esac
	_ab=$1 _m=$2 _nm=$3
	shift 3
	ip netns exec "$NS_HOST" "$_bin" start --accel tcg "$@" --name "$_nm" >/dev/null 2>"$tmp/err" ||
		die "$_ab start $_m: $(cat "$tmp/err")"
	_su=$(stat -c '%.9Y' "$AGENTVM_STATE_DIR/$_nm/spec.json" "$AGENTVM_STATE_DIR/$_nm/qemu.pid" |
		awk 'NR == 1 {a = $1} NR == 2 {printf "%d\n", ($1 - a) * 1e6}')
	_t=$(ns_now)
	ip netns exec "$NS_HOST" "$_bin" rm --force "$_nm" >/dev/null 2>"$tmp/err" || die "$_ab rm: $(cat "$tmp/err")"
	echo "$_su $((($(ns_now) - _t) / 1000))" >>"$tmp/$_ab.$_m"
}
MODES="isolated nat-filtered pol"
for ab in A B; do for m in $MODES; do one $ab $m "w$ab-$m"; done; done # warm-up, not counted
for ab in A B; do for m in $MODES; do : >"$tmp/$ab.$m"; done; done
i=0
while [ $i -lt "$N" ]; do
	if [ $((i % 2)) = 0 ]; then order="A B"; else order="B A"; fi
	for ab in $order; do for m in $MODES; do one $ab $m "r$i$ab-$m"; done; done
	i=$((i + 1))
done
[ -z "$(net_leftovers "$AGENTVM_STATE_DIR/.net/leases")" ] ||
	die "leftovers: $(net_leftovers "$AGENTVM_STATE_DIR/.net/leases" | tr '\n' ' ')"
ms() { awk -v v="$1" 'BEGIN {printf "%.1f", v / 1000}'; }
# Per round: (mode - isolated) of set-up + rm, same binary, same round.
for ab in A B; do for m in nat-filtered pol; do
	paste "$tmp/$ab.$m" "$tmp/$ab.isolated" | awk '{print $1 + $2 - $3 - $4}' >"$tmp/$ab.$m.cost"
	paste "$tmp/$ab.$m" "$tmp/$ab.isolated" | awk '{print $2 - $4}' >"$tmp/$ab.$m.rmcost"
done; done
cat <<MD

### Network set-up + teardown before/after (bench/net_ab.sh, N=$N interleaved rounds, $(date -u +%Y-%m-%d), load $(cut -d' ' -f1-3 /proc/loadavg))

| what (median, ms) | A (before) | B (after) | B/A |
|---|---|---|---|
MD
for m in nat-filtered pol; do
	a=$(median <"$tmp/A.$m.cost") b=$(median <"$tmp/B.$m.cost")
	echo "| $m: set-up window + \`rm --force\`, minus isolated | $(ms "$a") | $(ms "$b") | $(awk -v a="$a" -v b="$b" 'BEGIN {printf (a > 0 ? "%.2f" : "-"), b / a}') |"
	a=$(median <"$tmp/A.$m.rmcost") b=$(median <"$tmp/B.$m.rmcost")
	echo "| $m: of which \`rm --force\` | $(ms "$a") | $(ms "$b") | $(awk -v a="$a" -v b="$b" 'BEGIN {printf (a > 0 ? "%.2f" : "-"), b / a}') |"
done
for m in $MODES; do
	echo "| raw $m: set-up window / rm wall | $(ms "$(awk '{print $1}' "$tmp/A.$m" | median)") / $(ms "$(awk '{print $2}' "$tmp/A.$m" | median)") | $(ms "$(awk '{print $1}' "$tmp/B.$m" | median)") / $(ms "$(awk '{print $2}' "$tmp/B.$m" | median)") | |"
done
echo
echo "- per-round costs (ms), A nat: $(sort -n "$tmp/A.nat-filtered.cost" | awk '{printf "%.0f ", $1 / 1000}')/ B nat: $(sort -n "$tmp/B.nat-filtered.cost" | awk '{printf "%.0f ", $1 / 1000}')"
echo "- A pol: $(sort -n "$tmp/A.pol.cost" | awk '{printf "%.0f ", $1 / 1000}')/ B pol: $(sort -n "$tmp/B.pol.cost" | awk '{printf "%.0f ", $1 / 1000}')"
