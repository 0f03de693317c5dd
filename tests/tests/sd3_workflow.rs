//! `workflows/sd3_txt2img.json` end to end on the tiny checkpoint written by
//! `cretok dev tiny-checkpoint`: headless, then through the server.

use std::path::Path;

use cretok_tests::{
    cretok_bin, cretok_ok, repo_root, run_headless, tiny_checkpoint, Frame, Server,
};
use serde_json::{json, Value};

const WORKFLOW: &str = "workflows/sd3_txt2img.json";

fn workflow() -> Value {
    let text = std::fs::read_to_string(repo_root().join(WORKFLOW)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The requested `(width, height)` of the workflow's empty latent.
fn requested_size(prompt: &Value) -> (u32, u32) {
    let inputs = &prompt["5"]["inputs"];
    let dim = |k: &str| inputs[k].as_u64().unwrap() as u32;
    (dim("width"), dim("height"))
}

/// Decodes the PNG: its `prompt` text chunk as JSON, and its size.
fn read_png(path: &Path) -> (Value, (u32, u32)) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(frame.color_type, png::ColorType::Rgb);
    let info = reader.info();
    let prompt = info
        .uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == "prompt")
        .map(|c| serde_json::from_str(&c.text).unwrap())
        .expect("a prompt tEXt chunk");
    let distinct: std::collections::HashSet<_> = pixels.iter().collect();
    assert!(distinct.len() > 1, "the image is a flat colour");
    (prompt, (frame.width, frame.height))
}

#[test]
fn sd3_txt2img_runs_headless_on_the_tiny_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (models, data) = (dir.path().join("models"), dir.path().join("data"));
    tiny_checkpoint(&models);
    let path = run_headless(&repo_root().join(WORKFLOW), &models, &data, &[]);
    assert!(path.extension().is_some_and(|e| e == "png"), "{path:?}");
    let expected = workflow();
    let (prompt, size) = read_png(&path);
    assert_eq!(prompt, expected);
    assert_eq!(size, requested_size(&expected));
}

/// What the websocket showed of one prompt.
struct Seen {
    progress: Vec<u64>,
    previews: usize,
    executed: Option<Value>,
    /// The nodes served from the executor's cache.
    cached: Vec<String>,
}

/// Queues `body` (a `POST /prompt` body for client `gallery`) and follows it to the end.
async fn queue_and_follow(
    server: &Server,
    ws: &mut cretok_tests::WsClient,
    body: Value,
) -> anyhow::Result<Seen> {
    let (status, answer) = server.post("/prompt", &body).await?;
    anyhow::ensure!(status == 200, "POST /prompt: {status} {answer}");
    let id = answer["prompt_id"].as_str().unwrap().to_owned();
    let mut seen = Seen {
        progress: Vec::new(),
        previews: 0,
        executed: None,
        cached: Vec::new(),
    };
    loop {
        match ws.next_frame().await? {
            // Type 1: a preview image (the loader's summary comes as type 3, text).
            Frame::Binary(bytes) if bytes[..4] == 1u32.to_be_bytes() => {
                assert_eq!(&bytes[4..8], &2u32.to_be_bytes(), "PNG");
                assert!(bytes[8..].starts_with(b"\x89PNG"));
                seen.previews += 1;
            }
            Frame::Binary(_) => {}
            Frame::Json(m) => {
                assert_ne!(m["type"], "execution_error", "{m}");
                if m["type"] == "progress" && m["data"]["node"] == "3" {
                    seen.progress.push(m["data"]["value"].as_u64().unwrap());
                    assert_eq!(m["data"]["max"], 4);
                    assert_eq!(m["data"]["prompt_id"], id.as_str());
                }
                if m["type"] == "execution_cached" && m["data"]["prompt_id"] == id.as_str() {
                    seen.cached = serde_json::from_value(m["data"]["nodes"].clone())?;
                }
                if m["type"] == "executed" && m["data"]["node"] == "9" {
                    seen.executed = Some(m["data"]["output"].clone());
                }
                if m["type"] == "executing"
                    && m["data"]["node"].is_null()
                    && m["data"]["prompt_id"] == id.as_str()
                {
                    return Ok(seen);
                }
            }
        }
    }
}

