//! The prompt queue: pending prompts ordered by number (`front` prompts get
//! negative numbers and so run first), and the one running prompt.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use cretok_node_api::CancelToken;

use crate::backend::{BackendResult, PushError, QueueBackend, QueuedPrompt};
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
    clear_cache: AtomicBool,
}

impl PromptQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Whether `free_caches` was asked since the last call.
    pub fn take_cache_clear(&self) -> bool {
        self.clear_cache.swap(false, Ordering::SeqCst)
    }
}

impl QueueBackend for PromptQueue {
    fn next_number(&self, front: bool) -> BackendResult<i64> {
        let mut s = self.lock();
        s.counter += 1;
        Ok(if front { -s.counter } else { s.counter })
    }

    /// Refuses an id that is pending or running (history is the caller's to
    /// check). `announce` runs while the queue is still locked.
    fn push(&self, job: PromptJob, announce: &dyn Fn(usize)) -> Result<(), PushError> {
        let mut s = self.lock();
        let taken = |other: &PromptJob| other.prompt_id == job.prompt_id;
        if s.pending.values().any(|p| taken(p)) || s.running.as_ref().is_some_and(|r| taken(&r.job))
        {
            return Err(PushError::DuplicateId(job.prompt_id));
        }
        s.arrivals += 1;
        let key = (job.number, s.arrivals);
        s.pending.insert(key, Arc::new(job));
        announce(s.pending.len() + usize::from(s.running.is_some()));
        self.wakeup.notify_all();
        Ok(())
    }

    fn remaining(&self) -> BackendResult<usize> {
        let s = self.lock();
        Ok(s.pending.len() + usize::from(s.running.is_some()))
    }

    fn running(&self) -> BackendResult<Vec<QueuedPrompt>> {
        let s = self.lock();
        Ok(s.running.iter().map(|r| QueuedPrompt::of(&r.job)).collect())
    }

    fn pending(&self) -> BackendResult<Vec<QueuedPrompt>> {
        let s = self.lock();
        Ok(s.pending
            .values()
            .map(|job| QueuedPrompt::of(job))
            .collect())
    }

    fn delete(&self, prompt_ids: &[String]) -> BackendResult<usize> {
        let mut s = self.lock();
        let before = s.pending.len();
        s.pending
            .retain(|_, job| !prompt_ids.contains(&job.prompt_id));
        Ok(before - s.pending.len())
    }

    fn clear(&self) -> BackendResult<()> {
        self.lock().pending.clear();
        Ok(())
    }

    fn interrupt(&self, prompt_id: Option<&str>) -> BackendResult<bool> {
        let s = self.lock();
        Ok(match &s.running {
            Some(r) if prompt_id.is_none_or(|id| id == r.job.prompt_id) => {
                r.cancel.cancel();
                true
            }
            _ => false,
        })
    }

    fn free_caches(&self) -> BackendResult<()> {
        self.clear_cache.store(true, Ordering::SeqCst);
        Ok(())
    }
}
