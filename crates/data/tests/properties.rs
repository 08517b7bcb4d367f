//! Properties of the dataset readers, the data review and `prepare` on any input: the invariants
//! of tests/invariants/mod.rs (which the fuzz targets check too), rows written by `write_jsonl`
//! read back unchanged, and any requested split either applied or refused with a problem.

mod invariants;

use std::fmt::Debug;
use std::path::Path;

use finerank_data::*;
use invariants::{check_beir_reader, check_jsonl_readers, check_raw_reader, check_validate};
use proptest::prelude::*;
use proptest::sample::{select, subsequence, Index};
use serde::Serialize;
use serde_json::Value;

/// The fields the readers look for: Cohere's, the test file's and CaseHOLD's.
const FIELDS: [&str; 12] = [
    "query",
    "relevant_passages",
    "hard_negatives",
    "documents",
    "gold_indices",
    "citing_prompt",
    "holding_0",
    "holding_1",
    "holding_2",
    "holding_3",
    "holding_4",
    "label",
];

/// Short text: plain words, blanks, or any printable characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-c ]{0,6}", Just(" ".to_string()), "\\PC{0,8}"]
}

/// Text that is not blank, as queries and relevant passages must be.
fn nonblank() -> impl Strategy<Value = String> {
    "\\PC{0,6}\\S\\PC{0,6}"
}

/// Any JSON value, nested a little, with numbers at the edges: huge, negative, fractional.
fn json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop_oneof![0..6u64, any::<u64>()].prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("JSON has no NaN", |x| {
            serde_json::Number::from_f64(x).map(Value::Number)
        }),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((select(&FIELDS[..]), inner), 0..4).prop_map(|fields| {
                Value::Object(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
            }),
        ]
    })
    .boxed()
}

/// A value for `field`: usually of the type the readers want there, sometimes anything.
fn field_value(field: &'static str) -> BoxedStrategy<Value> {
    let typed = match field {
        "relevant_passages" | "hard_negatives" | "documents" => prop::collection::vec(text(), 0..4)
            .prop_map(Value::from)
            .boxed(),
        "gold_indices" => prop::collection::vec(0..6u64, 0..3)
            .prop_map(Value::from)
            .boxed(),
        // Spreadsheet exports write labels as text, "3.0" among them.
        "label" => prop_oneof![
            (0..6u64).prop_map(Value::from),
            "[0-6](\\.0|\\.5)?".prop_map(Value::from)
        ]
        .boxed(),
        _ => text().prop_map(Value::from).boxed(),
    };
    prop_oneof![4 => typed, 1 => json()].boxed()
}

/// An object with some of the readers' fields.
fn object() -> impl Strategy<Value = Value> {
    subsequence(FIELDS.to_vec(), 0..=FIELDS.len()).prop_flat_map(|fields| {
        let values: Vec<_> = fields
            .into_iter()
            .map(|f| field_value(f).prop_map(move |v| (f.to_string(), v)))
            .collect();
        values.prop_map(|fields| Value::Object(fields.into_iter().collect()))
    })
}

fn json_line<T: Serialize + Debug>(
    row: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Vec<u8>> {
    row.prop_map(|row| serde_json::to_vec(&row).unwrap())
        .boxed()
}

/// A line of a file whose rows come from `row`: mostly such a row, else an object with some of
/// the readers' fields, any JSON value, or bytes.
fn line(row: BoxedStrategy<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        20 => row,
        1 => json_line(object()),
        1 => json_line(json()),
        1 => prop::collection::vec(any::<u8>(), 0..24),
    ]
}

