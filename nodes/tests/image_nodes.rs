//! The image nodes end to end on the tiny SD3 checkpoint: latent, sampling
//! (progress, previews, cancel), decode, and PNG saving with ComfyUI metadata.

mod common;

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use cretok_nodes::builtin::{
    BasicGuider, BasicScheduler, CfgGuider, ConditioningAverage, ConditioningCombine,
    ConditioningConcat, ConditioningSetTimestepRange, ConditioningZeroOut, DisableNoise,
    EmptySd3LatentImage, KSampler, KSamplerAdvanced, KSamplerSelect, ModelSamplingSd3,
    PreviewImage, RandomNoise, Sample, SamplerCustomAdvanced, SaveImage, SetLatentNoiseMask,
    SplitSigmas, VaeDecode, VaeDecodeTiled, VaeEncode,
};
use cretok_nodes::sd3::checkpoint::Sd3Checkpoint;
use cretok_nodes::sd3::sampling::{seeded_noise, DiffusionModel};
use cretok_nodes::sd3::types::{Conditioning, Image, Latent, Mask};
use cretok_nodes::sd3::vae::AutoEncoder;
use cretok_nodes::{
    CancelToken, EventSink, Inputs, Node, NodeError, Paths, PreviewFormat, PreviewMethod,
    RunContext, Value,
};

use common::{handle, max_abs, max_abs_diff};

#[derive(Default)]
struct Recorder {
    progress: Mutex<Vec<(u64, u64)>>,
    previews: Mutex<Vec<(PreviewFormat, Vec<u8>)>>,
    cancel_after: Option<(CancelToken, u64)>,
}

impl EventSink for Recorder {
    fn progress(&self, _: &str, value: u64, max: u64) {
        self.progress.lock().unwrap().push((value, max));
        if let Some((token, at)) = &self.cancel_after {
            if value >= *at {
                token.cancel();
            }
        }
    }
    fn preview(&self, _: &str, format: PreviewFormat, bytes: Vec<u8>) {
        self.previews.lock().unwrap().push((format, bytes));
    }
    fn text(&self, _: &str, _: &str) {}
}

struct Setup {
    dir: tempfile::TempDir,
    paths: Paths,
    model: DiffusionModel,
    vae: AutoEncoder,
    positive: Conditioning,
}

fn setup() -> Setup {
    use cretok_nodes::sd3::tiny::{write_single_file, TinyOptions, TinyVariant};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.safetensors");
    let opts = TinyOptions {
        variant: TinyVariant::Sd3Medium,
        seed: 3,
        clips: false,
        t5: false,
        positions: None,
    };
    write_single_file(&file, &opts).unwrap();
    let ckpt = Sd3Checkpoint::open(&file, &[]).unwrap();
    let dev = Device::Cpu;
    let model = DiffusionModel {
        mmdit: Arc::new(ckpt.load_mmdit(DType::F32, &dev).unwrap()),
        shift: 3.0,
        shift_from_model_sampling: false,
        skip_layer_patches: Vec::new(),
    };
    let vae = ckpt.load_vae(DType::F32, &dev).unwrap();
    let positive = Conditioning {
        context: seeded_noise(1, &[1, 12, 128], &dev).unwrap(),
        pooled: seeded_noise(2, &[1, 96], &dev).unwrap(),
    };
    let paths = Paths::new(dir.path(), None);
    Setup {
        dir,
        paths,
        model,
        vae,
        positive,
    }
}

fn run(
    node: &dyn Node,
    inputs: &Inputs,
    s: &Setup,
    sink: &Recorder,
    cancel: &CancelToken,
) -> Result<cretok_nodes::NodeOutput, NodeError> {
    let ctx = RunContext::new("7", &s.paths, cancel, sink).with_previews(PreviewMethod::Latent2Rgb);
    node.run(inputs, &ctx)
}

fn sampler_inputs(s: &Setup, negative: &Conditioning) -> Inputs {
    Inputs::new()
        .with("model", Value::handle(s.model.clone()))
        .with("positive", Value::handle(s.positive.clone()))
        .with("negative", Value::handle(negative.clone()))
        .with("seed", Value::Int(42))
        .with("steps", Value::Int(4))
        .with("cfg", Value::Float(4.5))
        .with("shift", Value::Float(3.0))
        .with("width", Value::Int(64))
        .with("height", Value::Int(48))
        .with("batch_size", Value::Int(2))
}

