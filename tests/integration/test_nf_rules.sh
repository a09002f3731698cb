#!/bin/sh
# Integration test of netfilter/ without any VM: the nft rules, NAT, links and taps of the library,
# proven with real traffic between network namespaces this script creates (and always deletes).
#
#   g  (guest stand-in)  eth0 10.213.0.2/30 --veth-- avm-t1  \
#   g2 (second guest)    eth0 10.213.0.6/30 --veth-- avm-t2   h (agentvm's host) up0 --veth-- eth0  i
#                                                            /   192.0.2.1/24       11.0.0.2/24
# The "h" ends of the guest veths are named avm-* and play the taps: a real tap's other end is an fd
# (QEMU's), so nothing could put a namespace's traffic on it without a frame pump; the rules only
# see the interface name, which is the same. Taps themselves are tested on their own (t_tap).
# Nothing here touches the root namespace: every command runs under `ip netns exec`.
# Usage: sh tests/integration/test_nf_rules.sh   (root; from anywhere)
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
B=${B:-$repo/build}
PASSED=0
FAILED=0
FAILED_NAMES=""
id=$$
H=avmt-h-$id G=avmt-g-$id G2=avmt-g2-$id I=avmt-i-$id
tmp=$(mktemp -d /tmp/avmt-nf.XXXXXX)
PIDS=""
SERVER_LOGS=""
TOOL=$B/nf_tool
# Fake private services in the internet namespace (all closed to VMs by default).
PRIVATE="169.254.169.254 10.77.0.10 172.16.77.10 192.168.77.10 100.64.77.10 203.0.113.10"

cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	for p in $PIDS; do wait "$p" 2>/dev/null; done
	for n in $H $G $G2 $I; do ip netns del "$n" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" != 0 ]; then
	echo "SKIP test_nf_rules: needs root (network namespaces)"
	echo "nf: 0 passed, 0 failed"
	exit 0
fi

# The driver is built by hand: the Makefile builds the library, not test tools.
mkdir -p "$B"
if ! make -C "$repo" -s B="$B" "$B/libnf.a" >/dev/null ||
	! gcc -std=gnu17 -O1 -g -Wall -Wextra -Werror -Wno-unused-parameter -I"$repo/netfilter" \
		"$repo/netfilter/tools/nf_tool.c" "$B/libnf.a" \
		$(pkg-config --cflags --libs json-c libnl-3.0 libnl-route-3.0 libnftables) -o "$TOOL"; then
	echo "FAIL build nf_tool"
	echo "nf: 0 passed, 1 failed"
	exit 1
fi

ok() { PASSED=$((PASSED + 1)); echo "ok   $1"; }
bad() { FAILED=$((FAILED + 1)); FAILED_NAMES="$FAILED_NAMES $1"; echo "FAIL $1${2:+: $2}"; }
check() { # name command...: pass when the command succeeds
	_n=$1; shift
	if "$@" >"$tmp/out" 2>&1; then ok "$_n"; else bad "$_n" "$(head -c 300 "$tmp/out")"; fi
}
check_not() { # name command...: pass when the command fails
	_n=$1; shift
	if "$@" >"$tmp/out" 2>&1; then bad "$_n" "succeeded but must not"; else ok "$_n"; fi
}
inh() { ip netns exec "$H" "$@"; }
ing() { ip netns exec "$G" "$@"; }
ing2() { ip netns exec "$G2" "$@"; }
ini() { ip netns exec "$I" "$@"; }

# --- tiny servers and client ------------------------------------------------------------------
cat >"$tmp/srv.py" <<'PY'
import selectors, socket, sys
# srv.py ADDR tcp:PORT... udp:PORT...: answer "hello PORT from PEER" to every connection/datagram.
sel = selectors.DefaultSelector()
addr = sys.argv[1]
for spec in sys.argv[2:]:
    proto, port = spec.split(":")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(port)))
    if proto == "tcp":
        s.listen(16)
    sel.register(s, selectors.EVENT_READ, (proto, int(port)))
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        proto, port = key.data
        if proto == "tcp":
            c, peer = key.fileobj.accept()
            c.sendall(("hello %d from %s\n" % (port, peer[0])).encode())
            c.close()
        else:
            data, peer = key.fileobj.recvfrom(2048)
            key.fileobj.sendto(("hello %d from %s\n" % (port, peer[0])).encode(), peer)
