//! The SD3 VAE (16-channel KL autoencoder, no quant convs), with original
//! (`first_stage_model.*`) key names, and the latent scale/shift.
//!
//! Reference: Stability AI `sd3.5` `sd3_impls.py` (`VAEEncoder`, `VAEDecoder`,
//! `ResnetBlock`, `AttnBlock`, `Downsample` with `(0,1,0,1)` padding,
//! `Upsample` nearest ×2), pinned at
//! <https://github.com/Stability-AI/sd3.5/blob/4e484e05308d83fb77ae6f680028e6c313f9da54/sd3_impls.py>;
//! diffusers 0.42.1 `AutoencoderKL` (`scaling_factor=1.5305`,
//! `shift_factor=0.0609`; the pipeline decodes `z / scale + shift`).
//! Encoding returns the posterior mean (deterministic, as ComfyUI's VAEEncode).

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::sd3::attention::{attention, Qkv};

mod conv2d;
mod group_norm;
mod residual;
mod tiled;
mod upsample;
mod winograd;

pub use tiled::Tiling;

use conv2d::Conv2d;
use group_norm::GroupNorm;

/// VAE hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub scaling_factor: f64,
    pub shift_factor: f64,
}

impl Config {
    pub fn sd3() -> Self {
        Self {
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 16,
            norm_num_groups: 32,
            scaling_factor: 1.5305,
            shift_factor: 0.0609,
        }
    }

    /// Pixels per latent pixel along each side: ×2 per level after the first.
    pub fn upscale(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// The most bytes a whole decode holds at once per output pixel: four full-resolution f32
    /// activations of the first level's width (measured at SD3's real size: docs/sd3.md,
    /// "Real size against stable-diffusion.cpp").
    pub fn decode_bytes_per_pixel(&self) -> u64 {
        const ACTIVATIONS: u64 = 4;
        ACTIVATIONS * self.block_out_channels.first().copied().unwrap_or(0) as u64 * 4
    }

    /// The tiny VAE of docs/parity.md ("Tiny fixtures").
    pub fn tiny() -> Self {
        Self {
            block_out_channels: vec![8, 16, 32, 32],
            norm_num_groups: 8,
            ..Self::sd3()
        }
    }

    /// Infers widths from shapes (original names relative to
    /// `first_stage_model.`). GroupNorm groups are not visible in shapes: the
    /// convention is `min(32, first width)` (32 for real VAEs, 8 for the tiny one).
    pub fn infer(shape_of: impl Fn(&str) -> Option<Vec<usize>>) -> Result<Self> {
        let block_out_channels: Vec<usize> = (0..)
            .map_while(|i| shape_of(&format!("encoder.down.{i}.block.0.conv1.weight")))
            .map(|s| s[0])
            .collect();
        let Some(&first) = block_out_channels.first() else {
            candle_core::bail!("VAE tensor encoder.down.0.block.0.conv1.weight is missing");
        };
        let layers_per_block = (0..)
            .take_while(|j| shape_of(&format!("encoder.down.0.block.{j}.conv1.weight")).is_some())
            .count();
        let latent_channels = match shape_of("decoder.conv_in.weight") {
            Some(s) => s[1],
            None => candle_core::bail!("VAE tensor decoder.conv_in.weight is missing"),
        };
        Ok(Self {
            block_out_channels,
            layers_per_block,
            latent_channels,
            norm_num_groups: first.min(32),
            ..Self::sd3()
        })
    }
}

const NORM_EPS: f64 = 1e-6;

fn conv(c_in: usize, c_out: usize, kernel: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    let padding = if kernel == 3 && stride == 1 { 1 } else { 0 };
    Conv2d::load(c_in, c_out, kernel, padding, stride, vb)
}

/// GroupNorm, SiLU, conv ×2, with a 1×1 `nin_shortcut` when widths differ.
#[derive(Debug, Clone)]
struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    nin_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    fn new(cfg: &Config, c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        let g = cfg.norm_num_groups;
        let nin_shortcut = if c_in == c_out {
            None
        } else {
            Some(conv(c_in, c_out, 1, 1, vb.pp("nin_shortcut"))?)
        };
        Ok(Self {
            norm1: GroupNorm::load(g, c_in, NORM_EPS, vb.pp("norm1"))?,
            conv1: conv(c_in, c_out, 3, 1, vb.pp("conv1"))?,
            norm2: GroupNorm::load(g, c_out, NORM_EPS, vb.pp("norm2"))?,
            conv2: conv(c_out, c_out, 3, 1, vb.pp("conv2"))?,
            nin_shortcut,
        })
    }
}

