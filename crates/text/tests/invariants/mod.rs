//! What must hold when any text is tokenized, chunked and batched. Two drivers search for a
//! counterexample: the property tests in tests/inputs.rs (proptest, shrinking to a small case)
//! and the `chunking` fuzz target under fuzz/ (libFuzzer, guided by coverage), which includes
//! this file by path, so the invariants are stated once. Every check panics on a violation.
use std::ops::Range;

use finerank_text::{
    best_chunk_scores, chunk_pairs, chunk_singles, plan_batches, ChunkPolicy, Encoded, PairChunks,
    TextTokenizer,
};

/// Everything a rerank request's text goes through: pair chunking of the documents against the
/// query, scores mapped back to documents, the batch plan of the chunks, bi-encoder chunking,
/// and Hugging Face pair truncation.
pub fn check_text_pipeline(
    tok: &TextTokenizer,
    query: &str,
    documents: &[&str],
    policy: &ChunkPolicy,
    max_tokens: usize,
    max_batch: usize,
) {
    let chunks = check_pair_chunks(tok, query, documents, policy);
    // Any scores will do; these differ between chunks, so a chunk credited to the wrong
    // document shows.
    let scores: Vec<f32> = chunks
        .inputs
        .iter()
        .map(|e| (e.ids.iter().sum::<i64>() % 1009) as f32)
        .collect();
    check_best_chunk_scores(&scores, &chunks.doc_of, documents.len());
    let lengths: Vec<usize> = chunks.inputs.iter().map(Encoded::len).collect();
    check_batches(&lengths, max_tokens, max_batch);
    check_single_chunks(tok, documents, policy);
    for document in documents {
        check_longest_first(tok, query, document, policy.max_len);
    }
}

/// `chunk_pairs` pairs each document with as much of the query's start as fits beside all of it,
/// but never less than the query's cap (or the whole query, if shorter), and always leaves one
/// token for the document. It says whether it cut the query for any document, and gives every
/// document, in order, the windows of [`check_windows`], each beside its kept query.
pub fn check_pair_chunks(
    tok: &TextTokenizer,
    query: &str,
    documents: &[&str],
    policy: &ChunkPolicy,
) -> PairChunks {
    let out = chunk_pairs(tok, query, documents, policy);
    let ctx = || format!("query {query:?}, documents {documents:?}, {policy:?}");
    let query_ids = tok.tokens(query);
    let content = policy.max_len.saturating_sub(tok.special_tokens(true));
    let texts = tok.tokens_batch(documents);
    let kept: Vec<usize> = texts
        .iter()
        .map(|doc| {
            let fits = query_ids.len() + doc.len() <= content;
            let share = if fits {
                query_ids.len()
            } else {
                query_ids
                    .len()
                    .min((content - doc.len().min(content)).max(policy.query_reserve))
            };
            share.min(content.saturating_sub(1))
        })
        .collect();
    assert_eq!(out.query_tokens, query_ids.len(), "{}", ctx());
    assert_eq!(
        out.query_truncated,
        kept.iter().any(|&k| k < query_ids.len()),
        "{}",
        ctx()
    );
    assert_eq!(out.inputs.len(), out.doc_of.len(), "{}", ctx());
    check_windows(
        &out.inputs,
        &out.doc_of,
        &texts,
        |d| content - kept[d],
        policy,
        |d, w| tok.pair_from_tokens(&query_ids[..kept[d]], w),
    );
    // Within the window, except where it has no room even for one document token.
    let limit = policy.max_len.max(tok.special_tokens(true) + 1);
    assert!(out.inputs.iter().all(|e| e.len() <= limit), "{}", ctx());
    out
}

/// `chunk_singles` gives every text, in order, the windows of [`check_windows`].
pub fn check_single_chunks(tok: &TextTokenizer, texts: &[&str], policy: &ChunkPolicy) {
    let (inputs, owner) = chunk_singles(tok, texts, "", policy);
    let room = policy.max_len.saturating_sub(tok.special_tokens(false));
    check_windows(
        &inputs,
        &owner,
        &tok.tokens_batch(texts),
        |_| room,
        policy,
        |_, w| tok.single_from_tokens(w),
    );
    let limit = policy.max_len.max(tok.special_tokens(false) + 1);
    assert!(
        inputs.iter().all(|e| e.len() <= limit),
        "{texts:?}, {policy:?}"
    );
}

