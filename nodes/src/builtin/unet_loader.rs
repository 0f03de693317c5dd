//! ComfyUI's `UNETLoader`: an SD3 / SD3.5 diffusion model (MMDiT) alone, from
//! `models/diffusion_models` (or the legacy `models/unet`), as the `MODEL` that
//! `CheckpointLoaderSimple` gives.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Device;

use crate::sd3::checkpoint::components::DiffusionModelFile;
use crate::sd3::checkpoint::default_dtype;
use crate::sd3::precision::WeightDtype;
use crate::sd3::sampling::{DiffusionModel, DEFAULT_SHIFT};
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    Paths, RunContext, Value,
};

/// Where ComfyUI looks for diffusion models: `diffusion_models`, then its legacy name `unet`.
const DIFFUSION_MODEL_FOLDERS: &[&str] = &["diffusion_models", "unet"];

/// ComfyUI's `weight_dtype` options, then ours. ComfyUI's float8 options store the
/// weights in float8 to save memory; here they load as stored (see `docs/comfyui.md`).
const WEIGHT_DTYPES: [&str; 5] = [
    "default",
    "fp8_e4m3fn",
    "fp8_e4m3fn_fast",
    "fp8_e5m2",
    "int8",
];

pub struct UnetLoader {
    pub paths: Arc<Paths>,
}

impl UnetLoader {
    fn model_path(&self, inputs: &Inputs) -> Result<PathBuf, NodeError> {
        let name = inputs.string("unet_name")?;
        self.paths
            .find_model(DIFFUSION_MODEL_FOLDERS, name)
            .map_err(|e| NodeError::invalid_input("unet_name", format!("{e:#}")))
    }
}

/// The `weight_dtype` input as ours, with a note when a ComfyUI float8 option loads as stored.
fn weight_dtype(inputs: &Inputs) -> Result<(WeightDtype, Option<String>), NodeError> {
    let name = inputs.string("weight_dtype")?;
    match WeightDtype::from_name(name) {
        Some(dtype) => Ok((dtype, None)),
        None if WEIGHT_DTYPES.contains(&name) => Ok((
            WeightDtype::Stored,
            Some(format!(
                "weight_dtype {name}: weights load as stored (float8 storage is not applied here)"
            )),
        )),
        None => Err(NodeError::invalid_input(
            "weight_dtype",
            format!("`{name}` is not one of {WEIGHT_DTYPES:?}"),
        )),
    }
}

impl Node for UnetLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("UNETLoader", "advanced/loaders")
            .display_name("Load Diffusion Model")
            .description("Loads an SD3 or SD3.5 diffusion model (MMDiT) file.")
            .input(InputSpec::required(
                "unet_name",
                InputKind::combo(self.paths.list_models_in(DIFFUSION_MODEL_FOLDERS)),
            ))
            .input(
                InputSpec::required("weight_dtype", InputKind::combo(WEIGHT_DTYPES)).with_tooltip(
                    "int8: linear weights quantised to 8 bits at load (CPU only); \
                     the fp8 options load the weights as stored",
                ),
            )
            .output(OutputSpec::new(data_type::MODEL))
    }

    fn fingerprint(&self, inputs: &Inputs) -> Option<String> {
        let meta = std::fs::metadata(self.model_path(inputs).ok()?).ok()?;
        Some(format!("{:?}/{}", meta.modified().ok()?, meta.len()))
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let path = self.model_path(inputs)?;
        let (weight_dtype, note) = weight_dtype(inputs)?;
        let file = DiffusionModelFile::open(&path)
            .map_err(|e| NodeError::invalid_input("unet_name", format!("{e:#}")))?;
        ctx.text(&file.summary());
        if let Some(note) = note {
            ctx.text(&note);
        }
        let device = Device::cuda_if_available(0).map_err(anyhow::Error::from)?;
        if weight_dtype == WeightDtype::Int8 && !device.is_cpu() {
            ctx.text("weight_dtype int8 applies on the CPU only: weights load as usual");
        }
        let mmdit = file.load(default_dtype(&device), &device, weight_dtype)?;
        let model = DiffusionModel::new(mmdit, DEFAULT_SHIFT);
        Ok(NodeOutput::values(vec![Value::handle(model)]))
    }
}
