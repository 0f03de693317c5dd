//! SD3 on candle and the CreTok trainer, usable without the node contract:
//! the MMDiT, VAE and text encoders with their checkpoint formats and CPU
//! kernels (`sd3`), and CreTok's token training (`cretok`). The nodes of
//! `cretok-nodes` wrap them.

pub mod bitmap_font;
pub mod cretok;
pub mod resample;
pub mod sd3;

/// Fails once the prompt running on this thread is cancelled
/// ([`cretok_support::cancel::with_cancel_token`]): model loops call it between blocks. The
/// executor reports a node that fails after its prompt was cancelled as interrupted.
pub fn check_interrupted() -> candle_core::Result<()> {
    if cretok_support::cancel::running_prompt_cancelled() {
        candle_core::bail!("interrupted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use cretok_support::cancel::{with_cancel_token, CancelToken};

    #[test]
    fn model_loops_stop_with_an_interrupted_error_once_the_running_prompt_is_cancelled() {
        let token = CancelToken::new();
        with_cancel_token(&token, || {
            assert!(super::check_interrupted().is_ok());
            token.cancel();
            let err = super::check_interrupted().unwrap_err();
            assert!(err.to_string().contains("interrupted"), "{err}");
        });
    }
}
