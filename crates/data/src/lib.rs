//! Rerank fine-tuning datasets: the file formats (Cohere's training/validation JSONL and our test
//! JSONL), reading them with errors that name file, line and fix, turning raw data (CaseHOLD or
//! generic column mappings) into train/validation/test files, and the "review data" validator that
//! applies Cohere's rules. Pure Rust: token counting is passed in as a closure.

mod error;
mod format;
mod prepare;
mod validate;

pub use error::{DataError, Problem};
pub use format::{read_documents, read_test, read_train, write_jsonl, TestRow, TrainRow};
pub use prepare::{
    example_to_train, examples_to_test, prepare, read_raw, Example, Mapping, PrepareOptions,
    PrepareSummary, Split,
};
pub use validate::{validate, Bucket, FileStats, Review, ValidateOptions};
