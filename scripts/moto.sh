#!/usr/bin/env bash
# moto's S3-compatible server, for the registry's S3 test (crates/engine/tests/s3.rs), in a venv
# of its own under .cache/moto: it brings boto3 and Flask, which nothing else needs. Once; then
# a second run returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
MOTO="moto[server]==5.2.5"
STAMP=.cache/moto/.finerank-moto
[ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$MOTO" ] && exit 0
rm -rf .cache/moto
python3 -m venv .cache/moto
.cache/moto/bin/pip install -q --disable-pip-version-check "$MOTO"
echo "$MOTO" >"$STAMP"
