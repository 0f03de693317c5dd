//! Helpers for the unit tests of the CPU fast paths.

use candle_core::{Device, Result, Tensor};

/// Seeded standard-normal f32 values of `shape`, on the CPU.
pub fn random(seed: u64, shape: &[usize]) -> Result<Tensor> {
    super::sampling::seeded_noise(seed, shape, &Device::Cpu)
}

/// `max |a − b|` over all elements.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}
