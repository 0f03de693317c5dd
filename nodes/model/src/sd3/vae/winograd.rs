//! 3×3, stride-1, padding-1 convolutions (nearly all of the VAE decoder's
//! work) by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", <https://arxiv.org/abs/1509.09308>).
//!
//! Each 2×2 output tile comes from a 4×4 input patch `d` and the kernel `g` as
//! `Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A`: the element-wise product over the 16 positions
//! becomes 16 GEMMs of `[tiles, c_in] × [c_in, c_out]`, 16 multiplies per tile
//! and channel pair where direct convolution does 36, so 2.25× fewer
//! multiply-adds; the transforms are additions only. The kernel transform
//! `U = G g Gᵀ` is computed once, when the layer first runs.
//!
//! Work is split in bands of tile rows (all channels), one per task; each
//! task transforms its input rows into a per-thread buffer `V` (16 matrices
//! `[c_in, tiles]`), runs its 16 single-threaded GEMMs into `M`
//! (`[c_out, tiles]` each, gemm's native column-major layouts throughout)
//! and transforms `M` back into its output rows, bias added.
//!
//! Rounding: the transforms add at most four terms, so results differ from a
//! direct convolution by a few f32 ulps of the partial sums (the unit tests
//! compare with candle's `conv2d` at 1e-5, the VAE parity test with diffusers
//! at 1e-4).

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::sd3::cpu_storage::f32_values;
use crate::sd3::raw::gemm::{gemm, Mat, MatMut};
use crate::sd3::raw::shared_out::{SharedOut, Tile};
use crate::sd3::vector_math::simd_kernel;

/// Tiles per band, at most: the 16 `V` matrices of a band at 512 channels are 8 MB.
const BAND_TILES: usize = 256;
/// Bands per image, at least (where it has that many tile rows), so that the small
/// 32×32 levels still spread over threads. Banding does not depend on the thread
/// count, so neither do the results (a band's size sets its GEMMs' blocking).
const MIN_BANDS: usize = 4;
/// Kernel pairs `(c_out, c_in)` per task of the kernel transform (256 KB of transformed
/// values held before they are spread over the 16 planes).
const TRANSFORM_PAIRS: usize = 4096;

/// `U = G g Gᵀ` for every (c_out, c_in) pair of `weight: [c_out, c_in, 3, 3]` (f32, f16 or
/// bf16, contiguous, on the CPU), in f32, laid out `[16, c_out, c_in]`: position `ξ`'s
/// matrix, read by the GEMM as `[c_in, c_out]` column-major.
pub fn transform_kernel(weight: &Tensor) -> Result<Tensor> {
    let (c_out, c_in, k_h, k_w) = weight.dims4()?;
    if (k_h, k_w) != (3, 3) {
        candle_core::bail!("winograd: a 3×3 kernel expected, got {k_h}×{k_w}");
    }
    let mut u = vec![0f32; 16 * c_out * c_in];
    {
        let (storage, layout) = weight.storage_and_layout();
        let (Storage::Cpu(storage), Some((start, end))) = (&*storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("winograd: a contiguous CPU kernel expected");
        };
        match storage {
            CpuStorage::F32(g) => transform_into(&mut u, &g[start..end], |v| v),
            CpuStorage::F16(g) => transform_into(&mut u, &g[start..end], half::f16::to_f32),
            CpuStorage::BF16(g) => transform_into(&mut u, &g[start..end], half::bf16::to_f32),
            _ => candle_core::bail!("winograd: an f32, f16 or bf16 kernel expected"),
        }
    }
    Tensor::from_vec(u, (16, c_out, c_in), weight.device())
}

/// Fills `u` (`[16, pairs]`) from the 3×3 kernels `g` (`[pairs, 9]`), read through `widen`,
/// in column bands on all threads.
fn transform_into<T: Copy + Sync>(u: &mut [f32], g: &[T], widen: impl Fn(T) -> f32 + Sync) {
    let pairs = g.len() / 9;
    let bands = (0..pairs)
        .step_by(TRANSFORM_PAIRS)
        .map(|start| start..(start + TRANSFORM_PAIRS).min(pairs))
        .collect::<Vec<_>>();
    let tiles = SharedOut::new(u, pairs, std::iter::once(0..16).collect(), bands.clone())
        .into_tiles((0..bands.len()).map(|j| (0, j)));
    tiles.into_par_iter().for_each(|mut tile| {
        let cols = tile.cols();
        let band: Vec<[f32; 16]> = g[cols.start * 9..cols.end * 9]
            .chunks_exact(9)
            .map(|g| transform_pair(std::array::from_fn(|i| widen(g[i]))))
            .collect();
        for xi in 0..16 {
            for (to, pair) in tile.row_mut(xi).iter_mut().zip(&band) {
                *to = pair[xi];
            }
        }
    });
}

