//! One prompt run headless, for `cretok run` and `cretok train`: validation (its errors printed as
//! the server reports them), the executor with a progress bar fed by the nodes' progress events,
//! their text as lines, and Ctrl-C as the editor's interrupt (a second one quits at once).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use cretok_nodes::{CancelToken, Paths, PreviewFormat, Registry};
use indicatif::ProgressStyle;
use serde_json::Value as Json;

use super::console::Console;
use cretok_host::executor::{ExecutionObserver, ExecutionRecord, Executor, PromptJob};
use cretok_host::protocol::ServerMessage;
use cretok_host::validation::validate;

/// How a headless prompt ended.
pub enum Headless {
    /// Validation refused it (reported on stderr): exit 2.
    Invalid,
    Ran(ExecutionRecord),
}

/// Validates `prompt` (only `targets` and what they need, when given) and runs it.
pub fn execute(
    paths: &Arc<Paths>,
    registry: &Registry,
    prompt: Json,
    extra_data: Json,
    targets: Option<&[String]>,
    quiet: bool,
) -> anyhow::Result<Headless> {
    let valid = match validate(&prompt, registry, targets) {
        Ok(v) => v,
        Err(failure) => {
            eprintln!("{}", failure.report());
            eprintln!("{}", serde_json::to_string_pretty(&failure.to_json())?);
            return Ok(Headless::Invalid);
        }
    };
    for (id, errors) in &valid.node_errors {
        eprintln!(
            "warning: output {id} ({}) skipped: {:?}",
            errors.class_type, errors.errors
        );
    }
    let classes = valid
        .nodes
        .iter()
        .map(|(id, n)| (id.clone(), n.class_type.clone()))
        .collect();
    let job = PromptJob {
        prompt_id: uuid::Uuid::new_v4().to_string(),
        number: 1,
        prompt,
        valid,
        client_id: None,
        extra_data,
    };
    let observer = CliObserver::new(classes, quiet);
    let cancel = CancelToken::new();
    let (on_ctrl_c, console) = (cancel.clone(), observer.console.clone());
    ctrlc::set_handler(move || {
        if on_ctrl_c.is_cancelled() {
            std::process::exit(130);
        }
        console.line("interrupting (Ctrl-C again to quit at once)");
        on_ctrl_c.cancel();
    })
    .context("installing the Ctrl-C handler")?;
    let record = Executor::new(Arc::clone(paths)).run(&job, registry, &cancel, &observer);
    observer.console.bar().finish_and_clear();
    Ok(Headless::Ran(record))
}

/// The exit code of a run that did not succeed, its error printed: 1 for a node's error, 130 for
/// an interruption.
pub fn failure_exit(record: &ExecutionRecord) -> ExitCode {
    match record.failure() {
        Some(ServerMessage::ExecutionError {
            failed,
            exception_message,
            exception_type,
            ..
        }) => {
            eprintln!(
                "error in node {} ({}): {exception_type}: {exception_message}",
                failed.node_id, failed.node_type
            );
            ExitCode::FAILURE
        }
        _ => {
            eprintln!("interrupted");
            ExitCode::from(130)
        }
    }
}

/// Shows execution as a progress bar on stderr, and node messages as lines (see [`Console`]).
struct CliObserver {
    console: Console,
    classes: HashMap<String, String>,
}

impl CliObserver {
    fn new(classes: HashMap<String, String>, quiet: bool) -> Self {
        let console = Console::new(quiet, 0);
        console.bar().set_style(
            ProgressStyle::with_template("{msg:28} [{bar:40}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        CliObserver { console, classes }
    }
}

impl ExecutionObserver for CliObserver {
    fn message(&self, message: ServerMessage) {
        let bar = self.console.bar();
        match message {
            ServerMessage::Executing {
                node: Some(node), ..
            } => {
                let class = self.classes.get(&node).cloned().unwrap_or_default();
                bar.set_message(format!("{node} {class}"));
                bar.set_length(0);
                bar.set_position(0);
            }
            ServerMessage::Progress { value, max, .. } => {
                bar.set_length(max);
                bar.set_position(value);
            }
            ServerMessage::ExecutionCached { nodes, .. } if !nodes.is_empty() => {
                self.console.line(&format!("cached: {}", nodes.join(", ")));
            }
            _ => {}
        }
    }

    fn preview(&self, _node_id: &str, _format: PreviewFormat, _image: Vec<u8>) {}

    fn text(&self, node_id: &str, text: &str) {
        for line in text.lines() {
            self.console.line(&format!("[{node_id}] {line}"));
        }
    }
}
