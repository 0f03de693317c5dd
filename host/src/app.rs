//! The host's shared state, prompt submission and the executor worker thread.

use std::sync::Arc;
use std::thread::JoinHandle;

use cretok_node_api::{Paths, PreviewFormat, PreviewMethod, Registry};
use serde_json::Value as Json;
use tokio::sync::broadcast;

use crate::backend::{BackendResult, HistoryStore, PushError, QueueBackend, QueuedPrompt};
use crate::catalog::NodeCatalog;
use crate::executor::{ExecutionObserver, ExecutionRecord, Executor, PromptJob};
use crate::history::{History, HistoryRecord};
use crate::prompt_worker::{run_prompts, Task, Work, WorkQueue};
use crate::protocol::{Event, ServerMessage};
use crate::queue::PromptQueue;
use crate::validation::{validate, ErrorInfo, NodeErrors, ValidationFailure};

/// A prompt as clients submit it (`POST /prompt`, the websocket, the CLI).
#[derive(Debug, Clone, Default)]
pub struct PromptRequest {
    pub prompt: Json,
    pub client_id: Option<String>,
    pub extra_data: Json,
    pub front: bool,
    pub number: Option<i64>,
    pub prompt_id: Option<String>,
    /// `partial_execution_targets`: run only these output nodes (and what they need).
    pub targets: Option<Vec<String>>,
}

/// What a successful submission returns.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub prompt_id: String,
    pub number: i64,
    pub node_errors: std::collections::BTreeMap<String, NodeErrors>,
}

/// Why a submission was refused, in ComfyUI's error shape.
#[derive(Debug)]
pub enum SubmitError {
    /// The prompt is invalid or its id is taken (HTTP 400).
    Invalid(ValidationFailure),
    /// The queue cannot be reached (HTTP 503); the details name the cause.
    QueueUnavailable(ValidationFailure),
}

impl SubmitError {
    fn refused(error: PushError) -> Self {
        let failure = |kind: &str, message: &str| ValidationFailure {
            error: ErrorInfo::new(kind, message, error.to_string()),
            node_errors: Default::default(),
        };
        match &error {
            PushError::DuplicateId(_) => {
                SubmitError::Invalid(failure("duplicate_prompt_id", "Prompt id already used"))
            }
            PushError::Unavailable(e) => {
                tracing::error!("queueing a prompt: {e:#}");
                SubmitError::QueueUnavailable(failure(
                    "queue_unavailable",
                    "The prompt queue is unavailable",
                ))
            }
        }
    }

    pub fn failure(&self) -> &ValidationFailure {
        match self {
            SubmitError::Invalid(f) | SubmitError::QueueUnavailable(f) => f,
        }
    }
}

/// Everything the server's routes and the worker share.
pub struct AppState {
    pub paths: Arc<Paths>,
    pub catalog: Arc<NodeCatalog>,
    pub queue: Arc<dyn QueueBackend>,
    pub history: Arc<dyn HistoryStore>,
    /// Events for websocket clients.
    pub bus: broadcast::Sender<Event>,
    /// The in-process queue and history of the embedded worker (`None` with Redis).
    embedded: Option<(Arc<PromptQueue>, Arc<History>)>,
}

const BUS_CAPACITY: usize = 4096;

/// How long a request waits for custom nodes still compiling at start-up
/// before it is answered with the node types loaded so far.
pub const CATALOG_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

impl AppState {
    /// The default: an in-process queue run by [`AppState::spawn_worker`].
    pub fn new(paths: Arc<Paths>, registry: Registry) -> Arc<Self> {
        let queue = Arc::new(PromptQueue::new());
        let history = Arc::new(History::new());
        Arc::new(AppState {
            paths,
            catalog: Arc::new(NodeCatalog::new(registry)),
            queue: Arc::clone(&queue) as _,
            history: Arc::clone(&history) as _,
            bus: broadcast::channel(BUS_CAPACITY).0,
            embedded: Some((queue, history)),
        })
    }

    /// A front of a shared queue that other processes run.
    pub fn with_backend(
        paths: Arc<Paths>,
        registry: Registry,
        queue: Arc<dyn QueueBackend>,
        history: Arc<dyn HistoryStore>,
    ) -> Arc<Self> {
        Arc::new(AppState {
            paths,
            catalog: Arc::new(NodeCatalog::new(registry)),
            queue,
            history,
            bus: broadcast::channel(BUS_CAPACITY).0,
            embedded: None,
        })
    }

    pub fn send(&self, event: Event) {
        // No subscribers is fine: nobody is listening.
        let _ = self.bus.send(event);
    }

    /// Tells every client how many prompts remain (logged when the queue
    /// cannot say: clients keep the last count they had).
    pub fn broadcast_status(&self) {
        match self.queue.remaining() {
            Ok(remaining) => self.announce_queue(remaining),
            Err(e) => tracing::warn!("queue status not sent: {e:#}"),
        }
    }

    fn announce_queue(&self, queue_remaining: usize) {
        self.send(Event::message(
            None,
            &ServerMessage::status(queue_remaining, None),
        ));
    }

