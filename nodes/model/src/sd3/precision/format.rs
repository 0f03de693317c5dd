//! The number formats weights are stored in (f16, bf16, float8 e4m3fn and e5m2, and f32
//! itself) and their exact widening to f32.
//!
//! Every value of these formats is an f32 value, so widening is exact: a product computed in
//! f32 from the widened weights is the f32 product of the stored values. On x86-64, f16 is
//! widened with F16C when the CPU has it (detected at run time), and float8 through a table of
//! its 256 values.

use float8::{F8E4M3, F8E5M2};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::sd3::raw::simd::{dispatch_fma, widen_f16x8, FmaKernel};

/// A stored weight format that widens exactly to f32.
pub trait StoredFloat: Copy + Send + Sync + 'static {
    fn widen(self) -> f32;

    /// `dst[i] = src[i].widen()`.
    #[inline(always)]
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.widen();
        }
    }
}

impl StoredFloat for f16 {
    /// Branch-free (vectorisable) exact conversion: moving the exponent and mantissa bits into
    /// place and multiplying by 2^112 re-biases the exponent exactly, subnormals included;
    /// infinities and NaNs get the f32 all-ones exponent.
    #[inline(always)]
    fn widen(self) -> f32 {
        let h = u32::from(self.to_bits());
        let magnitude = (h & 0x7fff) << 13;
        let finite = f32::from_bits(magnitude) * f32::from_bits(0x7780_0000); // 2^112
        let abs = if h & 0x7c00 == 0x7c00 {
            f32::from_bits(magnitude | 0x7f80_0000)
        } else {
            finite
        };
        f32::from_bits(abs.to_bits() | ((h & 0x8000) << 16))
    }

    /// With the F16C conversion instruction where the CPU has it (8 values per instruction).
    #[inline(always)]
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        let (src8, src_tail) = src.as_chunks::<8>();
        let (dst8, dst_tail) = dst.as_chunks_mut::<8>();
        if widen_f16x8(src8, dst8) {
            for (s, d) in src_tail.iter().zip(dst_tail) {
                *d = s.widen();
            }
            return;
        }
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.widen();
        }
    }
}

impl StoredFloat for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }

    #[inline(always)]
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(&src[..dst.len()]);
    }
}

impl StoredFloat for bf16 {
    /// bf16 is the upper half of an f32.
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
}

impl StoredFloat for F8E4M3 {
    #[inline(always)]
    fn widen(self) -> f32 {
        E4M3FN[usize::from(self.to_bits())]
    }
}

impl StoredFloat for F8E5M2 {
    #[inline(always)]
    fn widen(self) -> f32 {
        E5M2[usize::from(self.to_bits())]
    }
}

/// PyTorch's `float8_e4m3fn`: exponent bias 7, no infinities, `S.1111.111` is NaN.
const fn e4m3fn_value(bits: u8) -> f32 {
    let sign = ((bits >> 7) as u32) << 31;
    let exponent = ((bits >> 3) & 0xf) as u32;
    let mantissa = (bits & 0x7) as u32;
    let magnitude = if exponent == 0xf && mantissa == 0x7 {
        f32::NAN
    } else if exponent == 0 {
        mantissa as f32 / 512.0 // subnormal: m / 8 · 2^-6
    } else {
        f32::from_bits(((exponent + 127 - 7) << 23) | (mantissa << 20))
    };
    f32::from_bits(magnitude.to_bits() | sign)
}

/// `float8_e5m2` is the upper byte of an f16.
const fn e5m2_value(bits: u8) -> f32 {
    f16::from_bits((bits as u16) << 8).to_f32_const()
}

/// The 256 values of a float8 format, by bit pattern.
macro_rules! float8_table {
    ($value:ident) => {{
        let mut out = [0f32; 256];
        let mut i = 0;
        while i < 256 {
            out[i] = $value(i as u8);
            i += 1;
        }
        out
    }};
}

static E4M3FN: [f32; 256] = float8_table!(e4m3fn_value);
static E5M2: [f32; 256] = float8_table!(e5m2_value);

/// The f16 holding a float8 e5m2 value exactly (candle has no e5m2 dtype).
pub fn e5m2_to_f16(bits: u8) -> f16 {
    f16::from_bits(u16::from(bits) << 8)
}

/// `W` widened to f32 (`w.len()` values), in parallel.
pub fn widen_all<W: StoredFloat>(w: &[W]) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    out.par_chunks_mut(1 << 16)
        .zip(w.par_chunks(1 << 16))
        .for_each(|(o, w)| widen_chunk(w, o));
    out
}

/// `out[i] = w[i].widen()`, compiled for AVX2 where the CPU has it.
pub fn widen_chunk<W: StoredFloat>(w: &[W], out: &mut [f32]) {
    struct Widen<'a, W>(&'a [W], &'a mut [f32]);
    impl<W: StoredFloat> FmaKernel for Widen<'_, W> {
        type Output = ();
        #[inline(always)]
        fn run<const FMA: bool>(self) {
            W::widen_into(self.0, self.1)
        }
    }
    dispatch_fma(Widen(w, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_widens_exactly_for_every_bit_pattern() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            let (ours, reference) = (h.widen(), h.to_f32());
            if reference.is_nan() {
                assert!(ours.is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(ours.to_bits(), reference.to_bits(), "{bits:#06x}");
            }
        }
        let src: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        let wide = widen_all(&src);
        for (h, w) in src.iter().zip(&wide) {
            assert!(w.to_bits() == h.widen().to_bits() || (w.is_nan() && h.is_nan()));
        }
    }

    #[test]
    fn bf16_widens_exactly() {
        for bits in (0..=u16::MAX).step_by(7) {
            let h = bf16::from_bits(bits);
            if !h.is_nan() {
                assert_eq!(h.widen().to_bits(), h.to_f32().to_bits());
            }
        }
    }

    /// Both float8 tables against the `float8` crate (candle's own float8 type) and the known
    /// extremes of e4m3fn: 448 the largest, 2^-9 the smallest subnormal, NaN only at 0x7f/0xff.
    #[test]
    fn float8_widens_exactly_for_every_bit_pattern() {
        for bits in 0..=u8::MAX {
            let (ours, reference) = (F8E4M3::from_bits(bits).widen(), e4m3fn_reference(bits));
            assert!(
                ours.to_bits() == reference.to_bits() || (ours.is_nan() && reference.is_nan()),
                "e4m3fn {bits:#04x}: {ours} against {reference}"
            );
            let (ours, reference) = (F8E5M2::from_bits(bits).widen(), F8E5M2::from_bits(bits));
            let reference = reference.to_f32();
            assert!(
                ours.to_bits() == reference.to_bits() || (ours.is_nan() && reference.is_nan()),
                "e5m2 {bits:#04x}: {ours} against {reference}"
            );
            assert_eq!(
                e5m2_to_f16(bits).to_f32().to_bits(),
                ours.to_bits(),
                "{bits:#04x}"
            );
        }
        assert_eq!(F8E4M3::from_bits(0x7e).widen(), 448.0);
        assert_eq!(F8E4M3::from_bits(0xfe).widen(), -448.0);
        assert_eq!(F8E4M3::from_bits(0x01).widen(), 2f32.powi(-9));
        let nans = (0..=u8::MAX)
            .filter(|&b| F8E4M3::from_bits(b).widen().is_nan())
            .collect::<Vec<_>>();
        assert_eq!(nans, [0x7f, 0xff]);
    }

    fn e4m3fn_reference(bits: u8) -> f32 {
        F8E4M3::from_bits(bits).to_f32()
    }
}
