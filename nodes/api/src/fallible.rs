//! Allocation of the big buffers a prompt's numbers size (latents, canvases,
//! joined text) that fails as the node's error instead of aborting the process.

use crate::NodeError;

fn allocation_error(bytes: usize, what: &str) -> NodeError {
    NodeError::Failed(anyhow::anyhow!(
        "cannot allocate {bytes} bytes for {what}: out of memory"
    ))
}

/// `len` copies of `value`, or the node's error when the memory is not there.
pub fn filled_vec<T: Clone>(len: usize, value: T, what: &str) -> Result<Vec<T>, NodeError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| allocation_error(len.saturating_mul(size_of::<T>()), what))?;
    v.resize(len, value);
    Ok(v)
}

/// `parts` joined by `separator`, or the node's error when the memory is not there.
pub fn joined(parts: &[&str], separator: &str) -> Result<String, NodeError> {
    let len = parts
        .iter()
        .map(|p| p.len())
        .chain(std::iter::repeat_n(
            separator.len(),
            parts.len().saturating_sub(1),
        ))
        .fold(0usize, usize::saturating_add);
    let mut out = String::new();
    out.try_reserve_exact(len)
        .map_err(|_| allocation_error(len, "the joined text"))?;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        out.push_str(part);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_like_slice_join() {
        assert_eq!(joined(&["a", "bc", ""], ", ").unwrap(), "a, bc, ");
        assert_eq!(joined(&[], "-").unwrap(), "");
    }

    #[test]
    fn an_impossible_allocation_is_an_error_not_an_abort() {
        let err = filled_vec(usize::MAX / 4, 0f32, "a latent").unwrap_err();
        assert!(err.to_string().contains("a latent"), "{err}");
        assert_eq!(filled_vec(3, 1u8, "x").unwrap(), [1, 1, 1]);
    }
}
