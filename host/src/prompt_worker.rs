//! The one executor loop, as ComfyUI's `prompt_worker`: take a prompt from a
//! queue, run it, hand its record back. `cretok serve` runs it over the
//! embedded queue (`app.rs`), `cretok worker` over the Redis stream
//! (`redis_queue/worker.rs`).

use std::sync::Arc;

use cretok_node_api::{CancelToken, Registry};

use crate::app::{OutboundObserver, OutboundSink};
use crate::executor::{ExecutionObserver, ExecutionRecord, Executor, PromptJob};
use crate::protocol::ServerMessage;

/// A prompt taken from a queue.
pub struct Work<T, S> {
    /// What the queue needs back to finish it.
    pub ticket: T,
    /// Where its events go.
    pub events: OutboundObserver<S>,
    pub task: Task,
}

/// What a taken prompt asks of the executor.
pub enum Task {
    Run {
        job: Arc<PromptJob>,
        registry: Arc<Registry>,
        cancel: CancelToken,
    },
    /// It cannot run here (dead-lettered, or invalid on this worker); its
    /// error was reported: only record it.
    Refused(Box<ExecutionRecord>),
}

/// The worker side of a queue.
pub trait WorkQueue {
    type Ticket;
    type Sink: OutboundSink;
    /// Blocks until a prompt is ready; `None` once the worker should stop.
    fn take(&self) -> Option<Work<Self::Ticket, Self::Sink>>;
    /// Whether cached outputs must be dropped before the next prompt (`/free`).
    fn take_cache_clear(&self) -> bool;
    /// Records the prompt's end (history, final event, queue status).
    /// Returns whether it was reported (not when another worker took it over).
    fn finish(
        &self,
        ticket: Self::Ticket,
        record: ExecutionRecord,
        events: &OutboundObserver<Self::Sink>,
    ) -> bool;
}

/// Runs prompts from `queue` until it has no more.
pub fn run_prompts<Q: WorkQueue>(queue: &Q, mut executor: Executor) {
    while let Some(work) = queue.take() {
        if queue.take_cache_clear() {
            executor.clear_cache();
        }
        let record = match work.task {
            Task::Run {
                job,
                registry,
                cancel,
            } => executor.run(&job, &registry, &cancel, &work.events),
            Task::Refused(record) => *record,
        };
        if queue.finish(work.ticket, record, &work.events) {
            work.events.message(ServerMessage::Executing {
                node: None,
                display_node: None,
                prompt_id: work.events.prompt_id.clone(),
            });
        }
    }
}
