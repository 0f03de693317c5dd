//! SD3's conditioning layout: CLIP-L ++ CLIP-G penultimate states, zero-padded to the joint
//! width, followed by the T5 states (or zeros); pooled = pooled CLIP-L ++ pooled CLIP-G.
//!
//! Reference: diffusers `StableDiffusion3Pipeline.encode_prompt` and `_get_t5_prompt_embeds`
//! (v0.42.1; docs/parity.md, "Pipeline conventions"): `prompt_embeds = cat([pad(cat([L, G], -1), joint_dim), T5],
//! dim=-2)`, T5 absent -> `zeros(B, max_sequence_length, joint_dim)`. An absent CLIP follows
//! ComfyUI's `SD3ClipModel.encode_token_weights`: its columns and its pooled part are zeros
//! (CLIP-G's states start after CLIP-L's width either way); without either CLIP there are
//! no CLIP rows and the pooled vector is zeros.

use candle_core::{bail, DType, Device, Result, Tensor, D};

use super::clip::ClipOutput;
use super::types::Conditioning;

/// What replaces T5 when it is absent: zeros of this many rows.
#[derive(Debug, Clone, Copy)]
pub enum T5Part<'a> {
    /// T5 last hidden states `[batch, t5_len, joint_dim]`.
    States(&'a Tensor),
    /// No T5: `[batch, len, joint_dim]` zeros.
    Zeros { len: usize },
}

/// The widths and type of the conditioning, for the zeros of absent encoders.
#[derive(Debug, Clone)]
pub struct Layout {
    /// CLIP-L's hidden width: where CLIP-G's columns start.
    pub clip_l_width: usize,
    /// CLIP-L's and CLIP-G's pooled widths.
    pub pooled_l: usize,
    pub pooled_g: usize,
    /// Width of the context rows.
    pub joint_dim: usize,
    pub dtype: DType,
    pub device: Device,
}

