//! A run's resume state in the registry's shared store (`--store`), so that a worker on another
//! machine resumes where a worker that died left off: `resume/<id>/` holds the files of the last
//! state a worker saved, `state.json` last. Each state file's name says its step, so a file is
//! never rewritten in place; `state.json` is one object, replaced whole, so a reader sees the
//! last complete state, and the files of older states go only after it has been replaced.
//! Without a shared store these do nothing: workers on one machine share the data directory.
use std::fs;
use std::path::Path;

use finerank_engine::Registry;

use crate::job::resume_dir;
use crate::resume::{resume_step, saved_files, step_of, STATE};

fn prefix(id: &str) -> String {
    format!("resume/{id}")
}

/// Uploads the state that run `id` just saved in its resume directory.
pub fn share_state(registry: &Registry, id: &str) -> Result<(), String> {
    let Some(store) = registry.store() else {
        return Ok(());
    };
    let dir = resume_dir(registry, id).map_err(|e| e.to_string())?;
    let Some(files) = saved_files(&dir)? else {
        return Ok(());
    };
    let prefix = prefix(id);
    let there: Vec<String> = (store.list(&prefix).map_err(|e| e.to_string())?)
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    for file in files.iter().filter(|f| !there.contains(f)) {
        store
            .upload(&dir.join(file), &format!("{prefix}/{file}"))
            .map_err(|e| e.to_string())?;
    }
    let state = dir.join(STATE);
    let text = fs::read(&state).map_err(|e| format!("{}: {e}", state.display()))?;
    store
        .put(&format!("{prefix}/{STATE}"), text)
        .map_err(|e| e.to_string())?;
    for old in there.iter().filter(|k| *k != STATE && !files.contains(k)) {
        store
            .delete(&format!("{prefix}/{old}"))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Replaces the local resume state of run `id` with the shared store's last one, if there is
/// one; true if there was. A local state stays when the store has none.
pub fn fetch_state(registry: &Registry, id: &str) -> Result<bool, String> {
    let Some(store) = registry.store() else {
        return Ok(false);
    };
    let prefix = prefix(id);
    let Some(state) = store
        .get(&format!("{prefix}/{STATE}"))
        .map_err(|e| e.to_string())?
    else {
        return Ok(false);
    };
    let dir = resume_dir(registry, id).map_err(|e| e.to_string())?;
    let fetching = dir.with_extension("fetching");
    remove_dir(&fetching)?;
    fs::create_dir_all(&fetching).map_err(|e| format!("{}: {e}", fetching.display()))?;
    let path = fetching.join(STATE);
    fs::write(&path, state).map_err(|e| format!("{}: {e}", path.display()))?;
    for file in saved_files(&fetching)?.unwrap_or_default() {
        store
            .download(&format!("{prefix}/{file}"), &fetching.join(&file))
            .map_err(|e| e.to_string())?;
    }
    remove_dir(&dir)?;
    fs::rename(&fetching, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(true)
}

/// The step run `id` resumes from: the shared store's last state, else the local one; `None`
/// when nothing is saved.
pub fn saved_step(registry: &Registry, id: &str) -> Result<Option<usize>, String> {
    if let Some(store) = registry.store() {
        let key = format!("{}/{STATE}", prefix(id));
        if let Some(text) = store.get(&key).map_err(|e| e.to_string())? {
            return step_of(&text, &format!("{}/{key}", store.url())).map(Some);
        }
    }
    resume_step(&resume_dir(registry, id).map_err(|e| e.to_string())?)
}

/// Removes run `id`'s resume state, here and in the shared store.
pub fn remove_state(registry: &Registry, id: &str) -> Result<(), String> {
    remove_dir(&resume_dir(registry, id).map_err(|e| e.to_string())?)?;
    match registry.store() {
        Some(store) => store.delete_all(&prefix(id)).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

fn remove_dir(dir: &Path) -> Result<(), String> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("removing {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}
