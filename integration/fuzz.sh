#!/usr/bin/env bash
# Runs every fuzz target of the repository (each `func FuzzX` in a test file), one after the other, FUZZTIME each
# (default 1h: the long run; integration/test.sh runs them for a few seconds each). A target that fails leaves its
# input in DIR/testdata/fuzz/TARGET, which `go test` then runs as a regression case: commit it with the fix.
#   FUZZTIME=10m bash integration/fuzz.sh        all targets, 10 minutes each
#   FUZZTIME=1h bash integration/fuzz.sh FuzzSend   only the targets named
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-1h}
only=" $* "
# fuzz_one runs one target (go runs one per invocation), leaving its output in $out. Go's fuzzing engine
# sometimes ends a run that found nothing with "context deadline exceeded" when the time is up during an
# execution; a finding always says "Failing input written". Such a run is tried once more.
fuzz_one() {
  local try
  for try in 1 2; do
    if out=$(go test -run '^$' -fuzz "^$1\$" -fuzztime "$FUZZTIME" "$2" 2>&1); then
      return 0
    fi
    if [[ "$out" == *"Failing input written"* || "$out" != *"context deadline exceeded"* ]]; then
      return 1
    fi
  done
  return 1
}
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r file; do
  dir=$(dirname "$file")
  for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
    if [ $# -gt 0 ] && [[ "$only" != *" $target "* ]]; then
      continue
    fi
    if ! fuzz_one "$target" "$dir"; then
      echo "$out" >&2
      echo "fuzz.sh: fuzz target $target in $dir failed (the input is now in $dir/testdata/fuzz/$target)" >&2
      exit 1
    fi
    execs=$(echo "$out" | sed -n 's/.*execs: \([0-9]*\) .*/\1/p' | tail -1)
    echo "  $dir $target ok (${execs:-?} executions)" >&2
  done
done