/// `inputs[i]` belongs to text `owner[i]`. Texts own consecutive runs of inputs, in order, at
/// least one each. With `room(t)` tokens per window of text `t` (at least one), its windows
/// start `room - overlap` apart (the overlap capped so each window adds a token), are `room`
/// long except the last, and cover the text, unless `max_chunks` stopped them first.
/// `encode(t, window)` makes the input from a window's tokens.
fn check_windows(
    inputs: &[Encoded],
    owner: &[usize],
    texts: &[Vec<u32>],
    room: impl Fn(usize) -> usize,
    policy: &ChunkPolicy,
    encode: impl Fn(usize, &[u32]) -> Encoded,
) {
    let cap = policy.max_chunks.map_or(usize::MAX, |c| c.max(1));
    let mut at = 0;
    for (t, ids) in texts.iter().enumerate() {
        let window = room(t).max(1);
        let stride = window - policy.overlap.min(window - 1);
        let ctx = || format!("text {t} of {} tokens, {policy:?}", ids.len());
        let run = owner[at..].iter().take_while(|&&o| o == t).count();
        let needed = 1 + ids.len().saturating_sub(window).div_ceil(stride);
        assert_eq!(run, needed.min(cap), "{}", ctx());
        for (k, input) in inputs[at..at + run].iter().enumerate() {
            let range: Range<usize> = k * stride..(k * stride + window).min(ids.len());
            assert_eq!(*input, encode(t, &ids[range]), "window {k}; {}", ctx());
        }
        at += run;
    }
    assert_eq!(
        at,
        owner.len(),
        "inputs owned by no text: {:?}",
        &owner[at..]
    );
}

/// One score per document: the best of its chunks' scores (NaN if any is NaN, so a broken model
/// output shows), minus infinity for a document with no chunk.
pub fn check_best_chunk_scores(scores: &[f32], doc_of: &[usize], n_docs: usize) {
    let best = best_chunk_scores(scores, doc_of, n_docs);
    assert_eq!(best.len(), n_docs);
    for (d, &b) in best.iter().enumerate() {
        let own: Vec<f32> = scores
            .iter()
            .zip(doc_of)
            .filter(|(_, &o)| o == d)
            .map(|(&s, _)| s)
            .collect();
        if own.iter().any(|s| s.is_nan()) {
            assert!(b.is_nan(), "document {d}: {own:?} gave {b}");
        } else {
            let max = own.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(b, max, "document {d}: {own:?}");
        }
    }
}

/// Every input in exactly one batch of at most `max_batch` (0 acting as 1), longest first within
/// a batch, padded to its first input within `max_tokens` unless that input is alone, none padded
/// to more than twice its length; and greedy: a batch closes only because the next input would
/// not fit or would be padded more than that.
pub fn check_batches(lengths: &[usize], max_tokens: usize, max_batch: usize) {
    let batches = plan_batches(lengths, max_tokens, max_batch);
    let ctx = || format!("{lengths:?}, max_tokens {max_tokens}, max_batch {max_batch}");
    let cap = max_batch.max(1);
    let mut seen = vec![0; lengths.len()];
    for b in &batches {
        assert!(!b.is_empty() && b.len() <= cap, "{b:?}; {}", ctx());
        let lens: Vec<usize> = b.iter().map(|&i| lengths[i]).collect();
        assert!(lens.windows(2).all(|w| w[0] >= w[1]), "{b:?}; {}", ctx());
        assert!(
            b.len() == 1 || lens[0].saturating_mul(b.len()) <= max_tokens,
            "{b:?}; {}",
            ctx()
        );
        assert!(
            lens.iter().all(|&l| l.saturating_mul(2) >= lens[0]),
            "{b:?}; {}",
            ctx()
        );
        b.iter().for_each(|&i| seen[i] += 1);
    }
    assert!(seen.iter().all(|&n| n == 1), "{batches:?}; {}", ctx());
    for pair in batches.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        let last = lengths[prev[prev.len() - 1]];
        assert!(lengths[next[0]] <= last, "{batches:?}; {}", ctx());
        let grown = lengths[prev[0]].saturating_mul(prev.len() + 1);
        assert!(
            prev.len() == cap
                || grown > max_tokens
                || lengths[next[0]].saturating_mul(2) < lengths[prev[0]],
            "{batches:?}; {}",
            ctx()
        );
    }
}

/// Hugging Face `longest_first` pair truncation keeps a prefix of each text, as many tokens in
/// all as fit beside the specials, and cuts neither below half of that room unless it is shorter.
/// (The first text's tokens are told by their type id, as in BERT.)
pub fn check_longest_first(tok: &TextTokenizer, a: &str, b: &str, max_len: usize) {
    let (a_ids, b_ids) = (tok.tokens(a), tok.tokens(b));
    let room = max_len.saturating_sub(tok.special_tokens(true));
    let out = tok.encode_pair_longest_first(a, b, max_len);
    let ctx = || format!("{a:?}, {b:?}, max_len {max_len}");
    let first = |e: &Encoded| e.type_ids.iter().filter(|&&t| t == 0).count();
    let keep_a = first(&out) - first(&tok.pair_from_tokens(&[], &[]));
    let keep_b = out.len() - tok.special_tokens(true) - keep_a;
    assert!(keep_a <= a_ids.len() && keep_b <= b_ids.len(), "{}", ctx());
    assert_eq!(
        out,
        tok.pair_from_tokens(&a_ids[..keep_a], &b_ids[..keep_b]),
        "{}",
        ctx()
    );
    assert_eq!(
        keep_a + keep_b,
        room.min(a_ids.len() + b_ids.len()),
        "{}",
        ctx()
    );
    for (len, keep) in [(a_ids.len(), keep_a), (b_ids.len(), keep_b)] {
        assert!(keep >= len.min(room / 2), "{}", ctx());
    }
}
