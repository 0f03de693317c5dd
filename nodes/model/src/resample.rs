//! Resizing `[batch, channels, height, width]` f32 tensors the way ComfyUI's
//! `common_upscale` does: torch's `F.interpolate` for `nearest-exact`,
//! `bilinear`, `area` and `bicubic` (no antialias, `align_corners=False`),
//! and a Lanczos filter for `lanczos` (ComfyUI goes through PIL there; ours is
//! the `image` crate's Lanczos3 on the f32 values, equal up to PIL's 8-bit
//! rounding).
//!
//! Every mode is separable: rows are resampled, then columns, each output
//! position a weighted sum of a few input positions ("taps") computed once per
//! axis with torch's index formulas (`aten/src/ATen/native/UpSample.h`).

use candle_core::{Device, Tensor};

/// ComfyUI's upscale method names, in its widget order.
pub const METHODS: [&str; 5] = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    NearestExact,
    Bilinear,
    Area,
    Bicubic,
    Lanczos,
}

impl Method {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "nearest-exact" => Method::NearestExact,
            "bilinear" => Method::Bilinear,
            "area" => Method::Area,
            "bicubic" => Method::Bicubic,
            "lanczos" => Method::Lanczos,
            _ => return None,
        })
    }
}

/// One output position: `(input index, weight)` pairs.
type Taps = Vec<(usize, f32)>;

/// `x` (`[b, c, h, w]`) resized to `height × width` with `method`.
pub fn resize(
    x: &Tensor,
    height: usize,
    width: usize,
    method: Method,
) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if height == 0 || width == 0 || h == 0 || w == 0 {
        candle_core::bail!("cannot resize {h}x{w} to {height}x{width}");
    }
    let values = x
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let (rows, cols) = (axis_taps(h, height, method), axis_taps(w, width, method));
    let mut out = Vec::with_capacity(b * c * height * width);
    let mut across = vec![0f32; h * width];
    for plane in values.chunks_exact(h * w) {
        for (row, target) in plane.chunks_exact(w).zip(across.chunks_exact_mut(width)) {
            for (t, taps) in target.iter_mut().zip(&cols) {
                *t = taps.iter().map(|&(i, k)| row[i] * k).sum();
            }
        }
        for taps in &rows {
            out.extend((0..width).map(|x| {
                taps.iter()
                    .map(|&(i, k)| across[i * width + x] * k)
                    .sum::<f32>()
            }));
        }
    }
    Tensor::from_vec(out, (b, c, height, width), &Device::Cpu)?.to_device(x.device())
}

/// The taps of every output position along an axis of `input` positions.
fn axis_taps(input: usize, output: usize, method: Method) -> Vec<Taps> {
    let scale = input as f64 / output as f64;
    let last = input - 1;
    (0..output)
        .map(|o| match method {
            Method::NearestExact => {
                let i = (((o as f64 + 0.5) * scale).floor() as usize).min(last);
                vec![(i, 1.0)]
            }
            Method::Bilinear => {
                let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(last);
                let i1 = (i0 + 1).min(last);
                let t = (src - i0 as f64) as f32;
                vec![(i0, 1.0 - t), (i1, t)]
            }
            Method::Area => {
                let start = (o * input) / output;
                let end = ((o + 1) * input).div_ceil(output);
                let k = 1.0 / (end - start) as f32;
                (start..end).map(|i| (i, k)).collect()
            }
            Method::Bicubic => {
                let src = (o as f64 + 0.5) * scale - 0.5;
                let i0 = src.floor();
                let t = (src - i0) as f32;
                let clamp = |i: f64| (i.max(0.0) as usize).min(last);
                cubic_weights(t)
                    .into_iter()
                    .enumerate()
                    .map(|(k, weight)| (clamp(i0 - 1.0 + k as f64), weight))
                    .collect()
            }
            Method::Lanczos => lanczos_taps(o, input, scale),
        })
        .collect()
}

/// torch's cubic convolution weights (A = -0.75) for offsets -1, 0, 1, 2.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Lanczos (a = 3) taps, the support widened by the scale when shrinking
/// (as PIL does), normalised to sum to one, edges clamped.
fn lanczos_taps(o: usize, input: usize, scale: f64) -> Taps {
    const A: f64 = 3.0;
    let support = A * scale.max(1.0);
    let center = (o as f64 + 0.5) * scale;
    let first = (center - support).floor().max(0.0) as usize;
    let end = ((center + support).ceil() as usize).min(input);
    let sinc = |x: f64| {
        if x == 0.0 {
            1.0
        } else {
            let px = std::f64::consts::PI * x;
            px.sin() / px
        }
    };
    let mut taps: Vec<(usize, f64)> = (first..end)
        .map(|i| {
            let x = (i as f64 + 0.5 - center) / scale.max(1.0);
            let weight = if x.abs() < A {
                sinc(x) * sinc(x / A)
            } else {
                0.0
            };
            (i, weight)
        })
        .collect();
    let total: f64 = taps.iter().map(|(_, w)| w).sum();
    if total.abs() < f64::EPSILON {
        taps = vec![(
            ((center - 0.5).round().max(0.0) as usize).min(input - 1),
            1.0,
        )];
    }
    let total: f64 = taps.iter().map(|(_, w)| w).sum();
    taps.into_iter()
        .map(|(i, w)| (i, (w / total) as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: usize, w: usize) -> Tensor {
        let values: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
        Tensor::from_vec(values, (1, 1, h, w), &Device::Cpu).unwrap()
    }

    #[test]
    fn every_method_keeps_a_constant_image_constant() {
        let flat = Tensor::full(0.25f32, (2, 3, 5, 7), &Device::Cpu).unwrap();
        for name in METHODS {
            let method = Method::parse(name).unwrap();
            for (h, w) in [(9, 11), (3, 4), (5, 7)] {
                let out = resize(&flat, h, w, method).unwrap();
                assert_eq!(out.dims(), [2, 3, h, w]);
                let values = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert!(
                    values.iter().all(|v| (v - 0.25).abs() < 1e-6),
                    "{name} {h}x{w}: {values:?}"
                );
            }
        }
    }

    #[test]
    fn area_halving_averages_pairs_and_nearest_picks_centres() {
        let x = ramp(2, 4);
        let area = resize(&x, 1, 2, Method::Area).unwrap();
        assert_eq!(
            area.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [2.5, 4.5]
        );
        let nearest = resize(&x, 2, 2, Method::NearestExact).unwrap();
        assert_eq!(
            nearest.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [1.0, 3.0, 5.0, 7.0]
        );
    }
}
