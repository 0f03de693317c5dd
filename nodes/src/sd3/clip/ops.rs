//! Differentiable building blocks of the CLIP text encoder.
//!
//! candle's fused `ops::layer_norm` and `ops::softmax_last_dim` have no backward: gradients
//! through them vanish silently (SD3.md). Each op here runs the fused kernel when its input does
//! not track gradients (inference, cached prompts) and the composed, differentiable form when it
//! does (the CreTok trainer's input embedding) or when the fused kernel lacks the dtype (f64,
//! used by the finite-difference tests). Both compute the same function.
//! Reference: transformers `models/clip/modeling_clip.py` (v5.23), `CLIPMLP`, `CLIPAttention`.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::config::Activation;

/// `nn.LayerNorm(hidden, eps)` with weight and bias.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            eps: eps as f32,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if xs.track_op() || xs.dtype() == DType::F64 {
            candle_nn::ops::layer_norm_slow(xs, &self.weight, &self.bias, self.eps)
        } else {
            candle_nn::ops::layer_norm(&xs.contiguous()?, &self.weight, &self.bias, self.eps)
        }
    }
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    if xs.track_op() || xs.dtype() == DType::F64 {
        candle_nn::ops::softmax(xs, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(xs)
    }
}

impl Module for Activation {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            // modeling_clip `QuickGELUActivation`: `x * sigmoid(1.702 * x)`.
            Activation::QuickGelu => xs.mul(&candle_nn::ops::sigmoid(&(xs * 1.702)?)?),
            // candle's `gelu_erf` backward rounds 1/sqrt(2 pi) to 0.398942 (relative error
            // 7e-7); `erf`'s backward is exact, so the tracked path composes it.
            Activation::GeluErf if xs.track_op() => {
                let cdf = (((xs * std::f64::consts::FRAC_1_SQRT_2)?.erf()? + 1.0)? * 0.5)?;
                xs.mul(&cdf)
            }
            Activation::GeluErf => xs.gelu_erf(),
        }
    }
}

/// The additive causal mask `[q_len, prefix_len + q_len]`: query `i` (absolute position
/// `prefix_len + i`) sees keys `0..=prefix_len + i`.
pub fn causal_mask(
    q_len: usize,
    prefix_len: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let k_len = prefix_len + q_len;
    let mask: Vec<f32> = (0..q_len)
        .flat_map(|i| {
            (0..k_len).map(move |j| {
                if j > prefix_len + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (q_len, k_len), device)?.to_dtype(dtype)
}
