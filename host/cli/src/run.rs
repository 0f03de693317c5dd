//! `cretok run`: validate and execute one workflow file headless.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use clap::Args;
use cretok_nodes::Registry;
use serde_json::Value as Json;

use super::headless::{execute, failure_exit, Headless};
use super::{CustomNodeArgs, DataArgs, NodeSource};
use cretok_host::executor::Outcome;
use cretok_host::workflow;

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
    let record = match execute(&paths, &registry, prompt, extra_data, targets, args.quiet)? {
        Headless::Invalid => return Ok(ExitCode::from(2)),
        Headless::Ran(record) => record,
    };
    for ui in record.outputs.values() {
        for path in output_files(&paths.data_dir, ui) {
            println!("wrote {}", path.display());
        }
    }
    Ok(match record.outcome {
        Outcome::Success => ExitCode::SUCCESS,
        _ => failure_exit(&record),
    })
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
