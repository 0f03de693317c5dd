//! SD3's three text encoders behind one prompt -> [`Conditioning`] call, with a lower-level
//! path (tokens -> input embeddings -> edit a row -> encode) for the CreTok token.
//!
//! Reference: diffusers `StableDiffusion3Pipeline.encode_prompt` (v0.42.1; docs/parity.md, "Pipeline conventions").
//! Each CLIP runs on its own 77 ids (CLIP-L padded with EOS, CLIP-G with 0); T5 runs on
//! `t5_len` ids or is replaced by zeros when absent. Any encoder may be absent (ComfyUI's
//! `CLIPLoader` loads one file): see [`super::conditioning`] for what takes its place.

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::clip::{ClipConfig, ClipTextModel};
use super::conditioning::{assemble, Layout, T5Part};
use super::t5::{t5_tiny, t5_xxl, T5Config, T5Encoder};
use super::tokenizer::{ClipTokenizer, T5Tokenizer, CLIP_EOS, T5_EOS};
use super::types::Conditioning;

/// Shapes and settings of the SD3 text side.
#[derive(Debug, Clone)]
pub struct Sd3TextConfig {
    pub clip_l: ClipConfig,
    pub clip_g: ClipConfig,
    pub t5: T5Config,
    /// Width of the context rows (the MMDiT's `joint_attention_dim`, T5's `d_model`).
    pub joint_dim: usize,
    /// T5 rows in the context: diffusers' `max_sequence_length` (256); Stability's code uses 77.
    pub t5_len: usize,
}

impl Sd3TextConfig {
    /// SD3 / SD3.5: CLIP-L, bigG, T5-XXL, joint width 4096, T5 length 256 (diffusers).
    pub fn sd3() -> Self {
        Self {
            clip_l: ClipConfig::clip_l(),
            clip_g: ClipConfig::clip_g(),
            t5: t5_xxl(),
            joint_dim: 4096,
            t5_len: 256,
        }
    }

    /// The tiny fixtures of docs/parity.md ("Tiny fixtures") (joint width 128).
    pub fn tiny() -> Self {
        Self {
            clip_l: ClipConfig::tiny_l(),
            clip_g: ClipConfig::tiny_g(),
            t5: t5_tiny(),
            joint_dim: 128,
            t5_len: 256,
        }
    }

    /// The preset whose joint width matches an MMDiT's context width.
    pub fn for_context_width(joint_dim: usize) -> Result<Self> {
        [Self::sd3(), Self::tiny()]
            .into_iter()
            .find(|c| c.joint_dim == joint_dim)
            .with_context(|| format!("no SD3 text encoder preset has context width {joint_dim}"))
    }
}

/// Where each encoder's weights are, as transformers state dicts.
#[derive(Clone)]
pub struct EncoderVarBuilders<'a> {
    /// `None` leaves CLIP-L out (zeros in its place).
    pub clip_l: Option<VarBuilder<'a>>,
    /// `None` leaves CLIP-G out (zeros in its place).
    pub clip_g: Option<VarBuilder<'a>>,
    /// `None` drops T5 (zeros in its place).
    pub t5: Option<VarBuilder<'a>>,
}

impl<'a> EncoderVarBuilders<'a> {
    /// A single-file checkpoint: `text_encoders.{clip_l,clip_g,t5xxl}.transformer.*`; T5 when
    /// the file has its embedding (`shared.weight` or `encoder.embed_tokens.weight`).
    pub fn single_file(vb: &VarBuilder<'a>) -> Self {
        let t5 = vb.pp("text_encoders.t5xxl.transformer");
        Self {
            clip_l: Some(vb.pp("text_encoders.clip_l.transformer")),
            clip_g: Some(vb.pp("text_encoders.clip_g.transformer")),
            t5: (t5.contains_tensor("shared.weight")
                || t5.contains_tensor("encoder.embed_tokens.weight"))
            .then_some(t5),
        }
    }
}

