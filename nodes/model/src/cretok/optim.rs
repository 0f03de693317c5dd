//! AdamW on the token vectors and the cosine learning-rate schedule (docs/cretok.md, "Our
//! decisions": betas (0.9, 0.999), eps 1e-8, weight decay 0, cosine decay to 0, no warm-up).
//!
//! Written out on host `f32` vectors (the token is one row per encoder) so that its state can be
//! checkpointed and a resumed run continues bit-for-bit. Same operation order as PyTorch's
//! single-tensor `torch.optim.AdamW` (`torch/optim/adamw.py`, `_single_tensor_adamw`, v2.15):
//! `p *= 1 - lr wd; m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g²;
//! p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// The moments of one parameter vector.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamWState {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

impl AdamWState {
    pub fn zeros(len: usize) -> Self {
        Self {
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }
}

/// One AdamW update of `param` with gradient `grad` at step `t` (1-based) and rate `lr`.
pub fn adamw_step(
    cfg: &AdamWConfig,
    state: &mut AdamWState,
    param: &mut [f32],
    grad: &[f32],
    t: u64,
    lr: f64,
) {
    // Scalars are formed in f64 and rounded once, as PyTorch passes Python floats to its kernels.
    let b2 = cfg.beta2 as f32;
    let (weight, one_minus_b2) = ((1.0 - cfg.beta1) as f32, (1.0 - cfg.beta2) as f32);
    let decay = 1.0 - (lr * cfg.weight_decay) as f32;
    let bias1 = 1.0 - cfg.beta1.powf(t as f64);
    let bias2_sqrt = (1.0 - cfg.beta2.powf(t as f64)).sqrt() as f32;
    let step_size = (lr / bias1) as f32;
    let eps = cfg.eps as f32;
    for (((p, &g), m), v) in param
        .iter_mut()
        .zip(grad)
        .zip(state.m.iter_mut())
        .zip(state.v.iter_mut())
    {
        *p *= decay;
        // torch.lerp with weight < 0.5: start + weight * (end - start).
        *m += weight * (g - *m);
        *v = *v * b2 + one_minus_b2 * g * g;
        let denom = v.sqrt() / bias2_sqrt + eps;
        *p += -step_size * (*m / denom);
    }
}

/// The learning rate of step `t` (0-based) of `total`: `lr (1 + cos(pi t / total)) / 2`.
pub fn cosine_lr(lr: f64, t: u64, total: u64) -> f64 {
    if total == 0 {
        return lr;
    }
    lr * 0.5 * (1.0 + (std::f64::consts::PI * t as f64 / total as f64).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_adamw_steps_match_pytorch() {
        // p = torch.tensor([1.0, -2.0], requires_grad=True)
        // opt = torch.optim.AdamW([p], lr=0.1, weight_decay=0.0)
        // for g in ([0.5, -1.0], [0.25, 3.0]): p.grad = torch.tensor(g); opt.step()
        // after step 1: [0.9000000357627869, -1.899999976158142]
        // after step 2: [0.806782066822052, -1.9494189023971558]
        let cfg = AdamWConfig::default();
        let mut state = AdamWState::zeros(2);
        let mut p = [1.0f32, -2.0];
        adamw_step(&cfg, &mut state, &mut p, &[0.5, -1.0], 1, 0.1);
        // First step: m/(sqrt(v)) = sign(g), so p moves by exactly lr against the gradient.
        assert!(
            (p[0] - 0.9).abs() < 1e-6 && (p[1] + 1.9).abs() < 1e-6,
            "{p:?}"
        );
        adamw_step(&cfg, &mut state, &mut p, &[0.25, 3.0], 2, 0.1);
        assert!((p[0] - 0.806_782_07).abs() < 1e-6, "{p:?}");
        assert!((p[1] + 1.949_418_9).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn cosine_schedule_decays_to_zero_without_warmup() {
        assert_eq!(cosine_lr(0.01, 0, 100), 0.01);
        assert!((cosine_lr(0.01, 50, 100) - 0.005).abs() < 1e-12);
        assert!(cosine_lr(0.01, 99, 100) < 1e-5);
        assert!(cosine_lr(0.01, 100, 100).abs() < 1e-12);
    }
}
