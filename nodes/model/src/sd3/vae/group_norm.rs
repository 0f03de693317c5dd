//! GroupNorm, optionally followed by SiLU, in one pass per group on the CPU.
//!
//! candle-nn's GroupNorm is a chain of tensor ops (sum, subtract, square,
//! sum, divide, scale, shift) that allocates and writes a full-size tensor at
//! each step, and the SiLU after it one more; on the VAE's full-resolution
//! activations that is a large share of the decode. Here each (image, group)
//! is reduced once for its mean and once for its variance (two-pass, f64
//! accumulators, as exact as the chain) and written once, groups in parallel.
//! Other devices and dtypes use candle-nn's GroupNorm.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::sd3::cpu_storage::f32_values;
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

    fn run(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        if !(x.device().is_cpu() && x.dtype() == DType::F32) {
            let y = x.apply(&self.inner)?;
            return if silu { y.silu() } else { Ok(y) };
        }
        let op = FusedGroupNorm {
            groups: self.groups,
            eps: self.eps,
            silu,
        };
        x.contiguous()?
            .apply_op3_no_bwd(&self.weight.contiguous()?, &self.bias.contiguous()?, &op)
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
        let (x, weight, bias) = (
            f32_values(self.name(), x, x_l)?,
            f32_values(self.name(), weight, weight_l)?,
            f32_values(self.name(), bias, bias_l)?,
        );
        let per_channel: usize = dims[2..].iter().product();
        let group_channels = channels / self.groups;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(group_channels * per_channel)
            .zip(x.par_chunks(group_channels * per_channel))
            .enumerate()
            .for_each(|(i, (out, x))| {
                let first = (i % self.groups) * group_channels;
                let channels = first..first + group_channels;
                self.normalize(x, &weight[channels.clone()], &bias[channels], out);
            });
        Ok((CpuStorage::F32(out), x_l.shape().clone()))
    }
}

impl FusedGroupNorm {
    /// One group of one image: `x` holds `weight.len()` channel planes.
    fn normalize(&self, x: &[f32], weight: &[f32], bias: &[f32], out: &mut [f32]) {
        let n = x.len() as f64;
        let mean = lane_sum(x, |v| v) / n;
        let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
        let inv_std = 1.0 / (var + self.eps).sqrt();
        let plane = x.len() / weight.len();
        for ((out, x), (&w, &b)) in out
            .chunks_exact_mut(plane)
            .zip(x.chunks_exact(plane))
            .zip(weight.iter().zip(bias))
        {
            let scale = w as f64 * inv_std;
            let (scale, shift) = (scale as f32, (b as f64 - mean * scale) as f32);
            if self.silu {
                scale_shift_silu(out, x, scale, shift);
            } else {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = v * scale + shift;
                }
            }
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
