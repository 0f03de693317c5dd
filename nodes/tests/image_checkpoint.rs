//! SD3 checkpoint discovery: the tiny checkpoint with text encoders in every
//! layout users have, and the errors for files that are not SD3.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::max_abs_diff;
use cretok_nodes::sd3::checkpoint::{Layout, Sd3Checkpoint, TextEncoderKind};
use cretok_nodes::sd3::text_encoders::{EncoderVarBuilders, Sd3TextConfig, Sd3TextEncoders};
use cretok_nodes::sd3::tiny::{write_diffusers, write_single_file, TinyOptions, TinyVariant};

fn options(t5: bool) -> TinyOptions {
    TinyOptions {
        variant: TinyVariant::Sd3Medium,
        seed: 7,
        clips: true,
        t5,
        positions: None,
    }
}

fn encoders(ckpt: &Sd3Checkpoint) -> Sd3TextEncoders {
    let dev = Device::Cpu;
    let vb = |kind| {
        ckpt.text_encoder(kind)
            .map(|t| t.var_builder(DType::F32, &dev))
    };
    let vbs = EncoderVarBuilders {
        clip_l: Some(vb(TextEncoderKind::ClipL).expect("clip_l")),
        clip_g: Some(vb(TextEncoderKind::ClipG).expect("clip_g")),
        t5: vb(TextEncoderKind::T5Xxl),
    };
    Sd3TextEncoders::new(&Sd3TextConfig::tiny(), None, vbs).unwrap()
}

#[test]
fn single_file_and_diffusers_folder_give_the_same_text_conditioning() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sd3_tiny.safetensors");
    write_single_file(&file, &options(true)).unwrap();
    write_diffusers(&dir.path().join("folder"), &options(true)).unwrap();
    let single = Sd3Checkpoint::open(&file, &[]).unwrap();
    let folder = Sd3Checkpoint::open(&dir.path().join("folder"), &[]).unwrap();
    for ckpt in [&single, &folder] {
        for kind in TextEncoderKind::ALL {
            assert!(
                ckpt.text_encoder(kind).is_some(),
                "{kind:?} in {:?}",
                ckpt.layout
            );
        }
    }
    assert!(single.summary().contains("t5xxl ("), "{}", single.summary());
    let a = encoders(&single).encode("a lettuce mantis").unwrap();
    let b = encoders(&folder).encode("a lettuce mantis").unwrap();
    assert_eq!(max_abs_diff(&a.context, &b.context), 0.0);
    assert_eq!(max_abs_diff(&a.pooled, &b.pooled), 0.0);
    assert_eq!(a.context.dims(), &[1, 77 + 256, 128]);
}

#[test]
fn sd35_style_file_finds_separate_text_encoders() {
    // ComfyUI layout: models/checkpoints/x.safetensors + models/text_encoders/*.safetensors.
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let text_encoders = dir.path().join("text_encoders");
    std::fs::create_dir_all(&checkpoints).unwrap();
    let opts = TinyOptions {
        variant: TinyVariant::Sd35Medium,
        clips: false,
        ..options(false)
    };
    let file = checkpoints.join("sd3.5_medium.safetensors");
    write_single_file(&file, &opts).unwrap();
    // The diffusers folder's text encoders are plain transformers files.
    let folder = dir.path().join("folder");
    write_diffusers(&folder, &options(false)).unwrap();
    std::fs::create_dir_all(&text_encoders).unwrap();
    for (sub, name) in [
        ("text_encoder", "clip_l.safetensors"),
        ("text_encoder_2", "clip_g.safetensors"),
    ] {
        std::fs::copy(
            folder.join(sub).join("model.safetensors"),
            text_encoders.join(name),
        )
        .unwrap();
    }
    let ckpt = Sd3Checkpoint::open(&file, &[]).unwrap();
    assert_eq!(ckpt.layout, Layout::SingleFile);
    assert_eq!(ckpt.mmdit_config.dual_attention_layers, vec![0, 1]);
    let l = ckpt.text_encoder(TextEncoderKind::ClipL).unwrap();
    assert_eq!(l.weights.origin(), text_encoders.join("clip_l.safetensors"));
    assert!(ckpt.text_encoder(TextEncoderKind::T5Xxl).is_none());
    assert!(
        ckpt.summary().contains("t5xxl missing"),
        "{}",
        ckpt.summary()
    );
    encoders(&ckpt).encode("hello").unwrap();
}

