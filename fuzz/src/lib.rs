//! What the fuzz targets share. The invariants they check are the ones the crates' property
//! tests check, included here by path so they are stated once: proptest searches for a
//! counterexample in `cargo test`, libFuzzer here.

use std::path::Path;
use std::sync::OnceLock;

#[path = "../../crates/data/tests/invariants/mod.rs"]
pub mod data;
#[path = "../../crates/text/tests/invariants/mod.rs"]
pub mod text;

/// A scratch directory for the dataset targets, whose readers take paths. One for the whole run:
/// making one per input would cost more than the parse. libFuzzer exits without running
/// destructors, so `scripts/fuzz.sh` points TMPDIR at a folder it removes.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("creating the scratch directory"))
        .path()
}
