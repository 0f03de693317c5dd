//! One output buffer that parallel tasks write, each in its own tile: the buffer is borrowed
//! mutably once, split into tiles that provably do not overlap, and each tile is then an
//! exclusive borrow of its elements that a task owns.

use std::marker::PhantomData;
use std::ops::Range;

use super::gemm::MatMut;

/// An output matrix (rows `row_stride` apart in one buffer) to be split into tiles
/// `row_ranges[i] × col_ranges[j]`.
pub struct SharedOut<'a> {
    ptr: *mut f32,
    row_stride: usize,
    row_ranges: Vec<Range<usize>>,
    col_ranges: Vec<Range<usize>>,
    _out: PhantomData<&'a mut [f32]>,
}

impl<'a> SharedOut<'a> {
    /// Panics unless the ranges of each list are increasing and disjoint, the columns lie
    /// within a row (`row_stride`) and the rows within `out`: then two tiles with different
    /// `(i, j)` share no element, and every tile lies inside `out`.
    pub fn new(
        out: &'a mut [f32],
        row_stride: usize,
        row_ranges: Vec<Range<usize>>,
        col_ranges: Vec<Range<usize>>,
    ) -> Self {
        let increasing = |ranges: &[Range<usize>]| {
            ranges.iter().all(|r| r.start <= r.end)
                && ranges.windows(2).all(|w| w[0].end <= w[1].start)
        };
        assert!(
            increasing(&row_ranges) && increasing(&col_ranges),
            "shared output: tile ranges overlap ({row_ranges:?}, {col_ranges:?})"
        );
        let cols_end = col_ranges.last().map_or(0, |r| r.end);
        let rows_end = row_ranges.last().map_or(0, |r| r.end);
        assert!(
            cols_end <= row_stride
                && rows_end
                    .checked_mul(row_stride)
                    .is_some_and(|end| end <= out.len()),
            "shared output: {rows_end} rows of {row_stride} (columns to {cols_end}) past {}",
            out.len()
        );
        Self {
            ptr: out.as_mut_ptr(),
            row_stride,
            row_ranges,
            col_ranges,
            _out: PhantomData,
        }
    }

    /// The tiles of an output `[batch · channels, plane]` with one tile per image (all its
    /// channels) and per range of `pixel_ranges` in the plane, image by image: a convolution's
    /// tasks. A tile's index is `(image, range)`.
    pub fn image_bands(
        out: &'a mut [f32],
        (batch, channels, plane): (usize, usize, usize),
        pixel_ranges: Vec<Range<usize>>,
    ) -> Vec<Tile<'a>> {
        let bands = pixel_ranges.len();
        let images = (0..batch)
            .map(|image| image * channels..(image + 1) * channels)
            .collect();
        SharedOut::new(out, plane, images, pixel_ranges)
            .into_tiles((0..batch).flat_map(|image| (0..bands).map(move |band| (image, band))))
    }

    /// The tiles `(i, j)` of `order`, in that order; panics if a pair repeats or is out of
    /// range.
    pub fn into_tiles(self, order: impl IntoIterator<Item = (usize, usize)>) -> Vec<Tile<'a>> {
        let columns = self.col_ranges.len();
        let mut taken = vec![false; self.row_ranges.len() * columns];
        order
            .into_iter()
            .map(|(i, j)| {
                assert!(
                    i < self.row_ranges.len() && j < columns && !taken[i * columns + j],
                    "shared output: tile ({i}, {j}) repeated or out of range"
                );
                taken[i * columns + j] = true;
                let (rows, cols) = (self.row_ranges[i].clone(), self.col_ranges[j].clone());
                Tile {
                    // Inside `out` whenever the tile has an element; not dereferenced otherwise.
                    ptr: self
                        .ptr
                        .wrapping_add(rows.start * self.row_stride + cols.start),
                    index: (i, j),
                    rows,
                    cols,
                    row_stride: self.row_stride,
                    _out: PhantomData,
                }
            })
            .collect()
    }
}

/// One task's part of a [`SharedOut`]: rows `rows()` × columns `cols()`, written through
/// `&mut self` only.
pub struct Tile<'a> {
    /// Element `(rows.start, cols.start)`.
    ptr: *mut f32,
    index: (usize, usize),
    rows: Range<usize>,
    cols: Range<usize>,
    row_stride: usize,
    _out: PhantomData<&'a mut [f32]>,
}

