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
use crate::sd3::raw::gemm::{gemm, Mat};
use crate::sd3::raw::shared_out::{SharedOut, Tile};

/// Output columns (rows of `W`) widened per task: at SD3's widths (1,536 to 6,144 inputs) the
/// scratch stays within 1.5 MB, and a layer still splits into dozens of tasks.
const COLUMNS_PER_TASK: usize = 64;

thread_local! {
    /// The widened block of `W` (`[block columns, in]`), reused from task to task.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `y = scale · x Wᵀ`: `x` `[rows, inp]`, `w` `[out, inp]` -> `[rows, out]`.
pub fn x_wt<R: WeightRows>(x: &[f32], rows: usize, w: &R, scale: f32) -> Vec<f32> {
    let (out, inp) = w.shape();
    assert!(x.len() == rows * inp, "gemm x_wt: shape mismatch");
    let mut y = vec![0f32; rows * out];
    if rows == 0 || out == 0 || inp == 0 {
        return y;
    }
    let tasks = out.div_ceil(COLUMNS_PER_TASK);
    let columns = (0..tasks)
        .map(|task| task * COLUMNS_PER_TASK..((task + 1) * COLUMNS_PER_TASK).min(out))
        .collect();
    let tiles = SharedOut::new(&mut y, out, std::iter::once(0..rows).collect(), columns)
        .into_tiles((0..tasks).map(|t| (0, t)));
    tiles.into_par_iter().for_each(|mut tile| {
        let first = tile.cols().start;
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.resize(tile.cols().len() * inp, 0.0);
            widen_rows(w, first, scratch);
            block_gemm(&mut tile, inp, x, scratch, scale);
        });
    });
    y
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
