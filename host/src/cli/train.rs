//! `cretok train`: the CreTok trainer headless (docs/cretok.md; Feng et al., arXiv 2410.24160), with a
//! progress bar, checkpoints every N steps, `--resume`, and Ctrl-C that stops after the current
//! step and leaves a valid checkpoint.
//!
//! The CLIP encoders come from an SD3 checkpoint in `models/checkpoints/`, found as LoadSD3 finds
//! them, or from the seeded tiny text fixture (`--tiny`, kept in the cache folder so that no
//! loader lists it as a checkpoint).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use clap::Args;
use cretok_nodes::builtin::EMBEDDINGS;
use cretok_nodes::cretok::encoder_refs;
use cretok_nodes::cretok::text_source::{checkpoint_clip_encoders, tiny_clip_encoders};
use cretok_nodes::cretok::{
    Control, CreTokToken, EncoderRef, EncoderSet, EvalReport, LossHistory, PairSet, Reporter,
    RunEnd, RunOptions, StartReport, StepReport, Target, TrainConfig, Trainer,
};
use cretok_nodes::fsutil::atomic_write;
use indicatif::ProgressStyle;

use super::console::Console;
use super::DataArgs;

/// The tiny fixture's file name (`--tiny`), in `<data dir>/cache/`, out of the loaders' sight.
const TINY_FILE: &str = "cretok_tiny_text.safetensors";

#[derive(Args)]
pub struct TrainArgs {
    /// SD3 single-file checkpoint (or diffusers folder) in models/checkpoints/; its CLIP-L and
    /// CLIP-G are used.
    #[arg(long, required_unless_present = "tiny", conflicts_with = "tiny")]
    checkpoint: Option<String>,
    /// Development: the seeded tiny text encoders (written to <data dir>/cache/ first).
    #[arg(long)]
    tiny: bool,
    /// Pairs file (cretok-pairs/1 JSON). Default: the built-in CangJie set.
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// The token file to write. Default: models/embeddings/cretok.safetensors. Checkpoints go to
    /// the same name with `.ckpt.safetensors`, the loss plot with `.loss.png`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from the checkpoint next to --out. A larger --steps extends the run (the cosine
    /// schedule is recomputed over the new total); every other setting comes from the
    /// checkpoint, and a flag that disagrees with it is refused.
    #[arg(long)]
    resume: bool,
    /// The word whose meaning the token learns (its embedding is the start). Default: creative.
    #[arg(long)]
    word: Option<String>,
    /// Restrictive prompt P_r, with {t1} and {t2}. Default: "a {t1} {t2}".
    #[arg(long)]
    restrictive_template: Option<String>,
    /// Adaptive prompt P_a, with <CreTok>. Default: "a photo of a <CreTok> mixture".
    #[arg(long)]
    adaptive_template: Option<String>,
    /// θ of the loss 1 - min(cos, θ): pairs at or above it stop pulling. Default: 0.5.
    #[arg(long)]
    theta: Option<f64>,
    /// Pairs sampled per step (n). Default: 16.
    #[arg(long)]
    pairs_per_step: Option<usize>,
    /// Total optimisation steps. Default: 10000.
    #[arg(long)]
    steps: Option<u64>,
    /// Peak learning rate of the cosine schedule (AdamW). Default: 0.01.
    #[arg(long)]
    lr: Option<f64>,
    /// Seed of the pair sampler. Default: 0.
    #[arg(long)]
    seed: Option<u64>,
    /// Encoders that get a token vector: both, clip_l or clip_g. Default: both.
    #[arg(long)]
    encoders: Option<String>,
    /// What the loss compares: pooled (the vector SD3 gets) or sequence. Default: pooled.
    #[arg(long)]
    target: Option<String>,
    /// Write a resumable checkpoint every N steps (0: only at the end or on Ctrl-C).
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    /// Evaluate the full train and held-out losses every N steps (0: only at the end).
    #[arg(long, default_value_t = 1000)]
    eval_every: u64,
    /// No progress bar (lines still go to stderr).
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    data: DataArgs,
}