impl ResnetBlock {
    /// The block on an activation the caller hands over (no other handle may share its
    /// storage). Norms and the residual sum are written over activations that are no longer
    /// needed, and each is dropped once used: at the decoder's full resolution one activation
    /// is 0.5-1 GiB, and the block holds at most three.
    fn forward(&self, x: Tensor) -> Result<Tensor> {
        let (h, residual) = match &self.nin_shortcut {
            Some(shortcut) => {
                let residual = x.apply(shortcut)?;
                let normed = self.norm1.forward_silu_in_place(x)?;
                (normed.apply(&self.conv1)?, residual)
            }
            None => (self.norm1.forward_silu(&x)?.apply(&self.conv1)?, x),
        };
        let h = self.norm2.forward_silu_in_place(h)?.apply(&self.conv2)?;
        residual::add(h, &residual)
    }
}

/// Single-head self-attention over pixels with 1×1-conv projections.
#[derive(Debug, Clone)]
struct AttnBlock {
    norm: GroupNorm,
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    proj_out: Conv2d,
}

impl AttnBlock {
    fn new(cfg: &Config, c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::load(cfg.norm_num_groups, c, NORM_EPS, vb.pp("norm"))?,
            q: conv(c, c, 1, 1, vb.pp("q"))?,
            k: conv(c, c, 1, 1, vb.pp("k"))?,
            v: conv(c, c, 1, 1, vb.pp("v"))?,
            proj_out: conv(c, c, 1, 1, vb.pp("proj_out"))?,
        })
    }
}

impl Module for AttnBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let normed = x.apply(&self.norm)?;
        // [b, pixels, 1 head, c]
        let tokens = |conv: &Conv2d| -> Result<Tensor> {
            normed
                .apply(conv)?
                .reshape((b, c, h * w, 1))?
                .transpose(1, 3)?
                .transpose(1, 2)
        };
        let qkv = Qkv {
            q: tokens(&self.q)?,
            k: tokens(&self.k)?,
            v: tokens(&self.v)?,
        };
        let out = attention(&qkv)?.transpose(1, 2)?.reshape((b, c, h, w))?;
        x + out.apply(&self.proj_out)?
    }
}

/// `mid`: resnet, attention, resnet.
#[derive(Debug, Clone)]
struct MidBlock {
    block_1: ResnetBlock,
    attn_1: AttnBlock,
    block_2: ResnetBlock,
}

impl MidBlock {
    fn new(cfg: &Config, c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            block_1: ResnetBlock::new(cfg, c, c, vb.pp("block_1"))?,
            attn_1: AttnBlock::new(cfg, c, vb.pp("attn_1"))?,
            block_2: ResnetBlock::new(cfg, c, c, vb.pp("block_2"))?,
        })
    }
}

impl MidBlock {
    /// As [`ResnetBlock::forward`], on an activation the caller hands over.
    fn forward(&self, x: Tensor) -> Result<Tensor> {
        let h = self.block_1.forward(x)?.apply(&self.attn_1)?;
        self.block_2.forward(h)
    }
}

/// One resolution level: resnets, then an optional resample conv.
#[derive(Debug, Clone)]
struct Level {
    block: Vec<ResnetBlock>,
    resample: Option<Conv2d>,
}

