//! ComfyUI's `SetLatentNoiseMask` (`nodes.py`): the latent with a noise mask,
//! which ComfyUI's samplers (`KSampler`, `KSamplerAdvanced`,
//! `SamplerCustomAdvanced`) honour: they denoise only where the mask is 1
//! (`sd3::sampling::Inpaint`).

use crate::sd3::types::{Latent, Mask};
use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext, Value, ValueEstimate,
};

pub struct SetLatentNoiseMask;

impl Node for SetLatentNoiseMask {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SetLatentNoiseMask", "latent/inpaint")
            .display_name("Set Latent Noise Mask")
            .description("Limits the samplers' denoising to where the mask is 1.")
            .input(InputSpec::required(
                "samples",
                InputKind::link(data_type::LATENT),
            ))
            .input(InputSpec::required(
                "mask",
                InputKind::link(data_type::MASK),
            ))
            .output(OutputSpec::new(data_type::LATENT))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let latent = inputs.handle::<Latent>("samples")?;
        let mask = inputs.handle::<Mask>("mask")?;
        // ComfyUI keeps any leading dimensions as the batch: `[-1, H, W]`.
        let dims = mask.values.dims();
        let noise_mask = match dims {
            [.., h, w] if *h > 0 && *w > 0 => {
                let batch = mask.values.elem_count() / (h * w);
                mask.values
                    .reshape((batch, *h, *w))
                    .map_err(anyhow::Error::from)?
            }
            _ => {
                return Err(NodeError::invalid_input(
                    "mask",
                    format!("a mask has a height and a width, this one is {dims:?}"),
                ))
            }
        };
        Ok(NodeOutput::values(vec![Value::handle(Latent {
            samples: latent.samples.clone(),
            noise_mask: Some(noise_mask),
        })]))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let bytes = inputs.bytes("samples").saturating_add(inputs.bytes("mask"));
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(bytes)]))
    }
}
