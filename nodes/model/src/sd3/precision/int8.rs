//! Optional 8-bit weights: a weight `[out, in]` quantised at load to int8 in blocks of
//! [`BLOCK`] values along the input dimension, each block with its own f32 scale (the layout
//! idea of GGML's q8_0, with an f32 scale). The kernels dequantise rows into f32 and compute in
//! f32 ([`Int8Rows`] through [`super::gemm`] and [`super::streamed`]).
//!
//! Packed as a `u8` tensor `[out, row_bytes(in)]`: each row holds its `in` int8 values, then
//! its `in.div_ceil(BLOCK)` scales as little-endian f32. A block's scale is `max|w| / 127`, a
//! value is `round(w / scale)`, so every weight is off by at most half its block's scale.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use float8::F8E4M3;
use half::slice::HalfBitsSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

use super::format::StoredFloat;
use super::rows::WeightRows;
use crate::sd3::raw::simd::{dispatch, Kernel};

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

/// [`quantise`] of a weight `[out, inp]` still in its file's little-endian bytes (`dtype` f32,
/// f16 or bf16), without copying it out first: the weight is read once, where it lies, and
/// only the packed bytes are written. `None` where the bytes cannot be read in place (another
/// dtype, a length that is not `out · inp` values, bytes not aligned for the type, a
/// big-endian target); the caller then loads the tensor and calls [`quantise`].
pub fn quantise_le_bytes(
    dtype: DType,
    bytes: &[u8],
    (out, inp): (usize, usize),
    scale: f32,
) -> Option<Result<Tensor>> {
    fn values<T: bytemuck::Pod>(bytes: &[u8], count: usize) -> Option<&[T]> {
        let values: &[T] = bytemuck::try_cast_slice(bytes).ok()?;
        (values.len() == count).then_some(values)
    }
    if cfg!(target_endian = "big") {
        return None;
    }
    let q = Quantise { scale };
    let count = out.checked_mul(inp)?;
    let packed = match dtype {
        DType::F32 => q.rows::<f32>(values(bytes, count)?, inp),
        DType::F16 => q.rows::<f16>(values::<u16>(bytes, count)?.reinterpret_cast(), inp),
        DType::BF16 => q.rows::<bf16>(values::<u16>(bytes, count)?.reinterpret_cast(), inp),
        _ => return None,
    };
    Some(packed.and_then(|p| Tensor::from_vec(p, (out, row_bytes(inp)), &Device::Cpu)))
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

/// Values widened at a time while quantising a row (a whole number of blocks).
const CHUNK: usize = 32 * BLOCK;

/// One row `w` (times `scale`) into `packed` (`row_bytes(w.len())` bytes); the column of the
/// first non-finite weight as the error. Compiled for AVX-512 or AVX2 where the CPU has them
/// ([`dispatch`]): the loops over a block vectorise.
fn quantise_row<W: StoredFloat>(
    w: &[W],
    scale: f32,
    packed: &mut [u8],
) -> std::result::Result<(), usize> {
    struct Row<'a, W>(&'a [W], f32, &'a mut [u8]);
    impl<W: StoredFloat> Kernel for Row<'_, W> {
        type Output = std::result::Result<(), usize>;
        #[inline(always)]
        fn run(self) -> Self::Output {
            let Row(w, scale, packed) = self;
            let (values, scales) = packed.split_at_mut(w.len());
            let mut wide = [0f32; CHUNK];
            let chunks = w.chunks(CHUNK).zip(values.chunks_mut(CHUNK));
            let chunk_scales = scales.chunks_mut(4 * (CHUNK / BLOCK));
            for (c, ((w, values), scales)) in chunks.zip(chunk_scales).enumerate() {
                let wide = &mut wide[..w.len()];
                W::widen_into(w, wide);
                let mut finite = true;
                for v in wide.iter_mut() {
                    *v *= scale;
                    finite &= v.is_finite();
                }
                if !finite {
                    let column = wide.iter().position(|v| !v.is_finite()).unwrap_or(0);
                    return Err(c * CHUNK + column);
                }
                let blocks = wide.chunks(BLOCK).zip(values.chunks_mut(BLOCK));
                for ((wide, values), block_scale) in blocks.zip(scales.chunks_exact_mut(4)) {
                    // Finite values: a plain comparison (no NaN rule) vectorises.
                    let max = wide.iter().fold(0f32, |m, v| {
                        let a = v.abs();
                        if a > m {
                            a
                        } else {
                            m
                        }
                    });
                    let step = max / LEVELS;
                    let inverse = if step > 0.0 { 1.0 / step } else { 0.0 };
                    for (q, v) in values.iter_mut().zip(wide) {
                        *q = ((v * inverse).round().clamp(-LEVELS, LEVELS) as i8) as u8;
                    }
                    block_scale.copy_from_slice(&step.to_le_bytes());
                }
            }
            Ok(())
        }
    }
    dispatch(Row(w, scale, packed))
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

    /// Quantising a weight where it lies in its file's bytes packs the same bytes as quantising
    /// the loaded tensor; bytes it cannot read in place are left to the caller.
    #[test]
    fn quantising_in_place_packs_the_same_bytes() -> Result<()> {
        let (out, inp) = (5, 70);
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let w = random(3, &[out, inp])?.to_dtype(dtype)?;
            let loaded = quantise(&w, 0.5)?.flatten_all()?.to_vec1::<u8>()?;
            let bytes: Vec<u8> = match dtype {
                DType::F32 => bytemuck::cast_slice(&w.flatten_all()?.to_vec1::<f32>()?).to_vec(),
                DType::F16 => w
                    .flatten_all()?
                    .to_vec1::<f16>()?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                _ => w
                    .flatten_all()?
                    .to_vec1::<bf16>()?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            };
            // A `Vec<u8>` may sit at any address: read it from an 8-aligned copy.
            let mut aligned = vec![0u64; bytes.len().div_ceil(8)];
            bytemuck::cast_slice_mut::<u64, u8>(&mut aligned)[..bytes.len()]
                .copy_from_slice(&bytes);
            let bytes = &bytemuck::cast_slice::<u64, u8>(&aligned)[..bytes.len()];
            let packed = quantise_le_bytes(dtype, bytes, (out, inp), 0.5).expect("readable")?;
            assert_eq!(packed.dims(), [out, row_bytes(inp)]);
            assert_eq!(packed.flatten_all()?.to_vec1::<u8>()?, loaded, "{dtype:?}");
            assert!(quantise_le_bytes(dtype, &bytes[..bytes.len() - 4], (out, inp), 0.5).is_none());
        }
        let odd = vec![0u16; 20];
        let bytes = &bytemuck::cast_slice::<u16, u8>(&odd)[1..37];
        assert!(quantise_le_bytes(DType::F16, bytes, (2, 9), 1.0).is_none());
        assert!(quantise_le_bytes(DType::U8, &[0u8; 18], (2, 9), 1.0).is_none());
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