impl TrainArgs {
    /// `base` with the settings given on the command line put in.
    fn settings_over(&self, base: TrainConfig) -> Result<TrainConfig> {
        Ok(TrainConfig {
            word: self.word.clone().unwrap_or(base.word),
            restrictive_template: self
                .restrictive_template
                .clone()
                .unwrap_or(base.restrictive_template),
            adaptive_template: self
                .adaptive_template
                .clone()
                .unwrap_or(base.adaptive_template),
            theta: self.theta.unwrap_or(base.theta),
            pairs_per_step: self.pairs_per_step.unwrap_or(base.pairs_per_step),
            steps: self.steps.unwrap_or(base.steps),
            lr: self.lr.unwrap_or(base.lr),
            seed: self.seed.unwrap_or(base.seed),
            encoders: match &self.encoders {
                Some(e) => EncoderSet::parse(e)?,
                None => base.encoders,
            },
            target: match &self.target {
                Some(t) => Target::parse(t)?,
                None => base.target,
            },
        })
    }
}

struct CliReporter {
    console: Console,
    stop: Arc<AtomicBool>,
    history: LossHistory,
}

impl Reporter for CliReporter {
    fn start(&mut self, report: &StartReport) {
        for line in report.lines() {
            self.console.line(&line);
        }
    }

    fn step(&mut self, r: &StepReport) -> Control {
        let bar = self.console.bar();
        bar.set_position(r.step);
        bar.set_message(format!(
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
        self.console.line(&report.line());
        self.history.record(report);
    }
}

/// The trainer that continues the checkpoint `ckpt`: its settings, a larger `--steps` if given,
/// and a refusal naming every other flag that disagrees with the checkpoint.
fn resume<'a>(
    args: &TrainArgs,
    refs: &[EncoderRef<'a>],
    pairs: PairSet,
    ckpt: &Path,
    cache: &Path,
) -> Result<Trainer<'a>> {
    let saved = CreTokToken::load(ckpt).context("--resume")?;
    let mut trainer = Trainer::resume(refs, pairs, &saved, Some(cache))?;
    let settings = trainer.config().clone();
    let changed: Vec<String> = settings
        .differences(&args.settings_over(settings.clone())?)
        .iter()
        .map(|name| format!("--{}", name.replace('_', "-")))
        .collect();
    ensure!(
        changed.is_empty(),
        "{} disagree(s) with the checkpoint {}: a resumed run keeps the checkpoint's settings \
         (leave the flag out, or start a new run with another --out)",
        changed.join(", "),
        ckpt.display()
    );
    let step = trainer.step();
    match args.steps {
        Some(steps) if steps != settings.steps => {
            let before = trainer.next_lr();
            trainer.set_steps(steps)?;
            eprintln!(
                "extending the run from {} to {steps} steps: the cosine schedule is recomputed \
                 over {steps} steps (the rate at step {step} goes from {before:.6} to {:.6})",
                settings.steps,
                trainer.next_lr()
            );
        }
        _ => ensure!(
            step < settings.steps,
            "the checkpoint {} has finished its {} steps; pass a larger --steps to continue",
            ckpt.display(),
            settings.steps
        ),
    }
    eprintln!(
        "resuming at step {step} of {} (settings from {})",
        trainer.config().steps,
        ckpt.display()
    );
    Ok(trainer)
}

pub fn train(args: TrainArgs) -> Result<ExitCode> {
    let paths = args.data.paths();
    let encoders = if args.tiny {
        tiny_clip_encoders(&paths.data_dir.join("cache").join(TINY_FILE))
    } else {
        let name = args
            .checkpoint
            .as_deref()
            .context("--checkpoint is required")?;
        checkpoint_clip_encoders(
            &paths.model_folder("checkpoints").join(name),
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
        resume(&args, &refs, pairs, &ckpt, &cache)?
    } else {
        let config = args.settings_over(TrainConfig::default())?;
        Trainer::new(&refs, pairs, config, Some(&cache))?
    };

    let console = Console::new(args.quiet, trainer.config().steps);
    console.bar().set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]")
            .context("progress style")?,
    );
    console.bar().set_position(trainer.step());
    let stop = Arc::new(AtomicBool::new(false));
    let (on_ctrl_c, said) = (Arc::clone(&stop), console.clone());
    ctrlc::set_handler(move || {
        if on_ctrl_c.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        said.line("stopping after this step (Ctrl-C again to quit at once)");
    })
    .context("installing the Ctrl-C handler")?;
    let mut reporter = CliReporter {
        console: console.clone(),
        stop,
        history: LossHistory::default(),
    };
    let opts = RunOptions {
        checkpoint: Some(ckpt.clone()),
        checkpoint_every: args.checkpoint_every,
        eval_every: args.eval_every,
    };
    let end = trainer.run(&opts, &mut reporter)?;
    console.bar().finish_and_clear();
    if !reporter.history.is_empty() {
        let plot = out.with_extension("loss.png");
        atomic_write(&plot, &reporter.history.png()?)?;
        println!("wrote {}", plot.display());
    }
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
