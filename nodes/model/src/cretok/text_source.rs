//! Where the trainer's CLIP-L and CLIP-G come from outside a graph (`cretok train`): an SD3
//! checkpoint found as LoadSD3 finds it, or the seeded tiny text fixture.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device};

use crate::sd3::checkpoint::Sd3Checkpoint;
use crate::sd3::text_encoders::{EncoderVarBuilders, Sd3TextConfig, Sd3TextEncoders};

/// CLIP-L and CLIP-G (no T5) of an SD3 checkpoint the way LoadSD3 finds them: a single file
/// (memory-mapped), a diffusers folder, or separate files in `text_encoder_dirs`; on the GPU
/// in a `--features cuda` build.
pub fn checkpoint_clip_encoders(
    path: &Path,
    text_encoder_dirs: &[PathBuf],
) -> Result<Sd3TextEncoders> {
    let ckpt = Sd3Checkpoint::open(path, text_encoder_dirs)?;
    // f32 arithmetic on every device (the token trains in f32); on the CPU, weights stored in
    // half precision stay so (`sd3::clip::half_weights`).
    let device = Device::cuda_if_available(0)?;
    let (clip_l, clip_g) = ckpt.clip_var_builders(DType::F32, &device)?;
    let cfg = Sd3TextConfig::for_context_width(ckpt.mmdit_config.context_embed_size)?;
    let vbs = EncoderVarBuilders {
        clip_l: Some(clip_l),
        clip_g: Some(clip_g),
        t5: None,
    };
    Sd3TextEncoders::new(&cfg, None, vbs)
}

#[cfg(any(test, feature = "test-fixtures"))]
pub use fixture::tiny_clip_encoders;

#[cfg(any(test, feature = "test-fixtures"))]
mod fixture {
    use std::collections::HashMap;
    use std::path::Path;

    use anyhow::Result;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;

    use crate::files::atomic_write;
    use crate::sd3::text_encoders::{EncoderVarBuilders, Sd3TextConfig, Sd3TextEncoders};
    use crate::sd3::text_tiny::{tiny_clip_g_weights, tiny_clip_l_weights, TINY_SEED};

    /// The tiny fixture's CLIP encoders, written as a single file at `path` (once) and loaded back.
    pub fn tiny_clip_encoders(path: &Path) -> Result<Sd3TextEncoders> {
        write_tiny(path)?;
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let vbs = EncoderVarBuilders {
            t5: None,
            ..EncoderVarBuilders::single_file(&vb)
        };
        Sd3TextEncoders::new(&Sd3TextConfig::tiny(), None, vbs)
    }

    fn write_tiny(path: &Path) -> Result<()> {
        if path.is_file() {
            return Ok(());
        }
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for (enc, weights) in [
            ("clip_l", tiny_clip_l_weights(TINY_SEED)?),
            ("clip_g", tiny_clip_g_weights(TINY_SEED)?),
        ] {
            for (k, t) in weights {
                map.insert(format!("text_encoders.{enc}.transformer.{k}"), t);
            }
        }
        atomic_write(path, &safetensors::serialize(map.iter(), None)?)
    }
}
