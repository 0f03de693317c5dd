//! Stable Diffusion 3 on candle: checkpoints, tokenizers, text encoders, MMDiT,
//! VAE and the flow-matching sampler. Conventions follow diffusers'
//! `StableDiffusion3Pipeline` (see docs/parity.md).

pub mod attention;
pub mod checkpoint;
pub mod clip;
pub mod conditioning;
mod cpu_storage;
pub mod latent_preview;
pub mod linear;
pub mod mmdit;
pub mod precision;
pub mod rng;
pub mod sampling;
pub mod t5;
#[cfg(test)]
mod test_tensors;
pub mod text_encoders;
#[cfg(any(test, feature = "test-fixtures"))]
pub mod text_tiny;
#[cfg(any(test, feature = "test-fixtures"))]
pub mod tiny;
pub mod tokenizer;
pub mod types;
pub mod vae;
pub mod vector_math;
