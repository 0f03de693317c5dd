//! The shared part of every sandboxed call: the engine, the limits, the epoch
//! ticker, and a fresh limited `Store` per call.

use std::time::{Duration, Instant};

use cretok_node_api::CancelToken;
use wasmtime::{Engine, Store, UpdateDeadline};

use super::clock::PromptClock;
use super::engine::{new_engine, EpochTicker};
use super::error::HostError;
use super::fault::Fault;
use super::state::{GuestLog, StoreState};
use super::SandboxLimits;

/// What all nodes of one [`SandboxHost`](super::SandboxHost) share. The
/// ticker thread stops when the last node and the host are gone.
pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) limits: SandboxLimits,
    prompts: PromptClock,
    _ticker: EpochTicker,
}

/// Who a call runs for.
#[derive(Clone, Copy)]
pub(crate) enum Caller<'a> {
    /// The loader's `describe`: the schema's copy budget, the call deadline.
    Loader,
    /// A prompt's `run`: interrupted with the prompt, charged to its guest
    /// time, the outputs' copy budget.
    Prompt(&'a CancelToken),
    /// A `run` ahead of a prompt, while it is validated (to learn how long
    /// its list outputs are): the outputs' copy budget, a short deadline.
    Estimate,
}

/// The deadline of a run ahead of a prompt ([`Caller::Estimate`]): short,
/// since validation waits for it; a slower guest is estimated without it.
const ESTIMATE_DEADLINE: Duration = Duration::from_millis(100);

impl Runtime {
    pub(crate) fn new(limits: SandboxLimits) -> Result<Self, HostError> {
        let engine = new_engine(&limits).map_err(|e| HostError::Engine(format!("{e:#}")))?;
        let ticker = EpochTicker::start(engine.clone()).map_err(HostError::Ticker)?;
        Ok(Runtime {
            engine,
            prompts: PromptClock::new(limits.prompt_budget),
            limits,
            _ticker: ticker,
        })
    }

    /// Runs `call` in a fresh store under the limits and returns its result,
    /// with any trap named by its limit, and the guest's log. The store is
    /// dropped afterwards, whatever happened in it.
    pub(crate) fn call<R>(
        &self,
        caller: Caller<'_>,
        call: impl FnOnce(&mut Store<StoreState>) -> wasmtime::Result<R>,
    ) -> (Result<R, Fault>, GuestLog) {
        let (time, out_of_time) = match self.time_for(caller) {
            Ok(time) => time,
            Err(fault) => return (Err(fault), GuestLog::new(&self.limits)),
        };
        let mut store = Store::new(&self.engine, StoreState::new(&self.limits));
        store.limiter(|state| &mut state.limiter);
        let copy_budget = match caller {
            Caller::Loader => self.limits.schema_bytes,
            Caller::Prompt(_) | Caller::Estimate => self.limits.copy_bytes,
        };
        store.set_hostcall_fuel(copy_budget);
        store.data_mut().copy_budget = copy_budget;
        let started = Instant::now();
        watch(&mut store, caller, started + time, out_of_time);
        let result = call(&mut store);
        if let Caller::Prompt(prompt) = caller {
            self.prompts.charge(prompt, started.elapsed());
        }
        let state = store.into_data();
        let result = result.map_err(|e| Fault::classify(&e, &state, &self.limits));
        (result, state.log)
    }

    /// How long a call may run, and the fault when it runs out: the call
    /// deadline, or less when the prompt has less guest time left.
    fn time_for(&self, caller: Caller<'_>) -> Result<(Duration, Fault), Fault> {
        let deadline = (self.limits.deadline, Fault::Deadline(self.limits.deadline));
        let prompt = match caller {
            Caller::Loader => return Ok(deadline),
            Caller::Estimate => {
                let short = ESTIMATE_DEADLINE.min(self.limits.deadline);
                return Ok((short, Fault::Deadline(short)));
            }
            Caller::Prompt(prompt) => prompt,
        };
        let left = self.prompts.remaining(prompt);
        let spent = Fault::PromptBudget(self.prompts.budget());
        if left.is_zero() {
            Err(spent)
        } else if left < deadline.0 {
            Ok((left, spent))
        } else {
            Ok(deadline)
        }
    }
}

/// Checks at every epoch tick whether the call must stop: its prompt was
/// interrupted, or its time is up. The trap carries the [`Fault`].
fn watch(store: &mut Store<StoreState>, caller: Caller<'_>, end: Instant, out_of_time: Fault) {
    let cancel = match caller {
        Caller::Loader | Caller::Estimate => None,
        Caller::Prompt(prompt) => Some(prompt.clone()),
    };
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
            return Err(wasmtime::Error::new(Fault::Interrupted));
        }
        if Instant::now() >= end {
            return Err(wasmtime::Error::new(out_of_time.clone()));
        }
        Ok(UpdateDeadline::Continue(1))
    });
}
