//! Kernels compiled for the instruction sets the running CPU has, picked at run time.
//!
//! A kernel is a value (its arguments) whose trait method runs the loops; the method is
//! `#[inline(always)]` in every implementation, so each `#[target_feature]` wrapper here
//! compiles the loops for its own features. Calling such a wrapper is what needs `unsafe`:
//! it is done here, and only after the features were detected.

use half::f16;

/// A kernel the same for every instruction set ([`dispatch`]). Implementations mark `run`
/// `#[inline(always)]` (else it is compiled for the baseline target only).
pub trait Kernel {
    type Output;
    fn run(self) -> Self::Output;
}

/// A kernel that adds products with `f32::mul_add` where FMA is there and `a·b + c`
/// elsewhere ([`dispatch_fma`]); `run` is `#[inline(always)]` as for [`Kernel`].
pub trait FmaKernel {
    type Output;
    fn run<const FMA: bool>(self) -> Self::Output;
}

/// Runs `kernel` compiled for the widest of AVX-512F, AVX2+FMA or the baseline target that
/// the CPU supports.
#[inline(always)]
pub fn dispatch<K: Kernel>(kernel: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<K: Kernel>(kernel: K) -> K::Output {
            kernel.run()
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<K: Kernel>(kernel: K) -> K::Output {
            kernel.run()
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the features `avx512` was compiled for.
            return unsafe { avx512(kernel) };
        }
        if avx2_fma() {
            // SAFETY: the CPU has the features `avx2` was compiled for.
            return unsafe { avx2(kernel) };
        }
    }
    kernel.run()
}

/// Runs `kernel.run::<true>()` compiled for AVX2+FMA where the CPU has them, else
/// `kernel.run::<false>()` for the baseline target.
#[inline(always)]
pub fn dispatch_fma<K: FmaKernel>(kernel: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn avx2<K: FmaKernel>(kernel: K) -> K::Output {
            kernel.run::<true>()
        }
        if avx2_fma() {
            // SAFETY: the CPU has the features `avx2` was compiled for.
            return unsafe { avx2(kernel) };
        }
    }
    kernel.run::<false>()
}

/// Whether the running CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
pub fn avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `dst[i][l] = src[i][l]` widened to f32, eight values per F16C instruction, when the CPU has
/// AVX and F16C; returns `false` (and writes nothing) when it does not. Exact either way.
#[inline(always)]
pub fn widen_f16x8(src: &[[f16; 8]], dst: &mut [[f32; 8]]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU has the features `widen_f16c` was compiled for.
        unsafe { widen_f16c(src, dst) };
        return true;
    }
    let _ = (src, dst);
    false
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
fn widen_f16c(src: &[[f16; 8]], dst: &mut [[f32; 8]]) {
    use std::arch::x86_64::{__m128i, _mm256_cvtph_ps};
    for (s, d) in src.iter().zip(dst) {
        let bits: __m128i = bytemuck::cast(s.map(f16::to_bits));
        *d = bytemuck::cast(_mm256_cvtph_ps(bits));
    }
}
