//! What the model library, the node contract and the host share without depending on one
//! another: cancelling a running prompt (`cancel`), whole-or-nothing file writes (`files`),
//! and the memory the machine and the process's cgroup leave (`memory`).

pub mod cancel;
pub mod files;
pub mod memory;
