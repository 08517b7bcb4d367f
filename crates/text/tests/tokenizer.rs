mod common;

use common::{bert, fixture};
use finerank_text::{Encoded, TextError, TextTokenizer};
use serde_json::Value;

const CLS: i64 = 101;
const SEP: i64 = 102;

struct Expected {
    pairs: Vec<(String, String)>,
    /// Unpadded rows: (input_ids, token_type_ids).
    rows: Vec<(Vec<i64>, Vec<i64>)>,
    max_length: usize,
}

fn expected(model: &str) -> Expected {
    let text = std::fs::read_to_string(fixture(&format!("{model}/expected.json"))).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["truncation"], "longest_first");
    let ints = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    let pairs = json["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let field = |k: &str| p[k].as_str().unwrap().to_owned();
            (field("query"), field("document"))
        })
        .collect();
    let rows = (0..json["input_ids"].as_array().unwrap().len())
        .map(|i| {
            let len = ints(&json["attention_mask"][i]).iter().sum::<i64>() as usize;
            let mut ids = ints(&json["input_ids"][i]);
            let mut types = ints(&json["token_type_ids"][i]);
            ids.truncate(len);
            types.truncate(len);
            (ids, types)
        })
        .collect();
    Expected {
        pairs,
        rows,
        max_length: json["max_length"].as_u64().unwrap() as usize,
    }
}

fn tokenizer(model: &str) -> TextTokenizer {
    TextTokenizer::from_file(&fixture(&format!("{model}/tokenizer.json"))).unwrap()
}

#[test]
fn bert_pairs_match_transformers() {
    let exp = expected("tiny-bert-cross-encoder");
    let tok = tokenizer("tiny-bert-cross-encoder");
    assert_eq!(exp.pairs.len(), exp.rows.len());
    for ((q, d), (ids, types)) in exp.pairs.iter().zip(&exp.rows) {
        let got = tok.encode_pair_longest_first(q, d, exp.max_length);
        assert_eq!(&got.ids, ids, "ids for ({q:?}, {d:?})");
        assert_eq!(&got.type_ids, types, "type ids for ({q:?}, {d:?})");
    }
}

#[test]
fn xlmr_pairs_match_transformers() {
    // Type ids are not compared: that model has type_vocab_size 1 and the model
    // crate zeroes them.
    let exp = expected("tiny-xlmr-cross-encoder");
    let tok = tokenizer("tiny-xlmr-cross-encoder");
    for ((q, d), (ids, _)) in exp.pairs.iter().zip(&exp.rows) {
        let got = tok.encode_pair_longest_first(q, d, exp.max_length);
        assert_eq!(&got.ids, ids, "ids for ({q:?}, {d:?})");
    }
}

#[test]
fn pair_from_tokens_equals_untruncated_encoding() {
    let tok = bert();
    for (q, d) in expected("tiny-bert-cross-encoder").pairs {
        let built = tok.pair_from_tokens(&tok.tokens(&q), &tok.tokens(&d));
        assert_eq!(built, tok.encode_pair_longest_first(&q, &d, 10_000));
        assert_eq!(built.ids.first(), Some(&CLS));
        assert_eq!(built.ids.last(), Some(&SEP));
    }
}

const TEN: &str = "one two three four five six seven eight nine ten";
const GREEK: &str = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi \
                     omicron pi rho sigma tau upsilon phi chi psi omega";

fn bert_pair(a: &[i64], b: &[i64]) -> Encoded {
    let ids = [&[CLS][..], a, &[SEP], b, &[SEP]].concat();
    let type_ids = [vec![0; a.len() + 2], vec![1; b.len() + 1]].concat();
    Encoded { ids, type_ids }
}

