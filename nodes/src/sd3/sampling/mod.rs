//! Rectified-flow sampling for SD3: the shifted sigma schedules, seeded initial
//! noise, diffusers' Euler sampler and ComfyUI's samplers, with classifier-free
//! and skip-layer guidance.
//!
//! References (numerics in docs/parity.md, "Pipeline conventions"):
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

mod inpaint;
mod prompt;
mod samplers;
mod schedulers;
pub mod torch_rng;

pub use inpaint::{latent_mask, Inpaint, InpaintDenoiser};
pub use prompt::{percent_to_sigma, Prompt};
pub use samplers::{sample, Denoiser, Run, Sampler, StepNoise};
pub use schedulers::{
    denoise_sigmas, ksampler_sigmas, shift_sigma, step_window, Scheduler, MAX_SCHEDULE_STEPS,
};

use super::mmdit::MMDiT;
use super::rng::SplitMix64;
use super::types::Conditioning;
use torch_rng::TorchGenerator;

/// SD3's default schedule shift.
pub const DEFAULT_SHIFT: f64 = 3.0;

/// Seeded Gaussian noise of `shape` (row-major fill from one SplitMix64
/// stream), f32 on `device`. Identical on every platform.
pub fn seeded_noise(seed: u64, shape: &[usize], device: &Device) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_vec(SplitMix64::new(seed).normals(n), shape, device)
}

/// ComfyUI's initial noise (`comfy/sample.py` `prepare_noise`): one
/// `torch.randn(shape)` from `torch.manual_seed(seed)` on the CPU, f32 on `device`.
pub fn comfy_noise(seed: u64, shape: &[usize], device: &Device) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_vec(TorchGenerator::manual_seed(seed).randn(n), shape, device)
}

/// Where a run's initial noise comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseSource {
    /// [`seeded_noise`]: this project's own (`Sample`, and the goldens made with it).
    SplitMix64,
    /// [`comfy_noise`]: a ComfyUI workflow's seed gives its author's noise.
    Torch,
    /// No noise (KSamplerAdvanced with `add_noise` off: a latent that is already noisy).
    Zeros,
}

