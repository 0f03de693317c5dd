//! A differentiable CLIP text encoder for SD3 and the CreTok trainer.
//!
//! Radford et al., "Learning Transferable Visual Models From Natural Language Supervision"
//! (arXiv 2103.00020); reference implementation transformers `models/clip/modeling_clip.py`
//! (v5.23). Unlike `candle_transformers::models::clip`, this encoder takes input embeddings,
//! returns penultimate / final / pooled outputs, keeps gradients w.r.t. its inputs (see
//! [`ops`]), can reuse a prefix's keys and values, and keeps Linear weights in the half
//! precision that holds them exactly ([`half_weights`]).

pub mod config;
pub mod grad;
pub mod half_weights;
pub mod layers;
pub mod model;
pub mod ops;

pub use config::{Activation, ClipConfig};
pub use grad::InputGrads;
pub use model::{ClipOutput, ClipPrefix, ClipTextModel};
