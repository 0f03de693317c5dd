//! SD3 from separate files, as ComfyUI's UNETLoader, VAELoader, CLIPLoader and
//! TripleCLIPLoader read them: an MMDiT alone (`models/diffusion_models`), a VAE
//! alone (`models/vae`), a text encoder alone (`models/text_encoders`), each
//! recognised by its keys, with or without a prefix, in original or diffusers names.
//!
//! Reference: ComfyUI `comfy/sd.py` (`load_diffusion_model`, `VAE`, `load_clip`,
//! which tells CLIP-G from CLIP-L and T5 by their keys).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

use super::{
    open_safetensors, prefix_of, reject_other_families, Naming, TensorFiles, TextEncoderKind,
    TextEncoderWeights, Weights,
};
use crate::sd3::mmdit::{self, MMDiT};
use crate::sd3::precision::WeightDtype;
use crate::sd3::text_encoders::Sd3TextConfig;
use crate::sd3::vae::{self, AutoEncoder};

const MMDIT_MARKER: &str = "joint_blocks.0.x_block.attn.qkv.weight";
const DIFFUSERS_MMDIT_MARKER: &str = "transformer_blocks.0.attn.to_q.weight";
const VAE_MARKER: &str = "decoder.conv_in.weight";
const DIFFUSERS_VAE_MARKER: &str = "decoder.up_blocks.0.resnets.0.conv1.weight";
const CLIP_MARKER: &str = "text_model.embeddings.token_embedding.weight";
const T5_MARKER: &str = "encoder.block.0.layer.0.SelfAttention.q.weight";

/// An SD3 / SD3.5 MMDiT file without VAE or text encoders (or with them, ignored).
#[derive(Debug, Clone)]
pub struct DiffusionModelFile {
    pub config: mmdit::Config,
    weights: Weights,
}

impl DiffusionModelFile {
    pub fn open(path: &Path) -> Result<Self> {
        let (files, keys) = open_keys(path)?;
        reject_other_families(&keys, path)?;
        let weights = if let Some(prefix) = prefix_of(&keys, MMDIT_MARKER) {
            Weights::new(files, &prefix, Naming::Original, path)
        } else if let Some(prefix) = prefix_of(&keys, DIFFUSERS_MMDIT_MARKER) {
            let depth = (0..)
                .take_while(|i| {
                    let block = format!("{prefix}transformer_blocks.{i}.");
                    keys.iter().any(|k| k.starts_with(&block))
                })
                .count();
            Weights::new(files, &prefix, Naming::DiffusersTransformer { depth }, path)
        } else {
            bail!(
                "{}: not an SD3 diffusion model: {}",
                path.display(),
                describe(&keys)
            );
        };
        let config = mmdit::Config::infer(|n| weights.shape_of(n))
            .with_context(|| format!("{}: reading the MMDiT config", path.display()))?;
        Ok(Self { config, weights })
    }

    /// Builds the MMDiT in `dtype` on `device`, its linear weights in `linear_dtype` (see
    /// [`super::Sd3Checkpoint::load_mmdit_as`]).
    pub fn load(&self, dtype: DType, device: &Device, linear_dtype: WeightDtype) -> Result<MMDiT> {
        let weights = self.weights.clone().with_linear_dtype(linear_dtype);
        MMDiT::new(&self.config, weights.var_builder(dtype, device))
            .with_context(|| format!("{}: loading the MMDiT", self.weights.origin().display()))
    }

    /// One line for logs: file, variant and size.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} ({} blocks, {} heads × {})",
            self.weights.origin().display(),
            self.config.variant_name(),
            self.config.depth,
            self.config.num_heads,
            self.config.head_dim
        )
    }
}

/// An SD3 VAE file (bare keys, `first_stage_model.` or `vae.` in front, or diffusers names).
#[derive(Debug, Clone)]
pub struct VaeFile {
    pub config: vae::Config,
    weights: Weights,
}

impl VaeFile {
    pub fn open(path: &Path) -> Result<Self> {
        let (files, keys) = open_keys(path)?;
        let weights = if let Some(prefix) = prefix_of(&keys, DIFFUSERS_VAE_MARKER) {
            let levels = (0..)
                .take_while(|i| {
                    let level = format!("{prefix}decoder.up_blocks.{i}.");
                    keys.iter().any(|k| k.starts_with(&level))
                })
                .count();
            Weights::new(files, &prefix, Naming::DiffusersVae { levels }, path)
        } else if let Some(prefix) = prefix_of(&keys, VAE_MARKER) {
            Weights::new(files, &prefix, Naming::Original, path)
        } else {
            bail!("{}: not a VAE: {}", path.display(), describe(&keys));
        };
        let config = vae::Config::infer(|n| weights.shape_of(n))
            .with_context(|| format!("{}: reading the VAE config", path.display()))?;
        if config.latent_channels != vae::Config::sd3().latent_channels {
            bail!(
                "{}: a VAE with {} latent channels, not SD3's {}",
                path.display(),
                config.latent_channels,
                vae::Config::sd3().latent_channels
            );
        }
        Ok(Self { config, weights })
    }

