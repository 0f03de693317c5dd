//! Seed → initial noise equals ComfyUI's `prepare_noise` (torch's CPU
//! generator) bit for bit, against `parity/goldens/comfy_noise.json`
//! (written by `parity/comfy_noise_goldens.py`).

use cretok_nodes::sd3::sampling::torch_rng::TorchGenerator;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn goldens() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/parity/goldens/comfy_noise.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn bit_patterns(values: &[f32]) -> Vec<String> {
    values
        .iter()
        .map(|v| format!("{:08x}", v.to_bits()))
        .collect()
}

#[test]
fn randn_matches_torch_bit_for_bit() {
    let goldens = goldens();
    let cases = goldens["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 9);
    for case in cases {
        let seed = case["seed"].as_u64().unwrap();
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let n: usize = shape.iter().product();
        let noise = TorchGenerator::manual_seed(seed).randn(n);
        let edge = 8.min(n);
        let label = format!("seed {seed}, shape {shape:?}");
        let want =
            |key: &str| -> Vec<String> { serde_json::from_value(case[key].clone()).unwrap() };
        assert_eq!(bit_patterns(&noise[..edge]), want("first"), "{label}");
        assert_eq!(bit_patterns(&noise[n - edge..]), want("last"), "{label}");
        let bytes: Vec<u8> = noise.iter().flat_map(|v| v.to_le_bytes()).collect();
        let sha = format!("{:x}", Sha256::digest(&bytes));
        assert_eq!(sha, case["sha256"].as_str().unwrap(), "{label}");
    }
}
