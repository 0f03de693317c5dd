//! GroupNorm, optionally followed by SiLU, in one pass per group on the CPU.
//!
//! candle-nn's GroupNorm is a chain of tensor ops (sum, subtract, square,
//! sum, divide, scale, shift) that allocates and writes a full-size tensor at
//! each step, and the SiLU after it one more; on the VAE's full-resolution
//! activations that is a large share of the decode. Here each (image, group)
//! is reduced once for its mean and once for its variance (two-pass, f64
//! accumulators, as exact as the chain) and written once, groups in parallel.
//! Other devices and dtypes use candle-nn's GroupNorm.

use candle_core::{
    CpuStorage, CustomOp3, DType, InplaceOp3, Layout, Module, Result, Shape, Tensor,
};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::sd3::cpu_storage::{f32_values, f32_values_mut};
use crate::sd3::vector_math::scale_shift_silu;

#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: candle_nn::GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(weight: Tensor, bias: Tensor, groups: usize, eps: f64) -> Result<Self> {
        let channels = weight.elem_count();
        let inner = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?;
        Ok(Self {
            inner,
            weight,
            bias,
            groups,
            eps,
        })
    }

    /// Loads `weight` and `bias` from `vb` as `candle_nn::group_norm` does
    /// (fresh variables start at 1 and 0).
    pub fn load(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
        let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
        Self::new(weight, bias, groups, eps)
    }

    /// `silu(group_norm(x))`.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, true)
    }

    /// `silu(group_norm(x))` written over `x`, which the caller hands over: no other handle
    /// may share its storage. Off the CPU, or for a strided `x`, a new tensor.
    pub fn forward_silu_in_place(&self, x: Tensor) -> Result<Tensor> {
        if !(x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous()) {
            return self.forward_silu(&x);
        }
        let op = self.fused(true);
        x.inplace_op3(&self.weight.contiguous()?, &self.bias.contiguous()?, &op)?;
        Ok(x)
    }

    fn run(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        if !(x.device().is_cpu() && x.dtype() == DType::F32) {
            let y = x.apply(&self.inner)?;
            return if silu { y.silu() } else { Ok(y) };
        }
        let op = self.fused(silu);
        x.contiguous()?
            .apply_op3_no_bwd(&self.weight.contiguous()?, &self.bias.contiguous()?, &op)
    }

    fn fused(&self, silu: bool) -> FusedGroupNorm {
        FusedGroupNorm {
            groups: self.groups,
            eps: self.eps,
            silu,
        }
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, false)
    }
}

struct FusedGroupNorm {
    groups: usize,
    eps: f64,
    silu: bool,
}

impl CustomOp3 for FusedGroupNorm {
    fn name(&self) -> &'static str {
        "fused-group-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        weight: &CpuStorage,
        weight_l: &Layout,
        bias: &CpuStorage,
        bias_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let group_len = self.group_len(x_l, weight_l)?;
        let name = CustomOp3::name(self);
        let (x, weight, bias) = (
            f32_values(name, x, x_l)?,
            f32_values(name, weight, weight_l)?,
            f32_values(name, bias, bias_l)?,
        );
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(group_len)
            .zip(x.par_chunks(group_len))
            .enumerate()
            .for_each(|(i, (out, x))| {
                let (weight, bias) = self.group_params(i, weight, bias);
                self.normalize(x, weight, bias, out);
            });
        Ok((CpuStorage::F32(out), x_l.shape().clone()))
    }
}

impl InplaceOp3 for FusedGroupNorm {
    fn name(&self) -> &'static str {
        "fused-group-norm-in-place"
    }

    fn cpu_fwd(
        &self,
        x: &mut CpuStorage,
        x_l: &Layout,
        weight: &CpuStorage,
        weight_l: &Layout,
        bias: &CpuStorage,
        bias_l: &Layout,
    ) -> Result<()> {
        let group_len = self.group_len(x_l, weight_l)?;
        let name = InplaceOp3::name(self);
        let (weight, bias) = (
            f32_values(name, weight, weight_l)?,
            f32_values(name, bias, bias_l)?,
        );
        let x = f32_values_mut(name, x, x_l)?;
        x.par_chunks_mut(group_len).enumerate().for_each(|(i, x)| {
            let (weight, bias) = self.group_params(i, weight, bias);
            // One channel plane at a time through a copy, so the SIMD kernel reads and
            // writes separate slices.
            let plane = x.len() / weight.len();
            let mut input = vec![0f32; plane];
            let (mean, inv_std) = self.statistics(x);
            for (x, (&w, &b)) in x.chunks_exact_mut(plane).zip(weight.iter().zip(bias)) {
                input.copy_from_slice(x);
                self.write_channel(&input, Self::scale_shift(w, b, mean, inv_std), x);
            }
        });
        Ok(())
    }
}

