//! The file formats: training/validation JSONL (Cohere's reranker-finetune-input), our test JSONL,
//! plain document lists, and the line-level reading and atomic writing they share.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{DataError, Flaw};

/// One training or validation example, as Cohere's rerank fine-tuning expects it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainRow {
    pub query: String,
    pub relevant_passages: Vec<String>,
    #[serde(default)]
    pub hard_negatives: Vec<String>,
}

/// One test query: its candidates in their original order and which of them are relevant.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TestRow {
    pub query: String,
    pub documents: Vec<String>,
    pub gold_indices: Vec<usize>,
}

const TRAIN_SHAPE: &str =
    r#"{"query": "...", "relevant_passages": ["..."], "hard_negatives": ["..."]}"#;
const TEST_SHAPE: &str = r#"{"query": "...", "documents": ["...", "..."], "gold_indices": [0]}"#;

/// Reads a training or validation file. Strict: the first bad line is an error; blank lines are skipped.
pub fn read_train(path: &Path) -> Result<Vec<TrainRow>, DataError> {
    read_jsonl_strict(path, TRAIN_SHAPE, parse_train_line)
}

/// Reads a test file. Strict like [`read_train`]; gold indices must point at documents.
pub fn read_test(path: &Path) -> Result<Vec<TestRow>, DataError> {
    read_jsonl_strict(path, TEST_SHAPE, parse_test_line)
}

/// Documents for rerank. A `.json` file holds a JSON array of strings; any other file holds one
/// document per line, every line kept (empty ones too) except that a final newline does not start
/// another document, and a `\r` before each newline is dropped. The file must be UTF-8 and non-empty.
pub fn read_documents(path: &Path) -> Result<Vec<String>, DataError> {
    let file = display(path);
    let bytes = read_file(path)?;
    let bytes = strip_bom(&bytes);
    if bytes.is_empty() {
        let fix = "put one document per line (or, in a .json file, a JSON array of strings)";
        return Err(invalid(
            Flaw::new("empty", "the file is empty", fix),
            &file,
            None,
        ));
    }
    // Decoding line by line names the line of a bad byte, in either layout.
    let texts = lines(bytes)
        .map(|(n, line)| decode(line).map_err(|f| invalid(f, &file, Some(n))))
        .collect::<Result<Vec<&str>, _>>()?;
    if !path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        return Ok(texts.into_iter().map(str::to_string).collect());
    }
    // Every line decoded, so the conversion is lossless.
    let text = String::from_utf8_lossy(bytes);
    let shape_fix = r#"write a JSON array of strings: ["first document", "second document"]"#;
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        invalid(
            Flaw::new("json", format!("not valid JSON: {e}"), shape_fix),
            &file,
            Some(e.line()),
        )
    })?;
    let Value::Array(items) = value else {
        let flaw = Flaw::new(
            "wrong_type",
            format!("expected a JSON array, found {}", type_name(&value)),
            shape_fix,
        );
        return Err(invalid(flaw, &file, None));
    };
    if items.is_empty() {
        return Err(invalid(
            Flaw::new("empty", "the array holds no documents", shape_fix),
            &file,
            None,
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s),
            other => {
                let msg = format!("document {i} is {}, not a string", type_name(&other));
                Err(invalid(
                    Flaw::new("wrong_type", msg, shape_fix),
                    &file,
                    None,
                ))
            }
        })
        .collect()
}

/// Writes one JSON object per line, atomically: temp file in the same directory, fsync, rename.
pub fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<(), DataError> {
    let bytes = jsonl_bytes(rows).map_err(|e| DataError::io(path, e.into()))?;
    write_atomically(&[(path.to_path_buf(), bytes)])
}

pub(crate) fn jsonl_bytes<T: Serialize>(rows: &[T]) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut out, row)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Writes every file to a temp file beside its target and fsyncs it before renaming any of them,
/// so a failure while writing leaves neither half-written files nor a mix of old and new outputs.
pub(crate) fn write_atomically(files: &[(PathBuf, Vec<u8>)]) -> Result<(), DataError> {
    let mut staged = Vec::with_capacity(files.len());
    for (path, bytes) in files {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // A temp file is private (0600); the finished file gets the usual mode, less the umask.
        let mut tmp = tempfile::Builder::new()
            .prefix(".finerank-")
            .suffix(".tmp")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(dir)
            .map_err(|e| DataError::io(dir, e))?;
        tmp.write_all(bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| DataError::io(path, e))?;
        staged.push((tmp, path));
    }
    for (tmp, path) in staged {
        tmp.persist(path)
            .map_err(|e| DataError::io(path, e.error))?;
    }
    Ok(())
}

