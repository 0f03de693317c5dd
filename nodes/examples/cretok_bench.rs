//! Times CreTok training steps at the real SD3 CLIP sizes (CLIP-L 768 x 12 layers, bigG
//! 1280 x 32 layers; random weights, f32, CPU): our trainer with the exact speed-ups of
//! CRETOK.md, and the batched general path for comparison. Pairs with
//! `nodes/parity/cretok_bench_reference.py` (the paper's plain loop); run both with
//! `nodes/parity/cretok_bench.sh`.
//!
//! `cargo run --release -p cretok-nodes --example cretok_bench -- [STEPS]`

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use cretok_nodes::builtin::encoder_refs;
use cretok_nodes::cretok::{PairSet, PathChoice, TrainConfig, Trainer};
use cretok_nodes::sd3::clip::ClipConfig;
use cretok_nodes::sd3::text_encoders::{EncoderVarBuilders, Sd3TextConfig, Sd3TextEncoders};
use cretok_nodes::sd3::text_tiny::{clip_weights, TinyProjection};

/// Random weights; without `text_projection` when `projected` is false (SD3's CLIP-L).
fn vb(cfg: &ClipConfig, projected: bool) -> Result<VarBuilder<'static>> {
    let map: HashMap<String, Tensor> = clip_weights(cfg, TinyProjection::Random, 1)?
        .into_iter()
        .filter(|(k, _)| projected || k != "text_projection.weight")
        .collect();
    Ok(VarBuilder::from_tensors(map, DType::F32, &Device::Cpu))
}

fn main() -> Result<()> {
    let steps: usize = std::env::args().nth(1).map_or(Ok(5), |s| s.parse())?;
    let began = Instant::now();
    let cfg = Sd3TextConfig::sd3();
    let vbs = EncoderVarBuilders {
        // SD3 files carry no CLIP-L projection.
        clip_l: vb(&cfg.clip_l, false)?,
        clip_g: vb(&cfg.clip_g, true)?,
        t5: None,
    };
    let encoders = Sd3TextEncoders::new(&cfg, None, vbs)?;
    eprintln!(
        "random CLIP-L + bigG ready in {:.1}s",
        began.elapsed().as_secs_f64()
    );
    // The step cost depends on n, not on the dataset size: 16 pairs keep the one-off
    // restrictive encoding short.
    let all = PairSet::cangjie()?;
    let json = serde_json::json!({
        "format": "cretok-pairs/1",
        "train": all.train.iter().take(16).map(|p| [&p.first, &p.second]).collect::<Vec<_>>(),
    });
    let pairs = PairSet::parse(json.to_string().as_bytes())?;
    let config = TrainConfig {
        steps: 10_000,
        ..TrainConfig::default()
    };
    let refs = encoder_refs(&encoders);
    println!("| path | s/step | steps/s | 10,000 steps |");
    println!("|---|---|---|---|");
    for (name, path) in [
        (
            "ours (shared P_a, prefix K/V, unpadded, cached P_r)",
            PathChoice::Auto,
        ),
        ("ours, general per-pair path", PathChoice::PerPair),
    ] {
        let setup = Instant::now();
        let mut trainer = Trainer::with_path(&refs, pairs.clone(), config.clone(), None, path)?;
        eprintln!("{name}: setup {:.1}s", setup.elapsed().as_secs_f64());
        trainer.train_step()?; // warm-up
        let t = Instant::now();
        let n = if path == PathChoice::Auto {
            steps
        } else {
            1.max(steps / 5)
        };
        for _ in 0..n {
            trainer.train_step()?;
        }
        let per = t.elapsed().as_secs_f64() / n as f64;
        println!(
            "| {name} | {per:.3} | {:.2} | {:.1} h |",
            1.0 / per,
            per * 10_000.0 / 3600.0
        );
    }
    Ok(())
}
