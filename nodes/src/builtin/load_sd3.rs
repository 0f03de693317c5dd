use std::path::PathBuf;
use std::sync::Arc;

use super::loader_options::{
    file_fingerprint, model_device, t5_tokenizer, user_t5_tokenizer_path, weight_dtype,
    TEXT_ENCODERS,
};
use crate::fsutil::safe_join;
use crate::sd3::checkpoint::{text_encoders_summary, Layout, Sd3Checkpoint, TextEncoderKind};
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
/// Registered three times: as `LoadSD3` and under ComfyUI's name
/// `CheckpointLoaderSimple`, so ComfyUI SD3 workflows run unchanged, and as
/// `CheckpointCLIPLoader`, which outputs the CLIP alone: the MMDiT and the VAE are
/// not built, and with `load_t5` off neither is T5 (what `cretok train` runs, CreTok
/// needing only CLIP-L and CLIP-G).
pub struct CheckpointLoader {
    paths: Arc<Paths>,
    class_type: &'static str,
    display_name: &'static str,
    outputs: Outputs,
}

/// What a checkpoint loader builds and outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outputs {
    /// MODEL, CLIP and VAE.
    All,
    /// CLIP alone.
    Clip,
}

/// `CheckpointCLIPLoader`'s input that leaves T5 out.
const LOAD_T5: &str = "load_t5";

impl CheckpointLoader {
    /// The `LoadSD3` node.
    pub fn load_sd3(paths: Arc<Paths>) -> Self {
        CheckpointLoader {
            paths,
            class_type: "LoadSD3",
            display_name: "Load SD3 Checkpoint",
            outputs: Outputs::All,
        }
    }

    /// ComfyUI's `CheckpointLoaderSimple`: the same node under ComfyUI's name.
    pub fn checkpoint_loader_simple(paths: Arc<Paths>) -> Self {
        CheckpointLoader {
            paths,
            class_type: "CheckpointLoaderSimple",
            display_name: "Load Checkpoint",
            outputs: Outputs::All,
        }
    }

