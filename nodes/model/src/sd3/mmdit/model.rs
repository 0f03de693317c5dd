//! The MMDiT configuration (presets and inference from checkpoint shapes) and
//! the top-level model.
//!
//! Reference: Stability AI `sd3.5` `mmditx.py` `MMDiTX.forward`
//! (<https://github.com/Stability-AI/sd3.5/blob/4e484e05308d83fb77ae6f680028e6c313f9da54/mmditx.py>)
//! and diffusers 0.42.1 `models/transformers/transformer_sd3.py`
//! (`SD3Transformer2DModel.forward`, including `skip_layers`). Config inference
//! follows ComfyUI `comfy/model_detection.py` (depth = joint blocks = heads,
//! unless q/k norms reveal the head size).

use crate::sd3::linear::{linear, Linear};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{FinalLayer, JointBlock};
use super::embeddings::{unpatchify, PatchEmbedder, TimestepEmbedder, VectorEmbedder};

/// MMDiT hyper-parameters. `hidden_size = num_heads · head_dim`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub patch_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Number of joint blocks.
    pub depth: usize,
    pub num_heads: usize,
    pub head_dim: usize,
    /// Width of the pooled text vector (`y`).
    pub adm_in_channels: usize,
    /// Width of the per-token context (`joint_attention_dim`).
    pub context_embed_size: usize,
    pub pos_embed_max_size: usize,
    pub frequency_embedding_size: usize,
    /// Blocks whose image stream has the MMDiT-X second attention (`attn2`).
    pub dual_attention_layers: Vec<usize>,
    /// RMSNorm on queries and keys (`ln_q`, `ln_k`).
    pub qk_norm: bool,
}

impl Config {
    pub fn sd3_medium() -> Self {
        Self {
            patch_size: 2,
            in_channels: 16,
            out_channels: 16,
            depth: 24,
            num_heads: 24,
            head_dim: 64,
            adm_in_channels: 2048,
            context_embed_size: 4096,
            pos_embed_max_size: 192,
            frequency_embedding_size: 256,
            dual_attention_layers: Vec::new(),
            qk_norm: false,
        }
    }

    pub fn sd3_5_medium() -> Self {
        Self {
            pos_embed_max_size: 384,
            dual_attention_layers: (0..=12).collect(),
            qk_norm: true,
            ..Self::sd3_medium()
        }
    }

    pub fn sd3_5_large() -> Self {
        Self {
            depth: 38,
            num_heads: 38,
            qk_norm: true,
            ..Self::sd3_medium()
        }
    }

    /// The tiny SD3 of docs/parity.md ("Tiny fixtures"): 2 layers × 2 heads × 32, joint 128, pooled 96.
    pub fn tiny_sd3() -> Self {
        Self {
            depth: 2,
            num_heads: 2,
            head_dim: 32,
            adm_in_channels: 96,
            context_embed_size: 128,
            pos_embed_max_size: 24,
            ..Self::sd3_medium()
        }
    }

    /// The tiny SD3.5-medium of docs/parity.md ("Tiny fixtures"): 3 layers × 3 heads × 16, dual attention
    /// in blocks 0 and 1, RMS q/k norm.
    pub fn tiny_sd3_5_medium() -> Self {
        Self {
            depth: 3,
            num_heads: 3,
            head_dim: 16,
            dual_attention_layers: vec![0, 1],
            qk_norm: true,
            ..Self::tiny_sd3()
        }
    }

    pub fn hidden_size(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// A human-readable family name, as detected from the structure.
    pub fn variant_name(&self) -> &'static str {
        match (self.dual_attention_layers.is_empty(), self.qk_norm) {
            (false, _) => "SD3.5-medium (MMDiT-X)",
            (true, true) => "SD3.5-large",
            (true, false) => "SD3-medium",
        }
    }

