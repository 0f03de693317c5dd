//! `cretok train`: the CreTok trainer headless (docs/cretok.md; Feng et al., arXiv 2410.24160).
//! It builds the graph CheckpointCLIPLoader → CreTokTrain from its flags and runs it through the
//! executor, as `cretok run` runs a workflow: the progress bar follows the node's progress events,
//! checkpoints come every N steps, `--resume` continues one, and Ctrl-C interrupts the prompt,
//! which the trainer takes as "stop after this step" (the checkpoint stays valid). The loader
//! builds CLIP-L and CLIP-G only (`load_t5` off): no MMDiT, VAE or T5, which training does not use.
//!
//! The run's paths put the token's folder where `--out` is and the input folder where `--pairs`
//! is. `--tiny` writes a tiny seeded SD3 checkpoint (its CLIPs are the tiny text fixture's) into
//! the cache folder and gives the run that folder as its checkpoints and text-encoders folders,
//! so no loader lists the fixture anywhere else.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use cretok_nodes::builtin::EMBEDDINGS;
use cretok_nodes::cretok::{CreTokToken, TrainConfig};
use cretok_nodes::fsutil::parent_dir;
use cretok_nodes::sd3::text_tiny::TINY_SEED;
use cretok_nodes::sd3::tiny::{write_single_file, TinyOptions, TinyVariant};
use cretok_nodes::Paths;
use serde_json::{json, Value as Json};

use super::headless::{execute, failure_exit, Headless};
use super::{native_registry, DataArgs};
use cretok_host::executor::Outcome;

/// The tiny fixture (`--tiny`): a folder under `<data dir>/cache/` and the checkpoint in it.
const TINY_DIR: &str = "cretok_tiny";
const TINY_NAME: &str = "cretok_tiny.safetensors";

/// The graph's node ids.
const LOADER: &str = "1";
const TRAINER: &str = "2";

#[derive(Args)]
pub struct TrainArgs {
    /// SD3 single-file checkpoint (or diffusers folder) in models/checkpoints/; only its CLIP-L
    /// and CLIP-G are loaded.
    #[arg(long, required_unless_present = "tiny", conflicts_with = "tiny")]
    checkpoint: Option<String>,
    /// Development: the seeded tiny text encoders (written to <data dir>/cache/ first).
    #[arg(long)]
    tiny: bool,
    /// Pairs file (cretok-pairs/1 JSON). Default: the built-in CangJie set.
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// The token file to write (a .safetensors name). Default:
    /// models/embeddings/cretok.safetensors. Checkpoints go to the same name with
    /// `.ckpt.safetensors`, the loss plot with `.loss.png`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from the checkpoint next to --out (CreTokTrain's `resume`). A larger --steps extends the run (the cosine
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
    /// Evaluate the full train and held-out losses every N steps (0: only at the start and the
    /// end).
    #[arg(long, default_value_t = 1000)]
    eval_every: u64,
    /// No progress bar (lines still go to stderr).
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    data: DataArgs,
}

impl TrainArgs {
    /// CreTokTrain's inputs: the flags given, else `base`'s settings. Values go to the graph as
    /// typed, so its validation judges them.
    fn node_inputs(&self, base: &TrainConfig, prefix: &str, pairs_file: &str) -> Json {
        json!({
            "clip": [LOADER, 0],
            "pairs_file": pairs_file,
            "word": self.word.as_deref().unwrap_or(&base.word),
            "restrictive_template":
                self.restrictive_template.as_deref().unwrap_or(&base.restrictive_template),
            "adaptive_template":
                self.adaptive_template.as_deref().unwrap_or(&base.adaptive_template),
            "theta": self.theta.unwrap_or(base.theta),
            "pairs_per_step": self.pairs_per_step.unwrap_or(base.pairs_per_step),
            "steps": self.steps.unwrap_or(base.steps),
            "lr": self.lr.unwrap_or(base.lr),
            "seed": self.seed.unwrap_or(base.seed),
            "encoders": self.encoders.as_deref().unwrap_or(base.encoders.name()),
            "target": self.target.as_deref().unwrap_or(base.target.name()),
            "filename_prefix": prefix,
            "report_every": self.eval_every,
            "checkpoint_every": self.checkpoint_every,
            "resume": self.resume,
        })
    }
}

