//! Scoring queries against documents with a loaded model: the model's raw score first (a
//! cross-encoder's logit, a bi-encoder's cosine), then its calibration's relevance score.
use std::borrow::Cow;
use std::path::Path;

use finerank_eval::by_score_desc;
use finerank_model::{Family, Kind, LoadOptions, Model, Role};
use finerank_text::{
    best_chunk_scores, chunk_singles, plan_batches, ChunkPolicy, Encoded, PairChunks, PairFormat,
    PromptTemplate, TextTokenizer,
};
use serde::{Deserialize, Serialize};

use crate::calibration::check_for;
use crate::{Calibration, EngineError};

/// One query and the documents to score against it.
#[derive(Clone, Debug)]
pub struct Group<'a> {
    pub query: &'a str,
    pub documents: Vec<&'a str>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GroupScores {
    /// One relevance score in [0, 1] per document, in the documents' order: the model's
    /// calibration of its raw score.
    pub scores: Vec<f32>,
    /// The model's own score of each document before calibration: a cross-encoder's logit, a
    /// bi-encoder's cosine. A long document's is its best window's.
    pub raw_scores: Vec<f32>,
    /// The query was longer than the model allows and was cut.
    pub query_truncated: bool,
}

#[derive(Clone, Debug)]
pub struct ScoreOptions {
    /// Tokens per model input; `None` uses the model's own window.
    pub max_len: Option<usize>,
    /// Windows scored per document (Cohere's `max_chunks_per_doc`); `None` scores them all.
    pub max_chunks_per_doc: Option<usize>,
    /// Padded tokens per forward pass: bounds memory whatever the documents' lengths.
    pub batch_tokens: usize,
    /// Inputs per forward pass, whatever their length.
    pub max_batch: usize,
    /// What an LLM reranker is asked to judge, in place of its own instruction (see
    /// [`Reranker::instruction`]); a model that takes none ignores it, so front ends refuse it
    /// there first.
    pub instruction: Option<String>,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            max_len: None,
            max_chunks_per_doc: None,
            batch_tokens: 16_384,
            max_batch: 128,
            instruction: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    pub index: usize,
    pub relevance_score: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RerankOutput {
    /// Best first by raw score (see [`rank_by_raw`]).
    pub results: Vec<Ranked>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub query_truncated: bool,
}

/// Where a fine-tuned LLM reranker keeps the instruction it was trained with, beside its
/// weights: `{"instruction": "..."}`. Scoring uses it when a request gives none.
pub const INSTRUCTION_FILE: &str = "instruction.json";

/// A model with its tokenizer and calibration, ready to score.
pub struct Reranker {
    name: String,
    model: Model,
    tokenizer: TextTokenizer,
    /// How a pair becomes the model's input; an LLM reranker's carries its instruction.
    format: PairFormat,
    calibration: Calibration,
}

/// How a family reads a pair: an LLM reranker through its model card's prompt.
fn pair_format(family: Family) -> PairFormat {
    match family {
        Family::Qwen2 => PairFormat::Prompt(PromptTemplate::mxbai_rerank_v2()),
        Family::Qwen3 => PairFormat::Prompt(PromptTemplate::qwen3_reranker()),
        Family::Bert
        | Family::XlmRoberta
        | Family::ModernBert
        | Family::DebertaV2
        | Family::MpNet
        | Family::Gte => PairFormat::Segments,
    }
}

#[derive(Serialize, Deserialize)]
struct InstructionFile {
    instruction: String,
}

impl Reranker {
    /// Loads the checkpoint in `dir`, with the `calibration.json` beside it when there is one.
    pub fn load(name: &str, dir: &Path, opts: &LoadOptions) -> Result<Reranker, EngineError> {
        Reranker::with_model(name, dir, opts, Model::load(dir, opts)?)
    }

    /// Loads the LoRA adapter directory `dir` over `base`, which holds the checkpoint the
    /// adapter names, sharing its weights (see [`Model::load_adapter_over`]).
    pub fn load_adapter_over(
        name: &str,
        dir: &Path,
        opts: &LoadOptions,
        base: &Reranker,
    ) -> Result<Reranker, EngineError> {
        let model = Model::load_adapter_over(dir, opts, &base.model)?;
        Reranker::with_model(name, dir, opts, model)
    }

    /// `model`, loaded from `dir`, with the tokenizer and calibration there.
    fn with_model(
        name: &str,
        dir: &Path,
        opts: &LoadOptions,
        model: Model,
    ) -> Result<Reranker, EngineError> {
        let tokenizer = TextTokenizer::from_file(&finerank_model::tokenizer_path(dir))?;
        let kind = model.kind();
        let calibration = Calibration::read(dir, kind, opts.kind.is_some())?
            .unwrap_or_else(|| Calibration::default_for(kind));
        let mut format = pair_format(model.family());
        let path = dir.join(INSTRUCTION_FILE);
        if format.takes_instruction() && path.is_file() {
            let bad = |e: String| EngineError::Instruction(format!("{}: {e}", path.display()));
            let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
            let file: InstructionFile =
                serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
            format = format.with_instruction(&file.instruction);
        }
        Ok(Reranker {
            name: name.to_string(),
            model,
            tokenizer,
            format,
            calibration,
        })
    }

