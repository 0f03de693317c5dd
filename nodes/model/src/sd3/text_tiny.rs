//! Deterministic tiny random text encoders (CLIP-L, CLIP-G, T5) for tests and parity fixtures.
//!
//! Shapes are the tiny configs of docs/parity.md ("Tiny fixtures"); keys are transformers' state-dict names
//! (`CLIPTextModelWithProjection`, `T5EncoderModel`), without any checkpoint prefix. Values are
//! [`SplitMix64::standard`] deviates (IEEE additions only), so the fixtures are bit-identical on
//! every platform. Each tensor draws from its own stream, seeded from the
//! model seed and the tensor's name, so adding a tensor never changes the others.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::clip::ClipConfig;
use super::rng::{fnv1a, SplitMix64};
use super::t5::t5_tiny;
use super::text_encoders::{EncoderVarBuilders, Sd3TextConfig, Sd3TextEncoders};

/// The seed of the committed parity goldens (`nodes/parity/goldens/text_encoders.safetensors`).
pub const TINY_SEED: u64 = 20250601;

/// Collects named f32 tensors drawn from per-name streams.
struct Weights {
    seed: u64,
    tensors: Vec<(String, Tensor)>,
}

impl Weights {
    fn new(seed: u64) -> Self {
        Self {
            seed,
            tensors: Vec::new(),
        }
    }

    /// `mean + std * deviate`, shape `dims`.
    fn random(&mut self, name: &str, dims: &[usize], mean: f64, std: f64) -> Result<()> {
        let mut rng = SplitMix64::new(SplitMix64::new(self.seed ^ fnv1a(name)).next_u64());
        let n = dims.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| (mean + std * rng.standard()) as f32)
            .collect();
        let t = Tensor::from_vec(values, dims, &Device::Cpu)?;
        self.tensors.push((name.to_owned(), t));
        Ok(())
    }

    fn linear(&mut self, name: &str, out: usize, inp: usize, bias: bool) -> Result<()> {
        let std = (inp as f64).powf(-0.5);
        self.random(&format!("{name}.weight"), &[out, inp], 0.0, std)?;
        if bias {
            self.random(&format!("{name}.bias"), &[out], 0.0, 0.1)?;
        }
        Ok(())
    }

    fn layer_norm(&mut self, name: &str, size: usize) -> Result<()> {
        self.random(&format!("{name}.weight"), &[size], 1.0, 0.1)?;
        self.random(&format!("{name}.bias"), &[size], 0.0, 0.1)
    }
}

/// How the tiny CLIP's `text_projection` is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyProjection {
    /// The identity (`projection_dim == hidden_size`): pooled equals the unprojected EOS
    /// state, as SD3 single files (no CLIP-L projection) and diffusers folders must agree.
    Identity,
    /// Random weights.
    Random,
}

/// Random weights for a CLIP text encoder of shape `cfg`, transformers keys.
pub fn clip_weights(
    cfg: &ClipConfig,
    projection: TinyProjection,
    seed: u64,
) -> Result<Vec<(String, Tensor)>> {
    let (d, ff) = (cfg.hidden_size, cfg.intermediate_size);
    let mut w = Weights::new(seed);
    let e = "text_model.embeddings";
    w.random(
        &format!("{e}.token_embedding.weight"),
        &[cfg.vocab_size, d],
        0.0,
        1.0,
    )?;
    w.random(
        &format!("{e}.position_embedding.weight"),
        &[cfg.max_position_embeddings, d],
        0.0,
        0.5,
    )?;
    for i in 0..cfg.num_hidden_layers {
        let l = format!("text_model.encoder.layers.{i}");
        for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            w.linear(&format!("{l}.self_attn.{p}"), d, d, true)?;
        }
        w.layer_norm(&format!("{l}.layer_norm1"), d)?;
        w.linear(&format!("{l}.mlp.fc1"), ff, d, true)?;
        w.linear(&format!("{l}.mlp.fc2"), d, ff, true)?;
        w.layer_norm(&format!("{l}.layer_norm2"), d)?;
    }
    w.layer_norm("text_model.final_layer_norm", d)?;
    match projection {
        TinyProjection::Identity => {
            if cfg.projection_dim != d {
                candle_core::bail!("an identity projection needs projection_dim == hidden_size")
            }
            let eye = Tensor::eye(d, candle_core::DType::F32, &Device::Cpu)?;
            w.tensors.push(("text_projection.weight".to_owned(), eye));
        }
        TinyProjection::Random => w.linear("text_projection", cfg.projection_dim, d, false)?,
    }
    Ok(w.tensors)
}

/// The tiny CLIP-L ([`ClipConfig::tiny_l`]) with an identity projection.
pub fn tiny_clip_l_weights(seed: u64) -> Result<Vec<(String, Tensor)>> {
    clip_weights(&ClipConfig::tiny_l(), TinyProjection::Identity, seed)
}

