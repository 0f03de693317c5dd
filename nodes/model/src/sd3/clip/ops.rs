//! Building blocks of the CLIP text encoder that stay differentiable w.r.t. their input.
//!
//! candle's fused `ops::layer_norm` and `ops::softmax_last_dim` have no backward: gradients
//! through them vanish silently (docs/sd3.md). Each block computes its value with the fused kernel on
//! a detached input and attaches a hand-written input gradient ([`super::grad`]); weights get no
//! gradient. On devices without that op, or under [`InputGrads::Composed`], tracked inputs take
//! candle's composed ops instead. Linear weights that f16/bf16 hold exactly are kept that way
//! ([`super::half_weights`]).
//! Reference: transformers `models/clip/modeling_clip.py` (v5.23), `CLIPMLP`, `CLIPAttention`.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::config::Activation;
use super::grad::{attach_input_grad, GradKind, InputGrads};
use super::half_weights;

/// A frozen `nn.Linear`: `x Wᵀ + b`, differentiable w.r.t. `x` only.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`, possibly in its stored half or float8 precision (asked for with candle-nn's
    /// linear-weight hint, which the checkpoint loader answers in the stored format, a scaled
    /// float8 weight scaled into f16) or narrowed ([`half_weights::compact`]).
    weight: Tensor,
    bias: Option<Tensor>,
    grads: InputGrads,
}

impl Linear {
    /// `weight` `[out, in]` and, when `bias`, `bias` `[out]`.
    pub fn new(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: half_weights::compact(vb.get_with_hints(
                (out_dim, in_dim),
                "weight",
                candle_nn::init::DEFAULT_KAIMING_NORMAL,
            )?)?,
            bias: if bias {
                Some(vb.get(out_dim, "bias")?)
            } else {
                None
            },
            grads: InputGrads::default(),
        })
    }

    pub fn set_input_grads(&mut self, grads: InputGrads) {
        self.grads = grads;
    }

    fn value(&self, xs: &Tensor) -> Result<Tensor> {
        // One 2-D product over all leading dimensions (no broadcast copy of the weight).
        // (An int8 weight's second dimension counts bytes, not inputs.)
        let (out_dim, in_dim) = (self.weight.dim(0)?, xs.dim(D::Minus1)?);
        let mut dims = xs.dims().to_vec();
        let rows = xs.elem_count() / in_dim;
        let xs = xs.reshape((rows, in_dim))?;
        let ys = if xs.track_op() {
            // Composed: candle's matmul and its backward.
            xs.matmul(&half_weights::dense(&self.weight, &xs)?.t()?)?
        } else {
            half_weights::x_wt(&xs, &self.weight)?
        };
        let ys = match &self.bias {
            Some(bias) => ys.broadcast_add(bias)?,
            None => ys,
        };
        if let Some(last) = dims.last_mut() {
            *last = out_dim;
        }
        ys.reshape(dims)
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // Off the CPU a tracked input takes candle's matmul backward (weight gradient included).
        if !xs.track_op() || !self.grads.custom_on(xs) {
            return self.value(xs);
        }
        let value = self.value(&xs.detach())?;
        let kind = GradKind::Linear {
            weight: self.weight.clone(),
        };
        attach_input_grad(value, xs, kind)
    }
}

/// `nn.LayerNorm(hidden, eps)` with weight and bias.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    grads: InputGrads,
}

impl LayerNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            eps,
            grads: InputGrads::default(),
        })
    }

    pub fn set_input_grads(&mut self, grads: InputGrads) {
        self.grads = grads;
    }

    fn value(&self, xs: &Tensor) -> Result<Tensor> {
        let eps = self.eps as f32;
        if xs.dtype() == DType::F64 {
            // The fused kernel has no f64 version (f64 serves the finite-difference tests).
            candle_nn::ops::layer_norm_slow(xs, &self.weight, &self.bias, eps)
        } else {
            candle_nn::ops::layer_norm(&xs.contiguous()?, &self.weight, &self.bias, eps)
        }
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if !xs.track_op() {
            return self.value(xs);
        }
        if !self.grads.custom_on(xs) {
            let eps = self.eps as f32;
            return candle_nn::ops::layer_norm_slow(xs, &self.weight, &self.bias, eps);
        }
        let value = self.value(&xs.detach())?;
        let kind = GradKind::LayerNorm {
            weight: self.weight.clone(),
            eps: self.eps,
        };
        attach_input_grad(value, xs, kind)
    }
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(xs: &Tensor, grads: InputGrads) -> Result<Tensor> {
    let value = |xs: &Tensor| candle_nn::ops::softmax_last_dim(&xs.contiguous()?);
    if !xs.track_op() {
        return value(xs);
    }
    if !grads.custom_on(xs) {
        return candle_nn::ops::softmax(xs, D::Minus1);
    }
    attach_input_grad(value(&xs.detach())?, xs, GradKind::SoftmaxLastDim)
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
