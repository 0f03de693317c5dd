//! A loaded component as a native node: [`SandboxNode`] implements
//! [`cretok_node_api::Node`], so the executor runs it like any other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cretok_node_api::{
    Estimate, EstimateInputs, Inputs, Node, NodeError, NodeOutput, NodeSchema, RunContext, Value,
    ValueEstimate,
};

use super::error::RunError;
use super::fault::Fault;
use super::ports::Ports;
use super::runtime::{Caller, Runtime};
use super::state::GuestLog;
use super::wit::{GuestError, GuestPre, LogLevel};

/// A node type backed by a WebAssembly component.
pub struct SandboxNode {
    schema: NodeSchema,
    ports: Ports,
    guest: GuestPre,
    component: String,
    /// The SHA-256 of the component's bytes: part of the cache signature, so
    /// a replaced component never serves its predecessor's outputs.
    sha256: String,
    runtime: Arc<Runtime>,
    /// Set when a run ahead of a prompt hit its deadline: a slow guest is not
    /// run ahead again, so it costs validation that time once, not per prompt.
    too_slow_to_run_ahead: AtomicBool,
}

impl SandboxNode {
    pub(crate) fn new(
        schema: NodeSchema,
        ports: Ports,
        guest: GuestPre,
        component: String,
        sha256: String,
        runtime: Arc<Runtime>,
    ) -> Self {
        SandboxNode {
            schema,
            ports,
            guest,
            component,
            sha256,
            runtime,
            too_slow_to_run_ahead: AtomicBool::new(false),
        }
    }

    /// The SHA-256 of the component's bytes, in lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The component's file name (`template.wasm`).
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Runs the guest on inputs known before the prompt runs, for their
    /// outputs; `None` when it fails in any way (its log is dropped).
    fn run_ahead(&self, inputs: &Inputs) -> Option<Vec<Value>> {
        if self.too_slow_to_run_ahead.load(Ordering::Relaxed) {
            return None;
        }
        let inputs = self.ports.guest_inputs(inputs).ok()?;
        let (result, _log) = self
            .runtime
            .call(Caller::Estimate, |store| self.guest.run(store, &inputs));
        if let Err(Fault::Deadline(_)) = result {
            self.too_slow_to_run_ahead.store(true, Ordering::Relaxed);
        }
        self.ports.outputs(result.ok()?.ok()?).ok()
    }

    fn fail(&self, fault: Fault) -> NodeError {
        if fault == Fault::Interrupted {
            return NodeError::Interrupted;
        }
        NodeError::Failed(anyhow::Error::new(RunError {
            node: self.schema.name.clone(),
            component: self.component.clone(),
            fault,
        }))
    }

    fn guest_error(&self, error: GuestError) -> NodeError {
        let by = format!("(custom node '{}')", self.schema.name);
        match error {
            GuestError::MissingInput(input) => {
                NodeError::invalid_input(&input, format!("missing {by}"))
            }
            GuestError::WrongType { input, reason } => {
                NodeError::invalid_input(&input, format!("wrong type: {reason} {by}"))
            }
            GuestError::InvalidInput { input, reason } => {
                NodeError::invalid_input(&input, format!("{reason} {by}"))
            }
            GuestError::Failed(message) => self.fail(Fault::Failed(message)),
        }
    }

    /// Sends the guest's log to tracing, and lines of level info and above
    /// to the user through the run context.
    fn forward_log(&self, log: GuestLog, ctx: &RunContext) {
        let node = self.schema.name.as_str();
        for line in &log.lines {
            let message = line.message.as_str();
            match line.level {
                LogLevel::Debug => tracing::debug!(target: "cretok::sandbox", node, "{message}"),
                LogLevel::Info => tracing::info!(target: "cretok::sandbox", node, "{message}"),
                LogLevel::Warn => tracing::warn!(target: "cretok::sandbox", node, "{message}"),
                LogLevel::Error => tracing::error!(target: "cretok::sandbox", node, "{message}"),
            }
            if line.level != LogLevel::Debug {
                ctx.text(&format!("[{node}] {message}"));
            }
        }
        if log.dropped > 0 {
            tracing::warn!(target: "cretok::sandbox", node, "dropped {} log lines", log.dropped);
        }
    }
}

impl Node for SandboxNode {
    fn schema(&self) -> NodeSchema {
        self.schema.clone()
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let inputs = self.ports.guest_inputs(inputs)?;
        let caller = Caller::Prompt(ctx.cancel_token());
        let (result, log) = self
            .runtime
            .call(caller, |store| self.guest.run(store, &inputs));
        self.forward_log(log, ctx);
        match result {
            Err(fault) => Err(self.fail(fault)),
            Ok(Err(error)) => Err(self.guest_error(error)),
            Ok(Ok(outputs)) => self
                .ports
                .outputs(outputs)
                .map(NodeOutput::values)
                .map_err(|problem| self.fail(Fault::BadOutputs(problem))),
        }
    }

    /// A node with list outputs runs ahead when all its inputs are known
    /// (literals, primitives), so that validation counts the runs of the
    /// nodes its lists feed from the real lengths; otherwise, or when that run
    /// fails, each list output counts as the longest list the executor takes.
    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        if !self.schema.outputs.iter().any(|o| o.is_list) {
            return Ok(Estimate::default());
        }
        let outputs = inputs
            .known_values()
            .and_then(|known| self.run_ahead(&known))
            .map(|values| values.iter().map(ValueEstimate::known).collect());
        Ok(outputs.map(Estimate::outputs).unwrap_or_default())
    }

    fn fingerprint(&self, _literal_inputs: &Inputs) -> Option<String> {
        Some(format!("wasm:{}", self.sha256))
    }
}
