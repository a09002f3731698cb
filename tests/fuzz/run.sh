#!/bin/sh
# Run each libFuzzer binary for SECONDS; a crash, leak or a missing binary fails the run.
# Corpora grow in build/fuzz/corpus-NAME, seeded from tests/fuzz/corpus/NAME-without-fuzz_.
set -u
secs=$1
shift
rc=0
for f in "$@"; do
	name=$(basename "$f")
	corpus=build/fuzz/corpus-$name
	mkdir -p "$corpus"
	seeds=tests/fuzz/corpus/${name#fuzz_}
	[ -d "$seeds" ] || seeds=
	log=build/fuzz/$name.log
	"$f" -max_total_time="$secs" -max_len=65536 -print_final_stats=1 \
		-artifact_prefix=build/fuzz/"$name"- "$corpus" $seeds >"$log" 2>&1
	r=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	if [ $r -ne 0 ]; then
		echo "fuzz: $name FAILED (exit $r); see $log"
		tail -20 "$log"
		rc=1
	else
		echo "fuzz: $name ${secs}s, ${execs:-?} executions, no crash"
	fi
done
exit $rc
