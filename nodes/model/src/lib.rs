//! SD3 on candle and the CreTok trainer, usable without the node contract:
//! the MMDiT, VAE and text encoders with their checkpoint formats and CPU
//! kernels (`sd3`), and CreTok's token training (`cretok`). The nodes of
//! `cretok-nodes` wrap them.

pub mod bitmap_font;
pub mod cretok;
pub mod files;
pub mod interrupt;
pub mod memory;
pub mod resample;
pub mod sd3;

pub use interrupt::check_interrupted;
