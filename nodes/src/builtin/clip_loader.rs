//! ComfyUI's `CLIPLoader` and `TripleCLIPLoader`: SD3's text encoders from separate
//! files in `models/text_encoders` (or the legacy `models/clip`), each file's encoder
//! (CLIP-L, CLIP-G or T5-XXL) told by its keys, in any order. The `CLIP` they output
//! is the one `CheckpointLoaderSimple` gives, with any encoder absent as in ComfyUI's
//! `SD3ClipModel`: an absent CLIP's columns and pooled part are zeros, no CLIP at all
//! leaves T5's rows alone, and T5's rows are zeros without it.

use std::path::PathBuf;
use std::sync::Arc;

use super::loader_options::{
    file_fingerprint, model_device, t5_tokenizer, user_t5_tokenizer_path, TEXT_ENCODERS,
};
use crate::sd3::checkpoint::components::open_text_encoder;
use crate::sd3::checkpoint::{text_encoders_summary, TextEncoderKind, TextEncoderWeights};
use crate::sd3::precision::WeightDtype;
use crate::sd3::text_encoders::{EncoderVarBuilders, Sd3TextConfig, Sd3TextEncoders};
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    Paths, RunContext, Value,
};

/// Where ComfyUI looks for text encoders: `text_encoders`, then its legacy name `clip`.
const TEXT_ENCODER_FOLDERS: &[&str] = &[TEXT_ENCODERS, "clip"];

/// ComfyUI's `CLIPLoader` `type` options (its `nodes.py`); only `sd3` runs here.
const CLIP_TYPES: &[&str] = &[
    "stable_diffusion",
    "stable_cascade",
    "sd3",
    "stable_audio",
    "mochi",
    "ltxv",
    "pixart",
    "cosmos",
    "lumina2",
    "wan",
    "hidream",
    "chroma",
    "ace",
    "omnigen2",
    "qwen_image",
    "hunyuan_image",
    "flux2",
    "ovis",
];

/// The path of the file named by input `input`.
fn text_encoder_path(paths: &Paths, inputs: &Inputs, input: &str) -> Result<PathBuf, NodeError> {
    let name = inputs.string(input)?;
    paths
        .find_model(TEXT_ENCODER_FOLDERS, name)
        .map_err(|e| NodeError::invalid_input(input, format!("{e:#}")))
}

/// Modification times and sizes of the named files: they change when a file is replaced.
fn files_fingerprint(paths: &Paths, inputs: &Inputs, names: &[&str]) -> Option<String> {
    let mut parts = Vec::new();
    for name in names {
        let path = text_encoder_path(paths, inputs, name).ok()?;
        parts.push(file_fingerprint(&path)?);
    }
    Some(parts.join(","))
}

/// Builds SD3's text encoders from the given files (`(input name, path)`), in any order.
fn load_text_encoders(
    paths: &Paths,
    files: &[(&str, PathBuf)],
    ctx: &RunContext,
) -> Result<Sd3TextEncoders, NodeError> {
    // `found[i]` is the encoder of `files[i]`.
    let mut found: Vec<TextEncoderWeights> = Vec::new();
    for (input, path) in files {
        let weights = open_text_encoder(path)
            .map_err(|e| NodeError::invalid_input(input, format!("{e:#}")))?;
        if let Some(other) = found.iter().position(|w| w.kind == weights.kind) {
            return Err(NodeError::invalid_input(
                input,
                format!(
                    "{} holds {}, as {} does: give each of CLIP-L, CLIP-G and T5-XXL once",
                    path.display(),
                    weights.kind.name(),
                    files[other].0
                ),
            ));
        }
        found.push(weights);
    }
    let get = |kind| found.iter().find(|w| w.kind == kind);
    ctx.text(&text_encoders_summary(&found));
    let cfg = [Sd3TextConfig::sd3(), Sd3TextConfig::tiny()]
        .into_iter()
        .find(|c| {
            found
                .iter()
                .all(|w| width(w) == Some(expected_width(c, w.kind)))
        })
        .ok_or_else(|| {
            let origins: Vec<String> = found
                .iter()
                .map(|w| w.weights.origin().display().to_string())
                .collect();
            NodeError::invalid_input(
                files[0].0,
                format!(
                    "{} are not text encoders of one SD3 model",
                    origins.join(", ")
                ),
            )
        })?;
    let (device, dtype) = model_device(WeightDtype::Stored, ctx)?;
    let t5 = get(TextEncoderKind::T5Xxl);
    let tokenizer = match t5 {
        Some(_) => Some(t5_tokenizer(&user_t5_tokenizer_path(paths))?),
        None => None,
    };
    let vb = |kind| get(kind).map(|w| w.var_builder(dtype, &device));
    let vbs = EncoderVarBuilders {
        clip_l: vb(TextEncoderKind::ClipL),
        clip_g: vb(TextEncoderKind::ClipG),
        t5: vb(TextEncoderKind::T5Xxl),
    };
    Ok(Sd3TextEncoders::new(&cfg, tokenizer, vbs)?)
}

