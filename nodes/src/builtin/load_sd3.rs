use std::path::PathBuf;
use std::sync::Arc;

use super::loader_options::{
    file_fingerprint, model_device, t5_tokenizer, user_t5_tokenizer_path, weight_dtype,
    TEXT_ENCODERS,
};
use crate::fsutil::safe_join;
use crate::sd3::checkpoint::{Layout, Sd3Checkpoint};
use crate::sd3::precision::WeightDtype;
use crate::sd3::sampling::DiffusionModel;
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    Paths, RunContext, Value,
};

const CHECKPOINTS: &str = "checkpoints";

/// Loads an SD3 / SD3.5 checkpoint (single file or diffusers folder under
/// `models/checkpoints`) as MODEL, CLIP (the three text encoders) and VAE.
/// Separate text encoders are found in `models/text_encoders`. T5 uses the
/// folder's `tokenizer_3/` or `models/text_encoders/t5_tokenizer/tokenizer.json`
/// when present, else the shipped T5 v1.1 tokenizer; without T5 weights its
/// rows are zeros (the summary says so). The optional `weight_dtype`
/// (`default`, `int8`) quantises the linear weights of the MMDiT and the text
/// encoders to int8 blocks at load (docs/sd3.md, "Weight precision").
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
            Layout::SingleFile => user_t5_tokenizer_path(&self.paths),
        }
    }
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
                        "int8: the linear weights of the diffusion model and the text encoders \
                         quantised to 8 bits (blocks of 32 with a scale) at load, about half the \
                         memory of f16 (CPU only; CreTok training needs default)",
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
        file_fingerprint(&path)
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let path = self.checkpoint_path(inputs.string("ckpt_name")?)?;
        let (weight_dtype, note) = weight_dtype(inputs)?;
        let text_dirs = [self.paths.model_folder(TEXT_ENCODERS)];
        let ckpt = Sd3Checkpoint::open(&path, &text_dirs)?;
        ctx.text(&ckpt.summary());
        if let Some(note) = note {
            ctx.text(&note);
        }
        let (device, dtype) = model_device(weight_dtype, ctx)?;
        ctx.progress(0, 3)?;
        let model = DiffusionModel::new(
            ckpt.load_mmdit_as(dtype, &device, weight_dtype)?,
            ckpt.shift,
        );
        ctx.progress(1, 3)?;
        let t5_tokenizer = || t5_tokenizer(&self.t5_tokenizer_path(&ckpt, &path));
        let clip = ckpt.load_text_encoders(dtype, &device, t5_tokenizer, weight_dtype)?;
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
