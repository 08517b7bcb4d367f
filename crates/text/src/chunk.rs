use std::ops::Range;

use crate::tokenizer::{Encoded, TextTokenizer};

/// How a (query, document) pair, or a single text, is cut to fit the model window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPolicy {
    /// Model window in tokens, special tokens included.
    pub max_len: usize,
    /// Tokens shared by consecutive chunks. Capped at window - 1 so every chunk adds
    /// new tokens.
    pub overlap: usize,
    /// Windows kept per document (the first ones); `None` = all. `Some(0)` acts as
    /// `Some(1)`, since every document needs a score.
    pub max_chunks: Option<usize>,
    /// The query's guaranteed share of the window when a pair does not fit. A query
    /// that fits beside a document is kept whole with it; beside a longer document it
    /// gives up tokens down to this floor, and the document is chunked in what is left.
    /// Also capped so at least one document token fits.
    pub query_reserve: usize,
}

impl ChunkPolicy {
    /// overlap = max_len / 8 (rounded), all chunks, query cut no lower than max_len / 2.
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            overlap: (max_len + 4) / 8,
            max_chunks: None,
            query_reserve: max_len / 2,
        }
    }
}

/// Outcome for one query + many documents.
#[derive(Clone, Debug)]
pub struct PairChunks {
    /// All chunk inputs, in document order.
    pub inputs: Vec<Encoded>,
    /// `doc_of[i]` = index of the document that `inputs[i]` came from.
    pub doc_of: Vec<usize>,
    /// The query was cut beside at least one document; the caller must report it, not
    /// hide it.
    pub query_truncated: bool,
    /// The query's token count before any cut.
    pub query_tokens: usize,
}

/// Tokenizes the query once and the documents once (in parallel). A document that
/// fits beside the whole query is paired with it as is, so a pair that fits the window
/// reads exactly what Hugging Face's tokenizer gives. Otherwise the query's last tokens
/// go first, down to `query_reserve` (its first tokens are kept and
/// `query_truncated` is set), and the document is split into overlapping windows of
/// the room left beside that query. An empty document still yields one input (query +
/// empty second segment).
///
/// Every input has at most `max_len` tokens provided `max_len` exceeds the pair's
/// special tokens by at least one; below that each input holds the specials plus one
/// document token.
pub fn chunk_pairs(
    tok: &TextTokenizer,
    query: &str,
    documents: &[&str],
    policy: &ChunkPolicy,
) -> PairChunks {
    let content = policy.max_len.saturating_sub(tok.special_tokens(true));
    let query_ids = tok.tokens(query);
    let mut query_truncated = false;
    let mut inputs = Vec::new();
    let mut doc_of = Vec::new();
    for (doc, doc_ids) in tok.tokens_batch(documents).iter().enumerate() {
        let kept = query_share(query_ids.len(), doc_ids.len(), content, policy);
        query_truncated |= kept < query_ids.len();
        let window = content.saturating_sub(kept).max(1);
        for range in windows(doc_ids.len(), window, policy) {
            inputs.push(tok.pair_from_tokens(&query_ids[..kept], &doc_ids[range]));
            doc_of.push(doc);
        }
    }
    PairChunks {
        inputs,
        doc_of,
        query_truncated,
        query_tokens: query_ids.len(),
    }
}

/// Query tokens kept beside a document of `doc_tokens`, with `content` tokens of room
/// in all: the whole query when both fit; otherwise what the document leaves, but never
/// less than `query_reserve`; and always one token short of the room, so the document
/// gets at least one.
pub(crate) fn query_share(
    query_tokens: usize,
    doc_tokens: usize,
    content: usize,
    policy: &ChunkPolicy,
) -> usize {
    let beside = content.saturating_sub(doc_tokens).max(policy.query_reserve);
    query_tokens.min(beside).min(content.saturating_sub(1))
}

