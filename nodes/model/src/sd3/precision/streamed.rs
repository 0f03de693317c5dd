//! Few-row products of f32 activations with weights in their stored format ([`super::format`])
//! or, for `x Wᵀ`, in int8 blocks ([`super::int8`]),
//! computed in f32: each weight is widened exactly to f32 inside the kernel, so the result is
//! the f32 product with the stored values, while memory traffic shrinks with the format.
//!
//! For the few rows of the CreTok step (the token and what follows it) a product is a stream
//! over the weight, split into blocks of rows: [`x_wt`] (`x Wᵀ`; each output is one task's dot
//! product) and [`g_w`] (`g W`; per-block partial sums added in block order). Blocks and
//! summation order are fixed, so results do not depend on the thread count. On x86-64 the
//! loops are compiled for AVX2 + FMA and f16 is widened with F16C when the CPU has them
//! (detected at run time); elsewhere the same code runs with plain mul + add.
//! Many-row products take [`super::gemm`] instead.

use rayon::prelude::*;

use super::format::StoredFloat;
use super::rows::WeightRows;
use crate::sd3::raw::simd::{dispatch_fma, FmaKernel};

/// Rows of `W` per task in [`x_wt`].
const ROW_BLOCK: usize = 16;
/// Tasks of [`g_w`]; each adds up a partial `dx`, so few (but enough for the threads).
const G_W_BLOCKS: usize = 16;
/// Columns of `W` per accumulator chunk in [`g_w`] (2 KB of f32: four rows and the
/// accumulators of a few input rows stay in L1).
const COL_CHUNK: usize = 512;
/// Accumulator lanes of a dot product: 4 AVX registers of independent partial sums (more
/// spill to the stack).
const LANES: usize = 32;

#[inline(always)]
fn mul_add<const FUSED: bool>(a: f32, b: f32, acc: f32) -> f32 {
    if FUSED {
        a.mul_add(b, acc)
    } else {
        a * b + acc
    }
}

/// `y = x Wᵀ`: `x` `[rows, inp]`, `w` `[out, inp]` (stored floats or int8 blocks) ->
/// `[rows, out]`.
pub fn x_wt<R: WeightRows>(x: &[f32], rows: usize, w: &R) -> Vec<f32> {
    let (out, inp) = w.shape();
    assert!(x.len() == rows * inp, "x_wt: shape mismatch");
    if rows == 0 || out == 0 || inp == 0 {
        return vec![0f32; rows * out];
    }
    // Transposed result `[out, rows]`: each task owns a contiguous run of output rows.
    let mut yt = vec![0f32; out * rows];
    yt.par_chunks_mut(ROW_BLOCK * rows)
        .enumerate()
        .for_each(|(b, yt)| x_wt_block_dispatch(x, rows, w, b * ROW_BLOCK, yt));
    let mut y = vec![0f32; rows * out];
    for (o, ys) in yt.chunks(rows).enumerate() {
        for (r, v) in ys.iter().enumerate() {
            y[r * out + o] = *v;
        }
    }
    y
}

fn x_wt_block_dispatch<R: WeightRows>(x: &[f32], rows: usize, w: &R, first: usize, yt: &mut [f32]) {
    struct Block<'a, R>(&'a [f32], usize, &'a R, usize, &'a mut [f32]);
    impl<R: WeightRows> FmaKernel for Block<'_, R> {
        type Output = ();
        #[inline(always)]
        fn run<const FMA: bool>(self) {
            let Block(x, rows, w, first, yt) = self;
            x_wt_block::<R, FMA>(x, rows, w, first, yt)
        }
    }
    dispatch_fma(Block(x, rows, w, first, yt))
}

/// Rows `first..` of `W` (one per row of `yt`) against every row of `x`; `yt`
/// `[block rows, rows]`.
#[inline(always)]
fn x_wt_block<R: WeightRows, const FUSED: bool>(
    x: &[f32],
    rows: usize,
    w: &R,
    first: usize,
    yt: &mut [f32],
) {
    let inp = w.shape().1;
    let mut buf = vec![0f32; inp];
    for (row, y) in yt.chunks_exact_mut(rows).enumerate() {
        w.widen_rows(first + row, &mut buf);
        for (x_row, y) in x.chunks_exact(inp).zip(y.iter_mut()) {
            *y = dot::<FUSED>(x_row, &buf);
        }
    }
}

/// `Σ a_i b_i` with [`LANES`] partial sums, added up in a fixed order.
#[inline(always)]
fn dot<const FUSED: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (a_chunks, a_tail) = a.as_chunks::<LANES>();
    let (b_chunks, b_tail) = b.as_chunks::<LANES>();
    for (a, b) in a_chunks.iter().zip(b_chunks) {
        for ((acc, a), b) in acc.iter_mut().zip(a).zip(b) {
            *acc = mul_add::<FUSED>(*a, *b, *acc);
        }
    }
    let mut tail = 0f32;
    for (a, b) in a_tail.iter().zip(b_tail) {
        tail = mul_add::<FUSED>(*a, *b, tail);
    }
    acc.iter().sum::<f32>() + tail
}

