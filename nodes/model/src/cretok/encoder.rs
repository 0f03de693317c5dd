//! One CLIP encoder as the trainer sees it: `E(P_a)` as a function of the token vector.
//!
//! docs/cretok.md speed-ups 1, 3 and 4: when the adaptive template does not name the pair, `E(P_a)`
//! is one forward (and one backward) per step on the few positions from the token on, with the
//! keys/values of `<BOS> a photo of a` computed once ([`ClipTextModel::prefix`]) and, for pooled
//! targets, no padding. When it names the pair (`{t1}`/`{t2}`), every sampled pair-order gets
//! its own row of one batched forward (rows padded to a common length after their EOS, which
//! the causal mask makes exact).

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};

use super::config::Target;
use super::prompts::{adaptive_ids, fill, names_pair, AdaptiveIds, PromptIds};
use crate::sd3::clip::{ClipPrefix, ClipTextModel};
use crate::sd3::text_encoders::{substitute_row, Sd3TextEncoders};
use crate::sd3::tokenizer::ClipTokenizer;

/// Which SD3 CLIP encoder; its key in token files (`clip_l`, `clip_g`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EncoderId {
    ClipL,
    ClipG,
}

impl EncoderId {
    pub const ALL: [EncoderId; 2] = [EncoderId::ClipL, EncoderId::ClipG];

    pub fn key(self) -> &'static str {
        match self {
            EncoderId::ClipL => "clip_l",
            EncoderId::ClipG => "clip_g",
        }
    }
}

/// A loaded CLIP encoder and its tokenizer.
#[derive(Clone, Copy)]
pub struct EncoderRef<'a> {
    pub id: EncoderId,
    pub model: &'a ClipTextModel,
    pub tokenizer: &'a ClipTokenizer,
}

impl EncoderRef<'_> {
    pub fn device(&self) -> &Device {
        self.model.token_embedding().device()
    }

    pub fn dtype(&self) -> DType {
        self.model.dtype()
    }

    /// The input embedding of a vocabulary id, `[hidden]`, as `f32`.
    pub fn row(&self, id: u32) -> Result<Vec<f32>> {
        let row = self.model.token_embedding().get(id as usize)?;
        Ok(row.to_dtype(DType::F32)?.to_vec1()?)
    }

    /// The target embedding `[batch, D]` of a forward's outputs.
    fn target_of(&self, out: &crate::sd3::clip::ClipOutput, target: Target) -> Result<Tensor> {
        Ok(match target {
            Target::Pooled => out.pooled.clone(),
            Target::Sequence => out.penultimate.flatten_from(1)?,
        })
    }

    /// Embeddings `[k, D]` of fixed prompts, without gradient, batched by length.
    pub fn encode_fixed(&self, prompts: &[PromptIds], target: Target) -> Result<Tensor> {
        let mut rows: Vec<Option<Tensor>> = vec![None; prompts.len()];
        let mut by_len: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for (i, p) in prompts.iter().enumerate() {
            by_len.entry(p.ids.len()).or_default().push(i);
        }
        for (len, members) in by_len {
            for chunk in members.chunks(32) {
                let ids: Vec<u32> = chunk.iter().flat_map(|&i| prompts[i].ids.clone()).collect();
                let ids = Tensor::from_vec(ids, (chunk.len(), len), self.device())?;
                let eos: Vec<usize> = chunk.iter().map(|&i| prompts[i].eos).collect();
                let out = self.model.forward(&self.model.embed(&ids)?, &eos)?;
                let emb = self.target_of(&out, target)?.to_dtype(DType::F32)?;
                for (k, &i) in chunk.iter().enumerate() {
                    rows[i] = Some(emb.get(k)?);
                }
            }
        }
        let rows = rows.into_iter().flatten().collect::<Vec<_>>();
        Ok(Tensor::stack(&rows, 0)?)
    }
}

/// The adaptive prompt of one encoder, prepared once.
pub enum Adaptive<'a> {
    /// `P_a` is the same for every pair.
    Shared(SharedAdaptive<'a>),
    /// `P_a` names the pair: one batched forward over the sampled pair-orders.
    PerPair(PerPairAdaptive<'a>),
}

/// The fast path: prefix keys/values and the constant embeddings after the token.
pub struct SharedAdaptive<'a> {
    enc: EncoderRef<'a>,
    target: Target,
    prefix: ClipPrefix,
    /// Penultimate rows of the prefix `[1, p, d]` (sequence targets).
    prefix_rows: Option<Tensor>,
    /// Input embeddings after the token `[1, s, d]`.
    after: Tensor,
    /// EOS position counted from the token.
    eos: usize,
}

/// The general path.
pub struct PerPairAdaptive<'a> {
    enc: EncoderRef<'a>,
    target: Target,
    template: String,
    word: String,
}

