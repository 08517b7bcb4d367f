#!/usr/bin/env bash
# Where the dashboard's third-party files come from: uPlot, from npm at the exact version that
# package.json pins (package-lock.json holds its integrity hash). This copies its minified build,
# stylesheet and licence from node_modules into vendor/, which the server embeds; cargo build
# never runs npm. With --check it changes nothing and fails if vendor/ differs (tests/browser/run.sh
# checks this).
set -euo pipefail
cd "$(dirname "$0")"

npm ci --cache ../../../.cache/npm --no-audit --no-fund --loglevel=error
src=node_modules/uplot
# name in vendor/ <- path in the package
files=(
  "uPlot.iife.min.js dist/uPlot.iife.min.js"
  "uPlot.min.css dist/uPlot.min.css"
  "uPlot.LICENSE LICENSE"
)
version=$(node -p "require('./$src/package.json').version")
stale=0
for pair in "${files[@]}"; do
  read -r name path <<<"$pair"
  if [ "${1:-}" = --check ]; then
    cmp -s "$src/$path" "vendor/$name" || { echo "vendor/$name differs from uplot $version's $path" >&2; stale=1; }
  else
    cp "$src/$path" "vendor/$name"
  fi
done
if [ "$stale" != 0 ]; then
  echo "run crates/server/assets/vendor.sh to refresh vendor/" >&2
  exit 1
fi
[ "${1:-}" = --check ] && echo "vendor/: uplot $version, as pinned" || echo "vendor/: refreshed from uplot $version"
