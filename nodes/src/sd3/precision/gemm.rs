//! Many-row products `y = s · x Wᵀ` with a weight `W` `[out, in]` in its stored format: each
//! task widens a block of `W`'s rows (a block of output columns) into a per-thread f32 scratch
//! and runs one single-threaded `gemm` call over all rows of `x` against it.
//!
//! The arithmetic is gemm's f32 GEMM on the exactly widened values, so the result is the f32
//! product of the stored values (up to summation order); widening costs `out · in` conversions
//! per call against `2 · rows · out · in` flops, small for the MMDiT's thousands of rows.

use std::cell::RefCell;

use rayon::prelude::*;

use super::format::{widen_chunk, StoredFloat};
use crate::sd3::cpu_storage::SharedOut;

/// Output columns (rows of `W`) widened per task: at SD3's widths (1,536 to 6,144 inputs) the
/// scratch stays within 1.5 MB, and a layer still splits into dozens of tasks.
const COLUMNS_PER_TASK: usize = 64;

thread_local! {
    /// The widened block of `W` (`[block columns, in]`), reused from task to task.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `y = scale · x Wᵀ`: `x` `[rows, inp]`, `w` `[out, inp]` -> `[rows, out]`.
pub fn x_wt<W: StoredFloat>(
    x: &[f32],
    rows: usize,
    w: &[W],
    (out, inp): (usize, usize),
    scale: f32,
) -> Vec<f32> {
    assert!(
        x.len() == rows * inp && w.len() == out * inp,
        "gemm x_wt: shape mismatch"
    );
    let mut y = vec![0f32; rows * out];
    if rows == 0 || out == 0 || inp == 0 {
        return y;
    }
    let shared = SharedOut::new(&mut y);
    w.par_chunks(COLUMNS_PER_TASK * inp)
        .enumerate()
        .for_each(|(task, block)| {
            SCRATCH.with_borrow_mut(|scratch| {
                scratch.resize(block.len(), 0.0);
                widen_chunk(block, scratch);
                let first = task * COLUMNS_PER_TASK;
                block_gemm(&shared, first, (rows, out, inp), x, scratch, scale);
            });
        });
    y
}

/// `y[:, first..first + n] = scale · x · scratchᵀ` for a widened block `scratch` `[n, inp]`.
fn block_gemm(
    y: &SharedOut,
    first: usize,
    (rows, out, inp): (usize, usize, usize),
    x: &[f32],
    scratch: &[f32],
    scale: f32,
) {
    let columns = scratch.len() / inp;
    assert!(x.len() == rows * inp && first + columns <= out);
    // SAFETY: the assert bounds every read of `x` and `scratch`; the elements written,
    // `y[r · out + first + c]` for `r < rows`, `c < columns`, lie inside `y` (`rows · out`
    // long) and belong to this task's columns only.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            rows,
            columns,
            inp,
            y.ptr(first),
            1,
            out as isize,
            false,
            x.as_ptr(),
            1,
            inp as isize,
            scratch.as_ptr(),
            inp as isize,
            1,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
