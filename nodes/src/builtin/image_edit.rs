//! ComfyUI's `ImageInvert` and `ImageCrop`.

use crate::sd3::types::Image;
use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext, Value, ValueEstimate,
};

use super::image_scale::MAX_SIDE;

pub struct ImageInvert;
pub struct ImageCrop;

impl Node for ImageInvert {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageInvert", "image")
            .display_name("Invert Image")
            .description("1 - every pixel value.")
            .input(InputSpec::required(
                "image",
                InputKind::link(data_type::IMAGE),
            ))
            .output(OutputSpec::new(data_type::IMAGE))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let image = inputs.handle::<Image>("image")?;
        let pixels = image
            .pixels
            .affine(-1.0, 1.0)
            .map_err(anyhow::Error::from)?;
        Ok(NodeOutput::values(vec![Value::handle(Image { pixels })]))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(
            inputs.bytes("image"),
        )]))
    }
}

impl Node for ImageCrop {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageCrop", "image/transform")
            .display_name("Image Crop")
            .description(
                "The width × height region whose top-left corner is (x, y), within the image.",
            )
            .input(InputSpec::required(
                "image",
                InputKind::link(data_type::IMAGE),
            ))
            .input(InputSpec::required(
                "width",
                InputKind::int(512, 1, MAX_SIDE),
            ))
            .input(InputSpec::required(
                "height",
                InputKind::int(512, 1, MAX_SIDE),
            ))
            .input(InputSpec::required("x", InputKind::int(0, 0, MAX_SIDE)))
            .input(InputSpec::required("y", InputKind::int(0, 0, MAX_SIDE)))
            .output(OutputSpec::new(data_type::IMAGE))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let image = inputs.handle::<Image>("image")?;
        let (_, h, w, _) = image.pixels.dims4().map_err(anyhow::Error::from)?;
        let side = |name: &str| Ok::<_, NodeError>(inputs.int(name)?.max(0) as usize);
        // As ComfyUI: the corner is kept inside the image, the region cut at its edges.
        let x = side("x")?.min(w - 1);
        let y = side("y")?.min(h - 1);
        let width = side("width")?.min(w - x);
        let height = side("height")?.min(h - y);
        let pixels = image
            .pixels
            .narrow(1, y, height)
            .and_then(|p| p.narrow(2, x, width))
            .and_then(|p| p.contiguous())
            .map_err(anyhow::Error::from)?;
        Ok(NodeOutput::values(vec![Value::handle(Image { pixels })]))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(
            inputs.bytes("image"),
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn crops_within_the_image_and_inverts() {
        let pixels = Tensor::arange(0f32, 24.0, &Device::Cpu)
            .unwrap()
            .affine(1.0 / 24.0, 0.0)
            .unwrap()
            .reshape((1, 2, 4, 3))
            .unwrap();
        let paths = crate::Paths::new(std::env::temp_dir(), None);
        let cancel = crate::CancelToken::new();
        let ctx = RunContext::new("1", &paths, &cancel, &crate::NullSink);
        let inputs = Inputs::new()
            .with("image", Value::handle(Image { pixels }))
            .with("width", Value::Int(10))
            .with("height", Value::Int(1))
            .with("x", Value::Int(3))
            .with("y", Value::Int(9));
        let out = ImageCrop.run(&inputs, &ctx).unwrap();
        let Value::Handle(cropped) = &out.values[0] else {
            panic!("no image")
        };
        let cropped = cropped.clone().downcast::<Image>().unwrap();
        assert_eq!(
            cropped.pixels.dims(),
            [1, 1, 1, 3],
            "last pixel of the last row"
        );
        let inverted = ImageInvert
            .run(&Inputs::new().with("image", out.values[0].clone()), &ctx)
            .unwrap();
        let Value::Handle(inverted) = &inverted.values[0] else {
            panic!("no image")
        };
        let values: Vec<f32> = inverted
            .clone()
            .downcast::<Image>()
            .unwrap()
            .pixels
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want: Vec<f32> = [21.0f32, 22.0, 23.0]
            .iter()
            .map(|v| 1.0 - v / 24.0)
            .collect();
        assert!(
            values.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{values:?}"
        );
    }
}
