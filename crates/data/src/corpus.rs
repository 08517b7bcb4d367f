//! Document collections in BEIR's layout: `corpus.jsonl`, `queries.jsonl` and `qrels/<split>.tsv`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{DataError, Flaw};
use crate::format::{
    display, empty_file, invalid, jsonl_bytes, jsonl_lines, missing, parse_object, read_file,
    write_atomically, wrong_type,
};
use crate::qrels::{read_qrels, Judgements, QRELS_SHAPE};

/// One document of a collection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    pub id: String,
    #[serde(default)]
    pub title: String,
    pub text: String,
}

impl Doc {
    /// What a model reads: "title text" (one space) when there is a title, else the text, as
    /// BEIR's and sentence-transformers' evaluators join them.
    pub fn full_text(&self) -> String {
        match (self.title.is_empty(), self.text.is_empty()) {
            (true, _) => self.text.clone(),
            (false, true) => self.title.clone(),
            (false, false) => format!("{} {}", self.title, self.text),
        }
    }
}

/// A document collection: documents in file order, looked up by id.
#[derive(Clone, Debug)]
pub struct Corpus {
    pub docs: Vec<Doc>,
    pub(crate) index: HashMap<String, usize>,
}

impl Corpus {
    /// Fails on a duplicate id, naming it and both positions; the readers report file and line instead.
    pub fn new(docs: Vec<Doc>) -> Result<Corpus, DataError> {
        let index = index_ids(docs.iter().map(|d| d.id.as_str())).map_err(|(first, second)| {
            let flaw = Flaw::new(
                "duplicate_id",
                format!(
                    "documents {first} and {second} (counting from 0) share the id `{}`",
                    docs[second].id
                ),
                "give every document its own id",
            );
            invalid(flaw, "corpus", None)
        })?;
        Ok(Corpus { docs, index })
    }

    pub fn get(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// sha256 hex over every id, title and text (length-prefixed, so field boundaries count):
    /// keys caches of indexes and embeddings.
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        for doc in &self.docs {
            for field in [&doc.id, &doc.title, &doc.text] {
                hash.update((field.len() as u64).to_le_bytes());
                hash.update(field.as_bytes());
            }
        }
        hex::encode(hash.finalize())
    }
}

