//! ComfyUI's `SaveLatent` and `LoadLatent`: latents in ComfyUI's `.latent`
//! files (safetensors: `latent_tensor` in the VAE's own space, the marker
//! `latent_format_version_0`, the prompt and workflow as metadata), so latents
//! move between ComfyUI and here both ways.
//!
//! Our `LATENT` values are in the space the transformer sees; ComfyUI keeps
//! the VAE's and applies SD3's scale and shift inside the model
//! (`comfy/latent_formats.py`, `SD3`), so both conversions happen here.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use serde_json::json;

use crate::fsutil::{confined_join, split_filename_prefix, write_numbered};
use crate::sd3::types::Latent;
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    Paths, RunContext, Value,
};

/// SD3's latent scale and shift (the VAE's `scaling_factor`, `shift_factor`).
const SCALE: f64 = 1.5305;
const SHIFT: f64 = 0.0609;
/// Files without the version marker hold SD1 latents scaled by this (ComfyUI's rule).
const LEGACY_SCALE: f64 = 0.18215;
const TENSOR_KEY: &str = "latent_tensor";
const VERSION_KEY: &str = "latent_format_version_0";
/// The largest `.latent` file read: 1 GiB (a 16-channel f32 latent of 64 images at 2048²).
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// SD3's latent channels.
const CHANNELS: usize = 16;

pub struct SaveLatent;

pub struct LoadLatent {
    pub paths: Arc<Paths>,
}

impl Node for SaveLatent {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SaveLatent", "_for_testing")
            .display_name("Save Latent")
            .description("Saves latents as a ComfyUI .latent file in the output folder.")
            .input(InputSpec::required(
                "samples",
                InputKind::link(data_type::LATENT),
            ))
            .input(InputSpec::required(
                "filename_prefix",
                InputKind::string("latents/ComfyUI"),
            ))
            .output_node()
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let latent = inputs.handle::<Latent>("samples")?;
        let prefix = inputs.string("filename_prefix")?;
        let invalid = |e: anyhow::Error| NodeError::invalid_input("filename_prefix", e.to_string());
        let (subfolder, stem) = split_filename_prefix(prefix).map_err(invalid)?;
        let dir = confined_join(&ctx.paths.output_dir(), subfolder).map_err(invalid)?;
        let bytes = encode(&latent, &metadata(ctx))?;
        let filename = write_numbered(&dir, stem, "latent", &bytes).context("saving the latent")?;
        let ui =
            json!({"latents": [{"filename": filename, "subfolder": subfolder, "type": "output"}]});
        Ok(NodeOutput::default().with_ui(ui))
    }
}

impl Node for LoadLatent {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadLatent", "_for_testing")
            .display_name("Load Latent")
            .description("Latents from a ComfyUI .latent file in the input folder.")
            .input(InputSpec::required(
                "latent",
                InputKind::combo(latent_files(&self.paths.input_dir())),
            ))
            .output(OutputSpec::new(data_type::LATENT))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let name = inputs.string("latent")?;
        let fail = |e: anyhow::Error| NodeError::invalid_input("latent", format!("{name}: {e:#}"));
        let path = confined_join(&self.paths.input_dir(), name).map_err(fail)?;
        let bytes = read_bounded(&path).map_err(fail)?;
        let samples = decode(&bytes).map_err(fail)?;
        Ok(NodeOutput::values(vec![Value::handle(Latent::new(
            samples,
        ))]))
    }
}

/// The safetensors bytes of a `.latent` file for `latent`.
fn encode(latent: &Latent, metadata: &HashMap<String, String>) -> anyhow::Result<Vec<u8>> {
    let raw = latent
        .samples
        .to_dtype(DType::F32)?
        .affine(1.0 / SCALE, SHIFT)?
        .contiguous()?;
    let marker = Tensor::zeros(0, DType::F32, &Device::Cpu)?;
    let tensors = [(TENSOR_KEY, raw), (VERSION_KEY, marker)];
    Ok(safetensors::serialize(tensors, Some(metadata.clone()))?)
}

