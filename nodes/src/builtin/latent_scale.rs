//! ComfyUI's `LatentUpscale` and `LatentUpscaleBy`: latents resized with torch's
//! interpolation modes ([`crate::resample`]). ComfyUI's `bislerp` is not offered.

use super::image_scale::{
    method, method_input, output_estimate, resized, scaled_side, with_size_inputs,
};
use crate::resample::Method;
use crate::sd3::types::Latent;
use crate::{
    data_type, f32_bytes, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError,
    NodeOutput, NodeSchema, OutputSpec, RunContext, Value,
};

/// The methods of latents: torch's modes (no Lanczos, which is for pixels).
const METHODS: [&str; 4] = ["nearest-exact", "bilinear", "area", "bicubic"];
/// Pixels per latent cell.
const LATENT_SCALE: usize = 8;
/// ComfyUI's smallest latent side, in pixels.
const MIN_SIDE: i64 = 64;

pub struct LatentUpscale;
pub struct LatentUpscaleBy;

impl Node for LatentUpscale {
    fn schema(&self) -> NodeSchema {
        let schema = NodeSchema::new("LatentUpscale", "latent")
            .display_name("Upscale Latent")
            .description(
                "Resizes latents to an image size (0 keeps the aspect ratio from the other side).",
            )
            .input(InputSpec::required(
                "samples",
                InputKind::link(data_type::LATENT),
            ))
            .input(method_input(&METHODS));
        with_size_inputs(schema).output(OutputSpec::new(data_type::LATENT))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let latent = inputs.handle::<Latent>("samples")?;
        let (h, w) = latent_size(&latent)?;
        let aspect = |side: usize, target: i64, other: usize| {
            ((side as f64 * target as f64 / other as f64).round_ties_even() as i64).max(MIN_SIDE)
        };
        // As ComfyUI: sizes in pixels, at least 64, the latent 1/8 of them.
        let (width, height) = match (inputs.int("width")?, inputs.int("height")?) {
            (0, 0) => return Ok(NodeOutput::values(vec![Value::Handle(latent)])),
            (0, height) => {
                let height = height.max(MIN_SIDE);
                (aspect(w, height, h), height)
            }
            (width, 0) => {
                let width = width.max(MIN_SIDE);
                (width, aspect(h, width, w))
            }
            (width, height) => (width.max(MIN_SIDE), height.max(MIN_SIDE)),
        };
        let cells = |pixels: i64| pixels as usize / LATENT_SCALE;
        let center = inputs.string("crop")? == "center";
        scaled(
            &latent,
            cells(width),
            cells(height),
            method(inputs, &METHODS)?,
            center,
        )
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let cells = |name: &str| inputs.int(name).map_or(0, |v| v.max(0) as u64 / 8);
        let sized = f32_bytes(&[16, cells("width"), cells("height")]);
        Ok(output_estimate(inputs.bytes("samples").max(sized)))
    }
}

impl Node for LatentUpscaleBy {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LatentUpscaleBy", "latent")
            .display_name("Upscale Latent By")
            .description("Resizes latents by a factor.")
            .input(InputSpec::required(
                "samples",
                InputKind::link(data_type::LATENT),
            ))
            .input(method_input(&METHODS))
            .input(InputSpec::required(
                "scale_by",
                InputKind::float(1.5, 0.01, 8.0, 0.01),
            ))
            .output(OutputSpec::new(data_type::LATENT))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let latent = inputs.handle::<Latent>("samples")?;
        let (h, w) = latent_size(&latent)?;
        let factor = inputs.float("scale_by")?;
        let (width, height) = (scaled_side(w, factor), scaled_side(h, factor));
        scaled(&latent, width, height, method(inputs, &METHODS)?, false)
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let factor = inputs.float("scale_by").unwrap_or(8.0);
        Ok(output_estimate(
            (inputs.bytes("samples") as f64 * factor * factor).ceil() as u64,
        ))
    }
}

fn latent_size(latent: &Latent) -> Result<(usize, usize), NodeError> {
    let (_, _, h, w) = latent.samples.dims4().map_err(anyhow::Error::from)?;
    Ok((h, w))
}

fn scaled(
    latent: &Latent,
    width: usize,
    height: usize,
    method: Method,
    center_crop: bool,
) -> Result<NodeOutput, NodeError> {
    if width == 0 || height == 0 {
        return Err(NodeError::invalid_input(
            "samples",
            format!("cannot resize latents to {width}x{height} cells"),
        ));
    }
    let samples = resized(&latent.samples, width, height, method, center_crop)
        .map_err(anyhow::Error::from)?;
    // ComfyUI copies the LATENT dict: a noise mask stays (the samplers resize it).
    let noise_mask = latent.noise_mask.clone();
    Ok(NodeOutput::values(vec![Value::handle(Latent {
        samples,
        noise_mask,
    })]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn dims(node: &dyn Node, inputs: Inputs) -> Vec<usize> {
        let paths = crate::Paths::new(std::env::temp_dir(), None);
        let cancel = crate::CancelToken::new();
        let ctx = RunContext::new("1", &paths, &cancel, &crate::NullSink);
        let out = node.run(&inputs, &ctx).unwrap();
        let Value::Handle(latent) = &out.values[0] else {
            panic!("no latent")
        };
        latent
            .clone()
            .downcast::<Latent>()
            .unwrap()
            .samples
            .dims()
            .to_vec()
    }

    #[test]
    fn latent_sizes_follow_comfyui() {
        let latent = || {
            let samples =
                Tensor::zeros((1, 16, 64, 96), candle_core::DType::F32, &Device::Cpu).unwrap();
            Value::handle(Latent::new(samples))
        };
        let upscale = |w: i64, h: i64| {
            Inputs::new()
                .with("samples", latent())
                .with("upscale_method", Value::String("bicubic".into()))
                .with("width", Value::Int(w))
                .with("height", Value::Int(h))
                .with("crop", Value::String("disabled".into()))
        };
        assert_eq!(dims(&LatentUpscale, upscale(1536, 1024)), [1, 16, 128, 192]);
        assert_eq!(dims(&LatentUpscale, upscale(0, 256)), [1, 16, 32, 48]);
        assert_eq!(
            dims(&LatentUpscale, upscale(8, 8)),
            [1, 16, 8, 8],
            "at least 64 px"
        );
        assert_eq!(dims(&LatentUpscale, upscale(0, 0)), [1, 16, 64, 96]);
        let by = Inputs::new()
            .with("samples", latent())
            .with("upscale_method", Value::String("nearest-exact".into()))
            .with("scale_by", Value::Float(1.5));
        assert_eq!(dims(&LatentUpscaleBy, by), [1, 16, 96, 144]);
    }
}