PY
cat >"$tmp/q.py" <<'PY'
import socket, struct, sys, random
# q.py SERVER NAME [tcp]: one A query; prints "RCODE addr,addr ttl"; exit 2 without an answer.
srv, name = sys.argv[1], sys.argv[2]
tcp = len(sys.argv) > 3 and sys.argv[3] == "tcp"
q = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0)
for l in name.split("."):
    q += bytes([len(l)]) + l.encode()
q += b"\0" + struct.pack(">HH", 1, 1)
try:
    if tcp:
        s = socket.create_connection((srv, 53), timeout=2)
        s.sendall(struct.pack(">H", len(q)) + q)
        n = struct.unpack(">H", s.recv(2))[0]; r = b""
        while len(r) < n:
            r += s.recv(n - len(r))
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
        s.sendto(q, (srv, 53)); r = s.recv(4096)
except OSError as e:
    print("noanswer", e); sys.exit(2)
p, addrs, ttl = len(q), [], None
for _ in range(struct.unpack(">H", r[6:8])[0]):
    while True:
        if r[p] >= 192: p += 2; break
        if r[p] == 0: p += 1; break
        p += r[p] + 1
    t, c, tt, rl = struct.unpack(">HHIH", r[p:p + 10]); p += 10
    if t == 1:
        addrs.append(socket.inet_ntoa(r[p:p + 4])); ttl = tt
    p += rl
print({0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}.get(r[3] & 15, r[3] & 15),
      ",".join(addrs) or "-", "-" if ttl is None else ttl)
PY
cat >"$tmp/flood.py" <<'PY'
import socket, sys
# flood.py HOST PORT N: N UDP datagrams, each from a new source port (a new conntrack entry).
socks = []
for i in range(int(sys.argv[3])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
    except OSError:
        pass
    socks.append(s)
PY
cat >"$tmp/arp.py" <<'PY'
import socket, struct, sys
# arp.py IFACE TARGET_IP N: N ARP requests for TARGET_IP, each with a forged sender IP and MAC.
ifc, tip, n = sys.argv[1], socket.inet_aton(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifc, 0))
for i in range(n):
    mac = bytes([0x02, 0, 0, 0, 0x10, i])
    sip = socket.inet_aton("10.213.0.%d" % (100 + i))
    arp = struct.pack(">HHBBH", 1, 0x0800, 6, 4, 1) + mac + sip + b"\0" * 6 + tip
    s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
PY
cat >"$tmp/cli.py" <<'PY'
import socket, sys
# cli.py tcp|udp HOST PORT [SRC]: print the server's answer; exit 1 on no answer within 2 s.
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(2)
if len(sys.argv) > 4:
    s.bind((sys.argv[4], 0))
try:
    if proto == "tcp":
        s.connect((host, port))
        data = s.recv(100)
    else:
        s.sendto(b"q", (host, port))
        data = s.recv(100)
except OSError as e:
    print("no answer:", e)
    sys.exit(1)
sys.stdout.write(data.decode())
sys.exit(0 if data else 1)
PY
start_server() { # netns addr specs...
	_ns=$1; shift
	# The log is named explicitly and waited for by name: a glob over "$tmp"/srv.* also
	# matched srv.py itself (which contains "ready") and could run before the background
	# shell had created the logs, so the first check raced the server's bind (CI: "tcp 22
	# allowed: Connection refused").
	ip netns exec "$_ns" python3 "$tmp/srv.py" "$@" >"$tmp/log.$_ns.$1" 2>&1 &
	PIDS="$PIDS $!"
	SERVER_LOGS="$SERVER_LOGS $tmp/log.$_ns.$1"
}
wait_ready() {
	for _ in $(seq 50); do grep -q ready "$1" 2>/dev/null && return 0; sleep 0.1; done
	echo "server $1 did not start: $(cat "$1")"; return 1
}
gcli() { ing python3 "$tmp/cli.py" "$@"; }

