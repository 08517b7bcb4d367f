//! Problems that point at a file and line, and the crate's error type.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Every problem points at a place and says how to fix it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    pub file: String,
    /// 1-based; `None` when the problem concerns the whole file.
    pub line: Option<usize>,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "{}:{line}: {} (fix: {})",
                self.file, self.message, self.fix
            ),
            None => write!(f, "{}: {} (fix: {})", self.file, self.message, self.fix),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The data (or an option describing it) is wrong; the problem says where and how to fix it.
    #[error("{0}")]
    Invalid(Problem),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

/// A problem found in one row before it is tied to a file and line. `kind` groups alike
/// problems so the validator can cap repeats instead of printing thousands of copies.
#[derive(Clone, Debug)]
pub(crate) struct Flaw {
    pub kind: &'static str,
    pub message: String,
    pub fix: String,
}

impl Flaw {
    pub fn new(kind: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Flaw {
            kind,
            message: message.into(),
            fix: fix.into(),
        }
    }

    pub fn at(self, file: &str, line: Option<usize>) -> Problem {
        Problem {
            file: file.to_string(),
            line,
            message: self.message,
            fix: self.fix,
        }
    }
}
