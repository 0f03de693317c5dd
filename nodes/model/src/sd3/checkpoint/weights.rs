//! Memory-mapped safetensors seen under original (single-file) key names: a
//! candle `SimpleBackend` that adds a prefix or applies the diffusers key map,
//! and reports missing tensors with what was expected and what was found.
//!
//! Linear weights, lookup tables and the VAE's 3×3 kernels asked for in f32 on the CPU
//! come in their stored format (f16, bf16, float8; see `sd3::precision`); ComfyUI's scaled float8 weights
//! (`<layer>.weight` in float8 beside a per-tensor `<layer>.scale_weight`) are
//! seen scaled by every other request. A component loaded with [`WeightDtype::Int8`] gets
//! its linear weights quantised to int8 blocks instead (`sd3::precision::int8`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use safetensors::Dtype as StDtype;

use super::keymap::{transformer_source, vae_source, Source};
use crate::sd3::precision::{
    self, format::e5m2_to_f16, int8, product::is_stored_format, LinearWeight, WeightDtype,
};

use super::tensor_files::TensorFiles;

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
    files: Arc<TensorFiles>,
    prefix: String,
    naming: Naming,
    origin: PathBuf,
    linear_dtype: WeightDtype,
    /// Tensors read ahead for the var builder holding this, taken as they are asked for.
    read_ahead: Option<Arc<Mutex<HashMap<String, Tensor>>>>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("origin", &self.origin)
            .field("prefix", &self.prefix)
            .field("naming", &self.naming)
            .field("linear_dtype", &self.linear_dtype)
            .finish()
    }
}

impl Weights {
    pub fn new(files: Arc<TensorFiles>, prefix: &str, naming: Naming, origin: &Path) -> Self {
        Self {
            files,
            prefix: prefix.to_string(),
            naming,
            origin: origin.to_path_buf(),
            linear_dtype: WeightDtype::Stored,
            read_ahead: None,
        }
    }

    /// The same tensors, with `sd3::linear`'s weights (the
    /// [`precision::STORED_LINEAR_WEIGHT`] requests) kept in `linear_dtype`.
    pub fn with_linear_dtype(mut self, linear_dtype: WeightDtype) -> Self {
        self.linear_dtype = linear_dtype;
        self
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

    /// Loads an original-named tensor in `dtype` on `device`, scaled by its
    /// `scale_weight` when it has one.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let stored = self.load_stored(name, device)?;
        self.scaled(name, stored)?.to_dtype(dtype)
    }

    /// `stored` times the scale of `name` (in f32) when it has one, else `stored`.
    fn scaled(&self, name: &str, stored: Tensor) -> Result<Tensor> {
        match self.scale_of(name)? {
            Some(scale) => stored.to_dtype(DType::F32)? * f64::from(scale),
            None => Ok(stored),
        }
    }

    /// Loads an original-named tensor as stored (float8 e5m2, which candle has no
    /// dtype for, as the f16 holding the same values), without its scale.
    pub fn load_stored(&self, name: &str, device: &Device) -> Result<Tensor> {
        let Some(source) = self.source(name) else {
            return Err(self.missing(name, &[]));
        };
        let names = source.names();
        let mut parts = Vec::with_capacity(names.len());
        for n in &names {
            let Ok(view) = self.files.get(n) else {
                return Err(self.missing(name, &names));
            };
            parts.push(match view.dtype() {
                StDtype::F16 | StDtype::BF16 | StDtype::F32 if device.is_cpu() => {
                    match self.take_read_ahead(n) {
                        Some(tensor) => tensor,
                        None => self.files.read_tensor(n)?,
                    }
                }
                dtype => {
                    let part = if dtype == StDtype::F8_E5M2 {
                        let values: Vec<_> = view.data().iter().map(|&b| e5m2_to_f16(b)).collect();
                        Tensor::from_vec(values, view.shape(), device)?
                    } else {
                        self.files.load(n, device)?
                    };
                    self.files.release_pages(n);
                    part
                }
            });
        }
        if parts.iter().any(|p| p.dtype() != parts[0].dtype()) {
            let wide: Vec<Tensor> = parts
                .iter()
                .map(|p| p.to_dtype(DType::F32))
                .collect::<Result<_>>()?;
            return source.assemble(&wide);
        }
        source.assemble(&parts)
    }

    /// The per-tensor scale of a ComfyUI scaled-float8 weight (`<layer>.scale_weight`
    /// beside `<layer>.weight`), if it has one.
    pub fn scale_of(&self, name: &str) -> Result<Option<f32>> {
        let Some(layer) = name.strip_suffix(".weight") else {
            return Ok(None);
        };
        let scale_name = format!("{layer}.scale_weight");
        if !self.contains(&scale_name) {
            return Ok(None);
        }
        let scale = self.load_stored(&scale_name, &Device::Cpu)?;
        match scale.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?[..] {
            [value] if value.is_finite() => Ok(Some(value)),
            _ => candle_core::bail!(
                "{}: `{scale_name}` must be one finite value (a per-tensor scale), found shape {:?}",
                self.origin.display(),
                scale.dims()
            ),
        }
    }

