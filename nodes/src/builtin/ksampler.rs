use std::ops::ControlFlow;

use candle_core::{Device, Tensor};

use crate::sd3::latent_preview::preview;
use crate::sd3::sampling::{
    comfy_noise, ksampler_sigmas, noise_latent, ComfySampler, DiffusionModel, EulerSampler,
    Inpaint, NoiseSource, Prompt, Sampler, Scheduler, SkipLayerGuidance, Step, MAX_SCHEDULE_STEPS,
};
use crate::sd3::types::{ConditioningList, Latent};
use crate::{
    data_type, Estimate, EstimateInputs, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput,
    NodeSchema, OutputSpec, PreviewFormat, RunContext, Value, ValueEstimate,
};

use super::conditioning_list::conditioning_input;
use super::save_image::encode_png;

/// Send a latent preview every this many steps (and after the last).
const PREVIEW_EVERY: usize = 3;

/// One sampling run, shared by `KSampler` and `Sample`.
pub(crate) struct SamplingJob<'a> {
    pub model: &'a DiffusionModel,
    pub positive: &'a ConditioningList,
    pub negative: &'a ConditioningList,
    pub sigmas: Vec<f32>,
    /// The shift the sigmas were made with (timestep ranges are read with it).
    pub shift: f64,
    /// ComfyUI's sampler; `None` is diffusers' Euler step (`Sample`).
    pub sampler: Option<Sampler>,
    pub cfg: f64,
    pub skip_layer_guidance: Option<SkipLayerGuidance>,
    pub seed: u64,
    pub noise: NoiseSource,
    /// `[b, 16, h, w]`: the noise shape.
    pub shape: [usize; 4],
    /// The img2img start, when given.
    pub latent: Option<&'a Tensor>,
    /// The latent's noise mask (`SetLatentNoiseMask`); ComfyUI's samplers
    /// only denoise inside it, and it stays on the output latent as ComfyUI
    /// copies the LATENT dict.
    pub noise_mask: Option<&'a Tensor>,
}

/// What a sampling run returns.
pub(crate) struct Sampled {
    pub latent: Latent,
    /// The model's clean-image estimate at the last step (none when no step ran).
    pub denoised: Option<Latent>,
}

/// Runs the job's sampler with progress (honouring cancel) and, when
/// switched on, PNG previews.
/// Noise is drawn on the CPU, so a seed gives the same image on every device.
/// No sigmas (`denoise` 0): the latent comes back unchanged, as in ComfyUI.
pub(crate) fn run_sampling(job: SamplingJob<'_>, ctx: &RunContext) -> Result<Sampled, NodeError> {
    let with_mask = |samples: Tensor| Latent {
        samples,
        noise_mask: job.noise_mask.cloned(),
    };
    if job.sigmas.len() < 2 {
        let samples = match job.latent {
            Some(latent) => latent.clone(),
            None => Tensor::zeros(&job.shape, candle_core::DType::F32, &Device::Cpu)
                .map_err(anyhow::Error::from)?,
        };
        return Ok(Sampled {
            latent: with_mask(samples),
            denoised: None,
        });
    }
    let device = job.model.mmdit.device().clone();
    let prepare = || -> candle_core::Result<(Tensor, Option<Inpaint>)> {
        let noise = job
            .noise
            .noise(job.seed, &job.shape, &Device::Cpu)?
            .to_device(&device)?;
        let latent = job.latent.map(|l| l.to_device(&device)).transpose()?;
        let x = noise_latent(&noise, latent.as_ref(), job.sigmas[0])?;
        let inpaint = match (job.noise_mask, &latent, job.sampler) {
            (Some(mask), Some(latent), Some(sampler)) => {
                let noise = match sampler.inpaints_with_fresh_noise() {
                    true => comfy_noise(job.seed.wrapping_add(1), &job.shape, &Device::Cpu)?
                        .to_device(&device)?,
                    false => noise,
                };
                Some(Inpaint::new(mask, latent, &noise)?)
            }
            _ => None,
        };
        Ok((x, inpaint))
    };
    let (x, inpaint) = prepare().map_err(anyhow::Error::from)?;
    let positive = Prompt::resolve(job.positive, job.shift);
    let negative = Prompt::resolve(job.negative, job.shift);
    let mut failure = None;
    let mut last_denoised = None;
    let mut on_step = |step: &Step<'_>| {
        last_denoised = Some(step.denoised.clone());
        if let Err(e) = ctx.progress(step.index as u64 + 1, step.total as u64) {
            failure = Some(e);
            return ControlFlow::Break(());
        }
        let done = step.index + 1;
        if ctx.previews.is_on() && (done.is_multiple_of(PREVIEW_EVERY) || done == step.total) {
            // A preview that fails to render is skipped, never fatal.
            if let Ok(p) = preview(step.denoised) {
                if let Ok(png) = encode_png(p.width, p.height, &p.rgb, &[]) {
                    ctx.preview(PreviewFormat::Png, png);
                }
            }
        }
        ControlFlow::Continue(())
    };
    let mmdit = &job.model.mmdit;
    let out = match job.sampler {
        Some(sampler) => ComfySampler {
            sampler,
            sigmas: job.sigmas,
            cfg: job.cfg,
            shift: job.shift,
            seed: job.seed,
            skip_layer_patches: &job.model.skip_layer_patches,
            inpaint: inpaint.as_ref(),
        }
        .sample(mmdit, &positive, &negative, &x, &mut on_step),
        None => EulerSampler {
            sigmas: job.sigmas,
            cfg: job.cfg,
            skip_layer_guidance: job.skip_layer_guidance,
        }
        .sample(mmdit, &positive, &negative, &x, &mut on_step),
    }
    .map_err(anyhow::Error::from)?;
    let to_cpu = |samples: Tensor| -> Result<Latent, NodeError> {
        let samples = samples
            .to_device(&Device::Cpu)
            .map_err(anyhow::Error::from)?;
        Ok(with_mask(samples))
    };
    match out {
        Some(samples) => Ok(Sampled {
            latent: to_cpu(samples)?,
            denoised: last_denoised.map(to_cpu).transpose()?,
        }),
        None => Err(failure.unwrap_or(NodeError::Interrupted)),
    }
}

