use candle_core::Tensor;

use crate::sd3::types::{Image, Latent};
use crate::sd3::vae::AutoEncoder;
use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext, Value, ValueEstimate,
};

/// Pixels per latent: an f32 RGB pixel is 12 bytes, a latent value covers 8×8
/// pixels over 16 channels, so each latent byte decodes to 12 image bytes.
const IMAGE_BYTES_PER_LATENT_BYTE: u64 = 12;

/// The decoder's activations per latent byte: 128-channel full-size tensors
/// (512 bytes per latent byte), about two alive at once.
const DECODE_BYTES_PER_LATENT_BYTE: u64 = 1024;

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

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let latent = inputs.bytes("samples");
        let image = latent.saturating_mul(IMAGE_BYTES_PER_LATENT_BYTE);
        // The decoded images are held twice while they are joined into one batch.
        let working = latent
            .saturating_mul(DECODE_BYTES_PER_LATENT_BYTE)
            .saturating_add(image);
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(image)]).with_working_bytes(working))
    }
}
