#!/usr/bin/env bash
# Runs every cargo-fuzz target under fuzz/ for a bounded time, starting from its committed seed
# corpus (fuzz/corpus/<target>/). Usage: scripts/fuzz.sh [seconds per target, default 20].
#
# cargo-fuzz is installed from crates.io into the ignored .cache/cargo-fuzz on first use. It needs
# nightly compiler features; RUSTC_BOOTSTRAP=1 unlocks them on the stable toolchain CI has. The
# targets build into target/fuzz, apart from the workspace's own builds. A failing input is saved
# under fuzz/artifacts/<target>/ (ignored); `scripts/fuzz.sh` then fails, naming it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
cargo_fuzz=.cache/cargo-fuzz/bin/cargo-fuzz
if [ ! -x "$cargo_fuzz" ]; then
  # A thin wrapper around cargo: unoptimised, it installs in half the time and runs as fast.
  cargo install cargo-fuzz --version 0.13.2 --locked --debug --root .cache/cargo-fuzz
fi

# New inputs the fuzzer finds go to a scratch corpus, never into the committed one; the dataset
# targets write their files there too. A tmpfs keeps those writes (and fsyncs) off the disk.
scratch_root=/dev/shm
[ -d "$scratch_root" ] && [ -w "$scratch_root" ] || scratch_root=${TMPDIR:-/tmp}
scratch=$(mktemp -d "$scratch_root/finerank-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# Sanitizers add nothing to safe Rust but build and run time; coverage guidance, debug
# assertions and overflow checks stay on.
fuzz=(env RUSTC_BOOTSTRAP=1 "$cargo_fuzz")
opts=(--fuzz-dir fuzz --target-dir target/fuzz --sanitizer none)
"${fuzz[@]}" build "${opts[@]}"
for target in $("${fuzz[@]}" list --fuzz-dir fuzz); do
  mkdir -p "$scratch/$target"
  log=$scratch/$target.log
  # The tokenizer's thread pool only slows down one input at a time.
  if ! TMPDIR=$scratch TOKENIZERS_PARALLELISM=false "${fuzz[@]}" run "${opts[@]}" "$target" \
    "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target failed on the input saved under fuzz/artifacts/$target/; replay it with" >&2
    echo "  RUSTC_BOOTSTRAP=1 $cargo_fuzz run ${opts[*]} $target fuzz/artifacts/$target/<file>" >&2
    exit 1
  fi
  stat() { sed -n "s/^stat::$1: *//p" "$log"; }
  echo "fuzz: $target: $(stat number_of_executed_units) inputs in ${seconds}s, no failure" \
    "($(stat new_units_added) new corpus entries)" >&2
done
