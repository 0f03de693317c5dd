//! SD3 from separate files (UNETLoader, VAELoader, TripleCLIPLoader, CLIPLoader) and
//! CLIPTextEncodeSD3, on the tiny checkpoint's weights written both as one file and as
//! ComfyUI's separate files.

mod common;

use std::sync::Arc;

use candle_core::Tensor;
use cretok_nodes::builtin::{
    CheckpointLoader, ClipLoader, ClipTextEncode, ClipTextEncodeSd3, CreTokEncode,
    EmptySd3LatentImage, KSampler, TripleClipLoader, UnetLoader, VaeDecode, VaeLoader,
};
use cretok_nodes::cretok::{CreTokToken, EncoderId};
use cretok_nodes::sd3::checkpoint::components::open_text_encoder;
use cretok_nodes::sd3::text_encoders::{EncoderVarBuilders, Sd3TextConfig, Sd3TextEncoders};
use cretok_nodes::sd3::tiny::{
    write_component_files, write_single_file, TinyOptions, TinyVariant, COMPONENT_FILES,
};
use cretok_nodes::sd3::tokenizer::T5Tokenizer;
use cretok_nodes::sd3::types::{Conditioning, Image};
use cretok_nodes::{CancelToken, Inputs, Node, NodeError, NullSink, Paths, RunContext, Value};
use serde_json::json;

use common::{handle, max_abs, max_abs_diff};

const SINGLE_FILE: &str = "tiny-sd3.safetensors";

struct Setup {
    _dir: tempfile::TempDir,
    paths: Arc<Paths>,
}

/// The same tiny weights as `checkpoints/tiny-sd3.safetensors` and as separate files.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let paths = Arc::new(Paths::new(dir.path(), None));
    let opts = TinyOptions {
        variant: TinyVariant::Sd35Medium,
        seed: 5,
        clips: true,
        t5: true,
        positions: None,
    };
    let checkpoints = paths.model_folder("checkpoints");
    std::fs::create_dir_all(&checkpoints).unwrap();
    write_single_file(&checkpoints.join(SINGLE_FILE), &opts).unwrap();
    write_component_files(&paths.models_dir, &opts).unwrap();
    Setup { _dir: dir, paths }
}

fn run(node: &dyn Node, inputs: &Inputs, s: &Setup) -> Result<Vec<Value>, NodeError> {
    let cancel = CancelToken::new();
    let ctx = RunContext::new("1", &s.paths, &cancel, &NullSink);
    node.run(inputs, &ctx).map(|out| out.values)
}

fn text(value: &str) -> Value {
    Value::String(value.into())
}

fn file_name(relative: &str) -> Value {
    text(relative.rsplit('/').next().unwrap())
}

fn triple_clip(s: &Setup, names: [&str; 3]) -> Result<Vec<Value>, NodeError> {
    let inputs = Inputs::new()
        .with("clip_name1", file_name(names[0]))
        .with("clip_name2", file_name(names[1]))
        .with("clip_name3", file_name(names[2]));
    run(
        &TripleClipLoader {
            paths: s.paths.clone(),
        },
        &inputs,
        s,
    )
}

fn separate_clip(s: &Setup) -> Value {
    let f = COMPONENT_FILES;
    // Any order: the loader tells the encoders by their keys.
    triple_clip(s, [f.t5xxl, f.clip_l, f.clip_g])
        .unwrap()
        .remove(0)
}

fn encode_sd3(s: &Setup, clip: &Value, texts: [&str; 3], empty_padding: &str) -> Conditioning {
    let inputs = Inputs::new()
        .with("clip", clip.clone())
        .with("clip_l", text(texts[0]))
        .with("clip_g", text(texts[1]))
        .with("t5xxl", text(texts[2]))
        .with("empty_padding", text(empty_padding));
    let out = run(&ClipTextEncodeSd3, &inputs, s).unwrap();
    (*handle::<Conditioning>(&out[0])).clone()
}

