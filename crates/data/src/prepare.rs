//! Turning raw data (CaseHOLD, or any table described by a [`Mapping`]) into train/validation/test files.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::error::{DataError, Flaw};
use crate::format::{
    decode, display, empty_file, invalid, jsonl_bytes, jsonl_lines, parse_object, read_file,
    strip_bom, type_name, write_atomically, TestRow, TrainRow,
};

/// How raw rows map to queries and candidates.
#[derive(Clone, Debug)]
pub enum Mapping {
    /// A query column, candidate columns in order, and a label column holding the index of the
    /// relevant candidate (CaseHOLD: `citing_prompt`, `holding_0`..`holding_4`, `label`).
    Candidates {
        query: String,
        candidates: Vec<String>,
        label: String,
    },
    /// A query column, one column holding a JSON list of candidates (in CSV: a JSON-encoded
    /// string), and a label column with the index of the relevant one.
    CandidateList {
        query: String,
        candidates: String,
        label: String,
    },
    /// A query column, positive column(s) and negative column(s); each cell is a string or a JSON
    /// list of strings. In JSONL a row may lack a negative column (no negatives); in CSV an empty
    /// cell means none.
    PosNeg {
        query: String,
        positives: Vec<String>,
        negatives: Vec<String>,
    },
}

impl Mapping {
    /// CaseHOLD's own columns, as the Hugging Face `casehold/casehold` dataset has them.
    pub fn casehold() -> Self {
        Mapping::Candidates {
            query: "citing_prompt".into(),
            candidates: (0..5).map(|i| format!("holding_{i}")).collect(),
            label: "label".into(),
        }
    }

    fn columns(&self) -> Vec<(&str, Role)> {
        fn tag(names: &[String], role: Role) -> impl Iterator<Item = (&str, Role)> {
            names.iter().map(move |c| (c.as_str(), role))
        }
        let one = std::slice::from_ref;
        match self {
            Mapping::Candidates {
                query,
                candidates,
                label,
            } => tag(one(query), Role::Query)
                .chain(tag(candidates, Role::Candidate))
                .chain(tag(one(label), Role::Label))
                .collect(),
            Mapping::CandidateList {
                query,
                candidates,
                label,
            } => tag(one(query), Role::Query)
                .chain(tag(one(candidates), Role::CandidateList))
                .chain(tag(one(label), Role::Label))
                .collect(),
            Mapping::PosNeg {
                query,
                positives,
                negatives,
            } => tag(one(query), Role::Query)
                .chain(tag(positives, Role::Positive))
                .chain(tag(negatives, Role::Negative))
                .collect(),
        }
    }

    /// What one raw JSONL row should look like, for fixes.
    fn shape(&self) -> String {
        let mut row = Map::new();
        for (col, role) in self.columns() {
            let example = match role {
                Role::Label => json!(0),
                Role::CandidateList | Role::Positive | Role::Negative => json!(["..."]),
                Role::Query | Role::Candidate => json!("..."),
            };
            row.insert(col.to_string(), example);
        }
        Value::Object(row).to_string()
    }

    fn label_range(&self) -> String {
        match self {
            Mapping::Candidates { candidates, .. } => {
                format!("0-{}", candidates.len().saturating_sub(1))
            }
            _ => "0-based".into(),
        }
    }
}

/// The part a column plays, which decides how its cells are read and which option renames it.
#[derive(Clone, Copy, Debug)]
enum Role {
    Query,
    Candidate,
    CandidateList,
    Label,
    Positive,
    Negative,
}

impl Role {
    fn rename_hint(self) -> &'static str {
        match self {
            Role::Query => "use --query-col to name the query column",
            Role::Candidate => "use --candidate-cols to list the candidate columns in order",
            Role::CandidateList => {
                "use --candidates-col to name the column holding the candidate list"
            }
            Role::Label => "use --label-col to name the label column",
            Role::Positive => "use --positive-cols to name the relevant-passage column(s)",
            Role::Negative => "use --negative-cols to name the hard-negative column(s)",
        }
    }
}

