//! `cretok-componentize`: builds guest nodes into components.
//!
//! `cretok-componentize workspace [DIR] [-p CRATE]... --out OUT` builds the
//! guest crates of a cargo workspace (default: `wit/examples`, all crates); `cretok-componentize module
//! CORE.wasm --out NODE.wasm` componentizes one module you built yourself.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Builds sandboxed CreTok nodes into WebAssembly components")]
struct Cli {
    #[command(subcommand)]
    command: Step,
}

#[derive(Subcommand)]
enum Step {
    /// Builds every guest crate of a cargo workspace and componentizes them.
    Workspace {
        /// The guest workspace.
        #[arg(default_value = "wit/examples")]
        dir: PathBuf,
        /// Where cargo compiles the guests (default: $CARGO_TARGET_DIR/wasm-guests or target/wasm-guests).
        #[arg(long)]
        target_dir: Option<PathBuf>,
        /// Where the components go (e.g. the server's custom-nodes folder).
        #[arg(long)]
        out: PathBuf,
        /// Build only this guest crate (repeatable; default: all of them).
        #[arg(long = "package", short = 'p')]
        packages: Vec<String>,
    },
    /// Componentizes one core module built with wit-bindgen.
    Module {
        /// The core module (`target/wasm32-unknown-unknown/release/<crate>.wasm`).
        core: PathBuf,
        /// The component to write.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Step::Workspace {
            dir,
            target_dir,
            out,
            packages,
        } => {
            let target_dir = target_dir.unwrap_or_else(|| {
                std::env::var_os("CARGO_TARGET_DIR")
                    .map_or_else(|| PathBuf::from("target"), PathBuf::from)
                    .join("wasm-guests")
            });
            // Cargo runs in the guest workspace: a relative folder means ours.
            let target_dir = match std::path::absolute(&target_dir) {
                Ok(absolute) => absolute,
                Err(e) => {
                    eprintln!("error: {}: {e}", target_dir.display());
                    return ExitCode::FAILURE;
                }
            };
            cretok_componentize::build_workspace(&dir, &target_dir, &out, &packages).map(|built| {
                for component in built {
                    println!("{}", component.display());
                }
            })
        }
        Step::Module { core, out } => cretok_componentize::componentize_file(&core, &out)
            .map(|()| println!("{}", out.display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
