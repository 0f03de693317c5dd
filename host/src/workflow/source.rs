//! Reading a workflow file in any form users share: an API-format prompt
//! (or a saved `POST /prompt` body), an editor UI workflow, or a PNG written
//! by SaveImage.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::Value as Json;

use super::png_text;
use super::to_api;
use super::ui::UiWorkflow;
use crate::validation::NodeTypes;

/// A workflow ready to run.
#[derive(Debug, Clone)]
pub struct WorkflowFile {
    /// The API-format prompt.
    pub prompt: Json,
    /// The editor workflow it came from, if known; SaveImage embeds it as ComfyUI does.
    pub workflow: Option<Json>,
}

impl WorkflowFile {
    /// The `extra_data` of a prompt job carrying the editor workflow into saved PNGs.
    pub fn extra_data(&self) -> Json {
        match &self.workflow {
            Some(workflow) => serde_json::json!({"extra_pnginfo": {"workflow": workflow}}),
            None => serde_json::json!({}),
        }
    }
}

/// Reads and, if needed, converts the file at `path`.
pub fn load(path: &Path, types: &dyn NodeTypes) -> anyhow::Result<WorkflowFile> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    from_bytes(&bytes, types).with_context(|| format!("{}", path.display()))
}

pub fn from_bytes(bytes: &[u8], types: &dyn NodeTypes) -> anyhow::Result<WorkflowFile> {
    if png_text::is_png(bytes) {
        return from_png(bytes, types);
    }
    let json: Json = serde_json::from_slice(bytes).context("not JSON and not a PNG")?;
    from_json(json, types)
}

fn from_json(json: Json, types: &dyn NodeTypes) -> anyhow::Result<WorkflowFile> {
    if UiWorkflow::detect(&json) {
        let ui = UiWorkflow::parse(&json).context("reading the editor workflow")?;
        let prompt = to_api(&ui, types)?;
        return Ok(WorkflowFile {
            prompt,
            workflow: Some(json),
        });
    }
    // A saved `POST /prompt` body: the prompt, and the workflow the editor sent with it.
    if let Some(prompt) = json.get("prompt").filter(|p| p.is_object()) {
        return Ok(WorkflowFile {
            prompt: prompt.clone(),
            workflow: json.pointer("/extra_data/extra_pnginfo/workflow").cloned(),
        });
    }
    Ok(WorkflowFile {
        prompt: json,
        workflow: None,
    })
}

/// The embedded `prompt` chunk, or else the embedded editor `workflow`, converted.
fn from_png(bytes: &[u8], types: &dyn NodeTypes) -> anyhow::Result<WorkflowFile> {
    let chunks = png_text::text_chunks(bytes)?;
    let workflow = png_text::text(&chunks, "workflow")
        .map(|t| serde_json::from_str::<Json>(&t))
        .transpose()
        .context("the embedded workflow is not JSON")?;
    if let Some(prompt) = png_text::text(&chunks, "prompt") {
        let prompt: Json =
            serde_json::from_str(&prompt).context("the embedded prompt is not JSON")?;
        return Ok(WorkflowFile { prompt, workflow });
    }
    match workflow {
        Some(workflow) => from_json(workflow, types),
        None => bail!("the PNG embeds no prompt and no workflow (was it written by SaveImage?)"),
    }
}
