//! The decoder's `Upsample`: nearest ×2, then a 3×3 convolution (padding 1), computed in bands
//! of output rows so that the upsampled activation (4× its input) never exists whole: at
//! 1024² it would be 1 GiB beside its input and the convolution's output.

use candle_core::{Result, Tensor};

use super::conv2d::Conv2d;

/// The most bytes one band of the upsampled activation takes.
const BAND_BYTES: usize = 64 << 20;

/// `conv(upsample_nearest(x, 2×))` for `x` `[b, c, h, w]`.
pub fn upsample_conv(x: &Tensor, conv: &Conv2d) -> Result<Tensor> {
    in_bands(x, conv, BAND_BYTES)
}

/// [`upsample_conv`] with bands of at most `band_bytes` of upsampled rows (an even count).
fn in_bands(x: &Tensor, conv: &Conv2d, band_bytes: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (out_h, out_w) = (2 * h, 2 * w);
    let row_bytes = b * c * out_w * x.dtype().size_in_bytes();
    let band = (band_bytes / row_bytes.max(1)) / 2 * 2;
    if band < 2 || band >= out_h {
        return x.upsample_nearest2d(out_h, out_w)?.apply(conv);
    }
    let mut out: Option<Tensor> = None;
    for start in (0..out_h).step_by(band) {
        crate::check_interrupted()?;
        let end = (start + band).min(out_h);
        let y = band_rows(x, conv, start, end)?;
        let out = match &out {
            Some(out) => out,
            None => out.insert(Tensor::zeros(
                (b, y.dim(1)?, out_h, out_w),
                y.dtype(),
                y.device(),
            )?),
        };
        out.slice_set(&y, 2, start)?;
    }
    out.ok_or_else(|| candle_core::Error::Msg("upsample: an empty image".into()))
}

/// Output rows `start..end` (`start` even) of the convolution over the upsampled `x`. The
/// band's input starts two rows above `start` (an even row, so that the convolution's 2×2
/// output tiles fall where they fall over the whole image) and ends one row below `end`.
fn band_rows(x: &Tensor, conv: &Conv2d, start: usize, end: usize) -> Result<Tensor> {
    let out_h = 2 * x.dim(2)?;
    let out_w = 2 * x.dim(3)?;
    let lo = start.saturating_sub(2);
    let hi = (end + 1).min(out_h);
    // Upsampled rows lo..hi repeat input rows lo/2 ..= (hi-1)/2.
    let (in_lo, in_hi) = (lo / 2, (hi - 1) / 2 + 1);
    let upsampled = x
        .narrow(2, in_lo, in_hi - in_lo)?
        .upsample_nearest2d(2 * (in_hi - in_lo), out_w)?
        .narrow(2, lo - 2 * in_lo, hi - lo)?;
    upsampled
        .apply(conv)?
        .narrow(2, start - lo, end - start)?
        .contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd3::test_tensors::{max_abs_diff, random};

    /// Bands against the whole upsampled activation: four rows per band (the last one
    /// shorter), two images.
    #[test]
    fn bands_compute_the_whole_convolution() -> Result<()> {
        let (b, c, h, w) = (2, 3, 9, 10);
        let x = random(1, &[b, c, h, w])?;
        let conv = Conv2d::new(random(2, &[5, c, 3, 3])?, random(3, &[5])?, 1, 1)?;
        let four_rows = 4 * b * c * 2 * w * 4;
        let whole = x.upsample_nearest2d(2 * h, 2 * w)?.apply(&conv)?;
        let banded = in_bands(&x, &conv, four_rows)?;
        assert_eq!(banded.dims(), whole.dims());
        assert_eq!(max_abs_diff(&banded, &whole)?, 0.0);
        Ok(())
    }
}
