//! `y = s · x Wᵀ` on candle tensors, for f32 activations `x` `[rows, in]` and a CPU weight `W`
//! `[out, in]` kept in its stored format (f16, bf16, float8 e4m3fn) with a per-tensor scale `s`
//! (1 but for ComfyUI's scaled float8), or quantised to int8 blocks ([`super::int8`], a `u8`
//! tensor). Few rows stream the weight ([`super::streamed`]), many rows widen it block by block
//! into gemm ([`super::gemm`]).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

use super::format::StoredFloat;
use super::int8::Int8Rows;
use super::rows::{StoredRows, WeightRows};
use super::{gemm, streamed};

/// Up to this many rows a product streams the weight (the streamed kernels beat a GEMM there).
pub const STREAM_MAX_ROWS: usize = 16;

/// Whether `x_wt` computes with a weight of this dtype.
pub fn is_stored_format(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16 | DType::F8E4M3)
}

/// `scale · x Wᵀ` (`x` f32 `[rows, in]`, `weight` `[out, in]` f16, bf16 or f8e4m3, or int8
/// blocks `[out, int8::row_bytes(in)]` u8; CPU).
pub fn x_wt(x: &Tensor, weight: &Tensor, scale: f32) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(weight, &StoredProduct { scale })
}

struct StoredProduct {
    scale: f32,
}

impl StoredProduct {
    fn run<R: WeightRows>(&self, x: &[f32], rows: usize, w: &R) -> Vec<f32> {
        if rows > STREAM_MAX_ROWS {
            return gemm::x_wt(x, rows, w, self.scale);
        }
        let mut y = streamed::x_wt(x, rows, w);
        if self.scale != 1.0 {
            y.iter_mut().for_each(|v| *v *= self.scale);
        }
        y
    }

    fn stored<W: StoredFloat>(
        &self,
        x: &[f32],
        rows: usize,
        w: &[W],
        out: usize,
        inp: usize,
    ) -> Vec<f32> {
        self.run(x, rows, &StoredRows::new(w, out, inp))
    }
}

fn contiguous<'a, T>(v: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&v[start..end]),
        None => bail!("stored-weight product: operands must be contiguous"),
    }
}

impl CustomOp2 for StoredProduct {
    fn name(&self) -> &'static str {
        "stored-weight-x-wt"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = x else {
            bail!("stored-weight product: activations must be f32")
        };
        let x = contiguous(x, x_layout)?;
        let (rows, x_cols) = x_layout.shape().dims2()?;
        let (out, inp) = w_layout.shape().dims2()?;
        if let CpuStorage::U8(w) = w {
            let w = Int8Rows::new(contiguous(w, w_layout)?, out, x_cols)?;
            if rows > STREAM_MAX_ROWS {
                if let Some(y) = gemm::x_wt_bf16(x, rows, &w, self.scale) {
                    return Ok((CpuStorage::F32(y), Shape::from((rows, out))));
                }
            }
            return Ok((
                CpuStorage::F32(self.run(x, rows, &w)),
                Shape::from((rows, out)),
            ));
        }
        if x_cols != inp {
            bail!("stored-weight product: {x_cols} columns against a [{out}, {inp}] weight")
        }
        let y = match w {
            CpuStorage::F16(w) => self.stored(x, rows, contiguous(w, w_layout)?, out, inp),
            CpuStorage::BF16(w) => self.stored(x, rows, contiguous(w, w_layout)?, out, inp),
            CpuStorage::F8E4M3(w) => self.stored(x, rows, contiguous(w, w_layout)?, out, inp),
            other => bail!(
                "stored-weight product: a {:?} weight is not a stored format",
                other.dtype()
            ),
        };
        Ok((CpuStorage::F32(y), Shape::from((rows, out))))
    }
}

#[cfg(test)]
mod tests {
    use super::super::int8;
    use super::*;
    use crate::sd3::test_tensors::{max_abs_diff, random};

