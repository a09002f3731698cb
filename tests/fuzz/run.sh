#!/bin/sh
# Run each libFuzzer binary for SECONDS; a crash fails the run. Corpora live in build/fuzz/.
set -eu
secs=$1
shift
for f in "$@"; do
	name=$(basename "$f")
	corpus=build/fuzz/corpus-$name
	mkdir -p "$corpus"
	seeds=tests/fuzz/corpus/${name#fuzz_}
	[ -d "$seeds" ] && set -- "$seeds" || set --
	echo "fuzz: $name for ${secs}s"
	"$f" -max_total_time="$secs" -max_len=65536 -print_final_stats=1 \
		-artifact_prefix=build/fuzz/ "$corpus" "$@" 2>&1 | grep -E "stat::number_of_executed_units|ERROR|crash" || true
	ls build/fuzz/crash-* >/dev/null 2>&1 && { echo "fuzz: $name crashed; see build/fuzz/crash-*"; exit 1; }
done
echo "fuzz: no crashes"