/// A header, then lines ended by `\n`, `\r\n`, a blank line or nothing; maybe after a
/// byte-order mark, and sometimes cut short anywhere (a truncated upload).
fn file(header: BoxedStrategy<Vec<u8>>, row: BoxedStrategy<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let ending = select(&["\n", "\r\n", "\n\n", ""][..]);
    (
        any::<bool>(),
        header,
        prop::collection::vec((line(row), ending), 1..5),
        prop::option::weighted(0.2, any::<Index>()),
    )
        .prop_map(|(bom, header, lines, cut)| {
            let mut bytes = if bom {
                b"\xEF\xBB\xBF".to_vec()
            } else {
                Vec::new()
            };
            bytes.extend(header);
            for (line, end) in lines {
                bytes.extend(line);
                bytes.extend(end.as_bytes());
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        })
        .boxed()
}

/// A raw CaseHOLD row: the prompt, five holdings and the label, which spreadsheet exports
/// write as text ("3.0" among them).
fn casehold_row() -> impl Strategy<Value = (String, [String; 5], Value)> {
    let label = prop_oneof![
        4 => (0..5u64).prop_map(Value::from),
        2 => "[0-4](\\.0)?".prop_map(Value::from),
        1 => (5..7u64).prop_map(Value::from),
    ];
    (nonblank(), prop::array::uniform5(text()), label)
}

/// The CaseHOLD columns as a CSV header line, or some of them.
fn csv_header() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => Just(FIELDS[5..].to_vec()),
        1 => subsequence(FIELDS[5..].to_vec(), 0..=7).prop_shuffle(),
    ]
    .prop_map(|columns| format!("{}\n", columns.join(",")).into_bytes())
    .boxed()
}

/// A CaseHOLD row as a CSV line, quoted where its cells need it.
fn csv_row() -> BoxedStrategy<Vec<u8>> {
    casehold_row()
        .prop_map(|(prompt, holdings, label)| {
            let label = label.as_str().map_or(label.to_string(), str::to_string);
            let mut out = csv::Writer::from_writer(Vec::new());
            let cells = std::iter::once(&prompt).chain(&holdings).chain([&label]);
            out.write_record(cells).unwrap();
            let mut line = out.into_inner().unwrap();
            line.pop(); // the file ends its lines itself
            line
        })
        .boxed()
}

fn no_header() -> BoxedStrategy<Vec<u8>> {
    Just(Vec::new()).boxed()
}

fn train_file() -> BoxedStrategy<Vec<u8>> {
    file(no_header(), json_line(train_row()))
}

/// Files of every kind the readers meet: training, test and raw CaseHOLD JSONL, CaseHOLD CSV,
/// a JSON array of documents, JSONL of arbitrary objects, and bytes.
fn any_file() -> impl Strategy<Value = Vec<u8>> {
    let casehold = casehold_row().prop_map(|(prompt, holdings, label)| {
        let mut row = serde_json::json!({ "citing_prompt": prompt, "label": label });
        for (i, holding) in holdings.into_iter().enumerate() {
            row[format!("holding_{i}")] = holding.into();
        }
        row
    });
    let documents = prop::collection::vec(text(), 0..4);
    prop_oneof![
        train_file(),
        file(no_header(), json_line(test_row())),
        file(no_header(), json_line(casehold)),
        file(csv_header(), csv_row()),
        file(no_header(), json_line(documents)),
        file(no_header(), json_line(object())),
        prop::collection::vec(any::<u8>(), 0..300).boxed(),
    ]
}

fn train_row() -> impl Strategy<Value = TrainRow> {
    let passages = || prop::collection::vec(text(), 0..4);
    (nonblank(), nonblank(), passages(), passages()).prop_map(
        |(query, relevant, mut relevant_passages, hard_negatives)| {
            relevant_passages.push(relevant);
            TrainRow {
                query,
                relevant_passages,
                hard_negatives,
            }
        },
    )
}

fn test_row() -> impl Strategy<Value = TestRow> {
    let documents = prop::collection::vec(text(), 1..5);
    (nonblank(), documents).prop_flat_map(|(query, documents)| {
        let n = documents.len();
        let gold = subsequence((0..n).collect::<Vec<_>>(), 1..=n).prop_shuffle();
        gold.prop_map(move |gold_indices| TestRow {
            query: query.clone(),
            documents: documents.clone(),
            gold_indices,
        })
    })
}

/// A count to ask `prepare` for: a few, or anything up to `usize::MAX`.
fn count() -> impl Strategy<Value = usize> {
    prop_oneof![0..12usize, any::<usize>()]
}

/// A share to ask `prepare` for: a fraction, or any float at all.
fn ratio() -> impl Strategy<Value = f64> {
    prop_oneof![0.0..=1.0f64, any::<f64>()]
}

