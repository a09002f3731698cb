#!/bin/sh
# agentvm networking benchmark (issue 4), in ONE run, inside the throwaway two-namespace topology
# of tests/integration/netns.sh (agentvm in a "host" ns, servers in an "internet" ns; nothing in
# the machine's own namespace, no traffic leaves the two):
#   (n1) `agentvm start` + `agentvm rm --force`, --network isolated vs nat-filtered, N rounds,
#        interleaved with the order alternating; the median of the per-round differences is the
#        cost of network set-up + teardown (tap, /30 lease, nft transaction, and their removal)
#   (n2) throughput guest -> internet host through the filter: guest `dd | nc` into a socat sink,
#        timed by the sink with the host clock (accept to EOF)
#   (n3) throughput internet host -> guest: guest `wget -O /dev/null` of a file, timed on the host
#        around `agentvm exec`, minus the median exec round trip of `true`
#   (n4) egress policy set-up (issue 16): the (n1a)+(n1b) window of a VM with --allow-domain and
#        --allow-cidr (its dnsmasq started and waited for) minus --network isolated
#   (n5) DNS lookup latency from the host ns: a VM's forwarder (on its gateway) vs the upstream
#        resolver directly, 200 A queries each, median
#   (n6) --bandwidth 8mbit: a limited VM (upload through the nft limit, download through the tap's
#        tbf) measured while an unlimited VM transfers at the same time
#   (n7) each step of the network's set-up and teardown (build/bench/net-cost), medians and
#        page faults per step
# Prints a markdown table for bench/RESULTS.md. usage: bench/net.sh build/agentvm [N] [MIB]
set -u
AVM=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
N=${2:-${BENCH_N:-10}}
MIB=${3:-64}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../tests/integration/netns.sh"

tmp=$(mktemp -d /tmp/avm-bench-net.XXXXXX)
trap 'net_down; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
export AGENTVM_STATE_DIR=$tmp/state AGENTVM_LOG_DIR=$tmp/log

if ! why=$(net_missing); then
	echo "bench/net: skipped: $why" >&2
	exit 0
