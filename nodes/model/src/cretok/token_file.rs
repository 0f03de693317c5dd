//! The token file (docs/cretok.md, "The token file"): `.safetensors` with `clip_l` `[1, 768]` and
//! `clip_g` `[1, 1280]` (sizes follow the model; the SDXL/SD3 textual-inversion convention that
//! ComfyUI reads as `embedding:name`) and `__metadata__` with the method, word, templates, θ, n,
//! steps, lr, seed, dataset SHA-256, base-model fingerprint and final losses.
//!
//! Checkpoints are token files with the optimiser state (`optim.<encoder>.m` / `.v`) and the
//! resume point (`resume_step`, `resume_rng`) added, so a checkpoint is also a usable token.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use super::encoder::EncoderId;
use cretok_support::files::atomic_write;

/// A learned token (or a textual-inversion embedding) per CLIP encoder.
#[derive(Debug, Clone, Default)]
pub struct CreTokToken {
    /// `[k, hidden]` `f32` on the CPU, per encoder that has one.
    pub vectors: BTreeMap<EncoderId, Tensor>,
    /// Further tensors (a checkpoint's optimiser state), by name.
    pub extra: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl CreTokToken {
    /// The vectors of `id`, `[k, hidden]`.
    pub fn vector(&self, id: EncoderId) -> Option<&Tensor> {
        self.vectors.get(&id)
    }

    /// The redefined word (`creative` when the file does not say).
    pub fn word(&self) -> &str {
        self.metadata.get("word").map_or("creative", String::as_str)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors: Vec<(String, &Tensor)> = self
            .vectors
            .iter()
            .map(|(id, t)| (id.key().to_owned(), t))
            .collect();
        tensors.extend(self.extra.iter().map(|(k, t)| (k.clone(), t)));
        let metadata: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        Ok(safetensors::serialize(tensors, Some(metadata))?)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (_, header) =
            safetensors::SafeTensors::read_metadata(bytes).context("not a safetensors file")?;
        let metadata = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut token = CreTokToken {
            metadata,
            ..Default::default()
        };
        for (name, t) in candle_core::safetensors::load_buffer(bytes, &Device::Cpu)? {
            let t = t.to_dtype(DType::F32)?;
            match EncoderId::ALL.iter().find(|id| id.key() == name) {
                Some(&id) => {
                    let t = match t.rank() {
                        1 => t.unsqueeze(0)?,
                        2 => t,
                        r => bail!("tensor '{name}' has rank {r}, expected [k, hidden]"),
                    };
                    token.vectors.insert(id, t);
                }
                None => {
                    token.extra.insert(name, t);
                }
            }
        }
        if token.vectors.is_empty() {
            bail!("no 'clip_l' or 'clip_g' tensor")
        }
        Ok(token)
    }

    /// Writes atomically (a reader sees the old file or the whole new one).
    pub fn save(&self, path: &Path) -> Result<()> {
        atomic_write(path, &self.to_bytes()?)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading token file {}", path.display()))?;
        Self::from_bytes(&bytes).with_context(|| format!("token file {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_vectors_extra_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let mut token = CreTokToken::default();
        let l = Tensor::new(&[[1f32, 2.0, 3.0]], &Device::Cpu).unwrap();
        token.vectors.insert(EncoderId::ClipL, l);
        token.extra.insert(
            "optim.clip_l.m".into(),
            Tensor::new(&[0.5f32, 0.0, -1.0], &Device::Cpu).unwrap(),
        );
        token.metadata.insert("word".into(), "odd".into());
        let path = dir.path().join("t.safetensors");
        token.save(&path).unwrap();
        let back = CreTokToken::load(&path).unwrap();
        assert_eq!(back.word(), "odd");
        assert!(back.vector(EncoderId::ClipG).is_none());
        let v = back
            .vector(EncoderId::ClipL)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(v, [[1.0, 2.0, 3.0]]);
        assert_eq!(back.extra["optim.clip_l.m"].dims(), &[3]);
        let err = CreTokToken::from_bytes(b"junk").unwrap_err();
        assert!(format!("{err:#}").contains("not a safetensors"));
    }
}
