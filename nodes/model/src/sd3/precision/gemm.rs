//! Many-row products `y = s · x Wᵀ` with a weight `W` `[out, in]` in its stored format or in
//! int8 blocks ([`WeightRows`]): each task widens a block of `W`'s rows (a block of output
//! columns) into a per-thread f32 scratch and runs one single-threaded `gemm` call over all
//! rows of `x` against it.
//!
//! The arithmetic is gemm's f32 GEMM on the exactly widened values, so the result is the f32
//! product of the stored values (up to summation order); widening costs `out · in` conversions
//! per call against `2 · rows · out · in` flops, small for the MMDiT's thousands of rows.

use std::cell::RefCell;

use rayon::prelude::*;

use super::rows::{widen_rows, WeightRows};
use crate::sd3::raw::bf16::{bf16_pair, panel_product, Bf16Rows, PANEL};
use crate::sd3::raw::gemm::{gemm, Mat};
use crate::sd3::raw::shared_out::{SharedOut, Tile};
use crate::sd3::raw::simd::{dispatch, Kernel};

/// Output columns (rows of `W`) widened per task: at SD3's widths (1,536 to 6,144 inputs) the
/// scratch stays within 1.5 MB, and a layer still splits into dozens of tasks.
const COLUMNS_PER_TASK: usize = 64;

thread_local! {
    /// The widened block of `W` (`[block columns, in]`), reused from task to task.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// [`x_wt_bf16`]'s panel of `W` in bf16 pairs (`[in / 2, PANEL]`) and one widened row.
    static PANEL_SCRATCH: RefCell<(Vec<u32>, Vec<f32>)> = const {
        RefCell::new((Vec::new(), Vec::new()))
    };
}

/// The output columns of `out` in tasks of [`COLUMNS_PER_TASK`], all `rows` in each.
fn column_tiles(y: &mut [f32], rows: usize, out: usize) -> Vec<Tile<'_>> {
    let tasks = out.div_ceil(COLUMNS_PER_TASK);
    let columns = (0..tasks)
        .map(|task| task * COLUMNS_PER_TASK..((task + 1) * COLUMNS_PER_TASK).min(out))
        .collect();
    SharedOut::new(y, out, std::iter::once(0..rows).collect(), columns)
        .into_tiles((0..tasks).map(|t| (0, t)))
}

/// `y = scale · x Wᵀ`: `x` `[rows, inp]`, `w` `[out, inp]` -> `[rows, out]`.
pub fn x_wt<R: WeightRows>(x: &[f32], rows: usize, w: &R, scale: f32) -> Vec<f32> {
    let (out, inp) = w.shape();
    assert!(x.len() == rows * inp, "gemm x_wt: shape mismatch");
    let mut y = vec![0f32; rows * out];
    if rows == 0 || out == 0 || inp == 0 {
        return y;
    }
    column_tiles(&mut y, rows, out)
        .into_par_iter()
        .for_each(|mut tile| {
            let first = tile.cols().start;
            SCRATCH.with_borrow_mut(|scratch| {
                scratch.resize(tile.cols().len() * inp, 0.0);
                widen_rows(w, first, scratch);
                block_gemm(&mut tile, inp, x, scratch, scale);
            });
        });
    y
}

/// [`x_wt`] in bf16 with f32 sums: `x` and the widened weight rounded to bf16 (relative
/// error at most 2⁻⁹ each, so `|Δy| ≤ 2⁻⁸ · Σ|x_i w_i|` beyond f32 summation), multiplied two
/// by two per f32 lane ([`crate::sd3::raw::bf16`]). `None` where the CPU has no AVX-512 BF16,
/// which [`x_wt`] then does in f32 at half the multiply-adds per instruction.
pub fn x_wt_bf16<R: WeightRows>(x: &[f32], rows: usize, w: &R, scale: f32) -> Option<Vec<f32>> {
    if !crate::sd3::raw::bf16::available() {
        return None;
    }
    let (out, inp) = w.shape();
    assert!(x.len() == rows * inp, "gemm x_wt_bf16: shape mismatch");
    let mut y = vec![0f32; rows * out];
    if rows == 0 || out == 0 || inp == 0 {
        return Some(y);
    }
    let a = Bf16Rows::new(x, rows, inp);
    column_tiles(&mut y, rows, out)
        .into_par_iter()
        .for_each(|mut tile| {
            let cols = tile.cols();
            PANEL_SCRATCH.with_borrow_mut(|(panel, row)| {
                panel.resize(a.depth() * PANEL, 0);
                row.resize(inp, 0.0);
                for first in cols.clone().step_by(PANEL) {
                    let columns = PANEL.min(cols.end - first);
                    fill_panel(w, first, columns, row, panel);
                    panel_product(&a, panel, scale, &mut tile, first - cols.start, columns);
                }
            });
        });
    Some(y)
}

/// `panel(p, c)` = rows `first + c` of `w` at inputs `2p, 2p + 1` as a bf16 pair, for
/// `c < columns`, zeros in the columns after; `row` holds one widened row.
fn fill_panel<R: WeightRows>(
    w: &R,
    first: usize,
    columns: usize,
    row: &mut [f32],
    panel: &mut [u32],
) {
    struct Fill<'a, R>(&'a R, usize, usize, &'a mut [f32], &'a mut [u32]);
    impl<R: WeightRows> Kernel for Fill<'_, R> {
        type Output = ();
        #[inline(always)]
        fn run(self) {
            let Fill(w, first, columns, row, panel) = self;
            for c in 0..PANEL {
                if c < columns {
                    w.widen_rows(first + c, row);
                } else {
                    row.fill(0.0);
                }
                let (two, odd) = row.as_chunks::<2>();
                for (pair, v) in panel[c..].iter_mut().step_by(PANEL).zip(two) {
                    *pair = bf16_pair(v[0], v[1]);
                }
                if let Some(last) = odd.first() {
                    panel[two.len() * PANEL + c] = bf16_pair(*last, 0.0);
                }
            }
        }
    }
    dispatch(Fill(w, first, columns, row, panel))
}

/// `y[:, first..first + n] = scale · x · scratchᵀ` for a widened block `scratch` `[n, inp]`
/// and `tile` columns `first..first + n` of `y`, all rows.
fn block_gemm(tile: &mut Tile<'_>, inp: usize, x: &[f32], scratch: &[f32], scale: f32) {
    let (rows, columns) = (tile.rows().len(), tile.cols().len());
    gemm(
        tile.mat_mut(),
        Mat::new(x, 0, (rows, inp), (inp, 1)),
        Mat::new(scratch, 0, (inp, columns), (1, inp)),
        scale,
    );
}
