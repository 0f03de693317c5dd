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
    /// ComfyUI `beta` (α = β = 0.6): training sigmas at the Beta distribution's quantiles.
    Beta,
}

impl Scheduler {
    /// ComfyUI's scheduler names that are here, in ComfyUI's order.
    pub const COMFY_NAMES: [&'static str; 9] = [
        "simple",
        "sgm_uniform",
        "karras",
        "exponential",
        "ddim_uniform",
        "beta",
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
            "beta" => Self::Beta,
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
            Self::Beta => beta(steps, &table),
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

/// `beta_scheduler` (α = β = 0.6): for `p = 1 − i/steps`, the training sigma
/// at `rint(ppf(p)·999)`, each index once (consecutive repeats dropped).
fn beta(steps: usize, table: &[f32]) -> Vec<f32> {
    const ALPHA_BETA: f64 = 0.6;
    let last = (table.len() - 1) as f64;
    let mut picked: Vec<f32> = Vec::with_capacity(steps);
    let mut previous = None;
    for i in 0..steps {
        let p = 1.0 - i as f64 * (1.0 / steps as f64);
        let t = (beta_ppf(p, ALPHA_BETA, ALPHA_BETA) * last).round_ties_even();
        if previous != Some(t) {
            picked.push(table[t as usize]);
        }
        previous = Some(t);
    }
    picked
}

/// The Beta(a, b) distribution's quantile function (scipy's `beta.ppf`), by
/// bisection on the regularized incomplete beta function to f64 precision.
fn beta_ppf(p: f64, a: f64, b: f64) -> f64 {
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if regularized_incomplete_beta(mid, a, b) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// `I_x(a, b)` by its continued fraction (modified Lentz), on the side where it converges fast.
fn regularized_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_continued_fraction(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_continued_fraction(1.0 - x, b, a) / b
    }
}

fn beta_continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let nudge = |v: f64| if v.abs() < TINY { TINY } else { v };
    let mut c = 1.0;
    let mut d = 1.0 / nudge(1.0 - (a + b) * x / (a + 1.0));
    let mut f = d;
    for m in 1..10_000 {
        let m = f64::from(m);
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 / nudge(1.0 + even * d);
        c = nudge(1.0 + even / c);
        f *= d * c;
        let odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 / nudge(1.0 + odd * d);
        c = nudge(1.0 + odd / c);
        let delta = d * c;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    f
}

/// `ln Γ(x)` for x > 0 (Lanczos, g = 7, 9 terms: ~1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEFFS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1 − x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + G + 0.5;
    let series = COEFFS[1..]
        .iter()
        .enumerate()
        .fold(COEFFS[0], |acc, (i, c)| acc + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
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
    ksampler_sigmas(scheduler, steps, shift, denoise, false)
}

/// [`denoise_sigmas`] as ComfyUI's `KSampler` computes them for a sampler:
/// with `discard_penultimate` (dpm_2 and kin, `KSampler.calculate_sigmas`)
/// each schedule has one step more and loses its penultimate sigma.
pub fn ksampler_sigmas(
    scheduler: Scheduler,
    steps: usize,
    shift: f64,
    denoise: f64,
    discard_penultimate: bool,
) -> Vec<f32> {
    let schedule = |n: usize| {
        if !discard_penultimate {
            return scheduler.sigmas(n, shift);
        }
        let mut sigmas = scheduler.sigmas(n + 1, shift);
        if sigmas.len() >= 2 {
            sigmas.remove(sigmas.len() - 2);
        }
        sigmas
    };
    if denoise <= 0.0 {
        return Vec::new();
    }
    if denoise >= 1.0 {
        return schedule(steps);
    }
    // Validation refuses longer schedules; the bound keeps any other caller's allocation sane.
    let total = ((steps as f64 / denoise) as usize).clamp(steps, MAX_SCHEDULE_STEPS.max(steps));
    let all = schedule(total);
    all[all.len().saturating_sub(steps + 1)..].to_vec()
}

/// `KSampler.sample`'s step window (KSamplerAdvanced): the sigmas of steps
/// `start..end`; with `force_full_denoise`, a window that stops early ends at
/// 0. A window starting at or past the last step is empty (nothing to do).
pub fn step_window(sigmas: &[f32], start: usize, end: usize, force_full_denoise: bool) -> Vec<f32> {
    let mut window = sigmas.to_vec();
    if end < window.len().saturating_sub(1) {
        window.truncate(end + 1);
        if force_full_denoise {
            if let Some(last) = window.last_mut() {
                *last = 0.0;
            }
        }
    }
    if start >= window.len().saturating_sub(1) {
        return Vec::new();
    }
    window.split_off(start)
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
    fn step_windows_follow_ksampler_advanced() {
        let sigmas = [1.0, 0.75, 0.5, 0.25, 0.0];
        assert_eq!(step_window(&sigmas, 0, 10000, true), sigmas.to_vec());
        assert_eq!(step_window(&sigmas, 0, 2, false), vec![1.0, 0.75, 0.5]);
        assert_eq!(step_window(&sigmas, 0, 2, true), vec![1.0, 0.75, 0.0]);
        assert_eq!(step_window(&sigmas, 2, 10000, true), vec![0.5, 0.25, 0.0]);
        assert_eq!(step_window(&sigmas, 1, 3, false), vec![0.75, 0.5, 0.25]);
        assert!(step_window(&sigmas, 4, 10000, true).is_empty());
        assert!(step_window(&sigmas, 2, 2, false).is_empty());
    }

    #[test]
    fn beta_quantiles_match_known_values() {
        // Beta(0.6, 0.6) is symmetric: the median is 1/2, and ppf(1 − p) = 1 − ppf(p).
        assert!((beta_ppf(0.5, 0.6, 0.6) - 0.5).abs() < 1e-14);
        let (p, q) = (beta_ppf(0.1, 0.6, 0.6), beta_ppf(0.9, 0.6, 0.6));
        assert!((p + q - 1.0).abs() < 1e-13, "{p} {q}");
        // Beta(1, 1) is uniform; Beta(2, 1) has CDF x², so ppf(p) = √p.
        assert!((beta_ppf(0.3, 1.0, 1.0) - 0.3).abs() < 1e-14);
        assert!((beta_ppf(0.25, 2.0, 1.0) - 0.5).abs() < 1e-14);
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
