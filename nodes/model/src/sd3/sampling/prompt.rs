//! The prompts a run is guided by, resolved to the sigmas where each applies.
//!
//! Reference: ComfyUI `comfy/samplers.py` (`calculate_start_end_timesteps`:
//! `start_percent`/`end_percent` through the model's `percent_to_sigma`;
//! `get_area_and_mult`: an entry is skipped when `σ > σ_start` or `σ < σ_end`,
//! compared in the f32 of the sigma tensor) and `comfy/model_sampling.py`
//! (`ModelSamplingDiscreteFlow.percent_to_sigma`).

use candle_core::{Device, Result};

use super::schedulers::shift_sigma;
use crate::sd3::types::{Conditioning, ConditioningList, TimestepRange};

/// ComfyUI's flow `percent_to_sigma`: 0 → 1, 1 → 0, else `shift(1 − p)`.
pub fn percent_to_sigma(shift: f64, percent: f64) -> f64 {
    if percent <= 0.0 {
        1.0
    } else if percent >= 1.0 {
        0.0
    } else {
        shift_sigma(shift, 1.0 - percent)
    }
}

/// One side of the guidance (positive or negative): its entries with the
/// sigmas they cover.
#[derive(Debug, Clone)]
pub struct Prompt {
    entries: Vec<PromptEntry>,
}

#[derive(Debug, Clone)]
struct PromptEntry {
    cond: Conditioning,
    /// Active while `sigma_end <= σ <= sigma_start`.
    sigma_start: f32,
    sigma_end: f32,
}

impl Prompt {
    /// One conditioning over the whole run.
    pub fn plain(cond: Conditioning) -> Self {
        Self::resolve(&ConditioningList::plain(cond), 1.0)
    }

    /// The list's ranges as sigmas of a model sampled with `shift`.
    pub fn resolve(list: &ConditioningList, shift: f64) -> Self {
        let entries = list
            .entries
            .iter()
            .map(|entry| {
                let TimestepRange { start, end } = entry.range;
                PromptEntry {
                    cond: entry.cond.clone(),
                    sigma_start: percent_to_sigma(shift, start) as f32,
                    sigma_end: percent_to_sigma(shift, end) as f32,
                }
            })
            .collect();
        Prompt { entries }
    }

    /// The conditionings that guide the step at `sigma`, in list order.
    pub(super) fn active(&self, sigma: f32) -> Vec<&Conditioning> {
        self.entries
            .iter()
            .filter(|e| sigma <= e.sigma_start && sigma >= e.sigma_end)
            .map(|e| &e.cond)
            .collect()
    }

    /// Every entry moved to `device` and repeated to the latent `batch`.
    pub(super) fn prepared(&self, batch: usize, device: &Device) -> Result<Self> {
        let entries = self
            .entries
            .iter()
            .map(|e| {
                let cond = Conditioning {
                    context: e.cond.context.to_device(device)?,
                    pooled: e.cond.pooled.to_device(device)?,
                };
                Ok(PromptEntry {
                    cond: expand_batch(&cond, batch)?,
                    ..e.clone()
                })
            })
            .collect::<Result<_>>()?;
        Ok(Prompt { entries })
    }
}

/// Repeats a batch-1 conditioning to `batch` rows; other sizes must match.
fn expand_batch(cond: &Conditioning, batch: usize) -> Result<Conditioning> {
    let have = cond.context.dim(0)?;
    if have == batch {
        return Ok(cond.clone());
    }
    if have != 1 {
        candle_core::bail!("conditioning batch {have} does not match latent batch {batch}");
    }
    Ok(Conditioning {
        context: cond.context.repeat((batch, 1, 1))?,
        pooled: cond.pooled.repeat((batch, 1))?,
    })
}

#[cfg(test)]
mod tests {
    use candle_core::Tensor;

    use super::*;
    use crate::sd3::types::ConditioningEntry;

    fn cond(value: f32) -> Conditioning {
        Conditioning {
            context: Tensor::full(value, (1, 2, 3), &Device::Cpu).unwrap(),
            pooled: Tensor::full(value, (1, 4), &Device::Cpu).unwrap(),
        }
    }

    fn value(c: &Conditioning) -> f32 {
        c.pooled.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]
    }

    #[test]
    fn percent_to_sigma_is_comfyuis_flow_mapping() {
        assert_eq!(percent_to_sigma(3.0, 0.0), 1.0);
        assert_eq!(percent_to_sigma(3.0, 1.0), 0.0);
        // shift 3, 1 − 0.1 = 0.9: 2.7 / 2.8.
        assert!((percent_to_sigma(3.0, 0.1) - 2.7 / 2.8).abs() < 1e-15);
    }

    #[test]
    fn sd3_negative_recipe_switches_at_ten_percent() {
        let range = |start, end| TimestepRange { start, end };
        let list = ConditioningList {
            entries: vec![
                ConditioningEntry {
                    cond: cond(0.0),
                    range: range(0.1, 1.0),
                },
                ConditioningEntry {
                    cond: cond(1.0),
                    range: range(0.0, 0.1),
                },
            ],
        };
        let prompt = Prompt::resolve(&list, 3.0);
        let at = |sigma: f32| {
            prompt
                .active(sigma)
                .into_iter()
                .map(value)
                .collect::<Vec<_>>()
        };
        assert_eq!(at(1.0), [1.0]);
        assert_eq!(at(0.97), [1.0]);
        // The switch point itself is in both ranges, as in ComfyUI.
        assert_eq!(at((2.7f64 / 2.8) as f32), [0.0, 1.0]);
        assert_eq!(at(0.9), [0.0]);
        assert_eq!(at(0.001), [0.0]);
    }
}
