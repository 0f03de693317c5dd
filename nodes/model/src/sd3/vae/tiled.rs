//! Tiled decoding, as ComfyUI does it (`comfy/utils.py` `tiled_scale_multidim`,
//! `comfy/sd.py` `VAE.decode_tiled_`): the latent is cut into overlapping tiles, each tile is
//! decoded alone, and the tiles are blended with masks that ramp linearly over the overlap;
//! three such passes with differently shaped tiles are averaged. Memory is that of one tile,
//! not of the image; the price is about 3.8× the decoder's work and small differences from
//! the whole decode where the tiles meet (each tile normalises over itself).

use candle_core::{DType, Result, Tensor};

/// Tile sides and overlap in latent pixels (ComfyUI's `tile_x`, `tile_y`, `overlap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    pub tile_x: usize,
    pub tile_y: usize,
    pub overlap: usize,
}

impl Tiling {
    /// ComfyUI's tiling when a whole decode runs out of memory (`VAE.decode_tiled` defaults).
    pub const FALLBACK: Tiling = Tiling {
        tile_x: 64,
        tile_y: 64,
        overlap: 16,
    };

    /// The three passes `decode_tiled_` averages: tall, wide, square tiles, as (rows, columns).
    fn passes(&self) -> [(usize, usize); 3] {
        let (x, y) = (self.tile_x, self.tile_y);
        [(y * 2, x / 2), (y / 2, x * 2), (y, x)]
    }

    /// How many tiles the three passes decode for a latent of `height` × `width`.
    pub fn tile_count(&self, height: usize, width: usize) -> usize {
        self.passes()
            .iter()
            .map(|&(rows, cols)| {
                if height <= rows && width <= cols {
                    1
                } else {
                    positions(height, rows, self.overlap).len()
                        * positions(width, cols, self.overlap).len()
                }
            })
            .sum()
    }

    fn check(&self) -> Result<()> {
        let smallest = self
            .passes()
            .iter()
            .map(|&(r, c)| r.min(c))
            .min()
            .unwrap_or(0);
        if smallest <= self.overlap {
            candle_core::bail!(
                "tiled decode: tiles of {}×{} latent pixels leave a side of {smallest} after \
                 halving, not more than the overlap {}",
                self.tile_x,
                self.tile_y,
                self.overlap
            );
        }
        Ok(())
    }
}

/// `decode_tiled_`: the mean of [`tiled_scale`] over the three passes of `tiling`, for latents
/// `[b, c, h, w]` and a `decode` from a latent tile to pixels `upscale` times its size;
/// `on_tile` is told after each decoded tile.
pub fn decode_tiled(
    latents: &Tensor,
    tiling: Tiling,
    upscale: usize,
    decode: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    on_tile: &mut dyn FnMut() -> Result<()>,
) -> Result<Tensor> {
    tiling.check()?;
    let mut sum: Option<Tensor> = None;
    for tile in tiling.passes() {
        let pass = tiled_scale(latents, tile, tiling.overlap, upscale, decode, on_tile)?;
        sum = Some(match sum {
            Some(sum) => (sum + pass)?,
            None => pass,
        });
    }
    // A true division, as torch's `/ 3.0` (candle's `/ f64` multiplies by the reciprocal).
    let three = Tensor::new(3f32, latents.device())?;
    match sum {
        Some(sum) => sum.broadcast_div(&three),
        None => candle_core::bail!("tiled decode: no pass"),
    }
}

/// The tile origins along one side of `size`: every `tile − overlap` from 0 while short of
/// `size − overlap`, or one tile when it holds the whole side.
fn positions(size: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if size <= tile {
        return vec![0];
    }
    (0..size - overlap).step_by(tile - overlap).collect()
}

/// `tiled_scale_multidim` over two dimensions: `tile` is (rows, columns) of latent pixels.
fn tiled_scale(
    samples: &Tensor,
    tile: (usize, usize),
    overlap: usize,
    upscale: usize,
    decode: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    on_tile: &mut dyn FnMut() -> Result<()>,
) -> Result<Tensor> {
    let (batch, _, height, width) = samples.dims4()?;
    let mut images = Vec::with_capacity(batch);
    for b in 0..batch {
        let s = samples.narrow(0, b, 1)?;
        if height <= tile.0 && width <= tile.1 {
            images.push(decode(&s)?.to_dtype(DType::F32)?);
            on_tile()?;
            continue;
        }
        let mut canvas: Option<Canvas> = None;
        for &row in &positions(height, tile.0, overlap) {
            for &col in &positions(width, tile.1, overlap) {
                let y = row.min(height.saturating_sub(overlap));
                let x = col.min(width.saturating_sub(overlap));
                let rows = tile.0.min(height - y);
                let cols = tile.1.min(width - x);
                let pixels = decode(&s.narrow(2, y, rows)?.narrow(3, x, cols)?)?;
                let pixels = pixels.to_dtype(DType::F32)?;
                let canvas = match &mut canvas {
                    Some(canvas) => canvas,
                    None => canvas.insert(Canvas::new(
                        pixels.dim(1)?,
                        height * upscale,
                        width * upscale,
                    )),
                };
                canvas.add(&pixels, y * upscale, x * upscale, overlap * upscale)?;
                on_tile()?;
            }
        }
        match canvas {
            Some(canvas) => images.push(canvas.finish(samples.device())?),
            None => candle_core::bail!("tiled decode: an empty latent"),
        }
    }
    Tensor::cat(&images, 0)
}

