//! The `cretok` command line: the host (`cretok-host`) with the native nodes
//! (`cretok-nodes`) registered, and one module per subcommand.

mod checkpoint;
mod console;
mod convert;
mod dev;
mod headless;
mod nodes;
mod run;
mod serve;
mod train;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use cretok_nodes::{
    default_memory_budget, Paths, PreviewMethod, PromptLimits, Registry, DEFAULT_MAX_NODES,
};

use cretok_host::sandbox::{SandboxHost, SandboxLimits};

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
    /// Write the API form of an editor (UI-format) workflow or a SaveImage PNG.
    Convert(convert::ConvertArgs),
    /// Print the node types (object_info).
    Nodes(nodes::NodesArgs),
    /// Train a CreTok token headless (arXiv 2410.24160).
    Train(train::TrainArgs),
    /// Developer helpers (tiny test checkpoints).
    Dev(dev::DevArgs),
    /// Checkpoint tools: random-weight files with the real tensors, to smoke-test a machine.
    Checkpoint(checkpoint::CheckpointArgs),
    /// Run prompts from the shared Redis queue of `cretok serve --redis` fronts.
    Worker(worker::WorkerArgs),
}

/// Where data and models live; shared by every subcommand.
#[derive(Args, Clone)]
pub struct DataArgs {
    /// Data directory: outputs, inputs, user settings, saved workflows, caches and (by default)
    /// models. Default: $XDG_DATA_HOME/cretok, else ~/.local/share/cretok (Linux and macOS),
    /// else ./cretok-data (Windows, or without HOME).
    #[arg(long, env = "CRETOK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Models directory with ComfyUI-style subfolders (checkpoints/, text_encoders/, embeddings/).
    /// Default: <data dir>/models.
    #[arg(long, env = "CRETOK_MODELS_DIR")]
    models: Option<PathBuf>,
}

impl DataArgs {
    pub fn paths(&self) -> Arc<Paths> {
        let data_dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        Arc::new(Paths::new(data_dir, self.models.clone()))
    }
}

/// ComfyUI's `--preview-method`: latent previews while sampling.
#[derive(Args, Clone)]
pub struct PreviewArgs {
    /// Latent previews while sampling: none, latent2rgb or auto (auto and taesd
    /// give latent2rgb). A prompt's `extra_data.preview_method` overrides it.
    #[arg(long, default_value = "none", value_parser = parse_preview_method)]
    pub preview_method: PreviewMethod,
}

fn parse_preview_method(name: &str) -> Result<PreviewMethod, String> {
    PreviewMethod::parse(name)
        .ok_or_else(|| format!("expected one of {}", PreviewMethod::NAMES.join(", ")))
}

/// `$XDG_DATA_HOME/cretok`, or `~/.local/share/cretok`, or `./cretok-data`.
fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .map_or_else(|| PathBuf::from("cretok-data"), |d| d.join("cretok"))
}

/// Every native node type.
pub fn native_registry(paths: &Arc<Paths>) -> Registry {
    let mut registry = Registry::new();
    cretok_nodes::builtin::register_all(&mut registry, Arc::clone(paths));
    registry
}

/// Sandboxed custom nodes: where they are and the limits they run under.
#[derive(Args, Clone)]
pub struct CustomNodeArgs {
    /// Folder of custom nodes (`*.wasm` components). Default: <data dir>/custom_nodes.
    #[arg(long)]
    custom_nodes: Option<PathBuf>,
    /// Memory cap of one custom-node call, in MiB.
    #[arg(long, default_value_t = 16)]
    wasm_memory_mib: usize,
    /// Wall-clock deadline of one custom-node call, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    wasm_deadline_ms: u64,
    /// Largest custom-node file loaded, in MiB; larger ones are refused unread.
    #[arg(long, default_value_t = 16)]
    wasm_max_file_mib: u64,
    /// Guest time one prompt may spend across all its custom-node calls, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    wasm_prompt_budget_ms: u64,
    /// Time compiling one custom-node file may take, in milliseconds; a file
    /// that takes longer is refused until it changes.
    #[arg(long, default_value_t = 20_000)]
    wasm_compile_budget_ms: u64,
    #[command(flatten)]
    limits: PromptLimitArgs,
}

