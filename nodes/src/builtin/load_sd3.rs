use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Device;

use crate::fsutil::safe_join;
use crate::sd3::checkpoint::{default_dtype, Layout, Sd3Checkpoint, TextEncoderKind};
use crate::sd3::precision::WeightDtype;
use crate::sd3::sampling::DiffusionModel;
use crate::sd3::text_encoders::{EncoderVarBuilders, Sd3TextConfig, Sd3TextEncoders};
use crate::sd3::tokenizer::T5Tokenizer;
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    Paths, RunContext, Value,
};

const CHECKPOINTS: &str = "checkpoints";
pub(crate) const TEXT_ENCODERS: &str = "text_encoders";

/// Loads an SD3 / SD3.5 checkpoint (single file or diffusers folder under
/// `models/checkpoints`) as MODEL, CLIP (the three text encoders) and VAE.
/// Separate text encoders are found in `models/text_encoders`. T5 uses the
/// folder's `tokenizer_3/` or `models/text_encoders/t5_tokenizer/tokenizer.json`
/// when present, else the shipped T5 v1.1 tokenizer; without T5 weights its
/// rows are zeros (the summary says so). The optional `weight_dtype`
/// (`default`, `int8`) quantises the MMDiT's linear weights to int8 blocks at
/// load (docs/sd3.md, "Weight precision").
///
/// Registered twice: as `LoadSD3` and under ComfyUI's name
/// `CheckpointLoaderSimple`, so ComfyUI SD3 workflows run unchanged.
pub struct CheckpointLoader {
    paths: Arc<Paths>,
    class_type: &'static str,
    display_name: &'static str,
}

impl CheckpointLoader {
    /// The `LoadSD3` node.
    pub fn load_sd3(paths: Arc<Paths>) -> Self {
        CheckpointLoader {
            paths,
            class_type: "LoadSD3",
            display_name: "Load SD3 Checkpoint",
        }
    }

    /// ComfyUI's `CheckpointLoaderSimple`: the same node under ComfyUI's name.
    pub fn checkpoint_loader_simple(paths: Arc<Paths>) -> Self {
        CheckpointLoader {
            paths,
            class_type: "CheckpointLoaderSimple",
            display_name: "Load Checkpoint",
        }
    }

    fn checkpoint_path(&self, name: &str) -> Result<PathBuf, NodeError> {
        safe_join(&self.paths.model_folder(CHECKPOINTS), name)
            .map_err(|e| NodeError::invalid_input("ckpt_name", e.to_string()))
    }

    /// Where a T5 tokenizer that overrides the shipped one would be.
    fn t5_tokenizer_path(&self, ckpt: &Sd3Checkpoint, path: &std::path::Path) -> PathBuf {
        match ckpt.layout {
            Layout::Diffusers => path.join("tokenizer_3").join("tokenizer.json"),
            Layout::SingleFile => self
                .paths
                .model_folder(TEXT_ENCODERS)
                .join("t5_tokenizer")
                .join("tokenizer.json"),
        }
    }
}

/// The checkpoint's own (or the user's) T5 `tokenizer.json` when present, else the shipped one.
pub(crate) fn t5_tokenizer(path: &std::path::Path) -> anyhow::Result<T5Tokenizer> {
    if path.is_file() {
        T5Tokenizer::from_file(path)
    } else {
        T5Tokenizer::shipped()
    }
}

/// The `weight_dtype` input; `default` when absent (workflows written before it existed).
fn weight_dtype(inputs: &Inputs) -> Result<WeightDtype, NodeError> {
    if inputs.get("weight_dtype").is_none() {
        return Ok(WeightDtype::Stored);
    }
    let name = inputs.string("weight_dtype")?;
    WeightDtype::from_name(name).ok_or_else(|| {
        NodeError::invalid_input(
            "weight_dtype",
            format!("`{name}` is not one of {:?}", WeightDtype::NAMES),
        )
    })
}

impl Node for CheckpointLoader {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new(self.class_type, "loaders")
            .display_name(self.display_name)
            .description("Loads an SD3 or SD3.5 checkpoint: diffusion model, text encoders, VAE.")
            .input(InputSpec::required(
                "ckpt_name",
                InputKind::combo(self.paths.list_models(CHECKPOINTS, true)),
            ))
            .input(
                InputSpec::optional("weight_dtype", InputKind::combo(WeightDtype::NAMES))
                    .with_tooltip(
                        "int8: the diffusion model's linear weights quantised to 8 bits \
                         (blocks of 32 with a scale) at load, about half the memory of f16 \
                         (CPU only)",
                    ),
            )
            .output(OutputSpec::new(data_type::MODEL))
            .output(OutputSpec::new(data_type::CLIP))
            .output(OutputSpec::new(data_type::VAE))
    }

    fn fingerprint(&self, inputs: &Inputs) -> Option<String> {
        let path = self
            .checkpoint_path(inputs.string("ckpt_name").ok()?)
            .ok()?;
        let meta = std::fs::metadata(path).ok()?;
        Some(format!("{:?}/{}", meta.modified().ok()?, meta.len()))
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let path = self.checkpoint_path(inputs.string("ckpt_name")?)?;
        let weight_dtype = weight_dtype(inputs)?;
        let text_dirs = [self.paths.model_folder(TEXT_ENCODERS)];
        let ckpt = Sd3Checkpoint::open(&path, &text_dirs)?;
        ctx.text(&ckpt.summary());
        let device = Device::cuda_if_available(0).map_err(anyhow::Error::from)?;
        let dtype = default_dtype(&device);
        if weight_dtype == WeightDtype::Int8 && !device.is_cpu() {
            ctx.text("weight_dtype int8 applies on the CPU only: weights load as usual");
        }
        ctx.progress(0, 3)?;
        let model = DiffusionModel::new(
            ckpt.load_mmdit_as(dtype, &device, weight_dtype)?,
            ckpt.shift,
        );
        ctx.progress(1, 3)?;
        let (clip_l, clip_g) = ckpt.clip_var_builders(dtype, &device)?;
        let t5_weights = ckpt.text_encoder(TextEncoderKind::T5Xxl);
        let t5_tokenizer = match t5_weights {
            Some(_) => Some(t5_tokenizer(&self.t5_tokenizer_path(&ckpt, &path))?),
            None => None,
        };
        let vbs = EncoderVarBuilders {
            clip_l: Some(clip_l),
            clip_g: Some(clip_g),
            t5: t5_weights.map(|t| t.var_builder(dtype, &device)),
        };
        let cfg = Sd3TextConfig::for_context_width(ckpt.mmdit_config.context_embed_size)?;
        let clip = Sd3TextEncoders::new(&cfg, t5_tokenizer, vbs)?;
        ctx.progress(2, 3)?;
        let vae = ckpt.load_vae(dtype, &device)?;
        ctx.progress(3, 3)?;
        Ok(NodeOutput::values(vec![
            Value::handle(model),
            Value::handle(clip),
            Value::handle(vae),
        ]))
    }
}
