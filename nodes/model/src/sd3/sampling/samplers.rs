//! ComfyUI's samplers on SD3's flow model (`comfy/k_diffusion/sampling.py`, run
//! by `comfy/samplers.py` `KSAMPLER` on a `CONST` model): the same steps, with
//! the rectified-flow variants ComfyUI picks for `CONST` models (`*_RF`, the
//! half-logSNR `logit` of the SDE samplers, the first sigma moved off 1).
//!
//! Arithmetic: latents in f32 tensors as in ComfyUI; the per-step scalars in
//! f64 from the f32 sigmas (torch computes them in f32), which keeps results
//! within the tolerance stated in docs/parity.md.

use candle_core::{Result, Tensor};

mod uni_pc;

use super::schedulers::shift_sigma;
use super::torch_rng::TorchGenerator;
use super::Step;

/// ComfyUI's `sampler_name`s that are here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    Euler,
    EulerAncestral,
    Heun,
    Dpm2,
    Dpm2Ancestral,
    Lms,
    Dpmpp2sAncestral,
    DpmppSde,
    Dpmpp2m,
    Dpmpp2mSde,
    /// dpmpp_2m_sde with the Heun correction instead of the midpoint one.
    Dpmpp2mSdeHeun,
    Dpmpp3mSde,
    /// ComfyUI's `ddim` is `euler` with fresh inpaint noise (only matters with a mask).
    Ddim,
    Lcm,
    UniPc,
    UniPcBh2,
}

impl Sampler {
    /// In ComfyUI's order (`KSAMPLER_NAMES` then the extra samplers). The
    /// `_gpu` names only move ComfyUI's Brownian tree to the GPU: here they
    /// are their CPU twins.
    pub const COMFY_NAMES: [&'static str; 20] = [
        "euler",
        "euler_ancestral",
        "heun",
        "dpm_2",
        "dpm_2_ancestral",
        "lms",
        "dpmpp_2s_ancestral",
        "dpmpp_sde",
        "dpmpp_sde_gpu",
        "dpmpp_2m",
        "dpmpp_2m_sde",
        "dpmpp_2m_sde_gpu",
        "dpmpp_2m_sde_heun",
        "dpmpp_2m_sde_heun_gpu",
        "dpmpp_3m_sde",
        "dpmpp_3m_sde_gpu",
        "lcm",
        "ddim",
        "uni_pc",
        "uni_pc_bh2",
    ];

    pub fn from_comfy_name(name: &str) -> Option<Self> {
        Some(match name {
            "euler" => Self::Euler,
            "euler_ancestral" => Self::EulerAncestral,
            "heun" => Self::Heun,
            "dpm_2" => Self::Dpm2,
            "dpm_2_ancestral" => Self::Dpm2Ancestral,
            "lms" => Self::Lms,
            "dpmpp_2s_ancestral" => Self::Dpmpp2sAncestral,
            "dpmpp_sde" | "dpmpp_sde_gpu" => Self::DpmppSde,
            "dpmpp_2m" => Self::Dpmpp2m,
            "dpmpp_2m_sde" | "dpmpp_2m_sde_gpu" => Self::Dpmpp2mSde,
            "dpmpp_2m_sde_heun" | "dpmpp_2m_sde_heun_gpu" => Self::Dpmpp2mSdeHeun,
            "dpmpp_3m_sde" | "dpmpp_3m_sde_gpu" => Self::Dpmpp3mSde,
            "ddim" => Self::Ddim,
            "lcm" => Self::Lcm,
            "uni_pc" => Self::UniPc,
            "uni_pc_bh2" => Self::UniPcBh2,
            _ => return None,
        })
    }

    /// `sampler_object`: `ddim` inpaints with fresh noise (`inpaint_options`
    /// `random`), the others with the run's initial noise.
    pub fn inpaints_with_fresh_noise(self) -> bool {
        self == Self::Ddim
    }

    /// `KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS`: these run on a schedule
    /// of one step more with its penultimate sigma dropped.
    pub fn discards_penultimate_sigma(self) -> bool {
        matches!(
            self,
            Self::Dpm2 | Self::Dpm2Ancestral | Self::UniPc | Self::UniPcBh2
        )
    }
}

