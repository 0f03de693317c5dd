//! A ComfyUI SD3 workflow that loads separate files (UNETLoader, TripleCLIPLoader,
//! VAELoader, CLIPTextEncodeSD3) saves, through `cretok run`, the image that the
//! CheckpointLoaderSimple + CLIPTextEncode workflow saves from one file holding the
//! same weights.

use std::path::Path;

use cretok_nodes::sd3::tiny::{
    write_component_files, write_single_file, TinyOptions, TinyVariant, COMPONENT_FILES,
};
use cretok_tests::run_headless;
use serde_json::{json, Value};

const PROMPT: &str = "a lettuce mantis";

fn file_name(relative: &str) -> &str {
    relative.rsplit('/').next().unwrap()
}

/// The sampling, decoding and saving nodes, given the loaders' outputs.
fn tail(model: Value, vae: Value, positive: Value, negative: Value, prefix: &str) -> Value {
    json!({
        "4": {"class_type": "EmptySD3LatentImage",
              "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": model, "seed": 42, "steps": 3, "cfg": 4.5,
            "sampler_name": "euler", "scheduler": "sgm_uniform",
            "positive": positive, "negative": negative,
            "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": vae}},
        "7": {"class_type": "SaveImage",
              "inputs": {"images": ["6", 0], "filename_prefix": prefix}}
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    a.as_object_mut()
        .unwrap()
        .extend(b.as_object().unwrap().clone());
    a
}

fn single_file_workflow() -> Value {
    let loaders = json!({
        "1": {"class_type": "CheckpointLoaderSimple",
              "inputs": {"ckpt_name": "tiny-sd3.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}}
    });
    merge(
        loaders,
        tail(
            json!(["1", 0]),
            json!(["1", 2]),
            json!(["2", 0]),
            json!(["3", 0]),
            "single",
        ),
    )
}

fn separate_files_workflow() -> Value {
    let f = COMPONENT_FILES;
    let encode = |text: &str| {
        json!({"class_type": "CLIPTextEncodeSD3", "inputs": {
            "clip": ["8", 0], "clip_l": text, "clip_g": text, "t5xxl": text,
            "empty_padding": "empty_prompt"}})
    };
    let loaders = json!({
        "1": {"class_type": "UNETLoader", "inputs": {
            "unet_name": file_name(f.diffusion_model), "weight_dtype": "default"}},
        "8": {"class_type": "TripleCLIPLoader", "inputs": {
            "clip_name1": file_name(f.t5xxl),
            "clip_name2": file_name(f.clip_g),
            "clip_name3": file_name(f.clip_l)}},
        "9": {"class_type": "VAELoader", "inputs": {"vae_name": file_name(f.vae)}},
        "2": encode(PROMPT),
        "3": encode("")
    });
    merge(
        loaders,
        tail(
            json!(["1", 0]),
            json!(["9", 0]),
            json!(["2", 0]),
            json!(["3", 0]),
            "separate",
        ),
    )
}

/// Runs `workflow` headless and returns the saved PNG's pixels.
fn run(workflow: &Value, dir: &Path) -> Vec<u8> {
    let file = dir.join("workflow.json");
    std::fs::write(&file, workflow.to_string()).unwrap();
    let path = run_headless(&file, &dir.join("models"), &dir.join("data"), &[]);
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut pixels).unwrap();
    pixels
}

#[test]
fn separate_files_save_the_image_of_the_single_file() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let opts = TinyOptions {
        variant: TinyVariant::Sd35Medium,
        seed: 9,
        clips: true,
        t5: true,
        positions: None,
    };
    std::fs::create_dir_all(models.join("checkpoints")).unwrap();
    write_single_file(&models.join("checkpoints/tiny-sd3.safetensors"), &opts).unwrap();
    write_component_files(&models, &opts).unwrap();
    let single = run(&single_file_workflow(), dir.path());
    let separate = run(&separate_files_workflow(), dir.path());
    let distinct: std::collections::HashSet<_> = single.iter().collect();
    assert!(distinct.len() > 1, "the image is a flat colour");
    assert!(
        single == separate,
        "the two workflows saved different pixels"
    );
}
