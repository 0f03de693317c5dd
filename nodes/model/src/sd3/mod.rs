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
// The only module allowed unsafe code. Its soundness contract: every public item of `raw` is
// safe to call with any arguments. Each checks, once per call (never per element), what its
// unsafe block relies on — matrix extents inside their slices, output tiles that cannot
// overlap, the CPU features a kernel was compiled for, pages inside a read-only file mapping —
// and panics or falls back otherwise; the one unchecked assumption is that a mapped weights
// file is not modified while mapped (`raw::mmap::mmap`). Every unsafe block in it has a
// `// SAFETY:` comment.
#[allow(unsafe_code)]
mod raw;
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
