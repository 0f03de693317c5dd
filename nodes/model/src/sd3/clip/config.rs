//! CLIP text-encoder configurations: the two SD3 encoders and their tiny test twins.
//!
//! Sizes from the SD3 checkpoints (CLIP-L/14 and OpenCLIP bigG/14 text towers) and
//! transformers' `CLIPTextConfig`; tiny sizes from docs/parity.md, "Tiny fixtures".

/// The MLP activation (transformers `hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)` (`quick_gelu`, CLIP-L).
    QuickGelu,
    /// Exact erf GELU (`gelu`, OpenCLIP bigG).
    GeluErf,
}

/// A CLIP text transformer's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub activation: Activation,
    pub layer_norm_eps: f64,
    /// Output width of `text_projection` (when the checkpoint has one).
    pub projection_dim: usize,
}

impl ClipConfig {
    /// OpenAI CLIP ViT-L/14 text tower (SD3 `clip_l`).
    pub fn clip_l() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            activation: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            projection_dim: 768,
        }
    }

    /// OpenCLIP ViT-bigG/14 text tower (SD3 `clip_g`).
    pub fn clip_g() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 1280,
            intermediate_size: 5120,
            num_hidden_layers: 32,
            num_attention_heads: 20,
            max_position_embeddings: 77,
            activation: Activation::GeluErf,
            layer_norm_eps: 1e-5,
            projection_dim: 1280,
        }
    }

    /// The tiny CLIP-L of the parity fixtures (docs/parity.md, "Tiny fixtures").
    pub fn tiny_l() -> Self {
        Self {
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 3,
            num_attention_heads: 4,
            projection_dim: 32,
            ..Self::clip_l()
        }
    }

    /// The tiny CLIP-G of the parity fixtures (docs/parity.md, "Tiny fixtures").
    pub fn tiny_g() -> Self {
        Self {
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 3,
            num_attention_heads: 4,
            projection_dim: 64,
            ..Self::clip_g()
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
