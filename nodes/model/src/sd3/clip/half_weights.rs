//! Linear-layer weights kept in the precision they are stored in (SD3's CLIP encoders are f16
//! in the checkpoints; f16, bf16 or float8 e4m3fn, see [`crate::sd3::precision`]) and
//! multiplied in f32 by [`crate::sd3::precision::streamed`] and [`crate::sd3::precision::product`].
//! A checkpoint's linear weights come in their stored format from the loader; f32 weights are
//! narrowed here when that is exact.
//!
//! Exactness: a weight is narrowed ([`compact`]) only when every value survives the round trip
//! f32 -> f16 (or bf16) -> f32 bit for bit, so the narrowed tensor holds exactly the values
//! loaded; the kernels widen them exactly and accumulate in f32. Against the f32 weights only
//! the summation order differs, as between any two f32 GEMMs. Weights that are not exactly
//! representable (random f32 fixtures, f32 checkpoints with full-precision values), and any
//! weight off the CPU, stay as loaded.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::sd3::precision::format::{self, StoredFloat};
use crate::sd3::precision::product::{self, is_stored_format, STREAM_MAX_ROWS};
use crate::sd3::precision::rows::StoredRows;
use crate::sd3::precision::streamed;

/// `weight` in f16 or bf16 when that holds its values exactly (CPU, f32 weights), else as is.
pub fn compact(weight: Tensor) -> Result<Tensor> {
    if !weight.device().is_cpu() || weight.dtype() != DType::F32 {
        return Ok(weight);
    }
    let values = weight.flatten_all()?.to_vec1::<f32>()?;
    let shape = weight.shape().clone();
    if values.par_iter().all(|&v| exact::<f16>(v, f16::from_f32)) {
        let narrow: Vec<f16> = values.par_iter().map(|&v| f16::from_f32(v)).collect();
        return Tensor::from_vec(narrow, shape, weight.device());
    }
    if values.par_iter().all(|&v| exact::<bf16>(v, bf16::from_f32)) {
        let narrow: Vec<bf16> = values.par_iter().map(|&v| bf16::from_f32(v)).collect();
        return Tensor::from_vec(narrow, shape, weight.device());
    }
    Ok(weight)
}

fn exact<W: StoredFloat>(v: f32, narrow: fn(f32) -> W) -> bool {
    narrow(v).widen().to_bits() == v.to_bits()
}

/// Whether `weight` is a half weight multiplied with f32 `xs` (kept so by [`compact`]; a model
/// loaded in f16 multiplies f16 by f16 as usual).
fn is_half(weight: &Tensor, xs: &Tensor) -> bool {
    is_stored_format(weight.dtype()) && xs.dtype() == DType::F32 && weight.device().is_cpu()
}

/// The weight in the dtype of `xs`: the f32 values of a half weight (a full copy), other
/// weights as they are.
pub fn dense(weight: &Tensor, xs: &Tensor) -> Result<Tensor> {
    if weight.dtype() == DType::U8 {
        bail!(
            "int8 text-encoder weights compute the forward pass only; training through CLIP \
             (CreTok) needs the loader's weight_dtype `default`"
        );
    }
    if is_half(weight, xs) {
        weight.apply_op1_no_bwd(&Widen)
    } else {
        Ok(weight.clone())
    }
}

/// Whether a product of `rows` f32 rows of `xs` with `weight` streams the weight through
/// [`streamed`]: few rows, on the CPU, with a half weight or an f32 one (for f32 weights
/// too, the streamed kernels beat gemm's AVX-512 GEMM on these few-row products).
fn streams(weight: &Tensor, xs: &Tensor, rows: usize) -> bool {
    rows <= STREAM_MAX_ROWS
        && xs.dtype() == DType::F32
        && weight.device().is_cpu()
        && (is_stored_format(weight.dtype()) || weight.dtype() == DType::F32)
}

/// `x Wᵀ` for `x` `[rows, in]` (f32) and a weight `[out, in]` of any kept precision, or in
/// int8 blocks (`u8`, [`crate::sd3::precision::int8`]).
pub fn x_wt(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    if weight.dtype() == DType::U8 {
        return product::x_wt(x, weight, 1.0);
    }
    if streams(weight, x, x.dim(0)?) {
        return x.contiguous()?.apply_op2_no_bwd(weight, &Product::XWt);
    }
    if is_half(weight, x) {
        // Many rows: widened block by block into gemm, never as a whole f32 copy.
        return product::x_wt(x, weight, 1.0);
    }
    x.matmul(&weight.t()?)
}

/// `g W` for `g` `[rows, out]` (f32) and a weight `[out, in]` of any kept precision.
pub fn g_w(g: &Tensor, weight: &Tensor) -> Result<Tensor> {
    if streams(weight, g, g.dim(0)?) {
        return g.contiguous()?.apply_op2_no_bwd(weight, &Product::GW);
    }
    g.matmul(&dense(weight, g)?)
}

fn contiguous<'a, T>(v: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&v[start..end]),
        None => bail!("half-weight product: operand must be contiguous"),
    }
}

/// Widens a half weight to f32.
struct Widen;

