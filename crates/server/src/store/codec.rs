//! How values are stored, the same way in both backends: times as fixed-width text, structured
//! values as JSON text, statuses under their wire names, each file of a dataset in a pair of
//! columns. Rows written by one backend and read by the other (an export, a test) mean the same.
use std::error::Error;
use std::time::SystemTime;

use serde::Serialize;

use crate::jobs::JobStatus;
use crate::parts::Part;
use crate::validator::ValidationStatus;

/// Millisecond RFC 3339 in UTC: fixed width, so text order is time order.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub(super) fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("stored types serialize")
}

/// A count or position as a database integer. Clients choose offsets and limits, and a wrapping
/// cast would turn a huge one negative, which SQLite reads as "from the start" or "no limit".
pub(super) fn sql_int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// The prefix of the columns that hold a dataset's file of `part` (`<prefix>_filename`,
/// `<prefix>_bytes`).
pub(super) fn part_column(part: Part) -> &'static str {
    match part {
        Part::Data => "data",
        Part::Eval => "eval",
        Part::Corpus => "corpus",
        Part::Queries => "queries",
        Part::Qrels => "qrels",
    }
}

/// The SQL sum of every file's bytes in a `datasets` row (both backends' dialects take it).
pub(super) fn usage_sum() -> String {
    let sum = Part::ALL
        .map(|p| format!("coalesce({}_bytes, 0)", part_column(p)))
        .join(" + ");
    format!("coalesce(sum({sum}), 0)")
}

/// A status column: each backend binds and reads it through these two.
pub(super) trait Status: Sized + Copy {
    fn as_str(self) -> &'static str;
    fn parse(text: &str) -> Option<Self>;
}

impl Status for JobStatus {
    fn as_str(self) -> &'static str {
        JobStatus::as_str(self)
    }
    fn parse(text: &str) -> Option<Self> {
        JobStatus::parse(text)
    }
}

impl Status for ValidationStatus {
    fn as_str(self) -> &'static str {
        ValidationStatus::as_str(self)
    }
    fn parse(text: &str) -> Option<Self> {
        ValidationStatus::parse(text)
    }
}

/// Reads a status back; a name this release does not know means the row was written by another.
pub(super) fn parse_status<T: Status>(text: &str) -> Result<T, Box<dyn Error + Send + Sync>> {
    T::parse(text).ok_or_else(|| format!("unknown status {text:?}").into())
}
