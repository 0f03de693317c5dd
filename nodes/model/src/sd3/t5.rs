//! SD3's optional T5-XXL text encoder, as SD3 uses it: the encoder stack only, no attention
//! mask, activations in f32 on the CPU (T5 overflows in f16), every projection a
//! [`crate::sd3::linear::Linear`].
//!
//! Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
//! Transformer" (arXiv 1910.10683); reference transformers `models/t5/modeling_t5.py` (v5.23):
//! pre-norm blocks with RMS norm (no mean, no bias), unscaled attention plus a relative position
//! bias that block 0 computes and every block reuses, a gated-GELU (tanh) feed-forward.
//! SD3 feeds it ids padded to the T5 length with 0, no attention mask (diffusers
//! `_get_t5_prompt_embeds`, docs/parity.md, "Pipeline conventions"). Keys: `shared.weight`
//! (or `encoder.embed_tokens.weight`), `encoder.*`.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{self as nn, Embedding, VarBuilder};

use super::linear::{linear_no_bias, Linear};
use super::precision;

/// The shapes of a T5 encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    pub layer_norm_epsilon: f64,
}

/// Google's T5 v1.1 XXL encoder as shipped with SD3 (`text_encoders/t5xxl_fp16.safetensors`).
pub fn t5_xxl() -> T5Config {
    T5Config {
        vocab_size: 32128,
        d_model: 4096,
        d_kv: 64,
        d_ff: 10240,
        num_layers: 24,
        num_heads: 64,
        relative_attention_num_buckets: 32,
        relative_attention_max_distance: 128,
        layer_norm_epsilon: 1e-6,
    }
}

/// The tiny T5 of the parity fixtures (docs/parity.md, "Tiny fixtures").
pub fn t5_tiny() -> T5Config {
    T5Config {
        d_model: 128,
        d_kv: 32,
        d_ff: 256,
        num_layers: 2,
        num_heads: 4,
        ..t5_xxl()
    }
}

/// T5's layer norm: `x / sqrt(mean(x²) + eps) · weight`, without mean subtraction or bias.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(cfg.d_model, "weight")?.to_dtype(DType::F32)?,
            eps: cfg.layer_norm_epsilon as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        nn::ops::rms_norm(x, &self.weight.to_dtype(x.dtype())?, self.eps)
    }
}

/// A projection without bias.
fn projection(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    linear_no_bias(in_dim, out_dim, vb)
}

#[derive(Debug, Clone)]
struct SelfAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    num_heads: usize,
    d_kv: usize,
}

impl SelfAttention {
    fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        let inner = cfg.num_heads * cfg.d_kv;
        Ok(Self {
            q: projection(cfg.d_model, inner, vb.pp("q"))?,
            k: projection(cfg.d_model, inner, vb.pp("k"))?,
            v: projection(cfg.d_model, inner, vb.pp("v"))?,
            o: projection(inner, cfg.d_model, vb.pp("o"))?,
            num_heads: cfg.num_heads,
            d_kv: cfg.d_kv,
        })
    }

    /// `softmax(q·kᵀ + bias)·v` (T5 does not scale the scores), `bias` `[1, heads, seq, seq]`.
    fn forward(&self, x: &Tensor, position_bias: &Tensor) -> Result<Tensor> {
        let (batch, seq, _) = x.dims3()?;
        let heads = |t: Tensor| {
            t.reshape((batch, seq, self.num_heads, self.d_kv))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(self.q.forward(x)?)?;
        let k = heads(self.k.forward(x)?)?;
        let v = heads(self.v.forward(x)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(position_bias)?;
        let weights = nn::ops::softmax_last_dim(&scores)?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((
            batch,
            seq,
            self.num_heads * self.d_kv,
        ))?;
        self.o.forward(&out)
    }
}

/// `wo(gelu_tanh(wi_0·x) ⊙ wi_1·x)`.
#[derive(Debug, Clone)]
struct GatedGeluFeedForward {
    wi_0: Linear,
    wi_1: Linear,
    wo: Linear,
}

impl GatedGeluFeedForward {
    fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            wi_0: projection(cfg.d_model, cfg.d_ff, vb.pp("wi_0"))?,
            wi_1: projection(cfg.d_model, cfg.d_ff, vb.pp("wi_1"))?,
            wo: projection(cfg.d_ff, cfg.d_model, vb.pp("wo"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.wi_0.forward(x)?.gelu()?;
        self.wo.forward(&(gate * self.wi_1.forward(x)?)?)
    }
}

#[derive(Debug, Clone)]
struct Block {
    attention_norm: RmsNorm,
    attention: SelfAttention,
    feed_forward_norm: RmsNorm,
    feed_forward: GatedGeluFeedForward,
}

impl Block {
    /// `vb` at `encoder.block.{i}.layer`.
    fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            attention_norm: RmsNorm::new(cfg, vb.pp("0.layer_norm"))?,
            attention: SelfAttention::new(cfg, vb.pp("0.SelfAttention"))?,
            feed_forward_norm: RmsNorm::new(cfg, vb.pp("1.layer_norm"))?,
            feed_forward: GatedGeluFeedForward::new(cfg, vb.pp("1.DenseReluDense"))?,
        })
    }

    fn forward(&self, x: &Tensor, position_bias: &Tensor) -> Result<Tensor> {
        let x = (x + self
            .attention
            .forward(&self.attention_norm.forward(x)?, position_bias)?)?;
        &x + self
            .feed_forward
            .forward(&self.feed_forward_norm.forward(&x)?)?
    }
}

