use candle_core::{DType, Tensor};

use crate::sd3::types::Image;
use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext, Value, ValueEstimate,
};

/// Joins two image batches into one (ComfyUI's `ImageBatch`), to compare the
/// results of several branches in one grid. Both must have the same size.
pub struct ImageBatch;

impl Node for ImageBatch {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageBatch", "image")
            .display_name("Batch Images")
            .description("Joins two image batches into one: image1's images, then image2's.")
            .input(InputSpec::required(
                "image1",
                InputKind::link(data_type::IMAGE),
            ))
            .input(InputSpec::required(
                "image2",
                InputKind::link(data_type::IMAGE),
            ))
            .output(OutputSpec::new(data_type::IMAGE))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let first = inputs.handle::<Image>("image1")?;
        let second = inputs.handle::<Image>("image2")?;
        let pixels = join(&first.pixels, &second.pixels)?;
        Ok(NodeOutput::values(vec![Value::handle(Image { pixels })]))
    }

    /// The joined batch, plus f32 copies of both inputs while joining.
    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let both = inputs
            .bytes("image1")
            .saturating_add(inputs.bytes("image2"));
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(both)]).with_working_bytes(both))
    }
}

fn join(first: &Tensor, second: &Tensor) -> Result<Tensor, NodeError> {
    concat(&[first, second], "image2")
}

/// The batches one after the other, as f32 on the first one's device; they
/// must share height, width and channels (`input` names the one that does not).
pub(super) fn concat(batches: &[&Tensor], input: &str) -> Result<Tensor, NodeError> {
    let Some(first) = batches.first() else {
        return Err(NodeError::invalid_input(input, "no image to join"));
    };
    let want = &first.dims()[1..];
    let mut joined = Vec::with_capacity(batches.len());
    for batch in batches {
        let got = &batch.dims()[1..];
        if got != want {
            return Err(NodeError::invalid_input(
                input,
                format!(
                    "{got:?} (height, width, channels) does not match the first image's {want:?}"
                ),
            ));
        }
        let batch = batch
            .to_device(first.device())
            .and_then(|b| b.to_dtype(DType::F32))
            .map_err(anyhow::Error::from)?;
        joined.push(batch);
    }
    Ok(Tensor::cat(&joined, 0).map_err(anyhow::Error::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn joins_in_order() {
        let a = Tensor::zeros((2, 3, 4, 3), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::ones((1, 3, 4, 3), DType::F32, &Device::Cpu).unwrap();
        let joined = join(&a, &b).unwrap();
        assert_eq!(joined.dims(), [3, 3, 4, 3]);
        let last: Vec<f32> = joined
            .get(2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(last.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn refuses_different_sizes_naming_image2() {
        let a = Tensor::zeros((1, 3, 4, 3), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros((1, 4, 4, 3), DType::F32, &Device::Cpu).unwrap();
        let err = join(&a, &b).unwrap_err().to_string();
        assert!(err.contains("image2") && err.contains("[4, 4, 3]"), "{err}");
    }
}