    /// Both kernels (streamed up to 16 rows, gemm above) against candle's f32 matmul of the
    /// same (widened, scaled) values, on shapes with ragged blocks and tails: equal up to
    /// summation order.
    #[test]
    fn products_equal_candle_f32_matmul_of_the_stored_values() -> Result<()> {
        for dtype in [DType::F16, DType::BF16, DType::F8E4M3] {
            for (out, inp) in [(1, 7), (63, 300), (65, 33), (130, 129)] {
                let w = random(1, &[out, inp])?.to_dtype(dtype)?;
                let scale = if dtype == DType::F8E4M3 { 0.37 } else { 1.0 };
                let w32 = (w.to_dtype(DType::F32)? * f64::from(scale))?;
                for rows in [1, 5, 16, 17, 70] {
                    let x = random(2 + rows as u64, &[rows, inp])?;
                    let reference = x.matmul(&w32.t()?)?;
                    let diff = max_abs_diff(&x_wt(&x, &w, scale)?, &reference)?;
                    let bound = 1e-6 * (inp as f32).sqrt() * 10.0;
                    assert!(
                        diff < bound,
                        "{dtype:?} [{rows}, {inp}] x [{out}, {inp}]: {diff}"
                    );
                }
            }
        }
        Ok(())
    }

    /// Int8 blocks through both kernels against candle's f32 matmul of the dequantised weight:
    /// equal up to summation order where the kernels compute in f32 on the dequantised values
    /// (streamed, and gemm without AVX-512 BF16); within the bf16 rounding of both operands,
    /// `2⁻⁸ · Σ|x_i w_i|`, where many rows multiply in bf16 (`gemm::x_wt_bf16`).
    #[test]
    fn int8_products_equal_candle_f32_matmul_of_the_dequantised_values() -> Result<()> {
        let bf16 = crate::sd3::raw::bf16::available();
        for (out, inp) in [(1, 7), (63, 300), (65, 33), (130, 129)] {
            let w = random(1, &[out, inp])?;
            let packed = int8::quantise(&w, 1.0)?;
            let bytes = packed.flatten_all()?.to_vec1::<u8>()?;
            let mut wide = vec![0f32; out * inp];
            Int8Rows::new(&bytes, out, inp)?.widen_rows(0, &mut wide);
            let w32 = Tensor::from_vec(wide, (out, inp), w.device())?;
            for rows in [1, 5, 16, 17, 70] {
                let x = random(2 + rows as u64, &[rows, inp])?;
                let reference = x.matmul(&w32.t()?)?;
                let diff = max_abs_diff(&x_wt(&x, &packed, 1.0)?, &reference)?;
                let mut bound = 1e-6 * (inp as f32).sqrt() * 10.0;
                if bf16 && rows > STREAM_MAX_ROWS {
                    let magnitude = x.abs()?.matmul(&w32.abs()?.t()?)?;
                    bound += magnitude.max_all()?.to_scalar::<f32>()? / 256.0;
                }
                assert!(
                    diff < bound,
                    "int8 [{rows}, {inp}] x [{out}, {inp}]: {diff}"
                );
            }
        }
        let packed = int8::quantise(&random(1, &[8, 64])?, 1.0)?;
        let err = x_wt(&random(2, &[3, 60])?, &packed, 1.0).unwrap_err();
        assert!(err.to_string().contains("not 8 packed rows of 60"), "{err}");
        Ok(())
    }

    #[test]
    fn refuses_what_it_cannot_compute() -> Result<()> {
        let w = random(1, &[8, 16])?.to_dtype(DType::F16)?;
        let err = x_wt(&random(2, &[3, 15])?, &w, 1.0).unwrap_err();
        assert!(err.to_string().contains("15 columns"), "{err}");
        let err = x_wt(&random(2, &[3, 16])?, &random(1, &[8, 16])?, 1.0).unwrap_err();
        assert!(err.to_string().contains("not a stored format"), "{err}");
        let x64 = random(2, &[3, 16])?.to_dtype(DType::F64)?;
        assert!(x_wt(&x64, &w, 1.0).is_err());
        Ok(())
    }
}
