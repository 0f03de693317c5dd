//! The `cretok` subcommands.

mod dev;
mod nodes;
mod run;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use cretok_nodes::{Paths, Registry};

#[derive(Parser)]
#[command(
    name = "cretok",
    version,
    about = "CreTok Studio: node-based creative image generation"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the ComfyUI-compatible HTTP + websocket API and the editor.
    Serve(serve::ServeArgs),
    /// Run a workflow file headless.
    Run(run::RunArgs),
    /// Print the node types (object_info).
    Nodes(nodes::NodesArgs),
    /// Developer helpers (tiny test checkpoints).
    Dev(dev::DevArgs),
}

/// Where data and models live; shared by every subcommand.
#[derive(Args, Clone)]
pub struct DataArgs {
    /// Data directory: outputs, inputs, user settings and saved workflows.
    #[arg(long, env = "CRETOK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Models directory with ComfyUI-style subfolders (checkpoints/, text_encoders/, embeddings/).
    /// Defaults to <data dir>/models.
    #[arg(long, env = "CRETOK_MODELS_DIR")]
    models: Option<PathBuf>,
}

impl DataArgs {
    pub fn paths(&self) -> Arc<Paths> {
        let data_dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        Arc::new(Paths::new(data_dir, self.models.clone()))
    }
}

/// `$XDG_DATA_HOME/cretok`, or `~/.local/share/cretok`, or `./cretok-data`.
fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .map_or_else(|| PathBuf::from("cretok-data"), |d| d.join("cretok"))
}

/// Every node type the host offers.
pub fn native_registry(paths: &Arc<Paths>) -> Registry {
    let mut registry = Registry::new();
    cretok_nodes::builtin::register_all(&mut registry, Arc::clone(paths));
    registry
}

pub fn main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Run(args) => run::run(args),
        Command::Nodes(args) => nodes::nodes(args),
        Command::Dev(args) => dev::dev(args),
    }
}
