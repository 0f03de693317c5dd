//! The one wasmtime `Engine` of a [`SandboxHost`](super::SandboxHost) and the
//! ticker thread that advances its epoch: at every tick a running call checks
//! its deadline and whether its prompt was interrupted.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::SandboxLimits;

/// How often the epoch advances: the granularity of deadlines and interrupts.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Core instances a component made by `wit-component` may need (the guest
/// module plus its adapter shims), and tables per component.
const CORE_INSTANCES_PER_CALL: u32 = 8;
const TABLES_PER_CALL: u32 = 4;

/// An engine for components with epoch interruption and the stack cap on.
/// Instances come from a pool sized for `limits.concurrent_calls`: reusing
/// pre-reserved slots makes a fresh instance per call about a third cheaper
/// than mapping new memory each time.
pub(crate) fn new_engine(limits: &SandboxLimits) -> wasmtime::Result<Engine> {
    let calls = limits.concurrent_calls;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(calls)
        .total_core_instances(calls * CORE_INSTANCES_PER_CALL)
        .total_memories(calls)
        .total_tables(calls * TABLES_PER_CALL)
        .max_memory_size(limits.memory_bytes);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(limits.max_wasm_stack)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// A thread that calls `engine.increment_epoch()` every [`EPOCH_TICK`] until
/// dropped.
pub(crate) struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        // Closing the channel wakes the thread, which then ends.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
