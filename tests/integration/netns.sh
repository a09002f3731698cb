#!/bin/sh
# Sourced by network tests and bench/net.sh: a throwaway two-namespace topology with servers.
#
#   "host" ns (agentvm runs here)                       "internet" ns
#   avm-* taps (made by agentvm)                        lo: 11.0.113.10/32 (the servers)
#   up0 198.51.100.1/24  ----------- veth ----------    up1 198.51.100.2/24
#   default via 198.51.100.2                            10.213.0.0/16 via 198.51.100.1
#   httpd on *:80 and *:22 (the host's own services)
#
# The servers' addresses are public space (11.0.0.0/8), not a documentation range: agentvm closes
# the TEST-NETs to VMs by default with the other special-purpose ranges, so a server there could
# not stand for the internet. Nothing ever leaves these namespaces.
# Internet servers (Debian-packaged tools only), all bound to 11.0.113.10:
#   busybox httpd on TCP 22, 80, 443, 8080, 9418: GET / answers "internet:<port>"; each logs the
#     requests it gets to $net_dir/httpd.<port>.log (-vv)
#   dnsmasq on UDP+TCP 53: example.test -> 203.0.113.10; queries logged to $net_dir/dns.log
#   socat UDP 9999: every datagram appended to $net_dir/udp9999.log
#   the zone also has good.test -> 11.0.113.20 and bad.test -> 11.0.113.21 (httpd on 80 and 443
#     answering "good:<port>" / "bad:<port>"; TTL 0) for --allow-domain
# and, on other addresses of the internet ns:
#   a second DNS server on 11.0.113.53 (UDP+TCP 53, same zone): DNS pinning must keep VMs off it
#   fake private services, httpd on 80 answering "private:<addr>": NET_PRIVATE (cloud metadata,
#     10.x, 172.16.x, 192.168.x, CGNAT, a TEST-NET host), closed to VMs by default
# The internet ns routes the VM pool back through the host, so an inbound attempt is possible and
# fails only because of agentvm's filter.
#
# Nothing here touches the namespace the caller runs in: every link, address, route and server is
# created with `ip -n`/`ip netns exec` inside the two namespaces. net_down (call it from an EXIT
# trap) kills every process in them and deletes them, which deletes their taps, veths and nft
# tables with them.
#
# Use:  . netns.sh; net_missing && net_up DIR; hx CMD (in host ns); ix CMD (in internet ns); net_down
# shellcheck disable=SC2034

NET_ID=${NET_ID:-$$}
NS_HOST=avmt-$NET_ID-host
NS_INET=avmt-$NET_ID-inet
NET_UP_HOST=198.51.100.1
NET_UP_INET=198.51.100.2
NET_SERVER=11.0.113.10
NET_GOOD=11.0.113.20
NET_BAD=11.0.113.21
NET_DNS2=11.0.113.53
NET_PRIVATE="169.254.169.254 10.77.0.10 172.16.77.10 192.168.77.10 100.64.77.10 203.0.113.10"
NET_POOL=10.213.0.0/16
NET_TCP_PORTS="22 80 443 8080 9418"
NET_HOST_PORTS="80 22"
NET_PIDS=""
net_dir=""
net_made_etc_netns=""

hx() { ip netns exec "$NS_HOST" "$@"; }
ix() { ip netns exec "$NS_INET" "$@"; }

# Print what this machine lacks for the topology (nothing and status 0 when all is there).
net_missing() {
	if [ "$(id -u)" != 0 ]; then
		echo "needs root (network namespaces)"
		return 1
	fi
	for t in ip nft socat dnsmasq busybox; do
		command -v $t >/dev/null 2>&1 || {
			echo "$t not installed (make deps)"
			return 1
		}
	done
	[ -c /dev/net/tun ] || {
		echo "/dev/net/tun missing"
		return 1
	}
	return 0
}

# Start CMD in namespace NS in the background, its output to LOG.
net_bg() { # ns log cmd...
	_ns=$1 _log=$2
	shift 2
	ip netns exec "$_ns" "$@" >"$_log" 2>&1 </dev/null &
	NET_PIDS="$NET_PIDS $!"
}

