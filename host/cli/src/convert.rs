//! `cretok convert`: write the API form of an editor workflow (or of the
//! prompt embedded in a PNG).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::{CustomNodeArgs, DataArgs, NodeSource};
use cretok_host::workflow;

#[derive(Args)]
pub struct ConvertArgs {
    /// A UI-format workflow saved by the editor, or a PNG written by SaveImage
    /// (API-format files are written back as they are).
    input: PathBuf,
    /// Where to write the API-format JSON (default: standard output).
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    custom: CustomNodeArgs,
}

pub fn convert(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    let paths = args.data.paths();
    let (registry, _) = NodeSource::new(Arc::clone(&paths), &args.custom)?.registry();
    let file = workflow::load(&args.input, &registry)?;
    let text = serde_json::to_string_pretty(&file.prompt)? + "\n";
    match &args.output {
        Some(path) => cretok_nodes::fsutil::atomic_write(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
