#!/bin/sh
# Files in and out benchmark, standalone (bench/run.sh calls it). In ONE run, interleaved:
#   a 256 MiB file in and out of a running VM with `agentvm cp`, against the raw agent stream
#   (`exec -- cat`), against the 9p share (dd in the guest) and an ext4 workspace disk;
#   `cp` of a 5,000-file tree in and out; `git status` on that tree on the share vs on a disk
#   (needs a root image with git: agent or base in the image store, else the row says why).
# MB/s are 10^6 bytes/s, medians of N. Prints a markdown table. usage: bench/files.sh AVM [N]
set -eu
AVM=$1
N=${2:-3}
[ "$N" -gt 5 ] && N=5 # each round moves ~2 GiB under TCG: 5 is plenty for a median
tmp=$(mktemp -d /tmp/avm-bench-files.XXXXXX)
# The image store (for the git row) lives in the real cache dir: AGENTVM_CACHE_DIR is kept.
export AGENTVM_STATE_DIR=$tmp/state AGENTVM_LOG_DIR=$tmp/log
cleanup() {
	for d in "$AGENTVM_STATE_DIR"/*; do [ -d "$d" ] && "$AVM" rm --force "$(basename "$d")" >/dev/null 2>&1; done
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

accel=tcg
"$AVM" run --accel kvm --network isolated -- true >/dev/null 2>&1 && accel=kvm
net="--network isolated"
MB=256
bytes=$((MB * 1048576))
now() { date +%s%N; }
# MB/s for $bytes moved since $1
rate() { awk -v b="$bytes" -v ns=$(($(now) - $1)) 'BEGIN {printf "%.1f\n", b / 1e6 / (ns / 1e9)}'; }
secs() { awk -v ns=$(($(now) - $1)) 'BEGIN {printf "%.2f\n", ns / 1e9}'; }
. "$(dirname "$0")/lib.sh"

mkdir -p "$tmp/share" "$tmp/out" "$tmp/content"
head -c $bytes /dev/urandom >"$tmp/big"
img=$tmp/work.ext4
mkfs.ext4 -q -F "$img" 768M >/dev/null 2>&1
# A source checkout's shape: 5,000 small files in 100 directories.
mk_tree() {
	d=0
	while [ $d -lt 100 ]; do
		mkdir -p "$1/dir$d"
		f=0
		while [ $f -lt 50 ]; do
			printf 'file %d/%d\n%0800d\n' $d $f 0 >"$1/dir$d/f$f.c"
			f=$((f + 1))
		done
		d=$((d + 1))
	done
}
mk_tree "$tmp/tree"

# shellcheck disable=SC2086
"$AVM" start --accel $accel $net --memory 1536 --name bf --share "$tmp/share:/share" \
	--disk "$img:/disk" >/dev/null
for s in raw_in raw_out cp_in cp_out p9_w p9_r disk_w disk_r tree_in tree_out; do : >"$tmp/$s"; done
echo "bench: files, $N interleaved rounds (accel $accel)" >&2
i=0
while [ $i -lt "$N" ]; do
	t=$(now); "$AVM" exec bf -- sh -c 'cat >/root/raw' <"$tmp/big"; rate "$t" >>"$tmp/raw_in"
	t=$(now); "$AVM" exec bf -- cat /root/raw >/dev/null; rate "$t" >>"$tmp/raw_out"
	"$AVM" exec bf -- rm -f /root/raw /root/big
	t=$(now); "$AVM" cp -q "$tmp/big" bf:/root/big; rate "$t" >>"$tmp/cp_in"
	rm -f "$tmp/out/big"
	t=$(now); "$AVM" cp -q bf:/root/big "$tmp/out/"; rate "$t" >>"$tmp/cp_out"
	cmp -s "$tmp/big" "$tmp/out/big" || { echo "bench: cp out differs" >&2; exit 1; }
	t=$(now); "$AVM" exec bf -- dd if=/root/big of=/share/big bs=1M 2>/dev/null; rate "$t" >>"$tmp/p9_w"
	t=$(now); "$AVM" exec bf -- dd if=/share/big of=/dev/null bs=1M 2>/dev/null; rate "$t" >>"$tmp/p9_r"
	t=$(now); "$AVM" exec bf -- dd if=/root/big of=/disk/big bs=1M conv=fsync 2>/dev/null; rate "$t" >>"$tmp/disk_w"
	"$AVM" exec bf -- sh -c 'echo 3 >/proc/sys/vm/drop_caches'
	t=$(now); "$AVM" exec bf -- dd if=/disk/big of=/dev/null bs=1M 2>/dev/null; rate "$t" >>"$tmp/disk_r"
	"$AVM" exec bf -- rm -rf /share/big /disk/big /root/tree
	t=$(now); "$AVM" cp -q "$tmp/tree" bf:/root; secs "$t" >>"$tmp/tree_in"
	rm -rf "$tmp/out/tree"
	t=$(now); "$AVM" cp -q bf:/root/tree "$tmp/out"; secs "$t" >>"$tmp/tree_out"
	i=$((i + 1))
done
"$AVM" rm --force bf >/dev/null

# git status on the share vs a disk, in a root image that has git.
git_row="| \`git status\`, 5,000 files | skipped: no root image with git (agent or base) in the image store | | |"
gimg=""
for n in agent base; do
	[ -e "${AGENTVM_CACHE_DIR:-/var/cache/agentvm}/images/names/$n" ] && { gimg=$n; break; }
done
if [ -n "$gimg" ] && command -v git >/dev/null; then
	mkdir -p "$tmp/gshare"
	cp -a "$tmp/tree" "$tmp/gshare/repo"
	(cd "$tmp/gshare/repo" && git init -q && git add -A && git -c user.name=b -c user.email=b@b commit -qm t)
	mkfs.ext4 -q -F "$tmp/g.ext4" 256M >/dev/null 2>&1
	# shellcheck disable=SC2086
	"$AVM" start --accel $accel $net --memory 1024 --name bg --image "$gimg" \
		--share "$tmp/gshare:/share" --disk "$tmp/g.ext4:/disk" >/dev/null
	"$AVM" exec bg -- sh -c 'cp -a /share/repo /disk/repo && git config --global safe.directory "*" && git -C /disk/repo status -s >/dev/null && git -C /share/repo status -s >/dev/null'
	: >"$tmp/g9"
	: >"$tmp/gd"
	i=0
	while [ $i -lt "$N" ]; do
		t=$(now); "$AVM" exec bg -- git -C /share/repo status -s >/dev/null; secs "$t" >>"$tmp/g9"
		t=$(now); "$AVM" exec bg -- git -C /disk/repo status -s >/dev/null; secs "$t" >>"$tmp/gd"
		i=$((i + 1))
	done
	"$AVM" rm --force bg >/dev/null
	git_row="| \`git status\`, 5,000 files (image $gimg), s | $(median "$tmp/g9") (9p) | $(median "$tmp/gd") (disk) | $(awk -v a="$(median "$tmp/g9")" -v b="$(median "$tmp/gd")" 'BEGIN {printf "%.1fx", a / b}') |"
fi

ri=$(median "$tmp/raw_in")
ro=$(median "$tmp/raw_out")
ci=$(median "$tmp/cp_in")
co=$(median "$tmp/cp_out")
echo "Accel $accel, $N rounds, medians; a $MB MiB random file; 9p: security_model=mapped-xattr, msize 512 KiB, cache=none."
echo
echo "| what | in (host -> guest) | out (guest -> host) | notes |"
echo "|---|---|---|---|"
echo "| raw agent stream (\`exec -- cat\`), MB/s | $ri | $ro | the baseline |"
echo "| \`agentvm cp\`, MB/s | $ci | $co | cp/raw: $(ratio "$ci" "$ri") in, $(ratio "$co" "$ro") out |"
echo "| 9p share (dd in the guest), MB/s | $(median "$tmp/p9_w") (write) | $(median "$tmp/p9_r") (read) | guest <-> host directory |"
echo "| ext4 disk (dd in the guest), MB/s | $(median "$tmp/disk_w") (write, fsync) | $(median "$tmp/disk_r") (read, cold) | qcow2 overlay |"
echo "| \`agentvm cp\` of 5,000 small files, s | $(median "$tmp/tree_in") | $(median "$tmp/tree_out") | 100 dirs x 50 files of ~820 B |"
echo "$git_row"