impl<'a> Adaptive<'a> {
    pub fn new(enc: EncoderRef<'a>, template: &str, word: &str, target: Target) -> Result<Self> {
        if names_pair(template) {
            // Validate once on a sample pair so errors surface before training.
            adaptive_ids(enc.tokenizer, &fill(template, "a", "b"), word, false)?;
            return Ok(Adaptive::PerPair(PerPairAdaptive {
                enc,
                target,
                template: template.to_owned(),
                word: word.to_owned(),
            }));
        }
        Self::shared(enc, template, word, target)
    }

    /// The fast path even when another would do (used by tests to compare the paths).
    pub fn shared(enc: EncoderRef<'a>, template: &str, word: &str, target: Target) -> Result<Self> {
        let padded = target == Target::Sequence;
        let AdaptiveIds { prompt, token_pos } =
            adaptive_ids(enc.tokenizer, template, word, padded)?;
        let dev = enc.device();
        let ids = Tensor::new(prompt.ids.as_slice(), dev)?.unsqueeze(0)?;
        let embeds = enc.model.embed(&ids)?;
        let head = embeds.narrow(1, 0, token_pos)?;
        let prefix = enc.model.prefix(&head)?;
        let prefix_rows = match target {
            Target::Sequence => Some(enc.model.forward(&head, &[token_pos - 1])?.penultimate),
            Target::Pooled => None,
        };
        let after = embeds.narrow(1, token_pos + 1, prompt.ids.len() - token_pos - 1)?;
        Ok(Adaptive::Shared(SharedAdaptive {
            enc,
            target,
            prefix,
            prefix_rows,
            after,
            eos: prompt.eos - token_pos,
        }))
    }

    /// The general path even for a shared template (used by tests to compare the paths).
    pub fn per_pair(enc: EncoderRef<'a>, template: &str, word: &str, target: Target) -> Self {
        Adaptive::PerPair(PerPairAdaptive {
            enc,
            target,
            template: template.to_owned(),
            word: word.to_owned(),
        })
    }

    /// `E(P_a)` with `token` `[hidden]` (model dtype, may track gradients) in the token's row:
    /// `[1, D]` on the shared path, else one row per `(t1, t2)` in `pairs`.
    pub fn embed(&self, token: &Tensor, pairs: &[(&str, &str)]) -> Result<Tensor> {
        match self {
            Adaptive::Shared(s) => s.embed(token),
            Adaptive::PerPair(p) => p.embed(token, pairs),
        }
    }
}

impl SharedAdaptive<'_> {
    fn embed(&self, token: &Tensor) -> Result<Tensor> {
        let hidden = self.after.dim(2)?;
        let row = token.reshape((1, 1, hidden))?;
        let inputs = Tensor::cat(&[&row, &self.after], 1)?;
        let out = self
            .enc
            .model
            .forward_after(&self.prefix, &inputs, &[self.eos])?;
        let out = match &self.prefix_rows {
            Some(rows) => crate::sd3::clip::ClipOutput {
                penultimate: Tensor::cat(&[rows, &out.penultimate], 1)?,
                ..out
            },
            None => out,
        };
        self.enc
            .target_of(&out, self.target)
            .context("adaptive embedding")
    }
}

impl PerPairAdaptive<'_> {
    fn embed(&self, token: &Tensor, pairs: &[(&str, &str)]) -> Result<Tensor> {
        let padded = self.target == Target::Sequence;
        let prompts = pairs
            .iter()
            .map(|(a, b)| {
                let filled = fill(&self.template, a, b);
                adaptive_ids(self.enc.tokenizer, &filled, &self.word, padded)
            })
            .collect::<Result<Vec<_>>>()?;
        let len = prompts
            .iter()
            .map(|p| p.prompt.ids.len())
            .max()
            .unwrap_or(0);
        let pad = self.enc.tokenizer.pad_id();
        let dev = self.enc.device();
        let mut rows = Vec::with_capacity(prompts.len());
        for p in &prompts {
            let mut ids = p.prompt.ids.clone();
            ids.resize(len, pad);
            let embeds = self
                .enc
                .model
                .embed(&Tensor::new(ids.as_slice(), dev)?.unsqueeze(0)?)?;
            rows.push(substitute_row(&embeds, p.token_pos, token)?);
        }
        let eos: Vec<usize> = prompts.iter().map(|p| p.prompt.eos).collect();
        let out = self.enc.model.forward(&Tensor::cat(&rows, 0)?, &eos)?;
        self.enc.target_of(&out, self.target)
    }
}

/// The CLIP encoders of SD3's text encoders that are loaded, as the trainer takes them
/// (it refuses to train on one that is not there).
pub fn encoder_refs(enc: &Sd3TextEncoders) -> Vec<EncoderRef<'_>> {
    [
        (EncoderId::ClipL, enc.clip_l(), enc.tokenizer_l()),
        (EncoderId::ClipG, enc.clip_g(), enc.tokenizer_g()),
    ]
    .into_iter()
    .filter_map(|(id, model, tokenizer)| {
        Some(EncoderRef {
            id,
            model: model.ok()?,
            tokenizer,
        })
    })
    .collect()
}
