use crate::sd3::sampling::{
    denoise_sigmas, DiffusionModel, NoiseSource, Scheduler, SkipLayerGuidance,
};
use crate::sd3::types::Latent;
use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, RunContext, Value,
};

use super::conditioning_list::conditioning_input;
use super::empty_sd3_latent_image::{latent_bytes, latent_dim};
use super::ksampler::{latent_shape, run_sampling, sampling_estimate, SamplingJob};

/// SD3 generation as diffusers' `StableDiffusion3Pipeline` does it: the
/// `FlowMatchEulerDiscreteScheduler` schedule with `shift`, CFG on
/// `[negative, positive]`, optional skip-layer guidance (SD3.5-medium: layers
/// `7,8,9`, scale 2.8, steps 1%-20%), and optional img2img from a latent with `denoise`.
pub struct Sample;

/// `"7, 8,9"` -> `[7, 8, 9]`; empty -> no layers.
fn parse_layers(text: &str) -> Result<Vec<usize>, NodeError> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse().map_err(|_| {
                NodeError::invalid_input("skip_layers", format!("'{t}' is not a layer index"))
            })
        })
        .collect()
}

/// Skip-layer guidance from the optional inputs: on when layers are given and the scale is > 0.
fn skip_layer_guidance(
    inputs: &Inputs,
    depth: usize,
) -> Result<Option<SkipLayerGuidance>, NodeError> {
    let layers = parse_layers(inputs.optional("skip_layers", Inputs::string, "")?)?;
    let float = |name: &str, default: f64| match inputs.get(name) {
        Some(_) => inputs.float(name),
        None => Ok(default),
    };
    let scale = float("slg_scale", 2.8)?;
    if layers.is_empty() || scale <= 0.0 {
        return Ok(None);
    }
    if let Some(bad) = layers.iter().find(|&&l| l >= depth) {
        return Err(NodeError::invalid_input(
            "skip_layers",
            format!("layer {bad} does not exist: the model has {depth} blocks"),
        ));
    }
    Ok(Some(SkipLayerGuidance {
        layers,
        scale,
        start: float("slg_start", 0.01)?,
        stop: float("slg_stop", 0.2)?,
    }))
}

impl Node for Sample {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Sample", "sampling/sd3")
            .display_name("SD3 Sample")
            .description(
                "Generates SD3 latents with the diffusers schedule; connect a latent for img2img.",
            )
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
            .input(InputSpec::required("seed", InputKind::seed()))
            .input(InputSpec::required("steps", InputKind::int(28, 1, 10000)))
            .input(InputSpec::required(
                "cfg",
                InputKind::float(4.5, 0.0, 100.0, 0.1),
            ))
            .input(InputSpec::required(
                "shift",
                InputKind::float(3.0, 0.01, 100.0, 0.01),
            ))
            .input(InputSpec::required(
                "width",
                InputKind::int(1024, 16, 16384),
            ))
            .input(InputSpec::required(
                "height",
                InputKind::int(1024, 16, 16384),
            ))
            .input(InputSpec::required("batch_size", InputKind::int(1, 1, 64)))
            .input(InputSpec::optional(
                "latent",
                InputKind::link(data_type::LATENT),
            ))
            .input(InputSpec::optional(
                "denoise",
                InputKind::float(1.0, 0.0, 1.0, 0.01),
            ))
            .output(OutputSpec::new(data_type::LATENT))
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let model = inputs.handle::<DiffusionModel>("model")?;
        let positive = conditioning_input(inputs, "positive")?;
        let negative = conditioning_input(inputs, "negative")?;
        let latent = inputs.opt_handle::<Latent>("latent")?;
        let shape = match &latent {
            Some(latent) => latent_shape(&latent.samples)?,
            None => {
                let dim = |name: &str| latent_dim(inputs, name);
                let batch = inputs.int("batch_size")?.max(1) as usize;
                [
                    batch,
                    model.mmdit.config().in_channels,
                    dim("height")?,
                    dim("width")?,
                ]
            }
        };
        let denoise = match inputs.get("denoise") {
            Some(_) if latent.is_some() => inputs.float("denoise")?,
            _ => 1.0,
        };
        let steps = inputs.int("steps")?.max(1) as usize;
        // A linked ModelSamplingSD3 wins over the widget, as its name promises.
        let shift = if model.shift_from_model_sampling {
            model.shift
        } else {
            inputs.float("shift")?
        };
        let job = SamplingJob {
            model: &model,
            positive: &positive,
            negative: &negative,
            sigmas: denoise_sigmas(Scheduler::Diffusers, steps, shift, denoise),
            shift,
            sampler: None,
            cfg: inputs.float("cfg")?,
            skip_layer_guidance: skip_layer_guidance(inputs, model.mmdit.config().depth)?,
            seed: inputs.int("seed")? as u64,
            noise: NoiseSource::SplitMix64,
            shape,
            latent: latent.as_ref().map(|l| &l.samples),
            noise_mask: None,
        };
        let out = run_sampling(job, ctx)?.latent;
        Ok(NodeOutput::values(vec![Value::handle(out)]))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        // As in `run`: denoise only applies to a given latent.
        let (latent, denoise) = match inputs.get("latent") {
            Some(linked) => (linked.bytes, inputs.float("denoise")),
            None => (latent_bytes(inputs).unwrap_or(0), None),
        };
        sampling_estimate(inputs.int("steps"), denoise, latent)
    }
}
