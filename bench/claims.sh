#!/usr/bin/env bash
# Job claiming under concurrent workers: 8 workers (threads, each with connections of its own)
# claim 1,000 jobs from a throwaway PostgreSQL (scripts/postgres.sh) and run each through a stub
# trainer (a heartbeat and the lease-checked moves to STATUS_READY); it fails if a job is claimed
# twice or lost, and prints the claims a second. The stub lives in the store's tests
# (crates/server/src/store/tests.rs, `claims_benchmark`), so no user-facing command carries it.
#   bench/claims.sh                       # CLAIM_WORKERS=8 CLAIM_JOBS=1000
#   CLAIM_WORKERS=16 CLAIM_JOBS=5000 bench/claims.sh
# The dev profile that `make test` builds (--workspace, so nothing compiles again): claims wait
# on the database, not on the code.
set -euo pipefail
cd "$(dirname "$0")/.."
export CLAIM_WORKERS=${CLAIM_WORKERS:-8} CLAIM_JOBS=${CLAIM_JOBS:-1000}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
scripts/postgres.sh cargo test -q --workspace --lib claims_benchmark -- --ignored --nocapture \
  >"$out" 2>&1 || status=$?
grep -E '^claims:' "$out" || { tail -n 40 "$out"; [ "$status" != 0 ] || status=1; }
exit "$status"
