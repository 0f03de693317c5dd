/// Why a node did not produce its outputs.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The prompt was interrupted (cooperative cancellation).
    #[error("interrupted")]
    Interrupted,
    /// An input value is unusable; names the input and the reason.
    #[error("input '{input}': {reason}")]
    InvalidInput { input: String, reason: String },
    /// The node ran and failed.
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

impl NodeError {
    pub fn invalid_input(input: &str, reason: impl Into<String>) -> Self {
        NodeError::InvalidInput {
            input: input.to_owned(),
            reason: reason.into(),
        }
    }

    /// The `exception_type` reported in `execution_error`, in the spirit of ComfyUI's.
    pub fn exception_type(&self) -> &'static str {
        match self {
            NodeError::Interrupted => "InterruptProcessingException",
            NodeError::InvalidInput { .. } => "ValueError",
            NodeError::Failed(_) => "RuntimeError",
        }
    }
}
