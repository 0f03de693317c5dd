//! Scaled dot-product attention over `[b, tokens, heads, head_dim]`
//! queries, keys and values, returning `[b, tokens, heads·head_dim]`.
//!
//! On the CPU in f32 it is one fused op: each task takes a block of query
//! rows of one (image, head), computes its scores with one GEMM into a
//! per-thread buffer, exponentiates them in place, multiplies by the values
//! straight into the output and divides by the row sums — the score matrix is
//! never a tensor (at SD3-medium's 1024² that would be 24 heads × 4429² floats
//! per image), and q/k/v are read through their strides, untransposed. Other
//! devices and dtypes use candle's matmul and softmax. Serves the MMDiT's
//! joint attention and the VAE's single-head attention over pixels.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use candle_nn as nn;
use rayon::prelude::*;

use crate::sd3::raw::gemm::{gemm, Mat, MatMut};
use crate::sd3::raw::shared_out::{SharedOut, Tile};
use crate::sd3::vector_math::{exp_shifted_columns, MAX_ROWS};

/// Queries, keys and values, each `[b, tokens, heads, head_dim]`.
#[derive(Debug, Clone)]
pub struct Qkv {
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
}

impl Qkv {
    /// Joins two streams' tokens (`self` first), as MMDiT's joint attention does.
    pub fn join(&self, other: &Qkv) -> Result<Qkv> {
        let cat = |a: &Tensor, b: &Tensor| Tensor::cat(&[a, b], 1);
        Ok(Qkv {
            q: cat(&self.q, &other.q)?,
            k: cat(&self.k, &other.k)?,
            v: cat(&self.v, &other.v)?,
        })
    }
}

/// `softmax(q·kᵀ/√head_dim)·v`, heads side by side in the output.
pub fn attention(qkv: &Qkv) -> Result<Tensor> {
    let fused = [&qkv.q, &qkv.k, &qkv.v]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32);
    if fused {
        let unit_stride = |t: &Tensor| match t.stride().last() {
            Some(1) => Ok(t.clone()),
            _ => t.contiguous(),
        };
        unit_stride(&qkv.q)?.apply_op3_no_bwd(
            &unit_stride(&qkv.k)?,
            &unit_stride(&qkv.v)?,
            &FusedAttention,
        )
    } else {
        composed(qkv)
    }
}

fn composed(qkv: &Qkv) -> Result<Tensor> {
    let (b, tokens, heads, head_dim) = qkv.q.dims4()?;
    let heads_first = |t: &Tensor| t.transpose(1, 2)?.contiguous();
    let (q, k, v) = (
        heads_first(&qkv.q)?,
        heads_first(&qkv.k)?,
        heads_first(&qkv.v)?,
    );
    let scale = 1.0 / (head_dim as f64).sqrt();
    let weights = (q.matmul(&k.t()?)? * scale)?;
    nn::ops::softmax_last_dim(&weights)?
        .matmul(&v)?
        .transpose(1, 2)?
        .reshape((b, tokens, heads * head_dim))
}

struct FusedAttention;

/// Query rows per task: the scores of a block (rows × key tokens floats) stay
/// in L2 at SD3's token counts, and there are enough tasks to share out.
const QUERY_BLOCK: usize = 128;
const _: () = assert!(QUERY_BLOCK <= MAX_ROWS);

/// Where one `[b, tokens, heads, head_dim]` operand lives in its storage.
#[derive(Clone, Copy)]
struct Operand<'a> {
    data: &'a [f32],
    start: usize,
    strides: [usize; 3],
}

impl<'a> Operand<'a> {
    fn new(storage: &'a CpuStorage, layout: &Layout) -> Result<Self> {
        let data = match storage {
            CpuStorage::F32(data) => data.as_slice(),
            _ => candle_core::bail!("attention: expected f32 storage"),
        };
        let &[b, t, h, d] = layout.stride() else {
            candle_core::bail!(
                "attention: expected [b, tokens, heads, head_dim], got {:?}",
                layout.shape()
            );
        };
        if d != 1 {
            candle_core::bail!("attention: head_dim must be contiguous");
        }
        let dims = layout.dims();
        if dims.contains(&0) {
            candle_core::bail!("attention: empty operand {:?}", layout.shape());
        }
        // The last element read must lie inside the storage (checked again,
        // per task, by the gemm operands).
        let last = layout.start_offset()
            + (dims[0] - 1) * b
            + (dims[1] - 1) * t
            + (dims[2] - 1) * h
            + dims[3]
            - 1;
        if last >= data.len() {
            candle_core::bail!("attention: layout {layout:?} outside its storage");
        }
        Ok(Self {
            data,
            start: layout.start_offset(),
            strides: [b, t, h],
        })
    }

