#!/bin/sh
# libagentvm as a program outside the tree uses it: `make install-lib DESTDIR=...`, then
# tests/example/example.c built with `pkg-config --cflags --libs agentvm` only, run against the
# installed libagentvm.so; and the export list (only agentvm_*, everything agentvm.h declares).
# Usage: AVM=build/agentvm sh tests/integration/test_library.sh [FILTER]
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

repo=$(cd "$here/../.." && pwd)
# The build dir the agentvm under test came from (relative to the repo when inside it, as the
# Makefile's B: the objects' flags, and so their stamp, name it that way).
bdir=$(cd "$(dirname "$AVM")" && pwd)
case "$bdir" in "$repo"/*) bdir=${bdir#"$repo"/} ;; esac
dest=$tmp_root/dest
prefix=/usr/local
libdir=$dest$prefix/lib

install_lib() {
	[ -e "$libdir/libagentvm.so" ] && return 0
	if ! make -s -C "$repo" B="$bdir" install-lib DESTDIR="$dest" >"$tmp_root/make.log" 2>&1; then
		fail "make install-lib: $(tail -5 "$tmp_root/make.log")"
		return 1
	fi
}

t_installed_files_and_exports() {
	install_lib || return
	for f in lib/libagentvm.so lib/libagentvm.so.0 lib/libagentvm.a include/agentvm.h \
		lib/pkgconfig/agentvm.pc; do
		[ -e "$dest$prefix/$f" ] || fail "not installed: $prefix/$f"
	done
	so=$(readlink -f "$libdir/libagentvm.so")
	expect_contains "versioned file name" "libagentvm.so.0." "$so"
	expect_contains "SONAME" "[libagentvm.so.0]" "$(readelf -d "$so" | grep SONAME)"
	# Every defined dynamic symbol is agentvm_* (and the version node).
	others=$(nm -D --defined-only "$so" | awk '{sub(/@.*/, "", $3); print $3}' | grep -v -e '^agentvm_' -e '^AGENTVM_0$')
	expect_eq "symbols exported beside agentvm_*" "" "$others"
	# Exactly what the header declares.
	nm -D --defined-only "$so" | awk '{sub(/@.*/, "", $3); print $3}' | grep '^agentvm_' | sort >"$tmp_root/exported"
	sed -n 's/^AGENTVM_EXPORT [^(]*[ *]\(agentvm_[a-z_]*\)(.*/\1/p' "$dest$prefix/include/agentvm.h" |
		sort >"$tmp_root/declared"
	[ -s "$tmp_root/declared" ] || fail "no AGENTVM_EXPORT declarations found in agentvm.h"
	expect_eq "exported = declared" "" "$(diff "$tmp_root/declared" "$tmp_root/exported")"
	# The archive: one object whose only globals are the API.
	others=$(nm --defined-only "$libdir/libagentvm.a" | awk 'NF == 3 && $2 ~ /^[A-Z]$/ {print $3}' |
		grep -v '^agentvm_')
	expect_eq "globals of libagentvm.a beside agentvm_*" "" "$others"
}

t_example_through_pkg_config() {
	install_lib || return
	# --define-prefix: the .pc's prefix is where it was found (the DESTDIR tree), not /usr/local.
	flags=$(PKG_CONFIG_PATH=$libdir/pkgconfig pkg-config --define-prefix --cflags --libs agentvm) ||
		{ fail "pkg-config --cflags --libs agentvm failed"; return; }
	expect_contains "pkg-config links -lagentvm" "-lagentvm" "$flags"
	# shellcheck disable=SC2086
	if ! cc -std=c11 -Wall -Wextra -Werror -o "$tmp_root/example" "$repo/tests/example/example.c" \
		$flags 2>"$tmp_root/cc.err"; then
		fail "the example does not build: $(head -5 "$tmp_root/cc.err")"
		return
	fi
	expect_contains "the example links the shared library" "libagentvm.so.0" \
		"$(readelf -d "$tmp_root/example" | grep NEEDED)"
	AGENTVM_IMAGES=$(dirname "$AVM")/images LD_LIBRARY_PATH=$libdir \
		"$tmp_root/example" "$AGENTVM_STATE_DIR" "$tmp_root/snaps" tcg \
		>"$tmp_root/ex.out" 2>"$tmp_root/ex.err"
	rc=$?
	expect_eq "example exit code" 0 "$rc"
	expect_contains "example result" "example: ok" "$(cat "$tmp_root/ex.out")"
	expect_contains "exec output" "exec printed 'hello from Linux' and exited 3" \
		"$(cat "$tmp_root/ex.out")"
	[ $rc -eq 0 ] || echo "    example stderr: $(tail -5 "$tmp_root/ex.err")"
	# The library never prints: every line out of the process is the example's own.
	stray=$(cat "$tmp_root/ex.out" "$tmp_root/ex.err" | grep -v '^example: ')
	expect_eq "lines printed by the library itself" "" "$stray"
	[ -z "$(ls -A "$tmp_root/snaps" 2>/dev/null)" ] || fail "snapshots left: $(ls -A "$tmp_root/snaps")"
}

