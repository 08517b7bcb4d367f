//! Models named by Hugging Face id (`org/name`, `org/name@revision`), as text-embeddings-inference
//! reads its `--model-id`: the Hugging Face cache first, then, unless offline, a download into
//! that cache through the `hf-hub` crate. The cache is the one the Python tools share
//! (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`):
//! `models--org--name/refs/<revision>` holds a commit hash, `snapshots/<commit>/` the files.
//!
//! Only what finerank reads is fetched: config.json, tokenizer.json, model.safetensors (or a
//! sharded checkpoint's index and shards, which are fetched and then refused: the loader reads one
//! file), the tokenizer's side files and sentence-transformers' module files. PyTorch pickles
//! (`pytorch_model.bin`) never are.
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use hf_hub::{HFClient, HFError};
use serde_json::Value;

/// Where the Hub is and how to reach it. [`HubSettings::from_env`] reads what the Python tools
/// read; tests build one by hand.
#[derive(Clone)]
pub struct HubSettings {
    /// The hub cache: the directory holding `models--org--name/`.
    pub cache_dir: PathBuf,
    /// The Hub's base URL, without a trailing slash.
    pub endpoint: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// No network: the cache or an error.
    pub offline: bool,
}

impl fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubSettings")
            .field("cache_dir", &self.cache_dir)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .finish()
    }
}

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// huggingface_hub's truthy values.
fn is_true(value: &str) -> bool {
    ["1", "on", "yes", "true"].contains(&value.trim().to_ascii_lowercase().as_str())
}

impl HubSettings {
    /// `HF_HUB_CACHE` (or `HUGGINGFACE_HUB_CACHE`), else `$HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`; `HF_ENDPOINT`;
    /// `HF_TOKEN`, else the file at `HF_TOKEN_PATH`, else `$HF_HOME/token` (what `hf auth login`
    /// writes), none under `HF_HUB_DISABLE_IMPLICIT_TOKEN`; `HF_HUB_OFFLINE` (or
    /// `TRANSFORMERS_OFFLINE`) set to 1/ON/YES/TRUE.
    pub fn from_env() -> HubSettings {
        HubSettings::from_vars(|name| std::env::var(name).ok())
    }

    /// [`HubSettings::from_env`] with the variables `var` gives (an empty one counts as unset),
    /// and the token files read from the disk.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> HubSettings {
        let env = |name: &str| var(name).filter(|v| !v.is_empty());
        let hf_home = env("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            env("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join("huggingface")
        });
        let cache_dir = env("HF_HUB_CACHE")
            .or_else(|| env("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let read_token = |path: &Path| {
            std::fs::read_to_string(path)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        };
        let token = match env("HF_HUB_DISABLE_IMPLICIT_TOKEN") {
            Some(_) => None,
            None => env("HF_TOKEN")
                .or_else(|| env("HF_TOKEN_PATH").and_then(|p| read_token(Path::new(&p))))
                .or_else(|| read_token(&hf_home.join("token"))),
        };
        let offline = env("HF_HUB_OFFLINE")
            .or_else(|| env("TRANSFORMERS_OFFLINE"))
            .is_some_and(|v| is_true(&v));
        HubSettings {
            cache_dir,
            endpoint: env("HF_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_ENDPOINT.into())
                .trim_end_matches('/')
                .to_string(),
            token,
            offline,
        }
    }
}

/// A model id as written: `org/name`, optionally `@revision` (a branch, tag or commit hash;
/// `refs/pr/<n>` for a pull request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HubId {
    pub repo: String,
    pub revision: String,
}

/// The Hub's rule for an org or repo name: letters, digits, `-`, `_`, `.`, neither starting nor
/// ending with `-` or `.`, without `--` or `..`, at most 96 characters.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 96
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
        && !s.contains("--")
        && !s.contains("..")
}

/// A revision is a path under `refs/` in the cache, so nothing that climbs out of it.
fn valid_revision(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && !s.contains('\\')
        && s.split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && s.chars().all(|c| !c.is_control() && c != ' ')
}

/// `org/name[@revision]`, or None when `reference` is not written as a Hub model id. A bare
/// `name` (the Hub's few un-namespaced legacy ids) is not taken for one.
pub(crate) fn parse_id(reference: &str) -> Option<HubId> {
    let (repo, revision) = match reference.split_once('@') {
        Some((repo, rev)) => (repo, rev),
        None => (reference, "main"),
    };
    let (org, name) = repo.split_once('/')?;
    (valid_name(org) && valid_name(name) && valid_revision(revision)).then(|| HubId {
        repo: repo.to_string(),
        revision: revision.to_string(),
    })
}

fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())
}

const CONFIG: &str = "config.json";
const TOKENIZER: &str = "tokenizer.json";
const WEIGHTS: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";
/// Fetched when the repository has them: the tokenizer's side files (a fine-tuned copy carries
/// them over, for transformers' slow tokenizers too) and sentence-transformers' configuration.
const OPTIONAL: &[&str] = &[
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
];
const MODULES: &str = "modules.json";

/// Why a model id did not give a checkpoint directory.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Offline, or the download failed: what is missing, where it goes, how to get it.
    #[error("{0}")]
    NotCached(Box<NotCached>),
    /// The repository, revision or access is wrong: the Hub said so.
    #[error(
        "model {reference:?}: no local directory by that name, and as a Hugging Face model id: \
         {message}"
    )]
    Refused { reference: String, message: String },
    /// The repository lacks a file finerank needs, or holds PyTorch weights only.
    #[error("model {reference:?} ({repo} at {revision}) {message}")]
    Unusable {
        reference: String,
        repo: String,
        revision: String,
        message: String,
    },
    /// A sharded safetensors checkpoint, which the loader does not read.
    #[error(
        "model {reference:?} is a sharded safetensors checkpoint ({INDEX} and {shards} shards, in \
         {dir}), and finerank reads a single model.safetensors: merge the shards into one \
         model.safetensors in a directory of your own (transformers: \
         AutoModelForSequenceClassification.from_pretrained(dir).save_pretrained(out, \
         max_shard_size=\"1000GB\"); or safetensors' load_file on each shard and one save_file), \
         put config.json and tokenizer.json beside it, and give that directory"
    )]
    Sharded {
        reference: String,
        dir: PathBuf,
        shards: usize,
    },
    #[error("the Hugging Face cache at {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The parts of the offline / failed-download error.
#[derive(Debug)]
pub struct NotCached {
    pub reference: String,
    pub repo: String,
    pub revision: String,
    /// Why the cache had to do: offline, or what went wrong downloading.
    pub cause: String,
    /// The files the checkpoint still needs.
    pub missing: Vec<String>,
    /// `<cache>/models--org--name`.
    pub repo_dir: PathBuf,
    /// The commit, when known (the cache's ref, or the Hub's answer): the files go in
    /// `snapshots/<commit>/`.
    pub commit: Option<String>,
}

impl fmt::Display for NotCached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let revision_flag = match self.revision.as_str() {
            "main" => String::new(),
            rev => format!(" --revision {rev}"),
        };
        write!(
            f,
            "model {:?}: no local directory by that name, and the Hugging Face model {} \
             (revision {}) is not in the cache, {}. Missing: {}. Put them in ",
            self.reference,
            self.repo,
            self.revision,
            self.cause,
            self.missing.join(", "),
        )?;
        let snapshots = self.repo_dir.join("snapshots");
        match &self.commit {
            Some(commit) if is_commit_hash(&self.revision) => {
                write!(f, "{}", snapshots.join(commit).display())?
            }
            Some(commit) => write!(
                f,
                "{} (the commit that {} names)",
                snapshots.join(commit).display(),
                self.repo_dir.join("refs").join(&self.revision).display()
            )?,
            None => write!(
                f,
                "{}/<commit>/ and that commit's hash in {}",
                snapshots.display(),
                self.repo_dir.join("refs").join(&self.revision).display()
            )?,
        }
        write!(
            f,
            ", as `hf download {repo}{revision_flag}` (or `huggingface-cli download \
             {repo}{revision_flag}`) does when it runs with this HF_HOME (or HF_HUB_CACHE) on a \
             machine that is online; or give a local directory holding config.json, \
             model.safetensors and tokenizer.json",
            repo = self.repo,
        )
    }
}

/// What a snapshot directory lacks, or that it is sharded.
enum Snapshot {
    Complete,
    Missing(Vec<String>),
    Sharded(usize),
}

/// The shard files an index names, in order, each once; None for an index that cannot be read
/// or names a file outside the snapshot.
fn shards_of(index: &Path) -> Option<Vec<String>> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(index).ok()?).ok()?;
    let mut shards = BTreeSet::new();
    for file in v.get("weight_map")?.as_object()?.values() {
        let file = file.as_str()?;
        if file.is_empty() || file.contains(['/', '\\']) || file.starts_with('.') {
            return None;
        }
        shards.insert(file.to_string());
    }
    Some(shards.into_iter().collect())
}

