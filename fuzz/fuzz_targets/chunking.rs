//! Pair tokenization, chunking, score mapping and batch planning on arbitrary text, with the
//! tiny BERT fixture's tokenizer (from ../shared, which CI has too). The input is six option
//! bytes, then text: its first line the query, every further line a document. Byte by byte:
//! `max_len`, `overlap`, `max_chunks` (0: none, k: k - 1, so Some(0) is reached),
//! `query_reserve`, the batch token budget in units of 8, and `max_batch`.
#![no_main]

use std::sync::LazyLock;

use finerank_fuzz::text::check_text_pipeline;
use finerank_text::{ChunkPolicy, TextTokenizer};
use libfuzzer_sys::fuzz_target;

static TOKENIZER: LazyLock<TextTokenizer> = LazyLock::new(|| {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/tiny-bert-cross-encoder/tokenizer.json"
    );
    TextTokenizer::from_file(path.as_ref()).expect("loading the fixture tokenizer")
});

fuzz_target!(|bytes: &[u8]| {
    let Some((&[max_len, overlap, max_chunks, query_reserve, budget, max_batch], text)) =
        bytes.split_first_chunk::<6>()
    else {
        return;
    };
    let policy = ChunkPolicy {
        max_len: max_len.into(),
        overlap: overlap.into(),
        max_chunks: usize::from(max_chunks).checked_sub(1),
        query_reserve: query_reserve.into(),
    };
    // Invalid UTF-8 becomes U+FFFD, which the tokenizer must take like any other text.
    let text = String::from_utf8_lossy(text);
    let mut lines = text.split('\n');
    let query = lines.next().unwrap_or_default();
    let documents: Vec<&str> = lines.collect();
    let budget = usize::from(budget) * 8;
    check_text_pipeline(
        &TOKENIZER,
        query,
        &documents,
        &policy,
        budget,
        max_batch.into(),
    );
});
