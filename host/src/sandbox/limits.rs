//! The limits a sandboxed call runs under, and the `ResourceLimiter` that
//! enforces the memory and table caps inside a store.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// What one call of a sandboxed node may use. `Default` gives the defaults
/// the server uses unless told otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Linear memory per call, in bytes (all memories of the instance together).
    pub memory_bytes: usize,
    /// Wall-clock time per call, instantiation included.
    pub deadline: Duration,
    /// The native stack wasm code may use, in bytes (deep recursion traps).
    /// Engine-wide: fixed when the [`SandboxHost`](super::SandboxHost) is made.
    pub max_wasm_stack: usize,
    /// Elements per table (function tables grown at run time).
    pub table_elements: usize,
    /// Calls that may run at once across all nodes of a host (the size of the
    /// instance pool); one more fails. Engine-wide, like `max_wasm_stack`.
    pub concurrent_calls: u32,
    /// Log lines kept per call; later ones are counted and dropped.
    pub log_lines: usize,
    /// Bytes kept of each log line; only these are copied out of the guest.
    pub log_line_bytes: usize,
    /// Bytes one transfer from a guest may make the host allocate (the outputs
    /// of a call, one log call): wasmtime's host-call copy budget
    /// (`Store::set_hostcall_fuel`). Kept well under `memory_bytes`, since a
    /// guest can make a small buffer count many times (aliased strings).
    pub copy_bytes: usize,
    /// Bytes of the whole schema `describe` returns (its copy budget too).
    pub schema_bytes: usize,
    /// Bytes of one description or tooltip in a schema.
    pub text_bytes: usize,
    /// Inputs, and outputs, a schema may declare (each).
    pub ports: usize,
    /// Size of a component file; larger files are refused unread.
    pub file_bytes: u64,
    /// Functions a component may define (compiling is linear in them).
    pub functions: u32,
    /// Wall-clock time compiling one component may take; a compile that
    /// overruns is abandoned and the file refused until it changes.
    pub compile_time: Duration,
    /// Guest time one prompt may spend across all its custom-node calls.
    pub prompt_budget: Duration,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        let memory_bytes = 16 << 20;
        SandboxLimits {
            memory_bytes,
            deadline: Duration::from_secs(1),
            max_wasm_stack: 512 << 10,
            table_elements: 100_000,
            concurrent_calls: 32,
            log_lines: 100,
            log_line_bytes: 1024,
            copy_bytes: memory_bytes / COPY_SHARE,
            schema_bytes: 64 << 10,
            text_bytes: 1024,
            ports: 64,
            file_bytes: 16 << 20,
            functions: 10_000,
            compile_time: Duration::from_secs(20),
            prompt_budget: Duration::from_secs(10),
        }
    }
}

impl SandboxLimits {
    /// The defaults with a memory cap of `bytes`, and the copy budget tied to
    /// it: a sixteenth (1 MiB of the default 16 MiB).
    pub fn with_memory(bytes: usize) -> Self {
        SandboxLimits {
            memory_bytes: bytes,
            copy_bytes: bytes / COPY_SHARE,
            ..SandboxLimits::default()
        }
    }
}

/// The copy budget is this fraction of the memory cap.
const COPY_SHARE: usize = 16;

/// The memory cap was hit: a guest asked to grow its memory past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("exceeded the memory limit of {} (asked for {})", mib(*limit), mib(*requested))]
pub struct MemoryLimitExceeded {
    pub limit: usize,
    pub requested: usize,
}

/// The table cap was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("exceeded the table limit of {limit} elements (asked for {requested})")]
pub struct TableLimitExceeded {
    pub limit: usize,
    pub requested: usize,
}

/// Bytes as MiB, for messages.
pub(crate) fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Refuses memory and table growth past the limits, and remembers the first
/// refusal so that the resulting trap can be reported by name.
#[derive(Debug)]
pub(crate) struct StoreLimiter {
    memory_bytes: usize,
    table_elements: usize,
    memory_used: usize,
    pub(crate) memory_refused: Option<MemoryLimitExceeded>,
}

impl StoreLimiter {
    pub(crate) fn new(limits: &SandboxLimits) -> Self {
        StoreLimiter {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
            memory_used: 0,
            memory_refused: None,
        }
    }
}

impl ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let requested = self
            .memory_used
            .saturating_add(desired.saturating_sub(current));
        if requested > self.memory_bytes {
            let exceeded = MemoryLimitExceeded {
                limit: self.memory_bytes,
                requested,
            };
            self.memory_refused.get_or_insert(exceeded);
            return Err(wasmtime::Error::new(exceeded));
        }
        self.memory_used = requested;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(wasmtime::Error::new(TableLimitExceeded {
                limit: self.table_elements,
                requested: desired,
            }));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(memory_bytes: usize) -> StoreLimiter {
        StoreLimiter::new(&SandboxLimits {
            memory_bytes,
            ..SandboxLimits::default()
        })
    }

    #[test]
    fn counts_all_memories_against_one_cap() {
        let mut limiter = limiter(100);
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        assert!(limiter.memory_growing(60, 80, None).unwrap());
        let err = limiter.memory_growing(0, 30, None).unwrap_err();
        let exceeded = err.downcast_ref::<MemoryLimitExceeded>().unwrap();
        assert_eq!(exceeded.requested, 110);
        assert_eq!(limiter.memory_refused, Some(*exceeded));
    }

    #[test]
    fn refuses_big_tables() {
        let mut limiter = limiter(100);
        assert!(limiter.table_growing(0, 10, None).unwrap());
        assert!(limiter.table_growing(0, 100_001, None).is_err());
    }
}