/// The MMDiT (UNETLoader, default weights) and the VAE (VAELoader) from the separate files.
fn separate_model_and_vae(s: &Setup) -> (Value, Value) {
    let f = COMPONENT_FILES;
    let unet = UnetLoader {
        paths: s.paths.clone(),
    };
    let inputs = Inputs::new()
        .with("unet_name", file_name(f.diffusion_model))
        .with("weight_dtype", text("default"));
    let model = run(&unet, &inputs, s).unwrap().remove(0);
    let vae = VaeLoader {
        paths: s.paths.clone(),
    };
    let inputs = Inputs::new().with("vae_name", file_name(f.vae));
    let vae = run(&vae, &inputs, s).unwrap().remove(0);
    (model, vae)
}

/// KSampler then VAEDecode on a 64×64 empty latent.
fn generate(s: &Setup, model: &Value, vae: &Value, positive: Value, negative: Value) -> Tensor {
    let latent_inputs = Inputs::new()
        .with("width", Value::Int(64))
        .with("height", Value::Int(64))
        .with("batch_size", Value::Int(1));
    let latent = run(&EmptySd3LatentImage, &latent_inputs, s)
        .unwrap()
        .remove(0);
    let inputs = Inputs::new()
        .with("model", model.clone())
        .with("positive", positive)
        .with("negative", negative)
        .with("seed", Value::Int(42))
        .with("steps", Value::Int(3))
        .with("cfg", Value::Float(4.5))
        .with("sampler_name", text("euler"))
        .with("scheduler", text("sgm_uniform"))
        .with("latent_image", latent)
        .with("denoise", Value::Float(1.0));
    let sampled = run(&KSampler, &inputs, s).unwrap().remove(0);
    let decode = Inputs::new()
        .with("samples", sampled)
        .with("vae", vae.clone());
    let image = run(&VaeDecode, &decode, s).unwrap().remove(0);
    handle::<Image>(&image).pixels.clone()
}

#[test]
fn separate_files_give_the_image_of_the_single_file() {
    let s = setup();
    let checkpoint = CheckpointLoader::checkpoint_loader_simple(s.paths.clone());
    let single = run(
        &checkpoint,
        &Inputs::new().with("ckpt_name", text(SINGLE_FILE)),
        &s,
    )
    .unwrap();
    let encode = |clip: &Value, prompt: &str| Value::handle(clip_text_encode(&s, clip, prompt));
    let expected = generate(
        &s,
        &single[0],
        &single[2],
        encode(&single[1], "a lettuce mantis"),
        encode(&single[1], ""),
    );

    let (model, vae) = separate_model_and_vae(&s);
    let clip = separate_clip(&s);
    let prompt = "a lettuce mantis";
    let positive = encode_sd3(&s, &clip, [prompt; 3], "empty_prompt");
    let negative = encode_sd3(&s, &clip, [""; 3], "empty_prompt");
    let got = generate(
        &s,
        &model,
        &vae,
        Value::handle(positive),
        Value::handle(negative),
    );
    assert_eq!(max_abs_diff(&got, &expected), 0.0);
}

#[test]
fn clip_text_encode_sd3_with_one_text_is_clip_text_encode() {
    let s = setup();
    let clip = separate_clip(&s);
    let encoders = handle::<Sd3TextEncoders>(&clip);
    for prompt in ["a lettuce mantis", ""] {
        let plain = encoders.encode(prompt).unwrap();
        let each = encode_sd3(&s, &clip, [prompt; 3], "empty_prompt");
        assert_eq!(
            max_abs_diff(&each.context, &plain.context),
            0.0,
            "{prompt:?}"
        );
        assert_eq!(max_abs_diff(&each.pooled, &plain.pooled), 0.0, "{prompt:?}");
    }
    // With `none`, non-empty texts encode as with `empty_prompt`.
    let full = ["a lettuce mantis", "in a garden", "at dawn"];
    let a = encode_sd3(&s, &clip, full, "none");
    let b = encode_sd3(&s, &clip, full, "empty_prompt");
    assert_eq!(a.context.dims(), &[1, 77 + 256, 128]);
    assert_eq!(max_abs_diff(&a.context, &b.context), 0.0);
}

