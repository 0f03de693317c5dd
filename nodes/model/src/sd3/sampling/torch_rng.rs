//! torch's CPU generator, reproduced bit for bit, so that a seed gives
//! ComfyUI's noise (`torch.manual_seed(seed)` then `torch.randn`).
//!
//! What torch does (ATen `CPUGeneratorImpl`, `core/MT19937RNGEngine.h`,
//! `core/DistributionsHelper.h`, `native/cpu/DistributionTemplates.h`):
//! - the engine is MT19937 seeded with the low 32 bits of the seed;
//! - a float uniform is `(u32 & (2²⁴ − 1)) · 2⁻²⁴`, a double uniform the low 53
//!   bits of two draws (first one high) times 2⁻⁵³;
//! - `randn` of an f32 tensor with ≥ 16 elements fills every element with a
//!   float uniform, then turns each block of 16 into normals by Box–Muller
//!   (`u1 = 1 − d[j]`, `u2 = d[j + 8]`, `d[j] = r·cos θ`, `d[j + 8] = r·sin θ`)
//!   with the AVX2 kernel's `log256_ps`/`sincos256_ps` (Cephes polynomials,
//!   avx_mathfun); a ragged tail redraws 16 uniforms for the last 16 elements.
//!   x86-64 torch uses that kernel on every AVX2 or AVX-512 CPU (AVX-512 is not
//!   dispatched for `normal_`); CPUs without AVX2 (and ARM) use libm instead
//!   and draw other noise, so ComfyUI there differs from ComfyUI here too;
//! - smaller tensors take `normal_distribution<double>` one element at a
//!   time: `r = √(−2·log1p(−u2))`, `θ = 2π·u1`, return `r·cos θ` and keep
//!   `r·sin θ` for the next draw (that cache lives in the generator).

/// MT19937 as `at::mt19937` (the standard 32-bit Mersenne Twister).
#[derive(Clone)]
struct Mt19937 {
    state: [u32; 624],
    next: usize,
}

impl Mt19937 {
    const N: usize = 624;
    const M: usize = 397;

    fn new(seed: u32) -> Self {
        let mut state = [0u32; Self::N];
        state[0] = seed;
        for j in 1..Self::N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Mt19937 {
            state,
            next: Self::N,
        }
    }

