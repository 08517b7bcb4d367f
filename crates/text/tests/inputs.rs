//! Chunking and batching, checked on the tiny BERT fixture's tokenizer: worked examples, then
//! the invariants of tests/invariants/mod.rs as properties of any text and options.

mod common;
mod invariants;

use std::sync::LazyLock;

use common::bert;
use finerank_text::{chunk_pairs, chunk_singles, ChunkPolicy, Encoded, TextTokenizer};
use invariants::{check_batches, check_best_chunk_scores, check_text_pipeline};
use proptest::prelude::*;

const CLS: i64 = 101;
const SEP: i64 = 102;
const WORDS: [&str; 16] = [
    "the",
    "court",
    "held",
    "that",
    "insurance",
    "policies",
    "are",
    "property",
    "of",
    "estate",
    "mitochondria",
    "powerhouse",
    "cell",
    "1998",
    "paris",
    "unbelievably",
];

/// Deterministic pseudo-random numbers (Knuth's MMIX LCG), so failures reproduce.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n.max(1) as u64) as usize
    }

    fn text(&mut self, words: usize) -> String {
        let picked: Vec<&str> = (0..words).map(|_| WORDS[self.below(WORDS.len())]).collect();
        picked.join(" ")
    }
}

/// Splits a BERT pair input `[CLS] a [SEP] b [SEP]` back into a and b.
fn split_pair(e: &Encoded) -> (Vec<u32>, Vec<u32>) {
    let n = e.ids.len();
    let first = e.type_ids.iter().take_while(|&&t| t == 0).count();
    assert_eq!(e.ids[0], CLS);
    assert_eq!((e.ids[first - 1], e.ids[n - 1]), (SEP, SEP));
    assert!(e.type_ids[first..].iter().all(|&t| t == 1));
    let ids = |r: std::ops::Range<usize>| e.ids[r].iter().map(|&i| i as u32).collect();
    (ids(1..first - 1), ids(first..n - 1))
}

/// Checks that `windows` are consecutive windows of `doc` sharing `overlap` tokens,
/// and returns how many of the document's tokens they cover from its start.
fn check_windows(windows: &[Vec<u32>], doc: &[u32], overlap: usize) -> usize {
    let mut covered = windows[0].clone();
    for pair in windows.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        assert_eq!(prev[prev.len() - overlap..], next[..overlap], "overlap");
        assert!(next.len() > overlap, "a window must add tokens");
        covered.extend_from_slice(&next[overlap..]);
    }
    assert_eq!(
        covered[..],
        doc[..covered.len()],
        "windows reproduce the document"
    );
    covered.len()
}

#[test]
fn long_document_is_split_into_overlapping_windows() {
    let tok = bert();
    let query = "what does the court hold about insurance";
    let doc = Lcg(7).text(1000);
    let doc_tokens = tok.tokens(&doc);
    let query_tokens = tok.tokens(query);
    let policy = ChunkPolicy::new(64);
    assert_eq!(policy.overlap, 8);

    let out = chunk_pairs(&tok, query, &["short one", &doc, ""], &policy);
    assert!(!out.query_truncated);
    assert_eq!(out.query_tokens, query_tokens.len());
    assert_eq!(out.inputs.len(), out.doc_of.len());

    let long: Vec<Vec<u32>> = out
        .inputs
        .iter()
        .zip(&out.doc_of)
        .filter(|(_, &d)| d == 1)
        .map(|(e, _)| {
            assert!(e.len() <= 64);
            let (q, d) = split_pair(e);
            assert_eq!(q, query_tokens, "query kept whole in every chunk");
            d
        })
        .collect();
    let window = 64 - 3 - query_tokens.len();
    assert_eq!(long.len(), (doc_tokens.len() - 8).div_ceil(window - 8));
    assert!(long.iter().rev().skip(1).all(|w| w.len() == window));
    assert_eq!(check_windows(&long, &doc_tokens, 8), doc_tokens.len());

    // Short, long and empty documents, in order; the empty one still gets an input.
    let n_long = long.len();
    let mut expected_owner = vec![0];
    expected_owner.extend(std::iter::repeat_n(1, n_long));
    expected_owner.push(2);
    assert_eq!(out.doc_of, expected_owner);
    assert_eq!(
        out.inputs[0],
        tok.encode_pair_longest_first(query, "short one", 64)
    );
    assert_eq!(
        out.inputs[n_long + 1],
        tok.pair_from_tokens(&query_tokens, &[])
    );

    let capped = chunk_pairs(
        &tok,
        query,
        &[&doc],
        &ChunkPolicy {
            max_chunks: Some(3),
            ..policy
        },
    );
    assert_eq!(capped.doc_of, [0, 0, 0]);
    assert_eq!(capped.inputs[..], out.inputs[1..4]);
}