/// The bi-encoder counterpart: each text is split into overlapping windows of at
/// most `max_len` tokens including specials and the prompt (`query_reserve` is unused,
/// `overlap` and `max_chunks` apply), and every window starts with `prompt`'s tokens
/// (see [`TextTokenizer::prompted_tokens`]). Returns the inputs and, for each, the index
/// of the text it came from. An empty text yields one input.
pub fn chunk_singles(
    tok: &TextTokenizer,
    texts: &[&str],
    prompt: &str,
    policy: &ChunkPolicy,
) -> (Vec<Encoded>, Vec<usize>) {
    let tokenized: Vec<(Vec<u32>, Vec<u32>)> = match prompt {
        "" => tok
            .tokens_batch(texts)
            .into_iter()
            .map(|ids| (Vec::new(), ids))
            .collect(),
        _ => texts
            .iter()
            .map(|t| tok.prompted_tokens(prompt, t))
            .collect(),
    };
    let mut inputs = Vec::new();
    let mut owner = Vec::new();
    for (text, (head, ids)) in tokenized.iter().enumerate() {
        let window = policy
            .max_len
            .saturating_sub(tok.special_tokens(false) + head.len())
            .max(1);
        for range in windows(ids.len(), window, policy) {
            let prompted: Vec<u32> = head.iter().chain(&ids[range]).copied().collect();
            inputs.push(tok.single_from_tokens(&prompted));
            owner.push(text);
        }
    }
    (inputs, owner)
}

/// Max over chunk scores per document: `scores[i]` belongs to `doc_of[i]`. Returns
/// `n_docs` scores; a document with no chunk gets `f32::NEG_INFINITY`. Never panics:
/// out-of-range owners are ignored. A NaN chunk score makes its document NaN, so a
/// broken model output shows instead of being skipped.
pub fn best_chunk_scores(scores: &[f32], doc_of: &[usize], n_docs: usize) -> Vec<f32> {
    let mut best = vec![f32::NEG_INFINITY; n_docs];
    for (&score, &doc) in scores.iter().zip(doc_of) {
        if let Some(b) = best.get_mut(doc) {
            if score > *b || score.is_nan() {
                *b = score;
            }
        }
    }
    best
}

/// Token ranges of one text: windows of `window` tokens starting every
/// `window - overlap` tokens, the last one ending at the text's end (and so
/// possibly shorter). Always at least one range, even for an empty text.
pub(crate) fn windows(len: usize, window: usize, policy: &ChunkPolicy) -> Vec<Range<usize>> {
    debug_assert!(window > 0);
    let stride = window - policy.overlap.min(window - 1);
    let cap = policy.max_chunks.unwrap_or(usize::MAX).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + window).min(len);
        out.push(start..end);
        if end == len || out.len() == cap {
            return out;
        }
        start += stride;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(overlap: usize, max_chunks: Option<usize>) -> ChunkPolicy {
        ChunkPolicy {
            overlap,
            max_chunks,
            ..ChunkPolicy::new(64)
        }
    }

    #[test]
    fn windows_cover_text_with_fixed_stride() {
        assert_eq!(windows(10, 4, &policy(1, None)), vec![0..4, 3..7, 6..10]);
        assert_eq!(
            windows(11, 4, &policy(1, None)),
            vec![0..4, 3..7, 6..10, 9..11]
        );
        assert_eq!(windows(4, 4, &policy(1, None)), vec![0..4]);
        assert_eq!(windows(0, 4, &policy(1, None)), vec![0..0]);
        assert_eq!(windows(10, 4, &policy(1, Some(2))), vec![0..4, 3..7]);
        assert_eq!(windows(3, 4, &policy(1, Some(0))), vec![0..3]);
        // Overlap >= window would never advance; it is capped at window - 1.
        assert_eq!(windows(3, 1, &policy(5, None)), vec![0..1, 1..2, 2..3]);
        assert_eq!(windows(5, 3, &policy(9, None)), vec![0..3, 1..4, 2..5]);
    }

    #[test]
    fn default_policy() {
        let p = ChunkPolicy::new(512);
        assert_eq!((p.overlap, p.max_chunks, p.query_reserve), (64, None, 256));
        assert_eq!(ChunkPolicy::new(60).overlap, 8); // 7.5 rounds up
        assert_eq!(ChunkPolicy::new(3).overlap, 0);
    }

    #[test]
    fn best_chunk_scores_maps_back() {
        let scores = [0.1, 0.7, -2.0, 0.3, 5.0, 1.0];
        let doc_of = [0, 0, 1, 1, 3, 9];
        let best = best_chunk_scores(&scores, &doc_of, 4);
        assert_eq!(best, vec![0.7, 0.3, f32::NEG_INFINITY, 5.0]);
        assert!(best_chunk_scores(&[f32::NAN, 1.0], &[0, 0], 1)[0].is_nan());
        assert!(best_chunk_scores(&[], &[], 0).is_empty());
    }
}