/// `encoder`: image `[b, 3, H, W]` in -1..1 -> posterior moments `[b, 2·z, H/8, W/8]`.
#[derive(Debug, Clone)]
struct Encoder {
    conv_in: Conv2d,
    down: Vec<Level>,
    mid: MidBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let last = ch[ch.len() - 1];
        let mut down = Vec::with_capacity(ch.len());
        let mut c_in = ch[0];
        for (i, &c_out) in ch.iter().enumerate() {
            let vb_i = vb.pp(format!("down.{i}"));
            let block = (0..cfg.layers_per_block)
                .map(|j| {
                    let c = if j == 0 { c_in } else { c_out };
                    ResnetBlock::new(cfg, c, c_out, vb_i.pp(format!("block.{j}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let resample = if i + 1 < ch.len() {
                Some(conv(c_out, c_out, 3, 2, vb_i.pp("downsample.conv"))?)
            } else {
                None
            };
            down.push(Level { block, resample });
            c_in = c_out;
        }
        Ok(Self {
            conv_in: conv(3, ch[0], 3, 1, vb.pp("conv_in"))?,
            down,
            mid: MidBlock::new(cfg, last, vb.pp("mid"))?,
            norm_out: GroupNorm::load(cfg.norm_num_groups, last, NORM_EPS, vb.pp("norm_out"))?,
            conv_out: conv(last, 2 * cfg.latent_channels, 3, 1, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Encoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.apply(&self.conv_in)?;
        for level in &self.down {
            for block in &level.block {
                crate::check_interrupted()?;
                h = block.forward(h)?;
            }
            if let Some(downsample) = &level.resample {
                h = h
                    .pad_with_zeros(D::Minus1, 0, 1)?
                    .pad_with_zeros(D::Minus2, 0, 1)?;
                h = h.apply(downsample)?;
            }
        }
        self.norm_out
            .forward_silu_in_place(self.mid.forward(h)?)?
            .apply(&self.conv_out)
    }
}

/// `decoder`: latent `[b, z, h, w]` -> image `[b, 3, 8h, 8w]` in about -1..1.
#[derive(Debug, Clone)]
struct Decoder {
    conv_in: Conv2d,
    mid: MidBlock,
    /// `up.0` (full resolution) .. `up.n-1`, applied in reverse.
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let last = ch[ch.len() - 1];
        let mut up = Vec::with_capacity(ch.len());
        let mut c_in = last;
        for (i, &c_out) in ch.iter().enumerate().rev() {
            let vb_i = vb.pp(format!("up.{i}"));
            let block = (0..=cfg.layers_per_block)
                .map(|j| {
                    let c = if j == 0 { c_in } else { c_out };
                    ResnetBlock::new(cfg, c, c_out, vb_i.pp(format!("block.{j}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let resample = if i > 0 {
                Some(conv(c_out, c_out, 3, 1, vb_i.pp("upsample.conv"))?)
            } else {
                None
            };
            up.push(Level { block, resample });
            c_in = c_out;
        }
        up.reverse();
        Ok(Self {
            conv_in: conv(cfg.latent_channels, last, 3, 1, vb.pp("conv_in"))?,
            mid: MidBlock::new(cfg, last, vb.pp("mid"))?,
            up,
            norm_out: GroupNorm::load(cfg.norm_num_groups, ch[0], NORM_EPS, vb.pp("norm_out"))?,
            conv_out: conv(ch[0], 3, 3, 1, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Decoder {
    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = self.mid.forward(z.apply(&self.conv_in)?)?;
        for level in self.up.iter().rev() {
            for block in &level.block {
                crate::check_interrupted()?;
                h = block.forward(h)?;
            }
            if let Some(conv) = &level.resample {
                h = upsample::upsample_conv(&h, conv)?;
            }
        }
        self.norm_out
            .forward_silu_in_place(h)?
            .apply(&self.conv_out)
    }
}

/// The autoencoder. `encode`/`decode` work in transformer latent space.
#[derive(Debug, Clone)]
pub struct AutoEncoder {
    cfg: Config,
    encoder: Encoder,
    decoder: Decoder,
}

impl AutoEncoder {
    /// `vb` is rooted at the VAE (`first_stage_model.` in single files).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            cfg: cfg.clone(),
            encoder: Encoder::new(cfg, vb.pp("encoder"))?,
            decoder: Decoder::new(cfg, vb.pp("decoder"))?,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn dtype(&self) -> candle_core::DType {
        self.decoder.conv_in.dtype()
    }

    pub fn device(&self) -> &candle_core::Device {
        self.decoder.conv_in.device()
    }

    /// Pixels `[b, 3, H, W]` in -1..1 (H, W multiples of 8) -> latents
    /// `(mean − shift)·scale`, `[b, z, H/8, W/8]`, f32.
    pub fn encode(&self, pixels: &Tensor) -> Result<Tensor> {
        let moments = pixels.to_dtype(self.dtype())?.apply(&self.encoder)?;
        let mean = moments.narrow(1, 0, self.cfg.latent_channels)?;
        mean.to_dtype(candle_core::DType::F32)?.affine(
            self.cfg.scaling_factor,
            -self.cfg.shift_factor * self.cfg.scaling_factor,
        )
    }

    /// The most bytes a whole decode of one image of `latents` `[b, z, h, w]` holds at once
    /// ([`Config::decode_bytes_per_pixel`]).
    pub fn whole_decode_bytes(&self, latents: &Tensor) -> Result<u64> {
        let (_, _, h, w) = latents.dims4()?;
        let upscale = self.cfg.upscale();
        let pixels = (h * upscale * w * upscale) as u64;
        Ok(pixels * self.cfg.decode_bytes_per_pixel())
    }

    /// [`Self::decode`] when the whole decode fits in `available` bytes (unknown: it does),
    /// else [`Self::decode_tiled`] with [`Tiling::FALLBACK`], the tiling ComfyUI falls back to
    /// when a decode runs out of memory; also gives the tiling it used.
    pub fn decode_fitting(
        &self,
        latents: &Tensor,
        available: Option<u64>,
        on_tile: &mut dyn FnMut() -> Result<()>,
    ) -> Result<(Tensor, Option<Tiling>)> {
        let needed = self.whole_decode_bytes(latents)?;
        if available.is_none_or(|available| needed <= available) {
            return Ok((self.decode(latents)?, None));
        }
        let tiling = Tiling::FALLBACK;
        Ok((self.decode_tiled(latents, tiling, on_tile)?, Some(tiling)))
    }

    /// [`Self::decode`] tile by tile, as ComfyUI's tiled decode ([`tiled`]): memory for one
    /// tile, not the image; `on_tile` is told after each tile.
    pub fn decode_tiled(
        &self,
        latents: &Tensor,
        tiling: Tiling,
        on_tile: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Tensor> {
        let upscale = self.cfg.upscale();
        tiled::decode_tiled(latents, tiling, upscale, &mut |z| self.decode(z), on_tile)
    }

    /// Latents -> pixels `[b, 3, 8h, 8w]` in about -1..1 (unclamped), f32.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let z = latents
            .to_dtype(candle_core::DType::F32)?
            .affine(1.0 / self.cfg.scaling_factor, self.cfg.shift_factor)?;
        z.to_dtype(self.dtype())?
            .apply(&self.decoder)?
            .to_dtype(candle_core::DType::F32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn shapes_round_trip_with_zero_weights() -> Result<()> {
        let dev = Device::Cpu;
        let vae = AutoEncoder::new(&Config::tiny(), VarBuilder::zeros(DType::F32, &dev))?;
        let img = Tensor::zeros((2, 3, 32, 48), DType::F32, &dev)?;
        let z = vae.encode(&img)?;
        assert_eq!(z.dims(), &[2, 16, 4, 6]);
        // Zero weights: mean 0 -> latent −shift·scale.
        let v = z.flatten_all()?.to_vec1::<f32>()?;
        assert!(v.iter().all(|x| (x + 0.0609 * 1.5305).abs() < 1e-6));
        assert_eq!(vae.decode(&z)?.dims(), &[2, 3, 32, 48]);
        Ok(())
    }
}