impl NoiseSource {
    pub fn noise(self, seed: u64, shape: &[usize], device: &Device) -> Result<Tensor> {
        match self {
            Self::SplitMix64 => seeded_noise(seed, shape, device),
            Self::Torch => comfy_noise(seed, shape, device),
            Self::Zeros => Tensor::zeros(shape, DType::F32, device),
        }
    }
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
/// (ComfyUI's `ModelSamplingSD3` changes the shift), with the guidance
/// patches nodes put on it.
#[derive(Debug, Clone)]
pub struct DiffusionModel {
    pub mmdit: std::sync::Arc<MMDiT>,
    pub shift: f64,
    /// Set by `ModelSamplingSD3`: its shift then also overrides `Sample`'s own.
    pub shift_from_model_sampling: bool,
    /// `SkipLayerGuidanceSD3` patches, in the order they were added; ComfyUI's
    /// samplers apply them after CFG.
    pub skip_layer_patches: Vec<SkipLayerPatch>,
}

/// ComfyUI's `SkipLayerGuidanceSD3` (`comfy_extras/nodes_slg.py`
/// `SkipLayerGuidanceDiT`, a post-CFG function): while
/// `sigma_end ≤ σ ≤ sigma_start`, the guided estimate moves by
/// `(cond − cond_skipping_layers)·scale`. The sigmas come from the percents
/// through the shift the model had when the patch was made, as in ComfyUI.
#[derive(Debug, Clone, PartialEq)]
pub struct SkipLayerPatch {
    pub layers: Vec<usize>,
    pub scale: f64,
    pub sigma_start: f64,
    pub sigma_end: f64,
}

impl SkipLayerPatch {
    /// ComfyUI compares the model call's σ (a float32) with the bounds in f64.
    fn active(&self, sigma: f32) -> bool {
        let sigma = f64::from(sigma);
        self.scale > 0.0 && sigma >= self.sigma_end && sigma <= self.sigma_start
    }
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

/// The flow-matching Euler sampler (diffusers' step `x + (σ[i+1] − σ[i])·v`).
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
    /// broadcast over the latent batch; it moves to the model's device.
    /// Returns `None` when `callback` breaks.
    pub fn sample(
        &self,
        model: &MMDiT,
        positive: &Prompt,
        negative: &Prompt,
        x: &Tensor,
        callback: &mut dyn FnMut(&Step<'_>) -> ControlFlow<()>,
    ) -> Result<Option<Tensor>> {
        let total = self.sigmas.len().saturating_sub(1);
        let guide = Guidance {
            cfg: self.cfg,
            guided: self.cfg > 1.0,
            skip_layer_guidance: self.skip_layer_guidance.as_ref(),
            skip_layer_patches: &[],
            total,
        };
        let guided = GuidedModel::new(model, positive, negative, x.dim(0)?, guide)?;
        let mut x = x.to_dtype(DType::F32)?;
        for index in 0..total {
            let (sigma, sigma_next) = (self.sigmas[index], self.sigmas[index + 1]);
            let v = guided.velocity(&x, sigma, index)?;
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

/// ComfyUI's `KSampler`: one of its samplers on its schedule, with per-step
/// noise drawn as ComfyUI does on the CPU for `seed`.
pub struct ComfySampler<'a> {
    pub sampler: Sampler,
    /// Descending sigmas (ending at 0 for a full denoise).
    pub sigmas: Vec<f32>,
    /// Classifier-free guidance scale; as in ComfyUI, only 1 skips the negative.
    pub cfg: f64,
    /// The model's shift (`ModelSamplingSD3`).
    pub shift: f64,
    pub seed: u64,
    /// The model's `SkipLayerGuidanceSD3` patches.
    pub skip_layer_patches: &'a [SkipLayerPatch],
    /// The noise mask, when the latent has one.
    pub inpaint: Option<&'a Inpaint>,
}

impl ComfySampler<'_> {
    /// As [`EulerSampler::sample`].
    pub fn sample(
        &self,
        model: &MMDiT,
        positive: &Prompt,
        negative: &Prompt,
        x: &Tensor,
        callback: &mut dyn FnMut(&Step<'_>) -> ControlFlow<()>,
    ) -> Result<Option<Tensor>> {
        let guide = Guidance {
            cfg: self.cfg,
            // ComfyUI skips the negative only at cfg 1 (`math.isclose`).
            guided: (self.cfg - 1.0).abs() > 1e-9 * self.cfg.abs().max(1.0),
            skip_layer_guidance: None,
            skip_layer_patches: self.skip_layer_patches,
            total: self.sigmas.len().saturating_sub(1),
        };
        let mut guided = GuidedModel::new(model, positive, negative, x.dim(0)?, guide)?;
        let run = Run {
            sampler: self.sampler,
            sigmas: &self.sigmas,
            shift: self.shift,
        };
        let mut noise = StepNoise::comfy(self.seed);
        let x = x.to_dtype(DType::F32)?;
        match self.inpaint {
            Some(inpaint) => {
                let mut masked = InpaintDenoiser {
                    inner: &mut guided,
                    inpaint,
                };
                sample(&run, &mut masked, x, &mut noise, callback)
            }
            None => sample(&run, &mut guided, x, &mut noise, callback),
        }
    }
}

/// The guidance settings of a run.
struct Guidance<'a> {
    /// Classifier-free guidance scale.
    cfg: f64,
    /// Whether the negative runs: diffusers above 1, ComfyUI at anything but 1.
    guided: bool,
    skip_layer_guidance: Option<&'a SkipLayerGuidance>,
    /// ComfyUI's post-CFG skip-layer guidance (`SkipLayerGuidanceSD3`).
    skip_layer_patches: &'a [SkipLayerPatch],
    /// The run's step count (skip-layer guidance is set in fractions of it).
    total: usize,
}

/// The MMDiT with classifier-free and skip-layer guidance, on a latent batch.
struct GuidedModel<'a> {
    model: &'a MMDiT,
    guidance: Guidance<'a>,
    positive: Prompt,
    negative: Prompt,
}

impl<'a> GuidedModel<'a> {
    /// Conditioning with batch 1 is broadcast over the latent `batch`.
    fn new(
        model: &'a MMDiT,
        positive: &Prompt,
        negative: &Prompt,
        batch: usize,
        guidance: Guidance<'a>,
    ) -> Result<Self> {
        let device = model.device();
        Ok(GuidedModel {
            model,
            guidance,
            positive: positive.prepared(batch, device)?,
            negative: negative.prepared(batch, device)?,
        })
    }

