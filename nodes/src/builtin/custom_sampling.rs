//! ComfyUI's custom-sampling parts (`comfy_extras/nodes_custom_sampler.py`):
//! `KSamplerSelect`, `BasicScheduler`, `SplitSigmas`, `RandomNoise`,
//! `DisableNoise`, `CFGGuider`, `BasicGuider`, which `SamplerCustomAdvanced`
//! puts together.

use crate::sd3::sampling::{ksampler_sigmas, DiffusionModel, NoiseSource, Sampler, Scheduler};
use crate::sd3::types::{ConditioningList, Guider, Noise, Sigmas};
use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext, Value,
};

use super::conditioning_list::conditioning_input;
use super::ksampler::check_schedule;

fn one(value: Value) -> Result<NodeOutput, NodeError> {
    Ok(NodeOutput::values(vec![value]))
}

/// A `SAMPLER`: one of ComfyUI's samplers by name.
pub struct KSamplerSelect;

impl Node for KSamplerSelect {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("KSamplerSelect", "sampling/custom_sampling/samplers")
            .display_name("KSamplerSelect")
            .input(InputSpec::required(
                "sampler_name",
                InputKind::combo(Sampler::COMFY_NAMES),
            ))
            .output(OutputSpec::new(data_type::SAMPLER))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let name = inputs.string("sampler_name")?;
        let sampler = Sampler::from_comfy_name(name).ok_or_else(|| {
            NodeError::invalid_input("sampler_name", format!("unknown sampler '{name}'"))
        })?;
        one(Value::handle(sampler))
    }
}

/// `SIGMAS` of a scheduler on the model's shift: the last `steps` of
/// `steps / denoise` (no sigmas at `denoise` 0).
pub struct BasicScheduler;

impl Node for BasicScheduler {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("BasicScheduler", "sampling/custom_sampling/schedulers")
            .display_name("BasicScheduler")
            .input(InputSpec::required(
                "model",
                InputKind::link(data_type::MODEL),
            ))
            .input(InputSpec::required(
                "scheduler",
                InputKind::combo(Scheduler::COMFY_NAMES),
            ))
            .input(InputSpec::required("steps", InputKind::int(20, 1, 10000)))
            .input(InputSpec::required(
                "denoise",
                InputKind::float(1.0, 0.0, 1.0, 0.01),
            ))
            .output(OutputSpec::new(data_type::SIGMAS))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let model = inputs.handle::<DiffusionModel>("model")?;
        let name = inputs.string("scheduler")?;
        let scheduler = Scheduler::from_comfy_name(name).ok_or_else(|| {
            NodeError::invalid_input("scheduler", format!("unknown scheduler '{name}'"))
        })?;
        let steps = inputs.int("steps")?.max(1) as usize;
        let denoise = inputs.float("denoise")?;
        let sigmas = ksampler_sigmas(scheduler, steps, model.shift, denoise, false);
        one(Value::handle(Sigmas(sigmas)))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        if let (Some(steps), Some(denoise)) = (inputs.int("steps"), inputs.float("denoise")) {
            check_schedule(steps, denoise)?;
        }
        Ok(Estimate::default())
    }
}

/// Splits a schedule at `step`: the sigmas up to it and from it (both hold
/// the sigma at `step`, so two samplers chain).
pub struct SplitSigmas;

impl Node for SplitSigmas {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SplitSigmas", "sampling/custom_sampling/sigmas")
            .display_name("SplitSigmas")
            .input(InputSpec::required(
                "sigmas",
                InputKind::link(data_type::SIGMAS),
            ))
            .input(InputSpec::required("step", InputKind::int(0, 0, 10000)))
            .output(OutputSpec::named("high_sigmas", data_type::SIGMAS))
            .output(OutputSpec::named("low_sigmas", data_type::SIGMAS))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let sigmas = inputs.handle::<Sigmas>("sigmas")?;
        let (high, low) = split_sigmas(&sigmas.0, inputs.int("step")?.max(0) as usize);
        Ok(NodeOutput::values(vec![
            Value::handle(Sigmas(high)),
            Value::handle(Sigmas(low)),
        ]))
    }
}