fn write_tensors(path: &Path, names: &[&str]) {
    let t = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
    let map: HashMap<String, Tensor> = names.iter().map(|n| (n.to_string(), t.clone())).collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

fn open_err(path: &Path) -> String {
    format!("{:#}", Sd3Checkpoint::open(path, &[]).unwrap_err())
}

#[test]
fn other_files_get_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.safetensors");
    std::fs::write(&text, "this is not a checkpoint").unwrap();
    assert!(
        open_err(&text).contains("not a readable safetensors file"),
        "{}",
        open_err(&text)
    );

    let sdxl = dir.path().join("sdxl.safetensors");
    write_tensors(
        &sdxl,
        &[
            "model.diffusion_model.input_blocks.0.0.weight",
            "conditioner.embedders.1.model.text_projection",
        ],
    );
    assert!(open_err(&sdxl).contains("SDXL"), "{}", open_err(&sdxl));

    let flux = dir.path().join("flux.safetensors");
    write_tensors(&flux, &["double_blocks.0.img_attn.qkv.weight"]);
    assert!(open_err(&flux).contains("FLUX"), "{}", open_err(&flux));

    let other = dir.path().join("other.safetensors");
    write_tensors(&other, &["foo.weight"]);
    assert!(
        open_err(&other).contains("not an SD3 checkpoint"),
        "{}",
        open_err(&other)
    );
}

#[test]
fn missing_tensors_say_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let opts = TinyOptions {
        clips: false,
        ..options(false)
    };
    let folder = dir.path().join("folder");
    write_diffusers(&folder, &opts).unwrap();
    // Drop one of the q/k/v parts the fused qkv is built from.
    let path = folder.join("transformer/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    tensors
        .remove("transformer_blocks.0.attn.add_k_proj.weight")
        .unwrap();
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let ckpt = Sd3Checkpoint::open(&folder, &[]).unwrap();
    let err = format!(
        "{:#}",
        ckpt.load_mmdit(DType::F32, &Device::Cpu).unwrap_err()
    );
    assert!(
        err.contains("missing tensor `joint_blocks.0.context_block.attn.qkv.weight`")
            && err.contains("transformer_blocks.0.attn.add_k_proj.weight"),
        "{err}"
    );
    assert!(ckpt.load_vae(DType::F32, &Device::Cpu).is_ok());
}

/// Records the names and shapes a constructor asks for, without allocating
/// (stride-0 broadcasts of a scalar), so full-size models can be laid out.
#[derive(Clone, Default)]
struct ShapeRecorder(std::sync::Arc<std::sync::Mutex<HashMap<String, Vec<usize>>>>);

impl candle_nn::var_builder::SimpleBackend for ShapeRecorder {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .lock()
            .unwrap()
            .insert(name.to_string(), s.dims().to_vec());
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("no shape for {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

fn layout(build: impl FnOnce(candle_nn::VarBuilder)) -> HashMap<String, Vec<usize>> {
    let rec = ShapeRecorder::default();
    build(candle_nn::VarBuilder::from_backend(
        Box::new(rec.clone()),
        DType::F32,
        Device::Cpu,
    ));
    let shapes = rec.0.lock().unwrap().clone();
    shapes
}

#[test]
fn full_size_variants_are_detected_from_shapes_and_fully_mapped() {
    use cretok_nodes::sd3::checkpoint::keymap::{transformer_source, vae_source};
    use cretok_nodes::sd3::mmdit::{Config, MMDiT};
    use cretok_nodes::sd3::vae::{self, AutoEncoder};
    for cfg in [
        Config::sd3_medium(),
        Config::sd3_5_medium(),
        Config::sd3_5_large(),
    ] {
        let shapes = layout(|vb| {
            MMDiT::new(&cfg, vb).unwrap();
        });
        assert_eq!(Config::infer(|n| shapes.get(n).cloned()).unwrap(), cfg);
        for name in shapes.keys() {
            assert!(transformer_source(name, cfg.depth).is_some(), "{name}");
        }
    }
    assert_eq!(Config::sd3_medium().variant_name(), "SD3-medium");
    assert_eq!(Config::sd3_5_large().variant_name(), "SD3.5-large");
    let shapes = layout(|vb| {
        AutoEncoder::new(&vae::Config::sd3(), vb).unwrap();
    });
    assert_eq!(
        vae::Config::infer(|n| shapes.get(n).cloned()).unwrap(),
        vae::Config::sd3()
    );
    for name in shapes.keys() {
        assert!(vae_source(name, 4).is_some(), "{name}");
    }
}
