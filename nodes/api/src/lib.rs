//! The node contract of CreTok Studio, without any model code.
//!
//! A node declares a [`NodeSchema`] (typed inputs and outputs, shown by the
//! editor through `/object_info`) and runs with a [`RunContext`] that reports
//! progress, previews and text, and carries the prompt's cancel token. The
//! [`Registry`] maps class names to nodes; the host validates graphs against
//! the schemas and executes them. The native nodes (`cretok-nodes`) and the
//! sandboxed ones (the host's `sandbox`) implement it alike.

mod context;
mod error;
mod estimate;
mod fallible;
pub mod fsutil;
mod inputs;
mod node;
mod paths;
mod preview_method;
mod registry;
mod schema;
mod value;

pub use context::{EventSink, NullSink, PreviewFormat, RunContext};
pub use cretok_support::cancel::{with_cancel_token, CancelToken};
pub use error::NodeError;
pub use estimate::{
    default_memory_budget, f32_bytes, Estimate, EstimateInputs, PromptLimits, ValueEstimate,
    DEFAULT_MAX_NODES, DEFAULT_MEMORY_SHARE, MAX_KNOWN_TEXT, MAX_LIST_ITEMS,
};
pub use fallible::{filled_vec, joined};
pub use inputs::Inputs;
pub use node::{Node, NodeOutput};
pub use paths::Paths;
pub use preview_method::PreviewMethod;
pub use registry::Registry;
pub use schema::{data_type, InputKind, InputSpec, NodeSchema, OutputSpec};
pub use value::{Handle, Value};
