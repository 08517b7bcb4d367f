//! What a relevance score means: a model's raw score (a cross-encoder's logit, a bi-encoder's
//! cosine) mapped to a probability of relevance by a Platt mapping, so that a user's cutoff
//! drops what is likely irrelevant.
//!
//! A checkpoint directory may hold its mapping in `calibration.json`, beside the model's own
//! files, which it never changes: Hugging Face loaders ignore the extra file. Without one, a model
//! scores with its kind's default.
use std::fmt;
use std::fs;
use std::path::Path;

use finerank_data::TestRow;
use finerank_eval::{calibrate, CalibrationError, CalibrationReport, Platt};
use finerank_model::Kind;
use serde::{Deserialize, Serialize};

use crate::{score_rows, EngineError, Reranker, ScoreOptions};

/// The file beside a model's weights that holds its calibration.
pub const CALIBRATION_FILE: &str = "calibration.json";

/// How a calibration was fitted; Platt scaling is the only method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Platt,
}

/// Which raw score a calibration maps; each model kind has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawScore {
    /// A cross-encoder's logit.
    Logit,
    /// A bi-encoder's cosine between the query's and the document's embeddings.
    Cosine,
}

impl RawScore {
    pub fn of(kind: Kind) -> RawScore {
        match kind {
            Kind::CrossEncoder => RawScore::Logit,
            Kind::BiEncoder => RawScore::Cosine,
        }
    }
}

/// relevance_score = sigmoid(scale × raw + bias). The scale is positive, so the mapping never
/// changes a ranking.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub method: Method,
    pub input: RawScore,
    #[serde(flatten)]
    pub platt: Platt,
    /// How the mapping was fitted and how well it did, when it was fitted rather than a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fitted_on: Option<CalibrationReport>,
}

impl Calibration {
    /// The mapping of a model that has no `calibration.json`.
    ///
    /// - Cross-encoder: sigmoid(logit), scale 1 and bias 0, which is what such models are trained
    ///   for (a binary cross-entropy on the logit).
    /// - Bi-encoder: sigmoid(5.62 × cosine − 3.95), fitted on the default model
    ///   (all-MiniLM-L6-v2) over CaseHOLD's 2,000 training rows: 10,000 pairs, each query's
    ///   relevant holding and its four wrong ones. The fit gave scale 5.6212 and bias −3.9489, with
    ///   an expected calibration error of 0.0081 (2-fold cross-fitted by query); (cosine + 1) / 2,
    ///   the mapping before, had 0.5122 there. An unrelated document (cosine near 0) scores about
    ///   0.02. Measured with `finerank prepare --input ../shared/data/casehold/train.jsonl --train
    ///   2000 --valid 0 --test 0 --out casehold`, then `finerank calibrate --model
    ///   all-MiniLM-L6-v2 --data casehold/train.jsonl`; the 0.5122, and the same fit computed
    ///   independently, by `.venv/bin/python bench/calibration-vs-st.py casehold/train.jsonl`. The
    ///   probabilities are those of CaseHOLD's mix (one relevant in five close candidates); a
    ///   model's own `calibration.json`, fitted on its users' data, says what they mean there.
    pub fn default_for(kind: Kind) -> Calibration {
        let platt = match kind {
            Kind::CrossEncoder => Platt {
                scale: 1.0,
                bias: 0.0,
            },
            Kind::BiEncoder => Platt {
                scale: 5.62,
                bias: -3.95,
            },
        };
        Calibration {
            method: Method::Platt,
            input: RawScore::of(kind),
            platt,
            fitted_on: None,
        }
    }

    /// The relevance score of a raw score.
    pub fn score(&self, raw: f32) -> f32 {
        self.platt.probability(f64::from(raw)) as f32
    }

