//! Cancelling a prompt: a per-prompt flag, and the thread-local token that
//! model code deep below a node checks between blocks without being handed it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A per-prompt cancellation flag, checked cooperatively by long-running nodes.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Whether both are the same prompt's token (clones of one another).
    pub fn is_same(&self, other: &CancelToken) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

thread_local! {
    /// The cancel token of the node running on this thread (see [`with_cancel_token`]).
    static RUNNING: RefCell<Option<CancelToken>> = const { RefCell::new(None) };
}

/// Runs `f` (a node's run) with `token` as this thread's cancel token, so that
/// model code deep below the node, which has no node context, can stop
/// between blocks with [`running_prompt_cancelled`].
pub fn with_cancel_token<R>(token: &CancelToken, f: impl FnOnce() -> R) -> R {
    /// Restores the previous token even when `f` panics.
    struct Restore(Option<CancelToken>);
    impl Drop for Restore {
        fn drop(&mut self) {
            RUNNING.with(|r| *r.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(RUNNING.with(|r| r.replace(Some(token.clone()))));
    f()
}

/// Whether the prompt running on this thread (see [`with_cancel_token`]) is cancelled.
pub fn running_prompt_cancelled() -> bool {
    RUNNING.with(|r| r.borrow().as_ref().is_some_and(CancelToken::is_cancelled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_code_sees_the_running_threads_token() {
        assert!(!running_prompt_cancelled(), "no node running");
        let token = CancelToken::new();
        with_cancel_token(&token, || {
            assert!(!running_prompt_cancelled());
            token.cancel();
            assert!(running_prompt_cancelled());
        });
        assert!(!running_prompt_cancelled(), "the token is only the node's");
    }
}
