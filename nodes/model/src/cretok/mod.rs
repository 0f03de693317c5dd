//! CreTok: redefine a word (default `creative`) as a learned token whose CLIP input embeddings
//! make SD3 blend two concepts zero-shot (Feng et al., "Redefining <Creative> in Dictionary",
//! CVPR 2025, arXiv 2410.24160). Method, decisions and user guide:
//! `docs/cretok.md`.
//!
//! One concept per module: [`dataset`] (pairs files), [`prompts`] (templates and ids),
//! [`encoder`] (`E(P_a)` with the exact speed-ups), [`cache`] (restrictive embeddings),
//! [`loss`], [`optim`] (AdamW, cosine schedule), [`sampler`], [`trainer`], [`report`],
//! [`token_file`], [`inference`] (putting a token into a prompt) and [`plot`] (the loss curves
//! as an image). The `CreTokTrain` node runs the trainer, in workflows and for `cretok train`.

pub mod cache;
pub mod config;
pub mod dataset;
pub mod encoder;
pub mod inference;
pub mod loss;
pub mod optim;
pub mod plot;
pub mod prompts;
pub mod report;
pub mod sampler;
pub mod token_file;
pub mod trainer;

pub use config::{EncoderSet, Target, TrainConfig};
pub use dataset::{Pair, PairSet};
pub use encoder::{encoder_refs, EncoderId, EncoderRef};
pub use plot::LossHistory;
pub use report::{Control, EvalReport, Reporter, Silent, StartReport, StepReport};
pub use token_file::CreTokToken;
pub use trainer::{PathChoice, RunEnd, RunOptions, Trainer};

#[cfg(test)]
mod tests;