/// ComfyUI's `model(x, sigma)`: the clean-latent estimate of `x` at `sigma`
/// (for SD3, `CONST.calculate_denoised`: `x − σ·v`). `step` is the sampler's
/// step index, for guidance that depends on it.
pub trait Denoiser {
    fn denoise(&mut self, x: &Tensor, sigma: f32, step: usize) -> Result<Tensor>;
}

/// Noise the samplers add during sampling. ComfyUI's `default_noise_sampler`
/// on the CPU: `torch.randn(x.shape)` from a generator seeded with `seed + 1`,
/// one draw per call. ComfyUI's SDE samplers draw from a torchsde Brownian
/// tree instead, which cannot be reproduced; they get this noise here too.
pub struct StepNoise {
    generator: TorchGenerator,
}

impl StepNoise {
    pub fn comfy(seed: u64) -> Self {
        StepNoise {
            generator: TorchGenerator::manual_seed(seed.wrapping_add(1)),
        }
    }

    fn like(&mut self, x: &Tensor) -> Result<Tensor> {
        let values = self.generator.randn(x.elem_count());
        Tensor::from_vec(values, x.dims(), &candle_core::Device::Cpu)?
            .to_device(x.device())?
            .to_dtype(x.dtype())
    }
}

/// One sampling run: the sampler, the descending sigmas (ending at 0 for a
/// full denoise) and the model's shift (`ModelSamplingDiscreteFlow`).
pub struct Run<'a> {
    pub sampler: Sampler,
    pub sigmas: &'a [f32],
    pub shift: f64,
}

type Callback<'c> = dyn FnMut(&Step<'_>) -> std::ops::ControlFlow<()> + 'c;

/// Samples from `x` (already at `sigmas[0]`, ComfyUI's `noise_scaling`), then
/// applies `inverse_noise_scaling`; fewer than 2 sigmas leave `x` as it is.
/// `None` when `callback` breaks.
pub fn sample(
    run: &Run<'_>,
    model: &mut dyn Denoiser,
    x: Tensor,
    noise: &mut StepNoise,
    callback: &mut Callback<'_>,
) -> Result<Option<Tensor>> {
    let (Some(&last), true) = (run.sigmas.last(), run.sigmas.len() >= 2) else {
        return Ok(Some(x));
    };
    let mut state = Sampling {
        model,
        noise,
        sigmas: run.sigmas.iter().map(|&s| f64::from(s)).collect(),
        f32_sigmas: run.sigmas.to_vec(),
        callback,
    };
    let out = match run.sampler {
        Sampler::Euler | Sampler::Ddim => state.euler(x)?,
        Sampler::EulerAncestral => state.euler_ancestral(x)?,
        Sampler::Heun => state.heun(x)?,
        Sampler::Dpm2 => state.dpm_2(x)?,
        Sampler::Dpm2Ancestral => state.dpm_2_ancestral(x)?,
        Sampler::Lms => state.lms(x)?,
        Sampler::Dpmpp2sAncestral => state.dpmpp_2s_ancestral(x)?,
        Sampler::Dpmpp2m => state.dpmpp_2m(x)?,
        Sampler::Lcm => state.lcm(x)?,
        Sampler::UniPc => state.uni_pc(x, uni_pc::Variant::Bh1)?,
        Sampler::UniPcBh2 => state.uni_pc(x, uni_pc::Variant::Bh2)?,
        Sampler::DpmppSde => {
            state.offset_first_sigma(run.shift);
            state.dpmpp_sde(x)?
        }
        Sampler::Dpmpp2mSde | Sampler::Dpmpp2mSdeHeun => {
            state.offset_first_sigma(run.shift);
            let heun = run.sampler == Sampler::Dpmpp2mSdeHeun;
            state.dpmpp_2m_sde(x, heun)?
        }
        Sampler::Dpmpp3mSde => {
            state.offset_first_sigma(run.shift);
            state.dpmpp_3m_sde(x)?
        }
    };
    // sample_unipc sets a last sigma of 0 to 0.001 in ComfyUI's own sigmas,
    // which KSAMPLER then hands to inverse_noise_scaling.
    let last = match run.sampler {
        Sampler::UniPc | Sampler::UniPcBh2 if last == 0.0 => uni_pc::LAST_SIGMA,
        _ => last,
    };
    // CONST.inverse_noise_scaling: x / (1 − σ_last), the identity after a full denoise.
    out.map(|x| x.affine(1.0 / f64::from(1.0 - last), 0.0))
        .transpose()
}