# The calls for container runtimes (tests/example/runtime.c), through the installed library too.
t_runtime_calls_through_pkg_config() {
	install_lib || return
	flags=$(PKG_CONFIG_PATH=$libdir/pkgconfig pkg-config --define-prefix --cflags --libs agentvm) ||
		{ fail "pkg-config --cflags --libs agentvm failed"; return; }
	# shellcheck disable=SC2086
	if ! cc -std=c11 -Wall -Wextra -Werror -o "$tmp_root/runtime" "$repo/tests/example/runtime.c" \
		$flags 2>"$tmp_root/cc.err"; then
		fail "runtime.c does not build: $(head -5 "$tmp_root/cc.err")"
		return
	fi
	AGENTVM_IMAGES=$(dirname "$AVM")/images LD_LIBRARY_PATH=$libdir \
		"$tmp_root/runtime" "$AGENTVM_STATE_DIR" tcg >"$tmp_root/rt.out" 2>"$tmp_root/rt.err"
	rc=$?
	expect_eq "runtime exit code" 0 "$rc"
	expect_contains "runtime result" "runtime: ok" "$(cat "$tmp_root/rt.out")"
	[ $rc -eq 0 ] || echo "    runtime stderr: $(tail -5 "$tmp_root/rt.err")"
}

# containerd-shim-agentvm-v2 is an outside program of the library: its objects (and the pure
# utilities compiled into it) reference nothing the library defines but the public agentvm_*
# (no vm_exec, statedir_*, ...): what they need from it and do not define themselves.
t_shim_uses_only_the_public_api() {
	objs=$(make -s -C "$repo" B="$bdir" shim-objs) || { fail "make shim-objs"; return; }
	[ -n "$objs" ] || { fail "no shim objects listed"; return; }
	internal=$repo/$bdir/libavm-internal.a
	case "$bdir" in /*) internal=$bdir/libavm-internal.a ;; esac
	(cd "$repo" && nm --defined-only $objs) | awk 'NF == 3 {print $3}' | sort -u >"$tmp_root/shim.def"
	(cd "$repo" && nm -u $objs) | awk 'NF == 2 {print $2}' | sort -u >"$tmp_root/shim.undef"
	nm --defined-only "$internal" 2>/dev/null | awk 'NF == 3 && $2 ~ /^[A-Z]$/ {print $3}' |
		sort -u >"$tmp_root/lib.def"
	[ -s "$tmp_root/lib.def" ] || { fail "no symbols in $internal"; return; }
	used=$(comm -23 "$tmp_root/shim.undef" "$tmp_root/shim.def" | comm -12 - "$tmp_root/lib.def" |
		grep -v '^agentvm_' | tr '\n' ' ')
	expect_eq "internal symbols the shim uses" "" "$used"
	# And it is linked against the public archive, not the internal one.
	make -s -C "$repo" B="$bdir" -n "$bdir/containerd-shim-agentvm-v2" -W src/shim/main.c \
		>"$tmp_root/shim.link" 2>&1
	expect_contains "the shim links libagentvm.a" "lib/libagentvm.a" "$(grep -- '-o .*containerd-shim' "$tmp_root/shim.link")"
}

filter=${1:-}
for t in t_installed_files_and_exports t_example_through_pkg_config t_runtime_calls_through_pkg_config \
	t_shim_uses_only_the_public_api; do
	case "$t" in *"$filter"*) run_test "$t" ;; esac
done
summary