    /// The guided velocity `v` at `(x, σ)` on step `index`: each side's
    /// active prompts averaged (ComfyUI's `calc_cond_batch`), then CFG.
    fn velocity(&self, x: &Tensor, sigma: f32, index: usize) -> Result<Tensor> {
        let positive = self.positive.active(sigma);
        let negative = match self.guidance.guided {
            true => self.negative.active(sigma),
            false => Vec::new(),
        };
        let all: Vec<&Conditioning> = negative.iter().chain(&positive).copied().collect();
        let outputs = self.forward_each(x, sigma, &all, &[])?;
        let (uncond, cond) = outputs.split_at(negative.len());
        let cond = mean_velocity(x, sigma, cond)?;
        let mut v = if self.guidance.guided {
            let uncond = mean_velocity(x, sigma, uncond)?;
            let v = (&uncond + ((&cond - &uncond)? * self.guidance.cfg)?)?;
            match self.guidance.skip_layer_guidance {
                Some(slg) if slg_active(slg, index, self.guidance.total) => {
                    let skipped = self.forward_each(x, sigma, &positive, &slg.layers)?;
                    let skipped = mean_velocity(x, sigma, &skipped)?;
                    (v + ((&cond - skipped)? * slg.scale)?)?
                }
                _ => v,
            }
        } else {
            cond.clone()
        };
        // ComfyUI runs post-CFG functions at every cfg, 1 included. In its
        // denoised terms `+ (cond − skipped)·s`, the same as here on velocities
        // (`denoised = x − σ·v`).
        for patch in self.guidance.skip_layer_patches {
            if patch.active(sigma) {
                let skipped = self.forward_each(x, sigma, &positive, &patch.layers)?;
                let skipped = mean_velocity(x, sigma, &skipped)?;
                v = (v + ((&cond - skipped)? * patch.scale)?)?;
            }
        }
        Ok(v)
    }