#[test]
fn longest_first_truncation_matches_transformers() {
    let tok = bert();
    let ids = |text: &str| -> Vec<i64> { tok.tokens(text).iter().map(|&i| i64::from(i)).collect() };
    assert_eq!(
        ids(TEN),
        [2028, 2048, 2093, 2176, 2274, 2416, 2698, 2809, 3157, 2702]
    );
    assert_eq!(ids(GREEK).len(), 30);

    // (a, b, max_len, kept of a, kept of b), from transformers 5.24
    // `tokenizer(a, b, truncation="longest_first", max_length=max_len)`. On an odd
    // budget the longer side keeps the extra token (the second one on a tie), unlike
    // the slow tokenizers' one-at-a-time loop.
    let cases = [
        (TEN, GREEK, 16, 6, 7),
        (TEN, GREEK, 15, 6, 6),
        (TEN, GREEK, 8, 2, 3),
        (TEN, GREEK, 4, 0, 1),
        (TEN, GREEK, 3, 0, 0),
        (GREEK, TEN, 16, 7, 6),
        (GREEK, TEN, 8, 3, 2),
        (GREEK, TEN, 4, 1, 0),
        (TEN, TEN, 16, 6, 7),
        (TEN, TEN, 4, 0, 1),
        (TEN, GREEK, 30, 10, 17),
        (GREEK, TEN, 30, 17, 10),
        (TEN, GREEK, 43, 10, 30),
    ];
    for (a, b, max_len, keep_a, keep_b) in cases {
        let got = tok.encode_pair_longest_first(a, b, max_len);
        let (a, b) = (ids(a), ids(b));
        assert_eq!(
            got,
            bert_pair(&a[..keep_a], &b[..keep_b]),
            "max_len {max_len}"
        );
        assert_eq!(got.len(), max_len.min(a.len() + b.len() + 3));
    }
    // Below the special tokens we return just them (transformers would not truncate).
    assert_eq!(
        tok.encode_pair_longest_first(TEN, GREEK, 1),
        bert_pair(&[], &[])
    );
}

#[test]
fn single_encoding_truncates_from_the_right() {
    let tok = bert();
    assert_eq!(tok.special_tokens(false), 2);
    assert_eq!(tok.special_tokens(true), 3);
    let five = tok.encode_single(TEN, 5);
    assert_eq!(five.ids, [CLS, 2028, 2048, 2093, SEP]);
    assert_eq!(five.type_ids, [0; 5]);
    // The fixture file stores padding to 128; it must not leak into our encodings.
    assert_eq!(tok.encode_single(TEN, 512).len(), 12);
    assert_eq!(tok.encode_single(TEN, 0).ids, [CLS, SEP]);
    assert_eq!(
        tok.single_from_tokens(&tok.tokens(TEN)),
        tok.encode_single(TEN, 512)
    );
}

#[test]
fn tokens_batch_equals_tokens() {
    let tok = bert();
    let texts = [TEN, "", GREEK, "Paris is the capital."];
    let batch = tok.tokens_batch(&texts);
    assert_eq!(batch.len(), texts.len());
    for (text, ids) in texts.iter().zip(&batch) {
        assert_eq!(&tok.tokens(text), ids);
    }
    assert!(batch[1].is_empty());
}

#[test]
fn roberta_template_is_respected() {
    // Same vocabulary, RoBERTa's post-processor: <s> a </s></s> b </s>.
    let path = fixture("tiny-bert-cross-encoder/tokenizer.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["post_processor"] = serde_json::json!({
        "type": "RobertaProcessing",
        "sep": ["[SEP]", SEP],
        "cls": ["[CLS]", CLS],
        "trim_offsets": true,
        "add_prefix_space": false
    });
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("roberta-tokenizer.json");
    std::fs::write(&file, json.to_string()).unwrap();
    let tok = TextTokenizer::from_file(&file).unwrap();

    assert_eq!(
        (tok.special_tokens(false), tok.special_tokens(true)),
        (2, 4)
    );
    let pair = tok.pair_from_tokens(&[7, 8], &[9]);
    assert_eq!(pair.ids, [CLS, 7, 8, SEP, SEP, 9, SEP]);
    assert_eq!(pair.type_ids.len(), 7);
    assert_eq!(tok.single_from_tokens(&[7]).ids, [CLS, 7, SEP]);
    // The budget accounts for 4 specials: 10 content tokens, split 5 / 5.
    let got = tok.encode_pair_longest_first(TEN, GREEK, 14);
    assert_eq!(got.len(), 14);
    assert_eq!(&got.ids[..3], [CLS, 2028, 2048]);
}

