//! A linear layer that is fast on the CPU: `y = x·Wᵀ + b`.
//!
//! candle-nn's `Linear` multiplies each batch item by the transposed weight
//! view; on the MMDiT's `[2, tokens, in]` activations that reaches 180 to 300
//! GFLOP/s on the dev CPU, where one GEMM over all rows against a weight
//! stored transposed (`[in, out]`, contiguous: the layout gemm's kernels read
//! best) reaches 420 to 480 (`[2, 256, 2048] → 512`: 192 → 478). So on the CPU
//! in f32 the weight is transposed once at load, rows are flattened into one
//! product, and the bias (with an optional tanh GELU) is added in place in a
//! single pass.
//!
//! A CPU weight in a stored format (f16, bf16, float8 e4m3fn, from a checkpoint
//! that keeps it so: `sd3::precision`) stays in that format, `[out, in]`, with
//! its per-tensor scale; its products widen it to f32 block by block
//! (`precision::product`). A weight the loader quantised to int8 blocks
//! (`precision::int8`, a `u8` tensor) is kept and computed the same way.
//! Other devices and dtypes keep candle-nn's `Linear`.

use candle_core::{
    CpuStorage, CustomOp1, DType, InplaceOp2, Layout, Module, Result, Shape, Tensor, D,
};
use candle_nn::{self as nn, VarBuilder};
use rayon::prelude::*;

use super::cpu_storage::{f32_values, f32_values_mut};
use super::precision::{self, int8, product::is_stored_format};
use super::vector_math::{add_bias_in_place, bias_gelu_tanh_in_place};

#[derive(Debug, Clone)]
pub enum Linear {
    /// CPU f32: `weight_t` is `[in, out]`, contiguous.
    Transposed {
        weight_t: Tensor,
        bias: Option<Tensor>,
    },
    /// CPU, a weight `[out, in]` kept in its stored format (f16, bf16, f8e4m3),
    /// standing for `scale · weight`, or in int8 blocks (`u8` `[out, row_bytes(in)]`,
    /// scale 1); computes in f32.
    Stored {
        weight: Tensor,
        scale: f32,
        bias: Option<Tensor>,
    },
    Candle(nn::Linear),
}

/// `nn::linear` (with bias), in the layout its device runs fastest; a weight the
/// loader keeps in a stored format stays so.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let (weight, scale) = stored_weight(in_dim, out_dim, &vb)?;
    let bound = 1. / (in_dim as f64).sqrt();
    let bias = vb.get_with_hints(
        out_dim,
        "bias",
        nn::Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )?;
    Linear::from_parts(weight, scale, Some(bias), vb.dtype())
}

/// `nn::linear_no_bias`, as [`linear`].
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let (weight, scale) = stored_weight(in_dim, out_dim, &vb)?;
    Linear::from_parts(weight, scale, None, vb.dtype())
}

/// The weight `[out, in]` as the loader gives it, and the per-tensor scale it stands
/// multiplied by: ComfyUI's `scale_weight` of a float8 weight the loader kept as stored
/// (`precision::LinearWeight::Stored`), 1 for any other (a loader that converts or quantises
/// a weight applies its scale). A loader that quantises gives int8 blocks
/// (`precision::int8`), a `u8` tensor `[out, row_bytes(in)]`.
fn stored_weight(in_dim: usize, out_dim: usize, vb: &VarBuilder) -> Result<(Tensor, f32)> {
    let hint = precision::STORED_LINEAR_WEIGHT;
    let shape = Shape::from((out_dim, in_dim));
    let weight = vb.get_with_hints(shape.clone(), "weight", hint)?;
    if weight.dtype() == DType::U8 {
        let packed = (out_dim, int8::row_bytes(in_dim));
        if weight.dims2()? != packed {
            candle_core::bail!(
                "{}.weight: int8 blocks of shape {:?}, expected {packed:?} for [{out_dim}, {in_dim}]",
                vb.prefix(),
                weight.dims()
            );
        }
        return Ok((weight, 1.0));
    }
    let kept = precision::linear_weight(&hint, &shape, vb.dtype(), vb.device()).is_some();
    if !(kept && is_stored_format(weight.dtype()) && vb.contains_tensor("scale_weight")) {
        return Ok((weight, 1.0));
    }
    let scale = vb.get_unchecked_dtype("scale_weight", DType::F32)?;
    match scale.flatten_all()?.to_vec1::<f32>()?[..] {
        [value] if value.is_finite() => Ok((weight, value)),
        _ => candle_core::bail!(
            "{}.scale_weight: a per-tensor scale must be one finite value, found shape {:?}",
            vb.prefix(),
            scale.dims()
        ),
    }
}

