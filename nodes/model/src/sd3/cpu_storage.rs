//! What the CPU custom ops share: reading an operand's f32 values out of its
//! candle storage. (The output buffer that parallel tasks write in disjoint
//! tiles is `sd3::raw::shared_out`.)

use candle_core::{CpuStorage, Layout, Result};

/// The f32 values of a contiguous operand of the op named `op`.
pub fn f32_values<'a>(op: &str, storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: the fused CPU path takes f32 only");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: the fused CPU path needs contiguous tensors"),
    }
}

/// The mutable f32 values of a contiguous operand (an in-place op's target).
pub fn f32_values_mut<'a>(
    op: &str,
    storage: &'a mut CpuStorage,
    layout: &Layout,
) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: the fused CPU path takes f32 only");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&mut data[start..end]),
        None => candle_core::bail!("{op}: the fused CPU path needs contiguous tensors"),
    }
}