/// An encoder's hidden width (T5's `d_model`): the columns of its token embeddings or, for
/// T5 (whose embedding has two names), of its first query projection.
fn width(w: &TextEncoderWeights) -> Option<usize> {
    let key = match w.kind {
        TextEncoderKind::ClipL | TextEncoderKind::ClipG => {
            "text_model.embeddings.token_embedding.weight"
        }
        TextEncoderKind::T5Xxl => "encoder.block.0.layer.0.SelfAttention.q.weight",
    };
    w.weights.shape_of(key)?.get(1).copied()
}

/// The width `cfg` gives an encoder of this kind.
fn expected_width(cfg: &Sd3TextConfig, kind: TextEncoderKind) -> usize {
    match kind {
        TextEncoderKind::ClipL => cfg.clip_l.hidden_size,
        TextEncoderKind::ClipG => cfg.clip_g.hidden_size,
        TextEncoderKind::T5Xxl => cfg.t5.d_model,
    }
}

/// ComfyUI's `TripleCLIPLoader`: CLIP-L, CLIP-G and T5-XXL from three files.
pub struct TripleClipLoader {
    pub paths: Arc<Paths>,
}

const TRIPLE_INPUTS: [&str; 3] = ["clip_name1", "clip_name2", "clip_name3"];

impl Node for TripleClipLoader {
    fn schema(&self) -> NodeSchema {
        let names = self.paths.list_models_in(TEXT_ENCODER_FOLDERS);
        let mut schema = NodeSchema::new("TripleCLIPLoader", "advanced/loaders")
            .display_name("TripleCLIPLoader")
            .description("[Recipes]\n\nsd3: clip-l, clip-g, t5");
        for input in TRIPLE_INPUTS {
            schema = schema.input(InputSpec::required(input, InputKind::combo(names.clone())));
        }
        schema.output(OutputSpec::new(data_type::CLIP))
    }

    fn fingerprint(&self, inputs: &Inputs) -> Option<String> {
        files_fingerprint(&self.paths, inputs, &TRIPLE_INPUTS)
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let files = TRIPLE_INPUTS
            .iter()
            .map(|&input| Ok((input, text_encoder_path(&self.paths, inputs, input)?)))
            .collect::<Result<Vec<_>, NodeError>>()?;
        let clip = load_text_encoders(&self.paths, &files, ctx)?;
        Ok(NodeOutput::values(vec![Value::handle(clip)]))
    }
}

/// ComfyUI's `CLIPLoader` with `type` `sd3`: one text encoder file (CLIP-L, CLIP-G or
/// T5-XXL), the other encoders absent.
pub struct ClipLoader {
    pub paths: Arc<Paths>,
}

impl Node for ClipLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CLIPLoader", "advanced/loaders")
            .display_name("Load CLIP")
            .description("[Recipes]\n\nsd3: t5 xxl/ clip-g / clip-l")
            .input(InputSpec::required(
                "clip_name",
                InputKind::combo(self.paths.list_models_in(TEXT_ENCODER_FOLDERS)),
            ))
            .input(InputSpec::required(
                "type",
                InputKind::combo(CLIP_TYPES.iter().copied()),
            ))
            .input(InputSpec::optional(
                "device",
                InputKind::combo(["default", "cpu"]),
            ))
            .output(OutputSpec::new(data_type::CLIP))
    }

    fn fingerprint(&self, inputs: &Inputs) -> Option<String> {
        files_fingerprint(&self.paths, inputs, &["clip_name"])
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let clip_type = inputs.string("type")?;
        if clip_type != "sd3" {
            return Err(NodeError::invalid_input(
                "type",
                format!("`{clip_type}`: only SD3's text encoders run here (type `sd3`)"),
            ));
        }
        let path = text_encoder_path(&self.paths, inputs, "clip_name")?;
        let clip = load_text_encoders(&self.paths, &[("clip_name", path)], ctx)?;
        Ok(NodeOutput::values(vec![Value::handle(clip)]))
    }
}
