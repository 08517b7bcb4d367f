//! The training, test and document-list readers on arbitrary bytes.
#![no_main]

use finerank_fuzz::{data, scratch_dir};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| data::check_jsonl_readers(scratch_dir(), bytes));
