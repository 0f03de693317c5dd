//! The CLIP text transformer, fed with input embeddings so that one embedding row can be
//! optimised (CreTok) while every weight stays frozen.
//!
//! Reference: transformers `models/clip/modeling_clip.py` (v5.23): `CLIPTextEmbeddings`
//! (token + absolute position embeddings), `CLIPTextTransformer` (causal mask, no padding mask,
//! `final_layer_norm`, pooled state at the first EOS), `CLIPTextModelWithProjection`
//! (`text_projection`, no bias). SD3 reads `hidden_states[-2]` (docs/parity.md, "Pipeline conventions").

use candle_core::{bail, DType, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::config::ClipConfig;
use super::grad::InputGrads;
use super::layers::{ClipEncoderLayer, LayerKv};
use super::ops::{causal_mask, LayerNorm, Linear};

/// What SD3 and the CreTok trainer read from a CLIP text encoder, for the positions passed in.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    /// `hidden_states[-2]`: the input of the last layer, `[batch, seq, hidden]` (SD3's context).
    pub penultimate: Tensor,
    /// `final_layer_norm` of the last layer, `[batch, seq, hidden]`.
    pub last_hidden: Tensor,
    /// `text_projection(last_hidden[eos])`, `[batch, projection_dim]`; the unprojected EOS
    /// state `[batch, hidden]` when the checkpoint has no projection (SD3's CLIP-L).
    pub pooled: Tensor,
}

/// Per-layer keys and values of a fixed leading run of tokens (e.g. `<BOS> a photo of a`),
/// computed once by [`ClipTextModel::prefix`] and reused by [`ClipTextModel::forward_after`]:
/// with a causal mask those positions never depend on what follows (docs/cretok.md speed-up 4).
#[derive(Debug, Clone)]
pub struct ClipPrefix {
    layers: Vec<LayerKv>,
    len: usize,
    penultimate: Tensor,
    last_hidden: Tensor,
}

impl ClipPrefix {
    /// Number of positions the prefix covers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The prefix rows of [`ClipOutput::penultimate`], `[1, len, hidden]` (for objectives on
    /// the whole sequence: concatenate them before the rows of [`ClipTextModel::forward_after`]).
    pub fn penultimate(&self) -> &Tensor {
        &self.penultimate
    }

