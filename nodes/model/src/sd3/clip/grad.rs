//! Fused forward passes with hand-written input gradients, for the CreTok training path.
//!
//! The trainer differentiates w.r.t. one input embedding with every weight frozen. candle's
//! fused LayerNorm and softmax have no backward, and its `matmul` backward also computes the
//! (unused) weight gradient of every Linear, which dominates the step time at the trainer's
//! short sequences. Here the value is computed on a detached input (fused kernels, no graph),
//! and [`InputGrad`] attaches it to the tracked input with only d(out)/d(input):
//! - Linear `y = x Wᵀ + b`: `dx = g W`.
//! - LayerNorm `y = γ x̂ + β`, `x̂ = (x - μ) σ⁻¹`: `dx = σ⁻¹ (gγ - mean(gγ) - x̂ mean(gγ x̂))`.
//! - softmax `y`: `dx = y (g - Σ g y)`.
//!
//! The forward of [`InputGrad`] only copies the value (CPU); other devices fall back to
//! candle's composed ops ([`InputGrads`]). Checked against finite differences and against the
//! composed ops in `nodes/tests/text_clip.rs`.

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};

use super::half_weights;

/// How the CLIP layers differentiate w.r.t. their input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputGrads {
    /// Fused forward kernels with the hand-written input gradients of this module where the
    /// device allows (CPU); candle's composed ops elsewhere (CUDA).
    #[default]
    Custom,
    /// candle's composed differentiable ops on every device (what CUDA runs; tests compare).
    Composed,
}

impl InputGrads {
    /// Whether the hand-written input gradient applies to `xs`.
    pub fn custom_on(self, xs: &Tensor) -> bool {
        self == InputGrads::Custom && xs.device().is_cpu()
    }
}

/// Which function's input gradient to attach.
#[derive(Debug, Clone)]
pub enum GradKind {
    /// `x Wᵀ + b` with `weight` `[out, in]` (f32, or half precision: see `half_weights`).
    Linear { weight: Tensor },
    /// LayerNorm over the last dimension with affine `weight`.
    LayerNorm { weight: Tensor, eps: f64 },
    /// Softmax over the last dimension.
    SoftmaxLastDim,
}

/// Returns `value` (computed from `input.detach()`) wired into `input`'s graph with the
/// input gradient of `kind`. When `input` tracks no gradient, returns `value` itself.
pub fn attach_input_grad(value: Tensor, input: &Tensor, kind: GradKind) -> Result<Tensor> {
    if !input.track_op() {
        return Ok(value);
    }
    value.contiguous()?.apply_op2(input, InputGrad { kind })
}

/// The custom op behind [`attach_input_grad`].
struct InputGrad {
    kind: GradKind,
}

fn copy_contiguous<T: Clone>(v: &[T], layout: &Layout) -> Result<Vec<T>> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(v[start..end].to_vec()),
        None => bail!("input-grad value must be contiguous"),
    }
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "input-grad"
    }

    fn cpu_fwd(
        &self,
        value: &CpuStorage,
        layout: &Layout,
        _input: &CpuStorage,
        _input_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match value {
            CpuStorage::F32(v) => CpuStorage::F32(copy_contiguous(v, layout)?),
            CpuStorage::F64(v) => CpuStorage::F64(copy_contiguous(v, layout)?),
            CpuStorage::F16(v) => CpuStorage::F16(copy_contiguous(v, layout)?),
            CpuStorage::BF16(v) => CpuStorage::BF16(copy_contiguous(v, layout)?),
            _ => bail!("input-grad: only float tensors carry gradients"),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(
        &self,
        _value: &Tensor,
        input: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = match &self.kind {
            GradKind::Linear { weight } => {
                // One 2-D product over all leading dimensions (no broadcast copy of the weight).
                let out_dim = weight.dim(0)?;
                let rows = grad.elem_count() / out_dim;
                half_weights::g_w(&grad.reshape((rows, out_dim))?, weight)?
                    .reshape(input.shape())?
            }
            GradKind::LayerNorm { weight, eps } => {
                layer_norm_input_grad(input, grad, weight, *eps)?
            }
            GradKind::SoftmaxLastDim => {
                let dot = (grad * res)?.sum_keepdim(D::Minus1)?;
                (res * grad.broadcast_sub(&dot)?)?
            }
        };
        Ok((None, Some(dx)))
    }
}

fn layer_norm_input_grad(
    input: &Tensor,
    grad: &Tensor,
    weight: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let x = input.detach();
    // Reduced-precision inputs are normalised in f32, as candle's kernels do.
    let dtype = x.dtype();
    let work = if matches!(dtype, DType::F16 | DType::BF16) {
        DType::F32
    } else {
        dtype
    };
    let (x, g) = (x.to_dtype(work)?, grad.to_dtype(work)?);
    let mu = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mu)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let rstd = (var + eps)?.sqrt()?.recip()?;
    let x_hat = centred.broadcast_mul(&rstd)?;
    let gw = g.broadcast_mul(&weight.to_dtype(work)?)?;
    let mean_gw = gw.mean_keepdim(D::Minus1)?;
    let mean_gw_xhat = (&gw * &x_hat)?.mean_keepdim(D::Minus1)?;
    let dx = gw
        .broadcast_sub(&mean_gw)?
        .sub(&x_hat.broadcast_mul(&mean_gw_xhat)?)?
        .broadcast_mul(&rstd)?;
    dx.to_dtype(dtype)
}