#[test]
fn empty_texts_with_padding_none_drop_their_part_as_comfyui() {
    let s = setup();
    let clip = separate_clip(&s);
    let encoders = handle::<Sd3TextEncoders>(&clip);
    let prompt = "a lettuce mantis";
    let reference = encode_sd3(&s, &clip, [prompt; 3], "empty_prompt");

    // Empty T5 text: T5 sees its end token only, one row after the 77 CLIP rows.
    let no_t5 = encode_sd3(&s, &clip, [prompt, prompt, ""], "none");
    assert_eq!(no_t5.context.dims(), &[1, 77 + 1, 128]);
    let clip_rows = |c: &Conditioning| c.context.narrow(1, 0, 77).unwrap();
    assert_eq!(
        max_abs_diff(&clip_rows(&no_t5), &clip_rows(&reference)),
        0.0
    );
    assert_eq!(max_abs_diff(&no_t5.pooled, &reference.pooled), 0.0);
    let t5_empty = encode_sd3(&s, &clip, [prompt, prompt, ""], "empty_prompt");
    assert_eq!(t5_empty.context.dims(), &[1, 77 + 256, 128]);

    // Both CLIP texts empty: no CLIP rows, a zero pooled vector.
    let t5_only = encode_sd3(&s, &clip, ["", "", prompt], "none");
    assert_eq!(t5_only.context.dims(), &[1, 256, 128]);
    let t5_rows = reference.context.narrow(1, 77, 256).unwrap();
    assert_eq!(max_abs_diff(&t5_only.context, &t5_rows), 0.0);
    assert_eq!(max_abs(&t5_only.pooled), 0.0);
    assert_eq!(t5_only.pooled.dims(), reference.pooled.dims());

    // One CLIP text empty: ComfyUI pads it with the empty prompt, as `empty_prompt`.
    let one_empty = encode_sd3(&s, &clip, ["", prompt, prompt], "none");
    let padded = encode_sd3(&s, &clip, ["", prompt, prompt], "empty_prompt");
    assert_eq!(max_abs_diff(&one_empty.context, &padded.context), 0.0);
    let empty_l = encoders.encode("").unwrap();
    let l_width = 32;
    let l_cols = |c: &Conditioning| {
        c.context
            .narrow(1, 0, 77)
            .unwrap()
            .narrow(2, 0, l_width)
            .unwrap()
    };
    assert_eq!(max_abs_diff(&l_cols(&one_empty), &l_cols(&empty_l)), 0.0);

    // Everything empty: T5's end token alone.
    let nothing = encode_sd3(&s, &clip, ["", "", ""], "none");
    assert_eq!(nothing.context.dims(), &[1, 1, 128]);

    // Positive and negative of different lengths sample (each at its own length here:
    // 333 and 78 rows are too far apart for ComfyUI's batching).
    let (model, vae) = separate_model_and_vae(&s);
    let image = generate(
        &s,
        &model,
        &vae,
        Value::handle(reference),
        Value::handle(nothing),
    );
    assert_eq!(image.dims(), &[1, 64, 64, 3]);
}

