//! The residual sum of the VAE's blocks, written over the block's output (CPU, f32): at the
//! decoder's full resolution each activation is 0.5-1 GiB, and `a + b` would hold a third.

use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Result, Tensor};
use rayon::prelude::*;

use crate::sd3::cpu_storage::{f32_values, f32_values_mut};

/// Elements per parallel task.
const CHUNK: usize = 1 << 16;

/// `sum + residual`, written over `sum`, which the caller hands over (no other handle may share
/// its storage). Off the CPU, or for other dtypes or layouts, a new tensor.
pub fn add(sum: Tensor, residual: &Tensor) -> Result<Tensor> {
    let in_place = sum.device().is_cpu()
        && sum.dtype() == DType::F32
        && residual.dtype() == DType::F32
        && sum.is_contiguous()
        && sum.shape() == residual.shape();
    if !in_place {
        return sum + residual;
    }
    sum.inplace_op2(&residual.contiguous()?, &AddAssign)?;
    Ok(sum)
}

struct AddAssign;

impl InplaceOp2 for AddAssign {
    fn name(&self) -> &'static str {
        "add-in-place"
    }

    fn cpu_fwd(
        &self,
        sum: &mut CpuStorage,
        sum_l: &Layout,
        residual: &CpuStorage,
        residual_l: &Layout,
    ) -> Result<()> {
        let residual = f32_values(self.name(), residual, residual_l)?;
        let sum = f32_values_mut(self.name(), sum, sum_l)?;
        if sum.len() != residual.len() {
            candle_core::bail!("add-in-place: {} values and {}", sum.len(), residual.len());
        }
        sum.par_chunks_mut(CHUNK)
            .zip(residual.par_chunks(CHUNK))
            .for_each(|(sum, residual)| {
                for (s, &r) in sum.iter_mut().zip(residual) {
                    *s += r;
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd3::test_tensors::random;

    #[test]
    fn equals_the_allocating_sum() -> Result<()> {
        let (a, b) = (random(1, &[2, 3, 70, 300])?, random(2, &[2, 3, 70, 300])?);
        let expected = (&a + &b)?.flatten_all()?.to_vec1::<f32>()?;
        let sum = add(a.copy()?, &b)?;
        assert_eq!(sum.flatten_all()?.to_vec1::<f32>()?, expected);
        Ok(())
    }
}
