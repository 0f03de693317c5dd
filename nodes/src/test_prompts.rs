//! API-format prompts of the native nodes that the prompt-limit tests send, in-process
//! (`host/cli/tests/limits.rs`) and to the real server (`tests/tests/resource_limits.rs`).

use std::path::Path;

use serde_json::{json, Map, Value};

/// The placeholder checkpoint the prompts load: enough for SD3 graphs to pass the loader's list
/// check (nothing here runs them).
pub const PLACEHOLDER_CHECKPOINT: &str = "sd3.safetensors";

/// Writes the (empty) placeholder checkpoint into `data_dir`'s `models/checkpoints`.
pub fn add_placeholder_checkpoint(data_dir: &Path) -> std::io::Result<()> {
    let checkpoints = data_dir.join("models").join("checkpoints");
    std::fs::create_dir_all(&checkpoints)?;
    std::fs::write(checkpoints.join(PLACEHOLDER_CHECKPOINT), b"")
}

/// CheckpointLoaderSimple → CLIPTextEncode → KSampler (20 steps) → VAEDecode → SaveImage at
/// `width × height × batch` (node 2 is the latent, 3 the text, 4 the sampler); `width` may be a
/// link.
pub fn sd3_prompt(
    width: impl Into<Value>,
    height: i64,
    batch: i64,
    text: &str,
    denoise: f64,
) -> Value {
    let width: Value = width.into();
    json!({
        "1": {"class_type": "CheckpointLoaderSimple",
              "inputs": {"ckpt_name": PLACEHOLDER_CHECKPOINT}},
        "2": {"class_type": "EmptySD3LatentImage",
              "inputs": {"width": width, "height": height, "batch_size": batch}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["1", 1]}},
        "4": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 0, "steps": 20, "cfg": 4.5, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["3", 0], "negative": ["3", 0],
            "latent_image": ["2", 0], "denoise": denoise}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "x"}}
    })
}

/// A PrimitiveString `start` (node 0), then `len` StringConcatenate nodes (1 to `len`), each
/// joining the previous output to itself (`doubling`) or to nothing, into a SaveText (`save`),
/// through a StringTransform strip (`strip`) when `strip`: `len + 2` nodes, or `len + 3`.
pub fn concat_chain(start: &str, len: usize, doubling: bool, strip: bool) -> Value {
    let mut prompt = Map::new();
    prompt.insert(
        "0".into(),
        json!({"class_type": "PrimitiveString", "inputs": {"value": start}}),
    );
    for i in 1..=len {
        let previous = json!([(i - 1).to_string(), 0]);
        let b = if doubling {
            previous.clone()
        } else {
            json!("")
        };
        prompt.insert(
            i.to_string(),
            json!({"class_type": "StringConcatenate",
                   "inputs": {"string_a": previous, "string_b": b, "delimiter": ""}}),
        );
    }
    let mut text = json!([len.to_string(), 0]);
    if strip {
        prompt.insert(
            "strip".into(),
            json!({"class_type": "StringTransform",
                   "inputs": {"string": text, "operation": "strip"}}),
        );
        text = json!(["strip", 0]);
    }
    prompt.insert(
        "save".into(),
        json!({"class_type": "SaveText",
               "inputs": {"text": text, "filename_prefix": "chain"}}),
    );
    Value::Object(prompt)
}
