//! The errors of the sandbox: a component that cannot be loaded, a host that
//! cannot start, and a call that a limit or fault stopped.

use std::path::{Path, PathBuf};

use super::fault::Fault;

/// Why a custom node file was not loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("custom nodes folder {}: {source}", dir.display())]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot read it: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a valid WebAssembly component: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{}: imports `{import}`, which the sandbox does not provide \
         (custom nodes get no WASI; they may import only cretok:node/host)",
        path.display()
    )]
    ForbiddenImport { path: PathBuf, import: String },
    #[error("{}: exports no cretok:node/node interface (it exports: {})", path.display(), exports.join(", "))]
    NotANode { path: PathBuf, exports: Vec<String> },
    #[error(
        "{}: built against cretok:node@{version}, which this host does not speak (it speaks {supported})",
        path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        version: String,
        supported: &'static str,
    },
    #[error("{}: cannot be linked: {reason}", path.display())]
    Link { path: PathBuf, reason: String },
    #[error("{}: describe {fault}", path.display())]
    Describe { path: PathBuf, fault: Fault },
    #[error("{}: describe returned an unusable schema: {problem}", path.display())]
    BadSchema { path: PathBuf, problem: String },
    #[error("{}: node id '{id}' is already taken by {taken_by}", path.display())]
    DuplicateId {
        path: PathBuf,
        id: String,
        taken_by: String,
    },
}

impl LoadError {
    /// The file (or folder) the error is about.
    pub fn path(&self) -> &Path {
        match self {
            LoadError::ReadDir { dir, .. } => dir,
            LoadError::Read { path, .. }
            | LoadError::Invalid { path, .. }
            | LoadError::ForbiddenImport { path, .. }
            | LoadError::NotANode { path, .. }
            | LoadError::UnsupportedVersion { path, .. }
            | LoadError::Link { path, .. }
            | LoadError::Describe { path, .. }
            | LoadError::BadSchema { path, .. }
            | LoadError::DuplicateId { path, .. } => path,
        }
    }
}

/// Why a [`SandboxHost`](super::SandboxHost) could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("creating the wasm engine: {0}")]
    Engine(String),
    #[error("starting the epoch ticker thread: {0}")]
    Ticker(#[source] std::io::Error),
    #[error("compiled-component cache {}: {source}", dir.display())]
    Cache {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// A sandboxed call that a limit or fault stopped, naming the node, its file
/// and the limit: "custom node 'Hostile' (hostile-runtime.wasm) hit the
/// deadline of 1000 ms". Reaches the executor inside `NodeError::Failed`;
/// downcast the `anyhow::Error` to read `fault`.
#[derive(Debug, thiserror::Error)]
#[error("custom node '{node}' ({component}) {fault}")]
pub struct RunError {
    /// The node's class name.
    pub node: String,
    /// The component's file name.
    pub component: String,
    pub fault: Fault,
}