# Wait (up to 10 s) until NS has a listening socket on PROTO (tcp|udp) PORT.
net_wait_listen() { # ns proto port
	_f=-ltn
	[ "$2" = udp ] && _f=-lun
	_i=0
	while ! ip netns exec "$1" ss -H $_f "sport = :$3" 2>/dev/null | grep -q .; do
		_i=$((_i + 1))
		[ $_i -gt 100 ] && {
			echo "netns: nothing listens on $2 $3 in $1"
			return 1
		}
		sleep 0.1
	done
}

# Build the namespaces, links and servers. DIR holds server logs and content. Returns non-zero
# (with the reason on stdout) if anything fails; net_down still cleans up.
net_up() { # dir
	net_dir=$1
	mkdir -p "$net_dir" || return 1
	ip netns add "$NS_HOST" || return 1
	ip netns add "$NS_INET" || return 1
	ip -n "$NS_HOST" link set lo up || return 1
	ip -n "$NS_INET" link set lo up || return 1
	ip -n "$NS_HOST" link add up0 type veth peer name up1 netns "$NS_INET" || return 1
	ip -n "$NS_HOST" addr add "$NET_UP_HOST/24" dev up0 || return 1
	ip -n "$NS_HOST" link set up0 up || return 1
	ip -n "$NS_HOST" route add default via "$NET_UP_INET" || return 1
	ip -n "$NS_INET" addr add "$NET_UP_INET/24" dev up1 || return 1
	ip -n "$NS_INET" addr add "$NET_SERVER/32" dev lo || return 1
	ip -n "$NS_INET" link set up1 up || return 1
	ip -n "$NS_INET" route add "$NET_POOL" via "$NET_UP_HOST" || return 1

	for p in $NET_TCP_PORTS; do
		mkdir -p "$net_dir/www-$p"
		echo "internet:$p" >"$net_dir/www-$p/index.html"
		net_bg "$NS_INET" "$net_dir/httpd.$p.log" busybox httpd -f -vv -p "$NET_SERVER:$p" \
			-h "$net_dir/www-$p"
	done
	for a in $NET_GOOD $NET_BAD $NET_DNS2 $NET_PRIVATE; do
		ip -n "$NS_INET" addr add "$a/32" dev lo || return 1
	done
	for a in good:$NET_GOOD bad:$NET_BAD; do
		for p in 80 443; do
			mkdir -p "$net_dir/www-${a%%:*}-$p"
			echo "${a%%:*}:$p" >"$net_dir/www-${a%%:*}-$p/index.html"
			net_bg "$NS_INET" "$net_dir/httpd.${a%%:*}.$p.log" busybox httpd -f -vv \
				-p "${a#*:}:$p" -h "$net_dir/www-${a%%:*}-$p"
		done
	done
	for a in $NET_PRIVATE; do
		mkdir -p "$net_dir/www-$a"
		echo "private:$a" >"$net_dir/www-$a/index.html"
		net_bg "$NS_INET" "$net_dir/httpd.$a.log" busybox httpd -f -vv -p "$a:80" \
			-h "$net_dir/www-$a"
	done
	mkdir -p "$net_dir/www-host"
	echo "host-own-service" >"$net_dir/www-host/index.html"
	for p in $NET_HOST_PORTS; do
		net_bg "$NS_HOST" "$net_dir/host-httpd.$p.log" busybox httpd -f -vv -p "$p" \
			-h "$net_dir/www-host"
	done
	net_bg "$NS_INET" "$net_dir/dnsmasq.out" dnsmasq --no-daemon --no-resolv --no-hosts \
		--conf-file=/dev/null --pid-file= --user=root --group=root \
		--listen-address="$NET_SERVER" --bind-interfaces \
		--address=/example.test/"$NET_SERVER" --address=/good.test/"$NET_GOOD" \
		--address=/bad.test/"$NET_BAD" --log-queries --log-facility="$net_dir/dns.log"
	net_bg "$NS_INET" "$net_dir/dnsmasq2.out" dnsmasq --no-daemon --no-resolv --no-hosts \
		--conf-file=/dev/null --pid-file= --user=root --group=root \
		--listen-address="$NET_DNS2" --bind-interfaces --address=/example.test/"$NET_SERVER" \
		--log-queries --log-facility="$net_dir/dns2.log"
	: >"$net_dir/udp9999.log"
	net_bg "$NS_INET" "$net_dir/udp9999.out" socat -u UDP4-RECV:9999,bind="$NET_SERVER" \
		OPEN:"$net_dir/udp9999.log",append
	for p in $NET_TCP_PORTS; do net_wait_listen "$NS_INET" tcp "$p" || return 1; done
	for p in $NET_HOST_PORTS; do net_wait_listen "$NS_HOST" tcp "$p" || return 1; done
	net_wait_listen "$NS_INET" tcp 53 || return 1
	net_wait_listen "$NS_INET" udp 53 || return 1
	net_wait_listen "$NS_INET" udp 9999 || return 1
	# Self-check from the host namespace: the topology itself routes (not through any VM).
	hx busybox wget -q -O - "http://$NET_SERVER:80/" 2>&1 | grep -q '^internet:80$' || {
		echo "netns: host ns cannot reach the internet ns's httpd"
		return 1
	}
}

