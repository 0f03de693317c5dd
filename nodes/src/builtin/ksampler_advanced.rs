use crate::sd3::sampling::{
    ksampler_sigmas, step_window, DiffusionModel, NoiseSource, Sampler, Scheduler,
};
use crate::sd3::types::Latent;
use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext, Value,
};

use super::conditioning_list::conditioning_input;
use super::ksampler::{
    latent_shape, run_sampling, sampler_and_scheduler, sampling_estimate, SamplingJob,
};

/// ComfyUI's `KSamplerAdvanced`: [`super::KSampler`] on a window of the
/// schedule (`start_at_step..end_at_step`), with or without adding the seed's
/// noise first, and optionally stopping with the leftover noise (ComfyUI's
/// `inverse_noise_scaling`: the latent divided by `1 − σ` where it stops) so
/// that a second KSamplerAdvanced can finish the run.
pub struct KSamplerAdvanced;

impl Node for KSamplerAdvanced {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("KSamplerAdvanced", "sampling")
            .display_name("KSampler (Advanced)")
            .description("Runs a window of the sampling steps, for multi-stage sampling.")
            .input(InputSpec::required(
                "model",
                InputKind::link(data_type::MODEL),
            ))
            .input(InputSpec::required(
                "add_noise",
                InputKind::combo(["enable", "disable"]),
            ))
            .input(InputSpec::required("noise_seed", InputKind::seed()))
            .input(InputSpec::required("steps", InputKind::int(20, 1, 10000)))
            .input(InputSpec::required(
                "cfg",
                InputKind::float(8.0, 0.0, 100.0, 0.1),
            ))
            .input(InputSpec::required(
                "sampler_name",
                InputKind::combo(Sampler::COMFY_NAMES),
            ))
            .input(InputSpec::required(
                "scheduler",
                InputKind::combo(Scheduler::COMFY_NAMES),
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
                "latent_image",
                InputKind::link(data_type::LATENT),
            ))
            .input(InputSpec::required(
                "start_at_step",
                InputKind::int(0, 0, 10000),
            ))
            .input(InputSpec::required(
                "end_at_step",
                InputKind::int(10000, 0, 10000),
            ))
            .input(InputSpec::required(
                "return_with_leftover_noise",
                InputKind::combo(["disable", "enable"]),
            ))
            .output(OutputSpec::new(data_type::LATENT))
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let model = inputs.handle::<DiffusionModel>("model")?;
        let positive = conditioning_input(inputs, "positive")?;
        let negative = conditioning_input(inputs, "negative")?;
        let latent = inputs.handle::<Latent>("latent_image")?;
        let (sampler, scheduler) = sampler_and_scheduler(inputs)?;
        let steps = inputs.int("steps")?.max(1) as usize;
        let step = |name: &str| Ok::<_, NodeError>(inputs.int(name)?.max(0) as usize);
        let all = ksampler_sigmas(
            scheduler,
            steps,
            model.shift,
            1.0,
            sampler.discards_penultimate_sigma(),
        );
        let leftover = inputs.string("return_with_leftover_noise")? == "enable";
        let sigmas = step_window(
            &all,
            step("start_at_step")?,
            step("end_at_step")?,
            !leftover,
        );
        let noise = match inputs.string("add_noise")? {
            "disable" => NoiseSource::Zeros,
            _ => NoiseSource::Torch,
        };
        let job = SamplingJob {
            model: &model,
            positive: &positive,
            negative: &negative,
            sigmas,
            shift: model.shift,
            sampler: Some(sampler),
            cfg: inputs.float("cfg")?,
            skip_layer_guidance: None,
            seed: inputs.int("noise_seed")? as u64,
            noise,
            shape: latent_shape(&latent.samples)?,
            latent: Some(&latent.samples),
            noise_mask: latent.noise_mask.as_ref(),
        };
        let out = run_sampling(job, ctx)?.latent;
        Ok(NodeOutput::values(vec![Value::handle(out)]))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        sampling_estimate(inputs.int("steps"), None, inputs.bytes("latent_image"))
    }
}
