//! Cheap latent previews: a fixed 16×3 linear map from SD3 latents to RGB.
//!
//! Reference: ComfyUI `comfy/latent_formats.py` (`SD3.latent_rgb_factors`,
//! `latent_rgb_factors_bias`) and `latent_preview.py` (`Latent2RGBPreviewer`:
//! `((x + 1) / 2).clamp(0, 1) · 255`).

use candle_core::{DType, Result, Tensor};

/// Rows: latent channels; columns: R, G, B.
const SD3_RGB_FACTORS: [[f32; 3]; 16] = [
    [-0.0922, -0.0175, 0.0749],
    [0.0311, 0.0633, 0.0954],
    [0.1994, 0.0927, 0.0458],
    [0.0856, 0.0339, 0.0902],
    [0.0587, 0.0272, -0.0496],
    [-0.0006, 0.1104, 0.0309],
    [0.0978, 0.0306, 0.0427],
    [-0.0042, 0.1038, 0.1358],
    [-0.0194, 0.0020, 0.0669],
    [-0.0488, 0.0130, -0.0268],
    [0.0922, 0.0988, 0.0951],
    [-0.0278, 0.0524, -0.0542],
    [0.0332, 0.0456, 0.0895],
    [-0.0069, -0.0030, -0.0810],
    [-0.0596, -0.0465, -0.0293],
    [-0.1448, -0.1463, -0.1189],
];
const SD3_RGB_BIAS: [f32; 3] = [0.2394, 0.2135, 0.1925];

/// A small RGB image, row-major `height × width × 3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbPreview {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// Previews the first item of `latent` (`[b, 16, h, w]`, transformer space):
/// one pixel per latent cell.
pub fn preview(latent: &Tensor) -> Result<RgbPreview> {
    let first = latent.get(0)?.to_dtype(DType::F32)?; // [16, h, w]
    let (c, height, width) = first.dims3()?;
    if c != SD3_RGB_FACTORS.len() {
        candle_core::bail!("latent preview expects 16 channels, got {c}");
    }
    let values = first.flatten_from(1)?.t()?.to_vec2::<f32>()?; // [h*w, 16]
    let mut rgb = Vec::with_capacity(values.len() * 3);
    for cell in &values {
        for (k, bias) in SD3_RGB_BIAS.iter().enumerate() {
            let v = bias
                + cell
                    .iter()
                    .zip(&SD3_RGB_FACTORS)
                    .map(|(x, f)| x * f[k])
                    .sum::<f32>();
            rgb.push((((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0) as u8);
        }
    }
    Ok(RgbPreview { width, height, rgb })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn zero_latent_shows_the_bias_and_channels_map_linearly() -> Result<()> {
        let dev = Device::Cpu;
        let zeros = Tensor::zeros((1, 16, 2, 3), DType::F32, &dev)?;
        let p = preview(&zeros)?;
        assert_eq!((p.width, p.height, p.rgb.len()), (3, 2, 18));
        // (0.2394 + 1) / 2 · 255 = 158.02
        assert_eq!(&p.rgb[..3], &[158, 154, 152]);
        // Channel 2 at +5 pushes red up by 5·0.1994.
        let mut v = vec![0f32; 16];
        v[2] = 5.0;
        let one = Tensor::from_vec(v, (1, 16, 1, 1), &dev)?;
        let p = preview(&one)?;
        assert_eq!(
            p.rgb[0],
            (((0.2394 + 5.0 * 0.1994 + 1.0) / 2.0) * 255.0) as u8
        );
        Ok(())
    }
}
