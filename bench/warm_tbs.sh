#!/bin/sh
# How much guest code a warm `run -- true` makes TCG translate (issue 10): QEMU's translation
# cache is per process and in no snapshot, so every guest path a restored VM runs is translated
# afresh, at several microseconds a block; the count of translation blocks is the load-independent
# measure of the warm path's guest side (wall times on a shared 2-core host swing by +-30 %).
# QEMU runs with `-d in_asm` (a wrapper: a new QEMU hash, so its own template), unjailed (the
# wrapper is a script), and the blocks it translated from the restore to its exit are counted.
# usage: bench/warm_tbs.sh BUILD_DIR [N] [run flags...]  (BUILD_DIR: agentvm + images/)
# KEEP=DIR keeps the last run's qemu.log (the blocks' guest addresses) there.
set -eu
D=$(cd "$1" && pwd)
N=${2:-3}
shift 2 2>/dev/null || shift $#
tmp=$(mktemp -d /tmp/avm-bench-tbs.XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM
. "$(dirname "$0")/lib.sh"
q=$(command -v qemu-system-x86_64)
printf '#!/bin/sh\nexec %s -d in_asm "$@"\n' "$q" >"$tmp/qemu"
chmod +x "$tmp/qemu"
export AGENTVM_STATE_DIR=$tmp/state AGENTVM_CACHE_DIR=$tmp/cache
export AGENTVM_QEMU=$tmp/qemu AGENTVM_JAIL=0
mkdir -p "$tmp/state"
"$D/agentvm" run --accel tcg --network isolated "$@" -- true >/dev/null 2>&1 # the template
: >"$tmp/n"
i=0
while [ $i -lt "$N" ]; do
	# A generated name, as a plain run has (its length is the template's: /etc/hosts keeps
	# its size).
	mkdir "$tmp/state-$i"
	AGENTVM_STATE_DIR=$tmp/state-$i "$D/agentvm" run --accel tcg --network isolated \
		--keep-state "$@" -- true >/dev/null
	log=$(echo "$tmp/state-$i"/vm-*/qemu.log)
	grep -c '^IN:' "$log" >>"$tmp/n"
	[ -n "${KEEP:-}" ] && cp "$log" "$KEEP/qemu.log"
	rm -rf "$tmp/state-$i"
	i=$((i + 1))
done
echo "translation blocks of a warm \`run $* -- true\` ($D):" \
	"median $(median "$tmp/n") of $(tr '\n' ' ' <"$tmp/n")"
