//! Runs a validated prompt: only what the output nodes need, in dependency
//! order, reusing cached outputs, reporting every step to an observer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cretok_node_api::{
    with_cancel_token, CancelToken, EventSink, Inputs, Node, NodeError, NodeOutput, Paths,
    PreviewFormat, PreviewMethod, Registry, RunContext, Value,
};
use serde_json::{json, Value as Json};

use crate::allocator::return_free_memory;
use crate::cache::{signatures, CachedOutput, OutputCache};
use crate::mapping::{MappedInputs, MergedOutputs};
use crate::protocol::{now_ms, without_backtrace, FailedNode, ServerMessage};
use crate::validation::{literal_inputs, ResolvedInput, ValidPrompt};

/// One prompt, ready to run.
#[derive(Debug, Clone)]
pub struct PromptJob {
    pub prompt_id: String,
    pub number: i64,
    /// The prompt as submitted (kept in history and embedded in saved images).
    pub prompt: Json,
    pub valid: ValidPrompt,
    pub client_id: Option<String>,
    pub extra_data: Json,
}

/// Where execution events go (the websocket bus, the CLI's progress bar).
pub trait ExecutionObserver: Send + Sync {
    fn message(&self, message: ServerMessage);
    fn preview(&self, node_id: &str, format: PreviewFormat, image: Vec<u8>);
    fn text(&self, node_id: &str, text: &str);
}

/// How a prompt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Error,
    Interrupted,
}

/// What a run leaves for history (see `history::HistoryRecord`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRecord {
    pub outcome: Outcome,
    /// UI outputs of output nodes, by node id.
    pub outputs: BTreeMap<String, Json>,
    /// The events history keeps: start, cached, then success, error or interruption.
    pub events: Vec<ServerMessage>,
}

impl ExecutionRecord {
    /// A run that failed before any node ran, with its error event.
    pub fn refused(error: ServerMessage) -> Self {
        ExecutionRecord {
            outcome: Outcome::Error,
            outputs: BTreeMap::new(),
            events: vec![error],
        }
    }

    /// The error or interruption event of a run that did not succeed.
    pub fn failure(&self) -> Option<&ServerMessage> {
        if self.outcome == Outcome::Success {
            return None;
        }
        self.events.iter().rev().find(|e| {
            matches!(
                e,
                ServerMessage::ExecutionError { .. } | ServerMessage::ExecutionInterrupted { .. }
            )
        })
    }
}

/// The single executor: owns the output cache.
pub struct Executor {
    paths: Arc<Paths>,
    cache: OutputCache,
    /// Previews for prompts that do not choose (`--preview-method`).
    previews: PreviewMethod,
}

impl Executor {
    pub fn new(paths: Arc<Paths>) -> Self {
        Executor {
            paths,
            cache: OutputCache::default(),
            previews: PreviewMethod::None,
        }
    }

    /// Sends latent previews for prompts whose `extra_data` does not choose.
    pub fn with_previews(mut self, previews: PreviewMethod) -> Self {
        self.previews = previews;
        self
    }

    /// Forgets every cached output (`POST /free`) and returns the memory.
    pub fn clear_cache(&mut self) {
        self.cache.clear();
        return_free_memory();
    }

