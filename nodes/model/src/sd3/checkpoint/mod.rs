//! SD3 / SD3.5 checkpoint discovery and loading: single files (with or without
//! text encoders, plus ComfyUI-style `text_encoders/*.safetensors`) and
//! diffusers folders, memory-mapped, variant detected from tensor shapes.
//!
//! Reference: ComfyUI `comfy/model_detection.py` (detection by key names and
//! shapes), diffusers 0.42.1 `loaders/single_file_utils.py` (key map),
//! docs/parity.md, "Checkpoint keys".

pub mod components;
pub mod keymap;
pub mod layouts;
pub mod random_file;
pub mod tensor_files;
pub mod weights;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::mmdit::{self, MMDiT};
use super::precision::WeightDtype;
use super::sampling::DEFAULT_SHIFT;
use super::text_encoders::{EncoderVarBuilders, Sd3TextConfig, Sd3TextEncoders};
use super::tokenizer::T5Tokenizer;
use super::vae::{self, AutoEncoder};
pub use tensor_files::TensorFiles;
pub use weights::{Naming, Weights};

/// The default compute dtype: f32 on CPU (speed and parity), bf16 on CUDA.
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    }
}

/// How the checkpoint was laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    SingleFile,
    Diffusers,
}

/// The three SD3 text encoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoderKind {
    ClipL,
    ClipG,
    T5Xxl,
}

impl TextEncoderKind {
    pub const ALL: [Self; 3] = [Self::ClipL, Self::ClipG, Self::T5Xxl];

    /// The name used in single files and `text_encoders/` file names.
    pub fn name(self) -> &'static str {
        match self {
            Self::ClipL => "clip_l",
            Self::ClipG => "clip_g",
            Self::T5Xxl => "t5xxl",
        }
    }

    /// The diffusers subfolder.
    pub fn diffusers_folder(self) -> &'static str {
        match self {
            Self::ClipL => "text_encoder",
            Self::ClipG => "text_encoder_2",
            Self::T5Xxl => "text_encoder_3",
        }
    }

    /// A tensor every encoder of this kind has, relative to its root
    /// (transformers key names).
    fn marker(self) -> &'static str {
        match self {
            Self::ClipL | Self::ClipG => "text_model.embeddings.token_embedding.weight",
            Self::T5Xxl => "encoder.block.0.layer.0.SelfAttention.q.weight",
        }
    }
}

/// A found text encoder: its tensors under transformers key names
/// (`text_model.*` for CLIP, `shared.weight`/`encoder.*` for T5).
#[derive(Debug, Clone)]
pub struct TextEncoderWeights {
    pub kind: TextEncoderKind,
    pub weights: Weights,
}

impl TextEncoderWeights {
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        self.weights.var_builder(dtype, device)
    }

    /// As [`Self::var_builder`], linear weights in `linear_dtype` where they compute on the
    /// CPU in f32.
    pub fn var_builder_as(
        &self,
        dtype: DType,
        device: &Device,
        linear_dtype: WeightDtype,
    ) -> VarBuilder<'static> {
        self.weights
            .clone()
            .with_linear_dtype(linear_dtype)
            .var_builder(dtype, device)
    }
}

/// An opened SD3 checkpoint: detected configs and lazily loadable components.
#[derive(Debug, Clone)]
pub struct Sd3Checkpoint {
    pub layout: Layout,
    pub mmdit_config: mmdit::Config,
    /// The schedule shift: `scheduler/scheduler_config.json` in diffusers
    /// folders, else SD3's 3.0.
    pub shift: f64,
    mmdit: Weights,
    vae: Option<(vae::Config, Weights)>,
    text_encoders: Vec<TextEncoderWeights>,
}

impl Sd3Checkpoint {
    /// Opens a single file or a diffusers folder. For single files without
    /// text encoders, `text_encoder_dirs` (then `text_encoders/` next to the
    /// file and in its parent, ComfyUI's `models/` layout) are searched for
    /// `clip_l*.safetensors`, `clip_g*.safetensors`, `t5xxl*.safetensors`.
    pub fn open(path: &Path, text_encoder_dirs: &[PathBuf]) -> Result<Self> {
        if path.is_dir() {
            Self::open_diffusers(path)
        } else {
            Self::open_single_file(path, text_encoder_dirs)
        }
    }

