//! A linear layer that is fast on the CPU: `y = x·Wᵀ + b`.
//!
//! candle-nn's `Linear` multiplies each batch item by the transposed weight
//! view; on the MMDiT's `[2, tokens, in]` activations that reaches 180 to 300
//! GFLOP/s on the dev CPU, where one GEMM over all rows against a weight
//! stored transposed (`[in, out]`, contiguous: the layout gemm's kernels read
//! best) reaches 420 to 480 (`[2, 256, 2048] → 512`: 192 → 478). So on the CPU
//! in f32 the weight is transposed once at load, rows are flattened into one
//! product, and the bias (with an optional tanh GELU) is added in place in a
//! single pass. Other devices and dtypes keep candle-nn's `Linear`.

use candle_core::{
    CpuStorage, CustomOp1, DType, InplaceOp2, Layout, Module, Result, Shape, Tensor, D,
};
use candle_nn::{self as nn, VarBuilder};
use rayon::prelude::*;

use super::cpu_storage::{f32_values, f32_values_mut};
use super::vector_math::{add_bias_in_place, bias_gelu_tanh_in_place};

#[derive(Debug, Clone)]
pub enum Linear {
    /// CPU f32: `weight_t` is `[in, out]`, contiguous.
    Transposed {
        weight_t: Tensor,
        bias: Option<Tensor>,
    },
    Candle(nn::Linear),
}

/// `nn::linear` (with bias), in the layout its device runs fastest.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    Linear::new(nn::linear(in_dim, out_dim, vb)?)
}

impl Linear {
    pub fn new(inner: nn::Linear) -> Result<Self> {
        let weight = inner.weight();
        // A weight that is a view (a broadcast placeholder, as when only shapes are laid
        // out) stays as it is: transposing would materialise it.
        if !(weight.device().is_cpu() && weight.dtype() == DType::F32 && weight.is_contiguous()) {
            return Ok(Self::Candle(inner));
        }
        Ok(Self::Transposed {
            weight_t: weight.apply_op1_no_bwd(&Transpose)?,
            bias: inner.bias().map(Tensor::contiguous).transpose()?,
        })
    }

    pub fn dtype(&self) -> DType {
        match self {
            Self::Transposed { weight_t, .. } => weight_t.dtype(),
            Self::Candle(inner) => inner.weight().dtype(),
        }
    }

    pub fn device(&self) -> &candle_core::Device {
        match self {
            Self::Transposed { weight_t, .. } => weight_t.device(),
            Self::Candle(inner) => inner.weight().device(),
        }
    }

    /// `gelu_tanh(x·Wᵀ + b)`, the activation fused with the bias on the CPU.
    pub fn forward_gelu_tanh(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Transposed { weight_t, bias } => {
                Self::transposed(x, weight_t, bias.as_ref(), Activation::GeluTanh)
            }
            Self::Candle(inner) => x.apply(inner)?.gelu(),
        }
    }

    fn transposed(
        x: &Tensor,
        weight_t: &Tensor,
        bias: Option<&Tensor>,
        activation: Activation,
    ) -> Result<Tensor> {
        let mut out_dims = x.dims().to_vec();
        let Some(last) = out_dims.last_mut() else {
            candle_core::bail!("linear: a scalar input");
        };
        *last = weight_t.dim(1)?;
        let y = x.flatten_to(D::Minus2)?.contiguous()?.matmul(weight_t)?;
        match (bias, activation) {
            (Some(bias), activation) => y.inplace_op2(bias, &BiasActivation(activation))?,
            (None, Activation::Identity) => {}
            (None, Activation::GeluTanh) => candle_core::bail!("linear: GELU without a bias"),
        }
        y.reshape(out_dims)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Transposed { weight_t, bias } => {
                Self::transposed(x, weight_t, bias.as_ref(), Activation::Identity)
            }
            Self::Candle(inner) => x.apply(inner),
        }
    }
}

/// `[rows, cols]` → `[cols, rows]` (CPU f32), in parallel square tiles: candle's strided copy
/// moves about 1 GB/s, which at load would add seconds for SD3's 2 billion weights.
struct Transpose;

