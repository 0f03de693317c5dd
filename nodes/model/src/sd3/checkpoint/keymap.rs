//! Diffusers <-> original (single-file) key names for the SD3 transformer and VAE.
//!
//! The table maps each original tensor name to the diffusers tensor(s) it is
//! built from; loading applies it forwards, and the tiny-checkpoint writer
//! applies its inverse, so one table serves both directions.
//!
//! Reference: diffusers 0.42.1 `loaders/single_file_utils.py`
//! (`convert_sd3_transformer_checkpoint_to_diffusers`: qkv `chunk(3)`,
//! `swap_scale_shift` for `norm_out` and the last `norm1_context`;
//! `convert_ldm_vae_checkpoint`: reversed up blocks, 1x1-conv attention);
//! docs/parity.md, "Checkpoint keys".

use candle_core::{Result, Tensor};

/// How one original tensor is assembled from diffusers tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Same tensor under another name.
    Rename(String),
    /// Concatenation along dim 0 (fused q/k/v).
    Concat(Vec<String>),
    /// The two halves along dim 0 swapped (adaLN `scale, shift` <-> `shift, scale`).
    SwapHalves(String),
    /// A `[c, c]` linear weight that is a `[c, c, 1, 1]` conv in the original.
    LinearAsConv(String),
}

impl Source {
    /// The diffusers names this source reads.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Self::Rename(n) | Self::SwapHalves(n) | Self::LinearAsConv(n) => vec![n],
            Self::Concat(ns) => ns.iter().map(String::as_str).collect(),
        }
    }

    /// Builds the original tensor from the loaded diffusers ones (in `names()` order).
    pub fn assemble(&self, parts: &[Tensor]) -> Result<Tensor> {
        match self {
            Self::Rename(_) => Ok(parts[0].clone()),
            Self::Concat(_) => Tensor::cat(parts, 0),
            Self::SwapHalves(_) => swap_halves(&parts[0]),
            Self::LinearAsConv(_) => {
                let (o, i) = parts[0].dims2()?;
                parts[0].reshape((o, i, 1, 1))
            }
        }
    }

    /// The inverse: the diffusers tensors for one original tensor.
    pub fn disassemble(&self, original: &Tensor) -> Result<Vec<(String, Tensor)>> {
        Ok(match self {
            Self::Rename(n) => vec![(n.clone(), original.clone())],
            Self::Concat(ns) => {
                let parts = original.chunk(ns.len(), 0)?;
                ns.iter().cloned().zip(parts).collect()
            }
            Self::SwapHalves(n) => vec![(n.clone(), swap_halves(original)?)],
            Self::LinearAsConv(n) => vec![(n.clone(), original.flatten_from(1)?)],
        })
    }
}

fn swap_halves(t: &Tensor) -> Result<Tensor> {
    let half = t.dim(0)? / 2;
    Tensor::cat(&[t.narrow(0, half, half)?, t.narrow(0, 0, half)?], 0)
}

/// Splits `name` into (`stem`, `.weight`/`.bias` suffix).
fn split_param(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, ""),
    }
}