    fn open_single_file(path: &Path, text_encoder_dirs: &[PathBuf]) -> Result<Self> {
        let files = open_safetensors(&[path.to_path_buf()], path)?;
        let keys: Vec<String> = files.tensors().into_iter().map(|(n, _)| n).collect();
        reject_other_families(&keys, path)?;
        let marker = "joint_blocks.0.x_block.attn.qkv.weight";
        let Some(prefix) = prefix_of(&keys, marker) else {
            bail!(
                "{}: not an SD3 checkpoint (no `…{marker}` among its {} tensors)",
                path.display(),
                keys.len()
            );
        };
        let mmdit = Weights::new(files.clone(), &prefix, Naming::Original, path);
        let mmdit_config = mmdit::Config::infer(|n| mmdit.shape_of(n))
            .with_context(|| format!("{}: reading the MMDiT config", path.display()))?;
        let vae = Weights::new(files.clone(), "first_stage_model.", Naming::Original, path);
        let vae = match vae::Config::infer(|n| vae.shape_of(n)) {
            Ok(cfg) => Some((cfg, vae)),
            Err(_) => None,
        };
        let mut text_encoders = Vec::new();
        for kind in TextEncoderKind::ALL {
            let prefix = format!("text_encoders.{}.transformer.", kind.name());
            if keys
                .iter()
                .any(|k| k == &format!("{prefix}{}", kind.marker()))
            {
                let weights = Weights::new(files.clone(), &prefix, Naming::Original, path);
                text_encoders.push(TextEncoderWeights { kind, weights });
            } else if let Some(found) = find_separate_encoder(kind, path, text_encoder_dirs)? {
                text_encoders.push(found);
            }
        }
        Ok(Self {
            layout: Layout::SingleFile,
            mmdit_config,
            shift: DEFAULT_SHIFT,
            mmdit,
            vae,
            text_encoders,
        })
    }

    fn open_diffusers(dir: &Path) -> Result<Self> {
        let transformer_dir = dir.join("transformer");
        let files = open_folder(&transformer_dir)?.with_context(|| {
            format!(
                "{}: a diffusers folder needs transformer/*.safetensors",
                dir.display()
            )
        })?;
        let keys: Vec<String> = files.tensors().into_iter().map(|(n, _)| n).collect();
        reject_other_families(&keys, &transformer_dir)?;
        let depth = (0..)
            .take_while(|i| {
                keys.iter()
                    .any(|k| k.starts_with(&format!("transformer_blocks.{i}.")))
            })
            .count();
        let naming = Naming::DiffusersTransformer { depth };
        let mmdit = Weights::new(files, "", naming, &transformer_dir);
        let mmdit_config = mmdit::Config::infer(|n| mmdit.shape_of(n))
            .with_context(|| format!("{}: reading the MMDiT config", transformer_dir.display()))?;
        let vae_dir = dir.join("vae");
        let vae = match open_folder(&vae_dir)? {
            Some(files) => {
                let keys: Vec<String> = files.tensors().into_iter().map(|(n, _)| n).collect();
                let levels = (0..)
                    .take_while(|i| {
                        keys.iter()
                            .any(|k| k.starts_with(&format!("decoder.up_blocks.{i}.")))
                    })
                    .count();
                let weights = Weights::new(files, "", Naming::DiffusersVae { levels }, &vae_dir);
                let cfg = vae::Config::infer(|n| weights.shape_of(n))
                    .with_context(|| format!("{}: reading the VAE config", vae_dir.display()))?;
                Some((cfg, weights))
            }
            None => None,
        };
        let mut text_encoders = Vec::new();
        for kind in TextEncoderKind::ALL {
            let sub = dir.join(kind.diffusers_folder());
            if let Some(files) = open_folder(&sub)? {
                let weights = Weights::new(files, "", Naming::Original, &sub);
                if weights.contains(kind.marker()) {
                    text_encoders.push(TextEncoderWeights { kind, weights });
                }
            }
        }
        Ok(Self {
            layout: Layout::Diffusers,
            mmdit_config,
            shift: scheduler_shift(dir)?,
            mmdit,
            vae,
            text_encoders,
        })
    }