/// One text per encoder (ComfyUI's `CLIPTextEncodeSD3` inputs).
#[derive(Debug, Clone, Copy)]
pub struct EncoderTexts<'a> {
    pub clip_l: &'a str,
    pub clip_g: &'a str,
    pub t5xxl: &'a str,
}

/// What an empty text of [`EncoderTexts`] means (ComfyUI's `empty_padding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyText {
    /// `none`: the encoder's part is left out.
    Dropped,
    /// `empty_prompt`: the encoder encodes the empty prompt.
    EmptyPrompt,
}

struct T5Branch {
    encoder: T5Encoder,
    tokenizer: T5Tokenizer,
}

/// One prompt's ids for each encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTokens {
    /// 77 ids, padded with EOS.
    pub clip_l: Vec<u32>,
    /// 77 ids, padded with 0.
    pub clip_g: Vec<u32>,
    /// `t5_len` ids when T5 is loaded.
    pub t5: Option<Vec<u32>>,
}

/// One prompt's CLIP input embeddings `[1, 77, hidden]`, to be edited and encoded; `None`
/// for a CLIP that is not loaded.
#[derive(Debug, Clone)]
pub struct PromptEmbeds {
    pub clip_l: Option<Tensor>,
    pub clip_g: Option<Tensor>,
    /// First EOS position in each CLIP's ids (where the pooled state is read).
    pub eos_l: usize,
    pub eos_g: usize,
    /// T5 ids `[1, t5_len]` when T5 is loaded.
    pub t5_ids: Option<Tensor>,
}

/// The SD3 text encoders that are loaded (at least one) and the CLIP tokenizers (always
/// there: they are built in, as in ComfyUI's `SD3Tokenizer`).
pub struct Sd3TextEncoders {
    clip_l: Option<ClipTextModel>,
    clip_g: Option<ClipTextModel>,
    tokenizer_l: ClipTokenizer,
    tokenizer_g: ClipTokenizer,
    t5: Option<T5Branch>,
    t5_len: usize,
    layout: Layout,
}

impl std::fmt::Debug for Sd3TextEncoders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sd3TextEncoders")
            .field("holds", &self.holds())
            .field("joint_dim", &self.layout.joint_dim)
            .field("t5_len", &self.t5_len)
            .finish_non_exhaustive()
    }
}

impl Sd3TextEncoders {
    /// Loads the CLIPs whose weights are given and, when both its weights and a tokenizer
    /// are given, T5; refuses to load nothing.
    pub fn new(
        cfg: &Sd3TextConfig,
        t5_tokenizer: Option<T5Tokenizer>,
        vbs: EncoderVarBuilders,
    ) -> Result<Self> {
        let t5_vb = match (&vbs.t5, &t5_tokenizer) {
            (Some(vb), Some(_)) => Some(vb),
            _ => None,
        };
        let Some(first) = [vbs.clip_l.as_ref(), vbs.clip_g.as_ref(), t5_vb]
            .into_iter()
            .flatten()
            .next()
        else {
            bail!("no text encoder to load (T5 needs its tokenizer)")
        };
        let (device, dtype) = (first.device().clone(), first.dtype());
        let clip_l = vbs
            .clip_l
            .map(|vb| ClipTextModel::new(&cfg.clip_l, vb).context("loading CLIP-L"))
            .transpose()?;
        let clip_g = vbs
            .clip_g
            .map(|vb| ClipTextModel::new(&cfg.clip_g, vb).context("loading CLIP-G"))
            .transpose()?;
        let t5 = match (vbs.t5, t5_tokenizer) {
            (Some(vb), Some(tokenizer)) => {
                if cfg.t5.d_model != cfg.joint_dim {
                    bail!(
                        "T5 width {} is not the joint width {}",
                        cfg.t5.d_model,
                        cfg.joint_dim
                    )
                }
                let encoder = T5Encoder::new(&cfg.t5, vb).context("loading T5")?;
                Some(T5Branch { encoder, tokenizer })
            }
            _ => None,
        };
        Ok(Self {
            clip_l,
            clip_g,
            tokenizer_l: ClipTokenizer::clip_l()?,
            tokenizer_g: ClipTokenizer::clip_g()?,
            t5,
            t5_len: cfg.t5_len,
            layout: Layout {
                clip_l_width: cfg.clip_l.hidden_size,
                pooled_l: cfg.clip_l.projection_dim,
                pooled_g: cfg.clip_g.projection_dim,
                joint_dim: cfg.joint_dim,
                dtype,
                device,
            },
        })
    }