/// Assembles the [`Conditioning`] the MMDiT reads, `context` `[batch, 77 + t5_len, joint_dim]`
/// (T5's rows alone without either CLIP) and `pooled` `[batch, pooled_l + pooled_g]`.
pub fn assemble(
    clip_l: Option<&ClipOutput>,
    clip_g: Option<&ClipOutput>,
    t5: T5Part,
    layout: &Layout,
) -> Result<Conditioning> {
    let joint_dim = layout.joint_dim;
    let batch = match (clip_l, clip_g, t5) {
        (Some(c), _, _) | (None, Some(c), _) => c.pooled.dim(0)?,
        (None, None, T5Part::States(states)) => states.dim(0)?,
        (None, None, T5Part::Zeros { .. }) => 1,
    };
    let zeros = |shape: &[usize]| Tensor::zeros(shape, layout.dtype, &layout.device);
    let clip = match (clip_l, clip_g) {
        (None, None) => None,
        (Some(l), None) => Some(l.penultimate.clone()),
        (l, Some(g)) => {
            let l = match l {
                Some(l) => l.penultimate.clone(),
                None => zeros(&[batch, g.penultimate.dim(1)?, layout.clip_l_width])?,
            };
            Some(Tensor::cat(&[&l, &g.penultimate], D::Minus1)?)
        }
    };
    let clip = match clip {
        Some(clip) => {
            let width = clip.dim(D::Minus1)?;
            if width > joint_dim {
                // torch's F.pad with a negative pad would silently crop (docs/parity.md, "Tiny fixtures").
                bail!("CLIP width {width} exceeds the joint width {joint_dim}")
            }
            Some(clip.pad_with_zeros(D::Minus1, 0, joint_dim - width)?)
        }
        None => None,
    };
    let t5 = match t5 {
        T5Part::States(states) => {
            if states.dim(D::Minus1)? != joint_dim {
                bail!(
                    "T5 width {} is not the joint width {joint_dim}",
                    states.dim(D::Minus1)?
                )
            }
            states.clone()
        }
        T5Part::Zeros { len } => zeros(&[batch, len, joint_dim])?,
    };
    let context = match clip {
        Some(clip) => Tensor::cat(&[&clip, &t5], 1)?,
        None => t5,
    };
    let pooled = |c: Option<&ClipOutput>, width: usize| match c {
        Some(c) => Ok(c.pooled.clone()),
        None => zeros(&[batch, width]),
    };
    Ok(Conditioning {
        context,
        pooled: Tensor::cat(
            &[
                &pooled(clip_l, layout.pooled_l)?,
                &pooled(clip_g, layout.pooled_g)?,
            ],
            D::Minus1,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;

    fn clip(width: usize, value: f32) -> ClipOutput {
        let t = Tensor::full(value, (1, 77, width), &Device::Cpu).unwrap();
        ClipOutput {
            penultimate: t.clone(),
            last_hidden: t,
            pooled: Tensor::full(value, (1, width), &Device::Cpu).unwrap(),
        }
    }

    fn layout(joint_dim: usize) -> Layout {
        Layout {
            clip_l_width: 2,
            pooled_l: 2,
            pooled_g: 3,
            joint_dim,
            dtype: DType::F32,
            device: Device::Cpu,
        }
    }

    fn row(t: &Tensor, index: usize) -> Vec<f32> {
        t.get(0).unwrap().get(index).unwrap().to_vec1().unwrap()
    }

    #[test]
    fn lays_out_clip_then_padding_then_t5() {
        let (l, g) = (clip(2, 1.0), clip(3, 2.0));
        let t5 = Tensor::full(5f32, (1, 4, 8), &Device::Cpu).unwrap();
        let c = assemble(Some(&l), Some(&g), T5Part::States(&t5), &layout(8)).unwrap();
        assert_eq!(c.context.dims(), &[1, 81, 8]);
        assert_eq!(row(&c.context, 0), [1.0, 1.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0]);
        assert_eq!(row(&c.context, 80), [5.0; 8]);
        assert_eq!(
            c.pooled.to_vec2::<f32>().unwrap(),
            [[1.0, 1.0, 2.0, 2.0, 2.0]]
        );
        let zeros = assemble(Some(&l), Some(&g), T5Part::Zeros { len: 3 }, &layout(8)).unwrap();
        assert_eq!(zeros.context.dims(), &[1, 80, 8]);
        let sum = zeros.context.narrow(1, 77, 3).unwrap().sum_all().unwrap();
        assert_eq!(sum.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn an_absent_clip_leaves_zeros_as_comfyui() {
        let (l, g) = (clip(2, 1.0), clip(3, 2.0));
        let t5 = Tensor::full(5f32, (1, 4, 8), &Device::Cpu).unwrap();
        let only_g = assemble(None, Some(&g), T5Part::States(&t5), &layout(8)).unwrap();
        assert_eq!(only_g.context.dims(), &[1, 81, 8]);
        assert_eq!(
            row(&only_g.context, 0),
            [0.0, 0.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(
            only_g.pooled.to_vec2::<f32>().unwrap(),
            [[0.0, 0.0, 2.0, 2.0, 2.0]]
        );
        let only_l = assemble(Some(&l), None, T5Part::Zeros { len: 3 }, &layout(8)).unwrap();
        assert_eq!(only_l.context.dims(), &[1, 80, 8]);
        assert_eq!(
            row(&only_l.context, 0),
            [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(
            only_l.pooled.to_vec2::<f32>().unwrap(),
            [[1.0, 1.0, 0.0, 0.0, 0.0]]
        );
        let only_t5 = assemble(None, None, T5Part::States(&t5), &layout(8)).unwrap();
        assert_eq!(only_t5.context.dims(), &[1, 4, 8]);
        assert_eq!(only_t5.pooled.to_vec2::<f32>().unwrap(), [[0.0; 5]]);
        let nothing = assemble(None, None, T5Part::Zeros { len: 3 }, &layout(8)).unwrap();
        assert_eq!(nothing.context.dims(), &[1, 3, 8]);
        assert_eq!(
            nothing
                .context
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
    }

    #[test]
    fn refuses_a_joint_width_below_the_clip_width() {
        let (l, g) = (clip(2, 1.0), clip(3, 2.0));
        assert!(assemble(Some(&l), Some(&g), T5Part::Zeros { len: 1 }, &layout(4)).is_err());
        assert!(assemble(None, Some(&g), T5Part::Zeros { len: 1 }, &layout(4)).is_err());
    }
}
