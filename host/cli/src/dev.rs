//! `cretok dev`: developer helpers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use cretok_nodes::sd3::tiny::{write_diffusers, write_single_file, TinyOptions, TinyVariant};

use super::DataArgs;

#[derive(Args)]
pub struct DevArgs {
    #[command(subcommand)]
    command: DevCommand,
}

#[derive(Subcommand)]
enum DevCommand {
    /// Write a tiny random-weight SD3 checkpoint into <models>/checkpoints/, so a
    /// workflow runs end to end without downloading SD3 (its images are noise).
    TinyCheckpoint(TinyCheckpointArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Variant {
    /// SD3-medium's structure.
    #[value(name = "sd3")]
    Sd3,
    /// SD3.5-medium's structure: MMDiT-X dual attention, RMS q/k norm.
    #[value(name = "sd3.5-medium")]
    Sd35Medium,
}

#[derive(Clone, Copy, ValueEnum)]
enum LayoutArg {
    /// One `.safetensors` file, as Stability AI ships it.
    Single,
    /// A diffusers folder (`transformer/`, `vae/`, `text_encoder*/`, `model_index.json`).
    Diffusers,
}

#[derive(Args)]
struct TinyCheckpointArgs {
    /// Which model's structure the tiny weights have.
    #[arg(long, value_enum, default_value = "sd3")]
    variant: Variant,
    /// How the checkpoint is stored.
    #[arg(long, value_enum, default_value = "single")]
    layout: LayoutArg,
    /// The file (or folder) name in checkpoints/. Default: `tiny-sd3.safetensors`,
    /// `tiny-sd3.5-medium.safetensors`, or without the extension for diffusers folders.
    #[arg(long)]
    name: Option<String>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The largest image side, in pixels, the checkpoint can generate (a multiple of 16; its
    /// position table grows with it). Default: 384; 1024 runs workflows made for SD3 as shared.
    #[arg(long, value_parser = clap::value_parser!(u32).range(16..=4096))]
    max_size: Option<u32>,
    #[command(flatten)]
    data: DataArgs,
}

pub fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        DevCommand::TinyCheckpoint(args) => tiny_checkpoint(args),
    }
}

fn tiny_checkpoint(args: TinyCheckpointArgs) -> anyhow::Result<ExitCode> {
    let (variant, stem) = match args.variant {
        Variant::Sd3 => (TinyVariant::Sd3Medium, "tiny-sd3"),
        Variant::Sd35Medium => (TinyVariant::Sd35Medium, "tiny-sd3.5-medium"),
    };
    let name = args.name.unwrap_or_else(|| match args.layout {
        LayoutArg::Single => format!("{stem}.safetensors"),
        LayoutArg::Diffusers => stem.to_owned(),
    });
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        anyhow::bail!("--name {name:?}: expected a plain file or folder name");
    }
    let checkpoints = args.data.paths().model_folder("checkpoints");
    std::fs::create_dir_all(&checkpoints)
        .with_context(|| format!("creating {}", checkpoints.display()))?;
    let target = checkpoints.join(&name);
    // No T5: it would double the file, and SD3 runs without it (zeros).
    let opts = TinyOptions {
        variant,
        seed: args.seed,
        clips: true,
        t5: false,
        positions: args.max_size.map(|px| (px as usize).div_ceil(16)),
    };
    eprintln!(
        "writing a tiny random-weight checkpoint to {}",
        target.display()
    );
    match args.layout {
        LayoutArg::Single => write_single_file(&target, &opts)?,
        LayoutArg::Diffusers => write_diffusers(&target, &opts)?,
    }
    for (path, len) in files(&target)? {
        println!("wrote {} ({} KiB)", path.display(), len.div_ceil(1024));
    }
    println!("use it as ckpt_name \"{name}\"");
    Ok(ExitCode::SUCCESS)
}

/// `path` itself, or every file under it, sorted, with sizes.
fn files(path: &Path) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![(path.to_path_buf(), meta.len())]);
    }
    let mut entries = std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort();
    let mut out = Vec::new();
    for entry in entries {
        out.extend(files(&entry)?);
    }
    Ok(out)
}