    /// The model's velocity for `x` under each conditioning: one batched
    /// forward when their shapes agree (the usual case), else one each.
    fn forward_each(
        &self,
        x: &Tensor,
        sigma: f32,
        conds: &[&Conditioning],
        skip_layers: &[usize],
    ) -> Result<Vec<Tensor>> {
        let batch = x.dim(0)?;
        let timestep = sigma * 1000.0;
        let forward = |conds: &[&Conditioning]| -> Result<Tensor> {
            let n = conds.len();
            let (input, context, pooled) = match conds {
                [one] => (x.clone(), one.context.clone(), one.pooled.clone()),
                _ => {
                    let contexts: Vec<&Tensor> = conds.iter().map(|c| &c.context).collect();
                    let pooled: Vec<&Tensor> = conds.iter().map(|c| &c.pooled).collect();
                    (
                        Tensor::cat(&vec![x; n], 0)?,
                        Tensor::cat(&contexts, 0)?,
                        Tensor::cat(&pooled, 0)?,
                    )
                }
            };
            let t = Tensor::full(timestep, n * batch, x.device())?;
            self.model
                .forward(&input, &t, &pooled, &context, skip_layers)?
                .to_dtype(DType::F32)
        };
        if conds.is_empty() {
            return Ok(Vec::new());
        }
        let same_shape = conds
            .windows(2)
            .all(|w| w[0].context.dims() == w[1].context.dims());
        if !same_shape {
            return conds.iter().map(|c| forward(&[c])).collect();
        }
        let out = forward(conds)?;
        (0..conds.len())
            .map(|i| out.narrow(0, i * batch, batch))
            .collect()
    }
}

/// The average of a side's velocities; with none active, the velocity of a
/// zero denoised latent (`x / σ`), as ComfyUI's `calc_cond_batch` returns 0.
fn mean_velocity(x: &Tensor, sigma: f32, velocities: &[Tensor]) -> Result<Tensor> {
    match velocities {
        [] => x.affine(1.0 / f64::from(sigma), 0.0),
        [one] => Ok(one.clone()),
        _ => Tensor::stack(velocities, 0)?.mean(0),
    }
}

impl Denoiser for GuidedModel<'_> {
    /// `CONST.calculate_denoised`: `x − σ·v`.
    fn denoise(&mut self, x: &Tensor, sigma: f32, step: usize) -> Result<Tensor> {
        let v = self.velocity(x, sigma, step)?;
        x - v.affine(f64::from(sigma), 0.0)?
    }
}

/// diffusers: `i > N·start and i < N·stop`.
fn slg_active(slg: &SkipLayerGuidance, index: usize, total: usize) -> bool {
    let i = index as f64;
    i > total as f64 * slg.start && i < total as f64 * slg.stop
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn img2img_start_mixes_noise_and_latent() -> Result<()> {
        let dev = Device::Cpu;
        let noise = Tensor::new(&[2f32, 2.0], &dev)?;
        let latent = Tensor::new(&[1f32, -1.0], &dev)?;
        let x = noise_latent(&noise, Some(&latent), 0.25)?;
        assert_eq!(x.to_vec1::<f32>()?, vec![1.25, -0.25]);
        Ok(())
    }

    fn tiny_mmdit() -> Result<MMDiT> {
        use crate::sd3::tiny::{mmdit_tensors, TinyOptions, TinyVariant};
        let opts = TinyOptions {
            variant: TinyVariant::Sd3Medium,
            seed: 5,
            clips: false,
            t5: false,
            positions: None,
        };
        let tensors = mmdit_tensors(&opts).map_err(candle_core::Error::wrap)?;
        let vb = candle_nn::VarBuilder::from_tensors(
            tensors.into_iter().collect(),
            DType::F32,
            &Device::Cpu,
        );
        MMDiT::new(&opts.mmdit_config(), vb)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
    }

    #[test]
    fn skip_layer_patch_adds_its_term_only_within_its_sigmas() -> Result<()> {
        let dev = Device::Cpu;
        let mmdit = tiny_mmdit()?;
        let cond = |seed: u64| -> Result<Prompt> {
            Ok(Prompt::plain(Conditioning {
                context: seeded_noise(seed, &[1, 12, 128], &dev)?,
                pooled: seeded_noise(seed + 1, &[1, 96], &dev)?,
            }))
        };
        let (positive, negative) = (cond(1)?, cond(3)?);
        let x = seeded_noise(9, &[1, 16, 8, 8], &dev)?;
        let patches = [SkipLayerPatch {
            layers: vec![1],
            scale: 2.5,
            sigma_start: 0.75,
            sigma_end: 0.375,
        }];
        let guided = |cfg: f64, patches| {
            let guidance = Guidance {
                cfg,
                guided: cfg != 1.0,
                skip_layer_guidance: None,
                skip_layer_patches: patches,
                total: 4,
            };
            GuidedModel::new(&mmdit, &positive, &negative, 1, guidance)
        };
        let forward = |p: &Prompt, sigma: f32, skip: &[usize]| -> Result<Tensor> {
            let c = p.active(sigma)[0];
            let t = Tensor::full(sigma * 1000.0, 1, &dev)?;
            mmdit.forward(&x, &t, &c.pooled, &c.context, skip)
        };
        for cfg in [4.0, 1.0] {
            let plain = guided(cfg, &[])?;
            let patched = guided(cfg, &patches)?;
            // Sigmas exact in f32, so the bounds are hit (both included).
            for sigma in [0.875f32, 0.75, 0.5, 0.375, 0.25] {
                let v = patched.velocity(&x, sigma, 0)?;
                let v_cfg = plain.velocity(&x, sigma, 0)?;
                if (0.375..=0.75).contains(&sigma) {
                    let cond = forward(&positive, sigma, &[])?;
                    let skipped = forward(&positive, sigma, &[1])?;
                    let expected = (&v_cfg + ((cond - skipped)? * 2.5)?)?;
                    assert!(max_diff(&v, &expected)? < 1e-5, "cfg {cfg}, σ {sigma}");
                    assert!(
                        max_diff(&v, &v_cfg)? > 1e-3,
                        "cfg {cfg}, σ {sigma}: no term"
                    );
                } else {
                    assert_eq!(max_diff(&v, &v_cfg)?, 0.0, "cfg {cfg}, σ {sigma}");
                }
            }
        }
        Ok(())
    }
}
