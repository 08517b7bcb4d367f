//! The rerank request decoder on any body, without a model or a server: the property-test
//! stand-in for a fuzz target, since this crate links libtorch (through finerank-engine) and the
//! cargo-fuzz targets under fuzz/ must not. Any body is decoded or refused as the client's
//! fault (400 or 422), and a well-formed request yields its documents' texts and its `top_n`.
use finerank_server::decode_rerank_request;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};

const PATHS: [&str; 3] = ["/v1/rerank", "/v2/rerank", "/rerank"];

/// Every field the three request shapes have, and a document's usual fields.
const FIELDS: [&str; 15] = [
    "model",
    "query",
    "documents",
    "top_n",
    "rank_fields",
    "return_documents",
    "max_chunks_per_doc",
    "max_tokens_per_doc",
    "texts",
    "raw_scores",
    "return_text",
    "truncate",
    "truncation_direction",
    "text",
    "title",
];

/// Any JSON value, nested a little, its objects keyed by the requests' field names, its
/// numbers at the edges of i64 and beyond.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3.0..3.0f64).prop_map(Value::from),
        "\\PC{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((select(&FIELDS[..]), inner), 0..6).prop_map(|fields| {
                Value::Object(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
            }),
        ]
    })
}

/// Any bytes, any JSON text (possibly cut short), or any JSON value.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        (json(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let mut text = v.to_string().into_bytes();
            text.truncate(cut.index(text.len() + 1));
            text
        }),
        json().prop_map(|v| v.to_string().into_bytes()),
    ]
}

/// A v1 document and the text the model scores for it: a string, or an object ranked by its
/// `text` field.
fn v1_document() -> impl Strategy<Value = (Value, String)> {
    prop_oneof![
        "\\PC{0,12}".prop_map(|s| (Value::from(s.clone()), s)),
        ("\\PC{0,12}", "\\PC{0,6}")
            .prop_map(|(text, title)| { (json!({"text": text, "title": title}), text) }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_body_is_decoded_or_refused(path in select(&PATHS[..]), body in body()) {
        if let Err(e) = decode_rerank_request(path, &body) {
            prop_assert!(matches!(e.status.as_u16(), 400 | 422), "{e}");
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn well_formed_requests_keep_their_documents_and_top_n(
        path in select(&PATHS[..]),
        query in "\\PC{0,12}",
        documents in prop::collection::vec(v1_document(), 0..8),
        top_n in prop::option::of(prop_oneof![1..10i64, any::<i64>()]),
    ) {
        let texts: Vec<String> = documents.iter().map(|(_, t)| t.clone()).collect();
        let mut request = Map::new();
        request.insert("query".into(), query.into());
        let (field, docs) = match path {
            "/v1/rerank" => ("documents", documents.into_iter().map(|(d, _)| d).collect()),
            "/v2/rerank" => ("documents", Value::from(texts.clone())),
            _ => ("texts", Value::from(texts.clone())),
        };
        request.insert(field.into(), docs);
        if let Some(n) = top_n {
            request.insert("top_n".into(), n.into());
        }
        let decoded = decode_rerank_request(path, Value::Object(request).to_string().as_bytes());
        match (path, top_n) {
            // TEI has no top_n (the field is ignored) and returns every text.
            ("/rerank", _) => prop_assert_eq!(decoded.unwrap(), (texts, None)),
            (_, Some(n)) if n < 1 => {
                let e = decoded.unwrap_err();
                prop_assert_eq!(e.status.as_u16(), 400);
                prop_assert_eq!(e.message, format!("top_n must be at least 1, got {n}"));
            }
            _ => prop_assert_eq!(decoded.unwrap(), (texts, top_n.map(|n| n as usize))),
        }
    }
}