    /// What is loaded, e.g. `CLIP-L and T5` or `only T5`.
    pub fn holds(&self) -> String {
        let names: Vec<&str> = [
            (self.clip_l.is_some(), "CLIP-L"),
            (self.clip_g.is_some(), "CLIP-G"),
            (self.t5.is_some(), "T5"),
        ]
        .into_iter()
        .filter_map(|(loaded, name)| loaded.then_some(name))
        .collect();
        match names.as_slice() {
            [one] => format!("only {one}"),
            [first, second] => format!("{first} and {second}"),
            all => format!("{}, {} and {}", all[0], all[1], all[2]),
        }
    }

    /// A missing CLIP's error, for the paths that need its weights (CreTok).
    fn missing(&self, name: &str) -> anyhow::Error {
        anyhow::anyhow!("this CLIP has no {name} (it holds {})", self.holds())
    }

    /// Whether T5 runs (otherwise its rows are zeros).
    pub fn has_t5(&self) -> bool {
        self.t5.is_some()
    }

    /// CLIP-L, an error naming what is loaded when it is not.
    pub fn clip_l(&self) -> Result<&ClipTextModel> {
        self.clip_l.as_ref().ok_or_else(|| self.missing("CLIP-L"))
    }

    /// CLIP-G, an error naming what is loaded when it is not.
    pub fn clip_g(&self) -> Result<&ClipTextModel> {
        self.clip_g.as_ref().ok_or_else(|| self.missing("CLIP-G"))
    }

    pub fn tokenizer_l(&self) -> &ClipTokenizer {
        &self.tokenizer_l
    }

    pub fn tokenizer_g(&self) -> &ClipTokenizer {
        &self.tokenizer_g
    }

    /// The prompt's conditioning, as diffusers' `encode_prompt` makes it.
    pub fn encode(&self, prompt: &str) -> Result<Conditioning> {
        self.encode_embeds(&self.embed(&self.tokenize(prompt)?)?)
    }

    /// ComfyUI's `CLIPTextEncodeSD3`: each encoder reads its own text. With
    /// [`EmptyText::Dropped`] (ComfyUI's `empty_padding` `none`), empty CLIP-L and CLIP-G
    /// texts together drop the CLIP rows (the context is T5's alone, the pooled vector
    /// zeros; one empty CLIP text alone is the empty prompt, as ComfyUI pads it), and an
    /// empty T5 text gives T5 its end token only (one row). With [`EmptyText::EmptyPrompt`]
    /// every encoder encodes its text, the same text in all three being [`Self::encode`].
    /// Without T5 its rows are zeros either way. Absent CLIPs are zeros as in [`Self::encode`].
    pub fn encode_each(&self, texts: &EncoderTexts, empty: EmptyText) -> Result<Conditioning> {
        let drop = empty == EmptyText::Dropped;
        let tokens = PromptTokens {
            clip_l: self.tokenizer_l.encode(texts.clip_l)?,
            clip_g: self.tokenizer_g.encode(texts.clip_g)?,
            t5: match &self.t5 {
                Some(_) if drop && texts.t5xxl.is_empty() => Some(vec![T5_EOS]),
                Some(t5) => Some(t5.tokenizer.encode(texts.t5xxl, self.t5_len)?),
                None => None,
            },
        };
        let embeds = self.embed(&tokens)?;
        if drop && texts.clip_l.is_empty() && texts.clip_g.is_empty() {
            self.encode_t5_only(&embeds)
        } else {
            self.encode_embeds(&embeds)
        }
    }

    /// T5's rows alone (zeros without T5) and a zero pooled vector (ComfyUI's
    /// `SD3ClipModel` when neither CLIP has tokens).
    fn encode_t5_only(&self, embeds: &PromptEmbeds) -> Result<Conditioning> {
        let t5_states = self.t5_states(embeds)?;
        Ok(assemble(
            None,
            None,
            self.t5_part(&t5_states),
            &self.layout,
        )?)
    }