/// `G g Gᵀ` of one 3×3 kernel (row-major), row-major 4×4.
fn transform_pair(g: [f32; 9]) -> [f32; 16] {
    // G g: 4×3, then (G g) Gᵀ: 4×4.
    let gg: [[f32; 3]; 4] =
        std::array::from_fn(|r| std::array::from_fn(|c| g_row(r, [g[c], g[3 + c], g[6 + c]])));
    std::array::from_fn(|xi| g_row(xi % 4, gg[xi / 4]))
}

/// Row `r` of `G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]` times `v`.
fn g_row(r: usize, v: [f32; 3]) -> f32 {
    match r {
        0 => v[0],
        1 => 0.5 * (v[0] + v[1] + v[2]),
        2 => 0.5 * (v[0] - v[1] + v[2]),
        _ => v[2],
    }
}

/// The convolution op: operands input `[b, c_in, h, w]`, `U` (from
/// [`transform_kernel`]) and bias `[c_out]`.
pub struct WinogradConv;

impl CustomOp3 for WinogradConv {
    fn name(&self) -> &'static str {
        "winograd-conv2d"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_l: &Layout,
        u: &CpuStorage,
        u_l: &Layout,
        bias: &CpuStorage,
        bias_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, c_in, h, w) = input_l.shape().dims4()?;
        let (positions, c_out, u_c_in) = u_l.shape().dims3()?;
        if positions != 16 || u_c_in != c_in || bias_l.dims() != [c_out] {
            candle_core::bail!(
                "winograd conv2d: input {:?}, kernel {:?} and bias {:?} do not fit together",
                input_l.shape(),
                u_l.shape(),
                bias_l.shape()
            );
        }
        let plan = Plan::new(c_in, c_out, h, w);
        let out = plan.run(
            batch,
            f32_values(self.name(), input, input_l)?,
            f32_values(self.name(), u, u_l)?,
            f32_values(self.name(), bias, bias_l)?,
        );
        Ok((CpuStorage::F32(out), Shape::from((batch, c_out, h, w))))
    }
}

/// Shapes and banding of one convolution.
#[derive(Debug, Clone, Copy)]
struct Plan {
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    /// Tiles per row and per column of the output.
    tiles_x: usize,
    tiles_y: usize,
    /// Tile rows per band.
    band_rows: usize,
}

impl Plan {
    fn new(c_in: usize, c_out: usize, h: usize, w: usize) -> Self {
        let (tiles_x, tiles_y) = (w.div_ceil(2), h.div_ceil(2));
        let band_rows = (BAND_TILES / tiles_x).clamp(1, tiles_y.div_ceil(MIN_BANDS).max(1));
        Self {
            c_in,
            c_out,
            h,
            w,
            tiles_x,
            tiles_y,
            band_rows,
        }
    }

    fn run(&self, batch: usize, input: &[f32], u: &[f32], bias: &[f32]) -> Vec<f32> {
        let bands = self.tiles_y.div_ceil(self.band_rows);
        let mut out = vec![0f32; batch * self.c_out * self.h * self.w];
        let image_len = self.c_in * self.h * self.w;
        let band_rows = |band: usize| {
            let first = band * self.band_rows;
            first..(first + self.band_rows).min(self.tiles_y)
        };
        // The output as `[batch · c_out, h · w]`: a task's tile is one image's channels × the
        // image rows of one band of tile rows.
        let pixels = (0..bands)
            .map(|band| {
                let rows = band_rows(band);
                2 * rows.start * self.w..(2 * rows.end).min(self.h) * self.w
            })
            .collect();
        let shape = (batch, self.c_out, self.h * self.w);
        let tiles = SharedOut::image_bands(&mut out, shape, pixels);
        tiles
            .into_par_iter()
            .for_each_init(Scratch::default, |scratch, mut tile| {
                let (image, band) = tile.index();
                let input = &input[image * image_len..][..image_len];
                self.band(input, u, bias, band_rows(band), scratch, &mut tile);
            });
        out
    }

