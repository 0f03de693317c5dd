//! Products in bf16 with f32 sums, AVX-512 BF16's `vdpbf16ps` (two multiply-adds per f32 lane,
//! twice the multiply-adds of an f32 FMA per instruction), for the int8 weights' many-row
//! products (`sd3::precision::gemm`).
//!
//! Operands are pairs of bf16 values in a `u32` (the lower `k`, even, in the low half), as the
//! instruction reads them: activations row by row ([`Bf16Rows`], `[rows, k / 2]`), weights in
//! panels of [`PANEL`] output columns (`[k / 2, PANEL]`, built by the caller with
//! [`bf16_pair`]). Where the CPU lacks AVX-512 BF16, [`panel_product`] computes the same sums
//! of the same bf16 values in f32 on the scalar path ([`available`] says which runs).

use super::shared_out::Tile;
use super::simd::{dispatch, Kernel};

/// Output columns of a weight panel: two AVX-512 registers of f32 sums.
pub const PANEL: usize = 32;

/// Rows of activations per register block (24 accumulators of the 32 registers); [`Bf16Rows`]
/// pads its rows to a multiple of it.
const ROWS: usize = 12;

/// Whether the running CPU has AVX-512 F, BW and BF16, which [`panel_product`] uses.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `v` rounded to the nearest bf16 (ties to even), as its bits; a NaN stays a (quiet) NaN.
#[inline(always)]
pub fn bf16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    if v.is_nan() {
        ((b >> 16) | 0x40) as u16
    } else {
        rounded
    }
}

/// `lo` and `hi` rounded to bf16 and paired: `lo` in the low half.
#[inline(always)]
pub fn bf16_pair(lo: f32, hi: f32) -> u32 {
    u32::from(bf16_bits(lo)) | (u32::from(bf16_bits(hi)) << 16)
}

/// The f32 value of the bf16 in the low (`shift` 0) or high (`shift` 16) half of `pair`.
#[inline(always)]
fn half_of(pair: u32, shift: u32) -> f32 {
    f32::from_bits(((pair >> shift) & 0xffff) << 16)
}

/// Activations `[rows, k]` rounded to bf16 pairs `[padded rows, k.div_ceil(2)]`: the rows
/// padded with zeros to a multiple of the register block, an odd `k` with a zero.
pub struct Bf16Rows {
    pairs: Vec<u32>,
    rows: usize,
    depth: usize,
}

impl Bf16Rows {
    /// `x` `[rows, k]`; panics unless `x.len() == rows · k`.
    pub fn new(x: &[f32], rows: usize, k: usize) -> Self {
        assert_eq!(x.len(), rows * k, "bf16 rows: shape mismatch");
        let depth = k.div_ceil(2);
        let mut pairs = vec![0u32; rows.next_multiple_of(ROWS) * depth];
        struct Round<'a>(&'a [f32], &'a mut [u32], usize);
        impl Kernel for Round<'_> {
            type Output = ();
            #[inline(always)]
            fn run(self) {
                let Round(x, pairs, k) = self;
                for (x, pairs) in x
                    .chunks_exact(k.max(1))
                    .zip(pairs.chunks_exact_mut(k.div_ceil(2)))
                {
                    let (two, odd) = x.as_chunks::<2>();
                    for (p, v) in pairs.iter_mut().zip(two) {
                        *p = bf16_pair(v[0], v[1]);
                    }
                    if let Some(last) = odd.first() {
                        pairs[two.len()] = bf16_pair(*last, 0.0);
                    }
                }
            }
        }
        if k > 0 {
            dispatch(Round(x, &mut pairs, k));
        }
        Self { pairs, rows, depth }
    }

    /// Pairs per row: `k.div_ceil(2)`.
    pub fn depth(&self) -> usize {
        self.depth
    }
}

/// `tile(r, offset + c) = scale · Σ_p a(r, p) · panel(p, c)` for every row `r` of `tile` (the
/// rows of `a`, which must number `tile.rows().len()`) and `c < columns`: `panel` `[a.depth(),
/// PANEL]` bf16 pairs, summed in f32 (each pair's two products at once, the pairs in order).
/// Panics unless the shapes agree and `offset + columns` lies within the tile.
pub fn panel_product(
    a: &Bf16Rows,
    panel: &[u32],
    scale: f32,
    tile: &mut Tile<'_>,
    offset: usize,
    columns: usize,
) {
    let depth = a.depth;
    assert!(
        panel.len() == depth * PANEL
            && columns <= PANEL
            && offset + columns <= tile.cols().len()
            && a.rows == tile.rows().len(),
        "bf16 panel product: shapes disagree"
    );
    let mut block = [[0f32; PANEL]; ROWS];
    for first in (0..a.rows).step_by(ROWS) {
        let rows = &a.pairs[first * depth..][..ROWS * depth];
        block_product(rows, depth, panel, &mut block);
        for (r, sums) in block.iter().enumerate().take(a.rows - first) {
            let out = &mut tile.row_mut(first + r)[offset..offset + columns];
            for (o, s) in out.iter_mut().zip(sums) {
                *o = scale * s;
            }
        }
    }
}