/// config.json, tokenizer.json and the weights: what makes a cached snapshot usable. The
/// optional files are fetched before these, so a snapshot that has them has the rest too.
fn check_snapshot(dir: &Path) -> Snapshot {
    let mut missing: Vec<String> = [CONFIG, TOKENIZER]
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .map(String::from)
        .collect();
    if !dir.join(WEIGHTS).is_file() {
        match dir
            .join(INDEX)
            .is_file()
            .then(|| shards_of(&dir.join(INDEX)))
        {
            Some(Some(shards)) => {
                let absent: Vec<String> = shards
                    .iter()
                    .filter(|s| !dir.join(s).is_file())
                    .cloned()
                    .collect();
                if missing.is_empty() && absent.is_empty() {
                    return Snapshot::Sharded(shards.len());
                }
                missing.extend(absent);
            }
            _ => missing.push(WEIGHTS.into()),
        }
    }
    match missing.is_empty() {
        true => Snapshot::Complete,
        false => Snapshot::Missing(missing),
    }
}

/// `models--org--name` under the cache.
fn repo_dir(settings: &HubSettings, repo: &str) -> PathBuf {
    settings
        .cache_dir
        .join(format!("models--{}", repo.replace('/', "--")))
}

/// The commit a revision names in the cache: itself for a commit hash, else `refs/<revision>`.
fn cached_commit(repo_dir: &Path, revision: &str) -> Option<String> {
    if is_commit_hash(revision) {
        return Some(revision.to_string());
    }
    let text = std::fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?;
    let commit = text.trim();
    is_commit_hash(commit).then(|| commit.to_string())
}

/// The checkpoint directory for a model id: the cached snapshot, else (online) a fresh download.
pub(crate) fn fetch(
    reference: &str,
    id: &HubId,
    settings: &HubSettings,
) -> Result<PathBuf, HubError> {
    let repo_dir = repo_dir(settings, &id.repo);
    let commit = cached_commit(&repo_dir, &id.revision);
    let mut missing = vec![CONFIG.to_string(), TOKENIZER.into(), WEIGHTS.into()];
    if let Some(commit) = &commit {
        let dir = repo_dir.join("snapshots").join(commit);
        match check_snapshot(&dir) {
            Snapshot::Complete => return Ok(dir),
            Snapshot::Sharded(shards) => {
                return Err(HubError::Sharded {
                    reference: reference.into(),
                    dir,
                    shards,
                })
            }
            Snapshot::Missing(files) => missing = files,
        }
    }
    let not_cached = |cause: String, missing: Vec<String>, commit: Option<String>| {
        HubError::NotCached(Box::new(NotCached {
            reference: reference.into(),
            repo: id.repo.clone(),
            revision: id.revision.clone(),
            cause,
            missing,
            repo_dir: repo_dir.clone(),
            commit,
        }))
    };
    if settings.offline {
        return Err(not_cached(
            "and HF_HUB_OFFLINE is set".into(),
            missing,
            commit,
        ));
    }
    Download {
        reference,
        id,
        settings,
        repo_dir: &repo_dir,
    }
    .run()
    .map_err(|failure| match failure {
        Failure::Error(e) => e,
        Failure::Network {
            cause,
            commit: known,
            wanted,
        } => {
            let commit = known.or(commit);
            let missing = match (&commit, wanted) {
                (Some(c), Some(wanted)) => {
                    let dir = repo_dir.join("snapshots").join(c);
                    wanted
                        .into_iter()
                        .filter(|f| !dir.join(f).is_file())
                        .collect()
                }
                _ => missing,
            };
            not_cached(
                format!(
                    "and downloading it from {} failed: {cause}",
                    settings.endpoint
                ),
                missing,
                commit,
            )
        }
    })
}

/// The message of an error and of each of its sources: reqwest's own says only "error sending
/// request".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

enum Failure {
    /// A definite answer (no such repository, an unusable one).
    Error(HubError),
    /// The Hub could not be reached or a transfer failed: the cache-or-download advice applies.
    Network {
        cause: String,
        commit: Option<String>,
        wanted: Option<Vec<String>>,
    },
}

struct Download<'a> {
    reference: &'a str,
    id: &'a HubId,
    settings: &'a HubSettings,
    repo_dir: &'a Path,
}

