//! Why a call into a guest ended without a result, named by the limit or
//! fault that stopped it.

use std::time::Duration;

use wasmtime::{PoolConcurrencyLimitError, Trap};

use super::limits::{MemoryLimitExceeded, SandboxLimits, TableLimitExceeded};
use super::state::StoreState;

/// What stopped a guest call. Displays as a phrase that follows the node's
/// name: "custom node 'X' (x.wasm) hit the deadline of 1000 ms".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Fault {
    /// The wall-clock deadline passed (epoch interruption).
    #[error("hit the deadline of {} ms", .0.as_millis())]
    Deadline(Duration),
    /// The prompt used up its guest time across all its custom-node calls.
    #[error("used up the prompt's guest time of {} ms (--wasm-prompt-budget-ms)", .0.as_millis())]
    PromptBudget(Duration),
    /// The prompt was interrupted (`/interrupt`) while the call ran.
    #[error("was interrupted")]
    Interrupted,
    /// The guest handed the host more bytes in one transfer than allowed.
    #[error("handed the host more than its copy budget of {0} bytes in one transfer")]
    CopyBudget(usize),
    /// The memory cap refused a `memory.grow`.
    #[error("{0}")]
    Memory(MemoryLimitExceeded),
    /// The table cap refused a `table.grow`.
    #[error("{0}")]
    Table(TableLimitExceeded),
    /// The wasm stack overflowed (`max_wasm_stack`).
    #[error("overflowed its stack limit of {} KiB (max_wasm_stack)", .0 / 1024)]
    Stack(usize),
    /// Every slot of the instance pool was taken by other running calls.
    #[error("found all {0} sandbox slots busy (SandboxLimits::concurrent_calls)")]
    Busy(u32),
    /// The guest panicked; the message is what its panic hook logged.
    #[error("panicked: {0}")]
    Panic(String),
    /// Any other trap or host-side failure, with the guest's last error log.
    #[error("trapped: {0}")]
    Trap(String),
    /// The guest's `run` returned `failed(message)`.
    #[error("failed: {0}")]
    Failed(String),
    /// `run` returned outputs that do not match the schema.
    #[error("returned outputs that break its schema: {0}")]
    BadOutputs(String),
}

impl Fault {
    /// Names the limit or trap behind a wasmtime error raised in a store.
    pub(crate) fn classify(
        error: &wasmtime::Error,
        state: &StoreState,
        limits: &SandboxLimits,
    ) -> Fault {
        if let Some(stopped) = error.downcast_ref::<Fault>() {
            return stopped.clone();
        }
        if is_copy_budget(error) {
            return Fault::CopyBudget(state.copy_budget);
        }
        if let Some(exceeded) = state.limiter.memory_refused {
            return Fault::Memory(exceeded);
        }
        if let Some(exceeded) = error.downcast_ref::<TableLimitExceeded>() {
            return Fault::Table(*exceeded);
        }
        if error.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
            return Fault::Busy(limits.concurrent_calls);
        }
        let last_error = state.log.last_error();
        match (error.downcast_ref::<Trap>(), last_error) {
            (Some(Trap::StackOverflow), _) => Fault::Stack(limits.max_wasm_stack),
            (Some(Trap::UnreachableCodeReached), Some(message)) => Fault::Panic(one_line(
                message.strip_prefix("panicked at ").unwrap_or(message),
            )),
            (_, Some(message)) => Fault::Trap(format!(
                "{error:#}; its last error log: {}",
                one_line(message)
            )),
            (_, None) => Fault::Trap(format!("{error:#}")),
        }
    }
}

/// Whether wasmtime refused a transfer for its host-call copy budget
/// (`Store::set_hostcall_fuel`); its error type is private, so known by its
/// message, which the hostile-guest tests pin.
fn is_copy_budget(error: &wasmtime::Error) -> bool {
    error.chain().any(|e| {
        e.to_string()
            .contains("fuel allocated for hostcalls has been exhausted")
    })
}

/// Joins a multi-line message (a panic's "location:\nmessage") into one line.
fn one_line(message: &str) -> String {
    message.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::wit::LogLevel;

    #[test]
    fn a_trap_after_an_error_log_is_a_panic_with_its_message() {
        let limits = SandboxLimits::default();
        let mut state = StoreState::new(&limits);
        state
            .log
            .push(LogLevel::Error, "panicked at src/lib.rs:3:5:\nno luck");
        let fault = Fault::classify(
            &wasmtime::Error::new(Trap::UnreachableCodeReached),
            &state,
            &limits,
        );
        assert_eq!(fault, Fault::Panic("src/lib.rs:3:5: no luck".into()));
        let stopped = wasmtime::Error::new(Fault::Interrupted).context("wasm backtrace");
        let fault = Fault::classify(&stopped, &state, &limits);
        assert_eq!(fault.to_string(), "was interrupted");
    }
}
