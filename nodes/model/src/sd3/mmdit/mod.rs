//! MMDiT, the SD3 / SD3.5 diffusion transformer ("Scaling Rectified Flow
//! Transformers for High-Resolution Image Synthesis", <https://arxiv.org/abs/2403.03206>),
//! with the MMDiT-X dual attention of SD3.5-medium and skip-layer support.
//!
//! Weights use the original (Stability / single-file) key names; runs in the
//! dtype of its weights (f32 on CPU, f16/bf16 on CUDA).

mod blocks;
mod embeddings;
mod model;
mod modulation;

pub use model::{Config, MMDiT};