    /// Infers the config from tensor shapes, given a lookup from original key
    /// names (relative to `model.diffusion_model.`) to shapes.
    pub fn infer(shape_of: impl Fn(&str) -> Option<Vec<usize>>) -> Result<Self> {
        let need = |name: &str, rank: usize| -> Result<Vec<usize>> {
            match shape_of(name) {
                Some(shape) if shape.len() == rank => Ok(shape),
                Some(shape) => candle_core::bail!(
                    "MMDiT tensor {name} has shape {shape:?}, expected rank {rank}"
                ),
                None => candle_core::bail!("MMDiT tensor {name} is missing"),
            }
        };
        let x_embedder = need("x_embedder.proj.weight", 4)?;
        let (hidden, in_channels, patch_size) = (x_embedder[0], x_embedder[1], x_embedder[2]);
        let depth = (0..)
            .take_while(|i| {
                shape_of(&format!("joint_blocks.{i}.x_block.attn.qkv.weight")).is_some()
            })
            .count();
        if depth == 0 {
            candle_core::bail!("no MMDiT joint blocks (joint_blocks.0.x_block.attn.qkv.weight)");
        }
        let dual_attention_layers = (0..depth)
            .filter(|i| shape_of(&format!("joint_blocks.{i}.x_block.attn2.qkv.weight")).is_some())
            .collect();
        let ln_q = shape_of("joint_blocks.0.x_block.attn.ln_q.weight");
        let head_dim = match &ln_q {
            Some(shape) => shape[0],
            None => hidden / depth,
        };
        if head_dim == 0 || hidden % head_dim != 0 {
            candle_core::bail!(
                "MMDiT width {hidden} is not a multiple of the head size {head_dim}"
            );
        }
        let pos_rows = need("pos_embed", 3)?[1];
        let pos_embed_max_size = (pos_rows as f64).sqrt().round() as usize;
        if pos_embed_max_size * pos_embed_max_size != pos_rows {
            candle_core::bail!("pos_embed has {pos_rows} rows, not a square grid");
        }
        let patch_dim = need("final_layer.linear.weight", 2)?[0];
        Ok(Self {
            patch_size,
            in_channels,
            out_channels: patch_dim / (patch_size * patch_size),
            depth,
            num_heads: hidden / head_dim,
            head_dim,
            adm_in_channels: need("y_embedder.mlp.0.weight", 2)?[1],
            context_embed_size: need("context_embedder.weight", 2)?[1],
            pos_embed_max_size,
            frequency_embedding_size: need("t_embedder.mlp.0.weight", 2)?[1],
            dual_attention_layers,
            qk_norm: ln_q.is_some(),
        })
    }
}

/// The SD3 / SD3.5 diffusion transformer, in the weights' dtype.
#[derive(Debug, Clone)]
pub struct MMDiT {
    cfg: Config,
    x_embedder: PatchEmbedder,
    t_embedder: TimestepEmbedder,
    y_embedder: VectorEmbedder,
    context_embedder: Linear,
    joint_blocks: Vec<JointBlock>,
    final_layer: FinalLayer,
}

impl MMDiT {
    /// `vb` is rooted at the MMDiT (`model.diffusion_model.` in single files).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let joint_blocks = (0..cfg.depth)
            .map(|i| JointBlock::new(cfg, i, vb.pp(format!("joint_blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            x_embedder: PatchEmbedder::new(cfg, vb.clone())?,
            t_embedder: TimestepEmbedder::new(cfg, vb.pp("t_embedder"))?,
            y_embedder: VectorEmbedder::new(cfg, vb.pp("y_embedder"))?,
            context_embedder: linear(
                cfg.context_embed_size,
                cfg.hidden_size(),
                vb.pp("context_embedder"),
            )?,
            joint_blocks,
            final_layer: FinalLayer::new(cfg, vb.pp("final_layer"))?,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn device(&self) -> &candle_core::Device {
        self.context_embedder.device()
    }

    /// The dtype of the weights; inputs are cast to it.
    pub fn dtype(&self) -> candle_core::DType {
        self.context_embedder.dtype()
    }

    /// Predicts the flow velocity.
    ///
    /// - `x`: latents `[b, c, h, w]` (h and w multiples of the patch size);
    /// - `t`: timesteps `[b]` (σ·1000);
    /// - `y`: pooled text `[b, adm_in_channels]`;
    /// - `context`: `[b, tokens, context_embed_size]`;
    /// - `skip_layers`: joint blocks to skip (skip-layer guidance), as diffusers does.
    pub fn forward(
        &self,
        x: &Tensor,
        t: &Tensor,
        y: &Tensor,
        context: &Tensor,
        skip_layers: &[usize],
    ) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let p = self.cfg.patch_size;
        if h % p != 0 || w % p != 0 {
            candle_core::bail!("latent size {h}x{w} is not a multiple of the patch size {p}");
        }
        let dtype = self.dtype();
        let mut x = self.x_embedder.forward(&x.to_dtype(dtype)?)?;
        let c = (self.t_embedder.forward(t)? + self.y_embedder.forward(&y.to_dtype(dtype)?)?)?;
        let mut context = Some(self.context_embedder.forward(&context.to_dtype(dtype)?)?);
        for (i, block) in self.joint_blocks.iter().enumerate() {
            crate::check_interrupted()?;
            if skip_layers.contains(&i) {
                continue;
            }
            let Some(ctx) = &context else {
                candle_core::bail!("joint block {i} follows the pre-only block");
            };
            (context, x) = block.forward(ctx, &x, &c)?;
        }
        let x = self.final_layer.forward(&x, &c)?;
        unpatchify(&x, h / p, w / p, &self.cfg)
    }
}
