//! How a (query, document) pair becomes one model input: the tokenizer's own pair template for
//! a cross-encoder, or an LLM reranker's prompt.
use crate::chunk::{query_share, windows, ChunkPolicy, PairChunks};
use crate::tokenizer::{Encoded, TextTokenizer};

/// How a pair is put into one input. The model decides which (see `finerank-engine`); callers
/// tokenize every pair through [`PairFormat::chunk`] and [`PairFormat::count`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairFormat {
    /// The tokenizer's post-processor template, as `tokenizer(query, document)` builds it
    /// (`[CLS] q [SEP] d [SEP]`).
    Segments,
    /// An LLM reranker's chat prompt around an instruction, the query and the document.
    Prompt(PromptTemplate),
}

/// A decoder reranker's prompt, as its model card builds it: `prefix`, then a body of the
/// instruction, the query and the document laid out as [`Body`] says, cut from its end to fit,
/// then `suffix`, after which the model answers. Prefix and suffix are tokenized each alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptTemplate {
    pub prefix: String,
    pub suffix: String,
    /// What the model is asked to judge.
    pub instruction: String,
    pub body: Body,
}

/// How the body labels the instruction, query and document, and which parts are tokenized
/// together: as each model's own code does, since a byte-level BPE joins text across a seam
/// (a query's last `?` with the newline after it) and parts tokenized apart give other ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// Qwen3-Reranker's `<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}`,
    /// tokenized as one text.
    Qwen3,
    /// mxbai-rerank-v2's `instruction: {instruction}\nquery: {query}` (without an instruction,
    /// `query: {query}` alone), then `\ndocument: {document}`, the two tokenized apart.
    Mxbai,
}

/// Qwen3-Reranker's body text up to the query, between query and document.
const INSTRUCT: &str = "<Instruct>: ";
const QUERY: &str = "\n<Query>: ";
const DOCUMENT: &str = "\n<Document>: ";

impl PromptTemplate {
    /// Qwen/Qwen3-Reranker's template and default instruction, from its model card.
    pub fn qwen3_reranker() -> PromptTemplate {
        PromptTemplate {
            prefix: "<|im_start|>system\nJudge whether the Document meets the requirements based \
                     on the Query and the Instruct provided. Note that the answer can only be \
                     \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n"
                .into(),
            suffix: "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n".into(),
            instruction: "Given a web search query, retrieve relevant passages that answer the \
                          query"
                .into(),
            body: Body::Qwen3,
        }
    }

    /// mixedbread-ai/mxbai-rerank-v2's prompt, as the mxbai-rerank package's `MxbaiRerankV2`
    /// builds it: Qwen2's default chat around the body, and after it a newline, the task and the
    /// cue "Relevance:", to be answered "1" or "0". The package tokenizes newline, task and chat
    /// suffix apart; with Qwen2's pre-tokenizer they split at those seams anyway (a newline
    /// before a letter, a special token), so one text gives their ids. It has no default
    /// instruction: an empty one leaves the instruction line out, as the package does.
    pub fn mxbai_rerank_v2() -> PromptTemplate {
        PromptTemplate {
            prefix: "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a \
                     helpful assistant.<|im_end|>\n<|im_start|>user\n"
                .into(),
            suffix: "\nYou are a search relevance expert who evaluates how well documents match \
                     search queries. For each query-document pair, carefully analyze the \
                     semantic relationship between them, then provide your binary relevance \
                     judgment (0 for not relevant, 1 for relevant).\nRelevance:<|im_end|>\n\
                     <|im_start|>assistant\n"
                .into(),
            instruction: String::new(),
            body: Body::Mxbai,
        }
    }

