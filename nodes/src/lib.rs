//! The node contract of CreTok Studio and its native nodes.
//!
//! A node declares a [`NodeSchema`] (typed inputs and outputs, shown by the
//! editor through `/object_info`) and runs with a [`RunContext`] that reports
//! progress, previews and text, and carries the prompt's cancel token. The
//! [`Registry`] maps class names to nodes; the host validates graphs against
//! the schemas and executes them.

pub mod builtin;
pub mod canny;
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
#[cfg(any(test, feature = "test-fixtures"))]
pub mod test_prompts;
mod value;

pub use context::{EventSink, NullSink, PreviewFormat, RunContext};
pub use cretok_model::interrupt::{check_interrupted, with_cancel_token, CancelToken};
pub use cretok_model::{cretok, resample, sd3};
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
