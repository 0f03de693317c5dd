//! Deterministic tiny random text encoders (CLIP-L, CLIP-G, T5) for tests and parity fixtures.
//!
//! Shapes are PARITY.md section 1's tiny configs; keys are transformers' state-dict names
//! (`CLIPTextModelWithProjection`, `T5EncoderModel`), without any checkpoint prefix. Values come
//! from [`SplitMix64`] (Steele et al., "Fast splittable pseudorandom number generators",
//! OOPSLA 2014) and an Irwin-Hall sum of four uniforms as the bell-shaped deviate: it needs only
//! IEEE additions, so the fixtures are bit-identical on every platform (Box-Muller's `ln`/`cos`
//! come from the platform's libm). Each tensor draws from its own stream, seeded from the
//! model seed and the tensor's name, so adding a tensor never changes the others.

use candle_core::{Device, Result, Tensor};

use super::clip::ClipConfig;
use super::t5::t5_tiny;

/// The seed of the committed parity goldens (`nodes/parity/goldens/text_encoders.safetensors`).
pub const TINY_SEED: u64 = 20250601;

/// The SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The current state: `SplitMix64::new(state)` continues the same sequence.
    pub fn state(&self) -> u64 {
        self.0
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A zero-mean, unit-variance, bell-shaped deviate in `[-2√3, 2√3]`.
    pub fn standard(&mut self) -> f64 {
        let sum: f64 = (0..4).map(|_| self.uniform()).sum();
        (sum - 2.0) * 3f64.sqrt()
    }
}

/// FNV-1a of a tensor name, to give each tensor its own stream.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

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
        let mut rng = SplitMix64::new(SplitMix64::new(self.seed ^ name_hash(name)).next_u64());
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
    fn splitmix64_matches_the_reference_sequence() {
        // First outputs for seed 1234567, from the reference C implementation (Vigna).
        let mut rng = SplitMix64::new(1234567);
        let got: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423
            ]
        );
    }

    #[test]
    fn deviates_have_unit_variance() {
        let mut rng = SplitMix64::new(7);
        let xs: Vec<f64> = (0..100_000).map(|_| rng.standard()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.02, "{mean}");
        assert!((var - 1.0).abs() < 0.02, "{var}");
    }

    #[test]
    fn weights_are_seeded_and_named_like_transformers() {
        let a = tiny_clip_l_weights(1).unwrap();
        let b = tiny_clip_l_weights(1).unwrap();
        let c = tiny_clip_l_weights(2).unwrap();
        let params: usize = a.iter().map(|(_, t)| t.elem_count()).sum();
        // PARITY.md section 1: 1,610,240 parameters, the 32x32 identity projection included.
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