impl Download<'_> {
    fn refused(&self, message: String) -> Failure {
        Failure::Error(HubError::Refused {
            reference: self.reference.into(),
            message,
        })
    }

    fn unusable(&self, message: String) -> Failure {
        Failure::Error(HubError::Unusable {
            reference: self.reference.into(),
            repo: self.id.repo.clone(),
            revision: self.id.revision.clone(),
            message,
        })
    }

    /// What the Hub's answer to the repository lookup means here.
    fn lookup_failed(&self, e: HFError) -> Failure {
        let (repo, endpoint) = (&self.id.repo, &self.settings.endpoint);
        let token_hint = match self.settings.token {
            Some(_) => "the token sent (HF_TOKEN or the saved login) was not accepted for it",
            None => "if it is private or gated, set HF_TOKEN (or run `hf auth login`)",
        };
        // hf-hub takes any 404 to a revision's info for a missing revision; the Hub's error
        // code tells a missing repository apart (and unauthenticated, the Hub answers 401).
        let no_repo = match &e {
            HFError::AuthRequired { .. } | HFError::RepoNotFound { .. } => true,
            HFError::RevisionNotFound {
                context: Some(context),
                ..
            } => context.error_code.as_deref() == Some("RepoNotFound"),
            _ => false,
        };
        if no_repo {
            return self.refused(format!(
                "{endpoint} has no model repository {repo} that this client may read: check the \
                 spelling; {token_hint}"
            ));
        }
        match e {
            HFError::Forbidden { .. } => self.refused(format!(
                "{endpoint} refused access to {repo}: a gated model needs its terms accepted at \
                 {endpoint}/{repo}, and a token of that account; {token_hint}"
            )),
            HFError::RevisionNotFound { .. } => self.refused(format!(
                "{repo} has no revision {:?} (a branch, tag or commit hash) on {endpoint}",
                self.id.revision
            )),
            e => Failure::Network {
                cause: chain(&e),
                commit: None,
                wanted: None,
            },
        }
    }

    fn run(&self) -> Result<PathBuf, Failure> {
        let mut builder = HFClient::builder()
            .endpoint(&self.settings.endpoint)
            .cache_dir(&self.settings.cache_dir);
        if let Some(token) = &self.settings.token {
            builder = builder.token(token);
        }
        let client = builder.build_sync().map_err(|e| Failure::Network {
            cause: chain(&e),
            commit: None,
            wanted: None,
        })?;
        let (owner, name) = hf_hub::split_id(&self.id.repo);
        let repo = client.model(owner, name);
        let info = repo
            .info()
            .revision(self.id.revision.clone())
            .send()
            .map_err(|e| self.lookup_failed(e))?;
        let commit = info.sha.filter(|s| is_commit_hash(s)).ok_or_else(|| {
            self.refused(format!(
                "{} named no commit for revision {:?} of {}",
                self.settings.endpoint, self.id.revision, self.id.repo
            ))
        })?;
        let files: BTreeSet<String> = info
            .siblings
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.rfilename)
            .collect();
        let dir = self.repo_dir.join("snapshots").join(&commit);
        // As huggingface_hub does, the ref is written once the commit is known: a download cut
        // short leaves a snapshot that `check_snapshot` finds incomplete, and the error can name
        // it exactly.
        if !is_commit_hash(&self.id.revision) {
            let path = self.repo_dir.join("refs").join(&self.id.revision);
            let write = || {
                std::fs::create_dir_all(path.parent().expect("refs/<revision> has a parent"))?;
                std::fs::write(&path, &commit)
            };
            write().map_err(|error| Failure::Error(HubError::Io { path, error }))?;
        }

        // What the repository must have, checked before anything is fetched.
        let absent: Vec<&str> = [CONFIG, TOKENIZER]
            .into_iter()
            .filter(|f| !files.contains(*f))
            .collect();
        if !absent.is_empty() {
            return Err(self.unusable(format!(
                "has no {}: finerank reads a Hugging Face checkpoint's config.json and the \
                 tokenizers library's tokenizer.json (transformers' \
                 AutoTokenizer.from_pretrained(...).save_pretrained(dir) writes one)",
                absent.join(" and ")
            )));
        }
        let sharded = !files.contains(WEIGHTS) && files.contains(INDEX);
        if !files.contains(WEIGHTS) && !sharded {
            let pickles: Vec<&String> = files
                .iter()
                .filter(|f| !f.contains('/') && (f.ends_with(".bin") || f.ends_with(".pt")))
                .collect();
            return Err(self.unusable(match pickles.is_empty() {
                true => "has no model.safetensors: finerank reads safetensors weights".into(),
                false => format!(
                    "has PyTorch weights ({}) but no model.safetensors, and finerank reads \
                     safetensors only, never pickles. Convert them: with transformers, \
                     AutoModelForSequenceClassification.from_pretrained(\"{repo}\").\
                     save_pretrained(out) writes out/model.safetensors (add the tokenizer with \
                     AutoTokenizer's save_pretrained(out)), then give --model out; or look on \
                     the Hub for a safetensors pull request by the conversion bot and give \
                     {repo}@refs/pr/<n>",
                    pickles
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    repo = self.id.repo,
                ),
            }));
        }

        // Every file the checkpoint is known to need so far, for the error when one fails: the
        // modules' files join once modules.json is read, the shards once their index is.
        let optional: Vec<String> = OPTIONAL
            .iter()
            .filter(|f| files.contains(**f))
            .map(|f| f.to_string())
            .collect();
        let weights = if sharded { INDEX } else { WEIGHTS };
        let wanted = std::cell::RefCell::new(optional.clone());
        wanted
            .borrow_mut()
            .extend([TOKENIZER, CONFIG, weights].map(String::from));
        let get = |file: &str| -> Result<PathBuf, Failure> {
            tracing::info!(repo = %self.id.repo, %commit, file, "downloading from {}", self.settings.endpoint);
            repo.download_file()
                .filename(file)
                .revision(commit.clone())
                .send()
                .map_err(|e| match e {
                    HFError::Io(error) => Failure::Error(HubError::Io {
                        path: dir.clone(),
                        error,
                    }),
                    e => Failure::Network {
                        cause: format!("{file}: {}", chain(&e)),
                        commit: Some(commit.clone()),
                        wanted: Some(wanted.borrow().clone()),
                    },
                })
        };
        // The optional files first and the weights last, so that a snapshot holding config.json,
        // tokenizer.json and the weights (what `check_snapshot` asks for) is complete.
        for file in &optional {
            get(file)?;
        }
        if files.contains(MODULES) {
            let module_files = module_files(&dir, &files);
            wanted.borrow_mut().extend(module_files.iter().cloned());
            for file in &module_files {
                get(file)?;
            }
        }
        get(TOKENIZER)?;
        get(CONFIG)?;
        let index = get(weights)?;
        let shards = if sharded {
            let shards = shards_of(&index)
                .filter(|s| s.iter().all(|f| files.contains(f)))
                .ok_or_else(|| {
                    self.unusable(format!(
                        "has a {INDEX} whose weight_map does not name the repository's shard files"
                    ))
                })?;
            wanted.borrow_mut().extend(shards.iter().cloned());
            for shard in &shards {
                get(shard)?;
            }
            shards.len()
        } else {
            0
        };
        if sharded {
            return Err(Failure::Error(HubError::Sharded {
                reference: self.reference.into(),
                dir,
                shards,
            }));
        }
        Ok(dir)
    }
}

