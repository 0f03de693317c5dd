use candle_core::Tensor;

use crate::sd3::types::{Image, Latent};
use crate::sd3::vae::{AutoEncoder, Config as VaeConfig, Tiling};
use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext, Value, ValueEstimate,
};

/// Pixels per latent: an f32 RGB pixel is 12 bytes, a latent value covers 8×8
/// pixels over 16 channels, so each latent byte decodes to 12 image bytes.
const IMAGE_BYTES_PER_LATENT_BYTE: u64 = 12;

/// The decoder's activations per latent byte: SD3's latent has 16 f32 channels for 8×8
/// pixels, so a latent byte covers one pixel.
fn decode_bytes_per_latent_byte() -> u64 {
    VaeConfig::sd3().decode_bytes_per_pixel()
}

/// Decodes latents to pixels `[b, h, w, 3]` in 0..1 (`(x / 2 + 0.5).clamp(0, 1)`,
/// as diffusers' image processor and ComfyUI's `VAEDecode`). An image whose whole decode
/// would not fit in the memory available is decoded in tiles, as ComfyUI does when a decode
/// runs out of memory, and the node says so.
pub struct VaeDecode;

/// ComfyUI's `VAEDecodeTiled`: decodes in overlapping tiles (`tile_size` and `overlap` in
/// pixels), in the memory of one tile.
pub struct VaeDecodeTiled;

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
        decode_each(inputs, ctx, &mut |vae, z| {
            let available = cretok_support::memory::available_bytes();
            let mut on_tile = tile_progress(ctx, z, Tiling::FALLBACK)?;
            let (pixels, tiling) = vae.decode_fitting(z, available, &mut on_tile)?;
            if let Some(tiling) = tiling {
                let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
                ctx.text(&format!(
                    "decoding in tiles of {}×{} latent pixels (ComfyUI's tiled decode): the whole \
                     decode needs {:.1} GiB, {:.1} GiB are available",
                    tiling.tile_x,
                    tiling.tile_y,
                    gib(vae.whole_decode_bytes(z)?),
                    gib(available.unwrap_or(0))
                ));
            }
            Ok(pixels)
        })
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let latent = inputs.bytes("samples");
        let image = latent.saturating_mul(IMAGE_BYTES_PER_LATENT_BYTE);
        // The decoded images are held twice while they are joined into one batch.
        let working = latent
            .saturating_mul(decode_bytes_per_latent_byte())
            .saturating_add(image);
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(image)]).with_working_bytes(working))
    }
}

/// Runs `decode` on each latent of input `samples` with input `vae`, one image at a time.
fn decode_each(
    inputs: &Inputs,
    ctx: &RunContext,
    decode: &mut dyn FnMut(&AutoEncoder, &Tensor) -> candle_core::Result<Tensor>,
) -> Result<NodeOutput, NodeError> {
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
            .and_then(|z| decode(&vae, &z))
            .and_then(|x| to_image(&x))
            .map_err(anyhow::Error::from)?;
        images.push(z.pixels);
    }
    let pixels = Tensor::cat(&images, 0).map_err(anyhow::Error::from)?;
    Ok(NodeOutput::values(vec![Value::handle(Image { pixels })]))
}

/// What a tiled decode of `latent` calls after each tile: the node's progress in tiles, then
/// the prompt's cancellation.
fn tile_progress<'a>(
    ctx: &'a RunContext,
    latent: &Tensor,
    tiling: Tiling,
) -> candle_core::Result<impl FnMut() -> candle_core::Result<()> + 'a> {
    let (_, _, height, width) = latent.dims4()?;
    let total = tiling.tile_count(height, width) as u64;
    let mut done = 0;
    Ok(move || {
        done += 1;
        // A cancelled prompt is reported by `check_interrupted`, as everywhere in the model.
        let _ = ctx.progress(done, total);
        crate::check_interrupted()
    })
}

impl Node for VaeDecodeTiled {
    fn schema(&self) -> NodeSchema {
        let pixels = |default, min| InputKind::Int {
            default,
            min,
            max: 4096,
            step: 32,
            control_after_generate: false,
        };
        let frames = |default, min| InputKind::Int {
            default,
            min,
            max: 4096,
            step: 4,
            control_after_generate: false,
        };
        NodeSchema::new("VAEDecodeTiled", "_for_testing")
            .display_name("VAE Decode (Tiled)")
            .input(InputSpec::required(
                "samples",
                InputKind::link(data_type::LATENT),
            ))
            .input(InputSpec::required("vae", InputKind::link(data_type::VAE)))
            .input(InputSpec::required("tile_size", pixels(512, 64)))
            .input(InputSpec::required("overlap", pixels(64, 0)))
            .input(
                InputSpec::required("temporal_size", frames(64, 8)).with_tooltip(
                    "Only used for video VAEs: Amount of frames to decode at a time.",
                ),
            )
            .input(
                InputSpec::required("temporal_overlap", frames(8, 4))
                    .with_tooltip("Only used for video VAEs: Amount of frames to overlap."),
            )
            .output(OutputSpec::new(data_type::IMAGE))
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let tiling = tiling(inputs.int("tile_size")?, inputs.int("overlap")?);
        decode_each(inputs, ctx, &mut |vae, z| {
            vae.decode_tiled(z, tiling, &mut tile_progress(ctx, z, tiling)?)
        })
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let image = inputs
            .bytes("samples")
            .saturating_mul(IMAGE_BYTES_PER_LATENT_BYTE);
        // The output, the blend's sums, and one tile's decode (at most 2·tile × tile/2 pixels).
        let tile = inputs.int("tile_size").unwrap_or(512).max(0) as u64;
        let working = (2 * image).saturating_add(tile * tile * decode_bytes_per_latent_byte());
        Ok(Estimate::outputs(vec![ValueEstimate::bytes(image)]).with_working_bytes(working))
    }
}

/// ComfyUI's `VAEDecodeTiled.decode`: an overlap of more than a quarter of the tile becomes a
/// quarter, and both are taken in latent pixels.
fn tiling(tile_size: i64, overlap: i64) -> Tiling {
    let overlap = if tile_size < overlap * 4 {
        tile_size / 4
    } else {
        overlap
    };
    let scale = VaeConfig::sd3().upscale() as i64;
    let latent = |pixels: i64| (pixels / scale).max(0) as usize;
    Tiling {
        tile_x: latent(tile_size),
        tile_y: latent(tile_size),
        overlap: latent(overlap),
    }
}
