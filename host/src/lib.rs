//! CreTok Studio's host: graph validation, the executor, the ComfyUI-compatible
//! server, the queue backends and the sandbox of WASM nodes. It knows nodes only
//! through the contract of `cretok-node-api`; the `cretok` command line
//! (`host/cli/`) registers the native nodes.

pub mod allocator;
pub mod app;
pub mod backend;
pub mod cache;
pub mod catalog;
pub mod executor;
pub mod graph;
pub mod history;
pub mod mapping;
pub mod prompt_worker;
pub mod protocol;
pub mod queue;
pub mod redis_queue;
pub mod sandbox;
pub mod server;
pub mod validation;
pub mod workflow;
