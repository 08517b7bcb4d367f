//! Copies of the default model for tests to change, as users' own checkpoints differ from it.
use std::path::{Path, PathBuf};

/// Copies the directory `from` to `to`, everything in it.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        match path.is_dir() {
            true => copy_dir(&path, &dest),
            false => {
                std::fs::copy(&path, &dest).unwrap();
            }
        }
    }
}

/// Where the bootstrap installed the default model.
pub fn installed_default_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/default-model")
}

/// The default model's weights saved with a `max_seq_length` of `window` tokens (its own is 256),
/// as a fine-tune with `--max-length` saves them, in `dir/name`.
pub fn default_model_with_window(dir: &Path, name: &str, window: usize) -> PathBuf {
    let copy = dir.join(name);
    copy_dir(&installed_default_model(), &copy);
    let config = copy.join("sentence_bert_config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    v["max_seq_length"] = window.into();
    std::fs::write(&config, v.to_string()).unwrap();
    copy
}
