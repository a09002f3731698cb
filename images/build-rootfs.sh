#!/bin/sh
# SPDX-License-Identifier: MIT
# The root file system builder behind `agentvm image build` and `image import` (src/image_build.c
# runs it; it is not meant to be run by hand). Every step works in one work dir WORK that the
# caller made (images/.build-*) and removes on failure, so nothing half-made gets a final name:
#
#   build-rootfs.sh tree WORK         Debian tree in WORK/tree from WORK/in/ (see below) with
#                                     mmdebstrap; agent CLIs installed with npm on the host into
#                                     WORK/npm and copied in; WORK/packages.tsv, WORK/npm.tsv
#   build-rootfs.sh import WORK SRC   OCI image SRC into WORK/oci (skopeo), unpacked exactly
#                                     (umoci raw unpack: whiteouts, owners, modes, setuid) into
#                                     WORK/tree; its config into WORK/config.json
#   build-rootfs.sh mkfs WORK         WORK/tree -> WORK/rootfs.ext4 (sparse, reproducible)
#
# WORK/in/ (one item a line): suite, packages, npm, runs (shell commands run in the chroot),
# warms (the same, after the clean-up of caches and logs: what they write is kept),
# files ("SRC<TAB>DST"), ca/*.crt, epoch (SOURCE_DATE_EPOCH), clamp (present: clamp file times
# to the epoch), uuid (the file system's UUID and hash seed), size (MiB; empty: from the tree). Progress lines go to fd 3 (the caller's
# terminal); everything else to stdout/stderr (the caller's log, scanned for the known errors).
set -eu

step=$1
WORK=$2
IN=$WORK/in
SELF=$(readlink -f "$0")

progress() { echo "image: $*" >&3; }
# fd 3 is the caller's progress channel; run by hand, it is stderr.
{ true >&3; } 2>/dev/null || exec 3>&2

epoch() { cat "$IN/epoch" 2>/dev/null || echo 1704067200; }

lines() { [ -f "$IN/$1" ] && grep -v '^[[:space:]]*$' "$IN/$1" || true; }

# Files no agent reads: documentation, manuals, translations (as Debian's own slim images do).
DPKG_EXCLUDES="--dpkgopt=path-exclude=/usr/share/man/* --dpkgopt=path-exclude=/usr/share/doc/*
--dpkgopt=path-include=/usr/share/doc/*/copyright --dpkgopt=path-exclude=/usr/share/info/*
--dpkgopt=path-exclude=/usr/share/locale/* --dpkgopt=path-include=/usr/share/locale/locale.alias
--dpkgopt=path-exclude=/usr/share/lintian/* --dpkgopt=path-exclude=/usr/share/linda/*"

# Install the recipe's npm packages on the host (its npm honours npm's `libc` field; the
# image's node needs none of npm's network set-up, and the registry's TLS proxy is trusted
# here) into WORK/npm, later copied to /usr/local in the image.
npm_install() {
	pkgs=$(lines npm | tr '\n' ' ')
	[ -n "$pkgs" ] || return 0
	command -v npm >/dev/null || { echo "agentvm-error: npm not found on the host" >&2; exit 1; }
	progress "npm install $pkgs(on the host)"
	# shellcheck disable=SC2086
	npm install -g --prefix "$WORK/npm" --no-fund --no-audit --no-update-notifier \
		--loglevel=error $pkgs
	# An npm that ignores the `libc` field (Debian's 9.2) also installs the musl builds: a
	# Debian guest is glibc, so they are dead weight (hundreds of MB each).
	find "$WORK/npm/lib/node_modules" -mindepth 1 -maxdepth 4 -type d \
		\( -name '*-linux-*-musl' -o -name '*-linuxmusl-*' \) -prune -exec rm -rf {} +
	: >"$WORK/npm.tsv"
	for p in $pkgs; do
		# "name@range" -> name (a scoped name keeps its leading @)
		n=$(printf '%s' "$p" | sed -E 's/^(@?[^@]+)@.*/\1/')
		v=$(node -p "require('$WORK/npm/lib/node_modules/$n/package.json').version")
		printf '%s\t%s\n' "$n" "$v" >>"$WORK/npm.tsv"
	done
}