#[test]
fn load_errors_name_the_file() {
    let missing = fixture("no-such-model/tokenizer.json");
    let err = TextTokenizer::from_file(&missing).err().unwrap();
    assert!(matches!(err, TextError::Load { .. }));
    assert!(
        err.to_string().contains("no-such-model/tokenizer.json"),
        "{err}"
    );

    let not_json = fixture("tiny-bert-cross-encoder/config.json");
    let err = TextTokenizer::from_file(&not_json).err().unwrap();
    assert!(err.to_string().contains("config.json"), "{err}");
}

/// XLM-R's real tokenizer is a SentencePiece Unigram model, which the tiny fixture (WordPiece, to
/// stay small) does not exercise. `scripts/bootstrap.sh` fetches a real one, the test model that
/// PyPI's sentencepiece source package ships; the reference ids come from SentencePiece itself.
#[test]
fn xlmr_sentencepiece_unigram_matches_sentencepiece() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = root.join(".cache/sentencepiece/test_model.model");
    assert!(
        model.exists(),
        "{} is missing: run scripts/bootstrap.sh",
        model.display()
    );
    let out = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("crates/text/tests/sentencepiece_reference.py"))
        .args([&model, out.path()])
        .status()
        .expect("the .venv from scripts/bootstrap.sh has python");
    assert!(status.success(), "the reference script failed");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("expected.json")).unwrap())
            .unwrap();
    let ids = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    let tok = TextTokenizer::from_file(&out.path().join("tokenizer.json")).unwrap();
    let singles = json["singles"].as_array().unwrap();
    assert!(singles.len() >= 8);
    for (text, want) in json["texts"].as_array().unwrap().iter().zip(singles) {
        let text = text.as_str().unwrap();
        assert_eq!(tok.encode_single(text, 512).ids, ids(want), "{text:?}");
    }
    for pair in json["pairs"].as_array().unwrap() {
        let (a, b) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        let got = tok.encode_pair_longest_first(a, b, 512);
        assert_eq!(got.ids, ids(&pair[2]), "({a:?}, {b:?})");
    }
}

/// A prompted text splits into the prompt's tokens and the text's, which together are the
/// prompted text's tokens, for each kind of tokenizer. Under WordPiece and SentencePiece Unigram
/// (where the space after the prompt belongs to the text's first token) the prompt's tokens are
/// the same whatever follows; under byte-level BPE a space the text's first word cannot absorb
/// stays a token of its own (`Ġ`), which ends within the prompt.
#[test]
fn a_prompt_splits_off_its_tokens_before_the_text() {
    let families = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/families");
    let tokenizers = [
        (tokenizer("tiny-bert-cross-encoder"), true),
        (
            TextTokenizer::from_file(&families.join("deberta-v3-cross-encoder/tokenizer.json"))
                .unwrap(),
            true,
        ),
        (
            TextTokenizer::from_file(&families.join("modernbert-cross-encoder/tokenizer.json"))
                .unwrap(),
            false,
        ),
    ];
    let prompts = [
        "query: ",
        "Represent this sentence for searching relevant passages: ",
    ];
    let texts = ["the statute of frauds", "Writing is required.", ""];
    for (k, (tok, same_head)) in tokenizers.iter().enumerate() {
        for prompt in prompts {
            let (first, _) = tok.prompted_tokens(prompt, texts[0]);
            assert!(!first.is_empty(), "tokenizer {k}: {prompt:?}");
            for text in texts {
                let (head, rest) = tok.prompted_tokens(prompt, text);
                if *same_head {
                    assert_eq!(head, first, "tokenizer {k}: {prompt:?} before {text:?}");
                }
                assert!(
                    head.starts_with(&first),
                    "tokenizer {k}: {prompt:?} before {text:?}"
                );
                let whole: Vec<u32> = head.into_iter().chain(rest).collect();
                assert_eq!(
                    whole,
                    tok.tokens(&format!("{prompt}{text}")),
                    "tokenizer {k}"
                );
            }
        }
        assert_eq!(
            tok.prompted_tokens("", texts[0]),
            (Vec::new(), tok.tokens(texts[0]))
        );
    }
}
