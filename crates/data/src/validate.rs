//! The "review data" step: checks training and validation files against Cohere's rules, collects
//! every problem (not just the first), fixes what is safe to fix, and reports length statistics.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::error::{Flaw, Problem};
use crate::format::{display, jsonl_lines, parse_train_line, read_file, TrainRow};

/// Repeats of one kind of problem in one file beyond this are summarised in a single line.
const MAX_PER_KIND: usize = 20;
/// Upper bounds of the length histogram below the model window, which is always a bound itself.
const BOUNDS: [usize; 11] = [32, 64, 128, 256, 384, 512, 768, 1024, 2048, 4096, 8192];
/// Cohere warns when more than this share of (query, passage) pairs will be truncated.
const TRUNCATION_WARN_SHARE: f64 = 0.10;

#[derive(Clone, Debug)]
pub struct ValidateOptions {
    /// Unique training queries required (Cohere: 256).
    pub min_train_queries: usize,
    /// Unique validation queries required when a validation file is given (Cohere: 64).
    pub min_valid_queries: usize,
    /// The model's input window in tokens; longer pairs get truncated.
    pub max_len: usize,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            min_train_queries: 256,
            min_valid_queries: 64,
            max_len: 512,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FileStats {
    pub file: String,
    /// Rows without errors (after fixes); the statistics below cover these.
    pub rows: usize,
    pub unique_queries: usize,
    pub avg_relevant: f64,
    pub avg_hard_negatives: f64,
    /// Token lengths of (query, passage) pairs: buckets up to `max_len`, then, only if some pairs
    /// are longer, one bucket whose bound is the longest pair.
    pub length_histogram: Vec<Bucket>,
    pub pairs: usize,
    /// Pairs longer than `max_len`.
    pub truncated_pairs: usize,
    pub max_pair_tokens: usize,
    pub p50_pair_tokens: usize,
    pub p95_pair_tokens: usize,
    /// The first three rows.
    pub samples: Vec<TrainRow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Bucket {
    pub up_to: usize,
    pub count: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Review {
    pub ok: bool,
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
    /// `None` when the file could not be read at all.
    pub train: Option<FileStats>,
    pub valid: Option<FileStats>,
    /// Rows after fixes, ready for training.
    #[serde(skip)]
    pub train_rows: Vec<TrainRow>,
    #[serde(skip)]
    pub valid_rows: Vec<TrainRow>,
}

/// Reviews a training file and an optional validation file. `pair_tokens(query, passage)` returns
/// the token count of the pair as the model will see it (the caller passes its tokenizer's count).
pub fn validate(
    train: &Path,
    valid: Option<&Path>,
    opts: &ValidateOptions,
    pair_tokens: &(dyn Fn(&str, &str) -> usize + Sync),
) -> Review {
    let mut review = Review::default();
    let mut errors = Capped::default();
    let mut warnings = Capped::default();
    let mut check = |path: &Path, role: &str, min_queries: usize| {
        let mut checker = FileCheck {
            file: display(path),
            errors: &mut errors,
            warnings: &mut warnings,
        };
        checker.run(path, role, min_queries, opts, pair_tokens)
    };
    (review.train, review.train_rows) = check(train, "training", opts.min_train_queries);
    if let Some(valid) = valid {
        (review.valid, review.valid_rows) = check(valid, "validation", opts.min_valid_queries);
    }
    review.errors = errors.finish();
    review.warnings = warnings.finish();
    review.ok = review.errors.is_empty();
    review
}

/// The review's error for a file with fewer usable unique queries than required, or `None`.
/// `role` is "training" or "validation". For query sets that are not rows of a file, such as a
/// BEIR collection's judged queries, so that they are held to the same rule in the same words.
pub fn too_few_queries(
    file: &str,
    role: &str,
    unique_queries: usize,
    min_queries: usize,
) -> Option<Problem> {
    (unique_queries < min_queries)
        .then(|| too_few(role, unique_queries, min_queries).at(file, None))
}

fn too_few(role: &str, unique_queries: usize, min_queries: usize) -> Flaw {
    Flaw::new(
        "too_few_queries",
        format!(
            "the {role} file has {unique_queries} usable unique queries; at least {min_queries} are required"
        ),
        format!(
            "add at least {} more queries (Cohere requires {min_queries} {role} queries)",
            min_queries - unique_queries
        ),
    )
}

/// Problems in order, with repeats of one kind in one file cut off after [`MAX_PER_KIND`].
#[derive(Default)]
struct Capped {
    shown: Vec<Problem>,
    /// Per (file, kind): how many were seen, the fix they share, and the lines of those not shown.
    seen: HashMap<(String, &'static str), (usize, String, Vec<usize>)>,
    order: Vec<(String, &'static str)>,
}

impl Capped {
    fn push(&mut self, flaw: Flaw, file: &str, line: Option<usize>) {
        let key = (file.to_string(), flaw.kind);
        let entry = self.seen.entry(key.clone()).or_insert_with(|| {
            self.order.push(key);
            (0, flaw.fix.clone(), Vec::new())
        });
        entry.0 += 1;
        if entry.0 <= MAX_PER_KIND {
            self.shown.push(flaw.at(file, line));
        } else {
            entry.2.extend(line);
        }
    }

    fn finish(mut self) -> Vec<Problem> {
        for key in self.order {
            let (count, fix, lines) = &self.seen[&key];
            if *count <= MAX_PER_KIND {
                continue;
            }
            let mut at: Vec<String> = lines.iter().take(10).map(usize::to_string).collect();
            if lines.len() > at.len() {
                at.push("...".into());
            }
            let lines = if at.is_empty() {
                String::new()
            } else {
                format!(" (lines {})", at.join(", "))
            };
            self.shown.push(Problem {
                file: key.0.clone(),
                line: None,
                message: format!(
                    "... and {} more like the above{lines}",
                    count - MAX_PER_KIND
                ),
                fix: fix.clone(),
            });
        }
        self.shown
    }
}

struct FileCheck<'a> {
    file: String,
    errors: &'a mut Capped,
    warnings: &'a mut Capped,
}

impl FileCheck<'_> {
    fn error(&mut self, line: Option<usize>, flaw: Flaw) {
        self.errors.push(flaw, &self.file, line);
    }

    fn warn(&mut self, line: Option<usize>, flaw: Flaw) {
        self.warnings.push(flaw, &self.file, line);
    }

    fn run(
        &mut self,
        path: &Path,
        role: &str,
        min_queries: usize,
        opts: &ValidateOptions,
        pair_tokens: &(dyn Fn(&str, &str) -> usize + Sync),
    ) -> (Option<FileStats>, Vec<TrainRow>) {
        let bytes = match read_file(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.error(
                    None,
                    Flaw::new(
                        "io",
                        format!("cannot read the {role} file: {e}"),
                        "check the path",
                    ),
                );
                return (None, Vec::new());
            }
        };
        let mut rows = Vec::new();
        let mut lines = 0;
        let mut first_line_of_query: HashMap<String, usize> = HashMap::new();
        for (n, line) in jsonl_lines(&bytes) {
            lines += 1;
            let row = match line.and_then(parse_train_line) {
                Ok(row) => self.fix_row(row, n),
                Err(flaw) => {
                    self.error(Some(n), flaw);
                    continue;
                }
            };
            if let Some(first) = first_line_of_query.get(row.query.trim()) {
                self.warn(
                    Some(n),
                    Flaw::new(
                        "duplicate_query",
                        format!("the query of line {first} appears again"),
                        "merge the rows into one (combining their relevant passages and hard negatives)",
                    ),
                );
            } else {
                first_line_of_query.insert(row.query.trim().to_string(), n);
            }
            rows.push(row);
        }
        let unique_queries = first_line_of_query.len();
        if lines == 0 {
            let fix = format!("add at least {min_queries} rows, one JSON object per line");
            self.error(
                None,
                Flaw::new("empty", format!("the {role} file holds no rows"), fix),
            );
        } else if unique_queries < min_queries {
            self.error(None, too_few(role, unique_queries, min_queries));
        }
        let stats = self.stats(&rows, unique_queries, opts.max_len, pair_tokens);
        if stats.truncated_pairs as f64 > TRUNCATION_WARN_SHARE * stats.pairs as f64 {
            self.warn(
                None,
                Flaw::new(
                    "truncation",
                    format!(
                        "{} of {} (query, passage) pairs are longer than max_len = {} tokens",
                        stats.truncated_pairs, stats.pairs, opts.max_len
                    ),
                    "they will be truncated; raise max_len or shorten passages",
                ),
            );
        }
        if !rows.is_empty() && rows.iter().all(|r| r.hard_negatives.is_empty()) {
            self.warn(
                None,
                Flaw::new(
                    "no_negatives",
                    format!(
                        "no {role} row has hard negatives: the model learns only to tell each \
                         query's passage from other queries' passages, which it mostly can already"
                    ),
                    "mine hard negatives from your document collection: with \
                     `finerank mine --beir DIR --out DIR`, training on the files it writes, or \
                     through the API, uploading the rows again with the collection as `corpus` \
                     and the query parameter `mine_negatives=true`",
                ),
            );
        }
        (Some(stats), rows)
    }

    /// Drops empty and repeated passages (with a warning: training can go on without them) and
    /// reports a passage that is both relevant and a hard negative (an error: only the user knows which it is).
    fn fix_row(&mut self, mut row: TrainRow, line: usize) -> TrainRow {
        let mut relevant = HashSet::new();
        let (empty, repeated) = keep_distinct(&mut row.relevant_passages, &mut relevant);
        self.report_removed(
            line,
            empty,
            "empty relevant passage",
            "empty_relevant",
            "relevant_passages",
        );
        self.report_removed(
            line,
            repeated,
            "repeated relevant passage",
            "duplicate_relevant",
            "relevant_passages",
        );

        let mut negatives = HashSet::new();
        let (empty, repeated) = keep_distinct(&mut row.hard_negatives, &mut negatives);
        self.report_removed(
            line,
            empty,
            "empty hard negative",
            "empty_negative",
            "hard_negatives",
        );
        self.report_removed(
            line,
            repeated,
            "repeated hard negative",
            "duplicate_negative",
            "hard_negatives",
        );

        for passage in row
            .hard_negatives
            .iter()
            .filter(|p| relevant.contains(p.trim()))
        {
            let flaw = Flaw::new(
                "relevant_is_negative",
                format!(
                    "passage \"{}\" is listed both as relevant and as a hard negative",
                    snippet(passage)
                ),
                "remove it from hard_negatives",
            );
            self.error(Some(line), flaw);
        }
        row
    }

    fn report_removed(
        &mut self,
        line: usize,
        count: usize,
        what: &str,
        kind: &'static str,
        field: &str,
    ) {
        if count > 0 {
            let plural = if count == 1 { "" } else { "s" };
            let message = format!("removed {count} {what}{plural}");
            let fix = format!("delete it from `{field}` in the file (this run trains without it)");
            self.warn(Some(line), Flaw::new(kind, message, fix));
        }
    }

    fn stats(
        &self,
        rows: &[TrainRow],
        unique_queries: usize,
        max_len: usize,
        pair_tokens: &(dyn Fn(&str, &str) -> usize + Sync),
    ) -> FileStats {
        let mut lengths: Vec<usize> = rows
            .iter()
            .flat_map(|row| {
                row.relevant_passages
                    .iter()
                    .chain(&row.hard_negatives)
                    .map(|p| pair_tokens(&row.query, p))
            })
            .collect();
        lengths.sort_unstable();
        let mut histogram: Vec<Bucket> = BOUNDS
            .iter()
            .copied()
            .filter(|&b| b < max_len)
            .chain([max_len])
            .map(|up_to| Bucket { up_to, count: 0 })
            .collect();
        let mut truncated_pairs = 0;
        for &len in &lengths {
            match histogram.iter_mut().find(|b| len <= b.up_to) {
                Some(bucket) => bucket.count += 1,
                None => truncated_pairs += 1,
            }
        }
        let max_pair_tokens = lengths.last().copied().unwrap_or(0);
        if truncated_pairs > 0 {
            histogram.push(Bucket {
                up_to: max_pair_tokens,
                count: truncated_pairs,
            });
        }
        let per_row = |count: fn(&TrainRow) -> usize| {
            if rows.is_empty() {
                0.0
            } else {
                rows.iter().map(count).sum::<usize>() as f64 / rows.len() as f64
            }
        };
        FileStats {
            file: self.file.clone(),
            rows: rows.len(),
            unique_queries,
            avg_relevant: per_row(|r| r.relevant_passages.len()),
            avg_hard_negatives: per_row(|r| r.hard_negatives.len()),
            length_histogram: histogram,
            pairs: lengths.len(),
            truncated_pairs,
            max_pair_tokens,
            p50_pair_tokens: percentile(&lengths, 0.50),
            p95_pair_tokens: percentile(&lengths, 0.95),
            samples: rows.iter().take(3).cloned().collect(),
        }
    }
}

/// Keeps the first copy of each passage (compared after trimming) and drops blank ones; returns
/// how many blank and repeated passages were dropped. `seen` ends up holding the trimmed texts kept.
fn keep_distinct(passages: &mut Vec<String>, seen: &mut HashSet<String>) -> (usize, usize) {
    let (mut empty, mut repeated) = (0, 0);
    passages.retain(|p| {
        let text = p.trim();
        if text.is_empty() {
            empty += 1;
            false
        } else if !seen.insert(text.to_string()) {
            repeated += 1;
            false
        } else {
            true
        }
    });
    (empty, repeated)
}

/// Nearest-rank percentile of sorted values; 0 for none.
fn percentile(sorted: &[usize], p: f64) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Enough of a passage to recognise it in a message.
fn snippet(text: &str) -> String {
    const CHARS: usize = 60;
    let text = text.trim();
    match text.char_indices().nth(CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}
