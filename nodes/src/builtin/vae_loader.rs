//! ComfyUI's `VAELoader`: an SD3 VAE alone, from `models/vae`, as the `VAE` that
//! `CheckpointLoaderSimple` gives.

use std::path::PathBuf;
use std::sync::Arc;

use super::loader_options::{file_fingerprint, model_device};
use crate::sd3::checkpoint::components::VaeFile;
use crate::sd3::precision::WeightDtype;
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    Paths, RunContext, Value,
};

const VAE_FOLDER: &str = "vae";

pub struct VaeLoader {
    pub paths: Arc<Paths>,
}

impl VaeLoader {
    fn vae_path(&self, inputs: &Inputs) -> Result<PathBuf, NodeError> {
        let name = inputs.string("vae_name")?;
        self.paths
            .find_model(&[VAE_FOLDER], name)
            .map_err(|e| NodeError::invalid_input("vae_name", format!("{e:#}")))
    }
}

impl Node for VaeLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAELoader", "loaders")
            .display_name("Load VAE")
            .description("Loads an SD3 VAE file.")
            .input(InputSpec::required(
                "vae_name",
                InputKind::combo(self.paths.list_models(VAE_FOLDER, false)),
            ))
            .output(OutputSpec::new(data_type::VAE))
    }

    fn fingerprint(&self, inputs: &Inputs) -> Option<String> {
        file_fingerprint(&self.vae_path(inputs).ok()?)
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let path = self.vae_path(inputs)?;
        let file = VaeFile::open(&path)
            .map_err(|e| NodeError::invalid_input("vae_name", format!("{e:#}")))?;
        ctx.text(&format!("VAE: {}", path.display()));
        let (device, dtype) = model_device(WeightDtype::Stored, ctx)?;
        let vae = file.load(dtype, &device)?;
        Ok(NodeOutput::values(vec![Value::handle(vae)]))
    }
}