/// `block(r, c) = Σ_p rows(r, p) · panel(p, c)` for a register block of rows `[ROWS, depth]`.
fn block_product(rows: &[u32], depth: usize, panel: &[u32], block: &mut [[f32; PANEL]; ROWS]) {
    assert!(rows.len() == ROWS * depth && panel.len() == depth * PANEL);
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has the features `block_bf16` was compiled for; `rows` holds
        // `ROWS · depth` pairs and `panel` `depth · PANEL` (asserted), all it reads.
        unsafe { block_bf16(rows.as_ptr(), depth, panel.as_ptr(), block) };
        return;
    }
    for (r, sums) in block.iter_mut().enumerate() {
        let row = &rows[r * depth..][..depth];
        *sums = [0.0; PANEL];
        for (&a, b) in row.iter().zip(panel.chunks_exact(PANEL)) {
            let (a0, a1) = (half_of(a, 0), half_of(a, 16));
            for (s, &b) in sums.iter_mut().zip(b) {
                *s += a0 * half_of(b, 0) + a1 * half_of(b, 16);
            }
        }
    }
}

/// [`block_product`] with `vdpbf16ps`: each step of `p` loads the panel's two registers of
/// pairs and, for every row, broadcasts its pair `(r, p)` into both products.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and BF16; `rows` must point to `ROWS · depth` readable
/// `u32`, `panel` to `depth · PANEL`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn block_bf16(
    rows: *const u32,
    depth: usize,
    panel: *const u32,
    block: &mut [[f32; PANEL]; ROWS],
) {
    use std::arch::x86_64::*;
    let mut sums = [[_mm512_setzero_ps(); 2]; ROWS];
    for p in 0..depth {
        // SAFETY: every read is at `p < depth` and `r < ROWS`, inside the extents the caller
        // vouches for; unaligned loads. The transmutes between `__m512i` and `__m512bh`
        // reinterpret 64 bytes.
        unsafe {
            let b = panel.add(p * PANEL);
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(16).cast()));
            for (r, sums) in sums.iter_mut().enumerate() {
                let a: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*rows.add(r * depth + p) as i32));
                sums[0] = _mm512_dpbf16_ps(sums[0], a, b0);
                sums[1] = _mm512_dpbf16_ps(sums[1], a, b1);
            }
        }
    }
    for (out, sums) in block.iter_mut().zip(&sums) {
        let (lo, hi) = out.split_at_mut(16);
        // SAFETY: each half of `out` holds 16 f32; unaligned stores.
        unsafe {
            _mm512_storeu_ps(lo.as_mut_ptr(), sums[0]);
            _mm512_storeu_ps(hi.as_mut_ptr(), sums[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::shared_out::SharedOut;
    use super::*;
    use std::iter::once;

    #[test]
    fn rounding_to_bf16_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to even (1).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(-2.5), 0xc020);
        assert!(f32::from_bits(u32::from(bf16_bits(f32::NAN)) << 16).is_nan());
        assert_eq!(bf16_bits(f32::INFINITY), 0x7f80);
    }

    /// The vector kernel (where the CPU has it) and the scalar path give the sums of the bf16
    /// values, on ragged rows, an odd depth and a partial panel.
    #[test]
    fn panel_products_sum_the_bf16_values() {
        let (rows, k, columns) = (29, 37, 21);
        let value = |i: usize| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 3.0;
        let x: Vec<f32> = (0..rows * k).map(value).collect();
        let w: Vec<f32> = (0..columns * k).map(|i| value(i + 5)).collect();
        let a = Bf16Rows::new(&x, rows, k);
        let depth = a.depth();
        let mut panel = vec![0u32; depth * PANEL];
        for c in 0..columns {
            for p in 0..depth {
                let at = |kk: usize| if kk < k { w[c * k + kk] } else { 0.0 };
                panel[p * PANEL + c] = bf16_pair(at(2 * p), at(2 * p + 1));
            }
        }
        let width = columns + 3;
        let mut y = vec![f32::NAN; rows * width];
        let mut tiles = SharedOut::new(
            &mut y,
            width,
            once(0..rows).collect(),
            once(0..width).collect(),
        )
        .into_tiles([(0, 0)]);
        panel_product(&a, &panel, 0.5, &mut tiles[0], 2, columns);
        let round = |v: f32| f32::from_bits(u32::from(bf16_bits(v)) << 16);
        for r in 0..rows {
            for c in 0..columns {
                let exact: f64 = (0..k)
                    .map(|kk| f64::from(round(x[r * k + kk])) * f64::from(round(w[c * k + kk])))
                    .sum();
                let got = f64::from(y[r * width + 2 + c]);
                assert!(
                    (got - 0.5 * exact).abs() < 1e-5,
                    "({r}, {c}): {got} {exact}"
                );
            }
            assert!(y[r * width].is_nan() && y[r * width + 2 + columns].is_nan());
        }
    }
}
