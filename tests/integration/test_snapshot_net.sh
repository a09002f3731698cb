#!/bin/sh
# Networked clones: two VMs restored from one snapshot of a nat-filtered VM get their own tap,
# /30 lease and MAC, learn them through SYNC, and both reach the (fake) internet through the
# filter. Runs inside the throwaway namespaces of netns.sh; never touches the machine's network.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
if [ ! -f "$here/netns.sh" ]; then
	echo "  SKIP t_networked_clones: tests/integration/netns.sh is missing"
	exit 0
fi
. "$here/netns.sh"
trap 'net_down; cleanup_all' EXIT
trap 'exit 130' INT TERM

export AGENTVM_SNAPSHOT_DIR="$tmp_root/snaps"
S=$NET_SERVER
avm() { ip netns exec "$NS_HOST" "$AVM" "$@"; }
gx() { avm exec --timeout 120 "$1" -- sh -c "$2" 2>&1; }
# In a guest: the host's own httpd (netns.sh) on the guest's gateway (a blocked probe waits 5 s).
# shellcheck disable=SC2016 # expanded in the guest
GW='$(ip route | awk "/^default/ {print \$3}")'
HOST_GET="timeout 60 wget -q -O - http://$GW:80/"
HOST_BLOCKED80="timeout 5 wget -q -O - http://$GW:80/ || echo blocked"
HOST_BLOCKED22="timeout 5 wget -q -O - http://$GW:22/ || echo blocked"

# Start `agentvm serve ARGS` in the host namespace (pid in $spid) and wait until it answers.
# Not through avm(): $! must be serve itself (ip netns exec execs it), not a subshell.
serve_up() {
	ip netns exec "$NS_HOST" "$AVM" serve "$@" >"$tmp_root/serve.log" 2>&1 &
	spid=$!
	i=0
	until avm pool status >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -gt 100 ] && { fail "serve did not come up: $(cat "$tmp_root/serve.log")"; break; }
		sleep 0.1
	done
}

t_networked_clones() {
	avm start --accel tcg --boot-timeout 180 --name golden >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	gaddr=$(gx golden 'ip -4 -o addr show dev eth0' | awk '{print $4}')
	gmac=$(gx golden 'cat /sys/class/net/eth0/address')
	expect_eq "golden reaches the internet" "internet:80" "$(gx golden "wget -q -O - http://$S:80/")"
	avm snapshot save golden netbase >/dev/null 2>"$tmp_root/err" || fail "save: $(cat "$tmp_root/err")"
	grep -q '"network":true' "$AGENTVM_SNAPSHOT_DIR/netbase/meta.json" || fail "meta.json: network is not true"
	avm restore netbase --count 2 --name nc >"$tmp_root/out" 2>"$tmp_root/err" || { fail "restore: $(cat "$tmp_root/err")"; avm rm --force golden >/dev/null; return; }
	a1=$(gx nc-1 'ip -4 -o addr show dev eth0' | awk '{print $4}')
	a2=$(gx nc-2 'ip -4 -o addr show dev eth0' | awk '{print $4}')
	m1=$(gx nc-1 'cat /sys/class/net/eth0/address')
	m2=$(gx nc-2 'cat /sys/class/net/eth0/address')
	echo "    golden $gaddr $gmac; nc-1 $a1 $m1; nc-2 $a2 $m2"
	[ -n "$a1" ] && [ "$a1" != "$a2" ] && [ "$a1" != "$gaddr" ] && [ "$a2" != "$gaddr" ] || fail "addresses not distinct: golden $gaddr, $a1, $a2"
	[ -n "$m1" ] && [ "$m1" != "$m2" ] && [ "$m1" != "$gmac" ] || fail "MACs not distinct: golden $gmac, $m1, $m2"
	expect_eq "clone 1 reaches the internet" "internet:80" "$(gx nc-1 "wget -q -O - http://$S:80/")"
	expect_eq "clone 2 reaches the internet" "internet:443" "$(gx nc-2 "wget -q -O - http://$S:443/")"
	expect_eq "clone 1 is still filtered" "blocked" "$(gx nc-1 "timeout 5 wget -q -O - http://$S:8080/ 2>/dev/null || echo blocked" | tail -1)"
	expect_eq "clone hostname" "nc-2" "$(gx nc-2 hostname)"
	expect_eq "clone 1 does not reach the host" "blocked" "$(gx nc-1 "$HOST_BLOCKED80" | tail -1)"
	# restore's policy flags replace the snapshot's; the NIC itself cannot go.
	avm restore netbase --name wide --allow tcp:8080 --allow-host tcp:80 >/dev/null 2>"$tmp_root/err" || fail "restore --allow: $(cat "$tmp_root/err")"
	expect_eq "--allow tcp:8080 opens it" "internet:8080" "$(gx wide "wget -q -O - http://$S:8080/")"
	expect_eq "--allow-host tcp:80 opens the host's :80" "host-own-service" "$(gx wide "$HOST_GET")"
	avm reset wide 2>"$tmp_root/err" || fail "reset wide: $(cat "$tmp_root/err")"
	expect_eq "reset keeps restore's --allow" "internet:8080" "$(gx wide "wget -q -O - http://$S:8080/")"
	expect_eq "reset keeps restore's --allow-host" "host-own-service" "$(gx wide "$HOST_GET")"
	expect_eq "only the host port named" "blocked" "$(gx wide "$HOST_BLOCKED22" | tail -1)"
	avm restore netbase --name nonic --network isolated >/dev/null 2>"$tmp_root/err" && fail "isolated clone of a NIC snapshot"
	expect_contains "no-NIC message" "cannot remove" "$(cat "$tmp_root/err")"
	for v in nc-1 nc-2 wide golden; do avm rm --force "$v" >/dev/null || fail "rm $v"; done
	# serve takes the same network flags: every pool VM gets the policy.
	serve_up --pool netbase --pool-min 1 --pool-max 1 --allow tcp:8080 --allow-host tcp:80
	pv=$(avm pool acquire --timeout 120 2>"$tmp_root/err") || fail "acquire: $(cat "$tmp_root/err") $(cat "$tmp_root/serve.log")"
	if [ -n "$pv" ]; then
		expect_eq "pool VM has serve's --allow" "internet:8080" "$(gx "$pv" "wget -q -O - http://$S:8080/")"
		expect_eq "pool VM has serve's --allow-host" "host-own-service" "$(gx "$pv" "$HOST_GET")"
		avm pool release "$pv" >/dev/null || fail "release"
	fi
	kill "$spid"
	wait "$spid"
	avm snapshot rm netbase
}