    /// A linear weight (CPU) for `request`: in its stored format where that is a
    /// format the kernels widen (f16, bf16, float8), in f32 otherwise; a scaled
    /// float8 weight as stored for [`LinearWeight::Stored`] (the caller applies the
    /// scale), scaled into f16 for [`LinearWeight::Scaled`].
    pub fn load_linear_weight(&self, name: &str, request: LinearWeight) -> Result<Tensor> {
        let stored = self.load_stored(name, &Device::Cpu)?;
        if !is_stored_format(stored.dtype()) {
            return self.scaled(name, stored)?.to_dtype(DType::F32);
        }
        match (request, self.scale_of(name)?) {
            (LinearWeight::Stored, _) | (LinearWeight::Scaled, None) => Ok(stored),
            (LinearWeight::Scaled, Some(scale)) => {
                (stored.to_dtype(DType::F32)? * f64::from(scale))?.to_dtype(DType::F16)
            }
        }
    }

    /// A linear weight of `shape` `[out, in]`, times its scale if it has one, quantised to
    /// int8 blocks: a `u8` tensor `[out, int8::row_bytes(in)]`.
    /// A weight stored under one name in f32, f16 or bf16 is quantised where it lies in the
    /// map ([`int8::quantise_le_bytes`]), others are loaded first.
    fn load_int8_linear_weight(&self, name: &str, shape: &Shape) -> Result<Tensor> {
        let scale = self.scale_of(name)?.unwrap_or(1.0);
        let in_context = |e: candle_core::Error| {
            candle_core::Error::Msg(format!("{}: `{name}`: {e}", self.origin.display()))
        };
        if let (Some(Source::Rename(n)), Ok((out, inp))) = (self.source(name), shape.dims2()) {
            if let Ok(view) = self.files.get(&n) {
                let dtype = match view.dtype() {
                    StDtype::F32 => Some(DType::F32),
                    StDtype::F16 => Some(DType::F16),
                    StDtype::BF16 => Some(DType::BF16),
                    _ => None,
                };
                let in_place = dtype
                    .filter(|_| view.shape() == shape.dims())
                    .and_then(|d| int8::quantise_le_bytes(d, view.data(), (out, inp), scale));
                if let Some(packed) = in_place {
                    self.files.release_pages(&n);
                    return packed.map_err(in_context);
                }
            }
        }
        let stored = self.load_stored(name, &Device::Cpu)?;
        self.check_shape(name, &stored, shape)?;
        int8::quantise(&stored, scale).map_err(in_context)
    }

    /// A lookup table or a convolution kernel (CPU): as stored when that is f16 or bf16
    /// without a scale, in f32 otherwise.
    fn load_compact(&self, name: &str) -> Result<Tensor> {
        let stored = self.load_stored(name, &Device::Cpu)?;
        let half = matches!(stored.dtype(), DType::F16 | DType::BF16);
        if half && self.scale_of(name)?.is_none() {
            return Ok(stored);
        }
        self.scaled(name, stored)?.to_dtype(DType::F32)
    }

    fn check_shape(&self, name: &str, t: &Tensor, s: &Shape) -> Result<()> {
        if t.shape() != s {
            candle_core::bail!(
                "{}: tensor `{name}` has shape {:?}, the detected config expects {:?}",
                self.origin.display(),
                t.dims(),
                s.dims()
            );
        }
        Ok(())
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

    /// A `VarBuilder` rooted at the component. On the CPU, with linear weights as stored,
    /// the component's tensors that are kept as read are read first, in file order (see
    /// [`TensorFiles::read_ahead`]); what the model does not ask for is freed with the
    /// builder. (Int8 weights are quantised from the map instead: reading them whole first
    /// would double their peak.)
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        let mut weights = self.clone();
        if device.is_cpu() && self.linear_dtype == WeightDtype::Stored {
            match self.files.read_ahead(|name| name.starts_with(&self.prefix)) {
                Ok(tensors) => weights.read_ahead = Some(Arc::new(Mutex::new(tensors))),
                // Each tensor is then read when asked for, and a lasting error reported there.
                Err(e) => tracing::warn!("{}: reading ahead: {e}", self.origin.display()),
            }
        }
        VarBuilder::from_backend(Box::new(weights), dtype, device.clone())
    }

    fn take_read_ahead(&self, name: &str) -> Option<Tensor> {
        let tensors = self.read_ahead.as_ref()?;
        tensors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
    }
}

impl SimpleBackend for Weights {
    fn get(&self, s: Shape, name: &str, init: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let t = match precision::linear_weight(&init, &s, dtype, dev) {
            Some(_) if self.linear_dtype == WeightDtype::Int8 => {
                return self.load_int8_linear_weight(name, &s);
            }
            Some(request) => self.load_linear_weight(name, request)?,
            None if precision::stored_table(&init, dtype, dev)
                || precision::stored_conv_kernel(&init, &s, dtype, dev) =>
            {
                self.load_compact(name)?
            }
            None => self.load(name, dtype, dev)?,
        };
        self.check_shape(name, &t, &s)?;
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.contains(name)
    }
}