/// The MMDiT's activations per byte of latent: a token is a 2×2 patch of 16
/// channels (256 bytes), and holds about 12 vectors of up to 2432 floats, twice
/// for classifier-free guidance.
const SAMPLING_BYTES_PER_LATENT_BYTE: u64 = 1024;

/// The estimate of sampling a latent of `latent_bytes`, checking the schedule
/// that `steps` and `denoise` ask for when they are known.
pub(crate) fn sampling_estimate(
    steps: Option<i64>,
    denoise: Option<f64>,
    latent_bytes: u64,
) -> Result<Estimate, String> {
    if let (Some(steps), Some(denoise)) = (steps, denoise) {
        check_schedule(steps, denoise)?;
    }
    let working = latent_bytes.saturating_mul(SAMPLING_BYTES_PER_LATENT_BYTE);
    Ok(Estimate::outputs(vec![ValueEstimate::bytes(latent_bytes)]).with_working_bytes(working))
}

/// Refuses a `denoise` so small that its schedule (`steps / denoise` steps, of
/// which the last `steps` run) would be absurdly long.
pub(crate) fn check_schedule(steps: i64, denoise: f64) -> Result<(), String> {
    if denoise <= 0.0 || denoise >= 1.0 {
        return Ok(());
    }
    let total = steps as f64 / denoise;
    if total > MAX_SCHEDULE_STEPS as f64 {
        return Err(format!(
            "denoise: {denoise:e} with {steps} steps needs a schedule of {total:.0} steps, \
             more than {MAX_SCHEDULE_STEPS}; use a denoise of at least {:.0e}",
            steps as f64 / MAX_SCHEDULE_STEPS as f64
        ));
    }
    Ok(())
}

/// The latent's `[b, c, h, w]`.
pub(crate) fn latent_shape(latent: &Tensor) -> Result<[usize; 4], NodeError> {
    let (b, c, h, w) = latent
        .dims4()
        .map_err(|e| NodeError::invalid_input("latent_image", e.to_string()))?;
    Ok([b, c, h, w])
}

/// The `sampler_name` and `scheduler` inputs of the KSampler nodes.
pub(crate) fn sampler_and_scheduler(inputs: &Inputs) -> Result<(Sampler, Scheduler), NodeError> {
    let name = inputs.string("sampler_name")?;
    let sampler = Sampler::from_comfy_name(name).ok_or_else(|| {
        NodeError::invalid_input("sampler_name", format!("unknown sampler '{name}'"))
    })?;
    let name = inputs.string("scheduler")?;
    let scheduler = Scheduler::from_comfy_name(name).ok_or_else(|| {
        NodeError::invalid_input("scheduler", format!("unknown scheduler '{name}'"))
    })?;
    Ok((sampler, scheduler))
}

/// ComfyUI's `KSampler` for SD3: ComfyUI's samplers and schedulers, with the
/// model's shift (see `ModelSamplingSD3`), from ComfyUI's own initial noise for
/// the seed (torch's CPU generator) and its per-step noise on the CPU.
pub struct KSampler;

impl Node for KSampler {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("KSampler", "sampling")
            .display_name("KSampler")
            .description("Denoises the latent with the model, guided by the conditionings.")
            .input(InputSpec::required(
                "model",
                InputKind::link(data_type::MODEL),
            ))
            .input(InputSpec::required("seed", InputKind::seed()))
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
                "denoise",
                InputKind::float(1.0, 0.0, 1.0, 0.01),
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
        let denoise = inputs.float("denoise")?;
        let discard = sampler.discards_penultimate_sigma();
        let job = SamplingJob {
            model: &model,
            positive: &positive,
            negative: &negative,
            sigmas: ksampler_sigmas(scheduler, steps, model.shift, denoise, discard),
            shift: model.shift,
            sampler: Some(sampler),
            cfg: inputs.float("cfg")?,
            skip_layer_guidance: None,
            seed: inputs.int("seed")? as u64,
            noise: NoiseSource::Torch,
            shape: latent_shape(&latent.samples)?,
            latent: Some(&latent.samples),
            noise_mask: latent.noise_mask.as_ref(),
        };
        let out = run_sampling(job, ctx)?.latent;
        Ok(NodeOutput::values(vec![Value::handle(out)]))
    }

    fn estimate(&self, inputs: &EstimateInputs) -> Result<Estimate, String> {
        sampling_estimate(
            inputs.int("steps"),
            inputs.float("denoise"),
            inputs.bytes("latent_image"),
        )
    }
}