# Issue 16: the egress policy by destination (domains, opened ranges) is kept by a snapshot and
# given to its clones, after reset too, and every clone gets a DNS forwarder of its own.
t_domain_policy_survives_snapshots() {
	avm start --accel tcg --boot-timeout 180 --name dgold --dns "$S" --allow-domain good.test \
		--allow-cidr 10.77.0.0/16 >/dev/null 2>"$tmp_root/err" || { fail "start: $(cat "$tmp_root/err")"; return; }
	expect_eq "golden: good.test" "good:80" "$(gx dgold "wget -q -O - http://good.test/")"
	expect_eq "golden: opened range" "private:10.77.0.10" "$(gx dgold "wget -q -O - http://10.77.0.10/")"
	avm snapshot save dgold dombase >/dev/null 2>"$tmp_root/err" || fail "save: $(cat "$tmp_root/err")"
	avm rm --force dgold >/dev/null || fail "rm dgold"
	avm restore dombase --name dc >/dev/null 2>"$tmp_root/err" || { fail "restore: $(cat "$tmp_root/err")"; return; }
	gw=$(gx dc "ip route | awk '/^default/ {print \$3}'")
	expect_eq "clone: resolver is its own forwarder" "nameserver $gw" "$(gx dc 'grep nameserver /etc/resolv.conf')"
	pgrep -f "dnsmasq --conf-file=$AGENTVM_STATE_DIR/dc/dnsmasq.conf" >/dev/null || fail "no dnsmasq for the clone"
	expect_eq "clone: good.test" "good:80" "$(gx dc "wget -q -O - http://good.test/")"
	expect_eq "clone: bad.test does not resolve" "noname" "$(gx dc "nslookup bad.test >/dev/null 2>&1 || echo noname")"
	expect_eq "clone: bad.test's address blocked" "blocked" "$(gx dc "timeout 5 wget -q -O - http://$NET_BAD/ 2>/dev/null || echo blocked" | tail -1)"
	expect_eq "clone: opened range" "private:10.77.0.10" "$(gx dc "wget -q -O - http://10.77.0.10/")"
	expect_eq "clone: metadata closed" "blocked" "$(gx dc "timeout 5 wget -q -O - http://169.254.169.254/ 2>/dev/null || echo blocked" | tail -1)"
	avm reset dc 2>"$tmp_root/err" || fail "reset dc: $(cat "$tmp_root/err")"
	expect_eq "reset: good.test" "good:80" "$(gx dc "wget -q -O - http://good.test/")"
	expect_eq "reset: bad.test's address blocked" "blocked" "$(gx dc "timeout 5 wget -q -O - http://$NET_BAD/ 2>/dev/null || echo blocked" | tail -1)"
	avm rm --force dc >/dev/null || fail "rm dc"
	pgrep -f "dnsmasq --conf-file=$AGENTVM_STATE_DIR/" >/dev/null && fail "a forwarder outlived its VM"
	avm snapshot rm dombase
}

