//! The BEIR collection reader (corpus, queries, qrels) on arbitrary bytes, cut at NUL bytes into
//! the three files.
#![no_main]

use finerank_fuzz::{data, scratch_dir};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| data::check_beir_reader(scratch_dir(), bytes));
