//! ComfyUI's `Canny` (image/preprocessors): kornia's edge map of each image
//! of the batch, as white lines on black in all three channels.

use candle_core::Tensor;

use crate::canny::{edges, Plane, MIN_SIDE};
use crate::sd3::types::Image;
use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext, Value, ValueEstimate,
};

pub struct Canny;

impl Node for Canny {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Canny", "image/preprocessors")
            .description("Canny edges (kornia's, as ComfyUI), for edge ControlNets.")
            .input(InputSpec::required(
                "image",
                InputKind::link(data_type::IMAGE),
            ))
            .input(InputSpec::required(
                "low_threshold",
                InputKind::float(0.4, 0.01, 0.99, 0.01),
            ))
            .input(InputSpec::required(
                "high_threshold",
                InputKind::float(0.8, 0.01, 0.99, 0.01),
            ))
            .output(OutputSpec::new(data_type::IMAGE))
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let image = inputs.handle::<Image>("image")?;
        let low = inputs.float("low_threshold")? as f32;
        let high = inputs.float("high_threshold")? as f32;
        if low > high {
            return Err(NodeError::invalid_input(
                "low_threshold",
                format!("{low} is above high_threshold {high}"),
            ));
        }
        let (batch, height, width, _) = image.pixels.dims4().map_err(anyhow::Error::from)?;
        if height < MIN_SIDE || width < MIN_SIDE {
            return Err(NodeError::invalid_input(
                "image",
                format!("{width}×{height}: Canny needs at least {MIN_SIDE} pixels a side"),
            ));
        }
        let mut out: Vec<f32> = Vec::with_capacity(batch * height * width * 3);
        for b in 0..batch {
            ctx.progress(b as u64, batch as u64)?;
            let rgb: Vec<f32> = image
                .pixels
                .get(b)
                .and_then(|p| p.flatten_all())
                .and_then(|p| p.to_vec1())
                .map_err(anyhow::Error::from)?;
            let plane = Plane::grey_from_rgb(width, height, &rgb);
            for edge in edges(&plane, low, high) {
                let v = if edge { 1.0 } else { 0.0 };
                out.extend([v, v, v]);
            }
        }
        let pixels = Tensor::from_vec(out, (batch, height, width, 3), image.pixels.device())
            .map_err(anyhow::Error::from)?;
        Ok(NodeOutput::values(vec![Value::handle(Image { pixels })]))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(
            inputs.bytes("image"),
        )]))
    }
}
