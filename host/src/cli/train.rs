//! `cretok train`: the CreTok trainer headless (docs/cretok.md; Feng et al., arXiv 2410.24160), with a
//! progress bar, checkpoints every N steps, `--resume`, and Ctrl-C that stops after the current
//! step and leaves a valid checkpoint.
//!
//! The CLIP encoders come from an SD3 checkpoint in `models/checkpoints/`, found as LoadSD3 finds
//! them, or from the seeded tiny text fixture (`--tiny`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use clap::Args;
use cretok_nodes::builtin::{encoder_refs, EMBEDDINGS};
use cretok_nodes::cretok::{
    Control, CreTokToken, EncoderSet, EvalReport, PairSet, Reporter, RunEnd, RunOptions,
    StartReport, StepReport, Target, TrainConfig, Trainer,
};
use cretok_nodes::fsutil::atomic_write;
use cretok_nodes::sd3::checkpoint::Sd3Checkpoint;
use cretok_nodes::sd3::text_encoders::{EncoderVarBuilders, Sd3TextConfig, Sd3TextEncoders};
use cretok_nodes::sd3::text_tiny::{tiny_clip_g_weights, tiny_clip_l_weights, TINY_SEED};
use indicatif::{ProgressBar, ProgressStyle};

use super::DataArgs;

/// The tiny fixture's file name in `models/checkpoints/` (`--tiny`).
const TINY_FILE: &str = "cretok_tiny_text.safetensors";

#[derive(Args)]
pub struct TrainArgs {
    /// SD3 single-file checkpoint in models/checkpoints/ (its CLIP-L and CLIP-G are used).
    #[arg(long, required_unless_present = "tiny", conflicts_with = "tiny")]
    checkpoint: Option<String>,
    /// Development: the seeded tiny text encoders (written to models/checkpoints/ first).
    #[arg(long)]
    tiny: bool,
    /// Pairs file (cretok-pairs/1 JSON); default: the built-in CangJie set.
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// The token file to write; default: models/embeddings/cretok.safetensors. Checkpoints go to
    /// the same name with `.ckpt.safetensors`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from the checkpoint next to --out (its settings win).
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value = "creative")]
    word: String,
    #[arg(long, default_value = "a {t1} {t2}")]
    restrictive_template: String,
    #[arg(long, default_value = "a photo of a <CreTok> mixture")]
    adaptive_template: String,
    #[arg(long, default_value_t = 0.5)]
    theta: f64,
    #[arg(long, default_value_t = 16)]
    pairs_per_step: usize,
    #[arg(long, default_value_t = 10_000)]
    steps: u64,
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// both, clip_l or clip_g.
    #[arg(long, default_value = "both")]
    encoders: String,
    /// pooled or sequence.
    #[arg(long, default_value = "pooled")]
    target: String,
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    #[arg(long, default_value_t = 1000)]
    eval_every: u64,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    data: DataArgs,
}

/// Loads CLIP-L and CLIP-G (no T5) of an SD3 checkpoint the way LoadSD3 finds them: a single
/// file (memory-mapped), a diffusers folder, or separate files in `models/text_encoders/`; on
/// the GPU in a `--features cuda` build.
fn load_text_encoders(path: &Path, text_encoder_dirs: &[PathBuf]) -> Result<Sd3TextEncoders> {
    let ckpt = Sd3Checkpoint::open(path, text_encoder_dirs)?;
    // f32 arithmetic on every device (the token trains in f32); on the CPU, weights stored in
    // f16 stay in f16 (`sd3::clip::half_weights`).
    let device = Device::cuda_if_available(0)?;
    let (clip_l, clip_g) = ckpt.clip_var_builders(DType::F32, &device)?;
    let cfg = Sd3TextConfig::for_context_width(ckpt.mmdit_config.context_embed_size)?;
    let vbs = EncoderVarBuilders {
        clip_l,
        clip_g,
        t5: None,
    };
    Sd3TextEncoders::new(&cfg, None, vbs)
}