# Run inside mmdebstrap's customize hook: $3 is the new root, with /proc, /sys, /dev mounted.
customize() {
	ROOT=$3
	if [ -d "$WORK/npm" ]; then
		progress "copying npm packages into /usr/local"
		cp -a "$WORK/npm/." "$ROOT/usr/local/"
	fi
	lines files | while IFS="	" read -r src dst; do
		mkdir -p "$ROOT$(dirname "$dst")"
		cp -a "$src" "$ROOT$dst"
	done
	if [ -n "$(ls "$IN/ca" 2>/dev/null)" ]; then
		progress "adding $(ls "$IN/ca" | wc -l) CA certificate(s) to the trust store"
		[ -x "$ROOT/usr/sbin/update-ca-certificates" ] || {
			echo "agentvm-error: --ca-cert needs the ca-certificates package in the image" >&2
			exit 1
		}
		mkdir -p "$ROOT/usr/local/share/ca-certificates"
		cp "$IN/ca/"*.crt "$ROOT/usr/local/share/ca-certificates/"
		chroot "$ROOT" update-ca-certificates >/dev/null
	fi
	lines runs | while IFS= read -r cmd; do
		progress "run: $cmd"
		chroot "$ROOT" /bin/sh -c "$cmd" </dev/null
	done
	# What differs between two builds of the same packages: logs, caches, the machine id.
	rm -rf "$ROOT/var/log/"*.log "$ROOT/var/log/apt/"* "$ROOT/var/cache/ldconfig/aux-cache" \
		"$ROOT/var/cache/debconf/"*-old "$ROOT/var/lib/dpkg/"*-old \
		"$ROOT/root/.npm" "$ROOT/root/.cache" "$ROOT/tmp/"* "$ROOT/var/tmp/"*
	: >"$ROOT/etc/machine-id"
	# Warm-up commands run after that clean-up, so what they write stays: first-run work that
	# every VM would otherwise repeat into its own overlay (Copilot unpacks 235 MB into
	# ~/.cache on its first start: ~10 s under TCG, over a minute on a loaded host).
	lines warms | while IFS= read -r cmd; do
		progress "warm: $cmd"
		chroot "$ROOT" /bin/sh -c "$cmd" </dev/null >/dev/null
	done
	rm -rf "$ROOT/tmp/"* "$ROOT/var/tmp/"*
}

tree() {
	SOURCE_DATE_EPOCH=$(epoch)
	export SOURCE_DATE_EPOCH
	suite=$(cat "$IN/suite" 2>/dev/null || echo bookworm)
	npm_install
	include=$(lines packages | tr '\n' ',' | sed 's/,$//')
	# Root mode: the tree gets real owners and modes, which mkfs.ext4 -d copies as they are
	# (agentvm refuses to build without root).
	mode=root
	progress "mmdebstrap $suite ($mode mode): $(lines packages | wc -l) packages and their dependencies"
	mirror=http://deb.debian.org/debian
	# mmdebstrap's phases ("I: downloading packages with apt...") are the build's progress; its
	# whole output goes to the log. dash has no pipefail: the status comes back in a file.
	# shellcheck disable=SC2086
	{
		mmdebstrap --mode=$mode --variant=minbase --format=directory \
			${include:+--include=$include} $DPKG_EXCLUDES \
			--aptopt='Acquire::Retries "3"' \
			--customize-hook="sh '$SELF' customize '$WORK' \"\$1\"" \
			"$suite" "$WORK/tree" \
			"deb $mirror $suite main" "deb $mirror $suite-updates main" \
			"deb http://deb.debian.org/debian-security $suite-security main" 2>&1 &&
			echo 0 >"$WORK/mmdebstrap.rc" || echo 1 >"$WORK/mmdebstrap.rc"
	} | while IFS= read -r line; do
		printf '%s\n' "$line"
		case $line in
		"I: "*"..." | "I: success"*) progress "  ${line#I: }" ;;
		esac
	done
	[ "$(cat "$WORK/mmdebstrap.rc" 2>/dev/null)" = 0 ] || exit 1
	# mmdebstrap's own clean-up leaves the lists and caches of explicitly given mirrors
	# (130 MB): like Debian's images, ship none (apt-get update in the VM fetches them).
	rm -rf "$WORK/tree/var/lib/apt/lists/"* "$WORK/tree/var/cache/apt/"*.bin
	mkdir -p "$WORK/tree/var/lib/apt/lists/partial"
	dpkg-query --admindir="$WORK/tree/var/lib/dpkg" -W -f='${Package}\t${Version}\n' \
		>"$WORK/packages.tsv"
}

