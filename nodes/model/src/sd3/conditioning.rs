//! SD3's conditioning layout: CLIP-L ++ CLIP-G penultimate states, zero-padded to the joint
//! width, followed by the T5 states (or zeros); pooled = pooled CLIP-L ++ pooled CLIP-G.
//!
//! Reference: diffusers `StableDiffusion3Pipeline.encode_prompt` and `_get_t5_prompt_embeds`
//! (v0.42.1; docs/parity.md, "Pipeline conventions"): `prompt_embeds = cat([pad(cat([L, G], -1), joint_dim), T5],
//! dim=-2)`, T5 absent -> `zeros(B, max_sequence_length, joint_dim)`.

use candle_core::{bail, Result, Tensor, D};

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

/// Assembles the [`Conditioning`] the MMDiT reads, `context` `[batch, 77 + t5_len, joint_dim]`
/// and `pooled` `[batch, pooled_l + pooled_g]`.
pub fn assemble(
    clip_l: &ClipOutput,
    clip_g: &ClipOutput,
    t5: T5Part,
    joint_dim: usize,
) -> Result<Conditioning> {
    let clip = Tensor::cat(&[&clip_l.penultimate, &clip_g.penultimate], D::Minus1)?;
    let (batch, _, width) = clip.dims3()?;
    if width > joint_dim {
        // torch's F.pad with a negative pad would silently crop (docs/parity.md, "Tiny fixtures").
        bail!("CLIP width {width} exceeds the joint width {joint_dim}")
    }
    let clip = clip.pad_with_zeros(D::Minus1, 0, joint_dim - width)?;
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
        T5Part::Zeros { len } => {
            Tensor::zeros((batch, len, joint_dim), clip.dtype(), clip.device())?
        }
    };
    Ok(Conditioning {
        context: Tensor::cat(&[&clip, &t5], 1)?,
        pooled: Tensor::cat(&[&clip_l.pooled, &clip_g.pooled], D::Minus1)?,
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn clip(width: usize, value: f32) -> ClipOutput {
        let t = Tensor::full(value, (1, 77, width), &Device::Cpu).unwrap();
        ClipOutput {
            penultimate: t.clone(),
            last_hidden: t,
            pooled: Tensor::full(value, (1, width), &Device::Cpu).unwrap(),
        }
    }

    #[test]
    fn lays_out_clip_then_padding_then_t5() {
        let (l, g) = (clip(2, 1.0), clip(3, 2.0));
        let t5 = Tensor::full(5f32, (1, 4, 8), &Device::Cpu).unwrap();
        let c = assemble(&l, &g, T5Part::States(&t5), 8).unwrap();
        assert_eq!(c.context.dims(), &[1, 81, 8]);
        let first = c
            .context
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(first, [1.0, 1.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0]);
        let last = c
            .context
            .get(0)
            .unwrap()
            .get(80)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(last, [5.0; 8]);
        assert_eq!(
            c.pooled.to_vec2::<f32>().unwrap(),
            [[1.0, 1.0, 2.0, 2.0, 2.0]]
        );
        let zeros = assemble(&l, &g, T5Part::Zeros { len: 3 }, 8).unwrap();
        assert_eq!(zeros.context.dims(), &[1, 80, 8]);
        let sum = zeros.context.narrow(1, 77, 3).unwrap().sum_all().unwrap();
        assert_eq!(sum.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn refuses_a_joint_width_below_the_clip_width() {
        let (l, g) = (clip(2, 1.0), clip(3, 2.0));
        assert!(assemble(&l, &g, T5Part::Zeros { len: 1 }, 4).is_err());
    }
}