# --- topology -----------------------------------------------------------------------------------
setup() {
	for n in $H $G $G2 $I; do ip netns add "$n" || return 1; ip netns exec "$n" ip link set lo up; done
	ip -n "$H" link add avm-t1 type veth peer name eth0 netns "$G" || return 1
	ip -n "$H" link add avm-t2 type veth peer name eth0 netns "$G2" || return 1
	ip -n "$H" link add up0 type veth peer name eth0 netns "$I" || return 1
	ip -n "$G" link set eth0 address 52:54:00:00:00:01
	ip -n "$G2" link set eth0 address 52:54:00:00:00:02
	# Guest addresses come from the pool (lease dir inside our tmp dir).
	set -- $("$TOOL" pool-alloc "$tmp/leases" vm1) || return 1
	GUEST1=$4 HOST1=$3
	set -- $("$TOOL" pool-alloc "$tmp/leases" vm2) || return 1
	GUEST2=$4 HOST2=$3
	ip -n "$G" addr add "$GUEST1/30" dev eth0 && ip -n "$G" link set eth0 up &&
		ip -n "$G" route add default via "$HOST1" || return 1
	ip -n "$G2" addr add "$GUEST2/30" dev eth0 && ip -n "$G2" link set eth0 up &&
		ip -n "$G2" route add default via "$HOST2" || return 1
	# The library configures the host ends (address, up, forwarding on that interface only).
	inh "$TOOL" configure avm-t1 "$HOST1/30" || return 1
	inh "$TOOL" configure avm-t2 "$HOST2/30" || return 1
	inh "$TOOL" configure up0 11.0.0.1/24 || return 1
	ip -n "$H" route add default via 11.0.0.2 || return 1
	ip -n "$I" addr add 11.0.0.2/24 dev eth0 && ip -n "$I" link set eth0 up || return 1
	# Only so that "internet -> guest" fails because of the filter, not for lack of a route.
	ip -n "$I" route add 10.213.0.0/16 via 11.0.0.1 || return 1
	start_server "$I" 11.0.0.2 tcp:22 tcp:53 tcp:80 tcp:443 tcp:8080 tcp:9418 udp:53 udp:9999
	for a in $PRIVATE 11.0.0.53 11.0.0.54 11.0.0.80 11.0.0.81 11.0.0.82; do
		ip -n "$I" addr add "$a/32" dev lo || return 1
	done
	for a in $PRIVATE 11.0.0.80 11.0.0.81 11.0.0.82; do start_server "$I" "$a" tcp:80 tcp:8080; done
	start_server "$I" 11.0.0.53 udp:53 tcp:53
	ip netns exec "$I" dnsmasq --no-daemon --no-resolv --no-hosts --conf-file=/dev/null \
		--pid-file= --user=root --group=root --listen-address=11.0.0.54 --bind-interfaces \
		--address=/good.test/11.0.0.80 --address=/bad.test/11.0.0.81 \
		--address=/x.sub.test/11.0.0.82 --address=/rebind.test/10.77.0.10 --local-ttl=3600 \
		>"$tmp/upstream-dns.log" 2>&1 &
	PIDS="$PIDS $!"
	start_server "$G" 0.0.0.0 tcp:22
	start_server "$G2" 0.0.0.0 tcp:22
	start_server "$H" 0.0.0.0 tcp:2222
	for f in $SERVER_LOGS; do wait_ready "$f" || return 1; done
}

vm1_add() { inh "$TOOL" vm-add avm-t1 vm1 "$GUEST1" "$HOST1" 52:54:00:00:00:01 "$@"; }
vm2_add() { inh "$TOOL" vm-add avm-t2 vm2 "$GUEST2" "$HOST2" 52:54:00:00:00:02 "$@"; }
counter() { # tap field(tx_ok|tx_drop|rx_ok|rx_drop) -> packets
	inh "$TOOL" counters "$1" | awk -v f="$2" '{ for (i = 1; i <= NF; i++) if ($i == f) print $(i + 1) }'
}

if ! setup >"$tmp/setup.log" 2>&1; then
	bad setup "$(cat "$tmp/setup.log")"
	echo "nf: $PASSED passed, $FAILED failed"
	exit 1
fi
ok setup

check "pool gave distinct /30s" test "$GUEST1" != "$GUEST2"

# DNS is pinned to the VM's resolver (11.0.0.2 here), so each VM names it.
check "vm1 add" vm1_add default none dns=11.0.0.2
check "vm2 add" vm2_add default none dns=11.0.0.2
check "re-add is idempotent (no duplicated rules)" vm1_add default none dns=11.0.0.2
n=$(inh nft list chain inet agentvm out-avm-t1 | grep -c 'ct state new tcp dport {')
check "one allowlist rule after re-add" test "$n" = 1

