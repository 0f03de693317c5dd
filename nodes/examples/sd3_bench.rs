//! Times one MMDiT step, one VAE decode and a short generation on a
//! mid-size random-weight SD3, for `nodes/parity/sd3_bench.py`, which runs
//! diffusers on the same shapes and prints both side by side.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p cretok-nodes --example sd3_bench [-- --cuda]
//! [--depth N] [--heads N] [--size PX]]` (defaults: 8 blocks of 8 heads, 256×256).
//!
//! Prints one JSON object: the shapes (the Python side builds its models from
//! them) and the seconds of each case. The weights are random: speed does not
//! depend on their values.

use std::ops::ControlFlow;
use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use cretok_nodes::sd3::mmdit::{self, MMDiT};
use cretok_nodes::sd3::sampling::{seeded_noise, EulerSampler, Prompt, Scheduler};
use cretok_nodes::sd3::types::Conditioning;
use cretok_nodes::sd3::vae::{self, AutoEncoder};
use serde_json::json;

/// Image side length in pixels, unless `--size`.
const SIZE: usize = 256;
/// Context tokens: 77 CLIP + 256 T5 positions, as SD3 sees them.
const TOKENS: usize = 333;
const STEPS: usize = 4;
const CFG: f64 = 5.0;

/// SD3-medium's head size and text widths; by default 8 blocks of 8 heads instead of 24
/// of 24 (`--depth`, `--heads`).
fn mmdit_config() -> Result<mmdit::Config> {
    Ok(mmdit::Config {
        depth: arg("--depth", 8)?,
        num_heads: arg("--heads", 8)?,
        ..mmdit::Config::sd3_medium()
    })
}

/// The value after `name` on the command line, or `default`.
fn arg(name: &str, default: usize) -> Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => {
            let value = args
                .get(i + 1)
                .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?;
            Ok(value.parse()?)
        }
        None => Ok(default),
    }
}

fn timed(device: &Device, f: impl FnOnce() -> Result<()>) -> Result<f64> {
    device.synchronize()?;
    let start = Instant::now();
    f()?;
    device.synchronize()?;
    Ok(start.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let device = if std::env::args().any(|a| a == "--cuda") {
        Device::new_cuda(0)?
    } else {
        Device::Cpu
    };
    let dtype = DType::F32;
    let cfg = mmdit_config()?;
    let size = arg("--size", SIZE)?;
    let vae_cfg = vae::Config::sd3();
    let weights = VarMap::new();
    let mmdit = MMDiT::new(
        &cfg,
        VarBuilder::from_varmap(&weights, dtype, &device).pp("mmdit"),
    )?;
    let vae = AutoEncoder::new(
        &vae_cfg,
        VarBuilder::from_varmap(&weights, dtype, &device).pp("vae"),
    )?;
    let latent = size / 8;
    let randn = |seed: u64, shape: &[usize]| -> Result<Tensor> {
        Ok(seeded_noise(seed, shape, &Device::Cpu)?.to_device(&device)?)
    };
    let x = randn(1, &[2, cfg.in_channels, latent, latent])?;
    let t = Tensor::new(&[1000f32, 750.0], &device)?;
    let y = randn(2, &[2, cfg.adm_in_channels])?;
    let context = randn(3, &[2, TOKENS, cfg.context_embed_size])?;
    let step = || -> Result<()> {
        mmdit.forward(&x, &t, &y, &context, &[])?;
        Ok(())
    };
    // Warm-up: first-touch allocations and kernel caches.
    timed(&device, step)?;
    let mmdit_step = timed(&device, step)?;

    let z = randn(4, &[1, vae_cfg.latent_channels, latent, latent])?;
    let vae_decode = timed(&device, || {
        vae.decode(&z)?;
        Ok(())
    })?;

    let cond = |seed: u64| -> Result<Conditioning> {
        Ok(Conditioning {
            context: randn(seed, &[1, TOKENS, cfg.context_embed_size])?,
            pooled: randn(seed + 1, &[1, cfg.adm_in_channels])?,
        })
    };
    let (positive, negative) = (Prompt::plain(cond(10)?), Prompt::plain(cond(20)?));
    let noise = randn(5, &[1, cfg.in_channels, latent, latent])?;
    let sampler = EulerSampler {
        sigmas: Scheduler::Diffusers.sigmas(STEPS, 3.0),
        cfg: CFG,
        skip_layer_guidance: None,
    };
    let generation = timed(&device, || {
        let out = sampler
            .sample(&mmdit, &positive, &negative, &noise, &mut |_| {
                ControlFlow::Continue(())
            })?
            .ok_or_else(|| anyhow::anyhow!("sampling stopped"))?;
        vae.decode(&out)?.clamp(-1f32, 1f32)?;
        Ok(())
    })?;

    let report = json!({
        "config": {
            "size": size,
            "tokens": TOKENS,
            "steps": STEPS,
            "cfg": CFG,
            "threads": candle_core::utils::get_num_threads(),
            "device": if device.is_cuda() { "cuda" } else { "cpu" },
            "mmdit": {
                "depth": cfg.depth,
                "num_heads": cfg.num_heads,
                "head_dim": cfg.head_dim,
                "patch_size": cfg.patch_size,
                "in_channels": cfg.in_channels,
                "out_channels": cfg.out_channels,
                "adm_in_channels": cfg.adm_in_channels,
                "context_embed_size": cfg.context_embed_size,
                "pos_embed_max_size": cfg.pos_embed_max_size,
            },
            "vae": {
                "block_out_channels": vae_cfg.block_out_channels,
                "layers_per_block": vae_cfg.layers_per_block,
                "latent_channels": vae_cfg.latent_channels,
                "norm_num_groups": vae_cfg.norm_num_groups,
                "scaling_factor": vae_cfg.scaling_factor,
                "shift_factor": vae_cfg.shift_factor,
            },
        },
        "seconds": {
            "mmdit_step": mmdit_step,
            "vae_decode": vae_decode,
            "generation": generation,
        },
    });
    println!("{report}");
    Ok(())
}
