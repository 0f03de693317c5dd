//! Sigma schedules for SD3's flow model: diffusers' FlowMatch schedule and
//! ComfyUI's schedulers (`comfy/samplers.py` `calculate_sigmas`, on
//! `ModelSamplingDiscreteFlow`: 1000 training sigmas `shift(t/1000)`,
//! `timestep(σ) = 1000·σ`, `sigma_min = shift(1/1000)`, `sigma_max = 1`).

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

/// `torch.linspace(start, end, n)` in f32: from both ends towards the middle.
fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n <= 1 {
        return vec![start; n];
    }
    let step = (end - start) / (n - 1) as f32;
    (0..n)
        .map(|i| {
            if i < n / 2 {
                start + step * i as f32
            } else {
                end - step * (n - i - 1) as f32
            }
        })
        .collect()
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
    /// ComfyUI `normal`: timesteps linearly from σ_max to σ_min, both kept.
    Normal,
    /// ComfyUI `karras` (Karras et al. 2022, ρ = 7) from σ_max to σ_min.
    Karras,
    /// ComfyUI `exponential`: log-linear from σ_max to σ_min.
    Exponential,
    /// ComfyUI `ddim_uniform`: every ⌊1000 / steps⌋-th training sigma from the second.
    DdimUniform,
    /// ComfyUI `linear_quadratic` (Mochi): 1 − σ linear, then quadratic.
    LinearQuadratic,
    /// ComfyUI `kl_optimal`: `tan` of a linear walk from `atan σ_max` to `atan σ_min`.
    KlOptimal,
}

impl Scheduler {
    /// ComfyUI's scheduler names that are here, in ComfyUI's order.
    pub const COMFY_NAMES: [&'static str; 8] = [
        "simple",
        "sgm_uniform",
        "karras",
        "exponential",
        "ddim_uniform",
        "normal",
        "linear_quadratic",
        "kl_optimal",
    ];

    pub fn from_comfy_name(name: &str) -> Option<Self> {
        Some(match name {
            "simple" => Self::Simple,
            "sgm_uniform" => Self::SgmUniform,
            "normal" => Self::Normal,
            "karras" => Self::Karras,
            "exponential" => Self::Exponential,
            "ddim_uniform" => Self::DdimUniform,
            "linear_quadratic" => Self::LinearQuadratic,
            "kl_optimal" => Self::KlOptimal,
            _ => return None,
        })
    }

    /// Sigmas from σ_max down to 0: `steps + 1` of them (`ddim_uniform`: one
    /// per training sigma it lands on, as ComfyUI), just `[0]` for no steps.
    pub fn sigmas(self, steps: usize, shift: f64) -> Vec<f32> {
        if steps == 0 {
            return vec![0.0];
        }
        let table = training_sigmas(shift);
        let (sigma_min, sigma_max) = (table[0], table[table.len() - 1]);
        let mut sigmas: Vec<f32> = match self {
            Self::Diffusers => {
                // diffusers: sigma_min comes from the f32 training table.
                linspace(1000.0, 1000.0 * f64::from(sigma_min), steps)
                    .into_iter()
                    .map(|t| shift_sigma(shift, t / 1000.0) as f32)
                    .collect()
            }
            Self::Simple => {
                let stride = table.len() as f64 / steps as f64;
                (0..steps)
                    .map(|x| table[table.len() - 1 - (x as f64 * stride) as usize])
                    .collect()
            }
            Self::SgmUniform => {
                let (max, min) = (f64::from(sigma_max), f64::from(sigma_min));
                let ts = linspace(max * 1000.0, min * 1000.0, steps + 1);
                ts[..steps]
                    .iter()
                    .map(|t| shift_sigma(shift, t / 1000.0) as f32)
                    .collect()
            }
            Self::Normal => linspace_f32(sigma_max * 1000.0, sigma_min * 1000.0, steps)
                .into_iter()
                .map(|t| shift_f32(shift, t / 1000.0))
                .collect(),
            Self::Karras => {
                const RHO: f64 = 7.0;
                let min_inv_rho = f64::from(sigma_min).powf(1.0 / RHO);
                let max_inv_rho = f64::from(sigma_max).powf(1.0 / RHO);
                let span = (min_inv_rho - max_inv_rho) as f32;
                linspace_f32(0.0, 1.0, steps)
                    .into_iter()
                    .map(|ramp| (max_inv_rho as f32 + ramp * span).powf(RHO as f32))
                    .collect()
            }
            Self::Exponential => {
                let (from, to) = (f64::from(sigma_max).ln(), f64::from(sigma_min).ln());
                linspace_f32(from as f32, to as f32, steps)
                    .into_iter()
                    .map(f32::exp)
                    .collect()
            }
            Self::DdimUniform => {
                let stride = (table.len() / steps).max(1);
                let mut picked: Vec<f32> =
                    (1..table.len()).step_by(stride).map(|x| table[x]).collect();
                picked.reverse();
                picked
            }
            Self::LinearQuadratic => return linear_quadratic(steps, sigma_max),
            Self::KlOptimal => kl_optimal(steps, sigma_min, sigma_max),
        };
        sigmas.push(0.0);
        sigmas
    }
}

