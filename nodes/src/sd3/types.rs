//! The values SD3 nodes pass along links.

use candle_core::Tensor;

/// A `CONDITIONING` value: what the MMDiT attends to for one prompt.
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// Per-token context, `[batch, 77 + t5_len, joint_dim]`.
    pub context: Tensor,
    /// Pooled CLIP-L ++ CLIP-G vector, `[batch, pooled_dim]`.
    pub pooled: Tensor,
}

/// A `LATENT` value: SD3 latents, `[batch, 16, height / 8, width / 8]`, unscaled
/// (as the transformer sees them).
#[derive(Debug, Clone)]
pub struct Latent {
    pub samples: Tensor,
}

/// An `IMAGE` value: pixels `[batch, height, width, 3]`, f32 in 0..=1 (ComfyUI's layout).
#[derive(Debug, Clone)]
pub struct Image {
    pub pixels: Tensor,
}

/// A `MASK` value: `[batch, height, width]`, f32 in 0..=1 (ComfyUI's layout).
#[derive(Debug, Clone)]
pub struct Mask {
    pub values: Tensor,
}
