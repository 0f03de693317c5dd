//! A weight `W` `[out, in]` as the kernels read it: rows widened to f32 on demand, from a stored
//! float format ([`StoredRows`]) or from int8 blocks ([`super::int8::Int8Rows`]).

use super::format::StoredFloat;
use crate::sd3::raw::simd::{dispatch_fma, FmaKernel};

/// A weight whose rows the kernels widen to f32 as they go.
pub trait WeightRows: Sync {
    /// `(out, in)`: rows, and values per row.
    fn shape(&self) -> (usize, usize);

    /// Rows `first..first + dst.len() / in`, widened into `dst` (a whole number of rows).
    fn widen_rows(&self, first: usize, dst: &mut [f32]);
}

/// A weight in a stored float format (f16, bf16, float8, f32), `[out, in]`, row-major.
pub struct StoredRows<'a, W> {
    w: &'a [W],
    out: usize,
    inp: usize,
}

impl<'a, W: StoredFloat> StoredRows<'a, W> {
    /// `w` holds `out · inp` values (asserted: the callers check shapes first).
    pub fn new(w: &'a [W], out: usize, inp: usize) -> Self {
        assert_eq!(w.len(), out * inp, "stored rows: shape mismatch");
        Self { w, out, inp }
    }
}

impl<W: StoredFloat> WeightRows for StoredRows<'_, W> {
    fn shape(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    #[inline(always)]
    fn widen_rows(&self, first: usize, dst: &mut [f32]) {
        W::widen_into(&self.w[first * self.inp..][..dst.len()], dst);
    }
}

/// [`WeightRows::widen_rows`], compiled for AVX2 + FMA where the CPU has them.
pub fn widen_rows<R: WeightRows>(rows: &R, first: usize, dst: &mut [f32]) {
    struct Widen<'a, R>(&'a R, usize, &'a mut [f32]);
    impl<R: WeightRows> FmaKernel for Widen<'_, R> {
        type Output = ();
        #[inline(always)]
        fn run<const FMA: bool>(self) {
            self.0.widen_rows(self.1, self.2)
        }
    }
    dispatch_fma(Widen(rows, first, dst))
}