fi
# agentvm's own rule (src/vm/host.c): KVM needs /dev/kvm and vmx/svm in the CPU flags.
accel=tcg
[ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && accel=kvm

die() {
	echo "bench/net: $*" >&2
	exit 1
}
avm() { ip netns exec "$NS_HOST" "$AVM" "$@"; }
ns_now() { date +%s%N; }
us2ms() { awk -v v="$1" 'BEGIN {printf "%.1f", v / 1000}'; }
. "$(dirname "$0")/lib.sh"

net_up "$tmp/net" >"$tmp/net_up.log" 2>&1 || die "topology: $(cat "$tmp/net_up.log")"
net_resolv_conf "nameserver $NET_SERVER"
S=$NET_SERVER
echo "bench/net: $N interleaved rounds (accel $accel)" >&2

net_sink_up 5001 "$tmp/sink.log" || die "sink did not start"
head -c $((MIB * 1048576)) /dev/zero >"$net_dir/www-80/big"
et=""
exec_rtt() { # vm: median exec round trip of `true` into $et
	: >"$tmp/exec_true"
	_i=0
	while [ $_i -lt 10 ]; do
		_t=$(ns_now)
		avm exec "$1" -- true || die "exec true"
		echo $((($(ns_now) - _t) / 1000)) >>"$tmp/exec_true"
		_i=$((_i + 1))
	done
	et=$(median "$tmp/exec_true")
}
if [ -z "${EGRESS_ONLY:-}" ]; then # EGRESS_ONLY=1: (n4)-(n6) only
# (n1) start + rm, both modes, one pair per round; order alternates so drift hits both alike.
one() { # mode name -> appends start ms, rm ms to $tmp/<mode>.start / .rm
	_t=$(ns_now)
	avm start --accel $accel --network "$1" --name "$2" >/dev/null 2>"$tmp/err" ||
		die "start --network $1: $(cat "$tmp/err")"
	_t1=$(ns_now)
	# Set-up without the boot's noise: spec.json is written just before the network is set up,
	# qemu.pid just after QEMU is spawned (src/vm/vm.c); the mtimes have ns resolution.
	stat -c '%.9Y' "$AGENTVM_STATE_DIR/$2/spec.json" "$AGENTVM_STATE_DIR/$2/qemu.pid" |
		awk 'NR == 1 {a = $1} NR == 2 {printf "%d\n", ($1 - a) * 1e6}' >>"$tmp/$1.setup"
	avm rm --force "$2" >/dev/null 2>"$tmp/err" || die "rm: $(cat "$tmp/err")"
	_t2=$(ns_now)
	echo $(((_t1 - _t) / 1000)) >>"$tmp/$1.start"
	echo $(((_t2 - _t1) / 1000)) >>"$tmp/$1.rm"
	echo $(((_t2 - _t) / 1000)) >>"$tmp/$1.total"
}
for m in isolated nat-filtered; do : >"$tmp/$m.start"; : >"$tmp/$m.rm"; : >"$tmp/$m.total"; : >"$tmp/$m.setup"; done
# One warm-up round of each (page cache, first nft table creation) that is not counted.
one isolated warm-i
one nat-filtered warm-n
for m in isolated nat-filtered; do : >"$tmp/$m.start"; : >"$tmp/$m.rm"; : >"$tmp/$m.total"; : >"$tmp/$m.setup"; done
i=0
while [ $i -lt "$N" ]; do
	if [ $((i % 2)) = 0 ]; then
		one isolated "iso-$i"
		one nat-filtered "nat-$i"
	else
		one nat-filtered "nat-$i"
		one isolated "iso-$i"
	fi
	i=$((i + 1))
done
[ -z "$(net_leftovers "$AGENTVM_STATE_DIR/.net/leases")" ] ||
	die "leftovers after the start/rm rounds: $(net_leftovers "$AGENTVM_STATE_DIR/.net/leases" | tr '\n' ' ')"
for k in start rm total setup; do
	paste "$tmp/nat-filtered.$k" "$tmp/isolated.$k" | awk '{print $1 - $2}' >"$tmp/diff.$k"
done
# Per round: set-up (spawn window) + teardown (rm) added by the network.
paste "$tmp/diff.setup" "$tmp/diff.rm" | awk '{print $1 + $2}' >"$tmp/diff.cost"

# (n2, n3) one nat-filtered VM; a sink on 5001 (allowed by --allow) and a file on :80.
# Baseline without agentvm's filter and NAT: a VM in --network bridge:avmt-br0, its tap on a bridge
# in the host ns that routes to the internet ns (forwarding on for the bridge, set here inside the
# host ns), so both VMs send through the same host stack, with and without `table inet agentvm`.
ip -n "$NS_HOST" link add avmt-br0 type bridge || die "bridge"
ip -n "$NS_HOST" addr add 192.168.77.1/24 dev avmt-br0 && ip -n "$NS_HOST" link set avmt-br0 up || die "bridge up"
hx sh -c 'echo 1 >/proc/sys/net/ipv4/conf/avmt-br0/forwarding && echo 1 >/proc/sys/net/ipv4/conf/up0/forwarding' || die "forwarding"
ip -n "$NS_INET" route add 192.168.77.0/24 via "$NET_UP_HOST" || die "route"
R=3
et=""
tput() { # vm tag: R uploads and R downloads -> $tmp/up.<tag>, $tmp/down.<tag>
	: >"$tmp/sink.log"
	_i=0
	while [ $_i -lt $R ]; do
		avm exec --timeout 600 "$1" -- sh -c "dd if=/dev/zero bs=64k count=$((MIB * 16)) 2>/dev/null | nc $S 5001" ||
			die "upload $_i from $1 failed"
		_i=$((_i + 1))
	done
	sleep 0.5
	awk -v want=$((MIB * 1048576)) '$1 != want {bad = 1} END {exit bad}' "$tmp/sink.log" ||
		die "the sink got short uploads from $1: $(cat "$tmp/sink.log")"
	awk '{printf "%.1f\n", $1 / (($3 - $2) / 1e9) / 1e6}' "$tmp/sink.log" >"$tmp/up.$2"
	if [ -z "$et" ]; then
		: >"$tmp/exec_true"
		_i=0
		while [ $_i -lt 10 ]; do
			_t=$(ns_now)
			avm exec "$1" -- true || die "exec true"
			echo $((($(ns_now) - _t) / 1000)) >>"$tmp/exec_true"
			_i=$((_i + 1))
		done
		et=$(median "$tmp/exec_true")
	fi
	: >"$tmp/down.$2"
	_i=0
	while [ $_i -lt $R ]; do
		_t=$(ns_now)
		_got=$(avm exec --timeout 600 "$1" -- sh -c "wget -q -O - http://$S/big | wc -c") || die "download $_i to $1 failed"
		_us=$((($(ns_now) - _t) / 1000))
		[ "$(echo "$_got" | tr -d ' ')" = $((MIB * 1048576)) ] || die "download $_i to $1 got $_got bytes"
		awk -v b=$((MIB * 1048576)) -v us="$_us" -v et="$et" 'BEGIN {printf "%.1f\n", b / ((us - et) / 1e6) / 1e6}' >>"$tmp/down.$2"
		_i=$((_i + 1))
	done
}
avm start --accel $accel --name tput --allow tcp:5001 >/dev/null 2>"$tmp/err" || die "start tput: $(cat "$tmp/err")"
tput tput nat
cnt=$(avm net ls --json | tr -d ' \n' | sed -n 's/.*"tx_ok_bytes":\([0-9]*\).*/\1/p')
avm rm --force tput >/dev/null || die "rm tput"
avm start --accel $accel --name tbr --network bridge:avmt-br0 >/dev/null 2>"$tmp/err" || die "start tbr: $(cat "$tmp/err")"
avm exec tbr -- sh -c 'ip addr add 192.168.77.2/24 dev eth0 && ip route add default via 192.168.77.1' ||
	die "bridge guest address"
tput tbr br
avm rm --force tbr >/dev/null || die "rm tbr"
fi

# (n4) the egress policy's set-up, rounds interleaved with isolated ones as in (n1).
POLICY="--allow-domain good.test --allow-domain *.example.test --allow-cidr 10.77.0.0/16"
for m in isolated pol; do : >"$tmp/$m.setup"; : >"$tmp/$m.rm"; done
onep() { # mode name
	_t=$(ns_now)
	if [ "$1" = pol ]; then
		# shellcheck disable=SC2086
		avm start --accel $accel $POLICY --name "$2" >/dev/null 2>"$tmp/err" || die "start $POLICY: $(cat "$tmp/err")"
	elif [ "$1" = nat ]; then
		avm start --accel $accel --name "$2" >/dev/null 2>"$tmp/err" || die "start: $(cat "$tmp/err")"
	else
		avm start --accel $accel --network isolated --name "$2" >/dev/null 2>"$tmp/err" || die "start: $(cat "$tmp/err")"
	fi
	stat -c '%.9Y' "$AGENTVM_STATE_DIR/$2/spec.json" "$AGENTVM_STATE_DIR/$2/qemu.pid" |
		awk 'NR == 1 {a = $1} NR == 2 {printf "%d\n", ($1 - a) * 1e6}' >>"$tmp/$1.setup"
	_t1=$(ns_now)
	avm rm --force "$2" >/dev/null 2>"$tmp/err" || die "rm: $(cat "$tmp/err")"
	echo $((($(ns_now) - _t1) / 1000)) >>"$tmp/$1.rm"
}
onep pol warm-p
for m in isolated pol; do : >"$tmp/$m.setup"; : >"$tmp/$m.rm"; done
i=0
while [ $i -lt "$N" ]; do
	onep pol "pol-$i"
	onep isolated "pi-$i"
	onep nat "pn-$i"
	i=$((i + 1))
done
paste "$tmp/pol.setup" "$tmp/isolated.setup" "$tmp/pol.rm" "$tmp/isolated.rm" |
	awk '{print $1 - $2 + $3 - $4}' >"$tmp/diff.pol"
paste "$tmp/pol.setup" "$tmp/isolated.setup" | awk '{print $1 - $2}' >"$tmp/diff.polsetup"
paste "$tmp/nat.setup" "$tmp/isolated.setup" "$tmp/nat.rm" "$tmp/isolated.rm" |
	awk '{print $1 - $2 + $3 - $4}' >"$tmp/diff.nat"

# (n7) each step of the network's set-up and teardown, library calls without QEMU (net_cost.c).
netcost=$(dirname "$AVM")/bench/net-cost
if [ -x "$netcost" ]; then
	hx "$netcost" "$N" "$S" >"$tmp/netcost.md" 2>"$tmp/err" || die "net-cost: $(cat "$tmp/err")"
else
	echo "(n7) skipped: $netcost not built (make build/bench/net-cost)" >"$tmp/netcost.md"
fi

# (n5) DNS latency through a VM's forwarder vs directly, both asked from the host ns.
cat >"$tmp/dnslat.py" <<'PY'
import socket, struct, sys, time
srv, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
q = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0)
for l in name.split("."):
    q += bytes([len(l)]) + l.encode()