/// One raw example, normalised: candidates in original order and the indices of the relevant ones.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub query: String,
    pub candidates: Vec<String>,
    pub gold: Vec<usize>,
    /// 1-based line of the row in the raw file.
    pub line: usize,
}

/// Reads raw rows (JSONL for `.jsonl`/`.json`, CSV with a header row for `.csv`) into examples.
/// Strict: the first bad row is an error naming file, line and fix.
pub fn read_raw(path: &Path, mapping: &Mapping) -> Result<Vec<Example>, DataError> {
    read_raw_limited(path, mapping, None)
}

fn read_raw_limited(
    path: &Path,
    mapping: &Mapping,
    limit: Option<usize>,
) -> Result<Vec<Example>, DataError> {
    let file = display(path);
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let csv = match ext.as_str() {
        "jsonl" | "json" => false,
        "csv" => true,
        _ => {
            let flaw = Flaw::new(
                "format",
                "cannot tell the format from the file extension",
                "name the file .jsonl (one JSON object per line) or .csv (with a header row)",
            );
            return Err(invalid(flaw, &file, None));
        }
    };
    let bytes = read_file(path)?;
    let examples = if csv {
        read_csv(&bytes, &file, mapping, limit)?
    } else {
        read_jsonl(&bytes, &file, mapping, limit)?
    };
    if examples.is_empty() && limit != Some(0) {
        let fix = if csv {
            "add a header row and one row per example".to_string()
        } else {
            empty_file(&mapping.shape()).fix
        };
        return Err(invalid(
            Flaw::new("empty", "the file holds no rows", fix),
            &file,
            None,
        ));
    }
    Ok(examples)
}

fn read_jsonl(
    bytes: &[u8],
    file: &str,
    mapping: &Mapping,
    limit: Option<usize>,
) -> Result<Vec<Example>, DataError> {
    let shape = mapping.shape();
    jsonl_lines(bytes)
        .take(limit.unwrap_or(usize::MAX))
        .map(|(n, line)| {
            line.and_then(|text| parse_object(text, &shape))
                .and_then(|row| example_from_row(&row, mapping, false, n))
                .map_err(|f| invalid(f, file, Some(n)))
        })
        .collect()
}

fn read_csv(
    bytes: &[u8],
    file: &str,
    mapping: &Mapping,
    limit: Option<usize>,
) -> Result<Vec<Example>, DataError> {
    let mut reader = csv::ReaderBuilder::new().from_reader(strip_bom(bytes));
    let names = reader
        .byte_headers()
        .map_err(|e| csv_error(e, file))?
        .iter()
        .map(|name| decode(name).map(str::to_string))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|f| invalid(f, file, Some(1)))?;
    // A misnamed column is a header problem: say so once, at line 1, not on every row.
    for (col, role) in mapping.columns() {
        if !names.iter().any(|n| n == col) {
            let found = names.iter().map(String::as_str).collect();
            return Err(invalid(
                missing_column(found, col, role, mapping),
                file,
                Some(1),
            ));
        }
    }
    let mut examples = Vec::new();
    let mut record = csv::ByteRecord::new();
    while examples.len() < limit.unwrap_or(usize::MAX)
        && reader
            .read_byte_record(&mut record)
            .map_err(|e| csv_error(e, file))?
    {
        let line = record.position().map_or(0, |p| p.line() as usize);
        let mut row = Map::new();
        for (name, cell) in names.iter().zip(record.iter()) {
            let text = decode(cell).map_err(|mut f| {
                f.message = format!("in the `{name}` field: {}", f.message);
                invalid(f, file, Some(line))
            })?;
            row.insert(name.clone(), Value::String(text.to_string()));
        }
        let example = example_from_row(&row, mapping, true, line);
        examples.push(example.map_err(|f| invalid(f, file, Some(line)))?);
    }
    Ok(examples)
}

fn csv_error(e: csv::Error, file: &str) -> DataError {
    let line = e.position().map(|p| p.line() as usize);
    let flaw = Flaw::new(
        "csv",
        format!("not valid CSV: {e}"),
        "give every row as many fields as the header, and quote fields that hold commas, quotes or newlines",
    );
    invalid(flaw, file, line)
}

