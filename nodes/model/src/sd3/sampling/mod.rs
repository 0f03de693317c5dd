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

impl DiffusionModel {
    /// A loaded model with its file's shift, no patches.
    pub fn new(mmdit: MMDiT, shift: f64) -> Self {
        DiffusionModel {
            mmdit: std::sync::Arc::new(mmdit),
            shift,
            shift_from_model_sampling: false,
            skip_layer_patches: Vec::new(),
        }
    }
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

    /// The model's velocity for `x` under each conditioning, batched as ComfyUI's
    /// `calc_cond_batch` batches them (without its memory limit): the first
    /// conditioning left and every other that [`can_batch`] with it run together,
    /// contexts of different lengths repeated to their least common multiple
    /// (`CONDCrossAttn.concat`).
    fn forward_each(
        &self,
        x: &Tensor,
        sigma: f32,
        conds: &[&Conditioning],
        skip_layers: &[usize],
    ) -> Result<Vec<Tensor>> {
        let batch = x.dim(0)?;
        let timestep = sigma * 1000.0;
        let forward = |group: &[&Conditioning]| -> Result<Tensor> {
            let n = group.len();
            let (input, context, pooled) = match group {
                [one] => (x.clone(), one.context.clone(), one.pooled.clone()),
                _ => {
                    let contexts = repeat_to_common_length(group)?;
                    let pooled: Vec<&Tensor> = group.iter().map(|c| &c.pooled).collect();
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
        let mut outputs: Vec<Option<Tensor>> = vec![None; conds.len()];
        let mut remaining: Vec<usize> = (0..conds.len()).collect();
        while let Some(&first) = remaining.first() {
            let (group, rest): (Vec<usize>, Vec<usize>) = remaining
                .iter()
                .partition(|&&i| can_batch(conds[first], conds[i]));
            remaining = rest;
            let members: Vec<&Conditioning> = group.iter().map(|&i| conds[i]).collect();
            let out = forward(&members)?;
            for (k, &i) in group.iter().enumerate() {
                outputs[i] = Some(out.narrow(0, k * batch, batch)?);
            }
        }
        outputs
            .into_iter()
            .map(|o| o.ok_or_else(|| candle_core::Error::Msg("a conditioning was not run".into())))
            .collect()
    }
}

/// ComfyUI's limit on repeating a context to batch it with a longer one
/// (`CONDCrossAttn.can_concat`).
const MAX_CONTEXT_REPEAT: usize = 4;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b) * b
}

/// ComfyUI's `CONDCrossAttn.can_concat`: same batch, width and pooled shape, and
/// context lengths whose least common multiple is at most [`MAX_CONTEXT_REPEAT`]
/// times the shorter one.
fn can_batch(a: &Conditioning, b: &Conditioning) -> bool {
    let (da, db) = (a.context.dims(), b.context.dims());
    if da.len() != 3 || db.len() != 3 || da[0] != db[0] || da[2] != db[2] {
        return false;
    }
    if a.pooled.dims() != b.pooled.dims() {
        return false;
    }
    let shorter = da[1].min(db[1]);
    shorter > 0 && lcm(da[1], db[1]) / shorter <= MAX_CONTEXT_REPEAT
}

/// Each context tiled along its rows to the least common multiple of their lengths
/// (torch's `repeat(1, k, 1)`, as ComfyUI's `CONDCrossAttn.concat`).
fn repeat_to_common_length(group: &[&Conditioning]) -> Result<Vec<Tensor>> {
    let mut lengths = Vec::with_capacity(group.len());
    for c in group {
        lengths.push(c.context.dim(1)?);
    }
    let common = lengths.iter().fold(1, |acc, &len| lcm(acc, len));
    group
        .iter()
        .zip(lengths)
        .map(|(c, len)| match common / len {
            1 => Ok(c.context.clone()),
            times => c.context.repeat((1, times, 1)),
        })
        .collect()
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
    use crate::sd3::tiny::{mmdit_tensors, TinyOptions, TinyVariant};

    /// The tiny MMDiT and its context and pooled widths.
    fn tiny_mmdit(seed: u64) -> (MMDiT, usize, usize) {
        let opts = TinyOptions {
            variant: TinyVariant::Sd3Medium,
            seed,
            clips: false,
            t5: false,
            positions: None,
        };
        let tensors = mmdit_tensors(&opts).unwrap().into_iter().collect();
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let cfg = opts.mmdit_config();
        let mmdit = MMDiT::new(&cfg, vb).unwrap();
        (mmdit, cfg.context_embed_size, cfg.adm_in_channels)
    }

    fn cond(rows: usize, seed: f64, width: usize, pooled: usize) -> Conditioning {
        let dev = Device::Cpu;
        let ramp = |n: usize| Tensor::arange(0f32, n as f32, &dev).unwrap();
        let context = (ramp(rows * width).reshape((1, rows, width)).unwrap() * (seed * 1e-3))
            .unwrap()
            .sin()
            .unwrap();
        let pooled = (ramp(pooled).reshape((1, pooled)).unwrap() * (seed * 1e-2))
            .unwrap()
            .cos()
            .unwrap();
        Conditioning { context, pooled }
    }

    #[test]
    fn contexts_of_different_lengths_batch_as_comfyui_repeats_them() -> Result<()> {
        let (mmdit, width, pooled) = tiny_mmdit(3);
        let guidance = Guidance {
            cfg: 2.0,
            guided: true,
            skip_layer_guidance: None,
            skip_layer_patches: &[],
            total: 1,
        };
        let empty = Prompt::resolve(
            &crate::sd3::types::ConditioningList {
                entries: Vec::new(),
            },
            1.0,
        );
        let guided = GuidedModel::new(&mmdit, &empty, &empty, 1, guidance)?;
        let x = Tensor::ones((1, 16, 8, 8), DType::F32, &Device::Cpu)?.affine(0.3, 0.0)?;
        let alone = |c: &Conditioning| -> Result<Tensor> {
            Ok(guided.forward_each(&x, 0.5, &[c], &[])?.remove(0))
        };
        let max_diff = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        // 2 and 4 rows: LCM 4 is 2x the shorter, so they run in one batch, the
        // 2-row context tiled to 4 rows (which changes joint attention).
        let short = cond(2, 1.0, width, pooled);
        let long = cond(4, 2.0, width, pooled);
        assert!(can_batch(&short, &long));
        let batched = guided.forward_each(&x, 0.5, &[&short, &long], &[])?;
        let tiled = Conditioning {
            context: short.context.repeat((1, 2, 1))?,
            pooled: short.pooled.clone(),
        };
        assert_eq!(max_diff(&batched[0], &alone(&tiled)?), 0.0);
        assert_eq!(max_diff(&batched[1], &alone(&long)?), 0.0);
        assert!(max_diff(&batched[0], &alone(&short)?) > 1e-6);
        // 1, 5 and 6 rows: every LCM is over 4x the shorter (ComfyUI's limit): each
        // runs as it is.
        let one = cond(1, 3.0, width, pooled);
        let five = cond(5, 4.0, width, pooled);
        let six = cond(6, 5.0, width, pooled);
        assert!(!can_batch(&one, &five) && !can_batch(&one, &six) && !can_batch(&five, &six));
        let apart = guided.forward_each(&x, 0.5, &[&one, &five, &six], &[])?;
        assert_eq!(max_diff(&apart[0], &alone(&one)?), 0.0);
        assert_eq!(max_diff(&apart[1], &alone(&five)?), 0.0);
        assert_eq!(max_diff(&apart[2], &alone(&six)?), 0.0);
        // A 1-row context batches with a 4-row one (tiled 4 times).
        assert!(can_batch(&one, &long));
        Ok(())
    }

    #[test]
    fn least_common_multiple() {
        assert_eq!(lcm(77, 77 + 256), 77 * 333);
        assert_eq!(lcm(4, 6), 12);
        assert_eq!(lcm(154, 77), 154);
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

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
    }

    #[test]
    fn skip_layer_patch_adds_its_term_only_within_its_sigmas() -> Result<()> {
        let dev = Device::Cpu;
        let (mmdit, _, _) = tiny_mmdit(5);
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