    /// `CheckpointCLIPLoader`: only the text encoders of a checkpoint, as a CLIP.
    pub fn checkpoint_clip_loader(paths: Arc<Paths>) -> Self {
        CheckpointLoader {
            paths,
            class_type: "CheckpointCLIPLoader",
            display_name: "Load CLIP from Checkpoint",
            outputs: Outputs::Clip,
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

/// The line that says what a CLIP-only load takes from `ckpt` (`t5_skipped`: the checkpoint's T5
/// left out by `load_t5`).
fn clip_summary(ckpt: &Sd3Checkpoint, t5_skipped: bool) -> String {
    let found: Vec<_> = TextEncoderKind::ALL
        .iter()
        .filter_map(|&kind| ckpt.text_encoder(kind).cloned())
        .collect();
    let skipped = if t5_skipped {
        " (load_t5 off: the checkpoint's T5 is not loaded)"
    } else {
        ""
    };
    format!(
        "CLIP only, the MMDiT and the VAE are not loaded; {}{skipped}",
        text_encoders_summary(&found)
    )
}

impl Node for CheckpointLoader {
    fn schema(&self) -> NodeSchema {
        let (description, quantised) = match self.outputs {
            Outputs::All => (
                "Loads an SD3 or SD3.5 checkpoint: diffusion model, text encoders, VAE.",
                "the linear weights of the diffusion model and the text encoders",
            ),
            Outputs::Clip => (
                "Loads only the text encoders (CLIP-L, CLIP-G, T5) of an SD3 or SD3.5 checkpoint, \
                 as CheckpointLoaderSimple's CLIP; the diffusion model and the VAE are not loaded.",
                "the text encoders' linear weights",
            ),
        };
        let schema = NodeSchema::new(self.class_type, "loaders")
            .display_name(self.display_name)
            .description(description)
            .input(InputSpec::required(
                "ckpt_name",
                InputKind::combo(self.paths.list_models(CHECKPOINTS, true)),
            ))
            .input(
                InputSpec::optional("weight_dtype", InputKind::combo(WeightDtype::NAMES))
                    .with_tooltip(&format!(
                        "int8: {quantised} quantised to 8 bits (blocks of 32 with a scale) at \
                         load, about half the memory of f16 (CPU only; CreTok training needs \
                         default)"
                    )),
            );
        match self.outputs {
            Outputs::All => schema
                .output(OutputSpec::new(data_type::MODEL))
                .output(OutputSpec::new(data_type::CLIP))
                .output(OutputSpec::new(data_type::VAE)),
            Outputs::Clip => schema
                .input(
                    InputSpec::optional(LOAD_T5, InputKind::Bool { default: true }).with_tooltip(
                        "off: T5-XXL is not loaded (its rows are zeros); CreTok training needs \
                         only CLIP-L and CLIP-G",
                    ),
                )
                .output(OutputSpec::new(data_type::CLIP)),
        }
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
        let mut ckpt = Sd3Checkpoint::open(&path, &text_dirs)?;
        match self.outputs {
            Outputs::All => ctx.text(&ckpt.summary()),
            Outputs::Clip => {
                let load_t5 = inputs.optional(LOAD_T5, Inputs::bool, true)?;
                let t5_skipped = !load_t5 && ckpt.text_encoder(TextEncoderKind::T5Xxl).is_some();
                if !load_t5 {
                    ckpt = ckpt.without_text_encoder(TextEncoderKind::T5Xxl);
                }
                ctx.text(&clip_summary(&ckpt, t5_skipped));
            }
        }
        if let Some(note) = note {
            ctx.text(&note);
        }
        let (device, dtype) = model_device(weight_dtype, ctx)?;
        let t5_tokenizer = || t5_tokenizer(&self.t5_tokenizer_path(&ckpt, &path));
        if self.outputs == Outputs::Clip {
            ctx.progress(0, 1)?;
            let clip = ckpt.load_text_encoders(dtype, &device, t5_tokenizer, weight_dtype)?;
            ctx.progress(1, 1)?;
            return Ok(NodeOutput::values(vec![Value::handle(clip)]));
        }
        ctx.progress(0, 3)?;
        let model = DiffusionModel::new(
            ckpt.load_mmdit_as(dtype, &device, weight_dtype)?,
            ckpt.shift,
        );
        ctx.progress(1, 3)?;
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use candle_core::Device;
    use serde_json::json;

    use super::*;
    use crate::sd3::text_encoders::Sd3TextEncoders;
    use crate::sd3::tiny::{write_single_file, TinyOptions, TinyVariant};
    use crate::{CancelToken, EventSink, PreviewFormat};

    /// Keeps the nodes' text lines.
    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);

    impl EventSink for Lines {
        fn progress(&self, _: &str, _: u64, _: u64) {}
        fn preview(&self, _: &str, _: PreviewFormat, _: Vec<u8>) {}
        fn text(&self, _: &str, text: &str) {
            self.0.lock().unwrap().push(text.to_owned());
        }
    }

    fn run(
        node: &CheckpointLoader,
        inputs: &Inputs,
        paths: &Paths,
    ) -> (Result<Vec<Value>, NodeError>, String) {
        let (cancel, lines) = (CancelToken::new(), Lines::default());
        let ctx = RunContext::new("1", paths, &cancel, &lines);
        let out = node.run(inputs, &ctx).map(|out| out.values);
        let text = lines.0.lock().unwrap().join("\n");
        (out, text)
    }

    fn clip_of(value: &Value) -> Arc<Sd3TextEncoders> {
        let inputs = Inputs::new().with("clip", value.clone());
        inputs.handle::<Sd3TextEncoders>("clip").unwrap()
    }

    /// A tiny checkpoint with T5 whose MMDiT misses a block's MLP and which has no VAE: loading
    /// either fails, so a loader that succeeds on it has built neither.
    fn text_encoders_only_checkpoint() -> (tempfile::TempDir, Arc<Paths>) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Arc::new(Paths::new(dir.path(), None));
        let folder = paths.model_folder(CHECKPOINTS);
        std::fs::create_dir_all(&folder).unwrap();
        let opts = TinyOptions {
            variant: TinyVariant::Sd3Medium,
            seed: 3,
            clips: true,
            t5: true,
            positions: None,
        };
        let whole = dir.path().join("whole.safetensors");
        write_single_file(&whole, &opts).unwrap();
        let mut tensors = candle_core::safetensors::load(&whole, &Device::Cpu).unwrap();
        let before = tensors.len();
        tensors.retain(|k, _| {
            !k.starts_with("first_stage_model.")
                && !k.starts_with("model.diffusion_model.joint_blocks.0.x_block.mlp.")
        });
        assert!(tensors.len() < before);
        candle_core::safetensors::save(&tensors, folder.join("clips.safetensors")).unwrap();
        (dir, paths)
    }

    #[test]
    fn checkpoint_clip_loader_builds_only_the_text_encoders() {
        let (_dir, paths) = text_encoders_only_checkpoint();
        let inputs = Inputs::new().with("ckpt_name", Value::String("clips.safetensors".into()));

        let (whole, _) = run(&CheckpointLoader::load_sd3(paths.clone()), &inputs, &paths);
        assert!(whole.is_err(), "LoadSD3 builds the MMDiT and the VAE");

        let node = CheckpointLoader::checkpoint_clip_loader(paths.clone());
        let (out, text) = run(&node, &inputs, &paths);
        let out = out.unwrap();
        assert_eq!(out.len(), 1);
        let clip = clip_of(&out[0]);
        assert!(clip.clip_l().is_ok() && clip.clip_g().is_ok() && clip.has_t5());
        assert!(
            text.contains("the MMDiT and the VAE are not loaded; text encoders: clip_l"),
            "{text}"
        );

        let no_t5 = inputs.with(LOAD_T5, Value::Bool(false));
        let (out, text) = run(&node, &no_t5, &paths);
        let clip = clip_of(&out.unwrap()[0]);
        assert!(clip.clip_l().is_ok() && clip.clip_g().is_ok() && !clip.has_t5());
        assert!(
            text.contains("load_t5 off: the checkpoint's T5 is not loaded"),
            "{text}"
        );
    }

    #[test]
    fn checkpoint_clip_loader_schema() {
        let (_dir, paths) = text_encoders_only_checkpoint();
        let info = CheckpointLoader::checkpoint_clip_loader(paths.clone())
            .schema()
            .to_object_info();
        assert_eq!(info["name"], "CheckpointCLIPLoader");
        assert_eq!(info["category"], "loaders");
        assert_eq!(info["output"], json!(["CLIP"]));
        assert_eq!(
            info["input"]["required"]["ckpt_name"][0],
            json!(["clips.safetensors"])
        );
        assert_eq!(info["input"]["optional"]["load_t5"][0], "BOOLEAN");
        assert_eq!(info["input"]["optional"]["load_t5"][1]["default"], true);
        assert_eq!(
            info["input_order"]["optional"],
            json!(["weight_dtype", "load_t5"])
        );
        let whole = CheckpointLoader::load_sd3(paths).schema().to_object_info();
        assert_eq!(whole["output"], json!(["MODEL", "CLIP", "VAE"]));
        assert!(whole["input"]["optional"].get("load_t5").is_none());
    }
}