fn error_of(result: Result<Vec<Value>, NodeError>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn files_of_the_wrong_kind_and_missing_files_are_named() {
    let s = setup();
    let f = COMPONENT_FILES;
    let unet = UnetLoader {
        paths: s.paths.clone(),
    };
    let unet_with = |name: &str| {
        let inputs = Inputs::new()
            .with("unet_name", text(name))
            .with("weight_dtype", text("default"));
        run(&unet, &inputs, &s)
    };
    // The VAE file copied where diffusion models go.
    let misplaced = s
        .paths
        .model_folder("diffusion_models")
        .join("vae.safetensors");
    std::fs::copy(s.paths.models_dir.join(f.vae), &misplaced).unwrap();
    let err = error_of(unet_with("vae.safetensors"));
    assert!(err.contains("vae.safetensors"), "{err}");
    assert!(
        err.contains("not an SD3 diffusion model: it holds a VAE"),
        "{err}"
    );
    let err = error_of(unet_with("nope.safetensors"));
    assert!(err.contains("`nope.safetensors` is not in"), "{err}");
    assert!(
        err.contains("diffusion_models") && err.contains("unet"),
        "{err}"
    );

    let vae = VaeLoader {
        paths: s.paths.clone(),
    };
    let models = s.paths.model_folder("vae");
    std::fs::copy(
        s.paths.models_dir.join(f.clip_g),
        models.join("clip_g.safetensors"),
    )
    .unwrap();
    let err = error_of(run(
        &vae,
        &Inputs::new().with("vae_name", text("clip_g.safetensors")),
        &s,
    ));
    assert!(
        err.contains("not a VAE: it holds a CLIP text encoder"),
        "{err}"
    );

    let err = error_of(triple_clip(&s, [f.clip_l, f.clip_l, f.t5xxl]));
    assert!(err.contains("holds clip_l, as clip_name1 does"), "{err}");
    let text_encoders = s.paths.model_folder("text_encoders");
    std::fs::copy(
        s.paths.models_dir.join(f.vae),
        text_encoders.join("vae.safetensors"),
    )
    .unwrap();
    let err = error_of(triple_clip(&s, [f.clip_l, f.clip_g, "vae.safetensors"]));
    assert!(err.contains("clip_name3"), "{err}");
    assert!(
        err.contains("not a CLIP-L, CLIP-G or T5-XXL text encoder: it holds a VAE"),
        "{err}"
    );

    let err = error_of(clip_loader(&s, f.clip_l, "flux2"));
    assert!(err.contains("only SD3"), "{err}");
    let err = error_of(clip_loader(&s, "vae.safetensors", "sd3"));
    assert!(err.contains("it holds a VAE"), "{err}");
}

fn clip_loader(s: &Setup, file: &str, clip_type: &str) -> Result<Vec<Value>, NodeError> {
    let inputs = Inputs::new()
        .with("clip_name", file_name(file))
        .with("type", text(clip_type));
    let loader = ClipLoader {
        paths: s.paths.clone(),
    };
    run(&loader, &inputs, s)
}

fn clip_text_encode(s: &Setup, clip: &Value, prompt: &str) -> Conditioning {
    let inputs = Inputs::new()
        .with("clip", clip.clone())
        .with("text", text(prompt));
    let out = run(&ClipTextEncode, &inputs, s).unwrap();
    (*handle::<Conditioning>(&out[0])).clone()
}

/// Columns `start..start + len` of the rows `rows` of a `[1, rows, width]` context.
fn block(t: &Tensor, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) -> Tensor {
    t.narrow(1, rows.start, rows.len())
        .unwrap()
        .narrow(t.rank() - 1, cols.start, cols.len())
        .unwrap()
}

/// Columns `cols` of a `[1, width]` pooled vector.
fn pooled_part(t: &Tensor, cols: std::ops::Range<usize>) -> Tensor {
    t.narrow(1, cols.start, cols.len()).unwrap()
}

#[test]
fn clip_loader_loads_each_single_file_as_comfyui() {
    let s = setup();
    let f = COMPONENT_FILES;
    let prompt = "a lettuce mantis";
    let full = clip_text_encode(&s, &separate_clip(&s), prompt);
    let cfg = Sd3TextConfig::tiny();
    let (l, g, joint) = (
        cfg.clip_l.hidden_size,
        cfg.clip_g.hidden_size,
        cfg.joint_dim,
    );
    let (pl, pg) = (cfg.clip_l.projection_dim, cfg.clip_g.projection_dim);
    let (clip_rows, t5_rows) = (0..77, 77..77 + cfg.t5_len);
    let same = |a: &Tensor, b: &Tensor| assert_eq!(max_abs_diff(a, b), 0.0);
    let zero = |t: &Tensor| assert_eq!(max_abs(t), 0.0);

    // CLIP-L alone: its columns, then zeros; zeros for T5's rows and CLIP-G's pooled part.
    let only_l = clip_loader(&s, f.clip_l, "sd3").unwrap().remove(0);
    let c = clip_text_encode(&s, &only_l, prompt);
    assert_eq!(c.context.dims(), &[1, 77 + cfg.t5_len, joint]);
    assert_eq!(c.pooled.dims(), &[1, pl + pg]);
    let ctx = |c: &Conditioning, rows, cols| block(&c.context, rows, cols);
    same(
        &ctx(&c, clip_rows.clone(), 0..l),
        &ctx(&full, clip_rows.clone(), 0..l),
    );
    assert!(max_abs(&ctx(&c, clip_rows.clone(), 0..l)) > 0.0);
    zero(&ctx(&c, clip_rows.clone(), l..joint));
    zero(&ctx(&c, t5_rows.clone(), 0..joint));
    same(
        &pooled_part(&c.pooled, 0..pl),
        &pooled_part(&full.pooled, 0..pl),
    );
    zero(&pooled_part(&c.pooled, pl..pl + pg));
    let only_l_cond = c;

    // CLIP-G alone: zeros where CLIP-L's columns are, then CLIP-G's.
    let only_g = clip_loader(&s, f.clip_g, "sd3").unwrap().remove(0);
    let c = clip_text_encode(&s, &only_g, prompt);
    assert_eq!(c.context.dims(), &[1, 77 + cfg.t5_len, joint]);
    zero(&ctx(&c, clip_rows.clone(), 0..l));
    same(
        &ctx(&c, clip_rows.clone(), l..l + g),
        &ctx(&full, clip_rows.clone(), l..l + g),
    );
    zero(&ctx(&c, clip_rows.clone(), l + g..joint));
    zero(&ctx(&c, t5_rows.clone(), 0..joint));
    zero(&pooled_part(&c.pooled, 0..pl));
    same(
        &pooled_part(&c.pooled, pl..pl + pg),
        &pooled_part(&full.pooled, pl..pl + pg),
    );
    let only_g_cond = c;

    // T5 alone: its rows are the whole context, the pooled vector zeros.
    let only_t5 = clip_loader(&s, f.t5xxl, "sd3").unwrap().remove(0);
    let c = clip_text_encode(&s, &only_t5, prompt);
    assert_eq!(c.context.dims(), &[1, cfg.t5_len, joint]);
    same(&c.context, &ctx(&full, t5_rows.clone(), 0..joint));
    assert_eq!(c.pooled.dims(), &[1, pl + pg]);
    zero(&c.pooled);
    let only_t5_cond = c;

    // CLIPTextEncodeSD3 with one text in all three is CLIPTextEncode on a partial CLIP too.
    for (clip, plain) in [
        (&only_l, &only_l_cond),
        (&only_g, &only_g_cond),
        (&only_t5, &only_t5_cond),
    ] {
        let each = encode_sd3(&s, clip, [prompt; 3], "empty_prompt");
        same(&each.context, &plain.context);
        same(&each.pooled, &plain.pooled);
    }
    // Empty CLIP texts with `none` on a CLIP without T5: no CLIP rows, T5's zero rows.
    let dropped = encode_sd3(&s, &only_l, ["", "", prompt], "none");
    assert_eq!(dropped.context.dims(), &[1, cfg.t5_len, joint]);
    zero(&dropped.context);
    zero(&dropped.pooled);

    // Each samples with the tiny MMDiT and decodes.
    let (model, vae) = separate_model_and_vae(&s);
    for clip in [&only_l, &only_g, &only_t5] {
        let negative = clip_text_encode(&s, clip, "");
        let positive = clip_text_encode(&s, clip, prompt);
        let image = generate(
            &s,
            &model,
            &vae,
            Value::handle(positive),
            Value::handle(negative),
        );
        assert_eq!(image.dims(), &[1, 64, 64, 3]);
        assert!(image
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|x| x.is_finite()));
    }
}