    /// The instruction an LLM reranker judges pairs by when a request gives none: the one it was
    /// fine-tuned with, else its model card's. `None` for a model that takes no instruction.
    pub fn instruction(&self) -> Option<&str> {
        match &self.format {
            PairFormat::Prompt(t) => Some(&t.instruction),
            PairFormat::Segments => None,
        }
    }

    /// Refuses an instruction for a model that takes none, naming the model.
    pub fn check_instruction(&self, instruction: Option<&str>) -> Result<(), EngineError> {
        match instruction {
            Some(_) if !self.format.takes_instruction() => Err(EngineError::Instruction(format!(
                "model {} ({}) takes no instruction; only LLM rerankers (Qwen3, mxbai-rerank-v2) \
                 do",
                self.name,
                self.model.family().name()
            ))),
            _ => Ok(()),
        }
    }

    /// Judges pairs by `instruction` from now on (fine-tuning with one); refused for a model
    /// that takes none.
    pub fn set_instruction(&mut self, instruction: &str) -> Result<(), EngineError> {
        self.check_instruction(Some(instruction))?;
        self.format = self.format.with_instruction(instruction);
        Ok(())
    }

    /// Writes [`INSTRUCTION_FILE`] into `dir` for a model that takes an instruction, so that
    /// the model saved there scores as this one does.
    pub fn write_instruction(&self, dir: &Path) -> Result<(), EngineError> {
        let Some(instruction) = self.instruction() else {
            return Ok(());
        };
        let path = dir.join(INSTRUCTION_FILE);
        let file = InstructionFile {
            instruction: instruction.to_string(),
        };
        let text = serde_json::to_string_pretty(&file).expect("a string serializes");
        std::fs::write(&path, text)
            .map_err(|e| EngineError::Instruction(format!("{}: {e}", path.display())))
    }

    /// How this model reads a pair, with `instruction` in place of its own when given.
    fn format_for(&self, instruction: Option<&str>) -> Cow<'_, PairFormat> {
        match instruction {
            Some(i) => Cow::Owned(self.format.with_instruction(i)),
            None => Cow::Borrowed(&self.format),
        }
    }

