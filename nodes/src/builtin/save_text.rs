use anyhow::Context;
use serde_json::json;

use crate::fsutil::{confined_join, split_filename_prefix, write_numbered};
use crate::{InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, RunContext};

/// Writes text to a numbered `.txt` file in the output folder (a prompt log, a
/// generated caption). `filename_prefix` may name a subfolder: `blends/pair`.
pub struct SaveText;

impl Node for SaveText {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SaveText", "utils/string")
            .display_name("Save Text")
            .description("Writes the text to the output folder and shows it.")
            .input(InputSpec::required("text", InputKind::text("")))
            .input(InputSpec::required(
                "filename_prefix",
                InputKind::string("text"),
            ))
            .output_node()
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let text = inputs.string("text")?;
        let prefix = inputs.string("filename_prefix")?;
        let (subfolder, stem) = split_filename_prefix(prefix)
            .map_err(|e| NodeError::invalid_input("filename_prefix", e.to_string()))?;
        let dir = confined_join(&ctx.paths.output_dir(), subfolder)
            .map_err(|e| NodeError::invalid_input("filename_prefix", e.to_string()))?;
        let filename =
            write_numbered(&dir, stem, "txt", text.as_bytes()).context("saving the text file")?;
        Ok(NodeOutput::default().with_ui(json!({
            "text": [text],
            "files": [{"filename": filename, "subfolder": subfolder, "type": "output"}],
        })))
    }
}