#[test]
fn a_partial_set_of_two_encoders_leaves_zeros_for_the_third() {
    let s = setup();
    let f = COMPONENT_FILES;
    let prompt = "a lettuce mantis";
    let full = clip_text_encode(&s, &separate_clip(&s), prompt);
    let cfg = Sd3TextConfig::tiny();
    let (l, pl) = (cfg.clip_l.hidden_size, cfg.clip_l.projection_dim);
    let vb = |file: &str| {
        open_text_encoder(&s.paths.models_dir.join(file))
            .unwrap()
            .var_builder(candle_core::DType::F32, &candle_core::Device::Cpu)
    };
    // DualCLIPLoader-style CLIP-G and T5.
    let vbs = EncoderVarBuilders {
        clip_l: None,
        clip_g: Some(vb(f.clip_g)),
        t5: Some(vb(f.t5xxl)),
    };
    let encoders = Sd3TextEncoders::new(&cfg, Some(T5Tokenizer::shipped().unwrap()), vbs).unwrap();
    let c = encoders.encode(prompt).unwrap();
    assert_eq!(c.context.dims(), full.context.dims());
    let joint = cfg.joint_dim;
    assert_eq!(max_abs(&block(&c.context, 0..77, 0..l)), 0.0);
    assert_eq!(
        max_abs_diff(
            &block(&c.context, 0..77, l..joint),
            &block(&full.context, 0..77, l..joint)
        ),
        0.0
    );
    let t5_rows = 77..77 + cfg.t5_len;
    assert_eq!(
        max_abs_diff(
            &block(&c.context, t5_rows.clone(), 0..joint),
            &block(&full.context, t5_rows, 0..joint)
        ),
        0.0
    );
    assert_eq!(max_abs(&pooled_part(&c.pooled, 0..pl)), 0.0);
    let rest = pl..c.pooled.dim(1).unwrap();
    assert_eq!(
        max_abs_diff(
            &pooled_part(&c.pooled, rest.clone()),
            &pooled_part(&full.pooled, rest)
        ),
        0.0
    );
    assert!(format!("{encoders:?}").contains("CLIP-G and T5"));

    // Nothing to load is refused.
    let none = EncoderVarBuilders {
        clip_l: None,
        clip_g: None,
        t5: None,
    };
    let err = Sd3TextEncoders::new(&cfg, None, none).unwrap_err();
    assert!(
        format!("{err:#}").contains("no text encoder to load"),
        "{err:#}"
    );
}