q += b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
for i in range(n):
    t = time.perf_counter_ns(); s.sendto(q, (srv, 53)); r = s.recv(4096)
    if r[3] & 15:
        sys.exit("rcode %d" % (r[3] & 15))
    print((time.perf_counter_ns() - t) // 1000)
PY
avm start --accel $accel --name dnsl --allow-domain good.test >/dev/null 2>"$tmp/err" || die "start dnsl: $(cat "$tmp/err")"
gwd=$(avm net ls --json | tr -d ' \n' | sed -n 's/.*"vm":"dnsl"[^}]*"gateway":"\([0-9.]*\)".*/\1/p')
hx python3 "$tmp/dnslat.py" "$S" good.test 200 >"$tmp/dns.direct" || die "direct DNS"
hx python3 "$tmp/dnslat.py" "$gwd" good.test 200 >"$tmp/dns.fwd" || die "DNS through the forwarder at $gwd"
dpid=$(pgrep -f "dnsmasq --conf-file=$AGENTVM_STATE_DIR/dnsl/")
rss=$(ps -o rss= -p "$dpid" 2>/dev/null | tr -d ' ')
pss=$(awk '/^Pss:/ {print $2}' "/proc/$dpid/smaps_rollup" 2>/dev/null)
avm rm --force dnsl >/dev/null || die "rm dnsl"

# (n6) bandwidth: lim (8mbit up, 40mbit down) and free (unlimited) at the same time.
# The sink tells the two uploads apart by their size: LMIB must differ from MIB.
LMIB=16
[ "$MIB" -ne 16 ] || LMIB=12
avm start --accel $accel --name lim --allow tcp:5001 --bandwidth 8mbit >/dev/null 2>"$tmp/err" || die "start lim: $(cat "$tmp/err")"
avm start --accel $accel --name free --allow tcp:5001 --bandwidth unlimited >/dev/null 2>"$tmp/err" || die "start free: $(cat "$tmp/err")"
: >"$tmp/sink.log"
avm exec --timeout 600 lim -- sh -c "dd if=/dev/zero bs=64k count=$((LMIB * 16)) 2>/dev/null | nc $S 5001" &
lp=$!
avm exec --timeout 600 free -- sh -c "dd if=/dev/zero bs=64k count=$((MIB * 16)) 2>/dev/null | nc $S 5001" || die "free upload"
wait $lp || die "lim upload"
sleep 0.5
awk -v l=$((LMIB * 1048576)) '$1 == l {printf "%.2f\n", $1 / (($3 - $2) / 1e9) / 1e6}' "$tmp/sink.log" >"$tmp/lim.up"
awk -v f=$((MIB * 1048576)) '$1 == f {printf "%.2f\n", $1 / (($3 - $2) / 1e9) / 1e6}' "$tmp/sink.log" >"$tmp/free.up"
# Downloads: limited at 40mbit through the tap's tbf (its rate is on the wire), timed in the guest.
dl() { # vm mib -> MB/s, timed on the host around exec minus the exec round trip
	_t=$(ns_now)
	avm exec --timeout 600 "$1" -- sh -c "wget -q -O - http://$S/big | head -c $(($2 * 1048576)) | wc -c" >/dev/null ||
		die "download to $1"
	awk -v b=$(($2 * 1048576)) -v us=$((($(ns_now) - _t) / 1000)) -v et="$et" 'BEGIN {printf "%.2f\n", b / ((us - et) / 1e6) / 1e6}'
}
[ -n "$et" ] || exec_rtt free
dl lim $LMIB >"$tmp/lim.down" &
lp=$!
dl free "$MIB" >"$tmp/free.down"
wait $lp
avm net ls >"$tmp/netls.txt"
avm rm --force lim >/dev/null || die "rm lim"
avm rm --force free >/dev/null || die "rm free"
[ -z "$(net_leftovers "$AGENTVM_STATE_DIR/.net/leases")" ] ||
	die "leftovers: $(net_leftovers "$AGENTVM_STATE_DIR/.net/leases" | tr '\n' ' ')"

if [ -z "${EGRESS_ONLY:-}" ]; then
d_cost=$(median "$tmp/diff.cost")
verdict=$(awk -v d="$d_cost" 'BEGIN {print (d / 1000 < 20) ? "yes" : "NO"}')
cat <<MD

### Networking (bench/net.sh, N=$N interleaved rounds, accel $accel, $(date -u +%Y-%m-%d))

| what | median | samples | target |
|---|---|---|---|
| (n1) \`start\` + \`rm --force\`, \`--network isolated\` | $(us2ms "$(median "$tmp/isolated.total")") ms | $N | - |
| (n1) \`start\` + \`rm --force\`, \`--network nat-filtered\` | $(us2ms "$(median "$tmp/nat-filtered.total")") ms | $N | - |
| (n1a) set-up: start's spec.json -> qemu.pid window, nat-filtered - isolated | $(us2ms "$(median "$tmp/diff.setup")") ms | $N | - |
| (n1b) teardown: \`rm --force\` wall time, nat-filtered - isolated | $(us2ms "$(median "$tmp/diff.rm")") ms | $N | - |
| (n1) **network set-up + teardown** (median of per-round n1a + n1b) | **$(us2ms "$d_cost") ms** | $N | < 20 ms ($verdict) |
| (n1c) whole start + rm, nat-filtered - isolated (boot noise included) | $(us2ms "$(median "$tmp/diff.total")") ms | $N | - |
| (n2) throughput guest -> internet host through the filter (\`dd \| nc\`, $MIB MiB) | $(median "$tmp/up.nat") MB/s | $R | measured |
| (n2b) same, \`--network bridge\` routed by the host (no agentvm filter, no NAT) | $(median "$tmp/up.br") MB/s | $R | baseline |
| (n3) throughput internet host -> guest through the filter (\`wget\`, $MIB MiB) | $(median "$tmp/down.nat") MB/s | $R | measured |
| (n3b) same, \`--network bridge\` (no agentvm filter, no NAT) | $(median "$tmp/down.br") MB/s | $R | baseline |

- Topology: tests/integration/netns.sh (veth uplink "host" ns -> "internet" ns); servers: socat sink (n2), busybox httpd (n3).
- (n2) is timed by the sink with the host clock (accept to EOF); (n3) on the host around \`agentvm exec\` minus the median \`exec true\` ($(us2ms "$et") ms).
- The nat-filtered VM's tx_ok byte counter after (n2)+(n3): ${cnt:-?} (the filter counted the uploads).
- Per-round differences nat-filtered - isolated, sorted (ms): n1a $(sort -n "$tmp/diff.setup" | awk '{printf "%.1f ", $1 / 1000}')/ n1b $(sort -n "$tmp/diff.rm" | awk '{printf "%.1f ", $1 / 1000}')/ n1c $(sort -n "$tmp/diff.total" | awk '{printf "%.0f ", $1 / 1000}')
- n1a: spec.json is written just before the network is set up and qemu.pid just after QEMU is spawned (src/vm/vm.c), so the window holds the tap, lease, nft transaction and net.json and none of the boot (file times tick with the kernel's coarse clock, 4 ms at HZ=250: n1a is quantised); n1b includes \`rm\`'s 20 ms polling for the supervisor's exit (the bimodal samples).
- Raw (ms, isolated/nat-filtered totals): $(awk '{printf "%.0f ", $1 / 1000}' "$tmp/isolated.total")/ $(awk '{printf "%.0f ", $1 / 1000}' "$tmp/nat-filtered.total"); MB/s up: $(tr '\n' ' ' <"$tmp/up.nat")(bridge $(tr '\n' ' ' <"$tmp/up.br"))/ down: $(tr '\n' ' ' <"$tmp/down.nat")(bridge $(tr '\n' ' ' <"$tmp/down.br"))
MD
fi
cat <<MD

### Egress policy (bench/net.sh, N=$N rounds, accel $accel, $(date -u +%Y-%m-%d))

| what | median | samples | target |
|---|---|---|---|
| (n4) **egress policy set-up + teardown** (--allow-domain x2, --allow-cidr; dnsmasq started and ready), minus isolated | **$(us2ms "$(median "$tmp/diff.pol")") ms** | $N | < 20 ms ($(awk -v d="$(median "$tmp/diff.pol")" 'BEGIN {print (d / 1000 < 20) ? "yes" : "NO"}')) |
| (n4a) of which set-up (spec.json -> qemu.pid window; dnsmasq starts beside QEMU, waited for before the guest runs) | $(us2ms "$(median "$tmp/diff.polsetup")") ms | $N | - |
| (n4b) same rounds, plain nat-filtered (default policy, no forwarder) minus isolated | $(us2ms "$(median "$tmp/diff.nat")") ms | $N | - |
| (n5) DNS A lookup through the VM's forwarder (dnsmasq, no cache, nftset) | $(us2ms "$(median "$tmp/dns.fwd")") ms | 200 | measured |
| (n5b) same lookup asked of the upstream directly | $(us2ms "$(median "$tmp/dns.direct")") ms | 200 | baseline |
| (n6) upload of a VM limited to 8mbit (1.00 MB/s), while an unlimited VM uploads | $(cat "$tmp/lim.up") MB/s | 1 | within 10 % |
| (n6b) upload of the unlimited VM meanwhile ($MIB MiB) | $(cat "$tmp/free.up") MB/s | 1 | ~ (n2) |
| (n6c) download of the limited VM (tbf 8mbit = 1.00 MB/s) while the unlimited one downloads | $(cat "$tmp/lim.down") MB/s | 1 | within 10 % |
| (n6d) download of the unlimited VM meanwhile | $(cat "$tmp/free.down") MB/s | 1 | ~ (n3) |

- (n5) forwarder memory per VM: RSS ${rss:-?} KiB, PSS ${pss:-?} KiB. Samples (ms) forwarder: $(sort -n "$tmp/dns.fwd" | awk 'NR % 40 == 1 {printf "%.2f ", $1 / 1000}') / direct: $(sort -n "$tmp/dns.direct" | awk 'NR % 40 == 1 {printf "%.2f ", $1 / 1000}')
- (n4) per round (ms): $(sort -n "$tmp/diff.pol" | awk '{printf "%.1f ", $1 / 1000}')/ (n4b) $(sort -n "$tmp/diff.nat" | awk '{printf "%.1f ", $1 / 1000}')
- (n6) net ls during the test: $(grep -E '^(lim|free) ' "$tmp/netls.txt" | awk '{print $1": "$NF}' | tr '\n' ' ')

(n7) Steps of the network's set-up and teardown (bench/net_cost.c: net_setup/net_save/net_ready,
then net_teardown as after QEMU ended; no QEMU, N=$N rounds per policy, interleaved):

$(cat "$tmp/netcost.md")
MD
