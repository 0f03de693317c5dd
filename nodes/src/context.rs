use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::{NodeError, Paths, PreviewMethod};

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
/// model code deep below the node, which has no [`RunContext`], can stop
/// between blocks with [`check_interrupted`].
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

/// Fails once the prompt running on this thread is cancelled: model loops call
/// it between blocks. The executor reports a node that fails after its prompt
/// was cancelled as interrupted.
pub fn check_interrupted() -> candle_core::Result<()> {
    let cancelled = RUNNING.with(|r| r.borrow().as_ref().is_some_and(CancelToken::is_cancelled));
    if cancelled {
        candle_core::bail!("interrupted");
    }
    Ok(())
}

/// Image encodings of preview frames (the numbers are the websocket's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviewFormat {
    Jpeg = 1,
    Png = 2,
}

/// Where a running node's progress, previews and text go (the websocket, a progress bar, nowhere).
pub trait EventSink: Send + Sync {
    fn progress(&self, node_id: &str, value: u64, max: u64);
    fn preview(&self, node_id: &str, format: PreviewFormat, bytes: Vec<u8>);
    fn text(&self, node_id: &str, text: &str);
}

/// An [`EventSink`] that drops everything.
pub struct NullSink;

impl EventSink for NullSink {
    fn progress(&self, _: &str, _: u64, _: u64) {}
    fn preview(&self, _: &str, _: PreviewFormat, _: Vec<u8>) {}
    fn text(&self, _: &str, _: &str) {}
}

/// What a node sees of the world while it runs.
pub struct RunContext<'a> {
    pub node_id: &'a str,
    pub paths: &'a Paths,
    cancel: &'a CancelToken,
    sink: &'a dyn EventSink,
    /// The API-format prompt being run (embedded in saved images).
    pub prompt: Option<&'a serde_json::Value>,
    /// The client's `extra_data.extra_pnginfo` (the UI workflow, embedded in saved images).
    pub extra_pnginfo: Option<&'a serde_json::Value>,
    /// Whether (and how) samplers send latent previews; none by default.
    pub previews: PreviewMethod,
}

impl<'a> RunContext<'a> {
    pub fn new(
        node_id: &'a str,
        paths: &'a Paths,
        cancel: &'a CancelToken,
        sink: &'a dyn EventSink,
    ) -> Self {
        RunContext {
            node_id,
            paths,
            cancel,
            sink,
            prompt: None,
            extra_pnginfo: None,
            previews: PreviewMethod::None,
        }
    }

    pub fn with_previews(mut self, previews: PreviewMethod) -> Self {
        self.previews = previews;
        self
    }

    pub fn with_prompt(
        mut self,
        prompt: Option<&'a serde_json::Value>,
        extra_pnginfo: Option<&'a serde_json::Value>,
    ) -> Self {
        self.prompt = prompt;
        self.extra_pnginfo = extra_pnginfo;
        self
    }

    /// The prompt's cancellation flag, for nodes that watch it from elsewhere
    /// (a sandboxed call's epoch callback).
    pub fn cancel_token(&self) -> &CancelToken {
        self.cancel
    }

    /// Fails with [`NodeError::Interrupted`] once the prompt is cancelled.
    pub fn check_cancel(&self) -> Result<(), NodeError> {
        if self.cancel.is_cancelled() {
            Err(NodeError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Reports progress (`value` of `max`), then checks for cancellation.
    pub fn progress(&self, value: u64, max: u64) -> Result<(), NodeError> {
        self.sink.progress(self.node_id, value, max);
        self.check_cancel()
    }

    pub fn preview(&self, format: PreviewFormat, bytes: Vec<u8>) {
        self.sink.preview(self.node_id, format, bytes);
    }

    /// A line of text for the user (a training loss, a warning).
    pub fn text(&self, text: &str) {
        self.sink.text(self.node_id, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_code_sees_the_running_nodes_token() {
        assert!(check_interrupted().is_ok(), "no node running");
        let token = CancelToken::new();
        with_cancel_token(&token, || {
            assert!(check_interrupted().is_ok());
            token.cancel();
            let err = check_interrupted().unwrap_err();
            assert!(err.to_string().contains("interrupted"), "{err}");
        });
        assert!(check_interrupted().is_ok(), "the token is only the node's");
    }
}
