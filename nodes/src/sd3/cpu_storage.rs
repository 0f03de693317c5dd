//! What the CPU custom ops share: reading an operand's f32 values out of its
//! candle storage, and one output buffer that parallel tasks write in
//! disjoint parts.

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

/// An output buffer shared by parallel tasks, each writing its own elements.
pub struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: each op keeps the buffer alive and in place while its parallel loop
// uses the `SharedOut`, and concurrent tasks write disjoint elements through
// `slice`/`ptr`.
#[allow(unsafe_code)]
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub fn new(out: &mut [f32]) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }

    /// Pointer to element `offset`, for a GEMM writing through strides.
    pub fn ptr(&self, offset: usize) -> *mut f32 {
        assert!(
            offset < self.len,
            "output offset {offset} past {}",
            self.len
        );
        self.ptr.wrapping_add(offset)
    }

    /// Elements `offset..offset + len`.
    ///
    /// # Safety
    /// No other task may access these elements while the slice lives.
    #[allow(unsafe_code, clippy::mut_from_ref)]
    pub unsafe fn slice(&self, offset: usize, len: usize) -> &mut [f32] {
        assert!(
            offset + len <= self.len,
            "output {offset}+{len} past {}",
            self.len
        );
        // SAFETY: in bounds (asserted); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), len) }
    }
}
