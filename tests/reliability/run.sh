#!/usr/bin/env bash
# Reliability and security tests of `finerank serve` from outside the process (RELIABILITY.md):
# API conformance with schemathesis, SIGKILLs during uploads, validation, training and model
# registration, a full and a read-only data dir (tmpfs; needs root), a soak at twice capacity
# with slow and vanishing clients, and keys, traversal, size limits and logs. About five minutes
# on two cores; RELIABILITY_LONG=1 runs the long variants (about 30 minutes). Prints
# "N passed, M failed, K skipped".
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=$(tests/test-binary.sh)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
py=.venv/bin/python
export PYTHONPATH=$PWD/tests:$PWD/tests/reliability  # harness.py and common.py
started=$(date +%s)
status=0
for test in conformance security crash disk overload; do
  mkdir -p "$work/$test"
  "$py" "tests/reliability/test_$test.py" "$bin" "$work/$test" | tee "$work/$test.out" || {
    status=1
    grep -q '^FAIL ' "$work/$test.out" || echo "FAIL $test: stopped before its checks finished" | tee -a "$work/$test.out"
    echo "--- $test: the server's log"
    tail -n 40 "$work/$test"/*.log 2>/dev/null | cut -c1-400 || true
  }
done
passed=$(cat "$work"/*.out | grep -c '^ok ' || true)
failed=$(cat "$work"/*.out | grep -c '^FAIL ' || true)
echo "reliability took $(( $(date +%s) - started ))s"
skipped=$(cat "$work"/*.out | grep -c '^SKIP ' || true)
echo "reliability: $passed passed, $failed failed, $skipped skipped"
exit "$status"