    /// Validates and queues a prompt.
    pub fn submit(&self, request: PromptRequest) -> Result<Submitted, SubmitError> {
        let registry = self.catalog.settled_snapshot(CATALOG_PATIENCE);
        let valid = validate(
            &request.prompt,
            registry.as_ref(),
            request.targets.as_deref(),
        )
        .map_err(SubmitError::Invalid)?;
        let prompt_id = match request.prompt_id {
            Some(id) => {
                let finished = self
                    .history
                    .get(&id)
                    .map_err(|e| SubmitError::refused(PushError::Unavailable(e)))?;
                if finished.is_some() {
                    return Err(SubmitError::refused(PushError::DuplicateId(id)));
                }
                id
            }
            None => uuid::Uuid::new_v4().to_string(),
        };
        let number = match request.number {
            Some(n) => n,
            None => self
                .queue
                .next_number(request.front)
                .map_err(|e| SubmitError::refused(PushError::Unavailable(e)))?,
        };
        let node_errors = valid.node_errors.clone();
        let mut extra_data = match request.extra_data {
            Json::Object(o) => o,
            _ => Default::default(),
        };
        extra_data
            .entry("create_time")
            .or_insert_with(|| Json::from(crate::protocol::now_ms()));
        if let Some(client_id) = &request.client_id {
            extra_data.insert("client_id".into(), Json::from(client_id.as_str()));
        }
        let job = PromptJob {
            prompt_id: prompt_id.clone(),
            number,
            prompt: request.prompt,
            valid,
            client_id: request.client_id,
            extra_data: Json::Object(extra_data),
        };
        self.queue
            .push(job, &|remaining| self.announce_queue(remaining))
            .map_err(SubmitError::refused)?;
        Ok(Submitted {
            prompt_id,
            number,
            node_errors,
        })
    }

    /// Asks the workers to drop cached outputs before their next prompt.
    pub fn request_cache_clear(&self) -> BackendResult<()> {
        self.queue.free_caches()
    }

    /// Starts the embedded executor thread; it runs until stopped.
    /// `previews`: for prompts whose `extra_data` does not choose.
    pub fn spawn_worker(
        self: &Arc<Self>,
        previews: PreviewMethod,
    ) -> std::io::Result<EmbeddedWorker> {
        let Some((queue, history)) = self.embedded.clone() else {
            return Err(std::io::Error::other(
                "this queue is run by other processes",
            ));
        };
        let embedded = EmbeddedQueue {
            state: Arc::clone(self),
            queue: Arc::clone(&queue),
            history,
        };
        let executor = Executor::new(Arc::clone(&self.paths)).with_previews(previews);
        let thread = std::thread::Builder::new()
            .name("executor".into())
            .spawn(move || run_prompts(&embedded, executor))?;
        Ok(EmbeddedWorker { queue, thread })
    }
}

/// The in-process queue as the executor loop takes from it.
struct EmbeddedQueue {
    state: Arc<AppState>,
    queue: Arc<PromptQueue>,
    history: Arc<History>,
}

impl WorkQueue for EmbeddedQueue {
    type Ticket = Arc<PromptJob>;
    type Sink = Arc<AppState>;

    fn take(&self) -> Option<Work<Arc<PromptJob>, Arc<AppState>>> {
        let running = self.queue.pop()?;
        let job = running.job;
        Some(Work {
            events: OutboundObserver {
                sink: Arc::clone(&self.state),
                target: job.client_id.as_deref().map(Arc::from),
                prompt_id: job.prompt_id.clone(),
            },
            task: Task::Run {
                job: Arc::clone(&job),
                registry: self.state.catalog.snapshot(),
                cancel: running.cancel,
            },
            ticket: job,
        })
    }

    fn take_cache_clear(&self) -> bool {
        self.queue.take_cache_clear()
    }

    fn finish(
        &self,
        job: Arc<PromptJob>,
        record: ExecutionRecord,
        _events: &OutboundObserver<Arc<AppState>>,
    ) -> bool {
        self.history
            .insert(HistoryRecord::new(QueuedPrompt::of(&job), record));
        self.queue.finish();
        self.state.broadcast_status();
        true
    }
}

/// The embedded executor thread.
pub struct EmbeddedWorker {
    queue: Arc<PromptQueue>,
    thread: JoinHandle<()>,
}

impl EmbeddedWorker {
    /// Interrupts the running prompt and waits for the thread to end.
    pub fn stop(self) {
        self.queue.close();
        // The in-process queue always answers.
        let _ = self.queue.interrupt(None);
        let _ = self.thread.join();
    }
}

/// Where an [`OutboundObserver`] hands a prompt's events: the in-process bus,
/// or Redis for a scale-out worker.
pub trait OutboundSink: Send + Sync {
    fn send(&self, event: Event);
    /// The prompt's success, error or interruption event.
    fn send_final(&self, event: Event) {
        self.send(event);
    }
}

impl OutboundSink for Arc<AppState> {
    fn send(&self, event: Event) {
        AppState::send(self, event);
    }
}

/// Addresses a running prompt's events to its client, serialised once.
pub struct OutboundObserver<S> {
    pub sink: S,
    pub target: Option<Arc<str>>,
    pub prompt_id: String,
}

impl<S: OutboundSink> ExecutionObserver for OutboundObserver<S> {
    fn message(&self, message: ServerMessage) {
        let event = Event::message(self.target.clone(), &message);
        if message.ends_prompt() {
            self.sink.send_final(event);
        } else {
            self.sink.send(event);
        }
    }

    fn preview(&self, node_id: &str, format: PreviewFormat, image: Vec<u8>) {
        let target = self.target.clone();
        let event = Event::preview(target, &self.prompt_id, node_id, format, &image);
        self.sink.send(event);
    }

    fn text(&self, node_id: &str, text: &str) {
        for line in text.lines() {
            tracing::info!("[{node_id}] {line}");
        }
        self.sink
            .send(Event::node_text(self.target.clone(), node_id, text));
    }
}