fn missing_column(found: Vec<&str>, col: &str, role: Role, mapping: &Mapping) -> Flaw {
    let have = found
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let fix = match role {
        Role::Label => format!(
            "add a `{col}` column with the index ({}) of the relevant candidate, or {}",
            mapping.label_range(),
            role.rename_hint()
        ),
        _ => role.rename_hint().to_string(),
    };
    Flaw::new(
        "missing_column",
        format!("no `{col}` column (found {have})"),
        fix,
    )
}

fn example_from_row(
    row: &Map<String, Value>,
    mapping: &Mapping,
    csv: bool,
    line: usize,
) -> Result<Example, Flaw> {
    let cell = |col: &str, role| {
        row.get(col).ok_or_else(|| {
            missing_column(row.keys().map(String::as_str).collect(), col, role, mapping)
        })
    };
    let text = |col: &str, role| match cell(col, role)? {
        Value::String(s) => Ok(s.clone()),
        other => Err(Flaw::new(
            "wrong_type",
            format!("`{col}` must be a string, found {}", type_name(other)),
            format!(r#"write `{col}` as text: "{col}": "...""#),
        )),
    };
    let query_col = match mapping {
        Mapping::Candidates { query, .. }
        | Mapping::CandidateList { query, .. }
        | Mapping::PosNeg { query, .. } => query,
    };
    let query = text(query_col, Role::Query)?;
    if query.trim().is_empty() {
        return Err(Flaw::new(
            "empty_query",
            format!("the query (`{query_col}`) is empty"),
            "fill in the query, or delete the row",
        ));
    }
    let (candidates, gold) = match mapping {
        Mapping::Candidates {
            candidates, label, ..
        } => {
            let candidates = candidates
                .iter()
                .map(|c| text(c, Role::Candidate))
                .collect::<Result<Vec<_>, _>>()?;
            let gold = label_index(cell(label, Role::Label)?, label, candidates.len(), mapping)?;
            (candidates, vec![gold])
        }
        Mapping::CandidateList {
            candidates, label, ..
        } => {
            let list = string_list(cell(candidates, Role::CandidateList)?, candidates, true)?;
            if list.is_empty() {
                let msg = format!("`{candidates}` holds no candidates");
                return Err(Flaw::new(
                    "no_candidates",
                    msg,
                    "list the query's candidates, or delete the row",
                ));
            }
            let gold = label_index(cell(label, Role::Label)?, label, list.len(), mapping)?;
            (list, vec![gold])
        }
        Mapping::PosNeg {
            positives,
            negatives,
            ..
        } => {
            let mut candidates = Vec::new();
            for col in positives {
                candidates.extend(string_list(cell(col, Role::Positive)?, col, csv)?);
            }
            if candidates.iter().all(|p| p.trim().is_empty()) {
                let cols = positives.join("`, `");
                let msg = format!("no relevant passage in `{cols}`");
                return Err(Flaw::new(
                    "no_relevant",
                    msg,
                    "give the query at least one relevant passage, or delete the row",
                ));
            }
            let gold = (0..candidates.len()).collect();
            for col in negatives {
                // JSON rows often leave out an empty optional field, as Cohere's format does with hard_negatives.
                if let Some(value) = row.get(col) {
                    candidates.extend(string_list(value, col, csv)?);
                }
            }
            (candidates, gold)
        }
    };
    Ok(Example {
        query,
        candidates,
        gold,
        line,
    })
}

/// A cell that holds several passages: a list of strings, or a string. In CSV (`decode_strings`) a
/// string holding a JSON list is that list, and an empty cell is no passage at all; otherwise a
/// string is one passage. A candidate-list cell always passes `decode_strings`, since it must be a list.
fn string_list(value: &Value, col: &str, decode_strings: bool) -> Result<Vec<String>, Flaw> {
    let fix = || format!(r#"make `{col}` a list of strings, like ["first", "second"]"#);
    let strings = |items: &[Value]| {
        items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                Flaw::new(
                    "wrong_type",
                    format!("`{col}` holds something other than strings"),
                    fix(),
                )
            })
    };
    match value {
        Value::Array(items) => strings(items),
        Value::Null => Ok(Vec::new()),
        Value::String(s) if decode_strings && s.trim().is_empty() => Ok(Vec::new()),
        Value::String(s) if decode_strings && s.trim_start().starts_with('[') => {
            match serde_json::from_str::<Value>(s) {
                Ok(Value::Array(items)) => strings(&items),
                // Text that merely starts with a bracket is one passage.
                _ => Ok(vec![s.clone()]),
            }
        }
        Value::String(s) => Ok(vec![s.clone()]),
        other => Err(Flaw::new(
            "wrong_type",
            format!(
                "`{col}` must be a list of strings, found {}",
                type_name(other)
            ),
            fix(),
        )),
    }
}

