#!/usr/bin/env bash
# `pip install finerank` as a user without Rust would run it: builds the wheel (pyproject.toml),
# installs it into a fresh virtual environment, and reranks with the default model from there.
# Prints the time from `pip install` to the first answer. pip installs from the wheel cache that
# scripts/bootstrap.sh filled (this machine has no PyPI mirror of its own), so that time leaves
# out the download of the torch wheel.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
out=runs/wheel
rm -rf "$out"
mkdir -p "$out"
# The environment holds a whole torch (about 5 GB); the wheel and the timings stay.
trap 'rm -rf "$out/venv"' EXIT

# The dev profile, not --release: `cargo test --workspace` has built every dependency in it
# already, so only finerank's own crates compile, where a release build would compile all of
# them again (over ten minutes on CI's two cores). What is tested is the packaging: the rpath to
# the torch wheel, the default model beside the binary, and the install.
maturin build --profile dev --quiet -o "$out/dist" 2>"$out/build.log" || { cat "$out/build.log"; exit 1; }
wheel=$(ls "$out"/dist/finerank-*.whl)

# A fresh environment from the base Python, with nothing of .venv in it.
base_python=$(.venv/bin/python -c 'import sys; print(sys._base_executable)')
"$base_python" -m venv "$out/venv"
unset FINERANK_DEFAULT_MODEL LIBTORCH

start=$(date +%s.%N)
"$out/venv/bin/pip" install --quiet --disable-pip-version-check --no-index \
  --find-links .cache/wheels "$wheel"
installed=$(date +%s.%N)
printf 'the statute of limitations\nbread and butter\n' >"$out/documents.txt"
answer=$(cd /tmp && env -u VIRTUAL_ENV PATH=/usr/bin:/bin "$OLDPWD/$out/venv/bin/finerank" rerank \
  --query "when does the limitations period begin to run" --documents "$OLDPWD/$out/documents.txt")
answered=$(date +%s.%N)
echo "$answer"

# The legal passage must rank first: the wheel's binary found libtorch and the default model.
echo "$answer" | python3 -c '
import json, sys
ranked = json.load(sys.stdin)["results"]
assert ranked[0]["index"] == 0, ranked
'
python3 - "$start" "$installed" "$answered" "$wheel" <<'PY'
import os, sys
start, installed, answered = map(float, sys.argv[1:4])
size = os.path.getsize(sys.argv[4]) / 1e6
print(f"wheel: {os.path.basename(sys.argv[4])} ({size:.1f} MB)")
print(f"pip install {installed - start:.1f} s, first answer {answered - installed:.1f} s later, "
      f"{answered - start:.1f} s in all")
PY
echo "1 passed, 0 failed"
