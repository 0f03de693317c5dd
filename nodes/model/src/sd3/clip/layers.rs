//! One CLIP encoder layer: pre-LN causal self-attention and MLP, each with a residual.
//!
//! Reference: transformers `models/clip/modeling_clip.py` (v5.23), `CLIPEncoderLayer`,
//! `CLIPAttention` (queries scaled by `head_dim^-0.5`, causal additive mask, no padding mask),
//! `CLIPMLP` (`fc1` -> activation -> `fc2`).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::{Activation, ClipConfig};
use super::grad::InputGrads;
use super::ops::{softmax_last_dim, LayerNorm, Linear};

/// One layer's keys and values, `[batch, heads, positions, head_dim]`: what a later call needs
/// to attend to these positions without recomputing them.
#[derive(Debug, Clone)]
pub struct LayerKv {
    pub k: Tensor,
    pub v: Tensor,
}

#[derive(Debug, Clone)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
    scale: f64,
    grads: InputGrads,
}

impl ClipAttention {
    fn new(cfg: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(Self {
            q_proj: Linear::new(d, d, true, vb.pp("q_proj"))?,
            k_proj: Linear::new(d, d, true, vb.pp("k_proj"))?,
            v_proj: Linear::new(d, d, true, vb.pp("v_proj"))?,
            out_proj: Linear::new(d, d, true, vb.pp("out_proj"))?,
            num_heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            scale: (cfg.head_dim() as f64).powf(-0.5),
            grads: InputGrads::default(),
        })
    }

    fn set_input_grads(&mut self, grads: InputGrads) {
        for proj in [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.out_proj,
        ] {
            proj.set_input_grads(grads);
        }
        self.grads = grads;
    }

    /// `[b, s, d]` -> `[b, heads, s, head_dim]`.
    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, s, _) = xs.dims3()?;
        xs.reshape((b, s, self.num_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Attends `xs` to `past` (earlier positions, batch 1 or `b`) and to itself under `mask`.
    /// Returns the output and this call's own keys and values.
    fn forward(
        &self,
        xs: &Tensor,
        past: Option<&LayerKv>,
        mask: &Tensor,
    ) -> Result<(Tensor, LayerKv)> {
        let (b, s, d) = xs.dims3()?;
        let q = self.split_heads(&(self.q_proj.forward(xs)? * self.scale)?)?;
        let own = LayerKv {
            k: self.split_heads(&self.k_proj.forward(xs)?)?,
            v: self.split_heads(&self.v_proj.forward(xs)?)?,
        };
        let (k, v) = match past {
            None => (own.k.clone(), own.v.clone()),
            Some(past) => {
                let (_, h, p, hd) = past.k.dims4()?;
                let k_past = past.k.broadcast_as((b, h, p, hd))?;
                let v_past = past.v.broadcast_as((b, h, p, hd))?;
                (
                    Tensor::cat(&[&k_past, &own.k], 2)?.contiguous()?,
                    Tensor::cat(&[&v_past, &own.v], 2)?.contiguous()?,
                )
            }
        };
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let attn = softmax_last_dim(&scores, self.grads)?.matmul(&v)?;
        let attn = attn.transpose(1, 2)?.reshape((b, s, d))?;
        Ok((self.out_proj.forward(&attn)?, own))
    }
}

#[derive(Debug, Clone)]
struct ClipMlp {
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl ClipMlp {
    fn new(cfg: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(cfg.hidden_size, cfg.intermediate_size, true, vb.pp("fc1"))?,
            fc2: Linear::new(cfg.intermediate_size, cfg.hidden_size, true, vb.pp("fc2"))?,
            activation: cfg.activation,
        })
    }

    fn set_input_grads(&mut self, grads: InputGrads) {
        self.fc1.set_input_grads(grads);
        self.fc2.set_input_grads(grads);
    }
}

impl Module for ClipMlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.apply(&self.fc1)?
            .apply(&self.activation)?
            .apply(&self.fc2)
    }
}

/// `text_model.encoder.layers.N`.
#[derive(Debug, Clone)]
pub struct ClipEncoderLayer {
    self_attn: ClipAttention,
    layer_norm1: LayerNorm,
    mlp: ClipMlp,
    layer_norm2: LayerNorm,
    span: tracing::Span,
}

impl ClipEncoderLayer {
    pub fn new(cfg: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        let (d, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        Ok(Self {
            self_attn: ClipAttention::new(cfg, vb.pp("self_attn"))?,
            layer_norm1: LayerNorm::new(d, eps, vb.pp("layer_norm1"))?,
            mlp: ClipMlp::new(cfg, vb.pp("mlp"))?,
            layer_norm2: LayerNorm::new(d, eps, vb.pp("layer_norm2"))?,
            span: tracing::trace_span!("clip-layer"),
        })
    }

    pub fn set_input_grads(&mut self, grads: InputGrads) {
        self.self_attn.set_input_grads(grads);
        self.layer_norm1.set_input_grads(grads);
        self.mlp.set_input_grads(grads);
        self.layer_norm2.set_input_grads(grads);
    }

    /// The layer's output for `xs` `[b, s, d]`, and the keys/values of these positions.
    pub fn forward(
        &self,
        xs: &Tensor,
        past: Option<&LayerKv>,
        mask: &Tensor,
    ) -> Result<(Tensor, LayerKv)> {
        let _enter = self.span.enter();
        let (attn, kv) = self
            .self_attn
            .forward(&xs.apply(&self.layer_norm1)?, past, mask)?;
        let xs = (xs + attn)?;
        let mlp = xs.apply(&self.layer_norm2)?.apply(&self.mlp)?;
        Ok(((xs + mlp)?, kv))
    }
}
