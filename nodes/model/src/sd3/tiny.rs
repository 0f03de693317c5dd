//! A tiny random-weight SD3 checkpoint (shapes: docs/parity.md, "Tiny fixtures") for tests and the
//! diffusers parity script, written as a single file and as a diffusers folder
//! holding the same weights.
//!
//! Weights come from [`SplitMix64`] seeded by `seed ^ FNV-1a(name)`, so each
//! tensor is reproducible on every platform and independent of creation order.
//! The MMDiT and VAE key layouts are recorded from the real model constructors.
//! The text encoders (CLIP-L, CLIP-G, optional T5) are the text side's seeded
//! tiny weights (`text_tiny`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use serde_json::json;

use super::checkpoint::keymap::{transformer_source, vae_source};
use super::checkpoint::TextEncoderKind;
use super::clip::{Activation, ClipConfig};
use super::mmdit::{self, MMDiT};
use super::rng::{fnv1a, SplitMix64};
use super::t5::{t5_tiny, T5Config};
use super::text_tiny::{tiny_clip_g_weights, tiny_clip_l_weights, tiny_t5_weights};
use super::vae::{self, AutoEncoder};

/// Which MMDiT family the tiny checkpoint imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyVariant {
    /// Plain SD3-medium structure.
    Sd3Medium,
    /// SD3.5-medium: MMDiT-X dual attention in blocks 0-1 and RMS q/k norm.
    Sd35Medium,
}

