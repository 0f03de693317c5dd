//! ComfyUI's sampling with a latent noise mask (`SetLatentNoiseMask`).
//!
//! References: ComfyUI `comfy/sampler_helpers.py` `prepare_mask` and
//! `comfy/utils.py` `reshape_mask` (the mask resized to the latent with
//! bilinear interpolation, repeated over the channels and the batch), and
//! `comfy/samplers.py` `KSamplerX0Inpaint` (each model call sees `x` with the
//! region outside the mask replaced by the original latent noised to σ,
//! `noise_scaling(σ, noise, latent) = σ·noise + (1 − σ)·latent`, and returns
//! the original latent as its clean estimate there) and `KSAMPLER.sample`
//! (the noise is the run's initial noise; for `ddim`, fresh noise from
//! `torch.manual_seed(seed + 1)`).

use candle_core::{DType, Result, Tensor};

use super::noise_latent;
use super::samplers::Denoiser;
use crate::resample::{self, Method};

/// The mask, latent and noise of an inpainting run, on the model's device.
pub struct Inpaint {
    /// `[b, c, h, w]`: 1 where the sampler denoises.
    mask: Tensor,
    /// `1 − mask`: where the original latent is kept.
    keep: Tensor,
    latent: Tensor,
    noise: Tensor,
}

impl Inpaint {
    /// `mask` is a `MASK` (`[b, H, W]`, any size); `latent` and `noise` have
    /// the run's shape.
    pub fn new(mask: &Tensor, latent: &Tensor, noise: &Tensor) -> Result<Self> {
        let dims = latent.dims4()?;
        let mask =
            latent_mask(mask, [dims.0, dims.1, dims.2, dims.3])?.to_device(latent.device())?;
        let keep = mask.affine(-1.0, 1.0)?;
        Ok(Inpaint {
            mask,
            keep,
            latent: latent.to_dtype(DType::F32)?,
            noise: noise.to_dtype(DType::F32)?,
        })
    }

    /// `x·mask + other·(1 − mask)`.
    fn blend(&self, x: &Tensor, other: &Tensor) -> Result<Tensor> {
        x.mul(&self.mask)? + other.mul(&self.keep)?
    }
}

/// ComfyUI's `reshape_mask`: `[b, H, W]` → `[b', c, h, w]` by torch's bilinear
/// interpolation (`align_corners=False`), the channels repeated, and the batch
/// cut or repeated cyclically to `shape`'s.
pub fn latent_mask(mask: &Tensor, shape: [usize; 4]) -> Result<Tensor> {
    let [batch, channels, height, width] = shape;
    let mask = match mask.rank() {
        2 => mask.unsqueeze(0)?,
        3 => mask.clone(),
        rank => candle_core::bail!("a mask has 2 or 3 dimensions, this one has {rank}"),
    };
    let (mask_batch, mask_height, mask_width) = mask.dims3()?;
    let mask = mask
        .to_dtype(DType::F32)?
        .reshape((mask_batch, 1, mask_height, mask_width))?;
    let mask = resample::resize(&mask, height, width, Method::Bilinear)?;
    let mask = mask.repeat((1, channels, 1, 1))?;
    let repeats = batch.div_ceil(mask_batch);
    mask.repeat((repeats, 1, 1, 1))?.narrow(0, 0, batch)
}

/// ComfyUI's `KSamplerX0Inpaint` around a denoiser.
pub struct InpaintDenoiser<'a> {
    pub inner: &'a mut dyn Denoiser,
    pub inpaint: &'a Inpaint,
}

