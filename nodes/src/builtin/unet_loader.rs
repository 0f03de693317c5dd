//! ComfyUI's `UNETLoader`: an SD3 / SD3.5 diffusion model (MMDiT) alone, from
//! `models/diffusion_models` (or the legacy `models/unet`), as the `MODEL` that
//! `CheckpointLoaderSimple` gives.

use std::path::PathBuf;
use std::sync::Arc;

use super::loader_options::{file_fingerprint, model_device, weight_dtype, UNET_WEIGHT_DTYPES};
use crate::sd3::checkpoint::components::DiffusionModelFile;
use crate::sd3::sampling::{DiffusionModel, DEFAULT_SHIFT};
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    Paths, RunContext, Value,
};

/// Where ComfyUI looks for diffusion models: `diffusion_models`, then its legacy name `unet`.
const DIFFUSION_MODEL_FOLDERS: &[&str] = &["diffusion_models", "unet"];

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
                InputSpec::required("weight_dtype", InputKind::combo(UNET_WEIGHT_DTYPES))
                    .with_tooltip(
                        "int8: linear weights quantised to 8 bits at load (CPU only); \
                     the fp8 options load the weights as stored",
                    ),
            )
            .output(OutputSpec::new(data_type::MODEL))
    }

    fn fingerprint(&self, inputs: &Inputs) -> Option<String> {
        file_fingerprint(&self.model_path(inputs).ok()?)
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
        let (device, dtype) = model_device(weight_dtype, ctx)?;
        let mmdit = file.load(dtype, &device, weight_dtype)?;
        let model = DiffusionModel::new(mmdit, DEFAULT_SHIFT);
        Ok(NodeOutput::values(vec![Value::handle(model)]))
    }
}
