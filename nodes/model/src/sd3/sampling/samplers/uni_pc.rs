//! ComfyUI's `uni_pc` and `uni_pc_bh2` (`comfy/extra_samplers/uni_pc.py`
//! `sample_unipc`): UniPC's multistep predictor–corrector in data prediction,
//! run on the sigmas as if they were a variance-exploding model's
//! (`SigmaConvert`), as ComfyUI does for every model, SD3's flow included.
//!
//! The schedule scalars are computed in f32 in the order torch computes them:
//! `SigmaConvert` loses most digits of σ_t near σ = 0.001 in f32, and the
//! latents depend on those rounded values.

use candle_core::{Result, Tensor};

use super::Sampling;

/// ComfyUI replaces a last sigma of 0 by this (in its own sigmas tensor).
pub(super) const LAST_SIGMA: f32 = 0.001;

/// UniPC's `B(h)`: `bh1` is `h`, `bh2` is `e^h − 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Variant {
    Bh1,
    Bh2,
}

/// `SigmaConvert`, in f32: the VP view of a VE sigma.
fn log_mean_coeff(sigma: f32) -> f32 {
    0.5 * (1.0 / (sigma * sigma + 1.0)).ln()
}

fn marginal_alpha(sigma: f32) -> f32 {
    log_mean_coeff(sigma).exp()
}

fn marginal_std(sigma: f32) -> f32 {
    (1.0 - (2.0 * log_mean_coeff(sigma)).exp()).sqrt()
}

fn marginal_lambda(sigma: f32) -> f32 {
    let lmc = log_mean_coeff(sigma);
    lmc - 0.5 * (1.0 - (2.0 * lmc).exp()).ln()
}

/// `a·x + b·y` in f32 coefficients.
fn lin(a: f32, x: &Tensor, b: f32, y: &Tensor) -> Result<Tensor> {
    x.affine(f64::from(a), 0.0)? + y.affine(f64::from(b), 0.0)?
}

/// `Σ_k coeffs[k]·tensors[k]` (`torch.einsum('k,bkchw->bchw')`).
fn weighted_sum(coeffs: &[f32], tensors: &[Tensor]) -> Result<Option<Tensor>> {
    let mut sum: Option<Tensor> = None;
    for (c, t) in coeffs.iter().zip(tensors) {
        let term = t.affine(f64::from(*c), 0.0)?;
        sum = Some(match sum {
            None => term,
            Some(s) => (s + term)?,
        });
    }
    Ok(sum)
}