fn split() -> impl Strategy<Value = Split> {
    prop_oneof![
        (count(), count(), count()).prop_map(|(train, valid, test)| Split::Counts {
            train,
            valid,
            test
        }),
        (ratio(), ratio(), ratio()).prop_map(|(train, valid, test)| Split::Ratios {
            train,
            valid,
            test
        }),
    ]
}

fn casehold_file(dir: &Path, rows: usize) -> std::path::PathBuf {
    let lines: Vec<String> = (0..rows)
        .map(|i| {
            serde_json::json!({"citing_prompt": format!("q{i}"), "holding_0": "a", "holding_1": "b",
                "holding_2": "c", "holding_3": "d", "holding_4": "e", "label": i % 5})
            .to_string()
        })
        .collect();
    let path = dir.join("raw.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

/// A small BEIR collection, NUL-separated as `check_beir_reader` takes it, often valid and
/// often one id, grade or column off.
fn beir_folder() -> BoxedStrategy<Vec<u8>> {
    let id = prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("7".to_string()),
        "[a-z0-9 \t]{0,3}"
    ];
    let doc = (id.clone(), "[a-z ]{0,8}").prop_map(|(id, text)| {
        format!(
            "{}\n",
            serde_json::json!({"_id": id, "title": "", "text": text})
        )
    });
    let query = (id.clone(), "[a-z ]{0,8}")
        .prop_map(|(id, text)| format!("{}\n", serde_json::json!({"_id": id, "text": text})));
    let qrel = (
        id.clone(),
        id,
        prop_oneof![
            Just("1".to_string()),
            Just("0".to_string()),
            "[-0-9.x]{0,2}"
        ],
    )
        .prop_map(|(q, d, g)| format!("{q}\t{d}\t{g}\n"));
    (
        prop::collection::vec(doc, 0..4),
        prop::collection::vec(query, 0..3),
        prop::collection::vec(qrel, 0..4),
    )
        .prop_map(|(docs, queries, qrels)| {
            format!(
                "{}\0{}\0query-id\tcorpus-id\tscore\n{}",
                docs.concat(),
                queries.concat(),
                qrels.concat()
            )
            .into_bytes()
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn jsonl_readers_take_any_bytes(bytes in any_file()) {
        check_jsonl_readers(tempfile::tempdir().unwrap().path(), &bytes);
    }

    #[test]
    fn beir_reader_takes_any_bytes(bytes in prop_oneof![beir_folder(), any_file().boxed()]) {
        check_beir_reader(tempfile::tempdir().unwrap().path(), &bytes);
    }

    #[test]
    fn raw_reader_takes_any_bytes(bytes in any_file()) {
        check_raw_reader(tempfile::tempdir().unwrap().path(), &bytes);
    }

    #[test]
    fn review_takes_any_files(
        train in prop_oneof![train_file(), any_file().boxed()],
        valid in prop::option::of(prop_oneof![train_file(), any_file().boxed()]),
    ) {
        check_validate(tempfile::tempdir().unwrap().path(), &train, valid.as_deref());
    }

    #[test]
    fn written_rows_are_read_back_unchanged(
        train in prop::collection::vec(train_row(), 1..5),
        test in prop::collection::vec(test_row(), 1..5),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        write_jsonl(&path, &train).unwrap();
        prop_assert_eq!(read_train(&path).unwrap(), train);
        write_jsonl(&path, &test).unwrap();
        prop_assert_eq!(read_test(&path).unwrap(), test);
    }

    /// Whatever the counts or ratios, `prepare` applies the split or refuses it; it never panics.
    #[test]
    fn any_split_is_applied_or_refused(rows in 1..12usize, split in split()) {
        let dir = tempfile::tempdir().unwrap();
        let raw = casehold_file(dir.path(), rows);
        let opts = PrepareOptions { split, ..PrepareOptions::default() };
        match prepare(&raw, &Mapping::casehold(), &opts, &dir.path().join("out")) {
            Ok(s) => {
                prop_assert!(s.train >= 1);
                prop_assert_eq!(s.train + s.valid + s.test + s.skipped, rows);
            }
            Err(DataError::Invalid(problem)) => {
                prop_assert_eq!(problem.file, raw.display().to_string());
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}
