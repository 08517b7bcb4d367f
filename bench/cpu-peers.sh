#!/usr/bin/env bash
# Installs the CPU peer backends of bench/rerank-vs-st.py (bench/requirements-cpu-peers.txt) into
# .cache/bench-cpu-peers, beside .venv and never in it, and prints the PYTHONPATH that adds them.
# Reinstalls only when the requirements file changes.
set -euo pipefail
cd "$(dirname "$0")/.."
site=.cache/bench-cpu-peers
want=$(sha256sum bench/requirements-cpu-peers.txt | cut -d' ' -f1)
if [ "$(cat "$site/.stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf "$site"
  .venv/bin/pip --disable-pip-version-check download -q --no-deps -d .cache/bench-cpu-peers-wheels \
    -r bench/requirements-cpu-peers.txt >&2
  .venv/bin/pip --disable-pip-version-check install -q --no-deps --no-index \
    --find-links .cache/bench-cpu-peers-wheels --target "$site" -r bench/requirements-cpu-peers.txt >&2
  echo "$want" >"$site/.stamp"
fi
echo "$PWD/$site"
