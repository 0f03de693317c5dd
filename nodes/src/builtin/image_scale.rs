//! ComfyUI's image resizing nodes: `ImageScale` (to a size, optionally
//! cropping to its aspect first), `ImageScaleBy` and `ImageScaleToTotalPixels`,
//! with ComfyUI's size arithmetic (Python's rounding) and resampling
//! ([`crate::resample`]).

use candle_core::Tensor;

use crate::resample::{self, Method};
use crate::sd3::types::Image;
use crate::{
    data_type, f32_bytes, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError,
    NodeOutput, NodeSchema, OutputSpec, RunContext, Value, ValueEstimate,
};

/// ComfyUI's `MAX_RESOLUTION`: the largest side a resize may produce.
pub const MAX_SIDE: i64 = 16_384;

pub struct ImageScale;
pub struct ImageScaleBy;
pub struct ImageScaleToTotalPixels;

impl Node for ImageScale {
    fn schema(&self) -> NodeSchema {
        let schema = NodeSchema::new("ImageScale", "image/upscaling")
            .display_name("Upscale Image")
            .description(
                "Resizes to width × height (0 keeps the aspect ratio from the other side).",
            )
            .input(InputSpec::required(
                "image",
                InputKind::link(data_type::IMAGE),
            ))
            .input(method_input(&resample::METHODS));
        with_size_inputs(schema).output(OutputSpec::new(data_type::IMAGE))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let image = inputs.handle::<Image>("image")?;
        let (h, w) = image_size(&image)?;
        let (width, height) = (inputs.int("width")?, inputs.int("height")?);
        let (width, height) = match (width, height) {
            (0, 0) => (w, h),
            (0, height) => (aspect_side(w, height, h).max(1), height as usize),
            (width, 0) => (width as usize, aspect_side(h, width, w).max(1)),
            (width, height) => (width as usize, height as usize),
        };
        let center = inputs.string("crop")? == "center";
        scaled(
            &image,
            width,
            height,
            method(inputs, &resample::METHODS)?,
            center,
        )
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let sized = match (inputs.int("width"), inputs.int("height")) {
            (Some(w), Some(h)) if w > 0 && h > 0 => f32_bytes(&[w as u64, h as u64, 3]),
            _ => 0,
        };
        Ok(output_estimate(inputs.bytes("image").max(sized)))
    }
}

impl Node for ImageScaleBy {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageScaleBy", "image/upscaling")
            .display_name("Upscale Image By")
            .description("Resizes by a factor.")
            .input(InputSpec::required(
                "image",
                InputKind::link(data_type::IMAGE),
            ))
            .input(method_input(&resample::METHODS))
            .input(InputSpec::required(
                "scale_by",
                InputKind::float(1.0, 0.01, 8.0, 0.01),
            ))
            .output(OutputSpec::new(data_type::IMAGE))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let image = inputs.handle::<Image>("image")?;
        let (h, w) = image_size(&image)?;
        let factor = inputs.float("scale_by")?;
        let (width, height) = (scaled_side(w, factor), scaled_side(h, factor));
        scaled(
            &image,
            width,
            height,
            method(inputs, &resample::METHODS)?,
            false,
        )
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let factor = inputs.float("scale_by").unwrap_or(8.0);
        let bytes = (inputs.bytes("image") as f64 * factor * factor).ceil() as u64;
        Ok(output_estimate(bytes))
    }
}