/// `linear_quadratic_schedule` (threshold noise 0.025, half the steps linear), in f64 as Python.
fn linear_quadratic(steps: usize, sigma_max: f32) -> Vec<f32> {
    const THRESHOLD: f64 = 0.025;
    let schedule: Vec<f64> = if steps == 1 {
        vec![0.0, 1.0]
    } else {
        let linear_steps = steps / 2;
        let ls = linear_steps as f64;
        let quadratic_steps = (steps - linear_steps) as f64;
        let step_diff = ls - THRESHOLD * steps as f64;
        let quadratic_coef = step_diff / (ls * quadratic_steps * quadratic_steps);
        let linear_coef = THRESHOLD / ls - 2.0 * step_diff / (quadratic_steps * quadratic_steps);
        let constant = quadratic_coef * ls * ls;
        let linear = (0..linear_steps).map(|i| i as f64 * THRESHOLD / ls);
        let quadratic = (linear_steps..steps).map(|i| {
            let i = i as f64;
            quadratic_coef * (i * i) + linear_coef * i + constant
        });
        linear.chain(quadratic).chain([1.0]).collect()
    };
    schedule
        .into_iter()
        .map(|x| (1.0 - x) as f32 * sigma_max)
        .collect()
}

/// `kl_optimal_scheduler` in f32 (one step: just σ_max, where ComfyUI divides by zero).
fn kl_optimal(steps: usize, sigma_min: f32, sigma_max: f32) -> Vec<f32> {
    if steps == 1 {
        return vec![sigma_max];
    }
    let (atan_min, atan_max) = (
        f64::from(sigma_min).atan() as f32,
        f64::from(sigma_max).atan() as f32,
    );
    (0..steps)
        .map(|i| {
            let t = i as f32 / (steps - 1) as f32;
            (t * atan_min + (1.0 - t) * atan_max).tan()
        })
        .collect()
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

/// The longest schedule `denoise` may ask for: ComfyUI's most steps (10000) at
/// its smallest denoise widget step (0.01).
pub const MAX_SCHEDULE_STEPS: usize = 1_000_000;

/// The sigmas for `steps` steps at `denoise` ∈ (0, 1]: the last `steps + 1`
/// of a `⌊steps / denoise⌋`-step schedule (ComfyUI `KSampler.set_steps`).
/// `denoise` ≤ 0 gives no sigmas: nothing to do, the latent stays as it is.
pub fn denoise_sigmas(scheduler: Scheduler, steps: usize, shift: f64, denoise: f64) -> Vec<f32> {
    if denoise <= 0.0 {
        return Vec::new();
    }
    if denoise >= 1.0 {
        return scheduler.sigmas(steps, shift);
    }
    // Validation refuses longer schedules; the bound keeps any other caller's allocation sane.
    let total = ((steps as f64 / denoise) as usize).clamp(steps, MAX_SCHEDULE_STEPS.max(steps));
    let all = scheduler.sigmas(total, shift);
    all[all.len().saturating_sub(steps + 1)..].to_vec()
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
        // docs/parity.md, "Pipeline conventions", printed by diffusers 0.42.1 to 8 digits (bit-exact equality
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
        assert!(denoise_sigmas(Scheduler::Diffusers, 4, 3.0, 0.0).is_empty());
    }
}
