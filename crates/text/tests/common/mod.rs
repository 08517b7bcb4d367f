use std::path::PathBuf;

use finerank_text::TextTokenizer;

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures"
    ))
    .join(rel)
}

pub fn bert() -> TextTokenizer {
    TextTokenizer::from_file(&fixture("tiny-bert-cross-encoder/tokenizer.json")).unwrap()
}
