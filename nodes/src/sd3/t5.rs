//! SD3's optional T5-XXL text encoder: `candle_transformers::models::t5::T5EncoderModel` with
//! the two configurations the project uses.
//!
//! Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
//! Transformer" (arXiv 1910.10683); reference transformers `models/t5/modeling_t5.py` (v5.23).
//! SD3 feeds it ids padded to the T5 length with 0, no attention mask (diffusers
//! `_get_t5_prompt_embeds`, docs/parity.md, "Pipeline conventions"). Keys: `shared.weight`, `encoder.*`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::t5::{ActivationWithOptionalGating, Config, T5EncoderModel};

/// Google's T5 v1.1 XXL encoder as shipped with SD3 (`text_encoders/t5xxl_fp16.safetensors`).
pub fn t5_xxl() -> Config {
    Config {
        vocab_size: 32128,
        d_model: 4096,
        d_kv: 64,
        d_ff: 10240,
        num_layers: 24,
        num_decoder_layers: None,
        num_heads: 64,
        relative_attention_num_buckets: 32,
        relative_attention_max_distance: 128,
        dropout_rate: 0.0,
        layer_norm_epsilon: 1e-6,
        initializer_factor: 1.0,
        feed_forward_proj: ActivationWithOptionalGating {
            gated: true,
            activation: candle_nn::Activation::NewGelu,
        },
        tie_word_embeddings: false,
        is_decoder: false,
        is_encoder_decoder: false,
        use_cache: false,
        pad_token_id: 0,
        eos_token_id: 1,
        decoder_start_token_id: None,
    }
}

/// The tiny T5 of the parity fixtures (docs/parity.md, "Tiny fixtures").
pub fn t5_tiny() -> Config {
    Config {
        d_model: 128,
        d_kv: 32,
        d_ff: 256,
        num_layers: 2,
        num_heads: 4,
        ..t5_xxl()
    }
}

/// A T5 encoder; the forward pass needs no mutable state.
#[derive(Debug, Clone)]
pub struct T5Encoder {
    model: T5EncoderModel,
    d_model: usize,
}

impl T5Encoder {
    /// Loads `shared.weight` and `encoder.*` from `vb` (for a single file,
    /// `vb.pp("text_encoders.t5xxl.transformer")`).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            model: T5EncoderModel::load(vb, cfg)?,
            d_model: cfg.d_model,
        })
    }

    /// Width of the output states.
    pub fn d_model(&self) -> usize {
        self.d_model
    }

    /// Last hidden states `[batch, seq, d_model]` of ids `[batch, seq]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        // `T5EncoderModel::forward` takes `&mut self` for a decoder cache the encoder never
        // fills (use_cache is off for encoders); a clone only copies reference counts.
        self.model.clone().forward(ids)
    }
}
