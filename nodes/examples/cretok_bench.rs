//! Times CreTok training steps at the real SD3 CLIP sizes (CLIP-L 768 x 12 layers, bigG
//! 1280 x 32 layers; random weights, CPU, computed in f32): our trainer with the exact speed-ups
//! of docs/cretok.md, with the weights stored in f16 as in SD3's checkpoints (kept in f16 in memory)
//! and in f32, and the batched general path for comparison. Pairs with
//! `nodes/parity/cretok_bench_reference.py` (the paper's plain loop); run both with
//! `nodes/parity/cretok_bench.sh`.
//!
//! `cargo run --release -p cretok-nodes --example cretok_bench -- [STEPS] [--fast] [--cuda]`
//!
//! `--fast` leaves out the general per-pair path.
//! With `--cuda` (build with `--features cuda`) it times STEPS steps of the fast path on the
//! first GPU, weights in f32 and candle's composed differentiable ops (`InputGrads`).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use cretok_nodes::cretok::encoder_refs;
use cretok_nodes::cretok::{PairSet, PathChoice, TrainConfig, Trainer};
use cretok_nodes::sd3::clip::ClipConfig;
use cretok_nodes::sd3::text_encoders::{EncoderVarBuilders, Sd3TextConfig, Sd3TextEncoders};
use cretok_nodes::sd3::text_tiny::{clip_weights, TinyProjection};

/// Random weights stored in `stored` (as in a file of that dtype), loaded in f32; without
/// `text_projection` when `projected` is false (SD3's CLIP-L).
fn vb(
    cfg: &ClipConfig,
    projected: bool,
    stored: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    let map = clip_weights(cfg, TinyProjection::Random, 1)?
        .into_iter()
        .filter(|(k, _)| projected || k != "text_projection.weight")
        .map(|(k, t)| Ok((k, t.to_dtype(stored)?)))
        .collect::<Result<HashMap<String, Tensor>>>()?;
    Ok(VarBuilder::from_tensors(map, DType::F32, device))
}

fn encoders(stored: DType, device: &Device) -> Result<Sd3TextEncoders> {
    let began = Instant::now();
    let cfg = Sd3TextConfig::sd3();
    let vbs = EncoderVarBuilders {
        // SD3 files carry no CLIP-L projection.
        clip_l: Some(vb(&cfg.clip_l, false, stored, device)?),
        clip_g: Some(vb(&cfg.clip_g, true, stored, device)?),
        t5: None,
    };
    let encoders = Sd3TextEncoders::new(&cfg, None, vbs)?;
    eprintln!(
        "random CLIP-L + bigG ({stored:?} weights) ready in {:.1}s",
        began.elapsed().as_secs_f64()
    );
    Ok(encoders)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cuda = args.iter().any(|a| a == "--cuda");
    let fast_only = args.iter().any(|a| a == "--fast");
    let steps: usize = match args.iter().find(|a| !a.starts_with("--")) {
        Some(s) => s.parse()?,
        None => 5,
    };
    let device = if cuda {
        Device::new_cuda(0)?
    } else {
        Device::Cpu
    };
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
    println!("| path | weights | s/step | steps/s | 10,000 steps |");
    println!("|---|---|---|---|---|");
    let fast = "ours (shared P_a, prefix K/V, unpadded, cached P_r)";
    let mut runs = if cuda {
        vec![(fast, PathChoice::Auto, DType::F32)]
    } else {
        vec![
            (fast, PathChoice::Auto, DType::F16),
            (fast, PathChoice::Auto, DType::F32),
        ]
    };
    if !fast_only {
        let general = "ours, general per-pair path";
        let precisions: Vec<DType> = runs.iter().map(|r| r.2).collect();
        for stored in precisions {
            runs.push((general, PathChoice::PerPair, stored));
        }
    }
    for (name, path, stored) in runs {
        let encoders = encoders(stored, &device)?;
        let refs = encoder_refs(&encoders);
        let setup = Instant::now();
        let mut trainer = Trainer::with_path(&refs, pairs.clone(), config.clone(), None, path)?;
        eprintln!("{name}: setup {:.1}s", setup.elapsed().as_secs_f64());
        trainer.train_step()?; // warm-up
        let t = Instant::now();
        device.synchronize()?;
        let n = if path == PathChoice::Auto {
            steps
        } else {
            1.max(steps / 5)
        };
        for _ in 0..n {
            trainer.train_step()?;
        }
        device.synchronize()?;
        let per = t.elapsed().as_secs_f64() / n as f64;
        let weights = match (stored, cuda) {
            (_, true) => "f32, CUDA",
            (DType::F16, false) => "f16 (kept in f16)",
            _ => "f32",
        };
        println!(
            "| {name} | {weights} | {per:.3} | {:.2} | {:.2} h |",
            1.0 / per,
            per * 10_000.0 / 3600.0
        );
    }
    Ok(())
}