    /// The prefix rows of [`ClipOutput::last_hidden`], `[1, len, hidden]`.
    pub fn last_hidden(&self) -> &Tensor {
        &self.last_hidden
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `text_model.embeddings`.
#[derive(Debug, Clone)]
struct ClipTextEmbeddings {
    token_embedding: Embedding,
    position_embedding: Tensor,
}

impl ClipTextEmbeddings {
    fn new(cfg: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        let token_embedding = crate::sd3::precision::stored_embedding(
            cfg.vocab_size,
            cfg.hidden_size,
            vb.pp("token_embedding"),
        )?;
        let position_embedding = vb.get(
            (cfg.max_position_embeddings, cfg.hidden_size),
            "position_embedding.weight",
        )?;
        Ok(Self {
            token_embedding,
            position_embedding,
        })
    }

    /// Adds the position embeddings of `offset..offset + seq` to input embeddings `[b, seq, d]`.
    fn with_positions(&self, inputs_embeds: &Tensor, offset: usize) -> Result<Tensor> {
        let seq = inputs_embeds.dim(1)?;
        let max = self.position_embedding.dim(0)?;
        if offset + seq > max {
            bail!("CLIP sequence of {} positions exceeds {max}", offset + seq)
        }
        inputs_embeds.broadcast_add(&self.position_embedding.narrow(0, offset, seq)?)
    }
}

/// A CLIP text encoder (`CLIPTextModel` or `CLIPTextModelWithProjection` weights).
#[derive(Debug, Clone)]
pub struct ClipTextModel {
    embeddings: ClipTextEmbeddings,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
    text_projection: Option<Linear>,
    dtype: DType,
}

impl ClipTextModel {
    /// Loads from `vb` at the model root: `text_model.*` plus, when present,
    /// `text_projection.weight` (SD3 single files carry none for CLIP-L). For a single-file
    /// checkpoint pass `vb.pp("text_encoders.clip_l.transformer")`; for a diffusers folder the
    /// `text_encoder/` weights directly.
    pub fn new(cfg: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.num_hidden_layers < 2 {
            bail!("SD3 reads the penultimate CLIP layer: at least 2 layers are needed")
        }
        let text_projection = if vb.contains_tensor("text_projection.weight") {
            let (d, p) = (cfg.hidden_size, cfg.projection_dim);
            Some(Linear::new(d, p, false, vb.pp("text_projection"))?)
        } else {
            None
        };
        let tm = vb.pp("text_model");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ClipEncoderLayer::new(cfg, tm.pp(format!("encoder.layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: ClipTextEmbeddings::new(cfg, tm.pp("embeddings"))?,
            layers,
            final_layer_norm: LayerNorm::new(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                tm.pp("final_layer_norm"),
            )?,
            text_projection,
            dtype: vb.dtype(),
        })
    }

    /// The model with its input gradients taken as `grads` says (default: [`InputGrads::Custom`]).
    pub fn with_input_grads(mut self, grads: InputGrads) -> Self {
        for layer in &mut self.layers {
            layer.set_input_grads(grads);
        }
        self.final_layer_norm.set_input_grads(grads);
        if let Some(projection) = &mut self.text_projection {
            projection.set_input_grads(grads);
        }
        self
    }

    /// Whether the checkpoint had a `text_projection`.
    pub fn has_projection(&self) -> bool {
        self.text_projection.is_some()
    }

    /// The token-embedding table `[vocab, hidden]`, in the precision it is stored in (f16 in
    /// SD3's checkpoints) on the CPU.
    pub fn token_embedding(&self) -> &Tensor {
        self.embeddings.token_embedding.embeddings()
    }

    /// The dtype the encoder computes in (its input embeddings' dtype).
    pub fn dtype(&self) -> DType {
        self.embeddings.position_embedding.dtype()
    }

    /// Input embeddings `[batch, seq, hidden]` of token ids `[batch, seq]` (no positions).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embeddings
            .token_embedding
            .forward(ids)?
            .to_dtype(self.dtype())
    }

    /// Runs ids `[batch, seq]`; the pooled state is taken at each row's first `eos_id`
    /// (transformers' rule for `eos_token_id` != 2).
    pub fn forward_ids(&self, ids: &Tensor, eos_id: u32) -> Result<ClipOutput> {
        let eos_positions = ids
            .to_vec2::<u32>()?
            .iter()
            .map(|row| match row.iter().position(|&t| t == eos_id) {
                Some(p) => Ok(p),
                None => bail!("CLIP ids without an EOS ({eos_id})"),
            })
            .collect::<Result<Vec<_>>>()?;
        self.forward(&self.embed(ids)?, &eos_positions)
    }

    /// Runs input embeddings `[batch, seq, hidden]` (token embeddings, positions are added
    /// here); `eos_positions[b]` is the row whose state is pooled. Differentiable w.r.t.
    /// `inputs_embeds`.
    pub fn forward(&self, inputs_embeds: &Tensor, eos_positions: &[usize]) -> Result<ClipOutput> {
        self.run(inputs_embeds, None, eos_positions)
    }

    /// Runs a fixed leading run of input embeddings `[1, p, hidden]` once and keeps its
    /// per-layer keys and values.
    pub fn prefix(&self, inputs_embeds: &Tensor) -> Result<ClipPrefix> {
        let len = inputs_embeds.dim(1)?;
        let mut xs = self.embeddings.with_positions(inputs_embeds, 0)?;
        let mask = causal_mask(len, 0, self.dtype, xs.device())?;
        let mut layers = Vec::with_capacity(self.layers.len());
        let mut penultimate = xs.clone();
        for layer in &self.layers {
            penultimate = xs.clone();
            let (out, kv) = layer.forward(&xs, None, &mask)?;
            layers.push(kv);
            xs = out;
        }
        Ok(ClipPrefix {
            layers,
            len,
            penultimate,
            last_hidden: xs.apply(&self.final_layer_norm)?,
        })
    }

    /// Runs the positions after `prefix`: `inputs_embeds` `[batch, seq, hidden]` sit at
    /// positions `prefix.len()..`; the outputs cover these positions only, and
    /// `eos_positions` count from the first of them. Equals running the whole sequence.
    pub fn forward_after(
        &self,
        prefix: &ClipPrefix,
        inputs_embeds: &Tensor,
        eos_positions: &[usize],
    ) -> Result<ClipOutput> {
        self.run(inputs_embeds, Some(prefix), eos_positions)
    }

    fn run(
        &self,
        inputs_embeds: &Tensor,
        prefix: Option<&ClipPrefix>,
        eos_positions: &[usize],
    ) -> Result<ClipOutput> {
        let (batch, seq, _) = inputs_embeds.dims3()?;
        if eos_positions.len() != batch || eos_positions.iter().any(|&p| p >= seq) {
            bail!("need one EOS position below {seq} per batch row, got {eos_positions:?}")
        }
        let offset = prefix.map_or(0, ClipPrefix::len);
        let mask = causal_mask(seq, offset, self.dtype, inputs_embeds.device())?;
        let mut xs = self.embeddings.with_positions(inputs_embeds, offset)?;
        let (last_layer, body) = match self.layers.split_last() {
            Some(split) => split,
            None => bail!("CLIP without layers"),
        };
        for (i, layer) in body.iter().enumerate() {
            xs = layer.forward(&xs, prefix.map(|p| &p.layers[i]), &mask)?.0;
        }
        let penultimate = xs.clone();
        let past = prefix.map(|p| &p.layers[body.len()]);
        let xs = last_layer.forward(&xs, past, &mask)?.0;
        let last_hidden = xs.apply(&self.final_layer_norm)?;
        let eos_rows = eos_positions
            .iter()
            .enumerate()
            .map(|(b, &p)| last_hidden.narrow(0, b, 1)?.narrow(1, p, 1))
            .collect::<Result<Vec<_>>>()?;
        let eos = Tensor::cat(&eos_rows, 0)?.squeeze(1)?;
        let pooled = match &self.text_projection {
            Some(projection) => eos.apply(projection)?,
            None => eos,
        };
        Ok(ClipOutput {
            penultimate,
            last_hidden,
            pooled,
        })
    }
}
