//! The native nodes of CreTok Studio (`builtin`), on the node contract of
//! `cretok-node-api` (re-exported here, so a node module names `crate::Node`,
//! `crate::Value`) and the models of `cretok-model` (re-exported as `sd3`,
//! `cretok`, `resample`).

pub mod builtin;
pub mod canny;
#[cfg(any(test, feature = "test-fixtures"))]
pub mod test_prompts;

pub use cretok_model::{check_interrupted, cretok, resample, sd3};
pub use cretok_node_api::*;
