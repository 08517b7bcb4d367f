//! The loop of a background worker that takes its work from the database: handlers ring a bell
//! when they queue work, the worker sleeps on it when there is none, and shutdown stops it.
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// How long a worker waits before reading its queue again after the database failed.
const RETRY: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Wake {
    state: Mutex<State>,
    bell: Condvar,
}

#[derive(Default)]
struct State {
    /// Rung since the worker last looked: a ring while it works is not lost.
    rung: bool,
    stopped: bool,
}

impl Wake {
    pub fn ring(&self) {
        self.state.lock().expect("wake lock").rung = true;
        self.bell.notify_all();
    }

    pub fn stop(&self) {
        self.state.lock().expect("wake lock").stopped = true;
        self.bell.notify_all();
    }

    pub fn stopped(&self) -> bool {
        self.state.lock().expect("wake lock").stopped
    }

    /// Sleeps for `period`, or until rung or stopped; false once stopped. For a worker that
    /// looks on a schedule rather than at a queue.
    pub fn pause(&self, period: Duration) -> bool {
        self.wait(Some(period))
    }

    /// Sleeps until rung, stopped, or `timeout` passes; false once stopped.
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let state = self.state.lock().expect("wake lock");
        let idle = |s: &mut State| !s.rung && !s.stopped;
        let mut state = match timeout {
            Some(t) => {
                self.bell
                    .wait_timeout_while(state, t, idle)
                    .expect("wake lock")
                    .0
            }
            None => self.bell.wait_while(state, idle).expect("wake lock"),
        };
        state.rung = false;
        !state.stopped
    }

    /// Sleeps until stopped or `timeout` passes (a ring does not wake it); false once stopped.
    pub fn sleep(&self, timeout: Duration) -> bool {
        let state = self.state.lock().expect("wake lock");
        let (state, _) = (self.bell)
            .wait_timeout_while(state, timeout, |s| !s.stopped)
            .expect("wake lock");
        !state.stopped
    }

    /// Runs `take` (which claims and does one piece of work, returning false when there was none)
    /// until stopped, sleeping while the queue is empty: until rung, or for `poll` where other
    /// processes fill the queue too. `what` names the queue in the log.
    pub fn work<E: std::fmt::Display>(
        &self,
        what: &str,
        poll: Option<Duration>,
        mut take: impl FnMut() -> Result<bool, E>,
    ) {
        loop {
            let awake = match take() {
                Ok(true) => !self.stopped(),
                Ok(false) => self.wait(poll),
                Err(e) => {
                    tracing::error!("could not read the {what} queue: {e}");
                    self.wait(Some(RETRY))
                }
            };
            if !awake {
                return;
            }
        }
    }
}