    pub fn run(
        &mut self,
        job: &PromptJob,
        registry: &Registry,
        cancel: &CancelToken,
        observer: &dyn ExecutionObserver,
    ) -> ExecutionRecord {
        let mut run = PromptRun {
            job,
            registry,
            cancel,
            observer,
            paths: &self.paths,
            previews: PreviewMethod::for_prompt(&job.extra_data, self.previews),
            record: ExecutionRecord {
                outcome: Outcome::Success,
                outputs: BTreeMap::new(),
                events: Vec::new(),
            },
        };
        let order = &job.valid.order;
        let fingerprints = order
            .iter()
            .filter_map(|id| {
                let node = &job.valid.nodes[id];
                let literals = literal_inputs(&node.inputs);
                registry
                    .get(&node.class_type)?
                    .fingerprint(&literals)
                    .map(|fp| (id.clone(), fp))
            })
            .collect();
        let sigs = signatures(order, &job.valid.nodes, &fingerprints);

        run.emit(ServerMessage::ExecutionStart {
            prompt_id: job.prompt_id.clone(),
            timestamp: now_ms(),
        });
        let cached: Vec<String> = order
            .iter()
            .filter(|id| self.cache.get(&sigs[*id]).is_some())
            .cloned()
            .collect();
        run.emit(ServerMessage::ExecutionCached {
            nodes: cached.clone(),
            prompt_id: job.prompt_id.clone(),
            timestamp: now_ms(),
        });

        let mut results: HashMap<String, Arc<CachedOutput>> = HashMap::new();
        let mut executed = Vec::new();
        for id in order {
            let sig = &sigs[id];
            let output = match self.cache.get(sig) {
                Some(hit) => Arc::clone(hit),
                None => match run.execute_node(id, &results, &executed) {
                    Some(output) => {
                        self.cache.insert(sig.clone(), Arc::clone(&output));
                        executed.push(id.clone());
                        output
                    }
                    None => break,
                },
            };
            if let Some(ui) = &output.ui {
                run.record.outputs.insert(id.clone(), ui.clone());
                run.emit(ServerMessage::Executed {
                    node: id.clone(),
                    display_node: id.clone(),
                    output: ui.clone(),
                    prompt_id: job.prompt_id.clone(),
                });
            }
            results.insert(id.clone(), output);
        }
        if run.record.outcome == Outcome::Success {
            run.emit(ServerMessage::ExecutionSuccess {
                prompt_id: job.prompt_id.clone(),
                timestamp: now_ms(),
            });
        }
        drop(results);
        let keep: HashSet<&String> = sigs.values().collect();
        self.cache.retain_only(&keep);
        return_free_memory();
        run.record
    }
}

/// The state of one prompt's run.
struct PromptRun<'a> {
    job: &'a PromptJob,
    registry: &'a Registry,
    cancel: &'a CancelToken,
    observer: &'a dyn ExecutionObserver,
    paths: &'a Paths,
    previews: PreviewMethod,
    record: ExecutionRecord,
}