for p in 22 53 80 443 9418; do
	check "guest -> internet tcp $p allowed" gcli tcp 11.0.0.2 $p
done
check "guest -> its resolver udp 53 allowed" gcli udp 11.0.0.2 53
check "masquerade: the internet sees the host's address" sh -c \
	"ip netns exec $G python3 $tmp/cli.py tcp 11.0.0.2 80 | grep -q 'from 11.0.0.1$'"
check_not "guest -> internet tcp 8080 dropped" gcli tcp 11.0.0.2 8080
check_not "guest -> internet udp 9999 dropped" gcli udp 11.0.0.2 9999
check_not "guest -> internet udp 53 to another server than the resolver dropped" gcli udp 11.0.0.53 53
check_not "internet -> guest tcp 22 dropped" ini python3 "$tmp/cli.py" tcp "$GUEST1" 22
check_not "vm1 -> vm2 dropped" gcli tcp "$GUEST2" 22
check_not "vm2 -> vm1 dropped" ing2 python3 "$tmp/cli.py" tcp "$GUEST1" 22
check_not "guest -> host service dropped" gcli tcp "$HOST1" 2222
check_not "host -> guest new connection dropped" inh python3 "$tmp/cli.py" tcp "$GUEST1" 22

# Anti-spoofing: a second address in the guest, then a forged MAC.
ip -n "$G" addr add 10.213.200.66/32 dev eth0 2>/dev/null
check_not "spoofed source address dropped" gcli tcp 11.0.0.2 80 10.213.200.66
ip -n "$G" addr del 10.213.200.66/32 dev eth0 2>/dev/null
ip -n "$G" link set eth0 address 52:54:00:00:00:99
ip -n "$H" neigh flush dev avm-t1 2>/dev/null
check_not "spoofed MAC dropped" gcli tcp 11.0.0.2 80
ip -n "$G" link set eth0 address 52:54:00:00:00:01
ip -n "$H" neigh flush dev avm-t1 2>/dev/null
check "real MAC works again" gcli tcp 11.0.0.2 80

tx_ok=$(counter avm-t1 tx_ok) tx_drop=$(counter avm-t1 tx_drop) rx_ok=$(counter avm-t1 rx_ok)
rx_drop=$(counter avm-t1 rx_drop)
check "counters: tx_ok > 0 ($tx_ok)" test "${tx_ok:-0}" -gt 0
check "counters: tx_drop > 0 ($tx_drop)" test "${tx_drop:-0}" -gt 0
check "counters: rx_ok > 0 ($rx_ok)" test "${rx_ok:-0}" -gt 0
check "counters: rx_drop > 0 ($rx_drop)" test "${rx_drop:-0}" -gt 0
gcli tcp 11.0.0.2 80 >/dev/null 2>&1
check "counters grow with traffic" test "$(counter avm-t1 tx_ok)" -gt "$tx_ok"
check "drops are logged with a per-VM prefix and a rate limit" sh -c \
	"ip netns exec $H nft list chain inet agentvm drop-tx-avm-t1 | grep -q 'limit rate 10/second .*log prefix \"avm-drop vm1 out: \"'"

# --- destinations closed by default -----------------------------------------------------------
for a in $PRIVATE; do
	check "host itself reaches the fake service $a (topology)" inh python3 "$tmp/cli.py" tcp "$a" 80
	check_not "guest -> $a:80 closed by default" gcli tcp "$a" 80
done
check_not "guest -> the host's uplink address closed" gcli tcp 11.0.0.1 2222
check "closed drops counted apart" test "$(counter avm-t1 closed)" -gt 0
check "vm1 with ranges opened: 10.77.0.0/16, 169.254.169.254:tcp:80" \
	vm1_add default none dns=11.0.0.2 open=10.77.0.0/16 open=169.254.169.254:tcp:80
check "opened range reachable on an allowed port" gcli tcp 10.77.0.10 80
check_not "opened range still obeys the port allowlist (8080)" gcli tcp 10.77.0.10 8080
check "opened address:port reachable" gcli tcp 169.254.169.254 80
check_not "opened address:port only that port" gcli tcp 169.254.169.254 8080
check_not "other private ranges still closed" gcli tcp 192.168.77.10 80
check_not "vm2 (no opened range) still closed" ing2 python3 "$tmp/cli.py" tcp 10.77.0.10 80