/// Side of the tiles [`Transpose`] copies (two 16 KB tiles stay in L1).
const TILE: usize = 64;

impl CustomOp1 for Transpose {
    fn name(&self) -> &'static str {
        "transpose-2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, cols) = layout.shape().dims2()?;
        let input = f32_values(self.name(), storage, layout)?;
        let mut out = vec![0f32; rows * cols];
        out.par_chunks_mut(TILE * rows)
            .enumerate()
            .for_each(|(block, out)| {
                let first_col = block * TILE;
                let n_cols = out.len() / rows;
                for r0 in (0..rows).step_by(TILE) {
                    for c in 0..n_cols {
                        let out = &mut out[c * rows..][r0..(r0 + TILE).min(rows)];
                        for (r, o) in out.iter_mut().enumerate() {
                            *o = input[(r0 + r) * cols + first_col + c];
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((cols, rows))))
    }
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    Identity,
    GeluTanh,
}

/// `x = activation(x + bias)` over the last dimension, in place (CPU f32).
struct BiasActivation(Activation);

/// Rows per parallel chunk of [`BiasActivation`].
const ROWS_PER_CHUNK: usize = 16;

impl InplaceOp2 for BiasActivation {
    fn name(&self) -> &'static str {
        "bias-activation"
    }

    fn cpu_fwd(
        &self,
        x: &mut CpuStorage,
        x_l: &Layout,
        bias: &CpuStorage,
        bias_l: &Layout,
    ) -> Result<()> {
        let x = f32_values_mut(self.name(), x, x_l)?;
        let bias = f32_values(self.name(), bias, bias_l)?;
        let width = bias.len();
        if x_l.dims().last() != Some(&width) {
            candle_core::bail!(
                "bias-activation: bias {:?} does not fit {:?}",
                bias_l.shape(),
                x_l.shape()
            );
        }
        let chunks = x.par_chunks_mut(width * ROWS_PER_CHUNK);
        match self.0 {
            Activation::Identity => chunks.for_each(|rows| add_bias_in_place(rows, bias)),
            Activation::GeluTanh => chunks.for_each(|rows| bias_gelu_tanh_in_place(rows, bias)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd3::test_tensors::{max_abs_diff, random};

    #[test]
    fn transposed_layout_computes_what_candle_does() -> Result<()> {
        let inner = nn::Linear::new(random(1, &[24, 40])?, Some(random(2, &[24])?));
        let fast = Linear::new(inner.clone())?;
        assert!(matches!(fast, Linear::Transposed { .. }));
        // A strided (transposed) input and a 2-d one. (candle 0.11.1's Linear
        // itself miscomputes the transposed one: the reference gets it contiguous.)
        for x in [
            random(3, &[2, 40, 35])?.transpose(1, 2)?,
            random(4, &[7, 40])?,
        ] {
            let reference = x.contiguous()?.apply(&inner)?;
            let diff = max_abs_diff(&fast.forward(&x)?, &reference)?;
            assert!(diff < 1e-5, "linear: {diff}");
            let diff = max_abs_diff(&fast.forward_gelu_tanh(&x)?, &reference.gelu()?)?;
            assert!(diff < 1e-5, "linear + gelu: {diff}");
        }
        let odd = random(7, &[TILE + 3, 2 * TILE + 5])?;
        let transposed = odd.apply_op1_no_bwd(&Transpose)?;
        assert_eq!(max_abs_diff(&transposed, &odd.t()?.contiguous()?)?, 0.0);
        let placeholder =
            Tensor::zeros((), DType::F32, &candle_core::Device::Cpu)?.broadcast_as((8, 40))?;
        let view = Linear::new(nn::Linear::new(placeholder, None))?;
        assert!(
            matches!(view, Linear::Candle(_)),
            "a view is not materialised"
        );
        let no_bias = Linear::new(nn::Linear::new(random(5, &[8, 40])?, None))?;
        let x = random(6, &[3, 40])?;
        assert!(
            max_abs_diff(
                &no_bias.forward(&x)?,
                &x.matmul(&random(5, &[8, 40])?.t()?)?
            )? < 1e-5
        );
        Ok(())
    }
}
