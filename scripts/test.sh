#!/usr/bin/env bash
# Everything CI runs (`make test`, called by .ci/run): the Rust unit and integration tests,
# including the checks against Python transformers / sentence-transformers in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --no-fail-fast
# `finerank serve` driven by the cohere SDK: the fine-tuning tutorial, bad requests, a SIGKILL restart.
tests/acceptance/run.sh
# The web dashboard in headless Chromium: upload, review, train, API tab, playground (runs/browser/).
tests/browser/run.sh
