use candle_core::{Device, Tensor};

use crate::sd3::types::Latent;
use crate::{
    data_type, f32_bytes, filled_vec, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node,
    NodeError, NodeOutput, NodeSchema, OutputSpec, RunContext, Value, ValueEstimate,
};

/// SD3 latent channels.
const LATENT_CHANNELS: usize = 16;

/// Zero latents for a `width × height` SD3 image (ComfyUI `EmptySD3LatentImage`).
pub struct EmptySd3LatentImage;

impl Node for EmptySd3LatentImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("EmptySD3LatentImage", "latent/sd3")
            .display_name("EmptySD3LatentImage")
            .description("Zero SD3 latents (16 channels, 1/8 of the image size).")
            .input(InputSpec::required(
                "width",
                InputKind::int(1024, 16, 16384),
            ))
            .input(InputSpec::required(
                "height",
                InputKind::int(1024, 16, 16384),
            ))
            .input(InputSpec::required(
                "batch_size",
                InputKind::int(1, 1, 4096),
            ))
            .output(OutputSpec::new(data_type::LATENT))
    }

    fn validate_inputs(&self, inputs: &Inputs) -> Result<(), String> {
        for name in ["width", "height"] {
            if let Ok(v) = inputs.int(name) {
                if v % 16 != 0 {
                    return Err(format!("{name} must be a multiple of 16, got {v}"));
                }
            }
        }
        Ok(())
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let dim = |name: &str| latent_dim(inputs, name);
        let batch = inputs.int("batch_size")?.max(1) as usize;
        let shape = (batch, LATENT_CHANNELS, dim("height")?, dim("width")?);
        let len = shape.0 * shape.1 * shape.2 * shape.3;
        let zeros = filled_vec(len, 0f32, "the latent")?;
        let samples = Tensor::from_vec(zeros, shape, &Device::Cpu).map_err(anyhow::Error::from)?;
        Ok(NodeOutput::values(vec![Value::handle(Latent::new(
            samples,
        ))]))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(
            latent_bytes(inputs).unwrap_or(0),
        )]))
    }
}

/// The bytes of the SD3 latent that inputs `width`, `height` and `batch_size`
/// describe, when they are known before running.
pub(super) fn latent_bytes(inputs: &EstimateInputs) -> Option<u64> {
    let dim = |name: &str| inputs.int(name).map(|v| v.max(0) as u64 / 8);
    let batch = inputs.int("batch_size")?.max(1) as u64;
    Some(f32_bytes(&[
        batch,
        LATENT_CHANNELS as u64,
        dim("height")?,
        dim("width")?,
    ]))
}

/// The latent size for the pixel size in input `name` (a positive multiple of 16).
pub(super) fn latent_dim(inputs: &Inputs, name: &str) -> Result<usize, NodeError> {
    let v = inputs.int(name)?;
    if v <= 0 || v % 16 != 0 {
        return Err(NodeError::invalid_input(
            name,
            "must be a positive multiple of 16",
        ));
    }
    Ok(v as usize / 8)
}
