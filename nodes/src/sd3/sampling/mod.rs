//! Rectified-flow sampling for SD3: the shifted sigma schedules, seeded initial
//! noise, and the Euler sampler with classifier-free and skip-layer guidance.
//!
//! References (numerics in PARITY.md §3):
//! - diffusers 0.42.1 `schedulers/scheduling_flow_match_euler_discrete.py`
//!   (`__init__`: `sigma_min = shift(1/1000)` in f32; `set_timesteps`: f64
//!   `linspace(1000, 1000·sigma_min, N)`, shifted again, then f32; `step`:
//!   `x + (σ[i+1] − σ[i])·v`);
//! - diffusers `pipelines/stable_diffusion_3/pipeline_stable_diffusion_3.py`
//!   (CFG batch `[uncond, cond]`, guidance only when `g > 1`, skip-layer guidance
//!   on `start·N < i < stop·N`);
//! - ComfyUI `comfy/model_sampling.py` (`ModelSamplingDiscreteFlow`,
//!   `time_snr_shift`, noise scaling `σ·noise + (1 − σ)·latent`) and
//!   `comfy/samplers.py` (`simple_scheduler`, `normal_scheduler(sgm=True)`,
//!   denoise: the last `steps` of `steps / denoise`).

use std::ops::ControlFlow;

use candle_core::{DType, Device, Result, Tensor};

use super::mmdit::MMDiT;
use super::rng::SplitMix64;
use super::types::Conditioning;

/// SD3's default schedule shift.
pub const DEFAULT_SHIFT: f64 = 3.0;

/// `shift·σ / (1 + (shift − 1)·σ)` (`time_snr_shift`).
pub fn shift_sigma(shift: f64, sigma: f64) -> f64 {
    shift * sigma / (1.0 + (shift - 1.0) * sigma)
}

/// `numpy.linspace(start, stop, n)` in f64 (arange·step + start, last = stop).
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
            v[n - 1] = stop;
            v
        }
    }
}

/// How the sigmas of a run are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// diffusers `FlowMatchEulerDiscreteScheduler` (the pipeline default).
    Diffusers,
    /// ComfyUI `simple`: evenly strided entries of the 1000 shifted training sigmas.
    Simple,
    /// ComfyUI `sgm_uniform`: timesteps linearly from σ_max to σ_min, last dropped.
    SgmUniform,
}

impl Scheduler {
    /// `steps + 1` sigmas from 1 down to 0 (`steps = 0` gives just `[0]`).
    pub fn sigmas(self, steps: usize, shift: f64) -> Vec<f32> {
        let mut sigmas: Vec<f32> = match self {
            Self::Diffusers => {
                // diffusers: sigma_min comes from the f32 training table.
                let sigma_min = shift_f32(shift, 1.0 / 1000.0) as f64;
                linspace(1000.0, 1000.0 * sigma_min, steps)
                    .into_iter()
                    .map(|t| shift_sigma(shift, t / 1000.0) as f32)
                    .collect()
            }
            Self::Simple => {
                let table = training_sigmas(shift);
                let stride = table.len() as f64 / steps as f64;
                (0..steps)
                    .map(|x| table[table.len() - 1 - (x as f64 * stride) as usize])
                    .collect()
            }
            Self::SgmUniform => {
                let table = training_sigmas(shift);
                let (max, min) = (table[table.len() - 1] as f64, table[0] as f64);
                let ts = linspace(max * 1000.0, min * 1000.0, steps + 1);
                ts[..steps]
                    .iter()
                    .map(|t| shift_sigma(shift, t / 1000.0) as f32)
                    .collect()
            }
        };
        sigmas.push(0.0);
        sigmas
    }
}

/// `time_snr_shift` evaluated in f32, as torch does on the f32 training table.
fn shift_f32(shift: f64, sigma: f32) -> f32 {
    let shift = shift as f32;
    shift * sigma / (1.0 + (shift - 1.0) * sigma)
}

/// ComfyUI's `ModelSamplingDiscreteFlow.sigmas`: `shift(t/1000)` for t = 1..=1000, ascending.
fn training_sigmas(shift: f64) -> Vec<f32> {
    (1..=1000)
        .map(|t| shift_f32(shift, t as f32 / 1000.0))
        .collect()
}