#[tokio::test]
async fn sd3_txt2img_through_the_server_sends_progress_and_previews_when_asked(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_on_tiny_checkpoint(dir.path(), &[]).await?;
    let mut ws = server.connect("gallery").await?;
    let mut prompt = workflow();

    // As ComfyUI: no previews unless switched on, so API clients get only the saved image.
    let plain = json!({"prompt": prompt, "client_id": "gallery"});
    let seen = queue_and_follow(&server, &mut ws, plain).await?;
    assert_eq!(seen.progress, [1, 2, 3, 4], "one progress event per step");
    assert_eq!(seen.previews, 0, "no previews by default");

    // The editor's "Live preview method" setting, sent per prompt.
    prompt["3"]["inputs"]["seed"] = 43.into();
    let body = json!({"prompt": prompt, "client_id": "gallery",
                      "extra_data": {"preview_method": "latent2rgb"}});
    let seen = queue_and_follow(&server, &mut ws, body).await?;
    assert_eq!(seen.progress, [1, 2, 3, 4]);
    assert!(seen.previews >= 1, "at least one latent preview");
    let image = &seen.executed.expect("SaveImage executed")["images"][0];
    let path = server
        .data_dir
        .join(image["type"].as_str().unwrap())
        .join(image["subfolder"].as_str().unwrap())
        .join(image["filename"].as_str().unwrap());
    let (saved, size) = read_png(&path);
    assert_eq!(saved, prompt);
    assert_eq!(size, requested_size(&prompt));
    server.stop().await
}

#[tokio::test]
async fn serve_preview_method_switches_previews_on_for_every_prompt() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server =
        Server::start_on_tiny_checkpoint(dir.path(), &["--preview-method", "auto"]).await?;
    let mut ws = server.connect("gallery").await?;
    let body = json!({"prompt": workflow(), "client_id": "gallery"});
    assert!(queue_and_follow(&server, &mut ws, body).await?.previews >= 1);
    let mut prompt = workflow();
    prompt["3"]["inputs"]["seed"] = 43.into();
    let off = json!({"prompt": prompt, "client_id": "gallery",
                     "extra_data": {"preview_method": "none"}});
    assert_eq!(queue_and_follow(&server, &mut ws, off).await?.previews, 0);
    server.stop().await
}

/// The loader's `weight_dtype` is part of its cache key: the model loaded with int8 weights is
/// never the cached default one (and the reverse), while an unchanged loader stays cached.
#[tokio::test]
async fn int8_weights_load_anew_and_are_cached_as_their_own_model() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_on_tiny_checkpoint(dir.path(), &[]).await?;
    let mut ws = server.connect("gallery").await?;
    let mut prompt = workflow();
    let mut cached_loader = Vec::new();
    for (weight_dtype, seed) in [("default", 42), ("int8", 42), ("int8", 43), ("default", 43)] {
        prompt["4"]["inputs"]["weight_dtype"] = weight_dtype.into();
        prompt["3"]["inputs"]["seed"] = seed.into();
        let body = json!({"prompt": prompt, "client_id": "gallery"});
        let seen = queue_and_follow(&server, &mut ws, body).await?;
        assert!(
            seen.executed.is_some(),
            "{weight_dtype}: SaveImage executed"
        );
        cached_loader.push(seen.cached.contains(&"4".to_string()));
    }
    // The cache keeps what the last prompt used: a switch of weight_dtype loads again.
    assert_eq!(cached_loader, [false, false, true, false]);
    server.stop().await
}

#[test]
fn tiny_sd35_diffusers_folder_runs_the_same_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let (models, data) = (dir.path().join("models"), dir.path().join("data"));
    let models_arg = models.to_str().unwrap();
    let out = cretok_ok(&[
        "dev",
        "tiny-checkpoint",
        "--models",
        models_arg,
        "--variant",
        "sd3.5-medium",
        "--layout",
        "diffusers",
    ]);
    let folder = models.join("checkpoints").join("tiny-sd3.5-medium");
    assert!(folder.join("model_index.json").is_file());
    assert!(folder
        .join("transformer/diffusion_pytorch_model.safetensors")
        .is_file());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"tiny-sd3.5-medium\""), "{stdout}");
    let set = [
        "--set",
        "4.ckpt_name=tiny-sd3.5-medium",
        "--set",
        "5.width=32",
        "--set",
        "4.weight_dtype=int8",
    ];
    let path = run_headless(&repo_root().join(WORKFLOW), &models, &data, &set);
    let (prompt, size) = read_png(&path);
    assert_eq!(prompt["4"]["inputs"]["ckpt_name"], "tiny-sd3.5-medium");
    assert_eq!(prompt["4"]["inputs"]["weight_dtype"], "int8");
    assert_eq!(size, (32, 64));
}