    /// Tile rows `rows` of one image, all channels (the output tile `out`).
    fn band(
        &self,
        input: &[f32],
        u: &[f32],
        bias: &[f32],
        rows: std::ops::Range<usize>,
        scratch: &mut Scratch,
        out: &mut Tile<'_>,
    ) {
        let tiles = rows.len() * self.tiles_x;
        scratch.resize(
            16 * self.c_in * tiles,
            16 * self.c_out * tiles,
            2 * self.tiles_x + 2,
        );
        self.transform_input(input, rows.clone(), tiles, scratch);
        let (v, m) = (&scratch.v, &mut scratch.m);
        for position in 0..16 {
            let v = &v[position * self.c_in * tiles..][..self.c_in * tiles];
            let u = &u[position * self.c_out * self.c_in..][..self.c_out * self.c_in];
            let m = &mut m[position * self.c_out * tiles..][..self.c_out * tiles];
            position_gemm(tiles, self.c_in, self.c_out, v, u, m);
        }
        self.transform_output(&scratch.m, bias, rows, tiles, out);
    }

    /// `V[ξ][ci][tile] = (Bᵀ d B)[ξ]` for every tile of the band and input
    /// channel, `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`.
    /// Rows are first combined whole (`Bᵀ d`, in `scratch.rows`, zero-padded
    /// by one pixel left and as needed right), then pairs of columns.
    fn transform_input(
        &self,
        input: &[f32],
        rows: std::ops::Range<usize>,
        tiles: usize,
        scratch: &mut Scratch,
    ) {
        let padded = 2 * self.tiles_x + 2;
        let plane = self.h * self.w;
        for ci in 0..self.c_in {
            let plane = &input[ci * plane..][..plane];
            for (band_row, ty) in rows.clone().enumerate() {
                // Input rows 2·ty − 1 .. 2·ty + 3, zero outside the image.
                let row = |i: usize, dst: &mut [f32]| {
                    dst.fill(0.0);
                    if let Some(y) = (2 * ty + i).checked_sub(1).filter(|&y| y < self.h) {
                        dst[1..=self.w].copy_from_slice(&plane[y * self.w..][..self.w]);
                    }
                };
                let [d0, d1, d2, d3, t0, t1, t2, t3] = &mut scratch.rows;
                for (i, d) in [&mut *d0, &mut *d1, &mut *d2, &mut *d3]
                    .into_iter()
                    .enumerate()
                {
                    row(i, &mut d[..padded]);
                }
                combine_rows(
                    &mut t0[..padded],
                    &mut t1[..padded],
                    &mut t2[..padded],
                    &mut t3[..padded],
                    [&d0[..padded], &d1[..padded], &d2[..padded], &d3[..padded]],
                );
                let first_tile = band_row * self.tiles_x;
                let [c0, c1, c2, c3] = &mut scratch.columns;
                for (r, t) in [&*t0, &*t1, &*t2, &*t3].into_iter().enumerate() {
                    let n = self.tiles_x;
                    combine_columns(
                        &t[..2 * n + 2],
                        [&mut c0[..n], &mut c1[..n], &mut c2[..n], &mut c3[..n]],
                    );
                    for (c, column) in [&*c0, &*c1, &*c2, &*c3].into_iter().enumerate() {
                        let at = ((r * 4 + c) * self.c_in + ci) * tiles + first_tile;
                        scratch.v[at..at + n].copy_from_slice(&column[..n]);
                    }
                }
            }
        }
    }

    /// `out[co][2ty + i][2tx + j] = (Aᵀ M A)[i][j] + bias[co]`,
    /// `Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]`, clipped at odd image edges.
    fn transform_output(
        &self,
        m: &[f32],
        bias: &[f32],
        rows: std::ops::Range<usize>,
        tiles: usize,
        out: &mut Tile<'_>,
    ) {
        let n = self.tiles_x;
        // The tile's columns start at image row `2 · rows.start`.
        let first_row = 2 * rows.start;
        let mut row_pair = vec![0f32; 4 * n];
        for (co, &b) in bias.iter().enumerate() {
            for (band_row, ty) in rows.clone().enumerate() {
                let first = band_row * n;
                let m: [&[f32]; 16] =
                    std::array::from_fn(|p| &m[(p * self.c_out + co) * tiles + first..][..n]);
                let (top, bottom) = row_pair.split_at_mut(2 * n);
                inverse_tiles(m, b, top, bottom);
                for (i, row) in [&*top, &*bottom].into_iter().enumerate() {
                    let y = 2 * ty + i;
                    if y < self.h {
                        let dst = &mut out.row_mut(co)[(y - first_row) * self.w..][..self.w];
                        dst.copy_from_slice(&row[..self.w]);
                    }
                }
            }
        }
    }
}