impl CustomOp1 for Widen {
    fn name(&self) -> &'static str {
        "widen-half-weight"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let values = match storage {
            CpuStorage::F16(w) => format::widen_all(contiguous(w, layout)?),
            CpuStorage::BF16(w) => format::widen_all(contiguous(w, layout)?),
            CpuStorage::F8E4M3(w) => format::widen_all(contiguous(w, layout)?),
            _ => bail!("widen: not a half-precision weight"),
        };
        Ok((CpuStorage::F32(values), layout.shape().clone()))
    }
}

/// The two streamed products of f32 rows with a half weight `W` `[out, in]`.
enum Product {
    /// `x Wᵀ`, `x` `[rows, in]`.
    XWt,
    /// `g W`, `g` `[rows, out]`.
    GW,
}

impl Product {
    fn run<W: StoredFloat>(
        &self,
        a: &[f32],
        rows: usize,
        w: &[W],
        out: usize,
        inp: usize,
    ) -> Vec<f32> {
        match self {
            Product::XWt => streamed::x_wt(a, rows, &StoredRows::new(w, out, inp)),
            Product::GW => streamed::g_w(a, rows, w, out, inp),
        }
    }
}

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        match self {
            Product::XWt => "half-weight-x-wt",
            Product::GW => "half-weight-g-w",
        }
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        a_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(a) = a else {
            bail!("half-weight product: activations must be f32")
        };
        let a = contiguous(a, a_layout)?;
        let (rows, a_cols) = a_layout.shape().dims2()?;
        let (out, inp) = w_layout.shape().dims2()?;
        let (expected, result_cols) = match self {
            Product::XWt => (inp, out),
            Product::GW => (out, inp),
        };
        if a_cols != expected {
            bail!("half-weight product: {a_cols} columns against a [{out}, {inp}] weight")
        }
        let result = match w {
            CpuStorage::F16(w) => self.run(a, rows, contiguous(w, w_layout)?, out, inp),
            CpuStorage::BF16(w) => self.run(a, rows, contiguous(w, w_layout)?, out, inp),
            CpuStorage::F32(w) => self.run(a, rows, contiguous(w, w_layout)?, out, inp),
            CpuStorage::F8E4M3(w) => self.run(a, rows, contiguous(w, w_layout)?, out, inp),
            _ => bail!("half-weight product: weight must be f16, bf16, f8e4m3 or f32"),
        };
        Ok((CpuStorage::F32(result), Shape::from((rows, result_cols))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn random(rows: usize, cols: usize, seed: u64) -> Tensor {
        let mut rng = crate::sd3::rng::SplitMix64::new(seed);
        let v: Vec<f32> = (0..rows * cols).map(|_| rng.standard() as f32).collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    /// int8 blocks multiply as the MMDiT's do (`precision::product`); the gradient path, which
    /// CreTok training takes through CLIP, refuses them by name.
    #[test]
    fn int8_weights_compute_forward_only() {
        let weight = random(24, 64, 1);
        let packed = crate::sd3::precision::int8::quantise(&weight, 1.0).unwrap();
        let x = random(20, 64, 2);
        let ours = x_wt(&x, &packed).unwrap();
        let reference = x.matmul(&weight.t().unwrap()).unwrap();
        assert!(max_rel_diff(&ours, &reference) < 3e-2);
        let err = g_w(&random(20, 24, 3), &packed).unwrap_err().to_string();
        assert!(err.contains("weight_dtype"), "{err}");
    }

    fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
        let scale = b
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        diff.to_scalar::<f32>().unwrap() / scale
    }

    #[test]
    fn only_exactly_representable_weights_are_narrowed() {
        let w = random(8, 40, 1);
        assert_eq!(compact(w.clone()).unwrap().dtype(), DType::F32);
        let f16_values = w
            .to_dtype(DType::F16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let kept = compact(f16_values.clone()).unwrap();
        assert_eq!(kept.dtype(), DType::F16);
        let back = dense(&kept, &w)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let orig = f16_values.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(back
            .iter()
            .zip(&orig)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        // Beyond f16's range (65504), so only bf16 holds them.
        let large = (w * 1e6).unwrap();
        let bf16_values = large
            .to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        assert_eq!(compact(bf16_values).unwrap().dtype(), DType::BF16);
    }

    /// Streamed (few rows) and GEMM (many rows) products against candle's f32 products with
    /// the same values, for every format (f32 weights stream too) and shapes with ragged
    /// blocks and tails.
    #[test]
    fn products_equal_f32_products_of_the_same_values() {
        for dtype in [DType::F16, DType::BF16, DType::F32] {
            let (out, inp) = (37, 300);
            let w = random(out, inp, 2).to_dtype(dtype).unwrap();
            let w32 = w.to_dtype(DType::F32).unwrap();
            for rows in [1, 3, 16, 17, 40] {
                let x = random(rows, inp, 3 + rows as u64);
                let y = x_wt(&x, &w).unwrap();
                let y_ref = x.matmul(&w32.t().unwrap()).unwrap();
                assert!(
                    max_rel_diff(&y, &y_ref) < 1e-5,
                    "{dtype:?} x Wt, {rows} rows"
                );
                let g = random(rows, out, 4 + rows as u64);
                let dx = g_w(&g, &w).unwrap();
                let dx_ref = g.matmul(&w32).unwrap();
                assert!(
                    max_rel_diff(&dx, &dx_ref) < 1e-5,
                    "{dtype:?} g W, {rows} rows"
                );
            }
        }
    }
}
