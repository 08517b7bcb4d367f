//! How the server's cores are shared between answering requests and background work:
//! fine-tunes, and the mining and retrieval evaluation that datasets with a corpus need.
//!
//! libtorch splits each operation over a thread count that belongs to the thread starting it,
//! so the rerank thread and each background thread set their own (`--serving-threads`,
//! `--training-threads`). Background threads also run at a lower scheduling priority
//! (`--training-nice`), which the helper threads libtorch starts for them inherit: where the two
//! counts add up to more than the cores, the kernel gives requests the CPU first, and training
//! takes what is left.
use crate::config::Config;

/// Called first thing on the thread that scores requests.
pub fn serving(config: &Config) {
    finerank_engine::set_threads_here(config.serving_threads);
    tracing::info!(
        "scoring requests on {} threads",
        finerank_engine::threads_here()
    );
}

/// Called first thing on each background thread, before it runs any libtorch work.
pub fn background(config: &Config) {
    if let Err(e) = lower_priority(config.training_nice) {
        tracing::warn!(
            "could not lower the priority of a background thread to nice {}: {e}",
            config.training_nice
        );
    }
    finerank_engine::set_threads_here(config.background_threads());
    tracing::debug!(
        "background work on {} threads at nice {}",
        finerank_engine::threads_here(),
        config.training_nice
    );
}

/// On Linux a thread's nice value is its own, and threads it starts inherit it.
#[cfg(target_os = "linux")]
fn lower_priority(nice: i32) -> std::io::Result<()> {
    // SAFETY: gettid and setpriority take no pointers; they act on the calling thread.
    let set = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    match set {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Elsewhere the value would apply to the whole process, requests included.
#[cfg(not(target_os = "linux"))]
fn lower_priority(_nice: i32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A background thread takes its own thread count and priority, and the serving thread
    /// keeps its own, whichever sets its count last.
    #[test]
    fn each_side_keeps_its_own_threads() {
        let config = Config::from_flags([
            "--serving-threads",
            "3",
            "--training-threads",
            "1",
            "--training-nice",
            "7",
        ])
        .unwrap();
        let (set, go) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|s| {
            let serving = s.spawn(|| {
                serving(&config);
                set.wait();
                go.wait();
                finerank_engine::threads_here()
            });
            let background = s.spawn(|| {
                set.wait();
                background(&config);
                go.wait();
                // SAFETY: no pointers; reads the calling thread's nice value.
                let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as _) };
                (finerank_engine::threads_here(), nice)
            });
            assert_eq!(serving.join().unwrap(), 3);
            assert_eq!(background.join().unwrap(), (1, 7));
        });
    }
}
