//! `cretok run`: validate and execute one workflow file headless.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use cretok_nodes::{CancelToken, PreviewFormat, Registry};
use indicatif::ProgressStyle;
use serde_json::Value as Json;

use super::console::Console;
use super::{CustomNodeArgs, DataArgs, NodeSource};
use crate::executor::{ExecutionObserver, Executor, Outcome, PromptJob};
use crate::protocol::ServerMessage;
use crate::validation::validate;
use crate::workflow;

#[derive(Args)]
pub struct RunArgs {
    /// The workflow: API format (`{id: {class_type, inputs}}`), the editor's
    /// UI format (converted with the node schemas), or a PNG written by SaveImage.
    workflow: PathBuf,
    /// Override an input: `--set 6.text="a lettuce"` (JSON values, or plain text).
    #[arg(long = "set", value_name = "NODE.INPUT=VALUE")]
    sets: Vec<String>,
    /// Run only this output node and the nodes it needs (repeatable; the
    /// editor's "queue selected output nodes", ComfyUI's
    /// `partial_execution_targets`). Default: every output node.
    #[arg(long = "target", value_name = "NODE")]
    targets: Vec<String>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    custom: CustomNodeArgs,
}

/// Refuses a `--target` that is not an output node of the prompt (validation
/// would leave it out silently, as ComfyUI does for the editor).
fn check_targets(prompt: &Json, registry: &Registry, targets: &[String]) -> anyhow::Result<()> {
    for target in targets {
        let Some(class_type) = prompt
            .get(target)
            .and_then(|node| node.get("class_type"))
            .and_then(Json::as_str)
        else {
            bail!("--target {target}: the workflow has no node {target}");
        };
        if !registry
            .get(class_type)
            .is_some_and(|n| n.schema().output_node)
        {
            bail!("--target {target}: node {target} ({class_type}) is not an output node");
        }
    }
    Ok(())
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let paths = args.data.paths();
    let (registry, _) = NodeSource::new(Arc::clone(&paths), &args.custom)?.registry();
    let file = workflow::load(&args.workflow, &registry)?;
    let extra_data = file.extra_data();
    let mut prompt = file.prompt;
    for set in &args.sets {
        apply_set(&mut prompt, set)?;
    }
    check_targets(&prompt, &registry, &args.targets)?;
    let targets = (!args.targets.is_empty()).then_some(args.targets.as_slice());
    let valid = match validate(&prompt, &registry, targets) {
        Ok(v) => v,
        Err(failure) => {
            eprintln!("{}", failure.report());
            eprintln!("{}", serde_json::to_string_pretty(&failure.to_json())?);
            return Ok(ExitCode::from(2));
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
    let observer = CliObserver::new(classes, args.quiet);
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

    let record = Executor::new(Arc::clone(&paths)).run(&job, &registry, &cancel, &observer);
    observer.console.bar().finish_and_clear();
    for ui in record.outputs.values() {
        for path in output_files(&paths.data_dir, ui) {
            println!("wrote {}", path.display());
        }
    }
    match (record.outcome, record.failure()) {
        (Outcome::Success, _) => Ok(ExitCode::SUCCESS),
        (
            _,
            Some(ServerMessage::ExecutionError {
                failed,
                exception_message,
                exception_type,
                ..
            }),
        ) => {
            eprintln!(
                "error in node {} ({}): {exception_type}: {exception_message}",
                failed.node_id, failed.node_type
            );
            Ok(ExitCode::FAILURE)
        }
        _ => {
            eprintln!("interrupted");
            Ok(ExitCode::from(130))
        }
    }
}

/// Applies `NODE.INPUT=VALUE` to the prompt.
fn apply_set(prompt: &mut Json, set: &str) -> anyhow::Result<()> {
    let Some((target, value)) = set.split_once('=') else {
        bail!("--set {set}: expected NODE.INPUT=VALUE");
    };
    let Some((node, input)) = target.split_once('.') else {
        bail!("--set {set}: expected NODE.INPUT=VALUE");
    };
    let Some(inputs) = prompt
        .get_mut(node)
        .and_then(|n| n.get_mut("inputs"))
        .and_then(Json::as_object_mut)
    else {
        bail!("--set {set}: the workflow has no node '{node}'");
    };
    let value = serde_json::from_str(value).unwrap_or_else(|_| Json::from(value));
    inputs.insert(input.to_owned(), value);
    Ok(())
}

/// Files named by a node's UI output (`images`, `files`), as paths.
fn output_files(data_dir: &Path, ui: &Json) -> Vec<PathBuf> {
    ["images", "files"]
        .iter()
        .filter_map(|key| ui.get(*key).and_then(Json::as_array))
        .flatten()
        .filter_map(|f| {
            let name = f.get("filename")?.as_str()?;
            let sub = f.get("subfolder").and_then(Json::as_str).unwrap_or("");
            let kind = f.get("type").and_then(Json::as_str).unwrap_or("output");
            Some(data_dir.join(kind).join(sub).join(name))
        })
        .collect()
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
