//! CreTok Studio's host: graph validation, the executor, the ComfyUI-compatible
//! server and the CLI.

pub mod sandbox;
