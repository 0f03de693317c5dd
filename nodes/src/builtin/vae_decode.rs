use candle_core::Tensor;

use crate::sd3::types::{Image, Latent};
use crate::sd3::vae::AutoEncoder;
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    RunContext, Value,
};

/// Decodes latents to pixels `[b, h, w, 3]` in 0..1 (`(x / 2 + 0.5).clamp(0, 1)`,
/// as diffusers' image processor and ComfyUI's `VAEDecode`).
pub struct VaeDecode;

/// `[b, 3, h, w]` in -1..1 -> `[b, h, w, 3]` in 0..1, on the CPU.
pub(crate) fn to_image(pixels: &Tensor) -> candle_core::Result<Image> {
    let pixels = ((pixels / 2.0)? + 0.5)?
        .clamp(0f32, 1f32)?
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .to_device(&candle_core::Device::Cpu)?;
    Ok(Image { pixels })
}

impl Node for VaeDecode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAEDecode", "latent")
            .display_name("VAE Decode")
            .input(InputSpec::required(
                "samples",
                InputKind::link(data_type::LATENT),
            ))
            .input(InputSpec::required("vae", InputKind::link(data_type::VAE)))
            .output(OutputSpec::new(data_type::IMAGE))
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let latent = inputs.handle::<Latent>("samples")?;
        let vae = inputs.handle::<AutoEncoder>("vae")?;
        let batch = latent.samples.dim(0).map_err(anyhow::Error::from)?;
        let mut images = Vec::with_capacity(batch);
        for i in 0..batch {
            ctx.progress(i as u64, batch as u64)?;
            let z = latent
                .samples
                .narrow(0, i, 1)
                .and_then(|z| z.to_device(vae.device()))
                .and_then(|z| vae.decode(&z))
                .and_then(|x| to_image(&x))
                .map_err(anyhow::Error::from)?;
            images.push(z.pixels);
        }
        let pixels = Tensor::cat(&images, 0).map_err(anyhow::Error::from)?;
        Ok(NodeOutput::values(vec![Value::handle(Image { pixels })]))
    }
}