fn read_jsonl_strict<T>(
    path: &Path,
    shape: &str,
    parse: fn(&str) -> Result<T, Flaw>,
) -> Result<Vec<T>, DataError> {
    let file = display(path);
    let bytes = read_file(path)?;
    let mut rows = Vec::new();
    for (n, line) in jsonl_lines(&bytes) {
        rows.push(
            line.and_then(parse)
                .map_err(|f| invalid(f, &file, Some(n)))?,
        );
    }
    if rows.is_empty() {
        return Err(invalid(empty_file(shape), &file, None));
    }
    Ok(rows)
}

pub(crate) fn display(path: &Path) -> String {
    path.display().to_string()
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

pub(crate) fn invalid(flaw: Flaw, file: &str, line: Option<usize>) -> DataError {
    DataError::Invalid(flaw.at(file, line))
}

pub(crate) fn empty_file(shape: &str) -> Flaw {
    Flaw::new(
        "empty",
        "the file holds no rows",
        format!("write one JSON object per line, like {shape}"),
    )
}

/// Editors on Windows like to start UTF-8 files with a byte-order mark; it is not data.
pub(crate) fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// Every line with its 1-based number, without the newline (or a `\r` before it).
/// A final newline ends the last line rather than starting an empty one.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    // `split` yields one empty piece even for empty input, but an empty file has no lines.
    let count = if bytes.is_empty() { 0 } else { usize::MAX };
    body.split(|&b| b == b'\n')
        .take(count)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
}

/// The non-blank lines of a JSONL (or TSV, or TREC) file, decoded; a line that is not UTF-8
/// yields its problem so a validator can report it and carry on.
pub(crate) fn jsonl_lines(bytes: &[u8]) -> impl Iterator<Item = (usize, Result<&str, Flaw>)> {
    lines(strip_bom(bytes))
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(n, l)| (n, decode(l)))
}

pub(crate) fn decode(bytes: &[u8]) -> Result<&str, Flaw> {
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        Flaw::new(
            "utf8",
            format!(
                "not valid UTF-8: byte 0x{:02x} at position {}",
                bytes[at],
                at + 1
            ),
            "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in > out`)",
        )
    })
}