/// The sigmas for `steps` steps at `denoise` ∈ (0, 1]: the last `steps + 1`
/// of a `⌊steps / denoise⌋`-step schedule (ComfyUI `KSampler.set_steps`).
pub fn denoise_sigmas(scheduler: Scheduler, steps: usize, shift: f64, denoise: f64) -> Vec<f32> {
    if denoise >= 1.0 || denoise <= 0.0 {
        return scheduler.sigmas(steps, shift);
    }
    let total = (steps as f64 / denoise) as usize;
    let all = scheduler.sigmas(total, shift);
    all[all.len() - (steps + 1)..].to_vec()
}

/// Seeded Gaussian noise of `shape` (row-major fill from one SplitMix64
/// stream), f32 on `device`. Identical on every platform.
pub fn seeded_noise(seed: u64, shape: &[usize], device: &Device) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_vec(SplitMix64::new(seed).normals(n), shape, device)
}

/// The start of sampling: `σ₀·noise + (1 − σ₀)·latent`, a zero latent when
/// none is given (pure noise when σ₀ = 1).
pub fn noise_latent(noise: &Tensor, latent: Option<&Tensor>, sigma0: f32) -> Result<Tensor> {
    let scaled = noise.affine(sigma0 as f64, 0.0)?;
    match latent {
        Some(latent) => scaled + latent.affine(1.0 - sigma0 as f64, 0.0)?,
        None => Ok(scaled),
    }
}

/// A `MODEL` value: the MMDiT and the schedule shift it samples with
/// (ComfyUI's `ModelSamplingSD3` changes the shift).
#[derive(Debug, Clone)]
pub struct DiffusionModel {
    pub mmdit: std::sync::Arc<MMDiT>,
    pub shift: f64,
}

/// Skip-layer guidance (SD3.5): `v += s·(v_cond − v_cond_skipping_layers)`
/// on steps `i` with `start·N < i < stop·N`.
#[derive(Debug, Clone, PartialEq)]
pub struct SkipLayerGuidance {
    pub layers: Vec<usize>,
    pub scale: f64,
    pub start: f64,
    pub stop: f64,
}

/// What the callback sees after each step.
#[derive(Debug)]
pub struct Step<'a> {
    /// 0-based step index.
    pub index: usize,
    pub total: usize,
    /// The latent after this step.
    pub latent: &'a Tensor,
    /// The model's clean-image estimate `x − σ·v` at this step (for previews).
    pub denoised: &'a Tensor,
}

/// The flow-matching Euler sampler.
#[derive(Debug, Clone)]
pub struct EulerSampler {
    /// Descending sigmas, ending at 0.
    pub sigmas: Vec<f32>,
    /// Classifier-free guidance scale; guidance applies only when > 1.
    pub cfg: f64,
    pub skip_layer_guidance: Option<SkipLayerGuidance>,
}

