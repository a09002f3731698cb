#!/bin/sh
# Run every integration test script against the given agentvm binary.
set -u
AVM=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
export AVM
rc=0
for t in tests/integration/test_*.sh; do
	echo "== $t"
	sh "$t" || rc=1
done
exit $rc