/// `a·x + b·y`.
fn lin(a: f64, x: &Tensor, b: f64, y: &Tensor) -> Result<Tensor> {
    x.affine(a, 0.0)? + y.affine(b, 0.0)?
}

/// `to_d`: `(x − denoised) / σ`.
fn to_d(x: &Tensor, sigma: f64, denoised: &Tensor) -> Result<Tensor> {
    (x - denoised)?.affine(1.0 / sigma, 0.0)
}

/// `get_ancestral_step`: `(σ_down, σ_up)`.
fn ancestral_step(from: f64, to: f64, eta: f64) -> (f64, f64) {
    if eta == 0.0 {
        return (to, 0.0);
    }
    let up = to.min(eta * (to * to * (from * from - to * to) / (from * from)).sqrt());
    ((to * to - up * up).sqrt(), up)
}

/// The half-logSNR of a `CONST` model: `−logit(σ)`.
fn half_log_snr(sigma: f64) -> f64 {
    ((1.0 - sigma) / sigma).ln()
}

/// The flow step from `x` at σ `from` towards its clean estimate, to σ `to`:
/// `(to/from)·x + (1 − to/from)·denoised`.
fn toward(x: &Tensor, denoised: &Tensor, to: f64, from: f64) -> Result<Tensor> {
    let ratio = to / from;
    lin(ratio, x, 1.0 - ratio, denoised)
}

/// ComfyUI's default `eta` and `s_noise` for the ancestral and SDE samplers.
const ETA: f64 = 1.0;

/// The rectified-flow ancestral step (`sample_euler_ancestral_RF` and kin):
/// step down to `σ_down`, then renoise to `σ_next` with `alpha_next/alpha_down`.
struct FlowAncestral {
    down: f64,
    /// `(1 − σ_next) / (1 − σ_down)`.
    rescale: f64,
    renoise: f64,
}

impl FlowAncestral {
    fn new(sigma: f64, next: f64) -> Self {
        let down = next * (1.0 + (next / sigma - 1.0) * ETA);
        let (alpha_next, alpha_down) = (1.0 - next, 1.0 - down);
        let renoise = (next * next
            - down * down * alpha_next * alpha_next / (alpha_down * alpha_down))
            .sqrt();
        FlowAncestral {
            down,
            rescale: alpha_next / alpha_down,
            renoise,
        }
    }
}

struct Sampling<'m, 'c> {
    model: &'m mut dyn Denoiser,
    noise: &'m mut StepNoise,
    sigmas: Vec<f64>,
    /// The sigmas the model sees (f32, as ComfyUI passes them).
    f32_sigmas: Vec<f32>,
    callback: &'m mut Callback<'c>,
}

impl Sampling<'_, '_> {
    fn steps(&self) -> usize {
        self.sigmas.len().saturating_sub(1)
    }

    fn denoise(&mut self, x: &Tensor, sigma: f64, step: usize) -> Result<Tensor> {
        self.model.denoise(x, sigma as f32, step)
    }

    /// The model at step `step`'s own sigma.
    fn denoise_at(&mut self, x: &Tensor, step: usize) -> Result<Tensor> {
        self.model.denoise(x, self.f32_sigmas[step], step)
    }

    /// Reports a finished step; `false` when the callback asks to stop.
    fn report(&mut self, index: usize, latent: &Tensor, denoised: &Tensor) -> bool {
        let step = Step {
            index,
            total: self.steps(),
            latent,
            denoised,
        };
        (self.callback)(&step).is_continue()
    }

    /// `offset_first_sigma_for_snr`: a first sigma ≥ 1 becomes `percent_to_sigma(1e-4)`.
    fn offset_first_sigma(&mut self, shift: f64) {
        if self.sigmas.len() > 1 && self.sigmas[0] >= 1.0 {
            let sigma = shift_sigma(shift, 1.0 - 1e-4) as f32;
            self.f32_sigmas[0] = sigma;
            self.sigmas[0] = f64::from(sigma);
        }
    }

