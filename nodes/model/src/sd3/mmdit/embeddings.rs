//! MMDiT input and output embeddings: patchify + cropped 2-D position table,
//! the sinusoidal timestep embedder, the pooled-vector embedder, and unpatchify.
//!
//! Reference: diffusers 0.42.1 `models/embeddings.py` (`PatchEmbed` with
//! `pos_embed_max_size`, `get_timestep_embedding`, `TimestepEmbedding`,
//! `PixArtAlphaTextProjection`) and Stability's `sd3_impls`/`mmditx.py`
//! (`PatchEmbed`, `TimestepEmbedder`, `VectorEmbedder`, `cropped_pos_embed`).

use crate::sd3::linear::{linear, Linear};
use crate::sd3::precision;
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{self as nn, VarBuilder};

use super::model::Config;

/// `x_embedder` (a stride-p conv) plus the centred crop of the stored `pos_embed`.
#[derive(Debug, Clone)]
pub struct PatchEmbedder {
    proj: nn::Conv2d,
    pos_embed: Tensor,
    pos_embed_max_size: usize,
}

impl PatchEmbedder {
    /// `vb` is the model root: the weights are `x_embedder.proj.*` and `pos_embed`.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let conv_cfg = nn::Conv2dConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        let proj = nn::conv2d(
            cfg.in_channels,
            cfg.hidden_size(),
            cfg.patch_size,
            conv_cfg,
            vb.pp("x_embedder.proj"),
        )?;
        let max = cfg.pos_embed_max_size;
        let shape = (1, max * max, cfg.hidden_size());
        let pos_embed = vb.get_with_hints(shape, "pos_embed", precision::STORED_TABLE)?;
        Ok(Self {
            proj,
            pos_embed,
            pos_embed_max_size: max,
        })
    }

    /// The `pos_embed` rows for an `h x w` patch grid, cropped from the centre
    /// (diffusers `PatchEmbed.cropped_pos_embed`: `top = (max - h) // 2`).
    fn cropped_pos_embed(&self, h: usize, w: usize) -> Result<Tensor> {
        let max = self.pos_embed_max_size;
        if h > max || w > max {
            candle_core::bail!("a {h}x{w} patch grid exceeds the position table ({max}x{max})");
        }
        let dim = self.pos_embed.dim(D::Minus1)?;
        let top = (max - h) / 2;
        let left = (max - w) / 2;
        self.pos_embed
            .reshape((1, max, max, dim))?
            .narrow(1, top, h)?
            .narrow(2, left, w)?
            .reshape((1, h * w, dim))
    }
}

impl Module for PatchEmbedder {
    /// `[b, c, H, W]` -> `[b, (H/p)(W/p), hidden]` with positions added.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.proj.forward(x)?;
        let (b, c, h, w) = x.dims4()?;
        let x = x.reshape((b, c, h * w))?.transpose(1, 2)?;
        x.broadcast_add(&self.cropped_pos_embed(h, w)?.to_dtype(x.dtype())?)
    }
}

/// `t_embedder`: 256-d sinusoidal `[cos, sin]` features (max period 10000),
/// then Linear-SiLU-Linear.
#[derive(Debug, Clone)]
pub struct TimestepEmbedder {
    mlp_0: Linear,
    mlp_2: Linear,
    frequency_embedding_size: usize,
}

impl TimestepEmbedder {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let hidden = cfg.hidden_size();
        let freq = cfg.frequency_embedding_size;
        Ok(Self {
            mlp_0: linear(freq, hidden, vb.pp("mlp.0"))?,
            mlp_2: linear(hidden, hidden, vb.pp("mlp.2"))?,
            frequency_embedding_size: freq,
        })
    }

    /// Sinusoidal features of `t` (`[b]`, any float dtype), computed in f32 as
    /// diffusers' `get_timestep_embedding(flip_sin_to_cos=True, downscale_freq_shift=0)`.
    fn timestep_features(&self, t: &Tensor) -> Result<Tensor> {
        let half = self.frequency_embedding_size / 2;
        let ln_period = -(10000f64.ln()) as f32;
        let freqs: Vec<f32> = (0..half)
            .map(|i| (ln_period * i as f32 / half as f32).exp())
            .collect();
        let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
        let args = t
            .to_dtype(DType::F32)?
            .unsqueeze(1)?
            .broadcast_mul(&freqs)?;
        Tensor::cat(&[args.cos()?, args.sin()?], D::Minus1)
    }
}

impl Module for TimestepEmbedder {
    fn forward(&self, t: &Tensor) -> Result<Tensor> {
        let dtype = self.mlp_0.dtype();
        self.timestep_features(t)?
            .to_dtype(dtype)?
            .apply(&self.mlp_0)?
            .silu()?
            .apply(&self.mlp_2)
    }
}

/// `y_embedder`: the pooled text vector through Linear-SiLU-Linear.
#[derive(Debug, Clone)]
pub struct VectorEmbedder {
    mlp_0: Linear,
    mlp_2: Linear,
}

impl VectorEmbedder {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let hidden = cfg.hidden_size();
        Ok(Self {
            mlp_0: linear(cfg.adm_in_channels, hidden, vb.pp("mlp.0"))?,
            mlp_2: linear(hidden, hidden, vb.pp("mlp.2"))?,
        })
    }
}

impl Module for VectorEmbedder {
    fn forward(&self, y: &Tensor) -> Result<Tensor> {
        y.apply(&self.mlp_0)?.silu()?.apply(&self.mlp_2)
    }
}

/// `[b, h*w, p*p*c]` -> `[b, c, h*p, w*p]` (einsum `nhwpqc->nchpwq`).
pub fn unpatchify(x: &Tensor, grid_h: usize, grid_w: usize, cfg: &Config) -> Result<Tensor> {
    let (p, c) = (cfg.patch_size, cfg.out_channels);
    let b = x.dim(0)?;
    x.reshape((b, grid_h, grid_w, p, p, c))?
        .permute((0, 5, 1, 3, 2, 4))?
        .reshape((b, c, grid_h * p, grid_w * p))
}
