//! Human-readable and CSV renderings of an evaluation.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::{
    Comparison, Estimate, Metrics, PairedDiff, QueryMetrics, RetrievalComparison, RetrievalMetrics,
    RetrievalSummary,
};

/// A finished evaluation, ready to print or serialize.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub model: String,
    pub metrics: Metrics,
    /// Name of the baseline model, when there is one.
    pub compare_to: Option<String>,
    pub baseline: Option<Metrics>,
    pub comparison: Option<Comparison>,
    /// Expected calibration error of the model's relevance scores over every (query, document)
    /// pair, and of the baseline's (absent in older reports).
    #[serde(default)]
    pub ece: Option<f64>,
    #[serde(default)]
    pub baseline_ece: Option<f64>,
    /// Tokens per input the model read with, and the baseline (absent in older reports).
    #[serde(default)]
    pub window: Option<usize>,
    #[serde(default)]
    pub baseline_window: Option<usize>,
}

/// A fixed-width table with one row per metric.
///
/// Alone, each row is `value [ci_low, ci_high]`. With a comparison, the rows
/// show baseline (A), model (B) and B - A with its paired CI, followed by
/// the McNemar line for accuracy@1. The expected calibration error follows the metrics, on its
/// own, without an interval, and then the window each model read with.
pub fn render_table(r: &Report) -> String {
    let mut out = String::new();
    let queries = r.metrics.queries;
    // `write!` into a String cannot fail, hence the ignored results.
    match &r.comparison {
        None => {
            let _ = writeln!(
                out,
                "model: {}  ({queries} queries, 95% bootstrap CI)",
                r.model
            );
            let _ = writeln!(out, "{:<8} {:>7}  95% CI", "metric", "value");
            for (name, e) in metric_rows(&r.metrics) {
                let _ = writeln!(
                    out,
                    "{name:<8} {:>7.4}  [{:.4}, {:.4}]",
                    e.mean, e.ci_low, e.ci_high
                );
            }
            if let Some(ece) = r.ece {
                let _ = writeln!(out, "{:<8} {ece:>7.4}  ({ECE_NOTE})", "ECE");
            }
            if let Some(window) = r.window {
                let _ = writeln!(out, "{:<8} {window:>7}  ({WINDOW_NOTE})", "window");
            }
        }
        Some(c) => {
            let baseline = r.compare_to.as_deref().unwrap_or("baseline");
            let _ = writeln!(out, "model (B): {}", r.model);
            let _ = writeln!(out, "baseline (A): {baseline}");
            let _ = writeln!(out, "{queries} paired queries, 95% paired bootstrap CI");
            let _ = writeln!(
                out,
                "{:<8} {:>8} {:>8} {:>8}  95% CI of B - A",
                "metric", "baseline", "model", "B - A"
            );
            let diffs = [
                &c.accuracy_at_1_diff,
                &c.accuracy_at_3_diff,
                &c.mrr_at_10_diff,
                &c.ndcg_at_10_diff,
                &c.map_diff,
            ];
            let base_means = r
                .baseline
                .as_ref()
                .map(|m| metric_rows(m).map(|(_, e)| e.mean));
            for (i, ((name, e), d)) in metric_rows(&r.metrics).into_iter().zip(diffs).enumerate() {
                let base = base_means.map_or_else(|| "-".to_string(), |b| format!("{:.4}", b[i]));
                let _ = writeln!(
                    out,
                    "{name:<8} {base:>8} {:>8.4} {:>+8.4}  [{:+.4}, {:+.4}]",
                    e.mean, d.mean, d.ci_low, d.ci_high
                );
            }
            if let Some(ece) = r.ece {
                let base = r.baseline_ece.map_or("-".into(), |b| format!("{b:.4}"));
                let _ = writeln!(out, "{:<8} {base:>8} {ece:>8.4}  ({ECE_NOTE})", "ECE");
            }
            if let Some(window) = r.window {
                let base = r.baseline_window.map_or("-".into(), |b| b.to_string());
                let note = match r.baseline_window {
                    Some(b) if b != window => UNEQUAL_WINDOWS,
                    _ => "tokens per input each model read",
                };
                let _ = writeln!(out, "{:<8} {base:>8} {window:>8}  ({note})", "window");
            }
            let _ = writeln!(
                out,
                "acc@1: B right only {}, A right only {}, exact McNemar p = {}",
                c.b_only_correct,
                c.a_only_correct,
                format_p(c.mcnemar_p)
            );
        }
    }
    out
}