# --- DNS pinned ---------------------------------------------------------------------------------
check "vm1 back to the default policy" vm1_add default none dns=11.0.0.2
check "DNS to the resolver, udp" gcli udp 11.0.0.2 53
check "DNS to the resolver, tcp" gcli tcp 11.0.0.2 53
dns0=$(counter avm-t1 dns)
check_not "DNS to a second server, udp, dropped" gcli udp 11.0.0.53 53
check_not "DNS to a second server, tcp, dropped" gcli tcp 11.0.0.53 53
check "DNS drops counted apart" test "$(counter avm-t1 dns)" -gt "$dns0"
check "opt-in: --allow udp:53 opens DNS to any public server" vm1_add tcp:80,udp:53 none dns=11.0.0.2
check "opt-in: udp 53 to the second server" gcli udp 11.0.0.53 53
check_not "opt-in of udp only: tcp 53 elsewhere still dropped" gcli tcp 11.0.0.53 53

# --- domain allowlist: dnsmasq with the generated configuration, in h ---------------------------
"$TOOL" dns-config avm-t1 vm1 "$HOST1" 11.0.0.54 3 good.test '*.sub.test' rebind.test \
	>"$tmp/dns.conf"
check "vm1 in domain mode (TTL 3 s)" vm1_add default none dns=11.0.0.54 domains=3
ip netns exec "$H" dnsmasq --conf-file="$tmp/dns.conf" >"$tmp/fwd.log" 2>&1 &
fwd_pid=$!
PIDS="$PIDS $fwd_pid"
for _ in $(seq 50); do inh ss -Hlun "sport = :53" | grep -q "$HOST1" && break; sleep 0.1; done
q() { ing python3 "$tmp/q.py" "$@"; }
check_not "good.test's address by hard-coded IP before any lookup: dropped" gcli tcp 11.0.0.80 80
check "good.test resolves through the forwarder, TTL capped" sh -c \
	"ip netns exec $G python3 $tmp/q.py $HOST1 good.test | grep -qx 'NOERROR 11.0.0.80 3'"
check "good.test connects after the lookup" gcli tcp 11.0.0.80 80
check_not "good.test on a port not allowed: dropped" gcli tcp 11.0.0.80 8080
check "the set holds the address" sh -c "ip netns exec $H $TOOL counters avm-t1 | grep -q ' set 1\$'"
check "bad.test: NXDOMAIN" sh -c "ip netns exec $G python3 $tmp/q.py $HOST1 bad.test | grep -q '^NXDOMAIN'"
check_not "bad.test's address: dropped" gcli tcp 11.0.0.81 80
check "*.sub.test: x.sub.test resolves" sh -c \
	"ip netns exec $G python3 $tmp/q.py $HOST1 x.sub.test | grep -q '^NOERROR 11.0.0.82'"
check "*.sub.test: x.sub.test connects" gcli tcp 11.0.0.82 80
check "*.sub.test: sub.test itself is not allowed" sh -c \
	"ip netns exec $G python3 $tmp/q.py $HOST1 sub.test | grep -q '^NXDOMAIN'"
check "DNS over tcp to the forwarder" sh -c \
	"ip netns exec $G python3 $tmp/q.py $HOST1 good.test tcp | grep -q '^NOERROR 11.0.0.80'"
check "an allowed name answering a private address gets no address (rebind)" sh -c \
	"ip netns exec $G python3 $tmp/q.py $HOST1 rebind.test | grep -q '^NOERROR - '"
check_not "the upstream directly: dropped (the forwarder is the only DNS)" q 11.0.0.54 good.test
check_not "the resolver of the non-domain policy: dropped" gcli udp 11.0.0.2 53
check_not "private ranges stay closed in domain mode" gcli tcp 10.77.0.10 80
sleep 4
check_not "after the TTL (3 s idle) the address is gone" gcli tcp 11.0.0.80 80
check "a new lookup opens it again" sh -c \
	"ip netns exec $G python3 $tmp/q.py $HOST1 good.test | grep -q '^NOERROR 11.0.0.80'"