impl PromptRun<'_> {
    fn emit(&mut self, message: ServerMessage) {
        if message.belongs_in_history() {
            self.record.events.push(message.clone());
        }
        self.observer.message(message);
    }

    fn failed_node(&self, id: &str, executed: &[String]) -> FailedNode {
        FailedNode {
            prompt_id: self.job.prompt_id.clone(),
            node_id: id.to_owned(),
            node_type: self.job.valid.nodes[id].class_type.clone(),
            executed: executed.to_vec(),
        }
    }

    /// Runs one node, once per item of its inputs or once with whole lists
    /// (see [`crate::mapping`]); on failure reports it, marks the record and
    /// returns `None`.
    fn execute_node(
        &mut self,
        id: &str,
        results: &HashMap<String, Arc<CachedOutput>>,
        executed: &[String],
    ) -> Option<Arc<CachedOutput>> {
        let node = &self.job.valid.nodes[id];
        if self.cancel.is_cancelled() {
            self.fail(id, executed, NodeError::Interrupted, &Inputs::new());
            return None;
        }
        self.emit(ServerMessage::Executing {
            node: Some(id.to_owned()),
            display_node: Some(id.to_owned()),
            prompt_id: self.job.prompt_id.clone(),
        });
        let Some(implementation) = self.registry.get(&node.class_type).cloned() else {
            let e = NodeError::Failed(anyhow::anyhow!("node type {} was removed", node.class_type));
            self.fail(id, executed, e, &Inputs::new());
            return None;
        };
        let schema = implementation.schema();
        let mapped = match resolve_inputs(&node.inputs, results)
            .and_then(|items| MappedInputs::new(items, schema.input_is_list))
        {
            Ok(mapped) => mapped,
            Err(e) => {
                self.fail(id, executed, e, &Inputs::new());
                return None;
            }
        };
        let mut merged = MergedOutputs::new(&schema.outputs);
        for index in 0..mapped.runs() {
            let inputs = mapped.run(index);
            let result = if self.cancel.is_cancelled() {
                Err(NodeError::Interrupted)
            } else {
                self.run_once(id, implementation.as_ref(), &inputs)
                    .and_then(|out| merged.push(out))
            };
            if let Err(e) = result {
                self.fail(id, executed, e, &inputs);
                return None;
            }
        }
        let (values, ui) = merged.finish();
        Some(Arc::new(CachedOutput { values, ui }))
    }

    /// One run of a node, panics caught.
    fn run_once(
        &self,
        id: &str,
        implementation: &dyn Node,
        inputs: &Inputs,
    ) -> Result<NodeOutput, NodeError> {
        let sink = ObserverSink {
            observer: self.observer,
            prompt_id: &self.job.prompt_id,
        };
        let ctx = RunContext::new(id, self.paths, self.cancel, &sink)
            .with_prompt(
                Some(&self.job.prompt),
                self.job.extra_data.get("extra_pnginfo"),
            )
            .with_previews(self.previews);
        let run = || with_cancel_token(self.cancel, || implementation.run(inputs, &ctx));
        let result = catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(NodeError::Failed(anyhow::anyhow!("node panicked: {msg}")))
        });
        // A model stopped between blocks fails with its own error: it was interrupted.
        result.map_err(|e| {
            if self.cancel.is_cancelled() {
                NodeError::Interrupted
            } else {
                e
            }
        })
    }

    fn fail(&mut self, id: &str, executed: &[String], error: NodeError, inputs: &Inputs) {
        let failed = self.failed_node(id, executed);
        let message = match error {
            NodeError::Interrupted => {
                self.record.outcome = Outcome::Interrupted;
                ServerMessage::ExecutionInterrupted {
                    failed,
                    timestamp: now_ms(),
                }
            }
            other => {
                self.record.outcome = Outcome::Error;
                let current_inputs: serde_json::Map<String, Json> = inputs
                    .iter()
                    .filter_map(|(k, v)| v.to_json().map(|j| (k.clone(), json!([j]))))
                    .collect();
                let full = format!("{} (node {id}): {other}", failed.node_type);
                tracing::warn!("prompt {}: {full}", self.job.prompt_id);
                ServerMessage::ExecutionError {
                    exception_message: without_backtrace(&full),
                    exception_type: other.exception_type().to_owned(),
                    failed,
                    traceback: vec![],
                    current_inputs: Json::Object(current_inputs),
                    current_outputs: vec![],
                    timestamp: now_ms(),
                }
            }
        };
        self.emit(message);
    }
}

/// Each input's items: a literal is one item, a link carries its output's items.
fn resolve_inputs<'a>(
    inputs: &'a BTreeMap<String, ResolvedInput>,
    results: &'a HashMap<String, Arc<CachedOutput>>,
) -> Result<BTreeMap<&'a str, &'a [Value]>, NodeError> {
    let mut resolved = BTreeMap::new();
    for (name, input) in inputs {
        let items: &[Value] = match input {
            ResolvedInput::Value(v) => std::slice::from_ref(v),
            ResolvedInput::Link { node, slot } => results
                .get(node)
                .and_then(|r| r.values.get(*slot))
                .ok_or_else(|| {
                    NodeError::invalid_input(name, format!("node {node} produced no output {slot}"))
                })?,
        };
        resolved.insert(name.as_str(), items);
    }
    Ok(resolved)
}

/// Turns a node's progress, previews and text into execution events.
struct ObserverSink<'a> {
    observer: &'a dyn ExecutionObserver,
    prompt_id: &'a str,
}

impl EventSink for ObserverSink<'_> {
    fn progress(&self, node_id: &str, value: u64, max: u64) {
        self.observer.message(ServerMessage::Progress {
            value,
            max,
            prompt_id: self.prompt_id.to_owned(),
            node: node_id.to_owned(),
        });
    }

    fn preview(&self, node_id: &str, format: PreviewFormat, bytes: Vec<u8>) {
        self.observer.preview(node_id, format, bytes);
    }

    fn text(&self, node_id: &str, text: &str) {
        self.observer.text(node_id, text);
    }
}