    /// ComfyUI's sampler loop: the model at each step's own σ, `step` to the
    /// next latent, then the callback. `None` when the callback stops it.
    fn run_steps(
        &mut self,
        mut x: Tensor,
        mut step: impl FnMut(&mut Self, StepIn<'_>) -> Result<Tensor>,
    ) -> Result<Option<Tensor>> {
        for i in 0..self.steps() {
            let (s, next) = (self.sigmas[i], self.sigmas[i + 1]);
            let denoised = self.denoise_at(&x, i)?;
            let at = StepIn {
                i,
                s,
                next,
                x: &x,
                denoised: &denoised,
            };
            x = step(self, at)?;
            if !self.report(i, &x, &denoised) {
                return Ok(None);
            }
        }
        Ok(Some(x))
    }

    fn euler(&mut self, x: Tensor) -> Result<Option<Tensor>> {
        self.run_steps(x, |_, at| {
            let d = to_d(at.x, at.s, at.denoised)?;
            at.x + d.affine(at.next - at.s, 0.0)?
        })
    }

    fn euler_ancestral(&mut self, x: Tensor) -> Result<Option<Tensor>> {
        self.run_steps(x, |this, at| {
            if at.next == 0.0 {
                return Ok(at.denoised.clone());
            }
            let step = FlowAncestral::new(at.s, at.next);
            let x = toward(at.x, at.denoised, step.down, at.s)?;
            this.renoised(&x, &step)
        })
    }

    fn heun(&mut self, x: Tensor) -> Result<Option<Tensor>> {
        self.run_steps(x, |this, at| {
            let d = to_d(at.x, at.s, at.denoised)?;
            let dt = at.next - at.s;
            let x_2 = (at.x + d.affine(dt, 0.0)?)?;
            if at.next == 0.0 {
                return Ok(x_2);
            }
            let denoised_2 = this.denoise(&x_2, at.next, at.i)?;
            let d_2 = to_d(&x_2, at.next, &denoised_2)?;
            at.x + lin(dt / 2.0, &d, dt / 2.0, &d_2)?
        })
    }

    /// DPM-Solver-2's midpoint step from `s` to `to` (`σ_mid` geometric).
    fn dpm_2_step(&mut self, x: &Tensor, d: &Tensor, s: f64, to: f64, i: usize) -> Result<Tensor> {
        let mid = lerp(s.ln(), to.ln(), 0.5).exp();
        let x_2 = (x + d.affine(mid - s, 0.0)?)?;
        let denoised_2 = self.denoise(&x_2, mid, i)?;
        let d_2 = to_d(&x_2, mid, &denoised_2)?;
        x + d_2.affine(to - s, 0.0)?
    }

    fn dpm_2(&mut self, x: Tensor) -> Result<Option<Tensor>> {
        self.run_steps(x, |this, at| {
            let d = to_d(at.x, at.s, at.denoised)?;
            if at.next == 0.0 {
                at.x + d.affine(at.next - at.s, 0.0)?
            } else {
                this.dpm_2_step(at.x, &d, at.s, at.next, at.i)
            }
        })
    }

    fn dpm_2_ancestral(&mut self, x: Tensor) -> Result<Option<Tensor>> {
        self.run_steps(x, |this, at| {
            let step = FlowAncestral::new(at.s, at.next);
            let d = to_d(at.x, at.s, at.denoised)?;
            if step.down == 0.0 {
                return at.x + d.affine(step.down - at.s, 0.0)?;
            }
            let x = this.dpm_2_step(at.x, &d, at.s, step.down, at.i)?;
            this.renoised(&x, &step)
        })
    }

    fn lms(&mut self, x: Tensor) -> Result<Option<Tensor>> {
        const ORDER: usize = 4;
        let mut ds: Vec<Tensor> = Vec::with_capacity(ORDER + 1);
        self.run_steps(x, |this, at| {
            ds.push(to_d(at.x, at.s, at.denoised)?);
            if ds.len() > ORDER {
                ds.remove(0);
            }
            if at.next == 0.0 {
                return Ok(at.denoised.clone());
            }
            let order = (at.i + 1).min(ORDER);
            let mut sum = at.x.clone();
            for (j, d) in ds.iter().rev().enumerate().take(order) {
                let coeff = linear_multistep_coeff(order, &this.sigmas, at.i, j);
                sum = (sum + d.affine(coeff, 0.0)?)?;
            }
            Ok(sum)
        })
    }

    fn dpmpp_2s_ancestral(&mut self, x: Tensor) -> Result<Option<Tensor>> {
        self.run_steps(x, |this, at| {
            let (s, i) = (at.s, at.i);
            let step = FlowAncestral::new(s, at.next);
            if at.next == 0.0 {
                let d = to_d(at.x, s, at.denoised)?;
                return at.x + d.affine(step.down - s, 0.0)?;
            }
            // The midpoint in half-logSNR; ComfyUI takes 0.9999 when σ is exactly 1.
            let sigma_s = if this.f32_sigmas[i] == 1.0 {
                f64::from(0.9999f32)
            } else {
                let (t_i, t_down) = (half_log_snr(s), half_log_snr(step.down));
                1.0 / ((t_i + 0.5 * (t_down - t_i)).exp() + 1.0)
            };
            let u = toward(at.x, at.denoised, sigma_s, s)?;
            let denoised_2 = this.denoise(&u, sigma_s, i)?;
            let x = toward(at.x, &denoised_2, step.down, s)?;
            this.renoised(&x, &step)
        })
    }

    fn dpmpp_2m(&mut self, x: Tensor) -> Result<Option<Tensor>> {
        let mut old_denoised: Option<Tensor> = None;
        self.run_steps(x, |this, at| {
            let (s, next) = (at.s, at.next);
            let old = old_denoised.replace(at.denoised.clone());
            if next == 0.0 {
                return Ok(at.denoised.clone());
            }
            let (t, t_next) = (-s.ln(), -next.ln());
            let h = t_next - t;
            let guided = match old {
                None => at.denoised.clone(),
                Some(old) => {
                    let r = (t + this.sigmas[at.i - 1].ln()) / h;
                    lin(1.0 + 1.0 / (2.0 * r), at.denoised, -1.0 / (2.0 * r), &old)?
                }
            };
            lin(next / s, at.x, -(-h).exp_m1(), &guided)
        })
    }

    fn dpmpp_sde(&mut self, x: Tensor) -> Result<Option<Tensor>> {
        self.run_steps(x, |this, at| {
            let (s, next) = (at.s, at.next);
            if next == 0.0 {
                return Ok(at.denoised.clone());
            }
            let (lambda_s, lambda_t) = (half_log_snr(s), half_log_snr(next));
            let lambda_s_1 = lambda_s + 0.5 * (lambda_t - lambda_s);
            let sigma_s_1 = 1.0 / (1.0 + lambda_s_1.exp());
            let alpha_s = s * lambda_s.exp();
            let alpha_s_1 = sigma_s_1 * lambda_s_1.exp();
            let alpha_t = next * lambda_t.exp();

            let (down, up) = ancestral_step((-lambda_s).exp(), (-lambda_s_1).exp(), ETA);
            let h = -down.ln() - lambda_s;
            let x_2 = lin(
                alpha_s_1 / alpha_s * (-h).exp(),
                at.x,
                -alpha_s_1 * (-h).exp_m1(),
                at.denoised,
            )?;
            let noise = this.noise.like(&x_2)?;
            let x_2 = (x_2 + noise.affine(alpha_s_1 * up, 0.0)?)?;
            let denoised_2 = this.denoise(&x_2, sigma_s_1, at.i)?;

            // With r = 1/2 the blend (1 − 1/2r)·denoised + (1/2r)·denoised_2 is denoised_2.
            let (down, up) = ancestral_step((-lambda_s).exp(), (-lambda_t).exp(), ETA);
            let h = -down.ln() - lambda_s;
            let x = lin(
                alpha_t / alpha_s * (-h).exp(),
                at.x,
                -alpha_t * (-h).exp_m1(),
                &denoised_2,
            )?;
            let noise = this.noise.like(&x)?;
            x + noise.affine(alpha_t * up, 0.0)?
        })
    }

    /// The shared first part of the 2M/3M SDE steps: the exponential-integrator
    /// step and the correction terms' `alpha_t` and `h·(η + 1)`.
    fn sde_base(&self, x: &Tensor, denoised: &Tensor, i: usize) -> Result<(Tensor, SdeStep)> {
        let (s, next) = (self.sigmas[i], self.sigmas[i + 1]);
        let (lambda_s, lambda_t) = (half_log_snr(s), half_log_snr(next));
        let h = lambda_t - lambda_s;
        let h_eta = h * (ETA + 1.0);
        let alpha_t = next * lambda_t.exp();
        let x = lin(
            next / s * (-h * ETA).exp(),
            x,
            -alpha_t * (-h_eta).exp_m1(),
            denoised,
        )?;
        Ok((
            x,
            SdeStep {
                h,
                h_eta,
                alpha_t,
                noise_scale: next * (-(-2.0 * h * ETA).exp_m1()).sqrt(),
            },
        ))
    }

    /// DPM-Solver++(2M) SDE with the midpoint correction, or Heun's with `heun`.
    fn dpmpp_2m_sde(&mut self, x: Tensor, heun: bool) -> Result<Option<Tensor>> {
        let mut old: Option<(Tensor, f64)> = None;
        self.run_steps(x, |this, at| {
            if at.next == 0.0 {
                let h = old.as_ref().map_or(0.0, |o| o.1);
                old = Some((at.denoised.clone(), h));
                return Ok(at.denoised.clone());
            }
            let (mut x, step) = this.sde_base(at.x, at.denoised, at.i)?;
            if let Some((old_denoised, h_last)) = &old {
                let r = h_last / step.h;
                let phi_1 = -(-step.h_eta).exp_m1();
                let scale = if heun {
                    step.alpha_t * (phi_1 / -step.h_eta + 1.0) / r
                } else {
                    0.5 * step.alpha_t * phi_1 / r
                };
                x = (x + (at.denoised - old_denoised)?.affine(scale, 0.0)?)?;
            }
            old = Some((at.denoised.clone(), step.h));
            let noise = this.noise.like(&x)?;
            x + noise.affine(step.noise_scale, 0.0)?
        })
    }

    fn dpmpp_3m_sde(&mut self, x: Tensor) -> Result<Option<Tensor>> {
        // (denoised, h) of the last two steps, newest first.
        let mut history: Vec<(Tensor, Option<f64>)> = Vec::with_capacity(3);
        let mut h: Option<f64> = None;
        self.run_steps(x, |this, at| {
            let x = if at.next == 0.0 {
                at.denoised.clone()
            } else {
                let (mut x, step) = this.sde_base(at.x, at.denoised, at.i)?;
                h = Some(step.h);
                let h_eta = step.h_eta;
                let phi_2 = (-h_eta).exp_m1() / h_eta + 1.0;
                match history.as_slice() {
                    [(d_1, Some(h_1)), (d_2, Some(h_2)), ..] => {
                        let (r0, r1) = (h_1 / step.h, h_2 / step.h);
                        let d1_0 = (at.denoised - d_1)?.affine(1.0 / r0, 0.0)?;
                        let d1_1 = (d_1 - d_2)?.affine(1.0 / r1, 0.0)?;
                        let diff = (&d1_0 - &d1_1)?;
                        let d1 = (&d1_0 + diff.affine(r0 / (r0 + r1), 0.0)?)?;
                        let d2 = diff.affine(1.0 / (r0 + r1), 0.0)?;
                        let phi_3 = phi_2 / h_eta - 0.5;
                        x = (x + lin(step.alpha_t * phi_2, &d1, -step.alpha_t * phi_3, &d2)?)?;
                    }
                    [(d_1, Some(h_1)), ..] => {
                        let r = h_1 / step.h;
                        let d = (at.denoised - d_1)?.affine(1.0 / r, 0.0)?;
                        x = (x + d.affine(step.alpha_t * phi_2, 0.0)?)?;
                    }
                    _ => {}
                }
                let noise = this.noise.like(&x)?;
                (x + noise.affine(step.noise_scale, 0.0)?)?
            };
            history.insert(0, (at.denoised.clone(), h));
            history.truncate(2);
            Ok(x)
        })
    }

    /// The ancestral renoise from `σ_down` up to `σ_next` with this step's noise.
    fn renoised(&mut self, x: &Tensor, step: &FlowAncestral) -> Result<Tensor> {
        let noise = self.noise.like(x)?;
        lin(step.rescale, x, step.renoise, &noise)
    }

    fn lcm(&mut self, x: Tensor) -> Result<Option<Tensor>> {
        self.run_steps(x, |this, at| {
            if at.next == 0.0 {
                return Ok(at.denoised.clone());
            }
            // CONST.noise_scaling(σ_next, noise, x).
            let noise = this.noise.like(at.denoised)?;
            lin(at.next, &noise, 1.0 - at.next, at.denoised)
        })
    }
}

/// What one step of a sampler starts from (see `Sampling::run_steps`).
struct StepIn<'a> {
    i: usize,
    s: f64,
    next: f64,
    x: &'a Tensor,
    /// The model's clean estimate at σ `s`.
    denoised: &'a Tensor,
}

