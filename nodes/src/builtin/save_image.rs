use std::path::Path;

use anyhow::Context;
use serde_json::json;

use crate::fsutil::{confined_join, split_filename_prefix, write_numbered};
use crate::sd3::types::Image;
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, RunContext,
};

/// Encodes 8-bit RGB as PNG with `tEXt` chunks.
pub(crate) fn encode_png(
    width: usize,
    height: usize,
    rgb: &[u8],
    text: &[(String, String)],
) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width as u32, height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    for (key, value) in text {
        encoder.add_text_chunk(key.clone(), value.clone())?;
    }
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(bytes)
}

/// ComfyUI's metadata: `prompt`, then each `extra_pnginfo` entry (`workflow`), as JSON.
fn metadata(ctx: &RunContext) -> Vec<(String, String)> {
    let mut text = Vec::new();
    if let Some(prompt) = ctx.prompt {
        text.push(("prompt".to_string(), prompt.to_string()));
    }
    if let Some(serde_json::Value::Object(extra)) = ctx.extra_pnginfo {
        for (key, value) in extra {
            text.push((key.clone(), value.to_string()));
        }
    }
    text
}

/// Writes each image of the batch as a numbered PNG in `root/<subfolder>`;
/// returns the editor's `{"images": [...]}`. `kind` is `output` or `temp`.
pub(crate) fn save_images(
    images: &Image,
    root: &Path,
    filename_prefix: &str,
    kind: &str,
    ctx: &RunContext,
) -> Result<serde_json::Value, NodeError> {
    let (subfolder, stem) = split_filename_prefix(filename_prefix)
        .map_err(|e| NodeError::invalid_input("filename_prefix", e.to_string()))?;
    let dir = confined_join(root, subfolder)
        .map_err(|e| NodeError::invalid_input("filename_prefix", e.to_string()))?;
    let (batch, height, width, channels) = images
        .pixels
        .dims4()
        .map_err(|e| NodeError::invalid_input("images", e.to_string()))?;
    if channels != 3 {
        return Err(NodeError::invalid_input(
            "images",
            format!("{channels} channels, expected 3"),
        ));
    }
    let text = metadata(ctx);
    let mut files = Vec::with_capacity(batch);
    for i in 0..batch {
        ctx.check_cancel()?;
        // ComfyUI: `np.clip(255 * x, 0, 255).astype(uint8)` (truncation).
        let rgb: Vec<u8> = images
            .pixels
            .get(i)
            .and_then(|x| x.flatten_all())
            .and_then(|x| x.to_dtype(candle_core::DType::F32))
            .and_then(|x| x.to_vec1::<f32>())
            .map_err(anyhow::Error::from)?
            .into_iter()
            .map(|v| (255.0 * v).clamp(0.0, 255.0) as u8)
            .collect();
        let png = encode_png(width, height, &rgb, &text)?;
        let filename = write_numbered(&dir, stem, "png", &png).context("saving the image")?;
        files.push(json!({"filename": filename, "subfolder": subfolder, "type": kind}));
    }
    Ok(json!({ "images": files }))
}

/// Saves images as PNG in the output folder, with the prompt and workflow
/// embedded as ComfyUI does (`tEXt` chunks `prompt` and `workflow`).
pub struct SaveImage;

impl Node for SaveImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SaveImage", "image")
            .display_name("Save Image")
            .description("Saves the images to the output folder.")
            .input(InputSpec::required(
                "images",
                InputKind::link(data_type::IMAGE),
            ))
            .input(InputSpec::required(
                "filename_prefix",
                InputKind::string("ComfyUI"),
            ))
            .output_node()
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let images = inputs.handle::<Image>("images")?;
        let prefix = inputs.string("filename_prefix")?;
        let ui = save_images(&images, &ctx.paths.output_dir(), prefix, "output", ctx)?;
        Ok(NodeOutput::default().with_ui(ui))
    }
}
