//! The prompt queue: pending prompts ordered by number (`front` prompts get
//! negative numbers and so run first), and the one running prompt.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use cretok_nodes::CancelToken;

use crate::executor::PromptJob;

/// A prompt being run, with its cancel token.
#[derive(Clone)]
pub struct Running {
    pub job: Arc<PromptJob>,
    pub cancel: CancelToken,
}

#[derive(Default)]
struct State {
    /// Keyed by (number, arrival) so equal numbers stay FIFO.
    pending: BTreeMap<(i64, u64), Arc<PromptJob>>,
    running: Option<Running>,
    arrivals: u64,
    counter: i64,
    closed: bool,
}

#[derive(Default)]
pub struct PromptQueue {
    state: Mutex<State>,
    wakeup: Condvar,
}

impl PromptQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The number the next prompt gets: `front` ones sort before everything queued.
    pub fn next_number(&self, front: bool) -> i64 {
        let mut s = self.lock();
        s.counter += 1;
        if front {
            -s.counter
        } else {
            s.counter
        }
    }

    /// Queues a prompt. `announce` gets the new remaining count while the queue
    /// is still locked, so its message goes out before the worker can start the prompt.
    pub fn push(&self, job: PromptJob, announce: impl FnOnce(usize)) {
        let mut s = self.lock();
        s.arrivals += 1;
        let key = (job.number, s.arrivals);
        s.pending.insert(key, Arc::new(job));
        announce(s.pending.len() + usize::from(s.running.is_some()));
        self.wakeup.notify_all();
    }

    /// Blocks until a prompt is pending, marks it running and returns it;
    /// `None` once the queue is closed.
    pub fn pop(&self) -> Option<Running> {
        let mut s = self.lock();
        loop {
            if s.closed {
                return None;
            }
            if let Some((_, job)) = s.pending.pop_first() {
                let running = Running {
                    job,
                    cancel: CancelToken::new(),
                };
                s.running = Some(running.clone());
                return Some(running);
            }
            s = self.wakeup.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Marks the running prompt finished.
    pub fn finish(&self) {
        self.lock().running = None;
    }

    /// Stops the worker loop after the running prompt.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wakeup.notify_all();
    }

    /// Pending plus running prompts.
    pub fn remaining(&self) -> usize {
        let s = self.lock();
        s.pending.len() + usize::from(s.running.is_some())
    }

    pub fn running(&self) -> Option<Running> {
        self.lock().running.clone()
    }

    pub fn pending(&self) -> Vec<Arc<PromptJob>> {
        self.lock().pending.values().cloned().collect()
    }

    /// Removes pending prompts by id; returns how many were removed.
    pub fn delete(&self, prompt_ids: &[String]) -> usize {
        let mut s = self.lock();
        let before = s.pending.len();
        s.pending
            .retain(|_, job| !prompt_ids.contains(&job.prompt_id));
        before - s.pending.len()
    }

    pub fn clear(&self) {
        self.lock().pending.clear();
    }

    /// Cancels the running prompt (only if it is `prompt_id`, when given).
    /// Returns whether something was interrupted.
    pub fn interrupt(&self, prompt_id: Option<&str>) -> bool {
        let s = self.lock();
        match &s.running {
            Some(r) if prompt_id.is_none_or(|id| id == r.job.prompt_id) => {
                r.cancel.cancel();
                true
            }
            _ => false,
        }
    }
}
