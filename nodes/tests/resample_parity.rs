//! Image and latent resizing against torch's `F.interpolate`, the call ComfyUI's
//! `common_upscale` makes (`parity/goldens/resample.json`, written by
//! `parity/resample_goldens.py`), for every torch mode, up and down.

use candle_core::{Device, Tensor};
use cretok_nodes::resample::{resize, Method};
use serde_json::Value;

/// f32 sums of at most a few dozen f32 terms against torch's f64.
const TOLERANCE: f32 = 2e-6;

#[test]
fn every_torch_mode_matches_interpolate() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/parity/goldens/resample.json");
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let shape: Vec<usize> = serde_json::from_value(golden["shape"].clone()).unwrap();
    let input: Vec<f32> = serde_json::from_value(golden["input"].clone()).unwrap();
    let x = Tensor::from_vec(input, shape.as_slice(), &Device::Cpu).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 16);
    for case in cases {
        let mode = case["mode"].as_str().unwrap();
        let (height, width) = (
            case["height"].as_u64().unwrap() as usize,
            case["width"].as_u64().unwrap() as usize,
        );
        let want: Vec<f32> = serde_json::from_value(case["values"].clone()).unwrap();
        let got = resize(&x, height, width, Method::parse(mode).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0f32, f32::max);
        assert_eq!(got.len(), want.len(), "{mode} {height}x{width}");
        assert!(
            worst <= TOLERANCE,
            "{mode} {height}x{width}: off by {worst}"
        );
    }
}