impl Node for ImageScaleToTotalPixels {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageScaleToTotalPixels", "image/upscaling")
            .display_name("Scale Image to Total Pixels")
            .description("Resizes to about this many megapixels, keeping the aspect ratio.")
            .input(InputSpec::required(
                "image",
                InputKind::link(data_type::IMAGE),
            ))
            .input(method_input(&resample::METHODS))
            .input(InputSpec::required(
                "megapixels",
                InputKind::float(1.0, 0.01, 16.0, 0.01),
            ))
            .input(InputSpec::optional(
                "resolution_steps",
                InputKind::int(1, 1, 256),
            ))
            .output(OutputSpec::new(data_type::IMAGE))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let image = inputs.handle::<Image>("image")?;
        let (h, w) = image_size(&image)?;
        let total = (inputs.float("megapixels")? * 1024.0 * 1024.0).trunc();
        let factor = (total / (w * h) as f64).sqrt();
        let steps = inputs.int("resolution_steps").unwrap_or(1).max(1) as f64;
        let side = |n: usize| {
            let stepped = (n as f64 * factor / steps).round_ties_even() * steps;
            (stepped as usize).max(1)
        };
        scaled(
            &image,
            side(w),
            side(h),
            method(inputs, &resample::METHODS)?,
            false,
        )
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let megapixels = inputs.float("megapixels").unwrap_or(16.0);
        let pixels = (megapixels * 1024.0 * 1024.0).ceil() as u64;
        Ok(output_estimate(
            inputs.bytes("image").max(f32_bytes(&[pixels, 3])),
        ))
    }
}

/// The `width`, `height` and `crop` inputs of the nodes that resize to a size.
pub(super) fn with_size_inputs(schema: NodeSchema) -> NodeSchema {
    schema
        .input(InputSpec::required(
            "width",
            InputKind::int(512, 0, MAX_SIDE),
        ))
        .input(InputSpec::required(
            "height",
            InputKind::int(512, 0, MAX_SIDE),
        ))
        .input(InputSpec::required(
            "crop",
            InputKind::combo(["disabled", "center"]),
        ))
}

pub(super) fn method_input(methods: &[&str]) -> InputSpec {
    InputSpec::required("upscale_method", InputKind::combo(methods.iter().copied()))
}

/// The `upscale_method` input, one of `methods`.
pub(super) fn method(inputs: &Inputs, methods: &[&str]) -> Result<Method, NodeError> {
    let name = inputs.string("upscale_method")?;
    methods
        .contains(&name)
        .then(|| Method::parse(name))
        .flatten()
        .ok_or_else(|| {
            NodeError::invalid_input("upscale_method", format!("unknown method '{name}'"))
        })
}

/// `round(n × factor)` as Python rounds, at least 1.
pub fn scaled_side(n: usize, factor: f64) -> usize {
    ((n as f64 * factor).round_ties_even() as usize).max(1)
}

/// The side that keeps the aspect ratio `side / other` when `other` becomes `target`.
pub fn aspect_side(side: usize, target: i64, other: usize) -> usize {
    (side as f64 * target as f64 / other as f64).round_ties_even() as usize
}

fn image_size(image: &Image) -> Result<(usize, usize), NodeError> {
    let (_, h, w, _) = image.pixels.dims4().map_err(anyhow::Error::from)?;
    Ok((h, w))
}

pub(super) fn output_estimate(bytes: u64) -> Estimate {
    Estimate::outputs(vec![ValueEstimate::bytes(bytes)]).with_working_bytes(bytes)
}

/// The image resized in ComfyUI's channels-first layout and back.
fn scaled(
    image: &Image,
    width: usize,
    height: usize,
    method: Method,
    center_crop: bool,
) -> Result<NodeOutput, NodeError> {
    if width as i64 > MAX_SIDE || height as i64 > MAX_SIDE {
        return Err(NodeError::invalid_input(
            "image",
            format!("{width}x{height} is larger than {MAX_SIDE} pixels a side"),
        ));
    }
    let resize = || -> candle_core::Result<Tensor> {
        let x = image.pixels.permute((0, 3, 1, 2))?;
        resized(&x, width, height, method, center_crop)?
            .permute((0, 2, 3, 1))?
            .contiguous()
    };
    let pixels = resize().map_err(anyhow::Error::from)?;
    Ok(NodeOutput::values(vec![Value::handle(Image { pixels })]))
}