# An OCI image in any form skopeo reads: an OCI layout dir, an OCI archive, a `docker save`
# tarball, or a registry reference (docker://... or a bare name).
import() {
	src=$3
	case $src in
	oci:* | oci-archive:* | docker-archive:* | docker://* | dir:*) ref=$src ;;
	*)
		if [ -d "$src" ] && [ -f "$src/index.json" ]; then
			ref=oci:$src
		elif [ -f "$src" ]; then
			if tar -tf "$src" 2>/dev/null | grep -qx -e 'oci-layout' -e './oci-layout'; then
				ref=oci-archive:$src
			else
				ref=docker-archive:$src
			fi
		elif [ -e "$src" ] || case $src in /* | ./* | ../*) true ;; *) false ;; esac; then
			[ -e "$src" ] || { echo "agentvm-error: $src not found" >&2; exit 1; }
			echo "agentvm-error: $src is neither an OCI layout dir (no index.json) nor an archive" >&2
			exit 1
		else
			ref=docker://$src
		fi
		;;
	esac
	progress "skopeo copy $ref"
	skopeo copy --quiet "$ref" "oci:$WORK/oci:image"
	progress "umoci raw unpack"
	umoci raw unpack --image "$WORK/oci:image" "$WORK/tree"
	skopeo inspect --config "oci:$WORK/oci:image" >"$WORK/config.json"
	rm -rf "$WORK/oci"
	if [ -f "$WORK/tree/var/lib/dpkg/status" ]; then
		dpkg-query --admindir="$WORK/tree/var/lib/dpkg" -W -f='${Package}\t${Version}\n' \
			>"$WORK/packages.tsv" 2>/dev/null || true
	fi
}

mkfs() {
	ep=$(epoch)
	tree=$WORK/tree
	# Every time stamp at most SOURCE_DATE_EPOCH: files made during the build get it (not for
	# imports: their files keep the times the image gave them).
	if [ -f "$IN/clamp" ]; then
		find "$tree" -newermt "@$ep" -print0 | xargs -0r touch --no-dereference --date="@$ep"
	fi
	used=$(du -s --block-size=1M "$tree" | cut -f1)
	files=$(find "$tree" | wc -l)
	size=$(cat "$IN/size" 2>/dev/null || true)
	if [ -z "$size" ]; then
		# The tree, ext4's own overhead, and room to work in (the file is sparse: free space
		# costs nothing on the host; a VM writes into its own overlay).
		size=$((used + used / 4 + 512))
	elif [ "$size" -lt $((used + used / 20 + 16)) ]; then
		echo "agentvm-error: --size ${size}M is too small for the tree (${used} MiB); give at least $((used + used / 20 + 16))M" >&2
		exit 1
	fi
	inodes=$((files * 2 + 65536))
	uuid=$(cat "$IN/uuid")
	progress "mkfs.ext4 ${size} MiB from a ${used} MiB tree ($files files)"
	rm -f "$WORK/rootfs.ext4"
	truncate -s "${size}M" "$WORK/rootfs.ext4"
	# Fixed UUID, hash seed and clock: the same tree gives the same bytes. Inode tables are
	# marked zeroed now, so the guest's ext4lazyinit has nothing to write into its overlay; the
	# journal needs no zeroing, the fresh file is all holes (16-64 MB less allocated).
	E2FSPROGS_FAKE_TIME=$ep mkfs.ext4 -q -F -t ext4 -b 4096 -I 256 -N "$inodes" -L avm-root \
		-U "$uuid" -E "hash_seed=$uuid,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=1" \
		-d "$tree" "$WORK/rootfs.ext4"
	fix_times "$WORK/rootfs.ext4" "$ep"
	E2FSPROGS_FAKE_TIME=$ep e2fsck -fn "$WORK/rootfs.ext4" >/dev/null
}

# mkfs.ext4 -d copies each file's ctime and atime, which no one can set on the host (ctime is
# when the build touched it; reading a file moves its atime): set both to the epoch in every
# inode in use, found from the inode bitmaps dumpe2fs prints.
fix_times() {
	dumpe2fs "$1" 2>/dev/null | awk -v t="$(date -u -d "@$2" +%Y%m%d%H%M%S)" '
		/^Inodes per group:/ { ipg = $4 }
		/^Group [0-9]+:/ { g = $2 + 0; delete free }
		/^  Free inodes:/ {
			sub(/^  Free inodes: */, "")
			n = split($0, r, /, */)
			for (i = 1; i <= n; i++) {
				if (r[i] == "") continue
				split(r[i], ab, "-")
				a = ab[1] + 0; b = (ab[2] == "" ? a : ab[2] + 0)
				for (j = a; j <= b; j++) free[j] = 1
			}
			for (ino = g * ipg + 1; ino <= (g + 1) * ipg; ino++)
				if (!(ino in free) && (ino == 2 || ino >= 11)) {
					print "sif <" ino "> ctime " t
					print "sif <" ino "> atime " t
				}
		}' >"$WORK/fix-times.cmds"
	E2FSPROGS_FAKE_TIME=$2 debugfs -w -f "$WORK/fix-times.cmds" "$1" >/dev/null 2>"$WORK/fix-times.log" || {
		cat "$WORK/fix-times.log" >&2
		exit 1
	}
}

case $step in
tree) tree ;;
customize) customize "$@" ;;
import) import "$@" ;;
mkfs) mkfs ;;
*)
	echo "usage: $0 tree|import|mkfs WORK [SOURCE]" >&2
	exit 2
	;;
esac