/// The tiny fixture's text encoders, written as a single file (once) and loaded back.
fn tiny_text_encoders(path: &Path) -> Result<Sd3TextEncoders> {
    write_tiny(path)?;
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let vbs = EncoderVarBuilders {
        t5: None,
        ..EncoderVarBuilders::single_file(&vb)
    };
    Sd3TextEncoders::new(&Sd3TextConfig::tiny(), None, vbs)
}

/// Writes the tiny fixture as a single-file checkpoint (once).
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

struct CliReporter {
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
}

impl CliReporter {
    /// A line above the bar, or on stderr without one (`--quiet`).
    fn line(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

impl Reporter for CliReporter {
    fn start(&mut self, report: &StartReport) {
        for line in report.lines() {
            self.line(line);
        }
    }

    fn step(&mut self, r: &StepReport) -> Control {
        self.bar.set_position(r.step);
        self.bar.set_message(format!(
            "loss {:.5} lr {:.6} {:.2} steps/s",
            r.loss, r.lr, r.steps_per_s
        ));
        if self.stop.load(Ordering::SeqCst) {
            Control::Stop
        } else {
            Control::Continue
        }
    }

    fn eval(&mut self, report: &EvalReport) {
        self.line(report.line());
    }
}

pub fn train(args: TrainArgs) -> Result<ExitCode> {
    let paths = args.data.paths();
    let checkpoints = paths.model_folder("checkpoints");
    let encoders = if args.tiny {
        tiny_text_encoders(&checkpoints.join(TINY_FILE))
    } else {
        let name = args
            .checkpoint
            .as_deref()
            .context("--checkpoint is required")?;
        load_text_encoders(
            &checkpoints.join(name),
            &[paths.model_folder("text_encoders")],
        )
    }
    .context("loading the CLIP text encoders")?;
    let pairs = match &args.pairs {
        Some(p) => PairSet::from_file(p)?,
        None => PairSet::cangjie()?,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| paths.model_folder(EMBEDDINGS).join("cretok.safetensors"));
    let ckpt = out.with_extension("ckpt.safetensors");
    let cache = paths.data_dir.join("cache").join("cretok");
    let refs = encoder_refs(&encoders);
    let mut trainer = if args.resume {
        let saved = CreTokToken::load(&ckpt).context("--resume")?;
        let t = Trainer::resume(&refs, pairs, &saved, Some(&cache))?;
        eprintln!(
            "resuming at step {} (settings from {})",
            t.step(),
            ckpt.display()
        );
        t
    } else {
        let config = TrainConfig {
            word: args.word.clone(),
            restrictive_template: args.restrictive_template.clone(),
            adaptive_template: args.adaptive_template.clone(),
            theta: args.theta,
            pairs_per_step: args.pairs_per_step,
            steps: args.steps,
            lr: args.lr,
            seed: args.seed,
            encoders: EncoderSet::parse(&args.encoders)?,
            target: Target::parse(&args.target)?,
        };
        Trainer::new(&refs, pairs, config, Some(&cache))?
    };

    let stop = Arc::new(AtomicBool::new(false));
    let on_ctrl_c = Arc::clone(&stop);
    ctrlc::set_handler(move || {
        if on_ctrl_c.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("stopping after this step (Ctrl-C again to quit at once)");
    })
    .context("installing the Ctrl-C handler")?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(trainer.config().steps).with_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]")
                .context("progress style")?,
        )
    };
    bar.set_position(trainer.step());
    let mut reporter = CliReporter {
        bar: bar.clone(),
        stop,
    };
    let opts = RunOptions {
        checkpoint: Some(ckpt.clone()),
        checkpoint_every: args.checkpoint_every,
        eval_every: args.eval_every,
    };
    let end = trainer.run(&opts, &mut reporter)?;
    bar.finish_and_clear();
    match end {
        RunEnd::Finished(losses) => {
            trainer.token_file(Some(&losses))?.save(&out)?;
            println!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        RunEnd::Stopped { step } => {
            eprintln!(
                "interrupted at step {step}; checkpoint {} (continue with --resume)",
                ckpt.display()
            );
            Ok(ExitCode::from(130))
        }
    }
}