#[test]
fn text_to_image_to_png_with_progress_previews_and_metadata() {
    let s = setup();
    let sink = Recorder::default();
    let cancel = CancelToken::new();
    let zero = node_output(
        &ConditioningZeroOut,
        Inputs::new().with("conditioning", Value::handle(s.positive.clone())),
        &s,
    );
    let negative = handle::<Conditioning>(&zero);
    assert_eq!(max_abs(&negative.pooled), 0.0);

    let out = run(&Sample, &sampler_inputs(&s, &negative), &s, &sink, &cancel).unwrap();
    let latent = handle::<Latent>(&out.values[0]);
    assert_eq!(latent.samples.dims(), &[2, 16, 6, 8]);
    assert_eq!(
        *sink.progress.lock().unwrap(),
        vec![(1, 4), (2, 4), (3, 4), (4, 4)]
    );
    {
        let previews = sink.previews.lock().unwrap();
        assert_eq!(previews.len(), 2, "after step 3 and the last");
        assert!(previews[0].1.starts_with(b"\x89PNG"));
    }
    // Same seed, same latents.
    let again = run(&Sample, &sampler_inputs(&s, &negative), &s, &sink, &cancel).unwrap();
    assert_eq!(max_abs_diff(&latent.samples, &samples(&again)), 0.0);

    let decode = Inputs::new()
        .with("samples", out.values[0].clone())
        .with("vae", Value::handle(s.vae.clone()));
    let image = handle::<Image>(&node_output(&VaeDecode, decode, &s));
    assert_eq!(image.pixels.dims(), &[2, 48, 64, 3]);

    let prompt = serde_json::json!({"7": {"class_type": "SaveImage", "inputs": {}}});
    let extra = serde_json::json!({"workflow": {"nodes": []}});
    let ctx =
        RunContext::new("9", &s.paths, &cancel, &sink).with_prompt(Some(&prompt), Some(&extra));
    let inputs = Inputs::new()
        .with("images", Value::handle((*image).clone()))
        .with("filename_prefix", Value::String("sd3/tiny".into()));
    let saved = SaveImage.run(&inputs, &ctx).unwrap();
    let ui = saved.ui.unwrap();
    assert_eq!(ui["images"][1]["filename"], "tiny_00002_.png");
    assert_eq!(ui["images"][0]["subfolder"], "sd3");
    let png = std::fs::read(s.dir.path().join("output/sd3/tiny_00001_.png")).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    assert_eq!((info.width, info.height), (64, 48));
    let texts: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    assert_eq!(
        texts,
        vec![
            ("prompt".to_string(), prompt.to_string()),
            ("workflow".to_string(), r#"{"nodes":[]}"#.to_string()),
        ]
    );

    let preview = PreviewImage
        .run(
            &Inputs::new().with("images", Value::handle((*image).clone())),
            &ctx,
        )
        .unwrap();
    assert_eq!(preview.ui.unwrap()["images"][0]["type"], "temp");
}

#[test]
fn cancel_during_sampling_interrupts() {
    let s = setup();
    let cancel = CancelToken::new();
    let sink = Recorder {
        cancel_after: Some((cancel.clone(), 2)),
        ..Recorder::default()
    };
    let err = run(
        &Sample,
        &sampler_inputs(&s, &s.positive),
        &s,
        &sink,
        &cancel,
    )
    .unwrap_err();
    assert!(matches!(err, NodeError::Interrupted), "{err}");
    assert_eq!(sink.progress.lock().unwrap().len(), 2);
}

#[test]
fn vae_decode_tiled_blends_tiles_and_equals_the_whole_decode_when_one_tile_holds_it() {
    let s = setup();
    let latent = Value::handle(Latent {
        samples: seeded_noise(5, &[1, 16, 6, 8], &Device::Cpu).unwrap(),
        noise_mask: None,
    });
    let decode = |node: &dyn Node, tile_size: i64| {
        let inputs = Inputs::new()
            .with("samples", latent.clone())
            .with("vae", Value::handle(s.vae.clone()))
            .with("tile_size", Value::Int(tile_size))
            .with("overlap", Value::Int(16))
            .with("temporal_size", Value::Int(64))
            .with("temporal_overlap", Value::Int(8));
        handle::<Image>(&node_output(node, inputs, &s))
            .pixels
            .clone()
    };
    let whole = decode(&VaeDecode, 0);
    // 16×16 latent tiles: each pass's tiles (32×8, 8×32, 16×16) hold the 6×8 latent whole.
    let one_tile = decode(&VaeDecodeTiled, 128);
    assert!(max_abs_diff(&one_tile, &whole) < 1e-6);
    // 8×8 latent tiles: three, two and one tiles in the three passes, blended, with progress
    // in tiles.
    let tiled = decode(&VaeDecodeTiled, 64);
    let (sink, cancel) = (Recorder::default(), CancelToken::new());
    let inputs = Inputs::new()
        .with("samples", latent.clone())
        .with("vae", Value::handle(s.vae.clone()))
        .with("tile_size", Value::Int(64))
        .with("overlap", Value::Int(16));
    run(&VaeDecodeTiled, &inputs, &s, &sink, &cancel).unwrap();
    let progress = sink.progress.lock().unwrap().clone();
    assert_eq!(progress.last(), Some(&(6, 6)), "{progress:?}");
    assert_eq!(tiled.dims(), whole.dims());
    let diff = max_abs_diff(&tiled, &whole);
    let mean: f32 = (&tiled - &whole)
        .unwrap()
        .abs()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    eprintln!("tiled against whole: max {diff}, mean {mean}");
    assert!(diff > 0.0, "the tiles must see less than the whole latent");
}

#[test]
fn ksampler_img2img_keeps_more_of_the_input_at_low_denoise() {
    let s = setup();
    let sink = Recorder::default();
    let cancel = CancelToken::new();
    let shifted = shifted_model(&s, 2.0);
    assert_eq!(handle::<DiffusionModel>(&shifted).shift, 2.0);

    let size = Inputs::new()
        .with("width", Value::Int(64))
        .with("height", Value::Int(64))
        .with("batch_size", Value::Int(1));
    let empty = node_output(&EmptySd3LatentImage, size, &s);
    assert_eq!(handle::<Latent>(&empty).samples.dims(), &[1, 16, 8, 8]);

    let pixels = seeded_noise(5, &[1, 64, 64, 3], &Device::Cpu)
        .unwrap()
        .affine(0.1, 0.5)
        .unwrap();
    let encode = Inputs::new()
        .with("pixels", Value::handle(Image { pixels }))
        .with("vae", Value::handle(s.vae.clone()));
    let encoded = node_output(&VaeEncode, encode, &s);
    let start = handle::<Latent>(&encoded);
    assert_eq!(start.samples.dims(), &[1, 16, 8, 8]);

    let distance = |denoise: f64| -> f32 {
        let inputs = Inputs::new()
            .with("model", shifted.clone())
            .with("positive", Value::handle(s.positive.clone()))
            .with("negative", Value::handle(s.positive.clone()))
            .with("seed", Value::Int(1))
            .with("steps", Value::Int(4))
            .with("cfg", Value::Float(1.0))
            .with("sampler_name", Value::String("euler".into()))
            .with("scheduler", Value::String("simple".into()))
            .with("latent_image", encoded.clone())
            .with("denoise", Value::Float(denoise));
        let out = run(&KSampler, &inputs, &s, &sink, &cancel).unwrap();
        let d: Tensor = (&handle::<Latent>(&out.values[0]).samples - &start.samples).unwrap();
        d.sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert!(distance(0.25) < distance(1.0));
    assert_eq!(distance(0.0), 0.0, "denoise 0 returns the latent unchanged");
}

/// KSampler's inputs for `sampler` on a 1×16×8×8 latent of zeros.
fn ksampler_inputs(s: &Setup, sampler: &str) -> Inputs {
    Inputs::new()
        .with("model", Value::handle(s.model.clone()))
        .with("positive", Value::handle(s.positive.clone()))
        .with("negative", Value::handle(s.positive.clone()))
        .with("seed", Value::Int(7))
        .with("noise_seed", Value::Int(7))
        .with("steps", Value::Int(4))
        .with("cfg", Value::Float(1.0))
        .with("sampler_name", Value::String(sampler.into()))
        .with("scheduler", Value::String("sgm_uniform".into()))
        .with("latent_image", zero_latent())
        .with("denoise", Value::Float(1.0))
}

/// The 1×16×8×8 latent of zeros that [`ksampler_inputs`] samples.
fn zero_latent() -> Value {
    let zeros = Tensor::zeros(&[1, 16, 8, 8], DType::F32, &Device::Cpu).unwrap();
    Value::handle(Latent::new(zeros))
}

/// [`ksampler_inputs`] guided at cfg 4.5 by `negative`.
fn guided_inputs(s: &Setup, sampler: &str, negative: Value) -> Inputs {
    ksampler_inputs(s, sampler)
        .with("negative", negative)
        .with("cfg", Value::Float(4.5))
}

/// KSamplerAdvanced on KSampler's `inputs` over steps `start..end`; `add_noise` and
/// `leftover` (`return_with_leftover_noise`) are "enable" or "disable". Its latent.
fn sample_advanced(
    s: &Setup,
    inputs: Inputs,
    add_noise: &str,
    (start, end): (i64, i64),
    leftover: &str,
) -> Value {
    let inputs = inputs
        .with("add_noise", Value::String(add_noise.into()))
        .with("start_at_step", Value::Int(start))
        .with("end_at_step", Value::Int(end))
        .with("return_with_leftover_noise", Value::String(leftover.into()));
    node_output(&KSamplerAdvanced, inputs, s)
}

/// The samples of the latent a sampler node returned.
fn samples(out: &cretok_nodes::NodeOutput) -> Tensor {
    handle::<Latent>(&out.values[0]).samples.clone()
}

/// The diffusion model with `shift` (ModelSamplingSD3).
fn shifted_model(s: &Setup, shift: f64) -> Value {
    let inputs = Inputs::new()
        .with("model", Value::handle(s.model.clone()))
        .with("shift", Value::Float(shift));
    node_output(&ModelSamplingSd3, inputs, s)
}

#[test]
fn ksampler_runs_every_comfy_sampler() {
    use cretok_nodes::sd3::sampling::Sampler;
    let s = setup();
    let (sink, cancel) = (Recorder::default(), CancelToken::new());
    for name in Sampler::COMFY_NAMES {
        let out = run(&KSampler, &ksampler_inputs(&s, name), &s, &sink, &cancel).unwrap();
        let samples = &handle::<Latent>(&out.values[0]).samples;
        assert_eq!(samples.dims(), &[1, 16, 8, 8], "{name}");
        let finite = samples.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(finite.iter().all(|v| v.is_finite()), "{name}");
    }
    let unknown = ksampler_inputs(&s, "dpm_fast");
    assert!(run(&KSampler, &unknown, &s, &sink, &cancel).is_err());
}

#[test]
fn ksampler_guides_below_cfg_1_as_comfyui_does() {
    let s = setup();
    let (sink, cancel) = (Recorder::default(), CancelToken::new());
    let negative = Conditioning {
        context: seeded_noise(8, &[1, 12, 128], &Device::Cpu).unwrap(),
        pooled: seeded_noise(9, &[1, 96], &Device::Cpu).unwrap(),
    };
    let at = |cfg: f64| {
        let inputs = ksampler_inputs(&s, "euler")
            .with("negative", Value::handle(negative.clone()))
            .with("cfg", Value::Float(cfg));
        samples(&run(&KSampler, &inputs, &s, &sink, &cancel).unwrap())
    };
    // cfg 1 is the positive alone; 0.5 blends in the negative (diffusers would not guide).
    assert!(max_abs_diff(&at(0.5), &at(1.0)) > 1e-3);
}

#[test]
fn ksampler_advanced_in_two_stages_equals_one_ksampler() {
    let s = setup();
    let (sink, cancel) = (Recorder::default(), CancelToken::new());
    let whole = run(&KSampler, &ksampler_inputs(&s, "euler"), &s, &sink, &cancel).unwrap();
    let whole = handle::<Latent>(&whole.values[0]);
    let stage = |latent: Value, add_noise: &str, start: i64, end: i64, leftover: &str| {
        let inputs = ksampler_inputs(&s, "euler").with("latent_image", latent);
        sample_advanced(&s, inputs, add_noise, (start, end), leftover)
    };
    let zeros = zero_latent();
    let first = stage(zeros.clone(), "enable", 0, 2, "enable");
    let second = stage(first.clone(), "disable", 2, 10000, "disable");
    let staged = handle::<Latent>(&second);
    assert!(max_abs_diff(&staged.samples, &whole.samples) < 1e-4);

    // Adding noise again in the second stage, or denoising fully in the first, is another run.
    let renoised = handle::<Latent>(&stage(first, "enable", 2, 10000, "disable"));
    assert!(max_abs_diff(&renoised.samples, &whole.samples) > 1e-2);
    let full_first = stage(zeros, "enable", 0, 2, "disable");
    let restarted = handle::<Latent>(&stage(full_first, "disable", 2, 10000, "disable"));
    assert!(max_abs_diff(&restarted.samples, &whole.samples) > 1e-2);
    // A window past the last step returns the latent unchanged.
    let past = stage(second.clone(), "enable", 4, 10000, "disable");
    assert_eq!(
        max_abs_diff(&handle::<Latent>(&past).samples, &staged.samples),
        0.0
    );
}

#[test]
fn samplers_send_no_previews_unless_switched_on() {
    let s = setup();
    let sink = Recorder::default();
    let cancel = CancelToken::new();
    let ctx = RunContext::new("7", &s.paths, &cancel, &sink);
    assert_eq!(ctx.previews, PreviewMethod::None);
    Sample.run(&sampler_inputs(&s, &s.positive), &ctx).unwrap();
    assert_eq!(sink.progress.lock().unwrap().len(), 4);
    assert!(sink.previews.lock().unwrap().is_empty());
}

#[test]
fn sample_takes_the_shift_of_a_linked_model_sampling_sd3() {
    let s = setup();
    let sink = Recorder::default();
    let cancel = CancelToken::new();
    let latent = |model: Value, widget_shift: f64| -> Tensor {
        let inputs = sampler_inputs(&s, &s.positive)
            .with("model", model)
            .with("shift", Value::Float(widget_shift))
            .with("steps", Value::Int(2));
        samples(&run(&Sample, &inputs, &s, &sink, &cancel).unwrap())
    };
    let shifted = shifted_model(&s, 1.5);
    let plain = Value::handle(s.model.clone());
    let via_node = latent(shifted, 3.0);
    assert!(!sink.previews.lock().unwrap().is_empty());
    assert_eq!(max_abs_diff(&via_node, &latent(plain.clone(), 1.5)), 0.0);
    assert!(max_abs_diff(&via_node, &latent(plain, 3.0)) > 0.0);
}

#[test]
fn load_sd3_lists_and_loads_both_layouts_then_generates() {
    use cretok_nodes::builtin::CheckpointLoader;
    use cretok_nodes::sd3::text_encoders::Sd3TextEncoders;
    use cretok_nodes::sd3::tiny::{write_diffusers, write_single_file, TinyOptions, TinyVariant};
    let s = setup();
    let checkpoints = s.paths.model_folder("checkpoints");
    std::fs::create_dir_all(&checkpoints).unwrap();
    let opts = TinyOptions {
        variant: TinyVariant::Sd35Medium,
        seed: 11,
        clips: true,
        t5: false,
        positions: None,
    };
    write_single_file(&checkpoints.join("tiny.safetensors"), &opts).unwrap();
    write_diffusers(&checkpoints.join("tiny_diffusers"), &opts).unwrap();
    let flux = checkpoints.join("flux.safetensors");
    let t = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
    let map =
        std::collections::HashMap::from([("double_blocks.0.img_mod.lin.weight".to_string(), t)]);
    candle_core::safetensors::save(&map, &flux).unwrap();

    let node = CheckpointLoader::checkpoint_loader_simple(Arc::new(Paths::new(s.dir.path(), None)));
    assert_eq!(node.schema().name, "CheckpointLoaderSimple");
    let info = node.schema().to_object_info();
    let names = info["input"]["required"]["ckpt_name"][0].clone();
    assert_eq!(
        names,
        serde_json::json!(["flux.safetensors", "tiny.safetensors", "tiny_diffusers"])
    );

    let sink = Recorder::default();
    let cancel = CancelToken::new();
    let mut latents = Vec::new();
    for name in ["tiny.safetensors", "tiny_diffusers"] {
        let inputs = Inputs::new().with("ckpt_name", Value::String(name.into()));
        let out = run(&node, &inputs, &s, &sink, &cancel).unwrap();
        assert_eq!(out.values.len(), 3);
        let clip = handle::<Sd3TextEncoders>(&out.values[1]);
        let positive = clip.encode("a lettuce mantis").unwrap();
        let negative = clip.encode("").unwrap();
        let inputs = sampler_inputs(&s, &negative)
            .with("model", out.values[0].clone())
            .with("positive", Value::handle(positive))
            .with("batch_size", Value::Int(1));
        let sampled = run(&Sample, &inputs, &s, &sink, &cancel).unwrap();
        latents.push(samples(&sampled));
        let decode = Inputs::new()
            .with("samples", sampled.values[0].clone())
            .with("vae", out.values[2].clone());
        run(&VaeDecode, &decode, &s, &sink, &cancel).unwrap();
    }
    assert_eq!(
        max_abs_diff(&latents[0], &latents[1]),
        0.0,
        "layouts must generate the same image"
    );

    let inputs = Inputs::new().with("ckpt_name", Value::String("flux.safetensors".into()));
    let err = run(&node, &inputs, &s, &sink, &cancel).unwrap_err();
    assert!(err.to_string().contains("FLUX"), "{err}");
}

#[test]
fn sample_skip_layer_guidance_inputs() {
    let s = setup();
    let sink = Recorder::default();
    let cancel = CancelToken::new();
    let zero = Conditioning {
        context: s.positive.context.zeros_like().unwrap(),
        pooled: s.positive.pooled.zeros_like().unwrap(),
    };
    let sample = |extra: &[(&str, Value)]| {
        let mut inputs = sampler_inputs(&s, &zero);
        for (k, v) in extra {
            inputs.insert(*k, v.clone());
        }
        run(&Sample, &inputs, &s, &sink, &cancel)
    };
    let plain = handle::<Latent>(&sample(&[]).unwrap().values[0]);
    let slg = [
        ("skip_layers", Value::String(" 0 ".into())),
        ("slg_start", Value::Float(0.0)),
        ("slg_stop", Value::Float(1.0)),
    ];
    let guided = handle::<Latent>(&sample(&slg).unwrap().values[0]);
    assert!(max_abs_diff(&plain.samples, &guided.samples) > 1e-3);
    // The default window (1%-20% of 4 steps) holds no step: same as without SLG.
    let outside = handle::<Latent>(&sample(&slg[..1]).unwrap().values[0]);
    assert_eq!(max_abs_diff(&plain.samples, &outside.samples), 0.0);
    for bad in ["5", "x"] {
        let err = sample(&[("skip_layers", Value::String(bad.into()))]).unwrap_err();
        assert!(matches!(err, NodeError::InvalidInput { .. }), "{err}");
    }
}

/// A conditioning of the tiny model's shape from seeded noise.
fn noise_conditioning(seed: u64) -> Conditioning {
    Conditioning {
        context: seeded_noise(seed, &[1, 12, 128], &Device::Cpu).unwrap(),
        pooled: seeded_noise(seed + 1, &[1, 96], &Device::Cpu).unwrap(),
    }
}

fn node_output(node: &dyn Node, inputs: Inputs, s: &Setup) -> Value {
    let (sink, cancel) = (Recorder::default(), CancelToken::new());
    run(node, &inputs, s, &sink, &cancel).unwrap().values[0].clone()
}

/// `conditioning` limited to `start..end` (ConditioningSetTimestepRange).
fn in_range(s: &Setup, conditioning: Value, start: f64, end: f64) -> Value {
    let inputs = Inputs::new()
        .with("conditioning", conditioning)
        .with("start", Value::Float(start))
        .with("end", Value::Float(end));
    node_output(&ConditioningSetTimestepRange, inputs, s)
}

fn combined(s: &Setup, a: Value, b: Value) -> Value {
    let inputs = Inputs::new()
        .with("conditioning_1", a)
        .with("conditioning_2", b);
    node_output(&ConditioningCombine, inputs, s)
}

#[test]
fn an_entry_whose_range_covers_no_step_changes_nothing() {
    let s = setup();
    let (sink, cancel) = (Recorder::default(), CancelToken::new());
    let (a, b) = (
        Value::handle(noise_conditioning(8)),
        Value::handle(noise_conditioning(20)),
    );
    let sample = |negative: Value| {
        let inputs = guided_inputs(&s, "dpmpp_2m", negative);
        samples(&run(&KSampler, &inputs, &s, &sink, &cancel).unwrap())
    };
    let alone = sample(a.clone());
    // 1..1 is σ = 0 only: never a sampling step.
    let never = combined(&s, a.clone(), in_range(&s, b.clone(), 1.0, 1.0));
    assert_eq!(max_abs_diff(&sample(never), &alone), 0.0);
    // Over the whole run, both negatives guide (averaged).
    let both = sample(combined(&s, a.clone(), b.clone()));
    assert!(max_abs_diff(&both, &alone) > 1e-3);
    assert!(max_abs_diff(&both, &sample(b)) > 1e-3);
    // Two identical entries average to the one.
    assert!(max_abs_diff(&sample(combined(&s, a.clone(), a)), &alone) < 1e-5);
}

#[test]
fn timestep_ranges_switch_the_negative_where_the_schedule_crosses_them() {
    use cretok_nodes::sd3::sampling::{ksampler_sigmas, Scheduler};
    let s = setup();
    let (sink, cancel) = (Recorder::default(), CancelToken::new());
    let (a, b) = (
        Value::handle(noise_conditioning(8)),
        Value::handle(noise_conditioning(20)),
    );
    // The percent whose sigma lies between steps 1 and 2 of the schedule.
    let scheduler = Scheduler::from_comfy_name("sgm_uniform").unwrap();
    let sigmas = ksampler_sigmas(scheduler, 4, 3.0, 1.0, false);
    let sigma = f64::from(sigmas[1] + sigmas[2]) / 2.0;
    let percent = 1.0 - sigma / (3.0 - 2.0 * sigma);
    let switched = combined(
        &s,
        in_range(&s, a.clone(), 0.0, percent),
        in_range(&s, b.clone(), percent, 1.0),
    );
    let inputs = guided_inputs(&s, "euler", switched);
    let ranged = samples(&run(&KSampler, &inputs, &s, &sink, &cancel).unwrap());

    // The same as negative `a` for steps 0..2, then `b` (two KSamplerAdvanced).
    let stage = |latent: Value, negative: &Value, add_noise: &str, start: i64, end: i64| {
        let leftover = if end < 4 { "enable" } else { "disable" };
        let inputs = guided_inputs(&s, "euler", negative.clone()).with("latent_image", latent);
        sample_advanced(&s, inputs, add_noise, (start, end), leftover)
    };
    let zeros = zero_latent();
    let first = stage(zeros, &a, "enable", 0, 2);
    let staged = handle::<Latent>(&stage(first, &b, "disable", 2, 4));
    assert!(max_abs_diff(&staged.samples, &ranged) < 1e-4);

    let inputs = guided_inputs(&s, "euler", a);
    let only_a = samples(&run(&KSampler, &inputs, &s, &sink, &cancel).unwrap());
    assert!(max_abs_diff(&only_a, &ranged) > 1e-3);
}

fn conditioning_value(context: &[f32], tokens: usize, pooled: f32) -> Value {
    let width = context.len() / tokens;
    Value::handle(Conditioning {
        context: Tensor::from_slice(context, (1, tokens, width), &Device::Cpu).unwrap(),
        pooled: Tensor::full(pooled, (1, 2), &Device::Cpu).unwrap(),
    })
}

fn tensors(value: &Value) -> (Vec<f32>, Vec<usize>, Vec<f32>) {
    let c = handle::<Conditioning>(value);
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (flat(&c.context), c.context.dims().to_vec(), flat(&c.pooled))
}

#[test]
fn concat_appends_tokens_and_average_blends_as_comfyui() {
    let s = setup();
    let to = conditioning_value(&[1.0, 2.0, 3.0, 4.0], 2, 1.0);
    let from = conditioning_value(&[10.0, 20.0, 30.0, 40.0, 50.0, 60.0], 3, 5.0);
    let pair = |strength: Option<f64>| {
        let inputs = Inputs::new()
            .with("conditioning_to", to.clone())
            .with("conditioning_from", from.clone());
        match strength {
            None => inputs,
            Some(s) => inputs.with("conditioning_to_strength", Value::Float(s)),
        }
    };
    let (context, dims, pooled) = tensors(&node_output(&ConditioningConcat, pair(None), &s));
    assert_eq!(dims, [1, 5, 2]);
    assert_eq!(
        context,
        [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    );
    assert_eq!(
        pooled,
        [1.0, 1.0],
        "the pooled vector stays conditioning_to's"
    );

    // `from` is cut to `to`'s two tokens: 0.25·to + 0.75·from.
    let out = node_output(&ConditioningAverage, pair(Some(0.25)), &s);
    let (context, dims, pooled) = tensors(&out);
    assert_eq!(dims, [1, 2, 2]);
    assert_eq!(context, [7.75, 15.5, 23.25, 31.0]);
    assert_eq!(pooled, [4.0, 4.0]);
    // A shorter `from` is padded with zeros.
    let inputs = Inputs::new()
        .with("conditioning_to", from.clone())
        .with("conditioning_from", to.clone())
        .with("conditioning_to_strength", Value::Float(0.5));
    let (context, dims, _) = tensors(&node_output(&ConditioningAverage, inputs, &s));
    assert_eq!(dims, [1, 3, 2]);
    assert_eq!(context, [5.5, 11.0, 16.5, 22.0, 25.0, 30.0]);

    // A width mismatch is a clear error, not a panic.
    let wide = conditioning_value(&[1.0, 2.0, 3.0], 1, 1.0);
    let inputs = Inputs::new()
        .with("conditioning_to", to)
        .with("conditioning_from", wide);
    let (sink, cancel) = (Recorder::default(), CancelToken::new());
    let err = run(&ConditioningConcat, &inputs, &s, &sink, &cancel).unwrap_err();
    assert!(err.to_string().contains("different models"), "{err}");
}

#[test]
fn lists_stay_lists_and_zero_out_zeros_every_entry() {
    use cretok_nodes::sd3::types::ConditioningList;
    let s = setup();
    let plain = Value::handle(noise_conditioning(8));
    // The whole range is a plain conditioning again.
    let whole = in_range(&s, plain.clone(), 0.0, 1.0);
    handle::<Conditioning>(&whole);
    let list = combined(&s, plain.clone(), in_range(&s, plain, 0.0, 0.1));
    let zeroed = node_output(
        &ConditioningZeroOut,
        Inputs::new().with("conditioning", list),
        &s,
    );
    let zeroed = handle::<ConditioningList>(&zeroed);
    assert_eq!(zeroed.entries.len(), 2);
    assert_eq!(zeroed.entries[1].range.end, 0.1);
    for entry in &zeroed.entries {
        let sum = entry.cond.context.abs().unwrap().sum_all().unwrap();
        assert_eq!(sum.to_scalar::<f32>().unwrap(), 0.0);
        let sum = entry.cond.pooled.abs().unwrap().sum_all().unwrap();
        assert_eq!(sum.to_scalar::<f32>().unwrap(), 0.0);
    }
}

#[test]
fn sampler_custom_advanced_equals_ksampler_and_chains_over_split_sigmas() {
    let s = setup();
    let negative = Value::handle(noise_conditioning(8));
    let ksampler_in = guided_inputs(&s, "dpmpp_2m", negative.clone());
    let whole = handle::<Latent>(&node_output(&KSampler, ksampler_in.clone(), &s));
    let model = ksampler_in.get("model").unwrap().clone();
    let latent = ksampler_in.get("latent_image").unwrap().clone();

    let noise = node_output(
        &RandomNoise,
        Inputs::new().with("noise_seed", Value::Int(7)),
        &s,
    );
    let guider = node_output(
        &CfgGuider,
        Inputs::new()
            .with("model", model.clone())
            .with("positive", Value::handle(s.positive.clone()))
            .with("negative", negative)
            .with("cfg", Value::Float(4.5)),
        &s,
    );
    let select = |name: &str| {
        let inputs = Inputs::new().with("sampler_name", Value::String(name.into()));
        node_output(&KSamplerSelect, inputs, &s)
    };
    let (dpmpp_2m, euler) = (select("dpmpp_2m"), select("euler"));
    let sigmas = node_output(
        &BasicScheduler,
        Inputs::new()
            .with("model", model.clone())
            .with("scheduler", Value::String("sgm_uniform".into()))
            .with("steps", Value::Int(4))
            .with("denoise", Value::Float(1.0)),
        &s,
    );
    let custom = |sampler: &Value, noise: &Value, guider: &Value, sigmas: Value, latent: Value| {
        let inputs = Inputs::new()
            .with("noise", noise.clone())
            .with("guider", guider.clone())
            .with("sampler", sampler.clone())
            .with("sigmas", sigmas)
            .with("latent_image", latent);
        let (sink, cancel) = (Recorder::default(), CancelToken::new());
        let out = run(&SamplerCustomAdvanced, &inputs, &s, &sink, &cancel).unwrap();
        (out.values[0].clone(), out.values[1].clone())
    };
    let (out, _) = custom(&dpmpp_2m, &noise, &guider, sigmas.clone(), latent.clone());
    assert_eq!(
        max_abs_diff(&handle::<Latent>(&out).samples, &whole.samples),
        0.0
    );

    // Split at step 2: the second half without new noise finishes the run.
    let ksampler_in = ksampler_in.with("sampler_name", Value::String("euler".into()));
    let whole = handle::<Latent>(&node_output(&KSampler, ksampler_in, &s));
    let split = run(
        &SplitSigmas,
        &Inputs::new()
            .with("sigmas", sigmas)
            .with("step", Value::Int(2)),
        &s,
        &Recorder::default(),
        &CancelToken::new(),
    )
    .unwrap();
    let (high, low) = (split.values[0].clone(), split.values[1].clone());
    let (first, first_denoised) = custom(&euler, &noise, &guider, high, latent);
    let no_noise = node_output(&DisableNoise, Inputs::new(), &s);
    let (second, _) = custom(&euler, &no_noise, &guider, low, first.clone());
    let second = handle::<Latent>(&second);
    assert!(max_abs_diff(&second.samples, &whole.samples) < 1e-4);
    let first_denoised = handle::<Latent>(&first_denoised);
    assert!(max_abs_diff(&first_denoised.samples, &handle::<Latent>(&first).samples) > 1e-2);

    // BasicGuider is CFGGuider at cfg 1.
    let basic = node_output(
        &BasicGuider,
        Inputs::new()
            .with("model", model.clone())
            .with("conditioning", Value::handle(s.positive.clone())),
        &s,
    );
    let cfg1 = node_output(
        &CfgGuider,
        Inputs::new()
            .with("model", model)
            .with("positive", Value::handle(s.positive.clone()))
            .with("negative", Value::handle(noise_conditioning(30)))
            .with("cfg", Value::Float(1.0)),
        &s,
    );
    let latent = zero_latent();
    let sigmas = Value::handle(cretok_nodes::sd3::types::Sigmas(vec![1.0, 0.5, 0.0]));
    let (a, _) = custom(&euler, &noise, &basic, sigmas.clone(), latent.clone());
    let (b, _) = custom(&euler, &noise, &cfg1, sigmas, latent);
    assert_eq!(
        max_abs_diff(&handle::<Latent>(&a).samples, &handle::<Latent>(&b).samples),
        0.0
    );
}

#[test]
fn ksampler_advanced_denoises_only_inside_a_latent_noise_mask() {
    let s = setup();
    let (sink, cancel) = (Recorder::default(), CancelToken::new());
    let dev = Device::Cpu;
    let latent = seeded_noise(11, &[1, 16, 8, 8], &dev).unwrap();
    // Left four columns kept, right four denoised (the latent's own size).
    let columns: Vec<f32> = (0..64).map(|i| if i % 8 < 4 { 0.0 } else { 1.0 }).collect();
    let mask = Mask {
        values: Tensor::from_vec(columns, (1, 8, 8), &dev).unwrap(),
    };
    let masked = run(
        &SetLatentNoiseMask,
        &Inputs::new()
            .with("samples", Value::handle(Latent::new(latent.clone())))
            .with("mask", Value::handle(mask)),
        &s,
        &sink,
        &cancel,
    )
    .unwrap()
    .values[0]
        .clone();
    for sampler in ["ddim", "dpmpp_2m", "euler_ancestral"] {
        let inputs = ksampler_inputs(&s, sampler)
            .with("latent_image", masked.clone())
            .with("cfg", Value::Float(3.0));
        let out = sample_advanced(&s, inputs, "enable", (0, 10000), "disable");
        let out = handle::<Latent>(&out);
        assert!(
            out.noise_mask.is_some(),
            "{sampler}: the mask stays on the latent"
        );
        let half = |t: &Tensor, from: usize| t.narrow(3, from, 4).unwrap();
        let kept = max_abs_diff(&half(&out.samples, 0), &half(&latent, 0));
        assert!(kept < 1e-5, "{sampler}: the kept half moved by {kept}");
        let changed = max_abs_diff(&half(&out.samples, 4), &half(&latent, 4));
        assert!(changed > 0.1, "{sampler}: the masked half did not change");
    }
}