fn label_index(
    value: &Value,
    col: &str,
    candidates: usize,
    mapping: &Mapping,
) -> Result<usize, Flaw> {
    let range = mapping.label_range();
    let fix = format!("set `{col}` to the index ({range}) of the relevant candidate");
    // Spreadsheet and pandas exports often write integers as "3.0"; accept any integral number.
    let number = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    let index = number
        .filter(|x| x.fract() == 0.0 && *x >= 0.0)
        .ok_or_else(|| {
            Flaw::new(
                "bad_label",
                format!("label `{col}` = {value} is not an index"),
                fix.clone(),
            )
        })?;
    if index >= candidates as f64 {
        let msg =
            format!("label `{col}` = {index} is out of range: the row has {candidates} candidates");
        return Err(Flaw::new("bad_label", msg, fix));
    }
    Ok(index as usize)
}

/// How many examples go to train, validation and test, in that order (the rest are left out).
#[derive(Clone, Debug)]
pub enum Split {
    Counts {
        train: usize,
        valid: usize,
        test: usize,
    },
    /// Fractions of the examples; they may add up to less than 1 to leave some out.
    Ratios { train: f64, valid: f64, test: f64 },
}

#[derive(Clone, Debug)]
pub struct PrepareOptions {
    pub split: Split,
    /// `None` keeps file order (the tutorial takes the first rows); `Some(seed)` shuffles
    /// deterministically (ChaCha8) before splitting.
    pub shuffle_seed: Option<u64>,
    /// Read only the first this-many rows of the input (before any shuffle).
    pub limit: Option<usize>,
}