    /// Why this calibration cannot score a model of `kind`, if it cannot.
    fn check(&self, kind: Kind) -> Result<(), String> {
        let Platt { scale, bias } = self.platt;
        if !scale.is_finite() || !bias.is_finite() {
            return Err(format!(
                "scale {scale} and bias {bias} must be finite numbers"
            ));
        }
        if scale <= 0.0 {
            return Err(format!(
                "scale {scale} is not positive, so the mapping would reverse the model's ranking"
            ));
        }
        if self.input != RawScore::of(kind) {
            return Err(format!(
                "input {:?} does not fit a {kind:?}, whose raw score is its {:?}",
                self.input,
                RawScore::of(kind)
            ));
        }
        Ok(())
    }

    /// The calibration a checkpoint directory holds for a model of `kind`, or `None` when it holds
    /// none. `kind_asked` says the model is being built as `kind` whatever the checkpoint is: a
    /// calibration for another kind then describes a head the model no longer has, and is ignored
    /// instead of refused.
    pub fn read(
        dir: &Path,
        kind: Kind,
        kind_asked: bool,
    ) -> Result<Option<Calibration>, EngineError> {
        let path = dir.join(CALIBRATION_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad_file(&path, &e.to_string())),
        };
        let calibration: Calibration =
            serde_json::from_str(&text).map_err(|e| bad_file(&path, &e.to_string()))?;
        if kind_asked && calibration.input != RawScore::of(kind) {
            return Ok(None);
        }
        calibration.check(kind).map_err(|m| bad_file(&path, &m))?;
        Ok(Some(calibration))
    }

    /// Writes `calibration.json` into `dir` atomically: a temporary file, flushed, then renamed,
    /// so a reader sees the old file or the new one, never half of one.
    pub fn write(&self, dir: &Path) -> Result<(), EngineError> {
        let path = dir.join(CALIBRATION_FILE);
        let tmp = dir.join(format!(".{CALIBRATION_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).expect("calibrations serialize");
        let io =
            |p: &Path, e: std::io::Error| EngineError::Calibration(format!("{}: {e}", p.display()));
        fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io(&path, e))
    }
}

/// The mapping as a formula: `sigmoid(12.4 × cosine − 6.9)`.
impl fmt::Display for Calibration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let input = match self.input {
            RawScore::Logit => "logit",
            RawScore::Cosine => "cosine",
        };
        let Platt { scale, bias } = self.platt;
        let sign = if bias < 0.0 { '−' } else { '+' };
        write!(f, "sigmoid({scale:.4} × {input} {sign} {:.4})", bias.abs())
    }
}

fn bad_file(path: &Path, message: &str) -> EngineError {
    EngineError::Calibration(format!(
        "{}: {message}. Fix the file, or delete it to score with the model kind's default \
         mapping, or write a new one with `finerank calibrate --model <model> --data <rows.jsonl> \
         --write`",
        path.display()
    ))
}

/// Checks a calibration against the model it is about to score.
pub(crate) fn check_for(calibration: &Calibration, kind: Kind) -> Result<(), EngineError> {
    calibration.check(kind).map_err(EngineError::Calibration)
}

