//! Writes the CreTok parity fixture for `nodes/parity/cretok_reference.py`: the seeded tiny
//! CLIP-L / CLIP-G weights (transformers keys) and `schedule.json` (the run's settings, the
//! training pairs and the pair indices our sampler draws at each step).
//!
//! `cargo run -p cretok-nodes --example cretok_parity_fixture -- DIR`

#[path = "../tests/common/cretok_parity_settings.rs"]
mod parity_settings;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Tensor;
use cretok_nodes::cretok::sampler::PairSampler;
use cretok_nodes::cretok::PairSet;
use cretok_nodes::sd3::text_tiny::{tiny_clip_g_weights, tiny_clip_l_weights, TINY_SEED};
use parity_settings::parity_config;

fn main() -> Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).context("usage: DIR")?);
    std::fs::create_dir_all(&dir)?;
    for (name, weights) in [
        ("clip_l", tiny_clip_l_weights(TINY_SEED)?),
        ("clip_g", tiny_clip_g_weights(TINY_SEED)?),
    ] {
        let map: HashMap<String, Tensor> = weights.into_iter().collect();
        candle_core::safetensors::save(&map, dir.join(format!("{name}.safetensors")))?;
    }
    let cfg = parity_config();
    let pairs = PairSet::cangjie()?;
    let mut sampler = PairSampler::new(cfg.seed);
    let schedule: Vec<Vec<usize>> = (0..cfg.steps)
        .map(|_| sampler.sample(cfg.pairs_per_step, pairs.train.len()))
        .collect();
    let json = serde_json::json!({
        "word": cfg.word,
        "restrictive_template": cfg.restrictive_template,
        "adaptive_template": cfg.adaptive_template,
        "theta": cfg.theta,
        "pairs_per_step": cfg.pairs_per_step,
        "steps": cfg.steps,
        "lr": cfg.lr,
        "seed": cfg.seed,
        "train": pairs.train.iter().map(|p| [&p.first, &p.second]).collect::<Vec<_>>(),
        "schedule": schedule,
    });
    std::fs::write(dir.join("schedule.json"), serde_json::to_string(&json)?)?;
    Ok(())
}