impl Denoiser for InpaintDenoiser<'_> {
    fn denoise(&mut self, x: &Tensor, sigma: f32, step: usize) -> Result<Tensor> {
        let inpaint = self.inpaint;
        let noised = noise_latent(&inpaint.noise, Some(&inpaint.latent), sigma)?;
        let x = inpaint.blend(x, &noised)?;
        let denoised = self.inner.denoise(&x, sigma, step)?;
        inpaint.blend(&denoised, &inpaint.latent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn mask_is_resized_bilinearly_and_repeated_over_channels_and_batch() -> Result<()> {
        let dev = Device::Cpu;
        // 1×2×2 → 4×4: torch's bilinear (align_corners=False) gives the
        // corners, then quarter steps between them.
        let mask = Tensor::new(&[[[0f32, 1.0], [1.0, 1.0]]], &dev)?;
        let out = latent_mask(&mask, [3, 2, 4, 4])?;
        assert_eq!(out.dims(), [3, 2, 4, 4]);
        let row0 = out.get(2)?.get(1)?.get(0)?.to_vec1::<f32>()?;
        assert_eq!(row0, vec![0.0, 0.25, 0.75, 1.0]);
        let row1 = out.get(0)?.get(0)?.get(1)?.to_vec1::<f32>()?;
        assert_eq!(row1, vec![0.25, 0.4375, 0.8125, 1.0]);
        // A batch of 2 masks over a batch of 3 latents: 0, 1, 0.
        let two = Tensor::new(&[[[0f32]], [[1.0]]], &dev)?;
        let out = latent_mask(&two, [3, 1, 1, 1])?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(out, vec![0.0, 1.0, 0.0]);
        Ok(())
    }

    /// Records what the model saw and answers a constant estimate.
    struct Recorder {
        seen: Vec<Tensor>,
    }

    impl Denoiser for Recorder {
        fn denoise(&mut self, x: &Tensor, _sigma: f32, _step: usize) -> Result<Tensor> {
            self.seen.push(x.clone());
            x.ones_like()?.affine(9.0, 0.0)
        }
    }

    #[test]
    fn model_sees_the_noised_original_outside_the_mask() -> Result<()> {
        let dev = Device::Cpu;
        let mask = Tensor::new(&[[[1f32, 0.0]]], &dev)?;
        let latent = Tensor::new(&[2f32, 4.0], &dev)?.reshape((1, 1, 1, 2))?;
        let noise = Tensor::new(&[-1f32, 3.0], &dev)?.reshape((1, 1, 1, 2))?;
        let inpaint = Inpaint::new(&mask, &latent, &noise)?;
        let mut recorder = Recorder { seen: Vec::new() };
        let mut model = InpaintDenoiser {
            inner: &mut recorder,
            inpaint: &inpaint,
        };
        let x = Tensor::new(&[5f32, 6.0], &dev)?.reshape((1, 1, 1, 2))?;
        let out = model
            .denoise(&x, 0.25, 0)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        // Inside: x and the model's estimate; outside: 0.25·3 + 0.75·4 and the latent.
        let seen = recorder.seen[0].flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(seen, vec![5.0, 3.75]);
        assert_eq!(out, vec![9.0, 4.0]);
        Ok(())
    }

    /// A closed-form model: `denoised = 0.5·x + 0.1`.
    struct Halve;

    impl Denoiser for Halve {
        fn denoise(&mut self, x: &Tensor, _sigma: f32, _step: usize) -> Result<Tensor> {
            x.affine(0.5, 0.1)
        }
    }

    #[test]
    fn a_full_denoise_keeps_the_latent_outside_the_mask() -> Result<()> {
        use crate::sd3::sampling::{
            comfy_noise, ksampler_sigmas, noise_latent, sample, Run, Sampler, Scheduler, StepNoise,
        };
        let dev = Device::Cpu;
        let shape = [1, 2, 4, 4];
        let latent = comfy_noise(7, &shape, &dev)?;
        let noise = comfy_noise(42, &shape, &dev)?;
        // The right half of a 2×2 mask, resized to 4×4: columns 0.0, 0.25, 0.75, 1.0.
        let mask = Tensor::new(&[[[0f32, 1.0], [0.0, 1.0]]], &dev)?;
        let inpaint = Inpaint::new(&mask, &latent, &noise)?;
        for sampler in [Sampler::Euler, Sampler::Dpmpp2m, Sampler::EulerAncestral] {
            let sigmas = ksampler_sigmas(Scheduler::Simple, 6, 3.0, 1.0, false);
            let run = Run {
                sampler,
                sigmas: &sigmas,
                shift: 3.0,
            };
            let x = noise_latent(&noise, Some(&latent), sigmas[0])?;
            let mut model = InpaintDenoiser {
                inner: &mut Halve,
                inpaint: &inpaint,
            };
            let mut step_noise = StepNoise::comfy(42);
            let out = sample(&run, &mut model, x, &mut step_noise, &mut |_| {
                std::ops::ControlFlow::Continue(())
            })?
            .expect("not interrupted");
            let diff = (&out - &latent)?.abs()?;
            // Column 0 is outside the mask: the latent, to f32 rounding.
            let outside = diff.narrow(3, 0, 1)?.max_all()?.to_scalar::<f32>()?;
            assert!(outside < 1e-6, "{sampler:?}: outside moved by {outside}");
            // Column 3 is all inside: the model's own image there.
            let inside = diff.narrow(3, 3, 1)?.mean_all()?.to_scalar::<f32>()?;
            assert!(inside > 0.1, "{sampler:?}: inside stayed the latent");
        }
        Ok(())
    }
}