/// ComfyUI's SD3 example graph: the negative is the empty prompt for the
/// first 10% of the steps and its zeroed conditioning after
/// (`ConditioningSetTimestepRange` + `ConditioningCombine`), sampled with
/// `dpmpp_2m` on `sgm_uniform`.
fn sd3_negative_recipe_workflow() -> Value {
    json!({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd3.safetensors"}},
        "13": {"class_type": "ModelSamplingSD3", "inputs": {"shift": 3.0, "model": ["4", 0]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lettuce mantis", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "67": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["7", 0]}},
        "68": {"class_type": "ConditioningSetTimestepRange", "inputs": {"start": 0.1, "end": 1.0, "conditioning": ["67", 0]}},
        "70": {"class_type": "ConditioningSetTimestepRange", "inputs": {"start": 0.0, "end": 0.1, "conditioning": ["7", 0]}},
        "69": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["68", 0], "conditioning_2": ["70", 0]}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 7, "steps": 6, "cfg": 4.5, "sampler_name": "dpmpp_2m", "scheduler": "sgm_uniform",
            "denoise": 1.0, "model": ["13", 0], "positive": ["6", 0], "negative": ["69", 0],
            "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "sd3/negative_recipe", "images": ["8", 0]}}
    })
}

/// The decoded pixels of PNG bytes.
fn pixels(png: &[u8]) -> Vec<u8> {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut buf).unwrap();
    buf
}

/// Runs `workflow` headless; returns the saved image's `prompt` chunk, size
/// and PNG bytes.
fn run_saved(
    workflow: &Value,
    dir: &Path,
    models: &Path,
    name: &str,
) -> (Value, (u32, u32), Vec<u8>) {
    let file = dir.join(name);
    std::fs::write(&file, workflow.to_string()).unwrap();
    let path = run_headless(&file, models, &dir.join("data"), &[]);
    let (prompt, size) = read_png(&path);
    (prompt, size, std::fs::read(path).unwrap())
}

#[test]
fn comfyui_sd3_negative_recipe_runs_headless_with_dpmpp_2m() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    tiny_checkpoint(&models);
    let recipe = sd3_negative_recipe_workflow();
    let (prompt, size, recipe_png) = run_saved(&recipe, dir.path(), &models, "recipe.json");
    assert_eq!(prompt, recipe);
    assert_eq!(size, (64, 48));

    // The combined negative is not the zeroed one alone: the text negative
    // guides the first step (σ = 1 ≥ shift(0.9)).
    let mut zeroed = recipe.clone();
    zeroed["3"]["inputs"]["negative"] = json!(["67", 0]);
    let (_, _, zeroed_png) = run_saved(&zeroed, dir.path(), &models, "zeroed.json");
    assert_ne!(pixels(&recipe_png), pixels(&zeroed_png));
}

/// Writes an RGBA picture of `width × height` with `pixel(x, y)` at each place.
fn write_rgba(path: &Path, width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 4]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Rgba);
    let pixels: Vec<u8> = (0..width * height)
        .flat_map(|i| pixel(i % width, i / width))
        .collect();
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&pixels)
        .unwrap();
}

/// Writes an RGBA gradient picture (its alpha too) of `width × height`.
fn write_picture(path: &Path, width: u32, height: u32) {
    write_rgba(path, width, height, |x, y| {
        [(x * 255 / width) as u8, (y * 255 / height) as u8, 128, 200]
    });
}

#[test]
fn comfyui_img2img_of_an_uploaded_picture_runs_headless() {
    let dir = tempfile::tempdir().unwrap();
    let (models, data) = (dir.path().join("models"), dir.path().join("data"));
    tiny_checkpoint(&models);
    write_picture(&data.join("input/pasted/photo.png"), 80, 50);
    let mut prompt = workflow();
    prompt["10"] = json!({"class_type": "LoadImage", "inputs": {"image": "pasted/photo.png"}});
    prompt["11"] = json!({"class_type": "ImageScale", "inputs": {
        "image": ["10", 0], "upscale_method": "bicubic", "width": 96, "height": 64, "crop": "center"}});
    prompt["5"] =
        json!({"class_type": "VAEEncode", "inputs": {"pixels": ["11", 0], "vae": ["4", 2]}});
    prompt["3"]["inputs"]["denoise"] = json!(0.6);
    let (saved, size, _) = run_saved(&prompt, dir.path(), &models, "img2img.json");
    assert_eq!(saved, prompt);
    assert_eq!(size, (96, 64));
}

