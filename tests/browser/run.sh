#!/usr/bin/env bash
# End-to-end tests of the web dashboard in headless Chromium (Debian's chromium package), driven
# by Playwright (playwright-core, pinned in package.json): dashboard.mjs clicks through the whole
# flow against `finerank serve` on a temporary data dir, training a tiny model on a CPU. About a
# minute or two. Screenshots of each page, and the server's log, land in runs/browser/.
# Prints "N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "browser: /usr/bin/chromium is missing and only root can install it: run 'apt-get install chromium' as root" >&2
    exit 1
  fi
  echo "browser: installing Debian's chromium package" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# The charting library the server embeds must be the one package.json pins.
crates/server/assets/vendor.sh --check
(cd tests/browser && npm ci --cache ../../.cache/npm --no-audit --no-fund --loglevel=error >/dev/null)

bin=$(tests/test-binary.sh)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" prepare --input ../shared/data/casehold/train.jsonl --out "$work/data" >/dev/null

out=runs/browser
rm -rf "$out"
mkdir -p "$out"
status=0
node tests/browser/dashboard.mjs "$bin" "$work" "$out" || status=1
if [ "$status" != 0 ]; then
  echo "--- server log"
  tail -n 50 "$out/server.log" || true
fi
exit "$status"
