//! Memory-mapped safetensors seen under original (single-file) key names: a
//! candle `SimpleBackend` that adds a prefix or applies the diffusers key map,
//! and reports missing tensors with what was expected and what was found.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use super::keymap::{transformer_source, vae_source, Source};

/// Memory-maps safetensors files (several for sharded checkpoints).
#[allow(unsafe_code)]
pub fn mmap(paths: &[PathBuf]) -> Result<MmapedSafetensors> {
    // SAFETY: the files are opened read-only and must not be modified while
    // the checkpoint is loaded, the same contract as candle's
    // `VarBuilder::from_mmaped_safetensors`.
    unsafe { MmapedSafetensors::multi(paths) }
}

/// Which key names the files use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Original names behind a prefix (`model.diffusion_model.`, `first_stage_model.`, …).
    Original,
    /// diffusers `transformer/` names; `depth` joint blocks.
    DiffusersTransformer { depth: usize },
    /// diffusers `vae/` names; `levels` resolution levels.
    DiffusersVae { levels: usize },
}

/// One model component's tensors, addressed by original names.
#[derive(Clone)]
pub struct Weights {
    files: Arc<MmapedSafetensors>,
    prefix: String,
    naming: Naming,
    origin: PathBuf,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("origin", &self.origin)
            .field("prefix", &self.prefix)
            .field("naming", &self.naming)
            .finish()
    }
}

impl Weights {
    pub fn new(files: Arc<MmapedSafetensors>, prefix: &str, naming: Naming, origin: &Path) -> Self {
        Self {
            files,
            prefix: prefix.to_string(),
            naming,
            origin: origin.to_path_buf(),
        }
    }

    /// The file or folder the tensors come from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The key prefix in front of the component's names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn source(&self, name: &str) -> Option<Source> {
        let source = match self.naming {
            Naming::Original => Some(Source::Rename(name.to_string())),
            Naming::DiffusersTransformer { depth } => transformer_source(name, depth),
            Naming::DiffusersVae { levels } => vae_source(name, levels),
        }?;
        Some(match (&self.prefix[..], source) {
            ("", s) => s,
            (p, Source::Rename(n)) => Source::Rename(format!("{p}{n}")),
            (p, Source::SwapHalves(n)) => Source::SwapHalves(format!("{p}{n}")),
            (p, Source::LinearAsConv(n)) => Source::LinearAsConv(format!("{p}{n}")),
            (p, Source::Concat(ns)) => {
                Source::Concat(ns.iter().map(|n| format!("{p}{n}")).collect())
            }
        })
    }

    /// The shape of an original-named tensor, if present.
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        let source = self.source(name)?;
        let shapes = source
            .names()
            .iter()
            .map(|n| self.files.get(n).ok().map(|v| v.shape().to_vec()))
            .collect::<Option<Vec<_>>>()?;
        let mut shape = shapes[0].clone();
        match source {
            Source::Concat(_) => shape[0] = shapes.iter().map(|s| s[0]).sum(),
            Source::LinearAsConv(_) => shape.extend([1, 1]),
            Source::Rename(_) | Source::SwapHalves(_) => {}
        }
        Some(shape)
    }

    /// Loads an original-named tensor in `dtype` on `device`.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let Some(source) = self.source(name) else {
            return Err(self.missing(name, &[]));
        };
        let names = source.names();
        let mut parts = Vec::with_capacity(names.len());
        for n in &names {
            if self.files.get(n).is_err() {
                return Err(self.missing(name, &names));
            }
            parts.push(self.files.load(n, device)?.to_dtype(dtype)?);
        }
        source.assemble(&parts)
    }

    fn missing(&self, name: &str, looked_for: &[&str]) -> candle_core::Error {
        let found = self.files.tensors();
        let mut sample: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        sample.sort_unstable();
        sample.truncate(4);
        let looked = if looked_for.is_empty() {
            "no known diffusers name".to_string()
        } else {
            looked_for.join(", ")
        };
        candle_core::Error::Msg(format!(
            "{}: missing tensor `{name}` (looked for {looked}); the file has {} tensors, e.g. {}",
            self.origin.display(),
            found.len(),
            sample.join(", ")
        ))
    }

    /// Whether every tensor needed for `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.source(name)
            .is_some_and(|s| s.names().iter().all(|n| self.files.get(n).is_ok()))
    }

    /// A `VarBuilder` rooted at the component.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }
}

impl SimpleBackend for Weights {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let t = self.load(name, dtype, dev)?;
        if t.shape() != &s {
            candle_core::bail!(
                "{}: tensor `{name}` has shape {:?}, the detected config expects {:?}",
                self.origin.display(),
                t.dims(),
                s.dims()
            );
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.contains(name)
    }
}
