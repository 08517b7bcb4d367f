//! What a dataset is made of: the files uploaded under each multipart field (Cohere rows, or a
//! BEIR collection of corpus, queries and qrels), and which combinations make a dataset.
use crate::error::ApiError;

#[derive(Clone, Debug, PartialEq)]
pub struct FilePart {
    /// The name the client uploaded it under; shown, never used as a path.
    pub filename: String,
    pub size_bytes: u64,
}

/// A multipart field of an upload, each holding one file of the dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Cohere rows to train on.
    Data,
    /// Cohere rows to validate on.
    Eval,
    /// BEIR's corpus.jsonl: the collection to mine negatives from and to evaluate retrieval on.
    Corpus,
    /// BEIR's queries.jsonl and qrels TSV: with the corpus, the training queries in place of `data`.
    Queries,
    Qrels,
}

impl Part {
    pub const ALL: [Part; 5] = [
        Part::Data,
        Part::Eval,
        Part::Corpus,
        Part::Queries,
        Part::Qrels,
    ];

    pub fn field(self) -> &'static str {
        match self {
            Part::Data => "data",
            Part::Eval => "eval_data",
            Part::Corpus => "corpus",
            Part::Queries => "queries",
            Part::Qrels => "qrels",
        }
    }

    pub fn from_field(field: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.field() == field)
    }
}

/// A dataset's files, by the field each came in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parts {
    pub data: Option<FilePart>,
    pub eval: Option<FilePart>,
    pub corpus: Option<FilePart>,
    pub queries: Option<FilePart>,
    pub qrels: Option<FilePart>,
}

impl Parts {
    pub fn slot(&mut self, part: Part) -> &mut Option<FilePart> {
        match part {
            Part::Data => &mut self.data,
            Part::Eval => &mut self.eval,
            Part::Corpus => &mut self.corpus,
            Part::Queries => &mut self.queries,
            Part::Qrels => &mut self.qrels,
        }
    }

    pub fn get(&self, part: Part) -> Option<&FilePart> {
        match part {
            Part::Data => self.data.as_ref(),
            Part::Eval => self.eval.as_ref(),
            Part::Corpus => self.corpus.as_ref(),
            Part::Queries => self.queries.as_ref(),
            Part::Qrels => self.qrels.as_ref(),
        }
    }

    /// The files present, in field order.
    pub fn iter(&self) -> impl Iterator<Item = (Part, &FilePart)> {
        Part::ALL
            .into_iter()
            .filter_map(|part| self.get(part).map(|file| (part, file)))
    }

    /// Refuses a combination that makes no dataset, saying what to send instead. `mining`: the
    /// upload asks for negatives to be mined from the corpus.
    pub fn check(&self, mining: bool) -> Result<(), ApiError> {
        let problem = match (&self.data, &self.queries, &self.qrels) {
            (Some(_), None, None) => self.check_rows(mining),
            (Some(_), _, _) => Some(
                "send the training queries either as `data` (Cohere rows) or as a BEIR collection \
                 (`corpus`, `queries` and `qrels`), not both: leave out `queries` and `qrels`, or \
                 `data`"
                    .to_string(),
            ),
            (None, None, None) => Some(
                "the multipart field `data` (the training file, JSONL) is missing; or send a BEIR \
                 collection as `corpus`, `queries` and `qrels`"
                    .to_string(),
            ),
            (None, _, _) => self.check_collection(mining),
        };
        problem.map_or(Ok(()), |p| Err(ApiError::bad_request(p)))
    }

    fn check_rows(&self, mining: bool) -> Option<String> {
        match (&self.corpus, &self.eval) {
            (None, _) if mining => Some(
                "mine_negatives=true needs the collection to mine from: add the multipart field \
                 `corpus` (BEIR's corpus.jsonl, one {\"_id\", \"title\", \"text\"} per line)"
                    .to_string(),
            ),
            (Some(_), None) if !mining => Some(
                "a `corpus` without mining is there to evaluate retrieval after training, on \
                 queries training never saw: add `eval_data`, or mine_negatives=true (mining holds \
                 out a tenth of the queries)"
                    .to_string(),
            ),
            _ => None,
        }
    }

    fn check_collection(&self, mining: bool) -> Option<String> {
        let missing: Vec<String> = [Part::Corpus, Part::Queries, Part::Qrels]
            .into_iter()
            .filter(|&p| self.get(p).is_none())
            .map(|p| format!("`{}`", p.field()))
            .collect();
        if !missing.is_empty() {
            return Some(format!(
                "a BEIR collection needs `corpus`, `queries` and `qrels`: {} missing",
                missing.join(" and ")
            ));
        }
        if self.eval.is_some() {
            return Some(
                "with a BEIR collection, a tenth of the qrels' queries is held out for evaluation: \
                 leave out `eval_data`, or send Cohere rows as `data` beside it"
                    .to_string(),
            );
        }
        (!mining).then(|| {
            "a BEIR collection has no hard negatives to train on until they are mined: add the \
             query parameter mine_negatives=true"
                .to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(fields: &[Part]) -> Parts {
        let mut parts = Parts::default();
        for &p in fields {
            *parts.slot(p) = Some(FilePart {
                filename: p.field().into(),
                size_bytes: 1,
            });
        }
        parts
    }

    #[test]
    fn rows_or_a_whole_collection_make_a_dataset() {
        use Part::*;
        let good: &[(&[Part], bool)] = &[
            (&[Data], false),
            (&[Data, Eval], false),
            (&[Data, Corpus], true),
            (&[Data, Eval, Corpus], false),
            (&[Data, Eval, Corpus], true),
            (&[Corpus, Queries, Qrels], true),
        ];
        for (fields, mining) in good {
            assert_eq!(parts(fields).check(*mining), Ok(()), "{fields:?} {mining}");
        }
        let bad: &[(&[Part], bool, &str)] = &[
            (
                &[Eval],
                false,
                "`data` (the training file, JSONL) is missing",
            ),
            (
                &[Corpus],
                true,
                "`data` (the training file, JSONL) is missing",
            ),
            (&[Data], true, "add the multipart field `corpus`"),
            (
                &[Data, Corpus],
                false,
                "add `eval_data`, or mine_negatives=true",
            ),
            (&[Data, Corpus, Qrels], true, "not both"),
            (&[Corpus, Qrels], true, "`queries` missing"),
            (&[Queries, Qrels], true, "`corpus` missing"),
            (
                &[Corpus, Queries, Qrels, Eval],
                true,
                "leave out `eval_data`",
            ),
            (&[Corpus, Queries, Qrels], false, "mine_negatives=true"),
        ];
        for (fields, mining, text) in bad {
            let e = parts(fields).check(*mining).unwrap_err();
            assert!(e.message.contains(text), "{fields:?} {mining}: {e}");
        }
    }
}
