//! Cache entries appear whole or not at all: each is written under a temporary name beside its
//! final one and renamed into place, and temporaries left by builders that died are removed.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// `dir/.<name>.<pid>.<n>.tmp`: the pid says whether its builder still runs, `n` keeps this
/// process's concurrent builders apart.
pub(crate) fn temp_path(dir: &Path, name: &str) -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Removes the temporaries for `name` whose process no longer runs (a crashed or killed build);
/// a live builder's are left alone.
pub(crate) fn remove_stale(dir: &Path, name: &str) {
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let pid = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix)?.strip_suffix(".tmp"))
            .and_then(|rest| rest.split('.').next()?.parse::<u32>().ok());
        if pid.is_some_and(|pid| !alive(pid)) {
            let path = entry.path();
            // Best effort: whatever stays is retried by the next build.
            let _ = match path.is_dir() {
                true => std::fs::remove_dir_all(&path),
                false => std::fs::remove_file(&path),
            };
        }
    }
}

#[cfg(unix)]
fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // Signal 0 only checks that the process exists; EPERM means it does, under another user.
    // SAFETY: kill with signal 0 sends nothing and touches no memory.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Without a cheap liveness check, assume the builder may still run.
#[cfg(not(unix))]
fn alive(_pid: u32) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dead_builders_temporaries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(format!(".x.{}.0.tmp", i32::MAX));
        let live = temp_path(dir.path(), "x");
        let other = dir.path().join(format!(".y.{}.0.tmp", i32::MAX));
        for d in [&dead, &live, &other] {
            std::fs::create_dir(d).unwrap();
        }
        remove_stale(dir.path(), "x");
        assert!(!dead.exists());
        assert!(live.exists() && other.exists());
    }
}
