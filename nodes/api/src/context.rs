use cretok_support::cancel::CancelToken;

use crate::{NodeError, Paths, PreviewMethod};

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