// SAFETY: a tile is an exclusive borrow of its elements (no other tile shares one), like a
// `&mut [f32]`, which may be sent to another thread.
unsafe impl Send for Tile<'_> {}

impl<'a> Tile<'a> {
    /// `(i, j)`: its row range and column range in the [`SharedOut`].
    pub fn index(&self) -> (usize, usize) {
        self.index
    }

    /// Its rows of the whole matrix.
    pub fn rows(&self) -> Range<usize> {
        self.rows.clone()
    }

    /// Its columns of the whole matrix.
    pub fn cols(&self) -> Range<usize> {
        self.cols.clone()
    }

    /// Row `r` of the tile (counted from its first row): its `cols().len()` elements.
    #[inline]
    pub fn row_mut(&mut self, r: usize) -> &mut [f32] {
        assert!(r < self.rows.len(), "tile row {r} of {}", self.rows.len());
        // SAFETY: row `r` of the tile is inside the buffer (`SharedOut::new` checked the
        // extent of every tile), shared with no other tile, and borrowed from `self` mutably.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.add(r * self.row_stride), self.cols.len())
        }
    }

    /// The tile as a GEMM output, `[rows, cols]`.
    #[inline]
    pub fn mat_mut(&mut self) -> MatMut<'_> {
        // SAFETY: the tile's elements are inside the buffer, exclusive to this tile, borrowed
        // from `self` mutably; rows lie `row_stride ≥` the columns apart.
        unsafe {
            MatMut::from_raw(
                self.ptr,
                (self.rows.len(), self.cols.len()),
                (self.row_stride, 1),
            )
        }
    }

    /// The tile transposed as a GEMM output, `[cols, rows]` (column-major).
    #[inline]
    pub fn mat_mut_t(&mut self) -> MatMut<'_> {
        // SAFETY: as in `mat_mut`, the same elements.
        unsafe {
            MatMut::from_raw(
                self.ptr,
                (self.cols.len(), self.rows.len()),
                (1, self.row_stride),
            )
        }
    }
}

#[cfg(test)]
// One range in a list is one band of tiles, not a list of its values.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_their_elements_only() {
        let mut buffer = vec![0f32; 12];
        // 3 rows of 4: rows {0..1, 1..3} × columns {0..2, 2..4}.
        let out = SharedOut::new(&mut buffer, 4, vec![0..1, 1..3], vec![0..2, 2..4]);
        let tiles = out.into_tiles([(1, 1), (0, 0), (1, 0), (0, 1)]);
        for mut tile in tiles {
            let (i, j) = tile.index();
            for r in 0..tile.rows().len() {
                tile.row_mut(r).fill((i * 2 + j + 1) as f32);
            }
        }
        assert_eq!(buffer, [1f32, 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]);
    }

    /// A row stride, row ranges and column ranges.
    type Split = (usize, Vec<Range<usize>>, Vec<Range<usize>>);

    #[test]
    fn overlapping_or_outside_tiles_are_refused() {
        let bad: [Split; 5] = [
            (4, vec![0..2, 1..3], vec![0..4]),
            (4, vec![0..3], vec![0..3, 2..4]),
            (4, vec![0..4], vec![0..4]),
            (3, vec![0..3], vec![0..4]),
            (4, vec![0..3], vec![0..5]),
        ];
        for (stride, rows, cols) in bad {
            let refused = std::panic::catch_unwind(move || {
                let mut buffer = vec![0f32; 12];
                let _ = SharedOut::new(&mut buffer, stride, rows, cols);
            });
            assert!(refused.is_err());
        }
        let repeated = std::panic::catch_unwind(|| {
            let mut buffer = vec![0f32; 12];
            SharedOut::new(&mut buffer, 4, vec![0..3], vec![0..4]).into_tiles([(0, 0), (0, 0)]);
        });
        assert!(repeated.is_err());
        let row_past = std::panic::catch_unwind(|| {
            let mut buffer = vec![0f32; 12];
            let mut tiles =
                SharedOut::new(&mut buffer, 4, vec![0..3], vec![0..4]).into_tiles([(0, 0)]);
            tiles[0].row_mut(3);
        });
        assert!(row_past.is_err());
    }
}
