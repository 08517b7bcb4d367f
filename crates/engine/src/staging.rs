//! Who owns what in `staging/`, so that cleaning up never removes a model that another process is
//! about to publish.
//!
//! The process writing a staging directory holds an advisory lock (flock) on it from its
//! creation until it publishes the model or dies, and names itself in an `owner` file inside (its
//! pid, for the error a second writer gets). The kernel drops the lock when its holder dies, so a
//! sweep removes exactly what no live process holds: a dead writer's directory, a deleted model
//! renamed aside (`<id>.removing`), anything else. Creating a directory, sweeping and removing
//! each hold a lock on `staging/` itself, so a sweep never finds a directory between its creation
//! and its writer's lock, nor one that a delete is still removing.
use std::fs::{self, File, TryLockError};
use std::io;
use std::path::Path;

/// The file in a staging directory that names its writer's process id.
const OWNER: &str = "owner";

/// The suffix of a directory renamed aside to be removed; no process holds one, so the next sweep
/// finishes removing it if its remover died.
pub(crate) const REMOVING: &str = ".removing";

/// Waits for, then holds until dropped, the lock on the staging root itself.
pub(crate) fn lock_root(root: &Path) -> io::Result<File> {
    let lock = File::open(root)?;
    lock.lock()?;
    Ok(lock)
}

/// Locks `path` for this process if no other process holds it; `None` if one does.
fn try_hold(path: &Path) -> io::Result<Option<File>> {
    let file = File::open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Creates the staging directory `dir` for this process and locks it; the lock lasts as long as
/// the returned file. A directory left by a dead writer is emptied and taken over. Fails with
/// `WouldBlock` when a live process holds it (see [`owner`]).
pub(crate) fn claim(dir: &Path) -> io::Result<File> {
    let root = dir
        .parent()
        .expect("a staging directory lies in the staging root");
    let _root = lock_root(root)?;
    if let Err(e) = fs::create_dir(dir) {
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    let lock = try_hold(dir)?.ok_or(io::ErrorKind::WouldBlock)?;
    for entry in fs::read_dir(dir)? {
        remove(&entry?.path())?;
    }
    fs::write(dir.join(OWNER), std::process::id().to_string())?;
    Ok(lock)
}

/// The process id that holds the staging directory `dir`, as its `owner` file says.
pub(crate) fn owner(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join(OWNER))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Removes everything in `root` that no live process holds. What cannot be removed (a read-only
/// disk) is left for a later sweep, with a warning.
pub(crate) fn sweep(root: &Path) -> io::Result<()> {
    let _root = lock_root(root)?;
    for entry in fs::read_dir(root)? {
        let path = entry?.path();
        // Taking its lock shows its writer dead; it is kept until the directory is gone.
        let _held = match try_hold(&path) {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                tracing::debug!(path = %path.display(), owner = ?owner(&path), "left to its live writer");
                continue;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot tell whether a live process writes this: {e}");
                continue;
            }
        };
        tracing::warn!(path = %path.display(), "removing an unfinished model or delete of a process that died");
        if let Err(e) = remove(&path) {
            tracing::warn!(path = %path.display(), "could not remove it: {e}");
        }
    }
    Ok(())
}

/// Removes a file, or a directory with everything in it.
fn remove(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}