#[test]
fn long_query_is_cut_only_as_far_as_each_document_needs() {
    let tok = bert();
    let query = Lcg(1).text(100);
    let query_tokens = tok.tokens(&query);
    let long_doc = Lcg(2).text(200);
    let out = chunk_pairs(
        &tok,
        &query,
        &["paris", "", &long_doc],
        &ChunkPolicy::new(64),
    );
    assert!(out.query_truncated);
    assert_eq!(out.query_tokens, query_tokens.len());
    for (e, &doc) in out.inputs.iter().zip(&out.doc_of) {
        assert!(e.len() <= 64);
        let kept = split_pair(e).0.len();
        // 61 tokens of room: "paris" and the empty document leave 60 for the query (one is
        // always the document's); the long document is chunked beside half the window.
        let expected = if doc == 2 { 32 } else { 60 };
        assert_eq!(
            split_pair(e).0,
            query_tokens[..expected],
            "document {doc}, kept {kept}"
        );
    }
    assert!(out.doc_of.iter().filter(|&&d| d == 2).count() > 1);
}

#[test]
fn pair_that_fits_reads_what_hugging_face_reads() {
    let tok = bert();
    // Longer than half the window, but it fits beside the document: nothing is cut.
    let query = Lcg(3).text(30);
    let doc = "the court held that the insurer owed a duty to defend";
    let (q, d) = (tok.tokens(&query).len(), tok.tokens(doc).len());
    assert!(q > 32 && q + d + 3 <= 64, "query {q} tokens, document {d}");
    let out = chunk_pairs(&tok, &query, &[doc], &ChunkPolicy::new(64));
    assert!(!out.query_truncated);
    assert_eq!(out.inputs, [tok.encode_pair_longest_first(&query, doc, 64)]);
}

#[test]
fn tiny_windows_terminate() {
    let tok = bert();
    let doc = "the court held that insurance policies are property";
    let doc_tokens = tok.tokens(doc);
    for max_len in 0..8 {
        let policy = ChunkPolicy {
            overlap: 10,
            ..ChunkPolicy::new(max_len)
        };
        let out = chunk_pairs(&tok, "what", &[doc], &policy);
        assert!(!out.inputs.is_empty());
        if max_len > 3 {
            assert!(out.inputs.iter().all(|e| e.len() <= max_len), "{max_len}");
        }
        let windows: Vec<Vec<u32>> = out.inputs.iter().map(|e| split_pair(e).1).collect();
        let window = windows[0].len();
        assert_eq!(
            check_windows(&windows, &doc_tokens, window - 1),
            doc_tokens.len()
        );
    }
}

#[test]
fn singles_are_split_for_bi_encoders() {
    let tok = bert();
    let text = Lcg(3).text(300);
    let tokens = tok.tokens(&text);
    let policy = ChunkPolicy::new(32);
    let (inputs, owner) = chunk_singles(&tok, &["paris", &text, ""], "", &policy);
    assert_eq!(owner[0], 0);
    assert_eq!(owner[owner.len() - 1], 2);
    assert_eq!(inputs[0], tok.encode_single("paris", 32));
    assert_eq!(inputs[inputs.len() - 1].ids, [CLS, SEP]);
    let windows: Vec<Vec<u32>> = inputs
        .iter()
        .zip(&owner)
        .filter(|(_, &o)| o == 1)
        .map(|(e, _)| {
            assert!(e.len() <= 32);
            assert_eq!((e.ids[0], e.ids[e.len() - 1]), (CLS, SEP));
            e.ids[1..e.len() - 1].iter().map(|&i| i as u32).collect()
        })
        .collect();
    assert!(windows.len() > 1);
    assert_eq!(check_windows(&windows, &tokens, 4), tokens.len());
}

/// Text the tokenizer splits into many ordinary words, or any characters at all (control
/// characters, combining marks, the tokenizer's own special tokens such as `[SEP]`).
fn text(max_words: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(&WORDS[..]), 0..max_words)
            .prop_map(|words| words.join(" ")),
        "(\\PC|\\s|\\[SEP\\]|\\[CLS\\]){0,60}",
        any::<String>(),
    ]
}

/// Windows from none to roomy, overlaps and query caps past the window.
fn policy() -> impl Strategy<Value = ChunkPolicy> {
    let parts = (
        0..80usize,
        0..90usize,
        prop::option::of(0..6usize),
        0..90usize,
    );
    parts.prop_map(
        |(max_len, overlap, max_chunks, query_reserve)| ChunkPolicy {
            max_len,
            overlap,
            max_chunks,
            query_reserve,
        },
    )
}

static BERT: LazyLock<TextTokenizer> = LazyLock::new(bert);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn text_pipeline_invariants_hold(
        query in text(30),
        documents in prop::collection::vec(text(200), 0..5),
        policy in policy(),
        max_tokens in 0..2000usize,
        max_batch in 0..20usize,
    ) {
        let documents: Vec<&str> = documents.iter().map(String::as_str).collect();
        check_text_pipeline(&BERT, &query, &documents, &policy, max_tokens, max_batch);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn batch_plan_invariants_hold(
        lengths in prop::collection::vec(0..600usize, 0..300),
        max_tokens in 0..5000usize,
        max_batch in 0..65usize,
    ) {
        check_batches(&lengths, max_tokens, max_batch);
    }

    /// Any scores (NaN and infinities too) and owners, some past the last document.
    #[test]
    fn best_chunk_scores_take_each_documents_best(
        chunks in prop::collection::vec((any::<f32>(), 0..8usize), 0..40),
        n_docs in 0..6usize,
    ) {
        let (scores, doc_of): (Vec<f32>, Vec<usize>) = chunks.into_iter().unzip();
        check_best_chunk_scores(&scores, &doc_of, n_docs);
    }
}