    /// The body's tokens in four parts: up to the query, the query, up to the document, the
    /// document. Together they are exactly the body's tokenization.
    fn body(&self, tok: &TextTokenizer, query: &str, document: &str) -> [Vec<u32>; 4] {
        let parts = match self.body {
            Body::Qwen3 => {
                let lead = format!("{INSTRUCT}{}{QUERY}", self.instruction);
                let text = format!("{lead}{query}{DOCUMENT}{document}");
                let query_end = lead.len() + query.len();
                let bounds = [lead.len(), query_end, query_end + DOCUMENT.len()];
                tok.split_tokens(&text, &bounds)
            }
            Body::Mxbai => {
                let lead = match self.instruction.as_str() {
                    "" => "query: ".to_string(),
                    instruction => format!("instruction: {instruction}\nquery: "),
                };
                let mid = "\ndocument: ";
                let mut parts = tok.split_tokens(&format!("{lead}{query}"), &[lead.len()]);
                parts.extend(tok.split_tokens(&format!("{mid}{document}"), &[mid.len()]));
                parts
            }
        };
        <[Vec<u32>; 4]>::try_from(parts).expect("three split points give four parts")
    }
}

impl PairFormat {
    /// The format with `instruction` in place of its own, when it takes one.
    pub fn with_instruction(&self, instruction: &str) -> PairFormat {
        match self {
            PairFormat::Segments => PairFormat::Segments,
            PairFormat::Prompt(t) => PairFormat::Prompt(PromptTemplate {
                instruction: instruction.to_string(),
                ..t.clone()
            }),
        }
    }

    /// Whether the format reads an instruction.
    pub fn takes_instruction(&self) -> bool {
        matches!(self, PairFormat::Prompt(_))
    }

    /// The inputs for one query against `documents`, each cut into windows under `policy`.
    /// A prompt is chunked as [`crate::chunk_pairs`] chunks segments: the query kept whole
    /// beside a document when it fits, cut down to `query_reserve` otherwise, the document split
    /// into overlapping windows of the room left. The parts of the body around them (the
    /// instruction, the labels) and the prompt's prefix and suffix are in every window. A pair
    /// whose query fits gets first the model card's own input: the body cut from its end.
    pub fn chunk(
        &self,
        tok: &TextTokenizer,
        query: &str,
        documents: &[&str],
        policy: &ChunkPolicy,
    ) -> PairChunks {
        match self {
            PairFormat::Segments => crate::chunk_pairs(tok, query, documents, policy),
            PairFormat::Prompt(t) => chunk_prompted(t, tok, query, documents, policy),
        }
    }

    /// Tokens in the whole input for a pair, before any cut.
    pub fn count(&self, tok: &TextTokenizer, query: &str, document: &str) -> usize {
        match self {
            PairFormat::Segments => {
                tok.tokens(query).len() + tok.tokens(document).len() + tok.special_tokens(true)
            }
            PairFormat::Prompt(t) => {
                let fixed = tok.tokens(&t.prefix).len() + tok.tokens(&t.suffix).len();
                fixed
                    + t.body(tok, query, document)
                        .iter()
                        .map(Vec::len)
                        .sum::<usize>()
            }
        }
    }
}

fn chunk_prompted(
    t: &PromptTemplate,
    tok: &TextTokenizer,
    query: &str,
    documents: &[&str],
    policy: &ChunkPolicy,
) -> PairChunks {
    let (prefix, suffix) = (tok.tokens(&t.prefix), tok.tokens(&t.suffix));
    let room = policy.max_len.saturating_sub(prefix.len() + suffix.len());
    let mut out = PairChunks {
        inputs: Vec::new(),
        doc_of: Vec::new(),
        query_truncated: false,
        query_tokens: 0,
    };
    for (doc, document) in documents.iter().enumerate() {
        // The body is tokenized whole for each document, as the model card does: a byte-level
        // BPE joins a part's first word with the space before it, so parts tokenized apart
        // would not give the same ids.
        let [lead, query_ids, mid, doc_ids] = t.body(tok, query, document);
        out.query_tokens = query_ids.len();
        let content = room.saturating_sub(lead.len() + mid.len());
        let kept = query_share(query_ids.len(), doc_ids.len(), content, policy);
        out.query_truncated |= kept < query_ids.len();
        let window = content.saturating_sub(kept).max(1);
        for range in windows(doc_ids.len(), window, policy) {
            let ids: Vec<i64> = [
                &prefix[..],
                &lead,
                &query_ids[..kept],
                &mid,
                &doc_ids[range],
                &suffix,
            ]
            .concat()
            .into_iter()
            .map(i64::from)
            .collect();
            out.inputs.push(Encoded {
                type_ids: vec![0; ids.len()],
                ids,
            });
            out.doc_of.push(doc);
        }
    }
    out
}
