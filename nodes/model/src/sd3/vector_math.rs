//! Element-wise f32 math that vectorises: a branch-free `exp`, the
//! activations built on it, and [`simd_kernel!`], which compiles a slice
//! kernel for AVX-512 and AVX2 and picks one at run time.
//!
//! candle's CPU ops call libm element by element (`expf`, and `tanhf`, which
//! glibc builds on `expm1f`); in the MMDiT's tanh GELU and softmax that was a
//! fifth of a step. A loop over [`exp`] compiles to SIMD instructions only
//! when the target features are on, hence the dispatch.

/// Defines `fn NAME(args)` that runs `body` compiled for the widest of
/// AVX-512F, AVX2+FMA or the baseline target the CPU supports, so the loops
/// in `body` (and the `#[inline(always)]` functions they call) vectorise: the
/// arguments become a [`Kernel`](crate::sd3::raw::simd::Kernel) whose
/// `#[inline(always)]` `run` is `body`, handed to
/// [`dispatch`](crate::sd3::raw::simd::dispatch).
macro_rules! simd_kernel {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            struct Args<T>(T);
            impl $crate::sd3::raw::simd::Kernel for Args<($($ty,)*)> {
                type Output = ();
                #[inline(always)]
                fn run(self) {
                    let ($($arg,)*) = self.0;
                    $body
                }
            }
            $crate::sd3::raw::simd::dispatch(Args(($($arg,)*)))
        }
    };
}
pub(crate) use simd_kernel;

/// `e^x`, within 2 ulp of the exact value on the normal range, without
/// branches or calls (Cephes' `expf`: `x = n·ln 2 + r`, `|r| ≤ ln 2 / 2`, a
/// degree-6 polynomial for `e^r`, `2^n` built in the exponent bits).
/// Inputs are clamped to `[-87.3, 88.3]`: `exp` of less is 1e-38 (0 to f32's
/// normal range), of more is 2e38 instead of infinity.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // The low mantissa bits of `shifted` hold n; place n + 127 in the exponent.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let two_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    e_r * two_n
}

/// GELU with the tanh approximation (`gelu(approximate="tanh")`), written as
/// `x·σ(2u)`, the same function as `0.5·x·(1 + tanh u)`,
/// `u = √(2/π)·(x + 0.044715·x³)`.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp(-2.0 * u))
}

/// SiLU, `x·σ(x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

simd_kernel! {
    /// `out[i] = silu(x[i]·scale + shift)`.
    pub fn scale_shift_silu(out: &mut [f32], x: &[f32], scale: f32, shift: f32) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = silu(v * scale + shift);
        }
    }
}

simd_kernel! {
    /// `xs[i] += bias[i mod bias.len()]`.
    pub fn add_bias_in_place(xs: &mut [f32], bias: &[f32]) {
        for row in xs.chunks_exact_mut(bias.len()) {
            for (x, &b) in row.iter_mut().zip(bias) {
                *x += b;
            }
        }
    }
}

simd_kernel! {
    /// `xs[i] = gelu_tanh(xs[i] + bias[i mod bias.len()])`, in place.
    pub fn bias_gelu_tanh_in_place(xs: &mut [f32], bias: &[f32]) {
        for row in xs.chunks_exact_mut(bias.len()) {
            for (x, &b) in row.iter_mut().zip(bias) {
                *x = gelu_tanh(*x + b);
            }
        }
    }
}

simd_kernel! {
    /// For a column-major `[rows, columns]` block of scores (`column` by
    /// `column`, each `rows` long), replaces each row by `e^(row − max(row))`
    /// and writes the sum of the new row to `sums`: softmax numerators and
    /// denominators, normalised later by the caller. Work runs across rows,
    /// which are contiguous.
    pub fn exp_shifted_columns(scores: &mut [f32], rows: usize, sums: &mut [f32]) {
        let sums = &mut sums[..rows];
        sums.fill(f32::NEG_INFINITY);
        for column in scores.chunks_exact(rows) {
            for (max, &v) in sums.iter_mut().zip(column) {
                *max = max.max(v);
            }
        }
        let mut maxes = [0f32; MAX_ROWS];
        let maxes = &mut maxes[..rows];
        maxes.copy_from_slice(sums);
        sums.fill(0.0);
        for column in scores.chunks_exact_mut(rows) {
            for ((v, sum), &max) in column.iter_mut().zip(sums.iter_mut()).zip(maxes.iter()) {
                *v = exp(*v - max);
                *sum += *v;
            }
        }
    }
}