struct SdeStep {
    h: f64,
    h_eta: f64,
    alpha_t: f64,
    /// `σ_next·√(1 − e^(−2hη))`.
    noise_scale: f64,
}

/// `torch.lerp` (its two-sided formula).
fn lerp(start: f64, end: f64, weight: f64) -> f64 {
    if weight < 0.5 {
        start + weight * (end - start)
    } else {
        end - (end - start) * (1.0 - weight)
    }
}

/// `linear_multistep_coeff`: the integral from `t[i]` to `t[i+1]` of the
/// Lagrange basis polynomial `j` through `t[i], t[i−1], …, t[i−order+1]`.
/// ComfyUI integrates numerically (scipy `quad`); the polynomial has degree
/// < 4, which 3-point Gauss–Legendre integrates exactly.
fn linear_multistep_coeff(order: usize, t: &[f64], i: usize, j: usize) -> f64 {
    let basis = |tau: f64| {
        (0..order)
            .filter(|&k| k != j)
            .map(|k| (tau - t[i - k]) / (t[i - j] - t[i - k]))
            .product::<f64>()
    };
    let (a, b) = (t[i], t[i + 1]);
    let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
    let node = (3.0f64 / 5.0).sqrt();
    half * (5.0 / 9.0 * basis(mid - half * node)
        + 8.0 / 9.0 * basis(mid)
        + 5.0 / 9.0 * basis(mid + half * node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for name in Sampler::COMFY_NAMES {
            assert!(Sampler::from_comfy_name(name).is_some(), "{name}");
        }
        assert_eq!(Sampler::from_comfy_name("dpm_fast"), None);
    }

    struct Shrink;

    impl Denoiser for Shrink {
        fn denoise(&mut self, x: &Tensor, sigma: f32, _step: usize) -> Result<Tensor> {
            x.affine(1.0 - f64::from(sigma) * 0.5, 0.0)
        }
    }

    #[test]
    fn every_sampler_runs_short_schedules() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        for name in Sampler::COMFY_NAMES {
            let sampler = Sampler::from_comfy_name(name).unwrap();
            for sigmas in [
                vec![1.0],
                vec![1.0, 0.0],
                vec![1.0, 0.5, 0.0],
                vec![0.9, 0.6, 0.3, 0.1],
            ] {
                let x = Tensor::ones((1, 2, 2, 2), candle_core::DType::F32, &dev)?;
                let run = Run {
                    sampler,
                    sigmas: &sigmas,
                    shift: 3.0,
                };
                let mut steps = 0;
                let out = sample(&run, &mut Shrink, x, &mut StepNoise::comfy(1), &mut |_| {
                    steps += 1;
                    std::ops::ControlFlow::Continue(())
                })?
                .unwrap();
                assert_eq!(steps, sigmas.len().saturating_sub(1), "{name} {sigmas:?}");
                let values = out.flatten_all()?.to_vec1::<f32>()?;
                assert!(values.iter().all(|v| v.is_finite()), "{name} {sigmas:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn multistep_coefficients_sum_to_the_step() {
        // The basis polynomials sum to 1, so the coefficients sum to t[i+1] − t[i].
        let t = [1.0, 0.9, 0.7, 0.4, 0.2];
        for i in 0..4 {
            let order = (i + 1).min(4);
            let sum: f64 = (0..order)
                .map(|j| linear_multistep_coeff(order, &t, i, j))
                .sum();
            assert!((sum - (t[i + 1] - t[i])).abs() < 1e-12, "step {i}: {sum}");
        }
    }

    #[test]
    fn flow_ancestral_step_keeps_the_marginal() {
        // Renoising σ_down's sample to σ_next: rescale² · σ_down² + renoise² = σ_next².
        let step = FlowAncestral::new(0.8, 0.6);
        let total = (step.rescale * step.down).powi(2) + step.renoise.powi(2);
        assert!((total - 0.36).abs() < 1e-12, "{total}");
    }
}