    /// A cross-encoder's inputs for one query against `documents`, chunked under `policy`, as
    /// this model reads a pair (its tokenizer's pair template, or an LLM reranker's prompt):
    /// what training and scoring both feed it.
    pub fn pair_inputs(&self, query: &str, documents: &[&str], policy: &ChunkPolicy) -> PairChunks {
        self.format.chunk(&self.tokenizer, query, documents, policy)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same model under another name: the label a report gives it.
    pub fn named(mut self, name: String) -> Reranker {
        self.name = name;
        self
    }

    pub fn kind(&self) -> Kind {
        self.model.kind()
    }

    pub fn window(&self) -> usize {
        self.model.window()
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// How raw scores become relevance scores.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Scores with `calibration` from now on; refused when it does not fit this model's kind.
    pub fn set_calibration(&mut self, calibration: Calibration) -> Result<(), EngineError> {
        check_for(&calibration, self.kind())?;
        self.calibration = calibration;
        Ok(())
    }

    /// One bi-encoder input: the model's prompt for `role`, then `text`, cut to `max_len` tokens
    /// in all, as sentence-transformers' `encode` reads `prompt + text`; and whether `text` was
    /// cut. Training and scoring both read a bi-encoder's texts through this.
    pub fn encode_for(&self, role: Role, text: &str, max_len: usize) -> (Encoded, bool) {
        let (prompt, mut ids) = self
            .tokenizer
            .prompted_tokens(self.model.prompt(role), text);
        let room = max_len.saturating_sub(self.tokenizer.special_tokens(false) + prompt.len());
        let cut = ids.len() > room;
        ids.truncate(room);
        let prompted: Vec<u32> = prompt.into_iter().chain(ids).collect();
        (self.tokenizer.single_from_tokens(&prompted), cut)
    }

    /// Counts the tokens of a (query, passage) pair as this model reads them. The counter only
    /// holds the tokenizer, so it is `Sync` and a data review may run it in parallel.
    pub fn pair_counter(&self) -> impl Fn(&str, &str) -> usize + Sync + '_ {
        let (tok, kind, format) = (&self.tokenizer, self.kind(), &self.format);
        move |query, passage| match kind {
            Kind::CrossEncoder => format.count(tok, query, passage),
            // A bi-encoder reads them apart; the longer of the two is what risks truncation.
            Kind::BiEncoder => {
                tok.tokens(query).len().max(tok.tokens(passage).len()) + tok.special_tokens(false)
            }
        }
    }

    /// Tokens per input when asked for `max_len` (`None`: the model's own window), never past
    /// the position table.
    pub fn window_for(&self, max_len: Option<usize>) -> usize {
        max_len
            .unwrap_or(self.window())
            .min(self.model.max_positions())
    }

    fn policy(&self, opts: &ScoreOptions) -> ChunkPolicy {
        let max_len = self.window_for(opts.max_len);
        ChunkPolicy {
            max_chunks: opts.max_chunks_per_doc,
            ..ChunkPolicy::new(max_len)
        }
    }

    /// Scores every group. All groups' inputs share one length-sorted, token-budget batch plan,
    /// so many small groups cost as little as one large one.
    pub fn score(&self, groups: &[Group], opts: &ScoreOptions) -> Vec<GroupScores> {
        let raw = match self.kind() {
            Kind::CrossEncoder => self.raw_pairs(groups, opts),
            Kind::BiEncoder => self.raw_embeddings(groups, opts),
        };
        raw.into_iter()
            .map(|(raw_scores, query_truncated)| GroupScores {
                scores: raw_scores
                    .iter()
                    .map(|&r| self.calibration.score(r))
                    .collect(),
                raw_scores,
                query_truncated,
            })
            .collect()
    }

    /// Each group's raw scores (best window per document) and whether its query was cut.
    fn raw_pairs(&self, groups: &[Group], opts: &ScoreOptions) -> Vec<(Vec<f32>, bool)> {
        let policy = self.policy(opts);
        let format = self.format_for(opts.instruction.as_deref());
        let chunks: Vec<_> = groups
            .iter()
            .map(|g| format.chunk(&self.tokenizer, g.query, &g.documents, &policy))
            .collect();
        let inputs: Vec<&Encoded> = chunks.iter().flat_map(|c| c.inputs.iter()).collect();
        let logits = self.run(&inputs, opts);
        let mut at = 0;
        groups
            .iter()
            .zip(&chunks)
            .map(|(g, c)| {
                let chunk_logits: Vec<f32> = logits[at..at + c.inputs.len()]
                    .iter()
                    .map(|l| l[0])
                    .collect();
                at += c.inputs.len();
                (
                    best_chunk_scores(&chunk_logits, &c.doc_of, g.documents.len()),
                    c.query_truncated,
                )
            })
            .collect()
    }

    fn raw_embeddings(&self, groups: &[Group], opts: &ScoreOptions) -> Vec<(Vec<f32>, bool)> {
        let policy = self.policy(opts);
        let (queries, truncated): (Vec<Encoded>, Vec<bool>) = groups
            .iter()
            .map(|g| self.encode_for(Role::Query, g.query, policy.max_len))
            .unzip();
        let docs: Vec<&str> = groups
            .iter()
            .flat_map(|g| g.documents.iter().copied())
            .collect();
        let (doc_inputs, owner) = chunk_singles(
            &self.tokenizer,
            &docs,
            self.model.prompt(Role::Document),
            &policy,
        );
        let inputs: Vec<&Encoded> = queries.iter().chain(&doc_inputs).collect();
        let embeddings = self.run(&inputs, opts);
        let (q_emb, d_emb) = embeddings.split_at(groups.len());
        let mut first_doc = 0;
        let mut chunk = 0;
        groups
            .iter()
            .enumerate()
            .map(|(gi, g)| {
                let end_doc = first_doc + g.documents.len();
                let start_chunk = chunk;
                while chunk < owner.len() && owner[chunk] < end_doc {
                    chunk += 1;
                }
                let sims: Vec<f32> = d_emb[start_chunk..chunk]
                    .iter()
                    .map(|d| dot(&q_emb[gi], d))
                    .collect();
                let doc_of: Vec<usize> = owner[start_chunk..chunk]
                    .iter()
                    .map(|o| o - first_doc)
                    .collect();
                first_doc = end_doc;
                (
                    best_chunk_scores(&sims, &doc_of, g.documents.len()),
                    truncated[gi],
                )
            })
            .collect()
    }

    /// A bi-encoder's unit-length embeddings of `texts` as queries or documents, each read up
    /// to the window as sentence-transformers' `encode` reads it (cut, not chunked, after the
    /// role's prompt): what dense retrieval over a corpus compares by dot product. `None` for a
    /// cross-encoder, which has no embeddings.
    pub fn embed(&self, texts: &[&str], role: Role, opts: &ScoreOptions) -> Option<Vec<Vec<f32>>> {
        if self.kind() != Kind::BiEncoder {
            return None;
        }
        let max_len = self.policy(opts).max_len;
        let inputs: Vec<Encoded> = texts
            .iter()
            .map(|t| self.encode_for(role, t, max_len).0)
            .collect();
        let refs: Vec<&Encoded> = inputs.iter().collect();
        Some(self.run(&refs, opts))
    }

    /// Runs the model over `inputs` in length-sorted batches and returns outputs in input order.
    fn run(&self, inputs: &[&Encoded], opts: &ScoreOptions) -> Vec<Vec<f32>> {
        let lengths: Vec<usize> = inputs.iter().map(|e| e.len()).collect();
        let mut out = vec![Vec::new(); inputs.len()];
        for batch in plan_batches(&lengths, opts.batch_tokens, opts.max_batch) {
            let batch_inputs: Vec<&Encoded> = batch.iter().map(|&i| inputs[i]).collect();
            for (i, row) in batch.iter().zip(self.model.infer(&batch_inputs)) {
                out[*i] = row;
            }
        }
        out
    }

    /// Scores one query's documents and ranks them by raw score, best first, keeping `top_n`.
    pub fn rerank(
        &self,
        query: &str,
        documents: &[&str],
        top_n: Option<usize>,
        opts: &ScoreOptions,
    ) -> RerankOutput {
        let group = Group {
            query,
            documents: documents.to_vec(),
        };
        let scored = self.score(std::slice::from_ref(&group), opts).remove(0);
        RerankOutput {
            results: rank_by_raw(&scored.raw_scores, &scored.scores, top_n),
            query_truncated: scored.query_truncated,
        }
    }
}

/// Documents ranked by raw score, each with its relevance score (`scores[i]` is the calibration
/// of `raw_scores[i]`), keeping `top_n`. The order is the model's own: where a calibration's
/// sigmoid saturates, distinct raw scores round to one relevance score, and ranking those would
/// leave the tie to the documents' order.
pub fn rank_by_raw(raw_scores: &[f32], scores: &[f32], top_n: Option<usize>) -> Vec<Ranked> {
    let mut results = rank(raw_scores, top_n);
    for r in &mut results {
        r.relevance_score = scores[r.index];
    }
    results
}

/// Indices best first in `finerank_eval::by_score_desc`'s order: a NaN or infinite score (a
/// broken model output) after every finite one, so it never ranks a document first. A stable
/// sort keeps ties, there being no relevance to break them by, in document order.
fn rank(scores: &[f32], top_n: Option<usize>) -> Vec<Ranked> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| by_score_desc(scores[a].into(), scores[b].into()));
    order.truncate(top_n.unwrap_or(scores.len()));
    order
        .into_iter()
        .map(|index| Ranked {
            index,
            relevance_score: scores[index],
        })
        .collect()
}