/// What the ECE row is, for a reader who has not met it.
const ECE_NOTE: &str = "expected calibration error of relevance scores, lower is better";

/// What the window row of a single model is.
const WINDOW_NOTE: &str = "tokens per input the model read";

/// The window row when the two models read different windows.
const UNEQUAL_WINDOWS: &str =
    "tokens per input; unequal, so B - A also measures how much of each text a model read";

fn metric_rows(m: &Metrics) -> [(&'static str, &Estimate); 5] {
    [
        ("acc@1", &m.accuracy_at_1),
        ("acc@3", &m.accuracy_at_3),
        ("MRR@10", &m.mrr_at_10),
        ("nDCG@10", &m.ndcg_at_10),
        ("MAP", &m.map),
    ]
}

/// Four decimals, switching to scientific notation so that a tiny p-value
/// is not printed as a misleading 0.0000.
fn format_p(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.2e}")
    } else {
        format!("{p:.4}")
    }
}

/// Per-query CSV of first-relevant ranks, one row per query (0-based index in
/// input order). The header is `query,first_relevant_rank_<a>` plus
/// `,first_relevant_rank_<b>` when `b` is given; header fields are quoted as
/// RFC 4180 requires. If the two lists differ in length, the shorter one's
/// missing cells are left empty.
pub fn ranks_csv(a_label: &str, a: &[QueryMetrics], b: Option<(&str, &[QueryMetrics])>) -> String {
    let column = |label: &str| csv_field(&format!("first_relevant_rank_{label}"));
    let cell = |qs: &[QueryMetrics], i: usize| {
        qs.get(i)
            .map_or_else(String::new, |q| q.first_relevant_rank.to_string())
    };

    let mut out = format!("query,{}", column(a_label));
    if let Some((b_label, _)) = b {
        out.push(',');
        out.push_str(&column(b_label));
    }
    out.push('\n');
    let rows = a.len().max(b.map_or(0, |(_, qs)| qs.len()));
    for i in 0..rows {
        let _ = write!(out, "{i},{}", cell(a, i));
        if let Some((_, qs)) = b {
            let _ = write!(out, ",{}", cell(qs, i));
        }
        out.push('\n');
    }
    out
}

/// One system of a retrieval evaluation: a first stage alone, or a model re-ranking its top k.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct System {
    pub name: String,
    /// Tokens per model input the system read with; none for the first stage.
    pub window: Option<usize>,
    pub metrics: RetrievalSummary,
    #[serde(skip)]
    pub per_query: Vec<RetrievalMetrics>,
}

/// System B against system A on the same queries: the differences are B − A.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Paired {
    pub a: String,
    pub b: String,
    pub comparison: RetrievalComparison,
}

/// A finished retrieval evaluation: the first stage and each re-ranking model, then the pairs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RetrievalReport {
    pub collection: String,
    pub split: String,
    pub queries: usize,
    pub corpus_docs: usize,
    pub first_stage: String,
    pub top_k: usize,
    pub systems: Vec<System>,
    pub comparisons: Vec<Paired>,
    /// The judged queries, in the order of every system's `per_query`.
    #[serde(skip)]
    pub query_ids: Vec<String>,
}

fn interval(e: &Estimate) -> String {
    format!("{:.3} [{:.3}, {:.3}]", e.mean, e.ci_low, e.ci_high)
}

fn diff(d: &PairedDiff) -> String {
    format!(
        "{:+.3} [{:+.3}, {:+.3}] p={}",
        d.diff.mean,
        d.diff.ci_low,
        d.diff.ci_high,
        format_p(d.p_value)
    )
}

const RETRIEVAL_METRICS: [&str; 5] = ["nDCG@10", "Recall@10", "Recall@100", "MRR@10", "MAP@100"];

fn summary_cells(m: &RetrievalSummary) -> [String; 5] {
    [
        &m.ndcg_at_10,
        &m.recall_at_10,
        &m.recall_at_100,
        &m.mrr_at_10,
        &m.map_at_100,
    ]
    .map(interval)
}

fn comparison_cells(c: &RetrievalComparison) -> [String; 5] {
    [
        &c.ndcg_at_10,
        &c.recall_at_10,
        &c.recall_at_100,
        &c.mrr_at_10,
        &c.map_at_100,
    ]
    .map(diff)
}

