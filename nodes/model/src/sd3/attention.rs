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

use crate::sd3::cpu_storage::SharedOut;
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
        // The last element read must lie inside the storage (the gemm calls
        // read through raw pointers).
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

    /// Pointer to token `token` of head `head` in image `image`.
    fn at(&self, image: usize, token: usize, head: usize) -> *const f32 {
        let [b, t, h] = self.strides;
        self.data[self.start + image * b + token * t + head * h..].as_ptr()
    }

    fn token_stride(&self) -> isize {
        self.strides[1] as isize
    }
}

/// One task: rows `rows` of head `head` in image `image`.
struct Task {
    image: usize,
    head: usize,
    rows: std::ops::Range<usize>,
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
        let out_ptr = SharedOut::new(&mut out);
        let tasks: Vec<Task> = (0..b)
            .flat_map(|image| (0..heads).map(move |head| (image, head)))
            .flat_map(|(image, head)| {
                (0..q_tokens).step_by(QUERY_BLOCK).map(move |first| Task {
                    image,
                    head,
                    rows: first..(first + QUERY_BLOCK).min(q_tokens),
                })
            })
            .collect();
        let geometry = Geometry {
            q_tokens,
            kv_tokens,
            heads,
            head_dim,
        };
        tasks.par_iter().for_each_init(Vec::new, |scratch, task| {
            geometry.run(task, (q, k, v), &out_ptr, scratch)
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
    heads: usize,
    head_dim: usize,
}

impl Geometry {
    /// Scores, numerators, weighted values and normalisation for one task;
    /// `scratch` is this thread's buffer for the scores and row sums.
    fn run(
        &self,
        task: &Task,
        (q, k, v): (Operand, Operand, Operand),
        out: &SharedOut,
        scratch: &mut Vec<f32>,
    ) {
        let (rows, width) = (task.rows.len(), self.kv_tokens);
        scratch.resize(rows * width + rows, 0.0);
        // Scores column-major (one key token's scores for all rows together):
        // gemm's native layout, read by the second product without repacking.
        let (scores, sums) = scratch.split_at_mut(rows * width);
        let out_row_stride = self.heads * self.head_dim;
        let out_offset = (task.image * self.q_tokens + task.rows.start) * out_row_stride
            + task.head * self.head_dim;
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        // SAFETY: `Operand::new` checked that every (image, token, head,
        // 0..head_dim) element of q, k and v lies in its storage; `scores`
        // holds rows × width floats; the output block (rows of this task,
        // columns of this head) is inside `out` and written by this task only.
        #[allow(unsafe_code)]
        unsafe {
            gemm::gemm(
                rows,
                width,
                self.head_dim,
                scores.as_mut_ptr(),
                rows as isize,
                1,
                false,
                q.at(task.image, task.rows.start, task.head),
                1,
                q.token_stride(),
                k.at(task.image, 0, task.head),
                k.token_stride(),
                1,
                0.0,
                scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
            exp_shifted_columns(scores, rows, sums);
            gemm::gemm(
                rows,
                self.head_dim,
                width,
                out.block(out_offset, (rows, self.head_dim), (out_row_stride, 1)),
                1,
                out_row_stride as isize,
                false,
                scores.as_ptr(),
                rows as isize,
                1,
                v.at(task.image, 0, task.head),
                1,
                v.token_stride(),
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
            for (row, sum) in sums.iter().enumerate() {
                let out_row = out.slice(out_offset + row * out_row_stride, self.head_dim);
                let inv = 1.0 / sum;
                out_row.iter_mut().for_each(|o| *o *= inv);
            }
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
