//! Writes the seeded tiny text encoders (`clip_l`, `clip_g`, `t5` `.safetensors`, transformers
//! keys) into a folder, for `nodes/parity/gen_text_encoder_goldens.py`.
//!
//! `cargo run -p cretok-nodes --example write_tiny_text_encoders -- DIR`

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Tensor;
use cretok_nodes::sd3::text_tiny::{
    tiny_clip_g_weights, tiny_clip_l_weights, tiny_t5_weights, TINY_SEED,
};

fn main() -> Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).context("usage: DIR")?);
    std::fs::create_dir_all(&dir)?;
    let files = [
        ("clip_l", tiny_clip_l_weights(TINY_SEED)?),
        ("clip_g", tiny_clip_g_weights(TINY_SEED)?),
        ("t5", tiny_t5_weights(TINY_SEED)?),
    ];
    for (name, weights) in files {
        let map: HashMap<String, Tensor> = weights.into_iter().collect();
        let path = dir.join(format!("{name}.safetensors"));
        candle_core::safetensors::save(&map, &path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