#[test]
fn cretok_on_a_clip_without_clip_l_is_a_clear_error() {
    let s = setup();
    let f = COMPONENT_FILES;
    let cfg = Sd3TextConfig::tiny();
    let mut token = CreTokToken::default();
    for (id, width) in [
        (EncoderId::ClipL, cfg.clip_l.hidden_size),
        (EncoderId::ClipG, cfg.clip_g.hidden_size),
    ] {
        let v = Tensor::ones(
            (1, width),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        );
        token.vectors.insert(id, v.unwrap());
    }
    token.metadata.insert("word".into(), "creative".into());
    for (file, holds) in [(f.clip_g, "only CLIP-G"), (f.t5xxl, "only T5")] {
        let clip = clip_loader(&s, file, "sd3").unwrap().remove(0);
        let inputs = Inputs::new()
            .with("clip", clip)
            .with("cretok", Value::handle(token.clone()))
            .with("text", text("a photo of a creative mixture"))
            .with("strength", Value::Float(1.0));
        let err = error_of(run(&CreTokEncode, &inputs, &s));
        assert!(err.contains("CreTok needs CLIP-L and CLIP-G"), "{err}");
        assert!(
            err.contains(&format!("this CLIP has no CLIP-L (it holds {holds})")),
            "{err}"
        );
    }
}