simd_kernel! {
    /// One tile row of one output channel: `Aᵀ M A + bias` with
    /// `Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]`, tile `tx` written to columns
    /// `2tx, 2tx + 1` of the `top` and `bottom` output rows.
    fn inverse_tiles(m: [&[f32]; 16], bias: f32, top: &mut [f32], bottom: &mut [f32]) {
        let n = top.len() / 2;
        let m = m.map(|row| &row[..n]);
        let (top, bottom) = (&mut top[..2 * n], &mut bottom[..2 * n]);
        for tx in 0..n {
            // s = Aᵀ m: column j of rows 0 and 1.
            let s0 = |j: usize| m[j][tx] + m[4 + j][tx] + m[8 + j][tx];
            let s1 = |j: usize| m[4 + j][tx] - m[8 + j][tx] - m[12 + j][tx];
            let (a0, a1, a2, a3) = (s0(0), s0(1), s0(2), s0(3));
            let (b0, b1, b2, b3) = (s1(0), s1(1), s1(2), s1(3));
            top[2 * tx] = a0 + a1 + a2 + bias;
            top[2 * tx + 1] = a1 - a2 - a3 + bias;
            bottom[2 * tx] = b0 + b1 + b2 + bias;
            bottom[2 * tx + 1] = b1 - b2 - b3 + bias;
        }
    }
}

simd_kernel! {
    /// `(Bᵀ d) B` along a padded row `t` of `Bᵀ d`: tile `tx` reads
    /// `t[2tx .. 2tx + 4]`.
    fn combine_columns(t: &[f32], c: [&mut [f32]; 4]) {
        let [c0, c1, c2, c3] = c;
        let n = c0.len();
        for tx in 0..n {
            let x = 2 * tx;
            let (a, b, c, d) = (t[x], t[x + 1], t[x + 2], t[x + 3]);
            c0[tx] = a - c;
            c1[tx] = b + c;
            c2[tx] = c - b;
            c3[tx] = b - d;
        }
    }
}

/// `Bᵀ d` over whole padded rows: `t0 = d0 − d2`, `t1 = d1 + d2`,
/// `t2 = d2 − d1`, `t3 = d1 − d3`.
fn combine_rows(
    t0: &mut [f32],
    t1: &mut [f32],
    t2: &mut [f32],
    t3: &mut [f32],
    [d0, d1, d2, d3]: [&[f32]; 4],
) {
    for i in 0..t0.len() {
        t0[i] = d0[i] - d2[i];
        t1[i] = d1[i] + d2[i];
        t2[i] = d2[i] - d1[i];
        t3[i] = d1[i] - d3[i];
    }
}

/// One position's product: `m[co][tile] = Σ_ci v[ci][tile] · u[co][ci]`.
fn position_gemm(tiles: usize, c_in: usize, c_out: usize, v: &[f32], u: &[f32], m: &mut [f32]) {
    gemm(
        MatMut::new(m, (tiles, c_out), (1, tiles)),
        Mat::new(v, 0, (tiles, c_in), (1, tiles)),
        Mat::new(u, 0, (c_in, c_out), (1, c_in)),
        1.0,
    );
}

/// Per-thread buffers, grown to the largest band seen.
#[derive(Default)]
struct Scratch {
    v: Vec<f32>,
    m: Vec<f32>,
    /// Four padded input rows and their four combinations.
    rows: [Vec<f32>; 8],
    /// One padded row's four column combinations.
    columns: [Vec<f32>; 4],
}

impl Scratch {
    fn resize(&mut self, v: usize, m: usize, row: usize) {
        self.v.resize(self.v.len().max(v), 0.0);
        self.m.resize(self.m.len().max(m), 0.0);
        for r in self.rows.iter_mut().chain(&mut self.columns) {
            r.resize(r.len().max(row), 0.0);
        }
    }
}