impl Linear {
    /// The fastest layout for `inner`'s device and dtype, for a model computing in f32
    /// on the CPU: a weight in a stored format (f16, bf16, f8e4m3, as the checkpoint
    /// loader gives candle-nn's linear constructors) stays in it. (A model computing in
    /// half precision builds through [`linear`] with a VarBuilder in that dtype.)
    pub fn new(inner: nn::Linear) -> Result<Self> {
        let bias = inner.bias().cloned();
        Self::from_parts(inner.weight().clone(), 1.0, bias, DType::F32)
    }

    /// `x · (scale · weight)ᵀ + bias` for a model computing in `compute`; `scale` other
    /// than 1 only for a stored-format weight kept in f32 CPU models.
    fn from_parts(
        weight: Tensor,
        scale: f32,
        bias: Option<Tensor>,
        compute: DType,
    ) -> Result<Self> {
        let bias = bias.map(|b| b.contiguous()).transpose()?;
        let cpu = weight.device().is_cpu();
        let kept = is_stored_format(weight.dtype()) || weight.dtype() == DType::U8;
        if cpu && compute == DType::F32 && kept {
            let bias = bias.map(|b| b.to_dtype(DType::F32)).transpose()?;
            return Ok(Self::Stored {
                weight: weight.contiguous()?,
                scale,
                bias,
            });
        }
        if scale != 1.0 {
            candle_core::bail!("linear: a scale with a {:?} weight", weight.dtype());
        }
        // A weight that is a view (a broadcast placeholder, as when only shapes are laid
        // out) stays as it is: transposing would materialise it.
        if !(cpu && weight.dtype() == DType::F32 && weight.is_contiguous()) {
            return Ok(Self::Candle(nn::Linear::new(weight, bias)));
        }
        Ok(Self::Transposed {
            weight_t: weight.apply_op1_no_bwd(&Transpose)?,
            bias,
        })
    }

    /// The dtype the layer computes in (inputs are cast to it): f32 for a stored-format
    /// weight.
    pub fn dtype(&self) -> DType {
        match self {
            Self::Transposed { weight_t, .. } => weight_t.dtype(),
            Self::Stored { .. } => DType::F32,
            Self::Candle(inner) => inner.weight().dtype(),
        }
    }

    pub fn device(&self) -> &candle_core::Device {
        match self {
            Self::Transposed { weight_t, .. } => weight_t.device(),
            Self::Stored { weight, .. } => weight.device(),
            Self::Candle(inner) => inner.weight().device(),
        }
    }

    /// Bytes the weight occupies in memory (the bias aside).
    pub fn weight_bytes(&self) -> usize {
        let weight = match self {
            Self::Transposed { weight_t, .. } => weight_t,
            Self::Stored { weight, .. } => weight,
            Self::Candle(inner) => inner.weight(),
        };
        weight.elem_count() * weight.dtype().size_in_bytes()
    }

    /// `gelu_tanh(x·Wᵀ + b)`, the activation fused with the bias on the CPU.
    pub fn forward_gelu_tanh(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Transposed { weight_t, bias } => {
                Self::transposed(x, weight_t, bias.as_ref(), Activation::GeluTanh)
            }
            Self::Stored {
                weight,
                scale,
                bias,
            } => Self::stored(x, weight, *scale, bias.as_ref(), Activation::GeluTanh),
            Self::Candle(inner) => x.apply(inner)?.gelu(),
        }
    }

    fn transposed(
        x: &Tensor,
        weight_t: &Tensor,
        bias: Option<&Tensor>,
        activation: Activation,
    ) -> Result<Tensor> {
        let out_dims = out_dims(x, weight_t.dim(1)?)?;
        let y = x.flatten_to(D::Minus2)?.contiguous()?.matmul(weight_t)?;
        finish(y, bias, activation)?.reshape(out_dims)
    }

    fn stored(
        x: &Tensor,
        weight: &Tensor,
        scale: f32,
        bias: Option<&Tensor>,
        activation: Activation,
    ) -> Result<Tensor> {
        let out_dims = out_dims(x, weight.dim(0)?)?;
        let y = precision::product::x_wt(&x.flatten_to(D::Minus2)?, weight, scale)?;
        finish(y, bias, activation)?.reshape(out_dims)
    }
}

/// `x`'s dims with the last one replaced by `out`.
fn out_dims(x: &Tensor, out: usize) -> Result<Vec<usize>> {
    let mut dims = x.dims().to_vec();
    let Some(last) = dims.last_mut() else {
        candle_core::bail!("linear: a scalar input");
    };
    *last = out;
    Ok(dims)
}