    /// Builds the VAE in `dtype` on `device`.
    pub fn load(&self, dtype: DType, device: &Device) -> Result<AutoEncoder> {
        AutoEncoder::new(&self.config, self.weights.var_builder(dtype, device))
            .with_context(|| format!("{}: loading the VAE", self.weights.origin().display()))
    }
}

/// A CLIP-L, CLIP-G or T5-XXL file, its kind told by its keys: T5 by its blocks, the
/// CLIPs by their width (the presets of [`Sd3TextConfig`]).
pub fn open_text_encoder(path: &Path) -> Result<TextEncoderWeights> {
    let (files, keys) = open_keys(path)?;
    if let Some(prefix) = prefix_of(&keys, T5_MARKER) {
        let weights = Weights::new(files, &prefix, Naming::Original, path);
        return Ok(TextEncoderWeights {
            kind: TextEncoderKind::T5Xxl,
            weights,
        });
    }
    let Some(prefix) = prefix_of(&keys, CLIP_MARKER) else {
        bail!(
            "{}: not a CLIP-L, CLIP-G or T5-XXL text encoder: {}",
            path.display(),
            describe(&keys)
        );
    };
    let weights = Weights::new(files, &prefix, Naming::Original, path);
    let width = weights
        .shape_of(CLIP_MARKER)
        .and_then(|shape| shape.get(1).copied())
        .with_context(|| format!("{}: `{prefix}{CLIP_MARKER}` is not 2-D", path.display()))?;
    let presets = [Sd3TextConfig::sd3(), Sd3TextConfig::tiny()];
    let kind = if presets.iter().any(|p| p.clip_l.hidden_size == width) {
        TextEncoderKind::ClipL
    } else if presets.iter().any(|p| p.clip_g.hidden_size == width) {
        TextEncoderKind::ClipG
    } else {
        bail!(
            "{}: a CLIP text encoder {width} wide, neither SD3's CLIP-L ({}) nor CLIP-G ({})",
            path.display(),
            Sd3TextConfig::sd3().clip_l.hidden_size,
            Sd3TextConfig::sd3().clip_g.hidden_size
        );
    };
    Ok(TextEncoderWeights { kind, weights })
}

/// The memory-mapped file and its tensor names.
fn open_keys(path: &Path) -> Result<(Arc<TensorFiles>, Vec<String>)> {
    if !path.is_file() {
        bail!("{}: no such file", path.display());
    }
    let files = open_safetensors(&[path.to_path_buf()], path)?;
    let keys = files.tensors().into_iter().map(|(n, _)| n).collect();
    Ok((files, keys))
}

/// What a file holds, for errors about a file of the wrong kind.
fn describe(keys: &[String]) -> String {
    let has = |marker: &str| prefix_of(keys, marker).is_some();
    let mut parts = Vec::new();
    if has(MMDIT_MARKER) || has(DIFFUSERS_MMDIT_MARKER) {
        parts.push("an SD3 diffusion model");
    }
    if has(VAE_MARKER) || has(DIFFUSERS_VAE_MARKER) {
        parts.push("a VAE");
    }
    if has(CLIP_MARKER) {
        parts.push("a CLIP text encoder");
    }
    if has(T5_MARKER) {
        parts.push("a T5 text encoder");
    }
    if !parts.is_empty() {
        return format!("it holds {}", parts.join(" and "));
    }
    match keys.first() {
        Some(first) => format!(
            "none of its {} tensors (such as `{first}`) belongs to SD3",
            keys.len()
        ),
        None => "it holds no tensors".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_what_a_file_holds() {
        let keys = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            describe(&keys(&["first_stage_model.decoder.conv_in.weight"])),
            "it holds a VAE"
        );
        assert_eq!(
            describe(&keys(&[
                "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight",
                "text_encoders.clip_l.transformer.text_model.embeddings.token_embedding.weight"
            ])),
            "it holds an SD3 diffusion model and a CLIP text encoder"
        );
        assert_eq!(
            describe(&keys(&["lora_unet_down.alpha"])),
            "none of its 1 tensors (such as `lora_unet_down.alpha`) belongs to SD3"
        );
        assert_eq!(describe(&[]), "it holds no tensors");
    }
}