/// `dx = g W`: `g` `[rows, out]`, `w` `[out, inp]` -> `[rows, inp]`.
pub fn g_w<W: StoredFloat>(g: &[f32], rows: usize, w: &[W], out: usize, inp: usize) -> Vec<f32> {
    assert!(
        g.len() == rows * out && w.len() == out * inp,
        "g_w: shape mismatch"
    );
    if rows == 0 || out == 0 || inp == 0 {
        return vec![0f32; rows * inp];
    }
    // Partial sums over a fixed number of blocks of W's rows (contiguous streams), added in
    // block order.
    let block_rows = out.div_ceil(G_W_BLOCKS).next_multiple_of(4);
    let partials: Vec<Vec<f32>> = w
        .par_chunks(block_rows * inp)
        .enumerate()
        .map(|(b, w)| {
            let mut acc = vec![0f32; rows * inp];
            g_w_block_dispatch(g, rows, out, b * block_rows, w, &mut acc);
            acc
        })
        .collect();
    let mut dx = vec![0f32; rows * inp];
    for part in &partials {
        for (dx, p) in dx.iter_mut().zip(part) {
            *dx += p;
        }
    }
    dx
}

fn g_w_block_dispatch<W: StoredFloat>(
    g: &[f32],
    rows: usize,
    out: usize,
    first: usize,
    w: &[W],
    acc: &mut [f32],
) {
    struct Block<'a, W>(&'a [f32], usize, usize, usize, &'a [W], &'a mut [f32]);
    impl<W: StoredFloat> FmaKernel for Block<'_, W> {
        type Output = ();
        #[inline(always)]
        fn run<const FMA: bool>(self) {
            let Block(g, rows, out, first, w, acc) = self;
            g_w_block::<W, FMA>(g, rows, out, first, w, acc)
        }
    }
    dispatch_fma(Block(g, rows, out, first, w, acc))
}

/// `acc` `[rows, inp]` += `g[:, first..first + k] w` for a block `w` of `k` rows of `W`, adding
/// the rows in order. Four rows of `W` at a time (four sequential streams), in L1-sized column
/// chunks, so that each accumulator is loaded and stored once per four products.
#[inline(always)]
fn g_w_block<W: StoredFloat, const FUSED: bool>(
    g: &[f32],
    rows: usize,
    out: usize,
    first: usize,
    w: &[W],
    acc: &mut [f32],
) {
    let inp = acc.len() / rows;
    let mut bufs = [[0f32; COL_CHUNK]; 4];
    for (q, quad) in w.chunks(4 * inp).enumerate() {
        let k = first + 4 * q;
        let group = quad.len() / inp;
        for c0 in (0..inp).step_by(COL_CHUNK) {
            let width = COL_CHUNK.min(inp - c0);
            for (j, buf) in bufs.iter_mut().take(group).enumerate() {
                W::widen_into(&quad[j * inp + c0..][..width], &mut buf[..width]);
            }
            for (r, acc) in acc.chunks_exact_mut(inp).enumerate() {
                let acc = &mut acc[c0..c0 + width];
                let g = &g[r * out + k..][..group];
                if group == 4 {
                    axpy4::<FUSED>([g[0], g[1], g[2], g[3]], &bufs, acc);
                } else {
                    for (scale, buf) in g.iter().zip(&bufs) {
                        axpy::<FUSED>(*scale, &buf[..width], acc);
                    }
                }
            }
        }
    }
}

/// `acc += a[0] x[0] + a[1] x[1] + a[2] x[2] + a[3] x[3]`, added left to right.
#[inline(always)]
fn axpy4<const FUSED: bool>(a: [f32; 4], x: &[[f32; COL_CHUNK]; 4], acc: &mut [f32]) {
    let lanes = acc.iter_mut().zip(&x[0]).zip(&x[1]).zip(&x[2]).zip(&x[3]);
    for ((((acc, x0), x1), x2), x3) in lanes {
        let mut sum = mul_add::<FUSED>(a[0], *x0, *acc);
        sum = mul_add::<FUSED>(a[1], *x1, sum);
        sum = mul_add::<FUSED>(a[2], *x2, sum);
        *acc = mul_add::<FUSED>(a[3], *x3, sum);
    }
}

/// `acc += a x`.
#[inline(always)]
fn axpy<const FUSED: bool>(a: f32, x: &[f32], acc: &mut [f32]) {
    for (acc, x) in acc.iter_mut().zip(x) {
        *acc = mul_add::<FUSED>(a, *x, *acc);
    }
}
