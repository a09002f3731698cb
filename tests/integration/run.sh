#!/bin/sh
# Run every integration test script against the given agentvm binary.
# As root, each script runs in a network namespace of its own (unshare --net): lo up and a veth
# pair as the "uplink" with the default route (through it nothing leaves the namespace), so that
# the default --network nat-filtered builds its taps and its nftables table there, never in the
# machine's own namespace. The namespace dies with the script.
set -u
AVM=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
export AVM
netns=""
[ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null && netns=1
rc=0
for t in tests/integration/test_*.sh; do
	echo "== $t"
	# A script marked "agentvm-test: host-network" needs the machine's network (image builds
	# fetch from the Debian mirror); it starts no VM and makes no tap or rule.
	if [ -n "$netns" ] && ! grep -q '^# agentvm-test: host-network' "$t"; then
		unshare --net -- sh -c 'ip link set lo up &&
			ip link add up0 type veth peer name up1 &&
			ip addr add 198.51.100.1/24 dev up0 && ip link set up0 up && ip link set up1 up &&
			ip route add default via 198.51.100.254 || { echo "run.sh: private netns setup failed"; exit 1; }
			exec sh "$0"' "$t" || rc=1
	else
		sh "$t" || rc=1
	fi
done
exit $rc