/// Python's `sigmas[:step + 1]` and `sigmas[step:]`.
fn split_sigmas(sigmas: &[f32], step: usize) -> (Vec<f32>, Vec<f32>) {
    let high = sigmas[..(step + 1).min(sigmas.len())].to_vec();
    let low = sigmas[step.min(sigmas.len())..].to_vec();
    (high, low)
}

/// `NOISE` as `KSampler` draws it for `noise_seed` (torch's CPU generator);
/// the seed also drives the per-step noise of the ancestral and SDE samplers.
pub struct RandomNoise;

impl Node for RandomNoise {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("RandomNoise", "sampling/custom_sampling/noise")
            .display_name("RandomNoise")
            .input(InputSpec::required("noise_seed", InputKind::seed()))
            .output(OutputSpec::new(data_type::NOISE))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        one(Value::handle(Noise {
            source: NoiseSource::Torch,
            seed: inputs.int("noise_seed")? as u64,
        }))
    }
}

/// No initial noise (a latent that is already noisy). Per-step noise then
/// comes from seed 0, where ComfyUI draws from torch's unseeded global generator.
pub struct DisableNoise;

impl Node for DisableNoise {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("DisableNoise", "sampling/custom_sampling/noise")
            .display_name("DisableNoise")
            .output(OutputSpec::new(data_type::NOISE))
    }

    fn run(&self, _inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        one(Value::handle(Noise {
            source: NoiseSource::Zeros,
            seed: 0,
        }))
    }
}

/// A `GUIDER` with classifier-free guidance, as `KSampler` guides.
pub struct CfgGuider;

impl Node for CfgGuider {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CFGGuider", "sampling/custom_sampling/guiders")
            .display_name("CFGGuider")
            .input(InputSpec::required(
                "model",
                InputKind::link(data_type::MODEL),
            ))
            .input(InputSpec::required(
                "positive",
                InputKind::link(data_type::CONDITIONING),
            ))
            .input(InputSpec::required(
                "negative",
                InputKind::link(data_type::CONDITIONING),
            ))
            .input(InputSpec::required(
                "cfg",
                InputKind::float(8.0, 0.0, 100.0, 0.1),
            ))
            .output(OutputSpec::new(data_type::GUIDER))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        one(Value::handle(Guider {
            model: (*inputs.handle::<DiffusionModel>("model")?).clone(),
            positive: conditioning_input(inputs, "positive")?,
            negative: conditioning_input(inputs, "negative")?,
            cfg: inputs.float("cfg")?,
        }))
    }
}

/// A `GUIDER` of the positive alone (cfg 1).
pub struct BasicGuider;

impl Node for BasicGuider {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("BasicGuider", "sampling/custom_sampling/guiders")
            .display_name("BasicGuider")
            .input(InputSpec::required(
                "model",
                InputKind::link(data_type::MODEL),
            ))
            .input(InputSpec::required(
                "conditioning",
                InputKind::link(data_type::CONDITIONING),
            ))
            .output(OutputSpec::new(data_type::GUIDER))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        one(Value::handle(Guider {
            model: (*inputs.handle::<DiffusionModel>("model")?).clone(),
            positive: conditioning_input(inputs, "conditioning")?,
            negative: ConditioningList {
                entries: Vec::new(),
            },
            cfg: 1.0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sigmas_shares_the_split_point_like_python_slices() {
        let sigmas = [1.0, 0.75, 0.5, 0.0];
        assert_eq!(
            split_sigmas(&sigmas, 1),
            (vec![1.0, 0.75], vec![0.75, 0.5, 0.0])
        );
        assert_eq!(split_sigmas(&sigmas, 0), (vec![1.0], sigmas.to_vec()));
        assert_eq!(split_sigmas(&sigmas, 9), (sigmas.to_vec(), vec![]));
    }
}