/// Parses a line that must hold one JSON object; `shape` shows what the object should look like.
pub(crate) fn parse_object(text: &str, shape: &str) -> Result<Map<String, Value>, Flaw> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let message = if e.is_eof() {
            format!("the JSON ends too early, is the line truncated? ({e})")
        } else {
            format!("not valid JSON: {e}")
        };
        Flaw::new(
            "json",
            message,
            format!("make the line one complete JSON object, like {shape}"),
        )
    })?;
    match value {
        Value::Object(obj) => Ok(obj),
        other => Err(Flaw::new(
            "not_object",
            format!("expected a JSON object, found {}", type_name(&other)),
            format!("make the line one JSON object, like {shape}"),
        )),
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn missing(field: &str, fix: impl Into<String>) -> Flaw {
    Flaw::new("missing_field", format!("missing field `{field}`"), fix)
}

pub(crate) fn wrong_type(field: &str, wanted: &str, found: &Value, fix: impl Into<String>) -> Flaw {
    Flaw::new(
        "wrong_type",
        format!("`{field}` must be {wanted}, found {}", type_name(found)),
        fix,
    )
}

fn query_field(obj: &Map<String, Value>) -> Result<String, Flaw> {
    match obj.get("query") {
        None => Err(missing(
            "query",
            r#"add "query": "..." with the search query"#,
        )),
        Some(Value::String(q)) if q.trim().is_empty() => Err(Flaw::new(
            "empty_query",
            "`query` is empty",
            "write the query text, or delete the row",
        )),
        Some(Value::String(q)) => Ok(q.clone()),
        Some(other) => Err(wrong_type(
            "query",
            "a string",
            other,
            r#"write the query as a string: "query": "...""#,
        )),
    }
}

/// A list-of-strings field; `None` when it is absent or null, which only optional fields allow.
fn string_list(obj: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, Flaw> {
    let list_fix = format!(r#"make `{field}` a list of strings: "{field}": ["...", "..."]"#);
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(Flaw::new(
                    "wrong_type",
                    format!(
                        "element {i} of `{field}` is {}, not a string",
                        type_name(other)
                    ),
                    list_fix.clone(),
                )),
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(other) => {
            let fix = match other {
                Value::String(_) => format!(r#"wrap the passage in a list: "{field}": ["..."]"#),
                _ => list_fix,
            };
            Err(wrong_type(field, "a list of strings", other, fix))
        }
    }
}

pub(crate) fn parse_train_line(text: &str) -> Result<TrainRow, Flaw> {
    let obj = parse_object(text, TRAIN_SHAPE)?;
    let query = query_field(&obj)?;
    let relevant_passages = string_list(&obj, "relevant_passages")?.ok_or_else(|| {
        missing(
            "relevant_passages",
            r#"add "relevant_passages": ["..."] with the passages that answer the query"#,
        )
    })?;
    if relevant_passages.iter().all(|p| p.trim().is_empty()) {
        return Err(Flaw::new(
            "no_relevant",
            "the query has no (non-empty) relevant passage",
            "add at least one passage that answers the query to `relevant_passages`, or delete the row",
        ));
    }
    let hard_negatives = string_list(&obj, "hard_negatives")?.unwrap_or_default();
    Ok(TrainRow {
        query,
        relevant_passages,
        hard_negatives,
    })
}

fn parse_test_line(text: &str) -> Result<TestRow, Flaw> {
    let obj = parse_object(text, TEST_SHAPE)?;
    let query = query_field(&obj)?;
    let documents = string_list(&obj, "documents")?.ok_or_else(|| {
        missing(
            "documents",
            r#"add "documents": ["...", "..."] with the candidates in order"#,
        )
    })?;
    if documents.is_empty() {
        return Err(Flaw::new(
            "no_documents",
            "`documents` is empty",
            "list the query's candidate documents",
        ));
    }
    let gold_fix = format!(
        "list the indices (0-{}) of the relevant documents",
        documents.len() - 1
    );
    let gold = match obj.get("gold_indices") {
        None => {
            return Err(missing(
                "gold_indices",
                format!(r#"add "gold_indices": [...]; {gold_fix}"#),
            ))
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(wrong_type(
                "gold_indices",
                "a list of integers",
                other,
                gold_fix,
            ))
        }
    };
    let mut gold_indices = Vec::with_capacity(gold.len());
    for item in gold {
        let index = item
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| {
                Flaw::new(
                    "bad_gold",
                    format!("gold index {item} is not a non-negative integer"),
                    gold_fix.clone(),
                )
            })?;
        if index >= documents.len() {
            let msg = format!(
                "gold index {index} is out of range: the row has {} documents",
                documents.len()
            );
            return Err(Flaw::new("bad_gold", msg, gold_fix));
        }
        if gold_indices.contains(&index) {
            return Err(Flaw::new(
                "bad_gold",
                format!("gold index {index} is listed twice"),
                gold_fix,
            ));
        }
        gold_indices.push(index);
    }
    if gold_indices.is_empty() {
        return Err(Flaw::new(
            "bad_gold",
            "`gold_indices` is empty: the row has no relevant document",
            gold_fix,
        ));
    }
    Ok(TestRow {
        query,
        documents,
        gold_indices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
        lines(bytes).map(|(n, l)| (n, l.to_vec())).collect()
    }

    #[test]
    fn lines_keep_inner_empty_lines_but_not_a_final_newline() {
        assert!(collect(b"").is_empty());
        assert_eq!(collect(b"\n"), vec![(1, vec![])]);
        assert_eq!(
            collect(b"a\r\n\nb\n"),
            vec![(1, b"a".to_vec()), (2, vec![]), (3, b"b".to_vec())]
        );
        assert_eq!(
            collect(b"a\nb"),
            vec![(1, b"a".to_vec()), (2, b"b".to_vec())]
        );
    }

    #[test]
    fn problem_display_names_file_line_and_fix() {
        let p = Flaw::new("x", "bad thing", "do this").at("train.jsonl", Some(12));
        assert_eq!(p.to_string(), "train.jsonl:12: bad thing (fix: do this)");
        let p = Flaw::new("x", "bad thing", "do this").at("train.jsonl", None);
        assert_eq!(p.to_string(), "train.jsonl: bad thing (fix: do this)");
    }
}