/// The settings of the checkpoint `ckpt` that `--resume` continues: the flags left out take
/// them (CreTokTrain refuses a flag that disagrees with them, by its input name).
fn resumed_settings(ckpt: &Path) -> Result<TrainConfig> {
    let saved = CreTokToken::load(ckpt).context("--resume")?;
    TrainConfig::from_metadata(&saved.metadata).context("--resume: checkpoint settings")
}

/// Writes the tiny fixture into `dir` unless it is there.
fn write_tiny_fixture(dir: &Path) -> Result<()> {
    let path = dir.join(TINY_NAME);
    if path.is_file() {
        return Ok(());
    }
    let opts = TinyOptions {
        variant: TinyVariant::Sd3Medium,
        seed: TINY_SEED,
        clips: true,
        t5: false,
        positions: None,
    };
    write_single_file(&path, &opts).context("writing the tiny fixture")
}

/// `--out` as the token's folder and CreTokTrain's `filename_prefix`.
fn split_out(out: &Path) -> Result<(PathBuf, String)> {
    let Some(prefix) = out
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".safetensors"))
        .filter(|p| !p.is_empty())
    else {
        bail!("--out {}: expected a NAME.safetensors file", out.display());
    };
    Ok((parent_dir(out).to_path_buf(), prefix.to_owned()))
}

pub fn train(args: TrainArgs) -> Result<ExitCode> {
    let mut paths: Paths = args.data.paths().as_ref().clone();
    let ckpt_name = if args.tiny {
        let dir = paths.data_dir.join("cache").join(TINY_DIR);
        write_tiny_fixture(&dir)?;
        paths = paths
            .with_model_folder("checkpoints", &dir)
            .with_model_folder("text_encoders", &dir);
        TINY_NAME.to_owned()
    } else {
        args.checkpoint
            .clone()
            .context("--checkpoint is required")?
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| paths.model_folder(EMBEDDINGS).join("cretok.safetensors"));
    let (token_dir, prefix) = split_out(&out)?;
    paths = paths.with_model_folder(EMBEDDINGS, token_dir);
    let pairs_file = match &args.pairs {
        Some(file) => {
            let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
                bail!("--pairs {}: expected a file", file.display());
            };
            paths = paths.with_input_dir(parent_dir(file));
            name.to_owned()
        }
        None => String::new(),
    };
    let ckpt = out.with_extension("ckpt.safetensors");
    let base = if args.resume {
        resumed_settings(&ckpt)?
    } else {
        TrainConfig::default()
    };
    let prompt = json!({
        LOADER: {
            "class_type": "CheckpointCLIPLoader",
            "inputs": {"ckpt_name": ckpt_name, "load_t5": false},
        },
        TRAINER: {
            "class_type": "CreTokTrain",
            "inputs": args.node_inputs(&base, &prefix, &pairs_file),
        },
    });

    let paths = Arc::new(paths);
    let registry = native_registry(&paths);
    let record = match execute(&paths, &registry, prompt, json!({}), None, args.quiet)? {
        Headless::Invalid => return Ok(ExitCode::from(2)),
        Headless::Ran(record) => record,
    };
    let plot = out.with_extension("loss.png");
    match record.outcome {
        Outcome::Success => {
            println!("wrote {}", plot.display());
            println!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Interrupted => {
            eprintln!(
                "interrupted; checkpoint {} (continue with --resume)",
                ckpt.display()
            );
            Ok(ExitCode::from(130))
        }
        Outcome::Error => Ok(failure_exit(&record)),
    }
}
