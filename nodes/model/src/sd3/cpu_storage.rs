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
// `slice`/`block`.
#[allow(unsafe_code)]
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub fn new(out: &mut [f32]) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }

    /// Pointer to the first element of a `rows × cols` block starting at
    /// `offset`, whose element `(r, c)` is at `offset + r·row_stride +
    /// c·col_stride`: what a GEMM writes through. Asserts that the whole block,
    /// not just its first element, lies inside the buffer.
    pub fn block(
        &self,
        offset: usize,
        (rows, cols): (usize, usize),
        (row_stride, col_stride): (usize, usize),
    ) -> *mut f32 {
        let last = rows
            .checked_sub(1)
            .zip(cols.checked_sub(1))
            .and_then(|(r, c)| {
                let far = r
                    .checked_mul(row_stride)?
                    .checked_add(c.checked_mul(col_stride)?)?;
                offset.checked_add(far)
            });
        assert!(
            last.is_some_and(|last| last < self.len),
            "output block of {rows}x{cols} at {offset} (strides {row_stride}, {col_stride}) past {}",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_checked_to_its_last_element() {
        let mut buffer = vec![0f32; 12];
        let out = SharedOut::new(&mut buffer);
        // 3 rows of 4 with row stride 4: exactly the buffer.
        let _ = out.block(0, (3, 4), (4, 1));
        // Column-major 4 × 3 from element 0 (the VAE conv's layout).
        let _ = out.block(0, (4, 3), (1, 4));
        for (offset, shape, strides) in [
            (1, (3, 4), (4, 1)),
            (0, (4, 3), (1, 5)),
            (0, (0, 3), (1, 4)),
        ] {
            let outside = std::panic::catch_unwind(|| out.block(offset, shape, strides));
            assert!(outside.is_err(), "{offset} {shape:?} {strides:?}");
        }
    }
}