/// Maps original MMDiT names (relative to `model.diffusion_model.`) to
/// diffusers `transformer/` names. `depth` is the number of joint blocks.
pub fn transformer_source(name: &str, depth: usize) -> Option<Source> {
    let (stem, param) = split_param(name);
    let rename = |s: &str| Some(Source::Rename(format!("{s}{param}")));
    match stem {
        "pos_embed" if param.is_empty() => {
            return Some(Source::Rename("pos_embed.pos_embed".into()))
        }
        "x_embedder.proj" => return rename("pos_embed.proj"),
        "t_embedder.mlp.0" => return rename("time_text_embed.timestep_embedder.linear_1"),
        "t_embedder.mlp.2" => return rename("time_text_embed.timestep_embedder.linear_2"),
        "y_embedder.mlp.0" => return rename("time_text_embed.text_embedder.linear_1"),
        "y_embedder.mlp.2" => return rename("time_text_embed.text_embedder.linear_2"),
        "context_embedder" => return rename("context_embedder"),
        "final_layer.linear" => return rename("proj_out"),
        "final_layer.adaLN_modulation.1" => {
            return Some(Source::SwapHalves(format!("norm_out.linear{param}")))
        }
        _ => {}
    }
    let rest = stem.strip_prefix("joint_blocks.")?;
    let (index, inner) = rest.split_once('.')?;
    let block: usize = index.parse().ok()?;
    let b = format!("transformer_blocks.{block}");
    let qkv = |names: [&str; 3]| {
        Some(Source::Concat(
            names.iter().map(|n| format!("{b}.{n}{param}")).collect(),
        ))
    };
    let rename = |s: &str| Some(Source::Rename(format!("{b}.{s}{param}")));
    match inner {
        "x_block.attn.qkv" => qkv(["attn.to_q", "attn.to_k", "attn.to_v"]),
        "context_block.attn.qkv" => qkv(["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"]),
        "x_block.attn2.qkv" => qkv(["attn2.to_q", "attn2.to_k", "attn2.to_v"]),
        "x_block.attn.proj" => rename("attn.to_out.0"),
        "context_block.attn.proj" => rename("attn.to_add_out"),
        "x_block.attn2.proj" => rename("attn2.to_out.0"),
        "x_block.attn.ln_q" => rename("attn.norm_q"),
        "x_block.attn.ln_k" => rename("attn.norm_k"),
        "context_block.attn.ln_q" => rename("attn.norm_added_q"),
        "context_block.attn.ln_k" => rename("attn.norm_added_k"),
        "x_block.attn2.ln_q" => rename("attn2.norm_q"),
        "x_block.attn2.ln_k" => rename("attn2.norm_k"),
        "x_block.adaLN_modulation.1" => rename("norm1.linear"),
        "context_block.adaLN_modulation.1" if block + 1 == depth => Some(Source::SwapHalves(
            format!("{b}.norm1_context.linear{param}"),
        )),
        "context_block.adaLN_modulation.1" => rename("norm1_context.linear"),
        "x_block.mlp.fc1" => rename("ff.net.0.proj"),
        "x_block.mlp.fc2" => rename("ff.net.2"),
        "context_block.mlp.fc1" => rename("ff_context.net.0.proj"),
        "context_block.mlp.fc2" => rename("ff_context.net.2"),
        _ => None,
    }
}

/// Maps original VAE names (relative to `first_stage_model.`) to diffusers
/// `vae/` names. `levels` is the number of resolution levels (4 for SD3).
pub fn vae_source(name: &str, levels: usize) -> Option<Source> {
    let (stem, param) = split_param(name);
    let (part, rest) = stem.split_once('.')?;
    if part != "encoder" && part != "decoder" {
        return None;
    }
    let rename = |s: String| Some(Source::Rename(format!("{part}.{s}{param}")));
    match rest {
        "conv_in" | "conv_out" => return rename(rest.to_string()),
        "norm_out" => return rename("conv_norm_out".to_string()),
        _ => {}
    }
    if let Some(mid) = rest.strip_prefix("mid.") {
        let (item, layer) = mid.split_once('.').unwrap_or((mid, ""));
        return match item {
            "block_1" => rename(format!("mid_block.resnets.0.{}", resnet_layer(layer)?)),
            "block_2" => rename(format!("mid_block.resnets.1.{}", resnet_layer(layer)?)),
            "attn_1" => {
                let target = match layer {
                    "norm" => return rename("mid_block.attentions.0.group_norm".into()),
                    "q" => "to_q",
                    "k" => "to_k",
                    "v" => "to_v",
                    "proj_out" => "to_out.0",
                    _ => return None,
                };
                let full = format!("{part}.mid_block.attentions.0.{target}{param}");
                Some(if param == ".weight" {
                    Source::LinearAsConv(full)
                } else {
                    Source::Rename(full)
                })
            }
            _ => None,
        };
    }
    let (kind, rest) = rest.split_once('.')?;
    let (level, rest) = rest.split_once('.')?;
    let level: usize = level.parse().ok()?;
    let (blocks, level) = match kind {
        "down" if part == "encoder" => ("down_blocks", level),
        "up" if part == "decoder" && level < levels => ("up_blocks", levels - 1 - level),
        _ => return None,
    };
    let b = format!("{blocks}.{level}");
    match rest.split_once('.')? {
        ("block", rest) => {
            let (j, layer) = rest.split_once('.')?;
            rename(format!("{b}.resnets.{j}.{}", resnet_layer(layer)?))
        }
        ("downsample", "conv") => rename(format!("{b}.downsamplers.0.conv")),
        ("upsample", "conv") => rename(format!("{b}.upsamplers.0.conv")),
        _ => None,
    }
}

