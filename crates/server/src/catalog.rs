//! The names the API answers to: the default model, its aliases (Cohere's model names among them,
//! so that code written for Cohere runs unchanged), and fine-tuned `<uuid>-ft` ids.
//!
//! A requested name never becomes a path: it is either one of the names configured here, or an id
//! that the registry checks against the `<uuid>-ft` pattern before it touches the disk.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use finerank_engine::{resolve, Precision, Registry};

use crate::config::Config;

/// Cohere's rerank models and its rerank fine-tuning base names.
const COHERE_NAMES: &[&str] = &[
    "rerank-v4.0-pro",
    "rerank-v4.0-fast",
    "rerank-v3.5",
    "rerank-english-v3.0",
    "rerank-multilingual-v3.0",
    "rerank-english-v2.0",
    "rerank-multilingual-v2.0",
    "english",
    "multilingual",
];

pub struct Catalog {
    default_name: String,
    /// What the operator gave, for the engine's `resolve`, and the directory it resolved to.
    default_reference: String,
    default_dir: PathBuf,
    /// Alias -> canonical name (the default model's name or a `<uuid>-ft` id).
    aliases: BTreeMap<String, String>,
    /// Canonical name -> its arithmetic, where --model-precision sets one.
    precisions: BTreeMap<String, Precision>,
    /// Every other model's.
    precision: Precision,
    registry: Registry,
}

/// Why a model could not be found.
#[derive(Debug)]
pub struct UnknownModel(pub String);

impl Catalog {
    pub fn new(cfg: &Config, registry: Registry) -> anyhow::Result<Catalog> {
        let (_, default_dir) = resolve(&cfg.default_model, &registry)?;
        let default_name = served_name(&cfg.default_model);
        let mut catalog = Catalog {
            default_reference: cfg.default_model.clone(),
            default_dir,
            aliases: BTreeMap::new(),
            precisions: BTreeMap::new(),
            precision: cfg.precision,
            registry,
            default_name,
        };
        if !cfg.no_cohere_aliases {
            for name in COHERE_NAMES.iter().filter(|&&n| n != catalog.default_name) {
                catalog
                    .aliases
                    .insert(name.to_string(), catalog.default_name.clone());
            }
        }
        for (alias, target) in &cfg.aliases {
            let canonical = catalog
                .canonical(target)
                .map_err(|UnknownModel(m)| anyhow::anyhow!("--alias {alias}={target}: {m}"))?;
            catalog.aliases.insert(alias.clone(), canonical);
        }
        for (model, precision) in &cfg.model_precisions {
            let canonical = catalog.canonical(model).map_err(|UnknownModel(m)| {
                anyhow::anyhow!("--model-precision {model}={precision}: {m}")
            })?;
            catalog.precisions.insert(canonical, *precision);
        }
        Ok(catalog)
    }

    pub fn default_name(&self) -> &str {
        &self.default_name
    }

    pub fn aliases(&self) -> &BTreeMap<String, String> {
        &self.aliases
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The canonical name behind a requested one, without touching the disk; whether a
    /// fine-tuned id exists is for [`Catalog::dir`] to say. No name means the default model.
    pub fn canonical(&self, requested: &str) -> Result<String, UnknownModel> {
        let requested = requested.trim();
        if requested.is_empty() || requested == self.default_name {
            return Ok(self.default_name.clone());
        }
        if let Some(target) = self.aliases.get(requested) {
            return Ok(target.clone());
        }
        if Registry::is_id(requested) {
            return Ok(requested.to_string());
        }
        Err(UnknownModel(format!(
            "model {requested:?} not found: use {:?}, one of its aliases, or a fine-tuned model id \
             (<id>-ft, for a fine-tuned model in STATUS_READY); GET /v1/models lists them",
            self.default_name
        )))
    }

    /// For a request that names one of Cohere's models and is answered by another model here, a
    /// warning that says which: the scores are not Cohere's model's, and the client should know.
    pub fn substitution(&self, requested: &str) -> Option<String> {
        let requested = requested.trim();
        let answering = self
            .aliases
            .get(requested)
            .filter(|_| COHERE_NAMES.contains(&requested))?;
        Some(format!(
            "{requested:?} is not served by Cohere's model here: this finerank server answered \
             with {answering:?}"
        ))
    }

    /// The arithmetic a canonical name is served in.
    pub fn precision(&self, canonical: &str) -> Precision {
        self.precisions
            .get(canonical)
            .copied()
            .unwrap_or(self.precision)
    }

    /// The reference the engine resolves for a canonical name (what training starts from).
    pub fn reference<'a>(&'a self, canonical: &'a str) -> &'a str {
        if canonical == self.default_name {
            &self.default_reference
        } else {
            canonical
        }
    }

    /// The checkpoint directory of a canonical name.
    pub fn dir(&self, canonical: &str) -> Result<PathBuf, UnknownModel> {
        if canonical == self.default_name {
            return Ok(self.default_dir.clone());
        }
        match self.registry.get(canonical) {
            Ok(Some((_, dir))) => Ok(dir),
            Ok(None) => Err(UnknownModel(format!(
                "model {canonical:?} not found: no fine-tuned model with that id is ready"
            ))),
            Err(e) => Err(UnknownModel(e.to_string())),
        }
    }
}

/// A model is served under the last component of its reference: "all-MiniLM-L6-v2" for the
/// embedded default, the id for `<uuid>-ft`, the directory's name for a checkpoint directory.
fn served_name(reference: &str) -> String {
    Path::new(reference).file_name().map_or_else(
        || reference.to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
