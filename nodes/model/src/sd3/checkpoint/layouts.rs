//! The tensor tables of Stability's single-file checkpoints (ComfyUI layout): every name and
//! shape, for the random-weight files that smoke-test a machine at real size
//! (`cretok checkpoint random`).
//!
//! The tables are not written out by hand: each component is built from its real config
//! against a backend that records the tensors it asks for (no weight is allocated), so they
//! name exactly what the loader reads: `model.diffusion_model.*` (original MMDiT names),
//! `first_stage_model.*` (VAE), `text_encoders.{clip_l,clip_g,t5xxl}.transformer.*`
//! (transformers names; no CLIP-L projection, T5's embedding as `shared.weight` and again as
//! `encoder.embed_tokens.weight`), as in
//! `sd3_medium_incl_clips*.safetensors`. SD3.5 files hold the MMDiT and the VAE only; their text
//! encoders come as separate files.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::sd3::clip::{ClipConfig, ClipTextModel};
use crate::sd3::mmdit::{self, MMDiT};
use crate::sd3::t5::{t5_xxl, T5Config, T5Encoder};
use crate::sd3::vae::{self, AutoEncoder};

/// A released single-file checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `sd3_medium_incl_clips.safetensors`: MMDiT, VAE, CLIP-L, CLIP-G.
    Sd3Medium,
    /// `sd3_medium_incl_clips_t5xxlfp16.safetensors`: the same plus T5-XXL.
    Sd3MediumT5,
    /// `sd3.5_medium.safetensors`: MMDiT-X and VAE.
    Sd35Medium,
    /// `sd3.5_large.safetensors`: MMDiT and VAE.
    Sd35Large,
}

impl Variant {
    pub const ALL: [Self; 4] = [
        Self::Sd3Medium,
        Self::Sd3MediumT5,
        Self::Sd35Medium,
        Self::Sd35Large,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sd3Medium => "sd3-medium",
            Self::Sd3MediumT5 => "sd3-medium-t5",
            Self::Sd35Medium => "sd3.5-medium",
            Self::Sd35Large => "sd3.5-large",
        }
    }

    /// What the file holds.
    pub fn components(self) -> Components {
        let clips = Some((ClipConfig::clip_l(), ClipConfig::clip_g()));
        match self {
            Self::Sd3Medium => Components {
                mmdit: mmdit::Config::sd3_medium(),
                vae: vae::Config::sd3(),
                clips,
                t5: None,
            },
            Self::Sd3MediumT5 => Components {
                t5: Some(t5_xxl()),
                ..Self::Sd3Medium.components()
            },
            Self::Sd35Medium => Components {
                mmdit: mmdit::Config::sd3_5_medium(),
                vae: vae::Config::sd3(),
                clips: None,
                t5: None,
            },
            Self::Sd35Large => Components {
                mmdit: mmdit::Config::sd3_5_large(),
                ..Self::Sd35Medium.components()
            },
        }
    }
}

/// The models a single file holds, by config.
#[derive(Debug, Clone)]
pub struct Components {
    pub mmdit: mmdit::Config,
    pub vae: vae::Config,
    /// CLIP-L and CLIP-G.
    pub clips: Option<(ClipConfig, ClipConfig)>,
    pub t5: Option<T5Config>,
}

/// Tensor names and shapes, sorted by name.
pub type TensorTable = BTreeMap<String, Vec<usize>>;

impl Components {
    /// Every tensor of the single file, under its full name.
    pub fn single_file_tensors(&self) -> Result<TensorTable> {
        let mut table =
            record(|vb| MMDiT::new(&self.mmdit, vb.pp("model.diffusion_model")).map(drop))?;
        table.extend(record(|vb| {
            AutoEncoder::new(&self.vae, vb.pp("first_stage_model")).map(drop)
        })?);
        if let Some((clip_l, clip_g)) = &self.clips {
            table.extend(record(|vb| {
                let vb = vb.pp("text_encoders.clip_l.transformer");
                ClipTextModel::new(clip_l, vb).map(drop)
            })?);
            table.extend(record(|vb| {
                ClipTextModel::new(clip_g, vb.pp("text_encoders.clip_g.transformer")).map(drop)
            })?);
        }
        if let Some(t5) = &self.t5 {
            table.extend(record(|vb| {
                T5Encoder::new(t5, vb.pp("text_encoders.t5xxl.transformer")).map(drop)
            })?);
            // transformers saves T5's tied input embedding twice; the loader reads `shared`.
            table.insert(
                "text_encoders.t5xxl.transformer.encoder.embed_tokens.weight".into(),
                vec![t5.vocab_size, t5.d_model],
            );
        }
        Ok(table)
    }
}

/// SD3 single files carry no CLIP-L projection (docs/parity.md, "Checkpoint keys").
const CLIP_L_PROJECTION: &str = "text_encoders.clip_l.transformer.text_projection.weight";

/// A backend that hands out shape-only placeholders (a broadcast zero: nothing allocated) and
/// records each name and shape asked for. Placeholders are f16, which no constructor widens,
/// packs or transposes.
#[derive(Clone, Default)]
struct ShapeRecorder(Arc<Mutex<TensorTable>>);

impl SimpleBackend for ShapeRecorder {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .lock()
            .map_err(|_| candle_core::Error::Msg("shape recorder poisoned".into()))?
            .insert(name.to_string(), shape.dims().to_vec());
        Tensor::zeros((), dtype, device)?.broadcast_as(shape)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("the shape recorder needs a shape for `{name}`")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        name != CLIP_L_PROJECTION
    }
}

/// The tensors `build` asks for.
fn record(build: impl FnOnce(VarBuilder) -> candle_core::Result<()>) -> Result<TensorTable> {
    let recorder = ShapeRecorder::default();
    let backend: Box<dyn SimpleBackend> = Box::new(recorder.clone());
    build(VarBuilder::from_backend(backend, DType::F16, Device::Cpu))?;
    let table = recorder
        .0
        .lock()
        .map_err(|_| anyhow!("shape recorder poisoned"))?;
    Ok(table.clone())
}
