//! Sandboxed custom nodes: WebAssembly components that implement the
//! `cretok:node` WIT world (`wit/since_v0.1.0/`), run under wasmtime with no
//! capability but a log.
//!
//! [`SandboxHost::load_dir`] turns each component of a custom-nodes folder
//! into an `Arc<dyn Node>` whose schema comes from the guest's `describe`
//! (category `templates/…`, module `custom_nodes.<file stem>`, `extra_inputs`
//! as declared). Each run checks
//! the inputs against that schema, instantiates the component in a fresh
//! `Store` with a memory cap, a wall-clock deadline and the prompt's
//! interrupt (checked at every epoch tick), a stack cap and a copy budget for
//! what the guest hands back ([`SandboxLimits`]), calls `run`, and checks the
//! outputs. A call stopped by a limit fails with a [`RunError`] naming the
//! node and the limit; the next call starts from scratch. `docs/sandbox.md`
//! lists every limit. Compiled components are cached
//! on disk by the wasm's SHA-256 and the engine's compatibility hash.

mod cache;
mod clock;
mod engine;
mod error;
mod fault;
mod host;
mod limits;
mod node;
mod ports;
mod runtime;
mod schema;
mod state;
mod text;
mod wit;

pub use error::{HostError, LoadError, RunError};
pub use fault::Fault;
pub use host::SandboxHost;
pub use limits::{MemoryLimitExceeded, SandboxLimits, TableLimitExceeded};
pub use node::SandboxNode;
pub use schema::CATEGORY_ROOT;