impl EulerSampler {
    /// Runs from `x` (already at `sigmas[0]`). Conditioning with batch 1 is
    /// broadcast over the latent batch. Returns `None` when `callback` breaks.
    pub fn sample(
        &self,
        model: &MMDiT,
        positive: &Conditioning,
        negative: &Conditioning,
        x: &Tensor,
        callback: &mut dyn FnMut(&Step<'_>) -> ControlFlow<()>,
    ) -> Result<Option<Tensor>> {
        let batch = x.dim(0)?;
        let guided = self.cfg > 1.0;
        let pos = expand_batch(positive, batch)?;
        let neg = expand_batch(negative, batch)?;
        let (context, pooled) = if guided {
            (
                Tensor::cat(&[&neg.context, &pos.context], 0)?,
                Tensor::cat(&[&neg.pooled, &pos.pooled], 0)?,
            )
        } else {
            (pos.context.clone(), pos.pooled.clone())
        };
        let total = self.sigmas.len().saturating_sub(1);
        let mut x = x.to_dtype(DType::F32)?;
        for index in 0..total {
            let (sigma, sigma_next) = (self.sigmas[index], self.sigmas[index + 1]);
            let timestep = sigma * 1000.0;
            let v = if guided {
                let input = Tensor::cat(&[&x, &x], 0)?;
                let t = Tensor::full(timestep, 2 * batch, x.device())?;
                let out = model.forward(&input, &t, &pooled, &context, &[])?;
                let out = out.to_dtype(DType::F32)?;
                let (uncond, cond) = (out.narrow(0, 0, batch)?, out.narrow(0, batch, batch)?);
                let v = (&uncond + ((&cond - &uncond)? * self.cfg)?)?;
                match &self.skip_layer_guidance {
                    Some(slg) if slg_active(slg, index, total) => {
                        let t = Tensor::full(timestep, batch, x.device())?;
                        let skipped = model
                            .forward(&x, &t, &pos.pooled, &pos.context, &slg.layers)?
                            .to_dtype(DType::F32)?;
                        (v + ((cond - skipped)? * slg.scale)?)?
                    }
                    _ => v,
                }
            } else {
                let t = Tensor::full(timestep, batch, x.device())?;
                model
                    .forward(&x, &t, &pos.pooled, &pos.context, &[])?
                    .to_dtype(DType::F32)?
            };
            let denoised = (&x - v.affine(sigma as f64, 0.0)?)?;
            x = (&x + v.affine((sigma_next - sigma) as f64, 0.0)?)?;
            let step = Step {
                index,
                total,
                latent: &x,
                denoised: &denoised,
            };
            if callback(&step).is_break() {
                return Ok(None);
            }
        }
        Ok(Some(x))
    }
}

/// diffusers: `i > N·start and i < N·stop`.
fn slg_active(slg: &SkipLayerGuidance, index: usize, total: usize) -> bool {
    let i = index as f64;
    i > total as f64 * slg.start && i < total as f64 * slg.stop
}

/// Repeats a batch-1 conditioning to `batch` rows; other sizes must match.
fn expand_batch(cond: &Conditioning, batch: usize) -> Result<Conditioning> {
    let have = cond.context.dim(0)?;
    if have == batch {
        return Ok(cond.clone());
    }
    if have != 1 {
        candle_core::bail!("conditioning batch {have} does not match latent batch {batch}");
    }
    Ok(Conditioning {
        context: cond.context.repeat((batch, 1, 1))?,
        pooled: cond.pooled.repeat((batch, 1))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= tol, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn diffusers_schedule_matches_parity_values() {
        // PARITY.md §3, printed by diffusers 0.42.1 to 8 digits (bit-exact equality
        // with diffusers' f32 sigmas is checked against the goldens in tests/image_parity.rs).
        let s = Scheduler::Diffusers.sigmas(4, 3.0);
        assert_close(
            &s,
            &[1.0, 0.857_692_3, 0.602_150_56, 0.008_928_572, 0.0],
            1e-7,
        );
        let s = Scheduler::Diffusers.sigmas(28, 3.0);
        assert_eq!(s.len(), 29);
        assert_close(&s[..3], &[1.0, 0.987_380_6, 0.974_107_7], 1e-7);
        assert_close(&s[26..], &[0.110_905_73, 0.008_928_572, 0.0], 1e-7);
    }

    #[test]
    fn comfy_schedules_start_at_one_and_descend() {
        for sched in [Scheduler::Simple, Scheduler::SgmUniform] {
            let s = sched.sigmas(10, 3.0);
            assert_eq!(s.len(), 11);
            assert_eq!(s[0], 1.0);
            assert_eq!(s[10], 0.0);
            assert!(s.windows(2).all(|w| w[0] > w[1]), "{sched:?}: {s:?}");
        }
        // simple with 1000 steps walks the whole training table.
        let s = Scheduler::Simple.sigmas(1000, 3.0);
        assert_eq!(s[999], shift_f32(3.0, 0.001));
    }

    #[test]
    fn denoise_takes_the_tail_of_a_longer_schedule() {
        let full = Scheduler::Diffusers.sigmas(8, 3.0);
        let half = denoise_sigmas(Scheduler::Diffusers, 4, 3.0, 0.5);
        assert_eq!(half, full[4..].to_vec());
        assert_eq!(
            denoise_sigmas(Scheduler::Diffusers, 4, 3.0, 1.0),
            Scheduler::Diffusers.sigmas(4, 3.0)
        );
    }

    #[test]
    fn img2img_start_mixes_noise_and_latent() -> Result<()> {
        let dev = Device::Cpu;
        let noise = Tensor::new(&[2f32, 2.0], &dev)?;
        let latent = Tensor::new(&[1f32, -1.0], &dev)?;
        let x = noise_latent(&noise, Some(&latent), 0.25)?;
        assert_eq!(x.to_vec1::<f32>()?, vec![1.25, -0.25]);
        Ok(())
    }
}
