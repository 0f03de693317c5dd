//! `cretok checkpoint random`: a random-weight single file with exactly the tensors of a
//! released SD3 / SD3.5 checkpoint (names, shapes, ComfyUI layout), streamed to disk, to
//! smoke-test a machine (memory, load time, speed) or benchmark without downloading weights.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use cretok_nodes::sd3::checkpoint::layouts::Variant;
use cretok_nodes::sd3::checkpoint::random_file::{data_len, header, write_random, HalfDType};
use indicatif::ProgressStyle;

use super::console::Console;

#[derive(Args)]
pub struct CheckpointArgs {
    #[command(subcommand)]
    command: CheckpointCommand,
}

#[derive(Subcommand)]
enum CheckpointCommand {
    /// Write a random-weight checkpoint with the real tensors of a released SD3 / SD3.5 file
    /// (its images are noise; it runs at real size, memory and speed).
    Random(RandomArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum DTypeArg {
    F16,
    Bf16,
}

#[derive(Args)]
struct RandomArgs {
    /// Which file to imitate: sd3-medium (sd3_medium_incl_clips), sd3-medium-t5
    /// (sd3_medium_incl_clips_t5xxlfp16), sd3.5-medium or sd3.5-large (MMDiT and VAE only).
    #[arg(long, value_parser = parse_variant)]
    variant: Variant,
    /// Stored precision of the weights.
    #[arg(long, value_enum, default_value = "f16")]
    dtype: DTypeArg,
    /// The file to write (through a temporary file next to it, renamed when complete).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn parse_variant(name: &str) -> Result<Variant, String> {
    Variant::ALL
        .into_iter()
        .find(|v| v.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
            format!("expected one of {}", names.join(", "))
        })
}

pub fn checkpoint(args: CheckpointArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        CheckpointCommand::Random(args) => random(args),
    }
}

fn random(args: RandomArgs) -> anyhow::Result<ExitCode> {
    let dtype = match args.dtype {
        DTypeArg::F16 => HalfDType::F16,
        DTypeArg::Bf16 => HalfDType::BF16,
    };
    let table = args.variant.components().single_file_tensors()?;
    let metadata = [(
        "cretok_random_weights",
        format!("{} seed {}", args.variant.name(), args.seed),
    )];
    let total = header(&table, dtype, &metadata).len() as u64 + data_len(&table);
    let console = Console::new(args.quiet, total);
    console.bar().set_style(
        ProgressStyle::with_template(
            "[{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    console.line(&format!(
        "writing {} random {} weights ({} tensors, {total} bytes) to {}",
        args.variant.name(),
        dtype.safetensors_name(),
        table.len(),
        args.out.display()
    ));
    write_random(&args.out, &table, dtype, args.seed, &metadata, |n| {
        console.bar().set_position(n)
    })?;
    console.bar().finish_and_clear();
    println!("wrote {} ({total} bytes)", args.out.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_is_named_on_the_command_line() {
        for variant in Variant::ALL {
            assert_eq!(parse_variant(variant.name()), Ok(variant));
        }
        let err = parse_variant("sd3-large").unwrap_err();
        assert!(
            err.contains("sd3-medium-t5") && err.contains("sd3.5-large"),
            "{err}"
        );
    }
}
