//! Optional 8-bit weights: a weight `[out, in]` quantised at load to int8 in blocks of
//! [`BLOCK`] values along the input dimension, each block with its own f32 scale (the layout
//! idea of GGML's q8_0, with an f32 scale). The kernels dequantise rows into f32 and compute in
//! f32 ([`Int8Rows`] through [`super::gemm`] and [`super::streamed`]).
//!
//! Packed as a `u8` tensor `[out, row_bytes(in)]`: each row holds its `in` int8 values, then
//! its `in.div_ceil(BLOCK)` scales as little-endian f32. A block's scale is `max|w| / 127`, a
//! value is `round(w / scale)`, so every weight is off by at most half its block's scale.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use float8::F8E4M3;
use half::{bf16, f16};
use rayon::prelude::*;

use super::format::StoredFloat;
use super::rows::WeightRows;

/// Values per scale, along the input dimension.
pub const BLOCK: usize = 32;

/// The largest int8 magnitude used (symmetric: -128 is never produced).
const LEVELS: f32 = 127.0;

/// Bytes of one packed row of `inp` weights: one per weight, four per block.
pub fn row_bytes(inp: usize) -> usize {
    inp + 4 * inp.div_ceil(BLOCK)
}

/// `scale · weight` (`[out, in]`, CPU, f32, f16, bf16 or float8 e4m3fn) quantised to int8
/// blocks, as a packed `u8` tensor `[out, row_bytes(in)]`. Fails on a non-finite weight.
pub fn quantise(weight: &Tensor, scale: f32) -> Result<Tensor> {
    weight.contiguous()?.apply_op1_no_bwd(&Quantise { scale })
}

struct Quantise {
    scale: f32,
}

impl Quantise {
    fn rows<W: StoredFloat>(&self, w: &[W], inp: usize) -> Result<Vec<u8>> {
        let bytes = row_bytes(inp);
        let mut packed = vec![0u8; w.len() / inp.max(1) * bytes];
        if inp == 0 {
            return Ok(packed);
        }
        packed
            .par_chunks_mut(bytes)
            .zip(w.par_chunks(inp))
            .enumerate()
            .try_for_each(|(row, (packed, w))| {
                quantise_row(w, self.scale, packed).map_err(|column| {
                    candle_core::Error::Msg(format!(
                        "int8 weights: the weight at [{row}, {column}] is not finite"
                    ))
                })
            })?;
        Ok(packed)
    }
}

/// One row `w` (times `scale`) into `packed` (`row_bytes(w.len())` bytes); the column of a
/// non-finite weight as the error.
fn quantise_row<W: StoredFloat>(
    w: &[W],
    scale: f32,
    packed: &mut [u8],
) -> std::result::Result<(), usize> {
    let (values, scales) = packed.split_at_mut(w.len());
    let mut wide = [0f32; BLOCK];
    let blocks = w.chunks(BLOCK).zip(values.chunks_mut(BLOCK));
    for (b, ((w, values), block_scale)) in blocks.zip(scales.chunks_exact_mut(4)).enumerate() {
        let wide = &mut wide[..w.len()];
        W::widen_into(w, wide);
        let mut max = 0f32;
        for (i, v) in wide.iter_mut().enumerate() {
            *v *= scale;
            if !v.is_finite() {
                return Err(b * BLOCK + i);
            }
            max = max.max(v.abs());
        }
        let step = max / LEVELS;
        let inverse = if step > 0.0 { 1.0 / step } else { 0.0 };
        for (q, v) in values.iter_mut().zip(wide.iter()) {
            *q = ((v * inverse).round().clamp(-LEVELS, LEVELS) as i8) as u8;
        }
        block_scale.copy_from_slice(&step.to_le_bytes());
    }
    Ok(())
}

impl CustomOp1 for Quantise {
    fn name(&self) -> &'static str {
        "quantise-int8"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (out, inp) = layout.shape().dims2()?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("int8 weights: the weight must be contiguous")
        };
        let packed = match storage {
            CpuStorage::F32(w) => self.rows(&w[start..end], inp)?,
            CpuStorage::F16(w) => self.rows::<f16>(&w[start..end], inp)?,
            CpuStorage::BF16(w) => self.rows::<bf16>(&w[start..end], inp)?,
            CpuStorage::F8E4M3(w) => self.rows::<F8E4M3>(&w[start..end], inp)?,
            other => bail!("int8 weights: cannot quantise a {:?} weight", other.dtype()),
        };
        Ok((CpuStorage::U8(packed), Shape::from((out, row_bytes(inp)))))
    }
}

