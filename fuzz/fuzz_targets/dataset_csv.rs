//! `prepare`'s raw reader on arbitrary bytes, as CSV and as JSONL.
#![no_main]

use finerank_fuzz::{data, scratch_dir};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| data::check_raw_reader(scratch_dir(), bytes));