/// The blended output of one image: `Σ pixels·mask` and `Σ mask`, row-major per channel.
struct Canvas {
    channels: usize,
    height: usize,
    width: usize,
    sum: Vec<f32>,
    weight: Vec<f32>,
}

impl Canvas {
    fn new(channels: usize, height: usize, width: usize) -> Self {
        Canvas {
            channels,
            height,
            width,
            sum: vec![0.; channels * height * width],
            weight: vec![0.; height * width],
        }
    }

    /// Adds a decoded tile `[1, channels, rows, cols]` at (`top`, `left`) under its mask.
    fn add(&mut self, pixels: &Tensor, top: usize, left: usize, feather: usize) -> Result<()> {
        let (_, channels, rows, cols) = pixels.dims4()?;
        if channels != self.channels || top + rows > self.height || left + cols > self.width {
            candle_core::bail!(
                "tiled decode: a tile {:?} at ({top}, {left}) does not fit {}×{}×{}",
                pixels.dims(),
                self.channels,
                self.height,
                self.width
            );
        }
        let values = pixels.flatten_all()?.to_vec1::<f32>()?;
        let row_ramp = ramp(rows, feather);
        let col_ramp = ramp(cols, feather);
        for (i, row_mask) in row_ramp.iter().enumerate() {
            for (j, col_factors) in col_ramp.iter().enumerate() {
                // torch multiplies the whole mask by each row factor, then by each column
                // factor, in f32.
                let row: f32 = row_mask.iter().product();
                let mask = col_factors.iter().fold(row, |m, a| m * a);
                let at = (top + i) * self.width + left + j;
                self.weight[at] += mask;
                for c in 0..channels {
                    let value = values[(c * rows + i) * cols + j];
                    self.sum[c * self.height * self.width + at] += value * mask;
                }
            }
        }
        Ok(())
    }

    /// `Σ pixels·mask / Σ mask`, `[1, channels, height, width]`.
    fn finish(self, device: &candle_core::Device) -> Result<Tensor> {
        let plane = self.height * self.width;
        let pixels: Vec<f32> = self
            .sum
            .iter()
            .enumerate()
            .map(|(k, &v)| v / self.weight[k % plane])
            .collect();
        Tensor::from_vec(pixels, (1, self.channels, self.height, self.width), device)
    }
}

/// For each of `len` positions, the factors its mask is multiplied by, in ComfyUI's order:
/// for `t` in `0..feather`, `(t + 1) / feather` at `t` and at `len − 1 − t`. No ramp when
/// the feather is not shorter than the side.
fn ramp(len: usize, feather: usize) -> Vec<Vec<f32>> {
    let mut factors = vec![Vec::new(); len];
    if feather >= len {
        return factors;
    }
    for t in 0..feather {
        let a = ((t + 1) as f64 / feather as f64) as f32;
        factors[t].push(a);
        factors[len - 1 - t].push(a);
    }
    factors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd3::test_tensors::random;

    fn nearest(up: usize) -> impl FnMut(&Tensor) -> Result<Tensor> {
        move |t: &Tensor| {
            let (_, _, h, w) = t.dims4()?;
            t.narrow(1, 0, 3)?.upsample_nearest2d(h * up, w * up)
        }
    }

    /// Decoding that looks at each pixel alone is undone by no tiling: the blend of equal
    /// values is that value, wherever the tiles fall (short last tiles, batches included).
    #[test]
    fn pointwise_decoding_is_unchanged_by_tiling() -> Result<()> {
        let latents = random(1, &[2, 4, 21, 30])?;
        let whole = nearest(2)(&latents)?;
        let tiling = Tiling {
            tile_x: 8,
            tile_y: 12,
            overlap: 3,
        };
        let mut tiles = 0;
        let tiled = decode_tiled(&latents, tiling, 2, &mut nearest(2), &mut || {
            tiles += 1;
            Ok(())
        })?;
        let diff = (tiled - &whole)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{diff}");
        assert_eq!(tiles, 2 * tiling.tile_count(21, 30));
        Ok(())
    }

    #[test]
    fn a_latent_within_every_tile_is_decoded_whole() -> Result<()> {
        let tiling = Tiling {
            tile_x: 64,
            tile_y: 64,
            overlap: 16,
        };
        assert_eq!(tiling.tile_count(32, 32), 3);
        assert_eq!(positions(128, 64, 16), vec![0, 48, 96]);
        Ok(())
    }

    #[test]
    fn an_overlap_as_wide_as_a_tile_is_refused() {
        let tiling = Tiling {
            tile_x: 8,
            tile_y: 8,
            overlap: 4,
        };
        let latents = random(1, &[1, 4, 20, 20]).unwrap();
        let err = decode_tiled(&latents, tiling, 2, &mut nearest(2), &mut || Ok(()));
        assert!(err.unwrap_err().to_string().contains("overlap"));
    }
}