check "and it connects" gcli tcp 11.0.0.80 80
ing python3 - "$HOST1" <<'PY' >/dev/null 2>&1
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
q = struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x04good\x04test\x00\x00\x01\x00\x01"
for i in range(2000):
    s.sendto(q, (sys.argv[1], 53))
PY
check "a query flood is rate limited (dns drops counted)" test "$(counter avm-t1 dns)" -gt 1000
sleep 1
check "the forwarder answers after the flood" sh -c \
	"ip netns exec $G python3 $tmp/q.py $HOST1 good.test | grep -q '^NOERROR 11.0.0.80'"
check "vm2 in domain mode too (no lookups of its own)" vm2_add default none dns=11.0.0.54 domains=3
check_not "vm1's lookups open nothing for vm2" ing2 python3 "$tmp/cli.py" tcp 11.0.0.80 80
check "vm2 back to the default policy" vm2_add default none dns=11.0.0.2
kill "$fwd_pid" 2>/dev/null

# --- conntrack and connection-rate bounds; ARP; tap sysctls -----------------------------------------
check "vm1 with conns=50 and udp:9999" vm1_add tcp:80,udp:9999 none dns=11.0.0.2 conns=50
ct0=$(inh cat /proc/sys/net/netfilter/nf_conntrack_count)
ing python3 "$tmp/flood.py" 11.0.0.2 9999 3000
ct1=$(inh cat /proc/sys/net/netfilter/nf_conntrack_count)
check "a 3000-flow flood leaves at most 50 new conntrack entries (+$((ct1 - ct0)))" \
	test $((ct1 - ct0)) -le 52
check "over-limit drops counted" test "$(counter avm-t1 conn)" -gt 2000
check "vm2 keeps working during vm1's flood" ing2 python3 "$tmp/cli.py" tcp 11.0.0.2 443
check "vm1 with a new-connection rate of 5/s" vm1_add tcp:80,udp:9999 none dns=11.0.0.2 rate=5
c0=$(counter avm-t1 conn)
ing python3 "$tmp/flood.py" 11.0.0.2 9999 100
check "new connections over the rate dropped" test "$(counter avm-t1 conn)" -gt $((c0 + 50))
check "vm1 default again" vm1_add default none dns=11.0.0.2
ip -n "$H" neigh flush dev avm-t1 2>/dev/null
ing python3 "$tmp/arp.py" eth0 "$HOST1" 30
sleep 0.2
n_neigh=$(ip -n "$H" neigh show dev avm-t1 | grep -vc FAILED)
check "30 forged ARP requests: no neighbour entries on the host ($n_neigh)" test "$n_neigh" -le 1
check "forged ARP counted" test "$(counter avm-t1 arp)" -ge 30
check "the guest's own ARP still works" gcli tcp 11.0.0.2 80
for kv in arp_ignore=1 arp_announce=2 arp_filter=1 rp_filter=1; do
	check "tap sysctl ${kv%=*} = ${kv#*=}" test "$(inh cat /proc/sys/net/ipv4/conf/avm-t1/${kv%=*})" = "${kv#*=}"
done
if [ -e /proc/sys/net/ipv6 ]; then
	check "no IPv6 on the tap" test "$(inh cat /proc/sys/net/ipv6/conf/avm-t1/disable_ipv6)" = 1
	ip -n "$G" -6 addr add fd00::2/64 dev eth0 nodad 2>/dev/null
	check_not "IPv6 from the guest goes nowhere" ing ping -6 -c1 -W1 ff02::1%eth0
fi

# Bandwidth: VM -> world an nft byte limit, world -> VM a tbf qdisc on the tap.
check "vm1 with bw=2500000:65536" vm1_add default none dns=11.0.0.2 bw=2500000:65536
check "the nft limit VM -> world" sh -c \
	"ip netns exec $H nft list chain inet agentvm out-avm-t1 | grep -q 'limit rate over 2500000 bytes/second burst 64 kbytes drop'"
check "tbf on the tap" inh "$TOOL" shape avm-t1 2500000 65536
check "tbf has the rate (20Mbit)" sh -c "ip netns exec $H tc qdisc show dev avm-t1 | grep -q 'tbf 1: root .*rate 20Mbit burst 64Kb'"
check "shaped guest still talks" gcli tcp 11.0.0.2 80
check_not "shape refuses a zero rate" inh "$TOOL" shape avm-t1 0 65536
check "vm1 default again, unlimited" vm1_add default none dns=11.0.0.2