# A TCP sink on NET_SERVER:PORT for throughput: every connection appends
# "<bytes> <first-ns> <last-ns>" (host clock, accept to EOF) to LOG.
net_sink_up() { # port log
	cat >"$net_dir/sink.sh" <<EOF
t0=\$(date +%s%N); n=\$(wc -c); t1=\$(date +%s%N); echo "\$n \$t0 \$t1" >>"$2"
EOF
	net_bg "$NS_INET" "$net_dir/sink.$1.out" socat -u \
		TCP4-LISTEN:"$1",bind="$NET_SERVER",reuseaddr,fork SYSTEM:"sh $net_dir/sink.sh"
	net_wait_listen "$NS_INET" tcp "$1"
}

# What agentvm left in the host namespace: avm-* links, per-VM nft objects, the table itself (the
# last VM out removes it), lease files. Prints one line per thing; nothing when clean.
net_leftovers() { # [leases-dir]
	ip -n "$NS_HOST" -o link show 2>/dev/null | awk -F': ' '$2 ~ /^avm-/ {print "link " $2}'
	if hx nft list table inet agentvm >"$net_dir/nft.list" 2>/dev/null; then
		echo "nft table inet agentvm"
		grep -o 'avm-[0-9a-f]\{4,\}' "$net_dir/nft.list" | sort -u | sed 's/^/nft /'
	fi
	if [ -n "${1:-}" ] && [ -d "$1" ]; then
		for f in "$1"/* "$1"/.tmp.*; do [ -e "$f" ] && echo "lease $(basename "$f")"; done
	fi
	return 0
}

# Kill every process in both namespaces (servers, agentvm supervisors, QEMUs, stray clients),
# then delete them. Safe to call twice and when net_up never ran.
net_down() {
	for p in $NET_PIDS; do kill "$p" 2>/dev/null; done
	for ns in "$NS_HOST" "$NS_INET"; do
		[ -e "/run/netns/$ns" ] || continue
		_i=0
		while _p=$(ip netns pids "$ns" 2>/dev/null) && [ -n "$_p" ]; do
			# shellcheck disable=SC2086
			kill -9 $_p 2>/dev/null
			_i=$((_i + 1))
			[ $_i -gt 50 ] && break
			sleep 0.1
		done
		ip netns del "$ns" 2>/dev/null
	done
	for p in $NET_PIDS; do wait "$p" 2>/dev/null; done
	NET_PIDS=""
	if [ -d "/etc/netns/$NS_HOST" ]; then
		rm -rf "/etc/netns/${NS_HOST:?}"
		[ -n "$net_made_etc_netns" ] && rmdir /etc/netns 2>/dev/null
	fi
	return 0
}

# Give the host namespace its own /etc/resolv.conf (ip netns exec bind-mounts
# /etc/netns/<ns>/resolv.conf over /etc/resolv.conf for the commands it runs). net_down removes it.
net_resolv_conf() { # text
	[ -d /etc/netns ] || net_made_etc_netns=1
	mkdir -p "/etc/netns/$NS_HOST" && printf '%s\n' "$1" >"/etc/netns/$NS_HOST/resolv.conf"
}