/// The tiny CLIP-G ([`ClipConfig::tiny_g`]) with a random projection.
pub fn tiny_clip_g_weights(seed: u64) -> Result<Vec<(String, Tensor)>> {
    clip_weights(&ClipConfig::tiny_g(), TinyProjection::Random, seed)
}

/// SD3's text encoders built from the tiny CLIP-L and CLIP-G of `seed`
/// (no T5): the one builder of the tests.
#[derive(Debug, Clone)]
pub struct TinyTextEncoders {
    pub seed: u64,
    /// Rows of the (absent) T5 part of the context.
    pub t5_len: usize,
    /// The dtype the weights are rounded to, as a file in it holds them; they
    /// are loaded in f32.
    pub stored: DType,
    pub device: Device,
}

impl TinyTextEncoders {
    pub fn new(seed: u64) -> Self {
        TinyTextEncoders {
            seed,
            t5_len: Sd3TextConfig::tiny().t5_len,
            stored: DType::F32,
            device: Device::Cpu,
        }
    }

    pub fn build(&self) -> anyhow::Result<Sd3TextEncoders> {
        let vb = |weights: Vec<(String, Tensor)>| -> Result<VarBuilder<'static>> {
            let map = weights
                .into_iter()
                .map(|(name, t)| Ok((name, t.to_dtype(self.stored)?)))
                .collect::<Result<HashMap<_, _>>>()?;
            Ok(VarBuilder::from_tensors(map, DType::F32, &self.device))
        };
        let vbs = EncoderVarBuilders {
            clip_l: Some(vb(tiny_clip_l_weights(self.seed)?)?),
            clip_g: Some(vb(tiny_clip_g_weights(self.seed)?)?),
            t5: None,
        };
        let cfg = Sd3TextConfig {
            t5_len: self.t5_len,
            ..Sd3TextConfig::tiny()
        };
        Sd3TextEncoders::new(&cfg, None, vbs)
    }
}

/// The tiny T5 encoder ([`t5_tiny`]): `shared.weight` and `encoder.*` (no duplicate
/// `encoder.embed_tokens.weight`: loaders tie it to `shared`).
pub fn tiny_t5_weights(seed: u64) -> Result<Vec<(String, Tensor)>> {
    let cfg = t5_tiny();
    let (d, inner, ff) = (cfg.d_model, cfg.num_heads * cfg.d_kv, cfg.d_ff);
    let mut w = Weights::new(seed);
    w.random("shared.weight", &[cfg.vocab_size, d], 0.0, 1.0)?;
    for i in 0..cfg.num_layers {
        let b = format!("encoder.block.{i}.layer");
        for p in ["q", "k", "v"] {
            w.linear(&format!("{b}.0.SelfAttention.{p}"), inner, d, false)?;
        }
        w.linear(&format!("{b}.0.SelfAttention.o"), d, inner, false)?;
        if i == 0 {
            let name = format!("{b}.0.SelfAttention.relative_attention_bias.weight");
            w.random(
                &name,
                &[cfg.relative_attention_num_buckets, cfg.num_heads],
                0.0,
                0.5,
            )?;
        }
        w.random(&format!("{b}.0.layer_norm.weight"), &[d], 1.0, 0.1)?;
        w.linear(&format!("{b}.1.DenseReluDense.wi_0"), ff, d, false)?;
        w.linear(&format!("{b}.1.DenseReluDense.wi_1"), ff, d, false)?;
        w.linear(&format!("{b}.1.DenseReluDense.wo"), d, ff, false)?;
        w.random(&format!("{b}.1.layer_norm.weight"), &[d], 1.0, 0.1)?;
    }
    w.random("encoder.final_layer_norm.weight", &[d], 1.0, 0.1)?;
    Ok(w.tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_seeded_and_named_like_transformers() {
        let a = tiny_clip_l_weights(1).unwrap();
        let b = tiny_clip_l_weights(1).unwrap();
        let c = tiny_clip_l_weights(2).unwrap();
        let params: usize = a.iter().map(|(_, t)| t.elem_count()).sum();
        // docs/parity.md, "Tiny fixtures": 1,610,240 parameters, the 32x32 identity projection included.
        assert_eq!(params, 1_610_240);
        let first = |w: &[(String, Tensor)]| w[3].1.flatten_all().unwrap().to_vec1::<f32>();
        assert_eq!(first(&a).unwrap(), first(&b).unwrap());
        assert_ne!(first(&a).unwrap(), first(&c).unwrap());
        assert!(a
            .iter()
            .any(|(k, _)| k == "text_model.encoder.layers.2.mlp.fc2.bias"));
        let g: usize = tiny_clip_g_weights(1)
            .unwrap()
            .iter()
            .map(|(_, t)| t.elem_count())
            .sum();
        assert_eq!(g, 3_271_680);
        let t5: usize = tiny_t5_weights(1)
            .unwrap()
            .iter()
            .map(|(_, t)| t.elem_count())
            .sum();
        assert_eq!(t5, 4_440_832);
    }
}