/// Fits a calibration of `reranker` on ranking tasks: every document of a row is a pair,
/// relevant when it is among the row's gold documents. The report's `ece_before` is that of
/// `before`, the mapping the model would score with otherwise. `progress(done, total)` counts
/// rows scored.
pub fn fit_calibration(
    reranker: &Reranker,
    rows: &[TestRow],
    opts: &ScoreOptions,
    before: &Calibration,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Calibration, CalibrationError> {
    let mut raw = Vec::new();
    let mut labels = Vec::new();
    let mut queries = Vec::new();
    for (q, (row, scored)) in rows
        .iter()
        .zip(score_rows(reranker, rows, opts, progress))
        .enumerate()
    {
        for (i, s) in scored.raw_scores.iter().enumerate() {
            raw.push(f64::from(*s));
            labels.push(row.gold_indices.contains(&i));
            queries.push(q);
        }
    }
    let (platt, report) = calibrate(&raw, &labels, &queries, &before.platt)?;
    Ok(Calibration {
        method: Method::Platt,
        input: RawScore::of(reranker.kind()),
        platt,
        fitted_on: Some(report),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calibration(input: RawScore, scale: f64, bias: f64) -> Calibration {
        Calibration {
            method: Method::Platt,
            input,
            platt: Platt { scale, bias },
            fitted_on: None,
        }
    }

    #[test]
    fn the_cross_encoder_default_is_the_plain_sigmoid() {
        let c = Calibration::default_for(Kind::CrossEncoder);
        for logit in [-3.0f32, 0.0, 0.5, 4.0] {
            assert_eq!(
                c.score(logit),
                (1.0 / (1.0 + (-f64::from(logit)).exp())) as f32
            );
        }
    }

    #[test]
    fn the_bi_encoder_default_puts_unrelated_documents_near_zero() {
        let c = Calibration::default_for(Kind::BiEncoder);
        assert!(c.score(0.0) < 0.03, "{}", c.score(0.0));
        assert!(c.score(0.9) > 0.7, "{}", c.score(0.9));
        assert_eq!(c.input, RawScore::Cosine);
    }

    #[test]
    fn a_calibration_prints_as_its_formula() {
        assert_eq!(
            calibration(RawScore::Cosine, 12.4, -6.9).to_string(),
            "sigmoid(12.4000 × cosine − 6.9000)"
        );
        assert_eq!(
            Calibration::default_for(Kind::CrossEncoder).to_string(),
            "sigmoid(1.0000 × logit + 0.0000)"
        );
    }

    #[test]
    fn the_file_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = calibration(RawScore::Logit, 0.8, -1.25);
        c.fitted_on = Some(CalibrationReport {
            pairs: 50,
            positives: 10,
            ece_before: 0.3,
            ece_after: 0.05,
        });
        c.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(CALIBRATION_FILE)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["method"], "platt");
        assert_eq!(json["input"], "logit");
        assert_eq!(json["scale"], 0.8);
        assert_eq!(json["fitted_on"]["ece_after"], 0.05);
        let back = Calibration::read(dir.path(), Kind::CrossEncoder, false).unwrap();
        assert_eq!(back, Some(c));
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "no temporary file left behind");
        assert_eq!(
            Calibration::read(tempfile::tempdir().unwrap().path(), Kind::BiEncoder, false).unwrap(),
            None
        );
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CALIBRATION_FILE);
        for (text, word) in [
            (
                r#"{"method": "platt", "input": "logit", "scale": 0, "bias": 0}"#,
                "positive",
            ),
            (
                r#"{"method": "platt", "input": "logit", "scale": -2, "bias": 0}"#,
                "positive",
            ),
            (
                r#"{"method": "platt", "input": "cosine", "scale": 2, "bias": 0}"#,
                "CrossEncoder",
            ),
            (
                r#"{"method": "isotonic", "input": "logit", "scale": 2, "bias": 0}"#,
                "isotonic",
            ),
            (
                r#"{"method": "platt", "input": "logit", "scale": 1e999, "bias": 0}"#,
                "number",
            ),
            (
                r#"{"method": "platt", "input": "logit", "bias": 0}"#,
                "scale",
            ),
            ("not json", "expected"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Calibration::read(dir.path(), Kind::CrossEncoder, false)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(word), "{text}: {err}");
            assert!(
                err.contains("delete it") && err.contains("finerank calibrate"),
                "{err}"
            );
        }
        let infinite = calibration(RawScore::Logit, f64::INFINITY, 0.0);
        assert!(infinite
            .check(Kind::CrossEncoder)
            .unwrap_err()
            .contains("finite"));
    }

    #[test]
    fn a_calibration_for_another_kind_is_ignored_when_the_kind_was_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        calibration(RawScore::Cosine, 10.0, -5.0)
            .write(dir.path())
            .unwrap();
        // A bi-encoder checkpoint rebuilt as a cross-encoder gets a fresh head: its cosine
        // calibration no longer applies.
        assert_eq!(
            Calibration::read(dir.path(), Kind::CrossEncoder, true).unwrap(),
            None
        );
        assert!(Calibration::read(dir.path(), Kind::CrossEncoder, false).is_err());
        assert!(Calibration::read(dir.path(), Kind::BiEncoder, true)
            .unwrap()
            .is_some());
    }
}