impl TinyVariant {
    pub fn mmdit_config(self) -> mmdit::Config {
        match self {
            Self::Sd3Medium => mmdit::Config::tiny_sd3(),
            Self::Sd35Medium => mmdit::Config::tiny_sd3_5_medium(),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TinyOptions {
    pub variant: TinyVariant,
    pub seed: u64,
    /// Include CLIP-L and CLIP-G (about 19 MB in f32: the 49,408-row vocabularies).
    pub clips: bool,
    /// Include a tiny T5 (about 33 MB in f32).
    pub t5: bool,
    /// Side of the MMDiT's position table, in patches (16 px each). `None`: the variant's
    /// 24, enough for 384 px; 64 runs workflows made for 1024 px.
    pub positions: Option<usize>,
}

impl TinyOptions {
    /// The MMDiT configuration these options describe.
    pub fn mmdit_config(&self) -> mmdit::Config {
        let mut cfg = self.variant.mmdit_config();
        if let Some(positions) = self.positions {
            cfg.pos_embed_max_size = positions;
        }
        cfg
    }
}

/// Deterministic values for `name`: norm scales near 1, biases and tables
/// small, weights N(0, 1/fan_in).
fn random_tensor(seed: u64, name: &str, shape: &[usize]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut rng = SplitMix64::new(seed ^ fnv1a(name));
    let z = rng.normals(n);
    let is_norm = shape.len() == 1 && name.ends_with("weight");
    let values: Vec<f32> = if is_norm {
        z.iter().map(|v| 1.0 + 0.1 * v).collect()
    } else if shape.len() == 1 || name.ends_with("pos_embed") || name.contains("embedding") {
        z.iter().map(|v| 0.1 * v).collect()
    } else {
        let fan_in: usize = shape[1..].iter().product();
        let std = 1.0 / (fan_in as f32).sqrt();
        z.iter().map(|v| std * v).collect()
    };
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// A `SimpleBackend` that invents each requested tensor and records it.
#[derive(Clone)]
struct Recorder {
    seed: u64,
    tensors: Arc<Mutex<BTreeMap<String, Tensor>>>,
}

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = random_tensor(self.seed, name, s.dims()).map_err(candle_core::Error::wrap)?;
        let mut tensors = self
            .tensors
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
        tensors.insert(name.to_string(), t.clone());
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("the tiny generator needs a shape for `{name}`")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Runs `build` against a recorder and returns the tensors it asked for.
fn record(
    seed: u64,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<()>,
) -> Result<BTreeMap<String, Tensor>> {
    let recorder = Recorder {
        seed,
        tensors: Arc::default(),
    };
    let backend: Box<dyn SimpleBackend> = Box::new(recorder.clone());
    build(VarBuilder::from_backend(backend, DType::F32, Device::Cpu))?;
    let tensors = recorder
        .tensors
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned recorder"))?;
    Ok(tensors.clone())
}

/// The text side's tiny encoder weights (`text_tiny`), transformers key names.
/// CLIP-L keeps its identity projection in diffusers folders only: SD3 single
/// files carry none (docs/parity.md, "Checkpoint keys").
fn text_encoder_tensors(
    kind: TextEncoderKind,
    seed: u64,
    single_file: bool,
) -> Result<BTreeMap<String, Tensor>> {
    let tensors = match kind {
        TextEncoderKind::ClipL => tiny_clip_l_weights(seed)?,
        TextEncoderKind::ClipG => tiny_clip_g_weights(seed)?,
        TextEncoderKind::T5Xxl => tiny_t5_weights(seed)?,
    };
    let drop_projection = single_file && kind == TextEncoderKind::ClipL;
    Ok(tensors
        .into_iter()
        .filter(|(name, _)| !(drop_projection && name == "text_projection.weight"))
        .collect())
}

/// The encoders `opts` asks for.
fn text_encoder_kinds(opts: &TinyOptions) -> Vec<TextEncoderKind> {
    let mut kinds = Vec::new();
    if opts.clips {
        kinds.extend([TextEncoderKind::ClipL, TextEncoderKind::ClipG]);
    }
    if opts.t5 {
        kinds.push(TextEncoderKind::T5Xxl);
    }
    kinds
}

/// The tiny MMDiT tensors, original names relative to `model.diffusion_model.`.
pub fn mmdit_tensors(opts: &TinyOptions) -> Result<BTreeMap<String, Tensor>> {
    let cfg = opts.mmdit_config();
    record(opts.seed, |vb| MMDiT::new(&cfg, vb).map(|_| ()))
}

/// The tiny VAE tensors, original names relative to `first_stage_model.`.
pub fn vae_tensors(opts: &TinyOptions) -> Result<BTreeMap<String, Tensor>> {
    record(opts.seed ^ 0x5641_4500, |vb| {
        AutoEncoder::new(&vae::Config::tiny(), vb).map(|_| ())
    })
}

/// Writes atomically, with the user's umask (`fsutil::atomic_write`).
fn save(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    let bytes = safetensors::serialize(tensors.iter(), None)?;
    cretok_support::files::atomic_write(path, &bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes the single-file checkpoint (SD3 layout: no CLIP-L projection).
pub fn write_single_file(path: &Path, opts: &TinyOptions) -> Result<()> {
    let mut all = BTreeMap::new();
    let mut add = |prefix: &str, tensors: BTreeMap<String, Tensor>| {
        all.extend(
            tensors
                .into_iter()
                .map(|(k, v)| (format!("{prefix}{k}"), v)),
        );
    };
    add("model.diffusion_model.", mmdit_tensors(opts)?);
    add("first_stage_model.", vae_tensors(opts)?);
    for kind in text_encoder_kinds(opts) {
        let prefix = format!("text_encoders.{}.transformer.", kind.name());
        add(&prefix, text_encoder_tensors(kind, opts.seed, true)?);
    }
    save(&all, path)
}

/// The file names [`write_component_files`] writes, relative to the models folder.
pub const COMPONENT_FILES: ComponentFiles = ComponentFiles {
    diffusion_model: "diffusion_models/tiny-sd3-mmdit.safetensors",
    vae: "vae/tiny-sd3-vae.safetensors",
    clip_l: "text_encoders/clip_l.safetensors",
    clip_g: "text_encoders/clip_g.safetensors",
    t5xxl: "text_encoders/t5xxl.safetensors",
};

/// Where each component of [`write_component_files`] goes.
#[derive(Debug, Clone, Copy)]
pub struct ComponentFiles {
    pub diffusion_model: &'static str,
    pub vae: &'static str,
    pub clip_l: &'static str,
    pub clip_g: &'static str,
    pub t5xxl: &'static str,
}

/// Writes the weights of [`write_single_file`] as ComfyUI's separate files under the
/// models folder `models` ([`COMPONENT_FILES`]): the MMDiT under `model.diffusion_model.`,
/// the VAE and the text encoders (those `opts` asks for) with bare keys.
pub fn write_component_files(models: &Path, opts: &TinyOptions) -> Result<()> {
    let write = |relative: &str, prefix: &str, tensors: BTreeMap<String, Tensor>| {
        let path = models.join(relative);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let named = tensors
            .into_iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v))
            .collect();
        save(&named, &path)
    };
    let files = COMPONENT_FILES;
    write(
        files.diffusion_model,
        "model.diffusion_model.",
        mmdit_tensors(opts)?,
    )?;
    write(files.vae, "", vae_tensors(opts)?)?;
    for kind in text_encoder_kinds(opts) {
        let relative = match kind {
            TextEncoderKind::ClipL => files.clip_l,
            TextEncoderKind::ClipG => files.clip_g,
            TextEncoderKind::T5Xxl => files.t5xxl,
        };
        write(relative, "", text_encoder_tensors(kind, opts.seed, true)?)?;
    }
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Writes a diffusers folder with the same weights and the configs
/// `from_pretrained` needs (tokenizers are not included).
pub fn write_diffusers(dir: &Path, opts: &TinyOptions) -> Result<()> {
    let cfg = opts.mmdit_config();
    let sub = |name: &str| -> Result<std::path::PathBuf> {
        let p = dir.join(name);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(p)
    };
    let mut transformer = BTreeMap::new();
    for (name, t) in mmdit_tensors(opts)? {
        let source = transformer_source(&name, cfg.depth)
            .with_context(|| format!("no diffusers name for MMDiT tensor {name}"))?;
        transformer.extend(source.disassemble(&t)?);
    }
    let d = sub("transformer")?;
    save(&transformer, &d.join("diffusion_pytorch_model.safetensors"))?;
    write_json(&d.join("config.json"), &transformer_config(&cfg))?;

    let vae_cfg = vae::Config::tiny();
    let mut vae = BTreeMap::new();
    for (name, t) in vae_tensors(opts)? {
        let source = vae_source(&name, vae_cfg.block_out_channels.len())
            .with_context(|| format!("no diffusers name for VAE tensor {name}"))?;
        vae.extend(source.disassemble(&t)?);
    }
    let d = sub("vae")?;
    save(&vae, &d.join("diffusion_pytorch_model.safetensors"))?;
    write_json(&d.join("config.json"), &vae_config(&vae_cfg))?;

    let d = sub("scheduler")?;
    write_json(
        &d.join("scheduler_config.json"),
        &json!({"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}),
    )?;
    for kind in text_encoder_kinds(opts) {
        let d = sub(kind.diffusers_folder())?;
        let tensors = text_encoder_tensors(kind, opts.seed, false)?;
        save(&tensors, &d.join("model.safetensors"))?;
        let config = match kind {
            TextEncoderKind::ClipL => clip_config(&ClipConfig::tiny_l()),
            TextEncoderKind::ClipG => clip_config(&ClipConfig::tiny_g()),
            TextEncoderKind::T5Xxl => t5_config(&t5_tiny()),
        };
        write_json(&d.join("config.json"), &config)?;
    }
    let component = |present: bool, lib: &str, class: &str| {
        if present {
            json!([lib, class])
        } else {
            json!([null, null])
        }
    };
    write_json(
        &dir.join("model_index.json"),
        &json!({
            "_class_name": "StableDiffusion3Pipeline",
            "_diffusers_version": "0.42.1",
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "text_encoder": component(opts.clips, "transformers", "CLIPTextModelWithProjection"),
            "text_encoder_2": component(opts.clips, "transformers", "CLIPTextModelWithProjection"),
            "text_encoder_3": component(opts.t5, "transformers", "T5EncoderModel"),
            "tokenizer": [null, null],
            "tokenizer_2": [null, null],
            "tokenizer_3": [null, null],
            "transformer": ["diffusers", "SD3Transformer2DModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        }),
    )
}

fn transformer_config(cfg: &mmdit::Config) -> serde_json::Value {
    json!({
        "_class_name": "SD3Transformer2DModel",
        "_diffusers_version": "0.42.1",
        "sample_size": 32,
        "patch_size": cfg.patch_size,
        "in_channels": cfg.in_channels,
        "num_layers": cfg.depth,
        "attention_head_dim": cfg.head_dim,
        "num_attention_heads": cfg.num_heads,
        "joint_attention_dim": cfg.context_embed_size,
        "caption_projection_dim": cfg.hidden_size(),
        "pooled_projection_dim": cfg.adm_in_channels,
        "out_channels": cfg.out_channels,
        "pos_embed_max_size": cfg.pos_embed_max_size,
        "dual_attention_layers": cfg.dual_attention_layers,
        "qk_norm": if cfg.qk_norm { json!("rms_norm") } else { json!(null) },
    })
}

fn vae_config(cfg: &vae::Config) -> serde_json::Value {
    let n = cfg.block_out_channels.len();
    json!({
        "_class_name": "AutoencoderKL",
        "_diffusers_version": "0.42.1",
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": vec!["DownEncoderBlock2D"; n],
        "up_block_types": vec!["UpDecoderBlock2D"; n],
        "block_out_channels": cfg.block_out_channels,
        "layers_per_block": cfg.layers_per_block,
        "latent_channels": cfg.latent_channels,
        "norm_num_groups": cfg.norm_num_groups,
        "act_fn": "silu",
        "sample_size": 128,
        "scaling_factor": cfg.scaling_factor,
        "shift_factor": cfg.shift_factor,
        "use_quant_conv": false,
        "use_post_quant_conv": false,
        "force_upcast": true,
        "mid_block_add_attention": true,
    })
}

fn clip_config(cfg: &ClipConfig) -> serde_json::Value {
    let act = match cfg.activation {
        Activation::QuickGelu => "quick_gelu",
        Activation::GeluErf => "gelu",
    };
    json!({
        "architectures": ["CLIPTextModelWithProjection"],
        "model_type": "clip_text_model",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "max_position_embeddings": cfg.max_position_embeddings,
        "hidden_act": act,
        "projection_dim": cfg.projection_dim,
        "layer_norm_eps": cfg.layer_norm_eps,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
        "torch_dtype": "float32",
    })
}

fn t5_config(cfg: &T5Config) -> serde_json::Value {
    json!({
        "architectures": ["T5EncoderModel"],
        "model_type": "t5",
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "d_kv": cfg.d_kv,
        "d_ff": cfg.d_ff,
        "num_layers": cfg.num_layers,
        "num_heads": cfg.num_heads,
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance,
        "feed_forward_proj": "gated-gelu",
        "dense_act_fn": "gelu_new",
        "is_gated_act": true,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "tie_word_embeddings": false,
        "torch_dtype": "float32",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_seeded_and_name_dependent() -> Result<()> {
        let a = random_tensor(1, "a.weight", &[4, 8])?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let b = random_tensor(1, "a.weight", &[4, 8])?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let c = random_tensor(1, "b.weight", &[4, 8])?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(a, b);
        assert_ne!(a, c);
        let norm = random_tensor(1, "norm.weight", &[64])?.to_vec1::<f32>()?;
        assert!(norm.iter().all(|v| (v - 1.0).abs() < 0.5));
        Ok(())
    }

    #[test]
    fn mmdit_layout_has_the_variant_markers() -> Result<()> {
        let opts = |variant| TinyOptions {
            variant,
            seed: 0,
            clips: false,
            t5: false,
            positions: None,
        };
        let sd3 = mmdit_tensors(&opts(TinyVariant::Sd3Medium))?;
        assert!(sd3.contains_key("joint_blocks.1.context_block.attn.qkv.weight"));
        assert!(!sd3.contains_key("joint_blocks.1.context_block.attn.proj.weight"));
        assert!(!sd3
            .keys()
            .any(|k| k.contains("attn2") || k.contains("ln_q")));
        let sd35 = mmdit_tensors(&opts(TinyVariant::Sd35Medium))?;
        assert!(sd35.contains_key("joint_blocks.1.x_block.attn2.qkv.weight"));
        assert!(!sd35.contains_key("joint_blocks.2.x_block.attn2.qkv.weight"));
        assert_eq!(
            sd35["joint_blocks.0.x_block.attn.ln_q.weight"].dims(),
            &[16]
        );
        assert_eq!(
            sd35["joint_blocks.0.x_block.adaLN_modulation.1.weight"].dims(),
            &[9 * 48, 48]
        );
        Ok(())
    }
}
