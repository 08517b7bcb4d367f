#!/usr/bin/env bash
# Acceptance tests of `finerank serve` with the official cohere SDK (from .venv): the rerank
# fine-tuning tutorial replayed against a server on a free port, bad requests, then a SIGKILL in
# the middle of a fine-tune and a restart. A few minutes on a CPU. Prints "N passed, M failed,
# K skipped". The servers keep their metadata in SQLite, or in PostgreSQL when run under
# scripts/postgres.sh (which sets FINERANK_TEST_DATABASE_URL).
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=$(tests/test-binary.sh)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$bin" prepare --input ../shared/data/casehold/train.jsonl --out "$work/data" >/dev/null
py=.venv/bin/python
export PYTHONPATH=$PWD/tests  # harness.py, shared with tests/reliability
store=sqlite
[ -n "${FINERANK_TEST_DATABASE_URL:-}" ] && store=postgresql
started=$(date +%s)
status=0
"$py" tests/acceptance/test_cohere_sdk.py "$bin" "$work/data" "$work" | tee "$work/sdk.out" || status=1
if [ "$status" = 0 ]; then
  "$py" tests/acceptance/test_restart.py "$bin" "$work" | tee "$work/restart.out" || status=1
else
  echo "restart: skipped (it needs the model the SDK test trains)"
fi
if [ "$status" != 0 ]; then
  echo "--- server log"
  tail -n 50 "$work/server.log" || true
fi
passed=$(cat "$work"/*.out | grep -c '^ok ' || true)
failed=$(cat "$work"/*.out | grep -c '^FAIL ' || true)
echo "acceptance ($store) took $(( $(date +%s) - started ))s"
skipped=$(cat "$work"/*.out | grep -c '^SKIP ' || true)
echo "acceptance ($store): $passed passed, $failed failed, $skipped skipped"
exit "$status"