/// ComfyUI's `common_upscale`: `x` (`[.., h, w]`) resized to `width × height`,
/// first cropped to that aspect ratio with `center_crop`.
pub(super) fn resized(
    x: &Tensor,
    width: usize,
    height: usize,
    method: Method,
    center_crop: bool,
) -> candle_core::Result<Tensor> {
    if center_crop {
        resample::resize(&crop_to_aspect(x, width, height)?, height, width, method)
    } else {
        resample::resize(x, height, width, method)
    }
}

/// ComfyUI's `common_upscale` "center" crop: the middle of `x` (`[.., h, w]`)
/// with the aspect ratio of `width × height`.
fn crop_to_aspect(x: &Tensor, width: usize, height: usize) -> candle_core::Result<Tensor> {
    let dims = x.dims();
    let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let (old, new) = (w as f64 / h as f64, width as f64 / height as f64);
    let (mut dx, mut dy) = (0usize, 0usize);
    if old > new {
        dx = ((w as f64 - w as f64 * (new / old)) / 2.0).round_ties_even() as usize;
    } else if old < new {
        dy = ((h as f64 - h as f64 * (old / new)) / 2.0).round_ties_even() as usize;
    }
    let rank = dims.len();
    x.narrow(rank - 2, dy, h - 2 * dy)?
        .narrow(rank - 1, dx, w - 2 * dx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn run(node: &dyn Node, inputs: Inputs) -> Vec<usize> {
        let paths = crate::Paths::new(std::env::temp_dir(), None);
        let cancel = crate::CancelToken::new();
        let ctx = RunContext::new("1", &paths, &cancel, &crate::NullSink);
        let out = node.run(&inputs, &ctx).unwrap();
        let Value::Handle(image) = &out.values[0] else {
            panic!("no image")
        };
        image
            .clone()
            .downcast::<Image>()
            .unwrap()
            .pixels
            .dims()
            .to_vec()
    }

    fn image(h: usize, w: usize) -> Value {
        let pixels = Tensor::zeros((2, h, w, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        Value::handle(Image { pixels })
    }

    #[test]
    fn sizes_follow_comfyui() {
        let scale = |w: i64, h: i64, crop: &str| {
            let inputs = Inputs::new()
                .with("image", image(30, 40))
                .with("upscale_method", Value::String("bilinear".into()))
                .with("width", Value::Int(w))
                .with("height", Value::Int(h))
                .with("crop", Value::String(crop.into()));
            run(&ImageScale, inputs)
        };
        assert_eq!(scale(0, 0, "disabled"), [2, 30, 40, 3]);
        assert_eq!(scale(0, 15, "disabled"), [2, 15, 20, 3]);
        assert_eq!(scale(20, 0, "center"), [2, 15, 20, 3]);
        assert_eq!(scale(64, 64, "center"), [2, 64, 64, 3]);
        let by = Inputs::new()
            .with("image", image(30, 40))
            .with("upscale_method", Value::String("area".into()))
            .with("scale_by", Value::Float(0.25));
        // round(7.5) = 8 and round(10) = 10, as Python rounds.
        assert_eq!(run(&ImageScaleBy, by), [2, 8, 10, 3]);
        let total = Inputs::new()
            .with("image", image(30, 40))
            .with("upscale_method", Value::String("lanczos".into()))
            .with("megapixels", Value::Float(0.01))
            .with("resolution_steps", Value::Int(8));
        // 10485 pixels, factor 2.956: 11.08 and 14.78 steps of 8, rounded.
        assert_eq!(run(&ImageScaleToTotalPixels, total), [2, 88, 120, 3]);
    }

    #[test]
    fn center_crop_keeps_the_middle() {
        let x = Tensor::arange(0f32, 12.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 2, 6))
            .unwrap();
        let cropped = crop_to_aspect(&x, 2, 2).unwrap();
        assert_eq!(
            cropped.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [2.0, 3.0, 8.0, 9.0]
        );
    }
}