    /// Builds the MMDiT in `dtype` on `device`, linear weights as stored.
    pub fn load_mmdit(&self, dtype: DType, device: &Device) -> Result<MMDiT> {
        self.load_mmdit_as(dtype, device, WeightDtype::Stored)
    }

    /// Builds the MMDiT in `dtype` on `device`, its linear weights in `linear_dtype` where
    /// they compute on the CPU in f32 (elsewhere `linear_dtype` changes nothing).
    pub fn load_mmdit_as(
        &self,
        dtype: DType,
        device: &Device,
        linear_dtype: WeightDtype,
    ) -> Result<MMDiT> {
        let weights = self.mmdit.clone().with_linear_dtype(linear_dtype);
        MMDiT::new(&self.mmdit_config, weights.var_builder(dtype, device))
            .with_context(|| format!("{}: loading the MMDiT", self.mmdit.origin().display()))
    }

    pub fn vae_config(&self) -> Option<&vae::Config> {
        self.vae.as_ref().map(|(cfg, _)| cfg)
    }

    /// Builds the VAE in `dtype` on `device`.
    pub fn load_vae(&self, dtype: DType, device: &Device) -> Result<AutoEncoder> {
        let Some((cfg, weights)) = &self.vae else {
            bail!(
                "{}: the checkpoint has no VAE",
                self.mmdit.origin().display()
            );
        };
        AutoEncoder::new(cfg, weights.var_builder(dtype, device))
            .with_context(|| format!("{}: loading the VAE", weights.origin().display()))
    }

    /// The weights of one text encoder, when found.
    pub fn text_encoder(&self, kind: TextEncoderKind) -> Option<&TextEncoderWeights> {
        self.text_encoders.iter().find(|t| t.kind == kind)
    }

    /// The checkpoint without one text encoder: it loads as absent (T5's rows are zeros).
    pub fn without_text_encoder(mut self, kind: TextEncoderKind) -> Self {
        self.text_encoders.retain(|t| t.kind != kind);
        self
    }

    /// CLIP-L's and CLIP-G's weights, which every SD3 pipeline needs (T5 is optional).
    pub fn clip_var_builders(
        &self,
        dtype: DType,
        device: &Device,
        linear_dtype: WeightDtype,
    ) -> Result<(VarBuilder<'static>, VarBuilder<'static>)> {
        let vb = |kind| {
            self.text_encoder(kind)
                .map(|t| t.var_builder_as(dtype, device, linear_dtype))
        };
        match (vb(TextEncoderKind::ClipL), vb(TextEncoderKind::ClipG)) {
            (Some(clip_l), Some(clip_g)) => Ok((clip_l, clip_g)),
            _ => bail!("SD3 needs CLIP-L and CLIP-G: {}", self.summary()),
        }
    }

    /// CLIP-L, CLIP-G and, when the checkpoint has its weights, T5 with the tokenizer
    /// `t5_tokenizer` gives; their linear weights in `linear_dtype` (int8 weights compute
    /// forward only: CreTok training needs the stored ones).
    pub fn load_text_encoders(
        &self,
        dtype: DType,
        device: &Device,
        t5_tokenizer: impl FnOnce() -> Result<T5Tokenizer>,
        linear_dtype: WeightDtype,
    ) -> Result<Sd3TextEncoders> {
        let (clip_l, clip_g) = self.clip_var_builders(dtype, device, linear_dtype)?;
        let (t5, t5_tokenizer) = match self.text_encoder(TextEncoderKind::T5Xxl) {
            Some(t5) => (
                Some(t5.var_builder_as(dtype, device, linear_dtype)),
                Some(t5_tokenizer()?),
            ),
            None => (None, None),
        };
        let vbs = EncoderVarBuilders {
            clip_l: Some(clip_l),
            clip_g: Some(clip_g),
            t5,
        };
        let cfg = Sd3TextConfig::for_context_width(self.mmdit_config.context_embed_size)?;
        Sd3TextEncoders::new(&cfg, t5_tokenizer, vbs)
    }