/// Adds the bias to the product `y` and applies the activation, in place.
fn finish(y: Tensor, bias: Option<&Tensor>, activation: Activation) -> Result<Tensor> {
    match (bias, activation) {
        (Some(bias), activation) => y.inplace_op2(bias, &BiasActivation(activation))?,
        (None, Activation::Identity) => {}
        (None, Activation::GeluTanh) => candle_core::bail!("linear: GELU without a bias"),
    }
    Ok(y)
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Transposed { weight_t, bias } => {
                Self::transposed(x, weight_t, bias.as_ref(), Activation::Identity)
            }
            Self::Stored {
                weight,
                scale,
                bias,
            } => Self::stored(x, weight, *scale, bias.as_ref(), Activation::Identity),
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

    /// A weight kept in a stored format (f16, bf16, scaled f8e4m3) computes what candle's f32
    /// matmul computes with its widened, scaled values (up to summation order), over few rows
    /// (streamed) and many (gemm), odd widths, strided input, bias and GELU.
    #[test]
    fn stored_weights_compute_what_candle_f32_does_with_their_values() -> Result<()> {
        for (dtype, scale) in [(DType::F16, 1.0), (DType::BF16, 1.0), (DType::F8E4M3, 0.05)] {
            for (out, inp) in [(67, 45), (3, 130)] {
                let weight = random(8, &[out, inp])?.to_dtype(dtype)?;
                let bias = random(9, &[out])?;
                let fast =
                    Linear::from_parts(weight.clone(), scale, Some(bias.clone()), DType::F32)?;
                assert!(matches!(fast, Linear::Stored { .. }));
                assert_eq!(fast.dtype(), DType::F32);
                assert_eq!(fast.weight_bytes(), out * inp * dtype.size_in_bytes());
                let wide = (weight.to_dtype(DType::F32)? * f64::from(scale))?;
                let reference = nn::Linear::new(wide, Some(bias));
                for x in [
                    random(10, &[2, inp, 19])?.transpose(1, 2)?,
                    random(11, &[5, inp])?,
                ] {
                    let expected = x.contiguous()?.apply(&reference)?;
                    let diff = max_abs_diff(&fast.forward(&x)?, &expected)?;
                    assert!(diff < 1e-4, "{dtype:?} [{out}, {inp}]: {diff}");
                    let diff = max_abs_diff(&fast.forward_gelu_tanh(&x)?, &expected.gelu()?)?;
                    assert!(diff < 1e-4, "{dtype:?} [{out}, {inp}] + gelu: {diff}");
                }
            }
        }
        // `Linear::new` keeps a stored format too (candle-nn's constructors, from the loader);
        // a model computing in f16 keeps candle's layer.
        let f16 = random(12, &[8, 40])?.to_dtype(DType::F16)?;
        let kept = Linear::new(nn::Linear::new(f16.clone(), None))?;
        assert!(matches!(kept, Linear::Stored { .. }));
        let half_model = Linear::from_parts(f16, 1.0, None, DType::F16)?;
        assert!(matches!(half_model, Linear::Candle(_)));
        Ok(())
    }

    /// A layer built from int8 blocks (as the loader gives them with `WeightDtype::Int8`) keeps
    /// one byte per weight plus one f32 scale per 32, and computes within the quantisation
    /// error of the f32 layer: `|Δy| ≤ Σ|x_i| · step_i / 2`, bounded here by `‖x‖₁ · max|w| / 254`.
    #[test]
    fn int8_weights_keep_a_byte_per_weight_and_compute_within_their_step() -> Result<()> {
        let (out, inp) = (40, 96);
        let weight = random(13, &[out, inp])?;
        let bias = random(14, &[out])?;
        let packed = int8::quantise(&weight, 1.0)?;
        let layer = Linear::from_parts(packed, 1.0, Some(bias.clone()), DType::F32)?;
        assert!(matches!(layer, Linear::Stored { .. }));
        assert_eq!(layer.weight_bytes(), out * (inp + 4 * inp / 32));
        let reference = nn::Linear::new(weight.clone(), Some(bias));
        let max_w = weight.abs()?.max_all()?.to_scalar::<f32>()?;
        for x in [random(15, &[3, inp])?, random(16, &[2, 20, inp])?] {
            let bound = x.abs()?.sum(D::Minus1)?.max_all()?.to_scalar::<f32>()? * max_w / 254.0;
            let diff = max_abs_diff(&layer.forward(&x)?, &x.apply(&reference)?)?;
            assert!(diff <= bound && diff > 0.0, "int8: {diff} against {bound}");
        }
        Ok(())
    }
}
