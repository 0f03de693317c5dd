//! gemm's `gemm::gemm` (raw pointers and strides) as a safe call on strided matrices whose
//! extents are checked once, when they are described.

use std::marker::PhantomData;

/// A read-only `rows × cols` matrix inside a slice: element `(r, c)` is
/// `data[offset + r·row_stride + c·col_stride]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// Panics unless every element (the last one, `(rows − 1, cols − 1)`) lies inside `data`.
    #[inline]
    pub fn new(
        data: &'a [f32],
        offset: usize,
        (rows, cols): (usize, usize),
        (row_stride, col_stride): (usize, usize),
    ) -> Self {
        assert!(
            fits(data.len(), offset, (rows, cols), (row_stride, col_stride)),
            "matrix of {rows}x{cols} at {offset} (strides {row_stride}, {col_stride}) past {}",
            data.len()
        );
        Self {
            data,
            offset,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    fn ptr(&self) -> *const f32 {
        // In bounds whenever an element is read (checked in `new`); not dereferenced otherwise.
        self.data.as_ptr().wrapping_add(self.offset)
    }
}

/// A `rows × cols` matrix written through: element `(r, c)` is `r·row_stride + c·col_stride`
/// elements past its first, and no two elements share a place. Made from a `&mut [f32]`
/// ([`MatMut::new`]) or from a [`super::shared_out::Tile`].
pub struct MatMut<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
    _data: PhantomData<&'a mut [f32]>,
}

impl<'a> MatMut<'a> {
    /// A matrix in `data`, row-major (`col_stride` 1, `row_stride ≥ cols`) or column-major
    /// (`row_stride` 1, `col_stride ≥ rows`); panics unless it is one of these and lies inside
    /// `data`.
    #[inline]
    pub fn new(
        data: &'a mut [f32],
        (rows, cols): (usize, usize),
        (row_stride, col_stride): (usize, usize),
    ) -> Self {
        assert!(
            fits(data.len(), 0, (rows, cols), (row_stride, col_stride)),
            "output matrix of {rows}x{cols} (strides {row_stride}, {col_stride}) past {}",
            data.len()
        );
        // SAFETY: the whole matrix lies inside `data` (asserted), which this borrows mutably
        // for `'a`.
        unsafe { Self::from_raw(data.as_mut_ptr(), (rows, cols), (row_stride, col_stride)) }
    }

    /// # Safety
    /// Every element `(r, c)`, `r < rows`, `c < cols`, at `ptr + r·row_stride + c·col_stride`,
    /// must be inside one allocation and writable by this matrix alone for `'a`.
    pub(super) unsafe fn from_raw(
        ptr: *mut f32,
        (rows, cols): (usize, usize),
        (row_stride, col_stride): (usize, usize),
    ) -> Self {
        let row_major = col_stride == 1 && (row_stride >= cols || rows <= 1);
        let column_major = row_stride == 1 && (col_stride >= rows || cols <= 1);
        assert!(
            row_major || column_major || rows == 0 || cols == 0,
            "output matrix of {rows}x{cols}: strides {row_stride}, {col_stride} overlap"
        );
        Self {
            ptr,
            rows,
            cols,
            row_stride,
            col_stride,
            _data: PhantomData,
        }
    }
}

/// Whether a `rows × cols` matrix at `offset` with these strides lies inside `len` elements
/// (an empty one always does), with strides that fit gemm's `isize`.
fn fits(len: usize, offset: usize, (rows, cols): (usize, usize), (rs, cs): (usize, usize)) -> bool {
    if rs > isize::MAX as usize || cs > isize::MAX as usize {
        return false;
    }
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1)
        .checked_mul(rs)
        .zip((cols - 1).checked_mul(cs))
        .and_then(|(r, c)| r.checked_add(c))
        .and_then(|far| far.checked_add(offset));
    last.is_some_and(|last| last < len)
}

/// `dst = scale · lhs · rhs` (`dst`'s previous values are not read), by gemm on the calling
/// thread. Panics unless the shapes agree (`lhs` `m × k`, `rhs` `k × n`, `dst` `m × n`).
#[inline]
pub fn gemm(dst: MatMut<'_>, lhs: Mat<'_>, rhs: Mat<'_>, scale: f32) {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    assert!(
        lhs.rows == m && rhs.rows == k && rhs.cols == n,
        "gemm: {}x{} · {}x{} into {m}x{n}",
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for r in 0..m {
            for c in 0..n {
                // SAFETY: `(r, c)` is an element of `dst` (`MatMut`'s invariant).
                unsafe { *dst.ptr.add(r * dst.row_stride + c * dst.col_stride) = 0.0 };
            }
        }
        return;
    }
    // SAFETY: every element gemm reads, `(i, p)` of `lhs` for `i < m`, `p < k` and `(p, j)` of
    // `rhs` for `j < n`, lies inside their slices (checked by `Mat::new`); every element it
    // writes, `(i, j)` of `dst`, is inside `dst`'s exclusive borrow, all distinct (`MatMut`'s
    // invariant). The strides fit `isize` (checked with the extents). `dst` is borrowed mutably
    // and the operands shared, so they do not overlap; `Parallelism::None` keeps the work on
    // this thread.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col_stride as isize,
            dst.row_stride as isize,
            false,
            lhs.ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], (m, n, k): (usize, usize, usize)) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn strided_products_match_the_definition() {
        let (m, n, k) = (5, 3, 4);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| 1.0 - i as f32 * 0.25).collect();
        let expected = naive(&a, &b, (m, n, k));
        // Row-major a and b, column-major c: exact in these small integers and halves.
        let mut c = vec![f32::NAN; m * n];
        gemm(
            MatMut::new(&mut c, (m, n), (1, m)),
            Mat::new(&a, 0, (m, k), (k, 1)),
            Mat::new(&b, 0, (k, n), (n, 1)),
            2.0,
        );
        for i in 0..m {
            for j in 0..n {
                assert_eq!(c[j * m + i], 2.0 * expected[i * n + j]);
            }
        }
        // A zero depth writes zeros.
        gemm(
            MatMut::new(&mut c, (m, n), (n, 1)),
            Mat::new(&a, 0, (m, 0), (k, 1)),
            Mat::new(&b, 0, (0, n), (n, 1)),
            1.0,
        );
        assert!(c.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn extents_are_checked_to_the_last_element() {
        let mut data = vec![0f32; 12];
        let _ = Mat::new(&data, 0, (3, 4), (4, 1));
        let _ = Mat::new(&data, 0, (4, 3), (1, 4));
        let _ = Mat::new(&data, 12, (0, 3), (1, 4));
        let _ = MatMut::new(&mut data, (4, 3), (1, 4));
        for (offset, shape, strides) in [(1, (3, 4), (4, 1)), (0, (4, 3), (1, 5))] {
            let outside = std::panic::catch_unwind(|| Mat::new(&data, offset, shape, strides));
            assert!(outside.is_err(), "{offset} {shape:?} {strides:?}");
        }
        for (shape, strides) in [((3, 4), (4, 2)), ((3, 4), (3, 1)), ((4, 3), (1, 5))] {
            let bad = std::panic::catch_unwind(move || {
                let mut data = vec![0f32; 12];
                let _ = MatMut::new(&mut data, shape, strides);
            });
            assert!(bad.is_err(), "{shape:?} {strides:?}");
        }
    }
}
