//! What the model loader nodes share: the `weight_dtype` option, the device and dtype a model
//! loads in, the user's T5 tokenizer, and the fingerprint of a model file.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::sd3::checkpoint::default_dtype;
use crate::sd3::precision::WeightDtype;
use crate::sd3::tokenizer::T5Tokenizer;
use crate::{Inputs, NodeError, Paths, RunContext};

pub(crate) const TEXT_ENCODERS: &str = "text_encoders";

/// ComfyUI's `weight_dtype` options, then ours. ComfyUI's float8 options store the
/// weights in float8 to save memory; here they load as stored (see `docs/comfyui.md`).
pub(crate) const UNET_WEIGHT_DTYPES: [&str; 5] = [
    "default",
    "fp8_e4m3fn",
    "fp8_e4m3fn_fast",
    "fp8_e5m2",
    "int8",
];

/// The `weight_dtype` input (`default` when absent: workflows written before it existed), with
/// a note when a ComfyUI float8 option loads as stored.
pub(crate) fn weight_dtype(inputs: &Inputs) -> Result<(WeightDtype, Option<String>), NodeError> {
    if inputs.get("weight_dtype").is_none() {
        return Ok((WeightDtype::Stored, None));
    }
    let name = inputs.string("weight_dtype")?;
    match WeightDtype::from_name(name) {
        Some(dtype) => Ok((dtype, None)),
        None if UNET_WEIGHT_DTYPES.contains(&name) => Ok((
            WeightDtype::Stored,
            Some(format!(
                "weight_dtype {name}: weights load as stored (float8 storage is not applied here)"
            )),
        )),
        None => Err(NodeError::invalid_input(
            "weight_dtype",
            format!("`{name}` is not one of {UNET_WEIGHT_DTYPES:?}"),
        )),
    }
}

/// The device a model loads on (the first GPU when there is one) and its compute dtype;
/// says when `weight_dtype` does not apply there.
pub(crate) fn model_device(
    weight_dtype: WeightDtype,
    ctx: &RunContext,
) -> Result<(Device, DType), NodeError> {
    let device = Device::cuda_if_available(0).map_err(anyhow::Error::from)?;
    if weight_dtype == WeightDtype::Int8 && !device.is_cpu() {
        ctx.text("weight_dtype int8 applies on the CPU only: weights load as usual");
    }
    let dtype = default_dtype(&device);
    Ok((device, dtype))
}

/// Where a T5 tokenizer of the user's, overriding the shipped one, would be.
pub(crate) fn user_t5_tokenizer_path(paths: &Paths) -> PathBuf {
    paths
        .model_folder(TEXT_ENCODERS)
        .join("t5_tokenizer")
        .join("tokenizer.json")
}

/// The T5 `tokenizer.json` at `path` when present, else the shipped one.
pub(crate) fn t5_tokenizer(path: &Path) -> anyhow::Result<T5Tokenizer> {
    if path.is_file() {
        T5Tokenizer::from_file(path)
    } else {
        T5Tokenizer::shipped()
    }
}

/// A model file's modification time and size: they change when the file is replaced.
pub(crate) fn file_fingerprint(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    Some(format!("{:?}/{}", meta.modified().ok()?, meta.len()))
}