/// The limits every prompt is validated against.
#[derive(Args, Clone)]
pub struct PromptLimitArgs {
    /// Memory budget of one prompt, in GB: validation refuses prompts whose estimated
    /// latents, images and text exceed it (model weights are not counted).
    /// Default: half of physical memory.
    #[arg(long, value_parser = positive_gigabytes)]
    max_memory_gb: Option<f64>,
    /// The most nodes one prompt may have.
    #[arg(long, default_value_t = DEFAULT_MAX_NODES)]
    max_nodes: usize,
}

impl PromptLimitArgs {
    pub fn limits(&self) -> PromptLimits {
        PromptLimits {
            max_nodes: self.max_nodes,
            memory_bytes: self
                .max_memory_gb
                .map_or_else(default_memory_budget, |gb| (gb * 1e9) as u64),
        }
    }
}

fn positive_gigabytes(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(gb) if gb.is_finite() && gb > 0.0 => Ok(gb),
        _ => Err(format!("'{text}' is not a positive number of gigabytes")),
    }
}

/// Builds the node catalog: native nodes plus the custom nodes of a folder.
pub struct NodeSource {
    paths: Arc<Paths>,
    custom_nodes_dir: PathBuf,
    sandbox: SandboxHost,
    limits: PromptLimits,
}

impl NodeSource {
    pub fn new(paths: Arc<Paths>, args: &CustomNodeArgs) -> anyhow::Result<Self> {
        let limits = SandboxLimits {
            deadline: Duration::from_millis(args.wasm_deadline_ms),
            file_bytes: args.wasm_max_file_mib << 20,
            prompt_budget: Duration::from_millis(args.wasm_prompt_budget_ms),
            compile_time: Duration::from_millis(args.wasm_compile_budget_ms),
            ..SandboxLimits::with_memory(args.wasm_memory_mib << 20)
        };
        let cache_dir = paths.data_dir.join("cache/custom_nodes");
        let sandbox = SandboxHost::new(limits, Some(&cache_dir))?;
        let custom_nodes_dir = args
            .custom_nodes
            .clone()
            .unwrap_or_else(|| paths.data_dir.join("custom_nodes"));
        Ok(NodeSource {
            paths,
            custom_nodes_dir,
            sandbox,
            limits: args.limits.limits(),
        })
    }

    pub fn custom_nodes_dir(&self) -> &std::path::Path {
        &self.custom_nodes_dir
    }

    /// The native nodes alone, under the prompt limits: what a server offers
    /// while its custom nodes compile.
    pub fn native(&self) -> Registry {
        let mut registry = native_registry(&self.paths);
        registry.set_limits(self.limits);
        registry
    }

    /// Loads (or reloads) everything, under the prompt limits; problems with custom nodes are logged and
    /// returned, one message per file, and never stop the native nodes.
    pub fn registry(&self) -> (Registry, Vec<String>) {
        let (mut registry, errors) = self
            .sandbox
            .registry_with_custom_nodes(native_registry(&self.paths), &self.custom_nodes_dir);
        registry.set_limits(self.limits);
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        for message in &messages {
            tracing::warn!("custom node not loaded: {message}");
        }
        (registry, messages)
    }
}

pub fn main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Run(args) => run::run(args),
        Command::Convert(args) => convert::convert(args),
        Command::Nodes(args) => nodes::nodes(args),
        Command::Train(args) => train::train(args),
        Command::Dev(args) => dev::dev(args),
        Command::Checkpoint(args) => checkpoint::checkpoint(args),
        Command::Worker(args) => worker::worker(args),
    }
}
