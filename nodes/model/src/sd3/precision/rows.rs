//! A weight `W` `[out, in]` as the kernels read it: rows widened to f32 on demand, from a stored
//! float format ([`StoredRows`]) or from int8 blocks ([`super::int8::Int8Rows`]).

use super::format::StoredFloat;

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
    #[cfg(target_arch = "x86_64")]
    if super::format::avx2_fma() {
        #[allow(unsafe_code)]
        // SAFETY: the running CPU supports AVX2 and FMA (checked by `avx2_fma`).
        unsafe {
            widen_rows_avx2(rows, first, dst)
        };
        return;
    }
    rows.widen_rows(first, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn widen_rows_avx2<R: WeightRows>(rows: &R, first: usize, dst: &mut [f32]) {
    rows.widen_rows(first, dst)
}
