#!/bin/sh
# fuzz.sh runs every fuzz target of the module (each `func FuzzX` in a
# _test.go file) for FUZZTIME (default 30s), one after the other, so a new
# target is never forgotten. Seed corpora live in each package's
# testdata/fuzz/.
set -eu
cd "$(dirname "$0")/.."
time=${FUZZTIME:-30s}
grep -rH --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*(' . | sed 's/(.*//' | sort | while IFS=: read -r file decl; do
	name=${decl#func }
	dir=$(dirname "$file")
	echo "fuzz: $dir $name for $time"
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$time" -fuzzminimizetime 5s "$dir/"
done