/// Writes a 64×48 picture whose right half is transparent (LoadImage's MASK
/// is 1 there: the part to inpaint).
fn write_half_transparent_picture(path: &Path) {
    let (width, height) = (64u32, 48u32);
    write_rgba(path, width, height, |x, y| {
        let alpha = if x < width / 2 { 255 } else { 0 };
        [(x * 4) as u8, (y * 5) as u8, 90, alpha]
    });
}

/// The `latent_tensor` of a ComfyUI `.latent` file.
fn read_latent(path: &Path) -> candle_core::Tensor {
    let mut tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    tensors.remove("latent_tensor").expect("a latent_tensor")
}

#[test]
fn comfyui_inpainting_with_a_noise_mask_keeps_the_unmasked_latent() {
    let dir = tempfile::tempdir().unwrap();
    let (models, data) = (dir.path().join("models"), dir.path().join("data"));
    tiny_checkpoint(&models);
    write_half_transparent_picture(&data.join("input/half.png"));
    let prompt = json!({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd3.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lettuce mantis", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "10": {"class_type": "LoadImage", "inputs": {"image": "half.png"}},
        "12": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}},
        "20": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["12", 0], "mask": ["10", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 3, "steps": 4, "cfg": 4.0, "sampler_name": "euler", "scheduler": "simple",
            "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["20", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "inpaint", "images": ["8", 0]}},
        "21": {"class_type": "SaveLatent", "inputs": {"samples": ["12", 0], "filename_prefix": "latents/encoded"}},
        "22": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "latents/inpainted"}}
    });
    let (saved, size, _) = run_saved(&prompt, dir.path(), &models, "inpaint.json");
    assert_eq!(saved, prompt);
    assert_eq!(size, (64, 48));
    let latents = data.join("output/latents");
    let encoded = read_latent(&latents.join("encoded_00001_.latent"));
    let inpainted = read_latent(&latents.join("inpainted_00001_.latent"));
    assert_eq!(encoded.dims(), [1, 16, 6, 8]);
    let change = |from: usize| -> f32 {
        let diff = (inpainted.narrow(3, from, 4).unwrap() - encoded.narrow(3, from, 4).unwrap())
            .unwrap()
            .abs()
            .unwrap();
        diff.max_all().unwrap().to_scalar().unwrap()
    };
    // The mask resized to 6×8 cells (bilinear) is 0 on the left four
    // columns and 1 on the right four.
    assert!(change(0) < 1e-4, "the kept half moved by {}", change(0));
    assert!(change(4) > 0.1, "the masked half was not resampled");
}

/// `sd3_negative_recipe_workflow` with ComfyUI's SkipLayerGuidanceSD3 on the model.
fn skip_layer_workflow(layers: &str, start: f64, end: f64) -> Value {
    let mut prompt = sd3_negative_recipe_workflow();
    prompt["14"] = json!({"class_type": "SkipLayerGuidanceSD3", "inputs": {
        "model": ["13", 0], "layers": layers, "scale": 3.0,
        "start_percent": start, "end_percent": end}});
    prompt["3"]["inputs"]["model"] = json!(["14", 0]);
    prompt
}

#[test]
fn comfyui_skip_layer_guidance_applies_within_its_percents() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    tiny_checkpoint(&models);
    let (_, _, plain) = run_saved(
        &sd3_negative_recipe_workflow(),
        dir.path(),
        &models,
        "plain.json",
    );
    let guided = skip_layer_workflow("1", 0.0, 1.0);
    let (prompt, size, guided_png) = run_saved(&guided, dir.path(), &models, "slg.json");
    assert_eq!(prompt, guided);
    assert_eq!(size, (64, 48));
    assert_ne!(
        pixels(&guided_png),
        pixels(&plain),
        "guidance on every step"
    );
    // 99% to 100% is σ ≤ shift(0.01) ≈ 0.03, below every step's σ here.
    let late = skip_layer_workflow("1", 0.99, 1.0);
    let (_, _, late_png) = run_saved(&late, dir.path(), &models, "late.json");
    assert_eq!(pixels(&late_png), pixels(&plain), "no step in range");

    // The tiny model has 2 blocks: layer 5 is refused by name.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, skip_layer_workflow("1, 5", 0.0, 1.0).to_string()).unwrap();
    let out = std::process::Command::new(cretok_bin())
        .args(["run", bad.to_str().unwrap(), "--quiet", "--models"])
        .arg(&models)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("layer 5 does not exist: the model has 2 blocks"),
        "{stderr}"
    );
}