/// The similarity of two unit-length embeddings (their cosine).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use finerank_eval::by_score_desc;
    use proptest::prelude::*;

    use super::rank;

    #[test]
    fn a_broken_score_never_ranks_first() {
        for bad in [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let ranked = rank(&[bad, -3.0, 0.5], None);
            let order: Vec<usize> = ranked.iter().map(|r| r.index).collect();
            assert_eq!(order, [2, 1, 0], "{bad}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// `rank` gives min(top_n, n) results: distinct document indices, each with its own
        /// score, best first (NaN and infinities after every finite score), ties in document
        /// order, and no document left out that beats one kept.
        #[test]
        fn rank_keeps_top_n_consistent(
            // Any floats, and small whole ones so that ties are common.
            scores in prop::collection::vec(
                prop_oneof![any::<f32>(), (0..4u8).prop_map(f32::from)],
                0..40,
            ),
            top_n in prop::option::of(0..50usize),
        ) {
            let ranked = rank(&scores, top_n);
            prop_assert_eq!(ranked.len(), top_n.unwrap_or(scores.len()).min(scores.len()));
            let mut kept = vec![false; scores.len()];
            for r in &ranked {
                let twice = std::mem::replace(&mut kept[r.index], true);
                prop_assert!(!twice, "index {} twice", r.index);
                prop_assert_eq!(r.relevance_score.to_bits(), scores[r.index].to_bits());
            }
            let order = |a: f32, b: f32| by_score_desc(a.into(), b.into());
            for pair in ranked.windows(2) {
                let order = order(pair[0].relevance_score, pair[1].relevance_score);
                prop_assert!(order.is_lt() || (order.is_eq() && pair[0].index < pair[1].index));
            }
            if let Some(last) = ranked.last() {
                for (i, &s) in scores.iter().enumerate().filter(|&(i, _)| !kept[i]) {
                    let order = order(s, last.relevance_score);
                    let behind = order.is_gt() || (order.is_eq() && i > last.index);
                    prop_assert!(behind, "{} left out", i);
                }
            }
        }
    }
}
