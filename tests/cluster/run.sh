#!/usr/bin/env bash
# The multi-process test (tests/cluster/test_cluster.py): a throwaway PostgreSQL
# (scripts/postgres.sh), two serving replicas and two CPU training workers of the debug binary
# on a file:// shared store, with SIGKILLs of a worker mid-training and of a replica under load,
# and a cancel. About a minute on two cores. Prints "N passed, M failed, K skipped".
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=$(tests/test-binary.sh)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PYTHONPATH=$PWD/tests:$PWD/tests/reliability  # harness.py and common.py
started=$(date +%s)
status=0
scripts/postgres.sh .venv/bin/python tests/cluster/test_cluster.py "$bin" "$work" \
  | tee "$work/cluster.out" || status=1
if [ "$status" != 0 ]; then
  for log in "$work"/*.log; do
    echo "--- $(basename "$log")"
    tail -n 30 "$log" | cut -c1-400
  done
fi
echo "cluster took $(( $(date +%s) - started ))s"
exit "$status"