simd_kernel! {
    /// `out = layer_norm(x)·(1 + scale) + shift` for one row (biased
    /// variance, two passes, as torch's LayerNorm without affine parameters).
    pub fn modulated_layer_norm(out: &mut [f32], x: &[f32], shift: &[f32], scale: &[f32], eps: f32) {
        let n = x.len() as f32;
        let mean = lane_sum(x, |v| v) / n;
        let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
        let inv_std = 1.0 / (var + eps).sqrt();
        for (((o, &v), &shift), &scale) in out.iter_mut().zip(x).zip(shift).zip(scale) {
            *o = (v - mean) * inv_std * (1.0 + scale) + shift;
        }
    }
}

simd_kernel! {
    /// `out = x + y·gate` for one row.
    pub fn gated_add(out: &mut [f32], x: &[f32], y: &[f32], gate: &[f32]) {
        for (((o, &x), &y), &g) in out.iter_mut().zip(x).zip(y).zip(gate) {
            *o = x + y * g;
        }
    }
}

/// `Σ f(x_i)` over [`LANES`] independent accumulators, so that it vectorises.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; LANES];
    for chunk in x.chunks(LANES) {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    lanes.iter().sum()
}

/// Independent accumulators in row reductions: one AVX-512 register.
const LANES: usize = 16;

/// The most rows [`exp_shifted_columns`] takes at once.
pub const MAX_ROWS: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0;
        for i in -870_000..=883_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max(ulps(exp(x), x.exp()));
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn exp_saturates_instead_of_overflowing() {
        assert!(exp(-1000.0) >= 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
    }

    #[test]
    fn gelu_tanh_matches_the_tanh_formula() {
        for i in -2000..=2000 {
            let x = i as f32 * 5e-3;
            let reference = 0.5
                * x as f64
                * (1.0
                    + (0.797_884_560_802_865_4 * (x as f64 + 0.044715 * (x as f64).powi(3)))
                        .tanh());
            let err = (gelu_tanh(x) as f64 - reference).abs();
            assert!(
                err <= 1e-6 * reference.abs().max(1e-2),
                "x={x}: {} vs {reference}",
                gelu_tanh(x)
            );
        }
        assert!(gelu_tanh(-200.0).abs() < 1e-35);
        assert_eq!(gelu_tanh(200.0), 200.0);
    }

    #[test]
    fn kernels_match_their_scalar_definitions() {
        let xs: Vec<f32> = (0..3 * 37).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
        let bias: Vec<f32> = (0..37).map(|i| i as f32 * 0.01 - 0.2).collect();
        let mut fused = xs.clone();
        bias_gelu_tanh_in_place(&mut fused, &bias);
        for (i, (&y, &x)) in fused.iter().zip(&xs).enumerate() {
            assert_eq!(y, gelu_tanh(x + bias[i % 37]));
        }

        let mut activated = vec![0f32; xs.len()];
        scale_shift_silu(&mut activated, &xs, 0.5, -0.25);
        for (&y, &x) in activated.iter().zip(&xs) {
            let reference = (x * 0.5 - 0.25) as f64;
            let reference = reference / (1.0 + (-reference).exp());
            assert!((y as f64 - reference).abs() <= 1e-6 * reference.abs().max(1e-3));
        }

        // 3 rows × 37 columns, column-major.
        let mut scores = xs.clone();
        let mut sums = [0f32; 3];
        exp_shifted_columns(&mut scores, 3, &mut sums);
        for (r, sum) in sums.into_iter().enumerate() {
            let row: Vec<f32> = xs.iter().skip(r).step_by(3).copied().collect();
            let max = row.iter().cloned().fold(f32::MIN, f32::max);
            let expected: Vec<f64> = row.iter().map(|&v| ((v - max) as f64).exp()).collect();
            for (a, b) in scores.iter().skip(r).step_by(3).zip(&expected) {
                assert!((*a as f64 - b).abs() <= 1e-6 * b, "{a} vs {b}");
            }
            let total: f64 = expected.iter().sum();
            assert!((sum as f64 - total).abs() <= 1e-5 * total);
        }
    }
}
