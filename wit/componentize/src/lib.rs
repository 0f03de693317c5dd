//! Builds sandboxed guest nodes: compiles Rust guest crates for
//! `wasm32-unknown-unknown` and turns each core module into a component with
//! `wit-component`, using the WIT world that `wit-bindgen` embedded in it.
//!
//! Such a component imports only what the guest used of its world
//! (`cretok:node/host`), so the host needs no WASI.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target guests are compiled for.
pub const GUEST_TARGET: &str = "wasm32-unknown-unknown";

/// Why a guest could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("running {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error(
        "{command} failed ({status}); is the target installed? (rustup target add {GUEST_TARGET})"
    )]
    Cargo { command: String, status: String },
    #[error("reading cargo's messages: {0}")]
    Messages(#[source] std::io::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot make a component of it: {reason}")]
    Componentize { path: PathBuf, reason: String },
}

/// Turns a core module built with `wit-bindgen` into a component.
pub fn componentize(core_module: &[u8], path: &Path) -> Result<Vec<u8>, BuildError> {
    let failed = |e: anyhow::Error| BuildError::Componentize {
        path: path.to_owned(),
        reason: format!("{e:#}"),
    };
    wit_component::ComponentEncoder::default()
        .module(core_module)
        .map_err(failed)?
        .validate(true)
        .encode()
        .map_err(failed)
}

/// Reads `core`, componentizes it and writes the component to `out`.
pub fn componentize_file(core: &Path, out: &Path) -> Result<(), BuildError> {
    let bytes = std::fs::read(core).map_err(|source| BuildError::Io {
        path: core.to_owned(),
        source,
    })?;
    let component = componentize(&bytes, core)?;
    std::fs::write(out, component).map_err(|source| BuildError::Io {
        path: out.to_owned(),
        source,
    })
}

/// Builds the guest crates `packages` (all when empty) of the cargo
/// workspace at `workspace_dir` in release mode (compiling into
/// `target_dir`), componentizes each `cdylib` and writes it to `out_dir` as
/// `<package name>.wasm`. Returns the components' paths.
pub fn build_workspace(
    workspace_dir: &Path,
    target_dir: &Path,
    out_dir: &Path,
    packages: &[String],
) -> Result<Vec<PathBuf>, BuildError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_dir)
        .args(["build", "--release", "--target", GUEST_TARGET])
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--target-dir")
        .arg(target_dir)
        // A test or build script runs us with the outer build's settings.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if packages.is_empty() {
        command.arg("--workspace");
    }
    for package in packages {
        command.args(["--package", package]);
    }
    let described = format!(
        "cargo build --target {GUEST_TARGET} in {}",
        workspace_dir.display()
    );
    let mut child = command.spawn().map_err(|source| BuildError::Spawn {
        command: described.clone(),
        source,
    })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut modules = Vec::new();
    for line in BufReader::new(stdout).lines() {
        if let Some(module) = cdylib_artifact(&line.map_err(BuildError::Messages)?) {
            modules.push(module);
        }
    }
    let status = child.wait().map_err(|source| BuildError::Spawn {
        command: described.clone(),
        source,
    })?;
    if !status.success() {
        return Err(BuildError::Cargo {
            command: described,
            status: status.to_string(),
        });
    }
    std::fs::create_dir_all(out_dir).map_err(|source| BuildError::Io {
        path: out_dir.to_owned(),
        source,
    })?;
    modules
        .into_iter()
        .map(|(name, core)| {
            let out = out_dir.join(format!("{name}.wasm"));
            componentize_file(&core, &out)?;
            Ok(out)
        })
        .collect()
}

/// The package name and `.wasm` file of a `compiler-artifact` message for a
/// `cdylib`, if `line` is one.
fn cdylib_artifact(line: &str) -> Option<(String, PathBuf)> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message["reason"] != "compiler-artifact" {
        return None;
    }
    let target = &message["target"];
    if !target["kind"].as_array()?.iter().any(|k| k == "cdylib") {
        return None;
    }
    let wasm = message["filenames"]
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.ends_with(".wasm"))?;
    let package = package_name(message["package_id"].as_str()?)?;
    Some((package.to_owned(), PathBuf::from(wasm)))
}

/// The name in a package id: `path+file:///a/b#name@0.1.0`, or
/// `path+file:///a/name#0.1.0` when the folder has the package's name.
fn package_name(package_id: &str) -> Option<&str> {
    let (url, fragment) = package_id.rsplit_once('#')?;
    match fragment.split_once('@') {
        Some((name, _version)) => Some(name),
        None => url.rsplit('/').next(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_cdylib_artifacts_only() {
        let cdylib = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/weighted-choice#0.1.0","target":{"kind":["cdylib"],"name":"weighted_choice"},"filenames":["/t/weighted_choice.wasm"]}"#;
        let rlib = r#"{"reason":"compiler-artifact","package_id":"registry+https://x#wit-bindgen@0.60.0","target":{"kind":["lib"],"name":"wit_bindgen"},"filenames":["/t/libwit_bindgen.rlib"]}"#;
        assert_eq!(
            cdylib_artifact(cdylib),
            Some((
                "weighted-choice".to_owned(),
                PathBuf::from("/t/weighted_choice.wasm")
            ))
        );
        assert_eq!(cdylib_artifact(rlib), None);
        assert_eq!(cdylib_artifact("not json"), None);
        assert_eq!(
            package_name("path+file:///w/hostile/runtime#hostile-runtime@0.1.0"),
            Some("hostile-runtime")
        );
    }

    #[test]
    fn refuses_a_module_importing_outside_its_world() {
        // (module (import "env" "f" (func))), with no embedded WIT world.
        let module = b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0\x02\x09\x01\x03env\x01f\0\0";
        let err = componentize(module, Path::new("m.wasm")).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("m.wasm: cannot make a component of it: "),
            "{message}"
        );
        assert!(message.contains("env"), "{message}");
    }
}
