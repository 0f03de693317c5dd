use std::path::Path;

use anyhow::Context;
use png::text_metadata::{ITXtChunk, TEXtChunk};
use serde_json::json;

use crate::fsutil::{confined_join, split_filename_prefix, write_numbered};
use crate::sd3::types::Image;
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, RunContext,
};

/// Encodes 8-bit RGB as PNG with the text chunks in order, before the image
/// data, written as PIL writes them for ComfyUI (see [`write_text_chunk`]).
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
    let mut writer = encoder.write_header()?;
    for (key, value) in text {
        write_text_chunk(&mut writer, key, value)?;
    }
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(bytes)
}

/// `tEXt` when the text is Latin-1, else an uncompressed UTF-8 `iTXt`
/// (PIL's `PngInfo.add_text`), so any prompt or note can be saved.
fn write_text_chunk<W: std::io::Write>(
    writer: &mut png::Writer<W>,
    keyword: &str,
    text: &str,
) -> Result<(), png::EncodingError> {
    if text.chars().all(|c| u32::from(c) <= 0xFF) {
        writer.write_text_chunk(&TEXtChunk::new(keyword, text))
    } else {
        writer.write_text_chunk(&ITXtChunk::new(keyword, text))
    }
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
/// embedded as ComfyUI does (text chunks `prompt` and `workflow`).
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

#[cfg(test)]
mod tests {
    use super::encode_png;

    /// `(keyword, text, is_itxt)` of every text chunk, in file order.
    fn chunks(png: &[u8]) -> Vec<(String, String, bool)> {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
        decoder.set_ignore_text_chunk(false);
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        let latin1 = info
            .uncompressed_latin1_text
            .iter()
            .map(|c| (c.keyword.clone(), c.text.clone(), false));
        let utf8 = info
            .utf8_text
            .iter()
            .map(|c| (c.keyword.clone(), c.get_text().unwrap(), true));
        latin1.chain(utf8).collect()
    }

    #[test]
    fn latin1_text_is_text_and_the_rest_is_uncompressed_itxt() {
        let text = [
            ("prompt", "caf\u{e9} \u{b5}"),
            (
                "workflow",
                "\u{2014} \u{201c}quoted\u{201d} \u{732b} \u{1f98a}",
            ),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let png = encode_png(1, 1, &[0, 0, 0], &text).unwrap();
        let found = chunks(&png);
        assert_eq!(
            found,
            [
                (text[0].0.clone(), text[0].1.clone(), false),
                (text[1].0.clone(), text[1].1.clone(), true),
            ]
        );
        // Uncompressed: the UTF-8 bytes stand in the file as they are.
        let raw = text[1].1.as_bytes();
        assert!(png.windows(raw.len()).any(|w| w == raw));
    }
}