impl FusedGroupNorm {
    /// The length of one (image, group) run of `x` `[b, channels, ...]`, once `x` and the
    /// per-channel `weight` are checked to fit the groups.
    fn group_len(&self, x_l: &Layout, weight_l: &Layout) -> Result<usize> {
        let dims = x_l.shape().dims();
        let channels = dims.get(1).copied().unwrap_or(0);
        if dims.len() < 3 || channels % self.groups != 0 || weight_l.shape().dims() != [channels] {
            candle_core::bail!(
                "group norm: input {:?} does not fit {} groups of weight {:?}",
                x_l.shape(),
                self.groups,
                weight_l.shape()
            );
        }
        let per_channel: usize = dims[2..].iter().product();
        Ok(channels / self.groups * per_channel)
    }

    /// The weights and biases of the channels in run `i` (image-major, then group).
    fn group_params<'a>(
        &self,
        i: usize,
        weight: &'a [f32],
        bias: &'a [f32],
    ) -> (&'a [f32], &'a [f32]) {
        let group_channels = weight.len() / self.groups;
        let first = (i % self.groups) * group_channels;
        let channels = first..first + group_channels;
        (&weight[channels.clone()], &bias[channels])
    }

    /// Mean and 1/std of one group's values (two passes, f64 accumulators).
    fn statistics(&self, x: &[f32]) -> (f64, f64) {
        let n = x.len() as f64;
        let mean = lane_sum(x, |v| v) / n;
        let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
        (mean, 1.0 / (var + self.eps).sqrt())
    }

    /// The affine map one channel's values take: `x·scale + shift`.
    fn scale_shift(weight: f32, bias: f32, mean: f64, inv_std: f64) -> (f32, f32) {
        let scale = weight as f64 * inv_std;
        (scale as f32, (bias as f64 - mean * scale) as f32)
    }

    /// One channel plane `x` normalised into `out` (and through SiLU when asked).
    fn write_channel(&self, x: &[f32], (scale, shift): (f32, f32), out: &mut [f32]) {
        if self.silu {
            scale_shift_silu(out, x, scale, shift);
        } else {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v * scale + shift;
            }
        }
    }

    /// One group of one image: `x` holds `weight.len()` channel planes.
    fn normalize(&self, x: &[f32], weight: &[f32], bias: &[f32], out: &mut [f32]) {
        let (mean, inv_std) = self.statistics(x);
        let plane = x.len() / weight.len();
        for ((out, x), (&w, &b)) in out
            .chunks_exact_mut(plane)
            .zip(x.chunks_exact(plane))
            .zip(weight.iter().zip(bias))
        {
            self.write_channel(x, Self::scale_shift(w, b, mean, inv_std), out);
        }
    }
}

/// `Σ f(x_i)` in f64 over eight independent lanes (so it vectorises).
fn lane_sum(x: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v as f64)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v as f64);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd3::sampling::seeded_noise;
    use candle_core::Device;

    /// Against candle-nn's GroupNorm (+ candle's SiLU) on seeded inputs with
    /// an offset mean: both are two-pass, so they agree to f32 rounding.
    fn check(shape: &[usize], groups: usize) -> Result<()> {
        let dev = Device::Cpu;
        let channels = shape[1];
        let x = (seeded_noise(1, shape, &dev)? * 3.0)?.affine(1.0, 2.0)?;
        let weight = seeded_noise(2, &[channels], &dev)?;
        let bias = seeded_noise(3, &[channels], &dev)?;
        let ours = GroupNorm::new(weight.clone(), bias.clone(), groups, 1e-6)?;
        let reference = candle_nn::GroupNorm::new(weight, bias, channels, groups, 1e-6)?;
        let max_diff = |a: Tensor, b: Tensor| -> Result<f32> {
            (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
        };
        let plain = max_diff(ours.forward(&x)?, x.apply(&reference)?)?;
        let silu = max_diff(ours.forward_silu(&x)?, x.apply(&reference)?.silu()?)?;
        let in_place = ours.forward_silu_in_place(x.copy()?)?;
        assert_eq!(max_diff(in_place, ours.forward_silu(&x)?)?, 0.0);
        assert!(
            plain < 1e-5 && silu < 1e-5,
            "{shape:?}/{groups}: {plain}, {silu}"
        );
        Ok(())
    }

    #[test]
    fn matches_candle_nn() -> Result<()> {
        check(&[2, 8, 5, 7], 4)?;
        check(&[1, 32, 17, 13], 8)?;
        check(&[1, 6, 3, 3], 6)?;
        check(&[3, 4, 11], 2)
    }

    #[test]
    fn rejects_input_with_other_channels() -> Result<()> {
        let dev = Device::Cpu;
        let ones = Tensor::ones(8, DType::F32, &dev)?;
        let norm = GroupNorm::new(ones.clone(), ones.zeros_like()?, 4, 1e-6)?;
        let err = norm.forward(&Tensor::zeros((1, 6, 2, 2), DType::F32, &dev)?);
        assert!(err.unwrap_err().to_string().contains("does not fit"));
        Ok(())
    }
}
