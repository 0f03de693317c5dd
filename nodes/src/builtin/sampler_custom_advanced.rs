use crate::sd3::sampling::Sampler;
use crate::sd3::types::{Guider, Latent, Noise, Sigmas};
use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext, Value, ValueEstimate,
};

use super::ksampler::{latent_shape, run_sampling, sampling_estimate, SamplingJob};

/// ComfyUI's `SamplerCustomAdvanced`: a `SAMPLER` on `SIGMAS`, guided by a
/// `GUIDER`, from a `NOISE`, through the same sampling path as `KSampler`
/// (the latent divided by `1 − σ_last` when the sigmas stop early). Its
/// second output is the model's clean-image estimate at the last step.
pub struct SamplerCustomAdvanced;

impl Node for SamplerCustomAdvanced {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SamplerCustomAdvanced", "sampling/custom_sampling")
            .display_name("SamplerCustomAdvanced")
            .description("Samples with a chosen noise, guider, sampler and sigmas.")
            .input(InputSpec::required(
                "noise",
                InputKind::link(data_type::NOISE),
            ))
            .input(InputSpec::required(
                "guider",
                InputKind::link(data_type::GUIDER),
            ))
            .input(InputSpec::required(
                "sampler",
                InputKind::link(data_type::SAMPLER),
            ))
            .input(InputSpec::required(
                "sigmas",
                InputKind::link(data_type::SIGMAS),
            ))
            .input(InputSpec::required(
                "latent_image",
                InputKind::link(data_type::LATENT),
            ))
            .output(OutputSpec::named("output", data_type::LATENT))
            .output(OutputSpec::named("denoised_output", data_type::LATENT))
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let noise = inputs.handle::<Noise>("noise")?;
        let guider = inputs.handle::<Guider>("guider")?;
        let sampler = inputs.handle::<Sampler>("sampler")?;
        let sigmas = inputs.handle::<Sigmas>("sigmas")?;
        let latent = inputs.handle::<Latent>("latent_image")?;
        let job = SamplingJob {
            model: &guider.model,
            positive: &guider.positive,
            negative: &guider.negative,
            sigmas: sigmas.0.clone(),
            shift: guider.model.shift,
            sampler: Some(*sampler),
            cfg: guider.cfg,
            skip_layer_guidance: None,
            seed: noise.seed,
            noise: noise.source,
            shape: latent_shape(&latent.samples)?,
            latent: Some(&latent.samples),
            noise_mask: latent.noise_mask.as_ref(),
        };
        let out = run_sampling(job, ctx)?;
        // ComfyUI: with no step run, the denoised output is the output.
        let denoised = out.denoised.unwrap_or_else(|| out.latent.clone());
        Ok(NodeOutput::values(vec![
            Value::handle(out.latent),
            Value::handle(denoised),
        ]))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        let bytes = inputs.bytes("latent_image");
        let working = sampling_estimate(None, None, bytes)?.working_bytes;
        let outputs = vec![ValueEstimate::bytes(bytes), ValueEstimate::bytes(bytes)];
        Ok(Estimate::outputs(outputs).with_working_bytes(working))
    }
}
