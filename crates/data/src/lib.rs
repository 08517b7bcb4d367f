//! Rerank fine-tuning datasets: the file formats (Cohere's training/validation JSONL and our test
//! JSONL), reading them with errors that name file, line and fix, turning raw data (CaseHOLD or
//! generic column mappings) into train/validation/test files, and the "review data" validator that
//! applies Cohere's rules. For retrieval: document collections in BEIR's layout (corpus, queries,
//! qrels) and TREC run files, read with the same kind of errors, and CaseHOLD made into such a
//! collection. Pure Rust: token counting is passed in as a closure.

mod corpus;
mod error;
mod format;
mod prepare;
mod qrels;
mod retrieval;
mod tasks;
mod validate;

pub use corpus::{read_beir, read_corpus, read_queries, write_beir, Beir, Corpus, Doc, Query};
pub use error::{DataError, Problem};
pub use format::{read_documents, read_test, read_train, write_jsonl, TestRow, TrainRow};
pub use prepare::{
    example_to_train, examples_to_test, prepare, read_raw, Example, Mapping, PrepareOptions,
    PrepareSummary, Split,
};
pub use qrels::{read_qrels, read_run, Judgements};
pub use retrieval::{casehold_retrieval, judge_rows, split_by_query, DEFAULT_VALID_SHARE};
pub use tasks::ranking_tasks;
pub use validate::{too_few_queries, validate, Bucket, FileStats, Review, ValidateOptions};
