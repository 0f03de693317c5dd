//! Where prompts wait and finished prompts are kept: in this process (the
//! default, see `queue.rs` and `history.rs`) or in Redis, shared by several
//! fronts and workers (see `redis_queue`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use crate::executor::PromptJob;
use crate::history::{HistoryRecord, JobState};

/// What a backend call answers; an error names why the backend failed
/// (routes answer it with 503).
pub type BackendResult<T> = anyhow::Result<T>;

/// A waiting or running prompt as `/queue` and `/jobs` show it (and as the
/// Redis queue carries it to workers, which validate it again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedPrompt {
    pub prompt_id: String,
    pub number: i64,
    pub prompt: Json,
    pub extra_data: Json,
    /// The output nodes it runs (`outputs_to_execute`).
    pub outputs: Vec<String>,
    pub client_id: Option<String>,
}

impl QueuedPrompt {
    pub fn of(job: &PromptJob) -> Self {
        QueuedPrompt {
            prompt_id: job.prompt_id.clone(),
            number: job.number,
            prompt: job.prompt.clone(),
            extra_data: job.extra_data.clone(),
            outputs: job.valid.outputs.clone(),
            client_id: job.client_id.clone(),
        }
    }

    /// The `prompt` 5-tuple of history and `/queue`:
    /// `[number, prompt_id, prompt, extra_data, outputs_to_execute]`.
    pub fn tuple(&self) -> Json {
        json!([
            self.number,
            self.prompt_id,
            self.prompt,
            self.extra_data,
            self.outputs
        ])
    }
}

/// Why a prompt was not queued.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// A prompt with this id is already queued, running or in history.
    #[error("prompt id '{0}' is already queued, running or in history; choose a new id")]
    DuplicateId(String),
    /// The queue cannot be reached.
    #[error("{0:#}")]
    Unavailable(anyhow::Error),
}

/// The prompt queue as the server's routes use it.
pub trait QueueBackend: Send + Sync {
    /// The number the next prompt gets: `front` ones sort before everything queued.
    fn next_number(&self, front: bool) -> BackendResult<i64>;
    /// Queues a prompt unless its id is taken (queued, running or in
    /// history). `announce` gets the new remaining count, in time for its
    /// message to go out before a worker starts the prompt.
    fn push(&self, job: PromptJob, announce: &dyn Fn(usize)) -> Result<(), PushError>;
    /// Pending plus running prompts.
    fn remaining(&self) -> BackendResult<usize>;
    fn running(&self) -> BackendResult<Vec<QueuedPrompt>>;
    fn pending(&self) -> BackendResult<Vec<QueuedPrompt>>;
    /// Removes pending prompts by id; returns how many were removed.
    fn delete(&self, prompt_ids: &[String]) -> BackendResult<usize>;
    fn clear(&self) -> BackendResult<()>;
    /// Cancels the running prompt `prompt_id` (every running one when `None`).
    /// Returns whether something was interrupted.
    fn interrupt(&self, prompt_id: Option<&str>) -> BackendResult<bool>;
    /// Asks the workers to drop cached outputs before their next prompt.
    fn free_caches(&self) -> BackendResult<()>;
}

/// Finished jobs of one `/jobs` page, newest first.
#[derive(Debug, Default)]
pub struct HistoryPage {
    /// How many finished jobs match in all.
    pub total: usize,
    pub records: Vec<Arc<HistoryRecord>>,
}

/// Finished prompts, oldest first.
pub trait HistoryStore: Send + Sync {
    fn get(&self, prompt_id: &str) -> BackendResult<Option<Arc<HistoryRecord>>>;
    /// Entries oldest first; with `max_items`, the last ones (ComfyUI's paging).
    fn list(
        &self,
        max_items: Option<usize>,
        offset: Option<usize>,
    ) -> BackendResult<Vec<Arc<HistoryRecord>>>;
    /// The entries in state `wanted`, newest first: `limit` of them from
    /// `offset`, and how many there are. Reads only the page when every
    /// state is wanted.
    fn newest(
        &self,
        wanted: &[JobState],
        offset: usize,
        limit: usize,
    ) -> BackendResult<HistoryPage>;
    fn delete(&self, prompt_ids: &[String]) -> BackendResult<()>;
    fn clear(&self) -> BackendResult<()>;
}

/// The first entry `list` returns for `len` entries.
pub fn history_page_start(len: usize, max_items: Option<usize>, offset: Option<usize>) -> usize {
    match (offset, max_items) {
        (Some(o), _) => o,
        (None, Some(m)) => len.saturating_sub(m),
        (None, None) => 0,
    }
}