/// Latents in the transformer's space from a `.latent` file's bytes.
fn decode(bytes: &[u8]) -> anyhow::Result<Tensor> {
    let file = safetensors::SafeTensors::deserialize(bytes).context("not a safetensors file")?;
    let view = file
        .tensor(TENSOR_KEY)
        .with_context(|| format!("no `{TENSOR_KEY}` in the file"))?;
    let shape = view.shape().to_vec();
    if shape.len() != 4 || shape[1] != CHANNELS {
        anyhow::bail!("latents of shape {shape:?}, SD3 needs [batch, {CHANNELS}, height, width]");
    }
    let dtype = DType::try_from(view.dtype()).context("an unsupported tensor type")?;
    let samples = Tensor::from_raw_buffer(view.data(), dtype, &shape, &Device::Cpu)?;
    let multiplier = if file.names().contains(&VERSION_KEY) {
        1.0
    } else {
        1.0 / LEGACY_SCALE
    };
    Ok(samples
        .to_dtype(DType::F32)?
        .affine(multiplier * SCALE, -SHIFT * SCALE)?)
}

fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    let size = std::fs::metadata(path)?.len();
    if size > MAX_FILE_BYTES {
        anyhow::bail!("{size} bytes, more than the {MAX_FILE_BYTES} a .latent file may have");
    }
    Ok(std::fs::read(path)?)
}

/// The `.latent` files of the input folder (not its subfolders, as ComfyUI).
fn latent_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.ends_with(".latent"))
        .collect();
    names.sort();
    names
}

/// ComfyUI's metadata: `prompt` and each `extra_pnginfo` entry, as JSON text.
fn metadata(ctx: &RunContext) -> HashMap<String, String> {
    let mut metadata = HashMap::new();
    if let Some(prompt) = ctx.prompt {
        metadata.insert("prompt".to_string(), prompt.to_string());
    }
    if let Some(serde_json::Value::Object(extra)) = ctx.extra_pnginfo {
        for (key, value) in extra {
            metadata.insert(key.clone(), value.to_string());
        }
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latent_survives_save_and_load_in_comfyuis_space() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Arc::new(Paths::new(dir.path(), None));
        let samples = Tensor::arange(0f32, 2.0 * 16.0 * 3.0 * 2.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 16, 3, 2))
            .unwrap();
        let cancel = crate::CancelToken::new();
        let ctx = RunContext::new("1", &paths, &cancel, &crate::NullSink);
        let inputs = Inputs::new()
            .with("samples", Value::handle(Latent::new(samples.clone())))
            .with("filename_prefix", Value::String("latents/test".into()));
        let saved = SaveLatent.run(&inputs, &ctx).unwrap();
        let entry = &saved.ui.unwrap()["latents"][0];
        assert_eq!(entry["filename"], "test_00001_.latent");
        let file = paths.output_dir().join("latents/test_00001_.latent");

        // ComfyUI's space: raw = z / 1.5305 + 0.0609, with the version marker.
        let bytes = std::fs::read(&file).unwrap();
        let stored = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert!(stored.names().contains(&VERSION_KEY));
        let raw: Vec<f32> = stored.tensor(TENSOR_KEY).unwrap().data()[4..8]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert!((raw[0] - (1.0 / 1.5305 + 0.0609) as f32).abs() < 1e-6);

        std::fs::create_dir_all(paths.input_dir()).unwrap();
        std::fs::copy(&file, paths.input_dir().join("back.latent")).unwrap();
        let loader = LoadLatent {
            paths: Arc::clone(&paths),
        };
        match loader.schema().find_input("latent").unwrap().kind.clone() {
            InputKind::Combo { options, .. } => assert_eq!(options, ["back.latent"]),
            other => panic!("{other:?}"),
        }
        let inputs = Inputs::new().with("latent", Value::String("back.latent".into()));
        let loaded = loader.run(&inputs, &ctx).unwrap();
        let Value::Handle(loaded) = &loaded.values[0] else {
            panic!("no latent")
        };
        let loaded = loaded.clone().downcast::<Latent>().unwrap();
        let diff = (&loaded.samples - &samples)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-4, "{diff}");

        std::fs::write(paths.input_dir().join("bad.latent"), b"not one").unwrap();
        let bad = Inputs::new().with("latent", Value::String("bad.latent".into()));
        let error = loader.run(&bad, &ctx).unwrap_err().to_string();
        assert!(
            error.contains("bad.latent: not a safetensors file"),
            "{error}"
        );
    }
}
