#!/usr/bin/env bash
# Runs every go test -fuzz target of the module for a bounded time each
# (FUZZTIME, default 4s), starting from its checked-in seed corpus. A target
# that finds a failing input fails the run; go test writes the input under
# the package's testdata/fuzz/ so it becomes part of the seed corpus.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzztime="${FUZZTIME:-4s}"
n=0
while IFS=: read -r file name; do
	dir="$(dirname "$file")"
	echo "== fuzz $dir $name ($fuzztime)"
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$dir"
	n=$((n + 1))
done < <(grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' . | sed 's/:func /:/' | sort)
echo "fuzz: $n targets ran for $fuzztime each"
