//! MMDiT joint blocks: the two "dismantled" DiT blocks (context and image
//! streams) that share one joint attention, the MMDiT-X second self-attention
//! on the image stream (SD3.5-medium), optional q/k RMSNorm, and the final layer.
//!
//! Reference: Stability AI `sd3.5` `mmditx.py` (`DismantledBlock`,
//! `block_mixing`, `FinalLayer`), pinned at
//! <https://github.com/Stability-AI/sd3.5/blob/4e484e05308d83fb77ae6f680028e6c313f9da54/mmditx.py>,
//! and diffusers 0.42.1 `models/attention.py` `JointTransformerBlock`
//! (`hidden + gate_msa·attn`, then `+ gate_msa2·attn2`, then the MLP).

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{self as nn, VarBuilder};

use super::model::Config;
use super::modulation::{gated_residual, modulated_norm};
use crate::sd3::attention::{attention, Qkv};
use crate::sd3::linear::{linear, Linear};

/// One attention's projections: fused `qkv`, optional `ln_q`/`ln_k`, and
/// `proj` (absent from the last context block, whose output is discarded).
#[derive(Debug, Clone)]
struct SelfAttention {
    qkv: Linear,
    ln_q: Option<nn::RmsNorm>,
    ln_k: Option<nn::RmsNorm>,
    proj: Option<Linear>,
    num_heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    const QK_NORM_EPS: f64 = 1e-6;

    fn new(cfg: &Config, pre_only: bool, vb: VarBuilder) -> Result<Self> {
        let hidden = cfg.hidden_size();
        let qkv = linear(hidden, 3 * hidden, vb.pp("qkv"))?;
        let (ln_q, ln_k) = if cfg.qk_norm {
            let eps = Self::QK_NORM_EPS;
            (
                Some(nn::rms_norm(cfg.head_dim, eps, vb.pp("ln_q"))?),
                Some(nn::rms_norm(cfg.head_dim, eps, vb.pp("ln_k"))?),
            )
        } else {
            (None, None)
        };
        let proj = if pre_only {
            None
        } else {
            Some(linear(hidden, hidden, vb.pp("proj"))?)
        };
        Ok(Self {
            qkv,
            ln_q,
            ln_k,
            proj,
            num_heads: cfg.num_heads,
            head_dim: cfg.head_dim,
        })
    }

    fn qkv(&self, x: &Tensor) -> Result<Qkv> {
        let (b, tokens, _) = x.dims3()?;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, tokens, 3, self.num_heads, self.head_dim))?;
        let part = |i: usize, norm: &Option<nn::RmsNorm>| -> Result<Tensor> {
            let t = qkv.narrow(2, i, 1)?.squeeze(2)?;
            let t = match norm {
                Some(norm) => norm.forward(&t)?,
                None => t,
            };
            Ok(t)
        };
        Ok(Qkv {
            q: part(0, &self.ln_q)?,
            k: part(1, &self.ln_k)?,
            v: part(2, &None)?,
        })
    }

    fn project_out(&self, x: &Tensor) -> Result<Tensor> {
        match &self.proj {
            Some(proj) => proj.forward(x),
            None => candle_core::bail!("a pre-only block has no attention output projection"),
        }
    }
}