    /// One line for logs: variant, depth, and which text encoders were found.
    pub fn summary(&self) -> String {
        format!(
            "{} ({} blocks, {} heads × {}), {:?} layout, VAE {}, {}",
            self.mmdit_config.variant_name(),
            self.mmdit_config.depth,
            self.mmdit_config.num_heads,
            self.mmdit_config.head_dim,
            self.layout,
            if self.vae.is_some() {
                "found"
            } else {
                "missing"
            },
            text_encoders_summary(&self.text_encoders)
        )
    }
}

/// `text encoders: ` and where each was found, or that it is missing.
pub fn text_encoders_summary(found: &[TextEncoderWeights]) -> String {
    let encoders: Vec<String> = TextEncoderKind::ALL
        .iter()
        .map(|&kind| match found.iter().find(|t| t.kind == kind) {
            Some(t) => format!("{} ({})", kind.name(), t.weights.origin().display()),
            None if kind == TextEncoderKind::T5Xxl => "t5xxl missing (T5 rows are zeros)".into(),
            None => format!("{} missing", kind.name()),
        })
        .collect();
    format!("text encoders: {}", encoders.join(", "))
}

/// `shift` from `scheduler/scheduler_config.json`, 3.0 without the file.
fn scheduler_shift(dir: &Path) -> Result<f64> {
    let path = dir.join("scheduler").join("scheduler_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(DEFAULT_SHIFT);
    };
    let config: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    Ok(config["shift"].as_f64().unwrap_or(DEFAULT_SHIFT))
}

fn open_safetensors(paths: &[PathBuf], origin: &Path) -> Result<Arc<TensorFiles>> {
    let files = TensorFiles::open(paths)
        .with_context(|| format!("{}: not a readable safetensors file", origin.display()))?;
    Ok(Arc::new(files))
}

/// All `*.safetensors` in `dir` (sharded files included), or `None` without any.
fn open_folder(dir: &Path) -> Result<Option<Arc<TensorFiles>>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Ok(None);
    }
    open_safetensors(&paths, dir).map(Some)
}

/// The prefix in front of `marker` in the first key that ends with it.
fn prefix_of(keys: &[String], marker: &str) -> Option<String> {
    keys.iter()
        .find_map(|k| k.strip_suffix(marker).map(str::to_string))
}

/// Names SDXL, SD1/SD2 and FLUX checkpoints instead of failing on missing keys.
fn reject_other_families(keys: &[String], path: &Path) -> Result<()> {
    let any = |pat: &str| keys.iter().any(|k| k.contains(pat));
    let family = if any("double_blocks.") || any("single_transformer_blocks.") {
        Some("a FLUX model")
    } else if any("conditioner.embedders.1.") || any("add_embedding.linear_1") {
        Some("an SDXL model")
    } else if any("input_blocks.") || any("down_blocks.0.attentions.") {
        Some("an SD1.x/SD2.x UNet model")
    } else {
        None
    };
    match family {
        Some(family) => bail!(
            "{}: this is {family}, not Stable Diffusion 3",
            path.display()
        ),
        None => Ok(()),
    }
}

/// Looks for `<kind>*.safetensors` in the given and the conventional folders.
fn find_separate_encoder(
    kind: TextEncoderKind,
    checkpoint: &Path,
    dirs: &[PathBuf],
) -> Result<Option<TextEncoderWeights>> {
    let mut search: Vec<PathBuf> = dirs.to_vec();
    if let Some(parent) = checkpoint.parent() {
        search.push(parent.join("text_encoders"));
        if let Some(grand) = parent.parent() {
            search.push(grand.join("text_encoders"));
        }
    }
    for dir in search {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut candidates: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                name.starts_with(kind.name()) && name.ends_with(".safetensors")
            })
            .collect();
        candidates.sort();
        if let Some(file) = candidates.into_iter().next() {
            let files = open_safetensors(std::slice::from_ref(&file), &file)?;
            let keys: Vec<String> = files.tensors().into_iter().map(|(n, _)| n).collect();
            let Some(prefix) = prefix_of(&keys, kind.marker()) else {
                bail!(
                    "{}: no `{}` tensor for {}",
                    file.display(),
                    kind.marker(),
                    kind.name()
                );
            };
            let weights = Weights::new(files, &prefix, Naming::Original, &file);
            return Ok(Some(TextEncoderWeights { kind, weights }));
        }
    }
    Ok(None)
}