/// Each id's position; on a repeat, the positions of its first and second occurrence.
/// Linear, so a million-document corpus is checked as fast as it is read.
fn index_ids<'a>(
    ids: impl Iterator<Item = &'a str>,
) -> Result<HashMap<String, usize>, (usize, usize)> {
    let mut index = HashMap::new();
    for (i, id) in ids.enumerate() {
        if let Some(&first) = index.get(id) {
            return Err((first, i));
        }
        index.insert(id.to_string(), i);
    }
    Ok(index)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Query {
    pub id: String,
    pub text: String,
}

/// A BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.
#[derive(Clone, Debug)]
pub struct Beir {
    pub corpus: Corpus,
    pub judgements: Judgements,
}

const CORPUS_SHAPE: &str = r#"{"_id": "d1", "title": "...", "text": "..."}"#;
const QUERIES_SHAPE: &str = r#"{"_id": "q1", "text": "..."}"#;

/// Reads `corpus.jsonl`: `{"_id", "title"?, "text", ...}`, other fields ignored.
pub fn read_corpus(path: &Path) -> Result<Corpus, DataError> {
    let (docs, index) = read_records(path, "document", CORPUS_SHAPE, |obj| {
        let id = id_field(obj, CORPUS_SHAPE)?;
        let title = optional_text(obj, "title")?;
        let text = optional_text(obj, "text")?;
        if title.trim().is_empty() && text.trim().is_empty() {
            return Err(Flaw::new(
                "empty_document",
                format!(
                    "document `{id}` has no text: `text` and `title` are both empty or missing"
                ),
                r#"write the document's words in "text": "...", or delete the line"#,
            ));
        }
        Ok(Doc { id, title, text })
    })?;
    Ok(Corpus { docs, index })
}

/// Reads `queries.jsonl`: `{"_id", "text", ...}`, other fields ignored.
pub fn read_queries(path: &Path) -> Result<Vec<Query>, DataError> {
    let (queries, _) = read_records(path, "query", QUERIES_SHAPE, |obj| {
        let id = id_field(obj, QUERIES_SHAPE)?;
        let text = optional_text(obj, "text")?;
        if text.trim().is_empty() {
            return Err(Flaw::new(
                "empty_query",
                format!("query `{id}` has no text"),
                r#"write the query in "text": "...", or delete the line"#,
            ));
        }
        Ok(Query { id, text })
    })?;
    Ok(queries)
}

/// Records with an `_id` each, in file order, and the position of each id; `what` names a record in messages.
fn read_records<T: HasId>(
    path: &Path,
    what: &str,
    shape: &str,
    parse: impl Fn(&Map<String, Value>) -> Result<T, Flaw>,
) -> Result<(Vec<T>, HashMap<String, usize>), DataError> {
    let file = display(path);
    let bytes = read_file(path)?;
    let mut records = Vec::new();
    let mut line_of = Vec::new();
    for (n, line) in jsonl_lines(&bytes) {
        let record = line
            .and_then(|text| parse_object(text, shape))
            .and_then(|obj| parse(&obj))
            .map_err(|f| invalid(f, &file, Some(n)))?;
        records.push(record);
        line_of.push(n);
    }
    if records.is_empty() {
        return Err(invalid(empty_file(shape), &file, None));
    }
    let index = index_ids(records.iter().map(HasId::id)).map_err(|(first, second)| {
        let flaw = Flaw::new(
            "duplicate_id",
            format!(
                "duplicate `_id` `{}`: line {} already has it",
                records[second].id(),
                line_of[first]
            ),
            format!("give each {what} its own `_id`, or delete one of the two lines"),
        );
        invalid(flaw, &file, Some(line_of[second]))
    })?;
    Ok((records, index))
}

trait HasId {
    fn id(&self) -> &str;
}

impl HasId for Doc {
    fn id(&self) -> &str {
        &self.id
    }
}

impl HasId for Query {
    fn id(&self) -> &str {
        &self.id
    }
}

/// BEIR writes `_id` as a string in most collections and as an integer in a few; both become a string.
fn id_field(obj: &Map<String, Value>, shape: &str) -> Result<String, Flaw> {
    let fix = || format!(r#"give the line an id, like {shape}"#);
    let id = match obj.get("_id") {
        None => return Err(missing("_id", fix())),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(other) => return Err(wrong_type("_id", "a string or an integer", other, fix())),
    };
    if id.trim().is_empty() {
        return Err(Flaw::new("empty_id", "`_id` is empty", fix()));
    }
    Ok(id)
}

/// A text field that may be absent or null (then empty).
fn optional_text(obj: &Map<String, Value>, field: &str) -> Result<String, Flaw> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(wrong_type(
            field,
            "a string",
            other,
            format!(r#"write `{field}` as text: "{field}": "...""#),
        )),
    }
}

/// Reads a BEIR folder's corpus and one split's judgements (queries without judgements are left out).
pub fn read_beir(dir: &Path, split: &str) -> Result<Beir, DataError> {
    let corpus_path = dir.join("corpus.jsonl");
    let queries_path = dir.join("queries.jsonl");
    let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
    // Say what is missing before spending minutes reading a large corpus.
    for (path, holds) in [
        (
            &corpus_path,
            format!("the documents, one JSON object per line like {CORPUS_SHAPE}"),
        ),
        (
            &queries_path,
            format!("the queries, one JSON object per line like {QUERIES_SHAPE}"),
        ),
    ] {
        if !path.is_file() {
            return Err(not_found(
                path,
                format!("BEIR keeps {holds}"),
                "put the file there, or point at the BEIR folder that has it".into(),
            ));
        }
    }
    if !qrels_path.is_file() {
        let splits = splits(&dir.join("qrels"));
        let (found, fix) = if splits.is_empty() {
            (
                "there is no qrels/<split>.tsv at all".to_string(),
                format!("write qrels/{split}.tsv with one line per judged pair: {QRELS_SHAPE}"),
            )
        } else {
            (
                format!("the splits there are: {}", splits.join(", ")),
                format!("ask for one of those splits, or write qrels/{split}.tsv"),
            )
        };
        return Err(not_found(
            &qrels_path,
            format!("BEIR keeps split `{split}`'s relevance judgements there; {found}"),
            fix,
        ));
    }
    let corpus = read_corpus(&corpus_path)?;
    let queries = read_queries(&queries_path)?;
    let judgements = read_qrels(&qrels_path, &corpus, &queries)?;
    Ok(Beir { corpus, judgements })
}

fn not_found(path: &Path, holds: String, fix: String) -> DataError {
    let flaw = Flaw::new("missing_file", format!("no such file: {holds}"), fix);
    invalid(flaw, &display(path), None)
}

/// The splits a qrels folder has, sorted; none when it does not exist.
fn splits(qrels: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(qrels)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.strip_suffix(".tsv").map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// A line of corpus.jsonl or queries.jsonl (queries have no title).
#[derive(Serialize)]
struct Record<'a> {
    #[serde(rename = "_id")]
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    text: &'a str,
}

/// Writes a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv for each split), atomically
/// per file. `queries` must hold every judged query for the folder to read back.
pub fn write_beir(
    dir: &Path,
    corpus: &Corpus,
    queries: &[Query],
    splits: &[(&str, &Judgements)],
) -> Result<(), DataError> {
    let qrels_dir = dir.join("qrels");
    std::fs::create_dir_all(&qrels_dir).map_err(|e| DataError::io(&qrels_dir, e))?;
    let jsonl = |name: &str, rows: Vec<Record>| -> Result<(PathBuf, Vec<u8>), DataError> {
        let path = dir.join(name);
        let bytes = jsonl_bytes(&rows).map_err(|e| DataError::io(&path, e.into()))?;
        Ok((path, bytes))
    };
    let docs = corpus.docs.iter().map(|d| Record {
        id: &d.id,
        title: Some(&d.title),
        text: &d.text,
    });
    let query_rows = queries.iter().map(|q| Record {
        id: &q.id,
        title: None,
        text: &q.text,
    });
    let mut files = vec![
        jsonl("corpus.jsonl", docs.collect())?,
        jsonl("queries.jsonl", query_rows.collect())?,
    ];
    for (split, judgements) in splits {
        let path = qrels_dir.join(format!("{split}.tsv"));
        let mut tsv = String::from("query-id\tcorpus-id\tscore\n");
        for (query, grades) in judgements.queries.iter().zip(&judgements.grades) {
            for &(doc, grade) in grades {
                let doc = &corpus.docs[doc].id;
                // A tab or newline inside an id would shift the columns when the file is read back.
                if let Some(id) = [&query.id, doc]
                    .into_iter()
                    .find(|id| id.contains(['\t', '\n', '\r']))
                {
                    let flaw = Flaw::new(
                        "bad_id",
                        format!("id {id:?} holds a tab or line break, which the TSV cannot hold"),
                        "remove tabs and line breaks from document and query ids",
                    );
                    return Err(invalid(flaw, &display(&path), None));
                }
                tsv.push_str(&format!("{}\t{doc}\t{grade}\n", query.id));
            }
        }
        files.push((path, tsv.into_bytes()));
    }
    write_atomically(&files)
}
