//! Runs a validated prompt: only what the output nodes need, in dependency
//! order, reusing cached outputs, reporting every step to an observer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cretok_nodes::{
    CancelToken, EventSink, Inputs, NodeError, NodeOutput, Paths, PreviewFormat, Registry,
    RunContext, Value,
};
use serde_json::{json, Value as Json};

use crate::cache::{signatures, CachedOutput, OutputCache};
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

/// What history keeps of a run.
#[derive(Debug, Clone)]
pub struct ExecutionRecord {
    pub outcome: Outcome,
    /// UI outputs of output nodes, by node id.
    pub outputs: BTreeMap<String, Json>,
    /// `[event_name, data]` pairs: start, cached, then success/error/interrupted.
    pub messages: Vec<(String, Json)>,
    /// The error or interruption message, for the CLI.
    pub failure: Option<ServerMessage>,
}

/// The single executor: owns the output cache.
pub struct Executor {
    paths: Arc<Paths>,
    cache: OutputCache,
}

impl Executor {
    pub fn new(paths: Arc<Paths>) -> Self {
        Executor {
            paths,
            cache: OutputCache::default(),
        }
    }

    /// Forgets every cached output (`POST /free`).
    pub fn clear_cache(&mut self) {
        self.cache.clear();
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
            record: ExecutionRecord {
                outcome: Outcome::Success,
                outputs: BTreeMap::new(),
                messages: Vec::new(),
                failure: None,
            },
        };
        let order = execution_order(&job.valid);
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
        let sigs = signatures(&order, &job.valid.nodes, &fingerprints);

        run.emit(
            ServerMessage::ExecutionStart {
                prompt_id: job.prompt_id.clone(),
                timestamp: now_ms(),
            },
            true,
        );
        let cached: Vec<String> = order
            .iter()
            .filter(|id| self.cache.get(&sigs[*id]).is_some())
            .cloned()
            .collect();
        run.emit(
            ServerMessage::ExecutionCached {
                nodes: cached.clone(),
                prompt_id: job.prompt_id.clone(),
                timestamp: now_ms(),
            },
            true,
        );

        let mut results: HashMap<String, CachedOutput> = HashMap::new();
        let mut executed = Vec::new();
        for id in &order {
            let sig = &sigs[id];
            let output = match self.cache.get(sig) {
                Some(hit) => hit.clone(),
                None => match run.execute_node(id, &results, &executed) {
                    Some(output) => {
                        self.cache.insert(sig.clone(), output.clone());
                        executed.push(id.clone());
                        output
                    }
                    None => break,
                },
            };
            if let Some(ui) = &output.ui {
                run.record.outputs.insert(id.clone(), ui.clone());
                run.emit(
                    ServerMessage::Executed {
                        node: id.clone(),
                        display_node: id.clone(),
                        output: ui.clone(),
                        prompt_id: job.prompt_id.clone(),
                    },
                    false,
                );
            }
            results.insert(id.clone(), output);
        }
        if run.record.outcome == Outcome::Success {
            run.emit(
                ServerMessage::ExecutionSuccess {
                    prompt_id: job.prompt_id.clone(),
                    timestamp: now_ms(),
                },
                true,
            );
        }
        let keep: HashSet<&String> = sigs.values().collect();
        self.cache.retain_only(&keep);
        run.record
    }
}

/// Dependency order of the nodes the outputs need: a depth-first post-order
/// from each output (outputs in id order, inputs in name order).
pub fn execution_order(valid: &ValidPrompt) -> Vec<String> {
    fn visit(valid: &ValidPrompt, id: &str, seen: &mut HashSet<String>, order: &mut Vec<String>) {
        if !seen.insert(id.to_owned()) {
            return;
        }
        for input in valid.nodes[id].inputs.values() {
            if let ResolvedInput::Link { node, .. } = input {
                visit(valid, node, seen, order);
            }
        }
        order.push(id.to_owned());
    }
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    for output in &valid.outputs {
        visit(valid, output, &mut seen, &mut order);
    }
    order
}

/// The state of one prompt's run.
struct PromptRun<'a> {
    job: &'a PromptJob,
    registry: &'a Registry,
    cancel: &'a CancelToken,
    observer: &'a dyn ExecutionObserver,
    paths: &'a Paths,
    record: ExecutionRecord,
}

impl PromptRun<'_> {
    fn emit(&mut self, message: ServerMessage, keep_in_history: bool) {
        if keep_in_history {
            self.record.messages.push(message.name_and_data());
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

    /// Runs one node; on failure reports it, marks the record and returns `None`.
    fn execute_node(
        &mut self,
        id: &str,
        results: &HashMap<String, CachedOutput>,
        executed: &[String],
    ) -> Option<CachedOutput> {
        let node = &self.job.valid.nodes[id];
        if self.cancel.is_cancelled() {
            self.fail(id, executed, NodeError::Interrupted, &Inputs::new());
            return None;
        }
        self.emit(
            ServerMessage::Executing {
                node: Some(id.to_owned()),
                display_node: Some(id.to_owned()),
                prompt_id: self.job.prompt_id.clone(),
            },
            false,
        );
        let inputs = match resolve_inputs(&node.inputs, results) {
            Ok(inputs) => inputs,
            Err(e) => {
                self.fail(id, executed, e, &Inputs::new());
                return None;
            }
        };
        let Some(implementation) = self.registry.get(&node.class_type).cloned() else {
            let e = NodeError::Failed(anyhow::anyhow!("node type {} was removed", node.class_type));
            self.fail(id, executed, e, &inputs);
            return None;
        };
        let sink = ObserverSink {
            observer: self.observer,
            prompt_id: &self.job.prompt_id,
        };
        let ctx = RunContext::new(id, self.paths, self.cancel, &sink).with_prompt(
            Some(&self.job.prompt),
            self.job.extra_data.get("extra_pnginfo"),
        );
        let result = catch_unwind(AssertUnwindSafe(|| implementation.run(&inputs, &ctx)))
            .unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".to_owned());
                Err(NodeError::Failed(anyhow::anyhow!("node panicked: {msg}")))
            });
        match result.and_then(|out| check_output_count(out, implementation.schema().outputs.len()))
        {
            Ok(out) => Some(CachedOutput {
                values: out.values,
                ui: out.ui,
            }),
            Err(e) => {
                self.fail(id, executed, e, &inputs);
                None
            }
        }
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
        self.record.failure = Some(message.clone());
        self.emit(message, true);
    }
}

fn check_output_count(out: NodeOutput, declared: usize) -> Result<NodeOutput, NodeError> {
    if out.values.len() < declared {
        return Err(NodeError::Failed(anyhow::anyhow!(
            "produced {} outputs but declares {declared}",
            out.values.len()
        )));
    }
    Ok(out)
}

fn resolve_inputs(
    inputs: &BTreeMap<String, ResolvedInput>,
    results: &HashMap<String, CachedOutput>,
) -> Result<Inputs, NodeError> {
    let mut resolved = Inputs::new();
    for (name, input) in inputs {
        let value: Value = match input {
            ResolvedInput::Value(v) => v.clone(),
            ResolvedInput::Link { node, slot } => results
                .get(node)
                .and_then(|r| r.values.get(*slot))
                .cloned()
                .ok_or_else(|| {
                    NodeError::invalid_input(name, format!("node {node} produced no output {slot}"))
                })?,
        };
        resolved.insert(name.clone(), value);
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