    fn twist(&mut self) {
        for i in 0..Self::N {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % Self::N] & 0x7fff_ffff);
            let mut v = self.state[(i + Self::M) % Self::N] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.state[i] = v;
        }
        self.next = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.next >= Self::N {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

/// A `torch.Generator` on the CPU, as left by `torch.manual_seed(seed)`.
#[derive(Clone)]
pub struct TorchGenerator {
    engine: Mt19937,
    /// `normal_distribution<double>`'s second Box–Muller value.
    next_double_normal: Option<f64>,
}

impl TorchGenerator {
    /// `torch.manual_seed(seed)`: only the low 32 bits reach the engine.
    pub fn manual_seed(seed: u64) -> Self {
        TorchGenerator {
            engine: Mt19937::new(seed as u32),
            next_double_normal: None,
        }
    }

    /// `uniform_real_distribution<float>(0, 1)`.
    fn uniform_f32(&mut self) -> f32 {
        (self.engine.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// `uniform_real_distribution<double>(0, 1)` on `random64()`.
    fn uniform_f64(&mut self) -> f64 {
        let hi = u64::from(self.engine.next_u32());
        let lo = u64::from(self.engine.next_u32());
        (((hi << 32) | lo) & ((1 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `normal_distribution<double>(0, 1)`.
    fn normal_f64(&mut self) -> f64 {
        if let Some(cached) = self.next_double_normal.take() {
            return cached;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `torch.randn(n, generator=self)` for a contiguous f32 tensor of `n` elements.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            box_muller_16(block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut data[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            box_muller_16(tail);
        }
        data
    }
}

/// Sixteen uniforms to sixteen normals, as `normal_fill_16_AVX2` (mean 0, std 1).
fn box_muller_16(data: &mut [f32]) {
    const TWO_PI: f32 = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = 1.0 - data[j];
        let u2 = data[j + 8];
        let radius = (-2.0 * cephes::log(u1)).sqrt();
        let (sin, cos) = cephes::sincos(TWO_PI * u2);
        data[j] = radius * cos;
        data[j + 8] = radius * sin;
    }
}

/// avx_mathfun's single-precision `log` and `sincos` (Cephes polynomials),
/// one lane at a time with the same IEEE operations in the same order, fused
/// where torch's compiled kernel fuses them (GCC contracts the intrinsics'
/// multiply-adds into FMA instructions: read from its disassembly).
#[allow(clippy::excessive_precision)] // the C source's literals, as written there
mod cephes {
    // The C source's double literals, rounded to f32 as its float tables are.
    const SQRT_HALF: f32 = std::f64::consts::FRAC_1_SQRT_2 as f32;
    const LOG_P: [f32; 9] = [
        7.0376836292E-2_f64 as f32,
        -1.1514610310E-1_f64 as f32,
        1.1676998740E-1_f64 as f32,
        -1.2420140846E-1_f64 as f32,
        1.4249322787E-1_f64 as f32,
        -1.6668057665E-1_f64 as f32,
        2.0000714765E-1_f64 as f32,
        -2.4999993993E-1_f64 as f32,
        3.3333331174E-1_f64 as f32,
    ];
    const LOG_Q1: f32 = -2.12194440e-4_f64 as f32;
    const LOG_Q2: f32 = 0.693359375;

    /// `log256_ps` for `x` in (0, 1] (what Box–Muller feeds it).
    pub(super) fn log(x: f32) -> f32 {
        let x = x.max(f32::MIN_POSITIVE);
        let bits = x.to_bits();
        let mut e = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
        let mut x = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
        if x < SQRT_HALF {
            e -= 1.0;
            x = (x - 1.0) + x;
        } else {
            x -= 1.0;
        }
        let z = x * x;
        let mut y = LOG_P[0];
        for p in &LOG_P[1..] {
            y = y.mul_add(x, *p);
        }
        let y = (y * x).mul_add(z, e * LOG_Q1);
        let y = (-z).mul_add(0.5, y);
        e.mul_add(LOG_Q2, x + y)
    }

    const MINUS_DP: [f32; 3] = [
        -0.78515625,
        -2.4187564849853515625e-4_f64 as f32,
        -3.77489497744594108e-8_f64 as f32,
    ];
    const SIN_P: [f32; 3] = [
        -1.9515295891E-4_f64 as f32,
        8.3321608736E-3_f64 as f32,
        -1.6666654611E-1_f64 as f32,
    ];
    const COS_P: [f32; 3] = [
        2.443315711809948E-005_f64 as f32,
        -1.388731625493765E-003_f64 as f32,
        4.166664568298827E-002_f64 as f32,
    ];
    const FOUR_OVER_PI: f32 = 1.27323954473516_f64 as f32;

    /// `sincos256_ps`: `(sin x, cos x)` for `x` ≥ 0.
    pub(super) fn sincos(x: f32) -> (f32, f32) {
        let x = x.abs();
        let j = (((x * FOUR_OVER_PI) as i32) + 1) & !1;
        let y = j as f32;
        let sin_negated = j & 4 != 0;
        let use_sin_poly = j & 2 != 0;
        let cos_negated = (j - 2) & 4 == 0;
        let x = y.mul_add(MINUS_DP[0], x);
        let x = y.mul_add(MINUS_DP[1], x);
        let x = y.mul_add(MINUS_DP[2], x);
        let z = x * x;
        let c = COS_P[0].mul_add(z, COS_P[1]).mul_add(z, COS_P[2]);
        let c = (c * z).mul_add(z, -(z * 0.5)) + 1.0;
        let s = SIN_P[0].mul_add(z, SIN_P[1]).mul_add(z, SIN_P[2]);
        let s = x.mul_add(s * z, x);
        let (sin, cos) = if use_sin_poly { (c, s) } else { (s, c) };
        let sign = |v: f32, negate: bool| if negate { -v } else { v };
        (sign(sin, sin_negated), sign(cos, cos_negated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_is_the_standard_engine() {
        // The C++ standard's check: the 10000th output of mt19937 seeded 5489.
        let mut mt = Mt19937::new(5489);
        let last = (0..10_000).map(|_| mt.next_u32()).last();
        assert_eq!(last, Some(4_123_659_995));
    }

    #[test]
    fn cephes_functions_stay_within_float_accuracy() {
        let close =
            |got: f32, want: f32| (got - want).abs() <= 4.0 * f32::EPSILON * want.abs().max(1.0);
        for i in 1..=1000 {
            let x = i as f32 / 1000.0;
            assert!(close(cephes::log(x), x.ln()), "log {x}");
            let theta = x * std::f32::consts::TAU;
            let (s, c) = cephes::sincos(theta);
            assert!(close(s, theta.sin()), "sin {theta}");
            assert!(close(c, theta.cos()), "cos {theta}");
        }
    }
}
