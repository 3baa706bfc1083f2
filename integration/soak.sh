#!/usr/bin/env bash
# The soak test for longer than CI runs it: stock clients log in, move data, are killed and reconnect with their
# cookies, log out, in a loop; then the server's goroutines, open files and memory must be back near their
# baseline. Needs root, like the other end-to-end tests.
#   bash integration/soak.sh        10 minutes
#   bash integration/soak.sh 2h
set -euo pipefail
cd "$(dirname "$0")/.."
d=${1:-10m}
OCGATE_SOAK="$d" go test -count=1 -v -run '^TestSoak$' -timeout 0 ./integration/ 2>&1 | grep -E '^(=== RUN|--- |ok|FAIL)|soak_test.go'
