//! The shared part of every sandboxed call: the engine, the limits, the epoch
//! ticker, and a fresh limited `Store` per call.

use wasmtime::{Engine, Store};

use super::engine::{deadline_ticks, new_engine, EpochTicker};
use super::error::HostError;
use super::fault::Fault;
use super::state::{GuestLog, StoreState};
use super::SandboxLimits;

/// What all nodes of one [`SandboxHost`](super::SandboxHost) share. The
/// ticker thread stops when the last node and the host are gone.
pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) limits: SandboxLimits,
    _ticker: EpochTicker,
}

impl Runtime {
    pub(crate) fn new(limits: SandboxLimits) -> Result<Self, HostError> {
        let engine = new_engine(&limits).map_err(|e| HostError::Engine(format!("{e:#}")))?;
        let ticker = EpochTicker::start(engine.clone()).map_err(HostError::Ticker)?;
        Ok(Runtime {
            engine,
            limits,
            _ticker: ticker,
        })
    }

    /// Runs `call` in a fresh store under the limits and returns its result,
    /// with any trap named by its limit, and the guest's log. The store is
    /// dropped afterwards, whatever happened in it.
    pub(crate) fn call<R>(
        &self,
        call: impl FnOnce(&mut Store<StoreState>) -> wasmtime::Result<R>,
    ) -> (Result<R, Fault>, GuestLog) {
        let mut store = Store::new(&self.engine, StoreState::new(&self.limits));
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(deadline_ticks(self.limits.deadline));
        let result = call(&mut store);
        let state = store.into_data();
        let result = result.map_err(|e| Fault::classify(&e, &state, &self.limits));
        (result, state.log)
    }
}