# Policy changes: --allow tcp:8080 opens exactly that; host ports; deny-all.
check "vm1 re-add with tcp:8080 added" vm1_add tcp:80,tcp:443,tcp:22,tcp:9418,tcp:8080 none dns=11.0.0.2
check "tcp 8080 now allowed" gcli tcp 11.0.0.2 8080
check_not "udp 9999 still dropped" gcli udp 11.0.0.2 9999
check "vm1 host port tcp:2222 allowed" vm1_add default tcp:2222
check "guest -> host tcp 2222 allowed" gcli tcp "$HOST1" 2222
check_not "tcp 8080 dropped again" gcli tcp 11.0.0.2 8080
check "vm1 deny-all-egress" vm1_add none none
check_not "deny-all: tcp 80 dropped" gcli tcp 11.0.0.2 80
check_not "deny-all (no resolver given): udp 53 dropped" gcli udp 11.0.0.2 53
check "vm2 unaffected by vm1's policy" ing2 python3 "$tmp/cli.py" tcp 11.0.0.2 80

check "vm list names both" sh -c "[ \"\$(ip netns exec $H $TOOL vm-list | tr '\n' ' ')\" = 'avm-t1 avm-t2 ' ]"
check "vm1 remove" inh "$TOOL" vm-del avm-t1 "$GUEST1"
check "vm1 remove again (idempotent)" inh "$TOOL" vm-del avm-t1 "$GUEST1"
check "nothing of vm1 left in the ruleset" sh -c \
	"! ip netns exec $H nft list ruleset | grep -q -e avm-t1 -e '$GUEST1'"
check_not "vm1 counters gone" inh "$TOOL" counters avm-t1
check_not "removed vm fails closed (tcp 80 dropped)" gcli tcp 11.0.0.2 80
check "vm2 still works" ing2 python3 "$tmp/cli.py" tcp 11.0.0.2 443
check "vm2 remove" inh "$TOOL" vm-del avm-t2 "$GUEST2"
check "table delete" inh "$TOOL" table-delete
check "ruleset empty after table delete" sh -c "[ -z \"\$(ip netns exec $H nft list ruleset)\" ]"
check "table delete when absent" inh "$TOOL" table-delete

# Errors: no CAP_NET_ADMIN gives the one-line EPERM reason (still inside our namespace).
inh setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all \
	"$TOOL" base >"$tmp/eperm" 2>&1
check "no CAP_NET_ADMIN -> needs root" grep -q "needs root (CAP_NET_ADMIN)" "$tmp/eperm"

# Taps: create (refuses an existing name), configure, forwarding on that tap only, delete.
check "tap create" inh "$TOOL" tap-create avm-tap9
check "tap is a persistent vnet_hdr tap" sh -c \
	"ip -n $H -d link show avm-tap9 | grep -q 'tun type tap pi off vnet_hdr on persist on'"
check_not "tap create refuses an existing name" inh "$TOOL" tap-create avm-tap9
check "tap configure" inh "$TOOL" configure avm-tap9 10.213.0.9/30
check "tap has its /30" sh -c "ip -n $H -br addr show avm-tap9 | grep -q 10.213.0.9/30"
check "forwarding on for the tap" test "$(inh cat /proc/sys/net/ipv4/conf/avm-tap9/forwarding)" = 1
check "global ip_forward untouched in h" test "$(inh cat /proc/sys/net/ipv4/ip_forward)" = 0
check "tap delete" inh "$TOOL" link-delete avm-tap9
check_not "tap gone" inh ip link show avm-tap9

# Leases: 10 allocations at once are distinct; release frees.
lpids=""
for n in 0 1 2 3 4 5 6 7 8 9; do
	"$TOOL" pool-alloc "$tmp/leases10" "p$n" >"$tmp/lease.$n" &
	lpids="$lpids $!"
done
for p in $lpids; do wait "$p"; done
check "10 concurrent leases distinct" test "$(cat "$tmp"/lease.* | awk '{print $1}' | sort -u | wc -l)" = 10
check "lease release" "$TOOL" pool-release "$tmp/leases" 0

echo "nf: $PASSED passed, $FAILED failed${FAILED_NAMES:+ (failed:$FAILED_NAMES)}"
[ "$FAILED" -eq 0 ]
