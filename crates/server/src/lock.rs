//! One server per data directory. A second server on the same directory would settle the first
//! one's running jobs as if a crash had left them (failing them), and remove its uploads in
//! progress as debris. So a server takes an advisory lock (flock) on `<data-dir>/finerank.lock`
//! before it reads or settles anything, and one that cannot get it stops with the holder's pid.
//! The OS drops the lock when the process ends, however it ends, so a SIGKILLed server never
//! blocks the next start.
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;

const LOCK_FILE: &str = "finerank.lock";

pub struct DataDirLock {
    /// Holding the open file holds the lock.
    file: Mutex<Option<File>>,
}

impl DataDirLock {
    pub fn acquire(dir: &Path) -> anyhow::Result<DataDirLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| crate::not_writable(dir))?;
        let locked = match file.try_lock() {
            Ok(()) => true,
            Err(TryLockError::WouldBlock) => false,
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        };
        if !locked {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            anyhow::bail!(
                "the data directory {} is in use by another finerank serve{holder}; stop that \
                 one first, or give this one another --data-dir",
                dir.display()
            );
        }
        // The pid only makes the message above more helpful; a disk too full to take it is
        // reported by the write probe that follows.
        let _ = file
            .set_len(0)
            .and_then(|()| file.write_all(std::process::id().to_string().as_bytes()));
        Ok(DataDirLock {
            file: Mutex::new(Some(file)),
        })
    }

    /// Lets another server start on the directory: this one's workers have stopped.
    pub fn release(&self) {
        drop(
            self.file
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take(),
        );
    }
}