/// GELU(tanh) MLP with ratio 4: `fc1`, `fc2`.
#[derive(Debug, Clone)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let hidden = cfg.hidden_size();
        Ok(Self {
            fc1: linear(hidden, 4 * hidden, vb.pp("fc1"))?,
            fc2: linear(4 * hidden, hidden, vb.pp("fc2"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc1.forward_gelu_tanh(x)?.apply(&self.fc2)
    }
}

/// What a block needs after the joint attention: gates, MLP modulation and,
/// in MMDiT-X blocks, the already computed (gated) second attention.
#[derive(Debug, Clone)]
struct PostAttention {
    gate_msa: Tensor,
    shift_mlp: Tensor,
    scale_mlp: Tensor,
    gate_mlp: Tensor,
    attn2: Option<(Tensor, Tensor)>,
}

/// The kind of stream a [`DismantledBlock`] processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    /// Full DiT block: 6 modulation chunks.
    Full,
    /// MMDiT-X image block with a second self-attention: 9 chunks.
    DualAttention,
    /// Last context block: only contributes q/k/v; 2 chunks (shift, scale).
    PreOnly,
}

impl BlockKind {
    /// Number of `hidden`-wide chunks `adaLN_modulation` produces.
    fn n_mods(self) -> usize {
        match self {
            Self::Full => 6,
            Self::DualAttention => 9,
            Self::PreOnly => 2,
        }
    }
}

/// One stream of a joint block (`x_block` or `context_block`).
#[derive(Debug, Clone)]
struct DismantledBlock {
    attn: SelfAttention,
    attn2: Option<SelfAttention>,
    mlp: Option<Mlp>,
    ada_ln_modulation: Linear,
    kind: BlockKind,
}

impl DismantledBlock {
    fn new(cfg: &Config, kind: BlockKind, vb: VarBuilder) -> Result<Self> {
        let hidden = cfg.hidden_size();
        let pre_only = kind == BlockKind::PreOnly;
        let n_mods = kind.n_mods();
        let attn2 = match kind {
            BlockKind::DualAttention => Some(SelfAttention::new(cfg, false, vb.pp("attn2"))?),
            _ => None,
        };
        let mlp = if pre_only {
            None
        } else {
            Some(Mlp::new(cfg, vb.pp("mlp"))?)
        };
        Ok(Self {
            attn: SelfAttention::new(cfg, pre_only, vb.pp("attn"))?,
            attn2,
            mlp,
            ada_ln_modulation: linear(hidden, n_mods * hidden, vb.pp("adaLN_modulation.1"))?,
            kind,
        })
    }

    /// Modulates the normed stream and projects it to q/k/v. Returns `None` as
    /// post-attention state for the pre-only block.
    fn pre_attention(&self, x: &Tensor, c: &Tensor) -> Result<(Qkv, Option<PostAttention>)> {
        let n_mods = self.kind.n_mods();
        let mods = c
            .silu()?
            .apply(&self.ada_ln_modulation)?
            .chunk(n_mods, D::Minus1)?;
        let qkv = self.attn.qkv(&modulated_norm(x, &mods[0], &mods[1])?)?;
        if self.kind == BlockKind::PreOnly {
            return Ok((qkv, None));
        }
        let attn2 = match &self.attn2 {
            Some(attn2) => {
                let qkv2 = attn2.qkv(&modulated_norm(x, &mods[6], &mods[7])?)?;
                Some((attn2.project_out(&attention(&qkv2)?)?, mods[8].clone()))
            }
            None => None,
        };
        let post = PostAttention {
            gate_msa: mods[2].clone(),
            shift_mlp: mods[3].clone(),
            scale_mlp: mods[4].clone(),
            gate_mlp: mods[5].clone(),
            attn2,
        };
        Ok((qkv, Some(post)))
    }

    fn post_attention(&self, attn: &Tensor, x: &Tensor, post: &PostAttention) -> Result<Tensor> {
        let mut x = gated_residual(x, &self.attn.project_out(attn)?, &post.gate_msa)?;
        if let Some((attn2, gate_msa2)) = &post.attn2 {
            x = gated_residual(&x, attn2, gate_msa2)?;
        }
        let mlp = match &self.mlp {
            Some(mlp) => mlp,
            None => candle_core::bail!("a pre-only block has no MLP"),
        };
        let h = modulated_norm(&x, &post.shift_mlp, &post.scale_mlp)?;
        gated_residual(&x, &mlp.forward(&h)?, &post.gate_mlp)
    }
}

/// `joint_blocks.N`: context and image streams attending jointly over
/// `[context, image]` tokens.
#[derive(Debug, Clone)]
pub struct JointBlock {
    context_block: DismantledBlock,
    x_block: DismantledBlock,
    span: tracing::Span,
}

impl JointBlock {
    /// Block `index` of `cfg`: the last one's context stream is pre-only, and
    /// MMDiT-X's dual-attention layers give the image stream a second attention.
    pub fn new(cfg: &Config, index: usize, vb: VarBuilder) -> Result<Self> {
        let context_kind = if index + 1 == cfg.depth {
            BlockKind::PreOnly
        } else {
            BlockKind::Full
        };
        let x_kind = if cfg.dual_attention_layers.contains(&index) {
            BlockKind::DualAttention
        } else {
            BlockKind::Full
        };
        Ok(Self {
            context_block: DismantledBlock::new(cfg, context_kind, vb.pp("context_block"))?,
            x_block: DismantledBlock::new(cfg, x_kind, vb.pp("x_block"))?,
            span: tracing::span!(tracing::Level::TRACE, "joint-block"),
        })
    }

    /// Returns the updated context (`None` after the pre-only last block) and image streams.
    pub fn forward(
        &self,
        context: &Tensor,
        x: &Tensor,
        c: &Tensor,
    ) -> Result<(Option<Tensor>, Tensor)> {
        let _enter = self.span.enter();
        let (context_qkv, context_post) = self.context_block.pre_attention(context, c)?;
        let (x_qkv, x_post) = self.x_block.pre_attention(x, c)?;
        let attn = attention(&context_qkv.join(&x_qkv)?)?;
        let n_context = context.dim(1)?;
        let n_x = x.dim(1)?;
        let context_attn = attn.narrow(1, 0, n_context)?;
        let x_attn = attn.narrow(1, n_context, n_x)?;
        let context = match &context_post {
            Some(post) => Some(
                self.context_block
                    .post_attention(&context_attn, context, post)?,
            ),
            None => None,
        };
        let x_post = match &x_post {
            Some(post) => post,
            None => candle_core::bail!("the image stream is never pre-only"),
        };
        let x = self.x_block.post_attention(&x_attn, x, x_post)?;
        Ok((context, x))
    }
}

/// `final_layer`: LayerNorm, adaLN (shift, scale), linear to patches.
#[derive(Debug, Clone)]
pub struct FinalLayer {
    linear: Linear,
    ada_ln_modulation: Linear,
}

impl FinalLayer {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let hidden = cfg.hidden_size();
        let patch_dim = cfg.patch_size * cfg.patch_size * cfg.out_channels;
        Ok(Self {
            linear: linear(hidden, patch_dim, vb.pp("linear"))?,
            ada_ln_modulation: linear(hidden, 2 * hidden, vb.pp("adaLN_modulation.1"))?,
        })
    }

    pub fn forward(&self, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let mods = c
            .silu()?
            .apply(&self.ada_ln_modulation)?
            .chunk(2, D::Minus1)?;
        modulated_norm(x, &mods[0], &mods[1])?.apply(&self.linear)
    }
}
