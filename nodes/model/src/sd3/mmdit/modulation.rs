//! adaLN-Zero's element-wise steps: the affine-free LayerNorm followed by
//! `x·(1 + scale) + shift`, and the gated residual `x + gate·y`, with the
//! `[b, dim]` modulation broadcast over each image's tokens.
//!
//! Composed from candle ops they are a LayerNorm pass plus two or three
//! full-size broadcast passes, each allocating its output: about a fifth of
//! an MMDiT step on the CPU. There, in f32, each is one pass over the rows.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use candle_nn as nn;
use rayon::prelude::*;

use crate::sd3::cpu_storage::f32_values;
use crate::sd3::vector_math::{gated_add, modulated_layer_norm};

/// LayerNorm's epsilon in every MMDiT norm (`elementwise_affine=False, eps=1e-6`).
const EPS: f32 = 1e-6;

/// `layer_norm(x)·(1 + scale) + shift` over `x: [b, tokens, dim]`,
/// `shift, scale: [b, dim]`.
pub fn modulated_norm(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    if is_cpu_f32(&[x, shift, scale]) {
        let (shift, scale) = (shift.contiguous()?, scale.contiguous()?);
        return x
            .contiguous()?
            .apply_op3_no_bwd(&shift, &scale, &RowOp::ModulatedNorm);
    }
    let dim = x.dim(candle_core::D::Minus1)?;
    let ones = Tensor::ones(dim, x.dtype(), x.device())?;
    let zeros = Tensor::zeros(dim, x.dtype(), x.device())?;
    nn::ops::layer_norm(x, &ones, &zeros, EPS)?
        .broadcast_mul(&(scale.unsqueeze(1)? + 1.0)?)?
        .broadcast_add(&shift.unsqueeze(1)?)
}

/// `x + gate·y` over `x, y: [b, tokens, dim]`, `gate: [b, dim]`.
pub fn gated_residual(x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
    if is_cpu_f32(&[x, y, gate]) {
        return x.contiguous()?.apply_op3_no_bwd(
            &y.contiguous()?,
            &gate.contiguous()?,
            &RowOp::GatedResidual,
        );
    }
    x + y.broadcast_mul(&gate.unsqueeze(1)?)?
}

fn is_cpu_f32(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The two fused ops; each reads its operands and writes each output row once.
enum RowOp {
    /// Operands `x`, `shift`, `scale`.
    ModulatedNorm,
    /// Operands `x`, `y`, `gate`.
    GatedResidual,
}

/// Rows per parallel chunk.
const ROWS_PER_CHUNK: usize = 8;

impl CustomOp3 for RowOp {
    fn name(&self) -> &'static str {
        match self {
            Self::ModulatedNorm => "modulated-layer-norm",
            Self::GatedResidual => "gated-residual",
        }
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        a: &CpuStorage,
        a_l: &Layout,
        b: &CpuStorage,
        b_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (images, tokens, dim) = x_l.shape().dims3()?;
        let expected_a = match self {
            Self::ModulatedNorm => vec![images, dim],
            Self::GatedResidual => vec![images, tokens, dim],
        };
        if a_l.dims() != expected_a || b_l.dims() != [images, dim] {
            candle_core::bail!(
                "{}: operands {:?}, {:?} do not fit x {:?}",
                self.name(),
                a_l.shape(),
                b_l.shape(),
                x_l.shape()
            );
        }
        let op = self.name();
        let (x, a, b) = (
            f32_values(op, x, x_l)?,
            f32_values(op, a, a_l)?,
            f32_values(op, b, b_l)?,
        );
        let mut out = vec![0f32; x.len()];
        let chunk = ROWS_PER_CHUNK * dim;
        out.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .enumerate()
            .for_each(|(i, (out, x))| {
                let first_row = i * ROWS_PER_CHUNK;
                for (r, (out, x)) in out
                    .chunks_exact_mut(dim)
                    .zip(x.chunks_exact(dim))
                    .enumerate()
                {
                    let row = first_row + r;
                    let per_image = &b[row / tokens * dim..][..dim];
                    match self {
                        Self::ModulatedNorm => {
                            let shift = &a[row / tokens * dim..][..dim];
                            modulated_layer_norm(out, x, shift, per_image, EPS);
                        }
                        Self::GatedResidual => gated_add(out, x, &a[row * dim..][..dim], per_image),
                    }
                }
            });
        Ok((CpuStorage::F32(out), x_l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd3::test_tensors::{max_abs_diff, random};
    use candle_core::Device;

    #[test]
    fn fused_ops_equal_the_composed_ones() -> Result<()> {
        // 2 images × 13 tokens (chunks of 8 rows straddle the images), dim 40;
        // the modulation is a chunk of a wider adaLN output, as in the blocks.
        let x = ((random(1, &[2, 13, 40])? * 3.0)? + 0.5)?;
        let mods = random(2, &[2, 120])?.chunk(3, 1)?;
        let composed_norm = nn::ops::layer_norm(
            &x,
            &Tensor::ones(40, DType::F32, &Device::Cpu)?,
            &Tensor::zeros(40, DType::F32, &Device::Cpu)?,
            EPS,
        )?
        .broadcast_mul(&(mods[1].unsqueeze(1)? + 1.0)?)?
        .broadcast_add(&mods[0].unsqueeze(1)?)?;
        let diff = max_abs_diff(&modulated_norm(&x, &mods[0], &mods[1])?, &composed_norm)?;
        assert!(diff < 1e-5, "modulated norm: {diff}");

        let y = random(3, &[2, 13, 40])?;
        let composed_residual = (&x + y.broadcast_mul(&mods[2].unsqueeze(1)?)?)?;
        let diff = max_abs_diff(&gated_residual(&x, &y, &mods[2])?, &composed_residual)?;
        assert!(diff < 1e-6, "gated residual: {diff}");
        Ok(())
    }

    #[test]
    fn mismatched_modulation_is_an_error() -> Result<()> {
        let x = random(1, &[2, 5, 8])?;
        let err = modulated_norm(&x, &random(2, &[1, 8])?, &random(3, &[1, 8])?).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
        Ok(())
    }
}