    /// `tokens` tokens of head `head` in image `image` from token `token` on, as a
    /// `[tokens, head_dim]` matrix, or transposed (`[head_dim, tokens]`).
    fn tokens(
        &self,
        (image, token, head): (usize, usize, usize),
        tokens: usize,
        head_dim: usize,
        transposed: bool,
    ) -> Mat<'a> {
        let [b, t, h] = self.strides;
        let offset = self.start + image * b + token * t + head * h;
        if transposed {
            Mat::new(self.data, offset, (head_dim, tokens), (1, t))
        } else {
            Mat::new(self.data, offset, (tokens, head_dim), (t, 1))
        }
    }
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_l: &Layout,
        k: &CpuStorage,
        k_l: &Layout,
        v: &CpuStorage,
        v_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, q_tokens, heads, head_dim) = q_l.shape().dims4()?;
        let (kb, kv_tokens, kh, kd) = k_l.shape().dims4()?;
        if (kb, kh, kd) != (b, heads, head_dim) || v_l.shape() != k_l.shape() {
            candle_core::bail!(
                "attention: q {:?}, k {:?} and v {:?} do not fit",
                q_l.shape(),
                k_l.shape(),
                v_l.shape()
            );
        }
        let (q, k, v) = (
            Operand::new(q, q_l)?,
            Operand::new(k, k_l)?,
            Operand::new(v, v_l)?,
        );
        let mut out = vec![0f32; b * q_tokens * heads * head_dim];
        let blocks = q_tokens.div_ceil(QUERY_BLOCK);
        // The output as `[b · q_tokens, heads · head_dim]`: a task's tile is one block of
        // query rows of one image × one head's columns.
        let row_blocks = (0..b)
            .flat_map(|image| {
                (0..q_tokens).step_by(QUERY_BLOCK).map(move |first| {
                    let rows = image * q_tokens + first;
                    rows..rows + QUERY_BLOCK.min(q_tokens - first)
                })
            })
            .collect();
        let heads_columns = (0..heads)
            .map(|head| head * head_dim..(head + 1) * head_dim)
            .collect();
        // Image by image, head by head, block by block.
        let order = (0..b).flat_map(|image| {
            (0..heads)
                .flat_map(move |head| (0..blocks).map(move |block| (image * blocks + block, head)))
        });
        let tiles =
            SharedOut::new(&mut out, heads * head_dim, row_blocks, heads_columns).into_tiles(order);
        let geometry = Geometry {
            q_tokens,
            kv_tokens,
            head_dim,
        };
        tiles
            .into_par_iter()
            .for_each_init(Vec::new, |scratch, mut tile| {
                geometry.run((q, k, v), &mut tile, scratch)
            });
        Ok((
            CpuStorage::F32(out),
            Shape::from((b, q_tokens, heads * head_dim)),
        ))
    }
}

#[derive(Clone, Copy)]
struct Geometry {
    q_tokens: usize,
    kv_tokens: usize,
    head_dim: usize,
}

impl Geometry {
    /// Scores, numerators, weighted values and normalisation for one task,
    /// the output tile `out` (a block of query rows of one image × one
    /// head's columns); `scratch` is this thread's buffer for the scores and
    /// row sums.
    fn run(
        &self,
        (q, k, v): (Operand, Operand, Operand),
        out: &mut Tile<'_>,
        scratch: &mut Vec<f32>,
    ) {
        let (rows, width) = (out.rows().len(), self.kv_tokens);
        let image = out.rows().start / self.q_tokens;
        let first = out.rows().start % self.q_tokens;
        let head = out.index().1;
        scratch.resize(rows * width + rows, 0.0);
        // Scores column-major (one key token's scores for all rows together):
        // gemm's native layout, read by the second product without repacking.
        let (scores, sums) = scratch.split_at_mut(rows * width);
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        gemm(
            MatMut::new(scores, (rows, width), (1, rows)),
            q.tokens((image, first, head), rows, self.head_dim, false),
            k.tokens((image, 0, head), width, self.head_dim, true),
            scale,
        );
        exp_shifted_columns(scores, rows, sums);
        gemm(
            out.mat_mut(),
            Mat::new(scores, 0, (rows, width), (1, rows)),
            v.tokens((image, 0, head), width, self.head_dim, false),
            1.0,
        );
        for (row, sum) in sums.iter().enumerate() {
            let inv = 1.0 / sum;
            out.row_mut(row).iter_mut().for_each(|o| *o *= inv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd3::test_tensors::{max_abs_diff, random};

    #[test]
    fn fused_equals_composed_on_strided_and_joined_inputs() -> Result<()> {
        // Two streams of 5 and 300 tokens (300 spans three query blocks),
        // q/k/v read from a packed [b, t, 3, h, d] projection as MMDiT does.
        let (b, heads, head_dim) = (2, 3, 16);
        let stream = |seed, tokens| -> Result<Qkv> {
            let packed = (random(seed, &[b, tokens, 3, heads, head_dim])? * 3.0)?;
            let part = |i| packed.narrow(2, i, 1)?.squeeze(2);
            Ok(Qkv {
                q: part(0)?,
                k: part(1)?,
                v: part(2)?,
            })
        };
        let qkv = stream(1, 5)?.join(&stream(2, 300)?)?;
        let fused = attention(&qkv)?;
        let reference = composed(&qkv)?;
        assert_eq!(fused.dims(), &[b, 305, heads * head_dim]);
        let diff = max_abs_diff(&fused, &reference)?;
        assert!(diff < 1e-5, "max |fused - composed| = {diff}");
        Ok(())
    }

    #[test]
    fn cross_attention_shapes_and_mismatches() -> Result<()> {
        let q = random(3, &[1, 7, 2, 8])?;
        let kv = random(4, &[1, 11, 2, 8])?;
        let qkv = Qkv {
            q,
            k: kv.clone(),
            v: kv,
        };
        let diff = max_abs_diff(&attention(&qkv)?, &composed(&qkv)?)?;
        assert!(diff < 1e-5, "{diff}");
        let bad = Qkv {
            k: random(5, &[1, 11, 2, 4])?,
            ..qkv
        };
        let err = attention(&bad).unwrap_err().to_string();
        assert!(err.contains("do not fit"), "{err}");
        Ok(())
    }
}
