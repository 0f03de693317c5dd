//! The values SD3 nodes pass along links.

use candle_core::Tensor;

use super::sampling::{DiffusionModel, NoiseSource};

/// A `CONDITIONING` value: what the MMDiT attends to for one prompt.
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// Per-token context, `[batch, 77 + t5_len, joint_dim]`.
    pub context: Tensor,
    /// Pooled CLIP-L ++ CLIP-G vector, `[batch, pooled_dim]`.
    pub pooled: Tensor,
}

/// A `CONDITIONING` value of several prompts, as ComfyUI keeps one: a list of
/// entries, each guiding the steps its range covers (averaged where several
/// do). A plain [`Conditioning`] is one entry over the whole run, and nodes
/// pass it on as such (see [`ConditioningList::into_value`]).
#[derive(Debug, Clone)]
pub struct ConditioningList {
    pub entries: Vec<ConditioningEntry>,
}

/// One prompt of a [`ConditioningList`].
#[derive(Debug, Clone)]
pub struct ConditioningEntry {
    pub cond: Conditioning,
    pub range: TimestepRange,
}

/// ComfyUI's `start_percent`/`end_percent`: the fraction of the model's
/// timesteps (0 = pure noise, 1 = clean) where an entry guides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimestepRange {
    pub start: f64,
    pub end: f64,
}

impl TimestepRange {
    pub const WHOLE: Self = TimestepRange {
        start: 0.0,
        end: 1.0,
    };
}

impl ConditioningList {
    /// A plain conditioning: one entry over the whole run.
    pub fn plain(cond: Conditioning) -> Self {
        ConditioningList {
            entries: vec![ConditioningEntry {
                cond,
                range: TimestepRange::WHOLE,
            }],
        }
    }

    /// The plain [`Conditioning`] this list is (one entry over the whole
    /// run), or the list itself.
    pub fn into_plain(mut self) -> Result<Conditioning, Self> {
        match self.entries.as_slice() {
            [entry] if entry.range == TimestepRange::WHOLE => Ok(self.entries.remove(0).cond),
            _ => Err(self),
        }
    }
}

/// A `LATENT` value: SD3 latents, `[batch, 16, height / 8, width / 8]`, unscaled
/// (as the transformer sees them).
#[derive(Debug, Clone)]
pub struct Latent {
    pub samples: Tensor,
    /// ComfyUI's `noise_mask` (`SetLatentNoiseMask`): `[batch, height, width]`
    /// in 0..=1 at any size, 1 where the samplers denoise.
    pub noise_mask: Option<Tensor>,
}

impl Latent {
    /// Latents without a noise mask.
    pub fn new(samples: Tensor) -> Self {
        Latent {
            samples,
            noise_mask: None,
        }
    }
}

/// An `IMAGE` value: pixels `[batch, height, width, 3]`, f32 in 0..=1 (ComfyUI's layout).
#[derive(Debug, Clone)]
pub struct Image {
    pub pixels: Tensor,
}

/// A `MASK` value: `[batch, height, width]`, f32 in 0..=1 (ComfyUI's layout).
#[derive(Debug, Clone)]
pub struct Mask {
    pub values: Tensor,
}

/// A `SIGMAS` value: a descending schedule (ComfyUI's custom sampling).
#[derive(Debug, Clone)]
pub struct Sigmas(pub Vec<f32>);

/// A `NOISE` value: the initial noise and the seed of the per-step noise.
#[derive(Debug, Clone, Copy)]
pub struct Noise {
    pub source: NoiseSource,
    pub seed: u64,
}

/// A `GUIDER` value: the model and the prompts it is guided by.
#[derive(Debug, Clone)]
pub struct Guider {
    pub model: DiffusionModel,
    pub positive: ConditioningList,
    /// Empty for `BasicGuider` (cfg 1 never reads it).
    pub negative: ConditioningList,
    pub cfg: f64,
}