#[test]
fn legacy_folders_unet_and_clip_are_read_too() {
    let s = setup();
    let f = COMPONENT_FILES;
    for (from, folder) in [(f.diffusion_model, "unet"), (f.clip_l, "clip")] {
        let dir = s.paths.model_folder(folder);
        std::fs::create_dir_all(&dir).unwrap();
        let name = format!("legacy_{}", from.rsplit('/').next().unwrap());
        std::fs::rename(s.paths.models_dir.join(from), dir.join(name)).unwrap();
    }
    let unet = UnetLoader {
        paths: s.paths.clone(),
    };
    let listed = unet.schema().to_object_info()["input"]["required"]["unet_name"][0].clone();
    assert_eq!(listed, json!(["legacy_tiny-sd3-mmdit.safetensors"]));
    let inputs = Inputs::new()
        .with("unet_name", text("legacy_tiny-sd3-mmdit.safetensors"))
        .with("weight_dtype", text("fp8_e4m3fn"));
    run(&unet, &inputs, &s).unwrap();
    let triple = TripleClipLoader {
        paths: s.paths.clone(),
    };
    let listed = triple.schema().to_object_info()["input"]["required"]["clip_name1"][0].clone();
    assert_eq!(
        listed,
        json!([
            "clip_g.safetensors",
            "legacy_clip_l.safetensors",
            "t5xxl.safetensors"
        ])
    );
    triple_clip(&s, ["legacy_clip_l.safetensors", f.clip_g, f.t5xxl]).unwrap();
}

#[test]
fn schemas_are_comfyuis() {
    let s = setup();
    let paths = s.paths.clone();
    let info = |node: &dyn Node| node.schema().to_object_info();
    let unet = info(&UnetLoader {
        paths: paths.clone(),
    });
    assert_eq!(unet["category"], "advanced/loaders");
    assert_eq!(unet["output"], json!(["MODEL"]));
    assert_eq!(
        unet["input"]["required"]["weight_dtype"][0],
        json!([
            "default",
            "fp8_e4m3fn",
            "fp8_e4m3fn_fast",
            "fp8_e5m2",
            "int8"
        ])
    );
    let vae = info(&VaeLoader {
        paths: paths.clone(),
    });
    assert_eq!(vae["category"], "loaders");
    assert_eq!(vae["output"], json!(["VAE"]));
    assert_eq!(
        vae["input"]["required"]["vae_name"][0],
        json!(["tiny-sd3-vae.safetensors"])
    );
    let clip = info(&ClipLoader {
        paths: paths.clone(),
    });
    assert_eq!(clip["output"], json!(["CLIP"]));
    let types = clip["input"]["required"]["type"][0].as_array().unwrap();
    assert_eq!(types[0], "stable_diffusion");
    assert!(types.contains(&json!("sd3")));
    assert_eq!(
        clip["input"]["optional"]["device"][0],
        json!(["default", "cpu"])
    );
    let triple = info(&TripleClipLoader { paths });
    assert_eq!(triple["output"], json!(["CLIP"]));
    assert_eq!(
        triple["input_order"]["required"],
        json!(["clip_name1", "clip_name2", "clip_name3"])
    );
    let encode = info(&ClipTextEncodeSd3);
    assert_eq!(encode["category"], "advanced/conditioning");
    assert_eq!(encode["output"], json!(["CONDITIONING"]));
    assert_eq!(
        encode["input_order"]["required"],
        json!(["clip", "clip_l", "clip_g", "t5xxl", "empty_padding"])
    );
    assert_eq!(
        encode["input"]["required"]["empty_padding"][0],
        json!(["none", "empty_prompt"])
    );
    assert_eq!(encode["input"]["required"]["t5xxl"][1]["multiline"], true);
}
