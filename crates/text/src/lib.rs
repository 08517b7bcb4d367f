//! Turns text into model inputs for rerankers and bi-encoders: single and pair
//! tokenization with the checkpoint's own `tokenizer.json` or an LLM reranker's prompt,
//! overlapping chunking of documents too long for the model window, and length-sorted batching
//! under a token budget. Pure Rust; tensors are built by the caller.

mod batch;
mod chunk;
mod format;
mod tokenizer;

pub use batch::plan_batches;
pub use chunk::{best_chunk_scores, chunk_pairs, chunk_singles, ChunkPolicy, PairChunks};
pub use format::{PairFormat, PromptTemplate};
pub use tokenizer::{Encoded, TextError, TextTokenizer};
