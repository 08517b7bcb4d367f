//! The data review on arbitrary files. The input is the training file, then, after the first
//! 0xFF byte (which UTF-8 never uses, so text seeds stay readable), the validation file.
#![no_main]

use finerank_fuzz::{data, scratch_dir};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let mut parts = bytes.splitn(2, |&b| b == 0xFF);
    let train = parts.next().unwrap_or_default();
    data::check_validate(scratch_dir(), train, parts.next());
});
