//! Times a whole txt2img run from an SD3 checkpoint file, phase by phase, for
//! `nodes/parity/sd3_file_bench.py`, which runs stable-diffusion.cpp on the same file
//! and prints both side by side.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p cretok-model --example sd3_file_bench --
//! --ckpt FILE [--size 512] [--steps 4] [--cfg 5] [--weight-dtype default|int8]`
//!
//! The phases are those a user waits for: loading (the MMDiT, the text encoders with the
//! shipped T5 tokenizer and the VAE, as `LoadSD3` does), encoding the prompt and the empty
//! negative, each Euler step with CFG, and the VAE decode. Prints one JSON object.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use cretok_model::sd3::checkpoint::Sd3Checkpoint;
use cretok_model::sd3::precision::WeightDtype;
use cretok_model::sd3::sampling::{seeded_noise, EulerSampler, Prompt, Scheduler};
use cretok_model::sd3::tokenizer::T5Tokenizer;
use serde_json::json;

const PROMPT: &str = "a photo of a lettuce mantis hybrid, macro, detailed, studio light";

struct Args {
    ckpt: PathBuf,
    size: usize,
    steps: usize,
    cfg: f64,
    weight_dtype: String,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        ckpt: PathBuf::new(),
        size: 512,
        steps: 4,
        cfg: 5.0,
        weight_dtype: "default".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(name) = it.next() {
        let value = it.next().with_context(|| format!("{name} needs a value"))?;
        match name.as_str() {
            "--ckpt" => args.ckpt = value.into(),
            "--size" => args.size = value.parse()?,
            "--steps" => args.steps = value.parse()?,
            "--cfg" => args.cfg = value.parse()?,
            "--weight-dtype" => args.weight_dtype = value,
            other => bail!("unknown option {other}"),
        }
    }
    if args.ckpt.as_os_str().is_empty() {
        bail!("--ckpt FILE is required");
    }
    Ok(args)
}

fn seconds_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// This process's anonymous resident memory and its peak resident memory so far, in GiB
/// (Linux; zeros elsewhere).
fn memory_gib() -> serde_json::Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |kib| kib / (1024.0 * 1024.0))
    };
    json!({"anon": field("RssAnon:"), "peak": field("VmHWM:")})
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let weight_dtype = WeightDtype::from_name(&args.weight_dtype)
        .with_context(|| format!("--weight-dtype: one of {:?}", WeightDtype::NAMES))?;
    let (device, dtype) = (Device::Cpu, DType::F32);

    let start = Instant::now();
    let ckpt = Sd3Checkpoint::open(&args.ckpt, &[])?;
    eprintln!("{}", ckpt.summary());
    let mmdit = ckpt.load_mmdit_as(dtype, &device, weight_dtype)?;
    let encoders = ckpt.load_text_encoders(dtype, &device, T5Tokenizer::shipped, weight_dtype)?;
    let vae = ckpt.load_vae(dtype, &device)?;
    let load = seconds_since(start);
    let after_load = memory_gib();

    let start = Instant::now();
    let positive = Prompt::plain(encoders.encode(PROMPT)?);
    let encode_prompt = seconds_since(start);
    let negative = Prompt::plain(encoders.encode("")?);
    let after_encode = memory_gib();

    let latent = args.size / 8;
    let noise = seeded_noise(
        42,
        &[1, ckpt.mmdit_config.in_channels, latent, latent],
        &device,
    )?;
    let sampler = EulerSampler {
        sigmas: Scheduler::Diffusers.sigmas(args.steps, ckpt.shift),
        cfg: args.cfg,
        skip_layer_guidance: None,
    };
    let mut steps = Vec::new();
    let mut step_start = Instant::now();
    let x = sampler
        .sample(&mmdit, &positive, &negative, &noise, &mut |_| {
            steps.push(seconds_since(step_start));
            step_start = Instant::now();
            ControlFlow::Continue(())
        })?
        .context("sampling stopped")?;
    let after_sampling = memory_gib();

    let start = Instant::now();
    let available = cretok_support::memory::available_bytes();
    let (_, tiling) = vae.decode_fitting(&x, available, &mut || Ok(()))?;
    let decode = seconds_since(start);

    let report = json!({
        "ckpt": args.ckpt,
        "summary": ckpt.summary(),
        "size": args.size,
        "steps": args.steps,
        "cfg": args.cfg,
        "weight_dtype": args.weight_dtype,
        "threads": candle_core::utils::get_num_threads(),
        "has_t5": encoders.has_t5(),
        "decode_tiled": tiling.is_some(),
        "seconds": {
            "load": load,
            "encode_prompt": encode_prompt,
            "steps": steps,
            "decode": decode,
        },
        "memory_gib": {
            "after_load": after_load,
            "after_encode": after_encode,
            "after_sampling": after_sampling,
            "after_decode": memory_gib(),
        },
    });
    println!("{report}");
    Ok(())
}
