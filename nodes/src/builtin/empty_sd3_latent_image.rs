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
        validate_sides(inputs)
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        zero_latent(inputs)
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(
            latent_bytes(inputs).unwrap_or(0),
        )]))
    }
}

/// ComfyUI's `EmptyLatentImage`: its 4-channel zeros are widened to the
/// model's 16 channels by ComfyUI's samplers (`fix_empty_latent_channels`),
/// so here it gives the SD3 latent of [`EmptySd3LatentImage`] directly.
pub struct EmptyLatentImage;

impl Node for EmptyLatentImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("EmptyLatentImage", "latent")
            .display_name("Empty Latent Image")
            .description("Zero latents (SD3's 16 channels, 1/8 of the image size).")
            .input(InputSpec::required("width", side(512)))
            .input(InputSpec::required("height", side(512)))
            .input(InputSpec::required(
                "batch_size",
                InputKind::int(1, 1, 4096),
            ))
            .output(OutputSpec::new(data_type::LATENT))
    }

    fn validate_inputs(&self, inputs: &Inputs) -> Result<(), String> {
        validate_sides(inputs)
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        zero_latent(inputs)
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(
            latent_bytes(inputs).unwrap_or(0),
        )]))
    }
}

/// ComfyUI's side widget of the empty-latent nodes (steps of 8).
fn side(default: i64) -> InputKind {
    InputKind::Int {
        default,
        min: 16,
        max: 16384,
        step: 8,
        control_after_generate: false,
    }
}

/// SD3's 2×2 patches of 1/8-size latents need sides in multiples of 16.
fn validate_sides(inputs: &Inputs) -> Result<(), String> {
    for name in ["width", "height"] {
        if let Ok(v) = inputs.int(name) {
            if v % 16 != 0 {
                return Err(format!("{name} must be a multiple of 16, got {v}"));
            }
        }
    }
    Ok(())
}

fn zero_latent(inputs: &Inputs) -> Result<NodeOutput, NodeError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comfyuis_empty_latent_image_gives_the_sd3_latent() {
        let paths = crate::Paths::new(std::env::temp_dir(), None);
        let cancel = crate::CancelToken::new();
        let ctx = RunContext::new("1", &paths, &cancel, &crate::NullSink);
        let inputs = Inputs::new()
            .with("width", Value::Int(64))
            .with("height", Value::Int(48))
            .with("batch_size", Value::Int(2));
        let latent = |node: &dyn Node| {
            let out = node.run(&inputs, &ctx).unwrap();
            let Value::Handle(h) = &out.values[0] else {
                panic!("no latent")
            };
            h.clone().downcast::<Latent>().unwrap().samples.clone()
        };
        let generic = latent(&EmptyLatentImage);
        assert_eq!(generic.dims(), [2, 16, 6, 8]);
        let sd3 = latent(&EmptySd3LatentImage);
        assert_eq!(
            generic.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            sd3.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let odd = Inputs::new().with("width", Value::Int(72));
        let err = EmptyLatentImage.validate_inputs(&odd).unwrap_err();
        assert!(err.contains("multiple of 16"), "{err}");
    }
}
