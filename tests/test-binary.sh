#!/usr/bin/env bash
# Builds `finerank` exactly as `cargo test --workspace` builds it and prints the binary's path.
# The same command resolves the same features, so after scripts/test.sh's test run this compiles
# nothing. The suites that drive the real binary (acceptance, reliability, browser, load) use it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -q --workspace --no-run >/dev/null 2>&1 || cargo test --workspace --no-run >&2
echo "$PWD/target/debug/finerank"