/// A packed int8 weight ([`quantise`]'s layout) read as rows of f32.
pub struct Int8Rows<'a> {
    packed: &'a [u8],
    out: usize,
    inp: usize,
}

impl<'a> Int8Rows<'a> {
    /// `packed` as `out` rows of `inp` weights; an error when its length does not fit.
    pub fn new(packed: &'a [u8], out: usize, inp: usize) -> Result<Self> {
        if packed.len() != out * row_bytes(inp) {
            bail!(
                "int8 weights: {} bytes are not {out} packed rows of {inp} weights",
                packed.len()
            )
        }
        Ok(Self { packed, out, inp })
    }
}

impl WeightRows for Int8Rows<'_> {
    fn shape(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    #[inline(always)]
    fn widen_rows(&self, first: usize, dst: &mut [f32]) {
        let bytes = row_bytes(self.inp);
        let rows = self.packed[first * bytes..].chunks_exact(bytes);
        for (packed, dst) in rows.zip(dst.chunks_exact_mut(self.inp)) {
            let (values, scales) = packed.split_at(self.inp);
            let blocks = values.chunks(BLOCK).zip(dst.chunks_mut(BLOCK));
            for ((values, dst), scale) in blocks.zip(scales.chunks_exact(4)) {
                let scale = f32::from_le_bytes([scale[0], scale[1], scale[2], scale[3]]);
                for (d, q) in dst.iter_mut().zip(values) {
                    *d = f32::from(*q as i8) * scale;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd3::test_tensors::random;
    use candle_core::DType;

    fn dequantised(packed: &Tensor, out: usize, inp: usize) -> Result<Vec<f32>> {
        let bytes = packed.flatten_all()?.to_vec1::<u8>()?;
        let rows = Int8Rows::new(&bytes, out, inp)?;
        let mut wide = vec![0f32; out * inp];
        rows.widen_rows(0, &mut wide);
        Ok(wide)
    }

    /// Every weight comes back within half its block's step (`max|block| / 127 / 2`), for each
    /// stored format, a per-tensor scale, ragged last blocks and an all-zero block; a block's
    /// largest weight comes back exactly up to f32 rounding.
    #[test]
    fn weights_come_back_within_half_a_step_of_their_block() -> Result<()> {
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::F8E4M3] {
            for (out, inp) in [(3, 70), (5, 32), (2, 7)] {
                let mut w = random(1, &[out, inp])?;
                if inp == 70 {
                    let zeros = Tensor::zeros((out, BLOCK), DType::F32, w.device())?;
                    w = Tensor::cat(&[&zeros, &w.narrow(1, BLOCK, inp - BLOCK)?], 1)?;
                }
                let w = w.to_dtype(dtype)?;
                let scale = if dtype == DType::F8E4M3 { 0.3 } else { 1.0 };
                let packed = quantise(&w, scale)?;
                assert_eq!(packed.dims(), [out, row_bytes(inp)]);
                let exact = (w.to_dtype(DType::F32)? * f64::from(scale))?;
                let exact = exact.flatten_all()?.to_vec1::<f32>()?;
                let back = dequantised(&packed, out, inp)?;
                for (r, (exact, back)) in exact.chunks(inp).zip(back.chunks(inp)).enumerate() {
                    for (exact, back) in exact.chunks(BLOCK).zip(back.chunks(BLOCK)) {
                        let max = exact.iter().fold(0f32, |m, v| m.max(v.abs()));
                        let half_step = max / LEVELS / 2.0;
                        for (e, b) in exact.iter().zip(back) {
                            let err = (e - b).abs();
                            assert!(err <= half_step * 1.0001, "{dtype:?} row {r}: {e} -> {b}");
                            if e.abs() == max {
                                assert!(err <= max * 1e-6, "{dtype:?}: the block maximum {e}");
                            }
                        }
                    }
                }
                if inp == 70 {
                    assert!(back[..BLOCK].iter().all(|v| *v == 0.0));
                }
            }
        }
        Ok(())
    }

    #[test]
    fn refuses_what_it_cannot_quantise_or_read() -> Result<()> {
        let mut values = vec![0.5f32; 2 * 40];
        values[45] = f32::INFINITY;
        let w = Tensor::from_vec(values, (2, 40), &candle_core::Device::Cpu)?;
        let err = quantise(&w, 1.0).unwrap_err().to_string();
        assert!(err.contains("[1, 5] is not finite"), "{err}");
        let ints = Tensor::zeros((2, 40), DType::U32, &candle_core::Device::Cpu)?;
        assert!(quantise(&ints, 1.0).is_err());
        assert!(Int8Rows::new(&[0u8; 10], 1, 8).is_err());
        Ok(())
    }
}