impl Default for PrepareOptions {
    /// The first 420 rows become 256 train, 154 validation and 10 test examples, as in Cohere's
    /// CaseHOLD tutorial; 256 is Cohere's minimum number of training queries.
    fn default() -> Self {
        PrepareOptions {
            split: Split::Counts {
                train: 256,
                valid: 154,
                test: 10,
            },
            shuffle_seed: None,
            limit: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PrepareSummary {
    pub train: usize,
    pub valid: usize,
    pub test: usize,
    /// Examples read but placed in no split.
    pub skipped: usize,
    /// The files written; a split with no examples gets no file.
    pub files: Vec<String>,
}

/// Reads raw data, splits it and writes `out_dir/train.jsonl`, `valid.jsonl` and `test.jsonl`
/// (train/valid as [`TrainRow`], test as [`TestRow`]), all atomically: on error nothing is written.
pub fn prepare(
    input: &Path,
    mapping: &Mapping,
    opts: &PrepareOptions,
    out_dir: &Path,
) -> Result<PrepareSummary, DataError> {
    let mut examples = read_raw_limited(input, mapping, opts.limit)?;
    if let Some(seed) = opts.shuffle_seed {
        examples.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    }
    let (train, valid, test) = split_sizes(&opts.split, examples.len(), &display(input))?;
    let (train_ex, rest) = examples.split_at(train);
    let (valid_ex, rest) = rest.split_at(valid);
    let test_ex = &rest[..test];

    std::fs::create_dir_all(out_dir).map_err(|e| DataError::io(out_dir, e))?;
    let train_rows: Vec<TrainRow> = train_ex.iter().map(example_to_train).collect();
    let mut files = vec![staged(out_dir, "train.jsonl", &train_rows)?];
    if valid > 0 {
        let valid_rows: Vec<TrainRow> = valid_ex.iter().map(example_to_train).collect();
        files.push(staged(out_dir, "valid.jsonl", &valid_rows)?);
    }
    if test > 0 {
        files.push(staged(out_dir, "test.jsonl", &examples_to_test(test_ex))?);
    }
    write_atomically(&files)?;
    Ok(PrepareSummary {
        train,
        valid,
        test,
        skipped: examples.len() - train - valid - test,
        files: files.iter().map(|(p, _)| display(p)).collect(),
    })
}

/// An output file's path and contents, ready for [`write_atomically`].
fn staged<T: Serialize>(
    out_dir: &Path,
    name: &str,
    rows: &[T],
) -> Result<(PathBuf, Vec<u8>), DataError> {
    let path = out_dir.join(name);
    let bytes = jsonl_bytes(rows).map_err(|e| DataError::io(&path, e.into()))?;
    Ok((path, bytes))
}

fn split_sizes(split: &Split, n: usize, file: &str) -> Result<(usize, usize, usize), DataError> {
    let problem =
        |message: String, fix: String| invalid(Flaw::new("split", message, fix), file, None);
    let (train, valid, test) = match *split {
        Split::Counts { train, valid, test } => {
            // Each count comes from the command line and may be up to usize::MAX; their sum may
            // not fit a usize, so it is taken in u128.
            let asked = train as u128 + valid as u128 + test as u128;
            if asked > n as u128 {
                let scale = |k: usize| k as u128 * n as u128 / asked;
                return Err(problem(
                    format!("the split asks for {train} train + {valid} validation + {test} test = {asked} examples, but only {n} are available"),
                    format!(
                        "ask for at most {n} in total (e.g. train {}, valid {}, test {}), or split by ratios",
                        scale(train),
                        scale(valid),
                        scale(test)
                    ),
                ));
            }
            (train, valid, test)
        }
        Split::Ratios { train, valid, test } => {
            let sum = train + valid + test;
            if ![train, valid, test]
                .iter()
                .all(|r| r.is_finite() && *r >= 0.0)
                || sum > 1.0 + 1e-9
            {
                return Err(problem(
                    format!("split ratios {train}/{valid}/{test} are not fractions adding up to at most 1"),
                    "give non-negative ratios with a sum of 1 or less, e.g. 0.8/0.1/0.1".into(),
                ));
            }
            // Rounding the cumulative boundaries keeps the parts disjoint and, when the ratios add up to 1, uses every example.
            let bound = |r: f64| ((r * n as f64).round() as usize).min(n);
            let (b1, b2, b3) = (bound(train), bound(train + valid), bound(sum));
            (b1, b2 - b1, b3 - b2)
        }
    };
    if train == 0 {
        return Err(problem(
            format!("the split leaves no training examples ({n} are available)"),
            "ask for at least one training example (Cohere requires 256 training queries)".into(),
        ));
    }
    Ok((train, valid, test))
}

/// Test rows straight from raw examples (e.g. for evaluating on CaseHOLD's test split).
pub fn examples_to_test(examples: &[Example]) -> Vec<TestRow> {
    examples
        .iter()
        .map(|e| TestRow {
            query: e.query.clone(),
            documents: e.candidates.clone(),
            gold_indices: e.gold.clone(),
        })
        .collect()
}

/// Relevant passages are the gold candidates; hard negatives are the others, except any that repeat
/// a relevant passage's text, which would ask the model to rank a passage both above and below itself.
pub fn example_to_train(e: &Example) -> TrainRow {
    let relevant_passages: Vec<String> = e.gold.iter().map(|&i| e.candidates[i].clone()).collect();
    let hard_negatives = e
        .candidates
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            !e.gold.contains(i) && !relevant_passages.iter().any(|r| r.trim() == c.trim())
        })
        .map(|(_, c)| c.clone())
        .collect();
    TrainRow {
        query: e.query.clone(),
        relevant_passages,
        hard_negatives,
    }
}
