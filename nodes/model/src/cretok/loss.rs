//! The CreTok loss: `L = 1 - min(cos(E(P_r), E(P_a)), θ)` per pair and order, averaged
//! (docs/cretok.md, "Training"; Feng et al., arXiv 2410.24160, eq. for L_CreTok).
//!
//! The clip at θ is `torch.clamp(cos, max=θ)`: the gradient flows where `cos <= θ` and is zero
//! above (PyTorch's `clamp_backward` keeps the boundary).

use candle_core::{Result, Tensor, D};

/// Rows of `xs` `[k, d]` scaled to unit length (restrictive embeddings, normalised once).
pub fn unit_rows(xs: &Tensor) -> Result<Tensor> {
    xs.broadcast_div(&xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)
}

/// The loss and the cosines of adaptive embeddings `adaptive` (`[1, d]`, shared by every row,
/// or `[k, d]`, one per row) against unit restrictive rows `restrictive` `[k, d]`.
pub fn clipped_cosine_loss(
    adaptive: &Tensor,
    restrictive: &Tensor,
    theta: f64,
) -> Result<(Tensor, Vec<f32>)> {
    let cos = unit_rows(adaptive)?
        .broadcast_mul(restrictive)?
        .sum(D::Minus1)?;
    let below = cos.detach().le(theta)?.to_dtype(cos.dtype())?;
    // below * cos + (1 - below) * θ
    let clipped = ((&cos * &below)? + ((below.affine(-theta, theta))?))?;
    let loss = clipped.mean_all()?.affine(-1.0, 1.0)?;
    let cosines = cos.detach().to_dtype(candle_core::DType::F32)?.to_vec1()?;
    Ok((loss, cosines))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    #[test]
    fn loss_is_clipped_at_theta_with_zero_gradient_above() {
        let dev = Device::Cpu;
        let r = unit_rows(&Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &dev).unwrap()).unwrap();
        // cos with row 0 = 0.8 (> θ), with row 1 = 0.6 (> θ).
        let a = Var::new(&[[0.8f32, 0.6]], &dev).unwrap();
        let (loss, cos) = clipped_cosine_loss(a.as_tensor(), &r, 0.5).unwrap();
        assert!((cos[0] - 0.8).abs() < 1e-6 && (cos[1] - 0.6).abs() < 1e-6);
        assert!((loss.to_scalar::<f32>().unwrap() - 0.5).abs() < 1e-6);
        let grads = loss.backward().unwrap();
        let g = grads.get(a.as_tensor()).unwrap().abs().unwrap();
        assert_eq!(g.sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);

        // With θ = 0.7 row 1 (0.6) is below: loss 1 - (0.7 + 0.6) / 2, non-zero gradient.
        let (loss, _) = clipped_cosine_loss(a.as_tensor(), &r, 0.7).unwrap();
        assert!((loss.to_scalar::<f32>().unwrap() - 0.35).abs() < 1e-6);
        let grads = loss.backward().unwrap();
        let g = grads.get(a.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        // d/da of -(a_y/|a|)/2 at (0.8, 0.6): -(1/2)(e_y - 0.6 a_hat) = (0.24, -0.32).
        assert!(
            (g[0][0] - 0.24).abs() < 1e-5 && (g[0][1] + 0.32).abs() < 1e-5,
            "{g:?}"
        );
    }
}
