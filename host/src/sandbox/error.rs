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
    #[error(
        "{}: is {size} bytes, more than the {max} bytes a component may have (--wasm-max-file-mib)",
        path.display()
    )]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error(
        "{}: defines {functions} functions, more than the {max} a component may have",
        path.display()
    )]
    TooManyFunctions {
        path: PathBuf,
        functions: u32,
        max: u32,
    },
    #[error(
        "{}: compiling took longer than {} ms (--wasm-compile-budget-ms); abandoned",
        path.display(), budget.as_millis()
    )]
    CompileBudget {
        path: PathBuf,
        budget: std::time::Duration,
    },
    #[error("{reason} (unchanged since; not loaded again until the file changes)")]
    FailedBefore { path: PathBuf, reason: String },
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
    #[error(
        "{}: node id '{id}' is taken by the built-in node '{native}' (ids are compared without case)",
        path.display()
    )]
    NativeId {
        path: PathBuf,
        id: String,
        native: String,
    },
    #[error(
        "{}: node id '{id}' is also declared by {}, so none of them loads (ids are compared without case)",
        path.display(),
        others.join(", ")
    )]
    SharedId {
        path: PathBuf,
        id: String,
        others: Vec<String>,
    },
}

impl LoadError {
    /// The file (or folder) the error is about.
    pub fn path(&self) -> &Path {
        match self {
            LoadError::ReadDir { dir, .. } => dir,
            LoadError::Read { path, .. }
            | LoadError::TooLarge { path, .. }
            | LoadError::TooManyFunctions { path, .. }
            | LoadError::CompileBudget { path, .. }
            | LoadError::FailedBefore { path, .. }
            | LoadError::Invalid { path, .. }
            | LoadError::ForbiddenImport { path, .. }
            | LoadError::NotANode { path, .. }
            | LoadError::UnsupportedVersion { path, .. }
            | LoadError::Link { path, .. }
            | LoadError::Describe { path, .. }
            | LoadError::BadSchema { path, .. }
            | LoadError::NativeId { path, .. }
            | LoadError::SharedId { path, .. } => path,
        }
    }

    /// Whether the same bytes would fail the same way again (not a busy
    /// pool, a slow machine, an unreadable file or another file's id).
    pub(crate) fn is_lasting(&self) -> bool {
        match self {
            LoadError::Describe { fault, .. } => {
                !matches!(fault, Fault::Busy(_) | Fault::Deadline(_))
            }
            LoadError::TooManyFunctions { .. }
            | LoadError::CompileBudget { .. }
            | LoadError::Invalid { .. }
            | LoadError::ForbiddenImport { .. }
            | LoadError::NotANode { .. }
            | LoadError::UnsupportedVersion { .. }
            | LoadError::Link { .. }
            | LoadError::BadSchema { .. } => true,
            LoadError::ReadDir { .. }
            | LoadError::Read { .. }
            | LoadError::TooLarge { .. }
            | LoadError::FailedBefore { .. }
            | LoadError::NativeId { .. }
            | LoadError::SharedId { .. } => false,
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