fn resnet_layer(layer: &str) -> Option<&str> {
    match layer {
        "norm1" | "conv1" | "norm2" | "conv2" => Some(layer),
        "nin_shortcut" => Some("conv_shortcut"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn transformer_names_follow_diffusers() {
        let src = |n: &str| transformer_source(n, 2).unwrap();
        assert_eq!(
            src("pos_embed"),
            Source::Rename("pos_embed.pos_embed".into())
        );
        assert_eq!(
            src("joint_blocks.0.context_block.attn.qkv.bias"),
            Source::Concat(vec![
                "transformer_blocks.0.attn.add_q_proj.bias".into(),
                "transformer_blocks.0.attn.add_k_proj.bias".into(),
                "transformer_blocks.0.attn.add_v_proj.bias".into(),
            ])
        );
        assert_eq!(
            src("joint_blocks.0.context_block.adaLN_modulation.1.weight"),
            Source::Rename("transformer_blocks.0.norm1_context.linear.weight".into())
        );
        assert_eq!(
            src("joint_blocks.1.context_block.adaLN_modulation.1.weight"),
            Source::SwapHalves("transformer_blocks.1.norm1_context.linear.weight".into())
        );
        assert_eq!(
            src("final_layer.adaLN_modulation.1.bias"),
            Source::SwapHalves("norm_out.linear.bias".into())
        );
        assert_eq!(
            transformer_source("joint_blocks.0.x_block.bogus.weight", 2),
            None
        );
    }

    #[test]
    fn vae_names_reverse_up_blocks_and_reshape_attention() {
        let src = |n: &str| vae_source(n, 4).unwrap();
        assert_eq!(
            src("decoder.up.3.block.0.nin_shortcut.weight"),
            Source::Rename("decoder.up_blocks.0.resnets.0.conv_shortcut.weight".into())
        );
        assert_eq!(
            src("decoder.up.1.upsample.conv.bias"),
            Source::Rename("decoder.up_blocks.2.upsamplers.0.conv.bias".into())
        );
        assert_eq!(
            src("encoder.mid.attn_1.proj_out.weight"),
            Source::LinearAsConv("encoder.mid_block.attentions.0.to_out.0.weight".into())
        );
        assert_eq!(
            src("encoder.norm_out.bias"),
            Source::Rename("encoder.conv_norm_out.bias".into())
        );
    }

    #[test]
    fn assemble_inverts_disassemble() -> Result<()> {
        let t = Tensor::arange(0f32, 12.0, &Device::Cpu)?.reshape((6, 2))?;
        let sources = [
            Source::Concat(vec!["a".into(), "b".into(), "c".into()]),
            Source::SwapHalves("a".into()),
        ];
        for source in sources {
            let parts = source.disassemble(&t)?;
            let tensors: Vec<Tensor> = parts.into_iter().map(|(_, t)| t).collect();
            let back = source.assemble(&tensors)?;
            assert_eq!(back.to_vec2::<f32>()?, t.to_vec2::<f32>()?);
        }
        let swapped = Source::SwapHalves("a".into()).disassemble(&t)?;
        assert_eq!(swapped[0].1.to_vec2::<f32>()?[0], vec![6.0, 7.0]);
        Ok(())
    }
}