    fn t5_states(&self, embeds: &PromptEmbeds) -> Result<Option<Tensor>> {
        Ok(match (&self.t5, &embeds.t5_ids) {
            (Some(t5), Some(ids)) => Some(t5.encoder.forward(ids)?),
            _ => None,
        })
    }

    fn t5_part<'a>(&self, states: &'a Option<Tensor>) -> T5Part<'a> {
        match states {
            Some(states) => T5Part::States(states),
            None => T5Part::Zeros { len: self.t5_len },
        }
    }

    /// The ids each encoder sees.
    pub fn tokenize(&self, prompt: &str) -> Result<PromptTokens> {
        Ok(PromptTokens {
            clip_l: self.tokenizer_l.encode(prompt)?,
            clip_g: self.tokenizer_g.encode(prompt)?,
            t5: match &self.t5 {
                Some(t5) => Some(t5.tokenizer.encode(prompt, self.t5_len)?),
                None => None,
            },
        })
    }

    /// Looks the CLIP ids up in each loaded CLIP's token-embedding table.
    pub fn embed(&self, tokens: &PromptTokens) -> Result<PromptEmbeds> {
        let row = |ids: &[u32]| -> Result<Tensor> {
            Ok(Tensor::new(ids, &self.layout.device)?.unsqueeze(0)?)
        };
        let lookup = |clip: &Option<ClipTextModel>, ids: &[u32]| -> Result<Option<Tensor>> {
            clip.as_ref()
                .map(|model| Ok(model.embed(&row(ids)?)?))
                .transpose()
        };
        let eos = |ids: &[u32]| {
            ids.iter()
                .position(|&t| t == CLIP_EOS)
                .context("CLIP ids without an EOS")
        };
        Ok(PromptEmbeds {
            clip_l: lookup(&self.clip_l, &tokens.clip_l)?,
            clip_g: lookup(&self.clip_g, &tokens.clip_g)?,
            eos_l: eos(&tokens.clip_l)?,
            eos_g: eos(&tokens.clip_g)?,
            t5_ids: tokens.t5.as_deref().map(row).transpose()?,
        })
    }

    /// Encodes (possibly edited) input embeddings; a CLIP is encoded when it is loaded
    /// and has embeddings.
    pub fn encode_embeds(&self, embeds: &PromptEmbeds) -> Result<Conditioning> {
        let run = |clip: &Option<ClipTextModel>, embeds: &Option<Tensor>, eos: usize| match (
            clip, embeds,
        ) {
            (Some(model), Some(embeds)) => {
                Ok::<_, anyhow::Error>(Some(model.forward(embeds, &[eos])?))
            }
            _ => Ok(None),
        };
        let l = run(&self.clip_l, &embeds.clip_l, embeds.eos_l)?;
        let g = run(&self.clip_g, &embeds.clip_g, embeds.eos_g)?;
        let t5_states = self.t5_states(embeds)?;
        Ok(assemble(
            l.as_ref(),
            g.as_ref(),
            self.t5_part(&t5_states),
            &self.layout,
        )?)
    }
}

/// `embeds` `[batch, seq, hidden]` with row `position` replaced by `row` (`[hidden]`),
/// differentiable w.r.t. `row` (how a learned token enters a prompt).
pub fn substitute_row(
    embeds: &Tensor,
    position: usize,
    row: &Tensor,
) -> candle_core::Result<Tensor> {
    let (batch, seq, hidden) = embeds.dims3()?;
    if position >= seq {
        candle_core::bail!("row {position} outside a sequence of {seq}")
    }
    let row = row
        .reshape((1, 1, hidden))?
        .broadcast_as((batch, 1, hidden))?;
    let before = embeds.narrow(1, 0, position)?;
    let after = embeds.narrow(1, position + 1, seq - position - 1)?;
    Tensor::cat(&[&before, &row, &after], 1)
}
