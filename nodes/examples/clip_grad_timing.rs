//! Times one forward + backward of a real-size CLIP text encoder (random weights) w.r.t. one
//! input-embedding row, as the CreTok trainer runs it: pooled output, unpadded prompt.
//!
//! `cargo run --release -p cretok-nodes --example clip_grad_timing -- [l|g] [seq] [iters] [f32|f16]`
//!
//! The last argument is the precision the weights are stored in (computed in f32 either way;
//! f16 weights are kept in f16, see `sd3::clip::half_weights`).

use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use cretok_nodes::sd3::clip::{ClipConfig, ClipTextModel};
use cretok_nodes::sd3::text_encoders::substitute_row;
use cretok_nodes::sd3::text_tiny::{clip_weights, TinyProjection};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cfg = match args.next().as_deref() {
        Some("g") => ClipConfig::clip_g(),
        _ => ClipConfig::clip_l(),
    };
    let seq: usize = args.next().map_or(Ok(8), |s| s.parse()).context("seq")?;
    let iters: usize = args.next().map_or(Ok(5), |s| s.parse()).context("iters")?;
    let stored = match args.next().as_deref() {
        Some("f16") => DType::F16,
        _ => DType::F32,
    };
    let weights = clip_weights(&cfg, TinyProjection::Random, 1)?
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(stored)?)))
        .collect::<Result<_>>()?;
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let model = ClipTextModel::new(&cfg, vb)?;
    let ids: Vec<u32> = (0..seq as u32).map(|i| 320 + i).collect();
    let embeds = model.embed(&Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?)?;
    let token = Var::from_tensor(&embeds.narrow(1, seq / 2, 1)?.flatten_all()?)?;
    for i in 0..=iters {
        let start = Instant::now();
        let x = substitute_row(&embeds, seq / 2, token.as_tensor())?;
        let pooled = model.forward(&x, &[seq - 1])?.pooled;
        let forward = start.elapsed();
        let grads = pooled.sqr()?.sum_all()?.backward()?;
        let grad = grads.get(token.as_tensor()).context("no gradient")?;
        let norm = grad.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
        if i > 0 {
            println!(
                "1x{seq}: forward {:.1} ms, forward+backward {:.1} ms, |grad| {norm:.3e}",
                forward.as_secs_f64() * 1e3,
                start.elapsed().as_secs_f64() * 1e3
            );
        }
    }
    Ok(())
}