/// Block 0's learned bias per (relative-position bucket, head).
#[derive(Debug, Clone)]
struct RelativePositionBias {
    table: Tensor,
    num_buckets: usize,
    max_distance: usize,
}

impl RelativePositionBias {
    fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            table: vb
                .get(
                    (cfg.relative_attention_num_buckets, cfg.num_heads),
                    "weight",
                )?
                .to_dtype(DType::F32)?,
            num_buckets: cfg.relative_attention_num_buckets,
            max_distance: cfg.relative_attention_max_distance,
        })
    }

    /// `[1, heads, seq, seq]`: the bias of query `i` attending to key `j`.
    fn forward(&self, seq: usize, device: &Device) -> Result<Tensor> {
        let buckets: Vec<u32> = (0..seq)
            .flat_map(|i| (0..seq).map(move |j| (i, j)))
            .map(|(i, j)| self.bucket(j as i64 - i as i64))
            .collect();
        let buckets = Tensor::from_vec(buckets, seq * seq, device)?;
        self.table
            .to_device(device)?
            .index_select(&buckets, 0)?
            .reshape((seq, seq, ()))?
            .permute((2, 0, 1))?
            .unsqueeze(0)
    }

    /// transformers' bidirectional `_relative_position_bucket`: half the buckets for keys after
    /// the query; within each half, exact buckets for distances below a quarter of the buckets,
    /// then logarithmic ones up to `max_distance`.
    fn bucket(&self, relative_position: i64) -> u32 {
        let half = self.num_buckets / 2;
        let offset = if relative_position > 0 { half } else { 0 };
        let distance = relative_position.unsigned_abs() as usize;
        let max_exact = half / 2;
        let within = if distance < max_exact {
            distance
        } else {
            let log_ratio = (distance as f32 / max_exact as f32).ln()
                / (self.max_distance as f32 / max_exact as f32).ln();
            let large = max_exact + (log_ratio * (half - max_exact) as f32) as usize;
            large.min(half - 1)
        };
        (offset + within) as u32
    }
}

/// A T5 encoder; the forward pass needs no mutable state.
#[derive(Debug, Clone)]
pub struct T5Encoder {
    embedding: Embedding,
    position_bias: RelativePositionBias,
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    d_model: usize,
}

impl T5Encoder {
    /// Loads `shared.weight` (or `encoder.embed_tokens.weight`) and `encoder.*` from `vb` (for
    /// a single file, `vb.pp("text_encoders.t5xxl.transformer")`).
    pub fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        let embedding_vb = if vb.contains_tensor("shared.weight") {
            vb.pp("shared")
        } else {
            vb.pp("encoder.embed_tokens")
        };
        let encoder = vb.pp("encoder");
        let blocks = (0..cfg.num_layers)
            .map(|i| Block::new(cfg, encoder.pp(format!("block.{i}.layer"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embedding: precision::stored_embedding(cfg.vocab_size, cfg.d_model, embedding_vb)?,
            position_bias: RelativePositionBias::new(
                cfg,
                encoder.pp("block.0.layer.0.SelfAttention.relative_attention_bias"),
            )?,
            blocks,
            final_norm: RmsNorm::new(cfg, encoder.pp("final_layer_norm"))?,
            d_model: cfg.d_model,
        })
    }

    /// Width of the output states.
    pub fn d_model(&self) -> usize {
        self.d_model
    }

    /// Last hidden states `[batch, seq, d_model]` of ids `[batch, seq]`: f32 on the CPU,
    /// the weights' dtype elsewhere (bf16 on CUDA, which has f32's range).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, seq) = ids.dims2()?;
        let embeds = self.embedding.forward(ids)?;
        let dtype = if embeds.device().is_cpu() {
            DType::F32
        } else {
            embeds.dtype()
        };
        let mut x = embeds.to_dtype(dtype)?;
        let position_bias = self
            .position_bias
            .forward(seq, ids.device())?
            .to_dtype(dtype)?;
        for block in &self.blocks {
            x = block.forward(&x, &position_bias)?;
        }
        self.final_norm.forward(&x)?.contiguous()?.to_dtype(dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xxl_bias() -> RelativePositionBias {
        RelativePositionBias {
            table: Tensor::zeros((32, 1), DType::F32, &Device::Cpu).unwrap(),
            num_buckets: 32,
            max_distance: 128,
        }
    }

    #[test]
    fn buckets_follow_transformers() {
        let bias = xxl_bias();
        // transformers `_relative_position_bucket(bidirectional=True, 32, 128)` at these
        // memory - query offsets.
        let cases = [
            (0, 0),
            (-1, 1),
            (1, 17),
            (-7, 7),
            (7, 23),
            (-8, 8),
            (8, 24),
            (-12, 9),
            (16, 26),
            (-40, 12),
            (127, 31),
            (-128, 15),
            (-1000, 15),
            (1000, 31),
        ];
        for (offset, bucket) in cases {
            assert_eq!(bias.bucket(offset), bucket, "offset {offset}");
        }
    }
}