/// A Markdown table per section: each system's metrics, then each paired difference.
pub fn render_retrieval(r: &RetrievalReport) -> String {
    let mut out = format!(
        "{} queries of split `{}` over {} documents; {} top {} re-ranked; 95% bootstrap CIs, \
         randomization-test p-values.\n\n| system | window | {} |\n|---|---|{}\n",
        r.queries,
        r.split,
        r.corpus_docs,
        r.first_stage,
        r.top_k,
        RETRIEVAL_METRICS.join(" | "),
        "---|".repeat(RETRIEVAL_METRICS.len()),
    );
    for s in &r.systems {
        let window = s.window.map_or("-".into(), |w| w.to_string());
        let _ = writeln!(
            out,
            "| {} | {window} | {} |",
            s.name,
            summary_cells(&s.metrics).join(" | ")
        );
    }
    let _ = write!(
        out,
        "\n| B − A | {} |\n|---|{}\n",
        RETRIEVAL_METRICS.join(" | "),
        "---|".repeat(RETRIEVAL_METRICS.len())
    );
    for p in &r.comparisons {
        let _ = writeln!(
            out,
            "| {} − {} | {} |",
            p.b,
            p.a,
            comparison_cells(&p.comparison).join(" | ")
        );
    }
    out
}

/// One row per query and system: the per-query metrics behind every figure of the report.
pub fn retrieval_csv(r: &RetrievalReport) -> String {
    let mut out = String::from(
        "query_id,system,ndcg_at_10,recall_at_10,recall_at_100,mrr_at_10,map_at_100\n",
    );
    for s in &r.systems {
        for (id, m) in r.query_ids.iter().zip(&s.per_query) {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{}",
                csv_field(id),
                csv_field(&s.name),
                m.ndcg_at_10,
                m.recall_at_10,
                m.recall_at_100,
                m.mrr_at_10,
                m.map_at_100
            );
        }
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(mean: f64, ci_low: f64, ci_high: f64) -> Estimate {
        Estimate {
            mean,
            ci_low,
            ci_high,
        }
    }

    fn metrics(acc1: f64) -> Metrics {
        Metrics {
            queries: 120,
            accuracy_at_1: est(acc1, acc1 - 0.05, acc1 + 0.05),
            accuracy_at_3: est(0.9, 0.85, 0.95),
            mrr_at_10: est(0.8, 0.75, 0.85),
            ndcg_at_10: est(0.82, 0.78, 0.86),
            map: est(0.79, 0.74, 0.84),
        }
    }

    fn rank(first_relevant_rank: usize) -> QueryMetrics {
        QueryMetrics {
            acc_at_1: 0.0,
            acc_at_3: 0.0,
            mrr_at_10: 0.0,
            ndcg_at_10: 0.0,
            average_precision: 0.0,
            first_relevant_rank,
        }
    }

    #[test]
    fn table_for_a_single_model() {
        let r = Report {
            model: "tiny".into(),
            metrics: metrics(0.7),
            compare_to: None,
            baseline: None,
            comparison: None,
            ece: Some(0.0312),
            baseline_ece: None,
            window: Some(256),
            baseline_window: None,
        };
        let t = render_table(&r);
        assert!(
            t.starts_with("model: tiny  (120 queries, 95% bootstrap CI)\n"),
            "{t}"
        );
        assert!(t.contains("acc@1     0.7000  [0.6500, 0.7500]\n"), "{t}");
        assert!(t.contains("nDCG@10   0.8200  [0.7800, 0.8600]\n"), "{t}");
        assert!(t.contains("MAP       0.7900  [0.7400, 0.8400]\n"), "{t}");
        assert!(
            t.contains("ECE       0.0312  (expected calibration error"),
            "{t}"
        );
        assert!(
            t.contains("window       256  (tokens per input the model read)\n"),
            "{t}"
        );
        assert!(!t.contains("McNemar"));
    }

    #[test]
    fn table_with_a_comparison() {
        let zero = est(0.0, -0.01, 0.01);
        let comparison = Comparison {
            accuracy_at_1_diff: est(0.1, 0.03, 0.17),
            accuracy_at_3_diff: zero.clone(),
            mrr_at_10_diff: zero.clone(),
            ndcg_at_10_diff: zero.clone(),
            map_diff: est(-0.02, -0.05, 0.01),
            b_only_correct: 23,
            a_only_correct: 9,
            mcnemar_p: 0.020062,
        };
        let r = Report {
            model: "tuned".into(),
            metrics: metrics(0.7),
            compare_to: Some("base".into()),
            baseline: Some(metrics(0.6)),
            comparison: Some(comparison.clone()),
            ece: Some(0.05),
            baseline_ece: Some(0.4),
            window: Some(256),
            baseline_window: Some(256),
        };
        let t = render_table(&r);
        assert!(t.contains("model (B): tuned\nbaseline (A): base\n"), "{t}");
        assert!(
            t.contains("acc@1      0.6000   0.7000  +0.1000  [+0.0300, +0.1700]\n"),
            "{t}"
        );
        assert!(
            t.contains("MAP        0.7900   0.7900  -0.0200  [-0.0500, +0.0100]\n"),
            "{t}"
        );
        assert!(t.contains("ECE        0.4000   0.0500  (expected"), "{t}");
        assert!(
            t.contains("window        256      256  (tokens per input each model read)\n"),
            "{t}"
        );
        assert!(
            t.ends_with("acc@1: B right only 23, A right only 9, exact McNemar p = 0.0201\n"),
            "{t}"
        );

        let tiny_p = Report {
            baseline: None,
            baseline_ece: None,
            window: Some(384),
            comparison: Some(Comparison {
                mcnemar_p: 3.2e-9,
                ..comparison
            }),
            ..r
        };
        let t = render_table(&tiny_p);
        assert!(t.contains("acc@1           -   0.7000  +0.1000"), "{t}");
        assert!(t.contains("exact McNemar p = 3.20e-9"), "{t}");
        assert!(t.contains("ECE             -   0.0500"), "{t}");
        assert!(
            t.contains("window        256      384  (tokens per input; unequal"),
            "{t}"
        );
    }

    #[test]
    fn csv_single_model() {
        let csv = ranks_csv("base", &[rank(1), rank(4)], None);
        assert_eq!(csv, "query,first_relevant_rank_base\n0,1\n1,4\n");
    }

    #[test]
    fn csv_two_models_with_awkward_labels() {
        let a = [rank(2), rank(1), rank(11)];
        let b = [rank(1), rank(1)];
        let csv = ranks_csv("base, v1", &a, Some(("say \"hi\"", &b)));
        assert_eq!(
            csv,
            "query,\"first_relevant_rank_base, v1\",\"first_relevant_rank_say \"\"hi\"\"\"\n0,2,1\n1,1,1\n2,11,\n"
        );
    }

    #[test]
    fn retrieval_csv_has_a_row_per_query_and_system_with_quoted_names() {
        let m = |v: f64| RetrievalMetrics {
            ndcg_at_10: v,
            recall_at_10: v,
            recall_at_100: v,
            mrr_at_10: v,
            map_at_100: v,
        };
        let summary = crate::summarize_retrieval(&[m(0.5)], &crate::Bootstrap::default());
        let system = |name: &str, v: f64| System {
            name: name.into(),
            window: None,
            metrics: summary.clone(),
            per_query: vec![m(v), m(1.0)],
        };
        let r = RetrievalReport {
            collection: "c".into(),
            split: "test".into(),
            queries: 2,
            corpus_docs: 9,
            first_stage: "bm25".into(),
            top_k: 100,
            systems: vec![system("bm25", 0.25), system("a,b", 0.5)],
            comparisons: Vec::new(),
            query_ids: vec!["q1".into(), "q\"2".into()],
        };
        let csv = retrieval_csv(&r);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + 2 * 2, "{csv}");
        assert_eq!(lines[1], "q1,bm25,0.25,0.25,0.25,0.25,0.25");
        assert_eq!(lines[4], "\"q\"\"2\",\"a,b\",1,1,1,1,1");
        assert!(render_retrieval(&r).contains("| a,b | - | 0.500 ["));
    }

    #[test]
    fn report_round_trips_through_json() {
        let r = Report {
            model: "tiny".into(),
            metrics: metrics(0.7),
            compare_to: None,
            baseline: None,
            comparison: None,
            ece: Some(0.125),
            baseline_ece: None,
            window: Some(128),
            baseline_window: None,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
        // A report written before the calibration error and the window were recorded still loads.
        let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
        for field in ["ece", "baseline_ece", "window", "baseline_window"] {
            old.as_object_mut().unwrap().remove(field);
        }
        let old: Report = serde_json::from_value(old).unwrap();
        assert_eq!((old.ece, old.window), (None, None));
    }
}
