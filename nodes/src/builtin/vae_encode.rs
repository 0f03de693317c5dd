use crate::sd3::types::{Image, Latent};
use crate::sd3::vae::AutoEncoder;
use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext, Value, ValueEstimate,
};

/// Image bytes per latent byte (see `VAEDecode`).
const IMAGE_BYTES_PER_LATENT_BYTE: u64 = 12;

/// The encoder's activations per image byte: 128-channel full-size tensors
/// (43 bytes per image byte), about two alive at once.
const ENCODE_BYTES_PER_IMAGE_BYTE: u64 = 96;

/// Encodes pixels `[b, h, w, 3]` in 0..1 to latents (posterior mean), for img2img.
/// The size is cropped down to a multiple of 16, as the MMDiT needs.
pub struct VaeEncode;

impl Node for VaeEncode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAEEncode", "latent")
            .display_name("VAE Encode")
            .input(InputSpec::required(
                "pixels",
                InputKind::link(data_type::IMAGE),
            ))
            .input(InputSpec::required("vae", InputKind::link(data_type::VAE)))
            .output(OutputSpec::new(data_type::LATENT))
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let image = inputs.handle::<Image>("pixels")?;
        let vae = inputs.handle::<AutoEncoder>("vae")?;
        ctx.check_cancel()?;
        let encode = || -> candle_core::Result<Latent> {
            let (_, h, w, _) = image.pixels.dims4()?;
            let (h, w) = (h / 16 * 16, w / 16 * 16);
            if h == 0 || w == 0 {
                candle_core::bail!("the image is smaller than 16x16");
            }
            let x = image
                .pixels
                .narrow(1, 0, h)?
                .narrow(2, 0, w)?
                .permute((0, 3, 1, 2))?
                .affine(2.0, -1.0)?
                .to_device(vae.device())?;
            let samples = vae.encode(&x)?.to_device(&candle_core::Device::Cpu)?;
            Ok(Latent::new(samples))
        };
        let latent = encode().map_err(anyhow::Error::from)?;
        Ok(NodeOutput::values(vec![Value::handle(latent)]))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let image = inputs.bytes("pixels");
        let latent = image / IMAGE_BYTES_PER_LATENT_BYTE;
        let working = image.saturating_mul(ENCODE_BYTES_PER_IMAGE_BYTE);
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(latent)]).with_working_bytes(working))
    }
}