# Issue 16: a pool served with a domain policy: each pooled VM gets a forwarder and a set of its
# own; releasing one leaves no dnsmasq, nft set or tap of it, and serve's stop none at all.
t_pool_with_domain_policy() {
	avm start --accel tcg --boot-timeout 180 --name pgold >/dev/null 2>"$tmp_root/err" ||
		{ fail "start: $(cat "$tmp_root/err")"; return; }
	avm snapshot save pgold pdom >/dev/null 2>"$tmp_root/err" || fail "save: $(cat "$tmp_root/err")"
	avm rm --force pgold >/dev/null || fail "rm pgold"
	serve_up --pool pdom --pool-min 1 --pool-max 2 --dns "$S" --allow-domain good.test
	p1=$(avm pool acquire --timeout 180 2>"$tmp_root/err") || fail "acquire: $(cat "$tmp_root/err")"
	p2=$(avm pool acquire --timeout 180 2>"$tmp_root/err") || fail "acquire 2: $(cat "$tmp_root/err")"
	if [ -z "$p1" ] || [ -z "$p2" ]; then
		kill "$spid"
		wait "$spid"
		avm snapshot rm pdom
		return
	fi
	taps=""
	for v in "$p1" "$p2"; do
		tap=$(sed -n 's/.*"tap": *"\(avm-[0-9a-f]*\)".*/\1/p' "$AGENTVM_STATE_DIR/$v/net.json")
		taps="$taps $tap"
		pgrep -f "dnsmasq --conf-file=$AGENTVM_STATE_DIR/$v/dnsmasq.conf" >/dev/null ||
			fail "$v: no dnsmasq of its own"
		hx nft list set inet agentvm "dom-$tap" >/dev/null 2>&1 || fail "$v: no set dom-$tap"
		gw=$(gx "$v" "ip route | awk '/^default/ {print \$3}'")
		expect_eq "$v: resolver is its own forwarder" "nameserver $gw" \
			"$(gx "$v" 'grep nameserver /etc/resolv.conf')"
		expect_eq "$v: good.test" "good:80" "$(gx "$v" "wget -q -O - http://good.test/")"
		expect_eq "$v: bad.test does not resolve" "noname" \
			"$(gx "$v" "nslookup bad.test >/dev/null 2>&1 || echo noname")"
		expect_eq "$v: bad.test's address blocked" "blocked" \
			"$(gx "$v" "timeout 5 wget -q -O - http://$NET_BAD/ 2>/dev/null || echo blocked" | tail -1)"
	done
	avm pool release "$p1" >/dev/null || fail "release"
	tap1=$(echo $taps | cut -d' ' -f1)
	i=0
	while pgrep -f "dnsmasq --conf-file=$AGENTVM_STATE_DIR/$p1/" >/dev/null ||
		hx nft list set inet agentvm "dom-$tap1" >/dev/null 2>&1 ||
		ip -n "$NS_HOST" link show "$tap1" >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -gt 100 ] && { fail "released $p1 left its dnsmasq, set or tap $tap1"; break; }
		sleep 0.1
	done
	expect_eq "$p2 still resolves after $p1 went" "good:80" "$(gx "$p2" "wget -q -O - http://good.test/")"
	avm pool release "$p2" >/dev/null || fail "release $p2"
	# serve stops the VMs it holds ready (an acquired one would be its caller's, and run on).
	kill "$spid"
	wait "$spid"
	i=0
	while pgrep -f "dnsmasq --conf-file=$AGENTVM_STATE_DIR/" >/dev/null ||
		[ -n "$(net_leftovers "$AGENTVM_STATE_DIR/.net/leases")" ]; do
		i=$((i + 1))
		[ $i -gt 100 ] && {
			fail "serve's stop left: $(pgrep -af "dnsmasq --conf-file=$AGENTVM_STATE_DIR/") $(net_leftovers "$AGENTVM_STATE_DIR/.net/leases" | tr '\n' ' ')"
			break
		}
		sleep 0.1
	done
	avm snapshot rm pdom
}

if ! why=$(net_missing); then
	echo "  SKIP t_networked_clones: $why"
	exit 0
fi
if ! net_up "$tmp_root/net" >"$tmp_root/net_up.log" 2>&1; then
	echo "  FAIL topology: $(tr '\n' ' ' <"$tmp_root/net_up.log")"
	exit 1
fi
echo "networked snapshot tests (TCG)"
run_test t_networked_clones
run_test t_domain_policy_survives_snapshots
run_test t_pool_with_domain_policy
summary