/// The files of the sentence-transformers modules that modules.json in `dir` lists (a Pooling,
/// Dense or Normalize folder): their JSON configuration and safetensors weights, never pickles.
fn module_files(dir: &Path, files: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for folder in finerank_model::module_folders(dir) {
        let prefix = format!("{folder}/");
        out.extend(
            files
                .iter()
                .filter(|f| {
                    f.strip_prefix(&prefix).is_some_and(|rest| {
                        !rest.contains('/')
                            && (rest.ends_with(".json") || rest.ends_with(".safetensors"))
                    })
                })
                .cloned(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_org_slash_name_with_an_optional_revision() {
        let id = |r: &str| parse_id(r).map(|i| (i.repo, i.revision));
        assert_eq!(
            id("BAAI/bge-reranker-v2-m3"),
            Some(("BAAI/bge-reranker-v2-m3".into(), "main".into()))
        );
        assert_eq!(
            id("org/name@v1.0"),
            Some(("org/name".into(), "v1.0".into()))
        );
        assert_eq!(
            id("org/name@refs/pr/3"),
            Some(("org/name".into(), "refs/pr/3".into()))
        );
        for not_an_id in [
            "name",
            "./model",
            "../x/y",
            "/abs/path",
            "org/name/extra",
            "org/name@",
            "org/name@../../x",
            "org/name@refs//x",
            "org/-name",
            "org/na..me",
            "org/na--me",
            "org name/x",
            "org/name@a b",
        ] {
            assert_eq!(id(not_an_id), None, "{not_an_id}");
        }
    }

    #[test]
    fn offline_values_are_huggingface_hubs_truthy_ones() {
        for v in ["1", "ON", "yes", "True"] {
            assert!(is_true(v), "{v}");
        }
        for v in ["0", "off", "no", "false", ""] {
            assert!(!is_true(v), "{v}");
        }
    }
}
