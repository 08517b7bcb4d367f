//! An LLM reranker's prompt, on the Qwen3 fixture's byte-level BPE tokenizer (that the ids equal
//! transformers' own, cut as the model card cuts them, is checked in the model crate's
//! `--test families`, against the fixture's reference).
use std::path::Path;

use finerank_text::{ChunkPolicy, PairFormat, PromptTemplate, TextTokenizer};

fn qwen3() -> TextTokenizer {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../model/tests/families/qwen3-reranker/tokenizer.json");
    TextTokenizer::from_file(&path).unwrap()
}

fn ids(tokens: &[u32]) -> Vec<i64> {
    tokens.iter().map(|&t| i64::from(t)).collect()
}

const QUERY: &str = "Does the automatic stay bar a creditor's setoff of mutual debts?";

fn long_document() -> String {
    "The court held that the contract was unenforceable because it lacked consideration. "
        .repeat(12)
}

/// The body as the model card writes it.
fn body(instruction: &str, query: &str, document: &str) -> String {
    format!("<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}")
}

#[test]
fn a_long_document_is_read_in_windows_each_inside_the_whole_prompt() {
    let tok = qwen3();
    let template = PromptTemplate::qwen3_reranker();
    let (prefix, suffix) = (tok.tokens(&template.prefix), tok.tokens(&template.suffix));
    let format = PairFormat::Prompt(template.clone());
    let document = long_document();
    let policy = ChunkPolicy::new(128);
    let out = format.chunk(&tok, QUERY, &[&document], &policy);
    assert!(!out.query_truncated);
    assert!(out.inputs.len() > 2, "{} windows", out.inputs.len());

    // The first window is the model card's input: the body cut from its end.
    let room = 128 - prefix.len() - suffix.len();
    let mut card = tok.tokens(&body(&template.instruction, QUERY, &document));
    assert!(card.len() > room);
    card.truncate(room);
    assert_eq!(
        out.inputs[0].ids,
        ids(&[&prefix[..], &card, &suffix].concat())
    );

    // Every window: the prompt up to the document, a window of the document, the suffix; the
    // windows overlap by the policy's overlap and the last ends at the document's end.
    let text = body(&template.instruction, QUERY, &document);
    let [head, doc_ids] =
        <[Vec<u32>; 2]>::try_from(tok.split_tokens(&text, &[text.len() - document.len()])).unwrap();
    let start = [&prefix[..], &head].concat();
    let mut next = 0;
    for input in &out.inputs {
        assert!(input.len() <= 128);
        assert!(input.type_ids.iter().all(|&t| t == 0));
        assert_eq!(input.ids[..start.len()], ids(&start)[..]);
        assert_eq!(input.ids[input.len() - suffix.len()..], ids(&suffix)[..]);
        let window = &input.ids[start.len()..input.len() - suffix.len()];
        assert_eq!(window, &ids(&doc_ids[next..next + window.len()])[..]);
        next += window.len() - policy.overlap;
    }
    assert_eq!(next + policy.overlap, doc_ids.len());

    // What the pair counts before any cut: the whole prompt.
    let uncut = prefix.len() + head.len() + doc_ids.len() + suffix.len();
    assert_eq!(format.count(&tok, QUERY, &document), uncut);
}

#[test]
fn a_long_query_is_cut_but_the_labels_stay() {
    let tok = qwen3();
    let format = PairFormat::Prompt(PromptTemplate::qwen3_reranker());
    let query = QUERY.repeat(8);
    let out = format.chunk(&tok, &query, &[&long_document()], &ChunkPolicy::new(128));
    assert!(out.query_truncated);
    for input in &out.inputs {
        assert!(input.len() <= 128);
        let text: Vec<u32> = input.ids.iter().map(|&i| i as u32).collect();
        let labels = tok.tokens("\n<Document>:");
        assert!(
            text.windows(labels.len()).any(|w| w == labels),
            "the document's label is in every window"
        );
    }
}

#[test]
fn the_instruction_is_the_request_s_when_it_gives_one() {
    let tok = qwen3();
    let default = PairFormat::Prompt(PromptTemplate::qwen3_reranker());
    let custom = default.with_instruction("Find court holdings");
    let chunk = |f: &PairFormat| f.chunk(&tok, QUERY, &["Affirmed."], &ChunkPolicy::new(512));
    let template = PromptTemplate::qwen3_reranker();
    let whole = |instruction: &str| {
        let prompt = [
            tok.tokens(&template.prefix),
            tok.tokens(&body(instruction, QUERY, "Affirmed.")),
            tok.tokens(&template.suffix),
        ]
        .concat();
        ids(&prompt)
    };
    assert_eq!(chunk(&default).inputs[0].ids, whole(&template.instruction));
    assert_eq!(chunk(&custom).inputs[0].ids, whole("Find court holdings"));
    assert!(default.takes_instruction() && !PairFormat::Segments.takes_instruction());
    assert_eq!(
        PairFormat::Segments.with_instruction("x"),
        PairFormat::Segments
    );
}