/// Solves the small system `a·x = b` (n ≤ 3) by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f32>>, mut b: Vec<f32>) -> Vec<f32> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col].clone();
        for row in col + 1..n {
            let factor = a[row][col] / pivot_row[col];
            for (v, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *v -= factor * p;
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = vec![0.0f32; n];
    for row in (0..n).rev() {
        let tail: f32 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    x
}

/// One UniPC update: towards sigma `t` with `order` past models, on sampler step `index`.
struct Update {
    t: f32,
    order: usize,
    use_corrector: bool,
    index: usize,
}

/// The models and sigmas of the last steps, oldest first.
struct History {
    models: Vec<Tensor>,
    sigmas: Vec<f32>,
}

impl Sampling<'_, '_> {
    /// `data_prediction_fn` on `predict_eps_sigma`: the model's denoised
    /// latent, seen through the VP scaling `x·√(σ² + 1)`.
    fn uni_pc_data(&mut self, x: &Tensor, sigma: f32, step: usize) -> Result<Tensor> {
        let input = x.affine(f64::from((sigma * sigma + 1.0).sqrt()), 0.0)?;
        let denoised = self.model.denoise(&input, sigma, step)?;
        let eps = (&input - denoised)?.affine(1.0 / f64::from(sigma), 0.0)?;
        let std = marginal_std(sigma);
        (x - eps.affine(f64::from(std), 0.0)?)?.affine(1.0 / f64::from(marginal_alpha(sigma)), 0.0)
    }

    /// `multistep_uni_pc_bh_update` towards `t` with `order` past models;
    /// returns the new latent and, when the corrector ran, the model there.
    fn uni_pc_update(
        &mut self,
        x: &Tensor,
        past: &History,
        update: Update,
        variant: Variant,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let Update {
            t,
            order,
            use_corrector,
            index: step,
        } = update;
        let n = past.sigmas.len();
        let (t_prev_0, model_prev_0) = (past.sigmas[n - 1], &past.models[n - 1]);
        let lambda_prev_0 = marginal_lambda(t_prev_0);
        let h = marginal_lambda(t) - lambda_prev_0;
        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for i in 1..order {
            let rk = (marginal_lambda(past.sigmas[n - 1 - i]) - lambda_prev_0) / h;
            rks.push(rk);
            d1s.push((&past.models[n - 1 - i] - model_prev_0)?.affine(1.0 / f64::from(rk), 0.0)?);
        }
        rks.push(1.0);

        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = match variant {
            Variant::Bh1 => hh,
            Variant::Bh2 => h_phi_1,
        };
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial: u64 = 1;
        let mut r = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            r.push(
                rks.iter()
                    .map(|rk| rk.powi(i as i32 - 1))
                    .collect::<Vec<f32>>(),
            );
            b.push(h_phi_k * factorial as f32 / b_h);
            factorial *= i as u64 + 1;
            h_phi_k = h_phi_k / hh - (1.0 / factorial as f64) as f32;
        }

        let (alpha_t, sigma_t) = (marginal_alpha(t), marginal_std(t));
        let x_t_ = lin(
            sigma_t / marginal_std(t_prev_0),
            x,
            -(alpha_t * h_phi_1),
            model_prev_0,
        )?;
        let rhos_p = match order {
            2 => vec![0.5],
            _ => solve(
                r[..order - 1]
                    .iter()
                    .map(|row| row[..order - 1].to_vec())
                    .collect(),
                b[..order - 1].to_vec(),
            ),
        };
        let x_t = match weighted_sum(&rhos_p, &d1s)? {
            Some(pred_res) => (&x_t_ - pred_res.affine(f64::from(alpha_t * b_h), 0.0)?)?,
            None => x_t_.clone(),
        };
        if !use_corrector {
            return Ok((x_t, None));
        }
        let rhos_c = match order {
            1 => vec![0.5],
            _ => solve(r, b),
        };
        let model_t = self.uni_pc_data(&x_t, t, step)?;
        let d1_t = (&model_t - model_prev_0)?;
        let last = rhos_c[rhos_c.len() - 1];
        let correction = match weighted_sum(&rhos_c[..rhos_c.len() - 1], &d1s)? {
            Some(corr_res) => (corr_res + d1_t.affine(f64::from(last), 0.0)?)?,
            None => d1_t.affine(f64::from(last), 0.0)?,
        };
        let x_t = (x_t_ - correction.affine(f64::from(alpha_t * b_h), 0.0)?)?;
        Ok((x_t, Some(model_t)))
    }

    /// `sample_unipc`: multistep UniPC of order up to 3, lower orders at the
    /// start and the end, no corrector on the final step.
    pub(super) fn uni_pc(&mut self, x: Tensor, variant: Variant) -> Result<Option<Tensor>> {
        let mut t = self.f32_sigmas.clone();
        if let Some(last) = t.last_mut().filter(|last| **last == 0.0) {
            *last = LAST_SIGMA;
        }
        let steps = t.len() - 1;
        let order = (t.len() - 2).min(3);
        let mut x = x.affine(1.0 / f64::from((1.0 + t[0] * t[0]).sqrt()), 0.0)?;
        let mut past = History {
            models: Vec::with_capacity(order.max(1)),
            sigmas: Vec::with_capacity(order.max(1)),
        };
        for step_index in 0..steps {
            if step_index == 0 {
                past.models.push(self.uni_pc_data(&x, t[0], 0)?);
                past.sigmas.push(t[0]);
            } else if step_index < order {
                let update = Update {
                    t: t[step_index],
                    order: step_index,
                    use_corrector: true,
                    index: step_index,
                };
                let (next, model) = self.uni_pc_update(&x, &past, update, variant)?;
                x = next;
                let model = match model {
                    Some(model) => model,
                    None => self.uni_pc_data(&x, t[step_index], step_index)?,
                };
                past.models.push(model);
                past.sigmas.push(t[step_index]);
            } else {
                // The last step index also takes the final step to t[steps].
                let last = if step_index == steps - 1 {
                    steps
                } else {
                    step_index
                };
                for (step, &t_step) in t.iter().enumerate().take(last + 1).skip(step_index) {
                    let update = Update {
                        t: t_step,
                        order: order.min(steps + 1 - step),
                        use_corrector: step != steps,
                        index: step_index,
                    };
                    let (next, model) = self.uni_pc_update(&x, &past, update, variant)?;
                    x = next;
                    // Shift the history by one; after the final step the newest
                    // model stays (ComfyUI does not evaluate the model there).
                    let newest = past.models[past.models.len() - 1].clone();
                    let model = match model {
                        Some(model) => model,
                        None if step < steps => self.uni_pc_data(&x, t_step, step_index)?,
                        None => newest,
                    };
                    past.sigmas.remove(0);
                    past.sigmas.push(t_step);
                    past.models.remove(0);
                    past.models.push(model);
                }
            }
            let denoised = past.models[past.models.len() - 1].clone();
            if !self.report(step_index, &x, &denoised) {
                return Ok(None);
            }
        }
        let alpha = marginal_alpha(t[steps]);
        x.affine(1.0 / f64::from(alpha), 0.0).map(Some)
    }
}
